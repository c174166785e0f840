/* SPDX-License-Identifier: MIT */
/*
 * sudogq_test.c - a channel's wait queue (src/chan/chan_impl.h) against a
 * model: random pushes, takes from the head and unlinks from anywhere (a
 * deadline, a select's losing case) keep the FIFO order, and the look-ahead
 * hints a close's walk prefetches by stay sound (the mark is a queued sudog
 * or none; a hint names a sudog queued after its owner) and useful (with
 * pushes only, every sudog but the last WEFT_AHEAD names the one queued
 * WEFT_AHEAD after it).
 */
#include "test.h"

#include "chan_impl.h"

enum { N = 512 };

struct fixture {
	weft_chan c; /* only nwait is used */
	struct weft__sudogq q;
	struct weft__wait w; /* not claimable: takes never skip */
	struct weft__sudog sg[N];
	int seq[N];      /* push order of sg[i] (its latest push) */
	int model[N];    /* the queue's sudogs, head first, by index */
	int n;           /* sudogs queued */
};

static void fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	for (int i = 0; i < N; i++) {
		f->sg[i].w = &f->w;
		f->sg[i].c = &f->c;
	}
}

static int index_of(struct fixture *f, const struct weft__sudog *sg)
{
	return (int)(sg - f->sg);
}

static int model_pos(struct fixture *f, int i)
{
	for (int k = 0; k < f->n; k++)
		if (f->model[k] == i)
			return k;
	return -1;
}

/* The queue matches the model, and the hints are sound. */
static void check(struct fixture *f)
{
	int k = 0;
	for (struct weft__sudog *sg = f->q.first; sg; sg = sg->next, k++) {
		ASSERT_LT(k, f->n);
		ASSERT_EQ(index_of(f, sg), f->model[k]);
		ASSERT_PTR_EQ(sg->q, &f->q);
		if (sg->ahead) {
			/* Sound: a later push, even if it has left since. */
			ASSERT_GT(f->seq[index_of(f, sg->ahead)], f->seq[index_of(f, sg)]);
		}
	}
	ASSERT_EQ(k, f->n);
	ASSERT_EQ(f->c.nwait, f->n);
	if (f->n == 0) {
		ASSERT(f->q.first == NULL && f->q.last == NULL);
		ASSERT(f->q.mark == NULL);
	} else {
		ASSERT_EQ(index_of(f, f->q.last), f->model[f->n - 1]);
	}
	if (f->q.mark)
		ASSERT_GE(model_pos(f, index_of(f, f->q.mark)), 0);
}

static void push(struct fixture *f, int i, int *clock)
{
	f->seq[i] = ++*clock;
	weft__sudogq_push(&f->q, &f->sg[i]);
	f->model[f->n++] = i;
}

static void drop(struct fixture *f, int pos)
{
	memmove(&f->model[pos], &f->model[pos + 1], (size_t)(f->n - pos - 1) * sizeof(int));
	f->n--;
}

/* Pushes only, then takes: every sudog but the last WEFT_AHEAD has the hint
 * of the one pushed WEFT_AHEAD after it. Guards: a mark that never advances,
 * or an off-by-one gap (the walk would fetch the wrong waiter). */
TEST_THREAD(hints_name_the_waiter_ahead)
{
	static struct fixture f;
	fixture_init(&f);
	int clock = 0;
	for (int i = 0; i < N; i++)
		push(&f, i, &clock);
	check(&f);
	for (int i = 0; i < N; i++) {
		if (i < N - WEFT_AHEAD)
			ASSERT_PTR_EQ(f.sg[i].ahead, &f.sg[i + WEFT_AHEAD]);
		else
			ASSERT(f.sg[i].ahead == NULL);
	}
	for (int i = 0; i < N; i++) {
		ASSERT_PTR_EQ(weft__sudogq_take(&f.q), &f.sg[i]);
		drop(&f, 0);
	}
	check(&f);
	ASSERT(weft__sudogq_take(&f.q) == NULL);
}

/* Random pushes, takes and unlinks against the model; the hints stay sound
 * and keep coming after unlinks (of the mark too). Guards: a mark left on a
 * sudog that has left the queue (its next is then stale: a later push would
 * read it), a queue emptied with a mark, lost FIFO order. */
TEST_THREAD(random_operations_match_the_model)
{
	static struct fixture f;
	uint32_t seed = 12345;
	long hinted = 0;
	for (int round = 0; round < TEST_SIZE(200, 20); round++) {
		fixture_init(&f);
		int clock = 0;
		for (int op = 0; op < 2000; op++) {
			uint32_t r = test_rand32(&seed) % 10;
			if (r < 5 || f.n == 0) {
				/* push a sudog not queued now */
				int i = (int)(test_rand32(&seed) % N);
				if (model_pos(&f, i) >= 0)
					continue;
				push(&f, i, &clock);
			} else if (r < 8) {
				struct weft__sudog *sg = weft__sudogq_take(&f.q);
				ASSERT(sg != NULL);
				ASSERT_EQ(index_of(&f, sg), f.model[0]);
				drop(&f, 0);
			} else {
				/* unlink from anywhere; the mark itself half the time */
				int pos = (int)(test_rand32(&seed) % (uint32_t)f.n);
				if (f.q.mark && (test_rand32(&seed) & 1))
					pos = model_pos(&f, index_of(&f, f.q.mark));
				weft__sudogq_unlink(&f.q, &f.sg[f.model[pos]]);
				drop(&f, pos);
			}
			check(&f);
		}
		for (int k = 0; k < f.n; k++)
			hinted += f.sg[f.model[k]].ahead != NULL;
	}
	ASSERT_GT(hinted, 0); /* the hints did not just stop */
}
