/*
 * Fuzz target: metrics_request_parse, the request-head parser of the
 * /metrics and /healthz server, which anyone who can reach the port talks to.
 *
 * The input is what a client sends. It is fed the way the server's reads
 * would deliver it, into a buffer of the server's size (METRICS_MAX_HEAD + 2
 * bytes, on the heap so ASan sees its end), stopping at the first answer
 * other than "read on", as on_read does: once all at once, once a byte at a
 * time, once in chunks of 7. The three must agree, on the outcome and on the
 * method and target, because a reader must not depend on how TCP cut the
 * stream. The answer is also checked against the input directly: where the
 * first blank line is, the method is the leading token, the target a run of
 * visible characters without its query, both inside the buffer.
 */
#include "fuzz.h"
#include "metrics.h"

#include <stdbool.h>

#define BUFSZ (METRICS_MAX_HEAD + 2)

struct outcome {
    metrics_req_t req;
    size_t len; /* bytes fed when the answer came */
    char method[BUFSZ];
    char target[BUFSZ];
};

/* Feeds data in reads of at most `chunk` bytes, as the server does, until an answer. */
static void feed(const uint8_t *data, size_t size, size_t chunk, struct outcome *o)
{
    char *buf = malloc(BUFSZ);
    size_t len = 0, pos = 0;
    const char *method = NULL, *target = NULL;

    if (buf == NULL)
        abort();
    o->req = METRICS_REQ_MORE;
    o->method[0] = o->target[0] = '\0';
    while (o->req == METRICS_REQ_MORE && pos < size) {
        /* on_alloc offers what is left of the head buffer, minus the byte kept for the NUL. */
        size_t room = METRICS_MAX_HEAD + 1 - len;
        size_t n = size - pos < chunk ? size - pos : chunk;
        if (n > room)
            n = room;
        FUZZ_CHECK(n > 0);
        memcpy(buf + len, data + pos, n);
        pos += n;
        size_t scanned = len;
        len += n;
        o->req = metrics_request_parse(buf, scanned, len, &method, &target);
    }
    o->len = len;
    if (o->req == METRICS_REQ_OK) {
        FUZZ_CHECK(method >= buf && method < buf + len && target >= buf && target < buf + len);
        FUZZ_CHECK(fuzz_terminated(method, (size_t)(buf + BUFSZ - method)));
        FUZZ_CHECK(fuzz_terminated(target, (size_t)(buf + BUFSZ - target)));
        snprintf(o->method, sizeof o->method, "%s", method);
        snprintf(o->target, sizeof o->target, "%s", target);
    }
    free(buf);
}

/* Where the head ends (through its blank line, LF LF or LF CR LF) in data, or 0. */
static size_t blank_line_end(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 1 < size; i++) {
        if (data[i] != '\n')
            continue;
        if (data[i + 1] == '\n')
            return i + 2;
        if (i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct outcome whole, bytes, sevens;

    feed(data, size, SIZE_MAX, &whole);
    feed(data, size, 1, &bytes);
    feed(data, size, 7, &sevens);
    FUZZ_CHECK(whole.req == bytes.req && whole.req == sevens.req);
    FUZZ_CHECK(strcmp(whole.method, bytes.method) == 0 && strcmp(whole.method, sevens.method) == 0);
    FUZZ_CHECK(strcmp(whole.target, bytes.target) == 0 && strcmp(whole.target, sevens.target) == 0);

    /* The server never holds more than METRICS_MAX_HEAD + 1 bytes. */
    size_t held = size < METRICS_MAX_HEAD + 1 ? size : METRICS_MAX_HEAD + 1;
    size_t end = blank_line_end(data, held);
    switch (whole.req) {
    case METRICS_REQ_MORE:
        FUZZ_CHECK(end == 0 && size <= METRICS_MAX_HEAD);
        break;
    case METRICS_REQ_TOO_LARGE:
        FUZZ_CHECK((end == 0 || end > METRICS_MAX_HEAD) && held == METRICS_MAX_HEAD + 1);
        break;
    case METRICS_REQ_BAD:
        FUZZ_CHECK(end > 0 && end <= METRICS_MAX_HEAD);
        break;
    case METRICS_REQ_OK: {
        FUZZ_CHECK(end > 0 && end <= METRICS_MAX_HEAD);
        /*
         * The request line is METHOD SP TARGET SP HTTP/1.x, nothing before the
         * method. The target is never empty on the wire, but with its query
         * cut off it may be ("GET ?x HTTP/1.1"), which routes to 404.
         */
        size_t m = strlen(whole.method), t = strlen(whole.target);
        FUZZ_CHECK(m > 0 && m + 1 + t < end && data[m + 1] != ' ');
        FUZZ_CHECK(memcmp(data, whole.method, m) == 0 && data[m] == ' ');
        FUZZ_CHECK(memcmp(data + m + 1, whole.target, t) == 0);
        for (size_t i = 0; i < m; i++)
            FUZZ_CHECK(is_tchar((unsigned char)whole.method[i]));
        for (size_t i = 0; i < t; i++)
            FUZZ_CHECK(whole.target[i] > 0x20 && whole.target[i] < 0x7f && whole.target[i] != '?');
        FUZZ_CHECK(data[m + 1 + t] == ' ' || data[m + 1 + t] == '?');
        /* The head holds no NUL, or it would have been refused. */
        FUZZ_CHECK(memchr(data, '\0', end) == NULL);
        break;
    }
    }
    return 0;
}
