/*
 * db: libpq on the libuv loop.
 *
 * One db_conn is one PostgreSQL session driven without ever blocking: an
 * explicit state machine (BACKOFF → CONNECTING → SETUP → IDLE ⇄ BUSY, with
 * COPY-IN inside BUSY) over one uv_poll on PQsocket(). Work is submitted as
 * requests: an ordered list of statements (and COPY FROM STDIN streams) run
 * on this session one request at a time, optionally inside BEGIN … COMMIT.
 * If a statement fails, the rest of the request is skipped, an open
 * transaction is rolled back, and the callback gets the server's message.
 *
 * A lost connection fails only the request in flight (its outcome is
 * unknown: DB_ECONN); requests not yet sent wait for the reconnect, which
 * backs off with jitter up to 30 s and is logged each time. Setup statements
 * (LISTEN, temp tables) run again after every reconnect.
 *
 * Only this module knows libpq's socket dance.
 */
#ifndef BACKFILLD_DB_H
#define BACKFILLD_DB_H

#include "util.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

enum db_status { DB_OK = 0, DB_ESQL = -1, DB_ECONN = -2, DB_ECLOSED = -3 };

typedef struct db_conn db_conn_t;
typedef struct db_req db_req_t;

/*
 * Called once per request. status is DB_OK or an error; err is the first line
 * of the server's or libpq's message (borrowed, NULL on success); res holds
 * the results of the steps marked with db_req_keep(), in step order (nres of
 * them, all NULL-free on success), borrowed for the duration of the call.
 * sqlstate is the 5-char code for DB_ESQL, else "".
 */
#define DB_MAX_KEPT 4
typedef void (*db_done_cb)(void *arg, int status, const char *err, const char *sqlstate,
                           PGresult *const *res, int nres);

struct db_callbacks {
    void (*up)(void *arg);                          /* connected and set up */
    void (*down)(void *arg, const char *why);       /* connection lost or connect failed */
    void (*notify)(void *arg, const char *channel); /* a NOTIFY arrived */
    void *arg;
};

/* Creates a connection object; nothing happens until db_conn_start. `name` labels logs. */
db_conn_t *db_conn_new(uv_loop_t *loop, const char *conninfo, const char *name,
                       const struct db_callbacks *cbs);

/* Statements run after every (re)connect, in order, before any request. Copied. */
void db_conn_add_setup(db_conn_t *db, const char *sql);

void db_conn_start(db_conn_t *db);

/*
 * Stops the session: fails queued requests with DB_ECLOSED (callbacks run
 * from here), closes the socket and frees db from the handles' close
 * callbacks; closed_cb (may be NULL) runs after that. db must not be used
 * after this call.
 */
void db_conn_close(db_conn_t *db, void (*closed_cb)(void *), void *arg);

bool db_conn_is_up(const db_conn_t *db);
/* Requests queued or in flight. */
size_t db_conn_pending(const db_conn_t *db);

db_req_t *db_req_new(db_done_cb cb, void *arg, bool transaction);
/* Adds a statement with text parameters (NULL entries are SQL NULL). Everything is copied. */
void db_req_sql(db_req_t *r, const char *sql, int nparams, const char *const *params);
/* Adds COPY … FROM STDIN; takes ownership of data (malloc'd, len bytes). */
void db_req_copy(db_req_t *r, const char *sql, char *data, size_t len);
/* The last added step's result is passed to the callback (at most DB_MAX_KEPT per request). */
void db_req_keep(db_req_t *r);
/* Queues the request; db takes ownership of r. */
void db_submit(db_conn_t *db, db_req_t *r);
/* Like db_submit, but ahead of every queued request: it is the next one sent
 * (after the one in flight, if any). For work that must see the session
 * before anything already queued runs, such as the release after a reconnect. */
void db_submit_first(db_conn_t *db, db_req_t *r);

/* Frees a request that was never submitted. NULL is fine. */
void db_req_free(db_req_t *r);

#endif
