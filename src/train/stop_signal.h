/* Graceful stops: SIGTERM (what Slurm sends at a time limit, and what
 * mpirun forwards first when it is terminated) and SIGUSR1 (what
 * `#SBATCH --signal=B:USR1@SECONDS` asks for, and what mpirun forwards as it
 * is) only raise a flag. The trainer reads it once per step, the ranks agree
 * on it in the step's own reduction, and every rank then finishes the step,
 * writes a checkpoint and exits with TS_TRAIN_EXIT_INTERRUPTED
 * (train/trainer.h; docs/slurm.md).
 *
 * The flag is process-wide state, the one place this code base has any: a
 * signal handler receives no context pointer, so it can only reach a static
 * `volatile sig_atomic_t`. Everything else reads it through these calls. */
#ifndef TS_STOP_SIGNAL_H
#define TS_STOP_SIGNAL_H

#include <signal.h>
#include <stdbool.h>

#define TS_STOP_SIGNAL_COUNT 2 /* SIGTERM, SIGUSR1 */

typedef struct ts_stop_signals {
    struct sigaction previous[TS_STOP_SIGNAL_COUNT];
    bool installed[TS_STOP_SIGNAL_COUNT];
} ts_stop_signals;

/* Clears the flag and installs the handler for each stop signal, keeping the
 * previous dispositions in `saved`. False (with errno) if sigaction fails;
 * what was installed is then restored. */
bool ts_stop_signals_install(ts_stop_signals *saved);
/* Puts the previous dispositions back. */
void ts_stop_signals_restore(ts_stop_signals *saved);
/* The stop signal received since install (the last one, if several), 0 if none. */
int ts_stop_signal_received(void);
/* The stop signals by index 0 .. TS_STOP_SIGNAL_COUNT - 1, and their names
 * ("SIGTERM", "SIGUSR1", else "another signal"). */
int ts_stop_signal_number(int index);
const char *ts_stop_signal_name(int signal_number);

#endif
