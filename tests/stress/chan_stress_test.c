/* SPDX-License-Identifier: MIT */
/*
 * chan_stress_test.c - bounded-time stresses of channels: many producers and
 * consumers (goroutines and foreign pthreads) on one channel, unbuffered and
 * buffered, using every send and receive form (blocking, try, _until,
 * select) at random, with close racing against them at a random moment;
 * a million messages between foreign threads and goroutines in both
 * directions; and channels released by their last user while waiters with
 * deadlines are still parked on them. Invariants: every value whose send
 * returned 0 is received exactly once, no value whose send failed is ever
 * received, each consumer sees each producer's values in order, every
 * goroutine and thread ends. Meant to be run under chaos mode with several
 * seeds, and under the sanitizers (ASan sees a channel freed too early or
 * never freed).
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- close races */

enum {
	PROD_G = 8, PROD_T = 2, PROD = PROD_G + PROD_T,
	CONS_G = 8, CONS_T = 2, CONS = CONS_G + CONS_T,
	MAXSEQ = 1 << 16, /* per producer per round */
};

/* A message: who sent it and its sequence number in that producer. */
struct msg {
	uint32_t producer;
	uint32_t seq;
};

struct race {
	weft_chan *c;
	weft_chan *never_r;    /* only ever in receive cases: never ready */
	weft_chan *never_s;    /* only ever in send cases: never ready */
	uint32_t seed;
	_Atomic uint8_t *seen; /* [PROD * MAXSEQ]: times each value was received */
	uint32_t sent[PROD];   /* sends that returned 0, per producer */
	atomic_long received;
	atomic_long bogus;     /* a message that cannot have been sent */
	atomic_long dups;
	atomic_long misordered;
	long close_at;         /* the closer closes once this many were received */
	weft_wg producers, consumers, closer;
};

static struct race rc;

struct worker_arg {
	int id;
	uint32_t seed;
};

/* A short deadline for the _until forms: 0 to 200 us, sometimes past. */
static int64_t short_deadline(uint32_t *s)
{
	return weft_now() + (int64_t)(test_rand32(s) % 220) * WEFT_MICROSECOND - 20 * WEFT_MICROSECOND;
}

/* One attempt at sending m with a random form: 0, EPIPE, or EAGAIN /
 * ETIMEDOUT (nothing sent: try again with the same value). */
static int send_any(struct msg *m, uint32_t *s)
{
	switch (test_rand32(s) % 4) {
	case 0:
		return weft_chan_send(rc.c, m);
	case 1:
		return weft_chan_trysend(rc.c, m);
	case 2:
		return weft_chan_send_until(rc.c, m, short_deadline(s));
	default: {
		struct msg junk;
		weft_case cs[3] = { WEFT_RECV_CASE(rc.never_r, &junk), WEFT_SEND_CASE(rc.c, m),
				    WEFT_SEND_CASE(NULL, m) };
		int chosen = -1, r = weft_select(cs, 3, &chosen);
		if (chosen != 1)
			FAIL("select chose case %d, which can never be ready", chosen);
		return r;
	}
	}
}

static int recv_any(struct msg *m, uint32_t *s)
{
	switch (test_rand32(s) % 4) {
	case 0:
		return weft_chan_recv(rc.c, m);
	case 1:
		return weft_chan_tryrecv(rc.c, m);
	case 2:
		return weft_chan_recv_until(rc.c, m, short_deadline(s));
	default: {
		struct msg junk;
		int chosen = -1, r;
		weft_case cs[3] = { WEFT_RECV_CASE(NULL, &junk), WEFT_SEND_CASE(rc.never_s, &junk),
				    WEFT_RECV_CASE(rc.c, m) };
		if (test_rand32(s) % 2) {
			r = weft_select(cs, 3, &chosen);
		} else {
			r = weft_select_until(cs, 3, &chosen, short_deadline(s));
			if (r == ETIMEDOUT)
				return r;
		}
		if (chosen != 2)
			FAIL("select chose case %d, which can never be ready", chosen);
		return r;
	}
	}
}

static void producer(void *arg)
{
	struct worker_arg *a = arg;
	uint32_t s = a->seed | 1;
	struct msg m = { (uint32_t)a->id, 0 };
	while (m.seq < MAXSEQ) {
		if (test_rand32(&s) % 8 == 0)
			weft_yield();
		int r = send_any(&m, &s);
		if (r == 0)
			m.seq++;
		else if (r == EPIPE)
			break;
		else if (r != EAGAIN && r != ETIMEDOUT)
			FAIL("send: unexpected result %d", r);
	}
	rc.sent[a->id] = m.seq; /* read after the join */
	weft_wg_done(&rc.producers);
}

static void consumer(void *arg)
{
	struct worker_arg *a = arg;
	uint32_t s = a->seed | 1;
	int64_t last[PROD];
	for (int i = 0; i < PROD; i++)
		last[i] = -1;
	for (;;) {
		if (test_rand32(&s) % 8 == 0)
			weft_yield();
		struct msg m = { UINT32_MAX, UINT32_MAX };
		int r = recv_any(&m, &s);
		if (r == EPIPE) {
			if (m.producer != 0 || m.seq != 0)
				atomic_fetch_add(&rc.bogus, 1); /* not zeroed */
			break;
		}
		if (r == EAGAIN || r == ETIMEDOUT)
			continue;
		if (r != 0)
			FAIL("recv: unexpected result %d", r);
		if (m.producer >= PROD || m.seq >= MAXSEQ) {
			atomic_fetch_add(&rc.bogus, 1);
			continue;
		}
		if (atomic_fetch_add(&rc.seen[m.producer * MAXSEQ + m.seq], 1) != 0)
			atomic_fetch_add(&rc.dups, 1);
		if ((int64_t)m.seq <= last[m.producer])
			atomic_fetch_add(&rc.misordered, 1);
		last[m.producer] = m.seq;
		atomic_fetch_add(&rc.received, 1);
	}
	weft_wg_done(&rc.consumers);
}

static void closer(void *arg)
{
	(void)arg;
	uint32_t s = rc.seed * 7 | 1;
	int64_t give_up = test_now_ns() + 2000 * TEST_MS * test_slowdown();
	while (atomic_load(&rc.received) < rc.close_at && test_now_ns() < give_up) {
		if (test_rand32(&s) % 2)
			weft_yield();
		else
			weft_sleep((int64_t)(test_rand32(&s) % 50) * WEFT_MICROSECOND);
	}
	weft_chan_close(rc.c);
	weft_wg_done(&rc.closer);
}

/* One round: fresh channel of capacity cap, all workers, close, checks. */
static void race_round(size_t cap, uint32_t seed)
{
	struct worker_arg pa[PROD], ca[CONS];
	pthread_t pth[PROD_T], cth[CONS_T], clth;
	uint32_t s = seed | 1;

	rc.seed = seed;
	ASSERT_EQ(weft_chan_make(&rc.c, sizeof(struct msg), cap), 0);
	memset((void *)rc.seen, 0, (size_t)PROD * MAXSEQ);
	memset(rc.sent, 0, sizeof rc.sent);
	atomic_store(&rc.received, 0);
	/* Close before anything moved, early, or after a good while. */
	switch (test_rand32(&s) % 4) {
	case 0:
		rc.close_at = 0;
		break;
	case 1:
		rc.close_at = test_rand32(&s) % 64;
		break;
	default:
		rc.close_at = test_rand32(&s) % 20000;
	}
	bool closer_is_thread = test_rand32(&s) % 4 == 0;
	weft_wg_add(&rc.producers, PROD);
	weft_wg_add(&rc.consumers, CONS);
	weft_wg_add(&rc.closer, 1);
	for (int i = 0; i < PROD; i++)
		pa[i] = (struct worker_arg){ i, test_rand32(&s) };
	for (int i = 0; i < CONS; i++)
		ca[i] = (struct worker_arg){ i, test_rand32(&s) };
	for (int i = 0; i < PROD_T; i++)
		test_start_thread(&pth[i], producer, &pa[PROD_G + i]);
	for (int i = 0; i < CONS_T; i++)
		test_start_thread(&cth[i], consumer, &ca[CONS_G + i]);
	for (int i = 0; i < PROD_G; i++)
		GO(producer, &pa[i]);
	for (int i = 0; i < CONS_G; i++)
		GO(consumer, &ca[i]);
	if (closer_is_thread)
		test_start_thread(&clth, closer, NULL);
	else
		GO(closer, NULL);

	weft_wg_wait(&rc.producers);
	weft_wg_wait(&rc.consumers);
	weft_wg_wait(&rc.closer);
	for (int i = 0; i < PROD_T; i++)
		test_join_thread(pth[i]);
	for (int i = 0; i < CONS_T; i++)
		test_join_thread(cth[i]);
	if (closer_is_thread)
		test_join_thread(clth);

	if (atomic_load(&rc.bogus) || atomic_load(&rc.dups) || atomic_load(&rc.misordered))
		FAIL("cap %zu seed %u: %ld bogus, %ld duplicated, %ld out of order", cap,
		     seed, atomic_load(&rc.bogus), atomic_load(&rc.dups),
		     atomic_load(&rc.misordered));
	long total = 0;
	for (uint32_t p = 0; p < PROD; p++) {
		total += rc.sent[p];
		for (uint32_t q = 0; q < MAXSEQ; q++) {
			uint8_t n = atomic_load(&rc.seen[p * MAXSEQ + q]);
			if (q < rc.sent[p] && n != 1)
				FAIL("cap %zu seed %u: producer %u's value %u, sent, was "
				     "received %u times", cap, seed, p, q, n);
			if (q >= rc.sent[p] && n != 0)
				FAIL("cap %zu seed %u: producer %u's value %u was received, "
				     "but its send failed (%u sent)", cap, seed, p, q, rc.sent[p]);
		}
	}
	ASSERT_EQ(total, atomic_load(&rc.received));
	weft_chan_release(rc.c);
}

/*
 * Rounds of 8 goroutine and 2 pthread producers, 8 goroutine and 2 pthread
 * consumers on one channel (capacity 0, 1, 7 or 64 in turn), at 1 and 2 Ps
 * in turn (at 1 P a close's cascade leaves waiters queued on the closed
 * channel for a while), each using send/recv, the try forms, the _until
 * forms with deadlines of up to 200 us (some past) and selects with
 * never-ready cases, yielding at random;
 * a closer (a goroutine, or a pthread in a quarter of the rounds) closes
 * the channel at once, early or after up to 20,000 receives. Producers send
 * until EPIPE, consumers receive until EPIPE. For 3 s (0.8 s quick). Every
 * value whose send returned 0 must be received exactly once, none whose send
 * returned anything else, per producer in order, and the EPIPE element
 * zeroed. Guards: a send that reports EPIPE after its value was buffered or
 * handed over (close racing a send), a buffered value dropped by close, a
 * try or _until form that delivers and still reports failure (a duplicate on
 * retry), a value handed to a receiver that already timed out (lost), a
 * cascade that skips or repeats a waiter (a hang, a value twice).
 */
TEST(close_races_producers_and_consumers)
{
	static const size_t caps[] = { 0, 1, 7, 64 };
	rc = (struct race){ 0 };
	rc.seen = calloc((size_t)PROD * MAXSEQ, 1);
	ASSERT(rc.seen != NULL);
	ASSERT_EQ(weft_chan_make(&rc.never_r, sizeof(struct msg), 0), 0);
	ASSERT_EQ(weft_chan_make(&rc.never_s, sizeof(struct msg), 0), 0);
	int64_t end = test_now_ns() + TEST_SIZE(3000, 800) * TEST_MS;
	uint32_t seed = 1;
	long rounds = 0, msgs = 0;
	const char *env = getenv("CHAN_STRESS_SEED");
	if (env)
		seed = (uint32_t)strtoul(env, NULL, 0);
	do {
		/* 1 P and 2 in turn, each over all four capacities: at 1 P a
		 * close wakes its waiters in a cascade, so the close races
		 * operations on a closed channel that still has waiters. */
		ASSERT_EQ(weft_set_procs(1 + (int)(rounds / 4 % 2), NULL), 0);
		race_round(caps[rounds % 4], seed);
		msgs += atomic_load(&rc.received);
		seed = seed * 1664525u + 1013904223u;
		rounds++;
	} while (test_now_ns() < end && !env);
	printf("    %ld rounds, %ld messages\n", rounds, msgs);
	weft_chan_release(rc.never_r);
	weft_chan_release(rc.never_s);
	free((void *)rc.seen);
}

/* ---------------------------------------------------------------- a million */

enum { MIL_T = 2, MIL_G = 4 };

struct flow {
	weft_chan *c;
	long n;                /* values 0..n-1 */
	_Atomic uint8_t *seen;
	atomic_long next;      /* the next value to send, shared by the senders */
	atomic_long received;
	atomic_long bad;
	weft_wg senders, receivers;
};

static void flow_send(struct flow *f)
{
	for (;;) {
		long v = atomic_fetch_add(&f->next, 1);
		if (v >= f->n)
			break;
		int64_t x = v;
		ASSERT_EQ(weft_chan_send(f->c, &x), 0);
	}
}

static void flow_recv(struct flow *f)
{
	int64_t x;
	while (weft_chan_recv(f->c, &x) == 0) {
		if (x < 0 || x >= f->n || atomic_fetch_add(&f->seen[x], 1) != 0)
			atomic_fetch_add(&f->bad, 1);
		atomic_fetch_add(&f->received, 1);
	}
}

static struct flow to_goroutines, to_threads;

static void thread_side(void *arg)
{
	(void)arg;
	flow_send(&to_goroutines);
	weft_wg_done(&to_goroutines.senders);
	flow_recv(&to_threads);
	weft_wg_done(&to_threads.receivers);
}

static void goroutine_sender(void *arg)
{
	(void)arg;
	flow_send(&to_threads);
	weft_wg_done(&to_threads.senders);
}

static void goroutine_receiver(void *arg)
{
	(void)arg;
	flow_recv(&to_goroutines);
	weft_wg_done(&to_goroutines.receivers);
}

static void flow_init(struct flow *f, size_t cap, long n)
{
	*f = (struct flow){ .n = n };
	ASSERT_EQ(weft_chan_make(&f->c, sizeof(int64_t), cap), 0);
	f->seen = calloc((size_t)n, 1);
	ASSERT(f->seen != NULL);
}

static void flow_check(struct flow *f, const char *name)
{
	ASSERT_EQ(atomic_load(&f->bad), 0);
	ASSERT_EQ(atomic_load(&f->received), f->n);
	for (long i = 0; i < f->n; i++)
		if (atomic_load(&f->seen[i]) != 1)
			FAIL("%s: value %ld received %d times", name, i, atomic_load(&f->seen[i]));
	free((void *)f->seen);
	weft_chan_release(f->c);
}

/* n values from 2 pthreads to 4 goroutines and n from 4 goroutines to the
 * same 2 pthreads at once, over two channels of capacity cap. */
static void both_ways(size_t cap, long n)
{
	flow_init(&to_goroutines, cap, n);
	flow_init(&to_threads, cap, n);
	weft_wg_add(&to_goroutines.senders, MIL_T);
	weft_wg_add(&to_goroutines.receivers, MIL_G);
	weft_wg_add(&to_threads.senders, MIL_G);
	weft_wg_add(&to_threads.receivers, MIL_T);
	pthread_t th[MIL_T];
	int64_t t0 = test_now_ns();
	for (int i = 0; i < MIL_T; i++)
		test_start_thread(&th[i], thread_side, NULL);
	for (int i = 0; i < MIL_G; i++) {
		GO(goroutine_sender, NULL);
		GO(goroutine_receiver, NULL);
	}
	weft_wg_wait(&to_goroutines.senders);
	weft_chan_close(to_goroutines.c);
	weft_wg_wait(&to_threads.senders);
	weft_chan_close(to_threads.c);
	weft_wg_wait(&to_goroutines.receivers);
	weft_wg_wait(&to_threads.receivers);
	for (int i = 0; i < MIL_T; i++)
		test_join_thread(th[i]);
	printf("    cap %zu: 2 x %ld messages in %.1f ms\n", cap, n,
	       (double)(test_now_ns() - t0) / 1e6);
	flow_check(&to_goroutines, "threads to goroutines");
	flow_check(&to_threads, "goroutines to threads");
}

/*
 * A million messages in all, half from 2 foreign pthreads to 4 goroutines
 * and half from the goroutines to the pthreads, at the same time, over
 * buffered (cap 128) channels; then 2 x 50,000 over unbuffered ones, where
 * every message is a hand-off between a goroutine and a parked thread or
 * the reverse (a tenth of each quick). Every value arrives exactly once.
 * Guards: lost futex wake-ups of parked threads (hang), a value copied
 * into a foreign waiter's record after it gave up, races between the
 * foreign-thread and goroutine paths of the wait protocol.
 */
TEST(million_messages_threads_and_goroutines)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	both_ways(128, TEST_SIZE(500000, 50000));
	both_ways(0, TEST_SIZE(50000, 5000));
}

/* ---------------------------------------------------------------- orphans */

struct orphan_arg {
	weft_chan *c;     /* goroutines borrow it; the thread owns a reference */
	weft_chan *other; /* a second case for the selects */
	uint32_t seed;
	atomic_int *returned;
	weft_wg *wg;
};

/* Receive from c, or select over c and other, until a deadline 0.5 to 3 ms
 * away. Receives only: waiters never complete each other. */
static int orphan_wait(struct orphan_arg *a)
{
	uint32_t s = a->seed | 1;
	int64_t d = weft_now() + (int64_t)(500 + test_rand32(&s) % 2500) * WEFT_MICROSECOND;
	int64_t v;
	int chosen;
	if (test_rand32(&s) % 2)
		return weft_chan_recv_until(a->c, &v, d);
	weft_case cs[2] = { WEFT_RECV_CASE(a->c, &v), WEFT_RECV_CASE(a->other, &v) };
	int r = weft_select_until(cs, 2, &chosen, d);
	if (r == 0 && chosen != 1)
		FAIL("a value came on the released channel");
	return r;
}

static void orphan_waiter(void *arg)
{
	struct orphan_arg *a = arg;
	int r = orphan_wait(a);
	ASSERT(r == 0 || r == ETIMEDOUT);
	atomic_fetch_add(a->returned, 1);
	weft_wg_done(a->wg);
}

static void orphan_waiter_thread(void *arg)
{
	struct orphan_arg *a = arg;
	int r = orphan_wait(a);
	ASSERT(r == 0 || r == ETIMEDOUT);
	weft_chan_release(a->c); /* its own reference: maybe the last one */
	weft_wg_done(a->wg);
}

/*
 * Rounds at 2 Ps: 6 goroutines wait on one unbuffered channel with
 * deadlines of 0.5 to 3 ms (receives, and selects that also wait on a
 * second channel), borrowing the creator's reference; a pthread waits too,
 * holding a reference of its own that it drops when its wait ends. Once
 * every goroutine has parked (weft_stats: the parks count rose by 6; each
 * parks at most once), the creator releases its reference, so the channel
 * has waiters and no holder, or none at all once the thread is done; then
 * it sometimes wakes a select through its other channel. The last waiter
 * to leave (by timeout, or by the other case) frees the channel. For 1 s
 * (0.3 s quick). Guards: a parked waiter that does not keep the channel
 * alive (use after free: ASan), a channel never freed when its last waiter
 * leaves (LeakSanitizer), freed twice when two leave at once, a release
 * racing the thread's release.
 */
TEST(release_races_waiters)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	enum { W_G = 6 };
	weft_chan *other;
	ASSERT_EQ(weft_chan_make(&other, sizeof(int64_t), 0), 0);
	int64_t end = test_now_ns() + TEST_SIZE(1000, 300) * TEST_MS;
	uint32_t s = 777;
	long rounds = 0, orphaned = 0;
	do {
		weft_chan *c;
		ASSERT_EQ(weft_chan_make(&c, sizeof(int64_t), 0), 0);
		atomic_int returned = 0;
		weft_wg wg = WEFT_WG_INIT;
		struct orphan_arg args[W_G + 1];
		pthread_t th;
		weft_stats st;
		for (int i = 0; i <= W_G; i++)
			args[i] = (struct orphan_arg){ c, other, test_rand32(&s), &returned, &wg };
		weft_wg_add(&wg, W_G + 1);
		weft_chan_retain(c);
		test_start_thread(&th, orphan_waiter_thread, &args[W_G]);
		weft_stats_get(&st);
		int64_t parks0 = st.parks;
		for (int i = 0; i < W_G; i++)
			GO(orphan_waiter, &args[i]);
		for (;;) {
			weft_stats_get(&st);
			if (st.parks - parks0 >= W_G || atomic_load(&returned) == W_G)
				break;
			weft_yield();
		}
		orphaned += atomic_load(&returned) == 0;
		weft_chan_release(c);
		if (test_rand32(&s) % 2) {
			int64_t v = 1;
			weft_chan_send_until(other, &v, weft_now() + 100 * WEFT_MICROSECOND);
		}
		weft_wg_wait(&wg);
		test_join_thread(th);
		rounds++;
	} while (test_now_ns() < end);
	printf("    %ld rounds, %ld with every goroutine parked at the release\n", rounds,
	       orphaned);
	ASSERT_GT(orphaned, 0);
	weft_chan_release(other);
}
