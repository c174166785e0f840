/* SPDX-License-Identifier: MIT */
/*
 * weft/pubsub.h - fan-in, tee and broadcast: three ways of moving one stream
 * of values to several places, or several streams to one.
 *
 *   weft_merge   fan-in: every value of N input channels goes to one output
 *                channel (the merge of Go's "Pipelines and cancellation"
 *                article: a goroutine per input, a WaitGroup, and the output
 *                closed after the last input closes).
 *   weft_tee     one input channel to two output channels, each value to both,
 *                in order, neither losing one (the tee of "Concurrency in Go":
 *                a select over the two sends that nils out the case that
 *                went, so the next value is taken only when both have this
 *                one).
 *   weft_pubsub  a broker: publishers publish to named topics, each
 *                subscription has its own bounded buffer and a stated policy
 *                for when that buffer is full (wait, drop the oldest, or drop
 *                the newest), and exact counters of what it delivered and
 *                dropped.
 *
 * Merge and tee run goroutines of their own and return a handle to join them:
 * weft_merge_wait() returns when they have all ended and says why,
 * weft_merge_stop() (or cancelling the context given to weft_merge_new())
 * makes them stop, and weft_merge_free() stops, joins and frees, so no
 * goroutine is left behind. The tee has the same four calls.
 *
 * Errors are error numbers (0, or a positive E* value), never errno:
 *   EINVAL     a bad argument (NULL where a channel is needed, element sizes
 *              that differ, a channel given twice where that cannot work)
 *   ENOMEM     no memory; nothing was started
 *   EAGAIN     (new) the runtime could not start a goroutine; nothing started
 *   EPIPE      a closed broker, subscription, or output channel
 *   ECANCELED  a context was cancelled (or weft_*_stop() was called)
 *   ETIMEDOUT  a deadline passed (an _until call's, or a context's)
 * Misuse is a fatal error naming it, as Go panics: a NULL handle passed
 * where a handle is required ("fatal error: pubsub: publish to nil broker").
 * The free calls accept NULL. (A bad policy or size is data, not misuse: it
 * is EINVAL.)
 *
 * Everything here may be called from any thread, goroutine or not.
 */
#ifndef WEFT_PUBSUB_H
#define WEFT_PUBSUB_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "chan.h"
#include "context.h"

WEFT_BEGIN_DECLS

/* ---------------------------------------------------------------- merge (fan-in) */

typedef struct weft_merge weft_merge;

/*
 * weft_merge_new - start forwarding every value of ins[0..n) to out, one
 * goroutine per input, until:
 *   - every input is closed and drained: out is closed, and
 *     weft_merge_wait() returns 0 (n == 0 closes out at once);
 *   - ctx is done or weft_merge_stop() is called: the goroutines stop, out is
 *     closed, and weft_merge_wait() returns ECANCELED or ETIMEDOUT. Values
 *     still in the inputs stay there; a value a goroutine had taken from its
 *     input but not yet sent is dropped (as in Go's merge);
 *   - out turns out to be closed by someone else (a send fails with EPIPE):
 *     every goroutine stops, out is left as it is, and weft_merge_wait()
 *     returns EPIPE. (Closing out yourself while the merge runs is a bug, as
 *     it would be in Go, which panics on that send: weft stops cleanly when
 *     a send finds out closed, but if no send comes before the inputs end,
 *     the merge's own close of out is the fatal "close of closed channel",
 *     as Go's close(out) would panic.)
 * Each value arrives on out exactly once, and the values of one input arrive
 * in the order they were received from it; inputs interleave in no fixed
 * order. The merge owns the sending side of out: it closes out exactly once.
 *
 * ctx may be NULL (never cancelled). The merge retains out, every input and
 * ctx until weft_merge_free(); the caller keeps its own references. ins is
 * read during the call only.
 *
 * Returns 0 and *m set (a handle the caller must pass to weft_merge_free()).
 * Errors: EINVAL (m or out NULL, ins NULL with n > 0, an input NULL or equal
 * to out, an input whose element size differs from out's), ENOMEM, EAGAIN
 * (a goroutine could not be started). On error nothing was started, no value
 * was moved, out is not closed, and *m is untouched.
 * Blocks: no (after a failed start, briefly, while the goroutines already
 * started leave without moving anything). Thread-safety: any thread.
 */
WEFT_API int weft_merge_new(weft_merge **m, weft_chan *out, weft_chan *const *ins, size_t n,
                            weft_ctx *ctx);

/*
 * weft_merge_wait - wait until every goroutine of the merge has ended, and
 * return why it ended: 0 (every input closed; out closed), ECANCELED or
 * ETIMEDOUT (stopped by the context or weft_merge_stop(); out closed), EPIPE
 * (out was closed by someone else), or the first other error a forwarding
 * call returned (ENOMEM from a context's done channel; out closed). May be
 * called again, and by several waiters at once: each gets the same answer.
 * Blocks: yes, until the merge has ended. Thread-safety: any thread.
 */
WEFT_API int weft_merge_wait(weft_merge *m);

/*
 * weft_merge_stop - make the merge stop as if its context had been cancelled
 * (weft_merge_wait() then returns ECANCELED unless it had already ended for
 * another reason). Idempotent; does not wait.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API void weft_merge_stop(weft_merge *m);

/*
 * weft_merge_free - stop the merge if it still runs, wait for its goroutines,
 * drop its references to the channels and the context, and free the handle.
 * NULL is ignored. No other call on m may be in progress or start.
 * Blocks: yes, until the goroutines have ended (promptly: they are stopped).
 * Thread-safety: any thread.
 */
WEFT_API void weft_merge_free(weft_merge *m);

/* ---------------------------------------------------------------- tee */

typedef struct weft_tee weft_tee;

/*
 * weft_tee_new - start a goroutine that receives each value of in and sends
 * it to both out1 and out2 (to whichever is ready first, then to the other)
 * before it takes the next, so both outputs get every value, in the order of
 * in, and neither loses one: the faster reader waits for the slower (give the
 * outputs buffers to absorb the difference). It ends when:
 *   - in is closed and drained: both outputs are closed, and
 *     weft_tee_wait() returns 0;
 *   - ctx is done or weft_tee_stop() is called: both outputs are closed and
 *     weft_tee_wait() returns ECANCELED or ETIMEDOUT; the value in hand may
 *     have reached one output and not the other;
 *   - an output turns out to be closed by someone else (EPIPE): the other one
 *     is closed, and weft_tee_wait() returns EPIPE. (That close is a bug, as
 *     for weft_merge_new: found by a send it stops the tee cleanly, but if
 *     in ends first, the tee's own close of it is the fatal "close of closed
 *     channel".)
 * ctx may be NULL. The tee retains the three channels and ctx until
 * weft_tee_free().
 *
 * Returns 0 and *t set. Errors: EINVAL (t, in, out1 or out2 NULL, any two of
 * the three the same channel, element sizes that differ), ENOMEM, EAGAIN.
 * On error nothing was started and *t is untouched.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_tee_new(weft_tee **t, weft_chan *in, weft_chan *out1, weft_chan *out2,
                          weft_ctx *ctx);

/* weft_tee_wait - as weft_merge_wait(), for a tee. Blocks: yes. */
WEFT_API int weft_tee_wait(weft_tee *t);

/* weft_tee_stop - as weft_merge_stop(), for a tee. Blocks: no. */
WEFT_API void weft_tee_stop(weft_tee *t);

/* weft_tee_free - as weft_merge_free(), for a tee. NULL is ignored.
 * Blocks: until the goroutine has ended. */
WEFT_API void weft_tee_free(weft_tee *t);

/* ---------------------------------------------------------------- pub-sub */

/*
 * weft_pubsub - a broker. Messages are fixed-size values (elem_size bytes,
 * set at weft_pubsub_new(), copied in and out as channel elements are),
 * published to a topic (a string), and copied to every subscription of that
 * topic. A topic exists while it has subscriptions; publishing to a topic
 * with none is not an error (the message goes nowhere and is counted as
 * unrouted).
 *
 * Each subscription has a buffer of cap messages and a policy for a full
 * buffer, which decides what a slow subscriber costs:
 *   WEFT_PUBSUB_BLOCK        the publisher waits for room (backpressure: Go's
 *                            plain `ch <- v`). Nothing is ever dropped; the
 *                            _until and _ctx forms of publish bound the wait.
 *   WEFT_PUBSUB_DROP_NEWEST  the new message is dropped for this subscription
 *                            (Go's `select { case ch <- v: default: }`): a
 *                            subscriber that falls behind keeps the first
 *                            messages it had room for and misses later ones.
 *   WEFT_PUBSUB_DROP_OLDEST  the oldest buffered message is dropped to make
 *                            room (Go's "receive one, then send" ring idiom,
 *                            made exact here): a subscriber that falls behind
 *                            misses older messages and keeps the latest cap.
 * No message is lost other than the ones a policy drops, and every drop is
 * counted: for each subscription, at every moment,
 *     offered == delivered + dropped + buffered
 * (weft_sub_stats). With WEFT_PUBSUB_BLOCK dropped stays 0.
 *
 * Order: publishes to one topic are serialised, so every subscription of a
 * topic receives that topic's messages in the same order, the order in which
 * the publishes took effect (one publisher's messages keep its order).
 * A publish is all or nothing: it gives the message to every subscription of
 * the topic (each under its policy) or, when it fails (closed broker, context
 * done, deadline), to none of them.
 *
 * Messages are plain bytes, as channel elements are: one that carries a
 * pointer hands the same pointer to every subscription that receives it, and
 * weft frees nothing, not even what a dropped message pointed to. Prefer
 * values, or reference counts of your own (offered, delivered and dropped
 * tell you how many copies went where).
 *
 * A subscriber that publishes to a topic it subscribes to with
 * WEFT_PUBSUB_BLOCK can wait for itself forever, as a goroutine that sends on
 * a full channel only it drains does in Go.
 */
typedef struct weft_pubsub weft_pubsub;

/* A subscription: its own buffer of messages of one topic. */
typedef struct weft_sub weft_sub;

/* What a full subscription buffer does with a new message. */
enum weft_pubsub_policy {
	WEFT_PUBSUB_BLOCK = 1,
	WEFT_PUBSUB_DROP_OLDEST = 2,
	WEFT_PUBSUB_DROP_NEWEST = 3,
};

/* Counters of a broker; see weft_pubsub_stats_get(). */
typedef struct weft_pubsub_stats {
	uint64_t published;     /* publishes that returned 0, total */
	uint64_t unrouted;      /* of those, ones whose topic had no subscription */
	uint64_t topics;        /* topics with at least one subscription, now */
	uint64_t subscriptions; /* subscriptions attached, now */
} weft_pubsub_stats;

/* Counters of one subscription; see weft_sub_stats_get(). */
typedef struct weft_sub_stats {
	uint64_t offered;   /* messages published to it while it was attached */
	uint64_t delivered; /* messages a receive call returned */
	uint64_t dropped;   /* messages its policy dropped */
	uint64_t buffered;  /* messages waiting in its buffer now */
} weft_sub_stats;

/*
 * weft_pubsub_new - a broker of messages of elem_size bytes (0 is allowed:
 * messages that carry nothing but their arrival). *ps gets it, owned by the
 * caller, who frees it with weft_pubsub_free().
 * Errors: EINVAL (ps NULL, elem_size > WEFT_CHAN_MAX_ELEM), ENOMEM; *ps is
 * untouched on error. Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_pubsub_new(weft_pubsub **ps, size_t elem_size);

/*
 * weft_pubsub_close - close the broker: from now on publish and subscribe
 * return EPIPE; publishers waiting for room return EPIPE (having given their
 * message to nobody); every subscription is closed, so its receivers get the
 * messages it had accepted, then EPIPE. Idempotent. Subscriptions stay
 * allocated until weft_sub_free().
 * Blocks: briefly, on the broker's locks. Thread-safety: any thread.
 */
WEFT_API void weft_pubsub_close(weft_pubsub *ps);

/*
 * weft_pubsub_free - close ps (as weft_pubsub_close()) and drop the caller's
 * handle. The memory goes when the last subscription is freed too, so
 * subscriptions may be freed before or after. Publishers that were waiting
 * in ps when it closed may still be on their way out: that is safe; a call
 * on ps that starts after weft_pubsub_free() is a bug. NULL is ignored.
 * Blocks: briefly. Thread-safety: any thread.
 */
WEFT_API void weft_pubsub_free(weft_pubsub *ps);

/*
 * weft_pubsub_subscribe - attach a new subscription to topic, with a buffer
 * of cap messages (cap >= 1) and the given policy for a full buffer. It
 * receives every message published to topic from now on (a publish running
 * concurrently with the subscribe may or may not reach it). topic is copied.
 * *sub gets the subscription, owned by the caller (weft_sub_free()).
 * Errors: EINVAL (sub or topic NULL, cap 0, an unknown policy), ENOMEM
 * (also when cap * elem_size overflows), EPIPE (the broker is closed). *sub
 * is untouched on error.
 * Blocks: briefly, on the broker's lock. Thread-safety: any thread.
 */
WEFT_API int weft_pubsub_subscribe(weft_pubsub *ps, const char *topic, size_t cap, int policy,
                                   weft_sub **sub);

/*
 * weft_pubsub_unsubscribe - detach sub from its topic: no message published
 * after this returns reaches it, and a publisher waiting for room in it stops
 * waiting (and leaves it out). The messages already buffered stay
 * receivable; then its receivers get EPIPE. Idempotent; after a broker close
 * it does nothing. Does not free sub.
 * Blocks: briefly, on the broker's lock. Thread-safety: any thread.
 */
WEFT_API void weft_pubsub_unsubscribe(weft_sub *sub);

/*
 * weft_pubsub_publish - give a copy of msg (elem_size bytes; msg may be NULL
 * when elem_size is 0) to every subscription of topic, each under its
 * policy, waiting while a WEFT_PUBSUB_BLOCK subscription is full (and while
 * another publish to the same topic is in progress).
 * Returns 0 (published: to every subscription of the topic, or to none when
 * it has none), or EPIPE (the broker is closed, before or during the wait:
 * given to nobody).
 * Errors: EINVAL (topic NULL, or msg NULL with elem_size > 0).
 * Blocks: yes, while a WEFT_PUBSUB_BLOCK subscription of the topic is full
 * (a publish waiting for one holds up the publishes queued behind it on
 * that topic); a topic whose subscriptions all drop never makes a publisher
 * wait but briefly on locks. Thread-safety: any thread.
 */
WEFT_API int weft_pubsub_publish(weft_pubsub *ps, const char *topic, const void *msg);

/*
 * weft_pubsub_publish_until - weft_pubsub_publish() giving up at deadline_ns
 * with ETIMEDOUT, having given the message to nobody. A deadline already
 * past makes it a try: it publishes if no wait is needed.
 */
WEFT_API int weft_pubsub_publish_until(weft_pubsub *ps, const char *topic, const void *msg,
                                       int64_t deadline_ns);

/*
 * weft_pubsub_publish_ctx - weft_pubsub_publish() giving up when ctx is done
 * with weft_ctx_err(ctx) (ECANCELED or ETIMEDOUT), having given the message
 * to nobody. A context already done fails the call unless it can complete
 * without waiting. ctx NULL: as weft_pubsub_publish().
 */
WEFT_API int weft_pubsub_publish_ctx(weft_ctx *ctx, weft_pubsub *ps, const char *topic,
                                     const void *msg);

/*
 * weft_pubsub_stats_get - a snapshot of the broker's counters into *out.
 * Blocks: briefly. Thread-safety: any thread.
 */
WEFT_API void weft_pubsub_stats_get(weft_pubsub *ps, weft_pubsub_stats *out);

/* ---------------------------------------------------------------- subscriptions */

/*
 * weft_sub_recv - take the oldest buffered message of sub into out
 * (elem_size bytes; out may be NULL to discard it), waiting while none is
 * buffered. Returns 0, or EPIPE once sub is closed (unsubscribed, or its
 * broker closed) and every message it had accepted has been received (then
 * out, if not NULL, is zeroed). Several receivers may share a subscription:
 * each message goes to one of them, as with a channel.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_sub_recv(weft_sub *sub, void *out);

/* weft_sub_tryrecv - weft_sub_recv() if it can complete now; else EAGAIN
 * (out untouched). Blocks: no. */
WEFT_API int weft_sub_tryrecv(weft_sub *sub, void *out);

/* weft_sub_recv_until - weft_sub_recv() giving up at deadline_ns with
 * ETIMEDOUT (out untouched). */
WEFT_API int weft_sub_recv_until(weft_sub *sub, void *out, int64_t deadline_ns);

/* weft_sub_recv_ctx - weft_sub_recv() giving up when ctx is done, with
 * weft_ctx_err(ctx) (out untouched); a buffered message is still taken when
 * ctx is already done. ctx NULL: as weft_sub_recv(). */
WEFT_API int weft_sub_recv_ctx(weft_ctx *ctx, weft_sub *sub, void *out);

/*
 * weft_sub_ready - a channel for weft_select(): it holds a token (an element
 * of size 0; capacity 1) whenever a message may have arrived since the token
 * was last taken, and it is closed when sub closes. The select idiom:
 *
 *   weft_case cs[] = { WEFT_RECV_CASE(weft_sub_ready(sub), NULL),
 *                      WEFT_RECV_CASE(quit, NULL) };
 *   weft_select(cs, 2, &i);                   (case 0: the token, or EPIPE)
 *   while (weft_sub_tryrecv(sub, &msg) == 0)  drain, then select again
 *       handle(&msg);
 *
 * Take the token first, then drain with weft_sub_tryrecv() until EAGAIN (or
 * EPIPE: closed and drained): a message that arrives after the last try
 * leaves a new token, so no wake-up is lost. The channel belongs to sub
 * (do not release it; retain it to keep it past weft_sub_free()). Made on the
 * first call; NULL when that allocation fails (ENOMEM).
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API weft_chan *weft_sub_ready(weft_sub *sub);

/*
 * weft_sub_stats_get - a snapshot of sub's counters into *out, taken under
 * its lock, so offered == delivered + dropped + buffered holds in it.
 * Blocks: briefly. Thread-safety: any thread.
 */
WEFT_API void weft_sub_stats_get(weft_sub *sub, weft_sub_stats *out);

/*
 * weft_sub_free - unsubscribe sub (as weft_pubsub_unsubscribe()), discard
 * what it still buffers, and drop the caller's handle; its memory goes once
 * no publisher is using it. NULL is ignored. No other call on sub may be in
 * progress or start.
 * Blocks: briefly. Thread-safety: any thread.
 */
WEFT_API void weft_sub_free(weft_sub *sub);

WEFT_END_DECLS

#endif /* WEFT_PUBSUB_H */
