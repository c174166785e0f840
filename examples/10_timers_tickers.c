/* SPDX-License-Identifier: MIT */
/*
 * 10_timers_tickers.c - time as channels: weft_after(), weft_timer and
 * weft_ticker (Go's time.After, time.Timer and time.Ticker); and
 * weft_after_func() (time.AfterFunc), a timer that starts a goroutine.
 *
 * Each but the last delivers the time on a channel (int64_t elements, the
 * weft_now() reading when it fired), so waiting for a moment is just a
 * receive, and it mixes with other channels in a select.
 *
 * Five parts:
 *  1. weft_after(d): a channel that receives one value d from now.
 *  2. a Timer: the same, but it can be stopped before it fires, and reset to
 *     fire again. After weft_timer_stop() no stale value can be received.
 *  3. a Ticker: a value every period, on a schedule that does not drift (tick
 *     k is due at start + k * period). A receiver that falls behind misses
 *     ticks instead of finding a backlog.
 *  4. the Go tour's "default selection": a ticker and an after channel in a
 *     select with a default case, which prints a dot while neither is ready.
 *  5. weft_after_func(d, fn, arg): no channel; d from now, fn(arg) starts in
 *     a goroutine of its own. weft_timer_stop() before then cancels it, and
 *     its result says whether fn was kept from starting.
 *
 * Run: ./10_timers_tickers
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

static int after(void)
{
	weft_chan *c;
	int64_t fired_at;
	int64_t t0 = weft_now();

	if (weft_after(&c, 20 * MS) != 0)
		return 0;
	weft_chan_recv(c, &fired_at); /* waits about 20 ms */
	int64_t got_at = weft_now();
	weft_chan_release(c);
	printf("1. weft_after(20 ms) fired at +%.2f ms, received at +%.2f ms\n",
	       (fired_at - t0) / 1e6, (got_at - t0) / 1e6);
	return fired_at - t0 >= 20 * MS && fired_at <= got_at;
}

static int timer(void)
{
	weft_timer *t;
	int64_t v;
	int ok = 1;

	printf("2. a Timer\n");
	if (weft_timer_new(&t, 50 * MS) != 0)
		return 0;
	weft_chan *c = weft_timer_chan(t); /* borrowed: valid until weft_timer_free */

	/* Stopped before it fired: its channel stays silent. */
	bool stopped = weft_timer_stop(t);
	int err = weft_chan_recv_until(c, &v, weft_now() + 80 * MS);
	printf("  stopped a 50 ms timer at once (stop said %s); waiting 80 ms: %s\n",
	       stopped ? "true" : "false",
	       err == ETIMEDOUT ? "ETIMEDOUT, nothing came" : strerror(err));
	ok &= stopped && err == ETIMEDOUT;

	/* Reset makes it fire again, d from now. */
	int64_t t0 = weft_now();
	bool was_pending = weft_timer_reset(t, 10 * MS);
	err = weft_chan_recv(c, &v);
	printf("  reset to 10 ms (it was pending: %s): fired after %.2f ms\n",
	       was_pending ? "true" : "false", (v - t0) / 1e6);
	ok &= !was_pending && err == 0 && v - t0 >= 10 * MS;

	/* Stopping a timer that already fired does nothing and says so. */
	stopped = weft_timer_stop(t);
	printf("  stop after it fired says %s\n", stopped ? "true" : "false");
	ok &= !stopped;
	weft_timer_free(t);
	return ok;
}

#define TICKS 5

static int ticker(void)
{
	const int64_t period = 10 * MS;
	weft_ticker *tk;
	int64_t v, prev = 0;
	int ok = 1;

	printf("3. a Ticker every 10 ms\n");
	int64_t t0 = weft_now();
	if (weft_ticker_new(&tk, period) != 0)
		return 0;
	for (int k = 1; k <= TICKS; k++) {
		weft_chan_recv(weft_ticker_chan(tk), &v);
		printf("  tick at +%.2f ms\n", (v - t0) / 1e6);
		/* Tick k is due at start + k * period, or later if we missed one. */
		ok &= v >= t0 + k * period && v > prev;
		prev = v;
	}
	weft_ticker_stop(tk);
	int err = weft_chan_recv_until(weft_ticker_chan(tk), &v, weft_now() + 3 * period);
	printf("  stopped; waiting %lld ms more: %s\n", (long long)(3 * period / MS),
	       err == ETIMEDOUT ? "ETIMEDOUT, no tick" : strerror(err));
	ok &= err == ETIMEDOUT;
	weft_ticker_free(tk);
	return ok;
}

static int tick_boom(void)
{
	weft_ticker *tick;
	weft_chan *boom;
	int ticks = 0, dots = 0;

	printf("4. tick, tick, BOOM (a select with a default case)\n");
	if (weft_ticker_new(&tick, 20 * MS) != 0)
		return 0;
	if (weft_after(&boom, 110 * MS) != 0)
		return 0;
	weft_case cases[] = {
		WEFT_RECV_CASE(weft_ticker_chan(tick), NULL),
		WEFT_RECV_CASE(boom, NULL),
	};
	for (;;) {
		int chosen;
		if (weft_select_try(cases, 2, &chosen) == EAGAIN) {
			/* Go: default: fmt.Println("    ."); time.Sleep(5 ms) */
			printf("      .\n");
			dots++;
			weft_sleep(5 * MS);
		} else if (chosen == 0) {
			printf("  tick.\n");
			ticks++;
		} else {
			printf("  BOOM!\n");
			break;
		}
	}
	weft_ticker_free(tick);
	weft_chan_release(boom);
	/* A 20 ms ticker ticks 5 times in 110 ms; a loaded machine may see fewer (a
	 * ticker drops what its receiver was not ready for) or, if it looks
	 * late, one more. */
	printf("  %d ticks and %d dots before the boom\n", ticks, dots);
	return ticks >= 1 && dots >= 1;
}

struct reminder {
	const char *text;
	int64_t t0;
	weft_wg *done;
};

/* Runs in its own goroutine when the timer fires. */
static void remind(void *arg)
{
	struct reminder *r = arg;
	printf("  +%.2f ms, goroutine %llu: %s\n", (weft_now() - r->t0) / 1e6,
	       (unsigned long long)weft_self_id(), r->text);
	weft_wg_done(r->done);
}

static int after_func(void)
{
	weft_wg wg = WEFT_WG_INIT, oven_wg = WEFT_WG_INIT;
	int64_t t0 = weft_now();
	struct reminder tea = {"the tea is ready", t0, &wg};
	struct reminder oven = {"the oven is hot", t0, &oven_wg};
	weft_timer *t1, *t2;

	printf("5. weft_after_func: fn in a goroutine of its own (main is goroutine %llu)\n",
	       (unsigned long long)weft_self_id());
	weft_wg_add(&wg, 1);
	weft_wg_add(&oven_wg, 1);
	if (weft_after_func(&t1, 15 * MS, remind, &tea) != 0)
		return 0;
	if (weft_after_func(&t2, 1000 * MS, remind, &oven) != 0) {
		weft_timer_free(t1);
		return 0;
	}
	/* Changed our mind about the oven: stop says true, so remind() will
	 * never run for it (and never touch `oven`). */
	bool cancelled = weft_timer_stop(t2);
	printf("  cancelled the oven reminder: %s\n", cancelled ? "true" : "false");
	if (!cancelled)
		weft_wg_wait(&oven_wg); /* too late: it started, and uses `oven` */
	weft_wg_wait(&wg); /* the tea reminder's goroutine is done */
	bool late = weft_timer_stop(t1);
	printf("  stopping the tea reminder after it ran says %s\n", late ? "true" : "false");
	weft_timer_free(t1);
	weft_timer_free(t2);
	return cancelled && !late;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = after();
	int ok2 = timer();
	int ok3 = ticker();
	int ok4 = tick_boom();
	int ok5 = after_func();

	if (!(ok1 && ok2 && ok3 && ok4 && ok5)) {
		fprintf(stderr, "wrong: after %d, timer %d, ticker %d, tick-boom %d, after_func %d\n",
		        ok1, ok2, ok3, ok4, ok5);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
