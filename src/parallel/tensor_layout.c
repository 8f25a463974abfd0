#include "parallel/tensor_layout.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "parallel/data_parallel.h"

/* Elements gathered per all-gather at most (besides one tensor larger than
 * this on its own): bounds the receive buffer the gather holds at once. */
enum { GATHER_ROUND_ELEMS = 1 << 24 };

/* Elements of entry i rank r of the group holds. */
static long held_by(const ts_param_layout *l, int i, int r) {
    const ts_param_entry *e = &l->global.entries[i];
    int local[2];
    ts_block_cyclic_local_shape(&l->grid, r / l->grid.cols, r % l->grid.cols, e->shape[0],
                                e->shape[1], local);
    return (long)local[0] * local[1];
}

/* One all-gather of the blocked entries [first, last) into whole. */
static int gather_round(const ts_tensor_grid *grid, const ts_model *model, const ts_real *local,
                        ts_real *whole, int first, int last, int *counts, int *displs) {
    const ts_param_layout *l = model->layout;
    int n = l->grid.rows * l->grid.cols;
    long total = 0;
    for (int r = 0; r < n; r++) {
        long count = 0;
        for (int i = first; i < last; i++)
            if (l->blocked[i]) count += held_by(l, i, r);
        if (count > INT_MAX || total > INT_MAX) return MPI_ERR_COUNT;
        counts[r] = (int)count;
        displs[r] = (int)total;
        total += count;
    }
    if (total > INT_MAX) return MPI_ERR_COUNT;
    ts_real *all = malloc((size_t)(total > 0 ? total : 1) * sizeof *all);
    if (!all) return MPI_ERR_NO_MEM;
    /* ours, packed in table order at our place */
    ts_real *mine = all + displs[grid->group_rank];
    for (int i = first; i < last; i++)
        if (l->blocked[i]) {
            const ts_param_entry *e = &model->table.entries[i];
            memcpy(mine, local + e->offset, (size_t)e->numel * sizeof *mine);
            mine += e->numel;
        }
    int rc =
        MPI_Allgatherv(MPI_IN_PLACE, 0, TS_MPI_REAL, all, counts, displs, TS_MPI_REAL, grid->group);
    for (int r = 0; rc == MPI_SUCCESS && r < n; r++) {
        ts_real *theirs = all + displs[r];
        for (int i = first; i < last; i++)
            if (l->blocked[i]) {
                const ts_param_entry *e = &l->global.entries[i];
                ts_block_cyclic_copy(&l->grid, r / l->grid.cols, r % l->grid.cols, e->shape[0],
                                     e->shape[1], theirs, whole + e->offset, sizeof *theirs, false);
                theirs += held_by(l, i, r);
            }
    }
    free(all);
    return rc;
}

int ts_tensor_gather_flat(const ts_tensor_grid *grid, const ts_model *model, const ts_real *local,
                          ts_real *whole) {
    const ts_param_layout *l = model->layout;
    if (!l) {
        memcpy(whole, local, (size_t)model->table.total * sizeof *whole);
        return MPI_SUCCESS;
    }
    const ts_param_table *t = &model->table, *g = &l->global;
    for (int i = 0; i < t->count; i++)
        if (!l->blocked[i])
            memcpy(whole + g->entries[i].offset, local + t->entries[i].offset,
                   (size_t)t->entries[i].numel * sizeof *whole);
    int n = l->grid.rows * l->grid.cols;
    if (n != grid->rows * grid->cols) return MPI_ERR_COMM;
    int *counts = malloc(2 * (size_t)n * sizeof *counts);
    if (!counts) return MPI_ERR_NO_MEM;
    int rc = MPI_SUCCESS;
    /* rounds of consecutive entries up to GATHER_ROUND_ELEMS whole elements */
    for (int first = 0; rc == MPI_SUCCESS && first < t->count;) {
        int last = first;
        long elems = 0;
        while (last < t->count &&
               (last == first ||
                elems + (l->blocked[last] ? g->entries[last].numel : 0) <= GATHER_ROUND_ELEMS)) {
            if (l->blocked[last]) elems += g->entries[last].numel;
            last++;
        }
        if (elems > 0)
            rc = gather_round(grid, model, local, whole, first, last, counts, counts + n);
        first = last;
    }
    free(counts);
    return rc;
}

void ts_tensor_scatter_flat(const ts_model *model, const ts_real *whole, ts_real *local) {
    const ts_param_layout *l = model->layout;
    if (!l) {
        memcpy(local, whole, (size_t)model->table.total * sizeof *local);
        return;
    }
    const ts_param_table *t = &model->table, *g = &l->global;
    for (int i = 0; i < t->count; i++) {
        const ts_param_entry *e = &g->entries[i];
        ts_real *mine = local + t->entries[i].offset;
        if (l->blocked[i])
            ts_block_cyclic_copy(&l->grid, l->grid.my_row, l->grid.my_col, e->shape[0], e->shape[1],
                                 mine, (ts_real *)(whole + e->offset), sizeof *mine, true);
        else
            memcpy(mine, whole + e->offset, (size_t)e->numel * sizeof *mine);
    }
}
