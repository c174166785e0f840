/* SPDX-License-Identifier: MIT */
/*
 * dump_test.c - goroutine dumps: weft_dump() into a memory stream shows each
 * goroutine's id, state and wait reason, its name, its creation site and a
 * backtrace naming its function; weft_dump(NULL) writes to stderr; SIGQUIT
 * prints a dump and exits with status 2 (in child processes).
 */
#include "test.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
