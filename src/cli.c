/*
 * cli: see cli.h. Every failure prints one line to stderr naming what is
 * wrong; nothing is half-written (enqueue runs in one transaction). The live
 * views (status --watch, enqueue --wait) poll the database once an interval
 * and redraw in place on a terminal, or print a line per interval elsewhere.
 */
#include "cli_int.h"

#include "bars.h"
#include "coalesce.h"
#include "log.h"
#include "migrations.h"
#include "timeframe.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <curl/curl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

PGconn *connect_db(const struct config *c)
{
    const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", NULL};
    const char *vals[] = {c->database_url, "backfilld-cli", "10", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        /* libpq may quote the connection string (and so the password) here. */
        char m[1024];
        log_scrub(PQerrorMessage(conn), m, sizeof m);
        fprintf(stderr, "backfilld: cannot connect to the database: %.*s\n", (int)strcspn(m, "\n"),
                m);
        PQfinish(conn);
        return NULL;
    }
    PQclear(PQexec(conn, "SET TimeZone = 'UTC'"));
    return conn;
}

/* Runs a statement; prints the server's message on failure and returns NULL. */
PGresult *q(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char m[1024];
        log_scrub(PQresultErrorMessage(r), m, sizeof m);
        fprintf(stderr, "backfilld: %.*s\n", (int)strcspn(m, "\n"), m);
        PQclear(r);
        return NULL;
    }
    return r;
}

int check_schema(PGconn *conn)
{
    char err[512];
    int v = migrations_current(conn, err, sizeof err);
    if (v < 0) {
        fprintf(stderr, "backfilld: %s\n", err);
        return EXIT_UNAVAILABLE;
    }
    if (v != migrations_latest()) {
        fprintf(stderr,
                "backfilld: database schema is version %d, this binary needs %d: run "
                "'backfilld migrate'\n",
                v, migrations_latest());
        return EXIT_CONFIG;
    }
    return EXIT_OK;
}

/* Parses a --from/--to value; a bare date as --to means the end of that day. */
bool parse_when(const char *s, bool is_to, int64_t *us)
{
    if (bars_parse_time(s, us) < 0)
        return false;
    /* A bare date is the New York trading day: from its midnight, to the next one. */
    if (strlen(s) == 10)
        *us = bars_ny_midnight_us(*us / INT64_C(86400000000) + (is_to ? 1 : 0));
    return true;
}

/* --- check-config ---------------------------------------------------------- */

static size_t discard_cb(char *p, size_t s, size_t n, void *u)
{
    dynbuf_t *b = u;
    /* Only the start of an error body is kept; the rest is dropped on purpose. */
    if (dynbuf_append(b, p, s * n) < 0)
        return s * n;
    return s * n;
}

int cli_check_config(const struct config *c, int argc, char **argv)
{
    bool alpaca = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--alpaca") == 0) {
            alpaca = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: backfilld [--config FILE] check-config [--alpaca]\n\n"
                   "Validates every setting, connects to the database and checks the schema\n"
                   "version; with --alpaca also makes one request to check the credentials.\n"
                   "Exit 0 when all is well, 78 for a configuration error, 69 when the\n"
                   "database is unreachable.\n");
            return EXIT_OK;
        } else {
            fprintf(stderr, "backfilld check-config: unexpected argument '%s'\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    char err[512];
    if (config_check_run(c, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld: %s\n", err);
        return EXIT_CONFIG;
    }
    printf("config: ok\n");
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret = check_schema(conn);
    PQfinish(conn);
    if (ret != EXIT_OK)
        return ret;
    printf("database: ok (schema version %d)\n", migrations_latest());
    if (!alpaca)
        return EXIT_OK;
    CURL *e = curl_easy_init();
    if (!e)
        return EXIT_SOFTWARE;
    char url[2048], key[600], secret[600];
    /* The single-symbol endpoint, whose answer is parsed: a server that
     * accepts the credentials but does not answer like Alpaca is caught too. */
    snprintf(url, sizeof url,
             "%s/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-02T00:00:00Z"
             "&end=2024-01-03T00:00:00Z&limit=1&feed=iex",
             c->data_url);
    snprintf(key, sizeof key, "APCA-API-KEY-ID: %s", c->api_key);
    snprintf(secret, sizeof secret, "APCA-API-SECRET-KEY: %s", c->api_secret);
    struct curl_slist *h = curl_slist_append(NULL, key);
    h = curl_slist_append(h, secret);
    dynbuf_t body;
    dynbuf_init(&body, 1 << 20);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->http_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (c->ca_file && *c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER,
                     cerr); /* says which certificate problem, not only "not OK" */
    CURLcode cc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    memset(key, 0, sizeof key);
    memset(secret, 0, sizeof secret);
    if (cc != CURLE_OK) {
        fprintf(stderr, "backfilld: alpaca: cannot reach %s: %s\n", c->data_url,
                cerr[0] ? cerr : curl_easy_strerror(cc));
        ret = EXIT_UNAVAILABLE;
    } else if (status == 401 || status == 403) {
        fprintf(stderr,
                "backfilld: alpaca: credentials rejected (HTTP %ld): check "
                "APCA_API_KEY_ID and APCA_API_SECRET_KEY\n",
                status);
        ret = EXIT_CONFIG;
    } else if (status != 200) {
        char msg[300];
        if (!bars_error_message(body.data ? body.data : "", body.len, msg, sizeof msg))
            snprintf(msg, sizeof msg, "unexpected answer");
        fprintf(stderr, "backfilld: alpaca: HTTP %ld: %s\n", status, msg);
        ret = EXIT_UNAVAILABLE;
    } else {
        bars_page_t page;
        char perr[300];
        if (bars_parse_single(body.data ? body.data : "", body.len, "AAPL", &page, perr,
                              sizeof perr) < 0) {
            fprintf(stderr, "backfilld: alpaca: %s answered 200 but not with bars: %s\n",
                    c->data_url, perr);
            ret = EXIT_CONFIG;
        } else {
            printf("alpaca: ok (credentials accepted by %s, %zu bar(s) of AAPL read)\n",
                   c->data_url, page.total);
            bars_page_clear(&page);
        }
    }
    dynbuf_free(&body);
    return ret;
}
