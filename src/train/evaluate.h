/* Teacher-forced loss and perplexity of a model on evenly spaced windows of
 * a token file's split, sharded over the ranks of a communicator. */
#ifndef TS_EVALUATE_H
#define TS_EVALUATE_H

#include <mpi.h>
#include <stddef.h>

#include "io/token_file.h"
#include "models/model.h"

typedef struct ts_eval_result {
    double loss;       /* mean cross-entropy per token, nats */
    double perplexity; /* exp(loss) */
    long tokens;       /* targets scored over all ranks */
    double flops;      /* executed over all ranks */
    int n_stats;       /* the model's own statistics, means over the windows */
    double stats[TS_MAX_MODEL_STATS];
    /* Answer-only scoring, for a token file with an answer mask (else 0 and
     * NaN): the mean cross-entropy over the targets the mask marks, in the
     * same windows, with the same inference draws. */
    long answer_tokens;
    double answer_loss, answer_perplexity;
} ts_eval_result;

/* Per-window sums, arrays of [windows] given zeroed by the caller: for each
 * group of windows scored in one forward (a micro-batch; with a micro-batch
 * of 1, one window) the summed loss and the targets scored, at the index of
 * the group's first window, 0 elsewhere; for the whole text and the answers.
 * The thinking analysis bootstraps over them. */
typedef struct ts_eval_window_sums {
    double *loss, *tokens, *answer_loss, *answer_tokens;
} ts_eval_window_sums;

/* Collective over comm. windows sequences of seq + 1 tokens, starting at
 * multiples of align (data.align), processed micro_batch at a time without
 * recording a graph. seed feeds the model's random draws (ts_sequence_rng),
 * which depend on the window only. A file with an answer mask is scored
 * twice: first its answer targets only (ts_batch.target_mask), then every
 * target; flops, stats and anything a model records during evaluation (EBT's
 * energy trace) are those of the second, whole-text pass. */
bool ts_evaluate(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                 enum ts_split split, int seq, long align, long windows, long micro_batch,
                 uint64_t seed, ts_eval_result *result, char *err, size_t errlen);

/* ts_evaluate that also fills per-window sums (windows_out may be NULL). */
bool ts_evaluate_windows(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                         enum ts_split split, int seq, long align, long windows, long micro_batch,
                         uint64_t seed, ts_eval_result *result, ts_eval_window_sums *windows_out,
                         char *err, size_t errlen);

#endif
