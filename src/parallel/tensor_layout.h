/* Moving a distributed model's flat arrays (parameters, optimiser moments:
 * anything laid out by model->table) between this rank's layout, where the
 * blocked linear weights are only this rank's blocks (models/model.h,
 * ts_model_distribute), and the whole layout of the global table, which is
 * what checkpoints store: a checkpoint never knows there was a grid. */
#ifndef TS_TENSOR_LAYOUT_H
#define TS_TENSOR_LAYOUT_H

#include "engine/engine.h"
#include "models/model.h"
#include "parallel/tensor_grid.h"

/* local (model->table.total elements) -> whole (the global table's total),
 * on every rank of the group: every rank's blocks are all-gathered over
 * grid->group and put in place, the whole tensors copied. Without a layout,
 * a copy. Collective over the group; MPI_SUCCESS or the MPI error (a part
 * too large for int counts is reported as MPI_ERR_COUNT). */
int ts_tensor_gather_flat(const ts_tensor_grid *grid, const ts_model *model, const ts_real *local,
                          ts_real *whole);

/* whole -> this rank's local layout (pure copies, no communication). */
void ts_tensor_scatter_flat(const ts_model *model, const ts_real *whole, ts_real *local);

#endif
