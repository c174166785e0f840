/* SPDX-License-Identifier: MIT */
/*
 * pubsub.c - fan-in (weft_merge), tee (weft_tee) and broadcast (weft_pubsub),
 * built on the public API only, as a user's code would be (and so
 * instrumented by ThreadSanitizer like a user's code).
 *
 * Merge and tee share a "flow": a context of their own (a child of the
 * caller's, so weft_*_stop() can cancel it without touching the caller's), a
 * WaitGroup of their goroutines, and the first error. Goroutines start behind
 * a gate: weft_*_new() starts them all, then opens the gate; if one cannot be
 * started, the ones already running see the abort flag at the gate and leave
 * without touching a channel, so a failed call has moved nothing.
 *
 * The broker keeps its own ring buffer per subscription rather than a
 * weft_chan, because a channel cannot drop its oldest element exactly: a
 * publisher that finds it full and receives one to make room races the
 * subscriber, who may have just made room itself, and then a value is
 * dropped that the policy did not call for. Under the subscription's own
 * mutex, "full" and "drop the oldest" are one step, and the counters are
 * exact. The price is that a subscription is not a channel; weft_sub_ready()
 * gives a token channel for select.
 *
 * Locks, in the only order they are taken:
 *   ps->mu      the topic table, each topic's subscription array and
 *               reference count, each subscription's topic pointer, the
 *               broker's counters and closed flag
 *   t's turn    (t->busy, t->stalled and t->turn_cv, under ps->mu) the
 *               publish in progress on topic t; it serialises publishes to a
 *               topic, which gives every subscription the same order and
 *               means only one publisher at a time ever pushes into a given
 *               subscription. Waiting for a turn whose holder is only
 *               pushing is waiting on a lock (no deadline applies); only a
 *               holder stalled on a full blocking subscription makes it a
 *               wait that deadlines and contexts bound
 *   sub->mu     a subscription's ring, counters, closed flag, ready channel
 * A publish: take t's turn; snapshot t's subscription array (ps->mu); wait,
 * under each WEFT_PUBSUB_BLOCK subscription's mu, until it has room (room
 * only grows meanwhile, since no one else pushes into it); then, under ps->mu,
 * check the broker is still open and push into every subscription. The push
 * under ps->mu is what makes a publish all or nothing against a close, and a
 * failed wait has pushed nothing anywhere.
 *
 * Lifetimes are reference counts. The broker: the owner, each live
 * subscription, and each call in progress. A subscription: the owner, each
 * subscription array that lists it, and each receive in progress. A
 * subscription array: its topic (while current) and each publish holding a
 * snapshot of it (counted under ps->mu). A topic lives while it has
 * subscriptions or a publish in progress holds it.
 */
#include "weft.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- misuse */

/* API misuse: weft's fatal error (Go's throw). */
#define fatal(msg) weft_fatalf("%s", msg)

/* ---------------------------------------------------------------- flows */

struct flow {
	weft_ctx *ctx;       /* ours, a child of the caller's; immutable until free */
	weft_wg done;        /* one count per goroutine not yet finished */
	weft_wg gate;        /* 1 until weft_*_new() has started every goroutine */
	atomic_bool aborted; /* a start failed: leave at the gate; written before the gate opens */
	atomic_int err;      /* the first error, 0 if none */
	atomic_bool out_closed; /* a send found an output closed by someone else */
};

/* Make f's context (f is zeroed: the WaitGroups are ready); the gate starts
 * closed. */
static int flow_init(struct flow *f, weft_ctx *parent)
{
	int r = weft_ctx_with_cancel(parent ? parent : weft_ctx_background(), &f->ctx);
	if (r)
		return r;
	weft_wg_add(&f->gate, 1);
	return 0;
}

/*
 * Start goroutines named name running fn(args[i]) for i < n (args is an
 * array of elements of stride bytes), then open the gate. If one cannot be
 * started, tell the ones running to leave at the gate, wait for them, and
 * return the error.
 */
static int flow_start(struct flow *f, const char *name, weft_fn fn, void *args, size_t stride,
                      size_t n)
{
	weft_go_options opts = {.name = name}; /* shown in dumps */
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		weft_wg_add(&f->done, 1);
		r = weft_go_opts(fn, (char *)args + i * stride, &opts);
		if (r) {
			weft_wg_add(&f->done, -1);
			atomic_store(&f->aborted, true);
			break;
		}
	}
	/* Opening the gate publishes aborted (the WaitGroup orders it). */
	weft_wg_done(&f->gate);
	if (r)
		weft_wg_wait(&f->done);
	return r;
}

/* The first thing each goroutine does. False: the start failed; the caller
 * must only weft_wg_done(&f->done) and return. */
static bool flow_enter(struct flow *f)
{
	weft_wg_wait(&f->gate);
	return !atomic_load(&f->aborted);
}

/* Record err (the first one wins) and stop every goroutine of the flow. An
 * EPIPE here always comes from a send: an output was closed by someone else. */
static void flow_fail(struct flow *f, int err)
{
	int none = 0;
	if (err == EPIPE)
		atomic_store(&f->out_closed, true);
	atomic_compare_exchange_strong(&f->err, &none, err);
	weft_ctx_cancel(f->ctx);
}

static int flow_wait(struct flow *f)
{
	weft_wg_wait(&f->done);
	return atomic_load(&f->err);
}

/* Cancelling our own context stops the goroutines, which record ECANCELED
 * unless they ended already (then err stays what it was). */
static void flow_stop(struct flow *f)
{
	weft_ctx_cancel(f->ctx);
}

static void flow_destroy(struct flow *f)
{
	weft_ctx_cancel(f->ctx);
	weft_wg_wait(&f->done);
	weft_ctx_release(f->ctx);
}

/* ---------------------------------------------------------------- merge */

struct fwd {
	struct weft_merge *m;
	weft_chan *in;      /* retained */
	unsigned char *buf; /* elem_size bytes, this goroutine's own */
};

struct weft_merge {
	struct flow f;
	weft_chan *out;        /* retained */
	size_t n;              /* immutable */
	atomic_size_t running; /* forwarders not yet finished: the last closes out */
	struct fwd fwd[];      /* n of them, then n buffers */
};

/* One input's forwarder: Go's `for v := range in { select { case out <- v:
 * case <-done: return } }`. */
static void merge_fwd(void *arg)
{
	struct fwd *fw = arg;
	struct weft_merge *m = fw->m;
	struct flow *f = &m->f;

	if (!flow_enter(f)) {
		weft_wg_done(&f->done);
		return;
	}
	for (;;) {
		/* Check first: a _ctx call on a done context still completes when
		 * it can without waiting, so with a busy input and a fast reader
		 * the loop would otherwise never see the cancellation. */
		int r = weft_ctx_err(f->ctx);
		if (!r)
			r = weft_chan_recv_ctx(f->ctx, fw->in, fw->buf);
		if (r == EPIPE)
			break; /* the input is closed and drained: done */
		if (!r)
			r = weft_chan_send_ctx(f->ctx, m->out, fw->buf);
		if (r) {
			flow_fail(f, r);
			break;
		}
	}
	/* The last one out closes out (Go: wg.Wait(); close(out)), unless
	 * someone else did. out_closed was set before that forwarder's
	 * decrement, which this one's decrement follows. */
	if (atomic_fetch_sub(&m->running, 1) == 1 && !atomic_load(&f->out_closed))
		weft_chan_close(m->out);
	weft_wg_done(&f->done);
}

int weft_merge_new(weft_merge **mp, weft_chan *out, weft_chan *const *ins, size_t n, weft_ctx *ctx)
{
	if (!mp || !out || (n > 0 && !ins))
		return EINVAL;
	size_t es = weft_chan_elem_size(out);
	for (size_t i = 0; i < n; i++)
		if (!ins[i] || ins[i] == out || weft_chan_elem_size(ins[i]) != es)
			return EINVAL;
	if (n > (SIZE_MAX - sizeof(struct weft_merge)) / (sizeof(struct fwd) + es))
		return ENOMEM;

	struct weft_merge *m = calloc(1, sizeof *m + n * (sizeof(struct fwd) + es));
	if (!m)
		return ENOMEM;
	int r = flow_init(&m->f, ctx);
	if (r)
		goto fail_free;
	m->out = weft_chan_retain(out);
	m->n = n;
	atomic_init(&m->running, n);
	unsigned char *bufs = (unsigned char *)&m->fwd[n];
	for (size_t i = 0; i < n; i++)
		m->fwd[i] =
			(struct fwd){.m = m, .in = weft_chan_retain(ins[i]), .buf = bufs + i * es};
	r = flow_start(&m->f, "weft_merge", merge_fwd, m->fwd, sizeof m->fwd[0], n);
	if (r)
		goto fail_release;
	if (n == 0)
		weft_chan_close(out); /* no input: already done */
	*mp = m;
	return 0;

fail_release:
	for (size_t i = 0; i < n; i++)
		weft_chan_release(m->fwd[i].in);
	weft_chan_release(m->out);
	weft_ctx_release(m->f.ctx);
fail_free:
	free(m);
	return r;
}

int weft_merge_wait(weft_merge *m)
{
	if (!m)
		fatal("pubsub: wait on nil merge");
	return flow_wait(&m->f);
}

void weft_merge_stop(weft_merge *m)
{
	if (!m)
		fatal("pubsub: stop of nil merge");
	flow_stop(&m->f);
}

void weft_merge_free(weft_merge *m)
{
	if (!m)
		return;
	flow_destroy(&m->f);
	for (size_t i = 0; i < m->n; i++)
		weft_chan_release(m->fwd[i].in);
	weft_chan_release(m->out);
	free(m);
}

/* ---------------------------------------------------------------- tee */

struct weft_tee {
	struct flow f;
	weft_chan *in;       /* retained */
	weft_chan *out[2];   /* retained */
	unsigned char buf[]; /* elem_size bytes: the value in hand */
};

/* Go's tee: take a value, then select over the two sends, setting the case
 * that went to nil, until both have it; only then take the next. */
static void tee_run(void *arg)
{
	struct weft_tee *t = arg;
	struct flow *f = &t->f;
	bool other_closed[2] = {false, false};
	int r;

	if (!flow_enter(f)) {
		weft_wg_done(&f->done);
		return;
	}
	for (;;) {
		r = weft_ctx_err(f->ctx); /* see merge_fwd */
		if (!r)
			r = weft_chan_recv_ctx(f->ctx, t->in, t->buf);
		if (r == EPIPE) {
			r = 0; /* in is closed and drained: done */
			break;
		}
		if (r)
			break;
		weft_case cs[2] = {WEFT_SEND_CASE(t->out[0], t->buf),
		                   WEFT_SEND_CASE(t->out[1], t->buf)};
		for (int left = 2; left > 0 && !r; left--) {
			int i = -1;
			r = weft_select_ctx(f->ctx, cs, 2, &i);
			if (r == EPIPE)
				other_closed[i] = true;
			else if (!r)
				cs[i].chan = NULL; /* Go: out1 = nil; never ready again */
		}
		if (r)
			break;
	}
	if (r)
		flow_fail(f, r);
	for (int i = 0; i < 2; i++)
		if (!other_closed[i])
			weft_chan_close(t->out[i]);
	weft_wg_done(&f->done);
}

int weft_tee_new(weft_tee **tp, weft_chan *in, weft_chan *out1, weft_chan *out2, weft_ctx *ctx)
{
	if (!tp || !in || !out1 || !out2 || in == out1 || in == out2 || out1 == out2)
		return EINVAL;
	size_t es = weft_chan_elem_size(in);
	if (weft_chan_elem_size(out1) != es || weft_chan_elem_size(out2) != es)
		return EINVAL;

	struct weft_tee *t = calloc(1, sizeof *t + es);
	if (!t)
		return ENOMEM;
	int r = flow_init(&t->f, ctx);
	if (r)
		goto fail_free;
	t->in = weft_chan_retain(in);
	t->out[0] = weft_chan_retain(out1);
	t->out[1] = weft_chan_retain(out2);
	r = flow_start(&t->f, "weft_tee", tee_run, t, sizeof *t, 1);
	if (r)
		goto fail_release;
	*tp = t;
	return 0;

fail_release:
	weft_chan_release(t->in);
	weft_chan_release(t->out[0]);
	weft_chan_release(t->out[1]);
	weft_ctx_release(t->f.ctx);
fail_free:
	free(t);
	return r;
}

int weft_tee_wait(weft_tee *t)
{
	if (!t)
		fatal("pubsub: wait on nil tee");
	return flow_wait(&t->f);
}

void weft_tee_stop(weft_tee *t)
{
	if (!t)
		fatal("pubsub: stop of nil tee");
	flow_stop(&t->f);
}

void weft_tee_free(weft_tee *t)
{
	if (!t)
		return;
	flow_destroy(&t->f);
	weft_chan_release(t->in);
	weft_chan_release(t->out[0]);
	weft_chan_release(t->out[1]);
	free(t);
}

/* ---------------------------------------------------------------- pub-sub: types */

/* A topic's subscriptions, copy-on-write: a publish works on a snapshot
 * without holding ps->mu, and a change makes a new array unless no publish
 * holds the current one. */
struct subs {
	size_t refs;   /* the topic (while current) + each snapshot; under ps->mu */
	size_t n;      /* under ps->mu; changes only while refs == 1 */
	weft_sub *v[]; /* each holds a reference to its subscription */
};

struct topic {
	struct topic *next; /* the hash chain; under ps->mu */
	uint64_t hash;      /* immutable */
	size_t refs;        /* publishes between lookup and finish; under ps->mu */
	struct subs *subs;  /* the current array, NULL when none; under ps->mu */
	bool busy;          /* a publish holds the turn; under ps->mu */
	bool stalled;       /* ... and has waited for room in a full subscription; under ps->mu */
	weft_cond turn_cv;  /* with ps->mu: the turn was given back, or its holder stalled */
	char name[];        /* immutable */
};

struct weft_pubsub {
	atomic_long refs; /* the owner, each live subscription, each call in progress */
	size_t elem_size; /* immutable */
	weft_mutex mu;
	bool closed;            /* under mu */
	struct topic **buckets; /* under mu */
	size_t nbuckets;        /* under mu; a power of two */
	size_t nentries;        /* topics in the table (with or without subscriptions); under mu */
	uint64_t published, unrouted, ntopics, nsubs; /* under mu; see weft_pubsub_stats */
};

struct weft_sub {
	atomic_long refs;    /* the owner, each array listing it, each receive in progress */
	weft_pubsub *ps;     /* immutable; holds a reference */
	struct topic *topic; /* under ps->mu: the topic while attached, else NULL */
	int policy;          /* immutable */
	size_t cap;          /* immutable */
	weft_mutex mu;
	weft_cond nonempty;                   /* receivers wait here; with mu */
	weft_cond nonfull;                    /* the (one) publisher waiting for room; with mu */
	bool closed;                          /* under mu */
	size_t head, count;                   /* under mu: the ring's oldest slot and length */
	uint64_t offered, delivered, dropped; /* under mu */
	weft_chan *ready;                     /* under mu: made by weft_sub_ready(), else NULL */
	unsigned char ring[];                 /* cap * elem_size bytes; under mu */
};

#define PUBSUB_MIN_BUCKETS 16

/* ---------------------------------------------------------------- pub-sub: lifetimes */

static void ps_retain(weft_pubsub *ps)
{
	atomic_fetch_add_explicit(&ps->refs, 1, memory_order_relaxed);
}

static void ps_release(weft_pubsub *ps)
{
	/* acq_rel: every holder's last use happens before the free. */
	if (atomic_fetch_sub_explicit(&ps->refs, 1, memory_order_acq_rel) != 1)
		return;
	/* Every topic left the table when its last subscription or publish
	 * did (the close detached every subscription). */
	for (size_t i = 0; i < ps->nbuckets; i++)
		for (struct topic *t = ps->buckets[i], *next; t; t = next) {
			next = t->next;
			free(t);
		}
	free(ps->buckets);
	free(ps);
}

static void sub_retain(weft_sub *sub)
{
	atomic_fetch_add_explicit(&sub->refs, 1, memory_order_relaxed);
}

static void sub_release(weft_sub *sub)
{
	if (atomic_fetch_sub_explicit(&sub->refs, 1, memory_order_acq_rel) != 1)
		return;
	weft_chan_release(sub->ready);
	weft_pubsub *ps = sub->ps;
	free(sub);
	ps_release(ps);
}

/* Drop a reference to s; the last drops the array's references to its
 * subscriptions. Called with ps->mu held (s may be NULL). A subscription
 * freed here is never the broker's last reference: the caller holds one. */
static void subs_release(struct subs *s)
{
	if (!s || --s->refs > 0)
		return;
	for (size_t i = 0; i < s->n; i++)
		sub_release(s->v[i]);
	free(s);
}

/* ---------------------------------------------------------------- pub-sub: the topic table */

/* FNV-1a, 64 bits. */
static uint64_t hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/* With ps->mu held. */
static struct topic *topic_find(weft_pubsub *ps, const char *name, uint64_t h)
{
	for (struct topic *t = ps->buckets[h & (ps->nbuckets - 1)]; t; t = t->next)
		if (t->hash == h && strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* Double the table when it is fuller than one topic per bucket. Failing to
 * grow only makes the chains longer. With ps->mu held. */
static void table_grow(weft_pubsub *ps)
{
	if (ps->nentries <= ps->nbuckets || ps->nbuckets > SIZE_MAX / 2 / sizeof(struct topic *))
		return;
	size_t nb = ps->nbuckets * 2;
	struct topic **b = calloc(nb, sizeof *b);
	if (!b)
		return;
	for (size_t i = 0; i < ps->nbuckets; i++)
		for (struct topic *t = ps->buckets[i], *next; t; t = next) {
			next = t->next;
			t->next = b[t->hash & (nb - 1)];
			b[t->hash & (nb - 1)] = t;
		}
	free(ps->buckets);
	ps->buckets = b;
	ps->nbuckets = nb;
}

/* A new topic in the table, or NULL (ENOMEM). With ps->mu held. */
static struct topic *topic_add(weft_pubsub *ps, const char *name, uint64_t h)
{
	size_t len = strlen(name);
	struct topic *t = calloc(1, sizeof *t + len + 1);
	if (!t)
		return NULL;
	t->hash = h; /* busy, stalled, turn_cv: all-zero is ready */
	memcpy(t->name, name, len + 1);
	struct topic **b = &ps->buckets[h & (ps->nbuckets - 1)];
	t->next = *b;
	*b = t;
	ps->nentries++;
	table_grow(ps);
	return t;
}

/* Remove t from the table and free it if nothing holds it any more: no
 * subscription and no publish in progress. With ps->mu held. */
static void topic_put(weft_pubsub *ps, struct topic *t)
{
	if (t->subs || t->refs > 0)
		return;
	struct topic **p = &ps->buckets[t->hash & (ps->nbuckets - 1)];
	while (*p != t)
		p = &(*p)->next;
	*p = t->next;
	ps->nentries--;
	free(t);
}

/* ---------------------------------------------------------------- pub-sub: one subscription */

static unsigned char *slot(weft_sub *sub, size_t i)
{
	return sub->ring + (i % sub->cap) * sub->ps->elem_size;
}

/* Close sub: receivers drain what it holds, then get EPIPE; a publisher
 * waiting for room stops waiting. Idempotent. */
static void sub_close(weft_sub *sub)
{
	weft_mutex_lock(&sub->mu);
	if (!sub->closed) {
		sub->closed = true;
		weft_cond_broadcast(&sub->nonempty);
		weft_cond_broadcast(&sub->nonfull);
		if (sub->ready)
			weft_chan_close(sub->ready);
	}
	weft_mutex_unlock(&sub->mu);
}

/* Give a copy of msg to sub under its policy. The caller holds the topic's
 * turn, so nobody else pushes into sub, and for WEFT_PUBSUB_BLOCK it has
 * seen room, which receivers can only have grown. */
static bool sub_offer(weft_sub *sub, const void *msg)
{
	size_t es = sub->ps->elem_size;
	weft_mutex_lock(&sub->mu);
	if (sub->closed) {
		weft_mutex_unlock(&sub->mu);
		return false;
	}
	sub->offered++;
	if (sub->count == sub->cap) {
		switch (sub->policy) {
		case WEFT_PUBSUB_DROP_NEWEST:
			sub->dropped++;
			weft_mutex_unlock(&sub->mu);
			return true;
		case WEFT_PUBSUB_DROP_OLDEST:
			sub->head = (sub->head + 1) % sub->cap;
			sub->count--;
			sub->dropped++;
			break;
		default: fatal("pubsub: internal error: push into a full blocking subscription");
		}
	}
	if (es)
		memcpy(slot(sub, sub->head + sub->count), msg, es);
	sub->count++;
	/* One signal per message: with several receivers waiting, each new
	 * message must wake one of them. */
	weft_cond_signal(&sub->nonempty);
	if (sub->ready)
		(void)weft_chan_trysend(sub->ready, NULL); /* EAGAIN: a token is there */
	weft_mutex_unlock(&sub->mu);
	return true;
}

/* Wait while sub is full and open. ctx NULL: until deadline_ns (INT64_MAX:
 * forever). Before the first wait, mark t's turn stalled, so that publishers
 * queued behind, whose wait is now a real one, apply their own deadlines to
 * it. Returns 0 (room, or closed), or why it gave up. */
static int sub_wait_room(weft_pubsub *ps, struct topic *t, weft_sub *sub, weft_ctx *ctx,
                         int64_t deadline_ns)
{
	int r = 0;
	weft_mutex_lock(&sub->mu);
	while (!sub->closed && sub->count == sub->cap) {
		if (!t->stalled) { /* only we write it, holding the turn */
			weft_mutex_unlock(&sub->mu); /* ps->mu comes first */
			weft_mutex_lock(&ps->mu);
			t->stalled = true;
			weft_cond_broadcast(&t->turn_cv);
			weft_mutex_unlock(&ps->mu);
			weft_mutex_lock(&sub->mu);
			continue;
		}
		if (ctx)
			r = weft_cond_wait_ctx(ctx, &sub->nonfull, &sub->mu);
		else if (deadline_ns == INT64_MAX)
			weft_cond_wait(&sub->nonfull, &sub->mu);
		else
			r = weft_cond_wait_until(&sub->nonfull, &sub->mu, deadline_ns);
		if (r) {
			if (sub->closed || sub->count < sub->cap)
				r = 0; /* it came true meanwhile: no need to fail */
			break;
		}
	}
	weft_mutex_unlock(&sub->mu);
	return r;
}

/* ---------------------------------------------------------------- pub-sub: broker */

int weft_pubsub_new(weft_pubsub **psp, size_t elem_size)
{
	if (!psp || elem_size > WEFT_CHAN_MAX_ELEM)
		return EINVAL;
	weft_pubsub *ps = calloc(1, sizeof *ps);
	if (!ps)
		return ENOMEM;
	ps->buckets = calloc(PUBSUB_MIN_BUCKETS, sizeof *ps->buckets);
	if (!ps->buckets) {
		free(ps);
		return ENOMEM;
	}
	ps->nbuckets = PUBSUB_MIN_BUCKETS;
	ps->elem_size = elem_size;
	atomic_init(&ps->refs, 1); /* the mutex: all-zero is ready */
	*psp = ps;
	return 0;
}

void weft_pubsub_close(weft_pubsub *ps)
{
	if (!ps)
		fatal("pubsub: close of nil broker");
	weft_mutex_lock(&ps->mu);
	if (!ps->closed) {
		ps->closed = true;
		for (size_t i = 0; i < ps->nbuckets; i++)
			for (struct topic *t = ps->buckets[i], *next; t; t = next) {
				next = t->next;
				struct subs *s = t->subs;
				if (!s)
					continue;
				for (size_t j = 0; j < s->n; j++) {
					if (s->v[j]->topic != t)
						continue; /* unsubscribed, pruned later */
					s->v[j]->topic = NULL;
					sub_close(s->v[j]);
					ps->nsubs--;
				}
				t->subs = NULL;
				ps->ntopics--;
				subs_release(s);
				topic_put(ps, t);
			}
	}
	weft_mutex_unlock(&ps->mu);
}

void weft_pubsub_free(weft_pubsub *ps)
{
	if (!ps)
		return;
	weft_pubsub_close(ps);
	ps_release(ps);
}

int weft_pubsub_subscribe(weft_pubsub *ps, const char *topic, size_t cap, int policy,
                          weft_sub **subp)
{
	if (!ps)
		fatal("pubsub: subscribe to nil broker");
	if (!subp || !topic || cap == 0 ||
	    (policy != WEFT_PUBSUB_BLOCK && policy != WEFT_PUBSUB_DROP_OLDEST &&
	     policy != WEFT_PUBSUB_DROP_NEWEST))
		return EINVAL;
	size_t es = ps->elem_size;
	if (es && cap > (SIZE_MAX - sizeof(struct weft_sub)) / es)
		return ENOMEM;
	weft_sub *sub = calloc(1, sizeof *sub + cap * es);
	if (!sub)
		return ENOMEM;
	atomic_init(&sub->refs, 1);
	sub->ps = ps;
	sub->policy = policy;
	sub->cap = cap;
	/* mu, nonempty and nonfull: all-zero is ready. */

	uint64_t h = hash_name(topic);
	int r = 0;
	weft_mutex_lock(&ps->mu);
	if (ps->closed) {
		r = EPIPE;
		goto fail_unlock;
	}
	struct topic *t = topic_find(ps, topic, h);
	if (!t && !(t = topic_add(ps, topic, h))) {
		r = ENOMEM;
		goto fail_unlock;
	}
	/* A new array with the attached subscriptions and this one, which also
	 * prunes any left behind by an unsubscribe that could not allocate. */
	struct subs *old = t->subs;
	size_t n = old ? old->n : 0;
	struct subs *s = malloc(sizeof *s + (n + 1) * sizeof s->v[0]);
	if (!s) {
		r = ENOMEM;
		topic_put(ps, t);
		goto fail_unlock;
	}
	s->refs = 1;
	s->n = 0;
	for (size_t i = 0; i < n; i++)
		if (old->v[i]->topic == t) {
			sub_retain(old->v[i]);
			s->v[s->n++] = old->v[i];
		}
	sub_retain(sub);
	s->v[s->n++] = sub;
	sub->topic = t;
	t->subs = s;
	subs_release(old);
	if (!old)
		ps->ntopics++;
	ps->nsubs++;
	ps_retain(ps); /* the subscription's */
	weft_mutex_unlock(&ps->mu);
	*subp = sub;
	return 0;

fail_unlock:
	weft_mutex_unlock(&ps->mu);
	free(sub);
	return r;
}

/* Detach sub from its topic t: a new array without it (and without others
 * left behind), edited in place when no publish holds a snapshot. If there is
 * no memory for a new array, sub stays listed, marked detached (topic NULL):
 * publishes skip it, being closed, and the next change prunes it. With ps->mu
 * held; sub->topic is already NULL. */
static void detach(weft_pubsub *ps, struct topic *t)
{
	struct subs *s = t->subs;
	size_t live = 0;
	for (size_t i = 0; i < s->n; i++)
		live += s->v[i]->topic == t;
	if (live == 0) {
		t->subs = NULL;
		ps->ntopics--;
		subs_release(s);
		return;
	}
	if (s->refs == 1) {
		size_t k = 0;
		for (size_t i = 0; i < s->n; i++) {
			if (s->v[i]->topic == t)
				s->v[k++] = s->v[i];
			else
				sub_release(s->v[i]); /* never the broker's last reference */
		}
		s->n = k;
		return;
	}
	struct subs *ns = malloc(sizeof *ns + live * sizeof ns->v[0]);
	if (!ns)
		return;
	ns->refs = 1;
	ns->n = 0;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i]->topic == t) {
			sub_retain(s->v[i]);
			ns->v[ns->n++] = s->v[i];
		}
	t->subs = ns;
	subs_release(s);
}

void weft_pubsub_unsubscribe(weft_sub *sub)
{
	if (!sub)
		fatal("pubsub: unsubscribe of nil subscription");
	weft_pubsub *ps = sub->ps;
	weft_mutex_lock(&ps->mu);
	struct topic *t = sub->topic;
	if (t) {
		sub->topic = NULL;
		ps->nsubs--;
		detach(ps, t);
		topic_put(ps, t);
	}
	/* Closed under ps->mu: a publish pushes under ps->mu too, so none
	 * reaches sub after this returns. */
	sub_close(sub);
	weft_mutex_unlock(&ps->mu);
}

/*
 * Take t's turn, with ps->mu held (a wait releases it). A turn held by a
 * publish that is only pushing is a lock, held briefly: wait for it whatever
 * the deadline or context, so that a try on a topic that needs no wait for
 * room always goes through. Only a holder stalled on a full blocking
 * subscription makes the wait one the deadline or context bounds.
 */
static int take_turn(weft_pubsub *ps, struct topic *t, weft_ctx *ctx, int64_t deadline_ns)
{
	while (t->busy) {
		int r = 0;
		if (!t->stalled || (!ctx && deadline_ns == INT64_MAX))
			weft_cond_wait(&t->turn_cv, &ps->mu);
		else if (ctx)
			r = weft_cond_wait_ctx(ctx, &t->turn_cv, &ps->mu);
		else
			r = weft_cond_wait_until(&t->turn_cv, &ps->mu, deadline_ns);
		if (r && t->busy && t->stalled)
			return r;
	}
	t->busy = true;
	return 0;
}

/* Give t's turn back. With ps->mu held. One waiter is enough, and none is
 * lost: a waiter leaves take_turn without the turn only while another
 * publish holds it, stalled, and that one gives it back in turn. */
static void give_turn(struct topic *t)
{
	t->busy = false;
	t->stalled = false;
	weft_cond_signal(&t->turn_cv);
}

/*
 * The publish behind the three forms. ctx NULL: wait until deadline_ns
 * (INT64_MAX: forever).
 */
static int publish(weft_pubsub *ps, const char *name, const void *msg, weft_ctx *ctx,
                   int64_t deadline_ns)
{
	if (!ps)
		fatal("pubsub: publish to nil broker");
	if (!name || (!msg && ps->elem_size))
		return EINVAL;
	uint64_t h = hash_name(name);
	int r = 0;

	ps_retain(ps); /* so a close and free meanwhile cannot pull it away */
	weft_mutex_lock(&ps->mu);
	struct topic *t = ps->closed ? NULL : topic_find(ps, name, h);
	if (ps->closed) {
		r = EPIPE;
	} else if (!t || !t->subs) {
		ps->published++; /* nobody listens: fine, and counted */
		ps->unrouted++;
		t = NULL;
	} else {
		t->refs++; /* keeps t in the table until we are done */
	}
	if (!t) {
		weft_mutex_unlock(&ps->mu);
		goto out;
	}

	/* Our turn on the topic. */
	r = take_turn(ps, t, ctx, deadline_ns);
	bool have_turn = r == 0;

	struct subs *s = NULL;
	if (!r) {
		if (ps->closed)
			r = EPIPE;
		else if ((s = t->subs) != NULL)
			s->refs++;
	}
	weft_mutex_unlock(&ps->mu);
	/* Room in every blocking subscription first; nothing is pushed until
	 * all have it, so giving up here leaves no partial publish. */
	for (size_t i = 0; !r && s && i < s->n; i++)
		if (s->v[i]->policy == WEFT_PUBSUB_BLOCK)
			r = sub_wait_room(ps, t, s->v[i], ctx, deadline_ns);

	weft_mutex_lock(&ps->mu);
	if (!r && ps->closed)
		r = EPIPE;
	if (!r) {
		bool any = false;
		for (size_t i = 0; s && i < s->n; i++)
			any |= sub_offer(s->v[i], msg);
		ps->published++;
		ps->unrouted += !any;
	}
	subs_release(s);
	if (have_turn)
		give_turn(t);
	t->refs--;
	topic_put(ps, t);
	weft_mutex_unlock(&ps->mu);
out:
	ps_release(ps);
	return r;
}

int weft_pubsub_publish(weft_pubsub *ps, const char *topic, const void *msg)
{
	return publish(ps, topic, msg, NULL, INT64_MAX);
}

int weft_pubsub_publish_until(weft_pubsub *ps, const char *topic, const void *msg,
                              int64_t deadline_ns)
{
	return publish(ps, topic, msg, NULL,
	               deadline_ns == INT64_MAX ? INT64_MAX - 1 : deadline_ns);
}

int weft_pubsub_publish_ctx(weft_ctx *ctx, weft_pubsub *ps, const char *topic, const void *msg)
{
	return publish(ps, topic, msg, ctx, INT64_MAX);
}

void weft_pubsub_stats_get(weft_pubsub *ps, weft_pubsub_stats *out)
{
	if (!ps)
		fatal("pubsub: stats of nil broker");
	weft_mutex_lock(&ps->mu);
	*out = (weft_pubsub_stats){
		.published = ps->published,
		.unrouted = ps->unrouted,
		.topics = ps->ntopics,
		.subscriptions = ps->nsubs,
	};
	weft_mutex_unlock(&ps->mu);
}

/* ---------------------------------------------------------------- subscriptions */

enum { RECV_WAIT, RECV_TRY };

/* The receive behind the four forms. ctx NULL: wait until deadline_ns
 * (INT64_MAX: forever). */
static int sub_recv(weft_sub *sub, void *out, int mode, weft_ctx *ctx, int64_t deadline_ns)
{
	if (!sub)
		fatal("pubsub: receive from nil subscription");
	size_t es = sub->ps->elem_size;
	int r = 0;

	sub_retain(sub); /* a weft_sub_free() meanwhile wakes us; we still touch sub */
	weft_mutex_lock(&sub->mu);
	while (sub->count == 0 && !sub->closed) {
		if (mode == RECV_TRY)
			r = EAGAIN;
		else if (ctx)
			r = weft_cond_wait_ctx(ctx, &sub->nonempty, &sub->mu);
		else if (deadline_ns == INT64_MAX)
			weft_cond_wait(&sub->nonempty, &sub->mu);
		else
			r = weft_cond_wait_until(&sub->nonempty, &sub->mu, deadline_ns);
		if (r) {
			if (sub->count > 0 || sub->closed)
				r = 0; /* it came true meanwhile: take it */
			break;
		}
	}
	if (!r && sub->count > 0) {
		if (out && es)
			memcpy(out, slot(sub, sub->head), es);
		sub->head = (sub->head + 1) % sub->cap;
		sub->count--;
		sub->delivered++;
		if (sub->policy == WEFT_PUBSUB_BLOCK)
			weft_cond_signal(&sub->nonfull);
	} else if (!r) {
		r = EPIPE; /* closed and drained */
		if (out && es)
			memset(out, 0, es);
	}
	weft_mutex_unlock(&sub->mu);
	sub_release(sub);
	return r;
}

int weft_sub_recv(weft_sub *sub, void *out)
{
	return sub_recv(sub, out, RECV_WAIT, NULL, INT64_MAX);
}

int weft_sub_tryrecv(weft_sub *sub, void *out)
{
	return sub_recv(sub, out, RECV_TRY, NULL, INT64_MAX);
}

int weft_sub_recv_until(weft_sub *sub, void *out, int64_t deadline_ns)
{
	return sub_recv(sub, out, RECV_WAIT, NULL,
	                deadline_ns == INT64_MAX ? INT64_MAX - 1 : deadline_ns);
}

int weft_sub_recv_ctx(weft_ctx *ctx, weft_sub *sub, void *out)
{
	return sub_recv(sub, out, RECV_WAIT, ctx, INT64_MAX);
}

weft_chan *weft_sub_ready(weft_sub *sub)
{
	if (!sub)
		fatal("pubsub: ready of nil subscription");
	weft_mutex_lock(&sub->mu);
	if (!sub->ready && weft_chan_make(&sub->ready, 0, 1) == 0) {
		/* Start in the state the token would have had from the start. */
		if (sub->count > 0)
			(void)weft_chan_trysend(sub->ready, NULL);
		if (sub->closed)
			weft_chan_close(sub->ready);
	}
	weft_chan *c = sub->ready;
	weft_mutex_unlock(&sub->mu);
	return c;
}

void weft_sub_stats_get(weft_sub *sub, weft_sub_stats *out)
{
	if (!sub)
		fatal("pubsub: stats of nil subscription");
	weft_mutex_lock(&sub->mu);
	*out = (weft_sub_stats){
		.offered = sub->offered,
		.delivered = sub->delivered,
		.dropped = sub->dropped,
		.buffered = sub->count,
	};
	weft_mutex_unlock(&sub->mu);
}

void weft_sub_free(weft_sub *sub)
{
	if (!sub)
		return;
	weft_pubsub_unsubscribe(sub);
	sub_release(sub);
}
