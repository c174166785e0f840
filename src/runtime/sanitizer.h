/* SPDX-License-Identifier: MIT */
/*
 * sanitizer.h - the fiber annotations that let ThreadSanitizer,
 * AddressSanitizer and Valgrind follow goroutine switches. In a build without
 * a sanitizer every hook is an empty inline function.
 *
 * ThreadSanitizer, as Go's race detector does it: the runtime layers are
 * built without TSan instrumentation (their own accesses are invisible),
 * every G has a fiber (created with its record, reused with it), and a
 * switch does not synchronise (__tsan_switch_to_fiber_no_sync). Two
 * goroutines are then ordered only by real synchronisation, which the
 * runtime declares with weft__race_release/acquire: weft_go (the spawner
 * before the child), WaitGroup (every Add/Done before the Wait that
 * returns), Mutex (an Unlock before the next Lock), and likewise every other
 * sync primitive, channels, timers, contexts and the poller. So a race between
 * goroutines is reported even when both run on one thread, one after the
 * other, exactly as `go test -race` reports it.
 * AddressSanitizer: each switch is bracketed by start/finish_switch_fiber
 * with the target's stack bounds; an exiting G passes NULL so its fake stack
 * is freed; a recycled stack is unpoisoned before reuse.
 */
#ifndef WEFT_RUNTIME_SANITIZER_H
#define WEFT_RUNTIME_SANITIZER_H

#include <stddef.h>
#include "sched.h" /* struct weft__g */

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif

#ifdef WEFT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#ifdef WEFT_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

struct weft__g;
static inline void weft__san_fiber_create(struct weft__g *g)
{
#ifdef WEFT_TSAN
	g->tsan_fiber = __tsan_create_fiber(0);
#else
	(void)g;
#endif
}

static inline void weft__san_fiber_destroy(struct weft__g *g)
{
#ifdef WEFT_TSAN
	__tsan_destroy_fiber(g->tsan_fiber);
#else
	(void)g;
#endif
}

/* Declare a happens-before edge: everything before release(addr) happens
 * before everything after a later acquire(addr). */
static inline void weft__race_release(const void *addr)
{
#ifdef WEFT_TSAN
	__tsan_release((void *)addr);
#else
	(void)addr;
#endif
}

static inline void weft__race_acquire(const void *addr)
{
#ifdef WEFT_TSAN
	__tsan_acquire((void *)addr);
#else
	(void)addr;
#endif
}

static inline void weft__san_stack_reset(void *lo, size_t n)
{
#ifdef WEFT_ASAN
	__asan_unpoison_memory_region(lo, n);
#else
	(void)lo;
	(void)n;
#endif
}

#endif
