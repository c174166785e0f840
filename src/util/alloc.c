/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - the allocation wrappers with a failure simulator for tests.
 * The countdown is one relaxed atomic; when it is off the cost is one load.
 */
#include "alloc.h"

#include <stdlib.h>

#ifdef WEFT_TSAN
#include <sanitizer/tsan_interface.h>
/* The runtime is not instrumented, so TSan sees only the malloc and the
 * free of its buffers, often on different goroutines' fibers: declare the
 * ordering that the runtime's own locks provide. */
#define RACE_ALLOCATED(p) __tsan_release(p)
#define RACE_FREEING(p) __tsan_acquire(p)
#else
#define RACE_ALLOCATED(p) ((void)(p))
#define RACE_FREEING(p) ((void)(p))
#endif

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
	void *p = should_fail() ? NULL : malloc(size);
	if (p)
		RACE_ALLOCATED(p);
	return p;
}

void *weft__calloc(size_t n, size_t size)
{
	void *p = should_fail() ? NULL : calloc(n, size);
	if (p)
		RACE_ALLOCATED(p);
	return p;
}

void weft__free(void *p)
{
	if (p)
		RACE_FREEING(p);
	free(p);
}

void weft__alloc_fail_after(long n, int sticky)
{
	__atomic_store_n(&fail_sticky, sticky, __ATOMIC_RELAXED);
	__atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED);
}
