/* SPDX-License-Identifier: MIT */
/*
 * chan.c - the channel and select cases: ChanPingPong, ChanBuffered,
 * ChanMPMC, Select2 and Select2Buffered (Go's benchPingPong, benchBuffered,
 * benchMPMC and benchSelect(0) / benchSelect(128)). Elements are int64_t, Go's
 * int. Each function does the Go version's work between the same two clock
 * readings: the same goroutines, capacities, WaitGroups and mutex, and the
 * same "range until close" loops (weft_chan_recv() returning EPIPE once the
 * channel is closed and drained is Go's end of a range).
 *
 * Two things Go's garbage collector does for free are spelled out here, both
 * outside the timed span or at the cost of one atomic operation:
 *  - A channel that a goroutine may still be inside a call on when the main
 *    goroutine drops its own reference (the goroutine's last send, or its
 *    close) is retained for that goroutine before the clock starts, next to
 *    the make, and released by the goroutine when it is done with it.
 *  - A goroutine that main does not join (Select2's senders, ChanBuffered's
 *    producer) copies its arguments into locals first, since main's frame may
 *    be gone by the time it returns.
 * The results that Go only feeds to its sink are also checked after the clock
 * stops, so a wrong channel cannot pass for a fast one.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

/* Keeps the sums alive, as the Go suite's sink does. */
static volatile int64_t chan_sink;

/* must_make - weft_chan_make() for int64_t elements, or abort (Go's make
 * cannot fail either). */
static weft_chan *must_make(size_t cap)
{
	weft_chan *c = NULL;
	int err = weft_chan_make(&c, sizeof(int64_t), cap);

	if (err != 0)
		bench_fatal("weft_chan_make: %s", strerror(err));
	return c;
}

/* must_send - weft_chan_send() of v; no channel here is closed while it is
 * sent on, so anything but 0 is a bug. */
static void must_send(weft_chan *c, int64_t v)
{
	int err = weft_chan_send(c, &v);

	if (err != 0)
		bench_fatal("weft_chan_send: %s", strerror(err));
}

/* ---------------------------------------------------------------- ChanPingPong */

struct pingpong {
	weft_chan *a, *b; /* main -> echo, echo -> main; unbuffered */
	weft_chan *done;  /* closed by echo when a is closed and drained */
};

/*
 * Go:  go func() { for v := range a { b <- v }; close(done) }()
 * The echo goroutine owns one reference to each channel (taken by main before
 * the start) and drops them when it is done. It copies its arguments first:
 * once done is closed, main's frame may be gone.
 */
static void pingpong_echo(void *p)
{
	const struct pingpong *s = p;
	weft_chan *a = s->a, *b = s->b, *done = s->done;
	int64_t v;

	while (weft_chan_recv(a, &v) == 0)
		must_send(b, v);
	weft_chan_close(done);
	weft_chan_release(a);
	weft_chan_release(b);
	weft_chan_release(done);
}

/* Go's benchPingPong: n round trips; the echo goroutine is started before the
 * clock and is shut down after it. n is any positive count (q = 1). */
int64_t bench_chan_pingpong(int64_t n)
{
	struct pingpong s;
	int64_t start, d, i, v;
	int err;

	s.a = must_make(0);
	s.b = must_make(0);
	err = weft_chan_make(&s.done, 0, 0); /* Go's chan struct{} */
	if (err != 0)
		bench_fatal("weft_chan_make: %s", strerror(err));
	weft_chan_retain(s.a);
	weft_chan_retain(s.b);
	weft_chan_retain(s.done);
	bench_go(pingpong_echo, &s);
	start = weft_now();
	for (i = 0; i < n; i++) {
		must_send(s.a, i);
		if (weft_chan_recv(s.b, &v) != 0 || v != i)
			bench_fatal("ChanPingPong: round trip %" PRId64 " came back wrong", i);
	}
	d = weft_now() - start;
	weft_chan_close(s.a);
	if (weft_chan_recv(s.done, NULL) != EPIPE)
		bench_fatal("ChanPingPong: done received a value");
	weft_chan_release(s.a);
	weft_chan_release(s.b);
	weft_chan_release(s.done);
	return d;
}

/* ---------------------------------------------------------------- ChanBuffered */

/* An unjoined sender of ChanBuffered and Select2. */
struct sender {
	weft_chan *c; /* the sender's own reference */
	int64_t n;    /* values to send: 0, 1, ..., n-1 */
	bool close_c; /* close c after the last one */
};

/*
 * Go, ChanBuffered:  go func() { for i := 0; i < n; i++ { c <- i }; close(c) }()
 * Go, Select2:       go func(c chan int) { for i := 0; i < n/2; i++ { c <- i } }(c)
 * Neither is joined, as in Go: main may return while this goroutine is still
 * in its last send or in weft_chan_close(), so it works from locals and its
 * own reference, taken by main next to the make.
 */
static void sender(void *p)
{
	const struct sender *a = p;
	weft_chan *c = a->c;
	int64_t n = a->n, i;
	bool close_c = a->close_c;

	for (i = 0; i < n; i++)
		must_send(c, i);
	if (close_c)
		weft_chan_close(c);
	weft_chan_release(c);
}

/* Go's benchBuffered: 1 producer, 1 consumer (main), capacity 128; the clock
 * covers the producer's start until main's range has ended. q = 1. */
int64_t bench_chan_buffered(int64_t n)
{
	struct sender s = {.c = must_make(128), .n = n, .close_c = true};
	int64_t start, d, v, sum = 0;

	weft_chan_retain(s.c); /* the producer's reference */
	start = weft_now();
	bench_go(sender, &s);
	while (weft_chan_recv(s.c, &v) == 0)
		sum += v;
	d = weft_now() - start;
	chan_sink += sum;
	if (sum != n * (n - 1) / 2)
		bench_fatal("ChanBuffered: sum %" PRId64 ", want %" PRId64, sum, n * (n - 1) / 2);
	weft_chan_release(s.c);
	return d;
}

/* ---------------------------------------------------------------- ChanMPMC */

#define MPMC_P 4
#define MPMC_C 4

struct mpmc {
	weft_chan *c;  /* capacity 128; closed by main after wp */
	int64_t per;   /* sends per producer: n / MPMC_P; read-only */
	weft_wg wp;    /* done once by each producer */
	weft_wg wc;    /* done once by each consumer */
	weft_mutex mu; /* guards total */
	int64_t total; /* guarded by mu */
};

/* Go:  go func() { for i := 0; i < n/P; i++ { c <- i }; wp.Done() }() */
static void mpmc_producer(void *p)
{
	struct mpmc *s = p;
	int64_t i;

	for (i = 0; i < s->per; i++)
		must_send(s->c, i);
	weft_wg_done(&s->wp);
}

/* Go:  go func() { cnt := 0; for range c { cnt++ }
 *                   mu.Lock(); total += cnt; mu.Unlock(); wc.Done() }() */
static void mpmc_consumer(void *p)
{
	struct mpmc *s = p;
	int64_t cnt = 0, v;

	while (weft_chan_recv(s->c, &v) == 0)
		cnt++;
	weft_mutex_lock(&s->mu);
	s->total += cnt;
	weft_mutex_unlock(&s->mu);
	weft_wg_done(&s->wc);
}

/* Go's benchMPMC: 4 producers, 4 consumers, capacity 128; the clock covers
 * the first spawn until every consumer has counted in. n is a multiple of 4.
 * Every goroutine's channel calls end before the WaitGroup main waits on, so
 * they borrow main's reference. */
int64_t bench_chan_mpmc(int64_t n)
{
	struct mpmc s = {.c = must_make(128),
	                 .per = n / MPMC_P,
	                 .wp = WEFT_WG_INIT,
	                 .wc = WEFT_WG_INIT,
	                 .mu = WEFT_MUTEX_INIT,
	                 .total = 0};
	int64_t start, d;
	int k;

	weft_wg_add(&s.wp, MPMC_P);
	weft_wg_add(&s.wc, MPMC_C);
	start = weft_now();
	for (k = 0; k < MPMC_P; k++)
		bench_go(mpmc_producer, &s);
	for (k = 0; k < MPMC_C; k++)
		bench_go(mpmc_consumer, &s);
	weft_wg_wait(&s.wp);
	weft_chan_close(s.c);
	weft_wg_wait(&s.wc);
	d = weft_now() - start;
	if (s.total != n)
		bench_fatal("ChanMPMC: count %" PRId64 ", want %" PRId64, s.total, n);
	weft_chan_release(s.c);
	return d;
}

/* ---------------------------------------------------------------- Select2 */

/*
 * Go's benchSelect(capacity): main does n two-case receive selects over c1
 * and c2, each channel fed n/2 values by its own sender; the clock covers the
 * senders' start until the last select. n is a multiple of 2.
 */
static int64_t select2(int64_t n, size_t capacity)
{
	weft_chan *c1 = must_make(capacity), *c2 = must_make(capacity);
	struct sender a[2] = {{.c = c1, .n = n / 2}, {.c = c2, .n = n / 2}};
	int64_t start, d, i, v, sum = 0;
	int k, chosen, err;

	weft_chan_retain(c1); /* the senders' references */
	weft_chan_retain(c2);
	start = weft_now();
	for (k = 0; k < 2; k++)
		bench_go(sender, &a[k]);
	for (i = 0; i < n; i++) {
		/* Go: select { case v := <-c1: s += v; case v := <-c2: s += v } */
		weft_case cs[2] = {WEFT_RECV_CASE(c1, &v), WEFT_RECV_CASE(c2, &v)};

		err = weft_select(cs, 2, &chosen);
		if (err != 0)
			bench_fatal("Select2: weft_select: %s", strerror(err));
		sum += v;
	}
	d = weft_now() - start;
	chan_sink += sum;
	if (sum != 2 * ((n / 2) * (n / 2 - 1) / 2))
		bench_fatal("Select2: sum %" PRId64 ", want %" PRId64, sum,
		            2 * ((n / 2) * (n / 2 - 1) / 2));
	weft_chan_release(c1);
	weft_chan_release(c2);
	return d;
}

/* Go's benchSelect(0). */
int64_t bench_select2(int64_t n)
{
	return select2(n, 0);
}

/* Go's benchSelect(128). */
int64_t bench_select2_buffered(int64_t n)
{
	return select2(n, 128);
}
