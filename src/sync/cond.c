/* SPDX-License-Identifier: MIT */
/*
 * cond.c - weft_cond, Go's sync.Cond, as a FIFO queue of waiters.
 *
 * A waiter enqueues itself before it unlocks the caller's mutex, with the
 * queue locked throughout, and the queue lock is released only once the
 * waiter is parked: so a signal sent after the waiter's unlock always finds
 * it, and never a waiter that is not yet parked. (Unlocking the mutex under
 * the queue lock must not yield, so it uses the no-yield unlock; the lock
 * order is cond queue -> mutex queue.) Go reaches the same with tickets
 * (notifyList) because its unlock may reschedule.
 */
#include "weft.h"

#include "park.h"
#include "sanitizer.h"
#include "sched.h"
#include "sync_impl.h"

int weft__cond_wait(weft_cond *c, weft_mutex *m, int64_t deadline, struct weft__cancel *cs)
{
	struct weft__waiter w;
	weft__waiter_init_until(&w, deadline, cs);
	weft__waitq_lock(&c->q_);
	weft__waitq_push(&c->q_, &w, 0);
	weft__mutex_unlock_noyield(m);
	int err = weft__waitq_block_until(&c->q_, &w, "sync.Cond.Wait");
	if (err) {
		weft__waitq_lock(&c->q_);
		if (w.queued)
			weft__waitq_unlink(&c->q_, &w);
		weft__waitq_unlock(&c->q_);
	} else {
		weft__race_acquire(c);
	}
	weft_mutex_lock(m);
	return err;
}

void weft_cond_wait(weft_cond *c, weft_mutex *m)
{
	weft__cond_wait(c, m, INT64_MAX, NULL);
}

int weft_cond_wait_until(weft_cond *c, weft_mutex *m, int64_t deadline_ns)
{
	return weft__cond_wait(c, m, deadline_ns, NULL);
}

void weft_cond_signal(weft_cond *c)
{
	if (!__atomic_load_n(&c->q_.head_, __ATOMIC_ACQUIRE))
		return; /* nobody waits (one that enqueues later did not need this) */
	weft__race_release(c);
	weft__waitq_lock(&c->q_);
	struct weft__waiter *w = weft__waitq_take(&c->q_, NULL);
	weft__waitq_unlock(&c->q_);
	if (w)
		weft__waiter_wake(w);
}

void weft_cond_broadcast(weft_cond *c)
{
	if (!__atomic_load_n(&c->q_.head_, __ATOMIC_ACQUIRE))
		return;
	weft__race_release(c);
	weft__waitq_lock(&c->q_);
	struct weft__waiter *list = weft__waitq_take_all(&c->q_, NULL);
	weft__waitq_unlock(&c->q_);
	weft__waiter_wake_list(list);
}
