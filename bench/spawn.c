/* SPDX-License-Identifier: MIT */
/*
 * spawn.c - the Spawn case: the cost of starting a goroutine. One op starts a
 * no-op goroutine that only calls weft_wg_done(); the goroutines come in
 * batches of 1000, each batch joined by weft_wg_wait() before the next starts
 * (Go's benchSpawn). n is a multiple of 1000 (q = 1000 in the table).
 */
#include "bench.h"

#define SPAWN_BATCH 1000

static void spawn_body(void *arg)
{
	weft_wg_done(arg);
}

int64_t bench_spawn(int64_t n)
{
	weft_wg wg = WEFT_WG_INIT;
	int64_t start, b;
	int i;

	start = weft_now();
	for (b = 0; b < n / SPAWN_BATCH; b++) {
		weft_wg_add(&wg, SPAWN_BATCH);
		for (i = 0; i < SPAWN_BATCH; i++)
			bench_go(spawn_body, &wg);
		weft_wg_wait(&wg);
	}
	return weft_now() - start;
}
