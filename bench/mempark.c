/* SPDX-License-Identifier: MIT */
/*
 * mempark.c - the MemPark100k and MemPark1M cases: what a parked goroutine
 * costs. G goroutines are created and each parks until released (Go's
 * runMemPark). ns/op is the creation time per goroutine, from the first spawn
 * until every goroutine has signalled that it is running; the line adds the
 * VmRSS growth per goroutine (measured 5 ms after that, so all have parked),
 * the creation time in ms and VmRSS before and after in KiB. Then the
 * goroutines are released and joined. Like Go's, the case has its own
 * repetition loop (run one repetition per process: later ones reuse the
 * stacks the first one left cached) and ignores --n and --target.
 */
#include "bench.h"

#include <stdio.h>

struct mempark_state {
	weft_wg ready; /* each goroutine: done once it runs */
	weft_wg gate;  /* count 1; main's done releases everyone */
	weft_wg done;  /* each goroutine: done once released */
};

static void parker(void *p)
{
	struct mempark_state *s = p;

	weft_wg_done(&s->ready);
	/*
	 * Go parks on a channel receive (<-ch, released by close(ch)). weft has
	 * no channels yet, so this parks on a WaitGroup gate instead; it becomes
	 * a channel receive when channels land.
	 */
	weft_wg_wait(&s->gate);
	weft_wg_done(&s->done);
}

void bench_mempark(const struct bench_case *c)
{
	int64_t G = c->arg;
	char extra[256];
	int r;

	for (r = 0; r < bench_flags.reps; r++) {
		struct mempark_state s = {WEFT_WG_INIT, WEFT_WG_INIT, WEFT_WG_INIT};
		int64_t rss0, rss1, start, d, g;

		weft_wg_add(&s.ready, G);
		weft_wg_add(&s.done, G);
		weft_wg_add(&s.gate, 1);
		rss0 = bench_rss_bytes();
		start = weft_now();
		for (g = 0; g < G; g++)
			bench_go(parker, &s);
		weft_wg_wait(&s.ready);
		d = weft_now() - start;
		weft_sleep(5 * BENCH_MS); /* let all park */
		rss1 = bench_rss_bytes();
		snprintf(extra, sizeof(extra),
		         "\t%.0f rss_bytes/goroutine\t%.1f create_ms\t%lld rss_before_kb\t%lld "
		         "rss_after_kb",
		         (double)(rss1 - rss0) / (double)G, (double)d / 1e6,
		         (long long)(rss0 / 1024), (long long)(rss1 / 1024));
		bench_report(c->name, G, (double)d / (double)G, extra);
		weft_wg_done(&s.gate);
		weft_wg_wait(&s.done);
	}
}
