/*
 * coalesce: which claimed runs share one multi-symbol request, and how many
 * symbols one request carries.
 *
 * Runs can share a request when everything but the symbol matches: their
 * request key is (timeframe, feed, adjustment, range). Alpaca's limit= counts
 * bars across all the symbols of a request, so the number of symbols per
 * request comes from an estimate of the bars each symbol has over the range;
 * a key's runs are then cut into the fewest requests of at most that many
 * symbols, as evenly as possible. Pure: no loop, no I/O, unit-tested.
 */
#ifndef BACKFILLD_COALESCE_H
#define BACKFILLD_COALESCE_H

#include <stddef.h>
#include <stdint.h>

/* What decides whether two runs can share a request. Strings are borrowed. */
struct coalesce_key {
    const char *symbol;
    const char *timeframe; /* backfilld's code: m1 … mn1 */
    const char *feed;
    const char *adjustment;
    int64_t start_us, end_us;
};

/* One request: `count` runs, order[first] … order[first + count - 1]. */
struct coalesce_request {
    size_t first, count;
};

/* Orders keys by request key, then symbol (qsort-style). */
int coalesce_cmp(const struct coalesce_key *a, const struct coalesce_key *b);

/*
 * The most symbols per request so that one page carries close to page_limit
 * bars: bars per symbol over the range are estimated from session hours by
 * feed (16 h; 9 h for iex) and ~252 trading days a year, and the estimate is
 * kept 10% short of the limit, because a request that spills over by a few
 * bars costs a whole extra, nearly empty page. At least 1, at most
 * max_symbols.
 */
size_t coalesce_symbols_per_request(const struct coalesce_key *k, int64_t page_limit,
                                    int64_t max_symbols);

/*
 * Plans the requests for n runs. order (n entries, caller's) receives the
 * runs' indexes sorted by coalesce_cmp; out (n entries at most, caller's)
 * receives the requests as spans of order. With max_symbols <= 1 every run
 * is a request of its own, in the given order. Returns the number of requests.
 */
size_t coalesce_plan(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                     int64_t max_symbols, size_t *order, struct coalesce_request *out);

#endif
