/* SPDX-License-Identifier: MIT */
/*
 * 20_pipeline.c - a four-stage pipeline with weft_pipeline: generate ->
 * parse -> transform -> aggregate, each stage with its own number of
 * goroutines, results in input order, and what happens when a stage fails.
 *
 * Go writes a pipeline as stages joined by channels, each stage a few
 * goroutines ranging over its input and sending to its output, plus an
 * errgroup so that the first error cancels a context every stage watches:
 *
 *   g, ctx := errgroup.WithContext(ctx)
 *   lines  := generate(ctx, g, 2000)        // chan string
 *   orders := parse(ctx, g, lines, 3)       // 3 goroutines; chan Order
 *   priced := price(ctx, g, orders, 2)      // 2 goroutines; chan Priced
 *   g.Go(func() error { for p := range priced { total(p) }; return nil })
 *   err := g.Wait()
 *
 * weft_pipeline is that, written once: a source, stages (a function, a
 * worker count, ordered or not, a channel buffer) and a sink.
 *
 *  1. 2,000 orders, as CSV text lines, go through parse (3 workers) and
 *     price (2 workers; every 199th order is slow); both stages keep input
 *     order, so the aggregating sink sees orders 1, 2, 3, ... although the
 *     workers finish them out of order. The totals are checked against a
 *     plain loop over the same lines.
 *  2. The same pipeline fed an endless stream with one malformed line: the
 *     parse stage fails (EBADMSG), which cancels the pipeline's context; the
 *     generator, the other workers (one of them asleep on a slow order) and
 *     the sink all stop, every goroutine exits, and the run returns the
 *     parse error.
 *
 * Run: ./20_pipeline
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define CUSTOMERS 7

/* ---------------------------------------------------------------- items */

/* Items are fixed-size values, copied from stage to stage like Go's channel
 * elements: no allocation, nothing to free. */
struct line { /* the generator's output */
	char text[48];
};

struct order { /* parse's output */
	int64_t id;
	int customer;
	int qty;
	int64_t unit_cents;
};

struct priced { /* price's output */
	int64_t id;
	int customer;
	int64_t total_cents;
};

/* ---------------------------------------------------------------- stages */

struct gen {
	int64_t n;      /* lines to produce; -1: until cancelled */
	int64_t bad_id; /* this line is malformed (0: none) */
	atomic_long sent;
};

/* The order line for id, as a CSV record: "order,ID,CUSTOMER,QTY,CENTS". */
static void make_line(struct line *l, int64_t id, int64_t bad_id)
{
	if (id == bad_id) {
		snprintf(l->text, sizeof l->text, "order,%" PRId64 ",??,x,", id);
		return;
	}
	snprintf(l->text, sizeof l->text, "order,%" PRId64 ",%d,%d,%" PRId64, id,
	         (int)(id * 5 % CUSTOMERS), (int)(id % 12) + 1, 199 + id * 37 % 5000);
}

/* Source: Go's generator goroutine. emit blocks while parse is behind
 * (backpressure) and fails once the pipeline is cancelled. */
static int generate(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	struct gen *g = arg;
	for (int64_t id = 1; g->n < 0 || id <= g->n; id++) {
		struct line l;
		make_line(&l, id, g->bad_id);
		int err = weft_pipeline_emit(em, &l);
		if (err != 0)
			return err; /* the pipeline is stopping: just return */
		atomic_fetch_add(&g->sent, 1);
	}
	return 0;
}

/* A decimal number of at most 15 digits at *s, followed by end (strtol
 * would do, but reports overflow through errno, a thread-local that weft's
 * own calls never touch: goroutines are better off without it). */
static bool number(const char **s, char end, long *v)
{
	const char *p = *s;
	long x = 0;
	while (*p >= '0' && *p <= '9' && p - *s < 15)
		x = x * 10 + (*p++ - '0');
	if (p == *s || *p != end)
		return false;
	*v = x;
	*s = end ? p + 1 : p;
	return true;
}

/* Parse one CSV line; EBADMSG if it is not a well-formed order. Shared by
 * the stage and the sequential check. */
static int parse_line(const char *text, struct order *o)
{
	const char *s = text;
	long v[4];

	if (strncmp(s, "order,", 6) != 0)
		return EBADMSG;
	s += 6;
	for (int i = 0; i < 4; i++)
		if (!number(&s, i < 3 ? ',' : '\0', &v[i]))
			return EBADMSG;
	*o = (struct order){
		.id = v[0], .customer = (int)v[1], .qty = (int)v[2], .unit_cents = v[3]};
	return 0;
}

/* Stage 2: text -> order. A map: one output per input. Returning an error
 * fails the whole pipeline; errgroup semantics, the first error wins. */
static int parse(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	const struct line *l = in;
	int err = parse_line(l->text, out);
	if (err != 0)
		fprintf(stderr, "  parse: bad line \"%s\": %s\n", l->text, strerror(err));
	return err;
}

/* Pricing: quantity discounts and 20% VAT, in cents. */
static int64_t price_of(const struct order *o)
{
	int64_t net = o->unit_cents * o->qty;
	if (o->qty >= 10)
		net = net * 90 / 100;
	return net + net / 5;
}

/* How often a price call finished before one for an earlier order: the
 * workers really do finish out of order. */
static atomic_long last_priced, overtakes;

/* Stage 3: order -> priced. Every 199th order "calls a slow service" for
 * 10 ms: the other worker overtakes it, and the ordered stage puts the
 * results back in order. The wait watches the context, as every wait in a
 * pipeline stage should. */
static int price(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)arg;
	const struct order *o = in;
	if (o->id % 199 == 0) {
		int err = weft_sleep_ctx(ctx, 10 * MS);
		if (err != 0)
			return err; /* cancelled while waiting */
	}
	if (atomic_exchange(&last_priced, o->id) > o->id)
		atomic_fetch_add(&overtakes, 1);
	*(struct priced *)out =
		(struct priced){.id = o->id, .customer = o->customer, .total_cents = price_of(o)};
	return 0;
}

/* Stage 4, the sink: one goroutine, items in order. */
struct totals {
	int64_t orders;
	int64_t cents[CUSTOMERS];
	int64_t next_id;   /* the id expected next */
	int64_t misplaced; /* items out of order: 0 with ordered stages */
};

static int aggregate(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	struct totals *t = arg;
	const struct priced *p = item;
	if (p->id != t->next_id)
		t->misplaced++;
	t->next_id = p->id + 1;
	if (p->customer < 0 || p->customer >= CUSTOMERS)
		return ERANGE;
	t->cents[p->customer] += p->total_cents;
	t->orders++;
	if (t->orders <= 3)
		printf("  order %4" PRId64 ": customer %d pays %7.2f\n", p->id, p->customer,
		       p->total_cents / 100.0);
	return 0;
}

/* ---------------------------------------------------------------- the pipeline */

static weft_pipeline *build(struct gen *g, struct totals *t)
{
	weft_pipeline_source src = {.gen = generate,
	                            .arg = g,
	                            .item_size = sizeof(struct line),
	                            .buffer = 16,
	                            .name = "generate"};
	weft_pipeline_stage stages[] = {
		{.map = parse,
	         .out_size = sizeof(struct order),
	         .workers = 3,
	         .ordered = true,
	         .buffer = 16,
	         .name = "parse"},
		{.map = price,
	         .out_size = sizeof(struct priced),
	         .workers = 2,
	         .ordered = true,
	         .window = 32, /* how far the fast worker may run ahead of a slow order */
	         .buffer = 16,
	         .name = "price"},
	};
	weft_pipeline *p;

	if (weft_pipeline_new(&p, NULL, &src) != 0)
		return NULL;
	for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
		if (weft_pipeline_add(p, &stages[i]) != 0) {
			weft_pipeline_free(p);
			return NULL;
		}
	}
	if (weft_pipeline_set_sink(p, aggregate, t) != 0) {
		weft_pipeline_free(p);
		return NULL;
	}
	return p;
}

/* weft_num_goroutines() once it is back to want, or after a second. Each
 * goroutine of a pipeline signals that it is done as the last thing it does
 * before returning, so one may still be on its way out when the wait
 * returns (after Go's wg.Wait(), runtime.NumGoroutine() may lag a moment
 * too). */
static int64_t settle(int64_t want)
{
	int64_t n = weft_num_goroutines();
	for (int i = 0; i < 1000 && n != want; i++) {
		weft_sleep(MS);
		n = weft_num_goroutines();
	}
	return n;
}

static int in_order(void)
{
	static struct gen g = {.n = 2000};
	struct totals t = {.next_id = 1}, want = {0};
	int64_t before = weft_num_goroutines();

	printf("1. %" PRId64 " orders: generate -> parse (3 workers) -> price (2 workers) -> "
	       "aggregate, in order\n",
	       g.n);
	weft_pipeline *p = build(&g, &t);
	if (!p)
		return 0;
	int64_t t0 = weft_now();
	int err = weft_pipeline_run(p);
	int64_t took = weft_now() - t0;
	weft_pipeline_free(p);
	int64_t after = settle(before);

	/* The same, sequentially. */
	for (int64_t id = 1; id <= g.n; id++) {
		struct line l;
		struct order o;
		make_line(&l, id, 0);
		if (parse_line(l.text, &o) != 0)
			return 0;
		want.cents[o.customer] += price_of(&o);
		want.orders++;
	}
	int same = t.orders == want.orders;
	for (int c = 0; c < CUSTOMERS; c++) {
		printf("  customer %d: %10.2f\n", c, t.cents[c] / 100.0);
		same &= t.cents[c] == want.cents[c];
	}
	printf("  %" PRId64 " orders in %.1f ms; the workers finished %ld out of order, "
	       "the sink saw %" PRId64 " out of order\n",
	       t.orders, took / 1e6, atomic_load(&overtakes), t.misplaced);
	printf("  totals %s the sequential loop's; run: %s\n", same ? "equal" : "DIFFER from",
	       err == 0 ? "0" : strerror(err));
	return err == 0 && same && t.misplaced == 0 && after == before;
}

static int failing_stage(void)
{
	static struct gen g = {.n = -1, .bad_id = 600}; /* endless, line 600 broken */
	struct totals t = {.next_id = 1};

	printf("2. an endless stream with a malformed line at order %" PRId64 "\n", g.bad_id);
	int64_t before = weft_num_goroutines();
	weft_pipeline *p = build(&g, &t);
	if (!p)
		return 0;
	int64_t t0 = weft_now();
	if (weft_pipeline_start(p, NULL) != 0) {
		weft_pipeline_free(p);
		return 0;
	}
	int64_t during = weft_num_goroutines(); /* generator, 3 + 2 workers, sink */
	int err = weft_pipeline_wait(p);        /* every goroutine has exited when it returns */
	int64_t took = weft_now() - t0;
	int cause = weft_ctx_cause(weft_pipeline_ctx(p));
	weft_pipeline_free(p);
	int64_t after = settle(before);

	printf("  run: %s after %.1f ms (the context's cause: %s)\n", strerror(err), took / 1e6,
	       strerror(cause));
	printf("  the generator stopped after %ld lines; the sink saw %" PRId64
	       " orders, all before %" PRId64 "\n",
	       atomic_load(&g.sent), t.orders, g.bad_id);
	printf("  goroutines: %" PRId64 " before, %" PRId64 " running, %" PRId64 " after\n", before,
	       during, after);
	return err == EBADMSG && cause == EBADMSG && t.orders < g.bad_id && t.misplaced == 0 &&
	       after == before;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = in_order();
	int ok2 = failing_stage();

	if (!(ok1 && ok2)) {
		fprintf(stderr, "wrong: in order %d, failing stage %d\n", ok1, ok2);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
