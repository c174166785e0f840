/* SPDX-License-Identifier: MIT */
/*
 * sync_impl.h - the sync layer's waits with a deadline and a cancellation
 * source, which the public _until forms and the context layer's _ctx forms
 * share. deadline INT64_MAX: none; cs NULL: none. Each returns 0, ETIMEDOUT
 * or the source's error, having done nothing in the last two cases.
 */
#ifndef WEFT_SYNC_IMPL_H
#define WEFT_SYNC_IMPL_H

#include <stdint.h>

#include "weft.h"

#include "park.h"

int weft__wg_wait(weft_wg *wg, int64_t deadline, struct weft__cancel *cs);
/* wg's counter, a moment's value. */
int32_t weft__wg_count(weft_wg *wg);
/* For tests: called by the add that made a counter zero with waiters
 * counted, before it takes the queue lock. */
extern void (*weft__wg_zero_hook)(void);
/* m is locked again on return, whatever the result. */
int weft__cond_wait(weft_cond *c, weft_mutex *m, int64_t deadline, struct weft__cancel *cs);
int weft__sem_acquire(weft_sem *s, int64_t n, int64_t deadline, struct weft__cancel *cs);
/* weft_mutex_unlock that never yields to a woken waiter (for callers that
 * hold a lock of their own). */
void weft__mutex_unlock_noyield(weft_mutex *m);
/* weft_mutex_lock that spins only while its P has nothing else to run
 * (Go's canSpin): for a mutex whose holder is likely to keep it a while. */
void weft__mutex_lock_polite(weft_mutex *m);

#endif
