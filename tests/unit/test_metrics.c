/*
 * Unit tests for the metrics module: the exact exposition text of each
 * helper, and the HTTP server answering a real uv_tcp client on the same
 * loop (one thread, as in the daemon).
 *
 * Server tests get a fresh loop and a server on 127.0.0.1:0 from their setup.
 * The teardown closes the server and fails unless the loop then closes
 * cleanly (uv_loop_close() == 0), so a leaked handle fails the test, and ASan
 * reports leaked memory. Waiting is done by running the loop until a
 * condition holds, with a guard timer so that a hung test fails instead of
 * hanging.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * The module is compiled into this test directly: bfcore (the library unit
 * tests link against) holds only loop-free modules and does not contain
 * metrics.c. Including the source also lets the parser's static helpers be
 * tested on their own.
 */
#include "../../src/metrics.c"

#include <signal.h>
#include <strings.h>

/* ---- exposition ---------------------------------------------------------------------------- */

static void test_counter(void **state)
{
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    assert_int_equal(
        metrics_counter(&b, "bfd_rows_upserted_total", "Rows written.", 9007199254740992.0), 0);
    assert_string_equal(b.data, "# HELP bfd_rows_upserted_total Rows written.\n"
                                "# TYPE bfd_rows_upserted_total counter\n"
                                "bfd_rows_upserted_total 9007199254740992\n");
    dynbuf_free(&b);
}

static void test_gauge(void **state)
{
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    /* Help text escapes backslash and newline (but not quotes). */
    assert_int_equal(metrics_gauge(&b, "bfd_jobs_active", "Runs \"in flight\"\\now\nnext", 0.25),
                     0);
    assert_int_equal(metrics_gauge(&b, "bfd_up", "Up.", 1), 0);
    assert_string_equal(b.data, "# HELP bfd_jobs_active Runs \"in flight\"\\\\now\\nnext\n"
                                "# TYPE bfd_jobs_active gauge\n"
                                "bfd_jobs_active 0.25\n"
                                "# HELP bfd_up Up.\n"
                                "# TYPE bfd_up gauge\n"
                                "bfd_up 1\n");
    dynbuf_free(&b);
}

static void test_values(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {42, "42"},
        {-7, "-7"},
        {123456789012.0, "123456789012"},
        {0.1, "0.1"},
        {1.0 / 3.0, "0.33333333333333331"},
        {1e20, "1e+20"},
        {1.5e-9, "1.5e-09"},
    };
    char buf[64];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        fmt_value(buf, sizeof buf, cases[i].v);
        assert_string_equal(buf, cases[i].want);
    }
    fmt_value(buf, sizeof buf, NAN);
    assert_string_equal(buf, "NaN");
    fmt_value(buf, sizeof buf, INFINITY);
    assert_string_equal(buf, "+Inf");
    fmt_value(buf, sizeof buf, -INFINITY);
    assert_string_equal(buf, "-Inf");
}

static void test_labeled(void **state)
{
    static const char *const values[] = {"2xx", "a\"b\\c\nd"};
    static const double counts[] = {10, 3};
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    assert_int_equal(metrics_labeled(&b, "bfd_http_requests_total", "counter", "HTTP requests.",
                                     "code_class", values, counts, 2),
                     0);
    assert_string_equal(b.data, "# HELP bfd_http_requests_total HTTP requests.\n"
                                "# TYPE bfd_http_requests_total counter\n"
                                "bfd_http_requests_total{code_class=\"2xx\"} 10\n"
                                "bfd_http_requests_total{code_class=\"a\\\"b\\\\c\\nd\"} 3\n");
    dynbuf_free(&b);
}

static void test_histogram(void **state)
{
    static const double bounds[] = {0.5, 1, 10};
    metrics_histogram_t h;
    metrics_hist_init(&h, bounds, ARRAY_SIZE(bounds));
    /* 0.5 sits on a bound: le is inclusive. 50 is above them all. NaN is dropped. */
    const double obs[] = {0.25, 0.5, 0.75, 5, 50, NAN};
    for (size_t i = 0; i < ARRAY_SIZE(obs); i++)
        metrics_hist_observe(&h, obs[i]);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.buckets[0], 2);
    assert_int_equal(h.buckets[3], 1);

    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    assert_int_equal(metrics_histogram(&b, "bfd_db_batch_duration_seconds", "Batch time.", &h), 0);
    assert_string_equal(b.data, "# HELP bfd_db_batch_duration_seconds Batch time.\n"
                                "# TYPE bfd_db_batch_duration_seconds histogram\n"
                                "bfd_db_batch_duration_seconds_bucket{le=\"0.5\"} 2\n"
                                "bfd_db_batch_duration_seconds_bucket{le=\"1\"} 3\n"
                                "bfd_db_batch_duration_seconds_bucket{le=\"10\"} 4\n"
                                "bfd_db_batch_duration_seconds_bucket{le=\"+Inf\"} 5\n"
                                "bfd_db_batch_duration_seconds_sum 56.5\n"
                                "bfd_db_batch_duration_seconds_count 5\n");
    dynbuf_free(&b);
    metrics_hist_free(&h);
    assert_null(h.buckets);
    metrics_hist_free(&h);
    metrics_hist_free(NULL);
}

static void test_cap(void **state)
{
    dynbuf_t b;
    dynbuf_init(&b, 40);
    assert_int_equal(metrics_counter(&b, "bfd_a_very_long_name_total", "Long help text.", 1), -1);
    dynbuf_free(&b);
}

/* ---- request parsing ----------------------------------------------------------------------- */

static void test_find_head_end(void **state)
{
    const char *a = "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
    assert_int_equal(find_head_end(a, strlen(a)), strlen(a) - 4);
    const char *b = "GET / HTTP/1.1\nHost: x\n\n";
    assert_int_equal(find_head_end(b, strlen(b)), strlen(b));
    const char *c = "GET / HTTP/1.1\r\nHost: x\r\n\r";
    assert_int_equal(find_head_end(c, strlen(c)), 0);
}

static void test_parse_head(void **state)
{
    static const struct {
        const char *head;
        bool ok;
        const char *method, *target;
    } cases[] = {
        {"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", true, "GET", "/metrics"},
        {"GET /metrics?x=1 HTTP/1.0\r\n\r\n", true, "GET", "/metrics"},
        {"DELETE /healthz HTTP/1.1\nX-A:\tv\n\n", true, "DELETE", "/healthz"},
        {"GET /metrics\r\n\r\n", false, NULL, NULL},
        {"GET  /metrics HTTP/1.1\r\n\r\n", false, NULL, NULL},
        {"GET /metrics HTTP/2.0\r\n\r\n", false, NULL, NULL},
        {"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n", false, NULL, NULL},
        {"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n", false, NULL, NULL},
        {"G(T /metrics HTTP/1.1\r\n\r\n", false, NULL, NULL},
        {"\r\n\r\n", false, NULL, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char buf[256];
        strlcpy_trunc(buf, sizeof buf, cases[i].head);
        const char *m = NULL, *t = NULL;
        bool ok = parse_head(buf, strlen(buf), &m, &t);
        assert_int_equal(ok, cases[i].ok);
        if (ok) {
            assert_string_equal(m, cases[i].method);
            assert_string_equal(t, cases[i].target);
        }
    }
    /* A NUL byte inside the head is malformed. */
    char nul[] = "GET /metrics HTTP/1.1\r\nX: a\0b\r\n\r\n";
    const char *m, *t;
    assert_false(parse_head(nul, sizeof nul - 1, &m, &t));
}

/* ---- bad addresses ------------------------------------------------------------------------- */

static void test_bad_listen(void **state)
{
    static const char *const bad[] = {
        "nonsense",  "127.0.0.1:99999", "127.0.0.1:",   "localhost:9464", "::1:9464",
        "[::1]9464", ":9464",           "127.0.0.1:-1", "1.2.3.4.5:80"};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char err[256] = "";
        metrics_server_t *s =
            metrics_server_start(&loop, bad[i], NULL, NULL, NULL, err, sizeof err);
        assert_null(s);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        if (!strstr(err, quoted))
            fail_msg("error for %s does not name it: %s", bad[i], err);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bind_in_use(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char err[256] = "";
    metrics_server_t *a =
        metrics_server_start(&loop, "127.0.0.1:0", NULL, NULL, NULL, err, sizeof err);
    assert_non_null(a);
    assert_true(metrics_server_port(a) > 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_server_port(a));
    metrics_server_t *b = metrics_server_start(&loop, addr, NULL, NULL, NULL, err, sizeof err);
    assert_null(b);
    assert_non_null(strstr(err, addr));
    assert_non_null(strstr(err, "address already in use"));
    metrics_server_close(a);
    metrics_server_close(NULL);
    /* The failed server's handle and the closed one are released by the loop. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- a client on the same loop ------------------------------------------------------------- */

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *const *parts; /* NULL-terminated; written one after another */
    size_t next_part;
    bool reset_after_write; /* abort with RST once the request is out */
    bool no_read;           /* do not start reading when connected (the test will) */
    dynbuf_t resp;
    int err; /* first libuv error seen, 0 if none */
    bool eof;
    bool done; /* the handle has closed */
};

/*
 * The fixture owns the client (not the test's stack), so that after a failed
 * assertion the teardown can still close its handle and free its buffer.
 */
struct fixture {
    uv_loop_t loop;
    metrics_server_t *srv;
    bool healthy;
    const char *why;
    int renders;
    bool big; /* render a multi-megabyte family as well */
    struct client c;
};

static const char *const big_values[] = {
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"};
static const double big_counts[] = {1, 2, 3, 4};

static void render(void *arg, dynbuf_t *out)
{
    static const double bounds[] = {0.1, 1};
    static const char *const classes[] = {"2xx", "5xx"};
    static const double counts[] = {7, 1};
    struct fixture *f = arg;
    metrics_histogram_t h;
    metrics_hist_init(&h, bounds, ARRAY_SIZE(bounds));
    metrics_hist_observe(&h, 0.05);
    metrics_hist_observe(&h, 2);
    int rc = metrics_counter(out, "bfd_rows_upserted_total", "Rows written.", 12345);
    rc |= metrics_gauge(out, "bfd_jobs_active", "Runs in flight.", 3);
    rc |= metrics_labeled(out, "bfd_http_requests_total", "counter", "Requests.", "code_class",
                          classes, counts, 2);
    rc |= metrics_histogram(out, "bfd_http_request_duration_seconds", "Request time.", &h);
    metrics_hist_free(&h);
    /* Far more than the socket buffers hold, so that the server has to wait for writability. */
    for (int i = 0; f->big && i < 20000; i++)
        rc |= metrics_labeled(out, "bfd_big", "gauge", "Padding.", "k", big_values, big_counts,
                              ARRAY_SIZE(big_values));
    assert_int_equal(rc, 0);
    f->renders++;
}

static bool health(void *arg, char *why, size_t whylen)
{
    struct fixture *f = arg;
    if (!f->healthy)
        strlcpy_trunc(why, whylen, f->why);
    return f->healthy;
}

static void client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->done = true;
}

static void client_finish(struct client *c, int err)
{
    if (err && !c->err)
        c->err = err;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[65536];
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = st->data;
    if (nread == UV_EOF) {
        c->eof = true;
        client_finish(c, 0);
    } else if (nread < 0) {
        client_finish(c, (int)nread);
    } else if (nread > 0 && dynbuf_append(&c->resp, buf->base, (size_t)nread) < 0) {
        client_finish(c, UV_ENOBUFS);
    }
}

static void client_send_next(struct client *c);

static void client_written(uv_write_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) {
        client_finish(c, status);
        return;
    }
    client_send_next(c);
}

static void client_send_next(struct client *c)
{
    if (c->parts && c->parts[c->next_part]) {
        const char *p = c->parts[c->next_part++];
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)strlen(p));
        c->wreq.data = c;
        int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_written);
        if (rc < 0)
            client_finish(c, rc);
        return;
    }
    if (c->reset_after_write) {
        uv_tcp_close_reset(&c->tcp, client_closed);
    }
}

static void client_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) {
        client_finish(c, status);
        return;
    }
    int rc = c->no_read ? 0 : uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
    if (rc < 0) {
        client_finish(c, rc);
        return;
    }
    client_send_next(c);
}

static void client_start(struct client *c, uv_loop_t *loop, int port, const char *const *parts)
{
    dynbuf_free(&c->resp);
    memset(c, 0, sizeof *c);
    dynbuf_init(&c->resp, 64u << 20);
    c->parts = parts;
    assert_int_equal(uv_tcp_init(loop, &c->tcp), 0);
    c->tcp.data = c;
    c->creq.data = c;
    struct sockaddr_in sa;
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &sa), 0);
    assert_int_equal(
        uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, client_connected), 0);
}

struct guard {
    uv_timer_t t;
    bool fired, closed;
};

static void guard_fired(uv_timer_t *t)
{
    ((struct guard *)t->data)->fired = true;
}

static void guard_closed(uv_handle_t *h)
{
    ((struct guard *)h->data)->closed = true;
}

/*
 * Runs the loop until pred(arg) holds or ms pass; returns pred(arg). Every
 * UV_RUN_ONCE returns after handling some event, and the guard timer is one,
 * so the predicate is re-checked without polling.
 */
static bool run_until_pred(uv_loop_t *loop, bool (*pred)(const void *), const void *arg,
                           uint64_t ms)
{
    struct guard g = {0};
    uv_timer_init(loop, &g.t);
    g.t.data = &g;
    uv_timer_start(&g.t, guard_fired, ms, 0);
    while (!pred(arg) && !g.fired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&g.t, guard_closed);
    while (!g.closed)
        uv_run(loop, UV_RUN_ONCE);
    return pred(arg);
}

static bool flag_set(const void *arg)
{
    return *(const bool *)arg;
}

static bool run_until(uv_loop_t *loop, const bool *flag, uint64_t ms)
{
    return run_until_pred(loop, flag_set, flag, ms);
}

static bool no_clients(const void *arg)
{
    return metrics_server_clients(arg) == 0;
}

static bool two_clients(const void *arg)
{
    return metrics_server_clients(arg) == 2;
}

/* Runs the loop until the server has no connection left (it closes each one itself). */
static bool run_until_no_clients(struct fixture *f)
{
    return run_until_pred(&f->loop, no_clients, f->srv, 5000);
}

struct response {
    int status;
    char ctype[128];
    char allow[64];
    int64_t clen;
    bool conn_close;
    const char *body;
    size_t body_len;
};

/* Splits a raw response; fails the test on anything that is not well-formed. */
static void parse_response(const dynbuf_t *raw, struct response *r)
{
    memset(r, 0, sizeof *r);
    r->clen = -1;
    assert_non_null(raw->data);
    const char *end = strstr(raw->data, "\r\n\r\n");
    assert_non_null(end);
    assert_int_equal(strncmp(raw->data, "HTTP/1.1 ", 9), 0);
    char code[4];
    memcpy(code, raw->data + 9, 3);
    code[3] = '\0';
    int64_t v;
    assert_true(parse_i64(code, 100, 599, &v));
    r->status = (int)v;
    const char *p = strstr(raw->data, "\r\n") + 2;
    while (p < end + 2) {
        const char *eol = strstr(p, "\r\n");
        char line[256];
        size_t n = (size_t)(eol - p);
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        if (strncasecmp(line, "Content-Type: ", 14) == 0)
            strlcpy_trunc(r->ctype, sizeof r->ctype, line + 14);
        else if (strncasecmp(line, "Allow: ", 7) == 0)
            strlcpy_trunc(r->allow, sizeof r->allow, line + 7);
        else if (strncasecmp(line, "Content-Length: ", 16) == 0)
            assert_true(parse_i64(line + 16, 0, INT64_MAX, &r->clen));
        else if (strcasecmp(line, "Connection: close") == 0)
            r->conn_close = true;
        p = eol + 2;
    }
    r->body = end + 4;
    r->body_len = raw->len - (size_t)(r->body - raw->data);
}

/* Sends parts as one request, waits for the whole answer and the server's close. */
static void roundtrip(struct fixture *f, const char *const *parts, struct response *r)
{
    struct client *c = &f->c;
    client_start(c, &f->loop, metrics_server_port(f->srv), parts);
    assert_true(run_until(&f->loop, &c->done, 5000));
    assert_int_equal(c->err, 0);
    assert_true(c->eof);
    parse_response(&c->resp, r);
    assert_true(r->conn_close);
    /* Content-Length must match the body for GET (HEAD is checked by its caller). */
    assert_true(r->clen >= 0);
}

static int server_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f || uv_loop_init(&f->loop) != 0)
        return -1;
    f->healthy = true;
    char err[256];
    f->srv = metrics_server_start(&f->loop, "127.0.0.1:0", render, health, f, err, sizeof err);
    if (!f->srv) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static void count_handle(uv_handle_t *h, void *arg)
{
    (*(int *)arg)++;
}

/* True when at most one handle (run_until_pred's own guard timer) is left. */
static bool only_guard_left(const void *arg)
{
    int n = 0;
    uv_walk((uv_loop_t *)arg, count_handle, &n);
    return n <= 1;
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        fprintf(stderr, "teardown: handle of type %s still open\n", uv_handle_type_name(h->type));
        uv_close(h, NULL);
    }
}

/*
 * Closes the server and expects every handle to go away by itself. If a
 * failed test left its client open (the client lives in the fixture, so that
 * is safe to touch), it is closed here and the teardown fails, rather than
 * the loop running forever.
 */
static int server_teardown(void **state)
{
    struct fixture *f = *state;
    metrics_server_close(f->srv);
    bool clean = run_until_pred(&f->loop, only_guard_left, &f->loop, 5000);
    uv_walk(&f->loop, close_leftover, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    dynbuf_free(&f->c.resp);
    free(f);
    if (rc != 0)
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
    return rc == 0 && clean ? 0 : -1;
}

static void test_get_metrics(void **state)
{
    struct fixture *f = *state;
    static const char *const req[] = {"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "User-Agent: test\r\nAccept: text/plain\r\n\r\n",
                                      NULL};
    struct response r;
    roundtrip(f, req, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    dynbuf_t want;
    dynbuf_init(&want, 1 << 20);
    render(f, &want);
    assert_int_equal(r.clen, (int64_t)want.len);
    assert_int_equal(r.body_len, want.len);
    assert_memory_equal(r.body, want.data, want.len);
    dynbuf_free(&want);
    assert_true(run_until_no_clients(f));
}

static void test_head_metrics(void **state)
{
    struct fixture *f = *state;
    static const char *const req[] = {"HEAD /metrics HTTP/1.1\r\n\r\n", NULL};
    struct response r;
    roundtrip(f, req, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.clen > 0);
    assert_int_equal(r.body_len, 0);
}

struct head_progress {
    const metrics_server_t *srv;
    size_t len;
};

static bool server_has_read(const void *arg)
{
    const struct head_progress *p = arg;
    return p->srv->conns && p->srv->conns->len == p->len;
}

/*
 * The head arrives in two reads, the second being only its very last "\n";
 * the test waits until the server has read the first part (it peeks at the
 * connection, which including metrics.c allows) so the kernel cannot merge them.
 */
static void test_split_request(void **state)
{
    struct fixture *f = *state;
    static const char *const part1[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r", NULL};
    static const char *const part2[] = {"\n", NULL};
    struct client *c = &f->c;
    client_start(c, &f->loop, metrics_server_port(f->srv), part1);
    struct head_progress hp = {f->srv, strlen(part1[0])};
    assert_true(run_until_pred(&f->loop, server_has_read, &hp, 5000));
    assert_int_equal(f->srv->conns->state, ST_HEAD);
    c->parts = part2;
    c->next_part = 0;
    client_send_next(c);
    assert_true(run_until(&f->loop, &c->done, 5000));
    assert_int_equal(c->err, 0);
    struct response r;
    parse_response(&c->resp, &r);
    assert_int_equal(r.status, 200);
}

static void test_healthz(void **state)
{
    struct fixture *f = *state;
    static const char *const req[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", NULL};
    struct response r;

    roundtrip(f, req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.clen, 3);
    assert_int_equal(r.body_len, 3);
    assert_memory_equal(r.body, "ok\n", 3);

    /* The reason is one line even if the callback writes two. */
    f->healthy = false;
    f->why = "database unreachable\nsince 12:00";
    roundtrip(f, req, &r);
    assert_int_equal(r.status, 503);
    const char *want = "database unreachable since 12:00\n";
    assert_int_equal(r.clen, (int64_t)strlen(want));
    assert_int_equal(r.body_len, strlen(want));
    assert_memory_equal(r.body, want, strlen(want));
    assert_true(run_until_no_clients(f));
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET /nope HTTP/1.1\r\n\r\n", 404},
        {"GET /metricsx HTTP/1.1\r\n\r\n", 404},
        {"POST /metrics HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello=world", 405},
        {"PUT /nope HTTP/1.1\r\n\r\n", 405},
        {"GARBAGE\r\n\r\n", 400},
        {"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n", 400},
    };
    int renders = f->renders;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const char *parts[] = {cases[i].req, NULL};
        struct response r;
        roundtrip(f, parts, &r);
        assert_int_equal(r.status, cases[i].status);
        assert_int_equal(r.clen, (int64_t)r.body_len);
        if (r.status == 405)
            assert_string_equal(r.allow, "GET, HEAD");
    }
    /* None of these may have run the renderer. */
    assert_int_equal(f->renders, renders);
    assert_true(run_until_no_clients(f));
}

/* A head over 8 KiB gets 400, and the rest of what was sent is drained, not answered with RST. */
static void test_head_too_large(void **state)
{
    struct fixture *f = *state;
    size_t n = 3 * METRICS_MAX_HEAD;
    char *big = xmalloc(n + 64);
    size_t off = (size_t)snprintf(big, 64, "GET /metrics HTTP/1.1\r\nX-Big: ");
    memset(big + off, 'a', n - off);
    memcpy(big + n, "\r\n\r\n", 5);
    const char *parts[] = {big, NULL};
    struct response r;
    roundtrip(f, parts, &r);
    assert_int_equal(r.status, 400);
    free(big);

    /* Exactly at the limit is still accepted. */
    big = xmalloc(METRICS_MAX_HEAD + 1);
    off = (size_t)snprintf(big, 64, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(big + off, 'a', METRICS_MAX_HEAD - off - 4);
    memcpy(big + METRICS_MAX_HEAD - 4, "\r\n\r\n", 5);
    assert_int_equal(strlen(big), METRICS_MAX_HEAD);
    parts[0] = big;
    roundtrip(f, parts, &r);
    assert_int_equal(r.status, 200);
    free(big);
    assert_true(run_until_no_clients(f));
}

/* A client that connects and says nothing is dropped by the per-connection timer. */
static void test_idle_timeout(void **state)
{
    struct fixture *f = *state;
    metrics_server_set_client_timeout(f->srv, 100);
    struct client *c = &f->c;
    client_start(c, &f->loop, metrics_server_port(f->srv), NULL);
    int64_t t0 = mono_ms();
    assert_true(run_until(&f->loop, &c->done, 5000));
    assert_true(c->eof);
    assert_int_equal(c->resp.len, 0);
    assert_true(mono_ms() - t0 >= 90);
    assert_true(run_until_no_clients(f));
}

/* A peer that resets right after its request must not hurt the server. */
static void test_peer_reset(void **state)
{
    struct fixture *f = *state;
    static const char *const req[] = {"GET /metrics HTTP/1.1\r\n\r\n", NULL};
    for (int i = 0; i < 20; i++) {
        struct client *c = &f->c;
        client_start(c, &f->loop, metrics_server_port(f->srv), req);
        c->reset_after_write = true;
        assert_true(run_until(&f->loop, &c->done, 5000));
    }
    assert_true(run_until_no_clients(f));
    static const char *const ok[] = {"GET /healthz HTTP/1.1\r\n\r\n", NULL};
    struct response r;
    roundtrip(f, ok, &r);
    assert_int_equal(r.status, 200);
}

/* The server has read the request and is writing the response with bytes still queued. */
static bool server_write_stuck(const void *arg)
{
    const metrics_server_t *srv = arg;
    return srv->conns && srv->conns->state == ST_WRITING &&
           uv_stream_get_write_queue_size((const uv_stream_t *)&srv->conns->tcp) > 0;
}

/*
 * A body far larger than the socket buffers, to a client that only starts
 * reading a while after sending its request: the server must wait for
 * writability and still deliver every byte before its FIN.
 */
static void test_slow_reader(void **state)
{
    struct fixture *f = *state;
    static const char *const req[] = {"GET /metrics HTTP/1.1\r\n\r\n", NULL};
    f->big = true;
    struct client *c = &f->c;
    client_start(c, &f->loop, metrics_server_port(f->srv), req);
    c->no_read = true;
    /* Until the server has accepted, read the request and queued more than the
     * socket takes (however long a loaded machine needs for that)... */
    assert_true(run_until_pred(&f->loop, server_write_stuck, f->srv, 5000));
    /* ...then a while longer (nothing sets this flag) while the client still does not read. */
    bool never = false;
    assert_false(run_until(&f->loop, &never, 300));
    assert_false(c->done);
    /* The point of the test: the server really is waiting with bytes queued. */
    assert_non_null(f->srv->conns);
    assert_int_equal(f->srv->conns->state, ST_WRITING);
    assert_true(uv_stream_get_write_queue_size((uv_stream_t *)&f->srv->conns->tcp) > 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
    assert_true(run_until(&f->loop, &c->done, 10000));
    assert_int_equal(c->err, 0);
    assert_true(c->eof);
    struct response r;
    parse_response(&c->resp, &r);
    assert_int_equal(r.status, 200);
    dynbuf_t want;
    dynbuf_init(&want, 64u << 20);
    render(f, &want);
    assert_true(want.len > 8u << 20);
    assert_int_equal(r.clen, (int64_t)want.len);
    assert_int_equal(r.body_len, want.len);
    assert_memory_equal(r.body, want.data, want.len);
    dynbuf_free(&want);
    assert_true(run_until_no_clients(f));
}

/* Closing the server with connections open (idle, half a request) frees everything. */
static void test_close_with_clients(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char err[256];
    metrics_server_t *s =
        metrics_server_start(&loop, "127.0.0.1:0", NULL, NULL, NULL, err, sizeof err);
    assert_non_null(s);
    static const char *const half[] = {"GET /metr", NULL};
    struct client a = {0}, b = {0};
    client_start(&a, &loop, metrics_server_port(s), NULL);
    client_start(&b, &loop, metrics_server_port(s), half);
    /* Wait until the server has accepted both. */
    assert_true(run_until_pred(&loop, two_clients, s, 5000));
    metrics_server_close(s);
    /* The clients see the server close their connections and finish. */
    assert_true(run_until(&loop, &a.done, 5000));
    assert_true(run_until(&loop, &b.done, 5000));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    dynbuf_free(&a.resp);
    dynbuf_free(&b.resp);
}

int main(void)
{
    /* As in the daemon: a write to a reset peer must be an error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    log_min_level = LL_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_labeled),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_find_head_end),
        cmocka_unit_test(test_parse_head),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_bind_in_use),
        cmocka_unit_test_setup_teardown(test_get_metrics, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_head_metrics, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_split_request, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_healthz, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_errors, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_head_too_large, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_peer_reset, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader, server_setup, server_teardown),
        cmocka_unit_test(test_close_with_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
