#include "core/ebt_config.h"

#include <string.h>

#define KEY_INT(name, def, help, inference)                                                        \
    TS_CONFIG_INT_KEY(ts_ebt_config, #name, name, def, help, inference)
#define KEY_DOUBLE(name, def, help, inference)                                                     \
    TS_CONFIG_DOUBLE_KEY(ts_ebt_config, #name, name, def, help, inference)
#define KEY_STRING(name, def, help)                                                                \
    TS_CONFIG_STRING_KEY(ts_ebt_config, #name, name, def, help, false)
static const ts_config_key keys[] = {
    KEY_STRING(preset, "", "s1 or s2: the spec's settings for keys not set explicitly"),
    KEY_INT(steps, 2, "gradient steps on the prediction per forward", false),
    KEY_INT(landscapes, 0, "time embeddings: step t uses min(t, landscapes-1) (0: one per step)",
            false),
    KEY_DOUBLE(step_size, 500, "alpha", false),
    KEY_INT(step_size_learnable, 1, "1: alpha is a parameter", false),
    KEY_DOUBLE(step_size_lr_mult, 1500, "learning-rate multiplier of alpha", false),
    KEY_DOUBLE(step_size_random_scale, 0, "s: alpha ~ U[alpha/s, alpha*s] (<= 1: off)", false),
    KEY_INT(random_steps, 0, "up to this many extra steps per forward (0: off)", false),
    KEY_DOUBLE(langevin_noise, 0, "sigma of noise on the logits per step", false),
    KEY_INT(replay_size, 0, "replay buffer entries per rank (0: off)", false),
    KEY_DOUBLE(replay_fraction, 0.5,
               "replayed sequences per rank, as a share of the local batch, added to it", false),
    KEY_STRING(mode, "s1", "s1: detach between steps; s2: no detach, truncated"),
    KEY_STRING(loss_on, "mean", "mean (over steps) or final"),
    KEY_STRING(init, "random", "random or zero initial logits"),
    KEY_DOUBLE(init_scale, 1.0, "stddev of random initial logits", false),
    KEY_INT(infer_steps, 0, "steps at inference (0: as trained)", true),
    KEY_INT(infer_samples, 1, "self-verification candidates", true),
    KEY_DOUBLE(infer_step_size, 0, "alpha at inference (0: as trained)", true),
    KEY_DOUBLE(infer_noise, 0, "Langevin noise at inference (0: as trained, < 0: none)", true),
};
#undef KEY_INT
#undef KEY_DOUBLE
#undef KEY_STRING

/* The presets "s1" and "s2": the settings of the official training scripts
 * (../shared/specs/ebt.md, table "Training"), one row per key: the value of
 * the S1 script and of the S2 script. */
typedef struct preset_row {
    const char *key;
    double s1, s2;                 /* numeric keys */
    const char *s1_text, *s2_text; /* string keys */
} preset_row;

static const preset_row presets[] = {
    {"steps", 2, 2, NULL, NULL},      /* S2: randint(min 2, 2 + 2) = 2 or 3 */
    {"landscapes", 0, 1, NULL, NULL}, /* S1: one per step; S2: mcmc_num_steps 1 */
    {"random_steps", 0, 1, NULL, NULL},
    {"step_size", 500, 5, NULL, NULL},
    {"step_size_learnable", 1, 0, NULL, NULL},
    {"step_size_lr_mult", 1500, 1500, NULL, NULL},
    {"step_size_random_scale", 1, 2, NULL, NULL},
    {"langevin_noise", 0, 3.0, NULL, NULL},
    {"replay_size", 0, 192, NULL, NULL},
    {"replay_fraction", 0.5, 0.5, NULL, NULL},
    {"init_scale", 1.0, 1.0, NULL, NULL},
    {"mode", 0, 0, "s1", "s2"},
    {"loss_on", 0, 0, "mean", "final"},
    {"init", 0, 0, "random", "random"},
};

static bool apply_preset(void *fields, const bool *explicit_keys, char *err, size_t errlen) {
    ts_ebt_config *ebt = fields;
    if (!ebt->preset[0]) return true;
    bool s1 = !strcmp(ebt->preset, "s1");
    if (!s1 && strcmp(ebt->preset, "s2")) {
        snprintf(err, errlen, "ebt.preset: '%s' is neither s1 nor s2 (or empty for none)",
                 ebt->preset);
        return false;
    }
    for (size_t r = 0; r < sizeof presets / sizeof presets[0]; r++) {
        const preset_row *row = &presets[r];
        int i = ts_config_section_find(&ts_ebt_config_section, row->key);
        if (i < 0 || explicit_keys[i]) continue;
        const ts_config_key *k = &keys[i];
        double number = s1 ? row->s1 : row->s2;
        ts_config_key_store(k, (char *)ebt + k->offset,
                            (ts_config_value){.integer = (long)number,
                                              .real = number,
                                              .text = s1 ? row->s1_text : row->s2_text});
    }
    return true;
}

const ts_config_section ts_ebt_config_section = {"ebt", keys, (int)(sizeof keys / sizeof keys[0]),
                                                 apply_preset};
