/* SPDX-License-Identifier: MIT */
/*
 * weft/pipeline.h - pipelines: a source, stages connected by channels, and a
 * sink, each stage run by N goroutines that share its input channel (fan-out)
 * and feed one output channel (fan-in), in input order or not, all under one
 * context, so that the first failure anywhere stops every stage and the
 * pipeline's run returns that error once every goroutine has exited.
 *
 * It is the pattern of Go's "Pipelines and cancellation" article, written
 * once:
 *
 *   g, ctx := errgroup.WithContext(ctx)
 *   out := make(chan Out, buffer)
 *   for i := 0; i < workers; i++ {
 *       g.Go(func() error {
 *           for v := range in {
 *               select { case out <- f(v): case <-ctx.Done(): return ctx.Err() }
 *           }
 *           return nil
 *       })
 *   }
 *   // the last worker out closes out
 *
 * for every stage, plus what Go leaves to the reader: keeping input order
 * across N workers, and freeing items that a cancelled pipeline leaves
 * behind (Go has a garbage collector; C has drop functions).
 *
 *   weft_pipeline *p;
 *   weft_pipeline_source src = {.gen = numbers, .item_size = sizeof(int)};
 *   weft_pipeline_new(&p, ctx, &src);
 *   weft_pipeline_add(p, &(weft_pipeline_stage){.map = square, .out_size =
 *                     sizeof(long), .workers = 4, .ordered = true});
 *   weft_pipeline_set_sink(p, print, NULL);
 *   int err = weft_pipeline_run(p);   // 0, the first error, or ctx's
 *   weft_pipeline_free(p);
 *
 * Items. Every edge of the pipeline (the source's output, each stage's
 * output) carries items of one fixed size, as a channel does: bytes copied
 * from the producer to the consumer. Small records travel as values; large
 * or variable ones as pointers (item_size = sizeof(void *)). Item buffers
 * handed to stage functions are aligned for any type.
 *
 * Ownership of items, which matters once they are pointers:
 *  - an item a source or stage emits becomes the pipeline's;
 *  - a map or flatmap function owns its input item from the call on: it
 *    passes what it owns on in its outputs, or frees it (also when it fails);
 *  - a filter function only borrows its item: the pipeline passes it on, or
 *    discards it when rejected or when the filter fails;
 *  - the sink function owns every item it is given; so does whoever receives
 *    from the output channel (weft_pipeline_start);
 *  - an item the pipeline discards (a filter rejected it; it could not be
 *    delivered because the pipeline was cancelled or failed; it was left in
 *    a channel, a reorder buffer or a worker's batch when the pipeline
 *    stopped; there is no sink and no output channel) is given to the drop
 *    function of the edge that carries it (weft_pipeline_source.drop,
 *    weft_pipeline_stage.drop).
 *    Without one, it is simply forgotten (right for plain values).
 * So every item is consumed exactly once: by a function that owns it or by
 * a drop. Drop functions may run on any goroutine, several at once.
 *
 * Order. An unordered stage passes each result on as soon as it is ready.
 * An ordered stage (.ordered = true) delivers the outputs of its input items
 * in the order in which it received those items, whatever the number of
 * workers: it numbers items as they are received and holds results that are
 * early in a bounded reorder buffer (window items; a worker that runs ahead of
 * the window waits). A pipeline whose stages are all ordered delivers to its
 * sink in source order. The outputs one flatmap call emits keep their order.
 *
 * Failure and cancellation (errgroup semantics). Every function is given the
 * pipeline's context. The first nonzero result of any source, stage or sink
 * function cancels it (with that error as the context's cause); so do
 * weft_pipeline_cancel() and cancelling the parent context. Then every stage
 * stops taking items (a receive or send in progress is abandoned), every
 * goroutine of the pipeline exits, and weft_pipeline_wait() returns the first
 * error: the failing function's, or ECANCELED / ETIMEDOUT when the
 * cancellation came from outside. Functions that wait for something other
 * than weft's channels should wait through the context (weft_sleep_ctx, the
 * _ctx calls), so that they return promptly too.
 *
 * Goroutines: one for a generator source (none for a channel source), one
 * per stage worker, and one for the sink (or, with neither a sink nor an
 * output channel, one that drops the last stage's items). All are gone when
 * weft_pipeline_wait() returns.
 *
 * Misuse is a fatal error naming it ("fatal error: pipeline: ..."): a NULL
 * pipeline, changing or starting a started pipeline, waiting for one that
 * is not running or twice, freeing a running one, emitting outside the call
 * that was given the emitter.
 */
#ifndef WEFT_PIPELINE_H
#define WEFT_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "chan.h"
#include "context.h"

WEFT_BEGIN_DECLS

typedef struct weft_pipeline weft_pipeline;

/*
 * weft_pipeline_emitter - how a generator or a flatmap function passes
 * items on: weft_pipeline_emit(em, &item). Valid only during the call it
 * was given to, on that call's goroutine.
 */
typedef struct weft_pipeline_emitter weft_pipeline_emitter;

/*
 * The functions a pipeline runs. Each returns 0, or an error number that
 * fails the pipeline (the first one wins). ctx is the pipeline's context
 * (borrowed: do not release it); arg is the pointer given with the function.
 *
 * weft_pipeline_gen_fn - a source: emit every item, then return 0. It runs
 *   once, on its own goroutine. When weft_pipeline_emit() fails, the
 *   pipeline is stopping: return (its error, or 0).
 * weft_pipeline_map_fn - one output per input: read *in (owned, see the top),
 *   write the result to *out (out_size bytes, not zeroed first). On 0 *out is
 *   passed on; on an error it is ignored.
 * weft_pipeline_filter_fn - set *keep (false when the function does not set
 *   it) to pass *item (borrowed) on unchanged, or to discard it.
 * weft_pipeline_flatmap_fn - zero or more outputs per input: emit each with
 *   weft_pipeline_emit(); *in is owned as for a map.
 * weft_pipeline_sink_fn - consume one output of the last stage (owned). It
 *   is called on one goroutine, one item at a time, in the order of the last
 *   stage's output.
 * weft_pipeline_drop_fn - free an item the pipeline discards (see the top).
 *   arg is the source's or stage's arg. It must not fail nor block.
 */
typedef int (*weft_pipeline_gen_fn)(weft_ctx *ctx, void *arg, weft_pipeline_emitter *em);
typedef int (*weft_pipeline_map_fn)(weft_ctx *ctx, void *arg, void *in, void *out);
typedef int (*weft_pipeline_filter_fn)(weft_ctx *ctx, void *arg, void *item, bool *keep);
typedef int (*weft_pipeline_flatmap_fn)(weft_ctx *ctx, void *arg, void *in,
                                        weft_pipeline_emitter *em);
typedef int (*weft_pipeline_sink_fn)(weft_ctx *ctx, void *arg, void *item);
typedef void (*weft_pipeline_drop_fn)(void *arg, void *item);

/*
 * weft_pipeline_source - where items come from: exactly one of gen and chan.
 *   gen        a generator, run on its own goroutine; it emits into a
 *              channel of capacity buffer (0: unbuffered), which is closed
 *              when it returns
 *   chan       a channel someone else sends to and closes (Go's `in <-chan
 *              T` parameter): the first stage (or the sink) receives from it
 *              directly. The pipeline retains it until weft_pipeline_free()
 *              and never closes it; items still in it when the pipeline
 *              stops stay there, the sender's to deal with. Feed it with
 *              weft_chan_send_ctx(weft_pipeline_ctx(p), ...), so that the
 *              feeder stops too when the pipeline does.
 *   arg        passed to gen and to drop
 *   item_size  bytes per item (at most WEFT_CHAN_MAX_ELEM); with chan, 0
 *              or the channel's element size
 *   buffer     with gen: the capacity of its channel
 *   drop       frees a source item the pipeline discards; NULL: none
 *   name       shown in goroutine dumps ("pipeline source"); may be NULL
 * All-zero fields are the defaults.
 */
typedef struct weft_pipeline_source {
	weft_pipeline_gen_fn gen;
	weft_chan *chan;
	void *arg;
	size_t item_size;
	size_t buffer;
	weft_pipeline_drop_fn drop;
	const char *name;
} weft_pipeline_source;

/*
 * weft_pipeline_stage - one stage: exactly one of map, filter and flatmap.
 *   arg        passed to the function and to drop
 *   out_size   bytes per output item (at most WEFT_CHAN_MAX_ELEM); a filter
 *              passes its input on, so for it 0 or the input's size
 *   workers    goroutines running the function (0: 1; at most
 *              WEFT_PIPELINE_MAX_WORKERS)
 *   ordered    deliver outputs in input order (see the top)
 *   buffer     capacity of the stage's output channel (0: unbuffered, as
 *              Go's make(chan T))
 *   window     ordered only: at most this many items are between being
 *              received and having all their outputs delivered (0: 4 x
 *              workers; at most WEFT_PIPELINE_MAX_WINDOW). Holds window x
 *              out_size bytes (x 8 for a flatmap, whose worker keeps up to 8
 *              outputs of an item that is ahead of its turn and then waits
 *              for it).
 *   batch      unordered map and filter stages: the most items a worker
 *              takes at once from its input (at most
 *              WEFT_PIPELINE_MAX_BATCH). It never waits to fill a batch: it
 *              takes what is waiting, up to batch items, or, when nothing
 *              is, waits for one item and adds what is waiting by then. It
 *              runs the function on each (the context is looked at before
 *              each call, as always), then passes the outputs on: as many as
 *              the output channel takes at once in one operation, the rest
 *              one at a time. That saves channel operations, which dominate the
 *              cost of cheap functions on several Ps, but an item's output
 *              waits for the rest of its batch, and the items of a batch
 *              wait for one worker while others may be idle.
 *                1: one item at a time, as Go's range loop.
 *                0: automatic: up to 16 items (fewer when that would take
 *                more than 16 KiB of item buffers per worker), but only while
 *                the function is cheap, taking 5 us an item or less on
 *                average; a worker goes back to one item at a time after a
 *                batch slower than that, and times each item then, batching
 *                again after 8 cheap ones in a row. So slow functions (I/O,
 *                hashing files) fan out across the workers item by item.
 *              Ordered stages and flatmaps take one item at a time whatever
 *              batch says. A function that must see its earlier outputs
 *              consumed downstream before it returns needs batch 1.
 *   drop       frees an output item the pipeline discards; NULL: none (for
 *              a filter, NULL means its input edge's drop)
 *   name       shown in goroutine dumps ("pipeline NAME#2"); may be NULL
 * All-zero fields are the defaults.
 *
 * Memory. The items between the source and the sink, whatever the speeds of
 * the stages, are at most: the capacities of the channels (the source's
 * buffer and every stage's), plus per unordered stage workers x batch (the
 * automatic batch counts as 16 here; a flatmap's as 1), plus per ordered
 * stage its window, plus the one the sink is being given.
 */
typedef struct weft_pipeline_stage {
	weft_pipeline_map_fn map;
	weft_pipeline_filter_fn filter;
	weft_pipeline_flatmap_fn flatmap;
	void *arg;
	size_t out_size;
	int workers;
	bool ordered;
	size_t buffer;
	size_t window;
	size_t batch;
	weft_pipeline_drop_fn drop;
	const char *name;
} weft_pipeline_stage;

#define WEFT_PIPELINE_MAX_WORKERS 4096
#define WEFT_PIPELINE_MAX_WINDOW ((size_t)1 << 20)
#define WEFT_PIPELINE_MAX_BATCH ((size_t)256)

/*
 * weft_pipeline_new - a pipeline reading from *src (copied), whose context is
 * a child of parent (NULL: the background). Add stages with
 * weft_pipeline_add(), maybe a sink, then run it.
 * Returns 0, or: EINVAL (out or src NULL; not exactly one of gen and chan;
 * item_size too large or, with chan, not its element size), ENOMEM. *out is
 * untouched on error. Retains src->chan and parent.
 * Blocks: no. Thread-safety: any thread.
 */
WEFT_API int weft_pipeline_new(weft_pipeline **out, weft_ctx *parent,
                               const weft_pipeline_source *src);

/*
 * weft_pipeline_add - append a stage (*st is copied); its input is the
 * previous stage's output (the source's, for the first).
 * Returns 0, or: EINVAL (st NULL; not exactly one of map, filter, flatmap;
 * out_size too large, or a filter's differing from its input's; workers,
 * window or batch out of range), ENOMEM. Nothing is added on error.
 * Blocks: no. Thread-safety: one goroutine builds a pipeline; a pipeline
 * that was started is a fatal error.
 */
WEFT_API int weft_pipeline_add(weft_pipeline *p, const weft_pipeline_stage *st);

/*
 * weft_pipeline_set_sink - consume the last stage's items with fn(ctx, arg,
 * item), on a goroutine of its own (Go's `for v := range out { ... }`).
 * Without a sink, the items go to the output channel of
 * weft_pipeline_start(), or are dropped.
 * Returns 0, or EINVAL (fn NULL). Blocks: no. Thread-safety: as
 * weft_pipeline_add().
 */
WEFT_API int weft_pipeline_set_sink(weft_pipeline *p, weft_pipeline_sink_fn fn, void *arg);

/*
 * weft_pipeline_start - start every goroutine of the pipeline and return.
 *
 * output: NULL, or (only without a sink) where to put the pipeline's output
 * channel: the last stage's items arrive there, and it is closed when the
 * pipeline ends, normally or not. Receive from it until it reports EPIPE
 * (Go's range loop), or stop early with weft_pipeline_cancel(); then call
 * weft_pipeline_wait(). The channel is borrowed: valid until
 * weft_pipeline_free() (weft_chan_retain() it to keep it longer), which
 * drops items still in it. Without a sink and an output channel the last
 * stage's items are dropped as they come.
 *
 * Returns 0, or: EINVAL (output given with a sink set, or with a channel
 * source and no stage: it would be the source channel itself), ENOMEM, EAGAIN
 * (weft_go could not start a goroutine). On error no function of the
 * pipeline has run and none will; the pipeline may only be freed.
 * Blocks: no. Thread-safety: any thread; starting a pipeline twice is a
 * fatal error.
 */
WEFT_API int weft_pipeline_start(weft_pipeline *p, weft_chan **output);

/*
 * weft_pipeline_wait - wait until every goroutine of a started pipeline has
 * exited, drop the items left in its internal channels and reorder buffers,
 * and return the first error: 0 when every item went through, the first
 * nonzero result of a function, or ECANCELED / ETIMEDOUT when it was
 * cancelled from outside (weft_pipeline_cancel, the parent context).
 * Call it exactly once per start.
 * Blocks: yes. Thread-safety: any thread (one caller).
 */
WEFT_API int weft_pipeline_wait(weft_pipeline *p);

/*
 * weft_pipeline_run - weft_pipeline_start(p, NULL), then weft_pipeline_wait():
 * run the pipeline to its end. Returns start's error or wait's.
 * Blocks: yes. Thread-safety: any thread.
 */
WEFT_API int weft_pipeline_run(weft_pipeline *p);

/*
 * weft_pipeline_cancel - cancel the pipeline's context: every stage stops,
 * and weft_pipeline_wait() returns ECANCELED unless a function failed
 * first. Idempotent; allowed at any time until weft_pipeline_free(), from
 * any goroutine or thread, stage functions included (a function may also
 * simply return an error). Cancelling before the start makes the pipeline
 * end at once.
 * Blocks: no.
 */
WEFT_API void weft_pipeline_cancel(weft_pipeline *p);

/*
 * weft_pipeline_ctx - the pipeline's context, the one its functions are
 * given: borrowed, valid until weft_pipeline_free(). Cancelled when the
 * pipeline fails or is cancelled, and when weft_pipeline_wait() returns.
 * Blocks: no.
 */
WEFT_API weft_ctx *weft_pipeline_ctx(weft_pipeline *p);

/*
 * weft_pipeline_free - free p: its channels (dropping items still buffered
 * in the output channel), its context, its references to the source channel
 * and the parent context. NULL is ignored. Freeing a pipeline that was
 * started but not waited for is a fatal error.
 * Blocks: no.
 */
WEFT_API void weft_pipeline_free(weft_pipeline *p);

/*
 * weft_pipeline_emit - pass one item (item_size or out_size bytes, copied)
 * downstream; from a generator or flatmap function only, with the emitter
 * it was given. The item becomes the pipeline's, whatever the result.
 * Returns 0, or the context's error (ECANCELED or ETIMEDOUT) when the
 * pipeline is stopping: the item was dropped; the function should return.
 * Blocks: yes, while downstream is full (backpressure) and, in an ordered
 * flatmap, while the item is ahead of its turn and its buffer is full.
 * Thread-safety: the function's own goroutine, during the call.
 */
WEFT_API int weft_pipeline_emit(weft_pipeline_emitter *em, const void *item);

WEFT_END_DECLS

#endif /* WEFT_PIPELINE_H */
