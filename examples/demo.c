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
 *  3. Channels, Go-style: a ping-pong over two unbuffered channels (the cost
 *     of a round trip); a pipeline in which a generator feeds a fan-out of
 *     workers whose results a collector fans in, with close carrying the end
 *     of the stream, timed with one P and with all of them against the same
 *     work done sequentially; and a select in which a weft_after() timeout
 *     races a slow producer.
 *  4. The runtime's counters (weft_stats_get()).
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
	int procs;       /* the "all Ps" run of parts 2 and 3; 0 means weft_procs() */
	long pings;      /* part 3: ping-pong round trips */
	long items;      /* part 3: numbers through the pipeline */
};

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
	        "usage: %s [--goroutines N] [--fib N] [--cutoff N] [--procs N]\n"
	        "          [--pings N] [--items N]\n"
	        "\n"
	        "A short tour of weft: many goroutines, a fork-join on all Ps against\n"
	        "the same work on one P and sequentially, channels (ping-pong, a\n"
	        "fan-out/fan-in pipeline, select with a timeout), and the runtime's\n"
	        "counters.\n"
	        "\n"
	        "  --goroutines N  how many goroutines part 1 parks at once (default 100000)\n"
	        "  --fib N         part 2 computes fib(N) (default 38)\n"
	        "  --cutoff N      ... with a goroutine for every call with n > N (default 20)\n"
	        "  --procs N       Ps for the parallel runs (default: weft_procs(), that is\n"
	        "                  WEFT_PROCS or the CPUs this process may use)\n"
	        "  --pings N       part 3's ping-pong round trips (default 200000)\n"
	        "  --items N       numbers through part 3's pipeline (default 200000)\n"
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
		{"--pings", 1, 100 * 1000 * 1000},
		{"--items", 1, 100 * 1000 * 1000},
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
		case 4: o->pings = v; break;
		case 5: o->items = v; break;
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
		char label[32];
		snprintf(label, sizeof label, "fork-join on %d Ps", all);
		printf("   %-22s %8.1f ms  (%.2fx faster than 1 P)\n", label, ms(par),
		       (double)one / (double)par);
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

/* (a) Ping-pong: main sends a number on ping, the ponger sends it back plus
 * one on pong. Both channels are unbuffered, so every round trip is two
 * rendezvous: each side parks until the other arrives. */
struct ping_pong {
	weft_chan *ping; /* main -> ponger; main closes it to end the game */
	weft_chan *pong; /* ponger -> main */
	weft_wg done;    /* the ponger has stopped using both channels */
};

void ponger(void *arg)
{
	struct ping_pong *pp = arg;
	int64_t v;

	/* Go: for v := range ping { pong <- v + 1 } */
	while (weft_chan_recv(pp->ping, &v) == 0) {
		v++;
		if (weft_chan_send(pp->pong, &v) != 0)
			break;
	}
	weft_wg_done(&pp->done);
}

static int ping_pong(long n)
{
	struct ping_pong pp = {0};
	int ok = 1, err;

	if ((err = weft_chan_make(&pp.ping, sizeof(int64_t), 0)) != 0)
		goto fail;
	if ((err = weft_chan_make(&pp.pong, sizeof(int64_t), 0)) != 0)
		goto fail_ping;
	weft_wg_add(&pp.done, 1);
	if ((err = weft_go(ponger, &pp)) != 0)
		goto fail_pong;

	int64_t t0 = weft_now();
	for (int64_t i = 0; i < n && ok; i++) {
		int64_t back;
		ok = weft_chan_send(pp.ping, &i) == 0 && weft_chan_recv(pp.pong, &back) == 0 &&
		     back == i + 1;
	}
	int64_t dt = weft_now() - t0;
	/* The ponger's receive returns EPIPE; once it says it is done, nobody
	 * uses the channels but us. */
	weft_chan_close(pp.ping);
	weft_wg_wait(&pp.done);
	weft_chan_release(pp.pong);
	weft_chan_release(pp.ping);

	printf("   (a) ping-pong over two unbuffered channels, %ld round trips\n", n);
	printf("      %.0f ns per round trip (%.1f ms)%s\n", (double)dt / (double)n, ms(dt),
	       ok ? "" : "  BUT A VALUE CAME BACK WRONG");
	return ok ? 0 : 1;

fail_pong:
	weft_chan_release(pp.pong);
fail_ping:
	weft_chan_release(pp.ping);
fail:
	fprintf(stderr, "   ping-pong: %s\n", strerror(err));
	return 1;
}

/* (b) A pipeline: generate -> fan-out to workers -> fan-in to a collector.
 * The end of the stream travels with close: the generator closes items, each
 * worker stops on EPIPE, and when the last worker is done the closer closes
 * results, which ends the collector's loop (Go's `go func() { wg.Wait();
 * close(out) }()`). */

#define WORK_ROUNDS 400 /* hash rounds per item: about half a microsecond */

/* The CPU work done per item: an integer hash applied WORK_ROUNDS times. */
static uint64_t work(uint64_t x)
{
	for (int i = 0; i < WORK_ROUNDS; i++)
		x = (x ^ (x >> 31)) * UINT64_C(0x9e3779b97f4a7c15);
	return x;
}

struct pipeline {
	weft_chan *items;   /* uint64_t, buffered: generator -> workers */
	weft_chan *results; /* uint64_t, buffered: workers -> collector */
	long n_items;
	weft_wg workers; /* the workers still running; the closer waits for them */
	weft_wg exited;  /* generator and closer; main waits before releasing */
};

void generate(void *arg)
{
	struct pipeline *pl = arg;

	for (uint64_t i = 1; i <= (uint64_t)pl->n_items; i++)
		if (weft_chan_send(pl->items, &i) != 0)
			break;
	weft_chan_close(pl->items);
	weft_wg_done(&pl->exited);
}

void work_items(void *arg)
{
	struct pipeline *pl = arg;
	uint64_t v;

	while (weft_chan_recv(pl->items, &v) == 0) {
		v = work(v);
		if (weft_chan_send(pl->results, &v) != 0)
			break;
	}
	weft_wg_done(&pl->workers);
}

void close_results(void *arg)
{
	struct pipeline *pl = arg;

	weft_wg_wait(&pl->workers);
	weft_chan_close(pl->results);
	weft_wg_done(&pl->exited);
}

/* Runs the pipeline with n_workers workers on procs Ps; *sum gets what the
 * collector added up. Returns the elapsed nanoseconds, or -1 on error. */
static int64_t pipeline_run(long n_items, int n_workers, int procs, uint64_t *sum)
{
	struct pipeline pl = {.n_items = n_items};
	int started = 0, err;

	weft_set_procs(procs, NULL);
	if ((err = weft_chan_make(&pl.items, sizeof(uint64_t), 256)) != 0)
		goto fail;
	if ((err = weft_chan_make(&pl.results, sizeof(uint64_t), 256)) != 0)
		goto fail_items;

	int64_t t0 = weft_now();
	/* The closer first: if it cannot start, nothing else has. */
	weft_wg_add(&pl.workers, n_workers);
	weft_wg_add(&pl.exited, 2);
	if ((err = weft_go(close_results, &pl)) != 0)
		goto fail_results;
	for (; started < n_workers; started++)
		if ((err = weft_go(work_items, &pl)) != 0)
			break;
	weft_wg_add(&pl.workers, -(n_workers - started));
	/* Without every worker, or without the generator, end the stream at
	 * once: everything started then winds down through the closes. */
	if (started < n_workers || (err = weft_go(generate, &pl)) != 0) {
		weft_chan_close(pl.items);
		weft_wg_done(&pl.exited);
	}

	/* The collector (fan-in): Go's `for r := range results { sum += r }`. */
	uint64_t r, s = 0;
	while (weft_chan_recv(pl.results, &r) == 0)
		s += r;
	weft_wg_wait(&pl.exited);
	int64_t dt = weft_now() - t0;

	weft_chan_release(pl.results);
	weft_chan_release(pl.items);
	if (err != 0) {
		fprintf(stderr, "   pipeline: weft_go: %s\n", strerror(err));
		return -1;
	}
	*sum = s;
	return dt;

fail_results:
	weft_chan_release(pl.results);
fail_items:
	weft_chan_release(pl.items);
fail:
	fprintf(stderr, "   pipeline: %s\n", strerror(err));
	return -1;
}

static int pipeline(const struct options *o)
{
	int all = o->procs > 0 ? o->procs : weft_procs();
	int saved = weft_procs();
	int n_workers = all * 2;
	uint64_t s_seq = 0, s_one = 0, s_all = 0;
	int ok = 1;

	printf("   (b) pipeline: a generator of 1..%ld, %d workers (fan-out) hashing each\n"
	       "       number %d times, one collector (fan-in) summing the results\n",
	       o->items, n_workers, WORK_ROUNDS);

	int64_t t0 = weft_now();
	for (uint64_t i = 1; i <= (uint64_t)o->items; i++)
		s_seq += work(i);
	int64_t seq = weft_now() - t0;
	printf("      sequential (plain C)   %8.1f ms\n", ms(seq));

	int64_t one = pipeline_run(o->items, n_workers, 1, &s_one);
	if (one >= 0)
		printf("      pipeline on 1 P        %8.1f ms  (%+.1f%% vs sequential)\n", ms(one),
		       100.0 * ((double)one / (double)seq - 1.0));
	ok &= one >= 0 && s_one == s_seq;

	if (all > 1) {
		int64_t par = pipeline_run(o->items, n_workers, all, &s_all);
		char label[32];
		snprintf(label, sizeof label, "pipeline on %d Ps", all);
		if (par >= 0 && one >= 0)
			printf("      %-22s %8.1f ms  (%.2fx faster than 1 P)\n", label, ms(par),
			       (double)one / (double)par);
		ok &= par >= 0 && s_all == s_seq;
	}
	weft_set_procs(saved, NULL);

	printf("      sum %#018llx%s\n", (unsigned long long)s_seq,
	       ok ? " (the same as the sequential sum)" : "  BUT THE PIPELINE'S SUMS DIFFER");
	return ok ? 0 : 1;
}

/* (c) Select with a timeout: a slow producer, and each round a fresh
 * weft_after() channel (Go's `case <-time.After(d):`) that wins whenever the
 * producer takes longer than d. */

#define SLOW_VALUES 3
#define SLOW_EVERY_NS (40 * WEFT_MILLISECOND)
#define SLOW_TIMEOUT_NS (25 * WEFT_MILLISECOND)

struct slow_producer {
	weft_chan *out; /* int64_t, unbuffered; closed after SLOW_VALUES values */
	weft_wg done;   /* the producer has stopped using out */
};

void produce_slowly(void *arg)
{
	struct slow_producer *sp = arg;

	for (int64_t i = 1; i <= SLOW_VALUES; i++) {
		weft_sleep(SLOW_EVERY_NS);
		if (weft_chan_send(sp->out, &i) != 0)
			break;
	}
	weft_chan_close(sp->out);
	weft_wg_done(&sp->done);
}

static int select_timeout(void)
{
	struct slow_producer sp = {0};
	int64_t want = 1; /* the value that should come next */
	int err, ok = 1;

	printf("   (c) select with a timeout: a value every %lld ms, or a %lld ms weft_after()\n",
	       (long long)(SLOW_EVERY_NS / WEFT_MILLISECOND),
	       (long long)(SLOW_TIMEOUT_NS / WEFT_MILLISECOND));
	if ((err = weft_chan_make(&sp.out, sizeof(int64_t), 0)) != 0)
		goto fail;
	weft_wg_add(&sp.done, 1);
	if ((err = weft_go(produce_slowly, &sp)) != 0)
		goto fail_out;

	int64_t t0 = weft_now();
	for (;;) {
		weft_chan *timeout;
		if ((err = weft_after(&timeout, SLOW_TIMEOUT_NS)) != 0)
			break; /* the producer cannot stop early: drained below */
		int64_t v;
		weft_case cases[] = {
			WEFT_RECV_CASE(sp.out, &v),
			WEFT_RECV_CASE(timeout, NULL),
		};
		int chosen;
		int rc = weft_select(cases, 2, &chosen);
		/* Releasing an unfired weft_after() channel stops its timer. */
		weft_chan_release(timeout);
		double at = ms(weft_now() - t0);
		if (rc != 0 && rc != EPIPE) {
			err = rc;
			break;
		}
		if (chosen == 1) {
			printf("      %6.1f ms  the timeout won: no value yet\n", at);
		} else if (rc == EPIPE) {
			printf("      %6.1f ms  the producer's channel won: closed (EPIPE), done\n",
			       at);
			break;
		} else {
			printf("      %6.1f ms  the producer's channel won: value %lld\n", at,
			       (long long)v);
			ok &= v == want++;
		}
	}
	while (weft_chan_recv(sp.out, NULL) == 0)
		;
	weft_wg_wait(&sp.done);
	weft_chan_release(sp.out);
	if (err != 0) {
		fprintf(stderr, "   select: %s\n", strerror(err));
		return 1;
	}
	ok &= want == SLOW_VALUES + 1;
	if (!ok)
		printf("      BUT THE VALUES DID NOT COME 1..%d IN ORDER\n", SLOW_VALUES);
	return ok ? 0 : 1;

fail_out:
	weft_chan_release(sp.out);
fail:
	fprintf(stderr, "   select: %s\n", strerror(err));
	return 1;
}

static int part_channels(const struct options *o)
{
	int rc = 0;

	printf("\n3. channels, Go-style\n");
	rc |= ping_pong(o->pings);
	rc |= pipeline(o);
	rc |= select_timeout();
	return rc;
}

/* ---------------------------------------------------------------- part 4 */

static void part_stats(void)
{
	weft_stats s;

	weft_stats_get(&s);
	printf("\n4. runtime counters (weft_stats_get)\n");
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
	rc |= part_channels(o);
	part_stats();
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = {.goroutines = 100000,
	                    .fib_n = 38,
	                    .cutoff = 20,
	                    .procs = 0,
	                    .pings = 200000,
	                    .items = 200000};

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	return weft_main(run, &o);
}
