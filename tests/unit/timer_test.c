/* SPDX-License-Identifier: MIT */
/*
 * timer_test.c - the per-P timer heap (src/runtime/timer.c) on its own:
 * ordering against a reference, deletion (deletable timers leave the heap at
 * once and may be freed), moving a heap, and the lock-free earliest-deadline
 * hint.
 */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "timer.h"

enum { N = 5000 };

static struct weft__timer tm[N];
static int64_t fired_when[N];
static int nfired;

static void record(struct weft__timer *t)
{
	fired_when[nfired++] = t->when;
	t->arg = (void *)1;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/*
 * Random deadlines, a third deleted again: the rest fire exactly once, in
 * deadline order, and none of the deleted ones fires. Guards: a sift that
 * breaks the heap order, a slot index that does not follow its timer (the
 * wrong timer removed).
 */
TEST_THREAD(order_and_deletion)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	for (int i = 0; i < N; i++) {
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], (int64_t)(next_rand() % 1000000) + 1), 0);
	}
	int deleted = 0;
	for (int i = 0; i < N; i += 3) {
		ASSERT_EQ(weft__timer_del(&tm[i]), 1);
		ASSERT_EQ(weft__timer_del(&tm[i]), 0); /* already gone */
		deleted++;
	}
	/* Fire in slices: the earliest hint must never be later than a live
	 * deadline, and never a deleted one's. */
	int64_t prev = 0;
	for (int64_t now = 0; now <= 1000000; now += 50000) {
		weft__timers_run(&h, now);
		int64_t e = weft__timers_peek(&h);
		ASSERT(e > now);
	}
	ASSERT_EQ(nfired, N - deleted);
	for (int i = 0; i < nfired; i++) {
		ASSERT_LE(prev / 50000, fired_when[i] / 50000 + 0); /* slice order */
		prev = fired_when[i];
	}
	for (int i = 0; i < N; i++)
		ASSERT_EQ(tm[i].arg != NULL, i % 3 != 0);
	ASSERT_EQ(weft__timers_peek(&h), INT64_MAX);
	ASSERT_EQ(h.len, 0);
	weft__timers_destroy(&h);
}

/*
 * Within one run, timers fire in exact deadline order. Guards: a 4-ary sift
 * that picks the wrong child.
 */
TEST_THREAD(exact_order_in_one_run)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	for (int i = 0; i < N; i++) {
		tm[i] = (struct weft__timer){ .fn = record };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], (int64_t)(next_rand() % 100000)), 0);
	}
	ASSERT_EQ(weft__timers_run(&h, INT64_MAX - 1), N);
	for (int i = 1; i < nfired; i++)
		ASSERT_LE(fired_when[i - 1], fired_when[i]);
	weft__timers_destroy(&h);
}

/*
 * Delete and re-add one timer many times: the heap holds one slot, and only
 * the last deadline fires. Guards: a deleted slot left behind (the heap grows,
 * the old deadline fires too).
 */
TEST_THREAD(readd_after_delete)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	tm[0] = (struct weft__timer){ .fn = record, .deletable = 1 };
	for (int i = 0; i < 1000; i++) {
		ASSERT_EQ(weft__timer_add(&h, &tm[0], 1000 - i), 0);
		if (i < 999)
			ASSERT_EQ(weft__timer_del(&tm[0]), 1);
	}
	ASSERT_EQ(h.len, 1);
	ASSERT_EQ(weft__timers_peek(&h), 1);
	ASSERT_EQ(weft__timers_run(&h, 5000), 1);
	ASSERT_EQ(nfired, 1);
	ASSERT_EQ(fired_when[0], 1);
	weft__timers_destroy(&h);
}

/* Moving a heap keeps every live timer and none of the deleted ones. */
TEST_THREAD(move_heap)
{
	struct weft__timers a, b;
	weft__timers_init(&a);
	weft__timers_init(&b);
	nfired = 0;
	for (int i = 0; i < 100; i++) {
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(i % 2 ? &a : &b, &tm[i], 10 + i), 0);
	}
	for (int i = 0; i < 100; i += 4)
		ASSERT_EQ(weft__timer_del(&tm[i]), 1);
	weft__timers_move(&a, &b);
	ASSERT_EQ(weft__timers_peek(&a), INT64_MAX);
	ASSERT_EQ(weft__timers_peek(&b), 11);
	ASSERT_EQ(weft__timers_run(&b, 1000), 75);
	ASSERT_EQ(weft__timer_del(&tm[1]), 0);
	weft__timers_destroy(&a);
	weft__timers_destroy(&b);
}

/*
 * A timer deleted and re-added later must not fire at its old, earlier
 * deadline. Guards: the deleted slot left in the heap firing the timer early.
 */
TEST_THREAD(deleted_does_not_fire_early)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	tm[0] = (struct weft__timer){ .fn = record, .deletable = 1 };
	tm[1] = (struct weft__timer){ .fn = record, .deletable = 1 };
	ASSERT_EQ(weft__timer_add(&h, &tm[1], 50), 0);
	ASSERT_EQ(weft__timer_add(&h, &tm[0], 100), 0);
	ASSERT_EQ(weft__timer_del(&tm[0]), 1);
	ASSERT_EQ(weft__timer_add(&h, &tm[0], 1000), 0);
	ASSERT_EQ(weft__timers_run(&h, 500), 1);
	ASSERT_EQ(nfired, 1);
	ASSERT_EQ(fired_when[0], 50);
	ASSERT_EQ(weft__timers_run(&h, 1500), 1);
	ASSERT_EQ(fired_when[1], 1000);
	weft__timers_destroy(&h);
}

/*
 * A deleted timer may be freed at once (a select's deadline lives in a stack
 * frame that is gone right after; weft_after's timer is freed with its
 * channel): the heap never reads it again, whatever happens to the heap
 * after. Guards: lazy deletion (a slot still naming the freed timer: a
 * use-after-free under make asan, a stale deadline or a crash otherwise).
 */
TEST_THREAD(deleted_timer_may_be_freed)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	enum { M = 500 };
	struct weft__timer *heap_tm[M];
	for (int i = 0; i < M; i++) {
		heap_tm[i] = malloc(sizeof *heap_tm[i]);
		ASSERT(heap_tm[i] != NULL);
		*heap_tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, heap_tm[i], (int64_t)(next_rand() % 1000) + 1), 0);
	}
	for (int i = 0; i < M; i += 2) {
		ASSERT_EQ(weft__timer_del(heap_tm[i]), 1);
		/* Poison, then free: a heap that still names it misbehaves. */
		memset(heap_tm[i], 0xA5, sizeof *heap_tm[i]);
		free(heap_tm[i]);
		heap_tm[i] = NULL;
	}
	ASSERT_EQ(h.len, M / 2);
	ASSERT_EQ(weft__timers_run(&h, 2000), M / 2);
	ASSERT_EQ(nfired, M / 2);
	for (int i = 1; i < M; i += 2)
		free(heap_tm[i]);
	weft__timers_destroy(&h);
}
