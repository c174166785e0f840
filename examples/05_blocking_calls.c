/* SPDX-License-Identifier: MIT */
/*
 * 05_blocking_calls.c - keep other goroutines running while one of them is
 * stuck in a call that blocks its OS thread.
 *
 * weft runs goroutines on a few threads. A goroutine that calls something
 * that blocks in the kernel (read() of a file, getaddrinfo(), a library that
 * waits on its own) holds its thread for the whole call; without help, the
 * other goroutines queued on that thread's P would wait too. Bracket such a
 * call with weft_blocking_begin() and weft_blocking_end(): if the call lasts
 * longer than about 20 us, weft's monitor thread (sysmon) hands the P to
 * another thread, and everything else keeps running. A short call costs next
 * to nothing.
 *
 * To make the effect plain this example runs on a single P. One goroutine
 * reads from a pipe that stays empty for 200 ms; a ticker goroutine and main
 * go on running meanwhile, and main is the one that finally writes to the
 * pipe. (A pipe stands in for any call that blocks for a while; for pipes and
 * sockets, weft_fd_open() and weft_read() park only the goroutine instead.)
 *
 * Run: ./05_blocking_calls
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

struct shared {
	int pipe_fds[2];
	atomic_int ticks;
	atomic_bool stop;
	bool read_failed;
	weft_wg wg;
};

void reader(void *arg)
{
	struct shared *s = arg;
	char byte;
	int64_t t0 = weft_now();

	weft_blocking_begin();
	ssize_t n = read(s->pipe_fds[0], &byte, 1); /* blocks the thread */
	int err = errno;
	weft_blocking_end(); /* may resume on another thread: errno was saved above */

	if (n != 1) {
		fprintf(stderr, "read: %s\n", n < 0 ? strerror(err) : "end of file");
		s->read_failed = true; /* main reads it after the WaitGroup */
	}
	printf("reader: read() returned after %.0f ms\n", (weft_now() - t0) / 1e6);
	weft_wg_done(&s->wg);
}

void ticker(void *arg)
{
	struct shared *s = arg;

	while (!atomic_load(&s->stop)) {
		atomic_fetch_add(&s->ticks, 1);
		weft_sleep(10 * MS);
	}
	weft_wg_done(&s->wg);
}

static int run(void *unused)
{
	static struct shared s;
	int old_procs;

	(void)unused;
	if (pipe(s.pipe_fds) != 0) {
		perror("pipe");
		return 1;
	}
	weft_set_procs(1, &old_procs);

	weft_wg_add(&s.wg, 2);
	if (weft_go(reader, &s) != 0 || weft_go(ticker, &s) != 0)
		return 1;

	/* The reader now blocks its thread in read(). With one P and no
	 * hand-off, this sleep could never end. */
	weft_sleep(200 * MS);
	int ticks = atomic_load(&s.ticks);
	printf("main: while the reader was blocked, the ticker ticked %d times\n", ticks);
	if (write(s.pipe_fds[1], "x", 1) != 1) {
		perror("write");
		return 1;
	}
	atomic_store(&s.stop, true);
	weft_wg_wait(&s.wg);

	weft_stats st;
	weft_stats_get(&st);
	printf("main: Ps handed off from blocking calls so far: %lld\n", (long long)st.handoffs);

	close(s.pipe_fds[0]);
	close(s.pipe_fds[1]);
	weft_set_procs(old_procs, NULL);
	/* 200 ms at one tick per 10 ms: 20 ticks; fewer than 5 means the
	 * ticker was held up, and the 200 ms call must have been handed off. */
	return !s.read_failed && ticks >= 5 && st.handoffs >= 1 ? 0 : 1;
}

int main(void)
{
	return weft_main(run, NULL);
}
