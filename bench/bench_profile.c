/* Training-speed targets and the per-op profile (issue 16), in one process on
 * one BLAS thread, at the benchmark size of bench/lib.sh (D = 256, L = 4,
 * 4 heads, T = 256, FFN = D, V = 256, 8 sequences): the trainer's own
 * micro-batch code (ts_train_micro_batch: loss, forward and backward, EBT's
 * inner gradient steps and their second-order terms) for Transformer++, EBT
 * S1 with 1 and 2 optimisation steps, Nexus at order 2 and the Free
 * Transformer. The optimiser update is not in it (bench_peer.sh times whole
 * training steps against PyTorch).
 *
 * Rounds alternate the models and an sgemm measurement (768^3, the trainer's
 * MFU denominator), so a burst of load from other processes slows every
 * model of a round rather than one. Each model's time is its fastest step
 * over all rounds (the least disturbed), the sgemm rate the fastest GEMM;
 * the verdicts take these. Beside them, figures paired within each round
 * (measured seconds apart) and their medians over the rounds: a model's
 * fastest step of the round against that round's sgemm and against
 * Transformer++'s fastest step of the round, which a drift cannot put in
 * different spells of the machine.
 *
 * Targets (PASSED/FAILED on the PROFILE_BENCH line):
 *   - Transformer++ executes >= 85% of the sgemm rate (executed FLOP/s);
 *   - EBT S1 (1 and 2 steps) >= 75% of the sgemm rate, and its time ratio to
 *     Transformer++ within 5% of its executed-FLOP ratio;
 *   - Nexus order 2 and the Free Transformer: time ratio within 10% of the
 *     FLOP ratio;
 *   - no allocation after the first step (arena chunks and graph capacity
 *     stay as they were after step 1).
 * Then one profiled step per model: time, FLOPs and tensor bytes
 * (engine/profile.h) per op type, forward, backward, recorded backward
 * (create_graph) and second-order work apart; the ops that are not
 * GEMM-bearing against the read rate from memory (bench_stream.h, measured
 * once before the profiles); and the rate of its GEMMs by shape and kernel
 * (timed inside the calls);
 * and the optimiser update the trainer runs after the micro-batches (AdamW
 * over the flat buffer, fastest of 5), which the steps above leave out.
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_STEPS per model per round
 * (default 2), BENCH_ONLY=name to run one model, or a comma-separated list
 * (e.g. tpp,ebt1: EBT's ratios to Transformer++ without the other models;
 * no verdict unless all run: a PROFILE_MODELS line with the figures
 * instead, which bench/compare_builds.sh reads), BENCH_PROFILE=0 to skip the profiles,
 * BENCH_STREAM_MB for the read rate's buffer (default 256: above the caches),
 * BENCH_CLOCK=cpu to time by the process's CPU time instead of wall time (steadier when other
 * processes share the cores; equal on a quiet machine).
 *
 * The PROFILE_BENCH line carries what a comparison between runs needs: the
 * commit, the clock, the load average before and after (/proc/loadavg), the
 * OpenBLAS kernel set (blas_core), the MiB of the process on transparent huge pages
 * (anon_huge_mib), the sgemm rate of this run, and per model its seconds per step,
 * fraction of the sgemm rate and time/FLOP ratio to Transformer++ (the headline's, and the
 * medians of the per-round pairs: _sgemm_median, _time_per_flop_median); compare the
 * ratios of two runs, not their seconds, unless both ran on a quiet machine. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "io/build_info.h"
#include "models/model.h"
#include "train/micro_batch.h"
#include "train/optimizer.h"
#include "train/machine_peak.h"

#include "bench_env.h"
#include "bench_median.h"
#include "bench_size.h"
#include "bench_sgemm.h"
#include "bench_stream.h"

enum { MAX_MODELS = 8 };

typedef struct bench_model {
    const char *name, *label;
    const char *settings[8]; /* NULL-terminated, after the common ones */
    double flop_tolerance;   /* allowed |time ratio / FLOP ratio - 1|; 0: none */
    double min_sgemm_fraction;
    /* measured */
    ts_run_config config;
    ts_model *model;
    ts_ctx ctx;
    int32_t *tokens;
    double best_seconds, flops;
    long mallocs_after_first, tape_cap_after_first;
    bool allocated_later;
    long steps;
} bench_model;

/* An integer setting of at least `least` (bench_env.h); anything else exits naming it. */
static long env_long(const char *name, long fallback, long least) {
    return bench_env_long("bench_profile", name, fallback, least, 1000000);
}

/* The 1-minute load average, or -1 where /proc/loadavg is missing. */
static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double load = -1;
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1;
        fclose(f);
    }
    return load;
}

/* MiB of this process's anonymous memory on transparent huge pages
 * (/proc/self/smaps_rollup), or -1 where it cannot be read. The arena asks
 * for huge pages (arena.c), but the kernel may refuse them, so a slow run
 * can be checked against it (on the AMD EPYC, 8 runs whose headlines
 * spread over 75-81% of sgemm all had 208 MiB: not the cause there). */
static long anon_huge_pages_mib(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    long kib = -1;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "bench_profile: %s: %s\n", what, detail);
    exit(1);
}

static void setup(bench_model *m) {
    char err[256] = "";
    if (!bench_size_config(&m->config, m->settings, err, sizeof err)) die(m->name, err);
    m->model = ts_model_create(&m->config.model, err, sizeof err);
    if (!m->model) die(m->name, err);
    if (!ts_ctx_init(&m->ctx, 0)) die(m->name, "out of memory");
    ts_model_init_params(m->model, (uint64_t)m->config.seed);
    ts_model_bind(m->model, &m->ctx);
    int seq = m->config.model.context;
    long n = m->config.batch * (long)(seq + 1);
    m->tokens = malloc((size_t)n * sizeof *m->tokens);
    if (!m->tokens) die(m->name, "out of memory");
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    for (long i = 0; i < n; i++) m->tokens[i] = (int32_t)ts_rng_below(&rng, 256);
    m->best_seconds = INFINITY;
}

static double one_step(bench_model *m, bool cpu) {
    ts_batch batch = {.tokens = m->tokens,
                      .batch = (int)m->config.batch,
                      .seq = m->config.model.context,
                      .mode = TS_MODE_TRAIN,
                      .seed = (uint64_t)m->config.seed,
                      .step = m->steps,
                      .first_index = 0};
    double stats[TS_MAX_MODEL_STATS];
    ts_reset_flops(&m->ctx);
    double t0 = ts_clock_seconds(cpu);
    double loss = ts_train_micro_batch(m->model, &m->ctx, &batch, 1.0, stats);
    double dt = ts_clock_seconds(cpu) - t0;
    if (!isfinite(loss)) die(m->name, "non-finite loss");
    m->flops = ts_flops_total(&m->ctx);
    if (m->steps == 0) {
        m->mallocs_after_first = m->ctx.arena.n_mallocs;
        m->tape_cap_after_first = m->ctx.tape_cap;
    } else if (m->ctx.arena.n_mallocs != m->mallocs_after_first ||
               m->ctx.tape_cap != m->tape_cap_after_first) {
        m->allocated_later = true;
    }
    m->steps++;
    return dt;
}

/* Whether name is one of the comma-separated names in list. */
static bool listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *at = list; at && *at; at = strchr(at, ',') ? strchr(at, ',') + 1 : NULL)
        if (!strncmp(at, name, n) && (at[n] == ',' || at[n] == 0)) return true;
    return false;
}

/* One AdamW update of the model's whole flat buffer, as the trainer runs it
 * after the micro-batches (not part of the timed steps): fastest of 5, at a
 * learning rate too small to matter for the steps that follow. */
static double optimizer_seconds(bench_model *m, bool cpu) {
    ts_optimizer opt;
    ts_param_interval all = {0, m->model->table.total};
    if (!ts_optimizer_init(&opt, &m->config.optim, &all, 1, false))
        die("optimizer", "out of memory");
    double best = INFINITY;
    for (int i = 0; i < 5; i++) {
        double t0 = ts_clock_seconds(cpu);
        ts_optimizer_step(&opt, &m->model->table, m->model->params, m->model->grads, 1e-12);
        best = fmin(best, ts_clock_seconds(cpu) - t0);
    }
    ts_optimizer_free(&opt);
    return best;
}

static int by_seconds(const void *a, const void *b) {
    const ts_profile_entry *x = a, *y = b;
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

/* Ops whose executed FLOP rate is at least this fraction of sgemm are the
 * GEMM-bearing ones (matmul, the attentions' strip GEMMs: 30-85% of sgemm);
 * the element-wise and reduction ops run below 10%. Classified by rate, not
 * by name, so a renamed or new fused op is still counted on its side. */
#define GEMM_BEARING_FRACTION 0.2

static bool gemm_bearing(const ts_profile_entry *e, double sgemm) {
    return e->seconds > 0 && e->flops / e->seconds / 1e9 >= GEMM_BEARING_FRACTION * sgemm;
}

/* The ceiling the GEMMs leave: the executed FLOP rate the step would reach
 * if every other op took no time and the GEMM-bearing ops ran as they did.
 * A target above this line needs faster GEMMs, not less overhead. */
static void print_gemm_bound(const ts_profile *profile, double total_s, double total_f,
                             double sgemm) {
    double gemm_s = 0, gemm_f = 0;
    for (int p = 0; p < TS_PASSES; p++)
        for (int i = 0; i < profile->n_entries[p]; i++) {
            const ts_profile_entry *e = &profile->entries[p][i];
            if (gemm_bearing(e, sgemm)) {
                gemm_s += e->seconds;
                gemm_f += e->flops;
            }
        }
    if (gemm_s <= 0) return;
    printf("  GEMM-bearing ops: %.1f ms (%.1f%% of the step), %.1f%% of the FLOPs at %.1f%% of "
           "sgemm; with every other op free the step would execute %.1f%% of sgemm\n",
           1e3 * gemm_s, 100 * gemm_s / total_s, 100 * gemm_f / total_f,
           100 * gemm_f / gemm_s / 1e9 / sgemm, 100 * total_f / gemm_s / 1e9 / sgemm);
}

/* The other ops against the memory: their tensor bytes (engine/profile.h)
 * per second, as a fraction of the read rate bench_stream.h measured, and
 * the time they would take moving exactly their tensor bytes at that rate.
 * Ops near the read rate are at memory speed: only fusing them into their
 * neighbours (fewer tensors written and read again) makes them faster. It
 * is an estimate, not a bound: tensors still in cache come faster, and ops
 * that skip masked entries move less than their tensors' size. */
static void print_memory_rate(const ts_profile *profile, double total_s, double total_f,
                              double sgemm, double read_gbs) {
    double other_s = 0, other_bytes = 0, gemm_s = 0;
    for (int p = 0; p < TS_PASSES; p++)
        for (int i = 0; i < profile->n_entries[p]; i++) {
            const ts_profile_entry *e = &profile->entries[p][i];
            if (gemm_bearing(e, sgemm)) {
                gemm_s += e->seconds;
            } else {
                other_s += e->seconds;
                other_bytes += e->bytes;
            }
        }
    if (other_s <= 0 || read_gbs <= 0) return;
    double at_read_rate = other_bytes / 1e9 / read_gbs;
    printf("  other ops: %.1f ms (%.1f%% of the step) over %.0f MB of tensors, %.1f GB/s = %.0f%% "
           "of the read rate (%.1f GB/s); at the read rate they would take %.1f ms and the step "
           "execute %.1f%% of sgemm\n",
           1e3 * other_s, 100 * other_s / total_s, other_bytes / 1e6, other_bytes / other_s / 1e9,
           100 * other_bytes / other_s / 1e9 / read_gbs, read_gbs, 1e3 * at_read_rate,
           100 * total_f / (gemm_s + at_read_rate) / 1e9 / sgemm);
}

static int gemm_by_seconds(const void *a, const void *b) {
    const ts_profile_gemm *x = a, *y = b;
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

static double gemm_flops(const ts_profile_gemm *g) {
    return 2.0 * g->m * g->n * g->k * g->batch * g->calls;
}

/* The GEMMs of the step by shape and kernel (OpenBLAS, or ts_small_gemm
 * for the weight products into fresh outputs), timed inside the calls: the rate
 * the step's own shapes reach in the step (operands where the ops before
 * left them), against the sgemm benchmark's 768^3 in cache. */
static void print_gemm_shapes(ts_profile *profile, double total_s, double sgemm) {
    double s = 0, f = 0;
    for (int i = 0; i < profile->n_gemms; i++) {
        s += profile->gemms[i].seconds;
        f += gemm_flops(&profile->gemms[i]);
    }
    if (s <= 0) return;
    printf("  GEMMs (time inside the calls): %.1f ms, %.1f%% of the step, %.1f GFLOP/s, "
           "%.1f%% of sgemm%s\n",
           1e3 * s, 100 * s / total_s, f / s / 1e9, 100 * f / s / 1e9 / sgemm,
           profile->gemm_calls_unlisted ? " (some calls past the table)" : "");
    printf("  %-22s %17s %-5s %-4s %-6s %7s %9s %9s %6s\n", "pass", "m x n x k", "op", "beta",
           "kernel", "calls", "ms", "GFLOP/s", "%sgemm");
    qsort(profile->gemms, (size_t)profile->n_gemms, sizeof *profile->gemms, gemm_by_seconds);
    for (int i = 0; i < profile->n_gemms; i++) {
        const ts_profile_gemm *g = &profile->gemms[i];
        if (g->seconds < 0.005 * total_s) continue; /* the long tail */
        char dims[48], op[8];
        snprintf(dims, sizeof dims, "%s%dx%dx%d", g->batch > 1 ? "batched " : "", g->m, g->n, g->k);
        snprintf(op, sizeof op, "%s%s", g->trans_a ? "T" : "N", g->trans_b ? "T" : "N");
        printf("  %-22s %17s %-5s %-4d %-6s %7ld %9.1f %9.1f %5.1f%%\n", ts_pass_name(g->pass),
               dims, op, g->accumulate ? 1 : 0, g->small_gemm ? "small" : "blas", g->calls,
               1e3 * g->seconds, gemm_flops(g) / g->seconds / 1e9,
               100 * gemm_flops(g) / g->seconds / 1e9 / sgemm);
    }
}

static void print_profile(bench_model *m, double sgemm, double read_gbs, bool cpu) {
    ts_profile *profile = malloc(sizeof *profile);
    if (!profile) die("profile", "out of memory");
    ts_profile_start(&m->ctx, profile, cpu ? TS_PROFILE_CPU : TS_PROFILE_WALL);
    one_step(m, cpu);
    ts_profile_stop(&m->ctx);
    double total_s = 0, total_f = 0;
    for (int p = 0; p < TS_PASSES; p++) {
        double s, f;
        ts_profile_pass_totals(profile, p, &s, &f);
        total_s += s;
        total_f += f;
    }
    printf("\nprofile of one step: %s (%.3f s, %.3f GFLOP, %.1f GFLOP/s; sgemm %.1f)\n", m->label,
           total_s, total_f / 1e9, total_f / total_s / 1e9, sgemm);
    printf("  %-22s %-24s %7s %9s %6s %10s %9s %6s %8s %6s\n", "pass", "op", "calls", "ms", "time%",
           "GFLOP", "GFLOP/s", "%sgemm", "MB", "GB/s");
    for (int p = 0; p < TS_PASSES; p++) {
        int n = profile->n_entries[p];
        if (!n) continue;
        qsort(profile->entries[p], (size_t)n, sizeof(ts_profile_entry), by_seconds);
        double s, f, bytes = 0;
        ts_profile_pass_totals(profile, p, &s, &f);
        for (int i = 0; i < n; i++) bytes += profile->entries[p][i].bytes;
        printf("  %-22s %-24s %7s %9.1f %5.1f%% %10.3f %9.1f %5.1f%% %8.0f %6.1f\n",
               ts_pass_name(p), "(all)", "", 1e3 * s, 100 * s / total_s, f / 1e9, f / s / 1e9,
               100 * f / s / 1e9 / sgemm, bytes / 1e6, bytes / s / 1e9);
        for (int i = 0; i < n; i++) {
            const ts_profile_entry *e = &profile->entries[p][i];
            if (e->seconds < 0.002 * total_s) continue; /* the long tail */
            printf("  %-22s %-24s %7ld %9.1f %5.1f%% %10.3f %9.1f %5.1f%% %8.1f %6.1f\n", "", e->op,
                   e->calls, 1e3 * e->seconds, 100 * e->seconds / total_s, e->flops / 1e9,
                   e->flops / e->seconds / 1e9, 100 * e->flops / e->seconds / 1e9 / sgemm,
                   e->bytes / 1e6, e->bytes / e->seconds / 1e9);
        }
    }
    print_gemm_bound(profile, total_s, total_f, sgemm);
    print_memory_rate(profile, total_s, total_f, sgemm, read_gbs);
    print_gemm_shapes(profile, total_s, sgemm);
    free(profile);
}

/* A model's figures paired within each round, and their medians over the
 * rounds: its fastest step of the round against that round's sgemm, and
 * its time per FLOP against the first model's fastest step of the same
 * round, seconds apart. The headline pairs the fastest step of all rounds
 * with the fastest sgemm and with the first model's fastest step, which a
 * drifting machine may have put in different spells (a 0.2 s step catches
 * a short fast spell that a 0.6 s one does not); the medians read the same
 * runs without that (eighteenth round, docs/performance.md). The first
 * model's time/FLOP against itself is 1. */
typedef struct paired_medians {
    double sgemm_fraction, time_per_flop;
} paired_medians;

static paired_medians paired_in_rounds(const bench_model *models, int i, bool against_first,
                                       long rounds, const double *round_sgemm,
                                       const double *round_best) {
    paired_medians m = {NAN, i == 0 ? 1 : NAN};
    if (rounds <= 0) return m; /* no rounds: nothing printed */
    double *values = malloc((size_t)rounds * sizeof *values);
    if (!values) die("memory", "per-round figures");
    printf("  %-18s", models[i].label);
    for (long r = 0; r < rounds; r++) {
        values[r] = models[i].flops / round_best[r * MAX_MODELS + i] / 1e9 / round_sgemm[r];
        printf(" %5.1f%%", 100 * values[r]);
    }
    m.sgemm_fraction = bench_median(values, rounds);
    printf("   median %5.1f%%", 100 * m.sgemm_fraction);
    if (against_first) {
        printf("   time/FLOP");
        for (long r = 0; r < rounds; r++) {
            values[r] = round_best[r * MAX_MODELS + i] / round_best[r * MAX_MODELS] /
                        (models[i].flops / models[0].flops);
            printf(" %.3f", values[r]);
        }
        m.time_per_flop = bench_median(values, rounds);
        printf("   median %.3f", m.time_per_flop);
    }
    printf("\n");
    free(values);
    return m;
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    /* OpenBLAS held to a set narrower than the CPU's (an environment's
     * OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU, which is obeyed): its
     * sgemm is then no longer the machine's GEMM ceiling, and the step's own
     * kernel (ts_small_gemm, built for the CPU) outruns it. On a Zen 5 VM
     * Transformer++ read 124.9% of that sgemm (103 GFLOP/s against 211
     * with OpenBLAS's own choice): every target looked met. Said, and no
     * target is met by such a run (twenty-third round, docs/performance.md). */
    char blas_advice[512];
    bool blas_narrower = ts_blas_core_advice_here(blas_advice, sizeof blas_advice);
    if (blas_narrower)
        fprintf(stderr,
                "bench_profile: %s. Every %%sgemm figure below is against that narrower "
                "sgemm, which the step's own kernel outruns: no target is met by this run\n",
                blas_advice);
    bench_model models[] = {
        {.name = "tpp",
         .label = "Transformer++",
         .settings = {"model.arch=transformerpp", NULL},
         .min_sgemm_fraction = 0.85},
        {.name = "ebt1",
         .label = "EBT S1, 1 step",
         .settings = {"model.arch=ebt", "ebt.preset=s1", "ebt.step_size=10",
                      "ebt.step_size_lr_mult=100", "ebt.steps=1", NULL},
         .flop_tolerance = 0.05,
         .min_sgemm_fraction = 0.75},
        {.name = "ebt2",
         .label = "EBT S1, 2 steps",
         .settings = {"model.arch=ebt", "ebt.preset=s1", "ebt.step_size=10",
                      "ebt.step_size_lr_mult=100", "ebt.steps=2", NULL},
         .flop_tolerance = 0.05,
         .min_sgemm_fraction = 0.75},
        {.name = "nexus2",
         .label = "Nexus order 2",
         .settings = {"model.arch=nexus", "nexus.order=2", NULL},
         .flop_tolerance = 0.10},
        {.name = "free",
         .label = "Free Transformer",
         .settings = {"model.arch=free", "free.latent_bits=8", NULL},
         .flop_tolerance = 0.10},
    };
    int n_models = (int)(sizeof models / sizeof models[0]);
    const char *only = getenv("BENCH_ONLY");
    bool cpu = ts_clock_cpu_requested();
    double load_before = load_average();
    long rounds = env_long("BENCH_ROUNDS", 3, 0), steps = env_long("BENCH_STEPS", 2, 0);
    long profiles = env_long("BENCH_PROFILE", 1, 0),
         stream_mb = env_long("BENCH_STREAM_MB", 256, 1);
    bool selected[MAX_MODELS];
    for (int i = 0; i < n_models; i++) {
        selected[i] = !only || !*only || listed(only, models[i].name);
        if (selected[i]) {
            setup(&models[i]);
            one_step(&models[i], cpu); /* the first step allocates and pays first-touch faults */
        }
    }
    double sgemm = 0;
    /* Each round's sgemm rate and each model's fastest step in it: the
     * fraction of the sgemm rate with both measured within seconds of each
     * other, printed per round so a verdict can be read against the
     * machine's drift (a VM whose speed moves between runs by more than a
     * target's margin; tenth round, docs/performance.md). */
    double *round_sgemm = calloc((size_t)(rounds > 0 ? rounds : 1), sizeof *round_sgemm);
    double *round_best = calloc((size_t)(rounds > 0 ? rounds : 1) * MAX_MODELS, sizeof *round_best);
    if (!round_sgemm || !round_best) die("memory", "per-round results");
    for (long r = 0; r < rounds; r++) {
        double rate = bench_sgemm_gflops(3, cpu);
        round_sgemm[r] = rate;
        if (rate > sgemm) sgemm = rate;
        for (int i = 0; i < n_models; i++)
            for (long s = 0; selected[i] && s < steps; s++) {
                double dt = one_step(&models[i], cpu);
                double *best = &round_best[r * MAX_MODELS + i];
                if (*best == 0 || dt < *best) *best = dt;
                if (dt < models[i].best_seconds) models[i].best_seconds = dt;
            }
    }

    const bench_model *base = selected[0] ? &models[0] : NULL;
    printf("one BLAS thread, %s, fastest step of %ld rounds x %ld steps; sgemm %d^3: %.1f "
           "GFLOP/s\n",
           cpu ? "process CPU time" : "wall time", rounds, steps, BENCH_SGEMM_N, sgemm);
    printf("%-18s %10s %9s %9s %7s %8s %8s %8s %6s\n", "model", "GFLOP", "s/step", "GFLOP/s",
           "%sgemm", "FLOP x", "time x", "time/FLOP", "alloc");
    bool ok = true;
    char summary[1024] = "";
    size_t len = 0;
    for (int i = 0; i < n_models; i++) {
        bench_model *m = &models[i];
        if (!selected[i]) continue;
        double rate = m->flops / m->best_seconds / 1e9, fraction = rate / sgemm;
        double flop_x = base ? m->flops / base->flops : NAN;
        double time_x = base ? m->best_seconds / base->best_seconds : NAN;
        printf("%-18s %10.3f %9.3f %9.1f %6.1f%% %8.3f %8.3f %8.3f %6s\n", m->label, m->flops / 1e9,
               m->best_seconds, rate, 100 * fraction, flop_x, time_x, time_x / flop_x,
               m->allocated_later ? "yes" : "no");
        if (m->min_sgemm_fraction > 0 && !(fraction >= m->min_sgemm_fraction)) ok = false;
        if (m->flop_tolerance > 0 && !(fabs(time_x / flop_x - 1) <= m->flop_tolerance)) ok = false;
        if (m->allocated_later) ok = false;
        len += (size_t)snprintf(summary + len, sizeof summary - len,
                                " %s_s=%.4f %s_sgemm=%.3f %s_time_per_flop_x=%.3f", m->name,
                                m->best_seconds, m->name, fraction, m->name, time_x / flop_x);
    }
    if (rounds > 0) {
        printf("per round (fastest step of the round / that round's sgemm");
        if (selected[0]) printf("; its time/FLOP against %s's of the round", models[0].label);
        printf("):");
        for (long r = 0; r < rounds; r++) printf(" %.1f", round_sgemm[r]);
        printf(" GFLOP/s\n");
    }
    /* each model's figures paired within the rounds: printed, and their
     * medians on the summary line */
    for (int i = 0; i < n_models; i++) {
        if (!selected[i]) continue;
        paired_medians paired =
            paired_in_rounds(models, i, selected[0] && i > 0, rounds, round_sgemm, round_best);
        len +=
            (size_t)snprintf(summary + len, sizeof summary - len,
                             " %s_sgemm_median=%.3f %s_time_per_flop_median=%.3f", models[i].name,
                             paired.sgemm_fraction, models[i].name, paired.time_per_flop);
    }
    free(round_sgemm);
    free(round_best);
    if (profiles) {
        /* the memory rate the profiles' tensor bytes per second are set against */
        double read_gbs = bench_read_gbs((size_t)stream_mb << 20, 0.3);
        printf("read rate from memory: %.1f GB/s (sums over %ld MB, wall clock)\n", read_gbs,
               stream_mb);
        for (int i = 0; i < n_models; i++)
            if (selected[i]) print_profile(&models[i], sgemm, read_gbs, cpu);
    }
    for (int i = 0; i < n_models; i++)
        if (selected[i]) {
            double update = optimizer_seconds(&models[i], cpu);
            printf("optimiser (%s, %ld parameters): %.2f ms per update, %.1f%% of the step\n",
                   models[i].label, models[i].model->table.total, 1e3 * update,
                   100 * update / models[i].best_seconds);
        }
    for (int i = 0; i < n_models; i++)
        if (selected[i])
            printf("arena high water (%s): %.0f MiB (activations, graph and gradients of a step)\n",
                   models[i].label, models[i].ctx.arena.high_water / 1048576.0);
    long huge_mib = anon_huge_pages_mib();
    printf("anonymous memory on transparent huge pages: %ld MiB\n", huge_mib);
    if (blas_narrower) ok = false;
    if (only && *only) /* a subset: the figures, without a verdict */
        printf("PROFILE_MODELS commit=%s clock=%s blas_core=%s blas_narrower=%d "
               "sgemm_gflops=%.1f%s\n",
               ts_git_commit, cpu ? "cpu" : "wall", openblas_get_corename(), blas_narrower, sgemm,
               summary);
    else
        printf("PROFILE_BENCH commit=%s clock=%s load=%.1f->%.1f blas_core=%s blas_narrower=%d "
               "anon_huge_mib=%ld sgemm_gflops=%.1f%s "
               "targets=tpp_sgemm>=0.85,ebt_sgemm>=0.75,"
               "ebt_time/flop_within_5%%,nexus2_free_time/flop_within_10%%,no_alloc_after_step_1,"
               "blas_kernels_fit_cpu "
               "%s\n",
               ts_git_commit, cpu ? "cpu" : "wall", load_before, load_average(),
               openblas_get_corename(), blas_narrower, huge_mib, sgemm, summary,
               ok ? "PASSED" : "FAILED");
    for (int i = 0; i < n_models; i++)
        if (selected[i]) {
            ts_ctx_free(&models[i].ctx);
            ts_model_destroy(models[i].model);
            free(models[i].tokens);
        }
    return 0;
}
