/*
 * Fuzz target: bars_parse_multi, the parser of every multi-symbol page
 * (GET /v2/stocks/bars) the daemon fetches.
 *
 * The body comes from the network, so anything goes: truncated pages, wrong
 * types, huge numbers, deep nesting. Besides not crashing, the parser must
 * keep its all-or-nothing contract, which bars_check.h spells out, and a
 * successful result must agree with the body as cJSON itself reads it.
 * The error buffer size cycles through three sizes, one of them a single
 * byte, so that truncated messages are exercised too.
 */
#include "bars.h"
#include "bars_check.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return bars_check_one(data, size, NULL);
}
