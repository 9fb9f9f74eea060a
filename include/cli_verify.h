/*
 * cli_verify: `backfilld verify`, the completeness ledger's report, and the
 * pass the daemon runs over the last sessions every day.
 *
 * Per series (a fetch_historical definition: symbol, timeframe, feed,
 * adjustment) and trading day of trading_calendar in the range, ledger_days
 * (sql/007) gives the bars the session allows, the bars stored, what a
 * re-fetch served when the day was last checked, and a class:
 *
 *   complete     as many bars as the session allows, or as a re-fetch serves
 *   no_data      fetched, and Alpaca had nothing (a series with no bar at all
 *                is suspicious: a typo'd symbol, the wrong feed)
 *   not_fetched  no succeeded run covers the day yet
 *   hole         fewer bars stored than a re-fetch serves now
 *   not_listed   before the series' first bar
 *   short        fewer than the session allows, never re-checked (--no-check)
 *
 * Days after the first bar with fewer bars than the session allows are
 * re-checked (their bars fetched again now, counted, and the counts recorded
 * in ledger_checks) unless --no-check, which uses the last counts recorded;
 * --refetch queues the holes' days again, and the whole range of a series
 * with no bar at all (forced, through ledger_refetch).
 */
#ifndef BACKFILLD_CLI_VERIFY_H
#define BACKFILLD_CLI_VERIFY_H

#include "calendar.h"
#include "util.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

enum verify_class {
    VC_COMPLETE = 0,
    VC_NO_DATA,
    VC_NOT_FETCHED,
    VC_HOLE,
    VC_NOT_LISTED,
    VC_SHORT,
    VC_N
};
/* "complete", "no_data", ... (the SQL's names) */
extern const char *const verify_class_names[VC_N];

struct verify_opts {
    const char *symbols;   /* comma-separated, or NULL for every definition */
    const char *timeframe; /* a code, or NULL */
    const char *from, *to; /* YYYY-MM-DD New York trading days, or NULL */
    int64_t last_sessions; /* > 0: from the Nth last session to the last one (overrides from/to) */
    bool check;            /* re-fetch days short of their session to tell holes */
    bool refetch;          /* queue holes and empty days after the listing */
    const char *source;    /* "verify" or "daemon", for ledger_summary */
};

struct verify_totals {
    int64_t series;
    int64_t empty_series; /* fetched days, and no bar at all */
    int64_t days;
    int64_t cls[VC_N];
    int64_t checked;  /* series-days re-checked */
    int64_t requests; /* requests the re-check sent */
    int64_t queued;   /* runs --refetch queued */
};

/*
 * One pass: the calendar made to cover the range (calendar_sync), the
 * ledger, the re-check, the ledger again, the re-fetch, the summary saved.
 * On success returns 0 with *rows (caller PQclear()s; NULL allowed to not
 * want them) holding the ledger's final rows, columns as ledger_days.
 * -1 with err on failure.
 */
int verify_pass(struct upkeep_ctx *ctx, const struct verify_opts *o, struct verify_totals *t,
                PGresult **rows, char *err, size_t errlen) MUSTCHECK;

/* Whether a pass found something wrong: a hole, a day not fetched, or a series with no bar. */
bool verify_wrong(const struct verify_totals *t);

/*
 * For `status`: appends the ledger's totals to out — the last verify's days
 * per class, when and over what, the calendar's range and age, and the
 * corporate-action sync (records, re-queued runs, name changes, last
 * success or error). json: one JSON object (no trailing newline), to be the
 * value of a "ledger" key; else indented text lines under a "ledger" title.
 * 0, or -1 with err (a query failed; nothing appended). conn is borrowed.
 */
int verify_status_totals(PGconn *conn, bool json, dynbuf_t *out, char *err, size_t errlen);

int cli_verify(const struct config *c, int argc, char **argv);

#endif
