/* Data parallelism over MPI: which sequences of a global batch a rank owns,
 * and the one all-reduce per step over the whole flat gradient buffer. */
#ifndef TS_DATA_PARALLEL_H
#define TS_DATA_PARALLEL_H

#include <mpi.h>

#include "engine/real.h"

#ifdef TS_DOUBLE
#define TS_MPI_REAL MPI_DOUBLE
#else
#define TS_MPI_REAL MPI_FLOAT
#endif

/* Rank r of n owns sequences [*first, *first + *count) of a batch of `total`;
 * the first total % n ranks own one more. */
void ts_shard_range(long total, int rank, int n, long *first, long *count);

/* In-place sum over all ranks; returns the MPI error code (MPI_SUCCESS). */
int ts_allreduce_sum(MPI_Comm comm, ts_real *buf, long n);
int ts_allreduce_sum_double(MPI_Comm comm, double *buf, int n);

#endif
