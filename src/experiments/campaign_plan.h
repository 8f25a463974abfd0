/* What a campaign costs before anything runs: per point the engine's count
 * of executed FLOPs of one step (ts_step_flops, not a formula) times the
 * steps, the 6N convention beside it, and node-hours at a FLOP rate given in
 * the campaign file or measured here; totals per architecture and overall,
 * each shared run counted once. */
#ifndef TS_CAMPAIGN_PLAN_H
#define TS_CAMPAIGN_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "experiments/campaign_manifest.h"

typedef struct ts_campaign_cost {
    double flops_per_step; /* executed, all ranks (expected over EBT's random steps) */
    double flops;          /* flops_per_step * steps */
    double flops_6n;       /* 6 * N * tokens */
    double node_hours;     /* flops / node rate */
} ts_campaign_cost;

typedef struct ts_campaign_rate {
    double node_flops_per_s; /* sustained training FLOP/s of one node */
    char how[256];           /* where the rate came from, for people */
} ts_campaign_rate;

/* The node rate: [campaign] flop_rate, or the GEMM peak measured on this
 * process (as the trainer's MFU denominator), scaled to the node's ranks and
 * threads and multiplied by [campaign] mfu. */
ts_campaign_rate ts_campaign_node_rate(const ts_campaign *campaign);

/* costs[n_points]; points sharing a run get the same cost. False with a
 * message naming the point whose count failed. */
bool ts_campaign_plan_costs(const ts_campaign *campaign, const ts_campaign_manifest *m,
                            const ts_campaign_rate *rate, ts_campaign_cost *costs, char *err,
                            size_t errlen);

/* The plan table and the totals. */
void ts_campaign_print_plan(FILE *out, const ts_campaign *campaign, const ts_campaign_manifest *m,
                            const ts_campaign_rate *rate, const ts_campaign_cost *costs);

#endif
