#include "core/energy_trace.h"

#include <stdlib.h>

bool ts_energy_trace_alloc(ts_energy_trace *t, long windows, int points, int seq) {
    *t = (ts_energy_trace){.windows = windows, .points = points, .seq = seq};
    t->energy = calloc((size_t)(windows * points * seq), sizeof *t->energy);
    t->token_loss = calloc((size_t)(windows * seq), sizeof *t->token_loss);
    t->tokens = calloc((size_t)(windows * (seq + 1)), sizeof *t->tokens);
    if (t->energy && t->token_loss && t->tokens) return true;
    ts_energy_trace_free(t);
    return false;
}

void ts_energy_trace_free(ts_energy_trace *t) {
    free(t->energy);
    free(t->token_loss);
    free(t->tokens);
    t->energy = t->token_loss = NULL;
    t->tokens = NULL;
}
