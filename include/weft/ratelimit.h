/* SPDX-License-Identifier: MIT */
/*
 * weft/ratelimit.h - rate limiting: a token bucket with the semantics of Go's
 * golang.org/x/time/rate (weft_limiter), and the ticker-driven channel of the
 * learning material (weft_ticklimiter).
 *
 * weft_limiter mirrors rate.Limiter: a bucket of burst tokens, initially
 * full, refilled at limit tokens per second. allow takes tokens if they are
 * there (drop or skip the event otherwise), reserve takes them now or in the
 * future and says how long to wait, and wait blocks until they are due or a
 * context gives up. Most callers want wait. Every call that takes a time
 * (now_ns, on weft_now()'s clock) is the deterministic form of the one
 * without, which reads the clock itself, as Go's AllowN(now, n) is of Allow().
 *
 * Where it departs from Go:
 *  - errors are error numbers: EINVAL for "n exceeds the limiter's burst",
 *    EAGAIN for "would exceed the context's deadline" (and for a request
 *    the limit can never grant, below), the context's own ECANCELED or
 *    ETIMEDOUT; reserve returns them too, besides filling a reservation that
 *    is not ok;
 *  - a time earlier than one the limiter has already seen counts as that
 *    later time, so callers whose clock reads race never credit the same
 *    interval twice;
 *  - with a limit of 0 the tokens in the bucket can still be taken (as Go),
 *    but a request needing more is refused rather than reserved forever;
 *    so is one whose tokens a tiny limit would take more than about 292
 *    years to accrue, past what int64 nanoseconds express (Go's duration
 *    overflows there);
 *  - zero events are always granted at once, and take nothing (Go's
 *    AllowN(t, 0) is false while reservations run ahead of the refill);
 *  - a reservation remembers that it was cancelled: cancelling it again
 *    gives nothing back a second time;
 *  - a negative n, burst or limit, or a NaN limit, is a fatal error (Go
 *    accepts some of them and does something odd).
 *
 * weft_ticklimiter is the learning material's form, Go's
 *   limiter := time.Tick(period); ... <-limiter
 * with its "bursty limiter" variant: a channel buffering up to burst tokens,
 * full when made, then given one token per period by a goroutine that reads
 * a weft_ticker. It is simple, and select-able, but costs a goroutine and a
 * timer per limiter, loses a token whenever that goroutine wakes more than a
 * period late (as Go's does), and cannot take n tokens at once nor reserve.
 */
#ifndef WEFT_RATELIMIT_H
#define WEFT_RATELIMIT_H

#include <float.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "chan.h"
#include "context.h"
#include "sync.h"

WEFT_BEGIN_DECLS

/* ---------------------------------------------------------------- weft_limiter */

/* The infinite rate (Go's rate.Inf): every event is allowed, burst ignored.
 * Any limit >= WEFT_INF (HUGE_VAL included) is infinite. */
#define WEFT_INF DBL_MAX

/* What weft_reservation_delay() says of a reservation that is not ok (Go's
 * rate.InfDuration). */
#define WEFT_INF_DURATION INT64_MAX

/*
 * weft_limiter - Go's rate.Limiter: a token bucket of burst tokens refilled
 * at limit tokens per second (a double; WEFT_INF for no limit). A value type:
 * embed it, initialise it with weft_limiter_init() or
 * WEFT_LIMITER_INIT(limit, burst), and never copy it after first use. As in
 * Go, the all-zero value is valid and rejects every event. No destroy call
 * is needed. Every function may be called from any thread, goroutine or not,
 * concurrently with every other.
 */
typedef struct weft_limiter {
	/* private: every field under mu_ */
	weft_mutex mu_;
	double limit_;       /* tokens per second; WEFT_INF: no limit */
	int64_t burst_;      /* the bucket's size */
	double tokens_;      /* tokens at last_ (negative: reserved ahead) */
	int64_t last_;       /* when tokens_ was last brought up to date */
	int64_t last_event_; /* the latest time_to_act handed out (past or future) */
} weft_limiter;

/* A full bucket. last_ = 0 lies before any reading of weft_now(). */
#define WEFT_LIMITER_INIT(limit, burst) {WEFT_MUTEX_INIT, (limit), (burst), (double)(burst), 0, 0}

/*
 * weft_limiter_init - set l (unused, or no longer used by anyone) to a full
 * bucket of burst tokens refilled at limit per second (Go's NewLimiter).
 * A negative burst, or a limit negative or NaN, is a fatal error.
 * Blocks: no. Thread-safety: l must not be in use.
 */
WEFT_API void weft_limiter_init(weft_limiter *l, double limit, int64_t burst);

/* weft_limit_every - the limit that allows one event every interval_ns (Go's
 * rate.Every); WEFT_INF when interval_ns <= 0. Blocks: no. */
WEFT_API double weft_limit_every(int64_t interval_ns);

/*
 * weft_limiter_allow - weft_limiter_allow_n(l, weft_now(), 1).
 * weft_limiter_allow_n - whether n events may happen at now_ns: if the
 * bucket holds n tokens then, take them and return true; otherwise take
 * nothing and return false (also when n exceeds the burst). For events you
 * will drop or skip when over the rate. n = 0 is always allowed (even while
 * reservations run ahead of the refill) and takes nothing; n < 0 is a fatal
 * error. Blocks: no. Thread-safety: any thread.
 */
WEFT_API bool weft_limiter_allow(weft_limiter *l);
WEFT_API bool weft_limiter_allow_n(weft_limiter *l, int64_t now_ns, int64_t n);

/*
 * weft_reservation - Go's rate.Reservation: tokens a limiter has promised,
 * at time_to_act. A plain value the caller owns (no free). It refers to its
 * limiter, which must outlive any weft_reservation_cancel() on it.
 */
typedef struct weft_reservation {
	bool ok;             /* the tokens were granted (else nothing was taken) */
	int64_t time_to_act; /* when the events may happen (weft_now() clock) */
	/* private */
	weft_limiter *lim_;
	int64_t tokens_;     /* tokens taken */
	double limit_;       /* the limit when they were taken */
	int64_t prev_event_; /* the limiter's last event before this one */
} weft_reservation;

/*
 * weft_limiter_reserve - weft_limiter_reserve_n(l, weft_now(), 1, r).
 * weft_limiter_reserve_n - take n tokens at now_ns, now or from the future:
 * r->time_to_act is when the caller may act (now_ns when the tokens were
 * there), and the limiter accounts for them from then on. Wait until then
 * (weft_reservation_delay()) and act, or weft_reservation_cancel() to give
 * them back. r is filled whatever the result (r->ok false on an error).
 * Returns 0, or EINVAL (n exceeds the burst, the limit being finite), or
 * EAGAIN (the bucket holds fewer than n tokens and the limit is 0, or so
 * small that the rest would take more than about 292 years, the most int64
 * nanoseconds express: they would never come); nothing is taken on an
 * error. n = 0 is granted at once
 * (time_to_act now_ns), whatever the bucket holds, and takes nothing.
 * n < 0 is a fatal error. Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_limiter_reserve(weft_limiter *l, weft_reservation *r);
WEFT_API int weft_limiter_reserve_n(weft_limiter *l, int64_t now_ns, int64_t n,
                                    weft_reservation *r);

/*
 * weft_reservation_delay - how long to wait from weft_now() before acting.
 * weft_reservation_delay_from - the same from now_ns: 0 means act at once;
 * WEFT_INF_DURATION for a reservation that is not ok.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int64_t weft_reservation_delay(const weft_reservation *r);
WEFT_API int64_t weft_reservation_delay_from(const weft_reservation *r, int64_t now_ns);

/*
 * weft_reservation_cancel - weft_reservation_cancel_at(r, weft_now()).
 * weft_reservation_cancel_at - the holder will not act: give the tokens
 * back, as far as reservations made after r allow (Go's CancelAt: tokens
 * that later reservations were already promised stay taken). Does nothing
 * for a reservation that is not ok, whose time_to_act has passed by now_ns,
 * that took no tokens, or on a limiter with no limit. r remembers that it
 * was cancelled: a second cancel does nothing (Go's would give back again).
 * Cancelling the outstanding reservations newest first gives all their
 * tokens back; what an older one's cancel kept for later reservations
 * stays taken, even when those are cancelled after it.
 * Blocks: no (takes the limiter's lock). Thread-safety: any thread.
 */
WEFT_API void weft_reservation_cancel(weft_reservation *r);
WEFT_API void weft_reservation_cancel_at(weft_reservation *r, int64_t now_ns);

/*
 * weft_limiter_wait - weft_limiter_wait_n(l, ctx, 1).
 * weft_limiter_wait_n - wait until n events may happen (Go's WaitN): take n
 * tokens, now or reserved from the future, and sleep until they are due.
 * ctx may be NULL (no cancellation, no deadline).
 * Returns 0 (the caller may act), or:
 *   EINVAL     n exceeds the burst (and the limit is finite): it never could;
 *   ECANCELED, ETIMEDOUT   ctx was done first (before the call, or while it
 *              waited: then its reservation is cancelled, so the tokens go
 *              to others);
 *   EAGAIN     the tokens would come after ctx's deadline (or never: a
 *              limit of 0, or one so small that they would take more than
 *              about 292 years): returned at once, nothing taken, as Go's
 *              "would exceed context deadline".
 * n = 0 returns at once: 0, or ctx's error if ctx is already done.
 * n < 0 is a fatal error. Blocks: yes, for at most the reservation's delay
 * (never while holding the limiter's lock). Thread-safety: any thread.
 */
WEFT_API int weft_limiter_wait(weft_limiter *l, weft_ctx *ctx);
WEFT_API int weft_limiter_wait_n(weft_limiter *l, weft_ctx *ctx, int64_t n);

/*
 * weft_limiter_set_limit, weft_limiter_set_limit_at - change the limit from
 * now (weft_now(), or now_ns); tokens accrued so far are kept. Reservations
 * already made keep their times (Go's SetLimitAt). A negative or NaN limit
 * is a fatal error.
 * weft_limiter_set_burst, weft_limiter_set_burst_at - change the burst;
 * tokens above a lowered burst are dropped at the next call, as in Go.
 * A negative burst is a fatal error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_limiter_set_limit(weft_limiter *l, double limit);
WEFT_API void weft_limiter_set_limit_at(weft_limiter *l, int64_t now_ns, double limit);
WEFT_API void weft_limiter_set_burst(weft_limiter *l, int64_t burst);
WEFT_API void weft_limiter_set_burst_at(weft_limiter *l, int64_t now_ns, int64_t burst);

/* weft_limiter_limit, weft_limiter_burst - the current settings.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API double weft_limiter_limit(weft_limiter *l);
WEFT_API int64_t weft_limiter_burst(weft_limiter *l);

/*
 * weft_limiter_tokens, weft_limiter_tokens_at - the tokens the bucket holds
 * at weft_now() (or now_ns), changing nothing; negative when reservations
 * run ahead of the refill. A limiter with no limit says its burst.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API double weft_limiter_tokens(weft_limiter *l);
WEFT_API double weft_limiter_tokens_at(weft_limiter *l, int64_t now_ns);

/* ---------------------------------------------------------------- weft_ticklimiter */

/*
 * weft_ticklimiter - one token per period on a channel, with up to burst
 * tokens banked (the learning material's ticker-based limiter; burst 1 is
 * the plain `<-time.Tick(period)` form). Made with weft_ticklimiter_new(),
 * freed with weft_ticklimiter_free().
 *
 * States: new (the channel holds burst tokens, no refill yet) -> started
 * (a goroutine adds one token each period, dropping it when burst are
 * already banked) -> stopped (the goroutine has ended and the channel is
 * closed: tokens still banked can be taken, then takers get EPIPE). A
 * limiter may be stopped without ever being started.
 */
typedef struct weft_ticklimiter weft_ticklimiter;

/*
 * weft_ticklimiter_new - a new, unstarted ticklimiter with period_ns > 0 and
 * burst >= 1, holding burst tokens. *out is the caller's to free.
 * Returns 0, EINVAL (out NULL, period_ns <= 0, burst < 1), or ENOMEM; *out
 * is untouched on error. Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_ticklimiter_new(weft_ticklimiter **out, int64_t period_ns, int64_t burst);

/*
 * weft_ticklimiter_start - start adding one token per period (the first one
 * period from now). Returns 0, or ENOMEM or EAGAIN (the ticker or the
 * goroutine could not be made; nothing started). Starting twice, or after
 * stop, is a fatal error ("ratelimit: start of a started ticklimiter").
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_ticklimiter_start(weft_ticklimiter *tl);

/*
 * weft_ticklimiter_stop - stop adding tokens and close the channel: takers
 * get the tokens still banked, then EPIPE. Idempotent.
 * Blocks: yes, until the refilling goroutine has ended (briefly).
 * Thread-safety: any thread.
 */
WEFT_API void weft_ticklimiter_stop(weft_ticklimiter *tl);

/*
 * weft_ticklimiter_take - take one token, waiting for it (Go's <-limiter).
 * ctx may be NULL. Returns 0, EPIPE (stopped and no token left), or ctx's
 * ECANCELED or ETIMEDOUT (nothing taken).
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_ticklimiter_take(weft_ticklimiter *tl, weft_ctx *ctx);

/* weft_ticklimiter_trytake - take a token if one is banked: 0, EAGAIN (none
 * now), or EPIPE (stopped and none left). Blocks: no. */
WEFT_API int weft_ticklimiter_trytake(weft_ticklimiter *tl);

/*
 * weft_ticklimiter_chan - the token channel (elements int64_t: the
 * weft_now() reading when the token was added) for a select case. Borrowed:
 * valid until weft_ticklimiter_free() (weft_chan_retain() it to keep it
 * longer). Do not send to it nor close it. Blocks: no.
 */
WEFT_API weft_chan *weft_ticklimiter_chan(weft_ticklimiter *tl);

/* weft_ticklimiter_free - stop tl (as weft_ticklimiter_stop) and free it.
 * NULL is ignored. No other call on tl may be in progress or come after.
 * Blocks: as weft_ticklimiter_stop(). */
WEFT_API void weft_ticklimiter_free(weft_ticklimiter *tl);

WEFT_END_DECLS

#endif /* WEFT_RATELIMIT_H */
