/* SPDX-License-Identifier: MIT */
/*
 * 08_select.c - wait on several channels at once with weft_select() (Go's
 * select statement).
 *
 * A select lists cases, each a send or a receive on some channel, and does
 * whichever can proceed first (one at random when several can). weft writes
 * a case as weft_case {chan, dir, elem}; WEFT_RECV_CASE(c, &v) receives into
 * v. *chosen says which case happened.
 *
 * Three parts:
 *  1. fan-in with a timeout: two producers, one fast and one slow, send on
 *     their own channels; main merges both streams with one select. A third
 *     case is a weft_after() channel (Go's time.After), which receives a value
 *     once its time is up: when the producers go quiet for TIMEOUT, that case
 *     wins and main stops listening.
 *  2. a deadline: weft_select_until() is the same select with the timeout
 *     built in; it returns ETIMEDOUT when nothing happened in time.
 *  3. a default case: weft_select_try() never waits. When no case is ready it
 *     returns EAGAIN at once (Go's `default:`), so main can do other work and
 *     look again later.
 *
 * Run: ./08_select
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define TIMEOUT (250 * MS) /* silence that ends the fan-in */

/* What the producers send: who, and the how-manyth message. */
struct msg {
	int from;
	int seq;
};

struct producer {
	int id;
	int count;        /* messages to send */
	int64_t every_ns; /* pause before each */
	weft_chan *out;   /* its own channel of struct msg */
	weft_chan *quit;  /* closed by main when everyone may go home */
	weft_wg *wg;
};

void produce(void *arg)
{
	struct producer *p = arg;

	for (int i = 1; i <= p->count; i++) {
		weft_sleep(p->every_ns);
		struct msg m = {.from = p->id, .seq = i};
		weft_chan_send(p->out, &m);
	}
	/* Quiet from now on: wait until main closes quit (a receive on a closed
	 * channel returns EPIPE at once, for every receiver: a broadcast). */
	weft_chan_recv(p->quit, NULL);
	weft_wg_done(p->wg);
}

static int run(void *unused)
{
	enum { FAST = 0, SLOW = 1 };
	struct producer prod[2] = {
		{.id = FAST, .count = 5, .every_ns = 10 * MS},
		{.id = SLOW, .count = 3, .every_ns = 30 * MS},
	};
	weft_chan *quit;
	weft_wg wg = WEFT_WG_INIT;
	int got[2] = {0, 0}, in_order = 1, timed_out = 0;

	(void)unused;
	/* quit carries no values, only its closing: element size 0. */
	if (weft_chan_make(&quit, 0, 0) != 0)
		return 1;
	for (int i = 0; i < 2; i++) {
		if (weft_chan_make(&prod[i].out, sizeof(struct msg), 0) != 0)
			return 1;
		prod[i].quit = quit;
		prod[i].wg = &wg;
		weft_wg_add(&wg, 1);
		if (weft_go(produce, &prod[i]) != 0)
			return 1;
	}

	/* 1. Fan-in with a timeout. */
	printf("1. fan-in of a fast and a slow producer, until %lld ms of silence\n",
	       (long long)(TIMEOUT / MS));
	int64_t start = weft_now();
	while (!timed_out) {
		/* A fresh timeout per round, as Go's `case <-time.After(d):`.
		 * Releasing it unfired stops its timer: nothing leaks. */
		weft_chan *timeout;
		if (weft_after(&timeout, TIMEOUT) != 0)
			return 1;

		struct msg m;
		weft_case cases[] = {
			WEFT_RECV_CASE(prod[FAST].out, &m),
			WEFT_RECV_CASE(prod[SLOW].out, &m),
			WEFT_RECV_CASE(timeout, NULL),
		};
		int chosen;
		int err = weft_select(cases, 3, &chosen);
		if (err != 0) {
			fprintf(stderr, "weft_select: %s\n", strerror(err));
			return 1;
		}
		double at_ms = (weft_now() - start) / 1e6;
		if (chosen == 2) {
			printf("  %6.1f ms  timeout: the producers have gone quiet\n", at_ms);
			timed_out = 1;
		} else {
			printf("  %6.1f ms  message %d from the %s producer\n", at_ms, m.seq,
			       m.from == FAST ? "fast" : "slow");
			got[m.from]++;
			in_order &= m.seq == got[m.from]; /* each stream stays in order */
		}
		weft_chan_release(timeout);
	}

	/* 2. The same wait, as a deadline: nobody sends now. */
	struct msg m;
	weft_case cases[] = {
		WEFT_RECV_CASE(prod[FAST].out, &m),
		WEFT_RECV_CASE(prod[SLOW].out, &m),
	};
	int chosen;
	int64_t t0 = weft_now();
	int err = weft_select_until(cases, 2, &chosen, t0 + 30 * MS);
	int64_t waited = weft_now() - t0;
	printf("2. weft_select_until with a 30 ms deadline: %s after %.1f ms\n",
	       err == ETIMEDOUT ? "ETIMEDOUT" : strerror(err), waited / 1e6);
	int deadline_ok = err == ETIMEDOUT && waited >= 30 * MS;

	/* Let the producers go: closing quit wakes every receiver on it. */
	weft_chan_close(quit);
	weft_wg_wait(&wg);

	/* 3. A default case: a worker answers after 30 ms; main polls. */
	printf("3. polling with a default case while a worker computes\n");
	weft_chan *answer;
	if (weft_chan_make(&answer, sizeof(struct msg), 1) != 0)
		return 1;
	struct producer worker = {
		.id = 42, .count = 1, .every_ns = 30 * MS, .out = answer, .quit = quit, .wg = &wg};
	weft_wg_add(&wg, 1);
	if (weft_go(produce, &worker) != 0)
		return 1;
	int polls = 0;
	weft_case poll[] = {WEFT_RECV_CASE(answer, &m)};
	while ((err = weft_select_try(poll, 1, &chosen)) == EAGAIN) {
		/* Go: default: ... nothing is ready, do something else */
		polls++;
		weft_sleep(5 * MS);
	}
	printf("  the answer (%d) came after %d polls that found nothing\n", m.from, polls);
	int poll_ok = err == 0 && m.from == 42;
	weft_wg_wait(&wg); /* quit is closed already, so the worker ends at once */

	for (int i = 0; i < 2; i++)
		weft_chan_release(prod[i].out);
	weft_chan_release(answer);
	weft_chan_release(quit);

	printf("received %d from the fast producer (expected 5), %d from the slow one "
	       "(expected 3)\n",
	       got[FAST], got[SLOW]);
	if (got[FAST] != 5 || got[SLOW] != 3 || !in_order || !deadline_ok || !poll_ok) {
		fprintf(stderr, "wrong: counts %d/%d, in order %d, deadline %d, poll %d\n",
		        got[FAST], got[SLOW], in_order, deadline_ok, poll_ok);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
