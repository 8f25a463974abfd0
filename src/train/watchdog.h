/* A watchdog per rank: a thread that ends the job when the activity the
 * rank is in (a training step, an evaluation, a checkpoint write) has made
 * no progress for longer than a limit, so a job whose rank stopped, died
 * or hangs in a collective or on a file system ends in minutes with a
 * message naming what it was waiting in, instead of spinning until its time
 * limit (docs/reliability.md).
 *
 * The trainer marks where it is (ts_watchdog_enter); the thread only reads
 * the clock and that mark, never calls MPI while the rank runs, and when
 * the limit is passed prints the message and calls MPI_Abort with
 * TS_EXIT_STALLED (from its own thread: the job is being ended anyway).
 *
 * The limit (train.watchdog_seconds): a fixed number of seconds, or by
 * default TS_WATCHDOG_FACTOR times the longest activity of the same kind
 * completed so far (before any: of any kind), never below
 * TS_WATCHDOG_FLOOR_SECONDS; negative turns the watchdog off. */
#ifndef TS_WATCHDOG_H
#define TS_WATCHDOG_H

#include <mpi.h>
#include <pthread.h>
#include <stdbool.h>

/* The exit status of a job the watchdog ended. */
#define TS_EXIT_STALLED 5
#define TS_WATCHDOG_FACTOR 20.0
#define TS_WATCHDOG_FLOOR_SECONDS 300.0

typedef enum ts_watch_kind {
    TS_WATCH_STEP,
    TS_WATCH_EVAL,
    TS_WATCH_CHECKPOINT,
    TS_WATCH_KINDS
} ts_watch_kind;

typedef struct ts_watchdog {
    MPI_Comm comm;
    int rank;
    double configured; /* train.watchdog_seconds: > 0 fixed, 0 automatic, < 0 off */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool running, stopping;
    /* The activity in progress (under lock). */
    bool active;
    ts_watch_kind kind;
    long step;
    const char *what;               /* a static description, e.g. "the gradient reduction" */
    double since;                   /* monotonic seconds when it began */
    double longest[TS_WATCH_KINDS]; /* longest completed activity of each kind, seconds */
} ts_watchdog;

/* Starts the thread (not when configured < 0). False if it cannot be
 * started; the run then continues unwatched. */
bool ts_watchdog_start(ts_watchdog *w, MPI_Comm comm, int rank, double configured);
/* Ends the activity in progress (recording its duration) and begins one of
 * `kind` at `step`; `what` (a string literal) says what it waits in. */
void ts_watchdog_enter(ts_watchdog *w, ts_watch_kind kind, long step, const char *what);
/* Within the current activity: now waiting in `what` (the clock goes on). */
void ts_watchdog_note(ts_watchdog *w, const char *what);
/* Ends the activity in progress: nothing is watched until the next enter. */
void ts_watchdog_idle(ts_watchdog *w);
void ts_watchdog_stop(ts_watchdog *w);
/* The limit for an activity of `kind`, given train.watchdog_seconds and
 * the longest completed activity of each kind (0: none yet). */
double ts_watchdog_limit_for(double configured, const double longest[TS_WATCH_KINDS],
                             ts_watch_kind kind);
/* The limit for an activity of `kind` now, in seconds (<= 0: unwatched). */
double ts_watchdog_limit(const ts_watchdog *w, ts_watch_kind kind);
const char *ts_watch_kind_name(ts_watch_kind kind);

#endif
