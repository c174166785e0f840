/* SPDX-License-Identifier: MIT */
/*
 * timer.c - per-P timer heaps: the clock behind weft_sleep and, later, every
 * deadline in weft (channel receives, I/O, contexts).
 *
 * Design. Each P owns one 4-ary min-heap keyed by deadline. Go went from one
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
 * Invariants (under heap->lock):
 *  - a timer t is pending in h exactly when t->heap == h; then exactly one
 *    slot of h names t, and for a deletable t it is v[t->idx].
 *  - h->earliest is the deadline of v[0] (or INT64_MAX when empty), for the
 *    lock-free peek.
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
	h->earliest = INT64_MAX;
}

void weft__timers_destroy(struct weft__timers *h)
{
	weft__free(h->v);
	weft__timers_init(h);
}

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

/* Publish the new earliest deadline. */
static void settle(struct weft__timers *h)
{
	/* Pairs with the acquire in weft__timers_peek. */
	__atomic_store_n(&h->earliest, h->len ? h->v[0].when : INT64_MAX, __ATOMIC_RELEASE);
}

static int push(struct weft__timers *h, struct weft__timer *t)
{
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
	place(h->v, h->len, (struct weft__tentry){ .when = t->when, .t = t, .deletable = t->deletable });
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
		remove_at(h, t->idx);
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

int weft__timers_run(struct weft__timers *h, int64_t now)
{
	int ran = 0;
	if (weft__timers_peek(h) > now)
		return 0;
	weft__lock(&h->lock);
	while (h->len && h->v[0].when <= now) {
		struct weft__timer *t = h->v[0].t;
		remove_at(h, 0);
		__atomic_store_n(&t->heap, NULL, __ATOMIC_RELAXED);
		settle(h);
		weft__unlock(&h->lock);
		t->fn(t);
		ran++;
		weft__lock(&h->lock);
	}
	weft__unlock(&h->lock);
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
	from->len = 0;
	settle(from);
	settle(to);
	weft__unlock(&b->lock);
	weft__unlock(&a->lock);
}
