#include "train/eval_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/energies.h"
#include "io/eval_results.h"
#include "data/tokenizer.h"
#include "io/token_file.h"
#include "models/ebt.h"
#include "train/checkpoint_model.h"
#include "train/evaluate.h"
#include "train/mllog.h"
#include "train/run_state.h"

/* eval.h5 in the directory of the checkpoint, i.e. the run directory, where
 * analysis/run_summary.py reads it (docs/training.md). */
static void default_output(const char *checkpoint, char *output, size_t len) {
    const char *slash = strrchr(checkpoint, '/');
    if (slash)
        snprintf(output, len, "%.*s/eval.h5", (int)(slash - checkpoint), checkpoint);
    else
        snprintf(output, len, "eval.h5");
}

/* The token sets of --data, opened before any is evaluated. */
typedef struct eval_sets {
    int n;
    ts_token_file files[TS_MAX_EVAL_SETS];
    char paths[TS_MAX_EVAL_SETS][TS_CHECKPOINT_PATH_MAX];
    char names[TS_MAX_EVAL_SETS][64]; /* domain, under which the results are stored */
} eval_sets;

static void close_sets(eval_sets *sets) {
    for (int i = 0; i < sets->n; i++) ts_token_file_close(&sets->files[i]);
    sets->n = 0;
}

/* Opens every file of the comma-separated list (collective), checking its
 * vocabulary and tokenizer against the model's, and that no two share a
 * domain: eval.h5 stores results under the domain, so a second set of one
 * domain could not be written after the whole evaluation. */
static bool open_sets(MPI_Comm comm, const char *data, const ts_run_config *config, eval_sets *sets,
                      char *err, size_t errlen) {
    char list[TS_MAX_EVAL_SETS * TS_CHECKPOINT_PATH_MAX];
    snprintf(list, sizeof list, "%s", data);
    for (char *save = NULL, *file = strtok_r(list, ",", &save); file;
         file = strtok_r(NULL, ",", &save)) {
        if (sets->n == TS_MAX_EVAL_SETS) {
            snprintf(err, errlen, "--data lists more than %d token files", TS_MAX_EVAL_SETS);
            return false;
        }
        ts_token_file *tokens = &sets->files[sets->n];
        ts_tf_err tf_err;
        ts_token_open_opts opts = {.expected_vocab = config->model.vocab_size, .verify = true};
        if (ts_token_file_open(tokens, file, comm, &opts, &tf_err) != TS_TF_OK) {
            snprintf(err, errlen, "%s", tf_err.msg);
            return false;
        }
        sets->n++;
        if (!ts_tokenizer_check_same(config->tokenizer, tokens->meta.tokenizer, file, err, errlen))
            return false;
        int i = sets->n - 1;
        snprintf(sets->paths[i], sizeof sets->paths[i], "%s", file);
        snprintf(sets->names[i], sizeof sets->names[i], "%s",
                 tokens->meta.domain && tokens->meta.domain[0] ? tokens->meta.domain : file);
        for (int j = 0; j < i; j++)
            if (!strcmp(sets->names[i], sets->names[j])) {
                snprintf(err, errlen,
                         "--data lists %s and %s, both of domain '%s', under which eval.h5 stores "
                         "results: list each domain once",
                         sets->paths[j], file, sets->names[i]);
                return false;
            }
    }
    return true;
}

int ts_eval_run(MPI_Comm comm, const ts_eval_run_options *a) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    char err[1024] = "", path[TS_CHECKPOINT_PATH_MAX];
    if (a->run_dir) {
        ts_io_status st =
            ts_checkpoint_find_latest(comm, a->run_dir, path, sizeof path, NULL, err, sizeof err);
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
    ts_model *model = ts_model_from_checkpoint(comm, path, &config, &step, err, sizeof err);
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
    ts_run_config setting_configs[TS_EVAL_MAX_SETTINGS];
    for (int s = 0; s < n_settings; s++) {
        setting_configs[s] = config;
        const char *spec = a->n_settings ? a->settings[s] : "default";
        char copy[TS_EVAL_SETTING_LEN];
        snprintf(copy, sizeof copy, "%s", spec);
        for (char *save = NULL, *item = strtok_r(copy, ",", &save); item && strcmp(spec, "default");
             item = strtok_r(NULL, ",", &save))
            if (!ts_config_set_inference(&setting_configs[s], item, err, sizeof err)) {
                if (rank == 0)
                    fprintf(stderr, "thinkscale eval: error: setting '%s': %s\n", spec, err);
                ts_ctx_free(&ctx);
                ts_model_destroy(model);
                return 2;
            }
        /* The architecture's own checks of its inference keys (ebt.infer_samples
         * >= 1, ...), on a model that only counts: here, not mid-evaluation. */
        ts_model *check = ts_model_create_counting(&setting_configs[s].model, err, sizeof err);
        if (!check) {
            if (rank == 0) fprintf(stderr, "thinkscale eval: error: setting '%s': %s\n", spec, err);
            ts_ctx_free(&ctx);
            ts_model_destroy(model);
            return 2;
        }
        ts_model_destroy(check);
    }
    /* Everything that would refuse the results is checked before the
     * evaluation spends its time: where they go, and the token sets. */
    char output[TS_CHECKPOINT_PATH_MAX + 32];
    if (a->output)
        snprintf(output, sizeof output, "%s", a->output);
    else
        default_output(path, output, sizeof output);
    eval_sets sets = {0};
    bool ready =
        rank != 0 || ts_eval_results_check_target(output, a->force, err, sizeof err) == TS_IO_OK;
    if (ready && rank == 0 && a->energies && ts_io_same_file(a->energies, output)) {
        snprintf(err, sizeof err, "--energies and the results both name %s: give each its own file",
                 output);
        ready = false;
    }
    MPI_Bcast(&ready, 1, MPI_C_BOOL, 0, comm);
    if (!ready) {
        if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
    } else {
        ready = open_sets(comm, a->data, &config, &sets, err, sizeof err);
        if (!ready && rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
    }
    if (!ready) {
        close_sets(&sets);
        ts_ctx_free(&ctx);
        ts_model_destroy(model);
        return 1;
    }
    ts_energies_file *energies = NULL;
    if (a->energies &&
        !(energies = ts_energies_open(comm, a->energies, a->force, path, step, err, sizeof err))) {
        if (rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
        close_sets(&sets);
        ts_ctx_free(&ctx);
        ts_model_destroy(model);
        return 1;
    }
    const ts_model_ops *ops = model->ops;
    const char *stat_names[TS_MAX_MODEL_STATS];
    for (int k = 0; k < ops->n_stats; k++) stat_names[k] = ops->stats[k].name;
    enum { MAX_ROWS = TS_MAX_EVAL_SETS * TS_EVAL_MAX_SETTINGS };
    static ts_eval_row rows[MAX_ROWS];
    static ts_eval_result results[MAX_ROWS];
    static char names[MAX_ROWS][64];
    int n = 0, status = 0;
    /* Per-window sums: four arrays of [windows] per row, in one block. */
    double *window_block = NULL;
    if (a->window_sums) {
        window_block = calloc((size_t)MAX_ROWS * 4 * (size_t)a->windows, sizeof *window_block);
        int have = window_block != NULL, all = 0;
        MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, comm);
        if (!all) {
            if (rank == 0)
                fprintf(stderr, "thinkscale eval: error: out of memory for per-window sums\n");
            free(window_block);
            if (energies) ts_energies_close(energies, false, err, sizeof err);
            close_sets(&sets);
            ts_ctx_free(&ctx);
            ts_model_destroy(model);
            return 1;
        }
    }
    if (rank == 0) {
        printf("%-12s %-32s %10s %12s %10s", "set", "setting", "loss", "perplexity", "tokens");
        for (int k = 0; k < ops->n_stats; k++) printf(" %12s", stat_names[k]);
        printf("\n");
    }
    ts_mllog mllog;
    ts_mllog_open_stdout(&mllog, comm, &config);
    ts_mllog_eval_start(&mllog, step);
    for (int i = 0; i < sets.n && status == 0; i++) {
        ts_token_file *tokens = &sets.files[i];
        const char *file = sets.paths[i];
        for (int s = 0; s < n_settings && n < MAX_ROWS; s++) {
            model->config = setting_configs[s].model; /* only inference keys differ */
            ts_eval_result *r = &results[n];
            snprintf(names[n], sizeof names[n], "%s", sets.names[i]);
            const char *setting = a->n_settings ? a->settings[s] : "default";
            ts_energy_trace trace;
            bool ok = !energies || ebt_energies_begin(model, &trace, a->windows,
                                                      config.model.context, err, sizeof err);
            double *wb = window_block ? window_block + (size_t)n * 4 * (size_t)a->windows : NULL;
            long nw = a->windows;
            ts_eval_window_sums sums = {wb, wb ? wb + nw : NULL, wb ? wb + 2 * nw : NULL,
                                        wb ? wb + 3 * nw : NULL};
            ok =
                ok && ts_evaluate_windows(comm, model, &ctx, tokens, split, config.model.context,
                                          config.align, a->windows, a->batch, (uint64_t)config.seed,
                                          r, wb ? &sums : NULL, err, sizeof err);
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
            rows[n] = (ts_eval_row){.set = names[n],
                                    .path = file,
                                    .setting = setting,
                                    .loss = r->loss,
                                    .perplexity = r->perplexity,
                                    .tokens = r->tokens,
                                    .flops = r->flops,
                                    .n_stats = r->n_stats,
                                    .stat_names = stat_names,
                                    .stats = r->stats,
                                    .answer_loss = r->answer_loss,
                                    .answer_perplexity = r->answer_perplexity,
                                    .answer_tokens = r->answer_tokens,
                                    .n_windows = wb ? nw : 0,
                                    .window_loss = sums.loss,
                                    .window_tokens = sums.tokens,
                                    .window_answer_loss = sums.answer_loss,
                                    .window_answer_tokens = sums.answer_tokens};
            ts_mllog_eval_result(&mllog, step, names[n], r, n == 0);
            if (rank == 0) {
                printf("%-12s %-32s %10.4f %12.3f %10ld", names[n], setting, r->loss, r->perplexity,
                       r->tokens);
                for (int k = 0; k < r->n_stats; k++) printf(" %12.4g", r->stats[k]);
                printf("\n");
                /* Answer-only scoring of a set with an answer mask: its own row. */
                if (r->answer_tokens > 0) {
                    char answer_set[80];
                    snprintf(answer_set, sizeof answer_set, "%s/answer", names[n]);
                    printf("%-12s %-32s %10.4f %12.3f %10ld\n", answer_set, setting, r->answer_loss,
                           r->answer_perplexity, r->answer_tokens);
                }
            }
            n++;
        }
        model->config = config.model;
    }
    close_sets(&sets);
    if (status == 0 && rank == 0) {
        char *config_text = ts_config_to_ini(&config);
        ts_eval_header header = {
            path, step, a->split, a->windows, config.model.context, config_text ? config_text : ""};
        ts_io_status st =
            ts_eval_results_write(output, &header, rows, n, a->force, err, sizeof err);
        if (st != TS_IO_OK) {
            fprintf(stderr, "thinkscale eval: error: %s\n", err);
            /* A full disk or an I/O error: the status of every other write failure. */
            status = st == TS_IO_ERR_NOSPACE || st == TS_IO_ERR_IO ? TS_EXIT_WRITE_FAILED : 1;
        } else {
            printf("results: %s\n", output);
        }
        free(config_text);
    }
    if (status == 0) ts_mllog_eval_stop(&mllog, step);
    MPI_Bcast(&status, 1, MPI_INT, 0, comm);
    if (energies) {
        bool kept = ts_energies_close(energies, status == 0, err, sizeof err);
        if (status == 0 && !kept && rank == 0) fprintf(stderr, "thinkscale eval: error: %s\n", err);
        if (status == 0 && kept && rank == 0) printf("energies: %s\n", a->energies);
        if (status == 0 && !kept) status = 1;
    }
    free(window_block);
    ts_ctx_free(&ctx);
    ts_model_destroy(model);
    return status;
}
