/* SPDX-License-Identifier: MIT */
/*
 * pool_test.c - weft_pool (Go's sync.Pool): the empty and zero pools, new_fn,
 * a put and get on one goroutine, the per-P limit (excess to free_fn, or kept
 * without one), stealing from another P's cache, foreign threads, P count
 * changes while the pool is in use, destroy and reuse, and a stress run in
 * which every object is checked to have one holder at a time and destroy to
 * free each object exactly once.
 *
 * The test objects are counted: obj_new (new_fn) registers each one, obj_free
 * (free_fn) marks it freed (the memory stays until the test ends, so a double
 * free or a hand-out after free is seen, not a crash). A holder takes an
 * object with a relaxed exchange of its owner flag: a second holder at the
 * same time fails the test. The flag is relaxed on purpose, so it orders
 * nothing for ThreadSanitizer: the plain stamp a holder writes and the next
 * holder reads is ordered only by the pool's own annotations, and a pool
 * that forgot them is reported as a race under TSan.
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- counted objects */

struct obj {
	int owner;            /* 1 while held; relaxed atomics only */
	atomic_int freed;     /* set once by obj_free */
	uint64_t stamp;       /* plain: written by each holder, checked by the next */
	struct obj *all_next; /* the registry; written once before publication */
};

static struct obj *_Atomic all_objs;
static atomic_long n_created, n_freed;

static void reg_reset(void)
{
	atomic_store(&all_objs, NULL);
	atomic_store(&n_created, 0);
	atomic_store(&n_freed, 0);
}

/* Free every object made by the test (at its end, no pool call running). */
static void reg_release(void)
{
	struct obj *o = atomic_exchange(&all_objs, NULL);
	while (o) {
		struct obj *next = o->all_next;
		free(o);
		o = next;
	}
}

static void *obj_new(void *arg)
{
	(void)arg;
	struct obj *o = calloc(1, sizeof *o);
	ASSERT(o != NULL);
	o->all_next = atomic_load(&all_objs);
	while (!atomic_compare_exchange_weak(&all_objs, &o->all_next, o))
		;
	atomic_fetch_add(&n_created, 1);
	return o;
}

static void obj_free(void *p, void *arg)
{
	(void)arg;
	struct obj *o = p;
	if (atomic_exchange(&o->freed, 1))
		FAIL("object %p given to free_fn twice", p);
	if (__atomic_load_n(&o->owner, __ATOMIC_RELAXED))
		FAIL("object %p given to free_fn while held", p);
	atomic_fetch_add(&n_freed, 1);
}

/* Become obj's holder; stamp it with who and when. */
static struct obj *take(void *p, uint64_t stamp)
{
	struct obj *o = p;
	ASSERT(o != NULL);
	if (atomic_load(&o->freed))
		FAIL("pool handed out %p after giving it to free_fn", p);
	if (__atomic_exchange_n(&o->owner, 1, __ATOMIC_RELAXED))
		FAIL("pool handed out %p to two holders at once", p);
	o->stamp = stamp; /* after the last holder's write: ordered by the pool */
	return o;
}

/* Stop holding o and put it back. */
static void give(weft_pool *pool, struct obj *o, uint64_t stamp)
{
	ASSERT_EQ(o->stamp, stamp);
	__atomic_store_n(&o->owner, 0, __ATOMIC_RELAXED);
	weft_pool_put(pool, o);
}

/* ---------------------------------------------------------------- basics */

/*
 * An all-zero pool and WEFT_POOL_INIT(NULL, NULL, NULL) are empty (get is
 * NULL), hand back what was put, and are empty again after; destroy resets
 * them and accepts NULL. Guards: get inventing objects, a put that is lost.
 */
static void zero_pool_body(void)
{
	weft_pool z = {0};
	weft_pool i = WEFT_POOL_INIT(NULL, NULL, NULL);
	int a, b;
	weft_pool *pools[] = {&z, &i};
	for (int k = 0; k < 2; k++) {
		weft_pool *p = pools[k];
		ASSERT_PTR_EQ(weft_pool_get(p), NULL);
		weft_pool_put(p, &a);
		ASSERT_PTR_EQ(weft_pool_get(p), &a);
		ASSERT_PTR_EQ(weft_pool_get(p), NULL);
		weft_pool_put(p, &a);
		weft_pool_put(p, &b);
		void *x = weft_pool_get(p), *y = weft_pool_get(p);
		ASSERT((x == &a && y == &b) || (x == &b && y == &a));
		ASSERT_PTR_EQ(weft_pool_get(p), NULL);
		weft_pool_put(p, &a);
		weft_pool_destroy(p); /* forgets &a: no free_fn */
		ASSERT_PTR_EQ(weft_pool_get(p), NULL);
	}
	weft_pool_destroy(NULL);
}

TEST(zero_pool_is_empty)
{
	zero_pool_body();
}

/* The same from the process's main thread, a foreign thread: its puts go
 * to some P's shared stack, its gets steal them back. */
TEST_THREAD(zero_pool_is_empty_foreign)
{
	zero_pool_body();
}

/*
 * new_fn makes an object only when the pool is empty; a put then a get on
 * the same goroutine returns that same object; destroy gives exactly the
 * cached objects to free_fn and leaves a pool that works again. Guards: get
 * calling new_fn before looking in the cache, destroy freeing what a holder
 * has, a pool unusable after destroy.
 */
TEST(new_fn_when_empty)
{
	reg_reset();
	weft_pool p = WEFT_POOL_INIT(obj_new, obj_free, NULL);
	struct obj *a = take(weft_pool_get(&p), 1);
	ASSERT_EQ(atomic_load(&n_created), 1);
	struct obj *b = take(weft_pool_get(&p), 2);
	ASSERT_EQ(atomic_load(&n_created), 2);
	ASSERT(a != b);
	give(&p, a, 1);
	for (int i = 0; i < 100; i++) {
		struct obj *x = take(weft_pool_get(&p), 3);
		ASSERT_PTR_EQ(x, a);
		give(&p, x, 3);
	}
	ASSERT_EQ(atomic_load(&n_created), 2);
	give(&p, b, 2);
	struct obj *x = take(weft_pool_get(&p), 4);
	struct obj *y = take(weft_pool_get(&p), 5);
	ASSERT((x == a && y == b) || (x == b && y == a));
	ASSERT_EQ(atomic_load(&n_created), 2);
	give(&p, x, 4); /* y stays held through destroy */
	weft_pool_destroy(&p);
	ASSERT_EQ(atomic_load(&n_freed), 1);
	ASSERT_EQ(atomic_load(&x->freed), 1);

	/* Usable again: x is gone, so get makes a new one. */
	struct obj *z = take(weft_pool_get(&p), 6);
	ASSERT_EQ(atomic_load(&n_created), 3);
	give(&p, z, 6);
	give(&p, y, 5);
	weft_pool_destroy(&p);
	ASSERT_EQ(atomic_load(&n_freed), 3);
	reg_release();
}

/* ---------------------------------------------------------------- the per-P limit */

/*
 * On one P, a pool keeps 1 + WEFT_POOL_PER_P objects (the private slot and
 * the shared stack) and gives the rest to free_fn; destroy frees the kept
 * ones. Guards: a put to the private slot that overwrites an object there
 * (lost: too few frees), a shared stack that overruns its limit or drops
 * the excess instead of freeing it.
 */
TEST(excess_goes_to_free_fn)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	reg_reset();
	enum { N = 3 * WEFT_POOL_PER_P };
	weft_pool p = WEFT_POOL_INIT(NULL, obj_free, NULL);
	for (int i = 0; i < N; i++)
		weft_pool_put(&p, obj_new(NULL));
	ASSERT_EQ(atomic_load(&n_freed), N - 1 - WEFT_POOL_PER_P);
	weft_pool_destroy(&p);
	ASSERT_EQ(atomic_load(&n_freed), N);
	reg_release();
}

/*
 * Without a free_fn the pool keeps every object: N puts, then N gets hand
 * back N distinct objects of the N, then NULL. Destroy with a free_fn set
 * afterwards sees them all again. Guards: overflow objects lost or never
 * looked at by get, an object handed out twice.
 */
TEST(excess_kept_without_free_fn)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	reg_reset();
	enum { N = 5 * WEFT_POOL_PER_P };
	static struct obj *got[N];
	weft_pool p = WEFT_POOL_INIT(NULL, NULL, NULL);
	for (int i = 0; i < N; i++)
		weft_pool_put(&p, obj_new(NULL));
	for (int i = 0; i < N; i++)
		got[i] = take(weft_pool_get(&p), (uint64_t)i);
	ASSERT_PTR_EQ(weft_pool_get(&p), NULL);
	for (int i = 0; i < N; i++)
		give(&p, got[i], (uint64_t)i);
	p.free_fn = obj_free;
	weft_pool_destroy(&p);
	ASSERT_EQ(atomic_load(&n_freed), N);
	ASSERT_EQ(atomic_load(&n_created), N);
	reg_release();
}

/* ---------------------------------------------------------------- stealing */

struct thief {
	weft_pool *pool;
	int proc; /* the P the thief ran on */
	int got;  /* objects it found */
	atomic_int done;
};

static void thief_run(void *arg)
{
	struct thief *t = arg;
	t->proc = weft_self_proc();
	void *o;
	while ((o = weft_pool_get(t->pool)) != NULL) {
		take(o, 7);
		t->got++;
	}
	atomic_store(&t->done, 1);
}

/*
 * One goroutine fills its P's cache (private slot and shared stack) and then
 * keeps its P busy without switching, so the thief it starts must run on
 * the other P: the thief finds the whole shared stack there; the private
 * slot stays with its owner, who gets it back. Guards: get not stealing
 * from other Ps (the thief finds nothing), a thief taking the private slot
 * (a race with its owner).
 */
TEST(get_steals_from_another_p)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	reg_reset();
	enum { K = 1 + WEFT_POOL_PER_P };
	weft_pool p = WEFT_POOL_INIT(NULL, obj_free, NULL);
	for (int i = 0; i < K; i++)
		weft_pool_put(&p, obj_new(NULL));
	ASSERT_EQ(atomic_load(&n_freed), 0);
	int me = weft_self_proc();
	static struct thief t;
	t = (struct thief){.pool = &p};
	GO(thief_run, &t);
	int64_t deadline = test_now_ns() + 10000 * TEST_MS * test_slowdown();
	while (!atomic_load(&t.done)) {
		if (test_now_ns() > deadline)
			FAIL("the thief never ran on the other P");
		test_spin_ns(10000); /* no switch: this P stays ours */
	}
	ASSERT_NE(t.proc, me);
	ASSERT_EQ(t.got, WEFT_POOL_PER_P);
	struct obj *o = take(weft_pool_get(&p), 8); /* the private slot */
	ASSERT_PTR_EQ(weft_pool_get(&p), NULL);
	give(&p, o, 8);
	/* The thief's objects go back too: destroy frees all K, once each. */
	struct obj *x = atomic_load(&all_objs);
	for (; x; x = x->all_next)
		if (__atomic_load_n(&x->owner, __ATOMIC_RELAXED)) {
			__atomic_store_n(&x->owner, 0, __ATOMIC_RELAXED);
			weft_pool_put(&p, x);
		}
	weft_pool_destroy(&p);
	ASSERT_EQ(atomic_load(&n_freed), K);
	reg_release();
}

/* ---------------------------------------------------------------- stress */

struct churn {
	weft_pool *pool;
	int iters; /* rounds, or until *stop when stop is set */
	atomic_int *stop;
	int blocking; /* do some rounds inside weft_blocking_begin/end */
	uint32_t seed;
	atomic_int *max_proc; /* highest P id seen, or NULL */
	weft_wg *wg;
};

/* One round: hold 1 to 3 objects at once, then give them back. */
static void churn_round(struct churn *c, uint64_t base)
{
	struct obj *held[3];
	int k = 1 + (int)(test_rand32(&c->seed) % 3);
	for (int j = 0; j < k; j++)
		held[j] = take(weft_pool_get(c->pool), base + (uint64_t)j);
	for (int j = k - 1; j >= 0; j--)
		give(c->pool, held[j], base + (uint64_t)j);
}

static void churn_run(void *arg)
{
	struct churn *c = arg;
	uint64_t tag = (uint64_t)c->seed << 32;
	for (int i = 0; c->stop ? !atomic_load(c->stop) : i < c->iters; i++) {
		if (c->blocking && i % 64 == 0) {
			/* Long enough for sysmon to hand our P to another M,
			 * whose goroutines then use that P's private slot while
			 * we use the pool as a foreign caller. */
			weft_blocking_begin();
			test_spin_ns(100000);
			for (int j = 0; j < 32; j++)
				churn_round(c, tag + 4 * (uint64_t)(i + j));
			weft_blocking_end();
		}
		churn_round(c, tag + 4 * (uint64_t)i);
		if (c->max_proc) {
			int pid = weft_self_proc();
			int old = atomic_load(c->max_proc);
			while (pid > old && !atomic_compare_exchange_weak(c->max_proc, &old, pid))
				;
		}
		if (test_rand32(&c->seed) % 8 == 0)
			weft_yield();
	}
	if (c->wg)
		weft_wg_done(c->wg);
}

enum { CHURN_G = 8 };

struct churn_set {
	struct churn g[CHURN_G];
	struct churn th;
	struct churn blocker;
	pthread_t thread;
	weft_wg wg;
};

/* Start CHURN_G goroutines, a blocking-section goroutine and a foreign
 * pthread on pool, for iters rounds each or until *stop when stop is set. */
static void churn_start(struct churn_set *s, weft_pool *pool, int iters, atomic_int *stop,
                        atomic_int *max_proc)
{
	*s = (struct churn_set){0};
	weft_wg_add(&s->wg, CHURN_G + 1);
	for (int i = 0; i < CHURN_G; i++) {
		s->g[i] =
			(struct churn){pool, iters, stop, 0, 1000u + (uint32_t)i, max_proc, &s->wg};
		GO(churn_run, &s->g[i]);
	}
	s->blocker = (struct churn){pool, iters / 4, stop, 1, 2000u, NULL, &s->wg};
	GO(churn_run, &s->blocker);
	s->th = (struct churn){pool, iters, stop, 0, 3000u, NULL, NULL};
	test_start_thread(&s->thread, churn_run, &s->th);
}

static void churn_wait(struct churn_set *s)
{
	/* With a timer armed: sysmon's deadlock check does not see a
	 * goroutine still running on a P that weft_set_procs() retired (it
	 * counts only the Ps below the new count), and would declare a
	 * deadlock while one of these finishes on such a P. */
	POLL_UNTIL(weft_wg_wait_until(&s->wg, weft_now() + TEST_MS) == 0, (void)0);
	test_join_thread(s->thread);
}

/* Nobody holds an object, destroy (with a free_fn by then), and every object
 * ever made was freed exactly once. */
static void check_all_freed(weft_pool *pool)
{
	for (struct obj *o = atomic_load(&all_objs); o; o = o->all_next)
		ASSERT_EQ(__atomic_load_n(&o->owner, __ATOMIC_RELAXED), 0);
	pool->free_fn = obj_free;
	weft_pool_destroy(pool);
	ASSERT_EQ(atomic_load(&n_freed), atomic_load(&n_created));
	for (struct obj *o = atomic_load(&all_objs); o; o = o->all_next)
		ASSERT_EQ(atomic_load(&o->freed), 1);
}

/*
 * Goroutines on two Ps, one inside blocking sections and a foreign pthread
 * get and put at once, each holding up to three objects. No object is ever
 * held twice at once or handed out after free_fn; at the end, destroy gives
 * every object made and not freed yet to free_fn exactly once. Guards: a
 * lost or duplicated object anywhere (private slot, shared stacks, steal,
 * overflow list), a blocking section using a P that is no longer its own,
 * destroy missing a P's private slot or shared stack; under TSan, missing
 * happens-before annotations.
 */
static void stress(void (*free_fn)(void *obj, void *arg))
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	reg_reset();
	static weft_pool pool;
	pool = (weft_pool)WEFT_POOL_INIT(obj_new, free_fn, NULL);
	static struct churn_set s;
	churn_start(&s, &pool, TEST_SIZE(100000, 3000), NULL, NULL);
	churn_wait(&s);
	check_all_freed(&pool);
	reg_release();
}

TEST(stress_with_free_fn)
{
	stress(obj_free);
}

/* The same without a free_fn, so the excess goes to the overflow list. */
TEST(stress_without_free_fn)
{
	stress(NULL);
}

/*
 * The P count changes while the pool is busy: from 1 to 2, to 4, and back
 * to 1, which strands objects in the private slots of the retired Ps until
 * destroy. Every object is still freed exactly once, and goroutines did run
 * on the new Ps. Guards: per-P caches that do not grow with the P count (an
 * out-of-range index), destroy missing the caches of retired Ps.
 */
TEST(procs_change_while_in_use)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	reg_reset();
	static weft_pool pool;
	pool = (weft_pool)WEFT_POOL_INIT(obj_new, obj_free, NULL);
	static struct churn_set s;
	static atomic_int max_proc, stop;
	atomic_store(&max_proc, 0);
	atomic_store(&stop, 0);
	churn_start(&s, &pool, 0, &stop, &max_proc);
	weft_sleep(2 * TEST_MS);
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t deadline = test_now_ns() + 10000 * TEST_MS * test_slowdown();
	while (atomic_load(&max_proc) < 1) {
		if (test_now_ns() > deadline)
			FAIL("no goroutine ran on the second P");
		weft_sleep(TEST_MS);
	}
	weft_sleep(5 * TEST_MS);
	ASSERT_EQ(weft_set_procs(4, NULL), 0);
	weft_sleep(5 * TEST_MS);
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	weft_sleep(5 * TEST_MS);
	atomic_store(&stop, 1);
	churn_wait(&s);
	check_all_freed(&pool);
	reg_release();
}
