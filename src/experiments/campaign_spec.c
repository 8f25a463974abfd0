#include "experiments/campaign_spec.h"

#include "experiments/campaign_files.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const axis_names[TS_AXIS_COUNT] = {"data",   "batch", "depth",   "width",
                                                      "params", "flops", "thinking"};

const char *ts_axis_name(ts_axis axis) {
    return axis >= 0 && axis < TS_AXIS_COUNT ? axis_names[axis] : "?";
}

static int axis_from_name(const char *name) {
    for (int i = 0; i < TS_AXIS_COUNT; i++)
        if (!strcmp(name, axis_names[i])) return i;
    return -1;
}

const ts_campaign_variant *ts_campaign_find_variant(const ts_campaign *c, const char *name) {
    for (int i = 0; i < c->n_variants; i++)
        if (!strcmp(c->variants[i].name, name)) return &c->variants[i];
    return NULL;
}

bool ts_campaign_has_thinking(const ts_campaign *c) {
    for (int i = 0; i < c->n_axes; i++)
        if (c->axes[i] == TS_AXIS_THINKING) return true;
    return false;
}

int ts_campaign_arch_index(const ts_campaign *c, const char *arch) {
    for (int i = 0; i < c->n_archs; i++)
        if (!strcmp(c->archs[i], arch)) return i;
    return -1;
}

/* ---------------------------------------------------------------- values */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = 0;
    return s;
}

/* Splits a comma-separated list in place; returns the number of items, or -1
 * if there are more than max. Empty items are dropped. */
static int split_list(char *text, char **items, int max) {
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok) continue;
        if (n == max) return -1;
        items[n++] = tok;
    }
    return n;
}

/* A positive number, optionally with a decimal suffix k, M, G or T. */
static bool parse_amount(const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text) return false;
    double scale = 1;
    if (*end == 'k')
        scale = 1e3, end++;
    else if (*end == 'M')
        scale = 1e6, end++;
    else if (*end == 'G')
        scale = 1e9, end++;
    else if (*end == 'T')
        scale = 1e12, end++;
    if (*end || !isfinite(v) || v <= 0) return false;
    *out = v * scale;
    return true;
}

static bool parse_long(const char *text, long min, long *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *text, double min, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min) return false;
    *out = v;
    return true;
}

static bool copy_text(char *dst, size_t size, const char *src) {
    if (strlen(src) >= size) return false;
    strcpy(dst, src);
    return true;
}

/* ---------------------------------------------------------------- parsing */

typedef struct parse_state {
    ts_campaign *c;
    char *err;
    size_t errlen;
    bool failed;
    ts_run_config scratch; /* run-configuration keys are tried here as they are read */
    /* [arch.NAME] sections, matched to the architecture list at the end. */
    int n_arch_sections;
    char arch_sections[TS_CAMPAIGN_MAX_ARCHS][32];
    ts_campaign_settings arch_sections_settings[TS_CAMPAIGN_MAX_ARCHS];
    bool axis_section[TS_AXIS_COUNT];
} parse_state;

__attribute__((format(printf, 2, 3))) static int fail(parse_state *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, s->errlen, fmt, ap);
    va_end(ap);
    s->failed = true;
    return 0;
}

static int add_setting(parse_state *s, ts_campaign_settings *set, const char *section,
                       const char *name, const char *value) {
    if (!strchr(name, '.'))
        return fail(s,
                    "[%s] %s: run-configuration keys are written section.key (e.g. "
                    "train.lr)",
                    section, name);
    if (set->count == TS_CAMPAIGN_MAX_SETTINGS)
        return fail(s, "[%s] %s: too many settings in this section", section, name);
    ts_campaign_setting *item = &set->items[set->count];
    int n = snprintf(item->assignment, sizeof item->assignment, "%s=%s", name, value);
    if (n < 0 || (size_t)n >= sizeof item->assignment)
        return fail(s, "[%s] %s: value too long", section, name);
    /* The configuration machinery names unknown keys and malformed values. */
    char inner[512];
    if (!ts_config_set(&s->scratch, item->assignment, inner, sizeof inner))
        return fail(s, "[%s] %s", section, inner);
    set->count++;
    return 1;
}

static int parse_campaign_key(parse_state *s, const char *name, const char *value) {
    ts_campaign *c = s->c;
    char copy[TS_PATH_MAX * 4], *items[TS_CAMPAIGN_MAX_SEEDS * 4];
    long v = 0;
    if (!strcmp(name, "name")) {
        for (const char *p = value; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
                return fail(s, "[campaign] name '%s': use letters, digits, '-', '_' and '.'",
                            value);
        if (!*value || !copy_text(c->name, sizeof c->name, value))
            return fail(s, "[campaign] name: empty or longer than 63 characters");
        return 1;
    }
    if (!strcmp(name, "architectures")) {
        snprintf(copy, sizeof copy, "%s", value);
        int n = split_list(copy, items, TS_CAMPAIGN_MAX_ARCHS);
        if (n < 0) return fail(s, "[campaign] architectures: more than 8");
        c->n_archs = 0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < c->n_archs; j++)
                if (!strcmp(c->archs[j], items[i]))
                    return fail(s, "[campaign] architectures: '%s' listed twice", items[i]);
            if (!copy_text(c->archs[c->n_archs], sizeof c->archs[0], items[i]))
                return fail(s, "[campaign] architectures: '%s' is too long", items[i]);
            c->n_archs++;
        }
        return 1;
    }
    if (!strcmp(name, "axes")) {
        snprintf(copy, sizeof copy, "%s", value);
        int n = split_list(copy, items, TS_AXIS_COUNT * 2);
        c->n_axes = 0;
        for (int i = 0; i < n; i++) {
            int a = axis_from_name(items[i]);
            if (a < 0)
                return fail(s,
                            "[campaign] axes: unknown axis '%s' (known: data, batch, depth, "
                            "width, params, flops, thinking)",
                            items[i]);
            for (int j = 0; j < c->n_axes; j++)
                if ((int)c->axes[j] == a)
                    return fail(s, "[campaign] axes: '%s' listed twice", items[i]);
            c->axes[c->n_axes++] = (ts_axis)a;
        }
        if (n < 0) return fail(s, "[campaign] axes: too many");
        return 1;
    }
    if (!strcmp(name, "seeds")) {
        snprintf(copy, sizeof copy, "%s", value);
        int n = split_list(copy, items, TS_CAMPAIGN_MAX_SEEDS);
        if (n < 0) return fail(s, "[campaign] seeds: more than 16");
        c->n_seeds = 0;
        for (int i = 0; i < n; i++) {
            if (!parse_long(items[i], 0, &v))
                return fail(s, "[campaign] seeds: '%s' is not a non-negative integer", items[i]);
            for (int j = 0; j < c->n_seeds; j++)
                if (c->seeds[j] == v)
                    return fail(s, "[campaign] seeds: %s listed twice (duplicate points)",
                                items[i]);
            c->seeds[c->n_seeds++] = v;
        }
        return 1;
    }
    if (!strcmp(name, "data")) {
        if (!copy_text(c->data, sizeof c->data, value))
            return fail(s, "[campaign] data: path too long");
        return 1;
    }
    if (!strcmp(name, "eval")) {
        if (!copy_text(c->eval, sizeof c->eval, value)) return fail(s, "[campaign] eval: too long");
        return 1;
    }
    double d = 0;
    if (!strcmp(name, "ranks")) {
        if (!parse_long(value, 1, &v) || v > 1 << 20)
            return fail(s, "[campaign] ranks: '%s' is not a positive integer", value);
        c->ranks = (int)v;
        return 1;
    }
    if (!strcmp(name, "flop_rate")) {
        if (!parse_double(value, 0, &d))
            return fail(s, "[campaign] flop_rate: '%s' is not a number >= 0", value);
        c->flop_rate = d;
        return 1;
    }
    if (!strcmp(name, "mfu")) {
        if (!parse_double(value, 1e-6, &d) || d > 1)
            return fail(s, "[campaign] mfu: '%s' is not in (0, 1]", value);
        c->mfu = d;
        return 1;
    }
    if (!strcmp(name, "checkpoints")) {
        if (!parse_long(value, 1, &v))
            return fail(s, "[campaign] checkpoints: '%s' is not a positive integer", value);
        c->checkpoints = v;
        return 1;
    }
    if (!strcmp(name, "eval_windows")) {
        if (!parse_long(value, 0, &v))
            return fail(s, "[campaign] eval_windows: '%s' is not an integer >= 0", value);
        c->eval_windows = v;
        return 1;
    }
    return fail(s, "[campaign] unknown key '%s'", name);
}

static int parse_axis_values(parse_state *s, ts_axis axis, const char *section, const char *name,
                             const char *value) {
    ts_campaign *c = s->c;
    if (strcmp(name, "values"))
        return fail(s, "[%s] unknown key '%s' (an axis has only 'values')", section, name);
    if (axis == TS_AXIS_FLOPS)
        return fail(s,
                    "[%s] values: the flops axis has no values of its own: it reuses the "
                    "params runs (x = their executed FLOPs)",
                    section);
    char copy[4096], *items[TS_CAMPAIGN_MAX_VALUES];
    snprintf(copy, sizeof copy, "%s", value);
    int n = split_list(copy, items, TS_CAMPAIGN_MAX_VALUES - c->n_values[axis]);
    if (n < 0) return fail(s, "[%s] values: more than 32", section);
    /* Multi-line values continue the list. */
    for (int i = 0; i < n; i++) {
        int k = c->n_values[axis];
        if (axis == TS_AXIS_PARAMS || axis == TS_AXIS_THINKING) {
            char(*names)[TS_CAMPAIGN_NAME_MAX] =
                axis == TS_AXIS_PARAMS ? c->size_names : c->variant_names;
            for (const char *p = items[i]; axis == TS_AXIS_THINKING && *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_.", *p))
                    return fail(s, "[%s] values: '%s': use letters, digits, '_' and '.'", section,
                                items[i]);
            if (!copy_text(names[k], sizeof names[0], items[i]))
                return fail(s, "[%s] values: name '%s' too long", section, items[i]);
            for (int j = 0; j < k; j++)
                if (!strcmp(names[j], items[i]))
                    return fail(s, "[%s] values: '%s' listed twice (a duplicate point)", section,
                                items[i]);
            c->values[axis][k] = k;
        } else {
            double v;
            bool integer = axis != TS_AXIS_DATA;
            if (!parse_amount(items[i], &v) || (integer && v != floor(v)))
                return fail(s, "[%s] values: '%s' is not a positive %s", section, items[i],
                            integer ? "integer" : "number of tokens");
            for (int j = 0; j < k; j++)
                if (c->values[axis][j] == v)
                    return fail(s, "[%s] values: '%s' listed twice (a duplicate point)", section,
                                items[i]);
            c->values[axis][k] = v;
        }
        c->n_values[axis]++;
    }
    s->axis_section[axis] = true;
    return 1;
}

static int parse_size_key(parse_state *s, const char *size_name, const char *section,
                          const char *name, const char *value) {
    ts_campaign *c = s->c;
    ts_campaign_size *z = NULL;
    for (int i = 0; i < c->n_sizes; i++)
        if (!strcmp(c->sizes[i].name, size_name)) z = &c->sizes[i];
    if (!z) {
        if (c->n_sizes == TS_CAMPAIGN_MAX_SIZES) return fail(s, "[%s] more than 16 sizes", section);
        z = &c->sizes[c->n_sizes++];
        if (!copy_text(z->name, sizeof z->name, size_name))
            return fail(s, "[%s] size name too long", section);
    }
    long v = 0;
    double d = 0;
    if (!strcmp(name, "lr")) {
        if (!parse_double(value, 1e-30, &d))
            return fail(s, "[%s] lr: '%s' is not a positive number", section, value);
        z->lr = d;
        return 1;
    }
    if (strcmp(name, "depth") && strcmp(name, "width") && strcmp(name, "heads") &&
        strcmp(name, "batch"))
        return fail(s, "[%s] unknown key '%s' (a size has depth, width, heads, lr, batch)", section,
                    name);
    if (!parse_long(value, 1, &v) || v > 1 << 30)
        return fail(s, "[%s] %s: '%s' is not a positive integer", section, name, value);
    if (!strcmp(name, "depth"))
        z->depth = (int)v;
    else if (!strcmp(name, "width"))
        z->width = (int)v;
    else if (!strcmp(name, "heads"))
        z->heads = (int)v;
    else
        z->batch = v;
    return 1;
}

static int parse_variant_key(parse_state *s, const char *variant_name, const char *section,
                             const char *name, const char *value) {
    ts_campaign *c = s->c;
    ts_campaign_variant *v = NULL;
    for (int i = 0; i < c->n_variants; i++)
        if (!strcmp(c->variants[i].name, variant_name)) v = &c->variants[i];
    if (!v) {
        if (c->n_variants == TS_CAMPAIGN_MAX_VALUES)
            return fail(s, "[%s] more than %d variants", section, TS_CAMPAIGN_MAX_VALUES);
        v = &c->variants[c->n_variants++];
        if (!copy_text(v->name, sizeof v->name, variant_name))
            return fail(s, "[%s] variant name too long", section);
    }
    if (!strcmp(name, "architectures")) {
        if (!copy_text(v->archs_text, sizeof v->archs_text, value))
            return fail(s, "[%s] architectures: too long", section);
        return 1;
    }
    return add_setting(s, &v->settings, section, name, value);
}

/* "1, 2, 4, 8": positive integers into levels[]. */
static int parse_levels(parse_state *s, const char *name, const char *value, long *levels,
                        int *count) {
    char copy[512], *items[TS_CAMPAIGN_MAX_KNOB_LEVELS];
    snprintf(copy, sizeof copy, "%s", value);
    int n = split_list(copy, items, TS_CAMPAIGN_MAX_KNOB_LEVELS);
    if (n <= 0)
        return fail(s, "[thinking] %s: give 1 to %d levels", name, TS_CAMPAIGN_MAX_KNOB_LEVELS);
    for (int i = 0; i < n; i++) {
        if (!parse_long(items[i], 1, &levels[i]) || levels[i] > 1 << 20)
            return fail(s, "[thinking] %s: '%s' is not a positive integer", name, items[i]);
        for (int j = 0; j < i; j++)
            if (levels[j] == levels[i])
                return fail(s, "[thinking] %s: %s listed twice", name, items[i]);
    }
    *count = n;
    return 1;
}

static int parse_thinking_key(parse_state *s, const char *name, const char *value) {
    ts_campaign_thinking *t = &s->c->thinking;
    if (!strcmp(name, "ebt_steps"))
        return parse_levels(s, name, value, t->ebt_steps, &t->n_ebt_steps);
    if (!strcmp(name, "ebt_samples"))
        return parse_levels(s, name, value, t->ebt_samples, &t->n_ebt_samples);
    if (!strcmp(name, "free_samples"))
        return parse_levels(s, name, value, t->free_samples, &t->n_free_samples);
    if (!strcmp(name, "nexus_orders"))
        return parse_levels(s, name, value, t->nexus_orders, &t->n_nexus_orders);
    long *target = !strcmp(name, "windows") ? &t->windows
                   : !strcmp(name, "batch") ? &t->batch
                                            : NULL;
    if (!target)
        return fail(s,
                    "[thinking] unknown key '%s' (known: ebt_steps, ebt_samples, free_samples, "
                    "nexus_orders, windows, batch)",
                    name);
    if (!parse_long(value, 1, target) || *target > 1 << 20)
        return fail(s, "[thinking] %s: '%s' is not a positive integer", name, value);
    return 1;
}

static int parse_rules_key(parse_state *s, const char *name, const char *value) {
    ts_campaign *c = s->c;
    double d = 0;
    long v = 0;
    if (!strcmp(name, "batch")) {
        if (!strcmp(value, "fixed"))
            c->batch_rule = TS_BATCH_FIXED;
        else if (!strcmp(value, "sqrt"))
            c->batch_rule = TS_BATCH_SQRT;
        else
            return fail(s, "[rules] batch: '%s' is neither fixed nor sqrt", value);
        return 1;
    }
    if (!strcmp(name, "warmup_min_steps")) {
        if (!parse_long(value, 0, &v))
            return fail(s, "[rules] warmup_min_steps: '%s' is not an integer >= 0", value);
        c->warmup_min_steps = v;
        return 1;
    }
    double *target = !strcmp(name, "params_tokens_per_param")   ? &c->params_tokens_per_param
                     : !strcmp(name, "warmup_tokens_per_param") ? &c->warmup_tokens_per_param
                     : !strcmp(name, "warmup_max_fraction")     ? &c->warmup_max_fraction
                                                                : NULL;
    if (!target) return fail(s, "[rules] unknown key '%s'", name);
    if (!parse_double(value, 0, &d) || (target == &c->warmup_max_fraction && d > 1))
        return fail(s, "[rules] %s: '%s' is not a valid number >= 0", name, value);
    *target = d;
    return 1;
}

static int parse_slurm_key(parse_state *s, const char *name, const char *value) {
    ts_campaign *c = s->c;
    long v = 0;
    double d = 0;
    if (!strcmp(name, "time_margin")) {
        if (!parse_double(value, 1, &d))
            return fail(s, "[slurm] time_margin: '%s' is not a number >= 1", value);
        c->time_margin = d;
        return 1;
    }
    int *int_target = !strcmp(name, "throttle")        ? &c->throttle
                      : !strcmp(name, "nodes")         ? &c->nodes
                      : !strcmp(name, "cpus_per_task") ? &c->cpus_per_task
                                                       : NULL;
    long *long_target = !strcmp(name, "min_minutes")   ? &c->min_minutes
                        : !strcmp(name, "max_minutes") ? &c->max_minutes
                                                       : NULL;
    if (int_target || long_target) {
        if (!parse_long(value, 1, &v) || v > 1 << 20)
            return fail(s, "[slurm] %s: '%s' is not a positive integer", name, value);
        if (int_target)
            *int_target = (int)v;
        else
            *long_target = v;
        return 1;
    }
    char *str_target = !strcmp(name, "partition")  ? c->partition
                       : !strcmp(name, "account")  ? c->account
                       : !strcmp(name, "launcher") ? c->launcher
                       : !strcmp(name, "setup")    ? c->setup
                                                   : NULL;
    size_t size = !strcmp(name, "setup")      ? sizeof c->setup
                  : !strcmp(name, "launcher") ? sizeof c->launcher
                                              : sizeof c->partition;
    if (!str_target) return fail(s, "[slurm] unknown key '%s'", name);
    if (!copy_text(str_target, size, value)) return fail(s, "[slurm] %s: value too long", name);
    if (str_target == c->launcher && strcmp(value, "srun") && strcmp(value, "mpirun"))
        return fail(s, "[slurm] launcher: '%s' is neither srun nor mpirun", value);
    return 1;
}

/* Keys the campaign sets for every point ([campaign] architectures, data
 * and eval, --dir): in [base] or [arch.NAME] they would be replaced without a
 * word, so they are refused there (a [variant.NAME] may give its own data). */
static int refuse_campaign_owned(parse_state *s, const char *section, const char *name) {
    static const char *const owned[][2] = {{"model.arch", "[campaign] architectures"},
                                           {"data.train", "[campaign] data"},
                                           {"data.eval", "[campaign] eval"},
                                           {"train.seed", "[campaign] seeds"},
                                           {"run.dir", "--dir"}};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        if (!strcmp(name, owned[i][0]))
            return fail(s, "[%s] %s: the campaign sets it for every point (%s); set it there",
                        section, name, owned[i][1]);
    return 1;
}

static int handle_entry(void *user, const char *section, const char *name, const char *value) {
    parse_state *s = user;
    if (s->failed) return 0;
    if (!strcmp(section, "campaign")) return parse_campaign_key(s, name, value);
    if (!strcmp(section, "base"))
        return refuse_campaign_owned(s, section, name) &&
               add_setting(s, &s->c->base, section, name, value);
    if (!strcmp(section, "rules")) return parse_rules_key(s, name, value);
    if (!strcmp(section, "slurm")) return parse_slurm_key(s, name, value);
    if (!strcmp(section, "thinking")) return parse_thinking_key(s, name, value);
    if (!strncmp(section, "variant.", 8) && section[8])
        return parse_variant_key(s, section + 8, section, name, value);
    if (!strncmp(section, "arch.", 5)) {
        const char *arch = section + 5;
        int i = 0;
        while (i < s->n_arch_sections && strcmp(s->arch_sections[i], arch)) i++;
        if (i == s->n_arch_sections) {
            if (i == TS_CAMPAIGN_MAX_ARCHS || !copy_text(s->arch_sections[i], 32, arch))
                return fail(s, "[%s] too many architecture sections or name too long", section);
            s->n_arch_sections++;
        }
        return refuse_campaign_owned(s, section, name) &&
               add_setting(s, &s->arch_sections_settings[i], section, name, value);
    }
    if (!strncmp(section, "axis.", 5)) {
        int a = axis_from_name(section + 5);
        if (a < 0) return fail(s, "[%s] unknown axis '%s'", section, section + 5);
        return parse_axis_values(s, (ts_axis)a, section, name, value);
    }
    if (!strncmp(section, "size.", 5) && section[5])
        return parse_size_key(s, section + 5, section, name, value);
    return fail(s,
                "unknown section [%s] (known: campaign, base, arch.NAME, axis.AXIS, size.NAME, "
                "variant.NAME, thinking, rules, slurm)",
                section);
}

static void set_defaults(ts_campaign *c) {
    c->ranks = 1;
    c->mfu = 0.3;
    c->checkpoints = 10;
    c->eval_windows = 0;
    c->batch_rule = TS_BATCH_FIXED;
    c->warmup_min_steps = 0;
    c->warmup_max_fraction = 0.2;
    c->throttle = 4;
    c->time_margin = 2;
    c->min_minutes = 10;
    c->nodes = 1;
    c->cpus_per_task = 1;
    strcpy(c->launcher, "srun");
    static const ts_campaign_thinking thinking = {.n_ebt_steps = 4,
                                                  .ebt_steps = {1, 2, 4, 8},
                                                  .n_ebt_samples = 2,
                                                  .ebt_samples = {1, 4},
                                                  .n_free_samples = 4,
                                                  .free_samples = {1, 4, 16, 64},
                                                  .n_nexus_orders = 3,
                                                  .nexus_orders = {1, 2, 3},
                                                  .windows = 32,
                                                  .batch = 1};
    c->thinking = thinking;
}

/* Every thinking-axis value names a variant ("base" may stay implicit), every
 * variant is used and lists only campaign architectures. */
static bool check_variants(ts_campaign *c, char *err, size_t errlen) {
    const char *f = c->path;
    for (int i = 0; i < c->n_values[TS_AXIS_THINKING]; i++) {
        const char *name = c->variant_names[i];
        if (strcmp(name, "base") && !ts_campaign_find_variant(c, name))
            return snprintf(err, errlen,
                            "%s: [axis.thinking] values: variant '%s' has no [variant.%s]", f, name,
                            name),
                   false;
    }
    for (int i = 0; i < c->n_variants; i++) {
        ts_campaign_variant *v = &c->variants[i];
        bool used = false;
        for (int j = 0; j < c->n_values[TS_AXIS_THINKING]; j++)
            used = used || !strcmp(c->variant_names[j], v->name);
        if (!used)
            return snprintf(err, errlen,
                            "%s: [variant.%s] is not among [axis.thinking] values (a typo?)", f,
                            v->name),
                   false;
        char copy[sizeof v->archs_text], *items[TS_CAMPAIGN_MAX_ARCHS];
        snprintf(copy, sizeof copy, "%s", v->archs_text);
        int n = split_list(copy, items, TS_CAMPAIGN_MAX_ARCHS);
        if (n < 0)
            return snprintf(err, errlen, "%s: [variant.%s] architectures: too many", f, v->name),
                   false;
        for (int a = 0; a < c->n_archs; a++) v->arch_listed[a] = n == 0;
        for (int k = 0; k < n; k++) {
            int a = ts_campaign_arch_index(c, items[k]);
            if (a < 0)
                return snprintf(err, errlen,
                                "%s: [variant.%s] architectures: '%s' is not in [campaign] "
                                "architectures",
                                f, v->name, items[k]),
                       false;
            v->arch_listed[a] = true;
        }
    }
    return true;
}

/* Cross-section checks once the whole file is read. */
static bool check_campaign(ts_campaign *c, parse_state *s, char *err, size_t errlen) {
    const char *f = c->path;
    if (!c->name[0]) return snprintf(err, errlen, "%s: [campaign] name is not set", f), false;
    if (!c->n_archs)
        return snprintf(err, errlen, "%s: [campaign] architectures is empty", f), false;
    if (!c->n_axes) return snprintf(err, errlen, "%s: [campaign] axes is empty", f), false;
    if (ts_campaign_has_thinking(c) && c->n_axes > 1)
        return snprintf(err, errlen,
                        "%s: [campaign] axes: the thinking axis is a campaign of its own (its "
                        "analysis is analysis/thinking.py, not the scaling fits; docs/thinking.md)",
                        f),
               false;
    if (!c->data[0])
        return snprintf(err, errlen, "%s: [campaign] data (the training token file) is not set", f),
               false;
    if (!c->n_seeds) c->seeds[c->n_seeds++] = 33;
    for (int i = 0; i < s->n_arch_sections; i++) {
        int a = ts_campaign_arch_index(c, s->arch_sections[i]);
        if (a < 0)
            return snprintf(err, errlen,
                            "%s: [arch.%s] names an architecture that [campaign] architectures "
                            "does not list",
                            f, s->arch_sections[i]),
                   false;
        c->arch_settings[a] = s->arch_sections_settings[i];
    }
    for (int i = 0; i < c->n_axes; i++) {
        ts_axis a = c->axes[i], values_of = a == TS_AXIS_FLOPS ? TS_AXIS_PARAMS : a;
        if (c->n_values[values_of] == 0)
            return snprintf(err, errlen,
                            "%s: axis %s is empty: give its points in [axis.%s] values%s", f,
                            ts_axis_name(a), ts_axis_name(values_of),
                            a == TS_AXIS_FLOPS ? " (the flops axis reuses the params runs)" : ""),
                   false;
    }
    /* Values of an axis the campaign does not run would be ignored: a typo
     * in axes, or an axis dropped from it, should be seen. */
    for (int a = 0; a < TS_AXIS_COUNT; a++) {
        bool used = false;
        for (int i = 0; i < c->n_axes; i++)
            used |=
                c->axes[i] == (ts_axis)a || (a == TS_AXIS_PARAMS && c->axes[i] == TS_AXIS_FLOPS);
        if (c->n_values[a] > 0 && !used)
            return snprintf(err, errlen,
                            "%s: [axis.%s] gives values for an axis that [campaign] axes does not "
                            "list",
                            f, ts_axis_name((ts_axis)a)),
                   false;
    }
    if (!check_variants(c, err, errlen)) return false;
    /* One evaluation run holds the default and every knob level (16 settings). */
    const ts_campaign_thinking *t = &c->thinking;
    if (t->n_ebt_steps * t->n_ebt_samples + 1 > 16)
        return snprintf(err, errlen,
                        "%s: [thinking] ebt_steps x ebt_samples gives %d levels; at most 15 fit", f,
                        t->n_ebt_steps * t->n_ebt_samples),
               false;
    for (int i = 0; i < c->n_values[TS_AXIS_PARAMS]; i++) {
        const ts_campaign_size *z = NULL;
        for (int j = 0; j < c->n_sizes; j++)
            if (!strcmp(c->sizes[j].name, c->size_names[i])) z = &c->sizes[j];
        if (!z)
            return snprintf(err, errlen, "%s: [axis.params] values: size '%s' has no [size.%s]", f,
                            c->size_names[i], c->size_names[i]),
                   false;
        if (!z->depth || !z->width || !z->heads || !(z->lr > 0))
            return snprintf(err, errlen, "%s: [size.%s] needs depth, width, heads and lr", f,
                            z->name),
                   false;
    }
    return true;
}

bool ts_campaign_load(ts_campaign *c, const char *path, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    set_defaults(c);
    if (!copy_text(c->path, sizeof c->path, path)) {
        snprintf(err, errlen, "campaign file path too long");
        return false;
    }
    char inner_read[1200];
    c->text = ts_campaign_read_file(path, inner_read, sizeof inner_read);
    if (!c->text) {
        snprintf(err, errlen, "campaign file: %s", inner_read);
        return false;
    }
    parse_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory reading '%s'", path);
        return false;
    }
    char inner[1024] = "";
    s->c = c;
    s->err = inner;
    s->errlen = sizeof inner;
    ts_config_defaults(&s->scratch);
    int rc = ini_parse_string(c->text, handle_entry, s);
    bool ok = rc == 0;
    if (rc > 0)
        snprintf(err, errlen, "%s:%d: %s", path, rc, s->failed ? inner : "syntax error");
    else if (rc < 0)
        snprintf(err, errlen, "%s: cannot parse (out of memory)", path);
    ok = ok && check_campaign(c, s, err, errlen);
    free(s);
    return ok;
}

void ts_campaign_free(ts_campaign *c) {
    free(c->text);
    c->text = NULL;
}
