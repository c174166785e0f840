/* SPDX-License-Identifier: MIT */
/*
 * pipeline_test.c - weft_pipeline: ordered stages deliver in input order
 * across many workers (map, filter and flatmap, windows smaller and larger
 * than the worker count, behind an unordered stage); unordered ones deliver
 * every item once; fan-out really runs a stage's workers at once; a failure
 * in any position (source, each kind of stage, sink) cancels every other
 * stage, returns the first error promptly, leaves no goroutine behind and
 * frees every item exactly once (items are heap objects here, counted; the
 * pipeline's drop functions get what it discards); cancellation from
 * outside (parent cancel, parent deadline, weft_pipeline_cancel, before the
 * start, with a channel source nobody ever closes); batches (their sizes
 * follow the setting, and the function's cost when automatic; a failure or
 * a cancellation mid-batch drops exactly what is left of it; the automatic
 * batch leaves a slow function's items to fan out); buffers, batches and
 * windows bound the items in flight, and are used; the
 * output channel, a channel source, no sink, a foreign thread; bad
 * configurations (EINVAL, ENOMEM at start with nothing run) and misuse
 * (fatal errors, in child processes).
 *
 * Every test ends with the goroutine count back at its start (the harness
 * checks that too), every channel and context freed (weft_stats), and every
 * counted item freed; ASan's leak check runs at exit in the asan build.
 */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SEC (1000 * TEST_MS)
#define HOUR (3600 * SEC)
/* "Promptly": a bound that only a stage that missed the cancellation
 * exceeds. */
#define PROMPT_NS (SEC * test_slowdown())

static weft_pipeline *new_pipeline(weft_ctx *parent, const weft_pipeline_source *src)
{
	weft_pipeline *p = NULL;
	ASSERT_EQ(weft_pipeline_new(&p, parent, src), 0);
	ASSERT(p != NULL);
	return p;
}

static void add(weft_pipeline *p, weft_pipeline_stage st)
{
	ASSERT_EQ(weft_pipeline_add(p, &st), 0);
}

/* A scrambler: some calls yield, a few spin a little, so that workers finish
 * their items out of order. */
static void jitter(uint64_t x)
{
	uint64_t h = x * 0x9E3779B97F4A7C15ull;
	if ((h >> 60) < 5)
		weft_yield();
	if ((h >> 56) == 0)
		test_spin_ns(20000);
}

/* ---------------------------------------------------------------- values */

/* Generator of the values 0..n-1. */
static int gen_count(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	uint64_t n = *(const uint64_t *)arg;
	for (uint64_t i = 0; i < n; i++) {
		int r = weft_pipeline_emit(em, &i);
		if (r)
			return r;
	}
	return 0;
}

static int map_mul3(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	uint64_t x = *(uint64_t *)in;
	jitter(x);
	*(uint64_t *)out = x * 3;
	return 0;
}

static int filter_even(weft_ctx *ctx, void *arg, void *item, bool *keep)
{
	(void)ctx, (void)arg;
	uint64_t x = *(uint64_t *)item;
	jitter(x + 1);
	*keep = x % 2 == 0;
	return 0;
}

/* x % 13 outputs (0 to 12: more than an ordered flatmap keeps ahead of its
 * turn), x * 100 + j. */
static int flat_spread(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	(void)ctx, (void)arg;
	uint64_t x = *(uint64_t *)in;
	jitter(x + 2);
	for (uint64_t j = 0; j < x % 13; j++) {
		uint64_t v = x * 100 + j;
		int r = weft_pipeline_emit(em, &v);
		if (r)
			return r;
		if (j == 4)
			jitter(x + 3);
	}
	return 0;
}

/* The sink's view: the values in arrival order, compared with the
 * sequential result (ordered) or counted (unordered). */
struct collect {
	const uint64_t *want;
	size_t nwant;
	bool ordered;
	size_t got;
	size_t misplaced; /* ordered: values not where expected */
	size_t first_bad;
	uint64_t sum, xor_;
};

static int sink_collect(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	struct collect *c = arg;
	uint64_t v = *(uint64_t *)item;
	if (c->ordered && (c->got >= c->nwant || c->want[c->got] != v)) {
		if (c->misplaced++ == 0)
			c->first_bad = c->got;
	}
	c->got++;
	c->sum += v;
	c->xor_ ^= v * 0x9E3779B97F4A7C15ull;
	return 0;
}

/* The chain gen -> map x3 -> filter even -> flatmap spread, computed
 * sequentially. */
static uint64_t *chain_expected(uint64_t n, size_t *len)
{
	size_t cap = (size_t)n * 13 + 1, k = 0;
	uint64_t *v = malloc(cap * sizeof *v);
	ASSERT(v != NULL);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t x = i * 3;
		if (x % 2)
			continue;
		for (uint64_t j = 0; j < x % 13; j++)
			v[k++] = x * 100 + j;
	}
	*len = k;
	return v;
}

struct chain_cfg {
	bool ordered[3];
	int workers[3];
	size_t window[3];
	size_t buffer[3];
	size_t src_buffer;
};

/* Run the chain with cfg and check the sink's result: every value once, and
 * in order when every stage is ordered. Returns how many values arrived out
 * of their sequential place. */
static size_t run_chain(const struct chain_cfg *cfg, uint64_t n)
{
	int64_t base = weft_num_goroutines();
	size_t nwant;
	uint64_t *want = chain_expected(n, &nwant);
	bool all_ordered = cfg->ordered[0] && cfg->ordered[1] && cfg->ordered[2];
	struct collect c = {.want = want, .nwant = nwant, .ordered = true};
	weft_pipeline_source src = {.gen = gen_count,
	                            .arg = &n,
	                            .item_size = sizeof(uint64_t),
	                            .buffer = cfg->src_buffer};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){.map = map_mul3,
	                             .out_size = sizeof(uint64_t),
	                             .workers = cfg->workers[0],
	                             .ordered = cfg->ordered[0],
	                             .window = cfg->window[0],
	                             .buffer = cfg->buffer[0],
	                             .name = "mul3"});
	add(p, (weft_pipeline_stage){.filter = filter_even,
	                             .workers = cfg->workers[1],
	                             .ordered = cfg->ordered[1],
	                             .window = cfg->window[1],
	                             .buffer = cfg->buffer[1],
	                             .name = "even"});
	add(p, (weft_pipeline_stage){.flatmap = flat_spread,
	                             .out_size = sizeof(uint64_t),
	                             .workers = cfg->workers[2],
	                             .ordered = cfg->ordered[2],
	                             .window = cfg->window[2],
	                             .buffer = cfg->buffer[2],
	                             .name = "spread"});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_collect, &c), 0);
	ASSERT_EQ(weft_pipeline_run(p), 0);
	weft_pipeline_free(p);

	uint64_t sum = 0, x = 0;
	for (size_t i = 0; i < nwant; i++) {
		sum += want[i];
		x ^= want[i] * 0x9E3779B97F4A7C15ull;
	}
	free(want);
	ASSERT_EQ(c.got, nwant);
	ASSERT_EQ(c.sum, sum);
	ASSERT_EQ(c.xor_, x);
	if (all_ordered && c.misplaced)
		FAIL("%zu of %zu values out of order, the first at %zu", c.misplaced, nwant,
		     c.first_bad);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
	return c.misplaced;
}

static uint64_t chain_items(void)
{
	return TEST_TSAN ? 3000 : (uint64_t)TEST_SIZE(40000, 6000);
}

/* run_chain() for each of the configurations, on 2 Ps. */
static void run_chains(const struct chain_cfg *cfgs, size_t ncfgs)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (size_t i = 0; i < ncfgs; i++)
		run_chain(&cfgs[i], chain_items());
}

/*
 * All stages ordered, with 4, 3 and 5 workers (and 2 Ps), whose items finish
 * out of order (jitter), under several windows (default, smaller than the
 * worker count, 1) and buffers (unbuffered, buffered): the sink sees exactly
 * the sequential result, in order, including the flatmap's 0..12 outputs per
 * item (more than it keeps ahead of its turn). Guards: ordering ignored or
 * numbered at the wrong point, a flusher that skips or repeats a slot, a
 * window of 1 or smaller than the workers deadlocking, a flatmap that loses
 * outputs it kept while waiting for its turn.
 */
TEST(ordered_many_workers)
{
	static const struct chain_cfg cfgs[] = {
		{{true, true, true}, {4, 3, 5}, {0, 0, 0}, {0, 0, 0}, 0},
		{{true, true, true}, {4, 3, 5}, {2, 2, 3}, {16, 1, 64}, 8},
		{{true, true, true}, {3, 2, 4}, {1, 1, 1}, {0, 4, 0}, 1},
		{{true, true, true}, {1, 1, 1}, {0, 0, 0}, {2, 2, 2}, 2},
	};
	run_chains(cfgs, sizeof cfgs / sizeof cfgs[0]);
}

/*
 * An ordered stage behind an unordered one keeps the order in which it
 * received its items; the end result is every value once. This is the case
 * where numbering at the sender would deadlock (the numbers of concurrent
 * senders do not follow the channel's order). Guards: a deadlock, lost or
 * repeated items.
 */
TEST(ordered_behind_unordered)
{
	static const struct chain_cfg cfgs[] = {
		{{false, true, true}, {4, 3, 5}, {0, 1, 2}, {0, 0, 0}, 0},
		{{true, false, true}, {4, 3, 5}, {2, 0, 1}, {1, 0, 0}, 0},
	};
	run_chains(cfgs, sizeof cfgs / sizeof cfgs[0]);
}

/*
 * All stages unordered: every value arrives exactly once (count, sum and a
 * hash of the values match the sequential result). The number out of place
 * is printed: with several workers it is normally most of them. Guards: lost
 * or repeated items at the fan-in, an output closed before its last worker
 * is done.
 */
TEST(unordered_many_workers)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	uint64_t n = chain_items();
	struct chain_cfg cfg = {{false, false, false}, {4, 3, 5}, {0, 0, 0}, {0, 8, 1}, 4};
	size_t misplaced = run_chain(&cfg, n);
	printf("    %zu values out of sequential place\n", misplaced);
	cfg = (struct chain_cfg){{false, false, false}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, 0};
	run_chain(&cfg, n);
}

/* ---------------------------------------------------------------- fan-out */

static int64_t no_nap = 0;

static int map_sleep(weft_ctx *ctx, void *arg, void *in, void *out)
{
	int64_t ns = *(const int64_t *)arg;
	memcpy(out, in, sizeof(uint64_t));
	return weft_sleep_ctx(ctx, ns);
}

struct order_check {
	uint64_t next;
	int bad;
};

static int sink_in_order(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	struct order_check *o = arg;
	if (*(uint64_t *)item != o->next++)
		o->bad++;
	return 0;
}

/* Run p to its end (it must succeed) and free it: the time it took, in
 * ns. */
static int64_t run_timed(weft_pipeline *p)
{
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_pipeline_run(p), 0);
	int64_t took = test_now_ns() - t0;
	weft_pipeline_free(p);
	return took;
}

/* One run of 8 items through a stage of 4 workers sleeping 40 ms each:
 * returns the elapsed time in ns. */
static int64_t fanout_once(bool ordered)
{
	uint64_t n = 8;
	int64_t nap = 40 * TEST_MS;
	struct order_check o = {0};
	weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = sizeof n};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){.map = map_sleep,
	                             .arg = &nap,
	                             .out_size = sizeof(uint64_t),
	                             .workers = 4,
	                             .ordered = ordered});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &o), 0);
	int64_t took = run_timed(p);
	ASSERT_EQ(o.next, 8);
	if (ordered)
		ASSERT_EQ(o.bad, 0);
	ASSERT_GE(took, 80 * TEST_MS); /* two rounds of 40 ms, never less */
	return took;
}

/*
 * Fan-out is real: 8 items through a stage of 4 workers that each sleep 40
 * ms take about 80 ms (two rounds), not the 320 ms of one worker, ordered
 * or not (an ordered stage's default window lets all 4 run). Best of three
 * against a 200 ms bound, for a loaded machine. Guards: workers that do not
 * run at once (one worker, a lock held across the function, a window of 1).
 */
TEST(fanout_is_parallel)
{
	int64_t bound = 200 * TEST_MS * test_slowdown();
	int64_t u = TEST_BEST_OF(3, bound, fanout_once(false));
	int64_t o = TEST_BEST_OF(3, bound, fanout_once(true));
	printf("    8 x 40 ms on 4 workers: unordered %.1f ms, ordered %.1f ms\n", u / 1e6,
	       o / 1e6);
	ASSERT_LE(u, bound);
	ASSERT_LE(o, bound);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- counted objects */

/* Heap items: each object made is counted, each freed uncounted, so a test
 * can check that every item was consumed exactly once (a double free trips
 * the magic check or ASan). */
#define OBJ_MAGIC 0x0b1ec7u

struct obj {
	uint64_t v;
	uint32_t magic;
};

static atomic_long objs_live;
static atomic_long objs_dropped;

static struct obj *obj_new(uint64_t v)
{
	struct obj *o = malloc(sizeof *o);
	ASSERT(o != NULL);
	o->v = v;
	o->magic = OBJ_MAGIC;
	atomic_fetch_add(&objs_live, 1);
	return o;
}

static void obj_free(struct obj *o)
{
	if (o->magic != OBJ_MAGIC)
		FAIL("object %p freed twice or never made", (void *)o);
	o->magic = 0xdead;
	free(o);
	atomic_fetch_sub(&objs_live, 1);
}

static void obj_drop(void *arg, void *item)
{
	(void)arg;
	obj_free(*(struct obj **)item);
	atomic_fetch_add(&objs_dropped, 1);
}

static void objs_reset(void)
{
	atomic_store(&objs_live, 0);
	atomic_store(&objs_dropped, 0);
}

/* ---------------------------------------------------------------- failure */

enum pos { P_GEN, P_MAP, P_FILTER, P_FLAT, P_SINK, P_NONE };

static const char *const pos_names[] = {"source", "map", "filter", "flatmap", "sink", "none"};

/* The failure tests' pipeline: an endless generator of objects -> map (2
 * workers: a new object of twice the value) -> filter (2: drops multiples of
 * 3) -> flatmap (3: two new objects per item) -> sink. The function at
 * `fail_at` returns EIO at its fail_after-th call; in the mixed variant one
 * flatmap worker sleeps for an hour on value 14 (it must be woken by the
 * cancellation). */
struct fail_run {
	enum pos fail_at;
	long fail_after;
	bool sleeper;
	atomic_long calls[P_NONE];
	atomic_int sleeper_woke; /* the error the sleeper got, + 1000 */
	atomic_long emitted;
	int gen_result;
};

static int fail_now(struct fail_run *f, enum pos at)
{
	long k = atomic_fetch_add(&f->calls[at], 1) + 1;
	return f->fail_at == at && k == f->fail_after ? EIO : 0;
}

static int gen_objs(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	struct fail_run *f = arg;
	for (uint64_t i = 0;; i++) {
		int r = fail_now(f, P_GEN);
		if (r) {
			f->gen_result = r;
			return r;
		}
		struct obj *o = obj_new(i);
		r = weft_pipeline_emit(em, &o);
		if (r) {
			f->gen_result = r;
			return r; /* o was dropped by the pipeline */
		}
		atomic_fetch_add(&f->emitted, 1);
	}
}

static int map_double(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx;
	struct obj *o = *(struct obj **)in;
	uint64_t v = o->v;
	obj_free(o); /* the input is ours */
	int r = fail_now(arg, P_MAP);
	if (r)
		return r;
	jitter(v);
	*(struct obj **)out = obj_new(v * 2);
	return 0;
}

static int filter_not3(weft_ctx *ctx, void *arg, void *item, bool *keep)
{
	(void)ctx;
	int r = fail_now(arg, P_FILTER);
	if (r)
		return r; /* the item is the pipeline's to drop */
	*keep = (*(struct obj **)item)->v % 3 != 0;
	return 0;
}

static int flat_two(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	struct fail_run *f = arg;
	struct obj *o = *(struct obj **)in;
	uint64_t v = o->v;
	obj_free(o);
	int r = fail_now(f, P_FLAT);
	if (r)
		return r;
	if (f->sleeper && v == 14) {
		r = weft_sleep_ctx(ctx, HOUR);
		atomic_store(&f->sleeper_woke, r + 1000);
		return r;
	}
	for (int j = 0; j < 2; j++) {
		struct obj *out = obj_new(v * 10 + (uint64_t)j);
		if ((r = weft_pipeline_emit(em, &out)) != 0)
			return r;
	}
	return 0;
}

static int sink_objs(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	obj_free(*(struct obj **)item);
	return fail_now(arg, P_SINK);
}

/* Build the failure pipeline under parent: ordered, all stages ordered with
 * small windows; else the map ordered, the filter and flatmap not. */
static weft_pipeline *fail_pipeline(struct fail_run *f, weft_ctx *parent, bool ordered)
{
	weft_pipeline_source src = {
		.gen = gen_objs, .arg = f, .item_size = sizeof(struct obj *), .drop = obj_drop};
	weft_pipeline *p = new_pipeline(parent, &src);
	add(p, (weft_pipeline_stage){.map = map_double,
	                             .arg = f,
	                             .out_size = sizeof(struct obj *),
	                             .workers = 2,
	                             .ordered = true,
	                             .window = 2,
	                             .buffer = 4,
	                             .drop = obj_drop});
	add(p, (weft_pipeline_stage){.filter = filter_not3,
	                             .arg = f,
	                             .workers = 2,
	                             .ordered = ordered,
	                             .window = 3}); /* drop: its input's */
	add(p, (weft_pipeline_stage){.flatmap = flat_two,
	                             .arg = f,
	                             .out_size = sizeof(struct obj *),
	                             .workers = 3,
	                             .ordered = ordered,
	                             .buffer = 2,
	                             .drop = obj_drop});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_objs, f), 0);
	return p;
}

/* Run the failure pipeline failing at `at` and check everything stopped. */
static void fail_once(enum pos at, bool ordered)
{
	int64_t base = weft_num_goroutines();
	struct fail_run *f = calloc(1, sizeof *f);
	ASSERT(f != NULL);
	objs_reset();
	f->fail_at = at;
	f->fail_after = 40;
	f->sleeper = !ordered; /* an ordered flatmap would hold back everything behind it */
	weft_pipeline *p = fail_pipeline(f, NULL, ordered);
	int64_t t0 = test_now_ns();
	int r = weft_pipeline_run(p);
	int64_t took = test_now_ns() - t0;
	if (r != EIO)
		FAIL("failing in the %s (%s): run returned %d, want EIO", pos_names[at],
		     ordered ? "ordered" : "mixed", r);
	ASSERT_LT(took, PROMPT_NS);
	ASSERT_EQ(weft_ctx_err(weft_pipeline_ctx(p)), ECANCELED);
	ASSERT_EQ(weft_ctx_cause(weft_pipeline_ctx(p)), EIO);
	/* Every goroutine is gone: nothing is called any more. */
	EXPECT_GOROUTINES(base);
	long calls[P_NONE];
	for (int i = 0; i < P_NONE; i++)
		calls[i] = atomic_load(&f->calls[i]);
	ASSERT_GE(calls[at], f->fail_after);
	if (at != P_GEN)
		ASSERT(f->gen_result == ECANCELED); /* the endless source was stopped */
	if (f->sleeper && atomic_load(&f->sleeper_woke))
		ASSERT_EQ(atomic_load(&f->sleeper_woke), ECANCELED + 1000);
	weft_sleep(5 * TEST_MS);
	for (int i = 0; i < P_NONE; i++)
		ASSERT_EQ(atomic_load(&f->calls[i]), calls[i]);
	weft_pipeline_free(p);
	/* Each object made was freed once: by a function or a drop. */
	ASSERT_EQ(atomic_load(&objs_live), 0);
	printf("    %-7s fails (%s): %ld emitted, %ld dropped, %.1f ms\n", pos_names[at],
	       ordered ? "ordered" : "mixed", atomic_load(&f->emitted), atomic_load(&objs_dropped),
	       took / 1e6);
	free(f);
	EXPECT_ALL_FREED();
}

/*
 * A failure in each position - the source, a map, a filter, a flatmap, the
 * sink - with all stages ordered (small windows: workers wait for their turn
 * or for room) and with a mix (an ordered map, then unordered stages, one
 * flatmap worker asleep for an hour): run returns the function's EIO within a second, the pipeline's
 * context is cancelled with EIO as its cause, the endless source was
 * stopped with ECANCELED, the sleeper woke with ECANCELED, the goroutine
 * count is back at its start and no function is called afterwards, and
 * every object was freed exactly once (in flight ones by the drops). Guards:
 * a stage that ignores the cancellation (run never returns), wait returning
 * before every goroutine is gone, the first error lost to a later ECANCELED,
 * an item leaked or dropped twice on any path (a failed send, a filter's
 * failure, a reorder buffer, a channel left full).
 */
TEST(failure_in_each_position_stops_everything)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int ordered = 0; ordered < 2; ordered++)
		for (enum pos at = P_GEN; at < P_NONE; at++)
			fail_once(at, ordered);
}

/*
 * Failures in many runs, at random positions and item counts, on 4 Ps with
 * a random mix of ordered and unordered variants: always EIO, every object
 * freed, no goroutine left. Guards: races between a failure and the
 * completion or flush of other items.
 */
TEST(failure_churn)
{
	ASSERT_EQ(weft_set_procs(4, NULL), 0);
	int rounds = TEST_TSAN ? 20 : TEST_SIZE(200, 40);
	uint32_t seed = 12345;
	int64_t base = weft_num_goroutines();
	for (int i = 0; i < rounds; i++) {
		struct fail_run *f = calloc(1, sizeof *f);
		ASSERT(f != NULL);
		objs_reset();
		f->fail_at = (enum pos)(test_rand32(&seed) % P_NONE);
		f->fail_after = 1 + test_rand32(&seed) % 60;
		bool ordered = test_rand32(&seed) & 1;
		weft_pipeline *p = fail_pipeline(f, NULL, ordered);
		int r = weft_pipeline_run(p);
		if (r != EIO)
			FAIL("round %d, failing in the %s at %ld: run returned %d", i,
			     pos_names[f->fail_at], f->fail_after, r);
		weft_pipeline_free(p);
		ASSERT_EQ(atomic_load(&objs_live), 0);
		free(f);
	}
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- batches */

/* A stage over objects that fails (EIO) at its fail_call-th call, or
 * cancels the pipeline during its cancel_call-th; the drops of its input
 * and output edges are counted apart. */
struct mid_batch {
	weft_pipeline *p;
	long fail_call, cancel_call;
	atomic_long calls, in_drops, out_drops, sunk;
};

static int mid_call(struct mid_batch *mb)
{
	long k = atomic_fetch_add(&mb->calls, 1) + 1;
	if (k == mb->cancel_call)
		weft_pipeline_cancel(mb->p);
	return k == mb->fail_call ? EIO : 0;
}

static int map_mid(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx;
	struct obj *o = *(struct obj **)in;
	uint64_t v = o->v;
	obj_free(o);
	int r = mid_call(arg);
	if (r == 0)
		*(struct obj **)out = obj_new(v * 2);
	return r;
}

static int filter_mid(weft_ctx *ctx, void *arg, void *item, bool *keep)
{
	(void)ctx;
	*keep = (*(struct obj **)item)->v % 2 == 0;
	return mid_call(arg);
}

static void drop_mid_in(void *arg, void *item)
{
	obj_free(*(struct obj **)item);
	atomic_fetch_add(&((struct mid_batch *)arg)->in_drops, 1);
}

static void drop_mid_out(void *arg, void *item)
{
	obj_free(*(struct obj **)item);
	atomic_fetch_add(&((struct mid_batch *)arg)->out_drops, 1);
}

static int sink_mid(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	obj_free(*(struct obj **)item);
	atomic_fetch_add(&((struct mid_batch *)arg)->sunk, 1);
	return 0;
}

/* One stage (a map, or a filter keeping even values) of one worker with a
 * batch of 8, fed by a channel holding objects 0..15, failing or cancelling
 * at call `at`: check the run's result, the calls made, and the drops on
 * each side; then free what stayed in the channel. */
static void mid_batch_once(bool filter, bool cancel, long at, long want_in, long want_out)
{
	int64_t base = weft_num_goroutines();
	struct mid_batch mb = {.fail_call = cancel ? 0 : at, .cancel_call = cancel ? at : 0};
	weft_chan *ch = NULL;
	ASSERT_EQ(weft_chan_make(&ch, sizeof(struct obj *), 16), 0);
	objs_reset();
	for (uint64_t i = 0; i < 16; i++) {
		struct obj *o = obj_new(i);
		ASSERT_EQ(weft_chan_send(ch, &o), 0);
	}
	weft_pipeline_source src = {.chan = ch, .arg = &mb, .drop = drop_mid_in};
	mb.p = new_pipeline(NULL, &src);
	weft_pipeline_stage st = {.arg = &mb,
	                          .out_size = sizeof(struct obj *),
	                          .buffer = 16,
	                          .batch = 8,
	                          .drop = drop_mid_out};
	if (filter)
		st.filter = filter_mid;
	else
		st.map = map_mid;
	add(mb.p, st);
	ASSERT_EQ(weft_pipeline_set_sink(mb.p, sink_mid, &mb), 0);
	ASSERT_EQ(weft_pipeline_run(mb.p), cancel ? ECANCELED : EIO);
	weft_pipeline_free(mb.p);
	EXPECT_GOROUTINES(base);
	ASSERT_EQ(atomic_load(&mb.calls), at);
	ASSERT_EQ(atomic_load(&mb.in_drops), want_in);
	ASSERT_EQ(atomic_load(&mb.out_drops), want_out);
	ASSERT_EQ(atomic_load(&mb.sunk), 0);
	ASSERT_EQ(weft_chan_len(ch), 8); /* the second batch was never taken */
	struct obj *o;
	while (weft_chan_tryrecv(ch, &o) == 0)
		obj_free(o);
	ASSERT_EQ(atomic_load(&objs_live), 0);
	weft_chan_release(ch);
	EXPECT_ALL_FREED();
}

/*
 * A failure in the middle of a batch of 8: a map failing on its 3rd item
 * (which it freed) leaves 2 outputs unsent, dropped by the output edge, and
 * 5 inputs never processed, dropped by the input edge; a filter failing on
 * its 5th leaves its 5 items (2 kept, 2 rejected, the failed one) to the
 * output edge's drop and 3 inputs to the input's. Nothing reaches the sink,
 * no function is called after the failure, and every object is freed
 * exactly once. Guards: the rest of a batch processed after a failure,
 * unprocessed inputs or unsent outputs leaked, or given to the wrong drop,
 * or dropped twice.
 */
TEST(failure_mid_batch_drops_the_rest)
{
	mid_batch_once(false, false, 3, 5, 2);
	mid_batch_once(true, false, 5, 3, 5);
}

/*
 * A cancellation in the middle of a batch of 8 (the 3rd map call cancels
 * the pipeline, and succeeds): the context is looked at before each item,
 * so no 4th call is made; the 3 outputs made are dropped unsent, the 5
 * inputs left by the input edge; run returns ECANCELED. The same for a
 * filter cancelling at its 5th call (5 items to the output's drop, 3 to the
 * input's). Guards: a batch run to its end on a cancelled context, items of
 * a stopped batch leaked.
 */
TEST(cancel_mid_batch)
{
	mid_batch_once(false, true, 3, 5, 3);
	mid_batch_once(true, true, 5, 3, 5);
}

/* ---------------------------------------------------------------- cancellation */

static int sink_slow(weft_ctx *ctx, void *arg, void *item)
{
	obj_free(*(struct obj **)item);
	(void)fail_now(arg, P_SINK);
	return weft_sleep_ctx(ctx, TEST_MS);
}

/* The endless pipeline with a slow sink, under parent; returns run's result
 * and checks the aftermath. If cancel_after_ns > 0, a goroutine calls
 * weft_pipeline_cancel after that long. */
struct canceller {
	weft_pipeline *p;
	weft_ctx *ctx;           /* cancel this one instead, if not NULL */
	atomic_long *sink_calls; /* if not NULL: first wait until it is >= 5 */
	int64_t after_ns;        /* then sleep this long */
	int64_t cancelled_at;    /* test_now_ns() of the cancel */
	weft_wg done;
};

/* Cancel c->p (or c->ctx) once things flow: after the sink has had a few
 * items (a loaded machine may take long to get there), and after_ns more. */
static void cancel_later(void *arg)
{
	struct canceller *c = arg;
	int64_t give_up = test_now_ns() + 10 * PROMPT_NS;
	while (c->sink_calls && atomic_load(c->sink_calls) < 5 && test_now_ns() < give_up)
		weft_sleep(TEST_MS);
	weft_sleep(c->after_ns);
	c->cancelled_at = test_now_ns();
	if (c->ctx)
		weft_ctx_cancel(c->ctx);
	else
		weft_pipeline_cancel(c->p);
	weft_wg_done(&c->done);
}

static int run_endless(weft_ctx *parent, struct canceller *c, bool ordered, int64_t *took)
{
	int64_t base = weft_num_goroutines();
	struct fail_run *f = calloc(1, sizeof *f);
	ASSERT(f != NULL);
	objs_reset();
	f->fail_at = P_NONE;
	weft_pipeline *p = fail_pipeline(f, parent, ordered);
	/* Replace the sink by a slow one: the source and stages fill up. */
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_slow, f), 0);
	if (c) {
		c->p = p;
		c->sink_calls = &f->calls[P_SINK];
		weft_wg_add(&c->done, 1);
		GO(cancel_later, c);
	}
	int64_t t0 = test_now_ns();
	int r = weft_pipeline_run(p);
	int64_t t1 = test_now_ns();
	/* Prompt: from the cancel on, or from the start with a deadline. */
	if (c) {
		weft_wg_wait(&c->done);
		*took = t1 - c->cancelled_at;
		ASSERT_GE(atomic_load(&f->calls[P_SINK]), 5);
	} else {
		*took = t1 - t0;
	}
	EXPECT_GOROUTINES(base);
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&objs_live), 0);
	free(f);
	return r;
}

/*
 * Cancellation from outside, with every stage busy (an endless source, a
 * slow sink that has had 5 items, full buffers): weft_pipeline_cancel from
 * another goroutine and cancelling the parent context make run return
 * ECANCELED within a second of the cancel, a parent's 30 ms deadline
 * ETIMEDOUT, not before it and promptly after, with every goroutine gone and every
 * object freed. Guards: a stage blocked in a send or receive that does not
 * watch the context, the parent's cancellation not reaching the pipeline's
 * context, the wrong error.
 */
TEST(external_cancellation)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int ordered = 0; ordered < 2; ordered++) {
		int64_t took;
		struct canceller c = {.after_ns = 10 * TEST_MS};
		ASSERT_EQ(run_endless(NULL, &c, ordered, &took), ECANCELED);
		ASSERT_LT(took, PROMPT_NS);

		weft_ctx *parent = NULL;
		ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &parent), 0);
		c = (struct canceller){.after_ns = 10 * TEST_MS, .ctx = parent};
		ASSERT_EQ(run_endless(parent, &c, ordered, &took), ECANCELED);
		ASSERT_LT(took, PROMPT_NS);
		weft_ctx_release(parent);

		ASSERT_EQ(weft_ctx_with_timeout(weft_ctx_background(), 30 * TEST_MS, &parent), 0);
		ASSERT_EQ(run_endless(parent, NULL, ordered, &took), ETIMEDOUT);
		ASSERT_GE(took, 25 * TEST_MS);
		ASSERT_LT(took, 30 * TEST_MS + PROMPT_NS);
		weft_ctx_release(parent);
	}
	EXPECT_ALL_FREED();
}

static atomic_int late_emit = -1; /* what the emit after the cancel said */

static int gen_two(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	(void)arg;
	for (int i = 0; i < 2; i++)
		if (weft_pipeline_emit(em, &i))
			return 0;
	return 0;
}

/* Item 0 holds the head of the ordered window until item 1, ahead of its
 * turn, has emitted after the cancel. */
static int flat_emit_late(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	(void)arg;
	int v = *(int *)in;
	if (v == 0) {
		while (atomic_load(&late_emit) == -1)
			weft_sleep(TEST_MS);
		return 0;
	}
	while (!weft_ctx_err(ctx))
		weft_sleep(TEST_MS);
	atomic_store(&late_emit, weft_pipeline_emit(em, &v));
	return 0;
}

static void cancel_after_20ms(void *arg)
{
	weft_sleep(20 * TEST_MS);
	weft_pipeline_cancel(arg);
}

/*
 * An emit in an ordered flatmap stage, by an item that is not at the head of
 * the window, once the pipeline is cancelled, returns the context's error,
 * as every emit on a stopping pipeline does. Guards: the item stored in its
 * slot regardless (emit said 0, and the item was dropped later).
 */
TEST(ordered_emit_after_cancel_fails)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_pipeline *p = NULL;
	weft_pipeline_source src = {.gen = gen_two, .item_size = sizeof(int)};
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &src), 0);
	weft_pipeline_stage st = {.flatmap = flat_emit_late, .out_size = sizeof(int), .workers = 2,
	                          .ordered = true};
	ASSERT_EQ(weft_pipeline_add(p, &st), 0);
	ASSERT_EQ(weft_pipeline_start(p, NULL), 0);
	ASSERT_EQ(weft_go(cancel_after_20ms, p), 0);
	ASSERT_EQ(weft_pipeline_wait(p), ECANCELED);
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&late_emit), ECANCELED);
	EXPECT_ALL_FREED();
}

static atomic_int cancelled_calls;

static int gen_counting(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	atomic_fetch_add(&cancelled_calls, 1);
	return gen_count(ctx, arg, em);
}

static int map_counting(weft_ctx *ctx, void *arg, void *in, void *out)
{
	atomic_fetch_add(&cancelled_calls, 1);
	return map_mul3(ctx, arg, in, out);
}

/*
 * Cancelled before it starts (weft_pipeline_cancel, or a parent already
 * cancelled): run returns ECANCELED at once and no function is ever called.
 * Guards: goroutines that run a function before looking at the context.
 */
TEST(cancel_before_start)
{
	int64_t base = weft_num_goroutines();
	uint64_t n = 100;
	struct collect c = {0};
	for (int how = 0; how < 2; how++) {
		weft_ctx *parent = NULL;
		ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &parent), 0);
		weft_pipeline_source src = {.gen = gen_counting, .arg = &n, .item_size = sizeof n};
		weft_pipeline *p = new_pipeline(parent, &src);
		add(p, (weft_pipeline_stage){.map = map_counting,
		                             .out_size = sizeof(uint64_t),
		                             .workers = 3,
		                             .ordered = how});
		ASSERT_EQ(weft_pipeline_set_sink(p, sink_collect, &c), 0);
		if (how == 0)
			weft_pipeline_cancel(p);
		else
			weft_ctx_cancel(parent);
		ASSERT_EQ(weft_pipeline_run(p), ECANCELED);
		weft_pipeline_free(p);
		weft_ctx_release(parent);
	}
	ASSERT_EQ(atomic_load(&cancelled_calls), 0);
	ASSERT_EQ(c.got, 0);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- bounds */

struct flow {
	atomic_long emitted;  /* emits that returned */
	atomic_long consumed; /* sink calls started */
	atomic_long max_ahead;
	uint64_t n;
	atomic_long started; /* map calls started */
	long ahead_of_head;  /* map calls started when item 0's nap ended */
	int64_t head_nap;    /* ordered window test: item 0 sleeps this long */
};

static void record_max(atomic_long *max, long v)
{
	long seen = atomic_load(max);
	while (v > seen && !atomic_compare_exchange_weak(max, &seen, v))
		;
}

static int gen_flow(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	struct flow *fl = arg;
	for (uint64_t i = 0; i < fl->n; i++) {
		int r = weft_pipeline_emit(em, &i);
		if (r)
			return r;
		atomic_fetch_add(&fl->emitted, 1);
	}
	return 0;
}

static int map_flow(weft_ctx *ctx, void *arg, void *in, void *out)
{
	struct flow *fl = arg;
	atomic_fetch_add(&fl->started, 1);
	memcpy(out, in, sizeof(uint64_t));
	int r = 0;
	if (fl->head_nap && *(uint64_t *)in == 0) {
		r = weft_sleep_ctx(ctx, fl->head_nap);
		fl->ahead_of_head = atomic_load(&fl->started);
	}
	return r;
}

static int sink_flow(weft_ctx *ctx, void *arg, void *item)
{
	(void)item;
	struct flow *fl = arg;
	long c = atomic_fetch_add(&fl->consumed, 1) + 1;
	record_max(&fl->max_ahead, atomic_load(&fl->emitted) - c);
	return weft_sleep_ctx(ctx, 200 * 1000); /* 0.2 ms: the slow consumer */
}

/* The most items seen between the source and the slow sink of: source
 * (buffer src_buffer) -> unordered map (2 workers, the batch given, buffer
 * 3) -> ordered map (3 workers, window 4, buffer 5) -> sink. */
static long max_ahead(size_t src_buffer, size_t batch)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct flow fl = {.n = TEST_SIZE(600, 300)};
	weft_pipeline_source src = {
		.gen = gen_flow, .arg = &fl, .item_size = sizeof(uint64_t), .buffer = src_buffer};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){.map = map_flow,
	                             .arg = &fl,
	                             .out_size = sizeof(uint64_t),
	                             .workers = 2,
	                             .buffer = 3,
	                             .batch = batch});
	add(p, (weft_pipeline_stage){.map = map_flow,
	                             .arg = &fl,
	                             .out_size = sizeof(uint64_t),
	                             .workers = 3,
	                             .ordered = true,
	                             .window = 4,
	                             .buffer = 5});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_flow, &fl), 0);
	ASSERT_EQ(weft_pipeline_run(p), 0);
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&fl.consumed), (long)fl.n);
	EXPECT_ALL_FREED();
	long ahead = atomic_load(&fl.max_ahead);
	printf("    batch %zu: at most %ld items between source and sink\n", batch, ahead);
	return ahead;
}

/*
 * Backpressure: a fast source and a slow sink. Items emitted but not yet
 * consumed can only sit in the buffers (source 2, stage outputs 3 and 5),
 * with the unordered stage's 2 workers (one item each: batch 1) and in the
 * ordered stage's window of 4: at most 16. The maximum seen must be at most
 * that, and at least 14 (the buffers are really used). Guards: a buffer or
 * window ignored or made larger (too many ahead), buffers not made at all
 * (too few), batch 1 taking more than one item.
 */
TEST(backpressure_bounded_by_buffers)
{
	long ahead = max_ahead(2, 1);
	ASSERT_LE(ahead, 16);
	ASSERT_GE(ahead, 14);
}

/*
 * With batches the bound is the buffers plus workers x batch: with a source
 * buffer of 8 and a batch of 4, the unordered stage's 2 workers hold up to
 * 8 items, so at most 8 + 3 + 5 + 2 x 4 + 4 = 28, and at least 26 are seen
 * (the buffers and the batches fill). The automatic batch of a cheap
 * function goes past the 22 that one item per worker allows (it does
 * batch), and stays within 16 + 2 x 16 + 4. Guards: a batch that takes more
 * than it may (an off-by-one on the limit), batches never taken, items held
 * outside the bound.
 */
TEST(backpressure_bounded_with_batches)
{
	long ahead = max_ahead(8, 4);
	ASSERT_LE(ahead, 28);
	ASSERT_GE(ahead, 26);
	ahead = max_ahead(8, 0);
	ASSERT_LE(ahead, 52);
	ASSERT_GT(ahead, 22);
}

/*
 * An ordered stage's window bounds how far its workers run ahead of a slow
 * item: with 8 workers and a window of 3, while item 0 sleeps 100 ms exactly
 * 3 map calls start (item 0 and the two after it), and everything still
 * arrives in order. With a window of 16, 16 start (the quick ones free their
 * workers, not their slots). Guards: the window not enforced, or enforced off
 * by one, or not let run up to its size.
 */
TEST(ordered_window_bounds_run_ahead)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	size_t windows[] = {3, 16};
	long want[] = {3, 16};
	for (int i = 0; i < 2; i++) {
		struct flow fl = {.n = 200, .head_nap = 100 * TEST_MS};
		struct order_check o = {0};
		weft_pipeline_source src = {
			.gen = gen_flow, .arg = &fl, .item_size = sizeof(uint64_t), .buffer = 64};
		weft_pipeline *p = new_pipeline(NULL, &src);
		add(p, (weft_pipeline_stage){.map = map_flow,
		                             .arg = &fl,
		                             .out_size = sizeof(uint64_t),
		                             .workers = 8,
		                             .ordered = true,
		                             .window = windows[i]});
		ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &o), 0);
		ASSERT_EQ(weft_pipeline_run(p), 0);
		weft_pipeline_free(p);
		ASSERT_EQ(o.next, 200);
		ASSERT_EQ(o.bad, 0);
		ASSERT_EQ(fl.ahead_of_head, want[i]);
	}
	EXPECT_ALL_FREED();
}

struct slow_map {
	int64_t nap;
	atomic_long running, max_running;
};

static int map_slow(weft_ctx *ctx, void *arg, void *in, void *out)
{
	struct slow_map *sm = arg;
	record_max(&sm->max_running, atomic_fetch_add(&sm->running, 1) + 1);
	memcpy(out, in, sizeof(uint64_t));
	int r = weft_sleep_ctx(ctx, sm->nap);
	atomic_fetch_sub(&sm->running, 1);
	return r;
}

/* 16 items, all waiting in the source's buffer, through 2 workers of a
 * 2 ms map with the automatic batch: the elapsed time in ns. */
static int64_t slow_auto_once(void)
{
	uint64_t n = 16;
	struct slow_map sm = {.nap = 2 * TEST_MS};
	struct collect c = {0};
	weft_pipeline_source src = {
		.gen = gen_count, .arg = &n, .item_size = sizeof n, .buffer = 16};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){
		       .map = map_slow, .arg = &sm, .out_size = sizeof(uint64_t), .workers = 2});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_collect, &c), 0);
	int64_t took = run_timed(p);
	ASSERT_EQ(c.got, 16);
	ASSERT_EQ(atomic_load(&sm.max_running), 2);
	return took;
}

/*
 * The automatic batch does not hoard a slow function's items: 16 items of
 * 2 ms each, all waiting at once, on 2 workers (batch 0) take about 16 ms,
 * both workers busy at once, not the 32 ms of one worker that took them
 * all. Best of three against 24 ms. Guards: an automatic mode that batches
 * before it knows the function is cheap, or goes on batching a slow one.
 */
TEST(auto_batch_lets_slow_items_fan_out)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t bound = 24 * TEST_MS * test_slowdown();
	int64_t took = TEST_BEST_OF(3, bound, slow_auto_once());
	printf("    16 x 2 ms on 2 workers, automatic batch: %.1f ms\n", took / 1e6);
	ASSERT_LE(took, bound);
	EXPECT_ALL_FREED();
}

/* A one-worker map stage fed by a channel the test fills: each call notes
 * how many items were still in the channel, which tells how many the worker
 * took at once. Values of 1000 and more take 1 ms, the others nothing. */
struct probe {
	weft_chan *ch;
	weft_pipeline *p;
	atomic_long calls, sunk;
	size_t lens[128];
};

static int map_probe(weft_ctx *ctx, void *arg, void *in, void *out)
{
	struct probe *pr = arg;
	long k = atomic_fetch_add(&pr->calls, 1);
	ASSERT_LT(k, 128);
	pr->lens[k] = weft_chan_len(pr->ch);
	memcpy(out, in, sizeof(uint64_t));
	return *(uint64_t *)in >= 1000 ? weft_sleep_ctx(ctx, TEST_MS) : 0;
}

static int sink_probe(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx, (void)item;
	atomic_fetch_add(&((struct probe *)arg)->sunk, 1);
	return 0;
}

static void probe_start(struct probe *pr, size_t batch)
{
	ASSERT_EQ(weft_chan_make(&pr->ch, sizeof(uint64_t), 64), 0);
	weft_pipeline_source src = {.chan = pr->ch};
	pr->p = new_pipeline(NULL, &src);
	add(pr->p, (weft_pipeline_stage){.map = map_probe,
	                                 .arg = pr,
	                                 .out_size = sizeof(uint64_t),
	                                 .buffer = 64,
	                                 .batch = batch});
	ASSERT_EQ(weft_pipeline_set_sink(pr->p, sink_probe, pr), 0);
	ASSERT_EQ(weft_pipeline_start(pr->p, NULL), 0);
}

/* Put values first.. (n of them) in the channel at once, by then (most
 * likely) to a parked worker: one batch send hands it the first and
 * buffers the others, all before it wakes. Wait until all went through.
 * Returns the index of the phase's first call. */
static long probe_push(struct probe *pr, uint64_t first, size_t n)
{
	uint64_t v[64];
	size_t sent = 0;
	long from = atomic_load(&pr->calls);
	for (size_t i = 0; i < n; i++)
		v[i] = first + i;
	weft_sleep(2 * TEST_MS);
	ASSERT_EQ(weft_chan_trysend_n(pr->ch, v, n, &sent), 0);
	ASSERT_EQ(sent, n);
	int64_t give_up = test_now_ns() + 5 * SEC * test_slowdown();
	while (atomic_load(&pr->sunk) < from + (long)n && test_now_ns() < give_up)
		weft_sleep(TEST_MS);
	ASSERT_EQ(atomic_load(&pr->calls), from + (long)n);
	return from;
}

/* Calls [from, from + n) that saw the same channel length as the call
 * before them: items of one batch. */
static int probe_batched(const struct probe *pr, long from, size_t n)
{
	int same = 0;
	for (long i = from + 1; i < from + (long)n; i++)
		same += pr->lens[i] == pr->lens[i - 1];
	return same;
}

static void probe_end(struct probe *pr)
{
	weft_chan_close(pr->ch);
	ASSERT_EQ(weft_pipeline_wait(pr->p), 0);
	weft_pipeline_free(pr->p);
	weft_chan_release(pr->ch);
}

/*
 * How many items a worker takes at once. 16 items waiting: with batch 4, the
 * calls see 12 items left 4 times, then 8, 4 and 0; with batch 1, 15, 14,
 * ... 0. Automatic, the cost decides: 16 slow items (1 ms) go one at a time
 * from the start; 40 cheap ones after them are batched (after a run of
 * cheap single items); 16 slow ones then go in one batch (the worker could
 * not know), and the next 16 slow ones one at a time again. Guards: a batch
 * off by one or not taken, batch 1 taking more, an automatic mode that
 * batches a slow function from the start or after a slow batch, or never
 * batches a cheap one.
 */
TEST(batch_sizes_follow_setting_and_cost)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t base = weft_num_goroutines();
	static const size_t batches[] = {4, 1};
	for (int b = 0; b < 2; b++) {
		size_t batch = batches[b];
		struct probe pr = {0};
		probe_start(&pr, batch);
		long from = probe_push(&pr, 0, 16);
		for (long i = 0; i < 16; i++)
			ASSERT_EQ(pr.lens[from + i], 16 - (size_t)(i / (long)batch + 1) * batch);
		probe_end(&pr);
	}
	struct probe pr = {0};
	probe_start(&pr, 0);
	long slow = probe_push(&pr, 1000, 16);
	long cheap = probe_push(&pr, 0, 40);
	probe_push(&pr, 2000, 16);
	long again = probe_push(&pr, 3000, 16);
	printf("    automatic: %d, %d and %d of 16, 40 and 16 calls in a batch\n",
	       probe_batched(&pr, slow, 16), probe_batched(&pr, cheap, 40),
	       probe_batched(&pr, again, 16));
	ASSERT_EQ(probe_batched(&pr, slow, 16), 0);
	ASSERT_GT(probe_batched(&pr, cheap, 40), 0);
	ASSERT_EQ(probe_batched(&pr, again, 16), 0);
	probe_end(&pr);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- output and source channels */

/*
 * The output channel (no sink): the caller receives the items in order and
 * the channel is closed at the end; wait returns 0. Then a consumer that
 * stops after 50 items and cancels: wait returns ECANCELED, and the objects
 * still in the output channel are dropped by weft_pipeline_free. With a sink
 * set, asking for the output channel is EINVAL. Guards: the output never
 * closed (the range loop hangs), items left in it leaked.
 */
TEST(output_channel)
{
	int64_t base = weft_num_goroutines();
	uint64_t n = 500;
	weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = sizeof n};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p,
	    (weft_pipeline_stage){
		    .map = map_mul3, .out_size = sizeof(uint64_t), .workers = 3, .ordered = true});
	weft_chan *out = NULL;
	ASSERT_EQ(weft_pipeline_start(p, &out), 0);
	ASSERT(out != NULL);
	uint64_t v, i = 0;
	while (weft_chan_recv(out, &v) == 0) {
		ASSERT_EQ(v, i * 3);
		i++;
	}
	ASSERT_EQ(i, n);
	ASSERT_EQ(weft_pipeline_wait(p), 0);
	weft_pipeline_free(p);

	/* Stop early, with objects. */
	struct fail_run *f = calloc(1, sizeof *f);
	ASSERT(f != NULL);
	objs_reset();
	f->fail_at = P_NONE;
	weft_pipeline_source osrc = {
		.gen = gen_objs, .arg = f, .item_size = sizeof(struct obj *), .drop = obj_drop};
	p = new_pipeline(NULL, &osrc);
	add(p, (weft_pipeline_stage){.map = map_double,
	                             .arg = f,
	                             .out_size = sizeof(struct obj *),
	                             .workers = 2,
	                             .buffer = 16,
	                             .drop = obj_drop});
	ASSERT_EQ(weft_pipeline_start(p, &out), 0);
	for (int k = 0; k < 50; k++) {
		struct obj *o;
		ASSERT_EQ(weft_chan_recv(out, &o), 0);
		obj_free(o);
	}
	WAIT_FOR(weft_chan_len(out) >= 16); /* let it fill up */
	weft_pipeline_cancel(p);
	ASSERT_EQ(weft_pipeline_wait(p), ECANCELED);
	ASSERT(weft_chan_closed(out));
	ASSERT_GT(atomic_load(&objs_live), 0); /* in the output channel */
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&objs_live), 0);
	free(f);

	p = new_pipeline(NULL, &src);
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &(struct order_check){0}), 0);
	ASSERT_EQ(weft_pipeline_start(p, &out), EINVAL);
	weft_pipeline_free(p);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/* A map that cancels its own pipeline, then hands its output on anyway. */
static int map_cancel_then_pass(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx;
	weft_pipeline_cancel(arg);
	*(uint64_t *)out = *(uint64_t *)in + 100;
	atomic_fetch_add(&cancelled_calls, 1);
	return 0;
}

static atomic_int passed_drops;

static void count_drop(void *arg, void *item)
{
	(void)arg, (void)item;
	atomic_fetch_add(&passed_drops, 1);
}

/*
 * An output produced after the pipeline was cancelled is not passed on,
 * even where the output channel has room: the stage looks at the context
 * before each send (a send to a channel with room would succeed on a
 * cancelled context), and drops the item instead. A map that cancels the
 * pipeline and then returns an output, with batch 0 (its outputs go on in
 * one batch send) and batch 1 (one send per item): wait returns ECANCELED,
 * the output channel is closed and empty, and the stage's drop took the
 * item. Guards: a stage that sends without looking at the context first
 * (the consumer then received an item of a pipeline that had already
 * stopped).
 */
TEST(no_output_after_cancel)
{
	int64_t base = weft_num_goroutines();
	for (size_t batch = 0; batch <= 1; batch++) { /* automatic, then one at a time */
		uint64_t n = 1;
		atomic_store(&cancelled_calls, 0);
		atomic_store(&passed_drops, 0);
		weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = sizeof n};
		weft_pipeline *p = new_pipeline(NULL, &src);
		add(p, (weft_pipeline_stage){.map = map_cancel_then_pass,
		                             .arg = p,
		                             .out_size = sizeof(uint64_t),
		                             .workers = 1,
		                             .buffer = 4,
		                             .batch = batch,
		                             .drop = count_drop});
		weft_chan *out = NULL;
		ASSERT_EQ(weft_pipeline_start(p, &out), 0);
		ASSERT_EQ(weft_pipeline_wait(p), ECANCELED);
		ASSERT_EQ(atomic_load(&cancelled_calls), 1);
		uint64_t v = 7;
		ASSERT_EQ(weft_chan_tryrecv(out, &v), EPIPE);
		ASSERT_EQ(atomic_load(&passed_drops), 1);
		weft_pipeline_free(p);
	}
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

struct feeder {
	weft_pipeline *p;
	weft_chan *ch;
	uint64_t n;
	int result;
	weft_wg done;
};

/* Go's producer: send on the pipeline's context, close when done. */
static void feed(void *arg)
{
	struct feeder *fd = arg;
	weft_ctx *ctx = weft_pipeline_ctx(fd->p);
	for (uint64_t i = 0; i < fd->n; i++)
		if ((fd->result = weft_chan_send_ctx(ctx, fd->ch, &i)) != 0)
			break;
	weft_chan_close(fd->ch);
	weft_wg_done(&fd->done);
}

/*
 * A channel as the source: a goroutine feeds 20,000 values and closes it;
 * the ordered pipeline delivers them in order and returns 0; the channel is
 * still the caller's after weft_pipeline_free (the pipeline retained and
 * released it, and never closed it). A source channel whose element size
 * is not item_size is EINVAL. Then zero stages: the sink reads the source
 * channel directly. Guards: the pipeline closing or releasing the user's
 * channel, a channel source never ending.
 */
TEST(channel_source)
{
	int64_t base = weft_num_goroutines();
	for (int stages = 1; stages >= 0; stages--) {
		struct feeder fd = {.n = TEST_SIZE(20000, 4000)};
		ASSERT_EQ(weft_chan_make(&fd.ch, sizeof(uint64_t), 8), 0);
		weft_pipeline_source bad = {.chan = fd.ch, .item_size = 4};
		weft_pipeline *p = NULL;
		ASSERT_EQ(weft_pipeline_new(&p, NULL, &bad), EINVAL);
		weft_pipeline_source src = {.chan = fd.ch};
		p = new_pipeline(NULL, &src);
		struct order_check o = {0};
		if (stages)
			add(p, (weft_pipeline_stage){.map = map_sleep,
			                             .arg = &no_nap,
			                             .out_size = sizeof(uint64_t),
			                             .workers = 4,
			                             .ordered = true});
		ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &o), 0);
		weft_wg_add(&fd.done, 1);
		fd.p = p;
		GO(feed, &fd);
		ASSERT_EQ(weft_pipeline_run(p), 0);
		weft_wg_wait(&fd.done);
		ASSERT_EQ(fd.result, 0);
		ASSERT_EQ(o.next, fd.n);
		ASSERT_EQ(o.bad, 0);
		weft_pipeline_free(p);
		ASSERT(weft_chan_closed(fd.ch));
		ASSERT_EQ(weft_chan_elem_size(fd.ch), sizeof(uint64_t));
		weft_chan_release(fd.ch);
	}
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/* Two new objects per value. */
static int flat_two_values(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	(void)ctx, (void)arg;
	uint64_t v = *(uint64_t *)in;
	for (uint64_t j = 0; j < 2; j++) {
		struct obj *o = obj_new(v * 2 + j);
		int r = weft_pipeline_emit(em, &o);
		if (r)
			return r;
	}
	return 0;
}

/*
 * A channel source that nobody sends to nor closes: the first stage's
 * workers wait on it, and nothing upstream will ever close their input to
 * end them. A cancel (weft_pipeline_cancel, then the parent's) still ends
 * the run promptly with ECANCELED, ordered stages or not, and the channel is
 * left open. Guards: a worker waiting for its input without watching the
 * context (an upstream close is what usually ends it, and here none comes).
 */
TEST(cancel_with_idle_channel_source)
{
	int64_t base = weft_num_goroutines();
	for (int how = 0; how < 4; how++) {
		weft_chan *ch = NULL;
		weft_ctx *parent = NULL;
		ASSERT_EQ(weft_chan_make(&ch, sizeof(uint64_t), 4), 0);
		ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &parent), 0);
		weft_pipeline_source src = {.chan = ch};
		weft_pipeline *p = new_pipeline(parent, &src);
		add(p, (weft_pipeline_stage){
			       .map = map_mul3, .out_size = 8, .workers = 3, .ordered = how & 1});
		ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &(struct order_check){0}), 0);
		struct canceller c = {
			.after_ns = 20 * TEST_MS, .p = p, .ctx = how & 2 ? parent : NULL};
		weft_wg_add(&c.done, 1);
		GO(cancel_later, &c);
		int64_t t0 = test_now_ns();
		ASSERT_EQ(weft_pipeline_run(p), ECANCELED);
		ASSERT_LT(test_now_ns() - t0, 20 * TEST_MS + PROMPT_NS);
		weft_wg_wait(&c.done);
		weft_pipeline_free(p);
		ASSERT(!weft_chan_closed(ch));
		weft_chan_release(ch);
		weft_ctx_release(parent);
	}
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/*
 * No sink and no output channel: the last stage's items are dropped as they
 * come (every object freed by the drop), and run returns 0. Guards: a last
 * stage that blocks forever on an output nobody reads, outputs leaked.
 */
TEST(no_sink_drops_outputs)
{
	objs_reset();
	uint64_t n = 300;
	struct flow fl = {.n = n};
	weft_pipeline_source src = {
		.gen = gen_flow, .arg = &fl, .item_size = sizeof(uint64_t), .buffer = 4};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){.flatmap = flat_two_values,
	                             .out_size = sizeof(struct obj *),
	                             .workers = 2,
	                             .ordered = true,
	                             .drop = obj_drop});
	ASSERT_EQ(weft_pipeline_run(p), 0);
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&objs_live), 0);
	ASSERT_EQ(atomic_load(&objs_dropped), 2 * (long)n);
	EXPECT_ALL_FREED();
}

/*
 * The same pipeline run from a foreign thread (the process's main thread,
 * not a goroutine): start, wait and free work there, and the result is
 * right. Guards: calls that assume a goroutine caller.
 */
TEST_THREAD(run_from_foreign_thread)
{
	int64_t base = weft_num_goroutines();
	uint64_t n = 2000;
	struct chain_cfg cfg = {{true, true, true}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1};
	run_chain(&cfg, n);
	struct order_check o = {0};
	weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = sizeof n};
	weft_pipeline *p = new_pipeline(NULL, &src);
	add(p, (weft_pipeline_stage){.map = map_sleep,
	                             .arg = &no_nap,
	                             .out_size = 8,
	                             .workers = 3,
	                             .ordered = true});
	ASSERT_EQ(weft_pipeline_set_sink(p, sink_in_order, &o), 0);
	ASSERT_EQ(weft_pipeline_start(p, NULL), 0);
	ASSERT_EQ(weft_pipeline_wait(p), 0);
	weft_pipeline_free(p);
	ASSERT_EQ(o.next, n);
	ASSERT_EQ(o.bad, 0);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

/*
 * A source that emits nothing: the sink is never called and run returns 0,
 * through ordered and unordered stages. Guards: a stage that never sees the
 * end of an empty input.
 */
TEST(empty_source)
{
	uint64_t n = 0;
	for (int ordered = 0; ordered < 2; ordered++) {
		struct collect c = {0};
		weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = sizeof n};
		weft_pipeline *p = new_pipeline(NULL, &src);
		add(p, (weft_pipeline_stage){
			       .map = map_mul3, .out_size = 8, .workers = 3, .ordered = ordered});
		add(p, (weft_pipeline_stage){.flatmap = flat_spread, .out_size = 8, .workers = 2});
		ASSERT_EQ(weft_pipeline_set_sink(p, sink_collect, &c), 0);
		ASSERT_EQ(weft_pipeline_run(p), 0);
		weft_pipeline_free(p);
		ASSERT_EQ(c.got, 0);
	}
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- errors and misuse */

/*
 * Bad configurations are EINVAL and add nothing: no source or two, an item
 * size over WEFT_CHAN_MAX_ELEM, no stage function or two, a filter whose
 * size differs from its input's, workers, window or batch out of range, a
 * NULL sink. A buffer too large to allocate makes start fail with ENOMEM
 * having run nothing (the generator is never called), and the pipeline can
 * be freed. Guards: bad input accepted, a failed start that ran something
 * or leaked.
 */
TEST(bad_configuration)
{
	int64_t base = weft_num_goroutines();
	uint64_t n = 10;
	weft_pipeline *p = NULL;
	weft_chan *ch = NULL;
	ASSERT_EQ(weft_chan_make(&ch, 8, 0), 0);
	weft_pipeline_source none = {.item_size = 8};
	weft_pipeline_source both = {.gen = gen_count, .chan = ch, .item_size = 8};
	weft_pipeline_source big = {.gen = gen_count, .item_size = WEFT_CHAN_MAX_ELEM + 1};
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &none), EINVAL);
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &both), EINVAL);
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &big), EINVAL);
	ASSERT_EQ(weft_pipeline_new(NULL, NULL, &none), EINVAL);
	ASSERT_EQ(weft_pipeline_new(&p, NULL, NULL), EINVAL);
	ASSERT(p == NULL);
	weft_chan_release(ch);

	weft_pipeline_source src = {.gen = gen_counting, .arg = &n, .item_size = 8};
	p = new_pipeline(NULL, &src);
	weft_pipeline_stage bad[] = {
		{.out_size = 8},
		{.map = map_mul3, .filter = filter_even, .out_size = 8},
		{.map = map_mul3, .out_size = WEFT_CHAN_MAX_ELEM + 1},
		{.filter = filter_even, .out_size = 4},
		{.map = map_mul3, .out_size = 8, .workers = -1},
		{.map = map_mul3, .out_size = 8, .workers = WEFT_PIPELINE_MAX_WORKERS + 1},
		{.map = map_mul3,
	         .out_size = 8,
	         .ordered = true,
	         .window = WEFT_PIPELINE_MAX_WINDOW + 1},
		{.map = map_mul3, .out_size = 8, .batch = WEFT_PIPELINE_MAX_BATCH + 1},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (weft_pipeline_add(p, &bad[i]) != EINVAL)
			FAIL("bad stage %zu accepted", i);
	ASSERT_EQ(weft_pipeline_add(p, NULL), EINVAL);
	ASSERT_EQ(weft_pipeline_set_sink(p, NULL, NULL), EINVAL);
	/* A filter of size 0 or its input's is fine; so is the largest batch. */
	add(p, (weft_pipeline_stage){
		       .filter = filter_even, .out_size = 8, .batch = WEFT_PIPELINE_MAX_BATCH});
	add(p, (weft_pipeline_stage){.map = map_mul3, .out_size = 8, .buffer = SIZE_MAX / 16});
	atomic_store(&cancelled_calls, 0);
	ASSERT_EQ(weft_pipeline_start(p, NULL), ENOMEM);
	weft_pipeline_free(p);
	ASSERT_EQ(atomic_load(&cancelled_calls), 0);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

enum misuse {
	M_START_TWICE,
	M_WAIT_UNSTARTED,
	M_WAIT_TWICE,
	M_FREE_RUNNING,
	M_ADD_STARTED,
	M_EMIT_AFTER,
	M_NIL,
};

static weft_pipeline_emitter *stashed;
static weft_chan *step;

/* Stash the emitter, emit nothing, return; the next item comes when the
 * misuser says so. */
static int flat_stash(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	(void)ctx, (void)arg, (void)in;
	__atomic_store_n(&stashed, em, __ATOMIC_RELEASE);
	return 0;
}

static int gen_stepped(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)arg;
	uint64_t v = 1;
	int r = weft_pipeline_emit(em, &v);
	if (r)
		return r;
	return weft_chan_recv_ctx(ctx, step, NULL) == 0 ? 0 : ECANCELED;
}

static int misuse_main(void *arg)
{
	enum misuse m = (enum misuse)(uintptr_t)arg;
	uint64_t n = 3;
	weft_pipeline_source src = {.gen = gen_count, .arg = &n, .item_size = 8};
	weft_pipeline *p = NULL;
	if (m == M_NIL) {
		weft_pipeline_cancel(NULL);
		return 0;
	}
	if (m == M_EMIT_AFTER) {
		weft_chan_make(&step, 0, 0);
		src.gen = gen_stepped;
		weft_pipeline_new(&p, NULL, &src);
		weft_pipeline_add(p, &(weft_pipeline_stage){.flatmap = flat_stash, .out_size = 8});
		weft_pipeline_start(p, NULL);
		while (!__atomic_load_n(&stashed, __ATOMIC_ACQUIRE))
			weft_sleep(TEST_MS);
		weft_sleep(10 * TEST_MS); /* the worker is back in its receive */
		uint64_t v = 2;
		weft_pipeline_emit(stashed, &v);
		return 0;
	}
	weft_pipeline_new(&p, NULL, &src);
	weft_pipeline_add(p, &(weft_pipeline_stage){.map = map_mul3, .out_size = 8});
	switch (m) {
	case M_WAIT_UNSTARTED: weft_pipeline_wait(p); break;
	case M_START_TWICE:
		weft_pipeline_start(p, NULL);
		weft_pipeline_start(p, NULL);
		break;
	case M_WAIT_TWICE:
		weft_pipeline_run(p);
		weft_pipeline_wait(p);
		break;
	case M_FREE_RUNNING:
		weft_pipeline_start(p, NULL);
		weft_pipeline_free(p);
		break;
	case M_ADD_STARTED:
		weft_pipeline_start(p, NULL);
		weft_pipeline_add(p, &(weft_pipeline_stage){.map = map_mul3, .out_size = 8});
		break;
	default: break;
	}
	return 0;
}

CHILD(pipeline_misuse)
{
	const char *m = getenv("MISUSE");
	return weft_main(misuse_main, (void *)(uintptr_t)atoi(m ? m : "0"));
}

/*
 * Misuse is a fatal error naming it, in a child process that dies by
 * SIGABRT: starting twice, waiting for a pipeline never started or twice,
 * freeing a running one, adding a stage to a started one, emitting with an
 * emitter whose call has returned, cancelling a NULL pipeline. Guards: a
 * silent misuse (memory corruption later), the wrong message.
 */
TEST(misuse_is_fatal)
{
	static const char *const want[] = {
		[M_START_TWICE] = "fatal error: pipeline: start of a pipeline that was started",
		[M_WAIT_UNSTARTED] =
			"fatal error: pipeline: wait on a pipeline that is not running",
		[M_WAIT_TWICE] = "fatal error: pipeline: wait on a pipeline that is not running",
		[M_FREE_RUNNING] = "fatal error: pipeline: free of a running pipeline",
		[M_ADD_STARTED] = "fatal error: pipeline: add on a pipeline that was started",
		[M_EMIT_AFTER] = "fatal error: pipeline: emit outside the function",
		[M_NIL] = "fatal error: pipeline: cancel of a nil pipeline",
	};
	for (int m = 0; m <= M_NIL; m++) {
		/* An emit after the call has returned comes from another
		 * goroutine with nothing ordering it after the worker's writes:
		 * ThreadSanitizer reports that race (correctly: it is the
		 * misuse) before the fatal error can. */
		if (TEST_TSAN && m == M_EMIT_AFTER)
			continue;
		char env[32];
		snprintf(env, sizeof env, "MISUSE=%d", m);
		const char *const envs[] = {env, NULL};
		EXPECT_FATAL("pipeline_misuse", envs, 10000, want[m]);
	}
}

/* Emits 0, 1, 2, ... until an emit fails, then returns 0, as the header
 * tells a generator to. */
static int gen_until_refused(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx, (void)arg;
	for (uint64_t i = 0;; i++)
		if (weft_pipeline_emit(em, &i) != 0)
			return 0;
}

/*
 * A pipeline of only a generator, read through its output channel and
 * cancelled after 10 items: wait() reports ECANCELED (items were dropped),
 * though the generator returned 0. And with a channel source and no stage,
 * an output channel is refused (EINVAL): it would be the source channel
 * itself, which the pipeline neither reads nor closes. Guards: no one
 * recording the cancellation when the generator is the only goroutine
 * (wait() returned 0, "every item went through"); the source channel handed
 * back as the output.
 */
TEST(source_only_pipelines)
{
	weft_pipeline *p;
	weft_pipeline_source src = {.gen = gen_until_refused, .item_size = sizeof(uint64_t)};
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &src), 0);
	weft_chan *out;
	ASSERT_EQ(weft_pipeline_start(p, &out), 0);
	uint64_t v;
	for (uint64_t i = 0; i < 10; i++) {
		ASSERT_EQ(weft_chan_recv(out, &v), 0);
		ASSERT_EQ(v, i);
	}
	weft_pipeline_cancel(p);
	ASSERT_EQ(weft_pipeline_wait(p), ECANCELED);
	weft_pipeline_free(p);

	weft_chan *in;
	ASSERT_EQ(weft_chan_make(&in, sizeof(uint64_t), 4), 0);
	weft_pipeline_source csrc = {.chan = in, .item_size = sizeof(uint64_t)};
	ASSERT_EQ(weft_pipeline_new(&p, NULL, &csrc), 0);
	ASSERT_EQ(weft_pipeline_start(p, &out), EINVAL);
	weft_pipeline_free(p);
	weft_chan_release(in);
}
