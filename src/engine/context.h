/* The engine context: everything an op needs besides its inputs. There is no
 * global state; two contexts are fully independent. */
#ifndef TS_CONTEXT_H
#define TS_CONTEXT_H

#include <setjmp.h>
#include <stdbool.h>

#include "engine/arena.h"
#include "engine/tensor.h"

/* Called with a complete message on misuse or out-of-memory. It must not
 * return (exit, abort or longjmp); if it does, the engine aborts. */
typedef void (*ts_error_handler)(void *user, const char *message);

enum ts_phase { TS_FORWARD = 0, TS_BACKWARD = 1 };
/* Finer than the phase, for the profile (engine/profile.h): which kind of
 * work an op is doing. */
enum ts_pass {
    TS_PASS_FORWARD = 0,
    TS_PASS_BACKWARD,       /* a gradient pass's rules, plain (no create_graph) */
    TS_PASS_BACKWARD_GRAPH, /* a gradient pass's rules, recorded (create_graph) */
    TS_PASS_SECOND_ORDER,   /* rules of ops that a recorded gradient pass created */
    TS_PASSES
};
struct ts_profile;

/* Where a pass stands relative to a unit of parameters (a block), marked in
 * a model's forward by ts_unit_boundary (engine/autodiff.h). Code outside the
 * engine that keeps parameters elsewhere between uses (zero3 in parallel/
 * gathers a block's parameters just before the block runs) registers a hook
 * to hear about it; the engine never knows what the hook does. */
typedef enum ts_unit_event {
    TS_UNIT_FORWARD_BEGIN,  /* the forward is about to run the unit */
    TS_UNIT_FORWARD_END,    /* the forward has run it */
    TS_UNIT_BACKWARD_BEGIN, /* a gradient pass reached the unit's output: its nodes come next */
    TS_UNIT_BACKWARD_END,   /* a gradient pass has run every node of the unit */
} ts_unit_event;
/* into_leaf_grads: the event comes from ts_backward, which accumulates into
 * the leaves' .grad buffers (false: a forward, or ts_grad). */
typedef void (*ts_unit_hook)(void *user, int unit, ts_unit_event event, bool into_leaf_grads);

/* Buffers a plain gradient pass has finished with, for its next tensors of
 * the same size (engine/recycler.h). */
enum { TS_RECYCLE_SLOTS = 64 };
typedef struct ts_recycler {
    bool active;  /* inside a plain pass of an executing context */
    int n_free;   /* free[0..n_free): buffers nothing references any more */
    int n_handed; /* handed[0..n_handed): buffers taken since the running rule began */
    ts_real *free_data[TS_RECYCLE_SLOTS];
    size_t free_bytes[TS_RECYCLE_SLOTS];
    const ts_real *handed[TS_RECYCLE_SLOTS];
} ts_recycler;

typedef struct ts_ctx {
    ts_arena arena;
    ts_recycler recycler;
    ts_node **tape; /* recorded ops in creation order */
    long tape_len;
    long tape_cap;
    bool grad_enabled;          /* false: ops run without recording */
    bool counting;              /* shapes and FLOPs only, no tensor data (ts_ctx_init_counting) */
    enum ts_phase phase;        /* where executed FLOPs are booked */
    enum ts_pass pass;          /* where the profile books an op's work */
    struct ts_profile *profile; /* NULL, or the caller's table (ts_profile_start) */
    double flops[2];            /* executed floating-point operations, forward / backward */
    unsigned long epoch;        /* one per gradient pass */
    ts_error_handler on_error;
    void *error_user;
    ts_unit_hook unit_hook; /* NULL: ts_unit_boundary is the identity and records nothing */
    void *unit_hook_user;
    bool into_leaf_grads; /* inside ts_backward's pass (for the unit hook) */
    /* A plain pass may run a node's rule and its producer's as one
     * (engine/autodiff.h: ts_pair_backward_fn). On from ts_ctx_init; off
     * only to measure or test what the pairs save: the results are the
     * same bits either way. */
    bool pair_rules;
} ts_ctx;

typedef struct ts_mark {
    ts_arena_mark arena;
    long tape_len;
} ts_mark;

/* arena_chunk_bytes = 0 picks the default (64 MiB). Returns false if out of memory. */
bool ts_ctx_init(ts_ctx *ctx, size_t arena_chunk_bytes);
/* A context that only counts: every op checks its inputs, gives its output
 * the shape it would have, records itself and books exactly the FLOPs it
 * would execute, but computes nothing, and no tensor gets data (data is
 * NULL, ts_item gives NaN). A training step run in it costs a few hundred
 * bytes per op instead of its activations, so the executed FLOPs of the
 * largest configurations are known in milliseconds (docs/engine.md). */
bool ts_ctx_init_counting(ts_ctx *ctx, size_t arena_chunk_bytes);
void ts_ctx_free(ts_ctx *ctx);
void ts_ctx_set_error_handler(ts_ctx *ctx, ts_error_handler handler, void *user);

/* Turns misuse into a message the caller gets back instead of an exit: set
 * ts_error_catch_jump as the handler with a ts_error_catch as its user, and
 * call setjmp(catch.back) before the ops; a failing op records its message,
 * counts the call and longjmps there with 1. Locals the caller changes after
 * setjmp are indeterminate after the jump unless volatile or static. */
typedef struct ts_error_catch {
    jmp_buf back;
    int calls;
    char message[512];
} ts_error_catch;
void ts_error_catch_jump(void *catch_, const char *message);

/* Registers (or with NULL removes) the unit hook; returns nothing. */
void ts_ctx_set_unit_hook(ts_ctx *ctx, ts_unit_hook hook, void *user);

/* Everything created after the mark (tensors, graph, data) is released at once. */
ts_mark ts_get_mark(const ts_ctx *ctx);
void ts_release(ts_ctx *ctx, ts_mark mark);

/* Returns the previous setting, to restore it afterwards. */
bool ts_set_grad_enabled(ts_ctx *ctx, bool enabled);

/* Whether ctx only counts: code outside the engine that reads tensor
 * values (statistics, sampling, replay buffers) asks this first. */
static inline bool ts_is_counting(const ts_ctx *ctx) {
    return ctx->counting;
}

void ts_reset_flops(ts_ctx *ctx);
double ts_flops_total(const ts_ctx *ctx);
void ts_profile_add_flops(struct ts_profile *profile, double n);
static inline void ts_count_flops(ts_ctx *ctx, double n) {
    ctx->flops[ctx->phase] += n;
    if (ctx->profile) ts_profile_add_flops(ctx->profile, n);
}

/* Reports misuse and does not return. */
_Noreturn void ts_fail(ts_ctx *ctx, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Arena allocation that fails through ts_fail when memory runs out. */
void *ts_alloc(ts_ctx *ctx, size_t bytes);

#endif
