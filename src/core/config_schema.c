#include "core/config_schema.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int ts_config_schema_keys(const ts_config_schema *schema) {
    int n = 0;
    for (int p = 0; p < schema->n_parts; p++) n += schema->parts[p].section->n_keys;
    return n;
}

/* The part holding flat key index `index`, and the key's index within it. */
static const ts_config_part *part_of(const ts_config_schema *schema, int index, int *local) {
    for (int p = 0; p < schema->n_parts; p++) {
        int n = schema->parts[p].section->n_keys;
        if (index < n) {
            *local = index;
            return &schema->parts[p];
        }
        index -= n;
    }
    return NULL;
}

int ts_config_section_find(const ts_config_section *section, const char *name) {
    for (int i = 0; i < section->n_keys; i++)
        if (!strcmp(section->keys[i].name, name)) return i;
    return -1;
}

int ts_config_schema_find(const ts_config_schema *schema, const char *section, const char *name) {
    int base = 0;
    for (int p = 0; p < schema->n_parts; p++) {
        const ts_config_section *s = schema->parts[p].section;
        if (!strcmp(s->name, section)) {
            int i = ts_config_section_find(s, name);
            if (i >= 0) return base + i;
        }
        base += s->n_keys;
    }
    return -1;
}

void ts_config_key_store(const ts_config_key *k, void *field, ts_config_value value) {
    switch (k->type) {
    case TS_CONFIG_INT:
        *(int *)field = (int)value.integer;
        break;
    case TS_CONFIG_LONG:
        *(long *)field = value.integer;
        break;
    case TS_CONFIG_DOUBLE:
        *(double *)field = value.real;
        break;
    case TS_CONFIG_STRING:
        snprintf(field, k->size, "%s", value.text ? value.text : "");
        break;
    }
}

static ts_config_value default_of(const ts_config_key *k) {
    return (ts_config_value){.integer = k->integer, .real = k->real, .text = k->text};
}

void ts_config_schema_defaults(const ts_config_schema *schema, void *config, bool *explicit_keys) {
    int index = 0;
    for (int p = 0; p < schema->n_parts; p++) {
        const ts_config_part *part = &schema->parts[p];
        for (int i = 0; i < part->section->n_keys; i++, index++) {
            const ts_config_key *k = &part->section->keys[i];
            ts_config_key_store(k, (char *)config + part->offset + k->offset, default_of(k));
            explicit_keys[index] = false;
        }
    }
}

static bool parse_value(const char *section, const ts_config_key *k, const char *value, char *field,
                        char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case TS_CONFIG_INT:
    case TS_CONFIG_LONG: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end ||
            (k->type == TS_CONFIG_INT && (v < -2147483647L || v > 2147483647L))) {
            snprintf(err, errlen, "%s.%s: '%s' is not an integer", section, k->name, value);
            return false;
        }
        if (k->type == TS_CONFIG_INT)
            *(int *)field = (int)v;
        else
            *(long *)field = v;
        return true;
    }
    case TS_CONFIG_DOUBLE: {
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v)) {
            snprintf(err, errlen, "%s.%s: '%s' is not a finite number", section, k->name, value);
            return false;
        }
        *(double *)field = v;
        return true;
    }
    case TS_CONFIG_STRING:
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s.%s: value longer than %zu characters", section, k->name,
                     k->size - 1);
            return false;
        }
        strcpy(field, value);
        return true;
    }
    return false;
}

bool ts_config_schema_set(const ts_config_schema *schema, void *config, bool *explicit_keys,
                          const char *section, const char *name, const char *value,
                          bool inference_only, char *err, size_t errlen) {
    int index = ts_config_schema_find(schema, section, name), local = 0;
    const ts_config_part *part = index >= 0 ? part_of(schema, index, &local) : NULL;
    if (!part) {
        snprintf(err, errlen, "unknown configuration key '%s.%s'", section, name);
        return false;
    }
    const ts_config_key *k = &part->section->keys[local];
    if (inference_only && !k->inference) {
        snprintf(err, errlen, "'%s.%s' is fixed by training and cannot change at evaluation",
                 section, name);
        return false;
    }
    if (!parse_value(section, k, value, (char *)config + part->offset + k->offset, err, errlen))
        return false;
    explicit_keys[index] = true;
    return true;
}

bool ts_config_schema_assign(const ts_config_schema *schema, void *config, bool *explicit_keys,
                             const char *assignment, bool inference_only, char *err,
                             size_t errlen) {
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
    return ts_config_schema_set(schema, config, explicit_keys, section, name, eq + 1,
                                inference_only, err, errlen);
}

typedef struct ini_state {
    const ts_config_schema *schema;
    void *config;
    bool *explicit_keys;
    char *err;
    size_t errlen;
    bool failed;
} ini_state;

static int apply_ini_entry(void *user, const char *section, const char *name, const char *value) {
    ini_state *s = user;
    if (s->failed) return 0;
    if (!ts_config_schema_set(s->schema, s->config, s->explicit_keys, section, name, value, false,
                              s->err, s->errlen)) {
        s->failed = true;
        return 0;
    }
    return 1;
}

bool ts_config_schema_load_file(const ts_config_schema *schema, void *config, bool *explicit_keys,
                                const char *path, char *err, size_t errlen) {
    char inner[512] = "";
    ini_state state = {schema, config, explicit_keys, inner, sizeof inner, false};
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

bool ts_config_schema_load_string(const ts_config_schema *schema, void *config, bool *explicit_keys,
                                  const char *text, const char *origin, char *err, size_t errlen) {
    char inner[512] = "";
    ini_state state = {schema, config, explicit_keys, inner, sizeof inner, false};
    int rc = ini_parse_string(text, apply_ini_entry, &state);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: %s", origin, rc, state.failed ? inner : "syntax error");
        return false;
    }
    return true;
}

bool ts_config_schema_resolve(const ts_config_schema *schema, void *config,
                              const bool *explicit_keys, char *err, size_t errlen) {
    int base = 0;
    for (int p = 0; p < schema->n_parts; p++) {
        const ts_config_part *part = &schema->parts[p];
        if (part->section->resolve && !part->section->resolve((char *)config + part->offset,
                                                              explicit_keys + base, err, errlen))
            return false;
        base += part->section->n_keys;
    }
    return true;
}

/* A value as the INI dump writes it; doubles as the shortest text that reads
 * back as the same double. */
static void format_value(const ts_config_key *k, const char *field, char *text, size_t len) {
    switch (k->type) {
    case TS_CONFIG_INT:
        snprintf(text, len, "%d", *(const int *)field);
        break;
    case TS_CONFIG_LONG:
        snprintf(text, len, "%ld", *(const long *)field);
        break;
    case TS_CONFIG_DOUBLE: {
        double v = *(const double *)field;
        for (int digits = 6; digits <= 17; digits++) {
            snprintf(text, len, "%.*g", digits, v);
            if (strtod(text, NULL) == v) break;
        }
        break;
    }
    case TS_CONFIG_STRING:
        snprintf(text, len, "%s", field);
        break;
    }
}

char *ts_config_schema_to_ini(const ts_config_schema *schema, const void *config) {
    size_t cap = 8192, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = 0;
    for (int p = 0; p < schema->n_parts; p++) {
        const ts_config_part *part = &schema->parts[p];
        for (int i = 0; i < part->section->n_keys; i++) {
            const ts_config_key *k = &part->section->keys[i];
            size_t value_len = (k->type == TS_CONFIG_STRING ? k->size : 0) + 32;
            size_t need = strlen(part->section->name) + strlen(k->name) + value_len + 16;
            if (len + need > cap) {
                cap = 2 * (len + need);
                char *bigger = realloc(out, cap);
                if (!bigger) {
                    free(out);
                    return NULL;
                }
                out = bigger;
            }
            if (i == 0)
                len += (size_t)snprintf(out + len, cap - len, "%s[%s]\n", len ? "\n" : "",
                                        part->section->name);
            len += (size_t)snprintf(out + len, cap - len, "%s = ", k->name);
            format_value(k, (const char *)config + part->offset + k->offset, out + len, cap - len);
            len += strlen(out + len);
            len += (size_t)snprintf(out + len, cap - len, "\n");
        }
    }
    return out;
}

void ts_config_schema_print_keys(const ts_config_schema *schema, FILE *out) {
    bool first = true;
    for (int p = 0; p < schema->n_parts; p++) {
        const ts_config_section *s = schema->parts[p].section;
        for (int i = 0; i < s->n_keys; i++) {
            const ts_config_key *k = &s->keys[i];
            if (i == 0) fprintf(out, "%s[%s]\n", first ? "" : "\n", s->name);
            first = false;
            /* The default straight from the table, formatted as the dump writes it. */
            union {
                int i;
                long l;
                double d;
                char s[256];
            } field;
            char value[256];
            ts_config_key bounded = *k;
            if (bounded.size > sizeof field.s) bounded.size = sizeof field.s;
            ts_config_key_store(&bounded, &field, default_of(k));
            format_value(k, (const char *)&field, value, sizeof value);
            fprintf(out, "  %-24s %-14s %s", k->name, value, k->help);
            for (int a = 0, n = 0; k->lists_architectures && a < schema->n_parts; a++)
                if (schema->parts[a].architecture)
                    fprintf(out, "%s%s", n++ ? ", " : ": ", schema->parts[a].section->name);
            fprintf(out, "%s\n", k->inference ? " [inference: eval --setting]" : "");
        }
    }
}
