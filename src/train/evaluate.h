/* Teacher-forced loss and perplexity of a model on evenly spaced windows of
 * a token file's split, sharded over the ranks of a communicator. */
#ifndef TS_EVALUATE_H
#define TS_EVALUATE_H

#include <mpi.h>
#include <stddef.h>

#include "io/token_file.h"
#include "models/model.h"

typedef struct ts_eval_result {
    double loss;        /* mean cross-entropy per token, nats */
    double perplexity;  /* exp(loss) */
    long tokens;        /* targets scored over all ranks */
    double flops;       /* executed over all ranks */
    int n_stats;        /* the model's own statistics, means over the windows */
    double stats[TS_MAX_MODEL_STATS];
} ts_eval_result;

/* Collective over comm. windows sequences of seq + 1 tokens, starting at
 * multiples of align (data.align), processed micro_batch at a time without
 * recording a graph. seed feeds the model's random draws (ts_sequence_rng),
 * which depend on the window only. */
bool ts_evaluate(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                 enum ts_split split, int seq, long align, long windows, long micro_batch,
                 uint64_t seed, ts_eval_result *result, char *err, size_t errlen);

#endif
