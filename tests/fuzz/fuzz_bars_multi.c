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
    const char *body = fuzz_guarded_copy(data, size);
    size_t errlen = bars_check_errlens[size % 3];
    char *err = malloc(errlen);
    bars_page_t page;

    if (err == NULL)
        abort();
    if (bars_parse_multi(body, size, &page, err, errlen) == 0) {
        cJSON *root = cJSON_ParseWithLengthOpts(body, size, NULL, false);
        FUZZ_CHECK(root != NULL);
        bars_check_success(&page, err, root, true);
        cJSON_Delete(root);
    } else {
        bars_check_failure(&page, err, errlen);
    }
    bars_page_clear(&page);
    bars_page_clear(&page); /* documented as safe on a cleared page */
    free(err);
    return 0;
}
