/* SPDX-License-Identifier: MIT */
/*
 * sync2_test.c - the sync primitives beyond Mutex and WaitGroup: RWMutex
 * (exclusion under a random mix of readers and writers, the try forms,
 * neither side starving the other), Once (a stampede of callers), Cond
 * (broadcast, FIFO signal, a producer/consumer queue), the weighted Semaphore
 * (weights, strict FIFO service, giving up, a stress) and the deadline forms
 * (weft_cond_wait_until, weft_sem_acquire_until, weft_wg_wait_until), also
 * racing their wakers. Goroutines and foreign pthreads mix throughout.
 * Timing checks are lower bounds (never back before the deadline) plus
 * generous upper ones; starvation is measured in operations, not time.
 * After use, the waits' bookkeeping must be gone: the primitive's bytes are
 * back to their initial value. The misuse cases (RUnlock/Unlock of an
 * unlocked RWMutex, releasing more than held) are fatal errors and live in
 * fatal_test.c.
 */
#include "test.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

/* Generous bound for what should take milliseconds: 5 s, scaled. */
static int64_t bound_ns(void)
{
	return 5000 * TEST_MS * test_slowdown();
}

/* Wait for wg, failing (rather than hanging until the harness's timeout)
 * when it is not done within the bound: what a lost wake-up looks like. */
static void join(weft_wg *wg, const char *what)
{
	if (weft_wg_wait_until(wg, weft_now() + bound_ns()) != 0)
		FAIL("%s: not finished after %lld ms", what, (long long)(bound_ns() / TEST_MS));
}

/* Run fn(arg) in g goroutines and one pthread, each signalling done once,
 * and join them all (failing as join() does). */
static void run_mixed(weft_fn fn, void *arg, int g, weft_wg *done, const char *what)
{
	weft_wg_add(done, g + 1);
	pthread_t th;
	test_start_thread(&th, fn, arg);
	for (int i = 0; i < g; i++)
		GO(fn, arg);
	join(done, what);
	test_join_thread(th);
}

/* WAIT_FOR and YIELD_UNTIL come from test.h (bounded as bound_ns() is). */

/*
 * Tries at a second waiter queued behind a timed one while it waits: the
 * timed one's timeout is a window all the same, and a main descheduled
 * across it finds the timed one gone (its result ends the waits), a round
 * that shows nothing. try_window_ns(try) is the timeout for a try: 100 ms
 * x slowdown, doubled each time. try_again(in_time, try, who) says whether
 * another try is needed (it prints why), and fails after the third.
 */
static int64_t try_window_ns(int try)
{
	return (int64_t)(100 << try) * TEST_MS * test_slowdown();
}

static bool try_again(bool in_time, int try, const char *who)
{
	if (in_time)
		return false;
	if (try == 2)
		FAIL("3 tries: the %s waiter timed out before the second queued", who);
	printf("    try %d: the %s waiter timed out before the second queued\n", try + 1, who);
	return true;
}

/* How many goroutines are parked with wait reason `reason` (from a dump).
 * A goroutine shows as parked only once it is in its wait queue. */
static int parked(const char *reason)
{
	char *buf = test_dump();
	char pat[64];
	snprintf(pat, sizeof pat, "[%s", reason);
	int n = 0;
	for (const char *p = buf; (p = strstr(p, pat)) != NULL; p += strlen(pat))
		n++;
	free(buf);
	return n;
}

/* *p read under mu. */
static int locked_get(weft_mutex *mu, const int *p)
{
	weft_mutex_lock(mu);
	int v = *p;
	weft_mutex_unlock(mu);
	return v;
}

/* Every byte zero: the value a primitive must be back to once nobody uses it
 * (a stale waiter count or queue link shows here, not in behaviour). */
static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* ---------------------------------------------------------------- RWMutex */

struct rw_record {
	uint64_t a, b, c, d; /* a writer derives all four from one value */
};

struct rw_stress {
	weft_rwmutex rw;
	struct rw_record rec;  /* under rw; plain, so TSan checks the locking too */
	atomic_int readers_in; /* between rlock and runlock */
	atomic_int writers_in; /* between lock and unlock */
	atomic_int max_readers;
	atomic_long overlaps; /* a writer inside with anybody else */
	atomic_long torn;     /* a reader saw a half-written record */
	atomic_long writes;
	atomic_uint ids;
	int ops;
	weft_wg done;
};

static void rw_write(struct rw_stress *s, uint32_t r)
{
	if (atomic_fetch_add(&s->writers_in, 1) != 0 || atomic_load(&s->readers_in) != 0)
		atomic_fetch_add(&s->overlaps, 1);
	uint64_t v = s->rec.a + 1;
	s->rec.a = v;
	if (r & 0x100)
		weft_yield(); /* hold the lock across a switch */
	s->rec.b = v * 3;
	s->rec.c = ~v;
	s->rec.d = v ^ 0x5a5a5a5a;
	atomic_fetch_add(&s->writes, 1);
	atomic_fetch_sub(&s->writers_in, 1);
}

static void rw_read(struct rw_stress *s, uint32_t r)
{
	int n = atomic_fetch_add(&s->readers_in, 1) + 1;
	if (atomic_load(&s->writers_in) != 0)
		atomic_fetch_add(&s->overlaps, 1);
	int m = atomic_load(&s->max_readers);
	while (n > m && !atomic_compare_exchange_weak(&s->max_readers, &m, n))
		;
	uint64_t a = s->rec.a;
	if (r & 0x100)
		weft_yield();
	if (s->rec.b != a * 3 || s->rec.c != ~a || s->rec.d != (a ^ 0x5a5a5a5a))
		atomic_fetch_add(&s->torn, 1);
	atomic_fetch_sub(&s->readers_in, 1);
}

static void rw_worker(void *arg)
{
	struct rw_stress *s = arg;
	uint32_t seed = 2654435761u * (atomic_fetch_add(&s->ids, 1) + 1);
	for (int i = 0; i < s->ops; i++) {
		uint32_t r = test_rand32(&seed);
		switch (r % 8) {
		case 0:
			weft_rwmutex_lock(&s->rw);
			rw_write(s, r);
			weft_rwmutex_unlock(&s->rw);
			break;
		case 1:
			if (weft_rwmutex_trylock(&s->rw) == 0) {
				rw_write(s, r);
				weft_rwmutex_unlock(&s->rw);
			}
			break;
		case 2:
			if (weft_rwmutex_tryrlock(&s->rw) == 0) {
				rw_read(s, r);
				weft_rwmutex_runlock(&s->rw);
			}
			break;
		default:
			weft_rwmutex_rlock(&s->rw);
			rw_read(s, r);
			weft_rwmutex_runlock(&s->rw);
		}
	}
	weft_wg_done(&s->done);
}

/*
 * 16 goroutines and a pthread at 2 Ps each do a random mix (per op) of
 * rlock/runlock, lock/unlock and the try forms, sometimes yielding inside.
 * Atomic counts of readers and writers inside never show a writer with
 * anybody else; readers never see a half-written four-word record; every
 * write is counted in the record (no lost update); readers do share (two or
 * more inside at once); both locks are free afterwards. Guards: broken
 * exclusion either way, a try form that ignores the other side, a lost
 * wake-up (the join fails), an RWMutex that is only a mutex.
 */
TEST(rwmutex_readers_writers_exclusion)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 16 };
	static struct rw_stress s;
	s = (struct rw_stress){0};
	/* The record holds its invariant from the start: a reader that comes
	 * before any writer must find it whole too. (An all-zero record is
	 * not: c must be ~a. Under qemu-aarch64 a reader often goes first.) */
	s.rec = (struct rw_record){.a = 0, .b = 0, .c = ~0ull, .d = 0x5a5a5a5a};
	s.ops = TEST_SIZE(4000, 800);
	run_mixed(rw_worker, &s, G, &s.done, "readers and writers");
	ASSERT_EQ(atomic_load(&s.overlaps), 0);
	ASSERT_EQ(atomic_load(&s.torn), 0);
	ASSERT_GT(atomic_load(&s.writes), 0);
	ASSERT_EQ(s.rec.a, atomic_load(&s.writes));
	ASSERT_GE(atomic_load(&s.max_readers), 2);
	ASSERT_EQ(weft_rwmutex_trylock(&s.rw), 0);
	weft_rwmutex_unlock(&s.rw);
	ASSERT_EQ(weft_rwmutex_tryrlock(&s.rw), 0);
	ASSERT_EQ(weft_rwmutex_tryrlock(&s.rw), 0);
	weft_rwmutex_runlock(&s.rw);
	weft_rwmutex_runlock(&s.rw);
}

/* Writers only, mostly: a lock taken by the fast path (a CAS of the reader
 * count alone) and one taken by the slow path (the writers' mutex first)
 * must still exclude each other. */
struct rw_writers {
	weft_rwmutex rw;
	long count;           /* under rw; plain, read and written across a yield */
	atomic_long entries;  /* write sections entered */
	atomic_int inside;    /* writers between lock and unlock */
	atomic_int readers_in;
	atomic_long overlaps; /* a writer inside with anybody else */
	atomic_uint ids;
	int ops;
	weft_wg done;
};

static void rw_writer_loop(void *arg)
{
	struct rw_writers *s = arg;
	uint32_t seed = 2246822519u * (atomic_fetch_add(&s->ids, 1) + 1);
	for (int i = 0; i < s->ops; i++) {
		uint32_t r = test_rand32(&seed);
		if (r % 4 == 0) {
			/* A reader now and then: the writers that come while
			 * it is in miss the fast path. */
			weft_rwmutex_rlock(&s->rw);
			atomic_fetch_add(&s->readers_in, 1);
			if (atomic_load(&s->inside) != 0)
				atomic_fetch_add(&s->overlaps, 1);
			if (r & 0x100)
				weft_yield();
			atomic_fetch_sub(&s->readers_in, 1);
			weft_rwmutex_runlock(&s->rw);
			continue;
		}
		if (r & 0x200) {
			weft_rwmutex_lock(&s->rw);
		} else if (weft_rwmutex_trylock(&s->rw) != 0) {
			continue;
		}
		if (atomic_fetch_add(&s->inside, 1) != 0 || atomic_load(&s->readers_in) != 0)
			atomic_fetch_add(&s->overlaps, 1);
		long v = s->count;
		if (r & 0x100)
			weft_yield(); /* hold the lock across a switch */
		s->count = v + 1;
		atomic_fetch_add(&s->entries, 1);
		atomic_fetch_sub(&s->inside, 1);
		weft_rwmutex_unlock(&s->rw);
	}
	weft_wg_done(&s->done);
}

/* Writer to writer through the fast path, for ThreadSanitizer: the second
 * writer learns of the first only through a relaxed flag, which orders
 * nothing, so only the lock itself can order their plain writes. */
static weft_rwmutex tsan_rw = WEFT_RWMUTEX_INIT;
static long tsan_x;
static atomic_int tsan_flag;

static void tsan_writer_first(void *arg)
{
	(void)arg;
	weft_rwmutex_lock(&tsan_rw);
	tsan_x = 1;
	weft_rwmutex_unlock(&tsan_rw);
	atomic_store_explicit(&tsan_flag, 1, memory_order_relaxed);
}

static void tsan_writer_second(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&tsan_flag, memory_order_relaxed))
		weft_yield();
	weft_rwmutex_lock(&tsan_rw);
	tsan_x = 2;
	weft_rwmutex_unlock(&tsan_rw);
}

/*
 * Two writers in turn, each taking the free lock by the fast path: under
 * `make race`, no report of the second writer's write against the first's.
 * Guard: a fast-path lock that does not acquire what the last writer's
 * unlock released (ThreadSanitizer then reports a data race here).
 */
TEST(rwmutex_fast_writers_ordered)
{
	weft_wg wg = WEFT_WG_INIT;
	tsan_x = 0;
	atomic_store(&tsan_flag, 0);
	ASSERT_EQ(weft_wg_go(&wg, tsan_writer_second, NULL), 0);
	ASSERT_EQ(weft_wg_go(&wg, tsan_writer_first, NULL), 0);
	weft_wg_wait(&wg);
	ASSERT_EQ(tsan_x, 2);
}

struct fast_then_slow {
	weft_rwmutex rw;
	long x; /* plain, under rw */
	atomic_int fast_in;
	weft_wg done;
};

static void fast_writer_holds(void *arg)
{
	struct fast_then_slow *s = arg;
	weft_rwmutex_lock(&s->rw); /* free: the fast path */
	s->x = 1;
	atomic_store(&s->fast_in, 1);
	weft_sleep(30 * TEST_MS); /* the other writer takes w_ and waits for us */
	s->x = 2;
	weft_rwmutex_unlock(&s->rw);
	weft_wg_done(&s->done);
}

static void slow_writer_follows(void *arg)
{
	struct fast_then_slow *s = arg;
	while (!atomic_load(&s->fast_in))
		weft_sleep(TEST_MS);
	weft_rwmutex_lock(&s->rw); /* a fast writer is in: the slow path */
	s->x++;
	weft_rwmutex_unlock(&s->rw);
	weft_wg_done(&s->done);
}

/*
 * A writer that took the free lock by the fast path, and one that comes
 * while it holds it (the slow path: it takes the writers' mutex first, then
 * waits for the fast one): under `make race`, no report of the slow
 * writer's access against the fast one's. Guard: a slow-path lock whose
 * acquire of what the last writer released happened at the writers' mutex,
 * before the fast writer's unlock (ThreadSanitizer reports a data race).
 */
TEST(rwmutex_slow_writer_after_a_fast_one_ordered)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct fast_then_slow s = {.done = WEFT_WG_INIT};
	weft_wg_add(&s.done, 2);
	GO(fast_writer_holds, &s);
	GO(slow_writer_follows, &s);
	weft_wg_wait(&s.done);
	ASSERT_EQ(s.x, 3);
}

/*
 * 12 goroutines and a pthread at 2 Ps write-lock in a loop (lock or
 * trylock), read-locking one time in 4, holding the lock across a yield
 * half the time. No writer is ever inside with anybody else, no increment
 * of the plain counter is lost, all finish (a slow writer that waits for a
 * fast one must be woken by its unlock), and the lock is free afterwards.
 * Guards: a slow writer that does not wait for a fast one, a fast unlock
 * that does not wake the slow writer, a stray wake-up token that lets a
 * writer past readers it should wait for.
 */
TEST(rwmutex_fast_and_slow_writers)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 12 };
	static struct rw_writers s;
	s = (struct rw_writers){0};
	s.ops = TEST_SIZE(30000, 6000);
	run_mixed(rw_writer_loop, &s, G, &s.done, "writers");
	ASSERT_EQ(atomic_load(&s.overlaps), 0);
	ASSERT_GT(atomic_load(&s.entries), 0);
	ASSERT_EQ(s.count, atomic_load(&s.entries));
	ASSERT_EQ(weft_rwmutex_trylock(&s.rw), 0);
	weft_rwmutex_unlock(&s.rw);
	ASSERT_EQ(weft_rwmutex_tryrlock(&s.rw), 0);
	weft_rwmutex_runlock(&s.rw);
}

struct rw_try {
	weft_rwmutex rw;
	atomic_int seq; /* order of entry */
	int writer_at, reader_at;
	int foreign; /* a pthread's try result */
	weft_wg done;
};

static void pending_writer(void *arg)
{
	struct rw_try *t = arg;
	weft_rwmutex_lock(&t->rw);
	t->writer_at = atomic_fetch_add(&t->seq, 1);
	weft_sleep(5 * TEST_MS); /* the queued reader must stay out meanwhile */
	weft_rwmutex_unlock(&t->rw);
	weft_wg_done(&t->done);
}

static void queued_reader(void *arg)
{
	struct rw_try *t = arg;
	weft_rwmutex_rlock(&t->rw);
	t->reader_at = atomic_fetch_add(&t->seq, 1);
	weft_rwmutex_runlock(&t->rw);
	weft_wg_done(&t->done);
}

static void tryrlock_once(void *arg)
{
	struct rw_try *t = arg;
	t->foreign = weft_rwmutex_tryrlock(&t->rw);
	if (t->foreign == 0)
		weft_rwmutex_runlock(&t->rw);
}

static void trylock_once(void *arg)
{
	struct rw_try *t = arg;
	t->foreign = weft_rwmutex_trylock(&t->rw);
	if (t->foreign == 0)
		weft_rwmutex_unlock(&t->rw);
}

/* Run fn(t) on a pthread and return what it stored in t->foreign. */
static int on_thread(weft_fn fn, struct rw_try *t)
{
	pthread_t th;
	t->foreign = -1;
	test_start_thread(&th, fn, t);
	test_join_thread(th);
	return t->foreign;
}

/*
 * The try forms: readers share (tryrlock twice), trylock is EBUSY while any
 * reader is in, and both are EBUSY while a writer holds the lock, also from a
 * pthread. While a writer waits for the last reader, new readers are turned
 * away (tryrlock EBUSY) or queue (rlock parks); when the reader leaves, the
 * writer goes first, then the queued reader. Guards: trylock that counts no
 * readers, tryrlock that ignores a writer holding or waiting, readers let in
 * past a waiting writer, a writer not woken by the last reader.
 */
TEST(rwmutex_try_forms)
{
	static struct rw_try t;
	t = (struct rw_try){0};
	weft_rwmutex *rw = &t.rw;
	ASSERT_EQ(weft_rwmutex_tryrlock(rw), 0);
	ASSERT_EQ(weft_rwmutex_tryrlock(rw), 0);
	ASSERT_EQ(weft_rwmutex_trylock(rw), EBUSY);
	ASSERT_EQ(on_thread(trylock_once, &t), EBUSY);
	ASSERT_EQ(on_thread(tryrlock_once, &t), 0);
	weft_rwmutex_runlock(rw);
	ASSERT_EQ(weft_rwmutex_trylock(rw), EBUSY); /* one reader still in */
	weft_rwmutex_runlock(rw);
	ASSERT_EQ(weft_rwmutex_trylock(rw), 0);
	ASSERT_EQ(weft_rwmutex_trylock(rw), EBUSY);
	ASSERT_EQ(weft_rwmutex_tryrlock(rw), EBUSY);
	ASSERT_EQ(on_thread(tryrlock_once, &t), EBUSY);
	ASSERT_EQ(on_thread(trylock_once, &t), EBUSY);
	weft_rwmutex_unlock(rw);
	ASSERT_EQ(on_thread(trylock_once, &t), 0);

	weft_rwmutex_rlock(rw);
	weft_wg_add(&t.done, 2);
	GO(pending_writer, &t);
	WAIT_FOR(parked("sync.RWMutex.Lock") == 1);
	ASSERT_EQ(weft_rwmutex_tryrlock(rw), EBUSY);
	ASSERT_EQ(weft_rwmutex_trylock(rw), EBUSY);
	ASSERT_EQ(on_thread(tryrlock_once, &t), EBUSY);
	GO(queued_reader, &t);
	WAIT_FOR(parked("sync.RWMutex.RLock") == 1);
	ASSERT_EQ(atomic_load(&t.seq), 0);
	weft_rwmutex_runlock(rw);
	join(&t.done, "writer and queued reader");
	ASSERT_EQ(t.writer_at, 0);
	ASSERT_EQ(t.reader_at, 1);
	ASSERT_EQ(weft_rwmutex_trylock(rw), 0);
	weft_rwmutex_unlock(rw);
}

static void queued_writer(void *arg)
{
	struct rw_try *t = arg;
	weft_rwmutex_lock(&t->rw);
	t->writer_at = atomic_fetch_add(&t->seq, 1);
	weft_rwmutex_unlock(&t->rw);
	weft_wg_done(&t->done);
}

/*
 * A writer that takes a free lock (the fast path) holds off a second writer
 * (which parks, holding the writers' mutex) and a reader that came first;
 * its unlock lets the reader in, then the writer. Guards: a fast unlock that
 * does not wake the waiting writer (the join fails), a writer let in while
 * the fast one holds the lock or before the reader that queued earlier.
 */
TEST(rwmutex_writer_waits_for_fast_writer)
{
	static struct rw_try t;
	t = (struct rw_try){0};
	t.writer_at = t.reader_at = -1;
	weft_rwmutex_lock(&t.rw);
	weft_wg_add(&t.done, 2);
	GO(queued_reader, &t);
	WAIT_FOR(parked("sync.RWMutex.RLock") == 1);
	GO(queued_writer, &t);
	WAIT_FOR(parked("sync.RWMutex.Lock") == 1);
	weft_sleep(2 * TEST_MS);
	ASSERT_EQ(atomic_load(&t.seq), 0);
	ASSERT_EQ(on_thread(trylock_once, &t), EBUSY);
	weft_rwmutex_unlock(&t.rw);
	join(&t.done, "queued reader and writer");
	ASSERT_EQ(t.reader_at, 0);
	ASSERT_EQ(t.writer_at, 1);
	ASSERT_EQ(weft_rwmutex_trylock(&t.rw), 0);
	weft_rwmutex_unlock(&t.rw);
}

/* One side loops (8 readers or 4 writers, each holding the lock across a
 * yield so the lock is never free); a late goroutine of the other side asks
 * once. */
struct rw_starve {
	weft_rwmutex rw;
	atomic_int stop;     /* the late one got in: the loopers stop */
	atomic_long ops;     /* sections the loopers completed */
	atomic_int finished; /* loopers that ran out of ops */
	long cap;            /* ops per looper: what bounds the test */
	bool late_writes;    /* the late one is a writer (else a reader) */
	long waited_ops;     /* looper sections between the request and the entry */
	weft_wg done;
};

/* A looper, of the side opposite the late one. Loopers yield once or twice
 * inside, at random, so that they do not fall into a fixed rhythm with gaps
 * a lucky late one could always hit. */
static void looper(void *arg)
{
	struct rw_starve *s = arg;
	bool writer = !s->late_writes;
	uint32_t seed = (uint32_t)(uintptr_t)&seed | 1;
	for (long i = 0; i < s->cap && !atomic_load(&s->stop); i++) {
		if (writer)
			weft_rwmutex_lock(&s->rw);
		else
			weft_rwmutex_rlock(&s->rw);
		weft_yield();
		if (test_rand32(&seed) & 1)
			weft_yield();
		atomic_fetch_add(&s->ops, 1);
		if (writer)
			weft_rwmutex_unlock(&s->rw);
		else
			weft_rwmutex_runlock(&s->rw);
	}
	atomic_fetch_add(&s->finished, 1);
	weft_wg_done(&s->done);
}

/* The late one asks 5 times, each once the loopers have done 500 more
 * sections, and keeps the longest wait: a lock that lets it in only by luck
 * (at a moment the other side happens to be idle) must be lucky 5 times. */
static void late_probes(void *arg)
{
	struct rw_starve *s = arg;
	bool writer = s->late_writes;
	long longest = 0;
	for (int i = 0; i < 5; i++) {
		long start = atomic_load(&s->ops);
		while (atomic_load(&s->ops) < start + 500 && !atomic_load(&s->finished))
			weft_yield();
		long before = atomic_load(&s->ops);
		if (writer)
			weft_rwmutex_lock(&s->rw);
		else
			weft_rwmutex_rlock(&s->rw);
		long waited = atomic_load(&s->ops) - before;
		if (writer)
			weft_rwmutex_unlock(&s->rw);
		else
			weft_rwmutex_runlock(&s->rw);
		if (waited > longest)
			longest = waited;
	}
	s->waited_ops = longest;
	atomic_store(&s->stop, 1);
	weft_wg_done(&s->done);
}

/* Sections the loopers completed while the late one waited to get in (the
 * longest of its waits). */
static int64_t starve_run(int loopers, bool late_writes)
{
	static struct rw_starve s;
	s = (struct rw_starve){0};
	s.cap = TEST_SIZE(20000, 4000);
	s.late_writes = late_writes;
	weft_wg_add(&s.done, loopers + 1);
	for (int i = 0; i < loopers; i++)
		GO(looper, &s);
	GO(late_probes, &s);
	join(&s.done, "starvation run");
	return s.waited_ops;
}

/*
 * 8 readers at 2 Ps re-lock in a loop, each holding its read lock across a
 * yield, so some reader is always inside; a writer that asks (5 times) gets
 * in each time after the readers inside leave, long before the readers run
 * out of their budget of 160,000 sections (bounded by op count, not time:
 * under 1000 sections; Go's algorithm needs about 8). Best of 3 runs.
 * Guards: a writer that waits for the reader count to reach zero while new
 * readers keep coming.
 */
TEST(rwmutex_writer_not_starved)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t waited = TEST_BEST_OF(3, 100, starve_run(8, true));
	printf("    reader sections while the writer waited: %lld\n", (long long)waited);
	ASSERT_LT(waited, 1000);
}

/*
 * The mirror image: 4 writers lock in a loop, each holding the lock across a
 * yield; a reader that asks (5 times) gets in at the next unlock each time
 * (under 1000 of the writers' 80,000 sections; Go's algorithm: one or two).
 * Guards: writer preference, where a reader waits while any writer holds or
 * wants the lock.
 */
TEST(rwmutex_readers_not_starved)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t waited = TEST_BEST_OF(3, 100, starve_run(4, false));
	printf("    writer sections while the reader waited: %lld\n", (long long)waited);
	ASSERT_LT(waited, 1000);
}

/* ---------------------------------------------------------------- Once */

struct stampede {
	weft_once once;
	weft_wg gate; /* every caller waits here, then all go at once */
	weft_wg done;
	atomic_int ready;
	atomic_int runs;
	atomic_int done_inside; /* weft_once_done() inside fn said 1 */
	atomic_int early;       /* callers back before fn's effect */
	int effect;             /* written by fn; plain: Once must publish it */
};

static void stampede_fn(void *arg)
{
	struct stampede *s = arg;
	atomic_fetch_add(&s->runs, 1);
	if (weft_once_done(&s->once))
		atomic_store(&s->done_inside, 1);
	for (int i = 0; i < 3; i++) {
		weft_sleep(TEST_MS);
		weft_yield();
	}
	s->effect = 42;
}

static void stampede_caller(void *arg)
{
	struct stampede *s = arg;
	atomic_fetch_add(&s->ready, 1);
	weft_wg_wait(&s->gate);
	weft_once_do(&s->once, stampede_fn, s);
	if (s->effect != 42 || !weft_once_done(&s->once))
		atomic_fetch_add(&s->early, 1);
	weft_wg_done(&s->done);
}

static void must_not_run(void *arg)
{
	(void)arg;
	FAIL("a second function ran on a used Once");
}

/*
 * 1000 goroutines and 2 pthreads, released together by one WaitGroup, call
 * weft_once_do on one Once whose function sleeps and yields: it runs exactly
 * once, weft_once_done says 0 before and while it runs and 1 after, and
 * every caller sees its effect when weft_once_do returns. A later call with
 * another function runs nothing. Guards: no re-check under the lock (several
 * runs), done set before fn returns (callers back early, once_done 1 inside
 * fn), a Once that runs fn again.
 */
TEST(once_stampede)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 1000, T = 2 };
	static struct stampede s;
	s = (struct stampede){0};
	ASSERT_EQ(weft_once_done(&s.once), 0);
	weft_wg_add(&s.gate, 1);
	weft_wg_add(&s.done, G + T);
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		test_start_thread(&th[i], stampede_caller, &s);
	for (int i = 0; i < G; i++)
		GO(stampede_caller, &s);
	WAIT_FOR(atomic_load(&s.ready) == G + T);
	weft_sleep(5 * TEST_MS); /* let them park on the gate */
	ASSERT_EQ(weft_once_done(&s.once), 0);
	weft_wg_done(&s.gate);
	join(&s.done, "once callers");
	for (int i = 0; i < T; i++)
		test_join_thread(th[i]);
	ASSERT_EQ(atomic_load(&s.runs), 1);
	ASSERT_EQ(atomic_load(&s.early), 0);
	ASSERT_EQ(atomic_load(&s.done_inside), 0);
	ASSERT_EQ(weft_once_done(&s.once), 1);
	weft_once_do(&s.once, must_not_run, NULL);
	ASSERT_EQ(atomic_load(&s.runs), 1);
}

/* ---------------------------------------------------------------- Cond */

struct bcast {
	weft_mutex mu;
	weft_cond c;
	int flag;    /* under mu */
	int waiting; /* under mu: waiters inside weft_cond_wait */
	int passes;  /* under mu: returns from weft_cond_wait */
	atomic_int left;
	weft_wg done;
};

static void bcast_waiter(void *arg)
{
	struct bcast *b = arg;
	weft_mutex_lock(&b->mu);
	while (!b->flag) {
		b->waiting++;
		weft_cond_wait(&b->c, &b->mu);
		b->waiting--;
		b->passes++;
	}
	weft_mutex_unlock(&b->mu);
	atomic_fetch_add(&b->left, 1);
	weft_wg_done(&b->done);
}

static bool bcast_state(struct bcast *b, int waiting, int passes)
{
	weft_mutex_lock(&b->mu);
	bool ok = b->waiting == waiting && b->passes == passes;
	weft_mutex_unlock(&b->mu);
	return ok;
}

/*
 * 100 goroutines and 2 pthreads wait in the usual loop on a flag. A
 * broadcast with the flag still clear wakes every one exactly once and each
 * goes back to waiting (none leaves); a broadcast with the flag set lets all
 * of them out. Guards: a broadcast that wakes one (or a few), foreign
 * waiters left asleep, a waiter woken twice by one broadcast.
 */
TEST(cond_broadcast_wakes_all)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 100, T = 2, N = G + T };
	static struct bcast b;
	b = (struct bcast){0};
	weft_wg_add(&b.done, N);
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		test_start_thread(&th[i], bcast_waiter, &b);
	for (int i = 0; i < G; i++)
		GO(bcast_waiter, &b);
	WAIT_FOR(bcast_state(&b, N, 0));
	weft_cond_broadcast(&b.c);
	WAIT_FOR(bcast_state(&b, N, N));
	weft_sleep(5 * TEST_MS);
	ASSERT(bcast_state(&b, N, N));
	ASSERT_EQ(atomic_load(&b.left), 0);
	weft_mutex_lock(&b.mu);
	b.flag = 1;
	weft_cond_broadcast(&b.c);
	weft_mutex_unlock(&b.mu);
	join(&b.done, "broadcast waiters");
	for (int i = 0; i < T; i++)
		test_join_thread(th[i]);
	ASSERT_EQ(atomic_load(&b.left), N);
	ASSERT_EQ(b.passes, 2 * N);
	ASSERT(all_zero(&b.c, sizeof b.c));
}

enum { FIFO_N = 12, FIFO_THREAD = 5 };

struct cond_fifo {
	weft_mutex mu;
	weft_cond c;
	int arrived;       /* under mu: waiters queued (they queue before unlocking) */
	int woken;         /* under mu */
	int order[FIFO_N]; /* under mu: ids in the order they woke */
	weft_wg done;
};

struct fifo_arg {
	struct cond_fifo *f;
	int id;
};

static void cond_fifo_waiter(void *arg)
{
	struct fifo_arg *a = arg;
	struct cond_fifo *f = a->f;
	weft_mutex_lock(&f->mu);
	f->arrived++;
	weft_cond_wait(&f->c, &f->mu);
	f->order[f->woken++] = a->id;
	weft_mutex_unlock(&f->mu);
	weft_wg_done(&f->done);
}

/*
 * 12 waiters (one a pthread) queue one after another (each counted under
 * the mutex, which it holds until it is queued); each signal wakes exactly
 * one (the count stays put for 3 ms after it moved), and in arrival order.
 * Relies on weft_cond_wait having no spurious wake-ups (true of this
 * implementation, as of Go's). Guards: signal waking the newest (LIFO) or
 * every waiter, a foreign waiter skipped.
 */
TEST(cond_signal_fifo_one_at_a_time)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct cond_fifo f;
	static struct fifo_arg args[FIFO_N];
	f = (struct cond_fifo){0};
	weft_wg_add(&f.done, FIFO_N);
	pthread_t th;
	for (int i = 0; i < FIFO_N; i++) {
		args[i] = (struct fifo_arg){&f, i};
		if (i == FIFO_THREAD)
			test_start_thread(&th, cond_fifo_waiter, &args[i]);
		else
			GO(cond_fifo_waiter, &args[i]);
		WAIT_FOR(locked_get(&f.mu, &f.arrived) == i + 1);
	}
	for (int k = 0; k < FIFO_N; k++) {
		weft_cond_signal(&f.c);
		WAIT_FOR(locked_get(&f.mu, &f.woken) >= k + 1);
		weft_sleep(3 * TEST_MS);
		ASSERT_EQ(locked_get(&f.mu, &f.woken), k + 1);
	}
	join(&f.done, "signalled waiters");
	test_join_thread(th);
	for (int k = 0; k < FIFO_N; k++)
		ASSERT_EQ(f.order[k], k);
}

struct late_waiter {
	weft_mutex mu;
	weft_cond c;
	int flag; /* under mu */
	int64_t timeout;
	atomic_int result;
	weft_wg done;
};

static void short_cond_wait(void *arg)
{
	struct late_waiter *l = arg;
	weft_mutex_lock(&l->mu);
	l->result = weft_cond_wait_until(&l->c, &l->mu, weft_now() + l->timeout);
	weft_mutex_unlock(&l->mu);
	weft_wg_done(&l->done);
}

static void flag_cond_wait(void *arg)
{
	struct late_waiter *l = arg;
	weft_mutex_lock(&l->mu);
	while (!l->flag)
		weft_cond_wait(&l->c, &l->mu);
	weft_mutex_unlock(&l->mu);
	weft_wg_done(&l->done);
}

/*
 * A signal or broadcast with nobody waiting is not remembered: a waiter that
 * comes after times out (20 ms). A waiter that timed out has left the queue:
 * a waiter queued behind it while it waited gets the next signal. Guards: a
 * stored wake-up (Cond as a semaphore), a timed-out waiter left in the
 * queue to swallow the next signal.
 */
TEST(cond_signal_without_waiters_is_lost)
{
	static struct late_waiter l;
	l = (struct late_waiter){0};
	weft_cond_signal(&l.c);
	weft_cond_broadcast(&l.c);
	weft_wg_add(&l.done, 1);
	l.result = -1;
	l.timeout = 20 * TEST_MS;
	GO(short_cond_wait, &l);
	join(&l.done, "late waiter");
	ASSERT_EQ(l.result, ETIMEDOUT);

	/* The timeout leaves time for the second waiter to queue behind the
	 * first (see try_again). */
	for (int try = 0;; try++) {
		l.timeout = try_window_ns(try);
		l.result = -1;
		l.flag = 0;
		weft_wg_add(&l.done, 2);
		GO(short_cond_wait, &l);
		WAIT_FOR(parked("sync.Cond.Wait") == 1 || l.result != -1);
		GO(flag_cond_wait, &l);
		WAIT_FOR(parked("sync.Cond.Wait") == 2 || l.result != -1);
		bool behind = l.result == -1; /* both were queued at once */
		WAIT_FOR(l.result != -1);
		ASSERT_EQ(l.result, ETIMEDOUT);
		weft_mutex_lock(&l.mu);
		l.flag = 1;
		weft_mutex_unlock(&l.mu);
		weft_cond_signal(&l.c);
		join(&l.done, "waiter behind a timed-out one");
		ASSERT(all_zero(&l.c, sizeof l.c));
		if (!try_again(behind, try, "timed"))
			break;
	}
}

struct race_round {
	weft_mutex mu;
	weft_cond c;
	int queued;        /* under mu: waiters inside weft_cond_wait(_until) */
	int tokens;        /* under mu: what the plain waiter waits for */
	int64_t deadline;  /* under mu: the timed waiter's, set as it starts */
	atomic_int result; /* the timed waiter's */
	weft_wg done;
};

static void race_timed_waiter(void *arg)
{
	struct race_round *r = arg;
	weft_mutex_lock(&r->mu);
	r->deadline = weft_now() + 3 * TEST_MS;
	r->queued++;
	r->result = weft_cond_wait_until(&r->c, &r->mu, r->deadline);
	r->queued--;
	weft_mutex_unlock(&r->mu);
	weft_wg_done(&r->done);
}

static void race_plain_waiter(void *arg)
{
	struct race_round *r = arg;
	weft_mutex_lock(&r->mu);
	r->queued++;
	while (r->tokens == 0)
		weft_cond_wait(&r->c, &r->mu);
	r->tokens--;
	r->queued--;
	weft_mutex_unlock(&r->mu);
	weft_wg_done(&r->done);
}

/*
 * A signal racing a deadline: a timed waiter at the front of the queue and a
 * plain one behind it; the signal is sent near the timed one's deadline,
 * swept from 300 us before it to the instant (a sleep's wake-up is late by
 * some 100 us here, so rounds fall on both sides of the deadline and some
 * right on it). Either the timed waiter takes the signal (it returns 0,
 * and a second signal is for the plain one) or it times out, and then the
 * one signal must reach the plain waiter. 60 rounds. Guards: a signal spent
 * on a waiter whose deadline has claimed it but which is still queued (a
 * lost wake-up: the plain waiter sleeps on).
 */
TEST(cond_signal_races_deadline)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct race_round r;
	int rounds = TEST_SIZE(60, 30), timed_out = 0;
	for (int i = 0; i < rounds; i++) {
		r = (struct race_round){0};
		r.result = -1;
		weft_wg_add(&r.done, 2);
		GO(race_timed_waiter, &r);
		/* The timed waiter may queue and time out before this looks
		 * (a descheduled main): its result ends the wait too. */
		YIELD_UNTIL(locked_get(&r.mu, &r.queued) >= 1 || r.result != -1);
		GO(race_plain_waiter, &r);
		YIELD_UNTIL(locked_get(&r.mu, &r.queued) >= 2 || r.result != -1);
		weft_mutex_lock(&r.mu);
		int64_t deadline = r.deadline;
		weft_mutex_unlock(&r.mu);
		/* Sweep the signal across the deadline: a sleep wakes some
		 * 100 us late here, so aim from 300 us before it to the
		 * instant itself. */
		weft_sleep_until(deadline - (int64_t)(rounds - i) * 300 * WEFT_MICROSECOND / rounds);
		weft_mutex_lock(&r.mu);
		r.tokens = 1;
		weft_cond_signal(&r.c);
		weft_mutex_unlock(&r.mu);
		WAIT_FOR(r.result != -1);
		if (r.result == 0)
			weft_cond_signal(&r.c); /* the first went to the timed one */
		else
			timed_out++;
		join(&r.done, "plain waiter behind a timed one");
		ASSERT(all_zero(&r.c, sizeof r.c));
	}
	printf("    %d rounds, %d timed out\n", rounds, timed_out);
}

/* A bounded queue from a Mutex and two Conds. */
enum { PC_CAP = 4, PC_P = 4, PC_C = 4 };

struct pc {
	weft_mutex mu;
	weft_cond not_full, not_empty;
	int64_t buf[PC_CAP]; /* under mu */
	int head, len;       /* under mu */
	int items;           /* per producer */
	atomic_long consumed, sum;
	atomic_int misordered; /* one producer's items out of order */
	weft_wg producers, consumers;
};

/* Wait on c; timed waiters give up every 200 us (the loop re-checks). */
static void pc_wait(weft_cond *c, weft_mutex *mu, bool timed)
{
	if (timed)
		weft_cond_wait_until(c, mu, weft_now() + 200 * WEFT_MICROSECOND);
	else
		weft_cond_wait(c, mu);
}

static void pc_put(struct pc *q, int64_t v, bool timed)
{
	weft_mutex_lock(&q->mu);
	while (q->len == PC_CAP)
		pc_wait(&q->not_full, &q->mu, timed);
	q->buf[(q->head + q->len) % PC_CAP] = v;
	q->len++;
	weft_cond_signal(&q->not_empty);
	weft_mutex_unlock(&q->mu);
}

static int64_t pc_get(struct pc *q, bool timed)
{
	weft_mutex_lock(&q->mu);
	while (q->len == 0)
		pc_wait(&q->not_empty, &q->mu, timed);
	int64_t v = q->buf[q->head];
	q->head = (q->head + 1) % PC_CAP;
	q->len--;
	weft_cond_signal(&q->not_full);
	weft_mutex_unlock(&q->mu);
	return v;
}

struct pc_arg {
	struct pc *q;
	int64_t id;
	bool timed; /* waits with deadlines */
};

/* Producer p puts (p << 32) | i for i = 1 .. items. */
static void pc_producer(void *arg)
{
	struct pc_arg *a = arg;
	struct pc *q = a->q;
	for (int64_t i = 1; i <= q->items; i++)
		pc_put(q, a->id << 32 | i, a->timed);
	weft_wg_done(&q->producers);
}

static void pc_consumer(void *arg)
{
	struct pc_arg *a = arg;
	struct pc *q = a->q;
	int64_t last[PC_P] = {0};
	for (;;) {
		int64_t v = pc_get(q, a->timed);
		if (v < 0)
			break;
		int64_t p = v >> 32, i = v & 0xffffffff;
		if (p >= PC_P || i <= last[p])
			atomic_fetch_add(&q->misordered, 1);
		else
			last[p] = i;
		atomic_fetch_add(&q->consumed, 1);
		atomic_fetch_add(&q->sum, v);
	}
	weft_wg_done(&q->consumers);
}

/*
 * 4 producers and 4 consumers (one of each a pthread, waiting with short
 * deadlines) pass items through a 4-slot queue guarded by a Mutex and two
 * Conds with signal (not broadcast); then one end marker per consumer. Every
 * item arrives once (count and sum), each producer's items in order.
 * Guards: a lost wake-up (the join fails), a signal spent on a waiter that
 * has timed out, a waiter woken without the mutex re-locked (corruption).
 */
TEST(cond_producer_consumer)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct pc q;
	static struct pc_arg pa[PC_P], ca[PC_C];
	q = (struct pc){0};
	q.items = TEST_SIZE(20000, 3000);
	weft_wg_add(&q.producers, PC_P);
	weft_wg_add(&q.consumers, PC_C);
	/* The last of each side is a pthread with deadlines. */
	pthread_t pt, ct;
	for (int i = 0; i < PC_C; i++) {
		ca[i] = (struct pc_arg){&q, i, i == PC_C - 1};
		if (ca[i].timed)
			test_start_thread(&ct, pc_consumer, &ca[i]);
		else
			GO(pc_consumer, &ca[i]);
	}
	for (int i = 0; i < PC_P; i++) {
		pa[i] = (struct pc_arg){&q, i, i == PC_P - 1};
		if (pa[i].timed)
			test_start_thread(&pt, pc_producer, &pa[i]);
		else
			GO(pc_producer, &pa[i]);
	}
	join(&q.producers, "producers");
	for (int i = 0; i < PC_C; i++)
		pc_put(&q, -1, false);
	join(&q.consumers, "consumers");
	test_join_thread(pt);
	test_join_thread(ct);
	int64_t n = q.items;
	int64_t want = 0;
	for (int64_t p = 0; p < PC_P; p++)
		want += (p << 32) * n + n * (n + 1) / 2;
	ASSERT_EQ(atomic_load(&q.misordered), 0);
	ASSERT_EQ(atomic_load(&q.consumed), PC_P * n);
	ASSERT_EQ(atomic_load(&q.sum), want);
	ASSERT_EQ(q.len, 0);
}

/* ---------------------------------------------------------------- deadlines */

enum wait_kind { WAIT_COND, WAIT_SEM, WAIT_WG, WAIT_KINDS };

/* One timed wait of each kind, run by a goroutine or a pthread. */
struct timed {
	weft_mutex mu;
	weft_cond c;
	weft_sem sem;  /* capacity 1, held by the test */
	weft_wg wg;    /* counter 1 */
	int arrived;   /* under mu: cond waiters queued */
	int64_t after; /* the deadline: now + after */
	weft_wg done;
};

struct timed_arg {
	struct timed *t;
	enum wait_kind kind;
	atomic_int result;
	int relocked; /* cond: the mutex was held again on return */
	int64_t deadline, returned;
};

static void timed_wait(void *arg)
{
	struct timed_arg *a = arg;
	struct timed *t = a->t;
	a->deadline = weft_now() + t->after;
	switch (a->kind) {
	case WAIT_COND:
		weft_mutex_lock(&t->mu);
		t->arrived++;
		a->result = weft_cond_wait_until(&t->c, &t->mu, a->deadline);
		a->returned = weft_now();
		a->relocked = weft_mutex_trylock(&t->mu) == EBUSY;
		weft_mutex_unlock(&t->mu); /* (taken by the trylock if not relocked) */
		break;
	case WAIT_SEM:
		a->result = weft_sem_acquire_until(&t->sem, 1, a->deadline);
		a->returned = weft_now();
		break;
	case WAIT_WG:
		a->result = weft_wg_wait_until(&t->wg, a->deadline);
		a->returned = weft_now();
		break;
	case WAIT_KINDS: break;
	}
	weft_wg_done(&t->done);
}

static void timed_setup(struct timed *t, int64_t after)
{
	*t = (struct timed){0};
	ASSERT_EQ(weft_sem_init(&t->sem, 1), 0);
	ASSERT_EQ(weft_sem_acquire(&t->sem, 1), 0);
	weft_wg_add(&t->wg, 1);
	t->after = after;
	weft_wg_add(&t->done, 2 * WAIT_KINDS);
}

/* Start each kind of wait on a goroutine (args[k]) and on a pthread
 * (args[WAIT_KINDS + k]). */
static void timed_start(struct timed *t, struct timed_arg *args, pthread_t *th)
{
	for (int k = 0; k < WAIT_KINDS; k++) {
		args[k] = (struct timed_arg){t, (enum wait_kind)k, -1, 0, 0, 0};
		args[WAIT_KINDS + k] = args[k];
		GO(timed_wait, &args[k]);
		test_start_thread(&th[k], timed_wait, &args[WAIT_KINDS + k]);
	}
}

/*
 * With nothing coming, each timed wait (Cond, Semaphore, WaitGroup; on a
 * goroutine and on a pthread, 30 ms) returns ETIMEDOUT, never before its
 * deadline on weft_now()'s clock and within 2 s after it; the Cond waiter
 * holds the mutex again (trylock EBUSY); the timed-out waiters left nothing
 * behind (the Cond's queue is empty, the Semaphore is still wholly held,
 * the WaitGroup's waiter count is back to zero). Guards: a deadline timer
 * that fires early (or not at all: the join fails), a foreign futex wait
 * that ends early, a Cond wait returning unlocked on timeout, bookkeeping
 * not undone by a waiter that gave up.
 */
TEST(deadlines_expire_never_early)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct timed t;
	static struct timed_arg args[2 * WAIT_KINDS];
	pthread_t th[WAIT_KINDS];
	timed_setup(&t, 30 * TEST_MS);
	timed_start(&t, args, th);
	join(&t.done, "timed waiters");
	for (int k = 0; k < WAIT_KINDS; k++)
		test_join_thread(th[k]);
	for (int i = 0; i < 2 * WAIT_KINDS; i++) {
		struct timed_arg *a = &args[i];
		printf("    %s %d: %.2f ms past the deadline\n",
		       i < WAIT_KINDS ? "goroutine" : "thread", (int)a->kind,
		       (double)(a->returned - a->deadline) / 1e6);
		ASSERT_EQ(a->result, ETIMEDOUT);
		ASSERT_GE(a->returned, a->deadline);
		ASSERT_LT(a->returned - a->deadline, 2000 * TEST_MS * test_slowdown());
		if (a->kind == WAIT_COND)
			ASSERT_EQ(a->relocked, 1);
	}
	ASSERT(all_zero(&t.c, sizeof t.c));
	ASSERT_EQ(weft_sem_tryacquire(&t.sem, 1), EAGAIN);
	weft_sem_release(&t.sem, 1);
	weft_wg_done(&t.wg);
	ASSERT(all_zero(&t.wg, sizeof t.wg));
	ASSERT_EQ(weft_wg_wait_until(&t.wg, weft_now() - 1), 0);
	ASSERT_EQ(weft_sem_tryacquire(&t.sem, 1), 0);
}

/*
 * Each timed wait (5 s deadline, goroutine and pthread) returns 0 when the
 * event comes in time: a Cond signal to each queued waiter, one Semaphore
 * token per waiter, the WaitGroup's Done. Guards: a claimable waiter the
 * waker skips (it would time out), a result that reports ETIMEDOUT anyway.
 */
TEST(deadlines_met_in_time)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct timed t;
	static struct timed_arg args[2 * WAIT_KINDS];
	pthread_t th[WAIT_KINDS];
	timed_setup(&t, bound_ns());
	timed_start(&t, args, th);
	WAIT_FOR(locked_get(&t.mu, &t.arrived) == 2);
	weft_sleep(5 * TEST_MS);
	weft_cond_signal(&t.c);
	weft_cond_signal(&t.c);
	weft_wg_done(&t.wg);
	/* One token for each semaphore waiter, the second once the first has
	 * its own (a capacity of 1; the waiters keep what they get). */
	weft_sem_release(&t.sem, 1);
	WAIT_FOR(args[WAIT_SEM].result != -1 || args[WAIT_KINDS + WAIT_SEM].result != -1);
	weft_sem_release(&t.sem, 1);
	join(&t.done, "timed waiters");
	for (int k = 0; k < WAIT_KINDS; k++)
		test_join_thread(th[k]);
	for (int i = 0; i < 2 * WAIT_KINDS; i++) {
		ASSERT_EQ(args[i].result, 0);
		ASSERT_LT(args[i].returned, args[i].deadline);
		if (args[i].kind == WAIT_COND)
			ASSERT_EQ(args[i].relocked, 1);
	}
}

/*
 * Deadlines already past: the call does not wait, succeeding when it can
 * (counter zero, tokens free) and ETIMEDOUT otherwise, holding nothing.
 * Guards: a past deadline that waits anyway, or fails a call that needs no
 * wait.
 */
TEST(deadlines_already_past)
{
	weft_sem s = WEFT_SEM_INIT(2);
	weft_wg wg = WEFT_WG_INIT;
	weft_mutex mu = WEFT_MUTEX_INIT;
	weft_cond c = WEFT_COND_INIT;
	int64_t past = weft_now() - 1;
	int64_t t0 = weft_now();
	ASSERT_EQ(weft_wg_wait_until(&wg, past), 0);
	ASSERT_EQ(weft_sem_acquire_until(&s, 2, past), 0);
	ASSERT_EQ(weft_sem_acquire_until(&s, 1, past), ETIMEDOUT);
	weft_sem_release(&s, 2);
	ASSERT_EQ(weft_sem_acquire_until(&s, 3, past), ETIMEDOUT);
	ASSERT_EQ(weft_sem_tryacquire(&s, 2), 0);
	weft_sem_release(&s, 2);
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_wg_wait_until(&wg, past), ETIMEDOUT);
	weft_wg_done(&wg);
	weft_mutex_lock(&mu);
	ASSERT_EQ(weft_cond_wait_until(&c, &mu, past), ETIMEDOUT);
	ASSERT_EQ(weft_mutex_trylock(&mu), EBUSY);
	weft_mutex_unlock(&mu);
	ASSERT_LT(weft_now() - t0, 1000 * TEST_MS * test_slowdown());
	ASSERT(all_zero(&wg, sizeof wg));
	ASSERT(all_zero(&c, sizeof c));
}

/* ---------------------------------------------------------------- Semaphore */

struct sem_ctx {
	weft_sem sem;
	atomic_int served; /* waiters that got their tokens */
	int order[16];     /* waiter ids in the order served */
	weft_wg done;
};

struct sem_arg {
	struct sem_ctx *s;
	int id;
	int64_t n;
	int64_t deadline; /* INT64_MAX: weft_sem_acquire */
	atomic_int result;
};

static void sem_waiter(void *arg)
{
	struct sem_arg *a = arg;
	struct sem_ctx *s = a->s;
	if (a->deadline == INT64_MAX)
		a->result = weft_sem_acquire(&s->sem, a->n);
	else
		a->result = weft_sem_acquire_until(&s->sem, a->n, a->deadline);
	if (a->result == 0)
		s->order[atomic_fetch_add(&s->served, 1)] = a->id;
	weft_wg_done(&s->done);
}

/* Start waiter a and wait until it is queued (parked), behind `before`. */
static void sem_queue(struct sem_arg *a, int before)
{
	weft_wg_add(&a->s->done, 1);
	GO(sem_waiter, a);
	WAIT_FOR(parked("semaphore.Acquire") == before + 1);
}

/* After the served count moved to want, it stays there (3 ms). */
static void expect_served(struct sem_ctx *s, int want)
{
	WAIT_FOR(atomic_load(&s->served) >= want);
	weft_sleep(3 * TEST_MS);
	ASSERT_EQ(atomic_load(&s->served), want);
}

/*
 * Capacity 10: three acquires of 3 go through, a fourth waits (and stays
 * waiting) until 3 come back; 1 token is free meanwhile (tryacquire(1) is
 * EAGAIN all the same: someone waits). acquire(0) and tryacquire(0) are free
 * when nobody waits. Guards: weights ignored (counting requests, not tokens),
 * a release that does not serve the waiter.
 */
TEST(sem_weights)
{
	static struct sem_ctx s;
	s = (struct sem_ctx){0};
	ASSERT_EQ(weft_sem_init(&s.sem, 10), 0);
	ASSERT_EQ(weft_sem_init(&s.sem, -1), EINVAL);
	ASSERT_EQ(weft_sem_acquire(&s.sem, 0), 0);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(weft_sem_acquire(&s.sem, 3), 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 2), EAGAIN);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 0), 0);
	struct sem_arg a = {&s, 0, 3, INT64_MAX, -1};
	sem_queue(&a, 0);
	expect_served(&s, 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN);
	weft_sem_release(&s.sem, 1);
	expect_served(&s, 0); /* 2 free, 3 wanted: still one short */
	weft_sem_release(&s.sem, 1);
	expect_served(&s, 1);
	join(&s.done, "sem waiter");
	ASSERT_EQ(a.result, 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN); /* 9 - 2 + 3 = 10 held */
	weft_sem_release(&s.sem, 1);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), 0);
	weft_sem_release(&s.sem, 10);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 10), 0);
	weft_sem_release(&s.sem, 10);
}

/*
 * Strict FIFO: the test holds all 10 tokens; waiters for 4, 1, 3, 1, 1
 * queue in that order (each parked before the next starts); tokens come back
 * one at a time, and after each the waiters served are exactly the prefix of
 * the queue whose total fits (4 tokens: the first; 5: the second too; 8:
 * the third; ...), so no small one goes past a bigger one ahead of it.
 * Guards: a release that serves whichever waiter fits (the 1s first), LIFO
 * service.
 */
TEST(sem_fifo_order)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { N = 5 };
	static const int64_t want[N] = {4, 1, 3, 1, 1};
	static struct sem_ctx s;
	static struct sem_arg a[N];
	s = (struct sem_ctx){0};
	ASSERT_EQ(weft_sem_init(&s.sem, 10), 0);
	ASSERT_EQ(weft_sem_acquire(&s.sem, 10), 0);
	for (int i = 0; i < N; i++) {
		a[i] = (struct sem_arg){&s, i, want[i], INT64_MAX, -1};
		sem_queue(&a[i], i);
	}
	int served = 0;
	int64_t freed = 0, prefix = 0;
	for (int k = 1; k <= 10; k++) {
		weft_sem_release(&s.sem, 1);
		freed++;
		while (served < N && prefix + want[served] <= freed)
			prefix += want[served++];
		expect_served(&s, served);
	}
	join(&s.done, "sem waiters");
	for (int i = 0; i < N; i++)
		ASSERT_EQ(s.order[i], i);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN);
	weft_sem_release(&s.sem, 10);
}

/*
 * A large request at the front is not overtaken: 5 of 10 tokens held, a
 * waiter for 8 queues, then one for 1 (which would fit) queues behind it and
 * stays there, also when 1 token comes back (6 free); tryacquire(1) is
 * EAGAIN. When 4 more come back, both are served. Guards: small requests
 * jumping the queue, on arrival or at a release, so a large one starves.
 */
TEST(sem_large_front_not_overtaken)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct sem_ctx s;
	static struct sem_arg big, small;
	s = (struct sem_ctx){0};
	ASSERT_EQ(weft_sem_init(&s.sem, 10), 0);
	ASSERT_EQ(weft_sem_acquire(&s.sem, 5), 0);
	big = (struct sem_arg){&s, 0, 8, INT64_MAX, -1};
	small = (struct sem_arg){&s, 1, 1, INT64_MAX, -1};
	sem_queue(&big, 0);
	sem_queue(&small, 1);
	expect_served(&s, 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN);
	weft_sem_release(&s.sem, 1);
	expect_served(&s, 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN);
	weft_sem_release(&s.sem, 4);
	join(&s.done, "sem waiters");
	ASSERT_EQ(atomic_load(&s.served), 2);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 2), EAGAIN); /* 9 held */
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), 0);
	weft_sem_release(&s.sem, 10);
}

static void sem_give_up(void *arg)
{
	struct sem_arg *a = arg;
	a->result = weft_sem_acquire_until(&a->s->sem, a->n, a->deadline);
	weft_wg_done(&a->s->done);
}

/*
 * A request for more than the capacity (3 of 2) can never be served: it
 * waits out its deadline alone, without holding up anyone else (Go's
 * semaphore does not queue it). Meanwhile tryacquire and acquire of the
 * free tokens succeed at once. Guard: the request queued at the front, where
 * every later request waits behind it until it gives up (tryacquire(1) was
 * EAGAIN with 2 tokens free).
 */
TEST(sem_more_than_capacity_waits_alone)
{
	static struct sem_ctx s;
	static struct sem_arg big;
	s = (struct sem_ctx){0};
	ASSERT_EQ(weft_sem_init(&s.sem, 2), 0);
	big = (struct sem_arg){&s, 0, 3, weft_now() + 200 * TEST_MS, -1};
	weft_wg_add(&s.done, 1);
	GO(sem_give_up, &big);
	WAIT_FOR(parked("semaphore.Acquire") == 1);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), 0);
	ASSERT_EQ(weft_sem_acquire(&s.sem, 1), 0);
	weft_sem_release(&s.sem, 2);
	join(&s.done, "sem waiter");
	ASSERT_EQ(big.result, ETIMEDOUT);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, 2), 0);
	weft_sem_release(&s.sem, 2);
}

/*
 * Giving up. (1) A waiter at the front for 8 (5 of 10 held) times out after
 * its deadline, holding nothing, and the waiter for 3 queued behind it (it
 * fits but had to wait) is then served at once, with no release. (2) A
 * waiter behind a large one times out and leaves; the large one is served
 * at the next release, then nothing is left queued or held. The same from a
 * pthread in (1). Guards: a timed-out front waiter that does not serve the
 * ones behind (they wait until some later release), tokens kept by a waiter
 * that gave up, a leaver left in the queue.
 */
TEST(sem_acquire_until_gives_up)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct sem_ctx s;
	static struct sem_arg front, behind, small, big;
	/* The deadline leaves time for the second waiter to queue behind the
	 * first (see try_again). */
	for (int foreign = 0; foreign < 2; foreign++) {
		for (int try = 0;; try++) {
			s = (struct sem_ctx){0};
			ASSERT_EQ(weft_sem_init(&s.sem, 10), 0);
			ASSERT_EQ(weft_sem_acquire(&s.sem, 5), 0);
			int64_t deadline = weft_now() + try_window_ns(try);
			front = (struct sem_arg){&s, 0, 8, deadline, -1};
			behind = (struct sem_arg){&s, 1, 3, INT64_MAX, -1};
			weft_wg_add(&s.done, 2);
			pthread_t th;
			if (foreign) {
				test_start_thread(&th, sem_give_up, &front);
				/* Not in a dump: tryacquire(0) fails only while
				 * someone waits. */
				WAIT_FOR(weft_sem_tryacquire(&s.sem, 0) == EAGAIN ||
				         front.result != -1);
			} else {
				GO(sem_give_up, &front);
				WAIT_FOR(parked("semaphore.Acquire") == 1 || front.result != -1);
			}
			GO(sem_waiter, &behind);
			WAIT_FOR(parked("semaphore.Acquire") == 1 + !foreign || front.result != -1);
			/* Read before the clock: if it is still before the deadline,
			 * both were queued, and the one behind must wait. */
			int served = atomic_load(&s.served), front_result = front.result;
			bool in_time = weft_now() < deadline;
			if (in_time) {
				ASSERT_EQ(front_result, -1);
				ASSERT_EQ(served, 0);
			}
			join(&s.done, "waiter behind a timed-out one");
			if (foreign)
				test_join_thread(th);
			ASSERT_EQ(front.result, ETIMEDOUT);
			ASSERT_GE(weft_now(), deadline);
			ASSERT_EQ(behind.result, 0);
			ASSERT_EQ(weft_sem_tryacquire(&s.sem, 2), 0); /* 5 + 3 + 2 */
			ASSERT_EQ(weft_sem_tryacquire(&s.sem, 1), EAGAIN);
			weft_sem_release(&s.sem, 10);
			if (!try_again(in_time, try, "front"))
				break;
		}
	}

	s = (struct sem_ctx){0};
	ASSERT_EQ(weft_sem_init(&s.sem, 10), 0);
	ASSERT_EQ(weft_sem_acquire(&s.sem, 5), 0);
	big = (struct sem_arg){&s, 0, 8, INT64_MAX, -1};
	small = (struct sem_arg){&s, 1, 1, weft_now() + 30 * TEST_MS, -1};
	sem_queue(&big, 0);
	weft_wg_add(&s.done, 1);
	GO(sem_give_up, &small);
	WAIT_FOR(small.result != -1);
	ASSERT_EQ(small.result, ETIMEDOUT);
	ASSERT_EQ(atomic_load(&s.served), 0);
	weft_sem_release(&s.sem, 5);
	join(&s.done, "large waiter");
	ASSERT_EQ(big.result, 0);
	weft_sem_release(&s.sem, 8);
	weft_sem s10 = WEFT_SEM_INIT(10);
	ASSERT_EQ(memcmp(&s.sem, &s10, sizeof s10), 0);
}

struct sem_race {
	weft_sem sem;         /* capacity 1, held by the test when a round starts */
	int64_t deadline;     /* the timed waiter's */
	atomic_int timed_got; /* -1 while it waits, else its result */
	atomic_int plain_got;
	weft_wg done;
};

static void sem_race_timed(void *arg)
{
	struct sem_race *r = arg;
	r->timed_got = weft_sem_acquire_until(&r->sem, 1, r->deadline);
	if (r->timed_got == 0)
		weft_sem_release(&r->sem, 1);
	weft_wg_done(&r->done);
}

static void sem_race_plain(void *arg)
{
	struct sem_race *r = arg;
	r->plain_got = weft_sem_acquire(&r->sem, 1) == 0;
	weft_sem_release(&r->sem, 1);
	weft_wg_done(&r->done);
}

/*
 * A release racing a deadline: the one token is held; a timed waiter (front)
 * and a plain one (behind) queue; the token comes back at the timed one's
 * deadline (the test sleeps until the same instant). Whoever wins, nothing
 * is lost: the timed one gets the token or times out, the plain one gets it
 * in the end, and afterwards the token is free and the semaphore as new.
 * 60 rounds. Guards: a grant to a waiter whose deadline has claimed it (the
 * token is lost, and the waiter is readied twice: a crash, or the plain one
 * waits forever).
 */
TEST(sem_release_races_deadline)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct sem_race r;
	int rounds = TEST_SIZE(60, 30), timed_out = 0;
	for (int i = 0; i < rounds; i++) {
		r = (struct sem_race){0};
		ASSERT_EQ(weft_sem_init(&r.sem, 1), 0);
		ASSERT_EQ(weft_sem_acquire(&r.sem, 1), 0);
		r.timed_got = -1;
		r.deadline = weft_now() + 3 * TEST_MS;
		weft_wg_add(&r.done, 2);
		GO(sem_race_timed, &r);
		WAIT_FOR(weft_sem_tryacquire(&r.sem, 0) == EAGAIN || r.timed_got != -1);
		GO(sem_race_plain, &r);
		weft_sleep_until(r.deadline);
		weft_sem_release(&r.sem, 1);
		join(&r.done, "waiters around a release at the deadline");
		ASSERT_EQ(r.plain_got, 1);
		timed_out += r.timed_got == ETIMEDOUT;
		weft_sem fresh = WEFT_SEM_INIT(1);
		ASSERT_EQ(memcmp(&r.sem, &fresh, sizeof fresh), 0);
	}
	printf("    %d rounds, %d timed out\n", rounds, timed_out);
}

struct sem_stress {
	weft_sem sem;
	int64_t cap;
	atomic_long in_use; /* tokens between acquire and release */
	atomic_long over;   /* in_use seen above cap */
	atomic_long timeouts, busy;
	atomic_uint ids;
	int ops;
	int64_t timeout_min; /* acquire_until waits timeout_min + 0 .. 200 us */
	weft_wg done;
};

static void sem_stress_worker(void *arg)
{
	struct sem_stress *s = arg;
	uint32_t seed = 2246822519u * (atomic_fetch_add(&s->ids, 1) + 1);
	for (int i = 0; i < s->ops; i++) {
		uint32_t r = test_rand32(&seed);
		int64_t n = 1 + (int64_t)(r % (uint32_t)s->cap);
		int err;
		switch ((r >> 8) % 8) {
		case 0:
			err = weft_sem_tryacquire(&s->sem, n);
			if (err)
				atomic_fetch_add(&s->busy, 1);
			break;
		case 1:
		case 2:
			err = weft_sem_acquire_until(&s->sem, n,
			                             weft_now() + s->timeout_min +
			                                     (r >> 16) % 200 * WEFT_MICROSECOND);
			if (err)
				atomic_fetch_add(&s->timeouts, 1);
			break;
		default: err = weft_sem_acquire(&s->sem, n);
		}
		if (err)
			continue;
		if (atomic_fetch_add(&s->in_use, n) + n > s->cap)
			atomic_fetch_add(&s->over, 1);
		if (r & 0x10000000)
			weft_yield();
		atomic_fetch_sub(&s->in_use, n);
		weft_sem_release(&s->sem, n);
	}
	weft_wg_done(&s->done);
}

/*
 * 24 goroutines and a pthread at 2 Ps acquire random weights (1 to the
 * capacity of 10), by acquire, tryacquire and acquire_until, hold them
 * across an occasional yield, and release: the tokens in use never exceed
 * 10, and afterwards all 10 are free and the semaphore is as new. Guards:
 * over-granting (a serve that does not count what it hands out), tokens
 * lost (the final tryacquire fails, or a hang as capacity shrinks), a
 * claimable waiter mishandled by serve.
 * The acquire_until deadlines are 0 to 200 us away, so that many time out,
 * racing the grants, some already past when the waiter would park (the bug
 * of past_deadline_waiter_vs_waker).
 */
TEST(sem_stress_never_over_capacity)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { G = 24 };
	static struct sem_stress s;
	s = (struct sem_stress){0};
	s.cap = 10;
	ASSERT_EQ(weft_sem_init(&s.sem, s.cap), 0);
	s.ops = TEST_SIZE(3000, 600);
	s.timeout_min = 0;
	weft_wg_add(&s.done, G + 1);
	pthread_t th;
	test_start_thread(&th, sem_stress_worker, &s);
	for (int i = 0; i < G; i++)
		GO(sem_stress_worker, &s);
	join(&s.done, "semaphore workers");
	test_join_thread(th);
	printf("    %ld timeouts, %ld busy\n", atomic_load(&s.timeouts), atomic_load(&s.busy));
	ASSERT_EQ(atomic_load(&s.over), 0);
	ASSERT_EQ(atomic_load(&s.in_use), 0);
	weft_sem fresh = WEFT_SEM_INIT(10);
	ASSERT_EQ(memcmp(&s.sem, &fresh, sizeof fresh), 0);
	ASSERT_EQ(weft_sem_tryacquire(&s.sem, s.cap), 0);
	weft_sem_release(&s.sem, s.cap);
}

/* ---------------------------------------------------------------- WaitGroup */

struct wg_round {
	weft_wg wg;
	atomic_int done_called; /* set just before the Done */
	atomic_int stray;       /* a wait returned 0 before the Done */
	atomic_int timeouts, woken, plain_out;
	int64_t after; /* deadline: now + after */
	weft_wg waiters;
};

static void wg_timed_waiter(void *arg)
{
	struct wg_round *r = arg;
	int64_t deadline = weft_now() + r->after;
	int err = weft_wg_wait_until(&r->wg, deadline);
	if (err == ETIMEDOUT) {
		atomic_fetch_add(&r->timeouts, 1);
		if (weft_now() < deadline)
			atomic_fetch_add(&r->stray, 1);
	} else {
		atomic_fetch_add(&r->woken, 1);
		if (!atomic_load(&r->done_called))
			atomic_fetch_add(&r->stray, 1);
	}
	weft_wg_done(&r->waiters);
}

static void wg_plain_waiter(void *arg)
{
	struct wg_round *r = arg;
	weft_wg_wait(&r->wg);
	if (!atomic_load(&r->done_called))
		atomic_fetch_add(&r->stray, 1);
	atomic_fetch_add(&r->plain_out, 1);
	weft_wg_done(&r->waiters);
}

enum { WG_TIMED = 7 }; /* timed waiters per round: 6 goroutines, a pthread */

/* One round: add(1); the timed waiters (deadline `after`) and a plain
 * goroutine waiter; the Done comes after `done_after`, or, when that is 0,
 * once every timed waiter has timed out. */
static void wg_round_run(struct wg_round *r, int64_t after, int64_t done_after)
{
	r->after = after;
	atomic_store(&r->done_called, 0);
	int timeouts = atomic_load(&r->timeouts);
	int plain_out = atomic_load(&r->plain_out);
	weft_wg_add(&r->wg, 1);
	weft_wg_add(&r->waiters, WG_TIMED + 1);
	pthread_t th;
	test_start_thread(&th, wg_timed_waiter, r);
	for (int i = 0; i < WG_TIMED - 1; i++)
		GO(wg_timed_waiter, r);
	GO(wg_plain_waiter, r);
	if (done_after) {
		weft_sleep(done_after);
	} else {
		WAIT_FOR(atomic_load(&r->timeouts) == timeouts + WG_TIMED);
		weft_sleep(TEST_MS);
		ASSERT_EQ(atomic_load(&r->plain_out), plain_out);
	}
	atomic_store(&r->done_called, 1);
	weft_wg_done(&r->wg);
	join(&r->waiters, "WaitGroup waiters");
	test_join_thread(th);
}

/*
 * weft_wg_wait_until on a counter of 1: the waiters (6 goroutines and a
 * pthread, deadlines of 1 ms) time out, never early, while a plain waiter
 * stays (it has not returned 1 ms after the last timeout); after the Done the plain one returns, and the WaitGroup is back to
 * its zero value (its packed waiter count included). 20 rounds on the same
 * WaitGroup; then rounds where the deadline and the Done race (each waiter
 * returns 0 or ETIMEDOUT, nobody returns 0 before the Done), still back to
 * zero every time; then a wait with no deadline and a Done from another
 * goroutine still work. Guards: a waiter that gives up and leaves its count
 * behind (or is subtracted twice), a waker that drops waiters that timed
 * out without subtracting them, stray wake-ups, a timed wait that returns 0
 * while the counter is 1.
 */
TEST(wg_wait_until_leaves_wg_consistent)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct wg_round r;
	r = (struct wg_round){0};
	int rounds = TEST_SIZE(20, 8);
	for (int i = 0; i < rounds; i++) {
		wg_round_run(&r, TEST_MS, 0);
		ASSERT(all_zero(&r.wg, sizeof r.wg));
	}
	ASSERT_EQ(atomic_load(&r.stray), 0);
	ASSERT_EQ(atomic_load(&r.woken), 0);
	ASSERT_EQ(atomic_load(&r.timeouts), WG_TIMED * rounds);
	ASSERT_EQ(atomic_load(&r.plain_out), rounds);

	int races = TEST_SIZE(60, 20);
	for (int i = 0; i < races; i++) {
		wg_round_run(&r, 2 * TEST_MS, (1 + i % 3) * TEST_MS);
		ASSERT(all_zero(&r.wg, sizeof r.wg));
	}
	ASSERT_EQ(atomic_load(&r.stray), 0);
	ASSERT_EQ(atomic_load(&r.woken) + atomic_load(&r.timeouts), WG_TIMED * (rounds + races));
	printf("    racing rounds: %d woken, %d timed out\n", atomic_load(&r.woken),
	       atomic_load(&r.timeouts) - WG_TIMED * rounds);

	weft_wg_add(&r.wg, 1);
	weft_wg_add(&r.waiters, 1);
	atomic_store(&r.done_called, 0);
	GO(wg_plain_waiter, &r);
	WAIT_FOR(parked("semacquire") >= 1);
	atomic_store(&r.done_called, 1);
	weft_wg_done(&r.wg);
	join(&r.waiters, "plain waiter");
	ASSERT_EQ(atomic_load(&r.stray), 0);
	ASSERT(all_zero(&r.wg, sizeof r.wg));
}

static void done_after_10ms(void *arg)
{
	weft_sleep(10 * TEST_MS);
	weft_wg_done(arg);
}

/*
 * weft_wg_wait_until returns ETIMEDOUT while the counter is above zero and
 * 0 once the last Done comes (from a goroutine, 10 ms later, well before the
 * 5 s deadline); on a zero counter it returns 0 at once. Guards: a timed
 * wait that ignores the Done, or returns 0 early.
 */
TEST(wg_wait_until_basic)
{
	weft_wg wg = WEFT_WG_INIT;
	ASSERT_EQ(weft_wg_wait_until(&wg, weft_now() + bound_ns()), 0);
	weft_wg_add(&wg, 2);
	int64_t deadline = weft_now() + 20 * TEST_MS;
	ASSERT_EQ(weft_wg_wait_until(&wg, deadline), ETIMEDOUT);
	ASSERT_GE(weft_now(), deadline);
	weft_wg_done(&wg);
	ASSERT_EQ(weft_wg_wait_until(&wg, weft_now() + 10 * TEST_MS), ETIMEDOUT);
	GO(done_after_10ms, &wg);
	deadline = weft_now() + bound_ns();
	ASSERT_EQ(weft_wg_wait_until(&wg, deadline), 0);
	ASSERT_LT(weft_now(), deadline);
	ASSERT(all_zero(&wg, sizeof wg));
}

/* ---------------------------------------------------------------- known bugs */

struct past_race {
	weft_sem sem; /* capacity 1 */
	weft_mutex mu;
	weft_cond c;
	weft_wg wg; /* counter toggled 0 <-> 1 by the waker */
	atomic_int stop;
	weft_wg done;
};

/* The waker: keeps releasing, signalling and completing. */
static void past_waker(void *arg)
{
	struct past_race *r = arg;
	while (!atomic_load(&r->stop)) {
		weft_sem_acquire(&r->sem, 1);
		weft_sem_release(&r->sem, 1);
		weft_cond_signal(&r->c);
		weft_wg_add(&r->wg, 1);
		weft_wg_done(&r->wg);
	}
	weft_wg_done(&r->done);
}

/*
 * Regression (src/runtime/park.c, weft__waitq_block_until, the early exit at
 * "if (err) {", fixed): a waiter whose deadline has
 * already passed when it is about to park (or whose context has fired) is
 * in its queue, unclaimed (claim 0), when block_until unlocks the queue and
 * returns ETIMEDOUT; its caller (sem.c, cond.c, wg.c) only unlinks it after
 * locking the queue again. In that window a waker (weft_sem_release's
 * serve, weft_cond_signal, the WaitGroup's last Done) takes it, wins the
 * claim, does its bookkeeping and wakes it: weft__ready() on a goroutine
 * that is still running (another M then switches to it from a stale saved
 * stack pointer: SIGSEGV in weft__switch), or, for a foreign thread, a
 * futex store into a stack frame that may be gone. The Semaphore also loses
 * the tokens granted to the waiter that returns ETIMEDOUT, and the Cond the
 * signal. Claiming the waiter before that unlock (w->claim = 1; nobody else
 * can have claimed it yet) makes the wakers skip it and closes the window
 * (checked: this test and the chaos runs of sem_stress_never_over_capacity
 * pass with that one line). Here: a goroutine loops on the three _until
 * calls with a deadline already past while another keeps releasing,
 * signalling and completing. Red without the fix in milliseconds.
 */
TEST(past_deadline_waiter_vs_waker)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct past_race r;
	r = (struct past_race){0};
	ASSERT_EQ(weft_sem_init(&r.sem, 1), 0);
	weft_wg_add(&r.done, 1);
	GO(past_waker, &r);
	int n = TEST_SIZE(100000, 20000);
	for (int i = 0; i < n; i++) {
		int64_t past = weft_now() - 1;
		if (weft_sem_acquire_until(&r.sem, 1, past) == 0)
			weft_sem_release(&r.sem, 1);
		weft_mutex_lock(&r.mu);
		ASSERT_EQ(weft_cond_wait_until(&r.c, &r.mu, past), ETIMEDOUT);
		weft_mutex_unlock(&r.mu);
		weft_wg_wait_until(&r.wg, past);
	}
	atomic_store(&r.stop, 1);
	join(&r.done, "waker");
	ASSERT_EQ(weft_sem_tryacquire(&r.sem, 1), 0); /* no token lost */
	weft_sem_release(&r.sem, 1);
	ASSERT(all_zero(&r.wg, sizeof r.wg));
}
