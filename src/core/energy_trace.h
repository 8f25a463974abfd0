/* Per-token energies of an energy-based model's evaluation, as the model
 * fills them: plain buffers shared by the model that records them (models/)
 * and the writer that stores them (io/energies.h), so neither includes the
 * other. */
#ifndef TS_ENERGY_TRACE_H
#define TS_ENERGY_TRACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_energy_trace {
    long windows;       /* windows of the whole evaluation */
    int points;         /* energies per prediction */
    int seq;            /* predictions per window */
    double *energy;     /* [windows][points][seq], zero for windows another rank scores */
    double *token_loss; /* [windows][seq] */
    int32_t *tokens;    /* [windows][seq + 1] */
} ts_energy_trace;

/* Zeroed buffers; false if out of memory. */
bool ts_energy_trace_alloc(ts_energy_trace *trace, long windows, int points, int seq);
void ts_energy_trace_free(ts_energy_trace *trace);

#endif
