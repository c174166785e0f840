/* SPDX-License-Identifier: MIT */
/*
 * chan.c - channels: Go's runtime/chan.go, in C, on weft's scheduler.
 *
 * A channel is one allocation: the record, then the ring of cap elements.
 * One lock guards everything mutable. A send first looks for a parked
 * receiver and copies its value straight into the receiver's buffer (one
 * copy, the ring untouched), else into the ring, else it parks on the send
 * queue; a receive mirrors it. A parked waiter is readied onto the waker's P
 * as runnext (weft__ready), so a ping-pong pair runs back to back on one P
 * without a trip through the scheduler's queues: that is the fast path the
 * ChanPingPong benchmark measures.
 *
 * Blocking (weft__wait_block) is shared with select: the caller parks with
 * an after-switch action that arms its deadline timer and then releases the
 * channel locks, so no waker can see the waiter before it is parked. A
 * foreign thread sleeps on a futex word in its wait record instead; without a
 * deadline it counts as "parked inside weft" for the deadlock detector.
 *
 * Deadlines. A goroutine's deadline is a timer on its P's heap, embedded in
 * the wait record on its stack. The timer and the channels race to claim the
 * wait (a CAS on w->done). A timer that loses sets w->timer_done as its last
 * act, and the woken goroutine waits for that before its stack frame goes,
 * when it could not delete the timer first. A foreign thread's deadline is
 * its futex wait's timeout: it claims the wait itself when that expires.
 */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "chan_impl.h"
#include "fatal.h"
#include "sched.h"

/* ---------------------------------------------------------------- value moves */

/* ---------------------------------------------------------------- waiting */

static void deadline_fire(struct weft__timer *t)
{
	struct weft__wait *w = t->arg;
	if (weft__wait_claim(w)) {
		w->won = NULL;
		weft__wait_wake(weft__m_get(), w); /* last touch */
		return;
	}
	/* A channel won; its waker readies the goroutine. Say we are done
	 * with the record, and touch it no more. */
	__atomic_store_n(&w->timer_done, 1, __ATOMIC_RELEASE);
}

struct park_args {
	struct weft__wait *w;
	weft_chan *const *locked;
	int n;
};

/* After-switch action of a parking goroutine: arm its deadline, then drop
 * the channel locks (after which the goroutine may run anywhere at once, and
 * the args on its stack must not be read). */
static void park_unlock(void *arg, struct weft__g *g)
{
	(void)g;
	struct park_args *a = arg;
	struct weft__wait *w = a->w;
	weft_chan *const *locked = a->locked;
	int n = a->n;
	if (w->deadline != INT64_MAX) {
		w->tm.fn = deadline_fire;
		w->tm.arg = w;
		w->tm.heap = NULL;
		w->tm.deletable = 1;
		weft__timer_add_here(&w->tm, w->deadline);
	}
	/* The raw unlock: this runs on the resumer's behalf, and the parked
	 * goroutine already published its work (weft__wait_block). Once the
	 * deadline is armed, or once a channel is unlocked, the goroutine may
	 * be woken and rewrite locked[] in its cleanup, which drops the
	 * winner's channel from the list, while we still read it. That cannot
	 * change an entry we have yet to read: we unlock from the end, so the
	 * winner's index is at least ours and only later entries move, and a
	 * deadline's wake-up has no winner (the list is rewritten as it was).
	 * The woken goroutine then waits for our unlocks in its own locking. */
	for (int i = n - 1; i >= 0; i--)
		weft__spin_unlock(&locked[i]->lock);
}

static void unlock_all(weft_chan *const *locked, int n)
{
	for (int i = n - 1; i >= 0; i--)
		weft__chan_unlock(locked[i]);
}

void weft__park_unlock1(void *arg, struct weft__g *g)
{
	(void)g;
	weft__spin_unlock(&((weft_chan *)arg)->lock);
}

void weft__park_unlock2(void *arg, struct weft__g *g)
{
	(void)g;
	weft_chan *const *locked = arg;
	weft_chan *a = locked[0], *b = locked[1]; /* read both before either unlock */
	weft__spin_unlock(&b->lock);
	weft__spin_unlock(&a->lock);
}

void weft__wait_block_slow(struct weft__m *m, struct weft__wait *w, weft_chan *const *locked, int n,
                           const char *reason)
{
	if (w->g) {
		/* For ThreadSanitizer, release now, on our own fiber: the
		 * unlocks run after the switch, in someone else's. */
		for (int i = 0; i < n; i++)
			weft__race_release(locked[i]);
		struct park_args a = {w, locked, n};
		weft__park_m(m, reason, park_unlock, &a);
		if (w->deadline != INT64_MAX && w->won) {
			/* A channel won: stop the timer, or wait until its callback
			 * has stopped touching w. */
			weft__timer_stop_wait(&w->tm, &w->timer_done);
		}
		return;
	}
	/* A foreign thread. Without a deadline it counts as parked inside weft
	 * (its waker uncounts it); with one it will come back by itself. */
	w->counted = w->deadline == INT64_MAX;
	if (w->counted)
		weft__sched_note_foreign_block(1);
	unlock_all(locked, n);
	while (!__atomic_load_n(&w->futex, __ATOMIC_ACQUIRE)) {
		if (w->deadline == INT64_MAX) {
			weft__futex_wait(&w->futex, 0, NULL);
			continue;
		}
		int64_t left = w->deadline - weft_now();
		if (left > 0) {
			struct timespec ts = {left / 1000000000, left % 1000000000};
			weft__futex_wait(&w->futex, 0, &ts);
			continue;
		}
		if (weft__wait_claim(w)) {
			w->won = NULL;
			return; /* timed out: the sudogs are still queued */
		}
		/* A waker claimed it just now: its wake-up is on the way. */
		w->deadline = INT64_MAX;
	}
}

void weft__block_forever(const char *reason, int64_t deadline)
{
	if (deadline != INT64_MAX) {
		weft_sleep_until(deadline);
		return;
	}
	if (weft__g_get()) {
		weft__park(reason, NULL, NULL);
		weft__fatal("a goroutine blocked forever (%s) was woken", reason);
	}
	uint32_t never = 0;
	weft__sched_note_foreign_block(1);
	for (;;)
		weft__futex_wait(&never, 0, NULL);
}

/* ---------------------------------------------------------------- make, refs, close */

int weft_chan_make(weft_chan **out, size_t elem_size, size_t cap)
{
	if (!out || elem_size > WEFT_CHAN_MAX_ELEM)
		return EINVAL;
	size_t hdr = (sizeof(weft_chan) + 15) & ~(size_t)15;
	size_t bytes;
	if (__builtin_mul_overflow(elem_size, cap, &bytes) ||
	    __builtin_add_overflow(bytes, hdr, &bytes) || bytes > (size_t)1 << 47)
		return ENOMEM;
	weft_chan *c = weft__calloc(1, bytes);
	if (!c)
		return ENOMEM;
	c->refs = 1;
	c->cap = cap;
	c->elemsize = elem_size;
	c->buf = (unsigned char *)c + hdr;
	__atomic_add_fetch(&weft__live_chans, 1, __ATOMIC_RELAXED);
	weft__race_release(c); /* creation happens before every use */
	*out = c;
	return 0;
}

weft_chan *weft_chan_retain(weft_chan *c)
{
	if (c && __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED) <= 0)
		weft__fatal("weft_chan_retain of a freed channel");
	return c;
}

void weft_chan_release(weft_chan *c)
{
	if (!c)
		return;
	int64_t left = __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);
	if (left > 0)
		return;
	if (left < 0)
		weft__fatal("weft_chan_release of a freed channel");
	weft__race_acquire(c);
	weft__chan_lock(c);
	if (c->nwait > 0) {
		/* Waiters parked on it: the last to leave frees it. A
		 * weft_after channel's timer runs on for them (a blocked call
		 * holds the channel as a reference would), and its firing
		 * frees the channel if it completes the last one. */
		c->orphan = 1;
		weft__chan_unlock(c);
		return;
	}
	weft__chan_unlock(c);
	weft__chan_free(c);
}

void weft__chan_free(weft_chan *c)
{
	if (c->timer) {
		weft__chantimer_destroy(c->timer);
		weft__free(c->timer);
		c->timer = NULL;
	}
	c->refs = -((int64_t)1 << 40); /* a later retain or release is reported */
	__atomic_sub_fetch(&weft__live_chans, 1, __ATOMIC_RELAXED);
	weft__free(c);
}

/*
 * Closing wakes every waiter. With several Ps, all at once: one walk of the
 * queues readies the goroutines in batches of CLOSE_BATCH through the
 * global run queue (a mass wake-up, as a context's done channel sees), and
 * the other Ps run them while the walk goes on. Each sudog is on its own
 * goroutine's stack, so the walk is a chain of cache and TLB misses, hidden
 * behind the running.
 *
 * With one P nothing hides it, and by the time the last of thousands of
 * goroutines runs, its page has long left the caches again: two misses
 * each. So there the close is a cascade. It completes (EPIPE) and readies
 * only the first goroutine, as runnext, making it a *relay* that holds the
 * channel alive (a count in nwait); a relay, on its way out of the wait
 * (weft__chan_close_relay), does the same for the next one and drops its
 * hold. Each goroutine's page is touched just before it runs, and the close
 * itself is O(1). (Measured, 10,000 waiters: at 1 P the cascade takes about
 * 25% less time per goroutine than waking all at once, and less than steps
 * of 2 to 32 goroutines queued at a time. At 2 Ps, steps of 16, from one
 * end of the queue or from both, took 15-20% longer than waking all at once
 * in the CancelFanout benchmark, and a chain of single steps, its lock
 * moving between the Ps, twice as long in a probe.)
 *
 * Both walks fetch ahead: the sudog, the wait and the G record of a waiter
 * lie within a few lines of one another on its stack, so they are fetched
 * together, as soon as the waiter's address is known (one waiter ahead in
 * the walk, two relays ahead in the cascade), and a take from the head
 * leaves the next sudog's prev stale rather than write to it. (Measured,
 * CancelFanout, 20 interleaved runs each: medians 271 -> 241 ns per
 * goroutine at 1 P and 324 -> 238 ns at 2 Ps, in a slow phase of the VM.)
 * One waiter ahead is too little lead for the walk, which does little per
 * waiter: it also fetches the waiter WEFT_AHEAD ahead, by the queue's
 * look-ahead hint (chan_impl.h). (Measured, 10,000 waiters at 2 Ps: the
 * walk took 70-180 ns per waiter before, 26-52 after; CancelFanout's
 * median, 18 interleaved runs each, 306 -> 257 ns per goroutine, in a slow
 * phase of the VM. The cascade's two relays ahead are lead enough.)
 *
 * While a cascade runs, the channel is closed to everyone else: sends fail,
 * receives drain the ring and fail, and no one takes a value from a sender
 * still queued (its send fails when the cascade reaches it). A waiter whose
 * deadline comes while it is still queued finds the channel closed when it
 * unlinks itself, and reports the close. Foreign threads cannot relay: they
 * are woken as the cascade meets them. If the P count grows meanwhile, the
 * next relay wakes all the rest.
 */
#define CLOSE_BATCH 128

/* Start fetching what a close's walk touches of sg's waiter: its sudog, its
 * wait and (a plain receive's frames being few) its G record, which lie just
 * above one another on its stack. */
static inline void prefetch_waiter(const struct weft__sudog *sg)
{
	for (int i = 0; i < 8; i++)
		__builtin_prefetch((const char *)sg + 64 * i, 1);
}

/* The next waiter of c (locked) for its close to complete: receivers
 * first, then senders; NULL when none is left. */
static inline struct weft__sudog *close_take(weft_chan *c)
{
	struct weft__sudog *sg = weft__sudogq_take(&c->recvq);
	return sg ? sg : weft__sudogq_take(&c->sendq);
}

/* The waiter close_take will most likely take next (it skips select
 * waiters already won elsewhere, which this does not): a hint for fetching
 * ahead. */
static inline struct weft__sudog *close_peek(weft_chan *c)
{
	return c->recvq.first ? c->recvq.first : c->sendq.first;
}

/* The next step of c's close, c locked and closed, then unlocked; hold:
 * the caller is a relay, whose hold on c is dropped (and c freed if that
 * leaves it unused). */
static void close_step(struct weft__m *m, weft_chan *c, int hold)
{
	int one = __atomic_load_n(&weft__sched.nprocs, __ATOMIC_RELAXED) == 1;
	struct weft__g *batch[CLOSE_BATCH];
	int n = 0;
	struct weft__sudog *foreign = NULL, *sg;
	/* Every waiter; with one P, up to the first goroutine (a relay). */
	while (!(one && n) && (sg = close_take(c)) != NULL) {
		/* The walk: the next waiter's lines all at once, so that it
		 * waits once per waiter, not once per line in turn. */
		if (!one) {
			if (sg->next)
				prefetch_waiter(sg->next);
			if (sg->ahead)
				prefetch_waiter(sg->ahead);
		}
		weft__sudog_finish(sg, 0);
		struct weft__wait *w = sg->w;
		if (!w->g) {
			sg->next = foreign; /* woken once c is unlocked */
			foreign = sg;
			continue;
		}
		if (one) {
			w->relay = 1;
			c->nwait++; /* its hold, dropped in weft__chan_close_relay */
		}
		weft__race_release(w); /* as weft__wait_wake */
		__builtin_prefetch(w->g, 1);
		batch[n++] = w->g;
		if (n == CLOSE_BATCH) {
			/* Its sudogs are not touched again, and its Gs cannot
			 * run before this: ready them with c still locked (a
			 * G may then spin on c briefly, in a select's
			 * cleanup). */
			weft__ready_batch(m, batch, n);
			n = 0;
		}
	}
	int unused = 0;
	if (hold) {
		c->nwait--;
		unused = weft__chan_unused(c);
	}
	if (one && n) {
		/* The cascade: fetch the waiter after the next relay's now.
		 * The next relay's (close_peek's) was fetched by the step
		 * before this one, so each waiter's lines get two goroutines'
		 * runs to arrive. */
		struct weft__sudog *head = close_peek(c);
		if (head && head->next)
			prefetch_waiter(head->next);
	}
	weft__chan_unlock(c);
	if (one && n) {
		weft__warm_stack(batch[0]);
		weft__ready_m(m, batch[0]); /* runnext: it runs right after us */
	} else {
		weft__ready_batch(m, batch, n);
	}
	while (foreign) {
		sg = foreign;
		foreign = sg->next; /* before the wake: the record goes with it */
		weft__wait_wake(m, sg->w);
	}
	if (unused)
		weft__chan_free(c);
}

void weft_chan_close(weft_chan *c)
{
	if (!c)
		weft__fatal("close of nil channel");
	weft__chan_lock(c);
	if (c->closed) {
		weft__chan_unlock(c);
		weft__fatal("close of closed channel");
	}
	__atomic_store_n(&c->closed, 1, __ATOMIC_RELEASE);
	close_step(weft__m_get(), c, 0);
}

void weft__chan_close_relay(struct weft__m *m, weft_chan *c)
{
	weft__chan_lock(c);
	close_step(m, c, 1);
}

size_t weft_chan_len(const weft_chan *c)
{
	return c ? __atomic_load_n(&c->qcount, __ATOMIC_RELAXED) : 0;
}

size_t weft_chan_cap(const weft_chan *c)
{
	return c ? c->cap : 0;
}

size_t weft_chan_elem_size(const weft_chan *c)
{
	return c ? c->elemsize : 0;
}

bool weft_chan_closed(const weft_chan *c)
{
	return c && __atomic_load_n(&c->closed, __ATOMIC_ACQUIRE);
}

/* ---------------------------------------------------------------- send */

enum { MODE_BLOCK, MODE_TRY };

/* Forget a timed-out wait's sudog. It is still counted (queued, or dropped
 * by a take that met it claimed), so it also still keeps c alive. Returns
 * whether c's close is the answer (weft__chan_close_is_answer). */
static int unqueue(weft_chan *c, struct weft__sudog *sg)
{
	weft__chan_lock(c);
	weft__sudog_leave(sg);
	int closed = weft__chan_close_is_answer(c, sg->dir);
	int unused = weft__chan_unused(c);
	weft__chan_unlock(c);
	if (unused)
		weft__chan_free(c);
	return closed;
}

/* The end of a single send or receive that parked: the result, with the
 * sudog gone from c. c may be freed by now unless we timed out (then our
 * sudog, still queued, holds it alive) or are a relay of its close (then our
 * hold does): touch it only in unqueue or the relay. */
static int finish_wait(weft_chan *c, struct weft__wait *w, struct weft__sudog *me, void *out,
                       size_t esz)
{
	if (!w->won) {
		if (!unqueue(c, me))
			return ETIMEDOUT;
		if (out)
			memset(out, 0, esz);
		return EPIPE;
	}
	weft__race_acquire(w);
	if (w->success)
		return 0;
	if (w->relay)
		weft__chan_close_relay(weft__m_get(), c); /* alive: we hold it */
	if (out)
		memset(out, 0, esz);
	return EPIPE;
}

/*
 * The blocking end of a send or receive on c (locked), which cannot complete
 * now: a try gives up, a deadline already past times out, else the caller
 * waits in q (elem: the value sent, or where the received one goes) until a
 * partner, a close or the deadline. Returns with c unlocked.
 */
static inline __attribute__((always_inline)) int park_on(struct weft__m *m, weft_chan *c,
                                                         struct weft__sudogq *q, int dir,
                                                         void *elem, int mode, int64_t deadline,
                                                         const char *reason)
{
	if (mode == MODE_TRY || (deadline != INT64_MAX && deadline <= weft_now())) {
		weft__chan_unlock(c);
		return mode == MODE_TRY ? EAGAIN : ETIMEDOUT;
	}
	struct weft__wait w;
	struct weft__sudog me;
	me.w = &w;
	me.elem = elem;
	me.c = c;
	me.idx = 0;
	me.dir = dir;
	weft__wait_init(&w, m ? m->curg : NULL, 0, deadline);
	size_t esz = c->elemsize;
	weft__sudogq_push(q, &me);
	weft__wait_block(m, &w, &c, 1, reason);
	return finish_wait(c, &w, &me, dir == WEFT_RECV ? elem : NULL, esz);
}

static inline __attribute__((always_inline)) int chan_send(weft_chan *c, const void *elem, int mode,
                                                           int64_t deadline)
{
	if (!c) {
		if (mode == MODE_TRY)
			return EAGAIN;
		weft__block_forever("chan send (nil chan)", deadline);
		return ETIMEDOUT;
	}
	if (WEFT_UNLIKELY(!elem) && c->elemsize)
		return EINVAL;
	/* Fast path for a try that cannot succeed, without the lock (Go's
	 * reasoning: an open channel that is full at one instant). */
	if (mode == MODE_TRY && !weft__chan_may_send(c))
		return EAGAIN;

	struct weft__m *m = weft__m_get();
	weft__chan_lock(c);
	if (c->closed) {
		weft__chan_unlock(c);
		return EPIPE;
	}
	struct weft__sudog *sg = weft__sudogq_take(&c->recvq);
	if (sg) {
		weft__chan_send_to(c, sg, elem);
		weft__chan_unlock(c);
		weft__wait_wake(m, sg->w);
		return 0;
	}
	if (c->qcount < c->cap) {
		weft__chan_put(c, elem);
		weft__chan_unlock(c);
		return 0;
	}
	return park_on(m, c, &c->sendq, WEFT_SEND, (void *)elem, mode, deadline, "chan send");
}

int weft_chan_send(weft_chan *c, const void *elem)
{
	return chan_send(c, elem, MODE_BLOCK, INT64_MAX);
}

int weft_chan_trysend(weft_chan *c, const void *elem)
{
	return chan_send(c, elem, MODE_TRY, INT64_MAX);
}

int weft_chan_send_until(weft_chan *c, const void *elem, int64_t deadline_ns)
{
	return chan_send(c, elem, MODE_BLOCK, deadline_ns);
}

/* ---------------------------------------------------------------- receive */

static inline __attribute__((always_inline)) int chan_recv(weft_chan *c, void *out, int mode,
                                                           int64_t deadline)
{
	if (!c) {
		if (mode == MODE_TRY)
			return EAGAIN;
		weft__block_forever("chan receive (nil chan)", deadline);
		return ETIMEDOUT;
	}
	if (mode == MODE_TRY && !weft__chan_may_recv(c))
		return EAGAIN;

	struct weft__m *m = weft__m_get();
	weft__chan_lock(c);
	struct weft__sudog *sg = weft__chan_take_sender(c);
	if (sg) {
		weft__chan_recv_from(c, sg, out);
		weft__chan_unlock(c);
		weft__wait_wake(m, sg->w);
		return 0;
	}
	if (c->qcount > 0) {
		weft__chan_get(c, out);
		weft__chan_unlock(c);
		return 0;
	}
	if (c->closed) {
		weft__chan_unlock(c);
		if (out)
			memset(out, 0, c->elemsize);
		return EPIPE;
	}
	return park_on(m, c, &c->recvq, WEFT_RECV, out, mode, deadline, "chan receive");
}

int weft_chan_recv(weft_chan *c, void *out)
{
	return chan_recv(c, out, MODE_BLOCK, INT64_MAX);
}

int weft_chan_tryrecv(weft_chan *c, void *out)
{
	return chan_recv(c, out, MODE_TRY, INT64_MAX);
}

int weft_chan_recv_until(weft_chan *c, void *out, int64_t deadline_ns)
{
	return chan_recv(c, out, MODE_BLOCK, deadline_ns);
}

/* ---------------------------------------------------------------- batches */

/*
 * A batch operation moves many values under one lock acquisition, in the
 * order single operations would (Go has no such call; it is what a worker
 * draining or filling a busy channel saves: a lock, and the trip of the
 * channel's cache line to and from the other cores, per value). Each parked
 * partner it completes is woken after the unlock, from a list on the
 * caller's stack, so a batch completes at most BATCH_WAKES partners.
 *
 * One invariant bounds a batch: parked senders mean a full ring, parked
 * receivers an empty one (chan_send and chan_recv rely on it). A batch that
 * stops serving partners because its wake list is full must not then touch
 * the ring while partners are still queued (maybe stale select cases: it
 * stops anyway, which costs only a shorter batch).
 */
#define BATCH_WAKES 32

/* Element i of an array of size-byte elements at base (NULL stays NULL). */
static inline void *nth(void *base, size_t i, size_t size)
{
	return base && size ? (unsigned char *)base + i * size : base;
}

static void wake_all(struct weft__m *m, struct weft__wait *const *w, int n)
{
	for (int i = 0; i < n; i++)
		weft__wait_wake(m, w[i]);
}

/* Both batch forms, their arguments checked: move up to n values between
 * buf and c (dir: the caller's direction), parked partners first, then the
 * ring; *done gets how many. Inlined, so each form has its own copy. */
static inline __attribute__((always_inline)) int chan_batch(weft_chan *c, int dir, void *buf,
                                                            size_t n, size_t *done)
{
	int send = dir == WEFT_SEND;
	if (!c || !(send ? weft__chan_may_send(c) : weft__chan_may_recv(c)))
		return EAGAIN;

	struct weft__m *m = weft__m_get();
	struct weft__wait *wake[BATCH_WAKES];
	struct weft__sudogq *q = send ? &c->recvq : &c->sendq;
	int nwake = 0;
	size_t k = 0, es = c->elemsize;
	weft__chan_lock(c);
	if (send && c->closed) {
		weft__chan_unlock(c);
		return EPIPE;
	}
	/* Partners first: parked receivers mean an empty ring; parked senders
	 * a full one, and each refills the slot a receive takes its value
	 * from (the head), so values keep their send order. */
	for (; k < n && nwake < BATCH_WAKES; k++) {
		struct weft__sudog *sg = send ? weft__sudogq_take(q) : weft__chan_take_sender(c);
		if (!sg)
			break;
		if (send)
			weft__chan_send_to(c, sg, nth(buf, k, es));
		else
			weft__chan_recv_from(c, sg, nth(buf, k, es));
		wake[nwake++] = sg->w;
	}
	if (nwake < BATCH_WAKES || !q->first) {
		for (; send && k < n && c->qcount < c->cap; k++)
			weft__chan_put(c, nth(buf, k, es));
		for (; !send && k < n && c->qcount > 0; k++)
			weft__chan_get(c, nth(buf, k, es));
	}
	int closed = k == 0 && c->closed; /* a receive: closed and drained */
	weft__chan_unlock(c);
	wake_all(m, wake, nwake);
	*done = k;
	return k ? 0 : closed ? EPIPE : EAGAIN;
}

int weft_chan_trysend_n(weft_chan *c, const void *elems, size_t n, size_t *sent)
{
	if (!sent)
		return EINVAL;
	*sent = 0;
	if (n == 0 || (c && !elems && c->elemsize))
		return EINVAL;
	return chan_batch(c, WEFT_SEND, (void *)(uintptr_t)elems, n, sent);
}

int weft_chan_tryrecv_n(weft_chan *c, void *out, size_t max, size_t *n)
{
	if (!n)
		return EINVAL;
	*n = 0;
	if (max == 0)
		return EINVAL;
	return chan_batch(c, WEFT_RECV, out, max, n);
}
