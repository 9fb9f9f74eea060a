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
 *
 * In shared mode the server's own view is shared too (sql/005): each granted
 * token carries its number (rl_waiter_t.seq), the caller reports the
 * X-RateLimit-Limit/Remaining/Reset of the answer to that request
 * (ratelimit_observe), and the freshest report rides on the next
 * take_rate_tokens. The database then grants no more than the server's
 * window has left until its Reset (Remaining 0: every host waits until
 * then), at no more than the server's Limit per minute, and tokens lapse just
 * before the window they were counted in ends.
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
    int64_t seq; /* shared mode: the number of the token last granted to it; else 0 */
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
/*
 * What the server said in the answer to the request sent with token seq:
 * X-RateLimit-Limit (per minute), -Remaining and -Reset (epoch seconds), each
 * -1 when absent. The freshest is kept until the next take (shared mode;
 * ignored in local mode or for seq 0). An answer without Remaining and Reset
 * tells the database to forget what it learnt from earlier ones.
 */
void ratelimit_observe(ratelimit_t *rl, int64_t limit, int64_t remaining, int64_t reset,
                       int64_t seq);

struct ratelimit_stats {
    uint64_t granted;
    uint64_t waited;  /* grants that had to wait */
    uint64_t wait_ms; /* total time spent waiting */
    uint64_t pauses;
    uint64_t db_takes; /* take_rate_tokens calls (shared mode) */
    uint64_t observed; /* answers whose X-RateLimit-* headers went to the database */
    size_t queued;
};
void ratelimit_stats(const ratelimit_t *rl, struct ratelimit_stats *out);

void ratelimit_close(ratelimit_t *rl);

#endif
