/*
 * alpaca-sim: a faithful fake of the Alpaca market-data v2 historical bars API.
 *
 * Tests, the demo and the benchmarks talk to this program instead of
 * data.alpaca.markets. It serves plain HTTP/1.1 (keep-alive, pipelining, many
 * connections) on one libuv loop and mimics what the team has recorded
 * about the real service (the bars API notes with the design docs): results
 * ordered by symbol and then by time, a page limit counted across symbols,
 * opaque page tokens bound to their query, nginx's HTML 401, a 429 without
 * rate-limit headers, and the measured 400 messages. Knobs inject the faults a
 * client must survive (5xx, malformed and truncated bodies, short and
 * trailing-empty pages, latency, a token-bucket rate limit, gzip, the free
 * plan's SIP restriction, and a dead upstream: requests never answered, or
 * responses that stop mid-body); they are set on the command line and can be
 * changed at run time through GET /__sim/set.
 *
 * The data are synthetic but deterministic: a final bar is a pure function
 * of (symbol, timeframe, feed, bar start), so `alpaca-sim dump` prints exactly
 * the bars the server serves once they are final, and a test can compare what
 * the daemon stored with it. Pages are generated lazily from a cursor, so a
 * request costs what its page costs, however long the requested range is.
 *
 * The calendar is the NYSE's (nyse_holiday, early_close), with every rule
 * applied to every year: weekends and the full-day holidays are not trading
 * days; on an early close (the day after Thanksgiving, and Christmas Eve and
 * July 3 when they are trading days) the regular session ends at 13:00 ET.
 * Intraday bars start inside the feed's session of a trading day: SIP (and
 * otc, boats) 04:00-20:00 ET, IEX 08:00-17:00 ET; on an early close SIP
 * ends at 17:00 and IEX at 13:00 ET. Day bars exist for
 * trading days, Week bars for weeks with one, Month bars for every month.
 * Symbols "ZZ…" have no bars at all; symbols "XX…" trade around the clock:
 * a bar for every interval of every day (24 h, 7 days a week, holidays too,
 * no missing bars, every feed) and a Day/Week/Month bar for every period, so
 * a test can watch a moving "now" at any hour.
 *
 * Bars are not final right away (alpaca-more-api.md §6). Against the wall
 * clock `now`, a bar [start, end) (a Day bar ends at the New York midnight
 * after its day, a Week or Month bar at the start of the next one) is
 * served (bar_settle): partial while start <= now < end (its volume, trade
 * count and close move from the open toward the preliminary values with the
 * elapsed fraction of the interval); preliminary while end <= now < end +
 * settle (--settle-seconds, default 30: volume 1-5 % lower, fewer trades,
 * another vw); final after that. dump always prints final bars.
 *
 * Two more symbol rules: "HOLE…" symbols miss their intraday bars that start
 * from 10:00 to 11:00 ET on trading days whose day of month is 15, until
 * /__sim/set?fill_holes=1 serves them (a hole that is filled later; dump
 * prints them filled unless --with-holes); "IPO…" symbols have no bar stamped
 * before 2024-06-03 00:00 ET (a listing mid-range).
 *
 * Beside the bars the simulator serves GET /v2/calendar (calendar_handle) and
 * GET /v1/corporate-actions (ca_handle) with a static list of records plus
 * the splits a test adds through /__sim/set?split=; split- (and all-)adjusted
 * bars follow the added splits (bar_adjust).
 *
 * Only start-up and errors are logged; a line per request would drown the
 * benchmarks.
 */
#define ZLIB_CONST
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>
#include <zlib.h>

/* A request line plus headers longer than this is refused with 431. */
#define SIM_MAX_HEAD 16384
/* Per-connection input buffer: room for one maximal head plus pipelined bytes. */
#define SIM_IN_CAP 32768
#define SIM_MAX_PARAMS 64
#define SIM_STR_MAX 256
/* The per-second request history kept for /__sim/counters, in seconds. */
#define SIM_WINDOW 600
#define SIM_LIMIT_MAX 10000
#define SIM_LIMIT_DEFAULT 1000
/* /v2/assets: longest symbol, and how many symbols a test can remove. */
#define SIM_ASSET_SYM 24
#define SIM_REMOVED_MAX 64
/* Fixed rate-limit windows (--rate-window) at most. */
#define SIM_WINDOWS_MAX 4
/* The free plan may not see SIP data younger than this many seconds. */
#define SIM_FREE_DELAY 900
#define SIM_DAY 86400
/* The longest settle window (--settle-seconds): 100 years, so a test can make
 * any past bar preliminary. */
#define SIM_SETTLE_MAX 3155760000LL
/* Corporate actions the simulator holds at most, static and added. */
#define SIM_ACTIONS_MAX 4096

/* ------------------------------------------------------------------------ */
/* Growable buffer                                                           */
/* ------------------------------------------------------------------------ */

/*
 * A byte buffer that doubles its capacity, so building a 1 MB page costs
 * linear time. It stays NUL-terminated. An allocation failure makes it sticky
 * "oom" and later appends do nothing; whoever sends the buffer checks the
 * flag once instead of every append checking a return value.
 */
typedef struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
} sbuf_t;

static bool sb_reserve(sbuf_t *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->cap > b->len && b->cap - b->len > extra)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void sb_put(sbuf_t *b, const void *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(sbuf_t *b, char ch)
{
    sb_put(b, &ch, 1);
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_free(sbuf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Appends s as a JSON string literal. Bytes >= 0x80 are escaped one by one so
 * the output stays valid JSON even when a client sends invalid UTF-8. */
static void sb_json_str(sbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    sb_putc(b, '"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            sb_put(b, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            sb_put(b, esc, 6);
        } else {
            sb_putc(b, (char)ch);
        }
    }
    sb_putc(b, '"');
}

/* Raw writers for the hot path: the caller has reserved enough room. */
static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Writes v / 10^decimals with exactly `decimals` digits after the point. */
static char *put_fixed(char *p, int64_t v, int decimals)
{
    uint64_t scale = 1;
    for (int i = 0; i < decimals; i++)
        scale *= 10;
    p = put_u64(p, (uint64_t)v / scale);
    *p++ = '.';
    uint64_t f = (uint64_t)v % scale;
    for (int i = decimals - 1; i >= 0; i--) {
        p[i] = (char)('0' + f % 10);
        f /= 10;
    }
    return p + decimals;
}

static char *put_digits(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/* ------------------------------------------------------------------------ */
/* Hashing and the seeded generator                                          */
/* ------------------------------------------------------------------------ */

#define FNV_BASIS 0xcbf29ce484222325ULL

/* The splitmix64 finaliser: a cheap, well-mixed 64-bit permutation. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return mix64(*state);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n); the modulo bias is irrelevant for a simulator. */
static uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return n ? rng_next(state) % n : 0;
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Calendar: civil dates, New York time, trading days                        */
/* ------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t floor_mod(int64_t a, int64_t b)
{
    return a - floor_div(a, b) * b;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* 0 = Sunday … 6 = Saturday; 1970-01-01 was a Thursday. */
static int weekday(int64_t day)
{
    return (int)floor_mod(day + 4, 7);
}

/*
 * US Eastern daylight time under the post-2007 rule, applied to every year so
 * the data never depend on the process TZ or the tz database: DST runs from
 * the second Sunday of March at 02:00 EST to the first Sunday of November at
 * 02:00 EDT. Returns the local dates (days since the epoch) of both Sundays.
 */
static void et_dst_days(int64_t y, int64_t *start, int64_t *end)
{
    int64_t mar1 = days_from_civil(y, 3, 1);
    int64_t nov1 = days_from_civil(y, 11, 1);
    *start = mar1 + (7 - weekday(mar1)) % 7 + 7;
    *end = nov1 + (7 - weekday(nov1)) % 7;
}

/* New York wall-clock time (local date, seconds into the day) → Unix time.
 * Only midnight and times from 03:00 on are asked for, so the skipped and the
 * repeated hour never matter. */
static int64_t et_to_utc(int64_t day, int64_t sod)
{
    int64_t y, s, e;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    et_dst_days(y, &s, &e);
    int64_t local = day * SIM_DAY + sod;
    bool dst = local >= s * SIM_DAY + 7200 && local < e * SIM_DAY + 7200;
    return local + (dst ? 4 : 5) * 3600;
}

/* The New York local date (days since the epoch) of Unix time t. */
static int64_t et_local_day(int64_t t)
{
    int64_t y, s, e;
    int m, d;
    civil_from_days(floor_div(t, SIM_DAY), &y, &m, &d);
    et_dst_days(y, &s, &e);
    /* 02:00 EST is 07:00Z; 02:00 EDT is 06:00Z. */
    bool dst = t >= s * SIM_DAY + 7 * 3600 && t < e * SIM_DAY + 6 * 3600;
    return floor_div(t - (dst ? 4 : 5) * 3600, SIM_DAY);
}

/* The day (days since the epoch) of the nth weekday wd (0 = Sunday) of month
 * m in year y; nth = -1 is the last one. */
static int64_t nth_weekday(int64_t y, int m, int wd, int nth)
{
    if (nth < 0) {
        int64_t last = days_from_civil(y, m, days_in_month(y, m));
        return last - floor_mod(weekday(last) - wd, 7);
    }
    int64_t first = days_from_civil(y, m, 1);
    return first + floor_mod(wd - weekday(first), 7) + 7 * (nth - 1);
}

/* Easter Sunday of year y (the anonymous Gregorian computus). */
static int64_t easter_sunday(int64_t y)
{
    int64_t a = y % 19, b = y / 100, c = y % 100, d = b / 4, e = b % 4;
    int64_t f = (b + 8) / 25, g = (b - f + 1) / 3, h = (19 * a + b - d - g + 15) % 30;
    int64_t i = c / 4, k = c % 4, l = (32 + 2 * e + 2 * i - h - k) % 7;
    int64_t m = (a + 11 * h + 22 * l) / 451;
    int64_t month = (h + l - 7 * m + 114) / 31, day = (h + l - 7 * m + 114) % 31 + 1;
    return days_from_civil(y, (int)month, (int)day);
}

/* A fixed-date holiday as the NYSE observes it: a Saturday one on the Friday
 * before, a Sunday one on the Monday after. */
static bool observed_on(int64_t day, int64_t y, int m, int d)
{
    int64_t f = days_from_civil(y, m, d);
    int wd = weekday(f);
    return day == (wd == 6 ? f - 1 : wd == 0 ? f + 1 : f);
}

/*
 * The NYSE's full-day holidays, applied to every year with the rules of
 * today (only MLK Day and Juneteenth have a first year): New Year's Day (a
 * Sunday one on Monday, a Saturday one not at all), Martin Luther King Jr.
 * Day (3rd Monday of January, from 1998), Washington's Birthday (3rd Monday
 * of February), Good Friday, Memorial Day (last Monday of May), Juneteenth
 * (June 19, from 2022), Independence Day, Labor Day (1st Monday of
 * September), Thanksgiving (4th Thursday of November) and Christmas. The
 * last three fixed-date ones move off weekends both ways (observed_on).
 */
static bool nyse_holiday(int64_t day)
{
    int64_t y;
    int m, d;

    civil_from_days(day, &y, &m, &d);
    if ((m == 1 && d == 1) || (m == 1 && d == 2 && weekday(day) == 1))
        return true;
    if (y >= 1998 && day == nth_weekday(y, 1, 1, 3))
        return true;
    if (day == nth_weekday(y, 2, 1, 3) || day == easter_sunday(y) - 2 ||
        day == nth_weekday(y, 5, 1, -1) || day == nth_weekday(y, 9, 1, 1) ||
        day == nth_weekday(y, 11, 4, 4))
        return true;
    if (y >= 2022 && observed_on(day, y, 6, 19))
        return true;
    return observed_on(day, y, 7, 4) || observed_on(day, y, 12, 25);
}

/* Trading days are Monday to Friday minus the NYSE holidays. */
static bool trading_day(int64_t day)
{
    int wd = weekday(day);
    return wd != 0 && wd != 6 && !nyse_holiday(day);
}

/*
 * Early closes (13:00 regular close): the day after Thanksgiving, and
 * Christmas Eve and July 3 when they are trading days (a weekday that is not
 * itself the observed Christmas or Independence Day).
 */
static bool early_close(int64_t day)
{
    int64_t y;
    int m, d;

    if (!trading_day(day))
        return false;
    civil_from_days(day, &y, &m, &d);
    return day == nth_weekday(y, 11, 4, 4) + 1 || (m == 12 && d == 24) || (m == 7 && d == 3);
}

/* Writes "YYYY-MM-DDTHH:MM:SSZ" (20 bytes, no NUL) for years 0…9999. */
static char *put_time(char *p, int64_t t)
{
    int64_t day = floor_div(t, SIM_DAY), sod = floor_mod(t, SIM_DAY);
    int64_t y;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    p = put_digits(p, y, 4);
    *p++ = '-';
    p = put_digits(p, m, 2);
    *p++ = '-';
    p = put_digits(p, d, 2);
    *p++ = 'T';
    p = put_digits(p, sod / 3600, 2);
    *p++ = ':';
    p = put_digits(p, sod / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, sod % 60, 2);
    *p++ = 'Z';
    return p;
}

/* An instant as parsed from a request: whole seconds plus nanoseconds. */
typedef struct ts {
    int64_t sec;
    int32_t ns;
} ts_t;

static bool parse_digits(const char **pp, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*pp)[i];
        if (ch < '0' || ch > '9')
            return false;
        v = v * 10 + (ch - '0');
    }
    *pp += n;
    *out = v;
    return true;
}

/*
 * Accepts RFC 3339 with second precision, an optional fraction of 1–9 digits
 * and "Z" or "±hh:mm", or a bare "YYYY-MM-DD" (midnight UTC, as the daemon
 * assumes). Anything else, including trailing bytes, is rejected.
 */
static bool parse_time(const char *s, ts_t *out)
{
    const char *p = s;
    int y, mo, d, hh = 0, mi = 0, ss = 0, oh = 0, om = 0, sign = 0;
    int32_t ns = 0;

    if (!parse_digits(&p, 4, &y) || *p++ != '-' || !parse_digits(&p, 2, &mo) || *p++ != '-' ||
        !parse_digits(&p, 2, &d))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return false;
    if (*p) {
        if (*p++ != 'T' || !parse_digits(&p, 2, &hh) || *p++ != ':' || !parse_digits(&p, 2, &mi) ||
            *p++ != ':' || !parse_digits(&p, 2, &ss))
            return false;
        if (hh > 23 || mi > 59 || ss > 59)
            return false;
        if (*p == '.') {
            p++;
            int nd = 0;
            while (*p >= '0' && *p <= '9') {
                if (++nd > 9)
                    return false;
                ns = ns * 10 + (*p++ - '0');
            }
            if (nd == 0)
                return false;
            for (; nd < 9; nd++)
                ns *= 10;
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '+' ? 1 : -1;
            if (!parse_digits(&p, 2, &oh) || *p++ != ':' || !parse_digits(&p, 2, &om))
                return false;
            if (oh > 23 || om > 59)
                return false;
        } else {
            return false;
        }
        if (*p)
            return false;
    }
    out->sec = days_from_civil(y, mo, d) * SIM_DAY + hh * 3600 + mi * 60 + ss -
               sign * (oh * 3600 + om * 60);
    out->ns = ns;
    return true;
}

static int64_t wall_now(void)
{
    struct timespec tv;
    clock_gettime(CLOCK_REALTIME, &tv);
    return (int64_t)tv.tv_sec;
}

static int64_t wall_now_ms(void)
{
    struct timespec tv;
    clock_gettime(CLOCK_REALTIME, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* Timeframes, feeds and the bar model                                       */
/* ------------------------------------------------------------------------ */

typedef enum { TF_INTRADAY, TF_DAY, TF_WEEK, TF_MONTH } tf_kind_t;

typedef struct tf {
    tf_kind_t kind;
    int n;          /* the multiplier: 15 in 15Min, 3 in 3Month */
    int64_t len;    /* bar length in seconds, intraday only */
    char canon[16]; /* "15Min", "1Hour", …: the name that seeds the data */
} tf_t;

/* Parses Alpaca's timeframe syntax. "1H" and "1Hour" are the same timeframe
 * and share the canonical name, so both serve the same bars. */
static bool tf_parse(const char *s, tf_t *out)
{
    static const struct {
        const char *unit, *canon;
        tf_kind_t kind;
        int64_t mult;
        int max;
    } units[] = {
        {"Min", "Min", TF_INTRADAY, 60, 59},
        {"T", "Min", TF_INTRADAY, 60, 59},
        {"Hour", "Hour", TF_INTRADAY, 3600, 23},
        {"H", "Hour", TF_INTRADAY, 3600, 23},
        {"Day", "Day", TF_DAY, 0, 1},
        {"D", "Day", TF_DAY, 0, 1},
        {"Week", "Week", TF_WEEK, 0, 1},
        {"W", "Week", TF_WEEK, 0, 1},
        {"Month", "Month", TF_MONTH, 0, 12},
        {"M", "Month", TF_MONTH, 0, 12},
    };
    const char *p = s;
    int n = 0;

    if (*p < '1' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (*p++ - '0');
        if (n > 99)
            return false;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (n > units[i].max)
            return false;
        if (units[i].kind == TF_MONTH && n != 1 && n != 2 && n != 3 && n != 4 && n != 6 && n != 12)
            return false;
        out->kind = units[i].kind;
        out->n = n;
        out->len = units[i].mult * n;
        snprintf(out->canon, sizeof out->canon, "%d%s", n, units[i].canon);
        return true;
    }
    return false;
}

enum { FEED_SIP, FEED_IEX, FEED_OTC, FEED_BOATS, FEED_COUNT };
static const char *const feed_names[FEED_COUNT] = {"sip", "iex", "otc", "boats"};

static int feed_parse(const char *s)
{
    for (int i = 0; i < FEED_COUNT; i++)
        if (strcmp(s, feed_names[i]) == 0)
            return i;
    return -1;
}

/* Valid symbols match ^[A-Z][A-Z0-9._]{0,15}$. */
static bool symbol_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 16 || s[0] < 'A' || s[0] > 'Z')
        return false;
    for (size_t i = 1; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_'))
            return false;
    }
    return true;
}

/* Everything the data of one (symbol, timeframe, feed) depend on. */
typedef struct series {
    const char *sym;
    const tf_t *tf;
    bool empty;       /* "ZZ…" symbols: well-formed but without any data */
    bool always;      /* "XX…" symbols: a bar for every interval of every day */
    bool holes;       /* "HOLE…" symbols whose holes are not filled (iter_day) */
    int64_t listed;   /* no bar starts before this ("IPO…" symbols), else INT64_MIN */
    int64_t base;     /* the symbol's base price in cents, 10.00 … 500.00 */
    uint64_t h_vals;  /* seeds the values: symbol, timeframe and feed */
    uint64_t h_gap;   /* seeds the gaps: symbol and timeframe only */
    int64_t open_sod; /* the feed's session in New York seconds of day */
    int64_t close_sod;
    int64_t early_sod; /* close_sod on an early-close day */
} series_t;

static void series_init(series_t *se, const char *sym, const tf_t *tf, int feed)
{
    uint64_t hs = fnv1a(FNV_BASIS, sym);
    uint64_t ht = fnv1a(fnv1a(hs, "|"), tf->canon);

    se->sym = sym;
    se->tf = tf;
    se->empty = strncmp(sym, "ZZ", 2) == 0;
    se->always = strncmp(sym, "XX", 2) == 0;
    se->holes = strncmp(sym, "HOLE", 4) == 0;
    se->listed =
        strncmp(sym, "IPO", 3) == 0 ? et_to_utc(days_from_civil(2024, 6, 3), 0) : INT64_MIN;
    se->base = 1000 + (int64_t)(mix64(hs) % 49001);
    se->h_gap = mix64(ht);
    se->h_vals = mix64(fnv1a(fnv1a(ht, "|"), feed_names[feed]));
    /* SIP (and OTC, BOATS) carry the extended session 04:00–20:00 ET; IEX
     * its system hours 08:00–17:00 ET. On an early close (a 13:00 regular
     * close) SIP ends at 17:00 and IEX at 13:00 ET. */
    se->open_sod = (feed == FEED_IEX ? 8 : 4) * 3600;
    se->close_sod = (feed == FEED_IEX ? 17 : 20) * 3600;
    se->early_sod = (feed == FEED_IEX ? 13 : 17) * 3600;
}

/* About one intraday bar in 97 is missing, as if nothing traded ("XX…"
 * symbols miss none). */
static bool series_gap(const series_t *se, int64_t t)
{
    return !se->always && mix64(se->h_gap ^ mix64((uint64_t)t)) % 97 == 0;
}

/* Prices in cents, vw in ten-thousandths, so the text is exact. */
typedef struct bar {
    int64_t t, o, h, l, c, v, n, vw;
} bar_t;

static void bar_make(const series_t *se, int64_t t, bar_t *b)
{
    uint64_t st = se->h_vals ^ mix64((uint64_t)t + 0x632be59bd9b4e019ULL);
    int64_t base = se->base;
    int64_t span = base / 50; /* open and close stay within ±2% of base */
    int64_t wick = base / 200 + 1;

    b->t = t;
    b->o = base - span + (int64_t)rng_below(&st, (uint64_t)(2 * span + 1));
    b->c = base - span + (int64_t)rng_below(&st, (uint64_t)(2 * span + 1));
    b->h = (b->o > b->c ? b->o : b->c) + (int64_t)rng_below(&st, (uint64_t)wick + 1);
    b->l = (b->o < b->c ? b->o : b->c) - (int64_t)rng_below(&st, (uint64_t)wick + 1);
    if (b->l < 1)
        b->l = 1;
    b->v = 100 + (int64_t)rng_below(&st, 5000000 - 100 + 1);
    b->n = 1 + (int64_t)rng_below(&st, (uint64_t)(b->v < 50000 ? b->v : 50000));
    b->vw = b->l * 100 + (int64_t)rng_below(&st, (uint64_t)((b->h - b->l) * 100 + 1));
}

/* The longest text bar_json or bar_csv can produce, with a margin. */
#define SIM_BAR_MAX 192

/* {"c":..,"h":..,"l":..,"n":..,"o":..,"t":"..","v":..,"vw":..}: alphabetical,
 * the order measured on the live service. */
static char *bar_json(char *p, const bar_t *b)
{
    p = put_str(p, "{\"c\":");
    p = put_fixed(p, b->c, 2);
    p = put_str(p, ",\"h\":");
    p = put_fixed(p, b->h, 2);
    p = put_str(p, ",\"l\":");
    p = put_fixed(p, b->l, 2);
    p = put_str(p, ",\"n\":");
    p = put_u64(p, (uint64_t)b->n);
    p = put_str(p, ",\"o\":");
    p = put_fixed(p, b->o, 2);
    p = put_str(p, ",\"t\":\"");
    p = put_time(p, b->t);
    p = put_str(p, "\",\"v\":");
    p = put_u64(p, (uint64_t)b->v);
    p = put_str(p, ",\"vw\":");
    p = put_fixed(p, b->vw, 4);
    *p++ = '}';
    return p;
}

/* SYMBOL,t,o,h,l,c,v,n,vw with the very same number text as the JSON. */
static char *bar_csv(char *p, const char *sym, const bar_t *b)
{
    p = put_str(p, sym);
    *p++ = ',';
    p = put_time(p, b->t);
    *p++ = ',';
    p = put_fixed(p, b->o, 2);
    *p++ = ',';
    p = put_fixed(p, b->h, 2);
    *p++ = ',';
    p = put_fixed(p, b->l, 2);
    *p++ = ',';
    p = put_fixed(p, b->c, 2);
    *p++ = ',';
    p = put_u64(p, (uint64_t)b->v);
    *p++ = ',';
    p = put_u64(p, (uint64_t)b->n);
    *p++ = ',';
    p = put_fixed(p, b->vw, 4);
    *p++ = '\n';
    return p;
}

/* ------------------------------------------------------------------------ */
/* Lazy bar iteration                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Walks the bar starts of one series inside [lo, hi] in either direction
 * without materialising anything: each call finds the next existing bar from
 * the cursor. Intraday bars are aligned to multiples of their length since the
 * epoch (so 4Hour bars start at 00/04/08… UTC) and exist when they start
 * inside a trading day's session; the New York day around the cursor is
 * cached, so consecutive bars cost one comparison and one hash.
 * Day/Week/Month bars are "periods" stamped at New York midnight of their
 * first day.
 */
typedef struct bar_iter {
    const series_t *se;
    int64_t lo, hi; /* inclusive bounds on the bar start */
    int64_t cur;    /* next candidate: the smallest (asc) or largest (desc) start */
    int dir;        /* +1 ascending, -1 descending */
    bool have_day, day_trading;
    int64_t day_start, day_end, open, close;
    int64_t hole_lo, hole_hi; /* the day's hole [lo, hi), empty when lo == hi */
} bar_iter_t;

static void iter_init(bar_iter_t *it, const series_t *se, int64_t lo, int64_t hi, int dir,
                      int64_t cur)
{
    memset(it, 0, sizeof *it);
    it->se = se;
    it->lo = lo > se->listed ? lo : se->listed;
    it->hi = hi;
    it->dir = dir;
    if (dir > 0)
        it->cur = cur > it->lo ? cur : it->lo;
    else
        it->cur = cur < hi ? cur : hi;
}

static void iter_day(bar_iter_t *it, int64_t t)
{
    if (it->have_day && t >= it->day_start && t < it->day_end)
        return;
    int64_t d = et_local_day(t);
    it->have_day = true;
    it->day_start = et_to_utc(d, 0);
    it->day_end = et_to_utc(d + 1, 0);
    if (it->se->always) {
        it->day_trading = true;
        it->open = it->day_start;
        it->close = it->day_end;
        return;
    }
    it->day_trading = trading_day(d);
    it->hole_lo = it->hole_hi = 0;
    if (it->se->holes) {
        int64_t y;
        int m, dom;
        civil_from_days(d, &y, &m, &dom);
        if (dom == 15) {
            it->hole_lo = et_to_utc(d, 10 * 3600);
            it->hole_hi = et_to_utc(d, 11 * 3600);
        }
    }
    it->open = et_to_utc(d, it->se->open_sod);
    it->close = et_to_utc(d, early_close(d) ? it->se->early_sod : it->se->close_sod);
}

static int64_t align_down(int64_t t, int64_t len)
{
    return floor_div(t, len) * len;
}

static int64_t align_up(int64_t t, int64_t len)
{
    return -floor_div(-t, len) * len;
}

static int64_t period_of_day(const tf_t *tf, int64_t day)
{
    int64_t y;
    int m, d;

    switch (tf->kind) {
    case TF_WEEK:
        return floor_div(day + 3, 7); /* weeks start on Monday, day -3 */
    case TF_MONTH:
        civil_from_days(day, &y, &m, &d);
        return floor_div((y - 1970) * 12 + m - 1, tf->n);
    default:
        return day;
    }
}

static int64_t period_first_day(const tf_t *tf, int64_t p)
{
    int64_t mi;

    switch (tf->kind) {
    case TF_WEEK:
        return p * 7 - 3;
    case TF_MONTH:
        mi = p * tf->n;
        return days_from_civil(1970 + floor_div(mi, 12), (int)floor_mod(mi, 12) + 1, 1);
    default:
        return p;
    }
}

/* A day bar needs a trading day, a week bar a trading day in its week; every
 * month has trading days. "XX…" symbols have a bar for every period. */
static bool period_has_bar(const series_t *se, int64_t p)
{
    const tf_t *tf = se->tf;

    if (se->always)
        return true;
    switch (tf->kind) {
    case TF_WEEK:
        for (int i = 0; i < 5; i++)
            if (trading_day(p * 7 - 3 + i))
                return true;
        return false;
    case TF_MONTH:
        return true;
    default:
        return trading_day(p);
    }
}

static bool iter_next_intraday(bar_iter_t *it, int64_t *out)
{
    int64_t len = it->se->tf->len;
    int64_t t;

    if (it->dir > 0) {
        t = align_up(it->cur, len);
        for (;;) {
            if (t > it->hi)
                return false;
            iter_day(it, t);
            if (!it->day_trading || t >= it->close)
                t = align_up(it->day_end, len);
            else if (t < it->open)
                t = align_up(it->open, len);
            else if (series_gap(it->se, t) || (t >= it->hole_lo && t < it->hole_hi))
                t += len;
            else
                break;
        }
        it->cur = t + len;
    } else {
        t = align_down(it->cur, len);
        for (;;) {
            if (t < it->lo)
                return false;
            iter_day(it, t);
            if (!it->day_trading || t < it->open)
                t = align_down(it->day_start - 1, len);
            else if (t >= it->close)
                t = align_down(it->close - 1, len);
            else if (series_gap(it->se, t) || (t >= it->hole_lo && t < it->hole_hi))
                t -= len;
            else
                break;
        }
        it->cur = t - len;
    }
    *out = t;
    return true;
}

static bool iter_next_period(bar_iter_t *it, int64_t *out)
{
    const tf_t *tf = it->se->tf;
    /* The period holding the cursor's New York date starts at or before it. */
    int64_t p = period_of_day(tf, et_local_day(it->cur));
    int64_t t = et_to_utc(period_first_day(tf, p), 0);

    if (it->dir > 0 && t < it->cur)
        t = et_to_utc(period_first_day(tf, ++p), 0);
    for (;;) {
        if (it->dir > 0 ? t > it->hi : t < it->lo)
            return false;
        if (period_has_bar(it->se, p))
            break;
        p += it->dir;
        t = et_to_utc(period_first_day(tf, p), 0);
    }
    it->cur = t + it->dir;
    *out = t;
    return true;
}

static bool iter_next(bar_iter_t *it, int64_t *out)
{
    if (it->se->empty || it->lo > it->hi)
        return false;
    if (it->se->tf->kind == TF_INTRADAY)
        return iter_next_intraday(it, out);
    return iter_next_period(it, out);
}

/* Where the bar starting at t ends: t + len intraday; a Day, Week or Month
 * period ends at the New York midnight that starts the next period. */
static int64_t bar_end(const tf_t *tf, int64_t t)
{
    if (tf->kind == TF_INTRADAY)
        return t + tf->len;
    int64_t p = period_of_day(tf, et_local_day(t));
    return et_to_utc(period_first_day(tf, p + 1), 0);
}

/* a * num / den rounded half up, for den > 0. */
static int64_t scale_round(int64_t a, int64_t num, int64_t den)
{
    return floor_div(2 * a * num + den, 2 * den);
}

/*
 * The preliminary values of a final bar b (what a bar read within the settle
 * window after its end shows, before late trades are counted): volume lower
 * by pct = 1…5 % (floor(v * pct / 100) less), n lower by max(1, floor(n *
 * pct / 100)) but never below 1, vw one ten-thousandth up (down when it is
 * already at the high); o, h, l and c are the final ones. pct is drawn from
 * the series and the bar start, so the same bar is always the same.
 */
static void bar_prelim(const series_t *se, bar_t *b)
{
    int64_t pct = 1 + (int64_t)(mix64(se->h_vals ^ mix64((uint64_t)b->t ^ 0x5e771eULL)) % 5);
    int64_t dn = b->n * pct / 100;

    b->v -= b->v * pct / 100;
    b->n = b->n > 1 ? b->n - (dn > 1 ? dn : 1) : b->n;
    if (b->vw < b->h * 100)
        b->vw++;
    else if (b->vw > b->l * 100)
        b->vw--;
}

/*
 * Turns the final bar b into what is served at wall-clock time now (see the
 * file comment): final once now >= end + settle; the preliminary values
 * from the bar's end until then; and while start <= now < end a partial bar
 * that has reached the fraction f = (now - start) / (end - start) of the
 * preliminary one: v = max(1, round(v' * f)), n = max(1, round(n' * f)),
 * the open unchanged, c = o + round((c' - o) * f), h and l the partial
 * max/min of o and c widened by f of the final wicks, vw moved from o by f
 * toward vw' and kept inside [l, h]. So the volume only grows: partial <=
 * preliminary < final.
 */
static void bar_settle(const series_t *se, int64_t now, int64_t settle, bar_t *b)
{
    int64_t end = bar_end(se->tf, b->t);

    if (now >= end + settle)
        return;
    bar_prelim(se, b);
    if (now >= end)
        return;
    int64_t e = now - b->t, len = end - b->t;
    int64_t fhi = b->o > b->c ? b->o : b->c, flo = b->o < b->c ? b->o : b->c;
    b->c = b->o + scale_round(b->c - b->o, e, len);
    int64_t hi = b->o > b->c ? b->o : b->c, lo = b->o < b->c ? b->o : b->c;
    b->h = hi + scale_round(b->h - fhi, e, len);
    b->l = lo - scale_round(flo - b->l, e, len);
    b->v = scale_round(b->v, e, len);
    b->v = b->v > 1 ? b->v : 1;
    b->n = scale_round(b->n, e, len);
    b->n = b->n > 1 ? b->n : 1;
    b->vw = b->o * 100 + scale_round(b->vw - b->o * 100, e, len);
    if (b->vw < b->l * 100)
        b->vw = b->l * 100;
    if (b->vw > b->h * 100)
        b->vw = b->h * 100;
}

/* ------------------------------------------------------------------------ */
/* Base64 page tokens                                                        */
/* ------------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const char *in, size_t n, sbuf_t *out)
{
    const unsigned char *s = (const unsigned char *)in;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char q[4] = {b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63],
                     i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=',
                     i + 2 < n ? b64_alphabet[v & 63] : '='};
        sb_put(out, q, 4);
    }
}

static int b64_value(char ch)
{
    const char *p = ch ? strchr(b64_alphabet, ch) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

/* Strict decoding of padded standard base64 into out (NUL-terminated). */
static bool b64_decode(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in), o = 0;

    if (n == 0 || n % 4 != 0 || n / 4 * 3 >= cap)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            if (in[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64_value(in[i + j])) < 0) {
                return false;
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (char)(w >> 16);
        if (pad < 2)
            out[o++] = (char)(w >> 8);
        if (pad < 1)
            out[o++] = (char)w;
    }
    out[o] = '\0';
    return strlen(out) == o; /* an embedded NUL is not a token */
}

/* ------------------------------------------------------------------------ */
/* Simulator state                                                           */
/* ------------------------------------------------------------------------ */

/* The knobs: set from the command line, changed by /__sim/set. */
typedef struct knobs {
    char key[SIM_STR_MAX];
    char secret[SIM_STR_MAX];
    int64_t latency_ms;
    double rate;  /* requests per second; 0 = unlimited */
    double burst; /* bucket size */
    double fail_rate;
    double malformed_rate;
    double hang_rate;  /* fraction of bars requests never answered */
    double stall_rate; /* fraction of bars responses cut off mid-body */
    bool short_pages;
    bool trailing_empty;
    bool gzip;
    bool free_plan;
    bool token_binds_limit; /* a token reused with another limit is invalid */
    int64_t max_bars;
    int64_t settle_seconds; /* how long after its end a bar stays preliminary */
    bool fill_holes;        /* serve the bars of the "HOLE…" symbols' holes */
    char removed[SIM_REMOVED_MAX][SIM_ASSET_SYM]; /* symbols left out of /v2/assets */
    int nremoved;
    /* Fixed windows beside the bucket: at most win_limit[i] requests in each
     * win_ms[i]-long window aligned on the epoch (wall clock). */
    int64_t win_ms[SIM_WINDOWS_MAX];
    int64_t win_limit[SIM_WINDOWS_MAX];
    int nwin;
} knobs_t;

/*
 * Every counted request lands in exactly one of by_status, malformed, hung
 * and stalled, so requests is their sum.
 */
typedef struct counters {
    uint64_t requests;
    uint64_t malformed;
    uint64_t hung;    /* requests read and never answered */
    uint64_t stalled; /* responses sent up to half their body, then nothing */
    uint64_t bars_served;
    uint64_t pages;
    uint64_t assets_requests;            /* GET /v2/assets (also in requests and by_status) */
    uint64_t calendar_requests;          /* GET /v2/calendar (likewise) */
    uint64_t corporate_actions_requests; /* GET /v1/corporate-actions (likewise) */
    uint64_t by_status[600];
    /* A ring of per-second bars-request counts; slot i holds second sec[i]. */
    int64_t sec[SIM_WINDOW];
    uint64_t count[SIM_WINDOW];
} counters_t;

typedef struct conn conn_t;

typedef struct sim {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_signal_t sig_int;
    uv_signal_t sig_term;
    conn_t *conns; /* every open connection, so shutdown can close them */
    knobs_t k;
    uint64_t rng;
    double tokens;                     /* the rate-limit bucket */
    uint64_t refill_ns;                /* uv_hrtime() of the last refill */
    int64_t win_id[SIM_WINDOWS_MAX];   /* which window (epoch ms / win_ms) win_used counts */
    int64_t win_used[SIM_WINDOWS_MAX]; /* requests admitted in it */
    counters_t ctr;
    struct asset *assets; /* the /v2/assets universe, sorted by symbol */
    size_t nassets;
    struct action *actions; /* SIM_ACTIONS_MAX: the static ones, then the added ones */
    int nactions, nstatic;
    uint64_t action_seq; /* numbers added actions, so each one has its own id */
    uint64_t held;       /* connections now held open by hang or stall (not reset) */
    bool stopping;
} sim_t;

/* A response as the handlers build it; conn_respond turns it into bytes. */
typedef struct response {
    int status;
    const char *ctype;
    sbuf_t body;
    char extra[256]; /* extra header lines, each ending in CRLF */
    bool close;      /* send "Connection: close" and close after writing */
    bool gzip_ok;    /* the client accepts gzip */
    bool counted;    /* counts in /__sim/counters (everything but /__sim/) */
    bool malformed;  /* a deliberately broken 200 */
    bool hang;       /* send nothing, ever; hold the connection */
    bool stall;      /* send the head and half the body, then hold the connection */
} response_t;

#define CT_JSON "application/json; charset=utf-8"
#define CT_HTML "text/html"

static const char html_401[] =
    "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n";
static const char html_502[] =
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n";
static const char html_504[] =
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n";

static void resp_set(response_t *r, int status, const char *ctype, const char *body)
{
    r->status = status;
    r->ctype = ctype;
    r->body.len = 0;
    sb_puts(&r->body, body);
}

static void resp_message(response_t *r, int status, const char *msg)
{
    r->status = status;
    r->ctype = CT_JSON;
    r->body.len = 0;
    sb_puts(&r->body, "{\"message\":");
    sb_json_str(&r->body, msg);
    sb_putc(&r->body, '}');
}

/* ------------------------------------------------------------------------ */
/* Query strings                                                             */
/* ------------------------------------------------------------------------ */

typedef struct kv {
    char *k;
    char *v;
} kv_t;

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX in place. '+' stays '+' (see the brief; the real server, a Go
 * program, would turn it into a space). */
static bool pct_decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = hex_value(r[1]), lo = hi < 0 ? -1 : hex_value(r[2]);
        if (hi < 0 || lo < 0)
            return false;
        *w++ = (char)(hi * 16 + lo);
        r += 2;
    }
    *w = '\0';
    return true;
}

/* Splits and decodes a query string in place. Returns the number of pairs, or
 * -1 with a message for a bad escape or too many parameters. */
static int query_split(char *qs, kv_t *kv, int cap, sbuf_t *msg)
{
    int n = 0;
    char *p = qs;

    while (p && *p) {
        char *amp = strchr(p, '&');
        if (amp)
            *amp = '\0';
        if (*p) {
            if (n == cap) {
                sb_puts(msg, "too many query parameters");
                return -1;
            }
            char *eq = strchr(p, '=');
            if (eq)
                *eq = '\0';
            kv[n].k = p;
            kv[n].v = eq ? eq + 1 : p + strlen(p);
            if (!pct_decode(kv[n].k) || !pct_decode(kv[n].v)) {
                sb_puts(msg, "invalid URL escape in query");
                return -1;
            }
            n++;
        }
        p = amp ? amp + 1 : NULL;
    }
    return n;
}

/* The first value of key, like Go's url.Values.Get, or NULL. */
static const char *query_get(const kv_t *kv, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(kv[i].k, key) == 0)
            return kv[i].v;
    return NULL;
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Splits a comma-separated symbol list in place into a sorted, de-duplicated
 * array (*out, caller frees; the strings stay in list). Returns 0, or -1 with
 * *bad naming the first malformed symbol, or -2 when out of memory.
 */
static int symbols_split(char *list, char ***out, size_t *nout, const char **bad)
{
    size_t n = 1, k = 0;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    char **v = calloc(n, sizeof *v);
    if (!v)
        return -2;
    for (char *p = list;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!symbol_valid(p)) {
            *bad = p;
            free(v);
            return -1;
        }
        v[k++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    qsort(v, k, sizeof *v, sym_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    *out = v;
    *nout = u;
    return 0;
}

/* Strict decimal integer, reporting Go's strconv wording on failure. */
static bool parse_int(const char *s, int64_t *out, const char **why)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || (s[0] != '-' && s[0] != '+' && (s[0] < '0' || s[0] > '9')) || s[0] == ' ') {
        *why = "invalid syntax";
        return false;
    }
    if (errno == ERANGE) {
        *why = "value out of range";
        return false;
    }
    *out = v;
    return true;
}

/* A limit= parameter, 1 to max, with the measured 400 messages; false (said why in msg) if not. */
static bool limit_parse(const char *v, int64_t max, int64_t *out, sbuf_t *msg)
{
    const char *why;
    if (!parse_int(v, out, &why)) {
        sb_printf(msg,
                  "Invalid format for parameter limit: error binding string parameter: "
                  "strconv.ParseInt: parsing \"%s\": %s",
                  v, why);
        return false;
    }
    if (*out < 1) {
        sb_puts(msg, "invalid limit: must be positive");
        return false;
    }
    if (*out > max) {
        sb_printf(msg, "invalid limit: exceeds maximum of %lld", (long long)max);
        return false;
    }
    return true;
}

static bool parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static bool adjustment_valid(const char *s)
{
    static const char *const names[] = {"raw", "split", "dividend", "spin-off", "all"};
    const char *p = s;

    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        bool ok = false;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i]) == len && strncmp(p, names[i], len) == 0)
                ok = true;
        if (!ok)
            return false;
        if (!comma)
            return true;
        p = comma + 1;
    }
}

/*
 * Resolves start and end (either may be NULL) into inclusive bounds on bar
 * starts. Bars never start in the future, so hi is capped at now; a fraction
 * of a second rounds start up and end down. Under the free plan the default
 * end is now - 15 min, as the API doc records for accounts without real-time
 * entitlement. Returns false with the API's message.
 */
static bool range_resolve(const char *start, const char *end, bool free_plan, int64_t now,
                          int64_t *lo, int64_t *hi, ts_t *end_ts, sbuf_t *msg)
{
    ts_t s = {floor_div(now, SIM_DAY) * SIM_DAY, 0};
    ts_t e = {free_plan ? now - SIM_FREE_DELAY : now, 0};

    if (start && !parse_time(start, &s)) {
        sb_printf(msg,
                  "Invalid format for parameter start: error parsing '%s' as RFC3339 or "
                  "2006-01-02 time",
                  start);
        return false;
    }
    if (end && !parse_time(end, &e)) {
        sb_printf(msg,
                  "Invalid format for parameter end: error parsing '%s' as RFC3339 or "
                  "2006-01-02 time",
                  end);
        return false;
    }
    if (e.sec < s.sec || (e.sec == s.sec && e.ns < s.ns)) {
        sb_puts(msg, "end should not be before start");
        return false;
    }
    *lo = s.sec + (s.ns > 0);
    *hi = e.sec < now ? e.sec : now;
    *end_ts = e;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Corporate actions and split adjustment                                   */
/* ------------------------------------------------------------------------ */

/*
 * The corporate actions the simulator knows (GET /v1/corporate-actions,
 * alpaca-more-api.md §4): a static list (the FB -> META name change
 * processed 2022-06-09, and the 2024 cash dividends of AAPL and MSFT), plus
 * the splits a test adds with /__sim/set?split=. There is no static split, so
 * split-adjusted bars equal the raw ones until a test adds one; an added
 * split is processed the moment it is added (whatever its process_date) and
 * from then on changes the split-adjusted bars before its ex-date.
 * Dividends never change bars: the simulator adjusts for splits only.
 */
enum { CA_FORWARD_SPLIT, CA_REVERSE_SPLIT, CA_CASH_DIVIDEND, CA_NAME_CHANGE, CA_KINDS };
static const char *const ca_group_names[CA_KINDS] = {"forward_splits", "reverse_splits",
                                                     "cash_dividends", "name_changes"};
/* Every type the API accepts in types=; only the first four have records. */
static const char *const ca_type_names[] = {
    "forward_split",       "reverse_split",         "cash_dividend",  "name_change",
    "unit_split",          "stock_dividend",        "spin_off",       "cash_merger",
    "stock_merger",        "stock_and_cash_merger", "redemption",     "worthless_removal",
    "rights_distribution", "partial_call",          "reorganization",
};
#define CA_TYPE_COUNT (sizeof ca_type_names / sizeof ca_type_names[0])

typedef struct action {
    int kind;
    char sym[SIM_ASSET_SYM];     /* the symbol; the old one of a name change */
    char new_sym[SIM_ASSET_SYM]; /* name changes only */
    int64_t new_rate, old_rate;  /* splits */
    int64_t rate;                /* cash dividends, in ten-thousandths of a dollar */
    int64_t process_date, ex_date, record_date, payable_date; /* days since the epoch */
    char id[40];
} action_t;

/* Processed splits in effect for one symbol (SIM_SPLITS_PER_SYMBOL at most:
 * further ones are ignored, so the exact arithmetic cannot overflow). */
#define SIM_SPLITS_PER_SYMBOL 8
typedef struct splits {
    int n;
    int64_t ex[SIM_SPLITS_PER_SYMBOL]; /* New York midnight of the ex-date, Unix time */
    int64_t new_rate[SIM_SPLITS_PER_SYMBOL], old_rate[SIM_SPLITS_PER_SYMBOL];
} splits_t;

static void action_id(action_t *a, uint64_t seq)
{
    uint64_t h = fnv1a(FNV_BASIS, ca_group_names[a->kind]);
    h = mix64(fnv1a(fnv1a(h, a->sym), a->new_sym) ^ mix64((uint64_t)a->ex_date) ^
              mix64((uint64_t)a->process_date + 7) ^ mix64(seq + 0x1234567ULL));
    snprintf(a->id, sizeof a->id, "%08x-%04x-4%03x-b%03x-%012" PRIx64, (unsigned)(h >> 32),
             (unsigned)((h >> 16) & 0xffff), (unsigned)(h & 0xfff), (unsigned)((h >> 40) & 0xfff),
             (uint64_t)(mix64(h) & 0xffffffffffffULL));
}

/* A CUSIP-shaped 9-character code drawn from the symbol and salt. */
static void cusip_of(const char *sym, const char *salt, char out[10])
{
    static const char alnum[] = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ";
    uint64_t h = mix64(fnv1a(fnv1a(FNV_BASIS, sym), salt));
    for (int i = 0; i < 9; i++) {
        out[i] = i < 6 ? alnum[h % (sizeof alnum - 1)] : (char)('0' + h % 10);
        h = mix64(h + (uint64_t)i);
    }
    out[9] = '\0';
}

/* The trading day n trading days before (n < 0) or after (n > 0) day. */
static int64_t trading_day_step(int64_t day, int n)
{
    while (n != 0) {
        day += n > 0 ? 1 : -1;
        if (trading_day(day))
            n += n > 0 ? -1 : 1;
    }
    return day;
}

/* Fills a split: forward when new_rate > old_rate, reverse otherwise. The
 * record date is two trading days and the payable date one trading day
 * before the ex-date (as for NVDA's 2024 split). */
static void action_split(action_t *a, const char *sym, int64_t ex, int64_t new_rate,
                         int64_t old_rate, int64_t process, uint64_t seq)
{
    memset(a, 0, sizeof *a);
    a->kind = new_rate > old_rate ? CA_FORWARD_SPLIT : CA_REVERSE_SPLIT;
    snprintf(a->sym, sizeof a->sym, "%s", sym);
    a->new_rate = new_rate;
    a->old_rate = old_rate;
    a->ex_date = ex;
    a->process_date = process;
    a->record_date = trading_day_step(ex, -2);
    a->payable_date = trading_day_step(ex, -1);
    action_id(a, seq);
}

/* The static records, in a[] (room for at least 16); returns how many. */
static int actions_static(action_t *a)
{
    static const struct {
        const char *sym;
        int y, m, d, rm, rd, pm, pd;
        int64_t rate;
    } dividends[] = {
        {"AAPL", 2024, 2, 9, 2, 12, 2, 15, 2400},  {"AAPL", 2024, 5, 10, 5, 13, 5, 16, 2500},
        {"AAPL", 2024, 8, 12, 8, 12, 8, 15, 2500}, {"AAPL", 2024, 11, 8, 11, 11, 11, 14, 2500},
        {"MSFT", 2024, 2, 14, 2, 15, 3, 14, 7500}, {"MSFT", 2024, 5, 15, 5, 16, 6, 13, 7500},
        {"MSFT", 2024, 8, 15, 8, 15, 9, 12, 7500}, {"MSFT", 2024, 11, 21, 11, 21, 12, 12, 8300},
    };
    int n = 0;

    memset(&a[n], 0, sizeof a[n]);
    a[n].kind = CA_NAME_CHANGE;
    snprintf(a[n].sym, sizeof a[n].sym, "FB");
    snprintf(a[n].new_sym, sizeof a[n].new_sym, "META");
    a[n].process_date = a[n].ex_date = days_from_civil(2022, 6, 9);
    action_id(&a[n], (uint64_t)n);
    n++;
    for (size_t i = 0; i < sizeof dividends / sizeof dividends[0]; i++, n++) {
        memset(&a[n], 0, sizeof a[n]);
        a[n].kind = CA_CASH_DIVIDEND;
        snprintf(a[n].sym, sizeof a[n].sym, "%s", dividends[i].sym);
        a[n].rate = dividends[i].rate;
        a[n].ex_date = days_from_civil(dividends[i].y, dividends[i].m, dividends[i].d);
        a[n].record_date = days_from_civil(dividends[i].y, dividends[i].rm, dividends[i].rd);
        a[n].payable_date = days_from_civil(dividends[i].y, dividends[i].pm, dividends[i].pd);
        a[n].process_date = a[n].ex_date;
        action_id(&a[n], (uint64_t)n);
    }
    return n;
}

/* The splits of sym among actions[0..n), ordered by ex-date. */
static void splits_of(const action_t *actions, int n, const char *sym, splits_t *out)
{
    out->n = 0;
    for (int i = 0; i < n && out->n < SIM_SPLITS_PER_SYMBOL; i++) {
        const action_t *a = &actions[i];
        if ((a->kind != CA_FORWARD_SPLIT && a->kind != CA_REVERSE_SPLIT) || strcmp(a->sym, sym))
            continue;
        int j = out->n++;
        int64_t ex = et_to_utc(a->ex_date, 0);
        for (; j > 0 && out->ex[j - 1] > ex; j--) {
            out->ex[j] = out->ex[j - 1];
            out->new_rate[j] = out->new_rate[j - 1];
            out->old_rate[j] = out->old_rate[j - 1];
        }
        out->ex[j] = ex;
        out->new_rate[j] = a->new_rate;
        out->old_rate[j] = a->old_rate;
    }
}

__extension__ typedef __int128 i128;

/* x * num / den rounded half up, for x >= 0 and num, den > 0. */
static int64_t ratio_round(int64_t x, i128 num, i128 den)
{
    return (int64_t)((2 * (i128)x * num + den) / (2 * den));
}

/*
 * Split adjustment of a bar: every split whose ex-date (New York midnight)
 * is after the bar's start divides its prices by new/old and multiplies its
 * volume by new/old. The ratios of all such splits are multiplied first and
 * applied once, each value rounded half up (prices to the cent, at least
 * 0.01; vw to 4 places, kept inside [l, h]; volume to a whole share, at
 * least 1); n is unchanged.
 */
static void bar_adjust(const splits_t *sp, bar_t *b)
{
    i128 num = 1, den = 1; /* the volume factor new/old */

    for (int i = 0; i < sp->n; i++) {
        if (b->t < sp->ex[i]) {
            num *= sp->new_rate[i];
            den *= sp->old_rate[i];
        }
    }
    if (num == den)
        return;
    int64_t *price[] = {&b->o, &b->h, &b->l, &b->c};
    for (size_t i = 0; i < sizeof price / sizeof price[0]; i++) {
        *price[i] = ratio_round(*price[i], den, num);
        if (*price[i] < 1)
            *price[i] = 1;
    }
    b->vw = ratio_round(b->vw, den, num);
    if (b->vw < b->l * 100)
        b->vw = b->l * 100;
    if (b->vw > b->h * 100)
        b->vw = b->h * 100;
    b->v = ratio_round(b->v, num, den);
    if (b->v < 1)
        b->v = 1;
}

/* Does the adjustment list (validated) ask for split adjustment? */
static bool adjustment_splits(const char *adj)
{
    for (const char *p = adj; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if ((n == 5 && strncmp(p, "split", 5) == 0) || (n == 3 && strncmp(p, "all", 3) == 0))
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

/* Strict YYYY-MM-DD into days since the epoch. */
static bool parse_date(const char *s, int64_t *day)
{
    ts_t t;
    if (strlen(s) != 10 || !parse_time(s, &t))
        return false;
    *day = floor_div(t.sec, SIM_DAY);
    return true;
}

/*
 * Parses SYM:YYYY-MM-DD:NEW:OLD (the split knob and dump's --split); NEW and
 * OLD are whole numbers 1…1000 and differ.
 */
static bool split_parse(const char *v, char *sym, size_t cap, int64_t *ex, int64_t *new_rate,
                        int64_t *old_rate)
{
    char buf[SIM_STR_MAX];
    const char *why;

    if (strlen(v) >= sizeof buf)
        return false;
    memcpy(buf, v, strlen(v) + 1);
    char *c1 = strchr(buf, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
    if (!c3 || strchr(c3 + 1, ':'))
        return false;
    *c1 = *c2 = *c3 = '\0';
    if (!symbol_valid(buf) || strlen(buf) >= cap || !parse_date(c1 + 1, ex) ||
        !parse_int(c2 + 1, new_rate, &why) || !parse_int(c3 + 1, old_rate, &why) || *new_rate < 1 ||
        *new_rate > 1000 || *old_rate < 1 || *old_rate > 1000 || *new_rate == *old_rate)
        return false;
    memcpy(sym, buf, strlen(buf) + 1);
    return true;
}

/* Writes day as "YYYY-MM-DD" (with the quotes when quoted). */
static void sb_date(sbuf_t *b, int64_t day, bool quoted)
{
    int64_t y;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    sb_printf(b, quoted ? "\"%04" PRId64 "-%02d-%02d\"" : "%04" PRId64 "-%02d-%02d", y, m, d);
}

/* A record as §4 shows it, keys in that order. */
static void action_json(const action_t *a, sbuf_t *out)
{
    char cusip[10], cusip2[10];

    sb_printf(out, "{\"id\":\"%s\",", a->id);
    if (a->kind == CA_NAME_CHANGE) {
        sb_puts(out, "\"old_symbol\":");
        sb_json_str(out, a->sym);
        sb_puts(out, ",\"new_symbol\":");
        sb_json_str(out, a->new_sym);
        sb_puts(out, ",\"process_date\":");
        sb_date(out, a->process_date, true);
        sb_putc(out, '}');
        return;
    }
    sb_puts(out, "\"symbol\":");
    sb_json_str(out, a->sym);
    cusip_of(a->sym, "", cusip);
    if (a->kind == CA_REVERSE_SPLIT) {
        cusip_of(a->sym, a->id, cusip2);
        sb_printf(out, ",\"old_cusip\":\"%s\",\"new_cusip\":\"%s\"", cusip, cusip2);
    } else {
        sb_printf(out, ",\"cusip\":\"%s\"", cusip);
    }
    if (a->kind == CA_CASH_DIVIDEND) {
        char rate[32];
        snprintf(rate, sizeof rate, "%" PRId64 ".%04" PRId64, a->rate / 10000, a->rate % 10000);
        size_t n = strlen(rate);
        while (rate[n - 1] == '0' && rate[n - 2] != '.')
            rate[--n] = '\0';
        sb_printf(out, ",\"rate\":%s,\"special\":false,\"foreign\":false", rate);
    } else {
        sb_printf(out, ",\"new_rate\":%" PRId64 ",\"old_rate\":%" PRId64, a->new_rate, a->old_rate);
    }
    sb_puts(out, ",\"process_date\":");
    sb_date(out, a->process_date, true);
    sb_puts(out, ",\"ex_date\":");
    sb_date(out, a->ex_date, true);
    if (a->kind != CA_REVERSE_SPLIT) {
        sb_puts(out, ",\"record_date\":");
        sb_date(out, a->record_date, true);
        sb_puts(out, ",\"payable_date\":");
        sb_date(out, a->payable_date, true);
    }
    sb_putc(out, '}');
}

/* ------------------------------------------------------------------------ */
/* Bars requests                                                             */
/* ------------------------------------------------------------------------ */

/* A validated bars request. */
typedef struct query {
    bool single;
    char **syms; /* owned array, sorted and unique; the strings are borrowed */
    size_t nsyms;
    tf_t tf;
    int feed;
    int dir;
    int64_t lo, hi;
    ts_t end_ts;
    int64_t limit;    /* as asked for (default 1000), before short pages or --max-bars */
    bool split_adj;   /* adjustment is or lists split or all */
    uint64_t phash;   /* binds page tokens to the parameters other than limit */
    size_t start_idx; /* where the page starts: from the token, or the beginning */
    int64_t start_t;
    bool token_end; /* the token of a --trailing-empty final page */
} query_t;

/*
 * A page token belongs to the query that produced it: reused with any other
 * symbols, endpoint, timeframe, start, end, feed, adjustment, sort, asof or
 * currency it is an "invalid page_token". The hash covers those parameters,
 * normalised the way they select data (symbols sorted and de-duplicated,
 * "1H" = "1Hour", absent feed = sip, absent adjustment = raw, absent sort =
 * asc); start, end, asof and currency are hashed as sent. limit is not in the
 * hash but in the token itself, so that whether it binds can be switched at
 * run time (knobs_t.token_binds_limit) without invalidating tokens.
 */
static uint64_t query_hash(const query_t *q, const char *start, const char *end,
                           const char *adjustment, const char *asof, const char *currency)
{
    uint64_t h = fnv1a(FNV_BASIS, q->single ? "single|" : "multi|");
    for (size_t i = 0; i < q->nsyms; i++)
        h = fnv1a(fnv1a(h, q->syms[i]), ",");
    h = fnv1a(fnv1a(h, "|"), q->tf.canon);
    h = fnv1a(fnv1a(fnv1a(h, "|"), start ? start : "-"), "|");
    h = fnv1a(fnv1a(fnv1a(h, end ? end : "-"), "|"), feed_names[q->feed]);
    h = fnv1a(fnv1a(fnv1a(h, "|"), adjustment), q->dir > 0 ? "|asc" : "|desc");
    h = fnv1a(fnv1a(fnv1a(h, "|"), asof ? asof : "-"), "|");
    h = fnv1a(h, currency ? currency : "-");
    return mix64(h);
}

/* "v2|<query hash>|<limit>|<symbol>|<next bar start>", or "…|-|end" for the
 * --trailing-empty final page, in base64. */
static void token_encode(const query_t *q, const char *sym, int64_t t, sbuf_t *out)
{
    char plain[128];
    int n;
    if (sym)
        n = snprintf(plain, sizeof plain, "v2|%016" PRIx64 "|%" PRId64 "|%s|%" PRId64, q->phash,
                     q->limit, sym, t);
    else
        n = snprintf(plain, sizeof plain, "v2|%016" PRIx64 "|%" PRId64 "|-|end", q->phash,
                     q->limit);
    b64_encode(plain, (size_t)n, out);
}

/* Decodes a page token into q's cursor; false for anything foreign, for a
 * token of another query, and (when binds_limit) for one issued with another
 * limit. */
static bool token_decode(const char *tok, query_t *q, bool binds_limit)
{
    char plain[128], hash[17];
    if (!b64_decode(tok, plain, sizeof plain) || strncmp(plain, "v2|", 3) != 0)
        return false;
    const char *p = plain + 3;
    const char *bar1 = strchr(p, '|');
    if (!bar1 || bar1 - p != 16)
        return false;
    memcpy(hash, p, 16);
    hash[16] = '\0';
    char *hend = NULL;
    uint64_t h = strtoull(hash, &hend, 16);
    if (*hend || h != q->phash)
        return false;
    char *lim = (char *)bar1 + 1;
    char *bar_l = strchr(lim, '|');
    if (!bar_l)
        return false;
    *bar_l = '\0';
    const char *why;
    int64_t tok_limit;
    if (!parse_int(lim, &tok_limit, &why) || tok_limit < 1 || tok_limit > SIM_LIMIT_MAX)
        return false;
    if (binds_limit && tok_limit != q->limit)
        return false;
    char *sym = bar_l + 1;
    char *bar2 = strchr(sym, '|');
    if (!bar2)
        return false;
    *bar2 = '\0';
    const char *tail = bar2 + 1;
    if (strcmp(sym, "-") == 0) {
        q->token_end = true;
        return strcmp(tail, "end") == 0;
    }
    int64_t t;
    if (!parse_int(tail, &t, &why) || t < -100000000000LL || t > 300000000000LL)
        return false;
    char **hit = bsearch(&sym, q->syms, q->nsyms, sizeof *q->syms, sym_cmp);
    if (!hit)
        return false;
    q->start_idx = (size_t)(hit - q->syms);
    q->start_t = t;
    return true;
}

/* Validates a bars request in the order the checks are listed in the API
 * doc. path_sym is the single endpoint's symbol (decoded), else NULL.
 * Returns false with the 400 message in msg. */
static bool query_parse(sim_t *s, char *qs, char *path_sym, int64_t now, query_t *q, sbuf_t *msg)
{
    kv_t kv[SIM_MAX_PARAMS];
    int n = query_split(qs, kv, SIM_MAX_PARAMS, msg);
    const char *v, *bad = NULL;

    if (n < 0)
        return false;
    q->single = path_sym != NULL;
    q->dir = 1;
    q->feed = FEED_SIP;
    q->limit = SIM_LIMIT_DEFAULT;
    if (path_sym) {
        if (!symbol_valid(path_sym)) {
            sb_printf(msg, "invalid symbol: %s", path_sym);
            return false;
        }
        q->syms = calloc(1, sizeof *q->syms);
        if (!q->syms) {
            msg->oom = true;
            return false;
        }
        q->syms[0] = path_sym;
        q->nsyms = 1;
    } else {
        char *list = (char *)query_get(kv, n, "symbols");
        if (!list || !*list) {
            sb_puts(msg, "Invalid format for parameter symbols: query parameter 'symbols' "
                         "is required");
            return false;
        }
        int rc = symbols_split(list, &q->syms, &q->nsyms, &bad);
        if (rc == -1)
            sb_printf(msg, "invalid symbol: %s", bad);
        else if (rc < 0)
            msg->oom = true;
        if (rc < 0)
            return false;
    }
    v = query_get(kv, n, "timeframe");
    if (!v || !tf_parse(v, &q->tf)) {
        sb_printf(msg, "invalid timeframe: %s", v ? v : "");
        return false;
    }
    const char *start = query_get(kv, n, "start"), *end = query_get(kv, n, "end");
    if (!range_resolve(start, end, s->k.free_plan, now, &q->lo, &q->hi, &q->end_ts, msg))
        return false;
    if ((v = query_get(kv, n, "limit")) && !limit_parse(v, SIM_LIMIT_MAX, &q->limit, msg))
        return false;
    if ((v = query_get(kv, n, "feed")) && (q->feed = feed_parse(v)) < 0) {
        sb_printf(msg, "invalid feed: %s", v);
        return false;
    }
    const char *adjustment = query_get(kv, n, "adjustment");
    if (adjustment && !adjustment_valid(adjustment)) {
        sb_printf(msg, "invalid adjustment: %s", adjustment);
        return false;
    }
    q->split_adj = adjustment && adjustment_splits(adjustment);
    if ((v = query_get(kv, n, "sort"))) {
        if (strcmp(v, "asc") != 0 && strcmp(v, "desc") != 0) {
            sb_printf(msg, "invalid sort: %s", v);
            return false;
        }
        q->dir = strcmp(v, "asc") == 0 ? 1 : -1;
    }
    q->phash = query_hash(q, start, end, adjustment ? adjustment : "raw", query_get(kv, n, "asof"),
                          query_get(kv, n, "currency"));
    q->start_idx = 0;
    q->start_t = q->dir > 0 ? q->lo : q->hi;
    if ((v = query_get(kv, n, "page_token")) && !token_decode(v, q, s->k.token_binds_limit)) {
        sb_puts(msg, "invalid page_token");
        return false;
    }
    return true;
}

static void query_free(query_t *q)
{
    free(q->syms);
    q->syms = NULL;
}

/*
 * Writes one page of q holding at most page_limit bars. The walk starts at
 * the cursor and stops at the first bar that does not fit, which becomes the
 * next token, so nothing past the page is generated. Returns the bar count.
 */
static size_t page_build(const sim_t *s, const query_t *q, int64_t page_limit, int64_t now,
                         sbuf_t *out)
{
    size_t count = 0, next_idx = 0;
    int64_t next_t = 0;
    bool more = false;

    sb_puts(out, q->single ? "{\"bars\":" : "{\"bars\":{");
    for (size_t i = q->start_idx; i < q->nsyms && !q->token_end && !more; i++) {
        int64_t from = i == q->start_idx ? q->start_t : q->dir > 0 ? q->lo : q->hi;
        bool in_group = false;
        series_t se;
        bar_iter_t it;
        int64_t t;

        splits_t sp = {0};

        series_init(&se, q->syms[i], &q->tf, q->feed);
        se.holes = se.holes && !s->k.fill_holes;
        if (q->split_adj)
            splits_of(s->actions, s->nactions, se.sym, &sp);
        iter_init(&it, &se, q->lo, q->hi, q->dir, from);
        while (iter_next(&it, &t)) {
            if ((int64_t)count == page_limit) {
                more = true;
                next_idx = i;
                next_t = t;
                break;
            }
            if (!sb_reserve(out, SIM_BAR_MAX + 32))
                return count;
            char *p = out->p + out->len;
            if (in_group) {
                *p++ = ',';
            } else if (q->single) {
                *p++ = '[';
            } else {
                /* Symbols without bars on this page are absent keys. */
                if (count > 0)
                    *p++ = ',';
                *p++ = '"';
                p = put_str(p, se.sym);
                p = put_str(p, "\":[");
            }
            in_group = true;
            bar_t b;
            bar_make(&se, t, &b);
            bar_settle(&se, now, s->k.settle_seconds, &b);
            bar_adjust(&sp, &b);
            p = bar_json(p, &b);
            *p = '\0';
            out->len = (size_t)(p - out->p);
            count++;
        }
        if (in_group && !q->single)
            sb_putc(out, ']');
    }
    if (q->single) {
        sb_puts(out, count ? "],\"symbol\":" : "null,\"symbol\":");
        sb_json_str(out, q->syms[0]);
    } else {
        sb_putc(out, '}');
    }
    sb_puts(out, ",\"next_page_token\":");
    if (more || (s->k.trailing_empty && count > 0 && !q->token_end)) {
        sb_putc(out, '"');
        token_encode(q, more ? q->syms[next_idx] : NULL, next_t, out);
        sb_putc(out, '"');
    } else {
        sb_puts(out, "null");
    }
    sb_putc(out, '}');
    return count;
}

/* ------------------------------------------------------------------------ */
/* Faults, the rate limit and counters                                       */
/* ------------------------------------------------------------------------ */

/*
 * Replaces a good body with one of three broken ones: (a) cut somewhere in
 * its middle half, (b) one bar's "vw" turned into the string "x" (valid JSON,
 * wrong type), (c) "{"bars":" and nothing more. (b) needs a bar; on an empty
 * page it falls back to (c).
 */
static void malform_body(sim_t *s, sbuf_t *body)
{
    uint64_t kind = rng_below(&s->rng, 3);
    sbuf_t out = {0};

    if (kind == 1) {
        size_t at = (size_t)rng_below(&s->rng, body->len);
        const char *hit = memmem(body->p + at, body->len - at, "\"vw\":", 5);
        if (!hit)
            hit = memmem(body->p, body->len, "\"vw\":", 5);
        if (hit) {
            const char *val = hit + 5;
            const char *close = memchr(val, '}', body->len - (size_t)(val - body->p));
            if (close) {
                sb_put(&out, body->p, (size_t)(val - body->p));
                sb_puts(&out, "\"x\"");
                sb_put(&out, close, body->len - (size_t)(close - body->p));
            }
        }
        if (out.len == 0)
            kind = 2;
    }
    if (kind == 0) {
        size_t quarter = body->len / 4;
        size_t cut = quarter + (size_t)rng_below(&s->rng, body->len / 2 + 1);
        if (cut >= body->len)
            cut = body->len - 1;
        sb_put(&out, body->p, cut);
    } else if (kind == 2) {
        sb_puts(&out, "{\"bars\":");
    }
    sb_free(body);
    *body = out;
}

/* One of the gateway faults, chosen with the seeded generator. */
static void inject_5xx(sim_t *s, response_t *r)
{
    switch (rng_below(&s->rng, 4)) {
    case 0:
        resp_set(r, 500, CT_JSON, "{\"message\":\"internal server error\"}");
        break;
    case 1:
        resp_set(r, 502, CT_HTML, html_502);
        break;
    case 2:
        resp_set(r, 503, CT_JSON, "{\"message\":\"service unavailable\"}");
        break;
    default:
        resp_set(r, 504, CT_HTML, html_504);
        break;
    }
}

/* Refills the bucket continuously from the monotonic clock, then takes one
 * token if there is one. */
static bool bucket_take(sim_t *s)
{
    if (s->k.rate <= 0)
        return true;
    uint64_t now = uv_hrtime();
    s->tokens += (double)(now - s->refill_ns) / 1e9 * s->k.rate;
    if (s->tokens > s->k.burst)
        s->tokens = s->k.burst;
    s->refill_ns = now;
    if (s->tokens < 1.0)
        return false;
    s->tokens -= 1.0;
    return true;
}

static void bucket_reset(sim_t *s)
{
    s->tokens = s->k.burst;
    s->refill_ns = uv_hrtime();
}

/* Moves each fixed window to the one containing now_ms (a new window starts empty). */
static void windows_roll(sim_t *s, int64_t now_ms)
{
    for (int i = 0; i < s->k.nwin; i++) {
        int64_t id = floor_div(now_ms, s->k.win_ms[i]);
        if (id != s->win_id[i]) {
            s->win_id[i] = id;
            s->win_used[i] = 0;
        }
    }
}

/* Whether every fixed window has room for one more request (nothing is spent). */
static bool windows_room(sim_t *s, int64_t now_ms)
{
    windows_roll(s, now_ms);
    for (int i = 0; i < s->k.nwin; i++)
        if (s->win_used[i] >= s->k.win_limit[i])
            return false;
    return true;
}

static void windows_spend(sim_t *s)
{
    for (int i = 0; i < s->k.nwin; i++)
        s->win_used[i]++;
}

static void windows_reset(sim_t *s)
{
    for (int i = 0; i < SIM_WINDOWS_MAX; i++) {
        s->win_id[i] = INT64_MIN;
        s->win_used[i] = 0;
    }
}

/*
 * Parses "LEN:LIMIT[,LEN:LIMIT...]" (LEN = N with ms, s or m: 1s, 500ms, 1m)
 * into k's windows; "" or "off" clears them. False on a malformed list.
 */
static bool windows_parse(knobs_t *k, const char *v)
{
    int n = 0;
    if (*v == '\0' || strcmp(v, "off") == 0) {
        k->nwin = 0;
        return true;
    }
    for (const char *p = v; p;) {
        char *end;
        errno = 0;
        long long len = strtoll(p, &end, 10), mult;
        if (errno || end == p || len <= 0)
            return false;
        if (strncmp(end, "ms:", 3) == 0)
            mult = 1, end += 3;
        else if (strncmp(end, "s:", 2) == 0)
            mult = 1000, end += 2;
        else if (strncmp(end, "m:", 2) == 0)
            mult = 60000, end += 2;
        else
            return false;
        if (len > 86400000 / mult)
            return false;
        const char *lim = end;
        long long limit = strtoll(lim, &end, 10);
        if (errno || end == lim || limit < 1 || limit > 1000000000 || (*end && *end != ','))
            return false;
        if (n == SIM_WINDOWS_MAX)
            return false;
        k->win_ms[n] = len * mult;
        k->win_limit[n] = limit;
        n++;
        p = *end == ',' ? end + 1 : NULL;
    }
    k->nwin = n;
    return true;
}

/*
 * The X-RateLimit-* lines of a successful response, as Alpaca documents them:
 * Limit in requests per minute, Remaining, and Reset in epoch seconds. With
 * fixed windows they describe the binding one (the fewest requests left; the
 * longer on a tie): its limit scaled to a minute, what is left in it, and its
 * end rounded up to a second. With the bucket only, Limit is
 * the rate per minute, Remaining the whole tokens left, Reset when it is full.
 */
static void rate_headers(sim_t *s, int64_t now, int64_t now_ms, response_t *resp)
{
    if (s->k.nwin > 0) {
        int b = 0;
        for (int i = 1; i < s->k.nwin; i++) {
            int64_t left_i = s->k.win_limit[i] - s->win_used[i];
            int64_t left_b = s->k.win_limit[b] - s->win_used[b];
            if (left_i < left_b || (left_i == left_b && s->k.win_ms[i] > s->k.win_ms[b]))
                b = i;
        }
        int64_t end_ms = (floor_div(now_ms, s->k.win_ms[b]) + 1) * s->k.win_ms[b];
        /* Limit is per minute, as Alpaca documents it: 1s:10 says 600. */
        int64_t per_minute = (s->k.win_limit[b] * 60000 + s->k.win_ms[b] / 2) / s->k.win_ms[b];
        snprintf(resp->extra, sizeof resp->extra,
                 "X-RateLimit-Limit: %" PRId64 "\r\nX-RateLimit-Remaining: %" PRId64
                 "\r\nX-RateLimit-Reset: %" PRId64 "\r\n",
                 per_minute, s->k.win_limit[b] - s->win_used[b], floor_div(end_ms + 999, 1000));
    } else if (s->k.rate > 0) {
        double missing = s->k.burst - s->tokens;
        int64_t reset = now + (int64_t)ceil(missing > 0 ? missing / s->k.rate : 0);
        snprintf(resp->extra, sizeof resp->extra,
                 "X-RateLimit-Limit: %lld\r\nX-RateLimit-Remaining: %lld\r\n"
                 "X-RateLimit-Reset: %" PRId64 "\r\n",
                 (long long)llround(s->k.rate * 60), (long long)floor(s->tokens), reset);
    }
}

static void counters_tick(counters_t *c, int64_t now)
{
    size_t slot = (size_t)floor_mod(now, SIM_WINDOW);
    if (c->sec[slot] != now) {
        c->sec[slot] = now;
        c->count[slot] = 0;
    }
    c->count[slot]++;
}

static void counters_json(const counters_t *c, uint64_t held, int64_t now, sbuf_t *out)
{
    static const int always[] = {400, 401, 403, 429, 500, 502, 503, 504};

    sb_printf(out,
              "{\"requests\":%" PRIu64 ",\"by_status\":{\"200\":%" PRIu64
              ",\"200_malformed\":%" PRIu64,
              c->requests, c->by_status[200], c->malformed);
    for (int st = 100; st < 600; st++) {
        bool listed = false;
        for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
            listed |= always[i] == st;
        if (st != 200 && (listed || c->by_status[st]))
            sb_printf(out, ",\"%d\":%" PRIu64, st, c->by_status[st]);
    }
    sb_printf(out,
              "},\"hung\":%" PRIu64 ",\"stalled\":%" PRIu64 ",\"held\":%" PRIu64
              ",\"bars_served\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"assets_requests\":%" PRIu64
              ",\"calendar_requests\":%" PRIu64 ",\"corporate_actions_requests\":%" PRIu64
              ",\"per_second\":[",
              c->hung, c->stalled, held, c->bars_served, c->pages, c->assets_requests,
              c->calendar_requests, c->corporate_actions_requests);
    bool first = true;
    for (int64_t sec = now - SIM_WINDOW + 1; sec <= now; sec++) {
        size_t slot = (size_t)floor_mod(sec, SIM_WINDOW);
        if (c->sec[slot] == sec && c->count[slot]) {
            sb_printf(out, "%s[%" PRId64 ",%" PRIu64 "]", first ? "" : ",", sec, c->count[slot]);
            first = false;
        }
    }
    sb_puts(out, "]}");
}

/* ------------------------------------------------------------------------ */
/* Assets (trading API)                                                      */
/* ------------------------------------------------------------------------ */

/*
 * GET /v2/assets: the universe, as the trading API lists it (a plain JSON
 * array, no pagination). It is deterministic: a list of well-known names,
 * some with '.' and some delisted, then S000A…S999A and S0000A…S9999A (the
 * symbols the benchmarks generate), about 11,000 in all, each one with an
 * exchange, flags and attributes drawn from a hash of its symbol. Every
 * symbol in it has bars (none is a "ZZ…" symbol). Symbols removed with
 * --remove-asset or /__sim/set?remove_asset= are left out, so a test can show
 * a symbol disappearing from the list.
 */
static const char *const asset_exchanges[] = {"NYSE", "NASDAQ", "ARCA", "AMEX", "BATS"};

typedef struct asset {
    char sym[SIM_ASSET_SYM];
    const char *name; /* NULL: generated from the symbol */
    const char *exchange;
    bool active;
    uint64_t h;
} asset_t;

static const struct {
    const char *sym, *exchange, *name;
    bool active;
} named_assets[] = {
    {"AAPL", "NASDAQ", "Apple Inc. Common Stock", true},
    {"AMD", "NASDAQ", "Advanced Micro Devices, Inc. Common Stock", true},
    {"AMZN", "NASDAQ", "Amazon.com, Inc. Common Stock", true},
    {"BF.A", "NYSE", "Brown-Forman Corporation Class A Common Stock", true},
    {"BF.B", "NYSE", "Brown-Forman Corporation Class B Common Stock", true},
    {"BRK.A", "NYSE", "Berkshire Hathaway Inc. Class A", true},
    {"BRK.B", "NYSE", "Berkshire Hathaway Inc. Class B", true},
    {"DIA", "ARCA", "SPDR Dow Jones Industrial Average ETF Trust", true},
    {"FB", "NASDAQ", "Meta Platforms, Inc. (old symbol)", false},
    {"FRC", "NYSE", "First Republic Bank", false},
    {"GLD", "ARCA", "SPDR Gold Trust", true},
    {"GOOG", "NASDAQ", "Alphabet Inc. Class C Capital Stock", true},
    {"GOOGL", "NASDAQ", "Alphabet Inc. Class A Common Stock", true},
    {"HEI.A", "NYSE", "HEICO Corporation Class A Common Stock", true},
    {"IBM", "NYSE", "International Business Machines Corporation Common Stock", true},
    {"IWM", "ARCA", "iShares Russell 2000 ETF", true},
    {"JPM", "NYSE", "JPMorgan Chase & Co. Common Stock", true},
    {"KO", "NYSE", "Coca-Cola Company (The) Common Stock", true},
    {"META", "NASDAQ", "Meta Platforms, Inc. Class A Common Stock", true},
    {"MSFT", "NASDAQ", "Microsoft Corporation Common Stock", true},
    {"NFLX", "NASDAQ", "Netflix, Inc. Common Stock", true},
    {"NVDA", "NASDAQ", "NVIDIA Corporation Common Stock", true},
    {"QQQ", "NASDAQ", "Invesco QQQ Trust, Series 1", true},
    {"SPY", "ARCA", "SPDR S&P 500 ETF Trust", true},
    {"TSLA", "NASDAQ", "Tesla, Inc. Common Stock", true},
    {"TWTR", "NYSE", "Twitter, Inc. Common Stock", false},
    {"UVXY", "BATS", "ProShares Ultra VIX Short-Term Futures ETF", true},
    {"V", "NYSE", "Visa Inc.", true},
    {"XLF", "ARCA", "Financial Select Sector SPDR Fund", true},
    {"XOM", "NYSE", "Exxon Mobil Corporation Common Stock", true},
};

static int asset_cmp(const void *a, const void *b)
{
    return strcmp(((const asset_t *)a)->sym, ((const asset_t *)b)->sym);
}

/* Builds the sorted universe into *out (caller frees); false when out of memory. */
static bool assets_build(asset_t **out, size_t *nout)
{
    size_t nnamed = sizeof named_assets / sizeof named_assets[0];
    size_t cap = nnamed + 1000 + 10000, n = 0;
    asset_t *v = calloc(cap, sizeof *v);

    if (!v)
        return false;
    for (size_t i = 0; i < nnamed; i++, n++) {
        snprintf(v[n].sym, sizeof v[n].sym, "%s", named_assets[i].sym);
        v[n].name = named_assets[i].name;
        v[n].exchange = named_assets[i].exchange;
        v[n].active = named_assets[i].active;
        v[n].h = mix64(fnv1a(FNV_BASIS, v[n].sym));
    }
    for (int i = 0; i < 11000; i++, n++) {
        if (i < 1000)
            snprintf(v[n].sym, sizeof v[n].sym, "S%03dA", i);
        else
            snprintf(v[n].sym, sizeof v[n].sym, "S%04dA", i - 1000);
        v[n].h = mix64(fnv1a(FNV_BASIS, v[n].sym));
        v[n].exchange = asset_exchanges[v[n].h % 5];
        v[n].active = (v[n].h >> 8) % 25 != 0; /* about 4% delisted */
    }
    qsort(v, n, sizeof *v, asset_cmp);
    *out = v;
    *nout = n;
    return true;
}

static bool asset_removed(const knobs_t *k, const char *sym)
{
    for (int i = 0; i < k->nremoved; i++)
        if (strcmp(k->removed[i], sym) == 0)
            return true;
    return false;
}

/* The attributes of an asset as the API names them (a subset, from its hash). */
static const char *const asset_attribute_names[] = {"fractional_eh_enabled", "has_options",
                                                    "ptp_no_exception"};

static bool asset_has_attribute(const asset_t *a, size_t i)
{
    return a->active && ((a->h >> (16 + i)) & 1) != 0;
}

/* True when a has one of the attributes in the comma list want (NULL: any asset). */
static bool asset_matches_attributes(const asset_t *a, const char *want)
{
    if (!want || !*want)
        return true;
    for (size_t i = 0; i < sizeof asset_attribute_names / sizeof asset_attribute_names[0]; i++) {
        size_t len = strlen(asset_attribute_names[i]);
        for (const char *p = want; p;) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n == len && strncmp(p, asset_attribute_names[i], n) == 0 &&
                asset_has_attribute(a, i))
                return true;
            p = comma ? comma + 1 : NULL;
        }
    }
    return false;
}

static void asset_json(const asset_t *a, const char *cls, sbuf_t *out)
{
    uint64_t h = a->h;
    bool tradable = a->active && (h >> 12) % 50 != 0;
    char id[40];

    snprintf(id, sizeof id, "%08x-%04x-4%03x-a%03x-%012" PRIx64, (unsigned)(h >> 32),
             (unsigned)((h >> 16) & 0xffff), (unsigned)(h & 0xfff), (unsigned)((h >> 40) & 0xfff),
             (uint64_t)(mix64(h) & 0xffffffffffffULL));
    sb_printf(out, "{\"id\":\"%s\",\"class\":\"%s\",\"exchange\":\"%s\",\"symbol\":", id, cls,
              a->exchange);
    sb_json_str(out, a->sym);
    sb_puts(out, ",\"name\":");
    if (a->name) {
        sb_json_str(out, a->name);
    } else {
        sb_printf(out, "\"Simulated %s Corporation Common Stock\"", a->sym);
    }
    sb_printf(out,
              ",\"status\":\"%s\",\"tradable\":%s,\"marginable\":%s,\"shortable\":%s,"
              "\"easy_to_borrow\":%s,\"fractionable\":%s,\"attributes\":[",
              a->active ? "active" : "inactive", tradable ? "true" : "false",
              tradable && (h >> 20) % 4 != 0 ? "true" : "false",
              tradable && (h >> 24) % 3 != 0 ? "true" : "false",
              tradable && (h >> 28) % 2 != 0 ? "true" : "false",
              tradable && (h >> 32) % 5 != 0 ? "true" : "false");
    bool first = true;
    for (size_t i = 0; i < sizeof asset_attribute_names / sizeof asset_attribute_names[0]; i++) {
        if (asset_has_attribute(a, i)) {
            sb_printf(out, "%s\"%s\"", first ? "" : ",", asset_attribute_names[i]);
            first = false;
        }
    }
    sb_puts(out, "]}");
}

static void trading_error(response_t *r, int status, int64_t code, const char *msg)
{
    r->status = status;
    r->ctype = CT_JSON;
    r->body.len = 0;
    sb_printf(&r->body, "{\"code\":%" PRId64 ",\"message\":", code);
    sb_json_str(&r->body, msg);
    sb_putc(&r->body, '}');
}

/* ------------------------------------------------------------------------ */
/* Request handling                                                          */
/* ------------------------------------------------------------------------ */

typedef struct http_req {
    char *method;
    char *path;
    char *query; /* after '?', or "" */
    const char *key_id;
    const char *secret_key;
    bool keep_alive;
    bool gzip_ok;
} http_req_t;

static bool auth_ok(const sim_t *s, const http_req_t *r)
{
    return r->key_id && r->secret_key && strcmp(r->key_id, s->k.key) == 0 &&
           strcmp(r->secret_key, s->k.secret) == 0;
}

/*
 * The bars endpoints, checked in the order a gateway and then the service
 * would: authentication, rate limit, injected gateway faults, validation,
 * entitlement, and only then data.
 */
static void bars_handle(sim_t *s, http_req_t *r, char *path_sym, response_t *resp)
{
    int64_t now_ms = wall_now_ms(), now = floor_div(now_ms, 1000);
    query_t q = {0};
    sbuf_t msg = {0};

    counters_tick(&s->ctr, now);
    /* A dead upstream neither checks keys nor spends rate-limit tokens. */
    if (s->k.hang_rate > 0 && rng_unit(&s->rng) < s->k.hang_rate) {
        resp->hang = true;
        goto out;
    }
    if (s->k.stall_rate > 0 && rng_unit(&s->rng) < s->k.stall_rate)
        resp->stall = true;
    if (!auth_ok(s, r)) {
        resp_set(resp, 401, CT_HTML, html_401);
        goto out;
    }
    if (!windows_room(s, now_ms) || !bucket_take(s)) {
        /* Verbatim, space included; no rate-limit headers, no Retry-After. */
        resp_set(resp, 429, CT_JSON, "{\"message\": \"too many requests.\"}");
        goto out;
    }
    windows_spend(s);
    if (s->k.fail_rate > 0 && rng_unit(&s->rng) < s->k.fail_rate) {
        inject_5xx(s, resp);
        goto out;
    }
    if (path_sym && !pct_decode(path_sym)) {
        resp_message(resp, 400, "invalid URL escape in path");
        goto out;
    }
    if (!query_parse(s, r->query, path_sym, now, &q, &msg)) {
        resp_message(resp, 400, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    if (s->k.free_plan && q.feed == FEED_SIP && q.end_ts.sec >= now - SIM_FREE_DELAY &&
        (q.end_ts.sec > now - SIM_FREE_DELAY || q.end_ts.ns > 0)) {
        resp_message(resp, 403, "subscription does not permit querying recent SIP data");
        goto out;
    }

    int64_t page_limit = q.limit;
    if (s->k.short_pages && page_limit > 1) {
        int64_t third = page_limit / 3;
        page_limit = third + (int64_t)rng_below(&s->rng, (uint64_t)(page_limit - third + 1));
    }
    if (page_limit > s->k.max_bars)
        page_limit = s->k.max_bars;
    if (page_limit < 1)
        page_limit = 1;
    resp->status = 200;
    resp->ctype = CT_JSON;
    resp->body.len = 0;
    size_t nbars = page_build(s, &q, page_limit, now, &resp->body);
    if (s->k.malformed_rate > 0 && rng_unit(&s->rng) < s->k.malformed_rate) {
        malform_body(s, &resp->body);
        resp->malformed = true;
    } else if (!resp->stall) {
        s->ctr.bars_served += nbars;
        s->ctr.pages++;
    }
    rate_headers(s, now, now_ms, resp);
out:
    sb_free(&msg);
    query_free(&q);
}

/*
 * GET /v2/assets?status=&asset_class=&exchange=&attributes=: authenticated
 * like the data API (a trading-API 401 body), spends no bars rate-limit token
 * (the two APIs have separate budgets). status is active, inactive or all
 * (absent: all); asset_class us_equity (the default) or crypto; an exchange
 * that lists nothing gives []; other values of status or asset_class are 422.
 */
static void assets_handle(sim_t *s, http_req_t *r, response_t *resp)
{
    static const asset_t crypto[] = {
        {"BTC/USD", "Bitcoin / US Dollar", "CRYPTO", true, 0x9e3779b97f4a7c15ULL},
        {"ETH/USD", "Ethereum / US Dollar", "CRYPTO", true, 0xbf58476d1ce4e5b9ULL},
    };
    kv_t kv[SIM_MAX_PARAMS];
    sbuf_t msg = {0};
    int n;

    s->ctr.assets_requests++;
    if (!auth_ok(s, r)) {
        trading_error(resp, 401, 40110000, "request is not authorized");
        goto out;
    }
    if ((n = query_split(r->query, kv, SIM_MAX_PARAMS, &msg)) < 0) {
        trading_error(resp, 422, 40010001, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    const char *status = query_get(kv, n, "status"), *cls = query_get(kv, n, "asset_class");
    const char *exchange = query_get(kv, n, "exchange");
    const char *attributes = query_get(kv, n, "attributes");
    int want = 2; /* 0 inactive, 1 active, 2 all */
    if (status && strcmp(status, "active") == 0) {
        want = 1;
    } else if (status && strcmp(status, "inactive") == 0) {
        want = 0;
    } else if (status && strcmp(status, "all") != 0) {
        sb_printf(&msg, "invalid status: %s", status);
        trading_error(resp, 422, 40010001, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    const asset_t *list = s->assets;
    size_t count = s->nassets;
    if (!cls || strcmp(cls, "us_equity") == 0) {
        cls = "us_equity";
    } else if (strcmp(cls, "crypto") == 0) {
        list = crypto;
        count = sizeof crypto / sizeof crypto[0];
    } else {
        sb_printf(&msg, "invalid asset_class: %s", cls);
        trading_error(resp, 422, 40010001, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    resp->status = 200;
    resp->ctype = CT_JSON;
    resp->body.len = 0;
    sb_putc(&resp->body, '[');
    bool first = true;
    for (size_t i = 0; i < count; i++) {
        const asset_t *a = &list[i];
        if ((want != 2 && a->active != (want == 1)) ||
            (exchange && *exchange && strcmp(exchange, a->exchange) != 0) ||
            !asset_matches_attributes(a, attributes) || asset_removed(&s->k, a->sym))
            continue;
        if (!first)
            sb_putc(&resp->body, ',');
        first = false;
        asset_json(a, cls, &resp->body);
    }
    sb_putc(&resp->body, ']');
out:
    sb_free(&msg);
}

/*
 * GET /v2/calendar?start=YYYY-MM-DD&end=YYYY-MM-DD (trading API): a plain
 * JSON array with one element per trading day in [start, end], both
 * inclusive and clipped to 1970-01-01…2029-12-31, each {date, open, close,
 * session_open, session_close, settlement_date}: open 09:30, close 16:00 (13:00
 * on an early close), the SIP session 0400-2000 (0400-1700), and settlement
 * T+2 trading days, T+1 for trades from 2024-05-28. An absent start or end is
 * today (New York); start after end gives []. Authenticated like /v2/assets,
 * no bars rate-limit token; a malformed date is 400.
 */
static void calendar_handle(sim_t *s, http_req_t *r, response_t *resp)
{
    kv_t kv[SIM_MAX_PARAMS];
    sbuf_t msg = {0};
    int n;
    int64_t today = et_local_day(wall_now()), from = today, to = today;

    s->ctr.calendar_requests++;
    if (!auth_ok(s, r)) {
        trading_error(resp, 401, 40110000, "request is not authorized");
        goto out;
    }
    if ((n = query_split(r->query, kv, SIM_MAX_PARAMS, &msg)) < 0) {
        trading_error(resp, 400, 40010001, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    const char *names[2] = {"start", "end"};
    int64_t *days[2] = {&from, &to};
    for (int i = 0; i < 2; i++) {
        const char *v = query_get(kv, n, names[i]);
        if (v && !parse_date(v, days[i])) {
            sb_printf(&msg,
                      "Invalid format for parameter %s: error parsing '%s' as 2006-01-02 time",
                      names[i], v);
            trading_error(resp, 400, 40010001, msg.oom ? "out of memory" : msg.p);
            goto out;
        }
    }
    int64_t first = days_from_civil(1970, 1, 1), last = days_from_civil(2029, 12, 31);
    int64_t t1 = days_from_civil(2024, 5, 28);
    from = from > first ? from : first;
    to = to < last ? to : last;
    resp->status = 200;
    resp->ctype = CT_JSON;
    resp->body.len = 0;
    sb_putc(&resp->body, '[');
    for (int64_t d = from; d <= to; d++) {
        if (!trading_day(d))
            continue;
        bool early = early_close(d);
        if (resp->body.len > 1)
            sb_putc(&resp->body, ',');
        sb_puts(&resp->body, "{\"date\":");
        sb_date(&resp->body, d, true);
        sb_printf(&resp->body,
                  ",\"open\":\"09:30\",\"close\":\"%s\",\"session_open\":\"0400\","
                  "\"session_close\":\"%s\",\"settlement_date\":",
                  early ? "13:00" : "16:00", early ? "1700" : "2000");
        sb_date(&resp->body, trading_day_step(d, d >= t1 ? 1 : 2), true);
        sb_putc(&resp->body, '}');
    }
    sb_putc(&resp->body, ']');
out:
    sb_free(&msg);
}

/* A validated corporate-actions request. */
typedef struct ca_query {
    char **syms; /* owned array, sorted and unique (NULL: every symbol) */
    size_t nsyms;
    bool type[CA_KINDS]; /* which record kinds are asked for */
    int64_t from, to;    /* process_date bounds, inclusive */
    int64_t limit;
    int dir;
    uint64_t hash;    /* binds page tokens to every parameter but page_token */
    bool have_cursor; /* from a page token: start at this key */
    int64_t cur_date; /* process_date of the next record */
    char cur_id[40];  /* and its id */
} ca_query_t;

static bool ca_wants(const ca_query_t *q, const action_t *a)
{
    if (!q->type[a->kind] || a->process_date < q->from || a->process_date > q->to)
        return false;
    if (!q->syms)
        return true;
    const char *sym = a->sym;
    if (bsearch(&sym, q->syms, q->nsyms, sizeof *q->syms, sym_cmp))
        return true;
    sym = a->new_sym;
    return a->kind == CA_NAME_CHANGE &&
           bsearch(&sym, q->syms, q->nsyms, sizeof *q->syms, sym_cmp) != NULL;
}

/* The page order: process_date, then id; desc reverses both. */
static int ca_key_cmp(int64_t da, const char *ia, int64_t db, const char *ib)
{
    if (da != db)
        return da < db ? -1 : 1;
    return strcmp(ia, ib);
}

static int ca_cmp(const void *a, const void *b)
{
    const action_t *x = *(const action_t *const *)a, *y = *(const action_t *const *)b;
    return ca_key_cmp(x->process_date, x->id, y->process_date, y->id);
}

/* "ca1|<hash>|<process_date>|<id>" of the next record, in base64. */
static bool ca_token_decode(const char *tok, ca_query_t *q)
{
    char plain[160];
    const char *why;
    if (!b64_decode(tok, plain, sizeof plain) || strncmp(plain, "ca1|", 4) != 0)
        return false;
    char *p = plain + 4, *b1 = strchr(p, '|'), *b2 = b1 ? strchr(b1 + 1, '|') : NULL;
    if (!b2 || b1 - p != 16)
        return false;
    *b1 = *b2 = '\0';
    char *end = NULL;
    if (strtoull(p, &end, 16) != q->hash || *end)
        return false;
    if (!parse_int(b1 + 1, &q->cur_date, &why) || strlen(b2 + 1) >= sizeof q->cur_id || !b2[1])
        return false;
    snprintf(q->cur_id, sizeof q->cur_id, "%s", b2 + 1);
    q->have_cursor = true;
    return true;
}

/* Validates a corporate-actions request; false with the 400 message. */
static bool ca_parse(char *qs, int64_t today, ca_query_t *q, sbuf_t *msg)
{
    kv_t kv[SIM_MAX_PARAMS];
    int n = query_split(qs, kv, SIM_MAX_PARAMS, msg);
    const char *v, *bad = NULL;

    if (n < 0)
        return false;
    q->dir = 1;
    q->limit = 100;
    q->from = q->to = today;
    uint64_t h = fnv1a(FNV_BASIS, "ca|");
    char *list = (char *)query_get(kv, n, "symbols");
    if (list && *list) {
        int rc = symbols_split(list, &q->syms, &q->nsyms, &bad);
        if (rc == -1)
            sb_printf(msg, "invalid symbol: %s", bad);
        else if (rc < 0)
            msg->oom = true;
        if (rc < 0)
            return false;
        for (size_t i = 0; i < q->nsyms; i++)
            h = fnv1a(fnv1a(h, q->syms[i]), ",");
    }
    const char *types = query_get(kv, n, "types");
    bool any_type = !types || !*types;
    for (int k = 0; k < CA_KINDS; k++)
        q->type[k] = any_type;
    for (const char *p = any_type ? NULL : types; p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t i = 0;
        while (i < CA_TYPE_COUNT &&
               !(strlen(ca_type_names[i]) == len && strncmp(p, ca_type_names[i], len) == 0))
            i++;
        if (i == CA_TYPE_COUNT) {
            sb_printf(msg, "invalid types: %.*s", (int)len, p);
            return false;
        }
        if (i < CA_KINDS)
            q->type[i] = true;
        p = comma ? comma + 1 : NULL;
    }
    for (int k = 0; k < CA_KINDS; k++)
        h = fnv1a(h, q->type[k] ? "1" : "0");
    const char *names[2] = {"start", "end"};
    int64_t *days[2] = {&q->from, &q->to};
    for (int i = 0; i < 2; i++) {
        if ((v = query_get(kv, n, names[i])) && !parse_date(v, days[i])) {
            sb_printf(msg, "Invalid format for parameter %s: error parsing '%s' as 2006-01-02 time",
                      names[i], v);
            return false;
        }
    }
    if (q->to < q->from) {
        sb_puts(msg, "end should not be before start");
        return false;
    }
    if ((v = query_get(kv, n, "limit")) && !limit_parse(v, 1000, &q->limit, msg))
        return false;
    if ((v = query_get(kv, n, "sort"))) {
        if (strcmp(v, "asc") != 0 && strcmp(v, "desc") != 0) {
            sb_printf(msg, "invalid sort: %s", v);
            return false;
        }
        q->dir = strcmp(v, "asc") == 0 ? 1 : -1;
    }
    char tail[96];
    snprintf(tail, sizeof tail, "|%" PRId64 "|%" PRId64 "|%" PRId64 "|%d", q->from, q->to, q->limit,
             q->dir);
    q->hash = mix64(fnv1a(h, tail));
    if ((v = query_get(kv, n, "page_token")) && !ca_token_decode(v, q)) {
        sb_puts(msg, "invalid page_token");
        return false;
    }
    return true;
}

/*
 * GET /v1/corporate-actions?symbols=&types=&start=&end=&limit=&sort=&page_token=
 * (data API): authenticated and rate-limited like the bars endpoints. The
 * records whose process_date is in [start, end] (default today, New York)
 * are ordered by (process_date, id), ascending or descending; a page holds
 * the next limit of them (1…1000, default 100, counted across types) grouped
 * under their type's key (absent when it has none), and next_page_token
 * resumes at the first record left out (null when none is). Tokens are bound
 * to every other parameter; a record that appears later (an added split with
 * an older split_process_date) shows up in any query that reaches it.
 */
static void ca_handle(sim_t *s, http_req_t *r, response_t *resp)
{
    int64_t now_ms = wall_now_ms(), now = floor_div(now_ms, 1000);
    ca_query_t q = {0};
    sbuf_t msg = {0};
    const action_t **hits = NULL;

    s->ctr.corporate_actions_requests++;
    if (!auth_ok(s, r)) {
        resp_set(resp, 401, CT_HTML, html_401);
        goto out;
    }
    if (!windows_room(s, now_ms) || !bucket_take(s)) {
        resp_set(resp, 429, CT_JSON, "{\"message\": \"too many requests.\"}");
        goto out;
    }
    windows_spend(s);
    if (!ca_parse(r->query, et_local_day(now), &q, &msg)) {
        resp_message(resp, 400, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    size_t nhits = 0;
    hits = calloc((size_t)s->nactions + 1, sizeof *hits);
    if (!hits) {
        resp_message(resp, 500, "out of memory");
        goto out;
    }
    for (int i = 0; i < s->nactions; i++)
        if (ca_wants(&q, &s->actions[i]))
            hits[nhits++] = &s->actions[i];
    qsort(hits, nhits, sizeof *hits, ca_cmp);
    for (size_t i = 0; q.dir < 0 && i < nhits / 2; i++) {
        const action_t *tmp = hits[i];
        hits[i] = hits[nhits - 1 - i];
        hits[nhits - 1 - i] = tmp;
    }
    size_t from = 0;
    while (q.have_cursor && from < nhits &&
           q.dir * ca_key_cmp(hits[from]->process_date, hits[from]->id, q.cur_date, q.cur_id) < 0)
        from++;
    size_t to = from + (size_t)q.limit < nhits ? from + (size_t)q.limit : nhits;
    resp->status = 200;
    resp->ctype = CT_JSON;
    resp->body.len = 0;
    sb_puts(&resp->body, "{\"corporate_actions\":{");
    bool first_group = true;
    for (int k = 0; k < CA_KINDS; k++) {
        bool first = true;
        for (size_t i = from; i < to; i++) {
            if (hits[i]->kind != k)
                continue;
            if (first)
                sb_printf(&resp->body, "%s\"%s\":[", first_group ? "" : ",", ca_group_names[k]);
            else
                sb_putc(&resp->body, ',');
            first = first_group = false;
            action_json(hits[i], &resp->body);
        }
        if (!first)
            sb_putc(&resp->body, ']');
    }
    sb_puts(&resp->body, "},\"next_page_token\":");
    if (to < nhits) {
        char plain[160];
        int len = snprintf(plain, sizeof plain, "ca1|%016" PRIx64 "|%" PRId64 "|%s", q.hash,
                           hits[to]->process_date, hits[to]->id);
        sb_putc(&resp->body, '"');
        b64_encode(plain, (size_t)len, &resp->body);
        sb_putc(&resp->body, '"');
    } else {
        sb_puts(&resp->body, "null");
    }
    sb_putc(&resp->body, '}');
    rate_headers(s, now, now_ms, resp);
out:
    free(hits);
    free(q.syms);
    sb_free(&msg);
}

/* Adds the comma-separated symbols in list to k's removed assets; false when
 * one is malformed or too many are removed. */
static bool asset_remove_list(knobs_t *k, const char *list)
{
    for (const char *p = list; p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char sym[SIM_ASSET_SYM];
        if (n == 0 || n >= sizeof sym)
            return false;
        memcpy(sym, p, n);
        sym[n] = '\0';
        if (!symbol_valid(sym) && !strchr(sym, '/'))
            return false;
        if (!asset_removed(k, sym)) {
            if (k->nremoved == SIM_REMOVED_MAX)
                return false;
            memcpy(k->removed[k->nremoved++], sym, n + 1);
        }
        p = comma ? comma + 1 : NULL;
    }
    return true;
}

static bool parse_bool01(const char *v, bool *out)
{
    if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        return false;
    *out = v[0] == '1';
    return true;
}

/* GET /__sim/set?knob=value&…: all knobs are validated before any applies. */
static void control_set(sim_t *s, char *qs, response_t *resp)
{
    kv_t kv[SIM_MAX_PARAMS];
    sbuf_t msg = {0};
    knobs_t nk = s->k;
    bool rate_set = false, burst_set = false, window_set = false;
    bool clear_actions = false, have_split = false, have_process = false;
    char split_sym[SIM_ASSET_SYM];
    int64_t split_ex = 0, split_new = 0, split_old = 0, today = et_local_day(wall_now());
    int64_t split_process = today;
    int n = query_split(qs, kv, SIM_MAX_PARAMS, &msg);

    if (n < 0) {
        resp_message(resp, 400, msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const char *k = kv[i].k, *v = kv[i].v, *why;
        bool ok = true;
        double d = 0;
        int64_t iv = 0;

        if (strcmp(k, "fail_rate") == 0 || strcmp(k, "malformed_rate") == 0 ||
            strcmp(k, "hang_rate") == 0 || strcmp(k, "stall_rate") == 0) {
            ok = parse_double(v, &d) && d >= 0 && d <= 1;
            *(k[0] == 'f'   ? &nk.fail_rate
              : k[0] == 'm' ? &nk.malformed_rate
              : k[0] == 'h' ? &nk.hang_rate
                            : &nk.stall_rate) = d;
        } else if (strcmp(k, "rate") == 0) {
            ok = parse_double(v, &nk.rate) && nk.rate >= 0 && nk.rate <= 1e9;
            rate_set = true;
        } else if (strcmp(k, "burst") == 0) {
            ok = parse_double(v, &nk.burst) && nk.burst >= 1 && nk.burst <= 1e9;
            burst_set = true;
        } else if (strcmp(k, "fill_holes") == 0) {
            ok = parse_bool01(v, &nk.fill_holes);
        } else if (strcmp(k, "clear_actions") == 0) {
            ok = parse_bool01(v, &clear_actions);
        } else if (strcmp(k, "split") == 0) {
            ok = !have_split &&
                 split_parse(v, split_sym, sizeof split_sym, &split_ex, &split_new, &split_old);
            have_split = true;
        } else if (strcmp(k, "split_process_date") == 0) {
            ok = parse_date(v, &split_process) && split_process <= today;
            have_process = true;
        } else if (strcmp(k, "settle_seconds") == 0) {
            ok = parse_int(v, &iv, &why) && iv >= 0 && iv <= SIM_SETTLE_MAX;
            nk.settle_seconds = iv;
        } else if (strcmp(k, "latency_ms") == 0) {
            ok = parse_int(v, &iv, &why) && iv >= 0 && iv <= 3600000;
            nk.latency_ms = iv;
        } else if (strcmp(k, "key") == 0 || strcmp(k, "secret") == 0) {
            ok = strlen(v) < SIM_STR_MAX;
            if (ok)
                snprintf(k[0] == 'k' ? nk.key : nk.secret, SIM_STR_MAX, "%s", v);
        } else if (strcmp(k, "short_pages") == 0) {
            ok = parse_bool01(v, &nk.short_pages);
        } else if (strcmp(k, "trailing_empty") == 0) {
            ok = parse_bool01(v, &nk.trailing_empty);
        } else if (strcmp(k, "token_binds_limit") == 0) {
            ok = parse_bool01(v, &nk.token_binds_limit);
        } else if (strcmp(k, "rate_window") == 0) {
            ok = windows_parse(&nk, v);
            window_set = true;
        } else if (strcmp(k, "remove_asset") == 0) {
            ok = asset_remove_list(&nk, v);
        } else if (strcmp(k, "restore_assets") == 0) {
            bool restore = false;
            ok = parse_bool01(v, &restore);
            if (restore)
                nk.nremoved = 0;
        } else {
            sb_printf(&msg, "unknown knob: %s", k);
            resp_message(resp, 400, msg.p);
            goto out;
        }
        if (!ok) {
            sb_printf(&msg, "invalid value for %s: %s", k, v);
            resp_message(resp, 400, msg.p);
            goto out;
        }
    }
    if (have_process && !have_split) {
        resp_message(resp, 400, "split_process_date needs split");
        goto out;
    }
    if (have_split && !clear_actions && s->nactions == SIM_ACTIONS_MAX) {
        resp_message(resp, 400, "too many corporate actions");
        goto out;
    }
    if (rate_set && !burst_set)
        nk.burst = nk.rate > 1 ? nk.rate : 1;
    s->k = nk;
    /* Cleared first, so that clear_actions=1&split=… leaves just the new split. */
    if (clear_actions)
        s->nactions = s->nstatic;
    if (have_split)
        action_split(&s->actions[s->nactions++], split_sym, split_ex, split_new, split_old,
                     split_process, s->action_seq++);
    if (rate_set || burst_set)
        bucket_reset(s);
    if (window_set)
        windows_reset(s);
    resp_set(resp, 200, CT_JSON, "{\"ok\":true}");
out:
    sb_free(&msg);
}

static void control_handle(sim_t *s, http_req_t *r, response_t *resp)
{
    const char *what = r->path + strlen("/__sim/");

    if (strcmp(what, "health") == 0) {
        resp_set(resp, 200, CT_JSON, "{\"ok\":true}");
    } else if (strcmp(what, "reset") == 0) {
        memset(&s->ctr, 0, sizeof s->ctr);
        resp_set(resp, 200, CT_JSON, "{\"ok\":true}");
    } else if (strcmp(what, "counters") == 0) {
        resp->status = 200;
        resp->ctype = CT_JSON;
        resp->body.len = 0;
        counters_json(&s->ctr, s->held, wall_now(), &resp->body);
    } else if (strcmp(what, "set") == 0) {
        control_set(s, r->query, resp);
    } else {
        resp_message(resp, 404, "Not Found");
    }
}

/* Does the comma-separated header value hold token (case-insensitively)? */
static bool header_has_token(const char *value, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ';')
            e++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - p) == n && strncasecmp(p, token, n) == 0)
            return true;
        while (*e && *e != ',')
            e++;
        p = e;
    }
    return false;
}

/*
 * Parses a request head (request line and headers, ending with an empty
 * line) in place. Returns false for anything that is not a bodiless
 * HTTP/1.x request.
 */
static bool http_parse(char *head, size_t len, http_req_t *r)
{
    char *end = head + len;
    char *line = head;
    bool first = true, version_11;

    memset(r, 0, sizeof *r);
    if (memchr(head, '\0', len))
        return false;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            return false;
        *nl = '\0';
        if (nl > line && nl[-1] == '\r')
            nl[-1] = '\0';
        char *next = nl + 1;
        if (first) {
            char *sp1 = strchr(line, ' ');
            char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
            if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == line)
                return false;
            *sp1 = *sp2 = '\0';
            for (const char *p = line; *p; p++)
                if (*p < 'A' || *p > 'Z')
                    return false;
            if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
                version_11 = true;
            else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
                version_11 = false;
            else
                return false;
            r->method = line;
            r->path = sp1 + 1;
            if (r->path[0] != '/')
                return false;
            char *qm = strchr(r->path, '?');
            if (qm)
                *qm = '\0';
            r->query = qm ? qm + 1 : r->path + strlen(r->path);
            r->keep_alive = version_11;
            first = false;
        } else if (*line) {
            char *colon = strchr(line, ':');
            if (!colon || colon == line)
                return false;
            *colon = '\0';
            for (const char *p = line; *p; p++)
                if (*p == ' ' || *p == '\t')
                    return false;
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = v + strlen(v);
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                *--ve = '\0';
            if (strcasecmp(line, "APCA-API-KEY-ID") == 0) {
                r->key_id = v;
            } else if (strcasecmp(line, "APCA-API-SECRET-KEY") == 0) {
                r->secret_key = v;
            } else if (strcasecmp(line, "Connection") == 0) {
                if (header_has_token(v, "close"))
                    r->keep_alive = false;
                else if (header_has_token(v, "keep-alive"))
                    r->keep_alive = true;
            } else if (strcasecmp(line, "Accept-Encoding") == 0) {
                r->gzip_ok = strstr(v, "gzip") != NULL;
            } else if (strcasecmp(line, "Content-Length") == 0) {
                /* Requests are GETs without bodies; a body would desync us. */
                if (strcmp(v, "0") != 0)
                    return false;
            } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
                return false;
            }
        }
        line = next;
    }
    return !first;
}

/* Routes one request head; fills resp. */
static void sim_handle(sim_t *s, char *head, size_t len, response_t *resp)
{
    static const char prefix[] = "/v2/stocks/";
    http_req_t r;

    resp->counted = true;
    if (!http_parse(head, len, &r)) {
        resp_message(resp, 400, "malformed HTTP request");
        resp->close = true;
        return;
    }
    resp->close = !r.keep_alive;
    resp->gzip_ok = r.gzip_ok;
    if (strncmp(r.path, "/__sim/", 7) == 0 && strcmp(r.method, "GET") == 0) {
        resp->counted = false;
        control_handle(s, &r, resp);
        return;
    }
    if (strcmp(r.method, "GET") != 0) {
        resp_message(resp, 405, "method not allowed");
        snprintf(resp->extra, sizeof resp->extra, "Allow: GET\r\n");
        return;
    }
    if (strcmp(r.path, "/v2/stocks/bars") == 0) {
        bars_handle(s, &r, NULL, resp);
        return;
    }
    if (strcmp(r.path, "/v2/assets") == 0) {
        assets_handle(s, &r, resp);
        return;
    }
    if (strcmp(r.path, "/v2/calendar") == 0) {
        calendar_handle(s, &r, resp);
        return;
    }
    if (strcmp(r.path, "/v1/corporate-actions") == 0) {
        ca_handle(s, &r, resp);
        return;
    }
    if (strncmp(r.path, prefix, sizeof prefix - 1) == 0) {
        char *sym = r.path + sizeof prefix - 1;
        char *slash = strchr(sym, '/');
        if (slash && slash != sym && strcmp(slash, "/bars") == 0) {
            *slash = '\0';
            bars_handle(s, &r, sym, resp);
            return;
        }
    }
    resp_message(resp, 404, "Not Found");
}

static void sim_count(sim_t *s, const response_t *resp)
{
    if (!resp->counted)
        return;
    s->ctr.requests++;
    if (resp->hang)
        s->ctr.hung++;
    else if (resp->stall)
        s->ctr.stalled++;
    else if (resp->malformed)
        s->ctr.malformed++;
    else if (resp->status >= 100 && resp->status < 600)
        s->ctr.by_status[resp->status]++;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/* One queued response: the request and both buffers are freed together in
 * the write callback. */
typedef struct wreq {
    uv_write_t req;
    conn_t *conn;
    sbuf_t head;
    sbuf_t body;
} wreq_t;

/*
 * A client connection owns two handles, the socket and the latency timer, and
 * is freed when the second close callback has run. Requests are answered in
 * order; while a delayed response waits on the timer, reading stops so that
 * pipelined requests queue up in the socket, not in memory.
 *
 * A connection hit by --hang-rate or --stall-rate is "held": it answers
 * nothing more (HTTP/1.1 answers in order, so nothing after the dead response
 * can be answered either), keeps reading only to notice the client leaving,
 * drops whatever it reads, and closes when the client closes or resets. Its
 * memory stays the fixed struct plus at most the one partial write.
 */
struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    sim_t *sim;
    conn_t *prev;
    conn_t *next;
    int open_handles; /* closes still to come */
    int writes;       /* uv_writes not yet called back */
    bool closing;
    bool reading;
    bool waiting;     /* a response sits in `pending` until the timer fires */
    bool close_after; /* a response said "Connection: close" */
    bool peer_eof;    /* the client finished sending */
    bool held;        /* hung or stalled: never answers again */
    wreq_t *pending;
    size_t in_len;
    char in[SIM_IN_CAP];
};

static void wreq_free(wreq_t *w)
{
    if (!w)
        return;
    sb_free(&w->head);
    sb_free(&w->body);
    free(w);
}

static const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Time-out";
    default:
        return "Unknown";
    }
}

/* gzip (not zlib) framing, level 1 as nginx's gzip_comp_level default. */
static bool gzip_body(const sbuf_t *in, sbuf_t *out)
{
    z_stream zs;
    bool ok = false;

    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    uLong bound = deflateBound(&zs, (uLong)in->len);
    if (!sb_reserve(out, bound))
        goto out;
    zs.next_in = (const Bytef *)in->p;
    zs.avail_in = (uInt)in->len;
    zs.next_out = (Bytef *)out->p;
    zs.avail_out = (uInt)bound;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        goto out;
    out->len = zs.total_out;
    ok = true;
out:
    deflateEnd(&zs);
    return ok;
}

static void conn_on_close(uv_handle_t *h)
{
    conn_t *c = h->data;

    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->sim->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->held)
        c->sim->held--;
    wreq_free(c->pending);
    free(c);
}

/* Starts closing; safe to call repeatedly and from any callback, because the
 * memory goes only in the last close callback. Pending writes are cancelled
 * (their callbacks free their buffers); a pending delayed response is freed
 * with the connection. */
static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

/* A held connection closes as soon as the client is done with it, whatever
 * is still queued; any other once its answers are written and the client
 * finished or one answer said "Connection: close". */
static void conn_maybe_finish(conn_t *c)
{
    if (c->closing)
        return;
    if (c->held ? c->peer_eof : !c->waiting && c->writes == 0 && (c->close_after || c->peer_eof))
        conn_close(c);
}

static void conn_process(conn_t *c);

/* Reads land in the connection's fixed buffer, whatever size libuv suggests. */
static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    buf->base = c->in + c->in_len;
    buf->len = SIM_IN_CAP - c->in_len;
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    (void)buf; /* it is c->in + c->in_len, from conn_on_alloc */

    if (nread > 0) {
        c->in_len += (size_t)nread;
        conn_process(c);
    } else if (nread == UV_EOF) {
        /* Answer what has arrived, then close once it is written. */
        c->peer_eof = true;
        conn_process(c);
    } else if (nread < 0) {
        conn_close(c);
    }
}

static void conn_set_reading(conn_t *c, bool on)
{
    if (c->closing || on == c->reading)
        return;
    if (on) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read);
        if (rc < 0) {
            fprintf(stderr, "alpaca-sim: uv_read_start: %s\n", uv_strerror(rc));
            conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = on;
}

static void conn_on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = w->conn;

    wreq_free(w);
    c->writes--;
    if (status < 0)
        conn_close(c);
    else
        conn_maybe_finish(c);
}

static void conn_write(conn_t *c, wreq_t *w)
{
    uv_buf_t bufs[2] = {uv_buf_init(w->head.p, (unsigned)w->head.len),
                        uv_buf_init(w->body.p, (unsigned)w->body.len)};

    c->writes++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, w->body.len ? 2 : 1, conn_on_write);
    if (rc < 0) {
        c->writes--;
        wreq_free(w);
        conn_close(c);
    }
}

static void conn_on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    wreq_t *w = c->pending;

    c->pending = NULL;
    c->waiting = false;
    conn_write(c, w);
    conn_process(c);
}

/* Serialises resp (taking its body) and sends it now or after the latency. */
static void conn_respond(conn_t *c, response_t *resp)
{
    sim_t *s = c->sim;
    const char *encoding = "";
    wreq_t *w;

    if (resp->hang) {
        sb_free(&resp->body);
        c->held = true;
        s->held++;
        return;
    }
    w = calloc(1, sizeof *w);
    if (!w) {
        sb_free(&resp->body);
        conn_close(c);
        return;
    }
    w->conn = c;
    w->body = resp->body;
    memset(&resp->body, 0, sizeof resp->body);
    if (w->body.oom) {
        sb_free(&w->body);
        resp->status = 500;
        resp->ctype = CT_JSON;
        resp->extra[0] = '\0';
        sb_puts(&w->body, "{\"message\":\"internal server error\"}");
    }
    if (s->k.gzip && resp->gzip_ok && w->body.len > 0) {
        sbuf_t z = {0};
        if (gzip_body(&w->body, &z)) {
            sb_free(&w->body);
            w->body = z;
            encoding = "Content-Encoding: gzip\r\n";
        } else {
            sb_free(&z);
        }
    }
    sb_printf(&w->head,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n"
              "%s%s\r\n",
              resp->status, http_reason(resp->status), resp->ctype ? resp->ctype : CT_JSON,
              w->body.len, resp->close ? "close" : "keep-alive", encoding, resp->extra);
    if (w->head.oom || w->body.oom) {
        wreq_free(w);
        conn_close(c);
        return;
    }
    if (resp->stall) {
        /* The head announces the whole body; half of it is ever sent. */
        w->body.len /= 2;
        c->held = true;
        s->held++;
    } else if (resp->close) {
        c->close_after = true;
    }
    if (s->k.latency_ms > 0 && resp->counted) { /* /__sim/ control answers at once */
        c->pending = w;
        c->waiting = true;
        /* The loop's cached time may be a callback or two old; a timer from
         * it would fire that much early. */
        uv_update_time(&s->loop);
        if (uv_timer_start(&c->timer, conn_on_timer, (uint64_t)s->k.latency_ms, 0) < 0)
            conn_close(c);
        return;
    }
    conn_write(c, w);
}

/* The offset just past the empty line ending the head, or 0 if incomplete. */
static size_t head_end(const char *p, size_t n)
{
    const char *q = p, *end = p + n;

    while ((q = memchr(q, '\n', (size_t)(end - q)))) {
        if (q + 1 < end && q[1] == '\n')
            return (size_t)(q + 2 - p);
        if (q + 2 < end && q[1] == '\r' && q[2] == '\n')
            return (size_t)(q + 3 - p);
        q++;
    }
    return 0;
}

/* Answers every complete request in the buffer, in order, until one must
 * wait for the latency timer or asked to close. */
static void conn_process(conn_t *c)
{
    sim_t *s = c->sim;

    while (!c->closing && !c->waiting && !c->close_after && !c->held) {
        size_t skip = 0;
        /* Stray line breaks between requests are allowed (RFC 9112 §2.2). */
        while (skip < c->in_len && (c->in[skip] == '\r' || c->in[skip] == '\n'))
            skip++;
        if (skip) {
            memmove(c->in, c->in + skip, c->in_len - skip);
            c->in_len -= skip;
        }
        size_t n = head_end(c->in, c->in_len);
        if (n == 0 && c->in_len <= SIM_MAX_HEAD)
            break;
        response_t resp = {0};
        if (n == 0 || n > SIM_MAX_HEAD) {
            resp_message(&resp, 431, "request header fields too large");
            resp.close = true;
            resp.counted = true;
            c->in_len = 0;
        } else {
            sim_handle(s, c->in, n, &resp);
            memmove(c->in, c->in + n, c->in_len - n);
            c->in_len -= n;
        }
        sim_count(s, &resp);
        conn_respond(c, &resp);
    }
    if (c->held)
        c->in_len = 0; /* never to be answered: drop it, keep the buffer free */
    conn_maybe_finish(c);
    conn_set_reading(c, c->held ? !c->peer_eof : !c->waiting && !c->close_after && !c->peer_eof);
}

static void sim_on_connection(uv_stream_t *server, int status)
{
    sim_t *s = server->data;
    conn_t *c;

    if (status < 0) {
        fprintf(stderr, "alpaca-sim: listen: %s\n", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "alpaca-sim: out of memory accepting a connection\n");
        return;
    }
    c->sim = s;
    if (uv_tcp_init(&s->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    uv_timer_init(&s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        fprintf(stderr, "alpaca-sim: accept: %s\n", uv_strerror(rc));
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_set_reading(c, true);
}

/* Closes every handle so uv_run returns and uv_loop_close succeeds. */
static void sim_stop(sim_t *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    for (conn_t *c = s->conns; c; c = c->next)
        conn_close(c);
}

static void sim_on_signal(uv_signal_t *h, int signum)
{
    (void)signum; /* SIGINT and SIGTERM both stop */
    sim_stop(h->data);
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */
/* ------------------------------------------------------------------------ */

static const char usage_text[] =
    "usage: alpaca-sim [options]\n"
    "       alpaca-sim dump --symbols A,B --timeframe TF [--start T] [--end T] [--feed F]\n"
    "                       [--adjustment A] [--split SYM:DATE:NEW:OLD ...] [--with-holes]\n"
    "\n"
    "A loopback fake of the Alpaca market-data v2 bars API with deterministic data,\n"
    "its corporate actions, and of the trading API's asset list and calendar\n"
    "(point APCA_API_BASE_URL at it too).\n"
    "\n"
    "server options:\n"
    "  --host ADDR            address to listen on (default 127.0.0.1)\n"
    "  --port N               port (default 0: an ephemeral port)\n"
    "  --port-file PATH       after listening, write the port to PATH (atomically)\n"
    "  --key K                expected APCA-API-KEY-ID (default test-key)\n"
    "  --secret S             expected APCA-API-SECRET-KEY (default test-secret)\n"
    "  --latency-ms N         delay every API response by N ms (default 0; /__sim/ is not "
    "delayed)\n"
    "  --rate R               token-bucket refill, requests/s; 0 = unlimited (default 0)\n"
    "  --burst B              bucket size (default max(1, R))\n"
    "  --rate-window LEN:N[,LEN:N]  fixed windows beside the bucket: at most N\n"
    "                         requests in each LEN (500ms, 1s, 60s, 1m) window aligned\n"
    "                         on the epoch, e.g. 1s:10,60s:600 (repeatable, 4 at most);\n"
    "                         over it: 429 without headers. A 200 then carries, for\n"
    "                         the window with the fewest requests left,\n"
    "                         X-RateLimit-Limit = its N per minute (1s:10 says 600),\n"
    "                         -Remaining = what is left in it, -Reset = its end (epoch s);\n"
    "                         with the bucket only: rate/min, whole tokens, when full\n"
    "  --fail-rate F          fraction of bars requests answered 500/502/503/504\n"
    "  --malformed-rate F     fraction of 200 bars responses with a broken body, each one\n"
    "                         of: the JSON cut in its middle half (a complete HTTP message,\n"
    "                         Content-Length = the bytes sent), a bar's vw turned into\n"
    "                         the string \"x\", or just {\"bars\":\n"
    "  --hang-rate F          fraction of bars requests read and never answered: nothing\n"
    "                         is written, the connection stays open (and answers nothing\n"
    "                         more) until the client closes it\n"
    "  --stall-rate F         fraction of bars responses (any status) sent as the status\n"
    "                         line, the headers with the full Content-Length and the\n"
    "                         first half of the body, then nothing, as --hang-rate\n"
    "  --seed N               seed of the fault and short-page generator (default 1)\n"
    "  --short-pages          pages hold between limit/3 and limit bars\n"
    "  --trailing-empty       the last page carries a token to an empty page\n"
    "  --gzip                 gzip bodies when the client accepts it\n"
    "  --free-plan            403 for SIP data younger than 15 minutes\n"
    "  --max-bars N           cap on bars per response (default 10000000)\n"
    "  --token-ignores-limit  accept a page token with another limit than the query\n"
    "                         that produced it (default: 400 \"invalid page_token\", as\n"
    "                         for any other changed parameter)\n"
    "  --remove-asset A,B     leave these symbols out of /v2/assets (repeatable)\n"
    "  --settle-seconds N     a bar is preliminary for N s after its end (default 30),\n"
    "                         then final; the bar holding now is partial\n"
    "  --fill-holes           serve the HOLE symbols' holes from the start\n"
    "  --help                 this text\n"
    "\n"
    "control endpoints (no auth): GET /__sim/health, /__sim/counters, /__sim/reset,\n"
    "  /__sim/set?fail_rate=&malformed_rate=&hang_rate=&stall_rate=&rate=&burst=\n"
    "            &latency_ms=&key=&secret=&short_pages=0|1&trailing_empty=0|1\n"
    "            &token_binds_limit=0|1&remove_asset=A,B&restore_assets=1\n"
    "            &rate_window=1s:10,60s:600 (or off; windows start empty)\n"
    "            &settle_seconds=N (0 to 3155760000)&fill_holes=0|1\n"
    "            &split=SYM:YYYY-MM-DD:NEW:OLD[&split_process_date=YYYY-MM-DD]\n"
    "            &clear_actions=1\n"
    "  split= adds a split with that ex-date and rates (NEW, OLD 1..1000, NEW < OLD\n"
    "  is a reverse split) and processes it at once: split-adjusted bars before the\n"
    "  ex-date change from then on. Its process_date is today (New York) or\n"
    "  split_process_date (not in the future; a record that appears late).\n"
    "  clear_actions=1 removes every added action (before a split= in the same call).\n"
    "  /__sim/ is never delayed, hung or stalled. /__sim/counters counts requests,\n"
    "  by_status (200_malformed apart), hung, stalled, bars_served, pages,\n"
    "  assets_requests, calendar_requests and corporate_actions_requests, and\n"
    "  shows held, the connections now held open by hang or stall.\n"
    "\n"
    "GET /v2/assets?status=active|inactive|all&asset_class=us_equity|crypto\n"
    "  [&exchange=NYSE|NASDAQ|ARCA|AMEX|BATS][&attributes=a,b] (same keys as the\n"
    "  bars API; spends no bars rate-limit token) returns the trading API's plain\n"
    "  JSON array of {id, class, exchange, symbol, name, status, tradable,\n"
    "  marginable, shortable, easy_to_borrow, fractionable, attributes}, sorted by\n"
    "  symbol: a deterministic universe of 11,029 symbols, 29 well-known ones (BRK.B,\n"
    "  BF.A, ... ; FB, FRC and TWTR inactive) then S000A..S999A and S0000A..S9999A\n"
    "  (about 4% inactive), every one served with bars. status absent = all; an\n"
    "  exchange that lists nothing gives []; a bad status or asset_class is 422\n"
    "  {\"code\":40010001,\"message\":...}; bad keys 401 {\"code\":40110000,...}.\n"
    "  remove_asset (see /__sim/set) makes symbols disappear from the list.\n"
    "\n"
    "GET /v2/calendar?start=YYYY-MM-DD&end=YYYY-MM-DD (trading API, keys as\n"
    "  /v2/assets, no bars token) returns a plain array, one element per trading\n"
    "  day in [start, end] (absent: today, New York; clipped to 1970..2029):\n"
    "  {date, open \"09:30\", close \"16:00\" or \"13:00\", session_open \"0400\",\n"
    "  session_close \"2000\" or \"1700\", settlement_date (T+2 trading days, T+1\n"
    "  from 2024-05-28)}; a malformed date is 400 {\"code\":40010001,\"message\":...}.\n"
    "\n"
    "GET /v1/corporate-actions?symbols=A,B&types=t1,t2&start=&end=&limit=&sort=\n"
    "  &page_token= (data API: keys, rate limit and 400s as the bars endpoints)\n"
    "  returns {\"corporate_actions\":{\"forward_splits\":[...],\"reverse_splits\":\n"
    "  [...],\"cash_dividends\":[...],\"name_changes\":[...]},\"next_page_token\":..}\n"
    "  for the records with process_date in [start, end] (default today, New\n"
    "  York), ordered by (process_date, id) asc or desc, limit 1..1000 (default\n"
    "  100) across types; keys without records are absent. Static records: FB ->\n"
    "  META (2022-06-09), the 2024 cash dividends of AAPL and MSFT; splits only\n"
    "  as added by split=. adjustment=split or all (alone or in a list) divides\n"
    "  the prices of bars before an added split's ex-date by NEW/OLD (half up to\n"
    "  the cent, vw to 4 places) and multiplies their volume; raw and dividend\n"
    "  bars never change.\n"
    "\n"
    "bars follow the NYSE calendar: weekends, New Year's (Sunday -> Monday, a\n"
    "  Saturday one is not moved), MLK Day (from 1998), Presidents' Day, Good\n"
    "  Friday, Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day,\n"
    "  Thanksgiving and Christmas (Saturday -> Friday, Sunday -> Monday) have none.\n"
    "  Intraday sessions: SIP 04:00-20:00 ET, IEX 08:00-17:00 ET; on early closes\n"
    "  (day after Thanksgiving, Dec 24 and Jul 3 when trading days) SIP\n"
    "  04:00-17:00, IEX 08:00-13:00 ET.\n"
    "  Symbols \"ZZ...\" have no bars; \"XX...\" have a bar for every interval of\n"
    "  every day (24 h, 7 days, every feed, no gaps) and every Day/Week/Month.\n"
    "  Symbols \"HOLE...\" miss their intraday bars starting 10:00-11:00 ET on\n"
    "  trading days whose day of month is 15, until fill_holes=1. Symbols\n"
    "  \"IPO...\" have no bar stamped before 2024-06-03 00:00 ET.\n"
    "  The bar holding now is partial (v, n, c grow with the elapsed fraction); a\n"
    "  bar is preliminary (v 1-5% lower, n lower, vw changed) until settle\n"
    "  seconds after its end, then final.\n"
    "\n"
    "dump prints the final bars the server would serve, as CSV lines\n"
    "  SYMBOL,t,o,h,l,c,v,n,vw (symbol asc, t asc; start/end default as the API's),\n"
    "  the HOLE symbols' holes filled unless --with-holes. --adjustment A adjusts\n"
    "  them as the server would for the splits given with --split\n"
    "  SYM:YYYY-MM-DD:NEW:OLD (repeatable; dump knows no other split).\n";

/* Splits "--name=value" or "--name value"; *val is NULL when absent. */
static const char *opt_take(int argc, char **argv, int *i, char *name, size_t cap, bool needs_value,
                            bool *missing)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);

    *missing = false;
    snprintf(name, cap, "%.*s", (int)n, arg);
    if (eq)
        return eq + 1;
    if (!needs_value)
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

static bool opt_is_flag(const char *name)
{
    return strcmp(name, "--short-pages") == 0 || strcmp(name, "--trailing-empty") == 0 ||
           strcmp(name, "--gzip") == 0 || strcmp(name, "--free-plan") == 0 ||
           strcmp(name, "--token-ignores-limit") == 0 || strcmp(name, "--fill-holes") == 0 ||
           strcmp(name, "--help") == 0;
}

/* Whether argv[i] names a server option that takes a value, so that an
 * unknown option is reported as unknown rather than as missing its value. */
static bool opt_takes_value(const char *arg)
{
    static const char *const names[] = {
        "--host",        "--port",           "--port-file", "--key",        "--secret",
        "--latency-ms",  "--rate",           "--burst",     "--fail-rate",  "--malformed-rate",
        "--seed",        "--max-bars",       "--hang-rate", "--stall-rate", "--remove-asset",
        "--rate-window", "--settle-seconds",
    };
    size_t n = strcspn(arg, "=");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && strncmp(arg, names[i], n) == 0)
            return true;
    return false;
}

static int dump_main(int argc, char **argv)
{
    const char *symbols = NULL, *timeframe = NULL, *start = NULL, *end = NULL, *feed = "sip";
    const char *adjustment = "raw";
    bool with_holes = false;
    action_t splits[SIM_SPLITS_PER_SYMBOL * 4];
    int nsplits = 0;
    char *list = NULL, **syms = NULL;
    size_t nsyms = 0;
    sbuf_t msg = {0}, out = {0};
    int rc = 2;
    tf_t tf;
    int64_t lo, hi, now = wall_now();
    ts_t end_ts;
    int feed_id;

    for (int i = 1; i < argc; i++) {
        char name[64];
        bool missing;
        bool flag = strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "--with-holes") == 0;
        const char *v = opt_take(argc, argv, &i, name, sizeof name, !flag, &missing);
        if (strcmp(name, "--help") == 0) {
            fputs(usage_text, stdout);
            rc = 0;
            goto out;
        }
        if (missing) {
            fprintf(stderr, "alpaca-sim dump: %s needs a value\n", name);
            goto out;
        }
        if (strcmp(name, "--symbols") == 0)
            symbols = v;
        else if (strcmp(name, "--timeframe") == 0)
            timeframe = v;
        else if (strcmp(name, "--start") == 0)
            start = v;
        else if (strcmp(name, "--end") == 0)
            end = v;
        else if (strcmp(name, "--feed") == 0)
            feed = v;
        else if (strcmp(name, "--adjustment") == 0)
            adjustment = v;
        else if (strcmp(name, "--with-holes") == 0 && !v)
            with_holes = true;
        else if (strcmp(name, "--split") == 0) {
            char sym[SIM_ASSET_SYM];
            int64_t ex, nr, orate;
            if (nsplits == (int)(sizeof splits / sizeof splits[0]) ||
                !split_parse(v, sym, sizeof sym, &ex, &nr, &orate)) {
                fprintf(stderr, "alpaca-sim dump: invalid --split %s (SYM:YYYY-MM-DD:NEW:OLD)\n",
                        v);
                goto out;
            }
            action_split(&splits[nsplits], sym, ex, nr, orate, ex, (uint64_t)nsplits);
            nsplits++;
        } else {
            fprintf(stderr, "alpaca-sim dump: unknown option %s (see --help)\n", argv[i]);
            goto out;
        }
    }
    if (!symbols || !*symbols || !timeframe) {
        fprintf(stderr, "alpaca-sim dump: --symbols and --timeframe are required\n");
        goto out;
    }
    list = strdup(symbols);
    if (!list) {
        fprintf(stderr, "alpaca-sim dump: out of memory\n");
        rc = 1;
        goto out;
    }
    const char *bad = NULL;
    int src = symbols_split(list, &syms, &nsyms, &bad);
    if (src < 0) {
        if (src == -1)
            fprintf(stderr, "alpaca-sim dump: invalid symbol: %s\n", bad);
        else
            fprintf(stderr, "alpaca-sim dump: out of memory\n");
        rc = src == -1 ? 2 : 1;
        goto out;
    }
    if (!tf_parse(timeframe, &tf)) {
        fprintf(stderr, "alpaca-sim dump: invalid timeframe: %s\n", timeframe);
        goto out;
    }
    if ((feed_id = feed_parse(feed)) < 0) {
        fprintf(stderr, "alpaca-sim dump: invalid feed: %s\n", feed);
        goto out;
    }
    if (!adjustment_valid(adjustment)) {
        fprintf(stderr, "alpaca-sim dump: invalid adjustment: %s\n", adjustment);
        goto out;
    }
    if (!range_resolve(start, end, false, now, &lo, &hi, &end_ts, &msg)) {
        fprintf(stderr, "alpaca-sim dump: %s\n", msg.oom ? "out of memory" : msg.p);
        goto out;
    }
    rc = 1;
    for (size_t i = 0; i < nsyms; i++) {
        series_t se;
        bar_iter_t it;
        int64_t t;
        splits_t sp = {0};
        series_init(&se, syms[i], &tf, feed_id);
        se.holes = se.holes && with_holes;
        if (adjustment_splits(adjustment))
            splits_of(splits, nsplits, se.sym, &sp);
        iter_init(&it, &se, lo, hi, 1, lo);
        while (iter_next(&it, &t)) {
            bar_t b;
            if (!sb_reserve(&out, SIM_BAR_MAX))
                goto oom;
            bar_make(&se, t, &b);
            bar_adjust(&sp, &b);
            out.len = (size_t)(bar_csv(out.p + out.len, se.sym, &b) - out.p);
            if (out.len > (1u << 20)) {
                if (fwrite(out.p, 1, out.len, stdout) != out.len)
                    goto io;
                out.len = 0;
            }
        }
    }
    if (out.len && fwrite(out.p, 1, out.len, stdout) != out.len)
        goto io;
    if (fflush(stdout) != 0)
        goto io;
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "alpaca-sim dump: out of memory\n");
    goto out;
io:
    fprintf(stderr, "alpaca-sim dump: write error: %s\n", strerror(errno));
out:
    sb_free(&out);
    sb_free(&msg);
    free(syms);
    free(list);
    return rc;
}

static bool opt_double(const char *v, double lo, double hi, double *out)
{
    return v && parse_double(v, out) && *out >= lo && *out <= hi;
}

static bool opt_int(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    const char *why;
    return v && parse_int(v, out, &why) && *out >= lo && *out <= hi;
}

/* Writes the port to path via a temporary file and rename, so a poller never
 * reads a half-written number. */
static bool write_port_file(const char *path, int port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return false;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return false;
    bool ok = fprintf(f, "%d\n", port) > 0;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    unlink(tmp);
    return false;
}

static int serve_main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port_file = NULL;
    int64_t port = 0, seed = 1;
    bool burst_given = false, loop_ready = false, listener_ready = false, signals_ready = false;
    int rc = 2, uvrc;
    struct sockaddr_storage addr;
    sim_t *s = calloc(1, sizeof *s);

    if (!s) {
        fprintf(stderr, "alpaca-sim: out of memory\n");
        return 1;
    }
    snprintf(s->k.key, sizeof s->k.key, "%s", "test-key");
    snprintf(s->k.secret, sizeof s->k.secret, "%s", "test-secret");
    s->k.max_bars = 10000000;
    s->k.settle_seconds = 30;
    s->k.token_binds_limit = true;
    for (int i = 1; i < argc; i++) {
        char name[64];
        bool missing, ok = true;
        const char *v =
            opt_take(argc, argv, &i, name, sizeof name, opt_takes_value(argv[i]), &missing);
        if (missing) {
            fprintf(stderr, "alpaca-sim: %s needs a value\n", name);
            goto out;
        }
        if (strcmp(name, "--help") == 0) {
            fputs(usage_text, stdout);
            rc = 0;
            goto out;
        } else if (strcmp(name, "--host") == 0) {
            host = v;
        } else if (strcmp(name, "--port") == 0) {
            ok = opt_int(v, 0, 65535, &port);
        } else if (strcmp(name, "--port-file") == 0) {
            port_file = v;
        } else if (strcmp(name, "--key") == 0 || strcmp(name, "--secret") == 0) {
            ok = v && strlen(v) < SIM_STR_MAX;
            if (ok)
                snprintf(name[2] == 'k' ? s->k.key : s->k.secret, SIM_STR_MAX, "%s", v);
        } else if (strcmp(name, "--latency-ms") == 0) {
            ok = opt_int(v, 0, 3600000, &s->k.latency_ms);
        } else if (strcmp(name, "--rate") == 0) {
            ok = opt_double(v, 0, 1e9, &s->k.rate);
        } else if (strcmp(name, "--burst") == 0) {
            ok = opt_double(v, 1, 1e9, &s->k.burst);
            burst_given = true;
        } else if (strcmp(name, "--fail-rate") == 0) {
            ok = opt_double(v, 0, 1, &s->k.fail_rate);
        } else if (strcmp(name, "--malformed-rate") == 0) {
            ok = opt_double(v, 0, 1, &s->k.malformed_rate);
        } else if (strcmp(name, "--hang-rate") == 0) {
            ok = opt_double(v, 0, 1, &s->k.hang_rate);
        } else if (strcmp(name, "--stall-rate") == 0) {
            ok = opt_double(v, 0, 1, &s->k.stall_rate);
        } else if (strcmp(name, "--seed") == 0) {
            ok = opt_int(v, INT64_MIN, INT64_MAX, &seed);
        } else if (strcmp(name, "--max-bars") == 0) {
            ok = opt_int(v, 1, INT64_MAX, &s->k.max_bars);
        } else if (strcmp(name, "--settle-seconds") == 0) {
            ok = opt_int(v, 0, SIM_SETTLE_MAX, &s->k.settle_seconds);
        } else if (strcmp(name, "--rate-window") == 0) {
            /* Repeatable: each occurrence adds its windows to the earlier ones. */
            knobs_t nk = s->k;
            int before = s->k.nwin;
            ok = v && windows_parse(&nk, v) && before + nk.nwin <= SIM_WINDOWS_MAX;
            for (int w = 0; ok && w < nk.nwin; w++) {
                s->k.win_ms[before + w] = nk.win_ms[w];
                s->k.win_limit[before + w] = nk.win_limit[w];
            }
            if (ok)
                s->k.nwin = before + nk.nwin;
        } else if (strcmp(name, "--remove-asset") == 0) {
            ok = v && asset_remove_list(&s->k, v);
        } else if (opt_is_flag(name) && !v) {
            if (strcmp(name, "--short-pages") == 0)
                s->k.short_pages = true;
            else if (strcmp(name, "--trailing-empty") == 0)
                s->k.trailing_empty = true;
            else if (strcmp(name, "--gzip") == 0)
                s->k.gzip = true;
            else if (strcmp(name, "--token-ignores-limit") == 0)
                s->k.token_binds_limit = false;
            else if (strcmp(name, "--fill-holes") == 0)
                s->k.fill_holes = true;
            else
                s->k.free_plan = true;
        } else {
            fprintf(stderr, "alpaca-sim: unknown option %s (see --help)\n", argv[i]);
            goto out;
        }
        if (!ok) {
            fprintf(stderr, "alpaca-sim: invalid value for %s: %s\n", name, v ? v : "");
            goto out;
        }
    }
    if (!burst_given)
        s->k.burst = s->k.rate > 1 ? s->k.rate : 1;
    s->rng = (uint64_t)seed;
    bucket_reset(s);
    windows_reset(s);
    rc = 1;
    if (!assets_build(&s->assets, &s->nassets) ||
        !(s->actions = calloc(SIM_ACTIONS_MAX, sizeof *s->actions))) {
        fprintf(stderr, "alpaca-sim: out of memory\n");
        goto out;
    }
    s->nactions = s->nstatic = actions_static(s->actions);

    /* A client hanging up mid-write must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    if ((uvrc = uv_loop_init(&s->loop)) < 0)
        goto uv_fail;
    loop_ready = true;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr) != 0) {
        fprintf(stderr, "alpaca-sim: invalid --host %s\n", host);
        rc = 2;
        goto out;
    }
    if ((uvrc = uv_tcp_init(&s->loop, &s->listener)) < 0)
        goto uv_fail;
    listener_ready = true;
    s->listener.data = s;
    if ((uvrc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0)) < 0 ||
        (uvrc = uv_listen((uv_stream_t *)&s->listener, 511, sim_on_connection)) < 0)
        goto uv_fail;
    int alen = sizeof addr;
    if ((uvrc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &alen)) < 0)
        goto uv_fail;
    int bound = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                 : ((struct sockaddr_in *)&addr)->sin_port);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_term);
    signals_ready = true;
    s->sig_int.data = s;
    s->sig_term.data = s;
    if ((uvrc = uv_signal_start(&s->sig_int, sim_on_signal, SIGINT)) < 0 ||
        (uvrc = uv_signal_start(&s->sig_term, sim_on_signal, SIGTERM)) < 0)
        goto uv_fail;
    if (port_file && !write_port_file(port_file, bound)) {
        fprintf(stderr, "alpaca-sim: cannot write %s: %s\n", port_file, strerror(errno));
        goto out;
    }
    printf("alpaca-sim listening on %s:%d\n", host, bound);
    fflush(stdout);

    uv_run(&s->loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out;
uv_fail:
    fprintf(stderr, "alpaca-sim: %s\n", uv_strerror(uvrc));
out:
    if (loop_ready) {
        if (!s->stopping) {
            if (listener_ready)
                uv_close((uv_handle_t *)&s->listener, NULL);
            if (signals_ready) {
                uv_close((uv_handle_t *)&s->sig_int, NULL);
                uv_close((uv_handle_t *)&s->sig_term, NULL);
            }
            s->stopping = true;
        }
        uv_run(&s->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&s->loop) != 0) {
            fprintf(stderr, "alpaca-sim: handles still open at exit\n");
            rc = 1;
        }
    }
    free(s->assets);
    free(s->actions);
    free(s);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "dump") == 0)
        return dump_main(argc - 1, argv + 1);
    return serve_main(argc, argv);
}
