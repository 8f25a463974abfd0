/* thinkscale eval (--checkpoint FILE | --run DIR) --data A.h5[,B.h5...]
 *                 [--setting K=V[,K=V...]]... [--think steps=N,samples=G[,...]]...
 *                 [--order M[,M...]] [--latent-samples K[,K...]]
 *                 [--split validation|train] [--windows N] [--batch N]
 *                 [--output FILE.h5] [--energies FILE.h5] [--force]
 * Perplexity of a checkpoint on any number of token sets under any number of
 * inference-compute settings, to stdout and HDF5. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/spmd_command.h"
#include "train/eval_run.h"

#define MAX_SETTINGS TS_EVAL_MAX_SETTINGS
#define SETTING_LEN TS_EVAL_SETTING_LEN

typedef ts_eval_run_options eval_args;

static void eval_usage(FILE *out) {
    fprintf(
        out,
        "usage: thinkscale eval (--checkpoint FILE | --run DIR) --data A.h5[,B.h5...]\n"
        "                       [--split validation|train] [--windows N] [--batch N]\n"
        "                       [--output FILE.h5] [--force]\n"
        "  --run DIR      evaluate the newest complete checkpoint of a run\n"
        "  --windows N    sequences scored per set (default 64), evenly spaced\n"
        "  --batch N      sequences per forward pass on each rank (default 8)\n"
        "  --output FILE  results file (default: eval.h5 beside the checkpoint, in its run "
        "directory)\n"
        "  --energies FILE  EBT: per-token energies of every set and setting (docs/ebt.md)\n"
        "  --setting S    inference overrides \"section.key=value,...\" (repeatable); each\n"
        "                 setting evaluates every set; \"default\" is the trained configuration\n"
        "  --think steps=N,samples=G[,step_size=A,noise=S]   EBT thinking (repeatable)\n"
        "  --order M[,M...]            Nexus attention order at inference, one setting each\n"
        "  --latent-samples K[,K...]   Free Transformer prior samples, one setting each\n");
}

static bool add_setting(eval_args *a, const char *text, char *err, size_t errlen) {
    if (a->n_settings == MAX_SETTINGS || strlen(text) >= SETTING_LEN) {
        snprintf(err, errlen, "at most %d settings of %d characters", MAX_SETTINGS,
                 SETTING_LEN - 1);
        return false;
    }
    snprintf(a->settings[a->n_settings++], SETTING_LEN, "%s", text);
    return true;
}

/* --think steps=N,samples=G,step_size=A,noise=S -> ebt.infer_* overrides. */
static bool add_think_setting(eval_args *a, const char *value, char *err, size_t errlen) {
    static const char *const names[][2] = {{"steps", "infer_steps"},
                                           {"samples", "infer_samples"},
                                           {"step_size", "infer_step_size"},
                                           {"noise", "infer_noise"}};
    char copy[SETTING_LEN], out[SETTING_LEN] = "";
    snprintf(copy, sizeof copy, "%s", value);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        const char *key = NULL;
        if (eq) {
            *eq = 0;
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
                if (!strcmp(item, names[i][0])) key = names[i][1];
        }
        if (!key) {
            snprintf(err, errlen, "--think takes steps=, samples=, step_size=, noise=; not '%s'",
                     item);
            return false;
        }
        size_t used = strlen(out);
        snprintf(out + used, sizeof out - used, "%sebt.%s=%s", used ? "," : "", key, eq + 1);
    }
    return add_setting(a, out, err, errlen);
}

/* --order 1,2,3 -> one setting per value of section.key. */
static bool add_list_settings(eval_args *a, const char *key, const char *value, char *err,
                              size_t errlen) {
    char copy[SETTING_LEN], one[SETTING_LEN];
    snprintf(copy, sizeof copy, "%s", value);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        snprintf(one, sizeof one, "%s=%s", key, item);
        if (!add_setting(a, one, err, errlen)) return false;
    }
    return true;
}

static bool parse_eval_args(int argc, char **argv, void *out, char *err, size_t errlen) {
    eval_args *a = out;
    *a = (eval_args){.split = "validation", .windows = 64, .batch = 8};
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(opt, "--force")) {
            a->force = true;
            continue;
        }
        if (!has_value) {
            snprintf(err, errlen, "option '%s' needs a value or is unknown", opt);
            return false;
        }
        const char *value = argv[++i];
        char *end;
        if (!strcmp(opt, "--checkpoint"))
            a->checkpoint = value;
        else if (!strcmp(opt, "--run"))
            a->run_dir = value;
        else if (!strcmp(opt, "--data")) {
            size_t used = strlen(a->data);
            snprintf(a->data + used, sizeof a->data - used, "%s%s", used ? "," : "", value);
        } else if (!strcmp(opt, "--split"))
            a->split = value;
        else if (!strcmp(opt, "--output"))
            a->output = value;
        else if (!strcmp(opt, "--energies"))
            a->energies = value;
        else if (!strcmp(opt, "--setting")) {
            if (!add_setting(a, value, err, errlen)) return false;
        } else if (!strcmp(opt, "--think")) {
            if (!add_think_setting(a, value, err, errlen)) return false;
        } else if (!strcmp(opt, "--order")) {
            if (!add_list_settings(a, "nexus.infer_order", value, err, errlen)) return false;
        } else if (!strcmp(opt, "--latent-samples")) {
            if (!add_list_settings(a, "free.eval_samples", value, err, errlen)) return false;
        } else if (!strcmp(opt, "--windows") || !strcmp(opt, "--batch")) {
            long v = strtol(value, &end, 10);
            if (*end || v < 1) {
                snprintf(err, errlen, "%s needs a positive integer, got '%s'", opt, value);
                return false;
            }
            *(!strcmp(opt, "--windows") ? &a->windows : &a->batch) = v;
        } else {
            snprintf(err, errlen, "unknown option '%s'", opt);
            return false;
        }
    }
    if (!a->checkpoint == !a->run_dir) {
        snprintf(err, errlen, "give exactly one of --checkpoint and --run");
        return false;
    }
    if (!a->data[0]) {
        snprintf(err, errlen, "no token files given (--data)");
        return false;
    }
    if (strcmp(a->split, "validation") && strcmp(a->split, "train")) {
        snprintf(err, errlen, "--split must be validation or train, not '%s'", a->split);
        return false;
    }
    return true;
}

static int run_eval(MPI_Comm comm, void *args) {
    return ts_eval_run(comm, args);
}

int ts_cmd_eval(int argc, char **argv) {
    static const ts_spmd_command command = {"eval", eval_usage, parse_eval_args, run_eval};
    static eval_args args; /* large: keep it off the stack */
    return ts_run_spmd_command(&command, argc, argv, &args);
}
