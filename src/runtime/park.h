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

struct weft__g;

struct weft__waiter {
	struct weft__waiter *next;  /* under the queue lock */
	struct weft__g *g;          /* the parked goroutine, or NULL for a foreign thread */
	uint32_t futex;             /* foreign threads: 0 waiting, 1 woken */
	uintptr_t data;             /* for the queue's user, under the queue lock */
};

void weft__waitq_lock(struct weft__waitq *q);
void weft__waitq_unlock(struct weft__waitq *q);
/* Enqueue w (at the back, or the front when lifo). Queue locked. */
void weft__waitq_push(struct weft__waitq *q, struct weft__waiter *w, int lifo);
/* Dequeue the front waiter or NULL. Queue locked. */
struct weft__waiter *weft__waitq_pop(struct weft__waitq *q);
/* Prepare w for the calling goroutine or thread. */
void weft__waiter_init(struct weft__waiter *w);
/* Queue locked and w enqueued: unlock the queue and block until woken. */
void weft__waitq_block(struct weft__waitq *q, struct weft__waiter *w, const char *reason);
/* Wake a dequeued waiter. */
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
