/* SPDX-License-Identifier: MIT */
/*
 * 13_context.c - stop work that is no longer wanted with a weft_ctx (Go's
 * context package).
 *
 * A context carries a cancellation signal, maybe a deadline, and values, down
 * a tree of calls and goroutines. Cancelling a context cancels everything
 * made from it. Work that may take a while takes the context and uses the
 * _ctx form of each blocking call (weft_sleep_ctx, weft_chan_recv_ctx,
 * weft_chan_send_ctx, weft_wg_wait_ctx, ...), which returns ECANCELED
 * (cancelled) or ETIMEDOUT (deadline passed) as soon as the context is done.
 *
 * Contexts are reference counted: every weft_ctx_with_* call hands you one
 * reference, and you give it back with weft_ctx_release(), always, as Go's
 * `defer cancel()`. Releasing the last reference also cancels the context and
 * stops its timer. Goroutines that borrow a context need it to outlive them
 * (here main waits for them before releasing), or take a reference of their
 * own with weft_ctx_retain().
 *
 * Five parts:
 *  1. a tree of workers: cancelling one branch stops its workers only;
 *     cancelling the root stops the rest.  (Go: context.WithCancel)
 *  2. a request with a timeout: a slow call and a reply that never comes both
 *     give up with ETIMEDOUT; a quick call finishes.  (context.WithTimeout)
 *  3. a select on the context's done channel next to a data channel, Go's
 *       select { case v := <-data: ...; case <-ctx.Done(): return ctx.Err() }
 *  4. a request id carried by the context to the code that logs it.
 *     (context.WithValue)
 *  5. clean-up when a request ends: weft_ctx_after_func() starts a goroutine
 *     once the request's context is cancelled (context.AfterFunc), and an
 *     audit record written under weft_ctx_without_cancel() keeps the
 *     request id but not its cancellation (context.WithoutCancel).
 *
 * Run: ./13_context
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

/* The error numbers this example meets, by name (strerror(ETIMEDOUT) says
 * "Connection timed out", which reads oddly for a context). */
static const char *errname(int err)
{
	switch (err) {
	case 0: return "0";
	case ECANCELED: return "ECANCELED";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return strerror(err);
	}
}

/* ---------------------------------------------------------------- part 1 */

#define BRANCHES 2
#define WORKERS 3 /* per branch */

struct worker {
	weft_ctx *ctx; /* borrowed: its owner releases it after the worker ends */
	int ticks;     /* rounds of work done */
	int err;       /* why it stopped */
	weft_wg *wg;
};

void tree_worker(void *arg)
{
	struct worker *w = arg;

	/* Work in small steps; each step's wait also watches the context. */
	for (;;) {
		int err = weft_sleep_ctx(w->ctx, 1 * MS);
		if (err != 0) {
			w->err = err;
			break;
		}
		w->ticks++;
	}
	weft_wg_done(w->wg);
}

static int cancel_tree(void)
{
	weft_ctx *root, *branch[BRANCHES];
	struct worker w[BRANCHES][WORKERS];
	weft_wg wg[BRANCHES] = {WEFT_WG_INIT, WEFT_WG_INIT};
	int ok = 1;

	printf("1. a tree: root -> %d branches -> %d workers each\n", BRANCHES, WORKERS);
	if (weft_ctx_with_cancel(weft_ctx_background(), &root) != 0)
		return 0;
	for (int b = 0; b < BRANCHES; b++) {
		if (weft_ctx_with_cancel(root, &branch[b]) != 0)
			return 0;
		for (int i = 0; i < WORKERS; i++) {
			w[b][i] = (struct worker){.ctx = branch[b], .wg = &wg[b]};
			weft_wg_add(&wg[b], 1);
			if (weft_go(tree_worker, &w[b][i]) != 0)
				return 0;
		}
	}

	weft_sleep(10 * MS);
	weft_ctx_cancel(branch[0]);
	weft_wg_wait(&wg[0]); /* branch 0's workers stop... */
	int others_live = weft_ctx_err(branch[1]) == 0 && weft_ctx_err(root) == 0;
	printf("  cancelled branch 0: its workers stopped; branch 1 and root still live: %s\n",
	       others_live ? "yes" : "no");
	ok &= others_live;

	weft_sleep(10 * MS);
	weft_ctx_cancel(root); /* ...and this reaches branch 1 through the tree */
	weft_wg_wait(&wg[1]);
	for (int b = 0; b < BRANCHES; b++)
		for (int i = 0; i < WORKERS; i++) {
			printf("  branch %d worker %d: %3d ticks, then %s\n", b, i, w[b][i].ticks,
			       errname(w[b][i].err));
			ok &= w[b][i].err == ECANCELED;
		}

	/* Children first or parents first: each release drops one reference. */
	for (int b = 0; b < BRANCHES; b++)
		weft_ctx_release(branch[b]);
	weft_ctx_release(root);
	return ok;
}

/* ---------------------------------------------------------------- part 2 */

struct call {
	const char *name;
	weft_ctx *ctx;    /* borrowed: the request's */
	int64_t work_ns;  /* for the sleepers: how long the work takes */
	weft_chan *reply; /* for the waiter: a reply that never comes */
	int err;
	weft_wg *wg;
};

void slow_call(void *arg)
{
	struct call *c = arg;

	c->err = weft_sleep_ctx(c->ctx, c->work_ns);
	weft_wg_done(c->wg);
}

void await_reply(void *arg)
{
	struct call *c = arg;
	int v;

	c->err = weft_chan_recv_ctx(c->ctx, c->reply, &v);
	weft_wg_done(c->wg);
}

static int request_timeout(void)
{
	weft_ctx *req;
	weft_chan *reply;
	weft_wg wg = WEFT_WG_INIT;
	int64_t deadline;

	printf("2. a request with a 30 ms timeout\n");
	int64_t t0 = weft_now();
	if (weft_ctx_with_timeout(weft_ctx_background(), 30 * MS, &req) != 0)
		return 0;
	if (weft_chan_make(&reply, sizeof(int), 0) != 0)
		return 0;
	if (weft_ctx_deadline(req, &deadline))
		printf("  deadline in %.1f ms\n", (deadline - t0) / 1e6);

	struct call calls[] = {
		{.name = "cache lookup (1 ms)", .ctx = req, .work_ns = 1 * MS, .wg = &wg},
		{.name = "database query (1 s)", .ctx = req, .work_ns = 1000 * MS, .wg = &wg},
		{.name = "reply from a peer", .ctx = req, .reply = reply, .wg = &wg},
	};
	weft_wg_add(&wg, 3);
	if (weft_go(slow_call, &calls[0]) != 0 || weft_go(slow_call, &calls[1]) != 0 ||
	    weft_go(await_reply, &calls[2]) != 0)
		return 0;
	weft_wg_wait(&wg);
	int64_t took = weft_now() - t0;

	for (int i = 0; i < 3; i++)
		printf("  %-22s %s\n", calls[i].name,
		       calls[i].err == 0 ? "done" : errname(calls[i].err));
	printf("  everything returned after %.1f ms\n", took / 1e6);
	weft_chan_release(reply);
	weft_ctx_release(req);
	return calls[0].err == 0 && calls[1].err == ETIMEDOUT && calls[2].err == ETIMEDOUT &&
	       took >= 30 * MS && took < 1000 * MS;
}

/* ---------------------------------------------------------------- part 3 */

struct stream {
	weft_ctx *ctx; /* borrowed */
	weft_chan *data;
	int produced, consumed, in_order;
	int producer_err, consumer_err;
	weft_wg wg;
};

void stream_producer(void *arg)
{
	struct stream *s = arg;

	for (int i = 1;; i++) {
		/* A send that also gives up when the consumer no longer cares. */
		int err = weft_chan_send_ctx(s->ctx, s->data, &i);
		if (err == 0) {
			s->produced = i;
			err = weft_sleep_ctx(s->ctx, 1 * MS);
		}
		if (err != 0) {
			s->producer_err = err;
			break;
		}
	}
	weft_wg_done(&s->wg);
}

void stream_consumer(void *arg)
{
	struct stream *s = arg;
	int v;
	weft_case cases[] = {
		WEFT_RECV_CASE(s->data, &v),
		WEFT_RECV_CASE(weft_ctx_done(s->ctx), NULL), /* closed on cancel */
	};

	for (;;) {
		int chosen;
		weft_select(cases, 2, &chosen);
		if (chosen == 1) {
			/* Go: case <-ctx.Done(): return ctx.Err() */
			s->consumer_err = weft_ctx_err(s->ctx);
			break;
		}
		s->consumed++;
		s->in_order &= v == s->consumed;
	}
	weft_wg_done(&s->wg);
}

static int select_done(void)
{
	static struct stream s;

	printf("3. a consumer selecting on data and ctx done; cancelled after 20 ms\n");
	if (weft_ctx_with_cancel(weft_ctx_background(), &s.ctx) != 0)
		return 0;
	/* The done channel belongs to the context: never release it. NULL
	 * would mean no memory for it (or a context that cannot be cancelled). */
	if (weft_ctx_done(s.ctx) == NULL)
		return 0;
	if (weft_chan_make(&s.data, sizeof(int), 0) != 0)
		return 0;
	s.in_order = 1;
	weft_wg_add(&s.wg, 2);
	if (weft_go(stream_producer, &s) != 0 || weft_go(stream_consumer, &s) != 0)
		return 0;

	weft_sleep(20 * MS);
	weft_ctx_cancel(s.ctx);
	weft_wg_wait(&s.wg);
	printf("  consumer: %d values in order (%s), then %s\n", s.consumed,
	       s.in_order ? "yes" : "no", errname(s.consumer_err));
	printf("  producer: sent %d, then %s\n", s.produced, errname(s.producer_err));
	weft_chan_release(s.data);
	weft_ctx_release(s.ctx);
	/* Unbuffered: each send that completed was a value the consumer took. */
	return s.consumed >= 1 && s.in_order && s.consumed == s.produced &&
	       s.consumer_err == ECANCELED && s.producer_err == ECANCELED;
}

/* ---------------------------------------------------------------- part 4 */

/* A key is compared by address: a private static object, as Go's unexported
 * key type, so no other package can collide with it. */
static const char request_id_key;

static const char *log_line(weft_ctx *ctx, const char *what)
{
	static char line[80];
	const char *id = weft_ctx_value(ctx, &request_id_key);

	snprintf(line, sizeof line, "[%s] %s", id ? id : "no request", what);
	return line;
}

static int values(void)
{
	weft_ctx *req, *call;
	char id[] = "req-42";

	printf("4. a request id carried by the context\n");
	if (weft_ctx_with_value(weft_ctx_background(), &request_id_key, id, &req) != 0)
		return 0;
	/* Values are inherited: a timeout for one call below the request. */
	if (weft_ctx_with_timeout(req, 100 * MS, &call) != 0)
		return 0;
	const char *deep = log_line(call, "querying the database");
	printf("  %s\n", deep);
	int ok = strcmp(deep, "[req-42] querying the database") == 0;
	const char *none = log_line(weft_ctx_background(), "housekeeping");
	printf("  %s\n", none);
	ok &= strcmp(none, "[no request] housekeeping") == 0;
	weft_ctx_release(call);
	weft_ctx_release(req);
	return ok;
}

/* ---------------------------------------------------------------- part 5 */

struct cleanup {
	weft_ctx *audit; /* the request's values, none of its cancellation */
	weft_wg *done;
};

/* Started in a goroutine of its own once the request is cancelled. */
static void release_resources(void *arg)
{
	struct cleanup *c = arg;
	/* The request is cancelled, the audit context is not: the write may
	 * still wait (up to its own 50 ms). */
	weft_ctx *write;
	int err = weft_ctx_with_timeout(c->audit, 50 * MS, &write);
	if (err == 0) {
		err = weft_sleep_ctx(write, 5 * MS); /* "writing the audit record" */
		printf("  %s: %s\n", log_line(write, "audit record after the cancel"),
		       err ? errname(err) : "written");
		weft_ctx_release(write);
	}
	weft_wg_done(c->done);
}

static int after_cancel(void)
{
	weft_ctx *req, *audit;
	char id[] = "req-43";
	weft_wg wg = WEFT_WG_INIT;
	weft_ctx_after *a;

	printf("5. clean-up after a cancel: after_func and without_cancel\n");
	if (weft_ctx_with_value(weft_ctx_background(), &request_id_key, id, &req) != 0)
		return 0;
	weft_ctx *live;
	if (weft_ctx_with_cancel(req, &live) != 0) {
		weft_ctx_release(req);
		return 0;
	}
	if (weft_ctx_without_cancel(live, &audit) != 0) {
		weft_ctx_release(live);
		weft_ctx_release(req);
		return 0;
	}
	struct cleanup c = {audit, &wg};
	weft_wg_add(&wg, 1);
	if (weft_ctx_after_func(live, release_resources, &c, &a) != 0) {
		weft_ctx_release(audit);
		weft_ctx_release(live);
		weft_ctx_release(req);
		return 0;
	}
	weft_ctx_cancel(live); /* the client went away */
	/* Started by the cancel, so too late to stop: stop says false. */
	bool stopped = weft_ctx_after_stop(a);
	weft_wg_wait(&wg);
	printf("  request: %s; audit context: %s; stop after the cancel: %s\n",
	       errname(weft_ctx_err(live)), errname(weft_ctx_err(audit)),
	       stopped ? "true" : "false");
	int ok = !stopped && weft_ctx_err(live) == ECANCELED && weft_ctx_err(audit) == 0;
	weft_ctx_after_free(a);
	weft_ctx_release(audit);
	weft_ctx_release(live);
	weft_ctx_release(req);
	return ok;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = cancel_tree();
	int ok2 = request_timeout();
	int ok3 = select_done();
	int ok4 = values();
	int ok5 = after_cancel();

	if (!(ok1 && ok2 && ok3 && ok4 && ok5)) {
		fprintf(stderr, "wrong: tree %d, timeout %d, select %d, values %d, after %d\n", ok1,
		        ok2, ok3, ok4, ok5);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
