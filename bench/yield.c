/* SPDX-License-Identifier: MIT */
/*
 * yield.c - the Yield case: the cost of one weft_yield() (Go's Gosched). Two
 * goroutines each yield n/2 times while the main goroutine waits for both on
 * a WaitGroup (Go's benchYield); with one P the two take turns, so every
 * yield is a switch. n is a multiple of 2.
 */
#include "bench.h"

struct yield_arg {
	int64_t per; /* yields per goroutine; read-only while they run */
	weft_wg *wg; /* done once by each goroutine */
};

static void yielder(void *p)
{
	struct yield_arg *a = p;
	int64_t i;

	for (i = 0; i < a->per; i++)
		weft_yield();
	weft_wg_done(a->wg);
}

int64_t bench_yield(int64_t n)
{
	weft_wg wg = WEFT_WG_INIT;
	struct yield_arg a = {.per = n / 2, .wg = &wg};
	int64_t start;
	int k;

	weft_wg_add(&wg, 2);
	start = weft_now();
	for (k = 0; k < 2; k++)
		bench_go(yielder, &a);
	weft_wg_wait(&wg);
	return weft_now() - start;
}
