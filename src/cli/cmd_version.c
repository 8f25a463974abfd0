#include <stdio.h>

#include "cli/commands.h"
#include "engine/real.h"

#include "io/build_info.h"

int ts_cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("thinkscale %s (element type %s)\n", ts_git_commit, TS_REAL_NAME);
    return 0;
}
