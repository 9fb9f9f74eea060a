/*
 * cli_migrate: `backfilld migrate`: applies the schema, refuses another
 * system's tables or adopts them (--adopt), and writes the grants of a
 * least-privilege daemon role. See migrations.h and the README.
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

/* --- migrate ------------------------------------------------------------- */

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
