#include "train/watchdog.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"

const char *ts_watch_kind_name(ts_watch_kind kind) {
    switch (kind) {
    case TS_WATCH_STEP:
        return "training step";
    case TS_WATCH_EVAL:
        return "evaluation";
    case TS_WATCH_CHECKPOINT:
        return "checkpoint";
    case TS_WATCH_KINDS:
        break;
    }
    return "activity";
}

double ts_watchdog_limit_for(double configured, const double longest[TS_WATCH_KINDS],
                             ts_watch_kind kind) {
    if (configured != 0) return configured;
    double basis = longest[kind];
    if (basis <= 0) /* none of this kind yet: the longest of any kind */
        for (int k = 0; k < TS_WATCH_KINDS; k++)
            if (longest[k] > basis) basis = longest[k];
    double derived = TS_WATCHDOG_FACTOR * basis;
    return derived > TS_WATCHDOG_FLOOR_SECONDS ? derived : TS_WATCHDOG_FLOOR_SECONDS;
}

/* Under lock. */
static double limit_locked(const ts_watchdog *w, ts_watch_kind kind) {
    return ts_watchdog_limit_for(w->configured, w->longest, kind);
}

double ts_watchdog_limit(const ts_watchdog *w, ts_watch_kind kind) {
    pthread_mutex_t *lock = (pthread_mutex_t *)&w->lock;
    if (w->running) pthread_mutex_lock(lock);
    double limit = limit_locked(w, kind);
    if (w->running) pthread_mutex_unlock(lock);
    return limit;
}

static void fire(ts_watchdog *w, double waited, double limit) {
    char how[160];
    if (w->configured > 0)
        snprintf(how, sizeof how, "train.watchdog_seconds");
    else
        snprintf(how, sizeof how,
                 "%.0f x the longest %s so far, at least %.0f s; set "
                 "train.watchdog_seconds to change it",
                 TS_WATCHDOG_FACTOR, ts_watch_kind_name(w->kind), TS_WATCHDOG_FLOOR_SECONDS);
    fprintf(stderr,
            "thinkscale: rank %d: error: watchdog: no progress for %.0f s in the %s of step %ld, "
            "waiting in %s (limit %.0f s: %s); another rank may have stopped or died, or a "
            "collective or the file system hangs; ending the job with exit status %d\n",
            w->rank, waited, ts_watch_kind_name(w->kind), w->step, w->what, limit, how,
            TS_EXIT_STALLED);
    fflush(stderr);
    fflush(stdout);
    MPI_Abort(w->comm, TS_EXIT_STALLED);
    _exit(TS_EXIT_STALLED); /* if MPI_Abort returned */
}

static void *watch(void *arg) {
    ts_watchdog *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        double now = ts_monotonic_seconds();
        if (w->active) {
            double limit = limit_locked(w, w->kind), waited = now - w->since;
            if (waited > limit) {
                fire(w, waited, limit); /* does not return */
            }
        }
        /* Checked every second, or sooner for limits of a few seconds. */
        double period = 1.0;
        if (w->active && limit_locked(w, w->kind) < 4) period = limit_locked(w, w->kind) / 4;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        long nanos = deadline.tv_nsec + (long)(period * 1e9);
        deadline.tv_sec += nanos / 1000000000L;
        deadline.tv_nsec = nanos % 1000000000L;
        int rc = pthread_cond_timedwait(&w->wake, &w->lock, &deadline);
        if (rc != 0 && rc != ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

bool ts_watchdog_start(ts_watchdog *w, MPI_Comm comm, int rank, double configured) {
    memset(w, 0, sizeof *w);
    w->comm = comm;
    w->rank = rank;
    w->configured = configured;
    if (configured < 0) return true;
    if (pthread_mutex_init(&w->lock, NULL) != 0) return false;
    if (pthread_cond_init(&w->wake, NULL) != 0) {
        pthread_mutex_destroy(&w->lock);
        return false;
    }
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        return false;
    }
    w->running = true;
    return true;
}

/* Under lock: the activity in progress ends now. */
static void finish_activity(ts_watchdog *w, double now) {
    if (w->active && now - w->since > w->longest[w->kind]) w->longest[w->kind] = now - w->since;
    w->active = false;
}

void ts_watchdog_enter(ts_watchdog *w, ts_watch_kind kind, long step, const char *what) {
    if (!w->running) return;
    double now = ts_monotonic_seconds();
    pthread_mutex_lock(&w->lock);
    finish_activity(w, now);
    w->active = true;
    w->kind = kind;
    w->step = step;
    w->what = what;
    w->since = now;
    pthread_mutex_unlock(&w->lock);
}

void ts_watchdog_note(ts_watchdog *w, const char *what) {
    if (!w->running) return;
    pthread_mutex_lock(&w->lock);
    w->what = what;
    pthread_mutex_unlock(&w->lock);
}

void ts_watchdog_idle(ts_watchdog *w) {
    if (!w->running) return;
    double now = ts_monotonic_seconds();
    pthread_mutex_lock(&w->lock);
    finish_activity(w, now);
    pthread_mutex_unlock(&w->lock);
}

void ts_watchdog_stop(ts_watchdog *w) {
    if (!w->running) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    w->running = false;
}
