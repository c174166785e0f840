/* SPDX-License-Identifier: MIT */
/*
 * fd.c - I/O on a weft_fd: try the system call, and when it would block,
 * park on the descriptor's poll record until epoll says it is ready (Go's
 * internal/poll.FD).
 *
 * Each call holds a reference for its duration (refs), so the descriptor is
 * closed only when the last call has left: a number reused by another open()
 * can never be read or written by a call still running on the old one.
 * weft_fd_close marks the record closing, wakes the waiters (EBADF), drops
 * the open reference and waits for the rest. The record itself lives until
 * its last handle (weft_fd_retain) is released, so a goroutine holding one
 * may call in after the close and get EBADF rather than freed memory.
 *
 * TCP readiness is inferred: a read that returns less than it asked for has
 * emptied the receive queue (tcp_recvmsg copies until the queue is empty or
 * the request is met), so the next read parks at once instead of first
 * making a system call that fails with EAGAIN; a partial write has filled
 * the send buffer, so the writer parks at once too. The ready flags are
 * cleared before each system call, and epoll reports (edge-triggered) every
 * arrival after that, so nothing is missed. Some events are reported only
 * once: the peer's hang-up (EPOLLRDHUP, EPOLLHUP), an error, and urgent data
 * (EPOLLPRI, which can also end a read early with more data queued). After
 * one (the poll record's sticky flag, set before the ready flags), the
 * descriptor always tries the call first, as Go does for every descriptor.
 */
#include "net_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "ctx_impl.h"
#include "fatal.h"
#include "sanitizer.h"
#include "sched.h"
#include "sync_impl.h"

#define CLOSING 0x80000000u
#define RD WEFT__PD_READ
#define WR WEFT__PD_WRITE

struct weft__cancel *weft__net_ctx(weft_ctx *ctx, int *err)
{
	struct weft__cancel *cs = weft__ctx_source(ctx);
	*err = cs ? weft__cancel_err(cs) : 0;
	return cs;
}

/* ---------------------------------------------------------------- open and close */

int weft__fd_wrap(int fd, int sock, int stream, int tcp, weft_fd **out)
{
	weft_fd *f = weft__calloc(1, sizeof *f);
	if (!f)
		return ENOMEM;
	f->fd = fd;
	f->sock = (uint8_t)sock;
	f->stream = (uint8_t)stream;
	if (tcp) {
		/* A receive low-water mark (set before, or inherited from a
		 * listener) makes epoll skip arrivals below it: try first. */
		int lw = 1;
		socklen_t l = sizeof lw;
		if (getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lw, &l) == 0 && lw > 1)
			tcp = 0;
	}
	f->tcp = (uint8_t)tcp;
	f->refs = 1;
	f->handles = 1;
	f->dl[RD] = f->dl[WR] = INT64_MAX;
	weft_sem_init(&f->mu[RD], 1);
	weft_sem_init(&f->mu[WR], 1);
	int err = weft__pd_open(fd, &f->pd);
	if (err == EPERM) {
		f->file = 1; /* a regular file or the like: the blocking path */
		f->pd = NULL;
		err = 0;
	}
	if (err) {
		weft__free(f);
		return err;
	}
	*out = f;
	return 0;
}

int weft_fd_open(int fd, weft_fd **out)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return EBADF;
	if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode))
		return weft__fd_wrap(fd, 0, 1, 0, out); /* epoll refuses it: a file */
	int sock = S_ISSOCK(st.st_mode), stream = 1, tcp = 0;
	if (sock) {
		int type = 0, dom = 0, proto = 0;
		socklen_t l = sizeof type;
		getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
		l = sizeof dom;
		getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l);
		l = sizeof proto;
		getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
		stream = type == SOCK_STREAM;
		/* Inference rests on tcp_recvmsg's rule, so other stream
		 * protocols over IP (MPTCP, SCTP) try each call first. */
		tcp = stream && (dom == AF_INET || dom == AF_INET6) && proto == IPPROTO_TCP;
		if (tcp) {
			/* An upper-layer protocol (kTLS) hands out records,
			 * not the stream: a read stops short at a control
			 * record with more queued. It tries each call first. */
			char ulp[16] = "";
			l = sizeof ulp;
			if (getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &l) == 0 && l > 0 && ulp[0])
				tcp = 0;
		}
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return errno;
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return errno;
	int err = weft__fd_wrap(fd, sock, stream, tcp, out);
	/* The caller keeps it as it was on failure, and for a device that
	 * epoll refuses (/dev/null, /dev/zero): that one takes the blocking
	 * path, and its open file description may be shared. */
	if (!(fl & O_NONBLOCK) && (err || (*out)->file))
		fcntl(fd, F_SETFL, fl);
	return err;
}

int weft_open(const char *path, int flags, unsigned mode, weft_fd **out)
{
	weft_blocking_begin();
	int fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
	int err = fd < 0 ? errno : 0;
	weft_blocking_end();
	if (err)
		return err;
	err = weft_fd_open(fd, out);
	if (err)
		close(fd);
	return err;
}

int weft_fd_get(const weft_fd *f)
{
	/* From now on the raw descriptor may be read directly (no byte may be
	 * read ahead of it) and its options changed (SO_RCVLOWAT hides
	 * arrivals from epoll): no call infers readiness (run, tcp_read). */
	__atomic_store_n(&((weft_fd *)f)->raw_out, 1, __ATOMIC_RELAXED);
	/* After a close the number may belong to someone else now. */
	return __atomic_load_n(&f->refs, __ATOMIC_ACQUIRE) & CLOSING ? -1 : f->fd;
}

static void fd_unref(weft_fd *f);

/* Take a reference for a call: EBADF once closing. */
static int fd_ref(weft_fd *f)
{
	uint32_t v = __atomic_add_fetch(&f->refs, 1, __ATOMIC_ACQ_REL);
	if (v & CLOSING) {
		fd_unref(f);
		return EBADF;
	}
	return 0;
}

static void fd_unref(weft_fd *f)
{
	/* The call's system calls happen before the close (ThreadSanitizer
	 * checks descriptors too, and cannot see the reference count). */
	weft__race_release(f);
	uint32_t v = __atomic_load_n(&f->refs, __ATOMIC_RELAXED);
	while (!(v & CLOSING))
		if (__atomic_compare_exchange_n(&f->refs, &v, v - 1, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return;
	/* Closing: drop the reference under the closer's queue lock. The
	 * closer checks the count under it, then frees f: dropped before the
	 * lock, the closer could free f while we were on our way to it. The
	 * last call of a closing descriptor lets the closer finish. */
	weft__waitq_lock(&f->closeq);
	uint32_t left = __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL);
	struct weft__waiter *w = left == CLOSING ? weft__waitq_take(&f->closeq, NULL) : NULL;
	weft__waitq_unlock(&f->closeq);
	if (w)
		weft__waiter_wake(w);
}

int weft__fd_name(const weft_fd *f, int peer, struct sockaddr_storage *ss, socklen_t *len)
{
	weft_fd *w = (weft_fd *)f;
	if (fd_ref(w))
		return EBADF; /* the number may belong to someone else now */
	int err = (peer ? getpeername(w->fd, (struct sockaddr *)ss, len)
			: getsockname(w->fd, (struct sockaddr *)ss, len)) < 0 ? errno : 0;
	fd_unref(w);
	return err;
}

/* Close f's descriptor once: EBADF if it was closed already. */
static int do_close(weft_fd *f)
{
	uint32_t v = __atomic_fetch_or(&f->refs, CLOSING, __ATOMIC_ACQ_REL);
	if (v & CLOSING)
		return EBADF;
	if (f->pd)
		weft__pd_close(f->pd);
	uint32_t left = __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL);
	if (left != CLOSING) {
		struct weft__waiter w;
		weft__waiter_init(&w);
		weft__waitq_lock(&f->closeq);
		if (__atomic_load_n(&f->refs, __ATOMIC_ACQUIRE) == CLOSING) {
			weft__waitq_unlock(&f->closeq);
		} else {
			weft__waitq_push(&f->closeq, &w, 0);
			weft__waitq_block(&f->closeq, &w, "close (calls in progress)");
		}
	}
	weft__race_acquire(f);
	if (f->pd)
		weft__pd_free(f->pd);
	int err = 0;
	/* close of a file may flush (NFS), of a tty wait for its output to
	 * drain (closing_wait, 30 s by default); a stream socket with
	 * SO_LINGER on sleeps in close(2) until its data is sent or the linger
	 * time ends, non-blocking or not: all on the blocking path. */
	int slow = !f->sock;
	if (!slow && f->stream) {
		struct linger lg;
		socklen_t ll = sizeof lg;
		slow = getsockopt(f->fd, SOL_SOCKET, SO_LINGER, &lg, &ll) == 0 && lg.l_onoff &&
		       lg.l_linger > 0;
	}
	if (slow)
		weft_blocking_begin();
	if (close(f->fd) < 0 && errno != EINTR)
		err = errno;
	if (slow)
		weft_blocking_end();
	return err;
}

weft_fd *weft_fd_retain(weft_fd *f)
{
	__atomic_add_fetch(&f->handles, 1, __ATOMIC_RELAXED);
	return f;
}

void weft_fd_release(weft_fd *f)
{
	uint32_t left = __atomic_sub_fetch(&f->handles, 1, __ATOMIC_ACQ_REL);
	if (left == UINT32_MAX)
		weft__fatal("net: weft_fd released more times than retained");
	if (left)
		return;
	if (!(__atomic_load_n(&f->refs, __ATOMIC_ACQUIRE) & CLOSING))
		do_close(f);
	weft__free(f);
}

int weft_fd_close(weft_fd *f)
{
	int err = do_close(f);
	weft_fd_release(f);
	return err;
}

/* ---------------------------------------------------------------- deadlines */

static int set_deadline(weft_fd *f, int dir, int64_t d)
{
	if (fd_ref(f))
		return EBADF; /* closed: its poll record may be reused already */
	if (f->file) {
		fd_unref(f);
		return ENOTSUP; /* after the closed check, as Go's os.File */
	}
	__atomic_store_n(&f->dl[dir], d ? d : INT64_MAX, __ATOMIC_SEQ_CST);
	weft__pd_rewake(f->pd, dir);
	fd_unref(f);
	return 0;
}

int weft_fd_set_read_deadline(weft_fd *f, int64_t deadline_ns)
{
	return set_deadline(f, RD, deadline_ns);
}

int weft_fd_set_write_deadline(weft_fd *f, int64_t deadline_ns)
{
	return set_deadline(f, WR, deadline_ns);
}

int weft_fd_set_deadline(weft_fd *f, int64_t deadline_ns)
{
	int err = set_deadline(f, RD, deadline_ns);
	return err ? err : set_deadline(f, WR, deadline_ns);
}

static inline int64_t eff_deadline(weft_fd *f, int dir, int64_t dl)
{
	int64_t d = __atomic_load_n(&f->dl[dir], __ATOMIC_ACQUIRE);
	return d < dl ? d : dl;
}

/* Whether deadline d (INT64_MAX: none) has passed. */
static inline int past(int64_t d)
{
	return d != INT64_MAX && d <= weft_now();
}

/* The checks that fail a call before it does anything: its context done,
 * or its deadline (the call's or the descriptor's) past. */
static int call_check(weft_fd *f, int dir, int64_t dl, struct weft__cancel *cs)
{
	int err = cs ? weft__cancel_err(cs) : 0;
	if (!err && past(eff_deadline(f, dir, dl)))
		err = ETIMEDOUT;
	return err;
}

/* ---------------------------------------------------------------- the engine */

/*
 * Enter a call on f in direction dir: a reference, the direction's lock,
 * and the checks that fail a call before it does anything (closed, context
 * done, deadline past). Returns 0 holding both, or an error holding none.
 */
static int call_enter(weft_fd *f, int dir, int64_t dl, struct weft__cancel *cs)
{
	if (fd_ref(f))
		return EBADF;
	int err = call_check(f, dir, dl, cs);
	if (!err) {
		/* The descriptor's deadline may move while we queue (set_deadline
		 * wakes only the poller's waiters): a timeout at a deadline that
		 * is no longer the descriptor's waits again, for the new one. A
		 * shortened one needs nothing: the holder times out and lets us
		 * in, and our check of the deadline below fails us. */
		for (;;) {
			err = weft__sem_acquire(&f->mu[dir], 1, eff_deadline(f, dir, dl), cs);
			if (err != ETIMEDOUT || eff_deadline(f, dir, dl) <= weft_now())
				break;
		}
		/* Queued behind another call when the close began: fail as
		 * the calls already in flight do, rather than start a system
		 * call on a descriptor being closed (it is still open until
		 * the last reference goes, and a pipe or socket would take
		 * the I/O). Go's fdMutex fails its lock waiters likewise. And
		 * the entry checks again: the deadline may have passed (or
		 * moved into the past) or the context ended while we queued
		 * (Go's prepareRead/prepareWrite after the fdMutex). */
		if (!err) {
			err = (__atomic_load_n(&f->refs, __ATOMIC_ACQUIRE) & CLOSING)
				      ? EBADF
				      : call_check(f, dir, dl, cs);
			if (err)
				weft_sem_release(&f->mu[dir], 1);
		}
	}
	if (err) {
		fd_unref(f);
		return err;
	}
	return 0;
}

static void call_leave(weft_fd *f, int dir)
{
	weft_sem_release(&f->mu[dir], 1);
	fd_unref(f);
}

/* Park until dir may be ready: 0 (try again), or an error. The deadline is
 * read after the rewake count: a set_deadline between the read and the
 * queueing bumps it, and the wait returns at once to read it again. */
static inline int fd_wait(weft_fd *f, int dir, int64_t dl, struct weft__cancel *cs)
{
	uint32_t gen = __atomic_load_n(&f->pd->rewakes[dir], __ATOMIC_SEQ_CST);
	int64_t d = eff_deadline(f, dir, dl);
	if (past(d))
		return ETIMEDOUT; /* Go's pollWait checks the deadline first */
	weft__chaos_pause(4); /* the window a set_deadline may fall in */
	int r = weft__pd_wait(f->pd, dir, d, cs, gen);
	/* Woken, but not by readiness (the deadline was moved, perhaps into
	 * the past, to interrupt us): a passed deadline ends the call here
	 * rather than after one more system call that may succeed. */
	if (!r && !weft__pd_ready(f->pd, dir) && past(eff_deadline(f, dir, dl)))
		r = ETIMEDOUT;
	return r;
}

/* The system calls themselves go through syscall(): libc's wrappers are
 * pthread cancellation points, which costs two extra calls each, and
 * goroutines are never cancelled that way. Returns the result, errno set on
 * -1. */
static inline ssize_t sys3(long nr, long a, long b, long c)
{
	return syscall(nr, a, b, c);
}

/* One system call of a call: returns its result, errno on -1. */
typedef ssize_t (*sys_fn)(weft_fd *f, void *args);

/*
 * Run fn until it does not fail with EAGAIN, parking in between; inside
 * call_enter/call_leave. *res gets fn's result. For a file, fn runs once on
 * the blocking path. infer: the call is a plain read or write, whose short
 * result tells (TCP) that the direction is exhausted.
 */
static int run(weft_fd *f, int dir, int64_t dl, struct weft__cancel *cs, sys_fn fn, void *args,
               size_t want, int infer, ssize_t *res)
{
	if (f->file) {
		weft_blocking_begin();
		ssize_t r;
		do
			r = fn(f, args);
		while (r < 0 && errno == EINTR);
		int e = errno;
		weft_blocking_end();
		if (r < 0)
			return e;
		*res = r;
		return 0;
	}
	struct weft__pd *pd = f->pd;
	infer = infer && f->tcp;
	for (;;) {
		/* Read each time: a hang-up or an error is reported once, and
		 * the data before it may be read in several calls. */
		int inferring = infer && !__atomic_load_n(&pd->sticky, __ATOMIC_SEQ_CST) &&
		                !__atomic_load_n(&f->raw_out, __ATOMIC_RELAXED);
		if (inferring && !weft__pd_ready(pd, dir)) {
			int w = fd_wait(f, dir, dl, cs);
			if (w)
				return w;
			continue; /* woken: the flag says whether to try */
		}
		weft__pd_clear(pd, dir);
		ssize_t r = fn(f, args);
		if (r >= 0) {
			/* Not known to be exhausted: the next call tries first. */
			if (!inferring || (size_t)r >= want)
				weft__pd_set_ready(pd, dir);
			*res = r;
			return 0;
		}
		int e = errno;
		if (e == EINTR) {
			weft__pd_set_ready(pd, dir);
			continue;
		}
		if (e != EAGAIN && e != EWOULDBLOCK) {
			weft__pd_set_ready(pd, dir); /* errors and EOF persist: try next time */
			return e;
		}
		if (!inferring) {
			int w = fd_wait(f, dir, dl, cs);
			if (w)
				return w;
		}
	}
}

/* ---------------------------------------------------------------- reads */

struct rw_args {
	const struct iovec *iov;
	int iovcnt;
	int flags;
	struct sockaddr *sa;
	socklen_t *salen;
	const struct sockaddr *to;
	socklen_t tolen;
};

static ssize_t sys_readv(weft_fd *f, void *a)
{
	struct rw_args *r = a;
	if (r->iovcnt == 1)
		return sys3(SYS_read, f->fd, (long)r->iov[0].iov_base, (long)r->iov[0].iov_len);
	return sys3(SYS_readv, f->fd, (long)r->iov, r->iovcnt);
}

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* Whether the lengths of iov[0..n) add up without overflow (readv(2) and
 * writev(2) refuse a total past SSIZE_MAX with EINVAL). */
static int iov_fits(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		if (__builtin_add_overflow(t, iov[i].iov_len, &t) || t > (size_t)SSIZE_MAX)
			return 0;
	return 1;
}

/*
 * A TCP read (one buffer, len > 0) with a byte of read-ahead: readv into the
 * buffer and one byte more. Getting at most len bytes then means the receive
 * queue is empty even when the buffer was filled exactly (a request/response
 * protocol's case), so the next read parks at once instead of failing with
 * EAGAIN first; getting the extra byte means more may be queued, and the
 * byte is kept for the next read. Off after a one-time event (sticky) and
 * once the raw descriptor was handed out (weft_fd_get). Inside call_enter.
 */
static int tcp_read(weft_fd *f, char *buf, size_t len, size_t *n, int64_t dl,
                    struct weft__cancel *cs)
{
	struct weft__pd *pd = f->pd;
	size_t got = 0;
	if (f->ra_have) {
		buf[got++] = (char)f->ra_byte;
		f->ra_have = 0;
	}
	while (got < len) {
		/* Not once the raw descriptor was handed out: its options may
		 * have changed (SO_RCVLOWAT: epoll then skips arrivals below
		 * the mark, and a short read no longer tells of the next). */
		int inferring = !__atomic_load_n(&pd->sticky, __ATOMIC_SEQ_CST) &&
		                !__atomic_load_n(&f->raw_out, __ATOMIC_RELAXED);
		if (inferring && !weft__pd_ready(pd, RD)) {
			if (got)
				break; /* drained: return what we have */
			int w = fd_wait(f, RD, dl, cs);
			if (w)
				return w;
			continue;
		}
		weft__pd_clear(pd, RD);
		unsigned char extra;
		struct iovec v[2] = {{buf + got, len - got}, {&extra, 1}};
		ssize_t r = sys3(SYS_readv, f->fd, (long)v, inferring ? 2 : 1);
		if (r > 0) {
			if ((size_t)r > len - got) {
				f->ra_byte = extra;
				f->ra_have = 1;
				r = (ssize_t)(len - got);
				weft__pd_set_ready(pd, RD); /* more may be queued */
			} else if (!inferring) {
				weft__pd_set_ready(pd, RD); /* not known to be drained */
			}
			got += (size_t)r;
			break;
		}
		int e = r == 0 ? 0 : errno;
		if (e == EINTR)
			continue;
		if (e == EAGAIN || e == EWOULDBLOCK) {
			if (got)
				break;
			if (!inferring) {
				int w = fd_wait(f, RD, dl, cs);
				if (w)
					return w;
			}
			continue;
		}
		weft__pd_set_ready(pd, RD); /* end of stream and errors persist */
		if (got) {
			f->ra_err = e; /* after the bytes: the next read reports it */
			break;
		}
		if (e)
			return e;
		break; /* end of stream */
	}
	*n = got;
	return 0;
}

/* A read-side call on a TCP descriptor holding read-ahead state (under the
 * read lock): hand out the kept error, or the kept byte alone (a stream read
 * may return fewer bytes than are there). Returns 1 when it did. */
static int ra_pending(weft_fd *f, const struct iovec *iov, int iovcnt, int peek, size_t *n,
                      int *err)
{
	if (f->ra_err && !f->ra_have) {
		*err = f->ra_err;
		if (!peek)
			f->ra_err = 0;
		return 1;
	}
	if (!f->ra_have)
		return 0;
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len) {
			*(unsigned char *)iov[i].iov_base = f->ra_byte;
			if (!peek)
				f->ra_have = 0;
			*n = 1;
			*err = 0;
			return 1;
		}
	*err = 0; /* nothing asked for */
	return 1;
}

static int do_readv(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n, int64_t dl,
                    struct weft__cancel *cs)
{
	*n = 0;
	if (iovcnt < 0 || iovcnt > IOV_MAX || !iov_fits(iov, iovcnt))
		return EINVAL;
	size_t want = iov_total(iov, iovcnt);
	int err = call_enter(f, RD, dl, cs);
	if (err)
		return err;
	ssize_t r = 0;
	if (f->tcp && f->ra_err && !f->ra_have) {
		err = f->ra_err;
		f->ra_err = 0;
	} else if (f->tcp && iovcnt == 1 && want) {
		size_t k = 0;
		err = tcp_read(f, iov[0].iov_base, want, &k, dl, cs);
		r = (ssize_t)k;
	} else if (f->tcp && ra_pending(f, iov, iovcnt, 0, n, &err)) {
		call_leave(f, RD);
		return err;
	} else if (want) {
		struct rw_args a = {.iov = iov, .iovcnt = iovcnt};
		err = run(f, RD, dl, cs, sys_readv, &a, want, 1, &r);
	}
	call_leave(f, RD);
	if (!err)
		*n = (size_t)r;
	return err;
}

static int do_read(weft_fd *f, void *buf, size_t len, size_t *n, int64_t dl,
                   struct weft__cancel *cs)
{
	struct iovec v = {buf, len};
	return do_readv(f, &v, 1, n, dl, cs);
}

static int do_read_full(weft_fd *f, void *buf, size_t len, size_t *n, int64_t dl,
                        struct weft__cancel *cs)
{
	size_t got = 0;
	int err = 0;
	while (got < len) {
		size_t k;
		err = do_read(f, (char *)buf + got, len - got, &k, dl, cs);
		if (err)
			break;
		if (k == 0) {
			err = ENODATA;
			break;
		}
		got += k;
	}
	if (n)
		*n = got;
	return err;
}

static ssize_t sys_recvfrom(weft_fd *f, void *a)
{
	struct rw_args *r = a;
	return recvfrom(f->fd, r->iov[0].iov_base, r->iov[0].iov_len, r->flags | MSG_DONTWAIT,
	                r->sa, r->salen);
}

static int do_recvfrom(weft_fd *f, void *buf, size_t len, int flags, struct sockaddr *sa,
                       socklen_t *salen, size_t *n, int64_t dl, struct weft__cancel *cs)
{
	*n = 0;
	if (!f->sock)
		return ENOTSOCK;
	int err = call_enter(f, RD, dl, cs);
	if (err)
		return err;
	struct iovec v = {buf, len};
	/* Urgent data and the error queue are not the stream: the kernel
	 * answers them. MSG_TRUNC discards: the kept byte is not stored (buf
	 * may be NULL). */
	unsigned char sink;
	struct iovec k = {(flags & MSG_TRUNC) ? (void *)&sink : buf, len};
	if (f->tcp && !(flags & (MSG_OOB | MSG_ERRQUEUE)) &&
	    ra_pending(f, &k, 1, flags & MSG_PEEK, n, &err)) {
		/* A peek shows what is queued behind the kept byte too, as
		 * recv(2) does: else a loop that peeks until a whole header is
		 * there would see one byte for ever. */
		if ((flags & (MSG_PEEK | MSG_TRUNC)) == MSG_PEEK && !err && *n == 1 && len > 1) {
			ssize_t r = recv(f->fd, (char *)buf + 1, len - 1, flags | MSG_DONTWAIT);
			if (r > 0)
				*n += (size_t)r;
		}
		if (salen)
			*salen = 0; /* a stream: no sender address */
		call_leave(f, RD);
		return err;
	}
	struct rw_args a = {.iov = &v, .iovcnt = 1, .flags = flags, .sa = sa, .salen = salen};
	ssize_t r = 0;
	err = run(f, RD, dl, cs, sys_recvfrom, &a, len, 0, &r);
	call_leave(f, RD);
	if (!err)
		*n = (size_t)r;
	return err;
}

/* ---------------------------------------------------------------- writes */

static ssize_t sys_writev(weft_fd *f, void *a)
{
	struct rw_args *r = a;
	if (f->sock) {
		struct msghdr m = {.msg_iov = (struct iovec *)r->iov,
		                   .msg_iovlen = (size_t)r->iovcnt};
		if (r->iovcnt == 1)
			return send(f->fd, r->iov[0].iov_base, r->iov[0].iov_len,
			            r->flags | MSG_NOSIGNAL | MSG_DONTWAIT);
		return sendmsg(f->fd, &m, r->flags | MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	if (r->iovcnt == 1)
		return write(f->fd, r->iov[0].iov_base, r->iov[0].iov_len);
	return writev(f->fd, r->iov, r->iovcnt);
}

/* Write every byte of iov (a copy we may advance); *n counts them. */
static int write_all(weft_fd *f, struct iovec *iov, int iovcnt, int flags, size_t *n, int64_t dl,
                     struct weft__cancel *cs)
{
	size_t done = 0;
	int err = call_enter(f, WR, dl, cs);
	if (!err) {
		/* Skip empty leading buffers on a stream (a write of nothing
		 * still checks); a datagram socket sends an empty datagram. */
		while (f->stream && iovcnt > 0 && iov[0].iov_len == 0)
			iov++, iovcnt--;
		while (iovcnt > 0) {
			struct rw_args a = {.iov = iov, .iovcnt = iovcnt, .flags = flags};
			ssize_t r = 0;
			err = run(f, WR, dl, cs, sys_writev, &a, iov_total(iov, iovcnt), 1, &r);
			if (err)
				break;
			if (r == 0 && iov_total(iov, iovcnt) > 0) {
				/* Nothing taken and no error (a device that
				 * returns 0): another try would take nothing
				 * again, for ever. Go says io.ErrUnexpectedEOF. */
				err = EIO;
				break;
			}
			done += (size_t)r;
			size_t k = (size_t)r;
			while (iovcnt > 0 && k >= iov[0].iov_len) {
				k -= iov[0].iov_len;
				iov++, iovcnt--;
			}
			if (iovcnt > 0) {
				iov[0].iov_base = (char *)iov[0].iov_base + k;
				iov[0].iov_len -= k;
			}
			if (!f->stream && f->sock)
				break; /* one datagram */
		}
		call_leave(f, WR);
	}
	if (n)
		*n = done;
	return err;
}

static int do_write(weft_fd *f, const void *buf, size_t len, int flags, size_t *n, int64_t dl,
                    struct weft__cancel *cs)
{
	struct iovec v = {(void *)buf, len};
	return write_all(f, &v, 1, flags, n, dl, cs);
}

static int do_writev(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n, int64_t dl,
                     struct weft__cancel *cs)
{
	if (iovcnt < 0 || iovcnt > IOV_MAX) {
		if (n)
			*n = 0;
		return EINVAL;
	}
	struct iovec small[8], *copy = small;
	if (iovcnt > 8) {
		copy = weft__alloc((size_t)iovcnt * sizeof *copy);
		if (!copy) {
			if (n)
				*n = 0;
			return ENOMEM;
		}
	}
	memcpy(copy, iov, (size_t)iovcnt * sizeof *copy);
	int err = write_all(f, copy, iovcnt, 0, n, dl, cs);
	if (copy != small)
		weft__free(copy);
	return err;
}

static ssize_t sys_sendto(weft_fd *f, void *a)
{
	struct rw_args *r = a;
	return sendto(f->fd, r->iov[0].iov_base, r->iov[0].iov_len,
	              r->flags | MSG_NOSIGNAL | MSG_DONTWAIT, r->to, r->tolen);
}

static int do_sendto(weft_fd *f, const void *buf, size_t len, int flags, const struct sockaddr *to,
                     socklen_t tolen, size_t *n, int64_t dl, struct weft__cancel *cs)
{
	if (n)
		*n = 0;
	if (!f->sock)
		return ENOTSOCK;
	int err = call_enter(f, WR, dl, cs);
	if (err)
		return err;
	struct iovec v = {(void *)buf, len};
	struct rw_args a = {.iov = &v, .iovcnt = 1, .flags = flags, .to = to, .tolen = tolen};
	ssize_t r = 0;
	err = run(f, WR, dl, cs, sys_sendto, &a, len, 0, &r);
	call_leave(f, WR);
	if (!err && n)
		*n = (size_t)r;
	return err;
}

static int do_send(weft_fd *f, const void *buf, size_t len, int flags, size_t *n, int64_t dl,
                   struct weft__cancel *cs)
{
	if (!f->sock) {
		if (n)
			*n = 0;
		return ENOTSOCK;
	}
	if (f->stream)
		return do_write(f, buf, len, flags, n, dl, cs);
	return do_sendto(f, buf, len, flags, NULL, 0, n, dl, cs);
}

/* ---------------------------------------------------------------- accept and connect */

struct accept_args {
	struct sockaddr *sa;
	socklen_t *salen;
};

static ssize_t sys_accept(weft_fd *f, void *a)
{
	struct accept_args *x = a;
	return accept4(f->fd, x->sa, x->salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static int do_accept(weft_fd *l, weft_fd **conn, struct sockaddr *sa, socklen_t *salen, int64_t dl,
                     struct weft__cancel *cs)
{
	if (!l->sock)
		return ENOTSOCK;
	int err = call_enter(l, RD, dl, cs);
	if (err)
		return err;
	struct accept_args a = {sa, salen};
	ssize_t r = -1;
	for (;;) {
		err = run(l, RD, dl, cs, sys_accept, &a, 0, 0, &r);
		/* A connection reset while queued: take the next one. */
		if (err != ECONNABORTED)
			break;
	}
	call_leave(l, RD);
	if (err)
		return err;
	int fd = (int)r, dom = 0, proto = 0;
	socklen_t dl_ = sizeof dom;
	getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl_);
	int ip = dom == AF_INET || dom == AF_INET6;
	if (ip) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		dl_ = sizeof proto;
		getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &dl_);
	}
	/* As weft_fd_open: only TCP infers readiness (an MPTCP listener's
	 * connections are MPTCP). */
	int tcp = ip && proto == IPPROTO_TCP;
	err = weft__fd_wrap(fd, 1, 1, tcp, conn);
	if (err)
		close(fd);
	return err;
}

int weft__connect(weft_fd *f, const struct sockaddr *sa, socklen_t len, int64_t dl,
                  struct weft__cancel *cs)
{
	if (!f->sock)
		return ENOTSOCK;
	int err = call_enter(f, WR, dl, cs);
	if (err)
		return err;
	/* Cleared first: the writable edge that ends the handshake may come
	 * before connect() returns. */
	weft__pd_clear(f->pd, WR);
	if (connect(f->fd, sa, len) < 0) {
		err = errno;
		/* EINTR: the attempt goes on, as for EINPROGRESS. */
		while (err == EINPROGRESS || err == EINTR) {
			err = fd_wait(f, WR, dl, cs);
			if (err)
				break;
			weft__pd_clear(f->pd, WR);
			/* Writable: done, one way or the other; SO_ERROR says
			 * which (0 and no peer yet: a spurious wake-up). */
			int so = 0;
			socklen_t sl = sizeof so;
			if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0) {
				err = errno;
				break;
			}
			err = so;
			if (!err) {
				struct sockaddr_storage ss;
				socklen_t sl2 = sizeof ss;
				if (getpeername(f->fd, (struct sockaddr *)&ss, &sl2) < 0)
					err = errno == ENOTCONN ? EINPROGRESS : errno;
			}
		}
	}
	weft__pd_set_ready(f->pd, WR);
	call_leave(f, WR);
	return err;
}

/* ---------------------------------------------------------------- the public forms */

#define CTX_FORM(ctx, fail)                                      \
	int cerr_;                                               \
	struct weft__cancel *cs_ = weft__net_ctx((ctx), &cerr_); \
	if (cerr_) {                                             \
		fail;                                            \
		return cerr_;                                    \
	}

int weft_read(weft_fd *f, void *buf, size_t len, size_t *n)
{
	return do_read(f, buf, len, n, INT64_MAX, NULL);
}
int weft_read_until(weft_fd *f, void *buf, size_t len, size_t *n, int64_t d)
{
	return do_read(f, buf, len, n, d, NULL);
}
int weft_read_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, size_t *n)
{
	CTX_FORM(ctx, *n = 0);
	return do_read(f, buf, len, n, INT64_MAX, cs_);
}

int weft_read_full(weft_fd *f, void *buf, size_t len, size_t *n)
{
	return do_read_full(f, buf, len, n, INT64_MAX, NULL);
}
int weft_read_full_until(weft_fd *f, void *buf, size_t len, size_t *n, int64_t d)
{
	return do_read_full(f, buf, len, n, d, NULL);
}
int weft_read_full_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, size_t *n)
{
	CTX_FORM(ctx, if (n) *n = 0);
	return do_read_full(f, buf, len, n, INT64_MAX, cs_);
}

int weft_write(weft_fd *f, const void *buf, size_t len, size_t *n)
{
	return do_write(f, buf, len, 0, n, INT64_MAX, NULL);
}
int weft_write_until(weft_fd *f, const void *buf, size_t len, size_t *n, int64_t d)
{
	return do_write(f, buf, len, 0, n, d, NULL);
}
int weft_write_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, size_t *n)
{
	CTX_FORM(ctx, if (n) *n = 0);
	return do_write(f, buf, len, 0, n, INT64_MAX, cs_);
}

int weft_readv(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n)
{
	return do_readv(f, iov, iovcnt, n, INT64_MAX, NULL);
}
int weft_readv_until(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n, int64_t d)
{
	return do_readv(f, iov, iovcnt, n, d, NULL);
}
int weft_readv_ctx(weft_ctx *ctx, weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n)
{
	CTX_FORM(ctx, *n = 0);
	return do_readv(f, iov, iovcnt, n, INT64_MAX, cs_);
}

int weft_writev(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n)
{
	return do_writev(f, iov, iovcnt, n, INT64_MAX, NULL);
}
int weft_writev_until(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n, int64_t d)
{
	return do_writev(f, iov, iovcnt, n, d, NULL);
}
int weft_writev_ctx(weft_ctx *ctx, weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n)
{
	CTX_FORM(ctx, if (n) *n = 0);
	return do_writev(f, iov, iovcnt, n, INT64_MAX, cs_);
}

int weft_recv(weft_fd *f, void *buf, size_t len, int flags, size_t *n)
{
	return do_recvfrom(f, buf, len, flags, NULL, NULL, n, INT64_MAX, NULL);
}
int weft_recv_until(weft_fd *f, void *buf, size_t len, int flags, size_t *n, int64_t d)
{
	return do_recvfrom(f, buf, len, flags, NULL, NULL, n, d, NULL);
}
int weft_recv_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, int flags, size_t *n)
{
	CTX_FORM(ctx, *n = 0);
	return do_recvfrom(f, buf, len, flags, NULL, NULL, n, INT64_MAX, cs_);
}

int weft_send(weft_fd *f, const void *buf, size_t len, int flags, size_t *n)
{
	return do_send(f, buf, len, flags, n, INT64_MAX, NULL);
}
int weft_send_until(weft_fd *f, const void *buf, size_t len, int flags, size_t *n, int64_t d)
{
	return do_send(f, buf, len, flags, n, d, NULL);
}
int weft_send_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, int flags, size_t *n)
{
	CTX_FORM(ctx, if (n) *n = 0);
	return do_send(f, buf, len, flags, n, INT64_MAX, cs_);
}

int weft_recvfrom(weft_fd *f, void *buf, size_t len, int flags, struct sockaddr *from,
                  socklen_t *fromlen, size_t *n)
{
	return do_recvfrom(f, buf, len, flags, from, fromlen, n, INT64_MAX, NULL);
}
int weft_recvfrom_until(weft_fd *f, void *buf, size_t len, int flags, struct sockaddr *from,
                        socklen_t *fromlen, size_t *n, int64_t d)
{
	return do_recvfrom(f, buf, len, flags, from, fromlen, n, d, NULL);
}
int weft_recvfrom_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, int flags,
                      struct sockaddr *from, socklen_t *fromlen, size_t *n)
{
	CTX_FORM(ctx, *n = 0);
	return do_recvfrom(f, buf, len, flags, from, fromlen, n, INT64_MAX, cs_);
}

int weft_sendto(weft_fd *f, const void *buf, size_t len, int flags, const struct sockaddr *to,
                socklen_t tolen, size_t *n)
{
	return do_sendto(f, buf, len, flags, to, tolen, n, INT64_MAX, NULL);
}
int weft_sendto_until(weft_fd *f, const void *buf, size_t len, int flags, const struct sockaddr *to,
                      socklen_t tolen, size_t *n, int64_t d)
{
	return do_sendto(f, buf, len, flags, to, tolen, n, d, NULL);
}
int weft_sendto_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, int flags,
                    const struct sockaddr *to, socklen_t tolen, size_t *n)
{
	CTX_FORM(ctx, if (n) *n = 0);
	return do_sendto(f, buf, len, flags, to, tolen, n, INT64_MAX, cs_);
}

int weft_accept(weft_fd *l, weft_fd **conn, struct sockaddr *sa, socklen_t *salen)
{
	return do_accept(l, conn, sa, salen, INT64_MAX, NULL);
}
int weft_accept_until(weft_fd *l, weft_fd **conn, struct sockaddr *sa, socklen_t *salen, int64_t d)
{
	return do_accept(l, conn, sa, salen, d, NULL);
}
int weft_accept_ctx(weft_ctx *ctx, weft_fd *l, weft_fd **conn, struct sockaddr *sa,
                    socklen_t *salen)
{
	CTX_FORM(ctx, (void)0);
	return do_accept(l, conn, sa, salen, INT64_MAX, cs_);
}

int weft_connect(weft_fd *f, const struct sockaddr *sa, socklen_t len)
{
	return weft__connect(f, sa, len, INT64_MAX, NULL);
}
int weft_connect_until(weft_fd *f, const struct sockaddr *sa, socklen_t len, int64_t d)
{
	return weft__connect(f, sa, len, d, NULL);
}
int weft_connect_ctx(weft_ctx *ctx, weft_fd *f, const struct sockaddr *sa, socklen_t len)
{
	CTX_FORM(ctx, (void)0);
	return weft__connect(f, sa, len, INT64_MAX, cs_);
}
