/* SPDX-License-Identifier: MIT */
/*
 * main.c - weft-bench's driver: the flags (parsed the way Go's flag package
 * parses the reference suite's), the case table, the calibration shared by
 * every timed case (Go's runTimed) and the Go benchmark-format report.
 *
 * The program sets the number of Ps to --threads and then runs the chosen
 * case inside a goroutine started by weft_main(), since Go's main is a
 * goroutine too: the cases block on weft primitives as Go's main blocks on
 * channels and WaitGroups. Usage:
 *
 *   weft-bench --case NAME --threads T [--reps 5] [--target 700ms] [--n N]
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_flags bench_flags = {
	.case_name = "",
	.threads = 1,
	.reps = 5,
	.target_ns = 700 * BENCH_MS,
	.n = 0,
};

/*
 * The case table, in the order of the Go suite's switch.
 */
static const struct bench_case cases[] = {
	{.name = "Spawn", .q = 1000, .timed = bench_spawn},
	{.name = "Yield", .q = 2, .timed = bench_yield},
	{.name = "ChanPingPong", .q = 1, .timed = bench_chan_pingpong},
	{.name = "ChanBuffered", .q = 1, .timed = bench_chan_buffered},
	{.name = "ChanMPMC", .q = 4, .timed = bench_chan_mpmc},
	{.name = "Select2", .q = 2, .timed = bench_select2},
	{.name = "Select2Buffered", .q = 2, .timed = bench_select2_buffered},
	{.name = "MutexContended", .q = 8, .timed = bench_mutex},
	{.name = "RWMutexReadMostly", .q = 80, .timed = bench_rwmutex},
	{.name = "MapReadMostly", .q = 800, .timed = bench_map},
	{.name = "PoolGetPut", .q = 8, .timed = bench_pool},
	{.name = "Sleep", .run = bench_sleep},
	{.name = "CancelFanout", .run = bench_cancel_fanout},
	{.name = "MemPark100k", .run = bench_mempark, .arg = 100000},
	{.name = "MemPark1M", .run = bench_mempark, .arg = 1000000},
	{.name = "ForkJoin", .q = 1, .timed = bench_fork_join},
	{.name = "FibSeq", .q = 1, .timed = bench_fib_seq},
	{.name = "TCPEchoRR", .q = 64, .timed = bench_tcp_echo_rr},
	{.name = "TCPEchoStream", .q = 1, .timed = bench_tcp_echo_stream, .arg = 64 << 10},
	/* Patterns (bench/go/ holds their Go counterparts). */
	{.name = "PoolSubmit", .q = 8, .timed = bench_pool_submit},
	{.name = "Pipeline3", .q = 1, .timed = bench_pipeline3},
	/* The kernel's part of MemPark1M, without weft (mempark.c). */
	{.name = "MemParkFloor", .run = bench_mempark_floor},
	{.name = "MemParkFloorDense", .run = bench_mempark_floor, .arg = 1},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static const char *prog = "weft-bench";

/* ---------------------------------------------------------------- helpers */

void bench_fatal(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "weft-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void bench_check_go(int err, const char *file, int line)
{
	if (err != 0)
		bench_fatal("%s:%d: weft_go: %s", file, line, strerror(err));
}

void bench_report(const char *name, int64_t n, double ns_per_op, const char *extra)
{
	printf("Benchmark%s-%d\t%" PRId64 "\t%.2f ns/op%s\n", name, bench_flags.threads, n,
	       ns_per_op, extra ? extra : "");
	fflush(stdout);
}

int64_t bench_rss_bytes(void)
{
	char line[256];
	FILE *f;
	long long kb;

	f = fopen("/proc/self/status", "r");
	if (f == NULL)
		bench_fatal("/proc/self/status: %s", strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "VmRSS:", 6) == 0 && sscanf(line + 6, "%lld", &kb) == 1) {
			fclose(f);
			return (int64_t)kb * 1024;
		}
	}
	fclose(f);
	bench_fatal("no VmRSS in /proc/self/status");
}

/* round_up - n rounded up to a multiple of q, with Go's truncating division. */
static int64_t round_up(int64_t n, int64_t q)
{
	return (n + q - 1) / q * q;
}

/*
 * The calibration is Go's runTimed line for line, in the same floating-point
 * steps, so that both programs settle on the same kind of N. The one
 * departure: a zero duration at n >= 2^30 keeps n instead of dividing by zero
 * (Go would convert +Inf to an int there).
 */
void bench_run_timed(const char *name, int64_t q, bench_timed_fn f)
{
	bench_run_timed_mbs(name, q, 0, f);
}

void bench_run_timed_mbs(const char *name, int64_t q, int64_t bytes_per_op, bench_timed_fn f)
{
	int64_t n = bench_flags.n;
	int64_t d;
	double mult;
	int r;

	if (n == 0) {
		n = q;
		for (;;) {
			d = f(n);
			if (d >= 100 * BENCH_MS || n >= (INT64_C(1) << 30)) {
				if (d > 0)
					n = (int64_t)((double)n * (double)bench_flags.target_ns /
					              (double)d);
				break;
			}
			mult = 10.0;
			if (d > 0) {
				mult = (double)(150 * BENCH_MS) / (double)d;
				if (mult > 100)
					mult = 100;
				if (mult < 2)
					mult = 2;
			}
			n = (int64_t)((double)n * mult);
			n = round_up(n, q);
		}
	}
	n = round_up(n, q);
	if (n < q)
		n = q;
	for (r = 0; r < bench_flags.reps; r++) {
		d = f(n);
		char extra[64];
		if (bytes_per_op)
			snprintf(extra, sizeof extra, "\t%.1f MB/s",
				 (double)bytes_per_op * (double)n / 1e6 / ((double)d / 1e9));
		bench_report(name, n, (double)d / (double)n, bytes_per_op ? extra : NULL);
	}
}

/* ---------------------------------------------------------------- flags */

static void usage(FILE *out)
{
	size_t i;

	fprintf(out, "Usage of %s:\n", prog);
	fprintf(out, "  -case string\n    \tcase name (see list below)\n");
	fprintf(out, "  -n int\n    \tfixed op count (skips calibration)\n");
	fprintf(out, "  -reps int\n    \trepetitions (default 5)\n");
	fprintf(out, "  -target duration\n    \ttarget wall time per repetition (default 700ms)\n");
	fprintf(out, "  -threads int\n    \tGOMAXPROCS: the number of Ps (default 1)\n");
	fprintf(out, "cases:");
	for (i = 0; i < NCASES; i++)
		fprintf(out, " %s", cases[i].name);
	fputc('\n', out);
}

/* A flag error, as Go's flag.ExitOnError reports it: message, usage, exit 2. */
static void __attribute__((noreturn)) flag_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage(stderr);
	exit(2);
}

/* parse_int - Go's strconv.ParseInt(s, 0, 64): sign, 0x/0o/0b/0 prefixes. */
static int parse_int(const char *s, int64_t *out)
{
	char buf[128];
	const char *p = s;
	char *end;
	size_t j = 0;
	int base = 10;
	int neg = 0;
	long long v;

	/* Go allows '_' between digits when the base comes from the prefix. */
	for (; *p != '\0' && j + 1 < sizeof(buf); p++)
		if (*p != '_')
			buf[j++] = *p;
	if (*p != '\0' || j == 0)
		return EINVAL;
	buf[j] = '\0';
	p = buf;
	if (*p == '+' || *p == '-')
		neg = *p++ == '-';
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	} else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O')) {
		base = 8;
		p += 2;
	} else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
		base = 2;
		p += 2;
	} else if (p[0] == '0' && p[1] != '\0') {
		base = 8;
		p += 1;
	}
	if (*p == '\0' || *p == '+' || *p == '-')
		return EINVAL;
	errno = 0;
	v = strtoll(p, &end, base);
	if (*end != '\0')
		return EINVAL;
	if (errno == ERANGE)
		return ERANGE;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/*
 * parse_duration - Go's time.ParseDuration: an optional sign, then one or more
 * decimal numbers each with a unit (ns, us, µs, μs, ms, s, m, h), as in
 * "700ms", "1.5s" or "1m30s"; a bare "0" is allowed.
 */
static int parse_duration(const char *s, int64_t *out)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{"ns", 1},   {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3},
		{"ms", 1e6}, {"s", 1e9},  {"m", 60e9},        {"h", 3600e9},
	};
	const char *p = s;
	double total = 0;
	int neg = 0;

	if (*p == '+' || *p == '-')
		neg = *p++ == '-';
	if (strcmp(p, "0") == 0) {
		*out = 0;
		return 0;
	}
	if (*p == '\0')
		return EINVAL;
	while (*p != '\0') {
		const char *num = p;
		const char *u;
		double v;
		size_t ulen, i;
		int digits = 0;

		while (*p >= '0' && *p <= '9') {
			p++;
			digits++;
		}
		if (*p == '.') {
			p++;
			while (*p >= '0' && *p <= '9') {
				p++;
				digits++;
			}
		}
		if (digits == 0)
			return EINVAL;
		v = strtod(num, NULL);
		u = p;
		while (*p != '\0' && *p != '.' && (*p < '0' || *p > '9'))
			p++;
		ulen = (size_t)(p - u);
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].unit) == ulen && memcmp(units[i].unit, u, ulen) == 0)
				break;
		if (ulen == 0 || i == sizeof(units) / sizeof(units[0]))
			return EINVAL;
		total += v * units[i].ns;
	}
	if (total > (double)INT64_MAX)
		return ERANGE;
	*out = neg ? -(int64_t)total : (int64_t)total;
	return 0;
}

static void set_flag(const char *name, const char *value)
{
	int64_t v;
	int err = 0;

	if (strcmp(name, "case") == 0) {
		bench_flags.case_name = value;
	} else if (strcmp(name, "threads") == 0 || strcmp(name, "reps") == 0) {
		err = parse_int(value, &v);
		if (err == 0 && (v < INT_MIN || v > INT_MAX))
			err = ERANGE;
		if (err == 0 && name[0] == 't')
			bench_flags.threads = (int)v;
		else if (err == 0)
			bench_flags.reps = (int)v;
	} else if (strcmp(name, "n") == 0) {
		err = parse_int(value, &v);
		if (err == 0)
			bench_flags.n = v;
	} else {
		err = parse_duration(value, &v);
		if (err == 0)
			bench_flags.target_ns = v;
	}
	if (err != 0)
		flag_error("invalid value \"%s\" for flag -%s: %s", value, name,
		           err == ERANGE ? "value out of range" : "parse error");
}

/*
 * parse_flags - Go's flag.Parse: "-name value", "-name=value", and the same
 * with two dashes; parsing stops at "--" or at the first argument that is not
 * a flag (the rest are ignored, as the Go program ignores them).
 */
static void parse_flags(int argc, char **argv)
{
	static const char *const known[] = {"case", "threads", "reps", "target", "n"};
	int i = 1;

	if (argc > 0 && argv[0] != NULL)
		prog = argv[0];
	while (i < argc) {
		const char *s = argv[i];
		const char *name, *eq, *value;
		char buf[64];
		size_t len, k;

		if (strlen(s) < 2 || s[0] != '-')
			break;
		name = s + 1;
		if (name[0] == '-') {
			name++;
			if (name[0] == '\0') {
				i++;
				break;
			}
		}
		if (name[0] == '\0' || name[0] == '-' || name[0] == '=')
			flag_error("bad flag syntax: %s", s);
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		memcpy(buf, name, len);
		buf[len] = '\0';
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strcmp(buf, known[k]) == 0)
				break;
		if (k == sizeof(known) / sizeof(known[0])) {
			if (strcmp(buf, "h") == 0 || strcmp(buf, "help") == 0) {
				usage(stderr);
				exit(0);
			}
			flag_error("flag provided but not defined: -%s", buf);
		}
		i++;
		if (eq != NULL) {
			value = eq + 1;
		} else {
			if (i >= argc)
				flag_error("flag needs an argument: -%s", buf);
			value = argv[i++];
		}
		set_flag(buf, value);
	}
}

/* ---------------------------------------------------------------- main */

static int bench_main(void *arg)
{
	const struct bench_case *c = arg;

	if (c->timed != NULL)
		bench_run_timed_mbs(c->name, c->q, c->arg, c->timed);
	else
		c->run(c);
	return 0;
}

int main(int argc, char **argv)
{
	const struct bench_case *c = NULL;
	size_t i;
	int err;

	parse_flags(argc, argv);
	for (i = 0; i < NCASES; i++)
		if (strcmp(cases[i].name, bench_flags.case_name) == 0)
			c = &cases[i];
	if (c == NULL) {
		fprintf(stderr, "cases:");
		for (i = 0; i < NCASES; i++)
			fprintf(stderr, " %s", cases[i].name);
		fputc('\n', stderr);
		return 2;
	}
	/*
	 * Go's GOMAXPROCS(T) ignores T < 1; weft rejects a count outside
	 * 1..WEFT_MAX_PROCS, and so does this program, rather than run with a
	 * number of Ps that the output line would misstate.
	 */
	err = weft_set_procs(bench_flags.threads, NULL);
	if (err != 0) {
		fprintf(stderr, "weft-bench: --threads %d: %s (1..%d)\n", bench_flags.threads,
		        strerror(err), WEFT_MAX_PROCS);
		return 2;
	}
	return weft_main(bench_main, (void *)c);
}
