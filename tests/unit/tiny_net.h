/* The small transformer block shared by the Hessian-vector-product and the
 * float-versus-double tests:
 *
 *   x [B, T, D] -> RMSNorm -> causal multi-head attention (RoPE on q, k)
 *     -> residual -> RMSNorm -> SwiGLU MLP W2(silu(W1 u) * W3 u) -> residual
 *     -> head -> cross-entropy against fixed targets (one of them ignored)
 *
 * built only from public engine ops. All parameters live in one flat buffer,
 * as in the trainer, so a direction or a gradient is one flat array. */
#ifndef TS_TEST_TINY_NET_H
#define TS_TEST_TINY_NET_H

#include <stdint.h>

#include "engine/engine.h"

enum {
    TINY_NET_BATCH = 2,
    TINY_NET_SEQ = 5,
    TINY_NET_DIM = 8,
    TINY_NET_HEADS = 2,
    TINY_NET_HIDDEN = 12,
    TINY_NET_VOCAB = 11,
    TINY_NET_N_PARAMS = 10,
};

/* Targets equal to this are ignored by the loss. */
#define TINY_NET_IGNORE (-1)

typedef struct tiny_net {
    long n_values;                  /* total parameter count */
    ts_real *values;                /* every parameter, flat */
    long offset[TINY_NET_N_PARAMS]; /* of each parameter in values */
    int ndim[TINY_NET_N_PARAMS];
    int shape[TINY_NET_N_PARAMS][2];
    ts_real input[TINY_NET_BATCH * TINY_NET_SEQ * TINY_NET_DIM];
    int32_t targets[TINY_NET_BATCH * TINY_NET_SEQ];
    int32_t positions[TINY_NET_SEQ];
} tiny_net;

extern const char *const tiny_net_param_names[TINY_NET_N_PARAMS];

/* Random parameters, input and targets from seed. Returns false if out of memory. */
bool tiny_net_init(tiny_net *net, uint64_t seed);
void tiny_net_free(tiny_net *net);

/* How many values parameter p has. */
long tiny_net_param_count(const tiny_net *net, int p);

/* One trainable leaf per parameter over net->values (and over grads, a flat
 * buffer like values, when it is not NULL). */
void tiny_net_leaves(ts_ctx *ctx, tiny_net *net, ts_real *grads,
                     ts_tensor *params[TINY_NET_N_PARAMS]);

/* The scalar loss, recorded when the parameters require gradients. */
ts_tensor *tiny_net_loss(ts_ctx *ctx, const tiny_net *net, ts_tensor *const *params);

#endif
