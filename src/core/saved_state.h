/* What a checkpoint stores, described without any file format: a list of
 * roles (the parameters, optimiser moments, RNG streams, an architecture's
 * own state such as EBT's replay buffer), each one array with an element type
 * and a layout across the ranks of a data-parallel job. Models and the
 * trainer describe their state with these; io/checkpoint.h stores and loads
 * any list of them, so a new kind of state (sharded optimiser moments, say)
 * is one more role, not another argument. */
#ifndef TS_SAVED_STATE_H
#define TS_SAVED_STATE_H

#include <stdbool.h>

#include "core/param_table.h"

typedef enum ts_saved_type {
    TS_SAVED_REAL,   /* ts_real (float or double, as the build) */
    TS_SAVED_INT64,  /* int64_t */
    TS_SAVED_UINT64, /* uint64_t */
} ts_saved_type;

typedef enum ts_saved_layout {
    /* Identical on every rank (a replica): stored once, [count]. */
    TS_SAVED_REPLICATED,
    /* Each rank has its own count elements (e.g. a replay buffer); stored as
     * [ranks, count], row r from rank r. Loading requires the same number of
     * ranks as writing: rows cannot be redistributed without knowing what
     * they mean. */
    TS_SAVED_PER_RANK,
    /* One array of count elements split over the ranks: rank r holds
     * elements [shard_first, shard_first + shard_count) (the ranks' ranges
     * tile [0, count) in rank order), and all ranks write their ranges
     * collectively into one dataset [count]. A reader may split it
     * differently, e.g. on another number of ranks. */
    TS_SAVED_SHARDED,
} ts_saved_layout;

typedef struct ts_saved_role {
    /* Where it lives in the checkpoint: one or two names joined by '/', e.g.
     * "params", "optimizer/m", "extras/replay_logits". */
    const char *name;
    ts_saved_type type;
    ts_saved_layout layout;
    long count;                    /* elements: the whole array (replicated, sharded) or each
                                    * rank's row (per-rank); may be 0 */
    void *data;                    /* this rank's elements (count, or shard_count when sharded):
                                    * written from, or filled when read */
    const char *units;             /* optional, NULL for none */
    const char *description;       /* optional, NULL for none */
    long shard_first, shard_count; /* TS_SAVED_SHARDED: this rank's range */
    /* Optional: a table of named tensors covering the count elements
     * (replicated real data only). The role is then stored tensor by tensor,
     * one dataset per table entry, and loading checks names, shapes and
     * offsets against the table. */
    const ts_param_table *tensors;
} ts_saved_role;

/* The roles of training state every architecture has, under fixed names. */
#define TS_SAVED_PARAMS_NAME "params"
#define TS_SAVED_ADAM_M_NAME "optimizer/m"
#define TS_SAVED_ADAM_V_NAME "optimizer/v"

/* The model parameters, stored tensor by tensor. */
static inline ts_saved_role ts_saved_params(const ts_param_table *table, void *params) {
    return (ts_saved_role){.name = TS_SAVED_PARAMS_NAME,
                           .type = TS_SAVED_REAL,
                           .layout = TS_SAVED_REPLICATED,
                           .count = table->total,
                           .data = params,
                           .units = "dimensionless",
                           .tensors = table};
}

/* An optimiser moment over the flat parameter buffer, one replica per rank. */
static inline ts_saved_role ts_saved_moment(const char *name, const ts_param_table *table,
                                            void *moment, const char *units,
                                            const char *description) {
    return (ts_saved_role){.name = name,
                           .type = TS_SAVED_REAL,
                           .layout = TS_SAVED_REPLICATED,
                           .count = table->total,
                           .data = moment,
                           .units = units,
                           .description = description};
}

#endif
