/* Where, how and by what a run's outputs were produced (host, ranks, threads,
 * git commit, compiler, library versions, every SLURM_* variable), collected
 * once and written as attributes into any HDF5 output. Status codes and
 * messages follow io/h5_toolkit.h. */
#ifndef TS_PROVENANCE_H
#define TS_PROVENANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>
#include <mpi.h>

#include "io/h5_toolkit.h"

/* ---------------------------------------------------------------- provenance */

typedef struct ts_provenance {
    char hostname[256];    /* rank 0's host name */
    int ranks;             /* size of the communicator it was collected on */
    int nodes;             /* distinct host names among those ranks */
    int threads_per_rank;  /* compute threads of each rank (BLAS threads by default) */
    char git_commit[64];   /* ts_git_commit (build_info.h) */
    char compiler[128];    /* e.g. "gcc 12.2.0", from __VERSION__ */
    char element_type[16]; /* "float" or "double": the build's ts_real */
    char hdf5_version[32]; /* the HDF5 library linked at run time */
    char mpi_library[256]; /* MPI_Get_library_version, first line */
    char blas_core[64];    /* openblas_get_corename(): the kernels OpenBLAS chose for the CPU */
    char created_utc[32];  /* ISO 8601, e.g. "2024-05-01T12:00:00Z" */
    int slurm_count;       /* number of SLURM_* variables in slurm */
    char *slurm;           /* "NAME=value\0NAME=value\0...", rank 0's environment; owned */
    size_t slurm_bytes;
} ts_provenance;

/* Collective over comm: every rank ends with identical contents (rank 0's
 * host name, environment and clock), so the attributes written from them are
 * the same on every rank, as parallel HDF5 requires. threads_per_rank <= 0
 * records OpenBLAS's thread count. Free with ts_provenance_free. */
ts_io_status ts_provenance_collect(MPI_Comm comm, int threads_per_rank, ts_provenance *prov,
                                   char *err, size_t errlen);
void ts_provenance_free(ts_provenance *prov);

/* Writes the fields as attributes of loc (hostname, ranks, nodes,
 * threads_per_rank, git_commit, compiler, element_type, hdf5_version,
 * mpi_library, blas_core, created_utc) and every SLURM_* variable as a string attribute
 * of the group slurm_group, a path relative to loc that is created with any
 * missing intermediate groups (e.g. "provenance/slurm"). With a file opened
 * by the MPI-IO driver, every rank must call it with the same arguments. */
ts_io_status ts_provenance_write(hid_t loc, const char *slurm_group, const ts_provenance *prov,
                                 const char *file_for_errors, char *err, size_t errlen);

#endif
