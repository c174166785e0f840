/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c - the Pipeline3 case (bench/go/pipeline.go's benchPipeline3):
 * the ns per item of n items through a weft_pipeline of three stages of two
 * workers each.
 *
 * The work is Go's pipeline idiom (the "Pipelines and cancellation"
 * article): a generator goroutine sends 0..n-1 on a channel; each stage is 2
 * goroutines ranging over its input and sending f(v) to one output channel,
 * which the last of them closes; the stages are +1, *2 and ^0x5555; every
 * channel, the generator's included, has a buffer of 128; no stage keeps
 * order; every send also watches the pipeline's context. Main receives from
 * the output channel until it is closed (Go's `for v := range out`).
 *
 * The stages keep weft_pipeline's defaults, batch included: a worker takes
 * up to 16 items that are already waiting in one weft_chan_tryrecv_n and
 * sends its outputs likewise, because the functions are cheap (automatic
 * batching; a function over 5 us an item goes one at a time). Go's idiom
 * moves one item per channel operation; that difference is weft's, and it is
 * what the comparison shows (at 2 Ps most of the per-item cost is the
 * channels' cache lines crossing between the cores).
 *
 * Timed: from before weft_pipeline_start() (which starts the goroutines, as
 * Go's stage calls do) until the n-th item is received. Building the
 * pipeline before, and waiting for it and freeing it after, are not timed.
 * The count and the sum of the items received are checked after the clock
 * stops against the sequential result, so a pipeline that loses or repeats
 * items cannot pass for a fast one.
 */
#include "bench.h"

#include <inttypes.h>
#include <string.h>

#define PIPE_WORKERS 2  /* goroutines per stage */
#define PIPE_BUFFER 128 /* capacity of every channel */
#define PIPE_XOR 0x5555

static int gen_upto(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	int64_t n = *(const int64_t *)arg;
	for (int64_t i = 0; i < n; i++) {
		int err = weft_pipeline_emit(em, &i);
		if (err != 0)
			return err;
	}
	return 0;
}

static int inc(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	*(int64_t *)out = *(const int64_t *)in + 1;
	return 0;
}

static int dbl(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	*(int64_t *)out = *(const int64_t *)in * 2;
	return 0;
}

static int flip(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	*(int64_t *)out = *(const int64_t *)in ^ PIPE_XOR;
	return 0;
}

int64_t bench_pipeline3(int64_t n)
{
	weft_pipeline_source src = {
		.gen = gen_upto, .arg = &n, .item_size = sizeof(int64_t), .buffer = PIPE_BUFFER};
	weft_pipeline_map_fn fns[3] = {inc, dbl, flip};
	const char *names[3] = {"inc", "dbl", "xor"};
	weft_pipeline *p;
	weft_chan *out;
	int64_t v, got = 0, sum = 0, start, d = 0, want = 0;
	int err;

	if ((err = weft_pipeline_new(&p, NULL, &src)) != 0)
		bench_fatal("Pipeline3: weft_pipeline_new: %s", strerror(err));
	for (int i = 0; i < 3; i++) {
		weft_pipeline_stage st = {.map = fns[i],
		                          .out_size = sizeof(int64_t),
		                          .workers = PIPE_WORKERS,
		                          .buffer = PIPE_BUFFER,
		                          .name = names[i]};
		if ((err = weft_pipeline_add(p, &st)) != 0)
			bench_fatal("Pipeline3: weft_pipeline_add: %s", strerror(err));
	}

	start = weft_now();
	if ((err = weft_pipeline_start(p, &out)) != 0)
		bench_fatal("Pipeline3: weft_pipeline_start: %s", strerror(err));
	while (weft_chan_recv(out, &v) == 0) {
		sum += v;
		if (++got == n)
			d = weft_now() - start;
	}
	if ((err = weft_pipeline_wait(p)) != 0)
		bench_fatal("Pipeline3: weft_pipeline_wait: %s", strerror(err));
	weft_pipeline_free(p);

	for (int64_t i = 0; i < n; i++)
		want += ((i + 1) * 2) ^ PIPE_XOR;
	if (got != n || sum != want)
		bench_fatal("Pipeline3: received %" PRId64 " items summing to %" PRId64
		            ", want %" PRId64 " summing to %" PRId64,
		            got, sum, n, want);
	return d;
}
