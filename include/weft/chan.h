/* SPDX-License-Identifier: MIT */
/*
 * weft/chan.h - channels, select, and time as channels (after, Timer,
 * Ticker, and AfterFunc's timer): Go's semantics, for goroutines and foreign
 * threads alike.
 *
 * A channel carries elements of one fixed size, set at creation (0 is allowed:
 * a "signal" channel, Go's chan struct{}). Unbuffered (capacity 0) channels
 * are rendezvous points: a send completes when a receiver takes the value. A
 * buffered channel is a FIFO ring of `cap` elements. A value passes from a
 * sender straight to a parked receiver (and from a parked sender to a
 * receiver) with one copy.
 *
 * Results, everywhere in this header:
 *   0          the operation happened (for a receive: a value came)
 *   EPIPE      the channel is closed: a send sent nothing; a receive found the
 *              channel closed and drained and stored a zero element (Go's
 *              `v, ok := <-c` with ok == false). Go panics on a send to a closed
 *              channel; weft returns EPIPE instead.
 *   EAGAIN     a try form would have had to wait
 *   ETIMEDOUT  an _until form reached its deadline first
 *
 * A NULL channel is Go's nil channel: sending to or receiving from it blocks
 * forever (try forms return EAGAIN, _until forms wait for the deadline), and a
 * select case on it is never ready.
 *
 * Deadlines are absolute times on weft_now()'s clock (nanoseconds,
 * CLOCK_MONOTONIC): weft_now() + 50 * WEFT_MILLISECOND. With a deadline in the
 * past an _until form does not wait: it completes if it can, else returns
 * ETIMEDOUT. An _until form that must wait arms a timer in its P's timer heap,
 * which grows (doubling) when full: out of memory there is a fatal error
 * ("out of memory adding a timer"), as an allocation failure is in Go.
 *
 * Ownership: weft_chan_make() returns one reference. weft_chan_retain() adds
 * one, weft_chan_release() drops one; the last release frees the channel and
 * any elements still buffered (elements are plain bytes: weft never frees what
 * they point to). Every call must start with a reference in hand: the
 * caller's own, or one that its owner keeps until the call has returned or
 * blocked. A call that blocks then holds a reference of its own while it
 * waits, so the channel's holders may release theirs meanwhile (a waiter stays
 * blocked until someone closes the channel or its deadline passes: keep a
 * reference to close it with). Closing is separate from releasing, as in Go:
 * close says "no more values", release says "I no longer use this handle".
 *
 * Misuse is a fatal error naming it (Go's panics): closing a closed channel
 * ("close of closed channel"), closing NULL ("close of nil channel"),
 * releasing or retaining a channel already freed (when it can be detected).
 */
#ifndef WEFT_CHAN_H
#define WEFT_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "runtime.h" /* weft_fn */

WEFT_BEGIN_DECLS

typedef struct weft_chan weft_chan;

/* The largest element size weft_chan_make() accepts (Go's limit too). */
#define WEFT_CHAN_MAX_ELEM ((size_t)65535)

/*
 * weft_chan_make - create a channel of elements of elem_size bytes, with room
 * for cap elements (0: unbuffered). *out gets the channel, with one reference
 * owned by the caller.
 * Errors: EINVAL (out is NULL, or elem_size > WEFT_CHAN_MAX_ELEM), ENOMEM (no
 * memory for cap * elem_size bytes and the channel itself; also when that
 * product overflows or exceeds 2^47 bytes). *out is untouched on error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_chan_make(weft_chan **out, size_t elem_size, size_t cap);

/* weft_chan_retain - add a reference to c and return c. NULL passes through.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API weft_chan *weft_chan_retain(weft_chan *c);

/*
 * weft_chan_release - drop a reference; the last one frees c (buffered
 * elements are discarded). NULL is ignored. Using c after dropping your last
 * reference is a bug; releasing a freed channel is a fatal error when it can
 * be detected. Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_chan_release(weft_chan *c);

/*
 * weft_chan_send - send the element at elem (elem_size bytes are copied out
 * of it before the call returns; elem may be NULL when elem_size is 0).
 * Waits while the channel is unbuffered with no receiver, or full.
 * Returns 0, or EPIPE if c is closed (before or while waiting; nothing sent).
 * Errors: EINVAL (elem NULL while elem_size is not 0; nothing sent). The
 * same holds for every send form below, and for a send case of a select.
 * Blocks: yes (forever if c is NULL). Thread-safety: any thread.
 */
WEFT_API int weft_chan_send(weft_chan *c, const void *elem);

/* weft_chan_trysend - weft_chan_send() if it can complete now; else EAGAIN. */
WEFT_API int weft_chan_trysend(weft_chan *c, const void *elem);

/* weft_chan_send_until - weft_chan_send() giving up at deadline_ns with
 * ETIMEDOUT (nothing sent). */
WEFT_API int weft_chan_send_until(weft_chan *c, const void *elem, int64_t deadline_ns);

/*
 * weft_chan_recv - receive an element into out (elem_size bytes; out may be
 * NULL to discard the value). Waits while nothing is buffered and no sender
 * waits. Returns 0 when a value came, or EPIPE when c is closed and drained
 * (then out, if not NULL, is zeroed). Values sent before close are all
 * received before EPIPE is returned.
 * Blocks: yes (forever if c is NULL). Thread-safety: any thread.
 */
WEFT_API int weft_chan_recv(weft_chan *c, void *out);

/* weft_chan_tryrecv - weft_chan_recv() if it can complete now; else EAGAIN. */
WEFT_API int weft_chan_tryrecv(weft_chan *c, void *out);

/* weft_chan_recv_until - weft_chan_recv() giving up at deadline_ns with
 * ETIMEDOUT (out untouched). */
WEFT_API int weft_chan_recv_until(weft_chan *c, void *out, int64_t deadline_ns);

/*
 * weft_chan_trysend_n - send elems[0], elems[1], ... elems[n-1] (n elements
 * of elem_size bytes, one after the other; copied out before the call
 * returns) as far as that can be done now without waiting: first to parked
 * receivers, oldest first, then into free buffer space. The elements go in
 * the order n weft_chan_trysend() calls would send them, but under one
 * acquisition of the channel's lock. *sent gets how many were sent: always a
 * prefix, elems[0..*sent); the caller still owns the rest (send them with
 * weft_chan_send(), say). At most 32 parked receivers are served per call,
 * so *sent may be smaller than what could go now: call again.
 * Returns 0 with *sent >= 1; EAGAIN with *sent = 0 when nothing could be sent
 * now (also for a NULL c); EPIPE with *sent = 0 when c is closed.
 * Errors: EINVAL (sent NULL, n 0, elems NULL with elem_size > 0; *sent is 0
 * when sent is not NULL). elems may be NULL when elem_size is 0.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_chan_trysend_n(weft_chan *c, const void *elems, size_t n, size_t *sent);

/*
 * weft_chan_tryrecv_n - receive up to max elements that can be received now
 * without waiting into out[0], out[1], ... (elem_size bytes each, one after
 * the other), in the order max weft_chan_tryrecv() calls would get them:
 * the buffered ones from the head, each slot a receive frees refilled from
 * the oldest parked sender, as a single receive does; on an unbuffered
 * channel, from the parked senders, oldest first. One acquisition of the
 * channel's lock. *n gets how many were received. At most 32 parked senders
 * are served per call, so *n may be smaller than what was ready: call
 * again. out may be NULL to discard the elements.
 * Returns 0 with *n >= 1; EAGAIN with *n = 0 when nothing is ready (also for
 * a NULL c); EPIPE with *n = 0 when c is closed and drained (out
 * untouched: unlike weft_chan_recv(), nothing is zeroed).
 * Errors: EINVAL (n NULL, max 0; *n is 0 when n is not NULL).
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_chan_tryrecv_n(weft_chan *c, void *out, size_t max, size_t *n);

/*
 * weft_chan_close - no more values will be sent on c. Buffered values stay
 * receivable; then receivers get EPIPE. Every blocked receiver and sender is
 * woken (senders get EPIPE, and no value of theirs is received after the
 * close); with one P the blocked goroutines are woken in a cascade, each
 * waking the next as it leaves its wait, rather than all before close
 * returns. A blocked call whose deadline passes before its wake-up still
 * reports the close. Closing a closed channel, or NULL, is a fatal error.
 * Close does not drop a reference.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_chan_close(weft_chan *c);

/* weft_chan_len - elements buffered now (0 for NULL or unbuffered c): a
 * snapshot. Blocks: no. Thread-safety: any thread. */
WEFT_API size_t weft_chan_len(const weft_chan *c);

/* weft_chan_cap - the capacity given at creation (0 for NULL). */
WEFT_API size_t weft_chan_cap(const weft_chan *c);

/* weft_chan_elem_size - the element size given at creation (0 for NULL). */
WEFT_API size_t weft_chan_elem_size(const weft_chan *c);

/* weft_chan_closed - whether c has been closed (false for NULL): a snapshot,
 * for diagnostics; a receive is the way to act on it. */
WEFT_API bool weft_chan_closed(const weft_chan *c);

/* ---------------------------------------------------------------- select */

/* The direction of a select case. */
enum weft_dir { WEFT_RECV = 1, WEFT_SEND = 2 };

/*
 * weft_case - one case of a select. Fill chan, dir and elem; weft reads them
 * and writes nothing back into the array.
 *   chan  the channel; NULL makes the case never ready (Go's nil channel)
 *   dir   WEFT_SEND or WEFT_RECV
 *   elem  WEFT_SEND: the element to send (copied if the case is chosen);
 *         WEFT_RECV: where the received element goes, or NULL to discard it
 */
typedef struct weft_case {
	weft_chan *chan;
	int dir;
	void *elem;
} weft_case;

/* Case initialisers: weft_case cs[] = { WEFT_RECV_CASE(c1, &v), ... }; */
#define WEFT_RECV_CASE(ch, out) ((weft_case){ .chan = (ch), .dir = WEFT_RECV, .elem = (out) })
#define WEFT_SEND_CASE(ch, in) \
	((weft_case){ .chan = (ch), .dir = WEFT_SEND, .elem = (void *)(in) })

/*
 * weft_select - wait until one of the n cases can proceed, then do it, as Go's
 * select: when several are ready, one is chosen uniformly at random; channels
 * are locked in address order, so selects over the same channels in any order
 * never deadlock. *chosen gets the index of the case that happened.
 * Returns 0 (case *chosen sent or received a value), or EPIPE (case *chosen's
 * channel is closed: a receive case found it drained, and its elem, if not
 * NULL, is zeroed; a send case sent nothing).
 * With n == 0, or every channel NULL, it blocks forever (Go's `select {}`).
 * Errors: EINVAL (cases NULL with n > 0, n < 0, a dir that is neither
 * WEFT_SEND nor WEFT_RECV, a send case with a channel whose elem_size is not
 * 0 and a NULL elem, chosen NULL), ENOMEM (n above 16 needs an
 * allocation for its bookkeeping and there was no memory); *chosen is
 * untouched on these.
 * A channel may appear in several cases, in either direction; a select never
 * matches its own send case with its own receive case.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_select(const weft_case *cases, int n, int *chosen);

/*
 * weft_select_try - Go's select with a default case: if a case is ready, as
 * weft_select(); else EAGAIN at once (*chosen untouched).
 * Blocks: no.
 */
WEFT_API int weft_select_try(const weft_case *cases, int n, int *chosen);

/*
 * weft_select_until - weft_select() that gives up at deadline_ns with
 * ETIMEDOUT (*chosen untouched). Blocks: until a case or the deadline.
 */
WEFT_API int weft_select_until(const weft_case *cases, int n, int *chosen, int64_t deadline_ns);

/* ---------------------------------------------------------------- time as channels */

/*
 * weft_after - Go's time.After: *out gets a new channel (elements int64_t,
 * capacity 1) that receives one value, the weft_now() reading when it fired,
 * at weft_now() + duration_ns or soon after (a duration <= 0 fires at once).
 * The caller owns one reference. Releasing it before the timer fires stops the
 * timer and frees everything: there is no leak to wait out. (A call blocked on
 * the channel holds it meanwhile: the timer then runs on for it, and all is
 * freed once the last such call is over.)
 * Errors: EINVAL (out NULL), ENOMEM; *out is untouched on error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_after(weft_chan **out, int64_t duration_ns);

/*
 * weft_timer - Go's time.Timer: a one-shot timer whose channel (elements
 * int64_t, capacity 1) receives the weft_now() reading when it fires. It runs
 * on the per-P timer heaps of the scheduler, with no thread of its own.
 * As in Go 1.23 and later, weft_timer_stop() and weft_timer_reset() also
 * discard a value that fired but was not yet received, so after either
 * returns no stale value can be received.
 */
typedef struct weft_timer weft_timer;

/* weft_timer_new - a timer firing duration_ns from now (<= 0: at once).
 * Errors: EINVAL (out NULL), ENOMEM (also when the timer heap cannot grow;
 * a reset that finds no room there is a fatal error); *out is untouched on
 * error.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API int weft_timer_new(weft_timer **out, int64_t duration_ns);

/* weft_timer_chan - the timer's channel: borrowed, valid until
 * weft_timer_free() (weft_chan_retain() it to keep it longer). NULL for a
 * timer from weft_after_func(), which has none (NULL t: NULL). */
WEFT_API weft_chan *weft_timer_chan(weft_timer *t);

/* weft_timer_stop - stop t. Returns true if the call kept a value from being
 * received: it stopped a pending timer, or discarded a value that had fired
 * but was not yet received (Go 1.23's meaning); false if the value was
 * already received, or t was already stopped.
 * Blocks: no. Thread-safety: any thread, concurrently with everything. */
WEFT_API bool weft_timer_stop(weft_timer *t);

/* weft_timer_reset - make t fire duration_ns from now (whether it was
 * pending, fired or stopped). Returns what weft_timer_stop() would have.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API bool weft_timer_reset(weft_timer *t, int64_t duration_ns);

/* weft_timer_free - stop t and drop its reference to its channel. NULL is
 * ignored. Blocks: no (at most until a firing in progress on another thread
 * has finished). */
WEFT_API void weft_timer_free(weft_timer *t);

/*
 * weft_after_func - Go's time.AfterFunc: *out gets a timer that, duration_ns
 * from now (<= 0: at once), starts fn(arg) in a goroutine of its own. It has
 * no channel (weft_timer_chan() returns NULL); stop, reset and free are the
 * weft_timer calls, with Go's meaning for such a timer:
 *  - weft_timer_stop() returns true if it kept fn from being started (the
 *    timer was pending), false if fn's goroutine has already been started or
 *    the timer was stopped. It never waits for fn.
 *  - weft_timer_reset() makes it fire (and start fn once more) duration_ns
 *    from then, and returns what weft_timer_stop() would have.
 *  - weft_timer_free() stops it, waits out a firing in progress on another
 *    thread, and frees it; a goroutine fn already runs in is not affected.
 * Each firing starts one goroutine (weft_go()); fn owns nothing of the
 * timer's, and arg is the caller's to keep alive until fn is done with it.
 * If the goroutine cannot be started for want of memory, the timer stays
 * pending and tries again 1 ms later, the wait doubling to at most 100 ms:
 * fn is late, never dropped (and a stop meanwhile still cancels it).
 * Errors: EINVAL (out or fn NULL), ENOMEM; *out is untouched on error.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_after_func(weft_timer **out, int64_t duration_ns, weft_fn fn, void *arg);

/*
 * weft_ticker - Go's time.Ticker: its channel (elements int64_t, capacity 1)
 * receives the weft_now() reading every period. A slow receiver gets fewer
 * ticks, never a backlog (ticks it was not ready for are dropped), and the
 * schedule does not drift: tick k is due at start + k * period.
 */
typedef struct weft_ticker weft_ticker;

/* weft_ticker_new - a ticker with period_ns > 0.
 * Errors: EINVAL (out NULL, period_ns <= 0), ENOMEM; *out is untouched on
 * error. Blocks: no. */
WEFT_API int weft_ticker_new(weft_ticker **out, int64_t period_ns);

/* weft_ticker_chan - the ticker's channel: borrowed, valid until
 * weft_ticker_free(). */
WEFT_API weft_chan *weft_ticker_chan(weft_ticker *t);

/* weft_ticker_stop - no more ticks; a tick not yet received is discarded.
 * Blocks: no. Thread-safety: any thread. */
WEFT_API void weft_ticker_stop(weft_ticker *t);

/* weft_ticker_reset - restart t with a new period (ticking again if it was
 * stopped); a tick not yet received is discarded.
 * Errors: EINVAL (period_ns <= 0). Blocks: no. */
WEFT_API int weft_ticker_reset(weft_ticker *t, int64_t period_ns);

/* weft_ticker_free - stop t and drop its reference to its channel. NULL is
 * ignored. Blocks: as weft_timer_free(). */
WEFT_API void weft_ticker_free(weft_ticker *t);

/* ---------------------------------------------------------------- typed wrappers */

/*
 * WEFT_CHAN_DEFINE(name, T) - a type-safe wrapper over the plain API above (which
 * stays the contract): a struct type `name` holding a weft_chan *, and static
 * inline functions that take and give T values:
 *   int  name_make(name *c, size_t cap)     weft_chan_make(&c->raw, sizeof(T), cap)
 *   int  name_send(name c, T v)             weft_chan_send
 *   int  name_trysend(name c, T v)          weft_chan_trysend
 *   int  name_recv(name c, T *out)          weft_chan_recv
 *   int  name_tryrecv(name c, T *out)       weft_chan_tryrecv
 *   int  name_recv_until(name c, T *out, int64_t deadline)
 *   int  name_send_until(name c, T v, int64_t deadline)
 *   int  name_trysend_n(name c, const T *v, size_t n, size_t *sent)
 *                                           weft_chan_trysend_n
 *   int  name_tryrecv_n(name c, T *out, size_t max, size_t *n)
 *                                           weft_chan_tryrecv_n
 *   weft_case name_recv_case(name c, T *out)   a select case receiving into *out
 *   weft_case name_send_case(name c, const T *v) a select case sending *v (which
 *                                              must live until the select returns)
 *   name name_retain(name c)
 *   void name_close(name c), name_release(name c)
 * Example:
 *   WEFT_CHAN_DEFINE(int_chan, int)
 *   int_chan c;  int_chan_make(&c, 16);  int_chan_send(c, 42);
 *   for (int v; int_chan_recv(c, &v) == 0;) ...
 */
#define WEFT_CHAN_DEFINE(name, T)                                                          \
	typedef struct name {                                                              \
		weft_chan *raw;                                                            \
	} name;                                                                            \
	static inline int name##_make(name *c, size_t cap)                                 \
	{                                                                                  \
		return weft_chan_make(&c->raw, sizeof(T), cap);                           \
	}                                                                                  \
	static inline int name##_send(name c, T v)                                         \
	{                                                                                  \
		return weft_chan_send(c.raw, &v);                                          \
	}                                                                                  \
	static inline int name##_trysend(name c, T v)                                      \
	{                                                                                  \
		return weft_chan_trysend(c.raw, &v);                                       \
	}                                                                                  \
	static inline int name##_recv(name c, T *out)                                      \
	{                                                                                  \
		return weft_chan_recv(c.raw, out);                                         \
	}                                                                                  \
	static inline int name##_tryrecv(name c, T *out)                                   \
	{                                                                                  \
		return weft_chan_tryrecv(c.raw, out);                                      \
	}                                                                                  \
	static inline int name##_recv_until(name c, T *out, int64_t deadline)              \
	{                                                                                  \
		return weft_chan_recv_until(c.raw, out, deadline);                         \
	}                                                                                  \
	static inline int name##_send_until(name c, T v, int64_t deadline)                 \
	{                                                                                  \
		return weft_chan_send_until(c.raw, &v, deadline);                          \
	}                                                                                  \
	static inline int name##_trysend_n(name c, const T *v, size_t n, size_t *sent)    \
	{                                                                                  \
		return weft_chan_trysend_n(c.raw, v, n, sent);                             \
	}                                                                                  \
	static inline int name##_tryrecv_n(name c, T *out, size_t max, size_t *n)         \
	{                                                                                  \
		return weft_chan_tryrecv_n(c.raw, out, max, n);                            \
	}                                                                                  \
	static inline weft_case name##_recv_case(name c, T *out)                           \
	{                                                                                  \
		return WEFT_RECV_CASE(c.raw, out);                                         \
	}                                                                                  \
	static inline weft_case name##_send_case(name c, const T *v)                       \
	{                                                                                  \
		return WEFT_SEND_CASE(c.raw, v);                                           \
	}                                                                                  \
	static inline name name##_retain(name c)                                           \
	{                                                                                  \
		weft_chan_retain(c.raw);                                                   \
		return c;                                                                  \
	}                                                                                  \
	static inline void name##_close(name c)                                            \
	{                                                                                  \
		weft_chan_close(c.raw);                                                    \
	}                                                                                  \
	static inline void name##_release(name c)                                          \
	{                                                                                  \
		weft_chan_release(c.raw);                                                  \
	}

WEFT_END_DECLS

#endif /* WEFT_CHAN_H */
