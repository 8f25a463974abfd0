#include "core/block_cyclic.h"

#include <string.h>

int ts_block_cyclic_extent(int n, int nb, int iproc, int nprocs) {
    if (n <= 0 || nb <= 0 || nprocs <= 0) return 0;
    int blocks = n / nb;               /* whole blocks */
    int extent = blocks / nprocs * nb; /* every process's full rounds */
    int extra = blocks % nprocs;       /* processes with one more whole block */
    if (iproc < extra)
        extent += nb; /* one more whole block */
    else if (iproc == extra)
        extent += n % nb; /* the last, partial block */
    return extent;
}

bool ts_block_cyclic_fits(const ts_block_cyclic *d, int out, int in) {
    return (long)out > (long)d->block * (d->cols - 1) && (long)in > (long)d->block * (d->rows - 1);
}

void ts_block_cyclic_local_shape(const ts_block_cyclic *d, int row, int col, int out, int in,
                                 int local[2]) {
    local[0] = ts_block_cyclic_extent(out, d->block, col, d->cols);
    local[1] = ts_block_cyclic_extent(in, d->block, row, d->rows);
}

long ts_block_cyclic_global(long i, int nb, int iproc, int nprocs) {
    return (i / nb * nprocs + iproc) * nb + i % nb;
}

void ts_block_cyclic_copy(const ts_block_cyclic *d, int row, int col, int out, int in, void *local,
                          void *whole, size_t elem, bool to_local) {
    int local_shape[2];
    ts_block_cyclic_local_shape(d, row, col, out, in, local_shape);
    int lo = local_shape[0], li = local_shape[1], nb = d->block;
    char *mine_base = local, *whole_base = whole;
    for (long r = 0; r < lo; r++) {
        long gr = ts_block_cyclic_global(r, nb, col, d->cols);
        for (long c = 0; c < li; c += nb) {
            long gc = ts_block_cyclic_global(c, nb, row, d->rows);
            long len = li - c < nb ? li - c : nb;
            char *mine = mine_base + (size_t)(r * li + c) * elem;
            char *all = whole_base + (size_t)(gr * in + gc) * elem;
            if (to_local)
                memcpy(mine, all, (size_t)len * elem);
            else
                memcpy(all, mine, (size_t)len * elem);
        }
    }
}
