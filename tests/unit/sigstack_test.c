/* SPDX-License-Identifier: MIT */
/*
 * sigstack_test.c - signals that arrive while a goroutine has almost no
 * stack left. The kernel builds a signal's frame (about 3 KiB with AVX-512
 * state) on the stack the thread is on unless the handler asks for the
 * thread's signal stack (SA_ONSTACK); where the frame does not fit it sends
 * SIGSEGV instead, with no fault address. Both of weft's own handlers that
 * a user's signal reaches, weft_signal_notify's and the SIGQUIT dump's, must
 * run on the M's signal stack; a handler of the program's own without
 * SA_ONSTACK gets a fatal error that says so, instead of the signal lost and
 * the goroutine resumed.
 *
 * Each case runs in a child process (test_child_run): a goroutine with a
 * 64 KiB stack recurses until less than LEAVE bytes are left (its stack's
 * lowest byte is read from its G record: this is a unit test), then spins
 * without calling anything, and the child's main thread sends the signal to
 * that goroutine's thread (tgkill).
 */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sched.h"

/* Less than any signal frame needs (x86-64 with SSE state only: ~1 KiB),
 * more than the spin loop needs. */
#define LEAVE 384
/* ThreadSanitizer catches every signal itself and runs the program's
 * handler later, from the interrupted thread's next call into its runtime,
 * on the thread's own stack: a nearly full one overflows whatever the
 * handler's flags. */
#define TSAN_SKIP "ThreadSanitizer runs handlers later, on the thread's own stack"
#define DEEP_STACK (64 * 1024)

struct deep {
	atomic_int tid;  /* the goroutine's thread, once it is deep */
	atomic_int stop; /* set by main: come back up */
	uintptr_t lo;    /* the goroutine's lowest usable stack byte */
	weft_wg done;
};

__attribute__((noinline)) static void dive(struct deep *d, int depth)
{
	volatile char pad[128];
	pad[0] = (char)depth;
	if ((uintptr_t)pad - d->lo > LEAVE) {
		dive(d, depth + 1);
		return;
	}
	/* tid was read before the dive: no call from down here (a first call
	 * through the PLT binds the symbol lazily, on this stack). */
	atomic_store(&d->tid, -atomic_load(&d->tid));
	for (unsigned long i = 0; !atomic_load(&d->stop) && i < (1UL << 34); i++)
		;
	(void)pad[0];
}

static void deep_body(void *arg)
{
	struct deep *d = arg;
	d->lo = (uintptr_t)weft__m_get()->curg->stack_lo;
	/* Negative until deep: the sign says when. */
	atomic_store(&d->tid, -(int)syscall(SYS_gettid));
	dive(d, 0);
	weft_wg_done(&d->done);
}

/* Start the goroutine and wait (from main, a goroutine) until it is deep;
 * returns its thread. */
static int go_deep(struct deep *d)
{
	weft_go_options o = {.stack_size = DEEP_STACK, .name = "deep"};
	d->done = (weft_wg)WEFT_WG_INIT;
	weft_wg_add(&d->done, 1);
	ASSERT_EQ(weft_go_opts(deep_body, d, &o), 0);
	int64_t end = weft_now() + 5000 * TEST_MS * test_slowdown();
	while (atomic_load(&d->tid) <= 0 && weft_now() < end)
		weft_sleep(TEST_MS);
	ASSERT(atomic_load(&d->tid) > 0);
	return atomic_load(&d->tid);
}

static struct deep usr1_deep;

static int usr1_main(void *arg)
{
	(void)arg;
	weft_chan *c = NULL;
	ASSERT_EQ(weft_chan_make(&c, sizeof(int), 4), 0);
	const int usr1 = SIGUSR1;
	ASSERT_EQ(weft_signal_notify(c, &usr1, 1), 0);
	int tid = go_deep(&usr1_deep);
	ASSERT_EQ(syscall(SYS_tgkill, getpid(), tid, SIGUSR1), 0);
	int sig = 0;
	int r = weft_chan_recv_until(c, &sig, weft_now() + 2000 * TEST_MS * test_slowdown());
	atomic_store(&usr1_deep.stop, 1);
	ASSERT_EQ(r, 0);
	ASSERT_EQ(sig, SIGUSR1);
	weft_wg_wait(&usr1_deep.done);
	/* The overflow report is still armed. */
	struct sigaction sa;
	ASSERT_EQ(sigaction(SIGSEGV, NULL, &sa), 0);
	ASSERT((sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction != NULL);
	weft_signal_stop(c);
	weft_chan_release(c);
	printf("done\n");
	return 0;
}

CHILD(usr1_deep)
{
	return weft_main(usr1_main, NULL);
}

/*
 * SIGUSR1 for weft_signal_notify, sent to a goroutine's thread while it has
 * under LEAVE bytes of stack: it reaches the channel, the goroutine comes
 * back up, and SIGSEGV still has weft's handler. Guard: the handler without
 * SA_ONSTACK (the receive times out: the kernel could not deliver it).
 */
TEST_THREAD(notified_signal_on_a_nearly_full_stack)
{
	if (TEST_TSAN)
		SKIP(TSAN_SKIP);
	test_child c;
	test_child_run("usr1_deep", NULL, 30000, &c);
	ASSERT_CHILD_EXIT(&c, 0);
	ASSERT_CONTAINS(c.out, "done\n");
	test_child_free(&c);
}

static struct deep quit_deep;

static int quit_main(void *arg)
{
	(void)arg;
	int tid = go_deep(&quit_deep);
	ASSERT_EQ(syscall(SYS_tgkill, getpid(), tid, SIGQUIT), 0);
	weft_sleep(3000 * TEST_MS * test_slowdown());
	atomic_store(&quit_deep.stop, 1);
	weft_wg_wait(&quit_deep.done);
	printf("no dump\n");
	return 1;
}

CHILD(quit_deep)
{
	return weft_main(quit_main, NULL);
}

/*
 * SIGQUIT sent to that goroutine's thread: the dump comes (every goroutine,
 * the deep one by name) and the process exits with status 2, as Go's.
 * Guard: the SIGQUIT handler without SA_ONSTACK (no dump: the child says
 * "no dump" and exits 1).
 */
TEST_THREAD(sigquit_on_a_nearly_full_stack)
{
	if (TEST_TSAN)
		SKIP(TSAN_SKIP);
	test_child c;
	test_child_run("quit_deep", NULL, 30000, &c);
	ASSERT_CHILD_EXIT(&c, 2);
	ASSERT_CONTAINS(c.err, "\"deep\"");
	ASSERT_NOT_CONTAINS(c.out, "no dump");
	test_child_free(&c);
}

static struct deep own_deep;
static atomic_int own_caught;

static void own_handler(int sig)
{
	(void)sig;
	atomic_store(&own_caught, 1);
}

static int own_main(void *arg)
{
	(void)arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = own_handler; /* no SA_ONSTACK */
	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	int tid = go_deep(&own_deep);
	ASSERT_EQ(syscall(SYS_tgkill, getpid(), tid, SIGUSR1), 0);
	int64_t end = weft_now() + 2000 * TEST_MS * test_slowdown();
	while (!atomic_load(&own_caught) && weft_now() < end)
		weft_sleep(TEST_MS);
	atomic_store(&own_deep.stop, 1);
	weft_wg_wait(&own_deep.done);
	printf(atomic_load(&own_caught) ? "caught\n" : "lost\n");
	return 0;
}

CHILD(own_deep)
{
	return weft_main(own_main, NULL);
}

/*
 * The program's own handler, installed without SA_ONSTACK, for a signal sent
 * to a goroutine with under LEAVE bytes of stack: the kernel cannot build
 * the frame and sends SIGSEGV with no address instead. weft says so (a
 * fatal error naming SA_ONSTACK and the goroutine) and aborts, rather than
 * let the goroutine go on with the signal lost. Guard: the fault taken for
 * any other and given back to the default action, which resumed the
 * goroutine (the child says "lost" and exits 0).
 */
TEST_THREAD(own_handler_without_onstack_is_reported)
{
	if (TEST_TSAN)
		SKIP(TSAN_SKIP);
	test_child c;
	test_child_run("own_deep", NULL, 30000, &c);
	ASSERT_CHILD_SIGNAL(&c, SIGABRT);
	ASSERT_CONTAINS(c.err, "without SA_ONSTACK");
	ASSERT_NOT_CONTAINS(c.out, "lost");
	test_child_free(&c);
}

#if defined(__x86_64__)
/* ---------------------------------------------------------------- a fault that looks alike */

/* A dereference of a non-canonical address (0xdeadbeefdeadbeef, as freed
 * memory often holds) is a general-protection fault: SIGSEGV with si_code
 * SI_KERNEL and no address, as the kernel also sends when a signal's frame
 * does not fit; made here with under LEAVE bytes of stack left. */
static volatile long gp_sink;
static uintptr_t gp_lo;

__attribute__((noinline)) static void gp_dive(int depth)
{
	volatile char pad[128];
	pad[0] = (char)depth;
	if ((uintptr_t)pad - gp_lo > LEAVE) {
		gp_dive(depth + 1);
		gp_sink += pad[0];
		return;
	}
	gp_sink = *(volatile long *)0xdeadbeefdeadbeefULL;
}

static void gp_body(void *arg)
{
	(void)arg;
	gp_lo = (uintptr_t)weft__m_get()->curg->stack_lo;
	gp_dive(0);
	printf("survived\n");
}

static int gp_main(void *arg)
{
	(void)arg;
	weft_go_options o = {.stack_size = DEEP_STACK, .name = "gp"};
	ASSERT_EQ(weft_go_opts(gp_body, NULL, &o), 0);
	weft_sleep(2000 * TEST_MS);
	return 0;
}

CHILD(gp_deep)
{
	return weft_main(gp_main, NULL);
}

/*
 * A general-protection fault near the end of a goroutine's stack is an
 * unexpected SIGSEGV, reported as one, and the process dies of it. Guards:
 * taking it for a signal whose frame did not fit ("too few for its frame: a
 * handler installed without SA_ONSTACK? (the signal is lost)"), then
 * SIGABRT.
 */
TEST_THREAD(general_protection_near_the_end_is_a_fault)
{
	test_child c;
	test_child_run("gp_deep", NULL, 30000, &c);
	if (TEST_ASAN || TEST_TSAN) { /* the sanitizer reports, its way */
		ASSERT(!c.exited || c.exit_code != 0);
		test_child_free(&c);
		return;
	}
	ASSERT_CHILD_SIGNAL(&c, SIGSEGV);
	ASSERT_CONTAINS(c.err, "unexpected signal SIGSEGV");
	ASSERT_NOT_CONTAINS(c.err, "SA_ONSTACK");
	test_child_free(&c);
}
#endif
