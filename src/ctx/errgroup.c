/* SPDX-License-Identifier: MIT */
/*
 * errgroup.c - weft_errgroup, Go's golang.org/x/sync/errgroup.
 *
 * A WaitGroup counts the tasks; the first nonzero result wins a CAS on err_
 * and cancels the group's context with that error as its cause; a weighted
 * semaphore of capacity `limit` (when set) bounds how many run at once. Each
 * task's group and fn travel to its goroutine in the G's two extra words
 * (weft__go_x), so a start allocates nothing but the goroutine.
 */
#include "weft.h"

#include <errno.h>
#include <string.h>

#include "fatal.h"
#include "sched.h"
#include "sync_impl.h"

int weft_errgroup_init(weft_errgroup *g, weft_ctx *parent, weft_ctx **ctx)
{
	memset(g, 0, sizeof *g);
	int r = weft_ctx_with_cancel(parent ? parent : weft_ctx_background(), &g->ctx_);
	if (r)
		return r;
	if (ctx)
		*ctx = g->ctx_;
	return 0;
}

void weft_errgroup_set_limit(weft_errgroup *g, int n)
{
	/* As Go's SetLimit: a task started under the old limit would give
	 * back a token the new semaphore never lent (or none it took). */
	int32_t active = weft__wg_count(&g->wg_);
	if (active != 0)
		weft__fatal("errgroup: modify limit while %d goroutines in the group are still active",
		            (int)active);
	weft_sem_init(&g->limit_, n > 0 ? n : 0);
}

static void fail(weft_errgroup *g, int err)
{
	int zero = 0;
	if (__atomic_compare_exchange_n(&g->err_, &zero, err, 0, __ATOMIC_ACQ_REL,
	                                __ATOMIC_RELAXED))
		weft_ctx_cancel_cause(g->ctx_, err);
}

/* A task's goroutine: fn(ctx, arg), the group and fn riding in the G's
 * extra words (weft__go_x). */
static void run(void *arg)
{
	void *xfn, *xg;
	weft__self_x(&xfn, &xg);
	weft_errgroup *g = xg;
	int r = ((weft_errgroup_fn)xfn)(g->ctx_, arg);
	if (r)
		fail(g, r);
	if (g->limit_.size_)
		weft_sem_release(&g->limit_, 1);
	weft_wg_done(&g->wg_);
}

/* Start fn, a slot of the limit already held when held: given back if fn
 * does not start. */
static int start(weft_errgroup *g, weft_errgroup_fn fn, void *arg, bool held)
{
	int r = EINVAL;
	if (fn) {
		weft_wg_add(&g->wg_, 1);
		r = weft__go_x(run, arg, (void *)fn, g, __FILE__, __LINE__);
		if (!r)
			return 0;
		weft_wg_done(&g->wg_);
	}
	if (held)
		weft_sem_release(&g->limit_, 1);
	fail(g, r);
	return r;
}

static void check_init(const weft_errgroup *g)
{
	if (!g->ctx_)
		weft__fatal("errgroup: go on a group that is not initialised");
}

/* A NULL fn fails at once: it takes no slot, so it never waits for one. */
int weft_errgroup_go(weft_errgroup *g, weft_errgroup_fn fn, void *arg)
{
	check_init(g);
	bool held = fn && g->limit_.size_;
	if (held)
		weft_sem_acquire(&g->limit_, 1);
	return start(g, fn, arg, held);
}

int weft_errgroup_trygo(weft_errgroup *g, weft_errgroup_fn fn, void *arg)
{
	check_init(g);
	bool held = fn && g->limit_.size_;
	if (held && weft_sem_tryacquire(&g->limit_, 1) != 0)
		return EAGAIN;
	return start(g, fn, arg, held);
}

int weft_errgroup_wait(weft_errgroup *g)
{
	if (!g->ctx_)
		weft__fatal("errgroup: wait on a group that is not initialised");
	weft_wg_wait(&g->wg_);
	int err = __atomic_load_n(&g->err_, __ATOMIC_ACQUIRE);
	weft_ctx_cancel_cause(g->ctx_, err);
	weft_ctx_release(g->ctx_);
	g->ctx_ = NULL;
	return err;
}
