/* SPDX-License-Identifier: MIT */
/* workpool.c - placeholder; being written (issue 6). */
#include "bench.h"

int64_t bench_pool_submit(int64_t n)
{
	(void)n;
	bench_fatal("PoolSubmit: not written yet");
}
