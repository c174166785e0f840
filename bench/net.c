/* SPDX-License-Identifier: MIT */
/*
 * net.c - TCPEchoRR and TCPEchoStream (Go's benchTCPEchoRR and
 * benchTCPEchoStream): an echo server on 127.0.0.1 with one goroutine per
 * connection (read up to its buffer, write back all it read, until EOF), and
 * clients that are parked on a start channel before the clock starts.
 * Connecting and closing are not timed; every socket is closed and every
 * server goroutine has exited before the next repetition, as in Go.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct echo_server {
	weft_fd *ln;
	char addr[WEFT_ADDRSTRLEN];
	int conns;
	size_t buf_size;
	weft_wg wg;          /* the accept loop and every connection goroutine */
	weft_chan *accepted; /* closed once all conns are accepted */
};

struct echo_conn {
	struct echo_server *s;
	weft_fd *c;
};

static void echo_conn_run(void *arg)
{
	struct echo_conn *ec = arg;
	char *buf = malloc(ec->s->buf_size);
	if (!buf)
		bench_fatal("out of memory");
	for (;;) {
		size_t k;
		int err = weft_read(ec->c, buf, ec->s->buf_size, &k);
		if (!err && k > 0 && weft_write(ec->c, buf, k, NULL))
			break;
		if (err || k == 0) {
			if (err && err != ECONNRESET)
				bench_fatal("echo read: %s", weft_strerror(err));
			break;
		}
	}
	free(buf);
	weft_fd_close(ec->c);
	weft_wg_done(&ec->s->wg);
	free(ec);
}

static void echo_accept_run(void *arg)
{
	struct echo_server *s = arg;
	for (int i = 0; i < s->conns; i++) {
		struct echo_conn *ec = malloc(sizeof *ec);
		if (!ec)
			bench_fatal("out of memory");
		ec->s = s;
		int err = weft_accept(s->ln, &ec->c, NULL, NULL);
		if (err)
			bench_fatal("accept: %s", weft_strerror(err));
		weft_wg_add(&s->wg, 1);
		bench_go(echo_conn_run, ec);
	}
	weft_fd_close(s->ln);
	weft_chan_close(s->accepted);
	weft_wg_done(&s->wg);
}

static void echo_start(struct echo_server *s, int conns, size_t buf_size)
{
	memset(s, 0, sizeof *s);
	s->conns = conns;
	s->buf_size = buf_size;
	int err = weft_listen("tcp", "127.0.0.1:0", &s->ln);
	if (!err)
		err = weft_fd_local_addr(s->ln, s->addr, sizeof s->addr);
	if (!err)
		err = weft_chan_make(&s->accepted, 1, 0);
	if (err)
		bench_fatal("echo server: %s", weft_strerror(err));
	weft_wg_add(&s->wg, 1);
	bench_go(echo_accept_run, s);
}

static void echo_dial(struct echo_server *s, weft_fd **cs, int n)
{
	for (int i = 0; i < n; i++) {
		int err = weft_dial("tcp", s->addr, &cs[i]);
		if (err)
			bench_fatal("dial %s: %s", s->addr, weft_strerror(err));
	}
	char x;
	weft_chan_recv(s->accepted, &x); /* closed: all accepted */
}

static void echo_close(struct echo_server *s, weft_fd **cs, int n)
{
	for (int i = 0; i < n; i++)
		weft_fd_close(cs[i]);
	weft_wg_wait(&s->wg);
	weft_chan_release(s->accepted);
}

/* ---------------------------------------------------------------- TCPEchoRR */

#define RR_C 64
#define RR_SIZE 64

struct rr_client {
	weft_fd *c;
	int64_t per;
	weft_wg *ready, *done;
	weft_chan *start;
};

static void rr_client_run(void *arg)
{
	struct rr_client *cl = arg;
	char wbuf[RR_SIZE], rbuf[RR_SIZE];
	memset(wbuf, 'x', sizeof wbuf);
	weft_wg_done(cl->ready);
	char x;
	weft_chan_recv(cl->start, &x);
	for (int64_t i = 0; i < cl->per; i++) {
		int err = weft_write(cl->c, wbuf, sizeof wbuf, NULL);
		if (!err)
			err = weft_read_full(cl->c, rbuf, sizeof rbuf, NULL);
		if (err)
			bench_fatal("TCPEchoRR client: %s", weft_strerror(err));
	}
	weft_wg_done(cl->done);
}

int64_t bench_tcp_echo_rr(int64_t n)
{
	struct echo_server s;
	echo_start(&s, RR_C, RR_SIZE);
	weft_fd *cs[RR_C];
	echo_dial(&s, cs, RR_C);
	weft_wg ready = WEFT_WG_INIT, done = WEFT_WG_INIT;
	weft_chan *start;
	if (weft_chan_make(&start, 1, 0))
		bench_fatal("out of memory");
	struct rr_client cl[RR_C];
	weft_wg_add(&ready, RR_C);
	weft_wg_add(&done, RR_C);
	for (int i = 0; i < RR_C; i++) {
		cl[i] = (struct rr_client){cs[i], n / RR_C, &ready, &done, start};
		bench_go(rr_client_run, &cl[i]);
	}
	weft_wg_wait(&ready);
	int64_t t0 = weft_now();
	weft_chan_close(start);
	weft_wg_wait(&done);
	int64_t d = weft_now() - t0;
	weft_chan_release(start);
	echo_close(&s, cs, RR_C);
	return d;
}

/* ---------------------------------------------------------------- TCPEchoStream */

#define STREAM_CHUNK (64 << 10)

struct stream_side {
	weft_fd *c;
	int64_t n;
	int writer;
	weft_wg *ready, *done;
	weft_chan *start;
};

static void stream_run(void *arg)
{
	struct stream_side *sd = arg;
	char *buf = malloc(STREAM_CHUNK);
	if (!buf)
		bench_fatal("out of memory");
	memset(buf, 'y', STREAM_CHUNK);
	weft_wg_done(sd->ready);
	char x;
	weft_chan_recv(sd->start, &x);
	for (int64_t i = 0; i < sd->n; i++) {
		int err = sd->writer ? weft_write(sd->c, buf, STREAM_CHUNK, NULL)
		                     : weft_read_full(sd->c, buf, STREAM_CHUNK, NULL);
		if (err)
			bench_fatal("TCPEchoStream %s: %s", sd->writer ? "write" : "read",
			            weft_strerror(err));
	}
	free(buf);
	weft_wg_done(sd->done);
}

int64_t bench_tcp_echo_stream(int64_t n)
{
	struct echo_server s;
	echo_start(&s, 1, STREAM_CHUNK);
	weft_fd *c;
	echo_dial(&s, &c, 1);
	weft_wg ready = WEFT_WG_INIT, done = WEFT_WG_INIT;
	weft_chan *start;
	if (weft_chan_make(&start, 1, 0))
		bench_fatal("out of memory");
	weft_wg_add(&ready, 2);
	weft_wg_add(&done, 2);
	struct stream_side w = {c, n, 1, &ready, &done, start};
	struct stream_side r = {c, n, 0, &ready, &done, start};
	bench_go(stream_run, &w);
	bench_go(stream_run, &r);
	weft_wg_wait(&ready);
	int64_t t0 = weft_now();
	weft_chan_close(start);
	weft_wg_wait(&done);
	int64_t d = weft_now() - t0;
	weft_chan_release(start);
	echo_close(&s, &c, 1);
	return d;
}
