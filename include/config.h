/*
 * config: every setting of backfilld, in one table.
 *
 * Sources, later ones winning: built-in defaults ← the KEY=VALUE file given
 * with --config (systemd EnvironmentFile= syntax) ← the environment ←
 * systemd credentials ($CREDENTIALS_DIRECTORY/alpaca_key_id,
 * alpaca_secret_key, database_url) for the secrets. Every value is checked
 * against its type and bounds at load time and an error names the key. A
 * misspelt BACKFILLD_* key is an error too, so a typo can't silently leave a
 * default in force. Secret values never appear in messages.
 */
#ifndef BACKFILLD_CONFIG_H
#define BACKFILLD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config {
    char *database_url; /* BACKFILLD_DATABASE_URL; empty = libpq's PG* variables */
    char *api_key;      /* APCA_API_KEY_ID (secret) */
    char *api_secret;   /* APCA_API_SECRET_KEY (secret) */
    char *data_url;     /* APCA_API_DATA_URL */
    char *base_url;     /* APCA_API_BASE_URL: the trading API (assets) */
    char *worker_id;    /* BACKFILLD_WORKER_ID; empty = host:pid:random */
    char *metrics_listen;
    char *ca_file;
    char *rate_limit_name;
    char *log_format; /* BACKFILLD_LOG_FORMAT: auto, json or text (checked at load) */
    int64_t concurrency;
    int64_t claim_batch;
    int64_t batch_symbols;
    int64_t poll_interval_ms;
    int64_t lease_seconds;
    int64_t rescue_interval_ms;
    int64_t schedule_interval_ms;
    int64_t run_retention_days;
    int64_t max_attempts;
    int64_t page_limit;
    int64_t page_retries;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t run_retry_base_ms;
    int64_t run_retry_max_ms;
    int64_t http_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t max_connections;
    int64_t max_pending_rows;
    int64_t writers;
    int64_t progress_interval_ms;
    int64_t shutdown_timeout_ms;
    double rate_limit; /* requests per minute */
    bool poll_only;
    int64_t settle_seconds; /* a bar is final this long after its close */
    bool sip_realtime;      /* else SIP younger than SIP_DELAY_SECONDS is not asked for */
    int log_level;
    int64_t upkeep_interval_ms;      /* calendar, corporate actions, ledger pass; 0 = off */
    int64_t corpactions_window_days; /* trailing re-read window of corporate actions */
    int64_t verify_sessions;         /* the ledger pass re-checks the last N sessions; 0 = off */
};

/* SIP younger than this is refused without a real-time plan (403). */
#define SIP_DELAY_SECONDS 900

enum cfg_type { CFG_STR, CFG_INT, CFG_DBL, CFG_BOOL, CFG_LEVEL };

struct cfg_key {
    const char *name;
    enum cfg_type type;
    const char *def;
    double min, max;
    bool reloadable;
    bool secret;
    size_t offset;
    const char *help;
};

/* The table itself, terminated by a NULL name; README's table mirrors it. */
extern const struct cfg_key cfg_keys[];

/*
 * Fills *c from defaults, the file (may be NULL) and the environment.
 * Returns 0, or -1 with one line naming the key in err. On error *c holds
 * whatever was loaded so far and must still be freed with config_free.
 */
int config_load(struct config *c, const char *file, char *err, size_t errlen);

/*
 * config_load with the file's contents given instead of its path: text[0..len)
 * (borrowed, not NUL-terminated, any bytes) is read as the --config file would
 * be, and name (borrowed; may be NULL) stands for the path in messages.
 * text NULL means no file. Defaults, the environment, credentials, the checks
 * and the error contract are config_load's; config_load reads the file and
 * parses it with the same code. Used by the fuzz target.
 */
int config_load_text(struct config *c, const char *text, size_t len, const char *name, char *err,
                     size_t errlen);

/* Checks what `run` needs beyond the generic checks (credentials, URL). */
int config_check_run(const struct config *c, char *err, size_t errlen);

/* Frees the strings *c owns. */
void config_free(struct config *c);

/*
 * Copies the reloadable keys of `next` into `cur` and reports, through cb,
 * each key whose value changed (applied=true) or that changed but cannot be
 * reloaded (applied=false). Secrets are compared but never reported by value.
 */
void config_apply_reload(struct config *cur, const struct config *next,
                         void (*cb)(const char *key, bool applied, void *arg), void *arg);

#endif
