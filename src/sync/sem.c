/* SPDX-License-Identifier: MIT */
/*
 * sem.c - weft_sem, a weighted semaphore with strict FIFO service, as Go's
 * golang.org/x/sync/semaphore.
 *
 * Everything is under the wait queue's lock: cur_ (tokens held) and the
 * queue of waiters, each asking for w->data tokens. A request is granted at
 * once only when it fits and nobody waits; otherwise it queues. A release
 * grants front waiters while they fit, and stops at the first that does not:
 * a large request is never overtaken, so it cannot starve. A waiter that
 * gives up (deadline, context) and is still queued leaves; if it was at the
 * front, the ones behind it may fit now, so it serves them. A request for
 * more than the capacity never queues (doomed, below).
 */
#include "weft.h"

#include <errno.h>

#include "fatal.h"
#include "park.h"
#include "sanitizer.h"
#include "sched.h"
#include "sync_impl.h"

int weft_sem_init(weft_sem *s, int64_t n)
{
	if (n < 0)
		return EINVAL;
	*s = (weft_sem)WEFT_SEM_INIT(n);
	return 0;
}

/* Grant what now fits to the front waiters, claimed and unlinked onto a
 * list for waking once unlocked. Queue locked. */
static struct weft__waiter *serve(weft_sem *s)
{
	struct weft__waiter *list = NULL, **tail = &list, *w;
	while ((w = weft__waitq_front(&s->q_)) != NULL) {
		int64_t n = (int64_t)w->data;
		if (!__atomic_load_n(&w->claim, __ATOMIC_RELAXED) && s->size_ - s->cur_ < n)
			break; /* a live front waiter that does not fit: FIFO */
		weft__waitq_unlink(&s->q_, w);
		if (!weft__waiter_claim(w))
			continue; /* it gave up: on its way out */
		s->cur_ += n;
		*tail = w;
		tail = &w->next;
	}
	return list;
}

/* A request for more than the capacity can never be granted. Queued, it
 * would hold up every waiter behind it for ever (FIFO), so, as Go's, it
 * waits alone, on its own queue, for its deadline or its context, and fails
 * as those do; with neither, for ever (the deadlock detector sees it). */
static int doomed(int64_t deadline, struct weft__cancel *cs)
{
	if (deadline == INT64_MAX && !cs)
		weft__block_forever("semaphore.Acquire (more than the capacity)", INT64_MAX);
	return weft__wait_alone(deadline, cs, "semaphore.Acquire");
}

int weft__sem_acquire(weft_sem *s, int64_t n, int64_t deadline, struct weft__cancel *cs)
{
	if (n < 0)
		weft__fatal("semaphore: negative acquire (%lld)", (long long)n);
	if (n > s->size_)
		return doomed(deadline, cs);
	struct weft__waitq *q = &s->q_;
	weft__waitq_lock(q);
	if (s->size_ - s->cur_ >= n && !q->head_) {
		s->cur_ += n;
		weft__waitq_unlock(q);
		weft__race_acquire(s);
		return 0;
	}
	struct weft__waiter w;
	weft__waiter_init_until(&w, deadline, cs);
	w.data = (uintptr_t)n;
	weft__waitq_push(q, &w, 0);
	int err = weft__waitq_block_until(q, &w, "semaphore.Acquire");
	if (!err) {
		weft__race_acquire(s);
		return 0;
	}
	weft__waitq_lock(q);
	struct weft__waiter *list = NULL;
	if (w.queued) {
		int front = q->head_ == &w;
		weft__waitq_unlink(q, &w);
		if (front)
			list = serve(s);
	}
	weft__waitq_unlock(q);
	weft__waiter_wake_list(list);
	return err;
}

int weft_sem_acquire(weft_sem *s, int64_t n)
{
	return weft__sem_acquire(s, n, INT64_MAX, NULL);
}

int weft_sem_acquire_until(weft_sem *s, int64_t n, int64_t deadline_ns)
{
	return weft__sem_acquire(s, n, deadline_ns, NULL);
}

int weft_sem_tryacquire(weft_sem *s, int64_t n)
{
	if (n < 0)
		weft__fatal("semaphore: negative acquire (%lld)", (long long)n);
	struct weft__waitq *q = &s->q_;
	weft__waitq_lock(q);
	int ok = s->size_ - s->cur_ >= n && !q->head_;
	if (ok)
		s->cur_ += n;
	weft__waitq_unlock(q);
	if (!ok)
		return EAGAIN;
	weft__race_acquire(s);
	return 0;
}

void weft_sem_release(weft_sem *s, int64_t n)
{
	if (n < 0)
		weft__fatal("semaphore: negative release (%lld)", (long long)n);
	weft__race_release(s);
	struct weft__waitq *q = &s->q_;
	weft__waitq_lock(q);
	s->cur_ -= n;
	if (s->cur_ < 0) {
		weft__waitq_unlock(q);
		weft__fatal("semaphore: released more than held");
	}
	struct weft__waiter *list = serve(s);
	weft__waitq_unlock(q);
	weft__waiter_wake_list(list);
}
