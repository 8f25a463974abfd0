#include "models/ebt_preset.h"

#include <stdio.h>
#include <string.h>

/* One row per key: the value of the S1 script and of the S2 script. */
typedef struct preset_number {
    const char *key;
    size_t offset;
    bool is_int;
    double s1, s2;
} preset_number;

#define EBT_FIELD(member) offsetof(ts_ebt_config, member)
static const preset_number numbers[] = {
    {"steps", EBT_FIELD(steps), true, 2, 2},           /* S2: randint(min 2, 2 + 2) = 2 or 3 */
    {"landscapes", EBT_FIELD(landscapes), true, 0, 1}, /* S1: one per step; S2: mcmc_num_steps 1 */
    {"random_steps", EBT_FIELD(random_steps), true, 0, 1},
    {"step_size", EBT_FIELD(step_size), false, 500, 5},
    {"step_size_learnable", EBT_FIELD(step_size_learnable), true, 1, 0},
    {"step_size_lr_mult", EBT_FIELD(step_size_lr_mult), false, 1500, 1500},
    {"step_size_random_scale", EBT_FIELD(step_size_random_scale), false, 1, 2},
    {"langevin_noise", EBT_FIELD(langevin_noise), false, 0, 3.0},
    {"replay_size", EBT_FIELD(replay_size), true, 0, 192},
    {"replay_fraction", EBT_FIELD(replay_fraction), false, 0.5, 0.5},
    {"init_scale", EBT_FIELD(init_scale), false, 1.0, 1.0},
};

typedef struct preset_string {
    const char *key;
    size_t offset, size;
    const char *s1, *s2;
} preset_string;

#define EBT_STRING(member) EBT_FIELD(member), sizeof(((ts_ebt_config *)0)->member)
static const preset_string strings[] = {
    {"mode", EBT_STRING(mode), "s1", "s2"},
    {"loss_on", EBT_STRING(loss_on), "mean", "final"},
    {"init", EBT_STRING(init), "random", "random"},
};

bool ebt_apply_preset(ts_run_config *config, char *err, size_t errlen) {
    ts_ebt_config *ebt = &config->model.ebt;
    if (!ebt->preset[0]) return true;
    bool s1 = !strcmp(ebt->preset, "s1");
    if (!s1 && strcmp(ebt->preset, "s2")) {
        snprintf(err, errlen, "ebt.preset: '%s' is neither s1 nor s2 (or empty for none)",
                 ebt->preset);
        return false;
    }
    char *base = (char *)ebt;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        const preset_number *n = &numbers[i];
        if (ts_config_is_explicit(config, "ebt", n->key)) continue;
        double value = s1 ? n->s1 : n->s2;
        if (n->is_int)
            *(int *)(base + n->offset) = (int)value;
        else
            *(double *)(base + n->offset) = value;
    }
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        const preset_string *s = &strings[i];
        if (!ts_config_is_explicit(config, "ebt", s->key))
            snprintf(base + s->offset, s->size, "%s", s1 ? s->s1 : s->s2);
    }
    return true;
}
