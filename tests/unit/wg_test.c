/* SPDX-License-Identifier: MIT */
/*
 * wg_test.c - WaitGroup internals: a waiter that gives up as the counter
 * reaches zero must not return while the add that made it zero has yet to
 * touch the WaitGroup, since its caller may then free it; and such a late
 * add must not wake the waiters of the WaitGroup's next round, once it was
 * reused.
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sync_impl.h"

static atomic_int hook_ended;

/* The add that made the counter zero stalls 100 ms before the queue lock
 * (its thread preempted there, on a loaded host). */
static void stall_zero(void)
{
	usleep(100000);
	atomic_store(&hook_ended, 1);
}

struct done_later {
	weft_wg *wg;
};

static void *done_after_5ms(void *arg)
{
	struct done_later *d = arg;
	usleep(5000);
	weft_wg_done(d->wg);
	return NULL;
}

/*
 * A timed waiter (a 20 ms deadline) is queued and counted; at 5 ms the last
 * done makes the counter zero and, seeing the waiter counted, heads for the
 * queue lock, but stalls on the way. The deadline passes meanwhile. The
 * waiter must not return before that done has been through the queue: its
 * caller may follow with a wait (which returns at once: the counter is zero)
 * and free the WaitGroup, and the done would then lock freed memory. So when
 * it returns, the stall must be over. Guards: the timed-out waiter that
 * unlinked itself and left at once (ASan: heap-use-after-free in
 * weft__waitq_lock, from weft_wg_done, once the WaitGroup was freed).
 */
TEST(timed_waiter_outlasts_the_zeroing_done)
{
	__atomic_store_n(&weft__wg_zero_hook, stall_zero, __ATOMIC_RELEASE);
	weft_wg *wg = calloc(1, sizeof *wg);
	ASSERT(wg != NULL);
	weft_wg_add(wg, 1);
	struct done_later d = {wg};
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, done_after_5ms, &d), 0);
	int64_t t0 = weft_now();
	int err = weft_wg_wait_until(wg, t0 + 20 * TEST_MS);
	int ended = atomic_load(&hook_ended);
	int64_t took = weft_now() - t0;
	weft_wg_wait(wg); /* the counter is zero: at once */
	printf("    the wait returned %d after %.1f ms; the done's stall %s\n", err,
	       (double)took / TEST_MS, ended ? "was over" : "was not over");
	if (!ended)
		FAIL("the timed-out waiter returned (%d, after %.1f ms) while the done that "
		     "made the counter zero had still to lock the WaitGroup's queue", err,
		     (double)took / TEST_MS);
	ASSERT(err == ETIMEDOUT || err == 0);
	pthread_join(th, NULL);
	free(wg);
}

static atomic_int stall_state; /* 0: not yet; 1: stalling; 2: released */

/* The first add to reach the hook stalls until the test releases it. */
static void stall_first_zero(void)
{
	int zero = 0;
	if (!atomic_compare_exchange_strong(&stall_state, &zero, 1))
		return;
	int64_t end = test_now_ns() + 10000 * TEST_MS * test_slowdown();
	while (atomic_load(&stall_state) == 1 && test_now_ns() < end)
		usleep(1000);
}

struct reuse {
	weft_wg *wg;
	int64_t deadline;
	atomic_int returned;
	int err;
	weft_wg done;
};

/* The waiters the WaitGroup counts (the low half of its state word). */
static uint32_t waiters(weft_wg *wg)
{
	return (uint32_t)__atomic_load_n((uint64_t *)&wg->counter_, __ATOMIC_ACQUIRE);
}

static void *done_now(void *arg)
{
	weft_wg_done(arg);
	return NULL;
}

static void timed_waiter(void *arg)
{
	struct reuse *r = arg;
	r->err = weft_wg_wait_until(r->wg, r->deadline);
	atomic_store(&r->returned, 1);
	weft_wg_done(&r->done);
}

static void plain_waiter(void *arg)
{
	struct reuse *r = arg;
	weft_wg_wait(r->wg);
	atomic_store(&r->returned, 1);
	weft_wg_done(&r->done);
}

/*
 * A WaitGroup reused while the done that made it zero is late: a timed
 * waiter is counted, the last done makes the counter zero and stalls before
 * the queue lock; the waiter's deadline passes, the WaitGroup is reused
 * (add 1) so the waiter leaves, and a new waiter queues for the next zero.
 * When the stalled done goes on, it finds the counter no longer zero and
 * must leave the new waiter parked: it returns only after the next done.
 * Guards: the late done that takes every queued waiter whatever the counter
 * says (the new waiter returned from weft_wg_wait with the counter at 1).
 */
TEST(late_zeroing_done_leaves_next_round_waiters)
{
	__atomic_store_n(&weft__wg_zero_hook, stall_first_zero, __ATOMIC_RELEASE);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	struct reuse a = {.wg = &wg, .done = WEFT_WG_INIT}, b = {.wg = &wg, .done = WEFT_WG_INIT};
	weft_wg_add(&a.done, 1);
	a.deadline = weft_now() + 100 * TEST_MS * test_slowdown();
	GO(timed_waiter, &a);
	WAIT_FOR(waiters(&wg) == 1); /* a counted */
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, done_now, &wg), 0);
	WAIT_FOR(atomic_load(&stall_state) == 1); /* zero, the done stalled */
	weft_sleep_until(a.deadline + 10 * TEST_MS); /* a's deadline passes */
	ASSERT_EQ(atomic_load(&a.returned), 0);    /* it waits for that done */
	weft_wg_add(&wg, 1);                       /* reused: a leaves */
	weft_wg_wait(&a.done);
	ASSERT_EQ(a.err, ETIMEDOUT);
	weft_wg_add(&b.done, 1);
	GO(plain_waiter, &b);
	WAIT_FOR(waiters(&wg) == 1); /* b counted */
	atomic_store(&stall_state, 2);
	pthread_join(th, NULL);
	weft_sleep(20 * TEST_MS);
	ASSERT_EQ(atomic_load(&b.returned), 0);
	ASSERT_EQ(weft__wg_count(&wg), 1);
	weft_wg_done(&wg);
	weft_wg_wait(&b.done);
	ASSERT_EQ(atomic_load(&b.returned), 1);
	__atomic_store_n(&weft__wg_zero_hook, NULL, __ATOMIC_RELEASE);
}
