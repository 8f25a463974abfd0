/* What a model is built from: the shared [model] sizes and one settings
 * struct per architecture that has keys of its own (core/ARCH_config.h).
 * The models layer reads it; the run configuration (core/config.h) fills it. */
#ifndef TS_MODEL_CONFIG_H
#define TS_MODEL_CONFIG_H

#include "core/ebt_config.h"
#include "core/free_config.h"
#include "core/nexus_config.h"

typedef struct ts_model_config {
    char arch[32]; /* "transformerpp", ... */
    int vocab_size;
    int context; /* T, tokens per sequence */
    int depth;   /* L, blocks */
    int width;   /* D */
    int heads;
    double ffn_mult; /* SwiGLU hidden = round(ffn_mult * D) */
    double norm_eps;
    double rope_theta;
    ts_ebt_config ebt;
    ts_free_config free;
    ts_nexus_config nexus;
} ts_model_config;

#endif
