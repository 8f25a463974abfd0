#include "parallel/data_parallel.h"

#include <limits.h>

void ts_shard_range(long total, int rank, int n, long *first, long *count) {
    long base = total / n, extra = total % n;
    *count = base + (rank < extra ? 1 : 0);
    *first = rank * base + (rank < extra ? rank : extra);
}

int ts_allreduce_sum(MPI_Comm comm, ts_real *buf, long n) {
    /* MPI counts are int: reduce in pieces so buffers over 2^31 elements work. */
    for (long done = 0; done < n;) {
        long piece = n - done < INT_MAX ? n - done : INT_MAX;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + done, (int)piece, TS_MPI_REAL, MPI_SUM, comm);
        if (rc != MPI_SUCCESS) return rc;
        done += piece;
    }
    return MPI_SUCCESS;
}

int ts_allreduce_sum_double(MPI_Comm comm, double *buf, int n) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, comm);
}
