/* Shared by the EBT's own files (ebt.c, ebt_energy.c, ebt_replay.c). */
#ifndef TS_EBT_INTERNAL_H
#define TS_EBT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "models/ebt.h"

/* The replay buffer of one rank (../shared/specs/ebt.md: 192 entries of
 * (sequence, final logits), a share of every batch restarted from them). A
 * ring: entry i is overwritten once `capacity` newer ones were added. The
 * arrays are exactly what the checkpoint stores (TS_CKPT_PER_RANK). */
typedef struct ebt_replay {
    int capacity;
    int seq; /* predictions per entry (the training context) */
    int vocab;
    int64_t *tokens;  /* capacity x (seq + 1) */
    ts_real *logits;  /* capacity x seq x vocab */
    int64_t state[2]; /* entries filled, next slot to write */
} ebt_replay;

bool ebt_replay_init(ebt_replay *replay, int capacity, int seq, int vocab);
/* A buffer for counting a step (ts_model_create_counting): no arrays, and
 * full, so every step draws as many replayed rows as in the steady state. */
void ebt_replay_init_counting(ebt_replay *replay, int capacity, int seq, int vocab);
void ebt_replay_free(ebt_replay *replay);
int ebt_replay_filled(const ebt_replay *replay);
/* Stores one sequence (seq + 1 tokens) and its final logits (seq x vocab). */
void ebt_replay_add(ebt_replay *replay, const int32_t *tokens, const ts_real *logits);
/* Draws n distinct entries (n <= filled) into slots. */
void ebt_replay_sample(const ebt_replay *replay, int n, ts_rng *rng, int *slots);
/* The checkpoint descriptors of the buffer; returns how many (3). */
int ebt_replay_extras(ebt_replay *replay, ts_checkpoint_extra *extras, int max);

/* model->arch of an EBT. */
typedef struct ebt_state {
    ebt_replay replay;      /* capacity 0 when off */
    ts_energy_trace *trace; /* evaluation energies requested by eval --energies */
} ebt_state;

#endif
