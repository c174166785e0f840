/* SPDX-License-Identifier: MIT */
/*
 * weft.h - the one public header of weft: Go's concurrency model for C.
 *
 * Include this file and nothing else. It pulls in the per-area headers under
 * weft/, each of which compiles on its own. Every function is documented where
 * it is declared: what it does, its errors, whether it blocks, and who owns
 * what.
 *
 * Conventions that hold everywhere:
 *  - Functions that can fail return 0 or a positive error number from
 *    <errno.h> (pthread style). strerror() works on it. weft never reports
 *    through errno, and it saves and restores errno for each goroutine across
 *    every switch.
 *  - Misuse of the API (unlocking an unlocked mutex, a negative WaitGroup
 *    counter) is a bug, not an error: weft prints "fatal error: ..." naming it
 *    and aborts, in every build, as Go does.
 *  - "Blocks" means the call may park the calling goroutine (other goroutines
 *    keep running on its thread) or, when called from a thread that is not a
 *    goroutine, park that OS thread.
 *
 * The TLS hazard: a goroutine may resume on a different OS thread after any
 * call that blocks (and after weft_yield). Never hold the address of a
 * thread-local variable (including &errno, or a pointer returned by a library
 * that caches per-thread state) across such a call. Read errno again after the
 * call instead; its value survives the move. weft_lock_thread() pins a
 * goroutine to its thread when a foreign library needs thread affinity.
 *
 * fork(): once goroutines run, a child process has only the thread that
 * called fork(), and the runtime's other threads are gone; the child may
 * only call exec (or _exit), as in Go.
 */
#ifndef WEFT_H
#define WEFT_H

#include "weft/common.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/chan.h"
#include "weft/context.h"
#include "weft/net.h"
#include "weft/workpool.h"
#include "weft/pipeline.h"
#include "weft/pubsub.h"
#include "weft/ratelimit.h"
#include "weft/breaker.h"

#endif /* WEFT_H */
