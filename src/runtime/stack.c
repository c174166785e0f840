/* SPDX-License-Identifier: MIT */
/*
 * stack.c - goroutine stacks and the G records that live at their tops.
 *
 * Layout of one unit (addresses grow to the right):
 *   [guard page][ usable stack ............ [G record][colour] ]
 *                ^stack_lo                             ^stack_lo + stack_size
 * The record shares the top page with the goroutine's first frames, so a
 * parked goroutine costs one page of RSS. The colour (0 to 15 cache lines,
 * default units only, see COLORS) staggers the records' page offsets.
 *
 * Default-size units are carved in batches from 1 GiB MAP_NORESERVE
 * reservations (one VMA each). A guard page is installed with
 * MADV_GUARD_INSTALL (Linux 6.13+), which adds no VMA, batched through one
 * process_madvise() call per batch where the kernel allows it; older kernels
 * get mprotect(PROT_NONE) guards, each of which splits the reservation's VMA,
 * so vm.max_map_count bounds the number of stacks: we count them and refuse
 * with EAGAIN (and one line on stderr) before the kernel refuses.
 *
 * Units are never unmapped: a per-P cache (no locking, owner P only) spills
 * to and refills from a global cache in batches, like Go's stackcache. Both
 * caches are arrays of pointers, so moving a batch never touches the units
 * themselves (each is a cold page). sysmon calls weft__stack_trim() about
 * once a second; it gives back (MADV_FREE) the memory below the record page
 * of units that have sat in the global cache for a whole period: the global
 * cache is a stack, so those are the entries below its low-water mark. Stacks of a non-default size are
 * mapped one by one and unmapped when their goroutine ends.
 *
 * Every record is on the all-G list (for dumps) from its carving on;
 * custom-size ones leave it when unmapped.
 */
#include "sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "fatal.h"
#include "sanitizer.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define RESERVE_BYTES ((size_t)1 << 30)
#define BATCH 64
#define RECORD_BYTES ((sizeof(struct weft__g) + 63) & ~(size_t)63)
/*
 * Cache colours. Units are a whole number of pages apart, so without an
 * offset every record, and every goroutine's first frames, would sit at the
 * same offset in its page: the same few cache sets (L1 is indexed by the
 * page offset alone, L2 mostly by it), which a thousand goroutines in
 * flight thrash. Each unit of a batch ends its record `colour` lines below
 * the top of its page, colour = index % COLORS, spreading them over COLORS
 * times as many sets; the bytes above the record (at most 960) are unused.
 */
#define COLORS 16

enum { GUARD_UNKNOWN, GUARD_MADV_BATCH, GUARD_MADV, GUARD_MPROTECT };

static struct {
	uint32_t lock;          /* protects everything below */
	char *cur, *end;        /* bump region of the current reservation */
	struct weft__g **free;  /* global cache: a stack of pointers, newest last */
	int64_t nfree, cap;
	int64_t low_water;      /* the fewest entries since the last trim pass */
	int64_t trimmed;        /* free[0, trimmed) have had their memory given back */
	uint32_t carve_lock;    /* the bump region and guard-mode state; taken without
	                         * st.lock, so slow page faults never block the cache */
	int guard_mode;
	int populate_ok;        /* populate_tops works here (until it fails once) */
	int pidfd;
	long map_count_max;
	long mprotect_guards;
	int map_count_warned;
	size_t unit;            /* guard + usable, for the default size */
} st = { .pidfd = -1 };

static size_t page_size;

size_t weft__page_size(void)
{
	if (!page_size)
		page_size = (size_t)sysconf(_SC_PAGESIZE);
	return page_size;
}

static size_t round_page(size_t n)
{
	size_t pg = weft__page_size();
	return (n + pg - 1) & ~(pg - 1);
}

static long read_max_map_count(void)
{
	long v = 65530;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = 65530;
		fclose(f);
	}
	return v;
}

static void warn_map_count(void)
{
	if (st.map_count_warned++)
		return;
	fprintf(stderr, "weft: cannot create more goroutine stacks: this kernel lacks "
		"MADV_GUARD_INSTALL (Linux 6.13+), so each guard page costs memory maps, and "
		"vm.max_map_count=%ld is nearly used up; raise it (sysctl vm.max_map_count) or "
		"use a newer kernel\n", st.map_count_max);
}

/* Install guard pages at the given addresses. carve_lock held. Returns 0 or an
 * error number. */
static int install_guards(char **at, int n)
{
	size_t pg = weft__page_size();
	if (st.guard_mode == GUARD_UNKNOWN) {
		st.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		__atomic_store_n(&st.populate_ok, st.pidfd >= 0, __ATOMIC_RELAXED);
		st.guard_mode = GUARD_MADV_BATCH;
		st.map_count_max = read_max_map_count();
	}
	if (st.guard_mode == GUARD_MADV_BATCH) {
		struct iovec iov[BATCH];
		for (int i = 0; i < n; i++) {
			iov[i].iov_base = at[i];
			iov[i].iov_len = pg;
		}
		long r = st.pidfd >= 0 ?
			syscall(SYS_process_madvise, st.pidfd, iov, (size_t)n, MADV_GUARD_INSTALL, 0) : -1;
		if (r == (long)(pg * (size_t)n))
			return 0;
		st.guard_mode = GUARD_MADV;
	}
	if (st.guard_mode == GUARD_MADV) {
		int i = 0;
		for (; i < n; i++)
			if (madvise(at[i], pg, MADV_GUARD_INSTALL) != 0)
				break;
		if (i == n)
			return 0;
		if (i > 0)
			return errno == ENOMEM ? ENOMEM : EAGAIN;
		st.guard_mode = GUARD_MPROTECT;
	}
	/* Each mprotect guard splits a VMA in two: stop well before the limit. */
	if ((st.mprotect_guards + n) * 2 + 1024 > st.map_count_max) {
		warn_map_count();
		return EAGAIN;
	}
	for (int i = 0; i < n; i++) {
		if (mprotect(at[i], pg, PROT_NONE) != 0) {
			if (errno == ENOMEM)
				warn_map_count();
			return EAGAIN;
		}
		st.mprotect_guards++;
	}
	return 0;
}

/* Fill in a fresh record at the top of [lo, lo+usable). */
static struct weft__g *record_init(char *lo, size_t usable)
{
	struct weft__g *g = (struct weft__g *)(lo + usable - RECORD_BYTES);
	memset(g, 0, sizeof *g);
	g->stack_lo = lo;
	g->stack_size = usable;
	g->status = G_IDLE;
	weft__san_fiber_create(g);
#ifdef WEFT_HAVE_VALGRIND_H
	VALGRIND_STACK_REGISTER(lo, lo + usable);
#endif
	return g;
}

static void allg_link(struct weft__g *first, struct weft__g *last)
{
	weft__lock(&weft__sched.allg_lock);
	last->allnext = weft__sched.allg;
	__atomic_store_n(&weft__sched.allg, first, __ATOMIC_RELEASE);
	weft__unlock(&weft__sched.allg_lock);
}

/* Make room for n more entries in the global cache; st.lock held. */
static int reserve(int64_t n)
{
	if (st.nfree + n <= st.cap)
		return 0;
	int64_t ncap = st.cap ? st.cap * 2 : 4096;
	while (ncap < st.nfree + n)
		ncap *= 2;
	struct weft__g **nv = weft__alloc(sizeof *nv * (size_t)ncap);
	if (!nv)
		return ENOMEM;
	for (int64_t i = 0; i < st.nfree; i++)
		nv[i] = st.free[i];
	weft__free(st.free);
	st.free = nv;
	st.cap = ncap;
	return 0;
}

/*
 * Fault in the record pages of a batch of units (guards[i] + unit - page) in
 * one system call: process_madvise(MADV_POPULATE_WRITE) on our own pidfd
 * (Linux 6.13+ takes any advice for the calling process). A first-touch
 * fault costs 2.5-4 us on a VM, of which the trap and its bookkeeping are a
 * good part; the bulk call skips them. Not supported: st.populate_ok is
 * cleared and the records fault one by one as they are written. No lock
 * held.
 */
static void populate_tops(char **guards, size_t unit)
{
	size_t pg = weft__page_size();
	struct iovec iov[BATCH];
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = guards[i] + unit - pg;
		iov[i].iov_len = pg;
	}
	long r = syscall(SYS_process_madvise, st.pidfd, iov, (size_t)BATCH, MADV_POPULATE_WRITE, 0);
	if (r < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM))
		__atomic_store_n(&st.populate_ok, 0, __ATOMIC_RELAXED);
}

/* Carve a batch of default units into out[BATCH]. No lock held on entry:
 * the address range and the guards are taken under carve_lock, and the
 * records are written (the first-touch page faults, 2-5 us each on a VM)
 * with no lock held, so other Ps keep using the stack cache meanwhile.
 * Returns 0 or an error number. */
static int carve(struct weft__g **out)
{
	size_t pg = weft__page_size();
	char *guards[BATCH];
	weft__lock(&st.carve_lock);
	if (!st.unit)
		st.unit = pg + round_page(WEFT_DEFAULT_STACK);
	if (st.cur == NULL || (size_t)(st.end - st.cur) < st.unit * BATCH) {
		void *r = mmap(NULL, RESERVE_BYTES, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (r == MAP_FAILED) {
			weft__unlock(&st.carve_lock);
			return errno == ENOMEM ? ENOMEM : EAGAIN;
		}
		st.cur = r;
		st.end = (char *)r + RESERVE_BYTES;
	}
	for (int i = 0; i < BATCH; i++)
		guards[i] = st.cur + (size_t)i * st.unit;
	int e = install_guards(guards, BATCH);
	if (e) {
		weft__unlock(&st.carve_lock);
		return e;
	}
	st.cur += st.unit * BATCH;
	size_t unit = st.unit;
	int populate = __atomic_load_n(&st.populate_ok, __ATOMIC_RELAXED);
	weft__unlock(&st.carve_lock);
	if (populate)
		populate_tops(guards, unit);

	struct weft__g *first = NULL, *prev = NULL;
	/* Reverse order, so that popping hands out the lowest addresses first. */
	for (int i = BATCH - 1; i >= 0; i--) {
		size_t color = (size_t)(i % COLORS) * 64;
		struct weft__g *g = record_init(guards[i] + pg, unit - pg - color);
		if (prev)
			prev->allnext = g;
		else
			first = g;
		prev = g;
		out[BATCH - 1 - i] = g;
	}
	allg_link(first, prev);
	return 0;
}

static void global_push(struct weft__g **v, int n);

static struct weft__g *alloc_custom(size_t size, int *err)
{
	size_t pg = weft__page_size();
	size_t usable = round_page(size);
	char *m = mmap(NULL, usable + pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) {
		*err = errno == ENOMEM ? ENOMEM : EAGAIN;
		return NULL;
	}
	/* A separate mapping costs a VMA anyway; mprotect works everywhere. */
	if (madvise(m, pg, MADV_GUARD_INSTALL) != 0 && mprotect(m, pg, PROT_NONE) != 0) {
		munmap(m, usable + pg);
		*err = EAGAIN;
		return NULL;
	}
	struct weft__g *g = record_init(m + pg, usable);
	g->custom_stack = 1;
	allg_link(g, g);
	return g;
}

/* Make a recycled record ready for weft_go. Only the first line and what
 * is not already clean at exit are written: a G ends with no timer
 * pending, not locked (goexit clears lockedm), with no wait reason. */
static void reset_record(struct weft__g *g)
{
	g->schedlink = NULL;
	g->lockedm = NULL;
#ifdef WEFT_ASAN
	g->asan_fake_stack = NULL;
#endif
}

/* Take the newest entry of the global cache; st.lock held, nfree > 0. */
static struct weft__g *global_pop(void)
{
	struct weft__g *g = st.free[--st.nfree];
	if (st.nfree < st.low_water)
		st.low_water = st.nfree;
	if (st.nfree < st.trimmed)
		st.trimmed = st.nfree;
	return g;
}

struct weft__g *weft__stack_alloc(struct weft__p *p, size_t size, int *err)
{
	struct weft__g *g;
	if (size != 0 && round_page(size) != round_page(WEFT_DEFAULT_STACK)) {
		g = alloc_custom(size, err);
		if (g)
			reset_record(g);
		return g;
	}
	if (p && p->ngfree) {
		g = p->gfree[--p->ngfree];
		reset_record(g);
		return g;
	}
	weft__lock(&st.lock);
	if (!st.nfree) {
		/* Carve without holding the cache lock (the faults are slow). */
		weft__unlock(&st.lock);
		struct weft__g *batch[BATCH];
		int e = carve(batch);
		if (e) {
			*err = e;
			return NULL;
		}
		weft__lock(&st.lock);
		global_push(batch, BATCH);
	}
	/* Take one, and refill the P's cache with up to a batch more. */
	g = global_pop();
	for (int i = 0; p && i < BATCH && st.nfree; i++)
		p->gfree[p->ngfree++] = global_pop();
	weft__unlock(&st.lock);
	if (g->stack_trimmed)
		g->stack_trimmed = 0;
	reset_record(g);
	return g;
}

static void unmap_custom(struct weft__g *g)
{
	size_t pg = weft__page_size();
	/* Unlink from the all-G list: the record goes away with the mapping. */
	weft__lock(&weft__sched.allg_lock);
	struct weft__g **pp = &weft__sched.allg;
	while (*pp && *pp != g)
		pp = &(*pp)->allnext;
	if (*pp)
		*pp = g->allnext;
	weft__unlock(&weft__sched.allg_lock);
	weft__san_fiber_destroy(g);
	munmap(g->stack_lo - pg, g->stack_size + pg);
}

/* Push n units onto the global cache; st.lock held. A failure to grow the
 * array is fatal: the units cannot be dropped (they are on the all-G list). */
static void global_push(struct weft__g **v, int n)
{
	if (reserve(n))
		weft__fatal("out of memory caching goroutine stacks");
	for (int i = 0; i < n; i++)
		st.free[st.nfree++] = v[i];
}

void weft__stack_free(struct weft__p *p, struct weft__g *g)
{
	/* Frames that never returned (the exit path) leave poisoned redzones. */
	weft__san_stack_reset(g->stack_lo, g->stack_size - RECORD_BYTES);
	if (g->custom_stack) {
		unmap_custom(g);
		return;
	}
	if (p) {
		if (p->ngfree == WEFT_PCACHE) {
			/* Spill the older half to the global cache. */
			int half = WEFT_PCACHE / 2;
			weft__lock(&st.lock);
			global_push(p->gfree, half);
			weft__unlock(&st.lock);
			for (int i = half; i < WEFT_PCACHE; i++)
				p->gfree[i - half] = p->gfree[i];
			p->ngfree -= half;
		}
		p->gfree[p->ngfree++] = g;
		return;
	}
	weft__lock(&st.lock);
	global_push(&g, 1);
	weft__unlock(&st.lock);
}

void weft__stack_flush(struct weft__p *p)
{
	weft__lock(&st.lock);
	global_push(p->gfree, p->ngfree);
	weft__unlock(&st.lock);
	p->ngfree = 0;
}

void weft__stack_trim(void)
{
	size_t pg = weft__page_size();
	weft__lock(&st.lock);
	/* Entries below the low-water mark have sat in the cache since the
	 * last pass; those below `trimmed` were given back already. */
	for (int64_t i = st.trimmed; i < st.low_water; i++) {
		struct weft__g *g = st.free[i];
		char *rec_page = (char *)((uintptr_t)g & ~(uintptr_t)(pg - 1));
		if (rec_page > g->stack_lo)
			madvise(g->stack_lo, (size_t)(rec_page - g->stack_lo), MADV_FREE);
		g->stack_trimmed = 1;
	}
	if (st.low_water > st.trimmed)
		st.trimmed = st.low_water;
	st.low_water = st.nfree;
	weft__unlock(&st.lock);
}

int weft__stack_is_guard(struct weft__g *g, const void *addr)
{
	const char *a = addr;
	size_t pg = weft__page_size();
	return a >= g->stack_lo - pg && a < g->stack_lo;
}
