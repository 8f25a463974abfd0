#include "engine/context.h"

#include "engine/recycler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void default_error_handler(void *user, const char *message) {
    (void)user;
    fprintf(stderr, "thinkscale: error: %s\n", message);
    exit(2);
}

bool ts_ctx_init(ts_ctx *ctx, size_t arena_chunk_bytes) {
    *ctx = (ts_ctx){.grad_enabled = true, .pair_rules = true, .on_error = default_error_handler};
    ts_arena_init(&ctx->arena, arena_chunk_bytes);
    ctx->tape_cap = 1024;
    ctx->tape = malloc((size_t)ctx->tape_cap * sizeof *ctx->tape);
    return ctx->tape != NULL;
}

bool ts_ctx_init_counting(ts_ctx *ctx, size_t arena_chunk_bytes) {
    bool ok = ts_ctx_init(ctx, arena_chunk_bytes);
    ctx->counting = true;
    return ok;
}

void ts_ctx_free(ts_ctx *ctx) {
    ts_arena_free(&ctx->arena);
    free(ctx->tape);
    ctx->tape = NULL;
    ctx->tape_len = ctx->tape_cap = 0;
}

void ts_ctx_set_error_handler(ts_ctx *ctx, ts_error_handler handler, void *user) {
    ctx->on_error = handler ? handler : default_error_handler;
    ctx->error_user = user;
}

void ts_ctx_set_unit_hook(ts_ctx *ctx, ts_unit_hook hook, void *user) {
    ctx->unit_hook = hook;
    ctx->unit_hook_user = hook ? user : NULL;
}

void ts_error_catch_jump(void *catch_, const char *message) {
    ts_error_catch *c = catch_;
    c->calls++;
    snprintf(c->message, sizeof c->message, "%s", message);
    longjmp(c->back, 1);
}

ts_mark ts_get_mark(const ts_ctx *ctx) {
    return (ts_mark){ts_arena_get_mark(&ctx->arena), ctx->tape_len};
}

void ts_release(ts_ctx *ctx, ts_mark mark) {
    ts_arena_release(&ctx->arena, mark.arena);
    ctx->tape_len = mark.tape_len;
}

bool ts_set_grad_enabled(ts_ctx *ctx, bool enabled) {
    bool previous = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return previous;
}

void ts_reset_flops(ts_ctx *ctx) {
    ctx->flops[0] = ctx->flops[1] = 0;
}
double ts_flops_total(const ts_ctx *ctx) {
    return ctx->flops[0] + ctx->flops[1];
}

void ts_fail(ts_ctx *ctx, const char *op, const char *fmt, ...) {
    char message[512];
    int n = snprintf(message, sizeof message, "%s: ", op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message + n, sizeof message - (size_t)n, fmt, ap);
    va_end(ap);
    /* a handler that jumps back leaves the pass unfinished: nothing may be
     * handed out of its lists after that (the arena may be released) */
    ts_recycler_end(ctx);
    ctx->on_error(ctx->error_user, message);
    abort(); /* the handler must not return */
}

void *ts_alloc(ts_ctx *ctx, size_t bytes) {
    void *p = ts_arena_alloc(&ctx->arena, bytes);
    if (!p) ts_fail(ctx, "arena", "out of memory allocating %zu bytes", bytes);
    return p;
}
