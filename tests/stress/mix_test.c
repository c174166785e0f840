/* SPDX-License-Identifier: MIT */
/*
 * mix_test.c - a bounded-time stress of everything at once: goroutines that
 * spawn children, lock a shared mutex, fan out and join on WaitGroups, sleep,
 * yield and make blocking calls, while a controller changes the number of Ps
 * and foreign pthreads take the same mutex. Invariants: the mutex-protected
 * counter equals the number of increments made, every goroutine started
 * ends, and nothing hangs. Meant to be run under chaos mode with several
 * seeds, and under the sanitizers.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct mix {
	weft_mutex mu;
	long counter;          /* protected by mu */
	atomic_long increments;
	atomic_long spawned;
	atomic_long finished;
	atomic_int stop;
	int64_t end_ns;
};

static struct mix mx;

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void locked_add(void)
{
	weft_mutex_lock(&mx.mu);
	mx.counter++;
	weft_mutex_unlock(&mx.mu);
	atomic_fetch_add(&mx.increments, 1);
}

struct leaf_arg {
	weft_wg *wg;
	uint32_t seed;
};

static void leaf(void *arg)
{
	struct leaf_arg *a = arg;
	uint32_t s = a->seed | 1;
	switch (rnd(&s) % 4) {
	case 0:
		locked_add();
		break;
	case 1:
		weft_yield();
		break;
	case 2:
		weft_sleep((int64_t)(rnd(&s) % 200) * 1000);
		break;
	case 3:
		locked_add();
		weft_yield();
		locked_add();
		break;
	}
	atomic_fetch_add(&mx.finished, 1);
	weft_wg_done(a->wg);
}

static void worker(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u | 1;
	while (!atomic_load(&mx.stop) && test_now_ns() < mx.end_ns) {
		switch (rnd(&s) % 6) {
		case 0: { /* fan out and join */
			enum { K = 8 };
			struct leaf_arg la[K];
			weft_wg wg = WEFT_WG_INIT;
			weft_wg_add(&wg, K);
			for (int i = 0; i < K; i++) {
				la[i] = (struct leaf_arg){ &wg, rnd(&s) };
				atomic_fetch_add(&mx.spawned, 1);
				GO(leaf, &la[i]);
			}
			weft_wg_wait(&wg);
			break;
		}
		case 1:
			locked_add();
			break;
		case 2:
			weft_sleep((int64_t)(rnd(&s) % 500) * 1000);
			break;
		case 3:
			weft_yield();
			break;
		case 4: {
			weft_blocking_begin();
			struct timespec ts = { 0, (long)(rnd(&s) % 100) * 1000 };
			nanosleep(&ts, NULL);
			weft_blocking_end();
			break;
		}
		case 5:
			weft_mutex_lock(&mx.mu);
			mx.counter++;
			weft_yield(); /* hold it across a switch */
			weft_mutex_unlock(&mx.mu);
			atomic_fetch_add(&mx.increments, 1);
			break;
		}
	}
	atomic_fetch_add(&mx.finished, 1);
}

static void *foreign_worker(void *arg)
{
	(void)arg;
	while (!atomic_load(&mx.stop) && test_now_ns() < mx.end_ns) {
		locked_add();
		weft_sleep(50000);
	}
	return NULL;
}

/*
 * 64 workers for 2 s (0.7 s quick) with procs changing every 20 ms between 1
 * and 4, plus 2 pthreads on the same mutex. Guards: any race in the
 * scheduler, mutex or WaitGroup that loses an update, a goroutine or a
 * wake-up under a random mix (chaos mode multiplies the orders tried).
 */
TEST(mixed_workload)
{
	enum { W = 64, T = 2 };
	mx = (struct mix){ 0 };
	int64_t dur = TEST_SIZE(2000, 700) * TEST_MS;
	mx.end_ns = test_now_ns() + dur;
	pthread_t th[T];
	for (int i = 0; i < T; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, foreign_worker, NULL), 0);
	for (int i = 0; i < W; i++) {
		atomic_fetch_add(&mx.spawned, 1);
		GO(worker, (void *)(uintptr_t)(i + 1));
	}
	int procs[] = { 2, 1, 3, 4, 2, 1, 2 };
	for (int i = 0; test_now_ns() < mx.end_ns; i++) {
		ASSERT_EQ(weft_set_procs(procs[i % 7], NULL), 0);
		weft_sleep(20 * TEST_MS);
	}
	atomic_store(&mx.stop, 1);
	for (int i = 0; i < T; i++) {
		weft_blocking_begin();
		pthread_join(th[i], NULL);
		weft_blocking_end();
	}
	int64_t deadline = test_now_ns() + 10000 * TEST_MS * test_slowdown();
	while (atomic_load(&mx.finished) < atomic_load(&mx.spawned) &&
	       test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	ASSERT_EQ(atomic_load(&mx.finished), atomic_load(&mx.spawned));
	weft_mutex_lock(&mx.mu);
	long c = mx.counter;
	weft_mutex_unlock(&mx.mu);
	ASSERT_EQ(c, atomic_load(&mx.increments));
	printf("    %ld goroutines, %ld locked increments\n",
	       atomic_load(&mx.spawned), c);
}
