/* main() for a cmocka suite run under mpirun.
 *
 * tests/run_tests.sh counts the cmocka summary lines in the combined output
 * of all ranks, and cmocka prints some of them to stdout, some to stderr. So
 * only rank 0 prints; the other ranks' output goes to a temporary file that
 * is replayed, each line prefixed "rank N: ", only if that rank failed. The
 * exit status is non-zero if any rank failed. */
#ifndef TS_MPI_CMOCKA_H
#define TS_MPI_CMOCKA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* Initialises and finalises MPI around the group; returns the exit status.
 * Before the group setup runs, *rank and *size (each may be NULL) are set to
 * this process's rank in MPI_COMM_WORLD and its size, which every suite's
 * tests read. */
int ts_mpi_cmocka_main(int argc, char **argv, const char *name, const struct CMUnitTest *tests,
                       size_t n_tests, int *rank, int *size, CMFixtureFunction setup,
                       CMFixtureFunction teardown);

#endif
