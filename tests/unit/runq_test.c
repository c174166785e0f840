/* SPDX-License-Identifier: MIT */
/*
 * runq_test.c - the per-P run queue (src/runtime/runq.c) on its own, like
 * Go's RunSchedLocalQueueTest and RunSchedLocalQueueStealTest: FIFO order,
 * runnext, overflow to the global queue, and concurrent stealing where every
 * G must come out exactly once.
 */
#include "test.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sched.h"

enum { NG = 20000 };
static struct weft__g gs[NG];

static struct weft__p *new_p(int id)
{
	struct weft__p *p = aligned_alloc(64, sizeof *p);
	memset(p, 0, sizeof *p);
	p->id = id;
	return p;
}

static void drain_global(int *seen)
{
	struct weft__p *tmp = new_p(0);
	weft__lock(&weft__sched.lock);
	for (;;) {
		struct weft__g *g = weft__globrunq_get(tmp, 1);
		if (!g)
			break;
		seen[g - gs]++;
	}
	weft__unlock(&weft__sched.lock);
	free(tmp);
}

/*
 * FIFO through the ring; runnext first; a displaced runnext goes to the
 * tail. Guards: LIFO pops, runnext ignored or lost.
 */
TEST_THREAD(fifo_and_runnext)
{
	struct weft__p *p = new_p(0);
	for (int i = 0; i < 10; i++)
		weft__runq_put(p, &gs[i], 0);
	weft__runq_put(p, &gs[100], 1);
	weft__runq_put(p, &gs[101], 1); /* displaces 100 to the tail */
	ASSERT_EQ(weft__runq_len(p), 12u);
	ASSERT_PTR_EQ(weft__runq_get(p), &gs[101]);
	for (int i = 0; i < 10; i++)
		ASSERT_PTR_EQ(weft__runq_get(p), &gs[i]);
	ASSERT_PTR_EQ(weft__runq_get(p), &gs[100]);
	ASSERT_PTR_EQ(weft__runq_get(p), NULL);
	ASSERT(weft__runq_empty(p));
	free(p);
}

/*
 * More than the ring holds: the overflow goes to the global queue, and
 * every G is found exactly once across the two. Guards: put_slow losing or
 * duplicating Gs.
 */
TEST_THREAD(overflow_to_global)
{
	static int seen[NG];
	memset(seen, 0, sizeof seen);
	weft__sched.nprocs = 1;
	struct weft__p *p = new_p(0);
	enum { M = 3 * WEFT_RUNQ_SIZE };
	for (int i = 0; i < M; i++)
		weft__runq_put(p, &gs[i], 0);
	ASSERT(weft__sched.runqsize > 0);
	struct weft__g *g;
	while ((g = weft__runq_get(p)) != NULL)
		seen[g - gs]++;
	drain_global(seen);
	for (int i = 0; i < M; i++)
		ASSERT_EQ(seen[i], 1);
	free(p);
}

/*
 * A P beyond weft_procs() takes nothing from the global queue, and the
 * queue keeps every G for the Ps that remain. Guards: an M whose P was
 * removed after it last read the count (pick_fast reads it without the lock)
 * running a G readied since then on that P, as the chaos run of
 * api/sched set_procs_while_running once caught.
 */
TEST_THREAD(global_queue_refuses_a_removed_p)
{
	static int seen[NG];
	memset(seen, 0, sizeof seen);
	weft__sched.nprocs = 2;
	struct weft__p *p1 = new_p(1);
	weft__lock(&weft__sched.lock);
	for (int i = 0; i < 10; i++)
		weft__globrunq_put(&gs[i]);
	struct weft__g *g = weft__globrunq_get(p1, 1);
	ASSERT_PTR_EQ(g, &gs[0]);
	weft__sched.nprocs = 1; /* weft_set_procs(1): P 1 goes away */
	ASSERT_PTR_EQ(weft__globrunq_get(p1, 0), NULL);
	ASSERT_PTR_EQ(weft__globrunq_get(p1, 1), NULL);
	ASSERT_EQ(weft__sched.runqsize, 9);
	weft__unlock(&weft__sched.lock);
	ASSERT(weft__runq_empty(p1));
	drain_global(seen);
	for (int i = 1; i < 10; i++)
		ASSERT_EQ(seen[i], 1);
	free(p1);
}

struct thief {
	struct weft__p *victim, *own;
	atomic_int *stop;
	struct weft__g *base; /* the Gs' array, to index seen */
	int *seen;            /* owned by this thief */
};

/* Steal (runnext too) and run out our own ring, until told to stop and
 * nothing is left to steal. */
static void *steal_loop(void *arg)
{
	struct thief *t = arg;
	for (;;) {
		int stopping = atomic_load(t->stop);
		struct weft__g *g = weft__runq_steal(t->own, t->victim, 1);
		if (g) {
			t->seen[g - t->base]++;
			while ((g = weft__runq_get(t->own)) != NULL)
				t->seen[g - t->base]++;
		} else if (stopping) {
			return NULL;
		}
	}
}

/* An owner P and two thieves on their own Ps and pthreads, over the Gs in
 * base[0..n): race_start, then the owner's puts and gets, then race_finish
 * checks that every G came out exactly once. */
struct race {
	struct weft__p *owner, *pa, *pb;
	atomic_int stop;
	struct thief a, b;
	pthread_t ta, tb;
	int *seen_owner;
	int n;
};

static void race_start(struct race *r, struct weft__g *base, int n, int *seen_owner, int *seen_a,
                       int *seen_b)
{
	memset(seen_owner, 0, sizeof *seen_owner * (size_t)n);
	memset(seen_a, 0, sizeof *seen_a * (size_t)n);
	memset(seen_b, 0, sizeof *seen_b * (size_t)n);
	weft__sched.nprocs = 3;
	r->owner = new_p(0);
	r->pa = new_p(1);
	r->pb = new_p(2);
	atomic_store(&r->stop, 0);
	r->a = (struct thief){r->owner, r->pa, &r->stop, base, seen_a};
	r->b = (struct thief){r->owner, r->pb, &r->stop, base, seen_b};
	r->seen_owner = seen_owner;
	r->n = n;
	ASSERT_EQ(pthread_create(&r->ta, NULL, steal_loop, &r->a), 0);
	ASSERT_EQ(pthread_create(&r->tb, NULL, steal_loop, &r->b), 0);
}

/* Stop the thieves; returns how many Gs they stole. */
static long race_finish(struct race *r)
{
	atomic_store(&r->stop, 1);
	pthread_join(r->ta, NULL);
	pthread_join(r->tb, NULL);
	struct weft__g *g;
	while ((g = weft__runq_get(r->owner)) != NULL)
		r->seen_owner[g - r->a.base]++;
	long stolen = 0;
	for (int i = 0; i < r->n; i++) {
		ASSERT_EQ(r->seen_owner[i] + r->a.seen[i] + r->b.seen[i], 1);
		stolen += r->a.seen[i] + r->b.seen[i];
	}
	free(r->owner);
	free(r->pa);
	free(r->pb);
	return stolen;
}

/*
 * One owner putting and getting, two thieves stealing, concurrently: every G
 * comes out exactly once. Guards: a steal that claims slots without the CAS
 * on head (duplicates), a steal that publishes before copying (lost Gs).
 */
TEST_THREAD(concurrent_steal_exactly_once)
{
	static int seen_owner[NG], seen_a[NG], seen_b[NG];
	struct race r;
	race_start(&r, gs, NG, seen_owner, seen_a, seen_b);
	for (int i = 0; i < NG; i++) {
		weft__runq_put(r.owner, &gs[i], i % 7 == 0);
		if (i % 3 == 0) {
			struct weft__g *g = weft__runq_get(r.owner);
			if (g)
				seen_owner[g - gs]++;
		}
	}
	drain_global(seen_owner); /* overflow went there */
	printf("    stolen: %ld of %d\n", race_finish(&r), NG);
}

enum { RN_MAX = 200000 };
static struct weft__g rn_gs[RN_MAX];

/* The owner puts `rounds` Gs as runnext, in pairs (the second displaces
 * the first to the ring, a swap), and takes them back at once, while two
 * thieves try to steal runnext the whole time (their own rings are empty
 * and the victim is not running, so they do not nap). */
static void runnext_race(int rounds)
{
	static int seen_owner[RN_MAX], seen_a[RN_MAX], seen_b[RN_MAX];
	struct race r;
	race_start(&r, rn_gs, rounds, seen_owner, seen_a, seen_b);
	for (int i = 0; i + 1 < rounds; i += 2) {
		weft__runq_put(r.owner, &rn_gs[i], 1);
		weft__runq_put(r.owner, &rn_gs[i + 1], 1);
		for (int k = 0; k < 2; k++) {
			struct weft__g *g = weft__runq_get(r.owner);
			if (g)
				seen_owner[g - rn_gs]++;
		}
	}
	printf("    membarrier %d: %ld of %d stolen from runnext\n", weft__membarrier_ok,
	       race_finish(&r), rounds);
}

/*
 * The owner takes runnext, and swaps a new G into it, without a locked
 * instruction when membarrier() is available (runq.c's hand-shake), with a
 * CAS or an exchange otherwise; thieves race it on every G. Every G comes
 * out exactly once, both ways. Guards: a thief that skips the membarrier or
 * ignores rn_taking (a duplicate on every run here); an owner's take or swap
 * that ignores rn_steal (a G a thief has just taken runs twice); an owner
 * that does not read runnext again after seeing no thief (a window of a few
 * instructions, caught in about one run in five).
 */
TEST_THREAD(runnext_owner_vs_thieves_exactly_once)
{
	int rounds = test_quick() ? 50000 : RN_MAX;
	/* What weft__start does (the whole runtime is not started here). */
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
		weft__membarrier_ok = 1;
		runnext_race(rounds);
	} else {
		printf("    no membarrier here: the CAS path only\n");
	}
	weft__membarrier_ok = 0;
	runnext_race(rounds);
}
