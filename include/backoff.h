/*
 * backoff: capped exponential delays with jitter, shared by page retries
 * (in memory) and run retries (through job_runs.run_after).
 *
 * delay(n) = min(cap, base * 2^n) scaled by a uniform factor in
 * [1 - jitter, 1 + jitter], and never above cap. n counts from 0. Jitter
 * spreads retries from many runs that failed together (a gateway blip) so
 * they don't come back as one burst against the rate limit.
 */
#ifndef BACKFILLD_BACKOFF_H
#define BACKFILLD_BACKOFF_H

#include <stdint.h>

#define BACKOFF_JITTER 0.25

int64_t backoff_ms(unsigned n, int64_t base_ms, int64_t cap_ms, uint64_t *rng);

/* The bounds backoff_ms(n, …) stays within, for tests and docs. */
void backoff_bounds(unsigned n, int64_t base_ms, int64_t cap_ms, int64_t *lo, int64_t *hi);

#endif
