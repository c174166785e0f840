/* SPDX-License-Identifier: MIT */
/*
 * 06_dump.c - see what every goroutine is doing: weft_dump().
 *
 * When a program hangs, the first question is "who waits for what?".
 * weft_dump(out) prints every goroutine, Go style: its id and name, its state
 * and wait reason and for how long, where it was created, and a backtrace.
 * Sending SIGQUIT (kill -QUIT <pid>, or Ctrl-\ in a terminal) prints the same
 * on stderr and exits with status 2, as a Go program does.
 *
 * Backtraces name functions through the dynamic symbol table: link with
 * -rdynamic (CMake: ENABLE_EXPORTS) and keep frame pointers on
 * (-fno-omit-frame-pointer). Static functions have no dynamic symbol, which is
 * why the goroutine bodies below are not static.
 *
 * Here main puts a few goroutines into different states, dumps them, then
 * lets them all finish.
 *
 * Run: ./06_dump
 */
#include <stdio.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)

struct scene {
	weft_mutex mu; /* held by main while the dump is taken */
	weft_wg gate;  /* counter 1 until main opens it */
	weft_wg done;
};

void sleepy(void *arg)
{
	struct scene *s = arg;

	weft_sleep(300 * MS);
	weft_wg_done(&s->done);
}

void wants_the_lock(void *arg)
{
	struct scene *s = arg;

	weft_mutex_lock(&s->mu);
	weft_mutex_unlock(&s->mu);
	weft_wg_done(&s->done);
}

void waits_at_the_gate(void *arg)
{
	struct scene *s = arg;

	weft_wg_wait(&s->gate);
	weft_wg_done(&s->done);
}

static int run(void *unused)
{
	static struct scene s;
	weft_go_options named = {.name = "gatekeeper"};

	(void)unused;
	weft_mutex_lock(&s.mu);
	weft_wg_add(&s.gate, 1);
	weft_wg_add(&s.done, 4);
	if (weft_go(sleepy, &s) != 0 || weft_go(wants_the_lock, &s) != 0 ||
	    weft_go(waits_at_the_gate, &s) != 0 || weft_go_opts(waits_at_the_gate, &s, &named) != 0)
		return 1;

	weft_sleep(50 * MS); /* let them all reach their waits */
	printf("---- weft_dump(stdout): %lld goroutines ----\n", (long long)weft_num_goroutines());
	fflush(stdout);
	weft_dump(stdout);
	fflush(stdout);
	printf("---- end of dump ----\n");

	weft_mutex_unlock(&s.mu);
	weft_wg_done(&s.gate);
	weft_wg_wait(&s.done);
	printf("everyone finished\n");
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
