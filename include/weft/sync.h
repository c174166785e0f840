/* SPDX-License-Identifier: MIT */
/*
 * weft/sync.h - goroutine-aware synchronisation: WaitGroup and Mutex.
 *
 * These are value types: embed them anywhere; all-zero is ready to use (static
 * storage, calloc, or `= {0}`), so no init call exists. As in Go, a value must
 * not be copied after first use. No destroy call is needed either: when no
 * goroutine uses one any more, its memory may simply be reused.
 *
 * Waiting parks the goroutine (its thread runs other goroutines) or, on a
 * foreign thread, parks that thread on a futex. Both kinds of waiter may mix.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <stdint.h>

#include "common.h"

WEFT_BEGIN_DECLS

/* A queue of parked waiters guarded by a tiny lock; internal to weft. */
struct weft__waitq {
	/* private */
	uint32_t lock_;
	uint32_t len_;
	void *head_;
	void *tail_;
};

/*
 * weft_wg - Go's sync.WaitGroup: a counter; weft_wg_wait() returns when it is
 * zero. Call weft_wg_add() before starting what you wait for.
 */
typedef struct weft_wg {
	/* private */
	int64_t counter_;
	struct weft__waitq waiters_;
} weft_wg;

#define WEFT_WG_INIT {0}

/*
 * weft_wg_add - add delta (which may be negative) to the counter. When it
 * reaches zero, every waiter is released. A counter that goes negative is a
 * fatal error ("sync: negative WaitGroup counter").
 * Blocks: no. Thread-safety: any thread, concurrently with everything.
 */
WEFT_API void weft_wg_add(weft_wg *wg, int64_t delta);

/* weft_wg_done - weft_wg_add(wg, -1). */
WEFT_API void weft_wg_done(weft_wg *wg);

/*
 * weft_wg_wait - wait until the counter is zero; returns at once if it is.
 * Blocks: yes. Thread-safety: any thread; any number of waiters.
 */
WEFT_API void weft_wg_wait(weft_wg *wg);

/*
 * weft_mutex - Go's sync.Mutex: mutual exclusion between goroutines (and
 * foreign threads). A contended lock spins briefly, then parks. Like Go it has
 * a normal mode (a woken waiter competes with newcomers, for throughput) and a
 * starvation mode (entered when a waiter has waited over 1 ms: ownership is
 * handed straight to the oldest waiter), so no waiter starves.
 * A mutex is not tied to a goroutine: one may lock it and another unlock it.
 */
typedef struct weft_mutex {
	/* private */
	uint32_t state_;
	uint32_t sema_;
	struct weft__waitq waiters_;
} weft_mutex;

#define WEFT_MUTEX_INIT {0}

/*
 * weft_mutex_lock - lock m, waiting while another holder has it.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API void weft_mutex_lock(weft_mutex *m);

/*
 * weft_mutex_trylock - lock m if that is possible without waiting.
 * Returns 0 when locked, EBUSY when m is held (or handed to a waiter).
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_mutex_trylock(weft_mutex *m);

/*
 * weft_mutex_unlock - unlock m, waking a waiter if there is one. Unlocking an
 * unlocked mutex is a fatal error ("sync: unlock of unlocked mutex").
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_mutex_unlock(weft_mutex *m);

WEFT_END_DECLS

#endif /* WEFT_SYNC_H */
