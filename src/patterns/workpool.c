/* SPDX-License-Identifier: MIT */
/*
 * workpool.c - weft_workpool, the worker pool of weft/workpool.h: a bounded
 * lock-free job queue, worker goroutines that take jobs from it, the wake-up
 * protocols between submitters and workers, results (as completed or in
 * submission order), metrics and logs, resizing and shutdown. Built on the
 * public API only (weft.h), as a user's code would be.
 *
 * Design
 *
 * Go's version of this pool is a buffered channel and workers ranging over
 * it. A weft channel would do too, but a channel operation takes a lock (two
 * locked instructions, 10-20 ns each on a VM: more than a trivial job), and
 * the pool needs what a channel cannot give: an id per job, a place for
 * in-order results, exact counts. So the queue is a bounded MPMC ring after
 * Dmitry Vyukov's: cap slots, a tail counter submitters claim tickets from,
 * a head counter workers claim from, and a sequence number per slot that the
 * producer of ticket t sets to t + 1 (release) once the job is in it:
 *
 *   submit:  room if t - *fcur < cap; CAS tail t -> t + 1; write the slot;
 *            store seq = t + 1
 *   take:    while slot[head + k].seq == head + k + 1, copy it out; then
 *            CAS head -> head + k (up to BATCH jobs for one CAS)
 *
 * Only producers write slots, so their cache lines travel one way; a slot is
 * free again once head has passed its ticket (the copy came before the CAS).
 * Ticket t is job id t + 1, and tail is the "submitted" count. The top bits
 * of tail say CLOSED (shutdown: every later claim fails, so no job slips in
 * after the workers' last look) and BIASED (below).
 *
 * In submission-order mode (IN_ORDER) head passing a ticket does not free
 * its slot: the slot stays held, with the job's result beside it (ores[]),
 * until whichever worker holds the delivery role has delivered the results
 * before it and it, and advanced dcur. So a slow job holds back at most cap
 * jobs behind it: the reorder buffer is the queue itself, bounded by it.
 * `fcur` points to the cursor whose advance frees slots: head or dcur.
 *
 * Biased submitting (see the section of that name): the thread that feeds
 * the pool alone claims tickets with plain stores, no CAS; any other
 * submitter first revokes that with membarrier(2).
 *
 * Parking. Nobody parks in the common case, and nobody calls into weft's
 * sync then. Two benaphores (a count that goes negative with waiters, plus a
 * weft_sem for the tokens) carry the slow cases: parked workers (wake_count)
 * and submitters waiting for room (space_count). Each is a Dekker pair, so a
 * wake-up cannot be lost:
 *
 *   submitter: CAS tail (claim)       then load wake_count (< 0: wake one)
 *   worker:    fetch_sub wake_count   then load tail vs head (work: undo)
 *
 *   worker:    CAS head (frees)       then load space_count (< 0: wake one)
 *   submitter: fetch_sub space_count  then load tail vs *fcur (room: undo)
 *
 * (The biased submitter has no CAS there: a worker that parks while the tail
 * is biased looks again RECHECK_NS later, by when the submitter's stores are
 * visible.) A waiter that gives up (deadline, context) undoes its
 * registration with a CAS while the count is negative; if a waker got there
 * first a token is on its way, which it takes (and, having given up, passes
 * on).
 *
 * Spinning, as Go's scheduler spins Ms: a worker that finds the queue empty
 * spins a while (at most MAX_SPINNERS at once) before it parks, and a
 * submitter wakes a parked worker only when nobody spins. A woken worker
 * counts as spinning until it finds a job; the last spinner to find one
 * wakes another if work remains, so a job that blocks its worker can never
 * strand the queue, and a burst wakes workers one at a time, not all at
 * once. With one P a spinner yields (nothing else could run while it spins),
 * and a submitter yields to a spinner every HANDOFF jobs.
 *
 * Rejected: a weft channel as the queue (above); a queue per worker with
 * stealing (jobs are not spawned by workers, so locality buys nothing, and a
 * job stuck behind a slow one on its worker's queue is what a pool must
 * avoid); a mutex and a condition variable (a lock round trip per job for
 * everyone); a queue per submitting thread (no exact bound on the total
 * without a shared counter, which is the CAS again).
 *
 * Contexts cost nothing for plain jobs: they run under the pool's context,
 * which an immediate shutdown cancels. A job with a deadline, a timeout or a
 * submitter's context gets a context of its own; when its parent is the
 * submitter's context (which the pool cannot cancel), the worker registers
 * it (job_ctx, under jm) so that an immediate shutdown can cancel it.
 *
 * Metrics: per worker, single-writer counters by outcome (summed into
 * `retired` when a worker exits), and latency histograms shared by stripes
 * of workers; percentiles are read from log-linear buckets (16 per power of
 * two), never by sorting samples. Timing a job costs two clock reads (about
 * 60 ns on a VM), more than a trivial job, so by default (latency_sample 0)
 * jobs shorter than a microsecond are timed one in 256, chosen by ticket.
 *
 * Lifetime: the pool is reference counted (the owner, each live worker, the
 * watcher); the last reference frees it, so weft_workpool_free() need not
 * wait for workers stuck in jobs that ignore their context.
 *
 * Lock order: mu, then bias_mu or a worker's jm. No lock is held while a job
 * runs or while a result is delivered.
 */
#include "weft.h"

#include <errno.h>
#include <limits.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "time_sum.h"

/* ---------------------------------------------------------------- helpers */

#define CACHE_LINE 64
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define SC memory_order_seq_cst

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

/* API misuse: weft's fatal error (Go's panic), after what the program
 * printed so far. fmt must be a literal. */
#define wp_fatal(fmt, ...) (fflush(stdout), weft_fatalf("workpool: " fmt, ##__VA_ARGS__))

#define POOL_MAGIC 0x776b706c /* "wkpl" */
#define POOL_FREED 0x64656164 /* "dead" */

/* The top bits of tail: the queue takes no more jobs; one producer thread
 * owns the tail (see "Biased submitting"). The rest counts tickets. */
#define CLOSED ((uint64_t)1 << 63)
#define BIASED ((uint64_t)1 << 62)
#define TICKETS (BIASED - 1)

/* Biased submitting: a thread becomes the owner after BIAS_STREAK submits
 * in a row with no other submitter, and not within BIAS_COOLDOWN tickets of
 * a revocation. */
#define BIAS_STREAK 64
#define BIAS_COOLDOWN 4096

/* ctl: what a worker must look at between jobs; zero in the common case, so
 * one relaxed load per job covers it. */
#define CTL_DISCARD 1u     /* report queued jobs cancelled, do not run them */
#define CTL_KILLED 2u      /* immediate shutdown: also cancel running jobs */
#define CTL_PARENT 4u      /* the kill came from the parent context */
#define CTL_EXCESS_SHIFT 8 /* above: workers that should leave (resize) */
#define CTL_EXCESS_ONE ((uint64_t)1 << CTL_EXCESS_SHIFT)

/* Spins before parking: a worker looking for work, a submitter for room. On
 * more than one P each round is RELAX_PER_SPIN pauses (a worker yields once,
 * at the end; a submitter every 8th round); on one P every round yields
 * (nothing else could run while we spin). */
#define WORKER_SPINS 64
#define SUBMIT_SPINS 32
#define RELAX_PER_SPIN 8

/* On one P, a submitter lets the workers run every HANDOFF jobs (handoff). */
#define HANDOFF 512

/*
 * Spinning workers at most (Go lets at most half its busy Ps' worth of Ms
 * spin). Two:
 * with one, the spinner that finds work must wake a successor (so that a job
 * that blocks its worker cannot strand the queue) and the drained worker
 * then parks, a park and a wake per burst of jobs; with two, the one that
 * finds work leaves the other spinning, and a steady stream of bursts needs
 * no park at all. On one P spinning is yielding, which costs nothing while
 * the submitter has work to do.
 */
#define MAX_SPINNERS 2

/* The most jobs a worker takes from the queue at once (see batch_size). */
#define BATCH WEFT_WORKPOOL_BATCH

/* A worker that parks while the tail is biased looks again after this long
 * (see go_idle): the bound on the delay of the one race the biased
 * submitter's unfenced look at wake_count allows. */
#define RECHECK_NS (50 * 1000)

/* A benaphore token count no release can exceed (weft_sem's capacity). */
#define SEM_HUGE ((int64_t)1 << 62)

/* Adaptive sampling: jobs shorter than SHORT_NS are timed one in
 * SAMPLE_SPARSE + 1 once SHORT_STREAK timed ones in a row were short; a
 * sampled job of LONG_NS or more turns timing every job back on. */
#define SAMPLE_SPARSE 255u
#define SHORT_NS 1000
#define LONG_NS 2000
#define SHORT_STREAK 32

/* Histograms: values 0..15 ns exactly, then 16 buckets per power of two up
 * to 2^HIST_MAX_EXP ns (about 4.9 hours; larger values go to the last
 * bucket, max stays exact). */
#define HIST_SUB 16
#define HIST_MAX_EXP 44
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_EXP - 4) * HIST_SUB)
#define MAX_STRIPES 16

#define NAME_MAX_LEN 24

/* Slot flags. */
#define JOB_SAMPLED 1u /* timed for the histograms */
#define JOB_STAMPED 2u /* t_submit is set */
#define JOB_EXT 4u     /* a context, a deadline or a timeout */

/* ---------------------------------------------------------------- types */

/*
 * One queue slot: a job, as the producer of its ticket wrote it before its
 * release store of seq (ticket + 1). A consumer reads it after an acquire
 * load of seq, and before its CAS of head claims it: once head has passed a
 * ticket, the slot may be reused (for ticket + cap) at once. So a consumer
 * whose CAS then fails may have read a slot being rewritten: the fields are
 * relaxed atomics (plain moves), and what it read is thrown away. Only
 * producers write slots: the lines travel one way. 24 bytes: a plain job
 * touches only this, and a queue of 1024 fits in a 32 KiB L1 cache.
 */
struct slot {
	_Atomic uint32_t seq;   /* the low 32 bits of ticket + 1 once published */
	_Atomic uint32_t flags; /* JOB_* */
	_Atomic(weft_workpool_fn) fn;
	_Atomic(void *) arg;
};

/* The rest of a job, beside its slot (same index), read only when the
 * slot's flags say so (JOB_EXT, JOB_STAMPED). Atomic for the same reason
 * as the slot's fields. */
struct slot_ext {
	_Atomic(weft_ctx *) ctx;     /* the submitter's context, retained; or NULL */
	_Atomic int64_t deadline_ns; /* absolute, 0: none */
	_Atomic int64_t timeout_ns;  /* from the start, 0: the pool's */
	_Atomic int64_t t_submit;    /* weft_now() at submit, when JOB_STAMPED */
};

/* A job as a worker holds it after taking it from the queue. */
struct job {
	uint64_t ticket;
	weft_workpool_fn fn;
	void *arg;
	weft_ctx *ctx;
	int64_t deadline_ns, timeout_ns, t_submit;
	uint32_t flags;
};

/* A result waiting for in-order delivery, beside slot (ticket & mask). The
 * fields are written by the worker that ran the ticket before its release
 * store of done, read by the deliverer after its acquire load. */
struct ores {
	_Atomic int done;
	int status, err;
	void *value;
	int64_t wait_ns, run_ns;
};

/* Counters and sums that a histogram keeps; updated with relaxed atomics. */
struct hist {
	_Atomic int64_t n, sum, max;
	_Atomic int64_t b[HIST_BUCKETS];
};

/* Histograms of a stripe of workers (worker index mod nstripes). */
struct stripe {
	alignas(CACHE_LINE) struct hist wait, run;
};

enum { NSTAT = 5 }; /* index 0 unused; 1..4 = enum weft_workpool_status */

struct worker {
	struct weft_workpool *p;    /* immutable */
	struct worker *next, *prev; /* the pool's list, under p->mu */
	int index;                  /* immutable: for logs, and the stripe */
	_Atomic uint64_t gid;       /* its goroutine id, set when it starts */
	/* Written by the worker only; read by snapshots. */
	alignas(CACHE_LINE) _Atomic int running; /* inside fn */
	_Atomic int64_t count[NSTAT];            /* jobs finished, by outcome */
	/* The running job's own context when its parent is the submitter's
	 * (so that kill can cancel it); under jm. */
	weft_mutex jm;
	weft_ctx *job_ctx;
	/* Private to the worker. */
	int spinning;          /* counted in p->nspinning */
	bool left;             /* no longer counted in p->live (resize) */
	uint32_t short_streak; /* timed jobs in a row under SHORT_NS (to SHORT_STREAK) */
};

struct weft_workpool {
	/* Immutable after new (read by everyone, on every job). */
	_Atomic uint32_t magic;
	struct slot *ring;
	struct slot_ext *ext;   /* beside ring */
	struct ores *ores;      /* IN_ORDER only */
	uint64_t cap, mask;     /* mask = cap - 1 when cap is a power of two, else 0 */
	_Atomic uint64_t *fcur; /* &head or &dcur: whose advance frees slots */
	int order;              /* enum weft_workpool_order (callback: AS_COMPLETED if 0) */
	bool deliver;           /* results are kept */
	bool log_on;
	bool bias_ok;       /* membarrier works: submitters may be biased */
	bool chaos;         /* WEFT_DEBUG has chaos: widen the race windows */
	bool slow_jobs;     /* every job takes run_slow: a default timeout, a log */
	bool fixed_sample;  /* latency_sample given: smask never changes */
	weft_ctx *ctx;      /* the pool's context: parent of the jobs' */
	weft_ctx *parent;   /* cfg.ctx, retained, or NULL */
	weft_chan *results; /* the results channel, or NULL */
	void (*on_result)(const weft_workpool_result *, void *);
	void *on_result_arg;
	int64_t job_timeout_ns;
	FILE *log;
	void (*log_fn)(const char *, void *);
	void *log_arg;
	char name[NAME_MAX_LEN];
	size_t stack_size;
	struct stripe *stripes;
	unsigned nstripes; /* a power of two */

	/* Read on every submit or job, written rarely. */
	alignas(CACHE_LINE) _Atomic uint64_t smask; /* time ticket t when (t & smask) == 0 */
	_Atomic uint64_t ctl;                       /* CTL_* */
	_Atomic bool closed;                        /* tail has CLOSED (for pollers) */

	/* Producers. */
	alignas(CACHE_LINE) _Atomic uint64_t tail;
	_Atomic uint64_t fcache;         /* a recent value of *fcur (see room_for) */
	_Atomic int bias_busy;           /* the owner is inside a biased submit */
	_Atomic uintptr_t last_producer; /* who submitted last (a hint) */
	_Atomic uint32_t streak;         /* how many times in a row (a hint) */
	/* Biased submitting, read on every submit. */
	alignas(CACHE_LINE) _Atomic uintptr_t bias_owner; /* submitter_self() of the owner, or 0 */
	_Atomic uint64_t bias_after; /* no bias before this ticket (cooldown) */
	weft_mutex bias_mu;          /* serialises revoking and granting */
	/* Consumers. */
	alignas(CACHE_LINE) _Atomic uint64_t head;
	/* The in-order deliverer. */
	alignas(CACHE_LINE) _Atomic uint64_t dcur;
	_Atomic int delivering; /* the delivery role is taken */

	/* Parked workers and spinners. */
	alignas(CACHE_LINE) _Atomic int64_t wake_count;
	_Atomic int nspinning;
	weft_sem wake_sem;
	/* Submitters waiting for room. */
	alignas(CACHE_LINE) _Atomic int64_t space_count;
	weft_sem space_sem;

	/* Everything else. */
	alignas(CACHE_LINE) weft_mutex mu;
	weft_cond cv;             /* idle, exits: under mu */
	struct worker *workers;   /* live workers, under mu */
	int live;                 /* live workers, under mu (incl. leaving) */
	int next_index;           /* under mu */
	int64_t retired[NSTAT];   /* counts of exited workers, under mu */
	bool finished;            /* the last worker has exited: under mu */
	_Atomic int idle_waiters; /* in weft_workpool_wait */
	_Atomic int refs;
	_Atomic int64_t rejected;
	_Atomic int64_t dropped;
};

/* ---------------------------------------------------------------- small parts */

static inline struct slot *slot_at(struct weft_workpool *p, uint64_t t)
{
	return &p->ring[p->mask ? (t & p->mask) : (t % p->cap)];
}

static inline struct slot_ext *ext_at(struct weft_workpool *p, uint64_t t)
{
	return &p->ext[p->mask ? (t & p->mask) : (t % p->cap)];
}

static inline struct ores *ores_at(struct weft_workpool *p, uint64_t t)
{
	return &p->ores[p->mask ? (t & p->mask) : (t % p->cap)];
}

/* aligned_alloc wants a multiple of the alignment. */
static size_t round_line(size_t n)
{
	return n < CACHE_LINE ? CACHE_LINE : (n + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
}

/* Count a finished job. Single writer: a load and a store, no locked
 * instruction. A release: whoever reads the count (weft_workpool_wait, with
 * acquire) sees what the job and its result's delivery did. */
static inline void bump(_Atomic int64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, RLX) + 1, REL);
}

static void check(struct weft_workpool *p, const char *what)
{
	if (p == NULL)
		wp_fatal("%s of a nil pool", what);
	uint32_t m = atomic_load_explicit(&p->magic, RLX);
	if (m != POOL_MAGIC)
		wp_fatal("%s of a %s pool", what,
		         m == POOL_FREED ? "freed" : "corrupt or uninitialised");
}

static void pool_release(struct weft_workpool *p);

/* ---------------------------------------------------------------- benaphores */

/* Wake one waiter of a benaphore if one is registered; 1 if one was. */
static int bena_wake_one(_Atomic int64_t *count, weft_sem *sem)
{
	int64_t c = atomic_load_explicit(count, SC);
	while (c < 0) {
		if (atomic_compare_exchange_weak_explicit(count, &c, c + 1, SC, SC)) {
			weft_sem_release(sem, 1);
			return 1;
		}
	}
	return 0;
}

/* Wake every registered waiter. */
static void bena_wake_all(_Atomic int64_t *count, weft_sem *sem)
{
	int64_t c = atomic_load_explicit(count, SC);
	while (c < 0) {
		if (atomic_compare_exchange_weak_explicit(count, &c, 0, SC, SC)) {
			weft_sem_release(sem, -c);
			return;
		}
	}
}

/*
 * A registered waiter leaves without having been woken: take its
 * registration back while the count shows it; else a waker has counted it as
 * woken and a token is (or will be) in the semaphore: take that token. Returns
 * 1 when it took a token (it was woken, in effect).
 */
static int bena_undo(_Atomic int64_t *count, weft_sem *sem)
{
	int64_t c = atomic_load_explicit(count, SC);
	while (c < 0) {
		if (atomic_compare_exchange_weak_explicit(count, &c, c + 1, SC, SC))
			return 0;
	}
	weft_sem_acquire(sem, 1); /* released already, or about to be */
	return 1;
}

static void sem_init_empty(weft_sem *s)
{
	weft_sem_init(s, SEM_HUGE);
	if (weft_sem_tryacquire(s, SEM_HUGE) != 0)
		wp_fatal("cannot initialise a semaphore");
}

/* ---------------------------------------------------------------- histograms */

static int hist_index(int64_t v)
{
	if (v < HIST_SUB)
		return v < 0 ? 0 : (int)v;
	int e = 63 - __builtin_clzll((unsigned long long)v); /* >= 4 */
	if (e >= HIST_MAX_EXP)
		return HIST_BUCKETS - 1;
	int sub = (int)((v >> (e - 4)) & (HIST_SUB - 1));
	return HIST_SUB + (e - 4) * HIST_SUB + sub;
}

/* The middle of bucket i (its exact value below 16). */
static int64_t hist_mid(int i)
{
	if (i < HIST_SUB)
		return i;
	int e = (i - HIST_SUB) / HIST_SUB + 4;
	int sub = (i - HIST_SUB) % HIST_SUB;
	int64_t lo = (int64_t)(HIST_SUB + sub) << (e - 4);
	return lo + ((int64_t)1 << (e - 4)) / 2;
}

/* Stripes may be shared by several workers: read-modify-writes. Only timed
 * jobs get here (all of them only when jobs are long). */
static void hist_add(struct hist *h, int64_t v)
{
	if (v < 0)
		v = 0;
	atomic_fetch_add_explicit(&h->n, 1, RLX);
	atomic_fetch_add_explicit(&h->sum, v, RLX);
	atomic_fetch_add_explicit(&h->b[hist_index(v)], 1, RLX);
	int64_t m = atomic_load_explicit(&h->max, RLX);
	while (v > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, v, RLX, RLX))
		;
}

static void latency_of(struct weft_workpool *p, int which, weft_workpool_latency *out)
{
	int64_t n = 0, sum = 0, max = 0;
	int64_t acc[HIST_BUCKETS] = {0};

	memset(out, 0, sizeof *out);
	for (unsigned s = 0; s < p->nstripes; s++) {
		struct hist *h = which ? &p->stripes[s].run : &p->stripes[s].wait;
		n += atomic_load_explicit(&h->n, RLX);
		sum += atomic_load_explicit(&h->sum, RLX);
		int64_t m = atomic_load_explicit(&h->max, RLX);
		if (m > max)
			max = m;
		for (int i = 0; i < HIST_BUCKETS; i++)
			acc[i] += atomic_load_explicit(&h->b[i], RLX);
	}
	out->count = n;
	out->max = max;
	if (n == 0)
		return;
	out->mean = sum / n;
	/* The buckets were read after n: their total may be a little larger. */
	int64_t total = 0;
	for (int i = 0; i < HIST_BUCKETS; i++)
		total += acc[i];
	const double qs[3] = {0.50, 0.90, 0.99};
	int64_t *outs[3] = {&out->p50, &out->p90, &out->p99};
	for (int k = 0; k < 3; k++) {
		int64_t rank = (int64_t)(qs[k] * (double)total + 0.999999);
		if (rank < 1)
			rank = 1;
		int64_t cum = 0;
		int i = 0;
		for (; i < HIST_BUCKETS - 1; i++) {
			cum += acc[i];
			if (cum >= rank)
				break;
		}
		int64_t v = hist_mid(i);
		*outs[k] = v > max ? max : v;
	}
}

/* ---------------------------------------------------------------- logging */

static const char *err_name(int err, char *buf, size_t len)
{
	const char *s = strerrorname_np(err);
	if (s)
		return s;
	snprintf(buf, len, "%d", err);
	return buf;
}

/* line[len] is a newline, line[len + 1] a NUL: log_fn gets it without. */
static void log_line(struct weft_workpool *p, char *line, size_t len)
{
	if (p->log_fn) {
		line[len] = '\0';
		p->log_fn(line, p->log_arg);
		line[len] = '\n';
	}
	if (p->log) {
		/* One call (the stream's lock keeps lines whole), newline
		 * included. A pipe or a file may block the thread: let the P go
		 * meanwhile. */
		weft_blocking_begin();
		fwrite(line, 1, len + 1, p->log);
		weft_blocking_end();
	}
}

/* One logfmt line: "ts=... pool=NAME event=EVENT job=ID worker=W" + rest. */
static void log_event(struct weft_workpool *p, const char *event, uint64_t id, int worker,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void log_event(struct weft_workpool *p, const char *event, uint64_t id, int worker,
                      const char *fmt, ...)
{
	char line[320];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = (int)strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(line + n, sizeof line - (size_t)n,
	              ".%06ldZ pool=%s event=%s job=%llu worker=%d", ts.tv_nsec / 1000, p->name,
	              event, (unsigned long long)id, worker);
	if (n < (int)sizeof line && fmt) {
		va_start(ap, fmt);
		n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
		va_end(ap);
	}
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n] = '\n';
	line[n + 1] = '\0';
	log_line(p, line, (size_t)n);
}

/* ---------------------------------------------------------------- the queue */

/* Is there a ticket nobody has taken? (Claimed-but-unpublished counts.) */
static inline bool has_jobs(struct weft_workpool *p)
{
	uint64_t t = atomic_load_explicit(&p->tail, SC) & TICKETS;
	return t != atomic_load_explicit(&p->head, SC);
}

static inline bool is_closed(struct weft_workpool *p)
{
	return (atomic_load_explicit(&p->tail, ACQ) & CLOSED) != 0;
}

/* Full: every slot holds a job not yet freed. */
static inline bool is_full(struct weft_workpool *p)
{
	uint64_t t = atomic_load_explicit(&p->tail, SC);
	if (t & CLOSED)
		return false; /* not full: closed, and the caller will see it */
	return (t & TICKETS) - atomic_load_explicit(p->fcur, SC) >= p->cap;
}

enum { DQ_OK, DQ_EMPTY };

/*
 * Take the next jobs: up to want of them (at least one) with one CAS of
 * head, as many as are published in a row, copied out before the CAS (see
 * struct slot). DQ_EMPTY: nothing is published at head. A CAS is a
 * full barrier: it pairs with the load of space_count below (the Dekker pair
 * with wait_room), and, as a release, with a producer's acquire of head
 * before it rewrites the slots.
 */
static int take(struct weft_workpool *p, struct job *out, int want, int *got)
{
	uint64_t pos = atomic_load_explicit(&p->head, RLX);
	int k;

	for (;;) {
		for (k = 0; k < want; k++) {
			uint64_t t = pos + (uint64_t)k;
			struct slot *s = slot_at(p, t);
			if (atomic_load_explicit(&s->seq, ACQ) != (uint32_t)(t + 1))
				break;
			struct job *j = &out[k];
			j->ticket = t;
			j->fn = atomic_load_explicit(&s->fn, RLX);
			j->arg = atomic_load_explicit(&s->arg, RLX);
			j->flags = atomic_load_explicit(&s->flags, RLX);
			/* The rest only where the flags say it is there (the
			 * readers look at the flags first). */
			if (UNLIKELY(j->flags & (JOB_EXT | JOB_STAMPED))) {
				struct slot_ext *e = ext_at(p, t);
				j->ctx = atomic_load_explicit(&e->ctx, RLX);
				j->deadline_ns = atomic_load_explicit(&e->deadline_ns, RLX);
				j->timeout_ns = atomic_load_explicit(&e->timeout_ns, RLX);
				j->t_submit = atomic_load_explicit(&e->t_submit, RLX);
			}
			if (k == 0 && want > 1) {
				/* Batch only from a queue of 2 * BATCH or more:
				 * look at the last of them. */
				struct slot *last = slot_at(p, t + 2 * BATCH - 1);
				if (atomic_load_explicit(&last->seq, RLX) !=
				    (uint32_t)(t + 2 * BATCH))
					want = 1;
			}
		}
		if (k == 0) {
			uint64_t h = atomic_load_explicit(&p->head, RLX);
			if (h != pos) {
				pos = h;
				continue;
			}
			/* Nothing published at head: empty, or its producer is
			 * between claim and publish. Not told apart here: that
			 * takes a look at tail, the line the submitter writes on
			 * every job; the idle path polls the slot instead. */
			return DQ_EMPTY;
		}
		if (atomic_compare_exchange_weak_explicit(&p->head, &pos, pos + (uint64_t)k, SC,
		                                          RLX))
			break;
	}
	if (p->order != WEFT_WORKPOOL_IN_ORDER &&
	    UNLIKELY(atomic_load_explicit(&p->space_count, SC) < 0))
		bena_wake_one(&p->space_count, &p->space_sem);
	*got = k;
	return DQ_OK;
}

/*
 * How many jobs a worker may take at once. One, unless its recent jobs were
 * short (under SHORT_NS); then up to BATCH, if at least 2 * BATCH are queued
 * (take() looks). That saves most of the CAS per job (a locked instruction
 * costs 10-20 ns on a VM, more than a short job). A batch holds jobs back
 * from idle workers for at most BATCH short jobs, a few microseconds; a job
 * that turns out long in a batch delays the rest of the batch (at most
 * BATCH - 1) by its length, as it would if they had queued behind it.
 */
static inline int batch_size(struct worker *w)
{
	return w->short_streak < SHORT_STREAK ? 1 : BATCH;
}

/* ---------------------------------------------------------------- waking workers */

/* A submitter claimed a ticket (a CAS producer, before it publishes) or
 * published a job (the owner) and saw a parked worker: wake one, unless a
 * worker spins (it will find the job). The woken one counts as spinning. */
static void wake_worker(struct weft_workpool *p)
{
	int z = 0;
	if (atomic_load_explicit(&p->nspinning, SC) != 0 ||
	    !atomic_compare_exchange_strong_explicit(&p->nspinning, &z, 1, SC, SC))
		return;
	if (!bena_wake_one(&p->wake_count, &p->wake_sem))
		atomic_fetch_sub_explicit(&p->nspinning, 1, SC);
}

/* Wake every parked worker (closing, kill, resize). Every woken worker
 * counts as spinning until it finds a job or parks again, whoever woke it:
 * the count goes up before the tokens, so it never goes below zero. */
static void wake_all_workers(struct weft_workpool *p)
{
	int64_t c = atomic_load_explicit(&p->wake_count, SC);
	while (c < 0) {
		if (atomic_compare_exchange_weak_explicit(&p->wake_count, &c, 0, SC, SC)) {
			atomic_fetch_add_explicit(&p->nspinning, (int)-c, SC);
			weft_sem_release(&p->wake_sem, -c);
			return;
		}
	}
}

/* ---------------------------------------------------------------- submit */

/* What a submit carries besides fn and arg. */
struct submit_opts {
	weft_ctx *ctx;       /* the job's parent context and wait bound */
	int64_t deadline_ns; /* the job's */
	int64_t timeout_ns;  /* the job's */
	int64_t wait_until;  /* INT64_MAX: no limit */
	bool try_only;
};

/* Spin a while for room; true if there is some (or the queue closed). */
static bool spin_for_room(struct weft_workpool *p)
{
	int one_p = weft_procs() == 1;
	for (int i = 0; i < SUBMIT_SPINS; i++) {
		if (!is_full(p))
			return true;
		if (one_p || (i & 7) == 7)
			weft_yield();
		else
			for (int k = 0; k < RELAX_PER_SPIN; k++)
				cpu_relax();
	}
	return !is_full(p);
}

/*
 * The queue was full: wait for room. 0: try again; else the error to return
 * (EAGAIN for a try, ETIMEDOUT, the context's error).
 */
static int wait_room(struct weft_workpool *p, const struct submit_opts *o)
{
	if (o->try_only)
		return EAGAIN;
	if (spin_for_room(p))
		return 0;
	atomic_fetch_sub_explicit(&p->space_count, 1, SC);
	if (!is_full(p)) {
		bena_undo(&p->space_count, &p->space_sem);
		return 0;
	}
	int r;
	if (o->ctx && o->wait_until != INT64_MAX) {
		/* Both bounds: a child of the context with the deadline. */
		weft_ctx *c = NULL;
		r = weft_ctx_with_deadline(o->ctx, o->wait_until, &c);
		if (r == 0) {
			r = weft_sem_acquire_ctx(c, &p->space_sem, 1);
			weft_ctx_release(c);
		}
	} else if (o->ctx) {
		r = weft_sem_acquire_ctx(o->ctx, &p->space_sem, 1);
	} else if (o->wait_until != INT64_MAX) {
		r = weft_sem_acquire_until(&p->space_sem, 1, o->wait_until);
	} else {
		r = weft_sem_acquire(&p->space_sem, 1);
	}
	if (r != 0 && bena_undo(&p->space_count, &p->space_sem)) {
		/* We were woken as we gave up: pass the wake-up on. */
		bena_wake_one(&p->space_count, &p->space_sem);
	}
	return r;
}

/* Room for ticket pos: the slot of ticket pos was last used by ticket
 * pos - cap, whose consumer is done with it once *fcur has passed it. fcache
 * is a recent value of *fcur (read with acquire, passed on with release, so
 * the consumer's reads of that slot happen before our writes); *fcur itself,
 * a line the workers write, is read only when fcache says full. */
static inline bool room_for(struct weft_workpool *p, uint64_t pos)
{
	if (LIKELY(pos - atomic_load_explicit(&p->fcache, ACQ) < p->cap))
		return true;
	uint64_t f = atomic_load_explicit(p->fcur, ACQ);
	atomic_store_explicit(&p->fcache, f, REL);
	return pos - f < p->cap;
}

/* ---------------------------------------------------------------- biased submitting */

/*
 * Biased submitting. Claiming a ticket with a CAS costs a locked instruction
 * per job (10-20 ns on a VM: as much as everything else a submit does).
 * Most pools are fed by one thread at a time, so, as biased locking in Java
 * does, the tail is handed to one submitting thread (the "owner": BIASED set
 * in tail, bias_owner = its submitter_self()), which then claims tickets
 * with plain stores; no two submits can use the bias at once (see
 * submitter_self).
 *
 * Any other submitter revokes the bias first (revoke_bias), with the
 * asymmetric Dekker pattern of userspace RCU and folly's
 * asymmetricHeavyBarrier: the owner announces itself in bias_busy and looks
 * at bias_owner with only a compiler barrier between (the light side); the
 * revoker clears bias_owner, runs membarrier(PRIVATE_EXPEDITED), which makes
 * every running thread of the process execute a full barrier (the heavy
 * side), and then waits for bias_busy to be 0. Either the owner sees the
 * revocation, or the revoker sees it busy and waits: never both miss. The
 * owner's other unfenced look, at wake_count after publishing, is covered
 * differently, since workers park often and a heavy barrier per park costs
 * inter-processor interrupts (on a VM, exits): a worker that parks while the
 * tail is biased looks for work once more RECHECK_NS later (go_idle).
 *
 * Revoking costs a system call (about a microsecond) and a cooldown of
 * BIAS_COOLDOWN tickets follows, so pools fed by several submitters at once
 * simply use the CAS, with at most one revocation per few thousand jobs.
 * Without membarrier (old kernels, seccomp, valgrind) nothing is biased.
 */

/*
 * Who submits: the calling thread, named by its thread pointer (what
 * pthread_self() returns on glibc). A thread runs one goroutine at a time
 * and a goroutine does not switch inside a submit, so two submits by one
 * thread never overlap. (The goroutine's id would survive its moves between
 * threads, but reading it costs a call into the runtime on every submit; a
 * submitter that moves, after waiting for room, pays one revocation.) Read
 * with a volatile asm, so that every evaluation reads it afresh: glibc
 * declares pthread_self() const, and a goroutine may resume on another
 * thread after a wait. Elsewhere: pthread_self() in a function the compiler
 * may neither inline nor analyse.
 */
#if defined(__x86_64__)
static inline uintptr_t thread_pointer(void)
{
	uintptr_t t;
	__asm__ __volatile__("mov %%fs:0, %0" : "=r"(t));
	return t;
}
#elif defined(__aarch64__)
static inline uintptr_t thread_pointer(void)
{
	uintptr_t t;
	__asm__ __volatile__("mrs %0, tpidr_el0" : "=r"(t));
	return t;
}
#else
#if defined(__has_attribute)
#if __has_attribute(noipa)
#define WP_NOIPA __attribute__((noipa))
#endif
#endif
#ifndef WP_NOIPA
#define WP_NOIPA __attribute__((noinline))
#endif
static WP_NOIPA uintptr_t thread_pointer(void)
{
	uintptr_t t = (uintptr_t)psubmitter_self();
	__asm__ __volatile__("" ::: "memory");
	return t;
}
#endif

static inline uintptr_t submitter_self(void)
{
	return thread_pointer();
}

/* membarrier(2): registered once per process; 1 when usable. */
static _Atomic int membarrier_state; /* 0 unknown, 1 usable, -1 not */

static bool membarrier_usable(void)
{
	int st = atomic_load_explicit(&membarrier_state, ACQ);
	if (st == 0) {
		long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
		st = q >= 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
		                     syscall(SYS_membarrier,
		                             MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0
		             ? 1
		             : -1;
		atomic_store_explicit(&membarrier_state, st, REL);
	}
	return st == 1;
}

/* The heavy side: every running thread of the process executes a full
 * barrier before this returns (the calling one too: the kernel's
 * membarrier begins and ends with one; the compiler barriers keep the
 * compiler from moving memory accesses across the call). */
static void heavy_barrier(void)
{
	atomic_signal_fence(SC);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
		wp_fatal("membarrier failed after it was registered");
	atomic_signal_fence(SC);
}

/* Take the bias away from its owner, if tail is biased. After return tail is
 * not biased (until someone is granted it again). */
static void revoke_bias(struct weft_workpool *p)
{
	weft_mutex_lock(&p->bias_mu);
	uint64_t t = atomic_load_explicit(&p->tail, SC);
	if (t & BIASED) {
		atomic_store_explicit(&p->bias_owner, 0, SC);
		heavy_barrier();
		/* The owner may be inside a submit that saw itself owner:
		 * wait for it (a few instructions, unless its thread is
		 * descheduled). */
		for (unsigned i = 1; atomic_load_explicit(&p->bias_busy, ACQ); i++) {
			if ((i & 63) == 0)
				weft_yield();
			else
				cpu_relax();
		}
		t = atomic_fetch_and_explicit(&p->tail, ~BIASED, SC) & TICKETS;
		atomic_store_explicit(&p->bias_after, t + BIAS_COOLDOWN, RLX);
	}
	weft_mutex_unlock(&p->bias_mu);
}

/* Grant the bias to self, if the tail is free of it and of CLOSED. A CAS of
 * tail makes it exclusive: a CAS-claiming submitter racing it fails, reloads
 * and sees BIASED. */
static void try_bias(struct weft_workpool *p, uintptr_t self)
{
	if (weft_mutex_trylock(&p->bias_mu) != 0)
		return;
	uint64_t t = atomic_load_explicit(&p->tail, SC);
	if (!(t & (BIASED | CLOSED))) {
		if (p->chaos)
			sched_yield();
		atomic_store_explicit(&p->bias_owner, self, SC);
		if (!atomic_compare_exchange_strong_explicit(&p->tail, &t, t | BIASED, SC, SC))
			atomic_store_explicit(&p->bias_owner, 0, SC);
	}
	weft_mutex_unlock(&p->bias_mu);
}

/* After a CAS claim: count submits in a row by one submitter; the
 * BIAS_STREAK-th asks for the bias. Plain hints, racy by design. */
static void note_producer(struct weft_workpool *p, uintptr_t self, uint64_t pos)
{
	if (atomic_load_explicit(&p->last_producer, RLX) != self) {
		atomic_store_explicit(&p->last_producer, self, RLX);
		atomic_store_explicit(&p->streak, 0, RLX);
		return;
	}
	uint32_t n = atomic_load_explicit(&p->streak, RLX) + 1;
	atomic_store_explicit(&p->streak, n, RLX);
	if (n >= BIAS_STREAK && pos >= atomic_load_explicit(&p->bias_after, RLX))
		try_bias(p, self);
}

/* For tests: called by a submit that found a parked worker, right after it
 * published its job: from then on a shutdown may drain the job and the owner
 * free the pool, so the submit must not look at the pool again. */
void (*weft__workpool_published_hook)(void);

/*
 * Every HANDOFF submits: on one P, a woken or spinning worker cannot run
 * until the submitter blocks, which it would do only when the queue is full;
 * let it run now. Jobs start sooner, and the slots they use are still in the
 * cache (a full queue of 1024 is most of an L1 cache, and both sides would
 * miss on every slot). With more Ps the workers run beside the submitter.
 */
static void handoff(struct weft_workpool *p)
{
	if (atomic_load_explicit(&p->nspinning, RLX) > 0 && weft_self_id() != 0 &&
	    weft_procs() == 1)
		weft_yield();
}

static inline __attribute__((always_inline)) int submit(struct weft_workpool *p,
                                                        weft_workpool_fn fn, void *arg,
                                                        const struct submit_opts *o, uint64_t *id)
{
	check(p, "submit");
	if (fn == NULL)
		return EINVAL;
	if (UNLIKELY(p->parent != NULL) && weft_ctx_err(p->parent)) {
		atomic_fetch_add_explicit(&p->rejected, 1, RLX);
		return ECANCELED;
	}
	if (o && o->ctx) {
		int e = weft_ctx_err(o->ctx);
		if (e) {
			atomic_fetch_add_explicit(&p->rejected, 1, RLX);
			return e;
		}
	}

	static const struct submit_opts plain = {.wait_until = INT64_MAX};
	uint64_t pos;
	bool biased, held = false;
#define SUBMIT_RETURN(v) do { int v_ = (v); if (held) pool_release(p); return v_; } while (0)
	for (;;) {
		/* Read again after every wait: the caller may have moved to
		 * another thread. */
		uintptr_t self = submitter_self();
		if (atomic_load_explicit(&p->bias_owner, RLX) == self) {
			/* The light side of the asymmetric Dekker pair with
			 * revoke_bias(): announce, compiler barrier, look again. */
			atomic_store_explicit(&p->bias_busy, 1, RLX);
			atomic_signal_fence(SC);
			if (LIKELY(atomic_load_explicit(&p->bias_owner, RLX) == self)) {
				/* Only this thread writes tail now: no CAS. */
				pos = atomic_load_explicit(&p->tail, RLX) & TICKETS;
				if (LIKELY(room_for(p, pos))) {
					biased = true;
					break;
				}
			}
			atomic_store_explicit(&p->bias_busy, 0, REL);
		}
		uint64_t t = atomic_load_explicit(&p->tail, RLX);
		if (UNLIKELY(t & CLOSED)) {
			atomic_fetch_add_explicit(&p->rejected, 1, RLX);
			SUBMIT_RETURN(atomic_load_explicit(&p->ctl, RLX) & CTL_PARENT ? ECANCELED : EPIPE);
		}
		if (UNLIKELY(t & BIASED) && atomic_load_explicit(&p->bias_owner, RLX) != self) {
			revoke_bias(p);
			continue;
		}
		if (UNLIKELY(!room_for(p, t & TICKETS))) {
			if (!held && !(o && o->try_only)) {
				atomic_fetch_add_explicit(&p->refs, 1, SC);
				held = true;
			}
			int r = wait_room(p, o ? o : &plain);
			if (r != 0) {
				atomic_fetch_add_explicit(&p->rejected, 1, RLX);
				SUBMIT_RETURN(r);
			}
			continue;
		}
		if (t & BIASED)
			continue; /* ours, and there is room now: the biased way */
		/* Full barrier: pairs with a parking worker's fetch_sub of
		 * wake_count and its look at tail. */
		if (atomic_compare_exchange_weak_explicit(&p->tail, &t, t + 1, SC, RLX)) {
			pos = t;
			biased = false;
			if (p->bias_ok)
				note_producer(p, self, pos);
			break;
		}
	}
	struct slot *s = slot_at(p, pos);
	/* A CAS-claiming producer looks for parked workers right after its
	 * CAS (a full barrier); the owner, after publishing (with no barrier:
	 * a parking worker runs the heavy barrier when it sees BIASED). */
	bool parked = !biased && atomic_load_explicit(&p->wake_count, SC) < 0;
	/* Once the job is published, a shutdown may drain it, the workers may
	 * exit and the owner may free the pool before this call returns. Until
	 * the publish the pool cannot go: no worker leaves while a claimed
	 * ticket is unpublished (has_jobs), and a close waits for a biased
	 * owner (bias_busy). So the wake comes first: here, or, for the owner,
	 * before it clears bias_busy. A worker woken before the publish finds
	 * the claimed ticket (has_jobs) and spins until it is published. Only
	 * the hand-off, every HANDOFF-th job, looks at the pool afterwards: it
	 * holds a reference (an atomic on each wake cost 20% of a submit). */
	if (parked && atomic_load_explicit(&p->nspinning, SC) == 0)
		wake_worker(p);
	bool due = UNLIKELY((pos & (HANDOFF - 1)) == HANDOFF - 1);
	if (!held && due) {
		atomic_fetch_add_explicit(&p->refs, 1, SC);
		held = true;
	}

	uint32_t flags = 0;
	uint64_t sm = atomic_load_explicit(&p->smask, RLX);
	atomic_store_explicit(&s->fn, fn, RLX);
	atomic_store_explicit(&s->arg, arg, RLX);
	if ((pos & sm) == 0)
		flags = JOB_SAMPLED | JOB_STAMPED;
	else if (p->log_on)
		flags = JOB_STAMPED;
	if (o && (o->ctx || o->deadline_ns || o->timeout_ns))
		flags |= JOB_EXT;
	if (flags) {
		struct slot_ext *e = ext_at(p, pos);
		bool ext = flags & JOB_EXT;
		atomic_store_explicit(&e->t_submit, flags & JOB_STAMPED ? weft_now() : 0, RLX);
		atomic_store_explicit(&e->ctx, ext && o->ctx ? weft_ctx_retain(o->ctx) : NULL, RLX);
		atomic_store_explicit(&e->deadline_ns, ext ? o->deadline_ns : 0, RLX);
		atomic_store_explicit(&e->timeout_ns, ext ? o->timeout_ns : 0, RLX);
	}
	atomic_store_explicit(&s->flags, flags, RLX);
	/* Publish: pairs with the consumer's acquire load of seq. */
	atomic_store_explicit(&s->seq, (uint32_t)(pos + 1), REL);
	if (parked && UNLIKELY(weft__workpool_published_hook != NULL))
		weft__workpool_published_hook();
	if (biased) {
		if (UNLIKELY(p->chaos) && (pos & 15) == 0)
			sched_yield();
		atomic_store_explicit(&p->tail, (pos + 1) | BIASED, REL);
		atomic_signal_fence(SC);
		/* (wake_worker looks at nspinning again; this look saves the
		 * call. Sequentially consistent: it is part of the Dekker
		 * pair.) */
		if (atomic_load_explicit(&p->wake_count, SC) < 0 &&
		    atomic_load_explicit(&p->nspinning, SC) == 0)
			wake_worker(p);
		/* Pairs with revoke_bias()'s acquire load of bias_busy. */
		atomic_store_explicit(&p->bias_busy, 0, REL);
	}
	if (due)
		handoff(p);
	if (id)
		*id = pos + 1;
	SUBMIT_RETURN(0);
#undef SUBMIT_RETURN
}

int weft_workpool_submit(weft_workpool *p, weft_workpool_fn fn, void *arg, uint64_t *id)
{
	return submit(p, fn, arg, NULL, id);
}

int weft_workpool_trysubmit(weft_workpool *p, weft_workpool_fn fn, void *arg, uint64_t *id)
{
	struct submit_opts o = {.wait_until = INT64_MAX, .try_only = true};
	return submit(p, fn, arg, &o, id);
}

int weft_workpool_submit_until(weft_workpool *p, weft_workpool_fn fn, void *arg,
                               int64_t deadline_ns, uint64_t *id)
{
	struct submit_opts o = {.wait_until = deadline_ns};
	return submit(p, fn, arg, &o, id);
}

int weft_workpool_submit_ctx(weft_ctx *ctx, weft_workpool *p, weft_workpool_fn fn, void *arg,
                             uint64_t *id)
{
	struct submit_opts o = {.ctx = ctx, .wait_until = INT64_MAX};
	return submit(p, fn, arg, &o, id);
}

int weft_workpool_submit_job(weft_workpool *p, const weft_workpool_job *job, uint64_t *id)
{
	check(p, "submit");
	if (job == NULL || job->deadline_ns < 0 || job->timeout_ns < 0)
		return EINVAL;
	struct submit_opts o = {
		.ctx = job->ctx,
		.deadline_ns = job->deadline_ns,
		.timeout_ns = job->timeout_ns,
		.wait_until = job->wait_deadline_ns ? job->wait_deadline_ns : INT64_MAX,
		.try_only = (job->flags & WEFT_WORKPOOL_TRY) != 0,
	};
	return submit(p, job->fn, job->arg, &o, id);
}

/* ---------------------------------------------------------------- results */

/* Hand one result to the caller: the callback, or the channel. A send waits
 * while the channel is full (backpressure), until the pool is killed; after
 * that a result that does not fit at once is dropped and counted. */
static void deliver_one(struct weft_workpool *p, const weft_workpool_result *r)
{
	if (p->on_result) {
		p->on_result(r, p->on_result_arg);
		return;
	}
	if (weft_chan_send_ctx(p->ctx, p->results, r) != 0)
		atomic_fetch_add_explicit(&p->dropped, 1, RLX);
}

/*
 * In order: deliver every result that is next in line, if nobody else is
 * delivering. A finisher stores its done flag, then looks at the role; a
 * deliverer gives up the role, then looks at the next done flag (all
 * sequentially consistent): either the finisher sees the role free, or the
 * deliverer sees the flag, so no result is left behind.
 */
static void deliver_in_order(struct weft_workpool *p, struct worker *w)
{
	for (;;) {
		int z = 0;
		if (atomic_load_explicit(&p->delivering, SC) ||
		    !atomic_compare_exchange_strong_explicit(&p->delivering, &z, 1, SC, SC))
			return;
		uint64_t d = atomic_load_explicit(&p->dcur, RLX);
		for (;;) {
			struct ores *o = ores_at(p, d);
			if (!atomic_load_explicit(&o->done, ACQ))
				break;
			struct slot *s = slot_at(p, d);
			weft_workpool_result r = {
				.id = d + 1,
				.status = o->status,
				.err = o->err,
				.arg = atomic_load_explicit(&s->arg, RLX),
				.value = o->value,
				.wait_ns = o->wait_ns,
				.run_ns = o->run_ns,
			};
			atomic_store_explicit(&o->done, 0, RLX);
			deliver_one(p, &r);
			bump(&w->count[r.status]);
			/* Free the slot: advance the cursor submitters measure
			 * room by (an RMW: the Dekker partner of wait_room, and
			 * a release their acquire of dcur pairs with). */
			atomic_fetch_add_explicit(&p->dcur, 1, SC);
			d++;
			if (atomic_load_explicit(&p->space_count, SC) < 0)
				bena_wake_one(&p->space_count, &p->space_sem);
		}
		if (UNLIKELY(p->chaos))
			sched_yield(); /* a window for a finisher to find the role taken */
		atomic_store_explicit(&p->delivering, 0, SC);
		if (!atomic_load_explicit(&ores_at(p, d)->done, SC))
			return;
	}
}

/* ---------------------------------------------------------------- running jobs */

/* Account a finished job: counters, histograms, log, result. wait_ns and
 * run_ns are -1 when not measured. */
static void finish_more(struct weft_workpool *p, struct worker *w, const struct job *j, int status,
                        int err, void *value, int64_t wait_ns, int64_t run_ns)
{
	if (j->flags & JOB_SAMPLED) {
		struct stripe *st = &p->stripes[(unsigned)w->index & (p->nstripes - 1)];
		if (wait_ns >= 0)
			hist_add(&st->wait, wait_ns);
		if (run_ns >= 0)
			hist_add(&st->run, run_ns);
	}
	if (p->log_on) {
		char eb[16], rb[48] = "";
		if (run_ns >= 0)
			snprintf(rb, sizeof rb, " run_us=%.1f", (double)run_ns / 1e3);
		log_event(p, "end", j->ticket + 1, w->index, " status=%s err=%s wait_us=%.1f%s%s",
		          weft_workpool_status_name(status),
		          err ? err_name(err, eb, sizeof eb) : "0",
		          wait_ns >= 0 ? (double)wait_ns / 1e3 : -1.0, rb,
		          run_ns < 0 ? " ran=0" : "");
	}
	if (!p->deliver)
		return;
	if (p->order == WEFT_WORKPOOL_IN_ORDER) {
		struct ores *o = ores_at(p, j->ticket);
		o->status = status;
		o->err = err;
		o->value = value;
		o->wait_ns = wait_ns;
		o->run_ns = run_ns;
		atomic_store_explicit(&o->done, 1, SC);
		deliver_in_order(p, w);
	} else {
		weft_workpool_result r = {
			.id = j->ticket + 1,
			.status = status,
			.err = err,
			.arg = j->arg,
			.value = value,
			.wait_ns = wait_ns,
			.run_ns = run_ns,
		};
		deliver_one(p, &r);
	}
}

/* A job is counted once its result has been delivered (so that when
 * weft_workpool_wait returns, every callback has run and every result is in
 * the channel); in order, by the worker that delivers it. */
static inline void finish(struct weft_workpool *p, struct worker *w, const struct job *j,
                          int status, int err, void *value, int64_t wait_ns, int64_t run_ns)
{
	if (UNLIKELY((j->flags & JOB_SAMPLED) || p->log_on || p->deliver))
		finish_more(p, w, j, status, err, value, wait_ns, run_ns);
	if (LIKELY(p->order != WEFT_WORKPOOL_IN_ORDER))
		bump(&w->count[status]);
}

/* Report a job that never ran (cancelled or expired while queued). */
static void drop_job(struct weft_workpool *p, struct worker *w, const struct job *j, int status,
                     int64_t now)
{
	int64_t wait_ns = -1;
	if (j->flags & JOB_STAMPED) {
		if (now == 0)
			now = weft_now();
		wait_ns = now - j->t_submit;
	}
	finish(p, w, j, status, status == WEFT_WORKPOOL_TIMED_OUT ? ETIMEDOUT : ECANCELED, NULL,
	       wait_ns, -1);
	weft_ctx_release(j->ctx);
}

/* Adaptive sampling: a timed job's run time steers how many are timed. */
static void steer_sampling(struct weft_workpool *p, struct worker *w, int64_t run_ns)
{
	if (run_ns < SHORT_NS) {
		if (w->short_streak < SHORT_STREAK)
			w->short_streak++;
	} else {
		w->short_streak = 0;
	}
	if (p->fixed_sample)
		return;
	uint64_t sm = atomic_load_explicit(&p->smask, RLX);
	if (sm == 0 && w->short_streak >= SHORT_STREAK)
		atomic_store_explicit(&p->smask, SAMPLE_SPARSE, RLX);
	else if (sm != 0 && run_ns >= LONG_NS)
		atomic_store_explicit(&p->smask, 0, RLX);
}

/* Classify fn's return: see the outcome rules in weft/workpool.h. */
static int classify(int err, int64_t deadline, int64_t end, weft_ctx *jc, int *out_err)
{
	int ce = weft_ctx_err(jc);
	/* The job's deadline: its own, its timeout's, its submitter's
	 * context's (all in deadline). A deadline of the pool's parent context
	 * also expires jc, but that is the pool shutting down: cancelled. */
	if (deadline && end >= deadline) {
		*out_err = ETIMEDOUT;
		return WEFT_WORKPOOL_TIMED_OUT;
	}
	*out_err = err;
	if (err == 0)
		return WEFT_WORKPOOL_COMPLETED;
	return ce ? WEFT_WORKPOOL_CANCELED : WEFT_WORKPOOL_FAILED;
}

/* The general case: a deadline, a timeout, a submitter's context, a log, a
 * shutdown in progress. */
static void run_slow(struct worker *w, struct job *j)
{
	struct weft_workpool *p = w->p;

	if (!(j->flags & (JOB_EXT | JOB_STAMPED))) {
		/* take() left these unset: the fast path never reads them. */
		j->ctx = NULL;
		j->deadline_ns = j->timeout_ns = j->t_submit = 0;
	}
	uint64_t ctl = atomic_load_explicit(&p->ctl, ACQ);

	if ((ctl & (CTL_DISCARD | CTL_KILLED)) || (p->parent && weft_ctx_err(p->ctx))) {
		drop_job(p, w, j, WEFT_WORKPOOL_CANCELED, 0);
		return;
	}
	int64_t now = weft_now();
	int64_t deadline = j->deadline_ns;
	int64_t timeout = j->timeout_ns ? j->timeout_ns : p->job_timeout_ns;
	int64_t until = weft__time_sum(now, timeout); /* INT64_MAX: too long, none */
	if (timeout && until != INT64_MAX && (!deadline || until < deadline))
		deadline = until;
	if (j->ctx) {
		int64_t cd;
		if (weft_ctx_deadline(j->ctx, &cd) && (!deadline || cd < deadline))
			deadline = cd;
		int ce = weft_ctx_err(j->ctx);
		if (ce) {
			drop_job(p, w, j,
			         ce == ETIMEDOUT ? WEFT_WORKPOOL_TIMED_OUT : WEFT_WORKPOOL_CANCELED,
			         now);
			return;
		}
	}
	if (deadline && now >= deadline) {
		drop_job(p, w, j, WEFT_WORKPOOL_TIMED_OUT, now);
		return;
	}

	/* The job's context: the pool's, or its own. */
	weft_ctx *jc = p->ctx, *own = NULL;
	if (j->ctx || deadline) {
		weft_ctx *parent = j->ctx ? j->ctx : p->ctx;
		int e = deadline ? weft_ctx_with_deadline(parent, deadline, &own)
		                 : weft_ctx_with_cancel(parent, &own);
		if (e) {
			/* No memory for it: the job fails with ENOMEM unrun. */
			finish(p, w, j, WEFT_WORKPOOL_FAILED, e, NULL,
			       j->flags & JOB_STAMPED ? now - j->t_submit : -1, -1);
			weft_ctx_release(j->ctx);
			return;
		}
		jc = own;
		if (j->ctx) {
			/* The pool cannot cancel the submitter's context: let
			 * kill find this one. Kill sets KILLED before it looks
			 * (under jm), so one of us cancels it. */
			weft_mutex_lock(&w->jm);
			w->job_ctx = own;
			weft_mutex_unlock(&w->jm);
			if (atomic_load_explicit(&p->ctl, ACQ) & CTL_KILLED)
				weft_ctx_cancel(own);
		}
	}

	int64_t wait_ns = j->flags & JOB_STAMPED ? now - j->t_submit : -1;
	if (p->log_on)
		log_event(p, "start", j->ticket + 1, w->index, " wait_us=%.1f",
		          wait_ns >= 0 ? (double)wait_ns / 1e3 : -1.0);
	void *value = NULL;
	atomic_store_explicit(&w->running, 1, RLX);
	int err = j->fn(jc, j->arg, &value);
	atomic_store_explicit(&w->running, 0, RLX);
	int64_t end = weft_now();

	int out_err, status = classify(err, deadline, end, jc, &out_err);
	if (own) {
		if (j->ctx) {
			weft_mutex_lock(&w->jm);
			w->job_ctx = NULL;
			weft_mutex_unlock(&w->jm);
		}
		weft_ctx_release(own);
	}
	weft_ctx_release(j->ctx);
	if (j->flags & JOB_SAMPLED)
		steer_sampling(p, w, end - now);
	finish(p, w, j, status, out_err, value, wait_ns, end - now);
}

/* A plain job that is timed, or whose result is kept. */
static void run_plain(struct worker *w, struct job *j)
{
	struct weft_workpool *p = w->p;
	void *value = NULL;
	int64_t t0 = 0, wait_ns = -1, run_ns = -1;
	if (j->flags & JOB_SAMPLED) {
		t0 = weft_now();
		wait_ns = t0 - j->t_submit;
	}
	atomic_store_explicit(&w->running, 1, RLX);
	int err = j->fn(p->ctx, j->arg, &value);
	atomic_store_explicit(&w->running, 0, RLX);
	if (j->flags & JOB_SAMPLED) {
		run_ns = weft_now() - t0;
		steer_sampling(p, w, run_ns);
	}
	int status = WEFT_WORKPOOL_COMPLETED;
	if (UNLIKELY(err != 0))
		status = weft_ctx_err(p->ctx) ? WEFT_WORKPOOL_CANCELED : WEFT_WORKPOOL_FAILED;
	finish(p, w, j, status, err, value, wait_ns, run_ns);
}

/* Run one job. The fast path is a plain job (no context, deadline or
 * timeout of its own, not timed) in a pool that keeps no results and logs
 * nothing, with no shutdown in progress: a call and a count. */
static inline void run_job(struct worker *w, struct job *j)
{
	struct weft_workpool *p = w->p;

	if (UNLIKELY((j->flags & JOB_EXT) || p->slow_jobs ||
	             (atomic_load_explicit(&p->ctl, RLX) & (CTL_DISCARD | CTL_KILLED)))) {
		run_slow(w, j);
		return;
	}
	/* The parent context cancelled and the watcher not yet through with
	 * the kill: already an immediate shutdown for the jobs. */
	if (UNLIKELY(p->parent != NULL) && weft_ctx_err(p->ctx)) {
		run_slow(w, j);
		return;
	}
	if (UNLIKELY(j->flags || p->deliver)) {
		run_plain(w, j);
		return;
	}
	void *value = NULL;
	atomic_store_explicit(&w->running, 1, RLX);
	int err = j->fn(p->ctx, j->arg, &value);
	atomic_store_explicit(&w->running, 0, RLX);
	if (LIKELY(err == 0))
		bump(&w->count[WEFT_WORKPOOL_COMPLETED]);
	else
		bump(&w->count[weft_ctx_err(p->ctx) ? WEFT_WORKPOOL_CANCELED
		                                    : WEFT_WORKPOOL_FAILED]);
}

/* ---------------------------------------------------------------- workers */

static void notify_state(struct weft_workpool *p)
{
	weft_mutex_lock(&p->mu);
	weft_cond_broadcast(&p->cv);
	weft_mutex_unlock(&p->mu);
}

/* Leave the spinning state after finding a job; if this was the last
 * spinner and work remains, wake the next worker (it spins in our place). */
static void stop_spinning(struct weft_workpool *p, struct worker *w)
{
	if (!w->spinning)
		return;
	w->spinning = 0;
	if (atomic_fetch_sub_explicit(&p->nspinning, 1, SC) == 1 && has_jobs(p) &&
	    atomic_load_explicit(&p->wake_count, SC) < 0)
		wake_worker(p);
}

/* Claim one pending exit of a shrinking resize. */
static bool claim_exit(struct weft_workpool *p)
{
	uint64_t c = atomic_load_explicit(&p->ctl, SC);
	while (c >> CTL_EXCESS_SHIFT) {
		if (atomic_compare_exchange_weak_explicit(&p->ctl, &c, c - CTL_EXCESS_ONE, SC, SC))
			return true;
	}
	return false;
}

/* A worker takes one pending exit and leaves the count of live workers in
 * one step under mu, so that resize and the metrics (live - pending exits)
 * never see it half gone. */
static bool leave_for_resize(struct worker *w)
{
	struct weft_workpool *p = w->p;
	weft_mutex_lock(&p->mu);
	bool leave = claim_exit(p);
	if (leave) {
		p->live--;
		w->left = true;
	}
	weft_mutex_unlock(&p->mu);
	return leave;
}

/*
 * What a spinner polls: the next slot published, the pool closing, a resize.
 * Not tail: a line the submitter writes on every job, which a poller would
 * pull away from it each time (the slot's line is the consumer's to read
 * anyway). The exact look at tail is has_news(), before parking.
 */
static inline bool spin_news(struct weft_workpool *p)
{
	uint64_t h = atomic_load_explicit(&p->head, RLX);
	return atomic_load_explicit(&slot_at(p, h)->seq, RLX) == (uint32_t)(h + 1) ||
	       (atomic_load_explicit(&p->ctl, RLX) >> CTL_EXCESS_SHIFT) != 0 ||
	       atomic_load_explicit(&p->closed, RLX);
}

/* Something for an idle worker to do: a job, a close, an exit to claim. */
static inline bool has_news(struct weft_workpool *p)
{
	return has_jobs(p) || is_closed(p) ||
	       (atomic_load_explicit(&p->ctl, SC) >> CTL_EXCESS_SHIFT) != 0;
}

/* Become a spinner if fewer than MAX_SPINNERS spin. */
static bool start_spinning(struct weft_workpool *p)
{
	int n = atomic_load_explicit(&p->nspinning, RLX);
	while (n < MAX_SPINNERS) {
		if (atomic_compare_exchange_weak_explicit(&p->nspinning, &n, n + 1, SC, RLX))
			return true;
	}
	return false;
}

/* The queue was empty: spin a while (if few others do), then park. */
static void go_idle(struct weft_workpool *p, struct worker *w)
{
	/* The counts of the jobs this worker finished are stored; a waiter
	 * increments idle_waiters, then reads them. An RMW, not a load, makes
	 * this the Dekker pair of that increment (and, as a release that the
	 * waiter's RMW reads after, publishes the counts to it). */
	if (atomic_fetch_add_explicit(&p->idle_waiters, 0, SC) > 0)
		notify_state(p);

	if (w->spinning || start_spinning(p)) {
		w->spinning = 1;
		int one_p = weft_procs() == 1;
		for (int i = 0; i < WORKER_SPINS; i++) {
			if (spin_news(p))
				return; /* still spinning: stop_spinning when it finds a job */
			if (one_p || i == WORKER_SPINS - 1)
				weft_yield();
			else
				for (int k = 0; k < RELAX_PER_SPIN; k++)
					cpu_relax();
		}
		w->spinning = 0;
		atomic_fetch_sub_explicit(&p->nspinning, 1, SC);
	}

	/* Park: register, look once more, sleep. A token always comes with a
	 * count in nspinning (wake_worker, wake_all_workers): it is ours now. */
	atomic_fetch_sub_explicit(&p->wake_count, 1, SC);
	bool biased = (atomic_load_explicit(&p->tail, SC) & BIASED) != 0;
	if (!has_news(p)) {
		int r = biased ? weft_sem_acquire_until(&p->wake_sem, 1, weft_now() + RECHECK_NS)
		               : weft_sem_acquire(&p->wake_sem, 1);
		if (r == 0) {
			w->spinning = 1;
			return;
		}
		/*
		 * The biased submitter looks at wake_count without a barrier
		 * after it publishes: a job published just as we registered
		 * may have been invisible to has_news() above while it did not
		 * see us yet. Its stores are visible by now (a store buffer
		 * drains in nanoseconds; a descheduled thread's drains at the
		 * switch): look again. A job published after this look sees
		 * our registration and wakes us.
		 */
		if (!has_news(p)) {
			weft_sem_acquire(&p->wake_sem, 1);
			w->spinning = 1;
			return;
		}
	}
	/* Not parking after all. Spin again (as Go's findrunnable does when it
	 * finds work after giving up spinning): submitters skipped waking
	 * anyone while we spun, so if more work waits than we take,
	 * stop_spinning must wake a successor. */
	if (bena_undo(&p->wake_count, &p->wake_sem))
		w->spinning = 1;
	else
		w->spinning = start_spinning(p);
}

static void worker_exit(struct worker *w);

static void worker_main(void *arg)
{
	struct worker *w = arg;
	struct weft_workpool *p = w->p;
	struct job jobs[BATCH];
	int n;

	atomic_store_explicit(&w->gid, weft_self_id(), RLX);
	for (;;) {
		if (UNLIKELY(atomic_load_explicit(&p->ctl, RLX) >> CTL_EXCESS_SHIFT) &&
		    leave_for_resize(w))
			break;
		int r = take(p, jobs, batch_size(w), &n);
		if (LIKELY(r == DQ_OK)) {
			stop_spinning(p, w);
			for (int i = 0; i < n; i++)
				run_job(w, &jobs[i]);
			continue;
		}
		if (atomic_load_explicit(&p->closed, ACQ) && !has_jobs(p))
			break;
		go_idle(p, w);
	}
	stop_spinning(p, w);
	worker_exit(w);
}

/* Close the queue: no more tickets. The first close wakes every parked
 * worker (so they drain and leave) and every waiting submitter (EPIPE). */
static void close_queue(struct weft_workpool *p)
{
	/* Only an unbiased tail: the owner writes tail with plain stores,
	 * which would lose the bit. A grant racing us makes the CAS fail. */
	uint64_t old = atomic_load_explicit(&p->tail, SC);
	for (;;) {
		if (old & CLOSED)
			return;
		if (old & BIASED) {
			revoke_bias(p);
			old = atomic_load_explicit(&p->tail, SC);
			continue;
		}
		if (atomic_compare_exchange_weak_explicit(&p->tail, &old, old | CLOSED, SC, SC))
			break;
	}
	atomic_store_explicit(&p->closed, true, SC);
	wake_all_workers(p);
	bena_wake_all(&p->space_count, &p->space_sem);
}

/* Free the pool's memory: the last reference is gone. */
static void pool_destroy(struct weft_workpool *p)
{
	weft_chan_release(p->results);
	weft_ctx_release(p->ctx);
	weft_ctx_release(p->parent);
	free(p->stripes);
	free(p->ores);
	free(p->ext);
	free(p->ring);
	atomic_store_explicit(&p->magic, 0, RLX);
	free(p);
}

static void pool_release(struct weft_workpool *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, SC) == 1)
		pool_destroy(p);
}

static void worker_exit(struct worker *w)
{
	struct weft_workpool *p = w->p;

	weft_mutex_lock(&p->mu);
	for (int s = 1; s < NSTAT; s++)
		p->retired[s] += atomic_load_explicit(&w->count[s], RLX);
	if (w->prev)
		w->prev->next = w->next;
	else
		p->workers = w->next;
	if (w->next)
		w->next->prev = w->prev;
	if (!w->left)
		p->live--;
	bool last = !p->finished && p->live == 0 && is_closed(p);
	if (last) {
		/* Every job has been taken and every result delivered (each
		 * worker delivered or handed over its own before leaving). */
		p->finished = true;
		if (p->results)
			weft_chan_close(p->results);
		weft_ctx_cancel(p->ctx); /* lets the watcher go */
	}
	weft_cond_broadcast(&p->cv);
	weft_mutex_unlock(&p->mu);
	free(w);
	pool_release(p);
}

/* Start one worker. Under p->mu. */
static int spawn_worker(struct weft_workpool *p)
{
	struct worker *w = aligned_alloc(CACHE_LINE, round_line(sizeof *w));
	if (w == NULL)
		return ENOMEM;
	memset(w, 0, sizeof *w);
	w->p = p;
	w->index = p->next_index;
	w->jm = (weft_mutex)WEFT_MUTEX_INIT;
	atomic_fetch_add_explicit(&p->refs, 1, SC);
	weft_go_options opts = {.stack_size = p->stack_size, .name = p->name};
	int err = weft_go_opts(worker_main, w, &opts);
	if (err) {
		atomic_fetch_sub_explicit(&p->refs, 1, SC);
		free(w);
		return err;
	}
	p->next_index++;
	w->next = p->workers;
	if (p->workers)
		p->workers->prev = w;
	p->workers = w;
	p->live++;
	return 0;
}

/* ---------------------------------------------------------------- the watcher */

/* With a parent context: wait for the pool's context to be cancelled, and
 * if it was the parent that did it, shut the pool down at once. */
static void kill_pool(struct weft_workpool *p, bool from_parent);

static void watcher_main(void *arg)
{
	struct weft_workpool *p = arg;
	weft_ctx_wait(p->ctx);
	if (weft_ctx_err(p->parent))
		kill_pool(p, true);
	pool_release(p);
}

/* ---------------------------------------------------------------- new */

int weft_workpool_new(weft_workpool **out, const weft_workpool_config *cfg)
{
	static const weft_workpool_config defaults;
	if (out == NULL)
		return EINVAL;
	if (cfg == NULL)
		cfg = &defaults;
	int workers = cfg->workers ? cfg->workers : weft_procs();
	size_t cap = cfg->queue_size ? cfg->queue_size : WEFT_WORKPOOL_DEFAULT_QUEUE;
	if (workers < 1 || workers > WEFT_WORKPOOL_MAX_WORKERS || cap > WEFT_WORKPOOL_MAX_QUEUE ||
	    cfg->job_timeout_ns < 0 || cfg->latency_sample < 0 ||
	    (cfg->latency_sample & (cfg->latency_sample - 1)) != 0 ||
	    cfg->results < WEFT_WORKPOOL_NO_RESULTS || cfg->results > WEFT_WORKPOOL_IN_ORDER)
		return EINVAL;

	int err = ENOMEM;
	struct weft_workpool *p = aligned_alloc(CACHE_LINE, round_line(sizeof *p));
	if (p == NULL)
		return ENOMEM;
	memset(p, 0, sizeof *p);
	p->cap = cap;
	/* A mask when cap is a power of two (above 1: a mask of 0 means "use
	 * %"), else a division per operation. */
	p->mask = (cap & (cap - 1)) == 0 ? cap - 1 : 0;
	p->ring = aligned_alloc(CACHE_LINE, round_line(cap * sizeof(struct slot)));
	if (p->ring == NULL)
		goto fail_ring;
	/* seq 0: no ticket t has t + 1 == 0 in the first 2^32 - 1 of them,
	 * and after that the slot holds a later lap's value. */
	memset(p->ring, 0, cap * sizeof(struct slot));
	p->ext = calloc(cap, sizeof *p->ext);
	if (p->ext == NULL)
		goto fail_ext;
	p->deliver = cfg->results != WEFT_WORKPOOL_NO_RESULTS || cfg->on_result != NULL;
	p->order = cfg->results;
	if (p->order == WEFT_WORKPOOL_NO_RESULTS && cfg->on_result)
		p->order = WEFT_WORKPOOL_AS_COMPLETED;
	if (p->order == WEFT_WORKPOOL_IN_ORDER) {
		p->ores = calloc(cap, sizeof *p->ores);
		if (p->ores == NULL)
			goto fail_ores;
		p->fcur = &p->dcur;
	} else {
		p->fcur = &p->head;
	}
	p->nstripes = 1;
	while (p->nstripes < MAX_STRIPES && p->nstripes < (unsigned)workers)
		p->nstripes <<= 1;
	p->stripes = aligned_alloc(CACHE_LINE, p->nstripes * sizeof(struct stripe));
	if (p->stripes == NULL)
		goto fail_stripes;
	memset(p->stripes, 0, p->nstripes * sizeof(struct stripe));

	p->parent = cfg->ctx ? weft_ctx_retain(cfg->ctx) : NULL;
	err = weft_ctx_with_cancel(cfg->ctx ? cfg->ctx : weft_ctx_background(), &p->ctx);
	if (err)
		goto fail_ctx;
	if (p->deliver && !cfg->on_result) {
		size_t rcap = cfg->results_buffer ? cfg->results_buffer : cap;
		err = weft_chan_make(&p->results, sizeof(weft_workpool_result), rcap);
		if (err)
			goto fail_chan;
	}
	p->on_result = cfg->on_result;
	p->on_result_arg = cfg->on_result_arg;
	p->job_timeout_ns = cfg->job_timeout_ns;
	p->log = cfg->log;
	p->log_fn = cfg->log_fn;
	p->log_arg = cfg->log_arg;
	p->log_on = cfg->log || cfg->log_fn;
	p->slow_jobs = p->log_on || cfg->job_timeout_ns;
	p->stack_size = cfg->stack_size;
	/* The name goes into logfmt lines unquoted: no spaces, quotes, '='. */
	const char *name = cfg->name ? cfg->name : "workpool";
	size_t k = 0;
	for (; name[k] && k < NAME_MAX_LEN - 1; k++) {
		char c = name[k];
		p->name[k] = (c <= ' ' || c == '"' || c == '=' || c == 127) ? '_' : c;
	}
	p->name[k] = '\0';
	p->fixed_sample = cfg->latency_sample != 0;
	atomic_init(&p->smask, cfg->latency_sample ? (uint64_t)cfg->latency_sample - 1 : 0);
	sem_init_empty(&p->wake_sem);
	sem_init_empty(&p->space_sem);
	p->mu = (weft_mutex)WEFT_MUTEX_INIT;
	p->cv = (weft_cond)WEFT_COND_INIT;
	p->bias_mu = (weft_mutex)WEFT_MUTEX_INIT;
	p->bias_ok = membarrier_usable();
	/* As the scheduler's chaos mode shuffles goroutines, the pool's
	 * widens the windows its protocols must be safe in (a biased submitter
	 * between its claim and its store of tail, a grant between its look at
	 * tail and its CAS, an in-order deliverer about to give up its role) by
	 * giving up the CPU there now and then, so that a broken protocol
	 * fails the tests. */
	const char *dbg = getenv("WEFT_DEBUG");
	p->chaos = dbg && strstr(dbg, "chaos");
	atomic_init(&p->refs, 1);
	atomic_init(&p->magic, POOL_MAGIC);

	weft_mutex_lock(&p->mu);
	for (int i = 0; i < workers; i++) {
		err = spawn_worker(p);
		if (err)
			break;
	}
	weft_mutex_unlock(&p->mu);
	if (err == 0 && p->parent) {
		atomic_fetch_add_explicit(&p->refs, 1, SC);
		weft_go_options opts = {.name = "workpool watcher"};
		err = weft_go_opts(watcher_main, p, &opts);
		if (err)
			atomic_fetch_sub_explicit(&p->refs, 1, SC);
	}
	if (err) {
		/* Let the workers that started leave, and free with the last. */
		kill_pool(p, false);
		atomic_store_explicit(&p->magic, POOL_FREED, RLX);
		pool_release(p);
		return err;
	}
	*out = p;
	return 0;

fail_chan:
	weft_ctx_release(p->ctx);
fail_ctx:
	weft_ctx_release(p->parent);
	free(p->stripes);
fail_stripes:
	free(p->ores);
fail_ores:
	free(p->ext);
fail_ext:
	free(p->ring);
fail_ring:
	free(p);
	return err;
}

/* ---------------------------------------------------------------- shutdown */

static void kill_pool(struct weft_workpool *p, bool from_parent)
{
	weft_mutex_lock(&p->mu);
	uint64_t bits = CTL_DISCARD | CTL_KILLED | (from_parent ? CTL_PARENT : 0);
	atomic_fetch_or_explicit(&p->ctl, bits, SC);
	close_queue(p);
	weft_ctx_cancel(p->ctx);
	for (struct worker *w = p->workers; w; w = w->next) {
		weft_mutex_lock(&w->jm);
		if (w->job_ctx)
			weft_ctx_cancel(w->job_ctx);
		weft_mutex_unlock(&w->jm);
	}
	weft_mutex_unlock(&p->mu);
}

/* Fatal if the caller is one of p's workers: it would wait for itself. */
static void check_not_own_job(struct weft_workpool *p, const char *what)
{
	uint64_t me = weft_self_id();
	if (me == 0)
		return;
	weft_mutex_lock(&p->mu);
	for (struct worker *w = p->workers; w; w = w->next) {
		if (atomic_load_explicit(&w->gid, RLX) == me) {
			weft_mutex_unlock(&p->mu);
			wp_fatal("%s called from one of the pool's own jobs (it would wait for "
			         "itself)",
			         what);
		}
	}
	weft_mutex_unlock(&p->mu);
}

int weft_workpool_shutdown(weft_workpool *p, int mode, int64_t deadline_ns)
{
	check(p, "shutdown");
	if (mode != WEFT_WORKPOOL_DRAIN && mode != WEFT_WORKPOOL_DISCARD)
		wp_fatal("shutdown with an unknown mode %d", mode);
	check_not_own_job(p, "shutdown");
	if (mode == WEFT_WORKPOOL_DISCARD)
		atomic_fetch_or_explicit(&p->ctl, CTL_DISCARD, SC);
	weft_mutex_lock(&p->mu);
	close_queue(p);
	int r = 0;
	while (!p->finished && r == 0)
		r = weft_cond_wait_until(&p->cv, &p->mu, deadline_ns);
	bool done = p->finished;
	weft_mutex_unlock(&p->mu);
	if (done)
		return 0;
	kill_pool(p, false);
	return ETIMEDOUT;
}

void weft_workpool_shutdown_now(weft_workpool *p)
{
	check(p, "shutdown_now");
	kill_pool(p, false);
}

void weft_workpool_free(weft_workpool *p)
{
	if (p == NULL)
		return;
	uint32_t m = POOL_MAGIC;
	if (!atomic_compare_exchange_strong_explicit(&p->magic, &m, POOL_FREED, SC, SC))
		wp_fatal("free of a %s pool",
		         m == POOL_FREED ? "freed" : "corrupt or uninitialised");
	kill_pool(p, false);
	pool_release(p);
}

/* ---------------------------------------------------------------- wait, resize */

/* Idle: every job submitted so far has finished. The counts are read
 * before tail, so equal means idle at the moment of reading them. Under mu. */
static bool is_idle(struct weft_workpool *p)
{
	int64_t fin = 0;
	for (int s = 1; s < NSTAT; s++)
		fin += p->retired[s];
	for (struct worker *w = p->workers; w; w = w->next)
		for (int s = 1; s < NSTAT; s++)
			fin += atomic_load_explicit(&w->count[s], SC);
	uint64_t t = atomic_load_explicit(&p->tail, SC) & TICKETS;
	/* More finished than tail says: the biased owner has published a
	 * job (which has run) and not yet stored tail; nobody notifies
	 * after that store, so this is idle too. */
	return (uint64_t)fin >= t;
}

static int wait_idle(weft_workpool *p, int64_t deadline, weft_ctx *ctx)
{
	check(p, "wait");
	check_not_own_job(p, "wait");
	atomic_fetch_add_explicit(&p->refs, 1, SC);
	weft_mutex_lock(&p->mu);
	atomic_fetch_add_explicit(&p->idle_waiters, 1, SC); /* pairs with go_idle's */
	int r = 0;
	while (!is_idle(p) && r == 0) {
		if (ctx)
			r = weft_cond_wait_ctx(ctx, &p->cv, &p->mu);
		else
			r = weft_cond_wait_until(&p->cv, &p->mu, deadline);
	}
	if (r && is_idle(p))
		r = 0;
	atomic_fetch_sub_explicit(&p->idle_waiters, 1, SC);
	weft_mutex_unlock(&p->mu);
	pool_release(p);
	return r;
}

void weft_workpool_wait(weft_workpool *p)
{
	wait_idle(p, INT64_MAX, NULL);
}

int weft_workpool_wait_until(weft_workpool *p, int64_t deadline_ns)
{
	return wait_idle(p, deadline_ns, NULL);
}

int weft_workpool_wait_ctx(weft_ctx *ctx, weft_workpool *p)
{
	return wait_idle(p, INT64_MAX, ctx ? ctx : weft_ctx_background());
}

int weft_workpool_resize(weft_workpool *p, int n)
{
	check(p, "resize");
	if (n < 1 || n > WEFT_WORKPOOL_MAX_WORKERS)
		return EINVAL;
	int err = 0;
	weft_mutex_lock(&p->mu);
	if (is_closed(p)) {
		weft_mutex_unlock(&p->mu);
		return EPIPE;
	}
	uint64_t c = atomic_load_explicit(&p->ctl, SC);
	int excess = (int)(c >> CTL_EXCESS_SHIFT);
	int staying = p->live - excess;
	if (n < staying) {
		atomic_fetch_add_explicit(&p->ctl, (uint64_t)(staying - n) << CTL_EXCESS_SHIFT, SC);
		wake_all_workers(p);
	} else if (n > staying) {
		int more = n - staying;
		/* Cancel pending exits first: those workers stay. */
		while (more > 0 && claim_exit(p))
			more--;
		while (more-- > 0 && err == 0)
			err = spawn_worker(p);
	}
	weft_mutex_unlock(&p->mu);
	return err;
}

/* ---------------------------------------------------------------- results, metrics */

weft_chan *weft_workpool_results(weft_workpool *p)
{
	check(p, "results");
	return p->results;
}

void weft_workpool_metrics_get(weft_workpool *p, weft_workpool_metrics *out)
{
	check(p, "metrics");
	memset(out, 0, sizeof *out);
	int64_t n[NSTAT] = {0};
	int64_t running = 0;

	weft_mutex_lock(&p->mu);
	for (int s = 1; s < NSTAT; s++)
		n[s] = p->retired[s];
	for (struct worker *w = p->workers; w; w = w->next) {
		for (int s = 1; s < NSTAT; s++)
			n[s] += atomic_load_explicit(&w->count[s], RLX);
		running += atomic_load_explicit(&w->running, RLX);
	}
	int64_t excess = (int64_t)(atomic_load_explicit(&p->ctl, RLX) >> CTL_EXCESS_SHIFT);
	out->workers = p->live - excess;
	weft_mutex_unlock(&p->mu);

	/* tail before head: head only grows, so tail - head <= cap. */
	uint64_t t = atomic_load_explicit(&p->tail, SC) & TICKETS;
	uint64_t h = atomic_load_explicit(&p->head, SC);
	out->queue_cap = (int64_t)p->cap;
	out->submitted = (int64_t)t;
	out->queued = t > h ? (int64_t)(t - h) : 0;
	out->running = running;
	out->completed = n[WEFT_WORKPOOL_COMPLETED];
	out->failed = n[WEFT_WORKPOOL_FAILED];
	out->timed_out = n[WEFT_WORKPOOL_TIMED_OUT];
	out->canceled = n[WEFT_WORKPOOL_CANCELED];
	out->rejected = atomic_load_explicit(&p->rejected, RLX);
	out->results_dropped = atomic_load_explicit(&p->dropped, RLX);
	latency_of(p, 0, &out->wait);
	latency_of(p, 1, &out->run);
}

const char *weft_workpool_status_name(int status)
{
	switch (status) {
	case WEFT_WORKPOOL_COMPLETED: return "completed";
	case WEFT_WORKPOOL_FAILED: return "failed";
	case WEFT_WORKPOOL_TIMED_OUT: return "timed_out";
	case WEFT_WORKPOOL_CANCELED: return "canceled";
	default: return "unknown";
	}
}
