/*
 * Fuzz target: bars_parse_time and bars_format_time, the RFC 3339 code that
 * every bar's "t" goes through.
 *
 * bars.c does its own calendar arithmetic so that TZ and libc never matter.
 * This target checks it against a second, plainer implementation of the
 * grammar in bars.h that leaves the calendar to libc's timegm() and
 * gmtime_r(): both must accept exactly the same strings and agree on the
 * microsecond. The first eight input bytes, read as an int64_t, are also
 * formatted, into a buffer of exactly the 21 bytes bars.h asks for, and a
 * formatted time in years 1970-9999 must parse back to itself.
 */
#include "bars.h"
#include "fuzz.h"

#include <time.h>

#define US INT64_C(1000000)
/* 10000-01-01T00:00:00Z: the first instant bars_parse_time cannot express. */
#define YEAR_10000_S INT64_C(253402300800)
/* 0001-01-01T00:00:00Z, the first instant both formatters write in four digits. */
#define YEAR_1_S INT64_C(-62135596800)

/* True when s[0..n) are ASCII digits; stops at the first non-digit, so never reads past a NUL. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* The grammar of bars_parse_time, from its comment in bars.h, with libc's calendar. */
static int ref_parse(const char *s, int64_t *us)
{
    size_t n = strlen(s), i = 10;
    int y, mo, d, h = 0, mi = 0, sec = 0, oh, om;
    int64_t frac = 0, off = 0;

    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    time_t day = timegm(&tm);
    /* timegm() normalises 31 April into 1 May: a changed field means no such day. */
    if (tm.tm_mday != d || tm.tm_mon != mo - 1)
        return -1;
    if (n > 10) {
        if ((s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' ||
            !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
            return -1;
        if (h > 23 || mi > 59 || sec > 59)
            return -1;
        i = 19;
        if (s[i] == '.') {
            size_t j = i + 1;
            while (s[j] >= '0' && s[j] <= '9')
                j++;
            size_t nd = j - i - 1;
            if (nd < 1 || nd > 9)
                return -1;
            for (size_t k = 0; k < 6; k++)
                frac = frac * 10 + (k < nd ? s[i + 1 + k] - '0' : 0);
            i = j;
        }
        if (s[i] == 'Z' || s[i] == 'z') {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) ||
                oh > 23 || om > 59)
                return -1;
            off = (s[i] == '+' ? 1 : -1) * (int64_t)(oh * 3600 + om * 60);
            i += 6;
        } else {
            return -1;
        }
        if (i != n)
            return -1;
    }
    *us = ((int64_t)day + h * 3600 + mi * 60 + sec - off) * US + frac;
    return 0;
}

/* Floor division by 10^6: the whole second an instant falls in, also before 1970. */
static int64_t floor_s(int64_t us)
{
    return us / US - (us % US < 0);
}

static void check_format(int64_t us)
{
    char *buf = malloc(21);
    if (buf == NULL)
        abort();
    bars_format_time(us, buf, 21);
    FUZZ_CHECK(fuzz_terminated(buf, 21));
    int64_t s = floor_s(us);
    if (s >= YEAR_1_S && s < YEAR_10000_S) {
        char want[64];
        time_t t = (time_t)s;
        struct tm tm;
        FUZZ_CHECK(gmtime_r(&t, &tm) != NULL);
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        FUZZ_CHECK(strcmp(buf, want) == 0);
    }
    if (s >= 0 && s < YEAR_10000_S) {
        int64_t back;
        FUZZ_CHECK(bars_parse_time(buf, &back) == 0);
        FUZZ_CHECK(back == s * US);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    int64_t got = 0, want = 0;
    int rc = bars_parse_time(s, &got);
    int ref = ref_parse(s, &want);

    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(rc == ref);
    if (rc == 0) {
        FUZZ_CHECK(got == want);
        check_format(got);
    }
    FUZZ_CHECK(bars_parse_time(NULL, &got) == -1 && bars_parse_time(s, NULL) == -1);
    if (size >= sizeof(int64_t)) {
        int64_t us;
        memcpy(&us, data, sizeof us);
        check_format(us);
    }
    free(s);
    return 0;
}
