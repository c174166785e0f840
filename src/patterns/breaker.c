/* SPDX-License-Identifier: MIT */
/*
 * breaker.c - the circuit breaker of weft/breaker.h (after sony/gobreaker),
 * on the public API only.
 *
 * One weft_mutex guards the state machine: the state, the generation, the
 * counts, the expiry, and the queue of transitions not yet reported. Time is
 * applied lazily, as in gobreaker: no timer runs; each call first brings the
 * state up to date with the clock (current), which may clear the counts of
 * a closed breaker (interval) or turn an open one half-open (timeout).
 *
 * Generations: every transition and every clearing of the counts starts a
 * new one. A call carries the generation it was let through in, and its
 * result counts only if the breaker is still in that generation, so a slow
 * call from before a trip cannot close, re-trip or skew the counts of the
 * state that followed.
 *
 * Callbacks run without the lock, so they may call into the breaker.
 * ready_to_trip gets a snapshot; if the generation moved on while it ran,
 * its verdict is stale and dropped. Transitions are queued under the lock
 * (in the order they happen) and delivered by whichever call finds the
 * queue non-empty and nobody delivering: that call pops one, unlocks, calls
 * on_state_change, relocks, and goes on until the queue is empty. So the
 * callbacks come in order, one at a time, and none is left behind once
 * every call has returned. The queue grows (doubling) only while a
 * callback is slower than the transitions it misses.
 */
#include "weft.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "time_sum.h" /* NEVER is its INT64_MAX */

#define DEFAULT_TIMEOUT_NS (60 * WEFT_SECOND)
#define DEFAULT_TRIP_CONSECUTIVE 6 /* gobreaker: ConsecutiveFailures > 5 */
#define NEVER INT64_MAX
/* A live ticket's mark, mixed with its breaker's address so that a ticket
 * of another breaker is caught too. */
#define TICKET_MAGIC UINT64_C(0x7765667462726b21)

struct change {
	uint8_t from, to;
};

struct weft_breaker {
	/* Immutable after new. */
	char name[64];
	weft_breaker_settings s; /* name points to name[]; max_requests, timeout defaulted */

	weft_mutex mu;
	/* Under mu. */
	weft_breaker_state state;
	uint64_t generation;
	weft_breaker_counts counts;
	int64_t expiry;       /* closed: counts cleared then; open: half-open then */
	struct change *queue; /* a ring of transitions to report */
	size_t qhead, qlen, qcap;
	bool delivering; /* a call is reporting the queue */
};

/* API misuse: weft's fatal error. fmt must be a literal. */
#define misuse(fmt, ...) weft_fatalf("breaker: " fmt, ##__VA_ARGS__)

static int64_t now_of(const weft_breaker *b)
{
	return b->s.clock ? b->s.clock(b->s.arg) : weft_now();
}


/* ---------------------------------------------------------------- the state machine */

/* Queue the transition from -> to for on_state_change. b->mu held. */
static void enqueue(weft_breaker *b, weft_breaker_state from, weft_breaker_state to)
{
	if (b->qlen == b->qcap) {
		size_t cap = b->qcap ? 2 * b->qcap : 8;
		struct change *q = malloc(cap * sizeof *q);
		if (!q)
			misuse("out of memory for the state-change queue of \"%s\"", b->name);
		for (size_t i = 0; i < b->qlen; i++)
			q[i] = b->queue[(b->qhead + i) % b->qcap];
		free(b->queue);
		b->queue = q;
		b->qhead = 0;
		b->qcap = cap;
	}
	b->queue[(b->qhead + b->qlen) % b->qcap] = (struct change){(uint8_t)from, (uint8_t)to};
	b->qlen++;
}

/* Start a new generation in the current state: counts cleared, expiry set
 * for the state (gobreaker's toNewGeneration). b->mu held. */
static void new_generation(weft_breaker *b, int64_t now)
{
	b->generation++;
	b->counts = (weft_breaker_counts){0};
	switch (b->state) {
	case WEFT_BREAKER_CLOSED:
		b->expiry = b->s.interval_ns ? weft__time_sum(now, b->s.interval_ns) : NEVER;
		break;
	case WEFT_BREAKER_OPEN: b->expiry = weft__time_sum(now, b->s.timeout_ns); break;
	case WEFT_BREAKER_HALF_OPEN: b->expiry = NEVER; break;
	}
}

/* b->mu held. */
static void set_state(weft_breaker *b, weft_breaker_state to, int64_t now)
{
	weft_breaker_state from = b->state;
	if (from == to)
		return;
	b->state = to;
	new_generation(b, now);
	if (b->s.on_state_change)
		enqueue(b, from, to);
}

/* Bring the state up to date with the clock (gobreaker's currentState).
 * b->mu held. */
static void current(weft_breaker *b, int64_t now)
{
	if (now < b->expiry)
		return;
	if (b->state == WEFT_BREAKER_CLOSED)
		new_generation(b, now);
	else if (b->state == WEFT_BREAKER_OPEN)
		set_state(b, WEFT_BREAKER_HALF_OPEN, now);
}

/* Release b->mu, first reporting the queued transitions unless another call
 * is at it. Called with b->mu held; returns with it released. */
static void unlock_and_deliver(weft_breaker *b)
{
	if (b->delivering || b->qlen == 0) {
		weft_mutex_unlock(&b->mu);
		return;
	}
	b->delivering = true;
	while (b->qlen > 0) {
		struct change c = b->queue[b->qhead];
		b->qhead = (b->qhead + 1) % b->qcap;
		b->qlen--;
		weft_mutex_unlock(&b->mu);
		b->s.on_state_change(b, (weft_breaker_state)c.from, (weft_breaker_state)c.to,
		                     b->s.arg);
		weft_mutex_lock(&b->mu);
	}
	b->delivering = false;
	weft_mutex_unlock(&b->mu);
}

/* The built-in trip rules (see weft_breaker_settings). */
static bool builtin_trip(const weft_breaker_settings *s, const weft_breaker_counts *c)
{
	if (s->trip_consecutive_failures == 0 && s->trip_failure_ratio == 0)
		return c->consecutive_failures >= DEFAULT_TRIP_CONSECUTIVE;
	if (s->trip_consecutive_failures && c->consecutive_failures >= s->trip_consecutive_failures)
		return true;
	return s->trip_failure_ratio > 0 && c->requests > 0 &&
	       c->requests >= s->trip_min_requests &&
	       (double)c->total_failures >= s->trip_failure_ratio * (double)c->requests;
}

/* Let a call through, or say why not (gobreaker's beforeRequest). */
static int before(weft_breaker *b, uint64_t *generation)
{
	int64_t now = now_of(b);
	int err = 0;
	weft_mutex_lock(&b->mu);
	current(b, now);
	if (b->state == WEFT_BREAKER_OPEN) {
		err = EAGAIN;
	} else if (b->state == WEFT_BREAKER_HALF_OPEN && b->counts.requests >= b->s.max_requests) {
		err = EBUSY;
	} else {
		b->counts.requests++;
		*generation = b->generation;
	}
	unlock_and_deliver(b);
	return err;
}

/* Count the result of a call let through in generation (gobreaker's
 * afterRequest, onSuccess and onFailure). */
static void after(weft_breaker *b, uint64_t generation, bool success)
{
	int64_t now = now_of(b);
	weft_mutex_lock(&b->mu);
	current(b, now);
	if (generation != b->generation)
		goto out; /* a result about an earlier state of things */
	weft_breaker_counts *c = &b->counts;
	if (success) {
		c->total_successes++;
		c->consecutive_successes++;
		c->consecutive_failures = 0;
		if (b->state == WEFT_BREAKER_HALF_OPEN &&
		    c->consecutive_successes >= b->s.max_requests)
			set_state(b, WEFT_BREAKER_CLOSED, now);
		goto out;
	}
	c->total_failures++;
	c->consecutive_failures++;
	c->consecutive_successes = 0;
	if (b->state == WEFT_BREAKER_HALF_OPEN) {
		set_state(b, WEFT_BREAKER_OPEN, now);
	} else if (!b->s.ready_to_trip) {
		if (builtin_trip(&b->s, c))
			set_state(b, WEFT_BREAKER_OPEN, now);
	} else {
		weft_breaker_counts snap = *c;
		weft_mutex_unlock(&b->mu);
		bool trip = b->s.ready_to_trip(&snap, b->s.arg);
		/* The callback took time: an open state lasts timeout from
		 * when it opens, not from before the callback. */
		now = now_of(b);
		weft_mutex_lock(&b->mu);
		/* Same generation: still closed, and no result has been
		 * dropped by a clearing since the snapshot. */
		if (trip && b->generation == generation)
			set_state(b, WEFT_BREAKER_OPEN, now);
	}
out:
	unlock_and_deliver(b);
}

/* ---------------------------------------------------------------- the API */

int weft_breaker_new(weft_breaker **out, const weft_breaker_settings *s)
{
	weft_breaker_settings set = s ? *s : (weft_breaker_settings){0};
	if (!out || set.interval_ns < 0 || set.timeout_ns < 0 || isnan(set.trip_failure_ratio) ||
	    set.trip_failure_ratio < 0 || set.trip_failure_ratio > 1)
		return EINVAL;
	weft_breaker *b = calloc(1, sizeof *b);
	if (!b)
		return ENOMEM;
	if (set.name)
		snprintf(b->name, sizeof b->name, "%s", set.name);
	set.name = b->name;
	if (set.max_requests == 0)
		set.max_requests = 1;
	if (set.timeout_ns == 0)
		set.timeout_ns = DEFAULT_TIMEOUT_NS;
	b->s = set;
	b->state = WEFT_BREAKER_CLOSED;
	/* calloc made mu ready (all-zero); generation 1 starts now. */
	new_generation(b, now_of(b));
	*out = b;
	return 0;
}

void weft_breaker_free(weft_breaker *b)
{
	if (!b)
		return;
	free(b->queue);
	free(b);
}

int weft_breaker_execute(weft_breaker *b, int (*fn)(void *arg), void *arg)
{
	if (!fn)
		misuse("execute of a NULL function on \"%s\"", b->name);
	uint64_t generation = 0;
	int err = before(b, &generation);
	if (err)
		return err;
	int result = fn(arg);
	bool success = b->s.is_successful ? b->s.is_successful(result, b->s.arg) : result == 0;
	after(b, generation, success);
	return result;
}

int weft_breaker_allow(weft_breaker *b, weft_breaker_ticket *t)
{
	uint64_t generation = 0;
	int err = before(b, &generation);
	if (err)
		return err;
	t->generation_ = generation;
	t->magic_ = TICKET_MAGIC ^ (uint64_t)(uintptr_t)b;
	return 0;
}

void weft_breaker_done(weft_breaker *b, weft_breaker_ticket *t, bool success)
{
	if (t->magic_ != (TICKET_MAGIC ^ (uint64_t)(uintptr_t)b))
		misuse("done of a ticket not allowed or already done on \"%s\"", b->name);
	t->magic_ = 0;
	after(b, t->generation_, success);
}

weft_breaker_state weft_breaker_get_state(weft_breaker *b)
{
	int64_t now = now_of(b);
	weft_mutex_lock(&b->mu);
	current(b, now);
	weft_breaker_state s = b->state;
	unlock_and_deliver(b);
	return s;
}

void weft_breaker_get_counts(weft_breaker *b, weft_breaker_counts *out)
{
	int64_t now = now_of(b);
	weft_mutex_lock(&b->mu);
	current(b, now);
	*out = b->counts;
	unlock_and_deliver(b);
}

const char *weft_breaker_name(const weft_breaker *b)
{
	return b->name;
}

const char *weft_breaker_state_name(weft_breaker_state s)
{
	switch (s) {
	case WEFT_BREAKER_CLOSED: return "closed";
	case WEFT_BREAKER_HALF_OPEN: return "half-open";
	case WEFT_BREAKER_OPEN: return "open";
	}
	return "unknown";
}
