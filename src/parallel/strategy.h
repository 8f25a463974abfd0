/* How the ranks of a data-parallel job share the training state, behind the
 * calls the trainer makes every step (docs/parallelism.md):
 *
 *   ts_parallel_begin_step       zeroes the gradients
 *   ts_parallel_batch_range      which sequences of a micro-batch this rank runs
 *   ts_parallel_micro_batch_done after each micro-batch's backward (zero2 reduces here)
 *   ts_parallel_reduce_gradients the gradient sum over ranks of what this rank owns
 *   ts_parallel_clip             the global gradient norm, and clipping of the owned gradient
 *   (the optimiser step over [owned_first, owned_first + owned_count))
 *   ts_parallel_gather_params    every rank's updated parameters to every rank
 *
 * Strategies:
 *   ddp   every rank owns everything: one all-reduce of the flat gradient and a
 *         full optimiser step on every rank (the historical trainer, bit for bit);
 *   zero1 rank r owns one shard of the flat buffers (ceil(total / ranks)
 *         elements, the last shards shorter or empty): an in-place
 *         reduce-scatter of the gradient, the optimiser (and its moments) on
 *         the shard only, an all-gather of the parameters;
 *   zero2 as zero1, and the gradient is reduced into an accumulated shard
 *         after every micro-batch, so what persists across micro-batches is
 *         the shard (the backward still writes a full buffer: without hooks
 *         in the backward pass that buffer cannot be given up);
 *   zero3 parameters sharded too, gathered for the whole model per step
 *         (not per layer): between steps a rank holds the shard of the
 *         parameters and of the moments only; ts_parallel_gather_model
 *         gathers the full parameters for a step (with a zeroed full
 *         gradient), an evaluation or a checkpoint, ts_parallel_release_model
 *         keeps the owned range and frees the rest. The gradient is
 *         reduce-scattered in place as under zero1.
 *
 * MPI counts are int: every collective is cut into rounds of at most
 * max_piece elements per rank, so buffers over 2^31 elements work. */
#ifndef TS_STRATEGY_H
#define TS_STRATEGY_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine/real.h"

typedef struct ts_model ts_model;

typedef enum ts_parallel_strategy { TS_DDP, TS_ZERO1, TS_ZERO2, TS_ZERO3 } ts_parallel_strategy;

/* "ddp", "zero1", "zero2", "zero3" -> the strategy; false if unknown. */
bool ts_parallel_strategy_parse(const char *name, ts_parallel_strategy *strategy);
const char *ts_parallel_strategy_name(ts_parallel_strategy strategy);

typedef struct ts_parallel {
    MPI_Comm comm;
    int rank, nranks;
    ts_parallel_strategy strategy;
    long total;                    /* elements of each flat buffer */
    long shard;                    /* ceil(total / nranks): the padded shard length */
    long owned_first, owned_count; /* this rank's range of the flat buffers */
    ts_real *grad_shard;           /* zero2: the reduced gradient of the owned range, summed
                                    * over micro-batches (zero1 reduces in place) */
    ts_real *param_shard;          /* zero3 while the model is released: the owned range of
                                    * the parameters (owned_count elements) */
    long max_piece;                /* elements per rank per collective call */
    double bytes_sent;             /* payload this rank sent in collectives, cumulative */
} ts_parallel;

/* Sets up strategy over comm for flat buffers of total elements. False with
 * a message if out of memory. */
bool ts_parallel_init(ts_parallel *p, MPI_Comm comm, ts_parallel_strategy strategy, long total,
                      char *err, size_t errlen);
void ts_parallel_free(ts_parallel *p);

/* The owned range of rank `rank` (any rank, e.g. to describe a checkpoint). */
void ts_parallel_owned_range(const ts_parallel *p, int rank, long *first, long *count);

/* Zeroes the flat gradient (and zero2's accumulated shard). */
void ts_parallel_begin_step(ts_parallel *p, ts_real *grads);

/* This rank's sequences [*first, *first + *count) of a micro-batch of total. */
void ts_parallel_batch_range(const ts_parallel *p, long total, long *first, long *count);

/* After one micro-batch's backward into grads (the full flat buffer). zero2
 * reduces it into the owned shard and zeroes grads; the others do nothing. */
int ts_parallel_micro_batch_done(ts_parallel *p, ts_real *grads);

/* At the end of a step's micro-batches: the sum over ranks of the owned
 * gradient. Returns MPI_SUCCESS or the MPI error code. */
int ts_parallel_reduce_gradients(ts_parallel *p, ts_real *grads);

/* The reduced gradient of the owned range (owned_count elements), valid
 * after ts_parallel_reduce_gradients: grads + owned_first (ddp: all of
 * grads; zero1: reduced in place) or zero2's accumulated shard. The rest of
 * grads is then undefined under zero1 and zero2. */
ts_real *ts_parallel_owned_gradients(ts_parallel *p, ts_real *grads);

/* The global gradient norm (of the whole flat gradient) into *norm, and the
 * owned gradient scaled so the global norm is at most clip (<= 0: no
 * clipping). Returns the MPI status. */
int ts_parallel_clip(ts_parallel *p, ts_real *grads, double clip, double *norm);

/* After the optimiser updated params[owned range]: every rank's range to
 * every rank (zero1, zero2); nothing for ddp, nor for zero3 (whose release
 * keeps the updated range). */
int ts_parallel_gather_params(ts_parallel *p, ts_real *params);

/* Whether model->params holds the full parameters: always, except under
 * zero3 while the model is released. */
bool ts_parallel_model_present(const ts_parallel *p, const ts_model *model);
/* zero3: the full parameters from every rank's shard (collective) and, with
 * with_gradient (a training step; evaluation and checkpoints need none), a
 * zeroed full gradient, handed to the model (ts_model_set_buffers); nothing
 * for what is present, nor under another strategy. MPI_SUCCESS,
 * MPI_ERR_NO_MEM (on every rank when one lacks the memory) or the MPI
 * error. */
int ts_parallel_gather_model(ts_parallel *p, ts_model *model, bool with_gradient);
/* zero3: keeps the owned range of the parameters, frees the full parameter
 * and gradient buffers and leaves the model without them (its leaves point
 * at nothing until the next gather); nothing otherwise. Local. */
int ts_parallel_release_model(ts_parallel *p, ts_model *model);

/* The bytes one rank holds for the training state under a strategy, as this
 * implementation allocates it (docs/parallelism.md), for total parameters of
 * elem bytes and moments_per_param optimiser moments (2 for AdamW, 0 SGD). */
typedef struct ts_parallel_memory {
    double parameters, gradients, optimizer; /* the most held at once */
    double between_steps;                    /* the sum held between steps (zero3: shards) */
} ts_parallel_memory;
ts_parallel_memory ts_parallel_memory_estimate(ts_parallel_strategy strategy, long total,
                                               int nranks, size_t elem, int moments_per_param);

/* Bytes of the gradient buffers this strategy holds besides the model's
 * own full gradient (zero2's accumulated shard; 0 otherwise). */
double ts_parallel_shard_gradient_bytes(const ts_parallel *p);

/* Whether the training state of `total` parameters fits `limit` bytes per
 * rank under strategy (limit <= 0: always). If not, message says so with
 * the estimate of every strategy on nranks ranks and which would fit. */
bool ts_parallel_fits(ts_parallel_strategy strategy, long total, int nranks, size_t elem,
                      int moments_per_param, double limit, char *message, size_t len);

#endif
