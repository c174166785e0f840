/* SPDX-License-Identifier: MIT */
/*
 * chantimer_test.c - channel timers (src/chan/time.c) against a callback held
 * in flight: a firing popped from its heap whose callback has not yet taken
 * the timer's lock when the user resets the timer. The hook
 * weft__chantimer_fire_hook holds the callback there for as long as the
 * test wants, which no outside load can arrange reliably. And func timers
 * whose goroutine cannot start for want of memory: weft__chantimer_go_hook
 * fails the starts a test asks it to.
 */
#include "test.h"

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include "timer.h"

#define MS TEST_MS

static atomic_int held;    /* the first callback has reached the hook */
static atomic_int release; /* the test lets it go on */

/* Holds the first callback to come by until the test releases it (bounded:
 * a broken test must not hang its process for ever). */
static void hold_first(void)
{
	int zero = 0;
	if (!atomic_compare_exchange_strong(&held, &zero, 1))
		return;
	int64_t end = test_now_ns() + 10 * 1000 * MS * test_slowdown();
	while (!atomic_load(&release) && test_now_ns() < end)
		;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) != 0)
		;
}

struct tick_log {
	weft_chan *ticks;   /* the ticker's */
	weft_chan *stop;    /* closed by the test */
	atomic_int n;       /* ticks received */
	weft_wg done;
};

/* Receives ticks until stop is closed: a parked select takes each tick as it
 * is sent, so two sent back to back are both seen (the second would be
 * dropped into a full buffer otherwise). */
static void receiver(void *arg)
{
	struct tick_log *l = arg;
	int64_t v;
	for (;;) {
		weft_case cs[2] = {WEFT_RECV_CASE(l->ticks, &v), WEFT_RECV_CASE(l->stop, NULL)};
		int idx = -1;
		if (weft_select(cs, 2, &idx) != 0 || idx == 1)
			break;
		atomic_fetch_add(&l->n, 1);
	}
	weft_wg_done(&l->done);
}

/* Wait until tk's first callback is held in hold_first; then start a
 * receiver that counts tk's ticks into l. */
static void hold_then_log(weft_ticker *tk, struct tick_log *l)
{
	int64_t end = test_now_ns() + 5000 * MS * test_slowdown();
	while (!atomic_load(&held) && test_now_ns() < end)
		sleep_ns(MS);
	ASSERT_EQ(atomic_load(&held), 1);
	l->ticks = weft_ticker_chan(tk);
	ASSERT_EQ(weft_chan_make(&l->stop, 0, 0), 0);
	weft_wg_add(&l->done, 1);
	ASSERT_EQ(weft_go(receiver, l), 0);
}

/* Stop tk and l's receiver, free both; returns the ticks l counted by the
 * time of the call. */
static int stop_log(weft_ticker *tk, struct tick_log *l)
{
	int n = atomic_load(&l->n);
	weft_ticker_stop(tk);
	weft_chan_close(l->stop);
	weft_wg_wait(&l->done);
	weft_ticker_free(tk);
	weft_chan_release(l->stop);
	__atomic_store_n(&weft__chantimer_fire_hook, NULL, __ATOMIC_RELAXED);
	return n;
}

/*
 * A ticker reset while its previous firing's callback is in flight, that
 * callback delayed past the new period's first tick: that tick comes once.
 * The stale callback found the timer due and sent it, and the entry the
 * reset queued sent it again (two ticks for one slot; the bug this guards).
 * Window: from the release until well before the second tick of the new
 * period.
 */
TEST_THREAD(ticker_reset_with_callback_in_flight)
{
	int64_t period = 200 * MS * test_slowdown();
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	__atomic_store_n(&weft__chantimer_fire_hook, hold_first, __ATOMIC_RELAXED);
	weft_ticker *tk;
	ASSERT_EQ(weft_ticker_new(&tk, 10 * MS), 0);
	static struct tick_log l;
	hold_then_log(tk, &l);

	int64_t reset_at = test_now_ns();
	ASSERT_EQ(weft_ticker_reset(tk, period), 0);
	sleep_ns(period + period / 4); /* the held callback is now late */
	atomic_store(&release, 1);
	while (test_now_ns() < reset_at + period + period * 3 / 4)
		sleep_ns(MS);
	int n = stop_log(tk, &l);
	printf("    %d tick(s) between the release and the next slot\n", n);
	ASSERT_EQ(n, 1);
}

/*
 * A ticker whose firing comes late by more than a period (its callback held
 * in flight for 2.5 periods) sends one tick for the slots it missed and
 * resumes on its original schedule: the next tick comes at the next slot
 * after now, half a period later, not at once. Window: from the release
 * until a quarter period after it. Guards: a catch-up that lands on the
 * last missed slot (in the past), so the ticker fires again at once and a
 * receiver gets two ticks back to back.
 */
TEST_THREAD(late_ticker_skips_missed_ticks)
{
	int64_t period = 100 * MS * test_slowdown();
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	__atomic_store_n(&weft__chantimer_fire_hook, hold_first, __ATOMIC_RELAXED);
	int64_t t0 = test_now_ns();
	weft_ticker *tk;
	ASSERT_EQ(weft_ticker_new(&tk, period), 0);
	static struct tick_log l;
	hold_then_log(tk, &l);
	while (test_now_ns() < t0 + period * 5 / 2)
		sleep_ns(MS);
	int64_t released = test_now_ns();
	atomic_store(&release, 1);
	while (test_now_ns() < released + period / 4)
		sleep_ns(MS);
	int n = stop_log(tk, &l);
	printf("    %d tick(s) in the quarter period after the late firing\n", n);
	ASSERT_EQ(n, 1);
}

/* ---------------------------------------------------------------- func timers without memory */

static atomic_int go_fails; /* starts still to fail */
static atomic_int go_calls; /* starts tried */
static atomic_int fn_runs;  /* the timer's function ran */

/* weft_go, except that the first go_fails starts fail as if out of memory. */
static int failing_go(void (*fn)(void *), void *arg)
{
	atomic_fetch_add(&go_calls, 1);
	if (atomic_fetch_sub(&go_fails, 1) > 0)
		return ENOMEM;
	return weft_go(fn, arg);
}

static void count_run(void *arg)
{
	(void)arg;
	atomic_fetch_add(&fn_runs, 1);
}

/* Waits (bounded) until the timer's function has run; returns the runs. */
static int wait_runs(int64_t bound_ms)
{
	int64_t end = test_now_ns() + bound_ms * MS * test_slowdown();
	while (atomic_load(&fn_runs) == 0 && test_now_ns() < end)
		sleep_ns(MS);
	return atomic_load(&fn_runs);
}

/*
 * A func timer whose goroutine cannot start (no memory) stays armed and tries
 * again, backing off (1, 2, 4 ms): the function runs once, on the fourth
 * try. Guards: a failed start that drops the function, or retries that start
 * it twice.
 */
TEST_THREAD(func_timer_retries_a_failed_start)
{
	atomic_store(&go_fails, 3);
	__atomic_store_n(&weft__chantimer_go_hook, failing_go, __ATOMIC_RELAXED);
	weft_timer *t;
	ASSERT_EQ(weft_after_func(&t, MS, count_run, NULL), 0);
	ASSERT_EQ(wait_runs(5000), 1);
	sleep_ns(20 * MS); /* no further start */
	ASSERT_EQ(atomic_load(&fn_runs), 1);
	ASSERT_EQ(atomic_load(&go_calls), 4);
	ASSERT(!weft_timer_stop(t));
	weft_timer_free(t);
	__atomic_store_n(&weft__chantimer_go_hook, NULL, __ATOMIC_RELAXED);
}

/*
 * The retries of a func timer whose starts keep failing back off: 1, 2, 4,
 * 8 ms and so on, so in 100 ms it tries about 7 times (the first at 1 ms),
 * never once a millisecond. A late host only makes fewer tries. Guards: a
 * retry interval that does not double (a timer that cannot start its
 * goroutine then spins the timer heap every millisecond while memory is
 * short).
 */
TEST_THREAD(func_timer_retries_back_off)
{
	atomic_store(&go_fails, 1 << 30);
	__atomic_store_n(&weft__chantimer_go_hook, failing_go, __ATOMIC_RELAXED);
	weft_timer *t;
	ASSERT_EQ(weft_after_func(&t, MS, count_run, NULL), 0);
	sleep_ns(100 * MS);
	int calls = atomic_load(&go_calls);
	printf("    %d tries in 100 ms\n", calls);
	ASSERT_GE(calls, 1);
	ASSERT_LE(calls, 10);
	ASSERT(weft_timer_stop(t)); /* still armed for the next try */
	weft_timer_free(t);
	ASSERT_EQ(atomic_load(&fn_runs), 0);
	__atomic_store_n(&weft__chantimer_go_hook, NULL, __ATOMIC_RELAXED);
}

/*
 * A func timer reset while its firing's callback is in flight, the callback
 * then delayed past the reset's deadline, and its start failing for want of
 * memory: the function still runs, once. The callback finds the timer due and
 * starts the goroutine; the reset's entry is already queued, and on a failed
 * start it must become the retry: left alone, it found the timer disarmed
 * and the function never ran (the bug this guards, fixed in c9b48f6).
 */
TEST_THREAD(func_timer_retry_after_a_reset_in_flight)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	atomic_store(&go_fails, 1);
	__atomic_store_n(&weft__chantimer_go_hook, failing_go, __ATOMIC_RELAXED);
	__atomic_store_n(&weft__chantimer_fire_hook, hold_first, __ATOMIC_RELAXED);
	weft_timer *t;
	ASSERT_EQ(weft_after_func(&t, 10 * MS, count_run, NULL), 0);
	int64_t end = test_now_ns() + 5000 * MS * test_slowdown();
	while (!atomic_load(&held) && test_now_ns() < end)
		sleep_ns(MS);
	ASSERT_EQ(atomic_load(&held), 1);
	weft_timer_reset(t, MS); /* queues an entry; the held callback is stale */
	sleep_ns(5 * MS * test_slowdown()); /* the entry is due by the release */
	atomic_store(&release, 1);
	ASSERT_EQ(wait_runs(5000), 1);
	sleep_ns(20 * MS); /* no further start */
	ASSERT_EQ(atomic_load(&fn_runs), 1);
	ASSERT_EQ(atomic_load(&go_calls), 2);
	weft_timer_free(t);
	__atomic_store_n(&weft__chantimer_fire_hook, NULL, __ATOMIC_RELAXED);
	__atomic_store_n(&weft__chantimer_go_hook, NULL, __ATOMIC_RELAXED);
}
