/* SPDX-License-Identifier: MIT */
/*
 * alloc.h - every heap allocation of weft goes through here, so a test can
 * make the Nth allocation fail (SQLite's sqlite3FaultSim) and check that weft
 * reports ENOMEM and leaves nothing half-built.
 */
#ifndef WEFT_UTIL_ALLOC_H
#define WEFT_UTIL_ALLOC_H

#include <stddef.h>

void *weft__alloc(size_t size);
void *weft__calloc(size_t n, size_t size);
void weft__free(void *p);

/* Make allocation number n (counting from the next call, 1-based) and every
 * later one fail when sticky, or only that one otherwise; n = 0 turns it off. */
void weft__alloc_fail_after(long n, int sticky);

#endif
