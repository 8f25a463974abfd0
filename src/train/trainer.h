/* `thinkscale train`: SPMD data-parallel training of any ts_model from a
 * resolved configuration, with evaluation, metrics and checkpoints. */
#ifndef TS_TRAINER_H
#define TS_TRAINER_H

#include <mpi.h>
#include <stdbool.h>

#include "core/config.h"

/* Exit status of an invocation stopped by SIGTERM or SIGUSR1 (train/stop_signal.h): every rank
 * finished its step and the checkpoint of that step is complete; `--resume` continues. 75 is
 * EX_TEMPFAIL of sysexits.h ("try again later"), apart from the error statuses (1 error, 2 abort,
 * 3 non-finite loss); job scripts turn it into `scontrol requeue` (docs/slurm.md). */
#define TS_TRAIN_EXIT_INTERRUPTED 75

/* Collective over comm; returns the process exit status (0 on success, 0 also when train.stop_at
 * ended the invocation, TS_TRAIN_EXIT_INTERRUPTED after a stop signal). */
int ts_train(MPI_Comm comm, const ts_run_config *config, bool resume);
/* As ts_train; a non-NULL checkpoint resumes from that file (--resume-from)
 * instead of the newest complete checkpoint of run.dir that verifies. */
int ts_train_resume_from(MPI_Comm comm, const ts_run_config *config, bool resume,
                         const char *checkpoint);

#endif
