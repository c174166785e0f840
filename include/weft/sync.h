/* SPDX-License-Identifier: MIT */
/*
 * weft/sync.h - goroutine-aware synchronisation, as Go's sync package:
 * WaitGroup, Mutex, RWMutex, Once, Cond, Map, Pool, a weighted Semaphore and
 * singleflight. (errgroup, and the forms of these calls that take a context,
 * are in weft/context.h.)
 *
 * These are value types: embed them anywhere; all-zero is ready to use (static
 * storage, calloc, or `= {0}`), except a Semaphore, which needs its capacity
 * (WEFT_SEM_INIT(n) or weft_sem_init()), and a Pool its constructor
 * (WEFT_POOL_INIT). As in Go, a value must not be copied after first use.
 * Map, Pool and singleflight hold memory, which their _destroy call frees;
 * the others need no destroy call: when no goroutine or thread uses one any
 * more, its memory may simply be reused.
 *
 * "Uses" includes a call that has yet to return. As in Go, a call that lets
 * another party in (an unlock, a release, a signal) may still touch the value
 * after that party got in, until the call returns. So, unlike a POSIX mutex,
 * an object must not be freed by whoever finds its reference count at zero
 * under the object's own Mutex: the previous holder's unlock may not have
 * returned yet. Count references with an atomic instead, dropped after the
 * unlock returns (the last one to drop frees). The exception is WaitGroup:
 * once the counter is zero and every wait on it (any form, timed out or not)
 * has returned, the WaitGroup may be freed at once, even while the
 * weft_wg_done() that brought the counter to zero is still returning.
 *
 * Waiting parks the goroutine (its thread runs other goroutines) or, on a
 * foreign thread, parks that thread on a futex. Both kinds of waiter may mix.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <stdint.h>

#include "common.h"
#include "runtime.h"

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
 * Deadlines. Calls named _until take an absolute deadline on weft_now()'s
 * clock and return ETIMEDOUT when it passes first; a deadline already past
 * does not wait (the call succeeds if it can without waiting). The forms that
 * take a context are in weft/context.h.
 */

/*
 * weft_wg - Go's sync.WaitGroup: a counter; weft_wg_wait() returns when it is
 * zero. Call weft_wg_add() before starting what you wait for.
 */
typedef struct weft_wg {
	/* private */
	int64_t counter_;
	struct weft__waitq waiters_;
} weft_wg;

/* Initialisers spell out every member (nested in a larger initializer, a
 * bare {0} draws -Wmissing-braces). */
#define WEFT__WAITQ_INIT {0, 0, 0, 0}
#define WEFT_WG_INIT {0, WEFT__WAITQ_INIT}

/*
 * weft_wg_add - add delta (which may be negative) to the counter. When it
 * reaches zero, every waiter is released. A counter that goes negative is a
 * fatal error ("sync: negative WaitGroup counter"), and so is a delta beyond
 * the counter's 32 bits, as in Go ("sync: WaitGroup delta ... out of
 * range").
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
 * weft_wg_go - Go 1.25's WaitGroup.Go: weft_wg_add(wg, 1), then start fn(arg)
 * in a new goroutine (as weft_go() does, reporting the caller's file and line
 * in dumps) that calls weft_wg_done(wg) when fn returns. The start allocates
 * nothing beyond the goroutine itself.
 * Returns 0, or: EINVAL (fn is NULL), or weft_go()'s errors (ENOMEM,
 * EAGAIN); on failure fn will never run and the counter is as it was (the
 * add is undone, which releases the waiters if that brings it to zero).
 * Blocks: no. Thread-safety: any thread. arg is borrowed, as in weft_go();
 * wg must stay valid until fn's goroutine is done with it, which a
 * weft_wg_wait() on it guarantees.
 */
#define weft_wg_go(wg, fn, arg) weft_wg_go_at((wg), (fn), (arg), __FILE__, __LINE__)

/* weft_wg_go_at - the function behind weft_wg_go(), taking the creation site
 * explicitly (as weft_go_at()). */
WEFT_API int weft_wg_go_at(weft_wg *wg, weft_fn fn, void *arg, const char *file, int line);

/*
 * weft_wg_wait_until - weft_wg_wait() giving up at deadline_ns.
 * Returns 0 (the counter reached zero) or ETIMEDOUT.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_wg_wait_until(weft_wg *wg, int64_t deadline_ns);

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

#define WEFT_MUTEX_INIT {0, 0, WEFT__WAITQ_INIT}

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

/* ---------------------------------------------------------------- RWMutex */

/*
 * weft_rwmutex - Go's sync.RWMutex: any number of readers or one writer.
 * Neither side starves: once a writer waits, new readers queue behind it;
 * when it unlocks, the readers that queued meanwhile all go before the next
 * writer. Readers and writers may be goroutines or foreign threads. Not
 * recursive for readers either: a reader that read-locks again while a
 * writer waits deadlocks, as in Go.
 */
typedef struct weft_rwmutex {
	/* private */
	weft_mutex w_;            /* orders the writers that miss the fast path */
	int32_t readers_;         /* readers in, minus 1<<30 while a writer is pending */
	int32_t departing_;       /* readers the pending writer still waits for */
	uint32_t wsema_, rsema_;
	uint32_t wfast_;          /* the writer in came by the fast path, not w_ */
	uint32_t wwait_;          /* a writer holding w_ waits for the fast one */
	struct weft__waitq wq_, rq_;
} weft_rwmutex;

#define WEFT_RWMUTEX_INIT {WEFT_MUTEX_INIT, 0, 0, 0, 0, 0, 0, WEFT__WAITQ_INIT, WEFT__WAITQ_INIT}

/* weft_rwmutex_rlock - lock rw for reading. Blocks: yes (while a writer holds
 * or waits for it). Thread-safety: any thread. */
WEFT_API void weft_rwmutex_rlock(weft_rwmutex *rw);
/* weft_rwmutex_tryrlock - 0 when read-locked, EBUSY when a writer holds or
 * waits for rw. Blocks: no. */
WEFT_API int weft_rwmutex_tryrlock(weft_rwmutex *rw);
/* weft_rwmutex_runlock - undo one rlock. Without one, a fatal error
 * ("sync: RUnlock of unlocked RWMutex"). Blocks: no. */
WEFT_API void weft_rwmutex_runlock(weft_rwmutex *rw);
/* weft_rwmutex_lock - lock rw for writing: waits for other writers, then for
 * the readers inside to leave. Blocks: yes. Thread-safety: any thread. */
WEFT_API void weft_rwmutex_lock(weft_rwmutex *rw);
/* weft_rwmutex_trylock - 0 when write-locked, EBUSY otherwise. Blocks: no. */
WEFT_API int weft_rwmutex_trylock(weft_rwmutex *rw);
/* weft_rwmutex_unlock - release the write lock, letting waiting readers in.
 * Unlocking an rw not write-locked is a fatal error ("sync: Unlock of
 * unlocked RWMutex"). Blocks: no. */
WEFT_API void weft_rwmutex_unlock(weft_rwmutex *rw);

/* ---------------------------------------------------------------- Once */

/*
 * weft_once - Go's sync.Once: weft_once_do() runs its function once only,
 * however many goroutines or threads call it, and every caller returns after
 * that one run has finished. Calling weft_once_do() on the same once from
 * inside fn deadlocks, as in Go.
 */
typedef struct weft_once {
	/* private */
	uint32_t done_;
	weft_mutex m_;
} weft_once;

#define WEFT_ONCE_INIT {0, WEFT_MUTEX_INIT}

/* weft_once_do - call fn(arg) unless a call on this once has already run
 * fn; wait for a run in progress. Blocks: yes (while another caller's fn
 * runs). Thread-safety: any thread. */
WEFT_API void weft_once_do(weft_once *o, void (*fn)(void *arg), void *arg);
/* weft_once_done - whether fn has run to completion. Blocks: no. */
WEFT_API int weft_once_done(weft_once *o);

/* ---------------------------------------------------------------- Cond */

/*
 * weft_cond - Go's sync.Cond: goroutines wait for a condition to change,
 * with a Mutex held around each test of it:
 *
 *   weft_mutex_lock(&m);
 *   while (!ready)
 *       weft_cond_wait(&c, &m);
 *   ... use the state ...
 *   weft_mutex_unlock(&m);
 *
 * Waiters are woken in the order they started waiting.
 */
typedef struct weft_cond {
	/* private */
	struct weft__waitq q_;
} weft_cond;

#define WEFT_COND_INIT {WEFT__WAITQ_INIT}

/*
 * weft_cond_wait - unlock m (which the caller must hold), wait for a signal
 * or broadcast, lock m again, return. Waking up does not mean the condition
 * holds: test it again in a loop. Unlocking an unlocked m is a fatal error.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API void weft_cond_wait(weft_cond *c, weft_mutex *m);
/* weft_cond_wait_until - weft_cond_wait() giving up at deadline_ns: returns
 * 0 (woken) or ETIMEDOUT; m is locked again either way. */
WEFT_API int weft_cond_wait_until(weft_cond *c, weft_mutex *m, int64_t deadline_ns);
/* weft_cond_signal - wake the longest-waiting waiter, if any. The caller may
 * but need not hold the mutex. Blocks: no. */
WEFT_API void weft_cond_signal(weft_cond *c);
/* weft_cond_broadcast - wake every waiter. Blocks: no. */
WEFT_API void weft_cond_broadcast(weft_cond *c);

/* ---------------------------------------------------------------- Semaphore */

/*
 * weft_sem - a weighted semaphore (Go's golang.org/x/sync/semaphore): a
 * capacity of tokens; acquire(n) waits until n are free. Waiters are served
 * strictly first come, first served: a large request at the front is not
 * overtaken by small ones, so none starves. Initialise with WEFT_SEM_INIT(n)
 * or weft_sem_init(); the all-zero value has capacity 0.
 */
typedef struct weft_sem {
	/* private */
	int64_t size_;
	int64_t cur_;             /* tokens held; under q_'s lock */
	struct weft__waitq q_;
} weft_sem;

#define WEFT_SEM_INIT(n) {(n), 0, WEFT__WAITQ_INIT}

/* weft_sem_init - set s (unused) to n free tokens. Returns 0, or EINVAL when
 * n < 0. Blocks: no. */
WEFT_API int weft_sem_init(weft_sem *s, int64_t n);
/*
 * weft_sem_acquire - take n tokens, waiting until they are free and every
 * earlier waiter is served. n must be >= 0 (a negative n, here and in
 * every acquire and release below, is a fatal error naming it); asking for
 * more than the capacity waits forever (the _until and context forms give
 * up), on its own: it never queues, so it holds up no other waiter.
 * Returns 0.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_sem_acquire(weft_sem *s, int64_t n);
/* weft_sem_acquire_until - weft_sem_acquire() giving up at deadline_ns:
 * returns 0 or ETIMEDOUT (holding nothing). */
WEFT_API int weft_sem_acquire_until(weft_sem *s, int64_t n, int64_t deadline_ns);
/* weft_sem_tryacquire - take n tokens if they are free and nobody waits:
 * 0, or EAGAIN. Blocks: no. */
WEFT_API int weft_sem_tryacquire(weft_sem *s, int64_t n);
/* weft_sem_release - give back n tokens and serve the waiters that now fit.
 * Releasing more than is held is a fatal error ("semaphore: released more
 * than held"). Blocks: no. */
WEFT_API void weft_sem_release(weft_sem *s, int64_t n);

/* ---------------------------------------------------------------- Map */

/*
 * weft_map - Go's sync.Map: a concurrent hash map tuned for keys written once
 * and read many times, or disjoint keys per goroutine. A load takes no lock
 * and writes no shared memory (on a goroutine; a foreign thread takes the
 * map's lock); storing a new key, and deleting, take a lock.
 *
 * Keys are byte strings (any bytes, any length, 0 included), copied into the
 * map; an integer key is passed as &k, sizeof k. Values are void pointers the
 * caller owns: the map never dereferences nor frees them, and a NULL value is
 * a value like any other. All-zero is an empty map, ready to use; weft_map_destroy()
 * frees what it holds (not the values).
 */
typedef struct weft_map {
	/* private */
	void *table_;             /* atomic: the current table, or NULL */
	weft_mutex m_;            /* serialises writers that change the table */
	void *retired_;           /* tables and entries waiting for a grace period */
	int64_t count_;           /* live keys, under m_ */
	int32_t ranges_;          /* weft_map_range calls in progress, under m_ */
	int32_t pad_;
} weft_map;

#define WEFT_MAP_INIT {0, WEFT_MUTEX_INIT, 0, 0, 0, 0}

/* weft_map_load - look key up: 0 and *val (if val is not NULL) set, or
 * ENOENT. Blocks: no. Thread-safety: any thread. */
WEFT_API int weft_map_load(weft_map *m, const void *key, size_t keylen, void **val);
/* weft_map_store - set key's value. Returns 0 or ENOMEM (the map unchanged).
 * Blocks: only briefly, on the map's lock, for a new key. */
WEFT_API int weft_map_store(weft_map *m, const void *key, size_t keylen, void *val);
/* weft_map_swap - store val and give the previous value in *prev (if not
 * NULL): 0 when the key existed, ENOENT when it was added (*prev is then
 * set to NULL), ENOMEM (nothing changed, *prev untouched). */
WEFT_API int weft_map_swap(weft_map *m, const void *key, size_t keylen, void *val, void **prev);
/* weft_map_load_or_store - if key is present, *actual = its value and return
 * 0 ("loaded"); else store val, *actual = val and return ENOENT ("stored");
 * or ENOMEM. actual may be NULL. */
WEFT_API int weft_map_load_or_store(weft_map *m, const void *key, size_t keylen, void *val,
				    void **actual);
/* weft_map_compare_and_swap - set key's value to new_val if it is old_val:
 * 0, or EAGAIN (a different value), or ENOENT (no such key). */
WEFT_API int weft_map_compare_and_swap(weft_map *m, const void *key, size_t keylen,
				       void *old_val, void *new_val);
/* weft_map_delete - remove key; its value goes to *val if val is not NULL.
 * 0, or ENOENT. (Go's LoadAndDelete.) */
WEFT_API int weft_map_delete(weft_map *m, const void *key, size_t keylen, void **val);
/* weft_map_compare_and_delete - remove key if its value is old_val (Go's
 * CompareAndDelete): 0, or EAGAIN (a different value: nothing removed), or
 * ENOENT (no such key). */
WEFT_API int weft_map_compare_and_delete(weft_map *m, const void *key, size_t keylen,
					 void *old_val);
/*
 * weft_map_range - call fn(key, keylen, val, arg) for each key, until fn
 * returns nonzero (that value is returned; else 0). Like Go's Range it is not
 * a snapshot: each key present for the whole call is visited once; a key
 * stored or deleted meanwhile may or may not be. fn may call any weft_map
 * function on m, and may block. Key bytes stay valid during its call.
 */
WEFT_API int weft_map_range(weft_map *m,
			    int (*fn)(const void *key, size_t keylen, void *val, void *arg),
			    void *arg);
/* weft_map_len - the number of keys (a moment's count). Blocks: briefly. */
WEFT_API int64_t weft_map_len(weft_map *m);
/* weft_map_clear - delete every key. Blocks: briefly. */
WEFT_API void weft_map_clear(weft_map *m);
/* weft_map_destroy - free the map's memory (not the values); m is then an
 * empty map again. No call on m may be in progress. */
WEFT_API void weft_map_destroy(weft_map *m);

/* ---------------------------------------------------------------- Pool */

/*
 * weft_pool - Go's sync.Pool: a cache of reusable objects (buffers, say)
 * that goroutines take and give back, with a private slot and a small stack
 * per P, so a get and a put on the same P touch no shared memory. Unlike Go's,
 * nothing is dropped behind your back (there is no garbage collector): a
 * pool keeps up to WEFT_POOL_PER_P objects per P, hands the excess to
 * free_fn (or keeps it when there is none), and weft_pool_destroy() frees the
 * rest. The pool never looks inside the objects.
 *
 * Initialise with WEFT_POOL_INIT(new_fn, free_fn, arg); all-zero is a pool
 * with neither (get returns NULL when empty).
 */
typedef struct weft_pool {
	void *(*new_fn)(void *arg);             /* makes an object for get, or NULL */
	void (*free_fn)(void *obj, void *arg);  /* frees an object, or NULL */
	void *arg;
	/* private */
	void *locals_;            /* atomic: per-P caches by P id, made on first use */
	uint32_t lock_;           /* the overflow list */
	uint32_t nlocals_;        /* atomic: 1 + the highest P id with a cache */
	void *overflow_;          /* atomic: the overflow list, made on first use */
} weft_pool;

#define WEFT_POOL_PER_P 64
#define WEFT_POOL_INIT(new_fn, free_fn, arg) {(new_fn), (free_fn), (arg), 0, 0, 0, 0}

/* weft_pool_get - an object from the pool (this P's first, then other Ps'),
 * else new_fn(arg)'s result, else NULL. The caller owns it. Blocks: no. */
WEFT_API void *weft_pool_get(weft_pool *p);
/* weft_pool_put - give obj (not NULL) to the pool, which then owns it.
 * Blocks: no. */
WEFT_API void weft_pool_put(weft_pool *p, void *obj);
/* weft_pool_destroy - hand every cached object to free_fn (if set; else
 * they are simply forgotten) and free the pool's memory; p is then empty and
 * usable again. No call on p may be in progress. */
WEFT_API void weft_pool_destroy(weft_pool *p);

/* ---------------------------------------------------------------- singleflight */

/*
 * weft_flight - Go's golang.org/x/sync/singleflight: duplicate calls for the
 * same key share one execution. While fn runs for a key, other callers of
 * weft_flight_do() with that key wait for it and get its result. All-zero is
 * ready; weft_flight_destroy() frees its memory once no call is in progress.
 */
typedef struct weft_flight {
	/* private */
	weft_mutex m_;
	void *calls_;             /* in-flight calls: a small hash table */
	uint32_t n_, cap_;
} weft_flight;

#define WEFT_FLIGHT_INIT {WEFT_MUTEX_INIT, 0, 0, 0}

/*
 * weft_flight_do - run fn(arg, &result) for key unless a call for key is in
 * flight, in which case wait for that one. *result (if result is not NULL)
 * gets the void * that fn stored, *shared (if not NULL) whether the result
 * went to more than one caller. Returns fn's return value, or ENOMEM before
 * running anything. Blocks: yes (runs fn, or waits for it).
 */
WEFT_API int weft_flight_do(weft_flight *f, const void *key, size_t keylen,
			    int (*fn)(void *arg, void **result), void *arg, void **result,
			    int *shared);
/* weft_flight_forget - let the next call for key run fn even though one is
 * in flight (its waiters still get that one's result). Blocks: briefly. */
WEFT_API void weft_flight_forget(weft_flight *f, const void *key, size_t keylen);
/* weft_flight_destroy - free f's memory; no call may be in progress. */
WEFT_API void weft_flight_destroy(weft_flight *f);

WEFT_END_DECLS

#endif /* WEFT_SYNC_H */
