/* SPDX-License-Identifier: MIT */
/*
 * lock.h - the runtime's small locks and futex helpers.
 *
 * weft__lock is a 4-byte futex mutex (Drepper's "Futexes are tricky",
 * mutex #3: 0 unlocked, 1 locked, 2 locked with waiters) with a short spin
 * first. All-zero is unlocked, so it can live inside user value types
 * (weft_wg, weft_mutex). It is for short critical sections that never park
 * a goroutine while held; holding one across a switch is a bug.
 * Acquire pairs with the release in weft__unlock.
 */
#ifndef WEFT_UTIL_LOCK_H
#define WEFT_UTIL_LOCK_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * Raw futex calls: they return 0 or -errno and never write errno. They run
 * on goroutines' threads (inside weft_wg_done, weft_yield ...), and errno
 * is the goroutine's: a stray EAGAIN from a contended runtime lock must not
 * show up in user code.
 */
static inline long weft__raw_futex(uint32_t *addr, int op, uint32_t val,
				   const struct timespec *rel)
{
#if defined(__x86_64__)
	long ret;
	register long r10 __asm__("r10") = (long)rel;
	register long r8 __asm__("r8") = 0;
	register long r9 __asm__("r9") = 0;
	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "a"((long)SYS_futex), "D"(addr), "S"((long)op), "d"((long)val),
			       "r"(r10), "r"(r8), "r"(r9)
			     : "rcx", "r11", "memory");
	return ret;
#else
	int saved = errno;
	long r = syscall(SYS_futex, addr, op, val, rel, NULL, 0);
	if (r < 0)
		r = -errno;
	errno = saved;
	return r;
#endif
}

/* Sleep while *addr == val; 0, or -ETIMEDOUT / -EAGAIN / -EINTR. Callers
 * re-check their condition: a return of 0 may be spurious. */
static inline long weft__futex_wait(uint32_t *addr, uint32_t val, const struct timespec *rel)
{
#ifdef WEFT_TSAN
	/* ThreadSanitizer delivers signals to a thread only when it passes
	 * through one of its interceptors, and a raw futex wait is invisible to
	 * it: a thread parked here forever would never run a SIGQUIT handler.
	 * So TSan builds sleep at most 50 ms at a time and then pass through
	 * an intercepted call (a zero nanosleep). */
	const struct timespec cap = { 0, 50 * 1000 * 1000 };
	int capped = !rel || rel->tv_sec > 0 || rel->tv_nsec > cap.tv_nsec;
	long r = weft__raw_futex(addr, FUTEX_WAIT_PRIVATE, val, capped ? &cap : rel);
	if (capped && r == -ETIMEDOUT) {
		struct timespec zero = { 0, 0 };
		nanosleep(&zero, NULL);
		return 0;
	}
	return r;
#else
	return weft__raw_futex(addr, FUTEX_WAIT_PRIVATE, val, rel);
#endif
}

static inline long weft__futex_wake(uint32_t *addr, int n)
{
	return weft__raw_futex(addr, FUTEX_WAKE_PRIVATE, (uint32_t)n, NULL);
}

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

void weft__lock_slow(uint32_t *l);

static inline void weft__lock(uint32_t *l)
{
	uint32_t z = 0;
	if (__builtin_expect(__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE,
							 __ATOMIC_RELAXED), 1))
		return;
	weft__lock_slow(l);
}

static inline int weft__trylock(uint32_t *l)
{
	uint32_t z = 0;
	return __atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void weft__unlock(uint32_t *l)
{
	if (__builtin_expect(__atomic_exchange_n(l, 0, __ATOMIC_RELEASE) == 2, 0))
		weft__futex_wake(l, 1);
}

/*
 * weft__spin_lock - for the hottest tiny critical sections (a channel's):
 * the unlock is a plain release store, so an uncontended lock and unlock
 * cost one locked instruction instead of two. The price: the unlocker
 * cannot know of sleepers, so a waiter spins (backing off), then naps in
 * short bounded sleeps that nobody cuts short. All-zero is unlocked.
 */
void weft__spin_lock_slow(uint32_t *l);

static inline void weft__spin_lock(uint32_t *l)
{
	if (__builtin_expect(weft__trylock(l), 1))
		return;
	weft__spin_lock_slow(l);
}

static inline void weft__spin_unlock(uint32_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

#endif
