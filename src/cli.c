/*
 * cli: see cli.h. Every failure prints one line to stderr naming what is
 * wrong; nothing is half-written (enqueue runs in one transaction).
 */
#include "cli.h"

#include "bars.h"
#include "log.h"
#include "migrations.h"
#include "timeframe.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <curl/curl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PGconn *connect_db(const struct config *c)
{
    const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", NULL};
    const char *vals[] = {c->database_url, "backfilld-cli", "10", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        /* libpq may quote the connection string (and so the password) here. */
        char m[1024];
        log_scrub(PQerrorMessage(conn), m, sizeof m);
        fprintf(stderr, "backfilld: cannot connect to the database: %.*s\n",
                (int)strcspn(m, "\n"), m);
        PQfinish(conn);
        return NULL;
    }
    PQclear(PQexec(conn, "SET TimeZone = 'UTC'"));
    return conn;
}

/* Runs a statement; prints the server's message on failure and returns NULL. */
static PGresult *q(PGconn *conn, const char *sql, int n, const char *const *params)
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

static int check_schema(PGconn *conn)
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

/* --- migrate ------------------------------------------------------------- */

static bool parse_when(const char *s, bool is_to, int64_t *us);

static const char migrate_help[] =
    "usage: backfilld [--config FILE] migrate [--adopt [--from DATE]]\n"
    "       backfilld [--config FILE] migrate --create-role NAME | --grant-role NAME |\n"
    "                                         --print-role-sql NAME\n\n"
    "Applies the schema migrations compiled into this binary (sql/*.sql),\n"
    "each once and in its own transaction, recorded in schema_migrations.\n"
    "Safe to run again, and from several hosts at once.\n\n"
    "A database that already has tables of these names from another system is\n"
    "refused. --adopt keeps them as legacy_<name>, creates the schema and imports\n"
    "legacy_job_definitions (symbol, timeframe, job type, enabled; symbols that\n"
    "are not tickers come in disabled), all in one transaction; old runs stay in\n"
    "legacy_job_runs and the scheduler works out what is missing. --from DATE is\n"
    "where imported historical definitions start when the old table has no start.\n\n"
    "--create-role NAME creates a login role that can run the daemon and nothing\n"
    "else (the queue's functions, reading the queue, writing bars), as the role\n"
    "running migrate; --grant-role NAME grants the same to an existing role (needed\n"
    "after upgrading to schema version 2 when the daemon's role is not the owner);\n"
    "--print-role-sql NAME prints the SQL of --create-role instead (for a DBA).\n";

/* migrate --adopt: prints what it did. */
static int adopt(PGconn *conn, const char *from_arg)
{
    char from[40] = "";
    int64_t from_us;
    if (from_arg) {
        if (!parse_when(from_arg, false, &from_us)) {
            fprintf(stderr, "backfilld migrate: --from '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n",
                    from_arg);
            return EXIT_DATAERR;
        }
        bars_format_time(from_us, from, sizeof from);
    }
    struct migrate_adoption a;
    char err[1024];
    int rc = migrations_adopt(conn, from_arg ? from : NULL, &a, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "backfilld migrate --adopt: %s\nnothing was changed\n", err);
        migrations_adoption_free(&a);
        return EXIT_SOFTWARE;
    }
    printf("schema at version %d\n", migrations_latest());
    if (a.nkept == 0)
        printf("no tables of another system were in the way: nothing to adopt\n");
    else
        printf("kept the old tables as %s\n", a.kept.data);
    if (a.nkept > 0 && a.kept.data && strstr(a.kept.data, "legacy_job_definitions")) {
        printf("imported %lld definition%s (%lld enabled)\n", (long long)a.imported,
               a.imported == 1 ? "" : "s", (long long)a.enabled);
        if (a.not_tickers.len > 0)
            printf("imported disabled, not ticker symbols: %s\n", a.not_tickers.data);
        if (a.skipped > 0)
            printf("not imported (unknown timeframe or job type, as symbol/timeframe/job_type): "
                   "%lld row%s: %s\n",
                   (long long)a.skipped, a.skipped == 1 ? "" : "s", a.skipped_rows.data);
        if (a.no_start > 0)
            printf("%lld historical definition%s without a start: nothing is scheduled for them "
                   "until backfill_from is set (or migrate --adopt --from DATE)\n",
                   (long long)a.no_start, a.no_start == 1 ? " has" : "s have");
        printf("left %lld old run%s in legacy_job_runs; the scheduler works out what is missing\n",
               (long long)a.legacy_runs, a.legacy_runs == 1 ? "" : "s");
    }
    migrations_adoption_free(&a);
    return EXIT_OK;
}

enum role_mode { ROLE_CREATE, ROLE_GRANT, ROLE_PRINT };

/* migrate --create-role / --grant-role / --print-role-sql. */
static int role(PGconn *conn, const char *name, enum role_mode mode)
{
    bool create = mode == ROLE_CREATE;
    dynbuf_t sql;
    dynbuf_init(&sql, 1 << 16);
    char err[512];
    int ret = EXIT_OK;
    if (migrations_role_sql(conn, name, mode != ROLE_GRANT, &sql, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld migrate: %s\n", err);
        ret = EXIT_DATAERR;
    } else if (mode == ROLE_PRINT) {
        fputs(sql.data, stdout);
    } else {
        PGresult *r = q(conn, "BEGIN", 0, NULL);
        PQclear(r);
        PGresult *body = r ? PQexec(conn, sql.data) : NULL;
        if (!body || PQresultStatus(body) != PGRES_COMMAND_OK) {
            char m[512];
            log_scrub(body ? PQresultErrorMessage(body) : PQerrorMessage(conn), m, sizeof m);
            fprintf(stderr, "backfilld migrate --create-role: %.*s\nnothing was changed\n",
                    (int)strcspn(m, "\n"), m);
            PQclear(PQexec(conn, "ROLLBACK"));
            const char *state = body ? PQresultErrorField(body, PG_DIAG_SQLSTATE) : NULL;
            ret = state && strcmp(state, "42710") == 0 ? EXIT_DATAERR : EXIT_SOFTWARE; /* exists */
        } else {
            PQclear(PQexec(conn, "COMMIT"));
            if (create)
                printf("created role %s: it can run the daemon (set its password, e.g. \\password "
                       "%s in psql) and nothing else\n",
                       name, name);
            else
                printf("granted role %s what running the daemon needs\n", name);
        }
        PQclear(body);
    }
    dynbuf_free(&sql);
    return ret;
}

int cli_migrate(const struct config *c, int argc, char **argv)
{
    bool adopting = false;
    const char *from = NULL, *role_name = NULL;
    enum role_mode mode = ROLE_PRINT;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(migrate_help, stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--adopt") == 0) {
            adopting = true;
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
            from = argv[++i];
        } else if ((strcmp(argv[i], "--create-role") == 0 || strcmp(argv[i], "--grant-role") == 0 ||
                    strcmp(argv[i], "--print-role-sql") == 0) && i + 1 < argc) {
            mode = strcmp(argv[i], "--create-role") == 0  ? ROLE_CREATE
                   : strcmp(argv[i], "--grant-role") == 0 ? ROLE_GRANT
                                                          : ROLE_PRINT;
            role_name = argv[++i];
        } else {
            fprintf(stderr, "backfilld migrate: unexpected argument '%s'\n%s", argv[i], migrate_help);
            return EXIT_USAGE;
        }
    }
    if ((from && !adopting) || (role_name && adopting)) {
        fprintf(stderr, "backfilld migrate: --from goes with --adopt, and --adopt not with a role\n");
        return EXIT_USAGE;
    }
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret;
    char err[1024];
    int applied = 0;
    if (role_name) {
        ret = check_schema(conn);
        if (ret == EXIT_OK)
            ret = role(conn, role_name, mode);
        goto out;
    }
    if (adopting) {
        ret = adopt(conn, from);
        goto out;
    }
    dynbuf_t names;
    dynbuf_init(&names, 1 << 16);
    int n = migrations_conflicts(conn, &names, err, sizeof err);
    if (n != 0) {
        if (n < 0)
            fprintf(stderr, "backfilld migrate: %s\n", err);
        else
            fprintf(stderr,
                    "backfilld migrate: this database has %s named %s, not made by backfilld (it "
                    "has no schema_migrations): nothing was changed.\n"
                    "  To keep them as legacy_<name> and import their definitions: backfilld "
                    "migrate --adopt\n"
                    "  To leave them alone: point BACKFILLD_DATABASE_URL at another database (or "
                    "set search_path to another schema)\n",
                    n == 1 ? "a table" : "tables", names.data);
        dynbuf_free(&names);
        ret = n < 0 ? EXIT_SOFTWARE : EXIT_DATAERR;
        goto out;
    }
    dynbuf_free(&names);
    if (migrations_apply(conn, &applied, err, sizeof err) < 0) {
        fprintf(stderr, "backfilld migrate: %s\n", err);
        ret = EXIT_SOFTWARE;
        goto out;
    }
    printf("schema at version %d (%d migration%s applied)\n", migrations_latest(), applied,
           applied == 1 ? "" : "s");
    ret = EXIT_OK;
out:
    PQfinish(conn);
    return ret;
}

/* --- enqueue ------------------------------------------------------------- */

static const char enqueue_help[] =
    "usage: backfilld [--config FILE] enqueue --symbols A,B,... | --symbols-file FILE\n"
    "                 --timeframe TF --from DATE [--to DATE] [--feed sip|iex|otc|boats]\n"
    "                 [--adjustment raw] [--priority N] [--max-attempts N] [--force]\n\n"
    "Creates (or reuses) a fetch_historical definition per symbol and queues runs for\n"
    "the range, cut into chunks of at most ~10,000 bars. Chunks already covered by a\n"
    "succeeded run are skipped unless --force; chunks already queued or running are\n"
    "never queued twice. Everything happens in one transaction.\n\n"
    "  TF      m1 m5 m15 m30 h1 h4 d1 w1 mn1\n"
    "  DATE    YYYY-MM-DD (a --to date includes that whole day) or RFC 3339\n"
    "          (an instant; --to is then exclusive). --to defaults to now.\n";

/* A symbol Alpaca could plausibly accept; Alpaca itself judges the rest (400). */
static bool symbol_ok(const char *s, char *why, size_t whylen)
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

/* Parses a --from/--to value; a bare date as --to means the end of that day. */
static bool parse_when(const char *s, bool is_to, int64_t *us)
{
    if (bars_parse_time(s, us) < 0)
        return false;
    if (is_to && strlen(s) == 10)
        *us += INT64_C(86400000000);
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
        if (!symbol_ok(sym, why, whylen))
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
    const char *symbols, *symfile, *tf, *from, *to, *feed, *adj, *prio, *maxatt;
    bool force;
};

/* What it will do, checked: the symbols as a Postgres array literal, the range. */
struct enqueue_plan {
    dynbuf_t symbols; /* {"AAPL","BRK.B",...} */
    size_t nsym;
    int64_t from_us, to_us;
    char from[40], to[40], max_attempts[16];
};

/* Reads the options. EXIT_OK, EXIT_USAGE (said why), or -1 after --help. */
static int enqueue_parse(int argc, char **argv, struct enqueue_args *a)
{
    static const struct option opts[] = {
        {"symbols", required_argument, NULL, 's'},  {"symbols-file", required_argument, NULL, 'S'},
        {"timeframe", required_argument, NULL, 't'}, {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 'T'},        {"feed", required_argument, NULL, 'e'},
        {"adjustment", required_argument, NULL, 'a'}, {"priority", required_argument, NULL, 'p'},
        {"max-attempts", required_argument, NULL, 'm'}, {"force", no_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': a->symbols = optarg; break;
        case 'S': a->symfile = optarg; break;
        case 't': a->tf = optarg; break;
        case 'f': a->from = optarg; break;
        case 'T': a->to = optarg; break;
        case 'e': a->feed = optarg; break;
        case 'a': a->adj = optarg; break;
        case 'p': a->prio = optarg; break;
        case 'm': a->maxatt = optarg; break;
        case 'F': a->force = true; break;
        case 'h': fputs(enqueue_help, stdout); return -1;
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
    if ((!a->symbols && !a->symfile) || !a->tf || !a->from) {
        fprintf(stderr, "backfilld enqueue: --symbols (or --symbols-file), --timeframe and --from "
                        "are required\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Checks every value before anything touches the database: EXIT_OK, or EXIT_DATAERR (said why). */
static int enqueue_validate(const struct config *c, const struct enqueue_args *a,
                            struct enqueue_plan *p)
{
    if (!tf_to_alpaca(a->tf)) {
        fprintf(stderr, "backfilld enqueue: unknown timeframe '%s' (one of %s)\n", a->tf, tf_codes());
        return EXIT_DATAERR;
    }
    if (!parse_when(a->from, false, &p->from_us)) {
        fprintf(stderr, "backfilld enqueue: --from '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n", a->from);
        return EXIT_DATAERR;
    }
    if (a->to && !parse_when(a->to, true, &p->to_us)) {
        fprintf(stderr, "backfilld enqueue: --to '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n", a->to);
        return EXIT_DATAERR;
    }
    if (!a->to)
        p->to_us = wall_us() / 1000000 * 1000000;
    if (p->to_us <= p->from_us) {
        fprintf(stderr, "backfilld enqueue: the range is empty or inverted (--to must be after --from)\n");
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
    bars_format_time(p->from_us, p->from, sizeof p->from);
    bars_format_time(p->to_us, p->to, sizeof p->to);
    snprintf(p->max_attempts, sizeof p->max_attempts, "%lld", (long long)attempts);
    return EXIT_OK;
}

/*
 * One transaction: creates or widens one definition per symbol (an open end
 * stays open), then queues the chunks of the range not yet covered or queued.
 * 0 with *queued and *chunks set, or -1 (said why, rolled back).
 */
static int enqueue_txn(PGconn *conn, const struct enqueue_args *a, const struct enqueue_plan *p,
                       int64_t *queued, int64_t *chunks)
{
    dynbuf_t ids;
    dynbuf_init(&ids, 64 << 20);
    PGresult *r = q(conn, "BEGIN", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    const char *p1[] = {p->symbols.data, a->tf, a->feed, a->adj, a->prio, p->from, p->to};
    r = q(conn,
          "INSERT INTO job_definitions AS d (symbol, timeframe, job_type, feed, adjustment, priority,"
          " backfill_from, backfill_to)"
          " SELECT s, $2, 'fetch_historical', coalesce($3, 'sip'), coalesce($4, 'raw'),"
          " coalesce($5::int, 0), $6::timestamptz, $7::timestamptz FROM unnest($1::text[]) AS s"
          " ON CONFLICT (symbol, timeframe, job_type) DO UPDATE SET"
          " feed = coalesce($3, d.feed), adjustment = coalesce($4, d.adjustment),"
          " priority = coalesce($5::int, d.priority),"
          " backfill_from = least(d.backfill_from, EXCLUDED.backfill_from),"
          " backfill_to = CASE WHEN d.backfill_to IS NULL AND d.backfill_from IS NOT NULL THEN NULL"
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
    const char *p2[] = {ids.data, p->from, p->to, a->force ? "true" : "false", p->max_attempts, a->tf};
    r = q(conn,
          "SELECT coalesce(sum(enqueue_range(id, $2::timestamptz, $3::timestamptz, $4::boolean,"
          " $5::int)), 0), (SELECT count(*) FROM backfill_chunks($6, $2::timestamptz,"
          " $3::timestamptz)) * cardinality($1::bigint[]) FROM unnest($1::bigint[]) AS id",
          6, p2);
    if (!r)
        goto fail;
    (void)parse_i64(PQgetvalue(r, 0, 0), 0, INT64_MAX, queued);
    (void)parse_i64(PQgetvalue(r, 0, 1), 0, INT64_MAX, chunks);
    PQclear(r);
    r = q(conn, "COMMIT", 0, NULL);
    if (!r)
        goto fail;
    PQclear(r);
    dynbuf_free(&ids);
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    fprintf(stderr, "backfilld enqueue: nothing was queued\n");
    dynbuf_free(&ids);
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
    ret = enqueue_validate(c, &a, &p);
    if (ret != EXIT_OK)
        goto out;
    ret = EXIT_UNAVAILABLE;
    conn = connect_db(c);
    if (!conn)
        goto out;
    ret = check_schema(conn);
    if (ret != EXIT_OK)
        goto out;
    int64_t queued = 0, chunks = 0;
    ret = EXIT_SOFTWARE;
    if (enqueue_txn(conn, &a, &p, &queued, &chunks) < 0)
        goto out;
    printf("queued %lld run%s for %zu symbol%s (%s, %s to %s); %lld chunk%s already covered or "
           "queued%s\n",
           (long long)queued, queued == 1 ? "" : "s", p.nsym, p.nsym == 1 ? "" : "s", a.tf, p.from,
           p.to, (long long)(chunks - queued), chunks - queued == 1 ? "" : "s",
           chunks - queued > 0 && !a.force ? " (--force re-fetches covered ones)" : "");
    ret = EXIT_OK;
out:
    if (conn)
        PQfinish(conn);
    dynbuf_free(&p.symbols);
    return ret;
}

/* --- status -------------------------------------------------------------- */

/* The whole report as one JSON document, computed by the database in one snapshot. */
static const char status_sql[] =
    "WITH r AS (SELECT r.*, d.enabled FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id),"
    " recent AS (SELECT * FROM job_runs WHERE status = 'succeeded'"
    "            AND finished_at > now() - interval '5 minutes'),"
    /* the part of those 5 minutes that saw completions (5 s at least): a backfill that
     * started a minute ago runs at its rate, not at a fifth of it */
    " span AS (SELECT greatest(5, least(300, coalesce(extract(epoch FROM now() - min(finished_at)),"
    "            300)))::float8 AS s FROM recent),"
    " errs AS (SELECT e->>'error' AS error, count(*) AS n, max((e->>'at')::timestamptz) AS last_at"
    "          FROM job_runs, jsonb_array_elements(errors) e"
    "          WHERE updated_at > now() - interval '24 hours'"
    "            AND (e->>'at')::timestamptz > now() - interval '24 hours'"
    "          GROUP BY 1 ORDER BY 2 DESC, 3 DESC LIMIT 10),"
    " defs AS (SELECT d.id, d.symbol, d.timeframe, d.job_type, d.enabled, d.priority,"
    "            count(*) FILTER (WHERE x.status IN ('queued','running')) AS runs_left,"
    "            count(*) FILTER (WHERE x.status = 'succeeded') AS runs_succeeded,"
    "            count(*) FILTER (WHERE x.status = 'failed') AS runs_failed,"
    "            min(x.range_start) FILTER (WHERE x.status = 'succeeded') AS covered_from,"
    "            max(x.range_end) FILTER (WHERE x.status = 'succeeded') AS covered_to,"
    "            (SELECT max(b.ts) FROM bars b WHERE b.symbol = d.symbol AND b.timeframe = d.timeframe) AS last_bar"
    "          FROM job_definitions d LEFT JOIN job_runs x ON x.job_def_id = d.id"
    "          GROUP BY d.id ORDER BY runs_left DESC, d.symbol, d.timeframe LIMIT $1::int)"
    " SELECT json_build_object("
    "  'at', now(),"
    "  'runs', json_build_object("
    "     'queued', (SELECT count(*) FROM r WHERE status = 'queued'),"
    "     'queued_ready', (SELECT count(*) FROM r WHERE status = 'queued' AND enabled AND run_after <= now()),"
    "     'queued_waiting_retry', (SELECT count(*) FROM r WHERE status = 'queued' AND run_after > now()),"
    "     'queued_disabled', (SELECT count(*) FROM r WHERE status = 'queued' AND NOT enabled),"
    "     'running', (SELECT count(*) FROM r WHERE status = 'running'),"
    "     'succeeded', (SELECT count(*) FROM r WHERE status = 'succeeded'),"
    "     'failed', (SELECT count(*) FROM r WHERE status = 'failed'),"
    "     'cancelled', (SELECT count(*) FROM r WHERE status = 'cancelled')),"
    "  'last_5_min', json_build_object("
    "     'runs_succeeded', (SELECT count(*) FROM recent),"
    "     'bars', (SELECT coalesce(sum(bars_written), 0) FROM recent),"
    "     'runs_per_min', round(((SELECT count(*) FROM recent) * 60.0 / (SELECT s FROM span))::numeric, 2)),"
    "  'oldest_queued_s', (SELECT coalesce(extract(epoch FROM now() - min(created_at))::bigint, 0)"
    "                      FROM r WHERE status = 'queued' AND enabled),"
    "  'eta_s', (SELECT CASE WHEN (SELECT count(*) FROM recent) < 5 THEN NULL ELSE"
    "            ((SELECT count(*) FROM r WHERE status IN ('queued','running') AND enabled)"
    "             * (SELECT s FROM span) / (SELECT count(*) FROM recent))::bigint END),"
    "  'bars_total', (SELECT coalesce(sum(bars_written), 0) FROM job_runs WHERE status = 'succeeded'),"
    "  'workers', (SELECT coalesce(json_agg(json_build_object('worker', locked_by, 'running', n)), '[]')"
    "              FROM (SELECT locked_by, count(*) AS n FROM job_runs WHERE status = 'running'"
    "                    GROUP BY 1 ORDER BY 1) w),"
    "  'recent_errors', (SELECT coalesce(json_agg(json_build_object('error', error, 'count', n,"
    "                     'last_at', last_at)), '[]') FROM errs),"
    "  'definitions', (SELECT coalesce(json_agg(json_build_object('id', id, 'symbol', symbol,"
    "                   'timeframe', timeframe, 'job_type', job_type, 'enabled', enabled,"
    "                   'priority', priority, 'runs_left', runs_left,"
    "                   'runs_succeeded', runs_succeeded, 'runs_failed', runs_failed,"
    "                   'covered_from', covered_from, 'covered_to', covered_to,"
    "                   'last_bar', last_bar)), '[]') FROM defs),"
    "  'definitions_total', (SELECT count(*) FROM job_definitions))";

static const char status_help[] =
    "usage: backfilld [--config FILE] status [--json] [--limit N]\n\n"
    "Shows runs by status, throughput over the last 5 minutes, the most common\n"
    "errors of the last 24 hours, and per-definition coverage (the N definitions\n"
    "with the most runs left, default 20). --json prints the same as one document.\n";

static void print_row(PGresult *r, int row)
{
    int n = PQnfields(r);
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? "  " : "  ", PQgetvalue(r, row, i));
    printf("\n");
}

int cli_status(const struct config *c, int argc, char **argv)
{
    bool json = false;
    int64_t limit = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (!parse_i64(argv[++i], 1, 100000, &limit)) {
                fprintf(stderr, "backfilld status: --limit must be from 1 to 100000\n");
                return EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(status_help, stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "backfilld status: unexpected argument '%s'\n%s", argv[i], status_help);
            return EXIT_USAGE;
        }
    }
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret = check_schema(conn);
    if (ret != EXIT_OK) {
        PQfinish(conn);
        return ret;
    }
    char lim[24];
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    const char *p[] = {lim};
    if (json) {
        PGresult *r = q(conn, status_sql, 1, p);
        if (!r) {
            PQfinish(conn);
            return EXIT_SOFTWARE;
        }
        printf("%s\n", PQgetvalue(r, 0, 0));
        PQclear(r);
        PQfinish(conn);
        return EXIT_OK;
    }
    /* Text: the same numbers, read back out of the JSON by the database. */
    ret = EXIT_OK;
    PGresult *js = q(conn, status_sql, 1, p);
    if (!js) {
        PQfinish(conn);
        return EXIT_SOFTWARE;
    }
    const char *p2[] = {lim, PQgetvalue(js, 0, 0)};
    PGresult *h = q(conn,
                    "WITH s AS (SELECT $2::json AS j)"
                    " SELECT j->'runs'->>'queued', j->'runs'->>'queued_ready',"
                    " j->'runs'->>'queued_waiting_retry', j->'runs'->>'queued_disabled',"
                    " j->'runs'->>'running', j->'runs'->>'succeeded', j->'runs'->>'failed',"
                    " j->'runs'->>'cancelled', j->'last_5_min'->>'runs_succeeded',"
                    " j->'last_5_min'->>'bars', j->'last_5_min'->>'runs_per_min',"
                    " j->>'oldest_queued_s', coalesce(j->>'eta_s', '-'), j->>'bars_total',"
                    " j->>'definitions_total', j->>'at', $1::text FROM s",
                    2, p2);
    if (!h) {
        PQclear(js);
        PQfinish(conn);
        return EXIT_SOFTWARE;
    }
#define V(i) PQgetvalue(h, 0, (i))
    printf("backfilld status at %s\n\n", V(15));
    printf("runs       queued %s (ready %s, waiting to retry %s, definition disabled %s)\n", V(0),
           V(1), V(2), V(3));
    printf("           running %s, succeeded %s, failed %s, cancelled %s\n", V(4), V(5), V(6),
           V(7));
    printf("last 5 min %s runs succeeded, %s bars (%s runs/min)\n", V(8), V(9), V(10));
    printf("queue      oldest queued run waiting %s s; ETA %s s; %s bars written in all\n\n",
           V(11), V(12), V(13));
#undef V
    PQclear(h);
    h = q(conn,
          "SELECT e->>'count', e->>'error' FROM json_array_elements($1::json->'recent_errors') e",
          1, (const char *const[]){PQgetvalue(js, 0, 0)});
    if (h) {
        printf("most common errors, last 24 h:%s\n", PQntuples(h) ? "" : " none");
        for (int i = 0; i < PQntuples(h); i++)
            printf("  %6s x %s\n", PQgetvalue(h, i, 0), PQgetvalue(h, i, 1));
        PQclear(h);
    }
    h = q(conn,
          "SELECT rpad(d->>'symbol', 10) || rpad(d->>'timeframe', 5) ||"
          " rpad(CASE WHEN (d->>'enabled')::boolean THEN 'on' ELSE 'OFF' END, 5) ||"
          " lpad(d->>'runs_left', 6) || lpad(d->>'runs_succeeded', 6) || lpad(d->>'runs_failed', 6) || '  ' ||"
          " coalesce(to_char((d->>'covered_from')::timestamptz, 'YYYY-MM-DD'), '-') || ' .. ' ||"
          " coalesce(to_char((d->>'covered_to')::timestamptz, 'YYYY-MM-DD'), '-') || '  ' ||"
          " coalesce(to_char((d->>'last_bar')::timestamptz, 'YYYY-MM-DD\"T\"HH24:MI\"Z\"'), '-')"
          " FROM json_array_elements($1::json->'definitions') d",
          1, (const char *const[]){PQgetvalue(js, 0, 0)});
    if (h) {
        printf("\ndefinitions (%lld with the most runs left)\n", (long long)limit);
        printf("  SYMBOL    TF   ON     LEFT    OK  FAIL  COVERED                 LAST BAR\n");
        for (int i = 0; i < PQntuples(h); i++)
            print_row(h, i);
        PQclear(h);
    }
    PQclear(js);
    PQfinish(conn);
    return ret;
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
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr); /* says which certificate problem, not only "not OK" */
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
        fprintf(stderr, "backfilld: alpaca: credentials rejected (HTTP %ld): check "
                        "APCA_API_KEY_ID and APCA_API_SECRET_KEY\n", status);
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
