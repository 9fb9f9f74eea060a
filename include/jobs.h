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

/* How a call ended: status is DB_OK or a DB_E* code of db.h; err and sqlstate
 * are borrowed for the callback's duration ("" when there is none). */
struct jobs_status {
    int status;
    const char *err;
    const char *sqlstate;
};

/* A claimed row the daemon cannot use (see jobs_parse_run). id is 0 if even
 * the id was unreadable; otherwise the run is claimed and should be failed. */
struct jobs_unusable {
    int64_t id;
    int attempt;
    char symbol[64]; /* as much of it as fits */
    char error[200];
};

/* A claim's answer: the usable runs and the unusable rows, borrowed. */
struct jobs_claimed {
    const struct job_run *runs;
    size_t n;
    const struct jobs_unusable *bad;
    size_t nbad;
};

/* The queue's depth (all hosts). Queued counts are of enabled definitions only. */
struct jobs_queue_stats {
    int64_t ready; /* queued, due now */
    int64_t later; /* queued, waiting for a retry backoff */
    int64_t running;
    int64_t succeeded_last_min; /* finished in the last minute */
    int64_t failed_last_min;
    int64_t oldest_queued_s;    /* age of the oldest queued run */
    int64_t completions_span_s; /* how much of that minute saw successes (a fresh start has less) */
};

/* Callbacks: each runs once per call, from the loop, never inside the call,
 * except on a session that is closing, where it runs at once with DB_ECLOSED
 * (db_submit). Every pointer passed is borrowed for the callback's duration. */
typedef void (*jobs_claim_cb)(void *arg, const struct jobs_status *st,
                              const struct jobs_claimed *c);
/* held: the ids whose leases were renewed; a run sent but missing was cancelled or taken over. */
typedef void (*jobs_renew_cb)(void *arg, const struct jobs_status *st, const int64_t *held,
                              size_t nheld);
/* run_status: "queued" (will be retried), "failed" (for good), or NULL: the
 * fence did not match, the lease was lost. */
typedef void (*jobs_fail_cb)(void *arg, const struct jobs_status *st, const char *run_status);
/* n: how many runs the call moved (released, rescued, scheduled), or the
 * schema version; ids: up to 100 of the ids moved, comma-separated, or "". */
typedef void (*jobs_count_cb)(void *arg, const struct jobs_status *st, int64_t n, const char *ids);
typedef void (*jobs_stats_cb)(void *arg, const struct jobs_status *st,
                              const struct jobs_queue_stats *s);

/*
 * Reads row i of a claim result into *out; -1 (with err naming the column
 * and what is wrong) if a value is unusable. When it fails after the id and
 * attempt were read, out->id is > 0 and out->attempt is set, so the caller
 * can give the run back as failed.
 */
int jobs_parse_run(PGresult *res, int row, struct job_run *out, char *err, size_t errlen);

/* claim_queued_job: up to n runs, locked by worker for lease_s seconds. */
void jobs_claim(db_conn_t *db, const char *worker, int n, int lease_s, jobs_claim_cb cb, void *arg);
/* A lease to renew: the run, its attempt (the fence) and its bars so far (for status). */
struct jobs_lease {
    int64_t id;
    int attempt;
    int64_t bars;
};

/* renew_job_leases: extends n leases by lease_s seconds. */
void jobs_renew(db_conn_t *db, const char *worker, const struct jobs_lease *leases, size_t n,
                int lease_s, jobs_renew_cb cb, void *arg);
/* A failed attempt, as fail_job_run records it. error is borrowed for the call. */
struct jobs_failure {
    int64_t id;
    int attempt;
    const char *error;
    bool retryable;          /* queued again after a backoff, or failed for good */
    int64_t base_ms, cap_ms; /* the retry backoff */
};

/* fail_job_run: records a failed attempt (fenced by id, attempt, worker). cb may be NULL. */
void jobs_fail(db_conn_t *db, const char *worker, const struct jobs_failure *f, jobs_fail_cb cb,
               void *arg);
/* release_job_runs: back to queued without spending an attempt; n = runs released. */
void jobs_release(db_conn_t *db, const char *worker, const int64_t *ids, const int *attempts,
                  size_t n, jobs_count_cb cb, void *arg);
/*
 * Releases (without spending an attempt) every run locked by worker that is
 * not among known_ids: after a lost connection, a claim may have committed
 * without its answer ever arriving. It goes ahead of every request queued on
 * db, so a claim that was waiting behind the lost request (and whose runs
 * known_ids cannot hold yet) runs after it; call it before anything else is
 * submitted on the new session. n and ids: the runs released.
 */
void jobs_release_unknown(db_conn_t *db, const char *worker, const int64_t *known_ids, size_t n,
                          jobs_count_cb cb, void *arg);
/* rescue_expired_job_runs: runs of dead workers back to the queue; n = runs rescued. */
void jobs_rescue(db_conn_t *db, int64_t base_ms, int64_t cap_ms, jobs_count_cb cb, void *arg);
/* schedule_due_jobs: runs made from due definitions; n = runs created. A bar
 * is settled settle_s after its close, SIP also sip_delay_s old. */
void jobs_schedule(db_conn_t *db, int max_attempts, int64_t settle_s, int64_t sip_delay_s,
                   jobs_count_cb cb, void *arg);

/* Deletes up to limit runs finished more than keep_days ago, and old claims
 * (prune_job_runs); cb gets the number of runs deleted. */
void jobs_prune(db_conn_t *db, int64_t keep_days, int limit, jobs_count_cb cb, void *arg);
/* The queue's depth; served by partial indexes (finished runs are not scanned). */
void jobs_queue_stats(db_conn_t *db, jobs_stats_cb cb, void *arg);
/* The schema version the database is at (n; 0 when there is no schema at all). */
void jobs_schema_version(db_conn_t *db, jobs_count_cb cb, void *arg);

#endif
