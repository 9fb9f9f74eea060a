/*
 * jobs: see jobs.h.
 */
#include "jobs.h"

#include "bars.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int col(PGresult *r, const char *name, char *err, size_t errlen)
{
    int c = PQfnumber(r, name);
    if (c < 0)
        snprintf(err, errlen, "claim result has no column %s", name);
    return c;
}

int jobs_parse_run(PGresult *r, int row, struct job_run *out, char *err, size_t errlen)
{
    static const char *names[] = {"id",   "attempt",    "max_attempts", "symbol",   "timeframe",
                                  "feed", "adjustment", "range_start",  "range_end"};
    int c[ARRAY_SIZE(names)];
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if ((c[i] = col(r, names[i], err, errlen)) < 0)
            return -1;
    memset(out, 0, sizeof *out);
    int64_t v;
    if (!parse_i64(PQgetvalue(r, row, c[0]), 1, INT64_MAX, &out->id)) {
        snprintf(err, errlen, "bad run id");
        return -1;
    }
    if (!parse_i64(PQgetvalue(r, row, c[1]), 0, 1000000, &v)) {
        snprintf(err, errlen, "attempt %s out of range", PQgetvalue(r, row, c[1]));
        return -1;
    }
    out->attempt = (int)v;
    if (!parse_i64(PQgetvalue(r, row, c[2]), 1, 1000000, &v)) {
        snprintf(err, errlen, "max_attempts %s out of range", PQgetvalue(r, row, c[2]));
        return -1;
    }
    out->max_attempts = (int)v;
    struct {
        const char *name;
        char *dst;
        size_t cap;
    } text[] = {{"symbol", out->symbol, sizeof out->symbol},
                {"timeframe", out->timeframe, sizeof out->timeframe},
                {"feed", out->feed, sizeof out->feed},
                {"adjustment", out->adjustment, sizeof out->adjustment}};
    for (size_t i = 0; i < ARRAY_SIZE(text); i++) {
        const char *val = PQgetvalue(r, row, c[3 + i]);
        size_t len = strlen(val);
        if (len >= text[i].cap) {
            snprintf(err, errlen, "%s is %zu characters long, at most %zu are supported",
                     text[i].name, len, text[i].cap - 1);
            return -1;
        }
        memcpy(text[i].dst, val, len + 1);
    }
    const char *range_names[] = {"range_start", "range_end"};
    int64_t *range[] = {&out->start_us, &out->end_us};
    for (size_t i = 0; i < 2; i++) {
        const char *val = PQgetvalue(r, row, c[7 + i]);
        if (bars_parse_time(val, range[i]) < 0 || *range[i] < 0) {
            snprintf(err, errlen, "%s %.40s is not a time from 1970 on", range_names[i], val);
            return -1;
        }
    }
    return 0;
}

/* Formats "{1,2,3}" from n int64 or int values. Caller frees. */
static char *array64(const int64_t *v, size_t n)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)1 << 26);
    int rc = dynbuf_append(&b, "{", 1);
    for (size_t i = 0; i < n; i++)
        rc |= dynbuf_printf(&b, i ? ",%lld" : "%lld", (long long)v[i]);
    rc |= dynbuf_append(&b, "}", 1);
    (void)rc;
    return dynbuf_take(&b, NULL);
}

static char *array32(const int *v, size_t n)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)1 << 26);
    int rc = dynbuf_append(&b, "{", 1);
    for (size_t i = 0; i < n; i++)
        rc |= dynbuf_printf(&b, i ? ",%d" : "%d", v[i]);
    rc |= dynbuf_append(&b, "}", 1);
    (void)rc;
    return dynbuf_take(&b, NULL);
}

/*
 * A call in flight: the caller's typed callback, and the argument for it.
 * The db request's own callback (decode_*) reads the rows into types and
 * frees this.
 */
struct call {
    union {
        jobs_claim_cb claim;
        jobs_renew_cb renew;
        jobs_fail_cb fail;
        jobs_count_cb count;
        jobs_stats_cb stats;
    } cb;
    void *arg;
};

static db_req_t *call_req(db_done_cb decode, struct call c)
{
    struct call *k = xmalloc(sizeof *k);
    *k = c;
    return db_req_new(decode, k, false);
}

static struct jobs_status status_of(int status, const char *err, const char *sqlstate)
{
    return (struct jobs_status){
        .status = status, .err = err ? err : "", .sqlstate = sqlstate ? sqlstate : ""};
}

/* The first column of the first row as a count; 0 when absent or NULL. */
static int64_t first_i64(PGresult *const *res, int nres, int col_no)
{
    int64_t v = 0;
    if (nres > 0 && PQntuples(res[0]) > 0 && PQnfields(res[0]) > col_no &&
        !PQgetisnull(res[0], 0, col_no))
        (void)parse_i64(PQgetvalue(res[0], 0, col_no), INT64_MIN, INT64_MAX, &v);
    return v;
}

static void decode_claim(void *arg, int status, const char *err, const char *sqlstate,
                         PGresult *const *res, int nres)
{
    struct call *k = arg;
    struct jobs_status st = status_of(status, err, sqlstate);
    struct jobs_claimed c = {0};
    struct job_run *runs = NULL;
    struct jobs_unusable *bad = NULL;
    if (status == DB_OK && nres > 0) {
        int n = PQntuples(res[0]);
        runs = xcalloc((size_t)n + 1, sizeof *runs);
        bad = xcalloc((size_t)n + 1, sizeof *bad);
        int sym = PQfnumber(res[0], "symbol");
        for (int i = 0; i < n; i++) {
            struct jobs_unusable *b = &bad[c.nbad];
            if (jobs_parse_run(res[0], i, &runs[c.n], b->error, sizeof b->error) == 0) {
                c.n++;
                continue;
            }
            b->id = runs[c.n].id;
            b->attempt = runs[c.n].attempt;
            strlcpy_trunc(b->symbol, sizeof b->symbol, sym >= 0 ? PQgetvalue(res[0], i, sym) : "");
            c.nbad++;
        }
    }
    c.runs = runs;
    c.bad = bad;
    if (k->cb.claim)
        k->cb.claim(k->arg, &st, &c);
    free(runs);
    free(bad);
    free(k);
}

void jobs_claim(db_conn_t *db, const char *worker, int n, int lease_s, jobs_claim_cb cb, void *arg)
{
    char ns[16], ls[16];
    snprintf(ns, sizeof ns, "%d", n);
    snprintf(ls, sizeof ls, "%d", lease_s);
    const char *p[] = {worker, ns, ls};
    db_req_t *r = call_req(decode_claim, (struct call){.cb.claim = cb, .arg = arg});
    /* Timestamps as UTC RFC 3339 whatever the server's TimeZone. */
    db_req_sql(
        r,
        "SELECT id, attempt, max_attempts, symbol, timeframe, feed, adjustment, "
        "to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS "
        "range_start, "
        "to_char(range_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS range_end "
        "FROM claim_queued_job($1, $2::int, $3::float8)",
        3, p);
    db_req_keep(r);
    db_submit(db, r);
}

static void decode_renew(void *arg, int status, const char *err, const char *sqlstate,
                         PGresult *const *res, int nres)
{
    struct call *k = arg;
    struct jobs_status st = status_of(status, err, sqlstate);
    int64_t *held = NULL;
    size_t n = 0;
    if (status == DB_OK && nres > 0) {
        int rows = PQntuples(res[0]);
        held = xcalloc((size_t)rows + 1, sizeof *held);
        for (int i = 0; i < rows; i++)
            if (parse_i64(PQgetvalue(res[0], i, 0), 1, INT64_MAX, &held[n]))
                n++;
    }
    if (k->cb.renew)
        k->cb.renew(k->arg, &st, held, n);
    free(held);
    free(k);
}

void jobs_renew(db_conn_t *db, const char *worker, const struct jobs_lease *leases, size_t n,
                int lease_s, jobs_renew_cb cb, void *arg)
{
    int64_t *ids = xcalloc(n + 1, sizeof *ids), *bars = xcalloc(n + 1, sizeof *bars);
    int *attempts = xcalloc(n + 1, sizeof *attempts);
    for (size_t i = 0; i < n; i++) {
        ids[i] = leases[i].id;
        attempts[i] = leases[i].attempt;
        bars[i] = leases[i].bars;
    }
    char *a = array64(ids, n), *b = array32(attempts, n), *c = array64(bars, n);
    free(ids);
    free(attempts);
    free(bars);
    char ls[16];
    snprintf(ls, sizeof ls, "%d", lease_s);
    const char *p[] = {worker, a, b, c, ls};
    db_req_t *r = call_req(decode_renew, (struct call){.cb.renew = cb, .arg = arg});
    db_req_sql(
        r, "SELECT * FROM renew_job_leases($1, $2::bigint[], $3::int[], $4::bigint[], $5::float8)",
        5, p);
    db_req_keep(r);
    db_submit(db, r);
    free(a);
    free(b);
    free(c);
}

static void decode_fail(void *arg, int status, const char *err, const char *sqlstate,
                        PGresult *const *res, int nres)
{
    struct call *k = arg;
    struct jobs_status st = status_of(status, err, sqlstate);
    const char *run_status =
        status == DB_OK && nres > 0 && PQntuples(res[0]) > 0 && !PQgetisnull(res[0], 0, 0)
            ? PQgetvalue(res[0], 0, 0)
            : NULL;
    if (k->cb.fail)
        k->cb.fail(k->arg, &st, run_status);
    free(k);
}

void jobs_fail(db_conn_t *db, const char *worker, const struct jobs_failure *f, jobs_fail_cb cb,
               void *arg)
{
    char is[24], as[16], bs[24], cs[24];
    snprintf(is, sizeof is, "%lld", (long long)f->id);
    snprintf(as, sizeof as, "%d", f->attempt);
    snprintf(bs, sizeof bs, "%lld", (long long)f->base_ms);
    snprintf(cs, sizeof cs, "%lld", (long long)f->cap_ms);
    const char *p[] = {worker, is, as, f->error, f->retryable ? "true" : "false", bs, cs};
    db_req_t *r = call_req(decode_fail, (struct call){.cb.fail = cb, .arg = arg});
    db_req_sql(
        r, "SELECT fail_job_run($1, $2::bigint, $3::int, $4, $5::boolean, $6::bigint, $7::bigint)",
        7, p);
    db_req_keep(r);
    db_submit(db, r);
}

/* A count in the first column, and (for the release of unknown runs) ids in the second. */
static void decode_count(void *arg, int status, const char *err, const char *sqlstate,
                         PGresult *const *res, int nres)
{
    struct call *k = arg;
    struct jobs_status st = status_of(status, err, sqlstate);
    int64_t n = status == DB_OK ? first_i64(res, nres, 0) : 0;
    const char *ids = status == DB_OK && nres > 0 && PQntuples(res[0]) > 0 && PQnfields(res[0]) > 1
                          ? PQgetvalue(res[0], 0, 1)
                          : "";
    if (k->cb.count)
        k->cb.count(k->arg, &st, n, ids);
    free(k);
}

void jobs_release(db_conn_t *db, const char *worker, const int64_t *ids, const int *attempts,
                  size_t n, jobs_count_cb cb, void *arg)
{
    char *a = array64(ids, n), *b = array32(attempts, n);
    const char *p[] = {worker, a, b};
    db_req_t *r = call_req(decode_count, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r, "SELECT release_job_runs($1, $2::bigint[], $3::int[])", 3, p);
    db_req_keep(r);
    db_submit(db, r);
    free(a);
    free(b);
}

void jobs_release_unknown(db_conn_t *db, const char *worker, const int64_t *known_ids, size_t n,
                          jobs_count_cb cb, void *arg)
{
    char *a = array64(known_ids, n);
    const char *p[] = {worker, a};
    db_req_t *r = call_req(decode_count, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r,
               "SELECT coalesce(release_job_runs($1, array_agg(id), array_agg(attempt)), 0),"
               " coalesce(array_to_string((array_agg(id ORDER BY id))[1:100], ','), '')"
               " FROM job_runs WHERE locked_by = $1 AND status = 'running'"
               " AND NOT (id = ANY($2::bigint[]))",
               2, p);
    db_req_keep(r);
    /* Ahead of any claim queued behind the lost request: that claim's runs
     * are not in known_ids yet, and must not be taken for lost ones. */
    db_submit_first(db, r);
    free(a);
}

void jobs_rescue(db_conn_t *db, int64_t base_ms, int64_t cap_ms, jobs_count_cb cb, void *arg)
{
    char bs[24], cs[24];
    snprintf(bs, sizeof bs, "%lld", (long long)base_ms);
    snprintf(cs, sizeof cs, "%lld", (long long)cap_ms);
    const char *p[] = {bs, cs};
    db_req_t *r = call_req(decode_count, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r, "SELECT rescue_expired_job_runs($1::bigint, $2::bigint)", 2, p);
    db_req_keep(r);
    db_submit(db, r);
}

void jobs_schedule(db_conn_t *db, int max_attempts, int64_t settle_s, int64_t sip_delay_s,
                   jobs_count_cb cb, void *arg)
{
    char ms[16], st[32], sd[32];
    snprintf(ms, sizeof ms, "%d", max_attempts);
    snprintf(st, sizeof st, "%lld seconds", (long long)settle_s);
    snprintf(sd, sizeof sd, "%lld seconds", (long long)sip_delay_s);
    const char *p[] = {ms, st, sd};
    db_req_t *r = call_req(decode_count, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r, "SELECT schedule_due_jobs($1::int, $2::interval, $3::interval)", 3, p);
    db_req_keep(r);
    db_submit(db, r);
}

void jobs_prune(db_conn_t *db, int64_t keep_days, int limit, jobs_count_cb cb, void *arg)
{
    char days[24], lim[16];
    snprintf(days, sizeof days, "%lld", (long long)keep_days);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {days, lim};
    db_req_t *r = call_req(decode_count, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r, "SELECT prune_job_runs(make_interval(days => $1::int), $2::int)", 2, p);
    db_req_keep(r);
    db_submit(db, r);
}

static void decode_stats(void *arg, int status, const char *err, const char *sqlstate,
                         PGresult *const *res, int nres)
{
    struct call *k = arg;
    struct jobs_status st = status_of(status, err, sqlstate);
    struct jobs_queue_stats s = {0};
    if (status == DB_OK) {
        int64_t *v[] = {
            &s.ready,           &s.later,           &s.running,           &s.succeeded_last_min,
            &s.failed_last_min, &s.oldest_queued_s, &s.completions_span_s};
        for (int i = 0; i < (int)ARRAY_SIZE(v); i++)
            *v[i] = first_i64(res, nres, i);
    }
    if (k->cb.stats)
        k->cb.stats(k->arg, &st, &s);
    free(k);
}

void jobs_queue_stats(db_conn_t *db, jobs_stats_cb cb, void *arg)
{
    db_req_t *r = call_req(decode_stats, (struct call){.cb.stats = cb, .arg = arg});
    /* Nothing here grows with history or with the backlog: queued and
     * running runs are kept counts (job_run_totals), the runs waiting out a
     * retry backoff and the last minute's completions are few, each read on
     * its partial index. Runs of disabled definitions are paused. */
    db_req_sql(
        r,
        "WITH w AS MATERIALIZED (SELECT count(*) AS n FROM job_runs"
        "   WHERE status = 'queued' AND attempt > 0 AND NOT paused AND run_after > now()),"
        " t AS MATERIALIZED (SELECT * FROM job_run_totals)"
        " SELECT"
        " greatest(0, (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'queued' AND NOT paused)"
        "   - (SELECT n FROM w)),"
        " (SELECT n FROM w),"
        " (SELECT coalesce(sum(n), 0) FROM t WHERE status = 'running'),"
        " (SELECT count(*) FROM job_runs WHERE status = 'succeeded'"
        "   AND finished_at > now() - interval '1 minute'),"
        " (SELECT count(*) FROM job_runs WHERE status = 'failed'"
        "   AND finished_at > now() - interval '1 minute'),"
        " (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint"
        "   FROM job_runs WHERE status = 'queued' AND NOT paused),"
        /* how much of that minute saw completions: a fresh start has not a minute of history */
        " (SELECT coalesce(extract(epoch FROM now() - min(finished_at)), 0)::bigint"
        "   FROM job_runs WHERE status = 'succeeded'"
        "   AND finished_at > now() - interval '1 minute')",
        0, NULL);
    db_req_keep(r);
    db_submit(db, r);
}

/* No schema_migrations table at all (42P01) is version 0, not an error. */
static void decode_version(void *arg, int status, const char *err, const char *sqlstate,
                           PGresult *const *res, int nres)
{
    struct call *k = arg;
    bool none = status == DB_ESQL && sqlstate && strcmp(sqlstate, "42P01") == 0;
    struct jobs_status st = none ? status_of(DB_OK, NULL, NULL) : status_of(status, err, sqlstate);
    int64_t v = status == DB_OK ? first_i64(res, nres, 0) : 0;
    if (k->cb.count)
        k->cb.count(k->arg, &st, v, "");
    free(k);
}

void jobs_schema_version(db_conn_t *db, jobs_count_cb cb, void *arg)
{
    db_req_t *r = call_req(decode_version, (struct call){.cb.count = cb, .arg = arg});
    db_req_sql(r, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL);
    db_req_keep(r);
    db_submit(db, r);
}
