/* SPDX-License-Identifier: MIT */
/*
 * park.c - blocking for goroutines and foreign threads alike.
 *
 * A goroutine blocks by parking (weft__park) with an after-switch action that
 * releases the queue lock, so the lock covers the whole window from "I will
 * wait" to "I am switched out". A foreign thread releases the lock and then
 * sleeps on the futex word in its waiter record; the word makes a wake-up that
 * comes between the two harmless. Foreign threads parked here are counted, so
 * deadlock detection can tell them from threads that are off doing other work.
 */
#include "park.h"

#include "lock.h"
#include "sched.h"

void weft__waitq_lock(struct weft__waitq *q)
{
	weft__lock(&q->lock_);
}

void weft__waitq_unlock(struct weft__waitq *q)
{
	weft__unlock(&q->lock_);
}

void weft__waitq_push(struct weft__waitq *q, struct weft__waiter *w, int lifo)
{
	if (lifo) {
		w->next = q->head_;
		q->head_ = w;
		if (!q->tail_)
			q->tail_ = w;
	} else {
		w->next = NULL;
		if (q->tail_)
			((struct weft__waiter *)q->tail_)->next = w;
		else
			q->head_ = w;
		q->tail_ = w;
	}
	q->len_++;
}

struct weft__waiter *weft__waitq_pop(struct weft__waitq *q)
{
	struct weft__waiter *w = q->head_;
	if (w) {
		q->head_ = w->next;
		if (!q->head_)
			q->tail_ = NULL;
		q->len_--;
		w->next = NULL;
	}
	return w;
}

void weft__waiter_init(struct weft__waiter *w)
{
	w->next = NULL;
	w->g = weft__g_get();
	w->futex = 0;
	w->data = 0;
}

static void unlock_q(void *arg, struct weft__g *g)
{
	(void)g;
	weft__unlock(&((struct weft__waitq *)arg)->lock_);
}

void weft__waitq_block(struct weft__waitq *q, struct weft__waiter *w, const char *reason)
{
	if (w->g) {
		weft__park(reason, unlock_q, q);
		return;
	}
	/* Counted as parked from here until the waker uncounts it: the waker,
	 * not this thread, so that a woken thread the OS has not run yet is
	 * never mistaken for one still asleep (deadlock detection). */
	weft__sched_note_foreign_block(1);
	weft__unlock(&q->lock_);
	/* Pairs with the release store in weft__waiter_wake. */
	while (!__atomic_load_n(&w->futex, __ATOMIC_ACQUIRE))
		weft__futex_wait(&w->futex, 0, NULL);
}

void weft__waiter_wake(struct weft__waiter *w)
{
	struct weft__g *g = w->g;
	if (g) {
		weft__ready(g);
		return;
	}
	weft__foreign_wake(&w->futex, 1);
}

void weft__foreign_wake(uint32_t *word, int counted)
{
	if (counted)
		weft__sched_note_foreign_block(-1);
	__atomic_store_n(word, 1, __ATOMIC_RELEASE);
	/* The record may be gone once the store is seen; a wake on a stale
	 * address is harmless (at worst a spurious wake-up elsewhere). */
	weft__futex_wake(word, 1);
}

static int try_take(uint32_t *sema)
{
	uint32_t v = __atomic_load_n(sema, __ATOMIC_ACQUIRE);
	while (v > 0)
		if (__atomic_compare_exchange_n(sema, &v, v - 1, 0, __ATOMIC_ACQUIRE,
						__ATOMIC_ACQUIRE))
			return 1;
	return 0;
}

void weft__sema_acquire(uint32_t *sema, struct weft__waitq *q, int lifo, const char *reason)
{
	if (try_take(sema))
		return;
	struct weft__waiter w;
	weft__waiter_init(&w);
	weft__waitq_lock(q);
	if (try_take(sema)) {
		weft__waitq_unlock(q);
		return;
	}
	weft__waitq_push(q, &w, lifo);
	weft__waitq_block(q, &w, reason);
	/* The releaser handed its token straight to us. */
}

void weft__sema_release(uint32_t *sema, struct weft__waitq *q, int handoff)
{
	weft__waitq_lock(q);
	struct weft__waiter *w = weft__waitq_pop(q);
	if (!w) {
		__atomic_add_fetch(sema, 1, __ATOMIC_RELEASE);
		weft__waitq_unlock(q);
		return;
	}
	weft__waitq_unlock(q);
	int is_g = w->g != NULL;
	weft__waiter_wake(w);
	if (handoff && is_g && weft__g_get())
		weft_yield();
}
