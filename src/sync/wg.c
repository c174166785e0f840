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
 * A waiter increments the waiter count only while holding the queue lock, and
 * the waker empties the queue under the same lock, so a waiter is never left
 * behind. The waker resets the word to zero first, then wakes exactly the
 * waiters it counted.
 */
#include "weft.h"

#include "fatal.h"
#include "park.h"
#include "sched.h"
#include "sanitizer.h"

#define WAITER_MASK 0xffffffffull

static int32_t counter_of(uint64_t s)
{
	return (int32_t)(s >> 32);
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
	/* Counter is zero and w goroutines/threads are parked: wake them. */
	__atomic_store_n(st, 0, __ATOMIC_RELEASE);
	struct weft__waitq *q = &wg->waiters_;
	weft__waitq_lock(q);
	struct weft__waiter *list = NULL, **tail = &list;
	for (uint32_t i = 0; i < w; i++) {
		struct weft__waiter *x = weft__waitq_pop(q);
		if (!x)
			weft__fatal("sync: WaitGroup waiter count and queue disagree");
		*tail = x;
		tail = &x->next;
	}
	weft__waitq_unlock(q);
	while (list) {
		struct weft__waiter *x = list;
		list = x->next;
		weft__waiter_wake(x); /* x is gone after this */
	}
}

void weft_wg_done(weft_wg *wg)
{
	weft_wg_add(wg, -1);
}

void weft_wg_wait(weft_wg *wg)
{
	uint64_t *st = (uint64_t *)&wg->counter_;
	if (counter_of(__atomic_load_n(st, __ATOMIC_ACQUIRE)) == 0) {
		weft__race_acquire(wg);
		return;
	}
	struct weft__waiter w;
	weft__waiter_init(&w);
	struct weft__waitq *q = &wg->waiters_;
	weft__waitq_lock(q);
	uint64_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
	for (;;) {
		if (counter_of(s) == 0) {
			weft__waitq_unlock(q);
			weft__race_acquire(wg);
			return;
		}
		if (__atomic_compare_exchange_n(st, &s, s + 1, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			break;
	}
	weft__waitq_push(q, &w, 0);
	weft__waitq_block(q, &w, "semacquire");
	weft__race_acquire(wg);
}
