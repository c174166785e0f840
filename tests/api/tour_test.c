/* SPDX-License-Identifier: MIT */
/*
 * tour_test.c - the Go tour's channel programs, run as tests: ping-pong over
 * two unbuffered channels (every value checked on both sides), range over a
 * channel until close, the concurrent prime sieve (the first 100 primes
 * against trial division, then a clean shutdown of the whole pipeline), and
 * fan-in of two producers through one select with a time.After timeout (both
 * streams arrive complete and in order, and the timeout fires only once the
 * producers have gone quiet). examples/07_channels.c, 08_select.c and
 * 09_prime_sieve.c are the same programs written for reading.
 */
#include "test.h"

#include <errno.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- ping-pong */

struct rally {
	weft_chan *serve; /* main -> partner, unbuffered int64_t */
	weft_chan *ret;   /* partner -> main, unbuffered int64_t */
	int64_t hits;     /* values the partner saw; read after done */
	int64_t bad;      /* values out of sequence; read after done */
	weft_wg done;
};

static void partner(void *arg)
{
	struct rally *r = arg;
	int64_t v;

	while (weft_chan_recv(r->serve, &v) == 0) {
		if (v != 2 * r->hits)
			r->bad++;
		r->hits++;
		v++;
		ASSERT_EQ(weft_chan_send(r->ret, &v), 0);
	}
	weft_wg_done(&r->done);
}

/* Round trip i sends 2i and must get 2i+1 back; the partner must see 0, 2,
 * 4, ... in order, and the range must end with the close. */
static void rally(int64_t rounds)
{
	struct rally r = {.done = WEFT_WG_INIT};

	ASSERT_EQ(weft_chan_make(&r.serve, sizeof(int64_t), 0), 0);
	ASSERT_EQ(weft_chan_make(&r.ret, sizeof(int64_t), 0), 0);
	weft_wg_add(&r.done, 1);
	GO(partner, &r);
	for (int64_t i = 0; i < rounds; i++) {
		int64_t v = 2 * i;
		ASSERT_EQ(weft_chan_send(r.serve, &v), 0);
		ASSERT_EQ(weft_chan_recv(r.ret, &v), 0);
		ASSERT_EQ(v, 2 * i + 1);
	}
	weft_chan_close(r.serve);
	weft_wg_wait(&r.done);
	ASSERT_EQ(r.hits, rounds);
	ASSERT_EQ(r.bad, 0);
	weft_chan_release(r.serve);
	weft_chan_release(r.ret);
}

TEST(tour_ping_pong)
{
	rally(TEST_SIZE(20000, 2000));
}

/* One P: every hand-off is a switch between the two goroutines. */
TEST(tour_ping_pong_one_proc)
{
	int old;

	ASSERT_EQ(weft_set_procs(1, &old), 0);
	rally(TEST_SIZE(20000, 2000));
	ASSERT_EQ(weft_set_procs(old, NULL), 0);
}

/* ---------------------------------------------------------------- range and close */

static void fib_producer(void *arg)
{
	weft_chan *c = arg;
	int64_t x = 0, y = 1, t;

	for (int i = 0; i < 90; i++) {
		ASSERT_EQ(weft_chan_send(c, &x), 0);
		t = x + y;
		x = y;
		y = t;
	}
	weft_chan_close(c);
	weft_chan_release(c);
}

/* Go tour "Range and Close": 90 Fibonacci numbers through a channel with
 * room for 10; the receiver gets all of them, then EPIPE with a zeroed value,
 * and EPIPE again on every later receive. */
TEST(tour_range_close)
{
	weft_chan *c;
	int64_t v, a = 0, b = 1, t;
	int n = 0;

	ASSERT_EQ(weft_chan_make(&c, sizeof(int64_t), 10), 0);
	GO(fib_producer, weft_chan_retain(c));
	while (weft_chan_recv(c, &v) == 0) {
		ASSERT_EQ(v, a);
		t = a + b;
		a = b;
		b = t;
		n++;
	}
	ASSERT_EQ(n, 90);
	ASSERT_EQ(v, 0);
	v = 7;
	ASSERT_EQ(weft_chan_recv(c, &v), EPIPE);
	ASSERT_EQ(v, 0);
	weft_chan_release(c);
}

/* ---------------------------------------------------------------- prime sieve */

/* A stage of the sieve; prime 0 makes it the generator (2, 3, 4, ...). */
struct sieve_stage {
	weft_chan *in, *out; /* int64_t, unbuffered; in is NULL for the generator */
	weft_chan *quit;     /* closed by the test to stop the pipeline */
	int64_t prime;
	weft_wg *wg;
};

static void sieve_stage(void *arg)
{
	struct sieve_stage *s = arg;
	int64_t v = 1;
	int chosen, err;

	for (;;) {
		/* Next candidate: counting for the generator, from in for a filter. */
		if (s->prime == 0) {
			v++;
		} else {
			weft_case rc[] = {WEFT_RECV_CASE(s->in, &v), WEFT_RECV_CASE(s->quit, NULL)};
			err = weft_select(rc, 2, &chosen);
			ASSERT_EQ(err, chosen == 0 ? 0 : EPIPE);
			if (chosen == 1)
				break;
			if (v % s->prime == 0)
				continue;
		}
		weft_case sc[] = {WEFT_SEND_CASE(s->out, &v), WEFT_RECV_CASE(s->quit, NULL)};
		err = weft_select(sc, 2, &chosen);
		ASSERT_EQ(err, chosen == 0 ? 0 : EPIPE);
		if (chosen == 1)
			break;
	}
	weft_wg_done(s->wg);
}

static bool is_prime(int64_t n)
{
	if (n < 2)
		return false;
	for (int64_t d = 2; d * d <= n; d++)
		if (n % d == 0)
			return false;
	return true;
}

/* The first 100 primes out of a pipeline of 101 goroutines, each compared
 * with the next prime by trial division (the 100th is 541); then closing
 * quit must stop every stage, wherever it waits (the leak check after the
 * test counts them). */
TEST(tour_prime_sieve)
{
	enum { N = 100 };
	struct sieve_stage *st = calloc(N + 1, sizeof(*st));
	weft_wg wg = WEFT_WG_INIT;
	weft_chan *quit;
	int64_t p, want = 1;

	ASSERT(st != NULL);
	ASSERT_EQ(weft_chan_make(&quit, 0, 0), 0);
	for (int i = 0; i <= N; i++) {
		/* Stage i filters out the multiples of the i-th prime (stage 0
		 * generates); main then reads the next prime from its output. */
		st[i].in = i > 0 ? st[i - 1].out : NULL;
		st[i].quit = quit;
		st[i].wg = &wg;
		ASSERT_EQ(weft_chan_make(&st[i].out, sizeof(int64_t), 0), 0);
		weft_wg_add(&wg, 1);
		GO(sieve_stage, &st[i]);
		if (i == N)
			break;
		ASSERT_EQ(weft_chan_recv(st[i].out, &p), 0);
		do
			want++;
		while (!is_prime(want));
		ASSERT_EQ(p, want);
		st[i + 1].prime = p;
	}
	ASSERT_EQ(p, 541);
	weft_chan_close(quit);
	weft_wg_wait(&wg);
	for (int i = 0; i <= N; i++)
		weft_chan_release(st[i].out);
	weft_chan_release(quit);
	free(st);
}

/* ---------------------------------------------------------------- fan-in with timeout */

struct talker {
	int id, count;
	int64_t every_ns;
	weft_chan *out;  /* int64_t: id * 1000 + sequence number, unbuffered */
	weft_chan *quit; /* closed by the test after the timeout */
	weft_wg *wg;
};

static void talker(void *arg)
{
	struct talker *t = arg;

	for (int i = 1; i <= t->count; i++) {
		weft_sleep(t->every_ns);
		int64_t v = t->id * 1000 + i;
		ASSERT_EQ(weft_chan_send(t->out, &v), 0);
	}
	ASSERT_EQ(weft_chan_recv(t->quit, NULL), EPIPE); /* quiet until told */
	weft_wg_done(t->wg);
}

/*
 * Two producers (7 messages every 5 ms, 4 every 12 ms) merged by one select
 * whose third case is a fresh weft_after(TIMEOUT) each round (Go's
 * `case <-time.After(d)`). Every message must arrive, each stream in order,
 * before the first timeout; the timeout must then fire, not before timeout
 * after the last message. timeout is far above the producers' gaps, so that a
 * slow machine does not fire it early.
 */
TEST(tour_fanin_timeout)
{
	const int64_t timeout = 150 * TEST_MS * test_slowdown();
	struct talker tk[2] = {
		{.id = 1, .count = 7, .every_ns = 5 * TEST_MS},
		{.id = 2, .count = 4, .every_ns = 12 * TEST_MS},
	};
	weft_wg wg = WEFT_WG_INIT;
	weft_chan *quit;
	int got[2] = {0, 0}, chosen;
	int64_t v, fired_ns, last_msg_ns = 0;

	ASSERT_EQ(weft_chan_make(&quit, 0, 0), 0);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(weft_chan_make(&tk[i].out, sizeof(int64_t), 0), 0);
		tk[i].quit = quit;
		tk[i].wg = &wg;
		weft_wg_add(&wg, 1);
		GO(talker, &tk[i]);
	}
	for (;;) {
		weft_chan *after;

		ASSERT_EQ(weft_after(&after, timeout), 0);
		weft_case cs[] = {
			WEFT_RECV_CASE(tk[0].out, &v),
			WEFT_RECV_CASE(tk[1].out, &v),
			WEFT_RECV_CASE(after, &fired_ns),
		};
		ASSERT_EQ(weft_select(cs, 3, &chosen), 0);
		weft_chan_release(after);
		if (chosen == 2)
			break;
		ASSERT_EQ(v / 1000, chosen + 1);
		ASSERT_EQ(v % 1000, ++got[chosen]);
		last_msg_ns = weft_now();
	}
	ASSERT_EQ(got[0], 7);
	ASSERT_EQ(got[1], 4);
	/* The producers are quiet now, not gone: the timeout is what ended it. */
	ASSERT_EQ(weft_chan_tryrecv(tk[0].out, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(tk[1].out, &v), EAGAIN);
	weft_chan_close(quit);
	weft_wg_wait(&wg);
	ASSERT_GE(fired_ns - last_msg_ns, timeout);
	for (int i = 0; i < 2; i++)
		weft_chan_release(tk[i].out);
	weft_chan_release(quit);
}

/* The same select on 1 P, where main, both producers and the timers share
 * one thread. */
TEST(tour_fanin_timeout_one_proc)
{
	int old;

	ASSERT_EQ(weft_set_procs(1, &old), 0);
	test_tour_fanin_timeout();
	ASSERT_EQ(weft_set_procs(old, NULL), 0);
}
