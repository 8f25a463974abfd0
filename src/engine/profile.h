/* A per-op profile of executed work: wall time, FLOPs and calls per op type,
 * kept apart for the forward pass, first-order gradient passes (plain, and
 * recorded with create_graph) and second-order work (the rules of ops that
 * a recorded gradient pass created, run by a later pass), so an
 * optimisation can be aimed at the largest cost (docs/performance.md).
 *
 * Switched on and off at run time by the caller: ts_profile_start hangs a
 * caller-owned table on the context, ts_profile_stop takes it off. Without a
 * table the engine pays one pointer test per op. An op's time is the wall
 * time from the end of the previous op (or from ts_profile_start) to its
 * own end, so work between ops done outside the engine (the caller's own
 * loops) is booked to the next op: profile a region that is engine calls. */
#ifndef TS_PROFILE_H
#define TS_PROFILE_H

#include "engine/context.h"

enum { TS_PROFILE_MAX_OPS = 64 };

/* bytes: the sizes of the tensors each call read and wrote, every buffer
 * once (its inputs and its output; an input given twice, or sharing its
 * output's buffer, counted once). It is what an unfused op moves at the
 * least when none of them is in cache, so bytes / seconds set against the
 * machine's memory rate tells an op that runs at memory speed (only
 * fusing it away makes it faster) from one that does not. It is a size,
 * not a measured traffic: ops that skip masked entries move less, ops
 * that add into a sum read that sum too, and a tensor still in cache
 * costs less than its size (fifteenth round, docs/performance.md). */
typedef struct ts_profile_entry {
    const char *op; /* the name the op records (static storage) */
    long calls;
    double seconds;
    double flops;
    double bytes;
} ts_profile_entry;

/* The GEMMs of ts_matmul in one pass with one shape: dimensions of each
 * product (m x n, depth k; a shared 2-D right operand's products as one of
 * batch * m rows), products per call, transposes, whether the output was a
 * sum (beta 1) and whether ts_small_gemm ran it rather than BLAS (with B
 * transposed: its layout included). Their time is inside those calls only, where
 * the op's entry also holds its own work and the time since the previous
 * op: the GEMM rate the step's shapes reach, against the sgemm benchmark's
 * (eleventh round, docs/performance.md). */
enum { TS_PROFILE_MAX_GEMMS = 64 };

typedef struct ts_profile_gemm {
    enum ts_pass pass;
    int m, n, k;
    long batch;
    bool trans_a, trans_b, accumulate, small_gemm;
    long calls;
    double seconds;
} ts_profile_gemm;

/* Wall time, or the CPU time of the calling process (all its threads):
 * on a machine shared with other work the CPU time is the steadier measure
 * of what an op costs, as long as BLAS runs one thread. */
enum ts_profile_clock { TS_PROFILE_WALL = 0, TS_PROFILE_CPU = 1 };

typedef struct ts_profile {
    enum ts_profile_clock clock;
    ts_profile_entry entries[TS_PASSES][TS_PROFILE_MAX_OPS];
    int n_entries[TS_PASSES];
    double last_time;     /* end of the previous booked op */
    double pending_flops; /* booked by ts_count_flops, not yet given to an op */
    ts_profile_gemm gemms[TS_PROFILE_MAX_GEMMS];
    int n_gemms;
    long gemm_calls_unlisted; /* calls of shapes past TS_PROFILE_MAX_GEMMS */
} ts_profile;

/* Zeroes profile and hangs it on ctx: from now on every op adds to it. */
void ts_profile_start(ts_ctx *ctx, ts_profile *profile, enum ts_profile_clock clock);
/* Takes the profile off ctx; the table keeps its contents. */
void ts_profile_stop(ts_ctx *ctx);
/* Restarts the clock without booking: the caller did other work since the
 * last op (an optimiser step, data loading) that no op should be charged. */
void ts_profile_skip(ts_ctx *ctx);
/* Called by ts_record for every op (and for work that is no op, under a
 * name of its own, so that it is not booked to the next op): books the
 * time since the previous op, the pending FLOPs and `bytes` (the op's
 * tensor bytes, ts_profile_entry) to `op` in the current pass. Nothing
 * without a profile on ctx. */
void ts_profile_book(ts_ctx *ctx, const char *op, double bytes);

/* The profile's clock now (seconds), for timing work inside an op. */
double ts_profile_now(const ts_profile *profile);
/* Books one call of a GEMM shape (its pass, calls and seconds are ignored) and
 * its seconds to ctx's profile, in the current pass. */
void ts_profile_book_gemm(ts_ctx *ctx, ts_profile_gemm shape, double seconds);

const char *ts_pass_name(enum ts_pass pass);
/* Totals of one pass (seconds and FLOPs). */
void ts_profile_pass_totals(const ts_profile *profile, enum ts_pass pass, double *seconds,
                            double *flops);

#endif
