/*
 * ratelimit: see ratelimit.h.
 */
#include "ratelimit.h"

#include "util.h"

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
};

static void refill(ratelimit_t *rl, int64_t now)
{
    if (now > rl->last_ms) {
        rl->tokens += (double)(now - rl->last_ms) * rl->per_sec / 1000.0;
        if (rl->tokens > rl->capacity)
            rl->tokens = rl->capacity;
    }
    rl->last_ms = now;
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
        rl->st.granted++;
        if (now > w->since_ms) {
            rl->st.waited++;
            rl->st.wait_ms += (uint64_t)(now - w->since_ms);
        }
        w->cb(w);
    }
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
    if (rl->tokens < 1.0)
        delay = (int64_t)((1.0 - rl->tokens) * 1000.0 / rl->per_sec) + 1;
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

void ratelimit_set_rate(ratelimit_t *rl, double per_minute)
{
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
    schedule(rl);
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
    free(h->data);
}

void ratelimit_close(ratelimit_t *rl)
{
    if (!rl)
        return;
    uv_timer_stop(&rl->timer);
    uv_close((uv_handle_t *)&rl->timer, on_closed);
}
