/* SPDX-License-Identifier: MIT */
/*
 * mrec_test.c - thread (M) records. A goroutine that ends pinned to its
 * thread (weft_lock_thread without the unlock) takes the thread with it, as
 * in Go; its record stays on the all-M list, which sysmon walks without the
 * lock, so the next new M must reuse it rather than add another.
 */
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sched.h"

/* Records are counted as they are allocated: walking allm here would read
 * records that other Ms write while they start. */
static int count_records(void)
{
	return __atomic_load_n(&weft__sched.nmrec, __ATOMIC_RELAXED);
}

struct pinned_round {
	weft_wg wg;
	atomic_int moved; /* a pinned goroutine woke on another thread */
};

static void pinned_then_exit(void *arg)
{
	struct pinned_round *r = arg;
	weft_lock_thread();
	long tid = syscall(SYS_gettid);
	weft_sleep(200000); /* parks: the M waits for this goroutine alone */
	if (syscall(SYS_gettid) != tid)
		atomic_fetch_add(&r->moved, 1);
	/* Ends pinned (weft_wg_go's done follows): the thread exits. */
}

/*
 * 64 rounds of 8 goroutines that end pinned: 512 threads start and exit.
 * The record count may grow by the threads alive at once (a round's exits
 * may not be done when the next round starts them), not by 512; each
 * pinned goroutine must stay on its thread across a sleep, on a reused
 * record as on a new one. Guards: m_exit leaving its record for good
 * (+512), a reused record keeping the old M's state (a pinned goroutine
 * resumed elsewhere, or a crash).
 */
TEST(pinned_exits_reuse_thread_records)
{
	enum { ROUNDS = 64, PER_ROUND = 8 };
	int before = count_records();
	atomic_int moved = 0;
	for (int i = 0; i < ROUNDS; i++) {
		struct pinned_round r = { .wg = WEFT_WG_INIT };
		atomic_init(&r.moved, 0);
		for (int j = 0; j < PER_ROUND; j++)
			ASSERT_EQ(weft_wg_go(&r.wg, pinned_then_exit, &r), 0);
		weft_wg_wait(&r.wg);
		atomic_fetch_add(&moved, atomic_load(&r.moved));
	}
	int after = count_records();
	printf("    M records: %d before, %d after %d pinned exits\n", before, after,
	       ROUNDS * PER_ROUND);
	ASSERT_EQ(atomic_load(&moved), 0);
	ASSERT_LE(after, before + 4 * PER_ROUND);
}
