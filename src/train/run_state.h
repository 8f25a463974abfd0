/* What a training run leaves in its run directory: metrics.h5 (rank 0) and
 * atomic checkpoints (all ranks), and how a run resumes from them. Keeps the
 * trainer free of file-format details. */
#ifndef TS_RUN_STATE_H
#define TS_RUN_STATE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "models/model.h"
#include "train/evaluate.h"
#include "io/provenance.h"
#include "parallel/strategy.h"
#include "parallel/tensor_grid.h"
#include "train/optimizer.h"

/* One optimiser step's metrics. Every double is a column of metrics.h5's
 * train table, named as the field (the table is in run_state.c). */
typedef struct ts_step_record {
    long step;
    double tokens;
    double loss;
    double lr;
    double grad_norm;
    double wall_time; /* seconds since the run (or resumption) started */
    double flops;     /* executed this step, all ranks */
    double tokens_per_s;
    double mfu;                /* executed FLOP/s over the measured GEMM peak of all ranks */
    double collective_seconds; /* inside the data-parallel collectives, mean over ranks */
} ts_step_record;

/* What one rank holds for training, the largest over ranks, and what it
 * sends per step (parallel/strategy.h). Every double is a column of
 * metrics.h5's memory table, one row per invocation. */
typedef struct ts_memory_record {
    double parameters_bytes;
    double gradients_bytes;   /* the full backward buffer and any reduced shards */
    double optimizer_bytes;   /* AdamW's moments (of the owned range) */
    double activations_bytes; /* the engine arena's high water */
    double communicated_bytes_per_step;
} ts_memory_record;

typedef struct ts_metrics ts_metrics;

typedef struct ts_run_state {
    MPI_Comm comm;
    int rank;
    const ts_run_config *config;
    char *config_ini;
    ts_model *model;
    ts_optimizer *optimizer;
    const ts_parallel *parallel; /* who owns which moments (checkpoint ranges) */
    const ts_tensor_grid *grid;  /* the group a distributed model (model->layout) spans, or NULL */
    ts_metrics *metrics;         /* rank 0 only */
    ts_provenance provenance;
    bool provenance_set;
    double last_checkpoint_bytes;     /* of the last checkpoint written (0: none yet) */
    double last_checkpoint_bandwidth; /* bytes/s */
    double restored_bytes; /* file size of the checkpoint this invocation resumed from (0: none) */
    double restored_seconds; /* its read, open..close, slowest rank */
    bool write_failed;       /* a checkpoint or metrics.h5 could not be written (full disk, quota,
                              * I/O error); metrics failures are known on rank 0 only */
} ts_run_state;

/* The exit status of a run that stopped because a result could not be
 * written: a full file system, an exceeded quota, an I/O error. Earlier
 * complete checkpoints are intact; free space and --resume. */
#define TS_EXIT_WRITE_FAILED TS_IO_EXIT_STRANDED

/* Creates the run directory, or with resume loads the newest complete
 * checkpoint in it that verifies (one that fails verification is reported
 * on stderr and the next older one tried), or the checkpoint file
 * resume_from when it is not NULL; step and tokens are set from it, 0
 * otherwise. A fresh run refuses a directory that already holds checkpoints
 * or metrics, so no result is ever overwritten. Collective. */
bool ts_run_state_open(ts_run_state *state, MPI_Comm comm, const ts_run_config *config,
                       ts_model *model, ts_optimizer *optimizer, const ts_parallel *parallel,
                       const ts_tensor_grid *grid, bool resume, const char *resume_from, long *step,
                       double *tokens, char *err, size_t errlen);
/* stats: the model's ops->n_stats statistics of the step. */
bool ts_run_state_log_step(ts_run_state *state, const ts_step_record *record, const double *stats,
                           char *err, size_t errlen);
bool ts_run_state_log_memory(ts_run_state *state, long step, const ts_memory_record *record,
                             char *err, size_t errlen);
bool ts_run_state_log_eval(ts_run_state *state, long step, const char *set,
                           const ts_eval_result *result, char *err, size_t errlen);
/* Collective. A failed write sets state->write_failed; one that strands
 * other ranks inside an HDF5 collective ends the job (MPI_Abort with
 * TS_EXIT_WRITE_FAILED) after removing the partial file. */
bool ts_run_state_checkpoint(ts_run_state *state, long step, double tokens, char *err,
                             size_t errlen);
/* Collective, after a failure every rank agreed on: TS_EXIT_WRITE_FAILED
 * when a write of the run's files (metrics.h5 on rank 0, a checkpoint)
 * failed on any rank, else 1. */
int ts_run_state_failure_status(ts_run_state *state);
void ts_run_state_close(ts_run_state *state);

#endif
