#include <stdio.h>

#include "cli/commands.h"
#include "engine/real.h"

#include "io/build_info.h"

int ts_cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const char *blas_core = openblas_get_corename();
    printf("thinkscale %s (element type %s, OpenBLAS kernels %s)\n", ts_git_commit, TS_REAL_NAME,
           blas_core ? blas_core : "unknown");
    return 0;
}
