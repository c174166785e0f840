/* SPDX-License-Identifier: MIT */
/*
 * 22_file_hasher.c - a parallel file hasher: the SHA-256 of every file under
 * the given paths, N files at a time, printed like sha256sum, with
 * weft_pipeline and OpenSSL's libcrypto (the EVP digest API).
 *
 *   source  walks the paths (directories recursively, in name order) and
 *           emits each file: a value item holding a heap-allocated path
 *           (the item owns it; the pipeline's drop frees it if it stops
 *           first) and its place in the walk
 *   hash    N goroutines (--workers, default 4): weft_open + weft_read in
 *           64 KiB chunks (regular files go through weft's blocking path, at
 *           most weft_max_blocking() at once, so a slow disk stalls no other
 *           goroutine) into EVP_DigestUpdate; an ordered stage, so results
 *           come out in walk order although the workers finish out of order
 *   sink    prints "<hex>  <path>" as sha256sum does (a file that cannot be
 *           read is reported on stderr, like sha256sum, and the run goes on)
 *
 * Go's equivalent is the "bounded parallelism" program of the "Pipelines and
 * cancellation" article (a walker goroutine, a fixed number of digesters,
 * results merged), with crypto/sha256 where C uses a well-kept library.
 *
 * Then it checks itself: a sequential pass (plain read(2) and the same
 * digest, one file after the other) must give the same digests and errors,
 * and so must the sha256sum program when it is installed.
 *
 * Without paths it hashes a tree it generates in a temporary directory (a
 * few hundred files from 0 bytes to 2 MiB) and removes it afterwards.
 *
 * libcrypto and goroutines: a goroutine may move to another thread at any
 * weft call, and OpenSSL keeps some per-thread state (its error queue). No
 * weft call happens inside an OpenSSL call, and nothing here holds on to
 * OpenSSL's thread state across weft calls, so this is safe.
 *
 * Run: ./22_file_hasher [--workers N] [--quiet] [PATH...]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <weft.h>

#define CHUNK (64 * 1024)
#define DIGEST 32

extern char **environ;

/* The digest. OpenSSL 3 looks an algorithm up on every init that names it
 * with EVP_sha256(); fetching it once avoids that. */
static const EVP_MD *sha256;

/* ---------------------------------------------------------------- hashing */

/* A file to hash: a value item that owns path. n is its place in the walk. */
struct file {
	char *path;
	long n;
};

/* The result of one file: a value item. It owns path. */
struct result {
	char *path;
	long n;
	int err; /* 0, or why the file could not be read */
	unsigned char md[DIGEST];
};

static void free_file(void *arg, void *item)
{
	(void)arg;
	free(((struct file *)item)->path);
}

static void free_result(void *arg, void *item)
{
	(void)arg;
	free(((struct result *)item)->path);
}

/* Stage "hash": file -> result. The path moves into the result. */
static int hash_file(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)arg;
	struct result *r = out;
	const struct file *in_file = in;
	*r = (struct result){.path = in_file->path, .n = in_file->n};
	weft_fd *f = NULL;
	unsigned char *buf = malloc(CHUNK);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!buf || !md || !EVP_DigestInit_ex(md, sha256, NULL)) {
		free(buf);
		EVP_MD_CTX_free(md);
		free(r->path); /* a failing map still owns its input: free it */
		return ENOMEM; /* fails the whole pipeline */
	}
	r->err = weft_open(r->path, O_RDONLY | O_CLOEXEC, 0, &f);
	while (r->err == 0) {
		size_t n;
		/* The _ctx form: a cancelled pipeline stops a long file. */
		r->err = weft_read_ctx(ctx, f, buf, CHUNK, &n);
		if (r->err != 0 || n == 0)
			break;
		EVP_DigestUpdate(md, buf, n);
	}
	if (r->err == 0) {
		unsigned int len = DIGEST;
		EVP_DigestFinal_ex(md, r->md, &len);
	}
	if (f)
		weft_fd_close(f);
	EVP_MD_CTX_free(md);
	free(buf);
	/* A file we cannot read is a result, not a failure of the pipeline;
	 * a cancellation is (and then *out is not passed on: free the path). */
	if (r->err == ECANCELED || r->err == ETIMEDOUT) {
		free(r->path);
		return r->err;
	}
	return 0;
}

/* The same digest the plain way, for the check. */
static int hash_plain(const char *path, unsigned char md_out[DIGEST])
{
	unsigned char *buf = malloc(CHUNK);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int err = 0;
	if (!buf || !md || !EVP_DigestInit_ex(md, sha256, NULL))
		err = ENOMEM;
	int fd = err ? -1 : open(path, O_RDONLY | O_CLOEXEC);
	if (err == 0 && fd < 0)
		err = errno;
	while (err == 0) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)n);
	}
	if (err == 0) {
		unsigned int len = DIGEST;
		EVP_DigestFinal_ex(md, md_out, &len);
	}
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(md);
	free(buf);
	return err;
}

/* ---------------------------------------------------------------- walking */

struct walk {
	int npaths;
	char **paths;
	long files;
};

/* Emit every regular file under path (sorted by name). scandir and stat are
 * plain system calls that may block: bracketed as weft asks, and never
 * around an emit (which may park the goroutine). */
static int walk(weft_pipeline_emitter *em, struct walk *w, const char *path, int depth)
{
	struct stat st;
	struct dirent **names = NULL;
	int n = -1, err = 0;

	weft_blocking_begin();
	bool ok = lstat(path, &st) == 0;
	if (ok && S_ISDIR(st.st_mode) && depth < 32)
		n = scandir(path, &names, NULL, alphasort);
	weft_blocking_end();
	if (!ok) {
		fprintf(stderr, "22_file_hasher: %s: %s\n", path, strerror(errno));
		return 0;
	}
	if (S_ISREG(st.st_mode)) {
		struct file f = {.path = strdup(path), .n = w->files};
		if (!f.path)
			return ENOMEM;
		w->files++;
		return weft_pipeline_emit(em, &f); /* f.path is the pipeline's now */
	}
	for (int i = 0; i < n; i++) {
		const char *d = names[i]->d_name;
		char sub[PATH_MAX];
		if (err == 0 && strcmp(d, ".") != 0 && strcmp(d, "..") != 0 &&
		    snprintf(sub, sizeof sub, "%s/%s", path, d) < (int)sizeof sub)
			err = walk(em, w, sub, depth + 1);
		free(names[i]);
	}
	free(names);
	return err;
}

/* Source: the walk. */
static int walk_paths(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	struct walk *w = arg;
	int err = 0;
	for (int i = 0; i < w->npaths && err == 0; i++)
		err = walk(em, w, w->paths[i], 0);
	return err;
}

/* ---------------------------------------------------------------- output */

struct results {
	struct result *v;
	size_t n, cap;
	bool quiet;
	int unreadable;
	long misplaced; /* results not in walk order: 0, the stage is ordered */
};

static void hex(const unsigned char *md, char out[2 * DIGEST + 1])
{
	for (int i = 0; i < DIGEST; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* sha256sum's line: a name with a backslash or newline is escaped, and the
 * line then starts with a backslash. */
static void print_line(const struct result *r)
{
	char h[2 * DIGEST + 1];
	hex(r->md, h);
	bool esc = strpbrk(r->path, "\\\n") != NULL;
	printf("%s%s  ", esc ? "\\" : "", h);
	for (const char *c = r->path; *c; c++) {
		if (*c == '\\')
			fputs("\\\\", stdout);
		else if (*c == '\n')
			fputs("\\n", stdout);
		else
			putchar(*c);
	}
	putchar('\n');
}

/* The sink: in walk order (the hash stage is ordered). The result is ours:
 * kept for the checks. */
static int print_result(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	struct results *rs = arg;
	struct result *r = item;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 256;
		struct result *v = realloc(rs->v, cap * sizeof *v);
		if (!v) {
			free(r->path);
			return ENOMEM;
		}
		rs->v = v;
		rs->cap = cap;
	}
	if (r->n != (long)rs->n)
		rs->misplaced++;
	rs->v[rs->n++] = *r;
	if (r->err != 0) {
		fprintf(stderr, "sha256sum: %s: %s\n", r->path, strerror(r->err));
		rs->unreadable++;
	} else if (!rs->quiet) {
		print_line(r);
	}
	return 0;
}

/* ---------------------------------------------------------------- checks */

/* Find the sha256sum program on PATH. */
static bool find_program(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		if (snprintf(out, len, "%.*s/%s", (int)n, path, name) < (int)len &&
		    access(out, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* Run sha256sum on results [from, to) and compare each line's digest with
 * ours, in order (it prints in argument order). Returns the number of
 * mismatches, or -1 if it could not be run. Files we could not read are
 * left out. */
static long check_batch(const char *prog, struct results *rs, size_t from, size_t to)
{
	char **argv = calloc(to - from + 3, sizeof *argv);
	size_t *idx = calloc(to - from + 1, sizeof *idx);
	int pipefd[2] = {-1, -1};
	long bad = -1;
	size_t k = 0, argc = 0;
	pid_t pid;
	posix_spawn_file_actions_t fa;

	if (!argv || !idx || pipe(pipefd) != 0)
		goto out;
	argv[argc++] = "sha256sum";
	argv[argc++] = "--";
	for (size_t i = from; i < to; i++)
		if (rs->v[i].err == 0) {
			idx[k++] = i;
			argv[argc++] = rs->v[i].path;
		}
	if (k == 0) {
		bad = 0;
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addclose(&fa, pipefd[0]);
	int err = posix_spawn(&pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	pipefd[1] = -1;
	if (err != 0)
		goto out;
	FILE *f = fdopen(pipefd[0], "r");
	if (!f)
		goto out;
	pipefd[0] = -1;
	char *line = NULL;
	size_t cap = 0, i = 0;
	bad = 0;
	while (getline(&line, &cap, f) > 0) {
		const char *h = line[0] == '\\' ? line + 1 : line;
		char want[2 * DIGEST + 1];
		if (i < k)
			hex(rs->v[idx[i]].md, want);
		if (i >= k || strncmp(h, want, 2 * DIGEST) != 0)
			bad++;
		i++;
	}
	bad += i < k ? (long)(k - i) : 0;
	free(line);
	fclose(f);
	int status;
	waitpid(pid, &status, 0);
out:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(argv);
	free(idx);
	return bad;
}

/* ---------------------------------------------------------------- a tree of our own */

/* Write a tree of files with pseudo-random sizes and contents under dir,
 * with weft_open/weft_write. */
static int make_tree(const char *dir, int nfiles)
{
	static const char *const subs[] = {"", "/a", "/a/deep", "/b"};
	char path[PATH_MAX];
	unsigned char *buf = malloc(2 << 20);
	uint32_t x = 88172645u;
	int err = 0;

	if (!buf)
		return ENOMEM;
	weft_blocking_begin();
	for (int s = 1; s < 4 && err == 0; s++) {
		snprintf(path, sizeof path, "%s%s", dir, subs[s]);
		if (mkdir(path, 0700) != 0)
			err = errno;
	}
	weft_blocking_end();
	for (int i = 0; i < nfiles && err == 0; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		size_t size = i == 0 ? 0 : i == 1 ? (size_t)2 << 20 : x % (300 * 1024);
		for (size_t b = 0; b < size; b++)
			buf[b] = (unsigned char)((x >> (b % 24)) + b * 131);
		snprintf(path, sizeof path, "%s%s/file-%03d.bin", dir, subs[i % 4], i);
		weft_fd *f;
		if ((err = weft_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600, &f)) !=
		    0)
			break;
		err = weft_write(f, buf, size, NULL);
		int cerr = weft_fd_close(f);
		err = err ? err : cerr;
	}
	free(buf);
	return err;
}

static void remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d)) != NULL) {
			char sub[PATH_MAX];
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
			    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
				remove_tree(sub);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

/* ---------------------------------------------------------------- main */

struct opts {
	int workers;
	bool quiet;
	int npaths;
	char **paths;
};

static int run(void *arg)
{
	struct opts *o = arg;
	char tmpdir[] = "/tmp/weft-hash-XXXXXX";
	char *tree_paths[1];
	struct walk w = {.npaths = o->npaths, .paths = o->paths};
	struct results rs = {.quiet = o->quiet};
	bool generated = o->npaths == 0;
	int ok = 0;

	if (generated) {
		weft_blocking_begin();
		char *dir = mkdtemp(tmpdir);
		weft_blocking_end();
		int err = dir ? make_tree(dir, 240) : errno;
		if (err != 0) {
			fprintf(stderr, "cannot make a tree to hash: %s\n", strerror(err));
			if (dir)
				remove_tree(dir);
			return 1;
		}
		tree_paths[0] = tmpdir;
		w.npaths = 1;
		w.paths = tree_paths;
	}

	weft_pipeline_source src = {.gen = walk_paths,
	                            .arg = &w,
	                            .item_size = sizeof(struct file),
	                            .buffer = 64,
	                            .drop = free_file,
	                            .name = "walk"};
	weft_pipeline_stage hash = {.map = hash_file,
	                            .out_size = sizeof(struct result),
	                            .workers = o->workers,
	                            .ordered = true,
	                            .buffer = 64,
	                            .drop = free_result,
	                            .name = "sha256"};
	weft_pipeline *p;
	int err = weft_pipeline_new(&p, NULL, &src);
	if (err == 0) {
		err = weft_pipeline_add(p, &hash);
		if (err == 0)
			err = weft_pipeline_set_sink(p, print_result, &rs);
		int64_t t0 = weft_now();
		if (err == 0)
			err = weft_pipeline_run(p);
		fprintf(stderr, "%zu files hashed by %d workers in %.1f ms: %s\n", rs.n, o->workers,
		        (weft_now() - t0) / 1e6, err == 0 ? "ok" : strerror(err));
		weft_pipeline_free(p);
	}

	/* Check 1: a sequential pass over the same files, in the same order. */
	long mismatches = 0;
	int64_t t0 = weft_now();
	for (size_t i = 0; i < rs.n; i++) {
		unsigned char md[DIGEST];
		weft_blocking_begin(); /* plain read(2) blocks the thread */
		int e = hash_plain(rs.v[i].path, md);
		weft_blocking_end();
		if (e != rs.v[i].err || (e == 0 && memcmp(md, rs.v[i].md, DIGEST) != 0))
			mismatches++;
	}
	fprintf(stderr, "sequential pass: %ld of %zu differ (%.1f ms)\n", mismatches, rs.n,
	        (weft_now() - t0) / 1e6);
	fprintf(stderr, "results in walk order: %s\n", rs.misplaced == 0 ? "yes" : "NO");
	ok = err == 0 && mismatches == 0 && rs.misplaced == 0 && (long)rs.n == w.files;

	/* Check 2: the sha256sum program, when there is one. */
	char prog[PATH_MAX];
	if (find_program("sha256sum", prog, sizeof prog)) {
		long bad = 0;
		for (size_t i = 0; i < rs.n && bad >= 0; i += 256) {
			size_t to = i + 256 < rs.n ? i + 256 : rs.n;
			weft_blocking_begin(); /* spawning and waiting block the thread */
			long b = check_batch(prog, &rs, i, to);
			weft_blocking_end();
			bad = b < 0 ? -1 : bad + b;
		}
		fprintf(stderr, "%s: %s\n", prog,
		        bad < 0    ? "could not be run"
		        : bad == 0 ? "same digests"
		                   : "DIFFERENT digests");
		ok = ok && bad == 0;
	} else {
		fprintf(stderr, "no sha256sum program: that check is skipped\n");
	}

	for (size_t i = 0; i < rs.n; i++)
		free(rs.v[i].path);
	free(rs.v);
	if (generated) {
		weft_blocking_begin();
		remove_tree(tmpdir);
		weft_blocking_end();
	}
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct opts o = {.workers = 4};
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--quiet") == 0) {
			o.quiet = true;
		} else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
			o.workers = atoi(argv[++i]);
		} else {
			fprintf(stderr,
			        "usage: 22_file_hasher [--workers N] [--quiet] [PATH...]\n");
			return 2;
		}
	}
	if (o.workers < 1 || o.workers > WEFT_PIPELINE_MAX_WORKERS) {
		fprintf(stderr, "22_file_hasher: --workers must be 1..%d\n",
		        WEFT_PIPELINE_MAX_WORKERS);
		return 2;
	}
	o.npaths = argc - i;
	o.paths = argv + i;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	EVP_MD *fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
	sha256 = fetched;
#else
	sha256 = EVP_sha256();
#endif
	if (!sha256) {
		fprintf(stderr, "22_file_hasher: libcrypto has no SHA-256\n");
		return 1;
	}
	int r = weft_main(run, &o);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	EVP_MD_free(fetched);
#endif
	return r;
}
