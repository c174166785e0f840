/* SPDX-License-Identifier: MIT */
/*
 * context.c - weft_ctx, Go's context package.
 *
 * Four kinds of node: the background (a static root), cancellable nodes
 * (with_cancel, with_deadline, with_timeout), value nodes, and detached
 * nodes (without_cancel: a value lookup passes through them, a search for
 * the governing cancellable node stops at them). Every node but the root
 * holds a reference on its parent, so values and deadlines can be read up
 * the tree without locks: a node's links never change.
 *
 * Cancellation is the runtime's cancellation source (struct weft__cancel,
 * park.h), one per cancellable node. Everything that must learn of a
 * cancellation registers a hook on the nearest cancellable ancestor's source:
 * a cancellable child (its hook cancels it in turn, with the same error and
 * cause), and each waiter of a _ctx call (its hook claims and wakes it).
 * Firing detaches the hooks under the source's lock and runs them outside it,
 * so a parent reaches every descendant exactly once, from any thread, without
 * holding a lock across the tree. The done channel is made on first request;
 * whoever sees it open once the source has fired closes it (once: done_closed
 * under the lock). No channel lock is ever taken under a source's lock.
 *
 * Deadlines are runtime timers (deletable, embedded in the node) whose
 * callback cancels the node with ETIMEDOUT. The last release stops the timer
 * (or waits for a firing callback to finish), unhooks the node from its
 * ancestor (waiting, likewise, for a cancellation running its hook), and only
 * then frees it: no callback outlives the memory it touches.
 */
#include "weft.h"

#include <errno.h>

#include "alloc.h"
#include "ctx_impl.h"
#include "fatal.h"
#include "sanitizer.h"
#include "sched.h"

static weft_ctx background = {.kind = CTX_BACKGROUND};

weft_ctx *weft_ctx_background(void)
{
	return &background;
}

weft_ctx *weft_ctx_retain(weft_ctx *ctx)
{
	if (ctx && ctx->kind != CTX_BACKGROUND)
		__atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
	return ctx;
}

struct weft__cancel *weft__ctx_source(weft_ctx *ctx)
{
	while (ctx && ctx->kind == CTX_VALUE)
		ctx = ctx->parent;
	return ctx && ctx->kind == CTX_CANCEL ? &ctx->cs : NULL;
}

static weft_ctx *cancel_node(weft_ctx *ctx)
{
	while (ctx && ctx->kind == CTX_VALUE)
		ctx = ctx->parent;
	return ctx && ctx->kind == CTX_CANCEL ? ctx : NULL;
}

/* Fire ctx's source (a cancellable node's): its waiters are woken, and its
 * cancellable children queue themselves on *queue. Returns whether this call
 * fired it. */
static int fire_one(weft_ctx *ctx, int err, int cause, weft_ctx **queue)
{
	/* For ThreadSanitizer: what the canceller did happens before whatever
	 * sees the error (weft_ctx_err acquires). */
	weft__race_release(&ctx->cs);
	return weft__cancel_fire(&ctx->cs, err, cause, queue);
}

/* Close ctx's done channel, if made, once its source has fired. */
static void close_done(weft_ctx *ctx)
{
	weft__spin_lock(&ctx->cs.lock);
	ctx->close_passed = 1; /* a channel made from now on is made closed */
	weft_chan *done = ctx->done_closed ? NULL : ctx->done;
	if (done)
		ctx->done_closed = 1; /* else the maker of the channel closes it */
	weft__spin_unlock(&ctx->cs.lock);
	if (done)
		weft_chan_close(done);
}

/* Wait until c's canceller (another thread) is through c's subtree: Go's
 * cancel holds c.mu across its children's cancels, so a cancel that finds c
 * cancelled returns only once they are. Only weft_ctx_cancel waits: a timer
 * callback spinning on g0 could hold off the very goroutine it waits for
 * (one that yields in here). The waits go down the tree only (a canceller
 * waits for nodes below one it reached, fired by others, which never reach
 * back up), so they cannot form a cycle. */
static void wait_settled(weft_ctx *c)
{
	while (!__atomic_load_n(&c->settled, __ATOMIC_ACQUIRE))
		weft_yield(); /* sched_yield() on a foreign thread or g0 */
}

/*
 * Cancel ctx and its descendants, as loops over a queue of the children
 * still to cancel: a recursion would be as deep as the tree, and a chain of
 * a few thousand contexts overflowed the canceller's stack. First every
 * source fires, parents before children; then the done channels close in
 * the reverse order, so that whoever sees a done channel closed finds the
 * whole subtree below it cancelled. A queued child stays alive (its hook is
 * still firing, so its last release waits) until its done channel is. Each
 * node this cancel fired is then settled; with wait, nodes that another
 * canceller fired are waited for (wait_settled).
 */
static void cancel(weft_ctx *ctx, int err, int cause, int wait)
{
	weft_ctx *queue = NULL, *fired = NULL;
	int root = fire_one(ctx, err, cause, &queue);
	while (queue) {
		weft_ctx *c = queue;
		queue = c->cancel_next;
		c->cancel_fired = (uint8_t)fire_one(c, c->cancel_err, c->cancel_cause, &queue);
		c->cancel_next = fired;
		fired = c;
	}
	while (fired) {
		weft_ctx *c = fired;
		fired = c->cancel_next;
		if (c->cancel_fired) {
			close_done(c);
			__atomic_store_n(&c->settled, 1, __ATOMIC_RELEASE);
		} else if (wait) {
			wait_settled(c); /* its own canceller is on it */
		}
		weft__hook_done(&c->parent_hook); /* our last touch of c */
	}
	if (root) {
		close_done(ctx);
		__atomic_store_n(&ctx->settled, 1, __ATOMIC_RELEASE);
	} else if (wait) {
		wait_settled(ctx);
	}
}

/* The cancellable node whose source cs is. */
static weft_ctx *node_of(struct weft__cancel *cs)
{
	return (weft_ctx *)((char *)cs - offsetof(weft_ctx, cs));
}

/* cs's error; once there is one, only after its canceller is through the
 * subtree (wait_settled), as Go's Err() takes the lock that cancel holds
 * across the children's: whoever sees a context cancelled sees every
 * descendant cancelled and their weft_ctx_after_func functions started. */
static int settled_err(struct weft__cancel *cs)
{
	int err = cs ? weft__cancel_err(cs) : 0;
	if (err)
		wait_settled(node_of(cs));
	return err;
}

/* The hook of a child on its ancestor's source: the ancestor fired. The
 * child queues itself on its canceller's queue (arg). */
static int parent_fired(struct weft__hook *h, int err, void *arg)
{
	weft_ctx *ctx = (weft_ctx *)((char *)h - offsetof(weft_ctx, parent_hook));
	weft_ctx **queue = arg;
	ctx->cancel_err = err;
	ctx->cancel_cause = ctx->parent_cs->cause;
	ctx->cancel_next = *queue;
	*queue = ctx;
	return 1;
}

static void deadline_fired(struct weft__timer *t)
{
	weft_ctx *ctx = t->arg;
	cancel(ctx, ETIMEDOUT, ctx->deadline_cause, 0); /* a timer callback (g0, sysmon): never waits */
	__atomic_store_n(&ctx->timer_done, 1, __ATOMIC_RELEASE); /* last touch */
}

static int64_t deadline_of(weft_ctx *ctx)
{
	while (ctx && ctx->kind == CTX_VALUE)
		ctx = ctx->parent;
	return ctx && ctx->kind == CTX_CANCEL ? ctx->deadline : INT64_MAX;
}

/* Every creating call checks its out pointer before it does anything (the
 * ones that build on new_node pass it a pointer of their own). */
static void need_out(weft_ctx **out)
{
	if (!out)
		weft__fatal("context: NULL out pointer");
}

static int new_node(weft_ctx *parent, int kind, weft_ctx **out)
{
	need_out(out);
	if (!parent)
		weft__fatal("context: NULL parent (use weft_ctx_background())");
	weft_ctx *ctx = weft__calloc(1, sizeof *ctx);
	if (!ctx)
		return ENOMEM;
	__atomic_add_fetch(&weft__live_ctxs, 1, __ATOMIC_RELAXED);
	ctx->kind = (uint8_t)kind;
	ctx->refs = 1;
	ctx->parent = weft_ctx_retain(parent);
	ctx->deadline = INT64_MAX;
	*out = ctx;
	return 0;
}

/* A cancellable child of parent, cancelled at deadline (INT64_MAX: none). */
static int with_cancel(weft_ctx *parent, int64_t deadline, int cause, weft_ctx **out)
{
	need_out(out);
	weft_ctx *ctx;
	int r = new_node(parent, CTX_CANCEL, &ctx);
	if (r)
		return r;
	int64_t pd = deadline_of(parent);
	ctx->deadline = pd < deadline ? pd : deadline;
	ctx->deadline_cause = cause;
	ctx->parent_hook.fn = parent_fired;
	ctx->parent_cs = weft__ctx_source(parent);
	int err = 0;
	if (ctx->parent_cs) {
		err = weft__hook_add(ctx->parent_cs, &ctx->parent_hook);
		if (err) {
			/* Born cancelled: the parent's error and cause, once
			 * its canceller is through its other children (Go's
			 * propagateCancel waits on the parent's lock). */
			struct weft__cancel *pcs = ctx->parent_cs;
			ctx->parent_cs = NULL;
			settled_err(pcs);
			cancel(ctx, err, pcs->cause, 0);
		}
	}
	if (!err && deadline < pd) {
		if (deadline <= weft_now()) {
			cancel(ctx, ETIMEDOUT, cause, 0);
		} else {
			ctx->tm.fn = deadline_fired;
			ctx->tm.arg = ctx;
			ctx->tm.deletable = 1;
			ctx->timer_armed = 1;
			if (weft__timer_try_add_here(&ctx->tm, deadline)) {
				ctx->timer_armed = 0;
				weft_ctx_release(ctx); /* unhooks it from parent */
				return ENOMEM;
			}
		}
	}
	*out = ctx;
	return 0;
}

int weft_ctx_with_cancel(weft_ctx *parent, weft_ctx **out)
{
	return with_cancel(parent, INT64_MAX, 0, out);
}

/* A caller's deadline: INT64_MAX means "none" inside, so a deadline there
 * is kept just short of it, as weft_ctx_with_timeout's saturated one is. */
static int64_t user_deadline(int64_t d)
{
	return d > WEFT__TIMER_FAR ? WEFT__TIMER_FAR : d;
}

int weft_ctx_with_deadline(weft_ctx *parent, int64_t deadline_ns, weft_ctx **out)
{
	return with_cancel(parent, user_deadline(deadline_ns), 0, out);
}

int weft_ctx_with_deadline_cause(weft_ctx *parent, int64_t deadline_ns, int cause, weft_ctx **out)
{
	return with_cancel(parent, user_deadline(deadline_ns), cause, out);
}

int weft_ctx_with_timeout_cause(weft_ctx *parent, int64_t timeout_ns, int cause, weft_ctx **out)
{
	/* Saturated short of INT64_MAX, which would mean no deadline. */
	int64_t d = weft__timer_when(weft_now(), timeout_ns);
	return with_cancel(parent, d, cause, out);
}

int weft_ctx_with_timeout(weft_ctx *parent, int64_t timeout_ns, weft_ctx **out)
{
	return weft_ctx_with_timeout_cause(parent, timeout_ns, 0, out);
}

int weft_ctx_without_cancel(weft_ctx *parent, weft_ctx **out)
{
	return new_node(parent, CTX_DETACHED, out);
}

int weft_ctx_with_value(weft_ctx *parent, const void *key, void *val, weft_ctx **out)
{
	need_out(out);
	weft_ctx *ctx;
	int r = new_node(parent, CTX_VALUE, &ctx);
	if (r)
		return r;
	ctx->key = key;
	ctx->val = val;
	*out = ctx;
	return 0;
}

void weft_ctx_cancel_cause(weft_ctx *ctx, int cause)
{
	if (!ctx || ctx->kind != CTX_CANCEL)
		weft__fatal("context: cancel of a context that is not cancellable");
	cancel(ctx, ECANCELED, cause, 1);
}

void weft_ctx_cancel(weft_ctx *ctx)
{
	weft_ctx_cancel_cause(ctx, 0);
}

int weft_ctx_err(weft_ctx *ctx)
{
	struct weft__cancel *cs = weft__ctx_source(ctx);
	int err = settled_err(cs);
	if (err)
		weft__race_acquire(cs);
	return err;
}

int weft_ctx_cause(weft_ctx *ctx)
{
	struct weft__cancel *cs = weft__ctx_source(ctx);
	if (!settled_err(cs))
		return 0;
	return cs->cause; /* written before err was published */
}

int weft_ctx_deadline(weft_ctx *ctx, int64_t *deadline_ns)
{
	int64_t d = deadline_of(ctx);
	if (d == INT64_MAX)
		return 0;
	if (deadline_ns)
		*deadline_ns = d;
	return 1;
}

void *weft_ctx_value(weft_ctx *ctx, const void *key)
{
	for (; ctx; ctx = ctx->parent)
		if (ctx->kind == CTX_VALUE && ctx->key == key)
			return ctx->val;
	return NULL;
}

weft_chan *weft_ctx_done(weft_ctx *ctx)
{
	ctx = cancel_node(ctx);
	if (!ctx)
		return NULL;
	weft_chan *done = __atomic_load_n(&ctx->done, __ATOMIC_ACQUIRE);
	if (done)
		return done;
	weft_chan *c;
	if (weft_chan_make(&c, 0, 0) != 0)
		return NULL;
	weft__spin_lock(&ctx->cs.lock);
	int close_it = 0;
	if (ctx->done) {
		done = ctx->done; /* another caller won */
	} else {
		__atomic_store_n(&ctx->done, c, __ATOMIC_RELEASE);
		done = c;
		c = NULL;
		/* Made after the canceller's close_done (which comes after
		 * the subtree's): nobody else will close it. */
		if (ctx->close_passed && !ctx->done_closed) {
			ctx->done_closed = 1;
			close_it = 1;
		}
	}
	weft__spin_unlock(&ctx->cs.lock);
	if (c)
		weft_chan_release(c);
	if (close_it)
		weft_chan_close(done);
	return done;
}

void weft_ctx_release(weft_ctx *ctx)
{
	while (ctx && ctx->kind != CTX_BACKGROUND) {
		if (__atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) != 0)
			return;
		weft_ctx *parent = ctx->parent;
		if (ctx->kind == CTX_CANCEL) {
			/* The last release cancels (context.h): only a holder of
			 * the done channel (retained) can still see it. */
			if (ctx->done && !weft__cancel_err(&ctx->cs))
				cancel(ctx, ECANCELED, 0, 0);
			if (ctx->timer_armed)
				weft__timer_stop_wait(&ctx->tm, &ctx->timer_done);
			if (ctx->parent_cs)
				weft__hook_del(ctx->parent_cs, &ctx->parent_hook);
			if (ctx->done)
				weft_chan_release(ctx->done);
		}
		weft__free(ctx);
		__atomic_sub_fetch(&weft__live_ctxs, 1, __ATOMIC_RELAXED);
		ctx = parent; /* drop our reference on it (a loop, not recursion) */
	}
}
