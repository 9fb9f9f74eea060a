/*
 * ratelimit: paces Alpaca requests on the loop with a token bucket.
 *
 * The bucket refills continuously at rate/60 tokens per second and holds at
 * most one second's worth (at least one token), so requests go out evenly
 * rather than in bursts that the server's own bucket would answer with 429.
 * Waiters are served in FIFO order from a single timer.
 *
 * Two modes. Local (ratelimit_new): the bucket lives in this process. Shared
 * (ratelimit_new_shared): the bucket is a row of rate_limits in Postgres,
 * because the limit belongs to the Alpaca account and several hosts spend
 * it; tokens are taken a few at a time (about a fifth of a second's worth)
 * with take_rate_tokens, one statement, and tokens unused after a second are
 * dropped so an idle host does not sit on the budget. A 429 pauses the
 * bucket (ratelimit_pause) — in shared mode for every host.
 */
#ifndef BACKFILLD_RATELIMIT_H
#define BACKFILLD_RATELIMIT_H

#include "db.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct ratelimit ratelimit_t;

typedef struct rl_waiter {
    void (*cb)(struct rl_waiter *w); /* runs when a token is granted */
    struct rl_waiter *next;
    int64_t since_ms;
    bool queued;
} rl_waiter_t;

ratelimit_t *ratelimit_new(uv_loop_t *loop, double per_minute);
/* db is borrowed and must be closed before ratelimit_close; name is the rate_limits row. */
ratelimit_t *ratelimit_new_shared(uv_loop_t *loop, double per_minute, db_conn_t *db,
                                  const char *name);
/* Local: takes effect now. Shared: writes the rate to the row (set_rate_limit). */
void ratelimit_set_rate(ratelimit_t *rl, double per_minute);
double ratelimit_rate(const ratelimit_t *rl);

/* Queues w; w->cb runs from the loop when a token is taken for it (never inside this call). */
void ratelimit_acquire(ratelimit_t *rl, rl_waiter_t *w);
/* Removes a queued waiter; harmless if it is not queued. */
void ratelimit_cancel(ratelimit_t *rl, rl_waiter_t *w);
/* No token is granted before now + ms (a 429 or an X-RateLimit-Reset). */
void ratelimit_pause(ratelimit_t *rl, int64_t ms);

struct ratelimit_stats {
    uint64_t granted;
    uint64_t waited;  /* grants that had to wait */
    uint64_t wait_ms; /* total time spent waiting */
    uint64_t pauses;
    uint64_t db_takes; /* take_rate_tokens calls (shared mode) */
    size_t queued;
};
void ratelimit_stats(const ratelimit_t *rl, struct ratelimit_stats *out);

void ratelimit_close(ratelimit_t *rl);

#endif
