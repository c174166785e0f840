/* SPDX-License-Identifier: MIT */
/*
 * workpool.c - the PoolSubmit case: n trivial jobs submitted one by one
 * through a weft_workpool of 8 workers with a queue of 1024 (submit waits
 * while it is full), timed from the first submit until all n have completed
 * (weft_workpool_wait). The Go counterpart is benchPoolSubmit in
 * bench/go/workpool.go: a buffered job channel of 1024, 8 worker goroutines
 * ranging over it and a WaitGroup, as the learning material writes it.
 *
 * As in Go, the pool is made and its workers started before the clock
 * starts, and shut down after it stops. The pool is the default one people
 * would use (no results kept, adaptive latency sampling). What Go checks is
 * checked outside the timed span: every job ran exactly once (the pool's
 * metrics: n submitted, n completed, nothing failed).
 */
#include "bench.h"

#include <stdint.h>
#include <string.h>

#define POOL_WORKERS 8
#define POOL_QUEUE 1024

/* The job: Go's returns 2 * id into a per-worker sum; this one returns its
 * argument as its result (a weft job does not know its worker, and a shared
 * atomic sum would be a cost Go does not pay). */
static int trivial(weft_ctx *ctx, void *arg, void **result)
{
	(void)ctx;
	*result = arg;
	return 0;
}

int64_t bench_pool_submit(int64_t n)
{
	weft_workpool_config cfg = {.workers = POOL_WORKERS, .queue_size = POOL_QUEUE};
	weft_workpool *p;
	weft_workpool_metrics m;
	int64_t start, d, i;
	int err;

	err = weft_workpool_new(&p, &cfg);
	if (err)
		bench_fatal("PoolSubmit: weft_workpool_new: %s", strerror(err));

	start = weft_now();
	for (i = 0; i < n; i++) {
		err = weft_workpool_submit(p, trivial, (void *)(intptr_t)i, NULL);
		if (err)
			bench_fatal("PoolSubmit: submit: %s", strerror(err));
	}
	weft_workpool_wait(p);
	d = weft_now() - start;

	err = weft_workpool_shutdown(p, WEFT_WORKPOOL_DRAIN, weft_now() + 10 * 1000 * BENCH_MS);
	if (err)
		bench_fatal("PoolSubmit: shutdown: %s", strerror(err));
	weft_workpool_metrics_get(p, &m);
	if (m.submitted != n || m.completed != n || m.failed + m.timed_out + m.canceled != 0)
		bench_fatal(
			"PoolSubmit: lost or repeated jobs: %lld submitted, %lld completed of %lld",
			(long long)m.submitted, (long long)m.completed, (long long)n);
	weft_workpool_free(p);
	return d;
}
