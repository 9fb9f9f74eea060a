/*
 * copyenc: builds the PostgreSQL binary COPY stream for bars.
 *
 * Binary COPY costs the server about half the CPU of text COPY (no float or
 * timestamp parsing) and carries the doubles bit for bit, so what Alpaca sent
 * is exactly what lands. Columns, in order: symbol, timeframe, feed,
 * adjustment text, ts timestamptz, open, high, low, close float8, volume
 * int8, trade_count int8, vwap float8, final bool, fetched_at timestamptz —
 * BAR_COLS in store.c.
 */
#ifndef BACKFILLD_COPYENC_H
#define BACKFILLD_COPYENC_H

#include "bars.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>

#define COPYENC_NCOLS 14

typedef struct copyenc {
    dynbuf_t buf; /* header, rows, and (after finish) the trailer */
    size_t rows;
} copyenc_t;

/* Starts a stream with its 19-byte header; `cap` bounds the buffer. */
void copyenc_init(copyenc_t *c, size_t cap);
/* The series a row belongs to: (symbol, timeframe, feed, adjustment). */
struct copyenc_series {
    const char *symbol, *timeframe, *feed, *adjustment;
};

/* Appends one row of series s: bar b, final or not, fetched at fetched_us
 * (µs since the Unix epoch). -1 when the cap would be exceeded. */
int copyenc_add(copyenc_t *c, const struct copyenc_series *s, const bar_t *b, bool final,
                int64_t fetched_us) MUSTCHECK;
/* Appends the trailer; the stream is then complete in c->buf. */
int copyenc_finish(copyenc_t *c) MUSTCHECK;
/* Empties the stream back to just a header. */
void copyenc_reset(copyenc_t *c);
void copyenc_free(copyenc_t *c);

/* µs since the Unix epoch → PostgreSQL's µs since 2000-01-01. */
#define PG_EPOCH_OFFSET_US INT64_C(946684800000000)

#endif
