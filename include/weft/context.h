/* SPDX-License-Identifier: MIT */
/*
 * weft/context.h - Go's context package, and the forms of every blocking weft
 * call that take a context; also errgroup, which builds on both.
 *
 * A context carries a cancellation signal, maybe a deadline, and values, down
 * a tree: cancelling a context cancels all of its descendants, once. Each
 * context is reference counted: a creating call hands the caller one
 * reference, weft_ctx_release() drops it, and a child holds one on its
 * parent, so a tree stays valid as long as any of it is in use. Releasing the
 * last reference to a cancellable context cancels it (detaching it from its
 * parent and stopping its timer): nothing leaks when you forget a cancel, as
 * Go's vet check would otherwise demand.
 *
 * Errors a context reports, as weft_ctx_err() and the _ctx calls return them:
 *   ECANCELED  it, or an ancestor, was cancelled (Go's context.Canceled)
 *   ETIMEDOUT  its deadline, or an ancestor's, passed (DeadlineExceeded)
 * Everything here may be called from any thread, goroutine or not. The
 * creating calls take a parent that is not NULL (weft_ctx_background() at
 * the root) and an out that is not NULL: either NULL is a fatal error.
 */
#ifndef WEFT_CONTEXT_H
#define WEFT_CONTEXT_H

#include <stdint.h>

#include "common.h"
#include "chan.h"
#include "sync.h"

WEFT_BEGIN_DECLS

typedef struct weft_ctx weft_ctx;

/*
 * weft_ctx_background - the root context: never cancelled, no deadline, no
 * values (Go's context.Background()). Retain and release are no-ops on it.
 * Blocks: no.
 */
WEFT_API weft_ctx *weft_ctx_background(void);

/*
 * weft_ctx_with_cancel - a child of parent that weft_ctx_cancel() cancels.
 * *out gets a new context holding one reference. Returns 0 or ENOMEM (*out
 * untouched). A child of an already cancelled parent starts cancelled.
 * Blocks: no.
 */
WEFT_API int weft_ctx_with_cancel(weft_ctx *parent, weft_ctx **out);

/*
 * weft_ctx_with_deadline - weft_ctx_with_cancel() that also cancels itself
 * with ETIMEDOUT at deadline_ns (weft_now()'s clock). A parent's earlier
 * deadline still applies. Returns 0 or ENOMEM. Blocks: no.
 */
WEFT_API int weft_ctx_with_deadline(weft_ctx *parent, int64_t deadline_ns, weft_ctx **out);

/* weft_ctx_with_timeout - weft_ctx_with_deadline(parent, weft_now() +
 * timeout_ns, out). */
WEFT_API int weft_ctx_with_timeout(weft_ctx *parent, int64_t timeout_ns, weft_ctx **out);

/*
 * weft_ctx_with_deadline_cause - weft_ctx_with_deadline() whose expiry
 * records cause (any nonzero error number) as its weft_ctx_cause(); its
 * weft_ctx_err() is still ETIMEDOUT (Go's WithDeadlineCause).
 */
WEFT_API int weft_ctx_with_deadline_cause(weft_ctx *parent, int64_t deadline_ns, int cause,
					  weft_ctx **out);

/* weft_ctx_with_timeout_cause - weft_ctx_with_deadline_cause(parent,
 * weft_now() + timeout_ns, cause, out) (Go's WithTimeoutCause). */
WEFT_API int weft_ctx_with_timeout_cause(weft_ctx *parent, int64_t timeout_ns, int cause,
					 weft_ctx **out);

/*
 * weft_ctx_without_cancel - a child of parent that has parent's values but is
 * never cancelled and has no deadline, whatever happens to parent (Go's
 * WithoutCancel): for work that must finish after the request that started it
 * was cancelled, such as writing an audit record. Its weft_ctx_err() stays 0,
 * weft_ctx_done() is NULL, and its descendants are cancelled only by their
 * own cancels and deadlines. Cancelling it is the fatal error of
 * weft_ctx_cancel(). It holds a reference on parent, for the values. Returns
 * 0 or ENOMEM (*out untouched). Blocks: no.
 */
WEFT_API int weft_ctx_without_cancel(weft_ctx *parent, weft_ctx **out);

/*
 * weft_ctx_with_value - a child of parent that carries val under key, which
 * is compared by address (use the address of a static object of your own, as
 * Go uses an unexported type). weft_ctx_value() finds the nearest. The value
 * is not copied nor freed. Returns 0 or ENOMEM. Blocks: no.
 */
WEFT_API int weft_ctx_with_value(weft_ctx *parent, const void *key, void *val, weft_ctx **out);

/*
 * weft_ctx_cancel - cancel ctx (made by a with_cancel/deadline/timeout call)
 * and all its descendants: their done channels close, their _ctx calls in
 * progress return ECANCELED. Idempotent: later calls do nothing. Cancelling
 * another kind of context is a fatal error ("context: cancel of a context
 * that is not cancellable"). Does not drop the caller's reference.
 * Blocks: no (wakes every waiter before returning). Thread-safety: any thread.
 */
WEFT_API void weft_ctx_cancel(weft_ctx *ctx);

/* weft_ctx_cancel_cause - weft_ctx_cancel() recording cause (a nonzero error
 * number; 0 means ECANCELED) as weft_ctx_cause() (Go's WithCancelCause). */
WEFT_API void weft_ctx_cancel_cause(weft_ctx *ctx, int cause);

/* weft_ctx_err - 0 while ctx is live, then ECANCELED or ETIMEDOUT; once it
 * is nonzero, every descendant of ctx is cancelled too (a cancellation in
 * progress on another thread is waited for, as Go's Err() waits on the
 * lock its cancel holds). Blocks: no (but for that). */
WEFT_API int weft_ctx_err(weft_ctx *ctx);

/* weft_ctx_cause - why ctx was cancelled: the cause given to
 * weft_ctx_cancel_cause() or weft_ctx_with_deadline_cause() (the nearest such
 * ancestor's), else weft_ctx_err(). 0 while live. Blocks: no. */
WEFT_API int weft_ctx_cause(weft_ctx *ctx);

/*
 * weft_ctx_done - a channel that is closed when ctx is cancelled, for use in
 * weft_select() (a receive on it returns EPIPE then). NULL for a context that
 * can never be cancelled (the background, and values over it), which a
 * select treats as never ready, as Go does with a nil channel. The channel
 * belongs to ctx: it lives as long as ctx; do not release it. Returns NULL
 * also if the channel cannot be allocated (ENOMEM): use the _ctx calls or
 * weft_ctx_wait() then, which allocate no channel. Blocks: no.
 */
WEFT_API weft_chan *weft_ctx_done(weft_ctx *ctx);

/* weft_ctx_deadline - 1 and *deadline_ns set when ctx has a deadline, else 0.
 * Blocks: no. */
WEFT_API int weft_ctx_deadline(weft_ctx *ctx, int64_t *deadline_ns);

/* weft_ctx_value - the value stored under key by the nearest with_value
 * ancestor (ctx included), or NULL. Blocks: no. */
WEFT_API void *weft_ctx_value(weft_ctx *ctx, const void *key);

/* weft_ctx_wait - wait until ctx is cancelled; returns weft_ctx_err(ctx).
 * Waits forever for one that cannot be. Blocks: yes. */
WEFT_API int weft_ctx_wait(weft_ctx *ctx);

/*
 * weft_ctx_after_func - Go's context.AfterFunc: once ctx is done (cancelled
 * or past its deadline), start fn(arg) in a goroutine of its own; at once if
 * ctx is done already; never if ctx can never be done. *out gets the
 * registration, which holds a reference on ctx until weft_ctx_after_free().
 * The cancellation starts the goroutine (with weft_go()) before
 * weft_ctx_cancel() returns, as Go's does, and so does this call when ctx is
 * done already. Registrations on one context are independent of each other;
 * fn is started once at most. If there is no memory for its goroutine when
 * ctx is done, the start is retried as weft_after_func() does: late, never
 * dropped (the retry's timer needs a slot in a timer heap: with no memory
 * for that either, a fatal error, "out of memory adding a timer").
 * Errors: EINVAL (ctx, fn or out NULL), ENOMEM; *out is untouched on error.
 * Blocks: no. Thread-safety: any thread.
 */
typedef struct weft_ctx_after weft_ctx_after;
WEFT_API int weft_ctx_after_func(weft_ctx *ctx, weft_fn fn, void *arg, weft_ctx_after **out);

/*
 * weft_ctx_after_stop - dissociate fn from the context (Go's stop()). Returns
 * true if this call kept fn from being started; false if fn's goroutine has
 * already been started (it does not wait for fn), or the registration was
 * stopped before. NULL: false. Blocks: no (at most until a cancellation
 * running on another thread has finished with this registration).
 * Thread-safety: any thread, concurrently with a cancellation of the context.
 */
WEFT_API bool weft_ctx_after_stop(weft_ctx_after *a);

/*
 * weft_ctx_after_free - stop a (as weft_ctx_after_stop()), drop its reference
 * on the context and free it; a goroutine fn already runs in is not
 * affected. The last call on a: no other call on it may run concurrently or
 * follow. NULL is ignored. Blocks: as weft_ctx_after_stop().
 */
WEFT_API void weft_ctx_after_free(weft_ctx_after *a);

/* weft_ctx_retain - add a reference to ctx (returned). Blocks: no. */
WEFT_API weft_ctx *weft_ctx_retain(weft_ctx *ctx);
/* weft_ctx_release - drop a reference; the last one cancels ctx if it is
 * cancellable and frees it (then its parent reference is dropped too). NULL
 * is ignored. Blocks: no. */
WEFT_API void weft_ctx_release(weft_ctx *ctx);

/*
 * Context forms of the blocking calls. Each behaves as the plain call, and
 * also returns weft_ctx_err(ctx) (ECANCELED or ETIMEDOUT) as soon as ctx is
 * done, having done nothing (a send sent nothing, an acquire holds nothing).
 * A context already done when the call starts fails it without waiting
 * unless it can complete at once, as Go's select would pick either. The sync
 * waits and the sleep allocate nothing but, with a deadline to wait for, a
 * slot in the P's timer heap when it must grow (out of memory there is a
 * fatal error, as for an _until form); the channel calls and select, when
 * they must wait, use ctx's done channel, made once per context (ENOMEM if
 * that fails, having done nothing).
 */
WEFT_API int weft_chan_send_ctx(weft_ctx *ctx, weft_chan *c, const void *elem);
WEFT_API int weft_chan_recv_ctx(weft_ctx *ctx, weft_chan *c, void *out);
/* weft_select_ctx - weft_select() that also gives up when ctx is done
 * (*chosen is then -1). */
WEFT_API int weft_select_ctx(weft_ctx *ctx, const weft_case *cases, int n, int *chosen);
/* weft_sleep_ctx - sleep for duration_ns: 0 when slept, or ctx's error. */
WEFT_API int weft_sleep_ctx(weft_ctx *ctx, int64_t duration_ns);
WEFT_API int weft_wg_wait_ctx(weft_ctx *ctx, weft_wg *wg);
/* weft_cond_wait_ctx - m is locked again on return, whatever the result. */
WEFT_API int weft_cond_wait_ctx(weft_ctx *ctx, weft_cond *c, weft_mutex *m);
WEFT_API int weft_sem_acquire_ctx(weft_ctx *ctx, weft_sem *s, int64_t n);
/* A lock you can give up on is a weft_sem of capacity 1 (Go's Mutex has no
 * context form either): weft_sem_acquire_ctx(ctx, &s, 1). */

/* ---------------------------------------------------------------- errgroup */

/*
 * weft_errgroup - Go's golang.org/x/sync/errgroup: run tasks in goroutines,
 * wait for them all, keep the first error, and cancel the group's context
 * when a task fails, so the others can stop early. Optionally at most limit
 * tasks run at once. Make one with weft_errgroup_init(); wait with
 * weft_errgroup_wait(), which also frees what init allocated.
 */
typedef struct weft_errgroup {
	/* private */
	weft_wg wg_;
	weft_ctx *ctx_;           /* the group's context (cancelled on error and by wait) */
	int err_;                 /* the first error; atomic */
	int pad_;
	weft_sem limit_;          /* capacity 0: no limit */
} weft_errgroup;

/* A task: returns 0 or an error number; ctx is the group's context (do not
 * release it). */
typedef int (*weft_errgroup_fn)(weft_ctx *ctx, void *arg);

/*
 * weft_errgroup_init - a group whose context is a child of parent (NULL:
 * background), given back in *ctx if ctx is not NULL (borrowed: valid until
 * weft_errgroup_wait returns; retain it to keep it longer). Returns 0 or
 * ENOMEM. Blocks: no.
 */
WEFT_API int weft_errgroup_init(weft_errgroup *g, weft_ctx *parent, weft_ctx **ctx);
/* weft_errgroup_set_limit - at most n tasks run at once (n <= 0: no limit).
 * Only while no task runs (before the first weft_errgroup_go(), say): else
 * a fatal error ("errgroup: modify limit while N goroutines in the group are
 * still active"). */
WEFT_API void weft_errgroup_set_limit(weft_errgroup *g, int n);
/*
 * weft_errgroup_go - run fn(ctx, arg) in a new goroutine. With a limit, waits
 * first until fewer than the limit run. Returns 0, or EINVAL (fn is NULL: at
 * once, without waiting for a slot) or an error from weft_go() (EAGAIN,
 * ENOMEM): then fn is not run, and the error also counts as the group's
 * (cancelling it). Blocks: yes, with a limit.
 */
WEFT_API int weft_errgroup_go(weft_errgroup *g, weft_errgroup_fn fn, void *arg);
/* weft_errgroup_trygo - weft_errgroup_go() that returns EAGAIN instead of
 * waiting for a free slot. */
WEFT_API int weft_errgroup_trygo(weft_errgroup *g, weft_errgroup_fn fn, void *arg);
/*
 * weft_errgroup_wait - wait for every task, cancel the group's context, free
 * it, and return the first error a task returned (0 if none). The group may
 * be initialised again afterwards. Blocks: yes.
 */
WEFT_API int weft_errgroup_wait(weft_errgroup *g);

WEFT_END_DECLS

#endif /* WEFT_CONTEXT_H */
