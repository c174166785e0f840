/* SPDX-License-Identifier: MIT */
/*
 * sleep.c - the Sleep case: timer cost and precision at scale. 10,000
 * goroutines are started and parked at a start gate; once all are parked the
 * gate opens and each sleeps 1 ms ten times. One op is the whole run, from
 * the gate opening until the last goroutine is done (Go's runSleep); the line
 * adds wall_ms and overhead_ms (wall time minus the ideal 10 ms). The case
 * has its own repetition loop and ignores --n and --target, as in Go.
 *
 * Go's gate is a channel closed by main. weft has no channels yet, so the gate
 * is a WaitGroup with count 1: the goroutines wait on it and main's single
 * weft_wg_done() releases them all at once, which is the same broadcast.
 */
#include "bench.h"

#include <stdio.h>

#define SLEEP_G 10000
#define SLEEP_L 10

struct sleep_state {
	weft_wg ready; /* each goroutine: done once it is about to park */
	weft_wg gate;  /* count 1; main's done releases everyone */
	weft_wg done;  /* each goroutine: done after its last sleep */
};

static void sleeper(void *p)
{
	struct sleep_state *s = p;
	int i;

	weft_wg_done(&s->ready);
	weft_wg_wait(&s->gate);
	for (i = 0; i < SLEEP_L; i++)
		weft_sleep(BENCH_MS);
	weft_wg_done(&s->done);
}

void bench_sleep(const struct bench_case *c)
{
	char extra[128];
	int r, g;

	for (r = 0; r < bench_flags.reps; r++) {
		struct sleep_state s = {WEFT_WG_INIT, WEFT_WG_INIT, WEFT_WG_INIT};
		int64_t start, d, ideal = SLEEP_L * BENCH_MS;

		weft_wg_add(&s.ready, SLEEP_G);
		weft_wg_add(&s.done, SLEEP_G);
		weft_wg_add(&s.gate, 1);
		for (g = 0; g < SLEEP_G; g++)
			bench_go(sleeper, &s);
		weft_wg_wait(&s.ready);
		weft_sleep(2 * BENCH_MS); /* let all park */
		start = weft_now();
		weft_wg_done(&s.gate);
		weft_wg_wait(&s.done);
		d = weft_now() - start;
		snprintf(extra, sizeof(extra), "\t%.3f wall_ms\t%.3f overhead_ms", (double)d / 1e6,
		         (double)(d - ideal) / 1e6);
		bench_report(c->name, 1, (double)d, extra);
	}
}
