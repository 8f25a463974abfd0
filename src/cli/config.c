#include "cli/config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/ebt_preset.h"

enum key_type { KEY_INT, KEY_LONG, KEY_DOUBLE, KEY_STRING };

typedef struct config_key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size; /* for strings */
    const char *help;
    bool inference; /* may differ at evaluation from training (eval --setting) */
} config_key;

#define FIELD(member) offsetof(ts_run_config, member)
#define STR(member) FIELD(member), sizeof(((ts_run_config *)0)->member)
static const config_key keys[] = {
    {"model", "arch", KEY_STRING, STR(model.arch), "architecture: transformerpp", false},
    {"model", "vocab_size", KEY_INT, FIELD(model.vocab_size), 0, "0: taken from the training data", false},
    {"model", "context", KEY_INT, FIELD(model.context), 0, "tokens per training sequence", false},
    {"model", "depth", KEY_INT, FIELD(model.depth), 0, "number of blocks", false},
    {"model", "width", KEY_INT, FIELD(model.width), 0, "embedding dimension D", false},
    {"model", "heads", KEY_INT, FIELD(model.heads), 0, "attention heads", false},
    {"model", "ffn_mult", KEY_DOUBLE, FIELD(model.ffn_mult), 0, "SwiGLU hidden size / D", false},
    {"model", "norm_eps", KEY_DOUBLE, FIELD(model.norm_eps), 0, "RMSNorm epsilon", false},
    {"model", "rope_theta", KEY_DOUBLE, FIELD(model.rope_theta), 0, "RoPE base", false},
    /* Energy-Based Transformer: ../shared/specs/ebt.md */
    {"ebt", "preset", KEY_STRING, STR(model.ebt.preset), "s1 or s2: the spec's settings for keys not set explicitly", false},
    {"ebt", "steps", KEY_INT, FIELD(model.ebt.steps), 0, "gradient steps on the prediction per forward", false},
    {"ebt", "landscapes", KEY_INT, FIELD(model.ebt.landscapes), 0, "time embeddings: step t uses min(t, landscapes-1) (0: one per step)", false},
    {"ebt", "step_size", KEY_DOUBLE, FIELD(model.ebt.step_size), 0, "alpha", false},
    {"ebt", "step_size_learnable", KEY_INT, FIELD(model.ebt.step_size_learnable), 0, "1: alpha is a parameter", false},
    {"ebt", "step_size_lr_mult", KEY_DOUBLE, FIELD(model.ebt.step_size_lr_mult), 0, "learning-rate multiplier of alpha", false},
    {"ebt", "step_size_random_scale", KEY_DOUBLE, FIELD(model.ebt.step_size_random_scale), 0, "s: alpha ~ U[alpha/s, alpha*s] (<= 1: off)", false},
    {"ebt", "random_steps", KEY_INT, FIELD(model.ebt.random_steps), 0, "up to this many extra steps per forward (0: off)", false},
    {"ebt", "langevin_noise", KEY_DOUBLE, FIELD(model.ebt.langevin_noise), 0, "sigma of noise on the logits per step", false},
    {"ebt", "replay_size", KEY_INT, FIELD(model.ebt.replay_size), 0, "replay buffer entries per rank (0: off)", false},
    {"ebt", "replay_fraction", KEY_DOUBLE, FIELD(model.ebt.replay_fraction), 0, "replayed sequences per rank, as a share of the local batch, added to it", false},
    {"ebt", "mode", KEY_STRING, STR(model.ebt.mode), "s1: detach between steps; s2: no detach, truncated", false},
    {"ebt", "loss_on", KEY_STRING, STR(model.ebt.loss_on), "mean (over steps) or final", false},
    {"ebt", "init", KEY_STRING, STR(model.ebt.init), "random or zero initial logits", false},
    {"ebt", "init_scale", KEY_DOUBLE, FIELD(model.ebt.init_scale), 0, "stddev of random initial logits", false},
    {"ebt", "infer_steps", KEY_INT, FIELD(model.ebt.infer_steps), 0, "steps at inference (0: as trained)", true},
    {"ebt", "infer_samples", KEY_INT, FIELD(model.ebt.infer_samples), 0, "self-verification candidates", true},
    {"ebt", "infer_step_size", KEY_DOUBLE, FIELD(model.ebt.infer_step_size), 0, "alpha at inference (0: as trained)", true},
    {"ebt", "infer_noise", KEY_DOUBLE, FIELD(model.ebt.infer_noise), 0, "Langevin noise at inference (0: as trained, < 0: none)", true},
    /* Free Transformer: ../shared/specs/free-transformer.md */
    {"free", "latent_bits", KEY_INT, FIELD(model.free.latent_bits), 0, "H: the latent has 2^H states", false},
    {"free", "kappa", KEY_DOUBLE, FIELD(model.free.kappa), 0, "free bits per token (nats)", false},
    {"free", "eval_samples", KEY_INT, FIELD(model.free.eval_samples), 0, "K prior samples per scored sequence", true},
    {"free", "eval_posterior", KEY_INT, FIELD(model.free.eval_posterior), 0, "1: also report the encoder-posterior number", true},
    {"free", "injection", KEY_STRING, STR(model.free.injection), "before_norm: K/V of block L/2+1 from RMSNorm(X + R); after_norm: RMSNorm(X) + R", false},
    /* Nexus: ../shared/specs/nexus.md */
    {"nexus", "order", KEY_INT, FIELD(model.nexus.order), 0, "attention order in training", false},
    {"nexus", "infer_order", KEY_INT, FIELD(model.nexus.infer_order), 0, "attention order at inference (0: as trained)", true},
    {"nexus", "variant", KEY_STRING, STR(model.nexus.variant), "shared, unshared or selfrefine", false},
    {"train", "steps", KEY_LONG, FIELD(steps), 0, "optimiser steps", false},
    {"train", "stop_at", KEY_LONG, FIELD(stop_at), 0, "stop this invocation after this step with a checkpoint (0: run to train.steps)", false},
    {"train", "batch", KEY_LONG, FIELD(batch), 0, "sequences per step over all ranks", false},
    {"train", "accum", KEY_LONG, FIELD(accum), 0, "micro-batches per step", false},
    {"train", "optimizer", KEY_STRING, STR(optimizer), "adamw or sgd", false},
    {"train", "lr", KEY_DOUBLE, FIELD(optim.lr), 0, "peak learning rate", false},
    {"train", "min_lr_ratio", KEY_DOUBLE, FIELD(optim.min_lr_ratio), 0, "cosine floor / lr", false},
    {"train", "warmup", KEY_LONG, FIELD(optim.warmup_steps), 0, "linear warm-up steps", false},
    {"train", "weight_decay", KEY_DOUBLE, FIELD(optim.weight_decay), 0, "decoupled decay", false},
    {"train", "beta1", KEY_DOUBLE, FIELD(optim.beta1), 0, "AdamW beta1", false},
    {"train", "beta2", KEY_DOUBLE, FIELD(optim.beta2), 0, "AdamW beta2", false},
    {"train", "eps", KEY_DOUBLE, FIELD(optim.eps), 0, "AdamW epsilon", false},
    {"train", "clip", KEY_DOUBLE, FIELD(optim.clip), 0, "gradient-norm clip (0: off)", false},
    {"train", "seed", KEY_LONG, FIELD(seed), 0, "seed of initialisation and data order", false},
    {"train", "log_every", KEY_LONG, FIELD(log_every), 0, "steps between progress lines", false},
    {"train", "eval_every", KEY_LONG, FIELD(eval_every), 0, "steps between evaluations (0: end)", false},
    {"train", "eval_batches", KEY_LONG, FIELD(eval_batches), 0, "batches per evaluation set", false},
    {"train", "checkpoint_every", KEY_LONG, FIELD(checkpoint_every), 0, "steps between checkpoints (0: end)", false},
    {"train", "keep_checkpoints", KEY_LONG, FIELD(keep_checkpoints), 0, "complete checkpoints kept", false},
    {"data", "train", KEY_STRING, STR(train_data), "token file to train on", false},
    {"data", "eval", KEY_STRING, STR(eval_data), "comma-separated token files to evaluate", false},
    {"data", "align", KEY_LONG, FIELD(align), 0, "training and evaluation windows start at multiples of this many tokens (1: anywhere; files of fixed-length records)", false},
    {"run", "dir", KEY_STRING, STR(run_dir), "run directory for metrics and checkpoints", false},
};
#undef FIELD
#undef STR
static const int n_keys = (int)(sizeof keys / sizeof keys[0]);
_Static_assert(sizeof keys / sizeof keys[0] <= TS_CONFIG_MAX_KEYS, "raise TS_CONFIG_MAX_KEYS");

void ts_config_defaults(ts_run_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->model.arch, "transformerpp");
    c->model.context = 256;
    c->model.depth = 4;
    c->model.width = 256;
    c->model.heads = 4;
    c->model.ffn_mult = 1.0;
    c->model.norm_eps = 1e-5;
    c->model.rope_theta = 10000;
    c->model.ebt = (ts_ebt_config){.steps = 2, .step_size = 500, .step_size_learnable = 1,
                                   .step_size_lr_mult = 1500, .replay_fraction = 0.5,
                                   .init_scale = 1.0, .infer_samples = 1};
    strcpy(c->model.ebt.mode, "s1");
    strcpy(c->model.ebt.loss_on, "mean");
    strcpy(c->model.ebt.init, "random");
    c->model.free = (ts_free_config){.latent_bits = 8, .kappa = 0.34657359027997264 /* log(2)/2 */,
                                     .eval_samples = 1, .eval_posterior = 1};
    strcpy(c->model.free.injection, "before_norm");
    c->model.nexus = (ts_nexus_config){.order = 2};
    strcpy(c->model.nexus.variant, "shared");
    strcpy(c->optimizer, "adamw");
    c->optim = (ts_optimizer_config){.kind = TS_ADAMW, .lr = 1.2e-3, .min_lr_ratio = 0.1,
                                     .warmup_steps = 100, .beta1 = 0.9, .beta2 = 0.999,
                                     .eps = 1e-8, .weight_decay = 0.01, .clip = 1.0};
    c->steps = 1000;
    c->batch = 16;
    c->accum = 1;
    c->seed = 33;
    c->log_every = 10;
    c->eval_every = 0;
    c->eval_batches = 4;
    c->checkpoint_every = 0;
    c->keep_checkpoints = 2;
    c->align = 1;
    strcpy(c->run_dir, "runs/default");
}

static const config_key *find_key(const char *section, const char *name) {
    for (int i = 0; i < n_keys; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static bool set_value(ts_run_config *c, const config_key *k, const char *value, char *err,
                      size_t errlen) {
    char *field = (char *)c + k->offset, *end = NULL;
    errno = 0;
    switch (k->type) {
    case KEY_INT:
    case KEY_LONG: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || (k->type == KEY_INT && (v < -2147483647L || v > 2147483647L))) {
            snprintf(err, errlen, "%s.%s: '%s' is not an integer", k->section, k->name, value);
            return false;
        }
        if (k->type == KEY_INT) *(int *)field = (int)v;
        else *(long *)field = v;
        return true;
    }
    case KEY_DOUBLE: {
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v)) {
            snprintf(err, errlen, "%s.%s: '%s' is not a finite number", k->section, k->name, value);
            return false;
        }
        *(double *)field = v;
        return true;
    }
    case KEY_STRING:
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s.%s: value longer than %zu characters", k->section, k->name,
                     k->size - 1);
            return false;
        }
        strcpy(field, value);
        return true;
    }
    return false;
}

static bool set_key(ts_run_config *c, const char *section, const char *name, const char *value,
                    bool inference_only, char *err, size_t errlen) {
    const config_key *k = find_key(section, name);
    if (!k) {
        snprintf(err, errlen, "unknown configuration key '%s.%s'", section, name);
        return false;
    }
    if (inference_only && !k->inference) {
        snprintf(err, errlen, "'%s.%s' is fixed by training and cannot change at evaluation",
                 section, name);
        return false;
    }
    if (!set_value(c, k, value, err, errlen)) return false;
    c->explicit_keys[k - keys] = true;
    return true;
}

bool ts_config_is_explicit(const ts_run_config *c, const char *section, const char *name) {
    const config_key *k = find_key(section, name);
    return k && c->explicit_keys[k - keys];
}

typedef struct ini_state {
    ts_run_config *config;
    char *err;
    size_t errlen;
    bool failed;
} ini_state;

static int apply_ini_entry(void *user, const char *section, const char *name, const char *value) {
    ini_state *s = user;
    if (s->failed) return 0;
    if (!set_key(s->config, section, name, value, false, s->err, s->errlen)) {
        s->failed = true;
        return 0;
    }
    return 1;
}

bool ts_config_load_file(ts_run_config *config, const char *path, char *err, size_t errlen) {
    char inner[512] = "";
    ini_state state = {config, inner, sizeof inner, false};
    int rc = ini_parse(path, apply_ini_entry, &state);
    if (rc == -1) {
        snprintf(err, errlen, "cannot open configuration file '%s': %s", path, strerror(errno));
        return false;
    }
    if (rc == -2) {
        snprintf(err, errlen, "out of memory reading '%s'", path);
        return false;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s:%d: %s", path, rc, state.failed ? inner : "syntax error");
        return false;
    }
    return true;
}

bool ts_config_load_string(ts_run_config *config, const char *text, const char *origin, char *err,
                           size_t errlen) {
    char inner[512] = "";
    ini_state state = {config, inner, sizeof inner, false};
    int rc = ini_parse_string(text, apply_ini_entry, &state);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: %s", origin, rc, state.failed ? inner : "syntax error");
        return false;
    }
    return true;
}

static bool apply_assignment(ts_run_config *config, const char *assignment, bool inference_only,
                             char *err, size_t errlen) {
    const char *eq = strchr(assignment, '='), *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq) {
        snprintf(err, errlen, "override '%s' is not of the form section.key=value", assignment);
        return false;
    }
    char section[64], name[64];
    size_t ls = (size_t)(dot - assignment), ln = (size_t)(eq - dot - 1);
    if (ls >= sizeof section || ln >= sizeof name) {
        snprintf(err, errlen, "override '%s': key too long", assignment);
        return false;
    }
    memcpy(section, assignment, ls);
    section[ls] = 0;
    memcpy(name, dot + 1, ln);
    name[ln] = 0;
    return set_key(config, section, name, eq + 1, inference_only, err, errlen);
}

bool ts_config_set(ts_run_config *config, const char *assignment, char *err, size_t errlen) {
    return apply_assignment(config, assignment, false, err, errlen);
}

bool ts_config_set_inference(ts_run_config *config, const char *assignment, char *err,
                             size_t errlen) {
    return apply_assignment(config, assignment, true, err, errlen);
}

bool ts_config_validate(ts_run_config *c, char *err, size_t errlen) {
    if (!ebt_apply_preset(c, err, errlen)) return false;
    if (!strcmp(c->optimizer, "adamw")) c->optim.kind = TS_ADAMW;
    else if (!strcmp(c->optimizer, "sgd")) c->optim.kind = TS_SGD;
    else {
        snprintf(err, errlen, "train.optimizer: '%s' is neither adamw nor sgd", c->optimizer);
        return false;
    }
    c->optim.total_steps = c->steps;
    if (c->steps < 1 || c->batch < 1 || c->accum < 1 || c->batch % c->accum) {
        snprintf(err, errlen,
                 "train.steps (%ld), train.batch (%ld) and train.accum (%ld) must be positive "
                 "and batch a multiple of accum",
                 c->steps, c->batch, c->accum);
        return false;
    }
    if (c->optim.lr <= 0 || c->log_every < 1 || c->eval_batches < 1 || c->keep_checkpoints < 1 ||
        c->eval_every < 0 || c->checkpoint_every < 0 || c->optim.warmup_steps < 0) {
        snprintf(err, errlen, "train.lr, log_every, eval_batches and keep_checkpoints must be "
                              "positive; eval_every, checkpoint_every and warmup not negative");
        return false;
    }
    if (c->align < 1) {
        snprintf(err, errlen, "data.align must be at least 1, got %ld", c->align);
        return false;
    }
    if (!c->train_data[0]) {
        snprintf(err, errlen, "data.train is not set: name a token file (see docs/data-format.md)");
        return false;
    }
    return true;
}

char *ts_config_to_ini(const ts_run_config *c) {
    size_t cap = 8192, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    const char *section = "";
    for (int i = 0; i < n_keys; i++) {
        const config_key *k = &keys[i];
        const char *field = (const char *)c + k->offset;
        char line[TS_PATH_MAX * 4 + 128];
        int n = 0;
        if (strcmp(section, k->section)) {
            n += snprintf(line + n, sizeof line - (size_t)n, "%s[%s]\n", len ? "\n" : "", k->section);
            section = k->section;
        }
        switch (k->type) {
        case KEY_INT: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %d\n", k->name, *(const int *)field); break;
        case KEY_LONG: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %ld\n", k->name, *(const long *)field); break;
        case KEY_DOUBLE: {
            /* The shortest text that reads back as the same double. */
            double v = *(const double *)field;
            char text[32];
            for (int digits = 6; digits <= 17; digits++) {
                snprintf(text, sizeof text, "%.*g", digits, v);
                if (strtod(text, NULL) == v) break;
            }
            n += snprintf(line + n, sizeof line - (size_t)n, "%s = %s\n", k->name, text);
            break;
        }
        case KEY_STRING: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %s\n", k->name, field); break;
        }
        if (len + (size_t)n + 1 > cap) {
            cap = 2 * (len + (size_t)n + 1);
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(out);
                return NULL;
            }
            out = bigger;
        }
        memcpy(out + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    return out;
}

void ts_config_print_keys(FILE *out) {
    ts_run_config defaults;
    ts_config_defaults(&defaults);
    char *ini = ts_config_to_ini(&defaults);
    const char *section = "";
    for (int i = 0; i < n_keys; i++) {
        const config_key *k = &keys[i];
        if (strcmp(section, k->section)) fprintf(out, "%s[%s]\n", i ? "\n" : "", section = k->section);
        /* The default, as the resolved dump prints it. */
        char pattern[96], header[64], value[128] = "?";
        snprintf(pattern, sizeof pattern, "\n%s = ", k->name);
        snprintf(header, sizeof header, "[%s]", section);
        const char *sec = ini ? strstr(ini, header) : NULL;
        const char *at = sec ? strstr(sec, pattern) : NULL;
        if (at && sscanf(at + strlen(pattern), "%127[^\n]", value) != 1) value[0] = 0;
        fprintf(out, "  %-24s %-14s %s%s\n", k->name, value, k->help,
                k->inference ? " [inference: eval --setting]" : "");
    }
    free(ini);
}

int ts_config_eval_paths(const ts_run_config *c, char *buf, size_t buflen, const char **paths) {
    snprintf(buf, buflen, "%s", c->eval_data);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < TS_MAX_EVAL_SETS;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (*tok) paths[n++] = tok;
    }
    return n;
}
