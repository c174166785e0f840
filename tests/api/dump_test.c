/* SPDX-License-Identifier: MIT */
/*
 * dump_test.c - goroutine dumps: weft_dump() into a memory stream shows each
 * goroutine's id, state and wait reason, its name, its creation site and a
 * backtrace naming its function; weft_dump(NULL) writes to stderr; SIGQUIT
 * prints a dump and exits with status 2 (in child processes); a goroutine
 * in a blocking call dumped with its frames; WEFT_DEBUG=hogs's reports of a
 * hog and of a stuck blocking call, which it must not interrupt.
 */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

struct dump_ctx {
	weft_wg gate;     /* the waiter parks here until the dump is taken */
	weft_wg done;
	atomic_int started;
	atomic_ullong waiter_id, sleeper_id, site_id;
};

/* Not static: -rdynamic exports it, so the dump's backtrace can name it. */
void dump_test_wg_waiter(void *arg);
void dump_test_sleeper(void *arg);

void dump_test_wg_waiter(void *arg)
{
	struct dump_ctx *c = arg;
	atomic_store(&c->waiter_id, weft_self_id());
	atomic_fetch_add(&c->started, 1);
	weft_wg_wait(&c->gate);
	weft_wg_done(&c->done);
}

void dump_test_sleeper(void *arg)
{
	struct dump_ctx *c = arg;
	atomic_store(&c->sleeper_id, weft_self_id());
	atomic_fetch_add(&c->started, 1);
	weft_sleep(300 * TEST_MS);
	weft_wg_done(&c->done);
}

static void site_waiter(void *arg)
{
	struct dump_ctx *c = arg;
	atomic_store(&c->site_id, weft_self_id());
	atomic_fetch_add(&c->started, 1);
	weft_wg_wait(&c->gate);
	weft_wg_done(&c->done);
}

/* The part of the dump about goroutine id: from its header line to the next
 * goroutine header (or the end). Fails the test when there is none. */
static char *section(const char *dump, unsigned long long id)
{
	char hdr[64];
	snprintf(hdr, sizeof hdr, "goroutine %llu [", id);
	const char *s = dump;
	/* The header starts a line. */
	for (;;) {
		s = strstr(s, hdr);
		if (!s)
			FAIL("no \"%s\" in the dump:\n%s", hdr, dump);
		if (s == dump || s[-1] == '\n')
			break;
		s++;
	}
	const char *e = strstr(s + 1, "\ngoroutine ");
	size_t n = e ? (size_t)(e - s) : strlen(s);
	char *r = malloc(n + 1);
	ASSERT(r != NULL);
	memcpy(r, s, n);
	r[n] = 0;
	return r;
}

/* The header line of a section. */
static char *first_line(const char *s)
{
	size_t n = strcspn(s, "\n");
	char *r = malloc(n + 1);
	ASSERT(r != NULL);
	memcpy(r, s, n);
	r[n] = 0;
	return r;
}

static int waiter_line, site_line = 4242;

static void start_dump_goroutines(struct dump_ctx *c)
{
	weft_go_options wo = { .name = "dump-waiter" };
	weft_go_options so = { .name = "dump-sleeper" };
	weft_wg_add(&c->gate, 1);
	weft_wg_add(&c->done, 3);
	waiter_line = __LINE__ + 1;
	ASSERT_EQ(weft_go_opts(dump_test_wg_waiter, c, &wo), 0);
	ASSERT_EQ(weft_go_opts(dump_test_sleeper, c, &so), 0);
	ASSERT_EQ(weft_go_at(site_waiter, c, NULL, "custom_site.c", site_line), 0);
	while (atomic_load(&c->started) < 3)
		weft_sleep(TEST_MS);
	weft_sleep(20 * TEST_MS); /* let them park */
}

static void check_dump(const char *dump, struct dump_ctx *c, uint64_t self)
{
	char *w = section(dump, atomic_load(&c->waiter_id));
	char *wl = first_line(w);
	if (!strstr(wl, "semacquire") && !strstr(wl, "WaitGroup"))
		FAIL("waiter's header \"%s\" has no wait reason like "
		     "\"semacquire\"\n--- dump ---\n%s",
		     wl, dump);
	ASSERT_CONTAINS(w, "dump-waiter");
	char site[64];
	snprintf(site, sizeof site, "dump_test.c:%d", waiter_line);
	ASSERT_CONTAINS(w, site);
	ASSERT_CONTAINS(w, "dump_test_wg_waiter");

	char *s = section(dump, atomic_load(&c->sleeper_id));
	char *sl = first_line(s);
	ASSERT_CONTAINS(sl, "sleep");
	ASSERT_CONTAINS(s, "dump-sleeper");
	ASSERT_CONTAINS(s, "dump_test_sleeper");

	char *x = section(dump, atomic_load(&c->site_id));
	snprintf(site, sizeof site, "custom_site.c:%d", site_line);
	ASSERT_CONTAINS(x, site);

	if (self) {
		char *me = section(dump, self);
		char *ml = first_line(me);
		ASSERT_CONTAINS(ml, "running");
		free(ml);
		free(me);
	}
	free(w);
	free(wl);
	free(s);
	free(sl);
	free(x);
}

/*
 * weft_dump into an open_memstream from a goroutine: every goroutine has a
 * "goroutine N [reason" header line; the WaitGroup waiter's reason is
 * "semacquire" (or names the WaitGroup), the sleeper's says "sleep", the
 * caller is "running"; names given in options, creation sites (this file's
 * line, and an explicit weft_go_at site) and the function of a parked
 * goroutine in its backtrace appear in its section. Guards: goroutines
 * missing from the dump (parked ones not tracked), wrong wait reasons, names
 * or sites lost, backtraces that are not taken from the parked goroutine's
 * own stack.
 */
/* Start the dump goroutines, dump into memory from the caller (a goroutine
 * or a foreign thread), check the dump, release the goroutines. */
static void dump_and_check(void)
{
	static struct dump_ctx c;
	c = (struct dump_ctx){ 0 };
	start_dump_goroutines(&c);
	char *buf = test_dump();
	check_dump(buf, &c, weft_self_id());
	free(buf);
	weft_wg_done(&c.gate);
	weft_wg_wait(&c.done);
}

TEST(dump_shows_goroutines)
{
	dump_and_check();
}

/* The same dump taken from a foreign thread (no caller goroutine, so
 * weft_self_id() is 0 there). */
TEST_THREAD(dump_from_foreign_thread)
{
	dump_and_check();
}

static int dump_null_main(void *arg)
{
	(void)arg;
	static struct dump_ctx c;
	start_dump_goroutines(&c);
	weft_dump(NULL);
	weft_wg_done(&c.gate);
	weft_wg_wait(&c.done);
	return 0;
}

CHILD(dump_null)
{
	return weft_main(dump_null_main, NULL);
}

/* weft_dump(NULL) writes to stderr. Guards: NULL dereferenced or ignored. */
TEST_THREAD(dump_null_writes_stderr)
{
	test_child c;
	test_child_run("dump_null", NULL, 10000, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.err, "goroutine ");
	ASSERT_CONTAINS(c.err, "dump-waiter");
	ASSERT_CONTAINS(c.err, "dump-sleeper");
	test_child_free(&c);
}

static int quit_main(void *arg)
{
	(void)arg;
	static struct dump_ctx c;
	start_dump_goroutines(&c);
	kill(getpid(), SIGQUIT);
	weft_sleep(5000 * TEST_MS);
	printf("survived\n");
	return 0;
}

/* SIGQUIT raised while goroutines run and park. */
CHILD(sigquit_goroutine)
{
	return weft_main(quit_main, NULL);
}

static int quit_idle_main(void *arg)
{
	(void)arg;
	static struct dump_ctx c;
	start_dump_goroutines(&c);
	return 0;
}

/* SIGQUIT raised by a foreign thread while every goroutine is parked. */
CHILD(sigquit_idle)
{
	weft_main(quit_idle_main, NULL);
	test_os_sleep_ms(20);
	kill(getpid(), SIGQUIT);
	test_os_sleep_ms(5000);
	printf("survived\n");
	return 0;
}

/*
 * SIGQUIT prints the dump on stderr and exits with status 2, as Go does,
 * whether goroutines are running or all parked. Guards: the default action
 * (core dump, signal 3), a handler that dumps but does not exit, a handler
 * that only runs on a thread with a goroutine.
 */
TEST_THREAD(sigquit_dumps_and_exits_2)
{
	const char *children[] = { "sigquit_goroutine", "sigquit_idle" };
	for (int i = 0; i < 2; i++) {
		test_child c;
		test_child_run(children[i], NULL, 10000, &c);
		ASSERT_NOT_CONTAINS(c.out, "survived");
		ASSERT_CHILD_EXIT(&c, 2);
		ASSERT_CONTAINS(c.err, "goroutine ");
		ASSERT_CONTAINS(c.err, "dump-waiter");
		ASSERT_CONTAINS(c.err, "dump-sleeper");
		test_child_free(&c);
	}
}

/* ---------------------------------------------------------------- blocking calls */

void dump_test_blocked(void *arg);

struct blocked {
	int fds[2];      /* the goroutine reads fds[0] inside a blocking call */
	atomic_int in;   /* it is about to enter the call */
	atomic_ullong id;
	weft_wg done;
};

/* Not static: -rdynamic exports it, so the dump can name it. */
void dump_test_blocked(void *arg)
{
	struct blocked *b = arg;
	char x;
	atomic_store(&b->id, weft_self_id());
	atomic_store(&b->in, 1);
	weft_blocking_begin();
	ssize_t r = read(b->fds[0], &x, 1);
	weft_blocking_end();
	if (r != 1)
		FAIL("read in the blocking call returned %zd", r);
	weft_wg_done(&b->done);
}

/*
 * A goroutine inside weft_blocking_begin/end (a read of an empty pipe) shows
 * in the dump as "syscall", with its frames from the function that made the
 * call up, which names it. Guards: a goroutine in a blocking call dumped with
 * no backtrace (it is running on its thread: only the frame where the call
 * began is stable, and that is what the dump must walk).
 */
TEST(dump_shows_a_blocking_call)
{
	static struct blocked b;
	b = (struct blocked){.done = WEFT_WG_INIT};
	ASSERT_EQ(pipe(b.fds), 0);
	weft_wg_add(&b.done, 1);
	weft_go_options o = {.name = "dump-blocked"};
	ASSERT_EQ(weft_go_opts(dump_test_blocked, &b, &o), 0);
	WAIT_FOR(atomic_load(&b.in));
	weft_sleep(20 * TEST_MS); /* into the read */
	char *buf = test_dump();
	char *s = section(buf, atomic_load(&b.id));
	char *l = first_line(s);
	ASSERT_CONTAINS(l, "syscall");
	ASSERT_CONTAINS(l, "dump-blocked");
	ASSERT_CONTAINS(s, "dump_test_blocked");
	free(l);
	free(s);
	free(buf);
	ASSERT_EQ(write(b.fds[1], "x", 1), 1);
	weft_wg_wait(&b.done);
	close(b.fds[0]);
	close(b.fds[1]);
}

static void dump_test_ended(void *arg)
{
	weft_wg_done(arg);
}

/*
 * A goroutine that has ended is not in the dump: 50 of them, named, spawned
 * and joined, and once they are all gone (the count back to where it was)
 * the dump names none of them; their records wait in the stack caches, dead,
 * until a spawn reuses them. Guards: a dump that skips only never-used
 * records (every ended goroutine listed as "dead", for as long as its stack
 * is cached).
 */
TEST(dump_leaves_out_ended_goroutines)
{
	int64_t base = weft_num_goroutines();
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 50);
	weft_go_options o = { .name = "dump-ended" };
	for (int i = 0; i < 50; i++)
		ASSERT_EQ(weft_go_opts(dump_test_ended, &wg, &o), 0);
	weft_wg_wait(&wg);
	EXPECT_GOROUTINES(base);
	/* Past weft_wg_done, an ending goroutine may be on its way out still
	 * (and dumped as running): look again until it is gone. */
	char *buf = test_dump();
	int64_t end = test_now_ns() + 2000 * TEST_MS * test_slowdown();
	while (strstr(buf, "dump-ended") && test_now_ns() < end) {
		free(buf);
		weft_sleep(TEST_MS);
		buf = test_dump();
	}
	ASSERT_NOT_CONTAINS(buf, "dump-ended");
	ASSERT_NOT_CONTAINS(buf, "[dead");
	free(buf);
}

struct runnable_ctx {
	atomic_ullong id;
	atomic_int yields;
	atomic_int stop;
	weft_wg done;
};

void dump_test_yielder(void *arg);

void dump_test_yielder(void *arg)
{
	struct runnable_ctx *r = arg;
	atomic_store(&r->id, weft_self_id());
	while (!atomic_load(&r->stop)) {
		atomic_fetch_add(&r->yields, 1);
		weft_yield();
	}
	weft_wg_done(&r->done);
}

/*
 * At 1 P a goroutine that yields in a loop is runnable (queued) whenever the
 * dumping goroutine runs: it shows as "runnable", with a backtrace taken
 * from its saved context that names its function. Guards: backtraces walked
 * only for waiting goroutines (a runnable one dumped with no frames).
 */
TEST(dump_shows_a_runnable_goroutine_with_its_frames)
{
	int old;
	ASSERT_EQ(weft_set_procs(1, &old), 0);
	static struct runnable_ctx r;
	r = (struct runnable_ctx){ .done = WEFT_WG_INIT };
	weft_wg_add(&r.done, 1);
	weft_go_options o = { .name = "dump-runnable" };
	ASSERT_EQ(weft_go_opts(dump_test_yielder, &r, &o), 0);
	YIELD_UNTIL(atomic_load(&r.yields) > 0);
	/* It yielded back to us: it is queued, not running (one P). */
	char *buf = test_dump();
	atomic_store(&r.stop, 1);
	weft_wg_wait(&r.done);
	ASSERT_EQ(weft_set_procs(old, NULL), 0);
	char *sec = section(buf, atomic_load(&r.id));
	char *l = first_line(sec);
	ASSERT_CONTAINS(l, "runnable");
	ASSERT_CONTAINS(sec, "dump_test_yielder");
	free(l);
	free(sec);
	free(buf);
}

/* ---------------------------------------------------------------- WEFT_DEBUG=hogs */

void dump_test_hog(void *arg);
void dump_test_stuck(void *arg);

/* Not static (named in the reports): computes for 100 ms with no switch,
 * reading the clock only now and then, so that the report's signal lands in
 * this function's own frame (under ThreadSanitizer the clock is its
 * interceptor, whose frames keep no frame pointers). */
void dump_test_hog(void *arg)
{
	weft_wg *wg = arg;
	volatile unsigned long x = 0;
	int64_t end = test_now_ns() + 100 * TEST_MS;
	while (test_now_ns() < end)
		for (int i = 0; i < (1 << 20); i++)
			x++;
	weft_wg_done(wg);
}

/* Sleeps 1.5 s in one blocking call, and says whether it was cut short. */
void dump_test_stuck(void *arg)
{
	weft_wg *wg = arg;
	struct timespec ts = {1, 500 * 1000 * 1000};
	weft_blocking_begin();
	int r = nanosleep(&ts, NULL);
	int e = errno;
	weft_blocking_end();
	printf("nanosleep: %s\n", r == 0 ? "whole" : strerror(e));
	weft_wg_done(wg);
}

static int hogs_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_go_options ho = {.name = "the-hog"};
	weft_go_options so = {.name = "the-stuck"};
	weft_wg_add(&wg, 2);
	ASSERT_EQ(weft_go_opts(dump_test_hog, &wg, &ho), 0);
	ASSERT_EQ(weft_go_opts(dump_test_stuck, &wg, &so), 0);
	weft_wg_wait(&wg);
	return 0;
}

CHILD(hogs_reports)
{
	return weft_main(hogs_main, NULL);
}

/*
 * WEFT_DEBUG=hogs (with the run's own WEFT_DEBUG before it): a goroutine
 * that computes for 100 ms is reported by name and creation site with a
 * backtrace naming its function; one in a blocking call for over 1 s is
 * reported likewise, and its call is not cut short (a nanosleep of 1.5 s
 * sleeps it all). Guards: a report that signals the stuck call's thread
 * (nanosleep returns EINTR: "Interrupted system call"), reports without the
 * goroutine's name or frames.
 */
TEST_THREAD(hogs_mode_reports_hogs_and_stuck_calls)
{
	const char *d = getenv("WEFT_DEBUG");
	char dbg[512];
	snprintf(dbg, sizeof dbg, "WEFT_DEBUG=%s%shogs", d && *d ? d : "", d && *d ? "," : "");
	const char *const env[] = {"WEFT_PROCS=2", dbg, NULL};
	test_child c;
	test_child_run("hogs_reports", env, 20000, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "nanosleep: whole");
	ASSERT_CONTAINS(c.err, "\"the-hog\" (created at ");
	ASSERT_CONTAINS(c.err, "without a switch");
	ASSERT_CONTAINS(c.err, "dump_test_hog");
	ASSERT_CONTAINS(c.err, "\"the-stuck\" (created at ");
	ASSERT_CONTAINS(c.err, "in a blocking call for");
	ASSERT_CONTAINS(c.err, "dump_test_stuck");
	test_child_free(&c);
}

/* ---------------------------------------------------------------- stray SIGURG */

static _Atomic int urg_tid;

static void urg_sleeper(void *wg)
{
	atomic_store(&urg_tid, (int)syscall(SYS_gettid));
	weft_blocking_begin();
	struct timespec ts = {0, 200 * 1000 * 1000};
	int r = nanosleep(&ts, NULL);
	int e = errno;
	weft_blocking_end();
	printf("nanosleep: %s\n", r == 0 ? "ok" : e == EINTR ? "EINTR" : "failed");
	weft_wg_done(wg);
}

static int urg_main(void *arg)
{
	(void)arg;
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_go(urg_sleeper, &wg), 0);
	while (!atomic_load(&urg_tid))
		weft_sleep(WEFT_MILLISECOND);
	weft_sleep(50 * WEFT_MILLISECOND); /* into its nanosleep */
	syscall(SYS_tgkill, getpid(), atomic_load(&urg_tid), SIGURG);
	weft_wg_wait(&wg);
	return 0;
}

CHILD(stray_sigurg)
{
	return weft_main(urg_main, NULL);
}

/*
 * Without WEFT_DEBUG=hogs, a SIGURG that weft did not send (out-of-band
 * data on a socket the program owns, kill -URG) is ignored, as SIGURG's
 * default action does: weft's hog handler, installed in every mode, printed
 * a backtrace line on stderr for it and, being a handler, cut the thread's
 * nanosleep short with EINTR.
 */
TEST_THREAD(stray_sigurg_without_hogs_mode_is_ignored)
{
	test_child c;
	const char *env[] = {"WEFT_DEBUG=", NULL};
	test_child_run("stray_sigurg", env, 5000, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "nanosleep: ok");
	if (c.err[0] && !strstr(c.err, "chaos mode"))
		FAIL("stderr: %s", c.err);
	test_child_free(&c);
}
