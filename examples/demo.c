/* SPDX-License-Identifier: MIT */
/*
 * demo.c - `make demo`: a short tour of what weft does today.
 *
 *  1. Goroutines are cheap: start 100,000 of them, let them all park on a
 *     WaitGroup at once (memory per goroutine from the process's RSS), then
 *     release and join them.
 *  2. All cores busy: a fork-join computation (Fibonacci, with a goroutine for
 *     every call above a cutoff, joined with a WaitGroup), timed with one P
 *     and with all of them, against plain sequential recursion, with the share
 *     of the work each P did (weft_self_proc()).
 *  3. The runtime's counters (weft_stats_get()).
 *
 * It runs in a few seconds with no arguments; see --help for the knobs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

struct options {
	long goroutines; /* part 1 */
	int fib_n;       /* part 2: compute fib(fib_n) ... */
	int cutoff;      /* ... spawning a goroutine for every call with n > cutoff */
	int procs;       /* the "all Ps" run of part 2; 0 means weft_procs() */
};

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
	        "usage: %s [--goroutines N] [--fib N] [--cutoff N] [--procs N]\n"
	        "\n"
	        "A short tour of weft: many goroutines, a fork-join on all Ps against\n"
	        "the same work on one P and sequentially, and the runtime's counters.\n"
	        "\n"
	        "  --goroutines N  how many goroutines part 1 parks at once (default 100000)\n"
	        "  --fib N         part 2 computes fib(N) (default 38)\n"
	        "  --cutoff N      ... with a goroutine for every call with n > N (default 20)\n"
	        "  --procs N       Ps for the parallel run (default: weft_procs(), that is\n"
	        "                  WEFT_PROCS or the CPUs this process may use)\n"
	        "  -h, --help      this text\n",
	        prog);
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;

	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return EINVAL;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct {
		const char *flag;
		long min, max;
	} flags[] = {
		{"--goroutines", 0, 10 * 1000 * 1000},
		{"--fib", 1, 50},
		{"--cutoff", 1, 50},
		{"--procs", 1, WEFT_MAX_PROCS},
	};

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout, argv[0]);
			exit(0);
		}
		size_t f;
		for (f = 0; f < sizeof flags / sizeof flags[0]; f++)
			if (strcmp(argv[i], flags[f].flag) == 0)
				break;
		long v;
		if (f == sizeof flags / sizeof flags[0] || i + 1 == argc ||
		    parse_long(argv[i + 1], flags[f].min, flags[f].max, &v) != 0) {
			fprintf(stderr, "%s: bad argument '%s'%s\n", argv[0], argv[i],
			        f < sizeof flags / sizeof flags[0]
			                ? " (value missing or out of range)"
			                : "");
			usage(stderr, argv[0]);
			return EINVAL;
		}
		i++;
		switch (f) {
		case 0: o->goroutines = v; break;
		case 1: o->fib_n = (int)v; break;
		case 2: o->cutoff = (int)v; break;
		case 3: o->procs = (int)v; break;
		}
	}
	return 0;
}

static double ms(int64_t ns)
{
	return (double)ns / 1e6;
}

/* Resident memory of the process in bytes (from /proc/self/statm), 0 if unknown. */
static int64_t rss_bytes(void)
{
	long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%*s %ld", &pages) != 1)
		pages = 0;
	fclose(f);
	return (int64_t)pages * sysconf(_SC_PAGESIZE);
}

/* ---------------------------------------------------------------- part 1 */

struct crowd {
	weft_wg ready; /* each goroutine checks in before it parks */
	weft_wg gate;  /* counter 1 until main releases everyone */
	weft_wg done;
	atomic_long ran;
};

void crowd_member(void *arg)
{
	struct crowd *c = arg;

	weft_wg_done(&c->ready);
	weft_wg_wait(&c->gate);
	atomic_fetch_add_explicit(&c->ran, 1, memory_order_relaxed);
	weft_wg_done(&c->done);
}

static int part_many(long n)
{
	static struct crowd c;
	long started = 0;
	int err = 0;

	printf("\n1. %ld goroutines, all alive at once\n", n);
	int64_t rss0 = rss_bytes();
	int64_t t0 = weft_now();
	weft_wg_add(&c.gate, 1);
	weft_wg_add(&c.ready, n);
	weft_wg_add(&c.done, n);
	for (; started < n; started++) {
		err = weft_go(crowd_member, &c);
		if (err != 0)
			break;
	}
	if (started < n) {
		fprintf(stderr, "   weft_go failed after %ld goroutines: %s%s\n", started,
		        strerror(err), err == EAGAIN ? " (see vm.max_map_count)" : "");
		weft_wg_add(&c.ready, -(n - started));
		weft_wg_add(&c.done, -(n - started));
	}
	weft_wg_wait(&c.ready);
	int64_t t1 = weft_now();
	int64_t alive = weft_num_goroutines();
	int64_t rss1 = rss_bytes();

	weft_wg_done(&c.gate);
	weft_wg_wait(&c.done);
	int64_t t2 = weft_now();

	printf("   started and parked   %9.1f ms  (%.0f ns per goroutine)\n", ms(t1 - t0),
	       started ? (double)(t1 - t0) / (double)started : 0.0);
	printf("   alive while parked   %9lld     (weft_num_goroutines)\n", (long long)alive);
	if (rss0 > 0 && started > 0)
		printf("   memory               %9.1f MiB (%.1f KiB RSS per goroutine)\n",
		       (double)(rss1 - rss0) / (1 << 20),
		       (double)(rss1 - rss0) / 1024.0 / (double)started);
	printf("   released and joined  %9.1f ms  (%ld ran to the end)\n", ms(t2 - t1),
	       atomic_load(&c.ran));
	return started == n && atomic_load(&c.ran) == n ? 0 : 1;
}

/* ---------------------------------------------------------------- part 2 */

/* Work done per P, on separate cache lines so that counting does not itself
 * make the Ps contend. */
static struct {
	_Alignas(64) atomic_long leaves;
} per_p[WEFT_MAX_PROCS];

static int g_cutoff;
static atomic_long g_spawned;

static long fib_seq(int n)
{
	return n < 2 ? n : fib_seq(n - 1) + fib_seq(n - 2);
}

struct fib_task {
	int n;
	long result; /* written by the child before weft_wg_done() */
	weft_wg wg;
};

static long fib_par(int n);

void fib_task_run(void *arg)
{
	struct fib_task *t = arg;

	t->result = fib_par(t->n);
	weft_wg_done(&t->wg);
}

/* fib(n) with a goroutine for fib(n-1) while this one computes fib(n-2). The
 * task lives on this goroutine's stack, which is safe because this goroutine
 * waits for the child before returning. */
static long fib_par(int n)
{
	if (n <= g_cutoff) {
		long r = fib_seq(n);
		int p = weft_self_proc();
		if (p >= 0 && p < WEFT_MAX_PROCS)
			atomic_fetch_add_explicit(&per_p[p].leaves, 1, memory_order_relaxed);
		return r;
	}

	struct fib_task t = {.n = n - 1};
	weft_wg_add(&t.wg, 1);
	if (weft_go(fib_task_run, &t) == 0) {
		atomic_fetch_add_explicit(&g_spawned, 1, memory_order_relaxed);
	} else {
		t.result = fib_par(n - 1); /* no goroutine: do it here */
		weft_wg_done(&t.wg);
	}
	long b = fib_par(n - 2);
	weft_wg_wait(&t.wg);
	return t.result + b;
}

/* Runs fib_par(n) on `procs` Ps; returns the elapsed nanoseconds. */
static int64_t fork_join(int n, int procs, long *result)
{
	for (int p = 0; p < WEFT_MAX_PROCS; p++)
		atomic_store(&per_p[p].leaves, 0);
	atomic_store(&g_spawned, 0);
	weft_set_procs(procs, NULL);

	int64_t t0 = weft_now();
	*result = fib_par(n);
	return weft_now() - t0;
}

static void print_per_p(int procs)
{
	long total = 0;

	for (int p = 0; p < procs; p++)
		total += atomic_load(&per_p[p].leaves);
	printf("      work per P (leaf tasks):");
	for (int p = 0; p < procs; p++) {
		long l = atomic_load(&per_p[p].leaves);
		printf("%s P%d %ld (%.0f%%)", p ? "," : "", p, l,
		       total ? 100.0 * (double)l / (double)total : 0.0);
	}
	printf("\n");
}

static int part_fork_join(const struct options *o)
{
	int all = o->procs > 0 ? o->procs : weft_procs();
	int saved = weft_procs();
	long r_seq, r_one, r_all = 0;
	int ok = 1;

	g_cutoff = o->cutoff;
	printf("\n2. fork-join: fib(%d), a goroutine for every call with n > %d\n", o->fib_n,
	       o->cutoff);

	int64_t t0 = weft_now();
	r_seq = fib_seq(o->fib_n);
	int64_t seq = weft_now() - t0;
	printf("   sequential (plain C)   %8.1f ms\n", ms(seq));

	int64_t one = fork_join(o->fib_n, 1, &r_one);
	printf("   fork-join on 1 P       %8.1f ms  (%ld goroutines; %+.1f%% vs sequential)\n",
	       ms(one), atomic_load(&g_spawned), 100.0 * ((double)one / (double)seq - 1.0));
	print_per_p(1);
	ok &= r_one == r_seq;

	if (all > 1) {
		int64_t par = fork_join(o->fib_n, all, &r_all);
		printf("   fork-join on %d Ps     %8.1f ms  (%.2fx faster than 1 P)\n", all,
		       ms(par), (double)one / (double)par);
		print_per_p(all);
		ok &= r_all == r_seq;
	} else {
		printf("   only 1 P here: try --procs 2 or WEFT_PROCS=2 to see a parallel run\n");
	}
	weft_set_procs(saved, NULL);

	printf("   fib(%d) = %ld%s\n", o->fib_n, r_seq,
	       ok ? "" : "  BUT THE PARALLEL RESULTS DIFFER");
	return ok ? 0 : 1;
}

/* ---------------------------------------------------------------- part 3 */

static void part_stats(void)
{
	weft_stats s;

	weft_stats_get(&s);
	printf("\n3. runtime counters (weft_stats_get)\n");
	printf("   goroutines %lld, threads %lld, Ps %lld (%lld idle)\n", (long long)s.goroutines,
	       (long long)s.threads, (long long)s.procs, (long long)s.idle_procs);
	printf("   spawned %lld, switches %lld, steals %lld, parks %lld, hand-offs %lld\n",
	       (long long)s.spawned, (long long)s.switches, (long long)s.steals, (long long)s.parks,
	       (long long)s.handoffs);
	printf("   run queues now: global %lld, local %lld\n", (long long)s.global_runq,
	       (long long)s.local_runq);
}

static int run(void *arg)
{
	const struct options *o = arg;
	int rc = 0;

	printf("weft %s demo: %d P(s) (WEFT_PROCS, or the CPUs this process may use)\n",
	       weft_version(), weft_procs());
	if (o->goroutines > 0)
		rc |= part_many(o->goroutines);
	rc |= part_fork_join(o);
	part_stats();
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = {.goroutines = 100000, .fib_n = 38, .cutoff = 20, .procs = 0};

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	return weft_main(run, &o);
}
