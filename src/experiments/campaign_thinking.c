#include "experiments/campaign_thinking.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "train/eval_run.h"

int ts_campaign_thinking_settings(const ts_campaign *c, const char *arch, char (*settings)[256],
                                  int max, char *err, size_t errlen) {
    const ts_campaign_thinking *t = &c->thinking;
    int n = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (n == max) {                                                                            \
            snprintf(err, errlen,                                                                  \
                     "[thinking]: %s needs more than %d inference settings in one evaluation "     \
                     "(default + its knob levels)",                                                \
                     arch, max);                                                                   \
            return -1;                                                                             \
        }                                                                                          \
        snprintf(settings[n++], 256, __VA_ARGS__);                                                 \
    } while (0)
    ADD("default");
    if (!strcmp(arch, "ebt")) {
        for (int i = 0; i < t->n_ebt_steps; i++)
            for (int j = 0; j < t->n_ebt_samples; j++)
                ADD("ebt.infer_steps=%ld,ebt.infer_samples=%ld", t->ebt_steps[i],
                    t->ebt_samples[j]);
    } else if (!strcmp(arch, "free")) {
        for (int i = 0; i < t->n_free_samples; i++)
            ADD("free.eval_samples=%ld", t->free_samples[i]);
    } else if (!strcmp(arch, "nexus")) {
        for (int i = 0; i < t->n_nexus_orders; i++)
            ADD("nexus.infer_order=%ld", t->nexus_orders[i]);
    }
#undef ADD
    return n;
}

bool ts_campaign_thinking_done(const ts_campaign_point *p) {
    char path[TS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", p->config.run_dir, TS_THINKING_FILE);
    return access(path, R_OK) == 0;
}

int ts_campaign_thinking_eval(MPI_Comm comm, const ts_campaign *c, const ts_campaign_manifest *m,
                              const ts_campaign_point *p) {
    static ts_eval_run_options o; /* large: keep it off the stack */
    static char output[TS_PATH_MAX + 64], energies[TS_PATH_MAX + 64];
    char err[512];
    memset(&o, 0, sizeof o);
    const char *arch = c->archs[p->arch];
    o.n_settings =
        ts_campaign_thinking_settings(c, arch, o.settings, TS_EVAL_MAX_SETTINGS, err, sizeof err);
    if (o.n_settings < 0) {
        fprintf(stderr, "thinkscale campaign: error: %s\n", err);
        return 2;
    }
    /* The point's own data: a variant may have data of its own (the subword row). */
    int n = snprintf(o.data, sizeof o.data, "%s%s%s", p->config.train_data,
                     p->config.eval_data[0] ? "," : "", p->config.eval_data);
    if (n < 0 || (size_t)n >= sizeof o.data) {
        fprintf(stderr, "thinkscale campaign: error: evaluation paths too long\n");
        return 2;
    }
    snprintf(output, sizeof output, "%s/%s", p->config.run_dir, TS_THINKING_FILE);
    snprintf(energies, sizeof energies, "%s/%s", p->config.run_dir, TS_THINKING_ENERGIES_FILE);
    o.run_dir = p->config.run_dir;
    o.split = "validation";
    o.windows = c->thinking.windows;
    o.batch = c->thinking.batch;
    o.output = output;
    o.energies = !strcmp(arch, "ebt") ? energies : NULL;
    o.force = true; /* a thinking.h5 from an interrupted evaluation is not there; anything else is
                       stale */
    o.window_sums = true;
    return ts_eval_run(comm, &o);
}
