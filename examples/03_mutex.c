/* SPDX-License-Identifier: MIT */
/*
 * 03_mutex.c - protect shared data with weft_mutex (Go's sync.Mutex).
 *
 * Goroutines run in parallel on several threads, so data that more than one
 * of them writes needs a lock. weft_mutex is goroutine-aware: a goroutine that
 * waits for it parks (its thread runs other goroutines meanwhile) instead of
 * blocking the thread, as a pthread mutex would. All-zero is unlocked.
 *
 * Eight goroutines move money between accounts. Each transfer must look
 * atomic: the total never changes. A ninth goroutine audits the total now and
 * then with weft_mutex_trylock(), and simply tries again later when the lock is
 * busy. Under `make race`, ThreadSanitizer checks that every access really is
 * protected.
 *
 * Run: ./03_mutex
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

#define ACCOUNTS 16
#define WORKERS 8
#define TRANSFERS 20000
#define START_BALANCE 1000

struct bank {
	weft_mutex mu;             /* guards balance[] */
	int64_t balance[ACCOUNTS]; /* guarded by mu */
	atomic_int workers_left;   /* the auditor stops when it reaches 0 */
	int audits, busy, bad;     /* the auditor's own counters */
	weft_wg wg;
};

void transfer_worker(void *arg)
{
	struct bank *b = arg;
	uint64_t x = (uint64_t)weft_self_id() * 0x9E3779B97F4A7C15u;

	for (int i = 0; i < TRANSFERS; i++) {
		/* xorshift64: a cheap random choice of accounts and amount */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int from = (int)(x % ACCOUNTS), to = (int)((x >> 8) % ACCOUNTS);
		int64_t amount = (int64_t)((x >> 16) % 10);

		weft_mutex_lock(&b->mu);
		b->balance[from] -= amount;
		b->balance[to] += amount;
		weft_mutex_unlock(&b->mu);
	}
	atomic_fetch_sub(&b->workers_left, 1);
	weft_wg_done(&b->wg);
}

static int64_t total(const struct bank *b)
{
	int64_t sum = 0;

	for (int a = 0; a < ACCOUNTS; a++)
		sum += b->balance[a];
	return sum;
}

void auditor(void *arg)
{
	struct bank *b = arg;

	while (atomic_load(&b->workers_left) > 0) {
		if (weft_mutex_trylock(&b->mu) == 0) {
			int64_t sum = total(b);
			weft_mutex_unlock(&b->mu);
			if (sum != ACCOUNTS * START_BALANCE) {
				fprintf(stderr, "audit: the total is %lld!\n", (long long)sum);
				b->bad++;
			}
			b->audits++;
		} else {
			b->busy++; /* EBUSY: someone holds it; no waiting */
		}
		weft_sleep(100 * 1000); /* 100 us */
	}
	weft_wg_done(&b->wg);
}

static int run(void *unused)
{
	static struct bank b; /* all-zero: the mutex and the WaitGroup are ready */

	(void)unused;
	for (int a = 0; a < ACCOUNTS; a++)
		b.balance[a] = START_BALANCE;
	atomic_store(&b.workers_left, WORKERS);

	weft_wg_add(&b.wg, WORKERS + 1);
	for (int w = 0; w < WORKERS; w++)
		if (weft_go(transfer_worker, &b) != 0)
			return 1;
	if (weft_go(auditor, &b) != 0)
		return 1;
	weft_wg_wait(&b.wg);

	int64_t sum = total(&b);
	printf("%d goroutines made %d transfers; total %lld (expected %d)\n", WORKERS,
	       WORKERS * TRANSFERS, (long long)sum, ACCOUNTS * START_BALANCE);
	printf("the auditor checked %d times and found the lock busy %d times\n", b.audits, b.busy);
	return sum == ACCOUNTS * START_BALANCE && b.bad == 0 ? 0 : 1;
}

int main(void)
{
	return weft_main(run, NULL);
}
