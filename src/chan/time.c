/* SPDX-License-Identifier: MIT */
/*
 * time.c - time as channels: weft_after, weft_timer (Go's time.Timer) and
 * weft_ticker (time.Ticker), on the scheduler's per-P timer heaps; and
 * weft_after_func (time.AfterFunc), a Timer that starts a goroutine instead
 * of sending.
 *
 * Each is a struct weft__chantimer: a heap timer plus a channel of capacity
 * 1 that the timer's callback try-sends the firing time into (a tick nobody
 * was ready for is dropped, as in Go). Its own small lock serialises the
 * callback with stop, reset and free:
 *  - `armed` and `when` say what the user last asked for. A callback that
 *    finds the timer stopped, or re-armed for a later time, does nothing:
 *    the heap entry it came from is stale.
 *  - `pending` counts heap entries plus callbacks in flight (a popped timer
 *    whose callback has not yet taken the lock). Freeing waits for it to
 *    reach zero, so no callback ever touches freed memory; the callback's
 *    unlock is its last touch.
 * Stop and reset also empty the channel, so no value from before them can be
 * received after (Go 1.23's guarantee).
 *
 * A func timer (weft_after_func) has no channel: its callback starts fn(arg)
 * with weft_go() under the timer's lock, so a stop that finds it disarmed
 * knows the goroutine has been started, and one that finds it armed has kept
 * it from starting. A start that fails for want of memory is tried again a
 * millisecond later, doubling to 100 ms, with the timer still armed: the
 * call is late, never lost.
 */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "chan_impl.h"
#include "fatal.h"
#include "sched.h"

struct weft__chantimer {
	struct weft__timer tm; /* first: the callback gets &tm */
	uint32_t lock;
	int armed;      /* under lock */
	int dying;      /* under lock */
	int pending;    /* under lock */
	int64_t when;   /* under lock */
	int64_t period; /* tickers: > 0 */
	int64_t retry;  /* func timers: the wait before the next try to start
	                 * fn after a failed one; 0 after a success; under lock */
	weft_chan *c;   /* the channel: owned by a weft_timer/ticker, or
	                 * owning us (weft_after); NULL for a func timer */
	weft_fn fn;     /* func timers: started at each firing */
	void *arg;
};

struct weft_timer {
	struct weft__chantimer t;
};

struct weft_ticker {
	struct weft__chantimer t;
};

/* Drop a value fired but not received. Timer locked. Returns 1 if one was.
 * A receive that discards it: a sender parked on the full channel (someone
 * sending on the timer's channel) refills the slot, as a receive has it,
 * instead of an emptied ring that the next receive takes a stale slot from
 * while the sender's value is lost. */
static int drain(weft_chan *c)
{
	if (!c)
		return 0; /* a func timer */
	weft__chan_lock(c);
	int had = c->qcount > 0; /* capacity 1: at most one */
	struct weft__sudog *sg = had ? weft__chan_take_sender(c) : NULL;
	if (sg)
		weft__chan_recv_from(c, sg, NULL);
	else if (had)
		weft__chan_get(c, NULL);
	weft__chan_unlock(c);
	if (sg)
		weft__wait_wake(weft__m_get(), sg->w);
	return had;
}

/* Put t on a heap for `when`: 0, or ENOMEM (t stays disarmed). Timer
 * locked. */
static int arm_try(struct weft__chantimer *t, int64_t when)
{
	/* For ThreadSanitizer, as Go's resetTimer: what the caller did before
	 * arming happens before the firing (fire acquires), and so before a
	 * func timer's goroutine. The runtime's lock is invisible to it. */
	weft__race_release(t);
	int err = weft__timer_try_add_here(&t->tm, when);
	if (err)
		return err;
	t->armed = 1;
	t->when = when;
	t->pending++;
	return 0;
}

/* arm_try where no error can be reported (reset, a firing): fatal. */
static void arm(struct weft__chantimer *t, int64_t when)
{
	if (arm_try(t, when))
		weft__fatal("out of memory adding a timer");
}

/* Take t off its heap if it is on one. Timer locked. */
static void disarm(struct weft__chantimer *t)
{
	t->armed = 0;
	if (weft__timer_del(&t->tm))
		t->pending--;
}

/* arm from a firing's callback. An entry may be queued already: a reset
 * while the callback was in flight queued one (for the slot this firing
 * takes, or one that would find the timer disarmed). Move it to `when`, or
 * that slot fires twice, or a func timer's retry is lost. Timer locked. */
static void rearm(struct weft__chantimer *t, int64_t when)
{
	if (__atomic_load_n(&t->tm.heap, __ATOMIC_ACQUIRE))
		disarm(t);
	arm(t, when);
}

enum { FUNC_RETRY_FIRST = 1000000, FUNC_RETRY_MAX = 100000000 };

int (*weft__chantimer_go_hook)(void (*fn)(void *arg), void *arg);

/* A func timer fired (and is disarmed): start its goroutine, or, with no
 * memory for one, stay armed and try again later. Timer locked. */
static void fire_func(struct weft__chantimer *t, int64_t now)
{
	int (*go)(void (*)(void *), void *) =
		__atomic_load_n(&weft__chantimer_go_hook, __ATOMIC_RELAXED);
	int err = __builtin_expect(go != NULL, 0) ? go(t->fn, t->arg) : weft_go(t->fn, t->arg);
	if (err == 0) {
		t->retry = 0;
		return;
	}
	t->retry = t->retry ? t->retry * 2 : FUNC_RETRY_FIRST;
	if (t->retry > FUNC_RETRY_MAX)
		t->retry = FUNC_RETRY_MAX;
	rearm(t, now + t->retry);
}

void (*weft__chantimer_fire_hook)(void);

static void fire(struct weft__timer *tm)
{
	struct weft__chantimer *t = (struct weft__chantimer *)tm;
	int orphan = 0;
	void (*hook)(void) = __atomic_load_n(&weft__chantimer_fire_hook, __ATOMIC_RELAXED);
	if (__builtin_expect(hook != NULL, 0))
		hook();
	weft__lock(&t->lock);
	weft__race_acquire(t); /* pairs with arm's release */
	int64_t now = weft_now();
	if (t->armed && !t->dying && t->when <= now) {
		if (t->period > 0) {
			/* The next tick on the original schedule, skipping those
			 * already missed. Saturated: a period near INT64_MAX would
			 * wrap to the past and tick at every firing. (The catch-up
			 * below cannot overflow: it lands within a period after
			 * now, and a next <= now means the period fits in now.) */
			int64_t next = weft__timer_when(t->when, t->period);
			if (next <= now)
				next += ((now - next) / t->period + 1) * t->period;
			rearm(t, next);
		} else {
			t->armed = 0;
		}
		if (t->fn) {
			fire_func(t, now);
		} else {
			int64_t v = now;
			weft_chan_trysend(t->c, &v); /* full: the tick is dropped */
			/* A weft_after channel released by all while waiters
			 * held it (orphaned): if the send completed the last of
			 * them, it is ours to free, with us, once unlocked.
			 * (Timers' and tickers' channels are their owners'.) */
			if (t->c->timer == t) {
				weft__chan_lock(t->c);
				orphan = weft__chan_unused(t->c);
				weft__chan_unlock(t->c);
			}
		}
	}
	weft_chan *c = t->c;
	/* Only now: the send may have woken a receiver that frees the timer
	 * as soon as pending reaches zero and it gets the lock. */
	t->pending--;
	weft__unlock(&t->lock); /* the last touch of t */
	if (orphan)
		weft__chan_free(c); /* nobody else can reach c or t now */
}

static void init(struct weft__chantimer *t, weft_chan *c, int64_t period, weft_fn fn, void *arg)
{
	t->fn = fn;
	t->arg = arg;
	t->tm.fn = fire;
	t->tm.arg = t;
	t->tm.heap = NULL;
	t->tm.deletable = 1;
	t->c = c;
	t->period = period;
}

void weft__chantimer_destroy(struct weft__chantimer *t)
{
	weft__lock(&t->lock);
	t->dying = 1;
	disarm(t);
	while (t->pending > 0) {
		/* A callback popped from a heap has yet to run (on another
		 * thread): let it finish. */
		weft__unlock(&t->lock);
		weft_yield(); /* sched_yield() on a foreign thread */
		weft__lock(&t->lock);
	}
	weft__unlock(&t->lock);
}

#define STOP_ONLY INT64_MIN

/* A new chantimer in *out, its first firing at `first` (STOP_ONLY: made
 * stopped): with a channel made for it, or, given fn, a func timer. Returns
 * 0 or ENOMEM (*out untouched). */
static int chantimer_new(struct weft__chantimer **out, int64_t period, int64_t first, weft_fn fn,
                         void *arg)
{
	/* weft_timer and weft_ticker are a chantimer and nothing more. */
	struct weft__chantimer *t = weft__calloc(1, sizeof(*t));
	if (!t)
		return ENOMEM;
	weft_chan *c = NULL;
	int err = fn ? 0 : weft_chan_make(&c, sizeof(int64_t), 1);
	if (err) {
		weft__free(t);
		return err;
	}
	init(t, c, period, fn, arg);
	if (first != STOP_ONLY) {
		weft__lock(&t->lock);
		err = arm_try(t, first);
		weft__unlock(&t->lock);
		if (err) {
			weft_chan_release(c); /* NULL for a func timer: ignored */
			weft__free(t);
			return err;
		}
	}
	*out = t;
	return 0;
}

/* Stop t, drop a value not yet received, and re-arm it for `when` unless
 * that is STOP_ONLY. Returns whether a value was kept from delivery. */
static int restart(struct weft__chantimer *t, int64_t period, int64_t when)
{
	weft__lock(&t->lock);
	int was = t->armed;
	disarm(t);
	was |= drain(t->c);
	t->retry = 0;
	if (when != STOP_ONLY) {
		t->period = period;
		arm(t, when);
	}
	weft__unlock(&t->lock);
	return was;
}

/* The owner's free: stop, wait out a firing, drop the channel. */
static void chantimer_free(struct weft__chantimer *t)
{
	weft__chantimer_destroy(t);
	weft_chan_release(t->c);
	weft__free(t);
}

/* The deadline duration_ns from now: at once for <= 0, WEFT__TIMER_FAR
 * ("never") for what would pass INT64_MAX. */
static int64_t after_ns(int64_t duration_ns)
{
	return weft__timer_when(weft_now(), duration_ns > 0 ? duration_ns : 0);
}

/* ---------------------------------------------------------------- after */

int weft_after(weft_chan **out, int64_t duration_ns)
{
	struct weft__chantimer *t;
	int err = out ? chantimer_new(&t, 0, STOP_ONLY, NULL, NULL) : EINVAL;
	if (err)
		return err;
	/* The channel owns the timer: stopped and freed with its last
	 * reference. Set before the arming, which its firing sees (fire). */
	t->c->timer = t;
	weft__lock(&t->lock);
	err = arm_try(t, after_ns(duration_ns));
	weft__unlock(&t->lock);
	if (err) {
		weft_chan_release(t->c); /* frees the timer with it */
		return err;
	}
	*out = t->c;
	return 0;
}

/* ---------------------------------------------------------------- Timer */

/* A weft_timer in *out, first firing at `first` (STOP_ONLY: stopped), a
 * func timer when fn is given. Returns 0 or ENOMEM (*out untouched). */
static int timer_new(weft_timer **out, int64_t first, weft_fn fn, void *arg)
{
	struct weft__chantimer *t;
	int err = chantimer_new(&t, 0, first, fn, arg);
	if (!err)
		*out = (weft_timer *)t;
	return err;
}

int weft_timer_new(weft_timer **out, int64_t duration_ns)
{
	return out ? timer_new(out, after_ns(duration_ns), NULL, NULL) : EINVAL;
}

int weft_after_func(weft_timer **out, int64_t duration_ns, weft_fn fn, void *arg)
{
	return out && fn ? timer_new(out, after_ns(duration_ns), fn, arg) : EINVAL;
}

int weft__after_func_stopped(weft_timer **out, weft_fn fn, void *arg)
{
	return timer_new(out, STOP_ONLY, fn, arg);
}

void weft__after_func_start(weft_timer *timer)
{
	struct weft__chantimer *t = &timer->t;
	weft__lock(&t->lock);
	fire_func(t, weft_now());
	weft__unlock(&t->lock);
}

weft_chan *weft_timer_chan(weft_timer *t)
{
	return t ? t->t.c : NULL;
}

bool weft_timer_stop(weft_timer *t)
{
	return t && restart(&t->t, 0, STOP_ONLY);
}

bool weft_timer_reset(weft_timer *t, int64_t duration_ns)
{
	return t && restart(&t->t, 0, after_ns(duration_ns));
}

void weft_timer_free(weft_timer *t)
{
	if (t)
		chantimer_free(&t->t);
}

/* ---------------------------------------------------------------- Ticker */

int weft_ticker_new(weft_ticker **out, int64_t period_ns)
{
	struct weft__chantimer *t;
	int err = out && period_ns > 0
	                  ? chantimer_new(&t, period_ns, after_ns(period_ns), NULL, NULL)
	                  : EINVAL;
	if (!err)
		*out = (weft_ticker *)t;
	return err;
}

weft_chan *weft_ticker_chan(weft_ticker *t)
{
	return t ? t->t.c : NULL;
}

void weft_ticker_stop(weft_ticker *t)
{
	if (t)
		restart(&t->t, 0, STOP_ONLY); /* the period is not read: no race with a reset */
}

int weft_ticker_reset(weft_ticker *t, int64_t period_ns)
{
	if (!t || period_ns <= 0)
		return EINVAL;
	restart(&t->t, period_ns, after_ns(period_ns));
	return 0;
}

void weft_ticker_free(weft_ticker *t)
{
	if (t)
		chantimer_free(&t->t);
}
