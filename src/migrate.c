/*
 * migrate: applies sql/NNN_*.sql in order, once each, in a transaction each,
 * and records them in schema_migrations. Runs synchronously: it is a
 * command, not part of the event loop.
 */
#include "migrations.h"

#include "util.h"

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
    PGresult *r = exec_checked(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0,
                               NULL, "reading schema version", err, errlen);
    if (!r)
        return -1;
    bool exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists)
        return 0;
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

int migrations_apply(PGconn *conn, int *applied, char *err, size_t errlen)
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
    /* Session lock: two hosts running migrate at once apply each file once. */
    r = exec_checked(conn, "SELECT pg_advisory_lock(hashtext('backfilld.migrate'))", 0, NULL,
                     "taking the migration lock", err, errlen);
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
        r = exec_checked(conn, "BEGIN", 0, NULL, what, err, errlen);
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
            if (r) {
                PQclear(r);
                r = exec_checked(conn, "COMMIT", 0, NULL, what, err, errlen);
            }
            if (!r)
                rc = -1;
            else
                PQclear(r);
        }
        if (rc != 0) {
            PQclear(PQexec(conn, "ROLLBACK"));
            break;
        }
        (*applied)++;
    }
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(hashtext('backfilld.migrate'))"));
    return rc;
}
