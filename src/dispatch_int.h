/*
 * dispatch_int.h: what the dispatcher's files share, and nothing else sees
 * (as libuv's uv-common.h and curl's urldata.h). The public face is
 * include/dispatch.h.
 *
 *   dispatch.c         the object, the tick, wake-ups, shutdown, the public calls
 *   dispatch_runs.c    runs and their fetches (groups): pages, writes, outcomes
 *   dispatch_queue.c   the queue side: claim, renew, rescue, schedule, idle
 *                      check, what a reconnect must do
 *   dispatch_report.c  counters, the progress line and its ETA, /metrics, /healthz
 *
 * A run lives in d->runs from its claim until its fetch, the writes of its
 * pages and the database call that records its outcome are all over. Only
 * then is it freed and its slot given back, by runs_reap() from the tick or
 * a kick, never from inside one of its own callbacks. Its outcome changes
 * once, from O_NONE, and only through runs_finish().
 *
 * None of these files calls libpq: rows come decoded from jobs.h.
 */
#ifndef BACKFILLD_DISPATCH_INT_H
#define BACKFILLD_DISPATCH_INT_H

#include "alpaca.h"
#include "db.h"
#include "dispatch.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>

#define TICK_MS 100
#define AUTH_PAUSE_MS 60000

enum outcome { O_NONE = 0, O_SUCCEEDED, O_FAILED, O_RELEASED, O_ABANDONED };

/* This daemon's counters, served at /metrics and in the progress line. */
struct dispatch_metrics {
    uint64_t runs_claimed, runs_succeeded, runs_failed, runs_retried, runs_released, runs_abandoned,
        pages, bars, requests, page_retries, rate_limited, rescued, pruned;
    int64_t queue_ready, queue_later, queue_running, oldest_queued_s; /* all hosts */
};

struct group;

struct run {
    struct run *prev, *next;
    dispatch_t *d;
    struct job_run j;
    struct group *g;      /* the fetch this run's symbol rides in (counted in g->refs) */
    int request_symbols;  /* symbols in that fetch's request */
    bool final_queued;    /* last page handed to the writer */
    int pending_pages;    /* handed to the writer, not yet committed */
    int db_ops;           /* outcome calls in flight */
    enum outcome outcome; /* written by runs_finish() only */
    bool retryable;       /* of the failure being recorded */
    int64_t bars;
    int pages;
    int64_t started_ms;
    uint64_t renew_seq; /* the renewal request this run was last part of */
    char error[700];
};

/*
 * One fetch (one query, followed page by page) serving 1..N runs that share
 * timeframe, feed and adjustment, over one span: each of its symbols' runs
 * are adjacent and cover the span exactly (coalesce.h). Lives while any run
 * points to it.
 */
struct group {
    struct group *prev, *next;
    dispatch_t *d;
    alpaca_fetch_t *fetch; /* NULL once over or stopped */
    struct run **runs;     /* sorted by symbol */
    size_t n;
    size_t refs;
    bool held; /* paused for backpressure */
    unsigned pages;
    char last_symbol[64]; /* the last symbol seen, to check the server's order */
};

/*
 * A housekeeping call made every `interval` ms, one at a time (Redis's
 * run_with_period): periodic_due() says whether to send it now and marks it
 * busy; its answer calls periodic_done().
 */
struct periodic {
    bool busy;
    int64_t last_ms;
};

static inline bool periodic_due(struct periodic *p, int64_t now, int64_t interval_ms, bool force)
{
    if (p->busy || (!force && now - p->last_ms < interval_ms))
        return false;
    p->busy = true;
    p->last_ms = now;
    return true;
}

static inline void periodic_done(struct periodic *p)
{
    p->busy = false;
}

struct dispatch {
    uv_loop_t *loop;
    struct config *cfg;
    char *worker;
    bool until_idle;
    struct dispatch_hooks hooks;

    db_conn_t *db;  /* claims, leases, outcomes, LISTEN */
    db_conn_t *wdb; /* the writer's session */
    db_conn_t *ldb; /* leases and rate-limit tokens: never behind a slow scheduler,
                       stats query or claim on the main session */
    http_client_t *http;
    ratelimit_t *rl;
    alpaca_t *alpaca;
    store_t *store;
    uv_timer_t tick;
    uv_timer_t kick; /* zero-delay: reap and claim right after a slot frees or a wake-up */

    struct run *runs; /* doubly linked */
    size_t nruns;
    struct group *groups;

    /* The queue side (dispatch_queue.c). */
    bool ready_sent, schema_checked;
    bool claiming, want_claim, idle_checking, want_schedule;
    bool scheduled;        /* a scheduler call has completed: --until-idle may judge */
    bool last_claim_empty; /* the latest claim returned no rows */
    int last_claim_asked;
    int64_t last_claim_ms;
    struct periodic renew, rescue, schedule, stats, prune;
    bool prune_behind;  /* the last prune batch was full: the next one comes sooner */
    uint64_t renew_seq; /* numbers renewal requests */
    int64_t auth_pause_until, last_auth_log_ms;
    bool auth_pause_tls; /* the pause is for a refused certificate, not the credentials */

    /* Shutdown (dispatch.c). */
    bool stopping, releasing_done;
    int64_t stop_deadline_ms;
    int pending_closes;
    int exit_code;
    bool exited;

    /* Reporting (dispatch_report.c). */
    struct dispatch_metrics m;
    metrics_server_t *metrics;
    metrics_histogram_t upsert_hist, http_hist;
    uint64_t http_status[600]; /* responses by status code; [0] = no response */
    double page_ms;            /* a bars page's time in curl, moving average; 0 = none yet */
    uint64_t prev_bars, prev_requests;
    int64_t last_idle_progress_ms;
    int64_t prev_progress_ms;
    int64_t stats_sent_ms; /* when the queue-depth query went out: its latency is logged */
};

/* Every log line about a run names it. */
#define RUN_FIELDS(r)                                                                              \
    F_I64("job_id", (r)->j.id), F_STR("symbol", (r)->j.symbol),                                    \
        F_STR("timeframe", (r)->j.timeframe), F_I64("attempt", (r)->j.attempt)

/* dispatch.c */
/* Reaps and claims on the next loop iteration, outside whatever callback asked. */
void dispatch_kick(dispatch_t *d);
/* A slot may be free or work may be queued: claim soon. */
void dispatch_wake_claim(dispatch_t *d);
/* Closes everything now (a fatal condition, or the end of the shutdown). */
void dispatch_close_now(dispatch_t *d, int code);

/* dispatch_runs.c */
/* A claimed run joins d->runs (copied from j, logged as started); no fetch yet. */
struct run *runs_new(dispatch_t *d, const struct job_run *j);
/* Starts fetches for freshly claimed runs, coalesced into multi-symbol requests. */
void runs_start(dispatch_t *d, struct run **runs, size_t n);
/*
 * The only way a run's outcome changes (once, from O_NONE). why is the error
 * or reason (copied). O_SUCCEEDED and O_ABANDONED are logged here (why is the
 * event name for O_ABANDONED); O_FAILED records the attempt with jobs_fail
 * (retryable or not) and logs the answer; O_RELEASED only marks and counts:
 * the caller gives the runs back, one statement for many (runs_release).
 */
void runs_finish(struct run *r, enum outcome o, const char *why, bool retryable);
/* Gives runs back without spending their attempts, in one statement. */
void runs_release(dispatch_t *d, struct run **rs, size_t n, const char *why, bool at_shutdown);
/* Still waiting for data from its group's fetch. */
bool run_active(const struct run *r);
/* Frees finished runs; never from a run's own callback. */
void runs_reap(dispatch_t *d);
/* Slots for new runs (see the definition for what holds one). */
int64_t runs_free_slots(const dispatch_t *d);
/* The writer holds BACKFILLD_MAX_PENDING_ROWS bars or more: fetching pauses. */
bool runs_backlogged(const dispatch_t *d);
/* The writer's callbacks, for store_new. */
void runs_store_callbacks(dispatch_t *d, struct store_cbs *out);
/* Stops every fetch and takes every run out of the writer: no fetch or write
 * callback names a run after this. First step of a close, before the sessions go. */
void runs_detach_all(dispatch_t *d);
/* Frees every run and group (close, after the sessions are closed: their
 * failed requests' callbacks still name runs). */
void runs_free_all(dispatch_t *d);

/* dispatch_queue.c */
/* Claims up to min(free slots, claim batch) runs when woken or the poll interval passed,
 * unless a claim is in flight, the writer is backed up or claiming is paused. */
void queue_maybe_claim(dispatch_t *d);
/* Renews every held lease in one statement; runs missing from the answer are abandoned.
 * The caller took d->renew with periodic_due(); the answer releases it. */
void queue_renew(dispatch_t *d);
/* Rescues dead hosts' expired leases (d->rescue, as above). */
void queue_rescue(dispatch_t *d);
/* Calls schedule_due_jobs() (d->schedule, as above); new runs wake claiming. */
void queue_schedule(dispatch_t *d);

/* Deletes one batch of runs past BACKFILLD_RUN_RETENTION_DAYS (d->prune
 * taken with periodic_due; the answer releases it). */
void queue_prune(dispatch_t *d);
#define PRUNE_BATCH 1000
#define PRUNE_INTERVAL_MS 60000 /* between batches while there is nothing to prune */
#define PRUNE_BEHIND_MS 1000    /* between batches while behind */
/* --until-idle: asks the database whether anything is left, when nothing is here. */
void queue_maybe_idle_check(dispatch_t *d);
/* db_callbacks of the main session: on (re)connect, gives back what a lost claim
 * answer left and checks the schema once; a NOTIFY wakes claiming or scheduling. */
void queue_on_db_up(void *arg);
void queue_on_notify(void *arg, const char *channel);

/* dispatch_report.c */
/* The latency histograms: made with the dispatcher, freed with it. */
void report_init(dispatch_t *d);
void report_free(dispatch_t *d);
/* Sends the queue-depth query (d->stats taken with periodic_due); its answer
 * logs the progress line and updates the queue gauges and the sd_notify status. */
void report_progress(dispatch_t *d);
/* The HTTP client's observer: counts responses by status and times them. */
void report_on_http_done(void *arg, long status, double ms);
/* A write transaction committed in ms. */
void report_upsert_done(dispatch_t *d, double ms);
/* metrics_render_fn: the whole /metrics exposition, from one table of rows. */
void report_render_metrics(void *arg, dynbuf_t *out);
/* metrics_health_fn: ok once ready, with the database up and Alpaca accepting us. */
bool report_health(void *arg, char *why, size_t whylen);

#endif
