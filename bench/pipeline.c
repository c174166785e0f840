/* SPDX-License-Identifier: MIT */
/* pipeline.c - placeholder; being written (issue 6). */
#include "bench.h"

int64_t bench_pipeline3(int64_t n)
{
	(void)n;
	bench_fatal("Pipeline3: not written yet");
}
