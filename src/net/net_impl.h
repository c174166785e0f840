/* SPDX-License-Identifier: MIT */
/*
 * net_impl.h - the weft_fd record and the I/O engine shared by fd.c (the
 * calls on a descriptor), sock.c (dial, listen, addresses) and signal.c.
 */
#ifndef WEFT_NET_IMPL_H
#define WEFT_NET_IMPL_H

#include <stdint.h>

#include "weft.h"

#include "netpoll.h"
#include "park.h"

struct weft_fd {
	int fd;
	uint8_t file;              /* not pollable: calls run on the blocking path */
	uint8_t sock;              /* a socket (send with MSG_NOSIGNAL) */
	uint8_t stream;            /* a stream (SOCK_STREAM socket, pipe, tty) */
	uint8_t tcp;               /* a TCP socket: readiness is inferred (fd.c) */
	uint32_t refs;             /* atomic: calls in progress + 1 while open; CLOSING bit */
	uint32_t handles;          /* atomic: references to the record (weft_fd_retain) */
	int64_t dl[2];             /* atomic: the descriptor's deadlines; INT64_MAX: none */
	struct weft__pd *pd;       /* NULL for a file */
	/* TCP read-ahead (fd.c), under mu[0]: a byte read past a request, and
	 * an error met after bytes were returned, both for the next read. */
	uint8_t ra_have;
	unsigned char ra_byte;
	int ra_err;
	uint32_t raw_out; /* atomic: weft_fd_get was called: no inference, no read-ahead */
	weft_sem mu[2];            /* serialise reads, and writes */
	struct weft__waitq closeq; /* the closer waits here for the calls to leave */
};

/* Wrap fd (ownership taken on success). kind_known: sock/stream/tcp are
 * given (a socket weft made) rather than probed. */
int weft__fd_wrap(int fd, int sock, int stream, int tcp, weft_fd **out);
/* weft_connect's body with a deadline and a source. */
int weft__connect(weft_fd *f, const struct sockaddr *sa, socklen_t len, int64_t deadline,
                  struct weft__cancel *cs);
/* The cancellation source of ctx (NULL: never cancelled), and its error now. */
struct weft__cancel *weft__net_ctx(weft_ctx *ctx, int *err);

/* getsockname (peer 0) or getpeername (1) of f's descriptor, holding a call
 * reference so that a concurrent close cannot hand the number to another
 * file meanwhile; unlike weft_fd_get, leaves read-ahead on. Returns 0,
 * EBADF (closed), or the call's error. */
int weft__fd_name(const weft_fd *f, int peer, struct sockaddr_storage *ss, socklen_t *len);

#endif
