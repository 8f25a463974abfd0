/* OSU-style micro-benchmark of the collectives data parallelism and ZeRO
 * use: MPI_Allreduce, MPI_Reduce_scatter_block and MPI_Allgather of float
 * vectors from 8 B to --max-bytes (powers of two).
 *
 *   mpirun -np P build/float/bench/bench_collectives OUT_DIR [--max-bytes N]
 *          [--iterations N] [--warmup N]
 *
 * Per collective and size: warm-up calls (not timed), then each timed call
 * after an MPI_Barrier, measured with MPI_Wtime; a rank's time is its mean
 * per call; min/avg/max are over ranks. "bytes" is always the whole vector:
 * what Allreduce reduces, what Reduce_scatter_block reduces (each rank keeps
 * bytes/P), what Allgather assembles (each rank gives bytes/P). Writes
 * OUT_DIR/collectives_npP.csv (one header line, one row per collective and
 * size; rank 0, through a temporary file) and prints the same. Used by
 * bench/bench_scaling.sh and the performance model
 * (analysis/perf_model.py, docs/scaling-model.md). */
#include <errno.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { ALLREDUCE, REDUCE_SCATTER_BLOCK, ALLGATHER, N_COLLECTIVES } collective;
static const char *const collective_names[N_COLLECTIVES] = {"allreduce", "reduce_scatter_block",
                                                            "allgather"};

typedef struct options {
    const char *out_dir;
    long max_bytes, iterations, warmup;
} options;

static int call(collective c, float *send, float *recv, int count, int per_rank, MPI_Comm comm) {
    switch (c) {
    case ALLREDUCE:
        return MPI_Allreduce(send, recv, count, MPI_FLOAT, MPI_SUM, comm);
    case REDUCE_SCATTER_BLOCK:
        return MPI_Reduce_scatter_block(send, recv, per_rank, MPI_FLOAT, MPI_SUM, comm);
    default:
        return MPI_Allgather(send, per_rank, MPI_FLOAT, recv, per_rank, MPI_FLOAT, comm);
    }
}

/* Mean seconds per call on this rank; -1 if a call failed. */
static double time_calls(collective c, float *send, float *recv, int count, int per_rank,
                         long warmup, long iterations, MPI_Comm comm) {
    for (long i = 0; i < warmup; i++)
        if (call(c, send, recv, count, per_rank, comm) != MPI_SUCCESS) return -1;
    double total = 0;
    for (long i = 0; i < iterations; i++) {
        if (MPI_Barrier(comm) != MPI_SUCCESS) return -1;
        double t0 = MPI_Wtime();
        if (call(c, send, recv, count, per_rank, comm) != MPI_SUCCESS) return -1;
        total += MPI_Wtime() - t0;
    }
    return total / (double)iterations;
}

static bool parse(int argc, char **argv, options *o) {
    *o = (options){.max_bytes = 16L << 20, .iterations = 100, .warmup = 10};
    for (int i = 1; i < argc; i++) {
        long *target = !strcmp(argv[i], "--max-bytes")    ? &o->max_bytes
                       : !strcmp(argv[i], "--iterations") ? &o->iterations
                       : !strcmp(argv[i], "--warmup")     ? &o->warmup
                                                          : NULL;
        if (target) {
            char *end = NULL;
            if (i + 1 == argc || (*target = strtol(argv[++i], &end, 10), *end) || *target < 0)
                return false;
        } else if (argv[i][0] == '-' || o->out_dir) {
            return false;
        } else {
            o->out_dir = argv[i];
        }
    }
    return o->out_dir && o->max_bytes >= 8 && o->iterations >= 1;
}

int main(int argc, char **argv) {
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 1;
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank, ranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);
    options o;
    if (!parse(argc, argv, &o)) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np P bench_collectives OUT_DIR [--max-bytes N] "
                            "[--iterations N] [--warmup N]\n");
        MPI_Finalize();
        return 2;
    }
    long max_count = o.max_bytes / (long)sizeof(float);
    float *send = malloc((size_t)max_count * sizeof *send);
    float *recv = malloc((size_t)max_count * sizeof *recv);
    int ok = send && recv, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
    if (!all_ok) {
        fprintf(stderr, "bench_collectives: rank %d: out of memory for %ld bytes\n", rank,
                o.max_bytes);
        MPI_Abort(comm, 1);
    }
    for (long i = 0; i < max_count; i++) send[i] = (float)(i % 97) * 0.01f;

    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/collectives_np%d.csv", o.out_dir, ranks);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = NULL;
    if (rank == 0) {
        if (mkdir(o.out_dir, 0777) != 0 && errno != EEXIST)
            fprintf(stderr, "bench_collectives: cannot create %s: %s\n", o.out_dir,
                    strerror(errno));
        else if (!(out = fopen(tmp, "w")))
            fprintf(stderr, "bench_collectives: cannot write %s: %s\n", tmp, strerror(errno));
    }
    ok = rank != 0 || out;
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    if (!ok) MPI_Abort(comm, 1);
    const char *header = "collective,ranks,bytes,iterations,min_us,avg_us,max_us\n";
    if (rank == 0) {
        fputs(header, out);
        fputs(header, stdout);
    }
    for (long bytes = 8; bytes <= o.max_bytes; bytes *= 2) {
        /* whole vector a multiple of the rank count, at least one float each */
        int per_rank = (int)(bytes / (long)sizeof(float) / ranks);
        if (per_rank < 1) per_rank = 1;
        int count = per_rank * ranks;
        if ((long)count > max_count) break;
        /* fewer timed calls for large messages, as OSU does */
        long iterations = o.iterations, warmup = o.warmup;
        if (bytes > (1L << 20)) {
            iterations = iterations * (1L << 20) / bytes;
            warmup = warmup * (1L << 20) / bytes;
        }
        if (iterations < 5) iterations = 5;
        if (warmup < 1) warmup = 1;
        for (int c = 0; c < N_COLLECTIVES; c++) {
            double mine =
                time_calls((collective)c, send, recv, count, per_rank, warmup, iterations, comm);
            double lo, hi, sum;
            MPI_Allreduce(&mine, &lo, 1, MPI_DOUBLE, MPI_MIN, comm);
            MPI_Allreduce(&mine, &hi, 1, MPI_DOUBLE, MPI_MAX, comm);
            MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, comm);
            if (lo < 0) {
                if (rank == 0)
                    fprintf(stderr, "bench_collectives: %s failed\n", collective_names[c]);
                MPI_Abort(comm, 1);
            }
            if (rank == 0) {
                char row[256];
                snprintf(row, sizeof row, "%s,%d,%ld,%ld,%.3f,%.3f,%.3f\n", collective_names[c],
                         ranks, (long)count * (long)sizeof(float), iterations, 1e6 * lo,
                         1e6 * sum / ranks, 1e6 * hi);
                fputs(row, out);
                fputs(row, stdout);
            }
        }
    }
    int status = 0;
    if (rank == 0) {
        bool written = !ferror(out);
        written = fclose(out) == 0 && written && rename(tmp, path) == 0;
        if (!written) {
            fprintf(stderr, "bench_collectives: cannot write %s: %s\n", path, strerror(errno));
            remove(tmp);
            status = 1;
        }
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, comm);
    free(send);
    free(recv);
    MPI_Finalize();
    return status;
}
