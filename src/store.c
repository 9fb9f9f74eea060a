/*
 * store: see store.h.
 *
 * A write transaction goes through three steps on one writer session:
 *
 *   probe   one query: which pages of the transaction fall on bars already
 *           stored (an index probe per page's span, outside the transaction);
 *   write   BEGIN; COPY the rows of empty spans straight into bars; COPY the
 *           others into the stage and upsert them; complete the runs whose
 *           final page is in it; COMMIT;
 *   retry   a unique violation of the direct COPY (another writer got there
 *           first, or a commit we thought lost was not) rolls the whole
 *           transaction back, and it is sent again with every row staged.
 *
 * Several writer sessions run transactions side by side. Two transactions
 * in flight never share a run, nor bars of a series over spans that meet: a
 * page whose run, or whose series over its span, is in flight on one writer
 * waits in the buffer until that one ends, and no page passes one that
 * waits of its run or over its span. So a run's pages commit in order, a
 * completion counts every earlier page of its run as committed, pages over
 * the same bars commit in the order they were fetched, and two writers
 * never wait on each other's keys. Each free writer takes its share of
 * what is buffered (take_ready).
 */
#include "store.h"

#include "copyenc.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_BUF_CAP ((size_t)1 << 30)
/* Below this a transaction's own cost (probe, completion, commit) starts to
 * show: a writer takes at least this much of what is buffered. */
#define STORE_SHARE_MIN_ROWS ((size_t)20000)
#define COPY_HEADER_LEN 19
#define COPY_TRAILER_LEN 2

struct item {
    void *owner; /* NULL once forgotten */
    int64_t run_id;
    int attempt;
    int64_t nbars;
    int64_t total_bars;
    int pages;
    bool final;
    bool ascending;       /* its bars' timestamps strictly increase */
    bool stored;          /* the probe found bars in [lo, hi]: its rows go through the upsert */
    int64_t lo_us, hi_us; /* its first and last bar; unused when nbars is 0 */
    size_t off, len;      /* its rows' bytes in enc.buf */
    size_t series;        /* index into txn.series; unused when nbars is 0 */
};

/* One series (symbol, timeframe, feed, adjustment) of a write transaction: the span of its bars. */
struct series {
    char symbol[32], timeframe[8], feed[8], adjustment[64];
    int64_t lo_us, hi_us;
};

struct txn {
    copyenc_t enc;
    struct item *items;
    size_t nitems, capitems;
    struct series *series;
    size_t nseries, capseries, last_series;
    /* Every page strictly ascending and no two pages of a series overlapping:
     * no key twice, so the upsert needs no DISTINCT ON … ORDER BY. */
    bool unique;
    /* A name too long to tell apart here, a failed probe, or a unique
     * violation of the direct COPY: every row through the staging upsert. */
    bool all_staged;
    /* After "cannot affect row a second time": the upsert with DISTINCT ON. */
    bool distinct;
    int kept_direct, kept_upsert, kept_done; /* result indices, -1 when absent */
    int64_t started_ms;
};

struct writer {
    store_t *s;
    db_conn_t *db;
    bool owned;           /* opened (and closed) by the store, not the caller */
    struct txn *inflight; /* at most one per writer */
};

struct store {
    uv_loop_t *loop;
    char *worker;
    struct store_cbs cbs;
    uv_timer_t timer; /* owns nothing but gives the store a close callback */
    struct txn filling;
    struct writer *w;
    size_t nw;
    bool closing;
};

#define BAR_COLS                                                                                   \
    "symbol, timeframe, feed, adjustment, ts, open, high, low, close, volume, trade_count, vwap, " \
    "final, fetched_at"
#define BAR_KEY "symbol, timeframe, feed, adjustment, ts"

/* fetched_at says when the values stored were fetched: an unchanged re-fetch
 * leaves the row (and its fetched_at) alone; a bar turning final is a change,
 * and a final bar is never replaced by one that is not (a late write of an
 * older fetch, or another host's intraday run). */
#define UPSERT_SET                                                                                 \
    "ON CONFLICT (" BAR_KEY ") DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, "         \
    "low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume, "                       \
    "trade_count = EXCLUDED.trade_count, vwap = EXCLUDED.vwap, final = EXCLUDED.final, "           \
    "fetched_at = EXCLUDED.fetched_at "                                                            \
    "WHERE (b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap, b.final) "            \
    "IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, "               \
    "EXCLUDED.volume, EXCLUDED.trade_count, EXCLUDED.vwap, EXCLUDED.final) "                       \
    "AND (EXCLUDED.final OR NOT b.final)"

/* The upsert when the stage may hold a key twice (ON CONFLICT may touch a row only once). */
static const char upsert_distinct_sql[] =
    "INSERT INTO bars AS b (" BAR_COLS ") "
    "SELECT DISTINCT ON (" BAR_KEY ") " BAR_COLS " FROM bars_stage "
    "ORDER BY " BAR_KEY ", final DESC, fetched_at DESC " UPSERT_SET;

/* The upsert when every key in the stage is unique (checked in C): no sort. */
static const char upsert_sql[] =
    "INSERT INTO bars AS b (" BAR_COLS ") SELECT " BAR_COLS " FROM bars_stage " UPSERT_SET;

/* Which pages' spans hold stored bars: a row per such page, its 1-based index, in order. */
static const char probe_sql[] =
    "SELECT r.i FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], "
    "$6::timestamptz[]) WITH ORDINALITY AS r(s, t, f, a, lo, hi, i) "
    "WHERE EXISTS (SELECT 1 FROM bars b WHERE b.symbol = r.s AND b.timeframe = r.t "
    "AND b.feed = r.f AND b.adjustment = r.a AND b.ts >= r.lo AND b.ts <= r.hi) ORDER BY r.i";

static void txn_init(struct txn *b)
{
    memset(b, 0, sizeof *b);
    copyenc_init(&b->enc, STORE_BUF_CAP);
    b->unique = true;
}

static void txn_free(struct txn *b)
{
    copyenc_free(&b->enc);
    free(b->items);
    free(b->series);
    memset(b, 0, sizeof *b);
}

static void submit(struct writer *w);
static void probe(struct writer *w);
static void flush_all(store_t *s);

/* Appends "{a,b,c}" built from one field of every final item (4: here[i]). */
static void array_lit(dynbuf_t *d, const struct txn *b, int which, const int64_t *here)
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
                      : which == 3 ? it->pages
                                   : here[i];
        rc |= dynbuf_printf(d, first ? "%lld" : ",%lld", v);
        first = false;
    }
    rc |= dynbuf_append(d, "}", 1);
    (void)rc; /* bounded by the transaction's size; the cap is far above it */
}

/* Appends the probe's arrays over the items with bars: which 0 symbols, 1
 * timeframes, 2 feeds, 3 adjustments, 4 span starts, 5 span ends. */
static void span_lit(dynbuf_t *d, const struct txn *b, int which)
{
    bool first = true;
    int rc = dynbuf_append(d, "{", 1);
    for (size_t i = 0; i < b->nitems; i++) {
        const struct item *it = &b->items[i];
        if (it->nbars == 0)
            continue;
        const struct series *se = &b->series[it->series];
        char t[32];
        const char *v = se->symbol;
        if (which == 1)
            v = se->timeframe;
        else if (which == 2)
            v = se->feed;
        else if (which == 3)
            v = se->adjustment;
        else if (which == 4)
            bars_format_time(it->lo_us, t, sizeof t); /* whole seconds, rounded down */
        else if (which == 5)
            bars_format_time(it->hi_us + 999999, t, sizeof t); /* and up */
        if (which >= 4)
            v = t;
        /* Validated names ([A-Za-z0-9._,-], checked by the schema): quoting is enough. */
        rc |= dynbuf_printf(d, first ? "\"%s\"" : ",\"%s\"", v);
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

/* --- building transactions --------------------------------------------------------- */

static bool series_is(const struct series *se, const struct copyenc_series *k)
{
    return strcmp(se->symbol, k->symbol) == 0 && strcmp(se->timeframe, k->timeframe) == 0 &&
           strcmp(se->feed, k->feed) == 0 && strcmp(se->adjustment, k->adjustment) == 0;
}

/* The transaction's entry for series k, added if new. */
static size_t series_of(struct txn *b, const struct copyenc_series *k)
{
    size_t i = b->last_series;
    if (i < b->nseries && series_is(&b->series[i], k))
        return i;
    for (i = 0; i < b->nseries; i++)
        if (series_is(&b->series[i], k))
            break;
    if (i == b->nseries) {
        if (b->nseries == b->capseries) {
            b->capseries = b->capseries ? b->capseries * 2 : 16;
            b->series = xrealloc(b->series, b->capseries * sizeof(*b->series));
        }
        struct series *se = &b->series[b->nseries++];
        memset(se, 0, sizeof *se);
        if (strlen(k->symbol) >= sizeof se->symbol ||
            strlen(k->timeframe) >= sizeof se->timeframe || strlen(k->feed) >= sizeof se->feed ||
            strlen(k->adjustment) >= sizeof se->adjustment) {
            /* Not a name this table can tell apart: no shortcut for this transaction. */
            b->all_staged = true;
            b->unique = false;
        }
        strlcpy_trunc(se->symbol, sizeof se->symbol, k->symbol);
        strlcpy_trunc(se->timeframe, sizeof se->timeframe, k->timeframe);
        strlcpy_trunc(se->feed, sizeof se->feed, k->feed);
        strlcpy_trunc(se->adjustment, sizeof se->adjustment, k->adjustment);
        se->lo_us = INT64_MAX;
        se->hi_us = INT64_MIN;
    }
    b->last_series = i;
    return i;
}

/* Adds an item's span to its series; clears b->unique when a key may repeat. */
static size_t note_span(struct txn *b, const struct copyenc_series *key, const struct item *it)
{
    size_t k = series_of(b, key);
    struct series *se = &b->series[k];
    if (!it->ascending || (it->lo_us <= se->hi_us && it->hi_us >= se->lo_us))
        b->unique = false; /* a key twice in the page, or a page overlapping another */
    if (it->lo_us < se->lo_us)
        se->lo_us = it->lo_us;
    if (it->hi_us > se->hi_us)
        se->hi_us = it->hi_us;
    return k;
}

static struct item *item_push(struct txn *b)
{
    if (b->nitems == b->capitems) {
        b->capitems = b->capitems ? b->capitems * 2 : 16;
        b->items = xrealloc(b->items, b->capitems * sizeof(*b->items));
    }
    return &b->items[b->nitems++];
}

/* Appends src's item (its encoded rows and its span) to dst. */
static void item_move(struct txn *dst, const struct txn *src, const struct item *it)
{
    struct item *n = item_push(dst);
    *n = *it;
    n->off = dst->enc.buf.len;
    if (dynbuf_append(&dst->enc.buf, src->enc.buf.data + it->off, it->len) < 0) {
        /* Cannot happen: dst holds a subset of what src held under the same cap. */
        LOG(LL_CRIT, "copy stream overflow", F_I64("rows", (int64_t)src->enc.rows));
        abort();
    }
    dst->enc.rows += (size_t)it->nbars;
    if (it->nbars > 0) {
        const struct series *se = &src->series[it->series];
        const struct copyenc_series key = {se->symbol, se->timeframe, se->feed, se->adjustment};
        n->series = note_span(dst, &key, it);
    }
}

/* What the transactions in flight hold, sorted for lookups: their runs and series. */
struct busy {
    struct runkey {
        int64_t run_id;
        int attempt;
    } * runs;
    const struct series **series;
    size_t nruns, nseries;
};

static int runkey_cmp(const void *a, const void *b)
{
    const struct runkey *x = a, *y = b;
    if (x->run_id != y->run_id)
        return x->run_id < y->run_id ? -1 : 1;
    return (x->attempt > y->attempt) - (x->attempt < y->attempt);
}

/* A run's attempt (first, for runkey_cmp) and one of its items, for here_of. */
struct run_item {
    struct runkey k;
    size_t i;
};

/* here[i] for every item i: the bars of its run (id and attempt) in this
 * transaction, over all its items. A final item whose run has all its bars
 * here needs no count of what is stored (complete_job_runs, schema 8). -1
 * for every item when a key may be in the transaction twice (b->unique is
 * false): stored rows may then be fewer than the bars written, and the
 * count must decide, as it did before schema 8. */
static int64_t *here_of(const struct txn *b)
{
    size_t n = b->nitems;
    int64_t *here = xcalloc(n + 1, sizeof *here);
    struct run_item *ri = xcalloc(n + 1, sizeof *ri);
    for (size_t i = 0; i < n; i++)
        ri[i] = (struct run_item){{b->items[i].run_id, b->items[i].attempt}, i};
    qsort(ri, n, sizeof *ri, runkey_cmp);
    for (size_t lo = 0, hi; lo < n; lo = hi) {
        int64_t sum = 0;
        for (hi = lo; hi < n && runkey_cmp(&ri[hi], &ri[lo]) == 0; hi++)
            sum += b->items[ri[hi].i].nbars;
        for (size_t k = lo; k < hi; k++)
            here[ri[k].i] = b->unique ? sum : -1;
    }
    free(ri);
    return here;
}

static int series_cmp(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a;
    const struct series *y = *(const struct series *const *)b;
    int c = strcmp(x->symbol, y->symbol);
    return c ? c : strcmp(x->timeframe, y->timeframe);
}

static void busy_init(struct busy *u, const store_t *s)
{
    memset(u, 0, sizeof *u);
    size_t nr = 0, ns = 0;
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].inflight) {
            nr += s->w[k].inflight->nitems;
            ns += s->w[k].inflight->nseries;
        }
    u->runs = xmalloc((nr ? nr : 1) * sizeof *u->runs);
    u->series = xmalloc((ns ? ns : 1) * sizeof *u->series);
    for (size_t k = 0; k < s->nw; k++) {
        const struct txn *f = s->w[k].inflight;
        if (!f)
            continue;
        for (size_t i = 0; i < f->nitems; i++)
            u->runs[u->nruns++] = (struct runkey){f->items[i].run_id, f->items[i].attempt};
        for (size_t i = 0; i < f->nseries; i++)
            u->series[u->nseries++] = &f->series[i];
    }
    qsort(u->runs, u->nruns, sizeof *u->runs, runkey_cmp);
    qsort(u->series, u->nseries, sizeof *u->series, series_cmp);
}

static void busy_free(struct busy *u)
{
    free(u->runs);
    free(u->series);
}

/* Whether this item may join a transaction now: none in flight has its run,
 * or bars of its series (symbol and timeframe: feeds and adjustments are not
 * told apart here, which only holds back more) in a span that meets its own.
 * Disjoint spans are disjoint keys: the months of one symbol go to two
 * writers side by side, and neither waits on the other's rows. */
static bool item_free(const struct busy *u, const struct txn *b, const struct item *it)
{
    struct runkey key = {it->run_id, it->attempt};
    if (u->nruns && bsearch(&key, u->runs, u->nruns, sizeof *u->runs, runkey_cmp))
        return false;
    if (it->nbars == 0)
        return true;
    const struct series *mine = &b->series[it->series];
    size_t lo = 0, hi = u->nseries; /* the first entry not before mine */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (series_cmp(&u->series[mid], &mine) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = lo; k < u->nseries && series_cmp(&u->series[k], &mine) == 0; k++)
        if (it->lo_us <= u->series[k]->hi_us && it->hi_us >= u->series[k]->lo_us)
            return false;
    return true;
}

/*
 * What stays buffered so far in take_ready's walk, in order: no later item
 * may pass one of its own run that stays, nor one of its series whose span
 * meets its own. The second is for two runs over the same bars (two
 * definitions of one series, or a refetch): the later fetch must commit
 * after the earlier, as it would in one transaction, where the upsert keeps
 * the newest (DISTINCT ON … fetched_at DESC); in two, the last commit wins.
 */
struct stay {
    struct stay_span {
        const struct series *se;
        int64_t lo_us, hi_us;
    } * spans;
    struct runkey *runs;
    size_t nspans, nruns;
};

static void stay_add(struct stay *st, const struct txn *f, const struct item *it)
{
    st->runs[st->nruns++] = (struct runkey){it->run_id, it->attempt};
    if (it->nbars > 0)
        st->spans[st->nspans++] = (struct stay_span){&f->series[it->series], it->lo_us, it->hi_us};
}

static bool stay_blocks(const struct stay *st, const struct txn *f, const struct item *it)
{
    for (size_t k = 0; k < st->nruns; k++)
        if (st->runs[k].run_id == it->run_id && st->runs[k].attempt == it->attempt)
            return true;
    if (it->nbars == 0)
        return false;
    const struct series *mine = &f->series[it->series];
    for (size_t k = 0; k < st->nspans; k++)
        if (it->lo_us <= st->spans[k].hi_us && it->hi_us >= st->spans[k].lo_us &&
            series_cmp(&st->spans[k].se, &mine) == 0)
            return true;
    return false;
}

/* A writer's share of the rows buffered and in flight (see take_ready). */
static size_t share_rows(const store_t *s)
{
    size_t n = store_backlog(s), share = (n + s->nw - 1) / s->nw;
    return share > STORE_SHARE_MIN_ROWS ? share : STORE_SHARE_MIN_ROWS;
}

/*
 * Takes what may be written now out of the buffer: all of it when nothing in
 * flight shares a run or a series' span with it and it is within this
 * writer's share (the common case: no copying), else the items that may go,
 * in order, up to the share; the rest stays buffered. None passes an item
 * that stays of its own run, or of its series over the same span (struct
 * stay). NULL when none may go.
 *
 * The share is the rows buffered and in flight over the writers, at least
 * STORE_SHARE_MIN_ROWS: one writer that takes a whole backlog leaves the
 * others idle once the fetching ends (issue #11: a 155,000-row transaction
 * on one session while the other had nothing to do).
 */
static struct txn *take_ready(store_t *s)
{
    struct txn *f = &s->filling;
    struct busy u;
    busy_init(&u, s);
    bool *ok = xcalloc(f->nitems ? f->nitems : 1, sizeof *ok);
    size_t nok = 0;
    struct runkey *held = xmalloc((f->nitems ? f->nitems : 1) * sizeof *held);
    size_t nheld = 0;
    for (size_t i = 0; i < f->nitems; i++) {
        ok[i] = item_free(&u, f, &f->items[i]);
        if (!ok[i])
            held[nheld++] = (struct runkey){f->items[i].run_id, f->items[i].attempt};
    }
    busy_free(&u);
    /* A run's pages go in order: none may pass one of its own that waits (an
     * empty final page has no series, so only this catches it). */
    qsort(held, nheld, sizeof *held, runkey_cmp);
    size_t share = share_rows(s), rows = 0;
    struct stay st = {.spans = xmalloc((f->nitems ? f->nitems : 1) * sizeof *st.spans),
                      .runs = xmalloc((f->nitems ? f->nitems : 1) * sizeof *st.runs)};
    for (size_t i = 0; i < f->nitems; i++) {
        const struct item *it = &f->items[i];
        struct runkey key = {it->run_id, it->attempt};
        if (ok[i] && nheld && bsearch(&key, held, nheld, sizeof *held, runkey_cmp))
            ok[i] = false;
        if (ok[i] && stay_blocks(&st, f, it))
            ok[i] = false;
        /* Past the share nothing more goes: a suffix stays, so runs stay in order. */
        if (ok[i] && nok > 0 && rows + (size_t)it->nbars > share)
            share = 0;
        if (ok[i] && share == 0)
            ok[i] = false;
        if (ok[i])
            rows += (size_t)it->nbars;
        else if (share != 0)
            stay_add(&st, f, it); /* (past the cut every later item stays anyway) */
        nok += ok[i];
    }
    free(st.spans);
    free(st.runs);
    free(held);
    struct txn *b = NULL;
    if (nok == f->nitems) {
        b = xmalloc(sizeof *b);
        *b = *f;
        txn_init(f);
    } else if (nok > 0) {
        struct txn keep;
        b = xmalloc(sizeof *b);
        txn_init(b);
        txn_init(&keep);
        b->all_staged = keep.all_staged = f->all_staged;
        for (size_t i = 0; i < f->nitems; i++)
            item_move(ok[i] ? b : &keep, f, &f->items[i]);
        txn_free(f);
        *f = keep;
    }
    free(ok);
    if (b && copyenc_finish(&b->enc) < 0) {
        /* Cannot happen: the cap always leaves room for the trailer. */
        LOG(LL_CRIT, "copy stream overflow", F_I64("rows", (int64_t)b->enc.rows));
        abort();
    }
    return b;
}

static bool item_staged(const struct txn *b, const struct item *it)
{
    return b->all_staged || it->stored;
}

/* The COPY stream of the rows that go straight into bars (direct) or through the stage. */
static char *stream_of(const struct txn *b, bool direct, size_t *len)
{
    const dynbuf_t *e = &b->enc.buf;
    size_t n = 0;
    bool all = true;
    for (size_t i = 0; i < b->nitems; i++) {
        const struct item *it = &b->items[i];
        if (it->nbars == 0)
            continue;
        if (item_staged(b, it) != direct)
            n += it->len;
        else
            all = false;
    }
    char *out;
    if (all) { /* the common case: the whole stream as encoded */
        out = xmalloc(e->len);
        memcpy(out, e->data, e->len);
        *len = e->len;
        return out;
    }
    out = xmalloc(COPY_HEADER_LEN + n + COPY_TRAILER_LEN);
    memcpy(out, e->data, COPY_HEADER_LEN);
    size_t at = COPY_HEADER_LEN;
    for (size_t i = 0; i < b->nitems; i++) {
        const struct item *it = &b->items[i];
        if (it->nbars > 0 && item_staged(b, it) != direct) {
            memcpy(out + at, e->data + it->off, it->len);
            at += it->len;
        }
    }
    memcpy(out + at, e->data + e->len - COPY_TRAILER_LEN, COPY_TRAILER_LEN);
    *len = at + COPY_TRAILER_LEN;
    return out;
}

/* --- the write transaction --------------------------------------------------------- */

static void on_done(void *arg, int status, const char *err, const char *sqlstate,
                    PGresult *const *res, int nres)
{
    struct writer *w = arg;
    store_t *s = w->s;
    struct txn *b = w->inflight;
    if (status == DB_ECONN && !s->closing) {
        /* Outcome unknown; the write is idempotent (a direct COPY that did
         * commit fails as a unique violation and is redone through the
         * upsert) and completion fenced: send it again. */
        LOG(LL_WARN, "write retried after reconnect", F_I64("rows", (int64_t)b->enc.rows),
            F_STR("error", err));
        submit(w);
        return;
    }
    if (status == DB_ESQL && !s->closing && b->kept_direct >= 0 && !b->all_staged &&
        strcmp(sqlstate, "23505") == 0) {
        /* A span the probe found empty was not (another host, a key twice, or
         * a commit of ours that did happen): the transaction was rolled back
         * whole; redo it through the upsert. */
        LOG(LL_INFO, "direct write met stored bars; written through the upsert",
            F_I64("rows", (int64_t)b->enc.rows), F_STR("error", err));
        b->all_staged = true;
        submit(w);
        return;
    }
    if (status == DB_ESQL && !s->closing && b->kept_upsert >= 0 && !b->distinct &&
        strcmp(sqlstate, "21000") == 0) {
        LOG(LL_WARN, "a key twice in one write; written with DISTINCT ON",
            F_I64("rows", (int64_t)b->enc.rows), F_STR("error", err));
        b->distinct = true;
        submit(w);
        return;
    }
    w->inflight = NULL;
    double ms = (double)(mono_ms() - b->started_ms);
    if (status == DB_OK) {
        int64_t direct = 0, changed = 0;
        if (b->kept_direct >= 0 && b->kept_direct < nres)
            parse_i64(PQcmdTuples(res[b->kept_direct]), 0, INT64_MAX, &direct);
        if (b->kept_upsert >= 0 && b->kept_upsert < nres)
            parse_i64(PQcmdTuples(res[b->kept_upsert]), 0, INT64_MAX, &changed);
        LOG(LL_DEBUG, "write committed", F_I64("rows", (int64_t)b->enc.rows),
            F_I64("direct", direct), F_I64("changed", changed), F_I64("items", (int64_t)b->nitems),
            F_I64("writer", (int64_t)(w - s->w)), F_DBL("ms", ms));
        PGresult *done = b->kept_done >= 0 && b->kept_done < nres ? res[b->kept_done] : NULL;
        for (size_t i = 0; i < b->nitems; i++) {
            struct item *it = &b->items[i];
            if (it->owner && s->cbs.committed)
                s->cbs.committed(it->owner, it->nbars, it->final,
                                 it->final && id_in(done, it->run_id));
        }
    } else {
        LOG(LL_ERROR, "write failed", F_I64("rows", (int64_t)b->enc.rows),
            F_I64("items", (int64_t)b->nitems), F_STR("error", err), F_STR("sqlstate", sqlstate));
        /* A run with a page in this transaction must not be completed by its
         * final page waiting in the next one: it would be succeeded with a gap.
         * (Its pages are in no other transaction in flight: see take_ready.) */
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
    if (s->closing)
        return;
    if (s->cbs.drained)
        s->cbs.drained(s->cbs.arg, status == DB_OK, rows, ms);
    flush_all(s);
}

static void submit(struct writer *w)
{
    store_t *s = w->s;
    struct txn *b = w->inflight;
    b->started_ms = mono_ms();
    db_req_t *r = db_req_new(on_done, w, true);
    int64_t direct = 0, staged = 0;
    bool finals = false;
    for (size_t i = 0; i < b->nitems; i++) {
        const struct item *it = &b->items[i];
        finals |= it->final;
        if (it->nbars > 0 && item_staged(b, it))
            staged += it->nbars;
        else
            direct += it->nbars;
    }
    int kept = 0;
    b->kept_direct = b->kept_upsert = b->kept_done = -1;
    size_t len;
    if (direct > 0) {
        /* Spans with nothing stored: straight into bars, as fast as Postgres
         * ingests. No row there to update, so no version of one is made. */
        char *copy = stream_of(b, true, &len);
        db_req_copy(r, "COPY bars (" BAR_COLS ") FROM STDIN (FORMAT binary)", copy, len);
        db_req_keep(r);
        b->kept_direct = kept++;
    }
    if (staged > 0) {
        /* Created inside the transaction, not once per session: behind a
         * transaction-mode pooler each transaction may land on another server
         * connection. When it exists already this costs a notice, nothing more. */
        db_req_sql(r,
                   "CREATE TEMP TABLE IF NOT EXISTS bars_stage (LIKE bars) ON COMMIT DELETE ROWS",
                   0, NULL);
        char *copy = stream_of(b, false, &len);
        db_req_copy(r, "COPY bars_stage (" BAR_COLS ") FROM STDIN (FORMAT binary)", copy, len);
        db_req_sql(r, b->unique && !b->distinct ? upsert_sql : upsert_distinct_sql, 0, NULL);
        db_req_keep(r);
        b->kept_upsert = kept++;
    }
    if (finals) {
        dynbuf_t a[5];
        const char *params[6];
        int64_t *here = here_of(b);
        params[0] = s->worker;
        for (int k = 0; k < 5; k++) {
            dynbuf_init(&a[k], (size_t)1 << 26);
            array_lit(&a[k], b, k, here);
            params[k + 1] = a[k].data;
        }
        db_req_sql(r,
                   "SELECT * FROM complete_job_runs($1, $2::bigint[], $3::int[], $4::bigint[], "
                   "$5::int[], $6::bigint[])",
                   6, params);
        db_req_keep(r);
        b->kept_done = kept++;
        for (int k = 0; k < 5; k++)
            dynbuf_free(&a[k]);
        free(here);
    }
    db_submit(w->db, r);
}

static void on_probed(void *arg, int status, const char *err, const char *sqlstate,
                      PGresult *const *res, int nres)
{
    struct writer *w = arg;
    struct txn *b = w->inflight;
    if (w->s->closing || status == DB_ECLOSED) {
        on_done(arg, status, err, sqlstate, NULL, 0); /* fails the transaction's pages */
        return;
    }
    if (status == DB_ECONN) {
        probe(w); /* nothing was written: ask again once reconnected */
        return;
    }
    if (status == DB_OK && nres == 1) {
        /* The answer is sorted by ordinality: walk it alongside the items with bars. */
        size_t at = 0;
        int64_t seen = 0;
        for (int i = 0; i < PQntuples(res[0]); i++) {
            int64_t k;
            if (!parse_i64(PQgetvalue(res[0], i, 0), 1, INT64_MAX, &k))
                continue;
            for (; at < b->nitems; at++) {
                if (b->items[at].nbars == 0)
                    continue;
                if (++seen == k) {
                    b->items[at++].stored = true;
                    break;
                }
            }
        }
    } else {
        /* Cannot tell which spans are empty: the upsert is right for all of them. */
        LOG(LL_WARN, "probe for stored bars failed; writing through the upsert",
            F_STR("error", err), F_STR("sqlstate", sqlstate));
        b->all_staged = true;
    }
    submit(w);
}

/* Asks which pages of the transaction have bars stored in their span already. */
static void probe(struct writer *w)
{
    struct txn *b = w->inflight;
    db_req_t *r = db_req_new(on_probed, w, false);
    dynbuf_t a[6];
    const char *params[6];
    for (int k = 0; k < 6; k++) {
        dynbuf_init(&a[k], (size_t)1 << 26);
        span_lit(&a[k], b, k);
        params[k] = a[k].data;
    }
    db_req_sql(r, probe_sql, 6, params);
    db_req_keep(r);
    for (int k = 0; k < 6; k++)
        dynbuf_free(&a[k]);
    db_submit(w->db, r);
}

/* A writer with nothing in flight, connected ones first; NULL when all are busy. */
static struct writer *free_writer(store_t *s)
{
    struct writer *any = NULL;
    for (size_t k = 0; k < s->nw; k++) {
        struct writer *w = &s->w[k];
        if (w->inflight)
            continue;
        if (db_conn_is_up(w->db))
            return w;
        if (!any)
            any = w;
    }
    return any;
}

/* Starts a transaction on every free writer while buffered pages may go. */
static void flush_all(store_t *s)
{
    while (!s->closing && s->filling.nitems > 0) {
        struct writer *w = free_writer(s);
        if (!w)
            return;
        struct txn *b = take_ready(s);
        if (!b)
            return; /* what is buffered waits for a transaction in flight */
        w->inflight = b;
        if (b->enc.rows > 0 && !b->all_staged)
            probe(w);
        else
            submit(w);
    }
}

void store_flush(store_t *s)
{
    flush_all(s);
}

int store_add(store_t *s, const struct store_page *pg)
{
    struct txn *b = &s->filling;
    size_t rows_before = b->enc.rows, len_before = b->enc.buf.len;
    const struct copyenc_series key = {pg->symbol, pg->timeframe, pg->feed, pg->adjustment};
    for (size_t i = 0; i < pg->n; i++) {
        /* Final once it closed the settling delay before the fetch. */
        bool final = bars_bar_end_us(pg->timeframe, pg->bars[i].ts_us) <= pg->settled_us;
        if (copyenc_add(&b->enc, &key, &pg->bars[i], final, pg->fetched_us) < 0) {
            /* Roll the partial page back: a page is written whole or not at all. */
            b->enc.rows = rows_before;
            b->enc.buf.len = len_before;
            LOG(LL_ERROR, "page too large to buffer", F_I64("job_id", pg->run_id),
                F_STR("symbol", pg->symbol), F_I64("bars", (int64_t)pg->n));
            return -1;
        }
    }
    struct item it = {.owner = pg->owner,
                      .run_id = pg->run_id,
                      .attempt = pg->attempt,
                      .nbars = (int64_t)pg->n,
                      .total_bars = pg->total_bars,
                      .pages = pg->pages,
                      .final = pg->final,
                      .ascending = true,
                      .off = len_before,
                      .len = b->enc.buf.len - len_before};
    if (pg->n > 0) {
        it.lo_us = it.hi_us = pg->bars[0].ts_us;
        for (size_t i = 1; i < pg->n; i++) {
            int64_t t = pg->bars[i].ts_us;
            if (t <= pg->bars[i - 1].ts_us)
                it.ascending = false;
            if (t < it.lo_us)
                it.lo_us = t;
            if (t > it.hi_us)
                it.hi_us = t;
        }
        it.series = note_span(b, &key, &it);
    }
    *item_push(b) = it;
    /* Group commit: write at once when a session is free; whatever arrives
     * while the writers are busy becomes the next transactions. Under load they
     * grow by themselves, and an idle writer adds no latency. */
    flush_all(s);
    return 0;
}

store_t *store_new(uv_loop_t *loop, db_conn_t *db, const char *conninfo, int writers,
                   const char *worker_id, const struct store_cbs *cbs)
{
    store_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->worker = xstrdup(worker_id);
    s->cbs = *cbs;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    txn_init(&s->filling);
    if (writers < 1)
        writers = 1;
    s->nw = (size_t)writers;
    s->w = xcalloc(s->nw, sizeof *s->w);
    for (size_t k = 0; k < s->nw; k++) {
        struct writer *w = &s->w[k];
        w->s = s;
        if (k == 0) {
            w->db = db;
            continue;
        }
        char name[32];
        snprintf(name, sizeof name, "writer%zu", k + 1);
        w->db = db_conn_new(loop, conninfo, name, NULL);
        w->owned = true;
        db_conn_start(w->db);
    }
    return s;
}

size_t store_backlog(const store_t *s)
{
    size_t n = s->filling.enc.rows;
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].inflight)
            n += s->w[k].inflight->enc.rows;
    return n;
}

bool store_idle(const store_t *s)
{
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].inflight)
            return false;
    return s->filling.nitems == 0;
}

static void forget_in(struct txn *b, void *owner)
{
    for (size_t i = 0; i < b->nitems; i++)
        if (b->items[i].owner == owner)
            b->items[i].owner = NULL;
}

void store_forget(store_t *s, void *owner)
{
    forget_in(&s->filling, owner);
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].inflight)
            forget_in(s->w[k].inflight, owner);
}

static void on_timer_closed(uv_handle_t *h)
{
    store_t *s = h->data;
    txn_free(&s->filling);
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].inflight) {
            txn_free(s->w[k].inflight);
            free(s->w[k].inflight);
        }
    free(s->w);
    free(s->worker);
    free(s);
}

void store_close(store_t *s)
{
    if (!s)
        return;
    s->closing = true;
    /* The sessions the store opened: their queued requests fail here (callbacks
     * run now, and see closing); the caller's session is the caller's to close. */
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].owned) {
            db_conn_close(s->w[k].db, NULL, NULL);
            s->w[k].db = NULL;
        }
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}
