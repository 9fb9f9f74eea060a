/*
 * Unit tests for the timeframe module: every code maps to exactly one Alpaca
 * name, unknown codes are refused, and the nominal
 * lengths are the ones the range splitter relies on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "timeframe.h"

struct mapping {
    const char *code;
    const char *alpaca;
    int64_t seconds;
};

/* Written out independently of src/timeframe.c so that a typo there fails here. */
static const struct mapping expected[] = {
    {"m1", "1Min", 60},     {"m5", "5Min", 300},     {"m15", "15Min", 900},
    {"m30", "30Min", 1800}, {"h1", "1Hour", 3600},   {"h4", "4Hour", 14400},
    {"d1", "1Day", 86400},  {"w1", "1Week", 604800}, {"mn1", "1Month", 2678400},
};

#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))

static void test_to_alpaca(void **state)
{
    for (size_t i = 0; i < NEXPECTED; i++) {
        const char *got = tf_to_alpaca(expected[i].code);

        assert_non_null(got);
        assert_string_equal(got, expected[i].alpaca);
    }
}

static void test_seconds(void **state)
{
    for (size_t i = 0; i < NEXPECTED; i++)
        assert_int_equal(tf_seconds(expected[i].code), expected[i].seconds);
    assert_int_equal(tf_seconds("mn1"), 31 * 86400);
}

static void test_unknown(void **state)
{
    static const char *const bad_codes[] = {"", "m2", "M1", "h1 ", "1Hour", "mn", "mn12", "d"};

    for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
        assert_null(tf_to_alpaca(bad_codes[i]));
        assert_int_equal(tf_seconds(bad_codes[i]), 0);
    }
    assert_null(tf_to_alpaca(NULL));
    assert_int_equal(tf_seconds(NULL), 0);
}

static void test_codes_list(void **state)
{
    char buf[128] = "";
    size_t off = 0;

    assert_string_equal(tf_codes(), "m1 m5 m15 m30 h1 h4 d1 w1 mn1");
    /* The list names every code of the table, in order, and nothing else. */
    for (size_t i = 0; i < NEXPECTED; i++) {
        size_t n = strlen(expected[i].code);

        if (i > 0)
            buf[off++] = ' ';
        memcpy(buf + off, expected[i].code, n + 1);
        off += n;
    }
    assert_string_equal(tf_codes(), buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_alpaca),
        cmocka_unit_test(test_seconds),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_codes_list),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
