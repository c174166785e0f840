/* SPDX-License-Identifier: MIT */
/*
 * fatal_test.c - fatal errors, each in a child process whose stderr and exit
 * status are checked: deadlock detection (it fires on real deadlocks, with
 * exit status 2, and never on a live program waiting on a timer or a foreign
 * thread), stack overflow reports (goroutine id, stack size, creation site,
 * SIGABRT), and API misuse (unlock of an unlocked mutex, a negative
 * WaitGroup counter, weft_unlock_thread without weft_lock_thread, RUnlock or
 * Unlock of an RWMutex not so locked, a Semaphore released more than held,
 * a cancel of a context that is not cancellable).
 */
#include "test.h"

#define expect_fatal(child, msg) EXPECT_FATAL((child), NULL, CHILD_TIMEOUT_MS, (msg))

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEADLOCK_MSG "fatal error: all goroutines are asleep - deadlock!"
/* Deadlock detection takes ~20 ms; a child that has not finished in 2 s
 * (times test_slowdown()) will not. */
#define CHILD_TIMEOUT_MS 2000

static const char *const procs2[] = { "WEFT_PROCS=2", NULL };
static const char *const procs1[] = { "WEFT_PROCS=1", NULL };

/* ---------------------------------------------------------------- deadlocks */

static weft_wg wa, wb, wall;

static void wait_b_then_done_a(void *arg)
{
	(void)arg;
	weft_wg_wait(&wb);
	weft_wg_done(&wa);
	weft_wg_done(&wall);
}

static void wait_a_then_done_b(void *arg)
{
	(void)arg;
	weft_wg_wait(&wa);
	weft_wg_done(&wb);
	weft_wg_done(&wall);
}

static int cycle_main(void *arg)
{
	(void)arg;
	weft_wg_add(&wa, 1);
	weft_wg_add(&wb, 1);
	weft_wg_add(&wall, 2);
	GO(wait_b_then_done_a, NULL);
	GO(wait_a_then_done_b, NULL);
	weft_wg_wait(&wall);
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_wg_cycle)
{
	return weft_main(cycle_main, NULL);
}

static int lonely_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	weft_wg_wait(&wg);
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_main_wg)
{
	return weft_main(lonely_main, NULL);
}

static weft_mutex self_mu;

static void lock_twice(void *arg)
{
	(void)arg;
	weft_mutex_lock(&self_mu);
	weft_mutex_lock(&self_mu);
	weft_wg_done(&wall);
}

static int mutex_main(void *arg)
{
	(void)arg;
	weft_wg_add(&wall, 1);
	GO(lock_twice, NULL);
	weft_wg_wait(&wall);
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_mutex)
{
	return weft_main(mutex_main, NULL);
}

static void sleep_then_block(void *arg)
{
	(void)arg;
	weft_sleep(100 * TEST_MS);
	printf("slept\n");
	fflush(stdout);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	weft_wg_wait(&wg);
}

static int late_main(void *arg)
{
	(void)arg;
	weft_wg_add(&wall, 1);
	GO(sleep_then_block, NULL);
	weft_wg_wait(&wall);
	printf("main returned\n");
	return 0;
}

/* Deadlocked only after a timer fired: detection must run again later. */
CHILD(deadlock_after_timer)
{
	return weft_main(late_main, NULL);
}

static void expect_deadlock(const char *child, const char *const *env)
{
	test_child c;
	test_child_run(child, env, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 2);
	ASSERT_CONTAINS(c.err, DEADLOCK_MSG);
	ASSERT_CONTAINS(c.err, "goroutine ");
	ASSERT_NOT_CONTAINS(c.out, "main returned");
	test_child_free(&c);
}

/*
 * Two goroutines each waiting on the WaitGroup the other would complete, and
 * main waiting for both: the runtime reports the deadlock with a dump and
 * exit status 2, at 1 and at 2 Ps. Guards: no detection (the child hangs
 * until the harness kills it), a wrong message or exit status.
 */
TEST_THREAD(deadlock_detected_wg_cycle)
{
	expect_deadlock("deadlock_wg_cycle", procs1);
	expect_deadlock("deadlock_wg_cycle", procs2);
}

/* Main alone waiting on a WaitGroup nobody will complete. */
TEST_THREAD(deadlock_detected_main_wg)
{
	expect_deadlock("deadlock_main_wg", procs1);
	expect_deadlock("deadlock_main_wg", procs2);
}

/* A goroutine locking a mutex it holds; main waits for it. */
TEST_THREAD(deadlock_detected_mutex)
{
	expect_deadlock("deadlock_mutex", procs2);
}

/* The deadlock appears only after a 100 ms sleep ends, and must not be
 * reported before (the child says "slept" first). Guards: detection that runs
 * only once, or is suppressed forever after a timer existed, or that ignores
 * the pending timer and fires early. */
TEST_THREAD(deadlock_detected_after_timer)
{
	test_child c;
	test_child_run("deadlock_after_timer", procs2, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 2);
	ASSERT_CONTAINS(c.out, "slept");
	ASSERT_CONTAINS(c.err, DEADLOCK_MSG);
	ASSERT_NOT_CONTAINS(c.out, "main returned");
	test_child_free(&c);
}

/* A thread that never calls weft and never wakes anything. */
static void *idle_forever(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* Main alone waiting on a WaitGroup nobody will complete, in a process with
 * one more thread that weft does not know, started before the runtime. */
CHILD(deadlock_host_thread)
{
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, idle_forever, NULL), 0);
	return weft_main(lonely_main, NULL);
}

/*
 * WEFT_DEBUG=hostthreads=N: N threads are not the program's and never wake a
 * goroutine (an emulator's own threads), so with the extra thread declared a
 * deadlock is still detected; the child's WEFT_DEBUG is the run's own (chaos
 * mode, or the hostthreads of an emulated run) plus one host thread (a later
 * entry wins). Undeclared, that thread is a possible waker and nothing is
 * reported (no_deadlock_waiting_on_foreign_thread). Guards: the option not
 * parsed, or not counted by the detector (the child hangs until the harness
 * kills it).
 */
TEST_THREAD(deadlock_detected_with_declared_host_thread)
{
	const char *d = getenv("WEFT_DEBUG");
	char dbg[512];
	snprintf(dbg, sizeof dbg, "WEFT_DEBUG=%s%shostthreads=%d", d && *d ? d : "",
	         d && *d ? "," : "", test_host_threads() + 1);
	const char *const env[] = { "WEFT_PROCS=2", dbg, NULL };
	expect_deadlock("deadlock_host_thread", env);
}

static atomic_int ub_spinning, ub_ending;

/* Holds the only P, without a switch, until the blocker has ended its call
 * and a while after; then waits for ever. */
static void ub_spinner(void *arg)
{
	(void)arg;
	atomic_store(&ub_spinning, 1);
	int64_t end = test_now_ns() + 1000 * TEST_MS * test_slowdown();
	while (!atomic_load(&ub_ending) && test_now_ns() < end)
		test_spin_ns(100000);
	test_spin_ns(20 * TEST_MS);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	weft_wg_wait(&wg);
}

/* Queues the spinner on its P, enters a blocking call (sysmon hands the P
 * to another M, which runs the spinner), and ends the call while the
 * spinner holds that P: no P to return to, so it queues itself. */
static void ub_blocker(void *arg)
{
	(void)arg;
	GO(ub_spinner, NULL);
	weft_blocking_begin();
	int64_t end = test_now_ns() + 1000 * TEST_MS * test_slowdown();
	while (!atomic_load(&ub_spinning) && test_now_ns() < end)
		test_os_sleep_ms(1);
	atomic_store(&ub_ending, 1);
	weft_blocking_end();
	printf("unblocked\n");
	fflush(stdout);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	weft_wg_wait(&wg);
}

static int unblocked_main(void *arg)
{
	(void)arg;
	weft_wg_add(&wall, 1);
	GO(ub_blocker, NULL);
	weft_wg_wait(&wall);
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_after_requeued_blocking_call)
{
	return weft_main(unblocked_main, NULL);
}

/*
 * At 1 P a goroutine ends a blocking call whose P sysmon has handed to
 * another goroutine meanwhile, so it goes through the global queue; then
 * every goroutine waits for ever: the deadlock is reported (the call no
 * longer counts as under way). Guards: a call ended that way that stays
 * counted as blocking (the detector waits for it for ever: the child hangs
 * until the harness kills it).
 */
TEST_THREAD(deadlock_detected_after_requeued_blocking_call)
{
	test_child c;
	test_child_run("deadlock_after_requeued_blocking_call", procs1, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 2);
	ASSERT_CONTAINS(c.out, "unblocked");
	ASSERT_CONTAINS(c.err, DEADLOCK_MSG);
	ASSERT_NOT_CONTAINS(c.out, "main returned");
	test_child_free(&c);
}

/* -------------------------------------------------------- live programs */

static int sleepy_main(void *arg)
{
	(void)arg;
	weft_sleep(200 * TEST_MS);
	printf("main returned\n");
	return 0;
}

/* The only goroutine sleeps 200 ms, then finishes. */
CHILD(live_only_sleeper)
{
	return weft_main(sleepy_main, NULL);
}

static void sleep_200_done(void *arg)
{
	weft_sleep(200 * TEST_MS);
	weft_wg_done(arg);
}

static int wait_sleeper_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	GO(sleep_200_done, &wg);
	weft_wg_wait(&wg);
	printf("main returned\n");
	return 0;
}

/* Main waits on a WaitGroup that a goroutine completes after a 200 ms sleep:
 * every goroutine is blocked, but a timer is pending. */
CHILD(live_wait_on_sleeper)
{
	return weft_main(wait_sleeper_main, NULL);
}

static weft_wg foreign_wg; /* completed by a pthread after 200 ms */

static void *done_after_200ms(void *arg)
{
	(void)arg;
	test_os_sleep_ms(200);
	weft_wg_done(&foreign_wg);
	return NULL;
}

static void wait_foreign(void *arg)
{
	weft_wg_wait(&foreign_wg);
	weft_wg_done(arg);
}

static int foreign_main(void *arg)
{
	bool start_thread_here = arg != NULL;
	pthread_t th;
	if (start_thread_here)
		ASSERT_EQ(pthread_create(&th, NULL, done_after_200ms, NULL), 0);
	weft_wg all = WEFT_WG_INIT;
	weft_wg_add(&all, 3);
	for (int i = 0; i < 3; i++)
		GO(wait_foreign, &all);
	weft_wg_wait(&all);
	if (start_thread_here)
		pthread_join(th, NULL);
	printf("main returned\n");
	return 0;
}

/* Goroutines wait on a WaitGroup that a pthread, started before the runtime,
 * completes after 200 ms (the pthread never called weft before). */
CHILD(live_foreign_thread_before)
{
	weft_wg_add(&foreign_wg, 1);
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, done_after_200ms, NULL), 0);
	int r = weft_main(foreign_main, NULL);
	pthread_join(th, NULL);
	return r;
}

/* The same with the pthread started by the main goroutine. */
CHILD(live_foreign_thread_inside)
{
	weft_wg_add(&foreign_wg, 1);
	return weft_main(foreign_main, (void *)1);
}

static void expect_live(const char *child, const char *const *env)
{
	test_child c;
	test_child_run(child, env, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_NOT_CONTAINS(c.err, "deadlock");
	ASSERT_NOT_CONTAINS(c.err, "fatal error");
	ASSERT_CONTAINS(c.out, "main returned");
	test_child_free(&c);
}

/*
 * No deadlock report for a program that is only waiting on a timer. Guards:
 * detection that ignores pending timers (a false "deadlock" after a sleep).
 */
TEST_THREAD(no_deadlock_waiting_on_timer)
{
	expect_live("live_only_sleeper", procs1);
	expect_live("live_only_sleeper", procs2);
	expect_live("live_wait_on_sleeper", procs1);
	expect_live("live_wait_on_sleeper", procs2);
}

/*
 * No deadlock report while a foreign thread may still wake the goroutines:
 * a pthread completes their WaitGroup after 200 ms. Guards: detection that
 * counts only goroutines and forgets that any other thread can call
 * weft_wg_done.
 */
TEST_THREAD(no_deadlock_waiting_on_foreign_thread)
{
	expect_live("live_foreign_thread_before", procs2);
	expect_live("live_foreign_thread_inside", procs1);
}

/* ---------------------------------------------------------------- overflow */

/* Keeps the frame alive and the call out of tail position. */
static __attribute__((noinline)) void keep(volatile char *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static volatile int never; /* stays 0: unbounded, as far as the compiler knows */

static __attribute__((noinline)) int recurse(int n)
{
	volatile char buf[256];
	if (never)
		return 0;
	buf[0] = (char)n;
	keep(buf);
	int r = recurse(n + 1);
	keep(buf);
	return r + buf[0];
}

static void overflower(void *arg)
{
	(void)arg;
	printf("gid=%llu\n", (unsigned long long)weft_self_id());
	fflush(stdout);
	recurse(0);
}

static int overflow_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_go_options o = { .stack_size = 64 * 1024, .name = "deep" };
	weft_wg_add(&wg, 1);
	printf("line=%d\n", __LINE__ + 2);
	fflush(stdout);
	ASSERT_EQ(weft_go_opts(overflower, NULL, &o), 0);
	weft_wg_wait(&wg);
	return 0;
}

CHILD(stack_overflow)
{
	return weft_main(overflow_main, NULL);
}

/* The goroutine id and creation line a child printed ("gid=", "line="). */
static void child_gid_and_line(const test_child *c, unsigned long long *gid, int *line)
{
	const char *g = strstr(c->out, "gid=");
	const char *l = strstr(c->out, "line=");
	ASSERT(g && sscanf(g, "gid=%llu", gid) == 1);
	ASSERT(l && sscanf(l, "line=%d", line) == 1);
}

/*
 * A goroutine with a 64 KiB stack recursing without bound: stderr says
 * "stack overflow" with the goroutine's id, "64 KiB" and the file:line that
 * created it, and the process dies by SIGABRT (not a bare SIGSEGV). Guards:
 * no guard page (memory corruption or a plain segfault), no alternate signal
 * stack for the handler (the handler itself faults: SIGSEGV), wrong id or
 * size or site in the message.
 */
TEST_THREAD(stack_overflow_reported)
{
	test_child c;
	test_child_run("stack_overflow", NULL, CHILD_TIMEOUT_MS, &c);
	unsigned long long gid;
	int line;
	child_gid_and_line(&c, &gid, &line);
	ASSERT_CHILD_SIGNAL(&c, SIGABRT);
	char want[128];
	ASSERT_CONTAINS(c.err, "stack overflow");
	snprintf(want, sizeof want, "goroutine %llu ", gid);
	ASSERT_CONTAINS(c.err, want);
	ASSERT_CONTAINS(c.err, "64 KiB");
	snprintf(want, sizeof want, "fatal_test.c:%d", line);
	ASSERT_CONTAINS(c.err, want);
	test_child_free(&c);
}

/* ---------------------------------------------------------------- faults */

static int fault_kind; /* which fault the faulting goroutine makes */
static int fault_line; /* where it was created */

static void faulter(void *arg)
{
	(void)arg;
	printf("gid=%llu\n", (unsigned long long)weft_self_id());
	fflush(stdout);
	if (fault_kind == 0) {
		void (*volatile fn)(void) = NULL;
		fn(); /* a call through a null pointer */
	} else if (fault_kind == 1) {
		volatile int num = 7, zero = 0; /* 1 / x compiles to no division */
		printf("%d\n", num / zero);
	} else {
		raise(SIGSEGV); /* sent, not a fault: it will not happen again */
	}
	printf("survived\n");
}

static int fault_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_go_options o = {.name = "faulty"};
	weft_wg_add(&wg, 1);
	fault_line = __LINE__ + 1;
	ASSERT_EQ(weft_go_opts(faulter, NULL, &o), 0);
	printf("line=%d\n", fault_line);
	fflush(stdout);
	weft_wg_wait(&wg);
	return 0;
}

CHILD(fault_null_call)
{
	fault_kind = 0;
	return weft_main(fault_main, NULL);
}

CHILD(fault_divide_by_zero)
{
	fault_kind = 1;
	return weft_main(fault_main, NULL);
}

CHILD(fault_raised)
{
	fault_kind = 2;
	return weft_main(fault_main, NULL);
}

/*
 * A goroutine that faults (a call through a null pointer, an integer
 * division by zero on x86-64) or raises SIGSEGV itself: the process dies of that
 * signal (its core dump kept), and, with no handler of anyone else's (no
 * sanitizer), stderr first says which signal, which goroutine (id and
 * name), a backtrace, and the file:line that created it, as Go's crash
 * report does. Guards: a bare "Segmentation fault" with no word of the
 * goroutine; a raised SIGSEGV handed to the default action without being
 * sent again (the goroutine went on: "survived").
 */
TEST_THREAD(faults_name_the_goroutine)
{
	static const struct {
		const char *child;
		int sig;
		const char *words;
	} cases[] = {
		{"fault_null_call", SIGSEGV, "unexpected signal SIGSEGV"},
#if defined(__x86_64__) /* arm64's integer division by zero gives 0 */
		{"fault_divide_by_zero", SIGFPE, "unexpected signal SIGFPE"},
#endif
		{"fault_raised", SIGSEGV, "unexpected signal SIGSEGV"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		test_child c;
		test_child_run(cases[i].child, NULL, CHILD_TIMEOUT_MS, &c);
		if (strstr(c.out, "survived"))
			FAIL("%s: the goroutine went on after the signal", cases[i].child);
		if (TEST_ASAN || TEST_TSAN) { /* the sanitizer reports, its way */
			ASSERT(!c.exited || c.exit_code != 0);
			test_child_free(&c);
			continue;
		}
		ASSERT_CHILD_SIGNAL(&c, cases[i].sig);
		unsigned long long gid;
		int line;
		child_gid_and_line(&c, &gid, &line);
		char want[128];
		ASSERT_CONTAINS(c.err, cases[i].words);
		snprintf(want, sizeof want, "in goroutine %llu \"faulty\":", gid);
		ASSERT_CONTAINS(c.err, want);
		snprintf(want, sizeof want, "created at %s:%d", __FILE__, line);
		ASSERT_CONTAINS(c.err, want);
		test_child_free(&c);
	}
}

/* A program that ignores a fault signal (SIG_IGN, its own or inherited
 * across exec) before weft starts, and then gets one sent by kill: it goes
 * on, as it would without weft. */
static int ignored_sig;

static int ignored_sent_main(void *arg)
{
	(void)arg;
	kill(getpid(), ignored_sig);
	weft_sleep(20 * WEFT_MILLISECOND);
	printf("survived\n");
	return 0;
}

CHILD(ignored_fpe_sent)
{
	ignored_sig = SIGFPE;
	signal(SIGFPE, SIG_IGN);
	return weft_main(ignored_sent_main, NULL);
}

/* Ignored with SA_SIGINFO among the flags: the handler's value is still
 * SIG_IGN (sa_sigaction reads it as the address 1). */
CHILD(ignored_fpe_siginfo_sent)
{
	ignored_sig = SIGFPE;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGFPE, &sa, NULL);
	return weft_main(ignored_sent_main, NULL);
}

CHILD(ignored_segv_sent)
{
	ignored_sig = SIGSEGV;
	signal(SIGSEGV, SIG_IGN);
	return weft_main(ignored_sent_main, NULL);
}

/*
 * A fault signal the program ignores, sent by kill (to whichever thread),
 * is ignored: weft's fault handler took SIG_IGN for the default action,
 * restored that and sent the signal again, so the process died of it (and
 * of SIGFPE and SIGILL, which weft did not handle before, at all); with
 * SA_SIGINFO among the ignoring action's flags it called the address 1.
 */
TEST_THREAD(ignored_fault_signal_sent_is_ignored)
{
	const char *children[] = {"ignored_fpe_sent", "ignored_fpe_siginfo_sent",
				  "ignored_segv_sent"};
	for (size_t i = 0; i < sizeof children / sizeof children[0]; i++) {
		test_child c;
		test_child_run(children[i], NULL, CHILD_TIMEOUT_MS, &c);
		if (TEST_ASAN || TEST_TSAN) { /* a sanitizer's handler may take it */
			test_child_free(&c);
			continue;
		}
		ASSERT_CHILD_EXIT(&c, 0);
		ASSERT_CONTAINS(c.out, "survived");
		test_child_free(&c);
	}
}

/* ---------------------------------------------------------------- misuse */

static int unlock_unlocked_main(void *arg)
{
	(void)arg;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_mutex_lock(&m);
	weft_mutex_unlock(&m);
	weft_mutex_unlock(&m);
	printf("survived\n");
	return 0;
}

CHILD(unlock_unlocked_goroutine)
{
	return weft_main(unlock_unlocked_main, NULL);
}

CHILD(unlock_unlocked_foreign)
{
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_mutex_unlock(&m);
	printf("survived\n");
	return 0;
}

static int negative_wg_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	weft_wg_done(&wg);
	weft_wg_done(&wg);
	printf("survived\n");
	return 0;
}

CHILD(negative_wg_goroutine)
{
	return weft_main(negative_wg_main, NULL);
}

CHILD(negative_wg_foreign)
{
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, -1);
	printf("survived\n");
	return 0;
}

static int unlock_thread_main(void *arg)
{
	int locks = (int)(intptr_t)arg;
	for (int i = 0; i < locks; i++)
		weft_lock_thread();
	for (int i = 0; i <= locks; i++)
		weft_unlock_thread();
	printf("survived\n");
	return 0;
}

CHILD(unlock_thread_never_locked)
{
	return weft_main(unlock_thread_main, (void *)0);
}

CHILD(unlock_thread_once_too_often)
{
	return weft_main(unlock_thread_main, (void *)2);
}

/* RWMutex misuse. The arg says which: RUnlock of a fresh one, one RUnlock
 * too many, RUnlock while write-locked; Unlock of a fresh one, one Unlock
 * too many, Unlock while only read-locked. */
enum rw_misuse {
	RW_RUNLOCK_FRESH,
	RW_RUNLOCK_TWICE,
	RW_RUNLOCK_WRITE_LOCKED,
	RW_UNLOCK_FRESH,
	RW_UNLOCK_TWICE,
	RW_UNLOCK_READ_LOCKED,
};

static int rw_misuse(void *arg)
{
	weft_rwmutex rw = WEFT_RWMUTEX_INIT;
	switch ((enum rw_misuse)(intptr_t)arg) {
	case RW_RUNLOCK_FRESH: weft_rwmutex_runlock(&rw); break;
	case RW_RUNLOCK_TWICE:
		weft_rwmutex_rlock(&rw);
		weft_rwmutex_rlock(&rw);
		weft_rwmutex_runlock(&rw);
		weft_rwmutex_runlock(&rw);
		weft_rwmutex_runlock(&rw);
		break;
	case RW_RUNLOCK_WRITE_LOCKED:
		weft_rwmutex_lock(&rw);
		weft_rwmutex_runlock(&rw);
		break;
	case RW_UNLOCK_FRESH: weft_rwmutex_unlock(&rw); break;
	case RW_UNLOCK_TWICE:
		weft_rwmutex_lock(&rw);
		weft_rwmutex_unlock(&rw);
		weft_rwmutex_unlock(&rw);
		break;
	case RW_UNLOCK_READ_LOCKED:
		weft_rwmutex_rlock(&rw);
		weft_rwmutex_unlock(&rw);
		break;
	}
	printf("survived\n");
	return 0;
}

CHILD(runlock_fresh_goroutine)
{
	return weft_main(rw_misuse, (void *)RW_RUNLOCK_FRESH);
}

CHILD(runlock_twice_foreign)
{
	return rw_misuse((void *)RW_RUNLOCK_TWICE);
}

CHILD(runlock_write_locked_goroutine)
{
	return weft_main(rw_misuse, (void *)RW_RUNLOCK_WRITE_LOCKED);
}

CHILD(rw_unlock_fresh_foreign)
{
	return rw_misuse((void *)RW_UNLOCK_FRESH);
}

CHILD(rw_unlock_twice_goroutine)
{
	return weft_main(rw_misuse, (void *)RW_UNLOCK_TWICE);
}

CHILD(rw_unlock_read_locked_goroutine)
{
	return weft_main(rw_misuse, (void *)RW_UNLOCK_READ_LOCKED);
}

static int sem_over_release(void *arg)
{
	(void)arg;
	weft_sem s = WEFT_SEM_INIT(5);
	weft_sem_acquire(&s, 2);
	weft_sem_release(&s, 1);
	weft_sem_release(&s, 2);
	printf("survived\n");
	return 0;
}

CHILD(sem_over_release_goroutine)
{
	return weft_main(sem_over_release, NULL);
}

CHILD(sem_over_release_foreign)
{
	return sem_over_release(NULL);
}

/* Context misuse: cancelling what cannot be cancelled. The arg says which:
 * the background, a value node over the background, a value node over a
 * cancellable context (it is still not cancellable itself). */
enum ctx_misuse {
	CTX_CANCEL_BACKGROUND,
	CTX_CANCEL_VALUE,
	CTX_CANCEL_CAUSE_VALUE_OVER_CANCELLABLE,
	CTX_CANCEL_DETACHED,
};

static const int ctx_key = 0;

static int ctx_misuse(void *arg)
{
	weft_ctx *c = NULL, *v = NULL;
	switch ((enum ctx_misuse)(intptr_t)arg) {
	case CTX_CANCEL_BACKGROUND: weft_ctx_cancel(weft_ctx_background()); break;
	case CTX_CANCEL_VALUE:
		ASSERT_EQ(weft_ctx_with_value(weft_ctx_background(), &ctx_key, NULL, &v), 0);
		weft_ctx_cancel(v);
		break;
	case CTX_CANCEL_CAUSE_VALUE_OVER_CANCELLABLE:
		ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &c), 0);
		ASSERT_EQ(weft_ctx_with_value(c, &ctx_key, NULL, &v), 0);
		weft_ctx_cancel_cause(v, EIO);
		break;
	case CTX_CANCEL_DETACHED:
		ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &c), 0);
		ASSERT_EQ(weft_ctx_without_cancel(c, &v), 0);
		weft_ctx_cancel(v);
		break;
	}
	printf("survived\n");
	weft_ctx_release(v);
	weft_ctx_release(c);
	return 0;
}

CHILD(cancel_background_goroutine)
{
	return weft_main(ctx_misuse, (void *)CTX_CANCEL_BACKGROUND);
}

CHILD(cancel_background_foreign)
{
	return ctx_misuse((void *)CTX_CANCEL_BACKGROUND);
}

CHILD(cancel_value_goroutine)
{
	return weft_main(ctx_misuse, (void *)CTX_CANCEL_VALUE);
}

CHILD(cancel_cause_value_over_cancellable_foreign)
{
	return ctx_misuse((void *)CTX_CANCEL_CAUSE_VALUE_OVER_CANCELLABLE);
}

CHILD(cancel_detached_goroutine)
{
	return weft_main(ctx_misuse, (void *)CTX_CANCEL_DETACHED);
}

static void fatalf_go(void *arg)
{
	weft_fatalf("mylib: %s %d of %d", (const char *)arg, 3, 7);
}

static int fatalf_main(void *arg)
{
	(void)arg;
	GO(fatalf_go, "bad thing");
	weft_sleep(10000 * TEST_MS);
	printf("survived\n");
	return 0;
}

CHILD(fatalf_goroutine)
{
	return weft_main(fatalf_main, NULL);
}

/* Before weft has started: a plain program's first weft call. */
CHILD(fatalf_unstarted)
{
	weft_fatalf("mylib: %s", "no runtime yet");
	printf("survived\n");
	return 0;
}

/*
 * Unlocking an unlocked mutex is fatal (Go's message), from a goroutine and
 * from a foreign thread. Guards: a silent unlock that corrupts the state
 * (the child prints "survived").
 */
TEST_THREAD(fatal_unlock_of_unlocked_mutex)
{
	expect_fatal("unlock_unlocked_goroutine",
		     "fatal error: sync: unlock of unlocked mutex");
	expect_fatal("unlock_unlocked_foreign",
		     "fatal error: sync: unlock of unlocked mutex");
}

/*
 * weft_fatalf, the public form of weft's fatal error: the formatted message
 * after "fatal error: " on stderr and SIGABRT, from a goroutine (the other
 * goroutine's sleep never ends it) and before the runtime has started.
 * Guards: a format that is not applied, a return (the child prints
 * "survived"), an exit instead of abort.
 */
TEST_THREAD(fatalf_reports_and_aborts)
{
	expect_fatal("fatalf_goroutine", "fatal error: mylib: bad thing 3 of 7\n");
	expect_fatal("fatalf_unstarted", "fatal error: mylib: no runtime yet\n");
}

/* A WaitGroup counter below zero is fatal (one done too many, or add(-1)). */
TEST_THREAD(fatal_negative_wg_counter)
{
	expect_fatal("negative_wg_goroutine", "sync: negative WaitGroup counter");
	expect_fatal("negative_wg_foreign", "sync: negative WaitGroup counter");
}

/* weft_unlock_thread without a matching lock (none at all, or one unlock
 * too many after nesting) is fatal on a goroutine. */
TEST_THREAD(fatal_unlock_thread_without_lock)
{
	expect_fatal("unlock_thread_never_locked", "fatal error");
	expect_fatal("unlock_thread_once_too_often", "fatal error");
}

/*
 * RWMutex misuse is fatal with Go's messages: RUnlock without a read lock
 * (on a fresh RWMutex, one too many, while write-locked) and Unlock without
 * the write lock (fresh, one too many, while only read-locked), from
 * goroutines and from foreign threads. Guards: a silent RUnlock or Unlock
 * that corrupts the counts (the child prints "survived"), the wrong message.
 */
TEST_THREAD(fatal_rwmutex_misuse)
{
	expect_fatal("runlock_fresh_goroutine", "fatal error: sync: RUnlock of unlocked RWMutex");
	expect_fatal("runlock_twice_foreign", "fatal error: sync: RUnlock of unlocked RWMutex");
	expect_fatal("runlock_write_locked_goroutine",
	             "fatal error: sync: RUnlock of unlocked RWMutex");
	expect_fatal("rw_unlock_fresh_foreign", "fatal error: sync: Unlock of unlocked RWMutex");
	expect_fatal("rw_unlock_twice_goroutine", "fatal error: sync: Unlock of unlocked RWMutex");
	expect_fatal("rw_unlock_read_locked_goroutine",
	             "fatal error: sync: Unlock of unlocked RWMutex");
}

static int sleep_in_blocking(void *arg)
{
	(void)arg;
	weft_blocking_begin();
	weft_sleep(TEST_MS);
	weft_blocking_end();
	printf("survived\n");
	return 0;
}

CHILD(sleep_in_blocking_call)
{
	return weft_main(sleep_in_blocking, NULL);
}

static void exit_in_blocking(void *arg)
{
	weft_blocking_begin();
	weft_wg_done(arg); /* no park: the count does not reach 0 */
}

static int exit_in_blocking_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 2);
	weft_go(exit_in_blocking, &wg);
	weft_sleep(200 * TEST_MS);
	printf("survived\n");
	return 0;
}

CHILD(exit_in_blocking_call)
{
	return weft_main(exit_in_blocking_main, NULL);
}

/*
 * Between weft_blocking_begin and _end a goroutine must not park in weft (a
 * sleep here) nor end: both are fatal, naming the misuse. Guards: a park that
 * went on with the call's mark left on its M, and a goroutine exit that
 * corrupted the scheduler (a crash or a misleading "already inside a
 * blocking call" later, blaming another goroutine).
 */
TEST_THREAD(fatal_park_or_exit_inside_blocking_call)
{
	expect_fatal("sleep_in_blocking_call",
	             "fatal error: sleep inside weft_blocking_begin/end");
	expect_fatal("exit_in_blocking_call",
	             "fatal error: goroutine exit inside weft_blocking_begin/end");
}

/* Releasing more Semaphore tokens than are held is fatal (Go's x/sync
 * panics alike), from a goroutine and from a foreign thread. Guards: a
 * count that silently goes negative (capacity grows). */
TEST_THREAD(fatal_sem_released_more_than_held)
{
	expect_fatal("sem_over_release_goroutine",
	             "fatal error: semaphore: released more than held");
	expect_fatal("sem_over_release_foreign", "fatal error: semaphore: released more than held");
}

/*
 * Cancelling a context that is not cancellable (the background, a value
 * node, even one over a cancellable context, a weft_ctx_without_cancel node
 * over one) is fatal, with weft_ctx_cancel and weft_ctx_cancel_cause, from a
 * goroutine and from a foreign thread. Guards: a cancel that silently does
 * nothing (the child prints "survived"), or that cancels the node's
 * cancellable ancestor instead.
 */
TEST_THREAD(fatal_cancel_of_not_cancellable_context)
{
	const char *msg = "fatal error: context: cancel of a context that is not cancellable";
	expect_fatal("cancel_background_goroutine", msg);
	expect_fatal("cancel_background_foreign", msg);
	expect_fatal("cancel_value_goroutine", msg);
	expect_fatal("cancel_cause_value_over_cancellable_foreign", msg);
	expect_fatal("cancel_detached_goroutine", msg);
}

/* ---------------------------------------------------------------- the poller's descriptor */

static void closed_poller_reader(void *arg)
{
	char b;
	size_t n;
	weft_read_until(arg, &b, 1, &n, weft_now() + 500 * WEFT_MILLISECOND);
	printf("read returned\n");
	fflush(stdout);
}

/* The program closes every descriptor above stderr but a pipe's, weft's
 * epoll descriptor among them (the pipe's registration made it), as a
 * daemon's close loop or closefrom(3) would; then a goroutine waits on the
 * pipe. (Waiting first could leave a poller already blocked in epoll_wait
 * there until the reader's deadline, and nobody polling after it.) */
static int closed_poller_main(void *arg)
{
	(void)arg;
	int p[2];
	ASSERT_EQ(pipe(p), 0);
	weft_fd *r;
	ASSERT_EQ(weft_fd_open(p[0], &r), 0);
	for (int fd = 3; fd < 1024; fd++)
		if (fd != p[0] && fd != p[1])
			close(fd);
	ASSERT_EQ(weft_go(closed_poller_reader, r), 0);
	for (int i = 0; i < 100; i++)
		weft_sleep(10 * WEFT_MILLISECOND);
	printf("survived\n");
	return 0;
}

CHILD(closed_poller)
{
	return weft_main(closed_poller_main, NULL);
}

/*
 * weft's epoll descriptor closed under it by the program is a fatal error
 * that says so, as Go's netpoll throws. Guards: epoll_wait's EBADF ignored,
 * so the reader stays parked for ever (here, until its deadline: "read
 * returned", then "survived") while idle Ms spin on the failing call.
 */
TEST_THREAD(closed_poller_descriptor_is_fatal)
{
	if (test_emulated())
		SKIP("closing every descriptor would close the emulator's own");
	expect_fatal("closed_poller", "fatal error: netpoll: epoll_wait on descriptor ");
}
