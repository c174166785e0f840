/* SPDX-License-Identifier: MIT */
/*
 * fd_kind_test.c - what weft_fd_open learns about a descriptor. Readiness is
 * inferred (a short read parks without a system call) only for TCP, whose
 * tcp_recvmsg copies until the receive queue is empty or the request is met.
 * Other stream protocols over IP make no such promise: MPTCP stops once it
 * has copied something even with data still on a subflow, and SCTP returns
 * one message per call. Those must take the path that tries each call first.
 */
#include "test.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "net_impl.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

struct kind {
	const char *what;
	int dom, type, proto;
	int tcp; /* expected */
};

/*
 * Each kind of socket, wrapped by weft_fd_open, is a socket, a stream or
 * not, and TCP only when its protocol is TCP. Kinds the kernel does not
 * offer are skipped (MPTCP, SCTP). Guards: readiness inferred from the
 * socket type and family alone (an MPTCP or SCTP stream taken for TCP),
 * inference lost for TCP.
 */
TEST(only_tcp_infers_readiness)
{
	static const struct kind kinds[] = {
		{ "tcp (protocol 0)", AF_INET, SOCK_STREAM, 0, 1 },
		{ "tcp", AF_INET, SOCK_STREAM, IPPROTO_TCP, 1 },
		{ "tcp6", AF_INET6, SOCK_STREAM, IPPROTO_TCP, 1 },
		{ "mptcp", AF_INET, SOCK_STREAM, IPPROTO_MPTCP, 0 },
		{ "mptcp6", AF_INET6, SOCK_STREAM, IPPROTO_MPTCP, 0 },
		{ "sctp", AF_INET, SOCK_STREAM, IPPROTO_SCTP, 0 },
		{ "udp", AF_INET, SOCK_DGRAM, 0, 0 },
		{ "unix stream", AF_UNIX, SOCK_STREAM, 0, 0 },
	};
	int seen_other = 0;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		const struct kind *k = &kinds[i];
		int fd = socket(k->dom, k->type | SOCK_CLOEXEC, k->proto);
		if (fd < 0) {
			if (k->tcp)
				FAIL("%s: socket: %s", k->what, strerror(errno));
			printf("     %s: not offered here (%s)\n", k->what, strerror(errno));
			continue;
		}
		weft_fd *f;
		ASSERT_EQ(weft_fd_open(fd, &f), 0);
		if (f->sock != 1 || f->stream != (k->type == SOCK_STREAM) || f->tcp != k->tcp)
			FAIL("%s: sock %d stream %d tcp %d, want 1 %d %d", k->what, f->sock,
			     f->stream, f->tcp, k->type == SOCK_STREAM, k->tcp);
		if (k->type == SOCK_STREAM && k->dom != AF_UNIX && !k->tcp)
			seen_other++;
		ASSERT_EQ(weft_fd_close(f), 0);
	}
	if (!seen_other)
		SKIP("no stream protocol over IP other than TCP here");
}

/*
 * A connection taken from an MPTCP listener by weft_accept is an MPTCP
 * socket too: it must not infer readiness either. Guards: weft_accept
 * deciding "TCP" from the family alone, as weft_fd_open did before it asked
 * SO_PROTOCOL.
 */
TEST(accepted_mptcp_does_not_infer)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_MPTCP);
	if (lfd < 0)
		SKIP("MPTCP not offered here");
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
	ASSERT_EQ(listen(lfd, 8), 0);
	socklen_t sl = sizeof sin;
	ASSERT_EQ(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	weft_fd *l;
	ASSERT_EQ(weft_fd_open(lfd, &l), 0);
	int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_MPTCP);
	ASSERT(cfd >= 0);
	ASSERT_EQ(connect(cfd, (struct sockaddr *)&sin, sizeof sin), 0);
	weft_fd *c;
	ASSERT_EQ(weft_accept(l, &c, NULL, NULL), 0);
	int proto = 0;
	socklen_t pl = sizeof proto;
	ASSERT_EQ(getsockopt(weft_fd_get(c), SOL_SOCKET, SO_PROTOCOL, &proto, &pl), 0);
	printf("     accepted socket's protocol: %d, tcp flag %d\n", proto, c->tcp);
	ASSERT_EQ(c->tcp, proto == IPPROTO_TCP);
	ASSERT_EQ(weft_fd_close(c), 0);
	ASSERT_EQ(weft_fd_close(l), 0);
	close(cfd);
}
