/*
 * store: the writer. Pages from many runs are encoded as binary COPY rows as
 * they arrive and flushed together, one transaction at a time per writer
 * session:
 *
 *   SELECT … FROM unnest(spans) WHERE EXISTS (bars in the span)  -- the probe, before
 *   BEGIN;
 *   COPY bars FROM STDIN (FORMAT binary);        -- rows of spans with nothing stored
 *   COPY bars_stage FROM STDIN (FORMAT binary);  -- the other rows, then
 *   INSERT INTO bars … SELECT … FROM bars_stage
 *     ON CONFLICT (symbol, timeframe, feed, adjustment, ts) DO UPDATE … WHERE … IS DISTINCT FROM …;
 *   SELECT complete_job_runs(…)   -- the runs whose final page is in it
 *   COMMIT;
 *
 * So a run's last bars and its `succeeded` mark commit together, fenced by
 * (id, attempt, locked_by). Fresh spans (a first backfill) go in at the speed
 * of a plain COPY; stored ones through the upsert, whose IS DISTINCT FROM
 * guard makes a re-fetched, unchanged bar cost no new row version. The
 * upsert has DISTINCT ON only when a key may repeat in the transaction
 * (pages overlapping or out of order); otherwise it needs no sort. A direct
 * COPY that meets a stored key (another host was faster) fails as a unique
 * violation; the transaction is rolled back whole and sent again through the
 * upsert. A write transaction is a group commit: a page is written at once
 * if a writer session is free, and pages that arrive while all are busy form
 * the next ones. Transactions in flight at once never share a run or a
 * series, so a run's pages commit in order. If the connection drops, the same
 * write transaction is sent again after the reconnect (it is idempotent); an
 * SQL error fails every run in it with the message.
 */
#ifndef BACKFILLD_STORE_H
#define BACKFILLD_STORE_H

#include "bars.h"
#include "db.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct store store_t;

struct store_cbs {
    /*
     * A page of owner's run is committed. final: this was the run's last
     * page; completed: the run is now succeeded (false when final and the
     * fence refused: the lease was lost).
     */
    void (*committed)(void *owner, int64_t nbars, bool final, bool completed);
    /* A page of owner's run could not be written (once per page); err is the database's message. */
    void (*failed)(void *owner, const char *err);
    /* A write transaction finished (either way): backlog went down. ms: its duration. */
    void (*drained)(void *arg, bool ok, size_t rows, double ms);
    void *arg;
};

/* Writer sessions when the configuration does not say: Postgres ingests a COPY
 * on one core per session, and one session also waits while the loop parses. */
#define STORE_WRITERS_DEFAULT 2

/*
 * db is the first writer session (borrowed: the caller starts and closes it);
 * writers - 1 more sessions to conninfo are opened here, started at once and
 * closed by store_close. worker_id is copied.
 */
store_t *store_new(uv_loop_t *loop, db_conn_t *db, const char *conninfo, int writers,
                   const char *worker_id, const struct store_cbs *cbs);

/* One run's bars from one page. Everything is borrowed for the call: the bars are encoded at once.
 */
struct store_page {
    void *owner; /* passed back in the callbacks */
    int64_t run_id;
    int attempt;
    const char *symbol, *timeframe, *feed, *adjustment; /* the series */
    const bar_t *bars;
    int64_t fetched_us; /* when the page arrived (wall clock) */
    int64_t settled_us; /* bars that ended by then are final: fetched_us - the settling delay */
    size_t n;           /* may be 0, e.g. an empty final page */
    bool final;         /* the run's last page: its write transaction completes the run */
    int64_t total_bars; /* the run's totals so far, recorded on completion */
    int pages;
};

/* Buffers a page. Returns 0, or -1 if the bars cannot be encoded (never expected). */
int store_add(store_t *s, const struct store_page *page) MUSTCHECK;

/* Starts a write on every free writer session now while anything buffered may go. */
void store_flush(store_t *s);
/* Bars buffered or being written. */
size_t store_backlog(const store_t *s);
bool store_idle(const store_t *s);
/* Forgets owner: its items still get written but no callback names it. */
void store_forget(store_t *s, void *owner);
/* Closes the sessions the store opened (their requests fail first) and frees it later. */
void store_close(store_t *s);

#endif
