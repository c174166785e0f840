/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - the allocation wrappers with a failure simulator for tests.
 * The countdown is one relaxed atomic; when it is off the cost is one load.
 */
#include "alloc.h"

#include <stdlib.h>

static long fail_countdown; /* atomic; 0 = off */
static int fail_sticky;     /* atomic */

static int should_fail(void)
{
	long c = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
	if (__builtin_expect(c == 0, 1))
		return 0;
	if (c == 1) {
		if (!__atomic_load_n(&fail_sticky, __ATOMIC_RELAXED))
			__atomic_store_n(&fail_countdown, 0, __ATOMIC_RELAXED);
		return 1;
	}
	__atomic_fetch_sub(&fail_countdown, 1, __ATOMIC_RELAXED);
	return 0;
}

void *weft__alloc(size_t size)
{
	return should_fail() ? NULL : malloc(size);
}

void *weft__calloc(size_t n, size_t size)
{
	return should_fail() ? NULL : calloc(n, size);
}

void weft__free(void *p)
{
	free(p);
}

void weft__alloc_fail_after(long n, int sticky)
{
	__atomic_store_n(&fail_sticky, sticky, __ATOMIC_RELAXED);
	__atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED);
}
