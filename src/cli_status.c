/*
 * cli_status: `backfilld status`: the queue, throughput, errors and
 * coverage in one snapshot; with --watch, a live view whose every poll
 * costs what the runs still open cost, however long the history.
 */
#include "cli_int.h"
#include "cli_verify.h"

#include "bars.h"
#include "coalesce.h"
#include "log.h"
#include "migrations.h"
#include "timeframe.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* --- status --watch ------------------------------------------------------------ */

/*
 * The live view counts the backlog: every run finished since the oldest run
 * now queued or running (of an enabled definition) was created, plus those
 * still queued or running. What one poll reads, however large job_runs is:
 *  - queued runs from the kept counts (job_run_totals), those waiting out a
 *    retry on their partial index, running ones on the lease index, and the
 *    definitions with the most time in runs not yet succeeded from the kept
 *    coverage (job_coverage, plus the log the scheduler has not folded in
 *    yet), their runs left counted for those shown:
 *    O(definitions + runs running), not O(runs queued);
 *  - runs finished since the last poll, on the finished_at index: O(runs
 *    finished in the last WATCH_SETTLE_S seconds and one interval). Their
 *    counts, bars and requests are added up here, never re-read from history;
 *  - for the definitions shown, their runs finished since the backlog began.
 * Only when the view starts (or the queue, having run dry, gets new work)
 * does it read all the backlog's finished runs, and once more when the
 * queue runs dry, so that it starts and ends on the tables' exact counts.
 *
 * A run's finished_at is when the transaction that completes it began; it
 * commits a little later. So runs are added up for good only once their
 * finished_at is WATCH_SETTLE_S seconds old, and the newer ones are read
 * afresh at every poll.
 */
#define WATCH_SETTLE_S "10"
#define WATCH_MAX_DEFS 50

static const char watch_base_sql[] =
    "SELECT least(now(), (SELECT min(created_at) FROM job_runs WHERE status = 'queued' AND NOT "
    "paused),"
    "             (SELECT min(created_at) FROM job_runs WHERE status = 'running'))::text";

/* The coverage log the scheduler has not folded in yet (it does every pass,
 * 10 s by default; after a daemon stops, at the next start), per definition:
 * the spans queued (known) and succeeded (covered) since. One pass over the
 * log, which the fold keeps short. Kept coverage plus this is coverage now,
 * for status and the watch alike. */
#define UNFOLDED_CTE                                                                               \
    " newly AS (SELECT job_def_id, range_agg(span) FILTER (WHERE kind = 'known') AS known,"        \
    "        range_agg(span) FILTER (WHERE kind = 'covered') AS covered"                           \
    "        FROM job_coverage_log WHERE kind IN ('known', 'covered') GROUP BY 1),"

/* $1 backlog start, $2 settled up to, $3 settle seconds, $4 rate_limits name, $5 definitions. */
static const char watch_sql[] =
    "WITH p AS MATERIALIZED (SELECT now() AS now,"
    "        greatest($2::timestamptz, now() - make_interval(secs => $3::float8)) AS cut),"
    " t AS MATERIALIZED (SELECT * FROM job_run_totals),"
    " q AS MATERIALIZED (SELECT (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'queued') AS "
    "queued,"
    "        (SELECT count(*) FROM job_runs WHERE status = 'queued' AND attempt > 0"
    "          AND run_after > now()) AS waiting),"
    " qd AS MATERIALIZED (SELECT coalesce(sum(n), 0) AS n FROM t WHERE status = 'queued' AND "
    "paused),"
    " run AS MATERIALIZED (SELECT count(*) AS n, coalesce(sum(bars_written), 0) AS bars,"
    "        count(DISTINCT locked_by) AS hosts FROM job_runs WHERE status = 'running'),"
    " fin AS MATERIALIZED (SELECT id, symbol, timeframe, feed, status, bars_written, pages,"
    "        started_at, adjustment, range_start, range_end, last_error, finished_at,"
    "        finished_at < (SELECT cut FROM p) AS settled"
    "        FROM job_runs WHERE status IN ('succeeded', 'failed') AND finished_at >= "
    "$2::timestamptz),"
    /* the definitions with the most time in runs not yet succeeded (kept
     * coverage, with what the scheduler has not folded in yet: no scan of
     * the backlog), then their runs left, counted. Without the log, the
     * first definitions done stayed on top until the next fold, their runs
     * left 0: "none with runs left" while hundreds ran. */
    UNFOLDED_CTE
    " pend AS MATERIALIZED (SELECT c.job_def_id, (SELECT sum(extract(epoch FROM upper(u) - "
    "lower(u)))"
    "        FROM unnest((c.known + coalesce(n.known, '{}')) - (c.covered + coalesce(n.covered, "
    "'{}'))) u) AS s"
    "        FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id"
    "        LEFT JOIN newly n ON n.job_def_id = c.job_def_id"
    "        WHERE d.enabled AND (c.known <> c.covered OR n.job_def_id IS NOT NULL)),"
    " defs AS MATERIALIZED (SELECT p.job_def_id, x.left_, x.running,"
    "        (SELECT count(*) FROM pend WHERE s > 0) AS ndefs"
    "        FROM (SELECT * FROM pend WHERE s > 0 ORDER BY s DESC, job_def_id LIMIT $5::int) p,"
    "        LATERAL (SELECT count(*) AS left_, count(*) FILTER (WHERE r.status = 'running') AS "
    "running"
    "                 FROM job_runs r WHERE r.job_def_id = p.job_def_id"
    "                  AND r.status IN ('queued', 'running')) x"
    "        WHERE x.left_ > 0),"
    " dd AS (SELECT x.job_def_id, count(*) FILTER (WHERE x.status = 'succeeded') AS ok,"
    "        count(*) FILTER (WHERE x.status = 'failed') AS bad FROM job_runs x"
    "        WHERE x.job_def_id IN (SELECT job_def_id FROM defs)"
    "          AND x.status IN ('succeeded', 'failed') AND x.finished_at >= $1::timestamptz"
    "        GROUP BY 1)"
    " SELECT 'p', p.now::text, p.cut::text, extract(epoch FROM p.now)::text, NULL, NULL, NULL, "
    "NULL, NULL"
    "   FROM p"
    " UNION ALL SELECT 'q', q.queued::text, q.waiting::text, qd.n::text, run.n::text, "
    "run.bars::text,"
    "   run.hosts::text, NULL, NULL FROM q, qd, run"
    " UNION ALL SELECT 'f', CASE WHEN settled THEN 's' ELSE 'f' END,"
    "   count(*) FILTER (WHERE status = 'succeeded')::text,"
    "   count(*) FILTER (WHERE status = 'failed')::text,"
    "   coalesce(sum(bars_written) FILTER (WHERE status = 'succeeded'), 0)::text, NULL, NULL, "
    "NULL, NULL"
    "   FROM fin GROUP BY settled"
    /* one row per claim and request key: how the runs' requests are reckoned */
    " UNION ALL SELECT 'g', CASE WHEN settled THEN 's' ELSE 'f' END, timeframe, feed,"
    "   (extract(epoch FROM range_start) * 1000000)::bigint::text,"
    "   (extract(epoch FROM range_end) * 1000000)::bigint::text, count(*)::text, sum(pages)::text, "
    "NULL"
    "   FROM fin WHERE status = 'succeeded'"
    "   GROUP BY settled, started_at, timeframe, feed, adjustment, range_start, range_end"
    " UNION ALL (SELECT 'e', id::text, symbol, timeframe, last_error,"
    "   extract(epoch FROM finished_at)::text, NULL, NULL, NULL FROM fin WHERE status = 'failed'"
    "   ORDER BY finished_at DESC, id DESC LIMIT 1)"
    " UNION ALL (SELECT 'r', id::text, symbol, timeframe, last_error, NULL, NULL, NULL, NULL"
    "   FROM job_runs WHERE status = 'queued' AND run_after > now() AND last_error IS NOT NULL"
    "   ORDER BY updated_at DESC, id DESC LIMIT 1)"
    " UNION ALL SELECT 'd', d.id::text, d.symbol, d.timeframe, defs.left_::text, "
    "defs.running::text,"
    "   coalesce(dd.ok, 0)::text, coalesce(dd.bad, 0)::text, defs.ndefs::text"
    "   FROM defs JOIN job_definitions d ON d.id = defs.job_def_id"
    "   LEFT JOIN dd ON dd.job_def_id = defs.job_def_id"
    " UNION ALL SELECT 'b', per_minute::text,"
    "   least(greatest(1, per_minute / 60), tokens + per_minute / 60"
    "         * greatest(0, extract(epoch FROM clock_timestamp() - refreshed_at)::float8))::text,"
    "   greatest(1, per_minute / 60)::text,"
    "   greatest(0, coalesce(extract(epoch FROM paused_until - clock_timestamp())::float8, "
    "0))::text,"
    "   NULL, NULL, NULL, NULL FROM rate_limits WHERE name = $4";

struct watch_run {
    bool have;
    int64_t id;
    char symbol[64], tf[8], error[300];
    double at; /* epoch seconds */
};

struct watch_def {
    int64_t id, left, running, ok, failed;
    char symbol[64], tf[8];
};

/* When a definition was first shown, and how far along it was: its rate since then. */
struct watch_seen {
    int64_t id, done, ms;
};

struct watch {
    PGconn *conn;
    const struct config *c;
    int64_t limit, interval_ms, pace_ms; /* pace_ms: the wait after the last poll (view_pace) */
    char t0[48], cut[48];           /* timestamptz as text: the backlog's start; settled up to */
    double now;                     /* the database's clock at the last poll, epoch seconds */
    int64_t s_ok, s_failed, s_bars; /* settled: finished before cut */
    double s_req;
    int64_t f_ok, f_failed, f_bars; /* fresh: finished since cut, re-read each poll */
    double f_req;
    int64_t queued, waiting, disabled, running, running_bars, hosts, ndefs;
    bool budget;
    double per_minute, avail, cap, paused;
    struct watch_run fail, retry;
    struct watch_def defs[WATCH_MAX_DEFS];
    int ndef;
    struct watch_seen seen[WATCH_MAX_DEFS * 2];
    int nseen;
    struct rates rates;
    bool based, idle; /* idle: the queue ran dry and the counts were made exact */
    char err[300];
};

static int64_t watch_left(const struct watch *w)
{
    return w->queued - w->disabled + w->running;
}

/*
 * The requests one claim's runs of one request key took: they were cut into
 * ceil(runs / symbols-per-request) requests, and the runs of one request
 * record its P pages as runs + P - 1 (the run whose symbol a page ends on
 * counts that page and the next). Reckoned with this host's page limit and
 * symbols per request; a daemon configured otherwise is reckoned wrongly.
 */
static double requests_of(const struct config *c, const char *tf, const char *feed,
                          const char *start_us, const char *end_us, const char *runs,
                          const char *pages)
{
    struct coalesce_key k = {.symbol = "", .timeframe = tf, .feed = feed, .adjustment = "raw"};
    int64_t n = 0, p = 0;
    (void)parse_i64(start_us, INT64_MIN, INT64_MAX, &k.start_us);
    (void)parse_i64(end_us, INT64_MIN, INT64_MAX, &k.end_us);
    (void)parse_i64(runs, 0, INT64_MAX, &n);
    (void)parse_i64(pages, 0, INT64_MAX, &p);
    int64_t per = (int64_t)coalesce_symbols_per_request(&k, c->page_limit, c->batch_symbols);
    int64_t m = per > 0 ? (n + per - 1) / per : n;
    int64_t req = p - n + m;
    return (double)(req < m ? m : req);
}

static void watch_copy_run(struct watch_run *r, PGresult *res, int row)
{
    r->have = true;
    (void)parse_i64(PQgetvalue(res, row, 1), 0, INT64_MAX, &r->id);
    strlcpy_trunc(r->symbol, sizeof r->symbol, PQgetvalue(res, row, 2));
    strlcpy_trunc(r->tf, sizeof r->tf, PQgetvalue(res, row, 3));
    strlcpy_trunc(r->error, sizeof r->error, PQgetvalue(res, row, 4));
    r->at = strtod(PQgetvalue(res, row, 5), NULL);
}

/* Starts counting a new backlog, from the creation of its oldest active run. */
static int watch_rebase(struct watch *w)
{
    PGresult *r = view_query(w->conn, watch_base_sql, 0, NULL, w->err, sizeof w->err);
    if (!r)
        return -1;
    strlcpy_trunc(w->t0, sizeof w->t0, PQgetvalue(r, 0, 0));
    strlcpy_trunc(w->cut, sizeof w->cut, w->t0);
    PQclear(r);
    w->s_ok = w->s_failed = w->s_bars = 0;
    w->s_req = 0;
    w->fail.have = false;
    memset(&w->rates, 0, sizeof w->rates);
    w->nseen = 0;
    w->based = true;
    w->idle = false;
    return 0;
}

/* One poll; settle is how old (s) a finished run must be to be added up for good. */
static int watch_poll(struct watch *w, const char *settle)
{
    char lim[24];
    snprintf(lim, sizeof lim, "%lld", (long long)w->limit);
    const char *name = w->c->rate_limit_name ? w->c->rate_limit_name : "";
    const char *p[] = {w->t0, w->cut, settle, name, lim};
    PGresult *r = view_query(w->conn, watch_sql, 5, p, w->err, sizeof w->err);
    if (!r)
        return -1;
    w->f_ok = w->f_failed = w->f_bars = 0;
    w->f_req = 0;
    w->ndef = 0;
    w->budget = false;
    w->retry.have = false;
    w->queued = w->waiting = w->disabled = w->running = w->running_bars = w->hosts = w->ndefs = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *kind = PQgetvalue(r, i, 0);
#define V(k) PQgetvalue(r, i, (k))
#define I(k, dst) (void)parse_i64(V(k), INT64_MIN, INT64_MAX, (dst))
        bool settled = strcmp(V(1), "s") == 0;
        switch (kind[0]) {
        case 'p':
            strlcpy_trunc(w->cut, sizeof w->cut, V(2));
            w->now = strtod(V(3), NULL);
            break;
        case 'q':
            I(1, &w->queued);
            I(2, &w->waiting);
            I(3, &w->disabled);
            I(4, &w->running);
            I(5, &w->running_bars);
            I(6, &w->hosts);
            break;
        case 'f': {
            int64_t ok = 0, bad = 0, bars = 0;
            I(2, &ok);
            I(3, &bad);
            I(4, &bars);
            *(settled ? &w->s_ok : &w->f_ok) += ok;
            *(settled ? &w->s_failed : &w->f_failed) += bad;
            *(settled ? &w->s_bars : &w->f_bars) += bars;
            break;
        }
        case 'g':
            *(settled ? &w->s_req : &w->f_req) +=
                requests_of(w->c, V(2), V(3), V(4), V(5), V(6), V(7));
            break;
        case 'e':
            if (!w->fail.have || strtod(V(5), NULL) >= w->fail.at)
                watch_copy_run(&w->fail, r, i);
            break;
        case 'r':
            watch_copy_run(&w->retry, r, i);
            break;
        case 'd':
            if (w->ndef < WATCH_MAX_DEFS) {
                struct watch_def *d = &w->defs[w->ndef++];
                I(1, &d->id);
                strlcpy_trunc(d->symbol, sizeof d->symbol, V(2));
                strlcpy_trunc(d->tf, sizeof d->tf, V(3));
                I(4, &d->left);
                I(5, &d->running);
                I(6, &d->ok);
                I(7, &d->failed);
                I(8, &w->ndefs);
            }
            break;
        case 'b':
            w->budget = true;
            w->per_minute = strtod(V(1), NULL);
            w->avail = strtod(V(2), NULL);
            w->cap = strtod(V(3), NULL);
            w->paused = strtod(V(4), NULL);
            break;
        }
#undef I
#undef V
    }
    PQclear(r);
    w->err[0] = '\0';
    return 0;
}

/*
 * One poll, and what the queue's state asks for: a new backlog, or exact
 * counts at the end. A failed statement leaves its message in w->err, which
 * the frame shows; the next tick tries again from where this one stopped.
 */
static void watch_tick(struct watch *w)
{
    bool ok = (w->based || watch_rebase(w) == 0) && watch_poll(w, WATCH_SETTLE_S) == 0;
    if (ok && watch_left(w) > 0 && w->idle) {
        /* New work after the queue ran dry: a new backlog, counted from its start. */
        ok = watch_rebase(w) == 0 && watch_poll(w, WATCH_SETTLE_S) == 0;
    } else if (ok && watch_left(w) == 0 && !w->idle) {
        /* Dry: nothing is in flight, so everything since the start can be read as settled. */
        strlcpy_trunc(w->cut, sizeof w->cut, w->t0);
        w->s_ok = w->s_failed = w->s_bars = 0;
        w->s_req = 0;
        ok = watch_poll(w, "0") == 0;
        w->idle = ok;
    }
    if (ok)
        rates_add(&w->rates, mono_ms(), (double)(w->s_ok + w->f_ok + w->s_failed + w->f_failed),
                  (double)(w->s_bars + w->f_bars + w->running_bars), w->s_req + w->f_req);
}

/* A definition's runs per second since it was first shown, or a negative number if not known. */
static double watch_def_rate(struct watch *w, const struct watch_def *d, int64_t now_ms)
{
    int64_t done = d->ok + d->failed;
    for (int i = 0; i < w->nseen; i++) {
        struct watch_seen *s = &w->seen[i];
        if (s->id != d->id)
            continue;
        if (now_ms - s->ms < 1000 || done <= s->done)
            return -1;
        return (double)(done - s->done) * 1000.0 / (double)(now_ms - s->ms);
    }
    if (w->nseen == (int)ARRAY_SIZE(w->seen)) {
        memmove(w->seen, w->seen + 1, (ARRAY_SIZE(w->seen) - 1) * sizeof *w->seen);
        w->nseen--;
    }
    w->seen[w->nseen++] = (struct watch_seen){d->id, done, now_ms};
    return -1;
}

/* "job 42 AAPL h1: HTTP 500 …" */
static void watch_run_text(char *buf, size_t len, const struct watch_run *r)
{
    snprintf(buf, len, "job %lld %s %s: %s", (long long)r->id, r->symbol, r->tf,
             *r->error ? r->error : "(no error recorded)");
}

static void watch_render(struct view *v, struct watch *w)
{
    int64_t ok = w->s_ok + w->f_ok, failed = w->s_failed + w->f_failed, done = ok + failed;
    int64_t left = watch_left(w), planned = done + left;
    int64_t bars = w->s_bars + w->f_bars;
    double runs_s = 0, bars_s = 0, req_s = 0;
    int64_t window = w->interval_ms * 3 > 15000 ? w->interval_ms * 3 : 15000;
    bool known = rates_get(&w->rates, window, &runs_s, &bars_s, &req_s);
    char a[32], b[32], c[32], d[32], e[32], g[32], eta[48], clk[16];
    if (left == 0)
        snprintf(eta, sizeof eta, planned ? "done" : "idle");
    else if (known && runs_s > 0)
        snprintf(eta, sizeof eta, "ETA %s", fmt_dur(a, sizeof a, (double)left / runs_s));
    else
        snprintf(eta, sizeof eta, "ETA -");
    time_t now = (time_t)w->now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(clk, sizeof clk, "%H:%M:%S", &tm);

    dynbuf_t f;
    dynbuf_init(&f, 1 << 20);
    int rc = 0;
    if (!v->tty) {
        /* One plain line per interval, every number a whole word. */
        rc |= dynbuf_printf(&f,
                            "%sZ %d%% %lld/%lld runs (running %lld, queued %lld, failed %lld)"
                            " %lld bars, %s bars/s, %s requests/s, %s%s%s",
                            clk, percent(done, planned), (long long)done, (long long)planned,
                            (long long)w->running, (long long)(w->queued - w->disabled),
                            (long long)failed, (long long)bars,
                            known ? fmt_rate(a, sizeof a, bars_s, false) : "-",
                            known ? fmt_rate(b, sizeof b, req_s, false) : "-", eta,
                            w->err[0] ? "; database: " : "", w->err);
        if (rc == 0)
            view_show(v, NULL, f.data);
        goto out;
    }
    int cols, rows;
    view_size(&cols, &rows);
    rc |= dynbuf_printf(&f, "backfilld status --watch   %s UTC   every %.3gs%s   Ctrl-C quits", clk,
                        (double)w->pace_ms / 1000.0,
                        w->pace_ms > w->interval_ms ? " (slower: polls take long)" : "");
    if (left == 0 && planned > 0)
        rc |= dynbuf_printf(&f, "   DONE: nothing queued or running");
    rc |= dynbuf_append(&f, "\n", 1);
    char tail[256];
    snprintf(tail, sizeof tail, "%3d%%  %s of %s runs  %s", percent(done, planned),
             fmt_count(a, sizeof a, done), fmt_count(b, sizeof b, planned), eta);
    int cells = cols - 1 - 9 - 2 - 2 - (int)strlen(tail);
    rc |= dynbuf_append(&f, "overall  ", 9);
    rc |= bar_append(&f, planned ? (double)done / (double)planned : 0, clamp_int(cells, 10, 60));
    rc |= dynbuf_printf(&f, "  %s\n", tail);
    char est[64] = "";
    if (ok >= 5 && left > 0)
        snprintf(est, sizeof est, " (~%s in all)",
                 fmt_count(c, sizeof c,
                           (int64_t)((double)bars / (double)ok * (double)(planned - failed))));
    rc |= dynbuf_printf(&f, "bars     %s written%s   %s bars/s   ~%s requests/s   %s runs/s\n",
                        fmt_count(a, sizeof a, bars + w->running_bars), est,
                        known ? fmt_rate(b, sizeof b, bars_s, true) : "-",
                        known ? fmt_rate(d, sizeof d, req_s, true) : "-",
                        known ? fmt_rate(e, sizeof e, runs_s, true) : "-");
    rc |= dynbuf_printf(&f, "queue    running %s", fmt_count(a, sizeof a, w->running));
    if (w->running)
        rc |= dynbuf_printf(&f, " on %lld host%s", (long long)w->hosts, w->hosts == 1 ? "" : "s");
    rc |= dynbuf_printf(&f, "   queued %s", fmt_count(b, sizeof b, w->queued - w->disabled));
    if (w->waiting)
        rc |= dynbuf_printf(&f, " (%s waiting to retry)", fmt_count(c, sizeof c, w->waiting));
    rc |= dynbuf_printf(&f, "   succeeded %s   failed %s", fmt_count(e, sizeof e, ok),
                        fmt_count(g, sizeof g, failed));
    if (w->disabled)
        rc |= dynbuf_printf(&f, "   %s queued for disabled definitions (not counted)",
                            fmt_count(a, sizeof a, w->disabled));
    rc |= dynbuf_append(&f, "\n", 1);
    if (!w->c->rate_limit_name || !*w->c->rate_limit_name)
        rc |= dynbuf_printf(
            &f, "budget   per host (BACKFILLD_RATE_LIMIT_NAME is empty): %g requests/min each\n",
            w->c->rate_limit);
    else if (!w->budget)
        rc |= dynbuf_printf(&f, "budget   '%s': not in rate_limits yet (no daemon has started)\n",
                            w->c->rate_limit_name);
    else
        rc |= dynbuf_printf(&f,
                            "budget   %s requests/min shared as '%s': ~%d%% in use (~%s of %s/s),"
                            " %.0f of %.0f tokens free%s%s\n",
                            fmt_count(a, sizeof a, (int64_t)llround(w->per_minute)),
                            w->c->rate_limit_name,
                            known ? (int)llround(req_s * 6000.0 / w->per_minute) : 0,
                            known ? fmt_rate(b, sizeof b, req_s, true) : "-",
                            fmt_rate(c, sizeof c, w->per_minute / 60.0, true), w->avail, w->cap,
                            w->paused > 0 ? ", paused after a 429 for " : "",
                            w->paused > 0 ? fmt_dur(d, sizeof d, w->paused) : "");
    char run[400];
    if (failed || w->retry.have) {
        rc |= dynbuf_append(&f, "failures", 8);
        if (failed) {
            watch_run_text(run, sizeof run, &w->fail);
            rc |= dynbuf_printf(&f, " %s failed", fmt_count(a, sizeof a, failed));
            if (w->fail.have)
                rc |= dynbuf_printf(&f, ", latest %s ago: %s",
                                    fmt_dur(b, sizeof b, w->now - w->fail.at), run);
        }
        if (w->retry.have) {
            watch_run_text(run, sizeof run, &w->retry);
            rc |= dynbuf_printf(&f, "%s %s waiting to retry, latest: %s", failed ? ";" : "",
                                fmt_count(a, sizeof a, w->waiting), run);
        }
        rc |= dynbuf_append(&f, "\n", 1);
    } else {
        rc |= dynbuf_printf(&f, "failures none\n");
    }
    if (w->err[0])
        rc |= dynbuf_printf(&f, "database %s (trying again every %.3gs)\n", w->err,
                            (double)w->pace_ms / 1000.0);
    if (w->ndef == 0) {
        rc |= dynbuf_printf(&f, "definitions: none with runs left\n");
    } else {
        rc |= dynbuf_printf(&f, "definitions with the most runs left (%d of %s)\n", w->ndef,
                            fmt_count(a, sizeof a, w->ndefs));
        int64_t now_ms = mono_ms();
        /* The header takes 8 lines; one more stays free below the frame. */
        for (int i = 0; i < w->ndef && i < rows - 9; i++) {
            const struct watch_def *df = &w->defs[i];
            int64_t dd = df->ok + df->failed, dp = dd + df->left;
            double rate = watch_def_rate(w, df, now_ms);
            char line[256];
            snprintf(line, sizeof line, "%3d%%  %s/%s runs  %s%s%s%s%s%s", percent(dd, dp),
                     fmt_count(a, sizeof a, dd), fmt_count(b, sizeof b, dp),
                     rate > 0 ? "ETA " : "ETA -",
                     rate > 0 ? fmt_dur(c, sizeof c, (double)df->left / rate) : "",
                     df->running ? "  running " : "",
                     df->running ? fmt_count(d, sizeof d, df->running) : "",
                     df->failed ? "  failed " : "",
                     df->failed ? fmt_count(e, sizeof e, df->failed) : "");
            /* "  SYMBOL     TF   " is 18 columns, the bar's brackets 2, the gap 2. */
            int dcells = cols - 1 - 18 - 2 - 2 - (int)strlen(line);
            rc |= dynbuf_printf(&f, "  %-10.10s %-4.4s ", df->symbol, df->tf);
            rc |= bar_append(&f, dp ? (double)dd / (double)dp : 0, clamp_int(dcells, 10, 40));
            rc |= dynbuf_printf(&f, "  %s\n", line);
        }
    }
    if (rc == 0)
        view_show(v, f.data, NULL);
out:
    dynbuf_free(&f);
}

static int status_watch(const struct config *c, PGconn *conn, int64_t limit, int64_t interval_ms)
{
    struct watch *w = xcalloc(1, sizeof *w);
    w->conn = conn;
    w->c = c;
    w->limit = limit > WATCH_MAX_DEFS ? WATCH_MAX_DEFS : limit;
    w->interval_ms = interval_ms;
    struct view v;
    view_session(conn);
    view_begin(&v);
    do {
        int64_t t = mono_ms();
        watch_tick(w); /* a failed poll is shown, and tried again next time */
        w->pace_ms = view_pace(interval_ms, mono_ms() - t);
        watch_render(&v, w);
    } while (view_wait(&v, w->pace_ms));
    view_end(&v);
    free(w);
    return EXIT_OK;
}

/* --- status -------------------------------------------------------------- */

/* The whole report as one JSON document, computed by the database in one snapshot. */
static const char status_sql[] =
    /* Nothing here reads history: counts are kept (job_run_totals), coverage
     * is kept (job_coverage), and the rest is read on partial indexes of
     * the few runs it concerns (running, recently finished, with an error,
     * waiting to retry) or per definition shown. */
    "WITH t AS MATERIALIZED (SELECT * FROM job_run_totals),"
    " waiting AS MATERIALIZED (SELECT count(*) AS n, count(*) FILTER (WHERE NOT paused) AS unpaused"
    "            FROM job_runs"
    "            WHERE status = 'queued' AND attempt > 0 AND run_after > now()),"
    " recent AS MATERIALIZED (SELECT bars_written, finished_at FROM job_runs WHERE status = "
    "'succeeded'"
    "            AND finished_at > now() - interval '5 minutes'),"
    /* the part of those 5 minutes that saw completions (5 s at least): a backfill that
     * started a minute ago runs at its rate, not at a fifth of it */
    " span AS (SELECT greatest(5, least(300, coalesce(extract(epoch FROM now() - min(finished_at)),"
    "            300)))::float8 AS s FROM recent),"
    " errs AS (SELECT e->>'error' AS error, count(*) AS n, max((e->>'at')::timestamptz) AS last_at"
    "          FROM job_runs, jsonb_array_elements(errors) e"
    "          WHERE last_error IS NOT NULL AND updated_at > now() - interval '24 hours'"
    "            AND (e->>'at')::timestamptz > now() - interval '24 hours'"
    "          GROUP BY 1 ORDER BY 2 DESC, 3 DESC LIMIT 10),"
    /* what is left of each definition's range: its target minus what succeeded */
    /* coverage as kept, plus the completions the scheduler has not folded in yet */
    UNFOLDED_CTE " cov0 AS (SELECT c.job_def_id, c.covered + coalesce(n.covered, '{}') AS covered"
    "            FROM job_coverage c LEFT JOIN newly n ON n.job_def_id = c.job_def_id),"
    " cov AS (SELECT d.id, d.symbol, d.timeframe, d.feed, d.adjustment, d.job_type, d.enabled,"
    "            d.priority, c.covered,"
    "            d.job_type = 'fetch_historical' AND (d.backfill_to IS NULL OR d.backfill_to > "
    "now())"
    "              AS open_end,"
    "            CASE WHEN d.job_type = 'fetch_historical' AND d.backfill_from IS NOT NULL"
    "                  AND d.backfill_from < coalesce(d.backfill_to, now())"
    "                 THEN tstzmultirange(tstzrange(d.backfill_from, coalesce(d.backfill_to, "
    "now())))"
    "                      - c.covered END AS missing"
    "          FROM job_definitions d JOIN cov0 c ON c.job_def_id = d.id),"
    " top AS (SELECT cov.*, coalesce((SELECT sum(extract(epoch FROM upper(m) - lower(m)))"
    "                                  FROM unnest(cov.missing) m), 0) AS missing_s"
    "          FROM cov ORDER BY missing_s DESC, symbol, timeframe LIMIT $1::int),"
    /* the series' last bar, and its bars not final yet (a partial index) */
    " defs AS (SELECT top.*, x.runs_left, x.runs_succeeded, x.runs_failed,"
    "            (SELECT max(b.ts) FROM bars b WHERE (b.symbol, b.timeframe, b.feed, b.adjustment)"
    "               = (top.symbol, top.timeframe, top.feed, top.adjustment)) AS last_bar,"
    "            (SELECT count(*) FROM bars b WHERE (b.symbol, b.timeframe, b.feed, b.adjustment)"
    "               = (top.symbol, top.timeframe, top.feed, top.adjustment) AND NOT b.final)"
    "              AS bars_not_final,"
    "            (SELECT upper(u) FROM unnest(top.covered) u ORDER BY lower(u) LIMIT 1)"
    "              AS covered_until"
    "          FROM top, LATERAL (SELECT"
    "              count(*) FILTER (WHERE r.status IN ('queued','running')) AS runs_left,"
    "              count(*) FILTER (WHERE r.status = 'succeeded') AS runs_succeeded,"
    "              count(*) FILTER (WHERE r.status = 'failed') AS runs_failed"
    "            FROM job_runs r WHERE r.job_def_id = top.id) x)"
    " SELECT json_build_object("
    "  'at', now(),"
    "  'runs', json_build_object("
    "     'queued', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'queued'),"
    "     'queued_ready', greatest(0, (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'queued'"
    "                       AND NOT paused) - (SELECT unpaused FROM waiting)),"
    "     'queued_waiting_retry', (SELECT n FROM waiting),"
    "     'queued_disabled', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'queued' AND "
    "paused),"
    "     'running', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'running'),"
    "     'succeeded', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'succeeded'),"
    "     'failed', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'failed'),"
    "     'cancelled', (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'cancelled')),"
    "  'last_5_min', json_build_object("
    "     'runs_succeeded', (SELECT count(*) FROM recent),"
    "     'bars', (SELECT coalesce(sum(bars_written), 0) FROM recent),"
    "     'runs_per_min', round(((SELECT count(*) FROM recent) * 60.0 / (SELECT s FROM "
    "span))::numeric, 2)),"
    "  'oldest_queued_s', (SELECT coalesce(extract(epoch FROM now() - min(created_at))::bigint, 0)"
    "                      FROM job_runs WHERE status = 'queued' AND NOT paused),"
    "  'eta_s', (SELECT CASE WHEN (SELECT count(*) FROM recent) < 5 THEN NULL ELSE"
    "            ((SELECT coalesce(sum(n), 0) FROM t WHERE status IN ('queued','running') AND NOT "
    "paused)"
    "             * (SELECT s FROM span) / (SELECT count(*) FROM recent))::bigint END),"
    "  'bars_total', (SELECT coalesce(sum(bars), 0) FROM t WHERE status = 'succeeded'),"
    "  'workers', (SELECT coalesce(json_agg(json_build_object('worker', locked_by, 'running', n)), "
    "'[]')"
    "              FROM (SELECT locked_by, count(*) AS n FROM job_runs WHERE status = 'running'"
    "                    GROUP BY 1 ORDER BY 1) w),"
    "  'recent_errors', (SELECT coalesce(json_agg(json_build_object('error', error, 'count', n,"
    "                     'last_at', last_at)), '[]') FROM errs),"
    "  'definitions', (SELECT coalesce(json_agg(json_build_object('id', id, 'symbol', symbol,"
    "                   'timeframe', timeframe, 'feed', feed, 'adjustment', adjustment,"
    "                   'job_type', job_type, 'enabled', enabled, 'open_end', open_end,"
    "                   'priority', priority, 'runs_left', runs_left,"
    "                   'runs_succeeded', runs_succeeded, 'runs_failed', runs_failed,"
    "                   'covered_from', lower(covered), 'covered_to', upper(covered),"
    "                   'covered_until', covered_until,"
    "                   'uncovered_s', missing_s::bigint,"
    "                   'unsettled_tail_s', CASE WHEN open_end AND covered_until IS NOT NULL"
    "                       THEN greatest(0, extract(epoch FROM now() - covered_until))::bigint "
    "END,"
    "                   'bars_not_final', bars_not_final,"
    "                   'last_bar', last_bar) ORDER BY missing_s DESC, symbol, timeframe), '[]') "
    "FROM defs),"
    "  'definitions_total', (SELECT count(*) FROM job_definitions))";

static const char status_help[] =
    "usage: backfilld [--config FILE] status [--json] [--limit N]\n"
    "       backfilld [--config FILE] status --watch [--interval S] [--limit N]\n\n"
    "Shows runs by status, throughput over the last 5 minutes, the most common\n"
    "errors of the last 24 hours, and per-definition coverage (the N definitions\n"
    "with the most time left to cover, default 20): the series (symbol, timeframe,\n"
    "feed, adjustment), where its settled coverage starts and runs unbroken until,\n"
    "for an open end the tail not covered yet (TAIL: bars not settled, or settled\n"
    "but not fetched yet), the bars stored not final (UNFIN, fetched again until\n"
    "they are) and the last bar stored. --json prints the same as one\n"
    "document. Counts and coverage are kept by the database as runs change, so it\n"
    "answers at once however many runs there are.\n\n"
    "--watch shows the backlog live, redrawn in place every S seconds (default 2):\n"
    "a progress bar of the runs done of those planned, bars/s and requests/s, the\n"
    "shared rate-limit budget, failures and their latest cause, and the N\n"
    "definitions (default 10, fewer if the terminal is short) with the most runs\n"
    "left, each with its bar and ETA. The backlog is every run finished since the\n"
    "oldest run still queued or running was created, and those still to go. When\n"
    "stdout is not a terminal it prints one line per interval. Ctrl-C ends it\n"
    "(exit 0). Each poll reads the runs queued or running and those finished\n"
    "since the last poll, not the history, so it stays cheap on a large job_runs.\n";

static void print_row(PGresult *r, int row)
{
    int n = PQnfields(r);
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? "  " : "  ", PQgetvalue(r, row, i));
    printf("\n");
}

int cli_status(const struct config *c, int argc, char **argv)
{
    bool json = false, watch = false;
    int64_t limit = -1, interval_ms = 2000;
    const char *interval = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--watch") == 0) {
            watch = true;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            interval = argv[++i];
            if (!parse_interval(interval, &interval_ms)) {
                fprintf(stderr, "backfilld status: --interval must be from 0.1 to 3600 seconds\n");
                return EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (!parse_i64(argv[++i], 1, 100000, &limit)) {
                fprintf(stderr, "backfilld status: --limit must be from 1 to 100000\n");
                return EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(status_help, stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "backfilld status: unexpected argument '%s'\n%s", argv[i], status_help);
            return EXIT_USAGE;
        }
    }
    if (watch && json) {
        fprintf(stderr, "backfilld status: --watch and --json do not go together\n");
        return EXIT_USAGE;
    }
    if (interval && !watch) {
        fprintf(stderr, "backfilld status: --interval goes with --watch\n");
        return EXIT_USAGE;
    }
    if (limit < 0)
        limit = watch ? 10 : 20;
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret = check_schema(conn);
    if (ret != EXIT_OK) {
        PQfinish(conn);
        return ret;
    }
    if (watch) {
        ret = status_watch(c, conn, limit, interval_ms);
        PQfinish(conn);
        return ret;
    }
    char lim[24];
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    const char *p[] = {lim};
    if (json) {
        PGresult *r = q(conn, status_sql, 1, p);
        if (!r) {
            PQfinish(conn);
            return EXIT_SOFTWARE;
        }
        /* The ledger's totals (issue 14) go in as one more key. */
        const char *doc = PQgetvalue(r, 0, 0);
        size_t dl = strlen(doc);
        dynbuf_t lb;
        dynbuf_init(&lb, (size_t)1 << 20);
        char lerr[512];
        if (verify_status_totals(conn, true, &lb, lerr, sizeof lerr) < 0) {
            fprintf(stderr, "backfilld status: the ledger's totals: %s\n", lerr);
            lb.len = 0;
        }
        if (dl > 0 && doc[dl - 1] == '}')
            printf("%.*s, \"ledger\" : %s}\n", (int)(dl - 1), doc, lb.len ? lb.data : "null");
        else
            printf("%s\n", doc);
        dynbuf_free(&lb);
        PQclear(r);
        PQfinish(conn);
        return EXIT_OK;
    }
    /* Text: the same numbers, read back out of the JSON by the database. */
    ret = EXIT_OK;
    PGresult *js = q(conn, status_sql, 1, p);
    if (!js) {
        PQfinish(conn);
        return EXIT_SOFTWARE;
    }
    const char *p2[] = {lim, PQgetvalue(js, 0, 0)};
    PGresult *h = q(conn,
                    "WITH s AS (SELECT $2::json AS j)"
                    " SELECT j->'runs'->>'queued', j->'runs'->>'queued_ready',"
                    " j->'runs'->>'queued_waiting_retry', j->'runs'->>'queued_disabled',"
                    " j->'runs'->>'running', j->'runs'->>'succeeded', j->'runs'->>'failed',"
                    " j->'runs'->>'cancelled', j->'last_5_min'->>'runs_succeeded',"
                    " j->'last_5_min'->>'bars', j->'last_5_min'->>'runs_per_min',"
                    " j->>'oldest_queued_s', coalesce(j->>'eta_s', '-'), j->>'bars_total',"
                    " j->>'definitions_total', j->>'at', $1::text FROM s",
                    2, p2);
    if (!h) {
        PQclear(js);
        PQfinish(conn);
        return EXIT_SOFTWARE;
    }
#define V(i) PQgetvalue(h, 0, (i))
    printf("backfilld status at %s\n\n", V(15));
    printf("runs       queued %s (ready %s, waiting to retry %s, definition disabled %s)\n", V(0),
           V(1), V(2), V(3));
    printf("           running %s, succeeded %s, failed %s, cancelled %s\n", V(4), V(5), V(6),
           V(7));
    printf("last 5 min %s runs succeeded, %s bars (%s runs/min)\n", V(8), V(9), V(10));
    printf("queue      oldest queued run waiting %s s; ETA %s s; %s bars written in all\n\n", V(11),
           V(12), V(13));
#undef V
    PQclear(h);
    h = q(conn,
          "SELECT e->>'count', e->>'error' FROM json_array_elements($1::json->'recent_errors') e",
          1, (const char *const[]){PQgetvalue(js, 0, 0)});
    if (h) {
        printf("most common errors, last 24 h:%s\n", PQntuples(h) ? "" : " none");
        for (int i = 0; i < PQntuples(h); i++)
            printf("  %6s x %s\n", PQgetvalue(h, i, 0), PQgetvalue(h, i, 1));
        PQclear(h);
    }
    h = q(conn,
          "SELECT rpad(d->>'symbol', 10) || rpad(d->>'timeframe', 5) || rpad(d->>'feed', 6) ||"
          " rpad(d->>'adjustment', 5) ||"
          " rpad(CASE WHEN (d->>'enabled')::boolean THEN 'on' ELSE 'OFF' END, 4) ||"
          " lpad(d->>'runs_left', 6) || lpad(d->>'runs_succeeded', 6) || lpad(d->>'runs_failed', "
          "6) || '  ' ||"
          " rpad(coalesce(to_char((d->>'covered_from')::timestamptz AT TIME ZONE 'UTC',"
          " 'YYYY-MM-DD'), '-') || ' .. ' || coalesce(to_char((d->>'covered_until')::timestamptz"
          " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), '-'), 31) ||"
          /* the open end's tail not covered yet: still settling, or not fetched yet */
          " lpad(CASE WHEN d->>'unsettled_tail_s' IS NULL THEN '-'"
          "      WHEN (d->>'unsettled_tail_s')::bigint < 5400"
          "        THEN ((d->>'unsettled_tail_s')::bigint / 60) || 'm'"
          "      WHEN (d->>'unsettled_tail_s')::bigint < 172800"
          "        THEN ((d->>'unsettled_tail_s')::bigint / 3600) || 'h'"
          "      ELSE ((d->>'unsettled_tail_s')::bigint / 86400) || 'd' END, 6) ||"
          " lpad(d->>'bars_not_final', 6) || '  ' ||"
          " coalesce(to_char((d->>'last_bar')::timestamptz AT TIME ZONE 'UTC',"
          " 'YYYY-MM-DD\"T\"HH24:MI\"Z\"'), '-')"
          " FROM json_array_elements($1::json->'definitions') d",
          1, (const char *const[]){PQgetvalue(js, 0, 0)});
    if (h) {
        printf("\ndefinitions (%lld with the most time left to cover)\n", (long long)limit);
        printf("  SYMBOL    TF   FEED  ADJ  ON    LEFT    OK  FAIL  COVERED FROM .. UNTIL (UTC)    "
               "  TAIL  UNFIN  LAST BAR\n");
        for (int i = 0; i < PQntuples(h); i++)
            print_row(h, i);
        PQclear(h);
    }
    dynbuf_t lb;
    dynbuf_init(&lb, (size_t)1 << 20);
    char lerr[512];
    if (verify_status_totals(conn, false, &lb, lerr, sizeof lerr) < 0)
        printf("\nledger unavailable: %s\n", lerr);
    else if (lb.len > 0)
        printf("\n%s", lb.data);
    dynbuf_free(&lb);
    PQclear(js);
    PQfinish(conn);
    return ret;
}
