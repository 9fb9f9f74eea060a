/*
 * env_clear: removes every setting backfilld reads from the environment
 * (APCA_*, BACKFILLD_*, CREDENTIALS_DIRECTORY), so that a test or fuzz
 * target of the config parser sees only what it passes in. Shared by the
 * unit tests and the fuzz targets.
 */
#ifndef BACKFILLD_TESTS_ENV_CLEAR_H
#define BACKFILLD_TESTS_ENV_CLEAR_H

#include "util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static inline void env_clear_settings(void)
{
    /* Unset one variable at a time: unsetenv() changes environ under the loop. */
    for (bool again = true; again;) {
        again = false;
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (eq && (strncmp(*e, "APCA_", 5) == 0 || strncmp(*e, "BACKFILLD_", 10) == 0 ||
                       strncmp(*e, "CREDENTIALS_DIRECTORY=", 22) == 0)) {
                char *name = xstrndup(*e, (size_t)(eq - *e));
                unsetenv(name);
                free(name);
                again = true;
                break;
            }
        }
    }
}

#endif
