/* SPDX-License-Identifier: MIT */
/*
 * 04_sleep_and_time.c - time in weft: weft_now(), weft_sleep() and
 * weft_sleep_until().
 *
 * weft_now() is the monotonic clock in nanoseconds; every deadline in weft is
 * an absolute value of it. weft_sleep() parks only the calling goroutine, on a
 * timer of its P: the thread goes on running other goroutines, so ten thousand
 * sleepers cost ten thousand small stacks, not ten thousand threads.
 *
 * Three parts:
 *  1. how long a 10 ms sleep really takes (the timer's overshoot);
 *  2. five goroutines started together, sleeping 50, 40, 30, 20 and 10 ms,
 *     wake in the order of their deadlines, not of their start;
 *  3. a steady ticker: sleeping until start + k * period (instead of sleeping
 *     a period each time) keeps the error from adding up.
 *
 * Run: ./04_sleep_and_time
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000) /* nanoseconds per millisecond */
#define SLEEPERS 5

struct sleeper {
	int64_t duration_ns;
	int64_t woke_ns; /* when it woke, relative to the start */
	int64_t start_ns;
	atomic_int *order; /* the next place in the wake-up order */
	int place;         /* this sleeper's place */
	weft_wg *wg;
};

void nap(void *arg)
{
	struct sleeper *s = arg;

	weft_sleep(s->duration_ns);
	s->woke_ns = weft_now() - s->start_ns;
	s->place = atomic_fetch_add(s->order, 1) + 1;
	weft_wg_done(s->wg);
}

static int run(void *unused)
{
	(void)unused;

	/* 1. One sleep, measured. */
	int64_t t0 = weft_now();
	weft_sleep(10 * MS);
	int64_t slept = weft_now() - t0;
	printf("1. weft_sleep(10 ms) took %.3f ms (%.0f us late)\n", slept / 1e6,
	       (slept - 10 * MS) / 1e3);

	/* 2. Sleepers wake in deadline order. */
	struct sleeper sl[SLEEPERS];
	atomic_int order = 0;
	weft_wg wg = WEFT_WG_INIT;
	int64_t start = weft_now();

	weft_wg_add(&wg, SLEEPERS);
	for (int i = 0; i < SLEEPERS; i++) {
		sl[i] = (struct sleeper){.duration_ns = (SLEEPERS - i) * 10 * MS,
		                         .start_ns = start,
		                         .order = &order,
		                         .wg = &wg};
		if (weft_go(nap, &sl[i]) != 0)
			return 1;
	}
	weft_wg_wait(&wg);
	int early = 0;
	for (int i = 0; i < SLEEPERS; i++)
		early += sl[i].woke_ns < sl[i].duration_ns; /* never allowed */
	printf("2. started in the order 50, 40, 30, 20, 10 ms; woke:\n");
	for (int i = SLEEPERS - 1; i >= 0; i--)
		printf("   %2lld ms sleeper woke %d%s at %6.2f ms\n",
		       (long long)(sl[i].duration_ns / MS), sl[i].place,
		       sl[i].place == 1   ? "st"
		       : sl[i].place == 2 ? "nd"
		       : sl[i].place == 3 ? "rd"
		                          : "th",
		       sl[i].woke_ns / 1e6);

	/* 3. A drift-free ticker with absolute deadlines. */
	const int64_t period = 20 * MS;
	int64_t begin = weft_now();
	printf("3. ticking every 20 ms with weft_sleep_until():\n");
	for (int k = 1; k <= 5; k++) {
		int64_t deadline = begin + k * period;

		weft_sleep_until(deadline);
		int64_t now = weft_now();
		early += now < deadline;
		printf("   tick %d at %6.2f ms (%.0f us after its deadline)\n", k,
		       (now - begin) / 1e6, (now - deadline) / 1e3);
	}
	if (early || slept < 10 * MS) {
		fprintf(stderr, "a sleep ended before its deadline\n");
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
