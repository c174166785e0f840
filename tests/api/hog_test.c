/* SPDX-License-Identifier: MIT */
/*
 * hog_test.c - a goroutine that computes for 300 ms without ever yielding
 * must not hold its P's other work hostage (DESIGN: sysmon notices goroutines
 * running > 10 ms and moves the rest of their P's work elsewhere): at 2 Ps, a
 * goroutine sleeping 50 ms whose timer sits on the hog's P wakes at most
 * ~20 ms late, and goroutines queued behind the hog start within ~20 ms.
 *
 * Tolerance: 20 ms = the 10 ms hog threshold plus up to 10 ms for sysmon to
 * look (its period backs off to at most 10 ms in Go), multiplied by
 * test_slowdown() in sanitizer and chaos builds. Being early is never allowed.
 * Each check takes the best of up to 3 runs (TEST_BEST_OF): load from other
 * processes only adds delay, while a runtime that lets the hog block its P's
 * work is ~250 ms late on every run.
 */
#include "test.h"

#include <stdatomic.h>

#define HOG_MS 300
#define SLEEP_MS 50
#define TOLERANCE_MS 20
#define NQ 4

struct hog_ctx {
	atomic_int hog_running;
	atomic_int stop_yielder;
	int hog_p, victim_p;
	atomic_int yielder_p;
	/* sleeper */
	int64_t late_ns;
	int hog_running_at_wake;
	/* queued */
	int64_t spawn_ns[NQ], start_ns[NQ];
	weft_wg wg;  /* the hog and its victims */
	weft_wg ywg; /* the yielder */
};

static void hog(void *arg)
{
	struct hog_ctx *c = arg;
	c->hog_p = weft_self_proc();
	atomic_store(&c->hog_running, 1);
	test_spin_ns(HOG_MS * TEST_MS); /* no weft call: never yields */
	atomic_store(&c->hog_running, 0);
	weft_wg_done(&c->wg);
}

/* Starts the hog as its runnext, then sleeps: the hog takes this P and the
 * sleeper's timer is on that P's heap. */
static void sleeper(void *arg)
{
	struct hog_ctx *c = arg;
	c->victim_p = weft_self_proc();
	GO(hog, c);
	int64_t t0 = test_now_ns();
	weft_sleep(SLEEP_MS * TEST_MS);
	c->late_ns = test_now_ns() - t0 - SLEEP_MS * TEST_MS;
	c->hog_running_at_wake = atomic_load(&c->hog_running);
	weft_wg_done(&c->wg);
}

struct queued {
	struct hog_ctx *c;
	int i;
};

static void queued_start(void *arg)
{
	struct queued *q = arg;
	q->c->start_ns[q->i] = test_now_ns();
	weft_wg_done(&q->c->wg);
}

/* Readies NQ goroutines on its own P, then turns into the hog. */
static void queuer(void *arg)
{
	struct hog_ctx *c = arg;
	static struct queued qs[NQ];
	for (int i = 0; i < NQ; i++) {
		qs[i] = (struct queued){ c, i };
		c->spawn_ns[i] = test_now_ns();
		GO(queued_start, &qs[i]);
	}
	hog(c);
}

/* A cooperative goroutine that keeps the other P busy: its P never goes idle,
 * so it never looks for work to steal. */
static void yielder(void *arg)
{
	struct hog_ctx *c = arg;
	while (!atomic_load(&c->stop_yielder)) {
		atomic_store(&c->yielder_p, weft_self_proc());
		weft_yield();
	}
	weft_wg_done(&c->ywg);
}

static void start_yielder(struct hog_ctx *c)
{
	atomic_store(&c->yielder_p, -1);
	weft_wg_add(&c->ywg, 1);
	GO(yielder, c);
	while (atomic_load(&c->yielder_p) < 0)
		weft_sleep(TEST_MS);
}

/* One run: returns how late the sleeper woke, in ns. */
static int64_t sleeper_scenario(bool with_yielder)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct hog_ctx c;
	c = (struct hog_ctx){ 0 };
	if (with_yielder)
		start_yielder(&c);
	weft_wg_add(&c.wg, 2);
	GO(sleeper, &c);
	weft_wg_wait(&c.wg);
	atomic_store(&c.stop_yielder, 1);
	weft_wg_wait(&c.ywg);
	printf("    sleeper on P%d, hog on P%d, yielder on P%d: woke %.2f ms late\n",
	       c.victim_p, c.hog_p, atomic_load(&c.yielder_p),
	       (double)c.late_ns / 1e6);
	ASSERT_GE(c.late_ns, 0);
	/* Else the hog did not hold anything up and the run shows nothing. */
	ASSERT(c.hog_running_at_wake || c.late_ns > TOLERANCE_MS * TEST_MS);
	return c.late_ns;
}

/* Up to 3 runs (see TEST_BEST_OF); the best must be within tolerance. */
static void sleeper_test(bool with_yielder)
{
	int64_t bound = TOLERANCE_MS * TEST_MS * test_slowdown();
	int64_t late = TEST_BEST_OF(3, bound, sleeper_scenario(with_yielder));
	ASSERT_DURATION(late, 0, TOLERANCE_MS);
}

/*
 * The sleeper's timer is on the hog's P; the other P is idle. Guards: timers
 * checked only by their own P's scheduler (the wake-up comes ~250 ms late,
 * when the hog ends), an idle P that sleeps without a timeout while another
 * P's timer is due.
 */
TEST(hog_does_not_delay_sleeper)
{
	sleeper_test(false);
}

/*
 * As above, but the other P is kept busy by a goroutine that yields in a
 * loop, so it never idles and steals: only sysmon can move the hog's P's
 * timers. Guards: sysmon not detecting the hog.
 */
TEST(hog_does_not_delay_sleeper_other_p_busy)
{
	sleeper_test(true);
}

/* One run: returns the worst delay from spawn to start, in ns. */
static int64_t queued_scenario(bool with_yielder)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	static struct hog_ctx c;
	c = (struct hog_ctx){ 0 };
	if (with_yielder)
		start_yielder(&c);
	weft_wg_add(&c.wg, 1 + NQ);
	GO(queuer, &c);
	weft_wg_wait(&c.wg);
	atomic_store(&c.stop_yielder, 1);
	weft_wg_wait(&c.ywg);
	int64_t worst = 0;
	for (int i = 0; i < NQ; i++) {
		int64_t d = c.start_ns[i] - c.spawn_ns[i];
		if (d > worst)
			worst = d;
	}
	printf("    hog on P%d, yielder on P%d: queued goroutines started "
	       "at worst %.2f ms after spawn\n",
	       c.hog_p, atomic_load(&c.yielder_p), (double)worst / 1e6);
	return worst;
}

static void queued_test(bool with_yielder)
{
	int64_t bound = TOLERANCE_MS * TEST_MS * test_slowdown();
	int64_t worst = TEST_BEST_OF(3, bound, queued_scenario(with_yielder));
	ASSERT_DURATION(worst, 0, TOLERANCE_MS);
}

/*
 * Goroutines readied by the hog just before it starts spinning (its runnext
 * and local queue) start within 20 ms. Guards: a runnext slot or local queue
 * nobody may steal from while its P runs.
 */
TEST(hog_does_not_hold_queue_hostage)
{
	queued_test(false);
}

/* The same with the other P busy with a yielder: only sysmon's hand-off can
 * rescue the queue. Guards: sysmon detecting hogs but not moving their work. */
TEST(hog_does_not_hold_queue_hostage_other_p_busy)
{
	queued_test(true);
}
