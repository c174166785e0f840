/* SPDX-License-Identifier: MIT */
/*
 * map_test.c - weft_map (Go's sync.Map): the result codes and out-parameters
 * of every call, byte-string keys (empty, long, copied), growth across many
 * rebuilds with deletes in between, memory that stays bounded under churn,
 * out of memory, random concurrent operations of goroutines and foreign
 * threads checked against exact reference maps, loads racing the rebuilds
 * that retire what they read (ASan: nothing freed too early), ranges running
 * while others write and ranges whose callback writes, and (under TSan) that
 * a store publishes what its value points to.
 */
#include "test.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>

/*
 * The library's allocation-failure hook (src/util/alloc.h). It is internal,
 * but the test links the static library, where hidden symbols still
 * resolve; only the ENOMEM test uses it.
 */
void weft__alloc_fail_after(long n, int sticky);

/* A string literal as a key, without its NUL. */
#define S(lit) lit, sizeof(lit) - 1

static void *P(uintptr_t x)
{
	return (void *)x;
}

/* Key number i of namespace ns: "ns:<i>" plus i % 9 filler bytes, so that
 * lengths vary; returns the length. buf holds 40 bytes. */
static size_t key_of(char *buf, const char *ns, unsigned i)
{
	int n = snprintf(buf, 40, "%s:%u", ns, i);
	for (unsigned j = 0; j < i % 9; j++)
		buf[n++] = '#';
	return (size_t)n;
}

/* Parse a key made by key_of back into its namespace and number. */
static int key_parse(const void *key, size_t len, char ns[8], unsigned *i)
{
	char buf[41];
	if (len > 40)
		return 0;
	memcpy(buf, key, len);
	buf[len] = 0;
	return sscanf(buf, "%7[^:]:%u", ns, i) == 2;
}

/*
 * A loop for a goroutine or a foreign thread (pass the steps to GO() or
 * test_start_thread()): step(arg, i) for i = 0 .. n-1, yielding every 64
 * steps so that the others get in between, then Done on wg.
 */
struct steps {
	void (*step)(void *arg, long i);
	void *arg;
	long n;
	weft_wg *wg;
};

static void run_steps(void *p)
{
	struct steps *s = p;
	for (long i = 0; i < s->n; i++) {
		s->step(s->arg, i);
		if (i % 64 == 63)
			weft_yield();
	}
	weft_wg_done(s->wg);
}

/* ---------------------------------------------------------------- range helpers */

struct tally {
	int calls;
	int stop_at; /* return 7 on this call (1-based); 0: never */
	int64_t sum; /* of the values, as integers */
};

static int tally_fn(const void *key, size_t keylen, void *val, void *arg)
{
	struct tally *t = arg;
	(void)key;
	(void)keylen;
	t->calls++;
	t->sum += (int64_t)(uintptr_t)val;
	return t->calls == t->stop_at ? 7 : 0;
}

static struct tally tally(weft_map *m)
{
	struct tally t = {0};
	ASSERT_EQ(weft_map_range(m, tally_fn, &t), 0);
	return t;
}

/* ---------------------------------------------------------------- semantics */

static void load_is(weft_map *m, const void *key, size_t len, void *want)
{
	void *v = P(0xbad);
	ASSERT_EQ(weft_map_load(m, key, len, &v), 0);
	ASSERT_PTR_EQ(v, want);
}

static void check_basic_semantics(void)
{
	weft_map m = WEFT_MAP_INIT;
	void *v = P(0xdead);

	/* The zero map is empty; out-parameters are left alone on ENOENT. */
	ASSERT_EQ(weft_map_load(&m, S("a"), &v), ENOENT);
	ASSERT_EQ(weft_map_delete(&m, S("a"), &v), ENOENT);
	ASSERT_PTR_EQ(v, P(0xdead));
	ASSERT_EQ(weft_map_delete(&m, S("a"), NULL), ENOENT);
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("a"), NULL, P(2)), ENOENT);
	ASSERT_EQ(weft_map_len(&m), 0);
	ASSERT_EQ(tally(&m).calls, 0);

	/* Store and load; NULL is a value, not an absence. */
	ASSERT_EQ(weft_map_store(&m, S("a"), P(1)), 0);
	ASSERT_EQ(weft_map_store(&m, S("null"), NULL), 0);
	load_is(&m, S("a"), P(1));
	load_is(&m, S("null"), NULL);
	ASSERT_EQ(weft_map_load(&m, S("nul"), NULL), ENOENT);
	ASSERT_EQ(weft_map_load(&m, "null\0", 5, NULL), ENOENT);
	ASSERT_EQ(weft_map_load(&m, S("null"), NULL), 0);
	ASSERT_EQ(weft_map_store(&m, S("a"), P(3)), 0);
	load_is(&m, S("a"), P(3));
	ASSERT_EQ(weft_map_len(&m), 2);

	/* The empty key, whether or not its pointer is NULL. */
	ASSERT_EQ(weft_map_store(&m, NULL, 0, P(9)), 0);
	load_is(&m, "", 0, P(9));
	load_is(&m, "xyz", 0, P(9));
	ASSERT_EQ(weft_map_len(&m), 3);

	/* Keys of every length up to 40 over the same bytes, and long keys
	 * that differ in one byte at the start, the middle or the end. */
	static char big[5000];
	memset(big, 'k', sizeof big);
	for (size_t n = 1; n <= 40; n++)
		ASSERT_EQ(weft_map_store(&m, big, n, P(1000 + n)), 0);
	ASSERT_EQ(weft_map_store(&m, big, sizeof big, P(1)), 0);
	big[0] = 'x';
	ASSERT_EQ(weft_map_store(&m, big, sizeof big, P(2)), 0);
	big[0] = 'k';
	big[2500] = 'x';
	ASSERT_EQ(weft_map_store(&m, big, sizeof big, P(3)), 0);
	big[2500] = 'k';
	big[sizeof big - 1] = 'x';
	ASSERT_EQ(weft_map_store(&m, big, sizeof big, P(4)), 0);
	big[sizeof big - 1] = 'k';
	for (size_t n = 1; n <= 40; n++)
		load_is(&m, big, n, P(1000 + n));
	load_is(&m, big, sizeof big, P(1));
	ASSERT_EQ(weft_map_load(&m, big, sizeof big - 1, NULL), ENOENT);
	big[2500] = 'x';
	load_is(&m, big, sizeof big, P(3));
	big[2500] = 'k';
	ASSERT_EQ(weft_map_len(&m), 3 + 40 + 4);

	/* The key is copied: changing the caller's buffer changes nothing. */
	char buf[16];
	memcpy(buf, "copied", 6);
	ASSERT_EQ(weft_map_store(&m, buf, 6, P(5)), 0);
	memcpy(buf, "XXXXXX", 6);
	ASSERT_EQ(weft_map_load(&m, buf, 6, NULL), ENOENT);
	load_is(&m, S("copied"), P(5));

	/* An integer key is its bytes. */
	uint64_t k = 42;
	ASSERT_EQ(weft_map_store(&m, &k, sizeof k, P(42)), 0);
	uint64_t k2 = 42;
	load_is(&m, &k2, sizeof k2, P(42));

	/* swap: 0 and the previous value, or ENOENT when it added the key. */
	v = P(0xdead);
	ASSERT_EQ(weft_map_swap(&m, S("a"), P(4), &v), 0);
	ASSERT_PTR_EQ(v, P(3));
	ASSERT_EQ(weft_map_swap(&m, S("null"), P(5), &v), 0);
	ASSERT_PTR_EQ(v, NULL);
	v = P(0xdead);
	ASSERT_EQ(weft_map_swap(&m, S("new"), P(6), &v), ENOENT);
	ASSERT_PTR_EQ(v, NULL); /* no previous value: NULL, as Go's nil */
	load_is(&m, S("new"), P(6));
	ASSERT_EQ(weft_map_swap(&m, S("new"), NULL, NULL), 0);
	load_is(&m, S("new"), NULL);

	/* load_or_store: 0 and the value present, or ENOENT having stored. */
	ASSERT_EQ(weft_map_load_or_store(&m, S("a"), P(7), &v), 0);
	ASSERT_PTR_EQ(v, P(4));
	load_is(&m, S("a"), P(4));
	ASSERT_EQ(weft_map_load_or_store(&m, S("los"), P(8), &v), ENOENT);
	ASSERT_PTR_EQ(v, P(8));
	ASSERT_EQ(weft_map_load_or_store(&m, S("los"), P(9), NULL), 0);
	load_is(&m, S("los"), P(8));
	ASSERT_EQ(weft_map_load_or_store(&m, S("losnull"), NULL, &v), ENOENT);
	ASSERT_PTR_EQ(v, NULL);
	v = P(0xdead);
	ASSERT_EQ(weft_map_load_or_store(&m, S("losnull"), P(1), &v), 0);
	ASSERT_PTR_EQ(v, NULL);

	/* compare_and_swap: 0, EAGAIN (another value), ENOENT (no key). */
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("a"), P(4), P(10)), 0);
	load_is(&m, S("a"), P(10));
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("a"), P(4), P(11)), EAGAIN);
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("a"), NULL, P(11)), EAGAIN);
	load_is(&m, S("a"), P(10));
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("nokey"), NULL, P(1)), ENOENT);
	ASSERT_EQ(weft_map_load(&m, S("nokey"), NULL), ENOENT);
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("losnull"), NULL, P(12)), 0);
	load_is(&m, S("losnull"), P(12));
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("losnull"), P(12), NULL), 0);
	load_is(&m, S("losnull"), NULL);

	/* delete: 0 and the value, then ENOENT; the key can come back. */
	int64_t n = weft_map_len(&m);
	ASSERT_EQ(weft_map_delete(&m, S("a"), &v), 0);
	ASSERT_PTR_EQ(v, P(10));
	ASSERT_EQ(weft_map_len(&m), n - 1);
	v = P(0xdead);
	ASSERT_EQ(weft_map_delete(&m, S("a"), &v), ENOENT);
	ASSERT_PTR_EQ(v, P(0xdead));
	ASSERT_EQ(weft_map_load(&m, S("a"), NULL), ENOENT);
	ASSERT_EQ(weft_map_compare_and_swap(&m, S("a"), P(10), P(1)), ENOENT);
	ASSERT_EQ(weft_map_delete(&m, S("losnull"), &v), 0);
	ASSERT_PTR_EQ(v, NULL);
	ASSERT_EQ(weft_map_delete(&m, S("los"), NULL), 0);
	ASSERT_EQ(weft_map_len(&m), n - 3);

	/* compare_and_delete: EAGAIN (another value: kept), 0 (removed),
	 * ENOENT (no key); a NULL value compares like any other. */
	ASSERT_EQ(weft_map_store(&m, S("cad"), P(20)), 0);
	ASSERT_EQ(weft_map_store(&m, S("cadnull"), NULL), 0);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cad"), P(21)), EAGAIN);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cad"), NULL), EAGAIN);
	load_is(&m, S("cad"), P(20));
	ASSERT_EQ(weft_map_len(&m), n - 1);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cad"), P(20)), 0);
	ASSERT_EQ(weft_map_load(&m, S("cad"), NULL), ENOENT);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cad"), P(20)), ENOENT);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("nokey"), NULL), ENOENT);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cadnull"), P(1)), EAGAIN);
	ASSERT_EQ(weft_map_compare_and_delete(&m, S("cadnull"), NULL), 0);
	ASSERT_EQ(weft_map_len(&m), n - 3);
	ASSERT_EQ(weft_map_swap(&m, S("cad"), P(22), &v), ENOENT);
	load_is(&m, S("cad"), P(22));
	ASSERT_EQ(weft_map_delete(&m, S("cad"), NULL), 0);
	ASSERT_EQ(weft_map_load_or_store(&m, S("a"), P(13), &v), ENOENT);
	ASSERT_PTR_EQ(v, P(13));
	ASSERT_EQ(weft_map_swap(&m, S("los"), P(14), &v), ENOENT);
	ASSERT_EQ(weft_map_store(&m, S("losnull"), P(15)), 0);
	load_is(&m, S("a"), P(13));
	load_is(&m, S("los"), P(14));
	load_is(&m, S("losnull"), P(15));
	ASSERT_EQ(weft_map_len(&m), n);

	/* range visits each key once with its value; a nonzero return stops
	 * it and is returned. */
	struct tally t = tally(&m);
	ASSERT_EQ(t.calls, n);
	struct tally stop = {.stop_at = 3};
	ASSERT_EQ(weft_map_range(&m, tally_fn, &stop), 7);
	ASSERT_EQ(stop.calls, 3);

	/* clear empties the map, which stays usable. */
	weft_map_clear(&m);
	ASSERT_EQ(weft_map_len(&m), 0);
	ASSERT_EQ(weft_map_load(&m, S("a"), NULL), ENOENT);
	ASSERT_EQ(weft_map_load(&m, NULL, 0, NULL), ENOENT);
	ASSERT_EQ(tally(&m).calls, 0);
	weft_map_clear(&m);
	ASSERT_EQ(weft_map_store(&m, S("a"), P(16)), 0);
	load_is(&m, S("a"), P(16));
	ASSERT_EQ(weft_map_len(&m), 1);

	/* destroy frees it all and leaves an empty map, ready again. */
	weft_map_destroy(&m);
	ASSERT_EQ(weft_map_len(&m), 0);
	ASSERT_EQ(weft_map_load(&m, S("a"), NULL), ENOENT);
	ASSERT_EQ(weft_map_store(&m, S("b"), P(17)), 0);
	load_is(&m, S("b"), P(17));
	weft_map_destroy(&m);
	weft_map_destroy(&m);
	weft_map_destroy(NULL);
}

/*
 * Every call's result codes and out-parameters, on a goroutine (the
 * lock-free paths). Guards: NULL values taken for absent keys, an empty or
 * long key mishandled, a key that is not copied (the caller's buffer
 * changed under the map), an out-parameter written on ENOENT, wrong codes
 * from swap/load_or_store/compare_and_swap, delete not handing back the
 * value, a compare_and_delete that removes another value or keeps the
 * count, a deleted key that cannot come back, clear or destroy leaving
 * something behind.
 */
TEST(basic_semantics)
{
	check_basic_semantics();
}

/* The same on a foreign thread, where every call takes the map's lock. */
TEST_THREAD(basic_semantics_foreign_thread)
{
	check_basic_semantics();
}

/* ---------------------------------------------------------------- growth */

/*
 * 200,000 keys stored one by one while every third step deletes an earlier
 * key, so the table is rebuilt many times with tombstones in it; len and
 * sampled loads are checked as it goes, every key and a range at the end,
 * then everything is deleted and the map reused. Guards: a rebuild that
 * loses or duplicates live entries or resurrects deleted ones, a probe that
 * stops too early, a count that drifts.
 */
TEST(growth_with_interleaved_deletes)
{
	unsigned n = TEST_SIZE(200000, 20000);
	uint8_t *present = calloc(n, 1);
	ASSERT(present);
	weft_map m = WEFT_MAP_INIT;
	char key[40];
	int64_t live = 0;
	uint32_t rng = 12345;
	for (unsigned i = 0; i < n; i++) {
		ASSERT_EQ(weft_map_store(&m, key, key_of(key, "g", i), P(i + 1)), 0);
		present[i] = 1;
		live++;
		if (i % 3 == 2) {
			unsigned j = test_rand32(&rng) % i;
			void *v = NULL;
			int rc = weft_map_delete(&m, key, key_of(key, "g", j), &v);
			ASSERT_EQ(rc, present[j] ? 0 : ENOENT);
			if (present[j]) {
				ASSERT_PTR_EQ(v, P(j + 1));
				present[j] = 0;
				live--;
			}
		}
		if (i % 1024 == 0) {
			ASSERT_EQ(weft_map_len(&m), live);
			unsigned j = test_rand32(&rng) % (i + 1);
			void *v = NULL;
			ASSERT_EQ(weft_map_load(&m, key, key_of(key, "g", j), &v),
			          present[j] ? 0 : ENOENT);
		}
	}
	int64_t sum = 0;
	for (unsigned i = 0; i < n; i++) {
		void *v = NULL;
		ASSERT_EQ(weft_map_load(&m, key, key_of(key, "g", i), &v), present[i] ? 0 : ENOENT);
		if (present[i]) {
			ASSERT_PTR_EQ(v, P(i + 1));
			sum += i + 1;
		}
	}
	ASSERT_EQ(weft_map_len(&m), live);
	struct tally t = tally(&m);
	ASSERT_EQ(t.calls, live);
	ASSERT_EQ(t.sum, sum);
	for (unsigned i = 0; i < n; i++)
		ASSERT_EQ(weft_map_delete(&m, key, key_of(key, "g", i), NULL),
		          present[i] ? 0 : ENOENT);
	ASSERT_EQ(weft_map_len(&m), 0);
	ASSERT_EQ(tally(&m).calls, 0);
	ASSERT_EQ(weft_map_store(&m, S("again"), P(1)), 0);
	load_is(&m, S("again"), P(1));
	weft_map_destroy(&m);
	free(present);
}

/* Bytes malloc has handed out and not had back (0 where unknown). */
static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
	return mallinfo2().uordblks;
#else
	return 0;
#endif
}

/*
 * A goroutine stores and deletes 400,000 distinct keys (a few others stay
 * live throughout), without ever switching: the heap in use after the
 * first tenth does not grow by more than 64 KiB. Guards: tombstones carried
 * into rebuilt tables (the table would grow with every key ever stored),
 * retired tables and entries never freed while their writer keeps running.
 * (Memory is measured with glibc's mallinfo2(); the sanitizers' allocators
 * are not glibc's, so there the churn runs unmeasured.)
 */
TEST(tombstone_churn_keeps_memory_bounded)
{
	unsigned n = TEST_SIZE(400000, 50000);
	weft_map m = WEFT_MAP_INIT;
	char key[40];
	for (unsigned i = 0; i < 10; i++)
		ASSERT_EQ(weft_map_store(&m, key, key_of(key, "stay", i), P(i)), 0);
	size_t base = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t len = key_of(key, "churn", i);
		ASSERT_EQ(weft_map_store(&m, key, len, P(i)), 0);
		ASSERT_EQ(weft_map_delete(&m, key, len, NULL), 0);
		if (i == n / 10)
			base = heap_in_use();
	}
	size_t now = heap_in_use();
	if (!TEST_ASAN && !TEST_TSAN)
		ASSERT_LT((int64_t)now - (int64_t)base, 64 * 1024);
	ASSERT_EQ(weft_map_len(&m), 10);
	for (unsigned i = 0; i < 10; i++)
		load_is(&m, key, key_of(key, "stay", i), P(i));
	weft_map_destroy(&m);
}

/* ---------------------------------------------------------------- out of memory */

/* The map's content is exactly keys "o:0" .. "o:<n-1>" with values 1.. */
static void check_prefix(weft_map *m, unsigned n)
{
	char key[40];
	ASSERT_EQ(weft_map_len(m), n);
	for (unsigned i = 0; i < n; i++)
		load_is(m, key, key_of(key, "o", i), P(i + 1));
	ASSERT_EQ(weft_map_load(m, key, key_of(key, "o", n), NULL), ENOENT);
	ASSERT_EQ(tally(m).calls, n);
}

/*
 * Each allocation of 200 stores of new keys (a first table and five
 * rebuilds among them) fails in turn: each failing store returns ENOMEM and
 * leaves the map exactly as it was. With every allocation failing, what
 * needs no memory still works (loads, writes to present keys, delete,
 * storing a deleted key again) and clear still empties the map; new keys
 * fail with their out-parameters untouched. Under ASan, nothing leaks.
 * Guards: a rebuild published before all its memory is had, an entry or
 * table leaked on the error path, ENOMEM where no memory is needed.
 */
TEST_THREAD(out_of_memory_leaves_map_unchanged)
{
	weft_map m = WEFT_MAP_INIT;
	char key[40];
	/* Start the runtime first: only the map's allocations should fail. */
	ASSERT_EQ(weft_map_store(&m, S("warm"), NULL), 0);
	weft_map_destroy(&m);

	int multi = 0; /* stores that failed more than once: they rebuilt */
	for (unsigned i = 0; i < 200; i++) {
		size_t len = key_of(key, "o", i);
		for (long k = 1;; k++) {
			weft__alloc_fail_after(k, 0);
			int rc = weft_map_store(&m, key, len, P(i + 1));
			weft__alloc_fail_after(0, 0);
			if (rc == 0)
				break;
			ASSERT_EQ(rc, ENOMEM);
			ASSERT_LT(k, 4);
			multi += k == 2;
			if (i % 16 == 0 || k > 1)
				check_prefix(&m, i);
		}
	}
	ASSERT_EQ(multi, 6);
	check_prefix(&m, 200);

	weft__alloc_fail_after(1, 1);
	void *v = P(0xdead);
	ASSERT_EQ(weft_map_store(&m, S("new"), P(1)), ENOMEM);
	ASSERT_EQ(weft_map_swap(&m, S("new"), P(1), &v), ENOMEM);
	ASSERT_EQ(weft_map_load_or_store(&m, S("new"), P(1), &v), ENOMEM);
	ASSERT_PTR_EQ(v, P(0xdead));
	ASSERT_EQ(weft_map_load(&m, S("new"), NULL), ENOENT);
	ASSERT_EQ(weft_map_store(&m, key, key_of(key, "o", 0), P(100)), 0);
	ASSERT_EQ(weft_map_swap(&m, key, key_of(key, "o", 1), P(101), &v), 0);
	ASSERT_EQ(weft_map_compare_and_swap(&m, key, key_of(key, "o", 2), P(3), P(102)), 0);
	ASSERT_EQ(weft_map_delete(&m, key, key_of(key, "o", 3), NULL), 0);
	ASSERT_EQ(weft_map_load_or_store(&m, key, key_of(key, "o", 3), P(103), NULL), ENOENT);
	load_is(&m, key, key_of(key, "o", 3), P(103));
	ASSERT_EQ(weft_map_len(&m), 200);
	weft_map_clear(&m);
	ASSERT_EQ(weft_map_len(&m), 0);
	ASSERT_EQ(tally(&m).calls, 0);
	ASSERT_EQ(weft_map_load(&m, key, key_of(key, "o", 0), NULL), ENOENT);
	weft__alloc_fail_after(0, 0);

	for (unsigned i = 0; i < 300; i++)
		ASSERT_EQ(weft_map_store(&m, key, key_of(key, "o", i), P(i + 1)), 0);
	check_prefix(&m, 300);
	weft_map_destroy(&m);
}

/* ---------------------------------------------------------------- publication */

struct msg {
	unsigned idx, seq;
	uint64_t check; /* a function of idx and seq, written before the store */
};

static uint64_t msg_check(unsigned idx, unsigned seq)
{
	return ((uint64_t)idx << 32 | seq) * 0x9E3779B97F4A7C15ull;
}

/* Keys "s:0" .. "s:<NSHARED-1>", values struct msg *, which are freed only
 * at the end (a reader may still hold one). */
enum { NSHARED = 32 };

struct shared {
	weft_map *m;
	atomic_int stop;
	struct msg **msgs; /* every message made, for freeing at the end */
	unsigned nmsgs, cap;
	atomic_long seen; /* messages loaded and checked */
	weft_wg done;     /* shared_writer_go has returned */
};

/* Load a random shared key; if present its message must be whole. */
static void shared_read(struct shared *s, uint32_t *rng)
{
	char key[40];
	unsigned idx = test_rand32(rng) % NSHARED;
	void *v = NULL;
	if (weft_map_load(s->m, key, key_of(key, "s", idx), &v) != 0)
		return;
	struct msg *g = v;
	ASSERT_EQ(g->idx, idx);
	ASSERT_EQ(g->check, msg_check(g->idx, g->seq));
	atomic_fetch_add_explicit(&s->seen, 1, memory_order_relaxed);
}

/* The one writer of the shared keys: new messages through store, swap,
 * load_or_store and compare_and_swap, and deletes, until told to stop or
 * out of room. */
static void shared_writer(void *arg)
{
	struct shared *s = arg;
	uint32_t rng = 777;
	char key[40];
	while (!atomic_load(&s->stop) && s->nmsgs < s->cap) {
		unsigned idx = test_rand32(&rng) % NSHARED;
		size_t len = key_of(key, "s", idx);
		struct msg *g = malloc(sizeof *g);
		ASSERT(g);
		*g = (struct msg){idx, s->nmsgs, msg_check(idx, s->nmsgs)};
		s->msgs[s->nmsgs++] = g;
		void *old = NULL;
		switch (test_rand32(&rng) % 5) {
		case 0: ASSERT_EQ(weft_map_store(s->m, key, len, g), 0); break;
		case 1: weft_map_swap(s->m, key, len, g, NULL); break;
		case 2: weft_map_load_or_store(s->m, key, len, g, NULL); break;
		case 3:
			if (weft_map_load(s->m, key, len, &old) == 0)
				ASSERT_EQ(weft_map_compare_and_swap(s->m, key, len, old, g), 0);
			break;
		default: weft_map_delete(s->m, key, len, NULL); break;
		}
		if (s->nmsgs % 16 == 0)
			weft_yield();
	}
}

static void shared_writer_go(void *arg)
{
	struct shared *s = arg;
	shared_writer(s);
	weft_wg_done(&s->done);
}

static void shared_free(struct shared *s)
{
	for (unsigned i = 0; i < s->nmsgs; i++)
		free(s->msgs[i]);
	free(s->msgs);
}

struct reader {
	struct shared *s;
	uint32_t rng;
	struct steps run;
};

static void reader_step(void *arg, long i)
{
	struct reader *r = arg;
	(void)i;
	shared_read(r->s, &r->rng);
}

/*
 * One goroutine writes messages (plain memory) and stores pointers to them;
 * two goroutines and a foreign thread load them and read the messages,
 * which must be whole. Under TSan this also says that a store publishes
 * what was written before it to the load that sees it: no report. Guards: a
 * store that makes the pointer visible before the entry (a torn message), a
 * missing happens-before edge for TSan (a false race report).
 */
TEST(store_publishes_value_to_load)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_map m = WEFT_MAP_INIT;
	static struct shared s;
	s = (struct shared){.m = &m, .cap = TEST_SIZE(50000, 5000)};
	s.msgs = calloc(s.cap, sizeof *s.msgs);
	ASSERT(s.msgs);
	weft_wg wg = WEFT_WG_INIT;
	struct reader r[3];
	for (int i = 0; i < 3; i++)
		r[i] = (struct reader){
			&s, 99u + i, {reader_step, &r[i], TEST_SIZE(200000, 20000), &wg}};
	weft_wg_add(&wg, 3);
	GO(run_steps, &r[0].run);
	GO(run_steps, &r[1].run);
	pthread_t th;
	test_start_thread(&th, run_steps, &r[2].run);
	shared_writer(&s);
	weft_wg_wait(&wg);
	test_join_thread(th);
	ASSERT_GT(atomic_load(&s.seen), 0);
	weft_map_destroy(&m);
	shared_free(&s);
}

/* ---------------------------------------------------------------- reference model */

enum { NKEYS = 400 };

/* A worker's own keys "w<id>:i" and their exact expected state. */
struct worker {
	int id;
	weft_map *m;
	struct shared *s;
	uint32_t rng;
	struct steps run;
	void *ref[NKEYS];
	uint8_t present[NKEYS];
};

static void *rand_val(uint32_t *rng)
{
	uint32_t r = test_rand32(rng);
	return r % 8 == 0 ? NULL : P(r);
}

/* One random operation on key i, checked against (and applied to) the
 * reference. */
static void worker_op(struct worker *w, uint32_t *rng, unsigned i)
{
	char ns[8], key[40];
	snprintf(ns, sizeof ns, "w%d", w->id);
	size_t len = key_of(key, ns, i);
	void *nv = rand_val(rng), *v = P(0xdead), *want = w->present[i] ? w->ref[i] : P(0xdead);
	int exist = w->present[i];
	unsigned op = test_rand32(rng) % 100;
	if (op < 30) {
		ASSERT_EQ(weft_map_load(w->m, key, len, &v), exist ? 0 : ENOENT);
		ASSERT_PTR_EQ(v, want);
	} else if (op < 45) {
		ASSERT_EQ(weft_map_store(w->m, key, len, nv), 0);
		w->ref[i] = nv;
		w->present[i] = 1;
	} else if (op < 62) {
		ASSERT_EQ(weft_map_delete(w->m, key, len, &v), exist ? 0 : ENOENT);
		ASSERT_PTR_EQ(v, want);
		w->present[i] = 0;
	} else if (op < 74) {
		ASSERT_EQ(weft_map_load_or_store(w->m, key, len, nv, &v), exist ? 0 : ENOENT);
		ASSERT_PTR_EQ(v, exist ? want : nv);
		w->ref[i] = v;
		w->present[i] = 1;
	} else if (op < 82) {
		void *old = test_rand32(rng) % 2 ? w->ref[i] : rand_val(rng);
		int rc = weft_map_compare_and_swap(w->m, key, len, old, nv);
		ASSERT_EQ(rc, !exist ? ENOENT : w->ref[i] == old ? 0 : EAGAIN);
		if (rc == 0)
			w->ref[i] = nv;
	} else if (op < 88) {
		void *old = test_rand32(rng) % 2 ? w->ref[i] : rand_val(rng);
		int rc = weft_map_compare_and_delete(w->m, key, len, old);
		ASSERT_EQ(rc, !exist ? ENOENT : w->ref[i] == old ? 0 : EAGAIN);
		if (rc == 0)
			w->present[i] = 0;
	} else {
		ASSERT_EQ(weft_map_swap(w->m, key, len, nv, &v), exist ? 0 : ENOENT);
		ASSERT_PTR_EQ(v, exist ? want : NULL);
		w->ref[i] = nv;
		w->present[i] = 1;
	}
}

static void worker_step(void *arg, long n)
{
	struct worker *w = arg;
	/* Mostly a small hot set, sometimes any key: deletes leave tombstones
	 * and new keys force rebuilds all along. */
	worker_op(w, &w->rng, test_rand32(&w->rng) % (n % 4 ? 64 : NKEYS));
	if (n % 8 == 0)
		shared_read(w->s, &w->rng);
}

struct final_check {
	struct worker *w;
	int nw;
	uint8_t *seen; /* [nw][NKEYS] */
	int shared;
	int64_t calls;
};

static int final_fn(const void *key, size_t keylen, void *val, void *arg)
{
	struct final_check *c = arg;
	char ns[8];
	unsigned i, id;
	c->calls++;
	ASSERT(key_parse(key, keylen, ns, &i));
	if (ns[0] == 's') {
		c->shared++;
		return 0;
	}
	ASSERT_EQ(sscanf(ns, "w%u", &id), 1);
	ASSERT_LT(id, (unsigned)c->nw);
	ASSERT_LT(i, NKEYS);
	ASSERT_EQ(c->seen[id * NKEYS + i]++, 0);
	ASSERT(c->w[id].present[i]);
	ASSERT_PTR_EQ(val, c->w[id].ref[i]);
	return 0;
}

/*
 * Map matches a reference map under random concurrent operations: 6
 * goroutines and 2 foreign pthreads each run random load / store / delete /
 * load_or_store / compare_and_swap / swap on their own 400 keys (so each
 * keeps an exact reference and checks every result as it goes;
 * compare_and_delete too), all of them
 * also loading shared keys that another goroutine keeps replacing. At the
 * end every key is loaded and compared, len must equal the reference count,
 * and a range must visit exactly the reference's keys, once each, with
 * their values. Guards: lost or torn updates between the lock-free and the
 * locked paths, a rebuild that drops a key written meanwhile, a revive into
 * a dropped entry, use of freed tables or entries (ASan), counts that
 * drift.
 */
TEST(map_matches_reference_under_concurrency)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { NG = 6, NT = 2, NW = NG + NT };
	weft_map m = WEFT_MAP_INIT;
	static struct shared s;
	s = (struct shared){.m = &m, .cap = TEST_SIZE(100000, 10000)};
	s.msgs = calloc(s.cap, sizeof *s.msgs);
	ASSERT(s.msgs);
	struct worker *w = calloc(NW, sizeof *w);
	ASSERT(w);
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, NW);
	pthread_t th[NT];
	for (int i = 0; i < NW; i++) {
		w[i] = (struct worker){.id = i,
		                       .m = &m,
		                       .s = &s,
		                       .rng = 1000u + 7919u * i,
		                       .run = {worker_step, &w[i], TEST_SIZE(60000, 6000), &wg}};
		if (i < NG)
			GO(run_steps, &w[i].run);
		else
			test_start_thread(&th[i - NG], run_steps, &w[i].run);
	}
	weft_wg_add(&s.done, 1);
	GO(shared_writer_go, &s);
	weft_wg_wait(&wg);
	for (int i = 0; i < NT; i++)
		test_join_thread(th[i]);
	atomic_store(&s.stop, 1);
	weft_wg_wait(&s.done);

	int64_t live = 0;
	char ns[16], key[40]; /* room for "w" and any int */
	for (int id = 0; id < NW; id++) {
		snprintf(ns, sizeof ns, "w%d", id);
		for (unsigned i = 0; i < NKEYS; i++) {
			void *v = P(0xdead);
			size_t len = key_of(key, ns, i);
			ASSERT_EQ(weft_map_load(&m, key, len, &v), w[id].present[i] ? 0 : ENOENT);
			if (w[id].present[i]) {
				ASSERT_PTR_EQ(v, w[id].ref[i]);
				live++;
			}
		}
	}
	int shared = 0;
	for (unsigned i = 0; i < NSHARED; i++)
		shared += weft_map_load(&m, key, key_of(key, "s", i), NULL) == 0;
	ASSERT_EQ(weft_map_len(&m), live + shared);
	struct final_check c = {.w = w, .nw = NW, .seen = calloc(NW, NKEYS)};
	ASSERT(c.seen);
	ASSERT_EQ(weft_map_range(&m, final_fn, &c), 0);
	ASSERT_EQ(c.calls, live + shared);
	ASSERT_EQ(c.shared, shared);
	ASSERT_GT(atomic_load(&s.seen), 0);
	free(c.seen);
	free(w);
	weft_map_destroy(&m);
	shared_free(&s);
}

/* ---------------------------------------------------------------- reclamation */

enum { LONGKEY = 16 * 1024 };

struct long_reader {
	weft_map *m;
	const char *key; /* LONGKEY bytes */
	atomic_int *stop;
	int foreign;
	long found;
	weft_wg *wg;
};

static void long_reader(void *arg)
{
	struct long_reader *r = arg;
	while (!atomic_load(r->stop)) {
		void *v = NULL;
		int rc = weft_map_load(r->m, r->key, LONGKEY, &v);
		if (rc == 0) {
			ASSERT_PTR_EQ(v, P(1));
			r->found++;
		} else {
			ASSERT_EQ(rc, ENOENT);
		}
		/* A goroutine switches often: grace periods end soon, and
		 * retired memory is freed soon after it is unpublished. */
		if (!r->foreign)
			weft_yield();
	}
	weft_wg_done(r->wg);
}

/* One reader, a goroutine or a foreign thread, loads the long key while
 * the caller stores it, deletes it and churns small keys until a rebuild
 * drops its tombstone, round after round. */
static void race_rebuilds(int foreign, int rounds)
{
	weft_map m = WEFT_MAP_INIT;
	char *big = malloc(LONGKEY), key[40];
	ASSERT(big);
	memset(big, 'L', LONGKEY);
	atomic_int stop = 0;
	weft_wg wg = WEFT_WG_INIT;
	struct long_reader r = {&m, big, &stop, foreign, 0, &wg};
	pthread_t th;
	weft_wg_add(&wg, 1);
	if (foreign)
		test_start_thread(&th, long_reader, &r);
	else
		GO(long_reader, &r);
	for (int k = 0; k < rounds; k++) {
		ASSERT_EQ(weft_map_store(&m, big, LONGKEY, P(1)), 0);
		if (k % 8 == 0)
			weft_yield(); /* let a reader of this P find it too */
		ASSERT_EQ(weft_map_delete(&m, big, LONGKEY, NULL), 0);
		/* More new keys than the 16-slot table takes: a rebuild. */
		for (unsigned i = 0; i < 16; i++) {
			size_t len = key_of(key, "x", i);
			ASSERT_EQ(weft_map_store(&m, key, len, NULL), 0);
			ASSERT_EQ(weft_map_delete(&m, key, len, NULL), 0);
		}
	}
	atomic_store(&stop, 1);
	weft_wg_wait(&wg);
	if (foreign)
		test_join_thread(th);
	ASSERT_GT(r.found, 0);
	weft_map_destroy(&m);
	free(big);
}

/*
 * A goroutine, then a foreign thread, loads a 16 KiB key over and over
 * (hashing and comparing it takes long) while the main goroutine stores
 * it, deletes it and churns small keys until a rebuild drops its
 * tombstone, round after round: the table and the entry a load is reading
 * are retired under it all the time. Guards: retired tables or entries
 * freed before the loads that may still read them are done, a foreign
 * thread reading lock-free with no grace period to protect it (ASan: use
 * after free; elsewhere, garbage values).
 */
TEST(loads_racing_rebuilds_read_no_freed_memory)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	race_rebuilds(0, TEST_SIZE(5000, 1500));
	race_rebuilds(1, TEST_SIZE(5000, 1500));
}

/* ---------------------------------------------------------------- range */

enum { NSTABLE = 300 };

struct ranging {
	weft_map *m;
	atomic_int stop;
	int nchurn;         /* churn writers */
	unsigned churn_max; /* churn keys per writer */
	uint8_t *visits;    /* this range: [NSTABLE] stable keys, then [nchurn][churn_max] */
	long ranges, visited;
	weft_wg wg;
};

static int ranging_fn(const void *key, size_t keylen, void *val, void *arg)
{
	struct ranging *r = arg;
	char ns[8];
	unsigned i, id;
	(void)val;
	ASSERT(key_parse(key, keylen, ns, &i));
	if (ns[0] == 't') {
		ASSERT_LT(i, NSTABLE);
		ASSERT_EQ(r->visits[i]++, 0);
	} else {
		ASSERT_EQ(sscanf(ns, "c%u", &id), 1);
		ASSERT_LT(id, (unsigned)r->nchurn);
		ASSERT_LT(i, r->churn_max);
		ASSERT_EQ(r->visits[NSTABLE + id * r->churn_max + i]++, 0);
	}
	/* Let the writers run (and rebuild) while this range holds its
	 * table. */
	if (++r->visited % 16 == 0)
		weft_yield();
	return 0;
}

static void ranger(void *arg)
{
	struct ranging *r = arg;
	size_t nvis = NSTABLE + (size_t)r->nchurn * r->churn_max;
	do {
		memset(r->visits, 0, nvis);
		ASSERT_EQ(weft_map_range(r->m, ranging_fn, r), 0);
		for (unsigned i = 0; i < NSTABLE; i++)
			ASSERT_EQ(r->visits[i], 1);
		r->ranges++;
	} while (!atomic_load(&r->stop));
	weft_wg_done(&r->wg);
}

struct churner {
	struct ranging *r;
	int id;
	uint32_t rng;
	struct steps run;
};

/* Store a new key and delete an older one (tombstones, rebuilds), and
 * write a new value to a stable key. */
static void churn_step(void *arg, long i)
{
	struct churner *c = arg;
	struct ranging *r = c->r;
	char ns[8], key[40];
	snprintf(ns, sizeof ns, "c%d", c->id);
	ASSERT_EQ(weft_map_store(r->m, key, key_of(key, ns, i), P(i)), 0);
	if (i >= 20)
		ASSERT_EQ(weft_map_delete(r->m, key, key_of(key, ns, i - 20), NULL), 0);
	unsigned t = test_rand32(&c->rng) % NSTABLE;
	ASSERT_EQ(weft_map_store(r->m, key, key_of(key, "t", t), P(i)), 0);
}

/*
 * Two goroutines range over a map over and over while two goroutines and a
 * foreign thread store new keys, delete old ones (many rebuilds) and store
 * new values to 300 keys that stay present; the range callback yields now
 * and then, so rebuilds happen in the middle of ranges. Each present key is
 * visited exactly once per range, every other key at most once. Guards: a
 * range that misses or repeats keys when the table is rebuilt under it, a
 * retired table freed while a range still walks it (ASan).
 */
TEST(range_while_others_store_and_delete)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_map m = WEFT_MAP_INIT;
	char key[40];
	for (unsigned i = 0; i < NSTABLE; i++)
		ASSERT_EQ(weft_map_store(&m, key, key_of(key, "t", i), P(i)), 0);
	static struct ranging r[2];
	for (int k = 0; k < 2; k++) {
		r[k] = (struct ranging){.m = &m, .nchurn = 3, .churn_max = TEST_SIZE(30000, 3000)};
		r[k].visits = malloc(NSTABLE + (size_t)r[k].nchurn * r[k].churn_max);
		ASSERT(r[k].visits);
		weft_wg_add(&r[k].wg, 1);
		GO(ranger, &r[k]);
	}
	weft_wg wg = WEFT_WG_INIT;
	struct churner c[3];
	weft_wg_add(&wg, 3);
	pthread_t th;
	for (int i = 0; i < 3; i++) {
		c[i] = (struct churner){
			&r[0], i, 31u + i, {churn_step, &c[i], r[0].churn_max, &wg}};
		if (i < 2)
			GO(run_steps, &c[i].run);
		else
			test_start_thread(&th, run_steps, &c[i].run);
	}
	weft_wg_wait(&wg);
	test_join_thread(th);
	for (int k = 0; k < 2; k++) {
		atomic_store(&r[k].stop, 1);
		weft_wg_wait(&r[k].wg);
		ASSERT_GT(r[k].ranges, 0);
		free(r[k].visits);
	}
	ASSERT_EQ(weft_map_len(&m), NSTABLE + 3 * 20);
	weft_map_destroy(&m);
}

struct self_writer {
	weft_map *m;
	uint8_t orig[1000];  /* visits of "o:i" */
	uint8_t added[4000]; /* visits of "n:i" */
	unsigned nadded;
	int64_t inner; /* keys seen by the nested range */
};

static int count_fn(const void *key, size_t keylen, void *val, void *arg)
{
	(void)key;
	(void)keylen;
	(void)val;
	(*(int64_t *)arg)++;
	return 0;
}

static int self_writer_fn(const void *key, size_t keylen, void *val, void *arg)
{
	struct self_writer *s = arg;
	char ns[8], buf[40];
	unsigned i;
	ASSERT(key_parse(key, keylen, ns, &i));
	if (ns[0] == 'o') {
		ASSERT_LT(i, 1000);
		ASSERT_EQ(s->orig[i]++, 0);
		ASSERT_PTR_EQ(val, P(i));
	} else {
		ASSERT_EQ(ns[0], 'n');
		ASSERT_LT(i, s->nadded);
		ASSERT_EQ(s->added[i]++, 0);
	}
	if (s->nadded == 0)
		ASSERT_EQ(weft_map_range(s->m, count_fn, &s->inner), 0);
	/* Two new keys per visit (rebuilds), and delete one of them again. */
	if (s->nadded + 2 <= sizeof s->added) {
		unsigned a = s->nadded;
		ASSERT_EQ(weft_map_store(s->m, buf, key_of(buf, "n", a), P(a)), 0);
		ASSERT_EQ(weft_map_store(s->m, buf, key_of(buf, "n", a + 1), P(a + 1)), 0);
		ASSERT_EQ(weft_map_delete(s->m, buf, key_of(buf, "n", a), NULL), 0);
		s->nadded += 2;
	}
	if ((s->nadded & 15) == 0)
		weft_yield();
	return 0;
}

struct clearing {
	weft_map *m;
	int calls;
};

static int clearing_fn(const void *key, size_t keylen, void *val, void *arg)
{
	struct clearing *c = arg;
	(void)key;
	(void)keylen;
	(void)val;
	if (c->calls++ == 0) {
		weft_map_clear(c->m);
		weft_yield();
		ASSERT_EQ(weft_map_store(c->m, S("after"), c), 0);
	}
	return 0;
}

/*
 * A range whose callback stores new keys (enough for several rebuilds),
 * deletes some of them, runs a nested range and yields: each of the 1,000
 * keys present before is visited exactly once with its value, each new key
 * at most once, and the map ends with the right content. Then a callback
 * that clears the map on its first call: the range ends without visiting a
 * cleared key. Guards: a range that walks a table freed by a rebuild or a
 * clear its own callback caused (ASan), a deadlock when the callback calls
 * back into the map (a range that holds the lock), repeated or missed keys.
 */
TEST(range_callback_writes_to_the_map)
{
	weft_map m = WEFT_MAP_INIT;
	char key[40];
	static struct self_writer s;
	s = (struct self_writer){.m = &m};
	for (unsigned i = 0; i < 1000; i++)
		ASSERT_EQ(weft_map_store(&m, key, key_of(key, "o", i), P(i)), 0);
	ASSERT_EQ(weft_map_range(&m, self_writer_fn, &s), 0);
	for (unsigned i = 0; i < 1000; i++)
		ASSERT_EQ(s.orig[i], 1);
	ASSERT_EQ(s.inner, 1000);
	ASSERT_GE(s.nadded, 2000);
	ASSERT_EQ(weft_map_len(&m), 1000 + s.nadded / 2);
	for (unsigned i = 0; i < s.nadded; i++)
		ASSERT_EQ(weft_map_load(&m, key, key_of(key, "n", i), NULL), i % 2 ? 0 : ENOENT);

	struct clearing c = {&m, 0};
	ASSERT_EQ(weft_map_range(&m, clearing_fn, &c), 0);
	ASSERT_EQ(c.calls, 1);
	ASSERT_EQ(weft_map_len(&m), 1);
	load_is(&m, S("after"), &c);
	weft_map_destroy(&m);
}
