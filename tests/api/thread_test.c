/* SPDX-License-Identifier: MIT */
/*
 * thread_test.c - goroutines and OS threads: foreign pthreads using the
 * blocking API (sleep, mutex, WaitGroup), weft_lock_thread pinning, a pinned
 * goroutine taking its thread with it when it ends, and errno kept per
 * goroutine across switches, including switches that move a goroutine to
 * another thread.
 */
#include "test.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * errno through functions the compiler may not inline or analyse: glibc
 * declares __errno_location() const, so within one function the compiler may
 * keep using the address computed before a switch (the TLS hazard weft.h
 * documents). Each call here computes it afresh, on the current thread.
 */
#if defined(__clang__)
#define NOIPA __attribute__((noinline, optnone))
#else
#define NOIPA __attribute__((noinline, noipa))
#endif

static NOIPA int errno_get(void)
{
	return errno;
}

static NOIPA void errno_set(int v)
{
	errno = v;
}

/* ---------------------------------------------------------------- foreign */

struct foreign_ctx {
	weft_mutex mu;
	weft_wg goroutines_done; /* completed by goroutines after ~30 ms */
	weft_wg threads_done;    /* completed by the pthreads */
	atomic_int mu_held;
	int64_t sleep_ns[4];
	int64_t lock_wait_ns[4];
	int got_lock_while_held[4];
};

struct foreign_arg {
	struct foreign_ctx *c;
	int i;
};

static void *foreign_user(void *arg)
{
	struct foreign_arg *a = arg;
	struct foreign_ctx *c = a->c;
	ASSERT_EQ(weft_self_id(), 0);

	int64_t t0 = test_now_ns();
	weft_sleep(10 * TEST_MS);
	c->sleep_ns[a->i] = test_now_ns() - t0;

	t0 = test_now_ns();
	weft_mutex_lock(&c->mu);
	c->lock_wait_ns[a->i] = test_now_ns() - t0;
	c->got_lock_while_held[a->i] = atomic_load(&c->mu_held);
	weft_mutex_unlock(&c->mu);

	weft_wg_wait(&c->goroutines_done);
	weft_wg_done(&c->threads_done);
	return NULL;
}

static void hold_mutex_50ms(void *arg)
{
	struct foreign_ctx *c = arg;
	weft_sleep(50 * TEST_MS);
	atomic_store(&c->mu_held, 0);
	weft_mutex_unlock(&c->mu);
	weft_wg_done(&c->goroutines_done);
}

static void finish_later(void *arg)
{
	struct foreign_ctx *c = arg;
	weft_sleep(30 * TEST_MS);
	weft_wg_done(&c->goroutines_done);
}

/*
 * Four pthreads call weft_sleep (10 ms: not early), weft_mutex_lock on a
 * mutex a goroutine holds for 50 ms (they wait, and never get it while it is
 * held), and weft_wg_wait on a WaitGroup goroutines complete; the main
 * goroutine then waits for the pthreads on another WaitGroup. Guards: foreign
 * callers treated as goroutines (crash: no G), a foreign lock that does not
 * wait, foreign waiters never woken by goroutines or the reverse.
 */
TEST(foreign_threads_use_blocking_api)
{
	static struct foreign_ctx c;
	c = (struct foreign_ctx){ 0 };
	weft_mutex_lock(&c.mu);
	atomic_store(&c.mu_held, 1);
	weft_wg_add(&c.goroutines_done, 3);
	weft_wg_add(&c.threads_done, 4);
	struct foreign_arg args[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct foreign_arg){ &c, i };
		ASSERT_EQ(pthread_create(&th[i], NULL, foreign_user, &args[i]), 0);
	}
	GO(hold_mutex_50ms, &c);
	GO(finish_later, &c);
	GO(finish_later, &c);
	weft_wg_wait(&c.threads_done);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ASSERT_GE(c.sleep_ns[i], 10 * TEST_MS);
		ASSERT_EQ(c.got_lock_while_held[i], 0);
	}
}

/*
 * On a foreign thread: id 0, P -1, and weft_lock_thread/weft_unlock_thread
 * are no-ops, so an unlock without a lock is not fatal there. Guards:
 * foreign calls treated as goroutine calls.
 */
TEST_THREAD(foreign_thread_identity)
{
	ASSERT_EQ(weft_self_id(), 0);
	ASSERT_EQ(weft_self_proc(), -1);
	weft_lock_thread();
	weft_unlock_thread();
	weft_unlock_thread();
	weft_unlock_thread();
	ASSERT_EQ(weft_self_id(), 0);
}

/* ---------------------------------------------------------------- pinning */

struct pin_ctx {
	atomic_int pinned;      /* 1 while the pinned goroutine holds its lock */
	atomic_int pinned_tid;
	atomic_int stop;
	atomic_long intruders;  /* others seen on the pinned thread */
	atomic_long churn_moves;
	long moves_while_pinned;
	long checks;
	weft_wg churners;
	weft_wg pinned_done;
};

static void pin_churner(void *arg)
{
	struct pin_ctx *c = arg;
	int last = test_gettid();
	for (long i = 0; !atomic_load(&c->stop); i++) {
		int tid = test_gettid();
		if (tid != last)
			atomic_fetch_add(&c->churn_moves, 1);
		last = tid;
		if (atomic_load(&c->pinned) && tid == atomic_load(&c->pinned_tid))
			atomic_fetch_add(&c->intruders, 1);
		if (i % 8 == 0)
			weft_sleep(50000);
		else
			weft_yield();
	}
	weft_wg_done(&c->churners);
}

static void pinned_goroutine(void *arg)
{
	struct pin_ctx *c = arg;
	int iters = TEST_SIZE(3000, 1000);
	weft_lock_thread();
	int tid = test_gettid();
	pthread_t self = pthread_self();
	atomic_store(&c->pinned_tid, tid);
	atomic_store(&c->pinned, 1);
	for (int i = 0; i < iters; i++) {
		if (i == iters / 3)
			weft_lock_thread(); /* nested: one unlock keeps the pin */
		if (i == 2 * iters / 3)
			weft_unlock_thread();
		switch (i % 10) {
		case 0:
			weft_sleep(100000);
			break;
		case 5:
			weft_blocking_begin();
			{
				struct timespec ts = { 0, 100000 };
				nanosleep(&ts, NULL);
			}
			weft_blocking_end();
			break;
		default:
			weft_yield();
		}
		c->checks++;
		if (test_gettid() != tid || !pthread_equal(pthread_self(), self))
			c->moves_while_pinned++;
	}
	atomic_store(&c->pinned, 0);
	weft_unlock_thread();
	weft_wg_done(&c->pinned_done);
}

/*
 * At 2 Ps with 6 goroutines churning (yield, sleep), a goroutine that calls
 * weft_lock_thread stays on its thread (same gettid and pthread_self) across
 * 3,000 yields, sleeps and blocking calls, with a nested lock/unlock in the
 * middle; and no other goroutine ever runs on that thread meanwhile. In chaos
 * mode (which moves goroutines at every switch it can) this is a hard test.
 * Guards: weft_lock_thread as a no-op, a nested unlock that unpins, a pinned
 * thread that runs others while its goroutine sleeps.
 */
TEST(lock_thread_pins)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct pin_ctx c;
	c = (struct pin_ctx){ 0 };
	weft_wg_add(&c.churners, 6);
	for (int i = 0; i < 6; i++)
		GO(pin_churner, &c);
	weft_wg_add(&c.pinned_done, 1);
	GO(pinned_goroutine, &c);
	weft_wg_wait(&c.pinned_done);
	atomic_store(&c.stop, 1);
	weft_wg_wait(&c.churners);
	printf("    %ld checks, churners moved threads %ld times\n", c.checks,
	       atomic_load(&c.churn_moves));
	ASSERT_EQ(c.moves_while_pinned, 0);
	ASSERT_EQ(atomic_load(&c.intruders), 0);
}

static void pinned_then_exit(void *arg)
{
	int *tid = arg;
	weft_lock_thread();
	__atomic_store_n(tid, test_gettid(), __ATOMIC_RELEASE);
	/* Returns still pinned: the thread goes with it. */
}

static void just_done(void *arg)
{
	weft_wg_done(arg);
}

/*
 * A goroutine that ends while pinned takes its thread with it (as in Go):
 * the thread disappears from /proc/self/task, and at 1 P the runtime goes on
 * running goroutines on another thread. Guards: the thread kept and reused
 * (a thread-local state a foreign library left behind would leak into other
 * goroutines), the only P lost with the exiting thread (hang).
 */
TEST(lock_thread_exit_takes_thread)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	int tid = 0;
	weft_wg wg = WEFT_WG_INIT;
	GO(pinned_then_exit, &tid);
	/* Wait until it has run (tid set); it runs next on this P. */
	for (int i = 0; i < 5000 && __atomic_load_n(&tid, __ATOMIC_ACQUIRE) == 0; i++)
		weft_sleep(TEST_MS);
	int t = __atomic_load_n(&tid, __ATOMIC_ACQUIRE);
	ASSERT_NE(t, 0);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d", t);
	int64_t deadline = test_now_ns() + 2000 * TEST_MS * test_slowdown();
	while (access(path, F_OK) == 0 && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	if (access(path, F_OK) == 0)
		FAIL("thread %d of a goroutine that ended pinned still exists", t);
	/* The runtime still runs goroutines at 1 P. */
	weft_wg_add(&wg, 100);
	for (int i = 0; i < 100; i++)
		GO(just_done, &wg);
	weft_wg_wait(&wg);
}

/* Start a goroutine that ends pinned, and wait until its thread is gone. */
static void pinned_exit_once(void)
{
	int tid = 0;
	GO(pinned_then_exit, &tid);
	int64_t deadline = test_now_ns() + 2000 * TEST_MS * test_slowdown();
	while (__atomic_load_n(&tid, __ATOMIC_ACQUIRE) == 0 && test_now_ns() < deadline)
		weft_sleep(TEST_MS / 10);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d", __atomic_load_n(&tid, __ATOMIC_ACQUIRE));
	while (access(path, F_OK) == 0 && test_now_ns() < deadline)
		weft_sleep(TEST_MS / 10);
	if (access(path, F_OK) == 0)
		FAIL("a thread that ended pinned is still there");
}

/* In a child whose malloc has one arena: a new thread may otherwise get
 * an arena of its own, 64 MiB of address space. */
CHILD(pinned_exits_vm)
{
	mallopt(M_ARENA_MAX, 1);
	for (int i = 0; i < 20; i++)
		pinned_exit_once();
	long before = test_vm_size();
	for (int i = 0; i < 100; i++)
		pinned_exit_once();
	printf("VmSize grew by %ld KiB over 100 exits\n", (test_vm_size() - before) / 1024);
	return 0;
}

/*
 * The threads that pinned goroutines take with them give back what weft
 * mapped for them: after a warm-up (the C library caches thread stacks),
 * 100 more such exits grow the address space by less than a quarter of
 * their 64 KiB signal stacks. Guards: the signal stack of an exiting M
 * never unmapped (6.4 MB for 100 exits). Not under the sanitizers, whose
 * own per-thread state is not given back at once, nor under qemu.
 */
TEST(lock_thread_exits_give_memory_back)
{
	if (TEST_ASAN || TEST_TSAN)
		SKIP("the sanitizers keep per-thread state of their own");
	if (test_emulated())
		SKIP("qemu-user maps guest memory its own way");
	test_child c;
	test_child_run("pinned_exits_vm", NULL, 10000, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	printf("    %s", c.out);
	long kib = -1;
	const char *at = strstr(c.out, "VmSize grew by ");
	ASSERT(at != NULL);
	ASSERT_EQ(sscanf(at, "VmSize grew by %ld KiB", &kib), 1);
	ASSERT_LT(kib, 100 * 64 / 4);
	test_child_free(&c);
}

/* ---------------------------------------------------------------- errno */

struct errno_ctx {
	atomic_int stop;
	weft_wg churners;
	weft_wg testers;
	atomic_long moves;
	atomic_long bad;
	atomic_long checks;
};

struct errno_arg {
	struct errno_ctx *c;
	int value;
	int first_bad; /* the wrong value seen, for the message */
	const char *bad_after; /* the call after which it was seen */
};

static void errno_churner(void *arg)
{
	struct errno_ctx *c = arg;
	for (long i = 0; !atomic_load(&c->stop); i++) {
		/* Clobber errno on whatever thread we are on. */
		errno_set(-1 - (int)(i & 0xff));
		if (i % 4 == 0)
			weft_sleep(20000);
		else
			weft_yield();
	}
	weft_wg_done(&c->churners);
}

static void errno_tester(void *arg)
{
	struct errno_arg *a = arg;
	struct errno_ctx *c = a->c;
	long tries = TEST_SIZE(20000, 5000);
	errno_set(a->value);
	int tid = test_gettid();
	static const char *const calls[] = { "weft_yield", "weft_sleep",
					     "weft_blocking_end" };
	for (long i = 0; i < tries && atomic_load(&c->moves) < 2000; i++) {
		switch (i % 3) {
		case 0:
			weft_yield();
			break;
		case 1:
			weft_sleep(20000);
			break;
		case 2:
			/* A blocking call long enough for sysmon to retake the
			 * P: on return the goroutine often resumes elsewhere. */
			weft_blocking_begin();
			{
				struct timespec ts = { 0, 100000 };
				nanosleep(&ts, NULL);
			}
			errno_set(a->value); /* nanosleep may legally touch errno */
			weft_blocking_end();
			break;
		}
		int now = test_gettid();
		if (now != tid) {
			atomic_fetch_add(&c->moves, 1);
			tid = now;
		}
		atomic_fetch_add(&c->checks, 1);
		int e = errno_get();
		if (e != a->value) {
			if (atomic_fetch_add(&c->bad, 1) == 0) {
				a->first_bad = e;
				a->bad_after = calls[i % 3];
			}
			errno_set(a->value);
		}
	}
	weft_wg_done(&c->testers);
}

/*
 * At 2 Ps, 4 goroutines each set errno to their own value (12345 + i) and
 * then yield, sleep and make blocking calls while 4 others clobber errno on
 * every thread; after each switch errno must still hold the goroutine's
 * value, and the goroutines must really have changed threads (gettid) at
 * least once, else the test has shown nothing and fails. Guards: errno not
 * saved/restored per goroutine, or restored to the wrong thread's slot.
 */
TEST(errno_survives_thread_moves)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct errno_ctx c;
	c = (struct errno_ctx){ 0 };
	enum { T = 4, C = 4 };
	struct errno_arg args[T];
	weft_wg_add(&c.churners, C);
	for (int i = 0; i < C; i++)
		GO(errno_churner, &c);
	weft_wg_add(&c.testers, T);
	for (int i = 0; i < T; i++) {
		args[i] = (struct errno_arg){ &c, 12345 + i, 0, NULL };
		GO(errno_tester, &args[i]);
	}
	weft_wg_wait(&c.testers);
	atomic_store(&c.stop, 1);
	weft_wg_wait(&c.churners);
	printf("    %ld checks, %ld thread moves\n", atomic_load(&c.checks),
	       atomic_load(&c.moves));
	for (int i = 0; i < T; i++)
		if (args[i].first_bad)
			FAIL("goroutine with errno %d saw %d after %s",
			     args[i].value, args[i].first_bad, args[i].bad_after);
	ASSERT_EQ(atomic_load(&c.bad), 0);
	if (atomic_load(&c.moves) == 0)
		FAIL("no goroutine ever changed threads in %ld switches: cannot "
		     "show errno surviving a move",
		     atomic_load(&c.checks));
}

struct contended {
	weft_mutex mu;
	weft_wg wg;
	atomic_long bad;
	int first_bad;
	const char *bad_after;
	int iters;
};

static void check_errno(struct contended *c, int value, const char *after)
{
	int e = errno_get();
	if (e != value) {
		if (atomic_fetch_add(&c->bad, 1) == 0) {
			c->first_bad = e;
			c->bad_after = after;
		}
		errno_set(value);
	}
}

static void errno_contender(void *arg)
{
	struct contended *c = arg;
	int value = 20000 + (int)weft_self_id();
	errno_set(value);
	for (int i = 0; i < c->iters; i++) {
		weft_mutex_lock(&c->mu);
		check_errno(c, value, "weft_mutex_lock");
		weft_mutex_unlock(&c->mu);
		check_errno(c, value, "weft_mutex_unlock");
		weft_blocking_begin();
		weft_blocking_end();
		check_errno(c, value, "weft_blocking_begin/end");
		weft_yield();
		check_errno(c, value, "weft_yield");
		weft_wg wg = WEFT_WG_INIT;
		weft_wg_add(&wg, 1);
		weft_wg_done(&wg);
		weft_wg_wait(&wg);
		check_errno(c, value, "weft_wg_add/done/wait");
	}
	weft_wg_done(&c->wg);
}

/*
 * errno is the goroutine's own across every weft call, not only across the
 * switches: 16 goroutines at 2 Ps hammer a mutex, blocking calls, yields and
 * WaitGroups (contending for weft's internal locks) and check errno after
 * each call. Guards: the runtime's own system calls (a futex wait that fails
 * with EAGAIN in a contended internal lock, a futex wake) overwriting the
 * goroutine's errno before it is saved or after it is restored.
 */
TEST(errno_survives_contended_runtime_calls)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct contended c;
	c = (struct contended){ 0 };
	c.iters = TEST_SIZE(20000, 3000);
	enum { G = 16 };
	weft_wg_add(&c.wg, G);
	for (int i = 0; i < G; i++)
		GO(errno_contender, &c);
	weft_wg_wait(&c.wg);
	if (atomic_load(&c.bad))
		FAIL("errno changed %ld times; first: %d (%s) after %s",
		     atomic_load(&c.bad), c.first_bad, strerror(c.first_bad),
		     c.bad_after);
}

struct pingpong {
	int value;
	long bad;
	weft_wg *wg;
};

static void errno_pingpong(void *arg)
{
	struct pingpong *p = arg;
	for (int i = 0; i < 1000; i++) {
		errno_set(p->value);
		weft_yield();
		if (errno_get() != p->value)
			p->bad++;
	}
	weft_wg_done(p->wg);
}

/*
 * At 1 P two goroutines share one thread, each setting its own errno and
 * yielding 1,000 times: each keeps its own value. Guards: errno not part of
 * a goroutine's saved state (each would see the other's value).
 */
TEST(errno_per_goroutine_on_one_thread)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	weft_wg wg = WEFT_WG_INIT;
	struct pingpong a = { 111, 0, &wg }, b = { 222, 0, &wg };
	weft_wg_add(&wg, 2);
	GO(errno_pingpong, &a);
	GO(errno_pingpong, &b);
	weft_wg_wait(&wg);
	ASSERT_EQ(a.bad, 0);
	ASSERT_EQ(b.bad, 0);
}
