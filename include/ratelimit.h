/*
 * ratelimit: a token bucket that paces Alpaca requests on the loop.
 *
 * The bucket refills continuously at rate/60 tokens per second and holds at
 * most one second's worth (at least one token), so requests go out evenly
 * rather than in bursts that the server's own bucket would answer with 429.
 * Waiters are served in FIFO order from a single timer. A 429 pauses the
 * whole bucket (ratelimit_pause), since the budget belongs to the account.
 */
#ifndef BACKFILLD_RATELIMIT_H
#define BACKFILLD_RATELIMIT_H

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
    uint64_t waited;   /* grants that had to wait */
    uint64_t wait_ms;  /* total time spent waiting */
    uint64_t pauses;
    size_t queued;
};
void ratelimit_stats(const ratelimit_t *rl, struct ratelimit_stats *out);

void ratelimit_close(ratelimit_t *rl);

#endif
