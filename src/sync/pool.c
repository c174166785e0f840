/* SPDX-License-Identifier: MIT */
/*
 * pool.c - weft_pool, Go's sync.Pool: a cache of reusable objects with a
 * private slot and a small shared stack per P.
 *
 * Layout. locals_ points to a table of WEFT_MAX_PROCS pointers, indexed by
 * P id, made on first use and installed with a CAS (2 KiB a pool). Each
 * entry is NULL until some caller needs that P's cache, which is then
 * allocated and installed with a CAS too; a cache once installed stays
 * until weft_pool_destroy(), so whoever loaded its pointer may keep using
 * it. nlocals_ is one more than the highest id installed: it bounds the
 * steal scan. Ps come and go with weft_set_procs(), but P ids are fixed and
 * never exceed WEFT_MAX_PROCS, so the table never moves (a table sized for
 * the Ps of the moment would have to be reallocated while owners use their
 * private slots without a lock, as Go does only because its GC keeps the
 * old array alive). Each cache is aligned and padded to a cache line, so
 * two Ps never share one.
 *
 * A cache holds:
 *   private  one object, touched only by the goroutine running on that P
 *            (and by destroy). Goroutines are never preempted, so between
 *            reading m->p and using the slot no other goroutine runs on
 *            that P, provided nothing in between can switch: plain loads
 *            and stores, no atomics. A P changes threads only through the
 *            scheduler's locks, which order the accesses across threads.
 *   shared   a ring of up to WEFT_POOL_PER_P objects under a per-P spin
 *            lock. The owner pushes and pops the newest (warm in its
 *            cache); thieves from other Ps and foreign threads take the
 *            oldest.
 * The overflow list, under lock_, keeps what a put cannot cache when the
 * pool has no free_fn: an array that doubles as it grows and shrinks only
 * at destroy (its header, overflow_, is allocated once so that get can read
 * its count without the lock).
 *
 * "The caller runs on P p" means m->curg, not inside a blocking section
 * (there, sysmon may have handed m->p to another M, whose goroutine now
 * owns the private slot), and p is P_RUNNING. Every other caller (a foreign
 * thread, a blocking section) is treated as foreign: it never touches a
 * private slot.
 *
 * get:  own private, own shared (newest), other Ps' shared (oldest, from
 *       the next P on), the overflow list, then new_fn(arg) or NULL.
 * put:  own private if empty, own shared if not full; a foreign caller
 *       pushes to the shared ring of a random P instead. Else free_fn, else
 *       the overflow list. Nothing put is lost.
 * Objects left in the private slot of a P that weft_set_procs() retired
 * wait there for destroy (or for the P to come back); its shared ring stays
 * open to thieves.
 *
 * Out of memory: when a put cannot allocate the table or the cache it
 * wants, the object goes on to free_fn or the overflow list (get and put
 * cannot fail). An overflow list that cannot grow is fatal: there is then
 * nowhere to keep an object that the pool must not lose.
 *
 * ThreadSanitizer: this layer is not instrumented, so put releases on the
 * object's address and the get (or destroy) that hands it on acquires: what
 * the putter wrote happens before what the getter reads.
 */
#include "weft.h"

#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "fatal.h"
#include "lock.h"
#include "sanitizer.h"
#include "sched.h"

#define OVERFLOW_MIN 16

/* One P's cache. */
struct local {
	void *private_obj;             /* owner: the goroutine running on the P, or destroy */
	uint32_t lock;                 /* spin lock: head, n and shared */
	uint32_t n;                    /* objects in shared; under lock (read racily as a hint) */
	uint32_t head;                 /* index of the oldest; under lock */
	void *mem;                     /* the allocation this record is aligned in; fixed */
	void *shared[WEFT_POOL_PER_P]; /* ring: head .. head + n - 1, mod WEFT_POOL_PER_P */
} __attribute__((aligned(WEFT_CACHELINE)));

/* The overflow list; allocated once, under the pool's lock_. */
struct overflow {
	size_t n;    /* under lock_; atomic (get reads it racily) */
	size_t cap;  /* under lock_ */
	void **objs; /* under lock_ */
};

/* The P the caller runs on, as defined in the file comment, or NULL. */
static inline __attribute__((always_inline)) struct weft__p *own_p(struct weft__m *m)
{
	if (!m || !m->curg || __atomic_load_n(&m->in_blocking, __ATOMIC_RELAXED) || !m->p ||
	    __atomic_load_n(&m->p->status, __ATOMIC_RELAXED) != P_RUNNING)
		return NULL;
	return m->p;
}

/* p's table, made when create is set and it has none; NULL if it has none
 * (or it cannot be allocated). */
static struct local **table_get(weft_pool *p, int create)
{
	/* Acquire pairs with the release of the CAS below. */
	void *tab = __atomic_load_n(&p->locals_, __ATOMIC_ACQUIRE);
	if (tab || !create)
		return tab;
	struct local **mine = weft__calloc(WEFT_MAX_PROCS, sizeof *mine);
	if (!mine)
		return NULL;
	if (__atomic_compare_exchange_n(&p->locals_, &tab, (void *)mine, 0, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE))
		return mine;
	weft__free(mine); /* another caller installed one first: tab holds it */
	return tab;
}

/* The cache of P id, made when create is set; NULL if there is none. Never
 * switches (it may call malloc, which does not park a goroutine). */
static struct local *local_get(weft_pool *p, int id, int create)
{
	struct local **tab = table_get(p, create);
	if (!tab)
		return NULL;
	struct local *l = __atomic_load_n(&tab[id], __ATOMIC_ACQUIRE);
	if (l || !create)
		return l;
	void *mem = weft__alloc(sizeof *l + WEFT_CACHELINE - 1);
	if (!mem)
		return NULL;
	struct local *mine = (struct local *)(((uintptr_t)mem + WEFT_CACHELINE - 1) &
	                                      ~(uintptr_t)(WEFT_CACHELINE - 1));
	memset(mine, 0, sizeof *mine);
	mine->mem = mem;
	/* Release: the zeroed record before its pointer (pairs with the
	 * acquire loads of tab[id]). */
	if (!__atomic_compare_exchange_n(&tab[id], &l, mine, 0, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE)) {
		weft__free(mem);
		return l;
	}
	/* Raise nlocals_ to cover id; the release orders the table entry
	 * before the count (pairs with the acquire in steal). */
	uint32_t n = __atomic_load_n(&p->nlocals_, __ATOMIC_RELAXED);
	while (n < (uint32_t)id + 1 &&
	       !__atomic_compare_exchange_n(&p->nlocals_, &n, (uint32_t)id + 1, 0, __ATOMIC_RELEASE,
	                                    __ATOMIC_RELAXED))
		;
	return mine;
}

/* Push obj on l's shared ring; 0 when it is full. Any caller. */
static int shared_push(struct local *l, void *obj)
{
	int ok = 0;
	weft__spin_lock(&l->lock);
	if (l->n < WEFT_POOL_PER_P) {
		l->shared[(l->head + l->n) % WEFT_POOL_PER_P] = obj;
		__atomic_store_n(&l->n, l->n + 1, __ATOMIC_RELAXED);
		ok = 1;
	}
	weft__spin_unlock(&l->lock);
	return ok;
}

/* Take the newest (owner) or the oldest (thief) object of l's shared ring,
 * or NULL. Any caller. */
static void *shared_pop(struct local *l, int newest)
{
	if (__atomic_load_n(&l->n, __ATOMIC_RELAXED) == 0)
		return NULL; /* a hint: a push racing with it may be missed */
	void *obj = NULL;
	weft__spin_lock(&l->lock);
	if (l->n > 0) {
		if (newest) {
			obj = l->shared[(l->head + l->n - 1) % WEFT_POOL_PER_P];
		} else {
			obj = l->shared[l->head];
			l->head = (l->head + 1) % WEFT_POOL_PER_P;
		}
		__atomic_store_n(&l->n, l->n - 1, __ATOMIC_RELAXED);
	}
	weft__spin_unlock(&l->lock);
	return obj;
}

/* The oldest object of some P's shared ring other than skip's, scanning
 * from start; or NULL. */
static void *steal(weft_pool *p, uint32_t start, int skip)
{
	/* Acquire pairs with the release in local_get: the table and the
	 * entries below n are installed. */
	uint32_t n = __atomic_load_n(&p->nlocals_, __ATOMIC_ACQUIRE);
	if (n == 0)
		return NULL;
	struct local **tab = __atomic_load_n(&p->locals_, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = (start + i) % n;
		if ((int)id == skip)
			continue;
		struct local *l = __atomic_load_n(&tab[id], __ATOMIC_ACQUIRE);
		void *obj = l ? shared_pop(l, 0) : NULL;
		if (obj)
			return obj;
	}
	return NULL;
}

/* Keep obj on the overflow list. Any caller. */
static void overflow_push(weft_pool *p, void *obj)
{
	weft__lock(&p->lock_);
	struct overflow *o = p->overflow_;
	if (!o) {
		o = weft__calloc(1, sizeof *o);
		if (!o)
			weft__fatal("sync: out of memory for a pool's overflow list");
		/* Release: the zeroed header before its pointer (pairs with
		 * the acquire in overflow_pop). */
		__atomic_store_n(&p->overflow_, (void *)o, __ATOMIC_RELEASE);
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : OVERFLOW_MIN;
		void **objs =
			cap <= SIZE_MAX / sizeof *objs ? weft__alloc(cap * sizeof *objs) : NULL;
		if (!objs)
			weft__fatal("sync: out of memory for a pool's overflow list");
		if (o->n)
			memcpy(objs, o->objs, o->n * sizeof *objs);
		weft__free(o->objs);
		o->objs = objs;
		o->cap = cap;
	}
	o->objs[o->n] = obj;
	__atomic_store_n(&o->n, o->n + 1, __ATOMIC_RELAXED);
	weft__unlock(&p->lock_);
}

/* The newest object of the overflow list, or NULL. Any caller. */
static void *overflow_pop(weft_pool *p)
{
	struct overflow *o = __atomic_load_n(&p->overflow_, __ATOMIC_ACQUIRE);
	if (!o || __atomic_load_n(&o->n, __ATOMIC_RELAXED) == 0)
		return NULL;
	void *obj = NULL;
	weft__lock(&p->lock_);
	if (o->n > 0) {
		obj = o->objs[o->n - 1];
		__atomic_store_n(&o->n, o->n - 1, __ATOMIC_RELAXED);
	}
	weft__unlock(&p->lock_);
	return obj;
}

/* The caller's own P's cache if it exists, inline (the fast path of get
 * and put: no call between finding the P and using its private slot). */
static inline __attribute__((always_inline)) struct local *own_local(weft_pool *p,
                                                                      struct weft__p *pp)
{
	struct local **tab = __atomic_load_n((struct local ***)&p->locals_, __ATOMIC_ACQUIRE);
	return tab ? __atomic_load_n(&tab[pp->id], __ATOMIC_ACQUIRE) : NULL;
}

void *weft_pool_get(weft_pool *p)
{
	struct weft__m *m = weft__m_get();
	struct weft__p *pp = own_p(m);
	void *obj = NULL;
	int id = -1;
	uint32_t start;
	if (pp) {
		/* From here to the end of the block nothing may switch: the
		 * private slot is this P's only while we keep running. */
		id = pp->id;
		start = (uint32_t)id + 1;
		struct local *l = own_local(p, pp);
		if (l) {
			obj = l->private_obj;
			if (obj)
				l->private_obj = NULL;
			else
				obj = shared_pop(l, 1);
		}
	} else {
		start = (uint32_t)weft__fastrand_m(m);
	}
	if (!obj)
		obj = steal(p, start, id);
	if (!obj)
		obj = overflow_pop(p);
	if (obj) {
		weft__race_acquire(obj); /* pairs with the release in put */
		return obj;
	}
	return p->new_fn ? p->new_fn(p->arg) : NULL;
}

void weft_pool_put(weft_pool *p, void *obj)
{
	if (!obj)
		weft__fatal("sync: put of NULL into a pool");
	/* Everything the caller did to obj happens before the next get of it
	 * (pairs with the acquire in get and destroy). */
	weft__race_release(obj);
	struct weft__m *m = weft__m_get();
	struct weft__p *pp = own_p(m);
	if (pp) {
		/* No switch from own_p to the private store (see get). */
		struct local *l = own_local(p, pp);
		if (__builtin_expect(!l, 0))
			l = local_get(p, pp->id, 1);
		if (l && !l->private_obj) {
			l->private_obj = obj;
			return;
		}
		if (l && shared_push(l, obj))
			return;
	} else {
		/* A foreign caller: some running P's shared ring. */
		int np = __atomic_load_n(&weft__sched.nprocs, __ATOMIC_RELAXED);
		int id = np > 1 ? (int)weft__rand_below(weft__fastrand_m(m), (uint32_t)np) : 0;
		struct local *l = local_get(p, id, 1);
		if (l && shared_push(l, obj))
			return;
	}
	if (p->free_fn)
		p->free_fn(obj, p->arg);
	else
		overflow_push(p, obj);
}

/* Give obj to free_fn, if the pool has one. */
static void drop(void (*free_fn)(void *obj, void *arg), void *arg, void *obj)
{
	if (!obj || !free_fn)
		return;
	weft__race_acquire(obj); /* pairs with the release in put */
	free_fn(obj, arg);
}

void weft_pool_destroy(weft_pool *p)
{
	if (!p)
		return;
	/* Detach everything first: p is an empty pool again even while
	 * free_fn runs (which may use it). */
	struct local **tab = p->locals_;
	struct overflow *o = p->overflow_;
	p->locals_ = NULL;
	p->nlocals_ = 0;
	p->overflow_ = NULL;
	p->lock_ = 0;
	void (*free_fn)(void *obj, void *arg) = p->free_fn;
	void *arg = p->arg;
	for (int i = 0; tab && i < WEFT_MAX_PROCS; i++) {
		struct local *l = tab[i];
		if (!l)
			continue;
		drop(free_fn, arg, l->private_obj);
		for (uint32_t j = 0; j < l->n; j++)
			drop(free_fn, arg, l->shared[(l->head + j) % WEFT_POOL_PER_P]);
		weft__free(l->mem);
	}
	weft__free(tab);
	if (o) {
		for (size_t j = 0; j < o->n; j++)
			drop(free_fn, arg, o->objs[j]);
		weft__free(o->objs);
		weft__free(o);
	}
}
