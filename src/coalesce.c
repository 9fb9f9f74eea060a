/*
 * coalesce: grouping claimed runs into multi-symbol requests. See coalesce.h.
 */
#include "coalesce.h"

#include "timeframe.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i64(int64_t a, int64_t b)
{
    return (a > b) - (a < b);
}

/* Everything but the symbol. */
static int cmp_request_key(const struct coalesce_key *a, const struct coalesce_key *b)
{
    int c = strcmp(a->timeframe, b->timeframe);
    if (!c)
        c = strcmp(a->feed, b->feed);
    if (!c)
        c = strcmp(a->adjustment, b->adjustment);
    if (!c)
        c = cmp_i64(a->start_us, b->start_us);
    if (!c)
        c = cmp_i64(a->end_us, b->end_us);
    return c;
}

int coalesce_cmp(const struct coalesce_key *a, const struct coalesce_key *b)
{
    int c = cmp_request_key(a, b);
    return c ? c : strcmp(a->symbol, b->symbol);
}

size_t coalesce_symbols_per_request(const struct coalesce_key *k, int64_t page_limit,
                                    int64_t max_symbols)
{
    double secs = (double)(k->end_us - k->start_us) / 1e6;
    double tf = (double)tf_seconds(k->timeframe);
    double trading_days = secs / 86400.0 * 252.0 / 365.0;
    double est;
    if (tf <= 0 || max_symbols <= 1)
        return 1;
    if (tf < 86400) {
        double session_s = (strcmp(k->feed, "iex") == 0 ? 9.0 : 16.0) * 3600.0;
        est = trading_days * (session_s / tf > 1 ? session_s / tf : 1);
    } else if (tf == 86400) {
        est = trading_days;
    } else {
        est = secs / tf; /* weeks and months: one bar each, trading or not */
    }
    if (est < 1)
        est = 1;
    double n = 0.9 * (double)page_limit / est;
    if (n < 1)
        n = 1;
    if (n > (double)max_symbols)
        n = (double)max_symbols;
    return (size_t)n;
}

/* A key with its index: qsort has no context argument, so each element carries its own. */
struct keyed {
    const struct coalesce_key *k;
    size_t i;
};

static int cmp_keyed(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    int c = coalesce_cmp(x->k, y->k);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

size_t coalesce_plan(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                     int64_t max_symbols, size_t *order, struct coalesce_request *out)
{
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (max_symbols <= 1) {
        for (size_t i = 0; i < n; i++)
            out[i] = (struct coalesce_request){.first = i, .count = 1};
        return n;
    }
    struct keyed *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp)
        abort(); /* as xmalloc: out of memory is fatal */
    for (size_t i = 0; i < n; i++)
        tmp[i] = (struct keyed){.k = &keys[i], .i = i};
    qsort(tmp, n, sizeof *tmp, cmp_keyed);
    for (size_t i = 0; i < n; i++)
        order[i] = tmp[i].i;
    free(tmp);
    size_t nout = 0, i = 0;
    while (i < n) {
        size_t m = 1; /* runs sharing this request key */
        while (i + m < n && cmp_request_key(&keys[order[i]], &keys[order[i + m]]) == 0)
            m++;
        /* Fewest requests, then spread evenly: 50 symbols at most 26 a request
         * go as 25 + 25, not 26 + 24, leaving each page the same headroom. */
        size_t k = coalesce_symbols_per_request(&keys[order[i]], page_limit, max_symbols);
        size_t nreq = (m + k - 1) / k;
        for (size_t g = 0; g < nreq; g++) {
            size_t lo = m * g / nreq, hi = m * (g + 1) / nreq;
            out[nout++] = (struct coalesce_request){.first = i + lo, .count = hi - lo};
        }
        i += m;
    }
    return nout;
}
