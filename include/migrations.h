/*
 * migrations: the SQL files of sql/, compiled in by tools/embed_sql.cmake, and
 * the code that applies them (migrate.c).
 */
#ifndef BACKFILLD_MIGRATIONS_H
#define BACKFILLD_MIGRATIONS_H

#include "util.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

struct migration {
    const char *name; /* file name, e.g. "001_schema.sql"; the version is its number */
    const char *sql;
};

/* In file-name order, terminated by {NULL, NULL}. */
extern const struct migration migrations[];

/* The highest version compiled in. */
int migrations_latest(void);

/*
 * Applies every missing migration, each in its own transaction, under an
 * advisory lock so two hosts migrating at once take turns. Returns 0 and sets
 * *applied, or -1 with a message naming the file in err.
 */
int migrations_apply(PGconn *conn, int *applied, char *err, size_t errlen);

/* The schema version recorded in the database (0 = none); -1 on error. */
int migrations_current(PGconn *conn, char *err, size_t errlen);

/*
 * Tables the migrations would create that exist already while the database
 * has no backfilld schema (another system's): their names, space separated,
 * appended to names. Returns how many (0 = none, or the schema is ours), or
 * -1 with err.
 */
int migrations_conflicts(PGconn *conn, dynbuf_t *names, char *err, size_t errlen);

/* What migrations_adopt did. Free with migrations_adoption_free. */
struct migrate_adoption {
    dynbuf_t kept; /* "legacy_job_definitions legacy_job_runs" */
    int nkept;
    int64_t imported;      /* definitions created */
    int64_t enabled;       /* of those, enabled */
    dynbuf_t not_tickers;  /* imported disabled: not a ticker (US_BATCH_1), space separated */
    int64_t skipped;       /* rows not imported: unknown timeframe or job type */
    dynbuf_t skipped_rows; /* "symbol/timeframe/job_type …" of those */
    int64_t no_start;      /* historical definitions without a start (nothing scheduled) */
    int64_t legacy_runs;   /* rows left in legacy_job_runs */
};

/*
 * Adopts another system's database in one transaction: every table in the
 * way is kept as legacy_<name> (with its indexes and sequences), the schema
 * is created, and legacy_job_definitions is imported (symbol, timeframe in
 * our or Alpaca's spelling, job type, enabled; a start column if it has one,
 * else `from`, which may be NULL). Symbols that are not tickers come in
 * disabled. Old runs are not imported. 0, or -1 with err and nothing changed.
 */
int migrations_adopt(PGconn *conn, const char *from, struct migrate_adoption *out, char *err,
                     size_t errlen);
void migrations_adoption_free(struct migrate_adoption *a);

/*
 * The SQL that lets `role` run the daemon and nothing else: the queue's
 * functions, reading the queue, writing bars (create: also CREATE ROLE … LOGIN).
 * Appended to out; 0, or -1 with err.
 */
int migrations_role_sql(PGconn *conn, const char *role, bool create, dynbuf_t *out, char *err,
                        size_t errlen);

#endif
