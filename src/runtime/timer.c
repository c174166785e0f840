/* SPDX-License-Identifier: MIT */
/*
 * timer.c - per-P timer heaps: the clock behind weft_sleep and, later, every
 * deadline in weft (channel receives, I/O, contexts).
 *
 * Design. Each P owns one binary min-heap keyed by deadline. Go went from one
 * global heap (a contended lock on every sleep) to per-P heaps for the same
 * reason we start there. The heap has its own lock rather than being owned
 * lock-free by the P, because three other parties must be able to fire a P's
 * timers: a P that steals work, the idle M that sleeps until the earliest
 * deadline of all Ps, and sysmon when the owner is stuck in a CPU-bound
 * goroutine (a sleeping goroutine's wake-up must not wait for a hog).
 *
 * Invariants:
 *  - t->heap != NULL exactly while t is in that heap, and then
 *    heap->v[t->idx] == t. Both change only under heap->lock.
 *  - heap->earliest == v[0]->when (or INT64_MAX when empty); it is stored
 *    under the lock and read without it as a hint (release/acquire).
 *  - A timer's fn runs at most once per add, after it left the heap and with
 *    the lock released, so fn may add timers (even to the same heap).
 */
#include "timer.h"

#include <errno.h>
#include <stdint.h>

#include "alloc.h"
#include "fatal.h"
#include "lock.h"

void weft__timers_init(struct weft__timers *h)
{
	h->len = h->cap = 0;
	h->v = NULL;
	h->earliest = INT64_MAX;
}

static void set_earliest(struct weft__timers *h)
{
	/* Pairs with the acquire in weft__timers_peek. */
	__atomic_store_n(&h->earliest, h->len ? h->v[0]->when : INT64_MAX, __ATOMIC_RELEASE);
}

static void place(struct weft__timers *h, int32_t i, struct weft__timer *t)
{
	h->v[i] = t;
	t->idx = i;
}

static void sift_up(struct weft__timers *h, int32_t i)
{
	struct weft__timer *t = h->v[i];
	while (i > 0) {
		int32_t parent = (i - 1) / 2;
		if (h->v[parent]->when <= t->when)
			break;
		place(h, i, h->v[parent]);
		i = parent;
	}
	place(h, i, t);
}

static void sift_down(struct weft__timers *h, int32_t i)
{
	struct weft__timer *t = h->v[i];
	for (;;) {
		int32_t c = 2 * i + 1;
		if (c >= h->len)
			break;
		if (c + 1 < h->len && h->v[c + 1]->when < h->v[c]->when)
			c++;
		if (t->when <= h->v[c]->when)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

/* Remove the timer at index i. h->lock must be held. */
static void remove_at(struct weft__timers *h, int32_t i)
{
	struct weft__timer *t = h->v[i];
	h->len--;
	if (i != h->len) {
		place(h, i, h->v[h->len]);
		sift_down(h, i);
		sift_up(h, h->v[i]->idx);
	}
	t->heap = NULL;
	t->idx = -1;
}

static int push(struct weft__timers *h, struct weft__timer *t)
{
	if (h->len == h->cap) {
		int32_t ncap = h->cap ? h->cap * 2 : 64;
		struct weft__timer **nv = weft__alloc(sizeof *nv * (size_t)ncap);
		if (!nv)
			return ENOMEM;
		for (int32_t i = 0; i < h->len; i++)
			nv[i] = h->v[i];
		weft__free(h->v);
		h->v = nv;
		h->cap = ncap;
	}
	t->heap = h;
	place(h, h->len++, t);
	sift_up(h, t->idx);
	return 0;
}

int weft__timer_add(struct weft__timers *h, struct weft__timer *t, int64_t when)
{
	weft__lock(&h->lock);
	t->when = when;
	int err = push(h, t);
	if (!err)
		set_earliest(h);
	weft__unlock(&h->lock);
	return err;
}

int weft__timer_del(struct weft__timer *t)
{
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
		set_earliest(h);
		weft__unlock(&h->lock);
		return 1;
	}
}

int weft__timers_run(struct weft__timers *h, int64_t now)
{
	int ran = 0;
	if (weft__timers_peek(h) > now)
		return 0;
	weft__lock(&h->lock);
	while (h->len && h->v[0]->when <= now) {
		struct weft__timer *t = h->v[0];
		remove_at(h, 0);
		set_earliest(h);
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
	/* Lock order: always the lower address first, so two moves in opposite
	 * directions cannot deadlock. */
	struct weft__timers *a = from < to ? from : to, *b = from < to ? to : from;
	weft__lock(&a->lock);
	weft__lock(&b->lock);
	while (from->len) {
		struct weft__timer *t = from->v[from->len - 1];
		from->len--;
		t->heap = NULL;
		if (push(to, t))
			weft__fatal("out of memory moving timers");
	}
	set_earliest(from);
	set_earliest(to);
	weft__unlock(&b->lock);
	weft__unlock(&a->lock);
}
