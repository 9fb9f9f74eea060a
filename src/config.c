/*
 * config: the key table, the EnvironmentFile parser and reload. See config.h.
 */
#include "config.h"

#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFF(f) offsetof(struct config, f)

/* name, type, default, min, max, reloadable, secret, field, help */
const struct cfg_key cfg_keys[] = {
    {"BACKFILLD_DATABASE_URL", CFG_STR, "", 0, 0, false, true, OFF(database_url),
     "libpq connection string or URI; empty uses libpq's PG* variables"},
    {"APCA_API_KEY_ID", CFG_STR, "", 0, 0, false, true, OFF(api_key), "Alpaca API key id"},
    {"APCA_API_SECRET_KEY", CFG_STR, "", 0, 0, false, true, OFF(api_secret),
     "Alpaca API secret key"},
    {"APCA_API_DATA_URL", CFG_STR, "https://data.alpaca.markets", 0, 0, false, false, OFF(data_url),
     "Alpaca market-data base URL"},
    {"APCA_API_BASE_URL", CFG_STR, "https://paper-api.alpaca.markets", 0, 0, false, false,
     OFF(base_url),
     "Alpaca trading-API base URL (assets list for enqueue --all-active); live keys: "
     "https://api.alpaca.markets"},
    {"BACKFILLD_WORKER_ID", CFG_STR, "", 0, 0, false, false, OFF(worker_id),
     "this daemon's name in locked_by; empty = host:pid:random"},
    {"BACKFILLD_METRICS_LISTEN", CFG_STR, "127.0.0.1:9464", 0, 0, false, false, OFF(metrics_listen),
     "host:port for /metrics and /healthz; empty turns it off"},
    {"BACKFILLD_CA_FILE", CFG_STR, "", 0, 0, false, false, OFF(ca_file),
     "CA bundle for TLS verification; empty = system default"},
    {"BACKFILLD_CONCURRENCY", CFG_INT, "2000", 1, 4096, true, false, OFF(concurrency),
     "runs fetching at once (slots); with those waiting for the writer, 2x this at most"},
    {"BACKFILLD_CLAIM_BATCH", CFG_INT, "1000", 1, 4096, true, false, OFF(claim_batch),
     "most runs claimed by one claim_queued_job call"},
    {"BACKFILLD_BATCH_SYMBOLS", CFG_INT, "100", 1, 1000, true, false, OFF(batch_symbols),
     "most symbols coalesced into one multi-symbol request; 1 = per-symbol mode"},
    {"BACKFILLD_POLL_INTERVAL_MS", CFG_INT, "1000", 10, 600000, true, false, OFF(poll_interval_ms),
     "how often to look for queued runs without a NOTIFY"},
    {"BACKFILLD_LEASE_SECONDS", CFG_INT, "30", 2, 3600, true, false, OFF(lease_seconds),
     "lease on a claimed run; renewed every third of it"},
    {"BACKFILLD_RESCUE_INTERVAL_MS", CFG_INT, "3000", 100, 600000, true, false,
     OFF(rescue_interval_ms), "how often expired leases (dead hosts) are looked for"},
    {"BACKFILLD_SCHEDULE_INTERVAL_MS", CFG_INT, "10000", 100, 3600000, true, false,
     OFF(schedule_interval_ms), "how often schedule_due_jobs() runs (also on definition changes)"},
    {"BACKFILLD_RUN_RETENTION_DAYS", CFG_INT, "30", 0, 36500, true, false, OFF(run_retention_days),
     "finished runs older than this are pruned from job_runs (coverage stays); 0 = keep all"},
    {"BACKFILLD_MAX_ATTEMPTS", CFG_INT, "5", 1, 100, true, false, OFF(max_attempts),
     "attempts per run when its definition does not say"},
    {"BACKFILLD_PAGE_LIMIT", CFG_INT, "10000", 1, 10000, true, false, OFF(page_limit),
     "Alpaca limit= per request (bars per page, across symbols)"},
    {"BACKFILLD_PAGE_RETRIES", CFG_INT, "5", 0, 100, true, false, OFF(page_retries),
     "retries of one page (5xx, timeout, bad body) before the attempt fails"},
    {"BACKFILLD_RETRY_BASE_MS", CFG_INT, "250", 1, 600000, true, false, OFF(retry_base_ms),
     "first page-retry delay; doubles each time, jittered"},
    {"BACKFILLD_RETRY_MAX_MS", CFG_INT, "30000", 1, 3600000, true, false, OFF(retry_max_ms),
     "cap on the page-retry delay"},
    {"BACKFILLD_RUN_RETRY_BASE_MS", CFG_INT, "5000", 0, 86400000, true, false,
     OFF(run_retry_base_ms), "delay before a failed attempt is retried; doubles, jittered"},
    {"BACKFILLD_RUN_RETRY_MAX_MS", CFG_INT, "600000", 0, 86400000, true, false,
     OFF(run_retry_max_ms), "cap on the run-retry delay"},
    {"BACKFILLD_HTTP_TIMEOUT_MS", CFG_INT, "60000", 100, 3600000, false, false,
     OFF(http_timeout_ms), "whole-request timeout"},
    {"BACKFILLD_CONNECT_TIMEOUT_MS", CFG_INT, "10000", 100, 600000, false, false,
     OFF(connect_timeout_ms), "TCP+TLS connect timeout"},
    {"BACKFILLD_MAX_CONNECTIONS", CFG_INT, "8", 1, 1024, false, false, OFF(max_connections),
     "most HTTP connections to Alpaca at once"},
    {"BACKFILLD_MAX_PENDING_ROWS", CFG_INT, "200000", 1000, 100000000, true, false,
     OFF(max_pending_rows), "fetching pauses while this many bars wait to be written"},
    {"BACKFILLD_WRITERS", CFG_INT, "2", 1, 16, false, false, OFF(writers),
     "database sessions writing bars side by side (each a Postgres backend)"},
    {"BACKFILLD_PROGRESS_INTERVAL_MS", CFG_INT, "5000", 100, 3600000, true, false,
     OFF(progress_interval_ms), "period of the progress log line"},
    {"BACKFILLD_SHUTDOWN_TIMEOUT_MS", CFG_INT, "20000", 0, 3600000, true, false,
     OFF(shutdown_timeout_ms), "on SIGTERM, how long in-flight runs may finish before release"},
    {"BACKFILLD_RATE_LIMIT", CFG_DBL, "200", 1, 1000000, true, false, OFF(rate_limit),
     "Alpaca requests per minute for this account"},
    {"BACKFILLD_RATE_LIMIT_NAME", CFG_STR, "alpaca", 0, 0, false, false, OFF(rate_limit_name),
     "rate_limits row shared by every host on this account; empty = a per-host budget"},
    {"BACKFILLD_SETTLE_SECONDS", CFG_INT, "60", 0, 86400, true, false, OFF(settle_seconds),
     "a bar counts as final this long after it closes (Alpaca recalculates minute bars ~30 s "
     "after their close); younger bars are fetched again"},
    {"BACKFILLD_SIP_REALTIME", CFG_BOOL, "false", 0, 0, true, false, OFF(sip_realtime),
     "the Alpaca plan has real-time SIP (Algo Trader Plus); false: SIP younger than 15 minutes "
     "is never asked for (the free plan refuses it with 403)"},
    {"BACKFILLD_POLL_ONLY", CFG_BOOL, "false", 0, 0, false, false, OFF(poll_only),
     "no LISTEN/NOTIFY (for transaction-mode poolers such as PgBouncer)"},
    {"BACKFILLD_LOG_LEVEL", CFG_LEVEL, "info", 0, 0, true, false, OFF(log_level),
     "debug, info, notice, warn, error"},
    {"BACKFILLD_LOG_FORMAT", CFG_STR, "auto", 0, 0, false, false, OFF(log_format),
     "json, text, or auto: text when stderr is a terminal (not the journal), else json"},
    {"BACKFILLD_UPKEEP_INTERVAL_MS", CFG_INT, "86400000", 0, 604800000, false, false,
     OFF(upkeep_interval_ms),
     "how often the daemon reads the trading calendar and corporate actions and re-checks the "
     "last sessions (one host at a time); 0 turns it off"},
    {"BACKFILLD_CORPACTIONS_WINDOW_DAYS", CFG_INT, "30", 1, 3650, true, false,
     OFF(corpactions_window_days),
     "corporate actions processed this many days back are read again at every sync (records "
     "appear late)"},
    {"BACKFILLD_VERIFY_SESSIONS", CFG_INT, "5", 0, 1000, true, false, OFF(verify_sessions),
     "the daily ledger pass re-checks this many last sessions of every series and queues its "
     "holes again; 0 turns it off"},
    {NULL, CFG_STR, NULL, 0, 0, false, false, 0, NULL},
};

/* Credentials files (systemd LoadCredential=) that may supply a secret. */
static const struct {
    const char *file;
    const char *key;
} cred_files[] = {
    {"alpaca_key_id", "APCA_API_KEY_ID"},
    {"alpaca_secret_key", "APCA_API_SECRET_KEY"},
    {"database_url", "BACKFILLD_DATABASE_URL"},
};

static const struct cfg_key *find_key(const char *name)
{
    for (const struct cfg_key *k = cfg_keys; k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* Sets one key from text. `origin` names where the value came from. */
static int set_value(struct config *c, const struct cfg_key *k, const char *val, const char *origin,
                     char *err, size_t errlen)
{
    void *field = (char *)c + k->offset;
    int64_t i;
    double d;
    bool b;
    int lvl;
    switch (k->type) {
    case CFG_STR:
        free(*(char **)field);
        *(char **)field = xstrdup(val);
        return 0;
    case CFG_INT:
        if (!parse_i64(val, (int64_t)k->min, (int64_t)k->max, &i))
            break;
        *(int64_t *)field = i;
        return 0;
    case CFG_DBL:
        if (!parse_double(val, k->min, k->max, &d))
            break;
        *(double *)field = d;
        return 0;
    case CFG_BOOL:
        if (!parse_bool(val, &b))
            break;
        *(bool *)field = b;
        return 0;
    case CFG_LEVEL:
        lvl = log_level_parse(val);
        if (lvl < 0)
            break;
        *(int *)field = lvl;
        return 0;
    }
    const char *want = k->type == CFG_BOOL    ? "a boolean (true/false)"
                       : k->type == CFG_LEVEL ? "one of debug, info, notice, warn, error"
                       : k->type == CFG_INT   ? "a whole number"
                                              : "a number";
    if (k->type == CFG_INT)
        snprintf(err, errlen, "%s (%s): must be %s from %lld to %lld, got \"%s\"", k->name, origin,
                 want, (long long)k->min, (long long)k->max, k->secret ? "[redacted]" : val);
    else if (k->type == CFG_DBL)
        snprintf(err, errlen, "%s (%s): must be %s from %.15g to %.15g, got \"%s\"", k->name,
                 origin, want, k->min, k->max, k->secret ? "[redacted]" : val);
    else
        snprintf(err, errlen, "%s (%s): must be %s, got \"%s\"", k->name, origin, want,
                 k->secret ? "[redacted]" : val);
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Unquotes "..." or '...' in place (systemd also accepts them); false if unbalanced. */
static bool unquote(char **v)
{
    char *s = *v;
    size_t n = strlen(s);
    if (n == 0 || (s[0] != '"' && s[0] != '\''))
        return true;
    if (n < 2 || s[n - 1] != s[0])
        return false;
    s[n - 1] = '\0';
    *v = s + 1;
    return true;
}

/*
 * Applies the KEY=VALUE lines of text[0..len) to *c; name is what messages
 * call the text (the --config path). text is modified (each newline becomes a
 * NUL) and must have text[len] == '\0'. A line may be of any length, so a
 * long value is never cut in two: with a fixed line buffer the tail would be
 * read as a line of its own, and as a comment if it began with '#', leaving
 * half a value in force without a word. A NUL byte ends a line's text early.
 */
static int load_text(struct config *c, char *text, size_t len, const char *name, char *err,
                     size_t errlen)
{
    int lineno = 0, rc = 0;
    char *end = text + len;
    for (char *next = text; rc == 0 && next < end;) {
        char *line = next;
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (nl)
            *nl = '\0';
        next = nl ? nl + 1 : end;
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected KEY=VALUE", name, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        const struct cfg_key *k = find_key(key);
        if (!k) {
            snprintf(err, errlen, "%s:%d: unknown key %s", name, lineno, key);
            rc = -1;
        } else if (!unquote(&val)) {
            snprintf(err, errlen, "%s:%d: %s: unbalanced quotes", name, lineno, key);
            rc = -1;
        } else {
            char where[600];
            snprintf(where, sizeof where, "%s:%d", name, lineno);
            rc = set_value(c, k, val, where, err, errlen);
        }
    }
    return rc;
}

/* Reads a systemd credential file, trimming trailing newlines. */
static char *read_cred(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    char *v = read_file_capped(path, 64 * 1024, &len);
    while (v && len > 0 && (v[len - 1] == '\n' || v[len - 1] == '\r'))
        v[--len] = '\0';
    return v;
}

extern char **environ;

/* Empties *c and sets every key to its default: the first step of every load. */
static int load_defaults(struct config *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (const struct cfg_key *k = cfg_keys; k->name; k++)
        if (set_value(c, k, k->def, "default", err, errlen) < 0)
            return -1; /* a bad default is a bug, but say so rather than abort */
    return 0;
}

/* The steps after the file: the environment, credentials, then the checks across keys. */
static int load_rest(struct config *c, char *err, size_t errlen)
{
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[256];
        size_t n = (size_t)(eq - *e);
        if (n >= sizeof name)
            continue;
        memcpy(name, *e, n);
        name[n] = '\0';
        const struct cfg_key *k = find_key(name);
        if (k) {
            if (set_value(c, k, eq + 1, "environment", err, errlen) < 0)
                return -1;
        } else if (strncmp(name, "BACKFILLD_", 10) == 0) {
            snprintf(err, errlen, "%s (environment): unknown key", name);
            return -1;
        }
    }
    const char *cdir = getenv("CREDENTIALS_DIRECTORY");
    if (cdir && *cdir) {
        for (size_t i = 0; i < ARRAY_SIZE(cred_files); i++) {
            char *v = read_cred(cdir, cred_files[i].file);
            if (!v)
                continue;
            int rc = set_value(c, find_key(cred_files[i].key), v, "credential", err, errlen);
            free(v);
            if (rc < 0)
                return -1;
        }
    }
    /* Register secrets with the logger before anything can print them. */
    log_add_secret(c->api_key);
    log_add_secret(c->api_secret);
    if (c->worker_id && strpbrk(c->worker_id, " \t\r\n")) {
        snprintf(err, errlen, "BACKFILLD_WORKER_ID: must not contain white space");
        return -1;
    }
    if (log_format_parse(c->log_format) < 0) {
        snprintf(err, errlen, "BACKFILLD_LOG_FORMAT: must be json, text or auto, got \"%s\"",
                 c->log_format);
        return -1;
    }
    if (c->retry_base_ms > c->retry_max_ms) {
        snprintf(err, errlen, "BACKFILLD_RETRY_BASE_MS: larger than BACKFILLD_RETRY_MAX_MS");
        return -1;
    }
    return 0;
}

int config_load(struct config *c, const char *file, char *err, size_t errlen)
{
    if (load_defaults(c, err, errlen) < 0)
        return -1;
    if (file) {
        /*
         * No size cap: the file was read line by line without one before, and
         * an operator's --config is trusted as far as its size goes.
         */
        size_t len;
        char *text = read_file_capped(file, SIZE_MAX, &len);
        if (!text) {
            snprintf(err, errlen, "--config %s: %s", file, strerror(errno));
            return -1;
        }
        int rc = load_text(c, text, len, file, err, errlen);
        free(text);
        if (rc < 0)
            return -1;
    }
    return load_rest(c, err, errlen);
}

int config_load_text(struct config *c, const char *text, size_t len, const char *name, char *err,
                     size_t errlen)
{
    if (load_defaults(c, err, errlen) < 0)
        return -1;
    if (text) {
        /* The parser writes into its text; util's xstrndup copies all len bytes, NULs too. */
        char *copy = xstrndup(text, len);
        int rc = load_text(c, copy, len, name ? name : "(text)", err, errlen);
        free(copy);
        if (rc < 0)
            return -1;
    }
    return load_rest(c, err, errlen);
}

int config_check_run(const struct config *c, char *err, size_t errlen)
{
    if (!c->api_key || !*c->api_key) {
        snprintf(err, errlen,
                 "APCA_API_KEY_ID: not set (environment, --config file or "
                 "$CREDENTIALS_DIRECTORY/alpaca_key_id)");
        return -1;
    }
    if (!c->api_secret || !*c->api_secret) {
        snprintf(err, errlen,
                 "APCA_API_SECRET_KEY: not set (environment, --config file or "
                 "$CREDENTIALS_DIRECTORY/alpaca_secret_key)");
        return -1;
    }
    if (strncmp(c->data_url, "http://", 7) != 0 && strncmp(c->data_url, "https://", 8) != 0) {
        snprintf(err, errlen, "APCA_API_DATA_URL: must start with http:// or https://, got \"%s\"",
                 c->data_url);
        return -1;
    }
    if (strncmp(c->base_url, "http://", 7) != 0 && strncmp(c->base_url, "https://", 8) != 0) {
        snprintf(err, errlen, "APCA_API_BASE_URL: must start with http:// or https://, got \"%s\"",
                 c->base_url);
        return -1;
    }
    return 0;
}

void config_free(struct config *c)
{
    for (const struct cfg_key *k = cfg_keys; k->name; k++) {
        if (k->type == CFG_STR) {
            char **p = (char **)((char *)c + k->offset);
            free(*p);
            *p = NULL;
        }
    }
}

void config_apply_reload(struct config *cur, const struct config *next,
                         void (*cb)(const char *key, bool applied, void *arg), void *arg)
{
    for (const struct cfg_key *k = cfg_keys; k->name; k++) {
        char *a = (char *)cur + k->offset;
        const char *b = (const char *)next + k->offset;
        bool changed;
        switch (k->type) {
        case CFG_STR:
            changed = strcmp(*(char **)a, *(char *const *)b) != 0;
            break;
        case CFG_INT:
            changed = *(int64_t *)a != *(const int64_t *)b;
            break;
        case CFG_DBL:
            changed = *(double *)a != *(const double *)b;
            break;
        case CFG_BOOL:
            changed = *(bool *)a != *(const bool *)b;
            break;
        default:
            changed = *(int *)a != *(const int *)b;
        }
        if (!changed)
            continue;
        if (k->reloadable) {
            if (k->type == CFG_STR) {
                free(*(char **)a);
                *(char **)a = xstrdup(*(char *const *)b);
            } else if (k->type == CFG_INT) {
                *(int64_t *)a = *(const int64_t *)b;
            } else if (k->type == CFG_DBL) {
                *(double *)a = *(const double *)b;
            } else if (k->type == CFG_BOOL) {
                *(bool *)a = *(const bool *)b;
            } else {
                *(int *)a = *(const int *)b;
            }
        }
        if (cb)
            cb(k->name, k->reloadable, arg);
    }
}
