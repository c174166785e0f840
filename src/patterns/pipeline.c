/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c - weft_pipeline: a source, stages of N goroutines joined by
 * channels, and a sink, under one context with errgroup semantics. Built on
 * the public API only (weft.h), as a user's code would be.
 *
 * Shape. The pipeline is a chain of edges, each a channel of fixed-size items:
 * edge 0 is the source's output (a channel the generator goroutine fills, or
 * the user's channel), edge i+1 is stage i's output. Stage i's workers all
 * receive from edge i (Go's fan-out: several goroutines ranging over one
 * channel) and send to edge i+1 (fan-in: one channel, closed by the last
 * worker to leave, where Go runs `go func() { wg.Wait(); close(out) }()`).
 * The sink goroutine receives from the last edge, unless the caller takes it
 * as the output channel.
 *
 * Failure (Go's errgroup). p->err keeps the first nonzero result; whoever
 * sets it cancels p->ctx with it as the cause. Every blocking step of every
 * goroutine waits through p->ctx (recv_ctx, send_ctx, cond_wait_ctx), and a
 * worker looks at weft_ctx_err() before each item, because a _ctx call on a
 * cancelled context still completes when it can do so at once: without the
 * check a cancelled stage would keep draining a full input channel. A
 * goroutine that stops because of the cancellation records the context's
 * error, which only counts when the cancellation came from outside.
 *
 * Batches. An unordered map or filter stage's worker may take several items
 * at once: what is waiting in its input (weft_chan_tryrecv_n), or the next
 * item to come and what is waiting by then. It runs the function on each,
 * looking at the context before each, and passes the outputs on with one
 * weft_chan_trysend_n, the rest one at a time with the blocking send. That
 * is 2 or 3 channel operations for a batch where one item at a time costs 2
 * per item, each a lock whose cache line travels between the cores that run
 * the stages: the cost that dominates a pipeline of cheap functions on
 * several Ps. A batch holds its items on one worker while the others could run
 * them, so the automatic mode batches only while the function is cheap
 * (CHEAP_NS an item: a lock round trip is ~100 ns), and times each item
 * while it is not, so that a slow function's items still fan out across the
 * workers one by one. A batch's unprocessed inputs go to the input edge's
 * drop, and its unsent outputs to the output edge's, when the pipeline
 * stops.
 *
 * Start gate. Every goroutine first waits on p->gate, which start() opens
 * only after all of them were started. If starting one fails, start()
 * cancels the context before it opens the gate, so the goroutines already
 * made leave without calling any function: a failed start ran nothing.
 *
 * Ordered stages. A stage that keeps order numbers its items as they are
 * received: a worker holds recv_mu across its receive and takes next_in, so
 * the numbers follow the input channel's order. (Numbering at the sender
 * would not do: an unordered stage's workers send concurrently, so the
 * numbers they took would not match the channel's order, and a reorder
 * buffer waiting for a number stuck behind a full channel deadlocks.)
 * The result of item s goes to slot s % window of the reorder buffer. Items
 * head, head+1, ... are delivered in order:
 *  - the send right (the only goroutine that may send on the output) belongs
 *    to the worker of item head while it runs, and, once item head is done,
 *    to the worker that completed it, which sends the outputs of every done
 *    item from head on and advances head (the "flusher");
 *  - a worker whose item is not at head leaves its outputs in its slot (a
 *    map or filter result is one item; a flatmap keeps up to SLOT_FLAT and
 *    then waits on cond for its turn) and goes on with the next item;
 *  - the window bounds the reorder buffer: the worker about to receive waits
 *    (holding recv_mu, so the others queue behind it) while next_in - head
 *    == window.
 * Slot states: EMPTY (free, or item running: only its worker touches it,
 * and the flusher reads state under mu) -> DONE (set under mu when the
 * worker finishes; from then only the send-right holder touches it) ->
 * EMPTY (by the flusher, under mu, as head passes it). A rejected
 * alternative is Go's channel-of-futures idiom (a dispatcher sends a result
 * channel per item to a collector in order): two more goroutines and two
 * more channel hops per item in every ordered stage.
 *
 * Lock order: recv_mu before mu. Neither is held across a user function;
 * recv_mu is held across the receive (a blocking one), mu never is.
 */
#include "weft.h"

#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum kind { K_MAP, K_FILTER, K_FLATMAP };

/* Lifecycle: SETUP -(start)-> RUNNING -(wait)-> WAITED; a failed start
 * goes to DEAD. Only the building/waiting caller reads or writes it. */
enum state { SETUP, RUNNING, WAITED, DEAD };

enum slot_state { EMPTY, DONE };

/* An ordered flatmap's worker keeps this many outputs of an item that is
 * ahead of its turn, then waits for the turn. */
#define SLOT_FLAT 8

/* Automatic batches (weft_pipeline_stage.batch 0): at most AUTO_BATCH items
 * (Pipeline3 at 2 Ps: ~140 ns an item, against ~160 with 8), fewer when
 * their buffers would exceed AUTO_BATCH_BYTES; only while items take at
 * most CHEAP_NS each, and only once AUTO_STREAK items in a row did, one at a
 * time. */
#define AUTO_BATCH 16
#define AUTO_BATCH_BYTES ((size_t)16 << 10)
#define CHEAP_NS 5000
#define AUTO_STREAK 8

/* The edges and slots are set up by start() and read-only afterwards, except
 * the slots' contents (see the top). */
struct edge {
	weft_chan *ch;
	size_t size;   /* bytes per item */
	size_t stride; /* size rounded up for alignment (buffers of items) */
	weft_pipeline_drop_fn drop;
	void *drop_arg;
	bool ours;      /* made by the pipeline: drained when it stops */
	bool is_output; /* handed to the caller by start(): drained by free() */
};

struct slot {
	int state;            /* enum slot_state; written under the stage's mu */
	size_t first, n;      /* undelivered outputs are items [first, n) */
	unsigned char *items; /* slot_cap items of the output's stride */
};

struct stage {
	weft_pipeline_stage def; /* copied by add(); read-only */
	enum kind kind;
	char name[32];
	struct edge *in, *out; /* set by start() */
	atomic_int live;       /* workers not yet gone: the last one closes out */
	size_t batch;          /* the most items a worker takes at once; start() */
	bool auto_batch;       /* batch only while the function is cheap; start() */

	/* Ordered stages only. */
	weft_mutex recv_mu; /* held across a receive, to number items in order */
	uint64_t next_in;   /* the number of the next item received; recv_mu */
	weft_mutex mu;      /* guards head, waiters, the slots' state */
	weft_cond cond;     /* head advanced: a turn or window room may be there */
	uint64_t head;      /* the first item not yet delivered entirely; mu */
	int waiters;        /* goroutines waiting on cond; mu */
	size_t window;      /* slots */
	size_t slot_cap;    /* items per slot */
	struct slot *slots; /* made by start() */
	unsigned char *slot_mem;
};

/* An emitter lives in its goroutine's record, not on the stack, so that one
 * used after its call has returned still reads live == false (until the
 * worker's next call) and the misuse is reported. */
struct weft_pipeline_emitter {
	weft_pipeline *p;
	struct edge *out;
	struct stage *st;  /* ordered flatmap: the stage; else NULL (send directly) */
	struct slot *slot; /* ordered: the item's slot */
	uint64_t seq;      /* ordered: the item's number */
	bool live;         /* during the call it was given to */
	int err;           /* the generator's: its first failed emit (the context
	                    * was done and an item was dropped) */
};

enum role { R_GEN, R_WORKER, R_SINK };

/* One goroutine's record, made by start(); buffers are its own. */
struct worker {
	weft_pipeline *p;
	enum role role;
	struct stage *st; /* R_WORKER */
	int id;
	unsigned char *inbuf;     /* st->batch input items, at their stride (R_WORKER);
	                           * one (R_SINK) */
	unsigned char *outbuf;    /* st->batch output items, at their stride */
	unsigned char *pack;      /* st->batch items of the larger size, packed as
	                           * a channel carries them (batching stages) */
	int streak;               /* auto batch: cheap items in a row (AUTO_STREAK:
	                           * batching) */
	weft_pipeline_emitter em; /* generator, flatmap */
};

struct weft_pipeline {
	weft_ctx *ctx; /* child of the parent; cancelled on the first error */
	weft_pipeline_source src;
	struct stage **stages;
	int nstages, cap_stages;
	weft_pipeline_sink_fn sink;
	void *sink_arg;
	enum state state;

	/* Made by start(). */
	struct edge *edges; /* nstages + 1 */
	struct worker *workers;
	int nworkers;
	unsigned char *bufs;
	unsigned char *scratch; /* one item of the largest stride, for draining */
	weft_wg gate;           /* counter 1 until every goroutine has started */
	weft_wg running;        /* goroutines not yet gone */
	atomic_int err;         /* the first error */
};

/* API misuse: weft's fatal error (Go's panic). fmt must be a literal. */
#define fatal(fmt, ...) weft_fatalf("pipeline: " fmt, ##__VA_ARGS__)

static void check(const weft_pipeline *p, const char *call)
{
	if (!p)
		fatal("%s of a nil pipeline", call);
}

static size_t stride_of(size_t size)
{
	size_t a = alignof(max_align_t);
	return size == 0 ? a : (size + a - 1) / a * a;
}

static void drop(const struct edge *e, void *item)
{
	if (e->drop)
		e->drop(e->drop_arg, item);
}

/* errgroup's fail: the first nonzero err wins and cancels the context with
 * it as the cause; later ones (mostly the ECANCELED the others see) are
 * ignored. */
static void fail(weft_pipeline *p, int err)
{
	int zero = 0;
	if (err && atomic_compare_exchange_strong(&p->err, &zero, err))
		weft_ctx_cancel_cause(p->ctx, err);
}

/* ---------------------------------------------------------------- sending */

/* Send item on e (not NULL channel); on failure (the context is done) the
 * item is dropped. The context is looked at first, as every step does: a
 * send to a channel with room would succeed even on a cancelled context. */
static int pass_on(weft_pipeline *p, struct edge *e, void *item)
{
	int r = weft_ctx_err(p->ctx);
	if (r == 0)
		r = weft_chan_send_ctx(p->ctx, e->ch, item);
	if (r)
		drop(e, item);
	return r;
}

/* ---------------------------------------------------------------- ordered */

static unsigned char *slot_item(const struct stage *st, const struct slot *s, size_t i)
{
	return s->items + i * st->out->stride;
}

/* Send slot s's undelivered outputs in order; only the holder of the send
 * right calls it. On failure (the context is done) the unsent ones stay in
 * the slot ([first, n)), for wait() to drop. */
static int send_slot(weft_pipeline *p, struct stage *st, struct slot *s)
{
	while (s->first < s->n) {
		int r = weft_ctx_err(p->ctx);
		if (r == 0)
			r = weft_chan_send_ctx(p->ctx, st->out->ch, slot_item(st, s, s->first));
		if (r)
			return r;
		s->first++;
	}
	return 0;
}

/*
 * Deliver the outputs of every done item from head on, in order, advancing
 * head past each. Called with st->mu held by the holder of the send right
 * (the worker that completed item head); returns with it released. On a
 * failed send the unsent items stay in their slot ([first, n)), for wait()
 * to drop.
 */
static int flush(weft_pipeline *p, struct stage *st)
{
	for (;;) {
		struct slot *s = &st->slots[st->head % st->window];
		if (s->state != DONE)
			break;
		/* A done slot at head is touched by nobody but us: send without
		 * the lock, so the other workers can go on completing items. */
		weft_mutex_unlock(&st->mu);
		int r = send_slot(p, st, s);
		if (r)
			return r;
		weft_mutex_lock(&st->mu);
		s->first = s->n = 0;
		s->state = EMPTY;
		st->head++;
		if (st->waiters)
			weft_cond_broadcast(&st->cond);
	}
	weft_mutex_unlock(&st->mu);
	return 0;
}

/* The worker of item seq is done with it (its outputs are in its slot):
 * mark it, and if it is at head, deliver from there on. */
static int complete(weft_pipeline *p, struct stage *st, uint64_t seq)
{
	weft_mutex_lock(&st->mu);
	st->slots[seq % st->window].state = DONE;
	if (seq != st->head) {
		weft_mutex_unlock(&st->mu);
		return 0;
	}
	return flush(p, st);
}

/* weft_pipeline_emit for an ordered flatmap: send at once when the item is
 * at head (after what it kept), else keep it in the slot, else wait for the
 * turn. */
static int emit_ordered(weft_pipeline_emitter *em, void *item)
{
	weft_pipeline *p = em->p;
	struct stage *st = em->st;
	struct slot *s = em->slot;
	/* As pass_on: a stopping pipeline takes no more items, also not into
	 * the slot of an item that is ahead of its turn. */
	int r = weft_ctx_err(p->ctx);
	if (r) {
		drop(st->out, item);
		return r;
	}

	weft_mutex_lock(&st->mu);
	for (;;) {
		if (em->seq == st->head) {
			/* Ours is the send right: first what the item kept
			 * before it reached head, then this one. */
			weft_mutex_unlock(&st->mu);
			r = send_slot(p, st, s);
			if (r) {
				drop(st->out, item);
				return r;
			}
			s->first = s->n = 0;
			return pass_on(p, st->out, item);
		}
		if (s->n < st->slot_cap) {
			memcpy(slot_item(st, s, s->n), item, st->out->size);
			s->n++;
			weft_mutex_unlock(&st->mu);
			return 0;
		}
		st->waiters++;
		r = weft_cond_wait_ctx(p->ctx, &st->cond, &st->mu);
		st->waiters--;
		if (r)
			break;
	}
	weft_mutex_unlock(&st->mu);
	drop(st->out, item);
	return r;
}

int weft_pipeline_emit(weft_pipeline_emitter *em, const void *item)
{
	if (!em)
		fatal("emit with a nil emitter");
	/* Atomic: a misuser calls from another goroutine, racing the worker
	 * that clears it (a detection, not a synchronisation). */
	if (!__atomic_load_n(&em->live, __ATOMIC_RELAXED))
		fatal("emit outside the function that was given the emitter");
	/* The item is ours from here on, whatever happens: drop needs it
	 * writable, as the owner's pointer was. */
	void *it = (void *)(uintptr_t)item;
	if (em->st)
		return emit_ordered(em, it);
	int r = pass_on(em->p, em->out, it);
	if (r && !em->err)
		em->err = r;
	return r;
}

/* ---------------------------------------------------------------- goroutines */

/* Run the stage function on the item in w->inbuf. Unordered: pass the
 * outputs straight on. */
static int process(struct worker *w)
{
	weft_pipeline *p = w->p;
	struct stage *st = w->st;
	int r;

	switch (st->kind) {
	case K_MAP:
		r = st->def.map(p->ctx, st->def.arg, w->inbuf, w->outbuf);
		return r ? r : pass_on(p, st->out, w->outbuf);
	case K_FILTER: {
		bool keep = false;
		r = st->def.filter(p->ctx, st->def.arg, w->inbuf, &keep);
		if (r == 0 && keep)
			return pass_on(p, st->out, w->inbuf);
		drop(st->out, w->inbuf);
		return r;
	}
	case K_FLATMAP: {
		w->em = (weft_pipeline_emitter){.p = p, .out = st->out, .live = true};
		r = st->def.flatmap(p->ctx, st->def.arg, w->inbuf, &w->em);
		__atomic_store_n(&w->em.live, false, __ATOMIC_RELAXED);
		return r;
	}
	}
	return EINVAL;
}

/* ---------------------------------------------------------------- batches */

static unsigned char *nth(unsigned char *items, size_t i, size_t stride)
{
	return items + i * stride;
}

/* Receive the next items of a batching stage into w->inbuf: up to limit,
 * at least one. What is waiting, else the next item to come and what waits
 * by then. Returns 0 and *cnt, EPIPE at the end of the input, or the
 * context's error. */
static int recv_batch(struct worker *w, size_t limit, size_t *cnt)
{
	weft_pipeline *p = w->p;
	struct edge *in = w->st->in;
	size_t k = 0, first = 0;
	int r = weft_ctx_err(p->ctx);
	if (r)
		return r;
	if (limit > 1)
		r = weft_chan_tryrecv_n(in->ch, w->pack, limit, &k);
	if (limit == 1 || r == EAGAIN) {
		r = weft_chan_recv_ctx(p->ctx, in->ch, w->inbuf);
		first = 1;
		if (r == 0 && limit > 1 && weft_chan_tryrecv_n(in->ch, w->pack, limit - 1, &k) != 0)
			k = 0;
	}
	if (r)
		return r;
	/* Spread the packed items out to the stride that keeps each aligned. */
	for (size_t j = 0; j < k; j++)
		memcpy(nth(w->inbuf, first + j, in->stride), w->pack + j * in->size, in->size);
	*cnt = first + k;
	return 0;
}

/* Pass the n items at items (at e's stride) on in order: those the channel
 * takes at once with one weft_chan_trysend_n, the others one at a time as
 * pass_on does. When the context is done, the items not sent are dropped.
 * pack has room for n packed items. */
static int pass_on_n(weft_pipeline *p, struct edge *e, unsigned char *items, size_t n,
                     unsigned char *pack)
{
	size_t i = 0;
	int r = weft_ctx_err(p->ctx);
	if (r == 0 && n > 1) {
		for (size_t j = 0; j < n; j++)
			memcpy(pack + j * e->size, nth(items, j, e->stride), e->size);
		if (weft_chan_trysend_n(e->ch, pack, n, &i) != 0)
			i = 0;
	}
	for (; i < n; i++) {
		if (r == 0)
			r = pass_on(p, e, nth(items, i, e->stride)); /* drops it on failure */
		else
			drop(e, nth(items, i, e->stride));
	}
	return r;
}

/* Run the stage function on each of the cnt items in w->inbuf (an unordered
 * map or filter), then pass the outputs on. The context is looked at before
 * each call, as for single items; on a cancellation or a failure the items
 * not yet given to the function go to the input edge's drop and the outputs
 * not sent to the output edge's. A filter's kept items move down in inbuf,
 * which holds its outputs. In the automatic mode, the calls' time decides
 * how many items the next receive may take. */
static int process_batch(struct worker *w, size_t cnt)
{
	weft_pipeline *p = w->p;
	struct stage *st = w->st;
	struct edge *in = st->in, *out = st->out;
	unsigned char *outs = st->kind == K_MAP ? w->outbuf : w->inbuf;
	size_t done = 0, nout = 0;
	int64_t t0 = st->auto_batch ? weft_now() : 0;
	int r = 0;

	while (done < cnt && (r = weft_ctx_err(p->ctx)) == 0) {
		void *item = nth(w->inbuf, done++, in->stride);
		if (st->kind == K_MAP) {
			r = st->def.map(p->ctx, st->def.arg, item, nth(outs, nout, out->stride));
			if (r)
				break;
			nout++;
			continue;
		}
		bool keep = false;
		r = st->def.filter(p->ctx, st->def.arg, item, &keep);
		if (r == 0 && keep) {
			if (nout != done - 1)
				memcpy(nth(outs, nout, out->stride), item, out->size);
			nout++;
		} else {
			drop(out, item);
		}
		if (r)
			break;
	}
	if (st->auto_batch && done > 0) {
		bool cheap = weft_now() - t0 <= (int64_t)done * CHEAP_NS;
		w->streak = !cheap ? 0 : w->streak < AUTO_STREAK ? w->streak + 1 : AUTO_STREAK;
	}
	for (size_t j = done; j < cnt; j++)
		drop(in, nth(w->inbuf, j, in->stride));
	if (r) {
		for (size_t j = 0; j < nout; j++)
			drop(out, nth(outs, j, out->stride));
		return r;
	}
	return pass_on_n(p, out, outs, nout, w->pack);
}

/* The same for item seq of an ordered stage: outputs go to its slot (or, for
 * a flatmap at head, straight on), then complete() delivers what it can. */
static int process_ordered(struct worker *w, uint64_t seq)
{
	weft_pipeline *p = w->p;
	struct stage *st = w->st;
	struct slot *s = &st->slots[seq % st->window];
	int r;

	switch (st->kind) {
	case K_MAP:
		/* The slot is free (the window guarantees head > seq - window)
		 * and ours: the function writes its result in place. */
		r = st->def.map(p->ctx, st->def.arg, w->inbuf, slot_item(st, s, 0));
		if (r)
			return r;
		s->n = 1;
		break;
	case K_FILTER: {
		bool keep = false;
		r = st->def.filter(p->ctx, st->def.arg, w->inbuf, &keep);
		if (r == 0 && keep) {
			memcpy(slot_item(st, s, 0), w->inbuf, st->out->size);
			s->n = 1;
		} else {
			drop(st->out, w->inbuf);
		}
		if (r)
			return r;
		break;
	}
	case K_FLATMAP: {
		w->em = (weft_pipeline_emitter){
			.p = p, .out = st->out, .st = st, .slot = s, .seq = seq, .live = true};
		r = st->def.flatmap(p->ctx, st->def.arg, w->inbuf, &w->em);
		__atomic_store_n(&w->em.live, false, __ATOMIC_RELAXED);
		if (r)
			return r;
		break;
	}
	}
	return complete(p, st, seq);
}

/* Receive the next item of an ordered stage into w->inbuf and number it:
 * 0 and *seq, EPIPE at the end of the input, or the context's error. */
static int recv_ordered(struct worker *w, uint64_t *seq)
{
	weft_pipeline *p = w->p;
	struct stage *st = w->st;
	int r = 0;

	weft_mutex_lock(&st->recv_mu);
	/* Room in the window first: item next_in's slot must have been
	 * delivered and freed. The others queue on recv_mu meanwhile. */
	weft_mutex_lock(&st->mu);
	while (r == 0 && st->next_in - st->head >= st->window) {
		st->waiters++;
		r = weft_cond_wait_ctx(p->ctx, &st->cond, &st->mu);
		st->waiters--;
	}
	weft_mutex_unlock(&st->mu);
	if (r == 0)
		r = weft_ctx_err(p->ctx);
	if (r == 0)
		r = weft_chan_recv_ctx(p->ctx, st->in->ch, w->inbuf);
	if (r == 0)
		*seq = st->next_in++;
	weft_mutex_unlock(&st->recv_mu);
	return r;
}

/* Wait for start() to open the gate; false when the pipeline is already
 * done for (a failed start, a cancel): then no function may be called. */
static bool pass_gate(struct worker *w)
{
	weft_wg_wait(&w->p->gate);
	int r = weft_ctx_err(w->p->ctx);
	fail(w->p, r);
	return r == 0;
}

static void stage_main(void *arg)
{
	struct worker *w = arg;
	weft_pipeline *p = w->p;
	struct stage *st = w->st;

	if (pass_gate(w)) {
		for (;;) {
			/* Go's `for v := range in`, with a look at ctx.Done(). */
			uint64_t seq = 0;
			size_t cnt = 1;
			int r;
			if (st->def.ordered) {
				r = recv_ordered(w, &seq);
			} else {
				bool cheap = !st->auto_batch || w->streak == AUTO_STREAK;
				r = recv_batch(w, cheap ? st->batch : 1, &cnt);
			}
			if (r == EPIPE)
				break; /* input closed and drained: done */
			if (r == 0)
				r = st->def.ordered  ? process_ordered(w, seq)
				    : st->batch == 1 ? process(w)
				                     : process_batch(w, cnt);
			if (r) {
				fail(p, r);
				break;
			}
		}
	}
	/* Fan-in: the last worker out closes the stage's output. */
	if (atomic_fetch_sub(&st->live, 1) == 1)
		weft_chan_close(st->out->ch);
	weft_wg_done(&p->running);
}

static void gen_main(void *arg)
{
	struct worker *w = arg;
	weft_pipeline *p = w->p;

	if (pass_gate(w)) {
		w->em = (weft_pipeline_emitter){.p = p, .out = &p->edges[0], .live = true};
		int r = p->src.gen(p->ctx, p->src.arg, &w->em);
		w->em.live = false;
		/* An item dropped by a failed emit fails the pipeline, even
		 * when the generator, as told, returns 0 then: with no stage
		 * after it, no other goroutine sees the cancellation. */
		fail(p, r ? r : w->em.err);
	}
	/* Go's `defer close(out)` of a generator. */
	weft_chan_close(p->edges[0].ch);
	weft_wg_done(&p->running);
}

/* The sink, or without one (and without an output channel), the goroutine
 * that drops the last edge's items as they come. */
static void sink_main(void *arg)
{
	struct worker *w = arg;
	weft_pipeline *p = w->p;
	struct edge *e = &p->edges[p->nstages];

	if (pass_gate(w)) {
		for (;;) {
			int r = weft_ctx_err(p->ctx);
			if (r == 0)
				r = weft_chan_recv_ctx(p->ctx, e->ch, w->inbuf);
			if (r == EPIPE)
				break;
			if (r == 0) {
				if (p->sink)
					r = p->sink(p->ctx, p->sink_arg, w->inbuf);
				else
					drop(e, w->inbuf);
			}
			if (r) {
				fail(p, r);
				break;
			}
		}
	}
	weft_wg_done(&p->running);
}

/* ---------------------------------------------------------------- building */

int weft_pipeline_new(weft_pipeline **out, weft_ctx *parent, const weft_pipeline_source *src)
{
	if (!out || !src || !src->gen == !src->chan)
		return EINVAL;
	weft_pipeline_source s = *src;
	if (s.chan) {
		size_t es = weft_chan_elem_size(s.chan);
		if (s.item_size != 0 && s.item_size != es)
			return EINVAL;
		s.item_size = es;
	} else if (s.item_size > WEFT_CHAN_MAX_ELEM) {
		return EINVAL;
	}
	weft_pipeline *p = calloc(1, sizeof *p);
	if (!p)
		return ENOMEM;
	int r = weft_ctx_with_cancel(parent ? parent : weft_ctx_background(), &p->ctx);
	if (r) {
		free(p);
		return r;
	}
	p->src = s;
	weft_chan_retain(s.chan);
	p->state = SETUP;
	*out = p;
	return 0;
}

static size_t last_size(const weft_pipeline *p)
{
	return p->nstages ? p->stages[p->nstages - 1]->def.out_size : p->src.item_size;
}

static void setup_only(const weft_pipeline *p, const char *call)
{
	check(p, call);
	if (p->state != SETUP)
		fatal("%s on a pipeline that was started", call);
}

int weft_pipeline_add(weft_pipeline *p, const weft_pipeline_stage *st)
{
	setup_only(p, "add");
	if (!st || (!!st->map + !!st->filter + !!st->flatmap) != 1)
		return EINVAL;
	weft_pipeline_stage d = *st;
	size_t in_size = last_size(p);
	enum kind kind = d.map ? K_MAP : d.filter ? K_FILTER : K_FLATMAP;
	if (kind == K_FILTER) {
		if (d.out_size != 0 && d.out_size != in_size)
			return EINVAL;
		d.out_size = in_size;
	}
	if (d.out_size > WEFT_CHAN_MAX_ELEM || d.workers < 0 ||
	    d.workers > WEFT_PIPELINE_MAX_WORKERS || d.window > WEFT_PIPELINE_MAX_WINDOW ||
	    d.batch > WEFT_PIPELINE_MAX_BATCH)
		return EINVAL;
	if (d.workers == 0)
		d.workers = 1;
	if (d.ordered && d.window == 0)
		d.window = (size_t)d.workers * 4;

	if (p->nstages == p->cap_stages) {
		int cap = p->cap_stages ? 2 * p->cap_stages : 4;
		struct stage **a = realloc(p->stages, (size_t)cap * sizeof *a);
		if (!a)
			return ENOMEM;
		p->stages = a;
		p->cap_stages = cap;
	}
	struct stage *s = calloc(1, sizeof *s);
	if (!s)
		return ENOMEM;
	s->def = d;
	s->kind = kind;
	if (d.name)
		snprintf(s->name, sizeof s->name, "%s", d.name);
	else
		snprintf(s->name, sizeof s->name, "stage%d", p->nstages + 1);
	p->stages[p->nstages++] = s;
	return 0;
}

int weft_pipeline_set_sink(weft_pipeline *p, weft_pipeline_sink_fn fn, void *arg)
{
	setup_only(p, "set_sink");
	if (!fn)
		return EINVAL;
	p->sink = fn;
	p->sink_arg = arg;
	return 0;
}

/* ---------------------------------------------------------------- running */

/* The bytes of one worker's buffers: its batch of inputs and outputs, at
 * their strides, and packed when it batches. */
static size_t worker_bytes(const struct stage *st)
{
	size_t in = st->in->size, out = st->out->size;
	return st->batch * (st->in->stride + st->out->stride) +
	       (st->batch > 1 ? st->batch * (in > out ? in : out) : 0);
}

/* Make the edges, the ordered stages' slots and the goroutines' records and
 * buffers. Everything is freed by release_run(), also on failure. */
static int prepare(weft_pipeline *p, bool want_output)
{
	int n = p->nstages;
	p->edges = calloc((size_t)n + 1, sizeof *p->edges);
	if (!p->edges)
		return ENOMEM;
	struct edge *e = &p->edges[0];
	e->size = p->src.item_size;
	e->drop = p->src.drop;
	e->drop_arg = p->src.arg;
	if (p->src.chan) {
		e->ch = p->src.chan;
	} else {
		if (weft_chan_make(&e->ch, e->size, p->src.buffer) != 0)
			return ENOMEM;
		e->ours = true;
	}
	for (int i = 0; i < n; i++) {
		struct stage *st = p->stages[i];
		e = &p->edges[i + 1];
		e->size = st->def.out_size;
		e->drop = st->def.drop;
		e->drop_arg = st->def.arg;
		if (st->kind == K_FILTER && !e->drop) {
			e->drop = p->edges[i].drop; /* a filter's items are its input's */
			e->drop_arg = p->edges[i].drop_arg;
		}
		if (weft_chan_make(&e->ch, e->size, st->def.buffer) != 0)
			return ENOMEM;
		e->ours = true;
		st->in = &p->edges[i];
		st->out = e;
	}
	size_t max_stride = 0;
	for (int i = 0; i <= n; i++) {
		p->edges[i].stride = stride_of(p->edges[i].size);
		if (p->edges[i].stride > max_stride)
			max_stride = p->edges[i].stride;
	}
	p->edges[n].is_output = want_output;

	/* Batches: unordered maps and filters only. */
	for (int i = 0; i < n; i++) {
		struct stage *st = p->stages[i];
		st->batch = st->def.batch ? st->def.batch : AUTO_BATCH;
		st->auto_batch = st->def.batch == 0;
		if (st->def.ordered || st->kind == K_FLATMAP)
			st->batch = 1;
		while (st->auto_batch && st->batch > 1 &&
		       st->batch * (st->in->stride + st->out->stride) > AUTO_BATCH_BYTES)
			st->batch /= 2;
		st->auto_batch = st->auto_batch && st->batch > 1;
	}

	for (int i = 0; i < n; i++) {
		struct stage *st = p->stages[i];
		if (!st->def.ordered)
			continue;
		st->window = st->def.window;
		st->slot_cap = st->kind == K_FLATMAP ? SLOT_FLAT : 1;
		size_t per = st->slot_cap * st->out->stride;
		if (st->window > SIZE_MAX / per)
			return ENOMEM;
		st->slots = calloc(st->window, sizeof *st->slots);
		st->slot_mem = malloc(st->window * per);
		if (!st->slots || !st->slot_mem)
			return ENOMEM;
		for (size_t k = 0; k < st->window; k++)
			st->slots[k].items = st->slot_mem + k * per;
	}

	/* The goroutines: generator, workers, sink (or dropper). */
	int count = p->src.gen ? 1 : 0;
	for (int i = 0; i < n; i++)
		count += p->stages[i]->def.workers;
	if (!want_output)
		count++;
	p->workers = calloc((size_t)count, sizeof *p->workers);
	p->scratch = malloc(max_stride);
	if (!p->workers || !p->scratch)
		return ENOMEM;
	size_t bytes = 0;
	for (int i = 0; i < n; i++)
		bytes += (size_t)p->stages[i]->def.workers * worker_bytes(p->stages[i]);
	bytes += p->edges[n].stride;
	p->bufs = malloc(bytes);
	if (!p->bufs)
		return ENOMEM;

	unsigned char *b = p->bufs;
	int k = 0;
	if (p->src.gen)
		p->workers[k++] = (struct worker){.p = p, .role = R_GEN};
	for (int i = 0; i < n; i++) {
		struct stage *st = p->stages[i];
		atomic_init(&st->live, st->def.workers);
		for (int j = 0; j < st->def.workers; j++) {
			struct worker *w = &p->workers[k++];
			*w = (struct worker){.p = p, .role = R_WORKER, .st = st, .id = j + 1};
			w->inbuf = b;
			w->outbuf = w->inbuf + st->batch * st->in->stride;
			w->pack = w->outbuf + st->batch * st->out->stride;
			b += worker_bytes(st);
		}
	}
	if (!want_output) {
		p->workers[k++] = (struct worker){.p = p, .role = R_SINK, .inbuf = b};
		b += p->edges[n].stride;
	}
	p->nworkers = k;
	return 0;
}

static int spawn(struct worker *w)
{
	char name[64]; /* weft keeps the first 31 bytes */
	weft_fn fn;
	switch (w->role) {
	case R_GEN:
		fn = gen_main;
		snprintf(name, sizeof name, "pipeline %s",
		         w->p->src.name ? w->p->src.name : "source");
		break;
	case R_WORKER:
		fn = stage_main;
		snprintf(name, sizeof name, "pipeline %s#%d", w->st->name, w->id);
		break;
	default:
		fn = sink_main;
		snprintf(name, sizeof name, "pipeline %s", w->p->sink ? "sink" : "drop");
		break;
	}
	weft_go_options o = {.name = name};
	return weft_go_opts(fn, w, &o);
}

/* Drain an edge the pipeline made and that is closed (every producer has
 * gone), dropping what is left. */
static void drain(weft_pipeline *p, struct edge *e)
{
	while (weft_chan_tryrecv(e->ch, p->scratch) == 0)
		drop(e, p->scratch);
}

/* Drop what ordered stages left in their reorder buffers. Only after every
 * goroutine has gone. */
static void drop_slots(weft_pipeline *p)
{
	for (int i = 0; i < p->nstages; i++) {
		struct stage *st = p->stages[i];
		for (size_t k = 0; st->slots && k < st->window; k++) {
			struct slot *s = &st->slots[k];
			for (size_t j = s->first; j < s->n; j++)
				drop(st->out, slot_item(st, s, j));
			s->first = s->n = 0;
			s->state = EMPTY;
		}
	}
}

int weft_pipeline_start(weft_pipeline *p, weft_chan **output)
{
	check(p, "start");
	if (p->state != SETUP)
		fatal("start of a pipeline that was started");
	/* A channel source with no stage: the output would be the caller's
	 * own source channel, which the pipeline neither reads nor closes. */
	if (output && (p->sink || (p->src.chan && p->nstages == 0)))
		return EINVAL;
	int r = prepare(p, output != NULL);
	if (r)
		goto fail_prepare;

	weft_wg_add(&p->gate, 1);
	weft_wg_add(&p->running, p->nworkers);
	int started = 0;
	for (; started < p->nworkers; started++)
		if ((r = spawn(&p->workers[started])) != 0)
			break;
	if (r) {
		/* Those started see the context cancelled at the gate and
		 * leave without calling anything. */
		weft_wg_add(&p->running, started - p->nworkers);
		weft_ctx_cancel(p->ctx);
		weft_wg_done(&p->gate);
		weft_wg_wait(&p->running);
		goto fail_prepare;
	}
	p->state = RUNNING;
	if (output)
		*output = p->edges[p->nstages].ch;
	weft_wg_done(&p->gate);
	return 0;

fail_prepare:
	p->state = DEAD;
	return r;
}

int weft_pipeline_wait(weft_pipeline *p)
{
	check(p, "wait");
	if (p->state != RUNNING)
		fatal("wait on a pipeline that is not running");
	weft_wg_wait(&p->running);
	int err = atomic_load(&p->err);
	/* errgroup's Wait cancels too: functions that kept the context see
	 * it done, and its done channel and timers are let go. */
	weft_ctx_cancel(p->ctx);
	for (int i = 0; i <= p->nstages; i++)
		if (p->edges[i].ours && !p->edges[i].is_output)
			drain(p, &p->edges[i]);
	drop_slots(p);
	p->state = WAITED;
	return err;
}

int weft_pipeline_run(weft_pipeline *p)
{
	int r = weft_pipeline_start(p, NULL);
	return r ? r : weft_pipeline_wait(p);
}

void weft_pipeline_cancel(weft_pipeline *p)
{
	check(p, "cancel");
	weft_ctx_cancel(p->ctx);
}

weft_ctx *weft_pipeline_ctx(weft_pipeline *p)
{
	check(p, "ctx");
	return p->ctx;
}

void weft_pipeline_free(weft_pipeline *p)
{
	if (!p)
		return;
	if (p->state == RUNNING)
		fatal("free of a running pipeline (wait for it first)");
	if (p->edges) {
		for (int i = 0; i <= p->nstages; i++) {
			struct edge *e = &p->edges[i];
			if (!e->ours)
				continue;
			/* The output channel is closed when the pipeline ended:
			 * what the caller did not receive is dropped here. */
			if (e->is_output && p->state == WAITED)
				drain(p, e);
			weft_chan_release(e->ch);
		}
	}
	for (int i = 0; i < p->nstages; i++) {
		free(p->stages[i]->slots);
		free(p->stages[i]->slot_mem);
		free(p->stages[i]);
	}
	free(p->stages);
	free(p->edges);
	free(p->workers);
	free(p->bufs);
	free(p->scratch);
	weft_chan_release(p->src.chan);
	weft_ctx_release(p->ctx);
	free(p);
}
