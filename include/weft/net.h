/* SPDX-License-Identifier: MIT */
/*
 * weft/net.h - network and file I/O that parks only the calling goroutine
 * (Go's net and os packages over the runtime's poller), name resolution,
 * and signals delivered on a channel.
 *
 * A weft_fd wraps an OS descriptor. Sockets, pipes, terminals and the like
 * are put in non-blocking mode and registered with the runtime's epoll
 * poller: a call that would block parks the goroutine until the descriptor
 * is ready, and the other goroutines run meanwhile. Regular files cannot be
 * polled; their calls run on the blocking path (weft_blocking_begin/end, at
 * most weft_max_blocking() at once), so they never stall a P either.
 *
 * Every blocking call has three forms:
 *   weft_read(f, ...)                    waits as long as it takes
 *   weft_read_until(f, ..., deadline)    gives up at deadline (weft_now()
 *                                        ns) with ETIMEDOUT
 *   weft_read_ctx(ctx, f, ...)           gives up with weft_ctx_err(ctx)
 *                                        (ECANCELED or ETIMEDOUT)
 * and the descriptor's own read and write deadlines (weft_fd_set_deadline,
 * Go's SetDeadline) apply to all of them: the earliest deadline wins. A
 * deadline already past fails the call before it does anything. A call that
 * gives up part way (a write) reports what it did through its count.
 *
 * Errors are returned as error numbers (0 on success), never through errno:
 *   EBADF      the weft_fd was closed (by another goroutine) during the call
 *   ETIMEDOUT  a deadline passed;  ECANCELED  the context was cancelled
 *   EMFILE, ENFILE  out of descriptors (accept, dial, listen): reported,
 *              nothing lost; a listener keeps working once some are closed
 *   anything the system call reports (ECONNRESET, EPIPE, ECONNREFUSED, ...)
 *   negative values: name resolution failed, an EAI_* code of getaddrinfo
 *              (weft_strerror() names both kinds)
 * Writes to sockets never raise SIGPIPE (they return EPIPE). Writes to a
 * pipe or FIFO whose reading end is closed do, as in any C program: its
 * default action ends the process. Ignore it (signal(SIGPIPE, SIG_IGN)) or
 * subscribe to it (weft_signal_notify) and such writes return EPIPE.
 *
 * Sharing: any number of goroutines may use one weft_fd at once. Reads are
 * serialised among themselves, and so are writes: a weft_write's bytes are
 * never interleaved with another's. weft_fd_close() may be called while
 * others are blocked on the descriptor: they wake with EBADF (see
 * weft_fd_retain for goroutines that call on after a close).
 */
#ifndef WEFT_NET_H
#define WEFT_NET_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common.h"
#include "chan.h"
#include "context.h"

struct addrinfo;

WEFT_BEGIN_DECLS

typedef struct weft_fd weft_fd;

/* ---------------------------------------------------------------- descriptors */

/*
 * weft_fd_open - take ownership of fd and wrap it. A pollable descriptor is
 * switched to non-blocking mode and registered with the poller; a regular
 * file, directory or block device is used through the blocking path.
 * Returns 0, or EBADF (fd is not open), ENOMEM, or the error of the
 * registration. On failure fd is untouched and still the caller's.
 * Blocks: no. The runtime starts.
 */
WEFT_API int weft_fd_open(int fd, weft_fd **out);

/*
 * weft_open - open(2) path on the blocking path and wrap the result.
 * Returns 0 or open's error. Blocks: yes (the goroutine, in a blocking slot).
 */
WEFT_API int weft_open(const char *path, int flags, unsigned mode, weft_fd **out);

/*
 * weft_fd_close - close f and drop the caller's reference to it: calls
 * blocked on f wake with EBADF, calls that start later fail with EBADF, and
 * once the calls in progress have left, the descriptor is closed. Returns 0,
 * EBADF (f was closed already: only the reference is dropped), or the error
 * of close(2) (the descriptor is gone either way).
 * Blocks: until the calls in progress on f have returned (promptly: they
 * are woken); then close(2) of a descriptor that is not a socket (a file
 * may flush, a tty drain its output) or of a socket with SO_LINGER on runs
 * as a blocking call (weft_blocking_begin), its P handed on meanwhile.
 *
 * References: the creating call (weft_fd_open, weft_accept, weft_dial, ...)
 * hands out one. A goroutine that may still call on f after someone else
 * closes it (an accept loop that another goroutine stops by closing the
 * listener, Go's idiom) holds its own: weft_fd_retain() returns f with one
 * more, and weft_fd_release() drops one without closing (the last one
 * closes f if it is still open, and frees it). A weft_fd is never used
 * after its caller's reference is dropped.
 */
WEFT_API int weft_fd_close(weft_fd *f);
WEFT_API weft_fd *weft_fd_retain(weft_fd *f);
WEFT_API void weft_fd_release(weft_fd *f);

/* weft_fd_get - the OS descriptor (borrowed: still owned by f, and in
 * non-blocking mode), or -1 once f is closed. A TCP read through weft may
 * keep one byte read ahead for the next weft read (it tells weft the socket
 * is drained without an extra system call); from this call on no byte is
 * read ahead, so reads of the raw descriptor see the whole stream, and each
 * call tries the system call first (options set through the descriptor,
 * such as SO_RCVLOWAT, change what epoll reports). Call it before the first
 * weft read if another library will read the socket. */
WEFT_API int weft_fd_get(const weft_fd *f);

/*
 * weft_fd_set_deadline, weft_fd_set_read_deadline,
 * weft_fd_set_write_deadline - absolute deadlines (weft_now() ns) for every
 * read (accept, recv) or write (connect, send) call on f, present and
 * future; 0 removes one. Calls blocked now see the new deadline at once.
 * Returns 0, ENOTSUP for a regular file (as Go's os.ErrNoDeadline), or
 * EBADF once f is closed. Blocks: no.
 */
WEFT_API int weft_fd_set_deadline(weft_fd *f, int64_t deadline_ns);
WEFT_API int weft_fd_set_read_deadline(weft_fd *f, int64_t deadline_ns);
WEFT_API int weft_fd_set_write_deadline(weft_fd *f, int64_t deadline_ns);

/* ---------------------------------------------------------------- reading and writing */

/*
 * weft_read - read up to len bytes into buf: waits until at least one byte
 * is there. *n (not NULL) receives the count; 0 with a return of 0 means
 * end of file (for len > 0).
 * Returns 0 or an error (see the top); on an error *n is 0.
 * Blocks: yes.
 */
WEFT_API int weft_read(weft_fd *f, void *buf, size_t len, size_t *n);
WEFT_API int weft_read_until(weft_fd *f, void *buf, size_t len, size_t *n, int64_t deadline_ns);
WEFT_API int weft_read_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, size_t *n);

/*
 * weft_read_full - read exactly len bytes (Go's io.ReadFull). Returns 0 with
 * *n == len; or ENODATA when the stream ended first (*n bytes were read,
 * maybe 0); or another error, *n counting the bytes read before it.
 * Blocks: yes.
 */
WEFT_API int weft_read_full(weft_fd *f, void *buf, size_t len, size_t *n);
WEFT_API int weft_read_full_until(weft_fd *f, void *buf, size_t len, size_t *n,
				  int64_t deadline_ns);
WEFT_API int weft_read_full_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, size_t *n);

/*
 * weft_write - write all len bytes of buf, waiting for room as needed.
 * Returns 0 (*n == len), or an error, *n (may be NULL) then counting the
 * bytes written before it (EIO when the descriptor took no byte and gave no
 * error, as a device may). Blocks: yes.
 */
WEFT_API int weft_write(weft_fd *f, const void *buf, size_t len, size_t *n);
WEFT_API int weft_write_until(weft_fd *f, const void *buf, size_t len, size_t *n,
			      int64_t deadline_ns);
WEFT_API int weft_write_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, size_t *n);

/*
 * weft_readv - read into iovcnt buffers (at most IOV_MAX) as readv(2): up
 * to their total, waiting for at least one byte; *n as weft_read.
 * weft_writev - write every byte of the buffers, as weft_write.
 * Blocks: yes.
 */
WEFT_API int weft_readv(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n);
WEFT_API int weft_readv_until(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n,
			      int64_t deadline_ns);
WEFT_API int weft_readv_ctx(weft_ctx *ctx, weft_fd *f, const struct iovec *iov, int iovcnt,
			    size_t *n);
WEFT_API int weft_writev(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n);
WEFT_API int weft_writev_until(weft_fd *f, const struct iovec *iov, int iovcnt, size_t *n,
			       int64_t deadline_ns);
WEFT_API int weft_writev_ctx(weft_ctx *ctx, weft_fd *f, const struct iovec *iov, int iovcnt,
			     size_t *n);

/*
 * weft_recv, weft_send - recv(2) and send(2) with flags (MSG_PEEK,
 * MSG_OOB, ...; MSG_DONTWAIT is implied, MSG_NOSIGNAL added). A socket only
 * (else ENOTSOCK). weft_recv returns what one recv(2) returned once data is
 * there. weft_send sends all len bytes on a stream socket (as weft_write)
 * and one datagram otherwise. *n as weft_read / weft_write. Blocks: yes.
 */
WEFT_API int weft_recv(weft_fd *f, void *buf, size_t len, int flags, size_t *n);
WEFT_API int weft_recv_until(weft_fd *f, void *buf, size_t len, int flags, size_t *n,
			     int64_t deadline_ns);
WEFT_API int weft_recv_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, int flags,
			   size_t *n);
WEFT_API int weft_send(weft_fd *f, const void *buf, size_t len, int flags, size_t *n);
WEFT_API int weft_send_until(weft_fd *f, const void *buf, size_t len, int flags, size_t *n,
			     int64_t deadline_ns);
WEFT_API int weft_send_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, int flags,
			   size_t *n);

/*
 * weft_recvfrom - receive one datagram (or stream data) and its sender:
 * from/fromlen as recvfrom(2) (may be NULL). weft_sendto - send one
 * datagram to `to`. *n as weft_read / weft_write. Blocks: yes.
 */
WEFT_API int weft_recvfrom(weft_fd *f, void *buf, size_t len, int flags, struct sockaddr *from,
			   socklen_t *fromlen, size_t *n);
WEFT_API int weft_recvfrom_until(weft_fd *f, void *buf, size_t len, int flags,
				 struct sockaddr *from, socklen_t *fromlen, size_t *n,
				 int64_t deadline_ns);
WEFT_API int weft_recvfrom_ctx(weft_ctx *ctx, weft_fd *f, void *buf, size_t len, int flags,
			       struct sockaddr *from, socklen_t *fromlen, size_t *n);
WEFT_API int weft_sendto(weft_fd *f, const void *buf, size_t len, int flags,
			 const struct sockaddr *to, socklen_t tolen, size_t *n);
WEFT_API int weft_sendto_until(weft_fd *f, const void *buf, size_t len, int flags,
			       const struct sockaddr *to, socklen_t tolen, size_t *n,
			       int64_t deadline_ns);
WEFT_API int weft_sendto_ctx(weft_ctx *ctx, weft_fd *f, const void *buf, size_t len, int flags,
			     const struct sockaddr *to, socklen_t tolen, size_t *n);

/* ---------------------------------------------------------------- sockets */

/*
 * weft_accept - wait for a connection on listening socket l and wrap it in
 * *conn (non-blocking, close-on-exec; TCP_NODELAY set for TCP, as Go does).
 * sa/salen receive the peer's address as accept(2) (may be NULL).
 * Returns 0, or EMFILE/ENFILE (out of descriptors: the connection stays
 * queued; close some and call again), or another error of accept4(2).
 * Blocks: yes.
 */
WEFT_API int weft_accept(weft_fd *l, weft_fd **conn, struct sockaddr *sa, socklen_t *salen);
WEFT_API int weft_accept_until(weft_fd *l, weft_fd **conn, struct sockaddr *sa,
			       socklen_t *salen, int64_t deadline_ns);
WEFT_API int weft_accept_ctx(weft_ctx *ctx, weft_fd *l, weft_fd **conn, struct sockaddr *sa,
			     socklen_t *salen);

/*
 * weft_connect - connect socket f to sa, waiting for the handshake.
 * Returns 0, or ETIMEDOUT/ECANCELED (the attempt is abandoned: close f), or
 * the connection's error (ECONNREFUSED, ENETUNREACH, ...; EAGAIN at once for
 * a Unix socket whose listener's backlog is full: Linux does not queue such
 * a connect, and Go reports the same). Blocks: yes.
 */
WEFT_API int weft_connect(weft_fd *f, const struct sockaddr *sa, socklen_t len);
WEFT_API int weft_connect_until(weft_fd *f, const struct sockaddr *sa, socklen_t len,
				int64_t deadline_ns);
WEFT_API int weft_connect_ctx(weft_ctx *ctx, weft_fd *f, const struct sockaddr *sa,
			      socklen_t len);

/*
 * weft_dial - connect to address over network, as Go's net.Dial:
 *   "tcp", "tcp4", "tcp6"   address "host:port" ("[::1]:80", ":80" for the
 *                           local host); host a name or a literal; port a
 *                           number from 0 to 65535 (a sign allowed, as in
 *                           Go: "+80") or a service name; anything else is
 *                           EINVAL. TCP_NODELAY is set.
 *   "udp", "udp4", "udp6"   a connected datagram socket to "host:port"
 *   "unix", "unixgram"      address a socket path ("@name": abstract)
 * Names are resolved on the blocking path; each address found is tried in
 * turn until one connects. Returns 0, a negative EAI_* code (resolution
 * failed), EINVAL (a malformed address or an unknown network), or the last
 * connection error. The _until and _ctx forms bound the whole dial
 * (resolution included). Blocks: yes.
 */
WEFT_API int weft_dial(const char *network, const char *address, weft_fd **out);
WEFT_API int weft_dial_until(const char *network, const char *address, int64_t deadline_ns,
			     weft_fd **out);
WEFT_API int weft_dial_ctx(weft_ctx *ctx, const char *network, const char *address,
			   weft_fd **out);

/*
 * weft_listen - a socket bound to address and, for stream networks,
 * listening (backlog SOMAXCONN; SO_REUSEADDR for TCP), as Go's net.Listen
 * and net.ListenPacket: "tcp", "tcp4", "tcp6" ("host:port"; an empty host,
 * "0.0.0.0" or "[::]" means every address, with "tcp" and "udp" IPv4 and
 * IPv6 both where IPv6 works, as in Go; port 0 picks a free one: see
 * weft_fd_local_addr), "udp", "udp4", "udp6" (a bound datagram socket),
 * "unix", "unixgram" (a path; a stale socket file is not removed for you).
 * Returns 0, a negative EAI_* code, EINVAL, or the error of socket, bind or
 * listen (EADDRINUSE, EACCES, EMFILE, ...). Blocks: only to resolve a name.
 */
WEFT_API int weft_listen(const char *network, const char *address, weft_fd **out);

/*
 * weft_fd_local_addr, weft_fd_peer_addr - f's socket address or its peer's,
 * as text: "127.0.0.1:8080", "[::1]:8080", a unix path. buf receives at
 * most len bytes including the NUL (WEFT_ADDRSTRLEN is always enough).
 * Returns 0, ENOTSOCK, ENOTCONN, ENOSPC (buf too small), EAFNOSUPPORT, or
 * EBADF (f is closed).
 * weft_addr_format formats a sockaddr the same way. Blocks: no.
 */
#define WEFT_ADDRSTRLEN 112
WEFT_API int weft_fd_local_addr(const weft_fd *f, char *buf, size_t len);
WEFT_API int weft_fd_peer_addr(const weft_fd *f, char *buf, size_t len);
WEFT_API int weft_addr_format(const struct sockaddr *sa, socklen_t salen, char *buf, size_t len);

/*
 * weft_getaddrinfo - getaddrinfo(3) on the blocking path (a blocking slot:
 * at most weft_max_blocking() resolutions run at once, the rest wait).
 * Returns 0 (*res to be freed with freeaddrinfo), a negative EAI_* code, or
 * an errno value (for EAI_SYSTEM). Blocks: yes.
 */
WEFT_API int weft_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
			      struct addrinfo **res);

/*
 * weft_strerror - a message for an error weft returned: strerror() for
 * positive values, gai_strerror() for negative EAI_* codes. The string is
 * static. Blocks: no.
 */
WEFT_API const char *weft_strerror(int err);

/* ---------------------------------------------------------------- signals */

/*
 * weft_signal_notify - deliver the signals in sigs[0..n-1] to channel c (Go's
 * os/signal.Notify): each arrival is a non-blocking send of the signal
 * number (an int: c's element size must be sizeof(int), else EINVAL); when c
 * is full the signal is dropped for c, so give c a buffer. A signal may go to
 * several channels. While any channel wants a signal, its default action
 * (terminating the process for SIGINT and SIGTERM) is replaced. c gains a
 * reference (weft_signal_stop drops it).
 * Returns 0, EINVAL (a signal that cannot be caught: SIGKILL, SIGSTOP,
 * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGURG, which weft uses, or one
 * the C library keeps for itself, such as glibc's 32 and 33 below SIGRTMIN;
 * out of range; or n < 1), or ENOMEM; on an error no signal was registered. The first call starts a dispatcher
 * goroutine (named "signal dispatch") that lives as long as the process. Blocks: no. Thread-safety: any thread.
 * Note: a goroutine waiting on such a channel is never reported as a
 * deadlock, since a signal may come (as in Go). A child made by fork() that
 * gets one of these signals before it execs takes the action it had before
 * weft_signal_notify (by default, SIGTERM ends it), not the parent's
 * channel. Handlers installed with sigaction() by the program itself need
 * SA_ONSTACK (as Go asks of C code): a signal can land on a goroutine whose
 * small stack has no room left for the kernel's signal frame, and weft
 * gives every thread that runs goroutines a signal stack.
 */
WEFT_API int weft_signal_notify(weft_chan *c, const int *sigs, int n);

/*
 * weft_signal_stop - stop delivering any signal to c; a signal no channel
 * wants any more gets back the action it had before weft_signal_notify. Does nothing if c was not
 * registered. Blocks: no.
 */
WEFT_API void weft_signal_stop(weft_chan *c);

WEFT_END_DECLS

#endif /* WEFT_NET_H */
