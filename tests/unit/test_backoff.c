/*
 * Unit tests for the backoff module: capped exponential delays with jitter.
 *
 * The bounds are checked against hand-computed numbers (base × 2^n, ±25 %,
 * capped), and every draw is checked against backoff_bounds(), so both the
 * documented formula and the function that reports it are pinned down.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "backoff.h"

#define DRAWS 1000

/* Draws DRAWS delays for every n in 0..20 and checks each against the bounds and the cap. */
static void check_all_within_bounds(int64_t base, int64_t cap, uint64_t seed)
{
    uint64_t rng = seed;
    for (unsigned n = 0; n <= 20; n++) {
        int64_t lo, hi;
        backoff_bounds(n, base, cap, &lo, &hi);
        assert_true(lo <= hi);
        assert_true(hi <= cap);
        for (int i = 0; i < DRAWS; i++) {
            int64_t v = backoff_ms(n, base, cap, &rng);
            if (v < lo || v > hi || v > cap)
                fail_msg("n=%u base=%lld cap=%lld: %lld outside [%lld, %lld]", n, (long long)base,
                         (long long)cap, (long long)v, (long long)lo, (long long)hi);
        }
    }
}

static void test_draws_within_bounds(void **state)
{
    check_all_within_bounds(1000, 60000, 1);
    check_all_within_bounds(250, 30000, 42);            /* BACKFILLD_RETRY_* defaults */
    check_all_within_bounds(5000, 600000, 7);           /* BACKFILLD_RUN_RETRY_* defaults */
    check_all_within_bounds(1, 3600000, UINT64_MAX);    /* widest config range */
    check_all_within_bounds(1000, 1000, 0xdeadbeefULL); /* cap == base */
    check_all_within_bounds(5000, 1000, 0x12345678ULL); /* cap below base */
}

static void test_nominal_doubles(void **state)
{
    static const struct {
        unsigned n;
        int64_t lo, hi;
    } want[] = {
        {0, 750, 1250}, {1, 1500, 2500}, {2, 3000, 5000}, {3, 6000, 10000}, {5, 24000, 40000},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int64_t lo = -1, hi = -1;
        backoff_bounds(want[i].n, 1000, 1000000, &lo, &hi);
        assert_int_equal(lo, want[i].lo);
        assert_int_equal(hi, want[i].hi);
    }
}

static void test_cap_respected(void **state)
{
    int64_t lo = -1, hi = -1;
    backoff_bounds(10, 1000, 5000, &lo, &hi);
    assert_int_equal(lo, 3750);
    assert_int_equal(hi, 5000);

    /* n=2 is 4000 nominal: the +25 % side (5000) just reaches the cap. */
    backoff_bounds(2, 1000, 5000, &lo, &hi);
    assert_int_equal(lo, 3000);
    assert_int_equal(hi, 5000);

    uint64_t rng = 99;
    int at_cap = 0;
    for (int i = 0; i < DRAWS; i++) {
        int64_t v = backoff_ms(10, 1000, 5000, &rng);
        assert_in_range(v, 3750, 5000);
        if (v == 5000)
            at_cap++;
    }
    /* Half of the jitter range lies above the cap and is clipped to it. */
    assert_in_range(at_cap, 350, 650);
}

static void test_cap_below_base(void **state)
{
    int64_t lo = -1, hi = -1;
    backoff_bounds(0, 5000, 1000, &lo, &hi);
    assert_int_equal(lo, 750);
    assert_int_equal(hi, 1000);
}

static void test_huge_n_terminates_and_caps(void **state)
{
    uint64_t rng = 5;
    int64_t lo = -1, hi = -1;
    backoff_bounds(UINT32_MAX, 250, 30000, &lo, &hi);
    assert_int_equal(lo, 22500);
    assert_int_equal(hi, 30000);
    for (int i = 0; i < DRAWS; i++)
        assert_in_range(backoff_ms(UINT32_MAX, 250, 30000, &rng), 22500, 30000);
}

static void test_jitter_varies(void **state)
{
    uint64_t rng = 12345;
    int64_t lo, hi;
    backoff_bounds(3, 1000, 1000000, &lo, &hi); /* [6000, 10000] */
    int64_t min = INT64_MAX, max = INT64_MIN;
    double sum = 0;
    for (int i = 0; i < DRAWS; i++) {
        int64_t v = backoff_ms(3, 1000, 1000000, &rng);
        min = v < min ? v : min;
        max = v > max ? v : max;
        sum += (double)v;
    }
    assert_true(min < max);
    /* Uniform jitter: 1000 draws reach into both ends of the range and average near nominal. */
    assert_in_range(min, lo, lo + 400);
    assert_in_range(max, hi - 400, hi);
    assert_in_range((int64_t)(sum / DRAWS), 7800, 8200);
}

static void test_same_seed_same_sequence(void **state)
{
    uint64_t a = 777, b = 777, c = 778;
    int64_t sa[64], sc[64];
    int differ = 0;
    for (int i = 0; i < 64; i++) {
        sa[i] = backoff_ms((unsigned)(i % 8), 250, 30000, &a);
        assert_int_equal(backoff_ms((unsigned)(i % 8), 250, 30000, &b), sa[i]);
        sc[i] = backoff_ms((unsigned)(i % 8), 250, 30000, &c);
        differ += sa[i] != sc[i];
    }
    assert_int_equal(a, b);
    assert_true(differ > 32);
}

static void test_rng_state_advances(void **state)
{
    uint64_t rng = 1;
    uint64_t before = rng;
    int64_t first = backoff_ms(4, 1000, 1000000, &rng);
    assert_true(rng != before);
    int same = 0;
    for (int i = 0; i < 16; i++)
        same += backoff_ms(4, 1000, 1000000, &rng) == first;
    assert_true(same < 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draws_within_bounds),
        cmocka_unit_test(test_nominal_doubles),
        cmocka_unit_test(test_cap_respected),
        cmocka_unit_test(test_cap_below_base),
        cmocka_unit_test(test_huge_n_terminates_and_caps),
        cmocka_unit_test(test_jitter_varies),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_rng_state_advances),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
