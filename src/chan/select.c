/* SPDX-License-Identifier: MIT */
/*
 * select.c - Go's select (runtime/select.go's selectgo), across goroutines
 * and foreign threads.
 *
 *  1. Shuffle the cases with a channel into a random poll order (uniform:
 *     Fisher-Yates), and sort them by channel address into a lock order.
 *  2. Poll the cases in the random order, each under its own channel's lock:
 *     the first that can proceed does, and the select is over. If none
 *     could, lock every distinct channel in address order (two selects over
 *     the same channels can never deadlock) and poll again: "none ready" is
 *     only a valid verdict for one instant with all the locks held.
 *  3. Otherwise (and unless it is a try, or the deadline is past) enqueue one
 *     sudog per case, all sharing one claimable wait, and park; the channel
 *     locks are released once the caller is parked. The first channel
 *     operation (or the deadline timer) to claim the wait completes its
 *     case and wakes the caller.
 *  4. Awake: lock the channels of the cases that did not win and take
 *     their sudogs off (other parties drop stale sudogs but leave them
 *     counted, so those channels are still alive), then report the case
 *     that won.
 * A select never matches its own send case with its own receive case on one
 * channel: step 2 only looks at other parties' waiters, and in step 3 a
 * channel operation completes only a waiter of another caller.
 */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "chan_impl.h"
#include "fatal.h"
#include "sched.h"

enum { SELECT_STACK_CASES = 16 };
enum { SEL_BLOCK, SEL_TRY, SEL_UNTIL };

/* Per-select scratch: on the stack for up to SELECT_STACK_CASES cases. */
struct sel_scratch {
	int *poll;              /* case indexes, random order */
	int *lockidx;           /* case indexes, by channel address */
	weft_chan **locked;     /* distinct channels, by address */
	struct weft__sudog *sg; /* one per case */
};

/* A send case without an element: an error unless the channel's elements
 * are empty (case_ok). The two-case path tests it for both cases at once,
 * without a branch or a load of the channel. */
static inline __attribute__((always_inline)) int no_elem(const weft_case *cs)
{
	return (cs->dir == WEFT_SEND) & (cs->elem == NULL);
}

/* Whether a case with a channel is well formed: a known direction, and an
 * element to send unless the elements are empty. */
static inline __attribute__((always_inline)) int case_ok(const weft_case *cs)
{
	return (cs->dir == WEFT_RECV || cs->dir == WEFT_SEND) &&
	       !(no_elem(cs) && cs->chan->elemsize);
}

static int case_cmp_chan(const weft_case *cases, int a, int b)
{
	uintptr_t x = (uintptr_t)cases[a].chan, y = (uintptr_t)cases[b].chan;
	return (x > y) - (x < y);
}

/* Sort idx[0..n) by channel address: insertion sort for the usual few
 * cases, a heap sort (no allocation, O(n log n)) for many. */
static void sort_by_chan(const weft_case *cases, int *idx, int n)
{
	if (n <= 24) {
		for (int i = 1; i < n; i++) {
			int v = idx[i], j = i;
			while (j > 0 && case_cmp_chan(cases, idx[j - 1], v) > 0) {
				idx[j] = idx[j - 1];
				j--;
			}
			idx[j] = v;
		}
		return;
	}
	for (int i = 1; i < n; i++) { /* build a max-heap by sifting up */
		int j = i, v = idx[i];
		while (j > 0 && case_cmp_chan(cases, idx[(j - 1) / 2], v) < 0) {
			idx[j] = idx[(j - 1) / 2];
			j = (j - 1) / 2;
		}
		idx[j] = v;
	}
	for (int end = n - 1; end > 0; end--) {
		int v = idx[end];
		idx[end] = idx[0];
		int j = 0;
		for (;;) {
			int k = 2 * j + 1;
			if (k >= end)
				break;
			if (k + 1 < end && case_cmp_chan(cases, idx[k + 1], idx[k]) > 0)
				k++;
			if (case_cmp_chan(cases, idx[k], v) <= 0)
				break;
			idx[j] = idx[k];
			j = k;
		}
		idx[j] = v;
	}
}

static inline __attribute__((always_inline)) int lock_all(weft_chan *const *locked, int n)
{
	for (int i = 0; i < n; i++)
		weft__chan_lock(locked[i]);
	return n;
}

static inline __attribute__((always_inline)) void unlock_all(weft_chan *const *locked, int n)
{
	for (int i = n - 1; i >= 0; i--)
		weft__chan_unlock(locked[i]);
}

/* Try case i with every channel locked. Returns -1 if it cannot proceed,
 * else the result (0 or EPIPE) and *wake is the waiter to wake, if any. */
static inline __attribute__((always_inline)) int poll_case(const weft_case *cs,
                                                           struct weft__sudog **wake)
{
	weft_chan *c = cs->chan;
	struct weft__sudog *sg;
	if (cs->dir == WEFT_RECV) {
		if ((sg = weft__chan_take_sender(c)) != NULL) {
			weft__chan_recv_from(c, sg, cs->elem);
			*wake = sg;
			return 0;
		}
		if (c->qcount > 0) {
			weft__chan_get(c, cs->elem);
			return 0;
		}
		if (c->closed) {
			if (cs->elem)
				memset(cs->elem, 0, c->elemsize);
			return EPIPE;
		}
		return -1;
	}
	if (c->closed)
		return EPIPE;
	if ((sg = weft__sudogq_take(&c->recvq)) != NULL) {
		weft__chan_send_to(c, sg, cs->elem);
		*wake = sg;
		return 0;
	}
	if (c->qcount < c->cap) {
		weft__chan_put(c, cs->elem);
		return 0;
	}
	return -1;
}

/* A racy hint, without the lock: could case cs proceed now? */
static inline int looks_ready(const weft_case *cs)
{
	return cs->dir == WEFT_RECV ? weft__chan_may_recv(cs->chan) : weft__chan_may_send(cs->chan);
}

static inline __attribute__((always_inline)) int select_run(const weft_case *cases, int n,
                                                            int *chosen, struct sel_scratch *s,
                                                            int mode, int64_t deadline)
{
	/* 1. Poll order (uniform shuffle of the cases with a channel) and lock
	 * order (by address). */
	struct weft__m *m = weft__m_get();
	int np = 0;
	uint64_t rnd = 0;
	if (n == 2 && cases[0].chan && cases[1].chan &&
	    (cases[0].dir == WEFT_RECV || cases[0].dir == WEFT_SEND) &&
	    (cases[1].dir == WEFT_RECV || cases[1].dir == WEFT_SEND) &&
	    WEFT_LIKELY(!(no_elem(&cases[0]) | no_elem(&cases[1])))) {
		/* The common select of two: one random bit orders them. */
		int first = (int)(weft__fastrand_m(m) >> 63);
		s->poll[0] = first;
		s->poll[1] = first ^ 1;
		np = 2;
	} else {
		for (int i = 0; i < n; i++) {
			if (!cases[i].chan) {
				if (cases[i].dir != WEFT_RECV && cases[i].dir != WEFT_SEND)
					return EINVAL;
				continue;
			}
			if (!case_ok(&cases[i]))
				return EINVAL;
			/* Fisher-Yates, inside out. One 64-bit draw serves
			 * two steps: its high half, then its low half moved
			 * up. */
			if (np % 2 == 0)
				rnd = weft__fastrand_m(m);
			else
				rnd <<= 32;
			int j = (int)weft__rand_below(rnd, (uint32_t)np + 1);
			int *poll = s->poll;
			poll[np] = poll[j];
			poll[j] = i;
			np++;
		}
	}
	if (np == 0) {
		if (mode == SEL_TRY)
			return EAGAIN;
		weft__block_forever(n ? "select" : "select (no cases)",
		                    mode == SEL_UNTIL ? deadline : INT64_MAX);
		return ETIMEDOUT;
	}
	/* 2a. The quick pass: each case under its own channel's lock alone.
	 * Finding one ready case needs no other lock: completing it then is a
	 * valid outcome of the select at that instant. (A verdict of "none
	 * ready" does need all the locks at once: 2b.) A case that does not
	 * even look ready, read without the lock, is not locked here: a select
	 * about to park would pay a wasted lock round trip per case. */
	for (int k = 0; k < np; k++) {
		int i = s->poll[k];
		weft_chan *c = cases[i].chan;
		if (!looks_ready(&cases[i]))
			continue;
		struct weft__sudog *wake = NULL;
		weft__chan_lock(c);
		int r = poll_case(&cases[i], &wake);
		weft__chan_unlock(c);
		if (r < 0)
			continue;
		if (wake)
			weft__wait_wake(m, wake->w);
		*chosen = i;
		return r;
	}
	int nl = 0;
	if (np == 2) {
		/* The common select of two: one comparison, all inline (the
		 * general copy loop compiles to a call of memcpy). */
		int a = s->poll[0], b = s->poll[1];
		if (case_cmp_chan(cases, a, b) > 0) {
			int t = a;
			a = b;
			b = t;
		}
		s->lockidx[0] = a;
		s->lockidx[1] = b;
		s->locked[nl++] = cases[a].chan;
		if (cases[b].chan != cases[a].chan)
			s->locked[nl++] = cases[b].chan;
	} else {
		for (int k = 0; k < np; k++)
			s->lockidx[k] = s->poll[k];
		sort_by_chan(cases, s->lockidx, np);
		for (int k = 0; k < np; k++) {
			weft_chan *c = cases[s->lockidx[k]].chan;
			if (nl == 0 || s->locked[nl - 1] != c)
				s->locked[nl++] = c;
		}
	}

	/* 2b. Poll again with every channel locked. */
	lock_all(s->locked, nl);
	for (int k = 0; k < np; k++) {
		int i = s->poll[k];
		struct weft__sudog *wake = NULL;
		int r = poll_case(&cases[i], &wake);
		if (r < 0)
			continue;
		unlock_all(s->locked, nl);
		if (wake)
			weft__wait_wake(m, wake->w);
		*chosen = i;
		return r;
	}
	if (mode == SEL_TRY || (mode == SEL_UNTIL && deadline <= weft_now())) {
		unlock_all(s->locked, nl);
		return mode == SEL_TRY ? EAGAIN : ETIMEDOUT;
	}

	/* 3. Enqueue on every channel and park. */
	struct weft__wait w;
	weft__wait_init(&w, m ? m->curg : NULL, 1, mode == SEL_UNTIL ? deadline : INT64_MAX);
	for (int k = 0; k < np; k++) {
		int i = s->lockidx[k];
		weft_chan *c = cases[i].chan;
		struct weft__sudog *sg = &s->sg[i];
		sg->w = &w;
		sg->elem = cases[i].elem;
		sg->c = c;
		sg->esz = c->elemsize;
		sg->idx = i;
		sg->dir = cases[i].dir;
		weft__sudogq_push(cases[i].dir == WEFT_RECV ? &c->recvq : &c->sendq, sg);
	}
	weft__wait_block(m, &w, s->locked, nl, "select");

	/* 4. Take our other sudogs off: every one but the winner's is still
	 * counted (queued, or dropped by another party's take), and keeps its
	 * channel alive until we do. The winner's channel we do not touch (it
	 * may be gone already), unless its close's cascade made us a relay:
	 * then we hold it until we pass the cascade on. */
	int nf = 0;
	for (int k = 0; k < np; k++) {
		struct weft__sudog *sg = &s->sg[s->lockidx[k]];
		if (sg == w.won)
			continue;
		if (nf == 0 || s->locked[nf - 1] != sg->c)
			s->locked[nf++] = sg->c;
	}
	struct weft__sudog *closed = NULL;
	if (nf) {
		lock_all(s->locked, nf);
		for (int k = 0; k < np; k++) {
			struct weft__sudog *sg = &s->sg[s->lockidx[k]];
			if (sg == w.won)
				continue;
			weft__sudog_leave(sg);
		}
		/* Timed out on a channel whose close's cascade had not reached
		 * us yet: the close is the answer (a receive once the ring is
		 * drained). Among several such cases, the first in the random
		 * poll order: a uniform choice, as among ready cases. */
		for (int k = 0; !w.won && !closed && k < np; k++) {
			struct weft__sudog *sg = &s->sg[s->poll[k]];
			if (weft__chan_close_is_answer(sg->c, sg->dir))
				closed = sg;
		}
		/* A channel released by everyone while we waited is freed by
		 * the last waiter to leave: us, if its count drops to zero. */
		for (int k = 0; k < nf; k++)
			s->lockidx[k] = weft__chan_unused(s->locked[k]);
		unlock_all(s->locked, nf);
		for (int k = 0; k < nf; k++)
			if (s->lockidx[k])
				weft__chan_free(s->locked[k]);
	}
	weft__race_acquire(&w);
	if (!w.won && !closed)
		return ETIMEDOUT;
	struct weft__sudog *won = w.won ? w.won : closed;
	*chosen = won->idx;
	if (w.success)
		return 0;
	if (w.relay)
		weft__chan_close_relay(weft__m_get(), won->c); /* alive: we hold it */
	if (won->dir == WEFT_RECV && won->elem)
		memset(won->elem, 0, won->esz);
	return EPIPE;
}

/* GCC at -O1 (the sanitizer builds) cannot see that the lock list is
 * filled before it is read (np >= 1 implies nl >= 1), and warns. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
static inline __attribute__((always_inline)) int
select_common(const weft_case *cases, int n, int *chosen, int mode, int64_t deadline)
{
	if (n < 0 || (n > 0 && !cases) || !chosen)
		return EINVAL; /* select_run checks each case's dir */
	if (n <= SELECT_STACK_CASES) {
		int poll[SELECT_STACK_CASES], lockidx[SELECT_STACK_CASES];
		weft_chan *locked[SELECT_STACK_CASES];
		struct weft__sudog sg[SELECT_STACK_CASES];
		struct sel_scratch s = {poll, lockidx, locked, sg};
		return select_run(cases, n, chosen, &s, mode, deadline);
	}
	size_t each = 2 * sizeof(int) + sizeof(weft_chan *) + sizeof(struct weft__sudog);
	char *mem = weft__alloc((size_t)n * each);
	if (!mem)
		return ENOMEM;
	struct sel_scratch s;
	s.sg = (struct weft__sudog *)mem;
	s.locked = (weft_chan **)(s.sg + n);
	s.poll = (int *)(s.locked + n);
	s.lockidx = s.poll + n;
	int r = select_run(cases, n, chosen, &s, mode, deadline);
	weft__free(mem);
	return r;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

int weft_select(const weft_case *cases, int n, int *chosen)
{
	return select_common(cases, n, chosen, SEL_BLOCK, INT64_MAX);
}

int weft_select_try(const weft_case *cases, int n, int *chosen)
{
	return select_common(cases, n, chosen, SEL_TRY, INT64_MAX);
}

int weft_select_until(const weft_case *cases, int n, int *chosen, int64_t deadline_ns)
{
	return select_common(cases, n, chosen, SEL_UNTIL, deadline_ns);
}
