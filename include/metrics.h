/*
 * metrics: Prometheus text exposition (format 0.0.4) and a tiny HTTP/1.1
 * server on the libuv loop that serves it.
 *
 * The server answers exactly one request per connection and then closes it,
 * which is all a Prometheus scrape or a health probe needs and keeps the
 * state machine small:
 *
 *   GET /metrics  200, Content-Type text/plain; version=0.0.4; charset=utf-8,
 *                 body from the render callback
 *   GET /healthz  200 "ok\n" when the health callback says so, else 503 and
 *                 its one-line reason
 *   other paths   404          other methods  405 (HEAD is served like GET)
 *   head > 8 KiB or malformed   400
 *
 * Every response carries Content-Length and "Connection: close". A client
 * that has not finished its request (or reading the answer) 10 s after it
 * connected is dropped, so a slow or silent peer costs one timer and one fd,
 * and at most METRICS_MAX_CLIENTS are served at once. Nothing blocks: both
 * callbacks run on the loop thread and must return quickly. Peer resets are
 * normal events here and are logged at debug level only.
 *
 * The process must ignore SIGPIPE (main does), as for every libuv stream.
 *
 * The exposition helpers append one metric family each to a dynbuf: "# HELP"
 * and "# TYPE" once, then the samples. Names and label names are the
 * caller's constants and are not checked; label values and help text are
 * escaped as the format requires. They return 0, or -1 when the buffer's cap
 * is reached (the exposition is then cut short). Integral values print
 * without an exponent, so counters up to 2^53 read as plain integers.
 */
#ifndef BACKFILLD_METRICS_H
#define BACKFILLD_METRICS_H

#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Connections served at once; further ones are accepted and closed at once. */
#define METRICS_MAX_CLIENTS 64
/* Largest request head (request line and headers) that is accepted. */
#define METRICS_MAX_HEAD 8192
/* Default for how long a connection may live before it is dropped. */
#define METRICS_CLIENT_TIMEOUT_MS 10000

typedef struct metrics_server metrics_server_t;

/* Appends the whole Prometheus text exposition to out (borrowed, owned by the server). */
typedef void (*metrics_render_fn)(void *arg, dynbuf_t *out);
/* Returns true when healthy; otherwise fills why (one line, NUL-terminated). */
typedef bool (*metrics_health_fn)(void *arg, char *why, size_t whylen);

/*
 * Starts listening. listen is "host:port" with a numeric address:
 * "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:0" (port 0 picks a free port; see
 * metrics_server_port). Names such as "localhost" are refused, because
 * resolving them would block the loop. render and health (either may be NULL:
 * an empty exposition, always healthy) are called with arg, which is borrowed
 * and must outlive the server.
 *
 * Returns the server, or NULL with a message naming the address in err on bad
 * syntax or a bind/listen failure. After a bind failure a handle is still
 * closing, so the loop has to run once more before uv_loop_close(), as it
 * does after metrics_server_close().
 */
metrics_server_t *metrics_server_start(uv_loop_t *loop, const char *listen,
                                       metrics_render_fn render, metrics_health_fn health,
                                       void *arg, char *err, size_t errlen);

/*
 * Adds a renderer whose families follow the server's own in every /metrics
 * answer (one for the process; NULL removes it). Used by modules that start
 * after the server and are not the dispatcher's (the upkeep job). arg is
 * borrowed until it is removed. Loop thread only.
 */
void metrics_set_extra(metrics_render_fn render, void *arg);

/* The bound port (useful with port 0). */
int metrics_server_port(const metrics_server_t *s);

/*
 * Changes how long a connection may live before it is dropped (default
 * METRICS_CLIENT_TIMEOUT_MS); applies to connections accepted afterwards.
 * Meant for tests.
 */
void metrics_server_set_client_timeout(metrics_server_t *s, uint64_t ms);

/* Connections currently open (including ones being closed). */
size_t metrics_server_clients(const metrics_server_t *s);

/*
 * Closes the listener and all client connections. Memory is freed from the
 * close callbacks, so the loop must run afterwards; no callback is called
 * after this returns. Safe with NULL.
 */
void metrics_server_close(metrics_server_t *s);

/* What the server makes of the bytes a connection has sent so far. */
typedef enum metrics_req {
    METRICS_REQ_MORE,      /* no blank line yet, and still within METRICS_MAX_HEAD: read on */
    METRICS_REQ_OK,        /* a well-formed head; *method and *target are set */
    METRICS_REQ_BAD,       /* a complete head that is malformed (answered 400) */
    METRICS_REQ_TOO_LARGE, /* no complete head within METRICS_MAX_HEAD bytes (answered 400) */
} metrics_req_t;

/*
 * The server's request-head parser, without I/O; the server calls it after
 * every read. buf[0..len) holds what the connection has sent, of which the
 * first `scanned` bytes (scanned <= len; 0 the first time) were given before
 * and held no complete head, so only the rest is searched for the blank line.
 * buf is borrowed and modified: it needs room for len + 1 bytes. The head
 * (through its blank line, bare LF accepted) is cut with a NUL and checked:
 * request line "METHOD SP TARGET SP HTTP/1.x", headers "token:value". On
 * METRICS_REQ_OK, *method and *target point into buf, the target without its
 * query string; nothing else is set. Bytes after the head (a body, a second
 * request) are ignored. Pure: no allocation, no logging.
 */
metrics_req_t metrics_request_parse(char *buf, size_t scanned, size_t len, const char **method,
                                    const char **target);

/* Exposition helpers (text format 0.0.4). */
int metrics_counter(dynbuf_t *out, const char *name, const char *help, double value);
int metrics_gauge(dynbuf_t *out, const char *name, const char *help, double value);

/*
 * One family with one label: n samples name{label="values[i]"} counts[i].
 * type is "counter", "gauge" or "untyped". values and counts are borrowed.
 */
int metrics_labeled(dynbuf_t *out, const char *name, const char *type, const char *help,
                    const char *label, const char *const *values, const double *counts, size_t n);

/*
 * A fixed-bucket histogram. bounds are borrowed (usually a static array),
 * strictly increasing and finite; buckets are owned, nbounds+1 of them,
 * not cumulative, the last one counting values above every bound (+Inf).
 */
typedef struct metrics_histogram {
    const double *bounds;
    size_t nbounds;
    uint64_t *buckets;
    double sum;
    uint64_t count;
} metrics_histogram_t;

/* Allocates the buckets (aborts on out of memory, like xmalloc). */
void metrics_hist_init(metrics_histogram_t *h, const double *bounds, size_t nbounds);
/* Counts v in the first bucket whose bound is >= v. NaN is ignored. */
void metrics_hist_observe(metrics_histogram_t *h, double v);
/* Frees the buckets; safe with NULL and twice. */
void metrics_hist_free(metrics_histogram_t *h);
/* Writes cumulative name_bucket{le="..."} lines, le="+Inf" (= count), name_sum, name_count. */
int metrics_histogram(dynbuf_t *out, const char *name, const char *help,
                      const metrics_histogram_t *h);

#endif
