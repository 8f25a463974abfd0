/* The units a sharding strategy gathers and reduces one at a time
 * (docs/parallelism.md): unit 0 is everything no block marks (embeddings,
 * final norm, heads, an encoder), unit l + 1 the tensors of block l
 * (ts_model_param_unit). A unit is one or more intervals of the flat
 * buffers (Nexus registers each block's level projections after every
 * backbone tensor, so its blocks are two intervals each).
 *
 * And the memory such a strategy keeps its full-length buffers in: reserved
 * address space whose pages are committed when first written and given back
 * by ts_reals_discard, so a leaf bound once over the buffer keeps its address
 * (tape nodes and views that captured it stay valid) while the unit behind
 * it is released and gathered again. */
#ifndef TS_PARAM_UNITS_H
#define TS_PARAM_UNITS_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine/real.h"

typedef struct ts_model ts_model;

typedef struct ts_param_interval {
    long first, count; /* elements of the flat buffers */
} ts_param_interval;

typedef struct ts_param_unit {
    ts_param_interval *intervals;
    int n_intervals;
    long elems;            /* the sum of the intervals' counts */
    long owned_elems;      /* of them, inside this rank's owned range */
    bool resident;         /* zero3: its parameters occupy memory (gathered, maybe stale since) */
    bool present;          /* zero3: its parameters gathered and current */
    bool gathering;        /* zero3: an MPI_Iallgatherv into it is in flight */
    bool grads_live;       /* its part of the local gradient buffer may be non-zero */
    MPI_Request *requests; /* one per interval */
    int *counts;           /* per interval, nranks counts then nranks displacements */
} ts_param_unit;

typedef struct ts_param_units {
    ts_param_unit *units;
    int count; /* units[0] and one per block */
} ts_param_units;

/* The units of model's table, each interval's per-rank counts sized for
 * nranks. False with a message if out of memory. */
bool ts_param_units_build(ts_param_units *u, const ts_model *model, int nranks, char *err,
                          size_t errlen);
void ts_param_units_free(ts_param_units *u);

/* n zeroed elements of reserved memory; NULL if the address space is not
 * available. */
ts_real *ts_reals_reserve(long n);
void ts_reals_unreserve(ts_real *buffer, long n);
/* Zeroes buffer[first, first + count) and gives the pages wholly inside it
 * back to the system lazily (MADV_FREE, param_units.c): it reads as zeros
 * until written again, and that write takes no page fault unless the
 * kernel needed the memory meanwhile (under shadow paging it still traps
 * once per page: bench/bench_pages.c). */
void ts_reals_discard(ts_real *buffer, long first, long count);

#endif
