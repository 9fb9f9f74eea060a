/*
 * Unit tests for the bars module: parsing Alpaca bars bodies and RFC 3339
 * timestamps.
 *
 * Every body is copied into a heap buffer of exactly its length, without a
 * terminating NUL, before it is parsed. That is how the HTTP layer hands
 * bodies over, and it lets AddressSanitizer catch any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bars.h"

#define ERRLEN 256

/* The AAPL bar from the API document, in Alpaca's usual key order. */
#define AAPL_BAR0                                                                                  \
    "{\"t\":\"2021-10-13T04:00:00Z\",\"o\":141.21,\"h\":141.4,\"l\":139.2,\"c\":140.91,"           \
    "\"v\":78993712,\"n\":595435,\"vw\":140.361873}"
#define AAPL_BAR1                                                                                  \
    "{\"t\":\"2021-10-13T05:00:00Z\",\"o\":140.9,\"h\":141,\"l\":140.5,\"c\":140.75,"              \
    "\"v\":1200,\"n\":33,\"vw\":140.7}"
#define MSFT_BAR0                                                                                  \
    "{\"t\":\"2022-01-03T09:00:00Z\",\"o\":178.26,\"h\":178.26,\"l\":178.21,\"c\":178.21,"         \
    "\"v\":1118,\"n\":65,\"vw\":178.235733}"

static const char multi_body[] = "{\"bars\":{\"AAPL\":[" AAPL_BAR0 "," AAPL_BAR1 "],"
                                 "\"MSFT\":[" MSFT_BAR0 "]},"
                                 "\"next_page_token\":\"QUFQTHxNfDIwMjEtMTAtMTM=\"}";

/* Parses s from an exact-size copy with no NUL after it. */
static int parse_multi_len(const char *s, size_t len, bars_page_t *p, char *err)
{
    char *copy = malloc(len > 0 ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, s, len);
    rc = bars_parse_multi(copy, len, p, err, ERRLEN);
    free(copy);
    return rc;
}

static int parse_multi(const char *s, bars_page_t *p, char *err)
{
    return parse_multi_len(s, strlen(s), p, err);
}

static int parse_single(const char *s, const char *symbol, bars_page_t *p, char *err)
{
    size_t len = strlen(s);
    char *copy = malloc(len > 0 ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, s, len);
    rc = bars_parse_single(copy, len, symbol, p, err, ERRLEN);
    free(copy);
    return rc;
}

static bool error_message(const char *s, char *out, size_t outlen)
{
    size_t len = strlen(s);
    char *copy = malloc(len > 0 ? len : 1);
    bool ok;

    assert_non_null(copy);
    memcpy(copy, s, len);
    ok = bars_error_message(copy, len, out, outlen);
    free(copy);
    return ok;
}

static void assert_page_empty(const bars_page_t *p)
{
    assert_null(p->series);
    assert_int_equal(p->nseries, 0);
    assert_int_equal(p->total, 0);
    assert_null(p->next_page_token);
}

/* A multi-symbol body must fail with a message containing want. */
static void expect_multi_error(const char *body, const char *want)
{
    bars_page_t p;
    char err[ERRLEN];

    /* Garbage in *out must not be mistaken for something to free. */
    memset(&p, 0xa5, sizeof(p));
    assert_int_equal(parse_multi(body, &p, err), -1);
    assert_page_empty(&p);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\" (body %s)", err, want, body);
}

static void assert_bar(const bar_t *b, int64_t ts, double o, double h, double l, double c,
                       int64_t v, int64_t n, double vw)
{
    assert_int_equal(b->ts_us, ts);
    assert_true(b->open == o);
    assert_true(b->high == h);
    assert_true(b->low == l);
    assert_true(b->close == c);
    assert_int_equal(b->volume, v);
    assert_int_equal(b->trade_count, n);
    assert_true(b->vwap == vw);
}

static void test_multi_two_symbols(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(parse_multi(multi_body, &p, err), 0);
    assert_string_equal(err, "");
    assert_int_equal(p.nseries, 2);
    assert_int_equal(p.total, 3);
    assert_string_equal(p.next_page_token, "QUFQTHxNfDIwMjEtMTAtMTM=");

    assert_string_equal(p.series[0].symbol, "AAPL");
    assert_int_equal(p.series[0].n, 2);
    assert_bar(&p.series[0].bars[0], 1634097600000000, 141.21, 141.4, 139.2, 140.91, 78993712,
               595435, 140.361873);
    assert_bar(&p.series[0].bars[1], 1634101200000000, 140.9, 141.0, 140.5, 140.75, 1200, 33,
               140.7);

    assert_string_equal(p.series[1].symbol, "MSFT");
    assert_int_equal(p.series[1].n, 1);
    assert_bar(&p.series[1].bars[0], 1641200400000000, 178.26, 178.26, 178.21, 178.21, 1118, 65,
               178.235733);

    bars_page_clear(&p);
    assert_page_empty(&p);
    /* Clearing twice is allowed and does nothing. */
    bars_page_clear(&p);
    bars_page_clear(NULL);
}

static void test_series_order_follows_body(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(parse_multi("{\"bars\":{\"ZZZ\":[" AAPL_BAR0 "],\"AAA\":[" MSFT_BAR0 "]},"
                                 "\"next_page_token\":null}",
                                 &p, err),
                     0);
    assert_int_equal(p.nseries, 2);
    assert_string_equal(p.series[0].symbol, "ZZZ");
    assert_string_equal(p.series[1].symbol, "AAA");
    bars_page_clear(&p);
}

static void test_key_orders(void **state)
{
    static const char t_first[] =
        "{\"bars\":{\"AAPL\":[{\"t\":\"2021-10-13T04:00:00Z\",\"o\":1.5,\"h\":2.25,\"l\":1.25,"
        "\"c\":2,\"v\":10,\"n\":3,\"vw\":1.75,\"extra\":[1,{\"x\":null}]}]},"
        "\"next_page_token\":null}";
    static const char alpha[] =
        "{\"next_page_token\":null,\"currency\":\"USD\",\"bars\":{\"AAPL\":[{\"c\":2,\"h\":2.25,"
        "\"l\":1.25,\"n\":3,\"o\":1.5,\"t\":\"2021-10-13T04:00:00Z\",\"v\":10,\"vw\":1.75}]}}";
    bars_page_t a, b;
    char err[ERRLEN];

    assert_int_equal(parse_multi(t_first, &a, err), 0);
    assert_int_equal(parse_multi(alpha, &b, err), 0);
    assert_int_equal(a.total, 1);
    assert_int_equal(b.total, 1);
    assert_bar(&a.series[0].bars[0], 1634097600000000, 1.5, 2.25, 1.25, 2.0, 10, 3, 1.75);
    assert_bar(&b.series[0].bars[0], 1634097600000000, 1.5, 2.25, 1.25, 2.0, 10, 3, 1.75);
    bars_page_clear(&a);
    bars_page_clear(&b);
}

static void test_token_null_and_absent(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(
        parse_multi("{\"bars\":{\"AAPL\":[" AAPL_BAR0 "]},\"next_page_token\":null}", &p, err), 0);
    assert_null(p.next_page_token);
    assert_int_equal(p.total, 1);
    bars_page_clear(&p);

    assert_int_equal(parse_multi("{\"bars\":{\"AAPL\":[" AAPL_BAR0 "]}}", &p, err), 0);
    assert_null(p.next_page_token);
    assert_int_equal(p.total, 1);
    bars_page_clear(&p);

    expect_multi_error("{\"bars\":{},\"next_page_token\":42}",
                       "\"next_page_token\" is neither a string nor null");
    expect_multi_error("{\"bars\":{},\"next_page_token\":false}",
                       "\"next_page_token\" is neither a string nor null");
}

static void test_empty_pages(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(parse_multi("{\"bars\":{},\"next_page_token\":null}", &p, err), 0);
    assert_page_empty(&p);
    bars_page_clear(&p);

    assert_int_equal(parse_multi("{\"bars\":null,\"next_page_token\":null}", &p, err), 0);
    assert_page_empty(&p);
    bars_page_clear(&p);

    /* An empty page may still carry a token; the caller must follow it. */
    assert_int_equal(parse_multi(" {\"bars\":{},\"next_page_token\":\"abc\"}\r\n", &p, err), 0);
    assert_int_equal(p.nseries, 0);
    assert_string_equal(p.next_page_token, "abc");
    bars_page_clear(&p);

    /* An empty array for a symbol is allowed and yields an empty series. */
    assert_int_equal(parse_multi("{\"bars\":{\"AAPL\":[],\"MSFT\":[" MSFT_BAR0
                                 "]},\"next_page_token\":null}",
                                 &p, err),
                     0);
    assert_int_equal(p.nseries, 2);
    assert_int_equal(p.total, 1);
    assert_string_equal(p.series[0].symbol, "AAPL");
    assert_int_equal(p.series[0].n, 0);
    assert_int_equal(p.series[1].n, 1);
    bars_page_clear(&p);
}

static void test_multi_shape_errors(void **state)
{
    expect_multi_error("{\"message\":\"x\"}", "missing \"bars\"");
    expect_multi_error("{\"bars\":[],\"next_page_token\":null}", "\"bars\" is not an object");
    expect_multi_error("{\"bars\":\"AAPL\"}", "\"bars\" is not an object");
    expect_multi_error("[1,2]", "body is not a JSON object");
    expect_multi_error("null", "body is not a JSON object");
    expect_multi_error("{\"bars\":{\"AAPL\":{}}}", "AAPL: bars are not an array");
    expect_multi_error("{\"bars\":{\"AAPL\":[1]}}", "AAPL bar 0: not an object");
    expect_multi_error("{\"bars\":{\"\":[]}}", "without a symbol");
    expect_multi_error("{\"bars\":{}}{\"bars\":{}}", "body is not valid JSON");
    expect_multi_error("{\"bars\":{}} x", "body is not valid JSON");
    expect_multi_error("", "body is not valid JSON (truncated or malformed)");
}

static void test_null_arguments(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(bars_parse_multi(NULL, 0, &p, err, sizeof(err)), -1);
    assert_page_empty(&p);
    assert_string_equal(err, "body is not valid JSON (truncated or malformed)");
    assert_int_equal(bars_parse_multi("{}", 2, NULL, err, sizeof(err)), -1);
    /* A missing err buffer is allowed: the page is still rejected. */
    assert_int_equal(bars_parse_multi("{}", 2, &p, NULL, 0), -1);
    assert_int_equal(bars_parse_single("{}", 2, NULL, &p, err, sizeof(err)), -1);
    assert_page_empty(&p);
}

static void test_error_truncated_into_small_buffer(void **state)
{
    bars_page_t p;
    char err[8];

    memset(err, 'x', sizeof(err));
    assert_int_equal(bars_parse_multi("{\"message\":\"x\"}", 15, &p, err, sizeof(err)), -1);
    assert_string_equal(err, "missing");
    err[0] = 'x';
    assert_int_equal(bars_parse_multi("{\"message\":\"x\"}", 15, &p, err, 1), -1);
    assert_string_equal(err, "");
}

static void test_single(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    assert_int_equal(parse_single("{\"bars\":[" MSFT_BAR0 "],\"symbol\":\"MSFT\","
                                  "\"next_page_token\":\"TVNGVHxNfDIwMjI=\"}",
                                  "MSFT", &p, err),
                     0);
    assert_int_equal(p.nseries, 1);
    assert_int_equal(p.total, 1);
    assert_string_equal(p.series[0].symbol, "MSFT");
    assert_string_equal(p.next_page_token, "TVNGVHxNfDIwMjI=");
    assert_bar(&p.series[0].bars[0], 1641200400000000, 178.26, 178.26, 178.21, 178.21, 1118, 65,
               178.235733);
    bars_page_clear(&p);

    assert_int_equal(
        parse_single("{\"bars\":null,\"symbol\":\"SPY\",\"next_page_token\":null}", "SPY", &p, err),
        0);
    assert_page_empty(&p);
    bars_page_clear(&p);

    assert_int_equal(
        parse_single("{\"bars\":[],\"symbol\":\"SPY\",\"next_page_token\":null}", "SPY", &p, err),
        0);
    assert_int_equal(p.nseries, 1);
    assert_int_equal(p.series[0].n, 0);
    assert_int_equal(p.total, 0);
    bars_page_clear(&p);
}

static void test_single_errors(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    memset(&p, 0x5a, sizeof(p));
    assert_int_equal(parse_single("{\"bars\":[" MSFT_BAR0 "],\"symbol\":\"MSFT\","
                                  "\"next_page_token\":null}",
                                  "AAPL", &p, err),
                     -1);
    assert_page_empty(&p);
    assert_string_equal(err, "\"symbol\" is \"MSFT\", expected \"AAPL\"");

    assert_int_equal(parse_single("{\"bars\":[],\"next_page_token\":null}", "AAPL", &p, err), -1);
    assert_string_equal(err, "\"symbol\" is missing or not a string");
    assert_int_equal(parse_single("{\"bars\":[],\"symbol\":7}", "AAPL", &p, err), -1);
    assert_string_equal(err, "\"symbol\" is missing or not a string");
    assert_int_equal(parse_single("{\"bars\":{},\"symbol\":\"AAPL\"}", "AAPL", &p, err), -1);
    assert_string_equal(err, "\"bars\" is not an array");
    assert_int_equal(parse_single("{\"symbol\":\"AAPL\"}", "AAPL", &p, err), -1);
    assert_string_equal(err, "missing \"bars\"");
    assert_int_equal(
        parse_single("{\"bars\":[" AAPL_BAR0 ",{\"t\":1}],\"symbol\":\"AAPL\"}", "AAPL", &p, err),
        -1);
    assert_string_equal(err, "AAPL bar 1: \"t\" is not a string");
    assert_page_empty(&p);
}

static void test_missing_each_key(void **state)
{
    static const char *const keys[] = {"t", "o", "h", "l", "c", "v", "n", "vw"};
    static const char *const vals[] = {
        "\"2024-01-02T15:00:00Z\"", "1.5", "2", "1", "1.75", "100", "7", "1.6"};

    for (size_t skip = 0; skip < 8; skip++) {
        char body[1024], bar[256], want[64];
        size_t off = 0;

        off += (size_t)snprintf(bar + off, sizeof(bar) - off, "{");
        for (size_t k = 0; k < 8; k++) {
            if (k == skip)
                continue;
            off += (size_t)snprintf(bar + off, sizeof(bar) - off, "%s\"%s\":%s", off > 1 ? "," : "",
                                    keys[k], vals[k]);
        }
        snprintf(bar + off, sizeof(bar) - off, "}");
        /* The broken bar is the second of NVDA's, after a good one. */
        snprintf(body, sizeof(body),
                 "{\"bars\":{\"AAPL\":[" AAPL_BAR0 "],\"NVDA\":[" AAPL_BAR0 ",%s]},"
                 "\"next_page_token\":\"x\"}",
                 bar);
        snprintf(want, sizeof(want), "NVDA bar 1: missing \"%s\"", keys[skip]);
        expect_multi_error(body, want);
    }
}

/* Builds a one-bar AAPL page where key `key` has the JSON value `val`. */
static void expect_bad_value(const char *key, const char *val, const char *want)
{
    static const char *const keys[] = {"t", "o", "h", "l", "c", "v", "n", "vw"};
    static const char *const vals[] = {
        "\"2024-01-02T15:00:00Z\"", "1.5", "2", "1", "1.75", "100", "7", "1.6"};
    char body[512];
    size_t off = 0;

    off += (size_t)snprintf(body + off, sizeof(body) - off, "{\"bars\":{\"AAPL\":[{");
    for (size_t k = 0; k < 8; k++) {
        off += (size_t)snprintf(body + off, sizeof(body) - off, "%s\"%s\":%s", k ? "," : "",
                                keys[k], strcmp(keys[k], key) == 0 ? val : vals[k]);
    }
    snprintf(body + off, sizeof(body) - off, "}]},\"next_page_token\":null}");
    expect_multi_error(body, want);
}

static void test_wrong_types(void **state)
{
    expect_bad_value("o", "\"141.21\"", "AAPL bar 0: \"o\" is not a number");
    expect_bad_value("vw", "null", "AAPL bar 0: \"vw\" is not a number");
    expect_bad_value("c", "true", "AAPL bar 0: \"c\" is not a number");
    expect_bad_value("h", "1e999", "AAPL bar 0: \"h\" is not finite");
    expect_bad_value("v", "\"100\"", "AAPL bar 0: \"v\" is not a number");
    expect_bad_value("v", "100.5", "AAPL bar 0: \"v\" is not a whole number");
    expect_bad_value("n", "-1", "AAPL bar 0: \"n\" is negative");
    expect_bad_value("v", "9223372036854775808", "AAPL bar 0: \"v\" is too large");
    expect_bad_value("v", "1e999", "AAPL bar 0: \"v\" is not a whole number");
    expect_bad_value("t", "1634097600", "AAPL bar 0: \"t\" is not a string");
    expect_bad_value("t", "\"2021-10-13 04:00:00\"", "AAPL bar 0: \"t\" is not an RFC 3339 time");
    expect_bad_value("t", "\"2023-02-29T00:00:00Z\"", "AAPL bar 0: \"t\" is not an RFC 3339 time");
}

static void test_integral_numbers_accepted(void **state)
{
    bars_page_t p;
    char err[ERRLEN];

    /* Exponent notation and -0 are still whole, non-negative numbers. */
    assert_int_equal(parse_multi("{\"bars\":{\"X\":[{\"t\":\"2024-01-02T15:00:00Z\",\"o\":1,"
                                 "\"h\":1,\"l\":1,\"c\":1,\"v\":1.5e6,\"n\":-0,\"vw\":1}]}}",
                                 &p, err),
                     0);
    assert_int_equal(p.series[0].bars[0].volume, 1500000);
    assert_int_equal(p.series[0].bars[0].trade_count, 0);
    bars_page_clear(&p);

    /* The largest double below 2^63 still fits. */
    assert_int_equal(parse_multi("{\"bars\":{\"X\":[{\"t\":\"2024-01-02T15:00:00Z\",\"o\":1,"
                                 "\"h\":1,\"l\":1,\"c\":1,\"v\":9223372036854774784,\"n\":0,"
                                 "\"vw\":1}]}}",
                                 &p, err),
                     0);
    assert_int_equal(p.series[0].bars[0].volume, INT64_C(9223372036854774784));
    bars_page_clear(&p);
}

static void test_truncated_bodies(void **state)
{
    size_t len = strlen(multi_body);
    bars_page_t p;
    char err[ERRLEN];

    for (size_t i = 0; i < len; i++) {
        memset(&p, 0xa5, sizeof(p));
        if (parse_multi_len(multi_body, i, &p, err) != -1)
            fail_msg("prefix of %zu bytes parsed", i);
        assert_page_empty(&p);
        assert_string_equal(err, "body is not valid JSON (truncated or malformed)");
    }
    assert_int_equal(parse_multi_len(multi_body, len, &p, err), 0);
    bars_page_clear(&p);
}

static void test_html_body(void **state)
{
    expect_multi_error("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                       "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
                       "body is not valid JSON (truncated or malformed)");
}

static void test_non_increasing_timestamps(void **state)
{
    expect_multi_error("{\"bars\":{\"AAPL\":[" AAPL_BAR0 "," AAPL_BAR1 "," AAPL_BAR1 "]}}",
                       "AAPL bar 2: \"t\" not after the previous bar");
    expect_multi_error("{\"bars\":{\"AAPL\":[" AAPL_BAR1 "," AAPL_BAR0 "]}}",
                       "AAPL bar 1: \"t\" not after the previous bar");
}

static void test_duplicate_symbol(void **state)
{
    expect_multi_error("{\"bars\":{\"AAPL\":[" AAPL_BAR0 "],\"MSFT\":[" MSFT_BAR0 "],"
                       "\"AAPL\":[" AAPL_BAR1 "]}}",
                       "AAPL appears twice in \"bars\"");
}

static void test_large_page(void **state)
{
    const size_t nbars = 10000, first = 6000;
    size_t cap = nbars * 160 + 256, off = 0;
    char *body = malloc(cap);
    bars_page_t p;
    char err[ERRLEN];
    int64_t base;

    assert_non_null(body);
    assert_int_equal(bars_parse_time("2024-01-02T09:00:00Z", &base), 0);
    off += (size_t)snprintf(body + off, cap - off, "{\"bars\":{\"AAPL\":[");
    for (size_t i = 0; i < nbars; i++) {
        char ts[32];

        if (i == first)
            off += (size_t)snprintf(body + off, cap - off, "],\"MSFT\":[");
        bars_format_time(base + (int64_t)(i % first) * 60 * 1000000, ts, sizeof(ts));
        off +=
            (size_t)snprintf(body + off, cap - off,
                             "%s{\"t\":\"%s\",\"o\":%zu.25,\"h\":%zu.5,\"l\":%zu,\"c\":%zu.75,"
                             "\"v\":%zu,\"n\":%zu,\"vw\":%zu.125}",
                             (i == 0 || i == first) ? "" : ",", ts, i, i, i, i, i * 100, i % 50, i);
        assert_true(off < cap);
    }
    off += (size_t)snprintf(body + off, cap - off, "]},\"next_page_token\":\"more\"}");
    assert_true(off < cap);

    assert_int_equal(parse_multi_len(body, off, &p, err), 0);
    assert_int_equal(p.total, nbars);
    assert_int_equal(p.nseries, 2);
    assert_int_equal(p.series[0].n, first);
    assert_int_equal(p.series[1].n, nbars - first);
    assert_bar(&p.series[1].bars[3999], base + 3999 * INT64_C(60000000), 9999.25, 9999.5, 9999,
               9999.75, 999900, 9999 % 50, 9999.125);
    assert_string_equal(p.next_page_token, "more");
    bars_page_clear(&p);
    free(body);
}

static void test_error_message(void **state)
{
    char msg[64];

    assert_true(error_message("{\"message\":\"invalid timeframe: 3Fortnight\"}", msg, sizeof(msg)));
    assert_string_equal(msg, "invalid timeframe: 3Fortnight");
    assert_true(error_message(
        "{\"code\":42210000,\"message\":\"subscription does not permit querying recent SIP data\"}",
        msg, sizeof(msg)));
    assert_string_equal(msg, "subscription does not permit querying recent SIP data");
    /* A long message is truncated, not overflowed. */
    assert_true(error_message("{\"message\":\"too many requests.\"}", msg, 9));
    assert_string_equal(msg, "too many");

    assert_false(error_message("<html>\r\n<head><title>401 Authorization Required</title></head>"
                               "\r\n</html>\r\n",
                               msg, sizeof(msg)));
    assert_string_equal(msg, "");
    assert_false(error_message("{\"code\":40010000}", msg, sizeof(msg)));
    assert_false(error_message("{\"message\":42}", msg, sizeof(msg)));
    assert_false(error_message("[\"message\"]", msg, sizeof(msg)));
    assert_false(error_message("{\"message\":\"cut", msg, sizeof(msg)));
    assert_false(error_message("", msg, sizeof(msg)));
    assert_false(bars_error_message(NULL, 0, msg, sizeof(msg)));
    assert_false(bars_error_message("{\"message\":\"x\"}", 15, NULL, 0));
}

static void expect_time(const char *s, int64_t want)
{
    int64_t got = -1;

    if (bars_parse_time(s, &got) != 0)
        fail_msg("\"%s\" was rejected", s);
    if (got != want)
        fail_msg("\"%s\" parsed as %lld, want %lld", s, (long long)got, (long long)want);
}

static void expect_bad_time(const char *s)
{
    int64_t got = 12345;

    if (bars_parse_time(s, &got) != -1)
        fail_msg("\"%s\" was accepted as %lld", s, (long long)got);
}

static void test_parse_time_accepts(void **state)
{
    expect_time("2024-03-10T07:00:00Z", 1710054000000000);
    expect_time("2024-03-10T02:00:00-05:00", 1710054000000000);
    expect_time("2024-03-10T12:30:00+05:30", 1710054000000000);
    expect_time("2024-03-10t07:00:00z", 1710054000000000);
    expect_time("2024-02-29T00:00:00.123456789Z", 1709164800123456);
    expect_time("2024-02-29T00:00:00.5Z", 1709164800500000);
    expect_time("2024-02-29T00:00:00.000001Z", 1709164800000001);
    expect_time("2024-01-01", 1704067200000000);
    expect_time("2024-01-01T00:00:00Z", 1704067200000000);
    expect_time("1970-01-01T00:00:00Z", 0);
    expect_time("2000-02-29T23:59:59Z", 951868799000000);
    expect_time("9999-12-31T23:59:59Z", 253402300799000000);
}

static void test_parse_time_rejects(void **state)
{
    static const char *const bad[] = {
        "2023-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-01T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T23:60:00Z",
        "2024-01-01T23:59:60Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00Zjunk",
        "2024-01-01T00:00:00+05:00x",
        "",
        "2024",
        "2024-01",
        "2024-01-1",
        "2024-01-01T",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00Z",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00.1234567890Z",
        "2024-01-01T00:00:00+0500",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+05:60",
        "1969-12-31T23:59:59Z",
        "24-01-01T00:00:00Z",
        "+2024-01-01T00:00:00Z",
        " 2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z ",
        "2024-01-01x",
        "2024-1-01",
        "2024-01-01T0a:00:00Z",
        "2024/01/01",
    };
    int64_t us = 12345;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad_time(bad[i]);
    assert_int_equal(bars_parse_time(NULL, &us), -1);
    assert_int_equal(us, 12345);
    assert_int_equal(bars_parse_time("2024-01-01", NULL), -1);
}

static void test_format_time(void **state)
{
    static const char *const values[] = {
        "1970-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-02-29T23:59:59Z",
        "2021-10-13T04:00:00Z", "2000-03-01T12:34:56Z", "2100-12-31T23:59:59Z",
        "9999-12-31T23:59:59Z", "1999-12-31T23:59:59Z",
    };
    char buf[32];
    int64_t us;

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        assert_int_equal(bars_parse_time(values[i], &us), 0);
        bars_format_time(us, buf, sizeof(buf));
        assert_string_equal(buf, values[i]);
    }
    bars_format_time(1704067200000000, buf, sizeof(buf));
    assert_string_equal(buf, "2024-01-01T00:00:00Z");
    /* The fraction is dropped, not rounded. */
    bars_format_time(1704067200999999, buf, sizeof(buf));
    assert_string_equal(buf, "2024-01-01T00:00:00Z");
    /* Pre-epoch instants floor to the earlier second. */
    bars_format_time(-1, buf, sizeof(buf));
    assert_string_equal(buf, "1969-12-31T23:59:59Z");
    /* A short buffer is truncated and terminated. */
    bars_format_time(0, buf, 5);
    assert_string_equal(buf, "1970");
    /* Extremes must not crash. */
    bars_format_time(INT64_MIN, buf, sizeof(buf));
    bars_format_time(INT64_MAX, buf, sizeof(buf));
    bars_format_time(0, NULL, 0);
}

/* Days since 1970-01-01 of a civil date, written out so the test does not use the module's. */
static int64_t day_of(const char *ymd)
{
    int64_t us;
    assert_int_equal(bars_parse_time(ymd, &us), 0);
    return us / INT64_C(86400000000);
}

static int64_t utc_us(const char *rfc3339)
{
    int64_t us;
    assert_int_equal(bars_parse_time(rfc3339, &us), 0);
    return us;
}

static void test_ny_midnight(void **state)
{
    (void)state;
    /* EST (UTC-5) and EDT (UTC-4), on both sides of each change, under the 2007 rules. */
    assert_true(bars_ny_midnight_us(day_of("2024-12-31")) == utc_us("2024-12-31T05:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2024-03-10")) == utc_us("2024-03-10T05:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2024-03-11")) == utc_us("2024-03-11T04:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2024-11-03")) == utc_us("2024-11-03T04:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2024-11-04")) == utc_us("2024-11-04T05:00:00Z"));
    /* 1987-2006: first Sunday of April to last Sunday of October. */
    assert_true(bars_ny_midnight_us(day_of("2006-04-02")) == utc_us("2006-04-02T05:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2006-04-03")) == utc_us("2006-04-03T04:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2006-10-29")) == utc_us("2006-10-29T04:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2006-10-30")) == utc_us("2006-10-30T05:00:00Z"));
    assert_true(bars_ny_midnight_us(day_of("2006-03-13")) == utc_us("2006-03-13T05:00:00Z"));
}

static void test_ny_day(void **state)
{
    (void)state;
    /* 20:00 EST on Dec 31 is 01:00Z on Jan 1, still Dec 31 in New York. */
    assert_true(bars_ny_day(utc_us("2025-01-01T00:59:00Z")) == day_of("2024-12-31"));
    assert_true(bars_ny_day(utc_us("2025-01-01T05:00:00Z")) == day_of("2025-01-01"));
    assert_true(bars_ny_day(utc_us("2025-01-01T04:59:59Z")) == day_of("2024-12-31"));
    /* The changes themselves: 02:00 EST = 07:00Z, 02:00 EDT = 06:00Z. */
    assert_true(bars_ny_day(utc_us("2024-03-10T06:59:59Z")) == day_of("2024-03-10"));
    assert_true(bars_ny_day(utc_us("2024-03-11T03:59:59Z")) == day_of("2024-03-10"));
    assert_true(bars_ny_day(utc_us("2024-03-11T04:00:00Z")) == day_of("2024-03-11"));
    assert_true(bars_ny_day(utc_us("2024-11-04T04:59:59Z")) == day_of("2024-11-03"));
    assert_true(bars_ny_day(utc_us("2024-11-04T05:00:00Z")) == day_of("2024-11-04"));
    assert_true(bars_ny_day(utc_us("2024-11-03T03:59:59Z")) == day_of("2024-11-02"));
}

static void test_bar_end(void **state)
{
    (void)state;
    assert_true(bars_bar_end_us("m1", utc_us("2024-12-31T14:30:00Z")) ==
                utc_us("2024-12-31T14:31:00Z"));
    assert_true(bars_bar_end_us("h4", utc_us("2024-12-31T12:00:00Z")) ==
                utc_us("2024-12-31T16:00:00Z"));
    /* A daily bar (stamped at New York midnight) ends at the next one, 23 or 25 h later. */
    assert_true(bars_bar_end_us("d1", utc_us("2024-03-09T05:00:00Z")) ==
                utc_us("2024-03-10T05:00:00Z"));
    assert_true(bars_bar_end_us("d1", utc_us("2024-03-10T05:00:00Z")) ==
                utc_us("2024-03-11T04:00:00Z"));
    assert_true(bars_bar_end_us("d1", utc_us("2024-11-03T04:00:00Z")) ==
                utc_us("2024-11-04T05:00:00Z"));
    assert_true(bars_bar_end_us("w1", utc_us("2024-03-04T05:00:00Z")) ==
                utc_us("2024-03-11T04:00:00Z"));
    assert_true(bars_bar_end_us("mn1", utc_us("2024-12-01T05:00:00Z")) ==
                utc_us("2025-01-01T05:00:00Z"));
    assert_true(bars_bar_end_us("mn1", utc_us("2024-10-01T04:00:00Z")) ==
                utc_us("2024-11-01T04:00:00Z"));
    assert_true(bars_bar_end_us("x9", 0) == 0);
}

/*
 * "bars" is read where the walk over the top level meets it, but the checks
 * keep their order: a bad "next_page_token" (or, on a single-symbol page, the
 * wrong "symbol") is reported before a bad bar, wherever the keys stand,
 * escapes in keys and values decode, and the first of two "bars" counts.
 */
static void test_checks_keep_their_order(void **state)
{
    (void)state;
    bars_page_t p;
    char err[ERRLEN];
    const char *bad_bar = "[{\"t\":\"2024-01-02T15:00:00Z\",\"o\":1}]";
    char body[512];

    snprintf(body, sizeof body, "{\"bars\":{\"AAPL\":%s},\"next_page_token\":5}", bad_bar);
    assert_int_equal(parse_multi(body, &p, err), -1);
    assert_string_equal(err, "\"next_page_token\" is neither a string nor null");
    assert_int_equal(p.nseries, 0);
    snprintf(body, sizeof body, "{\"next_page_token\":null,\"bars\":{\"AAPL\":%s}}", bad_bar);
    assert_int_equal(parse_multi(body, &p, err), -1);
    assert_string_equal(err, "AAPL bar 0: missing \"h\"");

    snprintf(body, sizeof body, "{\"bars\":%s,\"symbol\":\"MSFT\",\"next_page_token\":null}",
             bad_bar);
    assert_int_equal(parse_single(body, "AAPL", &p, err), -1);
    assert_string_equal(err, "\"symbol\" is \"MSFT\", expected \"AAPL\"");
    snprintf(body, sizeof body, "{\"bars\":%s,\"symbol\":\"AAPL\",\"next_page_token\":[]}",
             bad_bar);
    assert_int_equal(parse_single(body, "AAPL", &p, err), -1);
    assert_string_equal(err, "\"next_page_token\" is neither a string nor null");
    snprintf(body, sizeof body, "{\"bars\":%s,\"symbol\":\"AAPL\"}", bad_bar);
    assert_int_equal(parse_single(body, "AAPL", &p, err), -1);
    assert_string_equal(err, "AAPL bar 0: missing \"h\"");

    const char *good =
        "{\"b\\u0061rs\":{\"A\\u0041PL\":[{\"\\u0074\":\"2024-01-02T15:00:00\\u005A\","
        "\"o\":1,\"h\":2,\"l\":0.5,\"c\":1.5,\"v\":10,\"n\":3,\"v\\u0077\":1.25}]},"
        "\"bars\":{\"MSFT\":[]},\"next_page_token\":\"t\\/1\"}";
    assert_int_equal(parse_multi(good, &p, err), 0);
    assert_int_equal(p.nseries, 1);
    assert_string_equal(p.series[0].symbol, "AAPL");
    assert_int_equal(p.series[0].n, 1);
    assert_true(p.series[0].bars[0].vwap == 1.25 && p.series[0].bars[0].high == 2);
    assert_string_equal(p.next_page_token, "t/1");
    bars_page_clear(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_keep_their_order),
        cmocka_unit_test(test_multi_two_symbols),
        cmocka_unit_test(test_series_order_follows_body),
        cmocka_unit_test(test_key_orders),
        cmocka_unit_test(test_token_null_and_absent),
        cmocka_unit_test(test_empty_pages),
        cmocka_unit_test(test_multi_shape_errors),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_error_truncated_into_small_buffer),
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_single_errors),
        cmocka_unit_test(test_missing_each_key),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_integral_numbers_accepted),
        cmocka_unit_test(test_truncated_bodies),
        cmocka_unit_test(test_html_body),
        cmocka_unit_test(test_non_increasing_timestamps),
        cmocka_unit_test(test_duplicate_symbol),
        cmocka_unit_test(test_large_page),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_parse_time_accepts),
        cmocka_unit_test(test_parse_time_rejects),
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_ny_midnight),
        cmocka_unit_test(test_ny_day),
        cmocka_unit_test(test_bar_end),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
