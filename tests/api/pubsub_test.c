/* SPDX-License-Identifier: MIT */
/*
 * pubsub_test.c - fan-in (weft_merge), tee (weft_tee) and the pub-sub broker
 * (weft_pubsub): that each loses nothing it promises to keep.
 *
 * Merge: many producers' values arrive exactly once, each input's in order,
 * and out is closed after the last input; cancellation (a context, a
 * deadline, weft_merge_stop) stops it even while its inputs and output stay
 * ready, closes out, and leaves no goroutine; an output closed by someone else
 * ends it without a second close; bad arguments start nothing.
 * Tee: both outputs get every value in order while one reader is slow;
 * cancellation closes both; an output closed by someone else.
 * Pub-sub: under each policy, with a slow and a fast subscriber, exactly the
 * values the policy keeps arrive, in publish order, and the counters match
 * (block: all; drop newest: the first cap; drop oldest: the last cap);
 * publishing with nobody subscribed is counted; the _until and _ctx forms
 * give up having given the message to nobody; unsubscribe and close wake a
 * blocked publisher; close delivers what was accepted, then EPIPE; the ready
 * channel in a select loses no wake-up; a stress of publishers and
 * subscribers (goroutines and pthreads) with churn, where every subscription
 * keeps offered == delivered + dropped and the blocking ones of a topic all
 * see the same sequence; misuse is fatal.
 *
 * Every test ends with every channel and context freed (weft_stats counts
 * those alive), and the harness checks no goroutine is left behind.
 */
#include "test.h"

#define expect_fatal(child, msg) EXPECT_FATAL((child), NULL, 5000, (msg))

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SEC (1000 * TEST_MS)
/* "Promptly": a bound only a missed wake-up exceeds. */
#define PROMPT_NS (SEC * test_slowdown())

static weft_chan *make_chan(size_t elem_size, size_t cap)
{
	weft_chan *c = NULL;
	ASSERT_EQ(weft_chan_make(&c, elem_size, cap), 0);
	return c;
}

static weft_ctx *new_cancel(void)
{
	weft_ctx *c = NULL;
	ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &c), 0);
	return c;
}

static void wg_wait_bounded(weft_wg *wg, const char *what)
{
	if (weft_wg_wait_until(wg, weft_now() + 20 * SEC * test_slowdown()) != 0)
		FAIL("%s: not finished in time", what);
}

/* Receive from c, failing the test if nothing comes (no close either)
 * within PROMPT_NS. */
static int recv_bounded(weft_chan *c, void *out)
{
	int r = weft_chan_recv_until(c, out, weft_now() + PROMPT_NS);
	if (r == ETIMEDOUT)
		FAIL("nothing received and channel not closed after %lld ms",
		     (long long)(PROMPT_NS / TEST_MS));
	return r;
}

/* ================================================================ merge */

struct producer {
	weft_chan *c;
	uint32_t id;
	uint32_t count; /* values to send, then close c; 0: send until refused */
	weft_wg *wg;
};

/* Sends (id << 32 | seq) for seq = 0, 1, ...; closes c after count values,
 * or stops at the first refused send (c closed by the test). */
static void produce(void *arg)
{
	struct producer *p = arg;
	for (uint32_t seq = 0; p->count == 0 || seq < p->count; seq++) {
		uint64_t v = (uint64_t)p->id << 32 | seq;
		if (weft_chan_send(p->c, &v) != 0)
			break;
	}
	if (p->count)
		weft_chan_close(p->c);
	weft_wg_done(p->wg);
}

/* Read out until it is closed, checking that each input's values arrive
 * once each and in order; returns how many arrived. */
static uint64_t drain_merged(weft_chan *out, uint32_t nin, uint32_t per)
{
	uint32_t *next = calloc(nin, sizeof *next);
	ASSERT(next != NULL);
	uint64_t v, total = 0;
	while (recv_bounded(out, &v) == 0) {
		uint32_t id = (uint32_t)(v >> 32), seq = (uint32_t)v;
		ASSERT_LT(id, nin);
		if (seq != next[id])
			FAIL("input %u: got seq %u, expected %u (lost, duplicated or reordered)",
			     id, seq, next[id]);
		next[id]++;
		total++;
	}
	for (uint32_t i = 0; per && i < nin; i++)
		ASSERT_EQ(next[i], per);
	free(next);
	return total;
}

/* Many producers, inputs of mixed capacity (unbuffered included): every
 * value arrives exactly once, each input's in order, then out is closed
 * and the merge reports a clean end. Fails on a lost or duplicated value
 * and on an out that is never closed. */
static void merge_many(uint32_t nin, uint32_t per)
{
	weft_chan *out = make_chan(sizeof(uint64_t), 8);
	weft_chan **ins = calloc(nin, sizeof *ins);
	struct producer *prods = calloc(nin, sizeof *prods);
	weft_wg wg = WEFT_WG_INIT;
	ASSERT(ins && prods);
	for (uint32_t i = 0; i < nin; i++) {
		ins[i] = make_chan(sizeof(uint64_t), i % 3 == 0 ? 0 : i % 5);
		prods[i] = (struct producer){.c = ins[i], .id = i, .count = per, .wg = &wg};
	}
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, ins, nin, NULL), 0);
	for (uint32_t i = 0; i < nin; i++) {
		weft_wg_add(&wg, 1);
		ASSERT_EQ(weft_go(produce, &prods[i]), 0);
	}
	ASSERT_EQ(drain_merged(out, nin, per), (uint64_t)nin * per);
	ASSERT(weft_chan_closed(out));
	ASSERT_EQ(weft_merge_wait(m), 0);
	ASSERT_EQ(weft_merge_wait(m), 0); /* again: the same answer */
	wg_wait_bounded(&wg, "producers");
	weft_merge_free(m);
	for (uint32_t i = 0; i < nin; i++)
		weft_chan_release(ins[i]);
	weft_chan_release(out);
	free(ins);
	free(prods);
}

TEST(merge_every_value_once)
{
	merge_many(TEST_SIZE(64, 16), TEST_SIZE(2000, 300));
	EXPECT_ALL_FREED();
}

/* The same with the consumer, the merge's creator and its joiner on a thread
 * that is not a goroutine. */
TEST_THREAD(merge_from_foreign_thread)
{
	merge_many(8, TEST_SIZE(2000, 300));
	EXPECT_ALL_FREED();
}

/* No inputs: out is closed at once (Go's merge of nothing). */
TEST(merge_of_nothing)
{
	weft_chan *out = make_chan(sizeof(int), 0);
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, NULL, 0, NULL), 0);
	int v = 1;
	ASSERT_EQ(weft_chan_recv(out, &v), EPIPE);
	ASSERT_EQ(weft_merge_wait(m), 0);
	weft_merge_free(m);
	weft_chan_release(out);
	EXPECT_ALL_FREED();
}

/* Bad arguments start nothing, move nothing, close nothing. */
TEST(merge_and_tee_einval)
{
	int64_t base = weft_num_goroutines();
	weft_chan *a = make_chan(sizeof(int), 1), *b = make_chan(sizeof(int), 1);
	weft_chan *wide = make_chan(sizeof(int64_t), 1), *out = make_chan(sizeof(int), 1);
	weft_chan *ins[] = {a, b, wide};
	weft_chan *with_null[] = {a, NULL};
	weft_chan *with_out[] = {a, out};
	weft_merge *m = (weft_merge *)&base; /* untouched on error */
	int one = 1;
	ASSERT_EQ(weft_chan_send(a, &one), 0);

	ASSERT_EQ(weft_merge_new(&m, out, ins, 3, NULL), EINVAL); /* sizes differ */
	ASSERT_EQ(weft_merge_new(&m, NULL, ins, 2, NULL), EINVAL);
	ASSERT_EQ(weft_merge_new(NULL, out, ins, 2, NULL), EINVAL);
	ASSERT_EQ(weft_merge_new(&m, out, NULL, 2, NULL), EINVAL);
	ASSERT_EQ(weft_merge_new(&m, out, with_null, 2, NULL), EINVAL);
	ASSERT_EQ(weft_merge_new(&m, out, with_out, 2, NULL), EINVAL);
	ASSERT_PTR_EQ(m, &base);

	weft_tee *t = (weft_tee *)&base;
	ASSERT_EQ(weft_tee_new(&t, a, b, wide, NULL), EINVAL);
	ASSERT_EQ(weft_tee_new(&t, a, b, b, NULL), EINVAL);
	ASSERT_EQ(weft_tee_new(&t, a, a, b, NULL), EINVAL);
	ASSERT_EQ(weft_tee_new(&t, NULL, a, b, NULL), EINVAL);
	ASSERT_EQ(weft_tee_new(&t, a, NULL, b, NULL), EINVAL);
	ASSERT_EQ(weft_tee_new(NULL, a, out, b, NULL), EINVAL);
	ASSERT_PTR_EQ(t, &base);

	ASSERT_EQ(weft_num_goroutines(), base);
	ASSERT_EQ(weft_chan_len(a), 1); /* nothing moved */
	ASSERT_EQ(weft_chan_len(out), 0);
	ASSERT(!weft_chan_closed(out) && !weft_chan_closed(b));
	weft_merge_free(NULL);
	weft_tee_free(NULL);
	weft_chan_release(a);
	weft_chan_release(b);
	weft_chan_release(wide);
	weft_chan_release(out);
	EXPECT_ALL_FREED();
}

/* How a merge is stopped in merge_cancel(). */
enum stop_how { STOP_CTX, STOP_CALL, STOP_DEADLINE };

/*
 * Stopping a merge: half the inputs busy (producers that never stop), half
 * idle (nobody sends), out unbuffered and no longer read, so the forwarders
 * are parked in both a receive and a send. The merge must end promptly with
 * the right error, close out, and leave its goroutines gone. Then the inputs
 * still hold what was not taken.
 */
static void merge_cancel(enum stop_how how)
{
	enum { NIN = 16 };
	int64_t base = weft_num_goroutines();
	weft_chan *out = make_chan(sizeof(uint64_t), 0);
	weft_chan *ins[NIN];
	struct producer prods[NIN];
	weft_wg wg = WEFT_WG_INIT;
	weft_ctx *ctx = NULL;
	/* Before the deadline is set: "never early" is measured from here. */
	int64_t t0 = weft_now();
	if (how == STOP_CTX)
		ctx = new_cancel();
	if (how == STOP_DEADLINE)
		ASSERT_EQ(weft_ctx_with_timeout(weft_ctx_background(), 100 * TEST_MS, &ctx), 0);
	for (int i = 0; i < NIN; i++)
		ins[i] = make_chan(sizeof(uint64_t), 4);
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, ins, NIN, ctx), 0);
	for (int i = 0; i < NIN; i += 2) {
		prods[i] = (struct producer){.c = ins[i], .id = (uint32_t)i, .wg = &wg};
		weft_wg_add(&wg, 1);
		ASSERT_EQ(weft_go(produce, &prods[i]), 0);
	}
	uint64_t v;
	for (int k = 0; k < 20; k++)
		ASSERT_EQ(recv_bounded(out, &v), 0);
	weft_sleep(5 * TEST_MS); /* let the forwarders park in their sends */

	int64_t t1 = weft_now();
	if (how == STOP_CTX)
		weft_ctx_cancel(ctx);
	else if (how == STOP_CALL)
		weft_merge_stop(m);
	int want = how == STOP_DEADLINE ? ETIMEDOUT : ECANCELED;
	ASSERT_EQ(weft_merge_wait(m), want);
	int64_t t2 = weft_now();
	if (how == STOP_DEADLINE)
		ASSERT_GE(t2 - t0, 100 * TEST_MS); /* never early */
	ASSERT_LT(t2 - t1, (how == STOP_DEADLINE ? 100 * TEST_MS : 0) + PROMPT_NS);
	/* out is closed: at most the values the forwarders had in hand were
	 * dropped, and no more come. */
	ASSERT(weft_chan_closed(out));
	ASSERT_EQ(weft_chan_recv(out, &v), EPIPE);
	weft_merge_stop(m); /* idempotent, after the end too */
	ASSERT_EQ(weft_merge_wait(m), want);
	/* Only the producers remain. */
	EXPECT_GOROUTINES(base + NIN / 2);
	for (int i = 0; i < NIN; i += 2)
		ASSERT_EQ(weft_chan_len(ins[i]), 4); /* full again: nobody forwards */
	for (int i = 0; i < NIN; i++)
		weft_chan_close(ins[i]); /* releases the producers */
	wg_wait_bounded(&wg, "producers");
	weft_merge_free(m);
	for (int i = 0; i < NIN; i++)
		weft_chan_release(ins[i]);
	weft_chan_release(out);
	weft_ctx_release(ctx);
	EXPECT_GOROUTINES(base);
	EXPECT_ALL_FREED();
}

TEST(merge_cancel_by_context)
{
	merge_cancel(STOP_CTX);
}

TEST(merge_cancel_by_stop)
{
	merge_cancel(STOP_CALL);
}

TEST(merge_cancel_by_deadline)
{
	merge_cancel(STOP_DEADLINE);
}

/* A reader that counts what it gets from c until EPIPE. */
struct reader {
	weft_chan *c;
	atomic_long got;
	weft_wg *wg;
};

static void read_all(void *arg)
{
	struct reader *r = arg;
	uint64_t v;
	while (weft_chan_recv(r->c, &v) == 0)
		atomic_fetch_add(&r->got, 1);
	weft_wg_done(r->wg);
}

/* Cancelling a merge whose input and output are always ready: a busy
 * producer and a busy reader. The _ctx calls would complete without waiting
 * every time; the merge must still notice the cancellation and close out. */
TEST(merge_cancel_while_always_ready)
{
	weft_chan *in = make_chan(sizeof(uint64_t), 64), *out = make_chan(sizeof(uint64_t), 64);
	weft_wg wg = WEFT_WG_INIT;
	struct producer p = {.c = in, .id = 0, .wg = &wg};
	struct reader rd = {.c = out, .wg = &wg};
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, &in, 1, NULL), 0);
	weft_wg_add(&wg, 2);
	ASSERT_EQ(weft_go(produce, &p), 0);
	ASSERT_EQ(weft_go(read_all, &rd), 0);
	int64_t deadline = test_now_ns() + PROMPT_NS;
	while (atomic_load(&rd.got) < 1000 && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT_GE(atomic_load(&rd.got), 1000);
	weft_merge_stop(m);
	ASSERT_EQ(weft_merge_wait(m), ECANCELED);
	/* The reader sees out closed (it ends); then release the producer. */
	int64_t t0 = weft_now();
	while (!weft_chan_closed(out) && weft_now() - t0 < PROMPT_NS)
		weft_sleep(TEST_MS);
	ASSERT(weft_chan_closed(out));
	weft_chan_close(in);
	wg_wait_bounded(&wg, "producer and reader");
	weft_merge_free(m);
	weft_chan_release(in);
	weft_chan_release(out);
	EXPECT_ALL_FREED();
}

/* A merge (and a tee) whose context is done before it starts moves nothing,
 * although its inputs hold values and its outputs have room: a _ctx call
 * alone would complete them all. */
TEST(merge_and_tee_with_done_context_move_nothing)
{
	weft_chan *in = make_chan(sizeof(int), 64), *out = make_chan(sizeof(int), 64);
	weft_chan *out2 = make_chan(sizeof(int), 64);
	for (int i = 0; i < 64; i++)
		ASSERT_EQ(weft_chan_send(in, &i), 0);
	weft_ctx *ctx = new_cancel();
	weft_ctx_cancel(ctx);
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, &in, 1, ctx), 0);
	ASSERT_EQ(weft_merge_wait(m), ECANCELED);
	ASSERT_EQ(weft_chan_len(in), 64);
	ASSERT_EQ(weft_chan_len(out), 0);
	ASSERT(weft_chan_closed(out));
	weft_merge_free(m);
	weft_chan_release(out);
	out = make_chan(sizeof(int), 64);
	weft_tee *t = NULL;
	ASSERT_EQ(weft_tee_new(&t, in, out, out2, ctx), 0);
	ASSERT_EQ(weft_tee_wait(t), ECANCELED);
	ASSERT_EQ(weft_chan_len(in), 64);
	ASSERT_EQ(weft_chan_len(out) + weft_chan_len(out2), 0);
	weft_tee_free(t);
	weft_ctx_release(ctx);
	weft_chan_release(in);
	weft_chan_release(out);
	weft_chan_release(out2);
	EXPECT_ALL_FREED();
}

/* out closed by someone else while the forwarders wait to send: the merge
 * stops with EPIPE and does not close out a second time (that would be a
 * fatal error and kill the test). */
TEST(merge_output_closed_by_other)
{
	enum { NIN = 4 };
	weft_chan *out = make_chan(sizeof(uint64_t), 0);
	weft_chan *ins[NIN];
	for (int i = 0; i < NIN; i++) {
		ins[i] = make_chan(sizeof(uint64_t), 1);
		uint64_t v = (uint64_t)i;
		ASSERT_EQ(weft_chan_send(ins[i], &v), 0);
	}
	weft_merge *m = NULL;
	ASSERT_EQ(weft_merge_new(&m, out, ins, NIN, NULL), 0);
	weft_sleep(5 * TEST_MS);
	weft_chan_close(out);
	ASSERT_EQ(weft_merge_wait(m), EPIPE);
	weft_merge_free(m);
	for (int i = 0; i < NIN; i++)
		weft_chan_release(ins[i]);
	weft_chan_release(out);
	EXPECT_ALL_FREED();
}

/* ================================================================ tee */

struct tee_reader {
	weft_chan *c;
	uint64_t n;     /* values expected: 0 .. n-1 */
	int slow_every; /* pause 1 ms after every slow_every-th value (0: never) */
	uint64_t got;
	int bad; /* first wrong value + 1, or 0 */
	int end; /* the receive result that ended the loop */
	weft_wg *wg;
};

static void tee_read(void *arg)
{
	struct tee_reader *r = arg;
	uint64_t v;
	int64_t deadline = weft_now() + 20 * SEC * test_slowdown();
	while ((r->end = weft_chan_recv_until(r->c, &v, deadline)) == 0) {
		if (v != r->got && !r->bad)
			r->bad = (int)r->got + 1;
		r->got++;
		if (r->slow_every && r->got % (uint64_t)r->slow_every == 0)
			weft_sleep(TEST_MS);
	}
	weft_wg_done(r->wg);
}

/* Every value reaches both outputs, in order, although one reader is much
 * slower than the other (and one output unbuffered); both close after in. */
TEST(tee_every_value_to_both_in_order)
{
	uint64_t n = (uint64_t)TEST_SIZE(20000, 3000);
	weft_chan *in = make_chan(sizeof(uint64_t), 16);
	weft_chan *o1 = make_chan(sizeof(uint64_t), 0), *o2 = make_chan(sizeof(uint64_t), 4);
	weft_wg wg = WEFT_WG_INIT;
	struct tee_reader fast = {.c = o1, .n = n, .wg = &wg};
	struct tee_reader slow = {.c = o2, .n = n, .slow_every = 500, .wg = &wg};
	weft_tee *t = NULL;
	ASSERT_EQ(weft_tee_new(&t, in, o1, o2, NULL), 0);
	weft_wg_add(&wg, 2);
	ASSERT_EQ(weft_go(tee_read, &fast), 0);
	ASSERT_EQ(weft_go(tee_read, &slow), 0);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(weft_chan_send(in, &i), 0);
	weft_chan_close(in);
	wg_wait_bounded(&wg, "readers");
	ASSERT_EQ(fast.bad, 0);
	ASSERT_EQ(slow.bad, 0);
	ASSERT_EQ(fast.got, n);
	ASSERT_EQ(slow.got, n);
	ASSERT_EQ(fast.end, EPIPE); /* closed, not timed out */
	ASSERT_EQ(slow.end, EPIPE);
	ASSERT_EQ(weft_tee_wait(t), 0);
	weft_tee_free(t);
	weft_chan_release(in);
	weft_chan_release(o1);
	weft_chan_release(o2);
	EXPECT_ALL_FREED();
}

/* A tee whose second reader never reads is stuck with value 0 given to the
 * first only; cancelling it closes both outputs, ends it with ECANCELED and
 * leaves no goroutine. From a foreign thread, with a context. */
TEST_THREAD(tee_cancel)
{
	int64_t base = weft_num_goroutines();
	weft_chan *in = make_chan(sizeof(uint64_t), 4);
	weft_chan *o1 = make_chan(sizeof(uint64_t), 0), *o2 = make_chan(sizeof(uint64_t), 0);
	weft_ctx *ctx = new_cancel();
	weft_tee *t = NULL;
	ASSERT_EQ(weft_tee_new(&t, in, o1, o2, ctx), 0);
	for (uint64_t i = 0; i < 3; i++)
		ASSERT_EQ(weft_chan_send(in, &i), 0);
	uint64_t v = 99;
	ASSERT_EQ(recv_bounded(o1, &v), 0);
	ASSERT_EQ(v, 0);
	/* Value 1 waits for o1 too, but only after o2 has had value 0. */
	ASSERT_EQ(weft_chan_recv_until(o1, &v, weft_now() + 20 * TEST_MS), ETIMEDOUT);
	weft_ctx_cancel(ctx);
	ASSERT_EQ(weft_tee_wait(t), ECANCELED);
	ASSERT_EQ(recv_bounded(o1, &v), EPIPE);
	ASSERT_EQ(recv_bounded(o2, &v), EPIPE);
	ASSERT_EQ(weft_chan_len(in), 2); /* values 1 and 2 stay in in */
	weft_tee_free(t);
	EXPECT_GOROUTINES(base);
	weft_ctx_release(ctx);
	weft_chan_release(in);
	weft_chan_release(o1);
	weft_chan_release(o2);
	EXPECT_ALL_FREED();
}

/* weft_tee_stop while the tee waits on an empty input; and an output closed
 * by someone else: EPIPE, and the other output is closed by the tee. */
TEST(tee_stop_and_output_closed_by_other)
{
	weft_chan *in = make_chan(sizeof(int), 0);
	weft_chan *o1 = make_chan(sizeof(int), 1), *o2 = make_chan(sizeof(int), 1);
	weft_tee *t = NULL;
	ASSERT_EQ(weft_tee_new(&t, in, o1, o2, NULL), 0);
	weft_sleep(2 * TEST_MS);
	weft_tee_stop(t);
	ASSERT_EQ(weft_tee_wait(t), ECANCELED);
	ASSERT(weft_chan_closed(o1) && weft_chan_closed(o2));
	weft_tee_free(t);
	weft_chan_release(o1);
	weft_chan_release(o2);

	o1 = make_chan(sizeof(int), 0);
	o2 = make_chan(sizeof(int), 0);
	ASSERT_EQ(weft_tee_new(&t, in, o1, o2, NULL), 0);
	int v = 7;
	ASSERT_EQ(weft_chan_send(in, &v), 0);
	weft_chan_close(o2);
	ASSERT_EQ(weft_tee_wait(t), EPIPE);
	ASSERT(weft_chan_closed(o1));
	weft_tee_free(t);
	weft_chan_release(in);
	weft_chan_release(o1);
	weft_chan_release(o2);
	EXPECT_ALL_FREED();
}

/* ================================================================ pub-sub */

static weft_pubsub *new_broker(size_t elem_size)
{
	weft_pubsub *ps = NULL;
	ASSERT_EQ(weft_pubsub_new(&ps, elem_size), 0);
	return ps;
}

static weft_sub *subscribe(weft_pubsub *ps, const char *topic, size_t cap, int policy)
{
	weft_sub *s = NULL;
	ASSERT_EQ(weft_pubsub_subscribe(ps, topic, cap, policy, &s), 0);
	ASSERT(s != NULL);
	return s;
}

static void expect_sub_stats(weft_sub *s, uint64_t offered, uint64_t delivered, uint64_t dropped,
                             uint64_t buffered)
{
	weft_sub_stats st;
	weft_sub_stats_get(s, &st);
	ASSERT_EQ(st.offered, offered);
	ASSERT_EQ(st.delivered, delivered);
	ASSERT_EQ(st.dropped, dropped);
	ASSERT_EQ(st.buffered, buffered);
}

/* A subscriber goroutine: receives into got[] until EPIPE, pausing 1 ms
 * every slow_every messages (0: never). */
struct subscriber {
	weft_sub *sub;
	int slow_every;
	uint64_t *got;
	size_t cap_got;
	size_t n;
	int end;
	weft_wg *wg;
};

static void subscriber_run(void *arg)
{
	struct subscriber *s = arg;
	uint64_t v;
	int64_t deadline = weft_now() + 30 * SEC * test_slowdown();
	while ((s->end = weft_sub_recv_until(s->sub, &v, deadline)) == 0) {
		if (s->n < s->cap_got)
			s->got[s->n] = v;
		s->n++;
		if (s->slow_every && s->n % (size_t)s->slow_every == 0)
			weft_sleep(TEST_MS);
	}
	weft_wg_done(s->wg);
}

static void start_subscriber(struct subscriber *s, weft_sub *sub, size_t cap_got, int slow_every,
                             weft_wg *wg)
{
	*s = (struct subscriber){
		.sub = sub, .slow_every = slow_every, .cap_got = cap_got, .wg = wg};
	s->got = calloc(cap_got ? cap_got : 1, sizeof *s->got);
	ASSERT(s->got != NULL);
	weft_wg_add(wg, 1);
	ASSERT_EQ(weft_go(subscriber_run, s), 0);
}

/* got[0..n) must be exactly first, first+1, ..., first+n-1. */
static void expect_run(const struct subscriber *s, uint64_t first, uint64_t n)
{
	ASSERT_EQ(s->end, EPIPE);
	ASSERT_EQ(s->n, n);
	for (uint64_t i = 0; i < n; i++)
		if (s->got[i] != first + i)
			FAIL("message %llu: got %llu, expected %llu", (unsigned long long)i,
			     (unsigned long long)s->got[i], (unsigned long long)(first + i));
}

/*
 * Under each policy, a fast subscriber (blocking, reading all along) and a
 * slow one with the policy under test. For the drop policies the slow one
 * reads nothing until the publisher is done, so exactly what the policy
 * keeps is known: drop newest keeps the first cap, drop oldest the last cap.
 * With WEFT_PUBSUB_BLOCK the slow one reads slowly and must get everything
 * (the publisher waits for it). Counters must match in every case.
 */
static void policy_slow_and_fast(int policy)
{
	enum { CAP = 8 };
	uint64_t n = (uint64_t)TEST_SIZE(5000, 1000);
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *fast = subscribe(ps, "ticks", 4, WEFT_PUBSUB_BLOCK);
	weft_sub *slow = subscribe(ps, "ticks", CAP, policy);
	weft_wg wg = WEFT_WG_INIT, slow_wg = WEFT_WG_INIT;
	struct subscriber fs, ss;
	start_subscriber(&fs, fast, n, 0, &wg);
	if (policy == WEFT_PUBSUB_BLOCK)
		start_subscriber(&ss, slow, n, 100, &slow_wg);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(weft_pubsub_publish(ps, "ticks", &i), 0);
	if (policy != WEFT_PUBSUB_BLOCK) {
		expect_sub_stats(slow, n, 0, n - CAP, CAP);
		start_subscriber(&ss, slow, n, 0, &slow_wg);
	}
	weft_pubsub_close(ps); /* they drain what was accepted, then EPIPE */
	wg_wait_bounded(&wg, "fast subscriber");
	wg_wait_bounded(&slow_wg, "slow subscriber");

	expect_run(&fs, 0, n);
	expect_sub_stats(fast, n, n, 0, 0);
	switch (policy) {
	case WEFT_PUBSUB_BLOCK:
		expect_run(&ss, 0, n);
		expect_sub_stats(slow, n, n, 0, 0);
		break;
	case WEFT_PUBSUB_DROP_NEWEST:
		expect_run(&ss, 0, CAP);
		expect_sub_stats(slow, n, CAP, n - CAP, 0);
		break;
	case WEFT_PUBSUB_DROP_OLDEST:
		expect_run(&ss, n - CAP, CAP);
		expect_sub_stats(slow, n, CAP, n - CAP, 0);
		break;
	}
	weft_pubsub_stats st;
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.published, n);
	ASSERT_EQ(st.unrouted, 0);
	ASSERT_EQ(st.subscriptions, 0); /* closed: detached */
	free(fs.got);
	free(ss.got);
	weft_sub_free(fast);
	weft_sub_free(slow);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

TEST(pubsub_block_slow_and_fast)
{
	policy_slow_and_fast(WEFT_PUBSUB_BLOCK);
}

TEST(pubsub_drop_newest_slow_and_fast)
{
	policy_slow_and_fast(WEFT_PUBSUB_DROP_NEWEST);
}

TEST(pubsub_drop_oldest_slow_and_fast)
{
	policy_slow_and_fast(WEFT_PUBSUB_DROP_OLDEST);
}

/*
 * The drop policies with a slow reader that reads all along: which messages
 * it misses depends on timing, but it gets them in publish order, the
 * counters add up exactly (received == delivered, delivered + dropped ==
 * published), and the ones the policy can never drop arrive: the first cap
 * under drop newest, the last cap under drop oldest.
 */
static void policy_concurrent(int policy)
{
	enum { CAP = 16 };
	uint64_t n = (uint64_t)TEST_SIZE(20000, 4000);
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *slow = subscribe(ps, "t", CAP, policy);
	weft_wg wg = WEFT_WG_INIT;
	struct subscriber ss;
	start_subscriber(&ss, slow, n, 50, &wg);
	for (uint64_t i = 0; i < n; i++) {
		ASSERT_EQ(weft_pubsub_publish(ps, "t", &i), 0);
		if (i % 256 == 0)
			weft_yield();
	}
	weft_pubsub_close(ps);
	wg_wait_bounded(&wg, "subscriber");
	ASSERT_EQ(ss.end, EPIPE);
	weft_sub_stats st;
	weft_sub_stats_get(slow, &st);
	ASSERT_EQ(st.offered, n);
	ASSERT_EQ(st.delivered, ss.n);
	ASSERT_EQ(st.delivered + st.dropped, n);
	ASSERT_EQ(st.buffered, 0);
	ASSERT_GE(st.delivered, CAP);
	for (size_t i = 1; i < ss.n; i++)
		if (ss.got[i] <= ss.got[i - 1])
			FAIL("out of order at %zu: %llu after %llu", i,
			     (unsigned long long)ss.got[i], (unsigned long long)ss.got[i - 1]);
	if (policy == WEFT_PUBSUB_DROP_NEWEST)
		for (uint64_t i = 0; i < CAP; i++)
			ASSERT_EQ(ss.got[i], i);
	else
		for (uint64_t i = 0; i < CAP; i++)
			ASSERT_EQ(ss.got[ss.n - CAP + i], n - CAP + i);
	free(ss.got);
	weft_sub_free(slow);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

TEST(pubsub_drop_newest_concurrent)
{
	policy_concurrent(WEFT_PUBSUB_DROP_NEWEST);
}

TEST(pubsub_drop_oldest_concurrent)
{
	policy_concurrent(WEFT_PUBSUB_DROP_OLDEST);
}

/* Publishing to a topic nobody subscribes to succeeds and is counted; a
 * topic goes away with its last subscription; topics are told apart by
 * name. */
TEST(pubsub_no_subscribers_and_topics)
{
	weft_pubsub *ps = new_broker(sizeof(int));
	int v = 1;
	ASSERT_EQ(weft_pubsub_publish(ps, "nobody", &v), 0);
	weft_sub *a = subscribe(ps, "a", 4, WEFT_PUBSUB_DROP_NEWEST);
	weft_sub *a2 = subscribe(ps, "a", 4, WEFT_PUBSUB_BLOCK);
	weft_sub *b = subscribe(ps, "b", 4, WEFT_PUBSUB_DROP_OLDEST);
	weft_sub *e = subscribe(ps, "", 4, WEFT_PUBSUB_BLOCK); /* the empty name is a name */
	weft_pubsub_stats st;
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.topics, 3);
	ASSERT_EQ(st.subscriptions, 4);
	ASSERT_EQ(weft_pubsub_publish(ps, "a", &v), 0);
	v = 2;
	ASSERT_EQ(weft_pubsub_publish(ps, "b", &v), 0);
	v = 3;
	ASSERT_EQ(weft_pubsub_publish(ps, "", &v), 0);
	expect_sub_stats(a, 1, 0, 0, 1);
	expect_sub_stats(a2, 1, 0, 0, 1);
	expect_sub_stats(b, 1, 0, 0, 1);
	ASSERT_EQ(weft_sub_tryrecv(b, &v), 0);
	ASSERT_EQ(v, 2);
	ASSERT_EQ(weft_sub_tryrecv(b, &v), EAGAIN);
	ASSERT_EQ(weft_sub_tryrecv(e, &v), 0);
	ASSERT_EQ(v, 3);

	weft_pubsub_unsubscribe(a);
	weft_pubsub_unsubscribe(a);                     /* idempotent */
	ASSERT_EQ(weft_pubsub_publish(ps, "a", &v), 0); /* a2 still there */
	expect_sub_stats(a, 1, 0, 0, 1);
	expect_sub_stats(a2, 2, 0, 0, 2);
	ASSERT_EQ(weft_sub_tryrecv(a, &v), 0); /* what it held stays receivable */
	ASSERT_EQ(v, 1);
	ASSERT_EQ(weft_sub_tryrecv(a, &v), EPIPE);
	weft_sub_free(a2);
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.topics, 2);
	ASSERT_EQ(st.subscriptions, 2);
	ASSERT_EQ(weft_pubsub_publish(ps, "a", &v), 0); /* gone: unrouted */
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.published, 6);
	ASSERT_EQ(st.unrouted, 2);
	weft_sub_free(a);
	weft_sub_free(b);
	weft_sub_free(e);
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.topics, 0);
	ASSERT_EQ(st.subscriptions, 0);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

struct canceller {
	weft_ctx *ctx;
	int64_t after_ns;
	weft_wg *wg;
};

static void cancel_later(void *arg)
{
	struct canceller *c = arg;
	weft_sleep(c->after_ns);
	weft_ctx_cancel(c->ctx);
	weft_wg_done(c->wg);
}

/*
 * Backpressure and giving up: a full blocking subscription makes publish
 * wait; the _until form gives up at its deadline (never early), a past
 * deadline makes it a try, the _ctx form gives up when the context is
 * cancelled; each time the message reaches nobody, not even the
 * subscription with room. Room made, the next publish goes to both.
 */
TEST(pubsub_publish_gives_up_having_given_nothing)
{
	weft_pubsub *ps = new_broker(sizeof(int));
	weft_sub *full = subscribe(ps, "t", 1, WEFT_PUBSUB_BLOCK);
	weft_sub *roomy = subscribe(ps, "t", 16, WEFT_PUBSUB_DROP_OLDEST);
	int v = 0;
	ASSERT_EQ(weft_pubsub_publish(ps, "t", &v), 0);
	v = 1;
	int64_t t0 = weft_now();
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, t0 + 50 * TEST_MS), ETIMEDOUT);
	ASSERT_GE(weft_now() - t0, 50 * TEST_MS);
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, weft_now() - 1), ETIMEDOUT);

	weft_ctx *ctx = new_cancel();
	weft_wg wg = WEFT_WG_INIT;
	struct canceller c = {.ctx = ctx, .after_ns = 30 * TEST_MS, .wg = &wg};
	weft_wg_add(&wg, 1);
	t0 = weft_now(); /* before the canceller's 30 ms start */
	ASSERT_EQ(weft_go(cancel_later, &c), 0);
	ASSERT_EQ(weft_pubsub_publish_ctx(ctx, ps, "t", &v), ECANCELED);
	ASSERT_GE(weft_now() - t0, 30 * TEST_MS);
	ASSERT_EQ(weft_pubsub_publish_ctx(ctx, ps, "t", &v), ECANCELED); /* already done */
	wg_wait_bounded(&wg, "canceller");
	expect_sub_stats(full, 1, 0, 0, 1);
	expect_sub_stats(roomy, 1, 0, 0, 1);

	ASSERT_EQ(weft_sub_recv(full, &v), 0);
	ASSERT_EQ(v, 0);
	v = 2;
	/* Room now: a done context or a past deadline do not stop a publish
	 * that needs no wait. */
	ASSERT_EQ(weft_pubsub_publish_ctx(ctx, ps, "t", &v), 0);
	ASSERT_EQ(weft_sub_recv(full, &v), 0);
	v = 3;
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, weft_now() - 1), 0);
	expect_sub_stats(full, 3, 2, 0, 1);
	expect_sub_stats(roomy, 3, 0, 0, 3);
	int want[] = {0, 2, 3};
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(weft_sub_tryrecv(roomy, &v), 0);
		ASSERT_EQ(v, want[i]);
	}
	weft_pubsub_stats st;
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.published, 3);
	weft_ctx_release(ctx);
	weft_sub_free(full);
	weft_sub_free(roomy);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

struct hammer {
	weft_pubsub *ps;
	atomic_bool stop;
	weft_wg wg;
};

static void hammer_run(void *arg)
{
	struct hammer *h = arg;
	int v = 7;
	while (!atomic_load(&h->stop))
		ASSERT_EQ(weft_pubsub_publish(h->ps, "t", &v), 0);
	weft_wg_done(&h->wg);
}

/*
 * A topic whose subscriptions all drop makes no publisher wait but briefly
 * on locks, so a try (a past deadline, a done context) always publishes
 * there, even while two goroutines on other Ps publish to the same topic
 * without pause. Guards: the topic's turn taken as a semaphore whose timed
 * forms fail whenever another publish holds it for its push (1,280,914 of
 * 1,280,978 tries failed).
 */
TEST(pubsub_tries_on_a_drop_only_topic_never_fail)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_pubsub *ps = new_broker(sizeof(int));
	weft_sub *s1 = subscribe(ps, "t", 1, WEFT_PUBSUB_DROP_NEWEST);
	weft_sub *s2 = subscribe(ps, "t", 1, WEFT_PUBSUB_DROP_OLDEST);
	struct hammer h = {.ps = ps, .wg = WEFT_WG_INIT};
	weft_wg_add(&h.wg, 2);
	ASSERT_EQ(weft_go(hammer_run, &h), 0);
	ASSERT_EQ(weft_go(hammer_run, &h), 0);
	weft_ctx *done = new_cancel();
	weft_ctx_cancel(done);
	long tries = 0, failed_until = 0, failed_ctx = 0;
	int v = 1;
	int64_t end = weft_now() + 200 * TEST_MS;
	while (weft_now() < end) {
		tries++;
		failed_until += weft_pubsub_publish_until(ps, "t", &v, 0) != 0;
		failed_ctx += weft_pubsub_publish_ctx(done, ps, "t", &v) != 0;
		if (tries % 64 == 0)
			weft_yield();
	}
	atomic_store(&h.stop, true);
	wg_wait_bounded(&h.wg, "publishers");
	printf("    %ld tries of each kind: %ld past-deadline and %ld done-context publishes "
	       "failed\n", tries, failed_until, failed_ctx);
	ASSERT_EQ(failed_until, 0);
	ASSERT_EQ(failed_ctx, 0);
	weft_ctx_release(done);
	weft_sub_free(s1);
	weft_sub_free(s2);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

struct stalled_publish {
	weft_pubsub *ps;
	int result;
	weft_wg wg;
};

static void stalled_publish_run(void *arg)
{
	struct stalled_publish *p = arg;
	int v = 2;
	p->result = weft_pubsub_publish(p->ps, "t", &v);
	weft_wg_done(&p->wg);
}

/*
 * Behind a publish that holds the topic's turn while it waits for room in a
 * full blocking subscription, a deadline, a past deadline and a done
 * context each bound the wait for the turn (ETIMEDOUT at the deadline, at
 * once, ECANCELED at once); once room is made, the held publish completes
 * and a try goes through. Guards: a turn waited for as a lock whatever its
 * holder is doing (a publisher behind a stalled one would wait for room it
 * was not allowed to wait for).
 */
TEST(pubsub_turn_behind_a_stalled_publish_is_bounded)
{
	weft_pubsub *ps = new_broker(sizeof(int));
	weft_sub *s = subscribe(ps, "t", 1, WEFT_PUBSUB_BLOCK);
	int v = 1;
	ASSERT_EQ(weft_pubsub_publish(ps, "t", &v), 0); /* full now */
	struct stalled_publish p = {.ps = ps, .wg = WEFT_WG_INIT};
	weft_wg_add(&p.wg, 1);
	ASSERT_EQ(weft_go(stalled_publish_run, &p), 0);
	weft_sleep(20 * TEST_MS); /* it holds the turn, waiting for room */
	int64_t t0 = weft_now();
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, t0 + 50 * TEST_MS), ETIMEDOUT);
	int64_t took = weft_now() - t0;
	ASSERT_GE(took, 50 * TEST_MS);
	ASSERT_LT(took, 50 * TEST_MS + 500 * TEST_MS * test_slowdown());
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, 0), ETIMEDOUT);
	weft_ctx *done = new_cancel();
	weft_ctx_cancel(done);
	ASSERT_EQ(weft_pubsub_publish_ctx(done, ps, "t", &v), ECANCELED);
	ASSERT_EQ(weft_sub_recv(s, &v), 0);
	ASSERT_EQ(v, 1);
	wg_wait_bounded(&p.wg, "the stalled publish");
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(weft_sub_recv(s, &v), 0);
	ASSERT_EQ(v, 2);
	v = 3;
	ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &v, 0), 0); /* room: the try goes */
	expect_sub_stats(s, 3, 2, 0, 1);
	weft_ctx_release(done);
	weft_sub_free(s);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

struct publisher {
	weft_pubsub *ps;
	const char *topic;
	uint64_t first, n;
	int result;    /* the first non-zero publish result, else 0 */
	_Atomic uint64_t done; /* publishes that returned 0 */
	atomic_int started;
	weft_wg *wg;
};

static void publish_run(void *arg)
{
	struct publisher *p = arg;
	atomic_store(&p->started, 1);
	for (uint64_t i = 0; i < p->n; i++) {
		uint64_t v = p->first + i;
		int r = weft_pubsub_publish(p->ps, p->topic, &v);
		if (r) {
			p->result = r;
			break;
		}
		atomic_fetch_add(&p->done, 1);
	}
	weft_wg_done(p->wg);
}

/* Wait until the publisher has started and then a while, so it is parked
 * waiting for room; its publish must not have returned meanwhile. */
static void let_it_block(struct publisher *p, long done_before)
{
	while (!atomic_load(&p->started))
		weft_sleep(TEST_MS);
	weft_sleep(20 * TEST_MS);
	ASSERT_EQ(atomic_load(&p->done), done_before);
}

/* Unsubscribing a full blocking subscription releases the publisher waiting
 * for it; the other subscription gets the message; what the unsubscribed one
 * held stays receivable, then EPIPE. */
TEST(pubsub_unsubscribe_wakes_blocked_publisher)
{
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *stuck = subscribe(ps, "t", 1, WEFT_PUBSUB_BLOCK);
	weft_sub *other = subscribe(ps, "t", 4, WEFT_PUBSUB_BLOCK);
	weft_wg wg = WEFT_WG_INIT;
	struct publisher p = {.ps = ps, .topic = "t", .first = 0, .n = 2, .wg = &wg};
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_go(publish_run, &p), 0);
	let_it_block(&p, 1);
	weft_pubsub_unsubscribe(stuck);
	wg_wait_bounded(&wg, "publisher");
	ASSERT_EQ(p.result, 0);
	expect_sub_stats(stuck, 1, 0, 0, 1);
	expect_sub_stats(other, 2, 0, 0, 2);
	uint64_t v;
	ASSERT_EQ(weft_sub_recv(stuck, &v), 0);
	ASSERT_EQ(v, 0);
	ASSERT_EQ(weft_sub_recv(stuck, &v), EPIPE);
	ASSERT_EQ(v, 0); /* zeroed */
	weft_sub_free(stuck);
	weft_sub_free(other);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

/* A receiver parked on a subscription that is then freed by another
 * goroutine gets EPIPE (and the freed subscription stays valid for it). */
struct parked_recv {
	weft_sub *sub;
	atomic_int started;
	int result;
	weft_wg *wg;
};

static void recv_parked(void *arg)
{
	struct parked_recv *p = arg;
	atomic_store(&p->started, 1);
	p->result = weft_sub_recv(p->sub, NULL);
	weft_wg_done(p->wg);
}

/*
 * Closing the broker: a publisher waiting for room returns EPIPE having
 * given the message to nobody; every subscription keeps what it accepted,
 * its receivers get that, then EPIPE; a receiver parked on an empty one
 * wakes with EPIPE; later publishes and subscribes get EPIPE.
 */
TEST(pubsub_close_delivers_accepted_then_epipe)
{
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *full = subscribe(ps, "t", 2, WEFT_PUBSUB_BLOCK);
	weft_sub *lossy = subscribe(ps, "t", 8, WEFT_PUBSUB_DROP_NEWEST);
	weft_sub *empty = subscribe(ps, "u", 8, WEFT_PUBSUB_BLOCK);
	weft_wg wg = WEFT_WG_INIT;
	struct publisher p = {.ps = ps, .topic = "t", .first = 0, .n = 10, .wg = &wg};
	struct parked_recv pr = {.sub = empty, .wg = &wg};
	weft_wg_add(&wg, 2);
	ASSERT_EQ(weft_go(publish_run, &p), 0);
	ASSERT_EQ(weft_go(recv_parked, &pr), 0);
	let_it_block(&p, 2);
	weft_pubsub_close(ps);
	weft_pubsub_close(ps); /* idempotent */
	wg_wait_bounded(&wg, "publisher and receiver");
	ASSERT_EQ(p.result, EPIPE);
	ASSERT_EQ(atomic_load(&p.done), 2);
	ASSERT_EQ(pr.result, EPIPE);
	expect_sub_stats(full, 2, 0, 0, 2);
	expect_sub_stats(lossy, 2, 0, 0, 2);
	uint64_t v;
	for (uint64_t i = 0; i < 2; i++) {
		ASSERT_EQ(weft_sub_recv(full, &v), 0);
		ASSERT_EQ(v, i);
		ASSERT_EQ(weft_sub_recv_until(lossy, &v, weft_now() + SEC), 0);
		ASSERT_EQ(v, i);
	}
	ASSERT_EQ(weft_sub_recv(full, &v), EPIPE);
	ASSERT_EQ(weft_sub_tryrecv(lossy, &v), EPIPE);
	ASSERT_EQ(weft_pubsub_publish(ps, "t", &v), EPIPE);
	ASSERT_EQ(weft_pubsub_publish(ps, "nobody", &v), EPIPE);
	weft_sub *late = NULL;
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", 1, WEFT_PUBSUB_BLOCK, &late), EPIPE);
	ASSERT(late == NULL);
	ASSERT(weft_sub_ready(full) != NULL);
	ASSERT_EQ(weft_chan_recv(weft_sub_ready(full), NULL), EPIPE); /* closed */
	weft_pubsub_stats st;
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.published, 2);
	ASSERT_EQ(st.topics, 0);
	/* The broker may go before its subscriptions. */
	weft_pubsub_free(ps);
	weft_sub_free(full);
	weft_sub_free(lossy);
	weft_sub_free(empty);
	EXPECT_ALL_FREED();
}

/* Freeing a subscription under a parked receiver wakes it with EPIPE. */
TEST(pubsub_free_wakes_receiver)
{
	weft_pubsub *ps = new_broker(0); /* messages of size 0: arrivals only */
	weft_sub *s = subscribe(ps, "t", 1, WEFT_PUBSUB_DROP_OLDEST);
	weft_wg wg = WEFT_WG_INIT;
	struct parked_recv pr = {.sub = s, .wg = &wg};
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_go(recv_parked, &pr), 0);
	while (!atomic_load(&pr.started))
		weft_sleep(TEST_MS);
	weft_sleep(5 * TEST_MS);
	weft_sub_free(s);
	wg_wait_bounded(&wg, "receiver");
	ASSERT_EQ(pr.result, EPIPE);
	ASSERT_EQ(weft_pubsub_publish(ps, "t", NULL), 0);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

/* Receivers sharing one subscription: each message goes to exactly one. */
struct sharer {
	weft_sub *sub;
	atomic_int parked;
	uint64_t *seen; /* seen[v]: how many receivers got v; each writes its own */
	uint64_t quota; /* stop after this many (0: until EPIPE) */
	uint64_t got;
	int end;
	weft_wg *wg;
};

static void share_run(void *arg)
{
	struct sharer *s = arg;
	uint64_t v;
	atomic_fetch_add(&s->parked, 1);
	/* With a quota, a plain receive: one that times out would still take a
	 * message that arrived without waking it, and hide the lost wake-up. */
	while ((s->quota == 0 || s->got < s->quota) &&
	       (s->end = s->quota ? weft_sub_recv(s->sub, &v)
	                          : weft_sub_recv_until(s->sub, &v, weft_now() + PROMPT_NS)) == 0)
		s->seen[s->got++] = v;
	weft_wg_done(s->wg);
}

/*
 * Several receivers on one subscription. First, on one P, three parked
 * receivers and three messages published back to back: each message must
 * wake a receiver (a wake-up only when the buffer turns non-empty would
 * leave two asleep with messages waiting). Then four receivers and a
 * stream: every message is received exactly once.
 */
TEST(pubsub_shared_subscription)
{
	enum { R = 3, R2 = 4 };
	uint64_t n = (uint64_t)TEST_SIZE(20000, 3000);
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *sub = subscribe(ps, "t", 4, WEFT_PUBSUB_BLOCK);
	weft_wg wg = WEFT_WG_INIT;
	struct sharer sh[R2];
	int old_procs = 0;
	ASSERT_EQ(weft_set_procs(1, &old_procs), 0);
	for (int i = 0; i < R; i++) {
		sh[i] = (struct sharer){.sub = sub, .quota = 1, .wg = &wg};
		sh[i].seen = calloc(n, sizeof *sh[i].seen);
		ASSERT(sh[i].seen != NULL);
		weft_wg_add(&wg, 1);
		ASSERT_EQ(weft_go(share_run, &sh[i]), 0);
	}
	for (int i = 0; i < R; i++)
		while (!atomic_load(&sh[i].parked))
			weft_sleep(TEST_MS);
	weft_sleep(5 * TEST_MS); /* into their waits */
	for (uint64_t v = 0; v < R; v++)
		ASSERT_EQ(weft_pubsub_publish(ps, "t", &v), 0);
	if (weft_wg_wait_until(&wg, weft_now() + PROMPT_NS) != 0)
		FAIL("a receiver was not woken for a message waiting for it");
	ASSERT_EQ(weft_set_procs(old_procs, NULL), 0);
	uint64_t mask = 0;
	for (int i = 0; i < R; i++) {
		ASSERT_EQ(sh[i].end, 0); /* not timed out */
		ASSERT_EQ(sh[i].got, 1);
		mask |= 1u << sh[i].seen[0];
	}
	ASSERT_EQ(mask, 7);

	for (int i = 0; i < R2; i++) {
		if (i >= R) {
			sh[i] = (struct sharer){.sub = sub, .wg = &wg};
			sh[i].seen = calloc(n, sizeof *sh[i].seen);
			ASSERT(sh[i].seen != NULL);
		}
		sh[i].quota = 0;
		sh[i].got = 0;
		weft_wg_add(&wg, 1);
		ASSERT_EQ(weft_go(share_run, &sh[i]), 0);
	}
	for (uint64_t v = 0; v < n; v++)
		ASSERT_EQ(weft_pubsub_publish(ps, "t", &v), 0);
	weft_pubsub_close(ps);
	wg_wait_bounded(&wg, "receivers");
	uint8_t *count = calloc(n, 1);
	ASSERT(count != NULL);
	uint64_t total = 0;
	for (int i = 0; i < R2; i++) {
		ASSERT_EQ(sh[i].end, EPIPE);
		for (uint64_t k = 0; k < sh[i].got; k++) {
			ASSERT_LT(sh[i].seen[k], n);
			count[sh[i].seen[k]]++;
			if (k > 0)
				ASSERT_LT(sh[i].seen[k - 1], sh[i].seen[k]); /* each in order */
		}
		total += sh[i].got;
		free(sh[i].seen);
	}
	ASSERT_EQ(total, n);
	for (uint64_t v = 0; v < n; v++)
		ASSERT_EQ(count[v], 1);
	free(count);
	expect_sub_stats(sub, n + R, n + R, 0, 0);
	weft_sub_free(sub);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

/* A subscriber in a select loop over the ready channel and a quit channel,
 * with a blocking subscription: every message arrives (no lost wake-up:
 * the publisher would wait forever for room otherwise), then quit. */
struct select_sub {
	weft_sub *sub;
	weft_chan *quit;
	uint64_t got, bad;
	weft_wg *wg;
};

static void select_loop(void *arg)
{
	struct select_sub *s = arg;
	weft_case cs[] = {WEFT_RECV_CASE(weft_sub_ready(s->sub), NULL),
	                  WEFT_RECV_CASE(s->quit, NULL)};
	for (;;) {
		int i = -1;
		int r = weft_select(cs, 2, &i);
		if (i == 1)
			break;
		uint64_t v;
		while ((r = weft_sub_tryrecv(s->sub, &v)) == 0) {
			s->bad += v != s->got;
			s->got++;
		}
		if (r == EPIPE)
			break;
	}
	weft_wg_done(s->wg);
}

TEST(pubsub_ready_channel_in_select)
{
	uint64_t n = (uint64_t)TEST_SIZE(20000, 3000);
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	weft_sub *sub = subscribe(ps, "t", 2, WEFT_PUBSUB_BLOCK);
	weft_chan *quit = make_chan(0, 0);
	weft_wg wg = WEFT_WG_INIT;
	struct select_sub s = {.sub = sub, .quit = quit, .wg = &wg};
	ASSERT(weft_sub_ready(sub) != NULL);
	ASSERT_PTR_EQ(weft_sub_ready(sub), weft_sub_ready(sub));
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_go(select_loop, &s), 0);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(weft_pubsub_publish_until(ps, "t", &i, weft_now() + PROMPT_NS), 0);
	int64_t deadline = test_now_ns() + PROMPT_NS;
	weft_sub_stats st;
	do {
		weft_sleep(TEST_MS);
		weft_sub_stats_get(sub, &st);
	} while (st.delivered < n && test_now_ns() < deadline);
	weft_chan_close(quit);
	wg_wait_bounded(&wg, "select loop");
	ASSERT_EQ(s.got, n);
	ASSERT_EQ(s.bad, 0);
	expect_sub_stats(sub, n, n, 0, 0);
	weft_chan_release(quit);
	weft_sub_free(sub);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- stress */

enum { ST_TOPICS = 3, ST_MAX_PUBS = 8 };
static const char *const st_topics[ST_TOPICS] = {"alpha", "beta", "gamma"};

struct st_sub {
	weft_pubsub *ps;
	int topic, policy;
	size_t cap;
	bool churn;    /* unsubscribes part-way and subscribes again */
	bool thread;   /* runs on a pthread */
	uint64_t *log; /* every message received, for the same-order check */
	size_t nlog, cap_log;
	uint64_t recvd; /* messages received over every subscription */
	uint64_t stats_offered, stats_delivered, stats_dropped;
	int bad; /* a message out of its publisher's order */
	uint32_t seed;
	weft_wg *wg;
	weft_sub *sub; /* the first subscription (made before publishing) */
};

struct st_pub {
	weft_pubsub *ps;
	uint32_t id;
	uint64_t per_topic;
	int result;
	weft_wg *wg;
};

static void st_publish(void *arg)
{
	struct st_pub *p = arg;
	for (uint64_t i = 0; i < p->per_topic && !p->result; i++)
		for (int t = 0; t < ST_TOPICS && !p->result; t++) {
			uint64_t v = (uint64_t)p->id << 32 | i;
			p->result = weft_pubsub_publish(p->ps, st_topics[t], &v);
		}
	weft_wg_done(p->wg);
}

/* Receive from sub until EPIPE or until quota messages (0: no quota),
 * checking each publisher's order; then fold sub's counters in. */
static void st_consume(struct st_sub *s, weft_sub *sub, uint64_t quota)
{
	uint64_t next[ST_MAX_PUBS] = {0};
	uint64_t got = 0, v;
	int64_t deadline = weft_now() + 60 * SEC * test_slowdown();
	while ((quota == 0 || got < quota) && weft_sub_recv_until(sub, &v, deadline) == 0) {
		uint32_t id = (uint32_t)(v >> 32);
		uint64_t seq = (uint32_t)v;
		if (id >= ST_MAX_PUBS || seq < next[id])
			s->bad = 1;
		else
			next[id] = seq + 1;
		if (s->nlog < s->cap_log)
			s->log[s->nlog++] = v;
		got++;
		if (test_rand32(&s->seed) % 64 == 0)
			weft_yield();
	}
	weft_pubsub_unsubscribe(sub);
	while (weft_sub_tryrecv(sub, &v) == 0)
		got++; /* what it held when detached: received, but not checked */
	s->recvd += got;
	weft_sub_stats st;
	weft_sub_stats_get(sub, &st);
	s->stats_offered += st.offered;
	s->stats_delivered += st.delivered;
	s->stats_dropped += st.dropped;
	if (st.buffered != 0 || st.offered != st.delivered + st.dropped)
		s->bad = 2;
}

static void st_subscribe_run(void *arg)
{
	struct st_sub *s = arg;
	if (!s->churn) {
		st_consume(s, s->sub, 0);
	} else {
		/* A few rounds: take some messages, unsubscribe (mid-publish),
		 * subscribe again. */
		weft_sub *sub = s->sub;
		for (int round = 0; round < 4 && sub; round++) {
			st_consume(s, sub, 50 + test_rand32(&s->seed) % 200);
			if (sub != s->sub)
				weft_sub_free(sub);
			sub = NULL;
			if (weft_pubsub_subscribe(s->ps, st_topics[s->topic], s->cap, s->policy,
			                          &sub) != 0)
				sub = NULL; /* the broker closed: done */
		}
		if (sub) {
			st_consume(s, sub, 0);
			if (sub != s->sub)
				weft_sub_free(sub);
		}
	}
	weft_wg_done(s->wg);
}

/*
 * Publishers (goroutines and one pthread) publish to three topics;
 * subscribers of every policy (goroutines and pthreads) read at uneven
 * speeds; some unsubscribe and subscribe again while publishing goes on.
 * Then the broker closes. Every subscription keeps offered == delivered +
 * dropped and what it received equals what it delivered; each publisher's
 * messages arrive in its order; the blocking subscriptions that stayed get
 * every message of their topic, all in the same order; the broker counts
 * every publish.
 */
TEST(pubsub_stress)
{
	int npub = TEST_SIZE(6, 3);
	uint64_t per = (uint64_t)TEST_SIZE(3000, 400);
	uint64_t total = per * (uint64_t)npub; /* per topic */
	enum { NSUB = 18 };
	weft_pubsub *ps = new_broker(sizeof(uint64_t));
	struct st_sub subs[NSUB];
	struct st_pub pubs[ST_MAX_PUBS];
	weft_wg sub_wg = WEFT_WG_INIT, pub_wg = WEFT_WG_INIT;
	pthread_t th[NSUB + 1];
	int nth = 0;
	static const int policies[] = {WEFT_PUBSUB_BLOCK, WEFT_PUBSUB_DROP_OLDEST,
	                               WEFT_PUBSUB_DROP_NEWEST};

	for (int i = 0; i < NSUB; i++) {
		struct st_sub *s = &subs[i];
		*s = (struct st_sub){
			.ps = ps,
			.topic = i % ST_TOPICS,
			/* churners: one per policy; threads block */
			.policy = i >= 15 ? WEFT_PUBSUB_BLOCK
		                          : policies[i >= 12 ? i % 3 : (i / ST_TOPICS) % 3],
			.cap = 1 + (size_t)(i % 5) * 3,
			.churn = i >= 12 && i < 15,
			.thread = i >= 15,
			.cap_log = total,
			.seed = 0x9e3779b9u + (uint32_t)i,
			.wg = &sub_wg};
		s->log = calloc(total, sizeof *s->log);
		ASSERT(s->log != NULL);
		s->sub = subscribe(ps, st_topics[s->topic], s->cap, s->policy);
		weft_wg_add(&sub_wg, 1);
		if (s->thread)
			test_start_thread(&th[nth++], st_subscribe_run, s);
		else
			ASSERT_EQ(weft_go(st_subscribe_run, s), 0);
	}
	for (int i = 0; i < npub; i++) {
		pubs[i] = (struct st_pub){
			.ps = ps, .id = (uint32_t)i, .per_topic = per, .wg = &pub_wg};
		weft_wg_add(&pub_wg, 1);
		if (i == 0)
			test_start_thread(&th[nth++], st_publish, &pubs[i]);
		else
			ASSERT_EQ(weft_go(st_publish, &pubs[i]), 0);
	}
	wg_wait_bounded(&pub_wg, "publishers");
	for (int i = 0; i < npub; i++)
		ASSERT_EQ(pubs[i].result, 0);
	weft_pubsub_stats pst;
	weft_pubsub_stats_get(ps, &pst);
	ASSERT_EQ(pst.published, total * ST_TOPICS);
	weft_pubsub_close(ps);
	wg_wait_bounded(&sub_wg, "subscribers");
	for (int i = 0; i < nth; i++)
		test_join_thread(th[i]);

	const struct st_sub *first_block[ST_TOPICS] = {NULL, NULL, NULL};
	for (int i = 0; i < NSUB; i++) {
		struct st_sub *s = &subs[i];
		if (s->bad)
			FAIL("subscriber %d: %s", i,
			     s->bad == 1 ? "a publisher's messages out of order"
			                 : "counters do not add up");
		ASSERT_EQ(s->recvd, s->stats_delivered);
		ASSERT_EQ(s->stats_offered, s->stats_delivered + s->stats_dropped);
		if (s->policy == WEFT_PUBSUB_BLOCK)
			ASSERT_EQ(s->stats_dropped, 0);
		if (s->churn || s->policy != WEFT_PUBSUB_BLOCK)
			continue;
		/* Stayed all along, blocking: every message of its topic, in the
		 * same order as the other such subscriptions of the topic. */
		ASSERT_EQ(s->stats_offered, total);
		ASSERT_EQ(s->nlog, total);
		const struct st_sub *f = first_block[s->topic];
		if (!f)
			first_block[s->topic] = s;
		else if (memcmp(f->log, s->log, total * sizeof *s->log) != 0)
			FAIL("subscriber %d saw topic %s in another order", i, st_topics[s->topic]);
	}
	for (int i = 0; i < NSUB; i++) {
		weft_sub_free(subs[i].sub);
		free(subs[i].log);
	}
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

/* ---------------------------------------------------------------- arguments and misuse */

TEST(pubsub_einval)
{
	weft_pubsub *ps = NULL;
	ASSERT_EQ(weft_pubsub_new(NULL, 8), EINVAL);
	ASSERT_EQ(weft_pubsub_new(&ps, WEFT_CHAN_MAX_ELEM + 1), EINVAL);
	ASSERT(ps == NULL);
	ps = new_broker(sizeof(int));
	weft_sub *s = NULL;
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", 0, WEFT_PUBSUB_BLOCK, &s), EINVAL);
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", 1, 0, &s), EINVAL);
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", 1, 42, &s), EINVAL);
	ASSERT_EQ(weft_pubsub_subscribe(ps, NULL, 1, WEFT_PUBSUB_BLOCK, &s), EINVAL);
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", 1, WEFT_PUBSUB_BLOCK, NULL), EINVAL);
	ASSERT_EQ(weft_pubsub_subscribe(ps, "t", SIZE_MAX / 2, WEFT_PUBSUB_BLOCK, &s), ENOMEM);
	ASSERT(s == NULL);
	int v = 1;
	ASSERT_EQ(weft_pubsub_publish(ps, NULL, &v), EINVAL);
	ASSERT_EQ(weft_pubsub_publish(ps, "t", NULL), EINVAL);
	weft_pubsub_stats st;
	weft_pubsub_stats_get(ps, &st);
	ASSERT_EQ(st.published, 0);
	ASSERT_EQ(st.topics, 0);
	weft_sub_free(NULL);
	weft_pubsub_free(NULL);
	weft_pubsub_free(ps);
	EXPECT_ALL_FREED();
}

CHILD(publish_nil_broker)
{
	int v = 0;
	weft_pubsub_publish(NULL, "t", &v);
	printf("survived\n");
	return 0;
}

CHILD(recv_nil_subscription)
{
	weft_sub_recv(NULL, NULL);
	printf("survived\n");
	return 0;
}

CHILD(wait_nil_merge)
{
	weft_merge_wait(NULL);
	printf("survived\n");
	return 0;
}

/* A NULL handle is a bug, named, not a crash somewhere inside. */
TEST_THREAD(pubsub_misuse_is_fatal)
{
	expect_fatal("publish_nil_broker", "fatal error: pubsub: publish to nil broker");
	expect_fatal("recv_nil_subscription", "fatal error: pubsub: receive from nil subscription");
	expect_fatal("wait_nil_merge", "fatal error: pubsub: wait on nil merge");
}
