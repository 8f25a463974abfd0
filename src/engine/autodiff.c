#include "engine/autodiff.h"

#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "engine/profile.h"
#include "engine/recycler.h"

/* The bytes of an op's output and inputs, each buffer once (the profile's
 * tensor bytes, engine/profile.h). A counting context's tensors have no
 * buffers: each counts. In an executing context a tensor without one was
 * never formed (the context attention's scores, turned into probabilities
 * in cache): it moved no bytes. */
static double tensor_bytes(const ts_ctx *ctx, const ts_tensor *out, int n_in,
                           ts_tensor *const *in) {
    bool formed_only = !ctx->counting;
    double elements = formed_only && !out->data ? 0 : (double)out->numel;
    for (int i = 0; i < n_in; i++) {
        if (formed_only && !in[i]->data) continue;
        bool counted = in[i]->data && in[i]->data == out->data;
        for (int j = 0; j < i && !counted; j++) counted = in[i]->data && in[j]->data == in[i]->data;
        if (!counted) elements += (double)in[i]->numel;
    }
    return elements * sizeof(ts_real);
}

ts_node *ts_record(ts_ctx *ctx, const char *op, ts_backward_fn backward, ts_tensor *out, int n_in,
                   ts_tensor *const *in) {
    if (ctx->profile) /* every op ends here */
        ts_profile_book(ctx, op, tensor_bytes(ctx, out, n_in, in));
    if (!ctx->grad_enabled) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= in[i]->requires_grad;
    if (!any) return NULL;
    if (ctx->tape_len == ctx->tape_cap) {
        long cap = ctx->tape_cap * 2;
        ts_node **tape = realloc(ctx->tape, (size_t)cap * sizeof *tape);
        if (!tape) ts_fail(ctx, op, "out of memory growing the graph to %ld nodes", cap);
        ctx->tape = tape;
        ctx->tape_cap = cap;
    }
    ts_node *node = ts_alloc(ctx, sizeof *node);
    memset(node, 0, sizeof *node);
    node->op = op;
    node->backward = backward;
    node->n_in = n_in;
    for (int i = 0; i < n_in; i++) node->in[i] = in[i];
    node->out = out;
    node->tape_index = ctx->tape_len;
    node->made_by_gradient_pass = ctx->phase == TS_BACKWARD;
    ctx->tape[ctx->tape_len++] = node;
    out->node = node;
    out->requires_grad = true;
    return node;
}

/* Which tensors a pass delivers gradients to. */
enum pass_kind { PASS_GRAD, PASS_BACKWARD };

static bool is_target(const ts_ctx *ctx, enum pass_kind kind, const ts_tensor *t) {
    if (kind == PASS_GRAD) return t->target_epoch == ctx->epoch;
    return t->node == NULL && t->requires_grad;
}

/* acc += g in place, booked as the add it replaces. */
static void add_in_place(ts_ctx *ctx, ts_tensor *acc, const ts_tensor *g) {
    ts_real *restrict dst = acc->data;
    const ts_real *restrict src = g->data;
    for (long i = 0; i < acc->numel; i++) dst[i] += src[i];
    ts_count_flops(ctx, (double)acc->numel);
    ts_record(ctx, "add", NULL, acc, 0, NULL); /* recording is off: books it to the profile */
}

/* Adds g into t's gradient. g_owned: g's data is referenced by nothing else
 * (see owned_gradient; with create_graph only for a rule with a
 * backward_into, whose later rules may add into it). In a plain pass
 * (recording off) a sum goes into an owned buffer in place instead of into a
 * new tensor: the same sums (a + b and b + a are the same float), one write
 * into memory already in use instead of a fresh tensor's (fifth round,
 * docs/performance.md). With create_graph every sum here is an add op of the
 * graph. */
static void accumulate(ts_ctx *ctx, ts_tensor *t, ts_tensor *g, bool g_owned) {
    bool in_place = !ctx->grad_enabled && !ctx->counting;
    if (t->acc_epoch != ctx->epoch) {
        t->acc_epoch = ctx->epoch;
        t->acc = g;
        t->acc_owned = g_owned;
    } else if (in_place && ts_same_shape(t->acc, g) && (t->acc_owned || g_owned)) {
        if (!t->acc_owned) { /* add into g's buffer instead */
            ts_tensor *other = t->acc;
            t->acc = g;
            g = other;
            g_owned = false;
        }
        add_in_place(ctx, t->acc, g);
        t->acc_owned = true;
        if (g_owned) ts_recycler_give(ctx, g); /* added in: nothing reads it again */
    } else {
        t->acc = ts_add(ctx, t->acc, g);
        t->acc_owned = in_place; /* a new tensor that only t->acc holds */
    }
}

/* Where ts_backward's plain pass puts input in's gradient itself, if it may
 * be added into there directly: a leaf's .grad, or the view of the leaves'
 * .grad buffers that an op over leaves keeps (node->leaf_grads). NULL
 * otherwise. */
static ts_tensor *leaf_grad_sum(const ts_ctx *ctx, enum pass_kind kind, const ts_tensor *in) {
    if (kind != PASS_BACKWARD || ctx->grad_enabled) return NULL;
    ts_tensor *sum = NULL;
    if (is_target(ctx, kind, in))
        sum = in->grad;
    else if (in->node && in->node->leaf_grads) {
        sum = in->node->leaf_grads;
        for (int i = 0; i < in->node->n_in; i++)
            if (!is_target(ctx, kind, in->node->in[i])) return NULL;
    }
    return sum && sum->data && ts_same_shape(sum, in) ? sum : NULL;
}

/* For a rule that can accumulate (backward_into): the sums it may add into,
 * sums[j] for every needed input j whose gradients so far lie in a buffer
 * only the accumulation holds (acc_owned), or, in ts_backward, where the
 * pass puts the gradient itself (leaf_grad_sum; into_leaf[j] set). A
 * weight's gradient GEMM then runs with beta = 1 straight into the flat
 * gradient buffer, instead of into a fresh tensor that OpenBLAS first
 * zeroes and add_into_leaf_grad then adds and drops (tenth round,
 * docs/performance.md). Whether there is any. */
static bool offer_sums(const ts_ctx *ctx, enum pass_kind kind, const ts_node *node,
                       const bool *needs, ts_tensor **sums, bool *into_leaf) {
    if (!node->backward_into || ctx->counting) return false;
    bool any = false;
    for (int j = 0; j < node->n_in; j++) {
        ts_tensor *in = node->in[j];
        if (!needs[j]) continue;
        ts_tensor *leaf_sum = leaf_grad_sum(ctx, kind, in);
        if (leaf_sum) {
            sums[j] = leaf_sum;
            into_leaf[j] = any = true;
            continue;
        }
        if (kind == PASS_BACKWARD && is_target(ctx, kind, in)) continue;
        if (in->acc_epoch == ctx->epoch && in->acc_owned && ts_same_shape(in->acc, in)) {
            sums[j] = in->acc;
            any = true;
        }
    }
    return any;
}

/* Whether t's data overlaps g's. */
static bool overlaps(const ts_tensor *t, const ts_tensor *g) {
    return t && t->data && g->data && t->data < g->data + g->numel && g->data < t->data + t->numel;
}

/* Whether another input's gradient shares memory with gin[j]'s. */
static bool shares_buffer(ts_tensor *const *gin, int n, int j) {
    for (int k = 0; k < n; k++)
        if (k != j && overlaps(gin[k], gin[j])) return true;
    return false;
}

/* Whether gin[j], given by a rule that started at mark, is a tensor whose
 * data only it references: data the rule allocated (not its incoming
 * gradient, a view of it, a forward tensor or a parameter), shared with no
 * other input's gradient. */
static bool owned_gradient(const ts_ctx *ctx, ts_arena_mark mark, ts_tensor *const *gin, int n,
                           int j) {
    const ts_real *data = gin[j]->data;
    return data &&
           (ts_arena_allocated_since(&ctx->arena, mark, data) ||
            ts_recycler_taken_by_rule(ctx, data)) &&
           !shares_buffer(gin, n, j);
}

/* Whether gin[j] is the node's own incoming gradient handed on unchanged (a
 * pass-through: an add's addend, ts_matmul_add's c, a reshape's view) in a
 * plain pass, where that gradient lay in a buffer only the accumulation held
 * and nothing reads it after this rule: the node's output is no target of
 * the pass, and no other input's gradient shares the buffer. Its ownership
 * then passes on with it, so a later rule may add into it (a residual
 * stream's gradient meets its RMSNorm's this way; eighth round,
 * docs/performance.md). Never with create_graph: there the recorded rules
 * of this node read the incoming gradient again in the next order. */
static bool passes_on_owned_gradient(const ts_ctx *ctx, enum pass_kind kind, const ts_node *node,
                                     ts_tensor *const *gin, int j) {
    const ts_tensor *out = node->out, *g = out->acc;
    if (ctx->grad_enabled || ctx->counting || !out->acc_owned || is_target(ctx, kind, out))
        return false;
    return g && g->data && gin[j]->data == g->data && gin[j]->numel == g->numel &&
           !shares_buffer(gin, node->n_in, j);
}

static void add_into_leaf_grad(ts_ctx *ctx, ts_tensor *leaf, const ts_tensor *g) {
    ts_count_flops(ctx, (double)g->numel);
    if (!ctx->counting) { /* counting: no buffer to add into, and none to create */
        if (!leaf->grad) leaf->grad = ts_zeros(ctx, leaf->ndim, leaf->shape);
        ts_real *dst = leaf->grad->data;
        for (long i = 0; i < g->numel; i++) dst[i] += g->data[i];
    }
    if (ctx->profile) /* two buffers: the gradient and the leaf's sum */
        ts_profile_book(ctx, "accumulate leaf gradient", 2.0 * (double)g->numel * sizeof(ts_real));
}

/* After node's rule in a plain pass: its output's gradient is dead (every
 * consumer of the output came later on the tape and has run, and nothing
 * was recorded), unless it is a target, the accumulation did not own it,
 * or an input's gradient shares it (passed on). Then its buffer goes to
 * the recycler (engine/recycler.h). */
static void recycle_output_gradient(ts_ctx *ctx, enum pass_kind kind, const ts_node *node) {
    const ts_tensor *out = node->out;
    ts_tensor *g = out->acc;
    if (!ctx->recycler.active || !g || !out->acc_owned || is_target(ctx, kind, out)) return;
    for (int j = 0; j < node->n_in; j++) {
        const ts_tensor *in = node->in[j];
        if (in->acc_epoch == ctx->epoch && overlaps(in->acc, g)) return;
    }
    ts_recycler_give(ctx, g);
}

/* Checks outputs and seeds before anything changes, so a caught error
 * leaves the context as it was. */
static void check_outputs(ts_ctx *ctx, const char *who, int n_out, ts_tensor *const *outputs,
                          ts_tensor *const *seeds) {
    char s1[64], s2[64];
    for (int i = 0; i < n_out; i++) {
        ts_tensor *out = outputs[i];
        ts_tensor *seed = seeds ? seeds[i] : NULL;
        if (!out->requires_grad)
            ts_fail(ctx, who, "output %d does not depend on anything that requires a gradient", i);
        if (out->node && (out->node->tape_index >= ctx->tape_len ||
                          ctx->tape[out->node->tape_index] != out->node))
            ts_fail(ctx, who, "output %d belongs to a graph that was already released", i);
        if (!seed && out->numel != 1)
            ts_fail(ctx, who, "output %d has shape %s: the gradient of a non-scalar needs a seed",
                    i, ts_shape_str(out, s1, sizeof s1));
        if (seed && !ts_same_shape(seed, out))
            ts_fail(ctx, who, "seed %d has shape %s but output has shape %s", i,
                    ts_shape_str(seed, s1, sizeof s1), ts_shape_str(out, s2, sizeof s2));
    }
}

static void seed_outputs(ts_ctx *ctx, int n_out, ts_tensor *const *outputs,
                         ts_tensor *const *seeds) {
    for (int i = 0; i < n_out; i++) {
        ts_tensor *out = outputs[i];
        ts_tensor *seed = seeds ? seeds[i] : NULL;
        accumulate(ctx, out, seed ? seed : ts_full(ctx, out->ndim, out->shape, 1), false);
    }
}

/* Marks the nodes a pass must visit: those with an input that is a target or
 * that was produced by a marked node. */
static void mark_needed(ts_ctx *ctx, enum pass_kind kind, long last) {
    for (long i = 0; i <= last; i++) {
        ts_node *node = ctx->tape[i];
        for (int j = 0; j < node->n_in; j++) {
            ts_tensor *in = node->in[j];
            if (is_target(ctx, kind, in) || (in->node && in->node->needed_epoch == ctx->epoch)) {
                node->needed_epoch = ctx->epoch;
                break;
            }
        }
    }
}

/* One rule's call in a pass: what the pass hands it and what it gives back. */
typedef struct rule_call {
    bool needs[TS_NODE_MAX_INPUTS];
    ts_tensor *sums[TS_NODE_MAX_INPUTS];
    bool into_leaf[TS_NODE_MAX_INPUTS];
    ts_tensor *gin[TS_NODE_MAX_INPUTS];
    bool offered; /* some sum offered (offer_sums): the node's backward_into runs */
} rule_call;

static void prepare_call(const ts_ctx *ctx, enum pass_kind kind, const ts_node *node,
                         rule_call *call) {
    memset(call, 0, sizeof *call);
    for (int j = 0; j < node->n_in; j++) {
        ts_tensor *in = node->in[j];
        call->needs[j] =
            is_target(ctx, kind, in) || (in->node && in->node->needed_epoch == ctx->epoch);
    }
    call->offered = offer_sums(ctx, kind, node, call->needs, call->sums, call->into_leaf);
}

static ts_rule_io rule_io(rule_call *call) {
    return (ts_rule_io){call->needs, call->sums, call->gin};
}

/* Hands the gradients a rule gave (call->gin) to the node's inputs. */
static void deliver(ts_ctx *ctx, enum pass_kind kind, const ts_node *node, rule_call *call,
                    ts_arena_mark rule_start, bool create_graph) {
    ts_tensor **gin = call->gin;
    /* Sums the rule added into first: another gradient of the same
     * tensor (an input twice) then adds to the new sum. */
    bool summed[TS_NODE_MAX_INPUTS] = {false};
    for (int j = 0; j < node->n_in; j++) {
        summed[j] = call->sums[j] && gin[j] && gin[j]->data == call->sums[j]->data;
        /* still only the sum holds it; a gradient added into leaf .grad
         * buffers has arrived, and nothing is left to hand on */
        if (summed[j] && !call->into_leaf[j]) node->in[j]->acc = gin[j];
    }
    for (int j = 0; j < node->n_in; j++) {
        if (!call->needs[j] || !gin[j] || summed[j]) continue;
        ts_tensor *in = node->in[j];
        bool owned = ((!create_graph || node->backward_into) &&
                      owned_gradient(ctx, rule_start, gin, node->n_in, j)) ||
                     passes_on_owned_gradient(ctx, kind, node, gin, j);
        if (kind == PASS_BACKWARD && is_target(ctx, kind, in)) {
            add_into_leaf_grad(ctx, in, gin[j]);
            if (owned) ts_recycler_give(ctx, gin[j]); /* added in: dead */
        } else {
            accumulate(ctx, in, gin[j], owned);
        }
    }
}

/* The producer whose rule node's backward_with_producer may run together
 * with its own (autodiff.h), or NULL: in a plain pass of an executing
 * context, the node that made input 0 just before node on the tape (every
 * other consumer of input 0 came later and has run), needed by the pass,
 * input 0 no target of it. */
static ts_node *pair_producer(const ts_ctx *ctx, enum pass_kind kind, const ts_node *node) {
    if (!node->backward_with_producer || !ctx->pair_rules || ctx->grad_enabled || ctx->counting ||
        node->n_in < 1)
        return NULL;
    const ts_tensor *in = node->in[0];
    ts_node *producer = in->node;
    if (!producer || producer->tape_index + 1 != node->tape_index ||
        producer->needed_epoch != ctx->epoch || is_target(ctx, kind, in))
        return NULL;
    return producer;
}

/* Runs node's rule with its producer's as one (pair_producer): true if the
 * pair's rule took them both. The producer's gradient is then spent, and
 * the pass skips its node. */
static bool run_pair(ts_ctx *ctx, enum pass_kind kind, ts_node *node, ts_node *producer,
                     rule_call *own, ts_arena_mark rule_start) {
    rule_call theirs;
    prepare_call(ctx, kind, producer, &theirs);
    ts_tensor *p = producer->out;
    ts_tensor *p_gradient = p->acc_epoch == ctx->epoch ? p->acc : NULL;
    if (!node->backward_with_producer(ctx, node, node->out->acc, p_gradient, rule_io(own),
                                      rule_io(&theirs)))
        return false;
    deliver(ctx, kind, node, own, rule_start, false);
    deliver(ctx, kind, producer, &theirs, rule_start, false);
    if (p_gradient) recycle_output_gradient(ctx, kind, producer);
    p->acc_epoch = 0; /* no gradient this pass: its node is not run */
    return true;
}

static void run_pass(ts_ctx *ctx, enum pass_kind kind, const char *who, int n_out,
                     ts_tensor *const *outputs, ts_tensor *const *seeds, bool create_graph) {
    check_outputs(ctx, who, n_out, outputs, seeds);
    long last = -1;
    for (int i = 0; i < n_out; i++)
        if (outputs[i]->node && outputs[i]->node->tape_index > last)
            last = outputs[i]->node->tape_index;
    mark_needed(ctx, kind, last);

    bool saved_grad_enabled = ts_set_grad_enabled(ctx, create_graph);
    enum ts_phase saved_phase = ctx->phase;
    enum ts_pass saved_pass = ctx->pass;
    enum ts_pass rule_pass = create_graph ? TS_PASS_BACKWARD_GRAPH : TS_PASS_BACKWARD;
    bool saved_into_leaf_grads = ctx->into_leaf_grads;
    ctx->phase = TS_BACKWARD;
    ctx->pass = rule_pass;
    ctx->into_leaf_grads = kind == PASS_BACKWARD;
    if (!create_graph) ts_recycler_begin(ctx);
    seed_outputs(ctx, n_out, outputs, seeds);
    /* An output that is itself a leaf receives its seed directly. */
    for (int i = 0; kind == PASS_BACKWARD && i < n_out; i++)
        if (is_target(ctx, kind, outputs[i])) add_into_leaf_grad(ctx, outputs[i], outputs[i]->acc);

    for (long i = last; i >= 0; i--) {
        ts_node *node = ctx->tape[i];
        if (node->needed_epoch != ctx->epoch || node->out->acc_epoch != ctx->epoch) continue;
        rule_call call;
        prepare_call(ctx, kind, node, &call);
        ctx->pass = node->made_by_gradient_pass ? TS_PASS_SECOND_ORDER : rule_pass;
        ts_arena_mark rule_start = ts_arena_get_mark(&ctx->arena);
        ts_recycler_rule_start(ctx);
        ts_node *producer = pair_producer(ctx, kind, node);
        if (producer && run_pair(ctx, kind, node, producer, &call, rule_start)) {
            recycle_output_gradient(ctx, kind, node);
            continue;
        }
        if (call.offered)
            node->backward_into(ctx, node, node->out->acc, call.needs, call.sums, call.gin);
        else
            node->backward(ctx, node, node->out->acc, call.needs, call.gin);
        deliver(ctx, kind, node, &call, rule_start, create_graph);
        recycle_output_gradient(ctx, kind, node);
    }
    ts_recycler_end(ctx);
    ctx->phase = saved_phase;
    ctx->pass = saved_pass;
    ctx->into_leaf_grads = saved_into_leaf_grads;
    ts_set_grad_enabled(ctx, saved_grad_enabled);
}

void ts_grad(ts_ctx *ctx, int n_out, ts_tensor *const *outputs, ts_tensor *const *seeds, int n_in,
             ts_tensor *const *inputs, ts_tensor **grads, bool create_graph) {
    ctx->epoch++;
    for (int j = 0; j < n_in; j++) {
        if (!inputs[j]->requires_grad)
            ts_fail(ctx, "grad", "input %d%s%s does not require a gradient", j,
                    inputs[j]->name ? " " : "", inputs[j]->name ? inputs[j]->name : "");
        inputs[j]->target_epoch = ctx->epoch;
    }
    run_pass(ctx, PASS_GRAD, "grad", n_out, outputs, seeds, create_graph);
    for (int j = 0; j < n_in; j++) {
        ts_tensor *in = inputs[j];
        grads[j] = in->acc_epoch == ctx->epoch ? in->acc : ts_zeros(ctx, in->ndim, in->shape);
    }
    ctx->epoch++; /* invalidates the scratch so a later pass starts clean */
}

void ts_backward(ts_ctx *ctx, ts_tensor *output, ts_tensor *seed) {
    ctx->epoch++;
    ts_tensor *seeds[1] = {seed};
    run_pass(ctx, PASS_BACKWARD, "backward", 1, &output, seed ? seeds : NULL, false);
    ctx->epoch++;
}

static void unit_boundary_backward(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                   ts_tensor **gin) {
    bool begin = node->iattr[1];
    if (ctx->unit_hook)
        ctx->unit_hook(ctx->unit_hook_user, node->iattr[0],
                       begin ? TS_UNIT_BACKWARD_END : TS_UNIT_BACKWARD_BEGIN, ctx->into_leaf_grads);
    if (needs[0]) gin[0] = gout;
}

ts_tensor *ts_unit_boundary(ts_ctx *ctx, ts_tensor *x, int unit, bool begin) {
    if (!ctx->unit_hook || unit < 1) return x;
    ctx->unit_hook(ctx->unit_hook_user, unit, begin ? TS_UNIT_FORWARD_BEGIN : TS_UNIT_FORWARD_END,
                   false);
    ts_tensor *out = ts_wrap(ctx, x->data, x->ndim, x->shape);
    ts_node *node = ts_record(ctx, "unit boundary", unit_boundary_backward, out, 1, &x);
    if (node) {
        node->iattr[0] = unit;
        node->iattr[1] = begin;
    }
    return out;
}
