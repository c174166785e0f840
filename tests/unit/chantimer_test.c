/* SPDX-License-Identifier: MIT */
/*
 * chantimer_test.c - channel timers (src/chan/time.c) against a callback held
 * in flight: a firing popped from its heap whose callback has not yet taken
 * the timer's lock when the user resets the timer. The hook
 * weft__chantimer_fire_hook holds the callback there for as long as the
 * test wants, which no outside load can arrange reliably.
 */
#include "test.h"

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
	int64_t end = test_now_ns() + 5000 * MS * test_slowdown();
	while (!atomic_load(&held) && test_now_ns() < end)
		sleep_ns(MS);
	ASSERT_EQ(atomic_load(&held), 1);

	static struct tick_log l;
	l.ticks = weft_ticker_chan(tk);
	ASSERT_EQ(weft_chan_make(&l.stop, 0, 0), 0);
	weft_wg_add(&l.done, 1);
	ASSERT_EQ(weft_go(receiver, &l), 0);

	int64_t reset_at = test_now_ns();
	ASSERT_EQ(weft_ticker_reset(tk, period), 0);
	sleep_ns(period + period / 4); /* the held callback is now late */
	atomic_store(&release, 1);
	while (test_now_ns() < reset_at + period + period * 3 / 4)
		sleep_ns(MS);
	int n = atomic_load(&l.n);
	weft_ticker_stop(tk);
	weft_chan_close(l.stop);
	weft_wg_wait(&l.done);
	printf("    %d tick(s) between the release and the next slot\n", n);
	ASSERT_EQ(n, 1);
	weft_ticker_free(tk);
	weft_chan_release(l.stop);
	__atomic_store_n(&weft__chantimer_fire_hook, NULL, __ATOMIC_RELAXED);
}
