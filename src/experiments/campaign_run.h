/* Running a campaign's points, one after another on every rank of a
 * communicator, through the trainer: complete runs are skipped, interrupted
 * ones resume from their newest checkpoint (bit-identical to a run straight
 * through on the same ranks), and DIR/results.h5 is rewritten after every
 * point. When every point is done the analysis runs. */
#ifndef TS_CAMPAIGN_RUN_H
#define TS_CAMPAIGN_RUN_H

#include <mpi.h>
#include <stdbool.h>

#include "experiments/campaign_manifest.h"

typedef struct ts_campaign_run_options {
    const char *dir;      /* the campaign directory */
    const bool *selected; /* [n_points]: the points to run */
    bool train;           /* false: only rebuild results.h5 (and analyse if all is done) */
    bool analyse;         /* run analysis/scaling.py when every point is done */
} ts_campaign_run_options;

/* Collective over comm. The manifest must have been expanded with dir.
 * Refuses (before touching DIR) when data is missing or DIR belongs to
 * another campaign. Returns the exit status: 0 when every selected point is
 * done (and the analysis, if it ran, succeeded). */
int ts_campaign_run(MPI_Comm comm, const ts_campaign *campaign, const ts_campaign_manifest *m,
                    const ts_campaign_run_options *options);

#endif
