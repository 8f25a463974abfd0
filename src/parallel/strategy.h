/* How the ranks of a data-parallel job share the training state, behind the
 * calls the trainer makes every step (docs/parallelism.md):
 *
 *   ts_parallel_begin_step       zeroes the gradients
 *   ts_parallel_batch_range      which sequences of a micro-batch this rank runs
 *   ts_parallel_micro_batch_done after each micro-batch's backward (zero2 reduces here)
 *   ts_parallel_reduce_gradients the gradient sum over ranks of what this rank owns
 *   ts_parallel_clip             the global gradient norm, and clipping of the owned gradient
 *   (the optimiser step over the owned ranges, ts_parallel.owned)
 *   ts_parallel_gather_params    every rank's updated parameters to every rank
 *
 * Strategies:
 *   ddp   every rank owns everything: one all-reduce of the flat gradient and a
 *         full optimiser step on every rank (the historical trainer, bit for bit);
 *   zero1 rank r owns one shard of the flat buffers (ceil(total / ranks)
 *         elements, the last shards shorter or empty): an in-place
 *         reduce-scatter of the gradient, the optimiser (and its moments) on
 *         the shard only, an all-gather of the parameters;
 *   zero2 as zero1, but rank r owns a slice of every interval of every unit
 *         (param_units.h; ceil(count / ranks) elements of each, the last
 *         slices shorter or empty), and the gradient is reduced into an
 *         accumulated shard (the slices concatenated, the "owned order")
 *         unit by unit inside the backward pass: when the backward has
 *         finished a block its gradient is reduce-scattered and zeroed in the
 *         gradient stage every block accumulates in (ts_parallel.grad_stage),
 *         so the gradient held at once is the shard plus one block (and unit
 *         0, reduced after the micro-batch);
 *   zero3 (FSDP) sliced as zero2, parameters sharded too: each block's
 *         parameters are gathered just before its forward, released after
 *         it, gathered again when the backward reaches it and released once
 *         its gradient is
 *         reduce-scattered, the next block's MPI_Iallgatherv started one block
 *         ahead so it overlaps the current block's compute; unit 0 is gathered
 *         for the whole step. Evaluation and checkpoints gather every unit
 *         once (ts_parallel_gather_model without gradient).
 * zero2 and zero3 are driven by the engine's unit hook (engine/context.h),
 * which ts_parallel_adopt_model registers. A model whose loss differentiates
 * its own gradient (ts_model_ops.gradient_graph_in_loss: EBT) records nodes
 * reading a block's parameters anywhere on the tape, so for it every unit is
 * gathered for the whole step and the gradient reduced after each
 * micro-batch (docs/parallelism.md says what that costs).
 *
 * MPI counts are int: every collective is cut into rounds of at most
 * max_piece elements per rank, so buffers over 2^31 elements work. */
#ifndef TS_STRATEGY_H
#define TS_STRATEGY_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine/context.h"
#include "engine/real.h"
#include "parallel/param_units.h"

typedef struct ts_model ts_model;

typedef enum ts_parallel_strategy { TS_DDP, TS_ZERO1, TS_ZERO2, TS_ZERO3 } ts_parallel_strategy;

/* "ddp", "zero1", "zero2", "zero3" -> the strategy; false if unknown. */
bool ts_parallel_strategy_parse(const char *name, ts_parallel_strategy *strategy);
const char *ts_parallel_strategy_name(ts_parallel_strategy strategy);

/* A run of the flat buffers sharded across the ranks: rank r owns its slice
 * [first + r * slice, first + (r + 1) * slice) clipped to the piece. zero1's
 * one piece is the whole buffer; zero2's and zero3's are the units'
 * intervals, so every rank owns a slice of every unit. */
typedef struct ts_shard_piece {
    long first, count; /* elements of the flat buffers */
    long slice;        /* ceil(count / nranks): the padded slice length */
    long owned_at;     /* where this rank's slice starts in the owned order */
} ts_shard_piece;

typedef struct ts_parallel {
    MPI_Comm comm;
    int rank, nranks;
    ts_parallel_strategy strategy;
    long total;             /* elements of each flat buffer */
    long shard;             /* ceil(total / nranks): a checkpoint range's length */
    ts_shard_piece *pieces; /* ascending, tiling [0, total) (ddp: none) */
    int n_pieces;
    ts_param_interval *owned; /* this rank's ranges, ascending (its slice of each piece; ddp:
                               * [0, total)), the optimiser's ranges */
    int n_owned;
    long owned_count;     /* their elements: the length of the owned order */
    ts_real *grad_shard;  /* zero2, zero3: the reduced gradient of the owned ranges in
                           * the owned order, summed over micro-batches (zero1 reduces in
                           * place); reserved memory, zeroed after the optimiser step and
                           * given back before an evaluation or checkpoint */
    bool grad_shard_live; /* mapped: from ts_parallel_begin_step until given back */
    bool grad_shard_kept; /* live and zeroed since the optimiser step */
    /* per_unit: where every block's leaves accumulate their gradient, at
     * their offsets within their unit (one block's backward runs at a time;
     * unit 0 stays in the flat buffer). It is reduced and zeroed at the end
     * of each block's backward and given back with the shard, so its pages
     * are written again every micro-batch and step without being given
     * back and faulted in each time. */
    ts_real *grad_stage;
    long grad_stage_elems; /* the largest block unit */
    bool grad_stage_live;  /* written since it was last given back */
    long max_piece;        /* elements per rank per collective call */
    double bytes_sent;     /* payload this rank sent in collectives, cumulative */
    /* Seconds this rank spent inside its collectives (the gradient
     * reductions, ZeRO-3's gathers and their waits, the gradient norm's),
     * waiting for slower ranks included, cumulative: what a step loses to
     * communication and imbalance (the trainer logs it per step). */
    double collective_seconds;
    /* zero2 and zero3 once ts_parallel_adopt_model has run: */
    ts_model *model; /* whose flat buffers are reserved memory (param_units.h) */
    ts_param_units units;
    bool per_unit;    /* the unit hook gathers and reduces block by block */
    bool in_step;     /* between the gather of a training step and the release */
    bool all_present; /* zero3: every unit gathered and current */
    int next_event;   /* per_unit: position in a micro-batch's unit events */
    int gathering;    /* zero3: the unit with gathers in flight, or -1 */
    int failed;       /* the first MPI error inside the unit hook */
    long prefetches_started, prefetches_waited; /* zero3's overlapped gathers */
    /* Elements held now and at the largest sum of the two (the peak). */
    double params_held, grads_held, peak_params, peak_grads;
    /* Under tensor parallelism (ts_parallel_set_tensor_group): the ranks
     * that hold one model together, and the flat ranges of the tensors each
     * holds only its blocks of (NULL: none). */
    MPI_Comm tensor_group;
    ts_param_interval *blocked;
    int n_blocked;
} ts_parallel;

/* Sets up strategy over comm for model's flat buffers (its table: zero2
 * and zero3 slice each of its units' intervals across the ranks). False
 * with a message if out of memory. */
bool ts_parallel_init(ts_parallel *p, MPI_Comm comm, ts_parallel_strategy strategy,
                      const ts_model *model, char *err, size_t errlen);
void ts_parallel_free(ts_parallel *p);

/* Rank `rank`'s slice of piece i (count 0 when empty). */
void ts_parallel_slice(const ts_parallel *p, int i, int rank, long *first, long *count);

/* The range of rank `rank` in a checkpoint's sharded layout: one contiguous
 * range of ceil(total / nranks) elements per rank (the last shorter or
 * empty), whatever the owned ranges are, so the file does not depend on the
 * strategy's slicing and reshards to any rank count. */
void ts_parallel_checkpoint_range(const ts_parallel *p, int rank, long *first, long *count);
/* Whether every rank's owned order is its checkpoint range (ddp, zero1, one
 * rank): then no exchange is needed. The same answer on every rank. */
bool ts_parallel_owned_is_checkpoint_range(const ts_parallel *p);
/* Moves one array of the owned ranges between the owned order (owned,
 * owned_count elements) and the checkpoint range (range, its count):
 * owned -> range with to_range, range -> owned without. Collective;
 * MPI_Alltoallv, or point-to-point pieces of max_piece elements when counts
 * would overflow int. Returns MPI_SUCCESS or the MPI error. */
int ts_parallel_exchange_checkpoint_range(const ts_parallel *p, ts_real *owned, ts_real *range,
                                          bool to_range);

/* One array of the owned ranges (owned, in the owned order) spread into
 * full (total elements, the flat layout) on every rank: each rank's ranges
 * from it, by the parameters' all-gather (ddp: a copy). Collective. Under
 * tensor parallelism this gives a grid position's moments in the group's
 * local layout, which the grid's own gather then makes whole. Returns
 * MPI_SUCCESS or the MPI error. */
int ts_parallel_gather_owned(const ts_parallel *p, const ts_real *owned, ts_real *full);
/* The owned ranges of full (the flat layout) into owned, in the owned
 * order: the local inverse of ts_parallel_gather_owned. */
void ts_parallel_take_owned(const ts_parallel *p, const ts_real *full, ts_real *owned);

/* zero2, zero3: moves model's flat gradient (zero3: and parameters) into
 * reserved memory this strategy owns (ts_model_set_buffers; the leaves keep
 * those addresses for the run) and, block by block (per_unit), points the
 * blocks' leaf gradients into the gradient stage instead; registers the unit
 * hook on ctx; nothing for ddp and zero1. Call after ts_model_bind, before
 * restoring a checkpoint into model->params. zero3 then holds every unit
 * until the first ts_parallel_release_model. False with a message when
 * memory or address space is missing. */
bool ts_parallel_adopt_model(ts_parallel *p, ts_model *model, ts_ctx *ctx, char *err,
                             size_t errlen);

/* Whether the gradient stage holds only zeros (or there is none): true
 * whenever no block's backward is running. The unit hook checks it as each
 * block's backward begins, so a block tensor whose gradient is written
 * outside its block's markers (a weight tied to the head, say) stops the
 * job instead of being added into another block's gradient. */
bool ts_parallel_stage_is_clear(const ts_parallel *p);

/* Zeroes the flat gradient, or for an adopted model the accumulated shard
 * if a step left it live (the rest is zero already). */
void ts_parallel_begin_step(ts_parallel *p, ts_real *grads);

/* This rank's sequences [*first, *first + *count) of a micro-batch of total. */
void ts_parallel_batch_range(const ts_parallel *p, long total, long *first, long *count);

/* After one micro-batch's backward into grads (the full flat buffer; per
 * unit, the blocks' part went to the stage and is reduced already). zero2
 * and zero3 reduce what the backward pass has not reduced yet (unit 0; every
 * unit when not per_unit) into the owned shard; a rank that ran no sequence
 * issues here the collectives the unit hook issued on the others. The
 * others do nothing. Returns the first MPI error, also one from the hook. */
int ts_parallel_micro_batch_done(ts_parallel *p, ts_real *grads);

/* At the end of a step's micro-batches: the sum over ranks of the owned
 * gradient. Returns MPI_SUCCESS or the MPI error code. */
int ts_parallel_reduce_gradients(ts_parallel *p, ts_real *grads);

/* The reduced gradient of the owned ranges in the owned order (owned_count
 * elements), valid after ts_parallel_reduce_gradients: grads + owned[0].first
 * (ddp: all of grads; zero1: reduced in place) or zero2's and zero3's
 * accumulated shard. The rest of
 * grads is then undefined under zero1 and zero2. */
ts_real *ts_parallel_owned_gradients(ts_parallel *p, ts_real *grads);

/* Tensor parallelism (any strategy across the groups): the model is
 * held across the ranks of group, each holding the tensors model->layout
 * marks blocked as its blocks and the others whole (identical on every rank
 * of the group), so the gradient norm counts those once and sums the
 * blocks' squares over the group. The strategy's communicator then joins
 * the ranks at one grid position of every group, which share one local
 * layout, so its shards are of that layout. Nothing when the model has no
 * layout. False with a message when out of memory. */
bool ts_parallel_set_tensor_group(ts_parallel *p, MPI_Comm group, const ts_model *model, char *err,
                                  size_t errlen);

/* The global gradient norm (of the whole flat gradient; under a tensor
 * group, of the whole model's, bit-identical on every rank of the group)
 * into *norm, and the owned gradient scaled so the global norm is at most
 * clip (<= 0: no clipping). Returns the MPI status. */
int ts_parallel_clip(ts_parallel *p, ts_real *grads, double clip, double *norm);

/* After the optimiser updated params[owned range]: every rank's range to
 * every rank (zero1, zero2); nothing for ddp; zero3 notes that its gathered
 * copies are stale (the next gather refreshes them in place). zero2 and
 * zero3 zero their gradient shard and keep its pages (and the stage's) for
 * the next step, until ts_parallel_gather_model without gradient. */
int ts_parallel_gather_params(ts_parallel *p, ts_real *params);

/* Whether model->params holds the full, current parameters: always, except
 * under zero3 outside ts_parallel_gather_model(..., false). */
bool ts_parallel_model_present(const ts_parallel *p, const ts_model *model);
/* zero3: with_gradient (a training step): unit 0 gathered now and unit 1's
 * gather started, the blocks then gathered and released by the unit hook
 * (every unit now when the model is not per_unit). Without (an evaluation
 * and/or a checkpoint, one gather for both): every unit not present gathered
 * now, after the gradient shard and stage are given back (zero2 too), so
 * that work holds no gradient. Nothing else under another strategy.
 * MPI_SUCCESS or the MPI error. */
int ts_parallel_gather_model(ts_parallel *p, ts_model *model, bool with_gradient);
/* zero3: gives back every gathered unit's pages outside the owned ranges
 * (the rank keeps its parameter shard and moment shard between steps);
 * ends the step. Nothing otherwise. Local. */
int ts_parallel_release_model(ts_parallel *p, ts_model *model);

/* Bytes of parameters and gradients held at the moment this rank held the
 * most of the two together, over the whole run so far (ddp, zero1: the full
 * buffers; zero2: its gradient peak; zero3: both). */
void ts_parallel_memory_held(const ts_parallel *p, double *parameters, double *gradients);

/* The bytes one rank holds for the training state under a strategy, as this
 * implementation allocates it (docs/parallelism.md), for total parameters of
 * elem bytes and moments_per_param optimiser moments (2 for AdamW, 0 SGD);
 * working is the most elements of units held besides the shard at once
 * (ts_parallel_working_elems; total for a model that is not per_unit). */
typedef struct ts_parallel_memory {
    double parameters, gradients, optimizer; /* the most held at once */
    double between_steps;                    /* the sum held between steps (zero3: shards) */
} ts_parallel_memory;
ts_parallel_memory ts_parallel_memory_estimate(ts_parallel_strategy strategy, long total,
                                               long working, int nranks, size_t elem,
                                               int moments_per_param);
/* The working set of a per-unit strategy for model: unit 0 and the two
 * largest blocks (the one running and the one being gathered); the whole
 * model when its loss differentiates its gradient. */
long ts_parallel_working_elems(const ts_model *model);

/* Whether the training state of `total` parameters fits `limit` bytes per
 * rank under strategy (limit <= 0: always). If not, message says so with
 * the estimate of every strategy on nranks ranks and which would fit. */
bool ts_parallel_fits(ts_parallel_strategy strategy, long total, long working, int nranks,
                      size_t elem, int moments_per_param, double limit, char *message, size_t len);

#endif
