/*
 * cli_verify: `backfilld verify` and the ledger's pass. See cli_verify.h.
 *
 * The classes come from SQL (ledger_days): the database knows the calendar,
 * the coverage and the bars. What it cannot know is what Alpaca serves now,
 * so the days that fall short of their session (or are empty after the
 * series' first bar) are fetched again here, a multi-symbol request per
 * timeframe, feed and adjustment over the span of those days, through the
 * shared request budget; the bars of each asked-for day are counted and the
 * counts go to ledger_checks, and the ledger is read once more. A day whose
 * stored count is below what was served is a hole.
 */
#include "cli_verify.h"

#include "alpaca.h"
#include "bars.h"
#include "cli_int.h"
#include "log.h"
#include "timeframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const verify_class_names[VC_N] = {"complete", "no_data",    "not_fetched",
                                              "hole",     "not_listed", "short"};

#define PROBE_BODY_CAP ((size_t)256 << 20)
#define PROBE_MAX_PAGES 100000

/* ledger_days' columns as selected below. */
enum {
    COL_DEF,
    COL_SYMBOL,
    COL_TF,
    COL_FEED,
    COL_ADJ,
    COL_DAY,
    COL_DS,
    COL_DE,
    COL_ALLOWED,
    COL_STORED,
    COL_SERVED,
    COL_CLASS,
    COL_LISTED,
};

static const char ledger_sql[] =
    "SELECT job_def_id, symbol, timeframe, feed, adjustment, day::text,"
    "       (extract(epoch FROM day_start) * 1000000)::bigint,"
    "       (extract(epoch FROM day_end) * 1000000)::bigint, allowed, stored, served, class,"
    "       first_bar IS NOT NULL AND day_end > first_bar"
    "  FROM ledger_days($1::text[], $2, $3::date, $4::date)";

static int64_t num(const char *s)
{
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

static int class_of(const char *s)
{
    for (int i = 0; i < VC_N; i++)
        if (strcmp(s, verify_class_names[i]) == 0)
            return i;
    return VC_SHORT;
}

bool verify_wrong(const struct verify_totals *t)
{
    return t->cls[VC_HOLE] > 0 || t->cls[VC_NOT_FETCHED] > 0 || t->empty_series > 0;
}

/* --- the re-check ------------------------------------------------------------ */

/* One series-day to re-check; strings borrowed from the ledger's result. */
struct probe_item {
    const char *tf, *feed, *adj, *symbol, *day;
    int64_t ds, de; /* the day's New York midnights, µs */
    int served;
};

/* By series kind, then day, then symbol: one request serves a run of items. */
static int cmp_item(const void *a, const void *b)
{
    const struct probe_item *x = a, *y = b;
    int c = strcmp(x->tf, y->tf);
    if (!c)
        c = strcmp(x->feed, y->feed);
    if (!c)
        c = strcmp(x->adj, y->adj);
    if (!c)
        c = strcmp(x->day, y->day);
    return c ? c : strcmp(x->symbol, y->symbol);
}

static bool same_request(const struct probe_item *x, const struct probe_item *y)
{
    return !strcmp(x->tf, y->tf) && !strcmp(x->feed, y->feed) && !strcmp(x->adj, y->adj) &&
           !strcmp(x->day, y->day);
}

static int cmp_item_symbol(const void *key, const void *elem)
{
    return strcmp(key, ((const struct probe_item *)elem)->symbol);
}

/* Whether a ledger row is to be re-checked: a fetched day after the series' first bar with
 * fewer bars than the session allows (a hole only shows against what Alpaca serves now). */
static bool wants_check(const PGresult *r, int i)
{
    int cls = class_of(PQgetvalue(r, i, COL_CLASS));
    return PQgetvalue(r, i, COL_LISTED)[0] == 't' && cls != VC_NOT_FETCHED &&
           cls != VC_NOT_LISTED &&
           num(PQgetvalue(r, i, COL_STORED)) < num(PQgetvalue(r, i, COL_ALLOWED));
}

/* Fetches the day of items[0..n) (one kind, one day, sorted by symbol) for their symbols and
 * counts each symbol's bars. */
static int probe_batch(struct upkeep_ctx *ctx, struct probe_item *items, size_t n,
                       struct verify_totals *t, char *err, size_t errlen)
{
    const char **syms = xcalloc(n, sizeof *syms);
    for (size_t i = 0; i < n; i++)
        syms[i] = items[i].symbol;
    struct alpaca_query q = {.symbols = syms,
                             .nsymbols = n,
                             .timeframe = items[0].tf,
                             .feed = items[0].feed,
                             .adjustment = items[0].adj,
                             .start_us = items[0].ds,
                             .end_us = items[0].de};
    dynbuf_t body;
    dynbuf_init(&body, PROBE_BODY_CAP);
    char *token = NULL;
    int ret = -1;
    for (int page = 0;; page++) {
        if (page >= PROBE_MAX_PAGES) {
            snprintf(err, errlen, "re-check: more than %d pages", PROBE_MAX_PAGES);
            goto out;
        }
        char *url = alpaca_url(ctx->cfg->data_url, &q, ctx->cfg->page_limit, token);
        if (!url) {
            snprintf(err, errlen, "re-check: the request URL is too long");
            goto out;
        }
        long status = calendar_get(ctx, url, "APCA_API_DATA_URL", &body, err, errlen);
        free(url);
        t->requests++;
        if (status < 0)
            goto out;
        if (status != 200) {
            char msg[300];
            if (!bars_error_message(body.data ? body.data : "", body.len, msg, sizeof msg))
                snprintf(msg, sizeof msg, "not an Alpaca answer");
            snprintf(err, errlen, "re-check of %s %s %s %s: HTTP %ld: %s", items[0].day,
                     items[0].tf, items[0].feed, items[0].adj, status, msg);
            goto out;
        }
        bars_page_t pg;
        char perr[300];
        if (bars_parse_multi(body.data ? body.data : "", body.len, &pg, perr, sizeof perr) < 0) {
            snprintf(err, errlen, "re-check: malformed response: %s", perr);
            goto out;
        }
        for (size_t k = 0; k < pg.nseries; k++) {
            struct probe_item *it =
                bsearch(pg.series[k].symbol, items, n, sizeof *items, cmp_item_symbol);
            for (size_t b = 0; it && b < pg.series[k].n; b++)
                if (pg.series[k].bars[b].ts_us >= it->ds && pg.series[k].bars[b].ts_us < it->de)
                    it->served++;
        }
        char *next = pg.next_page_token ? xstrdup(pg.next_page_token) : NULL;
        bars_page_clear(&pg);
        if (next && token && strcmp(next, token) == 0) {
            free(next);
            snprintf(err, errlen, "re-check: the next_page_token repeats");
            goto out;
        }
        free(token);
        token = next;
        if (!token)
            break;
    }
    ret = 0;
out:
    free(token);
    dynbuf_free(&body);
    free(syms);
    return ret;
}

/* Appends s as a Postgres array element (quoted). 0 or -1. */
static int array_elem(dynbuf_t *b, const char *s, bool first)
{
    int rc = first ? 0 : dynbuf_append(b, ",", 1);
    rc |= dynbuf_append(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            rc |= dynbuf_append(b, "\\", 1);
        rc |= dynbuf_append(b, p, 1);
    }
    return rc | dynbuf_append(b, "\"", 1);
}

/* Re-checks the rows of r that want it (a request per kind, day and batch of symbols) and
 * records what was served in ledger_checks. */
static int recheck(struct upkeep_ctx *ctx, const PGresult *r, struct verify_totals *t, char *err,
                   size_t errlen)
{
    size_t n = 0;
    struct probe_item *items = xcalloc((size_t)PQntuples(r) + 1, sizeof *items);
    for (int i = 0; i < PQntuples(r); i++) {
        if (!wants_check(r, i))
            continue;
        items[n++] = (struct probe_item){.tf = PQgetvalue(r, i, COL_TF),
                                         .feed = PQgetvalue(r, i, COL_FEED),
                                         .adj = PQgetvalue(r, i, COL_ADJ),
                                         .symbol = PQgetvalue(r, i, COL_SYMBOL),
                                         .day = PQgetvalue(r, i, COL_DAY),
                                         .ds = num(PQgetvalue(r, i, COL_DS)),
                                         .de = num(PQgetvalue(r, i, COL_DE))};
    }
    qsort(items, n, sizeof *items, cmp_item);
    size_t batch = ctx->cfg->batch_symbols > 0 ? (size_t)ctx->cfg->batch_symbols : 100;
    int ret = -1;
    dynbuf_t a[6];
    for (int k = 0; k < 6; k++)
        dynbuf_init(&a[k], (size_t)1 << 30);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < batch && same_request(&items[i], &items[j]))
            j++;
        if (probe_batch(ctx, items + i, j - i, t, err, errlen) < 0)
            goto out;
        i = j;
    }
    int rc = 0;
    for (int k = 0; k < 6; k++)
        rc |= dynbuf_append(&a[k], "{", 1);
    for (size_t i = 0; i < n; i++) {
        char served[16];
        snprintf(served, sizeof served, "%d", items[i].served);
        rc |= array_elem(&a[0], items[i].symbol, i == 0);
        rc |= array_elem(&a[1], items[i].tf, i == 0);
        rc |= array_elem(&a[2], items[i].feed, i == 0);
        rc |= array_elem(&a[3], items[i].adj, i == 0);
        rc |= array_elem(&a[4], items[i].day, i == 0);
        rc |= array_elem(&a[5], served, i == 0);
    }
    for (int k = 0; k < 6; k++)
        rc |= dynbuf_append(&a[k], "}", 2);
    if (rc) {
        snprintf(err, errlen, "re-check: too many days at once");
        goto out;
    }
    t->checked += (int64_t)n;
    if (n > 0) {
        const char *p[] = {a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, a[5].data};
        PGresult *w = calendar_exec(ctx->conn,
                                    "SELECT ledger_record_checks($1::text[], $2::text[],"
                                    " $3::text[], $4::text[], $5::date[], $6::int[])",
                                    6, p, err, errlen);
        if (!w)
            goto out;
        PQclear(w);
    }
    ret = 0;
out:
    for (int k = 0; k < 6; k++)
        dynbuf_free(&a[k]);
    free(items);
    return ret;
}

/* --- the pass ------------------------------------------------------------------- */

/* Whether the series whose rows start at row i has fetched days and no bar at all. */
static bool series_empty(const PGresult *r, int i)
{
    const char *def = PQgetvalue(r, i, COL_DEF);
    for (; i < PQntuples(r) && strcmp(PQgetvalue(r, i, COL_DEF), def) == 0; i++)
        if (class_of(PQgetvalue(r, i, COL_CLASS)) != VC_NO_DATA ||
            PQgetvalue(r, i, COL_LISTED)[0] == 't' || num(PQgetvalue(r, i, COL_STORED)) > 0)
            return false;
    return true;
}

static void count_rows(const PGresult *r, struct verify_totals *t)
{
    int64_t checked = t->checked, requests = t->requests, queued = t->queued;
    memset(t, 0, sizeof *t);
    t->checked = checked;
    t->requests = requests;
    t->queued = queued;
    const char *prev = NULL;
    bool any_bar = false;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *def = PQgetvalue(r, i, COL_DEF);
        if (!prev || strcmp(prev, def) != 0) {
            if (prev && !any_bar)
                t->empty_series++;
            t->series++;
            prev = def;
            any_bar = false;
        }
        int cls = class_of(PQgetvalue(r, i, COL_CLASS));
        t->cls[cls]++;
        t->days++;
        /* A series counts as empty when it has fetched days and no bar at all. */
        if (cls != VC_NO_DATA || PQgetvalue(r, i, COL_LISTED)[0] == 't' ||
            num(PQgetvalue(r, i, COL_STORED)) > 0)
            any_bar = true;
    }
    if (prev && !any_bar)
        t->empty_series++;
}

int verify_pass(struct upkeep_ctx *ctx, const struct verify_opts *o, struct verify_totals *t,
                PGresult **rows, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (rows)
        *rows = NULL;
    PGresult *r = NULL;
    int ret = -1;
    char from[16] = "", to[16] = "";
    dynbuf_t syms;
    dynbuf_init(&syms, (size_t)64 << 20);
    if (o->from)
        snprintf(from, sizeof from, "%s", o->from);
    if (o->to)
        snprintf(to, sizeof to, "%s", o->to);
    if (calendar_sync(ctx, o->from, o->to, 86400, err, errlen) < 0)
        goto out;
    if (o->last_sessions > 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", (long long)o->last_sessions);
        const char *p[] = {n};
        r = calendar_exec(ctx->conn,
                          "SELECT min(day)::text, max(day)::text FROM (SELECT day FROM"
                          " trading_calendar WHERE backfilld_ny_day(day + 1) <= now()"
                          " ORDER BY day DESC LIMIT $1::int) x",
                          1, p, err, errlen);
        if (!r)
            goto out;
        snprintf(from, sizeof from, "%s", PQgetvalue(r, 0, 0));
        snprintf(to, sizeof to, "%s", PQgetvalue(r, 0, 1));
        PQclear(r);
        r = NULL;
        if (!*from) {
            snprintf(err, errlen, "the trading calendar has no session that has ended");
            goto out;
        }
    }
    if (o->symbols) {
        int rc = dynbuf_append(&syms, "{", 1);
        bool first = true;
        for (const char *s = o->symbols; *s;) {
            size_t len = strcspn(s, ",");
            char one[64];
            if (len > 0 && len < sizeof one) {
                memcpy(one, s, len);
                one[len] = '\0';
                rc |= array_elem(&syms, one, first);
                first = false;
            }
            s += len + (s[len] == ',');
        }
        rc |= dynbuf_append(&syms, "}", 2);
        if (rc) {
            snprintf(err, errlen, "--symbols: too many");
            goto out;
        }
    }
    const char *p[] = {o->symbols ? syms.data : NULL, o->timeframe, *from ? from : NULL,
                       *to ? to : NULL};
    r = calendar_exec(ctx->conn, ledger_sql, 4, p, err, errlen);
    if (!r)
        goto out;
    if (o->check) {
        bool any = false;
        for (int i = 0; i < PQntuples(r) && !any; i++)
            any = wants_check(r, i);
        if (any) {
            if (recheck(ctx, r, t, err, errlen) < 0)
                goto out;
            PQclear(r);
            r = calendar_exec(ctx->conn, ledger_sql, 4, p, err, errlen);
            if (!r)
                goto out;
        }
    }
    if (o->refetch) {
        dynbuf_t defs, days;
        dynbuf_init(&defs, (size_t)64 << 20);
        dynbuf_init(&days, (size_t)64 << 20);
        int rc = dynbuf_append(&defs, "{", 1) | dynbuf_append(&days, "{", 1);
        bool first = true;
        /* The holes, and every day of a series with no bar at all (suspicious: asked again
         * whole). A day that is empty after the first bar was re-checked just now and Alpaca
         * still has nothing for it: fetching it again would change nothing. */
        bool empty = false;
        for (int i = 0; i < PQntuples(r); i++) {
            int cls = class_of(PQgetvalue(r, i, COL_CLASS));
            if (i == 0 || strcmp(PQgetvalue(r, i, COL_DEF), PQgetvalue(r, i - 1, COL_DEF)) != 0)
                empty = series_empty(r, i);
            if (cls != VC_HOLE && !(cls == VC_NO_DATA && empty))
                continue;
            rc |= array_elem(&defs, PQgetvalue(r, i, COL_DEF), first);
            rc |= array_elem(&days, PQgetvalue(r, i, COL_DAY), first);
            first = false;
        }
        rc |= dynbuf_append(&defs, "}", 2) | dynbuf_append(&days, "}", 2);
        if (!rc && !first) {
            const char *rp[] = {defs.data, days.data};
            PGresult *q2 = calendar_exec(
                ctx->conn, "SELECT ledger_refetch($1::bigint[], $2::date[])", 2, rp, err, errlen);
            if (q2) {
                t->queued = num(PQgetvalue(q2, 0, 0));
                PQclear(q2);
            } else {
                rc = -1;
            }
        } else if (rc) {
            snprintf(err, errlen, "--refetch: too many days at once");
        }
        dynbuf_free(&defs);
        dynbuf_free(&days);
        if (rc)
            goto out;
    }
    count_rows(r, t);
    {
        char totals[1024], series[32], queued[32];
        int n = snprintf(totals, sizeof totals, "{");
        for (int k = 0; k < VC_N; k++)
            n += snprintf(totals + n, sizeof totals - (size_t)n, "\"%s\": %lld, ",
                          verify_class_names[k], (long long)t->cls[k]);
        snprintf(totals + n, sizeof totals - (size_t)n,
                 "\"days\": %lld, \"empty_series\": %lld, \"checked\": %lld}", (long long)t->days,
                 (long long)t->empty_series, (long long)t->checked);
        snprintf(series, sizeof series, "%lld", (long long)t->series);
        snprintf(queued, sizeof queued, "%lld", (long long)t->queued);
        const char *sp[] = {o->source ? o->source : "verify",
                            *from ? from : NULL,
                            *to ? to : NULL,
                            series,
                            totals,
                            queued};
        PGresult *s = calendar_exec(ctx->conn,
                                    "SELECT ledger_save_summary($1, $2::date, $3::date, $4::int,"
                                    " $5::jsonb, $6::int)",
                                    6, sp, err, errlen);
        if (!s)
            goto out;
        PQclear(s);
    }
    ret = 0;
    if (rows) {
        *rows = r;
        r = NULL;
    }
out:
    PQclear(r);
    dynbuf_free(&syms);
    return ret;
}

/* --- status ------------------------------------------------------------------------ */

int verify_status_totals(PGconn *conn, bool json, dynbuf_t *out, char *err, size_t errlen)
{
    PGresult *r = calendar_exec(
        conn,
        "SELECT (SELECT jsonb_build_object('verified_at', verified_at, 'source', source,"
        "               'from', range_from, 'to', range_to, 'series', series, 'days', totals,"
        "               'queued', queued) FROM ledger_summary WHERE id = 1),"
        "       (SELECT jsonb_build_object('days', count(*), 'first', min(day), 'last', max(day))"
        "          FROM trading_calendar),"
        "       (SELECT jsonb_object_agg(name, jsonb_build_object('last_ok', last_ok,"
        "               'last_error', last_error, 'last_error_at', last_error_at, 'detail', "
        "detail))"
        "          FROM backfilld_sync_state),"
        "       (SELECT jsonb_build_object('records', count(*),"
        "               'pending', count(*) FILTER (WHERE applied_at IS NULL))"
        "          FROM corporate_actions),"
        "       (SELECT jsonb_build_object('requeued_definitions',"
        "               count(*) FILTER (WHERE effect = 'requeued'),"
        "               'requeued_runs', coalesce(sum(runs), 0),"
        "               'name_changes', count(*) FILTER (WHERE effect = 'name_change'))"
        "          FROM corporate_action_effects)",
        0, NULL, err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    if (json) {
        rc |= dynbuf_printf(out,
                            "{\"last_verify\": %s, \"calendar\": %s, \"syncs\": %s, "
                            "\"corporate_actions\": %s, \"effects\": %s}",
                            PQgetisnull(r, 0, 0) ? "null" : PQgetvalue(r, 0, 0),
                            PQgetvalue(r, 0, 1), PQgetisnull(r, 0, 2) ? "{}" : PQgetvalue(r, 0, 2),
                            PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
        PQclear(r);
        return rc ? -1 : 0;
    }
    PQclear(r);
    r = calendar_exec(
        conn,
        "SELECT coalesce((SELECT to_char(verified_at, 'YYYY-MM-DD HH24:MI:SS') || 'Z (' || source"
        "                 || ', ' || coalesce(range_from::text, 'start') || '..'"
        "                 || coalesce(range_to::text, 'now') || ', ' || series || ' series): '"
        "                 || (totals->>'complete') || ' complete, ' || (totals->>'hole')"
        "                 || ' holes, ' || (totals->>'no_data') || ' no data, '"
        "                 || (totals->>'not_fetched') || ' not fetched, '"
        "                 || (totals->>'not_listed') || ' not listed yet, '"
        "                 || (totals->>'short') || ' short; ' || coalesce(totals->>'empty_series', "
        "'0')"
        "                 || ' series with no bar; ' || queued || ' runs queued'"
        "            FROM ledger_summary WHERE id = 1), 'never run (backfilld verify)'),"
        "       (SELECT CASE WHEN count(*) = 0 THEN 'not read yet'"
        "               ELSE count(*) || ' trading days ' || min(day) || '..' || max(day) END"
        "          FROM trading_calendar),"
        "       coalesce((SELECT CASE WHEN last_error_at > coalesce(last_ok, '-infinity')"
        "                        THEN 'failed at ' || to_char(last_error_at, 'YYYY-MM-DD "
        "HH24:MI:SS')"
        "                             || 'Z: ' || last_error"
        "                        ELSE 'synced ' || to_char(last_ok, 'YYYY-MM-DD HH24:MI:SS') || 'Z "
        "('"
        "                             || window_from || '..' || window_to || ')' END"
        "                   FROM backfilld_sync_state WHERE name = 'corporate_actions'), 'never "
        "synced'),"
        "       (SELECT count(*) FROM corporate_actions),"
        "       (SELECT coalesce(sum(runs), 0) FROM corporate_action_effects WHERE effect = "
        "'requeued'),"
        "       (SELECT count(*) FROM corporate_action_effects WHERE effect = 'name_change')",
        0, NULL, err, errlen);
    if (!r)
        return -1;
    rc |= dynbuf_printf(out,
                        "ledger\n  last verify        %s\n  calendar           %s\n"
                        "  corporate actions  %s; %s records, %s runs re-queued, %s name "
                        "changes affecting definitions\n",
                        PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                        PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5));
    PQclear(r);
    return rc ? -1 : 0;
}

/* --- the command ---------------------------------------------------------------- */

static const char verify_usage[] =
    "usage: backfilld [--config FILE] verify [--symbols A,B] [--timeframe TF] [--from DATE]\n"
    "                 [--to DATE] [--json] [--refetch] [--no-check]\n"
    "       backfilld [--config FILE] verify --summary [--json]\n\n"
    "Proves the table complete: for every fetch_historical definition (a series: symbol,\n"
    "timeframe, feed, adjustment) and every trading day of Alpaca's calendar in the range\n"
    "(DATEs are New York trading days; default: each definition's whole range, whole\n"
    "days that have ended), the bars stored against what the session allows, and the\n"
    "day's class:\n"
    "  complete     as many bars as the session allows, or as a re-fetch serves now\n"
    "  no_data      fetched, and Alpaca had nothing (a series with no bar at all is\n"
    "               suspicious: a typo'd symbol, the wrong feed)\n"
    "  not_fetched  no succeeded run covers the day yet\n"
    "  hole         fewer bars stored than a re-fetch serves now\n"
    "  not_listed   before the series' first bar\n"
    "  short        fewer than the session allows, never re-checked (--no-check)\n"
    "Days short of their session or empty after the first bar are re-checked: their bars\n"
    "are fetched again now (through the shared request budget) and counted; --no-check\n"
    "uses the counts of the last re-check instead and asks Alpaca nothing.\n"
    "--refetch queues the holes' days again (forced), and the whole range of a series\n"
    "with no bar at all, for the daemon to fetch. m1..h4 and d1 are checked; w1 and mn1\n"
    "are not.\n"
    "--summary prints what status shows of the ledger (the last pass's totals, the\n"
    "calendar, the corporate-action sync) and asks Alpaca nothing.\n"
    "Exit 0 when nothing is wrong, 1 when a day is a hole or not fetched, or a series\n"
    "has no bar at all; 64 usage, 69 database or Alpaca unavailable, 78 configuration.\n";

/* The rows of the series that starts at row i (rows come by definition): counts
 * its days per class into cls, says whether it has any bar; returns the row after it. */
static int series_days(const PGresult *r, int i, int64_t cls[VC_N], bool *any_bar)
{
    int j = i, n = PQntuples(r);
    while (j < n && strcmp(PQgetvalue(r, j, COL_DEF), PQgetvalue(r, i, COL_DEF)) == 0) {
        int c = class_of(PQgetvalue(r, j, COL_CLASS));
        cls[c]++;
        if (c != VC_NO_DATA || PQgetvalue(r, j, COL_LISTED)[0] == 't')
            *any_bar = true;
        j++;
    }
    return j;
}

/* Prints the ledger's rows, per series, days that are not complete collapsed into runs. */
static void print_text(const PGresult *r, const struct verify_totals *t, PGconn *conn)
{
    int n = PQntuples(r);
    for (int i = 0; i < n;) {
        int64_t cls[VC_N] = {0};
        bool any_bar = false;
        int j = series_days(r, i, cls, &any_bar);
        printf("%s %s %s %s (definition %s): %d days:", PQgetvalue(r, i, COL_SYMBOL),
               PQgetvalue(r, i, COL_TF), PQgetvalue(r, i, COL_FEED), PQgetvalue(r, i, COL_ADJ),
               PQgetvalue(r, i, COL_DEF), j - i);
        const char *sep = " ";
        for (int c = 0; c < VC_N; c++)
            if (cls[c]) {
                printf("%s%lld %s", sep, (long long)cls[c], verify_class_names[c]);
                sep = ", ";
            }
        printf("%s\n", any_bar ? ""
                               : "; no bar at all: suspicious (a typo'd symbol, the wrong "
                                 "feed, or not listed in the range?)");
        for (int k = i; k < j;) {
            int c = class_of(PQgetvalue(r, k, COL_CLASS));
            if (c == VC_COMPLETE) {
                k++;
                continue;
            }
            if (c == VC_HOLE || c == VC_SHORT) {
                const char *served = PQgetvalue(r, k, COL_SERVED);
                if (c == VC_HOLE)
                    printf("  %s  hole         %s of %s bars stored; a re-fetch serves %s\n",
                           PQgetvalue(r, k, COL_DAY), PQgetvalue(r, k, COL_STORED),
                           PQgetvalue(r, k, COL_ALLOWED), served);
                else
                    printf("  %s  short        %s of %s bars stored (not re-checked)\n",
                           PQgetvalue(r, k, COL_DAY), PQgetvalue(r, k, COL_STORED),
                           PQgetvalue(r, k, COL_ALLOWED));
                k++;
                continue;
            }
            int e = k;
            while (e + 1 < j && class_of(PQgetvalue(r, e + 1, COL_CLASS)) == c)
                e++;
            if (e == k)
                printf("  %s              %-12s\n", PQgetvalue(r, k, COL_DAY),
                       verify_class_names[c]);
            else
                printf("  %s..%s  %-12s %d days\n", PQgetvalue(r, k, COL_DAY),
                       PQgetvalue(r, e, COL_DAY), verify_class_names[c], e - k + 1);
            k = e + 1;
        }
        i = j;
    }
    char err[256];
    PGresult *nc =
        calendar_exec(conn,
                      "SELECT old_symbol, new_symbol, coalesce(process_date::text, '?'),"
                      "       def_symbol, timeframe, job_def_id"
                      "  FROM corporate_action_name_changes ORDER BY process_date, job_def_id",
                      0, NULL, err, sizeof err);
    for (int i = 0; nc && i < PQntuples(nc); i++)
        printf("name change %s -> %s on %s affects definition %s (%s %s)\n", PQgetvalue(nc, i, 0),
               PQgetvalue(nc, i, 1), PQgetvalue(nc, i, 2), PQgetvalue(nc, i, 5),
               PQgetvalue(nc, i, 3), PQgetvalue(nc, i, 4));
    PQclear(nc);
    printf("totals: %lld series, %lld days:", (long long)t->series, (long long)t->days);
    const char *sep = " ";
    for (int c = 0; c < VC_N; c++)
        if (t->cls[c]) {
            printf("%s%lld %s", sep, (long long)t->cls[c], verify_class_names[c]);
            sep = ", ";
        }
    printf("; %lld series with no bar; %lld days re-checked in %lld requests",
           (long long)t->empty_series, (long long)t->checked, (long long)t->requests);
    if (t->queued)
        printf("; %lld runs queued", (long long)t->queued);
    printf("\n");
}

static void print_json(const PGresult *r, const struct verify_totals *t, const char *from,
                       const char *to, PGconn *conn)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)1 << 30);
    int rc = dynbuf_printf(&b, "{\"ok\": %s, \"from\": ", verify_wrong(t) ? "false" : "true");
    rc |= from ? log_json_string(&b, from) : dynbuf_append(&b, "null", 4);
    rc |= dynbuf_append(&b, ", \"to\": ", 8);
    rc |= to ? log_json_string(&b, to) : dynbuf_append(&b, "null", 4);
    rc |= dynbuf_printf(&b, ", \"totals\": {\"series\": %lld, \"days\": %lld", (long long)t->series,
                        (long long)t->days);
    for (int c = 0; c < VC_N; c++)
        rc |= dynbuf_printf(&b, ", \"%s\": %lld", verify_class_names[c], (long long)t->cls[c]);
    rc |= dynbuf_printf(&b,
                        ", \"empty_series\": %lld, \"checked\": %lld, \"requests\": %lld, "
                        "\"queued\": %lld}, \"series\": [",
                        (long long)t->empty_series, (long long)t->checked, (long long)t->requests,
                        (long long)t->queued);
    int n = PQntuples(r);
    for (int i = 0; i < n;) {
        int64_t cls[VC_N] = {0};
        bool any_bar = false;
        int j = series_days(r, i, cls, &any_bar);
        rc |= dynbuf_printf(&b, "%s{\"job_def_id\": %s, \"symbol\": ", i ? ", " : "",
                            PQgetvalue(r, i, COL_DEF));
        rc |= log_json_string(&b, PQgetvalue(r, i, COL_SYMBOL));
        rc |= dynbuf_printf(&b, ", \"timeframe\": \"%s\", \"feed\": \"%s\", \"adjustment\": ",
                            PQgetvalue(r, i, COL_TF), PQgetvalue(r, i, COL_FEED));
        rc |= log_json_string(&b, PQgetvalue(r, i, COL_ADJ));
        rc |= dynbuf_printf(&b, ", \"days\": %d, \"no_bar_at_all\": %s, \"classes\": {", j - i,
                            any_bar ? "false" : "true");
        const char *sep = "";
        for (int c = 0; c < VC_N; c++)
            if (cls[c]) {
                rc |= dynbuf_printf(&b, "%s\"%s\": %lld", sep, verify_class_names[c],
                                    (long long)cls[c]);
                sep = ", ";
            }
        rc |= dynbuf_append(&b, "}, \"problems\": [", 16);
        sep = "";
        for (int k = i; k < j; k++) {
            int c = class_of(PQgetvalue(r, k, COL_CLASS));
            if (c == VC_COMPLETE)
                continue;
            rc |= dynbuf_printf(
                &b,
                "%s{\"day\": \"%s\", \"class\": \"%s\", \"allowed\": %s, "
                "\"stored\": %s, \"served\": %s}",
                sep, PQgetvalue(r, k, COL_DAY), verify_class_names[c],
                PQgetisnull(r, k, COL_ALLOWED) ? "null" : PQgetvalue(r, k, COL_ALLOWED),
                PQgetvalue(r, k, COL_STORED),
                PQgetisnull(r, k, COL_SERVED) ? "null" : PQgetvalue(r, k, COL_SERVED));
            sep = ", ";
        }
        rc |= dynbuf_append(&b, "]}", 2);
        i = j;
    }
    /* The name changes that affect a definition (FB -> META): why a symbol went quiet. */
    char err[256];
    PGresult *nc = calendar_exec(
        conn,
        "SELECT coalesce(json_agg(json_build_object('old_symbol', old_symbol, 'new_symbol',"
        " new_symbol, 'process_date', process_date, 'job_def_id', job_def_id, 'symbol', def_symbol,"
        " 'timeframe', timeframe) ORDER BY process_date, job_def_id), '[]')"
        " FROM corporate_action_name_changes",
        0, NULL, err, sizeof err);
    rc |= dynbuf_printf(&b, "], \"name_changes\": %s}\n", nc ? PQgetvalue(nc, 0, 0) : "[]");
    PQclear(nc);
    if (rc == 0)
        fwrite(b.data, 1, b.len, stdout);
    else
        fprintf(stderr, "backfilld verify: the report is too large for --json\n");
    dynbuf_free(&b);
}

static bool is_date(const char *s)
{
    int64_t us;
    return strlen(s) == 10 && bars_parse_time(s, &us) == 0;
}

int cli_verify(const struct config *c, int argc, char **argv)
{
    struct verify_opts o = {.check = true, .source = "verify"};
    bool json = false, summary = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(verify_usage, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--summary") == 0) {
            summary = true;
        } else if (strcmp(a, "--refetch") == 0) {
            o.refetch = true;
        } else if (strcmp(a, "--no-check") == 0) {
            o.check = false;
        } else if (strcmp(a, "--symbols") == 0) {
            val = &o.symbols;
        } else if (strcmp(a, "--timeframe") == 0) {
            val = &o.timeframe;
        } else if (strcmp(a, "--from") == 0) {
            val = &o.from;
        } else if (strcmp(a, "--to") == 0) {
            val = &o.to;
        } else {
            fprintf(stderr, "backfilld verify: unexpected argument '%s'\n\n%s", a, verify_usage);
            return EXIT_USAGE;
        }
        if (val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "backfilld verify: %s needs a value\n", a);
                return EXIT_USAGE;
            }
            *val = argv[++i];
        }
    }
    if (o.refetch && !o.check) {
        fprintf(stderr, "backfilld verify: --refetch needs the re-check (drop --no-check)\n");
        return EXIT_USAGE;
    }
    if (o.timeframe &&
        (!tf_to_alpaca(o.timeframe) || !strcmp(o.timeframe, "w1") || !strcmp(o.timeframe, "mn1"))) {
        fprintf(stderr, "backfilld verify: --timeframe '%s': one of m1 m5 m15 m30 h1 h4 d1\n",
                o.timeframe);
        return EXIT_DATAERR;
    }
    if ((o.from && !is_date(o.from)) || (o.to && !is_date(o.to))) {
        fprintf(stderr, "backfilld verify: --from and --to are dates, YYYY-MM-DD\n");
        return EXIT_DATAERR;
    }
    if (o.from && o.to && strcmp(o.from, o.to) > 0) {
        fprintf(stderr, "backfilld verify: --from %s is after --to %s\n", o.from, o.to);
        return EXIT_DATAERR;
    }
    if (o.symbols) {
        char why[200];
        for (const char *s = o.symbols; *s;) {
            size_t len = strcspn(s, ",");
            char one[64];
            snprintf(one, sizeof one, "%.*s", (int)(len < 63 ? len : 63), s);
            if (!cli_symbol_ok(one, why, sizeof why)) {
                fprintf(stderr, "backfilld verify: --symbols: '%s': %s\n", one, why);
                return EXIT_DATAERR;
            }
            s += len + (s[len] == ',');
        }
    }
    char err[1024];
    if (config_check_run(c, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld verify: %s\n", err);
        return EXIT_CONFIG;
    }
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret = check_schema(conn);
    if (ret != EXIT_OK) {
        PQfinish(conn);
        return ret;
    }
    if (summary) {
        /* What status shows of the ledger, without a pass. */
        dynbuf_t b;
        dynbuf_init(&b, (size_t)1 << 20);
        if (verify_status_totals(conn, json, &b, err, sizeof err) < 0) {
            fprintf(stderr, "backfilld verify: %s\n", err);
            ret = EXIT_UNAVAILABLE;
        } else {
            fwrite(b.data, 1, b.len, stdout);
            if (json)
                fputc('\n', stdout);
        }
        dynbuf_free(&b);
        PQfinish(conn);
        return ret;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        PQfinish(conn);
        return EXIT_SOFTWARE;
    }
    CURL *e = curl_easy_init();
    struct upkeep_ctx ctx = {.cfg = c, .conn = conn, .curl = e};
    struct verify_totals t;
    PGresult *rows = NULL;
    int64_t t0 = mono_ms();
    if (!e || verify_pass(&ctx, &o, &t, &rows, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld verify: %s\n", e ? err : "libcurl failed");
        ret = EXIT_UNAVAILABLE;
    } else {
        if (json)
            print_json(rows, &t, o.from, o.to, conn);
        else
            print_text(rows, &t, conn);
        LOG(LL_INFO, "verify", F_I64("series", t.series), F_I64("days", t.days),
            F_I64("holes", t.cls[VC_HOLE]), F_I64("not_fetched", t.cls[VC_NOT_FETCHED]),
            F_I64("no_data", t.cls[VC_NO_DATA]), F_I64("empty_series", t.empty_series),
            F_I64("checked", t.checked), F_I64("requests", t.requests), F_I64("queued", t.queued),
            F_I64("ms", mono_ms() - t0));
        ret = verify_wrong(&t) ? EXIT_RUNS_FAILED : EXIT_OK;
        if (ret != EXIT_OK && !json)
            fprintf(stderr,
                    "backfilld verify: not complete: %lld holes, %lld days not fetched, %lld "
                    "series with no bar%s\n",
                    (long long)t.cls[VC_HOLE], (long long)t.cls[VC_NOT_FETCHED],
                    (long long)t.empty_series, o.refetch ? "" : " (--refetch queues the holes)");
    }
    PQclear(rows);
    curl_easy_cleanup(e);
    curl_global_cleanup();
    PQfinish(conn);
    return ret;
}
