/*
 * coalesce: which claimed runs share one multi-symbol request, and how many
 * symbols one request carries.
 *
 * Runs can share a request when their timeframe, feed and adjustment match.
 * A symbol's runs with adjacent ranges (one chunk ending where the next
 * begins) are merged into one span of up to COALESCE_PAGES_PER_REQUEST pages, and symbols whose
 * spans are equal share a request over that span: pages come sorted by symbol, then time, so each
 * bar still goes to exactly one run. Alpaca's limit= counts bars across all the symbols of a
 * request and a request costs one call per page, so what a request wastes is the unfilled end of
 * its last page: requests are planned to be many pages long (up to COALESCE_PAGES_PER_REQUEST,
 * estimated from session hours), never cut to one page each. Pure: no loop, no I/O, unit-tested.
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

/*
 * One request: `count` runs, order[first] … order[first + count - 1], sorted
 * by symbol then range start, over [start_us, end_us) (the union of their
 * ranges; each of its symbols' runs cover it exactly), for nsymbols symbols.
 */
struct coalesce_request {
    size_t first, count;
    int64_t start_us, end_us;
    size_t nsymbols;
};

/*
 * The most pages a planned request is estimated to take. The partial last
 * page is the only waste, so a longer request comes closer to the floor of
 * ceil(bars / limit) requests; a shorter one lets more requests run side by
 * side. 50 keeps the waste under 2% of a long request.
 */
#define COALESCE_PAGES_PER_REQUEST 50

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
 * The estimated bars of one symbol over k's range (session hours by feed, as
 * above, without the 10% margin); at least 1.
 */
double coalesce_estimate_bars(const struct coalesce_key *k);

/*
 * Plans the requests for n runs. order (n entries, caller's) receives the
 * runs' indexes, request by request; out (n entries at most, caller's)
 * receives the requests as spans of order. A request carries at most
 * max_symbols symbols and about COALESCE_PAGES_PER_REQUEST pages of
 * page_limit bars; a key's symbols are spread evenly over the fewest such
 * requests. A symbol is never twice in one request. With max_symbols <= 1
 * every run is a request of its own, in the given order. Returns the number
 * of requests.
 */
size_t coalesce_plan(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                     int64_t max_symbols, size_t *order, struct coalesce_request *out);

/*
 * As coalesce_plan, and at least min_requests requests when the runs allow
 * it (a symbol's span is never split, and no request is cut below about a
 * page): the extra requests split the longest ones by symbol, each costing
 * at most one partly filled page. For when the budget could keep more
 * requests in flight than the plan would make, so that requests are not
 * what is scarce (see dispatch_runs.c).
 */
size_t coalesce_plan_wide(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                          int64_t max_symbols, size_t min_requests, size_t *order,
                          struct coalesce_request *out);

#endif
