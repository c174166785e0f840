/* SPDX-License-Identifier: MIT */
/*
 * chan_impl.h - what chan.c, select.c and time.c share: the channel record,
 * the waiting-case records (Go's sudog) and the wait protocol.
 *
 * The wait protocol. A blocked operation (a send, a receive, or a whole
 * select) is one struct weft__wait on the blocked caller's stack, with one
 * struct weft__sudog per case, each linked into its channel's send or receive
 * queue under that channel's lock. Whoever completes the operation unlinks
 * the sudog (under the channel lock), fills in the result, and wakes the
 * waiter after unlocking. When several parties may race to complete one wait
 * (a select's cases on different channels, a deadline timer), the wait is
 * "claimable": each party must first win a CAS on wait->done, and a loser
 * leaves the wait alone (a channel drops the stale sudog from its queue but
 * keeps counting it, and its owner uncounts it after waking:
 * weft__sudog_leave). After the wake-up, nothing but the woken caller
 * touches the wait.
 */
#ifndef WEFT_CHAN_IMPL_H
#define WEFT_CHAN_IMPL_H

#include <stdint.h>
#include <string.h>

#include "weft.h"

#include "lock.h"
#include "park.h"
#include "sched.h" /* before sanitizer.h, which needs struct weft__g */
#include "sanitizer.h"
#include "timer.h"

struct weft__g;
struct weft__wait;
struct weft__chantimer;

struct weft__sudog {
	struct weft__sudog *next, *prev; /* in q; under the channel lock; the
	                                  * first's prev is stale (never read) */
	struct weft__sudogq *q;          /* the queue it is in, or NULL; under the channel lock */
	struct weft__sudog *ahead;       /* a hint: the sudog queued WEFT_AHEAD after
	                                  * it, or NULL; maybe gone (only prefetched) */
	struct weft__wait *w;
	void *elem; /* send: the value; receive: where it goes (or NULL) */
	weft_chan *c;
	size_t esz; /* c->elemsize (select: c may be gone when it reads it) */
	int idx;    /* the select case index (0 for a single op) */
	int dir;    /* WEFT_SEND or WEFT_RECV */
};

/*
 * Look-ahead hints. A close's walk (chan.c) takes waiters from the head one
 * after another, and each lies on its own goroutine's stack, a cold line
 * whose address only its predecessor's `next` gives: a chain of misses, one
 * per waiter, that a fetch one waiter ahead cannot hide. So each sudog also
 * names the one queued WEFT_AHEAD after it, and the walk fetches that one
 * while it works on this one. q->mark is the sudog whose hint a later push
 * sets, gap pushes before the tail; the push that makes the gap WEFT_AHEAD
 * sets it and moves the mark on, and an unlink of the mark drops it (the
 * next push starts another). A hint is only ever prefetched, never read
 * through: the sudog it names may have left the queue since, its stack
 * with it (a prefetch does not fault), and a middle unlink shortens the gap.
 */
#define WEFT_AHEAD 8

struct weft__sudogq {
	struct weft__sudog *first, *last; /* first: written atomically, read by lock-free checks */
	struct weft__sudog *mark; /* the next hint to set, or NULL */
	unsigned gap;             /* pushes after mark */
};

struct weft__wait {
	struct weft__g *g; /* the parked goroutine, or NULL: a foreign thread */
	uint32_t done;     /* claimable waits: 0 open, 1 claimed (CAS) */
	uint32_t futex;    /* foreign threads: 1 once woken */
	uint8_t claimable;
	uint8_t counted;         /* a foreign thread counted as blocked (no deadline) */
	uint8_t success;         /* the won case moved a value (0: its channel closed) */
	uint8_t relay;           /* woken by a close's cascade: pass it on (chan.c) */
	struct weft__sudog *won; /* the case that completed; NULL: the deadline came */
	int64_t deadline;        /* INT64_MAX: none */
	struct weft__timer tm;   /* goroutines with a deadline */
	uint32_t timer_done;     /* the timer callback lost the claim and is finished */
};

struct weft_chan {
	uint32_t lock;
	uint32_t closed; /* under lock; read atomically by the fast paths */
	int64_t refs;    /* atomic: references held by users */
	int64_t nwait;   /* sudogs queued; under lock. A parked waiter
	                          * keeps the channel alive without touching refs
	                          * (no atomic on the park path). */
	int orphan;      /* refs reached 0 while nwait > 0: the waiter
	                          * that unlinks the last sudog frees it; under lock */
	size_t qcount;   /* buffered elements; under lock, read atomically */
	size_t cap;
	size_t elemsize;
	size_t sendx, recvx;              /* ring indexes; under lock */
	struct weft__sudogq recvq, sendq; /* under lock */
	struct weft__chantimer *timer;    /* weft_after's timer, freed with the channel */
	unsigned char *buf;               /* cap * elemsize bytes, after the struct */
};

/* Lock and unlock a channel; for ThreadSanitizer, every operation on a
 * channel happens after the previous ones (a superset of Go's edges: send
 * before the matching receive, close before a receive that sees it). */
static inline void weft__chan_lock(weft_chan *c)
{
	weft__spin_lock(&c->lock);
	weft__race_acquire(c);
}

static inline void weft__chan_unlock(weft_chan *c)
{
	weft__race_release(c);
	weft__spin_unlock(&c->lock);
}

static inline void weft__elem_copy(void *dst, const void *src, size_t n)
{
	switch (n) {
	case 0: return;
	case 4: memcpy(dst, src, 4); return;
	case 8: memcpy(dst, src, 8); return;
	case 16: memcpy(dst, src, 16); return;
	default: memcpy(dst, src, n);
	}
}

static inline void *weft__chan_slot(weft_chan *c, size_t i)
{
	return c->buf + i * c->elemsize;
}

/* Queue operations; channel locked. push and unlink keep sg->c->nwait. */
static inline void weft__sudogq_push(struct weft__sudogq *q, struct weft__sudog *sg)
{
	struct weft__sudog *last = q->last;
	sg->next = NULL;
	sg->prev = last;
	sg->ahead = NULL;
	if (!last) {
		/* no mark: one begins at the second push; atomic, as the
		 * lock-free try checks read it (weft__chan_may_send) */
		__atomic_store_n(&q->first, sg, __ATOMIC_RELAXED);
	} else {
		last->next = sg;
		struct weft__sudog *mark = q->mark;
		if (!mark) {
			q->mark = last;
			q->gap = 1;
		} else if (++q->gap == WEFT_AHEAD) {
			mark->ahead = sg;
			q->mark = mark->next; /* sg at the latest */
			q->gap = WEFT_AHEAD - 1;
		}
	}
	q->last = sg;
	sg->c->nwait++;
	__atomic_store_n(&sg->q, q, __ATOMIC_RELAXED);
}

/* The first sudog's prev is never read, so taking the first leaves the next
 * one's stale: a close's walk then does not write into the next waiter's
 * stack, a cold line (its own take prefetches it instead, chan.c). */
static inline void weft__sudogq_unlink(struct weft__sudogq *q, struct weft__sudog *sg)
{
	struct weft__sudog *next = sg->next;
	if (q->first == sg) {
		__atomic_store_n(&q->first, next, __ATOMIC_RELAXED);
		if (!next)
			q->last = NULL;
	} else {
		sg->prev->next = next;
		if (next)
			next->prev = sg->prev;
		else
			q->last = sg->prev;
	}
	if (q->mark == sg)
		q->mark = NULL; /* the mark is always queued: an empty queue has none */
	sg->c->nwait--;
	__atomic_store_n(&sg->q, NULL, __ATOMIC_RELAXED);
}

static inline int weft__wait_claim(struct weft__wait *w)
{
	uint32_t open = 0;
	return __atomic_compare_exchange_n(&w->done, &open, 1, 0, __ATOMIC_ACQ_REL,
	                                   __ATOMIC_RELAXED);
}

/* The first waiter that can still be completed (claimed, when claimable),
 * unlinked; NULL if none. A stale case (another case of its select, or its
 * deadline, won) met on the way is dropped from the queue, as Go's dequeue
 * does, but still counts in nwait: a channel its owner still has to lock
 * stays alive however the other parties release it, and the owner's
 * weft__sudog_leave uncounts it. (Left queued, it was skipped again by
 * every later take: a close's walk, which holds the lock its owner needs to
 * leave, went quadratic over such waiters.) */
static inline struct weft__sudog *weft__sudogq_take(struct weft__sudogq *q)
{
	struct weft__sudog *sg;
	while ((sg = q->first) != NULL) {
		int stale = sg->w->claimable && !weft__wait_claim(sg->w);
		weft__sudogq_unlink(q, sg);
		if (!stale)
			return sg;
		sg->c->nwait++; /* dropped, still counted (sg->q is NULL) */
	}
	return NULL;
}

/* The owner of sg, whose wait was completed by another of its cases or its
 * deadline, takes it off its channel (locked): unlinked if still queued,
 * else (a take dropped it) uncounted. */
static inline void weft__sudog_leave(struct weft__sudog *sg)
{
	if (sg->q)
		weft__sudogq_unlink(sg->q, sg);
	else
		sg->c->nwait--;
}

/* The first queued sender of c (locked) that a receive can complete, taken
 * as weft__sudogq_take does; NULL if none, and always once c is closed: a
 * closed channel's queued senders are failing (its close's cascade has yet
 * to reach them, chan.c), so no receive takes a value from them. */
static inline struct weft__sudog *weft__chan_take_sender(weft_chan *c)
{
	return c->closed ? NULL : weft__sudogq_take(&c->sendq);
}

/* A waiter of c (locked) whose deadline claimed its wait, finding c closed
 * as it leaves: whether the close is its answer (the close's cascade had not
 * reached it yet). A send's, or a receive's once the ring is drained: a
 * value sent after the deadline and before the close is still to be
 * received, so then the timeout is the answer. */
static inline int weft__chan_close_is_answer(const weft_chan *c, int dir)
{
	return c->closed && (dir == WEFT_SEND || c->qcount == 0);
}

/* After a waiter unlinked its own sudog from c (or a weft_after timer's
 * firing completed one), with c locked: whether c was orphaned and is now
 * unused, so that the caller must weft__chan_free() it once unlocked. Only
 * one caller is told so: the orphan mark goes with the answer. */
static inline int weft__chan_unused(weft_chan *c)
{
	if (!c->orphan || c->nwait != 0)
		return 0;
	c->orphan = 0;
	return 1;
}
void weft__chan_free(weft_chan *c);

/* Complete sg with a value (success) or a close; the channel stays locked.
 * Wake the waiter with weft__wait_wake() after unlocking. */
static inline void weft__sudog_finish(struct weft__sudog *sg, int success)
{
	sg->w->won = sg;
	sg->w->success = (uint8_t)success;
}

/* Racy hints, without the lock: could a send / a receive on c complete now
 * (a closed channel completes at once, with EPIPE)? A "yes" must be
 * confirmed under the lock. A "no" is what a try form's EAGAIN needs (Go's
 * fast path): it must hold at one instant, so `closed` is read last; being
 * monotonic, "open" then was also true when the channel was seen full/empty
 * (acquire loads keep the reads in that order).
 */
static inline int weft__chan_may_send(const weft_chan *c)
{
	return __atomic_load_n(&c->qcount, __ATOMIC_ACQUIRE) < c->cap ||
	       __atomic_load_n(&c->recvq.first, __ATOMIC_ACQUIRE) != NULL ||
	       __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE);
}

static inline int weft__chan_may_recv(const weft_chan *c)
{
	return __atomic_load_n(&c->qcount, __ATOMIC_ACQUIRE) > 0 ||
	       __atomic_load_n(&c->sendq.first, __ATOMIC_ACQUIRE) != NULL ||
	       __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE);
}

/* The ring: append elem / take the head into out (NULL: discard). Channel
 * locked, with room / with an element. */
static inline void weft__chan_put(weft_chan *c, const void *elem)
{
	weft__elem_copy(weft__chan_slot(c, c->sendx), elem, c->elemsize);
	if (++c->sendx == c->cap)
		c->sendx = 0;
	__atomic_store_n(&c->qcount, c->qcount + 1, __ATOMIC_RELAXED);
}

static inline void weft__chan_get(weft_chan *c, void *out)
{
	void *slot = weft__chan_slot(c, c->recvx);
	if (out)
		weft__elem_copy(out, slot, c->elemsize);
	if (++c->recvx == c->cap)
		c->recvx = 0;
	__atomic_store_n(&c->qcount, c->qcount - 1, __ATOMIC_RELAXED);
}

/* Move a value between the caller and a parked waiter sg of channel c (the
 * direct hand-off; for a buffered channel, a receive from a full buffer with
 * a parked sender also rotates the sender's value into the ring). */
static inline void weft__chan_send_to(weft_chan *c, struct weft__sudog *sg, const void *elem)
{
	/* A parked receiver means an empty ring: straight to the receiver. */
	if (sg->elem)
		weft__elem_copy(sg->elem, elem, c->elemsize);
	weft__sudog_finish(sg, 1);
}

static inline void weft__chan_recv_from(weft_chan *c, struct weft__sudog *sg, void *out)
{
	if (c->cap == 0) {
		if (out)
			weft__elem_copy(out, sg->elem, c->elemsize);
	} else {
		/* A parked sender means a full ring: take its head, and the
		 * sender's value becomes the tail (the slot just freed). */
		void *slot = weft__chan_slot(c, c->recvx);
		if (out)
			weft__elem_copy(out, slot, c->elemsize);
		weft__elem_copy(slot, sg->elem, c->elemsize);
		if (++c->recvx == c->cap)
			c->recvx = 0;
		c->sendx = c->recvx;
	}
	weft__sudog_finish(sg, 1);
}

/* Prepare w for the caller: g is the calling goroutine, NULL on a foreign
 * thread. */
static inline void weft__wait_init(struct weft__wait *w, struct weft__g *g, int claimable,
                                   int64_t deadline)
{
	w->g = g;
	w->done = 0;
	w->futex = 0;
	w->claimable = (uint8_t)(claimable || deadline != INT64_MAX);
	w->counted = 0;
	w->success = 0;
	w->relay = 0;
	w->won = NULL;
	w->deadline = deadline;
	w->timer_done = 0;
}
/*
 * Block until w is completed or its deadline passes. locked[0..n) are the
 * distinct channels the caller holds locked, in locking order; they are
 * unlocked once the caller is parked. Returns with nothing locked; w->won is
 * NULL when the deadline came first. m is the caller's M (weft__m_get()).
 */
void weft__wait_block_slow(struct weft__m *m, struct weft__wait *w, weft_chan *const *locked, int n,
                           const char *reason);
void weft__park_unlock1(void *arg, struct weft__g *g);
/* The same for two locked channels: arg is the array of them, in locking
 * order, on the parked goroutine's stack. */
void weft__park_unlock2(void *arg, struct weft__g *g);
static inline void weft__wait_block(struct weft__m *m, struct weft__wait *w,
                                    weft_chan *const *locked, int n, const char *reason)
{
	if (w->g && n == 1 && w->deadline == INT64_MAX) {
		/* The common park: a goroutine, one channel, no deadline. For
		 * ThreadSanitizer, release on our own fiber: the unlock runs
		 * after the switch, in someone else's. */
		weft__race_release(locked[0]);
		weft__park_m(m, reason, weft__park_unlock1, locked[0]);
		return;
	}
	if (w->g && n == 2 && w->deadline == INT64_MAX) {
		/* A select of two channels: the same, with both. */
		weft__race_release(locked[0]);
		weft__race_release(locked[1]);
		weft__park_m(m, reason, weft__park_unlock2, (void *)locked);
		return;
	}
	weft__wait_block_slow(m, w, locked, n, reason);
}

/* Wake the waiter of a completed w. Touches nothing of w afterwards. m is
 * the caller's M (weft__m_get()). */
static inline void weft__wait_wake(struct weft__m *m, struct weft__wait *w)
{
	weft__race_release(w); /* the waker's work happens before the wakee's */
	struct weft__g *g = w->g;
	if (g)
		weft__ready_m(m, g);
	else
		weft__foreign_wake(&w->futex, w->counted);
}
/* A goroutine woken by a close's cascade (w->relay) passes it on, on its way
 * out of the wait: it wakes the next waiter of c, which it holds alive, and
 * drops its hold (which may free c). m is the caller's M. */
void weft__chan_close_relay(struct weft__m *m, weft_chan *c);

/* Stop the timer of weft_after()'s channel and wait out a firing in
 * progress; the caller frees it. */
void weft__chantimer_destroy(struct weft__chantimer *t);

/* For weft_ctx_after_func. A func timer (weft_after_func) made stopped;
 * returns 0 or ENOMEM (*out untouched). */
int weft__after_func_stopped(weft_timer **out, weft_fn fn, void *arg);
/* Start a stopped func timer's goroutine now, as its firing would: if there
 * is no memory for it, the timer is armed to retry, and weft_timer_stop()
 * then says whether the start was still pending. */
void weft__after_func_start(weft_timer *t);

#endif
