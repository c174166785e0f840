/* SPDX-License-Identifier: MIT */
/*
 * sysmon.c - the system monitor: a thread without a P that wakes every 20 us
 * to 10 ms (backing off while there is nothing to do, as Go's sysmon does).
 *
 * Each tick it:
 *  - retakes the P of an M blocked in a weft_blocking_begin/end call that
 *    has lasted a whole tick (>= 20 us) and hands it to another M (a call
 *    that starts, while the tick has backed off, with goroutines queued on
 *    its P or a timer of its P due soon wakes sysmon to tick fast:
 *    weft__sysmon_kick);
 *  - notices a P that has run the same G for over 10 ms: it cannot preempt C
 *    code, so it moves that P's queued goroutines to the global queue and
 *    fires its overdue timers, so the others run elsewhere and sleepers wake
 *    on time; with WEFT_DEBUG=hogs it reports the hog with a backtrace;
 *  - reports blocking calls stuck for over 1 s (WEFT_DEBUG=hogs);
 *  - makes sure no overdue timer waits on an idle P;
 *  - polls the network when nobody has for 10 ms (every P busy);
 *  - detects deadlock: every P idle, nothing queued, no timer, no blocking
 *    call, and every thread of the process either a weft M or a foreign
 *    thread parked inside weft, twice in a row with no scheduling between;
 *  - gives back the memory of idle cached stacks (about once a second);
 *  - prints WEFT_DEBUG=schedtrace lines, and serves SIGQUIT dumps.
 */
#include "sched.h"
#include "netpoll.h"

#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fatal.h"
#include "sanitizer.h"

#define RETAKE_NS 20000
#define HOG_NS 10000000
#define STUCK_NS 1000000000

static int san_extra_threads;

/* Read a /proc file into buf (at most n - 1 bytes, NUL-terminated);
 * returns 0 or -1. */
static int read_proc(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t len = fread(buf, 1, n - 1, f);
	fclose(f);
	buf[len] = 0;
	return 0;
}

/* Threads in this process, from /proc/self/stat (field 20), or from the
 * Threads: line of /proc/self/status where stat says 0: an emulator such as
 * qemu-user fakes stat, leaving most fields 0, and passes status through
 * (counting its own threads, which WEFT_DEBUG=hostthreads=N accounts for). */
static int count_threads(void)
{
	char buf[2048];
	if (read_proc("/proc/self/stat", buf, sizeof buf))
		return -1;
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* After ")": field 3 (state) ... field 20 (num_threads). */
	int field = 2;
	for (p++; *p && field < 20; p++)
		if (*p == ' ')
			field++;
	int n = atoi(p);
	if (n > 0)
		return n;
	if (read_proc("/proc/self/status", buf, sizeof buf))
		return -1;
	p = strstr(buf, "\nThreads:");
	return p ? atoi(p + 9) : -1;
}

static int all_idle(void)
{
	struct weft__sched *s = &weft__sched;
	return __atomic_load_n(&s->npidle, __ATOMIC_SEQ_CST) ==
		       __atomic_load_n(&s->nprocs, __ATOMIC_SEQ_CST) &&
	       __atomic_load_n(&s->nmspinning, __ATOMIC_SEQ_CST) == 0 &&
	       __atomic_load_n(&s->nblocking, __ATOMIC_SEQ_CST) == 0 &&
	       __atomic_load_n(&s->runqsize, __ATOMIC_SEQ_CST) == 0;
}

static uint64_t activity(void)
{
	struct weft__sched *s = &weft__sched;
	uint64_t a = (uint64_t)weft__count_spawned();
	for (int i = 0; i < __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE); i++)
		a += __atomic_load_n(&s->allp[i]->schedtick, __ATOMIC_SEQ_CST);
	return a;
}

static int deadlocked_now(void)
{
	struct weft__sched *s = &weft__sched;
	if (!all_idle())
		return 0;
	/* A goroutine waiting on a descriptor (or a signal: weft_signal_notify
	 * waits on one) may be woken from outside. */
	if (weft__netpoll_wanted())
		return 0;
	if (weft__timers_earliest() != INT64_MAX)
		return 0;
	int foreign = __atomic_load_n(&s->nforeign_blocked, __ATOMIC_SEQ_CST);
	if (weft__count_goroutines() == 0 && foreign == 0)
		return 0;
	for (int i = 0; i < __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE); i++) {
		uint32_t st = __atomic_load_n(&s->allp[i]->status, __ATOMIC_ACQUIRE);
		/* A P beyond a lowered weft_set_procs() count runs on until its
		 * goroutine reaches the scheduler: npidle == nprocs misses it. */
		if (st == P_RUNNING || st == P_SYSCALL)
			return 0;
		if (st != P_DEAD && !weft__runq_empty(s->allp[i]))
			return 0;
	}
	/* An M carving stacks ahead holds a blocking-call slot, without a P:
	 * a goroutine may be waiting for that slot, and gets it after the
	 * batch (a slow host: milliseconds). */
	int64_t carved, ahead;
	if (weft__stack_counts(&carved, &ahead))
		return 0;
	int threads = count_threads();
	int ours = __atomic_load_n(&s->mcount, __ATOMIC_SEQ_CST) + 1 /* sysmon */ + foreign +
		   san_extra_threads + s->host_threads;
	return threads == ours;
}

/* Deadlock needs two consecutive checks, 10 ms apart, with no scheduling
 * activity in between: a state seen once may be a moment of transition. */
static int check_deadlock(void)
{
	static int seen;
	static uint64_t seen_activity;
	if (!deadlocked_now()) {
		seen = 0;
		return 0;
	}
	uint64_t a = activity();
	if (!seen || a != seen_activity) {
		seen = 1;
		seen_activity = a;
		return 0;
	}
	return 1;
}

/* What a report says of a goroutine. */
struct g_info {
	unsigned long long id;
	const char *file; /* a literal */
	int line;
	char name[sizeof(((struct weft__g *)0)->name)];
};

/* Copy g's identity into *gi. sched.allg_lock held: a custom stack's end
 * takes it before unmapping the record (a goroutine may end while we look). */
static void g_info_copy(struct weft__g *g, struct g_info *gi)
{
	gi->id = (unsigned long long)g->id;
	gi->file = g->file ? g->file : "?";
	gi->line = g->line;
	for (size_t i = 0; i < sizeof gi->name; i++)
		gi->name[i] = g->named ? g->name[i] : 0;
	gi->name[sizeof gi->name - 1] = 0;
}

/* g_info_copy of m's goroutine; 0 if m runs none. */
static int curg_info(struct weft__m *m, struct g_info *gi)
{
	weft__lock(&weft__sched.allg_lock);
	struct weft__g *g = __atomic_load_n(&m->curg, __ATOMIC_ACQUIRE);
	if (g)
		g_info_copy(g, gi);
	weft__unlock(&weft__sched.allg_lock);
	return g != NULL;
}

static void retake(int64_t now, int *retaken)
{
	struct weft__sched *s = &weft__sched;
	/* Every P, a removed one too: it stays its M's until its goroutine
	 * reaches the scheduler, which a hog or a blocking call delays. */
	int nprocs = __atomic_load_n(&s->nprocs, __ATOMIC_ACQUIRE);
	int n = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct weft__p *p = s->allp[i];
		int removed = i >= nprocs;
		uint32_t st = __atomic_load_n(&p->status, __ATOMIC_ACQUIRE);
		if (st == P_SYSCALL) {
			uint32_t t = __atomic_load_n(&p->syscalltick, __ATOMIC_RELAXED);
			if (t != p->sm_syscalltick) {
				p->sm_syscalltick = t;
				p->sm_when = now;
				continue;
			}
			if (now - p->sm_when < RETAKE_NS)
				continue;
			/* Not worth a thread when there is nothing to do and
			 * others are free, unless the call is long. */
			if (weft__runq_empty(p) &&
			    weft__timers_peek(&p->timers) == INT64_MAX &&
			    __atomic_load_n(&s->nmspinning, __ATOMIC_RELAXED) +
					    __atomic_load_n(&s->npidle, __ATOMIC_RELAXED) > 0 &&
			    now - p->sm_when < HOG_NS)
				continue;
			uint32_t expect = P_SYSCALL;
			if (__atomic_compare_exchange_n(&p->status, &expect, P_IDLE, 0,
							__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
				__atomic_add_fetch(&s->nhandoff, 1, __ATOMIC_RELAXED);
				(*retaken)++;
				weft__handoffp(p);
			}
			continue;
		}
		if (st != P_RUNNING) {
			p->sm_hog_reported = 0;
			continue;
		}
		uint32_t t = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
		if (t != p->sm_schedtick) {
			p->sm_schedtick = t;
			p->sm_when = now;
			p->sm_hog_reported = 0;
			continue;
		}
		/* A removed P's queue and timers belong to the Ps that remain
		 * now: move them without waiting for a hog. */
		if (now - p->sm_when < (removed ? RETAKE_NS : HOG_NS))
			continue;
		/* A hog: nothing else can run on this P until it switches. */
		struct weft__m *m = __atomic_load_n(&p->m, __ATOMIC_ACQUIRE);
		if (!m || !__atomic_load_n(&m->curg, __ATOMIC_ACQUIRE))
			continue;
		if (weft__runq_drain(p) > 0) {
			weft__wakep();
			(*retaken)++;
		}
		if (weft__timers_peek(&p->timers) <= now)
			weft__timers_run(&p->timers, now, INT_MAX);
		if (removed && weft__timers_peek(&p->timers) != INT64_MAX)
			(*retaken)++; /* tick fast while its timers wait here */
		if (now - p->sm_when < HOG_NS)
			continue;
		if (s->hogs && !p->sm_hog_reported) {
			p->sm_hog_reported = 1;
			struct g_info gi;
			if (curg_info(m, &gi)) {
				fprintf(stderr, "weft: goroutine %llu%s%s%s (created at %s:%d) has run "
					"for %lld ms without a switch on P %d\n", gi.id,
					gi.name[0] ? " \"" : "", gi.name, gi.name[0] ? "\"" : "",
					gi.file, gi.line, (long long)((now - p->sm_when) / 1000000),
					p->id);
				weft__hog_backtrace(m->tid);
			}
		}
	}
}

/*
 * Report the blocking calls stuck for STUCK_NS, once each, with the frames
 * from the call's site up. No signal to their threads: it would interrupt
 * the call itself (nanosleep, poll and epoll_wait return EINTR, restart or
 * not), and a debug mode must not change what the program does.
 */
static void report_stuck(int64_t now)
{
	struct weft__sched *s = &weft__sched;
	enum { MAX_STUCK = 16, STUCK_FRAMES = 32 };
	struct stuck {
		struct g_info gi;
		int tid, nframes;
		int64_t since;
		void *frames[STUCK_FRAMES];
	} found[MAX_STUCK];
	int n = 0;
	/* Under the lock, as newm clears a reused record under it, and under
	 * allg_lock, as a goroutine that ends meanwhile may unmap its record
	 * (debug mode only: the walk is short); printed after both. */
	weft__lock(&s->lock);
	weft__lock(&s->allg_lock);
	for (struct weft__m *m = s->allm; m && n < MAX_STUCK; m = m->alllink) {
		if (!__atomic_load_n(&m->in_blocking, __ATOMIC_ACQUIRE) || m->blocking_reported)
			continue;
		int64_t since = __atomic_load_n(&m->blocking_since, __ATOMIC_RELAXED);
		if (now - since < STUCK_NS)
			continue;
		struct weft__g *g = __atomic_load_n(&m->curg, __ATOMIC_ACQUIRE);
		if (!g)
			continue;
		m->blocking_reported = 1;
		struct stuck *f = &found[n++];
		g_info_copy(g, &f->gi);
		f->tid = (int)m->tid;
		f->since = since;
		f->nframes = weft__syscall_frames(g, f->frames, STUCK_FRAMES);
	}
	weft__unlock(&s->allg_lock);
	weft__unlock(&s->lock);
	for (int i = 0; i < n; i++) {
		struct stuck *f = &found[i];
		fprintf(stderr, "weft: goroutine %llu%s%s%s (created at %s:%d) has been in a "
			"blocking call for %lld ms on thread %d\n", f->gi.id,
			f->gi.name[0] ? " \"" : "", f->gi.name, f->gi.name[0] ? "\"" : "",
			f->gi.file, f->gi.line, (long long)((now - f->since) / 1000000), f->tid);
		fflush(stderr);
		backtrace_symbols_fd(f->frames, f->nframes, STDERR_FILENO);
	}
}

/* Overdue timers on a P that nobody is running (idle, or its M is away):
 * get a spinning M to fire them. */
static void timers_safety(int64_t now)
{
	struct weft__sched *s = &weft__sched;
	int n = __atomic_load_n(&s->nallp, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct weft__p *p = s->allp[i];
		if (weft__timers_peek(&p->timers) <= now - 1000000 &&
		    __atomic_load_n(&p->status, __ATOMIC_ACQUIRE) == P_IDLE) {
			weft__wakep();
			return;
		}
	}
}

static void schedtrace(int64_t now, int64_t start)
{
	struct weft__sched *s = &weft__sched;
	char line[2048];
	int k = snprintf(line, sizeof line,
			 "SCHED %lldms: procs=%d idleprocs=%d threads=%d spinningthreads=%d "
			 "blocking=%d goroutines=%lld runqueue=%lld [",
			 (long long)((now - start) / 1000000), s->nprocs, s->npidle, s->mcount,
			 s->nmspinning, s->nblocking, (long long)weft__count_goroutines(),
			 (long long)s->runqsize);
	for (int i = 0; i < s->nprocs && k < (int)sizeof line - 32; i++)
		k += snprintf(line + k, sizeof line - (size_t)k, "%s%u", i ? " " : "",
			      weft__runq_len(s->allp[i]));
	snprintf(line + k, sizeof line - (size_t)k, "]\n");
	fputs(line, stderr);
}

uint32_t weft__sysmon_tick_us = 20; /* atomic */
static uint32_t kicked;              /* atomic: a futex word sysmon sleeps on */

void weft__sysmon_kick(void)
{
	if (!__atomic_exchange_n(&kicked, 1, __ATOMIC_SEQ_CST))
		weft__futex_wake(&kicked, 1);
}

static void *sysmon_main(void *arg)
{
	(void)arg;
	struct weft__sched *s = &weft__sched;
	int64_t start = weft_now(), last_trim = start, last_trace = start;
	int64_t delay_us = 20;
	int idle_ticks = 0;
	for (;;) {
		__atomic_store_n(&weft__sysmon_tick_us, (uint32_t)delay_us, __ATOMIC_RELAXED);
		struct timespec ts = { 0, delay_us * 1000 };
		weft__futex_wait(&kicked, 0, &ts);
		/* Kicked by a blocking call with goroutines or a timer due
		 * behind it: tick fast again, so its P is retaken within
		 * ~20 us. */
		if (__atomic_exchange_n(&kicked, 0, __ATOMIC_SEQ_CST)) {
			delay_us = 20;
			idle_ticks = 0;
		}
		int64_t now = weft_now();
		__atomic_store_n(&weft__coarse_now, now, __ATOMIC_RELAXED);
		if (weft__dump_requested) {
			fprintf(stderr, "SIGQUIT: quit\n\n");
			weft__dump_fd(stderr);
			fflush(stderr);
			_exit(2);
		}
		int retaken = 0;
		retake(now, &retaken);
		/* Back off while nothing needs retaking: 20 us for the first
		 * millisecond, then doubling up to 10 ms. */
		if (retaken)
			idle_ticks = 0;
		else
			idle_ticks++;
		if (idle_ticks == 0)
			delay_us = 20;
		else if (idle_ticks > 50)
			delay_us = delay_us * 2 > 10000 ? 10000 : delay_us * 2;
		timers_safety(now);
		if (weft__netpoll_wanted() && !__atomic_load_n(&weft__netpoll_owner, __ATOMIC_RELAXED) &&
		    now - __atomic_load_n(&weft__netpoll_last, __ATOMIC_RELAXED) > 10000000)
			weft__netpoll_now(NULL);
		if (s->hogs)
			report_stuck(now);
		if (check_deadlock()) {
			weft__fatal_exit(2, "all goroutines are asleep - deadlock!");
		}
		if (now - last_trim > 1000000000) {
			last_trim = now;
			weft__stack_trim_epoch();
			weft__lock(&weft__sched.lock);
			for (struct weft__p *p = weft__sched.pidle; p; p = p->link)
				weft__stack_spill_unused(p);
			weft__unlock(&weft__sched.lock);
			weft__stack_trim();
		}
		if (s->schedtrace_ms > 0 && now - last_trace >= (int64_t)s->schedtrace_ms * 1000000) {
			last_trace = now;
			schedtrace(now, start);
		}
	}
	return NULL;
}

void weft__sysmon_start(void)
{
#ifdef WEFT_TSAN
	/* ThreadSanitizer runs one background thread of its own, started by
	 * the first pthread_create (at the latest, ours just below). It cannot
	 * be told from a user's thread by name, so it is counted here. */
	san_extra_threads = 1;
#endif
	weft__coarse_now = weft_now();
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&t, &a, sysmon_main, NULL);
	pthread_attr_destroy(&a);
	if (e)
		weft__fatal_errno("pthread_create for sysmon", e);
}
