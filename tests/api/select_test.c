/* SPDX-License-Identifier: MIT */
/*
 * select_test.c - weft_select, weft_select_try and weft_select_until against
 * Go's select: the ready case is taken and no other; a uniform random choice
 * among ready cases (statistical tests with a stated false-failure bound);
 * nil-only and empty selects (try: EAGAIN, until: ETIMEDOUT on time,
 * blocking: forever, seen by the deadlock detector); a channel in both a send
 * and a receive case of one select never matches itself; closed channels
 * (EPIPE with the chosen index, receive elements zeroed); a parked select
 * woken by a sender, a receiver or close on another P or thread, exactly once,
 * leaving no waiter behind on its other channels; many goroutines and threads
 * selecting over the same channels in different orders (no deadlock, every
 * value accounted for); more than 64 cases; EINVAL.
 *
 * Lateness tolerance for select_until: 10 ms (x test_slowdown()), best of 3,
 * as in time_test.c.
 */
#include "test.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LATE_MS 10
#define LATE_BOUND (LATE_MS * TEST_MS * test_slowdown())
#define DEADLOCK_MSG "fatal error: all goroutines are asleep - deadlock!"
#define CHILD_TIMEOUT_MS 2000
/* A far deadline: select_until that must not time out. */
#define FAR (weft_now() + 60 * WEFT_SECOND)

static weft_chan *make_chan(size_t elem_size, size_t cap)
{
	weft_chan *c = NULL;
	ASSERT_EQ(weft_chan_make(&c, elem_size, cap), 0);
	return c;
}

/* A cap-1 channel of int64_t holding v. */
static weft_chan *full_chan(int64_t v)
{
	weft_chan *c = make_chan(sizeof(int64_t), 1);
	ASSERT_EQ(weft_chan_trysend(c, &v), 0);
	return c;
}

/* ---------------------------------------------------------------- the ready case */

/* One select of the given kind: 0 blocking, 1 try, 2 until (far). */
static int select_kind(int kind, const weft_case *cs, int n, int *chosen)
{
	switch (kind) {
	case 0:
		return weft_select(cs, n, chosen);
	case 1:
		return weft_select_try(cs, n, chosen);
	default:
		return weft_select_until(cs, n, chosen, FAR);
	}
}

/*
 * With exactly one case ready, every form takes it and touches nothing else:
 * a receive case gets the value (the other receive elements are untouched),
 * or a send case sends (the other send cases send nothing), whatever its
 * position. Guards: a select that performs more than one case, takes a
 * not-ready case, or copies into the wrong element.
 */
TEST(ready_case_taken_alone)
{
	for (int kind = 0; kind < 3; kind++) {
		for (int pos = 0; pos < 4; pos++) {
			weft_chan *empty = make_chan(sizeof(int64_t), 1);
			weft_chan *full = full_chan(11);
			weft_chan *ready = full_chan(42);
			int64_t e = -1, r = -1, s = 99;
			weft_case cs[4] = { WEFT_RECV_CASE(empty, &e), WEFT_SEND_CASE(full, &s),
					    WEFT_RECV_CASE(NULL, &e), WEFT_RECV_CASE(ready, &r) };
			/* Put the ready case at position pos. */
			weft_case tmp = cs[pos];
			cs[pos] = cs[3];
			cs[3] = tmp;
			int chosen = -1;
			ASSERT_EQ(select_kind(kind, cs, 4, &chosen), 0);
			ASSERT_EQ(chosen, pos);
			ASSERT_EQ(r, 42);
			ASSERT_EQ(e, -1);
			ASSERT_EQ(weft_chan_len(empty), 0);
			ASSERT_EQ(weft_chan_len(full), 1);
			ASSERT_EQ(weft_chan_tryrecv(full, &s), 0);
			ASSERT_EQ(s, 11);
			ASSERT_EQ(weft_chan_len(ready), 0);

			/* Now only a send case is ready. */
			s = 77;
			weft_case cs2[3] = { WEFT_RECV_CASE(ready, &r), WEFT_SEND_CASE(empty, &s),
					     WEFT_SEND_CASE(NULL, &s) };
			ASSERT_EQ(select_kind(kind, cs2, 3, &chosen), 0);
			ASSERT_EQ(chosen, 1);
			s = 0;
			ASSERT_EQ(weft_chan_tryrecv(empty, &s), 0);
			ASSERT_EQ(s, 77);
			weft_chan_release(empty);
			weft_chan_release(full);
			weft_chan_release(ready);
		}
	}
}

/* ---------------------------------------------------------------- fairness */

/*
 * The statistics. Under a uniform choice between two always-ready cases, the
 * number of times case 0 is chosen in N selects is Binomial(N, 1/2): mean
 * N/2, standard deviation sqrt(N/4) (158.1 for N = 100,000; 70.7 for N =
 * 20,000 in quick mode). A test fails when |count - N/2| > 5.5 sd (869.6 and
 * 388.9). By the normal approximation P(|Z| > 5.5) = 3.80e-8; summing the
 * binomial exactly gives 3.81e-8 at N = 100,000 and 3.91e-8 at N = 20,000.
 * The same bound applies to the number of selects that chose the same case
 * as the one before (Binomial(N - 1, 1/2) when choices are independent),
 * which catches a round-robin "random" choice that would pass the count.
 *
 * For k = 4 ready cases, Pearson's X^2 = sum (O_i - N/4)^2 / (N/4) is
 * chi-square with 3 degrees of freedom; for 3 df P(X^2 > x) = erfc(sqrt(x/2))
 * + sqrt(2x/pi) e^(-x/2), whose 1e-7 point is x = 35.41. The test fails
 * when X^2 > 36.0 (P = 7.5e-8; with 25,000 or 5,000 expected per cell the
 * approximation is accurate).
 *
 * The file makes five such checks (two counts and a repeat count at k = 2,
 * one X^2 at k = 4, one count with never-ready cases in between), so a
 * correct runtime fails one with probability below 5 x 3.91e-8 + 7.5e-8 =
 * 2.7e-7 < 1e-6 per run. Power: at N = 100,000 a bias of 1% (51/49) is a
 * 6.3 sd deviation, and a "random start, then scan forward" choice (75/25
 * in fairness_ignores_position) is over 150 sd.
 */
#define FAIR_Z 5.5
#define FAIR_CHI2_3DF 36.0

static long fair_n(void)
{
	return TEST_SIZE(100000, 20000);
}

static void assert_binomial_half(const char *what, long count, long n)
{
	double sd = sqrt((double)n / 4.0);
	double dev = fabs((double)count - (double)n / 2.0);
	printf("    %s: %ld of %ld (%.2f sd)\n", what, count, n, dev / sd);
	if (dev > FAIR_Z * sd)
		FAIL("%s: %ld of %ld, %.2f sd from n/2 (bound %.1f sd)", what, count, n,
		     dev / sd, FAIR_Z);
}

/*
 * Run n selects over cs (alternating the three forms), keeping every ready
 * case ready: a receive that got a value puts one back, a send that sent
 * takes it out again; EPIPE (closed channels) needs nothing. counts[i] gets
 * the choices of case i; returns how many selects repeated the previous
 * choice.
 */
static long count_choices(const weft_case *cs, int ncases, long n, long *counts)
{
	long repeats = 0;
	int prev = -1;
	for (int i = 0; i < ncases; i++)
		counts[i] = 0;
	for (long i = 0; i < n; i++) {
		int chosen = -1;
		int r = select_kind((int)(i % 3), cs, ncases, &chosen);
		ASSERT(chosen >= 0 && chosen < ncases);
		const weft_case *c = &cs[chosen];
		if (r == 0 && c->dir == WEFT_RECV)
			ASSERT_EQ(weft_chan_trysend(c->chan, c->elem), 0);
		else if (r == 0)
			ASSERT_EQ(weft_chan_tryrecv(c->chan, NULL), 0);
		else
			ASSERT_EQ(r, EPIPE);
		counts[chosen]++;
		repeats += chosen == prev;
		prev = chosen;
	}
	return repeats;
}

/*
 * Two receive cases on cap-1 channels kept full: each is chosen half the
 * time within 5.5 sd, and consecutive choices are independent (repeats
 * half the time within 5.5 sd). Guards: always the first (or last) ready
 * case, a biased random choice, a deterministic alternation.
 */
TEST(fairness_two_ready_cases)
{
	weft_chan *a = full_chan(1), *b = full_chan(2);
	int64_t va = 0, vb = 0;
	weft_case cs[2] = { WEFT_RECV_CASE(a, &va), WEFT_RECV_CASE(b, &vb) };
	long counts[2], n = fair_n();
	long repeats = count_choices(cs, 2, n, counts);
	assert_binomial_half("case 0 chosen", counts[0], n);
	assert_binomial_half("same case as the select before", repeats, n - 1);
	weft_chan_release(a);
	weft_chan_release(b);
}

/*
 * Two ready cases with never-ready cases between them (a nil channel and an
 * empty one): still half and half. Guards: choosing a random start index and
 * scanning forward to the first ready case, which favours the case after the
 * gap (3 to 1 here), as Go avoids with a random permutation.
 */
TEST(fairness_ignores_position)
{
	weft_chan *a = full_chan(1), *b = full_chan(2), *empty = make_chan(sizeof(int64_t), 1);
	int64_t va = 0, vb = 0, ve = 0;
	weft_case cs[4] = { WEFT_RECV_CASE(a, &va), WEFT_RECV_CASE(NULL, &ve),
			    WEFT_RECV_CASE(empty, &ve), WEFT_RECV_CASE(b, &vb) };
	long counts[4], n = fair_n();
	count_choices(cs, 4, n, counts);
	ASSERT_EQ(counts[1], 0);
	ASSERT_EQ(counts[2], 0);
	assert_binomial_half("case 0 of {ready, nil, empty, ready}", counts[0], n);
	weft_chan_release(a);
	weft_chan_release(b);
	weft_chan_release(empty);
}

/*
 * Four always-ready cases of every kind: a receive on a full channel, a
 * send on an empty one, and receives on two closed channels (EPIPE): X^2
 * over the four counts below 36.0 (see above). Guards: closed channels or
 * send cases favoured by the ready scan (e.g. a first pass that only looks
 * for closed channels), a choice that is uniform only for two cases.
 */
TEST(fairness_four_mixed_cases)
{
	weft_chan *full = full_chan(1), *space = make_chan(sizeof(int64_t), 1);
	weft_chan *closed1 = make_chan(sizeof(int64_t), 0), *closed2 = make_chan(0, 3);
	weft_chan_close(closed1);
	weft_chan_close(closed2);
	int64_t v1 = 0, v2 = 5, v3 = 0;
	weft_case cs[4] = { WEFT_RECV_CASE(full, &v1), WEFT_SEND_CASE(space, &v2),
			    WEFT_RECV_CASE(closed1, &v3), WEFT_RECV_CASE(closed2, NULL) };
	long counts[4], n = fair_n();
	count_choices(cs, 4, n, counts);
	double expected = (double)n / 4.0, chi2 = 0;
	for (int i = 0; i < 4; i++)
		chi2 += ((double)counts[i] - expected) * ((double)counts[i] - expected) / expected;
	printf("    counts %ld %ld %ld %ld of %ld: X^2 = %.2f\n", counts[0], counts[1],
	       counts[2], counts[3], n, chi2);
	if (chi2 > FAIR_CHI2_3DF)
		FAIL("X^2 = %.2f > %.1f: counts %ld %ld %ld %ld", chi2, FAIR_CHI2_3DF,
		     counts[0], counts[1], counts[2], counts[3]);
	weft_chan_release(full);
	weft_chan_release(space);
	weft_chan_release(closed1);
	weft_chan_release(closed2);
}

/* ---------------------------------------------------------------- nil and empty */

/*
 * A select whose channels are all NULL, or that has no cases: the try form
 * says EAGAIN, *chosen untouched. Guards: a NULL case treated as ready or
 * closed, a crash on n == 0 with cases NULL.
 */
TEST(nil_only_select_try)
{
	int64_t v = 3;
	weft_case cs[3] = { WEFT_RECV_CASE(NULL, &v), WEFT_SEND_CASE(NULL, &v),
			    WEFT_RECV_CASE(NULL, NULL) };
	int chosen = -7;
	ASSERT_EQ(weft_select_try(cs, 3, &chosen), EAGAIN);
	ASSERT_EQ(chosen, -7);
	ASSERT_EQ(v, 3);
	ASSERT_EQ(weft_select_try(cs, 0, &chosen), EAGAIN);
	ASSERT_EQ(weft_select_try(NULL, 0, &chosen), EAGAIN);
	ASSERT_EQ(chosen, -7);
}

static const weft_case *until_cases; /* for select_until_late */
static int until_n;

/* select_until on until_cases with a 30 ms deadline: must time out, not
 * early, *chosen untouched; returns the lateness. */
static int64_t select_until_late(void)
{
	int chosen = -7;
	int64_t d = weft_now() + 30 * TEST_MS;
	ASSERT_EQ(weft_select_until(until_cases, until_n, &chosen, d), ETIMEDOUT);
	int64_t n = weft_now();
	ASSERT_GE(n, d);
	ASSERT_EQ(chosen, -7);
	return n - d;
}

static void nil_until_checks(void)
{
	int64_t v = 3;
	weft_case cs[2] = { WEFT_RECV_CASE(NULL, &v), WEFT_SEND_CASE(NULL, &v) };
	until_cases = cs;
	until_n = 2;
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, select_until_late()), 0, LATE_MS);
	until_n = 0;
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, select_until_late()), 0, LATE_MS);
	int chosen = -7;
	int64_t t0 = test_now_ns();
	ASSERT_EQ(weft_select_until(cs, 2, &chosen, weft_now() - TEST_MS), ETIMEDOUT);
	ASSERT_EQ(weft_select_until(NULL, 0, &chosen, INT64_MIN), ETIMEDOUT);
	ASSERT_DURATION(test_now_ns() - t0, 0, 20);
	ASSERT_EQ(chosen, -7);
	ASSERT_EQ(v, 3);
}

/*
 * select_until over nil channels only, or no cases, waits for the deadline:
 * ETIMEDOUT, not early, at most 10 ms late; a past deadline returns at once.
 * From a goroutine and a foreign thread. Guards: an early EAGAIN (no wait),
 * a wait that never ends because no channel can wake it.
 */
TEST(nil_only_select_until)
{
	nil_until_checks();
}

TEST_THREAD(nil_only_select_until_foreign)
{
	nil_until_checks();
}

static atomic_int empty_returned, nil_returned;

static void select_no_cases(void *arg)
{
	(void)arg;
	int chosen;
	weft_select(NULL, 0, &chosen);
	atomic_store(&empty_returned, 1);
}

static void select_nil_cases(void *arg)
{
	(void)arg;
	int chosen;
	weft_case cs[2] = { WEFT_RECV_CASE(NULL, NULL), WEFT_SEND_CASE(NULL, NULL) };
	weft_select(cs, 2, &chosen);
	atomic_store(&nil_returned, 1);
}

static int select_forever_main(void *arg)
{
	(void)arg;
	GO(select_no_cases, NULL);
	GO(select_nil_cases, NULL);
	weft_sleep(50 * TEST_MS);
	printf("returned: empty=%d nil=%d\n", atomic_load(&empty_returned),
	       atomic_load(&nil_returned));
	return 0;
}

CHILD(select_blocks_forever)
{
	return weft_main(select_forever_main, NULL);
}

static int select_deadlock_main(void *arg)
{
	if (arg)
		select_no_cases(NULL);
	else
		select_nil_cases(NULL);
	printf("main returned\n");
	return 0;
}

CHILD(select_empty_deadlock)
{
	return weft_main(select_deadlock_main, (void *)1);
}

CHILD(select_nil_deadlock)
{
	return weft_main(select_deadlock_main, NULL);
}

/*
 * A blocking select with no cases (Go's `select {}`) or only nil channels
 * blocks forever: two goroutines are still inside after 50 ms; and when it
 * is the only goroutine, the runtime reports the deadlock (exit status 2).
 * In child processes, since the blocked goroutines never end. Guards: an
 * empty select that returns (EAGAIN, EINVAL), or parks in a way the
 * deadlock detector cannot see.
 */
TEST_THREAD(nil_only_select_blocks_forever)
{
	test_child c;
	test_child_run("select_blocks_forever", NULL, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "returned: empty=0 nil=0");
	test_child_free(&c);
	const char *deadlocks[] = { "select_empty_deadlock", "select_nil_deadlock" };
	for (int i = 0; i < 2; i++) {
		test_child_run(deadlocks[i], NULL, CHILD_TIMEOUT_MS, &c);
		ASSERT_CHILD_EXIT(&c, 2);
		ASSERT_CONTAINS(c.err, DEADLOCK_MSG);
		ASSERT_NOT_CONTAINS(c.out, "main returned");
		test_child_free(&c);
	}
}

/* ---------------------------------------------------------------- one channel, both ways */

struct self_select {
	weft_chan *c;
	bool send_first; /* case order: send case at index 0 */
	int64_t out;     /* the send case's element */
	int64_t in;      /* the receive case's element */
	int chosen;
	int result;
	atomic_int started;
	weft_wg wg;
};

static void self_cases(struct self_select *s, weft_case cs[2])
{
	weft_case snd = WEFT_SEND_CASE(s->c, &s->out), rcv = WEFT_RECV_CASE(s->c, &s->in);
	cs[0] = s->send_first ? snd : rcv;
	cs[1] = s->send_first ? rcv : snd;
}

static void select_self(void *arg)
{
	struct self_select *s = arg;
	weft_case cs[2];
	self_cases(s, cs);
	atomic_store(&s->started, 1);
	s->result = weft_select(cs, 2, &s->chosen);
	weft_wg_done(&s->wg);
}

/*
 * One unbuffered channel in a send case and a receive case of the same
 * select, in both orders. Alone, the select never matches its own send with
 * its own receive: the try form says EAGAIN, the until form times out, and a
 * parked select stays parked (30 ms). With a partner goroutine, both
 * directions work: a partner's receive takes the select's send, a partner's
 * send fills its receive. Guards: a select that hands a value to itself
 * (returns 0 alone), or that finds its own waiter queued on the channel when
 * a partner arrives and wakes itself twice.
 */
TEST(same_channel_send_and_recv_unbuffered)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	for (int order = 0; order < 2; order++) {
		struct self_select s = { .c = make_chan(sizeof(int64_t), 0),
					 .send_first = order == 0, .out = 11, .in = -1,
					 .chosen = -1 };
		int send_idx = s.send_first ? 0 : 1, recv_idx = 1 - send_idx;
		weft_case cs[2];
		self_cases(&s, cs);
		int chosen = -7;
		ASSERT_EQ(weft_select_try(cs, 2, &chosen), EAGAIN);
		ASSERT_EQ(weft_select_until(cs, 2, &chosen, weft_now() + 20 * TEST_MS),
			  ETIMEDOUT);
		ASSERT_EQ(chosen, -7);
		ASSERT_EQ(s.in, -1);

		/* Parked alone for 30 ms, then a partner receives. */
		weft_wg_add(&s.wg, 1);
		GO(select_self, &s);
		while (!atomic_load(&s.started))
			weft_sleep(TEST_MS);
		weft_sleep(30 * TEST_MS);
		int64_t v = -1;
		ASSERT_EQ(weft_chan_recv(s.c, &v), 0);
		weft_wg_wait(&s.wg);
		ASSERT_EQ(s.result, 0);
		ASSERT_EQ(s.chosen, send_idx);
		ASSERT_EQ(v, 11);
		ASSERT_EQ(s.in, -1);

		/* Parked again; a partner sends. */
		atomic_store(&s.started, 0);
		weft_wg_add(&s.wg, 1);
		GO(select_self, &s);
		while (!atomic_load(&s.started))
			weft_sleep(TEST_MS);
		weft_sleep(10 * TEST_MS);
		v = 22;
		ASSERT_EQ(weft_chan_send(s.c, &v), 0);
		weft_wg_wait(&s.wg);
		ASSERT_EQ(s.result, 0);
		ASSERT_EQ(s.chosen, recv_idx);
		ASSERT_EQ(s.in, 22);

		/* Nothing is left queued on the channel. */
		ASSERT_EQ(weft_chan_trysend(s.c, &v), EAGAIN);
		ASSERT_EQ(weft_chan_tryrecv(s.c, &v), EAGAIN);
		weft_chan_release(s.c);
	}
}

/*
 * One cap-1 channel in a send case and a receive case: when it is empty only
 * the send can proceed, when full only the receive, so the choice is forced,
 * 1,000 times in each case order. Guards: a "ready" test that looks at the
 * wrong direction (a send chosen on a full channel, a receive on an empty
 * one), a send and a receive both done by one select.
 */
TEST(same_channel_send_and_recv_buffered)
{
	for (int order = 0; order < 2; order++) {
		struct self_select s = { .c = make_chan(sizeof(int64_t), 1),
					 .send_first = order == 0 };
		int send_idx = s.send_first ? 0 : 1, recv_idx = 1 - send_idx;
		weft_case cs[2];
		self_cases(&s, cs);
		for (int i = 0; i < 1000; i++) {
			int chosen = -1;
			s.out = i;
			ASSERT_EQ(select_kind(i % 3, cs, 2, &chosen), 0);
			ASSERT_EQ(chosen, send_idx);
			ASSERT_EQ(weft_chan_len(s.c), 1);
			s.in = -1;
			ASSERT_EQ(select_kind(i % 3, cs, 2, &chosen), 0);
			ASSERT_EQ(chosen, recv_idx);
			ASSERT_EQ(s.in, i);
			ASSERT_EQ(weft_chan_len(s.c), 0);
		}
		weft_chan_release(s.c);
	}
}

/* ---------------------------------------------------------------- closed */

/*
 * A receive case on a closed channel is ready: EPIPE, *chosen its index, its
 * element zeroed (NULL allowed), other elements untouched; buffered values
 * come first (0, then EPIPE). A send case on a closed channel: EPIPE, its
 * index, nothing sent. Guards: 0 instead of EPIPE (the caller cannot tell a
 * zero value from closed), the element not zeroed, a closed channel seen as
 * not ready (the select blocks).
 */
TEST(closed_channel_cases)
{
	weft_chan *empty = make_chan(sizeof(int64_t), 0);
	weft_chan *closed = make_chan(sizeof(int64_t), 2);
	int64_t v = 5;
	ASSERT_EQ(weft_chan_send(closed, &v), 0);
	weft_chan_close(closed);
	for (int kind = 0; kind < 3; kind++) {
		int64_t e = -1, w = -1;
		weft_case cs[3] = { WEFT_RECV_CASE(empty, &e), WEFT_RECV_CASE(NULL, &e),
				    WEFT_RECV_CASE(closed, &w) };
		int chosen = -1;
		if (kind == 0) {
			ASSERT_EQ(select_kind(kind, cs, 3, &chosen), 0);
			ASSERT_EQ(chosen, 2);
			ASSERT_EQ(w, 5);
			w = -1;
		}
		chosen = -1;
		ASSERT_EQ(select_kind(kind, cs, 3, &chosen), EPIPE);
		ASSERT_EQ(chosen, 2);
		ASSERT_EQ(w, 0);
		ASSERT_EQ(e, -1);
		cs[2].elem = NULL;
		ASSERT_EQ(select_kind(kind, cs, 3, &chosen), EPIPE);
		ASSERT_EQ(chosen, 2);

		weft_case ss[2] = { WEFT_RECV_CASE(empty, &e), WEFT_SEND_CASE(closed, &v) };
		chosen = -1;
		ASSERT_EQ(select_kind(kind, ss, 2, &chosen), EPIPE);
		ASSERT_EQ(chosen, 1);
		ASSERT_EQ(weft_chan_len(closed), 0);
	}
	weft_chan_release(empty);
	weft_chan_release(closed);
}

/*
 * A select_until whose deadline claimed it while two of its channels were
 * being closed (with one P, a close's cascade reaches the waiters one by one,
 * and a waiter it has not reached yet reports the close when it times out)
 * picks among the closed cases at random, as among any ready cases. Setup per
 * trial, at 1 P: a plain receiver parked first on each channel (the close
 * makes it the relay), then the select; the main goroutine spins past the
 * select's deadline without a switch, then closes both channels. Guard: the
 * lowest-address closed case was reported every time (400 of 400 in a probe).
 */
static weft_chan *tofair_c[2];
static int64_t tofair_dl;
static int tofair_rc, tofair_chosen, tofair_fin;

static void tofair_plain(void *arg)
{
	weft_chan_recv(arg, NULL);
	__atomic_add_fetch(&tofair_fin, 1, __ATOMIC_SEQ_CST);
}

static void tofair_select(void *arg)
{
	(void)arg;
	weft_case cs[2] = { WEFT_RECV_CASE(tofair_c[0], NULL), WEFT_RECV_CASE(tofair_c[1], NULL) };
	tofair_rc = weft_select_until(cs, 2, &tofair_chosen, tofair_dl);
	__atomic_add_fetch(&tofair_fin, 1, __ATOMIC_SEQ_CST);
}

TEST(timed_out_close_answer_is_random)
{
	int old;
	ASSERT_EQ(weft_set_procs(1, &old), 0);
	/* The deadline comes after the select has parked: a few switches,
	 * slower under sanitizers and emulation. A trial whose deadline came
	 * even before (it times out before the closes) tests nothing and is
	 * run again. */
	const int64_t margin = 300 * WEFT_MICROSECOND * test_slowdown();
	int seen[2] = {0, 0}, early = 0;
	for (int t = 0; t < 200 && !(seen[0] && seen[1]); t++) {
		tofair_c[0] = make_chan(0, 0);
		tofair_c[1] = make_chan(0, 0);
		tofair_fin = 0;
		ASSERT_EQ(weft_go(tofair_plain, tofair_c[0]), 0);
		ASSERT_EQ(weft_go(tofair_plain, tofair_c[1]), 0);
		weft_yield();
		weft_yield();
		tofair_dl = weft_now() + margin;
		ASSERT_EQ(weft_go(tofair_select, NULL), 0);
		weft_yield();
		weft_yield();
		while (weft_now() < tofair_dl + 200 * WEFT_MICROSECOND)
			; /* past the deadline, with no switch */
		weft_chan_close(tofair_c[t & 1]);
		weft_chan_close(tofair_c[!(t & 1)]);
		while (__atomic_load_n(&tofair_fin, __ATOMIC_SEQ_CST) < 3)
			weft_sleep(TEST_MS / 10);
		if (tofair_rc == ETIMEDOUT) {
			early++;
		} else {
			ASSERT_EQ(tofair_rc, EPIPE);
			seen[tofair_c[tofair_chosen] > tofair_c[!tofair_chosen]]++;
		}
		weft_chan_release(tofair_c[0]);
		weft_chan_release(tofair_c[1]);
	}
	if (!(seen[0] && seen[1]))
		FAIL("closed cases chosen: lower address %d times, higher %d (%d trials timed "
		     "out before the closes)", seen[0], seen[1], early);
	ASSERT_EQ(weft_set_procs(old, NULL), 0);
}

/* ---------------------------------------------------------------- select_until */

static void until_checks(void)
{
	weft_chan *empty = make_chan(sizeof(int64_t), 0), *full = full_chan(9);
	int64_t e = -1, s = 1;
	weft_case cs[3] = { WEFT_RECV_CASE(empty, &e), WEFT_SEND_CASE(full, &s),
			    WEFT_SEND_CASE(empty, &s) };
	until_cases = cs;
	until_n = 3;
	ASSERT_DURATION(TEST_BEST_OF(3, LATE_BOUND, select_until_late()), 0, LATE_MS);
	ASSERT_EQ(e, -1);
	/* The timed-out select left nothing behind: no waiter to take a
	 * value, none to give one, and the full channel holds what it held. */
	ASSERT_EQ(weft_chan_trysend(empty, &s), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(empty, &s), EAGAIN);
	ASSERT_EQ(weft_chan_len(full), 1);
	ASSERT_EQ(weft_chan_tryrecv(full, &s), 0);
	ASSERT_EQ(s, 9);
	weft_chan_release(empty);
	weft_chan_release(full);
}

/*
 * select_until with no case ready times out at the deadline (never early,
 * at most 10 ms late), *chosen untouched, and unlinks itself from every
 * channel. From a goroutine and a foreign thread. Guards: a deadline read as
 * a duration, a timed-out select still queued on a channel (a later try
 * form meets a dead waiter).
 */
TEST(select_until_times_out)
{
	until_checks();
}

TEST_THREAD(select_until_times_out_foreign)
{
	until_checks();
}

/* ---------------------------------------------------------------- parked select */

struct parked {
	weft_chan *a, *b, *out; /* receive from a and b, send to out */
	int64_t va, vb, vout;
	int chosen;
	int result;
	atomic_int started;
	weft_wg wg;
};

static void parked_select(void *arg)
{
	struct parked *p = arg;
	weft_case cs[3] = { WEFT_RECV_CASE(p->a, &p->va), WEFT_RECV_CASE(p->b, &p->vb),
			    WEFT_SEND_CASE(p->out, &p->vout) };
	atomic_store(&p->started, 1);
	p->result = weft_select(cs, 3, &p->chosen);
	weft_wg_done(&p->wg);
}

/* Start a parked select (goroutine or pthread) over three fresh unbuffered
 * channels; returns once it has had 20 ms to park. */
static void parked_start(struct parked *p, bool thread, pthread_t *th)
{
	*p = (struct parked){ .a = make_chan(sizeof(int64_t), 0),
			      .b = make_chan(sizeof(int64_t), 0),
			      .out = make_chan(sizeof(int64_t), 0),
			      .va = -1, .vb = -1, .vout = 333, .chosen = -1 };
	weft_wg_add(&p->wg, 1);
	if (thread)
		test_start_thread(th, parked_select, p);
	else
		GO(parked_select, p);
	while (!atomic_load(&p->started))
		weft_sleep(TEST_MS);
	weft_sleep(20 * TEST_MS);
}

/* After the select returned: it left no waiter on any of its channels. */
static void parked_finish(struct parked *p, bool thread, pthread_t th)
{
	weft_wg_wait(&p->wg);
	if (thread)
		test_join_thread(th);
	int64_t v = 0;
	ASSERT_EQ(weft_chan_trysend(p->a, &v), EAGAIN);
	ASSERT_EQ(weft_chan_trysend(p->b, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(p->out, &v), EAGAIN);
	weft_chan_release(p->a);
	weft_chan_release(p->b);
	weft_chan_release(p->out);
}

/* Wake a parked select (goroutine or pthread) in each of the three ways. */
static void parked_wakeups(bool thread)
{
	struct parked p;
	pthread_t th;

	parked_start(&p, thread, &th);
	int64_t v = 55;
	ASSERT_EQ(weft_chan_send(p.b, &v), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.chosen, 1);
	ASSERT_EQ(p.vb, 55);
	ASSERT_EQ(p.va, -1);
	parked_finish(&p, thread, th);

	parked_start(&p, thread, &th);
	v = 0;
	ASSERT_EQ(weft_chan_recv(p.out, &v), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.chosen, 2);
	ASSERT_EQ(v, 333);
	ASSERT(p.va == -1 && p.vb == -1);
	parked_finish(&p, thread, th);

	parked_start(&p, thread, &th);
	weft_chan_close(p.a);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, EPIPE);
	ASSERT_EQ(p.chosen, 0);
	ASSERT_EQ(p.va, 0);
	ASSERT_EQ(p.vb, -1);
	ASSERT_EQ(weft_chan_trysend(p.b, &v), EAGAIN);
	ASSERT_EQ(weft_chan_tryrecv(p.out, &v), EAGAIN);
	weft_chan_release(p.a);
	weft_chan_release(p.b);
	weft_chan_release(p.out);
	if (thread)
		test_join_thread(th);
}

/*
 * A select parked on three channels (receive, receive, send) is woken by a
 * sender on its second channel, by a receiver on its third, or by close of
 * its first, from another P (2 Ps): the right index, the value in the right
 * element, EPIPE and a zeroed element for close; afterwards it is queued on
 * none of its channels (try forms there find no partner). The select runs
 * on a goroutine and on a pthread. Guards: a lost wake-up (hang), a wake-up
 * reporting the wrong case, a waiter left on the other channels that later
 * swallows a value.
 */
TEST(parked_select_woken)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	parked_wakeups(false);
	parked_wakeups(true);
}

struct feeder {
	weft_chan *c[3];
	weft_wg wg;
};

static void feed(void *arg)
{
	struct feeder *f = arg;
	for (int64_t i = 0; i < 300; i++) {
		int64_t v = i;
		if (i % 50 == 0)
			weft_sleep(TEST_MS);
		ASSERT_EQ(weft_chan_send(f->c[i % 3], &v), 0);
	}
	weft_wg_done(&f->wg);
}

/*
 * The main thread, a foreign thread, selects over three channels fed by a
 * goroutine that sends 0..299 round-robin, pausing now and then so that the
 * thread parks: every value arrives once, on the channel it was sent to, in
 * order. Guards: a foreign-thread select that polls or never wakes, a value
 * reported under the wrong index.
 */
TEST_THREAD(foreign_thread_selects)
{
	/* Unbuffered, so that one case at a time is ready. */
	struct feeder f = { { make_chan(sizeof(int64_t), 0), make_chan(sizeof(int64_t), 0),
			      make_chan(sizeof(int64_t), 0) },
			    WEFT_WG_INIT };
	weft_wg_add(&f.wg, 1);
	GO(feed, &f);
	int64_t v[3] = { -1, -1, -1 };
	weft_case cs[3] = { WEFT_RECV_CASE(f.c[0], &v[0]), WEFT_RECV_CASE(f.c[1], &v[1]),
			    WEFT_RECV_CASE(f.c[2], &v[2]) };
	for (int64_t i = 0; i < 300; i++) {
		int chosen = -1;
		ASSERT_EQ(select_kind((int)(i % 2) * 2, cs, 3, &chosen), 0);
		ASSERT_EQ(chosen, i % 3);
		ASSERT_EQ(v[chosen], i);
	}
	weft_wg_wait(&f.wg);
	for (int i = 0; i < 3; i++)
		weft_chan_release(f.c[i]);
}

/* ---------------------------------------------------------------- races */

struct racer {
	weft_chan *c;
	int64_t value;
	int result;
	weft_wg *wg;
};

static void racer_send(void *arg)
{
	struct racer *r = arg;
	r->result = weft_chan_send(r->c, &r->value);
	weft_wg_done(r->wg);
}

static void racer_recv(void *arg)
{
	struct racer *r = arg;
	r->result = weft_chan_recv(r->c, &r->value);
	weft_wg_done(r->wg);
}

/*
 * One round: two goroutines race to complete a select over two unbuffered
 * channels (senders for receive cases, receivers for send cases) while it
 * parks or is about to. Exactly one case happens; the other partner stays
 * blocked until we serve it directly, and gets (or gives) its own value.
 */
static void race_round(bool recv_cases, int round)
{
	weft_chan *c[2] = { make_chan(sizeof(int64_t), 0), make_chan(sizeof(int64_t), 0) };
	weft_wg wg = WEFT_WG_INIT;
	struct racer r[2];
	int64_t slot[2] = { -1, -1 }, mine[2] = { 1000 + round, 2000 + round };
	for (int i = 0; i < 2; i++)
		r[i] = (struct racer){ c[i], recv_cases ? 10 * round + i : -1, -1, &wg };
	weft_wg_add(&wg, 2);
	GO(recv_cases ? racer_send : racer_recv, &r[round % 2]);
	GO(recv_cases ? racer_send : racer_recv, &r[1 - round % 2]);
	weft_case cs[2];
	for (int i = 0; i < 2; i++)
		cs[i] = recv_cases ? WEFT_RECV_CASE(c[i], &slot[i]) : WEFT_SEND_CASE(c[i], &mine[i]);
	int chosen = -1;
	ASSERT_EQ(weft_select(cs, 2, &chosen), 0);
	ASSERT(chosen == 0 || chosen == 1);
	int other = 1 - chosen;
	if (recv_cases) {
		ASSERT_EQ(slot[chosen], r[chosen].value);
		ASSERT_EQ(slot[other], -1);
		int64_t v = -1;
		ASSERT_EQ(weft_chan_recv(c[other], &v), 0);
		ASSERT_EQ(v, r[other].value);
	} else {
		int64_t v = 3000 + round;
		ASSERT_EQ(weft_chan_send(c[other], &v), 0);
	}
	weft_wg_wait(&wg);
	ASSERT_EQ(r[0].result, 0);
	ASSERT_EQ(r[1].result, 0);
	if (!recv_cases) {
		ASSERT_EQ(r[chosen].value, mine[chosen]);
		ASSERT_EQ(r[other].value, 3000 + round);
	}
	weft_chan_release(c[0]);
	weft_chan_release(c[1]);
}

/*
 * 2,000 rounds at 2 Ps of two partners racing to complete one select (both
 * for receive cases and for send cases). Guards: a select completed twice (a
 * value lost: the second sender "succeeds" into a select that has already
 * returned, and our direct receive hangs or gets the wrong value), a
 * partner whose wake-up is lost.
 */
TEST(select_completes_once_under_race)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int rounds = TEST_SIZE(2000, 300);
	for (int i = 0; i < rounds; i++) {
		race_round(true, i);
		race_round(false, i);
	}
}

enum { DUEL_ROUNDS = 500 };

/* Two pthreads race to complete one parked select, round after round. */
struct duel {
	weft_chan *c[2];
	bool recv_cases;     /* the select receives (the threads send) */
	atomic_int round;    /* published by the selector before each select */
	atomic_int fire;     /* set by the firer once the select has parked */
	atomic_int finished; /* racer operations completed, all rounds */
	int64_t got[2];      /* what racer i received in the current round */
	int rounds;
	weft_wg firer_done;
};

static struct duel duel;

struct duelist {
	int i;
};

static void duel_racer(void *arg)
{
	int i = ((struct duelist *)arg)->i;
	for (int r = 1; r <= duel.rounds; r++) {
		/* Doze until the round starts, then spin: the firer's flag
		 * must release both threads at once. */
		while (atomic_load(&duel.round) < r) {
			struct timespec ts = { 0, 20000 };
			nanosleep(&ts, NULL);
		}
		while (atomic_load(&duel.fire) < r)
			sched_yield();
		int64_t v = 10 * r + i;
		if (duel.recv_cases)
			ASSERT_EQ(weft_chan_send(duel.c[i], &v), 0);
		else
			ASSERT_EQ(weft_chan_recv(duel.c[i], &duel.got[i]), 0);
		atomic_fetch_add(&duel.finished, 1);
	}
}

static void duel_firer(void *arg)
{
	(void)arg;
	for (int r = 1; r <= duel.rounds; r++) {
		while (atomic_load(&duel.round) < r)
			weft_yield();
		weft_sleep(100 * WEFT_MICROSECOND); /* the select parks meanwhile */
		atomic_store(&duel.fire, r);
	}
	weft_wg_done(&duel.firer_done);
}

/* DUEL_ROUNDS rounds: the select parks, then both threads, released at
 * the same instant, try to complete it on their own channel. */
static void duel_run(bool recv_cases)
{
	duel = (struct duel){ .recv_cases = recv_cases,
			      .rounds = TEST_SIZE(DUEL_ROUNDS, DUEL_ROUNDS / 5) };
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(weft_chan_make(&duel.c[i], sizeof(int64_t), 0), 0);
	struct duelist who[2] = { { 0 }, { 1 } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		test_start_thread(&th[i], duel_racer, &who[i]);
	weft_wg_add(&duel.firer_done, 1);
	GO(duel_firer, NULL);
	for (int r = 1; r <= duel.rounds; r++) {
		int64_t slot[2] = { -1, -1 }, mine[2] = { -10 * r, -10 * r - 1 };
		weft_case cs[2];
		for (int i = 0; i < 2; i++)
			cs[i] = recv_cases ? WEFT_RECV_CASE(duel.c[i], &slot[i])
					   : WEFT_SEND_CASE(duel.c[i], &mine[i]);
		atomic_store(&duel.round, r);
		int chosen = -1;
		ASSERT_EQ(weft_select(cs, 2, &chosen), 0);
		ASSERT(chosen == 0 || chosen == 1);
		int other = 1 - chosen;
		int64_t v = -1;
		if (recv_cases) {
			ASSERT_EQ(slot[chosen], 10 * r + chosen);
			if (slot[other] != -1)
				FAIL("round %d: the select took values from both racers", r);
			ASSERT_EQ(weft_chan_recv(duel.c[other], &v), 0);
			ASSERT_EQ(v, 10 * r + other);
		} else {
			v = 7 * r;
			ASSERT_EQ(weft_chan_send(duel.c[other], &v), 0);
		}
		YIELD_UNTIL(atomic_load(&duel.finished) >= 2 * r);
		if (!recv_cases) {
			ASSERT_EQ(duel.got[chosen], mine[chosen]);
			ASSERT_EQ(duel.got[other], 7 * r);
		}
	}
	weft_wg_wait(&duel.firer_done);
	for (int i = 0; i < 2; i++) {
		test_join_thread(th[i]);
		weft_chan_release(duel.c[i]);
	}
}

/*
 * The same race with the partners on two pthreads released at the same
 * instant (spinning on a flag) while the select is parked, 500 rounds
 * for receive cases and 500 for send cases (a fifth of that quick): both threads find the
 * select's waiters queued and only one may complete it. Guards: the same
 * double completion, where goroutine partners rarely overlap in time.
 */
TEST(select_completes_once_racing_threads)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	duel_run(true);
	duel_run(false);
}

/*
 * One channel in two receive cases (and in two send cases) of one select:
 * with one value buffered exactly one case takes it; over 200 tries both
 * indices are taken (a uniform choice fails this with probability 2^-199);
 * a parked select with both cases on one unbuffered channel is completed
 * by one send and leaves no second waiter behind. Guards: a duplicate case
 * that makes a select take two values, or wake twice, or stay queued.
 */
TEST(same_channel_twice)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	weft_chan *c = make_chan(sizeof(int64_t), 1);
	int seen[2] = { 0, 0 };
	for (int i = 0; i < 200; i++) {
		int64_t v = i, a = -1, b = -1;
		ASSERT_EQ(weft_chan_trysend(c, &v), 0);
		weft_case cs[2] = { WEFT_RECV_CASE(c, &a), WEFT_RECV_CASE(c, &b) };
		int chosen = -1;
		ASSERT_EQ(weft_select_try(cs, 2, &chosen), 0);
		ASSERT(chosen == 0 || chosen == 1);
		ASSERT_EQ(chosen == 0 ? a : b, i);
		ASSERT_EQ(chosen == 0 ? b : a, -1);
		ASSERT_EQ(weft_chan_len(c), 0);
		seen[chosen]++;

		int64_t x = 1, y = 2;
		weft_case ss[2] = { WEFT_SEND_CASE(c, &x), WEFT_SEND_CASE(c, &y) };
		ASSERT_EQ(weft_select_try(ss, 2, &chosen), 0);
		ASSERT_EQ(weft_chan_len(c), 1);
		ASSERT_EQ(weft_chan_tryrecv(c, &v), 0);
		ASSERT_EQ(v, chosen == 0 ? 1 : 2);
	}
	ASSERT_GT(seen[0], 0);
	ASSERT_GT(seen[1], 0);
	weft_chan_release(c);

	struct parked p = { .a = make_chan(sizeof(int64_t), 0), .va = -1, .vb = -1,
			    .chosen = -1 };
	p.b = p.a;
	p.out = NULL;
	weft_wg_add(&p.wg, 1);
	GO(parked_select, &p);
	weft_sleep(20 * TEST_MS);
	int64_t v = 8;
	ASSERT_EQ(weft_chan_send(p.a, &v), 0);
	weft_wg_wait(&p.wg);
	ASSERT_EQ(p.result, 0);
	ASSERT_EQ(p.chosen == 0 ? p.va : p.vb, 8);
	ASSERT_EQ(weft_chan_trysend(p.a, &v), EAGAIN);
	weft_chan_release(p.a);
}

/* ---------------------------------------------------------------- many selectors */

enum { MESH_CHANS = 4, MESH_G = 16, MESH_T = 2 };

struct mesh {
	weft_chan *c[MESH_CHANS];
	weft_chan *quit;
	atomic_long ops;
	atomic_long sent_n, recv_n;
	atomic_long sent_sum, recv_sum;
	weft_wg wg;
};

static struct mesh mesh;

/* Select over a send and a receive case on every mesh channel plus quit, in
 * a fresh random order each time, until quit is closed. */
static void mesh_worker(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u | 1;
	int64_t out = 0, in[MESH_CHANS], q;
	weft_case cs[2 * MESH_CHANS + 1];
	for (int64_t i = 1;; i++) {
		out = ((int64_t)(uintptr_t)arg << 32) | i;
		int n = 0;
		for (int k = 0; k < MESH_CHANS; k++) {
			cs[n++] = WEFT_SEND_CASE(mesh.c[k], &out);
			cs[n++] = WEFT_RECV_CASE(mesh.c[k], &in[k]);
		}
		cs[n++] = WEFT_RECV_CASE(mesh.quit, &q);
		for (int k = n - 1; k > 0; k--) { /* Fisher-Yates */
			int j = (int)(test_rand32(&s) % (uint32_t)(k + 1));
			weft_case t = cs[k];
			cs[k] = cs[j];
			cs[j] = t;
		}
		int chosen = -1, r = weft_select(cs, n, &chosen);
		if (cs[chosen].chan == mesh.quit) {
			ASSERT_EQ(r, EPIPE);
			break;
		}
		ASSERT_EQ(r, 0);
		if (cs[chosen].dir == WEFT_SEND) {
			atomic_fetch_add(&mesh.sent_n, 1);
			atomic_fetch_add(&mesh.sent_sum, out);
		} else {
			atomic_fetch_add(&mesh.recv_n, 1);
			atomic_fetch_add(&mesh.recv_sum, *(int64_t *)cs[chosen].elem);
		}
		atomic_fetch_add(&mesh.ops, 1);
		if (test_rand32(&s) % 16 == 0)
			weft_yield();
	}
	weft_wg_done(&mesh.wg);
}

/*
 * 16 goroutines and 2 pthreads at 2 Ps each select over sends and receives
 * on the same four channels (two unbuffered, cap 1 and cap 3) in a different
 * random order every time, 100,000 operations in all: progress never stalls
 * (5 s bound) and every value sent is received once (counts and sums match,
 * after draining the buffers). Guards: channel locks taken in case order
 * instead of address order (two selects deadlock: progress stops), a value
 * delivered twice or lost between selects.
 */
TEST(many_selects_no_deadlock)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static const size_t caps[MESH_CHANS] = { 0, 1, 0, 3 };
	mesh = (struct mesh){ .quit = make_chan(sizeof(int64_t), 0) };
	for (int k = 0; k < MESH_CHANS; k++)
		mesh.c[k] = make_chan(sizeof(int64_t), caps[k]);
	long target = TEST_SIZE(100000, 10000);
	pthread_t th[MESH_T];
	weft_wg_add(&mesh.wg, MESH_G + MESH_T);
	for (int i = 0; i < MESH_T; i++)
		test_start_thread(&th[i], mesh_worker, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < MESH_G; i++)
		GO(mesh_worker, (void *)(uintptr_t)(MESH_T + i + 1));
	int64_t deadline = test_now_ns() + 5000 * TEST_MS * test_slowdown();
	long last = -1;
	int64_t last_change = test_now_ns();
	while (atomic_load(&mesh.ops) < target) {
		long now_ops = atomic_load(&mesh.ops);
		if (now_ops != last) {
			last = now_ops;
			last_change = test_now_ns();
		}
		if (test_now_ns() - last_change > 1000 * TEST_MS * test_slowdown())
			FAIL("no select completed for 1 s at %ld operations: deadlock", now_ops);
		if (test_now_ns() > deadline)
			FAIL("only %ld of %ld operations in 5 s", now_ops, target);
		weft_sleep(TEST_MS);
	}
	weft_chan_close(mesh.quit);
	weft_wg_wait(&mesh.wg);
	for (int i = 0; i < MESH_T; i++)
		test_join_thread(th[i]);
	for (int k = 0; k < MESH_CHANS; k++) {
		int64_t v;
		while (weft_chan_tryrecv(mesh.c[k], &v) == 0) {
			atomic_fetch_add(&mesh.recv_n, 1);
			atomic_fetch_add(&mesh.recv_sum, v);
		}
		weft_chan_release(mesh.c[k]);
	}
	weft_chan_release(mesh.quit);
	printf("    %ld operations\n", atomic_load(&mesh.ops));
	ASSERT_EQ(atomic_load(&mesh.sent_n), atomic_load(&mesh.recv_n));
	ASSERT_EQ(atomic_load(&mesh.sent_sum), atomic_load(&mesh.recv_sum));
}

/* ---------------------------------------------------------------- many cases */

struct wide {
	weft_chan **c;
	int n;
	int64_t *vals;
	int chosen;
	int result;
	weft_wg wg;
};

static void wide_select(void *arg)
{
	struct wide *w = arg;
	weft_case *cs = calloc((size_t)w->n, sizeof *cs);
	ASSERT(cs != NULL);
	for (int i = 0; i < w->n; i++)
		cs[i] = WEFT_RECV_CASE(w->c[i], &w->vals[i]);
	w->result = weft_select(cs, w->n, &w->chosen);
	free(cs);
	weft_wg_done(&w->wg);
}

/*
 * Selects of 16, 17, 64, 65 and 200 cases (somewhere above a few dozen
 * cases weft allocates its scratch: both sides of every plausible bound):
 * with only the case at n - 3 ready it is chosen, with its value; a parked
 * select of each size is woken by a send on its last channel and leaves no
 * waiter behind. Guards: a fixed-size scratch array overrun, the allocation
 * path not covering the lock order or the wake-up.
 */
TEST(many_cases)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static const int sizes[] = { 16, 17, 64, 65, 200 };
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		int n = sizes[s];
		struct wide w = { calloc((size_t)n, sizeof(weft_chan *)), n,
				  calloc((size_t)n, sizeof(int64_t)), -1, -1, WEFT_WG_INIT };
		ASSERT(w.c != NULL && w.vals != NULL);
		weft_case *cs = calloc((size_t)n, sizeof *cs);
		ASSERT(cs != NULL);
		for (int i = 0; i < n; i++) {
			w.c[i] = make_chan(sizeof(int64_t), i % 2);
			w.vals[i] = -1;
			cs[i] = WEFT_RECV_CASE(w.c[i], &w.vals[i]);
		}
		int64_t v = 4242;
		int ready = n - 3;
		weft_chan_release(w.c[ready]);
		w.c[ready] = full_chan(v);
		cs[ready].chan = w.c[ready];
		int chosen = -1;
		ASSERT_EQ(weft_select_try(cs, n, &chosen), 0);
		ASSERT_EQ(chosen, ready);
		ASSERT_EQ(w.vals[ready], 4242);
		ASSERT_EQ(weft_select_try(cs, n, &chosen), EAGAIN);
		ASSERT_EQ(weft_select_until(cs, n, &chosen, weft_now() + TEST_MS), ETIMEDOUT);
		free(cs);

		weft_wg_add(&w.wg, 1);
		GO(wide_select, &w);
		weft_sleep(20 * TEST_MS);
		v = 99;
		ASSERT_EQ(weft_chan_send(w.c[n - 1], &v), 0);
		weft_wg_wait(&w.wg);
		ASSERT_EQ(w.result, 0);
		ASSERT_EQ(w.chosen, n - 1);
		ASSERT_EQ(w.vals[n - 1], 99);
		/* No waiter left behind: only the buffered channels take a value. */
		for (int i = 0; i < n; i++) {
			ASSERT_EQ(weft_chan_trysend(w.c[i], &v), weft_chan_cap(w.c[i]) ? 0 : EAGAIN);
			weft_chan_release(w.c[i]);
		}
		free(w.c);
		free(w.vals);
	}
}

struct dup_sel {
	weft_case *cs;
	int n, chosen, result;
	weft_wg wg;
};

static void dup_select(void *arg)
{
	struct dup_sel *d = arg;
	d->result = weft_select(d->cs, d->n, &d->chosen);
	weft_wg_done(&d->wg);
}

/*
 * A select of 40 cases over only 4 channels, each channel in 10 of them
 * (receive cases, scattered: case i on channel i % 4): above the 24 cases
 * where the lock order is built by a heap sort. A try and a timed select
 * find nothing and return; a parked one is woken by a send on one channel,
 * reports a case of that channel, and leaves no waiter behind. The lock
 * list must hold each channel once, so the sort must put equal channels
 * side by side. Guards: a heap sort that misorders (a sift-down that reads
 * past the heap's end): a channel then appears twice in the lock list and
 * the select spins forever on its own lock (the test hangs), or two selects
 * lock in different orders.
 */
TEST(many_cases_few_channels)
{
	enum { NCH = 4, N = 40 };
	weft_chan *c[NCH];
	int64_t vals[N];
	weft_case cs[N];
	for (int i = 0; i < NCH; i++)
		c[i] = make_chan(sizeof(int64_t), 0);
	for (int i = 0; i < N; i++) {
		vals[i] = -1;
		cs[i] = WEFT_RECV_CASE(c[i % NCH], &vals[i]);
	}
	int chosen = -1;
	ASSERT_EQ(weft_select_try(cs, N, &chosen), EAGAIN);
	ASSERT_EQ(weft_select_until(cs, N, &chosen, weft_now() + TEST_MS), ETIMEDOUT);
	ASSERT_EQ(chosen, -1);

	struct dup_sel d = { cs, N, -1, -1, WEFT_WG_INIT };
	weft_wg_add(&d.wg, 1);
	GO(dup_select, &d);
	weft_sleep(20 * TEST_MS);
	int64_t v = 77;
	ASSERT_EQ(weft_chan_send(c[2], &v), 0);
	weft_wg_wait(&d.wg);
	ASSERT_EQ(d.result, 0);
	ASSERT_EQ(d.chosen % NCH, 2);
	ASSERT_EQ(vals[d.chosen], 77);
	for (int i = 0; i < NCH; i++) { /* no waiter left behind */
		ASSERT_EQ(weft_chan_trysend(c[i], &v), EAGAIN);
		weft_chan_release(c[i]);
	}
}

/*
 * A channel whose last reference is released while a select is parked on
 * it (among other channels) lives on until that select leaves, and the
 * select, leaving by another channel, frees it: the count of live channels
 * is back where it was. Guards: the cleanup that unlinks the select's
 * sudogs but never frees an orphaned channel (a leak of each channel
 * released under a parked select; nothing else notices it).
 */
TEST(select_frees_channel_released_while_parked)
{
	weft_stats st;
	weft_chan *a = make_chan(sizeof(int64_t), 0), *b = make_chan(sizeof(int64_t), 0);
	weft_stats_get(&st);
	int64_t base = st.channels - 2;
	int64_t base_parks = st.parks;
	int64_t va = -1, vb = -1;
	weft_case cs[2] = { WEFT_RECV_CASE(a, &va), WEFT_RECV_CASE(b, &vb) };
	struct dup_sel d = { cs, 2, -1, -1, WEFT_WG_INIT };
	weft_wg_add(&d.wg, 1);
	GO(dup_select, &d);
	/* Until it has parked (its waiters are queued on both before that;
	 * yielding, which parks nobody): releasing b any sooner would free it
	 * under the select. */
	YIELD_UNTIL((weft_stats_get(&st), st.parks > base_parks));
	weft_chan_release(b); /* orphaned: the select still waits on it */
	weft_stats_get(&st);
	ASSERT_EQ(st.channels, base + 2);
	int64_t v = 5;
	ASSERT_EQ(weft_chan_send(a, &v), 0);
	weft_wg_wait(&d.wg);
	ASSERT_EQ(d.result, 0);
	ASSERT_EQ(d.chosen, 0);
	ASSERT_EQ(va, 5);
	weft_stats_get(&st);
	ASSERT_EQ(st.channels, base + 1); /* b went with the select */
	weft_chan_release(a);
	weft_stats_get(&st);
	ASSERT_EQ(st.channels, base);
}

/* ---------------------------------------------------------------- EINVAL */

/*
 * EINVAL, with *chosen untouched and nothing done, for: a dir that is
 * neither WEFT_SEND nor WEFT_RECV (0, 3, -1; also on a NULL channel and
 * after a ready case), a send case with a NULL element on a channel whose
 * elements are not empty, n < 0, cases NULL with n > 0, chosen NULL; for all
 * three forms. Guards: an invalid case skipped or treated as a receive, a
 * ready case performed before the bad one is found.
 */
TEST(select_einval)
{
	weft_chan *ready = full_chan(7);
	int64_t v = -1;
	static const int bad_dirs[] = { 0, 3, -1, 42 };
	for (int kind = 0; kind < 3; kind++) {
		for (size_t d = 0; d < sizeof bad_dirs / sizeof bad_dirs[0]; d++) {
			weft_case cs[2] = { WEFT_RECV_CASE(ready, &v),
					    { .chan = ready, .dir = bad_dirs[d], .elem = &v } };
			int chosen = -7;
			ASSERT_EQ(select_kind(kind, cs, 2, &chosen), EINVAL);
			cs[1].chan = NULL;
			ASSERT_EQ(select_kind(kind, cs, 2, &chosen), EINVAL);
			ASSERT_EQ(chosen, -7);
			ASSERT_EQ(v, -1);
			ASSERT_EQ(weft_chan_len(ready), 1);
		}
		/* A send case with no element on a channel of 8-byte
		 * elements: two cases (the quick path) and three. */
		weft_chan *room = make_chan(sizeof(int64_t), 1);
		weft_case sends[3] = { WEFT_RECV_CASE(ready, &v), WEFT_SEND_CASE(room, NULL),
				       WEFT_RECV_CASE(NULL, &v) };
		for (int n = 2; n <= 3; n++) {
			int chosen = -7;
			ASSERT_EQ(select_kind(kind, sends, n, &chosen), EINVAL);
			ASSERT_EQ(chosen, -7);
			ASSERT_EQ(v, -1);
			ASSERT_EQ(weft_chan_len(ready), 1);
			ASSERT_EQ(weft_chan_len(room), 0);
		}
		weft_chan_release(room);
		weft_case ok = WEFT_RECV_CASE(ready, &v);
		int chosen = -7;
		ASSERT_EQ(select_kind(kind, &ok, -1, &chosen), EINVAL);
		ASSERT_EQ(select_kind(kind, NULL, 1, &chosen), EINVAL);
		ASSERT_EQ(select_kind(kind, &ok, 1, NULL), EINVAL);
		ASSERT_EQ(chosen, -7);
		ASSERT_EQ(weft_chan_len(ready), 1);
	}
	weft_chan_release(ready);
}

/* ---------------------------------------------------------------- elem NULL */

/*
 * A receive case with a NULL element discards the value; a send case's
 * element is copied when the select returns (changing it afterwards changes
 * nothing). Guards: a NULL element dereferenced, a send case that keeps a
 * pointer to the caller's element.
 */
TEST(select_elements)
{
	weft_chan *c = full_chan(5);
	weft_case cs[1] = { WEFT_RECV_CASE(c, NULL) };
	int chosen = -1;
	ASSERT_EQ(weft_select(cs, 1, &chosen), 0);
	ASSERT_EQ(chosen, 0);
	ASSERT_EQ(weft_chan_len(c), 0);
	int64_t v = 6;
	weft_case ss[1] = { WEFT_SEND_CASE(c, &v) };
	ASSERT_EQ(weft_select(ss, 1, &chosen), 0);
	v = 7;
	int64_t w = 0;
	ASSERT_EQ(weft_chan_recv(c, &w), 0);
	ASSERT_EQ(w, 6);
	weft_chan_release(c);
}

/* ---------------------------------------------------------------- release during a select */

struct orphan_round {
	weft_chan *a, *b;
	atomic_int go;
	int64_t got;
	int chosen;
};

static void orphan_selector(void *arg)
{
	struct orphan_round *o = arg;
	weft_case cs[] = { WEFT_RECV_CASE(o->a, &o->got), WEFT_RECV_CASE(o->b, &o->got) };
	ASSERT_EQ(weft_select(cs, 2, &o->chosen), 0);
}

/* Holder of the last reference to b: a try-send on b (which meets the
 * select's sudog there, stale once a has won), then the release. */
static void orphan_releaser(void *arg)
{
	struct orphan_round *o = arg;
	while (!atomic_load(&o->go))
		;
	int64_t v = 2;
	int r = weft_chan_trysend(o->b, &v);
	ASSERT(r == 0 || r == EAGAIN);
	weft_chan_release(o->b);
}

static void orphan_winner(void *arg)
{
	struct orphan_round *o = arg;
	while (!atomic_load(&o->go))
		;
	int64_t v = 1;
	ASSERT_EQ(weft_chan_send(o->a, &v), 0);
}

/*
 * A select parks on a and b. Two pthreads race: one completes the select on
 * a; the other, holding the last reference to b, touches b (a try-send that
 * meets the select's sudog) and releases b at once, while the select is
 * still cleaning up. b must stay alive until the select has unlinked its
 * sudog there: the parked select holds its own reference. Guards: a party
 * that unlinks another's stale sudog, dropping the select's hold on b behind
 * its back (a use-after-free in every run under make asan; a crash or a
 * corrupted queue elsewhere).
 */
TEST(release_during_select_cleanup)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int rounds = test_quick() ? 100 : 500;
	int on_b = 0;
	for (int r = 0; r < rounds; r++) {
		static struct orphan_round o;
		o = (struct orphan_round){ .chosen = -1 };
		ASSERT_EQ(weft_chan_make(&o.a, sizeof(int64_t), 0), 0);
		ASSERT_EQ(weft_chan_make(&o.b, sizeof(int64_t), 0), 0);
		weft_stats before;
		weft_stats_get(&before);
		GO(orphan_selector, &o);
		for (int i = 0; i < 100000; i++) { /* until the select has parked */
			weft_stats now;
			weft_stats_get(&now);
			if (now.parks > before.parks)
				break;
			weft_yield();
		}
		weft_sleep(50 * WEFT_MICROSECOND);
		pthread_t tw, tr;
		test_start_thread(&tw, orphan_winner, &o);
		test_start_thread(&tr, orphan_releaser, &o);
		atomic_store(&o.go, 1);
		test_join_thread(tr);
		POLL_UNTIL(o.chosen >= 0, weft_sleep(10 * WEFT_MICROSECOND));
		if (o.chosen == 1) {
			/* The try-send came first and won: the winner's send on a
			 * still waits for a receiver. */
			int64_t v;
			ASSERT_EQ(weft_chan_recv(o.a, &v), 0);
			on_b++;
		}
		test_join_thread(tw);
		ASSERT_EQ(o.got, o.chosen == 0 ? 1 : 2);
		weft_chan_release(o.a);
	}
	printf("    %d of %d rounds won on b\n", on_b, rounds);
}

/* ---------------------------------------------------------------- stale cases */

struct twin {
	weft_chan *c;
	weft_wg wg;
};

static void twin_selector(void *arg)
{
	struct twin *t = arg;
	weft_case cs[2] = { WEFT_RECV_CASE(t->c, NULL), WEFT_RECV_CASE(t->c, NULL) };
	int chosen = -1;
	ASSERT_EQ(weft_select(cs, 2, &chosen), EPIPE);
	ASSERT(chosen == 0 || chosen == 1);
	weft_wg_done(&t->wg);
}

/*
 * 20,000 goroutines at 2 Ps each park in a select of two receive cases on
 * one channel; close wakes them all. The walk completes each select through
 * its first case, which leaves the second one stale, and the walk holds the
 * channel's lock, so no select can take its stale case away meanwhile: a
 * take that skips stale cases without dropping them scans them all again
 * for every waiter after them (20,000^2 / 2 failed claims: about 3.5 s,
 * the channel locked throughout). Go's dequeue drops a stale sudog as it
 * meets it. The bound, 1 s, is far above the linear close (10-20 ms here)
 * and far below the quadratic one. Guards: a stale case left queued by the
 * takes that meet it.
 */
TEST(close_walk_drops_stale_cases)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int n = TEST_SIZE(20000, 4000);
	static struct twin t;
	t = (struct twin){ NULL, WEFT_WG_INIT };
	t.c = make_chan(0, 0);
	weft_stats before;
	weft_stats_get(&before);
	weft_wg_add(&t.wg, n);
	for (int i = 0; i < n; i++)
		GO(twin_selector, &t);
	WAIT_FOR(({
		weft_stats now;
		weft_stats_get(&now);
		now.parks >= before.parks + n;
	}));
	int64_t t0 = test_now_ns();
	weft_chan_close(t.c);
	weft_wg_wait(&t.wg);
	int64_t took = test_now_ns() - t0;
	printf("    %d selects woken in %lld us\n", n, (long long)took / 1000);
	ASSERT_LT(took, 1000 * TEST_MS * test_slowdown());
	weft_chan_release(t.c);
}
