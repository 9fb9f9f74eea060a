/*
 * bars_check: the invariants both bars fuzz targets hold a parse result to.
 *
 * bars.h promises a page that is all or nothing: on success every series is
 * complete, in body order, with valid bars; on failure a one-line message
 * and an empty page. These checks restate that contract on the C side, then
 * compare the result with the body as cJSON reads it, so that a bar stored
 * under the wrong index, a series under the wrong name, a count that does
 * not match the array or a number jsonscan reads otherwise than cJSON's
 * strtod is caught, not only crashes; and any body jsonscan accepts as JSON
 * must be JSON to cJSON too.
 */
#ifndef BACKFILLD_BARS_CHECK_H
#define BACKFILLD_BARS_CHECK_H

#include "bars.h"
#include "fuzz.h"
#include "jsonscan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>

/* The error buffer sizes the targets cycle through: none to spare, a short one, the usual. */
static const size_t bars_check_errlens[] = {1, 24, 256};

static inline int bars_check_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A failed parse: an empty page and a message that fits its buffer (and says something). */
static inline void bars_check_failure(const bars_page_t *p, const char *err, size_t errlen)
{
    FUZZ_CHECK(p->series == NULL && p->nseries == 0 && p->total == 0);
    FUZZ_CHECK(p->next_page_token == NULL);
    FUZZ_CHECK(fuzz_terminated(err, errlen));
    FUZZ_CHECK(errlen == 1 || err[0] != '\0');
}

/* One bar as bars.h describes it. */
static inline void bars_check_bar(const bar_t *b)
{
    FUZZ_CHECK(isfinite(b->open) && isfinite(b->high) && isfinite(b->low) && isfinite(b->close) &&
               isfinite(b->vwap));
    FUZZ_CHECK(b->volume >= 0 && b->trade_count >= 0);
}

/* The C result against the cJSON view of one series' array. */
static inline void bars_check_against_json(const bars_series_t *s, const cJSON *arr)
{
    FUZZ_CHECK(cJSON_IsArray(arr));
    FUZZ_CHECK((size_t)cJSON_GetArraySize(arr) == s->n);
    size_t j = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr)
    {
        const bar_t *b = &s->bars[j];
        int64_t ts = 0;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(item, "t");
        FUZZ_CHECK(cJSON_IsString(t) && bars_parse_time(t->valuestring, &ts) == 0);
        FUZZ_CHECK(ts == b->ts_us);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "o")->valuedouble == b->open);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "h")->valuedouble == b->high);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "l")->valuedouble == b->low);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "c")->valuedouble == b->close);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "vw")->valuedouble == b->vwap);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "v")->valuedouble == (double)b->volume);
        FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(item, "n")->valuedouble ==
                   (double)b->trade_count);
        j++;
    }
}

/*
 * A successful parse. root is the body as cJSON parses it in the target (it
 * must parse, since bars did); multi says which of the two shapes it is.
 */
static inline void bars_check_success(const bars_page_t *p, const char *err, const cJSON *root,
                                      bool multi)
{
    const cJSON *bars = cJSON_GetObjectItemCaseSensitive(root, "bars");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "next_page_token");
    size_t total = 0;

    FUZZ_CHECK(err[0] == '\0');
    FUZZ_CHECK((p->nseries == 0) == (p->series == NULL));
    if (tok == NULL || cJSON_IsNull(tok))
        FUZZ_CHECK(p->next_page_token == NULL);
    else
        FUZZ_CHECK(cJSON_IsString(tok) && p->next_page_token != NULL &&
                   strcmp(tok->valuestring, p->next_page_token) == 0);
    if (multi)
        FUZZ_CHECK(cJSON_IsNull(bars) ? p->nseries == 0
                                      : (size_t)cJSON_GetArraySize(bars) == p->nseries);
    else
        FUZZ_CHECK(p->nseries == (cJSON_IsArray(bars) ? 1u : 0u));

    const cJSON *member = cJSON_IsObject(bars) ? bars->child : NULL;
    for (size_t i = 0; i < p->nseries; i++) {
        const bars_series_t *s = &p->series[i];
        FUZZ_CHECK(s->symbol != NULL && s->symbol[0] != '\0');
        FUZZ_CHECK((s->n == 0) == (s->bars == NULL));
        for (size_t j = 0; j < s->n; j++) {
            bars_check_bar(&s->bars[j]);
            if (j > 0)
                FUZZ_CHECK(s->bars[j].ts_us > s->bars[j - 1].ts_us);
        }
        total += s->n;
        if (multi) {
            /* Series come in the order of the members of "bars", named after them. */
            FUZZ_CHECK(member != NULL && strcmp(member->string, s->symbol) == 0);
            bars_check_against_json(s, member);
            member = member->next;
        } else {
            bars_check_against_json(s, bars);
        }
    }
    FUZZ_CHECK(total == p->total);

    /* No symbol twice on one page. */
    if (multi && p->nseries > 1) {
        const char **names = malloc(p->nseries * sizeof(*names));
        if (names == NULL)
            abort();
        for (size_t i = 0; i < p->nseries; i++)
            names[i] = p->series[i].symbol;
        qsort(names, p->nseries, sizeof(*names), bars_check_cmp);
        for (size_t i = 1; i < p->nseries; i++)
            FUZZ_CHECK(strcmp(names[i - 1], names[i]) != 0);
        free(names);
    }
}

/*
 * One input through a bars parser: bars_parse_multi when symbol is NULL,
 * else bars_parse_single for that symbol. On success the page must agree
 * with the body as cJSON reads it (and a single page may only hold symbol);
 * on failure the page is empty and the message fits its buffer. The error
 * buffer size cycles through bars_check_errlens.
 */
static inline int bars_check_one(const uint8_t *data, size_t size, const char *symbol)
{
    const char *body = fuzz_guarded_copy(data, size);
    size_t errlen = bars_check_errlens[size % 3];
    char *err = malloc(errlen);
    bars_page_t page;

    if (err == NULL)
        abort();
    /* jsonscan's grammar is a subset of cJSON's: what it accepts, cJSON reads whole. */
    if (json_check(body, size, NULL)) {
        const char *end = NULL;
        cJSON *any = cJSON_ParseWithLengthOpts(body, size, &end, false);
        FUZZ_CHECK(any != NULL && end != NULL);
        for (; end < body + size; end++)
            FUZZ_CHECK(*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n');
        cJSON_Delete(any);
    }
    int rc = symbol ? bars_parse_single(body, size, symbol, &page, err, errlen)
                    : bars_parse_multi(body, size, &page, err, errlen);
    if (rc == 0) {
        cJSON *root = cJSON_ParseWithLengthOpts(body, size, NULL, false);
        FUZZ_CHECK(root != NULL);
        if (symbol) {
            const cJSON *sym = cJSON_GetObjectItemCaseSensitive(root, "symbol");
            FUZZ_CHECK(cJSON_IsString(sym) && strcmp(sym->valuestring, symbol) == 0);
        }
        bars_check_success(&page, err, root, symbol == NULL);
        FUZZ_CHECK(!symbol || page.nseries == 0 || strcmp(page.series[0].symbol, symbol) == 0);
        cJSON_Delete(root);
    } else {
        bars_check_failure(&page, err, errlen);
    }
    bars_page_clear(&page);
    bars_page_clear(&page); /* documented as safe on a cleared page */
    free(err);
    return 0;
}

#endif
