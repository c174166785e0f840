/* SPDX-License-Identifier: MIT */
/*
 * 21_log_pipeline.c - log processing with weft_pipeline over real log files:
 * read lines -> parse (timestamp, kind, level) -> filter -> aggregate, then
 * a top-N report, checked against a plain sequential pass over the same
 * bytes.
 *
 *   source   opens the files (weft_open) one after the other and emits
 *            each open file: an item that owns a descriptor, closed by the
 *            pipeline's drop function if it stops before reading it
 *   read     2 goroutines: weft_read in 64 KiB chunks (regular files go
 *            through weft's blocking path, so a slow disk stalls no other
 *            goroutine); a flatmap emitting one heap-allocated line per
 *            '\n' - items are pointers, owned by whoever holds them, and
 *            freed by the pipeline's drop function if it stops early
 *   parse    4 goroutines: line -> a fixed-size record (the line is freed
 *            here): the day, the hour, the kind (dpkg's action, apt's field,
 *            a syslog program...) and a level (error, warning, info)
 *   filter   2 goroutines: keeps records that have a kind and at least the
 *            level asked for
 *   sink     one goroutine: counts per kind, per day, per level
 * No stage keeps order: counting does not need it, so results flow on as
 * soon as they are ready.
 *
 * Files: the paths given (files, or directories walked recursively), else
 * the readable text files under /var/log (dpkg.log, alternatives.log,
 * apt/history.log, ...; compressed and binary ones skipped), at most 8 MiB
 * of them. On a machine where none is readable it writes a log of its own
 * in a temporary directory, so that it runs anywhere. Each file is read up to
 * the size it had when listed, by both passes, so a log that grows
 * meanwhile cannot make them disagree.
 *
 * Run: ./21_log_pipeline [--top N] [--level info|warn|error]
 *                        [--max-bytes N] [PATH...]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <weft.h>

#define KIND_MAX 24
#define DAY_MAX 12
#define TABLE_SLOTS 4096 /* distinct kinds or days counted; more go to "(other)" */
#define CHUNK (64 * 1024)

enum level { L_INFO, L_WARN, L_ERROR, NLEVELS };
static const char *const level_names[NLEVELS] = {"info", "warning", "error"};

/* ---------------------------------------------------------------- the file list */

struct logfile {
	char *path;
	int64_t size;      /* bytes to read: the size when listed, maybe capped */
	atomic_long lines; /* lines read by the pipeline */
};

struct files {
	struct logfile *v;
	size_t n, cap;
	int64_t budget; /* bytes still allowed; < 0: no limit */
};

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);
	return n >= m && strcmp(s + n - m, suf) == 0;
}

/* A readable, non-empty file whose first 4 KiB hold no NUL byte: text. */
static bool is_text(const char *path)
{
	static const char *const skip[] = {".gz", ".xz", ".bz2", ".zst", ".lz4", ".journal"};
	for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
		if (has_suffix(path, skip[i]))
			return false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	return n > 0 && memchr(buf, '\0', (size_t)n) == NULL;
}

static void add_file(struct files *fs, const char *path, int64_t size)
{
	if (fs->budget == 0)
		return;
	if (fs->budget > 0 && size > fs->budget)
		size = fs->budget;
	if (fs->n == fs->cap) {
		size_t cap = fs->cap ? 2 * fs->cap : 16;
		struct logfile *v = realloc(fs->v, cap * sizeof *v);
		if (!v)
			return;
		fs->v = v;
		fs->cap = cap;
	}
	char *p = strdup(path);
	if (!p)
		return;
	fs->v[fs->n] = (struct logfile){.path = p, .size = size};
	atomic_init(&fs->v[fs->n].lines, 0);
	fs->n++;
	if (fs->budget > 0)
		fs->budget -= size;
}

/* Add path: a text file, or the text files under a directory (sorted, so
 * the report's file list is stable). Plain system calls: the caller brackets
 * the whole walk with weft_blocking_begin/end. */
static void walk(struct files *fs, const char *path, int depth)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return;
	if (S_ISREG(st.st_mode)) {
		if (st.st_size > 0 && is_text(path))
			add_file(fs, path, st.st_size);
		return;
	}
	if (!S_ISDIR(st.st_mode) || depth > 4)
		return;
	struct dirent **names;
	int n = scandir(path, &names, NULL, alphasort);
	if (n < 0)
		return;
	for (int i = 0; i < n; i++) {
		const char *d = names[i]->d_name;
		if (strcmp(d, ".") != 0 && strcmp(d, "..") != 0) {
			char sub[PATH_MAX];
			if (snprintf(sub, sizeof sub, "%s/%s", path, d) < (int)sizeof sub)
				walk(fs, sub, depth + 1);
		}
		free(names[i]);
	}
	free(names);
}

/* ---------------------------------------------------------------- a log of our own */

/* Write a dpkg-style log of n lines into dir/app.log with weft_open and
 * weft_write (regular files go through the blocking path). */
static int write_sample_log(const char *dir, int n, char *path, size_t pathlen)
{
	static const char *const kinds[] = {"status",   "configure", "install", "upgrade",
	                                    "trigproc", "startup",   "remove"};
	weft_fd *f;
	snprintf(path, pathlen, "%s/app.log", dir);
	int err = weft_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600, &f);
	if (err != 0)
		return err;
	uint32_t x = 2463534242u;
	char line[160];
	for (int i = 0; i < n && err == 0; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		int len;
		if (x % 50 == 0)
			len = snprintf(line, sizeof line, "  (continued: no timestamp)\n");
		else
			len = snprintf(line, sizeof line,
			               "2026-11-%02u %02u:%02u:%02u %s pkg%u:amd64 1.%u%s\n",
			               10 + x % 7, x / 7 % 24, x / 11 % 60, x / 13 % 60,
			               kinds[x / 17 % 7], x / 19 % 40, x / 23 % 9,
			               x % 97 == 0   ? " error: dependency problem"
			               : x % 31 == 0 ? " warning: conffile changed"
			                             : "");
		err = weft_write(f, line, (size_t)len, NULL);
	}
	int cerr = weft_fd_close(f);
	return err ? err : cerr;
}

/* ---------------------------------------------------------------- parsing */

/* A parsed line: a fixed-size value, copied from stage to stage. */
struct rec {
	int file;
	int hour; /* -1: no timestamp */
	int level;
	char day[DAY_MAX];   /* "2026-11-22" or "Nov 22"; "" without a timestamp */
	char kind[KIND_MAX]; /* "" when none could be told */
};

/* ASCII classes by hand: <ctype.h> reads a per-thread locale table, which
 * gives the same answer on every thread but is one more thread-local a
 * goroutine touches (see the TLS hazard in weft.h), and ThreadSanitizer
 * flags its first read on a thread the goroutine has not synchronised with. */
static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool digits(const char *s, size_t len, size_t at, size_t n)
{
	if (at + n > len)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[at + i]))
			return false;
	return true;
}

/* "YYYY-MM-DD[ T]+HH:MM:SS" at s[at]: the end of it, or 0. */
static size_t iso_stamp(const char *s, size_t len, size_t at, struct rec *r)
{
	if (!digits(s, len, at, 4) || at + 10 > len || s[at + 4] != '-' || s[at + 7] != '-' ||
	    !digits(s, len, at + 5, 2) || !digits(s, len, at + 8, 2))
		return 0;
	size_t t = at + 10;
	while (t < len && (s[t] == ' ' || s[t] == 'T'))
		t++;
	if (t == at + 10 || !digits(s, len, t, 2) || t + 8 > len || s[t + 2] != ':' ||
	    s[t + 5] != ':')
		return 0;
	memcpy(r->day, s + at, 10);
	r->day[10] = '\0';
	r->hour = (s[t] - '0') * 10 + (s[t + 1] - '0');
	return t + 8;
}

/* Syslog's "Mon DD HH:MM:SS" at the start: the end of it, or 0. */
static size_t syslog_stamp(const char *s, size_t len, struct rec *r)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	if (len < 15 || s[3] != ' ' || s[6] != ' ' || s[9] != ':' || s[12] != ':')
		return 0;
	bool month = false;
	for (int m = 0; m < 12; m++)
		month |= memcmp(s, months + 3 * m, 3) == 0;
	if (!month || !digits(s, len, 7, 2))
		return 0;
	memcpy(r->day, s, 6);
	r->day[6] = '\0';
	r->hour = (s[7] - '0') * 10 + (s[8] - '0');
	return 15;
}

/* Copy the word at s[*at] (up to a space, ':', '[' or the end) into kind,
 * skipping leading spaces and ':'; false if there is none. */
static bool word(const char *s, size_t len, size_t *at, char kind[KIND_MAX])
{
	size_t i = *at, k = 0;
	while (i < len && (s[i] == ' ' || s[i] == ':' || s[i] == '\t'))
		i++;
	while (i < len && s[i] != ' ' && s[i] != ':' && s[i] != '[' && s[i] != '\t') {
		if (k < KIND_MAX - 1)
			kind[k++] = s[i];
		i++;
	}
	kind[k] = '\0';
	*at = i;
	return k > 0;
}

/* Whether s holds the lower-case word w in any case. */
static bool contains_ci(const char *s, size_t len, const char *w)
{
	size_t m = strlen(w);
	for (size_t i = 0; i + m <= len; i++) {
		size_t k = 0;
		while (k < m && (s[i + k] | 0x20) == w[k])
			k++;
		if (k == m)
			return true;
	}
	return false;
}

/*
 * Parse one line (len bytes, no '\n'): the timestamp wherever the common
 * formats put it (dpkg "2026-11-22 18:01:02 status ...", update-alternatives
 * "update-alternatives 2026-11-22 18:01:02: run ...", apt "Start-Date:
 * 2026-11-22  18:01:02", syslog "Nov 22 18:01:02 host prog[12]: ..."); the
 * kind: apt's "Field:" name, else the first word after the timestamp (for
 * syslog the program, after the host); the level from the words in it.
 * Shared by the pipeline and the sequential pass.
 */
static void parse_line(const char *s, size_t len, int file, struct rec *r)
{
	*r = (struct rec){.file = file, .hour = -1, .level = L_INFO};
	size_t end = syslog_stamp(s, len, r), at = 0;
	if (end) {
		at = end;
		char host[KIND_MAX];
		if (word(s, len, &at, host))
			word(s, len, &at, r->kind);
	} else {
		/* An ISO stamp at the start, or after the first word. */
		size_t first = 0;
		while (first < len && s[first] != ' ')
			first++;
		if ((end = iso_stamp(s, len, 0, r)) == 0 && first < len)
			end = iso_stamp(s, len, first + 1, r);
		/* apt's "Field: value" lines name their kind up front. */
		size_t colon = 0;
		while (colon < len && colon < KIND_MAX - 1 &&
		       (is_alpha(s[colon]) || is_digit(s[colon]) || s[colon] == '-'))
			colon++;
		if (colon > 0 && colon < len && s[colon] == ':' && is_alpha(s[0]) &&
		    (colon + 1 == len || s[colon + 1] == ' ')) {
			memcpy(r->kind, s, colon);
			r->kind[colon] = '\0';
		} else if (end) {
			at = end;
			word(s, len, &at, r->kind);
		}
	}
	if (contains_ci(s, len, "error") || contains_ci(s, len, "fail"))
		r->level = L_ERROR;
	else if (contains_ci(s, len, "warn"))
		r->level = L_WARN;
}

/* ---------------------------------------------------------------- counting */

struct slot {
	char key[KIND_MAX];
	int64_t count;
};

struct table {
	struct slot s[TABLE_SLOTS];
	size_t used;
	int64_t other;
};

static void bump(struct table *t, const char *key)
{
	uint32_t h = 2166136261u;
	for (const char *c = key; *c; c++)
		h = (h ^ (unsigned char)*c) * 16777619u;
	for (size_t i = 0; i < TABLE_SLOTS; i++) {
		struct slot *s = &t->s[(h + i) % TABLE_SLOTS];
		if (s->count == 0) {
			if (t->used == TABLE_SLOTS - 1) {
				t->other++;
				return;
			}
			snprintf(s->key, sizeof s->key, "%s", key);
			t->used++;
		}
		if (strcmp(s->key, key) == 0) {
			s->count++;
			return;
		}
	}
}

static int by_count(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->key, y->key);
}

/* The table's entries, most frequent first (then by name): a copy. */
static struct slot *sorted(const struct table *t, size_t *n)
{
	struct slot *v = malloc((t->used + 1) * sizeof *v);
	size_t k = 0;
	if (!v)
		return NULL;
	for (size_t i = 0; i < TABLE_SLOTS; i++)
		if (t->s[i].count)
			v[k++] = t->s[i];
	qsort(v, k, sizeof *v, by_count);
	*n = k;
	return v;
}

struct agg {
	struct table kinds, days;
	int64_t levels[NLEVELS];
	int64_t kept;
	int64_t *per_file; /* records kept per file */
	int64_t *lines;    /* lines per file (the sequential pass fills it) */
};

static void count(struct agg *a, const struct rec *r)
{
	bump(&a->kinds, r->kind);
	bump(&a->days, r->day[0] ? r->day : "(no date)");
	a->levels[r->level]++;
	a->per_file[r->file]++;
	a->kept++;
}

/* What the filter keeps, in both passes. */
static int min_level;

static bool wanted(const struct rec *r)
{
	return r->kind[0] != '\0' && r->level >= min_level;
}

/* ---------------------------------------------------------------- the stages */

/* A line in flight: a pointer item. Whoever holds it frees it; the
 * pipeline's drop (free_line) does when it stops with lines in flight. */
struct line {
	int file;
	size_t len;
	char text[];
};

static void free_line(void *arg, void *item)
{
	(void)arg;
	free(*(struct line **)item);
}

struct job {
	struct files *fs;
};

/* An open file in flight: a value item that owns a descriptor. */
struct open_file {
	int file;
	weft_fd *f;
};

static void close_file(void *arg, void *item)
{
	(void)arg;
	weft_fd_close(((struct open_file *)item)->f);
}

/* Source: open each file. A file we cannot open is reported and skipped
 * (the sequential pass skips it too); it does not fail the pipeline. */
static int open_files(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em)
{
	(void)ctx;
	struct job *j = arg;
	for (int i = 0; i < (int)j->fs->n; i++) {
		struct open_file of = {.file = i};
		int err = weft_open(j->fs->v[i].path, O_RDONLY | O_CLOEXEC, 0, &of.f);
		if (err != 0) {
			fprintf(stderr, "  %s: %s (skipped)\n", j->fs->v[i].path, strerror(err));
			continue;
		}
		if ((err = weft_pipeline_emit(em, &of)) != 0)
			return err; /* of is the pipeline's: its drop closes it */
	}
	return 0;
}

static int emit_line(weft_pipeline_emitter *em, int file, const char *s, size_t len)
{
	struct line *l = malloc(sizeof *l + len + 1);
	if (!l)
		return ENOMEM;
	l->file = file;
	l->len = len;
	memcpy(l->text, s, len);
	l->text[len] = '\0';
	return weft_pipeline_emit(em, &l); /* l is the pipeline's now, whatever it returns */
}

/* Stage "read": one file in, one item per line out. The read parks this
 * goroutine only; a partial last line (no '\n') counts as a line. */
static int read_lines(weft_ctx *ctx, void *arg, void *in, weft_pipeline_emitter *em)
{
	struct job *j = arg;
	struct open_file *of = in; /* ours: closed here */
	int file = of->file, err = 0;
	weft_fd *f = of->f;
	struct logfile *lf = &j->fs->v[file];
	size_t cap = CHUNK, have = 0;
	char *buf = malloc(cap);
	int64_t left = lf->size;
	long lines = 0;
	if (!buf)
		err = ENOMEM;
	while (err == 0 && left > 0) {
		if (cap - have < CHUNK / 2) { /* a long line: grow */
			char *b = realloc(buf, cap * 2);
			if (!b) {
				err = ENOMEM;
				break;
			}
			buf = b, cap *= 2;
		}
		size_t want = cap - have, n;
		if ((int64_t)want > left)
			want = (size_t)left;
		if ((err = weft_read_ctx(ctx, f, buf + have, want, &n)) != 0 || n == 0)
			break; /* cancelled, an error, or the file shrank */
		left -= (int64_t)n;
		have += n;
		size_t start = 0;
		for (char *nl; (nl = memchr(buf + start, '\n', have - start)) != NULL;) {
			size_t len = (size_t)(nl - (buf + start));
			if ((err = emit_line(em, file, buf + start, len)) != 0)
				break;
			lines++;
			start += len + 1;
		}
		memmove(buf, buf + start, have - start);
		have -= start;
	}
	if (err == 0 && have > 0) {
		err = emit_line(em, file, buf, have);
		lines += err == 0;
	}
	free(buf);
	weft_fd_close(f);
	atomic_fetch_add(&lf->lines, lines);
	return err;
}

/* Stage "parse": line -> record; the line is ours, so it is freed here. */
static int parse(weft_ctx *ctx, void *arg, void *in, void *out)
{
	(void)ctx, (void)arg;
	struct line *l = *(struct line **)in;
	parse_line(l->text, l->len, l->file, out);
	free(l);
	return 0;
}

/* Stage "filter": records with a kind, at the level asked for. */
static int keep_wanted(weft_ctx *ctx, void *arg, void *item, bool *keep)
{
	(void)ctx, (void)arg;
	*keep = wanted(item);
	return 0;
}

static int aggregate(weft_ctx *ctx, void *arg, void *item)
{
	(void)ctx;
	count(arg, item);
	return 0;
}

static int run_pipeline(struct files *fs, struct agg *a)
{
	struct job j = {fs};
	weft_pipeline_source src = {.gen = open_files,
	                            .arg = &j,
	                            .item_size = sizeof(struct open_file),
	                            .drop = close_file,
	                            .name = "open"};
	weft_pipeline_stage stages[] = {
		{.flatmap = read_lines,
	         .arg = &j,
	         .out_size = sizeof(struct line *),
	         .workers = 2,
	         .buffer = 256,
	         .drop = free_line,
	         .name = "read"},
		{.map = parse,
	         .out_size = sizeof(struct rec),
	         .workers = 4,
	         .buffer = 256,
	         .name = "parse"},
		{.filter = keep_wanted, .workers = 2, .buffer = 256, .name = "filter"},
	};
	weft_pipeline *p;
	int err = weft_pipeline_new(&p, NULL, &src);
	if (err != 0)
		return err;
	for (size_t i = 0; i < sizeof stages / sizeof stages[0] && err == 0; i++)
		err = weft_pipeline_add(p, &stages[i]);
	if (err == 0)
		err = weft_pipeline_set_sink(p, aggregate, a);
	if (err == 0)
		err = weft_pipeline_run(p);
	weft_pipeline_free(p);
	return err;
}

/* ---------------------------------------------------------------- the sequential pass */

/* The same result the plain way: each file read whole with stdio (inside a
 * blocking bracket: it blocks its thread), split, parsed, filtered, counted
 * one line after the other. */
static int run_sequential(struct files *fs, struct agg *a)
{
	for (size_t i = 0; i < fs->n; i++) {
		struct logfile *lf = &fs->v[i];
		char *buf = malloc((size_t)lf->size + 1);
		if (!buf)
			return ENOMEM;
		weft_blocking_begin();
		FILE *f = fopen(lf->path, "rb");
		size_t n = f ? fread(buf, 1, (size_t)lf->size, f) : 0;
		if (f)
			fclose(f);
		weft_blocking_end();
		size_t start = 0;
		while (start < n) {
			char *nl = memchr(buf + start, '\n', n - start);
			size_t len = nl ? (size_t)(nl - (buf + start)) : n - start;
			struct rec r;
			parse_line(buf + start, len, (int)i, &r);
			if (wanted(&r))
				count(a, &r);
			a->lines[i]++;
			start += len + 1;
		}
		free(buf);
	}
	return 0;
}

static bool same_table(const struct table *x, const struct table *y)
{
	size_t nx, ny;
	struct slot *a = sorted(x, &nx), *b = sorted(y, &ny);
	bool same = a && b && nx == ny && x->other == y->other;
	for (size_t i = 0; same && i < nx; i++)
		same = a[i].count == b[i].count && strcmp(a[i].key, b[i].key) == 0;
	free(a);
	free(b);
	return same;
}

/* ---------------------------------------------------------------- main */

struct opts {
	int top;
	int64_t max_bytes;
	int npaths;
	char **paths;
};

static void print_top(const char *title, const struct table *t, int top)
{
	size_t n;
	struct slot *v = sorted(t, &n);
	if (!v)
		return;
	printf("  %s:\n", title);
	for (size_t i = 0; i < n && (int)i < top; i++)
		printf("    %8" PRId64 "  %s\n", v[i].count, v[i].key);
	free(v);
}

static int run(void *arg)
{
	struct opts *o = arg;
	struct files fs = {.budget = o->max_bytes};
	char tmpdir[] = "/tmp/weft-logs-XXXXXX", sample[PATH_MAX] = "";

	weft_blocking_begin(); /* the walk: plain system calls that may block */
	if (o->npaths == 0)
		walk(&fs, "/var/log", 0);
	for (int i = 0; i < o->npaths; i++)
		walk(&fs, o->paths[i], 0);
	weft_blocking_end();
	if (fs.n == 0 && o->npaths == 0) {
		/* A fresh machine may have no readable log: make one. */
		weft_blocking_begin();
		char *dir = mkdtemp(tmpdir);
		weft_blocking_end();
		int err = dir ? write_sample_log(dir, 20000, sample, sizeof sample) : errno;
		if (err != 0) {
			fprintf(stderr, "cannot write a sample log: %s\n", strerror(err));
			return 1;
		}
		printf("no readable log under /var/log: using a generated one\n");
		weft_blocking_begin();
		walk(&fs, sample, 0);
		weft_blocking_end();
	}
	if (fs.n == 0) {
		fprintf(stderr, "no readable text file in the paths given\n");
		return 1;
	}

	struct agg *par = calloc(1, sizeof *par), *seq = calloc(1, sizeof *seq);
	if (!par || !seq)
		return 1;
	par->per_file = calloc(fs.n, sizeof(int64_t));
	seq->per_file = calloc(fs.n, sizeof(int64_t));
	seq->lines = calloc(fs.n, sizeof(int64_t));
	if (!par->per_file || !seq->per_file || !seq->lines)
		return 1;

	int64_t t0 = weft_now();
	int err = run_pipeline(&fs, par);
	int64_t t1 = weft_now();
	int serr = run_sequential(&fs, seq);
	int64_t t2 = weft_now();

	int64_t lines = 0, bytes = 0;
	bool same = err == 0 && serr == 0 && same_table(&par->kinds, &seq->kinds) &&
	            same_table(&par->days, &seq->days) && par->kept == seq->kept;
	for (int l = 0; l < NLEVELS; l++)
		same = same && par->levels[l] == seq->levels[l];
	printf("%zu files:\n", fs.n);
	for (size_t i = 0; i < fs.n; i++) {
		long nl = atomic_load(&fs.v[i].lines);
		same = same && nl == seq->lines[i] && par->per_file[i] == seq->per_file[i];
		lines += nl;
		bytes += fs.v[i].size;
		printf("  %8ld lines %8" PRId64 " kept  %s\n", nl, par->per_file[i], fs.v[i].path);
	}
	printf("%" PRId64 " lines (%.1f KiB), %" PRId64 " records kept; pipeline %.1f ms, "
	       "sequential %.1f ms\n",
	       lines, bytes / 1024.0, par->kept, (t1 - t0) / 1e6, (t2 - t1) / 1e6);
	print_top("top kinds", &par->kinds, o->top);
	print_top("busiest days", &par->days, o->top < 5 ? o->top : 5);
	printf("  levels: ");
	for (int l = 0; l < NLEVELS; l++)
		printf("%s %" PRId64 "%s", level_names[l], par->levels[l],
		       l + 1 < NLEVELS ? ", " : "\n");
	printf("pipeline: %s; same as the sequential pass: %s\n", err == 0 ? "ok" : strerror(err),
	       same ? "yes" : "NO");

	if (sample[0]) {
		unlink(sample);
		rmdir(tmpdir);
	}
	for (size_t i = 0; i < fs.n; i++)
		free(fs.v[i].path);
	free(fs.v);
	free(par->per_file);
	free(seq->per_file);
	free(seq->lines);
	free(par);
	free(seq);
	return same ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: 21_log_pipeline [--top N] [--level info|warn|error] "
	                "[--max-bytes N] [PATH...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = {.top = 8, .max_bytes = -1};
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--top") == 0) {
			o.top = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--max-bytes") == 0) {
			o.max_bytes = strtoll(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--level") == 0) {
			const char *l = argv[++i];
			min_level = strcmp(l, "error") == 0      ? L_ERROR
			            : strncmp(l, "warn", 4) == 0 ? L_WARN
			            : strcmp(l, "info") == 0     ? L_INFO
			                                         : -1;
			if (min_level < 0)
				usage();
		} else {
			usage();
		}
	}
	o.npaths = argc - i;
	o.paths = argv + i;
	if (o.npaths == 0 && o.max_bytes < 0)
		o.max_bytes = 8 << 20; /* /var/log: at most 8 MiB of it */
	return weft_main(run, &o);
}
