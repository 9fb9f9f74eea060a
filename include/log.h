/*
 * log: one line per event on stderr, as a JSON object (for journald, jq and
 * Loki) or as text for a person at a terminal (BACKFILLD_LOG_FORMAT):
 *
 *   {"ts":"2026-11-29T14:03:01.123Z","level":"info","msg":"run succeeded","job_id":42,...}
 *   14:03:01.123 info  run succeeded job_id=42 symbol=AAPL ...
 *
 * Both carry the same fields; text puts the local time of day first, then
 * the level, the event name and every field as key=value (a value with a
 * space, a quote, '=' or a control character is quoted with JSON escapes).
 * Text is coloured only when stderr is a terminal and NO_COLOR is not set.
 *
 * `msg` is a stable event name (no interpolated values) so that ops can
 * filter on it; everything variable goes into typed fields. Every line about
 * a run carries RUN_FIELDS (job_id, symbol, timeframe, attempt). The level is
 * checked before anything is formatted. When stderr is the journal (systemd's
 * JOURNAL_STREAM matches stderr) each line gets a "<N>" priority prefix that
 * journald strips; otherwise lines are pure JSON for jq and files.
 *
 * Secrets registered with log_add_secret() are replaced by "[redacted]" in
 * every string value, as a second line of defence: no code path is meant to
 * pass one in the first place. The event name and the keys are never
 * scrubbed. A secret of 12 characters or more is matched anywhere; a shorter
 * one only as a whole word (no letter or digit either side), so that a short
 * development password cannot rewrite ordinary words.
 */
#ifndef BACKFILLD_LOG_H
#define BACKFILLD_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* LL_, not LOG_: <syslog.h> owns LOG_DEBUG, LOG_INFO, LOG_NOTICE and LOG_CRIT. */
enum log_level { LL_DEBUG = 0, LL_INFO, LL_NOTICE, LL_WARN, LL_ERROR, LL_CRIT };
enum log_ftype { LF_END = 0, LF_STR, LF_I64, LF_DBL, LF_BOOL };

struct log_field {
    const char *key;
    int type;
    const char *s; /* borrowed; NULL is written as JSON null */
    int64_t i;
    double d;
};

#define F_STR(k, v)                                                                                \
    {                                                                                              \
        .key = (k), .type = LF_STR, .s = (v)                                                       \
    }
#define F_I64(k, v)                                                                                \
    {                                                                                              \
        .key = (k), .type = LF_I64, .i = (int64_t)(v)                                              \
    }
#define F_DBL(k, v)                                                                                \
    {                                                                                              \
        .key = (k), .type = LF_DBL, .d = (double)(v)                                               \
    }
#define F_BOOL(k, v)                                                                               \
    {                                                                                              \
        .key = (k), .type = LF_BOOL, .i = (v) ? 1 : 0                                              \
    }

extern int log_min_level;

/* Writes one line. Prefer the LOG macro, which skips formatting below the level. */
void log_write(int level, const char *msg, const struct log_field *fields);

#define LOG(level, msg, ...)                                                                       \
    do {                                                                                           \
        if ((level) >= log_min_level)                                                              \
            log_write((level), (msg),                                                              \
                      (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ){.type = LF_END}});     \
    } while (0)

/* "debug" … "crit" → level; -1 if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* Checks JOURNAL_STREAM against stderr once; call at start-up. */
void log_init(void);

/* The line formats. LFMT_AUTO is a request only: it resolves to one of the others. */
enum log_format { LFMT_AUTO = 0, LFMT_JSON, LFMT_TEXT };

/* "auto", "json" or "text" (any case) → LFMT_*; -1 if unknown (NULL too). */
int log_format_parse(const char *name);

/*
 * Chooses how lines are written from now on and returns the format in force
 * (LFMT_JSON or LFMT_TEXT). LFMT_AUTO means text when stderr is a terminal
 * and is not the journal, JSON otherwise, so text never reaches journald or
 * a file by default. Text is coloured when stderr is a terminal, NO_COLOR is
 * unset or empty and TERM is not "dumb". Call after log_init(). Until it is
 * called, lines are JSON.
 */
int log_set_format(int format);

/* Tests: exactly this format (LFMT_JSON or LFMT_TEXT) and colour, no checks. */
void log_force_format(int format, bool colour);

/* Registers a secret (copied) to scrub from every line. Empty strings are ignored. */
void log_add_secret(const char *secret);
void log_clear_secrets(void);

/* Copies s into out (always NUL-terminated) with every registered secret replaced. */
void log_scrub(const char *s, char *out, size_t outlen);

/* Redirects output (tests); NULL restores stderr. */
void log_set_stream(FILE *f);

/* Appends s as a JSON string literal (with quotes) to a caller buffer; used by metrics/status too.
 */
struct dynbuf;
int log_json_string(struct dynbuf *b, const char *s);

#endif
