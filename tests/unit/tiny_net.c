#include "tiny_net.h"

#include <math.h>
#include <stdlib.h>

#include "splitmix.h"

enum { NORM1, WQ, WK, WV, WO, NORM2, W1, W3, W2, HEAD };

const char *const tiny_net_param_names[TINY_NET_N_PARAMS] = {"norm1", "wq", "wk", "wv", "wo",
                                                             "norm2", "w1", "w3", "w2", "head"};

static void set_shape(tiny_net *net, int p, int rows, int cols) {
    net->ndim[p] = cols ? 2 : 1;
    net->shape[p][0] = rows;
    net->shape[p][1] = cols;
}

bool tiny_net_init(tiny_net *net, uint64_t seed) {
    const int d = TINY_NET_DIM, f = TINY_NET_HIDDEN, v = TINY_NET_VOCAB;
    set_shape(net, NORM1, d, 0);
    set_shape(net, WQ, d, d);
    set_shape(net, WK, d, d);
    set_shape(net, WV, d, d);
    set_shape(net, WO, d, d);
    set_shape(net, NORM2, d, 0);
    set_shape(net, W1, d, f);
    set_shape(net, W3, d, f);
    set_shape(net, W2, f, d);
    set_shape(net, HEAD, d, v);
    net->n_values = 0;
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        net->offset[p] = net->n_values;
        net->n_values += tiny_net_param_count(net, p);
    }
    net->values = malloc((size_t)net->n_values * sizeof *net->values);
    if (!net->values) return false;

    test_rng rng = test_rng_seeded(seed);
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        ts_real *values = net->values + net->offset[p];
        if (net->ndim[p] == 1) { /* norm weights near 1, not exactly, so they matter */
            for (int i = 0; i < net->shape[p][0]; i++)
                values[i] = (ts_real)(1 + 0.2 * test_rng_normal(&rng));
        } else { /* fan-in scaling keeps activations of order 1 */
            int fan_in = net->shape[p][0];
            test_rng_fill_normal(&rng, values, (long)fan_in * net->shape[p][1],
                                 1 / sqrt((double)fan_in));
        }
    }
    test_rng_fill_normal(&rng, net->input, TINY_NET_BATCH * TINY_NET_SEQ * TINY_NET_DIM, 1);
    for (int i = 0; i < TINY_NET_BATCH * TINY_NET_SEQ; i++)
        net->targets[i] = test_rng_below(&rng, TINY_NET_VOCAB);
    net->targets[3] = TINY_NET_IGNORE;
    for (int t = 0; t < TINY_NET_SEQ; t++) net->positions[t] = t;
    return true;
}

void tiny_net_free(tiny_net *net) {
    free(net->values);
    net->values = NULL;
}

long tiny_net_param_count(const tiny_net *net, int p) {
    return (long)net->shape[p][0] * (net->ndim[p] == 2 ? net->shape[p][1] : 1);
}

void tiny_net_leaves(ts_ctx *ctx, tiny_net *net, ts_real *grads,
                     ts_tensor *params[TINY_NET_N_PARAMS]) {
    for (int p = 0; p < TINY_NET_N_PARAMS; p++)
        params[p] =
            ts_param(ctx, net->values + net->offset[p], grads ? grads + net->offset[p] : NULL,
                     net->ndim[p], net->shape[p], tiny_net_param_names[p]);
}

/* [B, T, D] -> [B, H, T, dh], with RoPE applied in the [B, T, H, dh] layout
 * the op expects. */
static ts_tensor *split_heads(ts_ctx *ctx, const tiny_net *net, ts_tensor *x, bool rotate) {
    const int dh = TINY_NET_DIM / TINY_NET_HEADS;
    ts_tensor *heads =
        ts_reshape(ctx, x, TS_SHAPE(TINY_NET_BATCH, TINY_NET_SEQ, TINY_NET_HEADS, dh));
    if (rotate) heads = ts_rope(ctx, heads, net->positions, 10000);
    return ts_permute(ctx, heads, (const int[]){0, 2, 1, 3});
}

ts_tensor *tiny_net_loss(ts_ctx *ctx, const tiny_net *net, ts_tensor *const *params) {
    const int dh = TINY_NET_DIM / TINY_NET_HEADS;
    ts_tensor *x =
        ts_wrap(ctx, (ts_real *)net->input, TS_SHAPE(TINY_NET_BATCH, TINY_NET_SEQ, TINY_NET_DIM));

    ts_tensor *u = ts_rmsnorm(ctx, x, params[NORM1], 1e-6);
    ts_tensor *q = split_heads(ctx, net, ts_matmul(ctx, u, params[WQ], false, false), true);
    ts_tensor *k = split_heads(ctx, net, ts_matmul(ctx, u, params[WK], false, false), true);
    ts_tensor *v = split_heads(ctx, net, ts_matmul(ctx, u, params[WV], false, false), false);
    ts_tensor *attended =
        ts_attention(ctx, q, k, v, ts_causal_mask(ctx, TINY_NET_SEQ), 1 / sqrt((double)dh));
    ts_tensor *merged = ts_reshape(ctx, ts_permute(ctx, attended, (const int[]){0, 2, 1, 3}),
                                   TS_SHAPE(TINY_NET_BATCH, TINY_NET_SEQ, TINY_NET_DIM));
    ts_tensor *h = ts_add(ctx, x, ts_matmul(ctx, merged, params[WO], false, false));

    ts_tensor *u2 = ts_rmsnorm(ctx, h, params[NORM2], 1e-6);
    ts_tensor *gate = ts_silu(ctx, ts_matmul(ctx, u2, params[W1], false, false));
    ts_tensor *up = ts_matmul(ctx, u2, params[W3], false, false);
    ts_tensor *mlp = ts_matmul(ctx, ts_mul(ctx, gate, up), params[W2], false, false);
    ts_tensor *h2 = ts_add(ctx, h, mlp);

    ts_tensor *logits = ts_matmul(ctx, h2, params[HEAD], false, false);
    return ts_cross_entropy(ctx, logits, net->targets, TINY_NET_IGNORE);
}
