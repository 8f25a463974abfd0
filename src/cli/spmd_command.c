#include "cli/spmd_command.h"

#include <string.h>

int ts_run_spmd_command(const ts_spmd_command *command, int argc, char **argv, void *args) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        command->usage(stdout);
        return 0;
    }
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "thinkscale %s: MPI_Init failed\n", command->name);
        return 1;
    }
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char err[1024] = "";
    int status;
    if (!command->parse(argc, argv, args, err, sizeof err)) {
        if (rank == 0) {
            fprintf(stderr, "thinkscale %s: error: %s\n", command->name, err);
            command->usage(stderr);
        }
        status = 2;
    } else {
        status = command->run(MPI_COMM_WORLD, args);
    }
    MPI_Finalize();
    return status;
}
