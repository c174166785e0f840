/* SPDX-License-Identifier: MIT */
/*
 * mempark.c - the MemPark100k and MemPark1M cases: what a parked goroutine
 * costs. G goroutines are created and each parks until released (Go's
 * runMemPark). ns/op is the creation time per goroutine, from the first spawn
 * until every goroutine has signalled that it is running; the line adds the
 * VmRSS growth per goroutine (measured 5 ms after that, so all have parked),
 * the creation time in ms and VmRSS before and after in KiB. Then the
 * goroutines are released and joined. Like Go's, the case has its own
 * repetition loop (run one repetition per process: later ones reuse the
 * stacks the first one left cached) and ignores --n and --target.
 *
 * The goroutines park where Go's do: on a receive from one unbuffered channel
 * (Go's `ch := make(chan int)`, elements int64_t, made before the first VmRSS
 * reading), and main's weft_chan_close() releases them all (`close(ch)`):
 * each receive returns EPIPE, as a receive from a closed channel does in Go.
 * The waiter record of each parked receive sits on its goroutine's stack, as
 * Go's sudog is part of what its parked goroutine costs. The goroutines borrow
 * main's reference: every receive has returned before its goroutine signals
 * done, and main drops the reference only after waiting for done.
 */
#include "bench.h"
#include "sysdefs.h" /* src/util: the Linux constants stack.c uses */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

struct mempark_state {
	weft_wg ready; /* each goroutine: done once it runs */
	weft_chan *ch; /* Go's ch: closed by main, never sent on */
	weft_wg done;  /* each goroutine: done once released */
};

static void parker(void *p)
{
	struct mempark_state *s = p;
	int err;

	weft_wg_done(&s->ready);
	err = weft_chan_recv(s->ch, NULL); /* Go: <-ch */
	if (err != EPIPE)
		bench_fatal("MemPark: <-ch returned %d, want EPIPE", err);
	weft_wg_done(&s->done);
}

void bench_mempark(const struct bench_case *c)
{
	int64_t G = c->arg;
	char extra[256];
	int r, err;

	for (r = 0; r < bench_flags.reps; r++) {
		struct mempark_state s = {.ready = WEFT_WG_INIT, .ch = NULL, .done = WEFT_WG_INIT};
		int64_t rss0, rss1, start, d, g;

		err = weft_chan_make(&s.ch, sizeof(int64_t), 0); /* Go: ch := make(chan int) */
		if (err != 0)
			bench_fatal("MemPark: weft_chan_make: %s", strerror(err));
		weft_wg_add(&s.ready, G);
		weft_wg_add(&s.done, G);
		rss0 = bench_rss_bytes();
		start = weft_now();
		for (g = 0; g < G; g++)
			bench_go(parker, &s);
		weft_wg_wait(&s.ready);
		d = weft_now() - start;
		weft_sleep(5 * BENCH_MS); /* let all park */
		rss1 = bench_rss_bytes();
		snprintf(extra, sizeof(extra),
		         "\t%.0f rss_bytes/goroutine\t%.1f create_ms\t%lld rss_before_kb\t%lld "
		         "rss_after_kb",
		         (double)(rss1 - rss0) / (double)G, (double)d / 1e6,
		         (long long)(rss0 / 1024), (long long)(rss1 / 1024));
		bench_report(c->name, G, (double)d / (double)G, extra);
		weft_chan_close(s.ch);
		weft_wg_wait(&s.done);
		weft_chan_release(s.ch);
	}
}

/* ---------------------------------------------------------------- MemParkFloor */

/*
 * MemParkFloor and MemParkFloorDense (weft's own, not in the Go suite): what
 * the kernel alone charges for a million goroutine stacks, without weft. Each
 * does the memory work weft's stack carver (src/runtime/stack.c) does for
 * them, the same way: 1 GiB MAP_NORESERVE reservations, units carved in
 * batches of WEFT_STACK_BATCH, one process_madvise(MADV_GUARD_INSTALL) call
 * per batch for the guard pages at the units' bottoms and one
 * process_madvise(MADV_POPULATE_WRITE) call per batch for the pages at their
 * tops. MemParkFloor's unit is weft's (a guard page and WEFT_DEFAULT_STACK);
 * MemParkFloorDense's is a guard page and one page, the densest layout in
 * which every stack has a guard page: the floor for any such layout.
 * Compare MemPark1M's create_ms with them, run back to back (the host's price
 * for a first touch of memory moves a lot between runs on a VM). ns/op is
 * the time per stack; the case's arg is the usable pages of a unit (0:
 * weft's default); one repetition per --reps.
 *
 * Where a kernel lacks a call, the case falls back as the carver does, and
 * its line says how it went: guards=batch (process_madvise), guards=madvise
 * (a madvise call per page), guards=none (no MADV_GUARD_INSTALL: the carver
 * then uses mprotect, a VMA per stack, which this case does not imitate);
 * tops=populate, or tops=touch (a first-touch write to each top page).
 */
#define FLOOR_STACKS 1000000
#define FLOOR_BATCH 64 /* WEFT_STACK_BATCH: src/runtime/sched.h */
#define FLOOR_RESERVE ((size_t)1 << 30)

enum { GUARDS_NONE, GUARDS_MADVISE, GUARDS_BATCH };

/* One process_madvise call of advice on the page at each of at[0..n).
 * Returns 0, or an error number (EAGAIN: only part of the batch was
 * advised). */
static int floor_advise(int pidfd, char *const *at, int n, size_t pg, int advice)
{
	struct iovec iov[FLOOR_BATCH];
	long r;
	int i;

	for (i = 0; i < n; i++) {
		iov[i].iov_base = at[i];
		iov[i].iov_len = pg;
	}
	r = syscall(SYS_process_madvise, pidfd, iov, (size_t)n, advice, 0);
	if (r == (long)(pg * (size_t)n))
		return 0;
	return r < 0 ? errno : EAGAIN;
}

/* The guard pages at at[0..n), as the carver installs them: one batch call,
 * else (a kernel whose process_madvise refuses this advice) a call per page,
 * else none. *mode starts at GUARDS_BATCH and only steps down, and only on
 * the first batch. */
static void floor_guards(int pidfd, char *const *at, int n, size_t pg, int *mode, int first)
{
	int err = 0, i;

	if (*mode == GUARDS_BATCH) {
		err = floor_advise(pidfd, at, n, pg, MADV_GUARD_INSTALL);
		if (err == 0)
			return;
		if (!first || (err != EINVAL && err != ENOSYS && err != EPERM))
			bench_fatal("MemParkFloor: process_madvise(MADV_GUARD_INSTALL): %s",
			            strerror(err));
		*mode = GUARDS_MADVISE;
	}
	if (*mode == GUARDS_MADVISE) {
		for (i = 0; i < n; i++) {
			if (madvise(at[i], pg, MADV_GUARD_INSTALL) == 0)
				continue;
			err = errno;
			if (!first || i > 0 || err != EINVAL)
				bench_fatal("MemParkFloor: madvise(MADV_GUARD_INSTALL): %s",
				            strerror(err));
			*mode = GUARDS_NONE;
			return;
		}
	}
}

void bench_mempark_floor(const struct bench_case *c)
{
	static const char *const guard_names[] = {"none", "madvise", "batch"};
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t unit = pg + (c->arg ? (size_t)c->arg * pg : WEFT_DEFAULT_STACK);
	size_t per_reserve = FLOOR_RESERVE / unit / FLOOR_BATCH * FLOOR_BATCH;
	size_t nres = (FLOOR_STACKS + per_reserve - 1) / per_reserve;
	char extra[128];
	int r;

	for (r = 0; r < bench_flags.reps; r++) {
		char **res = calloc(nres, sizeof(*res));
		char *at[FLOOR_BATCH];
		size_t made = 0, k = 0;
		int guards = GUARDS_BATCH, populate = 1, err, pidfd, i;
		int64_t start, d;

		if (res == NULL)
			bench_fatal("MemParkFloor: out of memory");
		pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (pidfd < 0)
			bench_fatal("MemParkFloor: pidfd_open: %s (Linux 5.3+ needed)",
			            strerror(errno));
		/* Seconds of system calls: let the runtime know, as any
		 * program on weft would. */
		weft_blocking_begin();
		start = weft_now();
		while (made < FLOOR_STACKS) {
			size_t j = made % per_reserve;

			if (j == 0) {
				void *m = mmap(NULL, FLOOR_RESERVE, PROT_READ | PROT_WRITE,
				               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
				if (m == MAP_FAILED)
					bench_fatal("MemParkFloor: mmap: %s", strerror(errno));
				res[k++] = m;
			}
			for (i = 0; i < FLOOR_BATCH; i++)
				at[i] = res[k - 1] + (j + (size_t)i) * unit;
			floor_guards(pidfd, at, FLOOR_BATCH, pg, &guards, made == 0);
			for (i = 0; i < FLOOR_BATCH; i++)
				at[i] += unit - pg;
			if (populate) {
				err = floor_advise(pidfd, at, FLOOR_BATCH, pg, MADV_POPULATE_WRITE);
				if (err != 0 && (made != 0 || (err != EINVAL && err != ENOSYS &&
				                               err != EPERM)))
					bench_fatal("MemParkFloor: MADV_POPULATE_WRITE: %s",
					            strerror(err));
				populate = err == 0;
			}
			if (!populate) /* as the carver's record writes fault them */
				for (i = 0; i < FLOOR_BATCH; i++)
					*(volatile char *)at[i] = 1;
			made += FLOOR_BATCH;
		}
		d = weft_now() - start;
		weft_blocking_end();
		snprintf(extra, sizeof(extra), "\t%.1f create_ms\t%zu unit_kib\tguards=%s\ttops=%s",
		         (double)d / 1e6, unit / 1024, guard_names[guards],
		         populate ? "populate" : "touch");
		bench_report(c->name, (int64_t)made, (double)d / (double)made, extra);
		while (k > 0)
			munmap(res[--k], FLOOR_RESERVE);
		free(res);
		close(pidfd);
	}
}
