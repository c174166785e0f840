/* SPDX-License-Identifier: MIT */
/*
 * weft/workpool.h - a production worker pool: a fixed (resizable) number of
 * worker goroutines taking jobs from a bounded queue, with backpressure,
 * per-job deadlines and cancellation, results in submission order or as
 * they complete, contained failures, graceful and immediate shutdown,
 * metrics with latency percentiles, and optional structured logs.
 *
 * What it mirrors in Go: the learning material's worker pool
 *
 *   jobs := make(chan Job, 1024)             // the bounded queue
 *   for w := 0; w < 8; w++ {                 // the workers
 *       go func() { for j := range jobs { results <- j.Run(ctx) } }()
 *   }
 *   jobs <- job                              // submit: blocks when full
 *
 * grown into what production code builds around it: select-with-default
 * submit (weft_workpool_trysubmit), submit with a context, a context per job
 * (context.WithTimeout), errgroup-like collection of errors, the sync.WaitGroup
 * wait, and http.Server's Shutdown(ctx) / Close() pair. The name is workpool
 * because weft_pool is Go's sync.Pool (weft/sync.h).
 *
 * A job is a function and an argument:
 *
 *   static int resize_image(weft_ctx *ctx, void *arg, void **result) { ... }
 *
 *   weft_workpool *p;
 *   weft_workpool_config cfg = { .workers = 8, .queue_size = 1024,
 *                                .job_timeout_ns = 2 * WEFT_SECOND };
 *   weft_workpool_new(&p, &cfg);
 *   weft_workpool_submit(p, resize_image, img, NULL);     // blocks while full
 *   ...
 *   weft_workpool_shutdown(p, WEFT_WORKPOOL_DRAIN, weft_now() + 5 * WEFT_SECOND);
 *   weft_workpool_free(p);
 *
 * How a job ends. Each job is accounted exactly once, as one of:
 *   WEFT_WORKPOOL_COMPLETED  fn returned 0 before its deadline
 *   WEFT_WORKPOOL_FAILED     fn returned an error number (not a deadline, not
 *                            a cancellation): the error is reported, and the
 *                            worker goes on with the next job. A failure never
 *                            takes the pool down. (C has no panics: a job that
 *                            crashes the process still crashes it.)
 *   WEFT_WORKPOOL_TIMED_OUT  its deadline passed before fn returned (whatever
 *                            fn returned: a late result is reported as late),
 *                            or while it was still queued (then fn never ran)
 *   WEFT_WORKPOOL_CANCELED   its context was cancelled (by the submitter's
 *                            context, or by the pool shutting down) before it
 *                            started (fn never ran), or while it ran and fn
 *                            returned an error; a fn that returns 0 despite a
 *                            cancellation has done its work and is COMPLETED
 *
 * Deadlines and cancellation. fn receives a context. It is cancelled when the
 * job's deadline passes (ETIMEDOUT), when the context given at submit is
 * cancelled, and when the pool is shut down with cancellation. fn is expected
 * to honour it (pass it to the _ctx calls, or test weft_ctx_err()). C cannot
 * stop a function that ignores it: the worker then stays busy until fn
 * returns, and a job whose deadline passed meanwhile is still reported as
 * timed out. The
 * context is borrowed for the call only: a job must not keep it (it may be
 * shared with the worker's next jobs); derive a child to hand to work that
 * outlives the call.
 *
 * Results. Each finished job has a weft_workpool_result (id, status, error,
 * value). The config chooses whether they are kept (the default is not: only
 * the metrics count them), and if so in which order: as they complete, or in
 * submission order (a reorder buffer: a job's queue slot is held until its
 * result has been delivered, so a slow job holds back at most queue_size
 * jobs behind it, and memory stays bounded). They go to a channel the caller
 * reads (weft_workpool_results(); closed after the last result of a pool that
 * has shut down), or to a callback.
 *
 * Metrics (weft_workpool_metrics) are readable at any time, from any thread:
 * counts of submitted, queued, running, completed, failed, timed-out and
 * cancelled jobs, and percentiles of queue wait and run time from fixed-size
 * log-linear histograms. Logging: one logfmt line per job start and end,
 * to a FILE or a callback.
 *
 * Everything here may be called from goroutines and from foreign threads.
 * Errors are returned as error numbers, never through errno. Misuse (a
 * NULL pool, freeing twice, waiting for or shutting down a pool from one of
 * its own jobs, an unknown shutdown mode) is a fatal error naming it.
 *
 * Cost: a submit and its job's dispatch take no lock and, while one thread
 * at a time submits, no atomic read-modify-write instruction either: that
 * thread is given the queue's tail, and another submitting thread takes it
 * back with one membarrier(2) system call (about a microsecond; the process
 * registers for it on the first pool). Idle workers spin briefly before
 * they park, as Go's scheduler does.
 */
#ifndef WEFT_WORKPOOL_H
#define WEFT_WORKPOOL_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "chan.h"
#include "context.h"

WEFT_BEGIN_DECLS

typedef struct weft_workpool weft_workpool;

/*
 * A job: do the work for arg under ctx; store a result (any pointer; the pool
 * never looks at it) in *result if there is one (it starts as NULL). Return 0,
 * or an error number. Runs on a worker goroutine, which it may block (a
 * blocking job takes its worker, not a thread). Go: func(ctx) (T, error).
 */
typedef int (*weft_workpool_fn)(weft_ctx *ctx, void *arg, void **result);

/* How a job ended; see the file comment. */
enum weft_workpool_status {
	WEFT_WORKPOOL_COMPLETED = 1,
	WEFT_WORKPOOL_FAILED = 2,
	WEFT_WORKPOOL_TIMED_OUT = 3,
	WEFT_WORKPOOL_CANCELED = 4,
};

/* The outcome of one job, as the results channel and callback deliver it. */
typedef struct weft_workpool_result {
	uint64_t id;     /* the id submit gave (1, 2, ... in submission order) */
	int status;      /* enum weft_workpool_status */
	int err;         /* 0 (completed); fn's error (failed, or cancelled while
	                  * running); ETIMEDOUT (timed out); ECANCELED (cancelled
	                  * before it ran) */
	void *arg;       /* the job's arg, so the receiver can identify or free it */
	void *value;     /* what fn stored in *result; NULL if it never ran */
	int64_t wait_ns; /* submit to start (or to being dropped); -1 if not
	                  * measured (see latency_sample) */
	int64_t run_ns;  /* fn's running time; -1 if not measured or never ran */
} weft_workpool_result;

/* Which results are kept, and in what order (weft_workpool_config.results). */
enum weft_workpool_order {
	WEFT_WORKPOOL_NO_RESULTS = 0,   /* none: only the metrics count jobs */
	WEFT_WORKPOOL_AS_COMPLETED = 1, /* in the order jobs finish */
	WEFT_WORKPOOL_IN_ORDER = 2,     /* in submission order (job id order) */
};

/* A worker takes up to this many jobs from the queue at once when jobs are
 * short (under a microsecond) and the queue is long, which saves most of the
 * cost of taking them. Those jobs leave the queue (and its count) a little
 * before they start; a batch never holds jobs back from an idle worker for
 * more than a few microseconds. */
#define WEFT_WORKPOOL_BATCH 8

/* The default of weft_workpool_config.queue_size. */
#define WEFT_WORKPOOL_DEFAULT_QUEUE 1024
/* The largest queue_size and number of workers accepted. */
#define WEFT_WORKPOOL_MAX_QUEUE ((size_t)1 << 30)
#define WEFT_WORKPOOL_MAX_WORKERS 100000

/*
 * Options for weft_workpool_new(). All-zero (or a NULL pointer) gives the
 * defaults: weft_procs() workers, a queue of 1024, no results kept, no job
 * timeout, no log, adaptive latency sampling.
 */
typedef struct weft_workpool_config {
	/* Worker goroutines (1 .. WEFT_WORKPOOL_MAX_WORKERS); 0: weft_procs(). */
	int workers;
	/* The bound on queued jobs (submitted, not yet started), 1 ..
	 * WEFT_WORKPOOL_MAX_QUEUE; 0: WEFT_WORKPOOL_DEFAULT_QUEUE. A submit
	 * finding it full waits (or fails, in its try form): backpressure. The
	 * queue's memory (about 64 bytes a slot) is allocated once, up front. */
	size_t queue_size;
	/* enum weft_workpool_order. */
	int results;
	/* The capacity of the results channel; 0: queue_size. Ignored with a
	 * callback. */
	size_t results_buffer;
	/* Results go to this callback instead of a channel (with results ==
	 * WEFT_WORKPOOL_NO_RESULTS the order is as completed). It runs on a
	 * worker goroutine; as completed, several run at once; in order, one at a
	 * time, in id order. It must not block for long (a worker waits for it).
	 * r is valid for the call only. */
	void (*on_result)(const weft_workpool_result *r, void *arg);
	void *on_result_arg;
	/* The parent of the pool's context (NULL: background; retained until the
	 * pool is freed). Cancelling it is weft_workpool_shutdown_now(): every
	 * queued and running job is cancelled and submit fails with ECANCELED;
	 * the pool must still be shut down or freed. */
	weft_ctx *ctx;
	/* A run-time limit for every job that has no timeout_ns of its own:
	 * each such job's context expires job_timeout_ns after it starts, or
	 * at its own deadline (deadline_ns, the submitter's context's) if that
	 * is earlier. 0: none. */
	int64_t job_timeout_ns;
	/* Structured logs: one logfmt line per job start and end, e.g.
	 *   ts=2026-11-22T18:33:23.123456Z pool=img event=end job=17 worker=3
	 *   status=failed err=ECONNREFUSED wait_us=12.0 run_us=1500.2
	 * to log (written whole, with the stream's lock) and/or log_fn (line
	 * without the newline, valid for the call only). NULL: no logging. */
	FILE *log;
	void (*log_fn)(const char *line, void *arg);
	void *log_arg;
	/* The pool's name in logs and in goroutine dumps (copied, at most 23
	 * bytes kept); NULL: "workpool". */
	const char *name;
	/* The workers' stack size (see weft_go_options); 0: the default. */
	size_t stack_size;
	/* Which jobs are timed for the latency histograms: 1: every job (two
	 * clock reads each, about 60 ns on a VM); N (a power of two): one job in
	 * N, chosen by id so the sample is unbiased; 0: adaptive (every job
	 * while jobs run for a microsecond or more; one in 256 once they are
	 * shorter, where timing each would cost more than running it). Jobs
	 * are always timed where their deadline or the log needs it. */
	int latency_sample;
} weft_workpool_config;

/*
 * weft_workpool_new - make a pool and start its workers. *out gets the pool;
 * the caller owns it and ends it with weft_workpool_free(), after
 * weft_workpool_shutdown() for a graceful end. cfg may be NULL; it is copied
 * (cfg->ctx is retained).
 * Errors: EINVAL (out NULL; workers, queue_size or latency_sample out of
 * range; job_timeout_ns < 0; results not one of enum weft_workpool_order),
 * ENOMEM, EAGAIN (a worker could not be started: see weft_go). Nothing is
 * left running on error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_workpool_new(weft_workpool **out, const weft_workpool_config *cfg);

/*
 * weft_workpool_submit - queue fn(ctx, arg, &result) to run on a worker, and
 * give its id (1, 2, ... in submission order) in *id if id is not NULL.
 * Waits while the queue is full. The job has no deadline of its own (the
 * pool's job_timeout_ns applies) and runs under the pool's context.
 * Returns 0, or: EPIPE (the pool is shutting down or shut down), ECANCELED
 * (the pool's context is cancelled), EINVAL (fn NULL). On error nothing was
 * queued and no result will come.
 * Blocks: yes, while the queue is full (and, on one P, a submitting
 * goroutine lets waiting workers run every 512 jobs, so that jobs start
 * before the queue fills). Thread-safety: any thread; jobs may
 * submit to their own pool (but a pool whose every worker waits to submit to
 * its own full queue deadlocks, as Go's would; and with IN_ORDER results a
 * job's queue slot stays taken until its own result is delivered, so a job
 * that submits more than queue_size jobs to its own pool waits for ever,
 * even with idle workers: give such a job a deadline, or use AS_COMPLETED).
 * arg is borrowed until the job's result has been delivered (or, with no
 * results, until it ran). A goroutine blocked here when the pool shuts down
 * returns EPIPE, and the owner may free the pool meanwhile.
 */
WEFT_API int weft_workpool_submit(weft_workpool *p, weft_workpool_fn fn, void *arg, uint64_t *id);

/* weft_workpool_trysubmit - weft_workpool_submit() that returns EAGAIN at
 * once when the queue is full (Go: select { case jobs <- j: default: }).
 * Blocks: no. */
WEFT_API int weft_workpool_trysubmit(weft_workpool *p, weft_workpool_fn fn, void *arg,
                                     uint64_t *id);

/* weft_workpool_submit_until - weft_workpool_submit() that gives up waiting
 * for room at deadline_ns (weft_now()'s clock) with ETIMEDOUT. The deadline
 * bounds the wait only, not the job. */
WEFT_API int weft_workpool_submit_until(weft_workpool *p, weft_workpool_fn fn, void *arg,
                                        int64_t deadline_ns, uint64_t *id);

/*
 * weft_workpool_submit_ctx - submit under ctx (Go: pool.Submit(ctx, job)):
 * waiting for room gives up with weft_ctx_err(ctx) when ctx is done, and the
 * job runs under a child of ctx, so cancelling ctx cancels the job whether it
 * is queued (it is reported cancelled, or timed out if ctx's deadline passed,
 * without running) or running (fn sees its context cancelled), and ctx's
 * deadline is the job's deadline. ctx is retained until the job has finished.
 * Otherwise as weft_workpool_submit().
 */
WEFT_API int weft_workpool_submit_ctx(weft_ctx *ctx, weft_workpool *p, weft_workpool_fn fn,
                                      void *arg, uint64_t *id);

/* Flags for weft_workpool_job.flags. */
#define WEFT_WORKPOOL_TRY 1 /* do not wait for room: EAGAIN when full */

/* The full form of a submit (weft_workpool_submit_job). All-zero fields
 * mean "none"; fn is required. */
typedef struct weft_workpool_job {
	weft_workpool_fn fn;
	void *arg;
	/* As weft_workpool_submit_ctx(): bounds the wait, parents the job's
	 * context (retained while the job is queued or running). */
	weft_ctx *ctx;
	/* An absolute deadline for the job (weft_now()'s clock): queue time
	 * counts; a job still queued at its deadline times out without running.
	 * 0: none. */
	int64_t deadline_ns;
	/* A run-time limit counted from the job's start. 0: the pool's
	 * job_timeout_ns. With both, the earlier deadline applies. */
	int64_t timeout_ns;
	/* When to give up waiting for room (ETIMEDOUT). 0: no limit. */
	int64_t wait_deadline_ns;
	int flags; /* WEFT_WORKPOOL_TRY */
} weft_workpool_job;

/* weft_workpool_submit_job - submit with every option. Errors as the forms
 * above, and EINVAL (job NULL, deadline_ns or timeout_ns negative), ENOMEM
 * (with both ctx and wait_deadline_ns, a full queue: no memory for the
 * context that bounds the wait by both; nothing was queued). */
WEFT_API int weft_workpool_submit_job(weft_workpool *p, const weft_workpool_job *job, uint64_t *id);

/*
 * weft_workpool_results - the results channel (elements weft_workpool_result),
 * or NULL when the pool keeps no results or delivers them to a callback.
 * Receive from it (or select on it) as results come; it is closed after the
 * last result once the pool has shut down, so a receive loop ends with EPIPE.
 * Unread results hold workers back (backpressure again): keep reading.
 * Borrowed: valid until weft_workpool_free(); weft_chan_retain() it to keep it
 * longer. Blocks: no. Thread-safety: any thread.
 */
WEFT_API weft_chan *weft_workpool_results(weft_workpool *p);

/*
 * weft_workpool_wait - wait until the pool is idle: every job submitted so
 * far has finished and its result, if the pool keeps results, has been
 * delivered (the callback has returned, or the result is in the channel):
 * Go's wg.Wait() after the last submit. With other submitters still busy it
 * waits as long as they keep the pool busy. With results in a channel,
 * someone must be reading it. Calling it from one of the pool's own jobs is
 * a fatal error (it would wait for itself).
 * Blocks: yes. Thread-safety: any thread, any number of waiters.
 */
WEFT_API void weft_workpool_wait(weft_workpool *p);
/* weft_workpool_wait_until - weft_workpool_wait() giving up at deadline_ns:
 * 0 (idle) or ETIMEDOUT. */
WEFT_API int weft_workpool_wait_until(weft_workpool *p, int64_t deadline_ns);
/* weft_workpool_wait_ctx - weft_workpool_wait() giving up when ctx is done:
 * 0 or weft_ctx_err(ctx). */
WEFT_API int weft_workpool_wait_ctx(weft_ctx *ctx, weft_workpool *p);

/*
 * weft_workpool_resize - change the number of workers to n (1 ..
 * WEFT_WORKPOOL_MAX_WORKERS) at run time. New workers start at once; when
 * shrinking, workers leave as they finish their current job (none is
 * interrupted), so the count in the metrics reaches n soon, not at return.
 * A pool's workers are reused for every job (Go's "reusable goroutine
 * pool"): resizing is the only time goroutines start or end before shutdown.
 * Returns 0, or EINVAL (n out of range), EPIPE (shut down), ENOMEM or EAGAIN
 * (a new worker could not be started; those that could run).
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_workpool_resize(weft_workpool *p, int n);

/* How weft_workpool_shutdown() treats jobs still queued. */
enum weft_workpool_shutdown_mode {
	WEFT_WORKPOOL_DRAIN = 0,   /* run them (Go: close(jobs); wg.Wait()) */
	WEFT_WORKPOOL_DISCARD = 1, /* report them cancelled without running them */
};

/*
 * weft_workpool_shutdown - graceful shutdown (Go: http.Server.Shutdown(ctx)).
 * The pool stops taking jobs at once (submit returns EPIPE, and submitters
 * waiting for room are woken with EPIPE). Queued jobs are run (DRAIN) or
 * reported cancelled (DISCARD); running jobs finish. Then the workers exit,
 * the last result is delivered and the results channel is closed.
 * If that has not happened by deadline_ns, the shutdown turns immediate (as
 * weft_workpool_shutdown_now(): queued jobs are cancelled, running jobs'
 * contexts are cancelled) and the call returns ETIMEDOUT at the deadline; the
 * workers exit as their jobs return (a job that ignores its context keeps its
 * worker until it returns). Returns 0 when every worker has exited in time.
 * It may be called again (with a later deadline, or after _shutdown_now) to
 * wait for the workers; a second call's mode only ever makes it stricter.
 * Calling it from one of the pool's own jobs is a fatal error.
 * Blocks: yes, until done or the deadline. Thread-safety: any thread.
 */
WEFT_API int weft_workpool_shutdown(weft_workpool *p, int mode, int64_t deadline_ns);

/*
 * weft_workpool_shutdown_now - immediate shutdown (Go: http.Server.Close()):
 * stop taking jobs, report every queued job cancelled, cancel the contexts of
 * the running jobs. Does not wait: weft_workpool_shutdown() waits for the
 * workers, or weft_workpool_free() lets them go. Idempotent.
 * Blocks: no. Thread-safety: any thread (also from a job).
 */
WEFT_API void weft_workpool_shutdown_now(weft_workpool *p);

/*
 * weft_workpool_free - drop the caller's pool. A pool not yet shut down is
 * shut down immediately first (weft_workpool_shutdown_now()). Does not wait:
 * the memory goes when the last worker has exited. p must not be used after
 * (freeing twice is a fatal error when it can be detected). NULL is ignored.
 * Blocks: no. Thread-safety: any thread, once.
 */
WEFT_API void weft_workpool_free(weft_workpool *p);

/* A latency distribution, in nanoseconds. Percentiles come from a
 * log-linear histogram (16 buckets per power of two: within about 3%). */
typedef struct weft_workpool_latency {
	int64_t count; /* jobs measured */
	int64_t mean;
	int64_t p50, p90, p99;
	int64_t max; /* exact */
} weft_workpool_latency;

/*
 * Pool metrics, a snapshot. Totals count since the pool was made; a job
 * counts as finished (completed, failed, ...) once its result is delivered.
 * When the pool is idle, submitted == completed + failed + timed_out +
 * canceled exactly; under load, queued and running are momentary, and a job
 * moving between states may be missed by the snapshot (never queued >
 * queue_cap).
 */
typedef struct weft_workpool_metrics {
	int64_t workers;   /* workers now */
	int64_t queue_cap; /* the bound on queued jobs */
	int64_t submitted; /* jobs accepted, total */
	int64_t rejected;  /* submits refused (full, gave up waiting, shut down) */
	int64_t queued;    /* waiting for a worker now */
	int64_t running;   /* in fn now */
	int64_t completed; /* total, by outcome: */
	int64_t failed;
	int64_t timed_out;
	int64_t canceled;
	int64_t results_dropped;    /* results not delivered: the results channel
	                          * was still full at an immediate shutdown */
	weft_workpool_latency wait; /* submit to start */
	weft_workpool_latency run;  /* start to end */
} weft_workpool_metrics;

/* weft_workpool_metrics_get - fill *out with a snapshot of p's metrics.
 * Blocks: no (it takes the pool's lock briefly). Thread-safety: any thread,
 * at any time until weft_workpool_free(). */
WEFT_API void weft_workpool_metrics_get(weft_workpool *p, weft_workpool_metrics *out);

/* weft_workpool_status_name - "completed", "failed", "timed_out",
 * "canceled", or "unknown". Blocks: no. */
WEFT_API const char *weft_workpool_status_name(int status);

WEFT_END_DECLS

#endif /* WEFT_WORKPOOL_H */
