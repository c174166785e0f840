/* SPDX-License-Identifier: MIT */
/*
 * timer_test.c - the per-P timer heap (src/runtime/timer.c) on its own:
 * ordering against a reference, deletion (deletable timers leave the heap at
 * once and may be freed), moving a heap, and the lock-free earliest-deadline
 * hint; the FIFO lane that takes timers arriving in deadline order (holes,
 * compaction, growth) and the per-run limit.
 */
#include "test.h"

#include <limits.h>
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

/* Timers pending in either lane. */
static int pending(const struct weft__timers *h)
{
	return h->len + (int)(h->qtail - h->qhead - h->qdead);
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
		weft__timers_run(&h, now, INT_MAX);
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
	ASSERT_EQ(pending(&h), 0);
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
	ASSERT_EQ(weft__timers_run(&h, INT64_MAX - 1, INT_MAX), N);
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
	ASSERT_EQ(pending(&h), 1);
	ASSERT_EQ(weft__timers_peek(&h), 1);
	ASSERT_EQ(weft__timers_run(&h, 5000, INT_MAX), 1);
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
	ASSERT_EQ(weft__timers_run(&b, 1000, INT_MAX), 75);
	ASSERT_EQ(weft__timer_del(&tm[1]), 0);
	weft__timers_destroy(&a);
	weft__timers_destroy(&b);
}

/*
 * Moving a heap whose timers sit in both lanes: timers added in falling
 * deadline order go to the heap lane, in rising order to the FIFO lane.
 * Every live one arrives, and they fire in deadline order. Guards: a move
 * that takes only one lane (move_heap above adds in rising order, so its
 * timers are all in the FIFO lane; a move that left the heap lane behind
 * lost timers whenever a P retired).
 */
TEST_THREAD(move_heap_both_lanes)
{
	struct weft__timers a, b;
	weft__timers_init(&a);
	weft__timers_init(&b);
	nfired = 0;
	for (int i = 0; i < 50; i++) { /* rising: a's FIFO lane */
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&a, &tm[i], 1000 + i), 0);
	}
	for (int i = 50; i < 100; i++) { /* falling, below the lane: a's heap */
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&a, &tm[i], 600 - i), 0);
	}
	ASSERT(a.len > 0 && a.qtail != a.qhead); /* both lanes in use */
	tm[100] = (struct weft__timer){ .fn = record };
	ASSERT_EQ(weft__timer_add(&b, &tm[100], 5), 0);
	weft__timers_move(&a, &b);
	ASSERT_EQ(weft__timers_peek(&a), INT64_MAX);
	ASSERT_EQ(pending(&a), 0);
	ASSERT_EQ(pending(&b), 101);
	ASSERT_EQ(weft__timers_run(&b, 10000, INT_MAX), 101);
	ASSERT_EQ(nfired, 101);
	for (int i = 1; i < nfired; i++)
		ASSERT_LE(fired_when[i - 1], fired_when[i]);
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
	ASSERT_EQ(weft__timers_run(&h, 500, INT_MAX), 1);
	ASSERT_EQ(nfired, 1);
	ASSERT_EQ(fired_when[0], 50);
	ASSERT_EQ(weft__timers_run(&h, 1500, INT_MAX), 1);
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
	ASSERT_EQ(pending(&h), M / 2);
	ASSERT_EQ(weft__timers_run(&h, 2000, INT_MAX), M / 2);
	ASSERT_EQ(nfired, M / 2);
	for (int i = 1; i < M; i += 2)
		free(heap_tm[i]);
	weft__timers_destroy(&h);
}

/*
 * Timers in deadline order (the queue lane) mixed with ones out of order
 * (the heap lane) fire in exact deadline order, each once. Guards: a run
 * that drains one lane before the other, an earliest hint that ignores a
 * lane, an out-of-order timer appended to the queue.
 */
TEST_THREAD(two_lanes_in_order)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	int64_t clock = 1000;
	for (int i = 0; i < N; i++) {
		int64_t when;
		if (i % 3 == 2)
			when = clock - (int64_t)(next_rand() % 900); /* earlier than the last */
		else
			when = (clock += (int64_t)(next_rand() % 20));
		tm[i] = (struct weft__timer){ .fn = record, .deletable = (uint8_t)(i % 2) };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], when), 0);
		ASSERT(weft__timers_peek(&h) <= when);
	}
	ASSERT(h.len > N / 4);                  /* both lanes in use */
	ASSERT(h.qtail - h.qhead > (uint32_t)N / 2);
	for (int64_t now = 0; now < clock + 100; now += 97)
		weft__timers_run(&h, now, INT_MAX);
	ASSERT_EQ(nfired, N);
	for (int i = 1; i < nfired; i++)
		ASSERT_LE(fired_when[i - 1], fired_when[i]);
	ASSERT_EQ(pending(&h), 0);
	weft__timers_destroy(&h);
}

/*
 * Queue-lane timers deleted at the head, the tail and in the middle: the
 * rest fire in order and the earliest hint follows the head. Guards: a head
 * or tail hole left in place (a stale hint, a deleted timer fired), a
 * middle delete that removes the wrong slot.
 */
TEST_THREAD(queue_deletes)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	enum { Q = 200 };
	for (int i = 0; i < Q; i++) {
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], 100 + i), 0);
	}
	ASSERT_EQ(h.len, 0); /* all in the queue */
	ASSERT_EQ(weft__timer_del(&tm[0]), 1);
	ASSERT_EQ(weft__timers_peek(&h), 101);
	ASSERT_EQ(weft__timer_del(&tm[1]), 1);
	ASSERT_EQ(weft__timers_peek(&h), 102);
	ASSERT_EQ(weft__timer_del(&tm[Q - 1]), 1);
	for (int i = 3; i < Q - 1; i += 5)
		ASSERT_EQ(weft__timer_del(&tm[i]), 1);
	ASSERT_EQ(weft__timer_del(&tm[2]), 1); /* head again, over the middle holes */
	ASSERT_EQ(weft__timers_peek(&h), 104);
	int live = pending(&h);
	ASSERT_EQ(weft__timers_run(&h, 1000, INT_MAX), live);
	ASSERT_EQ(nfired, live);
	for (int i = 0; i < nfired; i++) {
		int k = (int)(fired_when[i] - 100);
		ASSERT(k > 2 && k < Q - 1 && (k - 3) % 5 != 0);
		if (i)
			ASSERT_LT(fired_when[i - 1], fired_when[i]);
	}
	weft__timers_destroy(&h);
}

/*
 * Deadlines added and deleted behind one long-lived timer, as a server's
 * per-request deadlines behind a slow one: memory stays bounded (the holes
 * are squeezed out) and the survivors keep their order. Guards: holes never
 * compacted (the ring doubles without end), a compaction that loses or
 * misplaces a live slot (a wrong index: the wrong timer deleted).
 */
TEST_THREAD(queue_holes_bounded)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	enum { SURV = 50 };
	struct weft__timer *eph = &tm[1], *surv = &tm[100];
	tm[0] = (struct weft__timer){ .fn = record, .deletable = 1 };
	ASSERT_EQ(weft__timer_add(&h, &tm[0], 10), 0);
	int64_t when = 10;
	for (int i = 0; i < 200000; i++) {
		if (i % 10 != 0) {
			/* Nine in ten go at once... */
			*eph = (struct weft__timer){ .fn = record, .deletable = 1 };
			ASSERT_EQ(weft__timer_add(&h, eph, ++when), 0);
			ASSERT_EQ(weft__timer_del(eph), 1);
			continue;
		}
		/* ...the tenth lives until SURV more have come. */
		struct weft__timer *t = &surv[(i / 10) % SURV];
		if (i / 10 >= SURV)
			ASSERT_EQ(weft__timer_del(t), 1);
		*t = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, t, ++when), 0);
	}
	ASSERT(h.qcap <= 1024);
	ASSERT_EQ(h.len, 0);
	ASSERT_EQ(pending(&h), SURV + 1);
	ASSERT_EQ(weft__timers_run(&h, INT64_MAX - 1, INT_MAX), SURV + 1);
	ASSERT_EQ(fired_when[0], 10);
	ASSERT_EQ(fired_when[1], when - 10 * SURV + 1); /* the oldest survivor */
	for (int i = 1; i < nfired; i++)
		ASSERT_LT(fired_when[i - 1], fired_when[i]);
	weft__timers_destroy(&h);
}

/*
 * The queue grows while deletable timers are in it, from a ring whose live
 * part wraps around its end: every timer's slot index must follow it.
 * Guards: a grow that copies without renumbering (deleting afterwards
 * removes the wrong slot, a live timer is lost or a deleted one fires).
 */
TEST_THREAD(queue_grows_with_deletables)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	int64_t when = 0;
	/* Wrap: fill 40, fire 30, so the next adds wrap round the 64 ring. */
	for (int i = 0; i < 40; i++) {
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], ++when), 0);
	}
	ASSERT_EQ(weft__timers_run(&h, 30, INT_MAX), 30);
	for (int i = 40; i < 1040; i++) {
		tm[i] = (struct weft__timer){ .fn = record, .deletable = 1 };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], ++when), 0);
	}
	ASSERT(h.qcap >= 1024);
	/* Every third: a pattern that does not map the old slots onto the new
	 * ones by chance. */
	for (int i = 30; i < 1040; i += 3)
		ASSERT_EQ(weft__timer_del(&tm[i]), 1);
	nfired = 0;
	ASSERT_EQ(weft__timers_run(&h, when, INT_MAX), 1010 - 337);
	for (int i = 30, k = 0; i < 1040; i++)
		if (i % 3 != 0)
			ASSERT_EQ(fired_when[k++], i + 1);
	weft__timers_destroy(&h);
}

/*
 * A run fires at most max timers, the earliest ones, and leaves the rest
 * due. Guards: a limit ignored (the scheduler fires 10,000 at once), a
 * limit that skips or reorders.
 */
TEST_THREAD(run_limit)
{
	struct weft__timers h;
	weft__timers_init(&h);
	nfired = 0;
	for (int i = 0; i < 100; i++) {
		tm[i] = (struct weft__timer){ .fn = record };
		ASSERT_EQ(weft__timer_add(&h, &tm[i], i % 2 ? 100 + i : 300 - i), 0);
	}
	ASSERT_EQ(weft__timers_run(&h, 1000, 7), 7);
	ASSERT_EQ(pending(&h), 93);
	ASSERT_EQ(weft__timers_run(&h, 1000, 0), 0);
	ASSERT_EQ(weft__timers_run(&h, 1000, 50), 50);
	ASSERT_EQ(weft__timers_run(&h, 1000, INT_MAX), 43);
	ASSERT_EQ(nfired, 100);
	for (int i = 1; i < nfired; i++)
		ASSERT_LE(fired_when[i - 1], fired_when[i]);
	weft__timers_destroy(&h);
}
