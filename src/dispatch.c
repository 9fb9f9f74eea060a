/*
 * dispatch: the object, its housekeeping tick, wake-ups and shutdown. See
 * dispatch.h for what the dispatcher does and dispatch_int.h for how its
 * files divide the work.
 */
#include "dispatch_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- wake-ups and the tick ---------------------------------------------------------- */

static void finish_stop(dispatch_t *d);

/*
 * One tick runs the housekeeping, each call at its own period and one at a
 * time: renewals (every third of the lease, during the shutdown grace period
 * too), rescue, the scheduler (also when a definition changed), the progress
 * line; then claims and the --until-idle check.
 */
static void on_tick(uv_timer_t *t)
{
    dispatch_t *d = t->data;
    int64_t now = mono_ms();
    const struct config *c = d->cfg;
    runs_reap(d);
    /* The session is asked before each call: one of them may have found it gone. */
    if (d->ready_sent && db_conn_is_up(d->ldb) &&
        periodic_due(&d->renew, now, c->lease_seconds * 1000 / 3, false))
        queue_renew(d);
    if (d->stopping) {
        finish_stop(d);
        return;
    }
    if (!d->ready_sent)
        return;
    if (db_conn_is_up(d->db) && periodic_due(&d->rescue, now, c->rescue_interval_ms, false))
        queue_rescue(d);
    if (db_conn_is_up(d->db) &&
        periodic_due(&d->schedule, now, c->schedule_interval_ms, d->want_schedule))
        queue_schedule(d);
    if (c->run_retention_days > 0 && db_conn_is_up(d->db) &&
        periodic_due(&d->prune, now, d->prune_behind ? PRUNE_BEHIND_MS : PRUNE_INTERVAL_MS, false))
        queue_prune(d);
    queue_maybe_claim(d);
    if (db_conn_is_up(d->db) && periodic_due(&d->stats, now, c->progress_interval_ms, false))
        report_progress(d);
    queue_maybe_idle_check(d);
}

static void on_kick(uv_timer_t *t)
{
    dispatch_t *d = t->data;
    runs_reap(d);
    if (d->stopping)
        return;
    queue_maybe_claim(d);
    queue_maybe_idle_check(d);
}

void dispatch_kick(dispatch_t *d)
{
    if (!d->stopping && !uv_is_active((uv_handle_t *)&d->kick))
        uv_timer_start(&d->kick, on_kick, 0, 0);
}

void dispatch_wake_claim(dispatch_t *d)
{
    d->want_claim = true;
    dispatch_kick(d);
}

/* --- shutdown --------------------------------------------------------------------- */

/* Gives back every run still fetching, in one statement (see runs_release). */
static void release_all(dispatch_t *d)
{
    struct run **rs = xcalloc(d->nruns + 1, sizeof *rs);
    size_t n = 0;
    for (struct run *r = d->runs; r; r = r->next)
        if (run_active(r))
            rs[n++] = r;
    if (n == 0)
        d->releasing_done = true;
    else
        runs_release(d, rs, n, "shutdown", true);
    free(rs);
}

static void on_closed(void *arg)
{
    dispatch_t *d = arg;
    if (--d->pending_closes > 0)
        return;
    /* Everything that holds a uv handle is closing; tell main once they are done. */
    if (d->hooks.exited && !d->exited) {
        d->exited = true;
        d->hooks.exited(d->hooks.arg, d->exit_code);
    }
}

static void on_tick_closed(uv_handle_t *h)
{
    on_closed(h->data);
}

void dispatch_close_now(dispatch_t *d, int code)
{
    if (d->pending_closes > 0 || d->exited)
        return;
    d->exit_code = code;
    d->stopping = true;
    /* Runs still here now are abandoned (their leases expire or were released).
     * Close the sessions first: their pending callbacks still name runs. */
    d->pending_closes = 5;
    runs_detach_all(d);
    db_conn_close(d->db, on_closed, d);
    db_conn_close(d->wdb, on_closed, d);
    db_conn_close(d->ldb, on_closed, d);
    runs_free_all(d);
    uv_timer_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, on_tick_closed);
    uv_timer_stop(&d->kick);
    uv_close((uv_handle_t *)&d->kick, on_tick_closed);
    metrics_server_close(d->metrics);
    d->metrics = NULL;
    store_close(d->store);
    http_client_close(d->http);
    ratelimit_close(d->rl);
    alpaca_free(d->alpaca);
}

/* Called every tick while stopping: moves through the shutdown steps in order. */
static void finish_stop(dispatch_t *d)
{
    int64_t now = mono_ms();
    if (!d->releasing_done) {
        bool busy = false;
        for (struct run *r = d->runs; r; r = r->next)
            busy |= run_active(r);
        if (busy && now < d->stop_deadline_ms && db_conn_is_up(d->db))
            return; /* let in-flight runs finish */
        if (busy && db_conn_is_up(d->db)) {
            release_all(d);
            return;
        }
        d->releasing_done = !busy || !db_conn_is_up(d->db);
    }
    /* Write what was fetched; wait for outcome calls; give up 10 s past the deadline. */
    store_flush(d->store);
    bool pending = !store_idle(d->store) || db_conn_pending(d->db) > 0;
    for (struct run *r = d->runs; r && !pending; r = r->next)
        pending = r->db_ops > 0 || r->pending_pages > 0;
    if (pending && now < d->stop_deadline_ms + 10000 &&
        (db_conn_is_up(d->db) || db_conn_is_up(d->wdb)))
        return;
    LOG(LL_INFO, "stopped", F_I64("succeeded", d->m.runs_succeeded),
        F_I64("failed", d->m.runs_failed), F_I64("released", d->m.runs_released),
        F_I64("bars", d->m.bars), F_I64("requests", d->m.requests));
    dispatch_close_now(d, d->exit_code);
}

/* --- public ----------------------------------------------------------------------- */

dispatch_t *dispatch_new(uv_loop_t *loop, struct config *cfg, const char *worker_id,
                         bool until_idle, const struct dispatch_hooks *hooks)
{
    dispatch_t *d = xcalloc(1, sizeof *d);
    d->loop = loop;
    d->cfg = cfg;
    d->worker = xstrdup(worker_id);
    d->until_idle = until_idle;
    if (hooks)
        d->hooks = *hooks;

    struct db_callbacks cbs = {.up = queue_on_db_up, .notify = queue_on_notify, .arg = d};
    d->db = db_conn_new(loop, cfg->database_url, "main", &cbs);
    if (!cfg->poll_only) {
        db_conn_add_setup(d->db, "LISTEN backfilld_runs");
        db_conn_add_setup(d->db, "LISTEN backfilld_defs");
    }
    d->wdb = db_conn_new(loop, cfg->database_url, "writer", NULL);
    /* Renewals and rate-limit tokens are small and on a clock: a scheduler
     * call of seconds on the main session must not hold a lease past its
     * margin, nor every request behind it. */
    d->ldb = db_conn_new(loop, cfg->database_url, "lease", NULL);

    char key[512], secret[512];
    snprintf(key, sizeof key, "APCA-API-KEY-ID: %s", cfg->api_key);
    snprintf(secret, sizeof secret, "APCA-API-SECRET-KEY: %s", cfg->api_secret);
    const char *headers[] = {key, secret, "Accept: application/json", NULL};
    struct http_opts ho = {.max_connections = cfg->max_connections,
                           .connect_timeout_ms = cfg->connect_timeout_ms,
                           .timeout_ms = cfg->http_timeout_ms,
                           .ca_file = cfg->ca_file,
                           .body_cap = (size_t)64 << 20,
                           .headers = headers};
    d->http = http_client_new(loop, &ho);
    http_set_observer(d->http, report_on_http_done, d);
    report_init(d);
    memset(key, 0, sizeof key);
    memset(secret, 0, sizeof secret);
    /* The budget is the account's: shared through the database unless no name is set. */
    if (cfg->rate_limit_name && *cfg->rate_limit_name)
        d->rl = ratelimit_new_shared(loop, cfg->rate_limit, d->ldb, cfg->rate_limit_name);
    else
        d->rl = ratelimit_new(loop, cfg->rate_limit);
    struct alpaca_opts ao = {.base_url = cfg->data_url,
                             .page_limit = cfg->page_limit,
                             .page_retries = cfg->page_retries,
                             .retry_base_ms = cfg->retry_base_ms,
                             .retry_max_ms = cfg->retry_max_ms};
    d->alpaca = alpaca_new(loop, d->http, d->rl, &ao);
    struct store_cbs sc;
    runs_store_callbacks(d, &sc);
    d->store = store_new(loop, d->wdb, cfg->database_url, (int)cfg->writers, d->worker, &sc);
    uv_timer_init(loop, &d->tick);
    d->tick.data = d;
    uv_timer_init(loop, &d->kick);
    d->kick.data = d;
    return d;
}

int dispatch_start(dispatch_t *d)
{
    if (d->cfg->metrics_listen && *d->cfg->metrics_listen) {
        char err[300];
        d->metrics = metrics_server_start(d->loop, d->cfg->metrics_listen, report_render_metrics,
                                          report_health, d, err, sizeof err);
        if (!d->metrics) {
            LOG(LL_CRIT, "cannot serve metrics", F_STR("listen", d->cfg->metrics_listen),
                F_STR("error", err));
            return -1;
        }
        LOG(LL_INFO, "metrics listening", F_STR("listen", d->cfg->metrics_listen),
            F_I64("port", metrics_server_port(d->metrics)));
    }
    LOG(LL_INFO, "starting", F_STR("worker", d->worker), F_STR("data_url", d->cfg->data_url),
        F_BOOL("poll_only", d->cfg->poll_only), F_BOOL("until_idle", d->until_idle),
        F_STR("log_level", log_level_name(d->cfg->log_level)));
    db_conn_start(d->db);
    db_conn_start(d->wdb);
    db_conn_start(d->ldb);
    uv_timer_start(&d->tick, on_tick, TICK_MS, TICK_MS);
    return 0;
}

void dispatch_stop(dispatch_t *d, const char *why)
{
    if (d->stopping) {
        if (strcmp(why, "idle") != 0) {
            LOG(LL_WARN, "second signal: exiting at once; leases will expire",
                F_STR("signal", why));
            dispatch_close_now(d, 0);
        }
        return;
    }
    d->stopping = true;
    d->stop_deadline_ms = mono_ms() + d->cfg->shutdown_timeout_ms;
    if (strcmp(why, "idle") != 0)
        LOG(LL_NOTICE, "stopping", F_STR("signal", why), F_I64("in_flight", d->nruns),
            F_I64("deadline_ms", d->cfg->shutdown_timeout_ms));
    /* The first shutdown step now, not a tick later: --until-idle exits as
     * soon as its work is done (up to TICK_MS sooner). */
    if (uv_is_active((uv_handle_t *)&d->tick))
        uv_timer_start(&d->tick, on_tick, 0, TICK_MS);
}

void dispatch_abort(dispatch_t *d, int code)
{
    dispatch_close_now(d, code);
}

void dispatch_reconfigure(dispatch_t *d)
{
    ratelimit_set_rate(d->rl, d->cfg->rate_limit);
    struct alpaca_opts ao = {.base_url = d->cfg->data_url,
                             .page_limit = d->cfg->page_limit,
                             .page_retries = d->cfg->page_retries,
                             .retry_base_ms = d->cfg->retry_base_ms,
                             .retry_max_ms = d->cfg->retry_max_ms};
    alpaca_set_opts(d->alpaca, &ao);
    log_min_level = d->cfg->log_level;
    dispatch_wake_claim(d);
}

void dispatch_free(dispatch_t *d)
{
    if (!d)
        return;
    report_free(d);
    free(d->worker);
    free(d);
}
