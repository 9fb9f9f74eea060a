/*
 * db: libpq driven by uv_poll. See db.h for the contract.
 *
 * The order of libpq calls follows the "Asynchronous Command Processing"
 * chapter of the libpq docs exactly: send, then PQflush until it returns 0,
 * waiting for writable (and reading whatever arrives meanwhile, or the server
 * may deadlock us); on readable, PQconsumeInput, then PQgetResult while
 * !PQisBusy until it returns NULL. PQputCopyData() == 0 means "wait for
 * writable", not success.
 */
#include "db.h"

#include "backoff.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

enum db_state { ST_BACKOFF, ST_CONNECTING, ST_READY, ST_CLOSED };

/* What the current command of the current request is. */
enum cmd_kind { CMD_NONE, CMD_BEGIN, CMD_STEP, CMD_COMMIT, CMD_ROLLBACK };

struct db_step {
    char *sql;
    int nparams;
    char **params;
    char *copy; /* COPY FROM STDIN payload, or NULL for a plain statement */
    size_t copylen;
    bool keep;
};

struct db_req {
    struct db_req *next;
    db_done_cb cb;
    void *arg;
    bool txn;
    bool setup; /* the internal after-connect request */
    struct db_step *steps;
    size_t nsteps, capsteps;
};

struct db_poll {
    uv_poll_t handle;
    db_conn_t *db; /* NULL once db is gone */
};

struct db_conn {
    uv_loop_t *loop;
    char *conninfo;
    char *name;
    struct db_callbacks cbs;
    PGconn *pg;
    enum db_state st;
    struct db_poll *poll;
    int poll_events;
    uv_timer_t timer;
    unsigned failures;
    uint64_t rng;
    char **setup;
    size_t nsetup;

    db_req_t *head, *tail; /* queued, not yet started */
    db_req_t *cur;         /* in flight */
    size_t pos;            /* index of the step being run (CMD_STEP) */
    enum cmd_kind cmd;
    bool want_write; /* PQflush returned 1 */
    bool copying;    /* between PGRES_COPY_IN and PQputCopyEnd */
    size_t copy_off;
    int err_status; /* first failure of the current request */
    char err[512];
    char sqlstate[6];
    PGresult *kept[DB_MAX_KEPT];
    int nkept;

    bool closing;
    int open_handles;
    void (*closed_cb)(void *);
    void *closed_arg;
};

static void advance(db_conn_t *db);
static void conn_lost(db_conn_t *db, const char *why);
static void start_connect(db_conn_t *db);

/* --- requests ----------------------------------------------------------- */

db_req_t *db_req_new(db_done_cb cb, void *arg, bool transaction)
{
    db_req_t *r = xcalloc(1, sizeof *r);
    r->cb = cb;
    r->arg = arg;
    r->txn = transaction;
    return r;
}

static struct db_step *add_step(db_req_t *r, const char *sql)
{
    if (r->nsteps == r->capsteps) {
        r->capsteps = r->capsteps ? r->capsteps * 2 : 4;
        r->steps = xrealloc(r->steps, r->capsteps * sizeof(*r->steps));
    }
    struct db_step *s = &r->steps[r->nsteps++];
    memset(s, 0, sizeof *s);
    s->sql = xstrdup(sql);
    return s;
}

void db_req_sql(db_req_t *r, const char *sql, int nparams, const char *const *params)
{
    struct db_step *s = add_step(r, sql);
    s->nparams = nparams;
    if (nparams > 0) {
        s->params = xcalloc((size_t)nparams, sizeof(char *));
        for (int i = 0; i < nparams; i++)
            s->params[i] = params[i] ? xstrdup(params[i]) : NULL;
    }
}

void db_req_copy(db_req_t *r, const char *sql, char *data, size_t len)
{
    struct db_step *s = add_step(r, sql);
    s->copy = data;
    s->copylen = len;
}

void db_req_keep(db_req_t *r)
{
    if (r->nsteps > 0)
        r->steps[r->nsteps - 1].keep = true;
}

void db_req_free(db_req_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nsteps; i++) {
        struct db_step *s = &r->steps[i];
        free(s->sql);
        for (int k = 0; k < s->nparams; k++)
            free(s->params[k]);
        free(s->params);
        free(s->copy);
    }
    free(r->steps);
    free(r);
}

/* --- polling ------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    db_conn_t *db = h->data;
    if (h->type == UV_POLL) {
        struct db_poll *p = container_of((uv_poll_t *)h, struct db_poll, handle);
        db = p->db;
        free(p);
        if (!db)
            return;
    }
    if (--db->open_handles == 0 && db->closing) {
        void (*cb)(void *) = db->closed_cb;
        void *arg = db->closed_arg;
        for (size_t i = 0; i < db->nsetup; i++)
            free(db->setup[i]);
        free(db->setup);
        free(db->conninfo);
        free(db->name);
        free(db);
        if (cb)
            cb(arg);
    }
}

static void drop_poll(db_conn_t *db)
{
    if (!db->poll)
        return;
    uv_poll_stop(&db->poll->handle);
    uv_close((uv_handle_t *)&db->poll->handle, on_handle_closed);
    db->poll = NULL;
    db->poll_events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

/*
 * (Re)creates the poll handle for the current PQsocket(). During connection
 * libpq may swap sockets (multi-host, SSL fallback) and a new socket may even
 * reuse the old number, so while connecting the handle is rebuilt every step.
 */
static int reset_poll(db_conn_t *db, int events)
{
    drop_poll(db);
    int fd = PQsocket(db->pg);
    if (fd < 0)
        return -1;
    struct db_poll *p = xcalloc(1, sizeof *p);
    p->db = db;
    if (uv_poll_init_socket(db->loop, &p->handle, fd) != 0) {
        free(p);
        return -1;
    }
    db->open_handles++;
    p->handle.data = db;
    db->poll = p;
    db->poll_events = events;
    uv_poll_start(&p->handle, events, on_poll);
    return 0;
}

static void update_poll(db_conn_t *db)
{
    if (!db->poll || db->st != ST_READY)
        return;
    /* Level-triggered: ask for writable only while something waits to go out. */
    int ev = UV_READABLE | (db->want_write ? UV_WRITABLE : 0);
    if (ev != db->poll_events) {
        db->poll_events = ev;
        uv_poll_start(&db->poll->handle, ev, on_poll);
    }
}

/* --- the request engine ------------------------------------------------- */

static void set_error(db_conn_t *db, int status, const char *msg, const char *sqlstate)
{
    if (db->err_status != DB_OK)
        return;
    db->err_status = status;
    size_t n = strcspn(msg ? msg : "", "\n");
    if (n >= sizeof db->err)
        n = sizeof db->err - 1;
    memcpy(db->err, msg ? msg : "", n);
    db->err[n] = '\0';
    strlcpy_trunc(db->sqlstate, sizeof db->sqlstate, sqlstate ? sqlstate : "");
}

/* Detaches and completes the current request. Returns false if db started closing. */
static bool finish_current(db_conn_t *db)
{
    db_req_t *r = db->cur;
    db->cur = NULL;
    db->cmd = CMD_NONE;
    db->copying = false;
    PGresult *kept[DB_MAX_KEPT];
    int nkept = db->nkept;
    memcpy(kept, db->kept, sizeof kept);
    db->nkept = 0;
    if (r->setup) {
        int st = db->err_status;
        char why[600];
        snprintf(why, sizeof why, "setup failed: %s", db->err);
        db_req_free(r);
        for (int i = 0; i < nkept; i++)
            PQclear(kept[i]);
        if (st != DB_OK) {
            conn_lost(db, why);
            return false;
        }
        db->failures = 0;
        /* Which server: after a failover this line is how ops see where the
         * daemon went (a multi-host URI picks the read-write one). */
        LOG(LL_INFO, "db connected", F_STR("conn", db->name), F_STR("host", PQhost(db->pg)),
            F_STR("port", PQport(db->pg)));
        if (db->cbs.up)
            db->cbs.up(db->cbs.arg);
        return !db->closing;
    }
    if (r->cb)
        r->cb(r->arg, db->err_status, db->err_status ? db->err : NULL,
              db->err_status == DB_ESQL ? db->sqlstate : "", kept, db->err_status ? 0 : nkept);
    for (int i = 0; i < nkept; i++)
        PQclear(kept[i]);
    db_req_free(r);
    return !db->closing;
}

static void flush_out(db_conn_t *db)
{
    int rc = PQflush(db->pg);
    if (rc < 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->want_write = rc == 1;
    update_poll(db);
}

/* Sends the next command of the current request. */
static void send_next(db_conn_t *db)
{
    db_req_t *r = db->cur;
    const char *sql = NULL;
    const struct db_step *s = NULL;
    if (db->err_status != DB_OK) {
        PGTransactionStatusType ts = PQtransactionStatus(db->pg);
        if (db->cmd != CMD_ROLLBACK && (ts == PQTRANS_INERROR || ts == PQTRANS_INTRANS)) {
            db->cmd = CMD_ROLLBACK;
            sql = "ROLLBACK";
        } else {
            if (finish_current(db))
                advance(db);
            return;
        }
    } else if (db->cmd == CMD_NONE && r->txn) {
        db->cmd = CMD_BEGIN;
        sql = "BEGIN";
    } else {
        size_t next = db->cmd == CMD_STEP ? db->pos + 1 : 0;
        if (db->cmd == CMD_COMMIT || db->cmd == CMD_ROLLBACK || next >= r->nsteps) {
            if (r->txn && db->cmd != CMD_COMMIT && db->cmd != CMD_ROLLBACK) {
                db->cmd = CMD_COMMIT;
                sql = "COMMIT";
            } else {
                if (finish_current(db))
                    advance(db);
                return;
            }
        } else {
            db->cmd = CMD_STEP;
            db->pos = next;
            s = &r->steps[next];
            sql = s->sql;
        }
    }
    int ok;
    if (s && s->nparams > 0)
        ok = PQsendQueryParams(db->pg, sql, s->nparams, NULL, (const char *const *)s->params, NULL,
                               NULL, 0);
    else if (s && !s->copy)
        ok = PQsendQueryParams(db->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    else
        ok = PQsendQuery(db->pg, sql); /* BEGIN/COMMIT/ROLLBACK and COPY */
    if (!ok) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->copy_off = 0;
    flush_out(db);
}

/*
 * Streams the COPY payload; returns when done or when the socket is full.
 * libpq moves the unsent rest of its output buffer to the front after every
 * partial send, so queueing a whole batch at once costs quadratic copying:
 * only one chunk is queued at a time, and the next goes in once it is out.
 */
static void copy_push(db_conn_t *db)
{
    const struct db_step *s = &db->cur->steps[db->pos];
    while (db->copy_off < s->copylen) {
        int f = PQflush(db->pg);
        if (f < 0) {
            conn_lost(db, PQerrorMessage(db->pg));
            return;
        }
        if (f == 1) { /* the socket is full: continue when writable */
            db->want_write = true;
            update_poll(db);
            return;
        }
        size_t n = s->copylen - db->copy_off;
        if (n > 64 * 1024)
            n = 64 * 1024;
        int rc = PQputCopyData(db->pg, s->copy + db->copy_off, (int)n);
        if (rc < 0) {
            conn_lost(db, PQerrorMessage(db->pg));
            return;
        }
        if (rc == 0) { /* buffers full: wait for writable */
            db->want_write = true;
            update_poll(db);
            return;
        }
        db->copy_off += n;
    }
    int rc = PQputCopyEnd(db->pg, NULL);
    if (rc < 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    if (rc == 0) {
        db->want_write = true;
        update_poll(db);
        return;
    }
    db->copying = false;
    flush_out(db);
}

static void on_result(db_conn_t *db, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    bool is_step = db->cmd == CMD_STEP;
    if (st == PGRES_COPY_IN) {
        PQclear(res);
        if (!is_step || !db->cur->steps[db->pos].copy) {
            /* A plain statement asked for COPY data: refuse rather than hang. */
            set_error(db, DB_ESQL, "statement unexpectedly entered COPY mode", "");
            PQputCopyEnd(db->pg, "unexpected COPY");
            flush_out(db);
            return;
        }
        db->copying = true;
        copy_push(db);
        return;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        const char *m = PQresultErrorMessage(res);
        if (db->cmd == CMD_ROLLBACK) {
            PQclear(res); /* the first error is the one that matters */
            return;
        }
        set_error(db, DB_ESQL, m, PQresultErrorField(res, PG_DIAG_SQLSTATE));
        PQclear(res);
        return;
    }
    if (is_step && db->cur->steps[db->pos].keep && db->nkept < DB_MAX_KEPT) {
        db->kept[db->nkept++] = res;
        return;
    }
    PQclear(res);
}

/* Reads whatever results are complete; starts the next command after each NULL. */
static void read_results(db_conn_t *db)
{
    while (!db->closing && db->st == ST_READY && db->cur && db->cmd != CMD_NONE && !db->copying &&
           !PQisBusy(db->pg)) {
        PGresult *res = PQgetResult(db->pg);
        if (res) {
            on_result(db, res);
            continue;
        }
        send_next(db); /* this command is complete */
    }
}

static void advance(db_conn_t *db)
{
    if (db->closing || db->st != ST_READY || db->cur)
        return;
    db_req_t *r = db->head;
    if (!r) {
        update_poll(db);
        return;
    }
    db->head = r->next;
    if (!db->head)
        db->tail = NULL;
    r->next = NULL;
    db->cur = r;
    db->cmd = CMD_NONE;
    db->pos = 0;
    db->err_status = DB_OK;
    db->nkept = 0;
    db->err[0] = '\0';
    db->sqlstate[0] = '\0';
    send_next(db);
}

void db_submit(db_conn_t *db, db_req_t *r)
{
    if (db->closing) {
        if (r->cb)
            r->cb(r->arg, DB_ECLOSED, "database connection is shutting down", "", NULL, 0);
        db_req_free(r);
        return;
    }
    r->next = NULL;
    if (db->tail)
        db->tail->next = r;
    else
        db->head = r;
    db->tail = r;
    advance(db);
}

void db_submit_first(db_conn_t *db, db_req_t *r)
{
    if (db->closing) {
        db_submit(db, r); /* fails it with DB_ECLOSED */
        return;
    }
    r->next = db->head;
    db->head = r;
    if (!db->tail)
        db->tail = r;
    advance(db);
}

static void drain_notifies(db_conn_t *db)
{
    PGnotify *n;
    while (!db->closing && (n = PQnotifies(db->pg)) != NULL) {
        if (db->cbs.notify)
            db->cbs.notify(db->cbs.arg, n->relname);
        PQfreemem(n);
    }
}

/* --- connection life cycle ---------------------------------------------- */

static void on_backoff_timer(uv_timer_t *t)
{
    start_connect(t->data);
}

/* PQconnectPoll has no deadline of its own: connect_timeout is the caller's job. */
#define DB_CONNECT_TIMEOUT_MS 15000

static void on_connect_timeout(uv_timer_t *t)
{
    db_conn_t *db = t->data;
    if (db->st == ST_CONNECTING)
        conn_lost(db, "timed out connecting to the database");
}

static void conn_lost(db_conn_t *db, const char *why)
{
    char msg[512];
    size_t n = strcspn(why ? why : "unknown error", "\n");
    if (n >= sizeof msg)
        n = sizeof msg - 1;
    memcpy(msg, why ? why : "unknown error", n);
    msg[n] = '\0';

    drop_poll(db);
    if (db->pg) {
        PQfinish(db->pg);
        db->pg = NULL;
    }
    bool was_ready = db->st == ST_READY;
    db->st = ST_BACKOFF;
    db->want_write = false;
    db->copying = false;
    for (int i = 0; i < db->nkept; i++)
        PQclear(db->kept[i]);
    db->nkept = 0;
    if (db->cur) {
        db_req_t *r = db->cur;
        db->cur = NULL;
        if (r->cb && !r->setup)
            r->cb(r->arg, DB_ECONN, msg, "", NULL, 0);
        db_req_free(r);
        if (db->closing)
            return;
    }
    int64_t delay = backoff_ms(db->failures < 16 ? db->failures : 16, 250, 30000, &db->rng);
    db->failures++;
    LOG(was_ready ? LL_ERROR : LL_WARN, was_ready ? "db connection lost" : "db connect failed",
        F_STR("conn", db->name), F_STR("error", msg), F_I64("retry_in_ms", delay),
        F_I64("failures", db->failures));
    if (db->cbs.down)
        db->cbs.down(db->cbs.arg, msg);
    if (db->closing)
        return;
    uv_timer_start(&db->timer, on_backoff_timer, (uint64_t)delay, 0);
}

/* Server NOTICEs would go to stderr as raw text, breaking the JSON log stream. */
static void on_notice(void *arg, const char *message)
{
    db_conn_t *db = arg;
    LOG(LL_DEBUG, "db notice", F_STR("conn", db->name), F_STR("notice", message));
}

static void on_connected(db_conn_t *db)
{
    uv_timer_stop(&db->timer);
    PQsetNoticeProcessor(db->pg, on_notice, db);
    if (PQsetnonblocking(db->pg, 1) != 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->st = ST_READY;
    if (reset_poll(db, UV_READABLE) < 0) {
        conn_lost(db, "cannot poll the database socket");
        return;
    }
    /* The setup request jumps the queue: it must run before anything else. */
    db_req_t *s = db_req_new(NULL, NULL, false);
    s->setup = true;
    db_req_sql(s, "SET application_name = 'backfilld'", 0, NULL);
    for (size_t i = 0; i < db->nsetup; i++)
        db_req_sql(s, db->setup[i], 0, NULL);
    s->next = db->head;
    db->head = s;
    if (!db->tail)
        db->tail = s;
    advance(db);
}

static void connect_step(db_conn_t *db)
{
    switch (PQconnectPoll(db->pg)) {
    case PGRES_POLLING_READING:
        if (reset_poll(db, UV_READABLE) < 0)
            conn_lost(db, "cannot poll the database socket");
        break;
    case PGRES_POLLING_WRITING:
        if (reset_poll(db, UV_WRITABLE) < 0)
            conn_lost(db, "cannot poll the database socket");
        break;
    case PGRES_POLLING_OK:
        on_connected(db);
        break;
    default:
        conn_lost(db, PQerrorMessage(db->pg));
        break;
    }
}

static void start_connect(db_conn_t *db)
{
    /* TCP keepalives notice a dead server in about a minute instead of two
     * hours; listed before dbname so the user's connection string overrides them. */
    const char *keys[] = {"keepalives_idle", "keepalives_interval",       "keepalives_count",
                          "dbname",          "fallback_application_name", NULL};
    const char *vals[] = {"30", "10", "3", db->conninfo, "backfilld", NULL};
    db->pg = PQconnectStartParams(keys, vals, 1);
    db->st = ST_CONNECTING;
    uv_timer_start(&db->timer, on_connect_timeout, DB_CONNECT_TIMEOUT_MS, 0);
    if (!db->pg) {
        conn_lost(db, "out of memory starting a database connection");
        return;
    }
    if (PQstatus(db->pg) == CONNECTION_BAD) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    if (reset_poll(db, UV_WRITABLE) < 0)
        conn_lost(db, "cannot poll the database socket");
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    db_conn_t *db = h->data;
    if (db->closing)
        return;
    /* libuv reports POLLERR as UV_EBADF. While connecting that is how a
     * refused or reset attempt shows up, and only libpq knows what comes
     * next: it reads the socket's error and moves on to the next address or
     * host of a multi-host URI, on a new socket. So the step runs anyway. */
    if (db->st == ST_CONNECTING) {
        connect_step(db);
        return;
    }
    if (status < 0) {
        /* On a ready session the socket's own error says more than EBADF. */
        if (db->st == ST_READY && !PQconsumeInput(db->pg))
            conn_lost(db, PQerrorMessage(db->pg));
        else
            conn_lost(db, uv_strerror(status));
        return;
    }
    if (db->st != ST_READY)
        return;
    if (events & UV_WRITABLE) {
        if (db->copying) {
            copy_push(db);
        } else {
            flush_out(db);
        }
        if (db->closing || db->st != ST_READY)
            return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(db->pg)) {
            conn_lost(db, PQerrorMessage(db->pg));
            return;
        }
        drain_notifies(db);
        if (db->closing)
            return;
        /* Mid-COPY the pending output is the COPY stream: keep feeding it, or
         * writable would be dropped and the stream never finished. */
        if (db->want_write) {
            if (db->copying)
                copy_push(db);
            else
                flush_out(db);
        }
        if (db->closing || db->st != ST_READY)
            return;
        read_results(db);
        if (db->closing || db->st != ST_READY)
            return;
        /* PQgetResult parses buffered input too: a NOTIFY that came in the
         * same read as a result is only queued now, and no further readable
         * event may come for it. */
        drain_notifies(db);
        if (db->closing || db->st != ST_READY)
            return;
        if (PQstatus(db->pg) == CONNECTION_BAD)
            conn_lost(db, PQerrorMessage(db->pg));
    }
}

/* --- public ------------------------------------------------------------- */

db_conn_t *db_conn_new(uv_loop_t *loop, const char *conninfo, const char *name,
                       const struct db_callbacks *cbs)
{
    db_conn_t *db = xcalloc(1, sizeof *db);
    db->loop = loop;
    db->conninfo = xstrdup(conninfo ? conninfo : "");
    db->name = xstrdup(name);
    if (cbs)
        db->cbs = *cbs;
    db->rng = (uint64_t)wall_us() ^ (uint64_t)(uintptr_t)db;
    db->st = ST_BACKOFF;
    uv_timer_init(loop, &db->timer);
    db->timer.data = db;
    db->open_handles = 1;
    return db;
}

void db_conn_add_setup(db_conn_t *db, const char *sql)
{
    db->setup = xrealloc(db->setup, (db->nsetup + 1) * sizeof(char *));
    db->setup[db->nsetup++] = xstrdup(sql);
}

void db_conn_start(db_conn_t *db)
{
    start_connect(db);
}

bool db_conn_is_up(const db_conn_t *db)
{
    return db->st == ST_READY && !(db->cur && db->cur->setup);
}

size_t db_conn_pending(const db_conn_t *db)
{
    size_t n = db->cur ? 1 : 0;
    for (db_req_t *r = db->head; r; r = r->next)
        n++;
    return n;
}

void db_conn_close(db_conn_t *db, void (*closed_cb)(void *), void *arg)
{
    if (db->closing)
        return;
    db->closing = true;
    db->closed_cb = closed_cb;
    db->closed_arg = arg;
    db_req_t *cur = db->cur;
    db->cur = NULL;
    for (int i = 0; i < db->nkept; i++)
        PQclear(db->kept[i]);
    db->nkept = 0;
    if (cur) {
        if (cur->cb && !cur->setup)
            cur->cb(cur->arg, DB_ECLOSED, "database connection closed", "", NULL, 0);
        db_req_free(cur);
    }
    while (db->head) {
        db_req_t *r = db->head;
        db->head = r->next;
        if (r->cb && !r->setup)
            r->cb(r->arg, DB_ECLOSED, "database connection closed", "", NULL, 0);
        db_req_free(r);
    }
    db->tail = NULL;
    /* Stop polling before PQfinish closes the socket. */
    if (db->poll)
        db->poll->db = db;
    drop_poll(db);
    if (db->pg) {
        PQfinish(db->pg);
        db->pg = NULL;
    }
    db->st = ST_CLOSED;
    uv_timer_stop(&db->timer);
    uv_close((uv_handle_t *)&db->timer, on_handle_closed);
}
