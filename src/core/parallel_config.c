#include "core/parallel_config.h"

#include <stdio.h>
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
};

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
    return true;
}

const ts_config_section ts_parallel_config_section = {"parallel", keys,
                                                      (int)(sizeof keys / sizeof keys[0]), resolve};
