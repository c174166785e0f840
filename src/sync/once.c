/* SPDX-License-Identifier: MIT */
/*
 * once.c - weft_once, Go's sync.Once: an acquire load on the fast path;
 * the first caller runs fn under the mutex, and the others wait on it.
 * done_ is set only after fn returns, so every caller returns after fn.
 */
#include "weft.h"

#include "sanitizer.h"
#include "sched.h"

int weft_once_done(weft_once *o)
{
	if (!__atomic_load_n(&o->done_, __ATOMIC_ACQUIRE))
		return 0;
	weft__race_acquire(o);
	return 1;
}

void weft_once_do(weft_once *o, void (*fn)(void *arg), void *arg)
{
	if (weft_once_done(o))
		return;
	weft_mutex_lock(&o->m_);
	if (!__atomic_load_n(&o->done_, __ATOMIC_RELAXED)) {
		fn(arg);
		weft__race_release(o);
		__atomic_store_n(&o->done_, 1, __ATOMIC_RELEASE);
	}
	weft_mutex_unlock(&o->m_);
}
