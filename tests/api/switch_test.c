/* SPDX-License-Identifier: MIT */
/*
 * switch_test.c - what a context switch must carry: each goroutine keeps its
 * own floating-point control state (x87 control word and MXCSR rounding
 * modes), and one goroutine's setting never leaks into another that runs on
 * the same thread, nor is lost when it moves to another thread.
 */
#include "test.h"

#include <fenv.h>
#include <stdatomic.h>
#include <xmmintrin.h>

struct fp_ctx {
	int mode;             /* the rounding mode this goroutine sets */
	atomic_int bad;       /* observations of a wrong mode */
	weft_wg *wg;
};

static int mxcsr_mode(void)
{
	return (int)(_mm_getcsr() & _MM_ROUND_MASK);
}

static int mxcsr_of(int fe_mode)
{
	switch (fe_mode) {
	case FE_UPWARD: return _MM_ROUND_UP;
	case FE_DOWNWARD: return _MM_ROUND_DOWN;
	case FE_TOWARDZERO: return _MM_ROUND_TOWARD_ZERO;
	default: return _MM_ROUND_NEAREST;
	}
}

static void fp_worker(void *arg)
{
	struct fp_ctx *c = arg;
	if (c->mode != FE_TONEAREST)
		fesetround(c->mode);
	for (int i = 0; i < 2000; i++) {
		if (i % 50 == 0)
			weft_sleep(10000);
		else
			weft_yield();
		/* fegetround reads the x87 control word; _mm_getcsr the SSE one. */
		if (fegetround() != c->mode || mxcsr_mode() != mxcsr_of(c->mode))
			atomic_fetch_add(&c->bad, 1);
	}
	fesetround(FE_TONEAREST);
	weft_wg_done(c->wg);
}

static void run_modes(int procs)
{
	ASSERT_EQ(weft_set_procs(procs, NULL), 0);
	static const int modes[] = { FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO };
	static struct fp_ctx cs[8];
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 8);
	for (int i = 0; i < 8; i++) {
		cs[i] = (struct fp_ctx){ .mode = modes[i % 4], .wg = &wg };
		GO(fp_worker, &cs[i]);
	}
	weft_wg_wait(&wg);
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(atomic_load(&cs[i].bad), 0);
}

/*
 * Eight goroutines with four different rounding modes interleave on one
 * thread. Guards: a switch that does not save/restore MXCSR or the x87
 * control word (modes leak from one goroutine to the next), or one that
 * skips the restore when it wrongly thinks the state is unchanged.
 */
TEST(rounding_mode_per_goroutine_one_p)
{
	run_modes(1);
}

/* The same with two Ps, where goroutines also move between threads. */
TEST(rounding_mode_per_goroutine_two_ps)
{
	run_modes(2);
}
