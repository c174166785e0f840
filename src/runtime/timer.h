/* SPDX-License-Identifier: MIT */
/*
 * timer.h - per-P timers. Each P keeps its timers in a 4-ary min-heap and a
 * FIFO queue for those that arrive in deadline order (timer.c), behind one
 * lock so that other Ps (stealing), idle Ms and sysmon can run a busy P's
 * overdue timers. A timer's callback runs with no lock held, on whichever
 * thread ran the timers.
 */
#ifndef WEFT_RUNTIME_TIMER_H
#define WEFT_RUNTIME_TIMER_H

#include <stdint.h>

struct weft__timer;
typedef void (*weft__timer_fn)(struct weft__timer *t);

struct weft__timer {
	int64_t when;                /* deadline, weft_now() ns; under the heap lock */
	weft__timer_fn fn;           /* called once when it fires */
	void *arg;                   /* for fn */
	struct weft__timers *heap;   /* the heap it is pending in, or NULL; written under
	                              * that heap's lock, read atomically by weft__timer_del */
	int32_t idx;                 /* its slot, kept only for deletable timers: >= 0 in
	                              * the heap, ~ring index in the queue; under the
	                              * heap lock */
	uint8_t deletable;           /* set by the owner before adding: the timer may be
	                              * deleted (and then freed at once) */
};

/* A heap slot: the deadline is stored inline, so sifting never touches the
 * timers themselves (each lives in a different goroutine's stack page), except
 * deletable ones, whose slot index must follow them. */
struct weft__tentry {
	int64_t when;
	struct weft__timer *t;
	int32_t deletable;
};

/* The timers of one P, in two lanes: a 4-ary min-heap, and a FIFO queue
 * for timers that arrive in deadline order (timer.c). */
struct weft__timers {
	uint32_t lock;
	int32_t len, cap;            /* under lock */
	struct weft__tentry *v;      /* a 4-ary min-heap on when; under lock */
	struct weft__tentry *q;      /* a ring of qcap (a power of two) slots, when
	                              * non-decreasing from qhead to qtail; under lock */
	uint32_t qhead, qtail;       /* free-running; q[qhead] is live when not empty */
	uint32_t qcap, qdead;        /* qdead: deleted slots between qhead and qtail */
	int64_t earliest;            /* atomic: the earliest deadline of both lanes or
	                              * INT64_MAX, for lock-free peeks */
};

/* The farthest deadline a timer or a wait can have: about 292 years after
 * the clock's zero, "never" in practice. Not INT64_MAX, which waits read as
 * "no deadline" and the deadlock detector (weft__timers_peek) as "no timer":
 * a deadline that far is still a deadline, as in Go, whose far timers keep
 * checkdead quiet too. */
#define WEFT__TIMER_FAR (INT64_MAX - 1)

/* The deadline d ns after t (a weft_now() reading or a deadline; t >= 0 or
 * d >= 0), saturating at WEFT__TIMER_FAR as Go's when() does: a plain sum
 * past INT64_MAX wraps to a time long past, and a timer, ticker or sleep
 * for a huge duration fires at once, or at every tick. With t < 0 and
 * d >= 0 the sum cannot pass WEFT__TIMER_FAR. */
static inline int64_t weft__timer_when(int64_t t, int64_t d)
{
	return t >= 0 && d > WEFT__TIMER_FAR - t ? WEFT__TIMER_FAR : t + d;
}

/* Add t (not in any heap) to h with deadline when. Returns 0 or ENOMEM. */
int weft__timer_add(struct weft__timers *h, struct weft__timer *t, int64_t when);
/* Remove t (deletable) if it is still pending; returns 1 if removed, 0 if
 * it had fired (or is firing). Once it returns 1, no heap refers to t. A
 * timer added without `deletable` must never be deleted (fatal error). */
int weft__timer_del(struct weft__timer *t);
/* Stop t (deletable, added) for good: delete it, or, if its callback is
 * already running, wait (yielding) until the callback has set *let_go as
 * its last touch of t. Afterwards t may be freed. */
void weft__timer_stop_wait(struct weft__timer *t, const uint32_t *let_go);
/* Run the timers of h due at now, at most max of them (the earliest); returns
 * how many ran. */
int weft__timers_run(struct weft__timers *h, int64_t now, int max);
/* Move every timer of from into to (a P going away). */
void weft__timers_move(struct weft__timers *from, struct weft__timers *to);
static inline int64_t weft__timers_peek(struct weft__timers *h)
{
	return __atomic_load_n(&h->earliest, __ATOMIC_ACQUIRE);
}
void weft__timers_init(struct weft__timers *h);
/* For tests (unit/chantimer): when set, called by a channel timer's callback
 * (src/chan/time.c) before it takes the timer's lock, to hold a callback in
 * flight. NULL otherwise. */
extern void (*weft__chantimer_fire_hook)(void);
/* For tests (unit/chantimer): when set, a func timer's firing starts its
 * goroutine with this instead of weft_go (to fail starts with ENOMEM, which
 * no test can arrange from outside). NULL otherwise. */
extern int (*weft__chantimer_go_hook)(void (*fn)(void *arg), void *arg);
/* Free h's storage; h must hold no timers that anyone will delete or run. */
void weft__timers_destroy(struct weft__timers *h);

#endif
