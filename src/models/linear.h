/* How a model computes its linear layers y = x W^T (W stored [out, in]).
 * By default a local GEMM (ts_matmul); tensor parallelism
 * (parallel/tensor_ops.h) replaces it with a GEMM distributed over a process
 * grid, which the models cannot know about (it lives in a higher layer). */
#ifndef TS_LINEAR_H
#define TS_LINEAR_H

#include "engine/engine.h"

typedef struct ts_linear_hook {
    /* x [..., in], w [out, in] -> [..., out]; NULL: ts_matmul on this rank. */
    ts_tensor *(*apply)(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);
    void *user;
} ts_linear_hook;

/* x W^T through hook (NULL or a hook without apply: locally). */
ts_tensor *ts_linear(ts_ctx *ctx, const ts_linear_hook *hook, ts_tensor *x, ts_tensor *w);

/* residual + x W^T: locally one GEMM adding into a copy of residual
 * (ts_matmul_add); through a hook, its product and an add. */
ts_tensor *ts_linear_residual(ts_ctx *ctx, const ts_linear_hook *hook, ts_tensor *residual,
                              ts_tensor *x, ts_tensor *w);

#endif
