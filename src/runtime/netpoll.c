/* SPDX-License-Identifier: MIT */
/*
 * netpoll.c - the epoll poller and the poll descriptors (see netpoll.h).
 *
 * Who polls (as in Go's findrunnable and sysmon):
 *  - an M whose P has nothing queued polls without blocking before it steals;
 *  - an idle M in stopm becomes the one blocking poller while anything waits
 *    on a descriptor: it sleeps in epoll_wait instead of on its futex, until
 *    the earliest timer, and whoever wakes it (m_wake, a new earlier timer)
 *    writes the eventfd;
 *  - the scheduler polls every 61st switch while nobody else does, so a P
 *    that never runs dry does not starve the descriptors;
 *  - sysmon polls when no one has for 10 ms.
 * Woken goroutines go, in the order of their events, to the tail of the
 * poller's P's queue when it has one, else to the global queue in one batch
 * (Go's injectglist).
 */
#include "netpoll.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "fatal.h"
#include "lock.h"
#include "sanitizer.h"
#include "sched.h"

int64_t weft__netpoll_nwaiters;
uint32_t weft__netpoll_owner;
int64_t weft__netpoll_last;

static int epfd = -1;
static int evfd = -1;
static uint32_t init_lock;
static int inited;             /* atomic */
static uint32_t break_pending; /* atomic: an eventfd write not yet consumed */

/* The pool of poll descriptors: allocated in blocks, never freed. */
#define PD_BLOCK 64
static uint32_t pool_lock;
static struct weft__pd *pool_free;

/* An event's data: the descriptor's address in the low 48 bits (user
 * addresses on x86-64 and aarch64 fit), its sequence number above. */
#define TAG_SHIFT 48
#define PTR_MASK ((UINT64_C(1) << TAG_SHIFT) - 1)

/* Is the poller made? The descriptors were created by whoever set inited:
 * tell ThreadSanitizer (the runtime is not instrumented, so it does not see
 * the flag's ordering). */
static inline int is_inited(void)
{
	if (!__atomic_load_n(&inited, __ATOMIC_ACQUIRE))
		return 0;
	weft__race_acquire(&inited);
	return 1;
}

static int netpoll_init(void)
{
	if (is_inited())
		return 0;
	weft__start();
	weft__lock(&init_lock);
	int err = 0;
	if (!inited) {
		int ep = epoll_create1(EPOLL_CLOEXEC);
		int ev = ep < 0 ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (ep < 0 || ev < 0) {
			err = errno;
			if (ep >= 0)
				close(ep);
		} else {
			struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0};
			if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) < 0) {
				err = errno;
				close(ep);
				close(ev);
			} else {
				epfd = ep;
				evfd = ev;
				weft__race_release(&inited);
				__atomic_store_n(&inited, 1, __ATOMIC_RELEASE);
			}
		}
	}
	weft__unlock(&init_lock);
	if (!err)
		weft__race_acquire(&inited); /* made by another thread, maybe */
	return err;
}

static struct weft__pd *pd_get(void)
{
	weft__lock(&pool_lock);
	if (!pool_free) {
		struct weft__pd *b = weft__calloc(PD_BLOCK, sizeof *b);
		if (!b) {
			weft__unlock(&pool_lock);
			return NULL;
		}
		for (int i = 0; i < PD_BLOCK; i++) {
			b[i].free_next = pool_free;
			pool_free = &b[i];
		}
	}
	struct weft__pd *pd = pool_free;
	pool_free = pd->free_next;
	weft__unlock(&pool_lock);
	return pd;
}

int weft__pd_open(int fd, struct weft__pd **out)
{
	int err = netpoll_init();
	if (err)
		return err;
	struct weft__pd *pd = pd_get();
	if (!pd)
		return ENOMEM;
	uint32_t seq = __atomic_load_n(&pd->seq, __ATOMIC_RELAXED);
	pd->fd = fd;
	/* Unknown until the first call: try it. */
	__atomic_store_n(&pd->ready[0], 1, __ATOMIC_RELAXED);
	__atomic_store_n(&pd->ready[1], 1, __ATOMIC_RELAXED);
	__atomic_store_n(&pd->sticky, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pd->closing, 0, __ATOMIC_RELEASE);
	struct epoll_event e = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
		.data.u64 = ((uint64_t)(uintptr_t)pd & PTR_MASK) |
	                    ((uint64_t)(seq & 0xffff) << TAG_SHIFT),
	};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		err = errno;
		weft__lock(&pool_lock);
		pd->free_next = pool_free;
		pool_free = pd;
		weft__unlock(&pool_lock);
		return err;
	}
	*out = pd;
	return 0;
}

/* Wake every waiter of pd's dir; ready: set the ready flag first. Waiters
 * that are goroutines go to v (room for cap) when v is given. */
static int unblock(struct weft__pd *pd, int dir, int ready, struct weft__g **v, int *nv, int cap)
{
	struct weft__waitq *q = &pd->q[dir];
	if (ready)
		__atomic_store_n(&pd->ready[dir], 1, __ATOMIC_SEQ_CST);
	/* Nobody waits (the common case for a busy connection): no lock. The
	 * flag store above is ordered before this load, and a waiter enqueues
	 * before it reads the flag, both under the queue lock. */
	if (!__atomic_load_n(&q->len_, __ATOMIC_SEQ_CST))
		return 0;
	weft__waitq_lock(q);
	struct weft__waiter *list = weft__waitq_take_all(q, NULL);
	weft__waitq_unlock(q);
	int n = 0;
	while (list) {
		struct weft__waiter *w = list;
		list = w->next; /* read before the wake: the record goes with it */
		n++;
		if (v && w->g && *nv < cap)
			v[(*nv)++] = w->g;
		else
			weft__waiter_wake(w);
	}
	return n;
}

void weft__pd_close(struct weft__pd *pd)
{
	__atomic_store_n(&pd->closing, 1, __ATOMIC_SEQ_CST);
	unblock(pd, WEFT__PD_READ, 0, NULL, NULL, 0);
	unblock(pd, WEFT__PD_WRITE, 0, NULL, NULL, 0);
}

void weft__pd_rewake(struct weft__pd *pd, int dir)
{
	/* Before the wake, which skips a queue that looks empty: a waiter on
	 * its way in sees the count moved (weft__pd_wait). */
	__atomic_add_fetch(&pd->rewakes[dir], 1, __ATOMIC_SEQ_CST);
	unblock(pd, dir, 0, NULL, NULL, 0);
}

void weft__pd_free(struct weft__pd *pd)
{
	/* Deregister explicitly: a dup() of the fd elsewhere would keep the
	 * registration alive past close(). Errors (the fd is gone) are fine. */
	epoll_ctl(epfd, EPOLL_CTL_DEL, pd->fd, NULL);
	__atomic_add_fetch(&pd->seq, 1, __ATOMIC_SEQ_CST);
	pd->fd = -1;
	weft__lock(&pool_lock);
	pd->free_next = pool_free;
	pool_free = pd;
	weft__unlock(&pool_lock);
}

int weft__pd_wait(struct weft__pd *pd, int dir, int64_t deadline, struct weft__cancel *cs,
		  uint32_t rewakes)
{
	struct weft__waitq *q = &pd->q[dir];
	struct weft__waiter w;
	weft__waiter_init_until(&w, deadline, cs);
	weft__waitq_lock(q);
	weft__waitq_push(q, &w, 0);
	/* Enqueued first, then the flags: unblock() sets the flag, then looks
	 * for waiters (see there); the fence orders our store before the
	 * loads. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&pd->closing, __ATOMIC_SEQ_CST)) {
		weft__waitq_unlink(q, &w);
		weft__waitq_unlock(q);
		return EBADF;
	}
	if (__atomic_load_n(&pd->ready[dir], __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&pd->rewakes[dir], __ATOMIC_SEQ_CST) != rewakes) {
		weft__waitq_unlink(q, &w);
		weft__waitq_unlock(q);
		return 0;
	}
	__atomic_add_fetch(&weft__netpoll_nwaiters, 1, __ATOMIC_SEQ_CST);
	if (!w.g && !__atomic_load_n(&weft__netpoll_owner, __ATOMIC_SEQ_CST))
		weft__wakep(); /* a foreign thread: make sure some M will poll */
	int r = weft__waitq_block_until(
		q, &w, dir == WEFT__PD_READ ? "IO wait (read)" : "IO wait (write)");
	__atomic_sub_fetch(&weft__netpoll_nwaiters, 1, __ATOMIC_SEQ_CST);
	if (r) {
		weft__waitq_lock(q);
		if (w.queued)
			weft__waitq_unlink(q, &w);
		weft__waitq_unlock(q);
		return r;
	}
	return __atomic_load_n(&pd->closing, __ATOMIC_SEQ_CST) ? EBADF : 0;
}

/* ---------------------------------------------------------------- polling */

#define NEVENTS 128

/* Apply n events; ready the woken goroutines as described at the top. Only
 * the blocking poller consumes a break (the eventfd is level-triggered): a
 * poll that does not block must not take the wake-up meant for it. */
static int dispatch(struct weft__m *m, struct epoll_event *ev, int n, int blocking)
{
	struct weft__g *v[NEVENTS * 2];
	int nv = 0, woken = 0;
	for (int i = 0; i < n; i++) {
		uint64_t d = ev[i].data.u64;
		if (d == 0) {
			if (!blocking)
				continue;
			uint64_t x;
			while (read(evfd, &x, sizeof x) > 0)
				;
			__atomic_store_n(&break_pending, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		struct weft__pd *pd = (struct weft__pd *)(uintptr_t)(d & PTR_MASK);
		uint32_t tag = (uint32_t)(d >> TAG_SHIFT);
		if ((__atomic_load_n(&pd->seq, __ATOMIC_ACQUIRE) & 0xffff) != tag)
			continue; /* closed since: not this registration's event */
		uint32_t e = ev[i].events;
		/* Before the ready flags: a call that sees them cleared must
		 * not infer exhaustion past a one-time event. */
		if (e & (EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			__atomic_store_n(&pd->sticky, 1, __ATOMIC_SEQ_CST);
		if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
			woken += unblock(pd, WEFT__PD_READ, 1, v, &nv, NEVENTS * 2);
		if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			woken += unblock(pd, WEFT__PD_WRITE, 1, v, &nv, NEVENTS * 2);
	}
	if (nv)
		weft__inject(m, v, nv);
	return woken;
}

/* epoll_wait's result n: a failure but a signal's is fatal, as in Go's
 * netpoll. The one way to it is the program's: weft's epoll descriptor
 * closed (a closefrom(3), a daemon's close loop) or replaced by dup2. Going
 * on would leave every goroutine waiting on a descriptor parked for ever,
 * and the idle Ms spinning on the failing call. */
static void check_wait(int n)
{
	if (n < 0 && errno != EINTR)
		weft__fatal("netpoll: epoll_wait on descriptor %d failed: %s (weft's epoll "
			    "descriptor was closed or replaced by the program?)",
			    epfd, strerror(errno));
}

int weft__netpoll_now(struct weft__m *m)
{
	if (!is_inited())
		return 0;
	struct epoll_event ev[NEVENTS];
	int n = epoll_wait(epfd, ev, NEVENTS, 0);
	check_wait(n);
	__atomic_store_n(&weft__netpoll_last, weft_now(), __ATOMIC_RELAXED);
	if (n <= 0)
		return 0;
	return dispatch(m, ev, n, 0);
}

int weft__netpoll_block(struct weft__m *m, int64_t until, const uint32_t *park)
{
	if (!weft__netpoll_wanted() || !is_inited())
		return -1;
	uint32_t z = 0;
	if (__atomic_load_n(&weft__netpoll_owner, __ATOMIC_RELAXED) ||
	    !__atomic_compare_exchange_n(&weft__netpoll_owner, &z, 1, 0, __ATOMIC_SEQ_CST,
	                                 __ATOMIC_RELAXED))
		return -1;
	/* Announce, then look at the wake-up word: m_wake stores the word,
	 * then looks at m->polling (both sequentially consistent), so one of
	 * us sees the other. */
	__atomic_store_n(&m->polling, 1, __ATOMIC_SEQ_CST);
	int woken = 0;
	if (!__atomic_load_n(park, __ATOMIC_SEQ_CST)) {
		int timeout = -1;
		if (until != INT64_MAX) {
			int64_t d = until - weft_now();
			/* Round up: waking early would spin on the timer. */
			timeout = d <= 0 ? 0
			          : d > INT32_MAX * INT64_C(1000000)
			                  ? INT32_MAX
			                  : (int)((d + 999999) / 1000000);
		}
		struct epoll_event ev[NEVENTS];
		int n = epoll_wait(epfd, ev, NEVENTS, timeout);
		check_wait(n);
		__atomic_store_n(&weft__netpoll_last, weft_now(), __ATOMIC_RELAXED);
		if (n > 0)
			woken = dispatch(m, ev, n, 1);
	}
	__atomic_store_n(&m->polling, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&weft__netpoll_owner, 0, __ATOMIC_SEQ_CST);
	return woken;
}

void weft__netpoll_break(void)
{
	if (!is_inited())
		return;
	uint32_t z = 0;
	if (!__atomic_compare_exchange_n(&break_pending, &z, 1, 0, __ATOMIC_SEQ_CST,
	                                 __ATOMIC_RELAXED))
		return;
	uint64_t one = 1;
	ssize_t r;
	do
		r = write(evfd, &one, sizeof one);
	while (r < 0 && errno == EINTR);
}
