/* SPDX-License-Identifier: MIT */
/*
 * 01_hello_goroutines.c - the first step: start goroutines with weft_go().
 *
 * A goroutine is a function that runs concurrently with the others. weft runs
 * them on a few OS threads, at most weft_procs() at a time (one per CPU unless
 * WEFT_PROCS says otherwise), so starting thousands is cheap. weft_main() runs
 * a function as the first goroutine and returns what it returns.
 *
 * Here main starts ten greeters and waits for them with a WaitGroup, which
 * 02_waitgroup.c explains. Note that a greeter may say goodbye from another P
 * than it said hello from: after weft_yield() (or any call that blocks) a
 * goroutine resumes wherever the scheduler finds room for it.
 *
 * Run: ./01_hello_goroutines        (and WEFT_PROCS=1 ./01_hello_goroutines)
 */
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define GREETERS 10

struct greeter {
	int index;
	int done; /* set by the greeter; read by main after the wait */
	weft_wg *wg;
};

void greet(void *arg)
{
	struct greeter *g = arg;

	printf("hello   from goroutine %2llu (greeter %d) on P %d\n",
	       (unsigned long long)weft_self_id(), g->index, weft_self_proc());
	weft_yield();
	printf("goodbye from goroutine %2llu (greeter %d) on P %d\n",
	       (unsigned long long)weft_self_id(), g->index, weft_self_proc());
	g->done = 1;
	weft_wg_done(g->wg); /* publishes done to whoever waits */
}

static int run(void *unused)
{
	/* The greeters borrow these: they must outlive them, which the wait
	 * below guarantees. */
	struct greeter greeters[GREETERS];
	weft_wg wg = WEFT_WG_INIT;

	(void)unused;
	printf("weft %s: main is goroutine %llu, %d P(s)\n", weft_version(),
	       (unsigned long long)weft_self_id(), weft_procs());
	for (int i = 0; i < GREETERS; i++) {
		greeters[i] = (struct greeter){.index = i, .wg = &wg};
		weft_wg_add(&wg, 1);
		int err = weft_go(greet, &greeters[i]);
		if (err != 0) {
			/* weft returns error numbers; it never sets errno. */
			fprintf(stderr, "weft_go: %s\n", strerror(err));
			weft_wg_done(&wg);
		}
	}
	weft_wg_wait(&wg);
	int done = 0;
	for (int i = 0; i < GREETERS; i++)
		done += greeters[i].done;
	printf("%d of %d greeters are done\n", done, GREETERS);
	return done == GREETERS ? 0 : 1;
}

int main(void)
{
	return weft_main(run, NULL);
}
