/*
 * Unit tests for how bars finds a bar's keys (issue #11): the eight keys are
 * found in one walk, the first of a repeated key counts (as
 * cJSON_GetObjectItemCaseSensitive had it, before pages were read without a
 * tree), and page after page parses see only their own body, after failed
 * parses too, for bodies of megabytes.
 *
 * Bodies are copied into heap buffers of exactly their length, with no NUL
 * after them, as the HTTP layer hands them over.
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

static int parse_multi(const char *s, bars_page_t *p, char *err)
{
    size_t len = strlen(s);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    int rc = bars_parse_multi(copy, len, p, err, ERRLEN);
    free(copy);
    return rc;
}

/* Keys in any order, unknown keys beside them, and repeats: the first one counts. */
static void test_first_of_repeated_keys(void **state)
{
    (void)state;
    const char *body =
        "{\"bars\":{\"AAPL\":[{\"x\":1,\"vw\":2.5,\"n\":7,\"v\":10,\"vv\":\"?\","
        "\"c\":4.25,\"l\":1.5,\"h\":5,\"o\":3,\"\":0,\"t\":\"2024-01-02T15:00:00Z\","
        "\"vw\":99,\"v\":1.5,\"t\":\"garbage\",\"o\":\"x\"}]},\"next_page_token\":null}";
    bars_page_t p;
    char err[ERRLEN];
    assert_int_equal(parse_multi(body, &p, err), 0);
    assert_int_equal(p.nseries, 1);
    assert_int_equal(p.series[0].n, 1);
    const bar_t *b = &p.series[0].bars[0];
    assert_true(b->open == 3 && b->high == 5 && b->low == 1.5 && b->close == 4.25);
    assert_true(b->vwap == 2.5);
    assert_int_equal(b->volume, 10);
    assert_int_equal(b->trade_count, 7);
    int64_t t;
    assert_int_equal(bars_parse_time("2024-01-02T15:00:00Z", &t), 0);
    assert_int_equal(b->ts_us, t);
    bars_page_clear(&p);
}

/* A key that only looks like one of the eight is not it: "vw" missing is reported. */
static void test_near_keys_are_not_keys(void **state)
{
    (void)state;
    const char *body = "{\"bars\":{\"AAPL\":[{\"t\":\"2024-01-02T15:00:00Z\",\"o\":1,\"h\":1,"
                       "\"l\":1,\"c\":1,\"v\":1,\"n\":1,\"vwap\":1,\"w\":1,\"V\":1}]}}";
    bars_page_t p;
    char err[ERRLEN];
    assert_int_equal(parse_multi(body, &p, err), -1);
    assert_string_equal(err, "AAPL bar 0: missing \"vw\"");
}

/* Builds a body of nsym symbols × nbar bars each; caller frees. */
static char *big_body(int nsym, int nbar, bool break_last)
{
    size_t cap = (size_t)nsym * (size_t)nbar * 160 + 1024, at = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    at += (size_t)snprintf(s + at, cap - at, "{\"bars\":{");
    for (int k = 0; k < nsym; k++) {
        at += (size_t)snprintf(s + at, cap - at, "%s\"S%04dA\":[", k ? "," : "", k);
        for (int i = 0; i < nbar; i++) {
            bool bad = break_last && k == nsym - 1 && i == nbar - 1;
            at += (size_t)snprintf(s + at, cap - at,
                                   "%s{\"t\":\"2024-01-%02dT%02d:%02d:00Z\",\"o\":%d.25,\"h\":%d.5,"
                                   "\"l\":%d,\"c\":%d.75,\"v\":%d,\"n\":%d,\"vw\":%s}",
                                   i ? "," : "", 1 + i / 1440, i / 60 % 24, i % 60, k, i, k, i,
                                   k * 1000 + i, i, bad ? "\"x\"" : "1.125");
        }
        at += (size_t)snprintf(s + at, cap - at, "]");
    }
    snprintf(s + at, cap - at, "},\"next_page_token\":\"tok\"}");
    return s;
}

static void check_big(const bars_page_t *p, int nsym, int nbar)
{
    assert_int_equal(p->nseries, (size_t)nsym);
    assert_int_equal(p->total, (size_t)nsym * (size_t)nbar);
    for (int k = 0; k < nsym; k++) {
        char name[16];
        snprintf(name, sizeof name, "S%04dA", k);
        assert_string_equal(p->series[k].symbol, name);
        for (int i = 0; i < nbar; i += 97) {
            const bar_t *b = &p->series[k].bars[i];
            assert_true(b->open == k + 0.25 && b->high == i + 0.5 && b->low == k);
            assert_true(b->close == i + 0.75 && b->vwap == 1.125);
            assert_int_equal(b->volume, k * 1000 + i);
            assert_int_equal(b->trade_count, i);
        }
    }
    assert_string_equal(p->next_page_token, "tok");
}

/*
 * Page after page, a failure in between, big bodies (a 20-symbol × 2,000-bar
 * body is ~3 MB of JSON), then a small one: each parse sees only its own body.
 */
static void test_pages_one_after_another(void **state)
{
    (void)state;
    char err[ERRLEN];
    bars_page_t p;
    char *big = big_body(20, 2000, false), *bad = big_body(20, 2000, true);
    char *small = big_body(3, 5, false);
    for (int round = 0; round < 4; round++) {
        assert_int_equal(bars_parse_multi(big, strlen(big), &p, err, ERRLEN), 0);
        check_big(&p, 20, 2000);
        bars_page_clear(&p);
        assert_int_equal(bars_parse_multi(bad, strlen(bad), &p, err, ERRLEN), -1);
        assert_string_equal(err, "S0019A bar 1999: \"vw\" is not a number");
        assert_int_equal(p.nseries, 0);
        assert_int_equal(bars_parse_multi(small, strlen(small), &p, err, ERRLEN), 0);
        check_big(&p, 3, 5);
        bars_page_clear(&p);
        /* A body that is not JSON at all, and an error body, in between. */
        assert_int_equal(bars_parse_multi("{\"bars\":{", 9, &p, err, ERRLEN), -1);
        char msg[64];
        assert_true(bars_error_message("{\"message\":\"slow down\"}", 23, msg, sizeof msg));
        assert_string_equal(msg, "slow down");
    }
    free(big);
    free(bad);
    free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_of_repeated_keys),
        cmocka_unit_test(test_near_keys_are_not_keys),
        cmocka_unit_test(test_pages_one_after_another),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
