/*
 * bars: turns an Alpaca bars response body into plain C arrays.
 *
 * Alpaca's bars endpoints answer with JSON whose shape the rest of backfilld
 * must not have to know about, so this module is the only place that parses
 * it. A page is accepted or rejected as a whole: a bar with a missing key, a
 * number where a string belongs, a fractional volume or a timestamp that does
 * not move forward means the page is corrupt or mis-merged, and writing half
 * of it would put a silent hole into the bars table. Every error names the
 * symbol, the bar index and the key, because the message ends up in
 * job_runs.last_error and has to be enough for an operator to find the bar.
 *
 * Timestamps are converted with our own calendar arithmetic instead of
 * timegm() or mktime(), so the result never depends on TZ or on libc.
 */
#include "bars.h"

#include "jsonscan.h"
#include "timeframe.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define US_PER_SEC INT64_C(1000000)
#define SEC_PER_DAY INT64_C(86400)
#define US_PER_DAY (SEC_PER_DAY * US_PER_SEC)

/* 2^63 as a double; every double below it converts to int64_t without overflow. */
#define TWO_POW_63 9223372036854775808.0

/* Where a bar sits in the body, so that every message can point at it. */
struct bar_ctx {
    const char *symbol;
    size_t index;
    char *err;
    size_t errlen;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes a message into err; vsnprintf truncates and always terminates. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * Parses exactly one JSON value from body[0..len). cJSON_ParseWithLength alone
 * stops after the first value and accepts whatever follows, so a body with
 * trailing bytes (two responses glued together, say) is rejected here by
 * checking that only whitespace remains. Only error bodies come here; pages
 * are read by jsonscan, without a tree.
 */
static cJSON *parse_body(const char *body, size_t len)
{
    const char *end = NULL;
    cJSON *root;

    if (body == NULL || len == 0)
        return NULL;
    root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (root == NULL)
        return NULL;
    if (end == NULL || end < body || end > body + len) {
        cJSON_Delete(root);
        return NULL;
    }
    for (; end < body + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Reads exactly n decimal digits. It stops at the first non-digit, so it
 * never reads past a NUL that ends the string early.
 */
static bool read_digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && is_leap(y))
        return 29;
    return dim[m - 1];
}

/*
 * Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). Eras of 400 years make the leap rules a table lookup.
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int bars_parse_time(const char *s, int64_t *us_out)
{
    int year, mon, day, hour = 0, min = 0, sec = 0, oh = 0, om = 0, sign = 0;
    int64_t frac_us = 0, secs;
    const char *p;

    if (s == NULL || us_out == NULL)
        return -1;
    if (!read_digits(s, 4, &year) || s[4] != '-' || !read_digits(s + 5, 2, &mon) || s[7] != '-' ||
        !read_digits(s + 8, 2, &day))
        return -1;
    if (year < 1970 || year > 9999 || mon < 1 || mon > 12 || day < 1 ||
        day > days_in_month(year, mon))
        return -1;
    p = s + 10;
    if (*p != '\0') {
        /* RFC 3339 lets "T" and "Z" be lower case; it does not allow a space here. */
        if (*p != 'T' && *p != 't')
            return -1;
        if (!read_digits(p + 1, 2, &hour) || p[3] != ':' || !read_digits(p + 4, 2, &min) ||
            p[6] != ':' || !read_digits(p + 7, 2, &sec))
            return -1;
        /* Alpaca never sends leap seconds, so second 60 is treated as garbage. */
        if (hour > 23 || min > 59 || sec > 59)
            return -1;
        p += 9;
        if (*p == '.') {
            int ndig = 0;

            for (p++; is_digit(*p); p++, ndig++) {
                if (ndig >= 9)
                    return -1;
                if (ndig < 6)
                    frac_us = frac_us * 10 + (*p - '0');
            }
            if (ndig == 0)
                return -1;
            for (; ndig < 6; ndig++)
                frac_us *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p == '+' ? 1 : -1;
            if (!read_digits(p + 1, 2, &oh) || p[3] != ':' || !read_digits(p + 4, 2, &om))
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            p += 6;
        } else {
            /* A time without an offset is local time of an unknown zone. */
            return -1;
        }
        if (*p != '\0')
            return -1;
    }
    /* "+05:00" means local time runs ahead of UTC, so the offset is subtracted. */
    secs = days_from_civil(year, mon, day) * SEC_PER_DAY + hour * 3600 + min * 60 + sec -
           sign * (oh * 3600 + om * 60);
    *us_out = secs * US_PER_SEC + frac_us;
    return 0;
}

/* The n-th (1-based; 0 = last) Sunday of a month, as days since the epoch. */
static int64_t nth_sunday(int64_t y, int m, int n)
{
    int64_t first = days_from_civil(y, m, 1);
    /* 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) mod 7. */
    int64_t wd = ((first + 4) % 7 + 7) % 7;
    int64_t sun = first + (7 - wd) % 7;
    if (n > 0)
        return sun + 7 * (n - 1);
    int64_t last = sun;
    while (last + 7 < first + days_in_month((int)y, m))
        last += 7;
    return last;
}

/* The local dates whose 02:00 starts and ends daylight saving time in year y;
 * false for a year without it. */
static bool ny_dst_days(int64_t y, int64_t *start, int64_t *end)
{
    if (y >= 2007) {
        *start = nth_sunday(y, 3, 2);
        *end = nth_sunday(y, 11, 1);
    } else if (y >= 1987) {
        *start = nth_sunday(y, 4, 1);
        *end = nth_sunday(y, 10, 0);
    } else if (y == 1974 || y == 1975) {
        /* The energy crisis: January 6, 1974 and February 23, 1975. */
        *start = days_from_civil(y, y == 1974 ? 1 : 2, y == 1974 ? 6 : 23);
        *end = nth_sunday(y, 10, 0);
    } else if (y >= 1967) {
        *start = nth_sunday(y, 4, 0);
        *end = nth_sunday(y, 10, 0);
    } else {
        return false;
    }
    return true;
}

#define NY_EST_S (5 * 3600)
#define NY_EDT_S (4 * 3600)

int64_t bars_ny_midnight_us(int64_t day)
{
    int64_t y, start, end;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    /* At 00:00 the change of that day (02:00) has not happened yet. */
    bool dst = ny_dst_days(y, &start, &end) && day > start && day <= end;
    return (day * SEC_PER_DAY + (dst ? NY_EDT_S : NY_EST_S)) * INT64_C(1000000);
}

static int64_t floor_div64(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int64_t bars_ny_day(int64_t us)
{
    int64_t s = floor_div64(us, INT64_C(1000000));
    int64_t y, start, end;
    int m, d;
    civil_from_days(floor_div64(s - NY_EST_S, SEC_PER_DAY), &y, &m, &d);
    bool dst = false;
    if (ny_dst_days(y, &start, &end))
        /* 02:00 EST on the start day is 07:00Z; 02:00 EDT on the end day is 06:00Z. */
        dst = s >= start * SEC_PER_DAY + 7 * 3600 && s < end * SEC_PER_DAY + 6 * 3600;
    return floor_div64(s - (dst ? NY_EDT_S : NY_EST_S), SEC_PER_DAY);
}

int64_t bars_bar_end_us(const char *tf, int64_t us)
{
    int64_t secs = tf_seconds(tf);
    if (secs == 0)
        return 0;
    if (strcmp(tf, "d1") == 0)
        return bars_ny_midnight_us(bars_ny_day(us) + 1);
    if (strcmp(tf, "w1") == 0)
        return bars_ny_midnight_us(bars_ny_day(us) + 7);
    if (strcmp(tf, "mn1") == 0) {
        int64_t y;
        int m, d;
        civil_from_days(bars_ny_day(us), &y, &m, &d);
        return bars_ny_midnight_us(m == 12 ? days_from_civil(y + 1, 1, 1)
                                           : days_from_civil(y, m + 1, 1));
    }
    return us + secs * INT64_C(1000000);
}

void bars_format_time(int64_t us, char *buf, size_t len)
{
    int64_t days, rem, year;
    int mon, day;

    if (buf == NULL || len == 0)
        return;
    /* Floor division keeps pre-epoch instants on the right day instead of crashing. */
    days = us / US_PER_DAY;
    rem = us % US_PER_DAY;
    if (rem < 0) {
        days--;
        rem += US_PER_DAY;
    }
    rem /= US_PER_SEC;
    civil_from_days(days, &year, &mon, &day);
    snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)year, mon, day,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60));
}

enum bar_key_id { BK_T, BK_O, BK_H, BK_L, BK_C, BK_V, BK_N, BK_VW, BK_COUNT };

/* A bar's eight members: where each value starts (NULL when absent), and numbers already read. */
struct bar_items {
    const char *at[BK_COUNT];
    double num[BK_COUNT];
};

/* The bar key of a (decoded) name s of length n, or -1 for any other key. */
static int bar_key_id(const char *s, size_t n)
{
    if (n == 1) {
        switch (s[0]) {
        case 't':
            return BK_T;
        case 'o':
            return BK_O;
        case 'h':
            return BK_H;
        case 'l':
            return BK_L;
        case 'c':
            return BK_C;
        case 'v':
            return BK_V;
        case 'n':
            return BK_N;
        default:
            return -1;
        }
    }
    return n == 2 && s[0] == 'v' && s[1] == 'w' ? BK_VW : -1;
}

/*
 * Finds every key of a bar in one walk over the object, reading each number
 * on the way (so it is scanned once). When a key repeats the first one
 * counts, as cJSON_GetObjectItemCaseSensitive had it. A key spelled with
 * escapes ("\u0074") is the key it decodes to. Returns the byte after the
 * object.
 */
static const char *bar_items(const char *obj, struct bar_items *k)
{
    json_iter_t it;
    json_str_t key;
    const char *val, *end;
    int id;

    memset(k->at, 0, sizeof k->at);
    json_iter_begin(&it, obj);
    while (json_iter_member(&it, &key, &val)) {
        if (!key.escaped) {
            id = bar_key_id(key.s, key.len);
        } else {
            /* Decoding never lengthens a key, so a text under 32 bytes fits buf;
             * bar_key_id refuses whatever is not one of the eight. */
            char buf[32];
            id = key.len < sizeof buf ? bar_key_id(buf, json_str_decode(&key, buf)) : -1;
        }
        if (id < 0 || k->at[id] != NULL)
            continue;
        k->at[id] = val;
        if (json_type(val) == JSON_NUMBER) {
            k->num[id] = json_number_end(val, &end);
            json_iter_skip_to(&it, end);
        }
    }
    return json_iter_end(&it);
}

/* A found bar key, or NULL with its absence reported in the caller's words. */
static const char *bar_key(const char *item, const char *key, const struct bar_ctx *c)
{
    if (item == NULL)
        set_err(c->err, c->errlen, "%s bar %zu: missing \"%s\"", c->symbol, c->index, key);
    return item;
}

/* A price or VWAP: any finite number. */
static int bar_double(const struct bar_items *k, int id, const char *key, const struct bar_ctx *c,
                      double *out)
{
    const char *item = bar_key(k->at[id], key, c);
    double d;

    if (item == NULL)
        return -1;
    if (json_type(item) != JSON_NUMBER) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is not a number", c->symbol, c->index, key);
        return -1;
    }
    /* An out-of-range literal like 1e999 reads as infinity. */
    d = k->num[id];
    if (!isfinite(d)) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is not finite", c->symbol, c->index, key);
        return -1;
    }
    *out = d;
    return 0;
}

/*
 * A volume or trade count: a number that is a whole value in [0, 2^63). The
 * bound is checked on the double before the cast, because casting a double
 * that does not fit into int64_t is undefined behaviour.
 */
static int bar_count(const struct bar_items *k, int id, const char *key, const struct bar_ctx *c,
                     int64_t *out)
{
    const char *item = bar_key(k->at[id], key, c);
    double d;

    if (item == NULL)
        return -1;
    if (json_type(item) != JSON_NUMBER) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is not a number", c->symbol, c->index, key);
        return -1;
    }
    d = k->num[id];
    if (!isfinite(d) || d != floor(d)) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is not a whole number", c->symbol, c->index,
                key);
        return -1;
    }
    if (d < 0) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is negative", c->symbol, c->index, key);
        return -1;
    }
    if (d >= TWO_POW_63) {
        set_err(c->err, c->errlen, "%s bar %zu: \"%s\" is too large", c->symbol, c->index, key);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

/* "t": an RFC 3339 time, read into *us; the message quotes the text as decoded. */
static int bar_time(const char *t, const struct bar_ctx *c, int64_t *us)
{
    json_str_t s = json_string(t);
    char buf[64], *text = buf;
    int rc;

    /* A time is at most 35 bytes ("…T00:00:00.123456789+00:00"); a longer text is decoded on the
     * heap, only for the message. Decoding never lengthens a string. */
    if (s.len < sizeof buf)
        json_str_decode(&s, buf);
    else if ((text = json_str_dup(&s)) == NULL) {
        set_err(c->err, c->errlen, "%s bar %zu: out of memory", c->symbol, c->index);
        return -1;
    }
    rc = bars_parse_time(text, us);
    if (rc < 0)
        set_err(c->err, c->errlen, "%s bar %zu: \"t\" is not an RFC 3339 time: \"%s\"", c->symbol,
                c->index, text);
    if (text != buf)
        free(text);
    return rc;
}

/* Reads one bar object into *b; the keys are looked up by name, in any order. *end: after it. */
static int parse_bar(const char *obj, const struct bar_ctx *c, bar_t *b, const char **end)
{
    const char *t;
    struct bar_items k;

    if (json_type(obj) != JSON_OBJECT) {
        set_err(c->err, c->errlen, "%s bar %zu: not an object", c->symbol, c->index);
        return -1;
    }
    *end = bar_items(obj, &k);
    t = bar_key(k.at[BK_T], "t", c);
    if (t == NULL)
        return -1;
    if (json_type(t) != JSON_STRING) {
        set_err(c->err, c->errlen, "%s bar %zu: \"t\" is not a string", c->symbol, c->index);
        return -1;
    }
    if (bar_time(t, c, &b->ts_us) < 0)
        return -1;
    if (bar_double(&k, BK_O, "o", c, &b->open) < 0 || bar_double(&k, BK_H, "h", c, &b->high) < 0 ||
        bar_double(&k, BK_L, "l", c, &b->low) < 0 || bar_double(&k, BK_C, "c", c, &b->close) < 0 ||
        bar_double(&k, BK_VW, "vw", c, &b->vwap) < 0 ||
        bar_count(&k, BK_V, "v", c, &b->volume) < 0 ||
        bar_count(&k, BK_N, "n", c, &b->trade_count) < 0)
        return -1;
    return 0;
}

/*
 * Fills *s from one array of bars. Nothing is stored in *s unless the whole
 * series is valid, so the caller's cleanup never sees half a series. The
 * array grows by doubling and is cut to size at the end.
 */
static int parse_series(const char *arr, char *symbol, bars_series_t *s, const char **end,
                        char *err, size_t errlen)
{
    struct bar_ctx c = {.symbol = symbol, .err = err, .errlen = errlen};
    json_iter_t it;
    const char *item, *after;
    bar_t *bars = NULL;
    size_t cap = 0;
    int rc = -1;

    if (json_type(arr) != JSON_ARRAY) {
        set_err(err, errlen, "%s: bars are not an array", symbol);
        goto out;
    }
    json_iter_begin(&it, arr);
    while (json_iter_elem(&it, &item)) {
        if (c.index == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            bar_t *nb = realloc(bars, ncap * sizeof(*bars));
            if (nb == NULL) {
                set_err(err, errlen, "%s: out of memory for %zu bars", symbol, ncap);
                goto out;
            }
            bars = nb;
            cap = ncap;
        }
        if (parse_bar(item, &c, &bars[c.index], &after) < 0)
            goto out;
        json_iter_skip_to(&it, after);
        /*
         * The daemon asks for sort=asc, so within a series time only moves
         * forward. A repeat or a step back means a corrupt or mis-merged page.
         */
        if (c.index > 0 && bars[c.index].ts_us <= bars[c.index - 1].ts_us) {
            set_err(err, errlen, "%s bar %zu: \"t\" not after the previous bar", symbol, c.index);
            goto out;
        }
        c.index++;
    }
    *end = json_iter_end(&it);
    if (c.index > 0 && c.index < cap) {
        bar_t *fit = realloc(bars, c.index * sizeof(*bars));
        if (fit != NULL)
            bars = fit;
    }
    s->symbol = symbol;
    s->bars = bars;
    s->n = c.index;
    symbol = NULL;
    bars = NULL;
    rc = 0;
out:
    free(symbol);
    free(bars);
    return rc;
}

/* "next_page_token": a string is copied, null or absent means the last page. */
static int parse_token(const char *tok, char **out, char *err, size_t errlen)
{
    json_str_t s;

    *out = NULL;
    if (tok == NULL || json_type(tok) == JSON_NULL)
        return 0;
    if (json_type(tok) != JSON_STRING) {
        set_err(err, errlen, "\"next_page_token\" is neither a string nor null");
        return -1;
    }
    s = json_string(tok);
    *out = json_str_dup(&s);
    if (*out == NULL) {
        set_err(err, errlen, "out of memory for \"next_page_token\"");
        return -1;
    }
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Two series with one symbol on one page would be written as one series with
 * timestamps that go backwards, so the page is refused. Sorting a list of
 * names keeps this O(n log n) even for a page of 10,000 one-bar symbols.
 */
static int check_duplicates(const bars_page_t *p, char *err, size_t errlen)
{
    const char **names = NULL;
    int rc = -1;

    if (p->nseries < 2)
        return 0;
    names = malloc(p->nseries * sizeof(*names));
    if (names == NULL) {
        set_err(err, errlen, "out of memory checking symbols");
        goto out;
    }
    for (size_t i = 0; i < p->nseries; i++)
        names[i] = p->series[i].symbol;
    qsort(names, p->nseries, sizeof(*names), cmp_str_ptr);
    for (size_t i = 1; i < p->nseries; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            set_err(err, errlen, "%s appears twice in \"bars\"", names[i]);
            goto out;
        }
    }
    rc = 0;
out:
    free(names);
    return rc;
}

/*
 * Reads the series of a page's "bars" value where the walk over the top level
 * meets it, so a page is walked once: 1 when the value is not of the reader's
 * type (left to the caller's checks), 0 with *end after it, or -1 with the
 * message in err. symbol is the requested one (single-symbol pages).
 */
typedef int (*bars_reader)(const char *bars, const char *symbol, bars_page_t *page,
                           const char **end, char *err, size_t errlen);

/* The members of a page's top level that the parsers read: the first of each name. */
struct page_items {
    const char *bars, *token, *symbol;
    /*
     * What the reader made of "bars". A failure's message stays in err: any
     * check that comes before it in the parsers' order overwrites it.
     */
    int bars_rc;
};

/*
 * Common start of both parsers: empty *out and err, check the body, and find
 * its top-level members, reading "bars" into *page with read (when not
 * NULL). Returns false with the message set.
 */
static bool begin_parse(const char *body, size_t len, bars_page_t *out, struct page_items *k,
                        bars_reader read, const char *symbol, bars_page_t *page, char *err,
                        size_t errlen)
{
    const char *root, *val, *end;
    json_iter_t it;
    json_str_t key;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(k, 0, sizeof *k);
    if (out == NULL) {
        set_err(err, errlen, "no page to fill");
        return false;
    }
    memset(out, 0, sizeof(*out));
    if (body == NULL || !json_check(body, len, &root)) {
        set_err(err, errlen, "body is not valid JSON (truncated or malformed)");
        return false;
    }
    if (json_type(root) != JSON_OBJECT) {
        set_err(err, errlen, "body is not a JSON object");
        return false;
    }
    json_iter_begin(&it, root);
    while (json_iter_member(&it, &key, &val)) {
        if (k->bars == NULL && json_str_eq(&key, "bars")) {
            k->bars = val;
            if (read != NULL) {
                k->bars_rc = read(val, symbol, page, &end, err, errlen);
                if (k->bars_rc == 0)
                    json_iter_skip_to(&it, end);
            }
        } else if (k->token == NULL && json_str_eq(&key, "next_page_token")) {
            k->token = val;
        } else if (k->symbol == NULL && json_str_eq(&key, "symbol")) {
            k->symbol = val;
        }
    }
    return true;
}

/* The reader of a multi-symbol page: every member of the "bars" object is a series. */
static int read_multi(const char *bars, const char *unused, bars_page_t *page, const char **end,
                      char *err, size_t errlen)
{
    json_iter_t it;
    json_str_t name;
    const char *member, *after;
    size_t cap = 0;

    (void)unused;
    if (json_type(bars) != JSON_OBJECT)
        return 1;
    json_iter_begin(&it, bars);
    while (json_iter_member(&it, &name, &member)) {
        if (page->nseries == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            bars_series_t *ns = realloc(page->series, ncap * sizeof(*ns));
            if (ns == NULL) {
                set_err(err, errlen, "out of memory for %zu series", ncap);
                return -1;
            }
            page->series = ns;
            cap = ncap;
        }
        bars_series_t *s = &page->series[page->nseries];
        char *symbol = json_str_dup(&name);
        if (symbol == NULL) {
            set_err(err, errlen, "out of memory for a symbol");
            return -1;
        }
        if (symbol[0] == '\0') {
            free(symbol);
            set_err(err, errlen, "\"bars\" has a member without a symbol");
            return -1;
        }
        if (parse_series(member, symbol, s, &after, err, errlen) < 0)
            return -1;
        json_iter_skip_to(&it, after);
        page->nseries++;
        page->total += s->n;
    }
    *end = json_iter_end(&it);
    if (page->nseries == 0) {
        free(page->series);
        page->series = NULL;
    }
    return check_duplicates(page, err, errlen);
}

/* The reader of a single-symbol page: the "bars" array is the requested symbol's series. */
static int read_single(const char *bars, const char *symbol, bars_page_t *page, const char **end,
                       char *err, size_t errlen)
{
    char *name;

    if (json_type(bars) != JSON_ARRAY)
        return 1;
    page->series = calloc(1, sizeof(*page->series));
    name = strdup(symbol);
    if (page->series == NULL || name == NULL) {
        free(name);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    if (parse_series(bars, name, &page->series[0], end, err, errlen) < 0)
        return -1;
    page->nseries = 1;
    page->total = page->series[0].n;
    return 0;
}

int bars_parse_multi(const char *body, size_t len, bars_page_t *out, char *err, size_t errlen)
{
    bars_page_t page = {0};
    struct page_items k;
    int rc = -1;

    if (!begin_parse(body, len, out, &k, read_multi, NULL, &page, err, errlen))
        goto out;
    if (k.bars == NULL) {
        /* An error body like {"message":"..."} is not an empty page. */
        set_err(err, errlen, "missing \"bars\"");
        goto out;
    }
    if (json_type(k.bars) != JSON_NULL && json_type(k.bars) != JSON_OBJECT) {
        set_err(err, errlen, "\"bars\" is not an object");
        goto out;
    }
    if (parse_token(k.token, &page.next_page_token, err, errlen) < 0)
        goto out;
    if (k.bars_rc < 0)
        goto out;
    *out = page;
    memset(&page, 0, sizeof(page));
    rc = 0;
out:
    bars_page_clear(&page);
    return rc;
}

int bars_parse_single(const char *body, size_t len, const char *symbol, bars_page_t *out, char *err,
                      size_t errlen)
{
    bars_page_t page = {0};
    struct page_items k;
    char *sym = NULL;
    int rc = -1;

    if (!begin_parse(body, len, out, &k, symbol != NULL ? read_single : NULL, symbol, &page, err,
                     errlen))
        goto out;
    if (symbol == NULL) {
        set_err(err, errlen, "no symbol requested");
        goto out;
    }
    if (k.symbol == NULL || json_type(k.symbol) != JSON_STRING) {
        set_err(err, errlen, "\"symbol\" is missing or not a string");
        goto out;
    }
    json_str_t s = json_string(k.symbol);
    sym = json_str_dup(&s);
    if (sym == NULL) {
        set_err(err, errlen, "out of memory for \"symbol\"");
        goto out;
    }
    /* A body for another symbol must never be stored under the requested one. */
    if (strcmp(sym, symbol) != 0) {
        set_err(err, errlen, "\"symbol\" is \"%s\", expected \"%s\"", sym, symbol);
        goto out;
    }
    if (k.bars == NULL) {
        set_err(err, errlen, "missing \"bars\"");
        goto out;
    }
    if (json_type(k.bars) != JSON_NULL && json_type(k.bars) != JSON_ARRAY) {
        set_err(err, errlen, "\"bars\" is not an array");
        goto out;
    }
    if (parse_token(k.token, &page.next_page_token, err, errlen) < 0)
        goto out;
    /* Alpaca sends "bars":null for no data; that page has no series at all. */
    if (k.bars_rc < 0)
        goto out;
    *out = page;
    memset(&page, 0, sizeof(page));
    rc = 0;
out:
    free(sym);
    bars_page_clear(&page);
    return rc;
}

void bars_page_clear(bars_page_t *p)
{
    if (p == NULL)
        return;
    /*
     * Entries past nseries are never filled in: parse_series stores nothing
     * in a series on failure, so freeing up to nseries is enough.
     */
    for (size_t i = 0; i < p->nseries; i++) {
        free(p->series[i].symbol);
        free(p->series[i].bars);
    }
    free(p->series);
    free(p->next_page_token);
    memset(p, 0, sizeof(*p));
}

bool bars_error_message(const char *body, size_t len, char *out, size_t outlen)
{
    cJSON *root;
    const cJSON *msg;
    bool ok = false;

    if (out == NULL || outlen == 0)
        return false;
    out[0] = '\0';
    root = parse_body(body, len);
    if (root == NULL)
        goto out;
    if (!cJSON_IsObject(root))
        goto out;
    msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    if (!cJSON_IsString(msg))
        goto out;
    snprintf(out, outlen, "%s", msg->valuestring);
    ok = true;
out:
    cJSON_Delete(root);
    return ok;
}
