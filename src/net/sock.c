/* SPDX-License-Identifier: MIT */
/*
 * sock.c - Go's net.Dial and net.Listen over weft_fd: "host:port" parsing,
 * name resolution on the blocking path, socket addresses as text.
 */
#include "net_impl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "sched.h"

/* ---------------------------------------------------------------- errors and resolution */

const char *weft_strerror(int err)
{
	if (err < 0)
		return gai_strerror(err);
	return strerror(err);
}

int weft_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                     struct addrinfo **res)
{
	weft_blocking_begin();
	int r = getaddrinfo(node, service, hints, res);
	int e = errno;
	weft_blocking_end();
	if (r == EAI_SYSTEM)
		return e ? e : EIO;
	return r;
}

/* ---------------------------------------------------------------- networks and addresses */

enum { NET_TCP, NET_UDP, NET_UNIX, NET_UNIXGRAM };

struct net {
	int kind;
	int family; /* AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX */
};

static int parse_network(const char *network, struct net *n)
{
	static const struct {
		const char *name;
		int kind, family;
	} t[] = {
		{"tcp", NET_TCP, AF_UNSPEC}, {"tcp4", NET_TCP, AF_INET},
		{"tcp6", NET_TCP, AF_INET6}, {"udp", NET_UDP, AF_UNSPEC},
		{"udp4", NET_UDP, AF_INET},  {"udp6", NET_UDP, AF_INET6},
		{"unix", NET_UNIX, AF_UNIX}, {"unixgram", NET_UNIXGRAM, AF_UNIX},
	};
	if (!network)
		return EINVAL;
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (!strcmp(network, t[i].name)) {
			n->kind = t[i].kind;
			n->family = t[i].family;
			return 0;
		}
	return EINVAL;
}

/* Split "host:port", "[v6]:port" or ":port" into host (maybe empty) and port. */
static int split_hostport(const char *addr, char *host, size_t hlen, char *port, size_t plen)
{
	if (!addr)
		return EINVAL;
	const char *colon, *h = addr, *he;
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':')
			return EINVAL;
		h = addr + 1;
		he = rb;
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
			return EINVAL; /* none, or an IPv6 literal without brackets */
		he = colon;
	}
	size_t hl = (size_t)(he - h), pl = strlen(colon + 1);
	if (hl >= hlen || pl == 0 || pl >= plen)
		return EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	memcpy(port, colon + 1, pl + 1);
	/* A number must be a port: getaddrinfo takes any and keeps its low
	 * 16 bits (":65536" would listen on a random port, ":65616" dial 80).
	 * Its strtoul also takes leading blanks and a sign (": 65616",
	 * ":+65616"), so a number is, as in Go, an optional sign and digits,
	 * checked here and passed on as plain digits; a blank or a sign before
	 * anything else is malformed. A name ("http") is looked up as a
	 * service. */
	int sign = port[0] == '+' || port[0] == '-';
	const char *d = port + sign;
	size_t dl = pl - (size_t)sign;
	if (dl && strspn(d, "0123456789") == dl) {
		long v = 0;
		for (const char *c = d; *c; c++)
			if ((v = v * 10 + (*c - '0')) > 65535)
				return EINVAL;
		if (port[0] == '-' && v)
			return EINVAL;
		snprintf(port, plen, "%ld", v);
	} else if (sign || isspace((unsigned char)port[0])) {
		return EINVAL;
	}
	return 0;
}

/*
 * A lookup that the caller may give up on: getaddrinfo cannot be
 * interrupted, so it runs in a goroutine of its own and the caller waits for
 * it with its deadline or context. Whoever of the two lets go last frees it
 * (and the answer, when nobody took it).
 */
struct lookup {
	int refs; /* atomic: the caller and the goroutine */
	char node[256], port[64];
	int has_node;
	struct addrinfo hints;
	struct addrinfo *res;
	int err;
	weft_chan *done; /* capacity 1: the goroutine sends one byte */
};

static void lookup_put(struct lookup *l)
{
	if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (!l->err && l->res)
		freeaddrinfo(l->res);
	weft_chan_release(l->done);
	weft__free(l);
}

static void lookup_run(void *arg)
{
	struct lookup *l = arg;
	l->err = weft_getaddrinfo(l->has_node ? l->node : NULL, l->port, &l->hints, &l->res);
	char x = 0;
	weft_chan_send(l->done, &x); /* publishes err and res (capacity 1: never waits) */
	lookup_put(l);
}

static int lookup_bounded(const char *node, const char *port, const struct addrinfo *hints,
                          int64_t dl, weft_ctx *ctx, struct addrinfo **res)
{
	if (dl == INT64_MAX && !ctx)
		return weft_getaddrinfo(node, port, hints, res);
	struct lookup *l = weft__calloc(1, sizeof *l);
	if (!l)
		return ENOMEM;
	l->refs = 2;
	if (node) {
		l->has_node = 1;
		snprintf(l->node, sizeof l->node, "%s", node);
	}
	snprintf(l->port, sizeof l->port, "%s", port);
	l->hints = *hints;
	int err = weft_chan_make(&l->done, 1, 1);
	if (err) {
		weft__free(l);
		return err;
	}
	weft_go_options o = {.name = "name lookup"};
	err = weft_go_opts(lookup_run, l, &o);
	if (err) {
		weft_chan_release(l->done);
		weft__free(l);
		return err;
	}
	char x;
	err = ctx ? weft_chan_recv_ctx(ctx, l->done, &x) : weft_chan_recv_until(l->done, &x, dl);
	if (!err) {
		err = l->err;
		if (!err) {
			*res = l->res;
			l->res = NULL;
		}
	}
	lookup_put(l);
	return err;
}

/* Resolve for n: numeric hosts and ports without the blocking path; names
 * on it, bounded by dl and ctx (INT64_MAX and NULL: none). */
static int resolve(const struct net *n, const char *address, int passive, int64_t dl, weft_ctx *ctx,
                   struct addrinfo **res)
{
	char host[256], port[64];
	int err = split_hostport(address, host, sizeof host, port, sizeof port);
	if (err)
		return err;
	struct addrinfo hints;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = n->family;
	hints.ai_socktype = n->kind == NET_TCP ? SOCK_STREAM : SOCK_DGRAM;
	hints.ai_protocol = n->kind == NET_TCP ? IPPROTO_TCP : IPPROTO_UDP;
	hints.ai_flags = (passive ? AI_PASSIVE : 0) | AI_NUMERICHOST | AI_NUMERICSERV;
	const char *node = host[0] ? host : NULL;
	if (!node && !passive)
		node = n->family == AF_INET6 ? "::1" : "127.0.0.1"; /* ":80": the local host */
	int r = getaddrinfo(node, port, &hints, res);
	if (r == EAI_NONAME) {
		/* A name: the resolver may read files and ask a DNS server. */
		hints.ai_flags &= ~(AI_NUMERICHOST | AI_NUMERICSERV);
		hints.ai_flags |= n->family == AF_UNSPEC && !passive ? AI_ADDRCONFIG : 0;
		return lookup_bounded(node, port, &hints, dl, ctx, res);
	}
	if (r == EAI_SYSTEM)
		return errno ? errno : EIO;
	return r;
}

static int unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
	size_t l = path ? strlen(path) : 0;
	if (l == 0 || l >= sizeof sun->sun_path)
		return EINVAL;
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, l);
	if (path[0] == '@')
		sun->sun_path[0] = 0; /* the abstract namespace */
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l + (path[0] != '@'));
	return 0;
}

/* A new non-blocking socket wrapped in a weft_fd. */
static int new_socket(int family, int type, int proto, weft_fd **out)
{
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
	if (fd < 0)
		return errno;
	int tcp = type == SOCK_STREAM && (family == AF_INET || family == AF_INET6);
	if (tcp) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* Asked, not assumed (as weft_fd_open): mptcpize(8) or a BPF
		 * program may have made it MPTCP, which must not infer. */
		int p = 0;
		socklen_t pl = sizeof p;
		tcp = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &p, &pl) == 0 && p == IPPROTO_TCP;
	}
	int err = weft__fd_wrap(fd, 1, type == SOCK_STREAM, tcp, out);
	if (err)
		close(fd);
	return err;
}

/* ---------------------------------------------------------------- dial */

static int dial(const char *network, const char *address, int64_t dl, weft_ctx *ctx,
                struct weft__cancel *cs, weft_fd **out)
{
	struct net n;
	int err = parse_network(network, &n);
	if (err)
		return err;
	if (n.kind == NET_UNIX || n.kind == NET_UNIXGRAM) {
		struct sockaddr_un sun;
		socklen_t len;
		if ((err = unix_addr(address, &sun, &len)) != 0)
			return err;
		weft_fd *f;
		err = new_socket(AF_UNIX, n.kind == NET_UNIX ? SOCK_STREAM : SOCK_DGRAM, 0, &f);
		if (err)
			return err;
		err = weft__connect(f, (struct sockaddr *)&sun, len, dl, cs);
		if (err) {
			weft_fd_close(f);
			return err;
		}
		*out = f;
		return 0;
	}
	struct addrinfo *res;
	err = resolve(&n, address, 0, dl, ctx, &res);
	if (err)
		return err;
	err = cs ? weft__cancel_err(cs) : 0;
	if (!err && dl != INT64_MAX && dl <= weft_now())
		err = ETIMEDOUT;
	if (!err) {
		err = ECONNREFUSED;
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			weft_fd *f;
			err = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol, &f);
			if (err == EMFILE || err == ENFILE || err == ENOMEM)
				break;
			if (err)
				continue;
			err = weft__connect(f, ai->ai_addr, ai->ai_addrlen, dl, cs);
			if (!err) {
				*out = f;
				break;
			}
			weft_fd_close(f);
			if (err == ETIMEDOUT || err == ECANCELED)
				break; /* the caller's bound: no time for the next */
		}
	}
	freeaddrinfo(res);
	return err;
}

int weft_dial(const char *network, const char *address, weft_fd **out)
{
	return dial(network, address, INT64_MAX, NULL, NULL, out);
}

int weft_dial_until(const char *network, const char *address, int64_t deadline_ns, weft_fd **out)
{
	return dial(network, address, deadline_ns, NULL, NULL, out);
}

int weft_dial_ctx(weft_ctx *ctx, const char *network, const char *address, weft_fd **out)
{
	int err;
	struct weft__cancel *cs = weft__net_ctx(ctx, &err);
	if (err)
		return err;
	return dial(network, address, INT64_MAX, ctx, cs, out);
}

/* ---------------------------------------------------------------- listen */

static int bind_listen(int family, int type, int proto, const struct sockaddr *sa, socklen_t len,
                       int v6only, weft_fd **out)
{
	weft_fd *f;
	int err = new_socket(family, type, proto, &f);
	if (err)
		return err;
	int fd = weft_fd_get(f), one = 1;
	if (type == SOCK_STREAM && family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
	if (bind(fd, sa, len) < 0 || (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)) {
		err = errno;
		weft_fd_close(f);
		return err;
	}
	*out = f;
	return 0;
}

/* An empty host or an unspecified literal ("0.0.0.0", "::"). */
static int unspecified(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (!host[0])
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return a4.s_addr == INADDR_ANY;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}

int weft_listen(const char *network, const char *address, weft_fd **out)
{
	struct net n;
	int err = parse_network(network, &n);
	if (err)
		return err;
	if (n.kind == NET_UNIX || n.kind == NET_UNIXGRAM) {
		struct sockaddr_un sun;
		socklen_t len;
		if ((err = unix_addr(address, &sun, &len)) != 0)
			return err;
		return bind_listen(AF_UNIX, n.kind == NET_UNIX ? SOCK_STREAM : SOCK_DGRAM, 0,
		                   (struct sockaddr *)&sun, len, 0, out);
	}
	int type = n.kind == NET_TCP ? SOCK_STREAM : SOCK_DGRAM;
	int proto = n.kind == NET_TCP ? IPPROTO_TCP : IPPROTO_UDP;
	char host[256], port[64];
	if ((err = split_hostport(address, host, sizeof host, port, sizeof port)) != 0)
		return err;
	if (n.family == AF_UNSPEC && unspecified(host)) {
		/* Every address, as Go: dual-stack [::] where IPv6 works (for
		 * "0.0.0.0" and "::" too, Go's wildcard). */
		struct addrinfo hints, *res;
		memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_INET6;
		hints.ai_socktype = type;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		int r = getaddrinfo(NULL, port, &hints, &res);
		if (r == EAI_SYSTEM)
			r = errno ? errno : EIO;
		if (r == EAI_NONAME) {
			hints.ai_flags &= ~AI_NUMERICSERV;
			r = weft_getaddrinfo(NULL, port, &hints, &res);
		}
		if (r)
			return r;
		err = bind_listen(AF_INET6, type, proto, res->ai_addr, res->ai_addrlen, 0, out);
		freeaddrinfo(res);
		if (err != EAFNOSUPPORT && err != EADDRNOTAVAIL)
			return err;
		n.family = AF_INET; /* no IPv6 here */
	}
	struct addrinfo *res;
	err = resolve(&n, address, 1, INT64_MAX, NULL, &res);
	if (err)
		return err;
	err = EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		err = bind_listen(ai->ai_family, ai->ai_socktype, ai->ai_protocol, ai->ai_addr,
		                  ai->ai_addrlen, 1, out);
		if (!err || err == EMFILE || err == ENFILE || err == EADDRINUSE)
			break;
	}
	freeaddrinfo(res);
	return err;
}

/* ---------------------------------------------------------------- addresses as text */

int weft_addr_format(const struct sockaddr *sa, socklen_t salen, char *buf, size_t len)
{
	char tmp[WEFT_ADDRSTRLEN], ip[INET6_ADDRSTRLEN];
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
		snprintf(tmp, sizeof tmp, "%s:%u", ip, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
		snprintf(tmp, sizeof tmp, "[%s]:%u", ip, ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t pl = salen > off ? salen - off : 0;
		if (pl > 0 && sun->sun_path[0] == 0) {
			tmp[0] = '@'; /* abstract */
			size_t k = pl - 1 < sizeof tmp - 2 ? pl - 1 : sizeof tmp - 2;
			memcpy(tmp + 1, sun->sun_path + 1, k);
			tmp[k + 1] = 0;
		} else {
			size_t k =
				strnlen(sun->sun_path, pl < sizeof tmp - 1 ? pl : sizeof tmp - 1);
			memcpy(tmp, sun->sun_path, k);
			tmp[k] = 0;
		}
		break;
	}
	default: return EAFNOSUPPORT;
	}
	size_t k = strlen(tmp);
	if (k + 1 > len)
		return ENOSPC;
	memcpy(buf, tmp, k + 1);
	return 0;
}

static int fd_addr(const weft_fd *f, int peer, char *buf, size_t len)
{
	if (!f->sock)
		return ENOTSOCK;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	int err = weft__fd_name(f, peer, &ss, &sl);
	return err ? err : weft_addr_format((struct sockaddr *)&ss, sl, buf, len);
}

int weft_fd_local_addr(const weft_fd *f, char *buf, size_t len)
{
	return fd_addr(f, 0, buf, len);
}

int weft_fd_peer_addr(const weft_fd *f, char *buf, size_t len)
{
	return fd_addr(f, 1, buf, len);
}
