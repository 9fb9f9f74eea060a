/*
 * dispatch_runs: runs and the fetches they ride in (groups). See dispatch_int.h.
 *
 * A claimed run joins a group: one fetch of one query, shared by the runs
 * coalesce.h plans together (same timeframe, feed and adjustment; a symbol
 * may have several runs in a group, with adjacent ranges that together cover
 * the query's). Pages are split by symbol and time and handed to the writer
 * per run; a run's slot is free once its last page is
 * with the writer, and the run itself is freed once its outcome is recorded
 * and its pages are committed. runs_finish() is the only place a run's
 * outcome changes.
 */
#include "dispatch_int.h"

#include "coalesce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A bars page's time until one is measured: a full page from Alpaca is ~1-2 MB of JSON. */
#define ASSUMED_PAGE_MS 100.0

/* --- runs and groups -------------------------------------------------------------- */

bool run_active(const struct run *r)
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

static void group_cancel_fetch(struct group *g)
{
    if (g->fetch) {
        alpaca_fetch_cancel(g->fetch);
        g->fetch = NULL;
    }
}

/* A run lets go of its group; the last one out stops the fetch and frees it. */
static void group_unref(struct group *g)
{
    if (!g || --g->refs > 0)
        return;
    group_cancel_fetch(g);
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

/* The index of the first run of symbol in g->runs (sorted by symbol, then
 * range), or g->n. The symbol's other runs follow it, freed ones as NULLs. */
static size_t group_find_index(const struct group *g, const char *symbol)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && strcmp(g->runs[i]->j.symbol, symbol) == 0)
            return i;
    return g->n;
}

static struct run *group_find(const struct group *g, const char *symbol)
{
    size_t i = group_find_index(g, symbol);
    return i < g->n ? g->runs[i] : NULL;
}

/* The first of s's bars (sorted by time) that starts at or after t_us. */
static size_t bars_from(const bars_series_t *s, int64_t t_us)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->bars[mid].ts_us < t_us)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Whether a run already handed its final page to the writer gets bars of its
 * range in s: the server went back in symbol or time order. */
static bool series_reopens_run(const struct group *g, const bars_series_t *s)
{
    for (size_t i = group_find_index(g, s->symbol); i < g->n; i++) {
        const struct run *r = g->runs[i];
        if (!r)
            continue;
        if (strcmp(r->j.symbol, s->symbol) != 0)
            break;
        if (r->final_queued && bars_from(s, r->j.end_us) > bars_from(s, r->j.start_us))
            return true;
    }
    return false;
}

/* Stops the group's fetch once none of its runs wants more data. */
static void group_settle(struct group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && run_active(g->runs[i]))
            return;
    group_cancel_fetch(g);
    g->held = false;
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

/* The runs of g that still expect data, for a failure or release of them all. */
static size_t group_active(const struct group *g, struct run **out)
{
    size_t m = 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->runs[i] && run_active(g->runs[i]))
            out[m++] = g->runs[i];
    return m;
}

/* Fails every run of the group that still expects data (a protocol fault). */
static void group_fail_active(struct group *g, const char *error, bool retryable)
{
    struct run **act = xcalloc(g->n + 1, sizeof *act);
    size_t m = group_active(g, act);
    for (size_t i = 0; i < m; i++)
        runs_finish(act[i], O_FAILED, error, retryable);
    free(act);
}

void runs_reap(dispatch_t *d)
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
            dispatch_wake_claim(d);
        }
        r = next;
    }
}

void runs_detach_all(dispatch_t *d)
{
    for (struct group *g = d->groups; g; g = g->next)
        group_cancel_fetch(g);
    for (struct run *r = d->runs; r; r = r->next)
        store_forget(d->store, r);
}

void runs_free_all(dispatch_t *d)
{
    runs_detach_all(d);
    while (d->runs) {
        struct run *r = d->runs;
        d->runs = r->next;
        free(r);
    }
    d->nruns = 0;
    while (d->groups)
        group_free(d->groups);
}

/*
 * Slots for new runs. A slot is held while a run waits for data; once all its
 * bars are handed to the writer (or its outcome is being recorded) it holds
 * none, so the next fetches overlap the write instead of waiting for it. The
 * writer's backlog is bounded by BACKFILLD_MAX_PENDING_ROWS, and the runs held
 * in all by twice the concurrency.
 */
int64_t runs_free_slots(const dispatch_t *d)
{
    int64_t fetching = 0;
    for (const struct run *r = d->runs; r; r = r->next)
        fetching += run_active(r);
    int64_t by_fetch = d->cfg->concurrency - fetching;
    int64_t by_total = 2 * d->cfg->concurrency - (int64_t)d->nruns;
    return by_fetch < by_total ? by_fetch : by_total;
}

bool runs_backlogged(const dispatch_t *d)
{
    return (int64_t)store_backlog(d->store) >= d->cfg->max_pending_rows;
}

/* --- outcomes ---------------------------------------------------------------------- */

static void on_fail_recorded(void *arg, const struct jobs_status *st, const char *run_status);

/* Records the run's failed attempt (r->error, r->retryable); the answer logs it. */
static void record_failure(struct run *r)
{
    dispatch_t *d = r->d;
    struct jobs_failure f = {.id = r->j.id,
                             .attempt = r->j.attempt,
                             .error = r->error,
                             .retryable = r->retryable,
                             .base_ms = d->cfg->run_retry_base_ms,
                             .cap_ms = d->cfg->run_retry_max_ms};
    r->db_ops++;
    jobs_fail(d->db, d->worker, &f, on_fail_recorded, r);
}

static void on_fail_recorded(void *arg, const struct jobs_status *st, const char *run_status)
{
    struct run *r = arg;
    dispatch_t *d = r->d;
    r->db_ops--;
    dispatch_kick(d);
    if (st->status == DB_ECONN && !d->stopping) {
        /* Unknown whether it landed; the call is fenced, so repeating it is safe. */
        record_failure(r);
        return;
    }
    int64_t ms = mono_ms() - r->started_ms;
    if (st->status != DB_OK) {
        LOG(LL_ERROR, "run failure not recorded", RUN_FIELDS(r), F_STR("error", r->error),
            F_STR("db_error", st->err));
    } else if (!run_status) {
        LOG(LL_WARN, "run failure not recorded: lease lost", RUN_FIELDS(r),
            F_STR("error", r->error));
    } else if (strcmp(run_status, "queued") == 0) {
        d->m.runs_retried++;
        LOG(LL_WARN, "run attempt failed, will retry", RUN_FIELDS(r),
            F_I64("max_attempts", r->j.max_attempts), F_I64("bars", r->bars),
            F_I64("pages", r->pages), F_I64("ms", ms), F_STR("error", r->error));
    } else {
        d->m.runs_failed++;
        LOG(LL_ERROR, "run failed", RUN_FIELDS(r), F_I64("max_attempts", r->j.max_attempts),
            F_I64("bars", r->bars), F_I64("pages", r->pages), F_I64("ms", ms),
            F_STR("error", r->error));
    }
}

void runs_finish(struct run *r, enum outcome o, const char *why, bool retryable)
{
    dispatch_t *d = r->d;
    if (r->outcome != O_NONE || o == O_NONE) {
        LOG(LL_CRIT, "run outcome set twice", RUN_FIELDS(r), F_I64("outcome", r->outcome),
            F_I64("new_outcome", o));
        abort(); /* a broken invariant: two owners think they decide this run */
    }
    r->outcome = o;
    strlcpy_trunc(r->error, sizeof r->error, why ? why : "");
    r->retryable = retryable;
    group_settle(r->g);
    dispatch_kick(d);
    switch (o) {
    case O_SUCCEEDED:
        d->m.runs_succeeded++;
        LOG(LL_INFO, "run succeeded", RUN_FIELDS(r), F_I64("bars", r->bars),
            F_I64("pages", r->pages), F_I64("request_symbols", r->request_symbols),
            F_I64("ms", mono_ms() - r->started_ms));
        break;
    case O_ABANDONED:
        d->m.runs_abandoned++;
        LOG(LL_WARN, r->error, RUN_FIELDS(r), F_I64("bars", r->bars), F_I64("pages", r->pages));
        break;
    case O_FAILED: /* logged when the database has answered */
        record_failure(r);
        break;
    case O_RELEASED: /* the caller gives it back: runs_release */
        d->m.runs_released++;
        break;
    case O_NONE:
        break;
    }
}

struct release_call {
    dispatch_t *d;
    struct run **runs; /* each holds a db_op until the answer */
    size_t n;
    bool at_shutdown;
};

static void on_released(void *arg, const struct jobs_status *st, int64_t n, const char *ids)
{
    struct release_call *c = arg;
    for (size_t i = 0; i < c->n; i++)
        c->runs[i]->db_ops--;
    if (st->status != DB_OK)
        LOG(LL_ERROR,
            c->at_shutdown ? "release at shutdown failed; leases will expire instead"
                           : "run release failed",
            F_I64("runs", (int64_t)c->n), F_STR("error", st->err));
    else if (c->at_shutdown)
        LOG(LL_NOTICE, "runs released at shutdown", F_I64("released", n));
    if (c->at_shutdown)
        c->d->releasing_done = true;
    dispatch_kick(c->d);
    free(c->runs);
    free(c);
}

void runs_release(dispatch_t *d, struct run **rs, size_t n, const char *why, bool at_shutdown)
{
    if (n == 0)
        return;
    struct release_call *c = xcalloc(1, sizeof *c);
    c->d = d;
    c->runs = xcalloc(n, sizeof *c->runs);
    c->n = n;
    c->at_shutdown = at_shutdown;
    int64_t *ids = xcalloc(n, sizeof *ids);
    int *att = xcalloc(n, sizeof *att);
    for (size_t i = 0; i < n; i++) {
        struct run *r = rs[i];
        runs_finish(r, O_RELEASED, why, false);
        r->db_ops++;
        c->runs[i] = r;
        ids[i] = r->j.id;
        att[i] = r->j.attempt;
        LOG(LL_NOTICE, at_shutdown ? "run released at shutdown" : "run released", RUN_FIELDS(r),
            F_I64("bars", r->bars), F_STR("reason", why));
    }
    jobs_release(d->db, d->worker, ids, att, n, on_released, c);
    free(ids);
    free(att);
}

/* --- the writer's callbacks ------------------------------------------------------- */

static void on_committed(void *owner, int64_t nbars, bool final, bool completed)
{
    struct run *r = owner;
    dispatch_t *d = r->d;
    r->pending_pages--;
    d->m.bars += (uint64_t)nbars;
    if (!final)
        return;
    dispatch_kick(d);
    if (r->outcome != O_NONE)
        return;
    if (completed)
        runs_finish(r, O_SUCCEEDED, NULL, false);
    else
        /* The fence refused (the lease was lost), or pages committed earlier
         * were lost in a crash and the database queued the run again. */
        runs_finish(r, O_ABANDONED, "run not completed: lease lost or bars missing", false);
}

static void on_write_failed(void *owner, const char *err)
{
    struct run *r = owner;
    r->pending_pages--;
    dispatch_kick(r->d);
    if (r->outcome != O_NONE)
        return;
    char msg[700];
    snprintf(msg, sizeof msg, "database write failed: %s", err);
    runs_finish(r, O_FAILED, msg, true);
}

static void resume_held(dispatch_t *d)
{
    for (struct group *g = d->groups; g && !runs_backlogged(d); g = g->next) {
        if (g->held && g->fetch) {
            g->held = false;
            alpaca_fetch_resume(g->fetch);
        }
    }
}

static void on_drained(void *arg, bool ok, size_t rows, double ms)
{
    dispatch_t *d = arg;
    if (ok)
        report_upsert_done(d, ms);
    resume_held(d);
}

void runs_store_callbacks(dispatch_t *d, struct store_cbs *out)
{
    *out = (struct store_cbs){
        .committed = on_committed, .failed = on_write_failed, .drained = on_drained, .arg = d};
}

/* --- the fetch's callbacks --------------------------------------------------------- */

/*
 * One page of a group's fetch. Bars are split by symbol, and by time among a
 * symbol's runs, and handed to the writer for each run. Results come sorted
 * by symbol, then time, so every run whose symbol sorts before the page's
 * last symbol is complete (its bars, if any, are all in), and so is a run of
 * the last symbol once a bar past its range has come; the rest may go on in
 * the next page (they are stitched); a null token completes everyone left,
 * with zero bars if none came.
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
        if (!ordered || series_reopens_run(g, &page->series[i])) {
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
    size_t k = 0;                   /* walks page->series alongside the sorted runs */
    int64_t fetched_us = wall_us(); /* the page is here now: what "final" is judged by */
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
        size_t off = s ? bars_from(s, r->j.start_us) : 0;
        size_t n = s ? bars_from(s, r->j.end_us) - off : 0;
        bool final_now = last || (boundary && strcmp(r->j.symbol, boundary) < 0) ||
                         (s && s->n > 0 && s->bars[s->n - 1].ts_us >= r->j.end_us);
        if (n == 0 && !final_now)
            continue;
        r->pages++;
        r->bars += (int64_t)n;
        struct store_page sp = {.owner = r,
                                .run_id = r->j.id,
                                .attempt = r->j.attempt,
                                .symbol = r->j.symbol,
                                .timeframe = r->j.timeframe,
                                .feed = r->j.feed,
                                .adjustment = r->j.adjustment,
                                .fetched_us = fetched_us,
                                .settled_us = fetched_us - d->cfg->settle_seconds * 1000000,
                                .bars = n ? s->bars + off : NULL,
                                .n = n,
                                .final = final_now,
                                .total_bars = r->bars,
                                .pages = r->pages};
        if (store_add(d->store, &sp) < 0) {
            runs_finish(r, O_FAILED, "page could not be buffered for writing", true);
            continue;
        }
        r->pending_pages++;
        if (final_now) {
            r->final_queued = true;
            dispatch_wake_claim(d); /* its slot is free for the next fetch */
        }
    }
    if (log_min_level <= LL_DEBUG) {
        char syms[256];
        group_symbols(g, syms, sizeof syms);
        LOG(LL_DEBUG, "page fetched", F_I64("job_id", group_first(g) ? group_first(g)->j.id : 0),
            F_STR("symbols", syms), F_I64("page", g->pages), F_I64("bars", page->total),
            F_BOOL("last", last));
    }
    bars_page_clear(page);
    group_settle(g);
    if (last || !g->fetch)
        return false;
    if (runs_backlogged(d)) {
        g->held = true;
        return false;
    }
    return true;
}

/* One malformed symbol fails a whole multi-symbol request with 400: fail that
 * symbol's run alone and fetch the others again without it. */
static bool split_around(struct group *g, const struct alpaca_failure *f)
{
    struct run *bad = f->symbol ? group_find(g, f->symbol) : NULL;
    if (g->n < 2 || !bad || !run_active(bad))
        return false;
    /* Every run of the symbol: it may have several in the group. */
    for (size_t i = group_find_index(g, f->symbol); i < g->n; i++) {
        struct run *r = g->runs[i];
        if (r && strcmp(r->j.symbol, f->symbol) != 0)
            break;
        if (r && run_active(r))
            runs_finish(r, O_FAILED, f->error, false);
    }
    struct run **rest = xcalloc(g->n, sizeof *rest);
    size_t m = group_active(g, rest);
    for (size_t i = 0; i < m; i++) {
        rest[i]->bars = 0; /* the new fetch starts from the first page */
        rest[i]->pages = 0;
    }
    LOG(LL_NOTICE, "request split around a malformed symbol", RUN_FIELDS(bad), F_I64("others", m));
    if (m > 0)
        runs_start(g->d, rest, m); /* planned afresh; moves the runs (and their refs) over */
    free(rest);
    return true;
}

static void on_fetch_failed(void *arg, const struct alpaca_failure *f)
{
    struct group *g = arg;
    dispatch_t *d = g->d;
    g->fetch = NULL;
    g->held = false;
    dispatch_kick(d);
    if (f->kind == ALPACA_EBADSYMBOL && split_around(g, f))
        return;
    if (f->kind == ALPACA_EAUTH || f->kind == ALPACA_ETLS) {
        /* Not the runs' fault: give them back and stop claiming for a while. */
        int64_t now = mono_ms();
        d->auth_pause_until = now + AUTH_PAUSE_MS;
        d->auth_pause_tls = f->kind == ALPACA_ETLS;
        if (now - d->last_auth_log_ms >= AUTH_PAUSE_MS || d->last_auth_log_ms == 0) {
            d->last_auth_log_ms = now;
            LOG(LL_CRIT,
                d->auth_pause_tls ? "alpaca TLS certificate refused; claiming paused"
                                  : "alpaca credentials rejected; claiming paused",
                RUN_FIELDS(group_first(g)), F_I64("http_status", f->http_status),
                F_STR("error", f->error), F_I64("pause_ms", AUTH_PAUSE_MS));
        }
        struct run **act = xcalloc(g->n + 1, sizeof *act);
        runs_release(d, act, group_active(g, act), f->error, false);
        free(act);
        return;
    }
    group_fail_active(g, f->error, f->kind == ALPACA_ERETRY);
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
        LOG(LL_WARN, "rate limited, waiting", RUN_FIELDS(r), F_STR("symbols", syms),
            F_I64("http_status", 429), F_I64("wait_ms", delay_ms));
        return;
    }
    d->m.page_retries++;
    LOG(LL_WARN, "page retry", RUN_FIELDS(r), F_STR("symbols", syms), F_I64("runs", g->n),
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

static int cmp_run_symbol(const void *a, const void *b)
{
    const struct run *x = *(struct run *const *)a, *y = *(struct run *const *)b;
    int c = strcmp(x->j.symbol, y->j.symbol);
    return c ? c : (x->j.start_us > y->j.start_us) - (x->j.start_us < y->j.start_us);
}

/* One fetch for the n runs of one planned request (coalesce_plan), over
 * [start_us, end_us). Takes the runs over from any previous group. */
static void start_group(dispatch_t *d, struct run **runs, size_t n, int64_t start_us,
                        int64_t end_us)
{
    struct group *g = xcalloc(1, sizeof *g);
    g->d = d;
    g->runs = xcalloc(n, sizeof *g->runs);
    memcpy(g->runs, runs, n * sizeof *runs);
    g->n = n;
    qsort(g->runs, n, sizeof *g->runs, cmp_run_symbol);
    DLIST_PUSH(d->groups, g);
    const char **syms = xcalloc(n, sizeof *syms);
    size_t nsyms = 0;
    for (size_t i = 0; i < n; i++) {
        struct run *r = g->runs[i];
        group_detach(r);
        r->g = g;
        g->refs++;
        if (nsyms == 0 || strcmp(syms[nsyms - 1], r->j.symbol) != 0)
            syms[nsyms++] = r->j.symbol;
    }
    for (size_t i = 0; i < n; i++)
        g->runs[i]->request_symbols = (int)nsyms;
    const struct job_run *j = &g->runs[0]->j;
    struct alpaca_query q = {.symbols = syms,
                             .nsymbols = nsyms,
                             .timeframe = j->timeframe,
                             .feed = j->feed,
                             .adjustment = j->adjustment,
                             .start_us = start_us,
                             .end_us = end_us};
    g->fetch = alpaca_fetch_start(d->alpaca, &q, &fetch_cbs, g);
    free(syms);
}

/*
 * The requests a plan should make at least: as many as the budget can keep
 * in flight (Little's law: requests a second x seconds a page), up to what
 * curl is handed at once. Under a budget that binds (the free plan's 200 a
 * minute at ~0.1-0.5 s a page is under one in flight) that is 1, and
 * requests are planned as long as they go, close to the floor of
 * ceil(bars / limit). With more budget than a few long requests can spend,
 * the claim's symbols are spread over that many requests, walked side by
 * side, each costing at most one partly filled page. Requests already
 * fetching are not subtracted: they end sooner than this plan's, whose
 * pages would then be walked by too few requests while connections and
 * budget sit idle.
 */
static size_t plan_width(const dispatch_t *d)
{
    double page_s = (d->page_ms > 0 ? d->page_ms : ASSUMED_PAGE_MS) / 1000.0;
    double by_budget = ratelimit_rate(d->rl) / 60.0 * page_s;
    double room = (double)http_capacity(d->http, d->cfg->data_url);
    double want = by_budget < room ? by_budget : room;
    return want > 1 ? (size_t)want : 1;
}

void runs_start(dispatch_t *d, struct run **runs, size_t n)
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
    size_t nreq = coalesce_plan_wide(keys, n, d->cfg->page_limit, d->cfg->batch_symbols,
                                     plan_width(d), order, reqs);
    for (size_t i = 0; i < n; i++)
        sorted[i] = runs[order[i]];
    for (size_t i = 0; i < nreq; i++)
        start_group(d, &sorted[reqs[i].first], reqs[i].count, reqs[i].start_us, reqs[i].end_us);
    free(sorted);
    free(reqs);
    free(order);
    free(keys);
}

struct run *runs_new(dispatch_t *d, const struct job_run *j)
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
    LOG(LL_INFO, "run started", RUN_FIELDS(r), F_STR("from", from), F_STR("to", to),
        F_STR("feed", j->feed));
    return r;
}
