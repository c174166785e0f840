/* SPDX-License-Identifier: MIT */
/*
 * flight.c - weft_flight, Go's golang.org/x/sync/singleflight.
 *
 * The calls in flight are a chained hash table under the group's mutex, keyed
 * by the bytes of the key. The first caller for a key makes a call record,
 * runs fn without the lock, then unlinks the record (unless forgotten) and
 * releases the waiters through the record's WaitGroup. A duplicate caller
 * takes a reference on the record and waits on that WaitGroup. The record is
 * reference counted (the runner and each waiter), so the last one to read the
 * result frees it; a forgotten record leaves the table at once but lives on
 * for those already waiting on it.
 */
#include "weft.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "fatal.h"
#include "hash.h"

struct call {
	struct call *next; /* hash chain; under the group's mutex */
	uint64_t hash;
	size_t keylen;
	int64_t refs; /* atomic: the runner and the waiters */
	int dups;     /* waiters; under the group's mutex */
	int in_table; /* under the group's mutex */
	int ret;      /* written by the runner before wg's Done */
	void *result;
	weft_wg wg;
	unsigned char key[];
};

static uint64_t hash_key(const void *key, size_t len)
{
	return weft__hash_bytes(key, len, 0x9e3779b97f4a7c15ull);
}

static struct call **bucket(weft_flight *f, uint64_t h)
{
	return &((struct call **)f->calls_)[h & (f->cap_ - 1)];
}

/* The link that points at key's call (or at the NULL ending its chain). */
static struct call **find(weft_flight *f, const void *key, size_t keylen, uint64_t h)
{
	struct call **pp = bucket(f, h);
	for (; *pp; pp = &(*pp)->next) {
		struct call *c = *pp;
		if (c->hash == h && c->keylen == keylen &&
		    (keylen == 0 || memcmp(c->key, key, keylen) == 0)) /* key may be NULL */
			break;
	}
	return pp;
}

/* Room for one more call: the table doubles past a load of 1. Mutex held. */
static int reserve(weft_flight *f)
{
	if (f->calls_ && f->n_ < f->cap_)
		return 0;
	uint32_t cap = f->cap_ ? f->cap_ * 2 : 8;
	struct call **t = weft__calloc(cap, sizeof *t);
	if (!t)
		return ENOMEM;
	struct call **old = f->calls_;
	for (uint32_t i = 0; i < f->cap_; i++) {
		while (old[i]) {
			struct call *c = old[i];
			old[i] = c->next;
			c->next = t[c->hash & (cap - 1)];
			t[c->hash & (cap - 1)] = c;
		}
	}
	weft__free(old);
	f->calls_ = t;
	f->cap_ = cap;
	return 0;
}

static void unlink_call(weft_flight *f, struct call *c)
{
	struct call **pp = bucket(f, c->hash);
	while (*pp != c)
		pp = &(*pp)->next;
	*pp = c->next;
	c->in_table = 0;
	f->n_--;
}

static void put_call(struct call *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		weft__free(c);
}

int weft_flight_do(weft_flight *f, const void *key, size_t keylen,
                   int (*fn)(void *arg, void **result), void *arg, void **result, int *shared)
{
	if (!fn || (!key && keylen))
		weft__fatal("singleflight: NULL fn or key");
	uint64_t h = hash_key(key, keylen);
	weft_mutex_lock(&f->m_);
	struct call *c = f->calls_ ? *find(f, key, keylen, h) : NULL;
	if (c) {
		/* In flight: wait for its result. */
		c->dups++;
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
		weft_mutex_unlock(&f->m_);
		weft_wg_wait(&c->wg);
		int ret = c->ret;
		if (result)
			*result = c->result;
		if (shared)
			*shared = 1;
		put_call(c);
		return ret;
	}
	if (reserve(f) != 0 || !(c = weft__alloc(sizeof *c + keylen))) {
		weft_mutex_unlock(&f->m_);
		return ENOMEM;
	}
	memset(c, 0, sizeof *c);
	c->hash = h;
	c->keylen = keylen;
	if (keylen)
		memcpy(c->key, key, keylen);
	c->refs = 1;
	c->in_table = 1;
	weft_wg_add(&c->wg, 1);
	struct call **b = bucket(f, h);
	c->next = *b;
	*b = c;
	f->n_++;
	weft_mutex_unlock(&f->m_);

	void *res = NULL;
	c->ret = fn(arg, &res);
	c->result = res;

	weft_mutex_lock(&f->m_);
	if (c->in_table)
		unlink_call(f, c);
	int dups = c->dups; /* no waiter can join once it is out of the table */
	weft_mutex_unlock(&f->m_);
	weft_wg_done(&c->wg); /* publishes ret and result to the waiters */
	if (result)
		*result = res;
	if (shared)
		*shared = dups > 0;
	int ret = c->ret;
	put_call(c);
	return ret;
}

void weft_flight_forget(weft_flight *f, const void *key, size_t keylen)
{
	uint64_t h = hash_key(key, keylen);
	weft_mutex_lock(&f->m_);
	struct call *c = f->calls_ ? *find(f, key, keylen, h) : NULL;
	if (c)
		unlink_call(f, c);
	weft_mutex_unlock(&f->m_);
}

void weft_flight_destroy(weft_flight *f)
{
	if (f->n_)
		weft__fatal("singleflight: destroy with %u calls in flight", f->n_);
	weft__free(f->calls_);
	f->calls_ = NULL;
	f->cap_ = 0;
}
