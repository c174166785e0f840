/* SPDX-License-Identifier: MIT */
/*
 * chan_test.c - channels against the Go spec: unbuffered rendezvous, buffered
 * FIFO order, len and cap, zero-size, odd-size and large elements, close
 * (buffered values drain first, then EPIPE with a zeroed element; every
 * blocked receiver and sender is woken), the nil channel (try forms EAGAIN,
 * _until forms time out, the blocking forms block forever), try and _until
 * forms, the batch forms (weft_chan_trysend_n, weft_chan_tryrecv_n: order,
 * partial counts, parked partners and selects, a stress of exactly-once
 * delivery), the hand-off to a parked partner, reference counting, the errors of
 * weft_chan_make, close misuse as a fatal error, deadlock detection of
 * channel waits, and the WEFT_CHAN_DEFINE wrapper. Goroutines and foreign
 * pthreads on both ends.
 *
 * Lateness tolerance for the _until forms: 10 ms (x test_slowdown()), best
 * of 3 (TEST_BEST_OF), as in time_test.c; being early is never forgiven.
 */
#include "test.h"

#define expect_fatal(child, msg) EXPECT_FATAL((child), NULL, CHILD_TIMEOUT_MS, (msg))

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LATE_MS 10
#define LATE_BOUND (LATE_MS * TEST_MS * test_slowdown())
#define DEADLOCK_MSG "fatal error: all goroutines are asleep - deadlock!"
/* Deadlock detection takes ~20 ms; a child that has not finished in 2 s
 * (times test_slowdown()) will not. */
#define CHILD_TIMEOUT_MS 2000

static weft_chan *make_chan(size_t elem_size, size_t cap)
{
	weft_chan *c = NULL;
	ASSERT_EQ(weft_chan_make(&c, elem_size, cap), 0);
	ASSERT(c != NULL);
	return c;
}

/*
 * Wait until *flag >= want (set by a goroutine or thread just before it
 * blocks), then 20 ms more so that it has parked. A partner that is slower
 * than that only makes the test weaker, never wrong.
 */
static void wait_parked(atomic_int *flag, int want)
{
	int64_t deadline = test_now_ns() + 5000 * TEST_MS * test_slowdown();
	while (atomic_load(flag) < want) {
		if (test_now_ns() > deadline)
			FAIL("only %d of %d waiters started", atomic_load(flag), want);
		weft_sleep(TEST_MS);
	}
	weft_sleep(20 * TEST_MS);
}

/* ---------------------------------------------------------------- make */

/*
 * weft_chan_make gives a channel with the element size and capacity asked
 * for, empty and open; the accessors answer 0/false for NULL; retain returns
 * its argument (NULL passes through) and release ignores NULL. Guards:
 * swapped elem_size and cap, a channel born closed or non-empty.
 */
TEST(make_and_accessors)
{
	weft_chan *u = make_chan(sizeof(int64_t), 0);
	weft_chan *b = make_chan(3, 5);
	ASSERT_EQ(weft_chan_elem_size(u), sizeof(int64_t));
	ASSERT_EQ(weft_chan_cap(u), 0);
	ASSERT_EQ(weft_chan_len(u), 0);
	ASSERT(!weft_chan_closed(u));
	ASSERT_EQ(weft_chan_elem_size(b), 3);
	ASSERT_EQ(weft_chan_cap(b), 5);
	ASSERT_EQ(weft_chan_len(b), 0);
	ASSERT(!weft_chan_closed(b));

	ASSERT_EQ(weft_chan_len(NULL), 0);
	ASSERT_EQ(weft_chan_cap(NULL), 0);
	ASSERT_EQ(weft_chan_elem_size(NULL), 0);
	ASSERT(!weft_chan_closed(NULL));
	ASSERT_PTR_EQ(weft_chan_retain(NULL), NULL);
	weft_chan_release(NULL);

	ASSERT_PTR_EQ(weft_chan_retain(u), u);
	weft_chan_release(u);
	weft_chan_close(b);
	ASSERT(weft_chan_closed(b));
	ASSERT(!weft_chan_closed(u));
	weft_chan_release(u);
	weft_chan_release(b);
}

/*
 * EINVAL for a NULL out and for element sizes above WEFT_CHAN_MAX_ELEM (the
 * limit itself is accepted); ENOMEM when cap * elem_size overflows (also to
 * exactly 0); *out is untouched on every error. A zero-size element needs no buffer, so a huge
 * capacity is fine (Go's make(chan struct{}, 1<<40)). Guards: a missing or
 * off-by-one size check, an overflowing size computation that allocates a
 * small block and then writes past it.
 */
TEST(make_errors)
{
	weft_chan *const sentinel = (weft_chan *)(uintptr_t)0x5eed;
	weft_chan *c = sentinel;
	ASSERT_EQ(weft_chan_make(NULL, 8, 1), EINVAL);
	ASSERT_EQ(weft_chan_make(&c, WEFT_CHAN_MAX_ELEM + 1, 0), EINVAL);
	ASSERT_EQ(weft_chan_make(&c, WEFT_CHAN_MAX_ELEM + 1, 1), EINVAL);
	ASSERT_EQ(weft_chan_make(&c, SIZE_MAX, 1), EINVAL);
	ASSERT_PTR_EQ(c, sentinel);
	ASSERT_EQ(weft_chan_make(&c, 16, SIZE_MAX / 8 + 1), ENOMEM);
	ASSERT_EQ(weft_chan_make(&c, WEFT_CHAN_MAX_ELEM, SIZE_MAX), ENOMEM);
	ASSERT_EQ(weft_chan_make(&c, 2, SIZE_MAX / 2 + 1), ENOMEM); /* wraps to 0 */
	ASSERT_PTR_EQ(c, sentinel);

	ASSERT_EQ(weft_chan_make(&c, WEFT_CHAN_MAX_ELEM, 1), 0);
	ASSERT_EQ(weft_chan_elem_size(c), WEFT_CHAN_MAX_ELEM);
	weft_chan_release(c);

	c = make_chan(0, (size_t)1 << 40);
	ASSERT_EQ(weft_chan_cap(c), (size_t)1 << 40);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(weft_chan_trysend(c, NULL), 0);
	ASSERT_EQ(weft_chan_len(c), 3);
	weft_chan_release(c);
}

struct parked_recv {
	weft_chan *c;
	int64_t got;
	int r;
	weft_wg wg;
};

static void recv_one(void *arg)
{
	struct parked_recv *p = arg;
	p->r = weft_chan_recv(p->c, &p->got);
	weft_wg_done(&p->wg);
}

/*
 * A send of a NULL element on a channel whose elements are not empty is
 * EINVAL with nothing sent, in every send form, checked before anything
 * else (a full channel's try says EINVAL, not EAGAIN); a parked receiver is
 * left waiting and gets the next real value. Guards: the NULL copied from
 * (a crash in the sender, or in the receiver that copies from a parked
 * sender), a receiver woken with garbage.
 */
TEST(send_null_element_is_einval)
{
	weft_ctx *ctx;
	ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &ctx), 0);
	weft_chan *b = make_chan(sizeof(int64_t), 1);
	ASSERT_EQ(weft_chan_send(b, NULL), EINVAL);
	ASSERT_EQ(weft_chan_trysend(b, NULL), EINVAL);
	ASSERT_EQ(weft_chan_send_until(b, NULL, weft_now() + 1000000000), EINVAL);
	ASSERT_EQ(weft_chan_send_ctx(ctx, b, NULL), EINVAL);
	ASSERT_EQ(weft_chan_len(b), 0);
	int64_t v = 7;
	ASSERT_EQ(weft_chan_trysend(b, &v), 0);
	ASSERT_EQ(weft_chan_trysend(b, NULL), EINVAL);
	ASSERT_EQ(weft_chan_send_until(b, NULL, weft_now() + 1000000000), EINVAL);
	weft_chan_release(b);

	struct parked_recv p = { make_chan(sizeof(int64_t), 0), -1, -1, WEFT_WG_INIT };
	weft_wg_add(&p.wg, 1);
	GO(recv_one, &p);
	weft_sleep(2000000); /* the receiver parks */
	ASSERT_EQ(weft_chan_send(p.c, NULL), EINVAL);
	ASSERT_EQ(weft_chan_trysend(p.c, NULL), EINVAL);
	ASSERT_EQ(weft_chan_send_ctx(ctx, p.c, NULL), EINVAL);
	v = 42;
	ASSERT_EQ(weft_chan_send(p.c, &v), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.r, 0);
	ASSERT_EQ(p.got, 42);
	weft_chan_release(p.c);
	weft_ctx_cancel(ctx);
	weft_ctx_release(ctx);
}

CHILD(make_enomem)
{
	weft_chan *const sentinel = (weft_chan *)(uintptr_t)0x5eed;
	weft_chan *c = sentinel;
	/* 2^63 bytes: no overflow, but no machine has them. */
	int r = weft_chan_make(&c, 1, SIZE_MAX / 2);
	printf("huge: result=%d untouched=%d\n", r, c == sentinel);
	/* The product fits in a size_t; adding the channel's header does not. */
	r = weft_chan_make(&c, 16, SIZE_MAX / 16);
	printf("header: result=%d untouched=%d\n", r, c == sentinel);
	return 0;
}

/* Append an option to a sanitizer's options variable for a child. */
static char *with_option(const char *var, const char *opt)
{
	const char *old = getenv(var);
	char *s = NULL;
	ASSERT(asprintf(&s, "%s=%s%s%s", var, old ? old : "", old ? ":" : "", opt) > 0);
	return s;
}

/*
 * A buffer that malloc cannot provide (2^63 bytes, no overflow involved), and
 * a buffer whose size fits but overflows once the channel's header is added:
 * ENOMEM, *out untouched. In a child so that the sanitizers can be told to let
 * malloc return NULL instead of reporting the size. Guards: a failed
 * allocation not checked (crash), or reported as another error; a size sum
 * that wraps to a small block the channel then overruns.
 */
TEST_THREAD(make_enomem_when_malloc_fails)
{
	char *asan = with_option("ASAN_OPTIONS", "allocator_may_return_null=1");
	char *tsan = with_option("TSAN_OPTIONS", "allocator_may_return_null=1");
	const char *const env[] = { asan, tsan, NULL };
	test_child c;
	char want[64];
	test_child_run("make_enomem", env, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	snprintf(want, sizeof want, "huge: result=%d untouched=1", ENOMEM);
	ASSERT_CONTAINS(c.out, want);
	snprintf(want, sizeof want, "header: result=%d untouched=1", ENOMEM);
	ASSERT_CONTAINS(c.out, want);
	test_child_free(&c);
	free(asan);
	free(tsan);
}

/* ---------------------------------------------------------------- unbuffered */

/* A goroutine or a thread at the other end of one channel operation. */
struct partner {
	weft_chan *c;
	int64_t value;      /* what it sends, or what it received */
	int result;
	atomic_int started; /* set just before the operation */
	atomic_int done;    /* set once it returned */
	weft_wg wg;
};

static void partner_run(struct partner *p, bool sends)
{
	atomic_store(&p->started, 1);
	p->result = sends ? weft_chan_send(p->c, &p->value) : weft_chan_recv(p->c, &p->value);
	atomic_store(&p->done, 1);
	weft_wg_done(&p->wg);
}

static void partner_send(void *arg)
{
	partner_run(arg, true);
}

static void partner_recv(void *arg)
{
	partner_run(arg, false);
}

/* One rendezvous: the partner (a goroutine, or a pthread when thread is set)
 * blocks in send or recv; it must not complete until we do the other half. */
static void rendezvous_once(bool partner_sends, bool thread)
{
	struct partner r = { .c = make_chan(sizeof(int64_t), 0), .value = partner_sends ? 42 : -1 };
	pthread_t th;
	weft_wg_add(&r.wg, 1);
	if (thread)
		test_start_thread(&th, partner_sends ? partner_send : partner_recv, &r);
	else
		GO(partner_sends ? partner_send : partner_recv, &r);
	wait_parked(&r.started, 1);
	ASSERT_EQ(atomic_load(&r.done), 0);
	ASSERT_EQ(weft_chan_len(r.c), 0);
	if (partner_sends) {
		int64_t v = 0;
		ASSERT_EQ(weft_chan_recv(r.c, &v), 0);
		ASSERT_EQ(v, 42);
	} else {
		int64_t v = 7;
		ASSERT_EQ(weft_chan_send(r.c, &v), 0);
	}
	weft_wg_wait(&r.wg);
	if (thread)
		test_join_thread(th);
	ASSERT_EQ(r.result, 0);
	if (!partner_sends)
		ASSERT_EQ(r.value, 7);
	weft_chan_release(r.c);
}

/*
 * Unbuffered send and receive are a rendezvous: a sender (goroutine or
 * pthread) is still inside weft_chan_send 20 ms after it started, len stays
 * 0, and it returns once we receive; the same for a receiver waiting for our
 * send. Guards: an unbuffered channel with a hidden one-slot buffer (the send
 * returns at once), a receive that returns without a value.
 */
TEST(unbuffered_is_rendezvous)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	rendezvous_once(true, false);
	rendezvous_once(false, false);
	rendezvous_once(true, true);
	rendezvous_once(false, true);
}

struct pingpong {
	weft_chan *ping, *pong;
	weft_wg wg;
};

static void echo_plus_one(void *arg)
{
	struct pingpong *p = arg;
	int64_t v;
	while (weft_chan_recv(p->ping, &v) == 0) {
		v++;
		ASSERT_EQ(weft_chan_send(p->pong, &v), 0);
	}
	weft_wg_done(&p->wg);
}

static void pingpong_run(int procs, bool thread)
{
	ASSERT_EQ(weft_set_procs(procs, NULL), 0);
	struct pingpong p = { make_chan(sizeof(int64_t), 0), make_chan(sizeof(int64_t), 0),
			      WEFT_WG_INIT };
	int n = TEST_SIZE(20000, 2000);
	pthread_t th;
	weft_wg_add(&p.wg, 1);
	if (thread)
		test_start_thread(&th, echo_plus_one, &p);
	else
		GO(echo_plus_one, &p);
	for (int64_t i = 0; i < n; i++) {
		int64_t v = i * 3, w = -1;
		ASSERT_EQ(weft_chan_send(p.ping, &v), 0);
		ASSERT_EQ(weft_chan_recv(p.pong, &w), 0);
		if (w != v + 1)
			FAIL("round %lld: sent %lld, got back %lld", (long long)i,
			     (long long)v, (long long)w);
	}
	weft_chan_close(p.ping);
	weft_wg_wait(&p.wg);
	if (thread)
		test_join_thread(th);
	weft_chan_release(p.ping);
	weft_chan_release(p.pong);
}

/*
 * A value passes from a sender to a parked receiver and back, 20,000 round
 * trips over two unbuffered channels, at 1 and 2 Ps and with a pthread at the
 * other end; each value comes back plus one. Guards: the direct hand-off
 * copying into the wrong place (a stale or another waiter's value), a lost
 * wake-up (hang), a receiver woken without its value.
 */
TEST(pingpong_through_parked_partner)
{
	pingpong_run(1, false);
	pingpong_run(2, false);
	pingpong_run(2, true);
}

/* ---------------------------------------------------------------- buffered */

/*
 * A buffered channel is a FIFO of cap elements: cap try-sends succeed, the
 * next says EAGAIN, values come out in order; then 100,000 random sends and
 * receives against a model queue exercise every wrap-around of the ring, with
 * len checked after each step. Guards: LIFO order, an off-by-one full/empty
 * test, a ring index that does not wrap (or wraps at the wrong place).
 */
TEST(buffered_fifo)
{
	enum { CAP = 16 };
	weft_chan *c = make_chan(sizeof(uint32_t), CAP);
	uint32_t v;
	for (uint32_t i = 0; i < CAP; i++) {
		ASSERT_EQ(weft_chan_trysend(c, &i), 0);
		ASSERT_EQ(weft_chan_len(c), i + 1);
	}
	v = 99;
	ASSERT_EQ(weft_chan_trysend(c, &v), EAGAIN);
	ASSERT_EQ(weft_chan_len(c), CAP);
	for (uint32_t i = 0; i < CAP; i++) {
		ASSERT_EQ(weft_chan_tryrecv(c, &v), 0);
		ASSERT_EQ(v, i);
	}
	ASSERT_EQ(weft_chan_tryrecv(c, &v), EAGAIN);

	uint32_t next_in = 1000, next_out = 1000, s = 2463534242u;
	for (int i = 0; i < 100000; i++) {
		bool send = test_rand32(&s) % 2;
		if (send && next_in - next_out < CAP) {
			ASSERT_EQ(weft_chan_trysend(c, &next_in), 0);
			next_in++;
		} else if (next_in != next_out) {
			ASSERT_EQ(weft_chan_tryrecv(c, &v), 0);
			if (v != next_out)
				FAIL("step %d: expected %u, got %u", i, next_out, v);
			next_out++;
		}
		ASSERT_EQ(weft_chan_len(c), next_in - next_out);
		if (next_in - next_out == CAP)
			ASSERT_EQ(weft_chan_trysend(c, &v), EAGAIN);
		if (next_in == next_out)
			ASSERT_EQ(weft_chan_tryrecv(c, &v), EAGAIN);
	}
	weft_chan_release(c);
}

struct seq_sender {
	weft_chan *c;
	uint32_t n;
	atomic_int sent; /* sends completed */
	weft_wg wg;
};

static void send_sequence(void *arg)
{
	struct seq_sender *s = arg;
	for (uint32_t i = 0; i < s->n; i++) {
		ASSERT_EQ(weft_chan_send(s->c, &i), 0);
		atomic_store(&s->sent, (int)i + 1);
	}
	weft_wg_done(&s->wg);
}

/*
 * With a buffered channel full, a sender parks (its send does not complete,
 * len stays cap) and its value goes behind the buffered ones: 0..4 come out
 * in order through a cap-4 channel. Then 20,000 values from one sender
 * through cap 4, with the receiver pausing now and then so the sender parks
 * on a full buffer many times: strictly in order. Guards: a parked sender's
 * value put at the head (or dropped) when a receive frees a slot, a send
 * that completes on a full buffer.
 */
TEST(buffered_parked_sender_keeps_order)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct seq_sender s = { .c = make_chan(sizeof(uint32_t), 4), .n = 5 };
	weft_wg_add(&s.wg, 1);
	GO(send_sequence, &s);
	wait_parked(&s.sent, 4);
	ASSERT_EQ(atomic_load(&s.sent), 4);
	ASSERT_EQ(weft_chan_len(s.c), 4);
	for (uint32_t i = 0; i < 5; i++) {
		uint32_t v = 99;
		ASSERT_EQ(weft_chan_recv(s.c, &v), 0);
		ASSERT_EQ(v, i);
	}
	weft_wg_wait(&s.wg);
	weft_chan_release(s.c);

	s = (struct seq_sender){ .c = make_chan(sizeof(uint32_t), 4),
				 .n = (uint32_t)TEST_SIZE(20000, 3000) };
	weft_wg_add(&s.wg, 1);
	GO(send_sequence, &s);
	for (uint32_t i = 0; i < s.n; i++) {
		uint32_t v = UINT32_MAX;
		ASSERT_EQ(weft_chan_recv(s.c, &v), 0);
		if (v != i)
			FAIL("expected %u, got %u", i, v);
		if (i % 1000 == 999)
			weft_sleep(200 * WEFT_MICROSECOND);
		else if (i % 7 == 0)
			weft_yield();
	}
	weft_wg_wait(&s.wg);
	ASSERT_EQ(weft_chan_tryrecv(s.c, NULL), EAGAIN);
	weft_chan_release(s.c);
}

/*
 * len counts buffered elements only: not a parked sender, on a full buffered
 * channel or an unbuffered one; cap never changes; close leaves len as it
 * was. Guards: len counting waiting senders, cap reported as free space.
 */
TEST(len_and_cap)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	struct seq_sender s = { .c = make_chan(sizeof(uint32_t), 2), .n = 3 };
	weft_wg_add(&s.wg, 1);
	GO(send_sequence, &s);
	wait_parked(&s.sent, 2);
	ASSERT_EQ(weft_chan_len(s.c), 2);
	ASSERT_EQ(weft_chan_cap(s.c), 2);
	ASSERT_EQ(weft_chan_recv(s.c, NULL), 0);
	weft_wg_wait(&s.wg);
	ASSERT_EQ(weft_chan_len(s.c), 2);
	weft_chan_close(s.c);
	ASSERT_EQ(weft_chan_len(s.c), 2);
	ASSERT_EQ(weft_chan_cap(s.c), 2);
	ASSERT_EQ(weft_chan_recv(s.c, NULL), 0);
	ASSERT_EQ(weft_chan_len(s.c), 1);
	weft_chan_release(s.c);

	s = (struct seq_sender){ .c = make_chan(sizeof(uint32_t), 0), .n = 1 };
	weft_wg_add(&s.wg, 1);
	GO(send_sequence, &s);
	weft_sleep(20 * TEST_MS);
	ASSERT_EQ(weft_chan_len(s.c), 0);
	ASSERT_EQ(weft_chan_cap(s.c), 0);
	ASSERT_EQ(weft_chan_recv(s.c, NULL), 0);
	weft_wg_wait(&s.wg);
	weft_chan_release(s.c);
}

/* ---------------------------------------------------------------- element sizes */

static void send_signals(void *arg)
{
	struct seq_sender *s = arg;
	for (uint32_t i = 0; i < s->n; i++)
		ASSERT_EQ(weft_chan_send(s->c, NULL), 0);
	weft_chan_close(s->c);
	weft_wg_done(&s->wg);
}

/*
 * Zero-size elements (Go's chan struct{}): NULL element pointers everywhere,
 * len counts signals, and a receive into a real buffer writes nothing (not
 * even on close). An unbuffered signal channel carries 1,000 signals from a
 * goroutine, then close. Guards: a NULL dereference for zero-size copies,
 * a zero-size channel treated as "no buffer" (cap ignored), a write of a
 * default size into out.
 */
TEST(zero_size_elements)
{
	weft_chan *c = make_chan(0, 3);
	ASSERT_EQ(weft_chan_elem_size(c), 0);
	ASSERT_EQ(weft_chan_cap(c), 3);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(weft_chan_trysend(c, NULL), 0);
	ASSERT_EQ(weft_chan_len(c), 3);
	ASSERT_EQ(weft_chan_trysend(c, NULL), EAGAIN);
	unsigned char canary[16];
	memset(canary, 0xAB, sizeof canary);
	ASSERT_EQ(weft_chan_recv(c, canary), 0);
	ASSERT_EQ(weft_chan_tryrecv(c, NULL), 0);
	weft_chan_close(c);
	ASSERT_EQ(weft_chan_recv(c, canary), 0);
	ASSERT_EQ(weft_chan_recv(c, canary), EPIPE);
	ASSERT_EQ(weft_chan_tryrecv(c, canary), EPIPE);
	for (size_t i = 0; i < sizeof canary; i++)
		ASSERT_EQ(canary[i], 0xAB);
	weft_chan_release(c);

	struct seq_sender s = { .c = make_chan(0, 0), .n = 1000 };
	weft_wg_add(&s.wg, 1);
	GO(send_signals, &s);
	uint32_t got = 0;
	while (weft_chan_recv(s.c, canary) == 0)
		got++;
	ASSERT_EQ(got, 1000);
	for (size_t i = 0; i < sizeof canary; i++)
		ASSERT_EQ(canary[i], 0xAB);
	weft_wg_wait(&s.wg);
	weft_chan_release(s.c);
}

static unsigned char pattern(uint32_t msg, size_t j)
{
	return (unsigned char)(msg * 131u + j * 7u + (j >> 8) + 1);
}

struct sized {
	weft_chan *c;
	size_t size;
	uint32_t n;
	weft_wg wg;
};

static void send_patterns(void *arg)
{
	struct sized *s = arg;
	unsigned char *buf = malloc(s->size);
	ASSERT(buf != NULL);
	for (uint32_t m = 0; m < s->n; m++) {
		for (size_t j = 0; j < s->size; j++)
			buf[j] = pattern(m, j);
		ASSERT_EQ(weft_chan_send(s->c, buf), 0);
		/* The send copied the element: scribbling on it now must not
		 * change what the receiver gets. */
		memset(buf, 0xEE, s->size);
	}
	free(buf);
	weft_wg_done(&s->wg);
}

/* Send n patterned elements of size bytes through a channel of capacity
 * cap from a goroutine and check every byte, and that the receive wrote
 * nothing past the element (64 canary bytes). */
static void patterns_through(size_t size, size_t cap, uint32_t n)
{
	enum { CANARY = 64 };
	struct sized s = { make_chan(size, cap), size, n, WEFT_WG_INIT };
	unsigned char *out = malloc(size + CANARY);
	ASSERT(out != NULL);
	weft_wg_add(&s.wg, 1);
	GO(send_patterns, &s);
	for (uint32_t m = 0; m < n; m++) {
		memset(out, 0x11, size + CANARY);
		ASSERT_EQ(weft_chan_recv(s.c, out), 0);
		for (size_t j = 0; j < size; j++)
			if (out[j] != pattern(m, j))
				FAIL("size %zu cap %zu: message %u byte %zu is 0x%02x, "
				     "expected 0x%02x",
				     size, cap, m, j, out[j], pattern(m, j));
		for (size_t j = size; j < size + CANARY; j++)
			if (out[j] != 0x11)
				FAIL("size %zu: receive wrote byte %zu past the element",
				     size, j - size);
	}
	weft_wg_wait(&s.wg);
	weft_chan_close(s.c);
	memset(out, 0x11, size + CANARY);
	ASSERT_EQ(weft_chan_recv(s.c, out), EPIPE);
	for (size_t j = 0; j < size; j++)
		if (out[j] != 0)
			FAIL("size %zu: byte %zu not zeroed on EPIPE", size, j);
	for (size_t j = size; j < size + CANARY; j++)
		ASSERT_EQ(out[j], 0x11);
	free(out);
	weft_chan_release(s.c);
}

/*
 * Elements of 1, 3, 13, 4 KiB, 4 KiB + 1 and WEFT_CHAN_MAX_ELEM bytes pass
 * intact, byte for byte, unbuffered and buffered (cap 1 and 3), between
 * goroutines at 2 Ps; the receive writes exactly elem_size bytes; the zeroed
 * element on EPIPE is the whole element and nothing more. Guards: copies
 * rounded to words (odd sizes overwrite the canary), a fixed-size slot, a
 * hand-off that copies only part, a sender's buffer referenced instead of
 * copied.
 */
TEST(element_sizes)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static const size_t sizes[] = { 1, 3, 13, 4096, 4097, WEFT_CHAN_MAX_ELEM };
	static const size_t caps[] = { 0, 1, 3 };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++)
			patterns_through(sizes[i], caps[k], sizes[i] > 8192 ? 20 : 300);
}

/* ---------------------------------------------------------------- close */

/*
 * Close on a buffered channel: the values sent before close are all received
 * (by recv, tryrecv and recv_until alike); then every receive form returns
 * EPIPE at once (recv_until even with a far deadline) and zeroes out, and
 * NULL out is allowed. An unbuffered closed channel gives EPIPE at once.
 * Guards: buffered values dropped at close, EAGAIN or ETIMEDOUT instead of
 * EPIPE from the try and _until forms, a stale value left in out.
 */
TEST(recv_after_close)
{
	weft_chan *c = make_chan(sizeof(int64_t), 4);
	for (int64_t i = 1; i <= 3; i++)
		ASSERT_EQ(weft_chan_send(c, &i), 0);
	weft_chan_close(c);
	ASSERT(weft_chan_closed(c));
	ASSERT_EQ(weft_chan_len(c), 3);
	int64_t v = 0;
	ASSERT_EQ(weft_chan_recv(c, &v), 0);
	ASSERT_EQ(v, 1);
	ASSERT_EQ(weft_chan_tryrecv(c, &v), 0);
	ASSERT_EQ(v, 2);
	ASSERT_EQ(weft_chan_recv_until(c, &v, weft_now() - TEST_MS), 0);
	ASSERT_EQ(v, 3);

	v = -1;
	ASSERT_EQ(weft_chan_recv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	v = -1;
	ASSERT_EQ(weft_chan_tryrecv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	v = -1;
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_chan_recv_until(c, &v, weft_now() + 10 * WEFT_SECOND), EPIPE);
	ASSERT_DURATION(test_now_ns() - t0, 0, 20);
	ASSERT_EQ(v, 0);
	ASSERT_EQ(weft_chan_recv(c, NULL), EPIPE);
	ASSERT_EQ(weft_chan_len(c), 0);
	weft_chan_release(c);

	c = make_chan(sizeof(int64_t), 0);
	weft_chan_close(c);
	v = -1;
	ASSERT_EQ(weft_chan_recv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	v = -1;
	ASSERT_EQ(weft_chan_tryrecv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	weft_chan_release(c);
}

/*
 * Every send form on a closed channel returns EPIPE at once (send_until even
 * with a far deadline, trysend on a full one) and sends nothing: the buffer
 * keeps exactly what it had. Guards: a send on a closed channel that lands
 * in the buffer, trysend answering EAGAIN instead of EPIPE.
 */
TEST(send_after_close)
{
	weft_chan *c = make_chan(sizeof(int64_t), 2);
	int64_t v = 5;
	ASSERT_EQ(weft_chan_send(c, &v), 0);
	weft_chan_close(c);
	v = 6;
	ASSERT_EQ(weft_chan_send(c, &v), EPIPE);
	ASSERT_EQ(weft_chan_trysend(c, &v), EPIPE);
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_chan_send_until(c, &v, weft_now() + 10 * WEFT_SECOND), EPIPE);
	ASSERT_DURATION(test_now_ns() - t0, 0, 20);
	ASSERT_EQ(weft_chan_len(c), 1);
	ASSERT_EQ(weft_chan_recv(c, &v), 0);
	ASSERT_EQ(v, 5);
	ASSERT_EQ(weft_chan_recv(c, &v), EPIPE);
	weft_chan_release(c);

	c = make_chan(sizeof(int64_t), 1);
	ASSERT_EQ(weft_chan_trysend(c, &v), 0);
	weft_chan_close(c);
	ASSERT_EQ(weft_chan_trysend(c, &v), EPIPE); /* full and closed */
	weft_chan_release(c);

	c = make_chan(sizeof(int64_t), 0);
	weft_chan_close(c);
	ASSERT_EQ(weft_chan_send(c, &v), EPIPE);
	ASSERT_EQ(weft_chan_trysend(c, &v), EPIPE);
	ASSERT_EQ(weft_chan_send_until(c, &v, weft_now() + WEFT_SECOND), EPIPE);
	weft_chan_release(c);
}

struct blocked {
	weft_chan *c;
	atomic_int started;
	atomic_int epipe;
	atomic_int zeroed;
	atomic_int other; /* any other result */
	weft_wg wg;
};

static void blocked_recv(void *arg)
{
	struct blocked *b = arg;
	int64_t v = -1;
	atomic_fetch_add(&b->started, 1);
	int r = weft_chan_recv(b->c, &v);
	if (r == EPIPE)
		atomic_fetch_add(&b->epipe, 1);
	else
		atomic_fetch_add(&b->other, 1);
	if (v == 0)
		atomic_fetch_add(&b->zeroed, 1);
	weft_wg_done(&b->wg);
}

static void blocked_send(void *arg)
{
	struct blocked *b = arg;
	int64_t v = 1000 + atomic_fetch_add(&b->started, 1);
	int r = weft_chan_send(b->c, &v);
	if (r == EPIPE)
		atomic_fetch_add(&b->epipe, 1);
	else
		atomic_fetch_add(&b->other, 1);
	weft_wg_done(&b->wg);
}

enum { BLOCKED_G = 8, BLOCKED_T = 2 };

/* Start 8 goroutines and 2 pthreads running fn on b, wait until they are
 * parked, close, and wait for all of them. */
static void close_blocked(struct blocked *b, weft_fn fn)
{
	pthread_t th[BLOCKED_T];
	weft_wg_add(&b->wg, BLOCKED_G + BLOCKED_T);
	for (int i = 0; i < BLOCKED_T; i++)
		test_start_thread(&th[i], fn, b);
	for (int i = 0; i < BLOCKED_G; i++)
		GO(fn, b);
	wait_parked(&b->started, BLOCKED_G + BLOCKED_T);
	ASSERT_EQ(atomic_load(&b->epipe) + atomic_load(&b->other), 0);
	weft_chan_close(b->c);
	weft_wg_wait(&b->wg);
	for (int i = 0; i < BLOCKED_T; i++)
		test_join_thread(th[i]);
	ASSERT_EQ(atomic_load(&b->other), 0);
	ASSERT_EQ(atomic_load(&b->epipe), BLOCKED_G + BLOCKED_T);
}

/*
 * Close wakes every blocked receiver, 8 goroutines and 2 pthreads, on an
 * unbuffered and on an empty buffered channel, at 1 P (a cascade: each woken
 * goroutine wakes the next) and 2 (all at once): each gets EPIPE and a
 * zeroed element. Guards: close waking only one waiter (the rest hang), a
 * cascade that stops at a thread, waking goroutines but not parked threads,
 * a woken receiver reporting success.
 */
TEST(close_wakes_all_receivers)
{
	for (int procs = 1; procs <= 2; procs++) {
		ASSERT_EQ(weft_set_procs(procs, NULL), 0);
		for (size_t cap = 0; cap <= 4; cap += 4) {
			static struct blocked b;
			b = (struct blocked){ .c = make_chan(sizeof(int64_t), cap) };
			close_blocked(&b, blocked_recv);
			ASSERT_EQ(atomic_load(&b.zeroed), BLOCKED_G + BLOCKED_T);
			weft_chan_release(b.c);
		}
	}
}

/*
 * Close wakes every blocked sender, 8 goroutines and 2 pthreads, on an
 * unbuffered channel and on a full cap-1 channel, at 1 and 2 Ps: each gets
 * EPIPE, none of
 * their values enters the channel (the one buffered value is still received,
 * then EPIPE). Guards: senders left parked forever, a woken sender's value
 * slipped into the buffer, close dropping the buffered value.
 */
TEST(close_wakes_all_senders)
{
	for (int run = 0; run < 4; run++) {
		int procs = 1 + run / 2;
		size_t cap = (size_t)(run % 2);
		ASSERT_EQ(weft_set_procs(procs, NULL), 0);
		static struct blocked b;
		b = (struct blocked){ .c = make_chan(sizeof(int64_t), cap) };
		int64_t v = 77;
		if (cap)
			ASSERT_EQ(weft_chan_trysend(b.c, &v), 0);
		close_blocked(&b, blocked_send);
		ASSERT_EQ(weft_chan_len(b.c), cap);
		if (cap) {
			v = 0;
			ASSERT_EQ(weft_chan_recv(b.c, &v), 0);
			ASSERT_EQ(v, 77);
		}
		ASSERT_EQ(weft_chan_recv(b.c, &v), EPIPE);
		weft_chan_release(b.c);
	}
}

/* ---------------------------------------------------------------- close's cascade */

static int64_t live_channels(void)
{
	weft_stats st;
	weft_stats_get(&st);
	return st.channels;
}

/*
 * At 1 P a close wakes its waiters in a cascade (chan.c): each woken
 * goroutine wakes the next on its way out of the wait, so for a while a
 * closed channel still has waiters queued. These tests hold that window
 * open: the woken goroutines are slow, or have not run yet.
 */

/* Spin (no switch) for ns: a woken goroutine that keeps its P. */
static void spin_for(int64_t ns)
{
	int64_t end = weft_now() + ns;
	while (weft_now() < end)
		;
}

struct cascade {
	weft_chan *c;
	weft_chan *never; /* a select's other case: never ready */
	atomic_int started;
	atomic_int epipe, other;
	int64_t spin_ns; /* each woken waiter spins this long */
	int64_t deadline;
	int late_result; /* the waiter with a deadline */
	int late_chosen;
	weft_wg wg;
};

static void cascade_recv(void *arg)
{
	struct cascade *k = arg;
	int64_t v = -1;
	atomic_fetch_add(&k->started, 1);
	int r = weft_chan_recv(k->c, &v);
	atomic_fetch_add(r == EPIPE && v == 0 ? &k->epipe : &k->other, 1);
	spin_for(k->spin_ns);
	weft_wg_done(&k->wg);
}

static void cascade_send(void *arg)
{
	struct cascade *k = arg;
	int64_t v = 5;
	atomic_fetch_add(&k->started, 1);
	int r = weft_chan_send(k->c, &v);
	atomic_fetch_add(r == EPIPE ? &k->epipe : &k->other, 1);
	weft_wg_done(&k->wg);
}

static void cascade_select(void *arg)
{
	struct cascade *k = arg;
	int64_t v = -1, w;
	weft_case cs[2] = { WEFT_RECV_CASE(k->never, &w), WEFT_RECV_CASE(k->c, &v) };
	int chosen = -1;
	atomic_fetch_add(&k->started, 1);
	int r = weft_select(cs, 2, &chosen);
	atomic_fetch_add(r == EPIPE && chosen == 1 && v == 0 ? &k->epipe : &k->other, 1);
	spin_for(k->spin_ns);
	weft_wg_done(&k->wg);
}

static void cascade_recv_until(void *arg)
{
	struct cascade *k = arg;
	int64_t v = -1;
	atomic_fetch_add(&k->started, 1);
	k->late_result = weft_chan_recv_until(k->c, &v, k->deadline);
	weft_wg_done(&k->wg);
}

static void cascade_select_until(void *arg)
{
	struct cascade *k = arg;
	int64_t v = -1, w;
	weft_case cs[2] = { WEFT_RECV_CASE(k->never, &w), WEFT_RECV_CASE(k->c, &v) };
	atomic_fetch_add(&k->started, 1);
	k->late_result = weft_select_until(cs, 2, &k->late_chosen, k->deadline);
	weft_wg_done(&k->wg);
}

static void cascade_thread_recv(void *arg)
{
	cascade_recv(arg);
}

/*
 * At 1 P, 3000 goroutines parked on one channel (plain receives, and
 * selects with a never-ready second case) and 2 pthreads: one close, and
 * every one of them returns EPIPE (a select, its closed case; a receive, a
 * zeroed element), with the closer's reference dropped right after the close
 * (the cascade keeps the channel alive, and the last relay frees it).
 * Guards: a select that does not pass the cascade on (every waiter behind it
 * hangs: the wait is bounded), a relay that never drops its hold (the
 * channel leaks), a foreign thread in the middle stopping the cascade.
 */
TEST(close_cascade_reaches_every_kind_of_waiter)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	enum { EACH = 1500, THREADS = 2 };
	static struct cascade k;
	k = (struct cascade){ .c = make_chan(sizeof(int64_t), 0), .never = make_chan(sizeof(int64_t), 0) };
	int64_t base = live_channels();
	pthread_t th[THREADS];
	weft_wg_add(&k.wg, 2 * EACH + THREADS);
	for (int i = 0; i < EACH; i++) {
		GO(cascade_recv, &k);
		GO(cascade_select, &k);
		if (i == EACH / 2)
			for (int t = 0; t < THREADS; t++)
				test_start_thread(&th[t], cascade_thread_recv, &k);
	}
	wait_parked(&k.started, 2 * EACH + THREADS);
	weft_chan_close(k.c);
	weft_chan_release(k.c); /* orphaned while the cascade runs */
	ASSERT_EQ(weft_wg_wait_until(&k.wg, weft_now() + 5 * WEFT_SECOND * test_slowdown()), 0);
	for (int t = 0; t < THREADS; t++)
		test_join_thread(th[t]);
	ASSERT_EQ(atomic_load(&k.other), 0);
	ASSERT_EQ(atomic_load(&k.epipe), 2 * EACH + THREADS);
	int64_t deadline = test_now_ns() + 2000 * TEST_MS;
	while (live_channels() != base - 1 && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT_EQ(live_channels(), base - 1); /* k.c freed by its last relay */
	weft_chan_release(k.never);
}

/*
 * At 1 P, while a close's cascade is still on its way (three parked senders,
 * the first readied but not yet run), a receive on the closed channel takes
 * no value from the senders still queued: weft_chan_recv, weft_chan_tryrecv,
 * a select and weft_chan_tryrecv_n all report the close, and every sender
 * gets EPIPE. Guards: a receive, a select case or a batch receive that
 * completes a queued sender of a closed channel (a send after the close).
 */
TEST(close_cascade_senders_give_no_value)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	static struct cascade k;
	k = (struct cascade){ .c = make_chan(sizeof(int64_t), 0), .never = make_chan(sizeof(int64_t), 0) };
	weft_wg_add(&k.wg, 3);
	for (int i = 0; i < 3; i++)
		GO(cascade_send, &k);
	wait_parked(&k.started, 3);
	weft_chan_close(k.c);
	/* No switch since the close: two senders are still queued. */
	int64_t v = -1, batch[4];
	size_t got = 99;
	int chosen = -1;
	weft_case cs[1] = { WEFT_RECV_CASE(k.c, &v) };
	ASSERT_EQ(weft_chan_tryrecv_n(k.c, batch, 4, &got), EPIPE);
	ASSERT_EQ(got, 0);
	ASSERT_EQ(weft_select(cs, 1, &chosen), EPIPE);
	ASSERT_EQ(v, 0);
	v = -1;
	ASSERT_EQ(weft_chan_tryrecv(k.c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	v = -1;
	ASSERT_EQ(weft_chan_recv(k.c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	weft_wg_wait(&k.wg);
	ASSERT_EQ(atomic_load(&k.other), 0);
	ASSERT_EQ(atomic_load(&k.epipe), 3);
	weft_chan_release(k.c);
	weft_chan_release(k.never);
}

struct late_recv {
	weft_chan *c;
	int64_t deadline;
	atomic_int started;
	atomic_int result; /* -1 until it returns */
	int64_t v;
	weft_wg wg;
};

static void late_recv(void *arg)
{
	struct late_recv *k = arg;
	atomic_store(&k->started, 1);
	atomic_store(&k->result, weft_chan_recv_until(k->c, &k->v, k->deadline));
	weft_wg_done(&k->wg);
}

/*
 * At 1 P: a receive with a deadline parks on an empty buffered channel; the
 * test then keeps the P busy well past the deadline, so the timer (fired by
 * sysmon) claims the wait while the receiver cannot run yet; a value is then
 * sent (into the ring: the receiver's case is stale) and the channel closed.
 * The receiver, running at last, reports ETIMEDOUT, and the value stays
 * there to be received before the close is seen. Guard: a timed-out receive
 * that reported the close (EPIPE) with a value still buffered, against
 * "values sent before close are all received before EPIPE". A trial in
 * which the timer had not fired before the send (the value went straight to
 * the receiver) proves nothing and is run again.
 */
TEST(recv_timeout_then_close_keeps_buffered_value)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	static struct late_recv k;
	for (int trial = 0;; trial++) {
		if (trial == 5)
			FAIL("the deadline never fired before the send in 5 trials");
		k = (struct late_recv){.c = make_chan(sizeof(int64_t), 1), .result = -1};
		k.deadline = weft_now() + 2 * TEST_MS;
		weft_wg_add(&k.wg, 1);
		GO(late_recv, &k);
		while (!atomic_load(&k.started))
			weft_yield();
		weft_yield(); /* it parks */
		int64_t until = test_now_ns() + 100 * TEST_MS * test_slowdown();
		while (test_now_ns() < until)
			; /* hold the only P: sysmon fires the overdue timer */
		int64_t v = 7;
		ASSERT_EQ(weft_chan_trysend(k.c, &v), 0);
		weft_chan_close(k.c);
		weft_wg_wait(&k.wg);
		int r = atomic_load(&k.result);
		if (r == 0) { /* the send reached the receiver: no test */
			ASSERT_EQ(k.v, 7);
			weft_chan_release(k.c);
			continue;
		}
		ASSERT_EQ(r, ETIMEDOUT);
		ASSERT_EQ(weft_chan_len(k.c), 1);
		v = 0;
		ASSERT_EQ(weft_chan_recv(k.c, &v), 0);
		ASSERT_EQ(v, 7);
		ASSERT_EQ(weft_chan_recv(k.c, &v), EPIPE);
		weft_chan_release(k.c);
		break;
	}
}

/* One trial of the test below (sel: the late waiter selects). Returns 0 if
 * the machine was too slow to set it up (the close came too near the
 * deadline) or too fast to test it (the cascade reached the late waiter
 * first): then the late waiter's result proves nothing. */
static int deadline_trial(int sel)
{
	enum { SLOW = 300 };
	static struct cascade k;
	k = (struct cascade){ .c = make_chan(sizeof(int64_t), 0),
			      .never = make_chan(sizeof(int64_t), 0),
			      .spin_ns = 300 * 1000 * test_slowdown(), .late_result = -1 };
	weft_wg_add(&k.wg, SLOW + 1);
	for (int i = 0; i < SLOW; i++)
		GO(cascade_recv, &k);
	wait_parked(&k.started, SLOW);
	k.deadline = weft_now() + 60 * TEST_MS * test_slowdown();
	GO(sel ? cascade_select_until : cascade_recv_until, &k);
	wait_parked(&k.started, SLOW + 1); /* 20 ms */
	int valid = weft_now() < k.deadline - 30 * TEST_MS * test_slowdown();
	weft_chan_close(k.c);
	weft_wg_wait(&k.wg);
	valid = valid && weft_now() > k.deadline; /* the cascade was slower */
	ASSERT_EQ(atomic_load(&k.other), 0);
	if (valid) {
		ASSERT_EQ(k.late_result, EPIPE);
		if (sel)
			ASSERT_EQ(k.late_chosen, 1);
	}
	weft_chan_release(k.c);
	weft_chan_release(k.never);
	return valid;
}

/*
 * At 1 P, a receive and a select with a deadline wait behind 300 receivers
 * that each spin 300 us once woken, so a close made well before the
 * deadline reaches them only after it. Their timers fire while they are
 * still queued on the closed channel: both report the close (EPIPE; the
 * select, its closed case), not a timeout. Guards: a timed-out wait that
 * ignores the close it finds when it unlinks itself (ETIMEDOUT for an
 * operation whose channel was closed 40 ms before its deadline). A trial
 * the machine's timing spoils is run again, up to 5 times.
 */
TEST(close_cascade_beats_a_later_deadline)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	for (int sel = 0; sel <= 1; sel++) {
		int tries = 0;
		while (!deadline_trial(sel))
			if (++tries == 5)
				FAIL("5 trials in a row could not be timed as the test needs");
	}
}

/* Close a channel twice (arg set), or close NULL. */
static int bad_close_main(void *arg)
{
	weft_chan *c = arg ? make_chan(8, 1) : NULL;
	if (c)
		weft_chan_close(c);
	weft_chan_close(c);
	printf("survived\n");
	return 0;
}

CHILD(close_closed_goroutine)
{
	return weft_main(bad_close_main, (void *)1);
}

CHILD(close_closed_foreign)
{
	return bad_close_main((void *)1);
}

CHILD(close_nil_goroutine)
{
	return weft_main(bad_close_main, NULL);
}

CHILD(close_nil_foreign)
{
	return bad_close_main(NULL);
}

/*
 * Closing a closed channel and closing NULL are fatal errors naming the
 * misuse (Go's panics), from a goroutine and from a foreign thread. Guards: a
 * second close that is silently ignored (the child prints "survived"), a
 * crash on NULL instead of the message.
 */
TEST_THREAD(close_misuse_is_fatal)
{
	expect_fatal("close_closed_goroutine", "close of closed channel");
	expect_fatal("close_closed_foreign", "close of closed channel");
	expect_fatal("close_nil_goroutine", "close of nil channel");
	expect_fatal("close_nil_foreign", "close of nil channel");
}

/* ---------------------------------------------------------------- nil */

/*
 * The nil channel's try forms say EAGAIN and leave out alone. Guards: a
 * NULL dereference, EPIPE (treating nil as closed).
 */
TEST(nil_chan_try_forms)
{
	int64_t v = 7;
	ASSERT_EQ(weft_chan_trysend(NULL, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(NULL, &v), EAGAIN);
	ASSERT_EQ(v, 7);
	ASSERT_EQ(weft_chan_trysend(NULL, NULL), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(NULL, NULL), EAGAIN);
}

/* recv_until / send_until on c with a 30 ms deadline: must time out, not
 * early, out untouched; returns the lateness. */
static int64_t recv_until_late(weft_chan *c)
{
	int64_t v = 7;
	int64_t d = weft_now() + 30 * TEST_MS;
	ASSERT_EQ(weft_chan_recv_until(c, &v, d), ETIMEDOUT);
	int64_t n = weft_now();
	ASSERT_GE(n, d);
	ASSERT_EQ(v, 7);
	return n - d;
}

static int64_t send_until_late(weft_chan *c)
{
	int64_t v = 8;
	int64_t d = weft_now() + 30 * TEST_MS;
	ASSERT_EQ(weft_chan_send_until(c, &v, d), ETIMEDOUT);
	int64_t n = weft_now();
	ASSERT_GE(n, d);
	return n - d;
}

/* The nil-channel _until checks, from a goroutine or a foreign thread. */
static void nil_until_checks(void)
{
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, recv_until_late(NULL)), 0, LATE_MS);
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, send_until_late(NULL)), 0, LATE_MS);
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_chan_recv_until(NULL, NULL, weft_now() - TEST_MS), ETIMEDOUT);
	ASSERT_EQ(weft_chan_send_until(NULL, NULL, 0), ETIMEDOUT);
	ASSERT_EQ(weft_chan_recv_until(NULL, NULL, INT64_MIN), ETIMEDOUT);
	ASSERT_DURATION(test_now_ns() - t0, 0, 20);
}

/*
 * The nil channel's _until forms wait for the deadline and return ETIMEDOUT:
 * not early, at most 10 ms late; a past deadline returns at once. Guards: an
 * early return (EAGAIN at once, as if a try form), a wait that never ends.
 */
TEST(nil_chan_until_forms)
{
	nil_until_checks();
}

TEST_THREAD(nil_chan_until_forms_foreign)
{
	nil_until_checks();
}

static atomic_int recv_returned, send_returned, thread_returned;

/* Send to NULL (for &send_returned) or receive from it, then say so. */
static void nil_op(void *arg)
{
	atomic_int *returned = arg;
	if (returned == &send_returned)
		weft_chan_send(NULL, NULL);
	else
		weft_chan_recv(NULL, NULL);
	atomic_store(returned, 1);
}

static int nil_blocks_main(void *arg)
{
	(void)arg;
	pthread_t th;
	GO(nil_op, &recv_returned);
	GO(nil_op, &send_returned);
	test_start_thread(&th, nil_op, &thread_returned);
	weft_sleep(50 * TEST_MS);
	printf("returned: recv=%d send=%d thread=%d\n", atomic_load(&recv_returned),
	       atomic_load(&send_returned), atomic_load(&thread_returned));
	fflush(stdout);
	/* Exit with them still blocked: they never return, and the harness's
	 * leak check would count them, hence the child process. */
	return 0;
}

CHILD(nil_chan_blocks)
{
	return weft_main(nil_blocks_main, NULL);
}

/*
 * Receiving from and sending to NULL block forever: two goroutines and a
 * pthread are still inside after 50 ms (in a child process, which then exits
 * with them blocked). Guards: a NULL channel treated as closed (EPIPE at
 * once) or as "would block" (EAGAIN at once), a crash.
 */
TEST_THREAD(nil_chan_blocks_forever)
{
	test_child c;
	test_child_run("nil_chan_blocks", NULL, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "returned: recv=0 send=0 thread=0");
	test_child_free(&c);
}

static void send_twice(void *arg)
{
	int64_t v = 1;
	weft_chan_send(arg, &v);
	weft_chan_send(arg, &v);
}

enum lonely { RECV_NIL, SEND_NIL, RECV_ORPHAN, RECV_AFTER_SENDER_DONE };

/* Block the only goroutine (or the last one left) for good, one way or
 * another. */
static int lonely_main(void *arg)
{
	weft_chan *c = make_chan(8, 0);
	switch ((enum lonely)(intptr_t)arg) {
	case RECV_NIL:
		weft_chan_recv(NULL, NULL);
		break;
	case SEND_NIL:
		weft_chan_send(NULL, NULL);
		break;
	case RECV_ORPHAN: /* a channel nobody else can reach */
		weft_chan_recv(c, NULL);
		break;
	case RECV_AFTER_SENDER_DONE: /* three receives from a sender of two */
		GO(send_twice, c);
		for (int i = 0; i < 3; i++)
			weft_chan_recv(c, NULL);
		break;
	}
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_recv_nil)
{
	return weft_main(lonely_main, (void *)RECV_NIL);
}

CHILD(deadlock_send_nil)
{
	return weft_main(lonely_main, (void *)SEND_NIL);
}

CHILD(deadlock_recv_chan)
{
	return weft_main(lonely_main, (void *)RECV_ORPHAN);
}

CHILD(deadlock_recv_after_sender_done)
{
	return weft_main(lonely_main, (void *)RECV_AFTER_SENDER_DONE);
}

/* A pthread that receives from c for ever, inside weft (no deadline). */
static void *foreign_recv_forever(void *arg)
{
	weft_chan_recv(arg, NULL);
	return NULL;
}

/* The main goroutine and a foreign pthread each wait on a channel nobody
 * else can reach. */
static int lonely_with_foreign_main(void *arg)
{
	(void)arg;
	weft_chan *c = make_chan(8, 0), *d = make_chan(8, 0);
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, foreign_recv_forever, c), 0);
	weft_chan_recv(d, NULL);
	printf("main returned\n");
	return 0;
}

CHILD(deadlock_recv_chan_with_foreign_waiter)
{
	return weft_main(lonely_with_foreign_main, NULL);
}

static void expect_deadlock(const char *child)
{
	test_child c;
	test_child_run(child, NULL, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 2);
	ASSERT_CONTAINS(c.err, DEADLOCK_MSG);
	ASSERT_NOT_CONTAINS(c.out, "main returned");
	test_child_free(&c);
}

/*
 * A program whose only goroutine waits on a nil channel, or on a channel no
 * one else will use, dies with Go's deadlock message and exit status 2.
 * Guards: channel waits the deadlock detector does not see as blocked (a
 * busy-waiting receive, or a park that looks runnable: the child hangs), a
 * nil-channel receive that returns.
 */
TEST_THREAD(channel_deadlocks_detected)
{
	expect_deadlock("deadlock_recv_nil");
	expect_deadlock("deadlock_send_nil");
	expect_deadlock("deadlock_recv_chan");
	expect_deadlock("deadlock_recv_after_sender_done");
}

/*
 * A foreign pthread blocked in a channel receive without a deadline is
 * parked inside weft: when the main goroutine also waits for good, on
 * another channel, the program is deadlocked and says so (exit status 2).
 * Guards: a foreign channel waiter not counted as blocked in weft (the
 * detector then takes it for a thread that may still wake someone, and the
 * child hangs until the harness kills it).
 */
TEST_THREAD(channel_deadlock_with_foreign_waiter_detected)
{
	expect_deadlock("deadlock_recv_chan_with_foreign_waiter");
}

/* ---------------------------------------------------------------- try forms */

/* Repeat a try form until it succeeds (a partner parks within 5 s). */
static void try_until_ok(bool send, weft_chan *c, int64_t *v)
{
	int64_t deadline = test_now_ns() + 5000 * TEST_MS * test_slowdown();
	for (;;) {
		int r = send ? weft_chan_trysend(c, v) : weft_chan_tryrecv(c, v);
		if (r == 0)
			return;
		ASSERT_EQ(r, EAGAIN);
		if (test_now_ns() > deadline)
			FAIL("%s never met the parked partner",
			     send ? "trysend" : "tryrecv");
		weft_sleep(TEST_MS);
	}
}

/* The partner (goroutine or pthread) parks; our try form meets it. */
static void try_meets_partner(bool thread)
{
	struct partner p = { .c = make_chan(sizeof(int64_t), 0), .value = -1 };
	pthread_t th;
	int64_t v = 31337;
	weft_wg_add(&p.wg, 1);
	if (thread)
		test_start_thread(&th, partner_recv, &p);
	else
		GO(partner_recv, &p);
	try_until_ok(true, p.c, &v);
	weft_wg_wait(&p.wg);
	if (thread)
		test_join_thread(th);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.value, 31337);

	p.value = 4242;
	weft_wg_add(&p.wg, 1);
	if (thread)
		test_start_thread(&th, partner_send, &p);
	else
		GO(partner_send, &p);
	v = 0;
	try_until_ok(false, p.c, &v);
	weft_wg_wait(&p.wg);
	if (thread)
		test_join_thread(th);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(v, 4242);
	weft_chan_release(p.c);
}

/*
 * Try forms: EAGAIN on an unbuffered channel without a partner (both ways),
 * on an empty and on a full buffered one (out untouched); success against a
 * parked partner, goroutine or pthread, with the value passing both ways.
 * Guards: a trysend on unbuffered that succeeds with nobody there (the
 * value vanishes), a try form that cannot see parked partners (loops until
 * the 5 s bound), a try form that blocks.
 */
TEST(try_forms)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_chan *u = make_chan(sizeof(int64_t), 0);
	weft_chan *b = make_chan(sizeof(int64_t), 2);
	int64_t v = 5;
	ASSERT_EQ(weft_chan_trysend(u, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(u, &v), EAGAIN);
	ASSERT_EQ(v, 5);
	ASSERT_EQ(weft_chan_tryrecv(b, &v), EAGAIN);
	ASSERT_EQ(v, 5);
	ASSERT_EQ(weft_chan_trysend(b, &v), 0);
	ASSERT_EQ(weft_chan_trysend(b, &v), 0);
	ASSERT_EQ(weft_chan_trysend(b, &v), EAGAIN);
	ASSERT_EQ(weft_chan_len(b), 2);
	weft_chan_release(u);
	weft_chan_release(b);

	try_meets_partner(false);
	try_meets_partner(true);
}

/* ---------------------------------------------------------------- batches */

/* Start a partner that parks in send (value v) or recv on c: a goroutine,
 * or a pthread when thread is set; wait until it has parked, so that the
 * partners queue in the order they were started. */
static void park_partner(struct partner *p, weft_chan *c, bool sends, int64_t v, bool thread,
                         pthread_t *th)
{
	*p = (struct partner){.c = c, .value = v};
	weft_wg_add(&p->wg, 1);
	if (thread)
		test_start_thread(th, sends ? partner_send : partner_recv, p);
	else
		GO(sends ? partner_send : partner_recv, p);
	wait_parked(&p->started, 1);
	ASSERT_EQ(atomic_load(&p->done), 0);
}

/* A batch on c that moves nothing: a send of 6 values from v, or a receive
 * of up to 10 into v, returns want with a count of 0. */
static void batch_moves_none(weft_chan *c, bool send, int64_t *v, int want)
{
	size_t n = 99;
	ASSERT_EQ(send ? weft_chan_trysend_n(c, v, 6, &n) : weft_chan_tryrecv_n(c, v, 10, &n),
	          want);
	ASSERT_EQ(n, 0);
}

/* Wait for each partner (and its pthread) and check its result. */
static void join_partners(struct partner *ps, const bool *thread, const pthread_t *th, int n,
                          int want)
{
	for (int i = 0; i < n; i++) {
		weft_wg_wait(&ps[i].wg);
		if (thread[i])
			test_join_thread(th[i]);
		ASSERT_EQ(ps[i].result, want);
	}
}

/*
 * weft_chan_tryrecv_n takes what single receives would, in their order: a
 * full cap-4 buffer 0..3 with three parked senders 4, 5, 6 (the middle one a
 * pthread) gives 0..4 for max 5 (each slot taken is refilled from the
 * oldest sender, so every sender completes and 5, 6 stay buffered), then 5,
 * 6 for max 10, then EAGAIN; unbuffered, senders 10, 11, 12 give 10, 11 for
 * max 2 and 12 after; a closed and drained channel is EPIPE with out
 * untouched. Guards: senders served before the buffer (or the buffer without
 * refilling it), a count off by one, a sender completed but never woken
 * (hang), a value taken twice.
 */
TEST(batch_recv_keeps_order)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int unbuffered = 0; unbuffered < 2; unbuffered++) {
		weft_chan *c = make_chan(sizeof(int64_t), unbuffered ? 0 : 4);
		int64_t base = unbuffered ? 10 : 0, out[10];
		size_t n = 99;
		for (int64_t i = 0; !unbuffered && i < 4; i++)
			ASSERT_EQ(weft_chan_trysend(c, &i), 0);
		struct partner ps[3];
		pthread_t th[3] = {0}; /* joined only where thread[i] */
		bool thread[3] = {false, true, false};
		for (int i = 0; i < 3; i++)
			park_partner(&ps[i], c, true, base + (unbuffered ? i : 4 + i), thread[i],
			             &th[i]);
		size_t first = unbuffered ? 2 : 5;
		ASSERT_EQ(weft_chan_tryrecv_n(c, out, first, &n), 0);
		ASSERT_EQ(n, first);
		for (size_t i = 0; i < n; i++)
			ASSERT_EQ(out[i], base + (int64_t)i);
		ASSERT_EQ(weft_chan_len(c), unbuffered ? 0 : 2);
		ASSERT_EQ(weft_chan_tryrecv_n(c, out, 10, &n), 0);
		ASSERT_EQ(n, unbuffered ? 1 : 2);
		for (size_t i = 0; i < n; i++)
			ASSERT_EQ(out[i], base + (int64_t)(first + i));
		join_partners(ps, thread, th, 3, 0);
		out[0] = -7;
		batch_moves_none(c, false, out, EAGAIN);
		weft_chan_close(c);
		batch_moves_none(c, false, out, EPIPE);
		ASSERT_EQ(out[0], -7);
		weft_chan_release(c);
	}
}

/*
 * weft_chan_trysend_n sends a prefix, in order: with two parked receivers
 * (the second a pthread) on a cap-3 channel, six values 0..5 send five: 0
 * and 1 to the receivers in the order they parked, 2, 3, 4 into the buffer;
 * then nothing more goes (EAGAIN, *sent 0). Unbuffered, two receivers take
 * 0 and 1 of three. A closed channel is EPIPE. Guards: the buffer filled
 * while receivers are parked (they would wait with values buffered), a
 * count off by one, the values shifted or out of order, a receiver never
 * woken.
 */
TEST(batch_send_fills_receivers_then_buffer)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int unbuffered = 0; unbuffered < 2; unbuffered++) {
		weft_chan *c = make_chan(sizeof(int64_t), unbuffered ? 0 : 3);
		int64_t in[6] = {0, 1, 2, 3, 4, 5}, v;
		size_t sent = 99;
		struct partner ps[2];
		pthread_t th[2] = {0};
		bool thread[2] = {false, true};
		for (int i = 0; i < 2; i++)
			park_partner(&ps[i], c, false, -1, thread[i], &th[i]);
		size_t want = unbuffered ? 2 : 5;
		ASSERT_EQ(weft_chan_trysend_n(c, in, unbuffered ? 3 : 6, &sent), 0);
		ASSERT_EQ(sent, want);
		join_partners(ps, thread, th, 2, 0);
		ASSERT_EQ(ps[0].value, 0);
		ASSERT_EQ(ps[1].value, 1);
		ASSERT_EQ(weft_chan_len(c), want - 2);
		for (int64_t i = 2; i < (int64_t)want; i++) {
			ASSERT_EQ(weft_chan_tryrecv(c, &v), 0);
			ASSERT_EQ(v, i);
		}
		for (int i = 0; !unbuffered && i < 3; i++)
			ASSERT_EQ(weft_chan_trysend(c, &in[i]), 0);
		batch_moves_none(c, true, in, EAGAIN);
		weft_chan_close(c);
		batch_moves_none(c, true, in, EPIPE);
		weft_chan_release(c);
	}
}

/*
 * weft_chan_trysend_n on a closed channel whose buffer still has room is
 * EPIPE with *sent 0, as weft_chan_send is: nothing goes into the buffer,
 * and a receiver drains only what was sent before the close, then EPIPE.
 * Guards: the closed check skipped when the ring has room (the batch then
 * buffered values into a closed channel and reported success; the existing
 * checks close only full channels, where the ring refuses them anyway).
 */
TEST(batch_send_to_closed_channel_with_room)
{
	weft_chan *c = make_chan(sizeof(int64_t), 4);
	int64_t in[3] = {7, 8, 9}, v = 1;
	ASSERT_EQ(weft_chan_trysend(c, &v), 0);
	weft_chan_close(c);
	batch_moves_none(c, true, in, EPIPE);
	ASSERT_EQ(weft_chan_len(c), 1);
	ASSERT_EQ(weft_chan_recv(c, &v), 0);
	ASSERT_EQ(v, 1);
	v = -1;
	ASSERT_EQ(weft_chan_recv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	weft_chan_release(c);
}

/*
 * The batch forms' arguments: EINVAL for max or n 0, a NULL count, and
 * elements NULL with a nonzero size (the count is zeroed all the same);
 * EAGAIN for a NULL channel; a NULL out discards what it receives; a
 * zero-size channel needs no elements at all. Guards: a missing check (a
 * crash, or a batch of 0 reported as success).
 */
TEST(batch_arguments)
{
	weft_chan *c = make_chan(sizeof(int64_t), 4);
	weft_chan *z = make_chan(0, 8);
	int64_t v[4] = {1, 2, 3, 4};
	size_t n = 99;
	ASSERT_EQ(weft_chan_tryrecv_n(c, v, 0, &n), EINVAL);
	ASSERT_EQ(n, 0);
	ASSERT_EQ(weft_chan_tryrecv_n(c, v, 4, NULL), EINVAL);
	n = 99;
	ASSERT_EQ(weft_chan_trysend_n(c, v, 0, &n), EINVAL);
	ASSERT_EQ(n, 0);
	ASSERT_EQ(weft_chan_trysend_n(c, v, 4, NULL), EINVAL);
	n = 99;
	ASSERT_EQ(weft_chan_trysend_n(c, NULL, 4, &n), EINVAL);
	ASSERT_EQ(n, 0);
	ASSERT_EQ(weft_chan_len(c), 0);
	batch_moves_none(NULL, true, v, EAGAIN);
	batch_moves_none(NULL, false, v, EAGAIN);

	ASSERT_EQ(weft_chan_trysend_n(c, v, 3, &n), 0);
	ASSERT_EQ(n, 3);
	ASSERT_EQ(weft_chan_tryrecv_n(c, NULL, 2, &n), 0);
	ASSERT_EQ(n, 2);
	ASSERT_EQ(weft_chan_tryrecv(c, &v[0]), 0);
	ASSERT_EQ(v[0], 3);

	ASSERT_EQ(weft_chan_trysend_n(z, NULL, 10, &n), 0);
	ASSERT_EQ(n, 8);
	ASSERT_EQ(weft_chan_tryrecv_n(z, NULL, 5, &n), 0);
	ASSERT_EQ(n, 5);
	ASSERT_EQ(weft_chan_len(z), 3);
	weft_chan_release(c);
	weft_chan_release(z);
}

struct batch_selector {
	weft_chan *c, *never;
	int dir; /* of its case on c */
	int64_t value;
	int chosen, result;
	atomic_int started;
	weft_wg wg;
};

/* Select on [receive from never, dir on c]. */
static void select_on(void *arg)
{
	struct batch_selector *s = arg;
	int64_t dummy;
	weft_case cs[2] = {WEFT_RECV_CASE(s->never, &dummy),
	                   {.chan = s->c, .dir = s->dir, .elem = &s->value}};
	atomic_store(&s->started, 1);
	s->result = weft_select(cs, 2, &s->chosen);
	weft_wg_done(&s->wg);
}

/*
 * A select parked on a channel is completed by a batch like by a single
 * operation: on an unbuffered channel, a selecting sender (77) queued before
 * a plain one (78) gives 77, 78 to weft_chan_tryrecv_n, and the select
 * reports its case on c; a selecting receiver queued before a plain one gets
 * the first of weft_chan_trysend_n's values, the plain one the second.
 * Guards: a select's sudog completed without claiming its wait or without
 * the case that won, its value skipped or taken out of turn.
 */
TEST(batch_completes_select)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int dir = WEFT_SEND; dir >= WEFT_RECV; dir--) {
		struct batch_selector s = {.c = make_chan(sizeof(int64_t), 0),
		                           .never = make_chan(sizeof(int64_t), 0),
		                           .dir = dir,
		                           .value = dir == WEFT_SEND ? 77 : -1,
		                           .chosen = -1};
		weft_wg_add(&s.wg, 1);
		GO(select_on, &s);
		wait_parked(&s.started, 1);
		struct partner p;
		pthread_t th = 0;
		bool thread = false;
		park_partner(&p, s.c, dir == WEFT_SEND, 78, false, &th);
		int64_t v[3] = {5, 6, 7};
		size_t n = 0;
		if (dir == WEFT_SEND) {
			ASSERT_EQ(weft_chan_tryrecv_n(s.c, v, 3, &n), 0);
			ASSERT_EQ(n, 2);
			ASSERT_EQ(v[0], 77);
			ASSERT_EQ(v[1], 78);
		} else {
			ASSERT_EQ(weft_chan_trysend_n(s.c, v, 3, &n), 0);
			ASSERT_EQ(n, 2);
		}
		weft_wg_wait(&s.wg);
		join_partners(&p, &thread, &th, 1, 0);
		ASSERT_EQ(s.result, 0);
		ASSERT_EQ(s.chosen, 1);
		if (dir == WEFT_RECV) {
			ASSERT_EQ(s.value, 5);
			ASSERT_EQ(p.value, 6);
		}
		weft_chan_release(s.c);
		weft_chan_release(s.never);
	}
}

/*
 * A batch completes at most 32 parked partners, and while more are queued
 * it leaves the ring alone: 40 receivers parked on a cap-4 channel take 32
 * of 50 values, nothing is buffered, and the next call gives the other 8
 * theirs and buffers 4; 40 senders parked on a full cap-4 channel give 32
 * values to a receive of up to 50 (the ring stays full, refilled), and the
 * next call the remaining 12. Every value arrives once. Guards: a batch
 * that buffers values past parked receivers or drains the ring past parked
 * senders (the invariant single operations rely on), a wake list overrun.
 */
TEST(batch_serves_at_most_32_partners)
{
	enum { CROWD = 40 };
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int sends = 0; sends < 2; sends++) {
		weft_chan *c = make_chan(sizeof(int64_t), 4);
		struct partner ps[CROWD];
		pthread_t th[CROWD] = {0};
		bool thread[CROWD] = {false};
		int64_t v[64], seen = 0;
		size_t n = 0;
		for (int64_t i = 0; sends && i < 4; i++)
			ASSERT_EQ(weft_chan_trysend(c, &i), 0);
		for (int i = 0; i < CROWD; i++) {
			ps[i] = (struct partner){.c = c, .value = sends ? 4 + i : -1};
			weft_wg_add(&ps[i].wg, 1);
			GO(sends ? partner_send : partner_recv, &ps[i]);
		}
		for (int i = 0; i < CROWD; i++)
			wait_parked(&ps[i].started, 1);
		for (int64_t i = 0; i < 64; i++)
			v[i] = i;
		if (sends) {
			ASSERT_EQ(weft_chan_tryrecv_n(c, v, 50, &n), 0);
			ASSERT_EQ(n, 32);
			ASSERT_EQ(weft_chan_len(c), 4);
			ASSERT_EQ(weft_chan_tryrecv_n(c, v + 32, 50, &n), 0);
			ASSERT_EQ(n, 12);
		} else {
			ASSERT_EQ(weft_chan_trysend_n(c, v, 50, &n), 0);
			ASSERT_EQ(n, 32);
			ASSERT_EQ(weft_chan_len(c), 0);
			ASSERT_EQ(weft_chan_trysend_n(c, v + 32, 18, &n), 0);
			ASSERT_EQ(n, 12);
			ASSERT_EQ(weft_chan_len(c), 4);
		}
		join_partners(ps, thread, th, CROWD, 0);
		for (int i = 0; !sends && i < CROWD; i++)
			v[i] = ps[i].value; /* what the receivers got */
		for (int i = 0; i < (sends ? 44 : CROWD); i++)
			seen |= (int64_t)1 << v[i];
		ASSERT_EQ(seen, ((int64_t)1 << (sends ? 44 : CROWD)) - 1);
		weft_chan_release(c);
	}
}

/* The batch stress: producers send disjoint ranges of values, consumers
 * count each value seen. */
#define STRESS_PRODUCERS 4
#define STRESS_CONSUMERS 3

struct batch_stress {
	weft_chan *c;
	int64_t per;         /* values per producer */
	atomic_uchar *seen;  /* per value: times received */
	atomic_long batched; /* values moved by batch calls */
	atomic_int misorder; /* a batch with one producer's values out of order */
	weft_wg producers, consumers;
};

struct stress_role {
	struct batch_stress *s;
	int id;
	uint32_t seed;
};

/* Send [id * per, (id + 1) * per) in random chunks: trysend_n, then the
 * rest of the chunk one blocking send at a time. */
static void stress_produce(void *arg)
{
	struct stress_role *r = arg;
	struct batch_stress *s = r->s;
	int64_t buf[24];
	for (int64_t next = r->id * s->per, end = next + s->per; next < end;) {
		size_t n = 1 + test_rand32(&r->seed) % 24, sent = 0;
		if ((int64_t)n > end - next)
			n = (size_t)(end - next);
		for (size_t i = 0; i < n; i++)
			buf[i] = next + (int64_t)i;
		int e = weft_chan_trysend_n(s->c, buf, n, &sent);
		ASSERT(e == 0 || e == EAGAIN);
		atomic_fetch_add(&s->batched, (long)sent);
		for (size_t i = sent; i < n; i++)
			ASSERT_EQ(weft_chan_send(s->c, &buf[i]), 0);
		next += (int64_t)n;
	}
	weft_wg_done(&s->producers);
}

static void stress_count(struct batch_stress *s, const int64_t *v, size_t n)
{
	int64_t last[STRESS_PRODUCERS];
	for (int i = 0; i < STRESS_PRODUCERS; i++)
		last[i] = -1;
	for (size_t i = 0; i < n; i++) {
		ASSERT(v[i] >= 0 && v[i] < STRESS_PRODUCERS * s->per);
		int who = (int)(v[i] / s->per);
		if (v[i] <= last[who])
			atomic_store(&s->misorder, 1);
		last[who] = v[i];
		atomic_fetch_add(&s->seen[v[i]], 1);
	}
}

/* Receive until the channel is closed and drained: tryrecv_n of a random
 * size, else (nothing ready) a blocking receive or, now and then, a select
 * with a deadline of 20 us, whose timed-out case stays queued a moment as a
 * stale sudog for the others to skip. */
static void stress_consume(void *arg)
{
	struct stress_role *r = arg;
	struct batch_stress *s = r->s;
	weft_chan *never = make_chan(sizeof(int64_t), 0);
	int64_t buf[24];
	for (;;) {
		size_t max = 1 + test_rand32(&r->seed) % 24, n = 0;
		int e = weft_chan_tryrecv_n(s->c, buf, max, &n);
		if (e == 0) {
			atomic_fetch_add(&s->batched, (long)n);
			stress_count(s, buf, n);
			continue;
		}
		if (e == EPIPE)
			break;
		ASSERT_EQ(e, EAGAIN);
		if (test_rand32(&r->seed) % 4 == 0) {
			weft_case cs[2] = {WEFT_RECV_CASE(never, NULL), WEFT_RECV_CASE(s->c, buf)};
			int chosen;
			e = weft_select_until(cs, 2, &chosen, weft_now() + 20 * WEFT_MICROSECOND);
			if (e == ETIMEDOUT)
				continue;
		} else {
			e = weft_chan_recv(s->c, buf);
		}
		if (e == EPIPE)
			break;
		ASSERT_EQ(e, 0);
		stress_count(s, buf, 1);
	}
	weft_chan_release(never);
	weft_wg_done(&s->consumers);
}

static void batch_stress_run(size_t cap)
{
	struct batch_stress s = {.c = make_chan(sizeof(int64_t), cap),
	                         .per = TEST_SIZE(50000, 5000)};
	s.seen = calloc((size_t)(STRESS_PRODUCERS * s.per), 1);
	ASSERT(s.seen != NULL);
	struct stress_role roles[STRESS_PRODUCERS + STRESS_CONSUMERS];
	pthread_t th;
	weft_wg_add(&s.producers, STRESS_PRODUCERS);
	weft_wg_add(&s.consumers, STRESS_CONSUMERS);
	for (int i = 0; i < STRESS_PRODUCERS + STRESS_CONSUMERS; i++) {
		roles[i] = (struct stress_role){
			.s = &s, .id = i, .seed = 2463534242u + 7u * (uint32_t)i};
		if (i == 0)
			test_start_thread(&th, stress_produce, &roles[i]); /* a foreign one */
		else if (i < STRESS_PRODUCERS)
			GO(stress_produce, &roles[i]);
		else
			GO(stress_consume, &roles[i]);
	}
	weft_wg_wait(&s.producers);
	test_join_thread(th);
	weft_chan_close(s.c);
	weft_wg_wait(&s.consumers);
	for (int64_t v = 0; v < STRESS_PRODUCERS * s.per; v++)
		if (atomic_load(&s.seen[v]) != 1)
			FAIL("cap %zu: value %lld received %d times", cap, (long long)v,
			     atomic_load(&s.seen[v]));
	ASSERT_EQ(atomic_load(&s.misorder), 0);
	printf("    cap %zu: batch calls made %ld of the %lld sends and receives\n", cap,
	       atomic_load(&s.batched), (long long)(2 * STRESS_PRODUCERS * s.per));
	ASSERT_GT(atomic_load(&s.batched), 0);
	free(s.seen);
	weft_chan_release(s.c);
}

/*
 * Stress: 4 producers (one a pthread) send 50,000 values each in random
 * chunks with weft_chan_trysend_n, the rest of a chunk by blocking sends; 3
 * consumers take random batches with weft_chan_tryrecv_n, else block in a
 * receive or in a select with a 20 us deadline; through an unbuffered, a
 * cap-1 and a cap-64 channel on 2 Ps. Every value arrives exactly once, and
 * within one batch each producer's values are in increasing order. Guards:
 * a lost or repeated value (a ring index or count off by one, a partner
 * completed twice, a stale select case taken), a lost wake-up (hang), a
 * batch out of order.
 */
TEST(batch_stress_exactly_once)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	batch_stress_run(0);
	batch_stress_run(1);
	batch_stress_run(64);
}

/* ---------------------------------------------------------------- _until forms */

static void send_after_10ms(void *arg)
{
	struct partner *p = arg;
	weft_sleep(10 * TEST_MS);
	p->result = weft_chan_send(p->c, &p->value);
	weft_wg_done(&p->wg);
}

static void recv_after_10ms(void *arg)
{
	struct partner *p = arg;
	weft_sleep(10 * TEST_MS);
	p->result = weft_chan_recv(p->c, &p->value);
	weft_wg_done(&p->wg);
}

/* The _until checks on real channels, from a goroutine or a thread. */
static void until_checks(void)
{
	weft_chan *u = make_chan(sizeof(int64_t), 0);
	weft_chan *b = make_chan(sizeof(int64_t), 1);
	int64_t v = 1;

	/* Timeouts, on time: empty (recv) and full or unbuffered (send). */
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, recv_until_late(u)), 0, LATE_MS);
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, recv_until_late(b)), 0, LATE_MS);
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, send_until_late(u)), 0, LATE_MS);
	ASSERT_EQ(weft_chan_trysend(b, &v), 0);
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, send_until_late(b)), 0, LATE_MS);

	/* Nothing was sent by the timed-out sends, and no timed-out waiter
	 * is left behind to swallow a later value. */
	ASSERT_EQ(weft_chan_len(b), 1);
	ASSERT_EQ(weft_chan_tryrecv(b, &v), 0);
	ASSERT_EQ(v, 1);
	ASSERT_EQ(weft_chan_tryrecv(b, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(u, &v), EAGAIN);
	ASSERT_EQ(weft_chan_trysend(u, &v), EAGAIN);

	/* A past deadline: the try form, except for the error. */
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_chan_recv_until(b, &v, weft_now() - WEFT_SECOND), ETIMEDOUT);
	v = 9;
	ASSERT_EQ(weft_chan_send_until(b, &v, 0), 0);
	ASSERT_EQ(weft_chan_send_until(b, &v, INT64_MIN), ETIMEDOUT);
	v = 0;
	ASSERT_EQ(weft_chan_recv_until(b, &v, INT64_MIN), 0);
	ASSERT_EQ(v, 9);
	ASSERT_DURATION(test_now_ns() - t0, 0, 20);

	/* A partner before the deadline: success, well before it. */
	struct partner p = { .c = u, .value = 555 };
	weft_wg_add(&p.wg, 1);
	GO(send_after_10ms, &p);
	t0 = test_now_ns();
	v = 0;
	ASSERT_EQ(weft_chan_recv_until(u, &v, weft_now() + 10 * WEFT_SECOND), 0);
	ASSERT_LT(test_now_ns() - t0, 5 * WEFT_SECOND);
	ASSERT_EQ(v, 555);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);

	p.value = 0;
	weft_wg_add(&p.wg, 1);
	GO(recv_after_10ms, &p);
	v = 666;
	ASSERT_EQ(weft_chan_send_until(u, &v, weft_now() + 10 * WEFT_SECOND), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.value, 666);

	weft_chan_release(u);
	weft_chan_release(b);
}

/*
 * recv_until and send_until: ETIMEDOUT at the deadline (never early, at most
 * 10 ms late) with out untouched and nothing sent; no timed-out waiter stays
 * queued (a later try form finds no partner); a past deadline acts as the
 * try form; a partner arriving in time wins. From a goroutine and from a
 * foreign thread. Guards: the deadline read as a duration, a timeout that
 * leaves the waiter linked in the channel (a later value goes to a dead
 * waiter and is lost), a timed-out send that still delivers.
 */
TEST(until_forms)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	until_checks();
}

TEST_THREAD(until_forms_foreign)
{
	until_checks();
}

/* ---------------------------------------------------------------- references */

/* Allocate and free channels of the same size, so that memory freed too
 * early is reused (and written) before the test touches it again. */
static void churn_allocator(size_t elem_size, size_t cap)
{
	for (int i = 0; i < 64; i++) {
		weft_chan *c = make_chan(elem_size, cap);
		unsigned char junk[64];
		memset(junk, 0xCD, sizeof junk);
		if (cap)
			ASSERT_EQ(weft_chan_trysend(c, junk), 0);
		weft_chan_release(c);
	}
}

struct orphan {
	weft_chan *c; /* borrowed: the creator's only reference */
	int result;
	weft_wg wg;
};

static void recv_until_50ms(void *arg)
{
	struct orphan *o = arg;
	o->result = weft_chan_recv_until(o->c, NULL, weft_now() + 50 * TEST_MS);
	weft_wg_done(&o->wg);
}

/*
 * A channel whose creator released it while a goroutine and a pthread wait
 * on it still works: another holder (who retained it) closes it and both
 * waiters get EPIPE; the same with a value sent through the holder's
 * reference. A channel whose only reference is dropped while a goroutine
 * waits on it with a deadline stays valid until the wait times out, and is
 * freed then. retain/release pairs keep the channel alive; the last release
 * of a channel with buffered elements frees them (LeakSanitizer checks in
 * the ASan build). Guards: waiters that hold no reference (use after free,
 * seen by ASan or by the allocator churn in between), a channel freed by
 * nobody when its last waiter leaves (LeakSanitizer), a retain that does
 * not count.
 */
TEST(release_while_waiting)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct blocked b;
	b = (struct blocked){ .c = make_chan(sizeof(int64_t), 0) };
	weft_chan *holder = weft_chan_retain(b.c);
	ASSERT_PTR_EQ(holder, b.c);
	pthread_t th;
	weft_wg_add(&b.wg, 2);
	GO(blocked_recv, &b);
	test_start_thread(&th, blocked_recv, &b);
	wait_parked(&b.started, 2);
	weft_chan_release(b.c); /* the creator's reference */
	churn_allocator(sizeof(int64_t), 0);
	weft_chan_close(holder);
	weft_wg_wait(&b.wg);
	test_join_thread(th);
	ASSERT_EQ(atomic_load(&b.epipe), 2);
	weft_chan_release(holder);

	struct partner p = { .c = make_chan(sizeof(int64_t), 0), .value = -1 };
	holder = weft_chan_retain(p.c);
	weft_wg_add(&p.wg, 1);
	GO(partner_recv, &p);
	weft_sleep(20 * TEST_MS);
	weft_chan_release(p.c);
	churn_allocator(sizeof(int64_t), 0);
	int64_t v = 8080;
	ASSERT_EQ(weft_chan_send(holder, &v), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.value, 8080);
	weft_chan_release(holder);

	/* The only reference dropped while a goroutine waits with a deadline:
	 * its wait keeps the channel alive, and it frees it on timing out.
	 * Released only once the waiter has parked (the parks count rose). */
	weft_stats st;
	weft_stats_get(&st);
	int64_t parks0 = st.parks;
	struct orphan o = { make_chan(sizeof(int64_t), 0), -1, WEFT_WG_INIT };
	weft_wg_add(&o.wg, 1);
	GO(recv_until_50ms, &o);
	do {
		weft_sleep(TEST_MS);
		weft_stats_get(&st);
	} while (st.parks - parks0 < 1);
	weft_chan_release(o.c);
	churn_allocator(sizeof(int64_t), 0);
	weft_wg_wait(&o.wg);
	ASSERT_EQ(o.result, ETIMEDOUT);

	weft_chan *c = make_chan(32, 4);
	for (int i = 0; i < 3; i++)
		ASSERT_PTR_EQ(weft_chan_retain(c), c);
	for (int i = 0; i < 3; i++)
		weft_chan_release(c);
	churn_allocator(32, 4);
	unsigned char elem[32] = { 1, 2, 3 };
	ASSERT_EQ(weft_chan_trysend(c, elem), 0);
	ASSERT_EQ(weft_chan_trysend(c, elem), 0);
	ASSERT_EQ(weft_chan_len(c), 2);
	weft_chan_release(c); /* the last: frees the two buffered elements */
}

/* ---------------------------------------------------------------- dump */

/*
 * A goroutine parked in a receive shows in weft_dump with the wait reason
 * "chan receive" (DESIGN's example, as Go prints it). Guards: a channel
 * park with no reason (the dump says nothing useful about a hang).
 */
TEST(blocked_receiver_in_dump)
{
	struct partner p = { .c = make_chan(sizeof(int64_t), 0) };
	weft_wg_add(&p.wg, 1);
	GO(partner_recv, &p);
	weft_sleep(20 * TEST_MS);
	char *buf = test_dump();
	weft_chan_close(p.c);
	weft_wg_wait(&p.wg);
	ASSERT_CONTAINS(buf, "chan receive");
	free(buf);
	weft_chan_release(p.c);
}

/* ---------------------------------------------------------------- typed */

struct point {
	int32_t x, y;
	double z;
};

WEFT_CHAN_DEFINE(point_chan, struct point)

struct typed {
	point_chan c;
	weft_wg wg;
};

static void typed_sender(void *arg)
{
	struct typed *t = arg;
	for (int32_t i = 0; i < 100; i++)
		ASSERT_EQ(point_chan_send(t->c, (struct point){ i, -i, i * 0.5 }), 0);
	point_chan_close(t->c);
	weft_wg_done(&t->wg);
}

/*
 * WEFT_CHAN_DEFINE: make sets elem_size to sizeof(T); send/trysend take T by
 * value, recv/tryrecv/recv_until give T; close and release work; 100 structs
 * cross an unbuffered typed channel from a goroutine, then EPIPE with a
 * zeroed struct. Guards: a wrapper passing the wrong size or the address of
 * the wrong thing (it compiles, but values come out garbled).
 */
TEST(typed_wrapper)
{
	point_chan c;
	ASSERT_EQ(point_chan_make(&c, 2), 0);
	ASSERT_EQ(weft_chan_elem_size(c.raw), sizeof(struct point));
	ASSERT_EQ(weft_chan_cap(c.raw), 2);
	ASSERT_EQ(point_chan_send(c, (struct point){ 1, 2, 3.5 }), 0);
	ASSERT_EQ(point_chan_trysend(c, (struct point){ 4, 5, 6.25 }), 0);
	ASSERT_EQ(point_chan_trysend(c, (struct point){ 7, 8, 9 }), EAGAIN);
	struct point p = { 0 };
	ASSERT_EQ(point_chan_recv(c, &p), 0);
	ASSERT(p.x == 1 && p.y == 2 && p.z == 3.5);
	ASSERT_EQ(point_chan_tryrecv(c, &p), 0);
	ASSERT(p.x == 4 && p.y == 5 && p.z == 6.25);
	ASSERT_EQ(point_chan_tryrecv(c, &p), EAGAIN);
	ASSERT_EQ(point_chan_recv_until(c, &p, weft_now() + 5 * TEST_MS), ETIMEDOUT);
	ASSERT_EQ(point_chan_send_until(c, (struct point){ 10, 11, 12 }, weft_now()), 0);
	ASSERT_EQ(point_chan_send_until(c, (struct point){ 13, 14, 15 }, weft_now()), 0);
	ASSERT_EQ(point_chan_send_until(c, (struct point){ 16, 17, 18 }, weft_now()), ETIMEDOUT);
	/* Typed select cases: the ring is full, so only the receive is ready. */
	struct point in = { 20, 21, 22 }, got = { 0 };
	weft_case cs[] = { point_chan_send_case(c, &in), point_chan_recv_case(c, &got) };
	int chosen = -1;
	ASSERT_EQ(weft_select(cs, 2, &chosen), 0);
	ASSERT_EQ(chosen, 1);
	ASSERT(got.x == 10 && got.y == 11 && got.z == 12);
	ASSERT_EQ(weft_select(cs, 2, &chosen), 0); /* one slot free now: both ready */
	point_chan other = point_chan_retain(c);
	ASSERT(other.raw == c.raw);
	point_chan_release(other);
	point_chan_close(c);
	point_chan_release(c);

	/* Batches of T, on a ring of 2: of three, two go; they come back in
	 * order, with the third once there is room. */
	point_chan b;
	ASSERT_EQ(point_chan_make(&b, 2), 0);
	struct point three[3] = { { 30, 31, 32.5 }, { 33, 34, 35.25 }, { 36, 37, 38 } };
	struct point back[3] = { { 0 } };
	size_t k = 0;
	ASSERT_EQ(point_chan_trysend_n(b, three, 3, &k), 0);
	ASSERT_EQ(k, 2);
	ASSERT_EQ(point_chan_trysend_n(b, three + 2, 1, &k), EAGAIN);
	ASSERT_EQ(point_chan_tryrecv_n(b, back, 3, &k), 0);
	ASSERT_EQ(k, 2);
	ASSERT(back[0].x == 30 && back[0].y == 31 && back[0].z == 32.5);
	ASSERT(back[1].x == 33 && back[1].y == 34 && back[1].z == 35.25);
	ASSERT_EQ(point_chan_trysend_n(b, three + 2, 1, &k), 0);
	ASSERT_EQ(point_chan_tryrecv_n(b, back, 3, &k), 0);
	ASSERT_EQ(k, 1);
	ASSERT(back[0].x == 36 && back[0].y == 37 && back[0].z == 38);
	ASSERT_EQ(point_chan_tryrecv_n(b, back, 3, &k), EAGAIN);
	point_chan_release(b);

	/* The closer borrows our reference: keep it until close returns. */
	struct typed t = { .wg = WEFT_WG_INIT };
	ASSERT_EQ(point_chan_make(&t.c, 0), 0);
	weft_wg_add(&t.wg, 1);
	GO(typed_sender, &t);
	int32_t n = 0;
	while (point_chan_recv(t.c, &p) == 0) {
		ASSERT(p.x == n && p.y == -n && p.z == n * 0.5);
		n++;
	}
	ASSERT_EQ(n, 100);
	ASSERT(p.x == 0 && p.y == 0 && p.z == 0);
	weft_wg_wait(&t.wg);
	point_chan_release(t.c);
}


static void recv_until_then_done(void *arg)
{
	struct partner *p = arg;
	int v;
	int64_t deadline = weft_now() + 200 * TEST_MS * test_slowdown();
	atomic_store(&p->started, 1);
	p->result = weft_chan_recv_until(p->c, &v, deadline);
	weft_wg_done(&p->wg);
}

/*
 * weft_stats.channels counts channels alive: it goes up with each make and
 * back down with the last release, also for a channel orphaned while a
 * goroutine waits on it (freed by that waiter when it times out), and for
 * weft_after's.
 * Guards: a free path that does not count, a leak on the orphan path.
 */
TEST(stats_count_live_channels)
{
	int64_t base = live_channels();
	weft_chan *cs[8];
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(weft_chan_make(&cs[i], sizeof(int), (size_t)i), 0);
	ASSERT_EQ(live_channels(), base + 8);
	for (int i = 0; i < 8; i++)
		weft_chan_release(cs[i]);
	ASSERT_EQ(live_channels(), base);

	weft_chan *t;
	ASSERT_EQ(weft_after(&t, WEFT_MILLISECOND), 0);
	ASSERT_EQ(live_channels(), base + 1);
	weft_chan_release(t);
	ASSERT_EQ(live_channels(), base);

	struct partner p = {0};
	ASSERT_EQ(weft_chan_make(&p.c, sizeof(int), 0), 0);
	weft_wg_add(&p.wg, 1);
	ASSERT_EQ(weft_chan_retain(p.c), p.c); /* two references to drop */
	ASSERT_EQ(weft_go(recv_until_then_done, &p), 0);
	wait_parked(&p.started, 1);
	weft_chan *c = p.c;
	weft_chan_release(c);
	weft_chan_release(c); /* orphaned: the receiver is still parked */
	ASSERT_EQ(live_channels(), base + 1);
	weft_wg_wait(&p.wg); /* it times out and frees the channel */
	ASSERT_EQ(p.result, ETIMEDOUT);
	ASSERT_EQ(live_channels(), base);
}
