/* SPDX-License-Identifier: MIT */
/*
 * 24_rate_limit_breaker.c - protect a service, and its callers, with a rate
 * limiter and a circuit breaker.
 *
 * A rate limiter keeps a client from calling faster than agreed: a token
 * bucket (weft_limiter, Go's golang.org/x/time/rate) lets bursts of up to
 * `burst` calls through and refills at `limit` per second; weft_limiter_wait
 * parks the caller until its token is due. A circuit breaker (weft_breaker,
 * after sony/gobreaker) stops calling a service that keeps failing: after
 * enough failures it opens and refuses calls at once (EAGAIN), so the
 * service gets time to recover and the callers fail fast; after a timeout it
 * lets a few probe calls through (half-open) and closes again when they
 * succeed.
 *
 * Two parts:
 *  1. the learning material's ticker-based limiter (Go's
 *       limiter := time.Tick(50 * time.Millisecond); <-limiter
 *     with a bank of 3 tokens for a burst): 8 requests, the first 3 at once,
 *     then one every 50 ms;
 *  2. four client goroutines calling a local service through one limiter
 *     (100 calls/s, burst 5) and one breaker, while the service has an
 *     outage from 300 ms to 800 ms. The breaker's state changes are printed
 *     as they happen; during the outage most calls never reach the service.
 *
 * It checks its own results and exits 0 only when they hold.
 * Run: ./24_rate_limit_breaker
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS WEFT_MILLISECOND

static int64_t start;

static double since_start_ms(void)
{
	return (double)(weft_now() - start) / 1e6;
}

/* ---------------------------------------------------------------- part 1 */

static int ticker_form(void)
{
	weft_ticklimiter *tl;
	int64_t at[8];

	printf("1. ticker-based limiter: one token per 50 ms, 3 banked\n");
	int64_t t0 = weft_now();
	if (weft_ticklimiter_new(&tl, 50 * MS, 3) != 0 || weft_ticklimiter_start(tl) != 0)
		return 0;
	for (int i = 0; i < 8; i++) {
		if (weft_ticklimiter_take(tl, NULL) != 0)
			return 0;
		at[i] = weft_now() - t0;
		printf("  request %d at %3lld ms\n", i + 1, (long long)(at[i] / MS));
	}
	weft_ticklimiter_free(tl);
	/* The 3 banked tokens go at once; token k after them comes k periods
	 * after the start, never sooner. */
	int ok = at[2] < 40 * MS;
	for (int i = 3; i < 8; i++)
		ok &= at[i] >= (i - 2) * 50 * MS;
	return ok;
}

/* ---------------------------------------------------------------- part 2 */

#define OUTAGE_FROM (300 * MS)
#define OUTAGE_TO (800 * MS)
#define RUN_FOR (1500 * MS)
#define CLIENTS 4
#define LIMIT 100.0
#define BURST 5

/* A request to the service: the reply (0 or EIO) comes on reply. */
struct request {
	weft_chan *reply; /* capacity 1: the service never waits on a client */
};

/* The service, a goroutine serving one request at a time: 2 ms of work,
 * and EIO while it has its outage. */
static struct service {
	weft_chan *requests; /* of struct request *; closed to stop it */
	int served;          /* requests it answered (its own; read after it ends) */
	int served_in_outage;
	weft_wg stopped;
} svc;

static void service(void *arg)
{
	(void)arg;
	struct request *r;
	while (weft_chan_recv(svc.requests, &r) == 0) {
		weft_sleep(2 * MS);
		int64_t t = weft_now() - start;
		bool down = t >= OUTAGE_FROM && t < OUTAGE_TO;
		int result = down ? EIO : 0;
		svc.served++;
		svc.served_in_outage += down;
		weft_chan_send(r->reply, &result);
	}
	weft_wg_done(&svc.stopped);
}

/* One call to the service, giving up after 100 ms: what the breaker runs. */
static int call_service(void *arg)
{
	(void)arg;
	struct request req;
	weft_ctx *ctx;
	int result = ETIMEDOUT;
	if (weft_chan_make(&req.reply, sizeof(int), 1) != 0)
		return ENOMEM;
	if (weft_ctx_with_timeout(weft_ctx_background(), 100 * MS, &ctx) != 0) {
		weft_chan_release(req.reply);
		return ENOMEM;
	}
	struct request *p = &req;
	int err = weft_chan_send_ctx(ctx, svc.requests, &p);
	if (err == 0 && (err = weft_chan_recv_ctx(ctx, req.reply, &result)) != 0) {
		/* Gave up on a request the service has taken: its late reply
		 * lands in the buffer (the service never blocks on it); wait
		 * for it only so that req stays valid until then. */
		weft_chan_recv(req.reply, NULL);
	}
	weft_ctx_release(ctx);
	weft_chan_release(req.reply);
	return err ? err : result;
}

/* What the clients saw, by the result of each call. */
static struct tally {
	atomic_int ok, failed, refused_open, refused_busy;
	atomic_int attempts, attempts_in_outage;
} tally;

static struct transitions {
	weft_mutex mu;
	char seq[256]; /* "closed>open open>half-open ..." */
	int n;
} tr;

/* Called by the breaker, in order, without its lock held. */
static void on_state_change(weft_breaker *b, weft_breaker_state from, weft_breaker_state to,
                            void *arg)
{
	(void)arg;
	printf("  [%4.0f ms] breaker %s: %s -> %s\n", since_start_ms(), weft_breaker_name(b),
	       weft_breaker_state_name(from), weft_breaker_state_name(to));
	weft_mutex_lock(&tr.mu);
	size_t len = strlen(tr.seq);
	snprintf(tr.seq + len, sizeof tr.seq - len, "%s%s>%s", len ? " " : "",
	         weft_breaker_state_name(from), weft_breaker_state_name(to));
	tr.n++;
	weft_mutex_unlock(&tr.mu);
}

struct client {
	weft_limiter *lim;
	weft_breaker *br;
	weft_wg *wg;
};

static void client(void *arg)
{
	struct client *c = arg;
	while (weft_now() - start < RUN_FOR) {
		/* At most LIMIT calls a second among all clients. */
		if (weft_limiter_wait(c->lim, NULL) != 0)
			break;
		int64_t t = weft_now() - start;
		atomic_fetch_add(&tally.attempts, 1);
		if (t >= OUTAGE_FROM && t < OUTAGE_TO)
			atomic_fetch_add(&tally.attempts_in_outage, 1);
		switch (weft_breaker_execute(c->br, call_service, NULL)) {
		case 0: atomic_fetch_add(&tally.ok, 1); break;
		case EAGAIN: atomic_fetch_add(&tally.refused_open, 1); break;
		case EBUSY: atomic_fetch_add(&tally.refused_busy, 1); break;
		default: atomic_fetch_add(&tally.failed, 1); break;
		}
	}
	weft_wg_done(c->wg);
}

static int limiter_and_breaker(void)
{
	static weft_limiter lim = WEFT_LIMITER_INIT(LIMIT, BURST);
	weft_breaker *br;
	weft_breaker_settings s = {
		.name = "svc",
		.trip_consecutive_failures = 5,
		.timeout_ns = 200 * MS, /* open this long, then probe */
		.max_requests = 2,      /* 2 probes; 2 successes close it */
		.on_state_change = on_state_change,
	};
	struct client cl = {.lim = &lim};
	weft_wg wg = WEFT_WG_INIT;

	printf("2. %d clients, %.0f calls/s (burst %d), a breaker; the service is down "
	       "from %lld to %lld ms\n",
	       CLIENTS, LIMIT, BURST, (long long)(OUTAGE_FROM / MS), (long long)(OUTAGE_TO / MS));
	if (weft_breaker_new(&br, &s) != 0 || weft_chan_make(&svc.requests, sizeof(void *), 0) != 0)
		return 0;
	cl.br = br;
	cl.wg = &wg;
	start = weft_now();
	weft_wg_add(&svc.stopped, 1);
	if (weft_go(service, NULL) != 0)
		return 0;
	for (int i = 0; i < CLIENTS; i++) {
		weft_wg_add(&wg, 1);
		if (weft_go(client, &cl) != 0)
			return 0;
	}
	weft_wg_wait(&wg);
	double elapsed = since_start_ms() / 1000;
	weft_chan_close(svc.requests);
	weft_wg_wait(&svc.stopped);
	weft_breaker_state end = weft_breaker_get_state(br);
	weft_breaker_free(br);
	weft_chan_release(svc.requests);

	int attempts = atomic_load(&tally.attempts);
	int in_outage = atomic_load(&tally.attempts_in_outage);
	printf("  %d calls in %.2f s (%.1f/s): %d ok, %d failed, %d refused open, %d refused "
	       "busy\n",
	       attempts, elapsed, attempts / elapsed, atomic_load(&tally.ok),
	       atomic_load(&tally.failed), atomic_load(&tally.refused_open),
	       atomic_load(&tally.refused_busy));
	printf("  during the outage: %d calls, %d reached the service\n", in_outage,
	       svc.served_in_outage);
	printf("  transitions: %s; finally %s\n", tr.seq, weft_breaker_state_name(end));

	/* The limiter: never more than burst + limit x time, and the clients,
	 * always asking, got close to that. */
	double most = BURST + LIMIT * elapsed;
	int ok = attempts <= most + 1 && attempts >= 0.8 * most;
	/* The breaker: opened when the outage began, kept most of the outage's
	 * calls from the service, closed again once it was back. */
	ok &= strncmp(tr.seq, "closed>open", 11) == 0 && end == WEFT_BREAKER_CLOSED;
	ok &= svc.served_in_outage * 2 < in_outage;
	ok &= atomic_load(&tally.refused_open) > 0 && atomic_load(&tally.ok) > 0;
	return ok;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = ticker_form();
	int ok2 = limiter_and_breaker();

	if (!(ok1 && ok2)) {
		fprintf(stderr, "wrong: ticker form %d, limiter and breaker %d\n", ok1, ok2);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
