/* SPDX-License-Identifier: MIT */
/*
 * sync_stress_test.c - bounded-time stresses of the sync and context layers
 * under random schedules: cancellation racing completion in every _ctx wait
 * (semaphore, Cond, WaitGroup, channel send and receive, select, sleep);
 * RWMutex, Once, Cond and a reused WaitGroup churned together; and context
 * trees built, cancelled from several goroutines and a pthread at once, and
 * released, while waiters wait on random nodes; and a starving Mutex's
 * hand-offs raced by a stream of newcomers. Goroutines and foreign
 * pthreads take part in each; random choices come from test_rand32 with a
 * seed per worker. Invariants are checked as the calls return and at the end
 * of each round: results are 0 or exactly the context's error, explained by
 * how that context can end; semaphore holdings never exceed the capacity
 * and no token is left behind; every value sent is received once; a Once
 * runs once; no reader is inside with a writer; causes come from an
 * ancestor that was cancelled; nothing hangs; every context, channel and
 * goroutine made is gone at the end. Meant to be run under chaos mode with
 * several seeds (WEFT_DEBUG=chaos,seed=N), and under the sanitizers.
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEC (1000 * TEST_MS)
#define HOUR (3600 * SEC)

/* A random short pause: none, a yield, or a sleep of up to max_us. */
static void pause_some(uint32_t *s, uint32_t max_us)
{
	switch (test_rand32(s) % 4) {
	case 0: break;
	case 1: weft_yield(); break;
	default: weft_sleep((int64_t)(test_rand32(s) % (max_us + 1)) * WEFT_MICROSECOND);
	}
}

/* Wait for wg, failing the test (not hanging it) if it takes more than
 * 10 s x slowdown: a lost wake-up or a wait that cannot end. */
static void wg_wait_bounded(weft_wg *wg, const char *what)
{
	int64_t bound = 10 * SEC * test_slowdown();
	if (weft_wg_wait_until(wg, weft_now() + bound) != 0)
		FAIL("%s: not finished after %lld s", what, (long long)(bound / SEC));
}

/* What was alive before a test: it must all be gone at its end. */
struct baseline {
	int64_t goroutines;
	int64_t contexts;
	int64_t channels;
};

static struct baseline baseline_take(void)
{
	weft_stats st;
	weft_stats_get(&st);
	return (struct baseline){weft_num_goroutines(), st.contexts, st.channels};
}

/* Goroutines that have called weft_wg_done may still be on their way out:
 * poll for a while before comparing. */
static void baseline_expect(const struct baseline *b)
{
	int64_t deadline = test_now_ns() + 5 * SEC * test_slowdown();
	while (weft_num_goroutines() != b->goroutines && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	weft_stats st;
	weft_stats_get(&st);
	ASSERT_EQ(weft_num_goroutines(), b->goroutines);
	ASSERT_EQ(st.contexts, b->contexts);
	ASSERT_EQ(st.channels, b->channels);
}

/* Run rounds of fn(seed) for ms milliseconds (always one at least), the
 * seed changing each round; returns the number of rounds. */
static long run_rounds(void (*fn)(uint32_t seed), uint32_t seed, int64_t ms)
{
	int64_t end = test_now_ns() + ms * TEST_MS;
	long rounds = 0;
	do {
		fn(seed);
		seed = seed * 1664525u + 1013904223u;
		rounds++;
	} while (test_now_ns() < end);
	return rounds;
}

/* ---------------------------------------------------------------- cancellation racing completion */

enum {
	CR_THREADS = 2,
	CR_MAX_G = 10,
	CR_MAX = CR_MAX_G + CR_THREADS,
	CR_ITERS_MAX = 120,
	CR_CANCELLERS = 3, /* goroutines, plus a pthread */
	SEM_CAP = 8,
	PARENT_CAUSE = ESHUTDOWN, /* the shared parent's cancellation cause */
};

enum { OP_SEM, OP_COND, OP_WG, OP_RECV, OP_SEND, OP_SELECT, OP_SLEEP, OPS };

static const char *const op_names[OPS] = {
	"sem_acquire", "cond_wait", "wg_wait", "chan_recv", "chan_send", "select", "sleep",
};

/* A request to a canceller: cancel ctx (its reference is the canceller's)
 * after a delay of up to 200 us. */
struct cancel_req {
	weft_ctx *ctx;
	uint32_t delay_us;
};

static struct crace {
	int ngo;                      /* goroutine workers */
	int iters;                    /* operations per worker per round */
	weft_ctx *parent;             /* every operation's context descends from it */
	weft_ctx *pval;               /* a value node over parent */
	atomic_long parent_countdown; /* cancel requests before the parent's cancel */
	weft_sem sem;                 /* capacity SEM_CAP */
	atomic_int sem_in_use;        /* tokens held by whoever acquired them */
	weft_mutex mu;
	weft_cond cond;
	int cond_waiting;     /* under mu: cond waiters (queued, or on their way) */
	int cond_owner;       /* under mu: 1 + the waiter that has just returned */
	long cond_bound;      /* under mu: wake-ups the signals so far can explain */
	long cond_woken;      /* under mu: cond waits that returned 0 */
	weft_wg wg;           /* counter 0 -> 1 -> 0 ..., by wg_driver */
	atomic_uint wg_phase; /* odd: wg's counter is 1 for sure */
	weft_chan *ch;        /* int64: worker << 32 | seq */
	weft_chan *never;     /* nobody sends to it */
	weft_chan *reqs;      /* struct cancel_req, to the cancellers */
	_Atomic uint8_t seen[CR_MAX * CR_ITERS_MAX]; /* receptions per value */
	uint32_t sent[CR_MAX]; /* values each worker sent (seqs 0..sent-1); read after the join */
	atomic_long received;
	atomic_int stop; /* helpers finish */
	atomic_long calls[OPS], errs[OPS];
	weft_wg workers, helpers;
} cr;

struct cr_worker {
	int id;
	uint32_t seed;
	bool thread;
};

/* Hold n tokens for a moment, checking the capacity. */
static void sem_hold(int64_t n, uint32_t *s)
{
	int in = atomic_fetch_add(&cr.sem_in_use, (int)n) + (int)n;
	if (in > SEM_CAP)
		FAIL("semaphore: %d tokens held at once, capacity %d", in, SEM_CAP);
	pause_some(s, 30);
	atomic_fetch_sub(&cr.sem_in_use, (int)n);
	weft_sem_release(&cr.sem, n);
}

static void cr_received(int64_t v)
{
	uint32_t w = (uint32_t)(v >> 32), q = (uint32_t)v;
	if (v < 0 || w >= CR_MAX || q >= CR_ITERS_MAX)
		FAIL("received %#llx, which nobody sent", (unsigned long long)v);
	if (atomic_fetch_add(&cr.seen[w * CR_ITERS_MAX + q], 1) != 0)
		FAIL("value %u of worker %u received twice", q, w);
	atomic_fetch_add(&cr.received, 1);
}

/* The context of one operation: a child of the parent or of a value node
 * over it, with a timeout of 0 to 200 us (*timed), or handed to a canceller
 * that cancels it after as long. */
static weft_ctx *cr_ctx(uint32_t *s, bool *timed)
{
	weft_ctx *base = test_rand32(s) % 2 ? cr.parent : cr.pval, *ctx = NULL;
	*timed = test_rand32(s) % 2;
	if (*timed) {
		int64_t t = (int64_t)(test_rand32(s) % 201) * WEFT_MICROSECOND;
		ASSERT_EQ(weft_ctx_with_timeout(base, t, &ctx), 0);
		return ctx;
	}
	ASSERT_EQ(weft_ctx_with_cancel(base, &ctx), 0);
	struct cancel_req rq = {weft_ctx_retain(ctx), test_rand32(s) % 201};
	ASSERT_EQ(weft_chan_send(cr.reqs, &rq), 0);
	return ctx;
}

/* A failed _ctx call: its result must be the context's error, and the
 * context's cause must say how it ended: its own timeout (ETIMEDOUT), its
 * canceller (ECANCELED) or the parent's cancel (PARENT_CAUSE). */
static void cr_check(int op, int r, weft_ctx *ctx, bool timed)
{
	int e = weft_ctx_err(ctx), c = weft_ctx_cause(ctx);
	if (r != e)
		FAIL("%s returned %d, but its context's error is %d", op_names[op], r, e);
	bool ok = (r == ETIMEDOUT && c == ETIMEDOUT && timed) ||
	          (r == ECANCELED && c == ECANCELED && !timed) ||
	          (r == ECANCELED && c == PARENT_CAUSE && weft_ctx_err(cr.parent) == ECANCELED);
	if (!ok)
		FAIL("%s returned %d, cause %d, on a context %s", op_names[op], r, c,
		     timed ? "with a timeout" : "a canceller cancels");
}

static int cr_sem(weft_ctx *ctx, bool until, int64_t deadline, uint32_t *s)
{
	int64_t n = 1 + test_rand32(s) % 4;
	int r = until ? weft_sem_acquire_until(&cr.sem, n, deadline)
	              : weft_sem_acquire_ctx(ctx, &cr.sem, n);
	if (r == 0)
		sem_hold(n, s);
	return r;
}

static int cr_cond(int id, weft_ctx *ctx, bool until, int64_t deadline)
{
	weft_mutex_lock(&cr.mu);
	cr.cond_waiting++;
	int r = until ? weft_cond_wait_until(&cr.cond, &cr.mu, deadline)
	              : weft_cond_wait_ctx(ctx, &cr.cond, &cr.mu);
	cr.cond_waiting--;
	/* The mutex is ours again, whatever r is. */
	if (cr.cond_owner)
		FAIL("cond wait returned %d while waiter %d holds the mutex", r, cr.cond_owner - 1);
	cr.cond_owner = id + 1;
	cr.cond_woken += r == 0;
	weft_yield();
	if (cr.cond_owner != id + 1)
		FAIL("waiter %d took the mutex from waiter %d", cr.cond_owner - 1, id);
	cr.cond_owner = 0;
	weft_mutex_unlock(&cr.mu);
	return r;
}

static int cr_wg(weft_ctx *ctx, bool until, int64_t deadline)
{
	unsigned p0 = atomic_load(&cr.wg_phase);
	int r = until ? weft_wg_wait_until(&cr.wg, deadline) : weft_wg_wait_ctx(ctx, &cr.wg);
	unsigned p1 = atomic_load(&cr.wg_phase);
	if (r == 0 && p0 == p1 && p0 % 2)
		FAIL("wg wait returned 0 while the counter was 1 throughout (phase %u)", p0);
	return r;
}

/* One random operation on a fresh context; checks its result. */
static void cr_op(struct cr_worker *w, uint32_t *s)
{
	bool timed;
	weft_ctx *ctx = cr_ctx(s, &timed);
	int op = (int)(test_rand32(s) % OPS);
	/* A quarter of the sync waits use a deadline of 0 to 200 us instead of
	 * the context: the same claim race, against the waiter's own timer. */
	bool until = (op == OP_SEM || op == OP_COND || op == OP_WG) && test_rand32(s) % 4 == 0;
	int64_t deadline = weft_now() + (int64_t)(test_rand32(s) % 201) * WEFT_MICROSECOND;
	int64_t v = (int64_t)w->id << 32 | cr.sent[w->id], x = -1;
	int r, chosen = 99;
	switch (op) {
	case OP_SEM: r = cr_sem(ctx, until, deadline, s); break;
	case OP_COND: r = cr_cond(w->id, ctx, until, deadline); break;
	case OP_WG: r = cr_wg(ctx, until, deadline); break;
	case OP_RECV:
		r = weft_chan_recv_ctx(ctx, cr.ch, &x);
		if (r == 0)
			cr_received(x);
		break;
	case OP_SEND:
		r = weft_chan_send_ctx(ctx, cr.ch, &v);
		if (r == 0)
			cr.sent[w->id]++;
		break;
	case OP_SELECT: {
		weft_case cs[3] = {WEFT_SEND_CASE(cr.ch, &v), WEFT_RECV_CASE(cr.ch, &x),
		                   WEFT_RECV_CASE(cr.never, NULL)};
		r = weft_select_ctx(ctx, cs, 3, &chosen);
		if (r == 0 && chosen == 0)
			cr.sent[w->id]++;
		else if (r == 0 && chosen == 1)
			cr_received(x);
		else if ((r == 0) != (chosen >= 0) || chosen > 1)
			FAIL("select returned %d with case %d", r, chosen);
		break;
	}
	default: r = weft_sleep_ctx(ctx, (int64_t)(test_rand32(s) % 300) * WEFT_MICROSECOND);
	}
	atomic_fetch_add(&cr.calls[op], 1);
	if (r) {
		atomic_fetch_add(&cr.errs[op], 1);
		if (until && r != ETIMEDOUT)
			FAIL("%s_until returned %d", op_names[op], r);
		else if (!until)
			cr_check(op, r, ctx, timed);
	}
	weft_ctx_release(ctx);
}

static void cr_worker(void *arg)
{
	struct cr_worker *w = arg;
	uint32_t s = w->seed | 1;
	for (int i = 0; i < cr.iters; i++) {
		cr_op(w, &s);
		if (test_rand32(&s) % 8 == 0)
			weft_yield();
	}
	weft_wg_done(&cr.workers);
}

/* Cancels what the workers hand it, each after its delay, until the request
 * channel is closed; the one whose request brings the countdown to zero
 * cancels the shared parent too. */
static void cr_canceller(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg | 1;
	struct cancel_req rq;
	while (weft_chan_recv(cr.reqs, &rq) == 0) {
		if (rq.delay_us < 50) {
			for (uint32_t i = rq.delay_us % 3; i > 0; i--)
				weft_yield();
		} else {
			weft_sleep((int64_t)(rq.delay_us - 50) * WEFT_MICROSECOND);
		}
		weft_ctx_cancel(rq.ctx);
		weft_ctx_release(rq.ctx);
		if (atomic_fetch_sub(&cr.parent_countdown, 1) == 1)
			weft_ctx_cancel_cause(cr.parent, PARENT_CAUSE);
		if (test_rand32(&s) % 4 == 0)
			weft_yield();
	}
	weft_wg_done(&cr.helpers);
}

/* Takes 1 to 8 tokens at a time and holds them a moment, so that the
 * workers' acquires queue. Every holder lets go within microseconds: when
 * the tokens do not come for seconds, some were never given back. */
static void cr_sem_hog(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg | 1;
	int64_t patience = 5 * SEC * test_slowdown();
	while (!atomic_load(&cr.stop)) {
		int64_t n = 1 + test_rand32(&s) % SEM_CAP;
		if (weft_sem_acquire_until(&cr.sem, n, weft_now() + patience) != 0)
			FAIL("semaphore: %lld tokens not granted in %lld s, with %d of %d held: "
			     "tokens leaked",
			     (long long)n, (long long)(patience / SEC), atomic_load(&cr.sem_in_use),
			     SEM_CAP);
		sem_hold(n, &s);
		pause_some(&s, 50);
	}
	weft_wg_done(&cr.helpers);
}

/* Signals (three times in four) or broadcasts the Cond with the mutex
 * held, counting how many wake-ups that can explain: one for a signal when
 * someone waits, every waiter for a broadcast. */
static void cr_signaller(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg | 1;
	while (!atomic_load(&cr.stop)) {
		pause_some(&s, 60);
		weft_mutex_lock(&cr.mu);
		if (test_rand32(&s) % 4) {
			cr.cond_bound += cr.cond_waiting > 0;
			weft_cond_signal(&cr.cond);
		} else {
			cr.cond_bound += cr.cond_waiting;
			weft_cond_broadcast(&cr.cond);
		}
		weft_mutex_unlock(&cr.mu);
	}
	weft_wg_done(&cr.helpers);
}

/* Takes the WaitGroup's counter from 0 to 1 and back, holding it at 1 for
 * a random moment; the phase is odd only while it is 1 for sure. */
static void cr_wg_driver(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg | 1;
	while (!atomic_load(&cr.stop)) {
		weft_wg_add(&cr.wg, 1);
		atomic_fetch_add(&cr.wg_phase, 1);
		pause_some(&s, 100);
		atomic_fetch_add(&cr.wg_phase, 1);
		weft_wg_done(&cr.wg);
		pause_some(&s, 20);
	}
	weft_wg_done(&cr.helpers);
}

static void cr_round(uint32_t seed)
{
	uint32_t s = seed | 1;
	struct cr_worker wk[CR_MAX];
	pthread_t th[CR_THREADS], cth;
	int nw = cr.ngo + CR_THREADS;

	ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &cr.parent), 0);
	ASSERT_EQ(weft_ctx_with_value(cr.parent, &cr, &cr, &cr.pval), 0);
	/* A third of the rounds cancel the parent midway. */
	atomic_store(&cr.parent_countdown,
	             test_rand32(&s) % 3 ? -1 : 1 + (long)(test_rand32(&s) % (nw * cr.iters / 2)));
	ASSERT_EQ(weft_sem_init(&cr.sem, SEM_CAP), 0);
	cr.mu = (weft_mutex)WEFT_MUTEX_INIT;
	cr.cond = (weft_cond)WEFT_COND_INIT;
	cr.cond_waiting = cr.cond_owner = 0;
	cr.cond_bound = cr.cond_woken = 0;
	ASSERT_EQ(weft_chan_make(&cr.ch, sizeof(int64_t), test_rand32(&s) % 2 ? 0 : 4), 0);
	ASSERT_EQ(weft_chan_make(&cr.never, sizeof(int64_t), 0), 0);
	ASSERT_EQ(weft_chan_make(&cr.reqs, sizeof(struct cancel_req), 256), 0);
	memset((void *)cr.seen, 0, sizeof cr.seen);
	memset(cr.sent, 0, sizeof cr.sent);
	atomic_store(&cr.received, 0);
	atomic_store(&cr.stop, 0);

	weft_wg_add(&cr.helpers, CR_CANCELLERS + 4);
	weft_wg_add(&cr.workers, nw);
	for (int i = 0; i < CR_CANCELLERS; i++)
		GO(cr_canceller, (void *)(uintptr_t)test_rand32(&s));
	test_start_thread(&cth, cr_canceller, (void *)(uintptr_t)test_rand32(&s));
	GO(cr_sem_hog, (void *)(uintptr_t)test_rand32(&s));
	GO(cr_signaller, (void *)(uintptr_t)test_rand32(&s));
	GO(cr_wg_driver, (void *)(uintptr_t)test_rand32(&s));
	for (int i = 0; i < nw; i++) {
		wk[i] = (struct cr_worker){i, test_rand32(&s), i >= cr.ngo};
		if (wk[i].thread)
			test_start_thread(&th[i - cr.ngo], cr_worker, &wk[i]);
		else
			GO(cr_worker, &wk[i]);
	}
	wg_wait_bounded(&cr.workers, "workers");
	atomic_store(&cr.stop, 1);
	weft_chan_close(cr.reqs);
	wg_wait_bounded(&cr.helpers, "cancellers and partners");
	for (int i = 0; i < CR_THREADS; i++)
		test_join_thread(th[i]);
	test_join_thread(cth);

	/* Every token is back: no waiter kept a grant it gave up on. */
	ASSERT_EQ(atomic_load(&cr.sem_in_use), 0);
	if (weft_sem_tryacquire(&cr.sem, SEM_CAP) != 0)
		FAIL("seed %u: the semaphore's %d tokens are not all free at the end", seed,
		     SEM_CAP);
	weft_sem_release(&cr.sem, SEM_CAP);
	if (cr.cond_woken > cr.cond_bound)
		FAIL("seed %u: %ld cond waits woken, the signals explain %ld", seed, cr.cond_woken,
		     cr.cond_bound);
	ASSERT_EQ(weft_wg_wait_until(&cr.wg, weft_now()), 0);
	/* What is still buffered counts as received; then every value sent
	 * was received once, and none that was not. */
	int64_t x;
	while (weft_chan_tryrecv(cr.ch, &x) == 0)
		cr_received(x);
	long sent = 0;
	for (int w = 0; w < nw; w++) {
		sent += cr.sent[w];
		for (uint32_t q = 0; q < CR_ITERS_MAX; q++) {
			int n = atomic_load(&cr.seen[w * CR_ITERS_MAX + q]);
			if (n != (q < cr.sent[w]))
				FAIL("seed %u: worker %d's value %u received %d times (%u sent)",
				     seed, w, q, n, cr.sent[w]);
		}
	}
	ASSERT_EQ(atomic_load(&cr.received), sent);

	weft_ctx_release(cr.pval);
	weft_ctx_release(cr.parent);
	weft_chan_release(cr.ch);
	weft_chan_release(cr.never);
	weft_chan_release(cr.reqs);
}

static void cr_run(int procs)
{
	ASSERT_EQ(weft_set_procs(procs, NULL), 0);
	struct baseline b = baseline_take();
	memset(&cr, 0, sizeof cr);
	cr.ngo = TEST_TSAN ? 6 : CR_MAX_G;
	cr.iters = TEST_SIZE(CR_ITERS_MAX, 60);
	const char *env = getenv("CR_SEED");
	long rounds = env ? (cr_round((uint32_t)strtoul(env, NULL, 0)), 1)
	                  : run_rounds(cr_round, 1, TEST_SIZE(1500, 600));
	printf("    %ld rounds:", rounds);
	for (int op = 0; op < OPS; op++)
		printf(" %s %ld/%ld", op_names[op], atomic_load(&cr.errs[op]),
		       atomic_load(&cr.calls[op]));
	printf(" (failed/calls)\n");
	baseline_expect(&b);
}

/*
 * Rounds in which 10 goroutines (6 under TSan) and 2 pthreads each make
 * 120 random _ctx calls (60 quick): a weighted semaphore acquire of 1 to 4
 * tokens (capacity 8, held a moment when granted), a Cond wait, a WaitGroup
 * wait, a channel receive, send and select, a sleep. Each call's context is
 * a child of a shared parent (directly or under a value node) that ends by a
 * timeout of 0 to 200 us or by one of 3 canceller goroutines and a pthread
 * after as long; a third of the rounds cancel the parent midway too. Their
 * partners: a goroutine that holds 1 to 8 tokens at a time, one that
 * signals or broadcasts the Cond, one that takes the WaitGroup's counter to
 * 1 and back, and the other workers on the channel (capacity 0 or 4) and in
 * selects. A quarter of the sync waits take a deadline of 0 to 200 us
 * instead of the context (the _until forms). At 2 Ps; for 1.5 s (0.6
 * quick). Checks: a call returns 0 or its context's error, with the
 * cause that says which of the three ended it; the semaphore never has more
 * than 8 tokens out and all 8 are free at the end; a cond wait returns with
 * the mutex and is woken no more often than the signals can explain; a
 * WaitGroup wait never returns 0 while the counter stays 1; each value sent
 * is received once, and none whose send failed; everything ends, and no
 * context, channel or goroutine is left. Guards: a waiter that is granted
 * (tokens, a value, a wake-up) after its context won the claim, or the
 * reverse; a cancellation or deadline that is lost; a semaphore that serves
 * a waiter who gave up; a goroutine readied by a cancellation or a waker
 * before it has parked (a crash). CR_SEED=N replays one round.
 */
TEST(cancel_races_completion)
{
	cr_run(2);
}

/*
 * The same at 1 P: between goroutines, the claim races are then decided by
 * the order in which they run (grant then cancel before the waiter runs, or
 * the reverse), which chaos mode shuffles, while the pthreads, the timers
 * and sysmon race for real.
 */
TEST(cancel_races_completion_one_p)
{
	cr_run(1);
}

/* ---------------------------------------------------------------- RWMutex, Once, Cond, WaitGroup */

enum {
	MX_MAX_G = 8,    /* workers, plus a pthread */
	MX_WAITERS = 3,  /* WaitGroup waiters, plus a pthread */
	MX_ITEMS = 4096, /* most items produced per round */
	MX_QCAP = 64,
};

static struct mix {
	int nworkers; /* goroutines and the pthread */
	int iters;
	weft_rwmutex rw;
	long a, b; /* under rw: a writer adds 1 to both, readers see them equal */
	atomic_long writes;
	atomic_int readers, writers; /* inside rw now */
	weft_once once;              /* fresh each round */
	atomic_int once_runs, once_finished;
	weft_mutex mu;
	weft_cond cond;
	int queue[MX_QCAP]; /* under mu: a ring of item ids */
	int qhead, qlen;    /* under mu */
	int next_item;      /* under mu: items produced this round */
	bool closed;        /* under mu: no more items this round */
	int owner;          /* under mu: 1 + the consumer inside */
	_Atomic uint8_t taken[MX_ITEMS];
	weft_wg work;        /* reused round after round, never reinitialised */
	atomic_int finished; /* workers done this round */
	weft_wg all;
} mx;

struct mx_arg {
	int id;
	uint32_t seed;
};

static void mx_once_fn(void *arg)
{
	uint32_t *s = arg;
	atomic_fetch_add(&mx.once_runs, 1);
	pause_some(s, 50);
	atomic_store(&mx.once_finished, 1);
}

/* Every caller of the round's Once returns after its one run finished. */
static void mx_once(uint32_t *s)
{
	uint32_t fs = *s;
	weft_once_do(&mx.once, mx_once_fn, &fs);
	if (atomic_load(&mx.once_runs) != 1 || !atomic_load(&mx.once_finished) ||
	    !weft_once_done(&mx.once))
		FAIL("once_do returned with %d runs, finished %d", atomic_load(&mx.once_runs),
		     atomic_load(&mx.once_finished));
}

static void mx_read(uint32_t *s)
{
	atomic_fetch_add(&mx.readers, 1);
	if (atomic_load(&mx.writers))
		FAIL("a reader is inside the RWMutex with a writer");
	if (mx.a != mx.b)
		FAIL("a reader sees a half-done write (%ld, %ld)", mx.a, mx.b);
	if (test_rand32(s) % 4 == 0)
		weft_yield();
	atomic_fetch_sub(&mx.readers, 1);
	weft_rwmutex_runlock(&mx.rw);
}

static void mx_write(uint32_t *s)
{
	if (atomic_fetch_add(&mx.writers, 1) != 0 || atomic_load(&mx.readers))
		FAIL("a writer is inside the RWMutex with %d writers, %d readers",
		     atomic_load(&mx.writers) - 1, atomic_load(&mx.readers));
	mx.a++;
	if (test_rand32(s) % 4 == 0)
		weft_yield();
	mx.b++;
	atomic_fetch_add(&mx.writes, 1);
	atomic_fetch_sub(&mx.writers, 1);
	weft_rwmutex_unlock(&mx.rw);
}

/* Take an item (mu held, queue not empty), checking it is taken once. */
static void mx_take(int id)
{
	if (mx.owner)
		FAIL("consumers %d and %d hold the mutex at once", mx.owner - 1, id);
	mx.owner = id + 1;
	int item = mx.queue[mx.qhead];
	mx.qhead = (mx.qhead + 1) % MX_QCAP;
	mx.qlen--;
	if (atomic_fetch_add(&mx.taken[item], 1) != 0)
		FAIL("item %d taken twice", item);
	mx.owner = 0;
}

static void mx_produce(uint32_t *s)
{
	weft_mutex_lock(&mx.mu);
	if (mx.qlen < MX_QCAP && mx.next_item < MX_ITEMS) {
		mx.queue[(mx.qhead + mx.qlen++) % MX_QCAP] = mx.next_item++;
		if (test_rand32(s) % 4)
			weft_cond_signal(&mx.cond);
		else
			weft_cond_broadcast(&mx.cond);
	}
	weft_mutex_unlock(&mx.mu);
}

/* Take an item, waiting for one until a deadline 0 to 100 us away. */
static void mx_consume(int id, uint32_t *s)
{
	int64_t deadline = weft_now() + (int64_t)(test_rand32(s) % 101) * WEFT_MICROSECOND;
	weft_mutex_lock(&mx.mu);
	while (mx.qlen == 0 && !mx.closed)
		if (weft_cond_wait_until(&mx.cond, &mx.mu, deadline) == ETIMEDOUT)
			break;
	if (mx.qlen)
		mx_take(id);
	weft_mutex_unlock(&mx.mu);
}

/* One random step: a read or a write (blocking, or a try), producing an
 * item or consuming one. */
static void mx_step(int id, uint32_t *s)
{
	uint32_t op = test_rand32(s) % 8;
	if (op < 3) {
		if (op < 2)
			weft_rwmutex_rlock(&mx.rw);
		else if (weft_rwmutex_tryrlock(&mx.rw) != 0)
			return;
		mx_read(s);
	} else if (op < 5) {
		if (op == 3)
			weft_rwmutex_lock(&mx.rw);
		else if (weft_rwmutex_trylock(&mx.rw) != 0)
			return;
		mx_write(s);
	} else if (op < 7) {
		mx_produce(s);
	} else {
		mx_consume(id, s);
	}
}

static void mx_worker(void *arg)
{
	struct mx_arg *a = arg;
	uint32_t s = a->seed | 1;
	mx_once(&s);
	for (int i = 0; i < mx.iters; i++)
		mx_step(a->id, &s);
	atomic_fetch_add(&mx.finished, 1);
	weft_wg_done(&mx.work);
	weft_wg_done(&mx.all);
}

/* Waits for the round's workers with deadlines 0 to 100 us away, again and
 * again; when a wait returns 0, every worker has finished. */
static void mx_wg_waiter(void *arg)
{
	struct mx_arg *a = arg;
	uint32_t s = a->seed | 1;
	mx_once(&s);
	for (;;) {
		int64_t d = weft_now() + (int64_t)(test_rand32(&s) % 101) * WEFT_MICROSECOND;
		int r = weft_wg_wait_until(&mx.work, d);
		if (r == 0)
			break;
		if (r != ETIMEDOUT)
			FAIL("wg_wait_until returned %d", r);
	}
	if (atomic_load(&mx.finished) != mx.nworkers)
		FAIL("wg wait returned 0 with %d of %d workers finished", atomic_load(&mx.finished),
		     mx.nworkers);
	weft_wg_done(&mx.all);
}

/* Takes items with a plain cond wait until the round is closed and empty. */
static void mx_consumer(void *arg)
{
	(void)arg;
	weft_mutex_lock(&mx.mu);
	for (;;) {
		while (mx.qlen == 0 && !mx.closed)
			weft_cond_wait(&mx.cond, &mx.mu);
		if (mx.qlen == 0)
			break;
		mx_take(MX_MAX_G + MX_WAITERS + 2);
	}
	weft_mutex_unlock(&mx.mu);
	weft_wg_done(&mx.all);
}

static void mx_round(uint32_t seed)
{
	uint32_t s = seed | 1;
	struct mx_arg wa[MX_MAX_G + 1], va[MX_WAITERS + 1];
	pthread_t wth, vth;
	int ngo = mx.nworkers - 1;

	mx.once = (weft_once)WEFT_ONCE_INIT;
	atomic_store(&mx.once_runs, 0);
	atomic_store(&mx.once_finished, 0);
	mx.qhead = mx.qlen = mx.next_item = 0;
	mx.closed = false;
	memset((void *)mx.taken, 0, sizeof mx.taken);
	atomic_store(&mx.finished, 0);

	/* Every wait on work from the last round has returned (all joined). */
	weft_wg_add(&mx.work, mx.nworkers);
	weft_wg_add(&mx.all, mx.nworkers + MX_WAITERS + 2);
	GO(mx_consumer, NULL);
	for (int i = 0; i <= MX_WAITERS; i++) {
		va[i] = (struct mx_arg){MX_MAX_G + 1 + i, test_rand32(&s)};
		if (i == MX_WAITERS)
			test_start_thread(&vth, mx_wg_waiter, &va[i]);
		else
			GO(mx_wg_waiter, &va[i]);
	}
	for (int i = 0; i <= ngo; i++) {
		wa[i] = (struct mx_arg){i, test_rand32(&s)};
		if (i == ngo)
			test_start_thread(&wth, mx_worker, &wa[i]);
		else
			GO(mx_worker, &wa[i]);
	}
	/* The main goroutine waits too, with a far deadline. */
	wg_wait_bounded(&mx.work, "RWMutex/Cond/Once workers");
	ASSERT_EQ(atomic_load(&mx.finished), mx.nworkers);
	weft_mutex_lock(&mx.mu);
	mx.closed = true;
	weft_cond_broadcast(&mx.cond);
	weft_mutex_unlock(&mx.mu);
	wg_wait_bounded(&mx.all, "WaitGroup waiters and the consumer");
	test_join_thread(wth);
	test_join_thread(vth);

	ASSERT_EQ(atomic_load(&mx.once_runs), 1);
	ASSERT_EQ(mx.a, atomic_load(&mx.writes));
	ASSERT_EQ(mx.b, mx.a);
	ASSERT_EQ(mx.qlen, 0);
	for (int i = 0; i < MX_ITEMS; i++)
		if (atomic_load(&mx.taken[i]) != (i < mx.next_item))
			FAIL("seed %u: item %d taken %d times (%d produced)", seed, i,
			     atomic_load(&mx.taken[i]), mx.next_item);
}

/*
 * Rounds of 8 goroutines and a pthread (6 under TSan) making 400 random
 * steps each (150 quick): read-locks, write-locks and their try forms on one
 * RWMutex, and producing and consuming items through a queue under a Mutex
 * and Cond (consumers wait with deadlines 0 to 100 us away; a consumer
 * goroutine waits plainly); each begins with a Once made fresh for the round
 * that all of them, and the waiters below, race for. A WaitGroup reused round
 * after round counts the workers; 3 goroutines and a pthread wait on it with
 * wait_until and deadlines 0 to 100 us away, again and again, and the main
 * goroutine with a far one. For 1.5 s (0.5 quick). Checks: no reader is inside
 * with a writer nor sees half a write, no two writers are inside, no write
 * is lost; the Once runs once and every caller returns after it finished;
 * each item is taken once, and all are; a WaitGroup wait returns 0 only
 * when all the workers are done; everything ends. Guards: readers let in
 * while a writer waits or works, a lost write, a Once caller returning
 * early, a cond waiter back without the mutex (an item taken twice) or
 * left queued after its deadline, a WaitGroup waiter woken before the zero
 * or lost when its deadline races the zero.
 */
TEST(rwmutex_once_cond_wg_churn)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct baseline b = baseline_take();
	memset(&mx, 0, sizeof mx);
	mx.nworkers = (TEST_TSAN ? 6 : MX_MAX_G) + 1;
	mx.iters = TEST_SIZE(400, 150);
	long rounds = run_rounds(mx_round, 7, TEST_SIZE(1500, 500));
	printf("    %ld rounds, %ld writes\n", rounds, atomic_load(&mx.writes));
	baseline_expect(&b);
}

/* ---------------------------------------------------------------- mutex hand-offs against newcomers */

/*
 * A weft_mutex whose lock sets the locked bit blind: a newcomer that arrives
 * while a starving unlock hands the mutex to its front waiter holds the bit
 * for a moment before it sees the mode and gives it back, and the waiter must
 * not take the mutex while it does. Holders keep the lock up to 1.5 ms (so
 * waiters pass the 1 ms mark and the mutex starves), while a stream of fresh
 * goroutines and two pthreads in a tight loop keep arriving. Invariants: one
 * holder at a time, no update lost, nothing hangs, no "inconsistent mutex
 * state"; the mutex must have been seen starving (else the hand-off was not
 * exercised). Random holds and pauses from a seed per worker.
 */
enum { MH_HOLDERS = 4, MH_THREADS = 2, MH_STARVING = 4 /* mutex.c's STARVING bit */ };

static struct mhand {
	weft_mutex mu;
	atomic_int inside;
	long count;              /* under mu */
	atomic_long locks;       /* completed lock/unlock pairs */
	atomic_long starving_seen;
	atomic_int stop;
	weft_wg wg;
} mh;

static void mh_critical(int64_t hold_ns)
{
	weft_mutex_lock(&mh.mu);
	if (atomic_fetch_add(&mh.inside, 1) != 0)
		FAIL("two holders of the mutex at once");
	if (hold_ns)
		test_spin_ns(hold_ns);
	mh.count++;
	atomic_fetch_sub(&mh.inside, 1);
	weft_mutex_unlock(&mh.mu);
	atomic_fetch_add(&mh.locks, 1);
}

static void mh_holder(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg;
	while (!atomic_load(&mh.stop)) {
		uint32_t r = test_rand32(&s) % 8;
		mh_critical(r == 0 ? 1500000 : r < 3 ? (int64_t)(test_rand32(&s) % 200000) : 0);
		if (test_rand32(&s) % 4 == 0)
			pause_some(&s, 100);
	}
	weft_wg_done(&mh.wg);
}

/* A pthread: back-to-back locks, each a fresh blind set. */
static void mh_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&mh.stop))
		mh_critical(0);
}

static void mh_once(void *arg)
{
	(void)arg;
	mh_critical(0);
	weft_wg_done(&mh.wg);
}

/* Newcomers: goroutines that lock once, a few at a time. */
static void mh_spawner(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg;
	while (!atomic_load(&mh.stop)) {
		int n = 1 + (int)(test_rand32(&s) % 4);
		weft_wg_add(&mh.wg, n);
		for (int i = 0; i < n; i++)
			GO(mh_once, NULL);
		pause_some(&s, 50);
	}
	weft_wg_done(&mh.wg);
}

/* Samples the mode: the hand-off path only runs while the mutex starves. */
static void mh_watcher(void *arg)
{
	(void)arg;
	while (!atomic_load(&mh.stop)) {
		if (__atomic_load_n(&mh.mu.state_, __ATOMIC_RELAXED) & MH_STARVING)
			atomic_fetch_add(&mh.starving_seen, 1);
		weft_sleep(100 * WEFT_MICROSECOND);
	}
	weft_wg_done(&mh.wg);
}

TEST(mutex_handoff_vs_newcomers)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct baseline b = baseline_take();
	memset(&mh, 0, sizeof mh);
	mh.mu = (weft_mutex)WEFT_MUTEX_INIT;
	pthread_t th[MH_THREADS];
	weft_wg_add(&mh.wg, MH_HOLDERS + 2);
	for (int i = 0; i < MH_HOLDERS; i++)
		GO(mh_holder, (void *)(uintptr_t)(0x9e3779b9u * (uint32_t)(i + 1)));
	GO(mh_spawner, (void *)(uintptr_t)0x2545f491u);
	GO(mh_watcher, NULL);
	for (int i = 0; i < MH_THREADS; i++)
		test_start_thread(&th[i], mh_thread, NULL);
	weft_sleep(TEST_SIZE(1500, 600) * TEST_MS);
	atomic_store(&mh.stop, 1);
	wg_wait_bounded(&mh.wg, "mutex hand-off run");
	for (int i = 0; i < MH_THREADS; i++)
		test_join_thread(th[i]);
	printf("    %ld locks, starving in %ld samples\n", atomic_load(&mh.locks),
	       atomic_load(&mh.starving_seen));
	weft_mutex_lock(&mh.mu);
	ASSERT_EQ(mh.count, atomic_load(&mh.locks));
	weft_mutex_unlock(&mh.mu);
	ASSERT_GT(atomic_load(&mh.starving_seen), 0);
	baseline_expect(&b);
}

/* ---------------------------------------------------------------- context trees */

enum {
	T_NODES = 40,
	T_DEPTH = 6,      /* below the root: 7 levels */
	T_CANCELLERS = 4, /* 3 goroutines and a pthread: canceller k's causes end in k */
	T_WAITERS_G = 6,  /* plus a pthread */
	T_CHURNERS = 2,
	ROOT_KIND = 6,     /* the cause the main goroutine cancels the root with */
	DEADLINE_KIND = 7, /* the cause of a deadline node's own deadline */
	CAUSE_BASE = 1000,
};

/* Node kinds. */
enum { N_CANCEL, N_DEADLINE_CAUSE, N_DEADLINE, N_VALUE };

/* Ways to wait: the first three on the done channel, the last two on a
 * hook on the cancellation source. */
enum { TW_DONE, TW_RECV_CTX, TW_SELECT_CTX, TW_CTX_WAIT, TW_SLEEP_CTX, TW_KINDS };

static const char *const tw_names[TW_KINDS] = {
	"recv(done)", "chan_recv_ctx", "select_ctx", "ctx_wait", "sleep_ctx",
};

static struct tree {
	weft_ctx *top;          /* a value node over the background, above the root */
	weft_ctx *ctx[T_NODES]; /* 0: the root */
	int parent[T_NODES];    /* -1 for the root */
	int depth[T_NODES];
	int kind[T_NODES];
	int64_t deadline[T_NODES];       /* its own deadline, or INT64_MAX */
	void *value[T_NODES];            /* what weft_ctx_value(ctx, &tree) must give */
	atomic_uint attempted[T_NODES];  /* bit k: canceller k cancels it (set before) */
	atomic_int first_cause[T_NODES]; /* the first cause a waiter saw */
	weft_chan *never_r, *never_s;    /* only received from / only sent to */
	int cancels;                     /* per canceller per round */
	int churns;                      /* per churner per round */
	atomic_int stop;
	atomic_long waits[TW_KINDS];
	atomic_long live_waits; /* begun on a node not yet cancelled */
	atomic_long born_cancelled;
	weft_wg busy; /* cancellers and churners */
	weft_wg waiters;
} tr;

struct tr_arg {
	int id;
	uint32_t seed;
	bool thread;
};

static int cause_of(int node, int kind)
{
	return CAUSE_BASE + node * 8 + kind;
}

/* Whether cause c with error e is a cancellation of node a itself: a
 * canceller's (that did try it), the root's, or a's own deadline (which has
 * passed). */
static bool cause_from(int a, int c, int e)
{
	bool past = weft_now() >= tr.deadline[a];
	if (c == ETIMEDOUT)
		return tr.kind[a] == N_DEADLINE && e == ETIMEDOUT && past;
	if (c < CAUSE_BASE || (c - CAUSE_BASE) / 8 != a)
		return false;
	int k = (c - CAUSE_BASE) % 8;
	if (k == DEADLINE_KIND)
		return tr.kind[a] == N_DEADLINE_CAUSE && e == ETIMEDOUT && past;
	if (k == ROOT_KIND)
		return a == 0 && e == ECANCELED;
	return k < T_CANCELLERS && (atomic_load(&tr.attempted[a]) >> k & 1) && e == ECANCELED;
}

/* Whether node n's error e and cause c come from a cancellation of n or of
 * one of its ancestors. */
static bool cause_explained(int n, int c, int e)
{
	for (int a = n; a >= 0; a = tr.parent[a])
		if (cause_from(a, c, e))
			return true;
	return false;
}

/* The nearest cancellable node at or above n. */
static int source_of(int n)
{
	while (tr.kind[n] == N_VALUE)
		n = tr.parent[n];
	return n;
}

static void tr_build(uint32_t *s)
{
	ASSERT_EQ(weft_ctx_with_value(weft_ctx_background(), &tr, &tr.top, &tr.top), 0);
	ASSERT_EQ(weft_ctx_with_cancel(tr.top, &tr.ctx[0]), 0);
	tr.parent[0] = -1;
	tr.depth[0] = 0;
	tr.kind[0] = N_CANCEL;
	tr.deadline[0] = INT64_MAX;
	tr.value[0] = &tr.top;
	for (int i = 1; i < T_NODES; i++) {
		int p;
		do
			p = (int)(test_rand32(s) % (uint32_t)i);
		while (tr.depth[p] >= T_DEPTH);
		tr.parent[i] = p;
		tr.depth[i] = tr.depth[p] + 1;
		tr.value[i] = tr.value[p];
		tr.deadline[i] = INT64_MAX;
		uint32_t r = test_rand32(s) % 10;
		int64_t d = weft_now() +
		            (test_rand32(s) % 2
		                     ? (int64_t)(100 + test_rand32(s) % 3000) * WEFT_MICROSECOND
		                     : HOUR);
		weft_ctx **out = &tr.ctx[i];
		if (r < 4) {
			tr.kind[i] = N_CANCEL;
			ASSERT_EQ(weft_ctx_with_cancel(tr.ctx[p], out), 0);
		} else if (r < 6) {
			tr.kind[i] = N_DEADLINE_CAUSE;
			tr.deadline[i] = d;
			ASSERT_EQ(weft_ctx_with_deadline_cause(tr.ctx[p], d,
			                                       cause_of(i, DEADLINE_KIND), out),
			          0);
		} else if (r < 7) {
			tr.kind[i] = N_DEADLINE;
			tr.deadline[i] = d;
			ASSERT_EQ(weft_ctx_with_deadline(tr.ctx[p], d, out), 0);
		} else {
			tr.kind[i] = N_VALUE;
			tr.value[i] = &tr.ctx[i];
			ASSERT_EQ(weft_ctx_with_value(tr.ctx[p], &tr, &tr.ctx[i], out), 0);
		}
		atomic_store(&tr.attempted[i], 0);
		atomic_store(&tr.first_cause[i], 0);
	}
	atomic_store(&tr.attempted[0], 0);
	atomic_store(&tr.first_cause[0], 0);
}

/* Wait on node n's context in one of the ways; returns what the wait says
 * about the context's error. */
static int tr_wait(weft_ctx *ctx, int kind)
{
	int64_t x;
	int chosen = 99, r;
	switch (kind) {
	case TW_DONE: {
		weft_chan *done = weft_ctx_done(ctx);
		ASSERT(done != NULL);
		r = weft_chan_recv(done, NULL);
		if (r != EPIPE)
			FAIL("a receive from a done channel returned %d", r);
		return weft_ctx_err(ctx);
	}
	case TW_RECV_CTX: return weft_chan_recv_ctx(ctx, tr.never_r, &x);
	case TW_SELECT_CTX: {
		weft_case cs[2] = {WEFT_RECV_CASE(tr.never_r, &x), WEFT_SEND_CASE(tr.never_s, &x)};
		r = weft_select_ctx(ctx, cs, 2, &chosen);
		if (chosen != -1)
			FAIL("select_ctx chose case %d, which is never ready (returned %d)", chosen,
			     r);
		return r;
	}
	case TW_CTX_WAIT: return weft_ctx_wait(ctx);
	default: return weft_sleep_ctx(ctx, HOUR);
	}
}

static void tr_waiter(void *arg)
{
	struct tr_arg *a = arg;
	uint32_t s = a->seed | 1;
	while (!atomic_load(&tr.stop)) {
		/* Mostly on a live node: a wait that parks, then races the
		 * cancellations. */
		int n = (int)(test_rand32(&s) % T_NODES), kind = (int)(test_rand32(&s) % TW_KINDS);
		for (int i = 0; i < 3 && weft_ctx_err(tr.ctx[n]); i++)
			n = (int)(test_rand32(&s) % T_NODES);
		weft_ctx *ctx = tr.ctx[n];
		atomic_fetch_add(&tr.live_waits, !weft_ctx_err(ctx));
		int r = tr_wait(ctx, kind);
		int e = weft_ctx_err(ctx), c = weft_ctx_cause(ctx);
		if (r != e || !e)
			FAIL("%s on node %d returned %d, its error is %d", tw_names[kind], n, r, e);
		if (!cause_explained(n, c, e))
			FAIL("node %d (depth %d): error %d, cause %d: no cancellation of it or "
			     "of an ancestor explains that",
			     n, tr.depth[n], e, c);
		int first = 0;
		if (!atomic_compare_exchange_strong(&tr.first_cause[n], &first, c) && first != c)
			FAIL("node %d: cause %d, earlier %d", n, c, first);
		atomic_fetch_add(&tr.waits[kind], 1);
		/* Waits on cancelled nodes return at once: let the others run. */
		weft_yield();
	}
	weft_wg_done(&tr.waiters);
}

static void tr_canceller(void *arg)
{
	struct tr_arg *a = arg;
	uint32_t s = a->seed | 1;
	for (int i = 0; i < tr.cancels; i++) {
		pause_some(&s, 500);
		/* Not the root (the main goroutine's, at the end), and shallow
		 * nodes less often: most of the tree stays live for a while. */
		int n;
		do
			n = 1 + (int)(test_rand32(&s) % (T_NODES - 1));
		while (tr.kind[n] == N_VALUE || (tr.depth[n] == 1 && test_rand32(&s) % 2));
		atomic_fetch_or(&tr.attempted[n], 1u << a->id);
		weft_ctx_cancel_cause(tr.ctx[n], cause_of(n, a->id));
	}
	weft_wg_done(&tr.busy);
}

/* A new child of parent of a random kind: cancellable, a deadline (past,
 * near or far, with or without a cause), or a value. */
static weft_ctx *tr_child(weft_ctx *parent, uint32_t *s)
{
	weft_ctx *c = NULL;
	int64_t d = weft_now() + (int64_t)(test_rand32(s) % 400) * WEFT_MICROSECOND -
	            100 * WEFT_MICROSECOND;
	switch (test_rand32(s) % 4) {
	case 0: ASSERT_EQ(weft_ctx_with_cancel(parent, &c), 0); break;
	case 1: ASSERT_EQ(weft_ctx_with_deadline(parent, d, &c), 0); break;
	case 2: ASSERT_EQ(weft_ctx_with_deadline_cause(parent, d, EIO, &c), 0); break;
	default: ASSERT_EQ(weft_ctx_with_value(parent, &tr, NULL, &c), 0);
	}
	return c;
}

/* Builds small trees (1 to 6 nodes) under random nodes of the main tree and
 * releases them in a random order, while the main tree is being cancelled.
 * A tree built under a node already cancelled is born cancelled, with that
 * node's error and cause, all of it. */
static void tr_churner(void *arg)
{
	struct tr_arg *a = arg;
	uint32_t s = a->seed | 1;
	for (int i = 0; i < tr.churns; i++) {
		int p = (int)(test_rand32(&s) % T_NODES);
		int e0 = weft_ctx_err(tr.ctx[p]), c0 = weft_ctx_cause(tr.ctx[p]);
		weft_ctx *made[6];
		int m = 1 + (int)(test_rand32(&s) % 6);
		for (int j = 0; j < m; j++) {
			int under = (int)(test_rand32(&s) % (uint32_t)(j + 1));
			made[j] = tr_child(under ? made[under - 1] : tr.ctx[p], &s);
			if (e0 && (weft_ctx_err(made[j]) != e0 || weft_ctx_cause(made[j]) != c0))
				FAIL("a child made under node %d (error %d, cause %d) has error "
				     "%d, cause %d",
				     p, e0, c0, weft_ctx_err(made[j]), weft_ctx_cause(made[j]));
			if (test_rand32(&s) % 3 == 0)
				ASSERT(weft_ctx_done(made[j]) != NULL);
		}
		atomic_fetch_add(&tr.born_cancelled, e0 != 0);
		pause_some(&s, 100);
		for (int j = m; j > 0; j--) {
			int k = (int)(test_rand32(&s) % (uint32_t)j);
			weft_ctx *c = made[k];
			made[k] = made[j - 1];
			weft_ctx_release(c);
		}
	}
	weft_wg_done(&tr.busy);
}

/* The root's cancel reaches every node: at once, but for subtrees that a
 * deadline was cancelling at the same moment (their propagation runs on the
 * timer's thread), so poll for a while. */
static void tr_expect_all_cancelled(uint32_t seed)
{
	int64_t deadline = test_now_ns() + 5 * SEC * test_slowdown();
	for (int n = 0; n < T_NODES; n++) {
		while (!weft_ctx_err(tr.ctx[n])) {
			if (test_now_ns() > deadline)
				FAIL("seed %u: node %d (depth %d, kind %d) is live 5 s after the "
				     "root's cancel; its parent %d: error %d",
				     seed, n, tr.depth[n], tr.kind[n], tr.parent[n],
				     n ? weft_ctx_err(tr.ctx[tr.parent[n]]) : 0);
			weft_sleep(WEFT_MILLISECOND);
		}
	}
}

/* After the round: every node is cancelled; a cancellable node has its own
 * cause or that of its nearest cancellable ancestor (with its error), a
 * value node that of its source; causes did not change; values are found. */
static void tr_check(uint32_t seed)
{
	for (int n = 0; n < T_NODES; n++) {
		weft_ctx *ctx = tr.ctx[n];
		int e = weft_ctx_err(ctx), c = weft_ctx_cause(ctx);
		if (!e)
			FAIL("seed %u: node %d is live after the root's cancel", seed, n);
		int first = atomic_load(&tr.first_cause[n]);
		if (first && first != c)
			FAIL("seed %u: node %d: cause %d, a waiter saw %d", seed, n, c, first);
		if (weft_ctx_value(ctx, &tr) != tr.value[n])
			FAIL("seed %u: node %d: the wrong value", seed, n);
		int src = source_of(n);
		if (src != n) {
			ASSERT_EQ(e, weft_ctx_err(tr.ctx[src]));
			ASSERT_EQ(c, weft_ctx_cause(tr.ctx[src]));
			continue;
		}
		int p = n ? source_of(tr.parent[n]) : -1;
		bool from_parent =
			p >= 0 && c == weft_ctx_cause(tr.ctx[p]) && e == weft_ctx_err(tr.ctx[p]);
		if (!from_parent && !cause_from(n, c, e))
			FAIL("seed %u: node %d (kind %d, depth %d): error %d, cause %d; its parent "
			     "%d: error %d, cause %d",
			     seed, n, tr.kind[n], tr.depth[n], e, c, p,
			     p >= 0 ? weft_ctx_err(tr.ctx[p]) : 0,
			     p >= 0 ? weft_ctx_cause(tr.ctx[p]) : 0);
	}
}

static void tr_round(uint32_t seed)
{
	uint32_t s = seed | 1;
	struct tr_arg ca[T_CANCELLERS], wa[T_WAITERS_G + 1], ha[T_CHURNERS];
	pthread_t cth, wth;
	int nwg = TEST_TSAN ? 4 : T_WAITERS_G;

	tr_build(&s);
	atomic_store(&tr.stop, 0);
	weft_wg_add(&tr.waiters, nwg + 1);
	weft_wg_add(&tr.busy, T_CANCELLERS + T_CHURNERS);
	for (int i = 0; i <= nwg; i++) {
		wa[i] = (struct tr_arg){i, test_rand32(&s), i == nwg};
		if (wa[i].thread)
			test_start_thread(&wth, tr_waiter, &wa[i]);
		else
			GO(tr_waiter, &wa[i]);
	}
	for (int i = 0; i < T_CHURNERS; i++) {
		ha[i] = (struct tr_arg){i, test_rand32(&s), false};
		GO(tr_churner, &ha[i]);
	}
	for (int i = 0; i < T_CANCELLERS; i++) {
		ca[i] = (struct tr_arg){i, test_rand32(&s), i == T_CANCELLERS - 1};
		if (ca[i].thread)
			test_start_thread(&cth, tr_canceller, &ca[i]);
		else
			GO(tr_canceller, &ca[i]);
	}
	wg_wait_bounded(&tr.busy, "tree cancellers and churners");
	pause_some(&s, 300);
	/* Every wait now returns: nodes nobody cancelled, at the latest by the
	 * root's cancel. */
	atomic_store(&tr.stop, 1);
	weft_ctx_cancel_cause(tr.ctx[0], cause_of(0, ROOT_KIND));
	tr_expect_all_cancelled(seed);
	wg_wait_bounded(&tr.waiters, "waiters on the tree, after the root's cancel");
	test_join_thread(cth);
	test_join_thread(wth);
	tr_check(seed);

	/* Release in a random order: each node keeps its parent alive. */
	int order[T_NODES];
	for (int i = 0; i < T_NODES; i++)
		order[i] = i;
	for (int i = T_NODES - 1; i > 0; i--) {
		int j = (int)(test_rand32(&s) % (uint32_t)(i + 1)), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int i = 0; i < T_NODES; i++)
		weft_ctx_release(tr.ctx[order[i]]);
	weft_ctx_release(tr.top);
}

/*
 * Rounds on a random tree of 40 contexts under a cancellable root, up to 7
 * levels deep (cancellable nodes, deadlines with and without a cause, 0.1
 * to 3.1 ms or an hour away, and value nodes). 3 goroutines and a pthread
 * each cancel random nodes but the root with causes of their own (10 each,
 * 6 quick) at random moments up to 0.5 ms apart; 2 goroutines build small
 * trees under random nodes and release them in a random order (a tree built
 * under a cancelled node must be born cancelled with its error and cause);
 * 6 goroutines (4 under TSan) and a pthread wait again and again on random
 * nodes, live ones mostly: on the done channel, with a receive or a select
 * with a context, with weft_ctx_wait and with sleep_ctx. At the end the root
 * is cancelled, every node must follow and every waiter return. For 1.5 s
 * (0.5 quick).
 * Checks: a wait returns the node's error; the node's cause comes from a
 * cancellation of it or of an ancestor (a canceller that did cancel it, a
 * deadline that has passed, the root) with the matching error, and never
 * changes; after the round every node is cancelled, each cancellable node
 * with its own cause or its nearest cancellable ancestor's, each value node
 * with its source's, values are still found; every context is freed.
 * Guards: a cancellation that does not reach a subtree, or reaches it with
 * the wrong cause; a child born live under a cancelled parent; a release
 * racing a cancellation (use after free under ASan, a leak in the count).
 */
TEST(context_tree_churn)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct baseline b = baseline_take();
	memset(&tr, 0, sizeof tr);
	tr.cancels = TEST_SIZE(10, 6);
	tr.churns = TEST_SIZE(40, 15);
	ASSERT_EQ(weft_chan_make(&tr.never_r, sizeof(int64_t), 0), 0);
	ASSERT_EQ(weft_chan_make(&tr.never_s, sizeof(int64_t), 0), 0);
	long rounds = run_rounds(tr_round, 11, TEST_SIZE(1500, 500));
	printf("    %ld rounds, %ld trees born cancelled, %ld waits begun live; waits by kind:",
	       rounds, atomic_load(&tr.born_cancelled), atomic_load(&tr.live_waits));
	for (int k = 0; k < TW_KINDS; k++)
		printf(" %ld", atomic_load(&tr.waits[k]));
	printf("\n");
	weft_chan_release(tr.never_r);
	weft_chan_release(tr.never_s);
	baseline_expect(&b);
}
