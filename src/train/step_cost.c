#include "train/step_cost.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/ebt.h"
#include "parallel/data_parallel.h"
#include "train/micro_batch.h"

/* Chunks of a counting context: it holds tensor headers, graph nodes and
 * token ids only. */
#define COUNTING_CHUNK_BYTES ((size_t)1 << 20)

/* One optimiser step of model_config as the trainer runs it on `ranks`
 * ranks, every micro-batch's shard on every rank, in one counting context:
 * the same ops on the same shapes, no arithmetic and no tensor data. The
 * tokens are zeros: which tokens a step sees does not change its FLOPs. */
static bool count_step(const ts_run_config *config, const ts_model_config *model_config, int ranks,
                       long step, double flops[2], size_t *bytes, char *err, size_t errlen) {
    ts_model *model = ts_model_create_counting(model_config, err, errlen);
    if (!model) return false;
    long micro = config->batch / config->accum, max_local = (micro + ranks - 1) / ranks;
    int seq = model_config->context;
    int32_t *tokens = calloc((size_t)max_local * (size_t)(seq + 1), sizeof *tokens);
    ts_ctx ctx;
    bool ctx_ok = ts_ctx_init_counting(&ctx, COUNTING_CHUNK_BYTES);
    if (!tokens || !ctx_ok) {
        snprintf(err, errlen, "out of memory counting the FLOPs of a step");
        if (ctx_ok) ts_ctx_free(&ctx);
        free(tokens);
        ts_model_destroy(model);
        return false;
    }
    /* Engine misuse while counting (a configuration the ops reject) comes
     * back here as a message instead of ending the process. */
    ts_error_catch failure = {.message = ""};
    ts_ctx_set_error_handler(&ctx, ts_error_catch_jump, &failure);
    bool ok = true;
    if (setjmp(failure.back) == 0) {
        ts_model_bind(model, &ctx);
        for (int rank = 0; rank < ranks; rank++)
            for (long a = 0; a < config->accum; a++) {
                long first, count;
                ts_shard_range(micro, rank, ranks, &first, &count);
                if (count == 0) continue;
                ts_batch batch = {.tokens = tokens,
                                  .batch = (int)count,
                                  .seq = seq,
                                  .mode = TS_MODE_TRAIN,
                                  .seed = (uint64_t)config->seed,
                                  .step = step,
                                  .first_index = a * micro + first};
                double stats[TS_MAX_MODEL_STATS];
                ts_train_micro_batch(model, &ctx, &batch, (double)count / (double)config->batch,
                                     stats);
            }
        flops[0] = ctx.flops[TS_FORWARD];
        flops[1] = ctx.flops[TS_BACKWARD];
        *bytes = ctx.arena.high_water;
    } else {
        snprintf(err, errlen, "counting the FLOPs of a step: %s", failure.message);
        ok = false;
    }
    ts_ctx_free(&ctx);
    free(tokens);
    ts_model_destroy(model);
    return ok;
}

bool ts_step_flops_with(const ts_run_config *config, const ts_step_flops_options *options,
                        ts_step_flops_result *out, char *err, size_t errlen) {
    *out = (ts_step_flops_result){0};
    int ranks = options && options->ranks > 0 ? options->ranks : 1;
    long step = options ? options->step : -1;
    const ts_model_config *mc = &config->model;
    if (mc->vocab_size < 2) {
        snprintf(err, errlen,
                 "model.vocab_size must be set (from the training data) to count "
                 "a step's FLOPs, got %d",
                 mc->vocab_size);
        return false;
    }
    if (config->batch < 1 || config->accum < 1 || config->batch % config->accum) {
        snprintf(err, errlen, "train.batch (%ld) must be a positive multiple of train.accum (%ld)",
                 config->batch, config->accum);
        return false;
    }
    /* EBT's random step count: each equally likely count on its own, as a
     * configuration that always takes that many steps on the same landscapes. */
    bool random_steps = !strcmp(mc->arch, "ebt") && mc->ebt.random_steps > 0 && step < 0;
    int variants = random_steps ? mc->ebt.random_steps + 1 : 1;
    out->min_total = INFINITY;
    out->max_total = -INFINITY;
    for (int k = 0; k < variants; k++) {
        ts_model_config variant = *mc;
        if (random_steps) {
            variant.ebt.landscapes = ebt_landscapes(mc);
            variant.ebt.steps = mc->ebt.steps + k;
            variant.ebt.random_steps = 0;
        }
        double flops[2];
        size_t bytes = 0;
        if (!count_step(config, &variant, ranks, step < 0 ? 0 : step, flops, &bytes, err, errlen))
            return false;
        if (bytes > out->counting_bytes) out->counting_bytes = bytes;
        out->forward += flops[0]; /* sums of whole numbers: exact, then one division */
        out->backward += flops[1];
        out->min_total = fmin(out->min_total, flops[0] + flops[1]);
        out->max_total = fmax(out->max_total, flops[0] + flops[1]);
    }
    out->forward /= variants;
    out->backward /= variants;
    out->total = out->forward + out->backward;
    out->tokens = config->batch * mc->context;
    out->forward_per_token = out->forward / (double)out->tokens;
    out->backward_per_token = out->backward / (double)out->tokens;
    out->total_per_token = out->total / (double)out->tokens;
    out->ranks = ranks;
    return true;
}

bool ts_step_flops(const ts_run_config *config, ts_step_flops_result *out, char *err,
                   size_t errlen) {
    return ts_step_flops_with(config, &(ts_step_flops_options){.ranks = 1, .step = -1}, out, err,
                              errlen);
}

bool ts_param_counts(const ts_model_config *config, long *total, long *non_embedding, char *err,
                     size_t errlen) {
    ts_model *model = ts_model_create_counting(config, err, errlen);
    if (!model) return false;
    *total = model->table.total;
    *non_embedding = ts_model_non_embedding_params(model);
    ts_model_destroy(model);
    return true;
}
