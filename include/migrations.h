/*
 * migrations: the SQL files of sql/, compiled in by tools/embed_sql.cmake, and
 * the code that applies them (migrate.c).
 */
#ifndef BACKFILLD_MIGRATIONS_H
#define BACKFILLD_MIGRATIONS_H

#include <libpq-fe.h>

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

#endif
