/* SPDX-License-Identifier: MIT */
/*
 * mutex.c - the MutexContended case: one lock, increment, unlock of a shared
 * counter, with 8 goroutines doing n/8 each on one weft_mutex (Go's
 * benchMutex). The counter must come out as n. n is a multiple of 8.
 */
#include "bench.h"

#include <inttypes.h>

#define MUTEX_G 8

struct mutex_state {
	weft_mutex mu;
	int64_t counter; /* guarded by mu */
	int64_t per;     /* ops per goroutine; read-only while they run */
	weft_wg wg;      /* done once by each goroutine */
};

static void worker(void *p)
{
	struct mutex_state *s = p;
	int64_t i, per = s->per; /* Go's n/G, in a register: s->per shares mu's line */

	for (i = 0; i < per; i++) {
		weft_mutex_lock(&s->mu);
		s->counter++;
		weft_mutex_unlock(&s->mu);
	}
	weft_wg_done(&s->wg);
}

int64_t bench_mutex(int64_t n)
{
	struct mutex_state s = {.mu = WEFT_MUTEX_INIT, .per = n / MUTEX_G, .wg = WEFT_WG_INIT};
	int64_t start, d;
	int g;

	weft_wg_add(&s.wg, MUTEX_G);
	start = weft_now();
	for (g = 0; g < MUTEX_G; g++)
		bench_go(worker, &s);
	weft_wg_wait(&s.wg);
	d = weft_now() - start;
	if (s.counter != n)
		bench_fatal("MutexContended: counter %" PRId64 ", want %" PRId64, s.counter, n);
	return d;
}
