/* SPDX-License-Identifier: MIT */
/*
 * mutex.c - weft_mutex, Go's sync.Mutex, with its two modes.
 *
 * state_: bit 0 locked, bit 1 woken (a waiter has been woken and is on its
 * way: unlock need not wake another), bit 2 starving, bits 3.. the number of
 * waiters. sema_ and waiters_ form the semaphore the waiters sleep on.
 *
 * Normal mode: waiters queue FIFO, but a woken waiter competes with
 * newcomers that are already on a CPU, and usually loses; that keeps the
 * lock hot and throughput high. A waiter that has waited over 1 ms switches
 * the mutex to starvation mode: unlock hands ownership straight to the
 * front waiter, newcomers queue at the back without trying. The last waiter,
 * or one that waited under 1 ms, switches back to normal mode.
 * Unlike Go's, the fast path sets the locked bit blind (fetch-or, one trip of
 * the line whatever else the state holds) and only then looks: a newcomer
 * that finds the mutex starving clears the bit again and queues, and the
 * waiter it was handed to waits for that clear before it takes the bit
 * (take_handed). While starving, the bit is therefore either the front
 * waiter's or, for a few instructions, a newcomer's; never both.
 * A contended locker spins briefly first (up to 4 rounds of 30 pauses) when
 * there are other Ps (the holder may be running, about to release). Go's
 * canSpin also wants the locker's P to have nothing else to run; the plain
 * Mutex does not ask that (MutexContended at 2 Ps: 25 ns a lock spinning,
 * 34 ns parking instead), but the "polite" lock that RWMutex's writers take
 * does: a writer that misses that mutex usually waits long (its holder
 * waits for readers too), and handing the CPU on makes RWMutexReadMostly at
 * 2 Ps 14.3 -> 13.5 ns.
 */
#include "weft.h"

#include <errno.h>
#include <sched.h>

#include "fatal.h"
#include "lock.h"
#include "park.h"
#include "sched.h"
#include "sanitizer.h"
#include "sync_impl.h"

#define LOCKED 1u
#define WOKEN 2u
#define STARVING 4u
#define WAITER_SHIFT 3
#define STARVE_NS 1000000

static inline __attribute__((always_inline)) int can_spin(int iter, int polite)
{
	/* Spinning only helps when the holder can run at the same time. */
	if (iter >= 4 || weft_procs() <= 1)
		return 0;
	if (!polite)
		return 1;
	struct weft__m *m = weft__m_get();
	return !m || !m->p || weft__runq_empty(m->p);
}

/*
 * The front waiter, woken by a starving unlock: ownership is ours, and we are
 * still counted as a waiter. A newcomer's fast path may hold LOCKED for a
 * moment (it set the bit blind, saw STARVING and is clearing it again), so
 * wait that out, and take the bit with a CAS, which the next newcomer's blind
 * set cannot slip under. The holder of the bit runs no code but the clear, so
 * the wait is short unless its thread is preempted there.
 */
static void take_handed(uint32_t *st, uint32_t old, int starving)
{
	for (int spins = 1;; spins++) {
		if (old & LOCKED) {
			if (spins % 64 == 0)
				sched_yield();
			else
				weft__cpu_relax();
			old = __atomic_load_n(st, __ATOMIC_ACQUIRE);
			continue;
		}
		if (!(old & STARVING) || (old & WOKEN) || (old >> WAITER_SHIFT) == 0)
			weft__fatal("sync: inconsistent mutex state");
		uint32_t new = old + LOCKED - (1u << WAITER_SHIFT);
		if (!starving || (old >> WAITER_SHIFT) == 1)
			new -= STARVING; /* leave starvation mode */
		if (__atomic_compare_exchange_n(st, &old, new, 0, __ATOMIC_ACQUIRE,
						__ATOMIC_ACQUIRE))
			return;
	}
}

/* old: the state the fast path saw. */
static void lock_slow(weft_mutex *m, int polite, uint32_t old)
{
	uint32_t *st = &m->state_;
	int64_t wait_start = 0;
	int starving = 0, awoke = 0, iter = 0;
	for (;;) {
		if ((old & (LOCKED | STARVING)) == LOCKED && can_spin(iter, polite)) {
			/* Tell unlock not to wake anyone: we are awake. */
			if (!awoke && !(old & WOKEN) && (old >> WAITER_SHIFT) != 0 &&
			    __atomic_compare_exchange_n(st, &old, old | WOKEN, 0,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				awoke = 1;
			for (int i = 0; i < 30; i++)
				weft__cpu_relax();
			iter++;
			old = __atomic_load_n(st, __ATOMIC_RELAXED);
			continue;
		}
		uint32_t new = old;
		if (!(old & STARVING))
			new |= LOCKED; /* newcomers do not grab a starving mutex */
		if (old & (LOCKED | STARVING))
			new += 1u << WAITER_SHIFT;
		if (starving && (old & LOCKED))
			new |= STARVING;
		if (awoke) {
			if (!(new & WOKEN))
				weft__fatal("sync: inconsistent mutex state");
			new &= ~WOKEN;
		}
		if (!__atomic_compare_exchange_n(st, &old, new, 0, __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			continue; /* old reloaded by the failed CAS */
		if (!(old & (LOCKED | STARVING)))
			return; /* locked it */
		/* Queue: at the front if we waited before. */
		int lifo = wait_start != 0;
		if (!wait_start)
			wait_start = weft_now();
		weft__sema_acquire(&m->sema_, &m->waiters_, lifo, "sync.Mutex.Lock");
		starving = starving || weft_now() - wait_start > STARVE_NS;
		old = __atomic_load_n(st, __ATOMIC_ACQUIRE);
		if (old & STARVING) {
			take_handed(st, old, starving);
			return;
		}
		awoke = 1;
		iter = 0;
	}
}

static __attribute__((noinline)) void lock_contended(weft_mutex *m, int polite, uint32_t old)
{
	if (!(old & LOCKED)) /* starving: the bit is the front waiter's */
		old = __atomic_and_fetch(&m->state_, ~LOCKED, __ATOMIC_RELEASE);
	lock_slow(m, polite, old);
}

static inline __attribute__((always_inline)) void mutex_lock(weft_mutex *m, int polite)
{
	/* Set the bit whatever the waiter count, in one trip of the line to
	 * this core: a CAS from 0 fails whenever waiters are counted, and its
	 * retry in lock_slow came after the other core had taken the line back
	 * (MutexContended at 2 Ps: 31 -> 20 ns). x86 has no fetch-or that
	 * returns the old value, so a CAS loop from a guess of 0: when the
	 * guess is wrong the retry follows at once, with the line still here. */
#if defined(__x86_64__) || defined(__i386__)
	uint32_t old = 0;
	while (!__atomic_compare_exchange_n(&m->state_, &old, old | LOCKED, 0,
					    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		;
#else
	uint32_t old = __atomic_fetch_or(&m->state_, LOCKED, __ATOMIC_ACQUIRE);
#endif
	if (__builtin_expect(old & (LOCKED | STARVING), 0))
		lock_contended(m, polite, old);
	weft__race_acquire(m); /* pairs with the release in unlock */
}

void weft_mutex_lock(weft_mutex *m)
{
	mutex_lock(m, 0);
}

/* weft_mutex_lock that spins only when this P has nothing else to run. */
void weft__mutex_lock_polite(weft_mutex *m)
{
	mutex_lock(m, 1);
}

int weft_mutex_trylock(weft_mutex *m)
{
	uint32_t old = __atomic_load_n(&m->state_, __ATOMIC_RELAXED);
	if (old & (LOCKED | STARVING))
		return EBUSY;
	if (!__atomic_compare_exchange_n(&m->state_, &old, old | LOCKED, 0, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED))
		return EBUSY;
	weft__race_acquire(m);
	return 0;
}

static void unlock_slow(weft_mutex *m, uint32_t new, int handoff)
{
	uint32_t *st = &m->state_;
	if (new & STARVING) {
		/* Hand off: the front waiter owns the mutex now, and runs next. */
		weft__sema_release(&m->sema_, &m->waiters_, handoff);
		return;
	}
	uint32_t old = new;
	for (;;) {
		/* Nobody to wake, or someone already woken, or the lock was
		 * taken meanwhile (that holder will wake someone). */
		if ((old >> WAITER_SHIFT) == 0 || (old & (LOCKED | WOKEN | STARVING)))
			return;
		new = (old - (1u << WAITER_SHIFT)) | WOKEN;
		if (__atomic_compare_exchange_n(st, &old, new, 0, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED)) {
			weft__sema_release(&m->sema_, &m->waiters_, 0);
			return;
		}
	}
}

static inline void mutex_unlock(weft_mutex *m, int handoff)
{
	weft__race_release(m);
	uint32_t new = __atomic_sub_fetch(&m->state_, LOCKED, __ATOMIC_RELEASE);
	if (((new + LOCKED) & LOCKED) == 0)
		weft__fatal("sync: unlock of unlocked mutex");
	if (new != 0)
		unlock_slow(m, new, handoff);
}

void weft_mutex_unlock(weft_mutex *m)
{
	mutex_unlock(m, 1);
}

void weft__mutex_unlock_noyield(weft_mutex *m)
{
	mutex_unlock(m, 0);
}
