/*
 * Unit tests for the copyenc module: the PostgreSQL binary COPY stream.
 *
 * Expected bytes are written out by hand from the format in the PostgreSQL
 * docs ("COPY — Binary Format") rather than computed with the module's own
 * helpers, so that a wrong byte order or a wrong epoch shows up as a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "bars.h"
#include "copyenc.h"

#define HEADER_LEN 19
/* One row with a 4-byte symbol, a 4-byte timeframe, feed "sip" and adjustment "raw". */
#define ROW_LEN (2 + (4 + 4) + (4 + 4) + (4 + 3) + (4 + 3) + 8 * (4 + 8) + (4 + 1) + (4 + 8))
/* Where ts starts in a row of the sample series. */
#define TS_AT (2 + 8 + 8 + 7 + 7)

static const struct copyenc_series aapl = {"AAPL", "1Min", "sip", "raw"};
/* Fetched 90 s after the sample bar's start. */
#define FETCHED_US INT64_C(1704067290000000)

static const unsigned char expected_header[HEADER_LEN] = {
    'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0x00, /* signature */
    0,   0,   0,   0,                                           /* flags */
    0,   0,   0,   0,                                           /* header extension length */
};

/* 2024-01-01T00:00:00Z with round-number prices (exact in binary) and one that is not. */
static const bar_t sample_bar = {
    .ts_us = INT64_C(1704067200000000),
    .open = 185.25,
    .high = 186.5,
    .low = 184.75,
    .close = 186.0,
    .volume = 1234567,
    .trade_count = 42,
    .vwap = 185.6125,
};

/* sample_bar as "AAPL", "1Min", "sip", "raw", final, fetched at FETCHED_US. */
static const unsigned char expected_row[ROW_LEN] = {
    0x00, 0x0e,                                     /* 14 fields */
    0x00, 0x00, 0x00, 0x04, 'A',  'A',  'P',  'L',  /* symbol */
    0x00, 0x00, 0x00, 0x04, '1',  'M',  'i',  'n',  /* timeframe */
    0x00, 0x00, 0x00, 0x03, 's',  'i',  'p',        /* feed */
    0x00, 0x00, 0x00, 0x03, 'r',  'a',  'w',        /* adjustment */
    0x00, 0x00, 0x00, 0x08,                         /* ts: 757382400000000 µs since 2000 */
    0x00, 0x02, 0xb0, 0xd5, 0xd4, 0xe9, 0x40, 0x00, /* */
    0x00, 0x00, 0x00, 0x08,                         /* open 185.25 */
    0x40, 0x67, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, /* */
    0x00, 0x00, 0x00, 0x08,                         /* high 186.5 */
    0x40, 0x67, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, /* */
    0x00, 0x00, 0x00, 0x08,                         /* low 184.75 */
    0x40, 0x67, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, /* */
    0x00, 0x00, 0x00, 0x08,                         /* close 186.0 */
    0x40, 0x67, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, /* */
    0x00, 0x00, 0x00, 0x08,                         /* volume 1234567 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0xd6, 0x87, /* */
    0x00, 0x00, 0x00, 0x08,                         /* trade_count 42 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, /* */
    0x00, 0x00, 0x00, 0x08,                         /* vwap 185.6125 */
    0x40, 0x67, 0x33, 0x99, 0x99, 0x99, 0x99, 0x9a, /* */
    0x00, 0x00, 0x00, 0x01, 0x01,                   /* final true */
    0x00, 0x00, 0x00, 0x08,                         /* fetched_at: 757382490000000 µs since 2000 */
    0x00, 0x02, 0xb0, 0xd5, 0xda, 0x46, 0x8a, 0x80, /* */
};

static void test_header_exact(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(c.buf.len, HEADER_LEN);
    assert_memory_equal(c.buf.data, expected_header, HEADER_LEN);
    assert_int_equal(c.rows, 0);
    copyenc_free(&c);
}

static void test_one_row_exact(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(c.rows, 1);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN);
    assert_memory_equal(c.buf.data, expected_header, HEADER_LEN);
    assert_memory_equal(c.buf.data + HEADER_LEN, expected_row, ROW_LEN);
    copyenc_free(&c);
}

static void test_epoch_offset_constant(void **state)
{
    /* 2000-01-01T00:00:00Z in µs since the Unix epoch. */
    assert_true(PG_EPOCH_OFFSET_US == INT64_C(946684800000000));
}

static void test_timestamp_before_2000_is_negative(void **state)
{
    /* 1999-12-31T23:59:59Z is -1 s from the PostgreSQL epoch. */
    static const unsigned char want[12] = {0x00, 0x00, 0x00, 0x08, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xf0, 0xbd, 0xc0};
    bar_t b = sample_bar;
    b.ts_us = PG_EPOCH_OFFSET_US - 1000000;
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_add(&c, &aapl, &b, true, FETCHED_US), 0);
    /* The ts field follows the field count and the four text fields. */
    assert_memory_equal(c.buf.data + HEADER_LEN + TS_AT, want, sizeof want);
    copyenc_free(&c);
}

static void test_text_lengths_follow_strings(void **state)
{
    static const struct copyenc_series brk = {"BRK.B", "1Hour", "iex", "split,dividend"};
    static const unsigned char want[] = {0x00, 0x0e, 0x00, 0x00, 0x00, 0x05, 'B',  'R',  'K',  '.',
                                         'B',  0x00, 0x00, 0x00, 0x05, '1',  'H',  'o',  'u',  'r',
                                         0x00, 0x00, 0x00, 0x03, 'i',  'e',  'x',  0x00, 0x00, 0x00,
                                         0x0e, 's',  'p',  'l',  'i',  't',  ',',  'd',  'i',  'v',
                                         'i',  'd',  'e',  'n',  'd',  0x00, 0x00, 0x00, 0x08};
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_add(&c, &brk, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN + 13);
    assert_memory_equal(c.buf.data + HEADER_LEN, want, sizeof want);
    copyenc_free(&c);
}

static void test_trailer_after_finish(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(copyenc_finish(&c), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN + 2);
    assert_memory_equal(c.buf.data + HEADER_LEN, expected_row, ROW_LEN);
    assert_int_equal((unsigned char)c.buf.data[HEADER_LEN + ROW_LEN], 0xff);
    assert_int_equal((unsigned char)c.buf.data[HEADER_LEN + ROW_LEN + 1], 0xff);
    copyenc_free(&c);
}

static void test_finish_with_no_rows(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_finish(&c), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + 2);
    assert_memory_equal(c.buf.data, expected_header, HEADER_LEN);
    assert_memory_equal(c.buf.data + HEADER_LEN, "\xff\xff", 2);
    copyenc_free(&c);
}

static void test_rows_counted(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1 << 20);
    for (int i = 0; i < 3; i++) {
        bar_t b = sample_bar;
        b.ts_us += (int64_t)i * 60000000;
        assert_int_equal(copyenc_add(&c, &aapl, &b, true, FETCHED_US), 0);
        assert_int_equal(c.rows, (size_t)i + 1);
    }
    assert_int_equal(c.buf.len, HEADER_LEN + 3 * ROW_LEN);
    /* The first row is untouched by the later ones. */
    assert_memory_equal(c.buf.data + HEADER_LEN, expected_row, ROW_LEN);
    /* The third row starts where it should, with its own timestamp (+120 s). */
    static const unsigned char row3_start[] = {
        0x00, 0x0e, 0x00, 0x00, 0x00, 0x04, 'A',  'A',  'P',  'L',  0x00, 0x00, 0x00, 0x04, '1',
        'M',  'i',  'n',  0x00, 0x00, 0x00, 0x03, 's',  'i',  'p',  0x00, 0x00, 0x00, 0x03, 'r',
        'a',  'w',  0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0xb0, 0xd5, 0xdc, 0x10, 0x4e, 0x00};
    assert_memory_equal(c.buf.data + HEADER_LEN + 2 * ROW_LEN, row3_start, sizeof row3_start);
    copyenc_free(&c);
}

static void test_reset_returns_to_header(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 4096);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(copyenc_finish(&c), 0);
    copyenc_reset(&c);
    assert_int_equal(c.rows, 0);
    assert_int_equal(c.buf.len, HEADER_LEN);
    assert_memory_equal(c.buf.data, expected_header, HEADER_LEN);
    /* The stream is usable again and encodes the same bytes. */
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(c.rows, 1);
    assert_memory_equal(c.buf.data + HEADER_LEN, expected_row, ROW_LEN);
    copyenc_free(&c);
}

static void test_small_cap_rejects_row_whole(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 100);
    assert_int_equal(c.buf.len, HEADER_LEN);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), -1);
    assert_int_equal(c.buf.len, HEADER_LEN);
    assert_int_equal(c.rows, 0);
    assert_memory_equal(c.buf.data, expected_header, HEADER_LEN);
    assert_int_equal(copyenc_finish(&c), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + 2);
    assert_memory_equal(c.buf.data + HEADER_LEN, "\xff\xff", 2);
    copyenc_free(&c);
}

static void test_cap_keeps_room_for_trailer(void **state)
{
    /* Exactly enough for header, one row and trailer: the row fits, and so does the trailer. */
    copyenc_t c;
    copyenc_init(&c, HEADER_LEN + ROW_LEN + 2);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), 0);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), -1);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN);
    assert_int_equal(c.rows, 1);
    assert_int_equal(copyenc_finish(&c), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN + 2);
    copyenc_free(&c);

    /* One byte less: the row would leave no room for the trailer, so it is refused. */
    copyenc_init(&c, HEADER_LEN + ROW_LEN + 1);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, true, FETCHED_US), -1);
    assert_int_equal(c.buf.len, HEADER_LEN);
    assert_int_equal(c.rows, 0);
    assert_int_equal(copyenc_finish(&c), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + 2);
    copyenc_free(&c);
}

static void test_not_final_and_fetched_at(void **state)
{
    /* final false is one zero byte; fetched_at is the last field, a timestamptz. */
    static const unsigned char want[] = {0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08,
                                         0x00, 0x02, 0xb0, 0xd5, 0xd4, 0xe9, 0x40, 0x00};
    copyenc_t c;
    copyenc_init(&c, 1024);
    assert_int_equal(copyenc_add(&c, &aapl, &sample_bar, false, sample_bar.ts_us), 0);
    assert_int_equal(c.buf.len, HEADER_LEN + ROW_LEN);
    assert_memory_equal(c.buf.data + HEADER_LEN + ROW_LEN - sizeof want, want, sizeof want);
    copyenc_free(&c);
}

static void test_free_twice_is_safe(void **state)
{
    copyenc_t c;
    copyenc_init(&c, 1024);
    copyenc_free(&c);
    assert_null(c.buf.data);
    assert_int_equal(c.rows, 0);
    copyenc_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_exact),
        cmocka_unit_test(test_one_row_exact),
        cmocka_unit_test(test_epoch_offset_constant),
        cmocka_unit_test(test_timestamp_before_2000_is_negative),
        cmocka_unit_test(test_text_lengths_follow_strings),
        cmocka_unit_test(test_trailer_after_finish),
        cmocka_unit_test(test_finish_with_no_rows),
        cmocka_unit_test(test_rows_counted),
        cmocka_unit_test(test_reset_returns_to_header),
        cmocka_unit_test(test_small_cap_rejects_row_whole),
        cmocka_unit_test(test_cap_keeps_room_for_trailer),
        cmocka_unit_test(test_not_final_and_fetched_at),
        cmocka_unit_test(test_free_twice_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
