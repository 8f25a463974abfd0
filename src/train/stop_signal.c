#include "train/stop_signal.h"

#include <stddef.h>

static const int stop_signals[TS_STOP_SIGNAL_COUNT] = {SIGTERM, SIGUSR1};

/* Written only by the handler (and cleared at install): see the header. */
static volatile sig_atomic_t received;

/* Async-signal-safe: one store, nothing else. */
static void on_stop_signal(int signal_number) {
    received = signal_number;
}

bool ts_stop_signals_install(ts_stop_signals *saved) {
    received = 0;
    struct sigaction action = {0};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    /* Restart interrupted system calls: a signal during a checkpoint write or
     * an MPI wait must not turn into an I/O error. */
    action.sa_flags = SA_RESTART;
    for (int i = 0; i < TS_STOP_SIGNAL_COUNT; i++) {
        saved->installed[i] = false;
        if (sigaction(stop_signals[i], &action, &saved->previous[i]) != 0) {
            ts_stop_signals_restore(saved);
            return false;
        }
        saved->installed[i] = true;
    }
    return true;
}

void ts_stop_signals_restore(ts_stop_signals *saved) {
    for (int i = 0; i < TS_STOP_SIGNAL_COUNT; i++)
        if (saved->installed[i]) {
            sigaction(stop_signals[i], &saved->previous[i], NULL);
            saved->installed[i] = false;
        }
}

int ts_stop_signal_received(void) {
    return received;
}

int ts_stop_signal_number(int index) {
    return index >= 0 && index < TS_STOP_SIGNAL_COUNT ? stop_signals[index] : 0;
}

const char *ts_stop_signal_name(int signal_number) {
    switch (signal_number) {
    case SIGTERM:
        return "SIGTERM";
    case SIGUSR1:
        return "SIGUSR1";
    default:
        return "another signal";
    }
}
