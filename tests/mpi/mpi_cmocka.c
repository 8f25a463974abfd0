#include "mpi_cmocka.h"

#include <stdio.h>
#include <unistd.h>

#include <mpi.h>

int ts_mpi_cmocka_main(int argc, char **argv, const char *name, const struct CMUnitTest *tests,
                       size_t n_tests, int *world_rank, int *world_size, CMFixtureFunction setup,
                       CMFixtureFunction teardown) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (world_rank) *world_rank = rank;
    if (world_size) *world_size = size;
    FILE *log = NULL;
    int saved_stderr = -1;
    if (rank != 0) {
        fflush(stdout);
        fflush(stderr);
        log = tmpfile();
        saved_stderr = dup(STDERR_FILENO);
        if (!log || saved_stderr < 0 || dup2(fileno(log), STDOUT_FILENO) < 0 ||
            dup2(fileno(log), STDERR_FILENO) < 0) {
            fprintf(stderr, "%s: rank %d: cannot redirect output\n", name, rank);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    int failed = _cmocka_run_group_tests(name, tests, n_tests, setup, teardown);
    if (log) {
        fflush(stdout);
        fflush(stderr);
        if (failed) {
            char line[1024];
            rewind(log);
            while (fgets(line, sizeof line, log)) dprintf(saved_stderr, "rank %d: %s", rank, line);
        }
        fclose(log);
        close(saved_stderr);
    }
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
