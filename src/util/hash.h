/* SPDX-License-Identifier: MIT */
/*
 * hash.h - a 64-bit hash of byte strings (wyhash-style: every byte goes
 * through a 64x64->128 multiply), for weft's own hash tables (weft_map,
 * singleflight). The runtime and sync layers depend on libc only, so this
 * is weft's own rather than a library's.
 */
#ifndef WEFT_UTIL_HASH_H
#define WEFT_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t weft__rd64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t weft__rd32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* Multiply to 128 bits and fold: the mixing step of wyhash. */
static inline uint64_t weft__mum(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

#define WEFT__H0 0xa0761d6478bd642full
#define WEFT__H1 0xe7037ed1a0b428dbull
#define WEFT__H2 0x8ebc6af09c88c6e3ull

/* A wyhash-style 64-bit hash: every byte goes through a 64x64->128
 * multiply; short keys are read as two overlapping words (no loop). */
static inline uint64_t weft__hash_bytes(const void *key, size_t len, uint64_t seed)
{
	const unsigned char *p = key;
	uint64_t a = 0, b = 0;
	seed ^= weft__mum(seed ^ WEFT__H0, WEFT__H1);
	if (len <= 16) {
		if (len >= 4) {
			size_t q = (len >> 3) << 2; /* 0, or 4 from 8 bytes on */
			a = weft__rd32(p) << 32 | weft__rd32(p + q);
			b = weft__rd32(p + len - 4) << 32 | weft__rd32(p + len - 4 - q);
		} else if (len > 0) {
			a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
		}
	} else {
		size_t i = len;
		for (; i > 16; i -= 16, p += 16)
			seed = weft__mum(weft__rd64(p) ^ WEFT__H1, weft__rd64(p + 8) ^ seed);
		a = weft__rd64(p + i - 16);
		b = weft__rd64(p + i - 8);
	}
	return weft__mum(WEFT__H2 ^ len, weft__mum(a ^ WEFT__H1, b ^ seed));
}

#endif
