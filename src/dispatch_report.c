/*
 * dispatch_report: what the dispatcher tells the world. See dispatch_int.h.
 *
 * The counters of this daemon, the progress line (with the whole fleet's
 * queue depth and an ETA from the completions of the last minute), the
 * sd_notify status line, /metrics as one table, and /healthz.
 */
#include "dispatch_int.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define ETA_MIN_RUNS 5 /* completions in the last minute before an ETA is given */

static const double upsert_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double http_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

void report_init(dispatch_t *d)
{
    metrics_hist_init(&d->upsert_hist, upsert_bounds, ARRAY_SIZE(upsert_bounds));
    metrics_hist_init(&d->http_hist, http_bounds, ARRAY_SIZE(http_bounds));
}

void report_free(dispatch_t *d)
{
    metrics_hist_free(&d->upsert_hist);
    metrics_hist_free(&d->http_hist);
}

void report_on_http_done(void *arg, long status, double ms)
{
    dispatch_t *d = arg;
    d->http_status[status >= 100 && status < 600 ? status : 0]++;
    if (status == 200)
        d->page_ms = d->page_ms > 0 ? 0.8 * d->page_ms + 0.2 * ms : ms;
    metrics_hist_observe(&d->http_hist, ms / 1000.0);
}

void report_upsert_done(dispatch_t *d, double ms)
{
    metrics_hist_observe(&d->upsert_hist, ms / 1000.0);
}

/* --- the progress line ------------------------------------------------------------ */

static void on_stats(void *arg, const struct jobs_status *st, const struct jobs_queue_stats *s)
{
    dispatch_t *d = arg;
    periodic_done(&d->stats);
    if (st->status != DB_OK)
        return;
    d->m.queue_ready = s->ready;
    d->m.queue_later = s->later;
    d->m.queue_running = s->running;
    d->m.oldest_queued_s = s->oldest_queued_s;
    int64_t now = mono_ms();
    int64_t stats_ms = now - d->stats_sent_ms;
    double secs = d->prev_progress_ms ? (double)(now - d->prev_progress_ms) / 1000.0 : 0;
    double bars_s = secs > 0 ? (double)(d->m.bars - d->prev_bars) / secs : 0;
    double req_s = secs > 0 ? (double)(d->m.requests - d->prev_requests) / secs : 0;
    /* The whole fleet's rate over the last minute, or over the part of it since the
     * first completion in it (at least 5 s), so a fresh start is not read as slow. */
    int64_t span = s->completions_span_s < 5    ? 5
                   : s->completions_span_s > 60 ? 60
                                                : s->completions_span_s;
    double runs_s = (double)s->succeeded_last_min / (double)span;
    d->prev_bars = d->m.bars;
    d->prev_requests = d->m.requests;
    d->prev_progress_ms = now;
    struct ratelimit_stats rs;
    ratelimit_stats(d->rl, &rs);
    /* Every few seconds while there is work; once a minute when idle. */
    int64_t left = s->ready + s->later + s->running;
    bool idle = left == 0 && d->nruns == 0;
    if (idle && now - d->last_idle_progress_ms < 60000)
        return;
    d->last_idle_progress_ms = idle ? now : 0;
    /* ETA from the whole fleet's recent completion rate (succeeded counts all hosts);
     * -1 (unknown) until a few runs have finished to measure it by. */
    int64_t eta = s->succeeded_last_min >= ETA_MIN_RUNS ? (int64_t)((double)left / runs_s) : -1;
    LOG(LL_INFO, "progress", F_I64("in_flight", d->nruns), F_I64("queued", s->ready),
        F_I64("queued_later", s->later), F_I64("running", s->running),
        F_I64("succeeded", d->m.runs_succeeded), F_I64("failed", d->m.runs_failed),
        F_I64("succeeded_last_min_all_hosts", s->succeeded_last_min),
        F_I64("failed_last_min_all_hosts", s->failed_last_min), F_I64("bars", d->m.bars),
        F_DBL("bars_per_s", bars_s), F_DBL("requests_per_s", req_s),
        F_I64("requests", d->m.requests), F_I64("rate_limit_waits", rs.waited),
        F_I64("rate_limited", d->m.rate_limited), F_I64("page_retries", d->m.page_retries),
        F_I64("oldest_queued_s", s->oldest_queued_s), F_DBL("runs_per_s", runs_s),
        F_I64("eta_s", eta), F_I64("stats_ms", stats_ms));
    if (d->hooks.status) {
        char line[256];
        snprintf(line, sizeof line, "%zu in flight, %lld queued, %llu succeeded, %llu failed here",
                 d->nruns, (long long)s->ready, (unsigned long long)d->m.runs_succeeded,
                 (unsigned long long)d->m.runs_failed);
        d->hooks.status(d->hooks.arg, line);
    }
}

void report_progress(dispatch_t *d)
{
    d->stats_sent_ms = mono_ms();
    jobs_queue_stats(d->db, on_stats, d);
}

/* --- /metrics ---------------------------------------------------------------------- */

/* The plain counters and gauges, one row each (the labelled ones follow in render). */
static double v_rate_waits(const dispatch_t *d)
{
    struct ratelimit_stats rs;
    ratelimit_stats(d->rl, &rs);
    return (double)rs.waited;
}
static double v_rate_wait_s(const dispatch_t *d)
{
    struct ratelimit_stats rs;
    ratelimit_stats(d->rl, &rs);
    return (double)rs.wait_ms / 1000.0;
}
static double v_in_flight(const dispatch_t *d)
{
    return (double)d->nruns;
}
static double v_backlog(const dispatch_t *d)
{
    return (double)store_backlog(d->store);
}
static double v_oldest(const dispatch_t *d)
{
    return (double)d->m.oldest_queued_s;
}
static double v_db_up(const dispatch_t *d)
{
    return db_conn_is_up(d->db) ? 1 : 0;
}
static double v_creds_ok(const dispatch_t *d)
{
    return mono_ms() >= d->auth_pause_until ? 1 : 0;
}
static double v_rate(const dispatch_t *d)
{
    return ratelimit_rate(d->rl);
}
static double v_healthy(const dispatch_t *d)
{
    char why[128];
    return report_health((void *)d, why, sizeof why) ? 1 : 0;
}

#define COUNTER(field) .off = offsetof(struct dispatch_metrics, field)

static const struct metric_row {
    const char *name;
    bool gauge;
    const char *help;
    size_t off;                          /* a uint64_t in struct dispatch_metrics, or */
    double (*value)(const dispatch_t *); /* a value computed now */
} metric_rows[] = {
    {"backfilld_runs_claimed_total", false, "Runs claimed by this daemon.", COUNTER(runs_claimed)},
    {"backfilld_runs_succeeded_total", false, "Runs completed (succeeded) by this daemon.",
     COUNTER(runs_succeeded)},
    {"backfilld_runs_failed_total", false, "Runs that failed for good on this daemon.",
     COUNTER(runs_failed)},
    {"backfilld_runs_retried_total", false, "Failed attempts queued again with a backoff.",
     COUNTER(runs_retried)},
    {"backfilld_runs_rescued_total", false,
     "Runs of dead workers put back by this daemon's lease rescue.", COUNTER(rescued)},
    {"backfilld_runs_pruned_total", false,
     "Finished runs past the retention deleted by this daemon (coverage is kept).",
     COUNTER(pruned)},
    {"backfilld_runs_released_total", false, "Runs given back without spending an attempt.",
     COUNTER(runs_released)},
    {"backfilld_runs_abandoned_total", false,
     "Runs dropped because they were cancelled or their lease was lost.", COUNTER(runs_abandoned)},
    {"backfilld_bars_written_total", false, "Bars committed to the bars table.", COUNTER(bars)},
    {"backfilld_pages_total", false, "Well-formed pages received from Alpaca.", COUNTER(pages)},
    {"backfilld_page_retries_total", false, "Pages retried after a 5xx, timeout or bad body.",
     COUNTER(page_retries)},
    {"backfilld_rate_limited_total", false, "HTTP 429 answers from Alpaca.", COUNTER(rate_limited)},
    {"backfilld_rate_limit_waits_total", false, "Requests that waited for a rate-limit token.",
     .value = v_rate_waits},
    {"backfilld_rate_limit_wait_seconds_total", false,
     "Time requests spent waiting for rate-limit tokens.", .value = v_rate_wait_s},
};

static const struct metric_row gauge_rows[] = {
    {"backfilld_runs_in_flight", true, "Runs this daemon holds now.", .value = v_in_flight},
    {"backfilld_write_backlog_bars", true, "Bars fetched and waiting to be written.",
     .value = v_backlog},
};

static const struct metric_row tail_rows[] = {
    {"backfilld_oldest_queued_run_age_seconds", true,
     "Age of the oldest queued run of an enabled definition.", .value = v_oldest},
    {"backfilld_db_up", true, "1 while the database session is connected.", .value = v_db_up},
    {"backfilld_alpaca_credentials_ok", true,
     "0 while Alpaca rejects the credentials or its TLS certificate.", .value = v_creds_ok},
    {"backfilld_rate_limit_per_minute", true, "The configured Alpaca request budget.",
     .value = v_rate},
    {"backfilld_healthy", true,
     "1 while /healthz answers 200 (ready, database up, Alpaca accepting us).", .value = v_healthy},
};

static int render_rows(const dispatch_t *d, dynbuf_t *out, const struct metric_row *rows, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const struct metric_row *m = &rows[i];
        double v =
            m->value ? m->value(d) : (double)*(const uint64_t *)((const char *)&d->m + m->off);
        rc |= m->gauge ? metrics_gauge(out, m->name, m->help, v)
                       : metrics_counter(out, m->name, m->help, v);
    }
    return rc;
}

/* Responses by status class; 429 on its own too; "error" = no response. */
static int render_http(const dispatch_t *d, dynbuf_t *out)
{
    static const char *classes[] = {"error", "1xx", "2xx", "3xx", "4xx", "5xx"};
    double by_class[6] = {0};
    for (int st = 0; st < 600; st++)
        by_class[st == 0 ? 0 : st / 100] += (double)d->http_status[st];
    const char *codes[8];
    double counts[8];
    size_t n = 0;
    for (int k = 0; k < 6; k++) {
        if (k == 1 || k == 3)
            continue;
        codes[n] = classes[k];
        counts[n++] = by_class[k];
    }
    codes[n] = "429";
    counts[n++] = (double)d->http_status[429];
    int rc = metrics_labeled(
        out, "backfilld_http_responses_total", "counter",
        "Alpaca HTTP responses by status class (429 also counted on its own; error = no response).",
        "code", codes, counts, n);
    rc |= metrics_histogram(out, "backfilld_http_request_duration_seconds",
                            "Alpaca request latency.", &d->http_hist);
    rc |=
        metrics_histogram(out, "backfilld_upsert_duration_seconds",
                          "Write transaction (COPY, upsert, completion) latency.", &d->upsert_hist);
    return rc;
}

void report_render_metrics(void *arg, dynbuf_t *out)
{
    dispatch_t *d = arg;
    int rc = render_rows(d, out, metric_rows, ARRAY_SIZE(metric_rows));
    rc |= render_http(d, out);
    rc |= render_rows(d, out, gauge_rows, ARRAY_SIZE(gauge_rows));
    const char *qs[] = {"queued_ready", "queued_waiting_retry", "running"};
    double qv[] = {(double)d->m.queue_ready, (double)d->m.queue_later, (double)d->m.queue_running};
    rc |= metrics_labeled(out, "backfilld_queue_runs", "gauge",
                          "Runs in the queue (all hosts), by status, as of the last progress tick.",
                          "status", qs, qv, 3);
    rc |= render_rows(d, out, tail_rows, ARRAY_SIZE(tail_rows));
    (void)rc; /* a cut-short exposition is still valid up to the cut */
}

bool report_health(void *arg, char *why, size_t whylen)
{
    dispatch_t *d = arg;
    if (!db_conn_is_up(d->db)) {
        snprintf(why, whylen, "database not connected");
        return false;
    }
    if (mono_ms() < d->auth_pause_until) {
        snprintf(why, whylen,
                 d->auth_pause_tls ? "Alpaca's TLS certificate was refused"
                                   : "Alpaca rejected the credentials");
        return false;
    }
    if (!d->ready_sent) {
        snprintf(why, whylen, "starting");
        return false;
    }
    /* Answered from the loop itself, so an answer also means the loop is alive. */
    return true;
}
