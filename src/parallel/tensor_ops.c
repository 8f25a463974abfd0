#include "parallel/tensor_ops.h"

#include <limits.h>
#include <string.h>

#include "parallel/data_parallel.h"
#include "parallel/tensor_activation_ops.h"

/* PBLAS and the ScaLAPACK tools (Fortran calling convention; no header ships
 * with Debian's libscalapack-openmpi). */
void psgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
             const float *alpha, const float *a, const int *ia, const int *ja, const int *desca,
             const float *b, const int *ib, const int *jb, const int *descb, const float *beta,
             float *c, const int *ic, const int *jc, const int *descc);
void pdgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
             const double *alpha, const double *a, const int *ia, const int *ja, const int *desca,
             const double *b, const int *ib, const int *jb, const int *descb, const double *beta,
             double *c, const int *ic, const int *jc, const int *descc);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
               const int *irsrc, const int *icsrc, const int *context, const int *lld, int *info);

#ifdef TS_DOUBLE
#define ts_pgemm pdgemm_
#else
#define ts_pgemm psgemm_
#endif

/* ScaLAPACK matrices are column-major: the row-major array [rows, cols] we
 * hold is, read column-major, the matrix of cols rows and rows columns. This
 * rank's blocks of such a matrix: */
typedef struct local_blocks {
    int rows, cols; /* of the column-major global matrix */
    int local_rows, local_cols, lld;
    ts_real *data; /* column-major, lld x local_cols */
    int desc[9];
} local_blocks;

/* The descriptor of the column-major rows x cols matrix on g; with
 * allocate, also room for this rank's blocks (else the caller points data
 * at blocks it holds). */
static void describe(ts_ctx *ctx, const ts_tensor_grid *g, int rows, int cols, local_blocks *l,
                     bool allocate) {
    l->rows = rows;
    l->cols = cols;
    l->local_rows = ts_tensor_local_extent(rows, g->block, g->my_row, g->rows);
    l->local_cols = ts_tensor_local_extent(cols, g->block, g->my_col, g->cols);
    l->lld = l->local_rows > 1 ? l->local_rows : 1;
    long n = (long)l->lld * l->local_cols;
    l->data = allocate ? ts_alloc(ctx, (size_t)(n > 1 ? n : 1) * sizeof(ts_real)) : NULL;
    int zero = 0, info = 0;
    descinit_(l->desc, &rows, &cols, &g->block, &g->block, &zero, &zero, &g->blacs_context, &l->lld,
              &info);
    if (info != 0)
        ts_fail(ctx, "tensor_matmul", "descinit_ rejected a %d x %d matrix (info %d)", rows, cols,
                info);
}

/* Process (row, col)'s blocks of l's matrix from (to_local) or into the
 * whole one (the row-major [cols, rows] array); l's lld is its local rows
 * whenever it has any, so its column-major data is the row-major local
 * array of core/block_cyclic.h. */
static void copy_blocks_of(const ts_tensor_grid *g, int row, int col, const local_blocks *l,
                           ts_real *local, ts_real *global, bool to_local) {
    ts_block_cyclic d = ts_tensor_grid_layout(g);
    ts_block_cyclic_copy(&d, row, col, l->cols, l->rows, local, global, sizeof(ts_real), to_local);
}

/* This rank's blocks of l from (to_local) or into the whole matrix. */
static void copy_blocks(const ts_tensor_grid *g, local_blocks *l, ts_real *global, bool to_local) {
    copy_blocks_of(g, g->my_row, g->my_col, l, l->data, global, to_local);
}

void ts_tensor_allgather_blocks(ts_ctx *ctx, ts_tensor_grid *g, const ts_real *local, int rows,
                                int cols, ts_real *whole) {
    int n = g->rows * g->cols;
    if ((long)rows * cols > INT_MAX)
        ts_fail(ctx, "tensor_gather", "a %d x %d matrix exceeds one all-gather's int count", rows,
                cols);
    ts_block_cyclic d = ts_tensor_grid_layout(g);
    int *counts = ts_alloc(ctx, 2 * (size_t)n * sizeof *counts), *displs = counts + n;
    int total = 0;
    for (int r = 0; r < n; r++) {
        int extent[2];
        ts_block_cyclic_local_shape(&d, r / g->cols, r % g->cols, rows, cols, extent);
        counts[r] = extent[0] * extent[1];
        displs[r] = total;
        total += counts[r];
    }
    ts_real *all = ts_alloc(ctx, (size_t)(total > 1 ? total : 1) * sizeof *all);
    if (MPI_Allgatherv(local, counts[g->group_rank], TS_MPI_REAL, all, counts, displs, TS_MPI_REAL,
                       g->group) != MPI_SUCCESS)
        ts_fail(ctx, "tensor_gather", "gathering a %d x %d matrix over the %dx%d grid failed", rows,
                cols, g->rows, g->cols);
    for (int r = 0; r < n; r++)
        ts_block_cyclic_copy(&d, r / g->cols, r % g->cols, rows, cols, all + displs[r], whole,
                             sizeof(ts_real), false);
    /* what a ring all-gather sends per rank */
    g->bytes_sent += (double)total * sizeof(ts_real) * (n - 1) / n;
}

/* Every rank's blocks of the result to every rank of the group (one
 * all-gather), assembled into the whole matrix `whole` on each. Our blocks
 * are contiguous (lld = local rows whenever there are any). */
static void gather_result(ts_ctx *ctx, ts_tensor_grid *g, const local_blocks *l, ts_real *whole) {
    ts_tensor_allgather_blocks(ctx, g, l->data, l->cols, l->rows, whole);
}

/* What a distributed GEMM's backward rule needs besides its inputs. */
typedef struct dist_node {
    ts_tensor_grid *grid;
    ts_tensor_dist da, db, dout;
} dist_node;

/* Each gradient in its input's layout, from the output gradient in the
 * output's: blocks stay blocks (no all-gather of a weight gradient), and the
 * rules are again distributed GEMMs, so higher orders stay distributed. */
static void tensor_matmul_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                   ts_tensor **gin) {
    const dist_node *d = node->user;
    ts_tensor *a = node->in[0], *b = node->in[1];
    bool ta = node->iattr[0], tb = node->iattr[1];
    if (needs[0])
        gin[0] =
            !ta ? ts_tensor_matmul_dist(ctx, d->grid, g, d->dout, b, d->db, false, !tb,
                                        d->da.blocks)
                : ts_tensor_matmul_dist(ctx, d->grid, b, d->db, g, d->dout, tb, true, d->da.blocks);
    if (needs[1])
        gin[1] =
            !tb ? ts_tensor_matmul_dist(ctx, d->grid, a, d->da, g, d->dout, !ta, false,
                                        d->db.blocks)
                : ts_tensor_matmul_dist(ctx, d->grid, g, d->dout, a, d->da, true, ta, d->db.blocks);
}

ts_tensor_dist ts_tensor_whole(const ts_tensor *t) {
    return (ts_tensor_dist){
        .blocks = false, .rows = t->shape[0], .cols = t->ndim > 1 ? t->shape[1] : 0};
}

/* The operand t of global layout d as p?gemm's local blocks: a whole one's
 * blocks copied out, a blocked one's own data. */
static void operand(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *t, ts_tensor_dist d,
                    local_blocks *l) {
    describe(ctx, grid, d.cols, d.rows, l, !d.blocks);
    if (d.blocks)
        l->data = t->data;
    else
        copy_blocks(grid, l, t->data, true);
}

/* The global shape of t under d, checking that a blocked t holds this
 * rank's blocks of it. */
static void global_shape(ts_ctx *ctx, const ts_tensor_grid *grid, const ts_tensor *t,
                         ts_tensor_dist *d) {
    char st[64];
    if (t->ndim != 2)
        ts_fail(ctx, "tensor_matmul", "operands must be 2-D, got %s",
                ts_shape_str(t, st, sizeof st));
    if (!d->blocks) {
        *d = ts_tensor_whole(t);
        return;
    }
    ts_block_cyclic layout = ts_tensor_grid_layout(grid);
    int local[2];
    ts_block_cyclic_local_shape(&layout, grid->my_row, grid->my_col, d->rows, d->cols, local);
    if (t->shape[0] != local[0] || t->shape[1] != local[1])
        ts_fail(ctx, "tensor_matmul",
                "%s is not this rank's blocks of a [%d, %d] matrix on the %dx%d grid "
                "(expected [%d, %d])",
                ts_shape_str(t, st, sizeof st), d->rows, d->cols, grid->rows, grid->cols, local[0],
                local[1]);
}

ts_tensor *ts_tensor_matmul_dist(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *a, ts_tensor_dist da,
                                 ts_tensor *b, ts_tensor_dist db, bool ta, bool tb,
                                 bool out_blocks) {
    global_shape(ctx, grid, a, &da);
    global_shape(ctx, grid, b, &db);
    int m = ta ? da.cols : da.rows, k = ta ? da.rows : da.cols;
    int kb = tb ? db.cols : db.rows, n = tb ? db.rows : db.cols;
    if (k != kb)
        ts_fail(ctx, "tensor_matmul", "inner dims differ: [%d, %d]%s @ [%d, %d]%s", da.rows,
                da.cols, ta ? "^T" : "", db.rows, db.cols, tb ? "^T" : "");
    ts_tensor_dist dout = {.blocks = out_blocks, .rows = m, .cols = n};
    ts_tensor *out;
    if (out_blocks) {
        ts_block_cyclic layout = ts_tensor_grid_layout(grid);
        int local[2];
        ts_block_cyclic_local_shape(&layout, grid->my_row, grid->my_col, m, n, local);
        out = ts_new(ctx, TS_SHAPE(local[0], local[1]));
    } else {
        out = ts_new(ctx, TS_SHAPE(m, n));
    }
    int group_size = grid->rows * grid->cols;
    ts_count_flops(ctx, 2.0 * m * n * k / group_size);
    if (!ctx->counting && (long)m * n > 0) {
        /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
         * and the column-major reading of a row-major B is B^T: so p?gemm
         * multiplies B's reading (transposed iff tb) by A's (iff ta). */
        local_blocks lb, la, lc;
        operand(ctx, grid, b, db, &lb);
        operand(ctx, grid, a, da, &la);
        describe(ctx, grid, n, m, &lc, !out_blocks);
        if (out_blocks) lc.data = out->data;
        int one = 1;
        ts_real alpha = 1, beta = 0;
        if (k > 0) /* else the product is the zeros it starts from */
            ts_pgemm(tb ? "T" : "N", ta ? "T" : "N", &n, &m, &k, &alpha, lb.data, &one, &one,
                     lb.desc, la.data, &one, &one, la.desc, &beta, lc.data, &one, &one, lc.desc);
        else
            memset(lc.data, 0, (size_t)lc.lld * lc.local_cols * sizeof *lc.data);
        /* (with out_blocks, p?gemm wrote this rank's blocks into out) */
        if (!out_blocks && group_size > 1)
            gather_result(ctx, grid, &lc, out->data);
        else if (!out_blocks)
            copy_blocks(grid, &lc, out->data, false);
    }
    ts_node *node =
        ts_record(ctx, "tensor_matmul", tensor_matmul_backward, out, 2, (ts_tensor *[]){a, b});
    if (node) {
        dist_node *d = ts_alloc(ctx, sizeof *d);
        *d = (dist_node){.grid = grid, .da = da, .db = db, .dout = dout};
        node->iattr[0] = ta;
        node->iattr[1] = tb;
        node->user = d;
    }
    return out;
}

ts_tensor *ts_tensor_matmul(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *a, ts_tensor *b, bool ta,
                            bool tb) {
    return ts_tensor_matmul_dist(ctx, grid, a, (ts_tensor_dist){0}, b, (ts_tensor_dist){0}, ta, tb,
                                 false);
}

/* How w is held: this rank's blocks of a [out, in] leaf of tp's model held
 * so, else whole. */
static ts_tensor_dist weight_layout(const ts_tensor_parallel *tp, const ts_tensor *w) {
    int i = tp->model ? ts_model_param_index(tp->model, w) : -1;
    if (tp->model && ts_model_param_blocked(tp->model, i)) {
        const ts_param_entry *e = &tp->model->layout->global.entries[i];
        return (ts_tensor_dist){.blocks = true, .rows = e->shape[0], .cols = e->shape[1]};
    }
    return w->ndim == 2 ? ts_tensor_whole(w) : (ts_tensor_dist){0};
}

ts_tensor *ts_tensor_linear(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w) {
    const ts_tensor_parallel *tp = user;
    char sx[64], sw[64];
    int in = x->shape[x->ndim - 1];
    ts_tensor_dist dw = weight_layout(tp, w);
    if (x->ndim < 2 || w->ndim != 2 || dw.cols != in)
        ts_fail(ctx, "tensor_linear", "x %s does not match the weight %s ([out, in])",
                ts_shape_str(x, sx, sizeof sx), ts_shape_str(w, sw, sizeof sw));
    ts_tensor *rows = ts_reshape(ctx, x, TS_SHAPE((int)(x->numel / in), in));
    ts_tensor *y = ts_tensor_matmul_dist(ctx, tp->grid, rows, ts_tensor_whole(rows), w, dw, false,
                                         true, false);
    int shape[TS_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = dw.rows;
    return ts_reshape(ctx, y, x->ndim, shape);
}

ts_tensor *ts_tensor_linear_blocks(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w) {
    const ts_tensor_parallel *tp = user;
    if (tp->whole_step) return ts_tensor_linear(user, ctx, x, w);
    char sw[64];
    ts_tensor_dist dw = weight_layout(tp, w);
    if (w->ndim != 2)
        ts_fail(ctx, "tensor_linear", "the weight %s is not [out, in]",
                ts_shape_str(w, sw, sizeof sw));
    ts_tensor_dist dx = {.blocks = true, .rows = tp->tokens, .cols = dw.cols};
    return ts_tensor_matmul_dist(ctx, tp->grid, x, dx, w, dw, false, true, true);
}

bool ts_tensor_parallel_attach(ts_model *model, ts_tensor_parallel *tp, ts_tensor_grid *grid,
                               char *err, size_t errlen) {
    *tp = (ts_tensor_parallel){.grid = grid, .model = model};
    if (!grid->enabled) return true;
    if (grid->distributed_activations) {
        if (!ts_tensor_activations_attach(model, tp, err, errlen)) return false;
        model->linear = (ts_linear_hook){.apply = ts_tensor_linear_blocks, .user = tp};
    } else {
        model->linear = (ts_linear_hook){.apply = ts_tensor_linear, .user = tp};
    }
    return true;
}
