/*
 * alpaca: fetching one query's bars from Alpaca, page by page.
 *
 * A fetch is one query (symbols, timeframe, feed, adjustment, [start, end))
 * followed through next_page_token to the end (pager.h). Each request waits
 * for a rate-limit token; each response is classified:
 *   200 + well-formed body  → the page goes to the caller;
 *   200 + bad body, 5xx, timeouts, resets → the page is retried with capped,
 *                             jittered backoff, up to page_retries times;
 *   429                     → the whole bucket pauses, the page is retried and
 *                             no retry is spent;
 *   400, 422, other 4xx     → permanent: Alpaca's message is the error;
 *   401, 403 (credentials)  → ALPACA_EAUTH: not the run's fault;
 *   certificate refused     → ALPACA_ETLS: not the run's fault either;
 *   403 recent-SIP          → permanent, with advice naming the feed.
 * Only this module knows Alpaca's URLs and status codes.
 */
#ifndef BACKFILLD_ALPACA_H
#define BACKFILLD_ALPACA_H

#include "bars.h"
#include "http.h"
#include "ratelimit.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/*
 * How a fetch failed: ERETRY (retries spent; another attempt may work), EPERM
 * (permanent), EAUTH (credentials rejected: not the run's fault), EBADSYMBOL
 * (400 "invalid symbol: X": permanent for that symbol, the others of a
 * multi-symbol request are fine), ETLS (the server's certificate was refused:
 * a configuration problem, not the run's fault, as EAUTH).
 */
enum alpaca_fail {
    ALPACA_ERETRY = 1,
    ALPACA_EPERM = 2,
    ALPACA_EAUTH = 3,
    ALPACA_EBADSYMBOL = 4,
    ALPACA_ETLS = 5
};

/* A failure, borrowed for the callback's duration. */
struct alpaca_failure {
    int kind;           /* enum alpaca_fail */
    const char *error;  /* the cause, with Alpaca's message */
    long http_status;   /* 0 when no response came */
    const char *symbol; /* ALPACA_EBADSYMBOL: the symbol refused; else NULL */
};

typedef struct alpaca alpaca_t;
typedef struct alpaca_fetch alpaca_fetch_t;

struct alpaca_opts {
    const char *base_url;
    int64_t page_limit;
    int64_t page_retries;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
};

struct alpaca_query {
    const char *const *symbols; /* sorted or not; the server sorts */
    size_t nsymbols;
    const char *timeframe; /* backfilld code, e.g. "h1" */
    const char *feed;
    const char *adjustment;
    int64_t start_us; /* inclusive */
    int64_t end_us;   /* exclusive */
};

struct alpaca_fetch_cbs {
    /*
     * A well-formed page. The callee takes what *page owns (and must clear
     * it). last is true when the token was null: the fetch is then over and
     * freed after this returns. Otherwise return true to go on at once, or
     * false to hold the next request until alpaca_fetch_resume().
     */
    bool (*page)(void *arg, bars_page_t *page, bool last);
    /* The fetch failed for good; it is freed after this returns. */
    void (*failed)(void *arg, const struct alpaca_failure *failure);
    /* A page is being retried (for logs and metrics); may be NULL. */
    void (*retrying)(void *arg, const char *cause, long http_status, unsigned retry,
                     int64_t delay_ms);
    /* A request went out (metrics); may be NULL. */
    void (*requested)(void *arg);
};

/* opts strings are copied. */
alpaca_t *alpaca_new(uv_loop_t *loop, http_client_t *http, ratelimit_t *rl,
                     const struct alpaca_opts *opts);
/* Takes new limits (reload). base_url is not reloadable and is ignored here.
 * page_limit applies to fetches started afterwards: a fetch keeps the limit
 * its first page was asked with, since a page token belongs to that query. */
void alpaca_set_opts(alpaca_t *a, const struct alpaca_opts *opts);
void alpaca_free(alpaca_t *a);

/* Starts a fetch; the query is copied. Callbacks never run inside this call. */
alpaca_fetch_t *alpaca_fetch_start(alpaca_t *a, const struct alpaca_query *q,
                                   const struct alpaca_fetch_cbs *cbs, void *arg);
/* Lets a fetch held by a page callback's false go on. */
void alpaca_fetch_resume(alpaca_fetch_t *f);
/* Stops a fetch (in-flight request, waits and timers); no callback runs after. */
void alpaca_fetch_cancel(alpaca_fetch_t *f);

/* Builds the request URL for a query and page token (NULL on the first page). Caller frees. */
char *alpaca_url(const char *base_url, const struct alpaca_query *q, int64_t limit,
                 const char *page_token);

#endif
