/*
 * timeframe: the mapping between backfilld's timeframe codes (m1 … mn1, the
 * names stored in job_definitions, job_runs and bars) and Alpaca's
 * (1Min … 1Month), plus each timeframe's nominal length.
 */
#ifndef BACKFILLD_TIMEFRAME_H
#define BACKFILLD_TIMEFRAME_H

#include <stdint.h>

/* Alpaca's name for a code ("h1" → "1Hour"), or NULL for an unknown code. */
const char *tf_to_alpaca(const char *code);

/* Nominal bar length in seconds (m1 = 60, … w1 = 604800, mn1 = 2678400 (31 days)), or 0. */
int64_t tf_seconds(const char *code);

/* The list of codes, space separated, for error messages. */
const char *tf_codes(void);

#endif
