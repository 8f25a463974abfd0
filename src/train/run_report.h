/* The end of a training invocation, as HPL and HPCG end theirs: one summary
 * line and a machine-readable report (run_dir/report.yaml) with the numbers
 * an allocation request asks for and a validation verdict. */
#ifndef TS_RUN_REPORT_H
#define TS_RUN_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TS_REPORT_MAX_EVALS 17

typedef struct ts_run_summary {
    const char *arch;
    const char *run_dir;
    const char *hostname;
    const char *blas_core; /* openblas_get_corename(): the kernels behind the GEMM peak */
    const char *git_commit;
    long params, non_embedding_params;
    int ranks, nodes, threads_per_rank;
    long batch;
    int context;
    long first_step, last_step; /* this invocation: steps first_step+1 .. last_step */
    double tokens_seen;         /* over the whole run */
    double wall_seconds;        /* this invocation, from start-up to the end */
    double step_seconds;        /* of which in training steps */
    double flops;               /* executed in training steps, all ranks */
    double peak_gflops_per_rank;
    bool peak_configured;         /* train.gemm_peak_gflops, not measured at start-up */
    double first_loss, last_loss; /* training loss of this invocation's first and last step */
    int n_evals;
    const char *eval_names[TS_REPORT_MAX_EVALS];
    double eval_loss[TS_REPORT_MAX_EVALS];
    double eval_perplexity[TS_REPORT_MAX_EVALS];
    /* false: no evaluation of that set ran in this invocation (train.stop_at
     * before an eval step); its loss and perplexity are reported as n/a */
    bool eval_measured[TS_REPORT_MAX_EVALS];
    double checkpoint_bytes;     /* the last checkpoint written, 0 if none */
    double checkpoint_bandwidth; /* its write bandwidth, bytes/s */
    double restored_bytes;       /* the checkpoint this invocation resumed from, 0 if none */
    double restored_seconds;     /* its read (open..close, slowest rank) */
    const char *strategy;        /* parallel.strategy */
    /* memory_per_rank: bytes one rank holds (largest over ranks) */
    double parameters_bytes, gradients_bytes, optimizer_bytes, activations_bytes;
    double communicated_bytes_per_step; /* collective payload one rank sent per step */
    /* How the invocation ended: complete (neither set), at train.stop_at, or
     * by a stop signal (its name), and the exit status it returns. */
    bool stopped_at;
    const char *stop_signal;
    int exit_status;
} ts_run_summary;

/* VALID when every loss is finite and, for an invocation that started at
 * step 0 and ran at least 2 steps, the training loss fell; reason says why
 * (not). A resumed invocation is not asked to show the fall: it starts on
 * the curve's later, flatter part, where one batch's loss against another's
 * is noise (a run resumed at step 338 of 400 read 2.20 -> 2.30 while it
 * matched the uninterrupted run bit for bit). */
bool ts_run_summary_valid(const ts_run_summary *s, char *reason, size_t len);
void ts_print_run_summary(FILE *out, const ts_run_summary *s);
/* Writes run_dir/report.yaml through a temporary file; false with a message. */
bool ts_write_run_report(const ts_run_summary *s, char *err, size_t errlen);

#endif
