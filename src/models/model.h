/* The interface every architecture implements, so that the trainer, the
 * evaluator, checkpoints and benchmarks are written once. A model owns one
 * flat buffer of parameters and one of gradients, described by its table. */
#ifndef TS_MODEL_H
#define TS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/block_cyclic.h"
#include "core/model_config.h"
#include "engine/engine.h"
#include "core/saved_state.h"
#include "core/param_table.h"
#include "models/activation_hook.h"
#include "models/linear.h"

typedef enum ts_mode { TS_MODE_TRAIN, TS_MODE_EVAL } ts_mode;

/* `batch` sequences of seq + 1 tokens: inputs are tokens 0..seq-1 of each,
 * targets tokens 1..seq. The rest identifies the sequences globally, so
 * that a model's random draws depend on (seed, step, sequence) only and a
 * run gives the same result on any number of ranks (ts_sequence_rng). */
typedef struct ts_batch {
    const int32_t *tokens;
    int batch;
    int seq;
    ts_mode mode;
    uint64_t seed;    /* the run's seed */
    long step;        /* optimiser step (evaluation: -1) */
    long first_index; /* global index of sequence 0 of this batch in its step or evaluation */
    /* Optional, evaluation only (NULL: every target is scored): batch x
     * (seq + 1) flags aligned with tokens; the target that is token t of a
     * row is scored iff its flag is non-zero (answer-only scoring). The loss
     * is then the mean over scored targets; tpp_split_batch turns the others
     * into the ignore index -1 that every architecture's cross-entropy skips. */
    const uint8_t *target_mask;
} ts_batch;

#define TS_MAX_MODEL_STATS 8

/* A per-batch scalar a model reports besides its loss (an energy, a KL, the
 * number of function evaluations ...), logged to metrics.h5. */
typedef struct ts_model_stat {
    const char *name;
    const char *units;
    const char *description;
} ts_model_stat;

typedef struct ts_model ts_model;

/* How a model's tensors are held when tensor parallelism distributes them
 * (ts_model_distribute): the linear weights that give every process of the
 * grid a block as this process's blocks (core/block_cyclic.h), the rest
 * whole. */
typedef struct ts_param_layout {
    ts_block_cyclic grid;
    /* The tensors' global names, shapes and offsets: the checkpoint's layout
     * and every parameter count. */
    ts_param_table global;
    bool *blocked; /* per entry (the same index in the model's table and global) */
} ts_param_layout;

typedef struct ts_model_ops {
    /* The training objective (TS_MODE_TRAIN) or the teacher-forced
     * cross-entropy being reported (TS_MODE_EVAL), mean per target token, as
     * a [1] tensor. In training the caller back-propagates it; in evaluation
     * recording is off on entry, and a model that needs gradients inside its
     * inference (EBT) switches it on locally. Fills stats[0 .. n_stats) with
     * means over the batch's sequences (the caller combines ranks). */
    ts_tensor *(*loss)(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats);
    int n_stats;
    const ts_model_stat *stats;
    /* Optional: state saved in checkpoints besides the parameters (EBT's
     * replay buffer), as roles named "extras/..."; returns how many it
     * filled, at most max. */
    int (*checkpoint_extras)(ts_model *model, ts_saved_role *roles, int max);
    /* Optional: runs after the generic initialisation (ts_model_init_params)
     * and sets the tensors registered with TS_INIT_ARCHITECTURE, e.g. EBT's
     * step size. */
    void (*init_params)(ts_model *model, ts_rng *rng);
    void (*destroy)(ts_model *model);
    /* The loss differentiates through the model's own gradient (ts_grad with
     * create_graph inside the forward: EBT), so nodes reading a block's
     * parameters are recorded anywhere on the tape, not only between the
     * block's unit markers: a strategy must keep every unit present for the
     * whole step (parallel/strategy.h). */
    bool gradient_graph_in_loss;
    /* The loss runs every op between the embedding and the loss through
     * ts_model.activations (models/activation_hook.h), so activations may be
     * distributed (parallel.tensor_activations = distributed). */
    bool distributable_activations;
} ts_model_ops;

struct ts_model {
    const ts_model_ops *ops;
    ts_model_config config;
    ts_param_table table;    /* this rank's buffers: local shapes once distributed */
    ts_param_layout *layout; /* NULL: every tensor whole (table is then the global layout) */
    ts_real *params;         /* table.total values */
    ts_real *grads;          /* table.total gradients */
    ts_tensor **tensors;     /* one leaf per table entry, bound by ts_model_bind */
    void *arch;              /* architecture-specific state */
    bool counting_only;      /* ts_model_create_counting: no buffers; bind to a counting context */
    ts_linear_hook linear;   /* how the blocks' linear layers and the head run (zero: locally) */
    ts_activation_hook activations; /* the ops between them (zero: whole, locally) */
};

/* Builds the architecture named in config->arch with zeroed buffers.
 * Returns NULL and a message in err on unknown architecture, invalid sizes
 * or out of memory. */
ts_model *ts_model_create(const ts_model_config *config, char *err, size_t errlen);
/* The same model for a counting context (ts_ctx_init_counting): its table,
 * ops and state, but no parameter or gradient buffers (params and grads are
 * NULL) and no large architecture state (EBT's replay buffer holds nothing
 * and counts as full), so a step of any size is counted in little memory.
 * ts_model_init_params leaves it alone. */
ts_model *ts_model_create_counting(const ts_model_config *config, char *err, size_t errlen);
void ts_model_destroy(ts_model *model);
/* Initialises every tensor as its registered role says (core/param_table.h),
 * from one generator seeded with seed: in-order draws in table order, then
 * deferred ones in table order, then the architecture's init_params. */
void ts_model_init_params(ts_model *model, uint64_t seed);
/* Creates the parameter leaves in ctx over the flat buffers. Call once,
 * before the mark that each step releases to. */
void ts_model_bind(ts_model *model, ts_ctx *ctx);
/* Hands the model other flat buffers (table.total elements each, or NULL)
 * and points its bound leaves at them; the model then owns them (freed by
 * ts_model_destroy). The caller keeps what it replaced. Lets a strategy that
 * shards the parameters (zero3, parallel/strategy.h) hold the full buffers
 * only while a step, an evaluation or a checkpoint needs them. */
void ts_model_set_buffers(ts_model *model, ts_real *params, ts_real *grads);
ts_tensor *ts_model_param(const ts_model *model, const char *name);
/* The unit of parameters table entry i belongs to: layer + 1 for the
 * tensors of block `layer` ("layers.<layer>."), which the block marks around
 * its forward (ts_unit_boundary), 0 for the rest (embeddings, final norm,
 * heads, an encoder), which nothing marks. */
int ts_model_param_unit(const ts_model *model, int i);
/* A generator for sequence i of batch (i < batch->batch) and a purpose
 * (any constant naming the draw), independent of how ranks split batches. */
void ts_sequence_rng(const ts_batch *batch, int i, uint64_t purpose, ts_rng *rng);
/* Non-embedding parameters (the N of the 6N FLOPs convention): the tensors
 * not registered as embeddings, counted whole. */
long ts_model_non_embedding_params(const ts_model *model);

/* Holds the model as process (d->my_row, d->my_col) of the grid d: every
 * tensor whose role is linear and that gives every process a block
 * (ts_block_cyclic_fits, so the same choice on every process) becomes this
 * process's blocks, the rest stays whole. Afterwards model->table describes
 * the local buffers (same entries, order, names, roles, decay and lr_scale;
 * blocked entries have their local shapes, offsets and total recomputed) and
 * model->layout the global tensors. Initialised values are kept (each
 * process takes its blocks of them), so call it after ts_model_init_params
 * and before ts_model_bind; a counting model only gets the tables. False
 * with a message if out of memory or already bound or distributed. */
bool ts_model_distribute(ts_model *model, const ts_block_cyclic *d, char *err, size_t errlen);
/* The global tensors: layout->global once distributed, else the table. */
const ts_param_table *ts_model_global_table(const ts_model *model);
/* The index of the table entry whose bound leaf is `leaf`, or -1. */
int ts_model_param_index(const ts_model *model, const ts_tensor *leaf);
/* Whether entry i is held as blocks. */
bool ts_model_param_blocked(const ts_model *model, int i);

#endif
