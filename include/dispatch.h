/*
 * dispatch: the daemon itself. Owns the loop's long-lived objects (three
 * database sessions: main for the queue, one for the writer, one for leases
 * and rate-limit tokens; the HTTP client, the rate limiter, the writer) and the
 * runs in flight, and drives them from one housekeeping tick:
 *
 *   claim    up to min(free slots, claim batch) runs, when woken by NOTIFY,
 *            by a finished run, or by the poll interval; never while the
 *            writer is backed up (backpressure);
 *   fetch    each run through alpaca.c, its pages to store.c;
 *   renew    every held lease in one statement each third of the lease; runs
 *            missing from the answer (cancelled, taken over) are abandoned;
 *   rescue   expired leases of dead hosts, every few seconds;
 *   schedule schedule_due_jobs() every 10 s and on definition changes;
 *   report   a progress line every BACKFILLD_PROGRESS_INTERVAL_MS.
 *
 * Shutdown (dispatch_stop): stop claiming; let runs finish until the
 * deadline; then stop their fetches and give them back to the queue without
 * spending an attempt; flush the writer; close everything; exit.
 */
#ifndef BACKFILLD_DISPATCH_H
#define BACKFILLD_DISPATCH_H

#include "config.h"

#include <stdbool.h>
#include <uv.h>

typedef struct dispatch dispatch_t;

struct dispatch_hooks {
    void (*ready)(void *arg);                    /* database up and schema right */
    void (*status)(void *arg, const char *line); /* one-line summary, for sd_notify STATUS= */
    void (*exited)(void *arg, int code);         /* everything closed; code for exit() */
    void *arg;
};

/* cfg is borrowed and must outlive the dispatcher; until_idle: exit 0 when no work is left. */
dispatch_t *dispatch_new(uv_loop_t *loop, struct config *cfg, const char *worker_id,
                         bool until_idle, const struct dispatch_hooks *hooks);
/* Starts connecting and serving; -1 (logged) if the metrics address cannot be served. */
int dispatch_start(dispatch_t *d);
/* Graceful stop (first signal). A second call exits at once. */
void dispatch_stop(dispatch_t *d, const char *why);
/* Closes everything at once (start-up failure); hooks.exited gets code. */
void dispatch_abort(dispatch_t *d, int code);
/* Reloadable settings changed in the borrowed cfg: apply them. */
void dispatch_reconfigure(dispatch_t *d);

/* Frees what is left after hooks.exited ran (the loop has closed every handle). */
void dispatch_free(dispatch_t *d);

#endif
