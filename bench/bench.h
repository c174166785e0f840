/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what the files of weft-bench share: the parsed flags, the case
 * table's row type, the calibration helper (Go's runTimed), the reporting
 * helper that prints Go benchmark lines, and one declaration per case.
 *
 * weft-bench mirrors the Go reference suite (../shared/anchors/go/main.go):
 * same flags, same case names, same work, same output line. Each case lives
 * in its own file and appears once in the table in main.c. To add a case:
 * write bench/<case>.c, declare its function below, add a row to the table
 * and the file to bench/CMakeLists.txt.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

#include <weft.h>

#define BENCH_MS ((int64_t)1000000)

/* The command-line flags; set once by main() before any case runs. */
struct bench_flags {
	const char *case_name; /* --case */
	int threads;           /* --threads: the number of Ps */
	int reps;              /* --reps: repetitions, one output line each */
	int64_t target_ns;     /* --target: wall time aimed at per repetition */
	int64_t n;             /* --n: fixed op count, 0 = calibrate */
};

extern struct bench_flags bench_flags;

/*
 * A timed case body (Go's f(n) of runTimed): perform exactly n ops and return
 * the measured time in nanoseconds (weft_now() differences), set-up and
 * tear-down excluded.
 */
typedef int64_t (*bench_timed_fn)(int64_t n);

struct bench_case;

/* A case with its own repetition loop (Sleep, MemPark), as in the Go suite. */
typedef void (*bench_run_fn)(const struct bench_case *c);

/*
 * One row of the case table. Exactly one of timed and run is set. A timed case
 * goes through bench_run_timed() with quantum q (n is a multiple of q).
 */
struct bench_case {
	const char *name;
	int64_t q;
	bench_timed_fn timed;
	bench_run_fn run;
	int64_t arg; /* a parameter for run, e.g. MemPark's goroutine count */
};

/*
 * bench_run_timed - Go's runTimed: unless --n is given, calibrate n until one
 * run lasts >= 100 ms, scale it to --target and round it up to a multiple of
 * q; then run --reps repetitions and print one line each.
 */
void bench_run_timed(const char *name, int64_t q, bench_timed_fn f);
/* The same for a case that also reports throughput (Go's runTimedMBs): each
 * line carries bytes_per_op * n / 1e6 / seconds as "MB/s". */
void bench_run_timed_mbs(const char *name, int64_t q, int64_t bytes_per_op, bench_timed_fn f);

/*
 * bench_report - print `Benchmark<name>-<threads>\t<n>\t<x> ns/op<extra>`
 * (Go's report) and flush, so that each line appears as soon as it is known.
 * extra may be NULL; otherwise it starts with a tab.
 */
void bench_report(const char *name, int64_t n, double ns_per_op, const char *extra);

/* bench_rss_bytes - VmRSS of this process from /proc/self/status, in bytes. */
int64_t bench_rss_bytes(void);

/* bench_fatal - print "weft-bench: <message>" on stderr and abort. */
void bench_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * bench_go - weft_go() that aborts when the goroutine cannot be started (the
 * Go suite cannot fail there either). The creation site stays the caller's.
 */
#define bench_go(fn, arg) bench_check_go(weft_go((fn), (arg)), __FILE__, __LINE__)
void bench_check_go(int err, const char *file, int line);

/* ---------------------------------------------------------------- cases */

int64_t bench_spawn(int64_t n);                       /* spawn.c */
int64_t bench_yield(int64_t n);                       /* yield.c */
int64_t bench_chan_pingpong(int64_t n);               /* chan.c */
int64_t bench_chan_buffered(int64_t n);               /* chan.c */
int64_t bench_chan_mpmc(int64_t n);                   /* chan.c */
int64_t bench_select2(int64_t n);                     /* chan.c */
int64_t bench_select2_buffered(int64_t n);            /* chan.c */
void bench_sleep(const struct bench_case *c);         /* sleep.c */
int64_t bench_fork_join(int64_t n);                   /* fib.c */
int64_t bench_fib_seq(int64_t n);                     /* fib.c */
int64_t bench_mutex(int64_t n);                       /* mutex.c */
int64_t bench_rwmutex(int64_t n);                     /* sync.c */
int64_t bench_map(int64_t n);                         /* sync.c */
int64_t bench_pool(int64_t n);                        /* sync.c */
void bench_cancel_fanout(const struct bench_case *c); /* sync.c */
void bench_mempark(const struct bench_case *c);       /* mempark.c */
void bench_mempark_floor(const struct bench_case *c); /* mempark.c */
int64_t bench_tcp_echo_rr(int64_t n);                 /* net.c */
int64_t bench_tcp_echo_stream(int64_t n);             /* net.c */
int64_t bench_pool_submit(int64_t n);                 /* workpool.c */
int64_t bench_pipeline3(int64_t n);                   /* pipeline.c */

#endif /* WEFT_BENCH_H */
