/* Tensors: contiguous, row-major, up to four dimensions, element type ts_real.
 * A tensor header and its data live in the context's arena unless the data is
 * wrapped from outside (parameters in the model's flat buffer). */
#ifndef TS_TENSOR_H
#define TS_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/real.h"

#define TS_MAX_DIMS 4

typedef struct ts_ctx ts_ctx;
typedef struct ts_node ts_node;

typedef struct ts_tensor {
    int ndim;
    int shape[TS_MAX_DIMS];
    long numel;
    ts_real *data;
    bool requires_grad;     /* a leaf to differentiate, or the result of a recorded op */
    ts_node *node;          /* the op that produced it; NULL for leaves and constants */
    struct ts_tensor *grad; /* where ts_backward accumulates a leaf's gradient */
    const char *name;       /* optional, for error messages */
    /* Scratch owned by the gradient pass that is running (see autodiff.c). */
    unsigned long acc_epoch;
    unsigned long target_epoch;
    struct ts_tensor *acc;
    bool acc_owned;  /* acc's data is referenced by nothing else: a plain pass adds into it */
    bool own_buffer; /* data is a buffer ts_new allocated for this tensor alone, of its size */
} ts_tensor;

/* Shape literal: TS_SHAPE(2, 3) -> 2, (const int[]){2, 3}. */
#define TS_NARGS_(...) (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int))
#define TS_SHAPE(...)                                                                              \
    TS_NARGS_(__VA_ARGS__), (const int[]) {                                                        \
        __VA_ARGS__                                                                                \
    }

/* New tensors in the arena. ts_new leaves the data uninitialised. In a
 * counting context (ts_ctx_init_counting) tensors have no data: data is NULL. */
ts_tensor *ts_new(ts_ctx *ctx, int ndim, const int *shape);
ts_tensor *ts_zeros(ts_ctx *ctx, int ndim, const int *shape);
ts_tensor *ts_full(ts_ctx *ctx, int ndim, const int *shape, ts_real value);
ts_tensor *ts_from_array(ts_ctx *ctx, int ndim, const int *shape, const ts_real *values);
ts_tensor *ts_new_like(ts_ctx *ctx, const ts_tensor *t);
/* A leaf over caller-owned memory (not copied). */
ts_tensor *ts_wrap(ts_ctx *ctx, ts_real *data, int ndim, const int *shape);
/* A trainable leaf over caller-owned value and gradient memory (a parameter
 * inside the flat parameter and gradient buffers). */
ts_tensor *ts_param(ts_ctx *ctx, ts_real *data, ts_real *grad, int ndim, const int *shape,
                    const char *name);
/* The same data, cut from the graph: no gradient flows through it. */
ts_tensor *ts_detach(ts_ctx *ctx, ts_tensor *t);
/* Marks a leaf (no producing op) as something gradients are taken with respect to. */
void ts_set_requires_grad(ts_ctx *ctx, ts_tensor *t, bool requires_grad);

bool ts_same_shape(const ts_tensor *a, const ts_tensor *b);
/* Copies `rows` rows of `width` elements from src (rows ld_src apart) to
 * dst (rows ld_dst apart): the layout changes of slices, pads, concats and
 * heads of a packed product. */
void ts_copy_rows(const ts_real *src, long ld_src, ts_real *dst, long ld_dst, long rows,
                  long width);
/* "[2, 3, 4]" into buf; returns buf. */
const char *ts_shape_str(const ts_tensor *t, char *buf, int size);
/* The size along axis, which may be negative (-1 = last). */
int ts_dim(const ts_tensor *t, int axis);
/* The value of a one-element tensor (NaN in a counting context). */
ts_real ts_item(ts_ctx *ctx, const ts_tensor *t);

#endif
