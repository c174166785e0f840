/* SPDX-License-Identifier: MIT */
/*
 * switch_test.c - what a context switch must carry: each goroutine keeps its
 * own floating-point control state (x87 control word and MXCSR rounding
 * modes on x86-64, FPCR on AArch64) and its callee-saved registers, and one
 * goroutine's state never leaks into another that runs on the same thread,
 * nor is lost when it moves to another thread.
 */
#include "test.h"

#include <fenv.h>
#include <stdatomic.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

/* One of eight goroutines that check what the switch carries. */
struct sw_ctx {
	int mode;             /* the rounding mode this goroutine sets */
	uint64_t seed;        /* where its register values start */
	atomic_int bad;       /* observations of a wrong mode or value */
	weft_wg *wg;
};

/* Run fn in eight goroutines on procs Ps (rounding modes 0..3 twice, seeds
 * 1..8 << 20) and require that none saw anything wrong. */
static void run_eight(int procs, weft_fn fn)
{
	ASSERT_EQ(weft_set_procs(procs, NULL), 0);
	static const int modes[] = { FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO };
	static struct sw_ctx cs[8];
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 8);
	for (int i = 0; i < 8; i++) {
		cs[i] = (struct sw_ctx){ .mode = modes[i % 4], .seed = (uint64_t)(i + 1) << 20,
		                         .wg = &wg };
		GO(fn, &cs[i]);
	}
	weft_wg_wait(&wg);
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(atomic_load(&cs[i].bad), 0);
}

/* Whether the rounding mode in force is mode, in every control register
 * that holds one: fegetround reads the x87 control word on x86-64 (FPCR on
 * AArch64), _mm_getcsr the SSE one. */
static int mode_is(int mode)
{
	if (fegetround() != mode)
		return 0;
#if defined(__x86_64__)
	int want;
	switch (mode) {
	case FE_UPWARD: want = _MM_ROUND_UP; break;
	case FE_DOWNWARD: want = _MM_ROUND_DOWN; break;
	case FE_TOWARDZERO: want = _MM_ROUND_TOWARD_ZERO; break;
	default: want = _MM_ROUND_NEAREST;
	}
	if ((int)(_mm_getcsr() & _MM_ROUND_MASK) != want)
		return 0;
#endif
	return 1;
}

static void fp_worker(void *arg)
{
	struct sw_ctx *c = arg;
	if (c->mode != FE_TONEAREST)
		fesetround(c->mode);
	for (int i = 0; i < 2000; i++) {
		if (i % 50 == 0)
			weft_sleep(10000);
		else
			weft_yield();
		if (!mode_is(c->mode))
			atomic_fetch_add(&c->bad, 1);
	}
	fesetround(FE_TONEAREST);
	weft_wg_done(c->wg);
}

/*
 * Eight goroutines with four different rounding modes interleave on one
 * thread. Guards: a switch that does not save/restore MXCSR or the x87
 * control word (modes leak from one goroutine to the next), or one that
 * skips the restore when it wrongly thinks the state is unchanged.
 */
TEST(rounding_mode_per_goroutine_one_p)
{
	run_eight(1, fp_worker);
}

/* The same with two Ps, where goroutines also move between threads. */
TEST(rounding_mode_per_goroutine_two_ps)
{
	run_eight(2, fp_worker);
}

/* Many values live across every switch: more than the caller-saved
 * registers can hold, so the compiler keeps them in callee-saved ones
 * (rbx, rbp, r12-r15 on x86-64; x19-x28 and d8-d15 on AArch64, where
 * doubles live across a call go), which the switch must carry. */
static void regs_worker(void *arg)
{
	struct sw_ctx *c = arg;
	uint64_t a = c->seed, b = a * 3, d = a * 5, e = a * 7, f = a * 11, g = a * 13;
	uint64_t h = a * 17, k = a * 19, l = a * 23, m = a * 29;
	double x0 = (double)a, x1 = x0 + 0.5, x2 = x0 + 0.25, x3 = x0 + 0.125;
	double x4 = x0 * 2, x5 = x0 * 3, x6 = x0 * 4, x7 = x0 * 5;
	for (int i = 1; i <= 500; i++) {
		weft_yield();
		a += 1, b += 3, d += 5, e += 7, f += 11, g += 13, h += 17, k += 19, l += 23, m += 29;
		x0 += 1, x1 += 1, x2 += 1, x3 += 1, x4 += 2, x5 += 3, x6 += 4, x7 += 5;
		uint64_t s = c->seed;
		double ds = (double)s, di = (double)i;
		if (a != s + (uint64_t)i || b != 3 * (s + (uint64_t)i) || d != 5 * (s + (uint64_t)i) ||
		    e != 7 * (s + (uint64_t)i) || f != 11 * (s + (uint64_t)i) ||
		    g != 13 * (s + (uint64_t)i) || h != 17 * (s + (uint64_t)i) ||
		    k != 19 * (s + (uint64_t)i) || l != 23 * (s + (uint64_t)i) ||
		    m != 29 * (s + (uint64_t)i) || x0 != ds + di || x1 != ds + 0.5 + di ||
		    x2 != ds + 0.25 + di || x3 != ds + 0.125 + di || x4 != 2 * (ds + di) ||
		    x5 != 3 * (ds + di) || x6 != 4 * (ds + di) || x7 != 5 * (ds + di))
			atomic_fetch_add(&c->bad, 1);
	}
	weft_wg_done(c->wg);
}

/*
 * Eight goroutines, each with its own values in callee-saved registers,
 * interleave on one thread and then on two. Guards: a switch that forgets a
 * callee-saved register (or restores it from the wrong slot), so that one
 * goroutine's values show up in another's.
 */
TEST(callee_saved_registers_per_goroutine)
{
	run_eight(1, regs_worker);
	run_eight(2, regs_worker);
}
