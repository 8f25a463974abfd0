#include "train/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "parallel/data_parallel.h"
#include "train/batches.h"

bool ts_evaluate(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                 enum ts_split split, int seq, long align, long windows, long micro_batch,
                 uint64_t seed, ts_eval_result *result, char *err, size_t errlen) {
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    int64_t split_len = ts_token_file_len(tokens, split);
    bool ok = split_len >= seq + 1;
    long first, count;
    ts_shard_range(windows, rank, nranks, &first, &count);
    int64_t *offsets = malloc((size_t)(count ? count : 1) * sizeof *offsets);
    int32_t *buf = malloc((size_t)(micro_batch * (seq + 1)) * sizeof *buf);
    if (!offsets || !buf) {
        snprintf(err, errlen, "out of memory for evaluation buffers");
        ok = false;
    } else if (!ok) {
        snprintf(err, errlen, "%s split of %s has %lld tokens, fewer than one window of %d",
                 ts_split_name(split), tokens->path, (long long)split_len, seq + 1);
    }
    /* loss * tokens, tokens, flops, then each statistic * windows */
    enum { N_FIXED = 3 };
    double sums[N_FIXED + TS_MAX_MODEL_STATS] = {0};
    int n_stats = model->ops->n_stats;
    if (ok) {
        ts_eval_window_offsets(windows, first, count, split_len, seq + 1, align, offsets);
        bool recording = ts_set_grad_enabled(ctx, false);
        double flops_before = ts_flops_total(ctx);
        for (long done = 0; done < count && ok; done += micro_batch) {
            int n = (int)(count - done < micro_batch ? count - done : micro_batch);
            ts_tf_err tf_err;
            if (ts_token_file_read_windows(tokens, split, offsets + done, n, seq + 1, buf,
                                           &tf_err) != TS_TF_OK) {
                snprintf(err, errlen, "%s", tf_err.msg);
                ok = false;
                break;
            }
            ts_mark mark = ts_get_mark(ctx);
            ts_batch batch = {.tokens = buf, .batch = n, .seq = seq, .mode = TS_MODE_EVAL,
                              .seed = seed, .step = -1, .first_index = first + done};
            double stats[TS_MAX_MODEL_STATS] = {0};
            ts_tensor *loss = model->ops->loss(model, ctx, &batch, stats);
            sums[0] += (double)loss->data[0] * n * seq;
            sums[1] += (double)n * seq;
            for (int k = 0; k < n_stats; k++) sums[N_FIXED + k] += stats[k] * n;
            ts_release(ctx, mark);
        }
        sums[2] = ts_flops_total(ctx) - flops_before;
        ts_set_grad_enabled(ctx, recording);
    }
    free(offsets);
    free(buf);
    /* Every rank learns whether any failed, so none waits alone. */
    int local_ok = ok, all_ok = 0;
    if (MPI_Allreduce(&local_ok, &all_ok, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS ||
        ts_allreduce_sum_double(comm, sums, N_FIXED + n_stats) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Allreduce failed during evaluation");
        return false;
    }
    if (!all_ok) {
        if (ok) snprintf(err, errlen, "evaluation failed on another rank");
        return false;
    }
    result->tokens = (long)sums[1];
    result->loss = sums[0] / sums[1];
    result->perplexity = exp(result->loss);
    result->flops = sums[2];
    result->n_stats = n_stats;
    for (int k = 0; k < n_stats; k++) result->stats[k] = sums[N_FIXED + k] / (double)windows;
    return true;
}
