/* RoPE's cos/sin table and the rotation of rows by it: the rope op
 * (op_nn.c) and the attention that applies RoPE to the heads it reads
 * (op_attention.c) rotate by the same table, so by the same values. */
#ifndef TS_ROPE_TABLE_H
#define TS_ROPE_TABLE_H

#include "engine/context.h"

/* Row t rotates position positions[t]. Both tables are [T, dh], one entry
 * per element of a head, so a row rotates as whole vectors: element j of
 * the result is x[j] cos[j] + x[j ^ 1] sin[j], with each pair's cos twice
 * and its sin negated for the pair's first element. Those are the float
 * operations of x' = x c - y s, y' = x s + y c (an added negated product is
 * the subtraction; the two products of a sum commute), so the values are
 * those of the pairwise loop this replaced (eighth round,
 * docs/performance.md). */
typedef struct ts_rope_table {
    const ts_real *cos, *sin;
    int dh;
} ts_rope_table;

/* The table of positions[0..t_len) for heads of dh (even), sin signed by
 * direction (+1 rotates, -1 rotates back), in ctx's arena. */
ts_rope_table ts_rope_table_make(ts_ctx *ctx, const int32_t *positions, int t_len, int dh,
                                 double theta, int direction);

/* Pairs (2i, 2i + 1) of rows 0..rows of x (dh wide, ld_x apart) rotated by
 * the table's rows 0..rows into out (ld_out apart). */
void ts_rope_rotate_rows(const ts_rope_table *table, const ts_real *x, long ld_x, ts_real *out,
                         long ld_out, int rows);

#endif
