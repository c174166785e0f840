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
 *
 * The goroutines park where Go's do: on a receive from one unbuffered channel
 * (Go's `ch := make(chan int)`, elements int64_t, made before the first VmRSS
 * reading), and main's weft_chan_close() releases them all (`close(ch)`):
 * each receive returns EPIPE, as a receive from a closed channel does in Go.
 * The waiter record of each parked receive sits on its goroutine's stack, as
 * Go's sudog is part of what its parked goroutine costs. The goroutines borrow
 * main's reference: every receive has returned before its goroutine signals
 * done, and main drops the reference only after waiting for done.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct mempark_state {
	weft_wg ready; /* each goroutine: done once it runs */
	weft_chan *ch; /* Go's ch: closed by main, never sent on */
	weft_wg done;  /* each goroutine: done once released */
};

static void parker(void *p)
{
	struct mempark_state *s = p;
	int err;

	weft_wg_done(&s->ready);
	err = weft_chan_recv(s->ch, NULL); /* Go: <-ch */
	if (err != EPIPE)
		bench_fatal("MemPark: <-ch returned %d, want EPIPE", err);
	weft_wg_done(&s->done);
}

void bench_mempark(const struct bench_case *c)
{
	int64_t G = c->arg;
	char extra[256];
	int r, err;

	for (r = 0; r < bench_flags.reps; r++) {
		struct mempark_state s = {.ready = WEFT_WG_INIT, .ch = NULL, .done = WEFT_WG_INIT};
		int64_t rss0, rss1, start, d, g;

		err = weft_chan_make(&s.ch, sizeof(int64_t), 0); /* Go: ch := make(chan int) */
		if (err != 0)
			bench_fatal("MemPark: weft_chan_make: %s", strerror(err));
		weft_wg_add(&s.ready, G);
		weft_wg_add(&s.done, G);
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
		weft_chan_close(s.ch);
		weft_wg_wait(&s.done);
		weft_chan_release(s.ch);
	}
}
