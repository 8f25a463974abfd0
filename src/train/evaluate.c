#include "train/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "parallel/data_parallel.h"
#include "train/batches.h"

/* Sums over one pass of a rank's windows. */
typedef struct pass_sums {
    double loss;                         /* loss * scored targets */
    double scored;                       /* targets scored */
    double stats[TS_MAX_MODEL_STATS];    /* each statistic * windows */
    double *window_loss, *window_scored; /* [windows] by global index, or NULL */
} pass_sums;

/* Scores this rank's windows (offsets[0 .. count)), micro_batch at a time:
 * every target, or with answers those the file's answer mask marks (a
 * micro-batch without any is skipped). */
static bool score_windows(ts_model *model, ts_ctx *ctx, ts_token_file *tokens, enum ts_split split,
                          int seq, const int64_t *offsets, long first, long count, long micro_batch,
                          uint64_t seed, bool answers, int32_t *buf, uint8_t *mask, pass_sums *sums,
                          char *err, size_t errlen) {
    for (long done = 0; done < count; done += micro_batch) {
        int n = (int)(count - done < micro_batch ? count - done : micro_batch);
        ts_tf_err tf_err;
        if (ts_token_file_read_windows(tokens, split, offsets + done, n, seq + 1, buf, &tf_err) !=
                TS_TF_OK ||
            (answers && ts_token_file_read_mask_windows(tokens, split, offsets + done, n, seq + 1,
                                                        mask, &tf_err) != TS_TF_OK)) {
            snprintf(err, errlen, "%s", tf_err.msg);
            return false;
        }
        long scored = (long)n * seq;
        if (answers) {
            scored = 0;
            for (int b = 0; b < n; b++)
                for (int t = 1; t <= seq; t++) scored += mask[(long)b * (seq + 1) + t] != 0;
            if (scored == 0) continue;
        }
        ts_mark mark = ts_get_mark(ctx);
        ts_batch batch = {.tokens = buf,
                          .batch = n,
                          .seq = seq,
                          .mode = TS_MODE_EVAL,
                          .seed = seed,
                          .step = -1,
                          .first_index = first + done,
                          .target_mask = answers ? mask : NULL};
        double stats[TS_MAX_MODEL_STATS] = {0};
        ts_tensor *loss = model->ops->loss(model, ctx, &batch, stats);
        sums->loss += (double)loss->data[0] * (double)scored;
        sums->scored += (double)scored;
        if (sums->window_loss) {
            sums->window_loss[first + done] = (double)loss->data[0] * (double)scored;
            sums->window_scored[first + done] = (double)scored;
        }
        for (int k = 0; k < model->ops->n_stats; k++) sums->stats[k] += stats[k] * n;
        ts_release(ctx, mark);
    }
    return true;
}

bool ts_evaluate(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                 enum ts_split split, int seq, long align, long windows, long micro_batch,
                 uint64_t seed, ts_eval_result *result, char *err, size_t errlen) {
    return ts_evaluate_windows(comm, model, ctx, tokens, split, seq, align, windows, micro_batch,
                               seed, result, NULL, err, errlen);
}

bool ts_evaluate_windows(MPI_Comm comm, ts_model *model, ts_ctx *ctx, ts_token_file *tokens,
                         enum ts_split split, int seq, long align, long windows, long micro_batch,
                         uint64_t seed, ts_eval_result *result, ts_eval_window_sums *w, char *err,
                         size_t errlen) {
    ts_eval_window_sums none = {0};
    if (!w) w = &none;
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    int64_t split_len = ts_token_file_len(tokens, split);
    bool ok = split_len >= seq + 1;
    bool answers = tokens->has_mask;
    long first, count;
    ts_shard_range(windows, rank, nranks, &first, &count);
    int64_t *offsets = malloc((size_t)(count ? count : 1) * sizeof *offsets);
    int32_t *buf = malloc((size_t)(micro_batch * (seq + 1)) * sizeof *buf);
    uint8_t *mask = answers ? malloc((size_t)(micro_batch * (seq + 1))) : NULL;
    if (!offsets || !buf || (answers && !mask)) {
        snprintf(err, errlen, "out of memory for evaluation buffers");
        ok = false;
    } else if (!ok) {
        snprintf(err, errlen, "%s split of %s has %lld tokens, fewer than one window of %d",
                 ts_split_name(split), tokens->path, (long long)split_len, seq + 1);
    }
    /* loss * tokens, tokens, flops, answer loss * answer tokens, answer
     * tokens, then each statistic * windows */
    enum { N_FIXED = 5 };
    double sums[N_FIXED + TS_MAX_MODEL_STATS] = {0};
    int n_stats = model->ops->n_stats;
    if (ok) {
        ts_eval_window_offsets(windows, first, count, split_len, seq + 1, align, offsets);
        bool recording = ts_set_grad_enabled(ctx, false);
        pass_sums answer = {.window_loss = w->answer_tokens ? w->answer_loss : NULL,
                            .window_scored = w->answer_tokens},
                  whole = {.window_loss = w->tokens ? w->loss : NULL, .window_scored = w->tokens};
        /* The answer pass first, so that what the model records (an energy
         * trace, by window) is left as the whole-text pass wrote it. */
        if (answers)
            ok = score_windows(model, ctx, tokens, split, seq, offsets, first, count, micro_batch,
                               seed, true, buf, mask, &answer, err, errlen);
        double flops_before = ts_flops_total(ctx);
        ok = ok && score_windows(model, ctx, tokens, split, seq, offsets, first, count, micro_batch,
                                 seed, false, buf, NULL, &whole, err, errlen);
        sums[0] = whole.loss;
        sums[1] = whole.scored;
        sums[2] = ts_flops_total(ctx) - flops_before;
        sums[3] = answer.loss;
        sums[4] = answer.scored;
        for (int k = 0; k < n_stats; k++) sums[N_FIXED + k] = whole.stats[k];
        ts_set_grad_enabled(ctx, recording);
    }
    free(offsets);
    free(buf);
    free(mask);
    /* Every rank learns whether any failed, so none waits alone. */
    int local_ok = ok, all_ok = 0;
    /* Each rank filled its own windows of the per-window arrays. */
    double *window_arrays[4] = {w->loss, w->tokens, w->answer_loss, w->answer_tokens};
    bool windows_ok = true;
    for (int k = 0; k < 4; k++)
        if (window_arrays[k] &&
            ts_allreduce_sum_double(comm, window_arrays[k], (int)windows) != MPI_SUCCESS)
            windows_ok = false;
    if (!windows_ok ||
        MPI_Allreduce(&local_ok, &all_ok, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS ||
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
    result->answer_tokens = (long)sums[4];
    result->answer_loss = sums[4] > 0 ? sums[3] / sums[4] : NAN;
    result->answer_perplexity = exp(result->answer_loss);
    result->n_stats = n_stats;
    for (int k = 0; k < n_stats; k++) result->stats[k] = sums[N_FIXED + k] / (double)windows;
    return true;
}
