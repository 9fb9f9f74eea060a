/*
 * store: see store.h.
 */
#include "store.h"

#include "copyenc.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_BUF_CAP ((size_t)1 << 30)

struct item {
    void *owner; /* NULL once forgotten */
    int64_t run_id;
    int attempt;
    int64_t nbars;
    int64_t total_bars;
    int pages;
    bool final;
};

struct txn {
    copyenc_t enc;
    struct item *items;
    size_t nitems, capitems;
    int64_t started_ms;
};

struct store {
    uv_loop_t *loop;
    db_conn_t *db;
    char *worker;
    struct store_cbs cbs;
    uv_timer_t timer; /* owns nothing but gives the store a close callback */
    struct txn filling;
    struct txn *inflight; /* at most one */
    bool closing;
};

static const char upsert_sql[] =
    "INSERT INTO bars AS b (symbol, timeframe, ts, open, high, low, close, volume, trade_count, "
    "vwap) "
    "SELECT DISTINCT ON (symbol, timeframe, ts) symbol, timeframe, ts, open, high, low, close, "
    "volume, trade_count, vwap FROM bars_stage ORDER BY symbol, timeframe, ts "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, "
    "low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume, "
    "trade_count = EXCLUDED.trade_count, vwap = EXCLUDED.vwap "
    "WHERE (b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap) IS DISTINCT FROM "
    "(EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume, "
    "EXCLUDED.trade_count, EXCLUDED.vwap)";

static void txn_init(struct txn *b)
{
    memset(b, 0, sizeof *b);
    copyenc_init(&b->enc, STORE_BUF_CAP);
}

static void txn_free(struct txn *b)
{
    copyenc_free(&b->enc);
    free(b->items);
    memset(b, 0, sizeof *b);
}

static void submit(store_t *s);

/* Appends "{a,b,c}" built from one field of every final item. */
static void array_lit(dynbuf_t *d, const struct txn *b, int which)
{
    bool first = true;
    int rc = dynbuf_append(d, "{", 1);
    for (size_t i = 0; i < b->nitems; i++) {
        const struct item *it = &b->items[i];
        if (!it->final)
            continue;
        long long v = which == 0   ? it->run_id
                      : which == 1 ? it->attempt
                      : which == 2 ? it->total_bars
                                   : it->pages;
        rc |= dynbuf_printf(d, first ? "%lld" : ",%lld", v);
        first = false;
    }
    rc |= dynbuf_append(d, "}", 1);
    (void)rc; /* bounded by the transaction's size; the cap is far above it */
}

static bool id_in(PGresult *r, int64_t id)
{
    if (!r)
        return false;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), buf) == 0)
            return true;
    return false;
}

static void on_done(void *arg, int status, const char *err, const char *sqlstate,
                    PGresult *const *res, int nres)
{
    store_t *s = arg;
    struct txn *b = s->inflight;
    if (status == DB_ECONN && !s->closing) {
        /* Outcome unknown; the upsert is idempotent and completion fenced: send it again. */
        LOG(LL_WARN, "write retried after reconnect", F_I64("rows", b->enc.rows),
            F_STR("error", err));
        submit(s);
        return;
    }
    s->inflight = NULL;
    double ms = (double)(mono_ms() - b->started_ms);
    if (status == DB_OK) {
        int64_t changed = 0;
        if (nres >= 1 && res[0])
            parse_i64(PQcmdTuples(res[0]), 0, INT64_MAX, &changed);
        LOG(LL_DEBUG, "write committed", F_I64("rows", b->enc.rows), F_I64("changed", changed),
            F_I64("items", b->nitems), F_DBL("ms", ms));
        PGresult *done = nres >= 2 ? res[1] : NULL;
        for (size_t i = 0; i < b->nitems; i++) {
            struct item *it = &b->items[i];
            if (it->owner && s->cbs.committed)
                s->cbs.committed(it->owner, it->nbars, it->final,
                                 it->final && id_in(done, it->run_id));
        }
    } else {
        LOG(LL_ERROR, "write failed", F_I64("rows", b->enc.rows), F_I64("items", b->nitems),
            F_STR("error", err), F_STR("sqlstate", sqlstate));
        /* A run with a page in this transaction must not be completed by its
         * final page waiting in the next one: it would be succeeded with a gap. */
        for (size_t i = 0; i < b->nitems; i++)
            for (size_t k = 0; k < s->filling.nitems; k++)
                if (s->filling.items[k].run_id == b->items[i].run_id &&
                    s->filling.items[k].attempt == b->items[i].attempt)
                    s->filling.items[k].final = false;
        for (size_t i = 0; i < b->nitems; i++) {
            struct item *it = &b->items[i];
            if (it->owner && s->cbs.failed)
                s->cbs.failed(it->owner, err ? err : "write failed");
        }
    }
    size_t rows = b->enc.rows;
    txn_free(b);
    free(b);
    if (s->cbs.drained)
        s->cbs.drained(s->cbs.arg, status == DB_OK, rows, ms);
    if (!s->closing && s->filling.nitems > 0)
        store_flush(s);
}

static void submit(store_t *s)
{
    struct txn *b = s->inflight;
    b->started_ms = mono_ms();
    db_req_t *r = db_req_new(on_done, s, true);
    /* Created inside the transaction, not once per session: behind a
     * transaction-mode pooler each transaction may land on another server
     * connection. When it exists already this costs a notice, nothing more. */
    db_req_sql(r, "CREATE TEMP TABLE IF NOT EXISTS bars_stage (LIKE bars) ON COMMIT DELETE ROWS", 0,
               NULL);
    size_t len = b->enc.buf.len;
    char *copy = xmalloc(len);
    memcpy(copy, b->enc.buf.data, len);
    db_req_copy(r,
                "COPY bars_stage (symbol, timeframe, ts, open, high, low, close, volume, "
                "trade_count, vwap) FROM STDIN (FORMAT binary)",
                copy, len);
    db_req_sql(r, upsert_sql, 0, NULL);
    db_req_keep(r);
    bool finals = false;
    for (size_t i = 0; i < b->nitems; i++)
        finals |= b->items[i].final;
    if (finals) {
        dynbuf_t a[4];
        const char *params[5];
        params[0] = s->worker;
        for (int k = 0; k < 4; k++) {
            dynbuf_init(&a[k], (size_t)1 << 26);
            array_lit(&a[k], b, k);
            params[k + 1] = a[k].data;
        }
        db_req_sql(r,
                   "SELECT * FROM complete_job_runs($1, $2::bigint[], $3::int[], $4::bigint[], "
                   "$5::int[])",
                   5, params);
        db_req_keep(r);
        for (int k = 0; k < 4; k++)
            dynbuf_free(&a[k]);
    }
    db_submit(s->db, r);
}

void store_flush(store_t *s)
{
    if (s->inflight || s->closing || s->filling.nitems == 0)
        return;
    struct txn *b = xmalloc(sizeof *b);
    *b = s->filling;
    txn_init(&s->filling);
    if (copyenc_finish(&b->enc) < 0) {
        /* Cannot happen: the cap always leaves room for the trailer. */
        LOG(LL_CRIT, "copy stream overflow", F_I64("rows", b->enc.rows));
        abort();
    }
    s->inflight = b;
    submit(s);
}

int store_add(store_t *s, const struct store_page *pg)
{
    struct txn *b = &s->filling;
    size_t rows_before = b->enc.rows, len_before = b->enc.buf.len;
    for (size_t i = 0; i < pg->n; i++) {
        if (copyenc_add(&b->enc, pg->symbol, pg->timeframe, &pg->bars[i]) < 0) {
            /* Roll the partial page back: a page is written whole or not at all. */
            b->enc.rows = rows_before;
            b->enc.buf.len = len_before;
            LOG(LL_ERROR, "page too large to buffer", F_I64("job_id", pg->run_id),
                F_STR("symbol", pg->symbol), F_I64("bars", (int64_t)pg->n));
            return -1;
        }
    }
    if (b->nitems == b->capitems) {
        b->capitems = b->capitems ? b->capitems * 2 : 16;
        b->items = xrealloc(b->items, b->capitems * sizeof(*b->items));
    }
    b->items[b->nitems++] = (struct item){.owner = pg->owner,
                                          .run_id = pg->run_id,
                                          .attempt = pg->attempt,
                                          .nbars = (int64_t)pg->n,
                                          .total_bars = pg->total_bars,
                                          .pages = pg->pages,
                                          .final = pg->final};
    /* Group commit: write at once when the session is free; whatever arrives
     * while a write transaction is in flight becomes the next one. Under load they
     * grow by themselves, and an idle writer adds no latency. */
    if (!s->inflight)
        store_flush(s);
    return 0;
}

store_t *store_new(uv_loop_t *loop, db_conn_t *db, const char *worker_id,
                   const struct store_cbs *cbs)
{
    store_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->db = db;
    s->worker = xstrdup(worker_id);
    s->cbs = *cbs;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    txn_init(&s->filling);
    return s;
}

size_t store_backlog(const store_t *s)
{
    return s->filling.enc.rows + (s->inflight ? s->inflight->enc.rows : 0);
}

bool store_idle(const store_t *s)
{
    return !s->inflight && s->filling.nitems == 0;
}

void store_forget(store_t *s, void *owner)
{
    for (size_t i = 0; i < s->filling.nitems; i++)
        if (s->filling.items[i].owner == owner)
            s->filling.items[i].owner = NULL;
    if (s->inflight)
        for (size_t i = 0; i < s->inflight->nitems; i++)
            if (s->inflight->items[i].owner == owner)
                s->inflight->items[i].owner = NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    store_t *s = h->data;
    txn_free(&s->filling);
    if (s->inflight) {
        txn_free(s->inflight);
        free(s->inflight);
    }
    free(s->worker);
    free(s);
}

void store_close(store_t *s)
{
    if (!s)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}
