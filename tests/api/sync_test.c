/* SPDX-License-Identifier: MIT */
/*
 * sync_test.c - weft_wg (WaitGroup) and weft_mutex: many waiters, reuse,
 * mutual exclusion under contention, trylock, fairness (starvation mode),
 * parking instead of spinning, and goroutines and foreign pthreads mixing on
 * one mutex and one WaitGroup.
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- WaitGroup */

struct waiters {
	weft_wg wg;       /* what everybody waits on */
	weft_wg done;     /* the waiters, joined */
	atomic_int started;
	atomic_int released;
};

static void wg_waiter(void *arg)
{
	struct waiters *w = arg;
	atomic_fetch_add(&w->started, 1);
	weft_wg_wait(&w->wg);
	atomic_fetch_add(&w->released, 1);
	weft_wg_done(&w->done);
}

static void *wg_waiter_thread(void *arg)
{
	wg_waiter(arg);
	return NULL;
}

/*
 * 200 goroutines and 3 pthreads wait on one WaitGroup; none is released
 * while the counter is 1 (checked for 20 ms), all are released by the one
 * Done. Guards: wait returning early, a Done that wakes only one waiter, a
 * foreign waiter on a futex never woken.
 */
TEST(wg_many_waiters)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 200, T = 3 };
	static struct waiters w;
	w = (struct waiters){ 0 };
	weft_wg_add(&w.wg, 1);
	weft_wg_add(&w.done, G + T);
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, wg_waiter_thread, &w), 0);
	for (int i = 0; i < G; i++)
		GO(wg_waiter, &w);
	while (atomic_load(&w.started) < G + T)
		weft_sleep(TEST_MS);
	weft_sleep(20 * TEST_MS);
	ASSERT_EQ(atomic_load(&w.released), 0);
	weft_wg_done(&w.wg);
	weft_wg_wait(&w.done);
	ASSERT_EQ(atomic_load(&w.released), G + T);
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
}

struct round {
	weft_wg *wg;
	atomic_int *hits;
};

static void round_worker(void *arg)
{
	struct round *r = arg;
	atomic_fetch_add(r->hits, 1);
	weft_wg_done(r->wg);
}

/*
 * One WaitGroup reused for 200 rounds of add(10), 10 Dones, wait: each wait
 * returns only after all 10 of its round. Guards: state left over from the
 * previous round (a stale waiter count, a wake-up generation not reset).
 */
TEST(wg_reuse)
{
	weft_wg wg = WEFT_WG_INIT;
	atomic_int hits = 0;
	struct round r = { &wg, &hits };
	for (int round = 1; round <= 200; round++) {
		weft_wg_add(&wg, 10);
		for (int i = 0; i < 10; i++)
			GO(round_worker, &r);
		weft_wg_wait(&wg);
		ASSERT_EQ(atomic_load(&hits), round * 10);
	}
}

static void wg_add_neg5(void *arg)
{
	weft_sleep(5 * TEST_MS);
	weft_wg_add(arg, -5);
}

/*
 * Wait on a zero counter returns at once; a counter brought to zero by a
 * negative add (not only by done) releases waiters. Guards: wake-up only in
 * weft_wg_done.
 */
TEST(wg_zero_and_negative_add)
{
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_wait(&wg);
	weft_wg_add(&wg, 3);
	weft_wg_add(&wg, -3);
	weft_wg_wait(&wg);
	weft_wg_add(&wg, 5);
	GO(wg_add_neg5, &wg);
	weft_wg_wait(&wg);
}

struct wg_go_task {
	weft_wg *wg;
	atomic_int *finished; /* tasks whose fn has returned */
	uint64_t parent;      /* the spawner's goroutine id */
	uint64_t self;        /* fn's goroutine id, set by fn */
	int slow;             /* sleep first: wait must outlast it */
};

static void wg_go_fn(void *arg)
{
	struct wg_go_task *t = arg;
	t->self = weft_self_id();
	if (t->slow)
		weft_sleep(t->slow * TEST_MS);
	atomic_fetch_add(t->finished, 1);
}

/*
 * weft_wg_go adds one per task and each task's goroutine is done when its
 * fn returns: a wait returns after every fn has returned, slow ones
 * included, and not before; each fn ran in a goroutine of its own. Guards:
 * no add (the wait returns at once), the done before fn, fn run inline.
 */
TEST(wg_go_adds_and_dones)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { N = 300 };
	static struct wg_go_task t[N];
	weft_wg wg = WEFT_WG_INIT;
	atomic_int finished = 0;
	uint64_t me = weft_self_id();
	for (int i = 0; i < N; i++) {
		t[i] = (struct wg_go_task){ &wg, &finished, me, 0, i % 50 == 0 ? 20 : 0 };
		ASSERT_EQ(weft_wg_go(&wg, wg_go_fn, &t[i]), 0);
	}
	weft_wg_wait(&wg);
	ASSERT_EQ(atomic_load(&finished), N);
	for (int i = 0; i < N; i++) {
		ASSERT_NE(t[i].self, 0);
		ASSERT_NE(t[i].self, me);
		for (int j = 0; j < i; j++)
			ASSERT_NE(t[i].self, t[j].self);
	}
	/* Reusable, as any WaitGroup. */
	ASSERT_EQ(weft_wg_go(&wg, wg_go_fn, &t[0]), 0);
	weft_wg_wait(&wg);
	ASSERT_EQ(atomic_load(&finished), N + 1);
}

static void wg_go_dump(void *arg)
{
	char **buf = arg;
	size_t len;
	FILE *f = open_memstream(buf, &len);
	weft_dump(f);
	fclose(f);
}

/*
 * A weft_wg_go goroutine reports its caller's file and line in dumps, as
 * weft_go's do; a NULL fn is EINVAL and leaves the counter as it was.
 */
TEST(wg_go_site_and_einval)
{
	weft_wg wg = WEFT_WG_INIT;
	char *dump = NULL;
	int line = __LINE__ + 1;
	ASSERT_EQ(weft_wg_go(&wg, wg_go_dump, &dump), 0);
	weft_wg_wait(&wg);
	char want[96];
	snprintf(want, sizeof want, "created at %s:%d", __FILE__, line);
	ASSERT_CONTAINS(dump, want);
	free(dump);
	ASSERT_EQ(weft_wg_go(&wg, NULL, NULL), EINVAL);
	ASSERT_EQ(weft_wg_wait_until(&wg, weft_now()), 0);
}

/* ---------------------------------------------------------------- Mutex */

struct counter {
	weft_mutex mu;
	long value;         /* protected by mu, deliberately not atomic */
	atomic_int inside;  /* goroutines between lock and unlock */
	atomic_long overlaps;
	int iters;
	weft_wg wg;
};

static void locked_increments(struct counter *c)
{
	for (int i = 0; i < c->iters; i++) {
		weft_mutex_lock(&c->mu);
		if (atomic_fetch_add(&c->inside, 1) != 0)
			atomic_fetch_add(&c->overlaps, 1);
		long v = c->value;
		if (i % 64 == 0)
			weft_yield(); /* hold the lock across a switch */
		c->value = v + 1;
		atomic_fetch_sub(&c->inside, 1);
		weft_mutex_unlock(&c->mu);
	}
}

static void mutex_worker(void *arg)
{
	struct counter *c = arg;
	locked_increments(c);
	weft_wg_done(&c->wg);
}

static void *mutex_thread(void *arg)
{
	mutex_worker(arg);
	return NULL;
}

/*
 * 64 goroutines at 2 Ps each add 1 to a plain counter 2,000 times under one
 * mutex, sometimes yielding while holding it: the total is exact and no two
 * are ever inside at once. Guards: broken mutual exclusion (lost updates,
 * overlaps), a lost wake-up (hang).
 */
TEST(mutex_counter_contended)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 64 };
	static struct counter c;
	c = (struct counter){ 0 };
	c.iters = TEST_SIZE(2000, 500);
	weft_wg_add(&c.wg, G);
	for (int i = 0; i < G; i++)
		GO(mutex_worker, &c);
	weft_wg_wait(&c.wg);
	ASSERT_EQ(atomic_load(&c.overlaps), 0);
	ASSERT_EQ(c.value, (long)G * c.iters);
}

/*
 * 8 goroutines and 3 pthreads share one mutex and one WaitGroup; the
 * pthreads also wait on a second WaitGroup that only goroutines complete.
 * Guards: a foreign thread's lock that ignores the goroutine waiters (or the
 * reverse), a foreign thread parked on the mutex never woken by a goroutine's
 * unlock.
 */
TEST(mutex_and_wg_shared_with_pthreads)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 8, T = 3 };
	static struct counter c;
	c = (struct counter){ 0 };
	c.iters = TEST_SIZE(5000, 1000);
	weft_wg_add(&c.wg, G + T);
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, mutex_thread, &c), 0);
	for (int i = 0; i < G; i++)
		GO(mutex_worker, &c);
	weft_wg_wait(&c.wg);
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(atomic_load(&c.overlaps), 0);
	ASSERT_EQ(c.value, (long)(G + T) * c.iters);
}

/* The same counter driven only from pthreads: the foreign path alone. */
TEST_THREAD(mutex_foreign_threads_only)
{
	enum { T = 4 };
	static struct counter c;
	c = (struct counter){ 0 };
	c.iters = TEST_SIZE(5000, 1000);
	weft_wg_add(&c.wg, T);
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, mutex_thread, &c), 0);
	weft_wg_wait(&c.wg);
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(atomic_load(&c.overlaps), 0);
	ASSERT_EQ(c.value, (long)T * c.iters);
}

struct try_ctx {
	weft_mutex *mu;
	int result;
	weft_wg wg;
};

static void try_from_other(void *arg)
{
	struct try_ctx *t = arg;
	t->result = weft_mutex_trylock(t->mu);
	weft_wg_done(&t->wg);
}

static void unlock_from_other(void *arg)
{
	struct try_ctx *t = arg;
	weft_mutex_unlock(t->mu);
	weft_wg_done(&t->wg);
}

/*
 * trylock: 0 on a free mutex, EBUSY on a held one (also from another
 * goroutine), 0 again after unlock; a mutex locked by one goroutine may be
 * unlocked by another. Guards: a recursive trylock, a trylock that ignores
 * the holder, an owner check that Go does not have.
 */
TEST(mutex_trylock)
{
	weft_mutex mu = WEFT_MUTEX_INIT;
	ASSERT_EQ(weft_mutex_trylock(&mu), 0);
	ASSERT_EQ(weft_mutex_trylock(&mu), EBUSY);
	struct try_ctx t = { &mu, -1, WEFT_WG_INIT };
	weft_wg_add(&t.wg, 1);
	GO(try_from_other, &t);
	weft_wg_wait(&t.wg);
	ASSERT_EQ(t.result, EBUSY);
	weft_mutex_unlock(&mu);
	ASSERT_EQ(weft_mutex_trylock(&mu), 0);
	weft_wg_add(&t.wg, 1);
	GO(unlock_from_other, &t);
	weft_wg_wait(&t.wg);
	ASSERT_EQ(weft_mutex_trylock(&mu), 0);
	weft_mutex_unlock(&mu);
	weft_mutex_lock(&mu);
	weft_mutex_unlock(&mu);
}

struct starve {
	weft_mutex mu;
	atomic_int stop;
	int64_t waited_ns;
	weft_wg wg;
};

static void hammer(void *arg)
{
	struct starve *s = arg;
	while (!atomic_load(&s->stop)) {
		weft_mutex_lock(&s->mu);
		test_spin_ns(20000);
		weft_mutex_unlock(&s->mu);
	}
	weft_wg_done(&s->wg);
}

static void late_locker(void *arg)
{
	struct starve *s = arg;
	weft_sleep(20 * TEST_MS);
	int64_t t0 = test_now_ns();
	weft_mutex_lock(&s->mu);
	s->waited_ns = test_now_ns() - t0;
	weft_mutex_unlock(&s->mu);
	atomic_store(&s->stop, 1);
	weft_wg_done(&s->wg);
}

/*
 * Starvation mode: two goroutines at 2 Ps lock and unlock in a tight loop
 * (holding 20 us each time); a third that asks for the lock gets it within
 * 50 ms (Go hands the lock to a waiter that has waited over 1 ms; 50 ms
 * leaves ample room). Guards: a normal-mode-only mutex where the woken
 * waiter always loses to the running hammers (it waits until the 2 s cut-off
 * at which the hammers stop by themselves). Best of 3 runs (TEST_BEST_OF).
 */
static int64_t starvation_run(void)
{
	static struct starve s;
	s = (struct starve){ 0 };
	weft_wg_add(&s.wg, 3);
	GO(hammer, &s);
	GO(hammer, &s);
	GO(late_locker, &s);
	/* Cut-off: stop the hammers after 2 s whatever happens. */
	for (int i = 0; i < 200 && !atomic_load(&s.stop); i++)
		weft_sleep(10 * TEST_MS);
	atomic_store(&s.stop, 1);
	weft_wg_wait(&s.wg);
	printf("    late locker waited %.2f ms\n", (double)s.waited_ns / 1e6);
	return s.waited_ns;
}

TEST(mutex_no_starvation)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t waited = TEST_BEST_OF(3, 50 * TEST_MS * test_slowdown(), starvation_run());
	ASSERT_DURATION(waited, 0, 50);
}

struct starve_once {
	weft_mutex mu;
	atomic_int held;
	int64_t waited_ns;
	weft_wg wg;
};

/* Holds the mutex 5 ms, lets it go and at once takes it again (the woken
 * waiter has not run yet at 1 P: a newcomer barging in), 5 ms more. */
static void barging_holder(void *arg)
{
	struct starve_once *s = arg;
	weft_mutex_lock(&s->mu);
	atomic_store(&s->held, 1);
	weft_sleep(5 * TEST_MS);
	weft_mutex_unlock(&s->mu);
	weft_mutex_lock(&s->mu);
	weft_sleep(5 * TEST_MS);
	weft_mutex_unlock(&s->mu);
	weft_wg_done(&s->wg);
}

static void starved_waiter(void *arg)
{
	struct starve_once *s = arg;
	while (!atomic_load(&s->held))
		weft_yield();
	int64_t t0 = test_now_ns();
	weft_mutex_lock(&s->mu);
	s->waited_ns = test_now_ns() - t0;
	weft_mutex_unlock(&s->mu);
	weft_wg_done(&s->wg);
}

/*
 * Leaving starvation mode: at 1 P, a waiter that waited over 1 ms is woken
 * but loses the mutex to its holder barging back in, so it turns the mutex
 * to starvation mode; the holder's next unlock hands it over, and the
 * waiter, the last one, takes it and ends starvation mode. After its unlock
 * the mutex is free and in normal mode: trylock takes it. Guards: a last
 * waiter that leaves starvation mode set (a free mutex that trylock then
 * refuses, and whose next locker must queue for a stored hand-off).
 */
TEST(mutex_leaves_starvation_mode)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	static struct starve_once s;
	s = (struct starve_once){0};
	weft_wg_add(&s.wg, 2);
	GO(barging_holder, &s);
	GO(starved_waiter, &s);
	weft_wg_wait(&s.wg);
	printf("    the waiter waited %.1f ms\n", (double)s.waited_ns / 1e6);
	ASSERT_GE(s.waited_ns, 2 * TEST_MS); /* it did starve: over 1 ms */
	ASSERT_EQ(weft_mutex_trylock(&s.mu), 0);
	weft_mutex_unlock(&s.mu);
}

struct starve_try {
	weft_mutex mu;
	atomic_int inside;
	atomic_int stop;
	atomic_long tries_won;
	atomic_int bad;
	weft_wg wg;
};

static void starve_hold(struct starve_try *s)
{
	if (atomic_fetch_add(&s->inside, 1) != 0)
		atomic_store(&s->bad, 1);
	test_spin_ns(1500000); /* over 1 ms: the waiters starve */
	atomic_fetch_sub(&s->inside, 1);
}

static void starving_locker(void *arg)
{
	struct starve_try *s = arg;
	while (!atomic_load(&s->stop)) {
		weft_mutex_lock(&s->mu);
		starve_hold(s);
		weft_mutex_unlock(&s->mu);
	}
	weft_wg_done(&s->wg);
}

static void try_locker(void *arg)
{
	struct starve_try *s = arg;
	while (!atomic_load(&s->stop)) {
		if (weft_mutex_trylock(&s->mu) == 0) {
			if (atomic_fetch_add(&s->inside, 1) != 0)
				atomic_store(&s->bad, 1);
			atomic_fetch_add(&s->tries_won, 1);
			atomic_fetch_sub(&s->inside, 1);
			weft_mutex_unlock(&s->mu);
		}
	}
}

/*
 * TryLock against a mutex in starvation mode: three goroutines hold it over
 * 1 ms each time, so their waits turn it to starvation mode and each unlock
 * hands it to the front waiter; two pthreads hammer weft_mutex_trylock. In
 * starvation mode the mutex belongs to the front waiter even while its
 * locked bit is clear, so trylock must fail there (as Go's TryLock). Checked:
 * never two holders, and everyone finishes (300 ms) with the mutex free.
 * Guards: a trylock that looks only at the locked bit and takes a mutex
 * being handed off (its owner and the woken waiter then both hold it, or the
 * waiter count and the hand-offs drift apart and a locker hangs).
 */
TEST(mutex_trylock_in_starvation_mode)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct starve_try s;
	s = (struct starve_try){0};
	weft_wg_add(&s.wg, 3);
	for (int i = 0; i < 3; i++)
		GO(starving_locker, &s);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		test_start_thread(&th[i], try_locker, &s);
	weft_sleep(300 * TEST_MS);
	atomic_store(&s.stop, 1);
	weft_wg_wait(&s.wg);
	for (int i = 0; i < 2; i++)
		test_join_thread(th[i]);
	printf("    trylock won %ld times\n", atomic_load(&s.tries_won));
	ASSERT_EQ(atomic_load(&s.bad), 0);
	ASSERT_EQ(weft_mutex_trylock(&s.mu), 0);
	weft_mutex_unlock(&s.mu);
}

struct park_ctx {
	weft_mutex mu;
	atomic_int holder_has_it;
	atomic_int stop;
	atomic_long ticks;
	weft_wg wg;
};

static void holder(void *arg)
{
	struct park_ctx *p = arg;
	weft_mutex_lock(&p->mu);
	atomic_store(&p->holder_has_it, 1);
	weft_sleep(100 * TEST_MS);
	weft_mutex_unlock(&p->mu);
	weft_wg_done(&p->wg);
}

static void blocked_locker(void *arg)
{
	struct park_ctx *p = arg;
	while (!atomic_load(&p->holder_has_it))
		weft_yield();
	weft_mutex_lock(&p->mu);
	weft_mutex_unlock(&p->mu);
	atomic_store(&p->stop, 1);
	weft_wg_done(&p->wg);
}

static void ticker(void *arg)
{
	struct park_ctx *p = arg;
	while (!atomic_load(&p->stop)) {
		atomic_fetch_add(&p->ticks, 1);
		weft_sleep(TEST_MS);
	}
	weft_wg_done(&p->wg);
}

/*
 * At 1 P a goroutine waiting for a mutex held 100 ms by a sleeping holder
 * parks: a third goroutine keeps ticking (1 ms sleeps) meanwhile. Guards: a
 * lock that blocks the OS thread (futex wait without giving up the P): the
 * ticker and the holder's own wake-up would be stuck (a tick or two at most,
 * then a hang). The bound is 5, not 100: on a loaded machine (chaos mode,
 * load 4.5 in CI) a 1 ms sleep took 12 ms.
 */
TEST(mutex_waiter_parks)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	static struct park_ctx p;
	p = (struct park_ctx){ 0 };
	weft_wg_add(&p.wg, 3);
	GO(ticker, &p);
	GO(holder, &p);
	GO(blocked_locker, &p);
	weft_wg_wait(&p.wg);
	ASSERT_GE(atomic_load(&p.ticks), 5);
}
