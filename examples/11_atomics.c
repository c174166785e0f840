/* SPDX-License-Identifier: MIT */
/*
 * 11_atomics.c - a counter shared by many goroutines, three ways: a plain
 * int (wrong), an int behind a weft_mutex, and a C11 atomic_int.
 *
 * Go has sync/atomic; weft has no atomics of its own, because C11 already
 * does: <stdatomic.h> works across goroutines exactly as across threads.
 * This mirrors Go by Example's "Atomic Counters" and "Mutexes":
 *
 *   var ops atomic.Uint64              var mu sync.Mutex; var n int
 *   go func() { ops.Add(1) }()         go func() { mu.Lock(); n++; mu.Unlock() }()
 *
 * The wrong way, which this program does not run:
 *
 *   int counter;                       (shared by every goroutine)
 *   counter++;                         (in each of them)
 *
 * counter++ is a load, an add and a store. Two goroutines running at the same
 * time on two threads can both load 41 and both store 42: one increment is
 * lost, and the total comes out short by a different amount on each run. In
 * C11 terms it is a data race, which is undefined behaviour: the compiler may
 * even keep the counter in a register for the whole loop. `make race` would
 * flag it ("WARNING: ThreadSanitizer: data race") even on a run that happened
 * to get the right total, since ThreadSanitizer checks that accesses are
 * ordered, not that the answer is right.
 *
 * Which to prefer: an atomic for one word that is updated on its own (a
 * counter, a statistic, a flag, a high-water mark with a compare-and-swap
 * loop); it never parks and costs one instruction. A mutex as soon as several
 * values must change together (03_mutex moves money between two accounts) or
 * the critical section is more than one operation: atomics on each field
 * would not make the whole update atomic.
 *
 * Run: ./11_atomics
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

#define GOROUTINES 16
#define INCREMENTS 20000

struct counters {
	weft_mutex mu;      /* guards locked */
	long locked;        /* guarded by mu */
	atomic_long atomic; /* needs no lock */
	weft_wg wg;
};

void add_locked(void *arg)
{
	struct counters *c = arg;

	for (int i = 0; i < INCREMENTS; i++) {
		weft_mutex_lock(&c->mu);
		c->locked++;
		weft_mutex_unlock(&c->mu);
	}
	weft_wg_done(&c->wg);
}

void add_atomic(void *arg)
{
	struct counters *c = arg;

	/* One indivisible read-modify-write. The default order (sequentially
	 * consistent) is the simple choice; a pure counter that is read only
	 * after weft_wg_wait() could use memory_order_relaxed, since the
	 * WaitGroup already orders the final read after every increment. */
	for (int i = 0; i < INCREMENTS; i++)
		atomic_fetch_add(&c->atomic, 1);
	weft_wg_done(&c->wg);
}

/* Runs fn in GOROUTINES goroutines and waits for them; returns the time taken
 * in nanoseconds, or -1 when a goroutine could not be started. */
static int64_t run_all(void (*fn)(void *), struct counters *c)
{
	int64_t t0 = weft_now();

	for (int g = 0; g < GOROUTINES; g++) {
		weft_wg_add(&c->wg, 1);
		if (weft_go(fn, c) != 0) {
			weft_wg_done(&c->wg);
			weft_wg_wait(&c->wg);
			return -1;
		}
	}
	weft_wg_wait(&c->wg);
	return weft_now() - t0;
}

static int run(void *unused)
{
	static struct counters c; /* all-zero: mutex, WaitGroup and atomic ready */
	const long want = (long)GOROUTINES * INCREMENTS;

	(void)unused;
	int64_t locked_ns = run_all(add_locked, &c);
	int64_t atomic_ns = run_all(add_atomic, &c);
	if (locked_ns < 0 || atomic_ns < 0)
		return 1;

	/* After weft_wg_wait() every goroutine has finished: reading the
	 * mutex-guarded counter without the lock is safe here. */
	long atomic_total = atomic_load(&c.atomic);
	printf("%d goroutines x %d increments, on %d P(s); want %ld\n", GOROUTINES, INCREMENTS,
	       weft_procs(), want);
	printf("  weft_mutex:       %ld  (%.1f ns per increment)\n", c.locked,
	       (double)locked_ns / want);
	printf("  atomic_fetch_add: %ld  (%.1f ns per increment)\n", atomic_total,
	       (double)atomic_ns / want);
	if (c.locked != want || atomic_total != want) {
		fprintf(stderr, "wrong total\n");
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
