/* The engine's executed FLOPs per optimiser step (ts_step_flops_with,
 * src/train/step_cost.h) of one configuration at many rank counts, for the
 * performance model (analysis/perf_model.py, docs/scaling-model.md):
 *
 *   build/float/bench/bench_step_flops OUT.csv --ranks 1,2,4,... \
 *       (--batch N | --batch-per-rank N) [k=v ...]
 *
 * k=v are configuration keys over the defaults (model.vocab_size must be
 * given). --batch fixes the global batch (strong scaling); --batch-per-rank
 * grows it with the ranks (weak scaling). One CSV row per rank count:
 * ranks, batch, tokens per step, forward/backward/total FLOPs of the step on
 * all ranks, the largest share of one rank (ceil(batch / ranks) sequences),
 * and the parameter counts. Nothing is executed: counting takes
 * milliseconds. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "train/step_cost.h"

static int usage(void) {
    fprintf(stderr,
            "usage: bench_step_flops OUT.csv --ranks 1,2,... (--batch N | --batch-per-rank N) "
            "[section.key=value ...]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *out_path = argv[1], *ranks_list = NULL;
    long batch = 0, per_rank = 0;
    ts_run_config base;
    ts_config_defaults(&base);
    char err[512];
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--ranks") && i + 1 < argc)
            ranks_list = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atol(argv[++i]);
        else if (!strcmp(argv[i], "--batch-per-rank") && i + 1 < argc)
            per_rank = atol(argv[++i]);
        else if (argv[i][0] == '-')
            return usage();
        else if (!ts_config_set(&base, argv[i], err, sizeof err)) {
            fprintf(stderr, "bench_step_flops: %s\n", err);
            return 2;
        }
    }
    if (!ranks_list || (batch > 0) == (per_rank > 0) || base.model.vocab_size <= 0) return usage();
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "bench_step_flops: cannot write %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    fprintf(out, "ranks,batch,tokens,flops_forward,flops_backward,flops_total,"
                 "flops_max_rank,params,non_embedding_params\n");
    bool ok = true;
    char list[1024];
    snprintf(list, sizeof list, "%s", ranks_list);
    for (char *save = NULL, *item = strtok_r(list, ",", &save); ok && item;
         item = strtok_r(NULL, ",", &save)) {
        int ranks = atoi(item);
        ts_run_config c = base;
        c.batch = batch > 0 ? batch : per_rank * ranks;
        ts_step_flops_options options = {.ranks = ranks, .step = -1};
        ts_step_flops_result r;
        long total = 0, non_embedding = 0;
        ok = ranks >= 1 && ts_config_resolve_presets(&c, err, sizeof err) &&
             ts_step_flops_with(&c, &options, &r, err, sizeof err) &&
             ts_param_counts(&c.model, &total, &non_embedding, err, sizeof err);
        if (!ok) break;
        /* The slowest rank holds ceil(batch / ranks) sequences of every step. */
        long most = (c.batch + ranks - 1) / ranks;
        double max_rank = r.total * (double)most / (double)c.batch;
        fprintf(out, "%d,%ld,%ld,%.6e,%.6e,%.6e,%.6e,%ld,%ld\n", ranks, c.batch, r.tokens,
                r.forward, r.backward, r.total, max_rank, total, non_embedding);
    }
    if (!ok) fprintf(stderr, "bench_step_flops: %s\n", ranks_list ? err : "bad --ranks");
    ok = !ferror(out) && fclose(out) == 0 && ok;
    if (!ok || rename(tmp, out_path) != 0) {
        if (ok)
            fprintf(stderr, "bench_step_flops: cannot write %s: %s\n", out_path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}
