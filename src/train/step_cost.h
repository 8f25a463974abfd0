/* What one optimiser step of a configuration costs, before anything runs:
 * the FLOPs the engine executes for it (its own count, op by op, not a
 * formula) and the parameter counts, for `thinkscale campaign plan`.
 *
 * What is counted: everything the engine books while the trainer runs one
 * step (ts_train_micro_batch for every micro-batch on every rank): the
 * model's loss with its forward and backward passes, EBT's inner gradient
 * steps and their second-order terms included, and the accumulation of each
 * parameter's gradient. Not counted, as the trainer's step_flops does not
 * count them either: the all-reduce, gradient clipping and the optimiser
 * update (a few FLOPs per parameter).
 *
 * Two things make a step's FLOPs more than "per-sequence FLOPs x batch":
 * - a constant per micro-batch and rank (the parameter-gradient accumulation
 *   and a few scalar ops), so the count depends on train.accum and the ranks;
 * - EBT's replay buffer adds round(replay_fraction x local sequences)
 *   replayed sequences, at most the buffer's size, to every micro-batch. The
 *   count is that of the steady state, the buffer full, as it is after the
 *   first few steps (step 0 starts with an empty buffer and costs less).
 * EBT's random number of steps (ebt.random_steps) differs from step to step:
 * `total` is its expected value (the mean over the equally likely step
 * counts), min_total and max_total the cheapest and dearest step.
 *
 * How: the trainer's micro-batch code runs on a model without buffers in the
 * engine's counting-only context (docs/engine.md), which books every op's
 * FLOPs without computing: milliseconds and a few MiB even for the EBT
 * paper's largest size. tests/unit/test_step_cost.c and
 * tests/mpi/test_step_cost_trainer.c check the count against executed steps.
 * The configuration is taken as resolved: EBT presets must already be
 * applied (ts_config_validate does it). */
#ifndef TS_STEP_COST_H
#define TS_STEP_COST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

typedef struct ts_step_flops_result {
    double forward, backward, total; /* per optimiser step, all ranks together (expected) */
    double forward_per_token, backward_per_token, total_per_token; /* over batch x context */
    double min_total, max_total; /* over EBT's random step counts (= total otherwise) */
    long tokens;                 /* batch x context: tokens per step */
    int ranks;                   /* processes the count assumes */
    size_t counting_bytes;       /* memory the count itself needed (arena high-water mark) */
} ts_step_flops_result;

typedef struct ts_step_flops_options {
    int ranks; /* processes sharing each micro-batch (0: 1) */
    long step; /* < 0: expected over EBT's random steps; >= 0: the step count drawn at this step */
} ts_step_flops_options;

/* Executed FLOPs (forward, backward, total) of one optimiser step of `config`, counted by the
 * engine: config->batch sequences of config->model.context tokens, all ranks together, here on
 * one rank (the per-micro-batch constant once per micro-batch; see ts_step_flops_with for more).
 * config->model.vocab_size must be set. False with a message. */
bool ts_step_flops(const ts_run_config *config, ts_step_flops_result *out, char *err,
                   size_t errlen);
/* The same on options->ranks ranks (each with its shard of every micro-batch, as the trainer
 * splits them), or with options->step >= 0 at that step's random draws (EBT's step count) instead
 * of the expectation; the replay buffer is full either way. options NULL: as ts_step_flops. */
bool ts_step_flops_with(const ts_run_config *config, const ts_step_flops_options *options,
                        ts_step_flops_result *out, char *err, size_t errlen);

/* Parameters of a model configuration (all, and without the embeddings and
 * the vocabulary head: the N of the 6N convention), without allocating
 * parameter buffers. False with a message for an invalid configuration. */
bool ts_param_counts(const ts_model_config *config, long *total, long *non_embedding, char *err,
                     size_t errlen);

#endif
