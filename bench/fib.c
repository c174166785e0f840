/* SPDX-License-Identifier: MIT */
/*
 * fib.c - the ForkJoin and FibSeq cases: fork-join parallelism against its
 * sequential baseline. One op computes fib(32) == 2178309. FibSeq recurses
 * plainly; ForkJoin (pfib) starts a goroutine for fib(n-1) at every call with
 * n > 20, computes fib(n-2) itself and then waits for the child, so one op
 * starts 376 goroutines (Go's benchForkJoin and benchFibSeq).
 *
 * Go's fib is a real doubly recursive call tree: Go does not inline recursive
 * functions, nor turn one of the two calls into a loop. So that FibSeq does
 * the same work here, fib() is noinline, this file is compiled with
 * -fno-optimize-sibling-calls (which stops GCC's and clang's tail-recursion
 * accumulator rewrite; see CMakeLists.txt), n is read from a volatile so
 * nothing can be folded, and every result is checked.
 *
 * Go's child hands its result back on a channel with a buffer of 1. weft has
 * no channels yet; the child instead writes its result into a slot in the
 * parent's frame and signals a WaitGroup there, once, which is the same
 * one-shot hand-off. The parent does not return before the wait, so the frame
 * outlives the child's use of it.
 */
#include "bench.h"

#define FIB_N 32
#define FIB_EXPECT 2178309
#define FIB_CUTOFF 20

static volatile int fib_n = FIB_N;

static __attribute__((noinline)) int fib(int n)
{
	if (n < 2)
		return n;
	return fib(n - 1) + fib(n - 2);
}

/* A child's work order and result slot, on its parent's stack. */
struct pfib_child {
	int n;      /* written by the parent before the child starts */
	int result; /* written by the child before it signals wg */
	weft_wg wg; /* count 1; the child's done hands result over */
};

static int pfib(int n);

static void pfib_child(void *p)
{
	struct pfib_child *c = p;

	c->result = pfib(c->n);
	weft_wg_done(&c->wg);
}

static int pfib(int n)
{
	struct pfib_child c = {.n = n - 1, .result = 0, .wg = WEFT_WG_INIT};
	int y;

	if (n <= FIB_CUTOFF)
		return fib(n);
	weft_wg_add(&c.wg, 1);
	bench_go(pfib_child, &c);
	y = pfib(n - 2);
	weft_wg_wait(&c.wg);
	return c.result + y;
}

int64_t bench_fork_join(int64_t n)
{
	int64_t start, i;
	int v;

	start = weft_now();
	for (i = 0; i < n; i++) {
		v = pfib(fib_n);
		if (v != FIB_EXPECT)
			bench_fatal("ForkJoin: pfib(%d) = %d, want %d", FIB_N, v, FIB_EXPECT);
	}
	return weft_now() - start;
}

int64_t bench_fib_seq(int64_t n)
{
	int64_t start, i;
	int v;

	start = weft_now();
	for (i = 0; i < n; i++) {
		v = fib(fib_n);
		if (v != FIB_EXPECT)
			bench_fatal("FibSeq: fib(%d) = %d, want %d", FIB_N, v, FIB_EXPECT);
	}
	return weft_now() - start;
}
