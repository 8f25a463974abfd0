/* The run configuration: one INI file (parsed with libinih) plus
 * `--set section.key=value` overrides. Every key is declared once, with its
 * type, default and meaning, in a table of its section: [model], [train],
 * [data] and [run] in config.c, [parallel] in core/parallel_config.c, each architecture's own
 * section in core/ARCH_config.c. The schema in config.c lists those sections (the one line an
 * architecture adds here), so an unknown key is an error and the fully resolved configuration can
 * be printed and stored. */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/config_schema.h"
#include "core/model_config.h"
#include "core/optimizer_config.h"
#include "core/parallel_config.h"

#define TS_PATH_MAX 1024
#define TS_MAX_EVAL_SETS 16
#define TS_CONFIG_MAX_KEYS 96

typedef struct ts_run_config {
    ts_model_config model; /* vocab_size comes from the training data */
    ts_optimizer_config optim;
    char optimizer[16]; /* "adamw" or "sgd" */
    long steps;
    long stop_at; /* end this invocation early, resumable (0: never) */
    long batch;   /* sequences per optimiser step, over all ranks */
    long accum;   /* micro-batches per step (gradient accumulation) */
    long seed;
    long log_every;
    long eval_every;
    long eval_batches; /* batches of `batch` sequences per evaluation set */
    long checkpoint_every;
    double checkpoint_minutes; /* also checkpoint after this much wall time (0: off) */
    long keep_checkpoints;
    double watchdog_seconds; /* no progress for this long ends the job (0: derived, < 0: off) */
    double gemm_peak_gflops; /* per-rank MFU denominator (0: measured at start-up) */
    char train_data[TS_PATH_MAX];
    char eval_data[TS_PATH_MAX * 4]; /* comma-separated token files */
    long align;          /* windows start at multiples of this many tokens (data.align) */
    char tokenizer[128]; /* the training data's tokenizer name (data.tokenizer) */
    char run_dir[TS_PATH_MAX];
    ts_parallel_config parallel;            /* [parallel]: how ranks share the training state */
    bool explicit_keys[TS_CONFIG_MAX_KEYS]; /* set by a file or override, not a default */
} ts_run_config;

/* The sections of ts_run_config, in the order of the INI dump. Every
 * function below passes it to the generic code of config_schema.h. */
const ts_config_schema *ts_run_config_schema(void);

void ts_config_defaults(ts_run_config *config);
/* Applies an INI file; false with a message naming the file, line and key. */
bool ts_config_load_file(ts_run_config *config, const char *path, char *err, size_t errlen);
/* Applies INI text, e.g. the configuration stored in a checkpoint; origin
 * names it in messages. */
bool ts_config_load_string(ts_run_config *config, const char *text, const char *origin, char *err,
                           size_t errlen);
/* Applies one "section.key=value" override. */
bool ts_config_set(ts_run_config *config, const char *assignment, char *err, size_t errlen);
/* Applies an override of a key marked as an inference setting (eval
 * --setting); any other key is an error, since it would change the model. */
bool ts_config_set_inference(ts_run_config *config, const char *assignment, char *err,
                             size_t errlen);
/* Whether a key was set by a file or override (presets fill only the others). */
bool ts_config_is_explicit(const ts_run_config *config, const char *section, const char *name);
/* Resolves presets (each section's hook, e.g. ebt.preset) without the
 * checks that need a whole run (data files ...): for costing a configuration. */
bool ts_config_resolve_presets(ts_run_config *config, char *err, size_t errlen);
/* Resolves presets, then checks
 * cross-key consistency; call after all sources are applied. */
bool ts_config_validate(ts_run_config *config, char *err, size_t errlen);
/* The resolved configuration as INI text (malloc'd; NULL if out of memory). */
char *ts_config_to_ini(const ts_run_config *config);
/* Every key with its default and meaning, by section. */
void ts_config_print_keys(FILE *out);
/* Splits eval_data into up to TS_MAX_EVAL_SETS paths (pointers into buf). */
int ts_config_eval_paths(const ts_run_config *config, char *buf, size_t buflen, const char **paths);

#endif
