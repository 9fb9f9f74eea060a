/*
 * copyenc: see copyenc.h. Format: PostgreSQL docs, "COPY — Binary Format".
 */
#include "copyenc.h"

#include <string.h>

static const char copy_header[19] = {'P',  'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n',
                                     '\0', 0,   0,   0,   0,   0,   0,    0,      0};

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

void copyenc_init(copyenc_t *c, size_t cap)
{
    dynbuf_init(&c->buf, cap);
    c->rows = 0;
    copyenc_reset(c);
}

void copyenc_reset(copyenc_t *c)
{
    dynbuf_reset(&c->buf);
    c->rows = 0;
    /* The cap always leaves room for a header. */
    if (dynbuf_append(&c->buf, copy_header, sizeof copy_header) < 0)
        c->buf.len = 0;
}

int copyenc_add(copyenc_t *c, const struct copyenc_series *s, const bar_t *b, bool final,
                int64_t fetched_us)
{
    const char *text[4] = {s->symbol, s->timeframe, s->feed, s->adjustment};
    size_t lt[4], need = 2 + 8 * (4 + 8) + (4 + 1) + (4 + 8);
    for (int i = 0; i < 4; i++) {
        lt[i] = strlen(text[i]);
        need += 4 + lt[i];
    }
    if (c->buf.len + need + 2 > c->buf.cap) /* keep room for the trailer */
        return -1;
    size_t start = c->buf.len;
    unsigned char f[13];
    put16(f, COPYENC_NCOLS);
    int rc = dynbuf_append(&c->buf, f, 2);
    for (int i = 0; i < 4; i++) {
        put32(f, (uint32_t)lt[i]);
        rc |= dynbuf_append(&c->buf, f, 4);
        rc |= dynbuf_append(&c->buf, text[i], lt[i]);
    }
    uint64_t vals[8] = {
        (uint64_t)(b->ts_us - PG_EPOCH_OFFSET_US),
        dbits(b->open),
        dbits(b->high),
        dbits(b->low),
        dbits(b->close),
        (uint64_t)b->volume,
        (uint64_t)b->trade_count,
        dbits(b->vwap),
    };
    for (int i = 0; i < 8; i++) {
        put32(f, 8);
        put64(f + 4, vals[i]);
        rc |= dynbuf_append(&c->buf, f, 12);
    }
    put32(f, 1);
    f[4] = final ? 1 : 0;
    rc |= dynbuf_append(&c->buf, f, 5);
    put32(f, 8);
    put64(f + 4, (uint64_t)(fetched_us - PG_EPOCH_OFFSET_US));
    rc |= dynbuf_append(&c->buf, f, 12);
    if (rc != 0) {
        c->buf.len = start;
        return -1;
    }
    c->rows++;
    return 0;
}

int copyenc_finish(copyenc_t *c)
{
    unsigned char t[2];
    put16(t, 0xffff);
    return dynbuf_append(&c->buf, t, 2);
}

void copyenc_free(copyenc_t *c)
{
    dynbuf_free(&c->buf);
    c->rows = 0;
}
