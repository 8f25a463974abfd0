/* Before/after of each fused kernel (issue 16, docs/performance.md), in one
 * process so the two sides alternate every repetition: the fused op against
 * the composition of primitives it replaced, forward and first-order
 * backward at the shapes of a Transformer++ step of the benchmark size
 * (8 x 256 tokens, D = 256, 4 heads):
 *   - RMSNorm of [8, 256, 256] (x and weight require gradients);
 *   - silu of [8, 256, 256] (the SwiGLU gate): forward and the old rule
 *     (seven ops) against forward and the fused rule;
 *   - the SwiGLU gate silu(a) b of [8, 256, 256]: ts_silu and ts_mul (with
 *     silu's fused rule) against ts_swiglu, forward and backward;
 *   - causal softmax of the scores [8, 4, 256, 256]: the masked entries
 *     skipped exp; "before" is the same op under a mask of -1e30 instead of
 *     -inf. Since the softmax's exponential is the inline vectorised one
 *     (lever 7), both masks run the same loop and the line shows 1.00x;
 *   - causal attention of q, k, v [8, 4, 256, 64]: ts_attention under the
 *     causal mask (scores, softmax, mix) against ts_causal_attention,
 *     forward and backward, then the forward alone;
 *   - EBT's prediction-stream attention, q, k_self, v_self [8, 4, 256, 64]
 *     against the observed keys and values [8, 4, 257, 64]:
 *     ts_context_attention_composed (scores, self score, concat, softmax,
 *     slices, two mixes) against ts_context_attention, forward and
 *     backward, then the forward alone; then its plain backward with the
 *     pass's rule pair off against on (engine/autodiff.h), and EBT's use of
 *     it (a recorded gradient, then the backward and second-order pass of a
 *     loss of it and of the output), the pair off against on.
 * Each line: the fastest repetition of each side, the speedup, and the time saved
 * per step (the op's calls per step, L = 4 layers: per Transformer++ step,
 * for the context attention per EBT energy evaluation). Process
 * CPU time with BENCH_CLOCK=cpu, as bench_profile.
 * No verdict: the targets are on bench_profile's and bench_peer's lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/clock.h"
#include "engine/engine.h"
#include "train/machine_peak.h"

enum { REPS = 9, BATCH = 8, SEQ = 256, WIDTH = 256, HEADS = 4 };

static void fill(ts_tensor *t, unsigned *state, double lo, double hi) {
    for (long i = 0; i < t->numel; i++)
        t->data[i] = (ts_real)(lo + (hi - lo) * rand_r(state) / (double)RAND_MAX);
}

/* in: the side's inputs (x, and a weight or the seed gradient; q, k, v for
 * attention). */
typedef ts_tensor *(*side_fn)(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask);

static ts_tensor *rmsnorm_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_rmsnorm(ctx, in[0], in[1], 1e-5);
}

static ts_tensor *rmsnorm_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    ts_tensor *x = in[0], *w = in[1];
    ts_tensor *ms = ts_mean(ctx, ts_square(ctx, x), -1, true);
    return ts_mul(ctx, ts_mul(ctx, x, ts_rsqrt(ctx, ts_add_scalar(ctx, ms, 1e-5))), w);
}

static ts_tensor *silu_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_silu(ctx, in[0]);
}

/* The rule silu had before: sigmoid recomputed, then six more passes,
 * g s (1 + x (1 - s)), run here as plain ops after silu's forward. */
static ts_tensor *silu_old_rule(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    ts_tensor *x = in[0], *g = in[1];
    bool recording = ts_set_grad_enabled(ctx, false);
    ts_silu(ctx, x);
    ts_tensor *s = ts_sigmoid(ctx, x);
    ts_tensor *one_minus_s = ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1);
    ts_tensor *d = ts_mul(ctx, s, ts_add_scalar(ctx, ts_mul(ctx, x, one_minus_s), 1));
    ts_tensor *dx = ts_mul(ctx, g, d);
    ts_set_grad_enabled(ctx, recording);
    return dx;
}

static ts_tensor *swiglu_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_mul(ctx, ts_silu(ctx, in[0]), in[1]);
}

static ts_tensor *swiglu_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_swiglu(ctx, in[0], in[1]);
}

static ts_tensor *softmax_masked(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return ts_softmax(ctx, in[0], mask);
}

static ts_tensor *attention_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return ts_attention(ctx, in[0], in[1], in[2], mask, 0.125);
}

static ts_tensor *attention_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_causal_attention(ctx, in[0], in[1], in[2], 0.125);
}

static ts_tensor *context_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_context_attention_composed(ctx, in[0], in[1], in[2], in[3], in[4], 0.125);
}

static ts_tensor *context_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_context_attention(ctx, in[0], in[1], in[2], in[3], in[4], 0.125);
}

/* The forward alone: with recording off the result requires no gradient,
 * so run_side runs no backward. */
static ts_tensor *without_recording(ts_ctx *ctx, side_fn f, ts_tensor *const *in,
                                    const ts_tensor *mask) {
    bool recording = ts_set_grad_enabled(ctx, false);
    ts_tensor *y = f(ctx, in, mask);
    ts_set_grad_enabled(ctx, recording);
    return y;
}

static ts_tensor *attention_primitives_forward(ts_ctx *ctx, ts_tensor *const *in,
                                               const ts_tensor *mask) {
    return without_recording(ctx, attention_primitives, in, mask);
}

static ts_tensor *attention_fused_forward(ts_ctx *ctx, ts_tensor *const *in,
                                          const ts_tensor *mask) {
    return without_recording(ctx, attention_fused, in, mask);
}

/* The context attention with the plain pass's rule pairs off (before)
 * and on (after, as always in training): ctx->pair_rules is set by the
 * side and read by run_side's backward. */
static ts_tensor *context_unpaired(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    ctx->pair_rules = false;
    return context_fused(ctx, in, mask);
}

static ts_tensor *context_paired(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    ctx->pair_rules = true;
    return context_fused(ctx, in, mask);
}

/* EBT's use of it: the energy's gradient recorded (here with respect to q
 * and k_self, the prediction stream's), then a loss of that gradient and
 * of the output; run_side's plain backward of it is the backward and the
 * second-order pass, where the pair runs with P's gradient from the
 * second-order rules added in. */
static ts_tensor *context_second_order(ts_ctx *ctx, ts_tensor *const *in, bool paired) {
    ctx->pair_rules = paired;
    ts_tensor *y = context_fused(ctx, in, NULL), *first[2];
    ts_grad(ctx, 1, &y, &y, 2, (ts_tensor *[]){in[0], in[3]}, first, true);
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, y, y));
    for (int j = 0; j < 2; j++)
        loss = ts_add(ctx, loss, ts_sum_all(ctx, ts_mul(ctx, first[j], first[j])));
    return loss;
}

static ts_tensor *context_second_order_unpaired(ts_ctx *ctx, ts_tensor *const *in,
                                                const ts_tensor *mask) {
    (void)mask;
    return context_second_order(ctx, in, false);
}

static ts_tensor *context_second_order_paired(ts_ctx *ctx, ts_tensor *const *in,
                                              const ts_tensor *mask) {
    (void)mask;
    return context_second_order(ctx, in, true);
}

/* Forward and backward of one side, seeded with g; seconds. A side that
 * returns a tensor not requiring a gradient did its own backward (silu's
 * old rule) or has none (the forward-only lines). */
static ts_tensor *context_primitives_forward(ts_ctx *ctx, ts_tensor *const *in,
                                             const ts_tensor *mask) {
    return without_recording(ctx, context_primitives, in, mask);
}

static ts_tensor *context_fused_forward(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return without_recording(ctx, context_fused, in, mask);
}

static double run_side(ts_ctx *ctx, side_fn f, ts_tensor *const *in, const ts_tensor *mask,
                       ts_tensor *g, bool cpu) {
    ts_mark mark = ts_get_mark(ctx);
    double t0 = ts_clock_seconds(cpu);
    ts_tensor *y = f(ctx, in, mask);
    if (y->requires_grad) ts_backward(ctx, y, g);
    double dt = ts_clock_seconds(cpu) - t0;
    ts_release(ctx, mark);
    return dt;
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    bool cpu = ts_clock_cpu_requested();
    ts_ctx ctx;
    if (!ts_ctx_init(&ctx, 0)) return 1;
    unsigned seed = 5;
    ts_tensor *x = ts_new(&ctx, TS_SHAPE(BATCH, SEQ, WIDTH));
    ts_tensor *w = ts_new(&ctx, TS_SHAPE(WIDTH));
    ts_tensor *gx = ts_new(&ctx, TS_SHAPE(BATCH, SEQ, WIDTH));
    ts_tensor *scores = ts_new(&ctx, TS_SHAPE(BATCH, HEADS, SEQ, SEQ));
    ts_tensor *gs = ts_new(&ctx, TS_SHAPE(BATCH, HEADS, SEQ, SEQ));
    ts_real *xw_grad = calloc((size_t)(x->numel + w->numel), sizeof *xw_grad);
    ts_real *s_grad = calloc((size_t)scores->numel, sizeof *s_grad);
    ts_real *up_grad = calloc((size_t)gx->numel, sizeof *up_grad);
    ts_tensor *qkv = ts_new(&ctx, TS_SHAPE(3 * BATCH, HEADS, SEQ, WIDTH / HEADS));
    ts_tensor *gh = ts_new(&ctx, TS_SHAPE(BATCH, HEADS, SEQ, WIDTH / HEADS));
    ts_real *qkv_grad = calloc((size_t)qkv->numel, sizeof *qkv_grad);
    /* q, k, v, k_self, v_self of the context attention (k, v: L + 1 rows). */
    int context_rows[5] = {SEQ, SEQ + 1, SEQ + 1, SEQ, SEQ};
    long context_part[5], context_total = 0;
    for (int i = 0; i < 5; i++) {
        context_part[i] = (long)BATCH * HEADS * context_rows[i] * (WIDTH / HEADS);
        context_total += context_part[i];
    }
    ts_real *context_data = calloc((size_t)context_total, sizeof *context_data);
    ts_real *context_grad = calloc((size_t)context_total, sizeof *context_grad);
    if (!xw_grad || !s_grad || !up_grad || !qkv_grad || !context_data || !context_grad) return 1;
    fill(x, &seed, -2, 2);
    fill(w, &seed, 0.5, 1.5);
    fill(gx, &seed, -1, 1);
    fill(scores, &seed, -3, 3);
    fill(gs, &seed, -1, 1);
    fill(qkv, &seed, -1, 1);
    fill(gh, &seed, -1, 1);
    ts_tensor *heads[3];
    for (int i = 0; i < 3; i++) {
        long part = qkv->numel / 3;
        heads[i] = ts_param(&ctx, qkv->data + i * part, qkv_grad + i * part,
                            TS_SHAPE(BATCH, HEADS, SEQ, WIDTH / HEADS), i == 0 ? "q" : "kv");
    }
    ts_tensor *context_in[5];
    for (long i = 0, at = 0; i < 5; at += context_part[i++]) {
        context_in[i] = ts_param(&ctx, context_data + at, context_grad + at,
                                 TS_SHAPE(BATCH, HEADS, context_rows[i], WIDTH / HEADS), "context");
        fill(context_in[i], &seed, -1, 1);
    }
    ts_tensor *xp = ts_param(&ctx, x->data, xw_grad, TS_SHAPE(BATCH, SEQ, WIDTH), "x");
    ts_tensor *wp = ts_param(&ctx, w->data, xw_grad + x->numel, TS_SHAPE(WIDTH), "w");
    ts_tensor *sp = ts_param(&ctx, scores->data, s_grad, TS_SHAPE(BATCH, HEADS, SEQ, SEQ), "s");
    ts_tensor *up = ts_param(&ctx, gx->data, up_grad, TS_SHAPE(BATCH, SEQ, WIDTH), "up");
    ts_tensor *causal = ts_causal_mask(&ctx, SEQ);
    ts_tensor *finite = ts_new(&ctx, TS_SHAPE(SEQ, SEQ)); /* hides the same entries, via exp */
    for (long i = 0; i < finite->numel; i++)
        finite->data[i] = causal->data[i] == 0 ? 0 : (ts_real)-1e30;

    struct {
        const char *name;
        int calls; /* forward calls in a Transformer++ step (backward once each) */
        side_fn before, after;
        ts_tensor *in[5], *seed_grad;
        const ts_tensor *mask_before, *mask_after;
    } levers[] = {
        {"rmsnorm fwd+bwd [8,256,256]",
         2 * 4 + 1,
         rmsnorm_primitives,
         rmsnorm_fused,
         {xp, wp},
         gx,
         NULL,
         NULL},
        {"silu fwd+bwd [8,256,256]", 4, silu_old_rule, silu_fused, {xp, gx}, gx, NULL, NULL},
        {"swiglu fwd+bwd [8,256,256]",
         4,
         swiglu_primitives,
         swiglu_fused,
         {xp, up},
         gx,
         NULL,
         NULL},
        {"causal softmax fwd+bwd [8,4,256,256]",
         4,
         softmax_masked,
         softmax_masked,
         {sp},
         gs,
         finite,
         causal},
        {"causal attention fwd+bwd [8,4,256,64]",
         4,
         attention_primitives,
         attention_fused,
         {heads[0], heads[1], heads[2]},
         gh,
         causal,
         NULL},
        {"causal attention fwd [8,4,256,64]",
         4,
         attention_primitives_forward,
         attention_fused_forward,
         {heads[0], heads[1], heads[2]},
         gh,
         causal,
         NULL},
        {"context attention fwd+bwd [8,4,256,64]",
         4,
         context_primitives,
         context_fused,
         {context_in[0], context_in[1], context_in[2], context_in[3], context_in[4]},
         gh,
         NULL,
         NULL},
        {"context attention fwd [8,4,256,64]",
         4,
         context_primitives_forward,
         context_fused_forward,
         {context_in[0], context_in[1], context_in[2], context_in[3], context_in[4]},
         gh,
         NULL,
         NULL},
        {"context attention paired bwd",
         4,
         context_unpaired,
         context_paired,
         {context_in[0], context_in[1], context_in[2], context_in[3], context_in[4]},
         gh,
         NULL,
         NULL},
        {"context attention paired 2nd order",
         4,
         context_second_order_unpaired,
         context_second_order_paired,
         {context_in[0], context_in[1], context_in[2], context_in[3], context_in[4]},
         NULL,
         NULL,
         NULL},
    };
    printf("%s; fastest of %d alternating repetitions\n", cpu ? "process CPU time" : "wall time",
           REPS);
    printf("%-38s %11s %11s %8s %16s\n", "lever", "before [ms]", "after [ms]", "speedup",
           "saved/step [ms]");
    for (size_t l = 0; l < sizeof levers / sizeof levers[0]; l++) {
        double mb = INFINITY, ma = INFINITY; /* the least disturbed repetition of each */
        for (int r = -1; r < REPS; r++) {
            double b = run_side(&ctx, levers[l].before, levers[l].in, levers[l].mask_before,
                                levers[l].seed_grad, cpu);
            double a = run_side(&ctx, levers[l].after, levers[l].in, levers[l].mask_after,
                                levers[l].seed_grad, cpu);
            if (r >= 0) {
                mb = fmin(mb, b);
                ma = fmin(ma, a);
            }
        }
        printf("%-38s %11.2f %11.2f %7.2fx %16.1f\n", levers[l].name, 1e3 * mb, 1e3 * ma, mb / ma,
               1e3 * (mb - ma) * levers[l].calls);
    }
    free(xw_grad);
    free(s_grad);
    free(up_grad);
    free(qkv_grad);
    free(context_data);
    free(context_grad);
    ts_ctx_free(&ctx);
    return 0;
}
