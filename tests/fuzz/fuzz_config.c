/*
 * Fuzz target: the --config file parser (systemd EnvironmentFile= syntax),
 * through config_load_text, which is config_load without the file read.
 *
 * The file is the operator's, not the network's, but a typo or a stray byte
 * must end in a message naming the line, never in a crash or a setting out
 * of its bounds. Invariants: on success every key holds a value of its type
 * within the table's bounds and the cross-key checks hold; on failure the
 * message fits its buffer. And a round trip: writing the loaded settings
 * back out as a file (every value quoted or printed exactly) and loading
 * that must give the same settings, which config_apply_reload confirms by
 * reporting no key changed. The environment is emptied of every variable
 * config_load reads first, so only the input decides.
 */
#include "config.h"
#include "fuzz.h"
#include "../env_clear.h"
#include "log.h"
#include "util.h"

#include <math.h>

static const size_t errlens[] = {1, 64, 512};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    env_clear_settings();
    return 0;
}

static void count_change(const char *key, bool applied, void *arg)
{
    (*(size_t *)arg)++;
}

/* Every key within its type and bounds, as config.h promises after a successful load. */
static void check_loaded(const struct config *c)
{
    for (const struct cfg_key *k = cfg_keys; k->name; k++) {
        const char *field = (const char *)c + k->offset;
        switch (k->type) {
        case CFG_STR:
            FUZZ_CHECK(*(char *const *)field != NULL);
            break;
        case CFG_INT: {
            int64_t v = *(const int64_t *)field;
            FUZZ_CHECK(v >= (int64_t)k->min && v <= (int64_t)k->max);
            break;
        }
        case CFG_DBL: {
            double v = *(const double *)field;
            FUZZ_CHECK(isfinite(v) && v >= k->min && v <= k->max);
            break;
        }
        case CFG_BOOL:
            break;
        case CFG_LEVEL: {
            int v = *(const int *)field;
            FUZZ_CHECK(v >= LL_DEBUG && v <= LL_CRIT);
            break;
        }
        }
    }
    FUZZ_CHECK(strpbrk(c->worker_id, " \t\r\n") == NULL);
    FUZZ_CHECK(c->retry_base_ms <= c->retry_max_ms);
}

/* Writes *c as a file that loads back to the same settings: strings quoted, numbers exact. */
static void write_config(const struct config *c, dynbuf_t *out)
{
    for (const struct cfg_key *k = cfg_keys; k->name; k++) {
        const char *field = (const char *)c + k->offset;
        int rc = 0;
        switch (k->type) {
        case CFG_STR:
            rc = dynbuf_printf(out, "%s=\"%s\"\n", k->name, *(char *const *)field);
            break;
        case CFG_INT:
            rc = dynbuf_printf(out, "%s=%lld\n", k->name, (long long)*(const int64_t *)field);
            break;
        case CFG_DBL:
            rc = dynbuf_printf(out, "%s=%.17g\n", k->name, *(const double *)field);
            break;
        case CFG_BOOL:
            rc = dynbuf_printf(out, "%s=%s\n", k->name, *(const bool *)field ? "true" : "false");
            break;
        case CFG_LEVEL:
            rc = dynbuf_printf(out, "%s=%s\n", k->name, log_level_name(*(const int *)field));
            break;
        }
        FUZZ_CHECK(rc == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = fuzz_guarded_copy(data, size);
    size_t errlen = errlens[size % 3];
    char *err = malloc(errlen);
    struct config c, again;

    if (err == NULL)
        abort();
    int rc = config_load_text(&c, text, size, "fuzz.env", err, errlen);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        check_loaded(&c);
        dynbuf_t file;
        dynbuf_init(&file, SIZE_MAX);
        write_config(&c, &file);
        char err2[512];
        int rc2 = config_load_text(&again, file.data, file.len, "written.env", err2, sizeof err2);
        if (rc2 != 0)
            fprintf(stderr, "reloading the written file: %s\n", err2);
        FUZZ_CHECK(rc2 == 0);
        size_t changes = 0;
        config_apply_reload(&again, &c, count_change, &changes);
        FUZZ_CHECK(changes == 0);
        config_free(&again);
        dynbuf_free(&file);
    } else {
        FUZZ_CHECK(fuzz_terminated(err, errlen));
        FUZZ_CHECK(errlen == 1 || err[0] != '\0');
    }
    config_free(&c);
    log_clear_secrets();
    free(err);
    return 0;
}
