/* thinkscale campaign plan|run|submit|analyse FILE.ini [--dir DIR] [--points SELECTION]
 *                    [--dry-run] [--no-analysis]
 * Scaling campaigns (docs/campaigns.md): arguments in, calls to
 * src/experiments/campaign_*.h out. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/spmd_command.h"
#include "experiments/campaign_manifest.h"
#include "experiments/campaign_plan.h"
#include "experiments/campaign_run.h"
#include "experiments/campaign_sbatch.h"
#include "experiments/campaign_spec.h"

static void campaign_usage(FILE *out) {
    fprintf(out,
            "usage: thinkscale campaign plan FILE.ini\n"
            "       mpirun -np N thinkscale campaign run FILE.ini --dir DIR [--points SELECTION]\n"
            "                                          [--no-analysis]\n"
            "       thinkscale campaign submit FILE.ini --dir DIR [--dry-run]\n"
            "       thinkscale campaign analyse FILE.ini --dir DIR\n"
            "  plan     every point with its parameters, tokens, executed FLOPs and node-hours\n"
            "  run      trains the selected points one after another on all ranks, skipping\n"
            "           complete ones and resuming interrupted ones; rewrites DIR/results.h5\n"
            "           after each; runs analysis/scaling.py DIR when every point is done\n"
            "  submit   writes DIR/slurm/array.sbatch and DIR/slurm/analysis.sbatch and submits\n"
            "           them (the analysis chained with --dependency=afterany); --dry-run\n"
            "           prints them and the sbatch commands instead\n"
            "  analyse  rebuilds DIR/results.h5 from the run directories and runs the analysis\n"
            "           if every point is done\n"
            "  SELECTION: comma-separated indices (7), index ranges (0-5), point names or glob\n"
            "           patterns over names (ebt-*, *-depth-*); 'all'\n");
}

typedef enum action { ACTION_PLAN, ACTION_RUN, ACTION_SUBMIT, ACTION_ANALYSE } action;

typedef struct campaign_args {
    action action;
    const char *file, *dir, *points;
    bool dry_run, no_analysis;
    ts_campaign campaign;
    ts_campaign_manifest manifest;
    bool *selected;
} campaign_args;

static bool parse_campaign_args(int argc, char **argv, void *out, char *err, size_t errlen) {
    campaign_args *a = out;
    if (argc < 3) {
        snprintf(err, errlen, "campaign needs an action (plan, run, submit, analyse) and a file");
        return false;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "plan"))
        a->action = ACTION_PLAN;
    else if (!strcmp(verb, "run"))
        a->action = ACTION_RUN;
    else if (!strcmp(verb, "submit"))
        a->action = ACTION_SUBMIT;
    else if (!strcmp(verb, "analyse") || !strcmp(verb, "analyze"))
        a->action = ACTION_ANALYSE;
    else {
        snprintf(err, errlen, "unknown campaign action '%s'", verb);
        return false;
    }
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(arg, "--dir") && has_value)
            a->dir = argv[++i];
        else if (!strcmp(arg, "--points") && has_value)
            a->points = argv[++i];
        else if (!strcmp(arg, "--dry-run"))
            a->dry_run = true;
        else if (!strcmp(arg, "--no-analysis"))
            a->no_analysis = true;
        else if (arg[0] == '-') {
            snprintf(err, errlen, "unknown option '%s' (or it lacks its value)", arg);
            return false;
        } else if (a->file) {
            snprintf(err, errlen, "more than one campaign file ('%s', '%s')", a->file, arg);
            return false;
        } else
            a->file = arg;
    }
    if (!a->file) {
        snprintf(err, errlen, "no campaign file given");
        return false;
    }
    if (a->action != ACTION_PLAN && !a->dir) {
        snprintf(err, errlen, "campaign %s needs --dir DIR", verb);
        return false;
    }
    if (a->points && a->action != ACTION_RUN) {
        snprintf(err, errlen, "--points belongs to campaign run");
        return false;
    }
    if (a->dry_run && a->action != ACTION_SUBMIT) {
        snprintf(err, errlen, "--dry-run belongs to campaign submit");
        return false;
    }
    /* Parsing and expansion are deterministic: every rank does them and agrees. */
    if (!ts_campaign_load(&a->campaign, a->file, err, errlen)) return false;
    if (!ts_campaign_expand(&a->campaign, a->dir, &a->manifest, err, errlen)) return false;
    a->selected = calloc((size_t)a->manifest.n_points, sizeof *a->selected);
    if (!a->selected) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    return ts_campaign_select(&a->manifest, a->points, a->selected, err, errlen);
}

/* plan and submit: rank 0 alone. */
static int plan_or_submit(campaign_args *a) {
    char err[2048] = "";
    ts_campaign_cost *costs = calloc((size_t)a->manifest.n_points, sizeof *costs);
    if (!costs) {
        fprintf(stderr, "thinkscale campaign: error: out of memory\n");
        return 1;
    }
    ts_campaign_rate rate = ts_campaign_node_rate(&a->campaign);
    bool ok = ts_campaign_plan_costs(&a->campaign, &a->manifest, &rate, costs, err, sizeof err);
    if (ok && a->action == ACTION_PLAN)
        ts_campaign_print_plan(stdout, &a->campaign, &a->manifest, &rate, costs);
    if (ok && a->action == ACTION_SUBMIT) {
        ts_campaign_scripts scripts;
        ok = ts_campaign_manifest_claim_dir(&a->campaign, &a->manifest, a->dir, err, sizeof err) &&
             ts_campaign_write_sbatch(&a->campaign, &a->manifest, costs, a->dir, &scripts, err,
                                      sizeof err);
        if (ok && a->dry_run) {
            ok = ts_campaign_print_scripts(stdout, &scripts, err, sizeof err);
        } else if (ok) {
            if (!a->manifest.data_found)
                printf("note: %s: the tasks will refuse to run until it exists\n",
                       a->manifest.missing);
            ok = ts_campaign_submit(&scripts, err, sizeof err);
        }
    }
    if (!ok) fprintf(stderr, "thinkscale campaign: error: %s\n", err);
    free(costs);
    return ok ? 0 : 1;
}

static int run_campaign(MPI_Comm comm, void *args) {
    campaign_args *a = args;
    int rank = 0, status = 0;
    MPI_Comm_rank(comm, &rank);
    if (a->action == ACTION_PLAN || a->action == ACTION_SUBMIT) {
        if (rank == 0) status = plan_or_submit(a);
        MPI_Bcast(&status, 1, MPI_INT, 0, comm);
    } else {
        ts_campaign_run_options options = {.dir = a->dir,
                                           .selected = a->selected,
                                           .train = a->action == ACTION_RUN,
                                           .analyse = !a->no_analysis};
        status = ts_campaign_run(comm, &a->campaign, &a->manifest, &options);
    }
    free(a->selected);
    ts_campaign_manifest_free(&a->manifest);
    ts_campaign_free(&a->campaign);
    return status;
}

int ts_cmd_campaign(int argc, char **argv) {
    static const ts_spmd_command command = {"campaign", campaign_usage, parse_campaign_args,
                                            run_campaign};
    static campaign_args args; /* large: keep it off the stack */
    return ts_run_spmd_command(&command, argc, argv, &args);
}
