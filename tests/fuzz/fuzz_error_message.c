/*
 * Fuzz target: bars_error_message, which pulls "message" out of an Alpaca
 * error body so that it can end up in job_runs.last_error.
 *
 * Error bodies are often not JSON at all (nginx's HTML 401, a gateway page),
 * so the interesting inputs are anything. Invariants: the output always fits
 * its buffer and is NUL-terminated, and it is empty when the answer is false.
 * When true, the body is a JSON object and the output is the start of its
 * "message" string as cJSON reads it, cut only where the buffer ends (or at
 * an embedded \u0000). When false, the body is not one JSON object with a
 * string "message" followed by nothing but white space. The output buffer is
 * exactly outlen bytes on the heap, cycling through sizes so that truncation
 * is exercised.
 */
#include "bars.h"
#include "fuzz.h"

#include <cjson/cJSON.h>

static const size_t outlens[] = {1, 2, 16, 512};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = fuzz_guarded_copy(data, size);
    size_t outlen = outlens[size % 4];
    char *out = malloc(outlen);

    if (out == NULL)
        abort();
    memset(out, 'x', outlen);
    bool ok = bars_error_message(body, size, out, outlen);
    FUZZ_CHECK(fuzz_terminated(out, outlen));
    if (!ok) {
        FUZZ_CHECK(out[0] == '\0');
        /* The converse: one JSON object (then only white space) with a string message is read. */
        const char *end = NULL;
        cJSON *root = cJSON_ParseWithLengthOpts(body, size, &end, false);
        bool strict = root != NULL;
        for (const char *p = end; strict && p < body + size; p++)
            strict = *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n';
        if (strict && cJSON_IsObject(root))
            FUZZ_CHECK(!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "message")));
        cJSON_Delete(root);
    } else {
        cJSON *root = cJSON_ParseWithLengthOpts(body, size, NULL, false);
        FUZZ_CHECK(cJSON_IsObject(root));
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        FUZZ_CHECK(cJSON_IsString(msg));
        size_t n = strlen(out);
        FUZZ_CHECK(n < outlen);
        FUZZ_CHECK(strncmp(out, msg->valuestring, n) == 0);
        /* Truncated only where the buffer ends. */
        FUZZ_CHECK(n == outlen - 1 || msg->valuestring[n] == '\0');
        cJSON_Delete(root);
    }
    /* A NULL or empty output buffer is refused without touching anything. */
    FUZZ_CHECK(!bars_error_message(body, size, NULL, 0));
    free(out);
    return 0;
}
