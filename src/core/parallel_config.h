/* The [parallel] keys: how a data-parallel job shares its training state
 * between ranks (parallel/strategy.h, docs/parallelism.md). */
#ifndef TS_PARALLEL_CONFIG_H
#define TS_PARALLEL_CONFIG_H

#include "core/config_schema.h"

typedef struct ts_parallel_config {
    char strategy[16];   /* "ddp", "zero1", "zero2" or "zero3" */
    double memory_limit; /* bytes of training state one rank may hold; 0: no limit */
} ts_parallel_config;

extern const ts_config_section ts_parallel_config_section;

#endif
