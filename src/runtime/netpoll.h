/* SPDX-License-Identifier: MIT */
/*
 * netpoll.h - the network poller inside the scheduler (Go's netpoll and
 * pollDesc): one edge-triggered epoll registration per descriptor, a reader
 * and a writer wait queue per descriptor, and the calls the scheduler makes
 * to poll it (without blocking between goroutines, blocking from an idle M).
 *
 * A poll descriptor (struct weft__pd) is never returned to libc: freed ones
 * go back to a pool and are reused with a new sequence number, and an epoll
 * event carries the number it was registered with, so an event that comes in
 * for a descriptor already closed (and perhaps reused) is recognised and
 * dropped, never applied to freed memory.
 *
 * Readiness is remembered per direction (rready/wready): the poller sets it
 * when epoll reports the direction and wakes every waiter; an I/O call clears
 * it just before its system call. So an event that lands between a call's
 * EAGAIN and its wait is never lost: the wait sees the flag and returns at
 * once.
 */
#ifndef WEFT_RUNTIME_NETPOLL_H
#define WEFT_RUNTIME_NETPOLL_H

#include <stdint.h>

#include "weft.h"

#include "park.h"

struct weft__m;

enum { WEFT__PD_READ = 0, WEFT__PD_WRITE = 1 };

struct weft__pd {
	struct weft__waitq q[2]; /* waiters, per direction */
	uint32_t ready[2];       /* atomic: epoll reported the direction */
	uint32_t closing;        /* atomic: weft__pd_close started */
	uint32_t sticky;         /* atomic: a one-time event was seen (the peer's hang-up,
	                  * an error, TCP urgent data): from then on calls never
	                  * infer exhaustion (net/fd.c) */
	uint32_t seq;            /* generation; bumped on free (atomic) */
	uint32_t rewakes[2];     /* atomic: weft__pd_rewake calls, per direction */
	int fd;
	struct weft__pd *free_next; /* the pool's free list, under its lock */
};

/* A poll descriptor for fd, registered with epoll (edge-triggered, both
 * directions). Returns 0, or EPERM (fd cannot be polled: a regular file or a
 * directory), or another error of epoll_ctl, or ENOMEM. The runtime starts. */
int weft__pd_open(int fd, struct weft__pd **out);
/* Mark pd closing and wake all its waiters (their waits return EBADF).
 * Idempotent. Does not free pd. */
void weft__pd_close(struct weft__pd *pd);
/* Deregister and free pd (weft__pd_close first; no one waits or will). Does
 * not close the fd. */
void weft__pd_free(struct weft__pd *pd);
/* Wake dir's waiters so they look at their deadlines again (the deadline of
 * the descriptor changed). */
void weft__pd_rewake(struct weft__pd *pd, int dir);

/*
 * Wait until pd is ready for dir (or may be: a wake-up is a hint to try the
 * call again), the deadline passes (INT64_MAX: none), cs fires (NULL: none),
 * or pd is closed. Returns 0, ETIMEDOUT, the source's error, or EBADF.
 * Blocks: yes (the goroutine, or a foreign thread). Returns 0 at once when
 * the ready flag is set (it does not clear it), or when rewakes, read by the
 * caller before it computed deadline, is no longer pd->rewakes[dir]: the
 * deadline may be stale.
 */
int weft__pd_wait(struct weft__pd *pd, int dir, int64_t deadline, struct weft__cancel *cs,
		  uint32_t rewakes);

static inline void weft__pd_clear(struct weft__pd *pd, int dir)
{
	if (__atomic_load_n(&pd->ready[dir], __ATOMIC_RELAXED))
		__atomic_store_n(&pd->ready[dir], 0, __ATOMIC_SEQ_CST);
}
static inline int weft__pd_ready(struct weft__pd *pd, int dir)
{
	return __atomic_load_n(&pd->ready[dir], __ATOMIC_ACQUIRE);
}
static inline void weft__pd_set_ready(struct weft__pd *pd, int dir)
{
	__atomic_store_n(&pd->ready[dir], 1, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------- for the scheduler */

/* Goroutines and threads waiting in weft__pd_wait (atomic). Nonzero: the
 * scheduler polls, and a deadlock is impossible to prove. */
extern int64_t weft__netpoll_nwaiters;
/* An M is blocked in weft__netpoll_block (atomic). */
extern uint32_t weft__netpoll_owner;

static inline int weft__netpoll_wanted(void)
{
	return __atomic_load_n(&weft__netpoll_nwaiters, __ATOMIC_SEQ_CST) > 0;
}
/* Poll without blocking; ready the goroutines whose descriptors are ready
 * (on m's P when m holds one, else the global queue). Returns how many
 * waiters it woke. m may be NULL (sysmon). */
int weft__netpoll_now(struct weft__m *m);
/* For an idle M holding no P (stopm): become the one blocking poller and
 * block in epoll until an event, until `until` (weft_now ns; INT64_MAX:
 * none), or until *park is set (the M's wake-up word: weft__netpoll_break is
 * sent when m->polling). Returns the number of waiters woken, or -1 when it
 * did not poll (no waiters, or another M is the poller). */
int weft__netpoll_block(struct weft__m *m, int64_t until, const uint32_t *park);
/* Interrupt the blocking poller (an eventfd write; coalesced). */
void weft__netpoll_break(void);
/* weft_now() of the last poll (sysmon polls when it is old). */
extern int64_t weft__netpoll_last;

#endif
