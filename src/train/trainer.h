/* `thinkscale train`: SPMD data-parallel training of any ts_model from a
 * resolved configuration, with evaluation, metrics and checkpoints. */
#ifndef TS_TRAINER_H
#define TS_TRAINER_H

#include <mpi.h>
#include <stdbool.h>

#include "core/config.h"

/* Collective over comm; returns the process exit status (0 on success). */
int ts_train(MPI_Comm comm, const ts_run_config *config, bool resume);

#endif
