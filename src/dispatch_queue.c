/*
 * dispatch_queue: the dispatcher's side of the queue. See dispatch_int.h.
 *
 * Claims (when woken by NOTIFY, by a freed slot or by the poll interval),
 * lease renewals (every third of the lease), the rescue of dead hosts' runs,
 * the scheduler call, the --until-idle check, and what a reconnect must do.
 * Everything goes through jobs.h, on the main session, one call of each kind
 * at a time.
 */
#include "dispatch_int.h"

#include "migrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- claiming -------------------------------------------------------------------- */

/* Claimed rows that cannot be used fail for good at once, with the reason in
 * the row, rather than sit until their lease expires. */
static void fail_unusable(dispatch_t *d, const struct jobs_unusable *b)
{
    LOG(LL_ERROR, "claimed run unusable", F_I64("job_id", b->id), F_STR("symbol", b->symbol),
        F_I64("attempt", b->attempt), F_STR("error", b->error));
    if (b->id <= 0 || b->attempt <= 0)
        return;
    char why[300];
    snprintf(why, sizeof why, "claimed run unusable: %s", b->error);
    struct jobs_failure f = {.id = b->id, .attempt = b->attempt, .error = why, .retryable = false};
    jobs_fail(d->db, d->worker, &f, NULL, NULL);
    d->m.runs_failed++;
}

static void on_claimed(void *arg, const struct jobs_status *st, const struct jobs_claimed *c)
{
    dispatch_t *d = arg;
    d->claiming = false;
    if (st->status != DB_OK) {
        if (st->status != DB_ECLOSED)
            LOG(LL_ERROR, "claim failed", F_STR("error", st->err), F_STR("sqlstate", st->sqlstate),
                F_STR("hint", strcmp(st->sqlstate, "42501") == 0
                                  ? "the daemon's role may not call the queue's functions: as the "
                                    "schema owner, run 'backfilld migrate --grant-role ROLE'"
                                  : ""));
        return;
    }
    size_t n = c->n + c->nbad;
    d->last_claim_empty = n == 0;
    for (size_t i = 0; i < c->nbad; i++)
        fail_unusable(d, &c->bad[i]);
    if (d->stopping) {
        /* Claimed after the stop began: straight back, no attempt spent. */
        for (size_t i = 0; i < c->n; i++) {
            int64_t id = c->runs[i].id;
            int att = c->runs[i].attempt;
            jobs_release(d->db, d->worker, &id, &att, 1, NULL, NULL);
        }
    } else {
        struct run **fresh = xcalloc(c->n + 1, sizeof *fresh);
        for (size_t i = 0; i < c->n; i++)
            fresh[i] = runs_new(d, &c->runs[i]);
        runs_start(d, fresh, c->n);
        free(fresh);
    }
    if (n > 0)
        LOG(LL_DEBUG, "claimed", F_I64("runs", (int64_t)n), F_I64("in_flight", d->nruns));
    if ((int)n == d->last_claim_asked)
        dispatch_wake_claim(d); /* a full batch: there may be more */
    else
        dispatch_kick(d); /* an empty claim may mean --until-idle is done */
}

void queue_maybe_claim(dispatch_t *d)
{
    int64_t now = mono_ms();
    if (!d->want_claim && now - d->last_claim_ms < d->cfg->poll_interval_ms)
        return;
    if (d->claiming || d->stopping || !d->ready_sent || !db_conn_is_up(d->db))
        return;
    if (now < d->auth_pause_until || runs_backlogged(d))
        return;
    int64_t free_slots = runs_free_slots(d);
    if (free_slots <= 0)
        return;
    /* Claim in full claim batches while work is in flight: runs are coalesced
     * per claim, and a trickle of 1-run claims would make 1-symbol requests.
     * But never leave free slots idle for longer than one poll interval. */
    int64_t want =
        d->cfg->claim_batch < d->cfg->concurrency ? d->cfg->claim_batch : d->cfg->concurrency;
    if (d->nruns > 0 && free_slots < want && d->cfg->batch_symbols > 1 &&
        now - d->last_claim_ms < d->cfg->poll_interval_ms)
        return;
    int n = (int)(free_slots < d->cfg->claim_batch ? free_slots : d->cfg->claim_batch);
    d->want_claim = false;
    d->claiming = true;
    d->last_claim_ms = now;
    d->last_claim_asked = n;
    LOG(LL_DEBUG, "claim sent", F_I64("runs_asked", n),
        F_I64("queued_behind", (int64_t)db_conn_pending(d->db)));
    jobs_claim(d->db, d->worker, n, (int)d->cfg->lease_seconds, on_claimed, d);
}

/* --- leases, rescue, schedule ------------------------------------------------------ */

/* held is sorted: thousands of runs are in flight with the default claims. */
static bool holds(const int64_t *held, size_t n, int64_t id)
{
    return n > 0 && bsearch(&id, held, n, sizeof *held, cmp_int64) != NULL;
}

static void on_renewed(void *arg, const struct jobs_status *st, const int64_t *held, size_t nheld)
{
    dispatch_t *d = arg;
    periodic_done(&d->renew);
    if (st->status != DB_OK) {
        if (st->status != DB_ECLOSED)
            LOG(LL_WARN, "lease renewal failed", F_STR("error", st->err));
        return;
    }
    int64_t *sorted = xcalloc(nheld + 1, sizeof *sorted);
    if (nheld > 0)
        memcpy(sorted, held, nheld * sizeof *held);
    qsort(sorted, nheld, sizeof *sorted, cmp_int64);
    for (struct run *r = d->runs; r; r = r->next) {
        if (!run_active(r))
            continue; /* a final page still renewed but not yet answered is settled by the fence */
        /* Only runs that were in this renewal's request can be missing from its answer. */
        if (r->renew_seq != d->renew_seq || holds(sorted, nheld, r->j.id))
            continue;
        runs_finish(r, O_ABANDONED, "run abandoned: cancelled or lease lost", false);
    }
    free(sorted);
}

void queue_renew(dispatch_t *d)
{
    size_t n = 0;
    for (struct run *r = d->runs; r; r = r->next)
        n += r->outcome == O_NONE;
    if (n == 0) {
        periodic_done(&d->renew);
        return;
    }
    struct jobs_lease *leases = xcalloc(n, sizeof *leases);
    size_t i = 0;
    d->renew_seq++;
    for (struct run *r = d->runs; r; r = r->next) {
        if (r->outcome == O_NONE) {
            r->renew_seq = d->renew_seq;
            leases[i++] =
                (struct jobs_lease){.id = r->j.id, .attempt = r->j.attempt, .bars = r->bars};
        }
    }
    jobs_renew(d->ldb, d->worker, leases, n, (int)d->cfg->lease_seconds, on_renewed, d);
    free(leases);
}

static void on_rescued(void *arg, const struct jobs_status *st, int64_t n, const char *ids)
{
    dispatch_t *d = arg;
    periodic_done(&d->rescue);
    if (st->status != DB_OK) {
        if (st->status != DB_ECLOSED)
            LOG(LL_WARN, "rescue failed", F_STR("error", st->err));
        return;
    }
    if (n > 0) {
        d->m.rescued += (uint64_t)n;
        dispatch_wake_claim(d);
        LOG(LL_WARN, "expired leases rescued", F_I64("runs", n));
    }
}

void queue_rescue(dispatch_t *d)
{
    jobs_rescue(d->db, d->cfg->run_retry_base_ms, d->cfg->run_retry_max_ms, on_rescued, d);
}

static void on_scheduled(void *arg, const struct jobs_status *st, int64_t n, const char *ids)
{
    dispatch_t *d = arg;
    periodic_done(&d->schedule);
    /* Answered, even with an error: --until-idle may judge now (a scheduler
     * that always fails must not keep it running forever; the error is logged). */
    if (st->status != DB_ECONN && st->status != DB_ECLOSED)
        d->scheduled = true;
    if (st->status != DB_OK) {
        if (st->status != DB_ECLOSED)
            LOG(LL_WARN, "schedule failed", F_STR("error", st->err),
                F_STR("sqlstate", st->sqlstate));
        dispatch_kick(d);
        return;
    }
    if (n > 0) {
        dispatch_wake_claim(d);
        LOG(LL_INFO, "runs scheduled", F_I64("runs", n));
    }
    dispatch_kick(d);
}

void queue_schedule(dispatch_t *d)
{
    d->want_schedule = false;
    jobs_schedule(d->db, (int)d->cfg->max_attempts, d->cfg->settle_seconds,
                  d->cfg->sip_realtime ? 0 : SIP_DELAY_SECONDS, on_scheduled, d);
}

/* History is pruned a batch at a time, so a backlog of old runs (the first
 * prune after an upgrade, say) never holds the session for long: while a
 * batch comes back full the next follows a second later, else a minute. */
static void on_pruned(void *arg, const struct jobs_status *st, int64_t n, const char *ids)
{
    dispatch_t *d = arg;
    periodic_done(&d->prune);
    d->prune_behind = st->status == DB_OK && n >= PRUNE_BATCH;
    if (st->status != DB_OK) {
        if (st->status != DB_ECLOSED)
            LOG(LL_WARN, "pruning old runs failed", F_STR("error", st->err),
                F_STR("sqlstate", st->sqlstate));
        return;
    }
    if (n > 0) {
        d->m.pruned += (uint64_t)n;
        LOG(LL_INFO, "old runs pruned", F_I64("runs", n),
            F_I64("retention_days", d->cfg->run_retention_days));
    }
}

void queue_prune(dispatch_t *d)
{
    jobs_prune(d->db, d->cfg->run_retention_days, PRUNE_BATCH, on_pruned, d);
}

/* --- idleness ---------------------------------------------------------------------- */

static void on_idle_check(void *arg, const struct jobs_status *st, const struct jobs_queue_stats *s)
{
    dispatch_t *d = arg;
    d->idle_checking = false;
    if (st->status != DB_OK || d->stopping)
        return;
    if (s->ready + s->later + s->running == 0 && d->nruns == 0 && store_idle(d->store)) {
        LOG(LL_INFO, "no work left (--until-idle)", F_I64("succeeded", d->m.runs_succeeded),
            F_I64("failed", d->m.runs_failed), F_I64("bars", d->m.bars),
            F_I64("requests", d->m.requests));
        dispatch_stop(d, "idle");
    } else if (s->ready > 0) {
        dispatch_wake_claim(d);
    }
}

void queue_maybe_idle_check(dispatch_t *d)
{
    /* Not before the scheduler has run once: definitions may have work it
     * has not queued yet. */
    if (d->until_idle && !d->stopping && !d->idle_checking && !d->claiming && d->scheduled &&
        d->last_claim_empty && d->nruns == 0 && store_idle(d->store) && db_conn_is_up(d->db)) {
        d->idle_checking = true;
        jobs_queue_stats(d->db, on_idle_check, d);
    }
}

/* --- database session events ------------------------------------------------------ */

static void on_schema(void *arg, const struct jobs_status *st, int64_t v, const char *ids)
{
    dispatch_t *d = arg;
    if (st->status == DB_ECONN || st->status == DB_ECLOSED)
        return; /* the reconnect asks again */
    if (st->status != DB_OK) {
        LOG(LL_CRIT, "cannot read the schema version", F_STR("error", st->err));
        dispatch_close_now(d, 78);
        return;
    }
    if (v != migrations_latest()) {
        LOG(LL_CRIT, "database schema version mismatch: run 'backfilld migrate'",
            F_I64("schema_version", v), F_I64("expected", migrations_latest()));
        dispatch_close_now(d, 78);
        return;
    }
    d->schema_checked = true;
    if (!d->ready_sent) {
        ratelimit_set_rate(d->rl, d->cfg->rate_limit);
        d->ready_sent = true;
        d->want_schedule = true;
        dispatch_wake_claim(d);
        LOG(LL_INFO, "ready", F_STR("worker", d->worker), F_I64("schema_version", v),
            F_I64("concurrency", d->cfg->concurrency),
            F_DBL("rate_limit_per_min", d->cfg->rate_limit));
        if (d->hooks.ready)
            d->hooks.ready(d->hooks.arg);
    }
}

static void on_orphans_released(void *arg, const struct jobs_status *st, int64_t n, const char *ids)
{
    if (n > 0)
        LOG(LL_NOTICE, "runs of an unanswered claim released", F_I64("runs", n),
            F_STR("job_ids", ids));
    else if (st->status != DB_OK && st->status != DB_ECLOSED)
        LOG(LL_WARN, "could not look for runs of an unanswered claim", F_STR("error", st->err));
}

void queue_on_db_up(void *arg)
{
    dispatch_t *d = arg;
    if (d->schema_checked) {
        /* A reconnect: a claim in flight when the connection dropped may have
         * committed unseen. Give back whatever is locked in our name that we
         * do not know about, rather than let its lease expire and spend an attempt. */
        int64_t *ids = xcalloc(d->nruns + 1, sizeof *ids);
        size_t i = 0;
        for (struct run *r = d->runs; r; r = r->next)
            ids[i++] = r->j.id;
        jobs_release_unknown(d->db, d->worker, ids, i, on_orphans_released, d);
        free(ids);
    }
    dispatch_wake_claim(d);
    if (!d->schema_checked)
        jobs_schema_version(d->db, on_schema, d);
}

void queue_on_notify(void *arg, const char *channel)
{
    dispatch_t *d = arg;
    if (strcmp(channel, "backfilld_defs") == 0)
        d->want_schedule = true;
    dispatch_wake_claim(d);
}
