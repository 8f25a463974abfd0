#include "engine/recycler.h"

#include <string.h>

void ts_recycler_begin(ts_ctx *ctx) {
    ctx->recycler = (ts_recycler){.active = !ctx->counting};
}

void ts_recycler_end(ts_ctx *ctx) {
    ctx->recycler = (ts_recycler){.active = false};
}

void ts_recycler_rule_start(ts_ctx *ctx) {
    ctx->recycler.n_handed = 0;
}

/* Drops free entry i; the later ones move down, so the list stays in the
 * order given. */
static void remove_entry(ts_recycler *r, int i) {
    memmove(&r->free_data[i], &r->free_data[i + 1],
            (size_t)(r->n_free - i - 1) * sizeof *r->free_data);
    memmove(&r->free_bytes[i], &r->free_bytes[i + 1],
            (size_t)(r->n_free - i - 1) * sizeof *r->free_bytes);
    r->n_free--;
}

/* Exact sizes only: handing out the front of a larger free buffer (its
 * rest kept free) lowered the benchmark EBT step's high water by only 16
 * MiB more (664 -> 648), while every search grew. */
ts_real *ts_recycler_take(ts_ctx *ctx, size_t bytes) {
    ts_recycler *r = &ctx->recycler;
    /* a rule's result in a taken buffer is as much its own as a fresh one
     * (owned_gradient, autodiff.c): with no room to note it, none is taken */
    if (!r->active || r->n_handed == TS_RECYCLE_SLOTS) return NULL;
    for (int i = r->n_free - 1; i >= 0; i--) { /* the most recently given first */
        if (r->free_bytes[i] != bytes) continue;
        ts_real *data = r->free_data[i];
        remove_entry(r, i);
        r->handed[r->n_handed++] = data;
        return data;
    }
    return NULL;
}

bool ts_recycler_taken_by_rule(const ts_ctx *ctx, const ts_real *data) {
    const ts_recycler *r = &ctx->recycler;
    for (int i = 0; i < r->n_handed; i++)
        if (r->handed[i] == data) return true;
    return false;
}

void ts_recycler_give(ts_ctx *ctx, ts_tensor *t) {
    ts_recycler *r = &ctx->recycler;
    if (!r->active || !t->own_buffer || !t->data) return;
    /* Given once: a gradient passed on unchanged is dead both as the input's
     * addend and as the output's gradient, and between the two a ts_new may
     * already have taken its buffer for a tensor that lives on (a leaf's
     * .grad). */
    t->own_buffer = false;
    if (r->n_free == TS_RECYCLE_SLOTS) remove_entry(r, 0); /* the oldest, the coldest */
    r->free_data[r->n_free] = t->data;
    r->free_bytes[r->n_free++] = (size_t)t->numel * sizeof(ts_real);
}
