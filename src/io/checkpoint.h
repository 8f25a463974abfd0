/* Checkpoints: one shared HDF5 file per saved step, written by every rank
 * through MPI-IO with collective transfers, and restored on any number of
 * ranks. The layout, the integrity checks and the atomic protocol are
 * specified in docs/checkpoint-format.md; in short:
 *
 *   run_dir/checkpoint_00001200.h5           the data (h5py-readable)
 *   run_dir/checkpoint_00001200.h5.complete  completion marker (file size)
 *
 * A checkpoint is written as checkpoint_STEP.h5.tmp, flushed and closed by
 * all ranks, renamed by rank 0 and only then marked complete, so a process
 * killed at any point leaves every earlier complete checkpoint intact and
 * ts_checkpoint_find_latest never returns a partial one.
 *
 * Data parallelism is assumed: parameters, moments, RNG state and replicated
 * extras are identical on every rank. Each rank writes a contiguous share of
 * every dataset; every rank reads all of it.
 *
 * All functions are collective over comm (every rank calls them with the same
 * arguments, except for per-rank extras' data) and return the same status
 * and message on every rank. None prints or exits; HDF5's error printing is
 * off during each call and restored afterwards. */
#ifndef TS_CHECKPOINT_H
#define TS_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "engine/real.h"
#include "io/provenance.h"
#include "models/param_table.h"

#define TS_CHECKPOINT_FORMAT_VERSION 1
#define TS_CHECKPOINT_PATH_MAX 4096

/* Architecture-specific state saved next to the parameters as
 * /extras/<name>. */
typedef enum ts_ckpt_type {
    TS_CKPT_REAL,   /* ts_real (float or double, as the build) */
    TS_CKPT_INT64,  /* int64_t */
    TS_CKPT_UINT64, /* uint64_t */
} ts_ckpt_type;

typedef enum ts_ckpt_layout {
    /* Identical on every rank; stored once as a 1-D dataset [count]. */
    TS_CKPT_REPLICATED,
    /* Each rank has its own count elements (e.g. a replay buffer); stored as a
     * 2-D dataset [ranks, count], row r from rank r. Loading requires the same
     * number of ranks as writing: rows cannot be redistributed without knowing
     * what they mean, so a different count is a TS_IO_ERR_MISMATCH. */
    TS_CKPT_PER_RANK,
} ts_ckpt_layout;

typedef struct ts_checkpoint_extra {
    const char *name; /* a single HDF5 name: no '/', not "." */
    ts_ckpt_type type;
    ts_ckpt_layout layout;
    long count;              /* elements (on each rank, for TS_CKPT_PER_RANK); may be 0 */
    void *data;              /* write: read from; read: filled (count elements) */
    const char *units;       /* optional attribute, NULL for none */
    const char *description; /* optional attribute, NULL for none */
} ts_checkpoint_extra;

/* The training state beside the parameters. */
typedef struct ts_checkpoint_state {
    long step;               /* optimiser steps taken; names the file */
    int64_t tokens_seen;     /* training tokens consumed, all ranks */
    int64_t data_position;   /* where the data loader resumes */
    uint64_t *rng;           /* rng_words words: written from; on read, filled */
    int rng_words;           /* on read must equal the stored count */
    const char *config_text; /* write: the full resolved configuration (rank 0's is
                              * stored); read: ignored, see ts_checkpoint_read_info */
} ts_checkpoint_state;

typedef struct ts_checkpoint_options {
    int keep_last;                   /* after completion, keep this many complete checkpoints
                                      * with step <= the new one (the new one included) and
                                      * delete older ones; <= 0 keeps all */
    bool overwrite;                  /* replace a complete checkpoint of the same step
                                      * (otherwise that is TS_IO_ERR_EXISTS) */
    int threads_per_rank;            /* recorded in the provenance; <= 0: OpenBLAS's count */
    const ts_provenance *provenance; /* NULL: collected during the call */
    size_t max_piece_bytes;          /* largest transfer of one rank in one HDF5 call; 0: 1 GiB.
                                      * Keeps each MPI-IO request under 2 GB; tests make it tiny
                                      * to exercise multi-round transfers */
} ts_checkpoint_options;

/* What a write or read moved, for allocation reports (sizes, bandwidth). */
typedef struct ts_checkpoint_report {
    char path[TS_CHECKPOINT_PATH_MAX];
    long step;
    int64_t bytes;        /* size of the checkpoint file */
    double io_seconds;    /* HDF5 create..flush+close (write) or open..close (read), slowest rank */
    double total_seconds; /* the whole call, including rename, marker and pruning */
    double bandwidth;     /* bytes per second: write, file bytes / io_seconds; read, the
                           * bytes this rank loaded (a replica) / io_seconds */
    int removed;          /* older checkpoints deleted by keep_last (write) */
} ts_checkpoint_report;

/* What a checkpoint holds, without loading it: enough to rebuild the model
 * and optimiser before ts_checkpoint_read. */
typedef struct ts_checkpoint_info {
    long step;
    int64_t tokens_seen;
    int64_t data_position;
    int ranks;           /* ranks that wrote it */
    int param_count;     /* tensors */
    int64_t param_total; /* elements in the flat parameter buffer */
    int rng_words;
    bool has_adam_m, has_adam_v;
    char element_type[16]; /* "float" or "double" */
    char *config_text;     /* malloc'd; ts_checkpoint_info_free */
    int64_t bytes;
} ts_checkpoint_info;

/* "run_dir/checkpoint_%08ld.h5" into path; TS_IO_ERR_ARGS if it does not fit. */
ts_io_status ts_checkpoint_path(char *path, size_t pathlen, const char *run_dir, long step,
                                char *err, size_t errlen);

/* Writes the checkpoint for state->step into run_dir (created if missing, its
 * parent must exist). adam_m and adam_v may be NULL (e.g. SGD) and are then
 * not stored. report may be NULL. Fails with TS_IO_ERR_EXISTS, touching
 * nothing, if that step already has a complete checkpoint and
 * options->overwrite is not set; with TS_IO_ERR_ARGS if the parameters (or
 * moments, RNG, replicated extras) differ between ranks, since the file
 * would then be a mixture of replicas that no rank ever held. A failure
 * before the new checkpoint is complete creates, changes or deletes no
 * complete checkpoint (other than the one options->overwrite replaces); a
 * failure while deleting old ones (keep_last) is reported with the new
 * checkpoint already complete. */
ts_io_status ts_checkpoint_write(MPI_Comm comm, const char *run_dir, const ts_param_table *table,
                                 const ts_real *params, const ts_real *adam_m,
                                 const ts_real *adam_v, const ts_checkpoint_state *state,
                                 const ts_checkpoint_extra *extras, int n_extras,
                                 const ts_checkpoint_options *options, ts_checkpoint_report *report,
                                 char *err, size_t errlen);

/* The newest complete checkpoint in run_dir: path and step. Files without a
 * completion marker (killed mid-write, *.tmp) are ignored. Returns
 * TS_IO_NOT_FOUND when there is none, TS_IO_ERR_MISSING when run_dir cannot
 * be read. step may be NULL. */
ts_io_status ts_checkpoint_find_latest(MPI_Comm comm, const char *run_dir, char *path,
                                       size_t pathlen, long *step, char *err, size_t errlen);

/* Header of a complete checkpoint (checked like ts_checkpoint_read's first
 * stage: marker, size, format). Free with ts_checkpoint_info_free. */
ts_io_status ts_checkpoint_read_info(MPI_Comm comm, const char *path, ts_checkpoint_info *info,
                                     char *err, size_t errlen);
void ts_checkpoint_info_free(ts_checkpoint_info *info);

/* Loads a complete checkpoint into the caller's buffers (table->total
 * elements each). Before any data is read, the file must match the caller
 * exactly: the same tensor names, shapes and offsets as table, the same
 * element type as this build, moments present for each non-NULL adam_m /
 * adam_v, state->rng_words RNG words, and every requested extra with the same
 * type, layout and count (per-rank extras: the same number of ranks).
 * Afterwards every role is checked against its stored checksum. A mismatch
 * names the tensor (or dataset) and both shapes. state, extras and report
 * may be NULL / 0. On failure the buffers' contents are unspecified; the
 * file is never modified. */
ts_io_status ts_checkpoint_read(MPI_Comm comm, const char *path, const ts_param_table *table,
                                ts_real *params, ts_real *adam_m, ts_real *adam_v,
                                ts_checkpoint_state *state, ts_checkpoint_extra *extras,
                                int n_extras, ts_checkpoint_report *report, char *err,
                                size_t errlen);

/* ts_checkpoint_find_latest then ts_checkpoint_read: what --resume does.
 * TS_IO_NOT_FOUND (state untouched) when run_dir has no complete checkpoint. */
ts_io_status ts_checkpoint_read_latest(MPI_Comm comm, const char *run_dir,
                                       const ts_param_table *table, ts_real *params,
                                       ts_real *adam_m, ts_real *adam_v, ts_checkpoint_state *state,
                                       ts_checkpoint_extra *extras, int n_extras,
                                       ts_checkpoint_report *report, char *err, size_t errlen);

#endif
