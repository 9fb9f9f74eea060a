/*
 * cli_universe: `backfilld enqueue --all-active [--exchange X,Y]`: the
 * symbols of an enqueue from Alpaca's asset list (the trading API's
 * GET /v2/assets, alpaca-more-api.md §2), and the report of defined symbols
 * that list no longer has.
 *
 * The list is read whole before the database is touched, and refused whole
 * (an unreachable host, 401/403, a body that is not an asset list, an empty
 * list), so a bad answer writes nothing. It is asked for every exchange and
 * filtered here: "no longer listed" must mean gone from Alpaca's active
 * list, not on another exchange than the one asked for. Symbols missing from
 * it are printed and logged by symbol; their definitions are kept as they
 * are (none is dropped or disabled: an operator decides). What was listed
 * is kept in universe_assets (first and last seen, gone since), so the
 * report tells a symbol that left the list from one never listed.
 */
#include "cli_int.h"

#include "assets.h"
#include "bars.h"
#include "log.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSETS_BODY_CAP ((size_t)64 << 20) /* ~11,000 assets are ~4 MB */

/* The exchanges GET /v2/assets knows (alpaca-more-api.md §2). */
static const char *const exchanges[] = {"AMEX",   "ARCA",     "BATS", "NYSE",
                                        "NASDAQ", "NYSEARCA", "OTC"};

static size_t body_cb(char *p, size_t s, size_t n, void *u)
{
    /* Past the cap, 0 makes curl fail the transfer (CURLE_WRITE_ERROR). */
    return dynbuf_append(u, p, s * n) < 0 ? 0 : s * n;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts v[0..*n) (owned strings) and frees repeats (the list may name a symbol twice). */
static void sort_unique(char **v, size_t *n)
{
    qsort(v, *n, sizeof *v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
        else
            free(v[i]);
    }
    *n = k;
}

/* Whether ex is in the comma-separated list (NULL: every exchange). */
static bool exchange_wanted(const char *list, const char *ex)
{
    if (!list)
        return true;
    size_t n = strlen(ex);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && n > 0 && strncmp(p, ex, n) == 0)
            return true;
        p += len + (e ? 1 : 0);
    }
    return false;
}

int universe_check_exchanges(const char *list)
{
    if (!*list) {
        fprintf(stderr, "backfilld enqueue: --exchange needs one or more of AMEX ARCA BATS NYSE "
                        "NASDAQ NYSEARCA OTC\n");
        return EXIT_DATAERR;
    }
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        bool known = false;
        for (size_t i = 0; i < ARRAY_SIZE(exchanges); i++)
            known |= strlen(exchanges[i]) == len && strncmp(p, exchanges[i], len) == 0;
        if (!known) {
            fprintf(stderr,
                    "backfilld enqueue: unknown exchange '%.*s' (one of AMEX ARCA BATS NYSE "
                    "NASDAQ NYSEARCA OTC, comma-separated)\n",
                    (int)len, p);
            return EXIT_DATAERR;
        }
        p += len + (e ? 1 : 0);
    }
    return EXIT_OK;
}

/* GETs url into body. EXIT_OK with *status set, or an exit code after printing why. */
static int http_get(const struct config *c, const char *url, dynbuf_t *body, long *status)
{
    CURL *e = curl_easy_init();
    if (!e)
        return EXIT_SOFTWARE;
    char key[600], secret[600], cerr[CURL_ERROR_SIZE] = "";
    snprintf(key, sizeof key, "APCA-API-KEY-ID: %s", c->api_key);
    snprintf(secret, sizeof secret, "APCA-API-SECRET-KEY: %s", c->api_secret);
    struct curl_slist *h = curl_slist_append(NULL, key);
    h = curl_slist_append(h, secret);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->http_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    if (c->ca_file && *c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    CURLcode cc = curl_easy_perform(e);
    *status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    memset(key, 0, sizeof key);
    memset(secret, 0, sizeof secret);
    if (cc == CURLE_WRITE_ERROR) {
        fprintf(stderr,
                "backfilld enqueue: the asset list from %s is over %zu MB: nothing was "
                "enqueued\n",
                c->base_url, ASSETS_BODY_CAP >> 20);
        return EXIT_UNAVAILABLE;
    }
    if (cc != CURLE_OK) {
        fprintf(stderr,
                "backfilld enqueue: cannot read the asset list: cannot reach %s "
                "(APCA_API_BASE_URL): %s; nothing was enqueued\n",
                c->base_url, cerr[0] ? cerr : curl_easy_strerror(cc));
        return EXIT_UNAVAILABLE;
    }
    return EXIT_OK;
}

int universe_fetch(const struct config *c, const char *exchange_list, struct universe *u)
{
    memset(u, 0, sizeof *u);
    char err[512];
    if (config_check_run(c, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld enqueue: %s; nothing was enqueued\n", err);
        return EXIT_CONFIG;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s/v2/assets?status=active&asset_class=us_equity", c->base_url);
    dynbuf_t body;
    dynbuf_init(&body, ASSETS_BODY_CAP);
    assets_list_t l = {0};
    long status = 0;
    int ret = http_get(c, url, &body, &status);
    if (ret != EXIT_OK)
        goto out;
    ret = EXIT_UNAVAILABLE;
    const char *text = body.data ? body.data : "";
    if (status == 401 || status == 403) {
        fprintf(stderr,
                "backfilld enqueue: the trading API at %s refused the credentials (HTTP %ld): "
                "check APCA_API_KEY_ID, APCA_API_SECRET_KEY and APCA_API_BASE_URL (paper keys "
                "go with https://paper-api.alpaca.markets, live keys with "
                "https://api.alpaca.markets); nothing was enqueued\n",
                c->base_url, status);
        ret = EXIT_CONFIG;
        goto out;
    }
    if (status != 200) {
        char msg[300];
        if (!bars_error_message(text, body.len, msg, sizeof msg))
            snprintf(msg, sizeof msg, "not an Alpaca answer");
        fprintf(stderr,
                "backfilld enqueue: the asset list from %s: HTTP %ld: %s; nothing was enqueued\n",
                c->base_url, status, msg);
        goto out;
    }
    if (assets_parse(text, body.len, &l, err, sizeof err) < 0) {
        fprintf(stderr,
                "backfilld enqueue: %s answered 200 but not with an asset list: %s; nothing was "
                "enqueued\n",
                c->base_url, err);
        goto out;
    }
    u->all = xcalloc(l.n + 1, sizeof *u->all);
    u->syms = xcalloc(l.n + 1, sizeof *u->syms);
    u->skipped = xcalloc(l.n + 1, sizeof *u->skipped);
    for (size_t i = 0; i < l.n; i++) {
        const asset_t *a = &l.v[i];
        if (!a->active || !a->us_equity)
            continue; /* asked for active us_equity only; a server that adds more is ignored */
        u->listed++;
        char why[200];
        /* Quotes, backslashes and braces cannot go into the array literal either. */
        if (!cli_symbol_ok(a->symbol, why, sizeof why) || strpbrk(a->symbol, "\"\\{}")) {
            u->skipped[u->nskipped++] = xstrdup(a->symbol);
            continue;
        }
        u->all[u->nall++] = xstrdup(a->symbol);
        if (exchange_wanted(exchange_list, a->exchange))
            u->syms[u->nsyms++] = xstrdup(a->symbol);
    }
    sort_unique(u->all, &u->nall);
    if (u->listed == 0) {
        fprintf(stderr,
                "backfilld enqueue: the asset list from %s is empty (no active us_equity "
                "asset): refusing to take that as the universe; nothing was enqueued\n",
                c->base_url);
        goto out;
    }
    if (u->nsyms == 0) {
        fprintf(stderr,
                "backfilld enqueue: none of the %zu active us_equity assets listed by %s is on "
                "%s; nothing was enqueued\n",
                u->listed, c->base_url, exchange_list ? exchange_list : "any exchange");
        ret = EXIT_DATAERR;
        goto out;
    }
    sort_unique(u->syms, &u->nsyms);
    ret = EXIT_OK;
out:
    assets_clear(&l);
    dynbuf_free(&body);
    return ret;
}

/* Prints words (n of them) after an indent, a dozen a line. */
static void print_wrapped(char *const *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i % 12 == 0 ? (i ? "\n  " : "  ") : " ", words[i]);
    if (n)
        printf("\n");
}

int universe_report(PGconn *conn, const struct universe *u)
{
    if (u->nskipped) {
        printf("skipped %zu listed symbol%s that cannot be a definition's (lower case, spaces, "
               "commas, quotes or over 32 characters):\n",
               u->nskipped, u->nskipped == 1 ? "" : "s");
        print_wrapped(u->skipped, u->nskipped);
        for (size_t i = 0; i < u->nskipped; i++)
            LOG(LL_WARN, "listed symbol skipped: it cannot be a definition's",
                F_STR("symbol", u->skipped[i]));
    }
    /* The list as seen now (one statement: listed symbols seen, the rest
     * gone since now unless gone already), then every definition whose
     * symbol the list does not have, whatever its timeframe: hashed
     * anti-joins, not 11,000 comparisons per row. */
    static const char seen_sql[] =
        "WITH l AS MATERIALIZED (SELECT DISTINCT s FROM unnest($1::text[]) AS u(s)),"
        " seen AS (INSERT INTO universe_assets AS a (symbol) SELECT s FROM l"
        "   ON CONFLICT (symbol) DO UPDATE SET last_seen = now(), gone_since = NULL)"
        " UPDATE universe_assets a SET gone_since = now()"
        "  WHERE a.gone_since IS NULL AND NOT EXISTS (SELECT FROM l WHERE l.s = a.symbol)";
    static const char sql[] =
        "SELECT d.symbol, string_agg(d.timeframe || '/' || d.job_type ||"
        " CASE WHEN d.enabled THEN '' ELSE ' (disabled)' END, ', ' ORDER BY d.timeframe,"
        " d.job_type),"
        " coalesce('no longer listed since ' || to_char(min(a.gone_since) AT TIME ZONE 'UTC',"
        "          'YYYY-MM-DD HH24:MI\"Z\"'), 'never listed')"
        " FROM job_definitions d LEFT JOIN universe_assets a ON a.symbol = d.symbol"
        " WHERE NOT EXISTS (SELECT FROM unnest($1::text[]) AS u(s) WHERE u.s = d.symbol)"
        " GROUP BY d.symbol ORDER BY d.symbol";
    dynbuf_t lit;
    dynbuf_init(&lit, (size_t)1 << 30);
    int ret = EXIT_SOFTWARE;
    PGresult *r = NULL;
    if (universe_literal(&lit, u->all, u->nall) < 0)
        goto out;
    const char *p[] = {lit.data};
    r = q(conn, seen_sql, 1, p);
    if (!r)
        goto out;
    PQclear(r);
    r = q(conn, sql, 1, p);
    if (!r)
        goto out;
    int n = PQntuples(r);
    if (n > 0) {
        printf("%d symbol%s with definitions %s not in Alpaca's active list (no longer listed, or "
               "never were); %s definitions are kept as they are, none was disabled:\n",
               n, n == 1 ? "" : "s", n == 1 ? "is" : "are", n == 1 ? "its" : "their");
        for (int i = 0; i < n; i++) {
            printf("  %-12s %s; %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   PQgetvalue(r, i, 2));
            LOG(LL_WARN, "defined symbol not in the active asset list",
                F_STR("symbol", PQgetvalue(r, i, 0)), F_STR("definitions", PQgetvalue(r, i, 1)),
                F_STR("listing", PQgetvalue(r, i, 2)));
        }
    }
    ret = EXIT_OK;
out:
    PQclear(r);
    dynbuf_free(&lit);
    return ret;
}

int universe_literal(dynbuf_t *b, char *const *syms, size_t n)
{
    int rc = dynbuf_append(b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = dynbuf_printf(b, "%s\"%s\"", i ? "," : "", syms[i]);
    return rc | dynbuf_append(b, "}", 1);
}

void universe_free(struct universe *u)
{
    for (size_t i = 0; i < u->nall; i++)
        free(u->all[i]);
    for (size_t i = 0; i < u->nsyms; i++)
        free(u->syms[i]);
    for (size_t i = 0; i < u->nskipped; i++)
        free(u->skipped[i]);
    free(u->all);
    free(u->syms);
    free(u->skipped);
    memset(u, 0, sizeof *u);
}
