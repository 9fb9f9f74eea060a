/*
 * corpactions: Alpaca's corporate actions (GET /v1/corporate-actions on the
 * data host, alpaca-more-api.md §4) kept in corporate_actions, what they do
 * to stored adjusted history, and the daemon's upkeep job that runs the
 * syncs.
 *
 * A sync re-reads the trailing BACKFILLD_CORPACTIONS_WINDOW_DAYS of
 * process dates (records can appear late), page by page, each page loaded
 * whole by corporate_actions_load; then apply_corporate_actions re-queues,
 * forced, the history before the ex-date of every adjusted series an action
 * changes (raw series are never touched) and reports name changes against
 * the definitions of the old or new symbol. Every effect is a log line
 * naming the action, its type and the definition.
 *
 * The upkeep job (corpactions_daemon_*) looks every BACKFILLD_UPKEEP_INTERVAL_MS
 * (every five minutes when that is longer) from a libuv timer. On a worker
 * thread (uv_queue_work), with a database session and a curl handle of its
 * own, it reads the calendar (when a day old), syncs corporate actions, and
 * runs the ledger's pass over the last BACKFILLD_VERIFY_SESSIONS sessions
 * (re-check, and re-fetch holes); each job only when its last success is an
 * interval old, so a failed one is tried again at the next look. One host at
 * a time does it (an advisory lock). Its requests spend the shared budget at
 * low priority.
 */
#ifndef BACKFILLD_CORPACTIONS_H
#define BACKFILLD_CORPACTIONS_H

#include "calendar.h"
#include "config.h"
#include "util.h"

#include <stdint.h>
#include <uv.h>

struct corpactions_report {
    int pages;
    int records; /* records in the answers (seen again ones too) */
    int added;   /* records not seen before */
    int requeued_defs;
    int requeued_runs;
    int name_changes; /* definitions a name change affects (new ones) */
};

/* One sync of the trailing window_days (blocking). 0, or -1 with err (also
 * recorded in backfilld_sync_state and logged). */
int corpactions_sync(struct upkeep_ctx *ctx, int64_t window_days, struct corpactions_report *r,
                     char *err, size_t errlen) MUSTCHECK;

typedef struct corpactions_daemon corpactions_daemon_t;

/* Starts the upkeep timer on loop. cfg is borrowed and must outlive the job;
 * worker names this host in logs. NULL when BACKFILLD_UPKEEP_INTERVAL_MS is 0. */
corpactions_daemon_t *corpactions_daemon_new(uv_loop_t *loop, const struct config *cfg);

/* Stops the timer and asks a pass in flight to stop (at its next request or
 * statement); memory is freed once the timer's close callback and the pass
 * have both finished, so the loop must run afterwards. Safe with NULL. */
void corpactions_daemon_close(corpactions_daemon_t *u);

/* Appends the job's Prometheus families to out (on the loop thread). */
void corpactions_daemon_metrics(void *arg, dynbuf_t *out);

#endif
