/*
 * migrate: applies sql/NNN_*.sql in order, once each, in a transaction each,
 * and records them in schema_migrations; finds tables of another system in
 * the way, and adopts them (kept as legacy_*, definitions imported); writes
 * the grants of a least-privilege daemon role. Runs synchronously: it is a
 * command, not part of the event loop.
 */
#include "migrations.h"

#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int version_of(const char *name)
{
    return (int)strtol(name, NULL, 10);
}

int migrations_latest(void)
{
    int v = 0;
    for (const struct migration *m = migrations; m->name; m++)
        if (version_of(m->name) > v)
            v = version_of(m->name);
    return v;
}

/* Runs one statement; on failure copies the server's first message line into err. */
static PGresult *exec_checked(PGconn *conn, const char *sql, int nparams, const char *const *params,
                              const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorMessage(r);
        snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(m, "\n"), m);
        PQclear(r);
        return NULL;
    }
    return r;
}

int migrations_current(PGconn *conn, char *err, size_t errlen)
{
    PGresult *r = exec_checked(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL,
                               "reading schema version", err, errlen);
    if (!r)
        return -1;
    bool exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists)
        return 0;
    /* Another migration tool's schema_migrations (varchar versions, no name)
     * is not ours: its versions say nothing about this schema. */
    r = exec_checked(conn,
                     "SELECT count(*) FROM information_schema.columns"
                     " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
                     " AND ((column_name = 'version' AND data_type = 'integer')"
                     "      OR (column_name = 'name' AND data_type = 'text'))",
                     0, NULL, "reading schema version", err, errlen);
    if (!r)
        return -1;
    bool ours = strcmp(PQgetvalue(r, 0, 0), "2") == 0;
    PQclear(r);
    if (!ours) {
        snprintf(err, errlen,
                 "a table schema_migrations exists that backfilld did not make (another migration "
                 "tool's?): use another database, or another schema through search_path");
        return -1;
    }
    r = exec_checked(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                     "reading schema version", err, errlen);
    if (!r)
        return -1;
    int64_t v = 0;
    bool ok = parse_i64(PQgetvalue(r, 0, 0), 0, 1000000, &v);
    PQclear(r);
    if (!ok) {
        snprintf(err, errlen, "reading schema version: unexpected value");
        return -1;
    }
    return (int)v;
}

/* Applies what is missing; in_txn: inside the caller's transaction, no BEGIN/COMMIT of its own. */
static int apply(PGconn *conn, bool in_txn, int *applied, char *err, size_t errlen)
{
    PGresult *r;
    *applied = 0;
    r = exec_checked(conn,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     0, NULL, "creating schema_migrations", err, errlen);
    if (!r)
        return -1;
    PQclear(r);
    /* Two hosts running migrate at once apply each file once: a session lock,
     * or (inside the caller's transaction) one that ends with it. */
    r = exec_checked(conn,
                     in_txn ? "SELECT pg_advisory_xact_lock(hashtext('backfilld.migrate'))"
                            : "SELECT pg_advisory_lock(hashtext('backfilld.migrate'))",
                     0, NULL, "taking the migration lock", err, errlen);
    if (!r)
        return -1;
    PQclear(r);
    int rc = 0;
    for (const struct migration *m = migrations; m->name && rc == 0; m++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", version_of(m->name));
        const char *p1[] = {ver};
        r = exec_checked(conn, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, p1,
                         "reading schema_migrations", err, errlen);
        if (!r) {
            rc = -1;
            break;
        }
        bool done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        char what[300];
        snprintf(what, sizeof what, "applying %s", m->name);
        r = in_txn ? PQexec(conn, "SELECT 1")
                   : exec_checked(conn, "BEGIN", 0, NULL, what, err, errlen);
        if (!r) {
            rc = -1;
            break;
        }
        PQclear(r);
        /* A migration file holds many statements: the simple protocol runs them all. */
        PGresult *body = PQexec(conn, m->sql);
        if (PQresultStatus(body) != PGRES_COMMAND_OK && PQresultStatus(body) != PGRES_TUPLES_OK) {
            const char *msg = PQresultErrorMessage(body);
            snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
            rc = -1;
        }
        PQclear(body);
        if (rc == 0) {
            const char *p2[] = {ver, m->name};
            r = exec_checked(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                             2, p2, what, err, errlen);
            if (r && !in_txn) {
                PQclear(r);
                r = exec_checked(conn, "COMMIT", 0, NULL, what, err, errlen);
            }
            if (!r)
                rc = -1;
            else
                PQclear(r);
        }
        if (rc != 0) {
            if (!in_txn)
                PQclear(PQexec(conn, "ROLLBACK"));
            break;
        }
        (*applied)++;
    }
    if (!in_txn)
        PQclear(PQexec(conn, "SELECT pg_advisory_unlock(hashtext('backfilld.migrate'))"));
    return rc;
}

int migrations_apply(PGconn *conn, int *applied, char *err, size_t errlen)
{
    return apply(conn, false, applied, err, errlen);
}

/* --- tables in the way ------------------------------------------------------ */

/* Calls fn for every table the migrations create ("CREATE [UNLOGGED] TABLE name"). */
static void each_created_table(void (*fn)(const char *name, void *arg), void *arg)
{
    static const char *const heads[] = {"CREATE TABLE ", "CREATE UNLOGGED TABLE "};
    for (const struct migration *m = migrations; m->name; m++) {
        for (size_t h = 0; h < 2; h++) {
            for (const char *p = strstr(m->sql, heads[h]); p; p = strstr(p + 1, heads[h])) {
                const char *q = p + strlen(heads[h]);
                char name[64];
                size_t n = 0;
                while ((isalnum((unsigned char)q[n]) || q[n] == '_') && n + 1 < sizeof name) {
                    name[n] = q[n];
                    n++;
                }
                name[n] = '\0';
                if (n > 0)
                    fn(name, arg);
            }
        }
    }
}

struct conflict_scan {
    PGconn *conn;
    dynbuf_t *names;
    int n;
    int failed;
};

static void check_one(const char *name, void *arg)
{
    struct conflict_scan *c = arg;
    const char *p[] = {name};
    PGresult *r = PQexecParams(c->conn,
                               "SELECT 1 FROM pg_class WHERE relname = $1"
                               " AND relnamespace = current_schema()::regnamespace"
                               " AND relkind IN ('r', 'p', 'u', 'v', 'm', 'f')",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        c->failed = 1;
    else if (PQntuples(r) > 0 && dynbuf_printf(c->names, "%s%s", c->n++ ? " " : "", name) < 0)
        c->failed = 1;
    PQclear(r);
}

int migrations_conflicts(PGconn *conn, dynbuf_t *names, char *err, size_t errlen)
{
    int current = migrations_current(conn, err, errlen);
    if (current < 0)
        return -1;
    if (current > 0)
        return 0; /* backfilld's own schema */
    struct conflict_scan c = {.conn = conn, .names = names};
    each_created_table(check_one, &c);
    if (c.failed) {
        snprintf(err, errlen, "looking for existing tables: %s", PQerrorMessage(conn));
        return -1;
    }
    return c.n;
}

/* --- adopting another system's tables ----------------------------------------- */

static int exec_ok(PGconn *conn, const char *sql, int n, const char *const *params,
                   const char *what, char *err, size_t errlen)
{
    PGresult *r = exec_checked(conn, sql, n, params, what, err, errlen);
    if (!r)
        return -1;
    PQclear(r);
    return 0;
}

/*
 * Moves table t and what is named after it (its indexes, and with them the
 * constraints they back; its owned sequences) to legacy_*, so the new
 * schema's names are free. Refuses when legacy_t exists already. t is one of
 * the migrations' own table names (letters, digits, '_').
 */
static int keep_as_legacy(PGconn *conn, const char *t, char *err, size_t errlen)
{
    const char *p[] = {t};
    char what[192]; /* two names of at most 63 characters, and the words */
    snprintf(what, sizeof what, "keeping %s as legacy_%s", t, t);
    PGresult *r = exec_checked(conn, "SELECT to_regclass(quote_ident('legacy_' || $1)) IS NOT NULL",
                               1, p, what, err, errlen);
    if (!r)
        return -1;
    bool taken = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (taken) {
        snprintf(err, errlen, "%s: a table legacy_%s exists already; rename or drop it first", what,
                 t);
        return -1;
    }
    dynbuf_t sql;
    dynbuf_init(&sql, 1 << 16);
    int rc = dynbuf_printf(
        &sql,
        "DO $$ DECLARE o record; BEGIN"
        " FOR o IN SELECT c.relname, c.relkind FROM pg_class c"
        "   WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = '%s'::regclass)"
        "      OR c.oid IN (SELECT objid FROM pg_depend WHERE refobjid = '%s'::regclass"
        "                    AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i')"
        "                    AND objid IN (SELECT oid FROM pg_class WHERE relkind = 'S'))"
        " LOOP"
        "   EXECUTE format('ALTER %%s %%I RENAME TO %%I',"
        "     CASE o.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'INDEX' END, o.relname, 'legacy_' || "
        "o.relname);"
        " END LOOP;"
        " EXECUTE format('ALTER TABLE %%I RENAME TO %%I', '%s', 'legacy_%s');"
        " END $$",
        t, t, t, t);
    if (rc == 0)
        rc = exec_ok(conn, sql.data, 0, NULL, what, err, errlen);
    dynbuf_free(&sql);
    return rc;
}

struct adopt_scan {
    PGconn *conn;
    int failed;
    char *err;
    size_t errlen;
    struct migrate_adoption *out;
};

static void adopt_one(const char *name, void *arg)
{
    struct adopt_scan *a = arg;
    if (a->failed)
        return;
    const char *p[] = {name};
    PGresult *r = PQexecParams(a->conn,
                               "SELECT 1 FROM pg_class WHERE relname = $1"
                               " AND relnamespace = current_schema()::regnamespace"
                               " AND relkind IN ('r', 'p')",
                               1, NULL, p, NULL, NULL, 0);
    bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    if (!exists)
        return;
    if (keep_as_legacy(a->conn, name, a->err, a->errlen) < 0) {
        a->failed = 1;
        return;
    }
    if (dynbuf_printf(&a->out->kept, "%slegacy_%s", a->out->nkept++ ? " " : "", name) < 0)
        a->failed = 1;
}

/* Reads a column's name if legacy_job_definitions has one of the candidates, else NULL. */
static const char *legacy_column(PGconn *conn, const char *const *candidates)
{
    for (const char *const *c = candidates; *c; c++) {
        const char *p[] = {*c};
        PGresult *r =
            PQexecParams(conn,
                         "SELECT 1 FROM information_schema.columns"
                         " WHERE table_schema = current_schema()"
                         " AND table_name = 'legacy_job_definitions' AND column_name = $1",
                         1, NULL, p, NULL, NULL, 0);
        bool has = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
        PQclear(r);
        if (has)
            return *c;
    }
    return NULL;
}

/*
 * Imports legacy_job_definitions: symbol, timeframe (ours, or Alpaca's names),
 * job type, enabled, and a start if the table has one (else `from`). A symbol
 * that is not a ticker (US_BATCH_1) comes in disabled; a row whose timeframe
 * or job type means nothing here stays behind. Runs are left where they are:
 * the scheduler works out what is missing.
 */
static int import_definitions(PGconn *conn, const char *from, struct migrate_adoption *out,
                              char *err, size_t errlen)
{
    static const char *const sym_cols[] = {"symbol", "ticker", NULL};
    static const char *const tf_cols[] = {"timeframe", "time_frame", "interval", NULL};
    static const char *const type_cols[] = {"job_type", "type", NULL};
    static const char *const enabled_cols[] = {"enabled", "active", "is_active", NULL};
    static const char *const start_cols[] = {"backfill_from", "start_date", "start_at", "start",
                                             NULL};
    const char *sym = legacy_column(conn, sym_cols), *tf = legacy_column(conn, tf_cols);
    if (!sym || !tf) {
        snprintf(err, errlen, "legacy_job_definitions has no %s column: cannot import it",
                 sym ? "timeframe" : "symbol");
        return -1;
    }
    const char *type = legacy_column(conn, type_cols), *en = legacy_column(conn, enabled_cols);
    const char *start = legacy_column(conn, start_cols);
    /* Column names come from the lists above: plain identifiers, quoted anyway. */
    char type_e[96], en_e[96], start_e[128];
    if (type)
        snprintf(type_e, sizeof type_e, "lower(trim(\"%s\"::text))", type);
    else
        snprintf(type_e, sizeof type_e, "'fetch_historical'");
    if (en)
        snprintf(en_e, sizeof en_e, "coalesce(\"%s\"::boolean, true)", en);
    else
        snprintf(en_e, sizeof en_e, "true");
    if (start)
        snprintf(start_e, sizeof start_e, "coalesce(\"%s\"::timestamptz, $1::timestamptz)", start);
    else
        snprintf(start_e, sizeof start_e, "$1::timestamptz");
    static const char ticker[] = "'^[A-Z][A-Z0-9]{0,5}([.][A-Z0-9]{1,3})?$'";
    dynbuf_t sql;
    dynbuf_init(&sql, 1 << 16);
    int rc = dynbuf_printf(
        &sql,
        "WITH l AS (SELECT trim(\"%s\"::text) AS symbol, \"%s\"::text AS raw_tf,"
        "   CASE lower(trim(\"%s\"::text))"
        "     WHEN 'm1' THEN 'm1' WHEN '1min' THEN 'm1' WHEN '1m' THEN 'm1' WHEN 'minute' THEN 'm1'"
        "     WHEN 'm5' THEN 'm5' WHEN '5min' THEN 'm5' WHEN 'm15' THEN 'm15' WHEN '15min' THEN "
        "'m15'"
        "     WHEN 'm30' THEN 'm30' WHEN '30min' THEN 'm30'"
        "     WHEN 'h1' THEN 'h1' WHEN '1hour' THEN 'h1' WHEN '1h' THEN 'h1' WHEN 'hour' THEN 'h1'"
        "     WHEN 'h4' THEN 'h4' WHEN '4hour' THEN 'h4'"
        "     WHEN 'd1' THEN 'd1' WHEN '1day' THEN 'd1' WHEN '1d' THEN 'd1' WHEN 'day' THEN 'd1'"
        "     WHEN 'w1' THEN 'w1' WHEN '1week' THEN 'w1' WHEN 'mn1' THEN 'mn1' WHEN '1month' THEN "
        "'mn1'"
        "   END AS timeframe, %s AS job_type, %s AS enabled, %s AS start"
        "   FROM legacy_job_definitions),"
        " ok AS (SELECT * FROM l WHERE timeframe IS NOT NULL AND symbol <> ''"
        "        AND symbol !~ '[,[:space:]]' AND job_type IN ('fetch_historical', "
        "'fetch_intraday')),"
        " ins AS (INSERT INTO job_definitions (symbol, timeframe, job_type, enabled, backfill_from,"
        "                                      refresh_interval)"
        "   SELECT DISTINCT ON (symbol, timeframe, job_type) symbol, timeframe, job_type,"
        "          enabled AND symbol ~ %s,"
        "          CASE WHEN job_type = 'fetch_historical' THEN start END,"
        "          CASE WHEN job_type = 'fetch_intraday' THEN interval '5 minutes' END"
        "     FROM ok ORDER BY symbol, timeframe, job_type, enabled DESC"
        "   ON CONFLICT (symbol, timeframe, job_type) DO NOTHING"
        "   RETURNING symbol, enabled, job_type, backfill_from)"
        " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ins WHERE enabled),"
        "   (SELECT coalesce(string_agg(symbol, ' ' ORDER BY symbol), '') FROM ins WHERE symbol !~ "
        "%s),"
        "   (SELECT count(*) FROM l) - (SELECT count(*) FROM ok),"
        "   (SELECT coalesce(string_agg(DISTINCT coalesce(symbol, '?') || '/' || coalesce(raw_tf, "
        "'?')"
        "      || '/' || coalesce(job_type, '?'), ' '), '') FROM l WHERE NOT EXISTS"
        "      (SELECT 1 FROM ok WHERE ok.symbol = l.symbol AND ok.raw_tf = l.raw_tf)),"
        "   (SELECT count(*) FROM ins WHERE job_type = 'fetch_historical' AND backfill_from IS "
        "NULL)",
        sym, tf, tf, type_e, en_e, start_e, ticker, ticker);
    PGresult *r = NULL;
    if (rc == 0) {
        const char *p[] = {from};
        r = exec_checked(conn, sql.data, 1, p, "importing legacy_job_definitions", err, errlen);
    } else {
        snprintf(err, errlen, "importing legacy_job_definitions: query too long");
    }
    dynbuf_free(&sql);
    if (!r)
        return -1;
    (void)parse_i64(PQgetvalue(r, 0, 0), 0, INT64_MAX, &out->imported);
    (void)parse_i64(PQgetvalue(r, 0, 1), 0, INT64_MAX, &out->enabled);
    (void)parse_i64(PQgetvalue(r, 0, 3), 0, INT64_MAX, &out->skipped);
    (void)parse_i64(PQgetvalue(r, 0, 5), 0, INT64_MAX, &out->no_start);
    rc = dynbuf_printf(&out->not_tickers, "%s", PQgetvalue(r, 0, 2));
    rc |= dynbuf_printf(&out->skipped_rows, "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    /* Old runs stay in legacy_job_runs, counted for the report. */
    r = PQexec(conn, "SELECT count(*) FROM legacy_job_runs");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        (void)parse_i64(PQgetvalue(r, 0, 0), 0, INT64_MAX, &out->legacy_runs);
    PQclear(r);
    return rc == 0 ? 0 : -1;
}

void migrations_adoption_free(struct migrate_adoption *a)
{
    dynbuf_free(&a->kept);
    dynbuf_free(&a->not_tickers);
    dynbuf_free(&a->skipped_rows);
}

int migrations_adopt(PGconn *conn, const char *from, struct migrate_adoption *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    dynbuf_init(&out->kept, 1 << 16);
    dynbuf_init(&out->not_tickers, 1 << 24);
    dynbuf_init(&out->skipped_rows, 1 << 24);
    /* One transaction: the old tables kept, the schema made, the definitions
     * imported, or nothing at all. The lock keeps two hosts from racing. */
    if (exec_ok(conn, "BEGIN", 0, NULL, "adopting", err, errlen) < 0)
        return -1;
    int rc = exec_ok(conn, "SELECT pg_advisory_xact_lock(hashtext('backfilld.migrate'))", 0, NULL,
                     "taking the migration lock", err, errlen);
    struct adopt_scan a = {.conn = conn, .err = err, .errlen = errlen, .out = out};
    /* backfilld's own schema is never adopted: then this is an ordinary migrate. */
    int current = rc == 0 ? migrations_current(conn, err, errlen) : -1;
    if (current < 0)
        rc = -1;
    if (rc == 0 && current == 0) {
        each_created_table(adopt_one, &a);
        rc = a.failed ? -1 : 0;
    }
    int applied = 0;
    if (rc == 0)
        rc = apply(conn, true, &applied, err, errlen);
    if (rc == 0 && out->nkept > 0 && strstr(out->kept.data, "legacy_job_definitions"))
        rc = import_definitions(conn, from, out, err, errlen);
    if (rc == 0)
        rc = exec_ok(conn, "COMMIT", 0, NULL, "adopting", err, errlen);
    if (rc != 0)
        PQclear(PQexec(conn, "ROLLBACK"));
    return rc;
}

/* --- a least-privilege role ------------------------------------------------------- */

int migrations_role_sql(PGconn *conn, const char *role, bool create, dynbuf_t *out, char *err,
                        size_t errlen)
{
    char *id = PQescapeIdentifier(conn, role, strlen(role));
    if (!id) {
        snprintf(err, errlen, "role name: %s", PQerrorMessage(conn));
        return -1;
    }
    PGresult *r =
        exec_checked(conn, "SELECT quote_ident(current_schema()), quote_ident(current_database())",
                     0, NULL, "reading the schema", err, errlen);
    if (!r) {
        PQfreemem(id);
        return -1;
    }
    int rc = 0;
    if (create)
        rc |= dynbuf_printf(out, "CREATE ROLE %s LOGIN;\n", id);
    rc |= dynbuf_printf(
        out,
        "GRANT USAGE ON SCHEMA %s TO %s;\n"
        "GRANT EXECUTE ON FUNCTION claim_queued_job(text, integer, double precision),\n"
        "    complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[]),\n"
        "    fail_job_run(text, bigint, integer, text, boolean, bigint, bigint),\n"
        "    release_job_runs(text, bigint[], integer[]),\n"
        "    renew_job_leases(text, bigint[], integer[], bigint[], double precision),\n"
        "    rescue_expired_job_runs(bigint, bigint),\n"
        "    schedule_due_jobs(integer, interval, interval),\n"
        "    take_rate_tokens(text, integer, double precision), pause_rate_limit(text, integer),\n"
        "    take_rate_tokens(text, integer, double precision, double precision, integer, bigint,\n"
        "                     bigint),\n"
        "    set_rate_limit(text, double precision), prune_job_runs(interval, integer),\n"
        /* the daily upkeep: calendar, corporate actions, the ledger pass (schema 7) */
        "    calendar_load(date, date, jsonb), backfilld_sync_failed(text, text),\n"
        "    backfilld_sync_ok(text, date, date, jsonb), ledger_days(text[], text, date, date),\n"
        "    ledger_record_checks(text[], text[], text[], text[], date[], integer[]),\n"
        "    ledger_refetch(bigint[], date[]),\n"
        "    ledger_save_summary(text, date, date, integer, jsonb, integer),\n"
        "    corporate_actions_load(jsonb), apply_corporate_actions(integer),\n"
        "    corporate_actions_synced(date, date, integer, integer, integer) TO %s;\n"
        "GRANT SELECT, INSERT, UPDATE ON bars TO %s;\n"
        "GRANT SELECT ON job_runs, job_definitions, schema_migrations, job_coverage,\n"
        "    job_coverage_log, job_run_totals, backfilld_sync_state, trading_calendar TO %s;\n"
        "GRANT TEMPORARY ON DATABASE %s TO %s;\n", /* the writer's staging table */
        PQgetvalue(r, 0, 0), id, id, id, id, PQgetvalue(r, 0, 1), id);
    PQclear(r);
    PQfreemem(id);
    if (rc != 0) {
        snprintf(err, errlen, "role SQL too long");
        return -1;
    }
    return 0;
}
