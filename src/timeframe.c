/*
 * timeframe: backfilld's timeframe codes and Alpaca's names for them.
 *
 * The codes (m1 … mn1) are what operators type into job_definitions and what
 * the bars table stores; Alpaca's names (1Min … 1Month) are only ever put on
 * the wire. Keeping both in one table means a timeframe is added in exactly
 * one place, and an unknown name from either side is refused instead of
 * being passed through.
 */
#include "timeframe.h"

#include <stddef.h>
#include <string.h>

struct tf_entry {
    const char *code;
    const char *alpaca;
    int64_t seconds;
};

/*
 * Nominal lengths only: a month is counted as 31 days so that a range split
 * into chunks of whole bars never under-estimates how many bars fit.
 */
static const struct tf_entry tf_table[] = {
    {"m1", "1Min", 60},     {"m5", "5Min", 300},     {"m15", "15Min", 900},
    {"m30", "30Min", 1800}, {"h1", "1Hour", 3600},   {"h4", "4Hour", 14400},
    {"d1", "1Day", 86400},  {"w1", "1Week", 604800}, {"mn1", "1Month", 2678400},
};

#define TF_COUNT (sizeof(tf_table) / sizeof(tf_table[0]))

static const struct tf_entry *find_code(const char *code)
{
    if (code == NULL)
        return NULL;
    for (size_t i = 0; i < TF_COUNT; i++) {
        if (strcmp(tf_table[i].code, code) == 0)
            return &tf_table[i];
    }
    return NULL;
}

const char *tf_to_alpaca(const char *code)
{
    const struct tf_entry *e = find_code(code);

    return e != NULL ? e->alpaca : NULL;
}

int64_t tf_seconds(const char *code)
{
    const struct tf_entry *e = find_code(code);

    return e != NULL ? e->seconds : 0;
}

const char *tf_codes(void)
{
    /* Kept in the order of tf_table; the unit test checks the two agree. */
    return "m1 m5 m15 m30 h1 h4 d1 w1 mn1";
}
