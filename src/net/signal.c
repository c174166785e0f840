/* SPDX-License-Identifier: MIT */
/*
 * signal.c - weft_signal_notify: signals as channel sends (Go's os/signal).
 *
 * The handler only writes the signal number to a pipe (async-signal-safe);
 * a dispatcher goroutine reads the pipe through the poller and makes a
 * non-blocking send to every channel registered for that number. The pipe
 * and the goroutine are made on first use and live as long as the process.
 */
#include "net_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "fatal.h"
#include "lock.h"

#define NSIGS 65

struct reg {
	weft_chan *c;
	uint8_t want[NSIGS];
	struct reg *next;
};

static uint32_t lock; /* regs, wanted, saved, started */
static struct reg *regs;
static int wanted[NSIGS]; /* channels that want each signal */
static struct sigaction saved[NSIGS];
static int started;
static int pipe_w = -1; /* written by the handler */
static weft_fd *pipe_r;
static pid_t owner; /* the process whose dispatcher reads the pipe */

static void handler(int sig)
{
	int e = errno;
	if (getpid() != owner) {
		/* A child between fork() and exec shares the pipe: its signal
		 * must not reach the parent's channels. It takes the action it
		 * would have had without weft (the default: end the child). */
		sigaction(sig, &saved[sig], NULL);
		raise(sig); /* blocked here (sa_mask), delivered on return */
		errno = e;
		return;
	}
	unsigned char b = (unsigned char)sig;
	/* Full pipe (a storm): the signal is dropped, as a full channel's is. */
	ssize_t r = write(pipe_w, &b, 1);
	(void)r;
	errno = e;
}

static void dispatch(void *arg)
{
	(void)arg;
	unsigned char buf[128];
	for (;;) {
		size_t n;
		if (weft_read(pipe_r, buf, sizeof buf, &n) || n == 0)
			weft__fatal("signal: the notification pipe failed");
		for (size_t i = 0; i < n; i++) {
			int sig = buf[i];
			weft__lock(&lock);
			for (struct reg *r = regs; r; r = r->next)
				if (sig < NSIGS && r->want[sig])
					weft_chan_trysend(r->c, &sig);
			weft__unlock(&lock);
		}
	}
}

static int start_locked(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return errno;
	int err = weft_fd_open(p[0], &pipe_r);
	if (!err) {
		weft_go_options o = {.name = "signal dispatch"};
		err = weft_go_opts(dispatch, NULL, &o);
		if (err) {
			weft_fd_close(pipe_r);
			p[0] = -1;
		}
	}
	if (err) {
		if (p[0] >= 0)
			close(p[0]);
		close(p[1]);
		return err;
	}
	pipe_w = p[1];
	owner = getpid();
	started = 1;
	return 0;
}

/* Not weft's, and one the C library lets a program catch: glibc keeps the
 * first real-time signals (32 and 33, below SIGRTMIN) for its threads, and
 * its sigaction refuses them. */
static int catchable(int sig)
{
	struct sigaction cur;
	return sig > 0 && sig < NSIGS && sig != SIGKILL && sig != SIGSTOP && sig != SIGSEGV &&
	       sig != SIGBUS && sig != SIGFPE && sig != SIGILL && sig != SIGTRAP &&
	       sig != SIGURG /* weft's hog reports */ && (sig < 32 || sig >= SIGRTMIN) &&
	       sigaction(sig, NULL, &cur) == 0;
}

int weft_signal_notify(weft_chan *c, const int *sigs, int n)
{
	if (!c || !sigs || n < 1 || weft_chan_elem_size(c) != sizeof(int))
		return EINVAL;
	for (int i = 0; i < n; i++)
		if (!catchable(sigs[i]))
			return EINVAL;
	weft__lock(&lock);
	int err = started ? 0 : start_locked();
	if (err) {
		weft__unlock(&lock);
		return err;
	}
	struct reg *r = regs;
	while (r && r->c != c)
		r = r->next;
	if (!r) {
		r = weft__calloc(1, sizeof *r);
		if (!r) {
			weft__unlock(&lock);
			return ENOMEM;
		}
		r->c = weft_chan_retain(c);
		r->next = regs;
		regs = r;
	}
	for (int i = 0; i < n; i++) {
		int s = sigs[i];
		if (r->want[s])
			continue;
		r->want[s] = 1;
		if (wanted[s]++ == 0) {
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = handler;
			/* On the M's signal stack: a goroutine's may have too
			 * little room left for the kernel's signal frame. */
			sa.sa_flags = SA_RESTART | SA_ONSTACK;
			sigfillset(&sa.sa_mask);
			if (sigaction(s, &sa, &saved[s]) != 0) /* catchable() asked */
				weft__fatal("signal: sigaction(%d) failed: %s", s, strerror(errno));
		}
	}
	weft__unlock(&lock);
	return 0;
}

void weft_signal_stop(weft_chan *c)
{
	weft__lock(&lock);
	struct reg **pp = &regs;
	while (*pp && (*pp)->c != c)
		pp = &(*pp)->next;
	struct reg *r = *pp;
	if (r) {
		*pp = r->next;
		for (int s = 1; s < NSIGS; s++)
			if (r->want[s] && --wanted[s] == 0)
				sigaction(s, &saved[s], NULL);
	}
	weft__unlock(&lock);
	if (r) {
		weft_chan_release(r->c);
		weft__free(r);
	}
}
