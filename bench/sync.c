/* SPDX-License-Identifier: MIT */
/*
 * sync.c - the cases for the rest of the sync package and for context:
 * RWMutexReadMostly, MapReadMostly and PoolGetPut (Go's benchRWMutex,
 * benchMap and benchPool, timed cases with quanta 80, 800 and 8) and
 * CancelFanout (Go's runCancelFanout, a case with its own repetition loop).
 *
 * The three timed cases share Go's shape: 8 goroutines doing n/8 ops each on
 * one shared object, timed from before the first spawn until the WaitGroup
 * wait returns; the shared object is made before the clock starts and freed
 * after it stops (weft_map_destroy and weft_pool_destroy do what Go's
 * garbage collector does later). What Go checks is checked here, outside the
 * timed span or where Go checks it: RWMutex's per-goroutine write counts,
 * every map load finding its key, every pool buffer having its 1 KiB.
 *
 * CancelFanout parks 10,000 goroutines on a receive from a context's done
 * channel (Go's `<-ctx.Done()`: each goroutine asks for the channel itself, so
 * the first one makes it, as in Go) and times the cancel until the WaitGroup
 * wait returns, averaged over 20 rounds per repetition. The goroutines borrow
 * main's reference to the context and its channel: every receive has returned
 * before its goroutine signals done, and main releases the context only after
 * waiting for done.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_G 8 /* goroutines in each timed case (Go's const G) */

/* Keeps RWMutexReadMostly's sums alive, as the Go suite's sink does. */
static volatile int64_t sync_sink;

/* ---------------------------------------------------------------- fan-out */

/*
 * What the timed cases share: SYNC_G goroutines, each told its index, doing
 * per ops each and signalling wg. A case's state starts with a struct fan, so
 * a goroutine gets from its worker to the case's state with one cast.
 */
struct fan;

struct fan_worker {
	struct fan *f; /* the case's state, which begins with f */
	int g;         /* Go's g: 0..SYNC_G-1 */
	int64_t sum;   /* RWMutexReadMostly's sums[g]: written by goroutine g, read after wg */
};

struct fan {
	int64_t per; /* ops per goroutine; read-only while they run */
	weft_wg wg;  /* done once by each goroutine */
	struct fan_worker w[SYNC_G];
};

/*
 * fan_run - Go's `wg.Add(G); start := time.Now(); for g { go f(g) };
 * wg.Wait(); time.Since(start)`: start fn on each worker of f, n/SYNC_G ops
 * each, and return the time until all have signalled f->wg.
 */
static int64_t fan_run(struct fan *f, int64_t n, weft_fn fn)
{
	int64_t start;
	int g;

	f->per = n / SYNC_G;
	weft_wg_add(&f->wg, SYNC_G);
	for (g = 0; g < SYNC_G; g++)
		f->w[g] = (struct fan_worker){.f = f, .g = g, .sum = 0};
	start = weft_now();
	for (g = 0; g < SYNC_G; g++)
		bench_go(fn, &f->w[g]);
	weft_wg_wait(&f->wg);
	return weft_now() - start;
}

/* ---------------------------------------------------------------- RWMutex */

struct rw_state {
	struct fan f;
	/* Each on its own line, as in Go, where a (64 bytes) escapes to its own
	 * allocation: the layout does not vary with main's stack. */
	_Alignas(64) weft_rwmutex mu;
	_Alignas(64) int64_t a[SYNC_G]; /* guarded by mu: a[g] written by goroutine g */
};

/* Op i: every tenth one (i % 10 == 9) increments a[g] under the write lock,
 * the others sum all eight entries under the read lock. */
static void rw_worker(void *p)
{
	struct fan_worker *w = p;
	struct rw_state *s = (struct rw_state *)w->f;
	int64_t i, sum = 0, per = s->f.per; /* Go's per, in a register */
	int k;

	for (i = 0; i < per; i++) {
		if (i % 10 == 9) {
			weft_rwmutex_lock(&s->mu);
			s->a[w->g]++;
			weft_rwmutex_unlock(&s->mu);
		} else {
			weft_rwmutex_rlock(&s->mu);
			for (k = 0; k < SYNC_G; k++)
				sum += s->a[k];
			weft_rwmutex_runlock(&s->mu);
		}
	}
	w->sum = sum;
	weft_wg_done(&s->f.wg);
}

int64_t bench_rwmutex(int64_t n)
{
	/* All-zero: an unlocked RWMutex, zero counters (WEFT_RWMUTEX_INIT is
	 * that too, but GCC's -Wmissing-braces objects to its {0} in a nested
	 * designated initializer). */
	struct rw_state s = {0};
	int64_t d;
	int g;

	d = fan_run(&s.f, n, rw_worker);
	for (g = 0; g < SYNC_G; g++) {
		if (s.a[g] != s.f.per / 10)
			bench_fatal("RWMutexReadMostly: a[%d] = %" PRId64 ", want %" PRId64, g,
			            s.a[g], s.f.per / 10);
		sync_sink += s.f.w[g].sum;
	}
	return d;
}

/* ---------------------------------------------------------------- Map */

#define MAP_K 1000 /* keys 0..MAP_K-1, Go's const K */

struct map_state {
	struct fan f;
	weft_map m;
};

/*
 * Keys and values are Go's ints: a key is the 8 bytes of an int64_t, a value
 * an int64_t in the pointer. Before each op, step this goroutine's xorshift64
 * and take key x % 1000; every hundredth op (i % 100 == 99) stores i under it,
 * the others load it. A load must find the key (all were stored before the
 * clock started, none is ever deleted), and its value must be one that was
 * stored: the key itself, or some goroutine's i with i % 100 == 99.
 */
static void map_worker(void *p)
{
	struct fan_worker *w = p;
	struct map_state *s = (struct map_state *)w->f;
	uint64_t x = (uint64_t)(w->g + 1) * UINT64_C(0x9E3779B97F4A7C15);
	int64_t i, key, v;
	void *val;
	int err;

	for (i = 0; i < s->f.per; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		key = (int64_t)(x % MAP_K);
		if (i % 100 == 99) {
			err = weft_map_store(&s->m, &key, sizeof(key), (void *)(intptr_t)i);
			if (err != 0)
				bench_fatal("MapReadMostly: store: %s", strerror(err));
			continue;
		}
		err = weft_map_load(&s->m, &key, sizeof(key), &val);
		if (err != 0)
			bench_fatal("MapReadMostly: load of key %" PRId64 ": %s", key,
			            strerror(err));
		v = (int64_t)(intptr_t)val;
		if (v != key && (v % 100 != 99 || v < 0 || v >= s->f.per))
			bench_fatal("MapReadMostly: key %" PRId64 " holds %" PRId64, key, v);
	}
	weft_wg_done(&s->f.wg);
}

int64_t bench_map(int64_t n)
{
	struct map_state s = {.m = WEFT_MAP_INIT};
	int64_t k, d;
	int err;

	for (k = 0; k < MAP_K; k++) {
		err = weft_map_store(&s.m, &k, sizeof(k), (void *)(intptr_t)k);
		if (err != 0)
			bench_fatal("MapReadMostly: store: %s", strerror(err));
	}
	d = fan_run(&s.f, n, map_worker);
	if (weft_map_len(&s.m) != MAP_K)
		bench_fatal("MapReadMostly: %" PRId64 " keys, want %d", weft_map_len(&s.m), MAP_K);
	weft_map_destroy(&s.m);
	return d;
}

/* ---------------------------------------------------------------- Pool */

#define POOL_SIZE 1024

/* Go's *[]byte: the length, then the 1 KiB it counts, in one allocation. */
struct pool_buf {
	size_t len;
	unsigned char data[POOL_SIZE];
};

struct pool_state {
	struct fan f;
	weft_pool p;
};

/* The pool's New: a zeroed 1 KiB buffer, as Go's make([]byte, size). */
static void *pool_new(void *arg)
{
	struct pool_buf *b = calloc(1, sizeof(*b));

	(void)arg;
	if (b == NULL)
		bench_fatal("PoolGetPut: out of memory");
	b->len = POOL_SIZE;
	return b;
}

static void pool_free(void *obj, void *arg)
{
	(void)arg;
	free(obj);
}

static void pool_worker(void *p)
{
	struct fan_worker *w = p;
	struct pool_state *s = (struct pool_state *)w->f;
	struct pool_buf *b;
	int64_t i;

	for (i = 0; i < s->f.per; i++) {
		b = weft_pool_get(&s->p);
		if (b == NULL || b->len != POOL_SIZE)
			bench_fatal("PoolGetPut: pool buffer %p", (void *)b);
		weft_pool_put(&s->p, b);
	}
	weft_wg_done(&s->f.wg);
}

int64_t bench_pool(int64_t n)
{
	struct pool_state s = {.p = WEFT_POOL_INIT(pool_new, pool_free, NULL)};
	int64_t d;

	d = fan_run(&s.f, n, pool_worker);
	weft_pool_destroy(&s.p);
	return d;
}

/* ---------------------------------------------------------------- CancelFanout */

#define CANCEL_G 10000
#define CANCEL_ROUNDS 20

struct cancel_state {
	weft_ctx *ctx; /* cancelled by main; borrowed by the goroutines */
	weft_wg ready; /* each goroutine: done once it is about to park */
	weft_wg done;  /* each goroutine: done once its receive returned */
};

static void cancel_waiter(void *p)
{
	struct cancel_state *s = p;
	weft_chan *done;
	int err;

	weft_wg_done(&s->ready);
	done = weft_ctx_done(s->ctx);
	if (done == NULL)
		bench_fatal("CancelFanout: weft_ctx_done: no channel");
	err = weft_chan_recv(done, NULL); /* Go: <-ctx.Done() */
	if (err != EPIPE)
		bench_fatal("CancelFanout: <-ctx.Done() returned %d, want EPIPE", err);
	weft_wg_done(&s->done);
}

void bench_cancel_fanout(const struct bench_case *c)
{
	char extra[64];
	int r, k, g, err;

	for (r = 0; r < bench_flags.reps; r++) {
		int64_t total = 0;
		double per;

		for (k = 0; k < CANCEL_ROUNDS; k++) {
			struct cancel_state s = {.ready = WEFT_WG_INIT, .done = WEFT_WG_INIT};
			int64_t start;

			err = weft_ctx_with_cancel(weft_ctx_background(), &s.ctx);
			if (err != 0)
				bench_fatal("CancelFanout: weft_ctx_with_cancel: %s",
				            strerror(err));
			weft_wg_add(&s.ready, CANCEL_G);
			weft_wg_add(&s.done, CANCEL_G);
			for (g = 0; g < CANCEL_G; g++)
				bench_go(cancel_waiter, &s);
			weft_wg_wait(&s.ready);
			weft_sleep(2 * BENCH_MS); /* let all park */
			start = weft_now();
			weft_ctx_cancel(s.ctx);
			weft_wg_wait(&s.done);
			total += weft_now() - start;
			weft_ctx_release(s.ctx);
		}
		per = (double)total / CANCEL_ROUNDS;
		snprintf(extra, sizeof(extra), "\t%.2f ns/goroutine", per / CANCEL_G);
		bench_report(c->name, CANCEL_ROUNDS, per, extra);
	}
}
