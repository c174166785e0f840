/* SPDX-License-Identifier: MIT */
/*
 * 09_prime_sieve.c - a pipeline of goroutines: the classic concurrent prime
 * sieve of Go's documentation.
 *
 * A generator goroutine sends 2, 3, 4, 5, ... down a channel. Main takes the
 * first number off the end of the pipeline: it is a prime, p. Main then
 * appends a filter goroutine for p, which passes on only the numbers that p
 * does not divide, and reads the next prime from the filter's output. After
 * N primes the pipeline has N filters:
 *
 *   generate -> filter(2) -> filter(3) -> filter(5) -> ... -> main
 *
 * Every stage is an unbuffered channel hand-off, so the numbers flow through
 * the whole chain in lock step. The pipeline never ends by itself (the
 * generator counts forever), so each stage also listens on a done channel:
 * `select { case out <- v: case <-done: return }`, the Go blog's pattern for
 * cancelling a pipeline. Closing done stops every stage, wherever it waits.
 *
 * The program checks its answer: every number printed must be prime by trial
 * division, and none may be missing in between.
 *
 * Run: ./09_prime_sieve [N]     (the first N primes; default 100)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#define MAX_PRIMES 2000

/* One stage of the pipeline. The generator uses out and done only. */
struct stage {
	weft_chan *in;   /* numbers from the previous stage */
	weft_chan *out;  /* numbers for the next stage */
	weft_chan *done; /* closed by main to stop everything */
	int64_t prime;   /* a filter drops the multiples of this */
	weft_wg *wg;     /* done when the stage returns */
};

/* Send v on out, unless done is closed first. Returns 0 if v was sent. */
static int send_unless_done(weft_chan *out, int64_t v, weft_chan *done)
{
	int chosen;
	weft_case cases[] = {WEFT_SEND_CASE(out, &v), WEFT_RECV_CASE(done, NULL)};

	weft_select(cases, 2, &chosen);
	return chosen == 0 ? 0 : -1;
}

/* Receive *v from in, unless done is closed first. Returns 0 if *v came. */
static int recv_unless_done(weft_chan *in, int64_t *v, weft_chan *done)
{
	int chosen;
	weft_case cases[] = {WEFT_RECV_CASE(in, v), WEFT_RECV_CASE(done, NULL)};

	weft_select(cases, 2, &chosen);
	return chosen == 0 ? 0 : -1;
}

/* Go: func generate(ch chan<- int) { for i := 2; ; i++ { ch <- i } } */
void generate(void *arg)
{
	struct stage *s = arg;

	for (int64_t i = 2; send_unless_done(s->out, i, s->done) == 0; i++)
		;
	weft_wg_done(s->wg);
}

/* Go: func filter(in <-chan int, out chan<- int, prime int) {
 *         for { i := <-in; if i%prime != 0 { out <- i } } } */
void filter(void *arg)
{
	struct stage *s = arg;
	int64_t v;

	while (recv_unless_done(s->in, &v, s->done) == 0)
		if (v % s->prime != 0 && send_unless_done(s->out, v, s->done) != 0)
			break;
	weft_wg_done(s->wg);
}

static int is_prime(int64_t n)
{
	if (n < 2)
		return 0;
	for (int64_t d = 2; d * d <= n; d++)
		if (n % d == 0)
			return 0;
	return 1;
}

static int run(void *arg)
{
	/* stages[0] is the generator, stages[i + 1] the filter of the i-th prime.
	 * Main owns every channel and frees them all once the stages are gone. */
	static struct stage stages[MAX_PRIMES + 1];
	static int64_t primes[MAX_PRIMES];
	int n = *(int *)arg;
	weft_chan *done;
	weft_wg wg = WEFT_WG_INIT;

	if (weft_chan_make(&done, 0, 0) != 0)
		return 1;
	stages[0] = (struct stage){.done = done, .wg = &wg};
	if (weft_chan_make(&stages[0].out, sizeof(int64_t), 0) != 0)
		return 1;
	weft_wg_add(&wg, 1);
	if (weft_go(generate, &stages[0]) != 0)
		return 1;

	printf("the first %d primes:\n", n);
	for (int i = 0; i < n; i++) {
		weft_chan *ch = stages[i].out; /* the end of the pipeline so far */

		weft_chan_recv(ch, &primes[i]);
		printf("%5lld%s", (long long)primes[i], i % 10 == 9 || i == n - 1 ? "\n" : " ");

		/* Append a filter for the new prime. */
		struct stage *f = &stages[i + 1];
		*f = (struct stage){.in = ch, .done = done, .prime = primes[i], .wg = &wg};
		if (weft_chan_make(&f->out, sizeof(int64_t), 0) != 0)
			return 1;
		weft_wg_add(&wg, 1);
		if (weft_go(filter, f) != 0)
			return 1;
	}

	/* Stop the pipeline: every stage sees done closed and returns. */
	weft_chan_close(done);
	weft_wg_wait(&wg);
	for (int i = 0; i <= n; i++)
		weft_chan_release(stages[i].out);
	weft_chan_release(done);

	/* Check: all prime, increasing, and no prime skipped in between. */
	int64_t next = 2; /* the smallest number not yet accounted for */
	for (int i = 0; i < n; i++) {
		while (next < primes[i] && !is_prime(next))
			next++;
		if (primes[i] != next || !is_prime(primes[i])) {
			fprintf(stderr, "wrong: prime #%d is %lld, trial division says %lld\n",
			        i + 1, (long long)primes[i], (long long)next);
			return 1;
		}
		next++;
	}
	printf("checked against trial division: %d goroutines found them all\n", n + 1);
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;

	if (n < 1 || n > MAX_PRIMES) {
		fprintf(stderr, "usage: %s [N], 1 <= N <= %d\n", argv[0], MAX_PRIMES);
		return 2;
	}
	return weft_main(run, &n);
}
