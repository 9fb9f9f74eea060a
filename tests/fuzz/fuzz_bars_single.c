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
    const char *body = fuzz_guarded_copy(data, size);
    size_t errlen = bars_check_errlens[size % 3];
    char *err = malloc(errlen);
    bars_page_t page;

    if (err == NULL)
        abort();
    if (bars_parse_single(body, size, "AAPL", &page, err, errlen) == 0) {
        cJSON *root = cJSON_ParseWithLengthOpts(body, size, NULL, false);
        FUZZ_CHECK(root != NULL);
        const cJSON *sym = cJSON_GetObjectItemCaseSensitive(root, "symbol");
        FUZZ_CHECK(cJSON_IsString(sym) && strcmp(sym->valuestring, "AAPL") == 0);
        bars_check_success(&page, err, root, false);
        FUZZ_CHECK(page.nseries == 0 || strcmp(page.series[0].symbol, "AAPL") == 0);
        cJSON_Delete(root);
    } else {
        bars_check_failure(&page, err, errlen);
    }
    bars_page_clear(&page);
    bars_page_clear(&page);
    free(err);
    return 0;
}
