/* SPDX-License-Identifier: MIT */
/*
 * weft/runtime.h - goroutines and the scheduler: starting goroutines, yielding,
 * sleeping, time, the number of Ps, blocking-call hand-off, thread pinning,
 * goroutine dumps and runtime statistics.
 *
 * The runtime starts lazily on the first call that needs it. Every call here
 * may be made from a goroutine or from a thread that is not one ("a foreign
 * thread", such as plain main()); where the two differ, the entry says so.
 *
 * Environment:
 *   WEFT_PROCS=N       the number of Ps (default: the CPUs this process may use;
 *                      a value outside 1 .. WEFT_MAX_PROCS is ignored, with
 *                      a warning on stderr)
 *   WEFT_MAX_BLOCKING=N  goroutines inside blocking calls at once (default 128)
 *   WEFT_DEBUG=LIST    comma-separated: chaos (random scheduling order and
 *                      thread moves; seed=N makes it reproducible), hogs
 *                      (report goroutines running > 10 ms without a switch and
 *                      blocking calls stuck > 1 s, with backtraces; a hog's is
 *                      taken with a signal to its thread, SIGURG, as Go's
 *                      preemption does, so a raw system call that the
 *                      kernel does not restart, such as nanosleep or poll,
 *                      may return EINTR in a hog), schedtrace=MS (a scheduler
 *                      summary line on stderr every MS milliseconds),
 *                      hostthreads=N (N threads of the process are not the
 *                      program's and never wake a goroutine, e.g. an
 *                      emulator's: deadlock detection, which takes any thread
 *                      it does not know for a possible waker, counts them as
 *                      its own).
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"

WEFT_BEGIN_DECLS

/* A goroutine's body. It receives the argument given to weft_go(). */
typedef void (*weft_fn)(void *arg);

/* Options for weft_go_opts(). All-zero means the defaults. */
typedef struct weft_go_options {
	/* Usable stack in bytes, rounded up to whole pages; 0 means the default
	 * (WEFT_DEFAULT_STACK). Must be at most WEFT_MAX_STACK. */
	size_t stack_size;
	/* A name shown in dumps and reports; copied (at most 31 bytes kept).
	 * NULL means none. */
	const char *name;
} weft_go_options;

/* The default usable stack: enough for printf and getaddrinfo. */
#define WEFT_DEFAULT_STACK ((size_t)256 * 1024)
/* The smallest and largest stack weft_go_opts() accepts. */
#define WEFT_MIN_STACK ((size_t)16 * 1024)
#define WEFT_MAX_STACK ((size_t)1024 * 1024 * 1024)

/*
 * weft_go - start a goroutine running fn(arg), like Go's `go fn(arg)`.
 *
 * The goroutine records the caller's file and line as its creation site (for
 * dumps and stack-overflow reports). It runs later, on any thread; when fn
 * returns the goroutine ends and its resources are reused. weft_go() does not
 * wait for it: join with a weft_wg or a channel. The new goroutine runs next
 * on the caller's P (Go's runnext), so a producer and the consumer it starts
 * stay cache-warm.
 *
 * Returns 0, or: EINVAL (fn is NULL), ENOMEM (no memory for the stack),
 * EAGAIN (the kernel refused more memory mappings: see vm.max_map_count;
 * weft says so on stderr once).
 * On failure no goroutine was started and fn will never run.
 * Blocks: no. Thread-safety: any thread. arg is borrowed: it must stay valid
 * for as long as fn uses it.
 */
#define weft_go(fn, arg) weft_go_at((fn), (arg), NULL, __FILE__, __LINE__)

/*
 * weft_go_opts - weft_go() with options (stack size, name). opts may be NULL.
 * Returns EINVAL when opts->stack_size is non-zero and outside
 * [WEFT_MIN_STACK, WEFT_MAX_STACK]; otherwise as weft_go().
 */
#define weft_go_opts(fn, arg, opts) weft_go_at((fn), (arg), (opts), __FILE__, __LINE__)

/*
 * weft_go_at - the function behind weft_go() and weft_go_opts(), taking the
 * creation site explicitly (for wrappers that want to report their caller).
 * file must be a string that lives forever (a __FILE__ literal); it may be NULL.
 */
WEFT_API int weft_go_at(weft_fn fn, void *arg, const weft_go_options *opts,
			const char *file, int line);

/*
 * weft_main - run main_fn(arg) as a goroutine and wait for it to return;
 * returns what main_fn returned. Convenient as `return weft_main(run, NULL);`
 * in main(). Other goroutines still running when main_fn returns keep running;
 * the process usually exits right after, as a Go program does.
 * Errors: when the goroutine cannot be started, prints why and returns 1.
 * main_fn NULL is a fatal error.
 * Blocks: yes, until main_fn returns. Thread-safety: any thread.
 */
WEFT_API int weft_main(int (*main_fn)(void *arg), void *arg);

/*
 * weft_yield - let other runnable goroutines run; the caller is runnable again
 * at once (Go's runtime.Gosched). With nothing else to run on the caller's P
 * (its queue and the global queue empty, no timer due there) it returns
 * without a switch, where Go's Gosched always goes through its scheduler.
 * On a foreign thread: sched_yield().
 * Blocks: no (it may resume on another thread). Thread-safety: any thread.
 */
WEFT_API void weft_yield(void);

/*
 * weft_now - the monotonic clock in nanoseconds (CLOCK_MONOTONIC). Deadlines
 * throughout weft are absolute values of this clock.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int64_t weft_now(void);

/* Durations in nanoseconds, as Go's time package names them:
 * weft_sleep(250 * WEFT_MILLISECOND). */
#define WEFT_NANOSECOND ((int64_t)1)
#define WEFT_MICROSECOND ((int64_t)1000)
#define WEFT_MILLISECOND ((int64_t)1000000)
#define WEFT_SECOND ((int64_t)1000000000)

/*
 * weft_sleep - pause the caller for at least duration_ns nanoseconds; a value
 * <= 0 returns at once (after a yield, on a goroutine).
 * Blocks: yes (parks the goroutine on a timer of its P; a foreign thread
 * sleeps in the kernel). Thread-safety: any thread.
 */
WEFT_API void weft_sleep(int64_t duration_ns);

/*
 * weft_sleep_until - pause the caller until weft_now() >= deadline_ns.
 * Blocks: yes, as weft_sleep(). Thread-safety: any thread.
 */
WEFT_API void weft_sleep_until(int64_t deadline_ns);

/*
 * weft_procs - the number of Ps: how many goroutines may run at once (Go's
 * GOMAXPROCS). Starts the runtime if needed.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_procs(void);

/*
 * weft_set_procs - set the number of Ps to n (1 <= n <= WEFT_MAX_PROCS), at
 * any time. Goroutines queued on a P that goes away, and its timers, move to
 * the others, even while the goroutine running there holds it (a CPU-bound
 * loop, a blocking call); that goroutine moves at its next switch. If old is
 * not NULL, it receives the previous number.
 * Returns 0, or EINVAL when n is out of range.
 * Blocks: no. Thread-safety: any thread.
 */
#define WEFT_MAX_PROCS 256
WEFT_API int weft_set_procs(int n, int *old);

/*
 * weft_num_goroutines - how many goroutines exist (running, runnable or
 * blocked), not counting foreign threads.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int64_t weft_num_goroutines(void);

/*
 * weft_self_id - the calling goroutine's id (1, 2, ...: unique, never
 * reused; not in the order of creation: each P hands out ids from a batch
 * of its own, like Go's goid, so even one caller that moves between Ps
 * may create a goroutine with a lower id after one with a higher id), or
 * 0 when the caller is a foreign thread.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API uint64_t weft_self_id(void);

/*
 * weft_self_proc - the index of the P the calling goroutine runs on right now
 * (0 .. weft_procs()-1), or -1 on a foreign thread. Useful for statistics;
 * the answer may be stale as soon as the goroutine blocks or yields.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_self_proc(void);

/*
 * weft_blocking_begin, weft_blocking_end - bracket a call that may block the
 * OS thread (read() of a regular file, getaddrinfo(), a foreign library, a
 * long computation in a library you cannot change).
 *
 * Between the two, the goroutine keeps its thread but its P may be handed to
 * another thread after ~20 us, so the other goroutines keep running. A short
 * call costs two atomic operations. weft_blocking_end() may move the caller to
 * another P or park it until one is free. Pairs must match and do not nest; a
 * goroutine must not call any other blocking weft function between them, nor
 * end there (each is a fatal error that names it; weft_yield() there yields
 * the thread). On a foreign thread both are no-ops.
 *
 * At most weft_max_blocking() goroutines are inside such calls at once (so
 * the process has at most weft_procs() + weft_max_blocking() runtime
 * threads); weft_blocking_begin() parks the goroutine, first come first
 * served, until a slot is free.
 * Blocks: begin parks the goroutine while every slot is taken; end may park
 * it until a P is free. Thread-safety: any thread.
 */
WEFT_API void weft_blocking_begin(void);
WEFT_API void weft_blocking_end(void);

/* The default of weft_max_blocking() and its largest accepted value. */
#define WEFT_DEFAULT_MAX_BLOCKING 128
#define WEFT_MAX_MAX_BLOCKING 65536

/*
 * weft_max_blocking - how many goroutines may be inside a
 * weft_blocking_begin/end pair at once: WEFT_MAX_BLOCKING from the
 * environment (1 .. WEFT_MAX_MAX_BLOCKING; anything else is a fatal error
 * at start), else WEFT_DEFAULT_MAX_BLOCKING. Name resolution and regular-file
 * I/O of weft/net.h go through these slots.
 * weft_set_max_blocking - change it; a higher bound lets waiting goroutines
 * in at once, a lower one takes effect as calls end. old (may be NULL)
 * receives the previous bound.
 * Returns 0, or EINVAL when n is outside [1, WEFT_MAX_MAX_BLOCKING].
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_max_blocking(void);
WEFT_API int weft_set_max_blocking(int n, int *old);

/*
 * weft_lock_thread, weft_unlock_thread - pin the calling goroutine to its
 * current OS thread (Go's runtime.LockOSThread): until unlocked, it runs only
 * there, and no other goroutine runs on that thread. Calls nest: the goroutine
 * is unpinned when every lock has been undone. A goroutine that ends while
 * pinned takes its thread with it (the thread exits), as in Go.
 * weft_unlock_thread() without a matching lock is a fatal error.
 * On a foreign thread both are no-ops (the thread is already its own).
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_lock_thread(void);
WEFT_API void weft_unlock_thread(void);

/*
 * weft_dump - write every goroutine to out (stderr when NULL), Go style:
 *   goroutine 9 [semacquire, 2 minutes]:
 *   worker(0x5588...)
 *       ...frames...
 *   created by main.c:42
 * with its state, wait reason and how long it has waited, name, creation site
 * and, for goroutines not running at the moment, a backtrace (symbols need
 * -rdynamic in the executable; frame pointers must be on). SIGQUIT prints
 * the same to stderr and then exits with status 2, as Go does.
 * Blocks: no (it takes runtime locks briefly). Thread-safety: any thread.
 */
WEFT_API void weft_dump(FILE *out);

/*
 * weft_fatalf - end the process with a fatal error, as weft does for API
 * misuse (Go's throw): "fatal error: " and the printf-formatted message (up
 * to about 500 bytes; longer is cut) go to stderr in one write(2), so that
 * reports from several threads never interleave, then abort() (SIGABRT: a
 * core dump or a debugger has the stack). Nothing is flushed or freed first;
 * it does not allocate. For libraries on weft whose misuse reports should
 * read like weft's own (weft's patterns use it: "fatal error: pipeline: ...").
 * Blocks: never returns. Thread-safety: any thread, goroutine or not, also
 * before weft has started.
 */
WEFT_API __attribute__((noreturn, format(printf, 1, 2))) void weft_fatalf(const char *fmt, ...);

/* Runtime counters; see weft_stats_get(). Totals count since start. */
typedef struct weft_stats {
	int64_t goroutines;   /* alive now */
	int64_t threads;      /* OS threads the runtime has started (Ms), alive */
	int64_t procs;        /* Ps */
	int64_t idle_procs;   /* Ps with nothing to run right now */
	int64_t spawned;      /* goroutines started, total */
	int64_t switches;     /* goroutine switches, total */
	int64_t steals;       /* successful steals from another P, total */
	int64_t parks;        /* goroutine parks, total */
	int64_t handoffs;     /* Ps retaken from blocking calls, total */
	int64_t global_runq;  /* goroutines in the global run queue now */
	int64_t local_runq;   /* goroutines in all local run queues now */
	int64_t channels;     /* channels alive now (made, not yet freed) */
	int64_t contexts;     /* contexts alive now (the background excluded) */
} weft_stats;

/*
 * weft_stats_get - fill *out with a snapshot of the runtime's counters. The
 * counters are read without stopping anything, so they may be slightly
 * inconsistent with each other.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_stats_get(weft_stats *out);

WEFT_END_DECLS

#endif /* WEFT_RUNTIME_H */
