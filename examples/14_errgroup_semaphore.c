/* SPDX-License-Identifier: MIT */
/*
 * 14_errgroup_semaphore.c - fan out work, stop it all on the first error,
 * and bound how much runs at once: weft_errgroup and weft_sem (Go's
 * golang.org/x/sync/errgroup and semaphore).
 *
 * An errgroup is a WaitGroup that also keeps the first error and cancels a
 * context the tasks share as soon as one task fails, so the others stop
 * early instead of finishing work nobody will use. Go:
 *
 *   g, ctx := errgroup.WithContext(ctx)
 *   for _, url := range urls { g.Go(func() error { return fetch(ctx, url) }) }
 *   err := g.Wait()
 *
 * Three parts:
 *  1. fetch-like fan-out: eight "downloads" of different latency, one of
 *     which fails. The slow ones see the group's context cancelled and give up
 *     with ECANCELED; weft_errgroup_wait() returns the first error.
 *  2. bounded parallelism: weft_errgroup_set_limit(g, 3) (Go's SetLimit)
 *     makes weft_errgroup_go() wait while three tasks run.
 *  3. a weighted semaphore: jobs need different amounts of "memory" (tokens)
 *     from a budget of 100; each acquires its weight before it runs, so the
 *     total in use never passes 100. A job bigger than the budget could never
 *     run: it gives up at a deadline instead of waiting forever.
 *
 * Run: ./14_errgroup_semaphore
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

/* Raise *max to v if v is larger: a compare-and-swap loop, the atomic way to
 * keep a high-water mark (see 11_atomics). */
static void record_max(atomic_long *max, long v)
{
	long seen = atomic_load(max);

	while (v > seen && !atomic_compare_exchange_weak(max, &seen, v))
		; /* seen now holds the newer maximum: compare again */
}

/* ---------------------------------------------------------------- part 1 */

struct page {
	const char *url;
	int64_t latency_ns;
	int fails;  /* this one ends in ECONNREFUSED */
	int result; /* 0 (fetched), or why not */
};

static int fetch(weft_ctx *ctx, void *arg)
{
	struct page *p = arg;

	/* The "network wait": it also watches the group's context. */
	int err = weft_sleep_ctx(ctx, p->latency_ns);
	if (err == 0 && p->fails)
		err = ECONNREFUSED;
	p->result = err;
	return err; /* only the first error counts; ECANCELED after it is ignored */
}

static int fan_out(void)
{
	struct page pages[] = {
		{"https://a.example/", 1 * MS, 0, 0},    /* quick: likely done before the failure */
		{"https://b.example/", 3 * MS, 0, 0},    /* quick */
		{"https://c.example/", 10 * MS, 1, 0},   /* fails, cancelling the group */
		{"https://d.example/", 2 * MS, 0, 0},    /* quick */
		{"https://e.example/", 1000 * MS, 0, 0}, /* slow: cancelled */
		{"https://f.example/", 1500 * MS, 0, 0}, /* slow */
		{"https://g.example/", 2000 * MS, 0, 0}, /* slow */
		{"https://h.example/", 800 * MS, 0, 0},  /* slow */
	};
	const int n = sizeof pages / sizeof pages[0];
	weft_errgroup g;
	int ok = 1;

	printf("1. fetch %d pages with an errgroup; c.example fails after 10 ms\n", n);
	int64_t t0 = weft_now();
	if (weft_errgroup_init(&g, NULL, NULL) != 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (weft_errgroup_go(&g, fetch, &pages[i]) != 0)
			break; /* counted as the group's error; wait still waits */
	int err = weft_errgroup_wait(&g);
	int64_t took = weft_now() - t0;

	for (int i = 0; i < n; i++) {
		struct page *p = &pages[i];
		printf("  %-20s %6.0f ms  %s\n", p->url, p->latency_ns / 1e6,
		       p->result == 0 ? "fetched" : strerror(p->result));
		if (p->fails)
			ok &= p->result == ECONNREFUSED;
		else if (p->latency_ns >= 500 * MS)
			ok &= p->result == ECANCELED; /* stopped early, not after 500+ ms */
		else
			ok &= p->result == 0 || p->result == ECANCELED;
	}
	printf("  wait returned \"%s\" after %.1f ms\n", strerror(err), took / 1e6);
	return ok && err == ECONNREFUSED && took < 500 * MS;
}

/* ---------------------------------------------------------------- part 2 */

#define TASKS 12
#define LIMIT 3

struct limited {
	atomic_long running, peak;
	atomic_int done;
};

static int limited_task(weft_ctx *ctx, void *arg)
{
	struct limited *l = arg;

	record_max(&l->peak, atomic_fetch_add(&l->running, 1) + 1);
	int err = weft_sleep_ctx(ctx, 2 * MS);
	atomic_fetch_sub(&l->running, 1);
	if (err == 0)
		atomic_fetch_add(&l->done, 1);
	return err;
}

static int bounded(void)
{
	static struct limited l;
	weft_errgroup g;

	printf("2. %d tasks of 2 ms, at most %d at a time\n", TASKS, LIMIT);
	int64_t t0 = weft_now();
	if (weft_errgroup_init(&g, NULL, NULL) != 0)
		return 0;
	weft_errgroup_set_limit(&g, LIMIT); /* before the first go */
	for (int i = 0; i < TASKS; i++)
		if (weft_errgroup_go(&g, limited_task, &l) != 0) /* waits for a free slot */
			break;
	int err = weft_errgroup_wait(&g);
	printf("  %d done in %.1f ms, at most %ld running at once; wait: %s\n",
	       atomic_load(&l.done), (weft_now() - t0) / 1e6, atomic_load(&l.peak),
	       err == 0 ? "0" : strerror(err));
	return err == 0 && atomic_load(&l.done) == TASKS && atomic_load(&l.peak) <= LIMIT;
}

/* ---------------------------------------------------------------- part 3 */

#define BUDGET 100 /* "MB" of memory the jobs may use at once */

struct jobs {
	weft_sem mem; /* BUDGET tokens */
	atomic_long in_use, peak;
	atomic_int done;
};

struct job {
	struct jobs *js;
	int64_t weight;
};

static int weighted_job(weft_ctx *ctx, void *arg)
{
	struct job *j = arg;
	struct jobs *js = j->js;

	/* Waits, first come first served, until weight tokens are free: a big
	 * job at the head of the queue is not overtaken by small ones. */
	int err = weft_sem_acquire_ctx(ctx, &js->mem, j->weight);
	if (err != 0)
		return err;
	record_max(&js->peak, atomic_fetch_add(&js->in_use, j->weight) + j->weight);
	weft_sleep(3 * MS); /* the work */
	atomic_fetch_sub(&js->in_use, j->weight);
	weft_sem_release(&js->mem, j->weight);
	atomic_fetch_add(&js->done, 1);
	return 0;
}

static int weighted(void)
{
	static struct jobs js = {.mem = WEFT_SEM_INIT(BUDGET)};
	int64_t weights[] = {60, 30, 50, 10, 80, 20, 40, 70};
	const int n = sizeof weights / sizeof weights[0];
	struct job jobs[sizeof weights / sizeof weights[0]];
	weft_errgroup g;
	weft_ctx *ctx;

	printf("3. %d jobs of 10..80 MB sharing a budget of %d MB (weft_sem)\n", n, BUDGET);
	if (weft_errgroup_init(&g, NULL, NULL) != 0)
		return 0;
	for (int i = 0; i < n; i++) {
		jobs[i] = (struct job){&js, weights[i]};
		if (weft_errgroup_go(&g, weighted_job, &jobs[i]) != 0)
			break;
	}
	int err = weft_errgroup_wait(&g);
	printf("  %d jobs done; peak use %ld MB; wait: %s\n", atomic_load(&js.done),
	       atomic_load(&js.peak), err == 0 ? "0" : strerror(err));

	/* 150 MB never fits: a plain acquire would wait forever. */
	if (weft_ctx_with_timeout(weft_ctx_background(), 20 * MS, &ctx) != 0)
		return 0;
	int big = weft_sem_acquire_ctx(ctx, &js.mem, 150);
	weft_ctx_release(ctx);
	printf("  a 150 MB job with a 20 ms timeout: %s\n",
	       big == ETIMEDOUT ? "ETIMEDOUT" : "ran?!");

	return err == 0 && atomic_load(&js.done) == n && atomic_load(&js.peak) <= BUDGET &&
	       big == ETIMEDOUT;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = fan_out();
	int ok2 = bounded();
	int ok3 = weighted();

	if (!(ok1 && ok2 && ok3)) {
		fprintf(stderr, "wrong: fan-out %d, limit %d, semaphore %d\n", ok1, ok2, ok3);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
