/*
 * cli_enqueue: `backfilld enqueue`: parse, validate, then one transaction
 * that creates or widens definitions and queues the chunks not covered;
 * with --wait, one progress bar for exactly the runs it queued. With
 * --all-active the symbols are Alpaca's asset list (cli_universe.c), read
 * before the transaction.
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
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* --- enqueue --wait ------------------------------------------------------------ */

/*
 * The runs this enqueue queued, by id, sorted. Each poll reads only the runs
 * not yet seen finished, by primary key: O(runs still open), however large
 * job_runs is. A run seen finished is not read again until the final report.
 */
struct waiter {
    int64_t *all, *open; /* owned; all is kept for the final report */
    size_t nall, nopen;
    int64_t ok, failed, cancelled, gone, bars; /* of the runs seen finished */
    int64_t queued, running, running_bars;     /* of the open ones, at the last poll */
    struct rates rates;
    int64_t start_ms; /* when the wait began (mono_ms) */
    char err[300];    /* the last poll's error, until one succeeds */
};

/* ids as a Postgres array literal, {1,2,3}. */
static int ids_literal(dynbuf_t *b, const int64_t *ids, size_t n)
{
    int rc = dynbuf_append(b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = dynbuf_printf(b, i ? ",%lld" : "%lld", (long long)ids[i]);
    return rc | dynbuf_append(b, "}", 1);
}

/* Ids are positive; wait_poll negates those it has seen finished. */
static int cmp_abs_id(const void *a, const void *b)
{
    int64_t x = llabs(*(const int64_t *)a), y = llabs(*(const int64_t *)b);
    return (x > y) - (x < y);
}

/* Reads the open runs once: the finished ones leave the open list. 0, or -1 (w->err says why). */
static int wait_poll(PGconn *conn, struct waiter *w)
{
    static const char sql[] =
        "WITH x AS MATERIALIZED (SELECT id, status, bars_written FROM job_runs"
        "                        WHERE id = ANY($1::bigint[]))"
        " SELECT 0::bigint, 'queued', count(*), 0::bigint FROM x WHERE status = 'queued'"
        " UNION ALL SELECT 0, 'running', count(*), coalesce(sum(bars_written), 0)::bigint"
        "            FROM x WHERE status = 'running'"
        " UNION ALL SELECT id, status, 1, bars_written FROM x"
        "            WHERE status NOT IN ('queued', 'running')"
        /* deleted by an operator: finished too, and not a success */
        " UNION ALL SELECT u.id, 'gone', 1, 0 FROM unnest($1::bigint[]) AS u(id)"
        "            WHERE NOT EXISTS (SELECT 1 FROM x WHERE x.id = u.id)";
    dynbuf_t lit;
    dynbuf_init(&lit, (size_t)1 << 30);
    int ret = -1;
    PGresult *r = NULL;
    if (ids_literal(&lit, w->open, w->nopen) < 0) {
        snprintf(w->err, sizeof w->err, "too many runs to follow");
        goto out;
    }
    const char *p[] = {lit.data};
    r = view_query(conn, sql, 1, p, w->err, sizeof w->err);
    if (!r)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t id = 0, n = 0, bars = 0;
        (void)parse_i64(PQgetvalue(r, i, 0), 0, INT64_MAX, &id);
        (void)parse_i64(PQgetvalue(r, i, 2), 0, INT64_MAX, &n);
        (void)parse_i64(PQgetvalue(r, i, 3), INT64_MIN, INT64_MAX, &bars);
        const char *st = PQgetvalue(r, i, 1);
        if (id == 0) {
            if (strcmp(st, "queued") == 0) {
                w->queued = n;
            } else {
                w->running = n;
                w->running_bars = bars;
            }
            continue;
        }
        int64_t *slot = bsearch(&id, w->open, w->nopen, sizeof *w->open, cmp_abs_id);
        if (!slot || *slot < 0)
            continue;
        *slot = -*slot; /* finished; the list stays sorted by absolute value */
        if (strcmp(st, "succeeded") == 0) {
            w->ok++;
            w->bars += bars;
        } else if (strcmp(st, "failed") == 0) {
            w->failed++;
        } else if (strcmp(st, "cancelled") == 0) {
            w->cancelled++;
        } else {
            w->gone++;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < w->nopen; i++)
        if (w->open[i] > 0)
            w->open[k++] = w->open[i];
    w->nopen = k;
    w->err[0] = '\0';
    ret = 0;
out:
    PQclear(r);
    dynbuf_free(&lit);
    return ret;
}

/* The bar line: on a terminal with the bar, otherwise one plain line. */
static void wait_render(struct view *v, const struct waiter *w, int64_t window_ms)
{
    int64_t done = (int64_t)(w->nall - w->nopen), bad = w->failed + w->cancelled + w->gone;
    double runs_s = 0, bars_s = 0, req_s = 0;
    bool known = rates_get(&w->rates, window_ms, &runs_s, &bars_s, &req_s);
    char a[32], b[32], c[32], d[32], clk[16];
    dynbuf_t tail, f;
    dynbuf_init(&tail, 1 << 12);
    dynbuf_init(&f, 1 << 16);
    int rc = dynbuf_printf(&tail, "%3d%%  %s/%s runs  %s bars  %s bars/s  ",
                           percent(done, (int64_t)w->nall), fmt_count(a, sizeof a, done),
                           fmt_count(b, sizeof b, (int64_t)w->nall),
                           fmt_count(c, sizeof c, w->bars + w->running_bars),
                           known ? fmt_rate(d, sizeof d, bars_s, true) : "-");
    if (w->nopen == 0)
        rc |= dynbuf_printf(&tail, "done");
    else
        rc |= dynbuf_printf(&tail, "ETA %s",
                            known && runs_s > 0 ? fmt_dur(a, sizeof a, (double)w->nopen / runs_s)
                                                : "-");
    if (bad)
        rc |= dynbuf_printf(&tail, "  %s did not succeed", fmt_count(a, sizeof a, bad));
    /* A daemon claims within a poll interval or so; after 5 s, say that none has. */
    if (done == 0 && !w->running && !w->err[0] && mono_ms() - w->start_ms > 5000)
        rc |= dynbuf_printf(&tail, "  (none claimed yet: is a daemon running?)");
    if (rc == 0 && v->tty) {
        int cols, rows;
        view_size(&cols, &rows);
        rc |= bar_append(&f, w->nall ? (double)done / (double)w->nall : 1,
                         clamp_int(cols - 1 - (int)tail.len - 4, 10, 60));
        rc |= dynbuf_printf(&f, "  %s\n", tail.data);
        if (w->err[0])
            rc |= dynbuf_printf(&f, "database: %s (trying again)\n", w->err);
        if (rc == 0)
            view_show(v, f.data, NULL);
    } else if (rc == 0) {
        rc |= dynbuf_printf(&f, "%s %s%s%s", clock_now(clk, sizeof clk), tail.data,
                            w->err[0] ? "  database: " : "", w->err);
        if (rc == 0)
            view_show(v, NULL, f.data);
    }
    dynbuf_free(&tail);
    dynbuf_free(&f);
}

/*
 * The report once every run has finished, read afresh from job_runs so its
 * counts are the table's: the runs that did not succeed are listed, the
 * first 50 of them. EXIT_OK when all succeeded, else EXIT_RUNS_FAILED.
 */
static int wait_report(PGconn *conn, struct waiter *w, int64_t ms)
{
    static const char sql[] =
        "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
        " coalesce(sum(bars_written) FILTER (WHERE status = 'succeeded'), 0), count(*)"
        " FROM job_runs WHERE id = ANY($1::bigint[])";
    static const char list_sql[] =
        "SELECT id, symbol, timeframe, to_char(range_start, 'YYYY-MM-DD'),"
        " to_char(range_end, 'YYYY-MM-DD'), status, coalesce(last_error, '')"
        " FROM job_runs WHERE id = ANY($1::bigint[]) AND status <> 'succeeded' ORDER BY id LIMIT "
        "50";
    dynbuf_t lit;
    dynbuf_init(&lit, (size_t)1 << 30);
    int ret = EXIT_RUNS_FAILED;
    PGresult *r = NULL, *l = NULL;
    char err[300], n1[32], n2[32], n3[32], n4[32], secs[32];
    if (ids_literal(&lit, w->all, w->nall) < 0)
        goto out;
    const char *p[] = {lit.data};
    r = view_query(conn, sql, 1, p, err, sizeof err);
    if (!r) {
        fprintf(stderr, "backfilld enqueue: the runs finished but cannot be read back: %s\n", err);
        goto out;
    }
    int64_t ok = 0, bars = 0, present = 0;
    (void)parse_i64(PQgetvalue(r, 0, 0), 0, INT64_MAX, &ok);
    (void)parse_i64(PQgetvalue(r, 0, 1), INT64_MIN, INT64_MAX, &bars);
    (void)parse_i64(PQgetvalue(r, 0, 2), 0, INT64_MAX, &present);
    snprintf(secs, sizeof secs, "%.1f s", (double)ms / 1000.0);
    if (ok == (int64_t)w->nall) {
        printf("done: all %s runs succeeded, %s bars written, in %s\n",
               fmt_count(n1, sizeof n1, ok), fmt_count(n2, sizeof n2, bars), secs);
        ret = EXIT_OK;
        goto out;
    }
    int64_t bad = (int64_t)w->nall - ok;
    printf("done: %s of %s runs succeeded (%s bars written, in %s); %s did not:\n",
           fmt_count(n1, sizeof n1, ok), fmt_count(n2, sizeof n2, (int64_t)w->nall),
           fmt_count(n3, sizeof n3, bars), secs, fmt_count(n4, sizeof n4, bad));
    l = view_query(conn, list_sql, 1, p, err, sizeof err);
    for (int i = 0; l && i < PQntuples(l); i++)
        printf("  job %s  %s %s %s..%s  %s: %s\n", PQgetvalue(l, i, 0), PQgetvalue(l, i, 1),
               PQgetvalue(l, i, 2), PQgetvalue(l, i, 3), PQgetvalue(l, i, 4), PQgetvalue(l, i, 5),
               *PQgetvalue(l, i, 6) ? PQgetvalue(l, i, 6) : "(no error recorded)");
    if (present < (int64_t)w->nall)
        printf("  %s run(s) were deleted while they were waited for\n",
               fmt_count(n1, sizeof n1, (int64_t)w->nall - present));
    if (bad > 50)
        printf("  ... and %s more (SELECT id, symbol, status, last_error FROM job_runs ...)\n",
               fmt_count(n1, sizeof n1, bad - 50));
    fflush(stdout);
    fprintf(stderr, "backfilld enqueue: %s of %s runs did not succeed\n",
            fmt_count(n1, sizeof n1, bad), fmt_count(n2, sizeof n2, (int64_t)w->nall));
out:
    PQclear(l);
    PQclear(r);
    dynbuf_free(&lit);
    return ret;
}

/*
 * Follows the runs in ids (n of them, taken over: freed here) until none is
 * queued or running, drawing one progress bar every interval_ms. Returns
 * EXIT_OK when all succeeded, EXIT_RUNS_FAILED when any failed, was cancelled
 * or was deleted, and 128 + the signal when a signal stopped the wait (the
 * runs go on).
 */
static int wait_runs(PGconn *conn, int64_t *ids, size_t n, int64_t interval_ms)
{
    struct waiter w;
    memset(&w, 0, sizeof w);
    w.all = ids;
    w.nall = n;
    w.open = xcalloc(n + 1, sizeof *w.open);
    memcpy(w.open, ids, n * sizeof *ids);
    w.nopen = n;
    w.start_ms = mono_ms();
    qsort(w.all, n, sizeof *w.all, cmp_int64);
    qsort(w.open, n, sizeof *w.open, cmp_int64);
    int64_t window = interval_ms * 3 > 15000 ? interval_ms * 3 : 15000;
    int64_t start = mono_ms();
    int ret;
    struct view v;
    view_session(conn);
    view_begin(&v);
    for (;;) {
        int64_t t = mono_ms();
        if (wait_poll(conn, &w) == 0)
            rates_add(&w.rates, mono_ms(), (double)(w.nall - w.nopen),
                      (double)(w.bars + w.running_bars), 0);
        int64_t pace = view_pace(interval_ms, mono_ms() - t);
        wait_render(&v, &w, window);
        if (w.nopen == 0 || !view_wait(&v, pace))
            break;
    }
    view_end(&v);
    if (w.nopen == 0) {
        ret = wait_report(conn, &w, mono_ms() - start);
    } else {
        char nl[32];
        fprintf(stderr,
                "backfilld enqueue: stopped waiting (%s); the %s run%s not finished %s on"
                " (backfilld status --watch follows them)\n",
                strsignal(view_signal), fmt_count(nl, sizeof nl, (int64_t)w.nopen),
                w.nopen == 1 ? "" : "s", w.nopen == 1 ? "goes" : "go");
        ret = 128 + view_signal;
    }
    free(w.open);
    free(w.all);
    return ret;
}

/* --- enqueue ------------------------------------------------------------- */

static const char enqueue_help[] =
    "usage: backfilld [--config FILE] enqueue --symbols A,B,... | --symbols-file FILE\n"
    "                 | --all-active [--exchange X,Y]\n"
    "                 --timeframe TF --from DATE [--to DATE] [--feed sip|iex|otc|boats]\n"
    "                 [--adjustment raw] [--priority N] [--max-attempts N] [--force]\n"
    "                 [--wait [--interval S]]\n\n"
    "Creates (or reuses) a fetch_historical definition per symbol and queues runs for\n"
    "the range, cut into chunks of at most ~10,000 bars. Chunks already covered by a\n"
    "succeeded run are skipped unless --force; chunks already queued or running are\n"
    "never queued twice. Everything happens in one transaction.\n\n"
    "--all-active takes the symbols from Alpaca's asset list (GET /v2/assets?status=\n"
    "active&asset_class=us_equity on APCA_API_BASE_URL, default\n"
    "https://paper-api.alpaca.markets; live keys: https://api.alpaca.markets), about\n"
    "11,000 US equities and ETFs, and creates or updates one definition per symbol\n"
    "with the other options, exactly as --symbols would. --exchange keeps the symbols\n"
    "listed on those exchanges (AMEX ARCA BATS NYSE NASDAQ NYSEARCA OTC). The list is\n"
    "read whole first: an unreachable host, 401/403, an answer that is not an asset\n"
    "list or an empty list is an error naming the cause, and nothing is written.\n"
    "Defined symbols (any timeframe) that the active list does not have are printed\n"
    "and logged by symbol; their definitions are kept as they are, never disabled.\n\n"
    "--wait then follows exactly the runs this command queued, with one progress bar\n"
    "(redrawn every S seconds, default 1; one line per interval when stdout is not a\n"
    "terminal), until none is queued or running. Exit 0 when all succeeded; 1 when\n"
    "any failed, was cancelled or deleted (they are listed); 128+N when signal N\n"
    "(Ctrl-C: 130) stopped the wait, which leaves the runs going.\n\n"
    "  TF      m1 m5 m15 m30 h1 h4 d1 w1 mn1\n"
    "  DATE    YYYY-MM-DD: the New York trading day (from its midnight in\n"
    "          America/New_York, so the whole 04:00-20:00 extended session, in EST\n"
    "          or EDT; a --to date includes that whole day), or RFC 3339 (that\n"
    "          instant; --to is then exclusive).\n"
    "          No --to, or one in the future: up to now, and kept complete. Only\n"
    "          settled bars count (closed BACKFILLD_SETTLE_SECONDS ago; SIP also 15\n"
    "          minutes old unless BACKFILLD_SIP_REALTIME=true); the definition stays\n"
    "          open and the daemon fetches its tail as it settles, every\n"
    "          refresh_interval of the definition (1 hour if NULL).\n";

/* A symbol Alpaca could plausibly accept; Alpaca itself judges the rest (400). */
bool cli_symbol_ok(const char *s, char *why, size_t whylen)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32) {
        snprintf(why, whylen, "symbol '%s' must be 1 to 32 characters", s);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch >= 0x7f || ch == ',') {
            snprintf(why, whylen, "symbol '%s' has a character that cannot be in a symbol", s);
            return false;
        }
        if (islower(ch)) {
            snprintf(why, whylen, "symbol '%s' must be upper case", s);
            return false;
        }
    }
    return true;
}

/* Appends symbols from a comma/space/newline separated list. */
static int add_symbols(dynbuf_t *arr, size_t *count, const char *list, char *why, size_t whylen)
{
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && !isspace((unsigned char)*e))
            e++;
        char sym[128];
        size_t n = (size_t)(e - p);
        if (n >= sizeof sym) {
            snprintf(why, whylen, "symbol '%.20s...' is too long", p);
            return -1;
        }
        memcpy(sym, p, n);
        sym[n] = '\0';
        if (!cli_symbol_ok(sym, why, whylen))
            return -1;
        /* Postgres array literal element, quoted (symbols may hold '.' or '$'). */
        if (dynbuf_printf(arr, "%s\"%s\"", *count ? "," : "", sym) < 0) {
            snprintf(why, whylen, "too many symbols");
            return -1;
        }
        (*count)++;
        p = e;
    }
    return 0;
}

static char *read_file(const char *path, char *why, size_t whylen)
{
    char *text = read_file_capped(path, 64 << 20, NULL);
    if (!text)
        snprintf(why, whylen, "--symbols-file %s: %s", path,
                 errno == ENOMEM ? "too large" : strerror(errno));
    return text;
}

/* What `enqueue` was asked, as given (borrowed from argv). */
struct enqueue_args {
    const char *symbols, *symfile, *tf, *from, *to, *feed, *adj, *prio, *maxatt, *interval;
    const char *exchange;
    bool force, wait, all_active;
};

/* What it will do, checked: the symbols as a Postgres array literal, the range. */
struct enqueue_plan {
    dynbuf_t symbols; /* {"AAPL","BRK.B",...} */
    size_t nsym;
    int64_t from_us, to_us;
    int64_t interval_ms; /* --wait's redraw interval */
    bool open_end;       /* no --to, or one in the future: up to now, and kept complete */
    char from[40], to[40], max_attempts[16];
    char settle[32], sip_delay[32]; /* intervals for backfilld_settled_until */
    char horizon[40];               /* filled in by enqueue_txn: where the runs end */
};

/* Reads the options. EXIT_OK, EXIT_USAGE (said why), or -1 after --help. */
static int enqueue_parse(int argc, char **argv, struct enqueue_args *a)
{
    static const struct option opts[] = {{"symbols", required_argument, NULL, 's'},
                                         {"symbols-file", required_argument, NULL, 'S'},
                                         {"timeframe", required_argument, NULL, 't'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"to", required_argument, NULL, 'T'},
                                         {"feed", required_argument, NULL, 'e'},
                                         {"adjustment", required_argument, NULL, 'a'},
                                         {"priority", required_argument, NULL, 'p'},
                                         {"max-attempts", required_argument, NULL, 'm'},
                                         {"force", no_argument, NULL, 'F'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"all-active", no_argument, NULL, 'A'},
                                         {"exchange", required_argument, NULL, 'x'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            a->symbols = optarg;
            break;
        case 'S':
            a->symfile = optarg;
            break;
        case 't':
            a->tf = optarg;
            break;
        case 'f':
            a->from = optarg;
            break;
        case 'T':
            a->to = optarg;
            break;
        case 'e':
            a->feed = optarg;
            break;
        case 'a':
            a->adj = optarg;
            break;
        case 'p':
            a->prio = optarg;
            break;
        case 'm':
            a->maxatt = optarg;
            break;
        case 'F':
            a->force = true;
            break;
        case 'w':
            a->wait = true;
            break;
        case 'i':
            a->interval = optarg;
            break;
        case 'A':
            a->all_active = true;
            break;
        case 'x':
            a->exchange = optarg;
            break;
        case 'h':
            fputs(enqueue_help, stdout);
            return -1;
        default:
            fprintf(stderr, "backfilld enqueue: unknown or incomplete option '%s'\n%s",
                    argv[optind - 1], enqueue_help);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "backfilld enqueue: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if ((!a->symbols && !a->symfile && !a->all_active) || !a->tf || !a->from) {
        fprintf(stderr, "backfilld enqueue: --symbols (or --symbols-file, or --all-active), "
                        "--timeframe and --from are required\n");
        return EXIT_USAGE;
    }
    if (a->all_active && (a->symbols || a->symfile)) {
        fprintf(stderr, "backfilld enqueue: --all-active takes the symbols from Alpaca's asset "
                        "list: not with --symbols or --symbols-file\n");
        return EXIT_USAGE;
    }
    if (a->exchange && !a->all_active) {
        fprintf(stderr, "backfilld enqueue: --exchange goes with --all-active\n");
        return EXIT_USAGE;
    }
    if (a->interval && !a->wait) {
        fprintf(stderr, "backfilld enqueue: --interval goes with --wait\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Checks every value before anything touches the database: EXIT_OK, or EXIT_DATAERR (said why). */
static int enqueue_validate(const struct config *c, const struct enqueue_args *a,
                            struct enqueue_plan *p)
{
    if (!tf_to_alpaca(a->tf)) {
        fprintf(stderr, "backfilld enqueue: unknown timeframe '%s' (one of %s)\n", a->tf,
                tf_codes());
        return EXIT_DATAERR;
    }
    if (!parse_when(a->from, false, &p->from_us)) {
        fprintf(stderr,
                "backfilld enqueue: --from '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n",
                a->from);
        return EXIT_DATAERR;
    }
    if (a->to && !parse_when(a->to, true, &p->to_us)) {
        fprintf(stderr,
                "backfilld enqueue: --to '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n",
                a->to);
        return EXIT_DATAERR;
    }
    int64_t now_us = wall_us() / 1000000 * 1000000;
    if (!a->to)
        p->to_us = now_us;
    p->open_end = p->to_us >= now_us;
    if (p->to_us <= p->from_us) {
        fprintf(stderr,
                "backfilld enqueue: the range is empty or inverted (--to must be after --from)\n");
        return EXIT_DATAERR;
    }
    static const char *feeds[] = {"sip", "iex", "otc", "boats"};
    bool feed_ok = !a->feed;
    for (size_t i = 0; a->feed && i < ARRAY_SIZE(feeds); i++)
        feed_ok |= strcmp(a->feed, feeds[i]) == 0;
    if (!feed_ok) {
        fprintf(stderr, "backfilld enqueue: unknown feed '%s' (sip, iex, otc or boats)\n", a->feed);
        return EXIT_DATAERR;
    }
    int64_t v, attempts = c->max_attempts;
    if (a->prio && !parse_i64(a->prio, -1000000, 1000000, &v)) {
        fprintf(stderr, "backfilld enqueue: --priority must be a whole number\n");
        return EXIT_DATAERR;
    }
    if (a->maxatt && !parse_i64(a->maxatt, 1, 100, &attempts)) {
        fprintf(stderr, "backfilld enqueue: --max-attempts must be from 1 to 100\n");
        return EXIT_DATAERR;
    }
    p->interval_ms = 1000;
    if (a->interval && !parse_interval(a->interval, &p->interval_ms)) {
        fprintf(stderr, "backfilld enqueue: --interval must be from 0.1 to 3600 seconds\n");
        return EXIT_DATAERR;
    }
    if (a->exchange && universe_check_exchanges(a->exchange) != EXIT_OK)
        return EXIT_DATAERR;
    bars_format_time(p->from_us, p->from, sizeof p->from);
    bars_format_time(p->to_us, p->to, sizeof p->to);
    snprintf(p->settle, sizeof p->settle, "%lld seconds", (long long)c->settle_seconds);
    snprintf(p->sip_delay, sizeof p->sip_delay, "%d seconds",
             c->sip_realtime ? 0 : SIP_DELAY_SECONDS);
    snprintf(p->max_attempts, sizeof p->max_attempts, "%lld", (long long)attempts);
    if (a->all_active)
        return EXIT_OK; /* the symbols come from the asset list */
    char why[256];
    int rc = dynbuf_append(&p->symbols, "{", 1);
    if (rc == 0 && a->symbols)
        rc = add_symbols(&p->symbols, &p->nsym, a->symbols, why, sizeof why);
    if (rc == 0 && a->symfile) {
        char *text = read_file(a->symfile, why, sizeof why);
        rc = text ? add_symbols(&p->symbols, &p->nsym, text, why, sizeof why) : -1;
        free(text);
    }
    if (rc == 0 && p->nsym == 0) {
        snprintf(why, sizeof why, "no symbols given");
        rc = -1;
    }
    if (rc == 0)
        rc = dynbuf_append(&p->symbols, "}", 1);
    if (rc != 0) {
        fprintf(stderr, "backfilld enqueue: %s\n", why);
        return EXIT_DATAERR;
    }
    return EXIT_OK;
}

/*
 * The runs this transaction inserted, after the definitions' statement
 * (before) or after enqueue_ranges (after): queued runs of these definitions
 * whose row version this transaction wrote. Nobody else can write a row
 * version with our xid, and nobody else can see or change a row we inserted
 * before we commit, so this is exact under any concurrency. The only other
 * runs we write are those the definitions' trigger re-prioritises or
 * (un)pauses, already there before enqueue_ranges: the "before" set, left out.
 */
static const char enqueue_ours_sql[] =
    "SELECT id FROM job_runs WHERE job_def_id = ANY($1::bigint[]) AND status = 'queued'"
    " AND xmin = pg_current_xact_id()::xid AND id <> ALL($2::bigint[]) ORDER BY id";

/* Reads the ids of an enqueue_ours_sql answer into a new array (caller frees). */
static int64_t *result_ids(PGresult *r, size_t *n)
{
    *n = (size_t)PQntuples(r);
    int64_t *ids = xcalloc(*n + 1, sizeof *ids);
    for (size_t i = 0; i < *n; i++)
        (void)parse_i64(PQgetvalue(r, (int)i, 0), 1, INT64_MAX, &ids[i]);
    return ids;
}

/*
 * One transaction: creates or widens one definition per symbol (an open end
 * stays open), then queues the chunks of the range not yet covered or queued.
 * 0 with *queued and *chunks set, or -1 (said why, rolled back). With
 * run_ids non-NULL (--wait), *run_ids receives the ids of the runs queued
 * (*nrun_ids of them; caller frees).
 */
static int enqueue_txn(PGconn *conn, const struct enqueue_args *a, struct enqueue_plan *p,
                       int64_t *queued, int64_t *chunks, int64_t **run_ids, size_t *nrun_ids)
{
    dynbuf_t ids, before;
    dynbuf_init(&ids, 64 << 20);
    dynbuf_init(&before, (size_t)1 << 30);
    int64_t *pre = NULL;
    size_t npre = 0;

    PGresult *r = q(conn, "BEGIN", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    /* No --to: an open end (NULL), kept complete as bars settle. */
    const char *p1[] = {p->symbols.data,     a->tf, a->feed, a->adj, a->prio, p->from,
                        a->to ? p->to : NULL};
    r = q(
        conn,
        "INSERT INTO job_definitions AS d (symbol, timeframe, job_type, feed, adjustment, priority,"
        " backfill_from, backfill_to)"
        " SELECT s, $2, 'fetch_historical', coalesce($3, 'sip'), coalesce($4, 'raw'),"
        " coalesce($5::int, 0), $6::timestamptz, $7::timestamptz FROM unnest($1::text[]) AS s"
        " ON CONFLICT (symbol, timeframe, job_type) DO UPDATE SET"
        " feed = coalesce($3, d.feed), adjustment = coalesce($4, d.adjustment),"
        " priority = coalesce($5::int, d.priority),"
        " backfill_from = least(d.backfill_from, EXCLUDED.backfill_from),"
        " backfill_to = CASE WHEN (d.backfill_to IS NULL AND d.backfill_from IS NOT NULL)"
        "                      OR EXCLUDED.backfill_to IS NULL THEN NULL"
        "                    ELSE greatest(d.backfill_to, EXCLUDED.backfill_to) END"
        " RETURNING d.id",
        7, p1);
    if (!r)
        goto fail;
    int irc = dynbuf_append(&ids, "{", 1);
    for (int i = 0; i < PQntuples(r); i++)
        irc |= dynbuf_printf(&ids, i ? ",%s" : "%s", PQgetvalue(r, i, 0));
    irc |= dynbuf_append(&ids, "}", 1);
    PQclear(r);
    if (irc != 0)
        goto fail;
    if (run_ids) {
        const char *p3[] = {ids.data, "{}"};
        r = q(conn, enqueue_ours_sql, 2, p3);
        if (!r)
            goto fail;
        pre = result_ids(r, &npre);
        PQclear(r);
        if (ids_literal(&before, pre, npre) < 0)
            goto fail;
    }
    /* Runs end at the settled horizon of the definitions' series (the
     * earliest, if their feeds differ): bars not final yet are never
     * counted as covered; the scheduler extends open ends as they settle. */
    const char *p2[] = {ids.data,        p->from, p->to,     a->force ? "true" : "false",
                        p->max_attempts, a->tf,   p->settle, p->sip_delay};
    r = q(conn,
          "WITH h AS (SELECT least($3::timestamptz, (SELECT min(backfilld_settled_until(timeframe,"
          " feed, now(), $7::interval, $8::interval)) FROM job_definitions"
          " WHERE id = ANY ($1::bigint[]))) AS t)"
          " SELECT CASE WHEN h.t > $2::timestamptz THEN enqueue_ranges($1::bigint[],"
          " $2::timestamptz, h.t, $4::boolean, $5::int) ELSE 0 END,"
          " (SELECT count(*) FROM backfill_chunks($6, $2::timestamptz, h.t))"
          " * cardinality($1::bigint[]),"
          " to_char(h.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM h",
          8, p2);
    if (!r)
        goto fail;
    (void)parse_i64(PQgetvalue(r, 0, 0), 0, INT64_MAX, queued);
    (void)parse_i64(PQgetvalue(r, 0, 1), 0, INT64_MAX, chunks);
    snprintf(p->horizon, sizeof p->horizon, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (run_ids) {
        const char *p3[] = {ids.data, before.data};
        r = q(conn, enqueue_ours_sql, 2, p3);
        if (!r)
            goto fail;
        *run_ids = result_ids(r, nrun_ids);
        PQclear(r);
        if ((int64_t)*nrun_ids != *queued) {
            /* A broken invariant: refuse rather than follow the wrong runs. */
            fprintf(stderr,
                    "backfilld enqueue: queued %lld runs but found %zu of them to wait for\n",
                    (long long)*queued, *nrun_ids);
            goto fail;
        }
    }
    r = q(conn, "COMMIT", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    dynbuf_free(&ids);
    dynbuf_free(&before);
    free(pre);
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    fprintf(stderr, "backfilld enqueue: nothing was queued\n");
    if (run_ids) {
        free(*run_ids);
        *run_ids = NULL;
    }
    dynbuf_free(&ids);
    dynbuf_free(&before);
    free(pre);
    return -1;
}

int cli_enqueue(const struct config *c, int argc, char **argv)
{
    struct enqueue_args a;
    int ret = enqueue_parse(argc, argv, &a);
    if (ret != EXIT_OK)
        return ret < 0 ? EXIT_OK : ret;
    struct enqueue_plan p = {0};
    dynbuf_init(&p.symbols, 64 << 20);
    PGconn *conn = NULL;
    struct universe u = {0};
    ret = enqueue_validate(c, &a, &p);
    if (ret != EXIT_OK)
        goto out;
    if (a.all_active) {
        /* Read and checked whole before the database is touched. */
        ret = universe_fetch(c, a.exchange, &u);
        if (ret != EXIT_OK)
            goto out;
        ret = EXIT_SOFTWARE;
        if (universe_literal(&p.symbols, u.syms, u.nsyms) < 0) {
            fprintf(stderr, "backfilld enqueue: too many symbols in the asset list\n");
            goto out;
        }
        p.nsym = u.nsyms;
        char n1[32], n2[32];
        printf("asset list: %s active us_equity symbols from %s",
               fmt_count(n1, sizeof n1, (int64_t)u.listed), c->base_url);
        if (a.exchange)
            printf("; %s of them on %s", fmt_count(n2, sizeof n2, (int64_t)u.nsyms), a.exchange);
        printf("\n");
        fflush(stdout);
    }
    ret = EXIT_UNAVAILABLE;
    conn = connect_db(c);
    if (!conn)
        goto out;
    ret = check_schema(conn);
    if (ret != EXIT_OK)
        goto out;
    int64_t queued = 0, chunks = 0;
    int64_t *run_ids = NULL;
    size_t nrun = 0;
    ret = EXIT_SOFTWARE;
    if (enqueue_txn(conn, &a, &p, &queued, &chunks, a.wait ? &run_ids : NULL, &nrun) < 0)
        goto out;
    printf("queued %lld run%s for %zu symbol%s (%s, %s to %s%s); %lld chunk%s already covered or "
           "queued%s\n",
           (long long)queued, queued == 1 ? "" : "s", p.nsym, p.nsym == 1 ? "" : "s", a.tf, p.from,
           p.horizon,
           p.open_end ? ", the last settled bar: later bars are fetched as they settle" : "",
           (long long)(chunks - queued), chunks - queued == 1 ? "" : "s",
           chunks - queued > 0 && !a.force ? " (--force re-fetches covered ones)" : "");
    fflush(stdout);
    ret = EXIT_OK;
    if (a.all_active && universe_report(conn, &u) != EXIT_OK) {
        free(run_ids);
        ret = EXIT_SOFTWARE;
        goto out;
    }
    fflush(stdout);
    if (a.wait && nrun > 0)
        ret = wait_runs(conn, run_ids, nrun, p.interval_ms); /* takes run_ids */
    else
        free(run_ids);
out:
    if (conn)
        PQfinish(conn);
    universe_free(&u);
    dynbuf_free(&p.symbols);
    return ret;
}
