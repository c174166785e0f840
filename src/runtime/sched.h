/* SPDX-License-Identifier: MIT */
/*
 * sched.h - the runtime's internal types: G (goroutine), M (OS thread), P
 * (processor: the right to run goroutines), the global scheduler state, and
 * the calls the other runtime files and the upper layers (sync, chan, ...)
 * use to park and ready goroutines. See the design comment in sched.c.
 */
#ifndef WEFT_RUNTIME_SCHED_H
#define WEFT_RUNTIME_SCHED_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "weft.h"
#include "lock.h"
#include "timer.h"

#define WEFT_CACHELINE 64
/* Per-P ring; a power of two. Go uses 256; 1024 lets a burst of a thousand
 * spawns stay local instead of round-tripping through the global queue. */
#define WEFT_RUNQ_SIZE 1024
/* Per-P cache of free goroutine stacks. */
#define WEFT_PCACHE 1024

struct weft__m;
struct weft__p;

/*
 * G states. Transitions:
 *   IDLE     -> RUNNABLE   weft_go (a fresh or recycled G)
 *   RUNNABLE -> RUNNING    an M switches to it
 *   RUNNING  -> RUNNABLE   weft_yield, or preemption of a locked-thread hand-off
 *   RUNNING  -> WAITING    weft__park (the after-switch hook finishes the park)
 *   WAITING  -> RUNNABLE   weft__ready
 *   RUNNING  -> SYSCALL    weft_blocking_begin; SYSCALL -> RUNNING at the end
 *   RUNNING  -> DEAD       fn returned; the G and its stack go back to a cache
 * Written by whoever owns the transition; read racily by dumps and sysmon.
 */
enum {
	G_IDLE,
	G_RUNNABLE,
	G_RUNNING,
	G_WAITING,
	G_SYSCALL,
	G_DEAD,
};

/*
 * A goroutine. The record lives at the top of its own stack (so a parked
 * goroutine costs one page: the record and its few frames share it) and is
 * recycled with the stack.
 */
struct weft__g {
	/* First cache line: all that spawning, running and ending a goroutine
	 * touch (the record of a recycled G is usually cold). */
	void *sp;                   /* saved stack pointer; owner: the G's M while switching */
	uint32_t status;            /* G_*, atomic */
	int32_t line;               /* creation site: line */
	struct weft__m *lockedm;    /* the M it is pinned to, or NULL; owner: the G */
	uint8_t custom_stack;       /* not a default-size stack: unmapped at exit */
	uint8_t named;              /* name[] holds a name */
	uint8_t fresh;              /* never run: sp is init_context's frame */
	weft_fn fn;                 /* entry; set at spawn */
	void *arg;
	uint64_t id;                /* set at spawn, read-only while alive */
	const char *file;           /* creation site: file (a literal) */

	/* Second line: parking and sleeping. */
	struct weft__timer timer;   /* sleep timer; owner: the G while it sleeps */
	const char *wait_reason;    /* why it is WAITING; atomic (read by dumps) */
	int64_t wait_since;         /* weft__coarse_now when it parked; atomic */
	int lock_count;             /* weft_lock_thread nesting; owner: the G */
	uint8_t stack_trimmed;      /* in the global cache with its memory given back */

	char *stack_lo;             /* lowest usable byte (the guard page is just below) */
	size_t stack_size;          /* usable bytes from stack_lo to the end of this record */
	char name[32];              /* optional, NUL-terminated; valid when named */
	struct weft__g *allnext;    /* all-G list, under sched.allg_lock */
	struct weft__g **allpprev;  /* the link that points here (custom stacks unlink) */
	void *tsan_fiber;           /* sanitizer fiber state */
	void *asan_fake_stack;
	/* Where its blocking call began: the frame pointer of
	 * weft_blocking_begin's caller and the return address into it. The
	 * frames from there up stay put while the call blocks, so dumps and
	 * the stuck-call report walk them from another thread. */
	uintptr_t sys_fp;
	void *sys_pc;
	/* Two more words for the entry, set at spawn by weft__go_x (whose
	 * entries read them back: weft_wg_go, errgroup); apart from the first
	 * line, so plain spawns never touch them. */
	void *xfn;
	void *xarg;
	unsigned vg_stack;          /* Valgrind's id for the stack, when built with its header */
} __attribute__((aligned(64)));
_Static_assert(offsetof(struct weft__g, file) + sizeof(const char *) <= 64,
	       "spawn, run and exit touch only the record's first line");

/* P states. */
enum {
	P_IDLE,    /* in the idle list, no M */
	P_RUNNING, /* owned by an M running goroutines or the scheduler */
	P_SYSCALL, /* its M is in a blocking call; sysmon may retake it */
	P_DEAD,    /* beyond weft_procs(); holds nothing */
};

struct weft__p {
	/* Run queue: a ring written at tail only by the owner and consumed at
	 * head by the owner and by thieves (CAS on head). */
	uint32_t runqhead;                     /* atomic */
	uint32_t runqtail;                     /* atomic; written only by the owner */
	struct weft__g *runq[WEFT_RUNQ_SIZE];  /* slots; published by the tail store */
	struct weft__g *runnext;               /* atomic; the next G to run */
	/* The runnext hand-shake (runq.c): the owner announces a take or a
	 * swap in rn_taking; a thief holds rn_steal while it may take runnext. */
	uint32_t rn_taking;                    /* atomic; written by the owner */
	uint32_t rn_steal;                     /* atomic; CAS by thieves */
	/* The ring's hand-shake (runq.c): the owner announces a take of the
	 * ring's head, made without a CAS while no thief is announced. */
	uint32_t rq_taking;                    /* atomic; written by the owner */
	uint32_t rn_streak;                    /* runnext picks in a row; owner only */

	int id;                   /* index in sched.allp; fixed */
	uint32_t status;          /* P_*, atomic */
	struct weft__m *m;        /* owner M or NULL; under the owner/sched.lock */
	struct weft__p *link;     /* idle or wanted list; under sched.lock */
	int wanted_spinning;      /* on the wanted list: spinning when taken */
	uint32_t schedtick;       /* atomic; incremented on every switch to a G */
	uint32_t syscalltick;     /* atomic; incremented on every blocking_begin */

	struct weft__timers timers; /* its own lock */

	/* Stack cache: free G+stack units of the default size, as an array of
	 * pointers (a list through the records would touch a cold page per
	 * unit); owner P only. */
	int ngfree;
	int gfree_low;            /* the fewest entries since trim_start (stack.c) */
	uint32_t trim_start;      /* the trim epoch that gfree_low's window began in */
	struct weft__g *gfree[WEFT_PCACHE];

	/* Goroutine ids handed out in batches (Go's goidcache): no shared
	 * counter bounces between CPUs on every spawn. Owner P only. */
	uint64_t goid_next, goid_end;
	/* Goroutines spawned minus goroutines ended on this P; owner writes
	 * (relaxed), anyone sums (weft_num_goroutines). */
	int64_t ngo;
	int64_t nspawned;

	/* Statistics; atomic relaxed, written by the owner. */
	int64_t nsteal;
	int64_t npark;

	/* sysmon's view; written by sysmon only. */
	uint32_t sm_schedtick, sm_syscalltick;
	int64_t sm_when;
	int sm_hog_reported;
} __attribute__((aligned(WEFT_CACHELINE)));

/* What the G that is resumed next must finish for the G that switched out. */
enum {
	AFTER_NONE,
	AFTER_READY,    /* put prev on the local run queue (yield) */
	AFTER_GLOBAL,   /* put prev on the global run queue (chaos, locked yield) */
	AFTER_UNBLOCK,  /* the same, then uncount prev's blocking call (syscall exit) */
	AFTER_PARK,     /* call park_fn(park_arg, prev) (release the waiter's lock) */
	AFTER_FREE,     /* prev has exited: recycle its G and stack */
};

struct weft__m {
	void *g0_sp;              /* saved sp of the scheduler context (the thread's own stack) */
	struct weft__g *curg;     /* running G, or NULL on g0; owner: this M */
	struct weft__p *p;        /* owned P or NULL; owner: this M */
	struct weft__p *nextp;    /* P handed over by startm; under sched.lock */
	struct weft__m *link;     /* idle list; under sched.lock */
	struct weft__m *alllink;  /* all-M list; append only under sched.lock;
				   * a record stays on it for good, and newm
				   * reuses an exited M's (sched.mfree) */
	uint32_t park;            /* futex word: 1 = woken */
	uint32_t polling;         /* atomic: blocked in epoll for stopm (netpoll.c) */
	int spinning;             /* counted in sched.nmspinning; owner: this M */
	int ring_thief;           /* counted in sched.ringthieves until exit; owner: this M */
	int transit;              /* counted in sched.nmtransit; under sched.lock */
	int linger;               /* naps taken while spinning (findrunnable); owner */
	int id;
	pid_t tid;
	pthread_t thread;
	struct weft__g *lockedg;  /* G pinned to this M, or NULL */
	struct weft__g *handoff_g; /* g0 hand-off request: a G pinned to another M */
	int exiting;              /* the pinned G ended: the thread exits */
	int in_blocking;          /* a blocking call is running on this M (atomic) */
	int64_t blocking_since;   /* atomic */
	int blocking_reported;

	/* The after-switch hook, set by the switcher, run by the resumer. */
	int after;
	struct weft__g *after_g;
	void (*park_fn)(void *arg, struct weft__g *g);
	void *park_arg;

	uint64_t rand;            /* xorshift state; owner: this M */
	void *altstack;           /* signal stack for overflow reports */
	char *g0_lo;              /* the thread stack's bounds (sanitizers) */
	size_t g0_size;
	void *tsan_g0;
	void *asan_g0_fake;
	int *errno_ptr;            /* this thread's errno (an M never changes thread) */
};

/* Grouped by who writes what, a cache line or more per group, so that the
 * fields every switch and spawn reads (nprocs, chaos) never share a line
 * with counters other Ms write all the time (nmspinning as Ms start and
 * stop looking for work, the global queue under its lock, the id
 * generator). */
struct weft__sched {
	/* Read-mostly: set at start or by weft_set_procs. */
	int nprocs;          /* atomic: the P count in force */
	int nallp;
	/* Debug options from WEFT_DEBUG, read-only after start. */
	int chaos;
	uint64_t chaos_seed;
	int hogs;
	int schedtrace_ms;
	int host_threads;    /* threads that are not the program's (sysmon.c) */
	struct weft__p *allp[WEFT_MAX_PROCS]; /* allocated up to nallp; never freed */

	/* Ms that may take from other Ps' rings (runq.c): read by every take
	 * from a ring, written when an M first steals and when it exits, and
	 * around sysmon's drain of a hog's queue. */
	_Alignas(WEFT_CACHELINE) int ringthieves; /* atomic */

	/* What wakep reads on every spawn and wake-up, written as Ps go idle
	 * and Ms start or stop spinning. */
	_Alignas(WEFT_CACHELINE) int npidle; /* atomic */
	int nmspinning;      /* atomic */

	/* The lock and what it protects. */
	_Alignas(WEFT_CACHELINE) uint32_t lock; /* the idle lists, the global queue, M creation */
	struct weft__p *pidle;
	struct weft__m *midle;
	int nmidle;
	/* Ms without a P on their way to the idle list (findrunnable gave its
	 * P back, a blocking call lost its P), and Ps that startm left for them
	 * rather than start one more thread: the first such M to reach stopm
	 * takes one. Under lock. */
	int nmtransit;
	struct weft__p *pwanted;
	/* The global run queue: a growable ring of G pointers (not a list
	 * through the Gs: each G lives in its own stack page, and walking them
	 * costs a TLB miss apiece). */
	struct weft__g **gq;
	int64_t gq_cap, gq_head;
	int64_t runqsize;    /* atomic (read racily by the fast checks) */

	/* The rest. */
	_Alignas(WEFT_CACHELINE) uint64_t goid; /* atomic id generator */
	struct weft__m *allm;
	struct weft__m *mfree; /* exited Ms' records, for newm (via link); under lock */
	int nmrec;           /* atomic: M records on allm (allocated, never freed) */
	int mcount;          /* atomic: Ms started and not exited */
	uint32_t allg_lock;
	struct weft__g *allg;
	int64_t ngoroutines; /* atomic: goroutines spawned without a P (foreign threads) */
	int64_t timer_wait_until; /* atomic: deadline the timer-waiting idle M sleeps to */
	int nblocking;       /* atomic: Ms inside weft_blocking_begin/end */
	int nforeign_blocked; /* atomic: foreign threads parked inside weft */
	int64_t nhandoff;    /* atomic */
} __attribute__((aligned(WEFT_CACHELINE)));

extern struct weft__sched weft__sched;

/* ---------------------------------------------------------------- thread state */

/*
 * The current M, or NULL on a foreign thread. Never cached by the compiler
 * across a call that can park (DESIGN, TLS): on x86-64 and AArch64 it is
 * one volatile asm that reads the thread pointer (%fs, tpidr_el0) afresh
 * each time it runs (a "memory" clobber keeps it in place among the calls
 * around it), elsewhere an opaque out-of-line call.
 * The variable is initial-exec TLS: one load through the GOT, never
 * __tls_get_addr, in the shared library too.
 */
extern __thread struct weft__m *weft__tls_m
	__attribute__((visibility("hidden"), tls_model("initial-exec")));
struct weft__m *weft__m_get_slow(void);
static inline __attribute__((always_inline)) struct weft__m *weft__m_get(void)
{
#if defined(__x86_64__)
	struct weft__m *m;
	__asm__ __volatile__("movq weft__tls_m@gottpoff(%%rip), %0\n\t"
			     "movq %%fs:(%0), %0"
			     : "=r"(m)
			     :
			     : "memory");
	return m;
#elif defined(__aarch64__)
	struct weft__m *m;
	__asm__ __volatile__("adrp %0, :gottprel:weft__tls_m\n\t"
			     "ldr %0, [%0, #:gottprel_lo12:weft__tls_m]\n\t"
			     "mrs x16, tpidr_el0\n\t"
			     "ldr %0, [x16, %0]"
			     : "=r"(m)
			     :
			     : "x16", "memory");
	return m;
#else
	return weft__m_get_slow();
#endif
}
/* The current G or NULL on a foreign thread / the scheduler context. */
struct weft__g *weft__g_get(void);

/* Start the runtime if it is not started. Idempotent and thread-safe. */
void weft__start(void);

/* ---------------------------------------------------------------- parking */

/*
 * Park the running G. After its context is saved, the next G to run on this M
 * calls park_fn(park_arg, g) before anything else: release the lock that
 * guards the wait there, or arm the timer that will wake it. park_fn may be
 * NULL. reason appears in dumps. Returns when someone weft__ready()s the G.
 * Precondition: called on a goroutine, holding no weft__lock other than the
 * one park_fn releases.
 */
void weft__park(const char *reason, void (*park_fn)(void *arg, struct weft__g *g), void *park_arg);

/* Make a WAITING G runnable (next on the caller's P when it has one,
 * otherwise on the global queue) and wake an idle P if one is available. */
void weft__ready(struct weft__g *g);
/* The same two with the caller's M (weft__m_get(), NULL on a foreign
 * thread) already at hand: one TLS lookup less on the hottest paths. */
void weft__park_m(struct weft__m *m, const char *reason,
		  void (*park_fn)(void *arg, struct weft__g *g), void *park_arg);
void weft__ready_m(struct weft__m *m, struct weft__g *g);
/* Make n parked Gs runnable at once (a mass wake-up: a close, a broadcast):
 * one trip to the global run queue instead of n through runnext and the
 * ring's overflow. Fewer than 4 go one by one through weft__ready_m. */
void weft__ready_batch(struct weft__m *m, struct weft__g **v, int n);
/* Warm the top of a parked G's stack, which it touches first when it runs:
 * above its saved sp, the saved registers and the frames of its way into
 * park (about half a kilobyte); below, the frames its resumption pushes (the
 * after-switch action). Adding the 4 lines below sp to the 8 above cut Sleep
 * and CancelFanout at 1 P by 10-15%; 8 below did less. For a waker that
 * knows the G's stack is cold (a sleeper whose timer fires, the next
 * goroutine of a close's cascade): its lines would otherwise be missed one
 * by one at the switch. A goroutine woken by a plain channel operation was
 * usually running a moment ago. Only prefetches. */
static inline void weft__warm_stack(struct weft__g *g)
{
	char *sp = __atomic_load_n((char **)&g->sp, __ATOMIC_RELAXED);
	for (int i = -4; i < 8; i++)
		__builtin_prefetch(sp + 64 * i, 1);
}
/* Make n parked Gs runnable in order (Go's injectglist, for the poller):
 * at the tail of m's P's queue when m holds one, else (or in chaos mode) as
 * weft__ready_batch. */
void weft__inject(struct weft__m *m, struct weft__g **v, int n);

/* ---------------------------------------------------------------- run queues (runq.c) */

/* Put g on p's queue; as runnext when next (the previous runnext moves to the
 * tail). Overflow moves half the ring to the global queue. Owner P only. */
void weft__runq_put_slow(struct weft__p *p, struct weft__g *g, int next);
/* Append g at the ring's tail t, h being its head read with acquire: only
 * the owner writes the tail, and the release store publishes the slot
 * (pairs with the acquire loads of runqtail in get and grab). Returns 0,
 * appending nothing, if the ring is full. Owner P only. */
static inline int weft__runq_append(struct weft__p *p, struct weft__g *g, uint32_t h, uint32_t t)
{
	if (t - h >= WEFT_RUNQ_SIZE)
		return 0;
	p->runq[t % WEFT_RUNQ_SIZE] = g;
	__atomic_store_n(&p->runqtail, t + 1, __ATOMIC_RELEASE);
	return 1;
}

static inline void weft__runq_put(struct weft__p *p, struct weft__g *g, int next)
{
	/* An empty runnext can only be filled by its owner (thieves and the
	 * owner's gets only empty it): a plain release store does, with no
	 * locked instruction, on the ping-pong path. Chaos mode goes the slow
	 * way, which may send g to the ring instead. */
	if (!__atomic_load_n(&weft__sched.chaos, __ATOMIC_RELAXED)) {
		if (next && !__atomic_load_n(&p->runnext, __ATOMIC_RELAXED)) {
			__atomic_store_n(&p->runnext, g, __ATOMIC_RELEASE);
			return;
		}
		/* The ring's tail, with room (a yield's path). */
		if (!next && weft__runq_append(p, g, __atomic_load_n(&p->runqhead, __ATOMIC_ACQUIRE),
					       p->runqtail))
			return;
	}
	weft__runq_put_slow(p, g, next);
}
/* Take a G from p: runnext first, then the head. Owner P only. */
struct weft__g *weft__runq_get(struct weft__p *p);
/* The same for the scheduler: runnext first, except that after
 * WEFT_RUNNEXT_STREAK runnext picks in a row the ring's head goes first (a
 * runnext chain shares one time slice, as in Go). Owner P only. */
#define WEFT_RUNNEXT_STREAK 64
struct weft__g *weft__runq_get_fair(struct weft__p *p);
/* Steal about half of victim's queue into p's; returns one G to run now or
 * NULL. steal_next allows taking victim's runnext. p must be owned by the caller. */
struct weft__g *weft__runq_steal(struct weft__p *p, struct weft__p *victim, int steal_next,
				 int *thief);
/* Retire a thief of other Ps' rings (*thief = 0; nothing if it is not one):
 * see runq.c. weft__runq_steal announces its caller (*thief = 1) at its
 * first steal from a non-empty ring; an M retires when it exits. */
void weft__ring_thief_retire(int *thief);
/* Number of Gs in p's queue including runnext (racy). */
uint32_t weft__runq_len(struct weft__p *p);
/* Move everything queued on victim (runnext too) to the global queue; returns
 * how many. Any thread; sched.lock not held. */
int weft__runq_drain(struct weft__p *victim);
/* Is p's queue empty (racy, including runnext)? */
int weft__runq_empty(struct weft__p *p);
/* Global queue; sched.lock must be held. */
void weft__globrunq_put(struct weft__g *g);
void weft__globrunq_putbatch(struct weft__g **v, int n);
/* Takes a share into p's queue and returns one G; NULL when the global
 * queue is empty or p is beyond weft_procs(). */
struct weft__g *weft__globrunq_get(struct weft__p *p, int max);

/* errno's address for the thread we are on now, never cached across a
 * switch (sched.c). */
int *weft__errno_addr(void);

/* ---------------------------------------------------------------- stacks (stack.c) */

/* A G record with a fresh or cached stack of size bytes (0 = default); NULL
 * and *err set on failure. p may be NULL (foreign thread). The caller's
 * errno is kept (weft_go must not change it). */
struct weft__g *weft__stack_alloc(struct weft__p *p, size_t size, int *err);
/* Return g's record and stack. Precondition: no one runs on that stack. */
void weft__stack_free(struct weft__p *p, struct weft__g *g);
/* For tests: take vm.max_map_count to be max, and with no_madv_guard act as
 * on a kernel without MADV_GUARD_INSTALL (mprotect guards) from now on. */
void weft__stack_set_map_limit(long max, int no_madv_guard);
/* For tests: called by an idle M before each batch it carves ahead. */
extern void (*weft__stack_precarve_hook)(void);
/* Default-size stacks are carved WEFT_STACK_BATCH at a time; idle Ps carve
 * at most WEFT_PRECARVE_MAX batches ahead of demand. */
#define WEFT_STACK_BATCH 64
#define WEFT_PRECARVE_MAX 8
/* Whether spawns have recently outrun the stack caches, so that an M whose
 * P went idle should weft__stack_precarve(): carve a batch of stacks into
 * the global cache (stack.c says when). No lock held. */
int weft__stack_precarve_wanted(void);
void weft__stack_precarve(void);
/* Default-size stacks carved so far: in all, and by idle Ps; returns
 * whether a carve ahead is under way (tests). */
int weft__stack_counts(int64_t *carved, int64_t *ahead);
/* Give back the memory of stacks idle in the global cache (sysmon). */
void weft__stack_trim(void);
/* Move p's cache to the global cache (P retired). */
void weft__stack_flush(struct weft__p *p);
/* Begin a new trim period: sysmon, about once a second, before it spills
 * the idle Ps' caches and calls weft__stack_trim. */
void weft__stack_trim_epoch(void);
/* Move the units that p's cache left unused for a whole trim period to the
 * global cache, whose trim passes give their memory back. Owner P, or p
 * idle and sched.lock held (sysmon). */
void weft__stack_spill_unused(struct weft__p *p);
/* The G whose guard page holds addr, for the overflow report; or NULL. */
int weft__stack_is_guard(struct weft__g *g, const void *addr);
size_t weft__page_size(void);

/* ---------------------------------------------------------------- internal to runtime */

void weft__sysmon_start(void);
/* sysmon's tick now, in us (20 while busy, up to 10,000 after a quiet
 * spell); and a wake for it, which puts its tick back to 20 us. */
extern uint32_t weft__sysmon_tick_us;
void weft__sysmon_kick(void);
void weft__debug_init(void);
void weft__signals_init_thread(struct weft__m *m);
/* Give back what weft__signals_init_thread took, as the M's thread exits. */
void weft__signals_exit_thread(struct weft__m *m);
void weft__dump_fd(FILE *out);
int64_t weft__timers_earliest(void);
/* Add t (not in any heap) for `when` to the caller's P's heap, or to P 0's
 * when the caller holds no P (a foreign thread, sysmon, a blocking call),
 * waking an idle M if it sleeps past `when`. Runtime started. Out of memory
 * for the heap is fatal. */
void weft__timer_add_here(struct weft__timer *t, int64_t when);
/* weft__timer_add_here that returns ENOMEM (t not added) instead of dying:
 * for the calls whose contract has an ENOMEM to report it with. */
int weft__timer_try_add_here(struct weft__timer *t, int64_t when);
void weft__handoffp(struct weft__p *p);
void weft__wakep(void);
void weft__sched_note_foreign_block(int delta);
/* Goroutines alive: the per-P counts and the foreign ones, summed (racy
 * while goroutines start and end; exact when nothing runs). */
int64_t weft__count_goroutines(void);
int64_t weft__count_spawned(void);
/* weft_go_at with two more words for entry to read back from its own G
 * (weft__self_x): xfn and xarg, whatever entry makes of them. */
int weft__go_x(weft_fn entry, void *arg, void *xfn, void *xarg, const char *file, int line);
/* The running goroutine's xfn and xarg (weft__go_x). */
static inline void weft__self_x(void **xfn, void **xarg)
{
	struct weft__g *g = weft__m_get()->curg;
	*xfn = g->xfn;
	*xarg = g->xarg;
}
/* End the running goroutine (its fn returned). */
__attribute__((noreturn)) void weft__goexit(void);
/* weft_now() as of sysmon's last tick: cheap, coarse (up to 10 ms old). */
extern int64_t weft__coarse_now;
/* Channels and contexts alive, for weft_stats (leak checks); atomic. */
extern int64_t weft__live_chans, weft__live_ctxs;
/* Set by the SIGQUIT handler; sysmon dumps and exits. */
extern volatile sig_atomic_t weft__dump_requested;
/* Report a running hog's backtrace from its own thread (signal): tid is
 * its M's, read by the caller (a record may be reused once its M exits). */
void weft__hog_backtrace(pid_t tid);
/* Up to max return addresses of g's blocking call, from the frame that
 * called weft_blocking_begin up; g is in one (G_SYSCALL), and its record
 * must stay mapped meanwhile (sched.allg_lock held). Racy by nature: reads
 * stay inside g's stack, so a call that returns meanwhile garbles the
 * trace, nothing more. */
int weft__syscall_frames(struct weft__g *g, void **frames, int max);
uint64_t weft__fastrand(void);
/* Set at start when membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) works: the
 * owner of a P then takes its runnext without a locked instruction (runq.c). */
extern int weft__membarrier_ok;

/*
 * Grace periods, for lock-free readers of memory that writers retire (RCU's
 * quiescent states, counted by the scheduler). A read section is code with
 * no switch in it, run by a goroutine on a running P (weft__reader_enter says
 * whether the caller is one: elsewhere, read under the writers' lock). Since
 * goroutines are never preempted, such a section ends before its P's
 * schedtick next changes. A writer unpublishes what it retires, then takes a
 * snapshot (weft__grace_start); once weft__grace_done says every P has
 * switched or stopped running since, no read section can still see it.
 */
static inline int weft__reader_enter(struct weft__m *m)
{
	/* In a blocking section m->p may have been handed to another M (and be
	 * RUNNING there): not ours to read under. */
	if (!m || !m->curg || !m->p || __atomic_load_n(&m->in_blocking, __ATOMIC_RELAXED) ||
	    __atomic_load_n(&m->p->status, __ATOMIC_RELAXED) != P_RUNNING)
		return 0;
	/* Order the P's last schedtick store before the section's loads
	 * (x86 may otherwise pass a load ahead of a buffered store); with
	 * membarrier, the writer pays for it instead. */
	if (!weft__membarrier_ok)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return 1;
}
/* ticks has room for WEFT_MAX_PROCS; returns how many it filled. The
 * caller's own P counts as having passed already (the caller, a writer, is
 * in no read section). */
int weft__grace_start(uint32_t *ticks);
int weft__grace_done(const uint32_t *ticks, int n);

/* A full memory barrier on every thread of the process that is running. */
void weft__membarrier(void);
/* Chaos mode (WEFT_DEBUG=chaos): spin a few microseconds, one call in
 * one_in, to widen a race window. Else one predicted branch. */
static inline void weft__chaos_pause(int one_in)
{
	if (__builtin_expect(weft__sched.chaos, 0) && weft__fastrand() % (uint64_t)one_in == 0)
		for (int i = 0; i < 5000; i++)
			weft__cpu_relax();
}

/* weft__fastrand() with the caller's M at hand (m may be NULL). */
static inline uint64_t weft__fastrand_m(struct weft__m *m)
{
	if (!m)
		return weft__fastrand();
	uint64_t x = m->rand;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	m->rand = x;
	return x;
}
/* A uniform value in [0, n) from r's high 32 bits, by a multiply (Lemire):
 * no division; the bias is below n / 2^32. */
static inline uint32_t weft__rand_below(uint64_t r, uint32_t n)
{
	return (uint32_t)(((r >> 32) * (uint64_t)n) >> 32);
}

#endif
