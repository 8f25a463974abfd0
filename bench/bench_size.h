/* The benchmarks' common model size (issue 16): D = 256, L = 4, 4 heads,
 * T = 256, FFN = D, a byte vocabulary, 8 sequences a rank. bench/lib.sh
 * gives the shell benchmarks the same size as --set options. */
#ifndef BENCH_SIZE_H
#define BENCH_SIZE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* c = the defaults, the common size, then `settings` (NULL-terminated: an
 * architecture and its options) with presets resolved; false with a
 * message naming the setting that failed. */
static inline bool bench_size_config(ts_run_config *c, const char *const *settings, char *err,
                                     size_t errlen) {
    static const char *const common[] = {
        "model.width=256",    "model.depth=4",        "model.heads=4", "model.context=256",
        "model.ffn_mult=1.0", "model.vocab_size=256", "train.batch=8", NULL};
    ts_config_defaults(c);
    for (int i = 0; common[i]; i++)
        if (!ts_config_set(c, common[i], err, errlen)) return false;
    for (int i = 0; settings[i]; i++)
        if (!ts_config_set(c, settings[i], err, errlen)) return false;
    return ts_config_resolve_presets(c, err, errlen);
}

#endif
