/* thinkscale eval (--checkpoint FILE | --run DIR) --data A.h5[,B.h5...]
 *                 [--split validation|train] [--windows N] [--batch N]
 *                 [--output FILE.h5] [--force]
 * Perplexity of a checkpoint on any number of token sets, to stdout and HDF5. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/config.h"
#include "io/checkpoint.h"
#include "io/eval_results.h"
#include "io/token_file.h"
#include "train/evaluate.h"

typedef struct eval_args {
    const char *checkpoint;
    const char *run_dir;
    char data[TS_PATH_MAX * 4];
    const char *split;
    long windows;
    long batch;
    const char *output;
    bool force;
} eval_args;

static void eval_usage(FILE *out) {
    fprintf(out,
            "usage: thinkscale eval (--checkpoint FILE | --run DIR) --data A.h5[,B.h5...]\n"
            "                       [--split validation|train] [--windows N] [--batch N]\n"
            "                       [--output FILE.h5] [--force]\n"
            "  --run DIR      evaluate the newest complete checkpoint of a run\n"
            "  --windows N    sequences scored per set (default 64), evenly spaced\n"
            "  --batch N      sequences per forward pass on each rank (default 8)\n"
            "  --output FILE  results file (default: eval_STEP.h5 beside the checkpoint)\n");
}

static bool parse_eval_args(int argc, char **argv, eval_args *a, char *err, size_t errlen) {
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
    if (ts_checkpoint_read(comm, path, &model->table, model->params, NULL, NULL, NULL, NULL, 0,
                           NULL, err, errlen) != TS_IO_OK) {
        ts_model_destroy(model);
        return NULL;
    }
    return model;
}

static int run_eval(MPI_Comm comm, const eval_args *a) {
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
    char list[sizeof a->data];
    snprintf(list, sizeof list, "%s", a->data);
    ts_eval_row rows[TS_MAX_EVAL_SETS];
    char names[TS_MAX_EVAL_SETS][64];
    int n = 0, status = 0;
    if (rank == 0)
        printf("%-14s %10s %12s %10s  %s\n", "set", "loss", "perplexity", "tokens", "file");
    for (char *save = NULL, *file = strtok_r(list, ",", &save); file && n < TS_MAX_EVAL_SETS;
         file = strtok_r(NULL, ",", &save)) {
        ts_token_file tokens;
        ts_tf_err tf_err;
        ts_token_open_opts opts = {.expected_vocab = config.model.vocab_size, .verify = true};
        if (ts_token_file_open(&tokens, file, comm, &opts, &tf_err) != TS_TF_OK) {
            if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", tf_err.msg);
            status = 1;
            break;
        }
        ts_eval_result r;
        bool ok = ts_evaluate(comm, model, &ctx, &tokens, split, config.model.context, a->windows,
                              a->batch, &r, err, sizeof err);
        snprintf(names[n], sizeof names[n], "%s",
                 tokens.meta.domain && tokens.meta.domain[0] ? tokens.meta.domain : file);
        ts_token_file_close(&tokens);
        if (!ok) {
            if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
            status = 1;
            break;
        }
        rows[n] = (ts_eval_row){names[n], file, "default", r.loss, r.perplexity, r.tokens, r.flops};
        if (rank == 0)
            printf("%-14s %10.4f %12.3f %10ld  %s\n", names[n], r.loss, r.perplexity, r.tokens, file);
        n++;
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
    ts_ctx_free(&ctx);
    ts_model_destroy(model);
    return status;
}

int ts_cmd_eval(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        eval_usage(stdout);
        return 0;
    }
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "thinkscale: MPI_Init failed\n");
        return 1;
    }
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    eval_args args;
    char err[1024];
    int status;
    if (!parse_eval_args(argc, argv, &args, err, sizeof err)) {
        if (rank == 0) {
            fprintf(stderr, "thinkscale eval: error: %s\n", err);
            eval_usage(stderr);
        }
        status = 2;
    } else {
        status = run_eval(MPI_COMM_WORLD, &args);
    }
    MPI_Finalize();
    return status;
}
