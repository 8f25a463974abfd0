/* Differentiable ops. Each returns a new tensor in the arena (or a view
 * sharing its input's data where noted), records itself for differentiation
 * when an input requires a gradient, and books its executed FLOPs.
 * Shape errors go through ts_fail with the op's name and both shapes. */
#ifndef TS_OPS_H
#define TS_OPS_H

#include "engine/context.h"
#include "engine/tensor.h"

/* --- linear algebra (op_matmul.c) ---
 * op(a) @ op(b), op = transpose of the last two dims when the flag is set.
 * a: [..., m, k], b: [..., k, n] with the same leading (batch) dims, or b of
 * two dims shared by every batch (then a must not be transposed). */
ts_tensor *ts_matmul(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, bool transpose_a, bool transpose_b);
/* c + op(a) @ op(b), c shaped like the product (and left unchanged): c copied
 * into the output and the GEMM run with beta = 1, in place of the product's
 * zeroed output and a separate add over both (a residual connection after
 * a linear layer; eighth round, docs/performance.md). The sum is the add's
 * when the GEMM's depth is one OpenBLAS block (k = 256 at the benchmark
 * size); with more blocks the partial sums round in another order. */
ts_tensor *ts_matmul_add(ts_ctx *ctx, ts_tensor *c, ts_tensor *a, ts_tensor *b, bool transpose_a,
                         bool transpose_b);

/* --- elementwise (op_elementwise.c); binary ops broadcast numpy-style --- */
ts_tensor *ts_add(ts_ctx *ctx, ts_tensor *a, ts_tensor *b);
ts_tensor *ts_sub(ts_ctx *ctx, ts_tensor *a, ts_tensor *b);
ts_tensor *ts_mul(ts_ctx *ctx, ts_tensor *a, ts_tensor *b);
ts_tensor *ts_div(ts_ctx *ctx, ts_tensor *a, ts_tensor *b);
ts_tensor *ts_scale(ts_ctx *ctx, ts_tensor *a, double s);      /* s * a */
ts_tensor *ts_add_scalar(ts_ctx *ctx, ts_tensor *a, double s); /* a + s */
ts_tensor *ts_exp(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_log(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_sqrt(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_rsqrt(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_square(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_sigmoid(ts_ctx *ctx, ts_tensor *a);
ts_tensor *ts_silu(ts_ctx *ctx, ts_tensor *a);
/* silu(a) * b (the SwiGLU gate) in one pass, a and b of one shape; the same
 * values as ts_mul(ts_silu(a), b), fused forward and first-order rule. */
ts_tensor *ts_swiglu(ts_ctx *ctx, ts_tensor *a, ts_tensor *b);
/* The same for x [..., 2 F] holding a in its first F columns and b in its
 * last F (one GEMM over stacked [w1; w3] weights writes that): [..., F], and
 * one [..., 2 F] gradient; differentiable to any order. */
ts_tensor *ts_swiglu_packed(ts_ctx *ctx, ts_tensor *x);

/* --- reductions and broadcasting (op_reduce.c) --- */
/* Sums a into `shape` (same ndim or fewer, numpy broadcasting rules in reverse). */
ts_tensor *ts_sum_to(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape);
ts_tensor *ts_broadcast_to(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape);
ts_tensor *ts_sum(ts_ctx *ctx, ts_tensor *a, int axis, bool keepdim);
ts_tensor *ts_mean(ts_ctx *ctx, ts_tensor *a, int axis, bool keepdim);
ts_tensor *ts_sum_all(ts_ctx *ctx, ts_tensor *a);  /* shape [1] */
ts_tensor *ts_mean_all(ts_ctx *ctx, ts_tensor *a); /* shape [1] */

/* --- softmax family (op_softmax.c), over the last axis ---
 * mask: NULL or a constant additive mask of the last two dims' shape [rows,
 * cols] (0 to keep, -INFINITY to hide), shared by all leading dims. */
ts_tensor *ts_softmax(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask);
ts_tensor *ts_log_softmax(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask);
/* The VJP of softmax at its output y for the gradient g, y * (g - rowsum(g * y)),
 * one fused pass (softmax's own rule; exposed for fused ops that fall back
 * to primitives). */
ts_tensor *ts_softmax_backward(ts_ctx *ctx, ts_tensor *y, ts_tensor *g);
/* Mean over rows whose target is not ignore_index of -log softmax(logits)[target].
 * logits: [..., V]; targets: one per row. Returns shape [1]. */
ts_tensor *ts_cross_entropy(ts_ctx *ctx, ts_tensor *logits, const int32_t *targets,
                            int32_t ignore_index);
/* Additive causal mask [t, t]: row i sees columns 0..i. */
ts_tensor *ts_causal_mask(ts_ctx *ctx, int t);

/* --- shape (op_shape.c) --- */
ts_tensor *ts_reshape(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape); /* view */
ts_tensor *ts_permute(ts_ctx *ctx, ts_tensor *a, const int *perm);
ts_tensor *ts_transpose(ts_ctx *ctx, ts_tensor *a, int axis0, int axis1);
/* a[..., start:start+len, ...] along axis; a view when it is contiguous. */
ts_tensor *ts_slice(ts_ctx *ctx, ts_tensor *a, int axis, int start, int len);
/* Zero-padding of a along axis into a tensor of size `total` there, a at `start`. */
ts_tensor *ts_pad(ts_ctx *ctx, ts_tensor *a, int axis, int start, int total);
ts_tensor *ts_concat(ts_ctx *ctx, int n, ts_tensor *const *parts, int axis);
/* (op_adjacent.c) Whether parts [r_i, ...] (rows of one shape) lie one after
 * another in memory, each starting where the previous ends (in a counting
 * context, where tensors have no data: whether their rows match). */
bool ts_rows_adjacent(ts_ctx *ctx, int n, ts_tensor *const *parts);
/* Such parts (at most 4) as one view [r_0 + r_1 + ..., ...] without a copy;
 * its rule gives each part its rows of the gradient. Fails unless
 * ts_rows_adjacent. */
ts_tensor *ts_adjacent_rows(ts_ctx *ctx, int n, ts_tensor *const *parts);

/* --- indexing (op_index.c) --- */
/* Rows of table [V, D] at ids -> [n, D]. */
ts_tensor *ts_embedding(ts_ctx *ctx, ts_tensor *table, const int32_t *ids, long n);
/* The adjoint of ts_embedding: rows of g [n, D] added into [v, D] at ids. */
ts_tensor *ts_scatter_rows(ts_ctx *ctx, ts_tensor *g, const int32_t *ids, int v);
/* x[r, idx[r]] for x [..., V] -> [rows]; a negative index gives 0 and no gradient. */
ts_tensor *ts_gather_last(ts_ctx *ctx, ts_tensor *x, const int32_t *idx);
/* The adjoint of ts_gather_last: g [rows] into [rows, v] at idx. */
ts_tensor *ts_scatter_last(ts_ctx *ctx, ts_tensor *g, const int32_t *idx, int v);
ts_tensor *ts_one_hot(ts_ctx *ctx, const int32_t *idx, long n, int v); /* constant */

/* --- network layers (op_nn.c) --- */
/* x * rsqrt(mean(x^2, last axis) + eps) * weight; weight [D]. */
ts_tensor *ts_rmsnorm(ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps);
/* Rotary position embedding of x [..., T, H, dh] (or [T, H, dh]); positions[T].
 * Rotates pairs (2i, 2i+1) by positions[t] * theta^(-2i/dh), as Meta's Llama. */
ts_tensor *ts_rope(ts_ctx *ctx, ts_tensor *x, const int32_t *positions, double theta);

/* --- attention (op_attention.c) --- */
/* softmax(q k^T * scale + mask) v with q, k, v [B, H, T, dh]: the
 * composition of primitives (matmul, softmax, matmul), any mask. */
ts_tensor *ts_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                        const ts_tensor *mask, double scale);
/* The same under the causal mask (row i sees keys 0..i), q, k, v of one
 * shape [..., T, dh], fused: no [T, T] scores per head, the masked half
 * skipped. Its plain backward is fused too; a recorded backward
 * (create_graph) is the primitive composition, differentiable to any order. */
ts_tensor *ts_causal_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v, double scale);
/* The same without a mask (every row sees every key), fused the same way:
 * ts_attention(q, k, v, NULL, scale) without its [T, T] scores in memory. */
ts_tensor *ts_full_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v, double scale);
/* The same for n_heads heads read in place from qkv [B, T, 3 D] (q, k, v
 * side by side in each row, as a fused Q|K|V projection writes them; head j
 * at columns j dh of each, dh = D / n_heads), output [B, T, D] (head j at
 * columns j dh): no head permutes. With positions (NULL: none), q and k are
 * rotated by RoPE (as ts_rope on [B, T, H, dh]) inside the op. Plain
 * backward fused into one d(qkv); a recorded backward is the primitive
 * composition. */
ts_tensor *ts_causal_attention_packed(ts_ctx *ctx, ts_tensor *qkv, int n_heads,
                                      const int32_t *positions, double theta, double scale);
/* (op_packed_heads.c) Part `part` of n_parts projections side by side, x
 * [B, T, n_parts D], as heads [B, H, T, dh] (head j at columns part D + j dh),
 * rotated by RoPE at positions (NULL: none): the value of ts_permute of
 * ts_rope of the part's slice reshaped to [B, T, H, dh], in one pass. Its
 * plain gradient adds into a sum the input's gradient already has (the
 * packed attention's d(qkv)); a recorded one is the adjoint composition. */
ts_tensor *ts_packed_heads(ts_ctx *ctx, ts_tensor *x, int part, int n_parts, int n_heads,
                           const int32_t *positions, double theta);
/* --- context attention (op_context_attention.c) --- */
/* q, k_self, v_self [..., L, dh] attend to context keys k, values v
 * [..., C, dh], C >= L, aligned at the end (row r sees context keys
 * 0..r + C - L), and each row to its own key k_self[r] (value v_self[r]): one
 * softmax over both (EBT's prediction stream, C = L + 1). Fused as three
 * bilinear strip ops that skip the masked context keys and are each other's
 * rules: every order of derivative runs them, plain and recorded gradients
 * are equal bit for bit. */
ts_tensor *ts_context_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                ts_tensor *k_self, ts_tensor *v_self, double scale);
/* The same on token-major rows: q, k_self, v_self and the result [B, L, H, dh]
 * (the projections reshaped, no head permutes), the context k, v
 * [B, H, C, dh]; the strips read and write each head's rows where they lie. */
ts_tensor *ts_context_attention_tokens(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                       ts_tensor *k_self, ts_tensor *v_self, double scale);
/* The same function composed of primitives (scaled q, matmul, the self score
 * concatenated, softmax under the mask, slices, two mixes): the reference. */
ts_tensor *ts_context_attention_composed(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                         ts_tensor *k_self, ts_tensor *v_self, double scale);

/* Copies an index array into the arena (ops keep indices for their backward). */
int32_t *ts_copy_index(ts_ctx *ctx, const int32_t *idx, long n);

#endif
