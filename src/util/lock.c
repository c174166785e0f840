/* SPDX-License-Identifier: MIT */
/*
 * lock.c - the slow path of weft__lock: spin a little (the holder is likely
 * running on another CPU and about to release), then sleep on the futex.
 */
#include "lock.h"

void weft__lock_slow(uint32_t *l)
{
	for (int i = 0; i < 100; i++) {
		if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0 && weft__trylock(l))
			return;
		weft__cpu_relax();
	}
	/* Mark "locked with waiters" whenever we go to sleep, so that the
	 * unlocker knows to wake someone. */
	while (__atomic_exchange_n(l, 2, __ATOMIC_ACQUIRE) != 0)
		weft__futex_wait(l, 2, NULL);
}
