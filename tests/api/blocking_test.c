/* SPDX-License-Identifier: MIT */
/*
 * blocking_test.c - the bounded blocking path (weft_blocking_begin/end, at
 * most weft_max_blocking() goroutines inside at once) and the weft/net.h calls
 * that run on it: 200 goroutines in 100 ms blocking calls under a bound of 20
 * finish in about 1 s (in parallel, but never more than 20 at once), while
 * the process's thread count stays within weft_procs() + 20 plus the threads
 * that are not Ms; WEFT_MAX_BLOCKING from the environment (and the fatal
 * error for a bad value); weft_set_max_blocking (range, old value, a raised
 * bound letting waiters in at once, a lowered one holding newcomers back);
 * weft_getaddrinfo from 100 goroutines under a bound of 1, and "localhost";
 * regular files opened and read by 50 goroutines under a bound of 4 (both
 * with every slot taken when the calls start: they wait their turn).
 *
 * Time bounds are generous on the slow side (x test_slowdown()); being faster
 * than the bound allows is never forgiven.
 */
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SEC (1000 * TEST_MS)
/* A child that has not printed its answer in 5 s (x slowdown) never will. */
#define CHILD_TIMEOUT_MS 5000

/* The largest value *max has held, raised to v if v is larger. */
static void atomic_max(atomic_int *max, int v)
{
	int m = atomic_load(max);
	while (v > m && !atomic_compare_exchange_weak(max, &m, v)) {
	}
}

/* weft_wg_wait with a bound: a lost wake-up fails here, not at the harness's
 * timeout. */
static void wg_wait_bounded(weft_wg *wg, int64_t bound_ns, const char *what)
{
	if (weft_wg_wait_until(wg, weft_now() + bound_ns) != 0)
		FAIL("%s: not finished after %lld ms", what, (long long)(bound_ns / TEST_MS));
}

/* Set the bound, failing the test if it is refused. */
static void set_bound(int n)
{
	ASSERT_EQ(weft_set_max_blocking(n, NULL), 0);
	ASSERT_EQ(weft_max_blocking(), n);
}

/* ---------------------------------------------------------------- the bound */

/* The process's thread count, from the "Threads:" line of /proc/self/status
 * (-1 if it cannot be read). read(2) into a stack buffer: the sampler runs
 * every 2 ms and should disturb nothing. */
static int proc_threads(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *t = strstr(buf, "\nThreads:");
	return t ? atoi(t + 9) : -1;
}

static struct bounded {
	atomic_int inside;      /* goroutines between begin and end now */
	atomic_int max_inside;  /* the most there ever were */
	atomic_int max_threads; /* the most threads the sampler saw */
	atomic_int max_ms;      /* the most Ms (weft_stats.threads) it saw */
	atomic_int samples;
	atomic_int bad_samples; /* /proc/self/status unreadable */
	atomic_bool stop;
	weft_wg wg;
} bd;

static void bounded_sleeper(void *arg)
{
	int64_t ms = (int64_t)(intptr_t)arg;
	weft_blocking_begin();
	atomic_max(&bd.max_inside, atomic_fetch_add(&bd.inside, 1) + 1);
	test_os_sleep_ms(ms); /* blocks the OS thread, as a real blocking call */
	atomic_fetch_sub(&bd.inside, 1);
	weft_blocking_end();
	weft_wg_done(&bd.wg);
}

/* A foreign thread: samples the thread counts every 2 ms until told to stop. */
static void thread_sampler(void *arg)
{
	(void)arg;
	while (!atomic_load(&bd.stop)) {
		int t = proc_threads();
		if (t < 0)
			atomic_fetch_add(&bd.bad_samples, 1);
		atomic_max(&bd.max_threads, t);
		weft_stats st;
		weft_stats_get(&st);
		atomic_max(&bd.max_ms, (int)st.threads);
		atomic_fetch_add(&bd.samples, 1);
		test_os_sleep_ms(2);
	}
}

static atomic_int yb_stop;

static void yb_spinner(void *arg)
{
	(void)arg;
	while (!atomic_load(&yb_stop))
		weft_yield();
}

static void yb_blocker(void *arg)
{
	(void)arg;
	for (int i = 0; i < TEST_SIZE(200, 50); i++) {
		weft_blocking_begin();
		usleep(200); /* long enough for sysmon to hand the P off */
		weft_yield(); /* "Blocks: no": allowed here */
		weft_blocking_end();
	}
}

/*
 * weft_yield inside a blocking call, while 4 goroutines spin on yields at 2
 * Ps: 4 goroutines each make 200 calls that yield in the middle, and all
 * finish. Guard: a yield that switched goroutines as if the thread still
 * held its P (sysmon may have handed it to another M): the goroutine went on
 * on another M, leaving the call's mark behind, and the next begin died with
 * "already inside a blocking call".
 */
TEST(yield_inside_blocking_call)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_wg spin = WEFT_WG_INIT, wg = WEFT_WG_INIT;
	atomic_store(&yb_stop, 0);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(weft_wg_go(&spin, yb_spinner, NULL), 0);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(weft_wg_go(&wg, yb_blocker, NULL), 0);
	weft_wg_wait(&wg);
	atomic_store(&yb_stop, 1);
	weft_wg_wait(&spin);
}

/*
 * 200 goroutines each block their thread for 100 ms inside
 * weft_blocking_begin/end under a bound of 20: 10 waves, so the whole takes
 * 1 s: never less (the bound would have been exceeded: the 200 x 100 ms of
 * sleep need 1 s on 20 slots), and far less than the 20 s of serial calls
 * (a bound of 1, or blocking calls that hold their P). The counter of
 * goroutines inside never exceeds 20.
 *
 * Meanwhile a foreign thread samples the process's thread count
 * (/proc/self/status) every 2 ms. The runtime's threads are its Ms, at most
 * weft_procs() + weft_max_blocking() of them (runtime.h): an M runs a P, or
 * is inside a blocking call (which holds a slot), or idles, and a new M is
 * only made when no idle one is left. The allowance on top: the process's
 * main thread (a foreign thread, waiting in weft_main), sysmon (a thread
 * without a P), this sampler thread: 3; and under TSan its background
 * threads: 2 in a forked test process (gcc 12's TSan starts one in the child
 * at fork and another at the first pthread_create; 1 without fork); under an
 * emulator its own threads (test_host_threads()). The Ms
 * alone (weft_stats.threads) must stay within weft_procs() + 20. The sampler
 * must have seen at least 20 threads (the calls really ran in parallel, on
 * threads of their own). Guards: no slot taken in begin (200 inside at once,
 * done in 100 ms), a slot never passed to a waiter (a hang), blocking calls
 * that keep their P (sysmon never retaking it: 10 s on the 2 Ps), new Ms
 * made while idle ones exist (more than procs + 20).
 */
TEST(bounded_parallel_blocking)
{
	const int n = 200, bound = 20;
	const int64_t call_ms = 100;
	int procs = weft_procs();
	set_bound(bound);
	bd = (struct bounded){0};
	pthread_t th;
	test_start_thread(&th, thread_sampler, NULL);
	test_os_sleep_ms(10); /* a first sample before the crowd arrives */

	int64_t t0 = test_now_ns();
	weft_wg_add(&bd.wg, n);
	for (int i = 0; i < n; i++)
		GO(bounded_sleeper, (void *)(intptr_t)call_ms);
	wg_wait_bounded(&bd.wg, 30 * SEC * test_slowdown(), "200 blocking calls");
	int64_t elapsed = test_now_ns() - t0;
	test_os_sleep_ms(10); /* a last sample after */
	atomic_store(&bd.stop, true);
	test_join_thread(th);

	int allowance = 3 + 2 * TEST_TSAN + test_host_threads();
	printf("    %d calls of %lld ms, bound %d: %.1f ms; max inside %d; max threads %d "
	       "(Ms %d, procs %d) in %d samples\n",
	       n, (long long)call_ms, bound, (double)elapsed / 1e6, atomic_load(&bd.max_inside),
	       atomic_load(&bd.max_threads), atomic_load(&bd.max_ms), procs,
	       atomic_load(&bd.samples));
	ASSERT_EQ(atomic_load(&bd.inside), 0);
	ASSERT_LE(atomic_load(&bd.max_inside), bound);
	/* Never faster than the bound allows (1 ms for clock granularity). */
	ASSERT_GE(elapsed, (n / bound) * call_ms * TEST_MS - TEST_MS);
	/* Not serial: 1 s, plus 1 s x slowdown of slack (serial is 20 s). */
	ASSERT_LE(elapsed, ((n / bound) * call_ms + 1000 * test_slowdown()) * TEST_MS);
	ASSERT_EQ(atomic_load(&bd.bad_samples), 0);
	ASSERT_GE(atomic_load(&bd.samples), 50);
	ASSERT_LE(atomic_load(&bd.max_ms), procs + bound);
	ASSERT_LE(atomic_load(&bd.max_threads), procs + bound + allowance);
	ASSERT_GE(atomic_load(&bd.max_threads), bound);
	ASSERT_EQ(weft_set_max_blocking(WEFT_DEFAULT_MAX_BLOCKING, NULL), 0);
}

/* ---------------------------------------------------------------- WEFT_MAX_BLOCKING */

static int print_bound_main(void *arg)
{
	(void)arg;
	printf("max_blocking=%d\n", weft_max_blocking());
	return 0;
}

/* Prints the bound from inside the runtime (which has started by then). */
CHILD(print_max_blocking)
{
	return weft_main(print_bound_main, NULL);
}

static void expect_bound(const char *child, const char *env_value, int want)
{
	char var[64];
	snprintf(var, sizeof var, "WEFT_MAX_BLOCKING=%s", env_value);
	const char *const env[] = {var, NULL};
	test_child c;
	test_child_run(child, env, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	char line[64];
	snprintf(line, sizeof line, "max_blocking=%d\n", want);
	ASSERT_CONTAINS(c.out, line);
	ASSERT_NOT_CONTAINS(c.err, "fatal error");
	test_child_free(&c);
}

static void expect_bad_bound(const char *env_value)
{
	char var[64];
	snprintf(var, sizeof var, "WEFT_MAX_BLOCKING=%s", env_value);
	const char *const env[] = {var, NULL};
	test_child c;
	test_child_run("print_max_blocking", env, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_SIGNAL(&c, SIGABRT);
	ASSERT_CONTAINS(c.err, "fatal error");
	ASSERT_CONTAINS(c.err, var); /* it names the variable and the value */
	ASSERT_NOT_CONTAINS(c.out, "max_blocking=");
	test_child_free(&c);
}

/*
 * WEFT_MAX_BLOCKING=3 in a child's environment: weft_max_blocking() says 3
 * (also 1 and WEFT_MAX_MAX_BLOCKING, the ends of the range). A value that is
 * not a number from 1 to WEFT_MAX_MAX_BLOCKING (0, "abc", "3x", -1, one past
 * the top, empty after a sign) is a fatal error at start naming the variable
 * and its value (abort: SIGABRT), before main runs. Guards: the variable
 * ignored, a bad value taken silently (0 would let nothing in: every blocking
 * call would hang), atoi-style parsing that takes "3x" as 3.
 */
TEST_THREAD(max_blocking_env)
{
	char top[16];
	snprintf(top, sizeof top, "%d", WEFT_MAX_MAX_BLOCKING);
	expect_bound("print_max_blocking", "3", 3);
	expect_bound("print_max_blocking", "1", 1);
	expect_bound("print_max_blocking", top, WEFT_MAX_MAX_BLOCKING);
	expect_bad_bound("0");
	expect_bad_bound("abc");
	expect_bad_bound("3x");
	expect_bad_bound("-1");
	snprintf(top, sizeof top, "%d", WEFT_MAX_MAX_BLOCKING + 1);
	expect_bad_bound(top);
}

/* ---------------------------------------------------------------- weft_set_max_blocking */

/*
 * The range [1, WEFT_MAX_MAX_BLOCKING]: 0, -1 and one past the top are
 * EINVAL and change nothing; a valid call returns the previous bound in
 * *old (old may be NULL). Guards: an off-by-one at either end, a refused
 * value that still changed the bound, a wrong old value.
 */
TEST(set_max_blocking_range)
{
	int before = weft_max_blocking();
	ASSERT_GE(before, 1);
	int old = -7;
	ASSERT_EQ(weft_set_max_blocking(0, &old), EINVAL);
	ASSERT_EQ(weft_set_max_blocking(-1, &old), EINVAL);
	ASSERT_EQ(weft_set_max_blocking(WEFT_MAX_MAX_BLOCKING + 1, &old), EINVAL);
	ASSERT_EQ(weft_set_max_blocking(0, NULL), EINVAL);
	ASSERT_EQ(old, -7);
	ASSERT_EQ(weft_max_blocking(), before);

	ASSERT_EQ(weft_set_max_blocking(7, &old), 0);
	ASSERT_EQ(old, before);
	ASSERT_EQ(weft_max_blocking(), 7);
	ASSERT_EQ(weft_set_max_blocking(WEFT_MAX_MAX_BLOCKING, &old), 0);
	ASSERT_EQ(old, 7);
	ASSERT_EQ(weft_set_max_blocking(1, NULL), 0);
	ASSERT_EQ(weft_max_blocking(), 1);
	ASSERT_EQ(weft_set_max_blocking(before, &old), 0);
	ASSERT_EQ(old, 1);
	ASSERT_EQ(weft_max_blocking(), before);
}

static struct raise {
	atomic_int arrived;    /* about to call weft_blocking_begin */
	atomic_int inside;     /* between begin and end now */
	atomic_int max_inside; /* the most there ever were */
	atomic_int finished;   /* left the section */
	atomic_int late_saw;   /* how many were inside when the late one got in */
	weft_wg wg;
} rs;

static void raise_caller(void *arg)
{
	int64_t ms = (int64_t)(intptr_t)arg;
	atomic_fetch_add(&rs.arrived, 1);
	weft_blocking_begin();
	atomic_max(&rs.max_inside, atomic_fetch_add(&rs.inside, 1) + 1);
	test_os_sleep_ms(ms);
	atomic_fetch_sub(&rs.inside, 1);
	atomic_fetch_add(&rs.finished, 1);
	weft_blocking_end();
	weft_wg_done(&rs.wg);
}

static void late_caller(void *arg)
{
	(void)arg;
	atomic_fetch_add(&rs.arrived, 1);
	weft_blocking_begin();
	atomic_store(&rs.late_saw, atomic_fetch_add(&rs.inside, 1) + 1);
	atomic_fetch_sub(&rs.inside, 1);
	weft_blocking_end();
	weft_wg_done(&rs.wg);
}

/* Poll (sleeping 1 ms) until *v >= want; fail after 5 s x slowdown. */
static void wait_at_least(atomic_int *v, int want, const char *what)
{
	int64_t deadline = test_now_ns() + 5 * SEC * test_slowdown();
	while (atomic_load(v) < want) {
		if (test_now_ns() > deadline)
			FAIL("%s: %d of %d after 5 s x slowdown", what, atomic_load(v), want);
		weft_sleep(TEST_MS);
	}
}

/*
 * Raising the bound lets the waiters in at once: bound 1, three goroutines
 * in 300 ms calls (one inside, two parked in weft_blocking_begin for 50 ms,
 * which is how long the test waits before it looks), then the bound goes to
 * 3: all three are inside together, before the first one has finished, and
 * the whole takes ~300 ms, not ~900 ms (nor the 600 ms of waiters let in only
 * as the first leaves). Then lowering: with three inside under a bound of 3,
 * the bound drops to 1 and a fourth goroutine arrives: it gets in only when
 * all three have left (it is alone inside). Guards: a raise that wakes no
 * waiter (they enter only as slots are given back), a lowered bound ignored
 * by newcomers.
 */
TEST(set_max_blocking_raise_and_lower)
{
	const int64_t call_ms = 300;
	set_bound(1);
	rs = (struct raise){0};
	int64_t t0 = test_now_ns();
	weft_wg_add(&rs.wg, 3);
	for (int i = 0; i < 3; i++)
		GO(raise_caller, (void *)(intptr_t)call_ms);
	wait_at_least(&rs.arrived, 3, "goroutines arrived");
	wait_at_least(&rs.inside, 1, "goroutines inside");
	weft_sleep(50 * TEST_MS); /* the other two park in begin */
	ASSERT_EQ(atomic_load(&rs.max_inside), 1);
	ASSERT_EQ(atomic_load(&rs.finished), 0);
	set_bound(3);
	wait_at_least(&rs.max_inside, 3, "inside at once after the raise");
	/* All three inside together, so none had finished. */
	ASSERT_EQ(atomic_load(&rs.finished), 0);
	wg_wait_bounded(&rs.wg, 10 * SEC * test_slowdown(), "three 300 ms calls");
	int64_t elapsed = test_now_ns() - t0;
	printf("    bound 1 -> 3 with three %lld ms calls: %.1f ms\n", (long long)call_ms,
	       (double)elapsed / 1e6);
	ASSERT_GE(elapsed, call_ms * TEST_MS);
	ASSERT_LE(elapsed, (call_ms + 50 + 250 * test_slowdown()) * TEST_MS);

	/* Lowering: three inside, the bound drops to 1, a latecomer waits. */
	rs = (struct raise){0};
	weft_wg_add(&rs.wg, 4);
	for (int i = 0; i < 3; i++)
		GO(raise_caller, (void *)(intptr_t)(call_ms / 2));
	wait_at_least(&rs.inside, 3, "inside under a bound of 3");
	set_bound(1);
	GO(late_caller, NULL);
	wg_wait_bounded(&rs.wg, 10 * SEC * test_slowdown(), "three calls and a latecomer");
	ASSERT_EQ(atomic_load(&rs.late_saw), 1);
	ASSERT_EQ(atomic_load(&rs.finished), 3);
	ASSERT_EQ(weft_set_max_blocking(WEFT_DEFAULT_MAX_BLOCKING, NULL), 0);
}

/* ---------------------------------------------------------------- slot holders */

/*
 * Goroutines that take every slot for a while, so that the calls under test
 * all start while no slot is free: they must wait in weft_blocking_begin
 * (none may finish before a holder has left) and then be let in one by one
 * as slots are passed on.
 */
static struct holders {
	atomic_int inside;
	atomic_llong first_in; /* test_now_ns() of the first to get in */
	int64_t ms;
	weft_wg wg;
} hd;

static void slot_holder(void *arg)
{
	(void)arg;
	weft_blocking_begin();
	long long z = 0, now = test_now_ns();
	atomic_compare_exchange_strong(&hd.first_in, &z, now);
	atomic_fetch_add(&hd.inside, 1);
	test_os_sleep_ms(hd.ms);
	weft_blocking_end();
	weft_wg_done(&hd.wg);
}

/* Start k holders of ms each (k = the bound) and return once all are inside:
 * from then until the returned time no slot can be free. */
static int64_t hold_all_slots(int k, int64_t ms)
{
	hd = (struct holders){0};
	hd.ms = ms;
	weft_wg_add(&hd.wg, k);
	for (int i = 0; i < k; i++)
		GO(slot_holder, NULL);
	int64_t deadline = test_now_ns() + 5 * SEC * test_slowdown();
	while (atomic_load(&hd.inside) < k) {
		if (test_now_ns() > deadline)
			FAIL("only %d of %d slot holders got in", atomic_load(&hd.inside), k);
		weft_sleep(TEST_MS);
	}
	return (int64_t)atomic_load(&hd.first_in) + ms * TEST_MS;
}

/* *min = the smaller of *min and v (0 meaning none yet). */
static void atomic_min_time(atomic_llong *min, long long v)
{
	long long m = atomic_load(min);
	while ((m == 0 || v < m) && !atomic_compare_exchange_weak(min, &m, v)) {
	}
}

/* ---------------------------------------------------------------- getaddrinfo */

static struct resolve {
	atomic_int ok, wrong;
	atomic_int first_err;
	atomic_llong first_done; /* test_now_ns() when the first one returned */
	weft_wg wg;
} rv;

/* Resolve "127.0.0.1", "80" for TCP over IPv4 and check the one answer. */
static void resolve_loopback(void *arg)
{
	(void)arg;
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	int err = weft_getaddrinfo("127.0.0.1", "80", &hints, &res);
	atomic_min_time(&rv.first_done, test_now_ns());
	if (err) {
		int z = 0;
		atomic_compare_exchange_strong(&rv.first_err, &z, err);
		atomic_fetch_add(&rv.wrong, 1);
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
		if (res->ai_family == AF_INET && res->ai_addrlen == sizeof *sin &&
		    sin->sin_port == htons(80) && sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
			atomic_fetch_add(&rv.ok, 1);
		else
			atomic_fetch_add(&rv.wrong, 1);
		freeaddrinfo(res);
	}
	if (weft_self_id() != 0)
		weft_wg_done(&rv.wg);
}

/*
 * weft_getaddrinfo("127.0.0.1", "80") from 100 goroutines at once under a
 * bound of 1, started while a holder has the one slot for 200 ms: none
 * returns before the holder has left (resolution goes through the slots),
 * then each is let in in turn, and every one gets 127.0.0.1:80. The same
 * from a foreign thread (the blocking path is a no-op there). "localhost"
 * resolves from /etc/hosts to a loopback address (127.0.0.1 or ::1); a name
 * with AI_NUMERICHOST is EAI_NONAME, returned as the negative code
 * (weft_strerror names it). Guards: getaddrinfo off the blocking path
 * (answers during the hold), a slot not passed on to a waiter (the 100 hang
 * behind the bound of 1), a stack too small for getaddrinfo, EAI codes
 * mangled into errno values.
 */
TEST(getaddrinfo_on_blocking_path)
{
	const int n = 100;
	set_bound(1);
	rv = (struct resolve){0};
	int64_t free_at = hold_all_slots(1, 200);
	weft_wg_add(&rv.wg, n);
	for (int i = 0; i < n; i++)
		GO(resolve_loopback, NULL);
	wg_wait_bounded(&rv.wg, 20 * SEC * test_slowdown(), "100 resolutions");
	weft_wg_wait(&hd.wg);
	ASSERT_GE(atomic_load(&rv.first_done), free_at);
	if (atomic_load(&rv.wrong))
		FAIL("%d of %d resolutions wrong (first error %d: %s)", atomic_load(&rv.wrong), n,
		     atomic_load(&rv.first_err), weft_strerror(atomic_load(&rv.first_err)));
	ASSERT_EQ(atomic_load(&rv.ok), n);

	pthread_t th;
	test_start_thread(&th, resolve_loopback, NULL);
	test_join_thread(th);
	ASSERT_EQ(atomic_load(&rv.ok), n + 1);

	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int err = weft_getaddrinfo("localhost", "80", &hints, &res);
	if (err)
		FAIL("localhost: %d (%s)", err, weft_strerror(err));
	int loopback = 0;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		if (a->ai_family == AF_INET) {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)a->ai_addr;
			loopback += sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
			            sin->sin_port == htons(80);
		} else if (a->ai_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a->ai_addr;
			loopback +=
				IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) && s6->sin6_port == htons(80);
		}
	}
	freeaddrinfo(res);
	ASSERT_GE(loopback, 1);

	hints.ai_flags = AI_NUMERICHOST;
	res = NULL;
	err = weft_getaddrinfo("localhost", "80", &hints, &res);
	ASSERT_EQ(err, EAI_NONAME);
	ASSERT(res == NULL);
	ASSERT_EQ(strcmp(weft_strerror(err), gai_strerror(EAI_NONAME)), 0);
	ASSERT_EQ(weft_set_max_blocking(WEFT_DEFAULT_MAX_BLOCKING, NULL), 0);
}

/* ---------------------------------------------------------------- regular files */

#define FILE_SIZE (256 * 1024)

static struct files {
	char path[64];
	unsigned char *want;
	atomic_int ok, wrong;
	atomic_int first_err;
	atomic_int opened;       /* goroutines past weft_open */
	weft_chan *start_reads;  /* closed when they may read */
	atomic_llong first_open; /* test_now_ns() when the first open returned */
	atomic_llong first_read; /* ... and the first read */
	weft_wg wg;
} fs;

static void note_file_error(int err)
{
	int z = 0;
	atomic_compare_exchange_strong(&fs.first_err, &z, err ? err : -1);
	atomic_fetch_add(&fs.wrong, 1);
}

/* Open the file, wait for the start, read it whole in reads of a size that
 * depends on i (so the goroutines interleave differently), compare, close. */
static void read_file_whole(void *arg)
{
	int i = (int)(intptr_t)arg;
	size_t chunk = 1000 + (size_t)i * 997;
	unsigned char *buf = malloc(FILE_SIZE + 1);
	weft_fd *f = NULL;
	int err = buf ? weft_open(fs.path, O_RDONLY, 0, &f) : ENOMEM;
	atomic_min_time(&fs.first_open, test_now_ns());
	atomic_fetch_add(&fs.opened, 1);
	weft_chan_recv(fs.start_reads, NULL); /* EPIPE once closed */
	size_t got = 0;
	while (!err) {
		size_t n = 0;
		size_t want = chunk < FILE_SIZE + 1 - got ? chunk : FILE_SIZE + 1 - got;
		err = weft_read(f, buf + got, want, &n);
		atomic_min_time(&fs.first_read, test_now_ns());
		if (err || n == 0)
			break;
		got += n;
		if (got > FILE_SIZE)
			break;
	}
	if (err)
		note_file_error(err);
	else if (got != FILE_SIZE || memcmp(buf, fs.want, FILE_SIZE) != 0)
		note_file_error(0);
	else
		atomic_fetch_add(&fs.ok, 1);
	if (f && weft_fd_close(f) != 0)
		note_file_error(EIO);
	free(buf);
	weft_wg_done(&fs.wg);
}

/*
 * A 256 KiB file of known bytes read whole by 50 goroutines at once, each
 * through its own weft_open descriptor, under a bound of 4: every one reads
 * exactly the file's bytes and then end of file. The opens start while four
 * holders have every slot for 200 ms, and so do the reads (the goroutines
 * wait for a start signal between the two): no open and no read returns
 * before a holder has left. A regular file has no deadlines (ENOTSUP),
 * weft_read_full past its end reports ENODATA with the count, a missing file
 * open's error. Guards: file calls off the blocking path (they return during
 * the hold), file descriptors put in the poller (a regular file cannot be
 * polled: EPERM, or a read that never wakes), short or overlapping reads, a
 * slot not passed on (a hang behind the bound of 4).
 */
TEST(regular_files_on_blocking_path)
{
	const int n = 50;
	set_bound(4);
	fs = (struct files){0};
	snprintf(fs.path, sizeof fs.path, "/tmp/weft_blocking_test_%d", (int)getpid());
	fs.want = malloc(FILE_SIZE);
	ASSERT(fs.want != NULL);
	uint32_t seed = 12345;
	for (size_t i = 0; i < FILE_SIZE; i++)
		fs.want[i] = (unsigned char)test_rand32(&seed);

	weft_fd *w = NULL;
	ASSERT_EQ(weft_open(fs.path, O_WRONLY | O_CREAT | O_TRUNC, 0600, &w), 0);
	size_t wrote = 0;
	ASSERT_EQ(weft_write(w, fs.want, FILE_SIZE, &wrote), 0);
	ASSERT_EQ(wrote, FILE_SIZE);
	ASSERT_EQ(weft_fd_set_deadline(w, weft_now() + SEC), ENOTSUP);
	ASSERT_EQ(weft_fd_close(w), 0);

	fs.start_reads = NULL;
	ASSERT_EQ(weft_chan_make(&fs.start_reads, 0, 0), 0);
	int64_t free_at = hold_all_slots(4, 200);
	weft_wg_add(&fs.wg, n);
	for (int i = 0; i < n; i++)
		GO(read_file_whole, (void *)(intptr_t)i);
	int64_t deadline = test_now_ns() + 20 * SEC * test_slowdown();
	while (atomic_load(&fs.opened) < n) {
		if (test_now_ns() > deadline)
			FAIL("only %d of %d files opened", atomic_load(&fs.opened), n);
		weft_sleep(TEST_MS);
	}
	weft_wg_wait(&hd.wg);
	ASSERT_GE(atomic_load(&fs.first_open), free_at);
	free_at = hold_all_slots(4, 200);
	weft_chan_close(fs.start_reads);
	wg_wait_bounded(&fs.wg, 20 * SEC * test_slowdown(), "50 file reads");
	weft_wg_wait(&hd.wg);
	weft_chan_release(fs.start_reads);
	ASSERT_GE(atomic_load(&fs.first_read), free_at);
	if (atomic_load(&fs.wrong))
		FAIL("%d of %d file reads wrong (first error %d: %s)", atomic_load(&fs.wrong), n,
		     atomic_load(&fs.first_err),
		     atomic_load(&fs.first_err) > 0 ? weft_strerror(atomic_load(&fs.first_err))
		                                    : "wrong bytes");
	ASSERT_EQ(atomic_load(&fs.ok), n);

	/* read_full past the end: ENODATA with the bytes there were. */
	weft_fd *r = NULL;
	ASSERT_EQ(weft_open(fs.path, O_RDONLY, 0, &r), 0);
	unsigned char *big = malloc(FILE_SIZE + 100);
	ASSERT(big != NULL);
	size_t got = 0;
	ASSERT_EQ(weft_read_full(r, big, FILE_SIZE + 100, &got), ENODATA);
	ASSERT_EQ(got, FILE_SIZE);
	ASSERT_EQ(memcmp(big, fs.want, FILE_SIZE), 0);
	ASSERT_EQ(weft_fd_close(r), 0);
	free(big);

	/* A missing file: open's error. */
	char missing[80];
	snprintf(missing, sizeof missing, "%s.missing", fs.path);
	r = NULL;
	ASSERT_EQ(weft_open(missing, O_RDONLY, 0, &r), ENOENT);

	unlink(fs.path);
	free(fs.want);
	ASSERT_EQ(weft_set_max_blocking(WEFT_DEFAULT_MAX_BLOCKING, NULL), 0);
}

/* ---------------------------------------------------------------- timers and calls */

static atomic_llong func_ran_at;

/* The time a goroutine stored at *at, waiting up to 2 s for it to run;
 * fails if it never does. */
static int64_t wait_for_stamp(atomic_llong *at)
{
	int64_t ran;
	for (int64_t give_up = weft_now() + 2000 * TEST_MS;
	     (ran = atomic_load(at)) == 0 && weft_now() < give_up;)
		weft_sleep(TEST_MS);
	ASSERT(ran != 0);
	return ran;
}

static void note_when(void *arg)
{
	(void)arg;
	atomic_store(&func_ran_at, weft_now());
}

/*
 * A timer started on our P just before a blocking call, at 2 Ps with the
 * other P idle and its M asleep with no deadline, and sysmon backed off (the
 * program idled first): the timer was left for our P's next switch, which
 * the call delays, so nobody watched it until sysmon retook the P, up to two
 * of its 10 ms ticks late (on time only when a tick happened to fall before
 * the deadline). It must fire on time: entering the call hands the P's
 * timers to the timer M's watch. The median of 7 trials; the bound holds in
 * release builds only (a sanitizer's or an emulator's slowdown is larger
 * than the lateness it guards against). One trial may run past the call's
 * end on a loaded machine (chaos soak, load 3-4 on 2 CPUs: 6 of about 300
 * runs had one trial whose function had not run 37 ms after its deadline,
 * the other trials 0.1 ms late): it is waited for and counted as late.
 */
static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

TEST(timer_started_before_a_blocking_call_fires_on_time)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { TRIALS = 7 };
	int64_t late[TRIALS];
	for (int r = 0; r < TRIALS; r++) {
		weft_sleep(150 * TEST_MS); /* sysmon backs off */
		atomic_store(&func_ran_at, 0);
		/* Busy 5 ms, without a switch: the M that woke us (or looked
		 * for work meanwhile) goes back to sleep, with no timer due. */
		int64_t idle = weft_now() + 5 * TEST_MS;
		while (weft_now() < idle)
			;
		int64_t d = 3 * TEST_MS, t0 = weft_now();
		weft_timer *t;
		ASSERT_EQ(weft_after_func(&t, d, note_when, NULL), 0);
		weft_blocking_begin();
		usleep(40000);
		weft_blocking_end();
		/* Normally it ran long ago; on a loaded machine the threads that
		 * fire it (the timer M, sysmon's retake) may wait for a CPU past
		 * the call's end: then it is late, which the median judges, and
		 * only a function that never runs fails here. */
		int64_t ran = wait_for_stamp(&func_ran_at);
		late[r] = ran - t0 - d;
		printf("    the timer's function ran %.2f ms late\n", late[r] / 1e6);
		weft_timer_free(t);
	}
	qsort(late, TRIALS, sizeof late[0], cmp_i64);
	int64_t median = late[TRIALS / 2];
	if (test_slowdown() == 1 && !test_emulated() && median >= 1000 * 1000)
		FAIL("a 3 ms timer started before a 40 ms blocking call ran %.2f ms late (median "
		     "of %d)", median / 1e6, TRIALS);
}

static atomic_llong queued_ran_at;

static void note_run(void *arg)
{
	(void)arg;
	atomic_store(&queued_ran_at, weft_now());
}

/*
 * A blocking call made after a quiet spell (sysmon has backed off to a
 * 10 ms tick), at 1 P with a goroutine queued behind it: the P is handed to
 * another thread within ~20 us of sysmon's next tick, so the queued
 * goroutine runs while the call goes on. The best of 5 trials must be under
 * 5 ms in release builds (a sanitizer's or an emulator's slowdown is larger
 * than the lateness it guards against). Guards: a hand-off left to sysmon's
 * backed-off ticks (two of them: 10-20 ms).
 */
TEST(blocking_call_after_a_quiet_spell_hands_off_promptly)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	enum { TRIALS = 5 };
	int64_t best = INT64_MAX;
	for (int r = 0; r < TRIALS; r++) {
		weft_sleep(150 * TEST_MS); /* sysmon backs off */
		atomic_store(&queued_ran_at, 0);
		ASSERT_EQ(weft_go(note_run, NULL), 0); /* queued on our P */
		int64_t t0 = weft_now();
		weft_blocking_begin();
		usleep(40000);
		weft_blocking_end();
		int64_t wait = wait_for_stamp(&queued_ran_at) - t0; /* as above */
		printf("    the queued goroutine ran %.2f ms into the call\n", wait / 1e6);
		if (wait < best)
			best = wait;
	}
	if (test_slowdown() == 1 && !test_emulated() && best >= 5 * 1000 * 1000)
		FAIL("a goroutine queued behind a blocking call ran %.2f ms into it (best of %d)",
		     best / 1e6, TRIALS);
}

static atomic_int busy_stop, busy_p = -1;

static void busy_other_p(void *arg)
{
	weft_wg *wg = arg;
	atomic_store(&busy_p, weft_self_proc());
	while (!atomic_load(&busy_stop))
		; /* no switch: its P stays busy */
	weft_wg_done(wg);
}

/*
 * As timer_started_before_a_blocking_call_fires_on_time, with the other P
 * busy (a goroutine computing there without a switch), so no P is idle and
 * no timer M watches ours: sysmon must retake our P for its timer, and after
 * a quiet spell its tick has backed off to 10 ms. Entering the call wakes
 * sysmon (as for goroutines queued behind it), so the timer fires on time.
 * Best of 5 trials under 5 ms late, in release builds. Guards: the wake for
 * queued goroutines only (the timer ran 7-17 ms late in every trial).
 */
TEST(timer_before_a_blocking_call_with_the_other_p_busy_fires_on_time)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { TRIALS = 5 };
	int64_t best = INT64_MAX;
	for (int r = 0; r < TRIALS; r++) {
		weft_sleep(150 * TEST_MS); /* sysmon backs off */
		weft_wg wg = WEFT_WG_INIT;
		weft_wg_add(&wg, 1);
		atomic_store(&busy_stop, 0);
		atomic_store(&busy_p, -1);
		ASSERT_EQ(weft_go(busy_other_p, &wg), 0);
		/* Until it computes on the other P, with us on ours. */
		for (int64_t give_up = weft_now() + 2000 * TEST_MS;
		     atomic_load(&busy_p) < 0 || atomic_load(&busy_p) == weft_self_proc();)
			if (weft_now() > give_up)
				FAIL("the busy goroutine never ran on the other P");
			else
				weft_sleep(TEST_MS);
		atomic_store(&func_ran_at, 0);
		int64_t d = 3 * TEST_MS, t0 = weft_now();
		weft_timer *t;
		ASSERT_EQ(weft_after_func(&t, d, note_when, NULL), 0);
		weft_blocking_begin();
		usleep(40000);
		weft_blocking_end();
		int64_t late = wait_for_stamp(&func_ran_at) - t0 - d;
		atomic_store(&busy_stop, 1);
		weft_wg_wait(&wg);
		printf("    the timer's function ran %.2f ms late\n", late / 1e6);
		if (late < best)
			best = late;
		weft_timer_free(t);
	}
	if (test_slowdown() == 1 && !test_emulated() && best >= 5 * 1000 * 1000)
		FAIL("a 3 ms timer started before a 40 ms blocking call, the other P busy, ran "
		     "%.2f ms late (best of %d)", best / 1e6, TRIALS);
}
