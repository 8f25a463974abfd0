/* RoPE's cos/sin table and the rotation of rows by it: the rope op
 * (op_nn.c) and the attention that applies RoPE to the heads it reads
 * (op_attention.c) rotate by the same table, so by the same values. */
#ifndef TS_ROPE_TABLE_H
#define TS_ROPE_TABLE_H

#include "engine/context.h"

typedef struct ts_rope_table {
    const ts_real *cos, *sin; /* [T, half]: row t rotates position positions[t] */
    int half;                 /* dh / 2 */
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
