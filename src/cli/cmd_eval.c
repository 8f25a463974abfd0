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
#include "cli/config.h"
#include "cli/spmd_command.h"
#include "io/checkpoint.h"
#include "io/energies.h"
#include "io/eval_results.h"
#include "io/token_file.h"
#include "models/ebt.h"
#include "train/evaluate.h"

#define MAX_SETTINGS 16
#define SETTING_LEN 256

typedef struct eval_args {
    const char *checkpoint;
    const char *run_dir;
    char data[TS_PATH_MAX * 4];
    const char *split;
    long windows;
    long batch;
    const char *output;
    const char *energies;                    /* EBT per-token energies file, or NULL */
    bool force;
    int n_settings;                          /* 0: the trained configuration only */
    char settings[MAX_SETTINGS][SETTING_LEN]; /* "section.key=value,..." inference overrides */
} eval_args;

static void eval_usage(FILE *out) {
    fprintf(out,
            "usage: thinkscale eval (--checkpoint FILE | --run DIR) --data A.h5[,B.h5...]\n"
            "                       [--split validation|train] [--windows N] [--batch N]\n"
            "                       [--output FILE.h5] [--force]\n"
            "  --run DIR      evaluate the newest complete checkpoint of a run\n"
            "  --windows N    sequences scored per set (default 64), evenly spaced\n"
            "  --batch N      sequences per forward pass on each rank (default 8)\n"
            "  --output FILE  results file (default: CHECKPOINT_eval.h5 beside the checkpoint)\n"
            "  --energies FILE  EBT: per-token energies of every set and setting (docs/ebt.md)\n"
            "  --setting S    inference overrides \"section.key=value,...\" (repeatable); each\n"
            "                 setting evaluates every set; \"default\" is the trained configuration\n"
            "  --think steps=N,samples=G[,step_size=A,noise=S]   EBT thinking (repeatable)\n"
            "  --order M[,M...]            Nexus attention order at inference, one setting each\n"
            "  --latent-samples K[,K...]   Free Transformer prior samples, one setting each\n");
}

static bool add_setting(eval_args *a, const char *text, char *err, size_t errlen) {
    if (a->n_settings == MAX_SETTINGS || strlen(text) >= SETTING_LEN) {
        snprintf(err, errlen, "at most %d settings of %d characters", MAX_SETTINGS, SETTING_LEN - 1);
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
            snprintf(err, errlen, "--think takes steps=, samples=, step_size=, noise=; not '%s'", item);
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
        if (!strcmp(opt, "--checkpoint")) a->checkpoint = value;
        else if (!strcmp(opt, "--run")) a->run_dir = value;
        else if (!strcmp(opt, "--data")) {
            size_t used = strlen(a->data);
            snprintf(a->data + used, sizeof a->data - used, "%s%s", used ? "," : "", value);
        } else if (!strcmp(opt, "--split")) a->split = value;
        else if (!strcmp(opt, "--output")) a->output = value;
        else if (!strcmp(opt, "--energies")) a->energies = value;
        else if (!strcmp(opt, "--setting")) {
            if (!add_setting(a, value, err, errlen)) return false;
        } else if (!strcmp(opt, "--think")) {
            if (!add_think_setting(a, value, err, errlen)) return false;
        } else if (!strcmp(opt, "--order")) {
            if (!add_list_settings(a, "nexus.infer_order", value, err, errlen)) return false;
        } else if (!strcmp(opt, "--latent-samples")) {
            if (!add_list_settings(a, "free.eval_samples", value, err, errlen)) return false;
        }
        else if (!strcmp(opt, "--windows") || !strcmp(opt, "--batch")) {
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

/* Loads the model stored in a checkpoint: its configuration, then its parameters. */
static ts_model *load_model(MPI_Comm comm, const char *path, ts_run_config *config, long *step,
                            char *err, size_t errlen) {
    ts_checkpoint_info info;
    if (ts_checkpoint_read_info(comm, path, &info, err, errlen) != TS_IO_OK) return NULL;
    ts_config_defaults(config);
    bool ok = ts_config_load_string(config, info.config_text, path, err, errlen);
    *step = info.step;
    ts_checkpoint_info_free(&info);
    if (!ok) return NULL;
    ts_model *model = ts_model_create(&config->model, err, errlen);
    if (!model) return NULL;
    ts_saved_role params = ts_saved_params(&model->table, model->params);
    if (ts_checkpoint_read(comm, path, NULL, &params, 1, NULL, err, errlen) != TS_IO_OK) {
        ts_model_destroy(model);
        return NULL;
    }
    return model;
}

static int run_eval(MPI_Comm comm, void *args) {
    const eval_args *a = args;
    int rank;
    MPI_Comm_rank(comm, &rank);
    char err[1024] = "", path[TS_CHECKPOINT_PATH_MAX];
    if (a->run_dir) {
        ts_io_status st = ts_checkpoint_find_latest(comm, a->run_dir, path, sizeof path, NULL,
                                                    err, sizeof err);
        if (st == TS_IO_NOT_FOUND)
            snprintf(err, sizeof err, "no complete checkpoint in '%s'", a->run_dir);
        if (st != TS_IO_OK) {
            if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
            return 1;
        }
    } else {
        snprintf(path, sizeof path, "%s", a->checkpoint);
    }
    ts_run_config config;
    long step = 0;
    ts_model *model = load_model(comm, path, &config, &step, err, sizeof err);
    if (!model) {
        if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
        return 1;
    }
    ts_ctx ctx;
    if (!ts_ctx_init(&ctx, 0)) {
        ts_model_destroy(model);
        return 1;
    }
    ts_model_bind(model, &ctx);
    enum ts_split split = strcmp(a->split, "train") ? TS_SPLIT_VALIDATION : TS_SPLIT_TRAIN;
    int n_settings = a->n_settings ? a->n_settings : 1;
    /* Every setting is checked before any evaluation runs. */
    ts_run_config setting_configs[MAX_SETTINGS];
    for (int s = 0; s < n_settings; s++) {
        setting_configs[s] = config;
        const char *spec = a->n_settings ? a->settings[s] : "default";
        char copy[SETTING_LEN];
        snprintf(copy, sizeof copy, "%s", spec);
        for (char *save = NULL, *item = strtok_r(copy, ",", &save);
             item && strcmp(spec, "default"); item = strtok_r(NULL, ",", &save))
            if (!ts_config_set_inference(&setting_configs[s], item, err, sizeof err)) {
                if (rank == 0) fprintf(stderr, "thinkscale eval: error: setting '%s': %s\n", spec, err);
                ts_ctx_free(&ctx);
                ts_model_destroy(model);
                return 2;
            }
    }
    ts_energies_file *energies = NULL;
    if (a->energies &&
        !(energies = ts_energies_open(comm, a->energies, a->force, path, step, err, sizeof err))) {
        if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
        ts_ctx_free(&ctx);
        ts_model_destroy(model);
        return 1;
    }
    const ts_model_ops *ops = model->ops;
    const char *stat_names[TS_MAX_MODEL_STATS];
    for (int k = 0; k < ops->n_stats; k++) stat_names[k] = ops->stats[k].name;
    enum { MAX_ROWS = TS_MAX_EVAL_SETS * MAX_SETTINGS };
    static ts_eval_row rows[MAX_ROWS];
    static ts_eval_result results[MAX_ROWS];
    static char names[MAX_ROWS][64];
    int n = 0, status = 0;
    if (rank == 0) {
        printf("%-12s %-32s %10s %12s %10s", "set", "setting", "loss", "perplexity", "tokens");
        for (int k = 0; k < ops->n_stats; k++) printf(" %12s", stat_names[k]);
        printf("\n");
    }
    char list[sizeof a->data];
    snprintf(list, sizeof list, "%s", a->data);
    for (char *save = NULL, *file = strtok_r(list, ",", &save); file && status == 0;
         file = strtok_r(NULL, ",", &save)) {
        ts_token_file tokens;
        ts_tf_err tf_err;
        ts_token_open_opts opts = {.expected_vocab = config.model.vocab_size, .verify = true};
        if (ts_token_file_open(&tokens, file, comm, &opts, &tf_err) != TS_TF_OK) {
            if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", tf_err.msg);
            status = 1;
            break;
        }
        for (int s = 0; s < n_settings && n < MAX_ROWS; s++) {
            model->config = setting_configs[s].model; /* only inference keys differ */
            ts_eval_result *r = &results[n];
            snprintf(names[n], sizeof names[n], "%s",
                     tokens.meta.domain && tokens.meta.domain[0] ? tokens.meta.domain : file);
            const char *setting = a->n_settings ? a->settings[s] : "default";
            ts_energy_trace trace;
            bool ok = !energies || ebt_energies_begin(model, &trace, a->windows,
                                                      config.model.context, err, sizeof err);
            ok = ok && ts_evaluate(comm, model, &ctx, &tokens, split, config.model.context,
                                   config.align, a->windows, a->batch, (uint64_t)config.seed, r,
                                   err, sizeof err);
            if (energies) {
                ebt_trace_energies(model, NULL);
                ok = ok && ts_energies_append(energies, names[n], setting, &trace, err, sizeof err);
                ts_energy_trace_free(&trace);
            }
            if (!ok) {
                if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
                status = 1;
                break;
            }
            rows[n] = (ts_eval_row){names[n], file, setting, r->loss, r->perplexity, r->tokens,
                                    r->flops, r->n_stats, stat_names, r->stats};
            if (rank == 0) {
                printf("%-12s %-32s %10.4f %12.3f %10ld", names[n], setting, r->loss,
                       r->perplexity, r->tokens);
                for (int k = 0; k < r->n_stats; k++) printf(" %12.4g", r->stats[k]);
                printf("\n");
            }
            n++;
        }
        model->config = config.model;
        ts_token_file_close(&tokens);
    }
    if (status == 0 && rank == 0) {
        char output[TS_CHECKPOINT_PATH_MAX + 32];
        if (a->output) snprintf(output, sizeof output, "%s", a->output);
        else snprintf(output, sizeof output, "%.*s_eval.h5", (int)(strlen(path) - 3), path);
        char *config_text = ts_config_to_ini(&config);
        ts_eval_header header = {path, step, a->split, a->windows, config.model.context,
                                 config_text ? config_text : ""};
        if (!ts_eval_results_write(output, &header, rows, n, a->force, err, sizeof err)) {
            fprintf(stderr, "thinkscale eval: error: %s\n", err);
            status = 1;
        } else {
            printf("results: %s\n", output);
        }
        free(config_text);
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, comm);
    if (energies) {
        bool kept = ts_energies_close(energies, status == 0, err, sizeof err);
        if (status == 0 && !kept && rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
        if (status == 0 && kept && rank == 0) printf("energies: %s\n", a->energies);
        if (status == 0 && !kept) status = 1;
    }
    ts_ctx_free(&ctx);
    ts_model_destroy(model);
    return status;
}

int ts_cmd_eval(int argc, char **argv) {
    static const ts_spmd_command command = {"eval", eval_usage, parse_eval_args, run_eval};
    static eval_args args; /* large: keep it off the stack */
    return ts_run_spmd_command(&command, argc, argv, &args);
}
