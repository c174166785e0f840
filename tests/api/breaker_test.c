/* SPDX-License-Identifier: MIT */
/*
 * breaker_test.c - weft_breaker (after sony/gobreaker): the state machine
 * driven by scripted results on a clock the test sets, so each transition
 * happens at an exact call and an exact nanosecond: trips on consecutive
 * failures (the default rule included), on a failure ratio, by a callback;
 * open -> half-open at the timeout and not a nanosecond before; the probe
 * limit; half-open -> closed after max_requests successes, -> open on a
 * failure; counts cleared every interval; results from an earlier
 * generation ignored; the exact sequence of state-change callbacks, which
 * may call back into the breaker. Then real concurrency: the probe limit
 * holds against 64 goroutines at once, no count is lost among goroutines
 * and pthreads hammering one breaker, callbacks stay ordered and one at a
 * time while it trips and recovers under load; and the real clock. Misuse
 * is a fatal error naming it.
 */
#include "test.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SEC (1000 * TEST_MS)

/* ---------------------------------------------------------------- fixtures */

/* The test's clock, read by the breakers made with fake_settings(). */
static atomic_llong fake_now;

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

static void advance(int64_t d)
{
	atomic_fetch_add(&fake_now, d);
}

/* The state changes a breaker reported, in order, as "c>o" items joined by
 * spaces; and a check, from inside each callback, that the breaker can be
 * called back and already is in the new state (when one goroutine drives
 * it, the callback comes before the call that made the change returns). */
static struct log {
	weft_mutex mu;
	char buf[4096];
	int n;
	atomic_int inside;     /* callbacks running now */
	atomic_int overlapped; /* a callback started while another ran */
	atomic_int mismatched; /* the state queried inside was not `to` */
	bool check_state;
} lg;

static char letter(weft_breaker_state s)
{
	return s == WEFT_BREAKER_CLOSED ? 'c' : s == WEFT_BREAKER_OPEN ? 'o' : 'h';
}

static void on_change(weft_breaker *b, weft_breaker_state from, weft_breaker_state to, void *arg)
{
	(void)arg;
	if (atomic_fetch_add(&lg.inside, 1) != 0)
		atomic_fetch_add(&lg.overlapped, 1);
	if (lg.check_state && weft_breaker_get_state(b) != to)
		atomic_fetch_add(&lg.mismatched, 1);
	weft_mutex_lock(&lg.mu);
	size_t len = strlen(lg.buf);
	snprintf(lg.buf + len, sizeof lg.buf - len, "%s%c>%c", len ? " " : "", letter(from),
	         letter(to));
	lg.n++;
	weft_mutex_unlock(&lg.mu);
	atomic_fetch_sub(&lg.inside, 1);
}

static void log_reset(bool check_state)
{
	weft_mutex_lock(&lg.mu);
	lg.buf[0] = 0;
	lg.n = 0;
	lg.check_state = check_state;
	weft_mutex_unlock(&lg.mu);
	atomic_store(&lg.overlapped, 0);
	atomic_store(&lg.mismatched, 0);
}

#define ASSERT_LOG(want)                                                             \
	do {                                                                         \
		weft_mutex_lock(&lg.mu);                                             \
		if (strcmp(lg.buf, (want)) != 0)                                     \
			FAIL("transitions \"%s\", expected \"%s\"", lg.buf, (want)); \
		weft_mutex_unlock(&lg.mu);                                           \
		ASSERT_EQ(atomic_load(&lg.mismatched), 0);                           \
	} while (0)

static weft_breaker_settings fake_settings(void)
{
	atomic_store(&fake_now, 1000 * SEC);
	log_reset(true);
	return (weft_breaker_settings){
		.name = "svc",
		.timeout_ns = 10 * SEC,
		.on_state_change = on_change,
		.clock = fake_clock,
	};
}

static weft_breaker *make(const weft_breaker_settings *s)
{
	weft_breaker *b = NULL;
	ASSERT_EQ(weft_breaker_new(&b, s), 0);
	ASSERT(b != NULL);
	return b;
}

/* A call for execute: returns the int its argument points to, and counts. */
static atomic_int calls;

static int call(void *arg)
{
	atomic_fetch_add(&calls, 1);
	return *(const int *)arg;
}

/*
 * Run a script through execute: 'S' a call that succeeds, 'F' one that
 * fails (EIO), 'N' one that returns ENOENT; after each, the state must be
 * the letter at the same place of states ('c', 'h', 'o'); a call refused
 * must be written 'r' (EAGAIN, open) or 'b' (EBUSY, probes out) in the
 * script, and then fn must not have run.
 */
static void run_script(weft_breaker *b, const char *script, const char *states)
{
	ASSERT_EQ(strlen(script), strlen(states));
	for (size_t i = 0; script[i]; i++) {
		int want = script[i] == 'S' ? 0 : script[i] == 'N' ? ENOENT : EIO;
		int before = atomic_load(&calls);
		int got = weft_breaker_execute(b, call, &want);
		if (script[i] == 'r' || script[i] == 'b') {
			int refusal = script[i] == 'r' ? EAGAIN : EBUSY;
			if (got != refusal || atomic_load(&calls) != before)
				FAIL("step %zu of \"%s\": got %d, fn ran %d times; expected "
				     "refusal %d",
				     i, script, got, atomic_load(&calls) - before, refusal);
		} else if (got != want || atomic_load(&calls) != before + 1) {
			FAIL("step %zu of \"%s\": got %d, expected %d from one run of fn", i,
			     script, got, want);
		}
		char s = letter(weft_breaker_get_state(b));
		if (s != states[i])
			FAIL("step %zu of \"%s\": state %c, expected %c (states \"%s\")", i, script,
			     s, states[i], states);
	}
}

static weft_breaker_counts counts(weft_breaker *b)
{
	weft_breaker_counts c;
	weft_breaker_get_counts(b, &c);
	return c;
}

#define ASSERT_COUNTS(b, req, ts, tf, cs, cf)              \
	do {                                               \
		weft_breaker_counts c_ = counts(b);        \
		ASSERT_EQ(c_.requests, (req));             \
		ASSERT_EQ(c_.total_successes, (ts));       \
		ASSERT_EQ(c_.total_failures, (tf));        \
		ASSERT_EQ(c_.consecutive_successes, (cs)); \
		ASSERT_EQ(c_.consecutive_failures, (cf));  \
	} while (0)

/* ---------------------------------------------------------------- the state machine */

/*
 * The whole cycle, step by step: consecutive failures trip it (a success in
 * between resets the run), open refuses without calling, the timeout turns
 * it half-open at exactly open time + timeout, max_requests probes go
 * through and no more, their successes close it; a failed probe reopens it
 * and restarts the timeout. Guards: a wrong trip count, a trip that ignores
 * the reset, an open breaker that calls, a timeout off by any amount, no
 * probe limit, a half-open breaker that closes early or never.
 */
TEST(cycle_on_consecutive_failures)
{
	weft_breaker_settings s = fake_settings();
	s.trip_consecutive_failures = 3;
	s.max_requests = 2;
	weft_breaker *b = make(&s);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_CLOSED);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);

	run_script(b, "SSFFSFF", "ccccccc");
	ASSERT_COUNTS(b, 7, 3, 4, 0, 2);
	run_script(b, "F", "o");
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0); /* a new generation */
	run_script(b, "rrr", "ooo");
	ASSERT_LOG("c>o");

	advance(10 * SEC - 1);
	run_script(b, "r", "o");
	advance(1);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	ASSERT_LOG("c>o o>h");

	/* Two probes out at once (two-step), a third refused. */
	weft_breaker_ticket t1, t2, t3;
	ASSERT_EQ(weft_breaker_allow(b, &t1), 0);
	ASSERT_EQ(weft_breaker_allow(b, &t2), 0);
	ASSERT_EQ(weft_breaker_allow(b, &t3), EBUSY);
	run_script(b, "b", "h");
	weft_breaker_done(b, &t1, true);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	ASSERT_COUNTS(b, 2, 1, 0, 1, 0);
	run_script(b, "b", "h"); /* finished probes still count against the limit */
	weft_breaker_done(b, &t2, true);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_CLOSED);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	ASSERT_LOG("c>o o>h h>c");

	/* Again, and this time a probe fails: open, with a fresh timeout. */
	run_script(b, "FFF", "cco");
	advance(10 * SEC);
	run_script(b, "S", "h");
	advance(5 * SEC);
	run_script(b, "F", "o");
	advance(10 * SEC - 1);
	run_script(b, "r", "o");
	advance(1);
	run_script(b, "SS", "hc");
	ASSERT_LOG("c>o o>h h>c c>o o>h h>o o>h h>c");
	ASSERT_EQ(atomic_load(&lg.overlapped), 0);
	weft_breaker_free(b);
}

/*
 * All-zero settings are gobreaker's defaults: trip after more than 5
 * consecutive failures, 60 s open, one probe.
 */
TEST(defaults_are_gobreakers)
{
	weft_breaker_settings s = fake_settings();
	s.timeout_ns = 0;
	weft_breaker *b = make(&s);
	run_script(b, "FFFFF", "ccccc");
	run_script(b, "F", "o");
	advance(60 * SEC - 1);
	run_script(b, "r", "o");
	advance(1);
	weft_breaker_ticket t;
	ASSERT_EQ(weft_breaker_allow(b, &t), 0);
	ASSERT_EQ(weft_breaker_allow(b, &t), EBUSY); /* t untouched */
	weft_breaker_done(b, &t, true);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_CLOSED);
	ASSERT_LOG("c>o o>h h>c");
	weft_breaker_free(b);

	/* NULL settings: the same, on the real clock, no callback. */
	ASSERT_EQ(weft_breaker_new(&b, NULL), 0);
	ASSERT_EQ(strcmp(weft_breaker_name(b), ""), 0);
	run_script(b, "FFFFFFrr", "cccccooo");
	weft_breaker_free(b);
}

/*
 * The failure-ratio rule trips after a failure once at least
 * trip_min_requests calls were let through and failures / requests >=
 * ratio; successes never trip. With a consecutive rule too, either trips.
 * Guards: a ratio over the wrong denominator, a strict comparison (of the
 * ratio, or of the minimum: 2 of exactly 4 trips), the minimum ignored, a
 * trip checked on success.
 */
TEST(failure_ratio_trips)
{
	weft_breaker_settings s = fake_settings();
	s.trip_failure_ratio = 0.5;
	s.trip_min_requests = 4;
	weft_breaker *b = make(&s);
	/* F S F: 2 of 3 failed, but only 3 requests. S: 2 of 4, on a success.
	 * F: 3 of 5. */
	run_script(b, "FSFSF", "cccco");
	weft_breaker_free(b);

	b = make(&s);
	/* Exactly the ratio: 3 of 6. */
	run_script(b, "SSSFFF", "ccccco");
	weft_breaker_free(b);

	b = make(&s);
	/* Exactly the minimum, on a failure: 2 of 4. */
	run_script(b, "SFSF", "ccco");
	weft_breaker_free(b);

	b = make(&s);
	/* Below it forever: 1 failure in 3. */
	run_script(b, "SSFSSFSSFSSFSSF", "ccccccccccccccc");
	ASSERT_COUNTS(b, 15, 10, 5, 0, 1);
	weft_breaker_free(b);

	/* Ratio or consecutive failures, whichever comes first. */
	s.trip_consecutive_failures = 2;
	s.trip_failure_ratio = 0.9;
	s.trip_min_requests = 100;
	b = make(&s);
	run_script(b, "SFSFSFF", "cccccco");
	weft_breaker_free(b);
	ASSERT_LOG("c>o c>o c>o c>o");
}

struct trip_arg {
	int calls;
	weft_breaker_counts last;
	weft_breaker *b;
	bool reentered;
};

/* Trip when 2 failures among at least 3 requests; also calls back into the
 * breaker (no lock is held). */
static bool custom_trip(const weft_breaker_counts *c, void *arg)
{
	struct trip_arg *t = arg;
	t->calls++;
	t->last = *c;
	weft_breaker_counts now;
	weft_breaker_get_counts(t->b, &now);
	t->reentered = now.requests == c->requests;
	return c->total_failures >= 2 && c->requests >= 3;
}

/*
 * ready_to_trip replaces the built-in rules; it is called after each
 * failure in closed state only, with the counts including that failure, and
 * may call into the breaker.
 */
TEST(ready_to_trip_callback)
{
	struct trip_arg t = {0};
	weft_breaker_settings s = fake_settings();
	s.ready_to_trip = custom_trip;
	s.trip_consecutive_failures = 1; /* ignored: the callback decides */
	s.arg = &t;
	weft_breaker *b = make(&s);
	t.b = b;
	run_script(b, "FF", "cc"); /* 2 failures, 2 requests */
	ASSERT_EQ(t.calls, 2);
	ASSERT_EQ(t.last.requests, 2);
	ASSERT_EQ(t.last.total_failures, 2);
	ASSERT_EQ(t.last.consecutive_failures, 2);
	ASSERT(t.reentered);
	run_script(b, "SS", "cc");
	ASSERT_EQ(t.calls, 2); /* not on success */
	run_script(b, "F", "o");
	ASSERT_EQ(t.calls, 3);
	ASSERT_EQ(t.last.requests, 5);
	ASSERT_EQ(t.last.consecutive_successes, 0);
	advance(10 * SEC);
	run_script(b, "F", "o"); /* a failed probe: no callback needed */
	ASSERT_EQ(t.calls, 3);
	ASSERT_LOG("c>o o>h h>o");
	weft_breaker_free(b);
}

/* Says "trip", but first lets the interval pass and clears the counts (a
 * call into the breaker *arg), as another goroutine could while it runs. */
static bool trip_after_clearing(const weft_breaker_counts *c, void *arg)
{
	(void)c;
	advance(SEC);
	weft_breaker_counts now;
	weft_breaker_get_counts(*(weft_breaker **)arg, &now);
	return true;
}

/*
 * A ready_to_trip verdict on counts that were cleared while it ran is
 * stale, and dropped: the breaker stays closed. Guards: a trip decided on
 * a snapshot of an earlier generation.
 */
TEST(stale_trip_verdict_dropped)
{
	static weft_breaker *b;
	weft_breaker_settings s = fake_settings();
	s.interval_ns = SEC;
	s.ready_to_trip = trip_after_clearing;
	s.arg = &b;
	b = make(&s);
	run_script(b, "FFF", "ccc");
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	ASSERT_LOG("");
	weft_breaker_free(b);
}

/* Takes 3 s of the test's clock to decide (it logs, or asks someone), then
 * says "trip". */
static bool slow_trip(const weft_breaker_counts *c, void *arg)
{
	(void)c;
	(void)arg;
	advance(3 * SEC);
	return true;
}

/*
 * The open state lasts the timeout from when it opened, which is after a
 * slow ready_to_trip returned: open until 3 s + 10 s - 1 ns after the
 * failing call began, half-open at 3 s + 10 s. Guards: the opening stamped
 * with the time read before the callback (half-open 3 s early; at once for
 * a callback slower than the timeout).
 */
TEST(open_lasts_the_timeout_after_a_slow_trip_verdict)
{
	weft_breaker_settings s = fake_settings();
	s.ready_to_trip = slow_trip;
	weft_breaker *b = make(&s);
	run_script(b, "F", "o");
	advance(10 * SEC - 1);
	run_script(b, "r", "o");
	advance(1);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	ASSERT_LOG("c>o o>h");
	weft_breaker_free(b);
}

static bool not_found_is_fine(int result, void *arg)
{
	(void)arg;
	return result == 0 || result == ENOENT;
}

/* is_successful classifies results; execute still returns fn's own. */
TEST(is_successful_classifier)
{
	weft_breaker_settings s = fake_settings();
	s.trip_consecutive_failures = 2;
	s.is_successful = not_found_is_fine;
	weft_breaker *b = make(&s);
	run_script(b, "NFNFNNSN", "cccccccc");
	ASSERT_COUNTS(b, 8, 6, 2, 4, 0);
	run_script(b, "FF", "co");
	weft_breaker_free(b);

	/* Without it, ENOENT is a failure like any other. */
	s = fake_settings();
	s.trip_consecutive_failures = 2;
	b = make(&s);
	run_script(b, "NN", "co");
	weft_breaker_free(b);
}

/*
 * In closed state the counts are cleared every interval: a new generation,
 * so failures on either side of a clearing do not add up, and a call let
 * through before it reports into nothing. Guards: no clearing, clearing at
 * the wrong time, a stale result counted.
 */
TEST(interval_clears_counts)
{
	weft_breaker_settings s = fake_settings();
	s.interval_ns = SEC;
	s.trip_consecutive_failures = 3;
	weft_breaker *b = make(&s);
	run_script(b, "FF", "cc");
	advance(SEC - 1);
	ASSERT_COUNTS(b, 2, 0, 2, 0, 2);
	weft_breaker_ticket t;
	ASSERT_EQ(weft_breaker_allow(b, &t), 0);
	advance(1);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	weft_breaker_done(b, &t, false); /* let through before the clearing */
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	run_script(b, "FF", "cc");
	advance(SEC); /* the next clearing: a period after the last */
	run_script(b, "FF", "cc");
	advance(SEC / 2);
	run_script(b, "F", "o");
	/* Open: the interval does not apply (the timeout does). */
	advance(5 * SEC);
	run_script(b, "r", "o");
	ASSERT_LOG("c>o");
	weft_breaker_free(b);
}

/*
 * A custom clock may read negative (it must only not go backwards): the
 * interval still clears the counts, also across zero, and the timeout
 * still turns an open breaker half-open, on time. Guards: expiry = now +
 * period saturated by a test that overflows for a negative now (NEVER -
 * now), so the counts were never cleared and the breaker never left open.
 */
TEST(negative_clock_times)
{
	weft_breaker_settings s = fake_settings();
	atomic_store(&fake_now, -1000 * SEC);
	s.interval_ns = SEC;
	s.trip_consecutive_failures = 3;
	weft_breaker *b = make(&s);
	run_script(b, "FF", "cc");
	advance(SEC);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	run_script(b, "FFF", "cco");
	advance(10 * SEC - 1);
	run_script(b, "r", "o");
	advance(1);
	run_script(b, "S", "c"); /* the one probe */
	atomic_store(&fake_now, -SEC / 2);
	run_script(b, "FF", "cc"); /* a new generation, due at +SEC / 2 */
	advance(SEC);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	ASSERT_LOG("c>o o>h h>c");
	weft_breaker_free(b);
}

/*
 * A result reported after the breaker moved on (tripped, went half-open,
 * closed) is ignored, as gobreaker does: a slow call from the closed state
 * cannot close a half-open breaker nor reopen a closed one, and a slow
 * probe cannot touch the closed state that followed. Guards: results
 * counted regardless of generation.
 */
TEST(stale_generation_ignored)
{
	weft_breaker_settings s = fake_settings();
	s.trip_consecutive_failures = 2;
	weft_breaker *b = make(&s);
	weft_breaker_ticket slow_ok, slow_fail;
	ASSERT_EQ(weft_breaker_allow(b, &slow_ok), 0);
	ASSERT_EQ(weft_breaker_allow(b, &slow_fail), 0);
	run_script(b, "FF", "co");
	weft_breaker_done(b, &slow_fail, false); /* open: ignored */
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);
	advance(10 * SEC);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	weft_breaker_done(b, &slow_ok, true); /* half-open: must not close it */
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	ASSERT_COUNTS(b, 0, 0, 0, 0, 0);

	weft_breaker_ticket probe, late_probe;
	ASSERT_EQ(weft_breaker_allow(b, &probe), 0);
	weft_breaker_done(b, &probe, true);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_CLOSED);
	ASSERT_EQ(weft_breaker_allow(b, &late_probe), 0); /* closed now: a normal call */
	run_script(b, "F", "c");
	weft_breaker_done(b, &late_probe, false);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_OPEN); /* same generation: counts */
	ASSERT_LOG("c>o o>h h>c c>o");
	weft_breaker_free(b);
}

struct reentry {
	weft_breaker *b;
	int depth;
	int executed;
};

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

/* On open -> half-open, run a probe from inside the callback: it succeeds
 * and closes the breaker, a transition made while this one is being
 * delivered, reported after it. */
static void probe_from_callback(weft_breaker *b, weft_breaker_state from, weft_breaker_state to,
                                void *arg)
{
	struct reentry *r = arg;
	on_change(b, from, to, NULL);
	if (to == WEFT_BREAKER_HALF_OPEN && r->depth++ == 0) {
		r->executed = weft_breaker_execute(b, succeed, NULL) == 0;
		/* Not yet reported: the outer delivery does it after we return. */
		weft_mutex_lock(&lg.mu);
		bool seen = strstr(lg.buf, "h>c") != NULL;
		weft_mutex_unlock(&lg.mu);
		if (seen)
			atomic_fetch_add(&lg.mismatched, 1);
	}
}

/*
 * on_state_change runs without the breaker's lock: it may execute calls,
 * and the transitions those make are reported after the current one, in
 * order. Guards: a callback under the lock (deadlock), transitions
 * reported out of order, nested callbacks.
 */
TEST(state_change_callback_reentrant)
{
	struct reentry r = {0};
	weft_breaker_settings s = fake_settings();
	lg.check_state = false;
	s.trip_consecutive_failures = 1;
	s.on_state_change = probe_from_callback;
	s.arg = &r;
	weft_breaker *b = make(&s);
	r.b = b;
	run_script(b, "F", "o");
	advance(10 * SEC);
	/* The query reports what it found; the probe its callback ran has
	 * closed the breaker, and been reported, by the time it returns. */
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	ASSERT(r.executed);
	ASSERT_LOG("c>o o>h h>c");
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_CLOSED);
	ASSERT_EQ(atomic_load(&lg.overlapped), 0);
	weft_breaker_free(b);
}

/* ---------------------------------------------------------------- concurrency */

static struct probes {
	weft_breaker *b;
	weft_chan *release; /* closed to let the probes finish */
	atomic_int running; /* inside fn */
	atomic_int ran;
	atomic_int busy;
	atomic_int other;
	weft_wg done;
} pr;

static int blocking_probe(void *arg)
{
	(void)arg;
	atomic_fetch_add(&pr.ran, 1);
	atomic_fetch_add(&pr.running, 1);
	weft_chan_recv(pr.release, NULL);
	atomic_fetch_sub(&pr.running, 1);
	return 0;
}

static void prober(void *arg)
{
	(void)arg;
	int r = weft_breaker_execute(pr.b, blocking_probe, NULL);
	if (r == EBUSY)
		atomic_fetch_add(&pr.busy, 1);
	else if (r != 0)
		atomic_fetch_add(&pr.other, 1);
	weft_wg_done(&pr.done);
}

/*
 * 64 goroutines and 2 pthreads call a half-open breaker at once, each
 * probe blocking: exactly max_requests run, the rest get EBUSY at once;
 * when the probes succeed it closes. Guards: no probe limit, a limit
 * checked without the lock (more probes than allowed).
 */
TEST(half_open_probe_limit_concurrent)
{
	enum { G = 64, P = 2, MAX = 3 };
	weft_breaker_settings s = fake_settings();
	s.trip_consecutive_failures = 1;
	s.max_requests = MAX;
	pr = (struct probes){0};
	pr.b = make(&s);
	ASSERT_EQ(weft_chan_make(&pr.release, 0, 0), 0);
	run_script(pr.b, "F", "o");
	advance(10 * SEC);
	weft_wg_add(&pr.done, G + P);
	pthread_t th[P];
	for (int i = 0; i < P; i++)
		test_start_thread(&th[i], prober, NULL);
	for (int i = 0; i < G; i++)
		GO(prober, NULL);
	int64_t until = test_now_ns() + 10 * SEC * test_slowdown();
	while (atomic_load(&pr.busy) + atomic_load(&pr.running) < G + P && test_now_ns() < until)
		weft_sleep(TEST_MS);
	ASSERT_EQ(atomic_load(&pr.running), MAX);
	ASSERT_EQ(atomic_load(&pr.busy), G + P - MAX);
	ASSERT_EQ(weft_breaker_get_state(pr.b), WEFT_BREAKER_HALF_OPEN);
	weft_chan_close(pr.release);
	weft_wg_wait(&pr.done);
	for (int i = 0; i < P; i++)
		test_join_thread(th[i]);
	ASSERT_EQ(atomic_load(&pr.ran), MAX);
	ASSERT_EQ(atomic_load(&pr.other), 0);
	ASSERT_EQ(weft_breaker_get_state(pr.b), WEFT_BREAKER_CLOSED);
	ASSERT_LOG("c>o o>h h>c");
	weft_chan_release(pr.release);
	weft_breaker_free(pr.b);
}

static bool never_trip(const weft_breaker_counts *c, void *arg)
{
	(void)c;
	(void)arg;
	return false;
}

static struct hammer {
	weft_breaker *b;
	int per_worker;
	int64_t until; /* if set: call until then, pausing now and then */
	atomic_llong ok, failed, refused;
	weft_wg done;
} hm;

static int coin(void *arg)
{
	return (int)(uintptr_t)arg;
}

static void hammer_worker(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
	long long ok = 0, failed = 0, refused = 0;
	for (int i = 0; hm.until ? weft_now() < hm.until : i < hm.per_worker; i++) {
		if (hm.until && i % 8 == 0)
			weft_sleep(20 * WEFT_MICROSECOND);
		bool fail = test_rand32(&seed) % 3 == 0;
		int r;
		if (i % 2) {
			r = weft_breaker_execute(hm.b, coin, (void *)(uintptr_t)(fail ? EIO : 0));
		} else {
			weft_breaker_ticket t;
			r = weft_breaker_allow(hm.b, &t);
			if (r == 0) {
				if (i % 8 == 0)
					weft_yield();
				weft_breaker_done(hm.b, &t, !fail);
				r = fail ? EIO : 0;
			}
		}
		if (r == EAGAIN || r == EBUSY)
			refused++;
		else if (r == 0)
			ok++;
		else
			failed++;
	}
	atomic_fetch_add(&hm.ok, ok);
	atomic_fetch_add(&hm.failed, failed);
	atomic_fetch_add(&hm.refused, refused);
	weft_wg_done(&hm.done);
}

static void hammer(weft_breaker *b, int goroutines, int threads, int per_worker, int64_t for_ns)
{
	hm = (struct hammer){.b = b, .per_worker = per_worker};
	if (for_ns)
		hm.until = weft_now() + for_ns;
	weft_wg_add(&hm.done, goroutines + threads);
	pthread_t th[4];
	ASSERT_LE(threads, 4);
	for (int i = 0; i < threads; i++)
		test_start_thread(&th[i], hammer_worker, (void *)(uintptr_t)(1000 + i));
	for (int i = 0; i < goroutines; i++)
		GO(hammer_worker, (void *)(uintptr_t)i);
	weft_wg_wait(&hm.done);
	for (int i = 0; i < threads; i++)
		test_join_thread(th[i]);
}

/*
 * 16 goroutines and 2 pthreads make thousands of calls each through a
 * breaker that never trips, half through execute and half two-step: every
 * call is counted, successes and failures exactly. Guards: counts updated
 * without the lock (lost updates), a call counted twice.
 */
TEST(concurrent_counts_exact)
{
	weft_breaker_settings s = {.ready_to_trip = never_trip};
	weft_breaker *b = make(&s);
	int per = TEST_SIZE(20000, 3000);
	hammer(b, 16, 2, per, 0);
	long long total = 18LL * per;
	ASSERT_EQ(atomic_load(&hm.refused), 0);
	ASSERT_EQ(atomic_load(&hm.ok) + atomic_load(&hm.failed), total);
	weft_breaker_counts c = counts(b);
	ASSERT_EQ(c.requests, total);
	ASSERT_EQ(c.total_successes, atomic_load(&hm.ok));
	ASSERT_EQ(c.total_failures, atomic_load(&hm.failed));
	ASSERT(c.consecutive_successes == 0 || c.consecutive_failures == 0);
	weft_breaker_free(b);
}

/*
 * The same load for 300 ms on a breaker that trips (3 consecutive
 * failures), waits 1 ms open and probes with 2 calls, on the real clock: it
 * cycles many times while goroutines and pthreads call it. The callbacks form one chain
 * (each from is the previous to, starting closed), never run two at a time,
 * and end in the state the breaker is in. Guards: transitions lost or
 * reported twice, out of order, or concurrently.
 */
TEST(concurrent_transitions_ordered)
{
	weft_breaker_settings s = {
		.trip_consecutive_failures = 3,
		.timeout_ns = TEST_MS,
		.max_requests = 2,
		.on_state_change = on_change,
	};
	log_reset(false);
	weft_breaker *b = make(&s);
	hammer(b, 8, 2, 0, 300 * TEST_MS);
	weft_breaker_state end = weft_breaker_get_state(b);
	weft_mutex_lock(&lg.mu);
	char *buf = strdup(lg.buf);
	int n = lg.n;
	weft_mutex_unlock(&lg.mu);
	ASSERT(buf != NULL);
	printf("    %d transitions, %lld calls refused\n", n, atomic_load(&hm.refused));
	ASSERT_GT(n, 30);
	ASSERT_EQ(atomic_load(&lg.overlapped), 0);
	char prev = 'c';
	int seen = 0;
	for (char *p = buf; *p; p += p[3] ? 4 : 3) {
		if (p[0] != prev || p[1] != '>' || p[2] == p[0])
			FAIL("transition %d \"%.3s\" does not follow %c (all: %s)", seen, p, prev,
			     buf);
		prev = p[2];
		seen++;
	}
	ASSERT_EQ(seen, n);
	ASSERT_EQ(prev, letter(end));
	free(buf);
	weft_breaker_free(b);
}

/* ---------------------------------------------------------------- the real clock */

/*
 * On weft_now(): open for the timeout, then half-open. Run from a foreign
 * thread, as a plain program would.
 */
TEST_THREAD(real_clock_from_foreign_thread)
{
	log_reset(true);
	weft_breaker_settings s = {
		.name = "real",
		.trip_consecutive_failures = 1,
		.timeout_ns = 300 * TEST_MS,
		.on_state_change = on_change,
	};
	weft_breaker *b = make(&s);
	ASSERT_EQ(strcmp(weft_breaker_name(b), "real"), 0);
	run_script(b, "Fr", "oo");
	int64_t t = weft_now(); /* after the trip: its timeout has begun */
	weft_sleep_until(t + 300 * TEST_MS);
	ASSERT_EQ(weft_breaker_get_state(b), WEFT_BREAKER_HALF_OPEN);
	run_script(b, "S", "c");
	ASSERT_LOG("c>o o>h h>c");
	weft_breaker_free(b);
	weft_breaker_free(NULL);
	ASSERT_EQ(strcmp(weft_breaker_state_name(WEFT_BREAKER_HALF_OPEN), "half-open"), 0);
	ASSERT_EQ(strcmp(weft_breaker_state_name(WEFT_BREAKER_OPEN), "open"), 0);
	ASSERT_EQ(strcmp(weft_breaker_state_name(WEFT_BREAKER_CLOSED), "closed"), 0);
	ASSERT_EQ(strcmp(weft_breaker_state_name((weft_breaker_state)7), "unknown"), 0);
}

/* ---------------------------------------------------------------- errors and misuse */

TEST(new_rejects_bad_settings)
{
	weft_breaker *b = NULL;
	ASSERT_EQ(weft_breaker_new(NULL, NULL), EINVAL);
	weft_breaker_settings bad[] = {
		{.interval_ns = -1},          {.timeout_ns = -1},
		{.trip_failure_ratio = -0.1}, {.trip_failure_ratio = 1.5},
		{.trip_failure_ratio = NAN},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ASSERT_EQ(weft_breaker_new(&b, &bad[i]), EINVAL);
	ASSERT(b == NULL);
	/* A long name is cut, not overrun. */
	char name[200];
	memset(name, 'x', sizeof name - 1);
	name[sizeof name - 1] = 0;
	ASSERT_EQ(weft_breaker_new(&b, &(weft_breaker_settings){.name = name}), 0);
	ASSERT_EQ(strlen(weft_breaker_name(b)), 63);
	weft_breaker_free(b);
}

static int misuse_main(void *arg)
{
	const char *which = arg;
	weft_breaker *b;
	weft_breaker *other;
	weft_breaker_ticket t;
	if (weft_breaker_new(&b, &(weft_breaker_settings){.name = "m"}) != 0 ||
	    weft_breaker_new(&other, NULL) != 0)
		return 3;
	if (!strcmp(which, "done_twice")) {
		if (weft_breaker_allow(b, &t) == 0) {
			weft_breaker_done(b, &t, true);
			weft_breaker_done(b, &t, true);
		}
	} else if (!strcmp(which, "done_unallowed")) {
		memset(&t, 0, sizeof t);
		weft_breaker_done(b, &t, false);
	} else if (!strcmp(which, "done_other")) {
		if (weft_breaker_allow(other, &t) == 0)
			weft_breaker_done(b, &t, true);
	} else if (!strcmp(which, "execute_null")) {
		weft_breaker_execute(b, NULL, NULL);
	}
	printf("survived\n");
	return 0;
}

CHILD(breaker_misuse)
{
	const char *which = getenv("BR_MISUSE");
	if (getenv("BR_FOREIGN"))
		return misuse_main((void *)which);
	return weft_main(misuse_main, (void *)which);
}

/* Misuse is a fatal error naming it, from a goroutine and a foreign thread. */
TEST(misuse_is_fatal)
{
	static const struct {
		const char *which, *msg;
	} cases[] = {
		{"done_twice",
	         "fatal error: breaker: done of a ticket not allowed or already done on \"m\""},
		{"done_unallowed",
	         "fatal error: breaker: done of a ticket not allowed or already done"},
		{"done_other",
	         "fatal error: breaker: done of a ticket not allowed or already done"},
		{"execute_null", "fatal error: breaker: execute of a NULL function on \"m\""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (int foreign = 0; foreign < 2; foreign++) {
			char env1[64];
			snprintf(env1, sizeof env1, "BR_MISUSE=%s", cases[i].which);
			const char *env[] = {env1, foreign ? "BR_FOREIGN=1" : NULL, NULL};
			EXPECT_FATAL("breaker_misuse", env, 5000, cases[i].msg);
		}
	}
}
