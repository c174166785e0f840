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

#include <errno.h>
#include <stddef.h>
#include <time.h>

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
	struct weft__waiter *head = q->head_, *tail = q->tail_;
	if (lifo) {
		w->prev = NULL;
		w->next = head;
		if (head)
			head->prev = w;
		else
			q->tail_ = w;
		__atomic_store_n(&q->head_, (void *)w, __ATOMIC_RELAXED);
	} else {
		w->next = NULL;
		w->prev = tail;
		if (tail)
			tail->next = w;
		else
			__atomic_store_n(&q->head_, (void *)w, __ATOMIC_RELAXED);
		q->tail_ = w;
	}
	w->queued = 1;
	__atomic_store_n(&q->len_, q->len_ + 1, __ATOMIC_RELAXED); /* read unlocked too */
}

void weft__waitq_unlink(struct weft__waitq *q, struct weft__waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else /* atomic: Cond's signal and broadcast look at it unlocked */
		__atomic_store_n(&q->head_, (void *)w->next, __ATOMIC_RELAXED);
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail_ = w->prev;
	w->next = w->prev = NULL;
	w->queued = 0;
	__atomic_store_n(&q->len_, q->len_ - 1, __ATOMIC_RELAXED);
}

struct weft__waiter *weft__waitq_take(struct weft__waitq *q, uint32_t *unlinked_stale)
{
	struct weft__waiter *w;
	while ((w = q->head_) != NULL) {
		weft__waitq_unlink(q, w);
		if (weft__waiter_claim(w))
			return w;
		/* Its deadline or its source won: it is on its way out. */
		if (unlinked_stale)
			++*unlinked_stale;
	}
	return NULL;
}

struct weft__waiter *weft__waitq_take_all(struct weft__waitq *q, uint32_t *unlinked)
{
	struct weft__waiter *list = NULL, **tail = &list, *w;
	uint32_t n = 0;
	while ((w = weft__waitq_take(q, &n)) != NULL) {
		n++;
		*tail = w;
		tail = &w->next;
	}
	if (unlinked)
		*unlinked = n;
	return list;
}

void weft__waiter_wake_list(struct weft__waiter *list)
{
	while (list) {
		struct weft__waiter *w = list;
		list = w->next;
		weft__waiter_wake(w); /* w is gone after this */
	}
}

void weft__waiter_init_until(struct weft__waiter *w, int64_t deadline, struct weft__cancel *cs)
{
	w->next = w->prev = NULL;
	w->g = weft__g_get();
	w->futex = 0;
	w->claim = 0;
	w->claimable = deadline != INT64_MAX || cs != NULL;
	w->queued = 0;
	w->counted = 0;
	w->result = 0;
	w->data = 0;
	w->deadline = deadline;
	w->cs = cs;
	w->timer_armed = 0;
	w->timer_done = 0;
}

void weft__waiter_init(struct weft__waiter *w)
{
	weft__waiter_init_until(w, INT64_MAX, NULL);
}

static void unlock_q(void *arg, struct weft__g *g)
{
	(void)g;
	weft__unlock(&((struct weft__waitq *)arg)->lock_);
}

void weft__waitq_block(struct weft__waitq *q, struct weft__waiter *w, const char *reason)
{
	/* A plain waiter is counted as blocked on a foreign thread. */
	w->counted = 1;
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

/* ---------------------------------------------------------------- claimable waits */

/* Wake a waiter claimed by a deadline or a source (not its queue's waker). */
static void wake_claimed(struct weft__waiter *w, int result)
{
	w->result = result;
	weft__waiter_wake(w); /* last touch */
}

/* Claim w for its deadline or its source. Under the queue lock: a parking
 * goroutine holds it until its after-switch action has registered both, so
 * a claim (and the wake that follows) never overtakes that registration. */
static int claim_locked(struct weft__waiter *w)
{
	weft__lock(&w->q->lock_);
	int won = weft__waiter_claim(w);
	weft__unlock(&w->q->lock_);
	return won;
}

static void waiter_deadline(struct weft__timer *t)
{
	struct weft__waiter *w = t->arg;
	int won = claim_locked(w);
	/* Let go of the record first: once woken, the waiter may return. */
	__atomic_store_n(&w->timer_done, 1, __ATOMIC_RELEASE);
	if (won)
		wake_claimed(w, ETIMEDOUT);
}

static int waiter_cancelled(struct weft__hook *h, int err, void *arg)
{
	(void)arg;
	struct weft__waiter *w = (struct weft__waiter *)((char *)h - offsetof(struct weft__waiter, hook));
	if (claim_locked(w))
		wake_claimed(w, err);
	return 0; /* either way: weft__cancel_fire marks the hook fired */
}

/* Register w's hook on its source; if the source has fired, claim w for it
 * (nobody else can have: the queue is locked and no timer is armed yet).
 * Returns the source's error then (w->cs cleared: nothing to remove). */
static int hook_or_claim(struct weft__waiter *w)
{
	w->hook.fn = waiter_cancelled;
	int err = weft__hook_add(w->cs, &w->hook);
	if (err) {
		w->cs = NULL;
		w->claim = 1;
		w->result = err;
	}
	return err;
}

struct arm_args {
	struct weft__waitq *q;
	struct weft__waiter *w;
};

/*
 * After-switch action of a goroutine parking on a claimable wait: only now,
 * parked, may it become visible to its source and its timer. Register the
 * hook, arm the timer, then release the queue (the args on its stack are
 * then gone); either may fire meanwhile, but claims wait for the queue lock
 * (claim_locked). A source that fired already wakes it straight away.
 */
static void arm_unlock_q(void *arg, struct weft__g *g)
{
	struct arm_args *a = arg;
	struct weft__waiter *w = a->w;
	struct weft__waitq *q = a->q;
	if (w->cs && hook_or_claim(w)) {
		weft__unlock(&q->lock_);
		weft__ready(g);
		return;
	}
	if (w->deadline != INT64_MAX) {
		w->tm.fn = waiter_deadline;
		w->tm.arg = w;
		w->tm.heap = NULL;
		w->tm.deletable = 1;
		w->timer_armed = 1;
		weft__timer_add_here(&w->tm, w->deadline);
	}
	weft__unlock(&q->lock_);
}

int weft__waitq_block_until(struct weft__waitq *q, struct weft__waiter *w, const char *reason)
{
	if (!w->claimable) {
		weft__waitq_block(q, w, reason);
		return 0;
	}
	w->q = q;
	int err = w->cs ? weft__cancel_err(w->cs) : 0;
	if (!err && w->deadline != INT64_MAX && w->deadline <= weft_now())
		err = ETIMEDOUT;
	if (err) {
		/* Done before waiting. Claim it (a waker may take the queue lock
		 * before the caller unlinks it); nobody else can have. */
		w->claim = 1;
		w->result = err;
		w->cs = NULL;
		weft__waitq_unlock(q);
		return err;
	}
	if (w->g) {
		struct arm_args a = {q, w};
		weft__park(reason, arm_unlock_q, &a);
		if (w->timer_armed && !__atomic_load_n(&w->timer_done, __ATOMIC_ACQUIRE)) {
			/* Someone else won: stop the timer, or wait until it let go. */
			weft__timer_stop_wait(&w->tm, &w->timer_done);
		}
	} else {
		/* A foreign thread (its wake is a futex word: safe at any time). With a deadline or a source
		 * it will come back by itself, so it does not count as blocked. */
		if (w->cs && hook_or_claim(w)) {
			weft__waitq_unlock(q);
			return w->result;
		}
		weft__waitq_unlock(q);
		while (!__atomic_load_n(&w->futex, __ATOMIC_ACQUIRE)) {
			int64_t left = w->deadline - weft_now();
			if (w->deadline == INT64_MAX) {
				weft__futex_wait(&w->futex, 0, NULL);
			} else if (left > 0) {
				struct timespec ts = {left / 1000000000, left % 1000000000};
				weft__futex_wait(&w->futex, 0, &ts);
			} else if (weft__waiter_claim(w)) {
				w->result = ETIMEDOUT;
				break;
			} else {
				w->deadline = INT64_MAX; /* claimed: the wake is coming */
			}
		}
	}
	if (w->cs)
		weft__hook_del(w->cs, &w->hook);
	return w->result;
}

int weft__wait_alone(int64_t deadline, struct weft__cancel *cs, const char *reason)
{
	struct weft__waitq q = {0};
	struct weft__waiter w;
	weft__waiter_init_until(&w, deadline, cs);
	weft__waitq_lock(&q);
	weft__waitq_push(&q, &w, 0);
	return weft__waitq_block_until(&q, &w, reason);
}

/* ---------------------------------------------------------------- cancellation sources */

enum { HOOK_LINKED, HOOK_FIRING, HOOK_FIRED };

int weft__hook_add(struct weft__cancel *c, struct weft__hook *h)
{
	weft__spin_lock(&c->lock);
	int err = c->err;
	if (!err) {
		h->prev = NULL;
		h->next = c->hooks;
		if (c->hooks)
			c->hooks->prev = h;
		c->hooks = h;
		h->state = HOOK_LINKED;
	}
	weft__spin_unlock(&c->lock);
	return err;
}

int weft__hook_del(struct weft__cancel *c, struct weft__hook *h)
{
	weft__spin_lock(&c->lock);
	if (__atomic_load_n(&h->state, __ATOMIC_RELAXED) == HOOK_LINKED) {
		if (h->prev)
			h->prev->next = h->next;
		else
			c->hooks = h->next;
		if (h->next)
			h->next->prev = h->prev;
		weft__spin_unlock(&c->lock);
		return 1;
	}
	weft__spin_unlock(&c->lock);
	/* Detached by a firing in progress: wait for its last touch. */
	while (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != HOOK_FIRED)
		weft_yield(); /* sched_yield() on a foreign thread */
	return 0;
}

void weft__hook_done(struct weft__hook *h)
{
	__atomic_store_n(&h->state, HOOK_FIRED, __ATOMIC_RELEASE);
}

int weft__cancel_fire(struct weft__cancel *c, int err, int cause, void *arg)
{
	weft__spin_lock(&c->lock);
	if (c->err) {
		weft__spin_unlock(&c->lock);
		return 0;
	}
	c->cause = cause ? cause : err;
	__atomic_store_n(&c->err, err, __ATOMIC_RELEASE);
	struct weft__hook *h = c->hooks;
	c->hooks = NULL;
	for (struct weft__hook *x = h; x; x = x->next)
		__atomic_store_n(&x->state, HOOK_FIRING, __ATOMIC_RELAXED);
	weft__spin_unlock(&c->lock);
	while (h) {
		struct weft__hook *next = h->next;
		if (!h->fn(h, err, arg))
			weft__hook_done(h); /* last touch */
		h = next;
	}
	return 1;
}

void weft__waiter_wake(struct weft__waiter *w)
{
	struct weft__g *g = w->g;
	if (g) {
		weft__ready(g);
		return;
	}
	weft__foreign_wake(&w->futex, w->counted);
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
	struct weft__waiter *w = weft__waitq_take(q, NULL);
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
