/* SPDX-License-Identifier: MIT */
/*
 * ratelimit.c - the token-bucket limiter of golang.org/x/time/rate and the
 * ticker-driven limiter of the learning material, on the public API only.
 *
 * weft_limiter keeps the bucket lazily, as Go's does: no timer refills it;
 * each call brings tokens_ up to date from the time elapsed since last_
 * (advance), then takes what it asks for. Tokens may go negative: a
 * reservation takes tokens that have not accrued yet, and its time_to_act
 * is when the refill will have paid them back. So waiters queue in time,
 * not on a list: the k-th waiter behind an empty bucket is told to come
 * back k / limit seconds later, and a waiter that wakes late costs nobody
 * else anything. The rate holds over any interval as long as someone is
 * waiting, however late the wake-ups.
 *
 * Invariants (under mu_): tokens_ <= max(burst_, tokens_ at the last change
 * of burst_), last_ never decreases, last_event_ >= every time_to_act handed
 * out since the last cancel of the newest one (which puts back the
 * last_event_ that reservation had replaced).
 *
 * weft_ticklimiter is a buffered channel of burst tokens and a goroutine
 * moving ticks from a weft_ticker into it, dropping those that do not fit.
 */
#include "weft.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "time_sum.h"

/* API misuse: weft's fatal error. fmt must be a literal. */
#define misuse(fmt, ...) weft_fatalf("ratelimit: " fmt, ##__VA_ARGS__)

static void check_limit(double limit)
{
	if (isnan(limit) || limit < 0)
		misuse("negative or NaN limit %g", limit);
}

static void check_burst(int64_t burst)
{
	if (burst < 0)
		misuse("negative burst %lld", (long long)burst);
}

static void check_n(int64_t n)
{
	if (n < 0)
		misuse("negative number of events %lld", (long long)n);
}

static bool is_inf(double limit)
{
	return limit >= WEFT_INF;
}

/* ---------------------------------------------------------------- unit conversions */

/* The time it takes to accrue tokens at limit (> 0); WEFT_INF_DURATION when
 * that does not fit. */
static int64_t duration_from_tokens(double limit, double tokens)
{
	if (limit <= 0)
		return WEFT_INF_DURATION;
	double ns = tokens * 1e9 / limit;
	if (ns >= 9.2e18)
		return WEFT_INF_DURATION;
	/* Round up: a caller told to wait d must find the tokens there at d.
	 * (By hand: libweft does not link libm.) */
	int64_t d = (int64_t)ns;
	return (double)d < ns ? d + 1 : d;
}

/* The tokens accrued at limit over d >= 0 ns. Whole seconds and the rest are
 * converted apart, so that large d keep their nanoseconds (Go issue 34861). */
static double tokens_from_duration(double limit, int64_t d)
{
	if (limit <= 0)
		return 0;
	double sec = (double)(d / WEFT_SECOND) * limit;
	double nsec = (double)(d % WEFT_SECOND) * limit;
	return sec + nsec / 1e9;
}

/* ---------------------------------------------------------------- weft_limiter */

/* The time a call at now counts as: never before last_ (see the header).
 * l->mu_ held. */
static int64_t clamp_now(const weft_limiter *l, int64_t now)
{
	return now < l->last_ ? l->last_ : now;
}

/* The tokens l holds at now (>= last_), changing nothing: what accrued
 * since last_, never more than the burst (so a lowered burst drops the
 * excess, as in Go). l->mu_ held. */
static double advance(const weft_limiter *l, int64_t now)
{
	double burst = (double)l->burst_;
	if (l->tokens_ >= burst)
		return burst; /* full: nothing accrues, and no sum to overflow */
	double tokens = l->tokens_ + tokens_from_duration(l->limit_, now - l->last_);
	return tokens > burst ? burst : tokens;
}

void weft_limiter_init(weft_limiter *l, double limit, int64_t burst)
{
	check_limit(limit);
	check_burst(burst);
	*l = (weft_limiter)WEFT_LIMITER_INIT(limit, burst);
}

double weft_limit_every(int64_t interval_ns)
{
	if (interval_ns <= 0)
		return WEFT_INF;
	return 1e9 / (double)interval_ns;
}

/* The heart of allow, reserve and wait (Go's reserveN): take n tokens at
 * now, provided they are due within max_wait ns and by deadline (INT64_MAX:
 * none), which is measured from the same now. now < 0 means "read the
 * clock under the lock", so that concurrent callers present their times in
 * the order they take the lock. Fills *r; returns 0, EINVAL (n > burst),
 * EAGAIN (not within max_wait or by deadline). */
static int reserve(weft_limiter *l, int64_t now, int64_t n, int64_t max_wait, int64_t deadline,
                   weft_reservation *r)
{
	check_n(n);
	if (n == 0) {
		/* No events need no tokens: granted at once, whatever the bucket
		 * holds, as the header promises. Go's reserveN would make them
		 * wait out a debt (AllowN(t, 0) false while reservations run
		 * ahead), which no caller of n = 0 can mean. Nothing is read or
		 * changed, so no lock; the reservation takes nothing, and its
		 * cancel does nothing. */
		int64_t t = now < 0 ? weft_now() : now;
		*r = (weft_reservation){.ok = true, .time_to_act = t, .lim_ = l};
		return 0;
	}
	*r = (weft_reservation){.ok = false, .time_to_act = 0, .lim_ = l};
	weft_mutex_lock(&l->mu_);
	if (now < 0)
		now = weft_now();
	if (is_inf(l->limit_)) {
		weft_mutex_unlock(&l->mu_);
		r->ok = true;
		r->time_to_act = now;
		r->tokens_ = n;
		r->limit_ = WEFT_INF;
		return 0;
	}
	if (n > l->burst_) {
		weft_mutex_unlock(&l->mu_);
		return EINVAL;
	}
	now = clamp_now(l, now);
	if (deadline != INT64_MAX && (deadline < now || deadline - now < max_wait))
		max_wait = deadline < now ? -1 : deadline - now;
	double tokens = advance(l, now) - (double)n;
	int64_t wait = tokens < 0 ? duration_from_tokens(l->limit_, -tokens) : 0;
	/* WEFT_INF_DURATION: a limit of 0, or one so small that the wait does
	 * not fit in int64 ns (about 292 years): never, refused (the header),
	 * not reserved for a time_to_act that means nothing. */
	if (wait > max_wait || wait == WEFT_INF_DURATION) {
		weft_mutex_unlock(&l->mu_);
		return EAGAIN;
	}
	r->ok = true;
	r->time_to_act = weft__time_sum(now, wait);
	r->tokens_ = n;
	r->limit_ = l->limit_;
	r->prev_event_ = l->last_event_;
	l->last_ = now;
	l->tokens_ = tokens;
	l->last_event_ = r->time_to_act;
	weft_mutex_unlock(&l->mu_);
	return 0;
}

bool weft_limiter_allow(weft_limiter *l)
{
	weft_reservation r;
	return reserve(l, -1, 1, 0, INT64_MAX, &r) == 0;
}

bool weft_limiter_allow_n(weft_limiter *l, int64_t now_ns, int64_t n)
{
	weft_reservation r;
	return reserve(l, now_ns < 0 ? 0 : now_ns, n, 0, INT64_MAX, &r) == 0;
}

int weft_limiter_reserve(weft_limiter *l, weft_reservation *r)
{
	return reserve(l, -1, 1, WEFT_INF_DURATION, INT64_MAX, r);
}

int weft_limiter_reserve_n(weft_limiter *l, int64_t now_ns, int64_t n, weft_reservation *r)
{
	return reserve(l, now_ns < 0 ? 0 : now_ns, n, WEFT_INF_DURATION, INT64_MAX, r);
}

int64_t weft_reservation_delay(const weft_reservation *r)
{
	return weft_reservation_delay_from(r, weft_now());
}

int64_t weft_reservation_delay_from(const weft_reservation *r, int64_t now_ns)
{
	if (!r->ok)
		return WEFT_INF_DURATION;
	return r->time_to_act > now_ns ? r->time_to_act - now_ns : 0;
}

void weft_reservation_cancel(weft_reservation *r)
{
	weft_reservation_cancel_at(r, weft_now());
}

void weft_reservation_cancel_at(weft_reservation *r, int64_t now_ns)
{
	if (!r->ok || r->tokens_ == 0)
		return;
	weft_limiter *l = r->lim_;
	weft_mutex_lock(&l->mu_);
	int64_t now = clamp_now(l, now_ns);
	if (is_inf(l->limit_) || r->time_to_act < now) {
		weft_mutex_unlock(&l->mu_);
		return;
	}
	/* The tokens reservations made after r took between r's time and the
	 * last event were promised to them: only the rest comes back. */
	/* A later reservation can be due before r (the limit went up in
	 * between): then it took none of r's time, and r gives back its own
	 * tokens, never more. */
	int64_t after_r = l->last_event_ - r->time_to_act;
	double restore = (double)r->tokens_ -
	                 tokens_from_duration(r->limit_, after_r > 0 ? after_r : 0);
	r->tokens_ = 0;
	if (restore <= 0) {
		weft_mutex_unlock(&l->mu_);
		return;
	}
	double tokens = advance(l, now) + restore;
	if (tokens > (double)l->burst_)
		tokens = (double)l->burst_;
	l->last_ = now;
	l->tokens_ = tokens;
	if (r->time_to_act == l->last_event_ && r->prev_event_ >= now) {
		/* r was the newest: the last event is the one before it, as r
		 * recorded it. Go works it out again, as time_to_act less the
		 * time r's tokens take to accrue, which is the earlier event
		 * only if both durations were exact; ours are rounded up to the
		 * nanosecond (never early), so the two can differ by 1 ns. Then
		 * the earlier reservation no longer looked like the newest, and
		 * its cancel gave back nothing, or all but a sliver: cancelling
		 * 5 reservations newest first left 1 to 3 tokens taken in over
		 * half of 200 rounds. The recorded time is exact, and right even
		 * after a change of limit between the two. As Go, never move it
		 * back before now: reservations due before then are past
		 * cancelling. */
		l->last_event_ = r->prev_event_;
	}
	weft_mutex_unlock(&l->mu_);
}

int weft_limiter_wait(weft_limiter *l, weft_ctx *ctx)
{
	return weft_limiter_wait_n(l, ctx, 1);
}

int weft_limiter_wait_n(weft_limiter *l, weft_ctx *ctx, int64_t n)
{
	check_n(n);
	/* As Go: a request that can never be granted says so before anything
	 * about the context. */
	weft_mutex_lock(&l->mu_);
	bool never = n > l->burst_ && !is_inf(l->limit_);
	weft_mutex_unlock(&l->mu_);
	if (never)
		return EINVAL;
	int err = ctx ? weft_ctx_err(ctx) : 0;
	if (err)
		return err;
	int64_t deadline = INT64_MAX;
	weft_reservation r;
	if (ctx && weft_ctx_deadline(ctx, &deadline)) {
		/* A deadline passed but not yet noticed by ctx's timer is ctx's. */
		if (deadline < weft_now())
			return ETIMEDOUT;
	} else {
		deadline = INT64_MAX;
	}
	/* The deadline is measured from the time reserve reads under the
	 * lock: a now read here could be stale by then, and tokens granted
	 * within "max_wait" be due after the deadline. */
	err = reserve(l, -1, n, WEFT_INF_DURATION, deadline, &r);
	if (err)
		return err;
	int64_t delay = weft_reservation_delay(&r);
	if (delay == 0)
		return 0;
	if (!ctx) {
		weft_sleep_until(r.time_to_act);
		return 0;
	}
	err = weft_sleep_ctx(ctx, delay);
	if (err) {
		/* Give the tokens to the waiters behind: they come sooner. */
		weft_reservation_cancel(&r);
		return err;
	}
	return 0;
}

/* Go's SetLimitAt and SetBurstAt: bring the tokens up to date under the old
 * settings, then change. */
static void set(weft_limiter *l, int64_t now, const double *limit, const int64_t *burst)
{
	weft_mutex_lock(&l->mu_);
	if (now < 0)
		now = weft_now();
	now = clamp_now(l, now);
	if (!is_inf(l->limit_))
		l->tokens_ = advance(l, now);
	l->last_ = now;
	if (limit) {
		if (is_inf(l->limit_) && !is_inf(*limit))
			l->tokens_ = (double)l->burst_; /* unlimited until now: full */
		l->limit_ = *limit;
	}
	if (burst)
		l->burst_ = *burst;
	weft_mutex_unlock(&l->mu_);
}

void weft_limiter_set_limit(weft_limiter *l, double limit)
{
	check_limit(limit);
	set(l, -1, &limit, NULL);
}

void weft_limiter_set_limit_at(weft_limiter *l, int64_t now_ns, double limit)
{
	check_limit(limit);
	set(l, now_ns < 0 ? 0 : now_ns, &limit, NULL);
}

void weft_limiter_set_burst(weft_limiter *l, int64_t burst)
{
	check_burst(burst);
	set(l, -1, NULL, &burst);
}

void weft_limiter_set_burst_at(weft_limiter *l, int64_t now_ns, int64_t burst)
{
	check_burst(burst);
	set(l, now_ns < 0 ? 0 : now_ns, NULL, &burst);
}

double weft_limiter_limit(weft_limiter *l)
{
	weft_mutex_lock(&l->mu_);
	double limit = l->limit_;
	weft_mutex_unlock(&l->mu_);
	return limit;
}

int64_t weft_limiter_burst(weft_limiter *l)
{
	weft_mutex_lock(&l->mu_);
	int64_t burst = l->burst_;
	weft_mutex_unlock(&l->mu_);
	return burst;
}

double weft_limiter_tokens(weft_limiter *l)
{
	return weft_limiter_tokens_at(l, weft_now());
}

double weft_limiter_tokens_at(weft_limiter *l, int64_t now_ns)
{
	weft_mutex_lock(&l->mu_);
	double tokens = is_inf(l->limit_) ? (double)l->burst_ : advance(l, clamp_now(l, now_ns));
	weft_mutex_unlock(&l->mu_);
	return tokens;
}

/* ---------------------------------------------------------------- weft_ticklimiter */

enum { TL_NEW, TL_STARTED, TL_STOPPED };

struct weft_ticklimiter {
	weft_chan *tokens;   /* capacity burst; set at new, closed at stop */
	weft_chan *quit;     /* closed by stop to end the refiller */
	weft_ticker *ticker; /* owned by the refiller while started */
	int64_t period_ns;   /* immutable */
	weft_mutex mu;       /* serialises start and stop */
	int state;           /* TL_*, under mu */
	weft_wg running;     /* the refiller, while it runs */
};

/* The refiller: each tick becomes a token if there is room for it (the
 * learning material's goroutine blocks on a full channel instead, and its
 * ticker drops the ticks meanwhile: the same tokens either way). */
static void refill(void *arg)
{
	weft_ticklimiter *tl = arg;
	for (;;) {
		int64_t t;
		int chosen = -1;
		weft_case cs[] = {WEFT_RECV_CASE(weft_ticker_chan(tl->ticker), &t),
		                  WEFT_RECV_CASE(tl->quit, NULL)};
		weft_select(cs, 2, &chosen);
		if (chosen != 0)
			break;
		(void)weft_chan_trysend(tl->tokens, &t); /* EAGAIN: burst banked, drop */
	}
	weft_wg_done(&tl->running);
}

int weft_ticklimiter_new(weft_ticklimiter **out, int64_t period_ns, int64_t burst)
{
	if (!out || period_ns <= 0 || burst < 1)
		return EINVAL;
	weft_ticklimiter *tl = calloc(1, sizeof *tl);
	if (!tl)
		return ENOMEM;
	int err = weft_chan_make(&tl->tokens, sizeof(int64_t), (size_t)burst);
	if (err)
		goto fail_tokens;
	err = weft_chan_make(&tl->quit, 0, 0);
	if (err)
		goto fail_quit;
	int64_t now = weft_now();
	for (int64_t i = 0; i < burst; i++)
		(void)weft_chan_trysend(tl->tokens, &now); /* room for all: a full bucket */
	tl->period_ns = period_ns;
	tl->state = TL_NEW; /* calloc made mu and running ready (all-zero) */
	*out = tl;
	return 0;

fail_quit:
	weft_chan_release(tl->tokens);
fail_tokens:
	free(tl);
	return err;
}

int weft_ticklimiter_start(weft_ticklimiter *tl)
{
	weft_mutex_lock(&tl->mu);
	if (tl->state != TL_NEW) {
		weft_mutex_unlock(&tl->mu);
		misuse("start of a %s ticklimiter",
		       tl->state == TL_STARTED ? "started" : "stopped");
	}
	int err = weft_ticker_new(&tl->ticker, tl->period_ns);
	if (err)
		goto out;
	weft_wg_add(&tl->running, 1);
	err = weft_go(refill, tl);
	if (err) {
		weft_wg_done(&tl->running);
		weft_ticker_free(tl->ticker);
		tl->ticker = NULL;
		goto out;
	}
	tl->state = TL_STARTED;
out:
	weft_mutex_unlock(&tl->mu);
	return err;
}

void weft_ticklimiter_stop(weft_ticklimiter *tl)
{
	weft_mutex_lock(&tl->mu);
	if (tl->state == TL_STARTED) {
		weft_chan_close(tl->quit);
		weft_wg_wait(&tl->running); /* after this, the refiller touches nothing */
		weft_ticker_free(tl->ticker);
		tl->ticker = NULL;
	}
	if (tl->state != TL_STOPPED)
		weft_chan_close(tl->tokens);
	tl->state = TL_STOPPED;
	weft_mutex_unlock(&tl->mu);
}

int weft_ticklimiter_take(weft_ticklimiter *tl, weft_ctx *ctx)
{
	if (!ctx)
		return weft_chan_recv(tl->tokens, NULL);
	return weft_chan_recv_ctx(ctx, tl->tokens, NULL);
}

int weft_ticklimiter_trytake(weft_ticklimiter *tl)
{
	return weft_chan_tryrecv(tl->tokens, NULL);
}

weft_chan *weft_ticklimiter_chan(weft_ticklimiter *tl)
{
	return tl->tokens;
}

void weft_ticklimiter_free(weft_ticklimiter *tl)
{
	if (!tl)
		return;
	weft_ticklimiter_stop(tl);
	weft_chan_release(tl->quit);
	weft_chan_release(tl->tokens);
	free(tl);
}
