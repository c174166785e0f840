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
 * pfib is Go's, call for call: a channel of capacity 1 is made per child
 * (Go's `c := make(chan int, 1)`, one allocation; its element is int64_t,
 * Go's int), the child sends its result on it (`c <- pfib(n - 1)`), and the
 * parent receives it after computing fib(n-2) itself (`<-c + y`), then drops
 * its reference. Go's garbage collector frees the channel; here it goes with
 * the last release. The child may still be inside weft_chan_send() (unlocking)
 * when the parent has received and released, so, as in chan.c, the child
 * holds a reference of its own, taken by the parent next to the make and
 * dropped by the child after its send: one atomic add and one subtract per
 * spawn on top of Go's work. The child's argument block (Go's closure) sits
 * in the parent's frame, which outlives the child's reads of it: the parent
 * does not return before the receive, and the child reads it before it sends.
 */
#include "bench.h"

#include <string.h>

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

/* A child's arguments (Go's closure), in its parent's frame. */
struct pfib_child {
	int n;        /* pfib's argument for the child; read-only */
	weft_chan *c; /* capacity 1, int64_t; the child's own reference */
};

static int pfib(int n);

/* Go:  go func() { c <- pfib(n - 1) }() */
static void pfib_child(void *p)
{
	const struct pfib_child *a = p;
	weft_chan *c = a->c;
	int64_t v = pfib(a->n);
	int err;

	/* After the send the parent may return: a is not read again. */
	err = weft_chan_send(c, &v);
	if (err != 0)
		bench_fatal("ForkJoin: weft_chan_send: %s", strerror(err));
	weft_chan_release(c);
}

static int pfib(int n)
{
	struct pfib_child a;
	int64_t x;
	int y, err;

	if (n <= FIB_CUTOFF)
		return fib(n);
	err = weft_chan_make(&a.c, sizeof(int64_t), 1); /* Go: c := make(chan int, 1) */
	if (err != 0)
		bench_fatal("ForkJoin: weft_chan_make: %s", strerror(err));
	a.n = n - 1;
	weft_chan_retain(a.c); /* the child's reference */
	bench_go(pfib_child, &a);
	y = pfib(n - 2);
	err = weft_chan_recv(a.c, &x); /* Go: return <-c + y */
	if (err != 0)
		bench_fatal("ForkJoin: weft_chan_recv: %s", strerror(err));
	weft_chan_release(a.c);
	return (int)x + y;
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
