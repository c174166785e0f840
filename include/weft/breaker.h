/* SPDX-License-Identifier: MIT */
/*
 * weft/breaker.h - a circuit breaker, after Go's github.com/sony/gobreaker:
 * it stops calling a service that keeps failing, so the service gets time to
 * recover and the callers fail fast instead of piling up.
 *
 * States and transitions:
 *   closed     calls go through; results are counted. When the trip rule
 *              holds after a failure: -> open. Every interval (if set) the
 *              counts are cleared (a new generation).
 *   open       calls are refused at once (EAGAIN) for timeout; then the next
 *              call, or state query, finds it -> half-open.
 *   half-open  at most max_requests calls (probes) go through; more are
 *              refused (EBUSY). A failed probe: -> open. max_requests
 *              consecutive successes: -> closed.
 * Every transition, and every clearing of the counts, starts a new
 * generation; a result reported for a call let through in an earlier
 * generation is ignored (it describes the service as it was).
 *
 * Where it departs from gobreaker:
 *  - built-in trip rules (consecutive failures, failure ratio over a minimum
 *    of requests) besides a ready_to_trip callback;
 *  - every callback is called without the breaker's lock held, so any of
 *    them may call into the breaker; on_state_change calls are delivered in
 *    the order of the transitions, one at a time;
 *  - a clock may be supplied (tests, simulations);
 *  - the results a call reports are error numbers (0 is success, unless
 *    is_successful says otherwise), and so are the refusals;
 *  - "after timeout" means at open time + timeout or later (gobreaker:
 *    strictly later).
 */
#ifndef WEFT_BREAKER_H
#define WEFT_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_breaker weft_breaker;

/* The states (gobreaker's order). */
typedef enum weft_breaker_state {
	WEFT_BREAKER_CLOSED = 0,
	WEFT_BREAKER_HALF_OPEN = 1,
	WEFT_BREAKER_OPEN = 2,
} weft_breaker_state;

/*
 * weft_breaker_counts - the results counted in the current generation
 * (gobreaker's Counts). requests counts the calls let through, including
 * those still running; the others count the results reported.
 */
typedef struct weft_breaker_counts {
	uint64_t requests;
	uint64_t total_successes;
	uint64_t total_failures;
	uint64_t consecutive_successes;
	uint64_t consecutive_failures;
} weft_breaker_counts;

/*
 * weft_breaker_settings - how a breaker behaves (gobreaker's Settings).
 * All-zero gives gobreaker's defaults: one probe, counts never cleared, 60 s
 * open, trip after more than 5 consecutive failures, success is 0.
 * The settings are copied by weft_breaker_new() (name included).
 */
typedef struct weft_breaker_settings {
	/* A name for state-change callbacks and messages; copied (at most 63
	 * bytes kept). NULL: "". */
	const char *name;
	/* The probes let through in half-open state, and the consecutive
	 * successes that close the breaker; 0 means 1. */
	uint32_t max_requests;
	/* In closed state, clear the counts every interval_ns; 0: never (they
	 * are cleared only by transitions). */
	int64_t interval_ns;
	/* How long the breaker stays open before half-open; 0 means 60 s. */
	int64_t timeout_ns;

	/* Built-in trip rules, used when ready_to_trip is NULL; the breaker
	 * trips (after a failure, in closed state) when any set rule holds:
	 *   trip_consecutive_failures N > 0: consecutive failures >= N;
	 *   trip_failure_ratio r in (0, 1]: requests >= trip_min_requests and
	 *     total failures / requests >= r.
	 * With neither set: consecutive failures > 5 (gobreaker's default). */
	uint32_t trip_consecutive_failures;
	double trip_failure_ratio;
	uint32_t trip_min_requests;

	/* The callbacks (each optional) receive arg. None is called with the
	 * breaker's lock held; none may free the breaker. */
	void *arg;
	/* Whether the breaker should trip, given a snapshot of the counts; called
	 * after each failure in closed state. Replaces the built-in rules. */
	bool (*ready_to_trip)(const weft_breaker_counts *counts, void *arg);
	/* Whether a result (a call's return value) counts as a success; NULL:
	 * result == 0. Lets "not found" count as the service working. */
	bool (*is_successful)(int result, void *arg);
	/* Called after each transition, in order, one call at a time: by the
	 * call that made the transition, before it returns, unless another call
	 * into the breaker is delivering earlier transitions at that moment (then
	 * that one delivers this one too, before it returns). */
	void (*on_state_change)(weft_breaker *b, weft_breaker_state from, weft_breaker_state to,
	                        void *arg);
	/* The time source, in ns; NULL: weft_now(). It must not go backwards. */
	int64_t (*clock)(void *arg);
} weft_breaker_settings;

/*
 * weft_breaker_new - a new breaker, closed, with settings s (NULL: all
 * defaults). *out is the caller's; free it with weft_breaker_free().
 * Returns 0, EINVAL (out NULL, a negative interval or timeout, a failure
 * ratio outside [0, 1] or NaN), or ENOMEM; *out is untouched on error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_breaker_new(weft_breaker **out, const weft_breaker_settings *s);

/* weft_breaker_free - free b. NULL is ignored. No call on b may be in
 * progress or come after. Blocks: no. */
WEFT_API void weft_breaker_free(weft_breaker *b);

/*
 * weft_breaker_execute - run fn(arg) if the breaker lets the call through,
 * and count its result (gobreaker's Execute). fn runs on the caller, without
 * any lock held. Returns fn's result, or without running fn:
 *   EAGAIN  the breaker is open;
 *   EBUSY   it is half-open and max_requests probes are already out.
 * fn's result passes through unchanged: if fn can itself return EAGAIN or
 * EBUSY and you must tell them apart, use weft_breaker_allow/done.
 * fn NULL is a fatal error.
 * Blocks: while fn runs (and for on_state_change callbacks).
 * Thread-safety: any thread, concurrently with every other call.
 */
WEFT_API int weft_breaker_execute(weft_breaker *b, int (*fn)(void *arg), void *arg);

/*
 * weft_breaker_ticket - a call let through by weft_breaker_allow(), to be
 * reported exactly once with weft_breaker_done(). A plain value.
 */
typedef struct weft_breaker_ticket {
	/* private */
	uint64_t generation_;
	uint64_t magic_; /* a live ticket's mark; cleared by done */
} weft_breaker_ticket;

/*
 * weft_breaker_allow - the first step of a call you make yourself (for
 * asynchronous calls: gobreaker's TwoStepCircuitBreaker.Allow). Returns 0 and
 * fills *t when the call may go ahead: make it, then report it with
 * weft_breaker_done(). Or EAGAIN (open) or EBUSY (half-open, probes all out),
 * *t untouched: do not make the call. Always report: a probe never reported
 * keeps its slot, so a half-open breaker whose probes are all out and never
 * reported stays half-open, refusing everything, for good.
 * Blocks: only for on_state_change callbacks. Thread-safety: any thread.
 */
WEFT_API int weft_breaker_allow(weft_breaker *b, weft_breaker_ticket *t);

/*
 * weft_breaker_done - report the call of ticket t: success or not
 * (is_successful is not consulted here). Ignored when the breaker has moved
 * on to another generation since allow. Reporting a ticket twice, or one
 * that this breaker's allow did not fill, is a fatal error ("breaker: done
 * of a ticket not allowed or already done").
 * Blocks: only for callbacks. Thread-safety: any thread.
 */
WEFT_API void weft_breaker_done(weft_breaker *b, weft_breaker_ticket *t, bool success);

/*
 * weft_breaker_get_state - the state now (an open breaker whose timeout has
 * passed becomes half-open here, and that transition is reported).
 * Blocks: only for on_state_change callbacks. Thread-safety: any thread.
 */
WEFT_API weft_breaker_state weft_breaker_get_state(weft_breaker *b);

/* weft_breaker_get_counts - a snapshot of the current generation's counts
 * into *out (after the same time check as weft_breaker_get_state).
 * Blocks: only for on_state_change callbacks. Thread-safety: any thread. */
WEFT_API void weft_breaker_get_counts(weft_breaker *b, weft_breaker_counts *out);

/* weft_breaker_name - the name given in the settings; valid until free.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API const char *weft_breaker_name(const weft_breaker *b);

/* weft_breaker_state_name - "closed", "half-open", "open" (else "unknown").
 * The string is static. */
WEFT_API const char *weft_breaker_state_name(weft_breaker_state s);

WEFT_END_DECLS

#endif /* WEFT_BREAKER_H */
