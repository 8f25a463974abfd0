#define _XOPEN_SOURCE 700 /* realpath */
#include "experiments/campaign_manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/tokenizer.h"
#include "experiments/campaign_files.h"
#include "io/provenance.h"
#include "io/token_file.h"
#include "models/model.h"
#include "train/step_cost.h"

/* ---------------------------------------------------------------- paths */

bool ts_campaign_repo_root(char *out, size_t outlen) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return false;
    exe[n] = 0;
    /* REPO/build/TYPE/thinkscale */
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash) return false;
        *slash = 0;
    }
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/Makefile", exe);
    if (access(probe, R_OK) != 0 || strlen(exe) >= outlen) return false;
    strcpy(out, exe);
    return true;
}

bool ts_campaign_resolve_path(const char *path, char *out, size_t outlen) {
    char real[PATH_MAX];
    if (realpath(path, real) && strlen(real) < outlen) {
        strcpy(out, real);
        return true;
    }
    char root[PATH_MAX], joined[2 * PATH_MAX];
    if (path[0] != '/' && ts_campaign_repo_root(root, sizeof root)) {
        snprintf(joined, sizeof joined, "%s/%s", root, path);
        if (realpath(joined, real) && strlen(real) < outlen) {
            strcpy(out, real);
            return true;
        }
    }
    snprintf(out, outlen, "%s", path);
    return false;
}

/* ---------------------------------------------------------------- data */

typedef struct data_info {
    bool found;
    char domain[64];
    char tokenizer[128];
    int vocab;
    double train_tokens;
} data_info;

static void basename_domain(const char *path, char *out, size_t outlen) {
    const char *slash = strrchr(path, '/');
    snprintf(out, outlen, "%s", slash ? slash + 1 : path);
    char *dot = strrchr(out, '.');
    if (dot && !strcmp(dot, ".h5")) *dot = 0;
}

/* Opens a token file on this process only, for its domain, vocabulary and size. */
static data_info probe_data(const char *path) {
    data_info info = {0};
    basename_domain(path, info.domain, sizeof info.domain);
    if (access(path, R_OK) != 0) return info;
    ts_token_file tf;
    ts_tf_err err;
    if (ts_token_file_open(&tf, path, MPI_COMM_SELF, NULL, &err) != TS_TF_OK) return info;
    info.found = true;
    if (tf.meta.domain && tf.meta.domain[0])
        snprintf(info.domain, sizeof info.domain, "%s", tf.meta.domain);
    if (tf.meta.tokenizer) snprintf(info.tokenizer, sizeof info.tokenizer, "%s", tf.meta.tokenizer);
    info.vocab = tf.meta.vocab_size;
    info.train_tokens = (double)ts_token_file_len(&tf, TS_SPLIT_TRAIN);
    ts_token_file_close(&tf);
    return info;
}

/* A token file as the campaign file writes it: resolved
 * (ts_campaign_resolve_path) into resolved and probed; *exists says whether
 * the path exists. A missing file's domain is the basename of what was
 * written. */
static data_info probe_written(const char *written, char *resolved, size_t len, bool *exists) {
    *exists = ts_campaign_resolve_path(written, resolved, len);
    data_info info = *exists ? probe_data(resolved) : (data_info){0};
    if (!*exists) basename_domain(written, info.domain, sizeof info.domain);
    return info;
}

/* ---------------------------------------------------------------- expansion */

typedef struct expander {
    const ts_campaign *c;
    ts_campaign_manifest *m;
    const char *dir;
    char eval_resolved[TS_PATH_MAX * 4];
    int vocab;
    double point_train_tokens; /* of the point being expanded (a variant may have its own data) */
    long base_non_embedding[TS_CAMPAIGN_MAX_ARCHS];
    char *err;
    size_t errlen;
} expander;

static bool apply_settings(ts_run_config *config, const ts_campaign_settings *set,
                           const char *where, expander *x) {
    char inner[512];
    for (int i = 0; i < set->count; i++)
        if (!ts_config_set(config, set->items[i].assignment, inner, sizeof inner)) {
            snprintf(x->err, x->errlen, "%s: %s: %s", x->c->path, where, inner);
            return false;
        }
    return true;
}

/* The architecture's base: defaults, [base], [arch.NAME], the campaign's
 * data. *vocab_from_data (may be NULL): whether model.vocab_size was filled
 * in from the data rather than set by the campaign file. */
static bool arch_base(expander *x, int arch, ts_run_config *config, bool *vocab_from_data) {
    const ts_campaign *c = x->c;
    ts_config_defaults(config);
    char where[64], item[TS_PATH_MAX + 32];
    snprintf(item, sizeof item, "model.arch=%s", c->archs[arch]);
    if (!ts_config_set(config, item, x->err, x->errlen)) return false;
    if (!apply_settings(config, &c->base, "[base]", x)) return false;
    snprintf(where, sizeof where, "[arch.%s]", c->archs[arch]);
    if (!apply_settings(config, &c->arch_settings[arch], where, x)) return false;
    snprintf(config->model.arch, sizeof config->model.arch, "%s", c->archs[arch]);
    snprintf(config->train_data, sizeof config->train_data, "%s", x->m->train_data);
    snprintf(config->eval_data, sizeof config->eval_data, "%s", x->eval_resolved);
    if (vocab_from_data) *vocab_from_data = config->model.vocab_size == 0;
    if (config->model.vocab_size == 0) config->model.vocab_size = x->vocab;
    /* Presets (ebt.preset) can change the model's shape: resolve them before
     * counting parameters, as the trainer will. */
    char inner[512];
    if (!ts_config_resolve_presets(config, inner, sizeof inner)) {
        snprintf(x->err, x->errlen, "%s: %s: %s", c->path, where, inner);
        return false;
    }
    return true;
}

/* Records the first token file that is missing or unreadable: plan works
 * without data, run refuses (manifest->missing says why). prefix names
 * where it was given ("" for [campaign], "[variant.NAME] "). */
static void note_missing(ts_campaign_manifest *m, const char *prefix, const char *what,
                         const char *path, bool exists, bool found) {
    if (found || !m->data_found) return;
    m->data_found = false;
    snprintf(m->missing, sizeof m->missing, "%s%s '%s' %s", prefix, what, path,
             exists ? "is not a readable token file" : "does not exist");
}

/* A comma-separated list of evaluation files as written: each resolved
 * (ts_campaign_resolve_path) and probed, the training file `train` left out
 * (the trainer evaluates it anyway); the resolved paths joined by commas
 * into out, their domains appended to domains[*n_domains...]. key names
 * the list for messages ("[campaign] eval"), prefix as note_missing's. */
static bool resolve_eval_list(expander *x, const char *list, const char *train,
                              const char *train_tokenizer, const char *key, const char *prefix,
                              char *out, size_t outlen, char (*domains)[64], int *n_domains) {
    char copy[TS_PATH_MAX * 4];
    snprintf(copy, sizeof copy, "%s", list);
    size_t len = 0;
    out[0] = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t') tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
        if (!*tok) continue;
        char resolved[TS_PATH_MAX];
        bool exists = ts_campaign_resolve_path(tok, resolved, sizeof resolved);
        if (!strcmp(resolved, train)) continue; /* the trainer evaluates it anyway */
        if (*n_domains == TS_CAMPAIGN_MAX_DOMAINS) {
            snprintf(x->err, x->errlen, "%s: %s: more than %d files", x->c->path, key,
                     TS_MAX_EVAL_SETS);
            return false;
        }
        data_info e = probe_written(tok, resolved, sizeof resolved, &exists);
        note_missing(x->m, prefix, "evaluation data", tok, exists, e.found);
        /* As the trainer will: one tokenizer for all (a variant that replaces
         * data.train but not data.eval is caught here, not hours later). */
        char inner[512];
        if (!ts_tokenizer_check_same(train_tokenizer, e.tokenizer, tok, inner, sizeof inner)) {
            snprintf(x->err, x->errlen, "%s: %s: %s", x->c->path, key, inner);
            return false;
        }
        snprintf(domains[(*n_domains)++], sizeof domains[0], "%s", e.domain);
        int n = snprintf(out + len, outlen - len, "%s%s", len ? "," : "", resolved);
        if (n < 0 || (size_t)n >= outlen - len) {
            snprintf(x->err, x->errlen, "%s: %s: paths too long", x->c->path, key);
            return false;
        }
        len += (size_t)n;
    }
    return true;
}

static bool probe_all_data(expander *x) {
    const ts_campaign *c = x->c;
    ts_campaign_manifest *m = x->m;
    bool found;
    data_info train = probe_written(c->data, m->train_data, sizeof m->train_data, &found);
    m->data_found = true;
    note_missing(m, "", "training data", c->data, found, train.found);
    m->train_tokens = train.train_tokens;
    x->vocab = train.vocab;
    m->n_domains = 1;
    snprintf(m->domains[0], sizeof m->domains[0], "%s", train.domain);
    return resolve_eval_list(x, c->eval, m->train_data, train.tokenizer, "[campaign] eval", "",
                             x->eval_resolved, sizeof x->eval_resolved, m->domains, &m->n_domains);
}

/* A thinking variant's data. Usually the campaign's; a variant that sets
 * data.train or data.eval (thinking.ini's subword row: the same domains in
 * another tokenizer) has its files resolved and probed like the campaign's,
 * its vocabulary taken from its own training file unless it sets
 * model.vocab_size, and must hold the campaign's domains: results.h5 and
 * the thinking analysis match evaluation sets by domain name. */
static bool variant_data(expander *x, const char *where, ts_run_config *cfg) {
    ts_campaign_manifest *m = x->m;
    if (!strcmp(cfg->train_data, m->train_data) && !strcmp(cfg->eval_data, x->eval_resolved)) {
        if (cfg->model.vocab_size == 0) cfg->model.vocab_size = x->vocab;
        return true;
    }
    char prefix[TS_CAMPAIGN_NAME_MAX + 24], key[TS_CAMPAIGN_NAME_MAX + 24];
    snprintf(prefix, sizeof prefix, "%s ", where);
    snprintf(key, sizeof key, "%s data.eval", where);
    char train[TS_PATH_MAX];
    bool exists;
    data_info t = probe_written(cfg->train_data, train, sizeof train, &exists);
    note_missing(m, prefix, "training data", cfg->train_data, exists, t.found);
    char domains[TS_CAMPAIGN_MAX_DOMAINS][64];
    int n_domains = 1;
    snprintf(domains[0], sizeof domains[0], "%s", t.domain);
    char *eval = malloc(sizeof cfg->eval_data); /* large: kept off the stack */
    if (!eval) {
        snprintf(x->err, x->errlen, "%s: out of memory", where);
        return false;
    }
    if (!resolve_eval_list(x, cfg->eval_data, train, t.tokenizer, key, prefix, eval,
                           sizeof cfg->eval_data, domains, &n_domains)) {
        free(eval);
        return false;
    }
    bool same = n_domains == m->n_domains && !strcmp(domains[0], m->domains[0]);
    for (int i = 1; same && i < n_domains; i++) {
        bool listed = false;
        for (int j = 1; j < m->n_domains; j++)
            listed = listed || !strcmp(domains[i], m->domains[j]);
        same = listed;
    }
    if (!same) {
        char mine[512] = "", theirs[512] = "";
        for (int i = 1, at = 0; i < n_domains && at >= 0 && (size_t)at < sizeof mine; i++)
            at += snprintf(mine + at, sizeof mine - (size_t)at, " %s", domains[i]);
        for (int i = 1, at = 0; i < m->n_domains && at >= 0 && (size_t)at < sizeof theirs; i++)
            at += snprintf(theirs + at, sizeof theirs - (size_t)at, " %s", m->domains[i]);
        snprintf(x->err, x->errlen,
                 "%s: its data (training domain %s, evaluation domains%s) must hold the "
                 "campaign's domains (training %s, evaluation%s): results and the thinking "
                 "analysis match sets by domain",
                 where, domains[0], mine[0] ? mine : " none", m->domains[0],
                 theirs[0] ? theirs : " none");
        free(eval);
        return false;
    }
    snprintf(cfg->train_data, sizeof cfg->train_data, "%s", train);
    snprintf(cfg->eval_data, sizeof cfg->eval_data, "%s", eval);
    free(eval);
    x->point_train_tokens = t.train_tokens;
    if (cfg->model.vocab_size == 0) {
        if (!t.found) {
            snprintf(x->err, x->errlen,
                     "%s: data.train '%s' %s, and model.vocab_size is not set: the model's size "
                     "needs one of them",
                     where, cfg->train_data,
                     exists ? "is not a readable token file" : "does not exist");
            return false;
        }
        cfg->model.vocab_size = t.vocab;
    }
    return true;
}

/* Parameter counts of a configuration's model (also validates its sizes).
 * EBT's replay buffer is state, not parameters: left out here. */
static bool count_params(const ts_run_config *config, long *params, long *non_embedding, char *err,
                         size_t errlen) {
    ts_model_config model = config->model;
    model.ebt.replay_size = 0;
    return ts_param_counts(&model, params, non_embedding, err, errlen);
}

static const ts_campaign_size *find_size(const ts_campaign *c, const char *name) {
    for (int i = 0; i < c->n_sizes; i++)
        if (!strcmp(c->sizes[i].name, name)) return &c->sizes[i];
    return NULL;
}

/* The axis value applied to the base: shape, batch, steps and lr. */
static bool apply_axis(expander *x, ts_campaign_point *p, int value_index, bool vocab_from_data) {
    const ts_campaign *c = x->c;
    ts_run_config *cfg = &p->config;
    ts_axis values_of = p->axis == TS_AXIS_FLOPS ? TS_AXIS_PARAMS : p->axis;
    double v = c->values[values_of][value_index];
    double tokens_per_step = (double)cfg->batch * cfg->model.context;
    switch (p->axis) {
    case TS_AXIS_DATA:
        snprintf(p->value, sizeof p->value, "%.0f", v);
        cfg->steps = (long)llround(v / tokens_per_step);
        if (cfg->steps < 1) cfg->steps = 1;
        break;
    case TS_AXIS_BATCH:
        snprintf(p->value, sizeof p->value, "%.0f", v);
        cfg->batch = (long)v;
        break;
    case TS_AXIS_DEPTH:
        snprintf(p->value, sizeof p->value, "%.0f", v);
        cfg->model.depth = (int)v;
        break;
    case TS_AXIS_WIDTH:
        snprintf(p->value, sizeof p->value, "%.0f", v);
        cfg->model.width = (int)v;
        break;
    case TS_AXIS_PARAMS:
    case TS_AXIS_FLOPS: {
        const ts_campaign_size *z = find_size(c, c->size_names[value_index]);
        snprintf(p->value, sizeof p->value, "%s", z->name);
        cfg->model.depth = z->depth;
        cfg->model.width = z->width;
        cfg->model.heads = z->heads;
        cfg->optim.lr = z->lr;
        long params, n;
        if (!count_params(cfg, &params, &n, x->err, x->errlen)) return false;
        if (z->batch)
            cfg->batch = z->batch;
        else if (c->batch_rule == TS_BATCH_SQRT)
            cfg->batch = (long)llround((double)cfg->batch *
                                       sqrt((double)n / (double)x->base_non_embedding[p->arch]));
        if (cfg->batch < 1) cfg->batch = 1;
        if (cfg->batch % cfg->accum) cfg->batch += cfg->accum - cfg->batch % cfg->accum;
        if (c->params_tokens_per_param > 0) {
            double per_step = (double)cfg->batch * cfg->model.context;
            cfg->steps = (long)ceil(c->params_tokens_per_param * (double)n / per_step);
        }
        break;
    }
    case TS_AXIS_THINKING: {
        /* A trained variant: its overrides on the architecture's base. */
        const char *name = c->variant_names[value_index];
        snprintf(p->value, sizeof p->value, "%s", name);
        const ts_campaign_variant *variant = ts_campaign_find_variant(c, name);
        char where[TS_CAMPAIGN_NAME_MAX + 16];
        snprintf(where, sizeof where, "[variant.%s]", name);
        /* A vocabulary filled in from the campaign's data is filled in again
         * from the variant's own, if it has its own. */
        if (variant && vocab_from_data) cfg->model.vocab_size = 0;
        if (variant && !apply_settings(cfg, &variant->settings, where, x)) return false;
        if (variant && !variant_data(x, where, cfg)) return false;
        char inner[512];
        if (variant && !ts_config_resolve_presets(cfg, inner, sizeof inner)) {
            snprintf(x->err, x->errlen, "%s: %s", where, inner);
            return false;
        }
        break;
    }
    case TS_AXIS_COUNT:
        break;
    }
    return true;
}

/* Whether a thinking-axis variant is trained for an architecture. */
static bool variant_applies(const ts_campaign *c, ts_axis axis, int value_index, int arch) {
    if (axis != TS_AXIS_THINKING) return true;
    const ts_campaign_variant *v = ts_campaign_find_variant(c, c->variant_names[value_index]);
    return !v || v->arch_listed[arch];
}

/* Run length dependent settings: warm-up, checkpoints, evaluation windows. */
static void apply_rules(const ts_campaign *c, ts_campaign_point *p) {
    ts_run_config *cfg = &p->config;
    double tokens_per_step = (double)cfg->batch * cfg->model.context;
    if (c->warmup_tokens_per_param > 0) {
        long w = (long)ceil(c->warmup_tokens_per_param * (double)p->non_embedding_params /
                            tokens_per_step);
        if (w < c->warmup_min_steps) w = c->warmup_min_steps;
        cfg->optim.warmup_steps = w;
    }
    long cap = (long)floor(c->warmup_max_fraction * (double)cfg->steps);
    if (cfg->optim.warmup_steps > cap) cfg->optim.warmup_steps = cap;
    cfg->checkpoint_every = (cfg->steps + c->checkpoints - 1) / c->checkpoints;
    if (c->eval_windows > 0) {
        cfg->eval_batches = (c->eval_windows + cfg->batch - 1) / cfg->batch;
        if (cfg->eval_batches < 1) cfg->eval_batches = 1;
    }
}

/* A checksum of what makes a configuration differ from the defaults: the
 * "[section] key = value" lines of its INI text that the default INI text
 * does not have. A key added to the configuration later, with a default that
 * changes nothing, leaves every existing manifest valid. */
static bool checksum_config(const ts_run_config *config, uint64_t *out) {
    ts_run_config defaults;
    ts_config_defaults(&defaults);
    char *mine = ts_config_to_ini(config), *base = ts_config_to_ini(&defaults);
    char *differing = mine ? calloc(strlen(mine) * 2 + 2, 1) : NULL;
    bool ok = mine && base && differing;
    size_t len = 0;
    char section[64] = "";
    for (char *save = NULL, *line = ok ? strtok_r(mine, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%s", line);
            continue;
        }
        /* The same line under the same section header in the defaults? */
        const char *in_base = strstr(base, section);
        const char *end = in_base ? strstr(in_base + 1, "\n[") : NULL;
        const char *hit = in_base ? strstr(in_base, line) : NULL;
        bool same = hit && (!end || hit < end) && hit[-1] == '\n' &&
                    (hit[strlen(line)] == '\n' || hit[strlen(line)] == 0);
        if (!same) len += (size_t)sprintf(differing + len, "%s %s\n", section, line);
    }
    if (ok) *out = ts_checksum64(differing, len);
    free(mine);
    free(base);
    free(differing);
    return ok;
}

static bool expand_point(expander *x, ts_campaign_point *p, int value_index) {
    const ts_campaign *c = x->c;
    bool vocab_from_data;
    if (!arch_base(x, p->arch, &p->config, &vocab_from_data)) return false;
    p->config.seed = p->seed;
    x->point_train_tokens = x->m->train_tokens;
    if (!apply_axis(x, p, value_index, vocab_from_data)) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", x->err);
        snprintf(x->err, x->errlen, "%s: point %s-%s-%s: %s", c->path, c->archs[p->arch],
                 ts_axis_name(p->axis), p->value, inner);
        return false;
    }
    snprintf(p->name, sizeof p->name, "%s-%s-%s-s%ld", c->archs[p->arch], ts_axis_name(p->axis),
             p->value, p->seed);
    char inner[512];
    ts_run_config check = p->config;
    bool ok = count_params(&p->config, &p->params, &p->non_embedding_params, inner, sizeof inner);
    if (ok) {
        apply_rules(c, p);
        check = p->config;
        ok = ts_config_validate(&check, inner, sizeof inner);
    }
    if (!ok) {
        snprintf(x->err, x->errlen, "%s: point %s (axis %s, value %s): %s", c->path, p->name,
                 ts_axis_name(p->axis), p->value, inner);
        return false;
    }
    p->config = check; /* presets resolved, as the trainer would */
    p->tokens = (double)p->config.steps * (double)p->config.batch * p->config.model.context;
    p->epochs = x->point_train_tokens > 0 ? p->tokens / x->point_train_tokens : NAN;
    p->config.run_dir[0] = 0;
    if (!checksum_config(&p->config, &p->config_checksum)) {
        snprintf(x->err, x->errlen, "out of memory");
        return false;
    }
    return true;
}

bool ts_campaign_expand(const ts_campaign *c, const char *dir, ts_campaign_manifest *m, char *err,
                        size_t errlen) {
    memset(m, 0, sizeof *m);
    expander x = {.c = c, .m = m, .dir = dir ? dir : "DIR", .err = err, .errlen = errlen};
    if (!probe_all_data(&x)) return false;
    /* The vocabulary: the data's, or model.vocab_size when the data is not here. */
    for (int a = 0; a < c->n_archs; a++) {
        ts_run_config base;
        if (!arch_base(&x, a, &base, NULL)) return false;
        if (base.model.vocab_size == 0) {
            snprintf(err, errlen,
                     "%s: %s, and model.vocab_size is not set: the model's size needs one of them",
                     c->path, m->missing);
            return false;
        }
        long params;
        char inner[512];
        if (!count_params(&base, &params, &x.base_non_embedding[a], inner, sizeof inner)) {
            snprintf(err, errlen, "%s: the base configuration of %s: %s", c->path, c->archs[a],
                     inner);
            return false;
        }
    }
    int cap = 0;
    for (int i = 0; i < c->n_axes; i++) {
        ts_axis a = c->axes[i] == TS_AXIS_FLOPS ? TS_AXIS_PARAMS : c->axes[i];
        cap += c->n_values[a];
    }
    cap *= c->n_archs * c->n_seeds;
    m->points = calloc((size_t)cap, sizeof *m->points);
    if (!m->points) {
        snprintf(err, errlen, "out of memory for %d points", cap);
        return false;
    }
    for (int a = 0; a < c->n_archs; a++)
        for (int i = 0; i < c->n_axes; i++) {
            ts_axis axis = c->axes[i], values_of = axis == TS_AXIS_FLOPS ? TS_AXIS_PARAMS : axis;
            for (int v = 0; v < c->n_values[values_of]; v++)
                for (int s = 0; s < c->n_seeds && variant_applies(c, axis, v, a); s++) {
                    ts_campaign_point *p = &m->points[m->n_points];
                    p->arch = a;
                    p->axis = axis;
                    p->seed = c->seeds[s];
                    if (!expand_point(&x, p, v)) return false;
                    for (int j = 0; j < m->n_points; j++)
                        if (!strcmp(m->points[j].name, p->name)) {
                            snprintf(err, errlen, "%s: point %s is listed twice", c->path, p->name);
                            return false;
                        }
                    m->n_points++;
                }
        }
    /* Identical configurations share the run of the first point that has it. */
    for (int i = 0; i < m->n_points; i++) {
        ts_campaign_point *p = &m->points[i];
        p->run_owner = i;
        for (int j = 0; j < i; j++)
            if (m->points[j].run_owner == j && m->points[j].config_checksum == p->config_checksum) {
                p->run_owner = j;
                break;
            }
        if (p->run_owner == i) m->n_runs++;
        snprintf(p->run, sizeof p->run, "%s", m->points[p->run_owner].name);
        int n = snprintf(p->config.run_dir, sizeof p->config.run_dir, "%s/runs/%s", x.dir, p->run);
        if (n < 0 || (size_t)n >= sizeof p->config.run_dir) {
            snprintf(err, errlen, "campaign directory path too long");
            return false;
        }
    }
    return true;
}

void ts_campaign_manifest_free(ts_campaign_manifest *m) {
    free(m->points);
    m->points = NULL;
    m->n_points = 0;
}

/* ---------------------------------------------------------------- manifest file */

static const char manifest_header[] =
    "index\tname\trun\tarch\taxis\tvalue\tseed\tconfig_checksum\n";

char *ts_campaign_manifest_text(const ts_campaign *c, const ts_campaign_manifest *m) {
    size_t cap = sizeof manifest_header + (size_t)m->n_points * 512, len = 0;
    char *text = malloc(cap);
    if (!text) return NULL;
    len += (size_t)snprintf(text, cap, "%s", manifest_header);
    for (int i = 0; i < m->n_points; i++) {
        const ts_campaign_point *p = &m->points[i];
        len += (size_t)snprintf(text + len, cap - len, "%d\t%s\t%s\t%s\t%s\t%s\t%ld\t%016llx\n", i,
                                p->name, p->run, c->archs[p->arch], ts_axis_name(p->axis), p->value,
                                p->seed, (unsigned long long)p->config_checksum);
    }
    return text;
}

/* The line of text holding index (0: the header), or NULL. */
static const char *nth_line(const char *text, int index, size_t *len) {
    for (int i = 0; i < index && text; i++) {
        text = strchr(text, '\n');
        if (text) text++;
    }
    if (!text || !*text) return NULL;
    const char *end = strchr(text, '\n');
    *len = end ? (size_t)(end - text) : strlen(text);
    return text;
}

bool ts_campaign_manifest_claim_dir(const ts_campaign *c, const ts_campaign_manifest *m,
                                    const char *dir, char *err, size_t errlen) {
    char path[TS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/manifest.tsv", dir);
    char *mine = ts_campaign_manifest_text(c, m);
    if (!mine) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    char *theirs = NULL;
    bool ok = true;
    if (access(path, F_OK) == 0) {
        theirs = ts_campaign_read_file(path, err, errlen);
        ok = theirs != NULL;
        for (int i = 0; ok; i++) {
            size_t la = 0, lb = 0;
            const char *a = nth_line(mine, i, &la), *b = nth_line(theirs, i, &lb);
            if (!a && !b) break;
            if (a && b && la == lb && !memcmp(a, b, la)) continue;
            ok = false;
            /* Written whole and ending in a newline: a file that does not is
             * cut short; one without the header is not a manifest. */
            size_t length = strlen(theirs);
            bool cut = length > 0 && theirs[length - 1] != '\n';
            if (i == 0 || cut) {
                snprintf(err, errlen,
                         "%s is damaged (%s): if %s holds this campaign, remove the file and run "
                         "again (the runs are kept and resumed by name); otherwise use another "
                         "--dir",
                         path,
                         i == 0 ? "not a manifest this program wrote, or empty"
                                : "it ends in the middle of a line: cut short",
                         dir);
                break;
            }
            if (!b) { /* every line of it agrees, and it stops */
                snprintf(err, errlen,
                         "%s stops after point %d of this campaign's %d: a campaign of fewer "
                         "points, or the file cut short; use another --dir, or, if %s holds this "
                         "campaign, remove the file and run again",
                         path, i - 2, m->n_points, dir);
                break;
            }
            int shown_a = a ? (int)la : 6, shown_b = (int)lb;
            snprintf(err, errlen,
                     "%s belongs to another campaign: point %d differs (%s has '%.*s', %s gives "
                     "'%.*s'); use another --dir, so that results are never mixed",
                     dir, i - 1, path, shown_b, b, c->path, shown_a, a ? a : "(none)");
        }
    } else {
        ok = ts_make_dirs(dir, err, errlen) == TS_IO_OK &&
             ts_campaign_write_file_atomic(path, mine, strlen(mine), err, errlen);
    }
    free(mine);
    free(theirs);
    return ok;
}

/* ---------------------------------------------------------------- selection */

static bool parse_index_range(const char *item, long *lo, long *hi) {
    char *end;
    errno = 0;
    *lo = strtol(item, &end, 10);
    if (end == item || errno || *lo < 0) return false;
    if (!*end) {
        *hi = *lo;
        return true;
    }
    if (*end != '-') return false;
    const char *second = end + 1;
    *hi = strtol(second, &end, 10);
    return end != second && !*end && !errno && *hi >= *lo;
}

bool ts_campaign_select(const ts_campaign_manifest *m, const char *selection, bool *selected,
                        char *err, size_t errlen) {
    for (int i = 0; i < m->n_points; i++) selected[i] = !selection;
    if (!selection) return true;
    char *copy = strdup(selection);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    bool ok = true, any_item = false;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); ok && item;
         item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ') item++;
        if (!*item) continue;
        any_item = true;
        int matched = 0;
        long lo, hi;
        if (!strcmp(item, "all")) {
            for (int i = 0; i < m->n_points; i++) selected[i] = true;
            matched = m->n_points;
        } else if (parse_index_range(item, &lo, &hi)) {
            if (hi >= m->n_points) {
                snprintf(err, errlen, "--points %s: the campaign has points 0-%d", item,
                         m->n_points - 1);
                ok = false;
            }
            for (long i = lo; ok && i <= hi; i++) selected[i] = true, matched++;
        } else {
            for (int i = 0; i < m->n_points; i++)
                if (fnmatch(item, m->points[i].name, 0) == 0) selected[i] = true, matched++;
        }
        if (ok && !matched) {
            snprintf(err, errlen, "--points: '%s' matches no point (names look like %s)", item,
                     m->n_points ? m->points[0].name : "?");
            ok = false;
        }
    }
    if (ok && !any_item) {
        snprintf(err, errlen, "--points is empty");
        ok = false;
    }
    free(copy);
    return ok;
}
