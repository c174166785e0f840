/* SPDX-License-Identifier: MIT */
/*
 * 12_rwmutex_once_cond.c - the rest of the classic toolbox: weft_rwmutex,
 * weft_once and weft_cond (Go's sync.RWMutex, sync.Once and sync.Cond).
 *
 * Two parts:
 *  1. a read-mostly configuration cache. Many readers take the read lock at
 *     once (weft_rwmutex_rlock); the rare writer takes the write lock, which
 *     waits for the readers inside to leave and keeps new ones out while it
 *     updates. Each reader checks that it never sees half an update. The
 *     configuration is loaded lazily, on first use, by weft_once_do(): every
 *     reader calls it, one of them runs the loader, and all return after it
 *     has finished. Go:
 *
 *       func get() Config { once.Do(load); mu.RLock(); defer mu.RUnlock(); return cfg }
 *
 *  2. a bounded queue (a hand-made buffered channel) from a weft_mutex and
 *     two weft_conds: producers wait on not_full, consumers on not_empty, and
 *     each side signals the other. The waits sit in `while` loops, because a
 *     woken waiter must test its condition again: another goroutine may have
 *     taken the slot first. In real code a buffered channel (07_channels)
 *     does this for you; a Cond is for conditions a channel cannot express.
 *
 * Run: ./12_rwmutex_once_cond
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

/* ---------------------------------------------------------------- part 1 */

#define READERS 8
#define READS 2000
#define UPDATES 50

struct config {
	weft_once once;   /* runs load_config, once */
	atomic_int loads; /* how many times load_config ran */
	weft_rwmutex mu;  /* guards the fields below */
	int version;      /* guarded by mu */
	int timeout_ms;   /* guarded by mu; always version * 10 */
	int retries;      /* guarded by mu; always version % 7 */
	weft_wg wg;
};

static void load_config(void *arg)
{
	struct config *c = arg;

	atomic_fetch_add(&c->loads, 1);
	weft_sleep(2 * MS); /* pretend to read a file */
	/* No lock needed: nobody reads before weft_once_do() returns. */
	c->version = 1;
	c->timeout_ms = 10;
	c->retries = 1;
}

/* A consistent copy of the configuration. */
static void get_config(struct config *c, int *version, int *timeout_ms, int *retries)
{
	weft_once_do(&c->once, load_config, c);
	weft_rwmutex_rlock(&c->mu);
	*version = c->version;
	*timeout_ms = c->timeout_ms;
	*retries = c->retries;
	weft_rwmutex_runlock(&c->mu);
}

static atomic_int torn_reads; /* snapshots that mixed two versions */

void config_reader(void *arg)
{
	struct config *c = arg;
	int version, timeout_ms, retries, last = 0;

	for (int i = 0; i < READS; i++) {
		get_config(c, &version, &timeout_ms, &retries);
		if (timeout_ms != version * 10 || retries != version % 7 || version < last)
			atomic_fetch_add(&torn_reads, 1);
		last = version;
		if (i % 64 == 0)
			weft_yield();
	}
	weft_wg_done(&c->wg);
}

void config_writer(void *arg)
{
	struct config *c = arg;

	weft_once_do(&c->once, load_config, c);
	for (int u = 0; u < UPDATES; u++) {
		weft_rwmutex_lock(&c->mu);
		c->version++;
		weft_yield(); /* readers cannot get in while we hold the write lock */
		c->timeout_ms = c->version * 10;
		c->retries = c->version % 7;
		weft_rwmutex_unlock(&c->mu);
		weft_sleep(100 * 1000); /* 100 us: writes are rare */
	}
	weft_wg_done(&c->wg);
}

static int config_cache(void)
{
	static struct config c; /* all-zero: once, rwmutex and WaitGroup ready */
	int version, timeout_ms, retries;

	printf("1. a config cache: %d readers, 1 writer, loaded lazily\n", READERS);
	weft_wg_add(&c.wg, READERS + 1);
	for (int r = 0; r < READERS; r++)
		if (weft_go(config_reader, &c) != 0)
			return 0;
	if (weft_go(config_writer, &c) != 0)
		return 0;
	weft_wg_wait(&c.wg);

	get_config(&c, &version, &timeout_ms, &retries);
	printf("  %d reads, %d updates; load_config ran %d time(s); torn reads: %d\n",
	       READERS * READS, UPDATES, atomic_load(&c.loads), atomic_load(&torn_reads));
	printf("  final config: version %d, timeout %d ms, %d retries\n", version, timeout_ms,
	       retries);
	return atomic_load(&c.loads) == 1 && atomic_load(&torn_reads) == 0 &&
	       version == 1 + UPDATES && weft_once_done(&c.once);
}

/* ---------------------------------------------------------------- part 2 */

#define QUEUE_CAP 4
#define PRODUCERS 3
#define CONSUMERS 3
#define ITEMS 2000 /* per producer */

struct queue {
	weft_mutex mu;        /* guards everything below */
	weft_cond not_full;   /* signalled when an item is taken */
	weft_cond not_empty;  /* signalled when an item is added, or on close */
	int items[QUEUE_CAP]; /* a ring */
	int head, len;        /* the oldest item; how many there are */
	int max_len;          /* the fullest it has been */
	int closed;           /* no more puts; getters drain, then stop */
};

static void queue_put(struct queue *q, int v)
{
	weft_mutex_lock(&q->mu);
	while (q->len == QUEUE_CAP)
		weft_cond_wait(&q->not_full, &q->mu); /* unlocks, waits, relocks */
	q->items[(q->head + q->len) % QUEUE_CAP] = v;
	q->len++;
	if (q->len > q->max_len)
		q->max_len = q->len;
	weft_cond_signal(&q->not_empty);
	weft_mutex_unlock(&q->mu);
}

/* Returns 1 and the next item, or 0 once the queue is closed and empty. */
static int queue_get(struct queue *q, int *v)
{
	weft_mutex_lock(&q->mu);
	while (q->len == 0 && !q->closed)
		weft_cond_wait(&q->not_empty, &q->mu);
	int got = q->len > 0;
	if (got) {
		*v = q->items[q->head];
		q->head = (q->head + 1) % QUEUE_CAP;
		q->len--;
		weft_cond_signal(&q->not_full);
	}
	weft_mutex_unlock(&q->mu);
	return got;
}

static void queue_close(struct queue *q)
{
	weft_mutex_lock(&q->mu);
	q->closed = 1;
	weft_cond_broadcast(&q->not_empty); /* every waiting consumer must look */
	weft_mutex_unlock(&q->mu);
}

struct worker {
	struct queue *q;
	int id;
	long sum;  /* a consumer's: the sum of what it got */
	int count; /* a consumer's: how many it got */
	weft_wg *wg;
};

void producer(void *arg)
{
	struct worker *w = arg;

	for (int i = 1; i <= ITEMS; i++)
		queue_put(w->q, w->id * ITEMS + i);
	weft_wg_done(w->wg);
}

void consumer(void *arg)
{
	struct worker *w = arg;
	int v;

	while (queue_get(w->q, &v)) {
		w->sum += v;
		w->count++;
	}
	weft_wg_done(w->wg);
}

static int bounded_queue(void)
{
	static struct queue q; /* all-zero: mutex and conds ready, queue empty */
	struct worker prod[PRODUCERS], cons[CONSUMERS];
	weft_wg producers = WEFT_WG_INIT, consumers = WEFT_WG_INIT;
	long sum = 0, want = 0;
	int count = 0;

	printf("2. a bounded queue of %d: %d producers, %d consumers, Mutex + 2 Conds\n", QUEUE_CAP,
	       PRODUCERS, CONSUMERS);
	for (int c = 0; c < CONSUMERS; c++) {
		cons[c] = (struct worker){.q = &q, .id = c, .wg = &consumers};
		weft_wg_add(&consumers, 1);
		if (weft_go(consumer, &cons[c]) != 0)
			return 0;
	}
	for (int p = 0; p < PRODUCERS; p++) {
		prod[p] = (struct worker){.q = &q, .id = p, .wg = &producers};
		weft_wg_add(&producers, 1);
		if (weft_go(producer, &prod[p]) != 0)
			return 0;
		for (int i = 1; i <= ITEMS; i++)
			want += p * ITEMS + i;
	}
	weft_wg_wait(&producers);
	queue_close(&q); /* only after the last put, as a channel is closed */
	weft_wg_wait(&consumers);

	for (int c = 0; c < CONSUMERS; c++) {
		printf("  consumer %d got %d items\n", c, cons[c].count);
		sum += cons[c].sum;
		count += cons[c].count;
	}
	printf("  %d items (want %d), sum %ld (want %ld); the queue never held more than %d\n",
	       count, PRODUCERS * ITEMS, sum, want, q.max_len);
	return count == PRODUCERS * ITEMS && sum == want && q.max_len <= QUEUE_CAP;
}

static int run(void *unused)
{
	(void)unused;
	int ok1 = config_cache();
	int ok2 = bounded_queue();

	if (!(ok1 && ok2)) {
		fprintf(stderr, "wrong: config cache %d, bounded queue %d\n", ok1, ok2);
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
