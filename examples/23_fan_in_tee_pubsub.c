/* SPDX-License-Identifier: MIT */
/*
 * 23_fan_in_tee_pubsub.c - three ways to move streams around: fan-in
 * (weft_merge), tee (weft_tee) and broadcast (weft_pubsub).
 *
 * A small monitoring station:
 *
 *   sensor 0 --+                               +--> stats (every reading: averages)
 *   sensor 1 --+-- merge --> readings -- tee --+
 *   sensor 2 --+                               +--> router -- publish --> broker
 *
 *   broker topic "readings": archive    WEFT_PUBSUB_BLOCK        keeps all
 *                            dashboard  WEFT_PUBSUB_DROP_OLDEST  latest 4
 *   broker topic "alerts":   pager      WEFT_PUBSUB_DROP_NEWEST  first 2
 *
 *  1. Fan-in: each sensor sends on its own channel; weft_merge_new() starts a
 *     goroutine per input that forwards to one channel, and closes it when
 *     every sensor has closed its own (Go's merge with a WaitGroup).
 *  2. Tee: every reading goes to both the stats goroutine and the router,
 *     in order; neither misses one (Go's tee: a select over both sends,
 *     setting the case that went to nil).
 *  3. Pub-sub: the router publishes each reading, and the high ones as
 *     alerts. Each subscription has a bounded buffer and a policy for when
 *     it is full: the archive makes the router wait (it must keep all), the
 *     slow dashboard drops the oldest (it shows the latest), the slow pager
 *     drops the newest (one page per incident is enough). Each counts what
 *     it delivered and dropped, exactly.
 *  4. Stopping: a merge of a sensor that never stops, under a context with a
 *     timeout: it stops, closes its output and joins its goroutines.
 *
 * Run: ./23_fan_in_tee_pubsub
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#define MS ((int64_t)1000 * 1000)
#define SENSORS 3
#define PER_SENSOR 20
#define ALERT_ABOVE 32.0

struct reading {
	int sensor;
	int seq;
	double value;
};

struct sensor {
	int id;
	int count;      /* readings to send, then close out; 0: until refused */
	weft_chan *out; /* its own channel of struct reading */
	weft_wg *wg;
};

static void sense(void *arg)
{
	struct sensor *s = arg;
	for (int seq = 0; s->count == 0 || seq < s->count; seq++) {
		weft_sleep((s->id + 1) * MS); /* each has its own pace */
		struct reading r = {s->id, seq, 20 + (s->id * 7 + seq * 13) % 15};
		if (weft_chan_send(s->out, &r) != 0)
			break; /* refused: the channel was closed */
	}
	if (s->count)
		weft_chan_close(s->out); /* the sender closes, as in Go */
	weft_wg_done(s->wg);
}

/* Reads every reading the tee gives it; counts and averages per sensor. */
struct stats {
	weft_chan *in;
	int count[SENSORS];
	double sum[SENSORS];
	weft_wg *wg;
};

static void stats_run(void *arg)
{
	struct stats *st = arg;
	struct reading r;
	while (weft_chan_recv(st->in, &r) == 0) {
		st->count[r.sensor]++;
		st->sum[r.sensor] += r.value;
	}
	weft_wg_done(st->wg);
}

/* Publishes each reading to "readings", the high ones to "alerts" too; when
 * its input closes, closes the broker, so the subscribers end after
 * receiving what they were given. */
struct router {
	weft_chan *in;
	weft_pubsub *ps;
	int published, alerts, errors;
	weft_wg *wg;
};

static void route(void *arg)
{
	struct router *rt = arg;
	struct reading r;
	while (weft_chan_recv(rt->in, &r) == 0) {
		/* Waits while the archive's buffer is full: backpressure. */
		rt->errors += weft_pubsub_publish(rt->ps, "readings", &r) != 0;
		rt->published++;
		if (r.value > ALERT_ABOVE) {
			rt->errors += weft_pubsub_publish(rt->ps, "alerts", &r) != 0;
			rt->alerts++;
		}
	}
	weft_pubsub_close(rt->ps);
	weft_wg_done(rt->wg);
}

/* A subscriber: receives until its subscription is closed and drained,
 * pausing after each message to play a slow reader. */
struct subscriber {
	const char *name;
	weft_sub *sub;
	int64_t pause_ns;
	int got;
	int in_order; /* each sensor's readings arrived in order */
	int last_seq[SENSORS];
	struct reading first, last;
	weft_wg *wg;
};

static void subscribe_run(void *arg)
{
	struct subscriber *s = arg;
	struct reading r;
	s->in_order = 1;
	for (int i = 0; i < SENSORS; i++)
		s->last_seq[i] = -1;
	while (weft_sub_recv(s->sub, &r) == 0) {
		if (s->got++ == 0)
			s->first = r;
		s->last = r;
		s->in_order &= r.seq > s->last_seq[r.sensor];
		s->last_seq[r.sensor] = r.seq;
		weft_sleep(s->pause_ns);
	}
	weft_wg_done(s->wg);
}

/* The result names used in weft's documentation (strerror(ETIMEDOUT) reads
 * "Connection timed out"). */
static const char *result_name(int err)
{
	switch (err) {
	case 0: return "done (0)";
	case EPIPE: return "EPIPE";
	case ECANCELED: return "ECANCELED";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return strerror(err);
	}
}

static void report(const struct subscriber *s, weft_sub_stats *st)
{
	weft_sub_stats_get(s->sub, st);
	printf("  %-9s delivered %2llu, dropped %2llu of %2llu offered; in order: %s\n", s->name,
	       (unsigned long long)st->delivered, (unsigned long long)st->dropped,
	       (unsigned long long)st->offered, s->in_order ? "yes" : "NO");
}

static int station(void)
{
	weft_chan *ins[SENSORS], *readings, *to_stats, *to_router;
	struct sensor sensors[SENSORS];
	weft_wg wg = WEFT_WG_INIT;
	weft_merge *merge;
	weft_tee *tee;
	weft_pubsub *ps;

	if (weft_chan_make(&readings, sizeof(struct reading), 8) != 0 ||
	    weft_chan_make(&to_stats, sizeof(struct reading), 8) != 0 ||
	    weft_chan_make(&to_router, sizeof(struct reading), 8) != 0 ||
	    weft_pubsub_new(&ps, sizeof(struct reading)) != 0)
		return 1;
	for (int i = 0; i < SENSORS; i++)
		if (weft_chan_make(&ins[i], sizeof(struct reading), 0) != 0)
			return 1;

	/* 1 and 2: the merge and the tee, started before anyone sends. */
	if (weft_merge_new(&merge, readings, ins, SENSORS, NULL) != 0 ||
	    weft_tee_new(&tee, readings, to_stats, to_router, NULL) != 0)
		return 1;

	/* 3: subscriptions first, so they see every message. */
	struct subscriber archive = {.name = "archive", .wg = &wg};
	struct subscriber dashboard = {.name = "dashboard", .pause_ns = 5 * MS, .wg = &wg};
	struct subscriber pager = {.name = "pager", .pause_ns = 40 * MS, .wg = &wg};
	if (weft_pubsub_subscribe(ps, "readings", 16, WEFT_PUBSUB_BLOCK, &archive.sub) != 0 ||
	    weft_pubsub_subscribe(ps, "readings", 4, WEFT_PUBSUB_DROP_OLDEST, &dashboard.sub) !=
	            0 ||
	    weft_pubsub_subscribe(ps, "alerts", 2, WEFT_PUBSUB_DROP_NEWEST, &pager.sub) != 0)
		return 1;

	struct stats st = {.in = to_stats, .wg = &wg};
	struct router rt = {.in = to_router, .ps = ps, .wg = &wg};
	struct subscriber *subs[] = {&archive, &dashboard, &pager};
	weft_wg_add(&wg, 5 + SENSORS);
	if (weft_go(stats_run, &st) != 0 || weft_go(route, &rt) != 0)
		return 1;
	for (int i = 0; i < 3; i++)
		if (weft_go(subscribe_run, subs[i]) != 0)
			return 1;
	for (int i = 0; i < SENSORS; i++) {
		sensors[i] =
			(struct sensor){.id = i, .count = PER_SENSOR, .out = ins[i], .wg = &wg};
		if (weft_go(sense, &sensors[i]) != 0)
			return 1;
	}

	/* Everything ends by itself: sensors close their channels, so the merge
	 * closes readings, so the tee closes both outputs, so stats ends and
	 * the router closes the broker, so the subscribers drain and end. */
	weft_wg_wait(&wg);
	int merge_err = weft_merge_wait(merge), tee_err = weft_tee_wait(tee);

	printf("1. merge of %d sensors: %s\n", SENSORS, result_name(merge_err));
	printf("2. tee: %s; stats saw", result_name(tee_err));
	int stats_total = 0;
	for (int i = 0; i < SENSORS; i++) {
		printf(" sensor %d: %d (mean %.1f)%s", i, st.count[i], st.sum[i] / st.count[i],
		       i + 1 < SENSORS ? "," : "\n");
		stats_total += st.count[i];
	}
	printf("   and the router published all %d readings, and %d alerts\n", rt.published,
	       rt.alerts);
	printf("3. subscriptions:\n");
	weft_sub_stats as, ds, pg;
	report(&archive, &as);
	report(&dashboard, &ds);
	report(&pager, &pg);
	printf("  the dashboard's last reading: sensor %d #%d; the pager's first alert: "
	       "sensor %d #%d\n",
	       dashboard.last.sensor, dashboard.last.seq, pager.first.sensor, pager.first.seq);

	int total = SENSORS * PER_SENSOR;
	int ok = merge_err == 0 && tee_err == 0 && stats_total == total && rt.published == total &&
	         rt.errors == 0 &&
	         /* block: every reading, nothing dropped */
	         archive.got == total && as.dropped == 0 && archive.in_order &&
	         /* the drop policies: every message accounted for */
	         ds.delivered + ds.dropped == (uint64_t)total && dashboard.in_order &&
	         pg.delivered + pg.dropped == (uint64_t)rt.alerts && pager.in_order &&
	         /* drop oldest keeps the latest: the last reading published */
	         memcmp(&dashboard.last, &archive.last, sizeof archive.last) == 0;

	weft_merge_free(merge);
	weft_tee_free(tee);
	for (int i = 0; i < 3; i++)
		weft_sub_free(subs[i]->sub);
	weft_pubsub_free(ps);
	for (int i = 0; i < SENSORS; i++)
		weft_chan_release(ins[i]);
	weft_chan_release(readings);
	weft_chan_release(to_stats);
	weft_chan_release(to_router);
	return ok ? 0 : 1;
}

/* 4: a sensor that never stops, merged under a 30 ms timeout. */
static int stopping(void)
{
	weft_chan *in, *out;
	weft_ctx *ctx;
	weft_merge *merge;
	weft_wg wg = WEFT_WG_INIT;

	if (weft_chan_make(&in, sizeof(struct reading), 0) != 0 ||
	    weft_chan_make(&out, sizeof(struct reading), 0) != 0 ||
	    weft_ctx_with_timeout(weft_ctx_background(), 30 * MS, &ctx) != 0)
		return 1;
	struct sensor endless = {.id = 0, .count = 0, .out = in, .wg = &wg};
	weft_wg_add(&wg, 1);
	if (weft_go(sense, &endless) != 0 || weft_merge_new(&merge, out, &in, 1, ctx) != 0)
		return 1;
	int got = 0;
	struct reading r;
	while (weft_chan_recv(out, &r) == 0) /* until the merge closes out */
		got++;
	int err = weft_merge_wait(merge);
	printf("4. merge under a 30 ms timeout: %d readings, then %s\n", got, result_name(err));
	weft_merge_free(merge); /* its goroutine is gone: nothing leaks */
	weft_chan_close(in);    /* and the sensor's next send is refused */
	weft_wg_wait(&wg);
	weft_ctx_release(ctx);
	weft_chan_release(in);
	weft_chan_release(out);
	return err == ETIMEDOUT ? 0 : 1;
}

static int run(void *unused)
{
	(void)unused;
	int a = station();
	int b = stopping();
	if (a || b) {
		fprintf(stderr, "something was lost or did not stop\n");
		return 1;
	}
	return 0;
}

int main(void)
{
	return weft_main(run, NULL);
}
