/*
 * http: see http.h. The pattern is curl's docs/examples/multi-uv.c with the
 * known gaps of that example closed (STYLE.md, curl pitfalls 1–5).
 */
#include "http.h"

#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    http_client_t *c;
};

struct http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct http_opts opts;
    char *ca_file;
    struct curl_slist *headers;
    http_req_t *reqs; /* doubly linked list of requests handed to curl */
    /*
     * Requests beyond max_connections wait here, in order, and reach curl
     * only when one of its requests ends. Inside curl they would wait for a
     * connection with their timeout already running: behind a server that
     * hangs, a whole queue timed out without ever being sent.
     */
    http_req_t *wait_head, *wait_tail;
    long active;
    /* Requests curl refused when they left the wait queue: their callbacks run
     * from this zero timer, never inside http_cancel or another request's
     * completion. */
    http_req_t *refused;
    uv_timer_t defer;
    bool closing;
    int open_handles;
    void (*observer)(void *arg, long status, double ms);
    void *observer_arg;
};

struct http_req {
    http_client_t *c;
    CURL *easy;
    http_done_cb cb;
    void *arg;
    dynbuf_t body;
    bool body_over_cap;
    char content_type[128];
    int64_t rl_reset, rl_remaining, rl_limit;
    char errbuf[CURL_ERROR_SIZE];
    bool waiting; /* in the client's wait queue, not yet handed to curl */
    bool https;   /* may share an HTTP/2 connection with others */
    http_req_t *prev, *next;
};

static void check_multi_info(http_client_t *c);

static void maybe_free_client(http_client_t *c)
{
    if (c->closing && c->open_handles == 0) {
        curl_slist_free_all(c->headers);
        free(c->ca_file);
        free(c);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    http_client_t *c;
    if (h->type == UV_POLL) {
        struct sock_ctx *s = container_of((uv_poll_t *)h, struct sock_ctx, poll);
        c = s->c;
        free(s);
    } else {
        c = h->data;
    }
    c->open_handles--;
    maybe_free_client(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *s = container_of(h, struct sock_ctx, poll);
    http_client_t *c = s->c;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR; /* POLLERR shows up as UV_EBADF: let curl fail it */
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_multi_info(c);
}

static void on_timer(uv_timer_t *t)
{
    http_client_t *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

/* CURLMOPT_SOCKETFUNCTION: only uv and curl_multi_assign calls in here. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_client_t *c = userp;
    struct sock_ctx *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_handle_closed);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        if (c->closing)
            return 0; /* curl_multi_cleanup may still call in: start nothing new */
        s = xcalloc(1, sizeof *s);
        s->fd = fd;
        s->c = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        c->open_handles++;
        curl_multi_assign(c->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 stops; otherwise one-shot (0 fires next iteration). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    http_client_t *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_req_t *r = userdata;
    size_t n = size * nmemb;
    if (dynbuf_append(&r->body, ptr, n) < 0) {
        r->body_over_cap = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

static bool header_is(const char *line, size_t len, const char *name, const char **value,
                      size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    *value = v;
    *vlen = (size_t)(end - v);
    return true;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    http_req_t *r = userdata;
    size_t n = size * nitems;
    const char *v;
    size_t vlen;
    char tmp[32];
    if (header_is(buf, n, "content-type", &v, &vlen)) {
        size_t k = vlen < sizeof r->content_type - 1 ? vlen : sizeof r->content_type - 1;
        memcpy(r->content_type, v, k);
        r->content_type[k] = '\0';
    } else if (header_is(buf, n, "x-ratelimit-reset", &v, &vlen) && vlen < sizeof tmp) {
        memcpy(tmp, v, vlen);
        tmp[vlen] = '\0';
        int64_t x;
        if (parse_i64(tmp, 0, INT64_MAX, &x))
            r->rl_reset = x;
    } else if (header_is(buf, n, "x-ratelimit-remaining", &v, &vlen) && vlen < sizeof tmp) {
        memcpy(tmp, v, vlen);
        tmp[vlen] = '\0';
        int64_t x;
        if (parse_i64(tmp, 0, INT64_MAX, &x))
            r->rl_remaining = x;
    } else if (header_is(buf, n, "x-ratelimit-limit", &v, &vlen) && vlen < sizeof tmp) {
        memcpy(tmp, v, vlen);
        tmp[vlen] = '\0';
        int64_t x;
        if (parse_i64(tmp, 0, INT64_MAX, &x))
            r->rl_limit = x;
    }
    return n;
}

static void unlink_req(http_req_t *r)
{
    http_client_t *c = r->c;
    if (r->waiting) {
        if (r->prev)
            r->prev->next = r->next;
        else
            c->wait_head = r->next;
        if (r->next)
            r->next->prev = r->prev;
        else
            c->wait_tail = r->prev;
        r->waiting = false;
        return;
    }
    DLIST_REMOVE(c->reqs, r);
    c->active--;
}

static void on_defer(uv_timer_t *t);

/* Streams one HTTP/2 connection carries at once (curl's default). */
#define HTTP2_STREAMS 100

static bool is_https(const char *url)
{
    return strncasecmp(url, "https:", 6) == 0;
}

/*
 * How many requests may be in curl at once: one per connection over plain
 * http (HTTP/1.1), many over https, where connections are multiplexed.
 */
static long room(const http_client_t *c, bool https)
{
    return c->opts.max_connections * (https ? HTTP2_STREAMS : 1);
}

long http_capacity(const http_client_t *c, const char *url)
{
    return room(c, is_https(url));
}

static long room_for(const http_client_t *c, const http_req_t *r)
{
    return room(c, r->https);
}

/* Hands r to curl, or queues it while curl has as many as it can serve. */
static void dispatch_req(http_req_t *r)
{
    http_client_t *c = r->c;
    if (c->active >= room_for(c, r)) {
        r->waiting = true;
        r->next = NULL;
        r->prev = c->wait_tail;
        if (c->wait_tail)
            c->wait_tail->next = r;
        else
            c->wait_head = r;
        c->wait_tail = r;
        return;
    }
    if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
        r->next = c->refused;
        c->refused = r;
        uv_timer_start(&c->defer, on_defer, 0, 0);
        return;
    }
    DLIST_PUSH(c->reqs, r);
    c->active++;
}

/* Moves waiting requests to curl while there is room. Never from a curl callback. */
static void promote_waiting(http_client_t *c)
{
    while (c->wait_head && c->active < room_for(c, c->wait_head) && !c->closing) {
        http_req_t *r = c->wait_head;
        unlink_req(r);
        dispatch_req(r);
    }
}

static void free_req(http_req_t *r)
{
    curl_easy_cleanup(r->easy);
    dynbuf_free(&r->body);
    free(r);
}

static void check_multi_info(http_client_t *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        http_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode code = m->data.result;
        curl_multi_remove_handle(c->multi, m->easy_handle);
        unlink_req(r);
        struct http_result res = {0};
        res.curl_code = (int)code;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
        double secs = 0;
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &secs);
        res.total_ms = secs * 1000.0;
        res.tls_refused = code == CURLE_PEER_FAILED_VERIFICATION ||
                          code == CURLE_SSL_CACERT_BADFILE || code == CURLE_SSL_CERTPROBLEM;
        if (code != CURLE_OK) {
            if (r->body_over_cap)
                snprintf(r->errbuf, sizeof r->errbuf, "response body larger than %zu bytes",
                         r->body.cap);
            else if (!r->errbuf[0])
                strlcpy_trunc(r->errbuf, sizeof r->errbuf, curl_easy_strerror(code));
            res.error = r->errbuf;
        }
        res.body = r->body.data ? r->body.data : "";
        res.body_len = r->body.len;
        res.content_type = r->content_type;
        res.ratelimit_reset = r->rl_reset;
        res.ratelimit_remaining = r->rl_remaining;
        res.ratelimit_limit = r->rl_limit;
        if (c->observer)
            c->observer(c->observer_arg, code == CURLE_OK ? res.status : 0, res.total_ms);
        if (r->cb)
            r->cb(r->arg, &res);
        free_req(r);
    }
    promote_waiting(c);
}

/* A request curl never took: its callback runs with the reason, as any failure's. */
static void finish_failed(http_req_t *r, const char *why)
{
    struct http_result res = {0};
    res.curl_code = (int)CURLE_FAILED_INIT;
    strlcpy_trunc(r->errbuf, sizeof r->errbuf, why);
    res.error = r->errbuf;
    res.body = "";
    res.content_type = "";
    res.ratelimit_reset = -1;
    res.ratelimit_remaining = -1;
    res.ratelimit_limit = -1;
    if (r->cb)
        r->cb(r->arg, &res);
    free_req(r);
}

static void on_defer(uv_timer_t *t)
{
    http_client_t *c = t->data;
    while (c->refused) {
        http_req_t *r = c->refused;
        c->refused = r->next;
        finish_failed(r, "curl refused the request");
    }
}

http_client_t *http_client_new(uv_loop_t *loop, const struct http_opts *opts)
{
    http_client_t *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->opts = *opts;
    c->ca_file = opts->ca_file && *opts->ca_file ? xstrdup(opts->ca_file) : NULL;
    c->opts.ca_file = c->ca_file;
    c->opts.headers = NULL;
    for (const char *const *h = opts->headers; h && *h; h++)
        c->headers = curl_slist_append(c->headers, *h);
    c->multi = curl_multi_init();
    if (!c->multi)
        abort(); /* start-up only: nothing works without it */
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, opts->max_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, opts->max_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, opts->max_connections);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(loop, &c->defer);
    c->defer.data = c;
    c->open_handles = 2;
    return c;
}

http_req_t *http_get(http_client_t *c, const char *url, http_done_cb cb, void *arg)
{
    if (c->closing)
        return NULL;
    http_req_t *r = xcalloc(1, sizeof *r);
    r->c = c;
    r->cb = cb;
    r->arg = arg;
    r->rl_reset = -1;
    r->rl_remaining = -1;
    r->rl_limit = -1;
    dynbuf_init(&r->body, c->opts.body_cap);
    r->easy = curl_easy_init();
    if (!r->easy) {
        free(r);
        return NULL;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* every decoder curl has, decoded for us */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* Wait for a connection being set up rather than open another, in case
     * it multiplexes: over TLS, ALPN tells at the handshake. Over plain http
     * it is HTTP/1.1, and a connection only counts as confirmed once it has
     * answered, so behind a server that accepts and never answers every new
     * request would wait on a dead connection until its own timeout. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, is_https(url) ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "backfilld/0.1");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
    r->https = is_https(url);
    if (c->active < room_for(c, r)) {
        if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
            free_req(r);
            return NULL;
        }
        DLIST_PUSH(c->reqs, r);
        c->active++;
        return r;
    }
    dispatch_req(r); /* queued: never fails here */
    return r;
}

void http_cancel(http_req_t *r)
{
    if (!r)
        return;
    http_client_t *c = r->c;
    bool was_active = !r->waiting;
    if (was_active)
        curl_multi_remove_handle(c->multi, r->easy);
    unlink_req(r);
    free_req(r);
    if (was_active)
        promote_waiting(c);
}

void http_set_observer(http_client_t *c, void (*fn)(void *arg, long status, double ms), void *arg)
{
    c->observer = fn;
    c->observer_arg = arg;
}

void http_client_close(http_client_t *c)
{
    if (c->closing)
        return;
    c->closing = true; /* nothing waiting is handed to curl any more */
    while (c->wait_head)
        http_cancel(c->wait_head);
    while (c->refused) { /* cancelled too: no callback */
        http_req_t *r = c->refused;
        c->refused = r->next;
        free_req(r);
    }
    uv_timer_stop(&c->defer);
    uv_close((uv_handle_t *)&c->defer, on_handle_closed);
    while (c->reqs)
        http_cancel(c->reqs);
    /* May call socket_cb with CURL_POLL_REMOVE: those polls close normally. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}
