/* How fast `campaign plan` learns a step's executed FLOPs: ts_step_flops on
 * the EBT paper's largest size (L = 24, D = 1536, 16 heads, context 256,
 * batch 256 sequences, vocabulary 50277, hidden = D) for every architecture,
 * EBT's S1 and S2 (second-order steps, replay buffer of 192) and Nexus at
 * orders 2 and 3. Executing such a step would take minutes and tens of GiB;
 * the counting context takes neither. Targets: each count under one second
 * and under 256 MiB. Prints a table, then one summary line with a verdict. */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "engine/clock.h"
#include "engine/real.h"
#include "train/step_cost.h"
#include "train/machine_peak.h"

static const double TARGET_SECONDS = 1.0;
static const double TARGET_MIB = 256.0;

typedef struct variant {
    const char *label, *arch;
    const char *settings[3];
} variant;

static const variant variants[] = {
    {"transformerpp", "transformerpp", {NULL}},
    {"ebt s1", "ebt", {"ebt.preset=s1", NULL}},
    {"ebt s2", "ebt", {"ebt.preset=s2", NULL}},
    {"free", "free", {NULL}},
    {"nexus order 2", "nexus", {"nexus.order=2", NULL}},
    {"nexus order 3", "nexus", {"nexus.order=3", NULL}},
};

static bool paper_large(const variant *v, ts_run_config *c, char *err, size_t errlen) {
    ts_config_defaults(c);
    char arch[64];
    snprintf(arch, sizeof arch, "model.arch=%s", v->arch);
    const char *common[] = {arch,
                            "model.vocab_size=50277",
                            "model.context=256",
                            "model.depth=24",
                            "model.width=1536",
                            "model.heads=16",
                            "model.ffn_mult=1.0",
                            "train.batch=256",
                            NULL};
    for (int i = 0; common[i]; i++)
        if (!ts_config_set(c, common[i], err, errlen)) return false;
    for (int i = 0; v->settings[i]; i++)
        if (!ts_config_set(c, v->settings[i], err, errlen)) return false;
    return ts_config_resolve_presets(c, err, errlen);
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    bool all_ok = true;
    double worst_seconds = 0, worst_mib = 0;
    printf("%-15s %12s %12s %10s %10s %12s %9s %9s\n", "paper large", "non-emb N", "TFLOP/step",
           "fwd/token", "bwd/fwd", "x (6N+head)", "seconds", "MiB");
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        ts_run_config c;
        char err[512] = "";
        ts_step_flops_result r;
        long total = 0, non_embedding = 0;
        double t0 = ts_monotonic_seconds();
        bool ok = paper_large(&variants[i], &c, err, sizeof err) &&
                  ts_step_flops(&c, &r, err, sizeof err);
        double seconds = ts_monotonic_seconds() - t0;
        ok = ok && ts_param_counts(&c.model, &total, &non_embedding, err, sizeof err);
        if (!ok) {
            printf("%-15s error: %s\n", variants[i].label, err);
            all_ok = false;
            continue;
        }
        double mib = (double)r.counting_bytes / 1048576.0;
        /* The convention with the vocabulary head counted, for scale only. */
        double convention = 6.0 * ((double)non_embedding + (double)c.model.vocab_size * 1536);
        printf("%-15s %12ld %12.2f %10.3g %10.3f %12.2f %9.3f %9.1f\n", variants[i].label,
               non_embedding, r.total / 1e12, r.forward_per_token, r.backward / r.forward,
               r.total_per_token / convention, seconds, mib);
        if (seconds > worst_seconds) worst_seconds = seconds;
        if (mib > worst_mib) worst_mib = mib;
    }
    bool passed = all_ok && worst_seconds < TARGET_SECONDS && worst_mib < TARGET_MIB;
    printf("STEP_COST_BENCH type=%s worst_seconds=%.3f worst_mib=%.1f target_seconds=%.1f "
           "target_mib=%.0f %s\n",
           TS_REAL_NAME, worst_seconds, worst_mib, TARGET_SECONDS, TARGET_MIB,
           passed ? "PASSED" : "FAILED");
    return passed ? 0 : 1;
}
