/*
 * calendar: the trading calendar and the upkeep jobs' shared plumbing. See
 * calendar.h. The calendar is read whole for the range that is needed and
 * replaced in one statement (calendar_load), so a holiday Alpaca adds later
 * is taken out of the ledger at the next daily read.
 */
#include "calendar.h"

#include "bars.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAL_BODY_CAP ((size_t)64 << 20) /* 1970-2029 is ~15,000 days, ~2 MB */

void calendar_log(struct upkeep_ctx *ctx, int level, const char *msg,
                  const struct log_field *fields)
{
    if (ctx->log)
        ctx->log(ctx->log_arg, level, msg, fields);
    else if (level >= log_min_level)
        log_write(level, msg, fields);
}

PGresult *calendar_exec(PGconn *conn, const char *sql, int n, const char *const *params, char *err,
                        size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char m[1024];
        log_scrub(PQresultErrorMessage(r), m, sizeof m);
        snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m);
        PQclear(r);
        return NULL;
    }
    return r;
}

static size_t body_cb(char *p, size_t s, size_t n, void *u)
{
    return dynbuf_append(u, p, s * n) < 0 ? 0 : s * n;
}

static int progress_cb(void *u, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct upkeep_ctx *ctx = u;
    return ctx->stop && atomic_load(ctx->stop) ? 1 : 0;
}

static bool stopping(const struct upkeep_ctx *ctx)
{
    return ctx->stop && atomic_load(ctx->stop);
}

/* Sleeps ms in slices, so a stop is noticed within 100 ms. False when stopped. */
static bool nap(struct upkeep_ctx *ctx, int64_t ms)
{
    while (ms > 0 && !stopping(ctx)) {
        int64_t step = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_sec = step / 1000, .tv_nsec = (step % 1000) * 1000000};
        nanosleep(&ts, NULL);
        ms -= step;
    }
    return !stopping(ctx);
}

/* One token of the budget: 0, or -1 with err (stopped, or the query failed). */
static int take_token(struct upkeep_ctx *ctx, char *err, size_t errlen)
{
    const struct config *c = ctx->cfg;
    if (!c->rate_limit_name || !*c->rate_limit_name) {
        /* No shared budget: pace at the configured rate on our own. */
        int64_t ms = (int64_t)(60000.0 / c->rate_limit);
        ctx->waited_ms += (uint64_t)ms;
        if (!nap(ctx, ms)) {
            snprintf(err, errlen, "stopped");
            return -1;
        }
        return 0;
    }
    char rate[64];
    snprintf(rate, sizeof rate, "%.17g", c->rate_limit);
    const char *p[] = {c->rate_limit_name, rate};
    for (;;) {
        if (stopping(ctx)) {
            snprintf(err, errlen, "stopped");
            return -1;
        }
        PGresult *r = calendar_exec(
            ctx->conn, "SELECT granted, wait_ms FROM take_rate_tokens($1, 1, $2::float8)", 2, p,
            err, errlen);
        if (!r)
            return -1;
        int granted = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
        int64_t wait = (int)strtol(PQgetvalue(r, 0, 1), NULL, 10);
        PQclear(r);
        if (granted >= 1)
            return 0;
        /* Low priority: ask again only after twice the wait, so the bar fetchers
         * (which ask as soon as they are told) get the tokens that come first. */
        int64_t ms = (wait > 0 ? wait : 50) * (ctx->low_priority ? 2 : 1);
        if (ms > 60000)
            ms = 60000;
        ctx->waited_ms += (uint64_t)ms;
        if (!nap(ctx, ms)) {
            snprintf(err, errlen, "stopped");
            return -1;
        }
    }
}

long calendar_get(struct upkeep_ctx *ctx, const char *url, const char *host, dynbuf_t *body,
                  char *err, size_t errlen)
{
    const struct config *c = ctx->cfg;
    if (take_token(ctx, err, errlen) < 0)
        return -1;
    dynbuf_reset(body);
    CURL *e = ctx->curl;
    curl_easy_reset(e);
    char key[600], secret[600], cerr[CURL_ERROR_SIZE] = "";
    snprintf(key, sizeof key, "APCA-API-KEY-ID: %s", c->api_key);
    snprintf(secret, sizeof secret, "APCA-API-SECRET-KEY: %s", c->api_secret);
    struct curl_slist *h = curl_slist_append(NULL, key);
    h = curl_slist_append(h, secret);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->http_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, ctx);
    if (c->ca_file && *c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    CURLcode cc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    memset(key, 0, sizeof key);
    memset(secret, 0, sizeof secret);
    ctx->requests++;
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(err, errlen, "stopped");
        return -1;
    }
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "cannot reach %s (%s): %s", host, url,
                 cerr[0] ? cerr : curl_easy_strerror(cc));
        return -1;
    }
    return status;
}

/* "HTTP 500: message" for a status that is not 200, into err. */
static void http_error(const dynbuf_t *body, long status, const char *what, char *err,
                       size_t errlen)
{
    char msg[300];
    if (!bars_error_message(body->data ? body->data : "", body->len, msg, sizeof msg))
        snprintf(msg, sizeof msg, "not an Alpaca answer");
    snprintf(err, errlen, "%s: HTTP %ld: %s", what, status, msg);
}

int calendar_sync(struct upkeep_ctx *ctx, const char *from, const char *to, int64_t max_age_s,
                  char *err, size_t errlen)
{
    int ret = -1;
    dynbuf_t body;
    dynbuf_init(&body, CAL_BODY_CAP);
    char age[32];
    snprintf(age, sizeof age, "%lld", (long long)max_age_s);
    const char *p[] = {from, to, age};
    /* The range needed: the definitions' earliest day (or a year back) to a year
     * ahead, and whether what is stored covers it and is fresh enough. */
    PGresult *r = calendar_exec(
        ctx->conn,
        "WITH w AS (SELECT least(coalesce($1::date, current_date - 366), current_date - 366,"
        "                        (SELECT min((backfill_from AT TIME ZONE 'America/New_York')::date)"
        "                           FROM job_definitions)) AS f,"
        "                  greatest(coalesce($2::date, current_date + 366), current_date + 366) AS "
        "t)"
        " SELECT w.f::text, w.t::text,"
        "        coalesce(s.last_ok IS NULL OR s.window_from > coalesce($1::date, w.f)"
        "                 OR s.window_to < coalesce($2::date, current_date)"
        "                 OR s.last_ok < now() - make_interval(secs => $3::float8), true)"
        "   FROM w LEFT JOIN backfilld_sync_state s ON s.name = 'calendar'",
        3, p, err, errlen);
    if (!r)
        goto out;
    char f[16], t[16];
    snprintf(f, sizeof f, "%s", PQgetvalue(r, 0, 0));
    snprintf(t, sizeof t, "%s", PQgetvalue(r, 0, 1));
    bool need = PQgetvalue(r, 0, 2)[0] == 't';
    PQclear(r);
    if (!need) {
        ret = 0;
        goto out;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s/v2/calendar?start=%s&end=%s", ctx->cfg->base_url, f, t);
    int64_t t0 = mono_ms();
    long status = calendar_get(ctx, url, "APCA_API_BASE_URL", &body, err, errlen);
    if (status < 0)
        goto fail;
    if (status != 200) {
        http_error(&body, status, "the trading calendar", err, errlen);
        goto fail;
    }
    if (dynbuf_append(&body, "", 1) < 0) {
        snprintf(err, errlen, "the trading calendar is over %zu MB", CAL_BODY_CAP >> 20);
        goto fail;
    }
    const char *lp[] = {f, t, body.data};
    char lerr[512];
    r = calendar_exec(ctx->conn, "SELECT calendar_load($1::date, $2::date, $3::jsonb)", 3, lp, lerr,
                      sizeof lerr);
    if (!r) {
        snprintf(err, errlen, "the trading calendar from %s: %s", ctx->cfg->base_url, lerr);
        goto fail;
    }
    ret = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    UPLOG(ctx, LL_INFO, "trading calendar read", F_STR("from", f), F_STR("to", t),
          F_I64("days", ret), F_I64("ms", mono_ms() - t0));
    goto out;
fail:
    UPLOG(ctx, LL_WARN, "trading calendar read failed", F_STR("error", err));
    {
        const char *fp[] = {"calendar", err};
        char e2[256];
        PQclear(
            calendar_exec(ctx->conn, "SELECT backfilld_sync_failed($1, $2)", 2, fp, e2, sizeof e2));
    }
    ret = -1;
out:
    dynbuf_free(&body);
    return ret;
}
