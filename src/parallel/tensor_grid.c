#include "parallel/tensor_grid.h"

#include <stdio.h>
#include <string.h>

/* The BLACS and ScaLAPACK tools entry points (no header ships with Debian's
 * libscalapack-openmpi; these are the C and Fortran interfaces it exports). */
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *context, const char *order, int rows, int cols);
void Cblacs_gridinfo(int context, int *rows, int *cols, int *my_row, int *my_col);
void Cblacs_gridexit(int context);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);

int ts_tensor_local_extent(int n, int nb, int iproc, int nprocs) {
    int source = 0;
    return numroc_(&n, &nb, &iproc, &source, &nprocs);
}

ts_block_cyclic ts_tensor_grid_layout(const ts_tensor_grid *g) {
    return (ts_block_cyclic){.block = g->block > 0 ? g->block : TS_TENSOR_BLOCK,
                             .rows = g->rows,
                             .cols = g->cols,
                             .my_row = g->my_row,
                             .my_col = g->my_col};
}

void ts_tensor_grid_disabled(ts_tensor_grid *g, MPI_Comm world) {
    memset(g, 0, sizeof *g);
    g->rows = g->cols = 1;
    g->group = g->same_row = g->same_col = MPI_COMM_NULL;
    g->data = world;
    g->blacs_context = -1;
}

bool ts_tensor_grid_init(ts_tensor_grid *g, MPI_Comm world, int rows, int cols, char *err,
                         size_t errlen) {
    ts_tensor_grid_disabled(g, world);
    g->data = MPI_COMM_NULL;
    int rank, nranks;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &nranks);
    long size = (long)rows * cols;
    if (rows < 1 || cols < 1 || nranks % size) {
        snprintf(err, errlen,
                 "parallel.tensor_grid %dx%d needs groups of %ld ranks, which do not divide the "
                 "%d ranks of this job",
                 rows, cols, size, nranks);
        return false;
    }
    g->rows = rows;
    g->cols = cols;
    g->block = TS_TENSOR_BLOCK;
    if (MPI_Comm_split(world, (int)(rank / size), rank, &g->group) != MPI_SUCCESS ||
        MPI_Comm_split(world, (int)(rank % size), rank, &g->data) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Comm_split for the %dx%d tensor-parallel groups failed", rows,
                 cols);
        ts_tensor_grid_free(g);
        return false;
    }
    g->data_owned = true;
    MPI_Comm_rank(g->group, &g->group_rank);
    if (MPI_Comm_split(g->group, g->group_rank / cols, g->group_rank, &g->same_row) !=
            MPI_SUCCESS ||
        MPI_Comm_split(g->group, g->group_rank % cols, g->group_rank, &g->same_col) !=
            MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Comm_split for the rows and columns of the %dx%d grid failed",
                 rows, cols);
        ts_tensor_grid_free(g);
        return false;
    }
    g->blacs_handle = Csys2blacs_handle(g->group);
    g->blacs_context = g->blacs_handle;
    Cblacs_gridinit(&g->blacs_context, "Row", rows, cols);
    int grid_rows = 0, grid_cols = 0;
    Cblacs_gridinfo(g->blacs_context, &grid_rows, &grid_cols, &g->my_row, &g->my_col);
    if (grid_rows != rows || grid_cols != cols || g->my_row != g->group_rank / cols ||
        g->my_col != g->group_rank % cols) {
        snprintf(err, errlen,
                 "BLACS built a %dx%d grid with this rank at (%d, %d) instead of %dx%d at (%d, %d)",
                 grid_rows, grid_cols, g->my_row, g->my_col, rows, cols, g->group_rank / cols,
                 g->group_rank % cols);
        ts_tensor_grid_free(g);
        return false;
    }
    g->enabled = true;
    return true;
}

void ts_tensor_grid_free(ts_tensor_grid *g) {
    if (g->blacs_context >= 0 && g->group != MPI_COMM_NULL) {
        Cblacs_gridexit(g->blacs_context);
        Cfree_blacs_system_handle(g->blacs_handle);
    }
    if (g->same_row != MPI_COMM_NULL) MPI_Comm_free(&g->same_row);
    if (g->same_col != MPI_COMM_NULL) MPI_Comm_free(&g->same_col);
    if (g->group != MPI_COMM_NULL) MPI_Comm_free(&g->group);
    if (g->data_owned && g->data != MPI_COMM_NULL) MPI_Comm_free(&g->data);
    g->blacs_context = -1;
    g->enabled = false;
}

bool ts_tensor_grid_from_config(ts_tensor_grid *g, MPI_Comm world, const ts_parallel_config *c,
                                char *err, size_t errlen) {
    int rows, cols;
    ts_tensor_grid_disabled(g, world);
    if (!ts_parallel_tensor_grid(c, &rows, &cols)) return true;
    /* Any strategy runs across the groups: it gets grid.data, the ranks at
     * one grid position of every group, which share one local layout, and
     * shards (zero1/2/3) each position's own buffers over them. */
    if (!ts_tensor_grid_init(g, world, rows, cols, err, errlen)) return false;
    g->distributed_activations = !strcmp(c->tensor_activations, "distributed");
    if (c->tensor_block > 0) g->block = c->tensor_block;
    return true;
}
