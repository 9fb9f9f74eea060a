/*
 * Fuzz target: bars_parse_single, the parser of single-symbol pages
 * (GET /v2/stocks/{symbol}/bars).
 *
 * The requested symbol is always "AAPL", as in the seeds, so mutations of
 * the body's "symbol" exercise the mismatch check and the rest exercises the
 * bars. On success the page holds at most one series, named "AAPL", and it
 * must agree with the body as cJSON reads it (bars_check.h); on failure the
 * page is empty and the message fits its buffer.
 */
#include "bars.h"
#include "bars_check.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return bars_check_one(data, size, "AAPL");
}
