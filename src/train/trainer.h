/* `thinkscale train`: SPMD data-parallel training of any ts_model from a
 * resolved configuration, with evaluation, metrics and checkpoints. */
#ifndef TS_TRAINER_H
#define TS_TRAINER_H

#include <mpi.h>
#include <stdbool.h>

#include "core/config.h"

/* Collective over comm; returns the process exit status (0 on success). */
int ts_train(MPI_Comm comm, const ts_run_config *config, bool resume);
/* As ts_train; a non-NULL checkpoint resumes from that file (--resume-from)
 * instead of the newest complete checkpoint of run.dir that verifies. */
int ts_train_resume_from(MPI_Comm comm, const ts_run_config *config, bool resume,
                         const char *checkpoint);

#endif
