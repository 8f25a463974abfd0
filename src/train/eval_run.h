/* The evaluation run of `thinkscale eval`: a checkpoint's perplexity on any
 * number of token sets under any number of inference settings, printed by
 * rank 0 and written to an HDF5 results file (docs/training.md). */
#ifndef TS_EVAL_RUN_H
#define TS_EVAL_RUN_H

#include <mpi.h>
#include <stdbool.h>

#include "core/config.h"

#define TS_EVAL_MAX_SETTINGS 16
#define TS_EVAL_SETTING_LEN 256

typedef struct ts_eval_run_options {
    const char *checkpoint;     /* exactly one of checkpoint and run_dir */
    const char *run_dir;        /* its newest complete checkpoint */
    char data[TS_PATH_MAX * 4]; /* comma-separated token files */
    const char *split;          /* "validation" or "train" */
    long windows;
    long batch;
    const char *output;   /* NULL: eval.h5 beside the checkpoint */
    const char *energies; /* EBT per-token energies file, or NULL */
    bool force;
    bool window_sums; /* per-window sums in every row */
    int n_settings;   /* 0: the trained configuration only */
    char settings[TS_EVAL_MAX_SETTINGS]
                 [TS_EVAL_SETTING_LEN]; /* "section.key=value,..." inference overrides */
} ts_eval_run_options;

/* Collective over comm; returns the process exit status (2: a setting that
 * is not an inference key). */
int ts_eval_run(MPI_Comm comm, const ts_eval_run_options *options);

#endif
