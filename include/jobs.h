/*
 * jobs: the queue's SQL, as db requests. Every transition after the claim is
 * fenced by (id, attempt, locked_by) inside the SQL functions of
 * sql/001_schema.sql; this module only builds the calls and reads the rows.
 */
#ifndef BACKFILLD_JOBS_H
#define BACKFILLD_JOBS_H

#include "db.h"

#include <stdbool.h>
#include <stdint.h>

/* One claimed run, as claim_queued_job returns it. */
struct job_run {
    int64_t id;
    int attempt;
    int max_attempts;
    char symbol[64];
    char timeframe[8];
    char feed[8];
    char adjustment[64];
    int64_t start_us, end_us;
};

/*
 * Reads row i of a claim result into *out; -1 (with err naming the column
 * and what is wrong) if a value is unusable. When it fails after the id and
 * attempt were read, out->id is > 0 and out->attempt is set, so the caller
 * can give the run back as failed.
 */
int jobs_parse_run(PGresult *res, int row, struct job_run *out, char *err, size_t errlen);

void jobs_claim(db_conn_t *db, const char *worker, int n, int lease_s, db_done_cb cb, void *arg);
void jobs_renew(db_conn_t *db, const char *worker, const int64_t *ids, const int *attempts,
                const int64_t *bars, size_t n, int lease_s, db_done_cb cb, void *arg);
void jobs_fail(db_conn_t *db, const char *worker, int64_t id, int attempt, const char *error,
               bool retryable, int64_t base_ms, int64_t cap_ms, db_done_cb cb, void *arg);
void jobs_release(db_conn_t *db, const char *worker, const int64_t *ids, const int *attempts,
                  size_t n, db_done_cb cb, void *arg);
/*
 * Releases (without spending an attempt) every run locked by worker that is
 * not among known_ids: after a lost connection, a claim may have committed
 * without its answer ever arriving. It goes ahead of every request queued on
 * db, so a claim that was waiting behind the lost request (and whose runs
 * known_ids cannot hold yet) runs after it; call it before anything else is
 * submitted on the new session.
 */
void jobs_release_unknown(db_conn_t *db, const char *worker, const int64_t *known_ids, size_t n,
                          db_done_cb cb, void *arg);
void jobs_rescue(db_conn_t *db, int64_t base_ms, int64_t cap_ms, db_done_cb cb, void *arg);
void jobs_schedule(db_conn_t *db, int max_attempts, db_done_cb cb, void *arg);
/*
 * One row: queued_ready, queued_later, running, succeeded in the last minute,
 * failed in the last minute, oldest_queued_s — runs of enabled
 * definitions only for the queued counts. All hosts' runs.
 */
void jobs_queue_stats(db_conn_t *db, db_done_cb cb, void *arg);

#endif
