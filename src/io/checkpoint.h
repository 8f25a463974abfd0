/* Checkpoints: one shared HDF5 file per saved step, written by every rank
 * through MPI-IO with collective transfers, and restored on any number of
 * ranks. The layout, the integrity checks and the atomic protocol are
 * specified in docs/checkpoint-format.md; in short:
 *
 *   run_dir/checkpoint_00001200.h5           the data (h5py-readable)
 *   run_dir/checkpoint_00001200.h5.complete  completion marker (file size)
 *
 * What a checkpoint holds is a list of roles (core/saved_state.h): the
 * parameters, optimiser moments, RNG streams, an architecture's own state,
 * each with its type and layout (replicated, per-rank, or sharded as a range
 * per rank). The caller passes the list; the same list (same names, types,
 * layouts and counts) reads it back. Roles of the file that a reader does not
 * ask for are not read (an evaluation loads the parameters only).
 *
 * Published through io/atomic_commit.h: written as checkpoint_STEP.h5.tmp,
 * flushed and closed by all ranks, renamed by rank 0 and only then marked
 * complete, so a process killed at any point leaves every earlier complete
 * checkpoint intact and ts_checkpoint_find_latest never returns a partial one.
 *
 * All functions are collective over comm (every rank calls them with the same
 * arguments, except for the data and shard ranges of its roles) and return
 * the same status and message on every rank, except TS_IO_ERR_STRANDED (a
 * failure inside HDF5's own collectives; the caller must end the job). None
 * prints or exits, except the watch of a close stuck after a failed write
 * (ts_checkpoint_options.stuck_close_seconds, docs/reliability.md); HDF5's
 * error printing is off during each call and restored afterwards.
 *
 * The implementation is split by responsibility: checkpoint.c (the write and
 * read sequences), checkpoint_files.c (names, the directory, publishing and
 * pruning), checkpoint_transfer.c (collective MPI-IO transfers),
 * checkpoint_schema.c (the on-disk layout of roles) and checkpoint_replicas.c
 * (checksums, and that replicas agree across ranks). */
#ifndef TS_CHECKPOINT_H
#define TS_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "core/saved_state.h"
#include "engine/real.h"
#include "io/h5_toolkit.h"
#include "io/provenance.h"

/* Version 2 stores every role with its layout and type attributes and adds
 * the sharded layout; version 1 files (no layout attribute outside /extras,
 * a data_position attribute, /state/rng) are still read. */
#define TS_CHECKPOINT_FORMAT_VERSION 2
#define TS_CHECKPOINT_PATH_MAX 4096
/* Roles in one checkpoint, at most. */
#define TS_CHECKPOINT_MAX_ROLES 64

/* The training state besides the roles: root attributes of the file. */
typedef struct ts_checkpoint_state {
    long step;               /* optimiser steps taken; names the file */
    int64_t tokens_seen;     /* training tokens consumed, all ranks */
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
    int stuck_close_seconds;         /* after a failed write, a close (HDF5's collective metadata
                                      * flush) not done in this many seconds ends the process
                                      * with TS_IO_EXIT_STRANDED; <= 0: 30 */
} ts_checkpoint_options;

/* What a write or read moved, for allocation reports (sizes, bandwidth). */
typedef struct ts_checkpoint_report {
    char path[TS_CHECKPOINT_PATH_MAX];
    long step;
    int64_t bytes;        /* size of the checkpoint file */
    double io_seconds;    /* HDF5 create..flush+close (write) or open..close (read), slowest rank */
    double total_seconds; /* the whole call, including rename, marker and pruning */
    double bandwidth;     /* bytes per second: write, file bytes / io_seconds; read, the
                           * bytes this rank loaded / io_seconds */
    int removed;          /* older checkpoints deleted by keep_last (write) */
} ts_checkpoint_report;

/* What a checkpoint holds, without loading it: enough to rebuild the model
 * and optimiser before ts_checkpoint_read. */
typedef struct ts_checkpoint_info {
    long step;
    int64_t tokens_seen;
    int format_version;
    int ranks;           /* ranks that wrote it */
    int param_count;     /* tensors of the "params" role */
    int64_t param_total; /* elements in the flat parameter buffer */
    int rng_words;       /* elements of a "state/rng" role (0: none; version 1 files have one) */
    bool has_adam_m, has_adam_v; /* "optimizer/m" and "optimizer/v" roles present */
    char element_type[16];       /* "float" or "double" */
    char *config_text;           /* malloc'd; ts_checkpoint_info_free */
    int64_t bytes;
} ts_checkpoint_info;

/* "run_dir/checkpoint_%08ld.h5" into path; TS_IO_ERR_ARGS if it does not fit. */
ts_io_status ts_checkpoint_path(char *path, size_t pathlen, const char *run_dir, long step,
                                char *err, size_t errlen);

/* Writes the checkpoint for state->step into run_dir (created if missing, its
 * parent must exist): the n_roles roles, each under its name. report may be
 * NULL. Fails with TS_IO_ERR_EXISTS, touching nothing, if that step already
 * has a complete checkpoint and options->overwrite is not set; with
 * TS_IO_ERR_ARGS if a replicated role differs between ranks (the file would
 * be a mixture of replicas that no rank ever held), if ranks disagree on the
 * roles, or if the shards of a sharded role do not tile it. A failure before
 * the new checkpoint is complete creates, changes or deletes no complete
 * checkpoint (other than the one options->overwrite replaces); a failure
 * while deleting old ones (keep_last) is reported with the new checkpoint
 * already complete. */
ts_io_status ts_checkpoint_write(MPI_Comm comm, const char *run_dir,
                                 const ts_checkpoint_state *state, const ts_saved_role *roles,
                                 int n_roles, const ts_checkpoint_options *options,
                                 ts_checkpoint_report *report, char *err, size_t errlen);

/* The newest complete checkpoint in run_dir: path and step. Files without a
 * completion marker (killed mid-write, *.tmp) are ignored. Returns
 * TS_IO_NOT_FOUND when there is none, TS_IO_ERR_MISSING when run_dir cannot
 * be read. step may be NULL. */
ts_io_status ts_checkpoint_find_latest(MPI_Comm comm, const char *run_dir, char *path,
                                       size_t pathlen, long *step, char *err, size_t errlen);

/* As ts_checkpoint_find_latest, among the complete checkpoints of a step
 * below before_step: what --resume falls back to when the newest one fails
 * verification. TS_IO_NOT_FOUND when there is none. */
ts_io_status ts_checkpoint_find_before(MPI_Comm comm, const char *run_dir, long before_step,
                                       char *path, size_t pathlen, long *step, char *err,
                                       size_t errlen);

/* The step of the newest completion marker in run_dir whose checkpoint file
 * is gone (deleted or moved by hand after it was written; the finders above
 * pass over it), its file's name in missing; -1 when there is none. Serial,
 * any rank: what a resume reports when it falls back past such a marker. */
long ts_checkpoint_newest_orphan_marker(const char *run_dir, char *missing, size_t missing_len);

/* Header of a complete checkpoint (checked like ts_checkpoint_read's first
 * stage: marker, size, format). Free with ts_checkpoint_info_free. */
ts_io_status ts_checkpoint_read_info(MPI_Comm comm, const char *path, ts_checkpoint_info *info,
                                     char *err, size_t errlen);
void ts_checkpoint_info_free(ts_checkpoint_info *info);

/* Loads the given roles of a complete checkpoint into their data buffers.
 * Before any data is read, the file must match the caller exactly: every
 * role present with the same type, layout and count (per-rank roles: the
 * same number of ranks; tensor roles: the same tensor names, shapes and
 * offsets), in this build's element type. Replicated and sharded layouts
 * are one 1-D array split differently, so either reads as the other (a
 * ZeRO run's sharded moments resume under ddp, and back). Afterwards every role is checked
 * against its stored checksums. A mismatch names the role (or tensor) and
 * both shapes. state and report may be NULL. On failure the buffers'
 * contents are unspecified; the file is never modified. */
ts_io_status ts_checkpoint_read(MPI_Comm comm, const char *path, ts_checkpoint_state *state,
                                const ts_saved_role *roles, int n_roles,
                                ts_checkpoint_report *report, char *err, size_t errlen);

/* ts_checkpoint_find_latest then ts_checkpoint_read: what --resume does.
 * TS_IO_NOT_FOUND (state untouched) when run_dir has no complete checkpoint. */
ts_io_status ts_checkpoint_read_latest(MPI_Comm comm, const char *run_dir,
                                       ts_checkpoint_state *state, const ts_saved_role *roles,
                                       int n_roles, ts_checkpoint_report *report, char *err,
                                       size_t errlen);

#endif
