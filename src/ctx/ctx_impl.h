/* SPDX-License-Identifier: MIT */
/*
 * ctx_impl.h - the context record, shared by context.c, the _ctx forms of
 * the blocking calls (ctx_wait.c) and errgroup.c.
 */
#ifndef WEFT_CTX_IMPL_H
#define WEFT_CTX_IMPL_H

#include <stdint.h>

#include "weft.h"

#include "park.h"
#include "timer.h"

/* CTX_DETACHED (weft_ctx_without_cancel): its parent's values, but no
 * cancellation and no deadline: the walks up the tree for those stop at it. */
enum { CTX_BACKGROUND, CTX_CANCEL, CTX_VALUE, CTX_DETACHED };

struct weft_ctx {
	int64_t refs;        /* atomic; unused by the background */
	uint8_t kind;        /* CTX_*; fixed */
	uint8_t timer_armed; /* tm was added to a heap; fixed after creation */
	uint8_t done_closed; /* done has been (or is being) closed; under cs.lock */
	uint8_t close_passed; /* the firer's close_done has run; under cs.lock */
	weft_ctx *parent;    /* holds a reference; fixed */
	/* CTX_VALUE */
	const void *key;
	void *val;
	/* CTX_CANCEL */
	struct weft__cancel cs;
	struct weft__cancel *parent_cs; /* where parent_hook is, or NULL; fixed */
	struct weft__hook parent_hook;
	int64_t deadline; /* effective (the parent's if earlier); INT64_MAX: none */
	int deadline_cause;
	weft_chan *done; /* made on demand; written under cs.lock, read atomically */
	struct weft__timer tm;
	uint32_t timer_done; /* the deadline callback has finished */
	/* While an ancestor's cancellation has it queued (context.c): */
	weft_ctx *cancel_next;
	int cancel_err, cancel_cause;
	uint8_t cancel_fired;
	uint32_t settled; /* atomic: whoever fired cs has fired the whole subtree
	                   * below and closed its done channels */
};

/* The cancellation source that governs ctx (the nearest cancellable node,
 * ctx included), or NULL when ctx can never be cancelled. */
struct weft__cancel *weft__ctx_source(weft_ctx *ctx);

#endif
