/*
 * Requests against the floor (issue #11): for claimed runs whose real bar
 * counts are known, the requests coalesce_plan makes cost at most 1.05 x
 * ceil(bars / limit) calls. Alpaca fills every page to `limit` bars across
 * the symbols of a request (sorted by symbol, then time), so a request of B
 * bars costs exactly max(1, ceil(B / limit)) calls: the model below is the
 * pagination of alpaca-bars-api.md §4, nothing more. Only coalesce_plan's
 * order and spans are used, so this also builds against the planner that
 * cut every request to one page.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coalesce.h"

#define US_PER_DAY (86400LL * 1000000LL)
#define Y2016 1451606400LL * 1000000LL /* 2016-01-01T00:00:00Z */
#define LIMIT 10000

struct workload {
    struct coalesce_key keys[2000];
    int64_t bars[2000]; /* what the server really has for each run */
    char names[2000][8];
    size_t n;
};

static void add(struct workload *w, int sym, const char *tf, int64_t start_us, int64_t days,
                int64_t bars)
{
    size_t i = w->n++;
    snprintf(w->names[i], sizeof w->names[i], "S%03dA", sym);
    w->keys[i] = (struct coalesce_key){.symbol = w->names[i],
                                       .timeframe = tf,
                                       .feed = "sip",
                                       .adjustment = "raw",
                                       .start_us = start_us,
                                       .end_us = start_us + days * US_PER_DAY};
    w->bars[i] = bars;
}

/* Plans w and checks calls <= 1.05 x floor; prints both. */
static void check_floor(const struct workload *w, const char *what)
{
    size_t *order = calloc(w->n, sizeof *order);
    struct coalesce_request *out = calloc(w->n, sizeof *out);
    assert_non_null(order);
    assert_non_null(out);
    size_t nreq = coalesce_plan(w->keys, w->n, LIMIT, 100, order, out);
    int64_t total = 0, calls = 0;
    for (size_t i = 0; i < w->n; i++)
        total += w->bars[i];
    for (size_t r = 0; r < nreq; r++) {
        int64_t b = 0;
        for (size_t j = 0; j < out[r].count; j++)
            b += w->bars[order[out[r].first + j]];
        calls += b > 0 ? (b + LIMIT - 1) / LIMIT : 1;
    }
    int64_t floor = (total + LIMIT - 1) / LIMIT;
    printf("  %s: %lld bars, %zu requests, %lld calls, floor %lld (%.3fx)\n", what,
           (long long)total, nreq, (long long)calls, (long long)floor,
           (double)calls / (double)floor);
    assert_true(calls * 100 <= floor * 105);
    free(order);
    free(out);
}

/* 40 symbols x 10 one-year d1 runs, all in flight (one claim of 400): 261 bars a year. */
static void test_floor_d1_ten_years(void **state)
{
    static struct workload w;
    w.n = 0;
    for (int y = 0; y < 10; y++)
        for (int s = 0; s < 40; s++)
            add(&w, s, "d1", Y2016 + y * 365 * US_PER_DAY, 365, 261);
    check_floor(&w, "d1 40 x 10 y");
}

/* 100 symbols x 4 one-month h1 runs; every other symbol illiquid (20 bars a month). */
static void test_floor_h1_busy_and_illiquid(void **state)
{
    static struct workload w;
    w.n = 0;
    for (int m = 0; m < 4; m++)
        for (int s = 0; s < 100; s++)
            add(&w, s, "h1", Y2016 + m * 30 * US_PER_DAY, 30, s % 2 ? 20 : 352);
    check_floor(&w, "h1 100 x 4 months, half illiquid");
}

/* 20 symbols x 5 one-week m1 runs: a busy ETF's week is 4,800 bars, an illiquid name's 150. */
static void test_floor_m1_weeks(void **state)
{
    static struct workload w;
    w.n = 0;
    for (int k = 0; k < 5; k++)
        for (int s = 0; s < 20; s++)
            add(&w, s, "m1", Y2016 + k * 7 * US_PER_DAY, 7, s < 15 ? 4800 : 150);
    check_floor(&w, "m1 20 x 5 weeks");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_floor_d1_ten_years),
        cmocka_unit_test(test_floor_h1_busy_and_illiquid),
        cmocka_unit_test(test_floor_m1_weeks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
