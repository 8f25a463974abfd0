/* Typed configuration keys grouped into INI sections, and the generic code
 * that reads, overrides, prints and resolves a struct described by them.
 * Nothing here knows any particular key: the run configuration (config.h)
 * hands its schema to every call, so a second configuration type (or a test)
 * can reuse the same code with a table of its own. */
#ifndef TS_CONFIG_SCHEMA_H
#define TS_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum ts_config_type {
    TS_CONFIG_INT,
    TS_CONFIG_LONG,
    TS_CONFIG_DOUBLE,
    TS_CONFIG_STRING
} ts_config_type;

/* One key: where its value lives in its section's struct, its default and
 * its meaning. The default is the field of the key's type (integer for INT
 * and LONG, real for DOUBLE, text for STRING; NULL text means ""). */
typedef struct ts_config_key {
    const char *name;
    ts_config_type type;
    size_t offset; /* within the struct the section describes */
    size_t size;   /* strings: buffer size including the terminator */
    long integer;
    double real;
    const char *text;
    const char *help;
    bool inference;           /* may differ at evaluation from training (eval --setting) */
    bool lists_architectures; /* help ends with the schema's architecture names */
} ts_config_key;

/* Table rows, one per key; NAME is the key, MEMBER the field of TYPE. */
#define TS_CONFIG_INT_KEY(TYPE, NAME, MEMBER, DEFAULT, HELP, INFERENCE)                            \
    {                                                                                              \
        .name = NAME, .type = TS_CONFIG_INT, .offset = offsetof(TYPE, MEMBER), .integer = DEFAULT, \
        .help = HELP, .inference = INFERENCE                                                       \
    }
#define TS_CONFIG_LONG_KEY(TYPE, NAME, MEMBER, DEFAULT, HELP, INFERENCE)                           \
    {                                                                                              \
        .name = NAME, .type = TS_CONFIG_LONG, .offset = offsetof(TYPE, MEMBER),                    \
        .integer = DEFAULT, .help = HELP, .inference = INFERENCE                                   \
    }
#define TS_CONFIG_DOUBLE_KEY(TYPE, NAME, MEMBER, DEFAULT, HELP, INFERENCE)                         \
    {                                                                                              \
        .name = NAME, .type = TS_CONFIG_DOUBLE, .offset = offsetof(TYPE, MEMBER), .real = DEFAULT, \
        .help = HELP, .inference = INFERENCE                                                       \
    }
#define TS_CONFIG_STRING_KEY(TYPE, NAME, MEMBER, DEFAULT, HELP, INFERENCE)                         \
    {                                                                                              \
        .name = NAME, .type = TS_CONFIG_STRING, .offset = offsetof(TYPE, MEMBER),                  \
        .size = sizeof(((TYPE *)0)->MEMBER), .text = DEFAULT, .help = HELP, .inference = INFERENCE \
    }

/* A value for a key of any type: the member of the key's type is stored
 * (integer for INT and LONG, real for DOUBLE, text for STRING). */
typedef struct ts_config_value {
    long integer;
    double real;
    const char *text;
} ts_config_value;

/* Stores value into field, the key's member of its struct: the one place
 * that writes a field by its type (defaults, presets). Strings are truncated
 * to the key's size. */
void ts_config_key_store(const ts_config_key *k, void *field, ts_config_value value);

/* Runs after every source (file, overrides) has been applied, e.g. a preset
 * that fills the keys not set explicitly. fields: the section's struct;
 * explicit_keys[i]: whether keys[i] of the section was set by a source. */
typedef bool (*ts_config_resolve_fn)(void *fields, const bool *explicit_keys, char *err,
                                     size_t errlen);

/* The keys of one [section], described relative to one struct. */
typedef struct ts_config_section {
    const char *name;
    const ts_config_key *keys;
    int n_keys;
    ts_config_resolve_fn resolve; /* NULL: nothing to resolve */
} ts_config_section;

/* A section placed in the configuration struct: at byte offset `offset`.
 * architecture: the section names an architecture (model.arch = its name). */
typedef struct ts_config_part {
    const ts_config_section *section;
    size_t offset;
    bool architecture;
} ts_config_part;

/* Parts in the order of the INI dump. explicit_keys of the functions below
 * has one flag per key over all parts, in this order (ts_config_schema_keys). */
typedef struct ts_config_schema {
    const ts_config_part *parts;
    int n_parts;
} ts_config_schema;

int ts_config_schema_keys(const ts_config_schema *schema);
/* Every key's default; clears explicit_keys. */
void ts_config_schema_defaults(const ts_config_schema *schema, void *config, bool *explicit_keys);
/* The flat index of section.name, or -1. */
int ts_config_schema_find(const ts_config_schema *schema, const char *section, const char *name);
/* Sets one key from text; inference_only refuses keys not marked inference. */
bool ts_config_schema_set(const ts_config_schema *schema, void *config, bool *explicit_keys,
                          const char *section, const char *name, const char *value,
                          bool inference_only, char *err, size_t errlen);
/* "section.key=value". */
bool ts_config_schema_assign(const ts_config_schema *schema, void *config, bool *explicit_keys,
                             const char *assignment, bool inference_only, char *err, size_t errlen);
/* INI file or text (origin names the text in messages), through libinih. */
bool ts_config_schema_load_file(const ts_config_schema *schema, void *config, bool *explicit_keys,
                                const char *path, char *err, size_t errlen);
bool ts_config_schema_load_string(const ts_config_schema *schema, void *config, bool *explicit_keys,
                                  const char *text, const char *origin, char *err, size_t errlen);
/* Calls every section's resolve hook, in schema order. */
bool ts_config_schema_resolve(const ts_config_schema *schema, void *config,
                              const bool *explicit_keys, char *err, size_t errlen);
/* The values as INI text (malloc'd; NULL if out of memory). */
char *ts_config_schema_to_ini(const ts_config_schema *schema, const void *config);
/* Every key with its default (from the table) and meaning, by section. */
void ts_config_schema_print_keys(const ts_config_schema *schema, FILE *out);
/* A key's index in its own section's table, or -1. */
int ts_config_section_find(const ts_config_section *section, const char *name);

#endif
