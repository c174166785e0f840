/* SPDX-License-Identifier: MIT */
/*
 * test.h - the harness every weft test executable links: TEST() registration,
 * assertions that print both sides (libuv task.h), a duration assert with a
 * tolerance (libdill time_assert), child processes for fatal-error tests, and
 * the goroutine leak check that ends every test.
 *
 * How a test executable runs (test.c holds main()):
 *   ./go_test                 run every TEST of the file, each in its own
 *                             forked process (a fresh runtime, a crash or a
 *                             failed ASSERT in any goroutine fails only that
 *                             test, and a hang is cut off by a per-test
 *                             timeout that first sends SIGQUIT for a dump)
 *   ./go_test NAME...         run only the named tests
 *   ./go_test --list          list the tests
 *   TEST_NOFORK=1 ./go_test   run in this process, one after the other (for
 *                             gdb); the first failure ends the run
 *   ./go_test --child NAME    run the CHILD function NAME (used by
 *                             test_child_run(); exit status = its return)
 * The last line printed is exactly "N passed, N failed" (skipped tests count
 * as passed and say "SKIP" with a reason).
 *
 * The parent process never calls into weft, so each forked test starts the
 * runtime afresh. Child processes for fatal-error tests are made with fork()
 * plus exec of /proc/self/exe, never a bare fork(): a process in which the
 * runtime already runs keeps only one thread across fork().
 *
 * TEST(name) runs its body as the main goroutine (inside weft_main());
 * TEST_THREAD(name) runs it on the process's main thread, which is a foreign
 * thread to weft. After either, the number of goroutines must come back to
 * what it was before the test within a bounded wait, else the test fails
 * naming the count (and a weft_dump() shows who is left).
 *
 * Environment:
 *   WEFT_TEST_QUICK=1        smaller stress sizes (also on in sanitizer builds)
 *   WEFT_TEST_SLOWDOWN=N     multiply time tolerances and timeouts by N
 *                            (default: 1, x4 under ASan, x8 under TSan, x2
 *                            more in chaos mode)
 *   TEST_TIMEOUT_S=N         per-test timeout in seconds (default 20 x slowdown)
 */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

/* ---------------------------------------------------------------- sanitizers */

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#else
#define TEST_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define TEST_ASAN 1
#else
#define TEST_ASAN 0
#endif

/* ---------------------------------------------------------------- registration */

enum test_kind {
	TEST_KIND_GOROUTINE, /* body runs inside weft_main() */
	TEST_KIND_THREAD,    /* body runs on the main thread (a foreign thread) */
};

void test__register(const char *name, void (*fn)(void), enum test_kind kind,
		    const char *file, int line);
void test__register_child(const char *name, int (*fn)(void));

#define TEST_REGISTER_(name, kind)                                              \
	static void test_##name(void);                                          \
	__attribute__((constructor)) static void test_reg_##name(void)          \
	{                                                                       \
		test__register(#name, test_##name, kind, __FILE__, __LINE__);   \
	}                                                                       \
	static void test_##name(void)

#define TEST(name) TEST_REGISTER_(name, TEST_KIND_GOROUTINE)
#define TEST_THREAD(name) TEST_REGISTER_(name, TEST_KIND_THREAD)

/*
 * CHILD(name) { ... return status; } - a function run in a separate process
 * by test_child_run(NAME). It starts on the main thread of a fresh process
 * (call weft_main() in it to run as a goroutine); its return value is the
 * exit status.
 */
#define CHILD(name)                                                             \
	static int child_##name(void);                                          \
	__attribute__((constructor)) static void child_reg_##name(void)         \
	{                                                                       \
		test__register_child(#name, child_##name);                      \
	}                                                                       \
	static int child_##name(void)

/* ---------------------------------------------------------------- failing */

/* Print "FAIL <test>: file:line: message" and end the test (the process). */
__attribute__((noreturn, format(printf, 3, 4))) void
test__fail(const char *file, int line, const char *fmt, ...);
__attribute__((noreturn)) void test__fail_cmp(const char *file, int line,
					      const char *a, const char *op,
					      const char *b, int64_t va, int64_t vb);
__attribute__((noreturn)) void test__fail_str(const char *file, int line,
					      const char *what, const char *hay,
					      const char *hay_expr,
					      const char *needle);

/* Mark the running test as skipped (it still counts as passed) and say why;
 * the test body must return right after. */
void test__skip(const char *why);
#define SKIP(why)                                                               \
	do {                                                                    \
		test__skip(why);                                                \
		return;                                                         \
	} while (0)

#define FAIL(...) test__fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(cond)                                                            \
	do {                                                                    \
		if (!(cond))                                                    \
			test__fail(__FILE__, __LINE__, "assertion failed: %s",  \
				   #cond);                                      \
	} while (0)

/* Integer comparisons: both sides are evaluated once, converted to int64_t
 * and printed on failure (with the expressions as written, not expanded). */
#define TEST_CMP_(a, op, b, sa, sb)                                             \
	do {                                                                    \
		int64_t test_a_ = (int64_t)(a);                                 \
		int64_t test_b_ = (int64_t)(b);                                 \
		if (!(test_a_ op test_b_))                                      \
			test__fail_cmp(__FILE__, __LINE__, sa, #op, sb,         \
				       test_a_, test_b_);                       \
	} while (0)

#define ASSERT_EQ(a, b) TEST_CMP_(a, ==, b, #a, #b)
#define ASSERT_NE(a, b) TEST_CMP_(a, !=, b, #a, #b)
#define ASSERT_LT(a, b) TEST_CMP_(a, <, b, #a, #b)
#define ASSERT_LE(a, b) TEST_CMP_(a, <=, b, #a, #b)
#define ASSERT_GT(a, b) TEST_CMP_(a, >, b, #a, #b)
#define ASSERT_GE(a, b) TEST_CMP_(a, >=, b, #a, #b)

#define ASSERT_PTR_EQ(a, b)                                                     \
	do {                                                                    \
		const void *test_pa_ = (a), *test_pb_ = (b);                    \
		if (test_pa_ != test_pb_)                                       \
			test__fail(__FILE__, __LINE__, "%s == %s (%p vs %p)",   \
				   #a, #b, test_pa_, test_pb_);                 \
	} while (0)

/* Substring checks; on failure the whole haystack is printed. */
#define ASSERT_CONTAINS(hay, needle)                                            \
	do {                                                                    \
		const char *test_h_ = (hay), *test_n_ = (needle);               \
		if (!test_h_ || !strstr(test_h_, test_n_))                      \
			test__fail_str(__FILE__, __LINE__, "contains", test_h_, \
				       #hay, test_n_);                          \
	} while (0)
#define ASSERT_NOT_CONTAINS(hay, needle)                                        \
	do {                                                                    \
		const char *test_h_ = (hay), *test_n_ = (needle);               \
		if (test_h_ && strstr(test_h_, test_n_))                        \
			test__fail_str(__FILE__, __LINE__, "does not contain",  \
				       test_h_, #hay, test_n_);                 \
	} while (0)

/*
 * ASSERT_DURATION(elapsed_ns, expected_ms, tolerance_ms) - libdill's
 * time_assert: elapsed must lie within [expected - tolerance,
 * expected + tolerance * test_slowdown()]. The low side is not scaled: being
 * early is never excused by a slow machine. For "never early" checks pass the
 * low bound separately with ASSERT_GE.
 */
__attribute__((noreturn)) void test__fail_duration(const char *file, int line,
						   const char *expr,
						   int64_t elapsed_ns,
						   double expected_ms,
						   double tolerance_ms,
						   int slowdown);
#define ASSERT_DURATION(elapsed_ns, expected_ms, tolerance_ms)                  \
	do {                                                                    \
		int64_t test_e_ = (elapsed_ns);                                 \
		double test_x_ = (expected_ms), test_t_ = (tolerance_ms);       \
		int test_s_ = test_slowdown();                                  \
		if ((double)test_e_ < (test_x_ - test_t_) * 1e6 ||              \
		    (double)test_e_ > (test_x_ + test_t_ * test_s_) * 1e6)      \
			test__fail_duration(__FILE__, __LINE__, #elapsed_ns,    \
					    test_e_, test_x_, test_t_,          \
					    test_s_);                           \
	} while (0)

/*
 * TEST_BEST_OF(tries, bound, expr) - evaluate the int64_t measurement expr
 * (a lateness, a duration, a count of misorders: smaller is better) up to
 * tries times, stopping as soon as it is <= bound; yields the smallest value
 * seen, for the caller to assert on. For timing checks on a shared or loaded
 * machine: noise from other processes only ever adds delay, so a runtime that
 * is really late fails every try, while one unlucky try is forgiven. Each
 * retry is printed.
 */
#define TEST_BEST_OF(tries, bound, expr)                                        \
	__extension__({                                                         \
		int64_t test_best_ = INT64_MAX;                                 \
		int64_t test_bound_ = (bound);                                  \
		for (int test_try_ = 1; test_try_ <= (tries); test_try_++) {    \
			int64_t test_v_ = (expr);                               \
			if (test_v_ < test_best_)                               \
				test_best_ = test_v_;                           \
			if (test_best_ <= test_bound_)                          \
				break;                                          \
			printf("    try %d of %s: %lld > %lld, retrying\n",     \
			       test_try_, #expr, (long long)test_v_,            \
			       (long long)test_bound_);                         \
		}                                                               \
		test_best_;                                                     \
	})

/* weft_go() that must succeed. */
#define GO(fn, arg) TEST_CMP_(weft_go((fn), (arg)), ==, 0, "weft_go(" #fn ", " #arg ")", "0")

/* ---------------------------------------------------------------- environment */

/* Multiplier for time tolerances and timeouts (see the file comment). */
int test_slowdown(void);
/* True when stress sizes should shrink: WEFT_TEST_QUICK set, a sanitizer
 * build, or an emulated run. */
bool test_quick(void);
/* True when the tests run under an emulator (WEFT_TEST_EXEC set: the aarch64
 * preset runs them under qemu-aarch64), whose limits some tests respect. */
bool test_emulated(void);
/* Threads of the process that are not the program's: the N of
 * hostthreads=N in WEFT_DEBUG (an emulator's own threads), else 0. */
int test_host_threads(void);
/* full, or quick when test_quick(). */
#define TEST_SIZE(full, quick) (test_quick() ? (quick) : (full))
/* True when WEFT_DEBUG asks for chaos mode. */
bool test_chaos(void);
/* The number of CPUs this process may run on (sched_getaffinity). */
int test_cpus(void);

/* ---------------------------------------------------------------- weft checks */

/* Poll (for up to 5 s x test_slowdown()) until weft_num_goroutines() is back
 * to base: goroutines that have signalled their end (weft_wg_done) may still
 * be on their way out. On failure the goroutines are dumped to stderr. */
void test__expect_goroutines(const char *file, int line, int64_t base);
#define EXPECT_GOROUTINES(base) test__expect_goroutines(__FILE__, __LINE__, (base))

/* Every channel and context the test made has been freed (weft_stats counts
 * those alive; the background context is not one), polling as above for the
 * ones a goroutine on its way out still holds. */
void test__expect_all_freed(const char *file, int line);
#define EXPECT_ALL_FREED() test__expect_all_freed(__FILE__, __LINE__)

/* Run CHILD(child) as test_child_run() does; it must die of SIGABRT with
 * "fatal error" and msg on its stderr, and never print "survived" (what a
 * misuse child prints when the misuse returned). */
void test__expect_fatal(const char *file, int line, const char *child, const char *const *env,
			int timeout_ms, const char *msg);
#define EXPECT_FATAL(child, env, timeout_ms, msg)                               \
	test__expect_fatal(__FILE__, __LINE__, (child), (env), (timeout_ms), (msg))

/*
 * POLL_UNTIL(expr, step) - run step until expr holds; after 5 s x
 * test_slowdown() fail naming expr, rather than spin on until the harness's
 * timeout. WAIT_FOR polls with 1 ms naps, YIELD_UNTIL with bare yields (for
 * races that need the poller back quickly).
 * expr must stay true once it has become true: the poller may be
 * descheduled for any length of time between two looks. To wait for a state
 * that passes (a goroutine parked with a deadline, a job running), accept
 * what comes after it too ("|| w.result != -1"), or the poll can miss the
 * whole window and fail (or, unbounded, spin forever).
 */
#define POLL_UNTIL(expr, step)                                                  \
	do {                                                                    \
		int64_t test_poll_end_ =                                        \
			test_now_ns() + 5000 * TEST_MS * test_slowdown();       \
		while (!(expr)) {                                               \
			if (test_now_ns() > test_poll_end_)                     \
				test__fail(__FILE__, __LINE__,                  \
					   "timed out waiting for %s", #expr);  \
			step;                                                   \
		}                                                               \
	} while (0)
#define WAIT_FOR(expr) POLL_UNTIL(expr, weft_sleep(TEST_MS))
#define YIELD_UNTIL(expr) POLL_UNTIL(expr, weft_yield())

/* ---------------------------------------------------------------- helpers */

/* CLOCK_MONOTONIC in ns, read directly (independent of weft_now()). */
int64_t test_now_ns(void);
#define TEST_MS ((int64_t)1000000)
/* The calling OS thread's kernel id. */
int test_gettid(void);
/* This process's VmSize (/proc/self/status), in bytes; -1 if unknown. */
long test_vm_size(void);
/* nanosleep() for ms milliseconds: blocks the OS thread, not a goroutine. */
void test_os_sleep_ms(int64_t ms);
/* Spin on the CPU for ns nanoseconds without calling into weft. */
void test_spin_ns(int64_t ns);
/* The name of the running test ("" in a child process). */
const char *test_name(void);
/* weft_dump() into a string (malloc'd: free it); fails the test if no
 * memory stream can be opened. */
char *test_dump(void);

/* ---------------------------------------------------------------- children */

typedef struct test_child {
	bool exited;    /* exited normally; exit_code is valid */
	int exit_code;
	bool signaled;  /* killed by signal signo */
	int signo;
	bool timed_out; /* ran past its time and was killed by the harness */
	char *out;      /* everything it wrote to stdout, NUL-terminated */
	char *err;      /* everything it wrote to stderr, NUL-terminated */
	char desc[64];  /* "exited with status 2", "killed by signal 6 (Aborted)" */
} test_child;

/*
 * test_child_run - run CHILD(name) of this executable in a new process (fork
 * and exec of /proc/self/exe --child name), wait for it for at most
 * timeout_ms (times test_slowdown()), and capture its stdout, stderr and how
 * it ended. env, when not NULL, is a NULL-terminated list of "NAME=value"
 * added to (or replacing in) this process's environment. A child that runs
 * too long gets SIGQUIT (so weft dumps its goroutines into err), then SIGKILL
 * a second later. Fails the test if the process cannot be started.
 * Works from a goroutine (the waiting is bracketed by weft_blocking_begin/end)
 * and from a foreign thread. Free the result with test_child_free().
 */
void test_child_run(const char *name, const char *const *env, int timeout_ms,
		    test_child *out);
void test_child_free(test_child *c);

/* The child must have exited with code / been killed by signal sig, by
 * itself (not by the harness's timeout: weft answers that SIGQUIT with exit
 * status 2); on failure print how it ended and its stderr. */
#define ASSERT_CHILD_EXIT(c, code)                                              \
	do {                                                                    \
		const test_child *test_c_ = (c);                                \
		if (test_c_->timed_out || !test_c_->exited ||                   \
		    test_c_->exit_code != (code))                               \
			test__fail(__FILE__, __LINE__,                          \
				   "child %s, expected exit status %d\n"        \
				   "--- child stderr ---\n%s--- end ---",       \
				   test_c_->desc, (code), test_c_->err);        \
	} while (0)
#define ASSERT_CHILD_SIGNAL(c, sig)                                             \
	do {                                                                    \
		const test_child *test_c_ = (c);                                \
		if (test_c_->timed_out || !test_c_->signaled ||                 \
		    test_c_->signo != (sig))                                    \
			test__fail(__FILE__, __LINE__,                          \
				   "child %s, expected death by signal %d\n"    \
				   "--- child stderr ---\n%s--- end ---",       \
				   test_c_->desc, (sig), test_c_->err);         \
	} while (0)

/* ---------------------------------------------------------------- helpers */

/* A small xorshift32 step: test-local randomness, reproducible by seed. */
static inline uint32_t test_rand32(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

#include <pthread.h>

/* Run fn(arg) on a new pthread, a foreign thread to weft: the same code as a
 * goroutine body, on the other kind of caller. Fails the test if the thread
 * cannot be started. */
void test_start_thread(pthread_t *th, weft_fn fn, void *arg);
/* pthread_join th; from a goroutine the wait is bracketed by
 * weft_blocking_begin/end, so it blocks only its OS thread. */
void test_join_thread(pthread_t th);

#include <string.h> /* strstr for ASSERT_CONTAINS */

#endif /* WEFT_TEST_H */
