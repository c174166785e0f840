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

void weft__spin_lock_slow(uint32_t *l)
{
	/* Look less and less often (after 1, 2, ... 16 pauses; 128 in all):
	 * every look pulls the lock's line away from the holder, who must
	 * fetch it back to unlock. Looking after every pause made a channel
	 * with 4 senders and 4 receivers on 2 Ps 1.5x slower per message. */
	for (int i = 0, k = 1; i < 128; i += k, k += k < 16) {
		for (int j = 0; j < k; j++)
			weft__cpu_relax();
		if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0 && weft__trylock(l))
			return;
	}
	/* The holder is not running: let it. */
	for (int i = 0; i < 8; i++) {
		syscall(SYS_sched_yield);
		if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0 && weft__trylock(l))
			return;
	}
	/* Nap, 10 us doubling to 1 ms (the kernel's timer slack rounds the
	 * shortest up). A futex wait on the locked value: it returns early
	 * if the word already changed, never because of a wake. */
	long nap = 10000;
	for (;;) {
		uint32_t v = __atomic_load_n(l, __ATOMIC_RELAXED);
		if (v == 0 && weft__trylock(l))
			return;
		struct timespec ts = { 0, nap };
		weft__raw_futex(l, FUTEX_WAIT_PRIVATE, v ? v : 1, &ts);
		if (nap < 1000000)
			nap *= 2;
	}
}
