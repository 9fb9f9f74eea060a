/*
 * metrics: Prometheus exposition helpers and a one-request-per-connection
 * HTTP/1.1 server on the loop. See metrics.h for the contract.
 *
 * Each connection is a small state machine: HEAD (reading the request head
 * into a fixed 8 KiB buffer), WRITING (one uv_write of the response), then
 * DRAINING (our side shut down, reading and discarding until the peer closes
 * or a short linger timer fires). Draining instead of closing right after
 * the write matters when the peer sent more than we read (a POST body, a
 * pipelined request): closing a socket with unread input sends a RST, and a
 * RST can make the peer's kernel throw away the response it has not read yet.
 *
 * Ownership: the server owns its listener and a list of connections; each
 * connection owns a uv_tcp_t and a uv_timer_t embedded in it and is freed
 * when the second of them has finished closing. The server is freed when it
 * has been closed, its listener has finished closing and its list is empty,
 * so no close callback ever touches freed memory.
 */
#include "metrics.h"

#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A scrape of a few thousand series is tens of KiB; this only stops a runaway renderer. */
#define RENDER_CAP (16u * 1024 * 1024)
/* How long to wait for the peer to close after our response and FIN went out. */
#define LINGER_MS 2000
#define WHY_MAX 256

/* A second renderer, appended after the server's own (metrics_set_extra). */
static metrics_render_fn extra_render;
static void *extra_arg;

enum conn_state { ST_HEAD, ST_WRITING, ST_DRAINING };

struct mconn {
    metrics_server_t *srv;
    struct mconn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    enum conn_state state;
    int handles_open; /* tcp and timer; the struct is freed when this reaches 0 */
    bool closing;
    bool eof;   /* the peer has shut down its sending side */
    size_t len; /* bytes of head[] filled while in ST_HEAD */
    dynbuf_t resp_head;
    dynbuf_t resp_body;
    /* One spare byte past the limit tells "exactly 8 KiB" from "more", one more for a NUL. */
    char head[METRICS_MAX_HEAD + 2];
};

struct metrics_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    metrics_render_fn render;
    metrics_health_fn health;
    void *arg;
    int port;
    uint64_t client_timeout_ms;
    bool closing;
    bool listener_closed;
    size_t nconns;
    struct mconn *conns;
    char listen_addr[80]; /* for log lines */
};

/* ---- exposition ---------------------------------------------------------------------------- */

/*
 * Formats a sample value. Integral values use %.0f so that a counter at
 * 123456789012 does not come out as 1.23456789012e+11; others get the
 * shortest of %.15g and %.17g that reads back as the same double.
 */
static void fmt_value(char *buf, size_t len, double v)
{
    if (isnan(v)) {
        strlcpy_trunc(buf, len, "NaN");
    } else if (isinf(v)) {
        strlcpy_trunc(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        /* Also turns -0 into 0, which reads better and means the same. */
        strlcpy_trunc(buf, len, "0");
    } else if (v == trunc(v) && fabs(v) < 1e17) {
        snprintf(buf, len, "%.0f", v);
    } else {
        snprintf(buf, len, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, len, "%.17g", v);
    }
}

/* Appends s with backslash and newline escaped, plus the double quote when in_label. */
static int append_escaped(dynbuf_t *out, const char *s, bool in_label)
{
    const char *run = s;
    int rc = 0;
    for (const char *p = s; rc == 0 && *p; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && in_label)
            esc = "\\\"";
        if (!esc)
            continue;
        rc = dynbuf_append(out, run, (size_t)(p - run));
        if (rc == 0)
            rc = dynbuf_append(out, esc, 2);
        run = p + 1;
    }
    if (rc == 0)
        rc = dynbuf_append(out, run, strlen(run));
    return rc;
}

static int write_header(dynbuf_t *out, const char *name, const char *type, const char *help)
{
    if (dynbuf_printf(out, "# HELP %s ", name) < 0 || append_escaped(out, help, false) < 0 ||
        dynbuf_printf(out, "\n# TYPE %s %s\n", name, type) < 0)
        return -1;
    return 0;
}

static int write_plain(dynbuf_t *out, const char *name, const char *type, const char *help,
                       double value)
{
    char v[64];
    fmt_value(v, sizeof v, value);
    if (write_header(out, name, type, help) < 0 || dynbuf_printf(out, "%s %s\n", name, v) < 0)
        return -1;
    return 0;
}

int metrics_counter(dynbuf_t *out, const char *name, const char *help, double value)
{
    return write_plain(out, name, "counter", help, value);
}

int metrics_gauge(dynbuf_t *out, const char *name, const char *help, double value)
{
    return write_plain(out, name, "gauge", help, value);
}

int metrics_labeled(dynbuf_t *out, const char *name, const char *type, const char *help,
                    const char *label, const char *const *values, const double *counts, size_t n)
{
    if (write_header(out, name, type, help) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char v[64];
        fmt_value(v, sizeof v, counts[i]);
        if (dynbuf_printf(out, "%s{%s=\"", name, label) < 0 ||
            append_escaped(out, values[i], true) < 0 || dynbuf_printf(out, "\"} %s\n", v) < 0)
            return -1;
    }
    return 0;
}

void metrics_hist_init(metrics_histogram_t *h, const double *bounds, size_t nbounds)
{
    /* Unsorted bounds would put observations in the wrong buckets forever: a programming error. */
    for (size_t i = 0; i < nbounds; i++)
        assert(isfinite(bounds[i]) && (i == 0 || bounds[i - 1] < bounds[i]));
    h->bounds = bounds;
    h->nbounds = nbounds;
    h->buckets = xcalloc(nbounds + 1, sizeof *h->buckets);
    h->sum = 0;
    h->count = 0;
}

void metrics_hist_observe(metrics_histogram_t *h, double v)
{
    /* A NaN would make _sum NaN for the rest of the process's life; dropping it loses less. */
    if (isnan(v))
        return;
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->buckets[i]++;
    h->sum += v;
    h->count++;
}

void metrics_hist_free(metrics_histogram_t *h)
{
    if (!h)
        return;
    free(h->buckets);
    h->buckets = NULL;
}

int metrics_histogram(dynbuf_t *out, const char *name, const char *help,
                      const metrics_histogram_t *h)
{
    if (write_header(out, name, "histogram", help) < 0)
        return -1;
    uint64_t cum = 0;
    char le[64], v[64];
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->buckets[i];
        fmt_value(le, sizeof le, h->bounds[i]);
        if (dynbuf_printf(out, "%s_bucket{le=\"%s\"} %llu\n", name, le, (unsigned long long)cum) <
            0)
            return -1;
    }
    /* +Inf is written from count rather than the running sum so that the two always agree. */
    fmt_value(v, sizeof v, h->sum);
    if (dynbuf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %s\n%s_count %llu\n", name,
                      (unsigned long long)h->count, name, v, name,
                      (unsigned long long)h->count) < 0)
        return -1;
    return 0;
}

/* ---- server: teardown ---------------------------------------------------------------------- */

static void server_maybe_free(metrics_server_t *s)
{
    if (s->closing && s->listener_closed && s->conns == NULL)
        free(s);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct mconn *c = h->data;
    if (--c->handles_open > 0)
        return;
    metrics_server_t *s = c->srv;
    DLIST_REMOVE(s->conns, c);
    s->nconns--;
    dynbuf_free(&c->resp_head);
    dynbuf_free(&c->resp_body);
    free(c);
    server_maybe_free(s);
}

/*
 * Starts closing a connection; idempotent. A pending write or shutdown then
 * completes with UV_ECANCELED before the close callbacks run, and the
 * response buffers stay alive until the struct is freed.
 */
static void conn_close(struct mconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_listener_closed(uv_handle_t *h)
{
    metrics_server_t *s = h->data;
    s->listener_closed = true;
    server_maybe_free(s);
}

void metrics_server_close(metrics_server_t *s)
{
    if (!s || s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (struct mconn *c = s->conns; c; c = c->next)
        conn_close(c);
}

/* ---- server: responses --------------------------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
    struct mconn *c = t->data;
    LOG(LL_DEBUG, "metrics client timed out", F_STR("listen", c->srv->listen_addr),
        F_STR("state", c->state == ST_HEAD      ? "head"
                       : c->state == ST_WRITING ? "writing"
                                                : "draining"));
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct mconn *c = req->data;
    if (c->closing)
        return;
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    /* Our FIN is out; give the peer a moment to read the answer and close its side. */
    c->state = ST_DRAINING;
    uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
}

static void on_write(uv_write_t *req, int status)
{
    struct mconn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        LOG(LL_DEBUG, "metrics write failed", F_STR("listen", c->srv->listen_addr),
            F_STR("err", uv_strerror(status)));
        conn_close(c);
        return;
    }
    /* The peer has stopped sending, so no RST can come from unread input: close now. */
    if (c->eof) {
        conn_close(c);
        return;
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

/* Queues the one response of this connection. body may be NULL (HEAD: length only). */
static void respond(struct mconn *c, int status, const char *reason, const char *ctype,
                    const char *extra_headers, const char *body, size_t body_len, bool send_body)
{
    c->state = ST_WRITING;
    dynbuf_init(&c->resp_head, 4096);
    if (dynbuf_printf(&c->resp_head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                      status, reason, ctype, body_len, extra_headers) < 0) {
        /* Cannot happen with the constant header set and a 4 KiB cap; drop the peer if it does. */
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    bufs[0] = uv_buf_init(c->resp_head.data, (unsigned)c->resp_head.len);
    if (send_body && body_len > 0) {
        bufs[1] = uv_buf_init((char *)body, (unsigned)body_len);
        nbufs = 2;
    }
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (rc < 0) {
        LOG(LL_DEBUG, "metrics write failed", F_STR("listen", c->srv->listen_addr),
            F_STR("err", uv_strerror(rc)));
        conn_close(c);
    }
}

static void respond_text(struct mconn *c, int status, const char *reason, const char *extra,
                         const char *text, bool send_body)
{
    /* Copied into the connection so that the caller's buffer may be a stack array. */
    dynbuf_init(&c->resp_body, 4096);
    if (dynbuf_append(&c->resp_body, text, strlen(text)) < 0) {
        conn_close(c);
        return;
    }
    respond(c, status, reason, "text/plain; charset=utf-8", extra, c->resp_body.data,
            c->resp_body.len, send_body);
}

static void serve_metrics(struct mconn *c, bool send_body)
{
    metrics_server_t *s = c->srv;
    dynbuf_init(&c->resp_body, RENDER_CAP);
    if (s->render)
        s->render(s->arg, &c->resp_body);
    if (extra_render)
        extra_render(extra_arg, &c->resp_body);
    respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", "", c->resp_body.data,
            c->resp_body.len, send_body);
}

static void serve_health(struct mconn *c, bool send_body)
{
    metrics_server_t *s = c->srv;
    char why[WHY_MAX] = "";
    if (!s->health || s->health(s->arg, why, sizeof why)) {
        respond_text(c, 200, "OK", "", "ok\n", send_body);
        return;
    }
    /* The reason must stay one line whatever the callback wrote. */
    why[sizeof why - 1] = '\0';
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (!why[0])
        strlcpy_trunc(why, sizeof why, "unhealthy");
    char line[WHY_MAX + 2];
    snprintf(line, sizeof line, "%s\n", why);
    respond_text(c, 503, "Service Unavailable", "", line, send_body);
}

/* ---- server: request parsing --------------------------------------------------------------- */

/* RFC 9110 tchar: the characters allowed in a method and in a header name. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/*
 * Returns the length of the head (through its blank line) within head[0..len),
 * or 0 if it is not complete yet. Bare LF line ends are accepted as RFC 9112
 * allows, which helps people typing requests into nc.
 */
static size_t find_head_end(const char *head, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (head[i] != '\n')
            continue;
        if (i + 1 < len && head[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && head[i + 1] == '\r' && head[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Cuts the line starting at *p (ending in LF or CRLF) and advances *p past it. */
static char *next_line(char **p)
{
    char *line = *p;
    char *nl = strchr(line, '\n');
    if (!nl)
        return NULL;
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl + 1;
    return line;
}

/*
 * Checks the request line and headers (head is NUL-terminated and holds
 * exactly the head) and returns false if anything is malformed. On success
 * *method and *target point into head; the query string is cut off.
 * The Host header is not required: this is a diagnostics port, and people
 * probe it by hand.
 */
static bool parse_head(char *head, size_t len, const char **method, const char **target)
{
    if (memchr(head, '\0', len) != NULL)
        return false;
    char *p = head;
    char *line = next_line(&p);
    if (!line)
        return false;
    char *m = line, *sp = line;
    while (is_tchar((unsigned char)*sp))
        sp++;
    if (sp == m || *sp != ' ')
        return false;
    *sp = '\0';
    char *t = sp + 1, *tend = t;
    while ((unsigned char)*tend > 0x20 && (unsigned char)*tend < 0x7f)
        tend++;
    if (tend == t || *tend != ' ')
        return false;
    *tend = '\0';
    const char *ver = tend + 1;
    if (strncmp(ver, "HTTP/1.", 7) != 0 || ver[7] < '0' || ver[7] > '9' || ver[8] != '\0')
        return false;
    /* Header lines end at the empty line; each must be a token, a colon and a value. */
    while ((line = next_line(&p)) != NULL && *line) {
        char *colon = line;
        while (is_tchar((unsigned char)*colon))
            colon++;
        if (colon == line || *colon != ':')
            return false;
        for (const char *v = colon + 1; *v; v++)
            if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
                return false;
    }
    char *q = strchr(t, '?');
    if (q)
        *q = '\0';
    *method = m;
    *target = t;
    return true;
}

metrics_req_t metrics_request_parse(char *buf, size_t scanned, size_t len, const char **method,
                                    const char **target)
{
    /* The blank line may have begun in the bytes scanned before: look back two. */
    size_t scan_from = scanned >= 2 ? scanned - 2 : 0;
    size_t end = find_head_end(buf + scan_from, len - scan_from);
    if (end > 0)
        end += scan_from;
    if (end > 0 && end <= METRICS_MAX_HEAD) {
        buf[end] = '\0';
        return parse_head(buf, end, method, target) ? METRICS_REQ_OK : METRICS_REQ_BAD;
    }
    return len > METRICS_MAX_HEAD ? METRICS_REQ_TOO_LARGE : METRICS_REQ_MORE;
}

/* Answers a well-formed request: method and target as metrics_request_parse gave them. */
static void handle_request(struct mconn *c, const char *method, const char *target)
{
    bool get = strcmp(method, "GET") == 0;
    bool head = strcmp(method, "HEAD") == 0;
    if (!get && !head)
        respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n",
                     true);
    else if (strcmp(target, "/metrics") == 0)
        serve_metrics(c, get);
    else if (strcmp(target, "/healthz") == 0)
        serve_health(c, get);
    else
        respond_text(c, 404, "Not Found", "", "not found\n", get);
}

/* ---- server: connections ------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mconn *c = h->data;
    /* While reading the head, fill the fixed buffer; afterwards reuse it as a discard area. */
    if (c->state == ST_HEAD)
        *buf = uv_buf_init(c->head + c->len, (unsigned)(METRICS_MAX_HEAD + 1 - c->len));
    else
        *buf = uv_buf_init(c->head, (unsigned)sizeof c->head);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct mconn *c = st->data;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            LOG(LL_DEBUG, "metrics read failed", F_STR("listen", c->srv->listen_addr),
                F_STR("err", uv_strerror((int)nread)));
        /*
         * A half-close while our answer is being written is a normal client
         * (nc -N, some probes): let the write finish. Anything else ends here.
         */
        if (nread == UV_EOF && c->state == ST_WRITING) {
            c->eof = true;
            uv_read_stop(st);
            return;
        }
        conn_close(c);
        return;
    }
    if (c->state != ST_HEAD)
        return; /* Discarded: one request per connection. */
    size_t scanned = c->len;
    c->len += (size_t)nread;
    const char *method, *target;
    switch (metrics_request_parse(c->head, scanned, c->len, &method, &target)) {
    case METRICS_REQ_OK:
        handle_request(c, method, target);
        break;
    case METRICS_REQ_BAD:
        respond_text(c, 400, "Bad Request", "", "bad request\n", true);
        break;
    case METRICS_REQ_TOO_LARGE:
        LOG(LL_DEBUG, "metrics request head too large", F_STR("listen", c->srv->listen_addr));
        respond_text(c, 400, "Bad Request", "", "request head too large\n", true);
        break;
    case METRICS_REQ_MORE:
        break;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    metrics_server_t *s = server->data;
    if (status < 0) {
        /* libuv keeps listening after EMFILE and friends; the next connection may well work. */
        LOG(LL_WARN, "metrics accept failed", F_STR("listen", s->listen_addr),
            F_STR("err", uv_strerror(status)));
        return;
    }
    struct mconn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->state = ST_HEAD;
    dynbuf_init(&c->resp_head, 0);
    dynbuf_init(&c->resp_body, 0);
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    DLIST_PUSH(s->conns, c);
    s->nconns++;

    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        LOG(LL_WARN, "metrics accept failed", F_STR("listen", s->listen_addr),
            F_STR("err", uv_strerror(rc)));
        conn_close(c);
        return;
    }
    /* Accept-and-close keeps a flood from piling up in the backlog or using up fds. */
    if (s->nconns > METRICS_MAX_CLIENTS) {
        LOG(LL_WARN, "metrics client limit reached", F_STR("listen", s->listen_addr),
            F_I64("max", METRICS_MAX_CLIENTS));
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, s->client_timeout_ms, 0);
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0)
        conn_close(c);
}

/* ---- server: start ------------------------------------------------------------------------- */

/* Parses "host:port" or "[v6]:port" with a numeric host into addr; false with a reason. */
static bool parse_listen(const char *listen, struct sockaddr_storage *addr, char *why,
                         size_t whylen)
{
    char host[64];
    const char *port_s;
    size_t hlen;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') {
            strlcpy_trunc(why, whylen, "expected [ipv6]:port");
            return false;
        }
        hlen = (size_t)(close - listen - 1);
        if (hlen == 0 || hlen >= sizeof host) {
            strlcpy_trunc(why, whylen, "bad IPv6 address");
            return false;
        }
        memcpy(host, listen + 1, hlen);
        host[hlen] = '\0';
        port_s = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen) {
            strlcpy_trunc(why, whylen, "expected host:port or [ipv6]:port");
            return false;
        }
        hlen = (size_t)(colon - listen);
        if (memchr(listen, ':', hlen) != NULL) {
            strlcpy_trunc(why, whylen, "an IPv6 address needs brackets: [ipv6]:port");
            return false;
        }
        if (hlen >= sizeof host) {
            strlcpy_trunc(why, whylen, "host too long");
            return false;
        }
        memcpy(host, listen, hlen);
        host[hlen] = '\0';
        port_s = colon + 1;
    }
    int64_t port;
    if (!parse_i64(port_s, 0, 65535, &port)) {
        strlcpy_trunc(why, whylen, "port must be a number from 0 to 65535");
        return false;
    }
    memset(addr, 0, sizeof *addr);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0)
        return true;
    /* Resolving a name would block the loop (getaddrinfo), and numbers are unambiguous. */
    strlcpy_trunc(why, whylen, "host must be a numeric IPv4 or IPv6 address");
    return false;
}

void metrics_set_extra(metrics_render_fn render, void *arg)
{
    extra_render = render;
    extra_arg = arg;
}

metrics_server_t *metrics_server_start(uv_loop_t *loop, const char *listen,
                                       metrics_render_fn render, metrics_health_fn health,
                                       void *arg, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    char why[128];
    if (!listen || !parse_listen(listen, &addr, why, sizeof why)) {
        snprintf(err, errlen, "metrics listen address \"%s\": %s", listen ? listen : "(null)", why);
        return NULL;
    }
    metrics_server_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->render = render;
    s->health = health;
    s->arg = arg;
    s->client_timeout_ms = METRICS_CLIENT_TIMEOUT_MS;
    strlcpy_trunc(s->listen_addr, sizeof s->listen_addr, listen);
    int rc = uv_tcp_init(loop, &s->listener);
    if (rc < 0) {
        snprintf(err, errlen, "metrics listen address \"%s\": %s", listen, uv_strerror(rc));
        free(s);
        return NULL;
    }
    s->listener.data = s;
    const char *step = "bind";
    /* libuv may report a bind error such as EADDRINUSE only at listen time, so check both. */
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) {
        step = "listen";
        rc = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
    }
    struct sockaddr_storage bound;
    int blen = (int)sizeof bound;
    if (rc == 0) {
        step = "getsockname";
        rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    }
    if (rc < 0) {
        snprintf(err, errlen, "metrics listen address \"%s\": %s: %s", listen, step,
                 uv_strerror(rc));
        /* The handle is registered with the loop: it may only be freed from its close callback. */
        metrics_server_close(s);
        return NULL;
    }
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return s;
}

int metrics_server_port(const metrics_server_t *s)
{
    return s ? s->port : -1;
}

void metrics_server_set_client_timeout(metrics_server_t *s, uint64_t ms)
{
    s->client_timeout_ms = ms;
}

size_t metrics_server_clients(const metrics_server_t *s)
{
    return s ? s->nconns : 0;
}
