/* SPDX-License-Identifier: MIT */
/*
 * fatal.h - Go-style fatal errors for API misuse and broken invariants.
 *
 * weft__fatal() prints "fatal error: <message>" on stderr and aborts, in every
 * build: misuse is a bug in the caller, never an error number (Go's throw).
 * The runtime installs a hook so that fatal errors can add a goroutine dump.
 */
#ifndef WEFT_UTIL_FATAL_H
#define WEFT_UTIL_FATAL_H

#include <stdarg.h>

#define WEFT_NORETURN __attribute__((noreturn))
#define WEFT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define WEFT_LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Print "fatal error: ..." and abort(). Safe from any thread. */
WEFT_NORETURN WEFT_PRINTF(1, 2) void weft__fatal(const char *fmt, ...);

/* Print "fatal error: ...", run the dump hook, and exit with status code. */
WEFT_NORETURN WEFT_PRINTF(2, 3) void weft__fatal_exit(int code, const char *fmt, ...);

/* Print "fatal error: ... : <strerror(err)>" and abort (an impossible syscall failure). */
WEFT_NORETURN void weft__fatal_errno(const char *what, int err);

/* Called by weft__fatal_exit before exiting (the runtime sets it to a dump). */
extern void (*weft__fatal_hook)(void);

#endif
