/*
 * coalesce: grouping claimed runs into multi-symbol requests. See coalesce.h.
 */
#include "coalesce.h"

#include "timeframe.h"

#include <math.h>
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

double coalesce_estimate_bars(const struct coalesce_key *k)
{
    double secs = (double)(k->end_us - k->start_us) / 1e6;
    double tf = (double)tf_seconds(k->timeframe);
    double trading_days = secs / 86400.0 * 252.0 / 365.0;
    double est;
    if (tf <= 0)
        return 1;
    if (tf < 86400) {
        double session_s = (strcmp(k->feed, "iex") == 0 ? 9.0 : 16.0) * 3600.0;
        est = trading_days * (session_s / tf > 1 ? session_s / tf : 1);
    } else if (tf == 86400) {
        est = trading_days;
    } else {
        est = secs / tf; /* weeks and months: one bar each, trading or not */
    }
    return est < 1 ? 1 : est;
}

size_t coalesce_symbols_per_request(const struct coalesce_key *k, int64_t page_limit,
                                    int64_t max_symbols)
{
    if (tf_seconds(k->timeframe) <= 0 || max_symbols <= 1)
        return 1;
    double n = 0.9 * (double)page_limit / coalesce_estimate_bars(k);
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

/* Timeframe, feed, adjustment: what runs must share to be in one request. */
static int cmp_family(const struct coalesce_key *a, const struct coalesce_key *b)
{
    int c = strcmp(a->timeframe, b->timeframe);
    if (!c)
        c = strcmp(a->feed, b->feed);
    if (!c)
        c = strcmp(a->adjustment, b->adjustment);
    return c;
}

/* Family, symbol, range, index: a symbol's runs in time order. */
static int cmp_by_symbol(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    int c = cmp_family(x->k, y->k);
    if (!c)
        c = strcmp(x->k->symbol, y->k->symbol);
    if (!c)
        c = cmp_i64(x->k->start_us, y->k->start_us);
    if (!c)
        c = cmp_i64(x->k->end_us, y->k->end_us);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* One symbol's runs with adjacent ranges: sorted[lo] … sorted[hi - 1]. */
struct span {
    const struct coalesce_key *k; /* its first run's key */
    int64_t start_us, end_us;
    size_t lo, hi;
};

/* Family, span, symbol, position: the spans that can share a request come together. */
static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    int c = cmp_family(x->k, y->k);
    if (!c)
        c = cmp_i64(x->start_us, y->start_us);
    if (!c)
        c = cmp_i64(x->end_us, y->end_us);
    if (!c)
        c = strcmp(x->k->symbol, y->k->symbol);
    return c ? c : (x->lo > y->lo) - (x->lo < y->lo);
}

static bool same_request_key(const struct span *a, const struct span *b)
{
    return cmp_family(a->k, b->k) == 0 && a->start_us == b->start_us && a->end_us == b->end_us;
}

/* Appends one request made of spans sp[0..m) to order and out. */
static void emit(const struct keyed *sorted, struct span *const *sp, size_t m, size_t *order,
                 size_t *nord, struct coalesce_request *out, size_t *nout)
{
    struct coalesce_request *r = &out[(*nout)++];
    *r = (struct coalesce_request){
        .first = *nord, .start_us = sp[0]->start_us, .end_us = sp[0]->end_us, .nsymbols = m};
    for (size_t i = 0; i < m; i++)
        for (size_t j = sp[i]->lo; j < sp[i]->hi; j++)
            order[(*nord)++] = sorted[j].i;
    r->count = *nord - r->first;
}

/* The estimated pages of one symbol over k's kind of run and [start_us, end_us). */
static double span_pages(const struct coalesce_key *k, int64_t start_us, int64_t end_us,
                         int64_t page_limit)
{
    struct coalesce_key span_key = *k;
    span_key.start_us = start_us;
    span_key.end_us = end_us;
    return coalesce_estimate_bars(&span_key) / (double)(page_limit > 0 ? page_limit : 1);
}

/* Spans sp[i..e) share a request key; uniq[0..m) are their symbols once each. */
struct kgroup {
    size_t i, e, m, nreq;
    double pages;
};

size_t coalesce_plan_wide(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                          int64_t max_symbols, size_t min_requests, size_t *order,
                          struct coalesce_request *out)
{
    if (max_symbols <= 1) {
        for (size_t i = 0; i < n; i++) {
            order[i] = i;
            out[i] = (struct coalesce_request){.first = i,
                                               .count = 1,
                                               .start_us = keys[i].start_us,
                                               .end_us = keys[i].end_us,
                                               .nsymbols = 1};
        }
        return n;
    }
    size_t cap = n ? n : 1;
    struct keyed *sorted = malloc(cap * sizeof *sorted);
    struct span *spans = malloc(cap * sizeof *spans);
    struct span **uniq = malloc(cap * sizeof *uniq), **dups = malloc(cap * sizeof *dups);
    struct kgroup *groups = malloc(cap * sizeof *groups);
    if (!sorted || !spans || !uniq || !dups || !groups)
        abort(); /* as xmalloc: out of memory is fatal */
    for (size_t i = 0; i < n; i++)
        sorted[i] = (struct keyed){.k = &keys[i], .i = i};
    qsort(sorted, n, sizeof *sorted, cmp_by_symbol);

    /* A symbol's runs whose ranges meet end to start become one span, up to
     * about COALESCE_PAGES_PER_REQUEST pages: a deep history of one symbol is
     * several requests side by side, not one walk of hundreds of pages. */
    size_t nspans = 0;
    for (size_t i = 0; i < n; i++) {
        const struct coalesce_key *k = sorted[i].k;
        struct span *last = nspans ? &spans[nspans - 1] : NULL;
        if (last && cmp_family(last->k, k) == 0 && strcmp(last->k->symbol, k->symbol) == 0 &&
            k->start_us == last->end_us && k->end_us > k->start_us &&
            span_pages(k, last->start_us, k->end_us, page_limit) <= COALESCE_PAGES_PER_REQUEST) {
            last->end_us = k->end_us;
            last->hi = i + 1;
            continue;
        }
        spans[nspans++] = (struct span){
            .k = k, .start_us = k->start_us, .end_us = k->end_us, .lo = i, .hi = i + 1};
    }
    qsort(spans, nspans, sizeof *spans, cmp_span);

    /* Spans with one request key: the fewest requests of at most max_symbols
     * symbols and about COALESCE_PAGES_PER_REQUEST pages. A symbol twice over
     * the same span (two definitions' runs) is counted once here; its second
     * span goes alone below, so no bar belongs to two runs of a request. */
    size_t ngroups = 0, total = 0;
    for (size_t i = 0; i < nspans;) {
        size_t e = i + 1, m = 1;
        while (e < nspans && same_request_key(&spans[i], &spans[e])) {
            m += strcmp(spans[e - 1].k->symbol, spans[e].k->symbol) != 0;
            e++;
        }
        double pages =
            (double)m * span_pages(spans[i].k, spans[i].start_us, spans[i].end_us, page_limit);
        size_t nreq = (m + (size_t)max_symbols - 1) / (size_t)max_symbols;
        size_t by_pages = (size_t)ceil(pages / COALESCE_PAGES_PER_REQUEST);
        if (by_pages > nreq)
            nreq = by_pages;
        if (nreq > m)
            nreq = m;
        groups[ngroups++] = (struct kgroup){.i = i, .e = e, .m = m, .nreq = nreq, .pages = pages};
        total += nreq;
        i = e;
    }
    /* Wider when asked: one more request at a time for the group whose
     * requests are longest, while a group has symbols left to split and
     * its requests would still be a page or more each. */
    while (total < min_requests) {
        struct kgroup *best = NULL;
        for (size_t g = 0; g < ngroups; g++)
            if (groups[g].nreq < groups[g].m && groups[g].pages >= (double)(groups[g].nreq + 1) &&
                (!best ||
                 groups[g].pages * (double)best->nreq > best->pages * (double)groups[g].nreq))
                best = &groups[g];
        if (!best)
            break;
        best->nreq++;
        total++;
    }

    size_t nout = 0, nord = 0;
    for (size_t g = 0; g < ngroups; g++) {
        size_t m = 0, nd = 0;
        for (size_t j = groups[g].i; j < groups[g].e; j++) {
            if (m && strcmp(uniq[m - 1]->k->symbol, spans[j].k->symbol) == 0)
                dups[nd++] = &spans[j];
            else
                uniq[m++] = &spans[j];
        }
        size_t nreq = groups[g].nreq; /* the symbols spread evenly */
        for (size_t r = 0; r < nreq; r++) {
            size_t lo = m * r / nreq, hi = m * (r + 1) / nreq;
            emit(sorted, uniq + lo, hi - lo, order, &nord, out, &nout);
        }
        for (size_t j = 0; j < nd; j++)
            emit(sorted, dups + j, 1, order, &nord, out, &nout);
    }
    free(groups);
    free(dups);
    free(uniq);
    free(spans);
    free(sorted);
    return nout;
}

size_t coalesce_plan(const struct coalesce_key *keys, size_t n, int64_t page_limit,
                     int64_t max_symbols, size_t *order, struct coalesce_request *out)
{
    return coalesce_plan_wide(keys, n, page_limit, max_symbols, 1, order, out);
}
