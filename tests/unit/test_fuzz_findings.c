/*
 * Regression tests for what the fuzz targets in tests/fuzz found, one test
 * per finding, each reproducing it through the public API the daemon uses
 * (the fuzz targets themselves need clang and run only in make fuzz and
 * make test's smoke). The inputs are also kept in the seed corpus.
 *
 * config_load() reads the whole environment, so the group setup unsets
 * every variable it looks at; the unit tests run in a process of their own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

#include "../env_clear.h"

#define ERRLEN 512

static int clear_env(void **state)
{
    env_clear_settings();
    return 0;
}

/* Writes text to a new temp file, whose name is left in path. */
static void write_temp(char path[64], const char *text)
{
    snprintf(path, 64, "/tmp/backfilld-fuzz-finding-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/*
 * fuzz_config's round-trip invariant (write the loaded settings out, load
 * them again, nothing may change): an unquoted 8171-byte worker id loaded,
 * but written back with quotes it failed with "unbalanced quotes". Lines were
 * cut after 8191 bytes and the tail read as a line of its own. Worse, a tail
 * that began with '#' was a comment, so a long value (here a CA bundle path)
 * was kept cut short without any error. A line may now be of any length,
 * through the file and the text entry point alike.
 */
static void test_config_long_line_is_one_line(void **state)
{
    const char *key = "BACKFILLD_CA_FILE=";
    size_t vlen = 9000;
    char *value = xmalloc(vlen + 1);
    memset(value, 'x', vlen);
    memcpy(value, "/etc/ssl/", 9);
    /* Where the old 8 KiB buffer ended, the value goes on with a '#'. */
    value[8191 - strlen(key)] = '#';
    value[vlen] = '\0';

    dynbuf_t text;
    dynbuf_init(&text, SIZE_MAX);
    assert_int_equal(dynbuf_printf(&text, "%s%s\nBACKFILLD_CONCURRENCY=7\n", key, value), 0);
    char path[64];
    write_temp(path, text.data);

    struct config c;
    char err[ERRLEN] = "";
    assert_int_equal(config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.ca_file, value);
    assert_int_equal(c.concurrency, 7);
    config_free(&c);

    assert_int_equal(config_load_text(&c, text.data, text.len, "long.env", err, sizeof err), 0);
    assert_string_equal(c.ca_file, value);
    config_free(&c);

    /* The input that showed it: a quoted worker id whose closing quote fell past the cut. */
    dynbuf_reset(&text);
    memset(value, 'w', vlen);
    value[8171] = '\0';
    assert_int_equal(dynbuf_printf(&text, "BACKFILLD_WORKER_ID=\"%s\"\n", value), 0);
    assert_int_equal(config_load_text(&c, text.data, text.len, "long.env", err, sizeof err), 0);
    assert_string_equal(c.worker_id, value);
    config_free(&c);

    log_clear_secrets();
    unlink(path);
    dynbuf_free(&text);
    free(value);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_long_line_is_one_line),
    };
    return cmocka_run_group_tests(tests, clear_env, NULL);
}
