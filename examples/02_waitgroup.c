/* SPDX-License-Identifier: MIT */
/*
 * 02_waitgroup.c - wait for a group of goroutines with weft_wg (Go's
 * sync.WaitGroup), and call weft from a plain thread.
 *
 * A WaitGroup is a counter: weft_wg_add() before starting each piece of work,
 * weft_wg_done() when a piece finishes, weft_wg_wait() to wait for zero. Add
 * before weft_go(), never inside the new goroutine: otherwise the wait could
 * see zero before the goroutine has even started. The zero value is ready to
 * use, and no destroy call is needed.
 *
 * weft_wg_go() (Go 1.25's wg.Go) does the add and the done for you: it adds
 * one, starts the function in a goroutine, and calls weft_wg_done() when the
 * function returns. Part 2 sums again that way, with workers that know
 * nothing of the WaitGroup.
 *
 * This example has no weft_main(): main() is an ordinary thread (a "foreign
 * thread" to weft). The runtime starts on the first weft call, and
 * weft_wg_wait() parks main's OS thread until the workers are done.
 *
 * The work: sum the squares of 0 .. N-1, split into one chunk per goroutine.
 * Each worker writes only its own slot, so no lock is needed; the wait makes
 * every slot visible to main.
 *
 * Run: ./02_waitgroup
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define N ((uint64_t)1000 * 1000) /* the sum still fits in 64 bits */
#define WORKERS 16

struct chunk {
	uint64_t begin, end; /* the range to sum: [begin, end) */
	uint64_t sum;        /* written by the worker, read after the wait */
	weft_wg *wg;
};

/* Part 2's worker: only the work. */
static void sum_chunk(void *arg)
{
	struct chunk *c = arg;
	uint64_t sum = 0;

	for (uint64_t i = c->begin; i < c->end; i++)
		sum += i * i;
	c->sum = sum;
}

/* Part 1's worker: the work, then done. */
static void sum_squares(void *arg)
{
	struct chunk *c = arg;

	sum_chunk(c);
	weft_wg_done(c->wg);
}

int main(void)
{
	static struct chunk chunks[WORKERS];
	weft_wg wg = WEFT_WG_INIT;
	uint64_t total = 0, expect = 0;

	for (int w = 0; w < WORKERS; w++) {
		chunks[w] = (struct chunk){
			.begin = N * w / WORKERS,
			.end = N * (w + 1) / WORKERS,
			.wg = &wg,
		};
		weft_wg_add(&wg, 1); /* before weft_go(), never inside the goroutine */
		int err = weft_go(sum_squares, &chunks[w]);
		if (err != 0) {
			fprintf(stderr, "weft_go: %s\n", strerror(err));
			return 1;
		}
	}
	weft_wg_wait(&wg); /* main is not a goroutine: this parks the thread */

	for (int w = 0; w < WORKERS; w++)
		total += chunks[w].sum;
	for (uint64_t i = 0; i < N; i++)
		expect += i * i;
	printf("sum of i*i for i < %" PRIu64 ": %" PRIu64 " (%d goroutines on %d P(s))\n", N, total,
	       WORKERS, weft_procs());
	if (total != expect) {
		fprintf(stderr, "wrong: the sequential sum is %" PRIu64 "\n", expect);
		return 1;
	}

	/* Part 2: weft_wg_go() adds one and starts sum_chunk; its goroutine
	 * calls weft_wg_done() when sum_chunk returns. */
	for (int w = 0; w < WORKERS; w++) {
		chunks[w].sum = 0;
		int err = weft_wg_go(&wg, sum_chunk, &chunks[w]);
		if (err != 0) {
			fprintf(stderr, "weft_wg_go: %s\n", strerror(err));
			return 1;
		}
	}
	weft_wg_wait(&wg);
	total = 0;
	for (int w = 0; w < WORKERS; w++)
		total += chunks[w].sum;
	printf("again with weft_wg_go: %" PRIu64 "\n", total);
	if (total != expect) {
		fprintf(stderr, "wrong: the sequential sum is %" PRIu64 "\n", expect);
		return 1;
	}
	return 0;
}
