/* The interface every architecture implements, so that the trainer, the
 * evaluator, checkpoints and benchmarks are written once. A model owns one
 * flat buffer of parameters and one of gradients, described by its table. */
#ifndef TS_MODEL_H
#define TS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "models/param_table.h"

typedef struct ts_model_config {
    char arch[32];        /* "transformerpp", ... */
    int vocab_size;
    int context;          /* T, tokens per sequence */
    int depth;            /* L, blocks */
    int width;            /* D */
    int heads;
    double ffn_mult;      /* SwiGLU hidden = round(ffn_mult * D) */
    double norm_eps;
    double rope_theta;
} ts_model_config;

/* `batch` sequences of seq + 1 tokens: inputs are tokens 0..seq-1 of each,
 * targets tokens 1..seq. */
typedef struct ts_batch {
    const int32_t *tokens;
    int batch;
    int seq;
} ts_batch;

typedef struct ts_model ts_model;

typedef struct ts_model_ops {
    /* Mean cross-entropy per target token, as a [1] tensor in ctx's graph. */
    ts_tensor *(*loss)(ts_model *model, ts_ctx *ctx, const ts_batch *batch);
    void (*destroy)(ts_model *model);
} ts_model_ops;

struct ts_model {
    const ts_model_ops *ops;
    ts_model_config config;
    ts_param_table table;
    ts_real *params;      /* table.total values */
    ts_real *grads;       /* table.total gradients */
    ts_tensor **tensors;  /* one leaf per table entry, bound by ts_model_bind */
    void *arch;           /* architecture-specific state */
};

/* Builds the architecture named in config->arch with zeroed buffers.
 * Returns NULL and a message in err on unknown architecture, invalid sizes
 * or out of memory. */
ts_model *ts_model_create(const ts_model_config *config, char *err, size_t errlen);
void ts_model_destroy(ts_model *model);
/* Initialises parameters as the reference does (Xavier-normal linear layers,
 * N(0, 1) embeddings, unit norm scales), deterministically from seed. */
void ts_model_init_params(ts_model *model, uint64_t seed);
/* Creates the parameter leaves in ctx over the flat buffers. Call once,
 * before the mark that each step releases to. */
void ts_model_bind(ts_model *model, ts_ctx *ctx);
ts_tensor *ts_model_param(const ts_model *model, const char *name);
/* Non-embedding parameters (the N of the 6N FLOPs convention). */
long ts_model_non_embedding_params(const ts_model *model);

#endif
