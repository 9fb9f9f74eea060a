/*
 * Unit tests for jsonscan, the reader of bars pages (issue #11): numbers read
 * exactly as strtod reads them (the fast path and the fallback, 400,000
 * random literals besides the edge cases), the RFC 8259 grammar and nothing
 * more, strings decoded as cJSON decodes them, and walks over members and
 * elements.
 *
 * Texts are copied into heap buffers of exactly their length, with no NUL
 * after them, as the HTTP layer hands bodies over: a read past the end is an
 * AddressSanitizer report in the sanitizer build.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonscan.h"

/* text in a buffer of exactly its length. */
static char *exact(const char *text, size_t len)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    return copy;
}

static bool check(const char *text)
{
    char *copy = exact(text, strlen(text));
    bool ok = json_check(copy, strlen(text), NULL);
    free(copy);
    return ok;
}

/* The number literal lit, read as the one element of an array. */
static double number_of(const char *lit)
{
    char text[128];
    const char *v;
    json_iter_t it;
    int n = snprintf(text, sizeof text, "[%s]", lit);
    char *copy = exact(text, (size_t)n);

    assert_true(json_check(copy, (size_t)n, &v));
    json_iter_begin(&it, v);
    assert_true(json_iter_elem(&it, &v));
    assert_int_equal(json_type(v), JSON_NUMBER);
    double d = json_number(v);
    assert_false(json_iter_elem(&it, &v));
    free(copy);
    return d;
}

/* Same bits as strtod (so -0.0 and 0.0 differ, and infinities compare). */
static void assert_as_strtod(const char *lit)
{
    double want = strtod(lit, NULL), got = number_of(lit);
    if (memcmp(&want, &got, sizeof want) != 0)
        fail_msg("%s: strtod %.17g, json_number %.17g", lit, want, got);
}

static void test_numbers_edges(void **state)
{
    (void)state;
    static const char *lits[] = {"0",
                                 "-0",
                                 "0.0",
                                 "-0.0",
                                 "0e5",
                                 "-0E-5",
                                 "1",
                                 "-1",
                                 "187.4312",
                                 "0.0001",
                                 "1e22",
                                 "1e23",
                                 "9007199254740992",
                                 "9007199254740993",
                                 "9007199254740993.0",
                                 "1e-22",
                                 "1e-23",
                                 "123456789012345678",
                                 "1234567890123456789",
                                 "12345678901234567890",
                                 "0.1234567890123456789",
                                 "0.30000000000000004",
                                 "2.2250738585072014e-308",
                                 "4.9e-324",
                                 "2e-324",
                                 "1.7976931348623157e308",
                                 "1.7976931348623159e308",
                                 "1e999",
                                 "-1e999",
                                 "1e-999",
                                 "123.456e-5",
                                 "1E+2",
                                 "5e-1",
                                 "0.000000000000000000000000001",
                                 "100000000000000000000000",
                                 "3.14159265358979323846264338327950288",
                                 "9999999999999999999",
                                 "999999999999999.9999",
                                 "4503599627370497.5",
                                 "8.98846567431158e307",
                                 "1.00000000000000011102230246251565404236316680908203125",
                                 "1.00000000000000011102230246251565404236316680908203124",
                                 "1.00000000000000011102230246251565404236316680908203126"};
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++)
        assert_as_strtod(lits[i]);
    assert_true(isinf(number_of("1e999")));
}

/* A small deterministic generator, so a failure names a literal that repeats. */
static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Random literals in JSON's grammar: prices, counts, long mantissas, exponents near the edges. */
static void test_numbers_random(void **state)
{
    (void)state;
    char lit[JSON_MAX_NUMBER + 1];
    for (int i = 0; i < 400000; i++) {
        size_t n = 0;
        uint64_t r = next_rand();
        if (r & 1)
            lit[n++] = '-';
        int idig = 1 + (int)(next_rand() % (r & 2 ? 20 : 7));
        lit[n++] = (char)('1' + next_rand() % 9);
        if (r & 4 && idig == 1)
            lit[0 + (r & 1)] = '0';
        else
            for (int d = 1; d < idig; d++)
                lit[n++] = (char)('0' + next_rand() % 10);
        if (r & 8) {
            int fdig = 1 + (int)(next_rand() % (r & 16 ? 25 : 6));
            lit[n++] = '.';
            for (int d = 0; d < fdig; d++)
                lit[n++] = (char)('0' + next_rand() % 10);
        }
        if (r & 32) {
            lit[n++] = r & 64 ? 'e' : 'E';
            if (r & 128)
                lit[n++] = r & 256 ? '-' : '+';
            n += (size_t)snprintf(lit + n, sizeof lit - n, "%d", (int)(next_rand() % 330));
        }
        lit[n] = '\0';
        assert_as_strtod(lit);
    }
}

static void test_grammar(void **state)
{
    (void)state;
    static const char *good[] = {
        "{}",
        "[]",
        " {\"a\" : [1, -2.5e3, {\"b\":null}, true, false, \"x\"]} \r\n\t",
        "0",
        "\"\"",
        "[[[]]]",
        "{\"\":{}}",
        "[\"\\u00e9\\ud83d\\ude00\\n\\/\"]",
        "-0",
        "1E+9",
        "[0.5e-1]",
        "\"\xff\xfe\"", /* bytes that are not UTF-8 pass, as in cJSON */
        "123456789012345678901234567890123456789012345678901234567890123", /* 63 bytes */
    };
    static const char *bad[] = {
        "",
        " ",
        "{",
        "}",
        "[",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"}",
        "{\"a\" 1}",
        "{1:2}",
        "[1 2]",
        "{} {}",
        "{}x",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "1e+",
        "0x10",
        "Infinity",
        "NaN",
        "-inf",
        "tru",
        "nul",
        "True",
        "\"abc",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udc00\\ud800\"",
        "\"\\ud800\\u0041\"",
        "\"\\ud800\\\"\"",
        "\"a\tb\"",
        "\"a\nb\"",
        "[1]]",
        "{\"a\":1}}",
        "[}",
        "{]",
        "1234567890123456789012345678901234567890123456789012345678901234", /* 64 bytes */
        "\xEF\xBB",
        "\xEF\xBB\xBF{}",
        "\v{}",
        "{}\f",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!check(good[i]))
            fail_msg("refused: %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (check(bad[i]))
            fail_msg("accepted: %s", bad[i]);
    assert_false(json_check(NULL, 0, NULL));
}

/* JSON_MAX_DEPTH brackets deep is read; one more is refused. */
static void test_depth(void **state)
{
    (void)state;
    char text[2 * (JSON_MAX_DEPTH + 1) + 1];
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        memset(text, '[', (size_t)depth);
        memset(text + depth, ']', (size_t)depth);
        text[2 * depth] = '\0';
        assert_int_equal(check(text), depth == JSON_MAX_DEPTH);
    }
}

/* The value of member key of the object text (which must hold it), checked first. */
static const char *member(const char *obj, const char *key)
{
    json_iter_t it;
    json_str_t k;
    const char *v;
    json_iter_begin(&it, obj);
    while (json_iter_member(&it, &k, &v))
        if (json_str_eq(&k, key))
            return v;
    return NULL;
}

static void test_strings_and_walks(void **state)
{
    (void)state;
    const char *text = "{ \"plain\" : \"abc\" , \"esc\":\"a\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\b"
                       "\\f\\r\\t\", \"k\\u0065y\":[ 1 ,{\"x\":[\"]\"]}, \"}\" ,null ], "
                       "\"long\":\""
                       "0123456789012345678901234567890123456789012345678901234567"
                       "890123456789012345678901234567890123456789012345678901234567890123456789"
                       "012345678901234567890123456789012345678901234567890123456789012345678901"
                       "234567890123456789012345678901234567890123456789\\u0041\"}";
    size_t len = strlen(text);
    char *copy = exact(text, len);
    const char *root, *v;
    assert_true(json_check(copy, len, &root));
    assert_int_equal(json_type(root), JSON_OBJECT);

    v = member(root, "plain");
    assert_non_null(v);
    json_str_t s = json_string(v);
    assert_false(s.escaped);
    assert_int_equal(s.len, 3);
    assert_true(json_str_eq(&s, "abc"));
    assert_false(json_str_eq(&s, "ab"));

    v = member(root, "esc");
    assert_non_null(v);
    s = json_string(v);
    assert_true(s.escaped);
    char *d = json_str_dup(&s);
    assert_non_null(d);
    assert_string_equal(d, "a\xc3\xa9\xf0\x9f\x98\x80\n\"\\/\b\f\r\t");
    char out[64];
    assert_true(s.len < sizeof out);
    assert_int_equal(json_str_decode(&s, out), strlen(d));
    assert_string_equal(out, d);
    assert_true(json_str_eq(&s, d));
    free(d);

    /* A key spelled with an escape is the key it decodes to. */
    v = member(root, "key");
    assert_non_null(v);
    assert_int_equal(json_type(v), JSON_ARRAY);
    json_iter_t it;
    const char *e;
    json_type_t want[] = {JSON_NUMBER, JSON_OBJECT, JSON_STRING, JSON_NULL};
    size_t n = 0;
    json_iter_begin(&it, v);
    while (json_iter_elem(&it, &e)) {
        assert_true(n < 4);
        assert_int_equal(json_type(e), want[n]);
        n++;
    }
    assert_int_equal(n, 4);

    /* Past 256 bytes, json_str_eq decodes on the heap. */
    v = member(root, "long");
    assert_non_null(v);
    s = json_string(v);
    d = json_str_dup(&s);
    assert_non_null(d);
    size_t dl = strlen(d);
    assert_true(s.len >= 256);
    assert_int_equal(dl, s.len - 5);
    assert_int_equal(d[dl - 1], 'A');
    assert_true(json_str_eq(&s, d));
    d[dl - 1] = 'B';
    assert_false(json_str_eq(&s, d));
    free(d);

    assert_null(member(root, "missing"));
    free(copy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_edges),     cmocka_unit_test(test_numbers_random),
        cmocka_unit_test(test_grammar),           cmocka_unit_test(test_depth),
        cmocka_unit_test(test_strings_and_walks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
