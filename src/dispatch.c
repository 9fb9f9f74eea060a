/*
 * dispatch: see dispatch.h.
 *
 * A run lives in the `runs` list from its claim until all of these are over:
 * its fetch, the writes of its pages, and the database call that records its
 * outcome. Only then is it freed and its slot given back (never from inside
 * one of its own callbacks: runs are reaped by the tick, see reap()).
 */
#include "dispatch.h"

#include "alpaca.h"
#include "backoff.h"
#include "coalesce.h"
#include "db.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "migrations.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100
#define ETA_MIN_RUNS 5 /* completions in the last minute before an ETA is given */
#define AUTH_PAUSE_MS 60000

enum outcome { O_NONE = 0, O_SUCCEEDED, O_FAILED, O_RELEASED, O_ABANDONED };

/* This daemon's counters, served at /metrics and in the progress line. */
struct dispatch_metrics {
    uint64_t runs_claimed, runs_succeeded, runs_failed, runs_retried, runs_released,
        runs_abandoned, pages, bars, requests, page_retries, rate_limited, rescued;
    int64_t queue_ready, queue_later, queue_running, oldest_queued_s; /* all hosts */
};

struct group;

struct run {
    struct run *prev, *next;
    dispatch_t *d;
    struct job_run j;
    struct group *g;       /* the fetch this run's symbol rides in (counted in g->refs) */
    int batch;             /* symbols in that fetch */
    bool final_queued;     /* last page handed to the writer */
    int pending_pages;     /* handed to the writer, not yet committed */
    int db_ops;            /* outcome calls in flight */
    enum outcome outcome;
    bool retryable; /* of the failure being recorded */
    int64_t bars;
    int pages;
    int64_t started_ms;
    uint64_t renew_seq; /* the renewal request this run was last part of */
    char error[700];
};

/*
 * One fetch (one query, followed page by page) serving 1..N runs that share
 * timeframe, feed, adjustment and range. Lives while any run points to it.
 */
struct group {
    struct group *prev, *next;
    dispatch_t *d;
    alpaca_fetch_t *fetch; /* NULL once over or stopped */
    struct run **runs;     /* sorted by symbol */
    size_t n;
    size_t refs;
    bool held;             /* paused for backpressure */
    unsigned pages;
    char last_symbol[64];  /* the last symbol seen, to check the server's order */
};

struct dispatch {
    uv_loop_t *loop;
    struct config *cfg;
    char *worker;
    bool until_idle;
    struct dispatch_hooks hooks;

    db_conn_t *db;     /* claims, leases, outcomes, LISTEN */
    db_conn_t *wdb;    /* the writer's session */
    http_client_t *http;
    ratelimit_t *rl;
    alpaca_t *alpaca;
    store_t *store;
    uv_timer_t tick;
    uv_timer_t kick; /* zero-delay: reap and claim right after a slot frees or a wake-up */

    struct run *runs; /* doubly linked */
    size_t nruns;
    struct group *groups;

    bool ready_sent, schema_checked;
    bool claiming, want_claim, renewing, rescuing, scheduling, statsing, idle_checking;
    bool last_claim_empty; /* the latest claim returned no rows */
    int last_claim_asked;
    int64_t last_claim_ms, last_renew_ms, last_rescue_ms, last_schedule_ms, last_progress_ms;
    int64_t auth_pause_until, last_auth_log_ms;
    uint64_t renew_seq; /* numbers renewal requests */
    bool want_schedule;

    bool stopping, releasing_done;
    int64_t stop_deadline_ms;
    int pending_closes;
    int exit_code;
    bool exited;

    struct dispatch_metrics m;
    metrics_server_t *metrics;
    metrics_histogram_t upsert_hist, http_hist;
    uint64_t http_status[600]; /* responses by status code; [0] = no response */
    uint64_t prev_bars, prev_requests;
    int64_t last_idle_progress_ms;
    int64_t prev_progress_ms;
    uint64_t rng;
};

static void begin_close(dispatch_t *d, int code);
static void kick(dispatch_t *d);
static void wake_claim(dispatch_t *d);

/* --- logging helpers -------------------------------------------------------- */

#define RUN_FIELDS(r)                                                                              \
    F_I64("job_id", (r)->j.id), F_STR("symbol", (r)->j.symbol),                                    \
        F_STR("timeframe", (r)->j.timeframe), F_I64("attempt", (r)->j.attempt)

static void on_http_done(void *arg, long status, double ms)
{
    dispatch_t *d = arg;
    d->http_status[status >= 100 && status < 600 ? status : 0]++;
    metrics_hist_observe(&d->http_hist, ms / 1000.0);
}

/* --- run life cycle ----------------------------------------------------------- */

/* Still waiting for data from its group's fetch. */
static bool run_active(const struct run *r)
{
    return r->outcome == O_NONE && !r->final_queued;
}

static bool run_finished(const struct run *r)
{
    return r->outcome != O_NONE && r->pending_pages == 0 && r->db_ops == 0;
}

static void group_free(struct group *g)
{
    dispatch_t *d = g->d;
    DLIST_REMOVE(d->groups, g);
    free(g->runs);
    free(g);
}

/* A run lets go of its group; the last one out stops the fetch and frees it. */
static void group_unref(struct group *g)
{
    if (!g)
        return;
    if (--g->refs > 0)
        return;
    if (g->fetch) {
        alpaca_fetch_cancel(g->fetch);
        g->fetch = NULL;
    }
    group_free(g);
}

/* Takes a run out of its group (before it is freed); the group may go on for the others. */
static void group_detach(struct run *r)
{
    struct group *g = r->g;
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] == r)
            g->runs[i] = NULL;
    r->g = NULL;
    group_unref(g);
}

/* The first run still in the group (for log lines); a group with refs has one. */
static struct run *group_first(const struct group *g)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i])
            return g->runs[i];
    return NULL;
}

/* Stops the group's fetch once none of its runs wants more data. */
static void group_settle(struct group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && run_active(g->runs[i]))
            return;
    if (g->fetch) {
        alpaca_fetch_cancel(g->fetch);
        g->fetch = NULL;
    }
    g->held = false;
}

/* Frees finished runs and wakes claiming for the slots they free. Never from a run's own callback. */
static void reap(dispatch_t *d)
{
    struct run *r = d->runs;
    while (r) {
        struct run *next = r->next;
        if (run_finished(r)) {
            DLIST_REMOVE(d->runs, r);
            d->nruns--;
            store_forget(d->store, r);
            group_detach(r);
            free(r);
            wake_claim(d);
        }
        r = next;
    }
}

static void on_fail_recorded(void *arg, int status, const char *err, const char *sqlstate,
                             PGresult *const *res, int nres);

/* Records a failed attempt in the database (fenced); the log line comes with the answer. */
static void record_failure(struct run *r, const char *error, bool retryable)
{
    dispatch_t *d = r->d;
    strlcpy_trunc(r->error, sizeof r->error, error);
    r->outcome = O_FAILED;
    r->retryable = retryable;
    r->db_ops++;
    jobs_fail(d->db, d->worker, r->j.id, r->j.attempt, error, retryable, d->cfg->run_retry_base_ms,
              d->cfg->run_retry_max_ms, on_fail_recorded, r);
    group_settle(r->g);
}

static void on_fail_recorded(void *arg, int status, const char *err, const char *sqlstate,
                             PGresult *const *res, int nres)
{
    struct run *r = arg;
    dispatch_t *d = r->d;
    r->db_ops--;
    kick(d);
    if (status == DB_ECONN && !d->stopping) {
        /* Unknown whether it landed; the call is fenced, so repeating it is safe. */
        r->db_ops++;
        jobs_fail(d->db, d->worker, r->j.id, r->j.attempt, r->error, r->retryable,
                  d->cfg->run_retry_base_ms, d->cfg->run_retry_max_ms, on_fail_recorded, r);
        return;
    }
    int64_t ms = mono_ms() - r->started_ms;
    if (status != DB_OK) {
        LOG(LOG_ERROR, "run failure not recorded", RUN_FIELDS(r), F_STR("error", r->error),
            F_STR("db_error", err));
        return;
    }
    const char *st = nres > 0 && PQntuples(res[0]) > 0 && !PQgetisnull(res[0], 0, 0)
                         ? PQgetvalue(res[0], 0, 0)
                         : NULL;
    if (!st) {
        LOG(LOG_WARN, "run failure not recorded: lease lost", RUN_FIELDS(r),
            F_STR("error", r->error));
    } else if (strcmp(st, "queued") == 0) {
        d->m.runs_retried++;
        LOG(LOG_WARN, "run attempt failed, will retry", RUN_FIELDS(r),
            F_I64("max_attempts", r->j.max_attempts), F_I64("bars", r->bars),
            F_I64("pages", r->pages), F_I64("ms", ms), F_STR("error", r->error));
    } else {
        d->m.runs_failed++;
        LOG(LOG_ERROR, "run failed", RUN_FIELDS(r), F_I64("max_attempts", r->j.max_attempts),
            F_I64("bars", r->bars), F_I64("pages", r->pages), F_I64("ms", ms),
            F_STR("error", r->error));
    }
}

static void on_run_released(void *arg, int status, const char *err, const char *sqlstate,
                            PGresult *const *res, int nres)
{
    struct run *r = arg;
    r->db_ops--;
    kick(r->d);
    if (status != DB_OK)
        LOG(LOG_ERROR, "run release failed", RUN_FIELDS(r), F_STR("error", err));
    else
        LOG(LOG_NOTICE, "run released", RUN_FIELDS(r), F_STR("reason", r->error));
}

/* Gives a run back without spending its attempt (not its fault). */
static void release_run(struct run *r, const char *why)
{
    dispatch_t *d = r->d;
    strlcpy_trunc(r->error, sizeof r->error, why);
    r->outcome = O_RELEASED;
    d->m.runs_released++;
    r->db_ops++;
    int64_t id = r->j.id;
    int att = r->j.attempt;
    jobs_release(d->db, d->worker, &id, &att, 1, on_run_released, r);
    group_settle(r->g);
}

/* --- the writer's callbacks ----------------------------------------------------- */

static void on_committed(void *owner, int64_t nbars, bool final, bool completed)
{
    struct run *r = owner;
    dispatch_t *d = r->d;
    r->pending_pages--;
    d->m.bars += (uint64_t)nbars;
    if (!final)
        return;
    kick(d);
    if (completed && r->outcome == O_NONE) {
        r->outcome = O_SUCCEEDED;
        d->m.runs_succeeded++;
        LOG(LOG_INFO, "run succeeded", RUN_FIELDS(r), F_I64("bars", r->bars),
            F_I64("pages", r->pages), F_I64("batch", r->batch),
            F_I64("ms", mono_ms() - r->started_ms));
    } else if (r->outcome == O_NONE) {
        r->outcome = O_ABANDONED;
        d->m.runs_abandoned++;
        LOG(LOG_WARN, "run not completed: lease lost", RUN_FIELDS(r), F_I64("bars", r->bars));
    }
}

static void on_write_failed(void *owner, const char *err)
{
    struct run *r = owner;
    r->pending_pages--;
    kick(r->d);
    if (r->outcome != O_NONE)
        return;
    char msg[700];
    snprintf(msg, sizeof msg, "database write failed: %s", err);
    record_failure(r, msg, true);
}

static void resume_held(dispatch_t *d);

static void on_drained(void *arg, bool ok, size_t rows, double ms)
{
    dispatch_t *d = arg;
    if (ok)
        metrics_hist_observe(&d->upsert_hist, ms / 1000.0);
    resume_held(d);
}

/* --- the fetch's callbacks ----------------------------------------------------- */

static bool backlogged(const dispatch_t *d)
{
    return (int64_t)store_backlog(d->store) >= d->cfg->max_pending_rows;
}

/* "AAPL,MSFT,…" for log lines about a whole group (truncated). */
static void group_symbols(const struct group *g, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < g->n && off + 1 < len; i++) {
        if (!g->runs[i])
            continue;
        int w = snprintf(buf + off, len - off, "%s%s", off ? "," : "", g->runs[i]->j.symbol);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static struct run *group_find(const struct group *g, const char *symbol)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && strcmp(g->runs[i]->j.symbol, symbol) == 0)
            return g->runs[i];
    return NULL;
}

/* Fails every run of the group that still expects data (a protocol fault). */
static void group_fail_active(struct group *g, const char *error, bool retryable)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && run_active(g->runs[i]))
            record_failure(g->runs[i], error, retryable);
}

/*
 * One page of a group's fetch. Bars are split by symbol and handed to the
 * writer for each run. Results come sorted by symbol, so every run whose
 * symbol sorts before the page's last symbol is complete (its bars, if any,
 * are all in); the last symbol may go on in the next page (it is stitched);
 * a null token completes everyone left, with zero bars if none came.
 */
static bool on_page(void *arg, bars_page_t *page, bool last)
{
    struct group *g = arg;
    dispatch_t *d = g->d;
    d->m.pages++;
    g->pages++;
    if (last)
        g->fetch = NULL; /* alpaca frees it after this returns */
    for (size_t i = 0; i < page->nseries; i++) {
        const char *sym = page->series[i].symbol;
        bool ordered = (i == 0 ? strcmp(sym, g->last_symbol) >= 0
                               : strcmp(sym, page->series[i - 1].symbol) > 0);
        struct run *r = group_find(g, sym);
        if (!ordered || (r && r->final_queued)) {
            char msg[200];
            snprintf(msg, sizeof msg, "response not sorted by symbol (%s on page %u)", sym,
                     g->pages);
            bars_page_clear(page);
            group_fail_active(g, msg, true);
            return false;
        }
    }
    const char *boundary = page->nseries ? page->series[page->nseries - 1].symbol : NULL;
    if (boundary)
        strlcpy_trunc(g->last_symbol, sizeof g->last_symbol, boundary);
    size_t k = 0; /* walks page->series alongside the sorted runs */
    for (size_t i = 0; i < g->n; i++) {
        struct run *r = g->runs[i];
        if (!r)
            continue; /* finished and freed; its symbol sorts before the others' */
        while (k < page->nseries && strcmp(page->series[k].symbol, r->j.symbol) < 0)
            k++;
        const bars_series_t *s =
            k < page->nseries && strcmp(page->series[k].symbol, r->j.symbol) == 0 ? &page->series[k]
                                                                                  : NULL;
        if (!run_active(r))
            continue; /* abandoned or released: its bars are dropped */
        bool final_now = last || (boundary && strcmp(r->j.symbol, boundary) < 0);
        if (!s && !final_now)
            continue;
        size_t n = s ? s->n : 0;
        r->pages++;
        r->bars += (int64_t)n;
        if (store_add(d->store, r, r->j.id, r->j.attempt, r->j.symbol, r->j.timeframe,
                      s ? s->bars : NULL, n, final_now, r->bars, r->pages) < 0) {
            record_failure(r, "page could not be buffered for writing", true);
            continue;
        }
        r->pending_pages++;
        if (final_now) {
            r->final_queued = true;
            wake_claim(d); /* its slot is free for the next fetch */
        }
    }
    if (log_min_level <= LOG_DEBUG) {
        char syms[256];
        group_symbols(g, syms, sizeof syms);
        LOG(LOG_DEBUG, "page fetched", F_I64("job_id", group_first(g) ? group_first(g)->j.id : 0),
            F_STR("symbols", syms),
            F_I64("page", g->pages), F_I64("bars", page->total), F_BOOL("last", last));
    }
    bars_page_clear(page);
    group_settle(g);
    if (last || !g->fetch)
        return false;
    if (backlogged(d)) {
        g->held = true;
        return false;
    }
    return true;
}

static void start_group(dispatch_t *d, struct run **runs, size_t n);

static void on_fetch_failed(void *arg, int kind, const char *error, long http_status)
{
    struct group *g = arg;
    dispatch_t *d = g->d;
    g->fetch = NULL;
    g->held = false;
    kick(d);
    /* One malformed symbol fails a whole multi-symbol request with 400: fail
     * that symbol's run alone and fetch the others again without it. */
    const char *p = strstr(error, "invalid symbol: ");
    if (kind == ALPACA_EPERM && http_status == 400 && p && g->n > 1) {
        struct run *bad = group_find(g, p + strlen("invalid symbol: "));
        if (bad && run_active(bad)) {
            record_failure(bad, error, false);
            struct run **rest = xcalloc(g->n, sizeof *rest);
            size_t m = 0;
            for (size_t i = 0; i < g->n; i++) {
                struct run *r = g->runs[i];
                if (!r || !run_active(r))
                    continue;
                r->bars = 0; /* the new fetch starts from the first page */
                r->pages = 0;
                rest[m++] = r;
            }
            LOG(LOG_NOTICE, "batch split around a malformed symbol", RUN_FIELDS(bad),
                F_I64("others", m));
            if (m > 0)
                start_group(d, rest, m); /* moves the runs (and their refs) over */
            free(rest);
            return;
        }
    }
    if (kind == ALPACA_EAUTH) {
        /* Not the runs' fault: give them back and stop claiming for a while. */
        int64_t now = mono_ms();
        d->auth_pause_until = now + AUTH_PAUSE_MS;
        if (now - d->last_auth_log_ms >= AUTH_PAUSE_MS || d->last_auth_log_ms == 0) {
            d->last_auth_log_ms = now;
            LOG(LOG_CRIT, "alpaca credentials rejected; claiming paused", RUN_FIELDS(group_first(g)),
                F_I64("http_status", http_status), F_STR("error", error),
                F_I64("pause_ms", AUTH_PAUSE_MS));
        }
        for (size_t i = 0; i < g->n; i++)
            if (g->runs[i] && run_active(g->runs[i]))
                release_run(g->runs[i], error);
        return;
    }
    group_fail_active(g, error, kind == ALPACA_ERETRY);
}

static void on_retrying(void *arg, const char *cause, long http_status, unsigned retry,
                        int64_t delay_ms)
{
    struct group *g = arg;
    dispatch_t *d = g->d;
    struct run *r = group_first(g);
    char syms[256];
    group_symbols(g, syms, sizeof syms);
    if (http_status == 429) {
        d->m.rate_limited++;
        LOG(LOG_WARN, "rate limited, waiting", RUN_FIELDS(r), F_STR("symbols", syms),
            F_I64("http_status", 429), F_I64("wait_ms", delay_ms));
        return;
    }
    d->m.page_retries++;
    LOG(LOG_WARN, "page retry", RUN_FIELDS(r), F_STR("symbols", syms), F_I64("runs", g->n),
        F_I64("page", g->pages + 1), F_I64("retry", retry), F_I64("delay_ms", delay_ms),
        F_I64("http_status", http_status), F_STR("error", cause));
}

static void on_requested(void *arg)
{
    struct group *g = arg;
    g->d->m.requests++;
}

static const struct alpaca_fetch_cbs fetch_cbs = {
    .page = on_page, .failed = on_fetch_failed, .retrying = on_retrying, .requested = on_requested};

static void resume_held(dispatch_t *d)
{
    for (struct group *g = d->groups; g && !backlogged(d); g = g->next) {
        if (g->held && g->fetch) {
            g->held = false;
            alpaca_fetch_resume(g->fetch);
        }
    }
}

static int cmp_run_symbol(const void *a, const void *b)
{
    const struct run *x = *(struct run *const *)a, *y = *(struct run *const *)b;
    return strcmp(x->j.symbol, y->j.symbol);
}

/* One fetch for n runs sharing timeframe, feed, adjustment and range. Takes the runs over from any previous group. */
static void start_group(dispatch_t *d, struct run **runs, size_t n)
{
    struct group *g = xcalloc(1, sizeof *g);
    g->d = d;
    g->runs = xcalloc(n, sizeof *g->runs);
    memcpy(g->runs, runs, n * sizeof *runs);
    g->n = n;
    qsort(g->runs, n, sizeof *g->runs, cmp_run_symbol);
    DLIST_PUSH(d->groups, g);
    const char **syms = xcalloc(n, sizeof *syms);
    for (size_t i = 0; i < n; i++) {
        struct run *r = g->runs[i];
        group_detach(r);
        r->g = g;
        r->batch = (int)n;
        g->refs++;
        syms[i] = r->j.symbol;
    }
    const struct job_run *j = &g->runs[0]->j;
    struct alpaca_query q = {.symbols = syms,
                             .nsymbols = n,
                             .timeframe = j->timeframe,
                             .feed = j->feed,
                             .adjustment = j->adjustment,
                             .start_us = j->start_us,
                             .end_us = j->end_us};
    g->fetch = alpaca_fetch_start(d->alpaca, &q, &fetch_cbs, g);
    free(syms);
}

static struct run *new_run(dispatch_t *d, const struct job_run *j)
{
    struct run *r = xcalloc(1, sizeof *r);
    r->d = d;
    r->j = *j;
    r->started_ms = mono_ms();
    DLIST_PUSH(d->runs, r);
    d->nruns++;
    d->m.runs_claimed++;
    char from[32], to[32];
    bars_format_time(j->start_us, from, sizeof from);
    bars_format_time(j->end_us, to, sizeof to);
    LOG(LOG_INFO, "run started", RUN_FIELDS(r), F_STR("from", from), F_STR("to", to),
        F_STR("feed", j->feed));
    return r;
}

/* --- coalescing into requests ------------------------------------------------------ */

/* Starts fetches for freshly claimed runs, coalesced into multi-symbol requests. */
static void start_runs(dispatch_t *d, struct run **runs, size_t n)
{
    struct coalesce_key *keys = xcalloc(n + 1, sizeof *keys);
    size_t *order = xcalloc(n + 1, sizeof *order);
    struct coalesce_request *reqs = xcalloc(n + 1, sizeof *reqs);
    struct run **sorted = xcalloc(n + 1, sizeof *sorted);
    for (size_t i = 0; i < n; i++) {
        const struct job_run *j = &runs[i]->j;
        keys[i] = (struct coalesce_key){.symbol = j->symbol,
                                        .timeframe = j->timeframe,
                                        .feed = j->feed,
                                        .adjustment = j->adjustment,
                                        .start_us = j->start_us,
                                        .end_us = j->end_us};
    }
    size_t nreq = coalesce_plan(keys, n, d->cfg->page_limit, d->cfg->batch_symbols, order, reqs);
    for (size_t i = 0; i < n; i++)
        sorted[i] = runs[order[i]];
    for (size_t i = 0; i < nreq; i++)
        start_group(d, &sorted[reqs[i].first], reqs[i].count);
    free(sorted);
    free(reqs);
    free(order);
    free(keys);
}

/* --- claiming -------------------------------------------------------------------- */

static void on_claimed(void *arg, int status, const char *err, const char *sqlstate,
                       PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->claiming = false;
    if (status != DB_OK) {
        if (status != DB_ECLOSED)
            LOG(LOG_ERROR, "claim failed", F_STR("error", err), F_STR("sqlstate", sqlstate));
        return;
    }
    int n = PQntuples(res[0]);
    d->last_claim_empty = n == 0;
    int asked = d->last_claim_asked;
    struct run **fresh = xcalloc((size_t)n + 1, sizeof *fresh);
    size_t nfresh = 0;
    for (int i = 0; i < n; i++) {
        struct job_run j;
        char perr[200];
        if (jobs_parse_run(res[0], i, &j, perr, sizeof perr) < 0) {
            /* Retrying cannot help: it fails for good at once, with the
             * reason in the row, rather than sit until its lease expires. */
            LOG(LOG_ERROR, "claimed run unusable", F_I64("job_id", j.id),
                F_STR("symbol", PQgetvalue(res[0], i, PQfnumber(res[0], "symbol"))),
                F_I64("attempt", j.attempt), F_STR("error", perr));
            if (j.id > 0 && j.attempt > 0) {
                char why[300];
                snprintf(why, sizeof why, "claimed run unusable: %s", perr);
                jobs_fail(d->db, d->worker, j.id, j.attempt, why, false, 0, 0, NULL, NULL);
                d->m.runs_failed++;
            }
            continue;
        }
        if (d->stopping) {
            int64_t id = j.id;
            int att = j.attempt;
            jobs_release(d->db, d->worker, &id, &att, 1, NULL, NULL);
            continue;
        }
        fresh[nfresh++] = new_run(d, &j);
    }
    start_runs(d, fresh, nfresh);
    free(fresh);
    if (n > 0)
        LOG(LOG_DEBUG, "claimed", F_I64("runs", n), F_I64("in_flight", d->nruns));
    if (n == asked)
        wake_claim(d); /* a full batch: there may be more */
    else
        kick(d);       /* an empty claim may mean --until-idle is done */
}

/*
 * Slots for new runs. A slot is held while a run waits for data; once all its
 * bars are handed to the writer (or its outcome is being recorded) it holds
 * none, so the next fetches overlap the write instead of waiting for it. The
 * writer's backlog is bounded by BACKFILLD_MAX_PENDING_ROWS, and the runs held
 * in all by twice the concurrency.
 */
static int64_t free_run_slots(const dispatch_t *d)
{
    int64_t fetching = 0;
    for (const struct run *r = d->runs; r; r = r->next)
        fetching += run_active(r);
    int64_t by_fetch = d->cfg->concurrency - fetching;
    int64_t by_total = 2 * d->cfg->concurrency - (int64_t)d->nruns;
    return by_fetch < by_total ? by_fetch : by_total;
}

static void maybe_claim(dispatch_t *d)
{
    int64_t now = mono_ms();
    if (!d->want_claim && now - d->last_claim_ms < d->cfg->poll_interval_ms)
        return;
    if (d->claiming || d->stopping || !d->ready_sent || !db_conn_is_up(d->db))
        return;
    if (now < d->auth_pause_until || backlogged(d))
        return;
    int64_t free_slots = free_run_slots(d);
    if (free_slots <= 0)
        return;
    /* Claim in full batches while work is in flight: runs are coalesced per
     * claim, and a trickle of 1-run claims would make 1-symbol requests. But
     * never leave free slots idle for longer than one poll interval. */
    int64_t want = d->cfg->claim_batch < d->cfg->concurrency ? d->cfg->claim_batch : d->cfg->concurrency;
    if (d->nruns > 0 && free_slots < want && d->cfg->batch_symbols > 1 &&
        now - d->last_claim_ms < d->cfg->poll_interval_ms)
        return;
    int n = (int)(free_slots < d->cfg->claim_batch ? free_slots : d->cfg->claim_batch);
    d->want_claim = false;
    d->claiming = true;
    d->last_claim_ms = now;
    d->last_claim_asked = n;
    LOG(LOG_DEBUG, "claim sent", F_I64("runs_asked", n), F_I64("queued_behind", (int64_t)db_conn_pending(d->db)));
    jobs_claim(d->db, d->worker, n, (int)d->cfg->lease_seconds, on_claimed, d);
}

/* --- leases, rescue, schedule ---------------------------------------------------- */

static void on_renewed(void *arg, int status, const char *err, const char *sqlstate,
                       PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->renewing = false;
    if (status != DB_OK) {
        if (status != DB_ECLOSED)
            LOG(LOG_WARN, "lease renewal failed", F_STR("error", err));
        return;
    }
    /* Any run we asked about that is missing from the answer is no longer ours. */
    for (struct run *r = d->runs; r; r = r->next) {
        if (!run_active(r))
            continue; /* a final page still renewed but not yet answered is settled by the fence */
        bool held = false;
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)r->j.id);
        for (int i = 0; i < PQntuples(res[0]) && !held; i++)
            held = strcmp(PQgetvalue(res[0], i, 0), id) == 0;
        /* Only runs that were in this renewal's request can be missing from its answer. */
        if (held || r->renew_seq != d->renew_seq)
            continue;
        r->outcome = O_ABANDONED;
        group_settle(r->g);
        d->m.runs_abandoned++;
        LOG(LOG_WARN, "run abandoned: cancelled or lease lost", RUN_FIELDS(r),
            F_I64("bars", r->bars), F_I64("pages", r->pages));
    }
}

static void renew(dispatch_t *d)
{
    if (d->renewing || !db_conn_is_up(d->db))
        return;
    size_t n = 0;
    for (struct run *r = d->runs; r; r = r->next)
        n += r->outcome == O_NONE;
    d->last_renew_ms = mono_ms();
    if (n == 0)
        return;
    int64_t *ids = xcalloc(n, sizeof *ids), *bars = xcalloc(n, sizeof *bars);
    int *att = xcalloc(n, sizeof *att);
    size_t i = 0;
    d->renew_seq++;
    for (struct run *r = d->runs; r; r = r->next) {
        if (r->outcome == O_NONE) {
            r->renew_seq = d->renew_seq;
            ids[i] = r->j.id;
            att[i] = r->j.attempt;
            bars[i] = r->bars;
            i++;
        }
    }
    d->renewing = true;
    jobs_renew(d->db, d->worker, ids, att, bars, n, (int)d->cfg->lease_seconds, on_renewed, d);
    free(ids);
    free(bars);
    free(att);
}

static void on_rescued(void *arg, int status, const char *err, const char *sqlstate,
                       PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->rescuing = false;
    if (status != DB_OK) {
        if (status != DB_ECLOSED)
            LOG(LOG_WARN, "rescue failed", F_STR("error", err));
        return;
    }
    int64_t n = 0;
    parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &n);
    if (n > 0) {
        d->m.rescued += (uint64_t)n;
        wake_claim(d);
        LOG(LOG_WARN, "expired leases rescued", F_I64("runs", n));
    }
}

static void on_scheduled(void *arg, int status, const char *err, const char *sqlstate,
                         PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->scheduling = false;
    if (status != DB_OK) {
        if (status != DB_ECLOSED)
            LOG(LOG_WARN, "schedule failed", F_STR("error", err), F_STR("sqlstate", sqlstate));
        return;
    }
    int64_t n = 0;
    parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &n);
    if (n > 0) {
        wake_claim(d);
        LOG(LOG_INFO, "runs scheduled", F_I64("runs", n));
    }
}

/* --- progress and idleness ------------------------------------------------------- */

static void on_stats(void *arg, int status, const char *err, const char *sqlstate,
                     PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->statsing = false;
    if (status != DB_OK)
        return;
    int64_t v[7] = {0};
    for (int i = 0; i < (int)ARRAY_SIZE(v); i++)
        parse_i64(PQgetvalue(res[0], 0, i), 0, INT64_MAX, &v[i]);
    d->m.queue_ready = v[0];
    d->m.queue_later = v[1];
    d->m.queue_running = v[2];
    d->m.oldest_queued_s = v[5];
    int64_t now = mono_ms();
    double secs = d->prev_progress_ms ? (double)(now - d->prev_progress_ms) / 1000.0 : 0;
    double bars_s = secs > 0 ? (double)(d->m.bars - d->prev_bars) / secs : 0;
    double req_s = secs > 0 ? (double)(d->m.requests - d->prev_requests) / secs : 0;
    /* The whole fleet's rate over the last minute, or over the part of it since the
     * first completion in it (at least 5 s), so a fresh start is not read as slow. */
    int64_t span = v[6] < 5 ? 5 : v[6] > 60 ? 60 : v[6];
    double runs_s = (double)v[3] / (double)span;
    d->prev_bars = d->m.bars;
    d->prev_requests = d->m.requests;
    d->prev_progress_ms = now;
    struct ratelimit_stats rs;
    ratelimit_stats(d->rl, &rs);
    /* Every few seconds while there is work; once a minute when idle. */
    bool idle = v[0] + v[1] + v[2] == 0 && d->nruns == 0;
    if (idle && now - d->last_idle_progress_ms < 60000)
        return;
    d->last_idle_progress_ms = idle ? now : 0;
    /* ETA from the whole fleet's recent completion rate (succeeded counts all hosts);
     * -1 (unknown) until a few runs have finished to measure it by. */
    int64_t eta = v[3] >= ETA_MIN_RUNS ? (int64_t)((double)(v[0] + v[1] + v[2]) / runs_s) : -1;
    LOG(LOG_INFO, "progress", F_I64("in_flight", d->nruns), F_I64("queued", v[0]),
        F_I64("queued_later", v[1]), F_I64("running", v[2]),
        F_I64("succeeded", d->m.runs_succeeded), F_I64("failed", d->m.runs_failed),
        F_I64("succeeded_last_min_all_hosts", v[3]), F_I64("failed_last_min_all_hosts", v[4]),
        F_I64("bars", d->m.bars), F_DBL("bars_per_s", bars_s),
        F_DBL("requests_per_s", req_s), F_I64("requests", d->m.requests),
        F_I64("rate_limit_waits", rs.waited), F_I64("rate_limited", d->m.rate_limited),
        F_I64("page_retries", d->m.page_retries), F_I64("oldest_queued_s", v[5]),
        F_DBL("runs_per_s", runs_s), F_I64("eta_s", eta));
    if (d->hooks.status) {
        char line[256];
        snprintf(line, sizeof line, "%zu in flight, %lld queued, %llu succeeded, %llu failed here",
                 d->nruns, (long long)v[0], (unsigned long long)d->m.runs_succeeded,
                 (unsigned long long)d->m.runs_failed);
        d->hooks.status(d->hooks.arg, line);
    }
}

static void on_idle_check(void *arg, int status, const char *err, const char *sqlstate,
                          PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->idle_checking = false;
    if (status != DB_OK || d->stopping)
        return;
    int64_t ready = 0, later = 0, running = 0;
    parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &ready);
    parse_i64(PQgetvalue(res[0], 0, 1), 0, INT64_MAX, &later);
    parse_i64(PQgetvalue(res[0], 0, 2), 0, INT64_MAX, &running);
    if (ready + later + running == 0 && d->nruns == 0 && store_idle(d->store)) {
        LOG(LOG_INFO, "no work left (--until-idle)", F_I64("succeeded", d->m.runs_succeeded),
            F_I64("failed", d->m.runs_failed), F_I64("bars", d->m.bars),
            F_I64("requests", d->m.requests));
        dispatch_stop(d, "idle");
    } else if (ready > 0) {
        wake_claim(d);
    }
}

/* --until-idle: once a claim came back empty and nothing is in flight here, ask the database. */
static void maybe_idle_check(dispatch_t *d)
{
    if (d->until_idle && !d->stopping && !d->idle_checking && !d->claiming &&
        d->last_claim_empty && d->nruns == 0 && store_idle(d->store) && db_conn_is_up(d->db)) {
        d->idle_checking = true;
        jobs_queue_stats(d->db, on_idle_check, d);
    }
}

/* --- the tick ------------------------------------------------------------------ */

static void finish_stop(dispatch_t *d);

static void on_tick(uv_timer_t *t)
{
    dispatch_t *d = t->data;
    int64_t now = mono_ms();
    reap(d);
    /* Leases are renewed during the shutdown grace period too. */
    if (d->ready_sent && now - d->last_renew_ms >= d->cfg->lease_seconds * 1000 / 3)
        renew(d);
    if (d->stopping) {
        finish_stop(d);
        return;
    }
    if (!d->ready_sent)
        return;
    if (!d->rescuing && db_conn_is_up(d->db) && now - d->last_rescue_ms >= d->cfg->rescue_interval_ms) {
        d->rescuing = true;
        d->last_rescue_ms = now;
        jobs_rescue(d->db, d->cfg->run_retry_base_ms, d->cfg->run_retry_max_ms, on_rescued, d);
    }
    if (!d->scheduling && db_conn_is_up(d->db) &&
        (d->want_schedule || now - d->last_schedule_ms >= d->cfg->schedule_interval_ms)) {
        d->scheduling = true;
        d->want_schedule = false;
        d->last_schedule_ms = now;
        jobs_schedule(d->db, (int)d->cfg->max_attempts, on_scheduled, d);
    }
    maybe_claim(d);
    if (!d->statsing && db_conn_is_up(d->db) &&
        now - d->last_progress_ms >= d->cfg->progress_interval_ms) {
        d->statsing = true;
        d->last_progress_ms = now;
        jobs_queue_stats(d->db, on_stats, d);
    }
    maybe_idle_check(d);
}

static void on_kick(uv_timer_t *t)
{
    dispatch_t *d = t->data;
    reap(d);
    if (d->stopping)
        return;
    maybe_claim(d);
    maybe_idle_check(d);
}

/* Reaps and claims on the next loop iteration, outside whatever callback asked. */
static void kick(dispatch_t *d)
{
    if (!d->stopping && !uv_is_active((uv_handle_t *)&d->kick))
        uv_timer_start(&d->kick, on_kick, 0, 0);
}

static void wake_claim(dispatch_t *d)
{
    d->want_claim = true;
    kick(d);
}

/* --- database session events ------------------------------------------------------ */

static void on_schema(void *arg, int status, const char *err, const char *sqlstate,
                      PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    int64_t v = 0;
    if (status == DB_ECONN || status == DB_ECLOSED)
        return; /* the reconnect asks again */
    if (status == DB_ESQL && strcmp(sqlstate, "42P01") != 0) {
        LOG(LOG_CRIT, "cannot read the schema version", F_STR("error", err));
        begin_close(d, 78);
        return;
    }
    /* 42P01: no schema_migrations table at all, i.e. version 0. */
    if (status == DB_OK && PQntuples(res[0]) > 0)
        parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &v);
    if (v != migrations_latest()) {
        LOG(LOG_CRIT, "database schema version mismatch: run 'backfilld migrate'",
            F_I64("schema_version", v), F_I64("expected", migrations_latest()));
        begin_close(d, 78);
        return;
    }
    d->schema_checked = true;
    if (!d->ready_sent) {
        ratelimit_set_rate(d->rl, d->cfg->rate_limit);
        d->ready_sent = true;
        d->want_schedule = true;
        wake_claim(d);
        LOG(LOG_INFO, "ready", F_STR("worker", d->worker), F_I64("schema_version", v),
            F_I64("concurrency", d->cfg->concurrency), F_DBL("rate_limit_per_min", d->cfg->rate_limit));
        if (d->hooks.ready)
            d->hooks.ready(d->hooks.arg);
    }
}

static void on_orphans_released(void *arg, int status, const char *err, const char *sqlstate,
                                PGresult *const *res, int nres)
{
    int64_t n = 0;
    if (status == DB_OK)
        (void)parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &n);
    if (n > 0)
        LOG(LOG_NOTICE, "runs of an unanswered claim released", F_I64("runs", n),
            F_STR("job_ids", PQgetvalue(res[0], 0, 1)));
    else if (status != DB_OK && status != DB_ECLOSED)
        LOG(LOG_WARN, "could not look for runs of an unanswered claim", F_STR("error", err));
}

static void on_db_up(void *arg)
{
    dispatch_t *d = arg;
    if (d->schema_checked) {
        /* A reconnect: a claim in flight when the connection dropped may have
         * committed unseen. Give back whatever is locked in our name that we
         * do not know about, rather than let its lease expire and spend an attempt. */
        size_t n = 0;
        for (struct run *r = d->runs; r; r = r->next)
            n++;
        int64_t *ids = xcalloc(n + 1, sizeof *ids);
        size_t i = 0;
        for (struct run *r = d->runs; r; r = r->next)
            ids[i++] = r->j.id;
        jobs_release_unknown(d->db, d->worker, ids, i, on_orphans_released, d);
        free(ids);
    }
    wake_claim(d);
    if (!d->schema_checked) {
        db_req_t *r = db_req_new(on_schema, d, false);
        db_req_sql(r, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL);
        db_req_keep(r);
        db_submit(d->db, r);
    }
}

static void on_notify(void *arg, const char *channel)
{
    dispatch_t *d = arg;
    if (strcmp(channel, "backfilld_defs") == 0)
        d->want_schedule = true;
    wake_claim(d);
}

/* --- shutdown --------------------------------------------------------------------- */

static void on_released(void *arg, int status, const char *err, const char *sqlstate,
                        PGresult *const *res, int nres)
{
    dispatch_t *d = arg;
    d->releasing_done = true;
    if (status != DB_OK) {
        LOG(LOG_ERROR, "release at shutdown failed; leases will expire instead",
            F_STR("error", err));
        return;
    }
    LOG(LOG_NOTICE, "runs released at shutdown", F_STR("released", PQgetvalue(res[0], 0, 0)));
}

static void release_all(dispatch_t *d)
{
    size_t n = 0;
    for (struct run *r = d->runs; r; r = r->next)
        n += r->outcome == O_NONE && !r->final_queued;
    if (n == 0) {
        d->releasing_done = true;
        return;
    }
    int64_t *ids = xcalloc(n, sizeof *ids);
    int *att = xcalloc(n, sizeof *att);
    size_t i = 0;
    for (struct run *r = d->runs; r; r = r->next) {
        if (r->outcome == O_NONE && !r->final_queued) {
            r->outcome = O_RELEASED;
            group_settle(r->g);
            d->m.runs_released++;
            ids[i] = r->j.id;
            att[i] = r->j.attempt;
            i++;
            LOG(LOG_NOTICE, "run released at shutdown", RUN_FIELDS(r), F_I64("bars", r->bars));
        }
    }
    jobs_release(d->db, d->worker, ids, att, n, on_released, d);
    free(ids);
    free(att);
}

static void on_closed(void *arg)
{
    dispatch_t *d = arg;
    if (--d->pending_closes > 0)
        return;
    /* Everything that holds a uv handle is closing; tell main once they are done. */
    if (d->hooks.exited && !d->exited) {
        d->exited = true;
        d->hooks.exited(d->hooks.arg, d->exit_code);
    }
}

static void on_tick_closed(uv_handle_t *h)
{
    on_closed(h->data);
}

static void begin_close(dispatch_t *d, int code)
{
    if (d->pending_closes > 0 || d->exited)
        return;
    d->exit_code = code;
    d->stopping = true;
    /* Runs still here now are abandoned (their leases expire or were released).
     * Close the sessions first: their pending callbacks still name runs. */
    for (struct group *g = d->groups; g; g = g->next) {
        if (g->fetch) {
            alpaca_fetch_cancel(g->fetch);
            g->fetch = NULL;
        }
    }
    for (struct run *r = d->runs; r; r = r->next)
        store_forget(d->store, r);
    d->pending_closes = 4;
    db_conn_close(d->db, on_closed, d);
    db_conn_close(d->wdb, on_closed, d);
    while (d->runs) {
        struct run *r = d->runs;
        d->runs = r->next;
        free(r);
    }
    d->nruns = 0;
    while (d->groups)
        group_free(d->groups);
    uv_timer_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, on_tick_closed);
    uv_timer_stop(&d->kick);
    uv_close((uv_handle_t *)&d->kick, on_tick_closed);
    metrics_server_close(d->metrics);
    d->metrics = NULL;
    store_close(d->store);
    http_client_close(d->http);
    ratelimit_close(d->rl);
    alpaca_free(d->alpaca);
}

/* Called every tick while stopping: moves through the shutdown steps in order. */
static void finish_stop(dispatch_t *d)
{
    int64_t now = mono_ms();
    if (!d->releasing_done) {
        bool busy = false;
        for (struct run *r = d->runs; r; r = r->next)
            busy |= r->outcome == O_NONE && !r->final_queued;
        if (busy && now < d->stop_deadline_ms && db_conn_is_up(d->db))
            return; /* let in-flight runs finish */
        if (busy && db_conn_is_up(d->db)) {
            release_all(d);
            return;
        }
        d->releasing_done = !busy || !db_conn_is_up(d->db);
    }
    /* Write what was fetched; wait for outcome calls; give up 10 s past the deadline. */
    store_flush(d->store);
    bool pending = !store_idle(d->store) || db_conn_pending(d->db) > 0;
    for (struct run *r = d->runs; r && !pending; r = r->next)
        pending = r->db_ops > 0 || r->pending_pages > 0;
    if (pending && now < d->stop_deadline_ms + 10000 &&
        (db_conn_is_up(d->db) || db_conn_is_up(d->wdb)))
        return;
    LOG(LOG_INFO, "stopped", F_I64("succeeded", d->m.runs_succeeded),
        F_I64("failed", d->m.runs_failed), F_I64("released", d->m.runs_released),
        F_I64("bars", d->m.bars), F_I64("requests", d->m.requests));
    begin_close(d, d->exit_code);
}

/* --- /metrics and /healthz ---------------------------------------------------------- */

static const double upsert_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double http_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

static void render_metrics(void *arg, dynbuf_t *out)
{
    dispatch_t *d = arg;
    struct ratelimit_stats rs;
    ratelimit_stats(d->rl, &rs);
    int rc = 0;
    rc |= metrics_counter(out, "backfilld_runs_claimed_total", "Runs claimed by this daemon.", (double)d->m.runs_claimed);
    rc |= metrics_counter(out, "backfilld_runs_succeeded_total", "Runs completed (succeeded) by this daemon.", (double)d->m.runs_succeeded);
    rc |= metrics_counter(out, "backfilld_runs_failed_total", "Runs that failed for good on this daemon.", (double)d->m.runs_failed);
    rc |= metrics_counter(out, "backfilld_runs_retried_total", "Failed attempts queued again with a backoff.", (double)d->m.runs_retried);
    rc |= metrics_counter(out, "backfilld_runs_rescued_total", "Runs of dead workers put back by this daemon's lease rescue.", (double)d->m.rescued);
    rc |= metrics_counter(out, "backfilld_runs_released_total", "Runs given back without spending an attempt.", (double)d->m.runs_released);
    rc |= metrics_counter(out, "backfilld_runs_abandoned_total", "Runs dropped because they were cancelled or their lease was lost.", (double)d->m.runs_abandoned);
    rc |= metrics_counter(out, "backfilld_bars_written_total", "Bars committed to the bars table.", (double)d->m.bars);
    rc |= metrics_counter(out, "backfilld_pages_total", "Well-formed pages received from Alpaca.", (double)d->m.pages);
    rc |= metrics_counter(out, "backfilld_page_retries_total", "Pages retried after a 5xx, timeout or bad body.", (double)d->m.page_retries);
    rc |= metrics_counter(out, "backfilld_rate_limited_total", "HTTP 429 answers from Alpaca.", (double)d->m.rate_limited);
    rc |= metrics_counter(out, "backfilld_rate_limit_waits_total", "Requests that waited for a rate-limit token.", (double)rs.waited);
    rc |= metrics_counter(out, "backfilld_rate_limit_wait_seconds_total", "Time requests spent waiting for rate-limit tokens.", (double)rs.wait_ms / 1000.0);
    const char *codes[8];
    double counts[8];
    char names[8][8];
    size_t n = 0;
    static const char *classes[] = {"error", "1xx", "2xx", "3xx", "4xx", "5xx"};
    double by_class[6] = {0};
    for (int st = 0; st < 600; st++)
        by_class[st == 0 ? 0 : st / 100] += (double)d->http_status[st];
    for (int k = 0; k < 6; k++) {
        if (k == 1 || k == 3)
            continue;
        codes[n] = classes[k];
        counts[n++] = by_class[k];
    }
    snprintf(names[0], sizeof names[0], "429");
    codes[n] = names[0];
    counts[n++] = (double)d->http_status[429];
    rc |= metrics_labeled(out, "backfilld_http_responses_total", "counter",
                          "Alpaca HTTP responses by status class (429 also counted on its own; error = no response).",
                          "code", codes, counts, n);
    rc |= metrics_histogram(out, "backfilld_http_request_duration_seconds", "Alpaca request latency.", &d->http_hist);
    rc |= metrics_histogram(out, "backfilld_upsert_duration_seconds", "Write transaction (COPY, upsert, completion) latency.", &d->upsert_hist);
    rc |= metrics_gauge(out, "backfilld_runs_in_flight", "Runs this daemon holds now.", (double)d->nruns);
    rc |= metrics_gauge(out, "backfilld_write_backlog_bars", "Bars fetched and waiting to be written.", (double)store_backlog(d->store));
    const char *qs[] = {"queued_ready", "queued_waiting_retry", "running"};
    double qv[] = {(double)d->m.queue_ready, (double)d->m.queue_later, (double)d->m.queue_running};
    rc |= metrics_labeled(out, "backfilld_queue_runs", "gauge",
                          "Runs in the queue (all hosts), by status, as of the last progress tick.", "status", qs, qv, 3);
    rc |= metrics_gauge(out, "backfilld_oldest_queued_run_age_seconds", "Age of the oldest queued run of an enabled definition.", (double)d->m.oldest_queued_s);
    rc |= metrics_gauge(out, "backfilld_db_up", "1 while the database session is connected.", db_conn_is_up(d->db) ? 1 : 0);
    rc |= metrics_gauge(out, "backfilld_alpaca_credentials_ok", "0 while Alpaca rejects the credentials.", mono_ms() >= d->auth_pause_until ? 1 : 0);
    rc |= metrics_gauge(out, "backfilld_rate_limit_per_minute", "The configured Alpaca request budget.", ratelimit_rate(d->rl));
    (void)rc; /* a cut-short exposition is still valid up to the cut */
}

static bool health(void *arg, char *why, size_t whylen)
{
    dispatch_t *d = arg;
    if (!db_conn_is_up(d->db)) {
        snprintf(why, whylen, "database not connected");
        return false;
    }
    if (mono_ms() < d->auth_pause_until) {
        snprintf(why, whylen, "Alpaca rejected the credentials");
        return false;
    }
    if (!d->ready_sent) {
        snprintf(why, whylen, "starting");
        return false;
    }
    /* Answered from the loop itself, so an answer also means the loop is alive. */
    return true;
}

/* --- public ----------------------------------------------------------------------- */

dispatch_t *dispatch_new(uv_loop_t *loop, struct config *cfg, const char *worker_id,
                         bool until_idle, const struct dispatch_hooks *hooks)
{
    dispatch_t *d = xcalloc(1, sizeof *d);
    d->loop = loop;
    d->cfg = cfg;
    d->worker = xstrdup(worker_id);
    d->until_idle = until_idle;
    if (hooks)
        d->hooks = *hooks;
    d->rng = (uint64_t)wall_us();

    struct db_callbacks cbs = {.up = on_db_up, .notify = on_notify, .arg = d};
    d->db = db_conn_new(loop, cfg->database_url, "main", &cbs);
    if (!cfg->poll_only) {
        db_conn_add_setup(d->db, "LISTEN backfilld_runs");
        db_conn_add_setup(d->db, "LISTEN backfilld_defs");
    }
    d->wdb = db_conn_new(loop, cfg->database_url, "writer", NULL);

    char key[512], secret[512];
    snprintf(key, sizeof key, "APCA-API-KEY-ID: %s", cfg->api_key);
    snprintf(secret, sizeof secret, "APCA-API-SECRET-KEY: %s", cfg->api_secret);
    const char *headers[] = {key, secret, "Accept: application/json", NULL};
    struct http_opts ho = {.max_connections = cfg->max_connections,
                           .connect_timeout_ms = cfg->connect_timeout_ms,
                           .timeout_ms = cfg->http_timeout_ms,
                           .ca_file = cfg->ca_file,
                           .body_cap = (size_t)64 << 20,
                           .headers = headers};
    d->http = http_client_new(loop, &ho);
    http_set_observer(d->http, on_http_done, d);
    metrics_hist_init(&d->upsert_hist, upsert_bounds, ARRAY_SIZE(upsert_bounds));
    metrics_hist_init(&d->http_hist, http_bounds, ARRAY_SIZE(http_bounds));
    memset(key, 0, sizeof key);
    memset(secret, 0, sizeof secret);
    /* The budget is the account's: shared through the database unless no name is set. */
    if (cfg->rate_limit_name && *cfg->rate_limit_name)
        d->rl = ratelimit_new_shared(loop, cfg->rate_limit, d->db, cfg->rate_limit_name);
    else
        d->rl = ratelimit_new(loop, cfg->rate_limit);
    struct alpaca_opts ao = {.base_url = cfg->data_url,
                             .page_limit = cfg->page_limit,
                             .page_retries = cfg->page_retries,
                             .retry_base_ms = cfg->retry_base_ms,
                             .retry_max_ms = cfg->retry_max_ms};
    d->alpaca = alpaca_new(loop, d->http, d->rl, &ao);
    struct store_cbs sc = {.committed = on_committed,
                           .failed = on_write_failed,
                           .drained = on_drained,
                           .arg = d};
    d->store = store_new(loop, d->wdb, d->worker, &sc);
    uv_timer_init(loop, &d->tick);
    d->tick.data = d;
    uv_timer_init(loop, &d->kick);
    d->kick.data = d;
    return d;
}

int dispatch_start(dispatch_t *d)
{
    if (d->cfg->metrics_listen && *d->cfg->metrics_listen) {
        char err[300];
        d->metrics = metrics_server_start(d->loop, d->cfg->metrics_listen, render_metrics, health,
                                          d, err, sizeof err);
        if (!d->metrics) {
            LOG(LOG_CRIT, "cannot serve metrics", F_STR("listen", d->cfg->metrics_listen),
                F_STR("error", err));
            return -1;
        }
        LOG(LOG_INFO, "metrics listening", F_STR("listen", d->cfg->metrics_listen),
            F_I64("port", metrics_server_port(d->metrics)));
    }
    LOG(LOG_INFO, "starting", F_STR("worker", d->worker), F_STR("data_url", d->cfg->data_url),
        F_BOOL("poll_only", d->cfg->poll_only), F_BOOL("until_idle", d->until_idle));
    db_conn_start(d->db);
    db_conn_start(d->wdb);
    uv_timer_start(&d->tick, on_tick, TICK_MS, TICK_MS);
    return 0;
}

void dispatch_stop(dispatch_t *d, const char *why)
{
    if (d->stopping) {
        if (strcmp(why, "idle") != 0) {
            LOG(LOG_WARN, "second signal: exiting at once; leases will expire",
                F_STR("signal", why));
            begin_close(d, 0);
        }
        return;
    }
    d->stopping = true;
    d->stop_deadline_ms = mono_ms() + d->cfg->shutdown_timeout_ms;
    if (strcmp(why, "idle") != 0)
        LOG(LOG_NOTICE, "stopping", F_STR("signal", why), F_I64("in_flight", d->nruns),
            F_I64("deadline_ms", d->cfg->shutdown_timeout_ms));
}

void dispatch_abort(dispatch_t *d, int code)
{
    begin_close(d, code);
}

void dispatch_reconfigure(dispatch_t *d)
{
    ratelimit_set_rate(d->rl, d->cfg->rate_limit);
    struct alpaca_opts ao = {.base_url = d->cfg->data_url,
                             .page_limit = d->cfg->page_limit,
                             .page_retries = d->cfg->page_retries,
                             .retry_base_ms = d->cfg->retry_base_ms,
                             .retry_max_ms = d->cfg->retry_max_ms};
    alpaca_set_opts(d->alpaca, &ao);
    log_min_level = d->cfg->log_level;
    wake_claim(d);
}

void dispatch_free(dispatch_t *d)
{
    if (!d)
        return;
    metrics_hist_free(&d->upsert_hist);
    metrics_hist_free(&d->http_hist);
    free(d->worker);
    free(d);
}
