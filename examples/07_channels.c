/* SPDX-License-Identifier: MIT */
/*
 * 07_channels.c - pass values between goroutines with channels (Go's chan).
 *
 * "Do not communicate by sharing memory; share memory by communicating." A
 * channel is a typed pipe between goroutines: weft_chan_send() puts a value
 * in, weft_chan_recv() takes one out, and each waits (parks the goroutine)
 * until the other side is ready. A weft channel carries elements of a fixed
 * size in bytes, chosen by weft_chan_make(); values are copied in and out.
 *
 * Three parts, as in the Go tour:
 *  1. ping-pong: two goroutines hit a ball back and forth over two unbuffered
 *     channels. Unbuffered means a send waits until a receiver takes the
 *     value, so each hand-off is also a meeting point.
 *  2. a buffered channel: a send waits only when the buffer is full, and a
 *     receive only when it is empty. Values come out in the order they went in.
 *  3. range and close: a producer closes its channel when it has nothing more
 *     to say. The receiver still gets every value sent before the close, then
 *     EPIPE: that is Go's `for v := range c`.
 *
 * A channel is reference counted: weft_chan_make() gives you one reference,
 * weft_chan_release() drops it, and the last release frees the channel.
 * Closing ("no more values") is not freeing.
 *
 * Run: ./07_channels
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define RALLY 10 /* hits in the ping-pong rally */

/* ---------------------------------------------------------------- 1. ping-pong */

struct table {
	weft_chan *to_pong; /* ping -> pong, unbuffered */
	weft_chan *to_ping; /* pong -> ping, unbuffered */
	weft_wg done;
};

/* The ball is a counter: each player adds one before hitting it back. */
void pong(void *arg)
{
	struct table *t = arg;
	int64_t ball;

	/* Receive until ping closes its channel: EPIPE ends the loop. */
	while (weft_chan_recv(t->to_pong, &ball) == 0) {
		ball++;
		printf("  pong got %2lld, hits back %2lld\n", (long long)ball - 1, (long long)ball);
		weft_chan_send(t->to_ping, &ball);
	}
	weft_wg_done(&t->done);
}

static int ping_pong(void)
{
	struct table t = {.done = WEFT_WG_INIT};
	int64_t ball = 0;
	int ok = 1;

	printf("1. ping-pong over two unbuffered channels\n");
	/* Elements are int64_t; capacity 0 makes the channels unbuffered. */
	if (weft_chan_make(&t.to_pong, sizeof(int64_t), 0) != 0 ||
	    weft_chan_make(&t.to_ping, sizeof(int64_t), 0) != 0)
		return 0;
	weft_wg_add(&t.done, 1);
	if (weft_go(pong, &t) != 0)
		return 0;

	for (int i = 0; i < RALLY; i++) {
		weft_chan_send(t.to_pong, &ball); /* waits until pong takes it */
		weft_chan_recv(t.to_ping, &ball); /* waits until pong hits back */
		ball++;
		if (ball != 2 * (i + 1))
			ok = 0;
	}
	printf("  after %d rounds the ball reads %lld (expected %d)\n", RALLY, (long long)ball,
	       2 * RALLY);
	weft_chan_close(t.to_pong); /* game over: pong's receive returns EPIPE */
	weft_wg_wait(&t.done);
	weft_chan_release(t.to_pong);
	weft_chan_release(t.to_ping);
	return ok && ball == 2 * RALLY;
}

/* ---------------------------------------------------------------- 2. buffered */

static int buffered(void)
{
	weft_chan *c;
	int64_t v;
	int ok = 1;

	printf("2. a buffered channel with room for 3\n");
	if (weft_chan_make(&c, sizeof(int64_t), 3) != 0)
		return 0;
	/* Three sends fit in the buffer: no receiver is needed yet. */
	for (v = 1; v <= 3; v++)
		weft_chan_send(c, &v);
	printf("  sent 1, 2, 3 without waiting: len %zu, cap %zu\n", weft_chan_len(c),
	       weft_chan_cap(c));
	ok &= weft_chan_len(c) == 3 && weft_chan_cap(c) == 3;

	/* A fourth would wait for a receiver. The try form says so instead. */
	v = 4;
	int err = weft_chan_trysend(c, &v);
	printf("  a fourth send would wait: weft_chan_trysend returns %s\n",
	       err == EAGAIN ? "EAGAIN" : strerror(err));
	ok &= err == EAGAIN;

	/* First in, first out. */
	for (int64_t want = 1; want <= 3; want++) {
		weft_chan_recv(c, &v);
		printf("  received %lld\n", (long long)v);
		ok &= v == want;
	}
	ok &= weft_chan_tryrecv(c, &v) == EAGAIN; /* empty now */
	weft_chan_release(c);
	return ok;
}

/* ---------------------------------------------------------------- 3. range and close */

#define FIBS 10

/* Go tour: func fibonacci(n int, c chan int) { ...; close(c) } */
void fibonacci(void *arg)
{
	weft_chan *c = arg;
	int64_t x = 0, y = 1;

	for (int i = 0; i < FIBS; i++) {
		weft_chan_send(c, &x);
		int64_t next = x + y;
		x = y;
		y = next;
	}
	weft_chan_close(c);   /* only the sender closes, and only to say "done" */
	weft_chan_release(c); /* the producer's own reference, see below */
}

static int range_and_close(void)
{
	static const int64_t want[FIBS] = {0, 1, 1, 2, 3, 5, 8, 13, 21, 34};
	weft_chan *c;
	int64_t v;
	int n = 0, ok = 1;

	printf("3. range over a channel until it is closed\n");
	if (weft_chan_make(&c, sizeof(int64_t), FIBS) != 0)
		return 0;
	/* The producer may still be inside weft_chan_close() when our loop ends
	 * and we release c, so it gets a reference of its own, which it drops
	 * when it is done. */
	weft_chan_retain(c);
	if (weft_go(fibonacci, c) != 0)
		return 0;

	/* Go: for v := range c { ... } */
	printf("  ");
	while (weft_chan_recv(c, &v) == 0) {
		printf("%lld ", (long long)v);
		ok &= n < FIBS && v == want[n];
		n++;
	}
	printf("(closed after %d values)\n", n);
	weft_chan_release(c);
	return ok && n == FIBS;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = ping_pong();
	int ok2 = buffered();
	int ok3 = range_and_close();

	if (!(ok1 && ok2 && ok3)) {
		fprintf(stderr, "wrong: ping-pong %s, buffered %s, range %s\n",
		        ok1 ? "ok" : "FAILED", ok2 ? "ok" : "FAILED", ok3 ? "ok" : "FAILED");
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
