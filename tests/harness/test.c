/* SPDX-License-Identifier: MIT */
/*
 * test.c - main() of every test executable: runs the registered TESTs, each in
 * a forked process by default, checks for leaked goroutines after each, runs
 * CHILD functions for test_child_run(), and prints "N passed, N failed".
 * See test.h for the command line and the environment.
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_TESTS 256
#define SKIP_STATUS 77

struct test_entry {
	const char *name;
	void (*fn)(void);
	enum test_kind kind;
	const char *file;
	int line;
};

struct child_entry {
	const char *name;
	int (*fn)(void);
};

static struct test_entry tests[MAX_TESTS];
static int n_tests;
static struct child_entry children[MAX_TESTS];
static int n_children;

/* The test running in this process, and whether we are a forked child. */
static const char *current_name = "";
static bool in_fork_child;
static bool no_fork;
static atomic_int skipped;
static char skip_reason[256];
static int passed_before; /* tests passed so far (no-fork mode) */

void test__register(const char *name, void (*fn)(void), enum test_kind kind,
		    const char *file, int line)
{
	if (n_tests == MAX_TESTS) {
		fprintf(stderr, "test harness: too many tests\n");
		abort();
	}
	tests[n_tests++] = (struct test_entry){ name, fn, kind, file, line };
}

void test__register_child(const char *name, int (*fn)(void))
{
	if (n_children == MAX_TESTS) {
		fprintf(stderr, "test harness: too many children\n");
		abort();
	}
	children[n_children++] = (struct child_entry){ name, fn };
}

const char *test_name(void)
{
	return current_name;
}

char *test_dump(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ASSERT(f != NULL);
	weft_dump(f);
	fclose(f);
	return buf;
}

/* ---------------------------------------------------------------- environment */

static bool env_has(const char *var, const char *word)
{
	const char *v = getenv(var);
	size_t n = strlen(word);
	while (v && *v) {
		if (strncmp(v, word, n) == 0 && (v[n] == 0 || v[n] == ','))
			return true;
		v = strchr(v, ',');
		if (v)
			v++;
	}
	return false;
}

bool test_chaos(void)
{
	return env_has("WEFT_DEBUG", "chaos");
}

int test_slowdown(void)
{
	const char *s = getenv("WEFT_TEST_SLOWDOWN");
	if (s && atoi(s) > 0)
		return atoi(s);
	int f = 1;
	if (TEST_TSAN)
		f = 8;
	else if (TEST_ASAN)
		f = 4;
	if (test_chaos())
		f *= 2;
	return f;
}

bool test_emulated(void)
{
	const char *s = getenv("WEFT_TEST_EXEC");
	return s && *s;
}

bool test_quick(void)
{
	const char *s = getenv("WEFT_TEST_QUICK");
	if (s && *s && strcmp(s, "0") != 0)
		return true;
	return TEST_TSAN || TEST_ASAN || test_emulated();
}

int test_host_threads(void)
{
	/* The last entry wins, as in the runtime's parser. */
	const char *d = getenv("WEFT_DEBUG");
	int n = 0;
	for (const char *h = d; h && (h = strstr(h, "hostthreads=")); h += 12)
		if (h == d || h[-1] == ',')
			n = atoi(h + 12);
	return n;
}

int test_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) != 0)
		return 1;
	return CPU_COUNT(&set);
}

/* ---------------------------------------------------------------- helpers */

int64_t test_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int test_gettid(void)
{
	return (int)syscall(SYS_gettid);
}

long test_vm_size(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

void test_os_sleep_ms(int64_t ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

void test_spin_ns(int64_t ns)
{
	int64_t end = test_now_ns() + ns;
	while (test_now_ns() < end) {
	}
}

/* ---------------------------------------------------------------- failing */

static __attribute__((noreturn)) void end_failed(void)
{
	fflush(stdout);
	fflush(stderr);
	if (no_fork && !in_fork_child)
		printf("%d passed, 1 failed\n", passed_before);
	fflush(stdout);
	/* _exit: other goroutines may still be running; exit handlers would
	 * race with them and could mask the failure. */
	_exit(1);
}

void test__fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	flockfile(stderr);
	fprintf(stderr, "FAIL %s: %s:%d: ", current_name, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	end_failed();
}

void test__fail_cmp(const char *file, int line, const char *a, const char *op,
		    const char *b, int64_t va, int64_t vb)
{
	test__fail(file, line, "expected %s %s %s, got %lld %s %lld", a, op, b,
		   (long long)va, op, (long long)vb);
}

void test__fail_str(const char *file, int line, const char *what,
		    const char *hay, const char *hay_expr, const char *needle)
{
	test__fail(file, line,
		   "expected %s %s \"%s\"\n--- %s ---\n%s\n--- end ---",
		   hay_expr, what, needle, hay_expr, hay ? hay : "(null)");
}

void test__fail_duration(const char *file, int line, const char *expr,
			 int64_t elapsed_ns, double expected_ms,
			 double tolerance_ms, int slowdown)
{
	test__fail(file, line,
		   "%s = %.3f ms, expected %.1f ms (-%.1f, +%.1f x slowdown %d)",
		   expr, (double)elapsed_ns / 1e6, expected_ms, tolerance_ms,
		   tolerance_ms, slowdown);
}

void test__skip(const char *why)
{
	snprintf(skip_reason, sizeof skip_reason, "%s", why);
	atomic_store(&skipped, 1);
}

/* ---------------------------------------------------------------- children */

static void buf_append(char **buf, size_t *len, size_t *cap, const char *p,
		       size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap * 2 : 4096;
		while (c < *len + n + 1)
			c *= 2;
		char *nb = realloc(*buf, c);
		if (!nb) {
			fprintf(stderr, "test harness: out of memory\n");
			abort();
		}
		*buf = nb;
		*cap = c;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = 0;
}

/* Build the child's environment: ours, with env's entries replacing or
 * adding. Allocated before fork(): only async-signal-safe calls after it. */
static char **child_environ(const char *const *env)
{
	size_t n = 0, m = 0;
	while (environ[n])
		n++;
	while (env && env[m])
		m++;
	char **e = calloc(n + m + 1, sizeof *e);
	if (!e)
		abort();
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
		bool replaced = false;
		for (size_t j = 0; j < m; j++)
			if (strncmp(env[j], environ[i], klen) == 0 &&
			    env[j][klen] == '=')
				replaced = true;
		if (!replaced)
			e[k++] = environ[i];
	}
	for (size_t j = 0; j < m; j++)
		e[k++] = (char *)env[j];
	e[k] = NULL;
	return e;
}

static void describe(test_child *c)
{
	if (c->timed_out && c->exited)
		snprintf(c->desc, sizeof c->desc,
			 "timed out (then exited with status %d)", c->exit_code);
	else if (c->timed_out)
		snprintf(c->desc, sizeof c->desc, "timed out (killed by signal %d)",
			 c->signo);
	else if (c->exited)
		snprintf(c->desc, sizeof c->desc, "exited with status %d",
			 c->exit_code);
	else if (c->signaled)
		snprintf(c->desc, sizeof c->desc, "killed by signal %d (%s)",
			 c->signo, strsignal(c->signo));
	else
		snprintf(c->desc, sizeof c->desc, "ended oddly");
}

/*
 * The child's argv: /proc/self/exe --child name, behind the command prefix in
 * WEFT_TEST_EXEC if set (words split at spaces). A test built for another
 * architecture runs under an emulator (qemu-aarch64 -L SYSROOT: the aarch64
 * test preset sets it); the emulator's execve is the host's, so the child
 * must start under the emulator too, by the binary's real path (read into
 * exe). Built before the fork: the child of a threaded process may not
 * allocate.
 */
static char **child_argv(const char *name, char **words_out, char *exe, size_t exe_size)
{
	const char *wrap = getenv("WEFT_TEST_EXEC");
	char *words = strdup(wrap && *wrap ? wrap : "");
	*words_out = words;
	size_t n = 0;
	for (char *p = words; *p; p++)
		if (*p != ' ' && (p == words || p[-1] == ' '))
			n++;
	char **argv = calloc(n + 4, sizeof *argv);
	if (!words || !argv)
		abort();
	size_t k = 0;
	for (char *save = NULL, *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save))
		argv[k++] = w;
	if (k) {
		ssize_t len = readlink("/proc/self/exe", exe, exe_size - 1);
		if (len <= 0)
			FAIL("readlink /proc/self/exe: %s", strerror(errno));
		exe[len] = 0;
		argv[k++] = exe;
	} else {
		argv[k++] = "/proc/self/exe";
	}
	argv[k++] = "--child";
	argv[k++] = (char *)name;
	argv[k] = NULL;
	return argv;
}

void test_child_run(const char *name, const char *const *env, int timeout_ms,
		    test_child *c)
{
	int po[2], pe[2];
	char *words, exe[4096];
	char **argv = child_argv(name, &words, exe, sizeof exe);
	char **envp = child_environ(env);
	bool on_goroutine = weft_self_id() != 0;

	memset(c, 0, sizeof *c);
	if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0)
		FAIL("pipe2: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		FAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		execvpe(argv[0], argv, envp);
		_exit(127);
	}
	free(words);
	free(argv);
	free(envp);
	close(po[1]);
	close(pe[1]);

	/* Reading the pipes and waiting block this OS thread: tell weft. */
	if (on_goroutine)
		weft_blocking_begin();
	size_t olen = 0, ocap = 0, elen = 0, ecap = 0;
	int64_t deadline = test_now_ns() +
			   (int64_t)timeout_ms * test_slowdown() * TEST_MS;
	int64_t kill_at = 0;
	int open_fds = 2;
	struct pollfd pfd[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
	buf_append(&c->out, &olen, &ocap, "", 0);
	buf_append(&c->err, &elen, &ecap, "", 0);
	while (open_fds > 0) {
		int64_t now = test_now_ns();
		if (!c->timed_out && now >= deadline) {
			c->timed_out = true;
			kill(pid, SIGQUIT);
			kill_at = now + 1000 * TEST_MS;
		}
		if (c->timed_out && kill_at && now >= kill_at) {
			kill(pid, SIGKILL);
			kill_at = 0;
		}
		int r = poll(pfd, 2, 50);
		if (r < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char tmp[4096];
			ssize_t n = read(pfd[i].fd, tmp, sizeof tmp);
			if (n > 0) {
				if (i == 0)
					buf_append(&c->out, &olen, &ocap, tmp, (size_t)n);
				else
					buf_append(&c->err, &elen, &ecap, tmp, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open_fds--;
			}
		}
	}
	int status = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			break;
		if (test_now_ns() >= deadline + 2000 * TEST_MS) {
			c->timed_out = true;
			kill(pid, SIGKILL);
		}
		test_os_sleep_ms(2);
	}
	if (on_goroutine)
		weft_blocking_end();

	if (WIFEXITED(status)) {
		c->exited = true;
		c->exit_code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		c->signaled = true;
		c->signo = WTERMSIG(status);
	}
	describe(c);
}

void test_child_free(test_child *c)
{
	free(c->out);
	free(c->err);
	c->out = c->err = NULL;
}

/* ---------------------------------------------------------------- running */

static int goroutine_body(void *arg)
{
	struct test_entry *t = arg;
	t->fn();
	return 0;
}

/* Run one test in this process, then the leak check. Returns normally only
 * when it passed or skipped; a failure ends the process. */
static void run_here(struct test_entry *t)
{
	current_name = t->name;
	atomic_store(&skipped, 0);
	int64_t base = weft_num_goroutines();

	if (t->kind == TEST_KIND_GOROUTINE) {
		int r = weft_main(goroutine_body, t);
		if (r != 0)
			FAIL("weft_main returned %d", r);
	} else {
		t->fn();
	}

	/* Leak check: every goroutine the test started must be gone. The count
	 * may lag an exit briefly (the last goroutine's exit is accounted after
	 * its switch away), hence the bounded wait. */
	int64_t deadline = test_now_ns() + 2000 * TEST_MS * test_slowdown();
	int64_t n;
	while ((n = weft_num_goroutines()) != base && test_now_ns() < deadline)
		test_os_sleep_ms(1);
	if (n != base) {
		fprintf(stderr, "FAIL %s: goroutine leak: %lld goroutines alive "
				"after the test, %lld before; dump:\n",
			t->name, (long long)n, (long long)base);
		weft_dump(stderr);
		end_failed();
	}
}

static int run_forked(struct test_entry *t, int64_t *elapsed_ns)
{
	int64_t t0 = test_now_ns();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return -1;
	}
	if (pid == 0) {
		in_fork_child = true;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		run_here(t);
		fflush(stdout);
		if (atomic_load(&skipped)) {
			printf("SKIP %s: %s\n", t->name, skip_reason);
			fflush(stdout);
			exit(SKIP_STATUS);
		}
		/* exit(), not _exit(): a program that returns from main while
		 * weft runs must exit cleanly, and LeakSanitizer runs here. */
		exit(0);
	}

	int timeout_s = 20;
	const char *s = getenv("TEST_TIMEOUT_S");
	if (s && atoi(s) > 0)
		timeout_s = atoi(s);
	int64_t deadline = t0 + (int64_t)timeout_s * 1000 * TEST_MS * test_slowdown();
	int status = 0;
	bool quit_sent = false, timed_out = false;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			perror("waitpid");
			return -1;
		}
		int64_t now = test_now_ns();
		if (now >= deadline && !quit_sent) {
			fprintf(stderr, "FAIL %s: timed out after %d s; SIGQUIT "
					"for a goroutine dump:\n",
				t->name, timeout_s * test_slowdown());
			kill(pid, SIGQUIT);
			quit_sent = timed_out = true;
		} else if (quit_sent && now >= deadline + 2000 * TEST_MS) {
			kill(pid, SIGKILL);
		}
		struct timespec ts = { 0, 2 * 1000000 };
		nanosleep(&ts, NULL);
	}
	*elapsed_ns = test_now_ns() - t0;
	if (timed_out)
		return 1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_STATUS)
		return 2;
	if (WIFEXITED(status))
		fprintf(stderr, "FAIL %s: exited with status %d\n", t->name,
			WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fprintf(stderr, "FAIL %s: killed by signal %d (%s)\n", t->name,
			WTERMSIG(status), strsignal(WTERMSIG(status)));
	return 1;
}

static int by_site(const void *a, const void *b)
{
	const struct test_entry *x = a, *y = b;
	int c = strcmp(x->file, y->file);
	return c ? c : x->line - y->line;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (argc >= 3 && strcmp(argv[1], "--child") == 0) {
		for (int i = 0; i < n_children; i++)
			if (strcmp(children[i].name, argv[2]) == 0)
				return children[i].fn();
		fprintf(stderr, "test harness: no child named %s\n", argv[2]);
		return 126;
	}

	qsort(tests, (size_t)n_tests, sizeof tests[0], by_site);
	if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
		for (int i = 0; i < n_tests; i++)
			printf("%s\n", tests[i].name);
		return 0;
	}

	bool selected[MAX_TESTS] = { 0 };
	for (int a = 1; a < argc; a++) {
		bool found = false;
		for (int i = 0; i < n_tests; i++)
			if (strcmp(tests[i].name, argv[a]) == 0)
				selected[i] = found = true;
		if (!found) {
			fprintf(stderr, "test harness: no test named %s\n", argv[a]);
			return 2;
		}
	}
	const char *nf = getenv("TEST_NOFORK");
	no_fork = nf && *nf && strcmp(nf, "0") != 0;

	int passed = 0, failed = 0;
	for (int i = 0; i < n_tests; i++) {
		if (argc >= 2 && !selected[i])
			continue;
		struct test_entry *t = &tests[i];
		int64_t elapsed = 0;
		int r;
		if (no_fork) {
			passed_before = passed;
			int64_t t0 = test_now_ns();
			run_here(t);
			elapsed = test_now_ns() - t0;
			r = atomic_load(&skipped) ? 2 : 0;
			if (r == 2)
				printf("SKIP %s: %s\n", t->name, skip_reason);
		} else {
			r = run_forked(t, &elapsed);
		}
		if (r == 0 || r == 2) {
			passed++;
			printf("%s %s (%.1f ms)\n", r == 0 ? "ok  " : "skip",
			       t->name, (double)elapsed / 1e6);
		} else {
			failed++;
			printf("FAIL %s (%.1f ms)\n", t->name, (double)elapsed / 1e6);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

/* ---------------------------------------------------------------- helpers */

struct thread_start {
	weft_fn fn;
	void *arg;
};

static void *thread_main(void *p)
{
	struct thread_start s = *(struct thread_start *)p;
	free(p);
	s.fn(s.arg);
	return NULL;
}

void test_start_thread(pthread_t *th, weft_fn fn, void *arg)
{
	struct thread_start *s = malloc(sizeof *s);
	ASSERT(s != NULL);
	*s = (struct thread_start){ fn, arg };
	ASSERT_EQ(pthread_create(th, NULL, thread_main, s), 0);
}

void test_join_thread(pthread_t th)
{
	weft_blocking_begin();
	pthread_join(th, NULL);
	weft_blocking_end();
}

/* ---------------------------------------------------------------- weft checks */

#define CHECK_POLL_NS ((int64_t)5000 * TEST_MS)

void test__expect_goroutines(const char *file, int line, int64_t base)
{
	int64_t deadline = test_now_ns() + CHECK_POLL_NS * test_slowdown();
	while (weft_num_goroutines() != base && test_now_ns() < deadline)
		weft_sleep(TEST_MS);
	int64_t n = weft_num_goroutines();
	if (n != base) {
		weft_dump(stderr);
		test__fail(file, line, "%lld goroutines, expected %lld (dump above)", (long long)n,
			   (long long)base);
	}
}

void test__expect_all_freed(const char *file, int line)
{
	int64_t deadline = test_now_ns() + CHECK_POLL_NS * test_slowdown();
	weft_stats st;
	for (;;) {
		weft_stats_get(&st);
		if ((st.contexts == 0 && st.channels == 0) || test_now_ns() > deadline)
			break;
		weft_sleep(TEST_MS);
	}
	if (st.contexts != 0 || st.channels != 0)
		test__fail(file, line, "not freed: %lld contexts, %lld channels",
			   (long long)st.contexts, (long long)st.channels);
}

void test__expect_fatal(const char *file, int line, const char *child, const char *const *env,
			int timeout_ms, const char *msg)
{
	test_child c;
	test_child_run(child, env, timeout_ms, &c);
	if (c.out && strstr(c.out, "survived"))
		test__fail(file, line, "child %s survived its misuse\n--- child stdout ---\n%s",
			   child, c.out);
	if (c.timed_out || !c.signaled || c.signo != SIGABRT)
		test__fail(file, line,
			   "child %s %s, expected death by SIGABRT\n"
			   "--- child stderr ---\n%s--- end ---",
			   child, c.desc, c.err ? c.err : "");
	if (!c.err || !strstr(c.err, "fatal error") || !strstr(c.err, msg))
		test__fail(file, line,
			   "child %s: stderr lacks \"fatal error\" or \"%s\"\n"
			   "--- child stderr ---\n%s--- end ---",
			   child, msg, c.err ? c.err : "");
	test_child_free(&c);
}
