/* The model a checkpoint holds, for evaluation and sampling: the run
 * configuration stored in it, then the parameters (no optimiser state). */
#ifndef TS_CHECKPOINT_MODEL_H
#define TS_CHECKPOINT_MODEL_H

#include <mpi.h>
#include <stddef.h>

#include "core/config.h"
#include "models/model.h"

/* Collective. Fills *config with the checkpoint's configuration and *step with
 * its step; NULL with a message on a missing, corrupt or incompatible file. */
ts_model *ts_model_from_checkpoint(MPI_Comm comm, const char *path, ts_run_config *config,
                                   long *step, char *err, size_t errlen);

#endif
