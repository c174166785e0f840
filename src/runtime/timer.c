/* SPDX-License-Identifier: MIT */
/*
 * timer.c - per-P timer heaps: the clock behind weft_sleep and every
 * deadline in weft (channel receives, I/O, contexts).
 *
 * Design. Each P owns one 4-ary min-heap keyed by deadline, and a FIFO lane
 * (below). Go went from one
 * global heap (a contended lock on every sleep) to per-P heaps for the same
 * reason we start there. The heap has its own lock rather than being owned
 * lock-free by the P, because three other parties must be able to fire a P's
 * timers: a P that steals work, the idle M that sleeps until the earliest
 * deadline of all Ps, and sysmon when the owner is stuck in a CPU-bound
 * goroutine (a sleeping goroutine's wake-up must not wait for a hog).
 *
 * A slot holds the deadline inline, next to the timer pointer, and sifting
 * moves 24-byte slots within one array without touching the timers: with
 * 10,000 sleepers each timer sits in a different goroutine's stack page, and
 * an index update per move would cost a TLB miss per level (it was a quarter
 * of the Sleep benchmark's time). A sleep's timer is never deleted, so it
 * needs no index. Timers that may be deleted (deadlines of channel waits,
 * weft_after, Timer, Ticker) are marked deletable: their slot index follows
 * them, and deletion removes the slot at once. No slot ever outlives its
 * timer's pending period, so a deleted timer may be freed (or its stack
 * frame reused) right away. 4-ary rather than binary: half the levels, and
 * the four children share a cache line or two.
 *
 * The queue lane. Most timers arrive in deadline order: every sleep or
 * deadline of one duration, added as time goes by, lands after the last one.
 * Such a timer (due no earlier than the queue's last slot) is appended to a
 * FIFO ring instead of the heap: O(1) in and out, with no sifting.
 * Out-of-order timers take the heap; the earliest timer is the lesser of the
 * two heads. A deleted queue slot becomes a hole (t == NULL) that the head
 * and tail skip; holes are squeezed out once they are half the queue, so
 * deadlines added and deleted behind one long-lived timer cost O(1)
 * amortised and bounded memory.
 *
 * Invariants (under heap->lock):
 *  - a timer t is pending in h exactly when t->heap == h; then exactly one
 *    slot of h names t, and for a deletable t it is v[t->idx] (idx >= 0) or
 *    q[~t->idx] (idx < 0).
 *  - q's slots from qhead to qtail have non-decreasing deadlines (holes
 *    included); the slots at qhead and qtail - 1 are not holes; qdead counts
 *    the holes.
 *  - h->earliest is the lesser of v[0]'s and q[qhead]'s deadlines (INT64_MAX
 *    when both are empty), for the lock-free peek.
 *  - fn runs at most once per add, after its slot left the heap, with the
 *    lock released, so fn may add timers (even to the same heap).
 */
#include "timer.h"

#include "weft.h"

#include <errno.h>
#include <stdint.h>

#include "alloc.h"
#include "fatal.h"
#include "lock.h"

void weft__timers_init(struct weft__timers *h)
{
	h->lock = 0;
	h->len = h->cap = 0;
	h->v = NULL;
	h->q = NULL;
	h->qhead = h->qtail = h->qcap = h->qdead = 0;
	h->earliest = INT64_MAX;
}

void weft__timers_destroy(struct weft__timers *h)
{
	weft__free(h->v);
	weft__free(h->q);
	weft__timers_init(h);
}

/* ---- the queue lane */

static inline struct weft__tentry *qslot(struct weft__timers *h, uint32_t pos)
{
	return &h->q[pos & (h->qcap - 1)];
}

/* Put slot x at ring position pos (a deletable timer learns its index). */
static inline void qplace(struct weft__timers *h, uint32_t pos, struct weft__tentry x)
{
	uint32_t i = pos & (h->qcap - 1);
	h->q[i] = x;
	if (x.deletable)
		x.t->idx = ~(int32_t)i;
}

/* Drop the holes at both ends. */
static void qtrim(struct weft__timers *h)
{
	while (h->qhead != h->qtail && !qslot(h, h->qhead)->t) {
		h->qhead++;
		h->qdead--;
	}
	while (h->qhead != h->qtail && !qslot(h, h->qtail - 1)->t) {
		h->qtail--;
		h->qdead--;
	}
}

/* Squeeze out the holes, keeping the order. The write position never passes
 * the read position, so this works in place. */
static void qcompact(struct weft__timers *h)
{
	uint32_t w = h->qhead;
	for (uint32_t r = h->qhead; r != h->qtail; r++) {
		struct weft__tentry x = *qslot(h, r);
		if (x.t)
			qplace(h, w++, x);
	}
	h->qtail = w;
	h->qdead = 0;
}

/* Make room for one more slot: squeeze out holes if they are a quarter of
 * the ring, else double it. Returns 0 or ENOMEM. */
static int qroom(struct weft__timers *h)
{
	uint32_t n = h->qtail - h->qhead;
	if (n < h->qcap)
		return 0;
	if (h->qdead > h->qcap / 4) {
		qcompact(h);
		return 0;
	}
	uint32_t ncap = h->qcap ? h->qcap * 2 : 64;
	struct weft__tentry *nq = weft__alloc(sizeof *nq * (size_t)ncap);
	if (!nq)
		return ENOMEM;
	struct weft__tentry *old = h->q;
	uint32_t oldhead = h->qhead, oldmask = h->qcap - 1;
	h->q = nq;
	h->qcap = ncap;
	for (uint32_t i = 0; i < n; i++)
		qplace(h, i, old[(oldhead + i) & oldmask]);
	h->qhead = 0;
	h->qtail = n;
	weft__free(old);
	return 0;
}

/* Delete the slot at ring index i. */
static void qdelete(struct weft__timers *h, uint32_t i)
{
	h->q[i].t = NULL;
	h->q[i].deletable = 0;
	h->qdead++;
	qtrim(h);
	if (h->qdead >= 64 && 2 * h->qdead >= h->qtail - h->qhead)
		qcompact(h);
}

/* ---- the heap lane */

/* Put slot x at index i (a deletable timer learns its new index). */
static inline void place(struct weft__tentry *v, int32_t i, struct weft__tentry x)
{
	v[i] = x;
	if (x.deletable)
		x.t->idx = i;
}

static void sift_up(struct weft__tentry *v, int32_t i)
{
	struct weft__tentry x = v[i];
	while (i > 0) {
		int32_t parent = (i - 1) / 4;
		if (v[parent].when <= x.when)
			break;
		place(v, i, v[parent]);
		i = parent;
	}
	place(v, i, x);
}

static void sift_down(struct weft__tentry *v, int32_t len, int32_t i)
{
	struct weft__tentry x = v[i];
	for (;;) {
		int32_t c = 4 * i + 1;
		if (c >= len)
			break;
		int32_t best = c;
		int32_t end = c + 4 < len ? c + 4 : len;
		for (int32_t k = c + 1; k < end; k++)
			if (v[k].when < v[best].when)
				best = k;
		if (x.when <= v[best].when)
			break;
		place(v, i, v[best]);
		i = best;
	}
	place(v, i, x);
}

/* Remove slot i: the last slot takes its place and sifts either way. */
static void remove_at(struct weft__timers *h, int32_t i)
{
	h->len--;
	if (i == h->len)
		return;
	place(h->v, i, h->v[h->len]);
	if (i > 0 && h->v[(i - 1) / 4].when > h->v[i].when)
		sift_up(h->v, i);
	else
		sift_down(h->v, h->len, i);
}

/* ---- both lanes */

/* Publish the new earliest deadline. */
static void settle(struct weft__timers *h)
{
	int64_t e = h->len ? h->v[0].when : INT64_MAX;
	if (h->qhead != h->qtail && qslot(h, h->qhead)->when < e)
		e = qslot(h, h->qhead)->when;
	/* Pairs with the acquire in weft__timers_peek. */
	__atomic_store_n(&h->earliest, e, __ATOMIC_RELEASE);
}

static int push(struct weft__timers *h, struct weft__timer *t)
{
	struct weft__tentry x = { .when = t->when, .t = t, .deletable = t->deletable };
	if (h->qhead == h->qtail || t->when >= qslot(h, h->qtail - 1)->when) {
		if (qroom(h))
			return ENOMEM;
		__atomic_store_n(&t->heap, h, __ATOMIC_RELEASE);
		qplace(h, h->qtail++, x);
		return 0;
	}
	if (h->len == h->cap) {
		int32_t ncap = h->cap ? h->cap * 2 : 64;
		struct weft__tentry *nv = weft__alloc(sizeof *nv * (size_t)ncap);
		if (!nv)
			return ENOMEM;
		for (int32_t i = 0; i < h->len; i++)
			nv[i] = h->v[i];
		weft__free(h->v);
		h->v = nv;
		h->cap = ncap;
	}
	__atomic_store_n(&t->heap, h, __ATOMIC_RELEASE);
	place(h->v, h->len, x);
	sift_up(h->v, h->len++);
	return 0;
}

int weft__timer_add(struct weft__timers *h, struct weft__timer *t, int64_t when)
{
	weft__lock(&h->lock);
	t->when = when;
	int err = push(h, t);
	if (!err)
		settle(h);
	weft__unlock(&h->lock);
	return err;
}

int weft__timer_del(struct weft__timer *t)
{
	if (!t->deletable)
		weft__fatal("weft__timer_del of a timer not marked deletable");
	for (;;) {
		struct weft__timers *h = __atomic_load_n(&t->heap, __ATOMIC_ACQUIRE);
		if (!h)
			return 0;
		weft__lock(&h->lock);
		if (t->heap != h) {
			/* Moved to another heap (its P went away) or fired meanwhile. */
			weft__unlock(&h->lock);
			continue;
		}
		if (t->idx >= 0)
			remove_at(h, t->idx);
		else
			qdelete(h, (uint32_t)~t->idx);
		__atomic_store_n(&t->heap, NULL, __ATOMIC_RELAXED);
		settle(h);
		weft__unlock(&h->lock);
		return 1;
	}
}

void weft__timer_stop_wait(struct weft__timer *t, const uint32_t *let_go)
{
	if (!weft__timer_del(t))
		while (!__atomic_load_n(let_go, __ATOMIC_ACQUIRE))
			weft_yield();
}

/* Take the earliest timer if it is due at now, or return NULL. */
static struct weft__timer *pop_due(struct weft__timers *h, int64_t now)
{
	int64_t hw = h->len ? h->v[0].when : INT64_MAX;
	if (h->qhead != h->qtail) {
		struct weft__tentry *x = qslot(h, h->qhead);
		if (x->when <= hw) {
			if (x->when > now)
				return NULL;
			struct weft__timer *t = x->t;
			h->qhead++;
			qtrim(h);
			return t;
		}
	}
	if (hw > now)
		return NULL;
	struct weft__timer *t = h->v[0].t;
	remove_at(h, 0);
	return t;
}

/* Timers taken (from either lane) per lock hold. */
enum { RUN_BATCH = 32 };

int weft__timers_run(struct weft__timers *h, int64_t now, int max)
{
	struct weft__timer *batch[RUN_BATCH];
	int ran = 0;
	while (ran < max && weft__timers_peek(h) <= now) {
		int n = 0;
		weft__lock(&h->lock);
		while (n < RUN_BATCH && ran + n < max) {
			struct weft__timer *t = pop_due(h, now);
			if (!t)
				break;
			/* This store is the first touch of t: for a sleeper, a
			 * cold line in a cold page (a TLB miss). The misses of a
			 * batch overlap: the stores wait in the store buffer
			 * while the next timers are taken. */
			__atomic_store_n(&t->heap, NULL, __ATOMIC_RELAXED);
			batch[n++] = t;
		}
		settle(h);
		weft__unlock(&h->lock);
		if (n == 0)
			break;
		/* Now the pages are mapped in the TLB: warm what the
		 * callbacks touch next, all at once (a sleeper's G). */
		for (int i = 0; i < n; i++)
			__builtin_prefetch(batch[i]->arg, 1);
		for (int i = 0; i < n; i++)
			batch[i]->fn(batch[i]);
		ran += n;
	}
	return ran;
}

void weft__timers_move(struct weft__timers *from, struct weft__timers *to)
{
	/* Lock order: the lower address first, so two moves in opposite
	 * directions cannot deadlock. */
	struct weft__timers *a = from < to ? from : to, *b = from < to ? to : from;
	weft__lock(&a->lock);
	weft__lock(&b->lock);
	for (int32_t i = 0; i < from->len; i++)
		if (push(to, from->v[i].t))
			weft__fatal("out of memory moving timers");
	for (uint32_t r = from->qhead; r != from->qtail; r++)
		if (qslot(from, r)->t && push(to, qslot(from, r)->t))
			weft__fatal("out of memory moving timers");
	from->len = 0;
	from->qhead = from->qtail = from->qdead = 0;
	settle(from);
	settle(to);
	weft__unlock(&b->lock);
	weft__unlock(&a->lock);
}
