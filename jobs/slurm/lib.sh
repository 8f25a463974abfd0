# Sourced by the job scripts in jobs/slurm/ (docs/slurm.md, "Time limits,
# signals and requeue"). Bash, sourced from the repository root.
#
#   ts_train_step COMMAND...   runs COMMAND (srun or mpirun with the trainer)
#       in the background and waits for it. SIGUSR1 or SIGTERM to this batch
#       shell (`#SBATCH --signal=B:USR1@SECONDS`, `scancel --signal=USR1
#       --batch`, the time limit's SIGTERM) is passed on to the launcher as
#       SIGUSR1, which srun and mpirun both forward to every rank: the ranks
#       finish their step, write a checkpoint and exit with 75. (SIGUSR1, not
#       SIGTERM: mpirun answers SIGTERM by killing its ranks 1 s later.)
#       Exit status 75 then becomes `scontrol requeue` of this job, which
#       runs the same script again with `--resume`. Returns COMMAND's status.

ts_exit_interrupted=75 # TS_TRAIN_EXIT_INTERRUPTED, src/train/trainer.h

# Open MPI's shared-memory transport names its segments after a job id hashed
# from the PMIx namespace; two array tasks on one node can hash alike and then
# read each other's messages (seen here: segmentation faults in MPI_Bcast with
# two campaign tasks at once). A backing directory per Slurm job keeps them apart.
if [ -n "${SLURM_JOB_ID:-}" ] && [ -z "${OMPI_MCA_btl_vader_backing_directory:-}" ]; then
    export OMPI_MCA_btl_vader_backing_directory="${TMPDIR:-/tmp}/thinkscale-shm-$SLURM_JOB_ID"
    mkdir -p "$OMPI_MCA_btl_vader_backing_directory"
fi

ts_train_step() {
    local pid status
    "$@" &
    pid=$!
    # shellcheck disable=SC2064 # the pid is fixed now
    trap "echo \"thinkscale job: signal received: asking the ranks to checkpoint and stop\"; kill -USR1 $pid 2>/dev/null" USR1 TERM
    while :; do
        status=0
        wait "$pid" || status=$?
        # A trapped signal ends `wait` early (status > 128); the step runs on.
        kill -0 "$pid" 2>/dev/null || break
    done
    status=0
    wait "$pid" || status=$? # the step's own status (bash keeps it)
    trap - USR1 TERM
    if [ "$status" = "$ts_exit_interrupted" ]; then
        echo "thinkscale job: the run stopped with a checkpoint (exit $status): requeueing job ${SLURM_JOB_ID:-?}"
        if [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID"; then
            return 0 # the requeued job resumes; this start ends here
        fi
        echo "thinkscale job: scontrol requeue failed: resubmit with --resume to continue" >&2
    fi
    return "$status"
}
