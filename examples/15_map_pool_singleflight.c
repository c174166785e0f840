/* SPDX-License-Identifier: MIT */
/*
 * 15_map_pool_singleflight.c - three tools for shared, expensive things:
 * weft_map (Go's sync.Map), weft_pool (sync.Pool) and weft_flight
 * (golang.org/x/sync/singleflight).
 *
 * Three parts:
 *  1. weft_map as a concurrent cache. Goroutines look names up; on a miss each
 *     computes the answer and offers it with weft_map_load_or_store(), which
 *     keeps the first value stored for a key and hands that one to everybody
 *     else, so all agree on one value per key. (Go:
 *     v, loaded := m.LoadOrStore(k, fresh).) A loser frees its own copy:
 *     the map never owns nor frees values. Loads take no lock, which is what
 *     sync.Map is for: keys written once and read many times.
 *  2. weft_pool recycling buffers. Instead of malloc and free per request,
 *     goroutines take a buffer from the pool and give it back; the pool calls
 *     new_fn only when it has none. An object from the pool may be dirty: reset
 *     it first, as in Go (buf.Reset()). Unlike Go's, the pool keeps what it
 *     holds until weft_pool_destroy(), which hands it to free_fn.
 *  3. weft_flight collapsing duplicate slow lookups. Part 1 computes a miss
 *     once per goroutine that races for it; with weft_flight_do() concurrent
 *     callers for the same key wait for one call of the slow function and
 *     share its result. (Go: v, err, shared := g.Do(key, fn).) It is not a
 *     cache: a call after that one has returned runs the function again.
 *
 * Run: ./15_map_pool_singleflight
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

/* Runs fn(arg) in n goroutines, which call weft_wg_done(wg), and waits for
 * them. Returns 1, or 0 when one could not be started. */
static int go_and_wait(void (*fn)(void *), void *arg, weft_wg *wg, int n)
{
	int ok = 1;

	for (int i = 0; i < n && ok; i++) {
		weft_wg_add(wg, 1);
		if (weft_go(fn, arg) != 0) {
			weft_wg_done(wg);
			ok = 0;
		}
	}
	weft_wg_wait(wg);
	return ok;
}

/* ---------------------------------------------------------------- part 1 */

#define NAMES 5
#define LOOKERS 8
#define LOOKUPS 200 /* per goroutine */

static const char *const names[NAMES] = {"golang.org", "kernel.org", "sqlite.org", "libuv.org",
                                         "redis.io"};

struct host {
	char name[32];
	char addr[16];
};

struct cache {
	weft_map m;          /* name -> struct host *, malloc'ed */
	atomic_int computed; /* misses resolved */
	atomic_int stored;   /* values that went into the map */
	atomic_int wrong;    /* lookups that got another name's host */
	weft_wg wg;
};

/* The expensive part: a made-up address, after a little work. */
static struct host *resolve(struct cache *c, const char *name)
{
	struct host *h = malloc(sizeof *h);
	unsigned hash = 0;

	if (!h)
		return NULL;
	for (const char *p = name; *p; p++)
		hash = hash * 31 + (unsigned char)*p;
	atomic_fetch_add(&c->computed, 1);
	weft_yield(); /* pretend to wait for a DNS server */
	snprintf(h->name, sizeof h->name, "%s", name);
	snprintf(h->addr, sizeof h->addr, "10.0.0.%u", 1 + hash % 250);
	return h;
}

static const struct host *lookup(struct cache *c, const char *name)
{
	size_t len = strlen(name);
	void *v;

	if (weft_map_load(&c->m, name, len, &v) == 0)
		return v; /* the common case: a hit, no lock */
	struct host *fresh = resolve(c, name);
	if (!fresh)
		return NULL;
	int r = weft_map_load_or_store(&c->m, name, len, fresh, &v);
	if (r == ENOENT) {
		atomic_fetch_add(&c->stored, 1); /* ours went in: the map holds it now */
	} else {
		free(fresh); /* 0: another goroutine's value won (or ENOMEM: none) */
		if (r != 0)
			return NULL;
	}
	return v;
}

void looker(void *arg)
{
	struct cache *c = arg;
	uint64_t id = weft_self_id();

	for (int i = 0; i < LOOKUPS; i++) {
		const char *name = names[(i + id) % NAMES];
		const struct host *h = lookup(c, name);
		if (!h || strcmp(h->name, name) != 0)
			atomic_fetch_add(&c->wrong, 1);
	}
	weft_wg_done(&c->wg);
}

static int print_and_free(const void *key, size_t keylen, void *val, void *arg)
{
	struct host *h = val;

	(void)arg;
	printf("  %-12.*s -> %s\n", (int)keylen, (const char *)key, h->addr);
	free(h);
	return 0; /* go on */
}

static int map_cache(void)
{
	static struct cache c; /* all-zero: the map and the WaitGroup are ready */

	printf("1. weft_map as a cache: %d goroutines x %d lookups of %d names\n", LOOKERS, LOOKUPS,
	       NAMES);
	if (!go_and_wait(looker, &c, &c.wg, LOOKERS))
		return 0;

	int64_t keys = weft_map_len(&c.m);
	int computed = atomic_load(&c.computed), stored = atomic_load(&c.stored);
	printf("  resolved %d times, stored %d (%d duplicates freed); %lld keys; wrong: %d\n",
	       computed, stored, computed - stored, (long long)keys, atomic_load(&c.wrong));
	weft_map_range(&c.m, print_and_free, NULL); /* the values are ours to free */
	weft_map_destroy(&c.m);
	/* One value per key; and a goroutine misses a name at most once, since
	 * after its own load_or_store the key is there. */
	return keys == NAMES && stored == NAMES && computed <= LOOKERS * NAMES &&
	       atomic_load(&c.wrong) == 0;
}

/* ---------------------------------------------------------------- part 2 */

#define WORKERS 8
#define REQUESTS 1000 /* per worker */

struct buffer {
	size_t len;
	char data[4096];
};

static atomic_int buffers_made, buffers_freed;

static void *new_buffer(void *arg)
{
	(void)arg;
	atomic_fetch_add(&buffers_made, 1);
	return malloc(sizeof(struct buffer));
}

static void free_buffer(void *obj, void *arg)
{
	(void)arg;
	atomic_fetch_add(&buffers_freed, 1);
	free(obj);
}

struct server {
	weft_pool pool;
	atomic_int bad; /* responses that came out wrong */
	weft_wg wg;
};

void serve(void *arg)
{
	struct server *s = arg;
	char want[64];

	for (int i = 0; i < REQUESTS; i++) {
		struct buffer *b = weft_pool_get(&s->pool);
		if (!b) {
			atomic_fetch_add(&s->bad, 1);
			continue;
		}
		b->len = 0; /* it may hold the last user's data: reset it */
		b->len +=
			snprintf(b->data + b->len, sizeof b->data - b->len, "HTTP/1.1 200 OK\r\n");
		b->len +=
			snprintf(b->data + b->len, sizeof b->data - b->len, "X-Request: %d\r\n", i);
		snprintf(want, sizeof want, "HTTP/1.1 200 OK\r\nX-Request: %d\r\n", i);
		if (strcmp(b->data, want) != 0 || b->len != strlen(want))
			atomic_fetch_add(&s->bad, 1);
		weft_pool_put(&s->pool, b); /* the pool owns it again */
	}
	weft_wg_done(&s->wg);
}

static int buffer_pool(void)
{
	static struct server s = {.pool = WEFT_POOL_INIT(new_buffer, free_buffer, NULL)};

	printf("2. weft_pool: %d goroutines x %d requests, a 4 KiB buffer each\n", WORKERS,
	       REQUESTS);
	if (!go_and_wait(serve, &s, &s.wg, WORKERS))
		return 0;
	int made = atomic_load(&buffers_made);
	weft_pool_destroy(&s.pool); /* free_fn gets every buffer the pool kept */
	int freed = atomic_load(&buffers_freed);
	printf("  %d buffers used, %d allocated (the rest recycled), %d freed; bad: %d\n",
	       WORKERS * REQUESTS, made, freed, atomic_load(&s.bad));
	/* Each goroutine holds one buffer at a time, so a few dozen at most. */
	return made >= 1 && made <= 64 && freed == made && atomic_load(&s.bad) == 0;
}

/* ---------------------------------------------------------------- part 3 */

#define CALLERS 10

static atomic_int slow_runs; /* how many times fetch_user ran */
static atomic_int asked;     /* callers that have asked so far */
static const char user_42[] = "Ada Lovelace";

/* The slow backend call that many goroutines want at once. It answers 20 ms
 * after the last caller has asked (or after a second), so that each caller
 * finds it in flight however slowly the goroutines happen to start. */
static int fetch_user(void *arg, void **result)
{
	int64_t give_up = weft_now() + 1000 * MS;

	(void)arg;
	atomic_fetch_add(&slow_runs, 1);
	while (atomic_load(&asked) < CALLERS && weft_now() < give_up)
		weft_sleep(1 * MS);
	weft_sleep(20 * MS);
	*result = (void *)user_42;
	return 0;
}

struct caller {
	weft_flight *f;
	void *result;
	int err, shared;
	weft_wg *wg;
};

void call_user_42(void *arg)
{
	struct caller *c = arg;

	atomic_fetch_add(&asked, 1);
	c->err = weft_flight_do(c->f, "user:42", 7, fetch_user, NULL, &c->result, &c->shared);
	weft_wg_done(c->wg);
}

static int single_flight(void)
{
	static weft_flight f; /* all-zero: ready */
	struct caller callers[CALLERS];
	weft_wg wg = WEFT_WG_INIT;
	int ok = 1, shared = 0;

	printf("3. weft_flight: %d goroutines ask for user:42 at once (a slow call)\n", CALLERS);
	for (int i = 0; i < CALLERS; i++) {
		callers[i] = (struct caller){.f = &f, .wg = &wg};
		weft_wg_add(&wg, 1);
		if (weft_go(call_user_42, &callers[i]) != 0)
			return 0;
	}
	weft_wg_wait(&wg);
	for (int i = 0; i < CALLERS; i++) {
		ok &= callers[i].err == 0 && callers[i].result == user_42;
		shared += callers[i].shared;
	}
	int runs = atomic_load(&slow_runs);
	printf("  the slow call ran %d time(s); %d callers got a shared result: %s\n", runs, shared,
	       (const char *)callers[0].result);
	ok &= runs == 1 && shared == CALLERS;

	/* Not a cache: once that call has returned, the next one runs again. */
	struct caller later = {.f = &f, .wg = &wg};
	weft_wg_add(&wg, 1);
	call_user_42(&later);
	printf("  one more call afterwards: the slow call has now run %d times\n",
	       atomic_load(&slow_runs));
	ok &= later.err == 0 && !later.shared && atomic_load(&slow_runs) == 2;
	weft_flight_destroy(&f);
	return ok;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = map_cache();
	int ok2 = buffer_pool();
	int ok3 = single_flight();

	if (!(ok1 && ok2 && ok3)) {
		fprintf(stderr, "wrong: map %d, pool %d, singleflight %d\n", ok1, ok2, ok3);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
