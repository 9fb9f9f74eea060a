/*
 * log: one line per event, JSON or text, with journald priority prefixes.
 * See log.h. Both writers take the same fields and scrub secrets from string
 * values the same way (append_scrubbed); only the framing differs.
 */
#include "log.h"

#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int log_min_level = LL_INFO;

static const char *level_names[] = {"debug", "info", "notice", "warn", "error", "crit"};
static const int journal_prio[] = {7, 6, 5, 4, 3, 2};

static FILE *log_stream;
static int use_journal_prefix;
static int log_format = LFMT_JSON;
static bool log_colour;
static char **secrets;
static size_t nsecrets;

int log_level_parse(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
        if (name && strcasecmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *log_level_name(int level)
{
    if (level < 0 || (size_t)level >= ARRAY_SIZE(level_names))
        return "info";
    return level_names[level];
}

void log_init(void)
{
    /* systemd.exec(5): only trust JOURNAL_STREAM if it names our stderr,
     * since a child of a journald-connected process inherits the variable. */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    use_journal_prefix = 0;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        use_journal_prefix = 1;
}

int log_format_parse(const char *name)
{
    static const char *names[] = {"auto", "json", "text"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (name && strcasecmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

int log_set_format(int format)
{
    bool tty = isatty(STDERR_FILENO) == 1;
    if (format != LFMT_JSON && format != LFMT_TEXT)
        format = tty && !use_journal_prefix ? LFMT_TEXT : LFMT_JSON;
    const char *no_colour = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    log_format = format;
    log_colour = format == LFMT_TEXT && tty && (!no_colour || !*no_colour) &&
                 !(term && strcmp(term, "dumb") == 0);
    return log_format;
}

void log_force_format(int format, bool colour)
{
    log_format = format == LFMT_TEXT ? LFMT_TEXT : LFMT_JSON;
    log_colour = log_format == LFMT_TEXT && colour;
}

void log_add_secret(const char *secret)
{
    if (!secret || !*secret)
        return;
    secrets = xrealloc(secrets, (nsecrets + 1) * sizeof(*secrets));
    secrets[nsecrets++] = xstrdup(secret);
}

void log_clear_secrets(void)
{
    for (size_t i = 0; i < nsecrets; i++)
        free(secrets[i]);
    free(secrets);
    secrets = NULL;
    nsecrets = 0;
}

void log_set_stream(FILE *f)
{
    log_stream = f;
}

static int append_escaped(dynbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = dynbuf_append(b, e, 2);
        } else if (c == '\n') {
            rc = dynbuf_append(b, "\\n", 2);
        } else if (c == '\r') {
            rc = dynbuf_append(b, "\\r", 2);
        } else if (c == '\t') {
            rc = dynbuf_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = dynbuf_append(b, e, 6);
        } else {
            rc = dynbuf_append(b, &s[i], 1);
        }
    }
    return rc;
}

/*
 * Where a secret may be matched. A long secret (an API key, a generated
 * password) is matched anywhere, since it can only be itself. A short one
 * ("s", or a development password such as "postgres") would also match
 * inside ordinary words and keys and turn every line into noise, so it is
 * matched only as a whole word: not touching a letter or digit on either side.
 */
#define LOG_SECRET_ANYWHERE_LEN 12

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* The first place at or after s + i where secret may be matched, or NULL. */
static const char *find_secret(const char *s, size_t i, const char *secret, size_t len)
{
    for (const char *p = strstr(s + i, secret); p; p = strstr(p + 1, secret)) {
        if (len >= LOG_SECRET_ANYWHERE_LEN)
            return p;
        /* A side counts only where the secret's own edge is a letter or
         * digit: "ab!" followed by "x" is still the secret "ab!". */
        bool left_ok = p == s || !is_word_char(secret[0]) || !is_word_char(p[-1]);
        bool right_ok = !is_word_char(secret[len - 1]) || !is_word_char(p[len]);
        if (left_ok && right_ok)
            return p;
    }
    return NULL;
}

/* The next registered secret in s at or after i, longest first at one place. */
static size_t next_secret(const char *s, size_t i, size_t n, size_t *hitlen)
{
    size_t hit = n;
    *hitlen = 0;
    for (size_t k = 0; k < nsecrets; k++) {
        size_t len = strlen(secrets[k]);
        const char *p = find_secret(s, i, secrets[k], len);
        if (p && ((size_t)(p - s) < hit || ((size_t)(p - s) == hit && len > *hitlen))) {
            hit = (size_t)(p - s);
            *hitlen = len;
        }
    }
    return hit;
}

void log_scrub(const char *s, char *out, size_t outlen)
{
    dynbuf_t b;
    dynbuf_init(&b, outlen ? outlen - 1 : 0);
    size_t n = strlen(s), i = 0, hitlen;
    int rc = 0;
    while (i < n && rc == 0) {
        size_t hit = next_secret(s, i, n, &hitlen);
        rc = dynbuf_append(&b, s + i, hit - i);
        if (hit == n || rc != 0)
            break;
        rc = dynbuf_append(&b, "[redacted]", 10);
        i = hit + hitlen;
    }
    strlcpy_trunc(out, outlen, b.data ? b.data : "");
    dynbuf_free(&b);
}

/* Writes s escaped, with every registered secret replaced. */
static int append_scrubbed(dynbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    size_t i = 0;
    while (i < n) {
        size_t hitlen;
        /* At the same position the longer secret wins, or its tail would leak. */
        size_t hit = next_secret(s, i, n, &hitlen);
        if (append_escaped(b, s + i, hit - i) < 0)
            return -1;
        if (hit == n)
            break;
        if (dynbuf_append(b, "[redacted]", 10) < 0)
            return -1;
        i = hit + hitlen;
    }
    return 0;
}

/* The event name and the keys are the program's own words, never a secret:
 * written escaped but not scrubbed, so a secret that happens to be an
 * ordinary word cannot rewrite them. */
static int append_plain_string(dynbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (dynbuf_append(b, "\"", 1) < 0 || append_escaped(b, s, n) < 0)
        return -1;
    return dynbuf_append(b, "\"", 1);
}

int log_json_string(struct dynbuf *b, const char *s)
{
    if (!s)
        return dynbuf_append(b, "null", 4);
    if (dynbuf_append(b, "\"", 1) < 0 || append_scrubbed(b, s) < 0)
        return -1;
    return dynbuf_append(b, "\"", 1);
}

/* One field's value as JSON. */
static int json_value(dynbuf_t *b, const struct log_field *f)
{
    switch (f->type) {
    case LF_STR:
        return log_json_string(b, f->s);
    case LF_I64:
        return dynbuf_printf(b, "%lld", (long long)f->i);
    case LF_DBL:
        /* JSON has no NaN or Infinity: a rate over a zero interval is null. */
        if (isfinite(f->d))
            return dynbuf_printf(b, "%.10g", f->d);
        return dynbuf_append(b, "null", 4);
    case LF_BOOL:
        return dynbuf_append(b, f->i ? "true" : "false", f->i ? 4 : 5);
    default:
        return dynbuf_append(b, "null", 4);
    }
}

/* {"ts":…,"level":…,"msg":…,fields…}: ts is the RFC 3339 time to the ms. */
static int json_line(dynbuf_t *b, const char *ts, int level, const char *msg,
                     const struct log_field *fields)
{
    int rc = dynbuf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
    rc |= append_plain_string(b, msg);
    for (const struct log_field *f = fields; f && f->type != LF_END; f++) {
        rc |= dynbuf_append(b, ",", 1);
        rc |= append_plain_string(b, f->key);
        rc |= dynbuf_append(b, ":", 1);
        rc |= json_value(b, f);
    }
    return rc | dynbuf_append(b, "}\n", 2);
}

/* A text value is quoted when it would not read back as one word. */
static bool text_needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* One field's value as text: strings scrubbed (and quoted if need be), numbers as in JSON. */
static int text_value(dynbuf_t *b, const struct log_field *f)
{
    if (f->type != LF_STR || !f->s)
        return json_value(b, f);
    if (!text_needs_quotes(f->s))
        return append_scrubbed(b, f->s);
    return log_json_string(b, f->s);
}

/* SGR colour of each level on a terminal: debug dim, info green, notice cyan,
 * warn yellow, error red, crit bold red. */
static const char *const level_colours[] = {"2", "32", "36", "33", "31", "1;31"};

/* hh:mm:ss.mmm level msg key=value…: the local time of day, for a person. */
static int text_line(dynbuf_t *b, const char *clock, int level, const char *msg,
                     const struct log_field *fields)
{
    int rc = 0;
    if (log_colour)
        rc |= dynbuf_printf(b, "\033[2m%s\033[0m \033[%sm%-5s\033[0m ", clock, level_colours[level],
                            level_names[level]);
    else
        rc |= dynbuf_printf(b, "%s %-5s ", clock, level_names[level]);
    rc |= append_escaped(b, msg, strlen(msg));
    for (const struct log_field *f = fields; f && f->type != LF_END; f++) {
        rc |= dynbuf_append(b, log_colour ? " \033[2m" : " ", log_colour ? 5 : 1);
        rc |= append_escaped(b, f->key, strlen(f->key));
        rc |= dynbuf_append(b, log_colour ? "=\033[0m" : "=", log_colour ? 5 : 1);
        rc |= text_value(b, f);
    }
    return rc | dynbuf_append(b, "\n", 1);
}

void log_write(int level, const char *msg, const struct log_field *fields)
{
    dynbuf_t b;
    dynbuf_init(&b, 64 * 1024);
    if (level < 0)
        level = 0;
    if ((size_t)level >= ARRAY_SIZE(level_names))
        level = (int)ARRAY_SIZE(level_names) - 1;

    int64_t us = wall_us();
    time_t secs = (time_t)(us / 1000000);
    int ms = (int)((us / 1000) % 1000);
    struct tm tm;
    char when[48], stamp[40];
    if (log_format == LFMT_TEXT) {
        localtime_r(&secs, &tm);
        strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    } else {
        gmtime_r(&secs, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    }
    snprintf(when, sizeof when, log_format == LFMT_TEXT ? "%s.%03d" : "%s.%03dZ", stamp, ms);

    int rc = 0;
    if (use_journal_prefix)
        rc |= dynbuf_printf(&b, "<%d>", journal_prio[level]);
    size_t start = b.len;
    if (log_format == LFMT_TEXT)
        rc |= text_line(&b, when, level, msg, fields);
    else
        rc |= json_line(&b, when, level, msg, fields);
    if (rc != 0) {
        /* Over the line cap: say so rather than emit a broken line. */
        b.len = start;
        if (log_format == LFMT_TEXT)
            rc = dynbuf_printf(&b, "%s %-5s log line too long\n", when, level_names[level]);
        else
            rc = dynbuf_printf(&b,
                               "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"log line too long\"}\n",
                               when, level_names[level]);
        if (rc < 0)
            b.len = 0;
    }
    FILE *out = log_stream ? log_stream : stderr;
    if (b.len)
        fwrite(b.data, 1, b.len, out);
    fflush(out);
    dynbuf_free(&b);
}
