/* SPDX-License-Identifier: MIT */
/*
 * signal_test.c - weft_signal_notify / weft_signal_stop (Go's os/signal):
 * a TCP server of multi-part request/response messages shut down gracefully
 * by SIGTERM sent to its own process (it stops accepting, finishes every
 * message in flight, answers every request sent, closes every connection,
 * every goroutine exits, and the process lives); the previous disposition
 * (SIG_IGN, a handler with its flags and mask, SIG_DFL) back after stop;
 * the calls that are refused (EINVAL: uncatchable or reserved signals, out of
 * range, n < 1, a channel whose elements are not ints) changing nothing; a
 * full channel dropping signals without ever blocking the dispatcher; two
 * channels for one signal, and stop on one keeping the other; a child made
 * by fork() that gets a signal before it execs dying of it, not feeding the
 * parent's channel.
 *
 * The first weft_signal_notify starts a dispatcher goroutine that lives as
 * long as the process, which the harness's leak check (goroutines before and
 * after each test) would count as a leak: every test that registers a
 * channel runs in a child process (test_child_run), which makes its own
 * check that all goroutines but the dispatcher have gone, and exits 0 only
 * when every assertion held (a failed one prints FAIL on its stderr and
 * exits 1; the parent prints that stderr). Signals are sent to the child
 * itself, never to the test process.
 */
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEC (1000 * TEST_MS)
/* "Promptly": a bound only a lost or blocked delivery exceeds. */
#define PROMPT_NS (2 * SEC * test_slowdown())
/* A child that has not finished in 20 s (x slowdown) is stuck. */
#define CHILD_TIMEOUT_MS 20000

static weft_chan *make_chan(size_t elem_size, size_t cap)
{
	weft_chan *c = NULL;
	ASSERT_EQ(weft_chan_make(&c, elem_size, cap), 0);
	ASSERT(c != NULL);
	return c;
}

static void send_self(int sig)
{
	ASSERT_EQ(kill(getpid(), sig), 0);
}

/* The next signal number on c, waiting at most PROMPT_NS; 0 if none came. */
static int recv_sig(weft_chan *c)
{
	int sig = 0;
	int r = weft_chan_recv_until(c, &sig, weft_now() + PROMPT_NS);
	if (r == ETIMEDOUT)
		return 0;
	ASSERT_EQ(r, 0);
	return sig;
}

/* Nothing arrives on c for 50 ms. */
static void expect_quiet(weft_chan *c, const char *what)
{
	int sig = 0;
	int r = weft_chan_recv_until(c, &sig, weft_now() + 50 * TEST_MS);
	if (r != ETIMEDOUT)
		FAIL("%s: got %d (signal %d), expected nothing", what, r, sig);
}

static struct sigaction disposition(int sig)
{
	struct sigaction sa;
	ASSERT_EQ(sigaction(sig, NULL, &sa), 0);
	return sa;
}

static bool is_default(int sig)
{
	struct sigaction sa = disposition(sig);
	return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

static bool is_ignored(int sig)
{
	struct sigaction sa = disposition(sig);
	return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN;
}

/* Give sig its default action: a process may inherit SIG_IGN (a shell's
 * background job ignores SIGINT and SIGQUIT, nohup SIGHUP), and the tests
 * check that stop brings back what was there before. */
static void set_default(int sig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	ASSERT_EQ(sigaction(sig, &sa, NULL), 0);
	ASSERT(is_default(sig));
}

/* Every channel the child made has been freed, the ones registered for
 * signals included (weft_signal_stop drops the registry's reference). */
static void expect_channels_freed(void)
{
	weft_stats st;
	weft_stats_get(&st);
	ASSERT_EQ(st.channels, 0);
}

/* Run CHILD(name) and require a clean exit with "done" as its last word. */
static void run_child(const char *name)
{
	test_child c;
	test_child_run(name, NULL, CHILD_TIMEOUT_MS, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "done\n");
	ASSERT_NOT_CONTAINS(c.err, "fatal error");
	/* Its report lines, for the log. */
	for (char *line = strtok(c.out, "\n"); line; line = strtok(NULL, "\n"))
		if (strcmp(line, "done") != 0)
			printf("    %s\n", line);
	test_child_free(&c);
}

/* ---------------------------------------------------------------- graceful shutdown */

/*
 * The protocol. A request is a 4-byte big-endian length (1..MAX_PAYLOAD) and
 * that many bytes, sent in three writes with pauses between. The reply is
 * the same framing (the length's top bit CLOSING set on the connection's last
 * reply) and the request's bytes reversed and xored with 0xa5, written in
 * three parts with pauses, after 10 ms of "work": at any moment most
 * connections are in the middle of a message.
 *
 * Shutdown (SIGTERM or SIGINT): the accept loop, a select over the signal
 * channel and the channel the acceptor goroutine feeds connections into,
 * stops; the acceptor is cancelled (its listener closed); each connection
 * finishes the message it is in, or, if it is between messages, waits for
 * the client's next one, and gives that reply with CLOSING set, then closes
 * (HTTP's "Connection: close": a client never sees its connection closed
 * with a request unanswered). A client stops at a CLOSING reply and checks
 * that end of file follows.
 */
#define NCLIENTS 8
#define MAX_PAYLOAD 3000
#define CLOSING 0x80000000u
#define MIN_REPLIES_BEFORE 10 /* per client, before the signal is sent */

static struct server {
	weft_fd *ln;
	char addr[WEFT_ADDRSTRLEN];
	weft_chan *sigc;  /* int, capacity 2: SIGTERM and SIGINT */
	weft_chan *conns; /* weft_fd *, unbuffered: accepted connections */
	weft_ctx *stop;   /* cancelled at shutdown: the acceptor gives up */
	atomic_int shutting_down;
	int signal;              /* the signal that ended the accept loop */
	int64_t stopped_ns;      /* when the accept loop saw it */
	atomic_int accepted;     /* connections handed to the accept loop */
	atomic_int replies;      /* replies written in full */
	atomic_int closing;      /* of which with CLOSING */
	atomic_int in_flight;    /* CLOSING replies to requests read before the signal */
	atomic_int acceptor_end; /* how the acceptor ended: its error */
	weft_wg handlers;        /* connection goroutines */
	weft_wg done;            /* the accept loop and the acceptor */
} srv;

static struct clients {
	atomic_bool signal_sent;
	weft_wg wg;
	struct client {
		int id;
		atomic_int sent;    /* requests sent in full */
		atomic_int replies; /* correct, complete replies */
		int after_signal;   /* of which received after the signal was sent */
		int closing;        /* CLOSING replies */
		bool eof_after;     /* end of file after the CLOSING reply */
	} c[NCLIENTS];
} cls;

/* Errors seen by any goroutine: counted, the first one kept for the report. */
static atomic_int n_errors;
static atomic_flag error_kept = ATOMIC_FLAG_INIT;
static char first_error[256];

__attribute__((format(printf, 1, 2))) static void note_error(const char *fmt, ...)
{
	if (!atomic_flag_test_and_set(&error_kept)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_error, sizeof first_error, fmt, ap);
		va_end(ap);
	}
	atomic_fetch_add(&n_errors, 1);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	uint32_t be = htonl(v);
	memcpy(p, &be, 4);
}

static uint32_t get_be32(const unsigned char *p)
{
	uint32_t be;
	memcpy(&be, p, 4);
	return ntohl(be);
}

/* Write the len bytes at p in three parts with a pause (a sleep or a yield)
 * between: a message spread over time. */
static int write_in_parts(weft_fd *f, const unsigned char *p, size_t len, uint32_t *seed)
{
	size_t cut1 = len / 3, cut2 = 2 * len / 3;
	size_t cuts[4] = {0, cut1, cut2, len};
	for (int i = 0; i < 3; i++) {
		if (cuts[i + 1] == cuts[i])
			continue;
		size_t n = 0;
		int err = weft_write(f, p + cuts[i], cuts[i + 1] - cuts[i], &n);
		if (err)
			return err;
		if (i < 2) {
			if (test_rand32(seed) % 2)
				weft_sleep(TEST_MS);
			else
				weft_yield();
		}
	}
	return 0;
}

static void conn_handler(void *arg)
{
	weft_fd *c = arg;
	unsigned char req[4 + MAX_PAYLOAD], rep[4 + MAX_PAYLOAD];
	uint32_t seed = (uint32_t)(uintptr_t)c | 1;
	for (;;) {
		size_t n = 0;
		int err = weft_read_full(c, req, 4, &n);
		if (err == ENODATA && n == 0) {
			/* The client hung up between messages: it only does
			 * that after a CLOSING reply, which ended this loop. */
			note_error("server: client hung up without a CLOSING reply");
			break;
		}
		if (err) {
			note_error("server: request header: %s after %zu bytes", weft_strerror(err),
			           n);
			break;
		}
		uint32_t len = get_be32(req);
		if (len < 1 || len > MAX_PAYLOAD) {
			note_error("server: bad request length %u", len);
			break;
		}
		err = weft_read_full(c, req + 4, len, &n);
		if (err) {
			note_error("server: request cut short: %s after %zu of %u bytes",
			           weft_strerror(err), n, len);
			break;
		}
		bool before = atomic_load(&srv.shutting_down) == 0;
		weft_sleep(10 * TEST_MS); /* the work: the message is in flight */
		/* The last reply says so; decided as late as possible, so a
		 * message in flight at the signal is the last one. */
		bool last = atomic_load(&srv.shutting_down) != 0;
		put_be32(rep, len | (last ? CLOSING : 0));
		for (uint32_t i = 0; i < len; i++)
			rep[4 + i] = req[4 + len - 1 - i] ^ 0xa5;
		err = write_in_parts(c, rep, 4 + len, &seed);
		if (err) {
			note_error("server: reply: %s", weft_strerror(err));
			break;
		}
		atomic_fetch_add(&srv.replies, 1);
		if (last) {
			atomic_fetch_add(&srv.closing, 1);
			if (before)
				atomic_fetch_add(&srv.in_flight, 1);
			break;
		}
	}
	weft_fd_close(c);
	weft_wg_done(&srv.handlers);
}

/* Accepts connections and hands them to the accept loop, until cancelled;
 * then closes the listener (it is the only user of it). */
static void acceptor(void *arg)
{
	(void)arg;
	int err;
	for (;;) {
		weft_fd *c = NULL;
		err = weft_accept_ctx(srv.stop, srv.ln, &c, NULL, NULL);
		if (err)
			break;
		weft_case cs[1] = {WEFT_SEND_CASE(srv.conns, &c)};
		int chosen;
		err = weft_select_ctx(srv.stop, cs, 1, &chosen);
		if (err) {
			weft_fd_close(c); /* accepted after the shutdown: never served */
			break;
		}
	}
	atomic_store(&srv.acceptor_end, err);
	weft_fd_close(srv.ln);
	weft_wg_done(&srv.done);
}

/* The accept loop: a select over the signal channel and new connections. */
static void accept_loop(void *arg)
{
	(void)arg;
	for (;;) {
		int sig = 0;
		weft_fd *c = NULL;
		weft_case cs[2] = {WEFT_RECV_CASE(srv.sigc, &sig), WEFT_RECV_CASE(srv.conns, &c)};
		int chosen = -1;
		int err = weft_select(cs, 2, &chosen);
		if (err) {
			note_error("server: select: %s (case %d)", weft_strerror(err), chosen);
			break;
		}
		if (chosen == 0) {
			srv.signal = sig;
			srv.stopped_ns = weft_now();
			break;
		}
		atomic_fetch_add(&srv.accepted, 1);
		weft_wg_add(&srv.handlers, 1);
		GO(conn_handler, c);
	}
	/* Shutdown: no new connections, every connection finishes. */
	atomic_store(&srv.shutting_down, 1);
	weft_ctx_cancel(srv.stop);
	weft_signal_stop(srv.sigc);
	if (weft_wg_wait_until(&srv.handlers, weft_now() + 10 * SEC * test_slowdown()) != 0)
		note_error("server: connections not finished 10 s after the signal");
	weft_wg_done(&srv.done);
}

static void client_run(void *arg)
{
	struct client *cl = arg;
	uint32_t seed = (uint32_t)cl->id * 2654435761u + 1;
	unsigned char req[4 + MAX_PAYLOAD], rep[4 + MAX_PAYLOAD];
	weft_fd *f = NULL;
	int err = weft_dial("tcp", srv.addr, &f);
	if (err) {
		note_error("client %d: dial %s: %s", cl->id, srv.addr, weft_strerror(err));
		weft_wg_done(&cls.wg);
		return;
	}
	for (int seq = 0;; seq++) {
		uint32_t len = 1 + test_rand32(&seed) % MAX_PAYLOAD;
		put_be32(req, len);
		for (uint32_t i = 0; i < len; i++)
			req[4 + i] = (unsigned char)(cl->id * 31 + seq * 7 + (int)i);
		err = write_in_parts(f, req, 4 + len, &seed);
		if (err) {
			note_error("client %d: request %d: write: %s", cl->id, seq,
			           weft_strerror(err));
			break;
		}
		atomic_fetch_add(&cl->sent, 1);
		size_t n = 0;
		err = weft_read_full(f, rep, 4, &n);
		if (err) {
			note_error("client %d: request %d got no reply: %s after %zu header bytes",
			           cl->id, seq, weft_strerror(err), n);
			break;
		}
		uint32_t h = get_be32(rep);
		bool closing = (h & CLOSING) != 0;
		if ((h & ~CLOSING) != len) {
			note_error("client %d: request %d of %u bytes: reply of %u", cl->id, seq,
			           len, h & ~CLOSING);
			break;
		}
		err = weft_read_full(f, rep + 4, len, &n);
		if (err) {
			note_error("client %d: reply %d cut short: %s after %zu of %u bytes",
			           cl->id, seq, weft_strerror(err), n, len);
			break;
		}
		for (uint32_t i = 0; i < len; i++) {
			if (rep[4 + i] != (req[4 + len - 1 - i] ^ 0xa5)) {
				note_error("client %d: reply %d wrong at byte %u", cl->id, seq, i);
				goto out;
			}
		}
		atomic_fetch_add(&cl->replies, 1);
		if (atomic_load(&cls.signal_sent))
			cl->after_signal++;
		if (closing) {
			cl->closing++;
			unsigned char b;
			err = weft_read(f, &b, 1, &n);
			cl->eof_after = err == 0 && n == 0;
			if (!cl->eof_after)
				note_error("client %d: after CLOSING: %s, %zu bytes instead of EOF",
				           cl->id, weft_strerror(err), n);
			break;
		}
		/* Now and then a pause between messages: some connections are
		 * idle when the signal comes. */
		if (test_rand32(&seed) % 4 == 0)
			weft_sleep((int64_t)(test_rand32(&seed) % 3) * TEST_MS);
	}
out:
	weft_fd_close(f);
	weft_wg_done(&cls.wg);
}

static int min_replies(void)
{
	int m = INT32_MAX;
	for (int i = 0; i < NCLIENTS; i++)
		if (atomic_load(&cls.c[i].replies) < m)
			m = atomic_load(&cls.c[i].replies);
	return m;
}

static int graceful_main(void *arg)
{
	(void)arg;
	const int sigs[] = {SIGTERM, SIGINT};
	set_default(SIGTERM);
	set_default(SIGINT);
	srv.sigc = make_chan(sizeof(int), 2);
	ASSERT_EQ(weft_signal_notify(srv.sigc, sigs, 2), 0);
	/* Caught now: neither kills the process. */
	ASSERT(!is_default(SIGTERM) && !is_ignored(SIGTERM));
	ASSERT(!is_default(SIGINT) && !is_ignored(SIGINT));
	int64_t base = weft_num_goroutines(); /* main and the dispatcher */

	ASSERT_EQ(weft_listen("tcp", "127.0.0.1:0", &srv.ln), 0);
	ASSERT_EQ(weft_fd_local_addr(srv.ln, srv.addr, sizeof srv.addr), 0);
	srv.conns = make_chan(sizeof(weft_fd *), 0);
	ASSERT_EQ(weft_ctx_with_cancel(weft_ctx_background(), &srv.stop), 0);
	weft_wg_add(&srv.done, 2);
	GO(acceptor, NULL);
	GO(accept_loop, NULL);

	weft_wg_add(&cls.wg, NCLIENTS);
	for (int i = 0; i < NCLIENTS; i++) {
		cls.c[i].id = i;
		GO(client_run, &cls.c[i]);
	}
	/* Every client connected and talking before the signal. */
	int64_t deadline = weft_now() + 10 * SEC * test_slowdown();
	while (min_replies() < MIN_REPLIES_BEFORE && atomic_load(&n_errors) == 0) {
		if (weft_now() > deadline)
			FAIL("clients have only %d replies each after 10 s", min_replies());
		weft_sleep(TEST_MS);
	}
	if (atomic_load(&n_errors))
		FAIL("%d errors before the signal, the first: %s", atomic_load(&n_errors),
		     first_error);

	atomic_store(&cls.signal_sent, true);
	int64_t t_kill = weft_now();
	send_self(SIGTERM);

	if (weft_wg_wait_until(&srv.done, weft_now() + 10 * SEC * test_slowdown()) != 0)
		FAIL("the server has not shut down 10 s after SIGTERM (accept loop %s)",
		     srv.stopped_ns ? "stopped" : "never saw the signal");
	int64_t t_down = weft_now();
	if (weft_wg_wait_until(&cls.wg, weft_now() + 10 * SEC * test_slowdown()) != 0)
		FAIL("clients not finished 10 s after the server shut down");
	if (atomic_load(&n_errors))
		FAIL("%d errors, the first: %s", atomic_load(&n_errors), first_error);

	ASSERT_EQ(srv.signal, SIGTERM);
	ASSERT_GE(srv.stopped_ns, t_kill);
	ASSERT_EQ(atomic_load(&srv.acceptor_end), ECANCELED);
	ASSERT_EQ(atomic_load(&srv.accepted), NCLIENTS);
	int sent = 0, replies = 0, after = 0;
	for (int i = 0; i < NCLIENTS; i++) {
		struct client *cl = &cls.c[i];
		/* Every request sent was answered, completely and correctly; the
		 * last answer said CLOSING, and then the connection ended. */
		ASSERT_EQ(atomic_load(&cl->sent), atomic_load(&cl->replies));
		ASSERT_EQ(cl->closing, 1);
		ASSERT(cl->eof_after);
		ASSERT_GE(cl->after_signal, 1);
		sent += atomic_load(&cl->sent);
		replies += atomic_load(&cl->replies);
		after += cl->after_signal;
	}
	ASSERT_EQ(atomic_load(&srv.replies), replies);
	ASSERT_EQ(atomic_load(&srv.closing), NCLIENTS);

	/* Nobody listens any more. */
	weft_fd *late = NULL;
	int err = weft_dial("tcp", srv.addr, &late);
	if (err == 0)
		weft_fd_close(late);
	ASSERT_EQ(err, ECONNREFUSED);

	/* weft_signal_stop gave SIGTERM and SIGINT their default back, and
	 * every goroutine but the dispatcher is gone. */
	ASSERT(is_default(SIGTERM));
	ASSERT(is_default(SIGINT));
	EXPECT_GOROUTINES(base);
	weft_ctx_release(srv.stop);
	weft_chan_release(srv.conns);
	weft_chan_release(srv.sigc);
	expect_channels_freed();
	printf("%d clients: %d requests, %d replies, %d after SIGTERM (%d of the last ones "
	       "to requests read before it); shut down in %.1f ms\n",
	       NCLIENTS, sent, replies, after, atomic_load(&srv.in_flight),
	       (double)(t_down - t_kill) / 1e6);
	printf("done\n");
	return 0;
}

CHILD(graceful_shutdown)
{
	return weft_main(graceful_main, NULL);
}

/*
 * A server shut down by SIGTERM sent to its own process (see the protocol
 * above): the accept loop gets SIGTERM from the signal channel, the process
 * lives; every request sent got its complete, correct reply (requests sent
 * == replies received, per client), each connection's last reply says
 * CLOSING and end of file follows; the listener is closed (a dial after is
 * ECONNREFUSED); SIGTERM and SIGINT have their default back after
 * weft_signal_stop; every goroutine but the dispatcher has exited and every
 * channel is freed (stop dropped the registry's reference). Guards: no
 * handler installed (the child dies of SIGTERM), a handler that drops the
 * signal or a dispatcher that does not send it (the server never stops: the
 * child fails after 10 s), stop that does not restore the default, stop that
 * keeps its reference to the channel.
 */
TEST_THREAD(graceful_shutdown_sigterm)
{
	run_child("graceful_shutdown");
}

/* ---------------------------------------------------------------- dispositions */

static atomic_int usr2_caught;

static void usr2_handler(int sig)
{
	(void)sig;
	atomic_fetch_add(&usr2_caught, 1);
}

static int restore_main(void *arg)
{
	(void)arg;
	/* SIGUSR1 ignored, SIGUSR2 a handler with flags and a mask, SIGHUP
	 * default. */
	struct sigaction ign = {0}, h2 = {0};
	ign.sa_handler = SIG_IGN;
	ASSERT_EQ(sigaction(SIGUSR1, &ign, NULL), 0);
	h2.sa_handler = usr2_handler;
	h2.sa_flags = SA_RESTART | SA_NODEFER;
	sigemptyset(&h2.sa_mask);
	sigaddset(&h2.sa_mask, SIGHUP);
	ASSERT_EQ(sigaction(SIGUSR2, &h2, NULL), 0);
	set_default(SIGHUP);
	set_default(SIGRTMAX);

	weft_chan *c = make_chan(sizeof(int), 8);
	const int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGUSR1}; /* one twice */
	ASSERT_EQ(weft_signal_notify(c, sigs, 4), 0);
	int64_t base = weft_num_goroutines();
	ASSERT(!is_ignored(SIGUSR1) && !is_default(SIGUSR1));
	ASSERT(disposition(SIGUSR2).sa_handler != usr2_handler);
	ASSERT(!is_default(SIGHUP));
	/* Registered: delivered on c, SIGUSR1 no longer ignored. */
	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(c), SIGUSR1);
	send_self(SIGUSR2);
	ASSERT_EQ(recv_sig(c), SIGUSR2);
	send_self(SIGHUP);
	ASSERT_EQ(recv_sig(c), SIGHUP);

	/* Stopped: everything as it was. */
	weft_signal_stop(c);
	ASSERT(is_ignored(SIGUSR1));
	struct sigaction now = disposition(SIGUSR2);
	ASSERT(now.sa_handler == usr2_handler);
	ASSERT_EQ(now.sa_flags & (SA_RESTART | SA_NODEFER | SA_SIGINFO | SA_RESETHAND),
	          SA_RESTART | SA_NODEFER);
	ASSERT(sigismember(&now.sa_mask, SIGHUP));
	ASSERT(!sigismember(&now.sa_mask, SIGINT));
	ASSERT(is_default(SIGHUP));
	/* And it acts as before: SIGUSR1 ignored (the process lives), SIGUSR2
	 * runs its handler again, nothing comes on c. */
	int caught = atomic_load(&usr2_caught);
	send_self(SIGUSR1);
	send_self(SIGUSR2);
	int64_t deadline = test_now_ns() + PROMPT_NS;
	while (atomic_load(&usr2_caught) == caught && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT_EQ(atomic_load(&usr2_caught), caught + 1);
	expect_quiet(c, "after stop");

	/* Stop again, or on a channel never registered: nothing happens. */
	weft_signal_stop(c);
	weft_chan *other = make_chan(sizeof(int), 1);
	weft_signal_stop(other);
	ASSERT(is_ignored(SIGUSR1));

	/* The last signal number, 64 (SIGRTMAX): accepted and delivered. */
	const int rtmax = SIGRTMAX;
	ASSERT_EQ(rtmax, 64);
	ASSERT_EQ(weft_signal_notify(c, &rtmax, 1), 0);
	if (!test_emulated()) { /* qemu-user keeps the top signals for itself */
		send_self(rtmax);
		ASSERT_EQ(recv_sig(c), rtmax);
	}
	weft_signal_stop(c);
	ASSERT(is_default(rtmax));

	/* Registered again: caught again, and stop restores SIG_IGN again. */
	ASSERT_EQ(weft_signal_notify(c, sigs, 1), 0);
	ASSERT(!is_ignored(SIGUSR1));
	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(c), SIGUSR1);
	weft_signal_stop(c);
	ASSERT(is_ignored(SIGUSR1));

	EXPECT_GOROUTINES(base);
	weft_chan_release(other);
	weft_chan_release(c);
	expect_channels_freed();
	printf("done\n");
	return 0;
}

CHILD(stop_restores)
{
	return weft_main(restore_main, NULL);
}

/*
 * weft_signal_stop gives each signal back the disposition it had before
 * weft_signal_notify: SIG_IGN (SIGUSR1), a handler with its flags and mask
 * (SIGUSR2: SA_RESTART | SA_NODEFER, mask {SIGHUP}), SIG_DFL (SIGHUP), and
 * they act so (SIGUSR1 ignored, SIGUSR2's handler runs, nothing more on the
 * channel). A signal listed twice is counted once. The last signal, 64
 * (SIGRTMAX), is accepted and delivered. A second stop, or stop on
 * a channel never registered, does nothing; registering again works and stop
 * restores again. Guards: stop that leaves weft's handler (or SIG_DFL: the
 * ignored SIGUSR1 would kill the process), that loses the flags or the mask,
 * a registration count off by the duplicate.
 */
TEST_THREAD(signal_stop_restores_disposition)
{
	run_child("stop_restores");
}

/* ---------------------------------------------------------------- refused calls */

/*
 * EINVAL, with nothing registered and no goroutine started (the harness's
 * leak check would see the dispatcher): the signals that cannot be caught or
 * that weft keeps (SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 * SIGTRAP, SIGURG) or that the C library keeps (glibc's 32 and 33, below
 * SIGRTMIN, which its sigaction refuses: they were registered as caught and
 * left uncaught), 0, 65 and -1, n of 0 and -1, a NULL channel or list, a
 * channel of 8-byte, 0-byte or 2-byte elements, and a list with one bad
 * signal after a good one (the good one is not registered either: its
 * disposition is unchanged). The channels are not retained (all freed at the
 * end). Guards: a check missing or off by one (65 is one past the last real
 * signal number, 64), a partial registration before the bad entry is seen.
 */
TEST(notify_errors)
{
	weft_chan *c = make_chan(sizeof(int), 4);
	const int bad[] = {SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
	                   SIGURG,  0,       65,     -1,     1000,   32,     SIGRTMIN - 1};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (weft_signal_notify(c, &bad[i], 1) != EINVAL)
			FAIL("weft_signal_notify of signal %d: not EINVAL", bad[i]);
	const int usr1 = SIGUSR1;
	ASSERT_EQ(weft_signal_notify(c, &usr1, 0), EINVAL);
	ASSERT_EQ(weft_signal_notify(c, &usr1, -1), EINVAL);
	ASSERT_EQ(weft_signal_notify(c, NULL, 1), EINVAL);
	ASSERT_EQ(weft_signal_notify(NULL, &usr1, 1), EINVAL);
	weft_chan *c8 = make_chan(sizeof(int64_t), 4);
	weft_chan *c0 = make_chan(0, 4);
	weft_chan *c2 = make_chan(2, 4);
	ASSERT_EQ(weft_signal_notify(c8, &usr1, 1), EINVAL);
	ASSERT_EQ(weft_signal_notify(c0, &usr1, 1), EINVAL);
	ASSERT_EQ(weft_signal_notify(c2, &usr1, 1), EINVAL);

	/* A good signal, then a bad one: all or nothing. */
	set_default(SIGUSR1);
	const int mixed[] = {SIGUSR1, SIGKILL};
	ASSERT_EQ(weft_signal_notify(c, mixed, 2), EINVAL);
	const int mixed2[] = {SIGUSR1, 65};
	ASSERT_EQ(weft_signal_notify(c, mixed2, 2), EINVAL);
	ASSERT(is_default(SIGUSR1));

	/* Stop on channels never registered: nothing. */
	weft_signal_stop(c);
	weft_signal_stop(c8);
	weft_chan_release(c);
	weft_chan_release(c8);
	weft_chan_release(c0);
	weft_chan_release(c2);
	expect_channels_freed();
}

/* ---------------------------------------------------------------- a full channel */

static int full_main(void *arg)
{
	(void)arg;
	weft_chan *small = make_chan(sizeof(int), 1);
	weft_chan *big = make_chan(sizeof(int), 64);
	const int usr1 = SIGUSR1;
	set_default(SIGUSR1);
	ASSERT_EQ(weft_signal_notify(small, &usr1, 1), 0);
	ASSERT_EQ(weft_signal_notify(big, &usr1, 1), 0);
	int64_t base = weft_num_goroutines();

	/* Five signals one after the other, each seen on big before the next
	 * (so none merge as pending): small keeps the first, drops the rest,
	 * and big keeps getting them (the dispatcher never waits on small). */
	for (int i = 0; i < 5; i++) {
		send_self(SIGUSR1);
		int got = recv_sig(big);
		if (got != SIGUSR1)
			FAIL("signal %d of 5 not delivered to the second channel (got %d): "
			     "the dispatcher is stuck on the full one?",
			     i + 1, got);
	}
	ASSERT_EQ(weft_chan_len(small), 1);
	int sig = 0;
	ASSERT_EQ(weft_chan_tryrecv(small, &sig), 0);
	ASSERT_EQ(sig, SIGUSR1);
	ASSERT_EQ(weft_chan_tryrecv(small, &sig), EAGAIN);

	/* Five at once: the sender never blocks, at least one arrives on each
	 * channel (pending signals may merge), small holds exactly one. */
	int64_t t0 = weft_now();
	for (int i = 0; i < 5; i++)
		send_self(SIGUSR1);
	int64_t sending = weft_now() - t0;
	int on_big = 0;
	if (recv_sig(big) == SIGUSR1)
		on_big++;
	weft_sleep(100 * TEST_MS); /* the rest, if any */
	while (weft_chan_tryrecv(big, &sig) == 0) {
		ASSERT_EQ(sig, SIGUSR1);
		on_big++;
	}
	ASSERT_GE(on_big, 1);
	ASSERT_LE(on_big, 5);
	ASSERT_EQ(weft_chan_len(small), 1);
	ASSERT_LT(sending, PROMPT_NS);

	/* Drained, small receives again: nothing was left stuck. */
	ASSERT_EQ(weft_chan_tryrecv(small, &sig), 0);
	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(small), SIGUSR1);
	ASSERT_EQ(recv_sig(big), SIGUSR1);

	weft_signal_stop(small);
	weft_signal_stop(big);
	ASSERT(is_default(SIGUSR1));
	EXPECT_GOROUTINES(base);
	weft_chan_release(small);
	weft_chan_release(big);
	expect_channels_freed();
	printf("burst of 5: %d delivered to the big channel, sent in %.3f ms\n", on_big,
	       (double)sending / 1e6);
	printf("done\n");
	return 0;
}

CHILD(full_channel)
{
	return weft_main(full_main, NULL);
}

/*
 * A channel of capacity 1 that nobody reads, and a big one, registered for
 * SIGUSR1: five signals (each seen on the big channel before the next) leave
 * exactly one on the small channel, and the big one gets all five; a burst
 * of five at once: the sender is not held up, one or more reach the big
 * channel, the small one still holds one; once drained it receives again;
 * the process lives throughout. Guards: a blocking send in the dispatcher
 * (the big channel stops receiving at the second signal), a handler that
 * blocks on a full pipe or channel (the sender hangs), a channel that
 * overfills.
 */
TEST_THREAD(full_channel_drops)
{
	run_child("full_channel");
}

/* ---------------------------------------------------------------- two channels */

static int two_main(void *arg)
{
	(void)arg;
	weft_chan *a = make_chan(sizeof(int), 4);
	weft_chan *b = make_chan(sizeof(int), 4);
	const int usr1 = SIGUSR1;
	set_default(SIGUSR1);
	ASSERT_EQ(weft_signal_notify(a, &usr1, 1), 0);
	ASSERT_EQ(weft_signal_notify(b, &usr1, 1), 0);
	int64_t base = weft_num_goroutines();

	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(a), SIGUSR1);
	ASSERT_EQ(recv_sig(b), SIGUSR1);

	/* Stop on a: b still gets it (and the process lives: the signal is
	 * still caught), a gets nothing. */
	weft_signal_stop(a);
	ASSERT(!is_default(SIGUSR1));
	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(b), SIGUSR1);
	expect_quiet(a, "a stopped channel");

	/* a again, b stopped: only a. */
	ASSERT_EQ(weft_signal_notify(a, &usr1, 1), 0);
	weft_signal_stop(b);
	ASSERT(!is_default(SIGUSR1));
	send_self(SIGUSR1);
	ASSERT_EQ(recv_sig(a), SIGUSR1);
	expect_quiet(b, "b stopped");

	/* The last one stopped: the default is back. */
	weft_signal_stop(a);
	ASSERT(is_default(SIGUSR1));
	EXPECT_GOROUTINES(base);
	weft_chan_release(a);
	weft_chan_release(b);
	expect_channels_freed();
	printf("done\n");
	return 0;
}

CHILD(two_channels)
{
	return weft_main(two_main, NULL);
}

/*
 * Two channels registered for SIGUSR1 both receive it; after stop on one,
 * the other still does (and the signal is still caught: the process lives)
 * and the stopped one gets nothing; registered again while the other is
 * stopped, it alone receives; when the last one stops, SIG_DFL is back.
 * Guards: one registration per signal (the second replacing the first), stop
 * that restores the default while another channel still wants the signal
 * (the next SIGUSR1 kills the child), stop that leaves a channel registered.
 */
TEST_THREAD(two_channels_same_signal)
{
	run_child("two_channels");
}

/* ---------------------------------------------------------------- fork */

static int fork_main(void *arg)
{
	(void)arg;
	weft_chan *c = make_chan(sizeof(int), 4);
	const int term = SIGTERM;
	set_default(SIGTERM);
	ASSERT_EQ(weft_signal_notify(c, &term, 1), 0);
	pid_t pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		/* Between fork and exec (async-signal-safe calls only): a
		 * SIGTERM from a supervisor or a process-group kill. */
		kill(getpid(), SIGTERM);
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
		_exit(0);
	}
	int st = 0;
	weft_blocking_begin();
	pid_t w = waitpid(pid, &st, 0);
	weft_blocking_end();
	ASSERT_EQ(w, pid);
	ASSERT(WIFSIGNALED(st));
	ASSERT_EQ(WTERMSIG(st), SIGTERM);
	expect_quiet(c, "the parent's channel, after its child's SIGTERM");
	/* The parent's own SIGTERM still comes. */
	send_self(SIGTERM);
	ASSERT_EQ(recv_sig(c), SIGTERM);
	weft_signal_stop(c);
	weft_chan_release(c);
	expect_channels_freed();
	printf("done\n");
	return 0;
}

CHILD(fork_child)
{
	return weft_main(fork_main, NULL);
}

/*
 * A child made by fork() gets SIGTERM before it execs: it dies of it, as it
 * would without weft, and the parent's channel gets nothing; the parent's
 * own SIGTERM still reaches the channel. Guard: the handler inherited by
 * the child writing to the pipe it shares with the parent (the child lives
 * on and exits 0, and the parent's channel gets a SIGTERM nobody sent it).
 */
TEST_THREAD(forked_child_takes_its_own_signals)
{
	/* ThreadSanitizer runs a handler later, as a plain call with the mask
	 * emulated, so a signal the handler raises again after restoring the
	 * default action does not reach that action there. */
	if (TEST_TSAN)
		SKIP("ThreadSanitizer emulates signal delivery");
	run_child("fork_child");
}
