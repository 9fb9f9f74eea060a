/*
 * calendar: Alpaca's trading calendar (GET /v2/calendar on the trading host,
 * alpaca-more-api.md §3) kept in trading_calendar, and what the upkeep jobs
 * (this module, corpactions and verify) share: one context that carries a
 * database session, a curl easy handle and the settings, a GET that spends a
 * token of the shared request budget first, and a log hook.
 *
 * Everything here blocks: it runs in a command (verify) or on a libuv worker
 * thread of the daemon (corpactions_daemon), never on the loop. The session
 * and the handle belong to whoever made the context; nothing here keeps a
 * pointer to them after a call returns.
 */
#ifndef BACKFILLD_CALENDAR_H
#define BACKFILLD_CALENDAR_H

#include "config.h"
#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct upkeep_ctx {
    const struct config *cfg; /* borrowed */
    PGconn *conn;             /* borrowed: a connected session, UTC */
    CURL *curl;               /* borrowed: an easy handle, reset before each request */
    atomic_bool *stop;        /* borrowed, may be NULL: set when the daemon stops */
    /* Where log lines go: NULL writes them at once (a command); the daemon's
     * worker thread collects them for the loop. fields as LOG's. */
    void (*log)(void *arg, int level, const char *msg, const struct log_field *fields);
    void *log_arg;
    bool low_priority;  /* yield the shared budget to bar fetches (see calendar_get) */
    uint64_t requests;  /* requests sent through this context */
    uint64_t waited_ms; /* time spent waiting for the budget */
};

/* Writes one line through ctx's hook (or at once). */
void calendar_log(struct upkeep_ctx *ctx, int level, const char *msg,
                  const struct log_field *fields);
#define UPLOG(ctx, level, msg, ...)                                                                \
    calendar_log((ctx), (level), (msg),                                                            \
                 (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ){.type = LF_END}})

/*
 * GETs url (auth headers from the settings) into body (the caller's, reset
 * here) after taking one token of the shared budget (take_rate_tokens on
 * BACKFILLD_RATE_LIMIT_NAME; with no shared name, paced locally at
 * BACKFILLD_RATE_LIMIT). Low priority waits twice as long as the budget says
 * before asking again, so bar fetches come first. Returns the HTTP status
 * (200, 404, ...), or -1 with the cause in err (unreachable, stopped, budget
 * query failed). host names the setting in messages (APCA_API_BASE_URL, ...).
 */
long calendar_get(struct upkeep_ctx *ctx, const char *url, const char *host, dynbuf_t *body,
                  char *err, size_t errlen);

/*
 * Makes trading_calendar cover [from, to] (dates as YYYY-MM-DD; either may
 * be NULL for the definitions' earliest day and a year ahead), reading the
 * calendar again when it does not, or when it was last read more than
 * max_age_s ago (0: always). Returns the days stored (0 when nothing needed
 * reading), or -1 with the cause in err; a failure is also recorded in
 * backfilld_sync_state.
 */
int calendar_sync(struct upkeep_ctx *ctx, const char *from, const char *to, int64_t max_age_s,
                  char *err, size_t errlen) MUSTCHECK;

/* Runs a statement; NULL with the scrubbed server message in err. Caller PQclear()s. */
PGresult *calendar_exec(PGconn *conn, const char *sql, int n, const char *const *params, char *err,
                        size_t errlen);

#endif
