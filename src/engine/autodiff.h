/* Reverse-mode differentiation over a recorded graph of ops.
 *
 * Every op with an input that requires a gradient appends a node to the
 * context's tape (unless recording is off). A node's backward rule computes
 * the input gradients by calling ordinary ops, so when a gradient pass runs
 * with create_graph those ops are recorded too and the gradient can itself be
 * differentiated, to any order. Without create_graph the same rules run with
 * recording off and cost nothing extra. */
#ifndef TS_AUTODIFF_H
#define TS_AUTODIFF_H

#include "engine/context.h"
#include "engine/tensor.h"

#define TS_NODE_MAX_INPUTS 4

/* Sets gin[i] for every input i with needs[i]; may leave others NULL. */
typedef void (*ts_backward_fn)(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                               ts_tensor **gin);

/* A rule that can add a gradient into the sum an input has received so far
 * instead of returning a tensor of its own. sums[i], where not NULL, is that
 * sum in a buffer nothing else references or reads: in a plain pass (no
 * create_graph) any rule's fresh gradient or an earlier sum; with
 * create_graph only a gradient given by a rule that has a backward_into
 * (whose gradients are tensors nothing else in the rule reads). The rule
 * either adds its gradient for input i into sums[i]'s buffer and sets gin[i]
 * to a tensor over that buffer (sums[i] itself, or with create_graph the
 * output of an op recorded with sums[i] as an input, whose rule must not
 * read sums[i]: the buffer now holds the sum), or sets gin[i] as
 * ts_backward_fn does. Otherwise the same rule as backward. */
typedef void (*ts_backward_into_fn)(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                    ts_tensor *const *sums, ts_tensor **gin);

/* What a pass hands one node's rule (as ts_backward_into_fn's arguments):
 * which inputs need a gradient, the sums it may add into (NULL entries:
 * none), and where it puts the gradients. */
typedef struct ts_rule_io {
    const bool *needs;
    ts_tensor *const *sums;
    ts_tensor **gin;
} ts_rule_io;

/* The rules of a node and of its producer (the node that made its input 0)
 * run as one, in a plain pass of an executing context: a pair of ops whose
 * rules cost less as one loop than one after the other (the node's gradient
 * of input 0 is then never written to memory and read back). A pass calls it
 * instead of the node's own rule only when the producer is the node just
 * before it on the tape, so every other consumer of input 0 has already
 * added its gradient (producer_gout: that sum, NULL if none), and input 0 is
 * no target of the pass. The rule sets the gradients of the producer's
 * inputs (producer.gin) as the producer's rule would for the sum of
 * producer_gout and this node's gradient of input 0, and those of its own
 * inputs but input 0 (own.gin[0] stays NULL); the pass then skips the
 * producer. It returns false, having done nothing, when the two rules must
 * run one after the other. */
typedef bool (*ts_pair_backward_fn)(ts_ctx *ctx, ts_node *node, ts_tensor *gout,
                                    ts_tensor *producer_gout, ts_rule_io own, ts_rule_io producer);

struct ts_node {
    const char *op;
    ts_backward_fn backward;
    ts_backward_into_fn backward_into;          /* optional; set by the op after ts_record */
    ts_pair_backward_fn backward_with_producer; /* optional; likewise */
    int n_in;
    ts_tensor *in[TS_NODE_MAX_INPUTS];
    ts_tensor *out;
    long tape_index;
    unsigned long needed_epoch;
    bool made_by_gradient_pass; /* its rule is second-order work (the profile's pass) */
    /* Attributes the backward rule needs. */
    int iattr[6];
    double fattr[2];
    const int32_t *index; /* token ids, targets or positions (arena copy) */
    long index_len;
    /* Optional: the output's gradient laid out where ts_backward would put
     * it, a view of the inputs' .grad buffers (ts_adjacent_rows over leaves
     * whose gradients lie one after another, as their values do). A rule
     * may add the output's gradient straight into it in that pass, and the
     * node's own rule then has nothing left to hand on. */
    ts_tensor *leaf_grads;
    /* State of an op defined outside the engine (e.g. the process grid of a
     * distributed GEMM in parallel/): such an op computes its output, calls
     * ts_record with its own backward rule and keeps what that rule needs
     * here. The engine never reads it. */
    void *user;
};

/* Called by ops after computing `out` (the engine's own and any defined
 * elsewhere, whose backward rules are again built from ops so that they can
 * be differentiated in turn): records a node if recording is on and
 * any input requires a gradient. Returns the node (NULL if not recorded) so the
 * op can store attributes. */
ts_node *ts_record(ts_ctx *ctx, const char *op, ts_backward_fn backward, ts_tensor *out, int n_in,
                   ts_tensor *const *in);

/* Gradients of sum_i <seeds[i], outputs[i]> with respect to inputs[j], into
 * grads[j] (zeros if an input does not influence the outputs). A NULL seed
 * means 1 and is allowed only for an output of one element. With
 * create_graph the gradients are part of the graph and can be differentiated
 * again; without it they are constants. Inputs may be leaves or intermediate
 * tensors. Leaf .grad buffers are not touched. */
void ts_grad(ts_ctx *ctx, int n_out, ts_tensor *const *outputs, ts_tensor *const *seeds, int n_in,
             ts_tensor *const *inputs, ts_tensor **grads, bool create_graph);

/* Accumulates d(output)/d(leaf) into the .grad buffer of every leaf that
 * requires a gradient (seed as in ts_grad). Leaves without a .grad buffer get
 * one in the arena, zeroed first: like every arena allocation it is freed by
 * a ts_release to an earlier mark, so a leaf that outlives such a release
 * needs a buffer of its own (ts_param gives parameters theirs). */
void ts_backward(ts_ctx *ctx, ts_tensor *output, ts_tensor *seed);

/* Marks where a unit of parameters (unit >= 1, e.g. block unit - 1) begins
 * (begin) or ends in a model's forward: returns x unchanged when no unit hook
 * is registered (ts_ctx_set_unit_hook) or unit < 1. Otherwise it tells the
 * hook TS_UNIT_FORWARD_BEGIN / _END now and returns a view of x recorded on
 * the tape, whose backward rule tells the hook TS_UNIT_BACKWARD_END (begin
 * marker: the reverse walk has run every node of the unit) or
 * TS_UNIT_BACKWARD_BEGIN (end marker: it is about to) and passes the
 * gradient through. A model wraps a block's input in a begin marker and its
 * output in an end marker; every node that reads the block's parameters then
 * lies between the two on the tape, unless a gradient pass with create_graph
 * records more such nodes later (EBT), which is the hook's business. Like any
 * node, a marker's backward runs only when a gradient reaches it: the begin
 * marker of a block whose input requires no gradient (nothing before the
 * block depends on a parameter) never tells the hook its backward end. */
ts_tensor *ts_unit_boundary(ts_ctx *ctx, ts_tensor *x, int unit, bool begin);

#endif
