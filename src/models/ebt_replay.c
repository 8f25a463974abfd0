#include <stdlib.h>
#include <string.h>

#include "models/ebt_internal.h"

bool ebt_replay_init(ebt_replay *r, int capacity, int seq, int vocab) {
    *r = (ebt_replay){.capacity = capacity, .seq = seq, .vocab = vocab};
    if (capacity == 0) return true;
    r->tokens = calloc((size_t)capacity * (size_t)(seq + 1), sizeof *r->tokens);
    r->logits = calloc((size_t)capacity * (size_t)seq * (size_t)vocab, sizeof *r->logits);
    if (r->tokens && r->logits) return true;
    ebt_replay_free(r);
    return false;
}

void ebt_replay_init_counting(ebt_replay *r, int capacity, int seq, int vocab) {
    *r = (ebt_replay){.capacity = capacity, .seq = seq, .vocab = vocab, .state = {capacity, 0}};
}

void ebt_replay_free(ebt_replay *r) {
    free(r->tokens);
    free(r->logits);
    *r = (ebt_replay){0};
}

int ebt_replay_filled(const ebt_replay *r) {
    return (int)r->state[0];
}

void ebt_replay_add(ebt_replay *r, const int32_t *tokens, const ts_real *logits) {
    if (r->capacity == 0) return;
    long slot = (long)r->state[1];
    int64_t *dst = r->tokens + slot * (r->seq + 1);
    for (int i = 0; i <= r->seq; i++) dst[i] = tokens[i];
    long row = (long)r->seq * r->vocab;
    memcpy(r->logits + slot * row, logits, (size_t)row * sizeof *logits);
    r->state[1] = (slot + 1) % r->capacity;
    if (r->state[0] < r->capacity) r->state[0]++;
}

void ebt_replay_sample(const ebt_replay *r, int n, ts_rng *rng, int *slots) {
    /* Selection sampling (Knuth's algorithm S): n distinct slots, each subset
     * equally likely, without scratch memory. */
    int filled = ebt_replay_filled(r), chosen = 0;
    for (int i = 0; i < filled && chosen < n; i++)
        if (ts_rng_uniform(rng) * (filled - i) < n - chosen) slots[chosen++] = i;
}

int ebt_replay_extras(ebt_replay *r, ts_checkpoint_extra *extras, int max) {
    if (r->capacity == 0 || max < 3) return 0;
    extras[0] = (ts_checkpoint_extra){"replay_tokens",
                                      TS_CKPT_INT64,
                                      TS_CKPT_PER_RANK,
                                      (long)r->capacity * (r->seq + 1),
                                      r->tokens,
                                      "token id",
                                      "EBT replay buffer: sequences (seq + 1 tokens each)"};
    extras[1] = (ts_checkpoint_extra){"replay_logits",
                                      TS_CKPT_REAL,
                                      TS_CKPT_PER_RANK,
                                      (long)r->capacity * r->seq * r->vocab,
                                      r->logits,
                                      "logit",
                                      "EBT replay buffer: final predicted logits (seq x vocab)"};
    extras[2] = (ts_checkpoint_extra){"replay_state",
                                      TS_CKPT_INT64,
                                      TS_CKPT_PER_RANK,
                                      2,
                                      r->state,
                                      "1",
                                      "EBT replay buffer: entries filled, next slot"};
    return 3;
}
