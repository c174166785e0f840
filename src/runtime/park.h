/* SPDX-License-Identifier: MIT */
/*
 * park.h - wait queues and a counting semaphore that both goroutines and
 * foreign threads can block on. The upper layers (sync, chan) build on these.
 *
 * A waiter record lives on the blocked caller's stack (no allocation on a
 * blocking path) and is linked into a struct weft__waitq, which is guarded by
 * the queue's own small lock. Blocking releases that lock only after the
 * caller is parked, so a waker that finds the waiter in the queue can always
 * wake it. After weft__waiter_wake() the waker must not touch the record:
 * the woken caller may return and reuse its stack at once.
 */
#ifndef WEFT_RUNTIME_PARK_H
#define WEFT_RUNTIME_PARK_H

#include <stdint.h>

#include "weft.h"

#include "timer.h"

struct weft__g;

/*
 * A cancellation source (what a context is built on): once fired, with an
 * error, it calls each registered hook once. Hooks are records owned by their
 * registrants (on their stacks, usually). Firing detaches the whole list under
 * the source's lock and then runs the hooks without it, each hook's last act
 * being to mark itself fired; a registrant that removes its hook waits for
 * that mark if firing got to it first, so the record never outlives its use.
 * A hook must not block; it may ready goroutines and take leaf locks (wait
 * queues, channel locks). It gets the firer's arg, and returns 0 when done
 * with h, or 1 when it has handed its work to the firer through arg (a
 * cancellation of a whole context tree goes on as a loop, not as a
 * recursion as deep as the tree): h then stays firing until the firer
 * calls weft__hook_done(h).
 */
struct weft__hook;
typedef int (*weft__hook_fn)(struct weft__hook *h, int err, void *arg);
struct weft__hook {
	struct weft__hook *next, *prev; /* under the source's lock while linked */
	weft__hook_fn fn;
	uint32_t state;                 /* HOOK_*: atomic */
};

struct weft__cancel {
	uint32_t lock;
	int err;                        /* 0 until fired; atomic */
	int cause;                      /* set with err; read after seeing err */
	struct weft__hook *hooks;       /* under lock */
};

/* Register h (fn set) unless c has fired: 0, or c's error (h not added). */
int weft__hook_add(struct weft__cancel *c, struct weft__hook *h);
/* Unregister h: returns 1 if it was removed before firing, 0 if it fired
 * (after its fn has returned: h is free to go either way). */
int weft__hook_del(struct weft__cancel *c, struct weft__hook *h);
/* Fire c with err (nonzero) and cause (0: err), passing arg to its hooks:
 * returns 1 if this call fired it, 0 if it had fired already. Every hook
 * has run, or handed its work to the caller, when it returns. */
int weft__cancel_fire(struct weft__cancel *c, int err, int cause, void *arg);
/* A hook that handed its work to the firer is done: the firer's last touch
 * of it. */
void weft__hook_done(struct weft__hook *h);
static inline int weft__cancel_err(const struct weft__cancel *c)
{
	return __atomic_load_n(&c->err, __ATOMIC_ACQUIRE);
}

/*
 * A waiter. Plain waiters are woken by whoever dequeues them. A waiter with a
 * deadline or a cancellation source is "claimable": the queue's waker, the
 * deadline timer and the source race to claim it (a CAS on claim) and only
 * the winner wakes it; a waker skips a waiter claimed by someone else (it
 * left by itself). Whoever unlinks a waiter from its queue, under the queue
 * lock, does the queue user's bookkeeping for it; `queued` tells the owner
 * whether it is still in.
 */
struct weft__waiter {
	struct weft__waiter *next, *prev; /* under the queue lock */
	struct weft__g *g;          /* the parked goroutine, or NULL for a foreign thread */
	uint32_t futex;             /* foreign threads: 0 waiting, 1 woken */
	uint32_t claim;             /* claimable waiters: 0 open, 1 claimed (CAS) */
	uint8_t claimable;
	uint8_t queued;             /* in a queue; under the queue lock */
	uint8_t counted;            /* a foreign thread counted as blocked */
	int result;                 /* 0: woken by the queue's user; ETIMEDOUT, or the
	                             * source's error */
	uintptr_t data;             /* for the queue's user, under the queue lock */
	int64_t deadline;           /* INT64_MAX: none */
	struct weft__cancel *cs;    /* or NULL */
	struct weft__waitq *q;      /* claimable waiters: the queue it waits in */
	struct weft__hook hook;     /* on cs while waiting */
	struct weft__timer tm;      /* goroutines with a deadline */
	uint8_t timer_armed;        /* the goroutine's timer was added */
	uint32_t timer_done;        /* the timer has let go of the record */
};

void weft__waitq_lock(struct weft__waitq *q);
void weft__waitq_unlock(struct weft__waitq *q);
/* Enqueue w (at the back, or the front when lifo). Queue locked. */
void weft__waitq_push(struct weft__waitq *q, struct weft__waiter *w, int lifo);
/* Remove w (queued). Queue locked. */
void weft__waitq_unlink(struct weft__waitq *q, struct weft__waiter *w);
/* The front waiter that can still be woken, claimed and unlinked, or NULL.
 * Claimed-by-others waiters on the way are unlinked too; unlinked_stale (if
 * not NULL) counts them. Queue locked. */
struct weft__waiter *weft__waitq_take(struct weft__waitq *q, uint32_t *unlinked_stale);
/* Every waiter that can still be woken, claimed and unlinked, as a list
 * through their next pointers (for weft__waiter_wake_list once the queue is
 * unlocked); *unlinked (if not NULL) counts every waiter unlinked, those
 * claimed by others included. Queue locked. */
struct weft__waiter *weft__waitq_take_all(struct weft__waitq *q, uint32_t *unlinked);
/* Wake every waiter of a list from weft__waitq_take(_all). */
void weft__waiter_wake_list(struct weft__waiter *list);
/* Claim w for a waker (always succeeds for a plain waiter). Queue locked. */
static inline int weft__waiter_claim(struct weft__waiter *w)
{
	uint32_t open = 0;
	return !w->claimable || __atomic_compare_exchange_n(&w->claim, &open, 1, 0,
							    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}
static inline struct weft__waiter *weft__waitq_front(struct weft__waitq *q)
{
	return (struct weft__waiter *)q->head_;
}
/* Prepare w for the calling goroutine or thread: a plain waiter, or a
 * claimable one when deadline != INT64_MAX or cs is not NULL. */
void weft__waiter_init(struct weft__waiter *w);
void weft__waiter_init_until(struct weft__waiter *w, int64_t deadline, struct weft__cancel *cs);
/* Queue locked and w enqueued: unlock the queue and block until woken.
 * Plain waiters only. */
void weft__waitq_block(struct weft__waitq *q, struct weft__waiter *w, const char *reason);
/*
 * Queue locked and w enqueued: unlock the queue and block until woken, the
 * deadline or the source. Returns w->result: 0 when a waker claimed w (it is
 * unlinked then), else ETIMEDOUT or the source's error; w may then still be
 * queued (w->queued, under the queue lock): the caller removes it and undoes
 * its bookkeeping. Returns with the queue unlocked either way.
 */
int weft__waitq_block_until(struct weft__waitq *q, struct weft__waiter *w, const char *reason);
/* Wait, queued on nothing, for deadline (INT64_MAX: none) or cancel source
 * cs (NULL: none), at least one of them given: ETIMEDOUT or cs's error. */
int weft__wait_alone(int64_t deadline, struct weft__cancel *cs, const char *reason);
/* Block forever (a NULL channel, an empty select), or until deadline
 * (chan.c). */
void weft__block_forever(const char *reason, int64_t deadline);
/* Wake a dequeued (claimed) waiter. */
void weft__waiter_wake(struct weft__waiter *w);
/* Wake a foreign thread sleeping on *word (0 until woken): uncount it as
 * parked inside weft if it was counted, set the word, wake it. The record
 * holding word may be gone as soon as the store is seen. */
void weft__foreign_wake(uint32_t *word, int counted);

/* A counting semaphore over a waitq (Go's semacquire/semrelease). */
void weft__sema_acquire(uint32_t *sema, struct weft__waitq *q, int lifo, const char *reason);
/* Release one token: to the first waiter if there is one, else to the count.
 * handoff: yield so the woken goroutine runs at once (starvation mode). */
void weft__sema_release(uint32_t *sema, struct weft__waitq *q, int handoff);

#endif
