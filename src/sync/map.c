/* SPDX-License-Identifier: MIT */
/*
 * map.c - weft_map, Go's sync.Map: a hash map whose loads take no lock and
 * write no shared memory, and whose memory is reclaimed without a garbage
 * collector by the scheduler's grace periods.
 *
 * Layout. table_ points to a table: a power-of-two array of slots, open
 * addressing with linear probing. A slot is NULL or points to an entry, and
 * once set it never changes for the life of that table: entries are neither
 * moved nor removed inside a table (a deleted key leaves its entry behind as
 * a tombstone). So a lock-free probe, which stops at the first NULL slot, is
 * never misled by a concurrent writer; it may only miss a key being added.
 * An entry is immutable (hash, key bytes copied in) except its value:
 *
 *   live      any user pointer, NULL included
 *   DELETED   the key is absent; the entry is a tombstone in the current
 *             table and may come back to life (under m_)
 *   EXPUNGED  the entry was dropped from the current table by a rebuild or
 *             a clear; its value never changes again and it is freed after
 *             a grace period
 *
 *   live -> live        store, swap, compare_and_swap: a CAS, lock-free
 *   live -> DELETED     delete, compare_and_delete (under m_)
 *   DELETED -> live     a store to a deleted key, "revive" (under m_)
 *   DELETED -> EXPUNGED rebuild (under m_)
 *   live -> EXPUNGED    clear (under m_)
 *
 * What takes m_: whatever changes which keys exist (a new key, a revive, a
 * delete, a rebuild, a clear). Loads and writes to a live key do not, on a
 * goroutine. So under m_ the set of dead entries is stable, count_ (live
 * keys) is exact, and a table's used slots minus count_ are its tombstones.
 * A lock-free writer only ever CASes from a live value it has just read, so
 * it can never write into a dropped entry: a rebuild drops only DELETED
 * entries (which no lock-free writer touches) and marks them EXPUNGED, so
 * that a dropped entry says so; a clear CASes every entry, live or not, to
 * EXPUNGED before it unpublishes the table, so a store racing with it
 * either lands first (and is cleared) or fails its CAS and retries under
 * m_ against the new table. Whoever finds a dead value goes to the locked
 * path, which looks the key up again in the current table (where no entry
 * is EXPUNGED: finding one there is a fatal broken invariant).
 *
 * Rebuild, when an insert would fill more than 3/4 of the slots: the new
 * table has the smallest power of two >= MIN_CAP slots that holds count_ + 1
 * keys at a load of at most 1/2, and the live entries only, shared with the
 * old table (a write through a stale pointer to the old table is a write to
 * the same entry, seen through the new one). Live keys make it grow;
 * tombstones of distinct keys are dropped, so churn keeps the table bounded.
 * The hash seed (random per table, kept across rebuilds) stays with the
 * entries' stored hashes.
 *
 * Reclamation. A load on a goroutine that weft__reader_enter() accepts is a
 * read section: it loads the table, probes and loads a value with no switch
 * in between (nothing it calls can block or yield). A rebuild or clear
 * unpublishes the old table and its dropped entries, then snapshots the Ps'
 * schedule ticks (weft__grace_start) into a retired batch; the batch is
 * freed, under m_, once weft__grace_done() says every P has switched or
 * stopped since. The writer's own P counts as passed at once: its running
 * goroutine is the writer, in no read section, so a goroutine that churns a
 * map without ever switching still gets its memory back. Pending batches are
 * checked after each locked operation (the newest only: see reclaim), and
 * weft_map_destroy() frees them all. A goroutine that runs long without a
 * switch holds back what is retired meanwhile, as it holds back everything
 * else queued on its P. A foreign thread (or a goroutine in a blocking
 * section) is never in a read section: it does everything under m_, which
 * excludes the freeing.
 * weft_map_range() may block inside its callback, so it pins instead: it
 * counts itself in ranges_ under m_, iterates the table it found without
 * m_, and nothing is freed while ranges_ is not 0.
 *
 * Out of memory: an insert allocates its entry, and for a rebuild the new
 * table and the retired batch, before it changes anything, so ENOMEM leaves
 * the map as it was. A clear with no memory for its batch deletes key by
 * key instead, leaving tombstones for the next rebuild.
 *
 * ThreadSanitizer: this layer is not instrumented, so a write to a value
 * releases on its entry's address and a read of one acquires there: what
 * the storer wrote before the store happens before what the loader reads
 * after the load. Keys are compared with a loop of plain loads, not memcmp,
 * because TSan intercepts libc calls even from uninstrumented code and would
 * then report a lock-free reader's compare against the free that follows
 * its grace period, an order it cannot see.
 *
 * Rejected: Go's pair of a read-only map and a locked dirty map promoted
 * after enough misses (it copies the whole map on promotion and counts
 * misses in shared memory, and leans on a garbage collector for the old
 * copies); a lock or a version per bucket (every write to an existing key
 * would take it); readers announcing themselves in an epoch counter (a load
 * would write shared memory, when the scheduler's switch counter already
 * tells when a reader is done).
 */
#include "weft.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "hash.h"
#include "fatal.h"
#include "sanitizer.h"
#include "sched.h"

#define MIN_CAP 16

/* The two dead values; no user pointer can equal their addresses. */
static char deleted_mark, expunged_mark;
#define DELETED ((void *)&deleted_mark)
#define EXPUNGED ((void *)&expunged_mark)

struct entry {
	void *val;     /* atomic: a value, DELETED or EXPUNGED (see above) */
	uint64_t hash; /* immutable once published, as are keylen and key */
	size_t keylen;
	unsigned char key[];
};

struct table {
	uint64_t seed;         /* hash seed, never 0; immutable */
	size_t mask;           /* capacity - 1; immutable */
	size_t used;           /* non-NULL slots: live entries and tombstones; under m_ */
	struct entry *slots[]; /* atomic; published with a release store, then fixed */
};

/* What one rebuild or clear unpublished, until no reader can see it. */
struct retired {
	struct retired *next; /* the map's retired_ list; under m_ */
	struct table *table;  /* the old table: its slot array only */
	size_t n;             /* dropped[]: the entries it owns */
	int nticks;           /* weft__grace_start's snapshot */
	uint32_t ticks[WEFT_MAX_PROCS];
	struct entry *dropped[];
};

enum op { OP_LOAD, OP_SWAP, OP_LOAD_OR_STORE, OP_CAS, OP_DELETE, OP_CAD };

/* on_entry's answer for an entry with no value: the key is absent. */
#define DEAD (-1)

/* One operation on one key, on the caller's stack. */
struct req {
	enum op op;
	const void *key;
	size_t keylen;
	void *val;     /* SWAP, LOAD_OR_STORE: the value to store; CAS: the new one */
	void *old;     /* CAS: the value expected */
	void *out;     /* the value found; LOAD_OR_STORE when it stores: val */
	uint64_t seed; /* the seed hash was computed with; 0: none yet */
	uint64_t hash;
};

/* ---------------------------------------------------------------- hashing */

/* Plain loads, not memcmp (see ThreadSanitizer in the file comment). */
static int key_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
	for (; n >= 8; a += 8, b += 8, n -= 8)
		if (weft__rd64(a) != weft__rd64(b))
			return 0;
	for (; n > 0; a++, b++, n--)
		if (*a != *b)
			return 0;
	return 1;
}

/* ---------------------------------------------------------------- tables */

static int is_dead(const void *v)
{
	return v == DELETED || v == EXPUNGED;
}

/* Set r->hash for t's seed. */
static void hash_for(const struct table *t, struct req *r)
{
	if (r->seed != t->seed) {
		r->seed = t->seed;
		r->hash = weft__hash_bytes(r->key, r->keylen, t->seed);
	}
}

/* r's entry in t, or NULL. Lock-free or under m_. */
static struct entry *lookup(const struct table *t, struct req *r)
{
	hash_for(t, r);
	for (size_t i = r->hash & t->mask;; i = (i + 1) & t->mask) {
		/* Acquire: pairs with the release that published the entry, so
		 * its hash and key are seen as written. */
		struct entry *e = __atomic_load_n(&t->slots[i], __ATOMIC_ACQUIRE);
		if (!e)
			return NULL;
		if (e->hash == r->hash && e->keylen == r->keylen &&
		    key_eq(e->key, r->key, r->keylen))
			return e;
	}
}

/* The first free slot on h's probe path. t is unpublished, or m_ is held. */
static size_t free_slot(const struct table *t, uint64_t h)
{
	size_t i = h & t->mask;
	while (__atomic_load_n(&t->slots[i], __ATOMIC_RELAXED))
		i = (i + 1) & t->mask;
	return i;
}

/*
 * Apply r to e, r's entry: 0 (r->out = the value found) or EAGAIN (a CAS
 * that expected another value), or DEAD when e has no value. Lock-free or
 * under m_: e's value may change meanwhile only from one live value to
 * another; a dead value changes only under m_. OP_DELETE and OP_CAD (a
 * compare-and-delete) are for the lock holder only (count_ goes with them).
 */
static int on_entry(struct entry *e, struct req *r)
{
	void *v = __atomic_load_n(&e->val, __ATOMIC_ACQUIRE);
	for (;;) {
		if (is_dead(v))
			return DEAD;
		if (r->op == OP_LOAD || r->op == OP_LOAD_OR_STORE) {
			weft__race_acquire(e); /* pairs with the release of v's writer */
			r->out = v;
			return 0;
		}
		if ((r->op == OP_CAS || r->op == OP_CAD) && v != r->old)
			return EAGAIN;
		void *nv = r->op == OP_DELETE || r->op == OP_CAD ? DELETED : r->val;
		/* Release: what the caller wrote happens before the loads that
		 * see nv; acquire: v's writer happens before our use of v. */
		weft__race_release(e);
		if (__atomic_compare_exchange_n(&e->val, &v, nv, 0, __ATOMIC_ACQ_REL,
		                                __ATOMIC_ACQUIRE)) {
			weft__race_acquire(e);
			r->out = v;
			return 0;
		}
		/* v was reloaded by the failed CAS. */
	}
}

static struct table *table_new(size_t cap, uint64_t seed)
{
	struct table *t = weft__calloc(1, sizeof *t + cap * sizeof t->slots[0]);
	if (t) {
		t->seed = seed;
		t->mask = cap - 1;
	}
	return t;
}

static struct retired *retired_new(size_t n)
{
	struct retired *b = weft__alloc(sizeof *b + n * sizeof b->dropped[0]);
	if (b)
		b->n = 0;
	return b;
}

static void retired_free(struct retired *b)
{
	for (size_t i = 0; i < b->n; i++)
		weft__free(b->dropped[i]);
	weft__free(b->table);
	weft__free(b);
}

/*
 * Queue b, which holds old table t and what was dropped from it, both
 * already unpublished, for freeing after a grace period. Under m_.
 */
static void retire(weft_map *m, struct retired *b, struct table *t)
{
	b->table = t;
	b->nticks = weft__grace_start(b->ticks); /* our own P counts as passed */
	b->next = m->retired_;
	m->retired_ = b;
}

/*
 * Free the retired batches no reader can see any more. Under m_. The list
 * runs from the newest batch, and once the newest one's grace period is
 * over, so is every older one's: a read section that can see older memory
 * began before that was unpublished, so before the newest snapshot, and on
 * each P the newest grace period has seen it end (the P switched or
 * stopped, or ran the newest batch's writer). So one check, of the newest,
 * frees all or waits; it costs the same however many batches wait.
 */
static void reclaim(weft_map *m)
{
	struct retired *b = m->retired_;
	if (!b || m->ranges_ > 0 || !weft__grace_done(b->ticks, b->nticks))
		return; /* (a range may still walk any of them) */
	m->retired_ = NULL;
	while (b) {
		struct retired *next = b->next;
		retired_free(b);
		b = next;
	}
}

static void count_add(weft_map *m, int64_t d)
{
	/* Under m_; atomic for weft_map_len's lock-free read. */
	__atomic_store_n(&m->count_, m->count_ + d, __ATOMIC_RELAXED);
}

/*
 * Replace ot (NULL: the map has no table yet) with a table sized for
 * count_ + 1 keys holding ot's live entries, and retire ot with its
 * tombstones. Returns the new table, published, or NULL when out of memory
 * (then nothing has changed). Under m_.
 */
static struct table *rebuild(weft_map *m, struct table *ot)
{
	size_t live = (size_t)m->count_, cap = MIN_CAP;
	while (cap / 2 < live + 1)
		cap <<= 1;
	struct table *nt = table_new(cap, ot ? ot->seed : (weft__fastrand() | 1));
	if (!nt)
		return NULL;
	if (!ot) {
		__atomic_store_n(&m->table_, nt, __ATOMIC_RELEASE);
		return nt;
	}
	size_t ndead = ot->used - live;
	struct retired *b = retired_new(ndead);
	if (!b) {
		weft__free(nt);
		return NULL;
	}
	for (size_t i = 0; i <= ot->mask; i++) {
		struct entry *e = ot->slots[i];
		void *v = DELETED;
		if (!e)
			continue;
		if (__atomic_compare_exchange_n(&e->val, &v, EXPUNGED, 0, __ATOMIC_RELAXED,
		                                __ATOMIC_RELAXED)) {
			if (b->n == ndead)
				weft__fatal("sync: Map holds more tombstones than it counts");
			b->dropped[b->n++] = e;
		} else if (v == EXPUNGED) {
			weft__fatal("sync: expunged Map entry in the current table");
		} else {
			nt->slots[free_slot(nt, e->hash)] = e; /* still live: shared */
			nt->used++;
		}
	}
	/* Release: pairs with the readers' acquire of table_, which then see
	 * nt's slots as written. */
	__atomic_store_n(&m->table_, nt, __ATOMIC_RELEASE);
	retire(m, b, ot);
	return nt;
}

/* Add r's key, absent from t (the current table, or NULL), with r->val.
 * Returns ENOENT ("added"), or ENOMEM with nothing changed. Under m_. */
static int insert(weft_map *m, struct table *t, struct req *r)
{
	if (r->keylen > SIZE_MAX / 2)
		return ENOMEM;
	struct entry *e = weft__alloc(sizeof *e + r->keylen);
	if (!e)
		return ENOMEM;
	if (!t || t->used + 1 > (t->mask + 1) / 4 * 3) {
		t = rebuild(m, t);
		if (!t) {
			weft__free(e);
			return ENOMEM;
		}
	}
	hash_for(t, r); /* the first table brings a new seed */
	e->val = r->val;
	e->hash = r->hash;
	e->keylen = r->keylen;
	if (r->keylen)
		memcpy(e->key, r->key, r->keylen);
	weft__race_release(e); /* the storer's writes before a load of val */
	/* Release: pairs with lookup's acquire of the slot. */
	__atomic_store_n(&t->slots[free_slot(t, r->hash)], e, __ATOMIC_RELEASE);
	t->used++;
	count_add(m, 1);
	r->out = r->val;
	return ENOENT;
}

/* Give tombstone e of the current table r->val. Returns ENOENT ("added").
 * Under m_. */
static int revive(weft_map *m, struct entry *e, struct req *r)
{
	void *v = DELETED;
	weft__race_release(e);
	if (!__atomic_compare_exchange_n(&e->val, &v, r->val, 0, __ATOMIC_RELEASE,
	                                 __ATOMIC_RELAXED))
		weft__fatal("sync: expunged Map entry in the current table");
	count_add(m, 1);
	r->out = r->val;
	return ENOENT;
}

/* r under m_: any caller, any state of the key. */
static int locked(weft_map *m, struct req *r)
{
	weft_mutex_lock(&m->m_);
	struct table *t = __atomic_load_n(&m->table_, __ATOMIC_RELAXED);
	struct entry *e = t ? lookup(t, r) : NULL;
	int rc = e ? on_entry(e, r) : DEAD;
	if (rc == 0 && (r->op == OP_DELETE || r->op == OP_CAD))
		count_add(m, -1);
	else if (rc == DEAD && (r->op == OP_SWAP || r->op == OP_LOAD_OR_STORE))
		rc = e ? revive(m, e, r) : insert(m, t, r);
	else if (rc == DEAD)
		rc = ENOENT;
	reclaim(m);
	weft_mutex_unlock(&m->m_);
	return rc;
}

/* r lock-free when the caller may read so and the key is live (or plainly
 * absent, for what needs no insert), else under m_. */
static int run(weft_map *m, struct req *r)
{
	if (weft__reader_enter(weft__m_get())) {
		/* A read section: no switch from here until we return or call
		 * locked(), and nothing read here is used after that. Acquire
		 * pairs with rebuild's release of table_. */
		struct table *t = __atomic_load_n(&m->table_, __ATOMIC_ACQUIRE);
		struct entry *e = t ? lookup(t, r) : NULL;
		int del = r->op == OP_DELETE || r->op == OP_CAD;
		int rc = e && !del ? on_entry(e, r) : DEAD;
		if (rc != DEAD)
			return rc;
		if (r->op == OP_LOAD || r->op == OP_CAS || (del && !e))
			return ENOENT;
	}
	return locked(m, r);
}

/* ---------------------------------------------------------------- API */

int weft_map_load(weft_map *m, const void *key, size_t keylen, void **val)
{
	struct req r = {.op = OP_LOAD, .key = key, .keylen = keylen};
	int rc = run(m, &r);
	if (rc == 0 && val)
		*val = r.out;
	return rc;
}

int weft_map_store(weft_map *m, const void *key, size_t keylen, void *val)
{
	return weft_map_swap(m, key, keylen, val, NULL) == ENOMEM ? ENOMEM : 0;
}

int weft_map_swap(weft_map *m, const void *key, size_t keylen, void *val, void **prev)
{
	struct req r = {.op = OP_SWAP, .key = key, .keylen = keylen, .val = val};
	int rc = run(m, &r);
	if (rc != ENOMEM && prev)
		*prev = rc == 0 ? r.out : NULL;
	return rc;
}

int weft_map_load_or_store(weft_map *m, const void *key, size_t keylen, void *val, void **actual)
{
	struct req r = {.op = OP_LOAD_OR_STORE, .key = key, .keylen = keylen, .val = val};
	int rc = run(m, &r);
	if (rc != ENOMEM && actual)
		*actual = r.out;
	return rc;
}

int weft_map_compare_and_swap(weft_map *m, const void *key, size_t keylen, void *old_val,
                              void *new_val)
{
	struct req r = {.op = OP_CAS, .key = key, .keylen = keylen, .val = new_val, .old = old_val};
	return run(m, &r);
}

int weft_map_delete(weft_map *m, const void *key, size_t keylen, void **val)
{
	struct req r = {.op = OP_DELETE, .key = key, .keylen = keylen};
	int rc = run(m, &r);
	if (rc == 0 && val)
		*val = r.out;
	return rc;
}

int weft_map_compare_and_delete(weft_map *m, const void *key, size_t keylen, void *old_val)
{
	struct req r = {.op = OP_CAD, .key = key, .keylen = keylen, .old = old_val};
	return run(m, &r);
}

int weft_map_range(weft_map *m, int (*fn)(const void *key, size_t keylen, void *val, void *arg),
                   void *arg)
{
	weft_mutex_lock(&m->m_);
	struct table *t = __atomic_load_n(&m->table_, __ATOMIC_RELAXED);
	m->ranges_++; /* pins t and its entries: reclaim frees nothing now */
	weft_mutex_unlock(&m->m_);
	int rc = 0;
	for (size_t i = 0; t && i <= t->mask && rc == 0; i++) {
		struct entry *e = __atomic_load_n(&t->slots[i], __ATOMIC_ACQUIRE);
		void *v = e ? __atomic_load_n(&e->val, __ATOMIC_ACQUIRE) : DELETED;
		if (is_dead(v))
			continue;
		weft__race_acquire(e); /* the key's and the value's writers */
		rc = fn(e->key, e->keylen, v, arg);
	}
	weft_mutex_lock(&m->m_);
	m->ranges_--;
	reclaim(m);
	weft_mutex_unlock(&m->m_);
	return rc;
}

int64_t weft_map_len(weft_map *m)
{
	return __atomic_load_n(&m->count_, __ATOMIC_RELAXED);
}

void weft_map_clear(weft_map *m)
{
	weft_mutex_lock(&m->m_);
	struct table *t = __atomic_load_n(&m->table_, __ATOMIC_RELAXED);
	struct retired *b = t ? retired_new(t->used) : NULL;
	for (size_t i = 0; t && i <= t->mask; i++) {
		struct entry *e = t->slots[i];
		if (!e)
			continue;
		/* Mark before unpublishing: a lock-free store racing with us
		 * lands before the mark or fails its CAS (see the top). Without
		 * memory for the batch, make tombstones of the live entries. */
		void *v = __atomic_load_n(&e->val, __ATOMIC_RELAXED);
		if (b) {
			while (!__atomic_compare_exchange_n(&e->val, &v, EXPUNGED, 0,
			                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				;
			b->dropped[b->n++] = e;
		} else {
			while (!is_dead(v) &&
			       !__atomic_compare_exchange_n(&e->val, &v, DELETED, 0,
			                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				;
		}
	}
	if (b) {
		__atomic_store_n(&m->table_, NULL, __ATOMIC_RELEASE);
		retire(m, b, t);
	}
	count_add(m, -m->count_);
	reclaim(m);
	weft_mutex_unlock(&m->m_);
}

void weft_map_destroy(weft_map *m)
{
	if (!m)
		return;
	if (m->ranges_)
		weft__fatal("sync: Map destroyed during Range");
	struct table *t = m->table_;
	for (size_t i = 0; t && i <= t->mask; i++)
		weft__free(t->slots[i]);
	weft__free(t);
	while (m->retired_) {
		struct retired *b = m->retired_;
		m->retired_ = b->next;
		retired_free(b);
	}
	memset(m, 0, sizeof *m);
}
