#include "engine/profile.h"

#include <string.h>

#include "engine/clock.h"

static double now_seconds(const ts_profile *profile) {
    return ts_clock_seconds(profile->clock == TS_PROFILE_CPU);
}

void ts_profile_start(ts_ctx *ctx, ts_profile *profile, enum ts_profile_clock clock) {
    memset(profile, 0, sizeof *profile);
    profile->clock = clock;
    profile->last_time = now_seconds(profile);
    ctx->profile = profile;
}

void ts_profile_stop(ts_ctx *ctx) {
    ctx->profile = NULL;
}

void ts_profile_skip(ts_ctx *ctx) {
    if (!ctx->profile) return;
    ctx->profile->last_time = now_seconds(ctx->profile);
    ctx->profile->pending_flops = 0;
}

/* Op names are string literals, so a pointer compare finds nearly all;
 * strcmp catches the same name from two translation units. */
static ts_profile_entry *entry_of(ts_profile *profile, enum ts_pass pass, const char *op) {
    ts_profile_entry *entries = profile->entries[pass];
    int n = profile->n_entries[pass];
    for (int i = 0; i < n; i++)
        if (entries[i].op == op || !strcmp(entries[i].op, op)) return &entries[i];
    if (n == TS_PROFILE_MAX_OPS - 1) op = "(further ops)"; /* the last row takes the rest */
    if (n == TS_PROFILE_MAX_OPS) return &entries[n - 1];
    profile->n_entries[pass] = n + 1;
    entries[n] = (ts_profile_entry){.op = op};
    return &entries[n];
}

void ts_profile_add_flops(ts_profile *profile, double n) {
    profile->pending_flops += n;
}

void ts_profile_book(ts_ctx *ctx, const char *op, double bytes) {
    ts_profile *profile = ctx->profile;
    if (!profile) return;
    double t = now_seconds(profile);
    ts_profile_entry *e = entry_of(profile, ctx->pass, op);
    e->calls++;
    e->seconds += t - profile->last_time;
    e->flops += profile->pending_flops;
    e->bytes += bytes;
    profile->pending_flops = 0;
    profile->last_time = t;
}

double ts_profile_now(const ts_profile *profile) {
    return now_seconds(profile);
}

static bool same_gemm(const ts_profile_gemm *a, const ts_profile_gemm *b) {
    return a->pass == b->pass && a->m == b->m && a->n == b->n && a->k == b->k &&
           a->batch == b->batch && a->trans_a == b->trans_a && a->trans_b == b->trans_b &&
           a->accumulate == b->accumulate && a->small_gemm == b->small_gemm;
}

void ts_profile_book_gemm(ts_ctx *ctx, ts_profile_gemm shape, double seconds) {
    ts_profile *profile = ctx->profile;
    shape.pass = ctx->pass;
    int i = 0;
    while (i < profile->n_gemms && !same_gemm(&profile->gemms[i], &shape)) i++;
    if (i == TS_PROFILE_MAX_GEMMS) {
        profile->gemm_calls_unlisted++;
        return;
    }
    if (i == profile->n_gemms) {
        shape.calls = 0;
        shape.seconds = 0;
        profile->gemms[profile->n_gemms++] = shape;
    }
    profile->gemms[i].calls++;
    profile->gemms[i].seconds += seconds;
}

const char *ts_pass_name(enum ts_pass pass) {
    static const char *const names[TS_PASSES] = {"forward", "backward", "backward (recorded)",
                                                 "second order"};
    return pass >= 0 && pass < TS_PASSES ? names[pass] : "?";
}

void ts_profile_pass_totals(const ts_profile *profile, enum ts_pass pass, double *seconds,
                            double *flops) {
    *seconds = *flops = 0;
    for (int i = 0; i < profile->n_entries[pass]; i++) {
        *seconds += profile->entries[pass][i].seconds;
        *flops += profile->entries[pass][i].flops;
    }
}
