#include <stdio.h>

#include "cli/commands.h"
#include "engine/real.h"

#ifndef TS_GIT_COMMIT
#define TS_GIT_COMMIT "unknown"
#endif

int ts_cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("thinkscale %s (element type %s)\n", TS_GIT_COMMIT, TS_REAL_NAME);
    return 0;
}
