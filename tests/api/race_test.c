/* SPDX-License-Identifier: MIT */
/*
 * race_test.c - ThreadSanitizer sees goroutines as threads: a deliberate data
 * race between two goroutines on 2 Ps (in a child process) is reported, and
 * the same program made correct with a weft_mutex, or with a WaitGroup join,
 * is not. Only meaningful under -fsanitize=thread (make race); in other
 * builds each test says it is skipped.
 */
#include "test.h"

#include <stdio.h>
#include <string.h>

#define TSAN_RACE "WARNING: ThreadSanitizer: data race"

static const char *const procs2[] = { "WEFT_PROCS=2", "TSAN_OPTIONS=halt_on_error=0",
				      NULL };

static long shared_counter; /* the victim */
static weft_mutex mu;

/* noinline so the report names the function. */
static __attribute__((noinline)) void racy_increments(void *arg)
{
	weft_wg *wg = arg;
	for (int i = 0; i < 10000; i++) {
		shared_counter++;
		if (i % 1000 == 0)
			weft_yield();
	}
	weft_wg_done(wg);
}

static __attribute__((noinline)) void locked_increments(void *arg)
{
	weft_wg *wg = arg;
	for (int i = 0; i < 10000; i++) {
		weft_mutex_lock(&mu);
		shared_counter++;
		weft_mutex_unlock(&mu);
		if (i % 1000 == 0)
			weft_yield();
	}
	weft_wg_done(wg);
}

static int two_goroutines(void *arg)
{
	weft_fn fn = (weft_fn)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 2);
	GO(fn, &wg);
	GO(fn, &wg);
	weft_wg_wait(&wg);
	printf("counter=%ld\n", shared_counter);
	return 0;
}

CHILD(racy)
{
	return weft_main(two_goroutines, (void *)racy_increments);
}

CHILD(locked)
{
	return weft_main(two_goroutines, (void *)locked_increments);
}

static long handed_over; /* written by a goroutine, read after the join */

static void writer(void *arg)
{
	handed_over = 42;
	weft_wg_done(arg);
}

static int join_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < 100; i++) {
		weft_wg wg = WEFT_WG_INIT;
		weft_wg_add(&wg, 1);
		GO(writer, &wg);
		weft_wg_wait(&wg);
		handed_over++;
	}
	printf("handed_over=%ld\n", handed_over);
	return 0;
}

CHILD(joined)
{
	return weft_main(join_main, NULL);
}

/*
 * Two goroutines increment a plain global at 2 Ps: TSan reports a data race.
 * Guards: missing fiber annotations (TSan sees one thread per M and may miss
 * races between goroutines on one M), or annotations that synchronise every
 * switch with every other (all races hidden).
 */
TEST_THREAD(race_between_goroutines_reported)
{
	if (!TEST_TSAN)
		SKIP("not built with -fsanitize=thread; run make race");
	test_child c;
	test_child_run("racy", procs2, 20000, &c);
	ASSERT_CONTAINS(c.err, TSAN_RACE);
	ASSERT_CONTAINS(c.err, "racy_increments");
	test_child_free(&c);
}

/*
 * The same increments under a weft_mutex, and a value handed over through a
 * WaitGroup join: no report. Guards: a mutex or WaitGroup whose
 * happens-before edges TSan cannot see (false reports in every user program).
 */
TEST_THREAD(no_race_with_mutex_or_join)
{
	if (!TEST_TSAN)
		SKIP("not built with -fsanitize=thread; run make race");
	const char *children[] = { "locked", "joined" };
	for (int i = 0; i < 2; i++) {
		test_child c;
		test_child_run(children[i], procs2, 20000, &c);
		ASSERT_NOT_CONTAINS(c.err, "ThreadSanitizer");
		ASSERT_CHILD_EXIT(&c, 0);
		test_child_free(&c);
	}
}
