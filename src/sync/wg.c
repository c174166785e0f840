/* SPDX-License-Identifier: MIT */
/*
 * wg.c - weft_wg, Go's sync.WaitGroup.
 *
 * counter_ packs the counter (high 32 bits, signed) and the number of parked
 * waiters (low 32 bits) into one word, as Go's state does. That lets the
 * counter's last weft_wg_done return without touching anything else when no
 * one waits, which matters: a waiter that sees zero may return and free the
 * WaitGroup at once. When waiters exist they are parked, so the WaitGroup is
 * alive until the waker has woken them all.
 *
 * The waiter count changes only under the queue lock: a waiter adds itself
 * and enqueues; the waker of a zero takes every queued waiter and subtracts
 * as many; a waiter that gives up (deadline, context) while still queued
 * unlinks itself and subtracts one, unless the counter is zero: then the
 * waker is on its way, and the waiter waits for it to pass (its caller may
 * free the WaitGroup as soon as it returns). So the count is what the queue
 * holds.
 */
#include "weft.h"

#include <errno.h>

#include "fatal.h"
#include "park.h"
#include "sched.h"
#include "sanitizer.h"
#include "sync_impl.h"

#define WAITER_MASK 0xffffffffull

static int32_t counter_of(uint64_t s)
{
	return (int32_t)(s >> 32);
}

void (*weft__wg_zero_hook)(void);

int32_t weft__wg_count(weft_wg *wg)
{
	return counter_of(__atomic_load_n((uint64_t *)&wg->counter_, __ATOMIC_ACQUIRE));
}

void weft_wg_add(weft_wg *wg, int64_t delta)
{
	uint64_t *st = (uint64_t *)&wg->counter_;
	if (delta > INT32_MAX || delta < -(int64_t)INT32_MAX)
		weft__fatal("sync: WaitGroup delta %lld out of range", (long long)delta);
	weft__race_release(wg); /* every Add/Done happens before Wait returns */
	uint64_t s = __atomic_add_fetch(st, (uint64_t)delta << 32, __ATOMIC_ACQ_REL);
	int32_t v = counter_of(s);
	uint32_t w = (uint32_t)(s & WAITER_MASK);
	if (v < 0)
		weft__fatal("sync: negative WaitGroup counter");
	if (v > 0 || w == 0)
		return;
	/* Counter is zero and waiters are parked: take them all. Only the
	 * holder of the queue lock changes the waiter count, so what the
	 * queue holds is what the count says (waiters that gave up, and were
	 * unlinked here, included). */
	void (*hook)(void) = __atomic_load_n(&weft__wg_zero_hook, __ATOMIC_ACQUIRE);
	if (hook)
		hook();
	struct weft__waitq *q = &wg->waiters_;
	weft__waitq_lock(q);
	if (counter_of(__atomic_load_n(st, __ATOMIC_ACQUIRE)) != 0) {
		/* Reused already: every waiter of that zero gave up and left
		 * (a _ctx or _until wait), and these wait for the next one. */
		weft__waitq_unlock(q);
		return;
	}
	uint32_t n;
	struct weft__waiter *list = weft__waitq_take_all(q, &n);
	if (n)
		__atomic_sub_fetch(st, (uint64_t)n, __ATOMIC_ACQ_REL);
	weft__waitq_unlock(q);
	weft__waiter_wake_list(list);
}

void weft_wg_done(weft_wg *wg)
{
	weft_wg_add(wg, -1);
}

/* A weft_wg_go goroutine: fn(arg), then done. fn and the WaitGroup ride in
 * the G's extra words (weft__go_x), so a start allocates nothing. */
static void wg_entry(void *arg)
{
	void *fn, *wg;
	weft__self_x(&fn, &wg);
	((weft_fn)fn)(arg);
	weft_wg_done(wg);
}

int weft_wg_go_at(weft_wg *wg, weft_fn fn, void *arg, const char *file, int line)
{
	if (!fn)
		return EINVAL;
	weft_wg_add(wg, 1);
	int r = weft__go_x(wg_entry, arg, (void *)fn, wg, file, line);
	if (r)
		weft_wg_done(wg); /* as if never added: may release waiters */
	return r;
}

int weft__wg_wait(weft_wg *wg, int64_t deadline, struct weft__cancel *cs)
{
	uint64_t *st = (uint64_t *)&wg->counter_;
	if (counter_of(__atomic_load_n(st, __ATOMIC_ACQUIRE)) == 0) {
		weft__race_acquire(wg);
		return 0;
	}
	struct weft__waiter w;
	weft__waiter_init_until(&w, deadline, cs);
	struct weft__waitq *q = &wg->waiters_;
	weft__waitq_lock(q);
	uint64_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
	for (;;) {
		if (counter_of(s) == 0) {
			weft__waitq_unlock(q);
			weft__race_acquire(wg);
			return 0;
		}
		if (__atomic_compare_exchange_n(st, &s, s + 1, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			break;
	}
	weft__waitq_push(q, &w, 0);
	int err = weft__waitq_block_until(q, &w, "semacquire");
	if (err) {
		weft__waitq_lock(q);
		/* Still counted while the counter is zero: the add that made it
		 * zero saw our count and is on its way to this queue, to take
		 * us. Let it: once we return, our caller may follow with a wait
		 * (at once: zero) and free the WaitGroup under that add. */
		while (w.queued && counter_of(__atomic_load_n(st, __ATOMIC_ACQUIRE)) == 0) {
			weft__waitq_unlock(q);
			weft_yield(); /* sched_yield() on a foreign thread */
			weft__waitq_lock(q);
		}
		if (w.queued) {
			/* Still counted: leave as if we had never come. */
			weft__waitq_unlink(q, &w);
			__atomic_sub_fetch(st, 1, __ATOMIC_ACQ_REL);
		}
		weft__waitq_unlock(q);
		return err;
	}
	weft__race_acquire(wg);
	return 0;
}

void weft_wg_wait(weft_wg *wg)
{
	weft__wg_wait(wg, INT64_MAX, NULL);
}

int weft_wg_wait_until(weft_wg *wg, int64_t deadline_ns)
{
	return weft__wg_wait(wg, deadline_ns, NULL);
}
