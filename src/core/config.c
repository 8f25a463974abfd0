#include "core/config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_INT(name, member, def, help)                                                         \
    TS_CONFIG_INT_KEY(ts_model_config, name, member, def, help, false)
#define MODEL_DOUBLE(name, member, def, help)                                                      \
    TS_CONFIG_DOUBLE_KEY(ts_model_config, name, member, def, help, false)
static const ts_config_key model_keys[] = {
    {.name = "arch",
     .type = TS_CONFIG_STRING,
     .offset = offsetof(ts_model_config, arch),
     .size = sizeof(((ts_model_config *)0)->arch),
     .text = "transformerpp",
     .help = "architecture",
     .lists_architectures = true},
    MODEL_INT("vocab_size", vocab_size, 0, "0: taken from the training data"),
    MODEL_INT("context", context, 256, "tokens per training sequence"),
    MODEL_INT("depth", depth, 4, "number of blocks"),
    MODEL_INT("width", width, 256, "embedding dimension D"),
    MODEL_INT("heads", heads, 4, "attention heads"),
    MODEL_DOUBLE("ffn_mult", ffn_mult, 1.0, "SwiGLU hidden size / D"),
    MODEL_DOUBLE("norm_eps", norm_eps, 1e-5, "RMSNorm epsilon"),
    MODEL_DOUBLE("rope_theta", rope_theta, 10000, "RoPE base"),
};
#undef MODEL_INT
#undef MODEL_DOUBLE

#define RUN_LONG(name, member, def, help)                                                          \
    TS_CONFIG_LONG_KEY(ts_run_config, name, member, def, help, false)
#define RUN_DOUBLE(name, member, def, help)                                                        \
    TS_CONFIG_DOUBLE_KEY(ts_run_config, name, member, def, help, false)
#define RUN_STRING(name, member, def, help)                                                        \
    TS_CONFIG_STRING_KEY(ts_run_config, name, member, def, help, false)
static const ts_config_key train_keys[] = {
    RUN_LONG("steps", steps, 1000, "optimiser steps"),
    RUN_LONG("stop_at", stop_at, 0,
             "stop this invocation after this step with a checkpoint (0: run to train.steps)"),
    RUN_LONG("batch", batch, 16, "sequences per step over all ranks"),
    RUN_LONG("accum", accum, 1, "micro-batches per step"),
    RUN_STRING("optimizer", optimizer, "adamw", "adamw or sgd"),
    RUN_DOUBLE("lr", optim.lr, 1.2e-3, "peak learning rate"),
    RUN_DOUBLE("min_lr_ratio", optim.min_lr_ratio, 0.1, "cosine floor / lr"),
    RUN_LONG("warmup", optim.warmup_steps, 100, "linear warm-up steps"),
    RUN_DOUBLE("weight_decay", optim.weight_decay, 0.01, "decoupled decay"),
    RUN_DOUBLE("beta1", optim.beta1, 0.9, "AdamW beta1"),
    RUN_DOUBLE("beta2", optim.beta2, 0.999, "AdamW beta2"),
    RUN_DOUBLE("eps", optim.eps, 1e-8, "AdamW epsilon"),
    RUN_DOUBLE("clip", optim.clip, 1.0, "gradient-norm clip (0: off)"),
    RUN_LONG("seed", seed, 33, "seed of initialisation and data order"),
    RUN_LONG("log_every", log_every, 10, "steps between progress lines"),
    RUN_LONG("eval_every", eval_every, 0, "steps between evaluations (0: end)"),
    RUN_LONG("eval_batches", eval_batches, 4, "batches per evaluation set"),
    RUN_LONG("checkpoint_every", checkpoint_every, 0, "steps between checkpoints (0: end)"),
    RUN_DOUBLE("checkpoint_minutes", checkpoint_minutes, 0,
               "also checkpoint when this many minutes of wall time (rank 0's clock) have passed "
               "since the last checkpoint or the start (0: off)"),
    RUN_LONG("keep_checkpoints", keep_checkpoints, 2, "complete checkpoints kept"),
    RUN_DOUBLE("watchdog_seconds", watchdog_seconds, 0,
               "a training step, evaluation or checkpoint that makes no progress for this many "
               "seconds ends the job with exit status 5 (0: 20 x the longest of its kind so far, "
               "at least 300 s; negative: off)"),
    RUN_DOUBLE("gemm_peak_gflops", gemm_peak_gflops, 0,
               "per-rank GEMM rate in GFLOP/s that the MFU is measured against (0: measured at "
               "start-up, 768^3 on OpenBLAS and the engine's own kernel, the faster; about half a "
               "second)"),
};
static const ts_config_key data_keys[] = {
    RUN_STRING("train", train_data, "", "token file to train on"),
    RUN_STRING("eval", eval_data, "", "comma-separated token files to evaluate"),
    RUN_LONG("align", align, 1,
             "training and evaluation windows start at multiples of this many tokens (1: anywhere; "
             "files of fixed-length records)"),
    RUN_STRING("tokenizer", tokenizer, "",
               "the training data's tokenizer, filled from data.train; evaluation sets must have "
               "the same"),
};
static const ts_config_key run_keys[] = {
    RUN_STRING("dir", run_dir, "runs/default", "run directory for metrics and checkpoints"),
};
#undef RUN_LONG
#undef RUN_DOUBLE
#undef RUN_STRING

#define SECTION(name, keys)                                                                        \
    { name, keys, (int)(sizeof keys / sizeof keys[0]), NULL }
static const ts_config_section model_section = SECTION("model", model_keys);
static const ts_config_section train_section = SECTION("train", train_keys);
static const ts_config_section data_section = SECTION("data", data_keys);
static const ts_config_section run_section = SECTION("run", run_keys);
#undef SECTION
/* Transformer++ has only the shared [model] keys. */
static const ts_config_section transformerpp_section = {"transformerpp", NULL, 0, NULL};

#define ARCHITECTURE(section, member)                                                              \
    { &section, offsetof(ts_run_config, model.member), true }
static const ts_config_part parts[] = {
    {&model_section, offsetof(ts_run_config, model), false},
    /* One line per architecture: its [section] (named as model.arch names
     * it) and its member of ts_model_config. */
    {&transformerpp_section, 0, true},
    ARCHITECTURE(ts_ebt_config_section, ebt),
    ARCHITECTURE(ts_free_config_section, free),
    ARCHITECTURE(ts_nexus_config_section, nexus),
    {&train_section, 0, false},
    {&data_section, 0, false},
    {&run_section, 0, false},
    {&ts_parallel_config_section, offsetof(ts_run_config, parallel), false},
};
#undef ARCHITECTURE
static const ts_config_schema schema = {parts, (int)(sizeof parts / sizeof parts[0])};

const ts_config_schema *ts_run_config_schema(void) {
    return &schema;
}

void ts_config_defaults(ts_run_config *c) {
    const ts_config_schema *s = ts_run_config_schema();
    if (ts_config_schema_keys(s) > TS_CONFIG_MAX_KEYS) {
        /* A programming error, caught by every test: the flags would overflow. */
        fprintf(stderr, "thinkscale: %d configuration keys; raise TS_CONFIG_MAX_KEYS\n",
                ts_config_schema_keys(s));
        abort();
    }
    memset(c, 0, sizeof *c);
    ts_config_schema_defaults(s, c, c->explicit_keys);
    c->optim.kind = TS_ADAMW; /* from train.optimizer, resolved in ts_config_validate */
}

bool ts_config_is_explicit(const ts_run_config *c, const char *section, const char *name) {
    int i = ts_config_schema_find(ts_run_config_schema(), section, name);
    return i >= 0 && c->explicit_keys[i];
}

bool ts_config_load_file(ts_run_config *config, const char *path, char *err, size_t errlen) {
    return ts_config_schema_load_file(ts_run_config_schema(), config, config->explicit_keys, path,
                                      err, errlen);
}

bool ts_config_load_string(ts_run_config *config, const char *text, const char *origin, char *err,
                           size_t errlen) {
    return ts_config_schema_load_string(ts_run_config_schema(), config, config->explicit_keys, text,
                                        origin, err, errlen);
}

bool ts_config_set(ts_run_config *config, const char *assignment, char *err, size_t errlen) {
    return ts_config_schema_assign(ts_run_config_schema(), config, config->explicit_keys,
                                   assignment, false, err, errlen);
}

/* The architecture whose [section] holds the assignment's key, or NULL for a
 * section of every model (model, train, ...). */
static const char *architecture_of(const char *assignment) {
    const ts_config_schema *run_schema = ts_run_config_schema();
    const char *dot = strchr(assignment, '.');
    for (int i = 0; dot && i < run_schema->n_parts; i++) {
        const char *name = run_schema->parts[i].section->name;
        if (run_schema->parts[i].architecture && strlen(name) == (size_t)(dot - assignment) &&
            !strncmp(assignment, name, strlen(name)))
            return name;
    }
    return NULL;
}

bool ts_config_set_inference(ts_run_config *config, const char *assignment, char *err,
                             size_t errlen) {
    /* Another architecture's key changes nothing this model computes, and
     * its results would be stored as a setting of their own. */
    const char *arch = architecture_of(assignment);
    if (arch && strcmp(arch, config->model.arch)) {
        snprintf(err, errlen, "'%s' is a setting of the %s architecture; this model is %s",
                 assignment, arch, config->model.arch);
        return false;
    }
    return ts_config_schema_assign(ts_run_config_schema(), config, config->explicit_keys,
                                   assignment, true, err, errlen);
}

bool ts_config_resolve_presets(ts_run_config *c, char *err, size_t errlen) {
    return ts_config_schema_resolve(ts_run_config_schema(), c, c->explicit_keys, err, errlen);
}

/* A value out of its range trains without complaint and fails far from its
 * cause (beta2 < 0: an infinite loss some steps later; min_lr_ratio > 1: a
 * learning rate that climbs past its peak), so each is refused here, by name. */
static bool refuse(const char *key, double value, const char *range, char *err, size_t errlen) {
    snprintf(err, errlen, "%s must be %s; got %g", key, range, value);
    return false;
}

static bool optimizer_in_range(const ts_optimizer_config *o, char *err, size_t errlen) {
    if (!(o->min_lr_ratio >= 0 && o->min_lr_ratio <= 1))
        return refuse("train.min_lr_ratio", o->min_lr_ratio, "in [0, 1] (a fraction of train.lr)",
                      err, errlen);
    if (!(o->weight_decay >= 0))
        return refuse("train.weight_decay", o->weight_decay, "0 or more", err, errlen);
    if (!(o->clip >= 0))
        return refuse("train.clip", o->clip, "0 (off) or a positive gradient norm", err, errlen);
    if (o->kind != TS_ADAMW) return true; /* SGD reads none of the moments' settings */
    if (!(o->beta1 >= 0 && o->beta1 < 1))
        return refuse("train.beta1", o->beta1, "in [0, 1)", err, errlen);
    if (!(o->beta2 >= 0 && o->beta2 < 1))
        return refuse("train.beta2", o->beta2, "in [0, 1)", err, errlen);
    if (!(o->eps > 0 && isfinite(o->eps)))
        return refuse("train.eps", o->eps, "positive", err, errlen);
    return true;
}

/* The numbers of the model's arithmetic (its sizes are the architecture's
 * to check, models/model.c). */
static bool model_numbers_in_range(const ts_model_config *m, char *err, size_t errlen) {
    if (!(m->norm_eps > 0 && isfinite(m->norm_eps)))
        return refuse("model.norm_eps", m->norm_eps, "positive", err, errlen);
    if (!(m->rope_theta > 0 && isfinite(m->rope_theta)))
        return refuse("model.rope_theta", m->rope_theta, "positive", err, errlen);
    return true;
}

bool ts_config_validate(ts_run_config *c, char *err, size_t errlen) {
    if (!ts_config_resolve_presets(c, err, errlen)) return false;
    if (!strcmp(c->optimizer, "adamw"))
        c->optim.kind = TS_ADAMW;
    else if (!strcmp(c->optimizer, "sgd"))
        c->optim.kind = TS_SGD;
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
        c->eval_every < 0 || c->checkpoint_every < 0 || c->optim.warmup_steps < 0 ||
        !(c->checkpoint_minutes >= 0)) {
        snprintf(err, errlen,
                 "train.lr, log_every, eval_batches and keep_checkpoints must be "
                 "positive; eval_every, checkpoint_every, checkpoint_minutes and "
                 "warmup not negative");
        return false;
    }
    if (!(c->gemm_peak_gflops >= 0) || !isfinite(c->gemm_peak_gflops)) {
        snprintf(err, errlen,
                 "train.gemm_peak_gflops must be a rate in GFLOP/s, or 0 to measure it; got %g",
                 c->gemm_peak_gflops);
        return false;
    }
    if (!optimizer_in_range(&c->optim, err, errlen) ||
        !model_numbers_in_range(&c->model, err, errlen))
        return false;
    if (c->stop_at < 0) {
        snprintf(err, errlen, "train.stop_at must be a step, or 0 to run to train.steps; got %ld",
                 c->stop_at);
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
    return ts_config_schema_to_ini(ts_run_config_schema(), c);
}

void ts_config_print_keys(FILE *out) {
    ts_config_schema_print_keys(ts_run_config_schema(), out);
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
