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

/* How often (in steal attempts) a thief retires; read by the thieves. */
static unsigned retire_every = 4;

/* Steal (runnext too) and run out our own ring, until told to stop and
 * nothing is left to steal. */
static void *steal_loop(void *arg)
{
	struct thief *t = arg;
	int ring_thief = 0;
	for (unsigned k = 0;; k++) {
		int stopping = atomic_load(t->stop);
		struct weft__g *g = weft__runq_steal(t->own, t->victim, 1, &ring_thief);
		if (g) {
			t->seen[g - t->base]++;
			while ((g = weft__runq_get(t->own)) != NULL)
				t->seen[g - t->base]++;
		} else if (stopping) {
			weft__ring_thief_retire(&ring_thief);
			return NULL;
		}
		/* Retire now and then (an M does when it exits; sysmon after
		 * each drain): the owner goes back to its takes without a CAS,
		 * and the next steal announces us again, racing them. */
		if (k % retire_every == 0)
			weft__ring_thief_retire(&ring_thief);
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

/* One owner putting (now and then as runnext) and getting, two thieves
 * stealing, over the Gs in gs[0..NG). */
static void steal_race(void)
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
	printf("    membarrier %d: stolen %ld of %d\n", weft__membarrier_ok, race_finish(&r), NG);
}

/* What weft__start does (the whole runtime is not started here): 1 if the
 * owner's takes without a locked instruction can be tested here. */
static int membarrier_register(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		return 1;
	printf("    no membarrier here: the CAS path only\n");
	return 0;
}

/*
 * One owner putting and getting, two thieves stealing, concurrently: every G
 * comes out exactly once, with the owner's ring takes made without a CAS
 * while no thief is announced (membarrier) and with the CAS only. Guards: a
 * steal that claims slots without the CAS on head (duplicates), a steal that
 * publishes before copying (lost Gs), a thief that steals from a ring
 * without announcing itself or without waiting out a take begun before it
 * did, an owner that takes without a CAS while a thief is announced.
 */
TEST_THREAD(concurrent_steal_exactly_once)
{
	int rounds = test_quick() ? 3 : 10;
	if (membarrier_register()) {
		weft__membarrier_ok = 1;
		for (int i = 0; i < rounds; i++)
			steal_race();
	}
	weft__membarrier_ok = 0;
	steal_race();
	ASSERT_EQ(weft__sched.ringthieves, 0);
}

enum { RING_MAX = 200000 };
static struct weft__g ring_gs[RING_MAX];

/*
 * The owner fills its ring with 32 Gs and takes them back one by one, over
 * and over, while two thieves steal and retire after every attempt, so that
 * each steal announces its thief (a membarrier) while the owner is most
 * likely taking (chaos holds one take in eight open a few microseconds):
 * every G comes out exactly once. Guards: a thief that does not wait out a
 * take its victim's owner began, without a CAS, before the thief was
 * announced (its CAS then beats the owner's store of head: about half the
 * runs fail, 9 of 20 here).
 */
TEST_THREAD(ring_owner_vs_announcing_thieves_exactly_once)
{
	if (!membarrier_register())
		return;
	int n = RING_MAX, rounds = test_quick() ? 10 : 40;
	static int seen_owner[RING_MAX], seen_a[RING_MAX], seen_b[RING_MAX];
	weft__membarrier_ok = 1;
	weft__sched.chaos = 1; /* holds some takes open (runq.c) */
	retire_every = 1;
	long stolen = 0;
	for (int round = 0; round < rounds; round++) {
		struct race r;
		race_start(&r, ring_gs, n, seen_owner, seen_a, seen_b);
		for (int i = 0; i < n; i += 32) {
			for (int k = i; k < i + 32 && k < n; k++)
				weft__runq_put(r.owner, &ring_gs[k], 0);
			struct weft__g *g;
			while ((g = weft__runq_get(r.owner)) != NULL)
				seen_owner[g - ring_gs]++;
		}
		stolen += race_finish(&r);
	}
	printf("    stolen %ld of %ld\n", stolen, (long)n * rounds);
	retire_every = 4;
	weft__sched.chaos = 0;
	weft__membarrier_ok = 0;
	ASSERT_EQ(weft__sched.ringthieves, 0);
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
	if (membarrier_register()) {
		weft__membarrier_ok = 1;
		runnext_race(rounds);
	}
	weft__membarrier_ok = 0;
	runnext_race(rounds);
}
