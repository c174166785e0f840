/* SPDX-License-Identifier: MIT */
/*
 * 19_worker_pool.c - a production worker pool: weft_workpool processing a
 * stream of "thumbnail" jobs, some of which fail, some run past their
 * deadline and some are abandoned by their client, while the service keeps
 * going, sheds load when it is full, grows under pressure, reports its
 * metrics as it runs and shuts down gracefully.
 *
 * The learning material's worker pool is a buffered channel and a few
 * goroutines ranging over it:
 *
 *   jobs := make(chan Job, 64)
 *   for w := 0; w < 8; w++ { go func() { for j := range jobs { results <- j.Run() } }() }
 *
 * A production one needs more around it, and weft_workpool has it built in:
 *   - backpressure: the queue is bounded; submit waits when it is full, and
 *     trysubmit fails at once (EAGAIN) so a front end can shed load;
 *   - deadlines: every job gets a context that expires after the pool's
 *     job_timeout_ns (or its own timeout); a job that runs past it is
 *     reported TIMED_OUT, and it never takes its worker for longer than it
 *     ignores its context;
 *   - cancellation: a job submitted with a client's context is cancelled
 *     when the client goes away, queued or running;
 *   - contained failures: a job returning an error is reported, and the
 *     worker goes on;
 *   - results as they complete on a channel, with id, status, error, value
 *     and timings; metrics (counts, p50/p90/p99 of queue wait and run time)
 *     readable at any time; one logfmt line per job start and end;
 *   - resize at run time, and a shutdown that drains the queue but gives up
 *     (cancelling what is left) at a deadline.
 *
 * The example checks its own result: every job accounted exactly once, each
 * kind of job ending the way it must.
 *
 * Run: ./19_worker_pool
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

/* ---------------------------------------------------------------- the jobs */

enum kind { NORMAL, CORRUPT, HUGE, ABANDONED, KINDS };

struct image {
	int n;            /* which one */
	int kind;         /* what will happen to it (-1: shed, never ran) */
	int64_t cost;     /* simulated work */
	int thumb;        /* the "thumbnail" (a checksum), set by the job */
	weft_ctx *client; /* ABANDONED: the client's context */
};

/*
 * The job: make a thumbnail of an image. The work is simulated by a sleep
 * that honours the job's context, as real work would by passing ctx to its
 * I/O calls: when the deadline passes or the client goes away, it stops.
 */
static int make_thumbnail(weft_ctx *ctx, void *arg, void **result)
{
	struct image *img = arg;

	int err = weft_sleep_ctx(ctx, img->cost);
	if (err)
		return err; /* ETIMEDOUT or ECANCELED: stopped early */
	if (img->kind == CORRUPT)
		return EBADMSG; /* a failure: reported, contained */
	img->thumb = img->n * 31 + 7;
	*result = &img->thumb;
	return 0;
}

/* ---------------------------------------------------------------- the service */

#define IMAGES 600
#define ABANDON_EVERY 40

static struct image images[IMAGES];

/* Log lines: show the first two, and the first end line of each other
 * outcome (the format); count the rest. The sink may be called from several
 * workers at once. */
static atomic_int log_lines;
static atomic_int shown[4];

static void log_sink(const char *line, void *arg)
{
	static const char *const outcome[4] = {"", "status=failed", "status=timed_out",
	                                       "status=canceled"};
	(void)arg;
	int n = atomic_fetch_add(&log_lines, 1);
	for (int i = 0; i < 4; i++) {
		if (i == 0 ? n < 2
		           : strstr(line, outcome[i]) && atomic_exchange(&shown[i], 1) == 0) {
			printf("  log: %s\n", line);
			break;
		}
	}
}

static void print_metrics(const char *when, weft_workpool *p)
{
	weft_workpool_metrics m;

	weft_workpool_metrics_get(p, &m);
	printf("  [%s] workers %lld  queued %lld/%lld  running %lld  done %lld  failed %lld  "
	       "timed out %lld  cancelled %lld\n",
	       when, (long long)m.workers, (long long)m.queued, (long long)m.queue_cap,
	       (long long)m.running, (long long)m.completed, (long long)m.failed,
	       (long long)m.timed_out, (long long)m.canceled);
}

/* Collects results as they complete, until the channel closes. */
struct collector {
	weft_chan *results;
	long by_status[5];
	long wrong; /* a result that does not match its image's kind */
	long delivered[IMAGES];
	weft_wg done;
};

static void collect(void *arg)
{
	struct collector *c = arg;
	static const int want[KINDS] = {WEFT_WORKPOOL_COMPLETED, WEFT_WORKPOOL_FAILED,
	                                WEFT_WORKPOOL_TIMED_OUT, WEFT_WORKPOOL_CANCELED};
	weft_workpool_result r;

	while (weft_chan_recv(c->results, &r) == 0) {
		struct image *img = r.arg;
		c->by_status[r.status]++;
		c->delivered[img->n]++;
		if (r.status != want[img->kind] ||
		    (r.status == WEFT_WORKPOOL_COMPLETED && r.value != &img->thumb))
			c->wrong++;
	}
	weft_wg_done(&c->done);
}

static int run(void *unused)
{
	(void)unused;
	weft_workpool_config cfg = {
		.workers = 8,
		.queue_size = 64,
		.job_timeout_ns = 50 * MS, /* no thumbnail may take longer */
		.results = WEFT_WORKPOOL_AS_COMPLETED,
		.name = "thumbnails",
		.log_fn = log_sink,
	};
	weft_workpool *p;
	struct collector col = {0};
	long expect[KINDS] = {0}, shed = 0, submitted = 0;
	uint32_t rnd = 2024;

	/* The images: mostly normal (1-4 ms), some corrupt, a few huge
	 * (200 ms, past the 50 ms limit), and some from clients that leave
	 * (their work would take 10 s, but the client is gone long before). */
	for (int i = 0; i < IMAGES; i++) {
		rnd = rnd * 1103515245 + 12345;
		int kind = i % ABANDON_EVERY == 7  ? ABANDONED
		           : (rnd >> 16) % 100 < 5 ? CORRUPT
		           : (rnd >> 16) % 100 < 8 ? HUGE
		                                   : NORMAL;
		int64_t cost = kind == HUGE        ? 200 * MS
		               : kind == ABANDONED ? 10000 * MS
		                                   : (1 + (int)(rnd >> 20) % 4) * MS;
		images[i] = (struct image){.n = i, .kind = kind, .cost = cost};
	}

	if (weft_workpool_new(&p, &cfg) != 0)
		return 1;
	col.results = weft_chan_retain(weft_workpool_results(p));
	weft_wg_add(&col.done, 1);
	if (weft_go(collect, &col) != 0)
		return 1;

	printf("1. %d images through %d workers, a queue of 64, 50 ms per job at most\n", IMAGES,
	       cfg.workers);
	int64_t t0 = weft_now();
	for (int i = 0; i < IMAGES; i++) {
		struct image *img = &images[i];
		int err;

		if (i == IMAGES / 2) {
			/* Under pressure: twice the workers, at run time. */
			print_metrics("half way", p);
			weft_workpool_resize(p, 16);
			printf("  resized to 16 workers\n");
		}
		if (i >= 3 && images[i - 3].client)
			weft_ctx_cancel(images[i - 3].client); /* that client left */
		if (img->kind == ABANDONED) {
			/* A client's job: it runs under the client's context,
			 * with a time limit of its own; the client leaves a few
			 * submits later, and the job stops, queued or running. */
			if (weft_ctx_with_cancel(weft_ctx_background(), &img->client) != 0)
				return 1;
			weft_workpool_job job = {.fn = make_thumbnail,
			                         .arg = img,
			                         .ctx = img->client,
			                         .timeout_ns = 20000 * MS};
			err = weft_workpool_submit_job(p, &job, NULL);
		} else if (i % 10 == 3) {
			/* The front end's best-effort path: shed load rather
			 * than wait when the queue is full. */
			err = weft_workpool_trysubmit(p, make_thumbnail, img, NULL);
			if (err == EAGAIN) {
				shed++;
				img->kind = -1; /* never submitted */
				continue;
			}
		} else {
			err = weft_workpool_submit(p, make_thumbnail, img, NULL); /* waits */
		}
		if (err != 0) {
			fprintf(stderr, "submit: %s\n", strerror(err));
			return 1;
		}
		expect[img->kind]++;
		submitted++;
	}
	for (int i = IMAGES - 3; i < IMAGES; i++)
		if (images[i].client)
			weft_ctx_cancel(images[i].client);
	printf("  all submitted in %.0f ms; %ld shed with EAGAIN (queue full)\n",
	       (weft_now() - t0) / 1e6, shed);
	print_metrics("submitted", p);

	printf("2. graceful shutdown: drain the queue, 2 s at most\n");
	int err = weft_workpool_shutdown(p, WEFT_WORKPOOL_DRAIN, weft_now() + 2000 * MS);
	weft_wg_wait(&col.done); /* the results channel closes after the last */
	printf("  shutdown: %s after %.0f ms\n", err == 0 ? "done" : strerror(err),
	       (weft_now() - t0) / 1e6);

	weft_workpool_metrics m;
	weft_workpool_metrics_get(p, &m);
	print_metrics("final", p);
	printf("  queue wait  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %6.2f ms\n",
	       m.wait.p50 / 1e6, m.wait.p90 / 1e6, m.wait.p99 / 1e6, m.wait.max / 1e6);
	printf("  run time    p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %6.2f ms\n",
	       m.run.p50 / 1e6, m.run.p90 / 1e6, m.run.p99 / 1e6, m.run.max / 1e6);
	printf("  %d log lines (a start and an end per job; an end only for one that never "
	       "ran)\n",
	       atomic_load(&log_lines));

	/* Every job accounted exactly once, each ending as its kind must. */
	long once = 0;
	for (int i = 0; i < IMAGES; i++)
		once += images[i].kind >= 0 ? col.delivered[i] == 1 : col.delivered[i] == 0;
	int ok = err == 0 && once == IMAGES && col.wrong == 0 && m.submitted == submitted &&
	         m.completed == expect[NORMAL] && m.failed == expect[CORRUPT] &&
	         m.timed_out == expect[HUGE] && m.canceled == expect[ABANDONED] &&
	         m.completed + m.failed + m.timed_out + m.canceled == m.submitted &&
	         m.rejected == shed;
	printf("%s: %lld submitted = %lld completed + %lld failed + %lld timed out + %lld "
	       "cancelled\n",
	       ok ? "ok" : "WRONG", (long long)m.submitted, (long long)m.completed,
	       (long long)m.failed, (long long)m.timed_out, (long long)m.canceled);

	weft_chan_release(col.results);
	for (int i = 0; i < IMAGES; i++)
		weft_ctx_release(images[i].client);
	weft_workpool_free(p);
	return ok ? 0 : 1;
}

int main(void)
{
	return weft_main(run, NULL);
}
