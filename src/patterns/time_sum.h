/* SPDX-License-Identifier: MIT */
/*
 * time_sum.h - the one saturating time sum the patterns share (they are
 * built on the public API only, so they cannot use the runtime's
 * weft__timer_when).
 */
#ifndef WEFT_PATTERNS_TIME_SUM_H
#define WEFT_PATTERNS_TIME_SUM_H

#include <stdint.h>

/* t + d for d >= 0, INT64_MAX ("never") where it would pass it. t may be
 * negative (a breaker's custom clock may read so): then INT64_MAX - t would
 * overflow, but the sum always fits, so only t > 0 is tested. */
static inline int64_t weft__time_sum(int64_t t, int64_t d)
{
	return t > 0 && d > INT64_MAX - t ? INT64_MAX : t + d;
}

#endif
