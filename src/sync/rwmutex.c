/* SPDX-License-Identifier: MIT */
/*
 * rwmutex.c - weft_rwmutex, Go's sync.RWMutex, with Go's algorithm.
 *
 * readers_ counts the readers inside (or coming in). A writer first takes
 * w_, which orders it among writers, then subtracts MAX_READERS from readers_:
 * from then on the count is negative and every new reader queues on rsema_.
 * The readers still inside are "departing": the writer adds their number to
 * departing_ and sleeps on wsema_ until the last of them leaves. Unlocking
 * adds MAX_READERS back and lets in exactly the readers that queued
 * meanwhile, before w_ lets the next writer try. So a stream of readers
 * cannot starve a writer, nor a stream of writers the readers.
 */
#include "weft.h"

#include <errno.h>

#include "fatal.h"
#include "park.h"
#include "sanitizer.h"
#include "sched.h"

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

void weft_rwmutex_lock(weft_rwmutex *rw)
{
	weft_mutex_lock(&rw->w_);
	int32_t r = __atomic_sub_fetch(&rw->readers_, MAX_READERS, __ATOMIC_ACQUIRE) + MAX_READERS;
	/* Wait for the readers inside, if any are still to leave. */
	if (r != 0 && __atomic_add_fetch(&rw->departing_, r, __ATOMIC_ACQUIRE) != 0)
		weft__sema_acquire(&rw->wsema_, &rw->wq_, 0, "sync.RWMutex.Lock");
	weft__race_acquire(&rw->readers_);
}

int weft_rwmutex_trylock(weft_rwmutex *rw)
{
	if (weft_mutex_trylock(&rw->w_) != 0)
		return EBUSY;
	int32_t zero = 0;
	if (!__atomic_compare_exchange_n(&rw->readers_, &zero, -MAX_READERS, 0, __ATOMIC_ACQUIRE,
	                                 __ATOMIC_RELAXED)) {
		weft_mutex_unlock(&rw->w_);
		return EBUSY;
	}
	weft__race_acquire(&rw->readers_);
	return 0;
}

void weft_rwmutex_unlock(weft_rwmutex *rw)
{
	/* Publish this writer's work to the readers (they acquire &rw->w_)
	 * before the add that lets them in, as Go's race annotations. */
	weft__race_release(&rw->w_);
	/* Announce to readers that no writer is active. */
	int32_t r = __atomic_add_fetch(&rw->readers_, MAX_READERS, __ATOMIC_RELEASE);
	if (r >= MAX_READERS)
		weft__fatal("sync: Unlock of unlocked RWMutex");
	/* Let in the readers that queued behind us. */
	for (int32_t i = 0; i < r; i++)
		weft__sema_release(&rw->rsema_, &rw->rq_, 0);
	weft_mutex_unlock(&rw->w_);
}
