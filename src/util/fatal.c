/* SPDX-License-Identifier: MIT */
/*
 * fatal.c - fatal errors. The message is formatted into a buffer and written
 * with one write(2), so that reports from several threads do not interleave
 * and nothing here allocates.
 */
#include "fatal.h"

#include "weft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void (*weft__fatal_hook)(void);

static void vreport(const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "fatal error: ");
	n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
	(void)r;
}

void weft__fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	abort();
}

void weft_fatalf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	abort();
}

void weft__fatal_exit(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	if (weft__fatal_hook)
		weft__fatal_hook();
	fflush(stderr);
	_exit(code);
}

void weft__fatal_errno(const char *what, int err)
{
	weft__fatal("%s: %s", what, strerror(err));
}
