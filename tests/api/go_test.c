/* SPDX-License-Identifier: MIT */
/*
 * go_test.c - starting goroutines: weft_go, weft_go_opts (names, stack sizes,
 * EINVAL), weft_main, weft_self_id, weft_num_goroutines, and starting
 * goroutines from foreign threads. Public API only.
 */
#include "test.h"

#include <alloca.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- 100,000 */

struct spawn_ctx {
	_Atomic uint8_t *hits;
	atomic_long total;
	weft_wg wg;
};

static struct spawn_ctx sc;

static void count_once(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	atomic_fetch_add(&sc.hits[i], 1);
	atomic_fetch_add(&sc.total, 1);
	weft_wg_done(&sc.wg);
}

/*
 * Spawn 100,000 goroutines (all started before any is joined, so they are
 * alive at once) and join them with one WaitGroup; each must run exactly once.
 * Guards: a goroutine lost from a run queue (wait never returns: timeout), run
 * twice (a ring overflow or steal that duplicates entries), run with the wrong
 * argument (hits[i] != 1), a WaitGroup that releases early (total < N).
 */
TEST(spawn_join_100k)
{
	long n = TEST_SIZE(100000, 5000);
	sc.hits = calloc((size_t)n, 1);
	ASSERT(sc.hits != NULL);
	atomic_store(&sc.total, 0);
	sc.wg = (weft_wg)WEFT_WG_INIT;

	int64_t t0 = test_now_ns();
	weft_wg_add(&sc.wg, n);
	for (long i = 0; i < n; i++)
		GO(count_once, (void *)(uintptr_t)i);
	weft_wg_wait(&sc.wg);
	int64_t t1 = test_now_ns();

	ASSERT_EQ(atomic_load(&sc.total), n);
	for (long i = 0; i < n; i++)
		if (sc.hits[i] != 1)
			FAIL("goroutine %ld ran %d times", i, sc.hits[i]);
	printf("    %ld goroutines spawned and joined in %.1f ms\n", n,
	       (double)(t1 - t0) / 1e6);
	free(sc.hits);
}

/* A binary tree of goroutines: each node starts two children and waits for
 * them on a WaitGroup on its own stack, so parents park while their subtrees
 * run and idle Ps must steal. */
struct tree_node {
	int depth;
	atomic_long *count;
	weft_wg *parent_wg; /* NULL at the root */
};

static void tree(void *arg)
{
	struct tree_node *n = arg;
	atomic_fetch_add(n->count, 1);
	if (n->depth > 0) {
		weft_wg wg = WEFT_WG_INIT;
		struct tree_node kids[2] = { { n->depth - 1, n->count, &wg },
					     { n->depth - 1, n->count, &wg } };
		weft_wg_add(&wg, 2);
		for (int i = 0; i < 2; i++)
			GO(tree, &kids[i]);
		weft_wg_wait(&wg);
	}
	if (n->parent_wg)
		weft_wg_done(n->parent_wg);
}

/*
 * 2^17 - 1 = 131,071 goroutines in a tree, with up to 17 levels of parents
 * parked on WaitGroups living on their stacks. Guards: a lost wake-up of a
 * parked parent (hang), stack reuse while a goroutine still runs (corrupted
 * wg on a parent's stack), stealing bugs (count != 2^(d+1) - 1).
 */
TEST(spawn_tree)
{
	int depth = TEST_SIZE(16, 11);
	atomic_long count = 0;
	struct tree_node root = { depth, &count, NULL };
	tree(&root);
	ASSERT_EQ(atomic_load(&count), (1L << (depth + 1)) - 1);
}

/* ---------------------------------------------------------------- foreign */

static atomic_long foreign_count;
static weft_wg foreign_wg;

static void foreign_child(void *arg)
{
	(void)arg;
	ASSERT_NE(weft_self_id(), 0);
	atomic_fetch_add(&foreign_count, 1);
	weft_wg_done(&foreign_wg);
}

static void *foreign_spawner(void *arg)
{
	long n = (long)(intptr_t)arg;
	ASSERT_EQ(weft_self_id(), 0);
	ASSERT_EQ(weft_self_proc(), -1);
	for (long i = 0; i < n; i++)
		GO(foreign_child, NULL);
	return NULL;
}

/*
 * The runtime starts lazily on a weft_go() from plain main (a foreign
 * thread), and two more pthreads spawn concurrently; the foreign main thread
 * joins with weft_wg_wait (parking the OS thread). Guards: lazy start not
 * thread-safe (two runtimes, or a crash), a foreign thread counted as a
 * goroutine, a foreign waiter never woken.
 */
TEST_THREAD(spawn_from_foreign_threads)
{
	long n = TEST_SIZE(10000, 1000);
	ASSERT_EQ(weft_self_id(), 0);
	atomic_store(&foreign_count, 0);
	foreign_wg = (weft_wg)WEFT_WG_INIT;
	weft_wg_add(&foreign_wg, 3 * n);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, foreign_spawner,
					 (void *)(intptr_t)n), 0);
	foreign_spawner((void *)(intptr_t)n);
	weft_wg_wait(&foreign_wg);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(atomic_load(&foreign_count), 3 * n);
}

/* ---------------------------------------------------------------- options */

static atomic_int einval_ran;

static void must_not_run(void *arg)
{
	(void)arg;
	atomic_store(&einval_ran, 1);
}

static void set_flag(void *arg)
{
	atomic_store((atomic_int *)arg, 1);
}

/*
 * Stack sizes outside [WEFT_MIN_STACK, WEFT_MAX_STACK] are refused with
 * EINVAL and start nothing. Guards: a size check that is missing, off by one
 * at either end, or that starts the goroutine anyway.
 */
TEST(go_opts_einval)
{
	size_t bad[] = { 1, WEFT_MIN_STACK - 1, WEFT_MAX_STACK + 1, SIZE_MAX };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		weft_go_options o = { .stack_size = bad[i], .name = "bad" };
		int r = weft_go_opts(must_not_run, NULL, &o);
		if (r != EINVAL)
			FAIL("stack_size %zu: expected EINVAL (%d), got %d", bad[i],
			     EINVAL, r);
	}
	/* The bounds themselves are valid. */
	atomic_int ran_min = 0;
	weft_go_options o = { .stack_size = WEFT_MIN_STACK };
	ASSERT_EQ(weft_go_opts(set_flag, &ran_min, &o), 0);
	/* NULL options and all-zero options are the defaults. */
	atomic_int ran_null = 0, ran_zero = 0;
	ASSERT_EQ(weft_go_opts(set_flag, &ran_null, NULL), 0);
	weft_go_options zero = { 0 };
	ASSERT_EQ(weft_go_opts(set_flag, &ran_zero, &zero), 0);
	int64_t deadline = test_now_ns() + 5000 * TEST_MS;
	while (!(atomic_load(&ran_min) && atomic_load(&ran_null) &&
		 atomic_load(&ran_zero)) && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT(atomic_load(&ran_min) && atomic_load(&ran_null) &&
	       atomic_load(&ran_zero));
	weft_sleep(10 * TEST_MS);
	ASSERT_EQ(atomic_load(&einval_ran), 0);
}

struct stack_job {
	size_t use;    /* bytes of stack to touch */
	atomic_int ok;
	weft_wg *wg;
};

static void use_stack(void *arg)
{
	struct stack_job *j = arg;
	volatile char *p = alloca(j->use);
	memset((char *)p, 0x5a, j->use);
	int sum = p[0] + p[j->use / 2] + p[j->use - 1];
	/* libc on the goroutine stack too. */
	char buf[128];
	snprintf(buf, sizeof buf, "%zu %.3f %s", j->use, 3.25, "x");
	atomic_store(&j->ok, sum == 3 * 0x5a && strlen(buf) > 0);
	weft_wg_done(j->wg);
}

/*
 * Each requested stack size is really usable: a goroutine touches about 3/4
 * of it (minus slack for frames). Guards: stack_size ignored (8 MiB asked,
 * the 256 KiB default given: the goroutine faults and the test process dies),
 * guard page placed inside the usable range.
 */
TEST(go_opts_stack_sizes)
{
	size_t sizes[] = { 0, WEFT_MIN_STACK, 64 * 1024, WEFT_DEFAULT_STACK,
			   1024 * 1024, 8 * 1024 * 1024 };
	enum { N = sizeof sizes / sizeof sizes[0] };
	struct stack_job jobs[N];
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, N);
	for (int i = 0; i < N; i++) {
		size_t s = sizes[i] ? sizes[i] : WEFT_DEFAULT_STACK;
		jobs[i].use = s / 2 + s / 4 - 4096;
		atomic_store(&jobs[i].ok, 0);
		jobs[i].wg = &wg;
		weft_go_options o = { .stack_size = sizes[i], .name = "stack-user" };
		ASSERT_EQ(weft_go_opts(use_stack, &jobs[i], &o), 0);
	}
	weft_wg_wait(&wg);
	for (int i = 0; i < N; i++)
		if (!atomic_load(&jobs[i].ok))
			FAIL("stack size %zu: goroutine did not complete its work",
			     sizes[i]);
}

/*
 * A name longer than 31 bytes is accepted (and truncated, not overrun), and
 * the option struct and name buffer may be reused at once: the name is copied.
 * Guards: weft keeping the caller's pointer (it is overwritten right after).
 */
TEST(go_opts_names)
{
	atomic_int ran[2] = { 0, 0 };
	char name[80];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = 0;
	weft_go_options o = { .name = name };
	ASSERT_EQ(weft_go_opts(set_flag, &ran[0], &o), 0);
	snprintf(name, sizeof name, "second");
	ASSERT_EQ(weft_go_opts(set_flag, &ran[1], &o), 0);
	memset(name, 0, sizeof name);
	while (!atomic_load(&ran[0]) || !atomic_load(&ran[1]))
		weft_sleep(TEST_MS);
}

/* ---------------------------------------------------------------- weft_main */

static atomic_int late_flag;
static weft_wg late_wg;

static void late_goroutine(void *arg)
{
	(void)arg;
	weft_sleep(50 * TEST_MS);
	atomic_store(&late_flag, 1);
	weft_wg_done(&late_wg);
}

static int main_body(void *arg)
{
	ASSERT_NE(weft_self_id(), 0);
	int p = weft_self_proc();
	ASSERT_GE(p, 0);
	ASSERT_LT(p, weft_procs());
	ASSERT_GE(weft_num_goroutines(), 1);
	return (int)(intptr_t)arg;
}

static int main_spawns_late(void *arg)
{
	(void)arg;
	GO(late_goroutine, NULL);
	return 7;
}

static void *thread_main(void *arg)
{
	return (void *)(intptr_t)weft_main(main_body, arg);
}

/*
 * weft_main returns what main_fn returned; it works more than once, from
 * several foreign threads at the same time, and goroutines that outlive
 * main_fn keep running. Guards: a lost return value, weft_main returning
 * before main_fn ends, a runtime that stops with its first main.
 */
TEST_THREAD(weft_main_runs_and_returns)
{
	ASSERT_EQ(weft_self_id(), 0);
	ASSERT_EQ(weft_self_proc(), -1);
	ASSERT_EQ(weft_main(main_body, (void *)(intptr_t)42), 42);
	ASSERT_EQ(weft_main(main_body, (void *)(intptr_t)0), 0);

	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, thread_main,
					 (void *)(intptr_t)(100 + i)), 0);
	for (int i = 0; i < 3; i++) {
		void *r;
		pthread_join(th[i], &r);
		ASSERT_EQ((intptr_t)r, 100 + i);
	}

	late_wg = (weft_wg)WEFT_WG_INIT;
	weft_wg_add(&late_wg, 1);
	atomic_store(&late_flag, 0);
	ASSERT_EQ(weft_main(main_spawns_late, NULL), 7);
	weft_wg_wait(&late_wg);
	ASSERT_EQ(atomic_load(&late_flag), 1);
	ASSERT_EQ(weft_self_id(), 0);
}

CHILD(main_of_null)
{
	weft_main(NULL, NULL);
	puts("survived");
	return 0;
}

/* weft_main(NULL) is a fatal error that names it. Guards: a NULL main_fn
 * called in the main goroutine (SIGSEGV, with no word of why). */
TEST_THREAD(weft_main_refuses_null)
{
	EXPECT_FATAL("main_of_null", NULL, 5000, "weft_main: NULL main_fn");
}

/* ---------------------------------------------------------------- ids */

struct id_job {
	uint64_t *ids;
	int i;
	weft_wg *wg;
};

static void record_id(void *arg)
{
	struct id_job *j = arg;
	j->ids[j->i] = weft_self_id();
	weft_wg_done(j->wg);
}

/*
 * Ids are unique, non-zero and follow the order in which one goroutine
 * creates goroutines. Guards: ids reused from finished goroutines, an id assigned when
 * the goroutine first runs instead of when it is created (run order differs
 * from creation order on 2 Ps), a racy id counter.
 */
TEST(self_id_unique_in_creation_order)
{
	enum { N = 2000 };
	static uint64_t ids[N];
	static struct id_job jobs[N];
	uint64_t me = weft_self_id();
	ASSERT_NE(me, 0);
	ASSERT_EQ(weft_self_id(), me);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, N);
	for (int i = 0; i < N; i++) {
		jobs[i] = (struct id_job){ ids, i, &wg };
		GO(record_id, &jobs[i]);
	}
	weft_wg_wait(&wg);
	uint64_t prev = me;
	for (int i = 0; i < N; i++) {
		if (ids[i] <= prev)
			FAIL("goroutine %d has id %llu after id %llu", i,
			     (unsigned long long)ids[i], (unsigned long long)prev);
		prev = ids[i];
	}
	ASSERT_EQ(weft_self_id(), me);
}

/* ---------------------------------------------------------------- stack colours */

struct colour_probe {
	weft_wg parked;
	weft_wg open;
	weft_wg done;
	uintptr_t offset[64]; /* frame address mod the page size, per goroutine */
	atomic_int next;
};

static void probe_colour(void *arg)
{
	struct colour_probe *c = arg;
	int i = atomic_fetch_add(&c->next, 1);
	c->offset[i] = (uintptr_t)__builtin_frame_address(0) % 4096;
	weft_wg_done(&c->parked);
	weft_wg_wait(&c->open); /* all 64 hold their stacks at once */
	weft_wg_done(&c->done);
}

/*
 * 64 goroutines alive at once run the same first frame; its address within
 * its page takes at least 8 distinct values (the allocator staggers each
 * stack's top by up to 15 cache lines, so a thousand goroutines in flight do
 * not all compete for the same few cache sets). Guards: every stack's first
 * frame at the same page offset (no colouring, 1 distinct value).
 */
TEST(stack_tops_are_coloured)
{
	static struct colour_probe c;
	c.parked = (weft_wg)WEFT_WG_INIT;
	c.open = (weft_wg)WEFT_WG_INIT;
	c.done = (weft_wg)WEFT_WG_INIT;
	atomic_store(&c.next, 0);
	weft_wg_add(&c.parked, 64);
	weft_wg_add(&c.open, 1);
	weft_wg_add(&c.done, 64);
	for (int i = 0; i < 64; i++)
		GO(probe_colour, &c);
	weft_wg_wait(&c.parked);
	weft_wg_done(&c.open);
	weft_wg_wait(&c.done);
	int distinct = 0;
	for (int i = 0; i < 64; i++) {
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = c.offset[j] == c.offset[i];
		distinct += !seen;
	}
	printf("    distinct first-frame page offsets: %d of 64\n", distinct);
	ASSERT_GE(distinct, 8);
}

/* ---------------------------------------------------------------- counting */

struct gate {
	weft_wg open;
	weft_wg done;
	atomic_int started;
};

static void wait_at_gate(void *arg)
{
	struct gate *g = arg;
	atomic_fetch_add(&g->started, 1);
	weft_wg_wait(&g->open);
	weft_wg_done(&g->done);
}

/*
 * weft_num_goroutines counts the goroutines alive: the caller plus 100 parked
 * ones, then back once they end; weft_stats_get agrees. Guards: parked
 * goroutines not counted, finished ones never uncounted, a count that
 * includes runtime-internal or foreign threads.
 */
TEST(num_goroutines_counts)
{
	int64_t base = weft_num_goroutines();
	ASSERT_GE(base, 1); /* this goroutine */
	static struct gate g;
	g.open = (weft_wg)WEFT_WG_INIT;
	g.done = (weft_wg)WEFT_WG_INIT;
	atomic_store(&g.started, 0);
	weft_wg_add(&g.open, 1);
	weft_wg_add(&g.done, 100);
	for (int i = 0; i < 100; i++)
		GO(wait_at_gate, &g);
	while (atomic_load(&g.started) < 100)
		weft_sleep(TEST_MS);
	ASSERT_EQ(weft_num_goroutines(), base + 100);
	weft_stats st;
	weft_stats_get(&st);
	ASSERT_EQ(st.goroutines, base + 100);
	ASSERT_GE(st.spawned, 100);
	ASSERT_EQ(st.procs, weft_procs());
	weft_wg_done(&g.open);
	weft_wg_wait(&g.done);
	int64_t deadline = test_now_ns() + 2000 * TEST_MS;
	while (weft_num_goroutines() != base && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT_EQ(weft_num_goroutines(), base);
}

/*
 * On a foreign thread in a fresh process nothing is counted: no goroutine
 * exists before the first weft_go, and the foreign thread itself is not one.
 * weft_stats_get's spawned total includes goroutines started from a
 * foreign thread. Guards: foreign threads or runtime-internal goroutines
 * counted, spawns that bypass a P's local queue left out of the statistics.
 */
TEST_THREAD(num_goroutines_foreign_zero)
{
	ASSERT_EQ(weft_num_goroutines(), 0);
	ASSERT_GE(weft_procs(), 1); /* starts the runtime */
	ASSERT_EQ(weft_num_goroutines(), 0);
	static struct gate g;
	g.open = (weft_wg)WEFT_WG_INIT;
	g.done = (weft_wg)WEFT_WG_INIT;
	weft_wg_add(&g.done, 3);
	for (int i = 0; i < 3; i++)
		GO(wait_at_gate, &g);
	weft_wg_wait(&g.done);
	/* Goroutines started from a foreign thread count as spawned too. */
	weft_stats st;
	weft_stats_get(&st);
	ASSERT_GE(st.spawned, 3);
	int64_t deadline = test_now_ns() + 2000 * TEST_MS;
	while (weft_num_goroutines() != 0 && test_now_ns() < deadline)
		test_os_sleep_ms(1);
	ASSERT_EQ(weft_num_goroutines(), 0);
}

/* weft_version matches the header. Guards: a stale library linked. */
TEST_THREAD(version)
{
	ASSERT(strcmp(weft_version(), WEFT_VERSION_STRING) == 0);
}
