/* SPDX-License-Identifier: MIT */
/*
 * stack_test.c - the stack caches (src/runtime/stack.c): Ps that go idle
 * while a burst of spawns outruns the caches carve stacks ahead of it, and
 * stop once the burst is over; and the guard page below every stack.
 */
#include "test.h"

#include <errno.h>
#include <stdio.h>
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
