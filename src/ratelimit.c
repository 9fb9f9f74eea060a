/*
 * ratelimit: see ratelimit.h.
 */
#include "ratelimit.h"

#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

struct ratelimit {
    uv_loop_t *loop;
    uv_timer_t timer;
    double per_sec;
    double tokens;
    double capacity;
    int64_t last_ms;
    int64_t paused_until;
    rl_waiter_t *head, *tail;
    struct ratelimit_stats st;
    /* shared mode */
    db_conn_t *db; /* NULL in local mode */
    char *name;
    double default_rate;  /* creates the row if it is missing */
    bool taking;          /* a take_rate_tokens call is in flight */
    int64_t next_take_ms; /* not before: the database said when the next token comes */
    int64_t valid_until;  /* the local tokens lapse then (1 s, or the window's end) */
    int64_t next_seq;     /* the number of the next local token */
    /* The freshest X-RateLimit-* answer not yet sent with a take. */
    bool obs_pending;
    int64_t obs_limit, obs_remaining, obs_reset, obs_seq;
};

static void take(ratelimit_t *rl);

static void refill(ratelimit_t *rl, int64_t now)
{
    if (rl->db) {
        /* Tokens come from the database; unused ones lapse so others can have them,
         * and before the server's window they were counted in ends. */
        if (rl->tokens > 0 && now >= rl->valid_until)
            rl->tokens = 0;
        rl->last_ms = now;
        return;
    }
    /* last_ms may lie in the future (a pause): nothing accrues until then. */
    if (now > rl->last_ms) {
        rl->tokens += (double)(now - rl->last_ms) * rl->per_sec / 1000.0;
        if (rl->tokens > rl->capacity)
            rl->tokens = rl->capacity;
        rl->last_ms = now;
    }
}

static void schedule(ratelimit_t *rl);

static void on_timer(uv_timer_t *t)
{
    ratelimit_t *rl = t->data;
    int64_t now = (int64_t)uv_now(rl->loop);
    refill(rl, now);
    /* Grant in order while tokens last; callbacks may queue new waiters. */
    while (rl->head && now >= rl->paused_until && rl->tokens >= 1.0) {
        rl_waiter_t *w = rl->head;
        rl->head = w->next;
        if (!rl->head)
            rl->tail = NULL;
        w->next = NULL;
        w->queued = false;
        rl->tokens -= 1.0;
        w->seq = rl->db ? rl->next_seq++ : 0;
        rl->st.granted++;
        if (now > w->since_ms) {
            rl->st.waited++;
            rl->st.wait_ms += (uint64_t)(now - w->since_ms);
        }
        w->cb(w);
    }
    if (rl->db && rl->head && rl->tokens < 1.0 && !rl->taking && now >= rl->next_take_ms &&
        now >= rl->paused_until)
        take(rl);
    schedule(rl);
}

static void schedule(ratelimit_t *rl)
{
    if (!rl->head) {
        uv_timer_stop(&rl->timer);
        return;
    }
    int64_t now = (int64_t)uv_now(rl->loop);
    refill(rl, now);
    int64_t delay = 0;
    if (rl->db) {
        if (rl->tokens < 1.0) {
            if (rl->taking) {
                uv_timer_stop(&rl->timer); /* the answer reschedules */
                return;
            }
            delay = rl->next_take_ms > now ? rl->next_take_ms - now : 0;
        }
    } else if (rl->tokens < 1.0) {
        delay = (int64_t)((1.0 - rl->tokens) * 1000.0 / rl->per_sec) + 1;
    }
    if (rl->paused_until > now && rl->paused_until - now > delay)
        delay = rl->paused_until - now;
    uv_timer_start(&rl->timer, on_timer, (uint64_t)delay, 0);
}

static void set_rate(ratelimit_t *rl, double per_minute)
{
    rl->per_sec = per_minute / 60.0;
    rl->capacity = rl->per_sec < 1.0 ? 1.0 : rl->per_sec;
    if (rl->tokens > rl->capacity)
        rl->tokens = rl->capacity;
}

ratelimit_t *ratelimit_new(uv_loop_t *loop, double per_minute)
{
    ratelimit_t *rl = xcalloc(1, sizeof *rl);
    rl->loop = loop;
    uv_timer_init(loop, &rl->timer);
    rl->timer.data = rl;
    set_rate(rl, per_minute);
    rl->tokens = 1.0; /* start gently: the server's bucket may be partly spent already */
    rl->last_ms = (int64_t)uv_now(loop);
    return rl;
}

static void on_taken(void *arg, int status, const char *err, const char *sqlstate,
                     PGresult *const *res, int nres)
{
    ratelimit_t *rl = arg;
    int64_t now = (int64_t)uv_now(rl->loop);
    rl->taking = false;
    if (status != DB_OK) {
        if (status != DB_ECLOSED)
            LOG(LL_WARN, "rate-limit tokens unavailable", F_STR("error", err));
        rl->next_take_ms = now + 500;
    } else {
        int64_t g = 0, w = 0, seq = 0, valid = 1000;
        double pm = 0;
        (void)parse_i64(PQgetvalue(res[0], 0, 0), 0, INT64_MAX, &g);
        (void)parse_i64(PQgetvalue(res[0], 0, 1), 0, INT64_MAX, &w);
        if (parse_double(PQgetvalue(res[0], 0, 2), 1e-9, 1e12, &pm))
            rl->per_sec = pm / 60.0; /* an operator (or the server's Limit) may have changed it */
        (void)parse_i64(PQgetvalue(res[0], 0, 3), 0, INT64_MAX, &seq);
        (void)parse_i64(PQgetvalue(res[0], 0, 4), 0, 1000, &valid);
        /* Tokens are taken only when none is left, so these are all there are. */
        rl->tokens = (double)g;
        rl->next_seq = seq - g + 1;
        rl->valid_until = now + valid;
        rl->next_take_ms = now + w;
    }
    if (status != DB_ECLOSED)
        schedule(rl);
}

static void take(ratelimit_t *rl)
{
    size_t queued = 0;
    for (rl_waiter_t *w = rl->head; w; w = w->next)
        queued++;
    /* About a fifth of a second's budget per call: few round trips, little hoarding. */
    double chunk = rl->per_sec / 5.0;
    size_t want = chunk < 1 ? 1 : (size_t)chunk;
    if (want > queued)
        want = queued;
    if (want == 0)
        return;
    char ws[24], rs[40], ol[24], orem[24], ores[24], oseq[24];
    snprintf(ws, sizeof ws, "%zu", want);
    snprintf(rs, sizeof rs, "%.6f", rl->default_rate);
    const char *p[] = {rl->name, ws, rs, NULL, NULL, NULL, NULL};
    if (rl->obs_pending) {
        if (rl->obs_limit > 0) {
            snprintf(ol, sizeof ol, "%lld", (long long)rl->obs_limit);
            p[3] = ol;
        }
        snprintf(orem, sizeof orem, "%lld", (long long)rl->obs_remaining);
        snprintf(ores, sizeof ores, "%lld", (long long)rl->obs_reset);
        snprintf(oseq, sizeof oseq, "%lld", (long long)rl->obs_seq);
        p[4] = orem;
        p[5] = rl->obs_remaining >= 0 ? ores : NULL;
        p[6] = oseq;
        rl->obs_pending = false;
        rl->st.observed++;
    }
    db_req_t *r = db_req_new(on_taken, rl, false);
    db_req_sql(r,
               "SELECT granted, wait_ms, per_minute, seq, valid_ms FROM take_rate_tokens($1, "
               "$2::int, $3::float8, $4::float8, $5::int, $6::bigint, $7::bigint)",
               7, p);
    db_req_keep(r);
    rl->taking = true;
    rl->st.db_takes++;
    db_submit(rl->db, r);
}

ratelimit_t *ratelimit_new_shared(uv_loop_t *loop, double per_minute, db_conn_t *db,
                                  const char *name)
{
    ratelimit_t *rl = ratelimit_new(loop, per_minute);
    rl->db = db;
    rl->name = xstrdup(name);
    rl->default_rate = per_minute;
    rl->tokens = 0;
    return rl;
}

void ratelimit_set_rate(ratelimit_t *rl, double per_minute)
{
    if (rl->db) {
        char rs[40];
        snprintf(rs, sizeof rs, "%.6f", per_minute);
        const char *p[] = {rl->name, rs};
        db_req_t *r = db_req_new(NULL, NULL, false);
        db_req_sql(r, "SELECT set_rate_limit($1, $2::float8)", 2, p);
        db_submit(rl->db, r);
        rl->default_rate = per_minute;
        rl->per_sec = per_minute / 60.0;
        return;
    }
    refill(rl, (int64_t)uv_now(rl->loop));
    set_rate(rl, per_minute);
    schedule(rl);
}

double ratelimit_rate(const ratelimit_t *rl)
{
    return rl->per_sec * 60.0;
}

void ratelimit_acquire(ratelimit_t *rl, rl_waiter_t *w)
{
    w->next = NULL;
    w->queued = true;
    w->since_ms = (int64_t)uv_now(rl->loop);
    if (rl->tail)
        rl->tail->next = w;
    else
        rl->head = w;
    rl->tail = w;
    schedule(rl);
}

void ratelimit_cancel(ratelimit_t *rl, rl_waiter_t *w)
{
    if (!w->queued)
        return;
    rl_waiter_t **pp = &rl->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = w->next;
        if (rl->tail == w)
            rl->tail = prev;
    }
    w->next = NULL;
    w->queued = false;
    schedule(rl);
}

void ratelimit_pause(ratelimit_t *rl, int64_t ms)
{
    int64_t until = (int64_t)uv_now(rl->loop) + ms;
    if (until > rl->paused_until)
        rl->paused_until = until;
    rl->st.pauses++;
    /* Tokens accrued before the pause were evidently not available upstream. */
    rl->tokens = 0;
    rl->last_ms = until;
    if (rl->db) {
        /* Every host pauses: the budget is the account's. */
        char ms_s[24];
        snprintf(ms_s, sizeof ms_s, "%lld", (long long)ms);
        const char *p[] = {rl->name, ms_s};
        db_req_t *r = db_req_new(NULL, NULL, false);
        db_req_sql(r, "SELECT pause_rate_limit($1, $2::int)", 2, p);
        db_submit(rl->db, r);
        if (rl->next_take_ms < until)
            rl->next_take_ms = until;
    }
    schedule(rl);
}

void ratelimit_observe(ratelimit_t *rl, int64_t limit, int64_t remaining, int64_t reset,
                       int64_t seq)
{
    if (!rl->db || seq <= 0 || remaining > INT32_MAX)
        return;
    bool bare = remaining < 0 || reset <= 0;
    if (bare) {
        /* An answer without the headers: reported if it is the latest one. */
        if (rl->obs_pending && seq <= rl->obs_seq)
            return;
        limit = remaining = reset = -1;
    } else if (rl->obs_pending && rl->obs_remaining >= 0 &&
               (reset < rl->obs_reset || (reset == rl->obs_reset && seq <= rl->obs_seq))) {
        return; /* the freshest: the latest window, and in it the latest token */
    }
    rl->obs_pending = true;
    rl->obs_limit = limit;
    rl->obs_remaining = remaining;
    rl->obs_reset = reset;
    rl->obs_seq = seq;
}

void ratelimit_stats(const ratelimit_t *rl, struct ratelimit_stats *out)
{
    *out = rl->st;
    out->queued = 0;
    for (rl_waiter_t *w = rl->head; w; w = w->next)
        out->queued++;
}

static void on_closed(uv_handle_t *h)
{
    ratelimit_t *rl = h->data;
    free(rl->name);
    free(rl);
}

void ratelimit_close(ratelimit_t *rl)
{
    if (!rl)
        return;
    uv_timer_stop(&rl->timer);
    uv_close((uv_handle_t *)&rl->timer, on_closed);
}
