/*
 * Unit tests for coalesce: which runs share a multi-symbol request, how many
 * symbols a request carries for each timeframe, and the even split.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "coalesce.h"

#define US_PER_DAY (86400LL * 1000000LL)
#define Y2024 1704067200LL * 1000000LL /* 2024-01-01T00:00:00Z */

static struct coalesce_key key(const char *sym, const char *tf, int64_t days)
{
    return (struct coalesce_key){.symbol = sym,
                                 .timeframe = tf,
                                 .feed = "sip",
                                 .adjustment = "raw",
                                 .start_us = Y2024,
                                 .end_us = Y2024 + days * US_PER_DAY};
}

/* keys[from..to) of symbols S<from> … S<to - 1> (names[i] holds each) over one span. */
static void named_keys(struct coalesce_key *keys, char (*names)[8], int from, int to,
                       const char *tf, int64_t days)
{
    for (int i = from; i < to; i++) {
        snprintf(names[i], sizeof names[i], "S%03d", i % 1000); /* i < 1000 here */
        keys[i] = key(names[i], tf, days);
    }
}

/* A year of d1 is ~252 bars: 10,000 × 0.9 / 252 = 35 symbols a request. */
static void test_symbols_per_request_d1_year(void **state)
{
    struct coalesce_key k = key("A", "d1", 365);
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 35);
}

/* A month of h1 (sip, 16 h sessions): 30 × 252/365 × 16 = 331 bars → 27 symbols. */
static void test_symbols_per_request_h1_month(void **state)
{
    struct coalesce_key k = key("A", "h1", 30);
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 27);
    k.feed = "iex"; /* 9 h sessions: 186 bars → 48 */
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 48);
}

/* More bars per symbol than a page holds: one symbol a request, never zero. */
static void test_symbols_per_request_at_least_one(void **state)
{
    struct coalesce_key k = key("A", "m1", 365);
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 1);
    k.timeframe = "bogus";
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 1);
}

/* Capped by max_symbols (BACKFILLD_BATCH_SYMBOLS); weeks count one bar each, trading or not. */
static void test_symbols_per_request_capped(void **state)
{
    struct coalesce_key k = key("A", "w1", 365);
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 100), 100);
    assert_int_equal(coalesce_symbols_per_request(&k, 10000, 7), 7);
    assert_int_equal(coalesce_symbols_per_request(&k, 100, 1000), 1);   /* 90 / 52.1 */
    assert_int_equal(coalesce_symbols_per_request(&k, 1000, 1000), 17); /* 900 / 52.1 */
}

/* 50 symbols at most 20 a request go as 16 + 17 + 17, not 20 + 20 + 10. */
static void test_plan_even_split(void **state)
{
    struct coalesce_key keys[50];
    char names[50][8];
    for (int i = 0; i < 50; i++) {
        snprintf(names[i], sizeof names[i], "S%02d", 49 - i); /* reverse order: plan sorts */
        keys[i] = key(names[i], "d1", 335);
    }
    size_t order[50];
    struct coalesce_request out[50];
    size_t n = coalesce_plan(keys, 50, 10000, 20, order, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].first, 0);
    assert_int_equal(out[0].count, 16);
    assert_int_equal(out[1].first, 16);
    assert_int_equal(out[1].count, 17);
    assert_int_equal(out[2].first, 33);
    assert_int_equal(out[2].count, 17);
    for (size_t i = 1; i < 50; i++)
        assert_true(strcmp(keys[order[i - 1]].symbol, keys[order[i]].symbol) < 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].nsymbols, out[i].count);
        assert_int_equal(out[i].start_us, keys[0].start_us);
        assert_int_equal(out[i].end_us, keys[0].end_us);
    }
}

/* Many pages' worth of symbols: cut into requests of about
 * COALESCE_PAGES_PER_REQUEST pages, not one page each. 300 symbols x a week
 * of m1 is ~4,638 bars each, ~139 pages: 3 requests of 100 symbols. */
static void test_plan_cut_by_pages(void **state)
{
    static struct coalesce_key keys[300];
    static char names[300][8];
    named_keys(keys, names, 0, 300, "m1", 7);
    static size_t order[300];
    static struct coalesce_request out[300];
    size_t n = coalesce_plan(keys, 300, 10000, 1000, order, out);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].count, 100);
}

/* A symbol's runs with adjacent ranges become one span; symbols with the
 * same span share a request over it; a gap or another span goes apart. */
static void test_plan_spans(void **state)
{
    struct coalesce_key keys[7] = {key("MSFT", "d1", 365), key("AAPL", "d1", 365),
                                   key("AAPL", "d1", 365), key("MSFT", "d1", 365),
                                   key("NVDA", "d1", 365), key("NVDA", "d1", 365),
                                   key("AAPL", "d1", 365)};
    int64_t year = 365 * US_PER_DAY;
    keys[2].start_us += year; /* AAPL: 2024, 2025 → one span of two years */
    keys[2].end_us += year;
    keys[3].start_us += year; /* MSFT: the same */
    keys[3].end_us += year;
    keys[5].start_us += 2 * year; /* NVDA: 2024 and 2026, a gap: two spans of one year */
    keys[5].end_us += 2 * year;
    keys[6].feed = "iex"; /* another feed: apart */
    size_t order[7];
    struct coalesce_request out[7];
    size_t n = coalesce_plan(keys, 7, 10000, 100, order, out);
    assert_int_equal(n, 4);
    int two_year = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].end_us - out[i].start_us == 2 * year) {
            two_year++;
            assert_int_equal(out[i].count, 4);
            assert_int_equal(out[i].nsymbols, 2);
            const char *want[4] = {"AAPL", "AAPL", "MSFT", "MSFT"};
            for (size_t j = 0; j < 4; j++)
                assert_string_equal(keys[order[out[i].first + j]].symbol, want[j]);
            assert_true(keys[order[out[i].first]].start_us <
                        keys[order[out[i].first + 1]].start_us);
        } else {
            assert_int_equal(out[i].end_us - out[i].start_us, year);
            assert_int_equal(out[i].count, 1);
        }
    }
    assert_int_equal(two_year, 1);
}

/* One symbol's 520 adjacent weeks of m1 (10 years, ~241 pages): spans of up to ~50
 * pages each, several requests side by side, each run in exactly one. */
static void test_plan_deep_history_cut_into_spans(void **state)
{
    static struct coalesce_key keys[520];
    for (int i = 0; i < 520; i++) {
        keys[i] = key("AAPL", "m1", 7);
        keys[i].start_us += (int64_t)i * 7 * US_PER_DAY;
        keys[i].end_us += (int64_t)i * 7 * US_PER_DAY;
    }
    static size_t order[520];
    static struct coalesce_request out[520];
    size_t n = coalesce_plan(keys, 520, 10000, 100, order, out);
    assert_int_equal(n, 5); /* 520 weeks x ~4,640 bars ≈ 241 pages, ≤ 50 a request */
    size_t runs = 0;
    for (size_t i = 0; i < n; i++) {
        struct coalesce_key span = keys[order[out[i].first]];
        span.start_us = out[i].start_us;
        span.end_us = out[i].end_us;
        assert_true(coalesce_estimate_bars(&span) / 10000 <= COALESCE_PAGES_PER_REQUEST);
        assert_int_equal(out[i].nsymbols, 1);
        for (size_t j = 0; j < out[i].count; j++) {
            const struct coalesce_key *k = &keys[order[out[i].first + j]];
            assert_true(k->start_us >= out[i].start_us && k->end_us <= out[i].end_us);
        }
        runs += out[i].count;
    }
    assert_int_equal(runs, 520);
}

/* Wider: 51 symbols of one span (a year of h1, ~21 pages: one request)
 * become 8 requests of 6-7 symbols when 8 are asked for. Asked for 1, it
 * is the plain plan; three symbols of a year (~1.2 pages) are not cut
 * below a page whatever is asked. */
static void test_plan_wide(void **state)
{
    static struct coalesce_key keys[51];
    static char names[51][8];
    named_keys(keys, names, 0, 51, "h1", 366);
    static size_t order[51];
    static struct coalesce_request out[51];
    assert_int_equal(coalesce_plan_wide(keys, 51, 10000, 100, 1, order, out), 1);
    size_t n = coalesce_plan_wide(keys, 51, 10000, 100, 8, order, out);
    assert_int_equal(n, 8);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(out[i].nsymbols == 6 || out[i].nsymbols == 7);
        total += out[i].count;
    }
    assert_int_equal(total, 51);
    assert_int_equal(coalesce_plan_wide(keys, 3, 10000, 100, 64, order, out), 1);
    assert_int_equal(coalesce_plan_wide(keys, 10, 10000, 100, 64, order, out), 4); /* ~4 pages */
}

/* Wider splits the longest requests first: of a 50-symbol year and a
 * 10-symbol month, the year is split. */
static void test_plan_wide_splits_longest(void **state)
{
    static struct coalesce_key keys[60];
    static char names[60][8];
    named_keys(keys, names, 0, 50, "h1", 366);
    named_keys(keys, names, 50, 60, "h1", 31);
    static size_t order[60];
    static struct coalesce_request out[60];
    size_t n = coalesce_plan_wide(keys, 60, 10000, 100, 4, order, out);
    assert_int_equal(n, 4);
    int month = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i].end_us - out[i].start_us == 31 * US_PER_DAY) {
            month++;
            assert_int_equal(out[i].nsymbols, 10);
        }
    assert_int_equal(month, 1);
}

/* The same symbol twice over the same span (two definitions): never in one request. */
static void test_plan_duplicate_symbol(void **state)
{
    struct coalesce_key keys[3] = {key("AAPL", "d1", 365), key("AAPL", "d1", 365),
                                   key("MSFT", "d1", 365)};
    size_t order[3];
    struct coalesce_request out[3];
    size_t n = coalesce_plan(keys, 3, 10000, 100, order, out);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 1; j < out[i].count; j++)
            assert_string_not_equal(keys[order[out[i].first + j - 1]].symbol,
                                    keys[order[out[i].first + j]].symbol);
}

/* Runs differing in anything but the symbol never share a request. */
static void test_plan_keys_apart(void **state)
{
    struct coalesce_key keys[6] = {key("AAPL", "d1", 365), key("MSFT", "d1", 365),
                                   key("AAPL", "h1", 30),  key("MSFT", "d1", 365),
                                   key("NVDA", "d1", 365), key("TSLA", "d1", 365)};
    keys[3].feed = "iex";
    keys[4].adjustment = "split";
    keys[5].start_us += US_PER_DAY;
    size_t order[6];
    struct coalesce_request out[6];
    size_t n = coalesce_plan(keys, 6, 10000, 100, order, out);
    assert_int_equal(n, 5);
    size_t together = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].count == 2) {
            together++;
            assert_string_equal(keys[order[out[i].first]].symbol, "AAPL");
            assert_string_equal(keys[order[out[i].first + 1]].symbol, "MSFT");
            assert_string_equal(keys[order[out[i].first]].timeframe, "d1");
            assert_string_equal(keys[order[out[i].first + 1]].feed, "sip");
        } else {
            assert_int_equal(out[i].count, 1);
        }
    }
    assert_int_equal(together, 1);
}

/* Per-symbol mode: one request a run, in the order given. */
static void test_plan_per_symbol_mode(void **state)
{
    struct coalesce_key keys[3] = {key("TSLA", "d1", 365), key("AAPL", "d1", 365),
                                   key("MSFT", "d1", 365)};
    size_t order[3];
    struct coalesce_request out[3];
    assert_int_equal(coalesce_plan(keys, 3, 10000, 1, order, out), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(order[i], i);
        assert_int_equal(out[i].first, i);
        assert_int_equal(out[i].count, 1);
    }
}

static void test_plan_empty(void **state)
{
    size_t order[1];
    struct coalesce_request out[1];
    assert_int_equal(coalesce_plan(NULL, 0, 10000, 100, order, out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symbols_per_request_d1_year),
        cmocka_unit_test(test_symbols_per_request_h1_month),
        cmocka_unit_test(test_symbols_per_request_at_least_one),
        cmocka_unit_test(test_symbols_per_request_capped),
        cmocka_unit_test(test_plan_even_split),
        cmocka_unit_test(test_plan_cut_by_pages),
        cmocka_unit_test(test_plan_spans),
        cmocka_unit_test(test_plan_deep_history_cut_into_spans),
        cmocka_unit_test(test_plan_wide),
        cmocka_unit_test(test_plan_wide_splits_longest),
        cmocka_unit_test(test_plan_duplicate_symbol),
        cmocka_unit_test(test_plan_keys_apart),
        cmocka_unit_test(test_plan_per_symbol_mode),
        cmocka_unit_test(test_plan_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
