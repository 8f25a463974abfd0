/* `campaign submit`: the campaign as Slurm jobs. DIR/slurm/array.sbatch is
 * one job array with a task per run (the index of the point that owns it;
 * points sharing a run are produced by that task), throttled to %K tasks at
 * once, each task running `campaign run FILE --dir DIR --points INDEX`, which
 * resumes its run if an earlier task was cut off; DIR/slurm/analysis.sbatch
 * rebuilds results.h5 and runs the analysis once the array has ended
 * (--dependency=afterany). */
#ifndef TS_CAMPAIGN_SBATCH_H
#define TS_CAMPAIGN_SBATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "experiments/campaign_plan.h"

typedef struct ts_campaign_scripts {
    char array_path[4200], analysis_path[4200];
    char array_range[8192]; /* the --array value, throttle included */
    long minutes;           /* --time of an array task */
} ts_campaign_scripts;

/* Writes both scripts into DIR/slurm/ (atomically). dir, the campaign file
 * and the program are written as absolute paths so the jobs run from
 * anywhere. False with a message. */
bool ts_campaign_write_sbatch(const ts_campaign *campaign, const ts_campaign_manifest *m,
                              const ts_campaign_cost *costs, const char *dir,
                              ts_campaign_scripts *out, char *err, size_t errlen);

/* --dry-run: both scripts and the sbatch commands that would submit them. */
bool ts_campaign_print_scripts(FILE *out, const ts_campaign_scripts *scripts, char *err,
                               size_t errlen);

/* Submits the array, then the analysis job chained on it, with sbatch
 * --parsable; prints the job ids. False with a message (e.g. no sbatch). */
bool ts_campaign_submit(const ts_campaign_scripts *scripts, char *err, size_t errlen);

#endif
