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
 * (and emulators that accept the advice but ignore it: probed once)
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
#include <fcntl.h>
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
#include "sysdefs.h"

#define RESERVE_BYTES ((size_t)1 << 30)
#define BATCH WEFT_STACK_BATCH
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
/* weft__g.custom_stack: how a custom-size stack is guarded. */
enum { CUSTOM_MADV = 1, CUSTOM_MPROTECT = 2 };

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
	int madv_guard;         /* MADV_GUARD_INSTALL really guards: 1, no: -1,
	                         * not yet probed: 0 (atomic; see madv_guard_works) */
	int populate_ok;        /* populate_tops works here (until it fails once) */
	int precarve;           /* batches idle Ps may carve ahead (atomic; see below) */
	int64_t carved, carved_ahead; /* default units, all and by idle Ps (atomic) */
	int precarving;         /* carves ahead under way (atomic) */
	int pidfd;
	long map_count_max;     /* atomic; 0 until read (map_limit) */
	long mprotect_guards;   /* mprotect guards installed: a VMA split each */
	long custom_maps;       /* atomic: maps held by mprotect-guarded custom
	                         * stacks (2 each: the guard and the stack) */
	char *partial_at;       /* a batch whose mprotect guards failed part way: */
	int partial_n;          /* its first address, and how many it has */
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

/* vm.max_map_count, read once. */
static long map_limit(void)
{
	long v = __atomic_load_n(&st.map_count_max, __ATOMIC_RELAXED);
	if (!v) {
		v = read_max_map_count();
		long z = 0;
		if (!__atomic_compare_exchange_n(&st.map_count_max, &z, v, 0, __ATOMIC_RELAXED,
						 __ATOMIC_RELAXED))
			v = z; /* a test's limit (weft__stack_set_map_limit) won */
	}
	return v;
}

/* Would n more maps for mprotect-guarded stacks come within the margin of
 * vm.max_map_count? (Other maps of the process get the 1024 of margin.) */
static int maps_short(long n)
{
	long used = __atomic_load_n(&st.mprotect_guards, __ATOMIC_RELAXED) * 2 +
		    __atomic_load_n(&st.custom_maps, __ATOMIC_RELAXED);
	return used + n + 1024 > map_limit();
}

static void warn_map_count(void)
{
	if (__atomic_fetch_add(&st.map_count_warned, 1, __ATOMIC_RELAXED))
		return;
	fprintf(stderr, "weft: cannot create more goroutine stacks: MADV_GUARD_INSTALL "
		"(Linux 6.13+) is missing here or has no effect (an emulator), so each guard "
		"page costs memory maps, and "
		"vm.max_map_count=%ld is nearly used up; raise it (sysctl vm.max_map_count) or "
		"use a newer kernel\n", map_limit());
}

/*
 * Whether MADV_GUARD_INSTALL really guards pages here. Its success proves
 * nothing: an emulator such as qemu-user (7.2) answers 0 to advice it does
 * not know and does nothing, which left every stack unguarded there (an
 * overflow ran into the next mapping). So probe once: a guarded page makes
 * write(2) from it to a pipe fail with EFAULT. (write, because the kernel
 * alone reads the buffer: under Valgrind, calls whose arguments it reads
 * itself, such as rt_sigprocmask's set, would fault inside Valgrind.) If no
 * pipe can be had (descriptors used up at the first stack), the answer is
 * no: mprotect guards cost maps but always guard. Racing first callers
 * probe alike.
 */
static int madv_guard_works(void)
{
	int v = __atomic_load_n(&st.madv_guard, __ATOMIC_ACQUIRE);
	if (v)
		return v > 0;
	size_t pg = weft__page_size();
	v = -1;
	char *p = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		int fd[2];
		if (madvise(p, pg, MADV_GUARD_INSTALL) == 0 && pipe2(fd, O_CLOEXEC) == 0) {
			if (write(fd[1], p, 1) < 0 && errno == EFAULT)
				v = 1;
			close(fd[0]);
			close(fd[1]);
		}
		munmap(p, pg);
	}
	__atomic_store_n(&st.madv_guard, v, __ATOMIC_RELEASE);
	return v > 0;
}

/* Install guard pages at the given addresses. carve_lock held. Returns 0 or an
 * error number. */
static int install_guards(char **at, int n)
{
	size_t pg = weft__page_size();
	if (st.guard_mode == GUARD_UNKNOWN) {
		st.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		__atomic_store_n(&st.populate_ok, st.pidfd >= 0, __ATOMIC_RELAXED);
		st.guard_mode = madv_guard_works() ? GUARD_MADV_BATCH : GUARD_MPROTECT;
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
	/* A retry of the batch that failed part way (the bump region did not
	 * move) skips the guards it already has, which are counted. */
	int from = at[0] == st.partial_at ? st.partial_n : 0;
	/* Each mprotect guard splits a VMA in two: stop well before the limit. */
	if (maps_short((long)(n - from) * 2)) {
		warn_map_count();
		return EAGAIN;
	}
	for (int i = from; i < n; i++) {
		if (mprotect(at[i], pg, PROT_NONE) != 0) {
			if (errno == ENOMEM)
				warn_map_count();
			st.partial_at = at[0];
			st.partial_n = i;
			return EAGAIN;
		}
		__atomic_add_fetch(&st.mprotect_guards, 1, __ATOMIC_RELAXED);
	}
	st.partial_at = NULL;
	st.partial_n = 0;
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
	g->vg_stack = VALGRIND_STACK_REGISTER(lo, lo + usable);
#endif
	return g;
}

/* Put the chain first..last (linked through allnext and allpprev already)
 * at the head of the all-G list. */
static void allg_link(struct weft__g *first, struct weft__g *last)
{
	weft__lock(&weft__sched.allg_lock);
	struct weft__g *head = weft__sched.allg;
	last->allnext = head;
	if (head)
		head->allpprev = &last->allnext;
	first->allpprev = &weft__sched.allg;
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
		if (prev) {
			prev->allnext = g;
			g->allpprev = &prev->allnext;
		} else {
			first = g;
		}
		prev = g;
		out[BATCH - 1 - i] = g;
	}
	allg_link(first, prev);
	__atomic_add_fetch(&st.carved, BATCH, __ATOMIC_RELAXED);
	return 0;
}

static void global_push(struct weft__g **v, int n);

static struct weft__g *alloc_custom(size_t size, int *err)
{
	size_t pg = weft__page_size();
	size_t usable = round_page(size);
	/* Without MADV_GUARD_INSTALL the guard is an mprotect'ed page: the
	 * stack costs two maps, counted with the carved stacks' guards so the
	 * process never meets vm.max_map_count (EAGAIN and the warning
	 * first). With it, a custom stack is a mapping like any other the
	 * program makes. */
	int counted = !madv_guard_works(); /* counted before mapping */
	if (counted) {
		if (maps_short(2)) {
			warn_map_count();
			*err = EAGAIN;
			return NULL;
		}
		__atomic_add_fetch(&st.custom_maps, 2, __ATOMIC_RELAXED);
	}
	char *m = mmap(NULL, usable + pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) {
		*err = errno == ENOMEM ? ENOMEM : EAGAIN;
		goto fail;
	}
	/* Where the advice works but is refused for this mapping: mprotect
	 * after all, counted once it holds. */
	int mprotected = counted || madvise(m, pg, MADV_GUARD_INSTALL) != 0;
	if (mprotected && !counted && maps_short(2)) {
		warn_map_count();
		munmap(m, usable + pg);
		*err = EAGAIN;
		goto fail;
	}
	if (mprotected && mprotect(m, pg, PROT_NONE) != 0) {
		/* ENOMEM here means the maps ran out. */
		if (errno == ENOMEM)
			warn_map_count();
		munmap(m, usable + pg);
		*err = EAGAIN;
		goto fail;
	}
	if (mprotected && !counted)
		__atomic_add_fetch(&st.custom_maps, 2, __ATOMIC_RELAXED);
	struct weft__g *g = record_init(m + pg, usable);
	g->custom_stack = mprotected ? CUSTOM_MPROTECT : CUSTOM_MADV;
	allg_link(g, g);
	return g;
fail:
	if (counted)
		__atomic_sub_fetch(&st.custom_maps, 2, __ATOMIC_RELAXED);
	return NULL;
}

void weft__stack_set_map_limit(long max, int no_madv_guard)
{
	__atomic_store_n(&st.map_count_max, max, __ATOMIC_RELAXED);
	if (no_madv_guard) {
		weft__lock(&st.carve_lock);
		__atomic_store_n(&st.madv_guard, -1, __ATOMIC_RELEASE);
		if (st.guard_mode != GUARD_UNKNOWN)
			st.guard_mode = GUARD_MPROTECT;
		weft__unlock(&st.carve_lock);
	}
}

/* Prefetch a line for writing (PREFETCHW: fetched exclusive, so the store
 * that follows needs no second trip to the other caches; a NOP on x86-64
 * CPUs without it). */
static inline void prefetch_write(const void *a)
{
#if defined(__x86_64__)
	__asm__ volatile("prefetchw %0" : : "m"(*(const char *)a));
#else
	__builtin_prefetch(a, 1);
#endif
}

/* Make a recycled record ready for weft_go: only what is not already clean
 * at exit (units are freed only there, by goexit's AFTER_FREE). A G ends with
 * no timer pending and not locked (goexit clears lockedm); a stale wait
 * reason is never read (dumps read it only of a WAITING G, and a park sets
 * it first). */
static void reset_record(struct weft__g *g)
{
#ifdef WEFT_ASAN
	g->asan_fake_stack = NULL;
#else
	(void)g;
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

/*
 * Carving ahead. A new unit costs a page fault's worth of kernel time (2-5
 * us on a VM) and is paid by the spawner when the caches run dry, so a burst
 * of spawns runs at the kernel's pace on one CPU while the Ps that run the
 * new goroutines often sit idle. Each carve on demand (the global cache was
 * empty) of a burst (precarve_grant says when) grants credit for
 * PRECARVE_GRANT more batches, at most PRECARVE_MAX in all; an M whose P
 * found nothing to run spends it before it sleeps, carving batches into the
 * global cache, having handed its P back first (precarve_unowned, sched.c),
 * so that no work waits for the carve. The credit exists only while the
 * spawner keeps missing, so a program that stops spawning gets at most
 * PRECARVE_MAX batches it did not ask for, cached for its next spawns and
 * trimmed like any unit if they stay unused. (Measured, MemPark1M at 2 Ps:
 * creation 2.8 s -> 2.1 s.) With one P nothing changes until the spawner
 * blocks: no P is idle while it runs.
 */
#define PRECARVE_GRANT 2
#define PRECARVE_MAX WEFT_PRECARVE_MAX
/* After a carve on demand: credit, if it is a burst's, i.e. the units
 * carved before it are nearly all in use (fewer than half a batch idle in
 * the caches; goroutines alive stand for units in use). A program's first
 * carve has none before it, and one whose goroutines come and go keeps
 * plenty idle (in some P's cache): neither is a burst. */
static void precarve_grant(void)
{
	int64_t before = __atomic_load_n(&st.carved, __ATOMIC_RELAXED) - BATCH;
	if (before <= 0 || before - weft__count_goroutines() >= BATCH / 2)
		return;
	int c = __atomic_load_n(&st.precarve, __ATOMIC_RELAXED);
	while (c < PRECARVE_MAX &&
	       !__atomic_compare_exchange_n(&st.precarve, &c,
					    c + PRECARVE_GRANT < PRECARVE_MAX ? c + PRECARVE_GRANT : PRECARVE_MAX,
					    1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

int weft__stack_precarve_wanted(void)
{
	return __atomic_load_n(&st.precarve, __ATOMIC_SEQ_CST) > 0;
}

void (*weft__stack_precarve_hook)(void);

void weft__stack_precarve(void)
{
	/* Under way before the credit is taken: no credit left and nothing
	 * under way, read in that order, means no more carving. */
	__atomic_add_fetch(&st.precarving, 1, __ATOMIC_SEQ_CST);
	int c = __atomic_load_n(&st.precarve, __ATOMIC_SEQ_CST);
	do {
		if (c <= 0)
			goto out;
	} while (!__atomic_compare_exchange_n(&st.precarve, &c, c - 1, 1,
					      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
	void (*hook)(void) = __atomic_load_n(&weft__stack_precarve_hook, __ATOMIC_ACQUIRE);
	if (hook)
		hook();
	struct weft__g *batch[BATCH];
	if (carve(batch) != 0) {
		/* Out of memory or maps: leave it to demand, which reports it. */
		__atomic_store_n(&st.precarve, 0, __ATOMIC_RELAXED);
	} else {
		weft__lock(&st.lock);
		global_push(batch, BATCH);
		weft__unlock(&st.lock);
		__atomic_add_fetch(&st.carved_ahead, BATCH, __ATOMIC_RELAXED);
	}
out:
	__atomic_sub_fetch(&st.precarving, 1, __ATOMIC_SEQ_CST);
}

int weft__stack_counts(int64_t *carved, int64_t *ahead)
{
	int busy = __atomic_load_n(&st.precarving, __ATOMIC_SEQ_CST) > 0;
	*carved = __atomic_load_n(&st.carved, __ATOMIC_RELAXED);
	*ahead = __atomic_load_n(&st.carved_ahead, __ATOMIC_RELAXED);
	return busy;
}

/* weft__stack_alloc past the P's cache: size is a custom size, or 0 for the
 * default (from the global cache, carving when it is empty). */
static struct weft__g *stack_alloc_slow(struct weft__p *p, size_t size, int *err)
{
	struct weft__g *g;
	if (size) {
		g = alloc_custom(size, err);
		if (g)
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
		precarve_grant();
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

struct weft__g *weft__stack_alloc(struct weft__p *p, size_t size, int *err)
{
	int custom = size != 0 && round_page(size) != round_page(WEFT_DEFAULT_STACK);
	if (!custom && p && p->ngfree) {
		struct weft__g *g = p->gfree[--p->ngfree];
		if (p->ngfree < p->gfree_low)
			p->gfree_low = p->ngfree;
		/* The next spawn writes the next unit's record and the frame
		 * below it: ask for both lines now, so they come in (from
		 * another CPU's cache when another P ran its last goroutine)
		 * while this spawn goes on. */
		if (p->ngfree) {
			char *next = (char *)p->gfree[p->ngfree - 1];
			prefetch_write(next);
			prefetch_write(next - 64);
		}
		reset_record(g);
		return g;
	}
	/* The other ways make system calls (mmap, madvise, a futex wait for
	 * the lock); the caller's errno is its own. No switch can happen in
	 * between, so the address holds. */
	int *errp = weft__errno_addr(), saved_errno = *errp;
	struct weft__g *g = stack_alloc_slow(p, custom ? size : 0, err);
	*errp = saved_errno;
	return g;
}

/*
 * The P caches give idle memory back too. Only its owner touches a P's
 * cache, so sysmon cannot trim it as it trims the global cache. Each cache
 * keeps a low-water mark instead: the fewest entries it has held since its
 * window began. The entries below the mark (the oldest: the cache is a
 * stack) were not taken in that window. Once the window spans a whole trim
 * period (the epoch has moved on by 2 since it began), they move to the
 * global cache, whose next passes give their memory back, and a new window
 * begins. The owner looks as a goroutine's stack comes back to its cache,
 * and every 61st schedule (a P whose goroutines never end); sysmon looks at
 * the idle Ps.
 */
static uint32_t trim_epoch; /* atomic; sysmon's trim periods */

/* Move the n oldest entries of p's cache to the global cache. */
static void spill_oldest(struct weft__p *p, int n)
{
	weft__lock(&st.lock);
	global_push(p->gfree, n);
	weft__unlock(&st.lock);
	/* A loop, not memmove: under ThreadSanitizer the runtime is not
	 * instrumented, but libc calls are intercepted, and would show the
	 * goroutines that run this in turn as racing. */
	for (int i = n; i < p->ngfree; i++)
		p->gfree[i - n] = p->gfree[i];
	p->ngfree -= n;
	p->gfree_low = p->gfree_low > n ? p->gfree_low - n : 0;
}

static inline int spill_due(const struct weft__p *p)
{
	return __atomic_load_n(&trim_epoch, __ATOMIC_RELAXED) - p->trim_start >= 2;
}

void weft__stack_trim_epoch(void)
{
	__atomic_add_fetch(&trim_epoch, 1, __ATOMIC_RELAXED);
}

void weft__stack_spill_unused(struct weft__p *p)
{
	if (!spill_due(p))
		return;
	int low = p->gfree_low < p->ngfree ? p->gfree_low : p->ngfree;
	if (low > 0)
		spill_oldest(p, low);
	p->gfree_low = p->ngfree;
	p->trim_start = __atomic_load_n(&trim_epoch, __ATOMIC_RELAXED);
}

static void unmap_custom(struct weft__g *g)
{
	size_t pg = weft__page_size();
	/* Unlink from the all-G list: the record goes away with the mapping.
	 * In O(1): walking from the head took a cold page per goroutine
	 * carved since this one (10 ms an exit behind 100,000 of them), with
	 * dumps, sysmon and every carve waiting on the lock. */
	weft__lock(&weft__sched.allg_lock);
	*g->allpprev = g->allnext;
	if (g->allnext)
		g->allnext->allpprev = g->allpprev;
	weft__unlock(&weft__sched.allg_lock);
	weft__san_fiber_destroy(g);
#ifdef WEFT_HAVE_VALGRIND_H
	VALGRIND_STACK_DEREGISTER(g->vg_stack);
#endif
	int mprotected = g->custom_stack == CUSTOM_MPROTECT; /* the record goes below */
	munmap(g->stack_lo - pg, g->stack_size + pg);
	if (mprotected)
		__atomic_sub_fetch(&st.custom_maps, 2, __ATOMIC_RELAXED);
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
		if (p->ngfree == WEFT_PCACHE)
			spill_oldest(p, WEFT_PCACHE / 2);
		p->gfree[p->ngfree++] = g;
		if (__builtin_expect(spill_due(p), 0))
			weft__stack_spill_unused(p);
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
	p->gfree_low = 0;
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
