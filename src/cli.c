/*
 * cli: see cli.h. Every failure prints one line to stderr naming what is
 * wrong; nothing is half-written (enqueue runs in one transaction). The live
 * views (status --watch, enqueue --wait) poll the database once an interval
 * and redraw in place on a terminal, or print a line per interval elsewhere.
 */
#include "cli.h"

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

static PGconn *connect_db(const struct config *c)
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
            fprintf(stderr,
                    "backfilld migrate: --from '%s' is not a date (YYYY-MM-DD) or RFC 3339 time\n",
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
                    strcmp(argv[i], "--print-role-sql") == 0) &&
                   i + 1 < argc) {
            mode = strcmp(argv[i], "--create-role") == 0  ? ROLE_CREATE
                   : strcmp(argv[i], "--grant-role") == 0 ? ROLE_GRANT
                                                          : ROLE_PRINT;
            role_name = argv[++i];
        } else {
            fprintf(stderr, "backfilld migrate: unexpected argument '%s'\n%s", argv[i],
                    migrate_help);
            return EXIT_USAGE;
        }
    }
    if ((from && !adopting) || (role_name && adopting)) {
        fprintf(stderr,
                "backfilld migrate: --from goes with --adopt, and --adopt not with a role\n");
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

/* --- terminal views: status --watch and enqueue --wait ----------------------- */

/*
 * Both views poll the database once per interval and draw what they read. On
 * a terminal the frame is redrawn in place with ANSI cursor-up and
 * clear-line only (so any SSH terminal shows it), every line cut to the
 * terminal's width so nothing wraps, and the frame to its height. When
 * stdout is not a terminal, one plain line is printed per interval instead.
 * SIGINT, SIGTERM and SIGHUP end a view at its next check (a second one at
 * once); SIGWINCH redraws.
 */
static volatile sig_atomic_t view_signal; /* the signal that asked the view to stop, or 0 */
static volatile sig_atomic_t view_resized;
static volatile sig_atomic_t view_cursor_hidden;

static void view_on_signal(int sig)
{
    if (sig == SIGWINCH) {
        view_resized = 1;
        return;
    }
    if (view_signal) {
        /* The second signal: out at once, leaving the terminal as it was. */
        if (view_cursor_hidden) {
            ssize_t n = write(STDOUT_FILENO, "\033[?25h\n", 7);
            (void)n;
        }
        _exit(128 + sig);
    }
    view_signal = sig;
}

static const int view_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};

struct view {
    bool tty;   /* stdout is a terminal: redraw in place */
    int lines;  /* lines the last frame left on the screen */
    int cols;   /* the width it was drawn for */
    char *last; /* the last frame, for a redraw after SIGWINCH (owned) */
    struct sigaction saved[ARRAY_SIZE(view_signals)];
};

static void view_begin(struct view *v)
{
    memset(v, 0, sizeof *v);
    v->tty = isatty(STDOUT_FILENO) == 1;
    view_signal = 0;
    view_resized = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = view_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a signal cuts the wait between polls short. */
    for (size_t i = 0; i < ARRAY_SIZE(view_signals); i++)
        sigaction(view_signals[i], &sa, &v->saved[i]);
    if (v->tty) {
        view_cursor_hidden = 1;
        fputs("\033[?25l", stdout);
        fflush(stdout);
    }
}

static void view_end(struct view *v)
{
    if (v->tty) {
        fputs("\033[?25h", stdout);
        fflush(stdout);
        view_cursor_hidden = 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(view_signals); i++)
        sigaction(view_signals[i], &v->saved[i], NULL);
    free(v->last);
    v->last = NULL;
}

/* The terminal's size; 80 x 24 when it cannot be read. */
static void view_size(int *cols, int *rows)
{
    struct winsize ws;
    *cols = 80;
    *rows = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        if (ws.ws_col > 0)
            *cols = ws.ws_col;
        if (ws.ws_row > 0)
            *rows = ws.ws_row;
    }
}

/* Appends s[0..n) cut to cols columns: a control character becomes a space,
 * a UTF-8 sequence counts as one column. */
static int fit_line(dynbuf_t *out, const char *s, size_t n, int cols)
{
    int used = 0, rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        bool cont = (c & 0xc0) == 0x80;
        if (!cont && used >= cols)
            break;
        char ch = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        rc = dynbuf_append(out, &ch, 1);
        used += !cont;
    }
    return rc;
}

/*
 * Shows one frame. On a terminal `frame` (lines, each ending in '\n')
 * replaces the previous frame; elsewhere `line` is printed on a line of its
 * own. Both are borrowed.
 */
static void view_show(struct view *v, const char *frame, const char *line)
{
    if (!v->tty) {
        printf("%s\n", line);
        fflush(stdout);
        return;
    }
    if (frame != v->last) {
        free(v->last);
        v->last = xstrdup(frame);
    }
    int cols, rows;
    view_size(&cols, &rows);
    dynbuf_t out;
    dynbuf_init(&out, 1 << 20);
    int rc = 0;
    if (v->lines > 0 && cols < v->cols)
        /* Narrower now: the terminal may have wrapped the old lines; start afresh. */
        rc |= dynbuf_append(&out, "\033[H\033[2J", 7);
    else if (v->lines > 0)
        rc |= dynbuf_printf(&out, "\r\033[%dA", v->lines);
    int n = 0;
    for (const char *p = v->last; *p && n < rows - 1; n++) {
        size_t len = strcspn(p, "\n");
        rc |= dynbuf_append(&out, "\033[2K", 4);
        rc |= fit_line(&out, p, len, cols - 1);
        rc |= dynbuf_append(&out, "\n", 1);
        p += len + (p[len] == '\n');
    }
    rc |= dynbuf_append(&out, "\033[J", 3);
    if (rc == 0)
        fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    v->lines = n;
    v->cols = cols;
    dynbuf_free(&out);
}

/*
 * Waits ms milliseconds, redrawing the last frame when the terminal is
 * resized. False as soon as a signal asked the view to stop.
 */
static bool view_wait(struct view *v, int64_t ms)
{
    int64_t end = mono_ms() + ms;
    while (!view_signal) {
        if (view_resized) {
            view_resized = 0;
            if (v->tty && v->last)
                view_show(v, v->last, NULL);
        }
        int64_t left = end - mono_ms();
        if (left <= 0)
            return true;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Runs a statement for a view: NULL on failure with the server's message in err. */
static PGresult *view_query(PGconn *conn, const char *sql, int n, const char *const *params,
                            char *err, size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    char m[1024];
    log_scrub(PQresultErrorMessage(r), m, sizeof m);
    snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m);
    PQclear(r);
    /* A lost connection is tried again at the next poll; the view goes on meanwhile. */
    if (PQstatus(conn) == CONNECTION_BAD)
        PQreset(conn);
    return NULL;
}

/* Sets a view's session up: UTC times, and no statement that can hang the view for ever. */
static void view_session(PGconn *conn)
{
    PQclear(PQexec(conn, "SET statement_timeout = '120s'"));
    PQclear(PQexec(conn, "SET application_name = 'backfilld-view'"));
    /* The polls are small and repeated: compiling them would cost more than running them. */
    PQclear(PQexec(conn, "SET jit = off"));
}

/*
 * The wait before the next poll: the interval, but at least four times what
 * the last poll took, so that a view never keeps a backend busy more than a
 * fifth of the time, however large the work it follows.
 */
static int64_t view_pace(int64_t interval_ms, int64_t poll_ms)
{
    return poll_ms * 4 > interval_ms ? poll_ms * 4 : interval_ms;
}

/* 1234567 → "1,234,567". */
static const char *fmt_count(char *buf, size_t len, int64_t v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    size_t n = strlen(digits), o = 0;
    if (v < 0 && o + 1 < len)
        buf[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* A rate: whole from 100 up (with separators if grouped), one decimal below; "-" if unknown. */
static const char *fmt_rate(char *buf, size_t len, double v, bool grouped)
{
    if (!isfinite(v) || v < 0)
        snprintf(buf, len, "-");
    else if (v >= 100 && grouped)
        fmt_count(buf, len, (int64_t)llround(v));
    else if (v >= 100)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.1f", v);
    return buf;
}

/* Seconds as "45s", "3m07s", "2h05m", "3d04h"; "-" when unknown (negative or not finite). */
static const char *fmt_dur(char *buf, size_t len, double s)
{
    if (!isfinite(s) || s < 0 || s > 1e9) {
        snprintf(buf, len, "-");
        return buf;
    }
    long long t = llround(s);
    if (s < 0.5)
        snprintf(buf, len, "<1s");
    else if (t < 60)
        snprintf(buf, len, "%llds", t);
    else if (t < 3600)
        snprintf(buf, len, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else
        snprintf(buf, len, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
    return buf;
}

/* [#####.....]: `cells` cells inside the brackets, frac of them filled. */
static int bar_append(dynbuf_t *b, double frac, int cells)
{
    if (!(frac >= 0))
        frac = 0;
    if (frac > 1)
        frac = 1;
    int full = (int)(frac * cells + 0.5);
    /* Never a full bar before the end, never an empty one after a start. */
    if (full == cells && frac < 1)
        full = cells - 1;
    if (full == 0 && frac > 0)
        full = 1;
    int rc = dynbuf_append(b, "[", 1);
    for (int i = 0; i < cells && rc == 0; i++)
        rc = dynbuf_append(b, i < full ? "#" : ".", 1);
    return rc | dynbuf_append(b, "]", 1);
}

/* Done of planned as a whole percentage that shows 100 only when all is done. */
static int percent(int64_t done, int64_t planned)
{
    if (planned <= 0)
        return 0;
    int p = (int)(done * 100 / planned);
    return p == 100 && done < planned ? 99 : p;
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Recent throughput from cumulative counts sampled at each poll. */
struct rate_sample {
    int64_t ms;
    double runs, bars, requests;
};
struct rates {
    struct rate_sample s[64];
    int n, next;
};

static void rates_add(struct rates *r, int64_t ms, double runs, double bars, double requests)
{
    r->s[r->next] = (struct rate_sample){ms, runs, bars, requests};
    r->next = (r->next + 1) % (int)ARRAY_SIZE(r->s);
    if (r->n < (int)ARRAY_SIZE(r->s))
        r->n++;
}

/* Per second over the last window_ms (at least two samples, half a second apart); false if not yet
 * known. */
static bool rates_get(const struct rates *r, int64_t window_ms, double *runs_s, double *bars_s,
                      double *req_s)
{
    int size = (int)ARRAY_SIZE(r->s);
    if (r->n < 2)
        return false;
    const struct rate_sample *newest = &r->s[(r->next - 1 + size) % size];
    const struct rate_sample *old = NULL;
    for (int k = r->n - 1; k >= 1; k--) {
        const struct rate_sample *s = &r->s[(r->next - 1 - k + size * 2) % size];
        if (newest->ms - s->ms <= window_ms) {
            old = s;
            break;
        }
    }
    if (!old)
        old = &r->s[(r->next - 2 + size) % size];
    double dt = (double)(newest->ms - old->ms) / 1000.0;
    if (dt < 0.5)
        return false;
    *runs_s = (newest->runs - old->runs) / dt;
    *bars_s = (newest->bars - old->bars) / dt;
    *req_s = (newest->requests - old->requests) / dt;
    return true;
}

/* The local time of day, for the plain lines a view prints when stdout is not a terminal. */
static const char *clock_now(char *buf, size_t len)
{
    time_t t = (time_t)(wall_us() / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%H:%M:%S", &tm);
    return buf;
}

/* A --interval value: seconds, from 0.1 to 3600. */
static bool parse_interval(const char *s, int64_t *ms)
{
    double v;
    if (!s || !parse_double(s, 0.1, 3600, &v))
        return false;
    *ms = (int64_t)llround(v * 1000);
    return true;
}

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

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
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
    qsort(w.all, n, sizeof *w.all, cmp_id);
    qsort(w.open, n, sizeof *w.open, cmp_id);
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
    "                 --timeframe TF --from DATE [--to DATE] [--feed sip|iex|otc|boats]\n"
    "                 [--adjustment raw] [--priority N] [--max-attempts N] [--force]\n"
    "                 [--wait [--interval S]]\n\n"
    "Creates (or reuses) a fetch_historical definition per symbol and queues runs for\n"
    "the range, cut into chunks of at most ~10,000 bars. Chunks already covered by a\n"
    "succeeded run are skipped unless --force; chunks already queued or running are\n"
    "never queued twice. Everything happens in one transaction.\n\n"
    "--wait then follows exactly the runs this command queued, with one progress bar\n"
    "(redrawn every S seconds, default 1; one line per interval when stdout is not a\n"
    "terminal), until none is queued or running. Exit 0 when all succeeded; 1 when\n"
    "any failed, was cancelled or deleted (they are listed); 128+N when signal N\n"
    "(Ctrl-C: 130) stopped the wait, which leaves the runs going.\n\n"
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
    const char *symbols, *symfile, *tf, *from, *to, *feed, *adj, *prio, *maxatt, *interval;
    bool force, wait;
};

/* What it will do, checked: the symbols as a Postgres array literal, the range. */
struct enqueue_plan {
    dynbuf_t symbols; /* {"AAPL","BRK.B",...} */
    size_t nsym;
    int64_t from_us, to_us;
    int64_t interval_ms; /* --wait's redraw interval */
    char from[40], to[40], max_attempts[16];
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
    if ((!a->symbols && !a->symfile) || !a->tf || !a->from) {
        fprintf(stderr, "backfilld enqueue: --symbols (or --symbols-file), --timeframe and --from "
                        "are required\n");
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
    if (!a->to)
        p->to_us = wall_us() / 1000000 * 1000000;
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
 * The runs this transaction inserted, after the definitions' statement
 * (before) or after enqueue_range (after): queued runs of these definitions
 * whose row version this transaction wrote. Nobody else can write a row
 * version with our xid, and nobody else can see or change a row we inserted
 * before we commit, so this is exact under any concurrency. enqueue_range is
 * not changed for its other callers (the scheduler). The only other rows we
 * write are those a priority change re-prioritises (the definitions'
 * trigger), already there before enqueue_range: the "before" set, left out.
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
static int enqueue_txn(PGconn *conn, const struct enqueue_args *a, const struct enqueue_plan *p,
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
    const char *p1[] = {p->symbols.data, a->tf, a->feed, a->adj, a->prio, p->from, p->to};
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
    const char *p2[] = {ids.data,        p->from, p->to, a->force ? "true" : "false",
                        p->max_attempts, a->tf};
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
    int64_t *run_ids = NULL;
    size_t nrun = 0;
    ret = EXIT_SOFTWARE;
    if (enqueue_txn(conn, &a, &p, &queued, &chunks, a.wait ? &run_ids : NULL, &nrun) < 0)
        goto out;
    printf("queued %lld run%s for %zu symbol%s (%s, %s to %s); %lld chunk%s already covered or "
           "queued%s\n",
           (long long)queued, queued == 1 ? "" : "s", p.nsym, p.nsym == 1 ? "" : "s", a.tf, p.from,
           p.to, (long long)(chunks - queued), chunks - queued == 1 ? "" : "s",
           chunks - queued > 0 && !a.force ? " (--force re-fetches covered ones)" : "");
    fflush(stdout);
    ret = EXIT_OK;
    if (a.wait && nrun > 0)
        ret = wait_runs(conn, run_ids, nrun, p.interval_ms); /* takes run_ids */
    else
        free(run_ids);
out:
    if (conn)
        PQfinish(conn);
    dynbuf_free(&p.symbols);
    return ret;
}

/* --- status --watch ------------------------------------------------------------ */

/*
 * The live view counts the backlog: every run finished since the oldest run
 * now queued or running (of an enabled definition) was created, plus those
 * still queued or running. What one poll reads, however large job_runs is:
 *  - queued runs counted on the claim index, running ones on the lease index,
 *    the queued runs of disabled definitions through those definitions, and
 *    the definitions with the most runs left by grouping the queued and
 *    running runs: O(runs queued or running);
 *  - runs finished since the last poll, on the finished_at index: O(runs
 *    finished in the last WATCH_SETTLE_S seconds and one interval). Their
 *    counts, bars and requests are added up here, never re-read from history;
 *  - for the definitions shown, their runs finished since the backlog began.
 * Only when the view starts (or the queue, having run dry, gets new work)
 * does it read all the backlog's finished runs, and once more when the
 * queue runs dry, so that it starts and ends on the tables' exact counts.
 *
 * A run's finished_at is when the transaction that completes it began; it
 * commits a little later. So runs are added up for good only once their
 * finished_at is WATCH_SETTLE_S seconds old, and the newer ones are read
 * afresh at every poll.
 */
#define WATCH_SETTLE_S "10"
#define WATCH_MAX_DEFS 50

static const char watch_base_sql[] =
    "SELECT coalesce(least(now(), min(r.created_at)), now())::text"
    " FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id"
    " WHERE r.status IN ('queued', 'running') AND (d.enabled OR r.status = 'running')";

/* $1 backlog start, $2 settled up to, $3 settle seconds, $4 rate_limits name, $5 definitions. */
static const char watch_sql[] =
    "WITH p AS MATERIALIZED (SELECT now() AS now,"
    "        greatest($2::timestamptz, now() - make_interval(secs => $3::float8)) AS cut),"
    " q AS MATERIALIZED (SELECT count(*) AS queued, count(*) FILTER (WHERE run_after > now()) AS "
    "waiting"
    "        FROM job_runs WHERE status = 'queued'),"
    " qd AS MATERIALIZED (SELECT count(*) AS n FROM job_definitions d JOIN job_runs r"
    "        ON r.job_def_id = d.id AND r.status = 'queued' WHERE NOT d.enabled),"
    " run AS MATERIALIZED (SELECT count(*) AS n, coalesce(sum(bars_written), 0) AS bars,"
    "        count(DISTINCT locked_by) AS hosts FROM job_runs WHERE status = 'running'),"
    " fin AS MATERIALIZED (SELECT id, symbol, timeframe, feed, status, bars_written, pages,"
    "        started_at, adjustment, range_start, range_end, last_error, finished_at,"
    "        finished_at < (SELECT cut FROM p) AS settled"
    "        FROM job_runs WHERE status IN ('succeeded', 'failed') AND finished_at >= "
    "$2::timestamptz),"
    " defs AS MATERIALIZED (SELECT r.job_def_id, count(*) AS left_,"
    "        count(*) FILTER (WHERE r.status = 'running') AS running, count(*) OVER () AS ndefs"
    "        FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id"
    "        WHERE r.status IN ('queued', 'running') AND (d.enabled OR r.status = 'running')"
    "        GROUP BY r.job_def_id ORDER BY left_ DESC, r.job_def_id LIMIT $5::int),"
    " dd AS (SELECT x.job_def_id, count(*) FILTER (WHERE x.status = 'succeeded') AS ok,"
    "        count(*) FILTER (WHERE x.status = 'failed') AS bad FROM job_runs x"
    "        WHERE x.job_def_id IN (SELECT job_def_id FROM defs)"
    "          AND x.status IN ('succeeded', 'failed') AND x.finished_at >= $1::timestamptz"
    "        GROUP BY 1)"
    " SELECT 'p', p.now::text, p.cut::text, extract(epoch FROM p.now)::text, NULL, NULL, NULL, "
    "NULL, NULL"
    "   FROM p"
    " UNION ALL SELECT 'q', q.queued::text, q.waiting::text, qd.n::text, run.n::text, "
    "run.bars::text,"
    "   run.hosts::text, NULL, NULL FROM q, qd, run"
    " UNION ALL SELECT 'f', CASE WHEN settled THEN 's' ELSE 'f' END,"
    "   count(*) FILTER (WHERE status = 'succeeded')::text,"
    "   count(*) FILTER (WHERE status = 'failed')::text,"
    "   coalesce(sum(bars_written) FILTER (WHERE status = 'succeeded'), 0)::text, NULL, NULL, "
    "NULL, NULL"
    "   FROM fin GROUP BY settled"
    /* one row per claim and request key: how the runs' requests are reckoned */
    " UNION ALL SELECT 'g', CASE WHEN settled THEN 's' ELSE 'f' END, timeframe, feed,"
    "   (extract(epoch FROM range_start) * 1000000)::bigint::text,"
    "   (extract(epoch FROM range_end) * 1000000)::bigint::text, count(*)::text, sum(pages)::text, "
    "NULL"
    "   FROM fin WHERE status = 'succeeded'"
    "   GROUP BY settled, started_at, timeframe, feed, adjustment, range_start, range_end"
    " UNION ALL (SELECT 'e', id::text, symbol, timeframe, last_error,"
    "   extract(epoch FROM finished_at)::text, NULL, NULL, NULL FROM fin WHERE status = 'failed'"
    "   ORDER BY finished_at DESC, id DESC LIMIT 1)"
    " UNION ALL (SELECT 'r', id::text, symbol, timeframe, last_error, NULL, NULL, NULL, NULL"
    "   FROM job_runs WHERE status = 'queued' AND run_after > now() AND last_error IS NOT NULL"
    "   ORDER BY updated_at DESC, id DESC LIMIT 1)"
    " UNION ALL SELECT 'd', d.id::text, d.symbol, d.timeframe, defs.left_::text, "
    "defs.running::text,"
    "   coalesce(dd.ok, 0)::text, coalesce(dd.bad, 0)::text, defs.ndefs::text"
    "   FROM defs JOIN job_definitions d ON d.id = defs.job_def_id"
    "   LEFT JOIN dd ON dd.job_def_id = defs.job_def_id"
    " UNION ALL SELECT 'b', per_minute::text,"
    "   least(greatest(1, per_minute / 60), tokens + per_minute / 60"
    "         * greatest(0, extract(epoch FROM clock_timestamp() - refreshed_at)::float8))::text,"
    "   greatest(1, per_minute / 60)::text,"
    "   greatest(0, coalesce(extract(epoch FROM paused_until - clock_timestamp())::float8, "
    "0))::text,"
    "   NULL, NULL, NULL, NULL FROM rate_limits WHERE name = $4";

struct watch_run {
    bool have;
    int64_t id;
    char symbol[64], tf[8], error[300];
    double at; /* epoch seconds */
};

struct watch_def {
    int64_t id, left, running, ok, failed;
    char symbol[64], tf[8];
};

/* When a definition was first shown, and how far along it was: its rate since then. */
struct watch_seen {
    int64_t id, done, ms;
};

struct watch {
    PGconn *conn;
    const struct config *c;
    int64_t limit, interval_ms, pace_ms; /* pace_ms: the wait after the last poll (view_pace) */
    char t0[48], cut[48];           /* timestamptz as text: the backlog's start; settled up to */
    double now;                     /* the database's clock at the last poll, epoch seconds */
    int64_t s_ok, s_failed, s_bars; /* settled: finished before cut */
    double s_req;
    int64_t f_ok, f_failed, f_bars; /* fresh: finished since cut, re-read each poll */
    double f_req;
    int64_t queued, waiting, disabled, running, running_bars, hosts, ndefs;
    bool budget;
    double per_minute, avail, cap, paused;
    struct watch_run fail, retry;
    struct watch_def defs[WATCH_MAX_DEFS];
    int ndef;
    struct watch_seen seen[WATCH_MAX_DEFS * 2];
    int nseen;
    struct rates rates;
    bool based, idle; /* idle: the queue ran dry and the counts were made exact */
    char err[300];
};

static int64_t watch_left(const struct watch *w)
{
    return w->queued - w->disabled + w->running;
}

/*
 * The requests one claim's runs of one request key took: they were cut into
 * ceil(runs / symbols-per-request) requests, and the runs of one request
 * record its P pages as runs + P - 1 (the run whose symbol a page ends on
 * counts that page and the next). Reckoned with this host's page limit and
 * symbols per request; a daemon configured otherwise is reckoned wrongly.
 */
static double requests_of(const struct config *c, const char *tf, const char *feed,
                          const char *start_us, const char *end_us, const char *runs,
                          const char *pages)
{
    struct coalesce_key k = {.symbol = "", .timeframe = tf, .feed = feed, .adjustment = "raw"};
    int64_t n = 0, p = 0;
    (void)parse_i64(start_us, INT64_MIN, INT64_MAX, &k.start_us);
    (void)parse_i64(end_us, INT64_MIN, INT64_MAX, &k.end_us);
    (void)parse_i64(runs, 0, INT64_MAX, &n);
    (void)parse_i64(pages, 0, INT64_MAX, &p);
    int64_t per = (int64_t)coalesce_symbols_per_request(&k, c->page_limit, c->batch_symbols);
    int64_t m = per > 0 ? (n + per - 1) / per : n;
    int64_t req = p - n + m;
    return (double)(req < m ? m : req);
}

static void watch_copy_run(struct watch_run *r, PGresult *res, int row)
{
    r->have = true;
    (void)parse_i64(PQgetvalue(res, row, 1), 0, INT64_MAX, &r->id);
    strlcpy_trunc(r->symbol, sizeof r->symbol, PQgetvalue(res, row, 2));
    strlcpy_trunc(r->tf, sizeof r->tf, PQgetvalue(res, row, 3));
    strlcpy_trunc(r->error, sizeof r->error, PQgetvalue(res, row, 4));
    r->at = strtod(PQgetvalue(res, row, 5), NULL);
}

/* Starts counting a new backlog, from the creation of its oldest active run. */
static int watch_rebase(struct watch *w)
{
    PGresult *r = view_query(w->conn, watch_base_sql, 0, NULL, w->err, sizeof w->err);
    if (!r)
        return -1;
    strlcpy_trunc(w->t0, sizeof w->t0, PQgetvalue(r, 0, 0));
    strlcpy_trunc(w->cut, sizeof w->cut, w->t0);
    PQclear(r);
    w->s_ok = w->s_failed = w->s_bars = 0;
    w->s_req = 0;
    w->fail.have = false;
    memset(&w->rates, 0, sizeof w->rates);
    w->nseen = 0;
    w->based = true;
    w->idle = false;
    return 0;
}

/* One poll; settle is how old (s) a finished run must be to be added up for good. */
static int watch_poll(struct watch *w, const char *settle)
{
    char lim[24];
    snprintf(lim, sizeof lim, "%lld", (long long)w->limit);
    const char *name = w->c->rate_limit_name ? w->c->rate_limit_name : "";
    const char *p[] = {w->t0, w->cut, settle, name, lim};
    PGresult *r = view_query(w->conn, watch_sql, 5, p, w->err, sizeof w->err);
    if (!r)
        return -1;
    w->f_ok = w->f_failed = w->f_bars = 0;
    w->f_req = 0;
    w->ndef = 0;
    w->budget = false;
    w->retry.have = false;
    w->queued = w->waiting = w->disabled = w->running = w->running_bars = w->hosts = w->ndefs = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *kind = PQgetvalue(r, i, 0);
#define V(k) PQgetvalue(r, i, (k))
#define I(k, dst) (void)parse_i64(V(k), INT64_MIN, INT64_MAX, (dst))
        bool settled = strcmp(V(1), "s") == 0;
        switch (kind[0]) {
        case 'p':
            strlcpy_trunc(w->cut, sizeof w->cut, V(2));
            w->now = strtod(V(3), NULL);
            break;
        case 'q':
            I(1, &w->queued);
            I(2, &w->waiting);
            I(3, &w->disabled);
            I(4, &w->running);
            I(5, &w->running_bars);
            I(6, &w->hosts);
            break;
        case 'f': {
            int64_t ok = 0, bad = 0, bars = 0;
            I(2, &ok);
            I(3, &bad);
            I(4, &bars);
            *(settled ? &w->s_ok : &w->f_ok) += ok;
            *(settled ? &w->s_failed : &w->f_failed) += bad;
            *(settled ? &w->s_bars : &w->f_bars) += bars;
            break;
        }
        case 'g':
            *(settled ? &w->s_req : &w->f_req) +=
                requests_of(w->c, V(2), V(3), V(4), V(5), V(6), V(7));
            break;
        case 'e':
            if (!w->fail.have || strtod(V(5), NULL) >= w->fail.at)
                watch_copy_run(&w->fail, r, i);
            break;
        case 'r':
            watch_copy_run(&w->retry, r, i);
            break;
        case 'd':
            if (w->ndef < WATCH_MAX_DEFS) {
                struct watch_def *d = &w->defs[w->ndef++];
                I(1, &d->id);
                strlcpy_trunc(d->symbol, sizeof d->symbol, V(2));
                strlcpy_trunc(d->tf, sizeof d->tf, V(3));
                I(4, &d->left);
                I(5, &d->running);
                I(6, &d->ok);
                I(7, &d->failed);
                I(8, &w->ndefs);
            }
            break;
        case 'b':
            w->budget = true;
            w->per_minute = strtod(V(1), NULL);
            w->avail = strtod(V(2), NULL);
            w->cap = strtod(V(3), NULL);
            w->paused = strtod(V(4), NULL);
            break;
        }
#undef I
#undef V
    }
    PQclear(r);
    w->err[0] = '\0';
    return 0;
}

/* One poll, and what the queue's state asks for: a new backlog, or exact counts at the end. */
static int watch_tick(struct watch *w)
{
    if (!w->based && watch_rebase(w) < 0)
        return -1;
    if (watch_poll(w, WATCH_SETTLE_S) < 0)
        return -1;
    if (watch_left(w) > 0 && w->idle) {
        /* New work after the queue ran dry: a new backlog, counted from its start. */
        if (watch_rebase(w) < 0 || watch_poll(w, WATCH_SETTLE_S) < 0)
            return -1;
    } else if (watch_left(w) == 0 && !w->idle) {
        /* Dry: nothing is in flight, so everything since the start can be read as settled. */
        strlcpy_trunc(w->cut, sizeof w->cut, w->t0);
        w->s_ok = w->s_failed = w->s_bars = 0;
        w->s_req = 0;
        if (watch_poll(w, "0") < 0)
            return -1;
        w->idle = true;
    }
    rates_add(&w->rates, mono_ms(), (double)(w->s_ok + w->f_ok + w->s_failed + w->f_failed),
              (double)(w->s_bars + w->f_bars + w->running_bars), w->s_req + w->f_req);
    return 0;
}

/* A definition's runs per second since it was first shown, or a negative number if not known. */
static double watch_def_rate(struct watch *w, const struct watch_def *d, int64_t now_ms)
{
    int64_t done = d->ok + d->failed;
    for (int i = 0; i < w->nseen; i++) {
        struct watch_seen *s = &w->seen[i];
        if (s->id != d->id)
            continue;
        if (now_ms - s->ms < 1000 || done <= s->done)
            return -1;
        return (double)(done - s->done) * 1000.0 / (double)(now_ms - s->ms);
    }
    if (w->nseen == (int)ARRAY_SIZE(w->seen)) {
        memmove(w->seen, w->seen + 1, (ARRAY_SIZE(w->seen) - 1) * sizeof *w->seen);
        w->nseen--;
    }
    w->seen[w->nseen++] = (struct watch_seen){d->id, done, now_ms};
    return -1;
}

/* "job 42 AAPL h1: HTTP 500 …" */
static void watch_run_text(char *buf, size_t len, const struct watch_run *r)
{
    snprintf(buf, len, "job %lld %s %s: %s", (long long)r->id, r->symbol, r->tf,
             *r->error ? r->error : "(no error recorded)");
}

static void watch_render(struct view *v, struct watch *w)
{
    int64_t ok = w->s_ok + w->f_ok, failed = w->s_failed + w->f_failed, done = ok + failed;
    int64_t left = watch_left(w), planned = done + left;
    int64_t bars = w->s_bars + w->f_bars;
    double runs_s = 0, bars_s = 0, req_s = 0;
    int64_t window = w->interval_ms * 3 > 15000 ? w->interval_ms * 3 : 15000;
    bool known = rates_get(&w->rates, window, &runs_s, &bars_s, &req_s);
    char a[32], b[32], c[32], d[32], e[32], g[32], eta[48], clk[16];
    if (left == 0)
        snprintf(eta, sizeof eta, planned ? "done" : "idle");
    else if (known && runs_s > 0)
        snprintf(eta, sizeof eta, "ETA %s", fmt_dur(a, sizeof a, (double)left / runs_s));
    else
        snprintf(eta, sizeof eta, "ETA -");
    time_t now = (time_t)w->now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(clk, sizeof clk, "%H:%M:%S", &tm);

    dynbuf_t f;
    dynbuf_init(&f, 1 << 20);
    int rc = 0;
    if (!v->tty) {
        /* One plain line per interval, every number a whole word. */
        rc |= dynbuf_printf(&f,
                            "%sZ %d%% %lld/%lld runs (running %lld, queued %lld, failed %lld)"
                            " %lld bars, %s bars/s, %s requests/s, %s%s%s",
                            clk, percent(done, planned), (long long)done, (long long)planned,
                            (long long)w->running, (long long)(w->queued - w->disabled),
                            (long long)failed, (long long)bars,
                            known ? fmt_rate(a, sizeof a, bars_s, false) : "-",
                            known ? fmt_rate(b, sizeof b, req_s, false) : "-", eta,
                            w->err[0] ? "; database: " : "", w->err);
        if (rc == 0)
            view_show(v, NULL, f.data);
        goto out;
    }
    int cols, rows;
    view_size(&cols, &rows);
    rc |= dynbuf_printf(&f, "backfilld status --watch   %s UTC   every %.3gs%s   Ctrl-C quits", clk,
                        (double)w->pace_ms / 1000.0,
                        w->pace_ms > w->interval_ms ? " (slower: polls take long)" : "");
    if (left == 0 && planned > 0)
        rc |= dynbuf_printf(&f, "   DONE: nothing queued or running");
    rc |= dynbuf_append(&f, "\n", 1);
    char tail[256];
    snprintf(tail, sizeof tail, "%3d%%  %s of %s runs  %s", percent(done, planned),
             fmt_count(a, sizeof a, done), fmt_count(b, sizeof b, planned), eta);
    int cells = cols - 1 - 9 - 2 - 2 - (int)strlen(tail);
    rc |= dynbuf_append(&f, "overall  ", 9);
    rc |= bar_append(&f, planned ? (double)done / (double)planned : 0, clamp_int(cells, 10, 60));
    rc |= dynbuf_printf(&f, "  %s\n", tail);
    char est[64] = "";
    if (ok >= 5 && left > 0)
        snprintf(est, sizeof est, " (~%s in all)",
                 fmt_count(c, sizeof c,
                           (int64_t)((double)bars / (double)ok * (double)(planned - failed))));
    rc |= dynbuf_printf(&f, "bars     %s written%s   %s bars/s   ~%s requests/s   %s runs/s\n",
                        fmt_count(a, sizeof a, bars + w->running_bars), est,
                        known ? fmt_rate(b, sizeof b, bars_s, true) : "-",
                        known ? fmt_rate(d, sizeof d, req_s, true) : "-",
                        known ? fmt_rate(e, sizeof e, runs_s, true) : "-");
    rc |= dynbuf_printf(&f, "queue    running %s", fmt_count(a, sizeof a, w->running));
    if (w->running)
        rc |= dynbuf_printf(&f, " on %lld host%s", (long long)w->hosts, w->hosts == 1 ? "" : "s");
    rc |= dynbuf_printf(&f, "   queued %s", fmt_count(b, sizeof b, w->queued - w->disabled));
    if (w->waiting)
        rc |= dynbuf_printf(&f, " (%s waiting to retry)", fmt_count(c, sizeof c, w->waiting));
    rc |= dynbuf_printf(&f, "   succeeded %s   failed %s", fmt_count(e, sizeof e, ok),
                        fmt_count(g, sizeof g, failed));
    if (w->disabled)
        rc |= dynbuf_printf(&f, "   %s queued for disabled definitions (not counted)",
                            fmt_count(a, sizeof a, w->disabled));
    rc |= dynbuf_append(&f, "\n", 1);
    if (!w->c->rate_limit_name || !*w->c->rate_limit_name)
        rc |= dynbuf_printf(
            &f, "budget   per host (BACKFILLD_RATE_LIMIT_NAME is empty): %g requests/min each\n",
            w->c->rate_limit);
    else if (!w->budget)
        rc |= dynbuf_printf(&f, "budget   '%s': not in rate_limits yet (no daemon has started)\n",
                            w->c->rate_limit_name);
    else
        rc |= dynbuf_printf(&f,
                            "budget   %s requests/min shared as '%s': ~%d%% in use (~%s of %s/s),"
                            " %.0f of %.0f tokens free%s%s\n",
                            fmt_count(a, sizeof a, (int64_t)llround(w->per_minute)),
                            w->c->rate_limit_name,
                            known ? (int)llround(req_s * 6000.0 / w->per_minute) : 0,
                            known ? fmt_rate(b, sizeof b, req_s, true) : "-",
                            fmt_rate(c, sizeof c, w->per_minute / 60.0, true), w->avail, w->cap,
                            w->paused > 0 ? ", paused after a 429 for " : "",
                            w->paused > 0 ? fmt_dur(d, sizeof d, w->paused) : "");
    char run[400];
    if (failed || w->retry.have) {
        rc |= dynbuf_append(&f, "failures", 8);
        if (failed) {
            watch_run_text(run, sizeof run, &w->fail);
            rc |= dynbuf_printf(&f, " %s failed", fmt_count(a, sizeof a, failed));
            if (w->fail.have)
                rc |= dynbuf_printf(&f, ", latest %s ago: %s",
                                    fmt_dur(b, sizeof b, w->now - w->fail.at), run);
        }
        if (w->retry.have) {
            watch_run_text(run, sizeof run, &w->retry);
            rc |= dynbuf_printf(&f, "%s %s waiting to retry, latest: %s", failed ? ";" : "",
                                fmt_count(a, sizeof a, w->waiting), run);
        }
        rc |= dynbuf_append(&f, "\n", 1);
    } else {
        rc |= dynbuf_printf(&f, "failures none\n");
    }
    if (w->err[0])
        rc |= dynbuf_printf(&f, "database %s (trying again every %.3gs)\n", w->err,
                            (double)w->pace_ms / 1000.0);
    if (w->ndef == 0) {
        rc |= dynbuf_printf(&f, "definitions: none with runs left\n");
    } else {
        rc |= dynbuf_printf(&f, "definitions with the most runs left (%d of %s)\n", w->ndef,
                            fmt_count(a, sizeof a, w->ndefs));
        int64_t now_ms = mono_ms();
        /* The header takes 8 lines; one more stays free below the frame. */
        for (int i = 0; i < w->ndef && i < rows - 9; i++) {
            const struct watch_def *df = &w->defs[i];
            int64_t dd = df->ok + df->failed, dp = dd + df->left;
            double rate = watch_def_rate(w, df, now_ms);
            char line[256];
            snprintf(line, sizeof line, "%3d%%  %s/%s runs  %s%s%s%s%s%s", percent(dd, dp),
                     fmt_count(a, sizeof a, dd), fmt_count(b, sizeof b, dp),
                     rate > 0 ? "ETA " : "ETA -",
                     rate > 0 ? fmt_dur(c, sizeof c, (double)df->left / rate) : "",
                     df->running ? "  running " : "",
                     df->running ? fmt_count(d, sizeof d, df->running) : "",
                     df->failed ? "  failed " : "",
                     df->failed ? fmt_count(e, sizeof e, df->failed) : "");
            /* "  SYMBOL     TF   " is 18 columns, the bar's brackets 2, the gap 2. */
            int dcells = cols - 1 - 18 - 2 - 2 - (int)strlen(line);
            rc |= dynbuf_printf(&f, "  %-10.10s %-4.4s ", df->symbol, df->tf);
            rc |= bar_append(&f, dp ? (double)dd / (double)dp : 0, clamp_int(dcells, 10, 40));
            rc |= dynbuf_printf(&f, "  %s\n", line);
        }
    }
    if (rc == 0)
        view_show(v, f.data, NULL);
out:
    dynbuf_free(&f);
}

static int status_watch(const struct config *c, PGconn *conn, int64_t limit, int64_t interval_ms)
{
    struct watch *w = xcalloc(1, sizeof *w);
    w->conn = conn;
    w->c = c;
    w->limit = limit > WATCH_MAX_DEFS ? WATCH_MAX_DEFS : limit;
    w->interval_ms = interval_ms;
    struct view v;
    view_session(conn);
    view_begin(&v);
    do {
        int64_t t = mono_ms();
        (void)watch_tick(w); /* a failed poll is shown, and tried again next time */
        w->pace_ms = view_pace(interval_ms, mono_ms() - t);
        watch_render(&v, w);
    } while (view_wait(&v, w->pace_ms));
    view_end(&v);
    free(w);
    return EXIT_OK;
}

/* --- status -------------------------------------------------------------- */

/* The whole report as one JSON document, computed by the database in one snapshot. */
static const char status_sql[] =
    "WITH r AS (SELECT r.*, d.enabled FROM job_runs r JOIN job_definitions d ON d.id = "
    "r.job_def_id),"
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
    "            (SELECT max(b.ts) FROM bars b WHERE b.symbol = d.symbol AND b.timeframe = "
    "d.timeframe) AS last_bar"
    "          FROM job_definitions d LEFT JOIN job_runs x ON x.job_def_id = d.id"
    "          GROUP BY d.id ORDER BY runs_left DESC, d.symbol, d.timeframe LIMIT $1::int)"
    " SELECT json_build_object("
    "  'at', now(),"
    "  'runs', json_build_object("
    "     'queued', (SELECT count(*) FROM r WHERE status = 'queued'),"
    "     'queued_ready', (SELECT count(*) FROM r WHERE status = 'queued' AND enabled AND "
    "run_after <= now()),"
    "     'queued_waiting_retry', (SELECT count(*) FROM r WHERE status = 'queued' AND run_after > "
    "now()),"
    "     'queued_disabled', (SELECT count(*) FROM r WHERE status = 'queued' AND NOT enabled),"
    "     'running', (SELECT count(*) FROM r WHERE status = 'running'),"
    "     'succeeded', (SELECT count(*) FROM r WHERE status = 'succeeded'),"
    "     'failed', (SELECT count(*) FROM r WHERE status = 'failed'),"
    "     'cancelled', (SELECT count(*) FROM r WHERE status = 'cancelled')),"
    "  'last_5_min', json_build_object("
    "     'runs_succeeded', (SELECT count(*) FROM recent),"
    "     'bars', (SELECT coalesce(sum(bars_written), 0) FROM recent),"
    "     'runs_per_min', round(((SELECT count(*) FROM recent) * 60.0 / (SELECT s FROM "
    "span))::numeric, 2)),"
    "  'oldest_queued_s', (SELECT coalesce(extract(epoch FROM now() - min(created_at))::bigint, 0)"
    "                      FROM r WHERE status = 'queued' AND enabled),"
    "  'eta_s', (SELECT CASE WHEN (SELECT count(*) FROM recent) < 5 THEN NULL ELSE"
    "            ((SELECT count(*) FROM r WHERE status IN ('queued','running') AND enabled)"
    "             * (SELECT s FROM span) / (SELECT count(*) FROM recent))::bigint END),"
    "  'bars_total', (SELECT coalesce(sum(bars_written), 0) FROM job_runs WHERE status = "
    "'succeeded'),"
    "  'workers', (SELECT coalesce(json_agg(json_build_object('worker', locked_by, 'running', n)), "
    "'[]')"
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
    "usage: backfilld [--config FILE] status [--json] [--limit N]\n"
    "       backfilld [--config FILE] status --watch [--interval S] [--limit N]\n\n"
    "Shows runs by status, throughput over the last 5 minutes, the most common\n"
    "errors of the last 24 hours, and per-definition coverage (the N definitions\n"
    "with the most runs left, default 20). --json prints the same as one document.\n\n"
    "--watch shows the backlog live, redrawn in place every S seconds (default 2):\n"
    "a progress bar of the runs done of those planned, bars/s and requests/s, the\n"
    "shared rate-limit budget, failures and their latest cause, and the N\n"
    "definitions (default 10, fewer if the terminal is short) with the most runs\n"
    "left, each with its bar and ETA. The backlog is every run finished since the\n"
    "oldest run still queued or running was created, and those still to go. When\n"
    "stdout is not a terminal it prints one line per interval. Ctrl-C ends it\n"
    "(exit 0). Each poll reads the runs queued or running and those finished\n"
    "since the last poll, not the history, so it stays cheap on a large job_runs.\n";

static void print_row(PGresult *r, int row)
{
    int n = PQnfields(r);
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? "  " : "  ", PQgetvalue(r, row, i));
    printf("\n");
}

int cli_status(const struct config *c, int argc, char **argv)
{
    bool json = false, watch = false;
    int64_t limit = -1, interval_ms = 2000;
    const char *interval = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--watch") == 0) {
            watch = true;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            interval = argv[++i];
            if (!parse_interval(interval, &interval_ms)) {
                fprintf(stderr, "backfilld status: --interval must be from 0.1 to 3600 seconds\n");
                return EXIT_USAGE;
            }
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
    if (watch && json) {
        fprintf(stderr, "backfilld status: --watch and --json do not go together\n");
        return EXIT_USAGE;
    }
    if (interval && !watch) {
        fprintf(stderr, "backfilld status: --interval goes with --watch\n");
        return EXIT_USAGE;
    }
    if (limit < 0)
        limit = watch ? 10 : 20;
    PGconn *conn = connect_db(c);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int ret = check_schema(conn);
    if (ret != EXIT_OK) {
        PQfinish(conn);
        return ret;
    }
    if (watch) {
        ret = status_watch(c, conn, limit, interval_ms);
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
    printf("queue      oldest queued run waiting %s s; ETA %s s; %s bars written in all\n\n", V(11),
           V(12), V(13));
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
          " lpad(d->>'runs_left', 6) || lpad(d->>'runs_succeeded', 6) || lpad(d->>'runs_failed', "
          "6) || '  ' ||"
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
