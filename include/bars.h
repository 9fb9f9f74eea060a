/*
 * bars: turns an Alpaca bars response body into plain C arrays.
 *
 * Pages are read with jsonscan (strict RFC 8259, no tree; numbers exactly as
 * strtod reads them), error bodies with cJSON. It validates every bar (all
 * eight keys present, numbers where numbers belong, integral volume and trade
 * count, a parseable RFC 3339 timestamp) and reports the first problem as a
 * message naming the symbol, the bar index and the key, so a malformed page is
 * rejected whole: either every bar of a page is returned or none is.
 */
#ifndef BACKFILLD_BARS_H
#define BACKFILLD_BARS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bar {
    int64_t ts_us; /* bar start, microseconds since the Unix epoch, UTC */
    double open, high, low, close, vwap;
    int64_t volume, trade_count;
} bar_t;

typedef struct bars_series {
    char *symbol; /* owned */
    bar_t *bars;  /* owned, n entries, in the order served */
    size_t n;
} bars_series_t;

typedef struct bars_page {
    bars_series_t *series; /* owned; in the order the symbols appear in the body */
    size_t nseries;
    size_t total;          /* sum of series[i].n */
    char *next_page_token; /* owned; NULL when the token is JSON null or absent */
} bars_page_t;

/*
 * Parses a multi-symbol body ({"bars":{SYM:[...]},"next_page_token":...}).
 * Returns 0 and fills *out (caller frees with bars_page_clear), or -1 with a
 * one-line message in err (always NUL-terminated) and *out left empty.
 * "bars":{} and "bars":null both mean an empty page.
 */
int bars_parse_multi(const char *body, size_t len, bars_page_t *out, char *err, size_t errlen);

/*
 * Parses a single-symbol body ({"bars":[...]|null,"symbol":S,"next_page_token":...}).
 * The series is named after the body's "symbol", which must equal `symbol`.
 */
int bars_parse_single(const char *body, size_t len, const char *symbol, bars_page_t *out, char *err,
                      size_t errlen);

/* Frees what *p owns and zeroes it. Safe on a zeroed or already-cleared page. */
void bars_page_clear(bars_page_t *p);

/*
 * Extracts "message" from an Alpaca error body ({"message":"...","code":N}).
 * Returns true and copies (truncating) into out; false when the body is not
 * JSON or has no string message (e.g. nginx's HTML 401 or a gateway page).
 */
bool bars_error_message(const char *body, size_t len, char *out, size_t outlen);

/*
 * RFC 3339 → microseconds since the epoch. Accepts "YYYY-MM-DDTHH:MM:SS",
 * an optional fraction of up to 9 digits (truncated to µs), then "Z" or
 * "±hh:mm". Also accepts a bare date "YYYY-MM-DD" (midnight UTC).
 * Returns 0, or -1 if the text is not exactly one such timestamp.
 */
int bars_parse_time(const char *s, int64_t *us_out);

/* µs since the epoch → "YYYY-MM-DDTHH:MM:SSZ" (fraction dropped). buf ≥ 21 bytes. */
void bars_format_time(int64_t us, char *buf, size_t len);

/*
 * New York time, for trading days: the US rules since 1967 (2007 on: second
 * Sunday of March to first Sunday of November; 1987-2006: first Sunday of
 * April to last Sunday of October; before: last Sunday of April to last
 * Sunday of October; 1974 from January 6 and 1975 from February 23), changes
 * at 02:00 local. Dates are days since
 * 1970-01-01 (a New York calendar date, not a UTC one).
 */
/* The New York date of an instant. */
int64_t bars_ny_day(int64_t us);
/* New York midnight at the start of a New York date, as µs since the epoch. */
int64_t bars_ny_midnight_us(int64_t day);
/* The end of the bar of timeframe code tf that starts at us: us + its length
 * for intraday bars; the next New York midnight, Monday or 1st of the month for
 * d1, w1 and mn1 (stamped at New York midnight). 0 for an unknown code. */
int64_t bars_bar_end_us(const char *tf, int64_t us);

#endif
