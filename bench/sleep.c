/* SPDX-License-Identifier: MIT */
/*
 * sleep.c - the Sleep case: timer cost and precision at scale. 10,000
 * goroutines are started and parked at a start gate; once all are parked the
 * gate opens and each sleeps 1 ms ten times. One op is the whole run, from
 * the gate opening until the last goroutine is done (Go's runSleep); the line
 * adds wall_ms and overhead_ms (wall time minus the ideal 10 ms). The case
 * has its own repetition loop and ignores --n and --target, as in Go.
 *
 * The gate is Go's: startCh, a channel of empty elements (Go's chan
 * struct{}), made per repetition before the spawns. Each goroutine parks on a
 * receive from it (`<-startCh`) and main's weft_chan_close() releases them all
 * at once (`close(startCh)`): each receive returns EPIPE, as a receive from a
 * closed channel does in Go. The goroutines borrow main's reference: every
 * receive has returned before its goroutine signals done, and main drops the
 * reference only after waiting for done.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SLEEP_G 10000
#define SLEEP_L 10

struct sleep_state {
	weft_wg ready;    /* each goroutine: done once it is about to park */
	weft_chan *start; /* Go's startCh: closed by main, never sent on */
	weft_wg done;     /* each goroutine: done after its last sleep */
};

static void sleeper(void *p)
{
	struct sleep_state *s = p;
	int i, err;

	weft_wg_done(&s->ready);
	err = weft_chan_recv(s->start, NULL); /* Go: <-startCh */
	if (err != EPIPE)
		bench_fatal("Sleep: <-startCh returned %d, want EPIPE", err);
	for (i = 0; i < SLEEP_L; i++)
		weft_sleep(BENCH_MS);
	weft_wg_done(&s->done);
}

void bench_sleep(const struct bench_case *c)
{
	char extra[128];
	int r, g, err;

	for (r = 0; r < bench_flags.reps; r++) {
		struct sleep_state s = {.ready = WEFT_WG_INIT, .start = NULL, .done = WEFT_WG_INIT};
		int64_t start, d, ideal = SLEEP_L * BENCH_MS;

		weft_wg_add(&s.ready, SLEEP_G);
		weft_wg_add(&s.done, SLEEP_G);
		err = weft_chan_make(&s.start, 0, 0); /* Go: startCh := make(chan struct{}) */
		if (err != 0)
			bench_fatal("Sleep: weft_chan_make: %s", strerror(err));
		for (g = 0; g < SLEEP_G; g++)
			bench_go(sleeper, &s);
		weft_wg_wait(&s.ready);
		weft_sleep(2 * BENCH_MS); /* let all park */
		start = weft_now();
		weft_chan_close(s.start);
		weft_wg_wait(&s.done);
		d = weft_now() - start;
		weft_chan_release(s.start);
		snprintf(extra, sizeof(extra), "\t%.3f wall_ms\t%.3f overhead_ms", (double)d / 1e6,
		         (double)(d - ideal) / 1e6);
		bench_report(c->name, 1, (double)d, extra);
	}
}
