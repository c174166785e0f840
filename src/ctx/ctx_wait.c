/* SPDX-License-Identifier: MIT */
/*
 * ctx_wait.c - the forms of the blocking calls that take a context.
 *
 * The sync waits (WaitGroup, Cond, Semaphore), the sleep and weft_ctx_wait
 * hook their stack waiter onto the context's cancellation source: no
 * allocation, and the hook claims and wakes the waiter with the context's
 * error. The channel calls and select add a receive from the context's done
 * channel to the select they run (Go's own idiom), after a try that needs no
 * channel at all; the done channel is made once per context.
 */
#include "weft.h"

#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "ctx_impl.h"
#include "park.h"
#include "sched.h"
#include "sync_impl.h"

int weft_ctx_wait(weft_ctx *ctx)
{
	struct weft__cancel *cs = weft__ctx_source(ctx);
	if (!cs) {
		/* Never cancelled: wait forever, as <-ctx.Done() on a nil channel
		 * (the deadlock detector sees it). */
		weft__block_forever("context wait (never cancelled)", INT64_MAX);
	}
	return weft__wait_alone(INT64_MAX, cs, "context wait");
}

int weft_sleep_ctx(weft_ctx *ctx, int64_t duration_ns)
{
	struct weft__cancel *cs = weft__ctx_source(ctx);
	int err = cs ? weft_ctx_err(ctx) : 0;
	if (err)
		return err;
	if (!cs || duration_ns <= 0) {
		weft_sleep(duration_ns);
		return 0;
	}
	err = weft__wait_alone(weft__timer_when(weft_now(), duration_ns), cs, "sleep");
	return err == ETIMEDOUT && !weft_ctx_err(ctx) ? 0 : weft_ctx_err(ctx);
}

int weft_wg_wait_ctx(weft_ctx *ctx, weft_wg *wg)
{
	return weft__wg_wait(wg, INT64_MAX, weft__ctx_source(ctx));
}

int weft_cond_wait_ctx(weft_ctx *ctx, weft_cond *c, weft_mutex *m)
{
	return weft__cond_wait(c, m, INT64_MAX, weft__ctx_source(ctx));
}

int weft_sem_acquire_ctx(weft_ctx *ctx, weft_sem *s, int64_t n)
{
	return weft__sem_acquire(s, n, INT64_MAX, weft__ctx_source(ctx));
}

/* ---------------------------------------------------------------- channels */

/* Run cases[0..n) plus a receive from ctx's done channel (cases has room
 * for it): the select's result, or ctx's error with *chosen = -1. */
static int select_done(weft_ctx *ctx, weft_case *cases, int n, int *chosen)
{
	weft_chan *done = weft_ctx_done(ctx);
	if (!done)
		return ENOMEM;
	cases[n] = WEFT_RECV_CASE(done, NULL);
	int k = -1;
	int r = weft_select(cases, n + 1, &k);
	if (r == 0 || r == EPIPE) {
		if (k == n) {
			*chosen = -1;
			return weft_ctx_err(ctx);
		}
		*chosen = k;
	}
	return r;
}

int weft_chan_send_ctx(weft_ctx *ctx, weft_chan *c, const void *elem)
{
	if (!weft__ctx_source(ctx))
		return weft_chan_send(c, elem);
	int r = weft_chan_trysend(c, elem);
	if (r != EAGAIN)
		return r;
	if ((r = weft_ctx_err(ctx)) != 0)
		return r;
	weft_case cases[2] = {WEFT_SEND_CASE(c, elem)};
	int k;
	return select_done(ctx, cases, 1, &k);
}

int weft_chan_recv_ctx(weft_ctx *ctx, weft_chan *c, void *out)
{
	if (!weft__ctx_source(ctx))
		return weft_chan_recv(c, out);
	int r = weft_chan_tryrecv(c, out);
	if (r != EAGAIN)
		return r;
	if ((r = weft_ctx_err(ctx)) != 0)
		return r;
	weft_case cases[2] = {WEFT_RECV_CASE(c, out)};
	int k;
	return select_done(ctx, cases, 1, &k);
}

int weft_select_ctx(weft_ctx *ctx, const weft_case *cases, int n, int *chosen)
{
	if (!weft__ctx_source(ctx))
		return weft_select(cases, n, chosen);
	if (n < 0 || (n > 0 && !cases) || !chosen)
		return EINVAL;
	int r = weft_select_try(cases, n, chosen);
	if (r != EAGAIN)
		return r;
	if ((r = weft_ctx_err(ctx)) != 0) {
		*chosen = -1;
		return r;
	}
	weft_case local[16];
	weft_case *all = n < 16 ? local : weft__alloc((size_t)(n + 1) * sizeof *all);
	if (!all)
		return ENOMEM;
	for (int i = 0; i < n; i++)
		all[i] = cases[i];
	r = select_done(ctx, all, n, chosen);
	if (all != local)
		weft__free(all);
	return r;
}
