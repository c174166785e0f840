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
	/* Look less and less often (after 1, 2, ... 16 pauses; 64 in all,
	 * about 1.5 us): every look pulls the lock's line away from the
	 * holder, who must fetch it back to unlock. Looking after every pause,
	 * for 128 pauses, then sched_yield() eight times (which returns at
	 * once when no other thread wants the CPU), kept both CPUs fighting
	 * over the line: a channel with 4 senders and 4 receivers at 2 Ps
	 * took 60-95 ns a message, against 15 ns at 1 P; backing off and
	 * napping sooner, 17-23 ns. */
	for (int i = 0, k = 1; i < 64; i += k, k += k < 16) {
		for (int j = 0; j < k; j++)
			weft__cpu_relax();
		if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0 && weft__trylock(l))
			return;
	}
	/* The holder is not running (its thread was preempted) or the lock
	 * is fought over: get out of the way. Nap, 10 us doubling to 1 ms
	 * (the kernel's timer slack rounds the shortest up). A futex wait on
	 * the locked value: it returns early if the word already changed,
	 * never because of a wake. */
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
