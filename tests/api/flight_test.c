/* SPDX-License-Identifier: MIT */
/*
 * flight_test.c - weft_flight (singleflight): duplicate calls share one
 * execution and its result; distinct keys run independently; forget lets a
 * new execution start while the old one's waiters still get its result.
 */
#include "test.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

struct slow {
	atomic_int runs;
	weft_chan *gate; /* fn blocks until it is closed */
	intptr_t value;
};

static int slow_fn(void *arg, void **result)
{
	struct slow *s = arg;
	atomic_fetch_add(&s->runs, 1);
	weft_chan_recv(s->gate, NULL);
	*result = (void *)s->value;
	return (int)s->value;
}

struct caller {
	weft_flight *f;
	struct slow *s;
	const char *key;
	int ret, shared;
	void *result;
	weft_wg *wg;
};

static void call(void *arg)
{
	struct caller *c = arg;
	c->ret = weft_flight_do(c->f, c->key, c->key ? strlen(c->key) : 0, slow_fn, c->s,
	                        &c->result, &c->shared);
	weft_wg_done(c->wg);
}

/* Wait until n callers have joined (the runner is in fn, n-1 are waiting). */
static void settle(void)
{
	for (int i = 0; i < 20; i++)
		weft_sleep(WEFT_MILLISECOND);
}

/*
 * 100 goroutines call with one key while fn is held: fn runs once, all get
 * its result and return value, all see shared; the same with the empty key
 * given as NULL. Guards: a duplicate that runs fn again, a waiter that
 * returns before the result is set, an empty key compared with memcmp from
 * NULL (undefined: UBSan reports it under make asan).
 */
static void duplicates_share_one_run_for(const char *key)
{
	enum { N = 100 };
	static weft_flight f;
	static struct caller cs[N];
	struct slow s = {.value = 42};
	weft_wg wg = WEFT_WG_INIT;
	ASSERT_EQ(weft_chan_make(&s.gate, 0, 0), 0);
	weft_wg_add(&wg, N);
	for (int i = 0; i < N; i++) {
		cs[i] = (struct caller){.f = &f, .s = &s, .key = key, .wg = &wg};
		ASSERT_EQ(weft_go(call, &cs[i]), 0);
	}
	settle();
	weft_chan_close(s.gate);
	weft_wg_wait(&wg);
	ASSERT_EQ(atomic_load(&s.runs), 1);
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(cs[i].ret, 42);
		ASSERT_EQ((intptr_t)cs[i].result, 42);
		ASSERT_EQ(cs[i].shared, 1);
	}
	weft_chan_release(s.gate);
	weft_flight_destroy(&f);
}

TEST(duplicates_share_one_run)
{
	duplicates_share_one_run_for("k");
	duplicates_share_one_run_for(NULL);
}

/* Distinct keys do not wait for each other; a call after the first ended
 * runs fn again (nothing is cached). */
TEST(distinct_keys_and_no_caching)
{
	static weft_flight f;
	struct slow a = {.value = 1}, b = {.value = 2};
	ASSERT_EQ(weft_chan_make(&a.gate, 0, 0), 0);
	ASSERT_EQ(weft_chan_make(&b.gate, 0, 0), 0);
	weft_wg wg = WEFT_WG_INIT, wgb = WEFT_WG_INIT;
	struct caller ca = {.f = &f, .s = &a, .key = "a", .wg = &wg};
	struct caller cb = {.f = &f, .s = &b, .key = "b", .wg = &wgb};
	weft_wg_add(&wg, 1);
	weft_wg_add(&wgb, 1);
	ASSERT_EQ(weft_go(call, &ca), 0);
	ASSERT_EQ(weft_go(call, &cb), 0);
	settle();
	weft_chan_close(b.gate); /* b finishes while a is still held */
	weft_wg_wait(&wgb);
	ASSERT_EQ(atomic_load(&a.runs), 1);
	ASSERT_EQ(cb.ret, 2);
	ASSERT_EQ(cb.shared, 0);
	weft_chan_close(a.gate);
	weft_wg_wait(&wg);
	ASSERT_EQ(ca.ret, 1);
	/* Again: fn runs again (the gate is closed now, so it returns at once). */
	void *res = NULL;
	int shared = -1;
	ASSERT_EQ(weft_flight_do(&f, "a", 1, slow_fn, &a, &res, &shared), 1);
	ASSERT_EQ(atomic_load(&a.runs), 2);
	ASSERT_EQ(shared, 0);
	weft_chan_release(a.gate);
	weft_chan_release(b.gate);
	weft_flight_destroy(&f);
}

/* forget: a caller after it runs fn anew while the first run is still in
 * flight; the first run's waiters still get the first result. */
TEST(forget_starts_a_new_run)
{
	static weft_flight f;
	struct slow s1 = {.value = 7}, s2 = {.value = 8};
	ASSERT_EQ(weft_chan_make(&s1.gate, 0, 0), 0);
	ASSERT_EQ(weft_chan_make(&s2.gate, 0, 0), 0);
	weft_wg wg = WEFT_WG_INIT;
	struct caller first = {.f = &f, .s = &s1, .key = "key", .wg = &wg};
	struct caller dup = {.f = &f, .s = &s1, .key = "key", .wg = &wg};
	struct caller after = {.f = &f, .s = &s2, .key = "key", .wg = &wg};
	weft_wg_add(&wg, 3);
	ASSERT_EQ(weft_go(call, &first), 0);
	settle();
	ASSERT_EQ(weft_go(call, &dup), 0);
	settle();
	weft_flight_forget(&f, "key", 3);
	ASSERT_EQ(weft_go(call, &after), 0);
	settle();
	ASSERT_EQ(atomic_load(&s2.runs), 1); /* a new run, not a wait */
	weft_chan_close(s2.gate);
	weft_chan_close(s1.gate);
	weft_wg_wait(&wg);
	ASSERT_EQ(first.ret, 7);
	ASSERT_EQ(dup.ret, 7);
	ASSERT_EQ(dup.shared, 1);
	ASSERT_EQ(after.ret, 8);
	ASSERT_EQ(after.shared, 0);
	weft_chan_release(s1.gate);
	weft_chan_release(s2.gate);
	weft_flight_destroy(&f);
}

static int count_fn(void *arg, void **result)
{
	atomic_fetch_add((atomic_int *)arg, 1);
	weft_yield();
	*result = arg;
	return 0;
}

struct storm {
	weft_flight *f;
	atomic_int *runs;
	atomic_int calls;
	weft_wg wg;
	uint32_t seed;
};

static void storm_worker(void *arg)
{
	struct storm *st = arg;
	uint32_t seed = st->seed + (uint32_t)weft_self_id();
	for (int i = 0; i < 200; i++) {
		uint32_t k = test_rand32(&seed) % 64;
		void *res = NULL;
		ASSERT_EQ(weft_flight_do(st->f, &k, sizeof k, count_fn, &st->runs[k], &res, NULL),
		          0);
		ASSERT_EQ(res, (void *)&st->runs[k]);
		atomic_fetch_add(&st->calls, 1);
	}
	weft_wg_done(&st->wg);
}

/* Many goroutines, 64 keys, random order: every call returns its key's
 * result, fn never runs more often than it is called, the table grows past
 * its first size and is empty at the end. */
TEST(storm_of_keys)
{
	enum { G = 64 };
	static weft_flight f;
	static atomic_int runs[64];
	static struct storm st;
	st = (struct storm){.f = &f, .runs = runs, .seed = 7};
	weft_wg_add(&st.wg, G);
	for (int i = 0; i < G; i++)
		ASSERT_EQ(weft_go(storm_worker, &st), 0);
	weft_wg_wait(&st.wg);
	int total = 0;
	for (int k = 0; k < 64; k++)
		total += atomic_load(&runs[k]);
	ASSERT_EQ(atomic_load(&st.calls), G * 200);
	ASSERT_LE(total, G * 200);
	ASSERT_GE(total, 64);
	weft_flight_destroy(&f); /* fatal if a call were left in the table */
}
