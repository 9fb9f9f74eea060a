/*
 * http: libcurl's multi interface on the libuv loop.
 *
 * Non-blocking GET requests with a capped response body. The adapter keeps
 * the whole multi-socket contract (STYLE.md rule 7): a poll error reaches
 * curl as CURL_CSELECT_ERR; completions are drained after every
 * socket_action; timer -1 stops, anything else is one-shot; libcurl is never
 * called from inside its own callbacks; after curl_multi_cleanup the loop
 * runs on so that close callbacks finish. All easy handles share one multi
 * handle, hence one connection cache: keep-alive and HTTP/2 multiplexing come
 * for free. At most max_connections requests are in curl at once over plain
 * http (one per HTTP/1.1 connection), and 100 times that over https (HTTP/2
 * multiplexes); the rest wait in order in the client, so a request's
 * timeouts run only from the moment it can have a connection, never while it
 * waits for one. Knows nothing about Alpaca.
 */
#ifndef BACKFILLD_HTTP_H
#define BACKFILLD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_client http_client_t;
typedef struct http_req http_req_t;

struct http_opts {
    long max_connections;
    long connect_timeout_ms;
    long timeout_ms;
    const char *ca_file;        /* NULL or "" = libcurl's default bundle */
    size_t body_cap;            /* larger bodies fail the request */
    const char *const *headers; /* extra request headers, NULL-terminated; copied */
};

struct http_result {
    int curl_code;     /* CURLcode; 0 = a response arrived */
    bool tls_refused;  /* the server's certificate was refused (or the CA file is unusable):
                          a configuration problem, retrying will not help */
    const char *error; /* curl's message when curl_code != 0 (borrowed) */
    long status;       /* HTTP status, 0 if none */
    const char *body;  /* borrowed, NUL-terminated, body_len bytes (decoded) */
    size_t body_len;
    const char *content_type;    /* borrowed, may be "" */
    int64_t ratelimit_reset;     /* X-RateLimit-Reset (epoch s) or -1 */
    int64_t ratelimit_remaining; /* X-RateLimit-Remaining or -1 */
    int64_t ratelimit_limit;     /* X-RateLimit-Limit (requests per minute) or -1 */
    double total_ms;
};

/* Runs once per request that was not cancelled; result and its strings are borrowed. */
typedef void (*http_done_cb)(void *arg, const struct http_result *res);

http_client_t *http_client_new(uv_loop_t *loop, const struct http_opts *opts);

/*
 * Starts a GET. Returns the request (owned by the client; valid until its
 * callback returns or http_cancel) or NULL if curl refused it.
 */
http_req_t *http_get(http_client_t *c, const char *url, http_done_cb cb, void *arg);

/* Stops a request (in curl or still waiting); its callback will not run. Not
 * from inside that callback. The next waiting request goes to curl. */
void http_cancel(http_req_t *req);

/* How many requests to url's scheme curl is handed at once: one a connection
 * over plain http, HTTP/2's streams a connection over https. More wait in order. */
long http_capacity(const http_client_t *c, const char *url);

/* Called for every finished request (status 0 when no response came), for metrics. */
void http_set_observer(http_client_t *c, void (*fn)(void *arg, long status, double ms), void *arg);

/* Cancels everything and frees the client once its handles are closed. */
void http_client_close(http_client_t *c);

#endif
