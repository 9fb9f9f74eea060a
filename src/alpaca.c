/*
 * alpaca: see alpaca.h. One fetch moves through
 *   WAIT_TOKEN → IN_FLIGHT → (page) → WAIT_TOKEN … → done
 * with WAIT_RETRY (a timer) after a retryable failure and HELD while the
 * caller's writer catches up.
 */
#include "alpaca.h"

#include "backoff.h"
#include "log.h"
#include "pager.h"
#include "timeframe.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A page stuck behind 429s this many times fails the attempt rather than spin for ever. */
#define MAX_429_PER_PAGE 100

enum fstate { F_WAIT_TOKEN, F_IN_FLIGHT, F_WAIT_RETRY, F_HELD, F_DONE };

struct alpaca {
    uv_loop_t *loop;
    http_client_t *http;
    ratelimit_t *rl;
    char *base_url;
    struct alpaca_opts opts;
    uint64_t rng;
};

struct alpaca_fetch {
    alpaca_t *a;
    struct alpaca_fetch_cbs cbs;
    void *arg;
    char **symbols;
    struct alpaca_query q;
    enum fstate st;
    pager_t pager;
    /* limit= of every page: a page token belongs to the exact query that
     * produced it, so a reload of BACKFILLD_PAGE_LIMIT applies to the next
     * fetch, never to the middle of a pagination. */
    int64_t page_limit;
    unsigned retries; /* retries spent on the current page */
    unsigned limited; /* 429s on the current page */
    rl_waiter_t waiter;
    http_req_t *req;
    uv_timer_t timer;
};

static void request_page(alpaca_fetch_t *f);

/* --- URL ----------------------------------------------------------------- */

static int append_encoded(dynbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = 0;
    for (; *s && rc == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            rc = dynbuf_append(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = dynbuf_append(b, e, 3);
        }
    }
    return rc;
}

char *alpaca_url(const char *base_url, const struct alpaca_query *q, int64_t limit,
                 const char *page_token)
{
    dynbuf_t b;
    dynbuf_init(&b, 64 * 1024);
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    char start[32], end[32];
    bars_format_time(q->start_us, start, sizeof start);
    /* Alpaca's end is inclusive and bars start on whole seconds: stop one second short. */
    bars_format_time(q->end_us - 1000000, end, sizeof end);
    int rc = dynbuf_append(&b, base_url, blen);
    rc |= dynbuf_append(&b, "/v2/stocks/bars?symbols=", 24);
    for (size_t i = 0; i < q->nsymbols; i++) {
        if (i > 0)
            rc |= dynbuf_append(&b, "%2C", 3);
        rc |= append_encoded(&b, q->symbols[i]);
    }
    const char *tf = tf_to_alpaca(q->timeframe);
    rc |= dynbuf_append(&b, "&timeframe=", 11);
    rc |= append_encoded(&b, tf ? tf : q->timeframe);
    rc |= dynbuf_append(&b, "&start=", 7);
    rc |= append_encoded(&b, start);
    rc |= dynbuf_append(&b, "&end=", 5);
    rc |= append_encoded(&b, end);
    rc |= dynbuf_printf(&b, "&limit=%lld", (long long)limit);
    rc |= dynbuf_append(&b, "&feed=", 6);
    rc |= append_encoded(&b, q->feed);
    rc |= dynbuf_append(&b, "&adjustment=", 12);
    rc |= append_encoded(&b, q->adjustment);
    rc |= dynbuf_append(&b, "&sort=asc", 9);
    if (page_token) {
        rc |= dynbuf_append(&b, "&page_token=", 12);
        rc |= append_encoded(&b, page_token);
    }
    if (rc != 0) {
        dynbuf_free(&b);
        return NULL;
    }
    return dynbuf_take(&b, NULL);
}

/* --- fetch life cycle ------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h)
{
    alpaca_fetch_t *f = h->data;
    pager_free(&f->pager);
    for (size_t i = 0; i < f->q.nsymbols; i++)
        free(f->symbols[i]);
    free(f->symbols);
    free((char *)f->q.timeframe);
    free((char *)f->q.feed);
    free((char *)f->q.adjustment);
    free(f);
}

/* Stops everything the fetch has going and frees it once its timer has closed. */
static void fetch_release(alpaca_fetch_t *f)
{
    ratelimit_cancel(f->a->rl, &f->waiter);
    if (f->req) {
        http_cancel(f->req);
        f->req = NULL;
    }
    f->st = F_DONE;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

static void fail_symbol(alpaca_fetch_t *f, int kind, const char *error, long status,
                        const char *symbol)
{
    f->st = F_DONE;
    struct alpaca_failure failure = {
        .kind = kind, .error = error, .http_status = status, .symbol = symbol};
    f->cbs.failed(f->arg, &failure);
    fetch_release(f);
}

static void fail(alpaca_fetch_t *f, int kind, const char *error, long status)
{
    fail_symbol(f, kind, error, status, NULL);
}

static void on_retry_timer(uv_timer_t *t)
{
    alpaca_fetch_t *f = t->data;
    request_page(f);
}

static void retry_later(alpaca_fetch_t *f, const char *cause, long status, int64_t delay)
{
    f->st = F_WAIT_RETRY;
    if (f->cbs.retrying)
        f->cbs.retrying(f->arg, cause, status, f->retries, delay);
    uv_timer_start(&f->timer, on_retry_timer, (uint64_t)delay, 0);
}

/* A failure that may go away: retry the page, or give up when retries are spent. */
static void page_failed(alpaca_fetch_t *f, const char *cause, long status)
{
    alpaca_t *a = f->a;
    if (f->retries >= (unsigned)a->opts.page_retries) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s (page %u, gave up after %u retries)", cause,
                 f->pager.pages + 1, f->retries);
        fail(f, ALPACA_ERETRY, msg, status);
        return;
    }
    int64_t delay = backoff_ms(f->retries, a->opts.retry_base_ms, a->opts.retry_max_ms, &a->rng);
    f->retries++;
    retry_later(f, cause, status, delay);
}

static bool symbol_requested(const alpaca_fetch_t *f, const char *sym)
{
    for (size_t i = 0; i < f->q.nsymbols; i++)
        if (strcmp(f->symbols[i], sym) == 0)
            return true;
    return false;
}

static void on_ok(alpaca_fetch_t *f, const struct http_result *res)
{
    char err[512];
    bars_page_t page;
    if (bars_parse_multi(res->body, res->body_len, &page, err, sizeof err) < 0) {
        char cause[600];
        snprintf(cause, sizeof cause, "malformed response: %s", err);
        page_failed(f, cause, res->status);
        return;
    }
    for (size_t i = 0; i < page.nseries; i++) {
        if (!symbol_requested(f, page.series[i].symbol)) {
            char cause[300];
            snprintf(cause, sizeof cause, "response has bars for %s, which was not requested",
                     page.series[i].symbol);
            bars_page_clear(&page);
            page_failed(f, cause, res->status);
            return;
        }
    }
    int pr = pager_advance(&f->pager, page.total, page.next_page_token, err, sizeof err);
    if (pr == PAGER_ERROR) {
        bars_page_clear(&page);
        fail(f, ALPACA_ERETRY, err, res->status);
        return;
    }
    f->retries = 0;
    f->limited = 0;
    bool last = pr == PAGER_DONE;
    if (last) {
        f->st = F_DONE;
        f->cbs.page(f->arg, &page, true);
        fetch_release(f);
        return;
    }
    f->st = F_HELD;
    bool go = f->cbs.page(f->arg, &page, false);
    if (go && f->st == F_HELD)
        request_page(f);
}

static void on_response(void *arg, const struct http_result *res)
{
    alpaca_fetch_t *f = arg;
    alpaca_t *a = f->a;
    f->req = NULL;
    char msg[600], cause[800];
    if (res->curl_code != 0 && res->tls_refused) {
        snprintf(cause, sizeof cause,
                 "TLS: the server's certificate was refused (check BACKFILLD_CA_FILE and "
                 "APCA_API_DATA_URL): %s",
                 res->error ? res->error : "?");
        fail(f, ALPACA_ETLS, cause, 0);
        return;
    }
    if (res->curl_code != 0) {
        snprintf(cause, sizeof cause, "request failed: %s", res->error ? res->error : "?");
        page_failed(f, cause, 0);
        return;
    }
    long s = res->status;
    /* The server's own count, shared with every host: 200s carry it (a 200
     * without it says the server no longer counts), 429s and gateway errors do not. */
    if (s == 200 || res->ratelimit_remaining >= 0)
        ratelimit_observe(a->rl, res->ratelimit_limit, res->ratelimit_remaining,
                          res->ratelimit_reset, f->waiter.seq);
    if (s == 200) {
        on_ok(f, res);
        return;
    }
    bool has_msg = bars_error_message(res->body, res->body_len, msg, sizeof msg);
    if (!has_msg)
        snprintf(msg, sizeof msg, "HTTP %ld with a %s body", s,
                 res->content_type[0] ? res->content_type : "non-JSON");
    if (s == 429) {
        /* The server's bucket is empty: pause everyone, retry without spending a retry. */
        int64_t pause = 0;
        if (res->ratelimit_reset > 0) {
            pause = res->ratelimit_reset * 1000 - wall_us() / 1000;
            if (pause > 60000)
                pause = 60000;
        }
        double per_sec = ratelimit_rate(a->rl) / 60.0;
        int64_t refill = (int64_t)(2000.0 / (per_sec > 0 ? per_sec : 1));
        if (pause < refill)
            pause = refill;
        if (pause < 250)
            pause = 250;
        pause = pause + (int64_t)(rng_unit(&a->rng) * (double)pause * 0.25);
        ratelimit_pause(a->rl, pause);
        if (++f->limited > MAX_429_PER_PAGE) {
            snprintf(cause, sizeof cause, "rate limited (HTTP 429) %u times on one page",
                     f->limited - 1);
            fail(f, ALPACA_ERETRY, cause, s);
            return;
        }
        f->st = F_WAIT_RETRY;
        if (f->cbs.retrying)
            f->cbs.retrying(f->arg, "rate limited", s, f->limited, pause);
        /* The pause itself delays the next token; wait for it directly. */
        request_page(f);
        return;
    }
    if (s >= 500) {
        snprintf(cause, sizeof cause, "HTTP %ld: %s", s, msg);
        page_failed(f, cause, s);
        return;
    }
    if (s == 401 || (s == 403 && !strstr(msg, "subscription does not permit"))) {
        snprintf(cause, sizeof cause,
                 "HTTP %ld: Alpaca rejected the credentials (check APCA_API_KEY_ID and "
                 "APCA_API_SECRET_KEY): %s",
                 s, msg);
        fail(f, ALPACA_EAUTH, cause, s);
        return;
    }
    if (s == 403) {
        snprintf(cause, sizeof cause,
                 "HTTP 403: %s — feed %s needs an end at least 15 minutes old on this plan; "
                 "set BACKFILLD_SIP_REALTIME=false (the default) so the daemon never asks, "
                 "or use feed iex",
                 msg, f->q.feed);
        fail(f, ALPACA_EPERM, cause, s);
        return;
    }
    snprintf(cause, sizeof cause, "HTTP %ld: %s", s, msg);
    /* One malformed symbol fails a whole multi-symbol request: say which. */
    static const char bad_symbol[] = "invalid symbol: ";
    const char *p = s == 400 ? strstr(msg, bad_symbol) : NULL;
    if (p) {
        char sym[64];
        strlcpy_trunc(sym, sizeof sym, p + strlen(bad_symbol));
        fail_symbol(f, ALPACA_EBADSYMBOL, cause, s, sym);
        return;
    }
    fail(f, ALPACA_EPERM, cause, s);
}

static void on_token(rl_waiter_t *w)
{
    alpaca_fetch_t *f = container_of(w, alpaca_fetch_t, waiter);
    alpaca_t *a = f->a;
    char *url = alpaca_url(a->base_url, &f->q, f->page_limit, pager_token(&f->pager));
    if (!url) {
        fail(f, ALPACA_EPERM, "request URL too long", 0);
        return;
    }
    f->st = F_IN_FLIGHT;
    f->req = http_get(a->http, url, on_response, f);
    free(url);
    if (!f->req) {
        page_failed(f, "could not start an HTTP request", 0);
        return;
    }
    if (f->cbs.requested)
        f->cbs.requested(f->arg);
}

static void request_page(alpaca_fetch_t *f)
{
    f->st = F_WAIT_TOKEN;
    f->waiter.cb = on_token;
    ratelimit_acquire(f->a->rl, &f->waiter);
}

/* --- public -------------------------------------------------------------- */

alpaca_t *alpaca_new(uv_loop_t *loop, http_client_t *http, ratelimit_t *rl,
                     const struct alpaca_opts *opts)
{
    alpaca_t *a = xcalloc(1, sizeof *a);
    a->loop = loop;
    a->http = http;
    a->rl = rl;
    a->base_url = xstrdup(opts->base_url);
    a->opts = *opts;
    a->opts.base_url = a->base_url;
    a->rng = (uint64_t)wall_us() ^ 0x5bd1e995u;
    return a;
}

void alpaca_set_opts(alpaca_t *a, const struct alpaca_opts *opts)
{
    a->opts.page_limit = opts->page_limit;
    a->opts.page_retries = opts->page_retries;
    a->opts.retry_base_ms = opts->retry_base_ms;
    a->opts.retry_max_ms = opts->retry_max_ms;
}

void alpaca_free(alpaca_t *a)
{
    if (!a)
        return;
    free(a->base_url);
    free(a);
}

alpaca_fetch_t *alpaca_fetch_start(alpaca_t *a, const struct alpaca_query *q,
                                   const struct alpaca_fetch_cbs *cbs, void *arg)
{
    alpaca_fetch_t *f = xcalloc(1, sizeof *f);
    f->a = a;
    f->cbs = *cbs;
    f->arg = arg;
    f->symbols = xcalloc(q->nsymbols, sizeof(char *));
    for (size_t i = 0; i < q->nsymbols; i++)
        f->symbols[i] = xstrdup(q->symbols[i]);
    f->q = *q;
    f->q.symbols = (const char *const *)f->symbols;
    f->q.timeframe = xstrdup(q->timeframe);
    f->q.feed = xstrdup(q->feed);
    f->q.adjustment = xstrdup(q->adjustment);
    f->page_limit = a->opts.page_limit;
    int64_t secs = tf_seconds(q->timeframe);
    uint64_t per_symbol =
        secs > 0 ? (uint64_t)((q->end_us - q->start_us) / (secs * 1000000)) + 2 : 1;
    pager_init(&f->pager, per_symbol * q->nsymbols);
    uv_timer_init(a->loop, &f->timer);
    f->timer.data = f;
    request_page(f);
    return f;
}

void alpaca_fetch_resume(alpaca_fetch_t *f)
{
    if (f->st == F_HELD)
        request_page(f);
}

void alpaca_fetch_cancel(alpaca_fetch_t *f)
{
    if (!f || f->st == F_DONE)
        return;
    fetch_release(f);
}
