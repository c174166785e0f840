/* SPDX-License-Identifier: MIT */
/*
 * ctx_after.c - weft_ctx_after_func, Go's context.AfterFunc: start fn(arg) in
 * a goroutine of its own once a context is done.
 *
 * A registration is a hook on the context's cancellation source plus a func
 * timer (time.c) made stopped with it. The hook runs once, when the source
 * fires (with no lock held, on whatever thread cancels), and starts the
 * timer's goroutine there and then, as Go's cancel does: once
 * weft_ctx_cancel() has returned, fn has been started. Registering on a
 * context that is already done starts it at once. If weft_go() fails for want
 * of memory, the timer is armed to retry, as a firing func timer is, so a
 * cancellation never loses the call; the hook allocates nothing but that
 * arming's heap slot when the heap must grow (with no memory for it either:
 * a fatal error, "out of memory adding a timer").
 *
 * Stop answers "was fn kept from starting?": weft__hook_del says whether the
 * hook was removed before it ran (then nothing was started: kept). Otherwise
 * the hook has run (weft__hook_del waits for it to return), and the timer's
 * own stop answers: it is armed only while a start that failed waits to be
 * retried (kept, if stopped then). Only the first stop does this; later
 * ones return false.
 *
 * The registration holds a reference on the context, so the source it hooks
 * stays alive; weft_ctx_after_free drops it.
 */
#include "weft.h"

#include <errno.h>
#include <stddef.h>

#include "alloc.h"
#include "chan_impl.h" /* weft__after_func_stopped */
#include "ctx_impl.h"
#include "park.h"
#include "sanitizer.h"

struct weft_ctx_after {
	struct weft__hook hook;   /* on src from registration until fired or stopped */
	struct weft__cancel *src; /* NULL: the context can never be done */
	weft_ctx *ctx;            /* our reference: src lives as long as it */
	weft_timer *t;            /* a func timer holding fn and arg, made stopped */
	uint8_t hooked;           /* hook was added (fixed after registration) */
	uint32_t stopped;         /* atomic: the first stop has begun */
};

/* The context is done: start fn now (or have the timer retry). */
static void start(struct weft_ctx_after *a)
{
	/* For ThreadSanitizer: the registration happens before fn (the
	 * canceller's past does too: weft_go releases on this thread). */
	weft__race_acquire(a);
	weft__after_func_start(a->t);
}

static int after_fired(struct weft__hook *h, int err, void *arg)
{
	(void)err;
	(void)arg;
	start((struct weft_ctx_after *)((char *)h - offsetof(struct weft_ctx_after, hook)));
	return 0;
}

int weft_ctx_after_func(weft_ctx *ctx, weft_fn fn, void *arg, weft_ctx_after **out)
{
	if (!ctx || !fn || !out)
		return EINVAL;
	struct weft_ctx_after *a = weft__calloc(1, sizeof *a);
	if (!a)
		return ENOMEM;
	int err = weft__after_func_stopped(&a->t, fn, arg);
	if (err) {
		weft__free(a);
		return err;
	}
	a->ctx = weft_ctx_retain(ctx);
	a->src = weft__ctx_source(ctx);
	a->hook.fn = after_fired;
	weft__race_release(a); /* the caller's past happens before fn */
	if (a->src) {
		if (weft__hook_add(a->src, &a->hook) == 0)
			a->hooked = 1;
		else
			start(a); /* done already: at once */
	}
	*out = a;
	return 0;
}

bool weft_ctx_after_stop(weft_ctx_after *a)
{
	if (!a || __atomic_exchange_n(&a->stopped, 1, __ATOMIC_ACQ_REL))
		return false;
	if (!a->src)
		return true; /* could never fire */
	if (a->hooked && weft__hook_del(a->src, &a->hook))
		return true; /* removed before the context was done */
	/* The hook has run (or the context was done at registration): fn was
	 * started, unless a failed start still waits on the timer to retry. */
	return weft_timer_stop(a->t);
}

void weft_ctx_after_free(weft_ctx_after *a)
{
	if (!a)
		return;
	weft_ctx_after_stop(a);
	weft_timer_free(a->t); /* waits out a firing in progress */
	weft_ctx_release(a->ctx);
	weft__free(a);
}
