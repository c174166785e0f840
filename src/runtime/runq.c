/* SPDX-License-Identifier: MIT */
/*
 * runq.c - the run queues: a bounded lock-free ring per P plus a runnext
 * slot, and the global queue behind sched.lock (Go's runqput/runqget/
 * runqsteal in proc.go).
 *
 * Design. The owner P is the only producer: it writes a slot, then publishes
 * it with a release store of runqtail. Consumers (the owner, and thieves on
 * other Ms) read head and tail with acquire and claim slots by CAS on
 * runqhead; a thief copies its slots out before the CAS, and the CAS fails if
 * anyone consumed meanwhile, so a slot is never handed out twice. The ring is
 * bounded (WEFT_RUNQ_SIZE, 1024): on overflow the owner moves half of it,
 * plus the new G, to the global queue in one locked operation, so the global
 * lock is taken once per 512 spawns at worst.
 *
 * runnext holds the G readied or spawned last by the running G: it runs next,
 * ahead of the ring, which keeps a producer and its consumer in lock-step on
 * one P and their data in cache (this is what makes ping-pong fast). A G
 * displaced from runnext goes to the tail of the ring. Thieves take runnext
 * only as a last resort.
 *
 * The owner takes runnext with no locked instruction (two of the six in a
 * channel ping-pong round trip were the runnext CAS), and swaps a new G in
 * (a spawn or a wake-up displacing the last one) likewise, by an asymmetric
 * Dekker hand-shake with thieves, who pay for it with a membarrier() that
 * forces a full barrier on every running thread of the process:
 *   owner:  rn_taking = 1; if rn_steal == 0 { g = runnext; runnext = NULL
 *           (a swap: = new) }; rn_taking = 0   (else: the CAS or exchange)
 *   thief:  CAS rn_steal 0 -> 1; membarrier(); if rn_taking == 0:
 *           CAS runnext g -> NULL; rn_steal = 0
 * membarrier puts a barrier in the owner's instruction stream somewhere
 * after the thief's store of rn_steal. If it falls after the owner's load of
 * rn_steal, the owner's earlier store of rn_taking is visible to the thief,
 * who backs off; if before, the owner sees rn_steal == 1 and uses the CAS.
 * The owner reads runnext again after seeing rn_steal == 0, so a G a thief
 * took just before is not taken twice. Thieves steal runnext rarely (after
 * a nap, below), so the syscall costs nothing that matters. Where membarrier
 * is missing (old kernels, valgrind), both sides use the CAS.
 *
 * The ring's head gets a hand-shake of the same kind, with the cost moved
 * to when a thief starts: an M announces itself in sched.ringthieves (and
 * makes a membarrier) before its first steal from a non-empty ring, and
 * stays announced until it exits; sysmon announces itself for a drain.
 * While no thief is announced, the owner takes the head with plain stores
 * (rq_taking = 1; if ringthieves == 0 { head++ }; rq_taking = 0), else
 * with the CAS; a thief waits until rq_taking == 0 before it reads head (a
 * take begun before its membarrier is then over; one begun after it sees
 * the count). So a P that no other M has ever stolen from (one P, or Ps
 * that never ran dry) switches with no locked instruction in its queue:
 * Yield at 1 P went from 15.0 to 10.4 ns. Once Ms steal, the CAS is used,
 * as before. Rejected: leaving the count when an M sleeps (stopm). An M
 * that sleeps and wakes often then makes a membarrier on every wake-up,
 * and its interrupts land on lock holders: MutexContended at 2 Ps went
 * from 23 to 40 ns.
 *
 * A chain of runnext hand-offs inherits one time slice, as in Go: a
 * ping-pong pair would otherwise run back to back for ever and starve the
 * ring behind it (Go bounds that with sysmon's 10 ms preemption, which weft
 * cannot do to C code). So after WEFT_RUNNEXT_STREAK runnext picks in a
 * row, the scheduler takes the ring's head first (weft__runq_get_fair).
 *
 * Rejected: a mutex per P queue (a lock round trip on every spawn and
 * switch); an unbounded lock-free list (a CAS on every put by the owner).
 */
#include "sched.h"

#include "alloc.h"
#include "lock.h"
#include "fatal.h"

static inline uint32_t load_acq(uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

uint32_t weft__runq_len(struct weft__p *p)
{
	uint32_t h = load_acq(&p->runqhead), t = load_acq(&p->runqtail);
	uint32_t n = t - h;
	if (n > WEFT_RUNQ_SIZE)
		n = 0; /* torn read: head moved past the tail we read */
	return n + (__atomic_load_n(&p->runnext, __ATOMIC_RELAXED) != NULL);
}

int weft__runq_empty(struct weft__p *p)
{
	/* Read head, tail and runnext consistently: retry if tail moved, so a G
	 * moving from runnext to the ring is not missed (Go's runqempty). */
	for (;;) {
		uint32_t h = load_acq(&p->runqhead);
		uint32_t t = load_acq(&p->runqtail);
		struct weft__g *next = __atomic_load_n(&p->runnext, __ATOMIC_ACQUIRE);
		if (t == load_acq(&p->runqtail))
			return h == t && next == NULL;
	}
}

/* The ring is full: move half of it and g to the global queue. Returns 0 if
 * a thief made room meanwhile (the caller retries). Owner P only.
 * No batch array: once the CAS on head succeeds the claimed slots can only
 * be rewritten by us (the only producer), so they are copied straight into
 * the global queue. This runs on goroutine stacks, which must stay shallow:
 * a parked goroutine should fit in one page. */
static int put_slow(struct weft__p *p, struct weft__g *g, uint32_t h, uint32_t t)
{
	struct weft__sched *s = &weft__sched;
	uint32_t n = t - h;
	if (n != WEFT_RUNQ_SIZE)
		weft__fatal("runq: put_slow on a queue that is not full");
	n /= 2;
	if (!__atomic_compare_exchange_n(&p->runqhead, &h, h + n, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		return 0;
	weft__lock(&s->lock);
	for (uint32_t i = 0; i < n; i++)
		weft__globrunq_put(p->runq[(h + i) % WEFT_RUNQ_SIZE]);
	weft__globrunq_put(g);
	if (s->chaos) {
		/* Shuffle what we just appended. */
		int64_t base = s->gq_head + s->runqsize - (n + 1);
		for (uint32_t i = n; i > 0; i--) {
			uint32_t j = (uint32_t)(weft__fastrand() % (i + 1));
			struct weft__g **a = &s->gq[(base + i) % s->gq_cap];
			struct weft__g **b = &s->gq[(base + j) % s->gq_cap];
			struct weft__g *x = *a;
			*a = *b;
			*b = x;
		}
	}
	weft__unlock(&s->lock);
	return 1;
}

/* The owner's side of the runnext hand-shake (above): replace runnext with
 * g (NULL: take it) with no locked instruction. Returns 1, the old runnext
 * in *old, if it could; 0 if a thief may be at it, or membarrier is
 * missing: then the caller uses its CAS or exchange, and *old is as it was. */
static inline int owner_swap_next(struct weft__p *p, struct weft__g *g, struct weft__g **old)
{
	if (!weft__membarrier_ok)
		return 0;
	__atomic_store_n(&p->rn_taking, 1, __ATOMIC_RELAXED);
	/* Only the compiler is fenced: the hardware may still order the store
	 * after the load; the thief's membarrier covers it. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	int alone = !__atomic_load_n(&p->rn_steal, __ATOMIC_ACQUIRE);
	if (alone) {
		/* Read again: a thief may have taken it just before. */
		*old = __atomic_load_n(&p->runnext, __ATOMIC_RELAXED);
		if (*old || g)
			__atomic_store_n(&p->runnext, g, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&p->rn_taking, 0, __ATOMIC_RELEASE);
	return alone;
}

void weft__runq_put_slow(struct weft__p *p, struct weft__g *g, int next)
{
	if (weft__sched.chaos && (weft__fastrand() & 1))
		next = 0;
	if (next) {
		/* (The empty-runnext case is weft__runq_put's, inline.) Without
		 * a locked instruction where it can: its full barrier would also
		 * wait here for the new G's cold stores (its record and first
		 * frame, on a spawn). */
		struct weft__g *old;
		if (!owner_swap_next(p, g, &old))
			old = __atomic_exchange_n(&p->runnext, g, __ATOMIC_ACQ_REL);
		if (!old)
			return;
		g = old; /* the displaced one goes to the tail */
	}
	for (;;) {
		uint32_t h = load_acq(&p->runqhead);
		uint32_t t = p->runqtail;
		if (weft__runq_append(p, g, h, t) || put_slow(p, g, h, t))
			return;
	}
}

/* The owner's take of its runnext, or NULL. */
static inline struct weft__g *take_next(struct weft__p *p)
{
	struct weft__g *next = __atomic_load_n(&p->runnext, __ATOMIC_RELAXED);
	if (!next)
		return NULL;
	if (owner_swap_next(p, NULL, &next))
		return next;
	if (__atomic_compare_exchange_n(&p->runnext, &next, NULL, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_RELAXED))
		return next;
	return NULL;
}

/* Warm the record (and with it the TLB entry of the stack's top page) of
 * the G now at the ring's head while the one just taken runs: with many Gs
 * queued (a mass wake-up) each is cold. Only a prefetch: the G may be
 * stolen and gone meanwhile. */
static inline void warm_next(struct weft__p *p, uint32_t h, uint32_t t)
{
	if (t - h > 1)
		__builtin_prefetch(p->runq[(h + 1) % WEFT_RUNQ_SIZE], 1);
}

/* The owner's take of its ring's head with plain stores, no thief being
 * announced (rq_taking set by the caller). */
static inline struct weft__g *take_ring_alone(struct weft__p *p)
{
	uint32_t h = __atomic_load_n(&p->runqhead, __ATOMIC_RELAXED);
	uint32_t t = p->runqtail;
	if (t == h)
		return NULL;
	struct weft__g *g = p->runq[h % WEFT_RUNQ_SIZE];
	/* Chaos: hold the take open a few microseconds now and then, so that
	 * a thief announcing itself meets one under way (it must wait it
	 * out). */
	if (weft__sched.chaos && weft__fastrand() % 8 == 0)
		for (int i = 0; i < 100; i++)
			weft__cpu_relax();
	__atomic_store_n(&p->runqhead, h + 1, __ATOMIC_RELEASE);
	warm_next(p, h, t);
	return g;
}

/* The owner's take of its ring's head, or NULL. */
static inline struct weft__g *take_ring(struct weft__p *p)
{
	/* The ring's hand-shake (see the top of this file). With a thief
	 * already announced, straight to the CAS: no rq_taking stores. */
	if (weft__membarrier_ok && !__atomic_load_n(&weft__sched.ringthieves, __ATOMIC_RELAXED)) {
		__atomic_store_n(&p->rq_taking, 1, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		/* Acquire: a thief that has just left the count made its last
		 * CAS on our head before it did. */
		int alone = !__atomic_load_n(&weft__sched.ringthieves, __ATOMIC_ACQUIRE);
		struct weft__g *g = alone ? take_ring_alone(p) : NULL;
		__atomic_store_n(&p->rq_taking, 0, __ATOMIC_RELEASE);
		if (alone)
			return g;
	}
	for (;;) {
		uint32_t h = load_acq(&p->runqhead);
		uint32_t t = p->runqtail;
		if (t == h)
			return NULL;
		struct weft__g *g = p->runq[h % WEFT_RUNQ_SIZE];
		if (__atomic_compare_exchange_n(&p->runqhead, &h, h + 1, 0, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED)) {
			warm_next(p, h, t);
			return g;
		}
	}
}

struct weft__g *weft__runq_get(struct weft__p *p)
{
	struct weft__g *g = take_next(p);
	return g ? g : take_ring(p);
}

struct weft__g *weft__runq_get_fair(struct weft__p *p)
{
	if (p->rn_streak < WEFT_RUNNEXT_STREAK) {
		struct weft__g *g = take_next(p);
		if (g) {
			p->rn_streak++;
			return g;
		}
	}
	p->rn_streak = 0;
	struct weft__g *g = take_ring(p);
	return g ? g : take_next(p);
}

/* A thief's take of victim's runnext, expected to hold next: the G, or
 * NULL if the owner (or another thief) got there first. */
static struct weft__g *steal_runnext(struct weft__p *victim, struct weft__g *next)
{
	if (!weft__membarrier_ok)
		return __atomic_compare_exchange_n(&victim->runnext, &next, NULL, 0,
						   __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
			       ? next
			       : NULL;
	uint32_t free_ = 0;
	if (!__atomic_compare_exchange_n(&victim->rn_steal, &free_, 1, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		return NULL; /* another thief is at it */
	weft__membarrier();
	struct weft__g *g = NULL;
	if (!__atomic_load_n(&victim->rn_taking, __ATOMIC_ACQUIRE)) {
		next = __atomic_load_n(&victim->runnext, __ATOMIC_ACQUIRE);
		if (next && __atomic_compare_exchange_n(&victim->runnext, &next, NULL, 0,
							__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			g = next;
	}
	__atomic_store_n(&victim->rn_steal, 0, __ATOMIC_RELEASE);
	return g;
}

/* Become a thief of rings: once the membarrier returns, every owner's take
 * begun since sees the count and uses the CAS, and every take begun before
 * has made its rq_taking visible (grab waits for it to end). */
static void ring_thief_announce(int *thief)
{
	__atomic_add_fetch(&weft__sched.ringthieves, 1, __ATOMIC_SEQ_CST);
	weft__membarrier();
	*thief = 1;
}

void weft__ring_thief_retire(int *thief)
{
	if (!*thief)
		return;
	*thief = 0;
	__atomic_sub_fetch(&weft__sched.ringthieves, 1, __ATOMIC_RELEASE);
}

/* Claim about half of victim's ring, copying the Gs into dst starting at
 * index dst_at (mod the ring size); returns how many were claimed. dst is
 * the thief's own ring (slots it has not published) or a plain array. */
static uint32_t grab(struct weft__p *victim, struct weft__g **dst, uint32_t dst_at,
		     uint32_t dst_mask, int steal_next, int *thief)
{
	for (;;) {
		/* A take its owner began before we were announced may still be
		 * under way, without a CAS: let it end (it is a few
		 * instructions, unless its thread was preempted: then leave
		 * this victim for now). Takes begun since use the CAS. */
		for (int spin = 0; __atomic_load_n(&victim->rq_taking, __ATOMIC_ACQUIRE); spin++) {
			if (spin == 1000)
				return 0;
			weft__cpu_relax();
		}
		uint32_t h = load_acq(&victim->runqhead);
		uint32_t t = load_acq(&victim->runqtail);
		uint32_t n = t - h;
		if (n != 0 && !*thief && weft__membarrier_ok) {
			ring_thief_announce(thief);
			continue;
		}
		n = n - n / 2;
		if (n == 0) {
			if (!steal_next)
				return 0;
			struct weft__g *next = __atomic_load_n(&victim->runnext, __ATOMIC_ACQUIRE);
			if (!next)
				return 0;
			if (__atomic_load_n(&victim->status, __ATOMIC_RELAXED) == P_RUNNING &&
			    victim->m) {
				/* As Go: a running victim's runnext was most likely
				 * readied by a goroutine about to park, which will
				 * run it next at no cost. Give it a few microseconds
				 * before taking it (and both goroutines' caches) to
				 * this CPU: sleep, rather than poll the victim's
				 * runnext line while its owner writes it. (Go's
				 * usleep(3); the kernel's timer slack makes it
				 * longer, which also spaces out the wake-ups of
				 * idle Ms that a busy ping-pong would cause.) */
				uint32_t tick = __atomic_load_n(&victim->schedtick, __ATOMIC_RELAXED);
				uint32_t nap_word = 0;
				const struct timespec nap = { 0, 3000 };
				weft__raw_futex(&nap_word, FUTEX_WAIT_PRIVATE, 0, &nap);
				/* A victim that switched meanwhile is alive and
				 * runs its runnext chain itself (a ping-pong pair
				 * alternates the same two Gs there: seeing the same
				 * G again does not mean it waited all along). */
				if (__atomic_load_n(&victim->schedtick, __ATOMIC_RELAXED) != tick)
					return 0;
				if (__atomic_load_n(&victim->runnext, __ATOMIC_ACQUIRE) != next)
					continue;
			}
			next = steal_runnext(victim, next);
			if (!next)
				return 0;
			dst[dst_at & dst_mask] = next;
			return 1;
		}
		if (n > WEFT_RUNQ_SIZE / 2)
			continue; /* read an inconsistent head/tail pair: retry */
		for (uint32_t i = 0; i < n; i++)
			dst[(dst_at + i) & dst_mask] = victim->runq[(h + i) % WEFT_RUNQ_SIZE];
		/* The CAS commits the claim; it fails if the owner or another
		 * thief consumed any of these slots after our read. */
		if (__atomic_compare_exchange_n(&victim->runqhead, &h, h + n, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return n;
	}
}

struct weft__g *weft__runq_steal(struct weft__p *p, struct weft__p *victim, int steal_next,
				 int *thief)
{
	/* Copy straight into our own ring past its published tail (we only
	 * steal when our ring is empty, so half a victim's ring fits), then
	 * publish all but the last, which we run. */
	uint32_t t = p->runqtail;
	uint32_t n = grab(victim, p->runq, t, WEFT_RUNQ_SIZE - 1, steal_next, thief);
	if (n == 0)
		return NULL;
	n--;
	struct weft__g *g = p->runq[(t + n) % WEFT_RUNQ_SIZE];
	if (n)
		__atomic_store_n(&p->runqtail, t + n, __ATOMIC_RELEASE);
	__atomic_fetch_add(&p->nsteal, 1, __ATOMIC_RELAXED);
	return g;
}

void weft__globrunq_put(struct weft__g *g)
{
	weft__globrunq_putbatch(&g, 1);
}

/* Make room for n more; sched.lock held. */
static void gq_reserve(int64_t n)
{
	struct weft__sched *s = &weft__sched;
	if (s->runqsize + n <= s->gq_cap)
		return;
	int64_t ncap = s->gq_cap ? s->gq_cap : 1024;
	while (ncap < s->runqsize + n)
		ncap *= 2;
	struct weft__g **nv = weft__alloc(sizeof *nv * (size_t)ncap);
	if (!nv)
		weft__fatal("out of memory growing the global run queue");
	for (int64_t i = 0; i < s->runqsize; i++)
		nv[i] = s->gq[(s->gq_head + i) % s->gq_cap];
	weft__free(s->gq);
	s->gq = nv;
	s->gq_cap = ncap;
	s->gq_head = 0;
}

void weft__globrunq_putbatch(struct weft__g **v, int n)
{
	struct weft__sched *s = &weft__sched;
	gq_reserve(n);
	for (int i = 0; i < n; i++)
		s->gq[(s->gq_head + s->runqsize + i) % s->gq_cap] = v[i];
	__atomic_store_n(&s->runqsize, s->runqsize + n, __ATOMIC_SEQ_CST);
}

static struct weft__g *gq_pop(void)
{
	struct weft__sched *s = &weft__sched;
	struct weft__g *g = s->gq[s->gq_head];
	s->gq_head = (s->gq_head + 1) % s->gq_cap;
	__atomic_store_n(&s->runqsize, s->runqsize - 1, __ATOMIC_RELAXED);
	return g;
}

struct weft__g *weft__globrunq_get(struct weft__p *p, int max)
{
	struct weft__sched *s = &weft__sched;
	int64_t size = s->runqsize;
	/* A P beyond weft_procs() takes nothing: its M may have checked the
	 * count before weft_set_procs lowered it (pick_fast reads it without
	 * the lock), and a G queued since then must not run there. The count
	 * is exact here: it changes only under sched.lock. */
	if (size == 0 || p->id >= s->nprocs)
		return NULL;
	/* Take a fair share: the queue divided among the Ps, at most half a
	 * ring, so one P does not hoard what the others could run. */
	int64_t n = size / s->nprocs + 1;
	if (n > size)
		n = size;
	if (max > 0 && n > max)
		n = max;
	if (n > WEFT_RUNQ_SIZE / 2)
		n = WEFT_RUNQ_SIZE / 2;
	struct weft__g *g = gq_pop();
	for (int64_t i = 1; i < n; i++)
		weft__runq_put(p, gq_pop(), 0);
	return g;
}

int weft__runq_drain(struct weft__p *victim)
{
	struct weft__g *batch[WEFT_RUNQ_SIZE / 2];
	int total = 0, thief = 0;
	uint32_t n;
	while ((n = grab(victim, batch, 0, ~0u, 1, &thief)) > 0) {
		weft__lock(&weft__sched.lock);
		weft__globrunq_putbatch(batch, (int)n);
		weft__unlock(&weft__sched.lock);
		total += (int)n;
	}
	weft__ring_thief_retire(&thief);
	return total;
}
