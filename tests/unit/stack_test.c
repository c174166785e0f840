/* SPDX-License-Identifier: MIT */
/*
 * stack_test.c - the stack caches (src/runtime/stack.c): Ps that go idle
 * while a burst of spawns outruns the caches carve stacks ahead of it, and
 * stop once the burst is over; and the guard page below every stack.
 */
#include "test.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "sched.h"

struct burst {
	weft_chan *ch;
	weft_wg ready, done;
};

static int64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void parker(void *arg)
{
	struct burst *b = arg;
	weft_wg_done(&b->ready);
	if (weft_chan_recv(b->ch, NULL) != EPIPE)
		FAIL("receive from the closed channel did not report EPIPE");
	weft_wg_done(&b->done);
}

/*
 * A burst at `procs` Ps: N goroutines spawned from one and parked. Idle Ms
 * carve ahead, during the burst (at 2 Ps: the other P is idle between
 * running the newcomers, each of which parks at once) or after it (at 1 P,
 * or on a slow build that keeps the other P busy). Once the spawner is done,
 * at most the credit left is carved (plus what was under way), then
 * nothing, and the Ps sleep.
 */
static void burst_then_quiet(int procs)
{
	const int N = TEST_SIZE(20000, 5000);
	ASSERT_EQ(weft_set_procs(procs, NULL), 0);
	static struct burst b = {.ready = WEFT_WG_INIT, .done = WEFT_WG_INIT};
	ASSERT_EQ(weft_chan_make(&b.ch, 0, 0), 0);
	int64_t carved0, ahead0, carved1, ahead1, carved2, ahead2, carved3, ahead3;
	weft__stack_counts(&carved0, &ahead0);
	weft_wg_add(&b.ready, N);
	weft_wg_add(&b.done, N);
	for (int i = 0; i < N; i++)
		ASSERT_EQ(weft_go(parker, &b), 0);
	weft_wg_wait(&b.ready);
	weft__stack_counts(&carved1, &ahead1);
	/* The credit left runs out, and the carves under way end. (Naps of
	 * 20 ms: idle Ms carve only while no timer is due within 1 ms.) */
	int64_t end = weft_now() + 5000 * TEST_MS * test_slowdown();
	while (weft__stack_precarve_wanted() || weft__stack_counts(&carved2, &ahead2)) {
		if (weft_now() > end)
			FAIL("idle Ps still carving 5 s after the burst");
		weft_sleep(20 * TEST_MS);
	}
	weft__stack_counts(&carved2, &ahead2);
	int64_t cpu0 = cpu_ns(), wall0 = weft_now();
	weft_sleep(20 * TEST_MS);
	int64_t cpu = cpu_ns() - cpu0, wall = weft_now() - wall0;
	weft__stack_counts(&carved3, &ahead3);
	printf("    %d P: %lld stacks carved for %d goroutines, %lld of them by an idle M; "
	       "%lld more after the burst\n", procs, (long long)(carved1 - carved0), N,
	       (long long)(ahead1 - ahead0), (long long)(carved2 - carved1));

	ASSERT(carved1 - carved0 >= N - 2 * WEFT_PCACHE); /* fresh stacks were needed */
	ASSERT(ahead2 > ahead0);
	/* The credit left, and a carve per M that had taken its credit
	 * before the first count. */
	weft_stats st;
	weft_stats_get(&st);
	ASSERT(carved2 - carved1 <= (WEFT_PRECARVE_MAX + st.threads) * WEFT_STACK_BATCH);
	ASSERT_EQ(carved3, carved2);
	ASSERT_EQ(ahead3, ahead2);
	/* And the Ps went idle: no M keeps looking for carving to do. */
	if (cpu > wall / 2)
		FAIL("%lld ms of CPU in %lld ms with nothing to run",
		     (long long)(cpu / TEST_MS), (long long)(wall / TEST_MS));

	weft_chan_close(b.ch);
	weft_wg_wait(&b.done);
	weft_chan_release(b.ch);
}

/* 20,000 goroutines at 2 Ps. Guards: idle Ms never carving (the hook or the
 * credit missing), carving that goes on without demand, and an idle M that
 * keeps looking for carving to do. */
TEST(idle_p_carves_ahead_of_a_spawn_burst)
{
	burst_then_quiet(2);
}

/* The same at 1 P, where no M is idle until the spawner is done, so the
 * credit of the whole burst waits. Guards: credit without a cap (a million
 * spawns would leave millions of stacks to carve afterwards). */
TEST(one_p_burst_leaves_at_most_the_cap)
{
	burst_then_quiet(1);
}

static void quick(void *arg)
{
	weft_wg_done(arg);
}

/*
 * A program that does not grow makes no burst: 20 goroutines spawned and
 * joined, at 2 Ps, twice (a carve or two on demand, with most of the stacks
 * idle in the caches each time: at most 21 of 64 are in use), and no M
 * carves ahead. Guards: credit granted by every carve on demand (each
 * program would get batches it never asked for at its first idle moment,
 * and an idle M busy carving them).
 */
TEST(no_carving_ahead_without_a_burst)
{
	ASSERT_EQ(weft_set_procs(2, NULL), 0);
	int64_t carved0, ahead0, carved1, ahead1;
	weft__stack_counts(&carved0, &ahead0);
	for (int round = 0; round < 2; round++) {
		weft_wg wg = WEFT_WG_INIT;
		weft_wg_add(&wg, 20);
		for (int i = 0; i < 20; i++)
			ASSERT_EQ(weft_go(quick, &wg), 0);
		weft_wg_wait(&wg);
		weft_sleep(20 * TEST_MS); /* idle: time to carve, were there credit */
	}
	int busy = weft__stack_counts(&carved1, &ahead1);
	ASSERT(!weft__stack_precarve_wanted());
	ASSERT(!busy);
	ASSERT_EQ(ahead1, ahead0);
	ASSERT_LE(carved1 - carved0, 2 * WEFT_STACK_BATCH);
}

/* ------------------------------------------------------------ guard pages */

struct guard_probe {
	weft_wg wg;
	int fd;       /* a pipe's write end */
	ssize_t r;    /* write(2) of the byte below the stack */
	int err;
};

/* write(2) from the page below the running goroutine's stack: a guard makes
 * the kernel fail it with EFAULT, where an access from code would fault. */
static void probe_own_guard(void *arg)
{
	struct guard_probe *gp = arg;
	struct weft__g *g = weft__g_get();
	errno = 0;
	gp->r = write(gp->fd, g->stack_lo - 1, 1);
	gp->err = errno;
	weft_wg_done(&gp->wg);
}

/*
 * The page below a goroutine's stack is a guard, for the default size
 * (carved in batches) and for custom sizes (mapped one by one). Guards:
 * trusting madvise(MADV_GUARD_INSTALL)'s success, which qemu-user gives for
 * advice it ignores (no guard at all: an overflow ran into the next mapping
 * and died by a bare SIGSEGV, or corrupted it), and guards put anywhere but
 * right below the stack.
 */
TEST(guard_page_below_every_stack)
{
	int fd[2];
	ASSERT_EQ(pipe2(fd, O_CLOEXEC | O_NONBLOCK), 0);
	static const size_t sizes[] = {0, 64 * 1024, 1024 * 1024};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct guard_probe gp = {.wg = WEFT_WG_INIT, .fd = fd[1]};
		weft_go_options o = {.stack_size = sizes[i]};
		weft_wg_add(&gp.wg, 1);
		ASSERT_EQ(weft_go_opts(probe_own_guard, &gp, &o), 0);
		weft_wg_wait(&gp.wg);
		if (gp.r != -1 || gp.err != EFAULT)
			FAIL("%s stack of %zu KiB: write(2) from the page below it returned "
			     "%zd (errno %d), not EFAULT: no guard page", sizes[i] ? "custom" : "default",
			     (sizes[i] ? sizes[i] : WEFT_DEFAULT_STACK) / 1024, gp.r, gp.err);
	}
	close(fd[0]);
	close(fd[1]);
}

static int count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, c;
	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static weft_chan *block;

static void park_on(void *arg)
{
	weft_chan_recv(block, NULL);
	weft_wg_done(arg);
}

/*
 * On a kernel without MADV_GUARD_INSTALL every guard is an mprotect'ed page,
 * which costs memory maps, and vm.max_map_count bounds them: custom-size
 * stacks (two maps each) must count against it as the carved ones' guards
 * do, so that a spawn fails with EAGAIN and one warning before the kernel
 * refuses maps to the rest of the program. Here the limit is taken to be
 * the maps in use plus the 1024 of margin plus 400: the margin is for the
 * program's other maps, so about (maps in use + 400) / 2 custom stacks fit. Once they are gone, the count goes back down: custom stacks spawn
 * again. Guards: custom stacks not counted (spawns went on past the limit,
 * to the bound of 5,000 here), a count that never goes down.
 */
TEST(custom_stacks_count_against_the_map_limit)
{
	int maps = count_maps();
	ASSERT_GT(maps, 0);
	weft__stack_set_map_limit(maps + 1024 + 400, 1);
	ASSERT_EQ(weft_chan_make(&block, 0, 0), 0);
	/* The warning goes to stderr: catch it in a file. */
	FILE *tmp = tmpfile();
	ASSERT(tmp != NULL);
	int saved = dup(2);
	ASSERT(saved >= 0);
	ASSERT_EQ(dup2(fileno(tmp), 2), 2);
	weft_go_options o = {.stack_size = 64 * 1024};
	int n = 0, err = 0;
	weft_wg wg = WEFT_WG_INIT;
	for (; n < 5000; n++) {
		weft_wg_add(&wg, 1);
		if ((err = weft_go_opts(park_on, &wg, &o)) != 0) {
			weft_wg_done(&wg);
			break;
		}
	}
	int maps_at_refusal = count_maps();
	dup2(saved, 2);
	close(saved);
	char msg[1024] = "";
	rewind(tmp);
	size_t len = fread(msg, 1, sizeof msg - 1, tmp);
	msg[len] = 0;
	fclose(tmp);
	printf("    %d custom stacks, then %s; %d maps in use\n", n, strerror(err),
	       maps_at_refusal);
	weft_chan_close(block);
	ASSERT_EQ(err, EAGAIN);
	/* Each takes 2 of the maps counted. The program's other maps (those
	 * in use at the start) live in the margin, less those weft counted
	 * already: the guards of default stacks where they too are mprotect'ed
	 * (an emulator). So 200 stacks at least, (maps + 400) / 2 at most. */
	ASSERT_GE(n, 400 / 2 - 2);
	ASSERT_LE(n, (maps + 400) / 2);
	/* ThreadSanitizer maps memory for each goroutine's fiber: the margin
	 * is not for that. */
	if (!TEST_TSAN)
		ASSERT_LT(maps_at_refusal, maps + 1024 + 400);
	ASSERT_CONTAINS(msg, "vm.max_map_count");
	/* Their goroutines end and unmap their stacks: room again. */
	int64_t deadline = test_now_ns() + 5000 * TEST_MS * test_slowdown();
	weft_wg_wait(&wg);
	for (;;) {
		weft_wg_add(&wg, 1);
		if ((err = weft_go_opts(park_on, &wg, &o)) == 0)
			break;
		weft_wg_done(&wg);
		if (err != EAGAIN || test_now_ns() > deadline)
			break;
		weft_sleep(TEST_MS);
	}
	ASSERT_EQ(err, 0);
	weft_wg_wait(&wg);
	weft_chan_release(block);
}

/* ------------------------------------------------------------ giving memory back */

static long proc_kib(const char *file, const char *field)
{
	FILE *f = fopen(file, "r");
	size_t n = strlen(field);
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0)
			v = atol(line + n);
	if (f)
		fclose(f);
	return v;
}

static long rss_kib(void)
{
	return proc_kib("/proc/self/status", "VmRSS:");
}

/* Memory given back with MADV_FREE and not yet reclaimed by the kernel. */
static long lazyfree_kib(void)
{
	return proc_kib("/proc/self/smaps_rollup", "LazyFree:");
}

#define DEEP_KIB 192

struct deep {
	weft_wg started, done;
	weft_chan *go;
};

/* Touch DEEP_KIB of its own stack (alloca: a sanitizer's fake stack would
 * take an array), then wait until all are alive. */
static void deep(void *arg)
{
	struct deep *d = arg;
	volatile char *buf = __builtin_alloca(DEEP_KIB * 1024);
	for (size_t i = 0; i < DEEP_KIB * 1024; i += 256)
		buf[i] = (char)i;
	weft_wg_done(&d->started);
	weft_chan_recv(d->go, NULL);
	weft_wg_done(&d->done);
}

static void nothing(void *arg)
{
	weft_wg_done(arg);
}

/*
 * n goroutines at 1 P touch DEEP_KIB of stack each and end, leaving their
 * stacks in the P's cache (n is below WEFT_PCACHE, so none spill to the
 * global cache on the way). Then, for up to 10 s, the program either idles
 * (IDLE: the P sits idle and sysmon looks at its cache), keeps spawning and
 * joining small goroutines (SPAWNING: the P never idles, its cache's newest
 * entries are taken and given back again and again, and the owner must
 * spill the rest itself), or switches between two goroutines that never end
 * (RUNNING: no stack is taken from the cache or given back to it, and the P
 * never idles) until the memory of those stacks is given back: MADV_FREE'd
 * (LazyFree) or reclaimed (RSS down).
 */
enum after_burst { IDLE, SPAWNING, RUNNING };

static atomic_int spinner_stop;

static void spinner(void *arg)
{
	while (!atomic_load(&spinner_stop))
		weft_yield();
	weft_wg_done(arg);
}

static void cached_stacks_given_back(enum after_burst mode)
{
	static const char *const names[] = {"idle", "spawning", "running"};
	const int n = TEST_SIZE(400, 200);
	ASSERT_LT(n, WEFT_PCACHE);
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	struct deep d = {.started = WEFT_WG_INIT, .done = WEFT_WG_INIT};
	ASSERT_EQ(weft_chan_make(&d.go, 0, 0), 0);
	if (test_emulated())
		SKIP("an emulator's /proc shows its own memory, and it may ignore MADV_FREE");
	long rss0 = rss_kib(), free0 = lazyfree_kib();
	if (free0 < 0)
		SKIP("no LazyFree in /proc/self/smaps_rollup");
	weft_wg_add(&d.started, n);
	weft_wg_add(&d.done, n);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(weft_go(deep, &d), 0);
	weft_wg_wait(&d.started);
	long touched = rss_kib() - rss0;
	weft_chan_close(d.go);
	weft_wg_wait(&d.done);
	weft_chan_release(d.go);
	long rss1 = rss_kib();
	/* What their stacks hold: RSS grew by that at least (more under
	 * ThreadSanitizer, whose shadow of the stacks is not ours to give). */
	long want = (long)n * DEEP_KIB;
	ASSERT_GT(touched, want * 9 / 10);

	long back = 0;
	int64_t start = weft_now(), end = start + 10000 * TEST_MS * test_slowdown();
	int spawned = 0;
	weft_wg spun = WEFT_WG_INIT;
	if (mode == RUNNING) {
		atomic_store(&spinner_stop, 0);
		weft_wg_add(&spun, 1);
		ASSERT_EQ(weft_go(spinner, &spun), 0);
	}
	while (weft_now() < end) {
		long dropped = rss1 - rss_kib();
		back = lazyfree_kib() - free0 + (dropped > 0 ? dropped : 0);
		if (back >= want * 8 / 10)
			break;
		if (mode == IDLE) {
			weft_sleep(50 * TEST_MS);
			continue;
		}
		if (mode == RUNNING) {
			for (int i = 0; i < 1000; i++)
				weft_yield();
			continue;
		}
		weft_wg wg = WEFT_WG_INIT;
		weft_wg_add(&wg, 4);
		for (int i = 0; i < 4; i++)
			ASSERT_EQ(weft_go(nothing, &wg), 0);
		weft_wg_wait(&wg);
		spawned += 4;
	}
	if (mode == RUNNING) {
		atomic_store(&spinner_stop, 1);
		weft_wg_wait(&spun);
	}
	printf("    %s P: %ld of %ld KiB given back after %lld ms (%d goroutines spawned meanwhile)\n",
	       names[mode], back, want, (long long)((weft_now() - start) / TEST_MS), spawned);
	if (back < want * 8 / 10)
		FAIL("%ld of the %ld KiB that ended goroutines used given back in %d s", back, want,
		     10 * test_slowdown());
}

/* Guards: a P's cache left out of the trim (up to WEFT_PCACHE stacks, each
 * with all it ever touched, kept for good). */
TEST(idle_p_gives_its_cached_stacks_back)
{
	cached_stacks_given_back(IDLE);
}

/* Guards: a cache trimmed only while its P is idle (a P that always has
 * work kept the stacks of an earlier burst). */
TEST(busy_p_gives_its_unused_cached_stacks_back)
{
	cached_stacks_given_back(SPAWNING);
}

/* Guards: a cache trimmed only as stacks come back to it (a P whose
 * goroutines never end kept the stacks of an earlier burst for good). */
TEST(running_p_gives_its_unused_cached_stacks_back)
{
	cached_stacks_given_back(RUNNING);
}

/* ------------------------------------------------------------ the all-G list */

struct custom_g {
	weft_wg wg;
	weft_chan *release;
	struct weft__g *g; /* its record, published before it parks */
};

static void custom_parker(void *arg)
{
	struct custom_g *c = arg;
	__atomic_store_n(&c->g, weft__g_get(), __ATOMIC_RELEASE);
	weft_chan_recv(c->release, NULL);
	weft_wg_done(&c->wg);
}

/* Walk the all-G list: every link's back pointer names the link that
 * points at it; counts the records among want[0..n). */
static void allg_check(struct weft__g *const *want, int n, int *found)
{
	for (int i = 0; i < n; i++)
		found[i] = 0;
	weft__lock(&weft__sched.allg_lock);
	struct weft__g **link = &weft__sched.allg;
	for (struct weft__g *g = *link; g; link = &g->allnext, g = *link) {
		if (g->allpprev != link) {
			weft__unlock(&weft__sched.allg_lock);
			FAIL("all-G list: record %p's back link is %p, not %p", (void *)g,
			     (void *)g->allpprev, (void *)link);
		}
		for (int i = 0; i < n; i++)
			found[i] += g == want[i];
	}
	weft__unlock(&weft__sched.allg_lock);
}

/*
 * Custom-size stacks leave the all-G list when their goroutines end, in any
 * order: the oldest (deep in the list, behind later carves), one in the
 * middle, the newest (at the head). The list stays whole, with each custom
 * record on it once while alive and never after. Guards: an unlink that
 * loses the rest of the list, or leaves a back link stale (the next unlink
 * then writes through it).
 */
TEST(custom_stacks_leave_the_all_g_list)
{
	enum { N = 6 };
	struct custom_g c[N];
	struct weft__g *rec[N];
	int found[N];
	weft_go_options o = {.stack_size = 64 * 1024};
	weft_wg quickwg = WEFT_WG_INIT;
	for (int i = 0; i < N; i++) {
		c[i] = (struct custom_g){.wg = WEFT_WG_INIT};
		ASSERT_EQ(weft_chan_make(&c[i].release, 0, 0), 0);
		weft_wg_add(&c[i].wg, 1);
		ASSERT_EQ(weft_go_opts(custom_parker, &c[i], &o), 0);
		/* Default stacks carved between them (a batch each time the
		 * caches run dry): spawn more than a batch and join them. */
		weft_wg_add(&quickwg, 2 * WEFT_STACK_BATCH);
		for (int k = 0; k < 2 * WEFT_STACK_BATCH; k++)
			ASSERT_EQ(weft_go(nothing, &quickwg), 0);
		weft_wg_wait(&quickwg);
	}
	for (int i = 0; i < N; i++) {
		while (!(rec[i] = __atomic_load_n(&c[i].g, __ATOMIC_ACQUIRE)))
			weft_sleep(TEST_MS);
	}
	allg_check(rec, N, found);
	for (int i = 0; i < N; i++)
		ASSERT_EQ(found[i], 1);
	/* The oldest, one in the middle, the newest, then the rest. */
	static const int order[N] = {0, 3, 5, 1, 4, 2};
	for (int k = 0; k < N; k++) {
		int i = order[k];
		weft_chan_close(c[i].release);
		weft_wg_wait(&c[i].wg);
		/* Its stack goes once its goroutine has switched away. */
		int64_t end = weft_now() + 5000 * TEST_MS * test_slowdown();
		for (;;) {
			/* (Its length proves nothing: idle Ms may carve ahead.) */
			allg_check(rec, N, found);
			if (!found[i])
				break;
			if (weft_now() > end)
				FAIL("custom stack %d still on the all-G list 5 s after its goroutine ended", i);
			weft_sleep(TEST_MS);
		}
		for (int j = 0; j <= k; j++)
			ASSERT_EQ(found[order[j]], 0);
		for (int j = k + 1; j < N; j++)
			ASSERT_EQ(found[order[j]], 1);
		weft_chan_release(c[i].release);
	}
}

/* ------------------------------------------------------------ carving and deadlock detection */

static atomic_int stall_armed, stalls;

/* Each batch carved ahead takes 300 ms while armed (a slow host). */
static void stall_carve(void)
{
	if (atomic_load(&stall_armed)) {
		atomic_fetch_add(&stalls, 1);
		usleep(300000);
	}
}

static void blocker(void *arg)
{
	weft_sleep(50 * TEST_MS); /* until an idle M carves ahead */
	weft_blocking_begin();    /* waits for the slot the carving M holds */
	weft_blocking_end();
	weft_wg_done(arg);
}

/*
 * An M that carves ahead holds a blocking-call slot, without a P. With the
 * only slot taken that way (weft_set_max_blocking(1)), a goroutine that
 * enters a blocking call waits for it, parked, while every other goroutine
 * is parked too and no timer is due: the program looks deadlocked for as
 * long as the carve takes (here 300 ms a batch: a slow host), but it is
 * not: the carving M gives the slot back after its batch. Guards: deadlock
 * detection that counted the carving M as asleep (the program died with
 * "all goroutines are asleep").
 */
TEST(carving_ahead_is_not_a_deadlock)
{
	ASSERT_EQ(weft_set_procs(1, NULL), 0);
	int old_max;
	ASSERT_EQ(weft_set_max_blocking(1, &old_max), 0);
	__atomic_store_n(&weft__stack_precarve_hook, stall_carve, __ATOMIC_RELEASE);
	atomic_store(&stall_armed, 1);
	/* A burst: a few batches of parked goroutines grant credit. */
	static struct burst b = {.ready = WEFT_WG_INIT, .done = WEFT_WG_INIT};
	ASSERT_EQ(weft_chan_make(&b.ch, 0, 0), 0);
	const int n = 5 * WEFT_STACK_BATCH;
	weft_wg_add(&b.ready, n);
	weft_wg_add(&b.done, n);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(weft_go(parker, &b), 0);
	ASSERT(weft__stack_precarve_wanted());
	weft_wg wg = WEFT_WG_INIT;
	weft_wg_add(&wg, 1);
	ASSERT_EQ(weft_go(blocker, &wg), 0);
	weft_wg_wait(&wg);
	atomic_store(&stall_armed, 0);
	printf("    %d batches carved ahead in 300 ms each while the call waited\n",
	       atomic_load(&stalls));
	ASSERT_GT(atomic_load(&stalls), 0);
	weft_wg_wait(&b.ready);
	weft_chan_close(b.ch);
	weft_wg_wait(&b.done);
	weft_chan_release(b.ch);
	ASSERT_EQ(weft_set_max_blocking(old_max, NULL), 0);
}

/*
 * A P's own stack cache holds at most WEFT_PCACHE stacks: freeing one more
 * into a full cache first spills the older half to the global cache. 1,100
 * stacks freed into one P (a private one here) never take the count past the
 * cap nor write past the array (the field after it keeps its value), and
 * the newest stays on top (the spill takes the oldest). Guards: a cap check
 * off by one (the 1,025th stack written past the end of the array, over the
 * P's goroutine-id cache).
 */
TEST_THREAD(p_cache_spills_at_its_cap)
{
	enum { NSTACKS = WEFT_PCACHE + 76 };
	static struct weft__g *gs[NSTACKS];
	struct weft__p *p = aligned_alloc(WEFT_CACHELINE, sizeof *p);
	ASSERT(p != NULL);
	memset(p, 0, sizeof *p);
	for (int i = 0; i < NSTACKS; i++) {
		int err = 0;
		gs[i] = weft__stack_alloc(NULL, 0, &err);
		ASSERT(gs[i] != NULL);
	}
	p->goid_next = 12345; /* the field after the cache */
	for (int i = 0; i < NSTACKS; i++) {
		weft__stack_free(p, gs[i]);
		ASSERT_LE(p->ngfree, WEFT_PCACHE);
		ASSERT_EQ(p->goid_next, 12345);
	}
	ASSERT(p->ngfree > 0);
	ASSERT(p->gfree[p->ngfree - 1] == gs[NSTACKS - 1]); /* the newest stays */
	weft__stack_flush(p);
	ASSERT_EQ(p->ngfree, 0);
	free(p);
}
