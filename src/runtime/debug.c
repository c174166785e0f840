/* SPDX-License-Identifier: MIT */
/*
 * debug.c - what weft shows when things go wrong: goroutine dumps
 * (weft_dump, SIGQUIT, fatal errors), the stack-overflow report, and
 * backtraces of running hogs and of blocking calls that are stuck.
 *
 * Stack overflow: each M has an alternate signal stack, so a fault in a
 * guard page can be handled although the goroutine's stack is exhausted. The
 * SIGSEGV/SIGBUS handler checks whether the fault address (or the stack
 * pointer) lies in the running goroutine's guard page; if so it prints
 *   fatal error: goroutine 17 stack overflow (stack 64 KiB, created at f.c:42)
 * and aborts. A SIGSEGV that the kernel sends because a signal's frame did
 * not fit on a nearly full goroutine stack (a handler of the program's own
 * without SA_ONSTACK) gets its own fatal error. Any other fault (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL) goes to the handler that was installed before
 * ours (a sanitizer's, or the program's); where that is the default action
 * and a goroutine faulted, weft first says which one, where, and what
 * created it, as Go does, and the process then dies of the signal.
 *
 * Backtraces walk frame pointers (the build keeps them), bounded by the
 * goroutine's stack, and name frames with dladdr (executables need -rdynamic
 * for their own symbols).
 */

#include "sched.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "fatal.h"
#include "sanitizer.h"

#define ALTSTACK_BYTES (64 * 1024)
#define MAX_FRAMES 64

volatile sig_atomic_t weft__dump_requested;

static struct sigaction old_segv, old_bus, old_fpe, old_ill, old_quit;
static int hog_signal = SIGURG;

static const char *status_name(uint32_t st)
{
	switch (st) {
	case G_IDLE: return "idle";
	case G_RUNNABLE: return "runnable";
	case G_RUNNING: return "running";
	case G_WAITING: return "waiting";
	case G_SYSCALL: return "syscall";
	case G_DEAD: return "dead";
	}
	return "?";
}

static void print_frame(FILE *out, void *pc)
{
	Dl_info di;
	/* pc is a return address: look up the call instruction before it. */
	if (dladdr((char *)pc - 1, &di) && di.dli_sname)
		fprintf(out, "%s+0x%lx\n\t%s\n", di.dli_sname,
			(unsigned long)((char *)pc - (char *)di.dli_saddr),
			di.dli_fname ? di.dli_fname : "?");
	else if (dladdr((char *)pc - 1, &di) && di.dli_fname)
		fprintf(out, "%p\n\t%s+0x%lx\n", pc, di.dli_fname,
			(unsigned long)((char *)pc - (char *)di.dli_fbase));
	else
		fprintf(out, "%p\n", pc);
}

/* Where a parked G's saved frame pointer and return address sit, in words
 * from its saved sp, and the switch frame's size (switch_*.S). Both
 * architectures keep the return address in the word after the frame
 * pointer, in the switch frame and in every frame record. */
#if defined(__x86_64__)
enum { SWITCH_FP_WORD = 6, SWITCH_FRAME_BYTES = 64 };
#elif defined(__aarch64__)
enum { SWITCH_FP_WORD = 10, SWITCH_FRAME_BYTES = 176 };
#endif

/* The stack pointer, program counter and frame pointer of a signal's
 * interrupted context (0 where unknown). */
static uintptr_t uc_sp(void *ucv)
{
#if defined(__x86_64__)
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.sp;
#else
	(void)ucv;
	return 0;
#endif
}

#if defined(__x86_64__) || defined(__aarch64__)
static uintptr_t uc_pc(void *ucv)
{
#if defined(__x86_64__)
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP];
#else
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.pc;
#endif
}

static uintptr_t uc_fp(void *ucv)
{
#if defined(__x86_64__)
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RBP];
#else
	return (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.regs[29];
#endif
}
#endif

/* What reads another goroutine's stack, which its owner may be writing:
 * not instrumented by the sanitizers. */
#if defined(WEFT_TSAN)
#define STACK_READER __attribute__((no_sanitize("thread")))
#elif defined(WEFT_ASAN)
#define STACK_READER __attribute__((no_sanitize("address")))
#else
#define STACK_READER
#endif

/* The return addresses of the frame chain that starts at fp, with pc (the
 * return address into fp's frame) first: at most max, bounded by g's stack.
 * Racy by nature when the G moves on while we read: every read stays
 * inside its stack, so the worst is a garbled trace. */
STACK_READER static int walk_chain(struct weft__g *g, uintptr_t fp, void *pc, void **frames, int max)
{
	uintptr_t lo = (uintptr_t)g->stack_lo, hi = (uintptr_t)g;
	int n = 0;
	while (n < max && pc) {
		frames[n++] = pc;
		if (fp < lo || fp + 16 > hi || (fp & 7))
			break;
		uintptr_t next = ((uintptr_t *)fp)[0];
		pc = (void *)((uintptr_t *)fp)[1];
		if (next <= fp)
			break;
		fp = next;
	}
	return n;
}

/* Print a parked G's frames (the layout of the switch frame is in
 * switch_*.S). */
STACK_READER static void walk_parked(FILE *out, struct weft__g *g)
{
#if defined(__x86_64__) || defined(__aarch64__)
	uintptr_t lo = (uintptr_t)g->stack_lo, hi = (uintptr_t)g;
	uintptr_t sp = (uintptr_t)__atomic_load_n(&g->sp, __ATOMIC_RELAXED);
	if (sp < lo || sp + SWITCH_FRAME_BYTES > hi)
		return;
	void *frames[MAX_FRAMES];
	int n = walk_chain(g, ((uintptr_t *)sp)[SWITCH_FP_WORD],
			   (void *)((uintptr_t *)sp)[SWITCH_FP_WORD + 1], frames, MAX_FRAMES);
	for (int i = 0; i < n; i++)
		print_frame(out, frames[i]);
#else
	(void)out;
	(void)g;
#endif
}

STACK_READER int weft__syscall_frames(struct weft__g *g, void **frames, int max)
{
#if defined(__x86_64__) || defined(__aarch64__)
	return walk_chain(g, __atomic_load_n(&g->sys_fp, __ATOMIC_RELAXED),
			  __atomic_load_n(&g->sys_pc, __ATOMIC_RELAXED), frames, max);
#else
	(void)g;
	(void)frames;
	(void)max;
	return 0;
#endif
}

static void format_wait(char *buf, size_t n, struct weft__g *g, uint32_t st)
{
	const char *reason = __atomic_load_n(&g->wait_reason, __ATOMIC_RELAXED);
	const char *what = st == G_WAITING && reason ? reason : status_name(st);
	int64_t since = __atomic_load_n(&g->wait_since, __ATOMIC_RELAXED);
	int64_t now = __atomic_load_n(&weft__coarse_now, __ATOMIC_RELAXED);
	int64_t waited = st == G_WAITING && since ? now - since : 0;
	if (waited >= 60LL * 1000000000)
		snprintf(buf, n, "%s, %lld minutes", what, (long long)(waited / 60000000000LL));
	else if (waited >= 1000000000)
		snprintf(buf, n, "%s, %lld seconds", what, (long long)(waited / 1000000000));
	else
		snprintf(buf, n, "%s", what);
}

void weft__dump_fd(FILE *out)
{
	struct weft__sched *s = &weft__sched;
	weft__lock(&s->allg_lock);
	for (struct weft__g *g = s->allg; g; g = g->allnext) {
		uint32_t st = __atomic_load_n(&g->status, __ATOMIC_ACQUIRE);
		if (st == G_IDLE || st == G_DEAD)
			continue;
		char buf[128], name[sizeof g->name];
		format_wait(buf, sizeof buf, g, st);
		/* Copy the name byte by byte here (this file is not instrumented
		 * under TSan; fprintf is, and the name's writer is another G). */
		for (size_t i = 0; i < sizeof name; i++)
			name[i] = g->named ? g->name[i] : 0;
		name[sizeof name - 1] = 0;
		fprintf(out, "goroutine %llu [%s]%s%s%s:\n", (unsigned long long)g->id, buf,
			name[0] ? " \"" : "", name, name[0] ? "\"" : "");
		if (st == G_WAITING || st == G_RUNNABLE) {
			walk_parked(out, g);
		} else if (st == G_SYSCALL) {
			void *frames[MAX_FRAMES];
			int n = weft__syscall_frames(g, frames, MAX_FRAMES);
			for (int i = 0; i < n; i++)
				print_frame(out, frames[i]);
		} else {
			fprintf(out, "\t(running on another thread: no backtrace)\n");
		}
		fprintf(out, "created at %s:%d\n\n", g->file ? g->file : "?", g->line);
	}
	weft__unlock(&s->allg_lock);
	fflush(out);
}

void weft_dump(FILE *out)
{
	weft__start();
	weft__dump_fd(out ? out : stderr);
}

static void dump_for_fatal(void)
{
	fprintf(stderr, "\n");
	weft__dump_fd(stderr);
}

/* ---------------------------------------------------------------- signals */

/* Whether old is the default action (no handler of anyone else's). */
static int is_default(const struct sigaction *old)
{
	if (old->sa_flags & SA_SIGINFO)
		return !old->sa_sigaction;
	return old->sa_handler == SIG_DFL;
}

static void chain(int sig, siginfo_t *si, void *uc, struct sigaction *old)
{
	/* SIG_IGN and SIG_DFL are values of the handler, SA_SIGINFO or not
	 * (sa_handler and sa_sigaction share their storage). */
	if (old->sa_handler == SIG_IGN) {
		/* Sent to a program that ignores it: ignored, as without us.
		 * (A fault, which the kernel forces through an ignoring
		 * action, comes again below, to the default action.) */
		if (si->si_code <= 0)
			return;
	} else if (old->sa_handler != SIG_DFL) {
		if (old->sa_flags & SA_SIGINFO)
			old->sa_sigaction(sig, si, uc);
		else
			old->sa_handler(sig);
		return;
	}
	/* Default action: restore it and let the fault happen again. A
	 * signal that another process or thread sent (kill, tgkill, sigqueue)
	 * will not happen again by itself: send it once more (not blocked:
	 * SA_NODEFER). */
	signal(sig, SIG_DFL);
	if (si->si_code <= 0)
		raise(sig);
}

/* The stack a signal's frame takes, plus some for its handler: the
 * kernel's own figure where it gives one (AVX-512 state makes it ~3.5 KiB). */
static uintptr_t sigframe_room = 4096 + 1024;

/* A general-protection fault (x86-64: a non-canonical address such as
 * 0xdeadbeefdeadbeef, a privileged instruction): also SIGSEGV with SI_KERNEL
 * and no address, but the program's own doing, not a signal frame that did
 * not fit. */
static int general_protection(void *ucv)
{
#if defined(__x86_64__)
	return ((ucontext_t *)ucv)->uc_mcontext.gregs[REG_TRAPNO] == 13;
#else
	(void)ucv;
	return 0;
#endif
}

/* fatal error for a signal that had no room: see fault_handler. */
static void no_room_for_signal(struct weft__g *g, uintptr_t left)
{
	char buf[320];
	int n = snprintf(buf, sizeof buf,
			 "fatal error: goroutine %llu (created at %s:%d) got a signal with %lu "
			 "bytes of stack left, too few for its frame: a handler installed "
			 "without SA_ONSTACK? (the signal is lost)\n",
			 (unsigned long long)g->id, g->file ? g->file : "?", g->line,
			 (unsigned long)left);
	ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
	(void)r;
	signal(SIGABRT, SIG_DFL);
	abort();
}

static const char *signal_words(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV: segmentation violation";
	case SIGBUS: return "SIGBUS: bus error";
	case SIGFPE: return "SIGFPE: arithmetic exception";
	case SIGILL: return "SIGILL: illegal instruction";
	}
	return "signal";
}

/*
 * A fault in goroutine g that no handler of the program's own or a
 * sanitizer's will report: say which goroutine faulted, where, and what
 * created it, as Go's crash report does. The default action follows (the
 * process dies of the signal, with its core dump). The fault is the
 * thread's own doing, so the locks stdio and dladdr take are free, or held
 * by this thread (both recursive), as in a dump.
 */
static void report_fault(struct weft__g *g, int sig, siginfo_t *si, void *ucv)
{
	char name[sizeof g->name];
	for (size_t i = 0; i < sizeof name; i++)
		name[i] = g->named ? g->name[i] : 0;
	name[sizeof name - 1] = 0;
	char why[64];
	if (si->si_code > 0) /* a fault: the address it was at */
		snprintf(why, sizeof why, "code %d, address %p", si->si_code, si->si_addr);
	else
		snprintf(why, sizeof why, "sent by process %ld", (long)si->si_pid);
	fprintf(stderr, "unexpected signal %s (%s) in goroutine %llu%s%s%s:\n", signal_words(sig),
		why, (unsigned long long)g->id, name[0] ? " \"" : "", name, name[0] ? "\"" : "");
#if defined(__x86_64__) || defined(__aarch64__)
	/* The faulting instruction (print_frame looks up the byte before a
	 * return address), or, for a call through a null pointer, the
	 * caller's return address: the word at sp (x86-64) or the link
	 * register (aarch64). Then the frame chain from fp. */
	uintptr_t pc = uc_pc(ucv), first = pc + 1;
	if (!pc) {
#if defined(__x86_64__)
		uintptr_t sp = uc_sp(ucv);
		first = sp >= (uintptr_t)g->stack_lo && sp + 8 <= (uintptr_t)g ? *(uintptr_t *)sp : 0;
#else
		first = (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.regs[30];
#endif
	}
	void *frames[MAX_FRAMES];
	int n = walk_chain(g, uc_fp(ucv), (void *)first, frames, MAX_FRAMES);
	for (int i = 0; i < n; i++)
		print_frame(stderr, frames[i]);
#else
	(void)ucv;
#endif
	fprintf(stderr, "created at %s:%d\n", g->file ? g->file : "?", g->line);
	fflush(stderr);
}

static void fault_handler(int sig, siginfo_t *si, void *ucv)
{
	struct weft__m *m = weft__m_get();
	struct weft__g *g = m ? m->curg : NULL;
	if (g) {
		uintptr_t sp = uc_sp(ucv);
		size_t pg = weft__page_size();
		/* A SIGSEGV the kernel sends with no fault address while the
		 * goroutine has less stack left than a signal's frame: it could
		 * not build the frame of a signal whose handler runs on the
		 * current stack. Returning would resume the goroutine with that
		 * signal lost; say what happened instead. (weft's own handlers
		 * use the M's signal stack.) */
		if (sig == SIGSEGV && si->si_code == SI_KERNEL && !general_protection(ucv) &&
		    sp >= (uintptr_t)g->stack_lo &&
		    sp < (uintptr_t)g->stack_lo + sigframe_room)
			no_room_for_signal(g, sp - (uintptr_t)g->stack_lo);
		if (weft__stack_is_guard(g, si->si_addr) ||
		    (sp && sp < (uintptr_t)g->stack_lo + 256 &&
		     sp + 16 * pg >= (uintptr_t)g->stack_lo)) {
			char buf[256];
			size_t kib = (g->stack_size + 1023) / 1024; /* a colour's bytes (stack.c) */
			int n = snprintf(buf, sizeof buf,
					 "fatal error: goroutine %llu stack overflow (stack %zu KiB, "
					 "created at %s:%d)\n", (unsigned long long)g->id, kib,
					 g->file ? g->file : "?", g->line);
			ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
			(void)r;
			signal(SIGABRT, SIG_DFL);
			abort();
		}
	}
	struct sigaction *old = sig == SIGBUS   ? &old_bus
	                        : sig == SIGFPE ? &old_fpe
	                        : sig == SIGILL ? &old_ill
	                                        : &old_segv;
	if (g && is_default(old))
		report_fault(g, sig, si, ucv);
	chain(sig, si, ucv, old);
}

static void quit_handler(int sig)
{
	(void)sig;
	weft__dump_requested = 1;
}

static void hog_handler(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	(void)si;
	void *frames[MAX_FRAMES];
	int n = 0;
#if defined(__x86_64__) || defined(__aarch64__)
	struct weft__m *m = weft__m_get();
	uintptr_t lo = 0, hi = 0;
	if (m && m->curg) {
		lo = (uintptr_t)m->curg->stack_lo;
		hi = (uintptr_t)m->curg;
	} else if (m) {
		lo = (uintptr_t)m->g0_lo;
		hi = lo + m->g0_size;
	}
	frames[n++] = (void *)uc_pc(ucv);
	uintptr_t fp = uc_fp(ucv);
	while (n < MAX_FRAMES && fp >= lo && fp + 16 <= hi && !(fp & 7)) {
		void *pc = (void *)((uintptr_t *)fp)[1];
		if (!pc)
			break;
		frames[n++] = pc;
		uintptr_t next = ((uintptr_t *)fp)[0];
		if (next <= fp)
			break;
		fp = next;
	}
#else
	(void)ucv;
#endif
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
}

void weft__hog_backtrace(pid_t tid)
{
	if (tid > 0)
		syscall(SYS_tgkill, getpid(), tid, hog_signal);
}

void weft__signals_init_thread(struct weft__m *m)
{
	void *st = mmap(NULL, ALTSTACK_BYTES, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (st == MAP_FAILED)
		return; /* overflow reports degrade to a plain crash on this M */
	stack_t ss = { .ss_sp = st, .ss_size = ALTSTACK_BYTES, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) == 0)
		m->altstack = st;
	else
		munmap(st, ALTSTACK_BYTES);
}

void weft__signals_exit_thread(struct weft__m *m)
{
	if (!m->altstack)
		return;
	/* On the thread's own stack (g0), never on the signal stack. */
	stack_t ss = { .ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE };
	if (sigaltstack(&ss, NULL) == 0) {
		munmap(m->altstack, ALTSTACK_BYTES);
		m->altstack = NULL;
	}
}

void weft__debug_init(void)
{
#ifdef _SC_MINSIGSTKSZ
	long room = sysconf(_SC_MINSIGSTKSZ);
	if (room > 0 && room < 64 * 1024)
		sigframe_room = (uintptr_t)room + 1024;
#endif
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sa.sa_sigaction = fault_handler;
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGFPE, &sa, &old_fpe);
	sigaction(SIGILL, &sa, &old_ill);

	struct sigaction q;
	memset(&q, 0, sizeof q);
	sigemptyset(&q.sa_mask);
	q.sa_handler = quit_handler;
	q.sa_flags = SA_RESTART | SA_ONSTACK;
	sigaction(SIGQUIT, &q, &old_quit);

	/* Only in WEFT_DEBUG=hogs mode, the one that sends it: otherwise a
	 * SIGURG (out-of-band data, kill -URG) is the program's, ignored by
	 * default, and a handler here would print a stray backtrace and cut
	 * a nanosleep or poll short with EINTR. */
	if (weft__sched.hogs) {
		struct sigaction h;
		memset(&h, 0, sizeof h);
		sigemptyset(&h.sa_mask);
		h.sa_sigaction = hog_handler;
		h.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
		sigaction(hog_signal, &h, NULL);
	}

	weft__fatal_hook = dump_for_fatal;
	/* Make sure backtrace_symbols_fd has loaded libgcc before a signal
	 * handler needs it. */
	void *f[1];
	backtrace(f, 1);
}
