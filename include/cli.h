/*
 * cli: the one-shot commands — migrate, enqueue, status, check-config. They
 * talk to Postgres synchronously (they are not in the event loop) and return
 * sysexits codes. `status --watch` and `enqueue --wait` poll once an interval
 * until they are done or a signal stops them (see each command's --help).
 */
#ifndef BACKFILLD_CLI_H
#define BACKFILLD_CLI_H

#include "config.h"

/* sysexits.h values, spelled out so the meaning is visible where they are used. */
enum {
    EXIT_OK = 0,
    EXIT_RUNS_FAILED = 1, /* enqueue --wait: a run it waited for did not succeed */
    EXIT_USAGE = 64,
    EXIT_DATAERR = 65,
    EXIT_UNAVAILABLE = 69,
    EXIT_SOFTWARE = 70,
    EXIT_CONFIG = 78,
};

int cli_migrate(const struct config *c, int argc, char **argv);
int cli_enqueue(const struct config *c, int argc, char **argv);
int cli_status(const struct config *c, int argc, char **argv);
int cli_check_config(const struct config *c, int argc, char **argv);

#endif
