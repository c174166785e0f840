/* SPDX-License-Identifier: MIT */
/*
 * sched.c - the goroutine scheduler (Go's G-M-P design, proc.go).
 *
 * Glossary.
 *   G  a goroutine: a stack, a saved stack pointer and a record (sched.h).
 *   M  an OS thread that runs Gs. Its own thread stack is its "g0": the
 *      scheduler context, used when no G can run or when a hand-off needs a
 *      stack that no G owns.
 *   P  a processor: the right to run Gs, with the resources that go with it
 *      (a run queue, a timer heap, a stack cache). There are weft_procs() Ps;
 *      an M must hold a P to run Gs. An M in a blocking call keeps its P only
 *      until sysmon retakes it.
 *
 * Switching. A G that stops running (yield, park, exit) picks the next G
 * itself and switches to it directly, on its own stack: one switch, not two
 * through g0. What must happen after the old G's registers are saved (putting
 * it on a run queue, releasing the lock that guards its wait, arming its
 * sleep timer, recycling its stack) is recorded in the M as an "after" action
 * and done by whoever resumes next, first thing (run_after). That is what
 * makes a park race-free: no one can see the G as runnable before its
 * context is saved. Only when no G is runnable, or for hand-offs that
 * involve another M, does the G switch to g0, where the M looks for work,
 * steals, and finally parks on a futex.
 *
 * Finding work (findrunnable, on g0): the local queue, the global queue
 * (also every 61st schedule for fairness, as in Go), then stealing: up to
 * four rounds over the other Ps in random order, taking half of a victim's
 * queue and running its overdue timers. Only a bounded number of Ms spin
 * (at most half the busy Ps): the rest park. An M that stops spinning
 * re-checks every queue after decrementing nmspinning; a producer that
 * queues a G checks nmspinning after publishing it (weft__wakep). Both
 * sides use sequentially consistent atomics, so one of them always sees
 * the other: no G is left in a queue with every M asleep.
 *
 * Timers: an idle M sleeps on its futex until the earliest timer of all Ps
 * (only one M does a timed sleep for a given deadline: sched.timer_wait_until),
 * then takes an idle P and runs the overdue timers while stealing. With no P
 * idle it sleeps untimed: the Ps' holders run their own timers, and whoever
 * idles a P looks at its timers. sysmon covers Ps that are stuck in a
 * long-running G.
 *
 * Locked Gs (weft_lock_thread): a locked G runs only on its M, and that M
 * runs nothing else. When the locked G stops, its M gives its P away and
 * sleeps; an M that picks the locked G from a queue hands its own P to the
 * locked M and sleeps in turn (Go's startlockedm/stoplockedm).
 *
 * Rejected: switching through g0 on every switch (twice the switches, and
 * Yield would cost more than Go's); one global run queue (a lock on every
 * spawn); spinning idle Ms without bound (Boost.Fiber's stealing scheduler
 * burns CPU and gets slower with more threads); signal preemption (not safe
 * for arbitrary C code: sysmon detects hogs and moves work around them).
 */
#include "sched.h"
#include "netpoll.h"

#include <linux/membarrier.h>

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "fatal.h"
#include "sanitizer.h"

struct weft__sched weft__sched = {
	.timer_wait_until = INT64_MAX,
};

void weft__switch(void **save_sp, void *new_sp);
#if defined(__x86_64__)
void weft__switch_new(void **save_sp, void *new_sp);
#else
#define weft__switch_new weft__switch /* a ret there predicts as well as a jump */
#endif
void weft__gostart(void);
void weft__goentry(void);

__thread struct weft__m *weft__tls_m;

#ifdef WEFT_TSAN
void AnnotateBenignRaceSized(const char *file, int line, const volatile void *mem,
			     unsigned long size, const char *desc);
#endif

/* ---------------------------------------------------------------- thread state */

__attribute__((noinline)) struct weft__m *weft__m_get_slow(void)
{
	struct weft__m *m = weft__tls_m;
	/* An opaque barrier: the compiler may not treat this function as pure
	 * and reuse one thread's answer after a switch to another thread. */
	__asm__ __volatile__("" : "+r"(m));
	return m;
}

__attribute__((noinline)) static void m_set(struct weft__m *m)
{
	weft__tls_m = m;
	__asm__ __volatile__("" ::: "memory");
}

struct weft__g *weft__g_get(void)
{
	struct weft__m *m = weft__m_get();
	return m ? m->curg : NULL;
}

/* errno's address for the thread we are on now: glibc declares
 * __errno_location const, so the address must never be computed before a
 * switch and used after it. Gs read it through their current M
 * (m->errno_ptr, set by the M's own thread); this is for the rest. */
__attribute__((noinline)) int *weft__errno_addr(void)
{
	int *p = &errno;
	__asm__ __volatile__("" : "+r"(p));
	return p;
}

int64_t weft_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *weft_version(void)
{
	return WEFT_VERSION_STRING;
}

uint64_t weft__fastrand(void)
{
	struct weft__m *m = weft__m_get();
	if (m)
		return weft__fastrand_m(m);
	static uint64_t ctr = 0x9E3779B97F4A7C15ull;
	uint64_t z = __atomic_add_fetch(&ctr, 0x9E3779B97F4A7C15ull, __ATOMIC_RELAXED);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static inline int chaos(int one_in)
{
	return weft__sched.chaos && weft__fastrand() % (uint64_t)one_in == 0;
}

/* Owner-written counters: a relaxed store avoids a locked instruction. */
static inline void stat_inc(int64_t *c)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- start */

static struct weft__p *p_new(int id)
{
	struct weft__p *p = aligned_alloc(WEFT_CACHELINE, sizeof *p);
	if (!p)
		weft__fatal("out of memory allocating a P");
	memset(p, 0, sizeof *p);
	p->id = id;
	p->status = P_DEAD;
	weft__timers_init(&p->timers);
	return p;
}

static void pidleput(struct weft__p *p);
static void blk_init(void);
static void resize_locked(int n);

static void parse_debug(void)
{
	struct weft__sched *s = &weft__sched;
	const char *d = getenv("WEFT_DEBUG");
	if (!d)
		return;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", d);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "chaos"))
			s->chaos = 1;
		else if (!strncmp(tok, "seed=", 5))
			s->chaos_seed = strtoull(tok + 5, NULL, 10);
		else if (!strcmp(tok, "hogs"))
			s->hogs = 1;
		else if (!strncmp(tok, "schedtrace=", 11))
			s->schedtrace_ms = atoi(tok + 11);
		else if (!strncmp(tok, "hostthreads=", 12) && atoi(tok + 12) >= 0)
			s->host_threads = atoi(tok + 12);
		else
			fprintf(stderr, "weft: WEFT_DEBUG: unknown option '%s' (known: chaos, "
				"seed=N, hogs, schedtrace=MS, hostthreads=N)\n", tok);
	}
	if (s->chaos && !s->chaos_seed)
		s->chaos_seed = (uint64_t)weft_now() | 1;
	if (s->chaos)
		fprintf(stderr, "weft: chaos mode, seed=%llu\n", (unsigned long long)s->chaos_seed);
}

static int default_procs(void)
{
	const char *e = getenv("WEFT_PROCS");
	if (e && *e) {
		char *end;
		long n = strtol(e, &end, 10);
		if (*end == 0 && n >= 1 && n <= WEFT_MAX_PROCS)
			return (int)n;
		fprintf(stderr, "weft: WEFT_PROCS=%s is not a number from 1 to %d; ignored\n", e,
			WEFT_MAX_PROCS);
	}
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0) {
		int n = CPU_COUNT(&set);
		if (n >= 1)
			return n > WEFT_MAX_PROCS ? WEFT_MAX_PROCS : n;
	}
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > WEFT_MAX_PROCS ? WEFT_MAX_PROCS : (int)n;
}

static uint32_t start_state; /* 0 not started, 1 starting, 2 started */

int weft__membarrier_ok;

static void membarrier_init(void)
{
	int saved = errno; /* a failed probe is none of the caller's business */
	long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		weft__membarrier_ok = 1;
	errno = saved;
}

void weft__membarrier(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
		weft__fatal("membarrier failed after registration");
}

void weft__start(void)
{
	if (__builtin_expect(__atomic_load_n(&start_state, __ATOMIC_ACQUIRE) == 2, 1))
		return;
	uint32_t z = 0;
	if (!__atomic_compare_exchange_n(&start_state, &z, 1, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&start_state, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
		return;
	}
	parse_debug();
	blk_init();
	membarrier_init();
	weft__lock(&weft__sched.lock);
	resize_locked(default_procs());
	weft__unlock(&weft__sched.lock);
	weft__debug_init();
	weft__sysmon_start();
	__atomic_store_n(&start_state, 2, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------- P and M lists */

static void acquirep(struct weft__m *m, struct weft__p *p)
{
	m->p = p;
	__atomic_store_n(&p->m, m, __ATOMIC_RELEASE); /* read by sysmon */
	__atomic_store_n(&p->status, P_RUNNING, __ATOMIC_RELEASE);
}

static struct weft__p *releasep(struct weft__m *m)
{
	struct weft__p *p = m->p;
	m->p = NULL;
	__atomic_store_n(&p->m, NULL, __ATOMIC_RELEASE);
	return p;
}

/* Retire a P beyond weft_procs(): its Gs go to the global queue, its timers
 * to P 0, its stack cache to the global cache. sched.lock held. */
static void retire_locked(struct weft__p *p)
{
	struct weft__g *g;
	while ((g = weft__runq_get(p)) != NULL)
		weft__globrunq_put(g);
	weft__timers_move(&p->timers, &weft__sched.allp[0]->timers);
	weft__stack_flush(p);
	__atomic_store_n(&p->m, NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&p->status, P_DEAD, __ATOMIC_RELEASE);
}

/* sched.lock held. */
static void pidleput(struct weft__p *p)
{
	struct weft__sched *s = &weft__sched;
	if (p->id >= s->nprocs) {
		retire_locked(p);
		return;
	}
	__atomic_store_n(&p->m, NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&p->status, P_IDLE, __ATOMIC_RELEASE);
	p->link = s->pidle;
	s->pidle = p;
	__atomic_add_fetch(&s->npidle, 1, __ATOMIC_SEQ_CST);
}

/* sched.lock held. */
static struct weft__p *pidleget(void)
{
	struct weft__sched *s = &weft__sched;
	struct weft__p *p = s->pidle;
	if (p) {
		s->pidle = p->link;
		__atomic_sub_fetch(&s->npidle, 1, __ATOMIC_SEQ_CST);
	}
	return p;
}

static void resize_locked(int n)
{
	struct weft__sched *s = &weft__sched;
	int old = s->nprocs;
	while (s->nallp < n) {
		s->allp[s->nallp] = p_new(s->nallp);
		/* Publish the P before the count: sysmon reads without the lock. */
		__atomic_store_n(&s->nallp, s->nallp + 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&s->nprocs, n, __ATOMIC_SEQ_CST);
	for (int i = old; i < n; i++)
		if (__atomic_load_n(&s->allp[i]->status, __ATOMIC_ACQUIRE) == P_DEAD)
			pidleput(s->allp[i]);
	if (n < old) {
		/* Idle Ps beyond the new count leave the idle list now; running
		 * ones retire at their next trip through the scheduler. */
		struct weft__p **pp = &s->pidle;
		while (*pp) {
			struct weft__p *p = *pp;
			if (p->id >= n) {
				*pp = p->link;
				__atomic_sub_fetch(&s->npidle, 1, __ATOMIC_SEQ_CST);
				retire_locked(p);
			} else {
				pp = &p->link;
			}
		}
	}
}

static void *m_main(void *arg);

/* A new M (OS thread) that starts with P p. sched.lock not held. */
static void newm(struct weft__p *p, int spinning)
{
	struct weft__sched *s = &weft__sched;
	weft__lock(&s->lock);
	/* The record of an M that has exited, if any: records stay on allm
	 * (sysmon walks it without the lock), so they are reused rather than
	 * freed. Cleared under the lock, which WEFT_DEBUG=hogs's walk takes. */
	struct weft__m *m = s->mfree;
	if (m) {
		s->mfree = m->link;
		struct weft__m *all = m->alllink;
		memset(m, 0, sizeof *m);
		m->alllink = all;
	}
	weft__unlock(&s->lock);
	if (!m) {
		/* Plain calloc: not weft__calloc, whose failure injection
		 * (tests) would turn a thread the scheduler needs into a fatal
		 * error. */
		m = calloc(1, sizeof *m);
		if (!m)
			weft__fatal("out of memory creating a thread");
		weft__lock(&s->lock);
		m->alllink = s->allm;
		/* Publish the record after its link: sysmon walks unlocked. */
		__atomic_store_n(&s->allm, m, __ATOMIC_RELEASE);
		__atomic_add_fetch(&s->nmrec, 1, __ATOMIC_RELAXED);
		weft__unlock(&s->lock);
	}
	m->nextp = p;
	m->spinning = spinning;
	m->id = __atomic_fetch_add(&s->mcount, 1, __ATOMIC_SEQ_CST);
	m->rand = (s->chaos ? s->chaos_seed : (uint64_t)weft_now()) * 0x9E3779B97F4A7C15ull +
		  (uint64_t)m->id * 0xBF58476D1CE4E5B9ull + 1;
	int saved_errno = *weft__errno_addr();
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&m->thread, &a, m_main, m);
	pthread_attr_destroy(&a);
	if (e)
		weft__fatal_errno("pthread_create for a new M", e);
	*weft__errno_addr() = saved_errno;
}

/* Wake an M taken off the idle list, handing it P p (or none). */
static void m_wake(struct weft__m *m, struct weft__p *p, int spinning)
{
	m->nextp = p;
	m->spinning = spinning;
	/* Pairs with the acquire load in stopm: nextp and spinning are
	 * visible once park reads 1. */
	__atomic_store_n(&m->park, 1, __ATOMIC_SEQ_CST);
	weft__futex_wake(&m->park, 1);
	/* It may be the blocking poller, asleep in epoll rather than on the
	 * futex (see weft__netpoll_block for the ordering). */
	if (__atomic_load_n(&m->polling, __ATOMIC_SEQ_CST))
		weft__netpoll_break();
}

/* Take an idle M off the list, or NULL. sched.lock held. */
static struct weft__m *midle_pop_locked(void)
{
	struct weft__sched *s = &weft__sched;
	struct weft__m *m = s->midle;
	if (m) {
		s->midle = m->link;
		s->nmidle--;
	}
	return m;
}

/* m, without a P and not idle, is on its way to stopm: count it, so that
 * startm leaves it a P rather than start another M. sched.lock held. */
static void transit_begin_locked(struct weft__m *m)
{
	m->transit = 1;
	weft__sched.nmtransit++;
}

/* Give P p to an idle M; else leave it for an M on its way to the idle list
 * (it takes p in stopm, moments away), so threads do not outgrow procs +
 * max_blocking; else start a new M. Spinning when it is to look for work.
 * sched.lock not held. */
static void startm(struct weft__p *p, int spinning)
{
	struct weft__sched *s = &weft__sched;
	weft__lock(&s->lock);
	struct weft__m *m = midle_pop_locked();
	if (!m && s->nmtransit > 0) {
		p->wanted_spinning = spinning;
		p->link = s->pwanted;
		s->pwanted = p;
		weft__unlock(&s->lock);
		return;
	}
	weft__unlock(&s->lock);
	if (m)
		m_wake(m, p, spinning);
	else
		newm(p, spinning);
}

/* m leaves the transit count (it is at stopm, or took a P): it takes a wanted
 * P if there is one, as if startm had woken it with that P. Returns 1 when
 * it did. sched.lock held. */
static int transit_end_locked(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	if (m->transit) {
		m->transit = 0;
		s->nmtransit--;
	}
	struct weft__p *p = s->pwanted;
	if (!p)
		return 0;
	s->pwanted = p->link;
	m->nextp = p;
	m->spinning = p->wanted_spinning;
	return 1;
}

/* Ps still wanted once no M is in transit get new Ms. sched.lock held;
 * returns the list for start_wanted, to call after unlocking. */
static struct weft__p *wanted_orphans_locked(void)
{
	struct weft__sched *s = &weft__sched;
	if (s->nmtransit > 0)
		return NULL;
	struct weft__p *l = s->pwanted;
	s->pwanted = NULL;
	return l;
}

static void start_wanted(struct weft__p *l)
{
	while (l) {
		struct weft__p *next = l->link;
		startm(l, l->wanted_spinning);
		l = next;
	}
}

void weft__wakep(void)
{
	struct weft__sched *s = &weft__sched;
	if (__atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) == 0)
		return;
	int z = 0;
	if (__atomic_load_n(&s->nmspinning, __ATOMIC_SEQ_CST) != 0 ||
	    !__atomic_compare_exchange_n(&s->nmspinning, &z, 1, 0, __ATOMIC_SEQ_CST,
					 __ATOMIC_RELAXED))
		return;
	weft__lock(&s->lock);
	struct weft__p *p = pidleget();
	weft__unlock(&s->lock);
	if (!p) {
		__atomic_sub_fetch(&s->nmspinning, 1, __ATOMIC_SEQ_CST);
		return;
	}
	startm(p, 1);
}

/* Wake one idle M without a P, so it re-reads the timers (it takes an idle
 * P if there is one). */
static void wake_timer_m(void)
{
	struct weft__sched *s = &weft__sched;
	weft__lock(&s->lock);
	struct weft__m *m = midle_pop_locked();
	if (m)
		transit_begin_locked(m); /* off the idle list without a P */
	weft__unlock(&s->lock);
	if (m)
		m_wake(m, NULL, 0);
	else
		weft__wakep();
}

/* p was just made idle by an M that will not sleep in stopm for its timers
 * (sysmon's handoffp; findrunnable's M taking another P instead): if no idle
 * M sleeps until them (one in stopm may have found no P idle and slept
 * untimed), wake the timer M for them. */
static void watch_idled_timers(struct weft__p *p)
{
	/* A P beyond weft_procs() retired as it went idle (pidleput): its
	 * timers are P 0's now (retire_locked), and its own heap is empty. */
	if (__atomic_load_n(&p->status, __ATOMIC_ACQUIRE) == P_DEAD)
		p = weft__sched.allp[0];
	if (weft__timers_peek(&p->timers) <
	    __atomic_load_n(&weft__sched.timer_wait_until, __ATOMIC_SEQ_CST))
		wake_timer_m();
}

void weft__handoffp(struct weft__p *p)
{
	struct weft__sched *s = &weft__sched;
	if (!weft__runq_empty(p) || __atomic_load_n(&s->runqsize, __ATOMIC_RELAXED) > 0) {
		startm(p, 0);
		return;
	}
	/* No one is looking for work: this P looks, so nothing queued later
	 * is stranded. */
	int z = 0;
	if (__atomic_load_n(&s->nmspinning, __ATOMIC_SEQ_CST) +
		    __atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_compare_exchange_n(&s->nmspinning, &z, 1, 0, __ATOMIC_SEQ_CST,
					__ATOMIC_RELAXED)) {
		startm(p, 1);
		return;
	}
	weft__lock(&s->lock);
	if (s->runqsize > 0) {
		weft__unlock(&s->lock);
		startm(p, 0);
		return;
	}
	pidleput(p);
	weft__unlock(&s->lock);
	watch_idled_timers(p);
}

int64_t weft__timers_earliest(void)
{
	struct weft__sched *s = &weft__sched;
	int64_t w = INT64_MAX;
	/* Every P, a removed one too: until it retires (its goroutine may hog
	 * it or be in a blocking call) its timers are still its own. */
	int n = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		int64_t t = weft__timers_peek(&s->allp[i]->timers);
		if (t < w)
			w = t;
	}
	return w;
}

/*
 * For an M in transit (no P, not idle) that looks for work: a wanted P (with
 * the spinning flag its starter counted), or an idle P as a spinning M; with
 * neither it stays in transit, on its way to stopm. sched.lock not held.
 */
static struct weft__p *transit_take_p(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	weft__lock(&s->lock);
	struct weft__p *p = NULL;
	if (transit_end_locked(m)) {
		p = m->nextp;
		m->nextp = NULL;
	} else if ((p = pidleget()) != NULL) {
		m->spinning = 1;
		__atomic_add_fetch(&s->nmspinning, 1, __ATOMIC_SEQ_CST);
	} else {
		transit_begin_locked(m);
	}
	struct weft__p *orphans = wanted_orphans_locked();
	weft__unlock(&s->lock);
	start_wanted(orphans);
	return p;
}

/*
 * Park this M (it holds no P) until startm hands it a P, or until the
 * earliest timer of all Ps is due. Returns with m->p set when it got one.
 */
static void stopm(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	/* An M runs timers only with a P: with none idle, a timed wake-up
	 * finds none to take, and an overdue deadline (a busy P's timers, run
	 * at its next switch) made that a spin: back into stopm, the deadline
	 * still past. It burnt a core beside both Ps (Sleep at 2 Ps: 2x the
	 * CPU, 11-30 ms late instead of 3-5). Every P is held, so their
	 * holders run their timers (sysmon those of a P stuck in one G), and
	 * whoever idles one next looks at its timers: findrunnable's M in its
	 * own stopm, handoffp by waking the timer M. */
	int64_t until = __atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) != 0 ? weft__timers_earliest()
									      : INT64_MAX;
	int timed = 0;
	int64_t cur = __atomic_load_n(&s->timer_wait_until, __ATOMIC_SEQ_CST);
	while (until < cur) {
		if (__atomic_compare_exchange_n(&s->timer_wait_until, &cur, until, 0,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			timed = 1;
			break;
		}
	}
	weft__lock(&s->lock);
	if (transit_end_locked(m)) {
		/* A P was left for us: go, as if woken. */
		__atomic_store_n(&m->park, 1, __ATOMIC_RELAXED);
	} else {
		m->link = s->midle;
		s->midle = m;
		s->nmidle++;
	}
	/* More Ps were left than Ms were on their way: the rest get idle or
	 * new Ms (we may have just become the idle one). */
	struct weft__p *orphans = wanted_orphans_locked();
	weft__unlock(&s->lock);
	start_wanted(orphans);

	for (;;) {
		if (__atomic_load_n(&m->park, __ATOMIC_ACQUIRE))
			break;
		/* Something waits on a descriptor: sleep in epoll instead, as
		 * the one blocking poller. Readied goroutines went to the
		 * global queue: leave the idle list and go and run them. */
		int woken = weft__netpoll_block(m, timed ? until : INT64_MAX, &m->park);
		if (woken > 0 || (woken == 0 && timed && weft_now() >= until))
			goto timeout;
		if (woken == 0)
			continue;
		struct timespec ts, *tp = NULL;
		if (timed) {
			int64_t d = until - weft_now();
			if (d <= 0)
				goto timeout;
			ts.tv_sec = d / 1000000000;
			ts.tv_nsec = d % 1000000000;
			tp = &ts;
		}
		if (weft__futex_wait(&m->park, 0, tp) == -ETIMEDOUT)
			goto timeout;
		continue;
	timeout:
		/* Leave the idle list, unless a waker already took us off it
		 * (then its wake-up is on the way: wait for it). */
		weft__lock(&s->lock);
		struct weft__m **pp = &s->midle;
		while (*pp && *pp != m)
			pp = &(*pp)->link;
		if (*pp) {
			*pp = m->link;
			s->nmidle--;
			m->nextp = NULL;
			m->spinning = 0;
			transit_begin_locked(m); /* without a P, off the idle list */
			__atomic_store_n(&m->park, 1, __ATOMIC_RELAXED);
		}
		weft__unlock(&s->lock);
		timed = 0;
	}
	__atomic_store_n(&m->park, 0, __ATOMIC_RELAXED);
	if (until != INT64_MAX) {
		int64_t mine = until;
		if (__atomic_compare_exchange_n(&s->timer_wait_until, &mine, INT64_MAX, 0,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
		    m->nextp) {
			/* We were the timer sleeper and got other work: pass the
			 * duty to another idle M. */
			wake_timer_m();
		}
	}
	if (m->nextp) {
		acquirep(m, m->nextp);
		m->nextp = NULL;
		return;
	}
	/* Woken for the timers (or timed out): take a wanted P, or an idle one
	 * and look around as a spinning M; with neither, back to stopm, still
	 * in transit. */
	struct weft__p *p = transit_take_p(m);
	if (p)
		acquirep(m, p);
}

/* ---------------------------------------------------------------- switching */

static inline void san_start(struct weft__m *m, struct weft__g *from, struct weft__g *to)
{
#ifdef WEFT_ASAN
	void **fake = from ? (from->status == G_DEAD ? NULL : &from->asan_fake_stack)
			   : &m->asan_g0_fake;
	if (to)
		__sanitizer_start_switch_fiber(fake, to->stack_lo, to->stack_size);
	else
		__sanitizer_start_switch_fiber(fake, m->g0_lo, m->g0_size);
#else
	(void)m;
	(void)from;
#endif
#ifdef WEFT_TSAN
	__tsan_switch_to_fiber(to ? to->tsan_fiber : m->tsan_g0, __tsan_switch_to_fiber_no_sync);
#else
	(void)to;
#endif
}

static inline void san_finish(struct weft__m *m, struct weft__g *cur)
{
#ifdef WEFT_ASAN
	__sanitizer_finish_switch_fiber(cur ? cur->asan_fake_stack : m->asan_g0_fake, NULL, NULL);
#else
	(void)cur;
#endif
#ifdef WEFT_TSAN
	/* The thread's own set-up (libc's thread-locals: the <ctype.h> tables,
	 * ...) happens before anything a goroutine does on it: m_main releases
	 * this marker first thing. It orders nothing between goroutines. */
	weft__race_acquire(&m->tsan_g0);
#endif
	(void)m;
}

/* Put g on the global queue, taking sched.lock. */
static void globrunq_put_locking(struct weft__g *g)
{
	weft__lock(&weft__sched.lock);
	weft__globrunq_put(g);
	weft__unlock(&weft__sched.lock);
}

static inline __attribute__((always_inline)) void run_after(struct weft__m *m)
{
	int a = m->after;
	if (a == AFTER_NONE)
		return;
	struct weft__g *g = m->after_g;
	m->after = AFTER_NONE;
	switch (a) {
	case AFTER_READY:
		weft__runq_put(m->p, g, 0);
		/* A yield queues work that an idle P could take: nothing else
		 * wakes one for it (a P that went idle while the queue was
		 * briefly empty would leave two yielding goroutines sharing
		 * one P for good). Now and then, so it costs nothing. */
		if ((m->p->schedtick & 63) == 0)
			weft__wakep();
		break;
	case AFTER_GLOBAL:
		globrunq_put_locking(g);
		weft__wakep();
		break;
	case AFTER_UNBLOCK:
		globrunq_put_locking(g);
		__atomic_sub_fetch(&weft__sched.nblocking, 1, __ATOMIC_SEQ_CST);
		weft__wakep();
		break;
	case AFTER_PARK:
		if (m->park_fn)
			m->park_fn(m->park_arg, g);
		break;
	case AFTER_FREE:
		weft__stack_free(m->p, g);
		break;
	}
}

/*
 * Switch from `from` (a G, or NULL for g0) to `to` (a G, or NULL for g0) on
 * M m. Returns when `from` is resumed, possibly on another M, after the
 * resumer's after-action has run. A dead `from` never returns.
 */
static inline __attribute__((always_inline)) void gogo(struct weft__m *m, struct weft__g *from,
						     struct weft__g *to)
{
	int saved = 0;
	if (from)
		saved = *m->errno_ptr;
	if (to) {
		/* curg is read by sysmon and the hog reporter: atomic. */
		__atomic_store_n(&m->curg, to, __ATOMIC_RELEASE);
		__atomic_store_n(&to->status, G_RUNNING, __ATOMIC_RELAXED);
		struct weft__p *p = m->p;
		/* Release: a grace period (weft__grace_done) that sees the new
		 * tick also sees the finished read sections before it. */
		__atomic_store_n(&p->schedtick, p->schedtick + 1, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&m->curg, NULL, __ATOMIC_RELEASE);
	}
	san_start(m, from, to);
	if (to && to->fresh) {
		to->fresh = 0;
		weft__switch_new(from ? &from->sp : &m->g0_sp, to->sp);
	} else {
		weft__switch(from ? &from->sp : &m->g0_sp, to ? to->sp : m->g0_sp);
	}
	/* Resumed: we may be on another thread now. */
	m = weft__m_get();
	san_finish(m, from);
	run_after(m);
	if (from)
		*m->errno_ptr = saved;
}

/* The first code a new G runs (called from weft__gostart). */
void weft__goentry(void)
{
	struct weft__m *m = weft__m_get();
	san_finish(m, NULL);
	run_after(m);
	struct weft__g *g = m->curg;
	*m->errno_ptr = 0;
	weft__race_acquire(g); /* pairs with the spawner's release */
	g->fn(g->arg);
	weft__goexit();
}

/* The next queued G for P p: one from the global queue every 61st
 * schedule (so it is never starved by busy local queues, as in Go), else
 * the local queue (runnext first), else a share of the global queue. Owner P.
 * The 61st schedule also gives back the P's cached stacks that went unused
 * for a trim period, for a P whose goroutines never end (stack.c).
 */
static inline __attribute__((always_inline)) struct weft__g *next_queued(struct weft__p *p)
{
	struct weft__sched *s = &weft__sched;
	struct weft__g *g = NULL;
	if (p->schedtick % 61 == 0 || chaos(2)) {
		weft__stack_spill_unused(p);
		if (__atomic_load_n(&s->runqsize, __ATOMIC_RELAXED) > 0) {
			weft__lock(&s->lock);
			g = weft__globrunq_get(p, 1);
			weft__unlock(&s->lock);
			if (g)
				return g;
		}
	}
	g = weft__runq_get_fair(p);
	if (!g && __atomic_load_n(&s->runqsize, __ATOMIC_RELAXED) > 0) {
		weft__lock(&s->lock);
		g = weft__globrunq_get(p, 0);
		weft__unlock(&s->lock);
	}
	return g;
}

/* Overdue timers are fired in batches that top the local queue up to
 * TIMERS_BATCH Gs, once it holds fewer than TIMERS_LOW: their goroutines run
 * soon after, while their pages are still warm. Firing 10,000 at once and
 * then running them touches each goroutine's page twice, far apart: two TLB
 * misses, and the queue spills to the global one. The rest stay due, and
 * pick_fast comes back for them. */
enum { TIMERS_BATCH = 32, TIMERS_LOW = 8 };

/* Gs in p's ring. Owner P. */
static inline uint32_t ring_len(struct weft__p *p)
{
	return p->runqtail - __atomic_load_n(&p->runqhead, __ATOMIC_RELAXED);
}

/* How many timers to fire now on p: room up to TIMERS_BATCH, at least
 * TIMERS_LOW. Owner P. */
static inline int timers_room(struct weft__p *p)
{
	uint32_t queued = ring_len(p);
	return queued >= TIMERS_BATCH - TIMERS_LOW ? TIMERS_LOW : TIMERS_BATCH - (int)queued;
}

/* pick_fast's answer when the M must go through g0: its P is retired, a
 * timer is due, or chaos mode says so. */
#define GO_G0 ((struct weft__g *)1)

/* Pick the next G for a fast, direct switch: local queue, and the global
 * one when it is our turn or the local is empty. NULL: nothing runnable
 * here; GO_G0: switch to g0. Owner P. */
static inline __attribute__((always_inline)) struct weft__g *pick_fast(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	struct weft__p *p = m->p;
	if (p->id >= __atomic_load_n(&s->nprocs, __ATOMIC_RELAXED) || chaos(8))
		return GO_G0;
	/* Due timers are fired on g0: their callbacks go deep (ready, queue
	 * overflow) and goroutine stacks must stay shallow. They are fired in
	 * batches, when the queue runs low (and every 16th switch, so a busy
	 * queue never holds them off for long). Read the clock only then: it
	 * costs ~25 ns here. */
	int64_t when = weft__timers_peek(&p->timers);
	if (when != INT64_MAX && (ring_len(p) < TIMERS_LOW || p->schedtick % 16 == 0) &&
	    when <= weft_now())
		return GO_G0;
	/* The network is polled on g0 too (findrunnable), every 61st switch
	 * while goroutines wait on descriptors and no idle M polls. */
	if (p->schedtick % 61 == 0 && weft__netpoll_wanted() &&
	    !__atomic_load_n(&weft__netpoll_owner, __ATOMIC_RELAXED))
		return GO_G0;
	return next_queued(p);
}

/*
 * The running G `self` stops (its after-action is set) and `next`, a result
 * of pick_fast, runs instead: directly, or through g0 when there is none,
 * when pick_fast said GO_G0, or when next is pinned to another M (g0 hands
 * it over). Returns when self runs again (never for a dead self).
 */
static inline __attribute__((always_inline)) void switch_out(struct weft__m *m, struct weft__g *self,
							     struct weft__g *next)
{
	if (next && next != GO_G0) {
		if (!next->lockedm || next->lockedm == m) {
			gogo(m, self, next);
			return;
		}
		m->handoff_g = next;
	}
	gogo(m, self, NULL);
}

/* switch_out to whatever runs next here. A pinned self must go through g0:
 * nothing else may run on its M. */
static inline __attribute__((always_inline)) void schedule_out(struct weft__m *m,
								 struct weft__g *self)
{
	switch_out(m, self, m->lockedg ? NULL : pick_fast(m));
}

/* ---------------------------------------------------------------- g0: finding work */

static void reset_spinning(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	m->spinning = 0;
	if (__atomic_sub_fetch(&s->nmspinning, 1, __ATOMIC_SEQ_CST) == 0)
		weft__wakep(); /* keep one M looking while there may be more work */
}

/* Steal from the other Ps: run their overdue timers, then take half of a
 * queue. Returns a G or NULL. */
static struct weft__g *steal_work(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	struct weft__p *p = m->p;
	for (int round = 0; round < 4; round++) {
		/* Every P, a removed one too: one that has not retired yet (its
		 * goroutine hogs it or is in a blocking call) may have a queue
		 * and timers, which must move to the Ps that remain. */
		int n = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
		if (n <= 1)
			return NULL;
		/* A random start and a stride coprime to n visit each P once. */
		int start = (int)(weft__fastrand() % (uint64_t)n);
		int stride = 1;
		for (int k = 0; k < n; k++) {
			struct weft__p *v = s->allp[(start + k * stride) % n];
			if (v == p || __atomic_load_n(&v->status, __ATOMIC_RELAXED) == P_DEAD)
				continue;
			int64_t now = weft_now();
			if (weft__timers_peek(&v->timers) <= now) {
				weft__timers_run(&v->timers, now, TIMERS_BATCH);
				struct weft__g *g = weft__runq_get(p);
				if (g)
					return g;
			}
			struct weft__g *g = weft__runq_steal(p, v, round == 3, &m->ring_thief);
			if (g)
				return g;
		}
	}
	return NULL;
}

enum { LINGER_NAPS = 20 };

/* Is another P running with a G in its runnext (racy, a hint)? */
static int live_chain_elsewhere(struct weft__p *self)
{
	struct weft__sched *s = &weft__sched;
	int n = __atomic_load_n(&s->nprocs, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct weft__p *v = s->allp[i];
		if (v != self && __atomic_load_n(&v->status, __ATOMIC_RELAXED) == P_RUNNING &&
		    __atomic_load_n(&v->runnext, __ATOMIC_RELAXED))
			return 1;
	}
	return 0;
}

/* Below, with the blocking-call slots it takes. */
static void precarve_unowned(struct weft__m *m);

/* Find a runnable G for m, parking the M while there is none. On g0. */
static struct weft__g *findrunnable(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
top:
	if (!m->p) {
		stopm(m);
		goto top;
	}
	struct weft__p *p = m->p;
	if (p->id >= __atomic_load_n(&s->nprocs, __ATOMIC_ACQUIRE)) {
		/* Chaos: widen the window in which a set_procs may raise the
		 * count again. */
		weft__chaos_pause(2);
		weft__lock(&s->lock);
		/* Again under the lock: a weft_set_procs() that raised the
		 * count meanwhile skipped this P (not dead yet), so retiring
		 * it now would lose it for good. */
		if (p->id >= s->nprocs) {
			releasep(m);
			retire_locked(p);
			weft__unlock(&s->lock);
			if (m->spinning)
				reset_spinning(m);
			weft__wakep();
			goto top;
		}
		weft__unlock(&s->lock);
	}
	int64_t now = weft_now();
	if (weft__timers_peek(&p->timers) <= now)
		weft__timers_run(&p->timers, now, timers_room(p));
	/* Every 61st switch (pick_fast sent us here): poll, so descriptors are
	 * served while this P never runs dry. */
	if (p->schedtick % 61 == 0 && weft__netpoll_wanted() &&
	    !__atomic_load_n(&weft__netpoll_owner, __ATOMIC_RELAXED))
		weft__netpoll_now(m);
	struct weft__g *g = next_queued(p);
	if (g)
		goto found;
	/* Poll the network, unless an idle M blocks in epoll for it (Go polls
	 * here too, before stealing). */
	if (weft__netpoll_wanted() && !__atomic_load_n(&weft__netpoll_owner, __ATOMIC_RELAXED) &&
	    weft__netpoll_now(m) > 0) {
		g = next_queued(p);
		if (g)
			goto found;
	}

	/* Steal, if not too many Ms are already spinning. */
	int busy = __atomic_load_n(&s->nprocs, __ATOMIC_RELAXED) -
		   __atomic_load_n(&s->npidle, __ATOMIC_RELAXED);
	if (m->spinning || 2 * __atomic_load_n(&s->nmspinning, __ATOMIC_RELAXED) < busy) {
		if (!m->spinning) {
			m->spinning = 1;
			__atomic_add_fetch(&s->nmspinning, 1, __ATOMIC_SEQ_CST);
		}
		g = steal_work(m);
		if (g)
			goto found;
		/* A P running a runnext chain (a ping-pong pair, a select loop)
		 * will readily wake an idle M again and again, a futex wake
		 * each time, for nothing: its chain runs on its own P. So a
		 * spinning M lingers a while instead of parking: it naps (no
		 * CPU) and looks again, and as long as it counts as spinning,
		 * readiers wake no one. Bounded (LINGER_NAPS), so a truly idle
		 * M still parks soon. */
		if (m->linger < LINGER_NAPS && live_chain_elsewhere(p)) {
			m->linger++;
			uint32_t nap_word = 0;
			const struct timespec nap = { 0, 50000 };
			weft__raw_futex(&nap_word, FUTEX_WAIT_PRIVATE, 0, &nap);
			goto top;
		}
	}
	m->linger = 0;

	/* Nothing: give up the P. */
	weft__lock(&s->lock);
	if ((g = weft__globrunq_get(p, 0)) != NULL) {
		weft__unlock(&s->lock);
		goto found;
	}
	releasep(m);
	pidleput(p);
	transit_begin_locked(m); /* until stopm, or the P below */
	weft__unlock(&s->lock);

	if (m->spinning) {
		m->spinning = 0;
		__atomic_sub_fetch(&s->nmspinning, 1, __ATOMIC_SEQ_CST);
		/* Re-check every queue after dropping out of the spinning count:
		 * a producer that saw us spinning did not wake anyone. A
		 * removed P that has not retired yet counts too. */
		int n = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
		for (int i = 0; i < n; i++) {
			if (!weft__runq_empty(s->allp[i]) ||
			    __atomic_load_n(&s->runqsize, __ATOMIC_SEQ_CST) > 0) {
				struct weft__p *q = transit_take_p(m);
				if (q) {
					acquirep(m, q);
					watch_idled_timers(p);
					goto top;
				}
				break;
			}
		}
	}
	if (weft__stack_precarve_wanted()) {
		precarve_unowned(m);
		if (m->p)
			watch_idled_timers(p);
		goto top;
	}
	stopm(m);
	goto top;

found:
	/* The P may have been removed since the check at the top (the
	 * stealing and polling above take a while): then g, which may have
	 * been readied after the removal, must not run here. It goes to the
	 * global queue, and the top retires the P. */
	if (m->p->id >= __atomic_load_n(&s->nprocs, __ATOMIC_ACQUIRE)) {
		globrunq_put_locking(g);
		goto top;
	}
	m->linger = 0;
	if (m->spinning)
		reset_spinning(m);
	return g;
}

/* Give our P to the M that g is locked to, and wake it. */
static void startlockedm(struct weft__m *m, struct weft__g *g)
{
	struct weft__m *lm = g->lockedm;
	struct weft__p *p = releasep(m);
	lm->nextp = p;
	__atomic_store_n(&lm->park, 1, __ATOMIC_RELEASE);
	weft__futex_wake(&lm->park, 1);
}

/* Our locked G is not running: give the P away and sleep until an M hands
 * us a P because our G is runnable. */
static void stoplockedm(struct weft__m *m)
{
	if (m->p)
		weft__handoffp(releasep(m));
	while (!__atomic_load_n(&m->park, __ATOMIC_ACQUIRE))
		weft__futex_wait(&m->park, 0, NULL);
	__atomic_store_n(&m->park, 0, __ATOMIC_RELAXED);
	acquirep(m, m->nextp);
	m->nextp = NULL;
}

static void m_exit(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	weft__ring_thief_retire(&m->ring_thief);
	if (m->p)
		weft__handoffp(releasep(m));
	weft__signals_exit_thread(m);
	__atomic_sub_fetch(&s->mcount, 1, __ATOMIC_SEQ_CST);
	m->tid = 0;
	m_set(NULL);
	/* The record stays on allm, for newm to reuse: nothing below reads
	 * it, and this thread's own stack is not in it. */
	weft__lock(&s->lock);
	m->link = s->mfree;
	s->mfree = m;
	weft__unlock(&s->lock);
	pthread_exit(NULL);
}

/* The scheduler loop on g0. */
static void m_loop(struct weft__m *m)
{
	for (;;) {
		if (m->exiting)
			m_exit(m);
		struct weft__g *g;
		if (m->handoff_g) {
			g = m->handoff_g;
			m->handoff_g = NULL;
			startlockedm(m, g);
			continue; /* no P now: findrunnable parks */
		}
		if (m->lockedg) {
			stoplockedm(m);
			g = m->lockedg;
		} else {
			g = findrunnable(m);
			if (g->lockedm && g->lockedm != m) {
				startlockedm(m, g);
				continue;
			}
		}
		gogo(m, NULL, g);
		m = weft__m_get();
	}
}

static void *m_main(void *arg)
{
	struct weft__m *m = arg;
	m_set(m);
	m->errno_ptr = weft__errno_addr();
#ifdef WEFT_TSAN
	/* This thread's errno slot is shared by every goroutine that runs here;
	 * the runtime saves and restores it per goroutine at each switch, in
	 * code TSan does not see. Accesses from different goroutines are not
	 * races. */
	AnnotateBenignRaceSized(__FILE__, __LINE__, m->errno_ptr, sizeof(int),
				"errno is switched per goroutine by weft");
#endif
	m->tid = (pid_t)syscall(SYS_gettid);
	weft__signals_init_thread(m);
#ifdef WEFT_TSAN
	m->tsan_g0 = __tsan_get_current_fiber();
	weft__race_release(&m->tsan_g0); /* see san_finish */
#endif
	pthread_attr_t a;
	if (pthread_getattr_np(pthread_self(), &a) == 0) {
		void *lo;
		size_t sz;
		pthread_attr_getstack(&a, &lo, &sz);
		m->g0_lo = lo;
		m->g0_size = sz;
		pthread_attr_destroy(&a);
	}
	acquirep(m, m->nextp);
	m->nextp = NULL;
	m_loop(m);
	return NULL;
}

/* ---------------------------------------------------------------- public: goroutines */

static void init_context(struct weft__g *g)
{
	uintptr_t top = (uintptr_t)g & ~(uintptr_t)15;
	uint64_t *sp = (uint64_t *)top;
#if defined(__x86_64__)
	/* Frame that weft__switch pops (see switch_x86_64.S): control word,
	 * r15..r12, rbx, rbp = 0 (ends backtraces), then weft__gostart as the
	 * return address, leaving rsp 16-byte aligned there. */
	*--sp = (uint64_t)(uintptr_t)weft__gostart;
	for (int i = 0; i < 6; i++)
		*--sp = 0;
	*--sp = 0x1F80 | ((uint64_t)0x037F << 32); /* default MXCSR and x87 CW */
#elif defined(__aarch64__)
	/* Frame that weft__switch pops (see switch_aarch64.S), 22 words:
	 * x19..x28, x29 = 0 (ends backtraces), x30 = weft__gostart, d8..d15,
	 * FPCR = 0 (round to nearest, no traps: the reset value), pad. sp
	 * ends 16-byte aligned at weft__gostart. */
	sp -= 22;
	for (int i = 0; i < 22; i++)
		sp[i] = 0;
	sp[11] = (uint64_t)(uintptr_t)weft__gostart;
#else
#error "weft: no context switch for this architecture"
#endif
	g->sp = sp;
	g->fresh = 1;
}

static inline __attribute__((always_inline)) int go_at(weft_fn fn, void *arg,
							const weft_go_options *opts,
							const char *file, int line, void *xfn,
							void *xarg)
{
	struct weft__sched *s = &weft__sched;
	weft__start();
	size_t size = 0;
	if (opts && opts->stack_size) {
		if (opts->stack_size < WEFT_MIN_STACK || opts->stack_size > WEFT_MAX_STACK)
			return EINVAL;
		size = opts->stack_size;
	}
	if (!fn)
		return EINVAL;
	struct weft__m *m = weft__m_get();
	struct weft__p *p = m && m->curg && !m->in_blocking ? m->p : NULL;
	int err = ENOMEM;
	struct weft__g *g = weft__stack_alloc(p, size, &err);
	if (!g)
		return err;
	if (p) {
		if (p->goid_next == p->goid_end) {
			p->goid_next = __atomic_fetch_add(&s->goid, 16, __ATOMIC_RELAXED) + 1;
			p->goid_end = p->goid_next + 16;
		}
		g->id = p->goid_next++;
	} else {
		g->id = __atomic_add_fetch(&s->goid, 1, __ATOMIC_RELAXED);
	}
	g->fn = fn;
	g->arg = arg;
	g->file = file;
	g->line = line;
	g->named = opts && opts->name;
	if (g->named)
		snprintf(g->name, sizeof g->name, "%s", opts->name);
	if (xfn) {
		g->xfn = xfn;
		g->xarg = xarg;
	}
	init_context(g);
	weft__race_release(g); /* the spawner's past happens before the child */
	if (p) {
		stat_inc(&p->ngo);
		stat_inc(&p->nspawned);
	} else {
		__atomic_add_fetch(&s->ngoroutines, 1, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&g->status, G_RUNNABLE, __ATOMIC_RELEASE);
	if (p && !chaos(4))
		weft__runq_put(p, g, 1);
	else
		globrunq_put_locking(g);
	weft__wakep();
	return 0;
}

int weft_go_at(weft_fn fn, void *arg, const weft_go_options *opts, const char *file, int line)
{
	return go_at(fn, arg, opts, file, line, NULL, NULL);
}

int weft__go_x(weft_fn entry, void *arg, void *xfn, void *xarg, const char *file, int line)
{
	return go_at(entry, arg, NULL, file, line, xfn, xarg);
}

void weft__goexit(void)
{
	struct weft__m *m = weft__m_get();
	struct weft__g *g = m->curg;
	if (m->in_blocking)
		weft__fatal("goroutine exit inside weft_blocking_begin/end (end the call first)");
	/* Every G ends on an M that holds a P. */
	__atomic_store_n(&m->p->ngo, m->p->ngo - 1, __ATOMIC_RELAXED);
	if (g->lockedm) {
		/* A G that ends pinned takes its thread with it (Go's rule): the
		 * thread may have been changed in ways no other G should see. */
		m->lockedg = NULL;
		m->exiting = 1;
		g->lockedm = NULL;
		g->lock_count = 0;
	}
	/* g->wait_reason stays: dumps read it only of a G that is WAITING, and
	 * every park sets it first (reading it here would miss on the record's
	 * second line, which nothing else on this path touches). */
	__atomic_store_n(&g->status, G_DEAD, __ATOMIC_RELEASE);
	m->after = AFTER_FREE;
	m->after_g = g;
	if (m->exiting)
		gogo(m, g, NULL);
	else
		schedule_out(m, g);
	__builtin_unreachable();
}

void weft_yield(void)
{
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg || m->in_blocking) {
		/* In a blocking call the thread is a foreign one's, its P
		 * perhaps handed to another M already: yield the thread. */
		sched_yield();
		return;
	}
	struct weft__g *g = m->curg;
	if (m->lockedg) {
		/* Only this G may run here: let the others run elsewhere. */
		__atomic_store_n(&g->status, G_RUNNABLE, __ATOMIC_RELAXED);
		m->after = AFTER_GLOBAL;
		m->after_g = g;
		gogo(m, g, NULL);
		return;
	}
	struct weft__g *next = pick_fast(m);
	if (!next && !chaos(2))
		return; /* nothing else to run here: carry on */
	__atomic_store_n(&g->status, G_RUNNABLE, __ATOMIC_RELAXED);
	/* Through g0 when next is NULL or GO_G0: it fires the timers, retires
	 * the P (whose queue, with us on it, goes global), or (chaos) moves us. */
	m->after = chaos(2) ? AFTER_GLOBAL : AFTER_READY;
	m->after_g = g;
	switch_out(m, g, next);
}

/* ---------------------------------------------------------------- parking */

int64_t weft__coarse_now;

void weft__park(const char *reason, void (*park_fn)(void *arg, struct weft__g *g), void *park_arg)
{
	weft__park_m(weft__m_get(), reason, park_fn, park_arg);
}

/* Out of the park path's way: the misuse of parking inside a blocking call. */
static __attribute__((noinline, cold, noreturn)) void park_in_blocking(const char *reason)
{
	weft__fatal("%s inside weft_blocking_begin/end (no blocking weft call may come "
		    "between them)",
		    reason);
}

void weft__park_m(struct weft__m *m, const char *reason,
		  void (*park_fn)(void *arg, struct weft__g *g), void *park_arg)
{
	struct weft__g *g = m->curg;
	if (__builtin_expect(m->in_blocking, 0))
		park_in_blocking(reason);
	/* Read by dumps on other threads: atomic. */
	__atomic_store_n(&g->wait_reason, reason, __ATOMIC_RELAXED);
	__atomic_store_n(&g->wait_since, __atomic_load_n(&weft__coarse_now, __ATOMIC_RELAXED),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&g->status, G_WAITING, __ATOMIC_RELEASE);
	stat_inc(&m->p->npark);
	m->after = AFTER_PARK;
	m->after_g = g;
	m->park_fn = park_fn;
	m->park_arg = park_arg;
	schedule_out(m, g);
}

void weft__ready(struct weft__g *g)
{
	weft__ready_m(weft__m_get(), g);
}

void weft__ready_m(struct weft__m *m, struct weft__g *g)
{
	struct weft__sched *s = &weft__sched;
	__atomic_store_n(&g->status, G_RUNNABLE, __ATOMIC_RELEASE);
	if (m && m->p && !m->in_blocking && !chaos(2))
		weft__runq_put(m->p, g, 1);
	else
		globrunq_put_locking(g);
	if (__atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) != 0)
		weft__wakep();
}

void weft__ready_batch(struct weft__m *m, struct weft__g **v, int n)
{
	struct weft__sched *s = &weft__sched;
	if (n < 4) {
		for (int i = 0; i < n; i++)
			weft__ready_m(m, v[i]);
		return;
	}
	for (int i = 0; i < n; i++)
		__atomic_store_n(&v[i]->status, G_RUNNABLE, __ATOMIC_RELEASE);
	weft__lock(&s->lock);
	weft__globrunq_putbatch(v, n);
	weft__unlock(&s->lock);
	if (__atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) != 0)
		weft__wakep();
}

void weft__inject(struct weft__m *m, struct weft__g **v, int n)
{
	struct weft__sched *s = &weft__sched;
	if (!(m && m->p && !m->in_blocking) || chaos(2)) {
		weft__ready_batch(m, v, n);
		return;
	}
	for (int i = 0; i < n; i++) {
		__atomic_store_n(&v[i]->status, G_RUNNABLE, __ATOMIC_RELEASE);
		weft__runq_put(m->p, v[i], 0);
	}
	if (__atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) != 0)
		weft__wakep();
}

/* ---------------------------------------------------------------- sleep */

int weft__timer_try_add_here(struct weft__timer *t, int64_t when)
{
	struct weft__m *m = weft__m_get();
	/* A P in a blocking call may be retaken (and retired) at any moment;
	 * P 0 is never retired. */
	int own = m && m->p && !__atomic_load_n(&m->in_blocking, __ATOMIC_RELAXED);
	if (!own)
		weft__start(); /* P 0's heap (a foreign thread's first weft call) */
	struct weft__timers *h = own ? &m->p->timers : &weft__sched.allp[0]->timers;
	int err = weft__timer_add(h, t, when);
	if (err)
		return err;
	/* An idle M may be asleep until a later deadline (or with none): wake
	 * one to re-read the heaps (Go's wakeNetPoller). On P 0 from outside
	 * always; on our own P when a P is idle to fire it, since our next
	 * switch may be far off (a goroutine that computes until its context's
	 * deadline never makes one), and stopm sees it only if this M idles. */
	if (when < __atomic_load_n(&weft__sched.timer_wait_until, __ATOMIC_SEQ_CST) &&
	    (!own || __atomic_load_n(&weft__sched.npidle, __ATOMIC_SEQ_CST) != 0))
		wake_timer_m();
	return 0;
}

void weft__timer_add_here(struct weft__timer *t, int64_t when)
{
	if (weft__timer_try_add_here(t, when))
		weft__fatal("out of memory adding a timer");
}

static void sleep_fire(struct weft__timer *t)
{
	weft__warm_stack(t->arg);
	weft__ready(t->arg);
}

static void sleep_arm(void *arg, struct weft__g *g)
{
	(void)arg;
	weft__timer_add_here(&g->timer, g->timer.when);
}

/* Sleep until deadline_ns, now being the clock read just before (so one
 * read serves both weft_sleep's sum and the check). */
static void sleep_until_at(int64_t deadline_ns, int64_t now)
{
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg) {
		struct timespec ts = { deadline_ns / 1000000000, deadline_ns % 1000000000 };
		if (deadline_ns <= 0)
			return;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		return;
	}
	if (deadline_ns <= now) {
		weft_yield();
		return;
	}
	/* "Never" is a timer still, short of INT64_MAX, which the heaps take
	 * for "no timer": a sleep until then is no deadlock (weft_sleep's
	 * sum saturates there too). */
	if (deadline_ns > WEFT__TIMER_FAR)
		deadline_ns = WEFT__TIMER_FAR;
	struct weft__g *g = m->curg;
	g->timer.fn = sleep_fire;
	g->timer.arg = g;
	g->timer.deletable = 0; /* a sleep is never cut short: no index upkeep */
	g->timer.when = deadline_ns;
	weft__park("sleep", sleep_arm, NULL);
}

void weft_sleep_until(int64_t deadline_ns)
{
	sleep_until_at(deadline_ns, weft_now());
}

void weft_sleep(int64_t duration_ns)
{
	if (duration_ns <= 0) {
		weft_yield();
		return;
	}
	int64_t now = weft_now();
	sleep_until_at(weft__timer_when(now, duration_ns), now);
}

/* ---------------------------------------------------------------- blocking calls */

/*
 * The bound on threads in blocking calls: a goroutine takes a slot in
 * weft_blocking_begin, waiting (parked, FIFO) while all are taken, and gives
 * it back in weft_blocking_end. Every M is running a P, idle, in a call, or
 * on its way to the idle list (nmtransit), and an M is only created when none
 * is idle or on its way (startm), so the process never has more than procs +
 * max_blocking Ms (plus pinned ones).
 */
static int blk_limit = WEFT_DEFAULT_MAX_BLOCKING; /* atomic */
static int blk_inuse;                           /* atomic */
static struct weft__waitq blk_q;

static int blk_try(void)
{
	int v = __atomic_load_n(&blk_inuse, __ATOMIC_SEQ_CST);
	while (v < __atomic_load_n(&blk_limit, __ATOMIC_RELAXED))
		if (__atomic_compare_exchange_n(&blk_inuse, &v, v + 1, 0, __ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return 1;
	return 0;
}

static void blk_acquire(void)
{
	if (blk_try())
		return;
	struct weft__waiter w;
	weft__waiter_init(&w);
	weft__waitq_lock(&blk_q);
	weft__waitq_push(&blk_q, &w, 0);
	/* Enqueued, then look again: a release that came in between saw no
	 * waiter (blk_release: decrement, then look). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (blk_try()) {
		weft__waitq_unlink(&blk_q, &w);
		weft__waitq_unlock(&blk_q);
		return;
	}
	weft__waitq_block(&blk_q, &w, "blocking call slot");
	/* The releaser took the slot for us. */
}

/* Hand free slots to waiters (after a release or a raised limit). */
static void blk_pass(void)
{
	if (!__atomic_load_n(&blk_q.len_, __ATOMIC_SEQ_CST))
		return;
	for (;;) {
		weft__waitq_lock(&blk_q);
		if (!blk_q.len_ || !blk_try()) {
			weft__waitq_unlock(&blk_q);
			return;
		}
		struct weft__waiter *w = weft__waitq_take(&blk_q, NULL);
		weft__waitq_unlock(&blk_q);
		weft__waiter_wake(w);
	}
}

static void blk_release(void)
{
	__atomic_sub_fetch(&blk_inuse, 1, __ATOMIC_SEQ_CST);
	blk_pass();
}

/*
 * m, with no P and in transit to stopm, while spawns outrun the stack caches
 * (stack.c): carve stacks for them first. Out of the transit count, so that
 * work readied meanwhile gets the idle P and another M instead of waiting
 * for this one; a P already wanted from it is taken instead (returns with
 * m->p set). Goes on to stopm when the credit is spent or a timer is near.
 */
static void precarve_unowned(struct weft__m *m)
{
	struct weft__sched *s = &weft__sched;
	/* Carving is system calls made for the runtime: like a goroutine's
	 * blocking call it holds a slot, so that the Ms started meanwhile
	 * stay within weft_procs() + weft_max_blocking() (runtime.h). None
	 * free: no carving. */
	if (!blk_try())
		return;
	weft__lock(&s->lock);
	int got = transit_end_locked(m);
	struct weft__p *orphans = wanted_orphans_locked();
	weft__unlock(&s->lock);
	start_wanted(orphans);
	if (got) {
		blk_release();
		struct weft__p *p = m->nextp;
		m->nextp = NULL;
		acquirep(m, p);
		return;
	}
	/* A batch takes some 200 us (more under a sanitizer), and an M that
	 * is not asleep in stopm sleeps for no timer: carve only while none is
	 * due within a millisecond, and give the slot back as soon as a
	 * goroutine waits for one. */
	while (weft__stack_precarve_wanted() &&
	       !__atomic_load_n(&blk_q.len_, __ATOMIC_SEQ_CST) &&
	       weft__timers_earliest() > weft_now() + WEFT_MILLISECOND)
		weft__stack_precarve();
	blk_release();
}

int weft_max_blocking(void)
{
	weft__start(); /* WEFT_MAX_BLOCKING is read at start */
	return __atomic_load_n(&blk_limit, __ATOMIC_RELAXED);
}

int weft_set_max_blocking(int n, int *old)
{
	if (n < 1 || n > WEFT_MAX_MAX_BLOCKING)
		return EINVAL;
	weft__start(); /* so the environment cannot override n later */
	int o = __atomic_exchange_n(&blk_limit, n, __ATOMIC_SEQ_CST);
	if (old)
		*old = o;
	if (n > o)
		blk_pass();
	return 0;
}

static void blk_init(void)
{
	const char *e = getenv("WEFT_MAX_BLOCKING");
	if (!e || !*e)
		return;
	char *end;
	long n = strtol(e, &end, 10);
	if (*end || n < 1 || n > WEFT_MAX_MAX_BLOCKING)
		weft__fatal("WEFT_MAX_BLOCKING=%s: want a number from 1 to %d", e,
			    WEFT_MAX_MAX_BLOCKING);
	blk_limit = (int)n;
}

void weft_blocking_begin(void)
{
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg)
		return;
	if (m->in_blocking)
		weft__fatal("weft_blocking_begin: already inside a blocking call (they do not nest)");
	blk_acquire();
	m = weft__m_get(); /* it may have parked and moved */
	struct weft__p *p = m->p;
	/* Our caller's frame, for dumps and the stuck-call report (the build
	 * keeps frame pointers: ours holds the caller's). */
	__atomic_store_n(&m->curg->sys_fp, *(uintptr_t *)__builtin_frame_address(0),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&m->curg->sys_pc, __builtin_return_address(0), __ATOMIC_RELAXED);
	__atomic_store_n(&m->blocking_since, weft_now(), __ATOMIC_RELAXED);
	m->in_blocking = 1;
	__atomic_add_fetch(&weft__sched.nblocking, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&m->curg->status, G_SYSCALL, __ATOMIC_RELEASE);
	__atomic_store_n(&p->syscalltick, p->syscalltick + 1, __ATOMIC_RELAXED);
	/* From here sysmon may CAS the P away (release pairs with its acquire). */
	__atomic_store_n(&p->status, P_SYSCALL, __ATOMIC_RELEASE);
	/* Goroutines queued behind the call wait for sysmon to retake the P:
	 * two of its ticks, up to 10 ms each after a quiet spell; so does a
	 * timer of the P due within them when no P is idle (no timer M
	 * watches it then: below). Wake sysmon to tick fast (at most one wake
	 * per backed-off spell: it stays at 20 us for a millisecond after). */
	int64_t next_timer = weft__timers_peek(&p->timers);
	uint32_t tick_us = __atomic_load_n(&weft__sysmon_tick_us, __ATOMIC_RELAXED);
	if (tick_us > 20 && (weft__runq_len(p) ||
			     next_timer < weft_now() + 3 * (int64_t)tick_us * 1000))
		weft__sysmon_kick();
	/* Our P's timers were left for our next switch, which the call now
	 * delays: an idle M sleeping past them (or untimed) would leave them
	 * to sysmon's retake, up to two of its (backed-off, 10 ms) ticks
	 * late. Have the timer M watch them, as handoffp does. */
	if (__atomic_load_n(&weft__sched.npidle, __ATOMIC_SEQ_CST) != 0 &&
	    next_timer < __atomic_load_n(&weft__sched.timer_wait_until, __ATOMIC_SEQ_CST))
		wake_timer_m();
}

void weft_blocking_end(void)
{
	struct weft__sched *s = &weft__sched;
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg)
		return;
	if (!m->in_blocking)
		weft__fatal("weft_blocking_end without weft_blocking_begin");
	struct weft__g *g = m->curg;
	struct weft__p *p = m->p;
	uint32_t st = P_SYSCALL;
	int kept = __atomic_compare_exchange_n(&p->status, &st, P_RUNNING, 0, __ATOMIC_ACQ_REL,
					       __ATOMIC_ACQUIRE);
	m->in_blocking = 0;
	m->blocking_reported = 0;
	__atomic_store_n(&g->status, G_RUNNING, __ATOMIC_RELAXED);
	if (kept) {
		/* sysmon may have given the P to another M meanwhile, whose own
		 * blocking call then put it back in P_SYSCALL, which our CAS
		 * cannot tell apart: it is ours again, in every record (sysmon's
		 * hog check and report read p->m). */
		__atomic_store_n(&p->m, m, __ATOMIC_RELEASE);
		__atomic_sub_fetch(&s->nblocking, 1, __ATOMIC_SEQ_CST);
		blk_release();
		return;
	}
	/* Still counted as blocking until g holds a P or is queued: with every
	 * P idle and nothing queued meanwhile, deadlock detection would take
	 * this thread (say, preempted here) for one asleep. */
	/* sysmon gave our P away: take an idle one, or queue ourselves. */
	m->p = NULL;
	weft__lock(&s->lock);
	struct weft__p *q = pidleget();
	if (!q && !m->lockedg && !m->exiting) {
		/* On the way to stopm (through g0 and findrunnable): a P that
		 * startm would start a new M for can wait for this one. */
		transit_begin_locked(m);
	}
	weft__unlock(&s->lock);
	if (q) {
		acquirep(m, q);
		__atomic_sub_fetch(&s->nblocking, 1, __ATOMIC_SEQ_CST);
		blk_release();
		return;
	}
	__atomic_store_n(&g->status, G_RUNNABLE, __ATOMIC_RELAXED);
	m->after = AFTER_UNBLOCK; /* queues g, then uncounts the call */
	m->after_g = g;
	gogo(m, g, NULL);
	blk_release();
}

/* ---------------------------------------------------------------- locked threads */

void weft_lock_thread(void)
{
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg)
		return;
	struct weft__g *g = m->curg;
	if (g->lock_count++ == 0) {
		g->lockedm = m;
		m->lockedg = g;
	}
}

void weft_unlock_thread(void)
{
	struct weft__m *m = weft__m_get();
	if (!m || !m->curg)
		return;
	struct weft__g *g = m->curg;
	if (g->lock_count == 0)
		weft__fatal("weft_unlock_thread: goroutine %llu is not locked to its thread",
			    (unsigned long long)g->id);
	if (--g->lock_count == 0) {
		g->lockedm = NULL;
		m->lockedg = NULL;
	}
}

/* ---------------------------------------------------------------- public: misc */

struct main_call {
	int (*fn)(void *);
	void *arg;
	int ret;
	weft_wg wg;
};

static void main_trampoline(void *arg)
{
	struct main_call *c = arg;
	c->ret = c->fn(c->arg);
	weft_wg_done(&c->wg);
}

int weft_main(int (*main_fn)(void *arg), void *arg)
{
	if (!main_fn)
		weft__fatal("weft_main: NULL main_fn");
	struct main_call c = { .fn = main_fn, .arg = arg };
	weft_go_options o = { .name = "main" };
	weft_wg_add(&c.wg, 1);
	int e = weft_go_opts(main_trampoline, &c, &o);
	if (e) {
		fprintf(stderr, "weft_main: cannot start the main goroutine: %s\n", strerror(e));
		return 1;
	}
	weft_wg_wait(&c.wg);
	return c.ret;
}

int weft_procs(void)
{
	weft__start();
	return __atomic_load_n(&weft__sched.nprocs, __ATOMIC_ACQUIRE);
}

int weft_set_procs(int n, int *old)
{
	weft__start();
	if (n < 1 || n > WEFT_MAX_PROCS)
		return EINVAL;
	weft__lock(&weft__sched.lock);
	if (old)
		*old = weft__sched.nprocs;
	resize_locked(n);
	weft__unlock(&weft__sched.lock);
	weft__wakep();
	/* A caller whose own P just went away moves to one that remains now,
	 * as in Go, rather than at its next switch. */
	struct weft__m *m = weft__m_get();
	if (m && m->curg && !m->in_blocking && m->p && m->p->id >= n)
		weft_yield();
	return 0;
}

int64_t weft_num_goroutines(void)
{
	return weft__count_goroutines();
}

/* Sum one owner-written per-P counter over every P ever created, plus the
 * global count of goroutines started without a P. */
static int64_t sum_ps(size_t offset)
{
	struct weft__sched *s = &weft__sched;
	int64_t n = __atomic_load_n(&s->ngoroutines, __ATOMIC_SEQ_CST);
	int np = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
	for (int i = 0; i < np; i++)
		n += __atomic_load_n((int64_t *)((char *)s->allp[i] + offset), __ATOMIC_SEQ_CST);
	return n;
}

int weft__grace_start(uint32_t *ticks)
{
	struct weft__sched *s = &weft__sched;
	/* The retired memory is unpublished: make every running reader's
	 * schedtick store visible before reading them (see weft__reader_enter). */
	if (weft__membarrier_ok)
		weft__membarrier();
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	int np = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
	for (int i = 0; i < np; i++)
		ticks[i] = __atomic_load_n(&s->allp[i]->schedtick, __ATOMIC_ACQUIRE);
	/* The caller's own P is quiescent already: the goroutine running on
	 * it is the writer, in no read section. Count its tick as passed (any
	 * value but the current one), so a writer that never switches still
	 * gets its memory back. */
	struct weft__m *m = weft__m_get();
	if (weft__reader_enter(m) && m->p->id < np)
		ticks[m->p->id]--;
	return np;
}

int weft__grace_done(const uint32_t *ticks, int n)
{
	struct weft__sched *s = &weft__sched;
	for (int i = 0; i < n; i++) {
		struct weft__p *p = s->allp[i];
		if (__atomic_load_n(&p->schedtick, __ATOMIC_ACQUIRE) == ticks[i] &&
		    __atomic_load_n(&p->status, __ATOMIC_ACQUIRE) == P_RUNNING)
			return 0;
	}
	return 1;
}

int64_t weft__count_goroutines(void)
{
	return sum_ps(offsetof(struct weft__p, ngo));
}

int64_t weft__count_spawned(void)
{
	return sum_ps(offsetof(struct weft__p, nspawned));
}

uint64_t weft_self_id(void)
{
	struct weft__g *g = weft__g_get();
	return g ? g->id : 0;
}

int weft_self_proc(void)
{
	struct weft__m *m = weft__m_get();
	return m && m->curg && m->p ? m->p->id : -1;
}

void weft__sched_note_foreign_block(int delta)
{
	__atomic_add_fetch(&weft__sched.nforeign_blocked, delta, __ATOMIC_SEQ_CST);
}

int64_t weft__live_chans, weft__live_ctxs;

void weft_stats_get(weft_stats *out)
{
	struct weft__sched *s = &weft__sched;
	weft__start();
	memset(out, 0, sizeof *out);
	out->goroutines = weft_num_goroutines();
	out->spawned = weft__count_spawned();
	out->threads = __atomic_load_n(&s->mcount, __ATOMIC_RELAXED);
	out->procs = __atomic_load_n(&s->nprocs, __ATOMIC_RELAXED);
	out->idle_procs = __atomic_load_n(&s->npidle, __ATOMIC_RELAXED);
	out->handoffs = __atomic_load_n(&s->nhandoff, __ATOMIC_RELAXED);
	out->global_runq = __atomic_load_n(&s->runqsize, __ATOMIC_RELAXED);
	out->channels = __atomic_load_n(&weft__live_chans, __ATOMIC_RELAXED);
	out->contexts = __atomic_load_n(&weft__live_ctxs, __ATOMIC_RELAXED);
	weft__lock(&s->lock);
	int n = s->nallp;
	weft__unlock(&s->lock);
	for (int i = 0; i < n; i++) {
		struct weft__p *p = s->allp[i];
		out->switches += __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
		out->steals += __atomic_load_n(&p->nsteal, __ATOMIC_RELAXED);
		out->parks += __atomic_load_n(&p->npark, __ATOMIC_RELAXED);
		if (__atomic_load_n(&p->status, __ATOMIC_ACQUIRE) != P_DEAD)
			out->local_runq += weft__runq_len(p);
	}
}
