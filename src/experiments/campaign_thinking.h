/* The thinking evaluation of a campaign (docs/thinking.md): after a point of
 * the thinking axis has trained, its newest checkpoint is evaluated on the
 * training domain's validation split and every [campaign] eval set, at the
 * default inference and every level of its architecture's inference-compute
 * knob ([thinking]), with per-window sums for the bootstrap. The result is
 * the run's thinking.h5 (an eval.h5, docs/training.md); EBT runs also write
 * thinking_energies.h5 (per-token energies, docs/ebt.md). A point of the
 * thinking axis is done only when its thinking.h5 exists. */
#ifndef TS_CAMPAIGN_THINKING_H
#define TS_CAMPAIGN_THINKING_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "experiments/campaign_manifest.h"

#define TS_THINKING_FILE "thinking.h5"
#define TS_THINKING_ENERGIES_FILE "thinking_energies.h5"

/* The inference settings of an architecture: "default" first, then one per
 * knob level, as `thinkscale eval --setting` text. Returns how many (at most
 * max), or -1 with a message if the knob grid does not fit. */
int ts_campaign_thinking_settings(const ts_campaign *campaign, const char *arch,
                                  char (*settings)[256], int max, char *err, size_t errlen);

/* Whether the point's run directory holds its thinking.h5 (this process only). */
bool ts_campaign_thinking_done(const ts_campaign_point *point);

/* Collective over comm: evaluates the point's run (complete) into its
 * thinking.h5, replacing a stale one. Returns the evaluation's exit status. */
int ts_campaign_thinking_eval(MPI_Comm comm, const ts_campaign *campaign,
                              const ts_campaign_manifest *manifest, const ts_campaign_point *point);

#endif
