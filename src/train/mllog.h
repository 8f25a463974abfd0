/* MLPerf-style ":::MLLOG {json}" lines for tools that parse MLPerf logs
 * (docs/slurm.md, "MLPerf-style log lines"). Rank 0 prints each line to
 * stdout, the run's log (a Slurm job's .out file), and a training run also
 * appends it to RUN_DIR/mllog.txt, so a resumed run's file holds one
 * init_start .. run_stop block per invocation. Other ranks write nothing.
 *
 * Every key and its event type is described once, in the table in mllog.c.
 * Writing is best effort: a line that cannot be written to mllog.txt is
 * reported once on stderr and never stops training. */
#ifndef TS_MLLOG_H
#define TS_MLLOG_H

#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/config.h"
#include "io/provenance.h"
#include "train/evaluate.h"

#define TS_MLLOG_FILE "mllog.txt"

typedef struct ts_mllog {
    int rank;
    FILE *file;          /* RUN_DIR/mllog.txt from run_start on (rank 0) */
    bool file_failed;    /* reported once */
    char init_line[512]; /* init_start, printed before the run directory exists */
    bool run_started, block_open, eval_open;
    long global_batch; /* sequences per step, for samples counts */
    long steps;        /* train.steps: no block follows the last evaluation */
} ts_mllog;

/* init_start: the first thing a training invocation does. */
void ts_mllog_init_start(ts_mllog *log, MPI_Comm comm);
/* For `thinkscale eval` of a checkpoint of `config`'s run: stdout only, no
 * init or run events. */
void ts_mllog_open_stdout(ts_mllog *log, MPI_Comm comm, const ts_run_config *config);
/* The run directory exists and training starts at `step`: opens
 * RUN_DIR/mllog.txt, writes the submission, system and hyperparameter
 * events, init_stop, run_start and the first block_start. */
void ts_mllog_run_start(ts_mllog *log, const ts_run_config *config, const ts_provenance *prov,
                        long step);
/* An evaluation at `step`: closes the open block, eval_start. */
void ts_mllog_eval_start(ts_mllog *log, long step);
/* One evaluation set's result: eval_loss (metadata: the set), and
 * eval_accuracy for the primary set (the training domain's validation split),
 * whose value is its loss (log perplexity, nats per token). */
void ts_mllog_eval_result(ts_mllog *log, long step, const char *set, const ts_eval_result *result,
                          bool primary);
/* eval_stop, and a new block_start when steps remain. */
void ts_mllog_eval_stop(ts_mllog *log, long step);
/* The invocation ends with exit_status: if the run started, closes an open
 * evaluation (one that failed) and block and writes train_samples and
 * run_stop (status "success" for 0, else "aborted", with the exit status in
 * the metadata), else init_stop with that status; closes the file. */
void ts_mllog_run_stop(ts_mllog *log, long step, int exit_status);

#endif
