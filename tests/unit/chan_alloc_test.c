/* SPDX-License-Identifier: MIT */
/*
 * chan_alloc_test.c - out of memory in the channel layer: each allocation
 * that weft_chan_make, weft_after, weft_timer_new, weft_ticker_new and a
 * large select make is failed in turn (weft__alloc_fail_after), and each call
 * must report ENOMEM, leave its out-parameter alone, and leak nothing (make
 * asan's leak checker sees every byte).
 */
#include "test.h"

#include <errno.h>

#include "alloc.h"

/* Warm up what the runtime allocates on first use (its Ps, and P 0's timer
 * heap, which a timer's first add grows), so that the failures injected
 * below hit only the call under test. */
static void busy(void *arg)
{
	int64_t until = weft_now() + 20 * 1000 * 1000;
	while (weft_now() < until)
		;
	weft_wg_done(arg);
}

static void warm_up(void)
{
	weft_chan *c = NULL;
	ASSERT_EQ(weft_after(&c, WEFT_SECOND), 0);
	weft_chan_release(c);
	/* And an M for every P (all busy at once), so a timer added during a
	 * failure window wakes an idle M instead of creating one: the failure
	 * injection is process-wide, and a thread that cannot be made is a
	 * fatal error, not an ENOMEM. */
	weft_wg wg = WEFT_WG_INIT;
	int n = weft_procs() + 1;
	weft_wg_add(&wg, n);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(weft_go(busy, &wg), 0);
	weft_wg_wait(&wg);
}

/* Fail allocation number k (1, 2, ...) of `call` until one run needs no
 * more than k-1 allocations and succeeds; returns how many runs failed. */
#define EVERY_ALLOCATION_FAILS(call, on_success)       \
	__extension__({                                \
		int failed_ = 0;                       \
		for (long k_ = 1;; k_++) {             \
			weft__alloc_fail_after(k_, 0); \
			int r_ = (call);               \
			weft__alloc_fail_after(0, 0);  \
			if (r_ == 0) {                 \
				on_success;            \
				break;                 \
			}                              \
			ASSERT_EQ(r_, ENOMEM);         \
			failed_++;                     \
			ASSERT(k_ < 100);              \
		}                                      \
		failed_;                               \
	})

/*
 * Every allocation of each constructor fails once: ENOMEM, the out-parameter
 * untouched, nothing leaked. Guards: a constructor that frees nothing of what
 * it built before the failing allocation (a leak under make asan), that
 * reports another error, or that writes a half-made object to *out.
 */
TEST_THREAD(constructors_report_enomem_and_leak_nothing)
{
	warm_up();
	weft_chan *sentinel = (weft_chan *)0x1, *c = sentinel;
	int n = EVERY_ALLOCATION_FAILS(weft_chan_make(&c, 8, 16), weft_chan_release(c));
	ASSERT_GE(n, 1);

	c = sentinel;
	n = EVERY_ALLOCATION_FAILS((c == sentinel ? weft_after(&c, WEFT_SECOND) : -1),
	                           weft_chan_release(c));
	ASSERT_GE(n, 2); /* the timer, then its channel */

	weft_timer *t = (weft_timer *)0x1;
	n = EVERY_ALLOCATION_FAILS((t == (weft_timer *)0x1 ? weft_timer_new(&t, WEFT_SECOND) : -1),
	                           weft_timer_free(t));
	ASSERT_GE(n, 2);

	weft_ticker *k = (weft_ticker *)0x1;
	n = EVERY_ALLOCATION_FAILS(
		(k == (weft_ticker *)0x1 ? weft_ticker_new(&k, WEFT_SECOND) : -1),
		weft_ticker_free(k));
	ASSERT_GE(n, 2);
}

/*
 * A select with more cases than fit on the stack allocates its bookkeeping;
 * without memory it returns ENOMEM, does not touch *chosen, and takes no
 * case. Guards: a select that proceeds (or crashes) without its arrays.
 */
TEST_THREAD(large_select_reports_enomem)
{
	enum { N = 40 };
	weft_chan *c;
	ASSERT_EQ(weft_chan_make(&c, sizeof(int), 1), 0);
	int v = 7, got = 0;
	ASSERT_EQ(weft_chan_send(c, &v), 0);
	weft_case cs[N];
	for (int i = 0; i < N; i++)
		cs[i] = WEFT_RECV_CASE(i == N - 1 ? c : NULL, &got);
	int chosen = -5;
	weft__alloc_fail_after(1, 0);
	ASSERT_EQ(weft_select_try(cs, N, &chosen), ENOMEM);
	weft__alloc_fail_after(0, 0);
	ASSERT_EQ(chosen, -5);
	ASSERT_EQ(weft_chan_len(c), 1); /* nothing was received */
	ASSERT_EQ(weft_select_try(cs, N, &chosen), 0);
	ASSERT_EQ(chosen, N - 1);
	ASSERT_EQ(got, 7);
	weft_chan_release(c);
}
