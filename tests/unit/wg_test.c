/* SPDX-License-Identifier: MIT */
/*
 * wg_test.c - WaitGroup internals: a waiter that gives up as the counter
 * reaches zero must not return while the add that made it zero has yet to
 * touch the WaitGroup, since its caller may then free it.
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
