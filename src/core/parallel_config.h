/* The [parallel] keys: how a data-parallel job shares its training state
 * between ranks (parallel/strategy.h, docs/parallelism.md). */
#ifndef TS_PARALLEL_CONFIG_H
#define TS_PARALLEL_CONFIG_H

#include "core/config_schema.h"

typedef struct ts_parallel_config {
    char strategy[16];    /* "ddp", "zero1", "zero2" or "zero3" */
    double memory_limit;  /* bytes of training state one rank may hold; 0: no limit */
    char tensor_grid[16]; /* "off", or "PxQ": tensor parallelism on a P x Q process grid */
    /* Under a grid: "replicated" (activations whole on every rank of a group,
     * only the GEMMs distributed) or "distributed" (activations as 2D blocks,
     * tokens over the process columns, features over the rows) */
    char tensor_activations[16];
    int tensor_block; /* block-cyclic block size of every distributed matrix (ScaLAPACK's NB) */
} ts_parallel_config;

/* "PxQ" (P, Q >= 1) -> *rows = P, *cols = Q; "off" -> false with both 0.
 * False as well for anything else, with *rows = -1 (parallel.tensor_grid is
 * validated with the configuration, so callers after that see only the two). */
bool ts_parallel_tensor_grid(const ts_parallel_config *p, int *rows, int *cols);

extern const ts_config_section ts_parallel_config_section;

#endif
