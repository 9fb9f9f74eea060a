/*
 * corpactions: the corporate-action sync and the daemon's upkeep job. See
 * corpactions.h.
 *
 * The job's worker thread never logs itself (the log module's secret list
 * may change on the loop at a SIGHUP): its lines are copied into a list
 * that the loop writes out when the pass returns.
 */
#include "corpactions.h"

#include "bars.h"
#include "cli_verify.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CA_BODY_CAP ((size_t)32 << 20)
#define CA_MAX_PAGES 1000
#define CA_TYPES                                                                                   \
    "forward_split,reverse_split,unit_split,stock_dividend,cash_dividend,spin_off,name_change"

static int64_t num(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static void sync_failed(struct upkeep_ctx *ctx, const char *name, const char *err)
{
    const char *p[] = {name, err};
    char e2[256];
    PQclear(calendar_exec(ctx->conn, "SELECT backfilld_sync_failed($1, $2)", 2, p, e2, sizeof e2));
}

/* Logs what apply_corporate_actions did, one line per effect. */
static int apply_actions(struct upkeep_ctx *ctx, struct corpactions_report *rep, char *err,
                         size_t errlen)
{
    PGresult *r = calendar_exec(ctx->conn,
                                "SELECT action_id, ca_type, symbol, new_symbol, ex_date::text,"
                                "       process_date::text, job_def_id, def_symbol, timeframe,"
                                "       adjustment, effect, runs FROM apply_corporate_actions()",
                                0, NULL, err, errlen);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *effect = PQgetvalue(r, i, 10);
        if (strcmp(effect, "requeued") == 0) {
            rep->requeued_defs++;
            rep->requeued_runs += (int)num(PQgetvalue(r, i, 11));
            UPLOG(ctx, LL_NOTICE, "corporate action re-queues adjusted history",
                  F_STR("cause", PQgetvalue(r, i, 1)), F_STR("action_id", PQgetvalue(r, i, 0)),
                  F_STR("symbol", PQgetvalue(r, i, 2)), F_STR("ex_date", PQgetvalue(r, i, 4)),
                  F_STR("process_date", PQgetvalue(r, i, 5)),
                  F_I64("job_def_id", num(PQgetvalue(r, i, 6))),
                  F_STR("timeframe", PQgetvalue(r, i, 8)), F_STR("adjustment", PQgetvalue(r, i, 9)),
                  F_I64("runs", num(PQgetvalue(r, i, 11))));
        } else {
            rep->name_changes++;
            UPLOG(ctx, LL_WARN, "name change affects a definition", F_STR("cause", "name_change"),
                  F_STR("action_id", PQgetvalue(r, i, 0)), F_STR("old_symbol", PQgetvalue(r, i, 2)),
                  F_STR("new_symbol", PQgetvalue(r, i, 3)),
                  F_STR("process_date", PQgetvalue(r, i, 5)),
                  F_I64("job_def_id", num(PQgetvalue(r, i, 6))),
                  F_STR("symbol", PQgetvalue(r, i, 7)), F_STR("timeframe", PQgetvalue(r, i, 8)));
        }
    }
    PQclear(r);
    return 0;
}

int corpactions_sync(struct upkeep_ctx *ctx, int64_t window_days, struct corpactions_report *rep,
                     char *err, size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    int ret = -1;
    int64_t t0 = mono_ms();
    dynbuf_t body;
    dynbuf_init(&body, CA_BODY_CAP);
    char *token = NULL;
    char days[32], f[16] = "", t[16] = "";
    snprintf(days, sizeof days, "%lld", (long long)window_days);
    const char *wp[] = {days};
    /* Process dates are compared inclusively; tomorrow's end takes in a record
     * processed today on a host whose UTC date is behind Alpaca's. */
    PGresult *r =
        calendar_exec(ctx->conn, "SELECT (current_date - $1::int)::text, (current_date + 1)::text",
                      1, wp, err, errlen);
    if (!r)
        goto fail;
    snprintf(f, sizeof f, "%s", PQgetvalue(r, 0, 0));
    snprintf(t, sizeof t, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    for (;;) {
        if (rep->pages >= CA_MAX_PAGES) {
            snprintf(err, errlen, "corporate actions: more than %d pages", CA_MAX_PAGES);
            goto fail;
        }
        char url[4096];
        int n = snprintf(url, sizeof url,
                         "%s/v1/corporate-actions?types=" CA_TYPES
                         "&start=%s&end=%s&limit=1000&sort=asc",
                         ctx->cfg->data_url, f, t);
        if (token) {
            char *esc = curl_easy_escape(ctx->curl, token, 0);
            n += snprintf(url + n, sizeof url - (size_t)n, "&page_token=%s", esc ? esc : "");
            curl_free(esc);
        }
        long status = calendar_get(ctx, url, "APCA_API_DATA_URL", &body, err, errlen);
        if (status < 0)
            goto fail;
        if (status != 200) {
            char msg[300];
            if (!bars_error_message(body.data ? body.data : "", body.len, msg, sizeof msg))
                snprintf(msg, sizeof msg, "not an Alpaca answer");
            snprintf(err, errlen, "corporate actions from %s: HTTP %ld: %s", ctx->cfg->data_url,
                     status, msg);
            goto fail;
        }
        if (dynbuf_append(&body, "", 1) < 0) {
            snprintf(err, errlen, "corporate actions: a page over %zu MB", CA_BODY_CAP >> 20);
            goto fail;
        }
        rep->pages++;
        const char *lp[] = {body.data};
        char lerr[512];
        r = calendar_exec(ctx->conn,
                          "SELECT records, added, $1::jsonb->>'next_page_token'"
                          "  FROM corporate_actions_load($1::jsonb)",
                          1, lp, lerr, sizeof lerr);
        if (!r) {
            snprintf(err, errlen, "corporate actions from %s: %s", ctx->cfg->data_url, lerr);
            goto fail;
        }
        rep->records += (int)num(PQgetvalue(r, 0, 0));
        rep->added += (int)num(PQgetvalue(r, 0, 1));
        char *next = PQgetisnull(r, 0, 2) ? NULL : xstrdup(PQgetvalue(r, 0, 2));
        PQclear(r);
        if (next && !*next) {
            free(next);
            next = NULL;
        }
        if (next && token && strcmp(next, token) == 0) {
            free(next);
            snprintf(err, errlen, "corporate actions: the next_page_token repeats");
            goto fail;
        }
        free(token);
        token = next;
        if (!token)
            break;
    }
    if (apply_actions(ctx, rep, err, errlen) < 0)
        goto fail;
    char pr[3][16];
    snprintf(pr[0], sizeof pr[0], "%d", rep->records);
    snprintf(pr[1], sizeof pr[1], "%d", rep->added);
    snprintf(pr[2], sizeof pr[2], "%d", rep->pages);
    const char *sp[] = {f, t, pr[0], pr[1], pr[2]};
    r = calendar_exec(
        ctx->conn, "SELECT corporate_actions_synced($1::date, $2::date, $3::int, $4::int, $5::int)",
        5, sp, err, errlen);
    if (!r)
        goto fail;
    PQclear(r);
    UPLOG(ctx, LL_INFO, "corporate actions synced", F_STR("from", f), F_STR("to", t),
          F_I64("pages", rep->pages), F_I64("records", rep->records), F_I64("added", rep->added),
          F_I64("requeued_definitions", rep->requeued_defs),
          F_I64("requeued_runs", rep->requeued_runs), F_I64("name_changes", rep->name_changes),
          F_I64("ms", mono_ms() - t0));
    ret = 0;
    goto out;
fail:
    UPLOG(ctx, LL_WARN, "corporate actions sync failed", F_STR("error", err), F_STR("from", f),
          F_STR("to", t), F_I64("pages", rep->pages));
    sync_failed(ctx, "corporate_actions", err);
out:
    free(token);
    dynbuf_free(&body);
    return ret;
}

/* --- the daemon's upkeep job ---------------------------------------------------- */

#define LOG_MAX_FIELDS 16

struct deferred_line {
    int level;
    const char *msg; /* the event names are literals */
    size_t nf;
    struct log_field f[LOG_MAX_FIELDS + 1];
};

struct corpactions_daemon {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_work_t work;
    const struct config *cfg;
    atomic_bool stop;
    bool busy;         /* a pass is on the worker thread */
    bool closing;      /* close asked: free once both are done */
    bool timer_closed; /* the timer's close callback ran */
    /* The worker thread's own; touched only there while busy. */
    PGconn *conn;
    CURL *curl;
    struct deferred_line *lines;
    size_t nlines, caplines;
    /* One pass's results, read by the loop after it. */
    int rc;
    bool ran; /* got the lock and found something due */
    struct corpactions_report rep;
    bool rep_ok;
    struct verify_totals vt;
    bool vt_ok;
    uint64_t requests, waited_ms;
    /* Metrics (loop thread). */
    uint64_t m_passes, m_failures, m_requests, m_ca_records, m_ca_added, m_requeued_runs,
        m_name_changes, m_ledger_queued;
    double m_last_ok, m_last_ca_ok, m_last_verify_ok;
    struct verify_totals m_vt;
    bool m_vt_set;
};

/* The worker's log hook: copies the line (strings included) for the loop. */
static void defer_log(void *arg, int level, const char *msg, const struct log_field *fields)
{
    corpactions_daemon_t *u = arg;
    if (level < log_min_level)
        return;
    if (u->nlines == u->caplines) {
        u->caplines = u->caplines ? u->caplines * 2 : 16;
        u->lines = xrealloc(u->lines, u->caplines * sizeof *u->lines);
    }
    struct deferred_line *l = &u->lines[u->nlines++];
    l->level = level;
    l->msg = msg;
    l->nf = 0;
    for (const struct log_field *f = fields; f->type != LF_END && l->nf < LOG_MAX_FIELDS; f++) {
        l->f[l->nf] = *f;
        if (f->type == LF_STR && f->s)
            l->f[l->nf].s = xstrdup(f->s);
        l->nf++;
    }
    l->f[l->nf] = (struct log_field){.type = LF_END};
}

static void flush_logs(corpactions_daemon_t *u)
{
    for (size_t i = 0; i < u->nlines; i++) {
        struct deferred_line *l = &u->lines[i];
        if (l->level >= log_min_level)
            log_write(l->level, l->msg, l->f);
        for (size_t k = 0; k < l->nf; k++)
            if (l->f[k].type == LF_STR)
                free((char *)l->f[k].s);
    }
    u->nlines = 0;
}

static void maybe_free(corpactions_daemon_t *u)
{
    if (!u->closing || u->busy || !u->timer_closed)
        return;
    flush_logs(u);
    free(u->lines);
    if (u->conn)
        PQfinish(u->conn);
    if (u->curl)
        curl_easy_cleanup(u->curl);
    free(u);
}

/* Whether the job called name last succeeded longer than the interval ago. */
static bool due(struct upkeep_ctx *ctx, const char *name, int64_t interval_ms)
{
    char ms[32], err[256];
    snprintf(ms, sizeof ms, "%lld", (long long)interval_ms);
    const char *p[] = {name, ms};
    PGresult *r = calendar_exec(
        ctx->conn,
        "SELECT coalesce((SELECT last_ok < now() - make_interval(secs => $2::float8 / 1000 - 0.5)"
        "                   FROM backfilld_sync_state WHERE name = $1 AND last_ok IS NOT NULL), "
        "true)",
        2, p, err, sizeof err);
    if (!r)
        return false;
    bool d = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return d;
}

static bool ensure_conn(corpactions_daemon_t *u, struct upkeep_ctx *ctx)
{
    if (u->conn && PQstatus(u->conn) == CONNECTION_OK)
        return true;
    if (u->conn)
        PQfinish(u->conn);
    const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", NULL};
    const char *vals[] = {u->cfg->database_url, "backfilld-upkeep", "15", NULL};
    u->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(u->conn) != CONNECTION_OK) {
        char m[1024];
        log_scrub(PQerrorMessage(u->conn), m, sizeof m);
        UPLOG(ctx, LL_WARN, "upkeep cannot connect to the database",
              F_STR("error", m[0] ? m : "unknown"));
        PQfinish(u->conn);
        u->conn = NULL;
        return false;
    }
    PQclear(PQexec(u->conn, "SET TimeZone = 'UTC'"));
    PQclear(PQexec(u->conn, "SET application_name = 'backfilld-upkeep'"));
    return true;
}

static void work_cb(uv_work_t *w)
{
    corpactions_daemon_t *u = w->data;
    const struct config *c = u->cfg;
    struct upkeep_ctx ctx = {
        .cfg = c, .stop = &u->stop, .log = defer_log, .log_arg = u, .low_priority = true};
    u->rc = 0;
    u->ran = false;
    u->rep_ok = u->vt_ok = false;
    if (!u->curl)
        u->curl = curl_easy_init();
    if (!u->curl || !ensure_conn(u, &ctx)) {
        u->rc = -1;
        return;
    }
    ctx.conn = u->conn;
    ctx.curl = u->curl;
    char err[512];
    PGresult *r =
        calendar_exec(u->conn, "SELECT pg_try_advisory_lock(hashtext('backfilld.upkeep'))", 0, NULL,
                      err, sizeof err);
    if (!r) {
        u->rc = -1;
        UPLOG(&ctx, LL_WARN, "upkeep pass failed", F_STR("error", err));
        return;
    }
    bool locked = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!locked)
        return; /* another host is at it */
    int64_t interval = c->upkeep_interval_ms;
    /* The calendar: read again once a day, or when the definitions reach past it. Without
     * it the ledger has no sessions to look at: that pass waits for the next look. */
    bool have_calendar = calendar_sync(&ctx, NULL, NULL, 86400, err, sizeof err) >= 0;
    if (!have_calendar)
        u->rc = -1;
    if (!atomic_load(&u->stop) && due(&ctx, "corporate_actions", interval)) {
        u->ran = true;
        if (corpactions_sync(&ctx, c->corpactions_window_days, &u->rep, err, sizeof err) < 0)
            u->rc = -1;
        else
            u->rep_ok = true;
    }
    if (!atomic_load(&u->stop) && have_calendar && c->verify_sessions > 0 &&
        due(&ctx, "ledger_pass", interval)) {
        u->ran = true;
        struct verify_opts o = {.last_sessions = c->verify_sessions,
                                .check = true,
                                .refetch = true,
                                .source = "daemon"};
        int64_t t0 = mono_ms();
        if (verify_pass(&ctx, &o, &u->vt, NULL, err, sizeof err) < 0) {
            u->rc = -1;
            UPLOG(&ctx, LL_WARN, "ledger pass failed", F_STR("error", err));
            sync_failed(&ctx, "ledger_pass", err);
        } else {
            u->vt_ok = true;
            char detail[256];
            snprintf(
                detail, sizeof detail, "{\"holes\": %lld, \"queued\": %lld, \"checked\": %lld}",
                (long long)u->vt.cls[VC_HOLE], (long long)u->vt.queued, (long long)u->vt.checked);
            const char *p[] = {"ledger_pass", detail};
            PQclear(calendar_exec(u->conn, "SELECT backfilld_sync_ok($1, NULL, NULL, $2::jsonb)", 2,
                                  p, err, sizeof err));
            UPLOG(&ctx, LL_INFO, "ledger pass", F_I64("sessions", c->verify_sessions),
                  F_I64("series", u->vt.series), F_I64("days", u->vt.days),
                  F_I64("checked", u->vt.checked), F_I64("holes", u->vt.cls[VC_HOLE]),
                  F_I64("no_data", u->vt.cls[VC_NO_DATA]),
                  F_I64("not_fetched", u->vt.cls[VC_NOT_FETCHED]), F_I64("queued", u->vt.queued),
                  F_I64("requests", u->vt.requests), F_I64("ms", mono_ms() - t0));
        }
    }
    PQclear(calendar_exec(u->conn, "SELECT pg_advisory_unlock(hashtext('backfilld.upkeep'))", 0,
                          NULL, err, sizeof err));
    u->requests = ctx.requests;
    u->waited_ms = ctx.waited_ms;
}

static void after_work_cb(uv_work_t *w, int status)
{
    corpactions_daemon_t *u = w->data;
    u->busy = false;
    flush_logs(u);
    double now = (double)wall_us() / 1e6;
    u->m_passes++;
    u->m_requests += u->requests;
    if (u->rc < 0)
        u->m_failures++;
    else
        u->m_last_ok = now;
    if (u->rep_ok) {
        u->m_last_ca_ok = now;
        u->m_ca_records += (uint64_t)u->rep.records;
        u->m_ca_added += (uint64_t)u->rep.added;
        u->m_requeued_runs += (uint64_t)u->rep.requeued_runs;
        u->m_name_changes += (uint64_t)u->rep.name_changes;
    }
    if (u->vt_ok) {
        u->m_last_verify_ok = now;
        u->m_ledger_queued += (uint64_t)u->vt.queued;
        u->m_vt = u->vt;
        u->m_vt_set = true;
    }
    maybe_free(u);
}

static void on_tick(uv_timer_t *t)
{
    corpactions_daemon_t *u = t->data;
    if (u->busy || u->closing)
        return;
    u->busy = true;
    u->work.data = u;
    if (uv_queue_work(u->loop, &u->work, work_cb, after_work_cb) != 0)
        u->busy = false;
}

static void on_timer_closed(uv_handle_t *h)
{
    corpactions_daemon_t *u = h->data;
    u->timer_closed = true;
    maybe_free(u);
}

corpactions_daemon_t *corpactions_daemon_new(uv_loop_t *loop, const struct config *cfg)
{
    if (cfg->upkeep_interval_ms <= 0)
        return NULL;
    corpactions_daemon_t *u = xcalloc(1, sizeof *u);
    u->loop = loop;
    u->cfg = cfg;
    atomic_init(&u->stop, false);
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    /* The first look a second after the start (the database has answered by
     * then, or the pass says why not), then every interval, but at least every
     * five minutes: each job runs only when its last success is an interval old
     * (due), so a failed sync is tried again within minutes, not a day later. */
    uint64_t every = (uint64_t)cfg->upkeep_interval_ms;
    if (every > 300000)
        every = 300000;
    uv_timer_start(&u->timer, on_tick, 1000, every < 1000 ? 1000 : every);
    metrics_set_extra(corpactions_daemon_metrics, u);
    LOG(LL_INFO, "upkeep started", F_I64("interval_ms", cfg->upkeep_interval_ms),
        F_I64("corpactions_window_days", cfg->corpactions_window_days),
        F_I64("verify_sessions", cfg->verify_sessions));
    return u;
}

void corpactions_daemon_close(corpactions_daemon_t *u)
{
    if (!u || u->closing)
        return;
    metrics_set_extra(NULL, NULL);
    u->closing = true;
    atomic_store(&u->stop, true);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_timer_closed);
}

void corpactions_daemon_metrics(void *arg, dynbuf_t *out)
{
    const corpactions_daemon_t *u = arg;
    int rc = 0;
    rc |= metrics_counter(out, "backfilld_upkeep_passes_total",
                          "upkeep passes run (calendar, corporate actions, ledger)",
                          (double)u->m_passes);
    rc |= metrics_counter(out, "backfilld_upkeep_failures_total",
                          "upkeep passes in which a sync failed (see the log's cause)",
                          (double)u->m_failures);
    rc |= metrics_counter(out, "backfilld_upkeep_requests_total",
                          "requests the upkeep jobs sent (calendar, corporate actions, re-checks)",
                          (double)u->m_requests);
    rc |= metrics_counter(out, "backfilld_corporate_actions_records_total",
                          "corporate-action records read (trailing window re-reads included)",
                          (double)u->m_ca_records);
    rc |=
        metrics_counter(out, "backfilld_corporate_actions_new_total",
                        "corporate-action records seen for the first time", (double)u->m_ca_added);
    rc |= metrics_counter(out, "backfilld_corporate_actions_requeued_runs_total",
                          "runs queued again because an action changed adjusted history",
                          (double)u->m_requeued_runs);
    rc |=
        metrics_counter(out, "backfilld_corporate_actions_name_changes_total",
                        "definitions a name change was found to affect", (double)u->m_name_changes);
    rc |= metrics_counter(out, "backfilld_ledger_requeued_runs_total",
                          "runs the ledger's daily pass queued to repair holes",
                          (double)u->m_ledger_queued);
    rc |= metrics_gauge(out, "backfilld_corporate_actions_last_success_seconds",
                        "Unix time of the last successful corporate-action sync (0: none yet)",
                        u->m_last_ca_ok);
    rc |= metrics_gauge(out, "backfilld_ledger_last_pass_seconds",
                        "Unix time of the last successful ledger pass (0: none yet)",
                        u->m_last_verify_ok);
    if (u->m_vt_set) {
        const char *names[VC_N];
        double counts[VC_N];
        for (int i = 0; i < VC_N; i++) {
            names[i] = verify_class_names[i];
            counts[i] = (double)u->m_vt.cls[i];
        }
        rc |= metrics_labeled(out, "backfilld_ledger_days", "gauge",
                              "series-days by class in the last ledger pass (last sessions)",
                              "class", names, counts, VC_N);
    }
    (void)rc; /* a full buffer cuts the exposition short, as for the other families */
}
