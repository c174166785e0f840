/* SPDX-License-Identifier: MIT */
/*
 * rwmutex.c - weft_rwmutex, Go's sync.RWMutex, with Go's algorithm and a
 * fast path for a writer that finds the lock free.
 *
 * readers_ counts the readers inside (or coming in). A writer first takes
 * w_, which orders it among writers, then subtracts MAX_READERS from readers_:
 * from then on the count is negative and every new reader queues on rsema_.
 * The readers still inside are "departing": the writer adds their number to
 * departing_ and sleeps on wsema_ until the last of them leaves. Unlocking
 * adds MAX_READERS back and lets in exactly the readers that queued
 * meanwhile, before w_ lets the next writer try. So a stream of readers
 * cannot starve a writer, nor a stream of writers the readers.
 *
 * The fast path: a writer that sees w_ free and nobody in or queued
 * (readers_ == 0) takes the lock with one CAS of readers_ from 0 to
 * -MAX_READERS, and leaves w_ alone; unlocking is then one add. That halves
 * the locked instructions of an uncontended Lock/Unlock (four in Go: w_'s
 * lock and unlock, two adds). A writer on the slow path, holding w_, that
 * finds readers_ negative knows a fast writer is in (only writers make it
 * negative, and it holds w_): it sets wwait_ and sleeps on wsema_ until that
 * writer's unlock hands it a token, then tries again. wsema_ serves both of
 * the w_ holder's waits; they never overlap, and every token is taken once.
 * A fast writer cannot starve the slow ones: it needs w_ free, and once one
 * holds w_ only writers already past that check may still come in.
 */
#include "weft.h"

#include <errno.h>

#include "fatal.h"
#include "park.h"
#include "sanitizer.h"
#include "sched.h"
#include "sync_impl.h"

#define MAX_READERS (1 << 30)

void weft_rwmutex_rlock(weft_rwmutex *rw)
{
	if (__atomic_add_fetch(&rw->readers_, 1, __ATOMIC_ACQUIRE) < 0) {
		/* A writer is pending: wait for it to finish. */
		weft__sema_acquire(&rw->rsema_, &rw->rq_, 0, "sync.RWMutex.RLock");
	}
	weft__race_acquire(&rw->w_); /* after the last writer's unlock */
}

int weft_rwmutex_tryrlock(weft_rwmutex *rw)
{
	int32_t c = __atomic_load_n(&rw->readers_, __ATOMIC_RELAXED);
	do {
		if (c < 0)
			return EBUSY;
	} while (!__atomic_compare_exchange_n(&rw->readers_, &c, c + 1, 1, __ATOMIC_ACQUIRE,
	                                      __ATOMIC_RELAXED));
	weft__race_acquire(&rw->w_);
	return 0;
}

void weft_rwmutex_runlock(weft_rwmutex *rw)
{
	/* Readers release into a separate address, which the writer acquires:
	 * readers do not order each other (as Go's race annotations). */
	weft__race_release(&rw->readers_);
	int32_t r = __atomic_sub_fetch(&rw->readers_, 1, __ATOMIC_RELEASE);
	if (r >= 0)
		return;
	if (r + 1 == 0 || r + 1 == -MAX_READERS)
		weft__fatal("sync: RUnlock of unlocked RWMutex");
	/* A writer is pending; the last departing reader wakes it. */
	if (__atomic_sub_fetch(&rw->departing_, 1, __ATOMIC_RELEASE) == 0)
		weft__sema_release(&rw->wsema_, &rw->wq_, 0);
}

/* The slow path: w_ first. Returns with readers_ made negative. */
static int32_t lock_slow(weft_rwmutex *rw)
{
	weft__mutex_lock_polite(&rw->w_);
	int32_t r = __atomic_load_n(&rw->readers_, __ATOMIC_RELAXED);
	for (;;) {
		if (r >= 0) {
			if (__atomic_compare_exchange_n(&rw->readers_, &r, r - MAX_READERS, 0,
							__ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return r;
			continue; /* r reloaded by the failed CAS */
		}
		/* A fast writer is in: ask its unlock for a token (Dekker: our
		 * store then our load, against its add then its load). */
		__atomic_store_n(&rw->wwait_, 1, __ATOMIC_SEQ_CST);
		if (weft__sched.chaos && (weft__fastrand() & 1))
			weft_yield(); /* chaos: let the fast writer leave just now */
		r = __atomic_load_n(&rw->readers_, __ATOMIC_SEQ_CST);
		if (r >= 0) {
			/* It left meanwhile. If it took our flag, its token is
			 * on the way: take it, or a later wait would. */
			if (!__atomic_exchange_n(&rw->wwait_, 0, __ATOMIC_ACQ_REL))
				weft__sema_acquire(&rw->wsema_, &rw->wq_, 0, "sync.RWMutex.Lock");
			continue;
		}
		weft__sema_acquire(&rw->wsema_, &rw->wq_, 0, "sync.RWMutex.Lock");
		r = __atomic_load_n(&rw->readers_, __ATOMIC_RELAXED);
	}
}

/* The fast path: w_ free (no writer holds or waits for it) and nobody in.
 * Returns whether it took the lock. */
static inline int lock_fast(weft_rwmutex *rw)
{
	int32_t zero = 0;
	if (__atomic_load_n(&rw->w_.state_, __ATOMIC_RELAXED) != 0 ||
	    !__atomic_compare_exchange_n(&rw->readers_, &zero, -MAX_READERS, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return 0;
	rw->wfast_ = 1;
	weft__race_acquire(&rw->readers_); /* after the last readers */
	weft__race_acquire(&rw->w_);       /* after the last writer's unlock */
	return 1;
}

void weft_rwmutex_lock(weft_rwmutex *rw)
{
	if (lock_fast(rw))
		return;
	int32_t r = lock_slow(rw);
	rw->wfast_ = 0;
	/* Wait for the readers inside, if any are still to leave. */
	if (r != 0 && __atomic_add_fetch(&rw->departing_, r, __ATOMIC_ACQUIRE) != 0)
		weft__sema_acquire(&rw->wsema_, &rw->wq_, 0, "sync.RWMutex.Lock");
	weft__race_acquire(&rw->readers_);
	/* After the last writer's unlock: w_'s lock acquired it only when that
	 * writer came by w_; a fast one may have unlocked after we took w_. */
	weft__race_acquire(&rw->w_);
}

int weft_rwmutex_trylock(weft_rwmutex *rw)
{
	return lock_fast(rw) ? 0 : EBUSY;
}

void weft_rwmutex_unlock(weft_rwmutex *rw)
{
	/* Read before the add: once readers_ is back, the next writer may
	 * be in and write it. */
	uint32_t fast = rw->wfast_;
	/* Publish this writer's work to the readers (they acquire &rw->w_)
	 * before the add that lets them in, as Go's race annotations. */
	weft__race_release(&rw->w_);
	/* Announce to readers that no writer is active. */
	int32_t r = __atomic_add_fetch(&rw->readers_, MAX_READERS, __ATOMIC_SEQ_CST);
	if (r >= MAX_READERS)
		weft__fatal("sync: Unlock of unlocked RWMutex");
	/* Let in the readers that queued behind us. */
	for (int32_t i = 0; i < r; i++)
		weft__sema_release(&rw->rsema_, &rw->rq_, 0);
	if (!fast)
		weft_mutex_unlock(&rw->w_);
	else if (__atomic_load_n(&rw->wwait_, __ATOMIC_SEQ_CST) &&
		 __atomic_exchange_n(&rw->wwait_, 0, __ATOMIC_ACQ_REL))
		weft__sema_release(&rw->wsema_, &rw->wq_, 0); /* the w_ holder's turn */
}
