/* SPDX-License-Identifier: MIT */
/*
 * 18_http_fetch.c - fetch many URLs at once, each with its own timeout, at
 * most a few at a time: a context per request on every network call (Go's
 * http.Client with context.WithTimeout, and a semaphore).
 *
 * The Go program this follows:
 *
 *   sem := make(chan struct{}, 5)
 *   for _, url := range urls {
 *       sem <- struct{}{}                       // wait for a free slot
 *       wg.Add(1)
 *       go func(url string) {
 *           defer func() { <-sem; wg.Done() }()
 *           ctx, cancel := context.WithTimeout(context.Background(), timeout)
 *           defer cancel()
 *           req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
 *           resp, err := http.DefaultClient.Do(req)  // dial, write, read
 *           ...
 *       }(url)
 *   }
 *   wg.Wait()
 *
 * One context bounds the whole request: weft_dial_ctx, weft_write_ctx and
 * weft_read_ctx each give up with ETIMEDOUT as soon as the request's deadline
 * passes, wherever it is at that moment, so a request takes at most TIMEOUT
 * however many calls it makes. (A deadline per call, as weft_read_until,
 * would restart with every call.)
 *
 * The program starts its own HTTP server on 127.0.0.1 (one goroutine per
 * connection, as in 16_tcp_echo) and fetches 20 URLs from it, 5 at a time:
 *   /hello        a short greeting
 *   /bytes/N      N bytes of a pattern the client can check
 *   /slow         answers after 3 s: past the client's 1 s timeout
 *   /missing      404
 * It prints status, size and time for each, and checks that every fast URL
 * came back with the right body, that the slow ones timed out at about
 * 1 s, and that no more than 5 ran at once. The server's /slow handler
 * waits in a read on the connection with its own context (a 3 s timeout
 * under the server's): the read ends early when the client hangs up or the
 * server shuts down (Go: select on time.After and r.Context().Done()).
 *
 * HTTP itself is parsed by libhttp-parser (Node.js's original parser, Debian
 * package libhttp-parser-dev), requests on the server side and responses on
 * the client side: feed it whatever each read returned and it calls back
 * with the URL, the body and the end of the message. Without the library,
 * CMake skips this example and says how to get it.
 *
 * Run: ./18_http_fetch
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <http_parser.h>
#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define SECOND (1000 * MS)

#define TIMEOUT (1 * SECOND) /* per request, client side */
#define SLOW (3 * SECOND)    /* what /slow takes, server side */
#define LIMIT 5              /* requests at once */
#define MAX_BODY ((size_t)4 << 20)

/* ---------------------------------------------------------------- what is served */

/*
 * The body the server sends for path (and so what the client expects):
 * 0 and a malloc'd body, ENOENT for an unknown path, ENOMEM.
 */
static int make_body(const char *path, size_t plen, char **body, size_t *len)
{
	char p[64];
	unsigned long n;
	char end;

	if (plen >= sizeof p)
		return ENOENT;
	memcpy(p, path, plen);
	p[plen] = 0;
	if (strcmp(p, "/hello") == 0) {
		*body = strdup("hello, world\n");
		*len = 13;
		return *body ? 0 : ENOMEM;
	}
	if (sscanf(p, "/bytes/%lu%c", &n, &end) == 1 && n <= MAX_BODY) {
		/* A pattern that would show a lost, doubled or moved byte. */
		if (!(*body = malloc(n ? n : 1)))
			return ENOMEM;
		for (unsigned long i = 0; i < n; i++)
			(*body)[i] = (char)('a' + (i * 7 + i / 26) % 26);
		*len = n;
		return 0;
	}
	return ENOENT;
}

/* ---------------------------------------------------------------- the server */

struct server {
	weft_fd *ln;
	weft_ctx *ctx;
	weft_wg loop, conns;
	atomic_int served, abandoned; /* /slow requests whose client hung up */
};

struct conn {
	struct server *s;
	weft_fd *fd;
};

/* What the request parser gathers. */
struct request {
	char url[512];
	size_t url_len;
	int complete;
};

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct request *r = p->data;

	if (r->url_len + len >= sizeof r->url)
		return 1;                     /* too long: the parser stops with an error */
	memcpy(r->url + r->url_len, at, len); /* may come in pieces */
	r->url_len += len;
	return 0;
}

static int on_request_complete(http_parser *p)
{
	((struct request *)p->data)->complete = 1;
	return 0;
}

static const http_parser_settings request_settings = {
	.on_url = on_url,
	.on_message_complete = on_request_complete,
};

static void respond(struct conn *c, int status, const char *reason, const char *body, size_t len)
{
	char head[256];
	int hl = snprintf(head, sizeof head,
	                  "HTTP/1.1 %d %s\r\n"
	                  "Content-Type: text/plain\r\n"
	                  "Content-Length: %zu\r\n"
	                  "Connection: close\r\n\r\n",
	                  status, reason, len);
	struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, len}};

	/* Head and body in one call; 5 s for a client to take it all. */
	weft_fd_set_write_deadline(c->fd, weft_now() + 5 * SECOND);
	weft_writev_ctx(c->s->ctx, c->fd, iov, 2, NULL); /* an error: the client left */
}

/* /slow: 3 s, unless the client hangs up or the server shuts down first. */
static void serve_slow(struct conn *c)
{
	weft_ctx *ctx;
	char byte;
	size_t n;

	if (weft_ctx_with_timeout(c->s->ctx, SLOW, &ctx) != 0)
		return;
	/* A client sends nothing after its request, so this read ends with
	 * the context (ETIMEDOUT: time to answer; ECANCELED: shutdown) or
	 * with the end of the stream (n == 0: the client gave up). */
	int err = weft_read_ctx(ctx, c->fd, &byte, 1, &n);
	weft_ctx_release(ctx);
	if (err == ETIMEDOUT)
		respond(c, 200, "OK", "sorry for the wait\n", 19);
	else if (err == 0 && n == 0)
		atomic_fetch_add(&c->s->abandoned, 1);
}

void handle_conn(void *arg)
{
	struct conn *c = arg;
	struct request r = {0};
	http_parser p;
	char buf[4096];

	http_parser_init(&p, HTTP_REQUEST);
	p.data = &r;
	/* A whole request within 5 s (Go: http.Server.ReadTimeout). */
	weft_fd_set_read_deadline(c->fd, weft_now() + 5 * SECOND);
	while (!r.complete) {
		size_t n;
		if (weft_read_ctx(c->s->ctx, c->fd, buf, sizeof buf, &n) != 0 || n == 0)
			goto out; /* timed out, shutting down, or the client left */
		http_parser_execute(&p, &request_settings, buf, n);
		if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
			respond(c, 400, "Bad Request", "bad request\n", 12);
			goto out;
		}
	}
	weft_fd_set_read_deadline(c->fd, 0);
	atomic_fetch_add(&c->s->served, 1);

	struct http_parser_url u;
	http_parser_url_init(&u);
	if (p.method != HTTP_GET) {
		respond(c, 405, "Method Not Allowed", "GET only\n", 9);
	} else if (http_parser_parse_url(r.url, r.url_len, 0, &u) != 0 ||
	           !(u.field_set & (1 << UF_PATH))) {
		respond(c, 400, "Bad Request", "bad URL\n", 8);
	} else {
		const char *path = r.url + u.field_data[UF_PATH].off;
		size_t plen = u.field_data[UF_PATH].len;
		char *body;
		size_t len;
		int err;
		if (plen == 5 && memcmp(path, "/slow", 5) == 0)
			serve_slow(c);
		else if ((err = make_body(path, plen, &body, &len)) == 0) {
			respond(c, 200, "OK", body, len);
			free(body);
		} else if (err == ENOENT)
			respond(c, 404, "Not Found", "not found\n", 10);
		else
			respond(c, 500, "Internal Server Error", "no memory\n", 10);
	}
out:
	weft_fd_close(c->fd);
	weft_wg_done(&c->s->conns);
	free(c);
}

void accept_loop(void *arg)
{
	struct server *s = arg;

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
			fprintf(stderr, "server: accept: %s\n", weft_strerror(err));
			break;
		}
		struct conn *c = malloc(sizeof *c);
		if (!c) {
			weft_fd_close(fd);
			continue;
		}
		*c = (struct conn){s, fd};
		weft_wg_add(&s->conns, 1);
		if (weft_go(handle_conn, c) != 0) {
			weft_wg_done(&s->conns);
			weft_fd_close(fd);
			free(c);
		}
	}
	weft_fd_close(s->ln); /* the loop owns the listener (see 16_tcp_echo) */
	weft_wg_done(&s->loop);
}

/* ---------------------------------------------------------------- the client */

struct fetch {
	char url[128];
	const char *path; /* inside url */
	int expect_slow;
	/* results */
	int err; /* 0, or why there is no response */
	int status;
	size_t size;
	int body_ok;
	int64_t took;
};

/* What the response parser gathers. */
struct response {
	char *body;
	size_t len, cap;
	int complete;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct response *r = p->data;

	if (r->len + len > r->cap) {
		size_t ncap = r->cap ? 2 * r->cap : 16384;
		while (ncap < r->len + len)
			ncap *= 2;
		char *nb = ncap <= 2 * MAX_BODY ? realloc(r->body, ncap) : NULL;
		if (!nb)
			return 1;
		r->body = nb;
		r->cap = ncap;
	}
	memcpy(r->body + r->len, at, len);
	r->len += len;
	return 0;
}

static int on_response_complete(http_parser *p)
{
	((struct response *)p->data)->complete = 1;
	return 0;
}

static const http_parser_settings response_settings = {
	.on_body = on_body,
	.on_message_complete = on_response_complete,
};

/* GET f->url, all of it bounded by ctx. Fills f's results. */
static void http_get(weft_ctx *ctx, struct fetch *f)
{
	struct http_parser_url u;
	struct response r = {0};
	http_parser p;
	char hostport[300], req[512], buf[16384];
	weft_fd *fd;

	http_parser_url_init(&u);
	if (http_parser_parse_url(f->url, strlen(f->url), 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_HOST))) {
		f->err = EINVAL;
		return;
	}
	int hl = (int)u.field_data[UF_HOST].len;
	const char *host = f->url + u.field_data[UF_HOST].off;
	snprintf(hostport, sizeof hostport, "%.*s:%u", hl, host,
	         u.field_set & (1 << UF_PORT) ? u.port : 80u);
	int rl = snprintf(req, sizeof req,
	                  "GET %s HTTP/1.1\r\n"
	                  "Host: %s\r\n"
	                  "User-Agent: weft-fetch\r\n"
	                  "Connection: close\r\n\r\n",
	                  f->path, hostport);

	/* Three network calls, one deadline. */
	if ((f->err = weft_dial_ctx(ctx, "tcp", hostport, &fd)) != 0)
		return;
	if ((f->err = weft_write_ctx(ctx, fd, req, (size_t)rl, NULL)) != 0)
		goto out;
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &r;
	while (!r.complete) {
		size_t n;
		if ((f->err = weft_read_ctx(ctx, fd, buf, sizeof buf, &n)) != 0)
			goto out;
		/* n == 0: the end of the stream, which the parser is told too
		 * (it ends a response that has no Content-Length). */
		http_parser_execute(&p, &response_settings, buf, n);
		if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
			fprintf(stderr, "  %s: %s\n", f->path,
			        http_errno_description(HTTP_PARSER_ERRNO(&p)));
			f->err = EPROTO;
			goto out;
		}
		if (n == 0 && !r.complete) {
			f->err = EPROTO; /* cut short */
			goto out;
		}
	}
	f->status = (int)p.status_code;
	f->size = r.len;
	if (f->status == 200) {
		char *want;
		size_t wlen;
		/* The path part of the URL: no query. */
		if ((u.field_set & (1 << UF_PATH)) &&
		    make_body(f->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len, &want,
		              &wlen) == 0) {
			f->body_ok =
				wlen == r.len && (wlen == 0 || memcmp(want, r.body, wlen) == 0);
			free(want);
		}
	}
out:
	weft_fd_close(fd);
	free(r.body);
}

struct fetcher {
	weft_sem slots; /* LIMIT of them */
	weft_wg wg;
	atomic_int running, peak;
};

struct job {
	struct fetcher *fr;
	struct fetch *f;
};

void fetch_one(void *arg)
{
	struct job *j = arg;
	struct fetcher *fr = j->fr;
	weft_ctx *ctx;

	int now = atomic_fetch_add(&fr->running, 1) + 1;
	for (int peak = atomic_load(&fr->peak);
	     now > peak && !atomic_compare_exchange_weak(&fr->peak, &peak, now);)
		;
	int64_t t0 = weft_now();
	/* Go: ctx, cancel := context.WithTimeout(ctx, timeout); defer cancel() */
	j->f->err = weft_ctx_with_timeout(weft_ctx_background(), TIMEOUT, &ctx);
	if (j->f->err == 0) {
		http_get(ctx, j->f);
		weft_ctx_release(ctx);
	}
	j->f->took = weft_now() - t0;
	atomic_fetch_sub(&fr->running, 1);
	weft_sem_release(&fr->slots, 1); /* the slot, for the next URL */
	weft_wg_done(&fr->wg);
}

/* ---------------------------------------------------------------- the demo */

static int run(void *unused)
{
	static const char *paths[] = {
		"/hello",        "/bytes/0",      "/bytes/1",      "/slow",         "/bytes/100",
		"/bytes/1000",   "/bytes/4096",   "/missing",      "/bytes/10000",  "/slow",
		"/bytes/65536",  "/bytes/100000", "/bytes/250000", "/hello?lang=c", "/slow",
		"/bytes/500000", "/bytes/400000", "/bytes/12345",  "/bytes/70000",  "/bytes/3",
	};
	enum { N = sizeof paths / sizeof paths[0] };
	static struct server s;
	static struct fetch f[N];
	static struct job jobs[N];
	static struct fetcher fr = {.slots = WEFT_SEM_INIT(LIMIT)};
	char addr[WEFT_ADDRSTRLEN];
	int err, ok = 1;

	(void)unused;
	if ((err = weft_listen("tcp", "127.0.0.1:0", &s.ln)) != 0 ||
	    (err = weft_fd_local_addr(s.ln, addr, sizeof addr)) != 0 ||
	    (err = weft_ctx_with_cancel(weft_ctx_background(), &s.ctx)) != 0) {
		fprintf(stderr, "server: %s\n", weft_strerror(err));
		return 1;
	}
	weft_wg_add(&s.loop, 1);
	if ((err = weft_go(accept_loop, &s)) != 0) {
		fprintf(stderr, "server: %s\n", weft_strerror(err));
		return 1;
	}
	printf("HTTP server on %s; %d URLs, %d at a time, %lld ms each at most\n", addr, N, LIMIT,
	       (long long)(TIMEOUT / MS));

	int64_t t0 = weft_now();
	for (int i = 0; i < N; i++) {
		int pl = snprintf(f[i].url, sizeof f[i].url, "http://%s", addr);
		snprintf(f[i].url + pl, sizeof f[i].url - (size_t)pl, "%s", paths[i]);
		f[i].path = f[i].url + pl;
		f[i].expect_slow = strcmp(paths[i], "/slow") == 0;
		jobs[i] = (struct job){&fr, &f[i]};
		weft_sem_acquire(&fr.slots, 1); /* Go: sem <- struct{}{} */
		weft_wg_add(&fr.wg, 1);
		if (weft_go(fetch_one, &jobs[i]) != 0) {
			f[i].err = EAGAIN;
			weft_sem_release(&fr.slots, 1);
			weft_wg_done(&fr.wg);
		}
	}
	weft_wg_wait(&fr.wg);
	int64_t total = weft_now() - t0;

	for (int i = 0; i < N; i++) {
		int good;
		if (f[i].err)
			printf("  %-16s   %-9s %10s %8.1f ms\n", f[i].path,
			       f[i].err == ETIMEDOUT ? "timed out" : weft_strerror(f[i].err), "",
			       f[i].took / 1e6);
		else
			printf("  %-16s   %-9d %8zu B %8.1f ms%s\n", f[i].path, f[i].status,
			       f[i].size, f[i].took / 1e6,
			       f[i].status == 200 ? f[i].body_ok ? "  body ok" : "  WRONG BODY"
			                          : "");
		if (f[i].expect_slow) /* cut at the timeout, long before 3 s */
			good = f[i].err == ETIMEDOUT && f[i].took >= TIMEOUT - MS &&
			       f[i].took < SLOW - 200 * MS;
		else if (strcmp(f[i].path, "/missing") == 0)
			good = f[i].err == 0 && f[i].status == 404;
		else
			good = f[i].err == 0 && f[i].status == 200 && f[i].body_ok;
		if (!good)
			fprintf(stderr, "  %s: not as expected\n", f[i].path);
		ok &= good;
	}
	printf("  all %d done in %.0f ms, at most %d at once\n", N, total / 1e6,
	       atomic_load(&fr.peak));
	ok &= atomic_load(&fr.peak) <= LIMIT;

	/* Shutdown, as in 16_tcp_echo. The slow handlers have seen their
	 * clients hang up by now, or will at once; the context stops any
	 * that has not. */
	weft_ctx_cancel(s.ctx);
	weft_wg_wait(&s.loop);
	weft_wg_wait(&s.conns);
	weft_ctx_release(s.ctx);
	printf("  server: %d requests; %d /slow clients hung up before the answer\n",
	       atomic_load(&s.served), atomic_load(&s.abandoned));
	ok &= atomic_load(&s.served) == N;

	if (!ok) {
		fprintf(stderr, "18_http_fetch: FAILED\n");
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
