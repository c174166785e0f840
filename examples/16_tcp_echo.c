/* SPDX-License-Identifier: MIT */
/*
 * 16_tcp_echo.c - a TCP echo server with one goroutine per connection, and
 * clients that check it (Go's net.Listen, Accept, `go handle(conn)`).
 *
 * The Go program this follows:
 *
 *   ln, _ := net.Listen("tcp", "127.0.0.1:0")
 *   for {
 *       conn, err := ln.Accept()
 *       if err != nil { break }
 *       go func() { defer conn.Close(); io.Copy(conn, conn) }()
 *   }
 *
 * Each connection gets a goroutine that reads and writes as if it had the
 * machine to itself: weft_read() and weft_write() park the goroutine (not its
 * thread) until the socket is ready, and the runtime's poller (epoll) wakes
 * it. A thousand idle connections are a thousand parked goroutines, not a
 * thousand threads.
 *
 * What to look at:
 *  - accept_loop: the listener's owner. A goroutine per connection, counted
 *    in a WaitGroup so that shutdown can wait for them.
 *  - handle_conn: the echo, with an idle deadline. Before each read it moves
 *    the connection's read deadline idle_ns ahead (Go:
 *    conn.SetReadDeadline(time.Now().Add(idle))), so a client that says
 *    nothing for that long gets ETIMEDOUT on the server side and is dropped.
 *  - shutdown: Go stops the loop with ln.Close() from another goroutine; the
 *    garbage collector keeps the closed listener a valid object whose Accept
 *    says "use of closed network connection". weft can do the same when the accept
 *    loop holds a reference of its own (weft_fd_retain: a call on a closed
 *    weft_fd then returns EBADF). Here the server uses a context instead,
 *    which also reaches the connections: the accept loop and every
 *    connection read with their _ctx forms, cancelling the context wakes
 *    them all (ECANCELED), the accept loop closes the listener on its way
 *    out, each handler closes its own connection, and the WaitGroups say
 *    when all of that is done.
 *  - echo_client: dial, write a line, weft_read_full() the same number of
 *    bytes back (Go's io.ReadFull), compare. TCP is a byte stream: one write
 *    may arrive as several reads, and read_full hides that.
 *
 * Run:
 *   ./16_tcp_echo                 server and clients in one process, on
 *                                 127.0.0.1 and a port the kernel picks;
 *                                 checks everything and exits 0 or 1
 *   ./16_tcp_echo serve ADDR      the server alone (ADDR such as
 *                                 127.0.0.1:7007 or :7007), logging each
 *                                 connection, until Ctrl-C or SIGTERM
 *                                 (weft_signal_notify: Go's signal.Notify);
 *                                 try it with `nc 127.0.0.1 7007`
 *   ./16_tcp_echo client ADDR     the clients alone, against a server at ADDR
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define SECOND (1000 * MS)

#define CLIENTS 20             /* client goroutines */
#define LINES 50               /* lines each one sends */
#define IDLE_DEMO (1 * SECOND) /* the server's idle timeout, in-process */
#define IDLE_SERVE (30 * SECOND)

/* ---------------------------------------------------------------- the server */

struct server {
	weft_fd *ln;   /* the listener: owned by the accept loop */
	weft_ctx *ctx; /* cancelled to shut down */
	int64_t idle_ns;
	int verbose;   /* log every connection (serve mode) */
	weft_wg loop;  /* the accept loop */
	weft_wg conns; /* one per connection goroutine */
	atomic_long accepted, dropped_idle;
};

struct conn {
	struct server *s;
	weft_fd *fd; /* owned by the connection's goroutine */
	char peer[WEFT_ADDRSTRLEN];
};

/* Go: func handle(conn net.Conn) { defer conn.Close(); ... } */
void handle_conn(void *arg)
{
	struct conn *c = arg;
	struct server *s = c->s;
	char buf[4096];
	const char *why = "client closed";

	for (;;) {
		size_t n;
		/* The idle timeout: a deadline that moves with every read. */
		weft_fd_set_read_deadline(c->fd, weft_now() + s->idle_ns);
		int err = weft_read_ctx(s->ctx, c->fd, buf, sizeof buf, &n);
		if (err == 0 && n == 0)
			break; /* end of stream: the client closed its side */
		if (err == ETIMEDOUT) {
			atomic_fetch_add(&s->dropped_idle, 1);
			why = "idle too long: dropped";
			break;
		}
		if (err == ECANCELED) {
			why = "server shutting down";
			break;
		}
		if (err == 0)
			err = weft_write_ctx(s->ctx, c->fd, buf, n, NULL);
		if (err) {
			why = weft_strerror(err); /* ECONNRESET, EPIPE, ... */
			break;
		}
	}
	if (s->verbose || strcmp(why, "client closed") != 0)
		printf("  server: %s: %s\n", c->peer, why);
	weft_fd_close(c->fd);
	free(c);
	weft_wg_done(&s->conns);
}

void accept_loop(void *arg)
{
	struct server *s = arg;

	for (;;) {
		weft_fd *fd;
		int err = weft_accept_ctx(s->ctx, s->ln, &fd, NULL, NULL);
		if (err == ECANCELED)
			break; /* shutdown */
		if (err == EMFILE || err == ENFILE) {
			/* Out of descriptors: the connection waits in the
			 * backlog. Go's http.Server backs off and retries. */
			fprintf(stderr, "  server: accept: %s; retrying\n", weft_strerror(err));
			if (weft_sleep_ctx(s->ctx, 10 * MS) != 0)
				break;
			continue;
		}
		if (err) {
			fprintf(stderr, "  server: accept: %s\n", weft_strerror(err));
			break;
		}
		atomic_fetch_add(&s->accepted, 1);

		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			weft_fd_close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		if (weft_fd_peer_addr(fd, c->peer, sizeof c->peer) != 0)
			strcpy(c->peer, "?");
		if (s->verbose)
			printf("  server: %s connected\n", c->peer);
		weft_wg_add(&s->conns, 1); /* before weft_go, as always */
		if (weft_go(handle_conn, c) != 0) {
			weft_wg_done(&s->conns);
			weft_fd_close(fd);
			free(c);
		}
	}
	weft_fd_close(s->ln); /* the owner closes it, once nobody else can use it */
	weft_wg_done(&s->loop);
}

/* Listen on addr and start the accept loop; *bound gets the real address. */
static int server_start(struct server *s, const char *addr, char *bound, size_t len)
{
	int err = weft_listen("tcp", addr, &s->ln);
	if (err) {
		fprintf(stderr, "listen %s: %s\n", addr, weft_strerror(err));
		return err;
	}
	weft_fd_local_addr(s->ln, bound, len); /* port 0: which one we got */
	if ((err = weft_ctx_with_cancel(weft_ctx_background(), &s->ctx)) != 0) {
		weft_fd_close(s->ln);
		return err;
	}
	weft_wg_add(&s->loop, 1);
	if ((err = weft_go(accept_loop, s)) != 0) {
		weft_wg_done(&s->loop);
		weft_fd_close(s->ln);
		weft_ctx_release(s->ctx);
	}
	return err;
}

/* Stop accepting, end every connection, and wait until all of it is done. */
static void server_shutdown(struct server *s)
{
	weft_ctx_cancel(s->ctx);
	weft_wg_wait(&s->loop);
	weft_wg_wait(&s->conns);
	weft_ctx_release(s->ctx);
}

/* ---------------------------------------------------------------- the clients */

struct client {
	const char *addr;
	int id;
	int lines_ok;
	const char *failed; /* what went wrong, or NULL */
	int err;
	weft_wg *wg;
};

void echo_client(void *arg)
{
	struct client *cl = arg;
	weft_fd *fd;
	char line[300], back[300];

	int err = weft_dial_until("tcp", cl->addr, weft_now() + 10 * SECOND, &fd);
	if (err) {
		cl->failed = "dial";
		cl->err = err;
		weft_wg_done(cl->wg);
		return;
	}
	for (int j = 0; j < LINES; j++) {
		/* Lines of different lengths, each one unique. */
		int len = snprintf(line, sizeof line, "client %d line %d %.*s\n", cl->id, j,
		                   (cl->id * 31 + j * 17) % 200,
		                   "the quick brown fox jumps over the lazy dog, "
		                   "the quick brown fox jumps over the lazy dog, "
		                   "the quick brown fox jumps over the lazy dog, "
		                   "the quick brown fox jumps over the lazy dog, "
		                   "the quick brown fox jumps over the lazy dog");
		size_t n;
		if ((err = weft_write(fd, line, (size_t)len, NULL)) != 0) {
			cl->failed = "write";
			break;
		}
		/* All of it back, however the stream splits it; not forever. */
		err = weft_read_full_until(fd, back, (size_t)len, &n, weft_now() + 10 * SECOND);
		if (err) {
			cl->failed = err == ENODATA ? "read (server closed)" : "read";
			break;
		}
		if (memcmp(line, back, (size_t)len) != 0) {
			cl->failed = "compare";
			break;
		}
		cl->lines_ok++;
	}
	cl->err = err;
	weft_fd_close(fd);
	weft_wg_done(cl->wg);
}

/* Start CLIENTS echo clients against addr; 1 if every line came back. */
static int run_clients(const char *addr)
{
	static struct client cl[CLIENTS];
	weft_wg wg = WEFT_WG_INIT;
	int ok = 1, lines = 0;

	int64_t t0 = weft_now();
	for (int i = 0; i < CLIENTS; i++) {
		cl[i] = (struct client){.addr = addr, .id = i, .wg = &wg};
		weft_wg_add(&wg, 1);
		if (weft_go(echo_client, &cl[i]) != 0) {
			weft_wg_done(&wg);
			cl[i].failed = "start";
		}
	}
	weft_wg_wait(&wg);
	for (int i = 0; i < CLIENTS; i++) {
		lines += cl[i].lines_ok;
		if (cl[i].failed) {
			fprintf(stderr, "  client %d: %s: %s (after %d lines)\n", i, cl[i].failed,
			        weft_strerror(cl[i].err), cl[i].lines_ok);
			ok = 0;
		}
	}
	printf("  %d clients x %d lines: %d echoed back intact in %.1f ms\n", CLIENTS, LINES, lines,
	       (weft_now() - t0) / 1e6);
	return ok && lines == CLIENTS * LINES;
}

/* A client that connects and says nothing: the server drops it after its
 * idle timeout, which this client sees as the end of the stream. */
struct silent {
	const char *addr;
	int64_t waited; /* until the server hung up */
	int err;
	size_t n;
	weft_wg *wg;
};

void silent_client(void *arg)
{
	struct silent *sc = arg;
	weft_fd *fd;
	char byte;

	sc->err = weft_dial("tcp", sc->addr, &fd);
	if (sc->err == 0) {
		int64_t t0 = weft_now();
		/* Our own bound, far past the server's idle timeout. */
		sc->err = weft_read_until(fd, &byte, 1, &sc->n, t0 + 10 * SECOND);
		sc->waited = weft_now() - t0;
		weft_fd_close(fd);
	}
	weft_wg_done(sc->wg);
}

/* ---------------------------------------------------------------- modes */

/* Default: everything in one process, checked. */
static int demo(void)
{
	static struct server s;
	struct silent sc = {0};
	weft_wg wg = WEFT_WG_INIT;
	char addr[WEFT_ADDRSTRLEN];
	int ok = 1;

	s.idle_ns = IDLE_DEMO;
	if (server_start(&s, "127.0.0.1:0", addr, sizeof addr) != 0)
		return 1;
	printf("1. echo server listening on %s (idle timeout %lld ms)\n", addr,
	       (long long)(IDLE_DEMO / MS));

	/* The silent client runs meanwhile; its wait overlaps the echoes. */
	sc.addr = addr;
	sc.wg = &wg;
	weft_wg_add(&wg, 1);
	if (weft_go(silent_client, &sc) != 0) {
		weft_wg_done(&wg);
		sc.err = EAGAIN;
	}

	ok &= run_clients(addr);

	printf("2. a client that says nothing\n");
	weft_wg_wait(&wg);
	int dropped = sc.err == 0 && sc.n == 0; /* end of stream: the server hung up */
	printf("  the server hung up on it after %.0f ms: %s\n", sc.waited / 1e6,
	       dropped ? "yes" : weft_strerror(sc.err));
	/* Not before the timeout (a little slack: the server's clock started
	 * at accept, ours when dial returned), and not much after. */
	ok &= dropped && sc.waited >= IDLE_DEMO - 50 * MS && sc.waited < 5 * SECOND;

	printf("3. shutdown, with one client still connected\n");
	weft_fd *fd;
	char hi[3];
	size_t n;
	int err = weft_dial("tcp", addr, &fd);
	if (err == 0) /* one echo, so that its handler is surely reading */
		err = weft_write(fd, "hi\n", 3, NULL);
	if (err == 0)
		err = weft_read_full_until(fd, hi, 3, &n, weft_now() + 10 * SECOND);
	if (err) {
		fprintf(stderr, "  lingering client: %s\n", weft_strerror(err));
		return 1;
	}
	int64_t t0 = weft_now();
	server_shutdown(&s);
	printf("  accept loop and connection goroutines done in %.2f ms; %ld accepted, "
	       "%ld dropped as idle\n",
	       (weft_now() - t0) / 1e6, atomic_load(&s.accepted), atomic_load(&s.dropped_idle));
	ok &= atomic_load(&s.accepted) == CLIENTS + 2 && atomic_load(&s.dropped_idle) == 1;

	/* The server hung up on the lingering client... */
	err = weft_read_until(fd, hi, 1, &n, weft_now() + 10 * SECOND);
	printf("  the lingering client reads: %s\n", err      ? weft_strerror(err)
	                                             : n == 0 ? "end of stream"
	                                                      : "data?!");
	ok &= err == 0 && n == 0;
	weft_fd_close(fd);

	/* ...and the listener is closed: nobody answers on that port any more. */
	err = weft_dial("tcp", addr, &fd);
	if (err == 0)
		weft_fd_close(fd);
	printf("  dialing %s again: %s\n", addr, err ? weft_strerror(err) : "connected?!");
	ok &= err == ECONNREFUSED;

	if (!ok) {
		fprintf(stderr, "16_tcp_echo: FAILED\n");
		return 1;
	}
	return 0;
}

/* `serve ADDR`: until SIGINT or SIGTERM. */
static int serve(const char *addr)
{
	static struct server s;
	static const int sigs[] = {SIGINT, SIGTERM};
	char bound[WEFT_ADDRSTRLEN];
	weft_chan *sigch;
	int sig, err;

	/* Go: c := make(chan os.Signal, 1); signal.Notify(c, os.Interrupt, ...) */
	if ((err = weft_chan_make(&sigch, sizeof(int), 1)) != 0) {
		fprintf(stderr, "signals: %s\n", weft_strerror(err));
		return 1;
	}
	if ((err = weft_signal_notify(sigch, sigs, 2)) != 0) {
		fprintf(stderr, "signals: %s\n", weft_strerror(err));
		weft_chan_release(sigch);
		return 1;
	}
	s.idle_ns = IDLE_SERVE;
	s.verbose = 1;
	if (server_start(&s, addr, bound, sizeof bound) != 0) {
		weft_signal_stop(sigch);
		weft_chan_release(sigch);
		return 1;
	}
	printf("echo server on %s; idle connections are dropped after %lld s; Ctrl-C stops it\n",
	       bound, (long long)(IDLE_SERVE / SECOND));
	fflush(stdout);
	weft_chan_recv(sigch, &sig);
	printf("\n%s: shutting down\n", strsignal(sig));
	server_shutdown(&s);
	weft_signal_stop(sigch);
	weft_chan_release(sigch);
	printf("%ld connections served\n", atomic_load(&s.accepted));
	return 0;
}

struct args {
	int argc;
	char **argv;
};

static int run(void *arg)
{
	struct args *a = arg;

	if (a->argc == 1)
		return demo();
	if (a->argc == 3 && strcmp(a->argv[1], "serve") == 0)
		return serve(a->argv[2]);
	if (a->argc == 3 && strcmp(a->argv[1], "client") == 0) {
		printf("%d clients against %s\n", CLIENTS, a->argv[2]);
		return run_clients(a->argv[2]) ? 0 : 1;
	}
	fprintf(stderr, "usage: %s [serve ADDR | client ADDR]\n", a->argv[0]);
	return 2;
}

int main(int argc, char **argv)
{
	struct args a = {argc, argv};
	return weft_main(run, &a);
}
