/* SPDX-License-Identifier: MIT */
/*
 * 17_chat_server.c - a chat server: goroutines that own state and talk over
 * channels, the classic Go chat (The Go Programming Language, 8.10).
 *
 * Every line a client sends goes to every other client, prefixed with the
 * sender's name. The Go version:
 *
 *   func broadcaster() {
 *       clients := make(map[client]bool)
 *       for {
 *           select {
 *           case msg := <-messages: for cli := range clients { cli <- msg }
 *           case cli := <-entering: clients[cli] = true
 *           case cli := <-leaving:  delete(clients, cli); close(cli)
 *           }
 *       }
 *   }
 *
 * The set of clients has one owner, the broadcaster goroutine, so it needs
 * no lock: the others ask it for changes over the joining, leaving and
 * messages channels, and it selects over the three. Each connection has two
 * goroutines: a reader (handle_conn) that turns lines from the socket into
 * messages, and a writer (conn_writer) that drains the client's outgoing
 * channel into the socket.
 *
 * The slow-client policy. In Go's version `cli <- msg` blocks the
 * broadcaster, and so the whole room, on one client that stops reading. Here
 * each client's outgoing channel holds OUT_LINES lines and the broadcaster
 * only ever try-sends (weft_chan_trysend): a client whose buffer is full is
 * dropped on the spot. Its channel is closed and its socket's deadline set to
 * now (Go: conn.SetDeadline(time.Now())), which wakes its reader and writer
 * out of the calls they are blocked in. The kernel's send buffer is part of
 * a client's backlog too; the server bounds it with SO_SNDBUF, so a stuck
 * client costs little memory and is found out soon.
 *
 * Who frees what, in C, without a garbage collector: a connection's reader
 * owns its socket and its client record. It closes and frees them after the
 * writer has ended, and the writer ends only once the broadcaster has closed
 * the outgoing channel, the broadcaster's last use of the client. The
 * broadcaster holds its own reference to that channel, so that the close it
 * is still inside never meets a channel already released (see 07_channels).
 *
 * The demo, in one process:
 *  1. 50 clients join, each sends 10 messages, and each checks that it got
 *     the other 49 clients' 490 messages, in each sender's order. (With room
 *     for 1024 lines per client, nobody can be dropped here: a client is
 *     owed at most a welcome, 49 joins, 490 messages and 49 leaves.)
 *  2. the policy: a client that stops reading while a talker floods the
 *     room is dropped, and a client that keeps reading gets every line.
 *  3. shutdown: the server's context stops the accept loop and every reader;
 *     no goroutine is left (weft_num_goroutines() is back where it started).
 *
 * Run: ./17_chat_server                the demo; checks itself, exits 0 or 1
 *      ./17_chat_server serve ADDR     a chat server on ADDR (e.g. :7008)
 *                                      until Ctrl-C; chat with `nc HOST PORT`
 *                                      (the first line you type is your name)
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define SECOND (1000 * MS)

#define LINE_LEN 128   /* a line on the wire, '\n' included */
#define NAME_LEN 16    /* a client's name, NUL included */
#define OUT_LINES 1024 /* lines waiting for a client before it is dropped */
#define SNDBUF 32768   /* the kernel's send buffer per connection */
#define CLIENTS 50     /* part 1 */
#define MSGS 10        /* messages each client sends in part 1 */
#define BATCH 32       /* part 2: the talker's lines between acknowledgements */

/* What the channels carry, by value (a channel copies its elements). */
struct line {
	char text[LINE_LEN]; /* NUL-terminated, ending in '\n' */
};

struct client;
struct msg {
	struct client *from; /* compared, never followed: see the broadcaster */
	struct line line;
};

/* ---------------------------------------------------------------- reading lines */

/* A buffered line reader over a weft_fd (Go's bufio.Scanner). */
struct line_reader {
	weft_fd *fd;
	size_t start, end;
	char buf[4096];
};

/*
 * The next line, without its '\n' (nor a '\r' before it), into out; a line
 * longer than cap - 1 bytes comes in pieces. Returns 0, ENODATA at the end of
 * the stream, or the error of the read (ECANCELED when ctx is, ETIMEDOUT
 * past the descriptor's read deadline, ...).
 */
static int read_line(weft_ctx *ctx, struct line_reader *r, char *out, size_t cap)
{
	for (;;) {
		char *p = r->buf + r->start;
		size_t avail = r->end - r->start;
		char *nl = memchr(p, '\n', avail);
		size_t len = nl ? (size_t)(nl - p) : avail;
		if (nl || len >= cap - 1) {
			size_t take = len < cap - 1 ? len : cap - 1;
			memcpy(out, p, take);
			r->start += take + (nl && take == len); /* and the '\n' */
			if (take > 0 && out[take - 1] == '\r')
				take--;
			out[take] = 0;
			return 0;
		}
		memmove(r->buf, p, avail); /* keep the partial line, read more */
		r->start = 0;
		r->end = avail;
		size_t n;
		int err = weft_read_ctx(ctx, r->fd, r->buf + r->end, sizeof r->buf - r->end, &n);
		if (err)
			return err;
		if (n == 0)
			return ENODATA;
		r->end += n;
	}
}

static int write_line(weft_fd *fd, const char *text)
{
	char buf[LINE_LEN + 1];
	int len = snprintf(buf, sizeof buf, "%s\n", text);
	return weft_write(fd, buf, (size_t)len, NULL);
}

/* ---------------------------------------------------------------- the server */

struct server {
	weft_fd *ln;   /* owned by the accept loop */
	weft_ctx *ctx; /* cancelled to shut down */
	int verbose;
	weft_chan *joining;  /* struct client *: a client to add */
	weft_chan *leaving;  /* struct client *: a client to remove */
	weft_chan *messages; /* struct msg: a line for everybody else */
	weft_wg loop, conns, bcast;
	atomic_long dropped; /* for the demo to watch */
	atomic_int in_room;  /* clients between their join and their leave */
	char dropped_name[NAME_LEN];
};

struct client {
	struct server *s;
	weft_fd *fd;
	weft_chan *out; /* struct line, OUT_LINES of them */
	char name[NAME_LEN];
	weft_wg writer_done;
};

/* printf into a line, cut to fit, and end it with '\n'. */
static void line_set(struct line *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->text, sizeof l->text - 1, fmt, ap);
	va_end(ap);
	strcat(l->text, "\n"); /* fits: the text above left room for it */
}

/* The broadcaster's state: it alone touches this. */
struct room {
	struct server *s;
	struct client **c;
	int n, cap;
};

/* Take c out of the room, closing its outgoing channel: the broadcaster's
 * last use of c (its writer ends on the close, and then its reader frees
 * it), so nothing after the close may touch c. */
static void room_remove(struct room *r, int i, int drop)
{
	struct client *c = r->c[i];
	weft_chan *out = c->out;

	r->c[i] = r->c[--r->n];
	if (drop) {
		/* Wake its reader and writer out of whatever they wait in. */
		weft_fd_set_deadline(c->fd, weft_now());
		if (r->s->verbose)
			printf("  server: %s is %d lines behind: dropped\n", c->name, OUT_LINES);
		strcpy(r->s->dropped_name, c->name);
		atomic_fetch_add(&r->s->dropped, 1); /* after the name: the demo reads it */
	}
	weft_chan_close(out);
	weft_chan_release(out); /* the broadcaster's reference */
}

/* Give l to every client but `from`, dropping those that are full. */
static void room_send(struct room *r, const struct client *from, const struct line *l)
{
	for (int i = r->n - 1; i >= 0; i--) /* backwards: removal moves the last in */
		if (r->c[i] != from && weft_chan_trysend(r->c[i]->out, l) == EAGAIN)
			room_remove(r, i, 1);
}

void broadcaster(void *arg)
{
	struct room r = {.s = arg};
	struct server *s = r.s;

	for (;;) {
		struct client *c;
		struct msg m;
		struct line l;
		weft_case cs[] = {
			WEFT_RECV_CASE(s->joining, &c),
			WEFT_RECV_CASE(s->leaving, &c),
			WEFT_RECV_CASE(s->messages, &m),
		};
		int i;
		int err = weft_select(cs, 3, &i);
		if (err == EPIPE)
			break; /* joining closed: the server has shut down */
		switch (i) {
		case 0: /* joining */
			if (r.n == r.cap) {
				int ncap = r.cap ? 2 * r.cap : 16;
				struct client **nc = realloc(r.c, (size_t)ncap * sizeof *nc);
				if (!nc) {
					/* No room: as if dropped (it sees its socket end). */
					weft_fd_set_deadline(c->fd, weft_now());
					weft_chan_close(c->out);
					weft_chan_release(c->out);
					break;
				}
				r.c = nc;
				r.cap = ncap;
			}
			line_set(&l, "* %s joined", c->name);
			room_send(&r, c, &l);
			r.c[r.n++] = c;
			line_set(&l, "welcome %s", c->name);
			weft_chan_trysend(c->out, &l); /* its buffer is empty */
			break;
		case 1: /* leaving: gone already if it was dropped */
			for (int k = 0; k < r.n; k++)
				if (r.c[k] == c) {
					line_set(&l, "* %s left", c->name);
					room_remove(&r, k, 0);
					room_send(&r, NULL, &l);
					break;
				}
			break;
		case 2: /* a message */ room_send(&r, m.from, &m.line); break;
		}
	}
	free(r.c); /* empty: every reader has left before joining closes */
	weft_wg_done(&s->bcast);
}

/* The writer: the client's outgoing lines into its socket. */
void conn_writer(void *arg)
{
	struct client *c = arg;
	char buf[16 * LINE_LEN];
	struct line l;
	int err = 0;

	while (weft_chan_recv(c->out, &l) == 0) {
		if (err)
			continue; /* the socket failed: drain until the channel closes */
		/* This line, and whatever else is queued already, in one write
		 * (Go: a bufio.Writer flushed when the channel is empty). */
		size_t len = 0;
		do {
			size_t k = strlen(l.text);
			memcpy(buf + len, l.text, k);
			len += k;
		} while (len + LINE_LEN <= sizeof buf && weft_chan_tryrecv(c->out, &l) == 0);
		err = weft_write(c->fd, buf, len, NULL);
		if (err) /* ETIMEDOUT when dropped, EPIPE, ECONNRESET, ... */
			weft_fd_set_read_deadline(c->fd, weft_now()); /* and stop the reader */
	}
	weft_wg_done(&c->writer_done);
}

/* The reader, and the owner of the connection. */
void handle_conn(void *arg)
{
	struct client *c = arg;
	struct server *s = c->s;
	struct line_reader lr = {.fd = c->fd};
	char text[LINE_LEN - NAME_LEN - 2];
	struct msg m = {.from = c};

	/* The first line is the client's name: 10 s to send it. */
	weft_fd_set_read_deadline(c->fd, weft_now() + 10 * SECOND);
	int err = read_line(s->ctx, &lr, c->name, sizeof c->name);
	weft_fd_set_read_deadline(c->fd, 0);
	if (err == 0 && c->name[0] == 0)
		err = EINVAL;
	if (err == 0)
		err = weft_chan_make(&c->out, sizeof(struct line), OUT_LINES);
	if (err == 0) {
		weft_wg_add(&c->writer_done, 1);
		if ((err = weft_go(conn_writer, c)) != 0) {
			weft_wg_done(&c->writer_done);
			weft_chan_release(c->out);
		}
	}
	if (err) {
		weft_fd_close(c->fd);
		free(c);
		weft_wg_done(&s->conns);
		return;
	}
	if (s->verbose)
		printf("  server: %s joined\n", c->name);
	weft_chan_retain(c->out); /* the broadcaster's reference */
	weft_chan_send(s->joining, &c);
	atomic_fetch_add(&s->in_room, 1);

	/* Unbuffered messages: each send returns once the broadcaster has the
	 * line, so all of them are handled before our leave below. */
	while ((err = read_line(s->ctx, &lr, text, sizeof text)) == 0) {
		line_set(&m.line, "%s: %s", c->name, text);
		weft_chan_send(s->messages, &m);
	}
	if (s->verbose)
		printf("  server: %s left (%s)\n", c->name,
		       err == ENODATA ? "end of stream" : weft_strerror(err));

	/* Whatever is queued for a client that left can go nowhere: the
	 * deadline fails the writer's write at once. */
	weft_fd_set_write_deadline(c->fd, weft_now());
	weft_chan_send(s->leaving, &c);
	atomic_fetch_sub(&s->in_room, 1); /* the broadcaster has our leave */
	weft_wg_wait(&c->writer_done); /* after the broadcaster's close */
	weft_fd_close(c->fd);
	weft_chan_release(c->out);
	free(c);
	weft_wg_done(&s->conns);
}

void accept_loop(void *arg)
{
	struct server *s = arg;
	int sndbuf = SNDBUF;

	for (;;) {
		weft_fd *fd;
		int err = weft_accept_ctx(s->ctx, s->ln, &fd, NULL, NULL);
		if (err == ECANCELED)
			break;
		if (err == EMFILE || err == ENFILE) {
			if (weft_sleep_ctx(s->ctx, 10 * MS) != 0)
				break;
			continue;
		}
		if (err) {
			fprintf(stderr, "  server: accept: %s\n", weft_strerror(err));
			break;
		}
		setsockopt(weft_fd_get(fd), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
		struct client *c = calloc(1, sizeof *c);
		if (!c) {
			weft_fd_close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		weft_wg_add(&s->conns, 1);
		if (weft_go(handle_conn, c) != 0) {
			weft_wg_done(&s->conns);
			weft_fd_close(fd);
			free(c);
		}
	}
	weft_fd_close(s->ln);
	weft_wg_done(&s->loop);
}

static int server_start(struct server *s, const char *addr, char *bound, size_t len)
{
	int err;

	if ((err = weft_listen("tcp", addr, &s->ln)) != 0) {
		fprintf(stderr, "listen %s: %s\n", addr, weft_strerror(err));
		return err;
	}
	weft_fd_local_addr(s->ln, bound, len);
	if ((err = weft_ctx_with_cancel(weft_ctx_background(), &s->ctx)) != 0 ||
	    (err = weft_chan_make(&s->joining, sizeof(struct client *), 0)) != 0 ||
	    (err = weft_chan_make(&s->leaving, sizeof(struct client *), 0)) != 0 ||
	    (err = weft_chan_make(&s->messages, sizeof(struct msg), 0)) != 0) {
		fprintf(stderr, "server: %s\n", weft_strerror(err));
		return err; /* a demo: the process exits now */
	}
	weft_wg_add(&s->bcast, 1);
	weft_wg_add(&s->loop, 1);
	if ((err = weft_go(broadcaster, s)) != 0 || (err = weft_go(accept_loop, s)) != 0)
		fprintf(stderr, "server: %s\n", weft_strerror(err));
	return err;
}

static void server_shutdown(struct server *s)
{
	weft_ctx_cancel(s->ctx); /* the accept loop and every reader stop */
	weft_wg_wait(&s->loop);
	weft_wg_wait(&s->conns);     /* each has left the room */
	weft_chan_close(s->joining); /* nobody will send any more */
	weft_wg_wait(&s->bcast);
	weft_chan_release(s->joining);
	weft_chan_release(s->leaving);
	weft_chan_release(s->messages);
	weft_ctx_release(s->ctx);
}

/* ---------------------------------------------------------------- part 1: a full room */

struct chatter {
	const char *addr;
	int id;
	weft_wg *joined;   /* done once the server has welcomed us */
	weft_chan *start;  /* closed when everybody has joined */
	int next[CLIENTS]; /* the next message number expected from each */
	int received;
	const char *failed;
	int err;
	weft_wg *wg;
};

/* Dial, say our name, wait for the welcome. */
static int join(const char *addr, const char *name, weft_fd **fd, struct line_reader *lr)
{
	char line[LINE_LEN];
	int err = weft_dial_until("tcp", addr, weft_now() + 10 * SECOND, fd);
	if (err)
		return err;
	lr->fd = *fd;
	lr->start = lr->end = 0;
	err = write_line(*fd, name);
	while (err == 0 && (err = read_line(weft_ctx_background(), lr, line, sizeof line)) == 0)
		if (strncmp(line, "welcome ", 8) == 0)
			return 0;
	weft_fd_close(*fd);
	return err;
}

void chatter(void *arg)
{
	struct chatter *ch = arg;
	struct line_reader lr;
	char name[NAME_LEN], line[LINE_LEN];
	weft_fd *fd;
	int err, joined = 0;

	snprintf(name, sizeof name, "c%d", ch->id);
	if ((err = join(ch->addr, name, &fd, &lr)) != 0) {
		ch->failed = "join";
		goto out;
	}
	weft_wg_done(ch->joined);
	joined = 1;
	weft_chan_recv(ch->start, NULL); /* EPIPE: the start signal */

	for (int k = 0; k < MSGS && err == 0; k++) {
		snprintf(line, sizeof line, "msg %d", k);
		err = write_line(fd, line);
	}
	if (err) {
		ch->failed = "write";
		goto closing;
	}
	/* Everything the others sent, but not forever. */
	weft_fd_set_read_deadline(fd, weft_now() + 30 * SECOND);
	while (ch->received < (CLIENTS - 1) * MSGS) {
		int from, k;
		if ((err = read_line(weft_ctx_background(), &lr, line, sizeof line)) != 0) {
			ch->failed = "read";
			break;
		}
		if (line[0] == '*')
			continue; /* someone joined or left */
		if (sscanf(line, "c%d: msg %d", &from, &k) != 2 || from < 0 || from >= CLIENTS ||
		    from == ch->id || k != ch->next[from]) {
			ch->failed = "an unexpected line";
			fprintf(stderr, "  c%d: unexpected line \"%s\"\n", ch->id, line);
			break;
		}
		ch->next[from]++;
		ch->received++;
	}
closing:
	weft_fd_close(fd);
out:
	ch->err = err;
	if (!joined)
		weft_wg_done(ch->joined);
	weft_wg_done(ch->wg);
}

static int full_room(const char *addr)
{
	static struct chatter ch[CLIENTS];
	weft_wg joined = WEFT_WG_INIT, wg = WEFT_WG_INIT;
	weft_chan *start;
	int ok = 1, total = 0;

	printf("1. %d clients, %d messages each\n", CLIENTS, MSGS);
	if (weft_chan_make(&start, 0, 0) != 0)
		return 0;
	int64_t t0 = weft_now();
	for (int i = 0; i < CLIENTS; i++) {
		ch[i] = (struct chatter){
			.addr = addr, .id = i, .joined = &joined, .start = start, .wg = &wg};
		weft_wg_add(&joined, 1);
		weft_wg_add(&wg, 1);
		if (weft_go(chatter, &ch[i]) != 0) {
			weft_wg_done(&joined);
			weft_wg_done(&wg);
			ch[i].failed = "start";
		}
	}
	weft_wg_wait(&joined); /* so that every message finds every client */
	weft_chan_close(start);
	weft_wg_wait(&wg);
	for (int i = 0; i < CLIENTS; i++) {
		total += ch[i].received;
		if (ch[i].failed) {
			fprintf(stderr, "  c%d: %s: %s (%d received)\n", i, ch[i].failed,
			        weft_strerror(ch[i].err), ch[i].received);
			ok = 0;
		}
	}
	printf("  every client got the other %d clients' messages in order: %s "
	       "(%d lines in %.1f ms)\n",
	       CLIENTS - 1, ok && total == CLIENTS * (CLIENTS - 1) * MSGS ? "yes" : "NO", total,
	       (weft_now() - t0) / 1e6);
	weft_chan_release(start);
	return ok && total == CLIENTS * (CLIENTS - 1) * MSGS;
}

/* ---------------------------------------------------------------- part 2: a slow client */

struct flood {
	const char *addr;
	struct server *s;   /* the demo watches the server's drop counter */
	weft_chan *acks;    /* int: the fast reader's count, every BATCH lines */
	weft_chan *go_read; /* closed: the slow client may read now */
	weft_wg joined, wg;
	int sent;     /* talker: flood lines sent */
	int fast_got; /* fast: flood lines received, in order */
	int slow_got; /* slow: flood lines received before the end */
	int fast_err, slow_err, talker_err;
	int slow_ended; /* slow: its stream ended (the server hung up) */
};

void slow_reader(void *arg)
{
	struct flood *f = arg;
	struct line_reader lr;
	char line[LINE_LEN];
	weft_fd *fd;

	f->slow_err = join(f->addr, "slow", &fd, &lr);
	weft_wg_done(&f->joined);
	if (f->slow_err) {
		weft_wg_done(&f->wg);
		return;
	}
	weft_chan_recv(f->go_read, NULL); /* reads nothing until told */
	weft_fd_set_read_deadline(fd, weft_now() + 30 * SECOND);
	while ((f->slow_err = read_line(weft_ctx_background(), &lr, line, sizeof line)) == 0)
		if (strncmp(line, "talker: flood ", 14) == 0)
			f->slow_got++;
	if (f->slow_err == ENODATA) {
		f->slow_ended = 1;
		f->slow_err = 0;
	}
	weft_fd_close(fd);
	weft_wg_done(&f->wg);
}

void fast_reader(void *arg)
{
	struct flood *f = arg;
	struct line_reader lr;
	char line[LINE_LEN];
	weft_fd *fd;

	f->fast_err = join(f->addr, "fast", &fd, &lr);
	weft_wg_done(&f->joined);
	if (f->fast_err) {
		weft_wg_done(&f->wg);
		return;
	}
	weft_fd_set_read_deadline(fd, weft_now() + 30 * SECOND);
	while ((f->fast_err = read_line(weft_ctx_background(), &lr, line, sizeof line)) == 0) {
		int k;
		if (strcmp(line, "talker: bye") == 0)
			break;
		if (sscanf(line, "talker: flood %d", &k) != 1)
			continue; /* announcements */
		if (k != f->fast_got) {
			f->fast_err = EPROTO; /* lost or out of order */
			break;
		}
		if (++f->fast_got % BATCH == 0 &&
		    weft_chan_send_until(f->acks, &f->fast_got, weft_now() + 10 * SECOND) != 0) {
			f->fast_err = ETIMEDOUT; /* the talker stopped waiting */
			break;
		}
	}
	weft_fd_close(fd);
	weft_wg_done(&f->wg);
}

void talker(void *arg)
{
	struct flood *f = arg;
	struct line_reader lr;
	char line[LINE_LEN];
	weft_fd *fd;
	int got;

	if ((f->talker_err = join(f->addr, "talker", &fd, &lr)) != 0) {
		weft_wg_done(&f->wg);
		return;
	}
	/* Flood until the server drops someone (or 20 s). In batches, each
	 * waiting for the fast reader to have it all, so the fast reader is
	 * never more than a batch behind: it cannot be the one dropped. */
	int64_t until = weft_now() + 20 * SECOND;
	while (atomic_load(&f->s->dropped) == 0 && weft_now() < until && f->talker_err == 0) {
		for (int k = 0; k < BATCH && f->talker_err == 0; k++, f->sent++) {
			snprintf(
				line, sizeof line, "flood %d %.80s", f->sent,
				"................................................................"
				"................................................................");
			f->talker_err = write_line(fd, line);
		}
		if (f->talker_err == 0 &&
		    weft_chan_recv_until(f->acks, &got, weft_now() + 10 * SECOND) != 0)
			f->talker_err = ETIMEDOUT;
	}
	if (f->talker_err == 0)
		f->talker_err = write_line(fd, "bye");
	weft_fd_close(fd);
	weft_wg_done(&f->wg);
}

static int slow_client(struct server *s, const char *addr)
{
	static struct flood f;
	int ok;

	printf("2. a client that stops reading, while a talker floods the room\n");
	f.addr = addr;
	f.s = s;
	if (weft_chan_make(&f.acks, sizeof(int), 0) != 0 || weft_chan_make(&f.go_read, 0, 0) != 0)
		return 0;
	/* slow and fast join first, then the talker starts. */
	weft_wg_add(&f.joined, 2);
	weft_wg_add(&f.wg, 3);
	if (weft_go(slow_reader, &f) != 0 || weft_go(fast_reader, &f) != 0)
		return 0;
	weft_wg_wait(&f.joined);
	int64_t t0 = weft_now();
	if (weft_go(talker, &f) != 0)
		return 0;
	/* Let the slow client read once it has been dropped (or the talker
	 * gave up): its socket then ends after what the server had sent. */
	while (atomic_load(&s->dropped) == 0 && weft_now() < t0 + 25 * SECOND)
		weft_sleep(5 * MS);
	weft_chan_close(f.go_read);
	weft_wg_wait(&f.wg);

	int dropped = atomic_load(&s->dropped) == 1 && strcmp(s->dropped_name, "slow") == 0;
	printf("  the talker sent %d lines in %.0f ms; the server dropped: %s\n", f.sent,
	       (weft_now() - t0) / 1e6, atomic_load(&s->dropped) ? s->dropped_name : "nobody");
	printf("  fast got %d of them, in order; slow got %d, then its connection %s\n", f.fast_got,
	       f.slow_got,
	       f.slow_ended ? "ended"
	       : f.slow_err ? weft_strerror(f.slow_err)
	                    : "went on?!");
	ok = dropped && f.talker_err == 0 && f.fast_err == 0 && f.fast_got == f.sent &&
	     f.slow_err == 0 && f.slow_ended && f.slow_got < f.sent;
	if (!ok)
		fprintf(stderr, "  talker: %s, fast: %s, slow: %s\n", weft_strerror(f.talker_err),
		        weft_strerror(f.fast_err), weft_strerror(f.slow_err));
	weft_chan_release(f.acks);
	weft_chan_release(f.go_read);
	return ok;
}

/* ---------------------------------------------------------------- modes */

static int demo(void)
{
	static struct server s;
	char addr[WEFT_ADDRSTRLEN];
	int64_t before = weft_num_goroutines();

	if (server_start(&s, "127.0.0.1:0", addr, sizeof addr) != 0)
		return 1;
	printf("chat server on %s; %d lines of room per client\n", addr, OUT_LINES);
	int ok1 = full_room(addr);
	/* Part 1's clients have hung up, but the server may not have seen
	 * every end of stream yet (a busy machine): one still in the room
	 * when the flood starts would be the one dropped. */
	for (int64_t until = weft_now() + 10 * SECOND;
	     atomic_load(&s.in_room) > 0 && weft_now() < until;)
		weft_sleep(1 * MS);
	if (atomic_load(&s.in_room) > 0) {
		fprintf(stderr, "  %d clients of part 1 still in the room after 10 s\n",
		        atomic_load(&s.in_room));
		ok1 = 0;
	}
	int ok2 = slow_client(&s, addr);

	printf("3. shutdown\n");
	server_shutdown(&s);
	/* A goroutine that has signalled a WaitGroup may take a moment to
	 * finish returning: give them a second. */
	int64_t after = weft_num_goroutines();
	for (int64_t until = weft_now() + SECOND; after != before && weft_now() < until;) {
		weft_sleep(1 * MS);
		after = weft_num_goroutines();
	}
	printf("  goroutines: %lld before the server, %lld after it\n", (long long)before,
	       (long long)after);
	int ok3 = after == before;

	if (!(ok1 && ok2 && ok3)) {
		fprintf(stderr, "17_chat_server: FAILED (room %d, slow client %d, shutdown %d)\n",
		        ok1, ok2, ok3);
		return 1;
	}
	return 0;
}

static int serve(const char *addr)
{
	static struct server s;
	static const int sigs[] = {SIGINT, SIGTERM};
	char bound[WEFT_ADDRSTRLEN];
	weft_chan *sigch;
	int sig, err;

	if ((err = weft_chan_make(&sigch, sizeof(int), 1)) != 0) {
		fprintf(stderr, "signals: %s\n", weft_strerror(err));
		return 1;
	}
	if ((err = weft_signal_notify(sigch, sigs, 2)) != 0) {
		fprintf(stderr, "signals: %s\n", weft_strerror(err));
		weft_chan_release(sigch);
		return 1;
	}
	s.verbose = 1;
	if (server_start(&s, addr, bound, sizeof bound) != 0) {
		weft_signal_stop(sigch);
		weft_chan_release(sigch);
		return 1;
	}
	printf("chat server on %s; Ctrl-C stops it\n", bound);
	fflush(stdout);
	weft_chan_recv(sigch, &sig);
	printf("\n%s: shutting down\n", strsignal(sig));
	server_shutdown(&s);
	weft_signal_stop(sigch);
	weft_chan_release(sigch);
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
	fprintf(stderr, "usage: %s [serve ADDR]\n", a->argv[0]);
	return 2;
}

int main(int argc, char **argv)
{
	struct args a = {argc, argv};
	return weft_main(run, &a);
}
