/*
 * backoff: see backoff.h.
 */
#include "backoff.h"

#include "util.h"

static double nominal(unsigned n, int64_t base_ms, int64_t cap_ms)
{
    double d = (double)base_ms;
    for (unsigned i = 0; i < n && d < (double)cap_ms; i++)
        d *= 2;
    return d < (double)cap_ms ? d : (double)cap_ms;
}

int64_t backoff_ms(unsigned n, int64_t base_ms, int64_t cap_ms, uint64_t *rng)
{
    double d = nominal(n, base_ms, cap_ms);
    double f = 1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * rng_unit(rng);
    double v = d * f;
    if (v > (double)cap_ms)
        v = (double)cap_ms;
    return (int64_t)v;
}

void backoff_bounds(unsigned n, int64_t base_ms, int64_t cap_ms, int64_t *lo, int64_t *hi)
{
    double d = nominal(n, base_ms, cap_ms);
    *lo = (int64_t)(d * (1.0 - BACKOFF_JITTER));
    double h = d * (1.0 + BACKOFF_JITTER);
    *hi = h > (double)cap_ms ? cap_ms : (int64_t)h;
}
