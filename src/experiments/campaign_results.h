/* The state of every point read back from its run directory, and
 * DIR/results.h5 (docs/campaign-results-format.md): one row per manifest
 * point, rewritten whole and atomically after every point. Everything is
 * read from the run directories (metrics.h5, report.yaml, checkpoints), so
 * the file is the same whether the points ran in this invocation, an earlier
 * one, or another Slurm array task. Serial: call on one rank. */
#ifndef TS_CAMPAIGN_RESULTS_H
#define TS_CAMPAIGN_RESULTS_H

#include <stdbool.h>
#include <stddef.h>

#include "experiments/campaign_manifest.h"
#include "io/h5_toolkit.h"

typedef enum ts_point_status { TS_POINT_PENDING, TS_POINT_DONE, TS_POINT_FAILED } ts_point_status;

/* "pending", "done", "failed" */
const char *ts_point_status_name(ts_point_status status);

typedef struct ts_campaign_run_result {
    ts_point_status status;
    char verdict[16]; /* report.yaml's VALID / INVALID, "" unless done */
    double flops;     /* executed training FLOPs summed from metrics.h5 (NaN unless done) */
    double wall_seconds, node_hours;
    long ranks, nodes;
    char commit[64];
    double loss[TS_CAMPAIGN_MAX_DOMAINS], ppl[TS_CAMPAIGN_MAX_DOMAINS];
    /* Why a run whose training is complete has no results (its metrics.h5
     * unreadable, or without the final evaluation): such a point is failed,
     * not pending, since running again would not change it. "" otherwise. */
    char problem[384];
} ts_campaign_run_result;

/* The name of the marker a failed run leaves in its directory. */
#define TS_CAMPAIGN_FAILED_MARKER "campaign_failed"

/* Reads the run directory of point p. Never fails: what cannot be read
 * makes the point pending (or failed, if the marker is there, or if the
 * training is complete but its results cannot be read: r->problem). */
void ts_campaign_read_result(const ts_campaign_manifest *m, const ts_campaign_point *p,
                             ts_campaign_run_result *r);

/* Writes DIR/results.h5 (temporary file, fsync, rename). A full disk or
 * an I/O error is TS_IO_ERR_NOSPACE or TS_IO_ERR_IO, naming the file and the
 * free space; the temporary file is removed and the previous results.h5 is
 * left as it was. */
ts_io_status ts_campaign_write_results(const char *dir, const ts_campaign *c,
                                       const ts_campaign_manifest *m,
                                       const ts_campaign_run_result *results, char *err,
                                       size_t errlen);

#endif
