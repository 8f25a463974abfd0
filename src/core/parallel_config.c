#include "core/parallel_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ts_config_key keys[] = {
    TS_CONFIG_STRING_KEY(ts_parallel_config, "strategy", strategy, "ddp",
                         "ddp (full replica per rank), zero1 (AdamW moments sharded), zero2 "
                         "(gradients too), zero3 (parameters too)",
                         false),
    TS_CONFIG_DOUBLE_KEY(ts_parallel_config, "memory_limit", memory_limit, 0,
                         "bytes of parameters, gradients, moments and activations one rank may "
                         "hold; a run that would not fit stops before allocating (0: no limit)",
                         false),
    TS_CONFIG_STRING_KEY(ts_parallel_config, "tensor_grid", tensor_grid, "off",
                         "off, or PxQ: every linear layer's GEMMs run as ScaLAPACK p?gemm on a P x "
                         "Q BLACS grid of each group of P*Q ranks, parallel.strategy across groups "
                         "(docs/parallelism.md)",
                         false),
    TS_CONFIG_STRING_KEY(ts_parallel_config, "tensor_activations", tensor_activations, "replicated",
                         "under parallel.tensor_grid: replicated (activations whole on every rank "
                         "of a group, only the linear GEMMs distributed) or distributed (every "
                         "activation held as 2D blocks, tokens over the grid's columns and "
                         "features over its rows; Transformer++ and EBT only; docs/parallelism.md)",
                         false),
    TS_CONFIG_INT_KEY(ts_parallel_config, "tensor_block", tensor_block, 32,
                      "under parallel.tensor_grid: the block-cyclic block size (ScaLAPACK's NB) "
                      "of every distributed matrix; with distributed activations a multiple of "
                      "the head width (model.width / model.heads)",
                      false),
};

enum { MAX_GRID_SIDE = 4096 };

bool ts_parallel_tensor_grid(const ts_parallel_config *p, int *rows, int *cols) {
    *rows = *cols = 0;
    if (!strcmp(p->tensor_grid, "off")) return false;
    const char *s = p->tensor_grid;
    char *end;
    long r = strtol(s, &end, 10);
    if (end == s || (*end != 'x' && *end != 'X')) return *rows = -1, false;
    s = end + 1;
    long c = strtol(s, &end, 10);
    if (end == s || *end || r < 1 || c < 1 || r > MAX_GRID_SIDE || c > MAX_GRID_SIDE)
        return *rows = -1, false;
    *rows = (int)r;
    *cols = (int)c;
    return true;
}

static bool resolve(void *fields, const bool *explicit_keys, char *err, size_t errlen) {
    (void)explicit_keys;
    const ts_parallel_config *p = fields;
    static const char *const known[] = {"ddp", "zero1", "zero2", "zero3"};
    bool found = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        found = found || !strcmp(p->strategy, known[i]);
    if (!found) {
        snprintf(err, errlen, "parallel.strategy: '%s' is not one of ddp, zero1, zero2, zero3",
                 p->strategy);
        return false;
    }
    if (!(p->memory_limit >= 0)) {
        snprintf(err, errlen, "parallel.memory_limit must be 0 (none) or a number of bytes, got %g",
                 p->memory_limit);
        return false;
    }
    int rows, cols;
    if (!ts_parallel_tensor_grid(p, &rows, &cols) && rows < 0) {
        snprintf(err, errlen,
                 "parallel.tensor_grid: '%s' is neither off nor PxQ with 1 <= P, Q <= %d "
                 "(e.g. 2x2)",
                 p->tensor_grid, MAX_GRID_SIDE);
        return false;
    }
    if (p->tensor_block < 1 || p->tensor_block > MAX_GRID_SIDE) {
        snprintf(err, errlen, "parallel.tensor_block must be between 1 and %d, got %d",
                 MAX_GRID_SIDE, p->tensor_block);
        return false;
    }
    bool distributed = !strcmp(p->tensor_activations, "distributed");
    if (!distributed && strcmp(p->tensor_activations, "replicated")) {
        snprintf(err, errlen,
                 "parallel.tensor_activations: '%s' is neither replicated nor distributed",
                 p->tensor_activations);
        return false;
    }
    if (distributed && !ts_parallel_tensor_grid(p, &rows, &cols)) {
        snprintf(err, errlen,
                 "parallel.tensor_activations distributed needs a parallel.tensor_grid (it is "
                 "off)");
        return false;
    }
    return true;
}

const ts_config_section ts_parallel_config_section = {"parallel", keys,
                                                      (int)(sizeof keys / sizeof keys[0]), resolve};
