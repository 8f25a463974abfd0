#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "io/token_file.h"
#include "parallel/data_parallel.h"
#include "parallel/strategy.h"
#include "parallel/tensor_grid.h"
#include "parallel/tensor_ops.h"
#include "train/batches.h"
#include "train/evaluate.h"
#include "train/machine_peak.h"
#include "train/micro_batch.h"
#include "train/mllog.h"
#include "train/optimizer.h"
#include "train/run_report.h"
#include "train/run_state.h"
#include "train/stop_signal.h"
#include "train/watchdog.h"

typedef struct eval_set {
    char name[64];
    ts_token_file tokens;
    bool open;
    ts_eval_result last; /* the latest evaluation */
} eval_set;

typedef struct trainer {
    MPI_Comm comm;
    int rank, nranks;
    ts_run_config config;
    ts_model *model;
    ts_optimizer optimizer;
    ts_parallel parallel;               /* how ranks share gradients, moments and parameters */
    ts_tensor_grid grid;                /* tensor parallelism: parallel runs over grid.data */
    ts_tensor_parallel tensor_parallel; /* the linear hook's state under a grid */
    ts_ctx ctx;
    ts_token_file train;
    bool train_open;
    eval_set evals[TS_MAX_EVAL_SETS + 1];
    int n_evals;
    long step; /* steps completed */
    double tokens_seen;
    double peak_gflops; /* per rank, the MFU denominator */
    int64_t *offsets;
    int32_t *tokens;
    ts_run_state state;   /* metrics and checkpoints */
    ts_mllog mllog;       /* :::MLLOG lines (rank 0) */
    ts_watchdog watchdog; /* ends the job when a step, evaluation or checkpoint stalls */
} trainer;

/* What each step's one reduction carries (summed over ranks). */
enum {
    STEP_SHARED_FLOPS,   /* executed this step */
    STEP_SHARED_SIGNALS, /* ranks that got stop signal i */
    STEP_SHARED_TIME_DUE = STEP_SHARED_SIGNALS + TS_STOP_SIGNAL_COUNT, /* rank 0: checkpoint now */
    STEP_SHARED_COLLECTIVE, /* seconds inside the data-parallel collectives */
    STEP_SHARED_COUNT
};

/* Engine misuse inside a collective program must stop every rank. */
static void abort_job(void *user, const char *message) {
    trainer *tr = user;
    fprintf(stderr, "thinkscale: rank %d: error: %s\n", tr->rank, message);
    MPI_Abort(tr->comm, 2);
}

/* True on every rank iff `ok` on every rank; rank 0 prints the first message. */
static bool all_ok(trainer *tr, bool ok, const char *err) {
    int mine = ok, every = 0;
    MPI_Allreduce(&mine, &every, 1, MPI_INT, MPI_MIN, tr->comm);
    if (!ok) fprintf(stderr, "thinkscale: rank %d: error: %s\n", tr->rank, err);
    return every;
}

static const char *domain_of(const ts_token_file *tf, const char *path) {
    if (tf->meta.domain && tf->meta.domain[0]) return tf->meta.domain;
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Whether paths[i] names the training file or a file listed before it
 * (ts_io_same_file): the same file is evaluated once. */
static bool listed_before(const char *const *paths, int i, const char *train) {
    if (ts_io_same_file(paths[i], train)) return true;
    for (int j = 0; j < i; j++)
        if (ts_io_same_file(paths[i], paths[j])) return true;
    return false;
}

/* Every run ends with an evaluation of each set's validation split, logged
 * under the set's domain: a split shorter than a window, or two sets of one
 * domain (their rows would collide in metrics.h5), would fail only there,
 * after the training and before its final checkpoint. So both are refused
 * here, before the first step. */
static bool eval_sets_usable(const trainer *tr, int64_t window, char *err, size_t errlen) {
    for (int i = 0; i < tr->n_evals; i++) {
        const eval_set *e = &tr->evals[i];
        int64_t have = ts_token_file_len(&e->tokens, TS_SPLIT_VALIDATION);
        if (have < window) {
            snprintf(err, errlen,
                     "%s: validation split has %lld tokens, fewer than one window of %lld; every "
                     "run ends with an evaluation of it (convert the file with a larger "
                     "--val-fraction, or shorten model.context)",
                     e->tokens.path, (long long)have, (long long)window);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(e->name, tr->evals[j].name)) {
                snprintf(err, errlen,
                         "evaluation sets %s and %s are both of domain '%s', under which their "
                         "results are logged: list each domain once",
                         tr->evals[j].tokens.path, e->tokens.path, e->name);
                return false;
            }
    }
    return true;
}

static bool open_data(trainer *tr, char *err, size_t errlen) {
    ts_tf_err tf_err;
    ts_token_open_opts opts = {.expected_vocab = 0, .verify = true, .collective = false};
    if (ts_token_file_open(&tr->train, tr->config.train_data, tr->comm, &opts, &tf_err) !=
        TS_TF_OK) {
        snprintf(err, errlen, "training data: %s", tf_err.msg);
        return false;
    }
    tr->train_open = true;
    if (tr->config.model.vocab_size == 0) {
        tr->config.model.vocab_size = tr->train.meta.vocab_size;
    } else if (tr->config.model.vocab_size != tr->train.meta.vocab_size) {
        snprintf(err, errlen, "model.vocab_size is %d but %s has a vocabulary of %d",
                 tr->config.model.vocab_size, tr->config.train_data, tr->train.meta.vocab_size);
        return false;
    }
    /* Like the vocabulary size, the tokenizer comes from the training data
     * and goes into the stored configuration, where `thinkscale eval` finds it. */
    if (!tr->config.tokenizer[0])
        snprintf(tr->config.tokenizer, sizeof tr->config.tokenizer, "%s", tr->train.meta.tokenizer);
    else if (!ts_tokenizer_check_same(tr->config.tokenizer, tr->train.meta.tokenizer,
                                      tr->config.train_data, err, errlen))
        return false;
    int64_t need = tr->config.model.context + 1;
    if (ts_token_file_len(&tr->train, TS_SPLIT_TRAIN) < need) {
        snprintf(err, errlen, "%s: train split has %lld tokens, fewer than one window of %lld",
                 tr->config.train_data, (long long)ts_token_file_len(&tr->train, TS_SPLIT_TRAIN),
                 (long long)need);
        return false;
    }
    /* Windows start at multiples of data.align: an align near the split's
     * length leaves a handful of windows, which the run would repeat
     * silently (a record length typed with an extra digit). */
    int64_t starts = (ts_token_file_len(&tr->train, TS_SPLIT_TRAIN) - need) / tr->config.align + 1;
    if (starts < tr->config.batch && tr->rank == 0)
        fprintf(stderr,
                "thinkscale: warning: data.align=%ld leaves %lld distinct training windows in %s, "
                "fewer than one batch of %ld: every step repeats them\n",
                tr->config.align, (long long)starts, tr->config.train_data, tr->config.batch);
    /* The training domain's own validation split is always evaluated first. */
    eval_set *own = &tr->evals[tr->n_evals++];
    snprintf(own->name, sizeof own->name, "%s", domain_of(&tr->train, tr->config.train_data));
    own->tokens = tr->train;
    char buf[sizeof tr->config.eval_data];
    const char *paths[TS_MAX_EVAL_SETS];
    int n = ts_config_eval_paths(&tr->config, buf, sizeof buf, paths);
    opts.expected_vocab = tr->config.model.vocab_size;
    for (int i = 0; i < n; i++) {
        if (listed_before(paths, i, tr->config.train_data)) continue;
        eval_set *e = &tr->evals[tr->n_evals];
        if (ts_token_file_open(&e->tokens, paths[i], tr->comm, &opts, &tf_err) != TS_TF_OK) {
            snprintf(err, errlen, "evaluation data: %s", tf_err.msg);
            return false;
        }
        e->open = true;
        if (!ts_tokenizer_check_same(tr->config.tokenizer, e->tokens.meta.tokenizer, paths[i], err,
                                     errlen))
            return false;
        snprintf(e->name, sizeof e->name, "%s", domain_of(&e->tokens, paths[i]));
        tr->n_evals++;
    }
    return eval_sets_usable(tr, need, err, errlen);
}

static void close_all(trainer *tr) {
    for (int i = 0; i < tr->n_evals; i++)
        if (tr->evals[i].open) ts_token_file_close(&tr->evals[i].tokens);
    if (tr->train_open) ts_token_file_close(&tr->train);
    ts_run_state_close(&tr->state);
    ts_optimizer_free(&tr->optimizer);
    ts_parallel_free(&tr->parallel);
    ts_tensor_grid_free(&tr->grid);
    ts_model_destroy(tr->model);
    ts_ctx_free(&tr->ctx);
    free(tr->offsets);
    free(tr->tokens);
}

/* One optimiser step: every micro-batch's share on this rank, the gradient
 * reduced over ranks (parallel/strategy.h), global clipping, the update of
 * what this rank owns, the parameters gathered. Returns the global mean loss
 * (NaN propagates to every rank). */
static bool train_step(trainer *tr, double *loss_out, double *stats_out, double *grad_norm_out,
                       double *lr_out, char *err, size_t errlen) {
    const ts_run_config *c = &tr->config;
    ts_model *m = tr->model;
    ts_parallel *par = &tr->parallel;
    int seq = c->model.context;
    long micro = c->batch / c->accum;
    /* zero3: the full parameters for this step (released at its end). */
    if (ts_parallel_gather_model(par, m, true) != MPI_SUCCESS) {
        snprintf(err, errlen, "gathering the sharded parameters (zero3) failed at step %ld",
                 tr->step);
        return false;
    }
    ts_parallel_begin_step(par, m->grads);
    /* The loss, then the model's statistics, each a weighted share of the global mean. */
    double sums[1 + TS_MAX_MODEL_STATS] = {0};
    int n_stats = m->ops->n_stats;
    for (long a = 0; a < c->accum; a++) {
        long first, count;
        ts_parallel_batch_range(par, micro, &first, &count);
        if (count > 0) {
            ts_train_window_offsets((uint64_t)c->seed, tr->step, c->batch, a * micro + first, count,
                                    ts_token_file_len(&tr->train, TS_SPLIT_TRAIN), seq + 1,
                                    c->align, tr->offsets);
            ts_tf_err tf_err;
            if (ts_token_file_read_windows(&tr->train, TS_SPLIT_TRAIN, tr->offsets, (int)count,
                                           seq + 1, tr->tokens, &tf_err) != TS_TF_OK) {
                snprintf(err, errlen, "%s", tf_err.msg);
                return false;
            }
            ts_batch batch = {.tokens = tr->tokens,
                              .batch = (int)count,
                              .seq = seq,
                              .mode = TS_MODE_TRAIN,
                              .seed = (uint64_t)c->seed,
                              .step = tr->step,
                              .first_index = a * micro + first};
            double stats[TS_MAX_MODEL_STATS] = {0};
            /* Each rank's share of the global mean: the sum over ranks and
             * micro-batches is the mean over the whole batch, whatever the split. */
            double weight = (double)count / (double)c->batch;
            sums[0] += ts_train_micro_batch(m, &tr->ctx, &batch, weight, stats) * weight;
            for (int k = 0; k < n_stats; k++) sums[1 + k] += stats[k] * weight;
        }
        /* Collective (zero2 reduces here), so ranks without sequences take part. */
        if (ts_parallel_micro_batch_done(par, m->grads) != MPI_SUCCESS) {
            snprintf(err, errlen, "reducing the gradients of micro-batch %ld failed at step %ld", a,
                     tr->step);
            return false;
        }
    }
    ts_watchdog_note(&tr->watchdog, "the gradient reduction (a collective)");
    if (ts_parallel_reduce_gradients(par, m->grads) != MPI_SUCCESS ||
        ts_allreduce_sum_double(par->comm, sums, 1 + n_stats) != MPI_SUCCESS) {
        snprintf(err, errlen, "reducing the gradients (%s) failed at step %ld",
                 ts_parallel_strategy_name(par->strategy), tr->step);
        return false;
    }
    double loss_sum = sums[0];
    *loss_out = loss_sum;
    for (int k = 0; k < n_stats; k++) stats_out[k] = sums[1 + k];
    if (!isfinite(loss_sum)) {
        snprintf(err, errlen, "loss is %g at step %ld: stopping without writing a checkpoint",
                 loss_sum, tr->step);
        return false;
    }
    double lr = ts_learning_rate(&c->optim, tr->step);
    if (ts_parallel_clip(par, m->grads, c->optim.clip, grad_norm_out) != MPI_SUCCESS) {
        snprintf(err, errlen, "the global gradient norm failed at step %ld", tr->step);
        return false;
    }
    if (!isfinite(*grad_norm_out)) {
        snprintf(err, errlen,
                 "gradient norm is %g at step %ld: stopping without writing a "
                 "checkpoint",
                 *grad_norm_out, tr->step);
        return false;
    }
    ts_optimizer_step(&tr->optimizer, &m->table, m->params,
                      ts_parallel_owned_gradients(par, m->grads), lr);
    if (ts_parallel_gather_params(par, m->params) != MPI_SUCCESS) {
        snprintf(err, errlen, "gathering the parameters (%s) failed at step %ld",
                 ts_parallel_strategy_name(par->strategy), tr->step);
        return false;
    }
    /* zero3 releases after the step's evaluation or checkpoint, if any (the
     * caller), so one gather refreshes the parameters for both. */
    *lr_out = lr;
    return true;
}

static ts_parallel_strategy strategy_of(const ts_run_config *c) {
    ts_parallel_strategy strategy = TS_DDP;
    ts_parallel_strategy_parse(c->parallel.strategy, &strategy); /* validated with the config */
    return strategy;
}

/* parallel.memory_limit, checked from the parameter table alone (a model
 * without buffers), before any training state is allocated. */
static bool fits_memory_limit(trainer *tr, char *err, size_t errlen) {
    const ts_run_config *c = &tr->config;
    if (c->parallel.memory_limit <= 0) return true;
    ts_model *shape = ts_model_create_counting(&c->model, err, errlen);
    if (!shape) return false;
    /* Under a grid, the share of grid position (0, 0), which holds the most,
     * with the strategy across the groups. */
    int rows = 1, cols = 1, grid_rows, grid_cols;
    if (ts_parallel_tensor_grid(&c->parallel, &grid_rows, &grid_cols)) {
        rows = grid_rows;
        cols = grid_cols;
        ts_block_cyclic origin = {c->parallel.tensor_block, rows, cols, 0, 0};
        if (!ts_model_distribute(shape, &origin, err, errlen)) {
            ts_model_destroy(shape);
            return false;
        }
    }
    long total = shape->table.total, working = ts_parallel_working_elems(shape);
    ts_model_destroy(shape);
    int groups = tr->nranks / (rows * cols) > 0 ? tr->nranks / (rows * cols) : 1;
    return ts_parallel_fits(strategy_of(c), total, working, groups, sizeof(ts_real),
                            c->optim.kind == TS_ADAMW ? 2 : 0, c->parallel.memory_limit, err,
                            errlen);
}

/* What this invocation held and sent per rank, the largest over ranks. */
static ts_memory_record measure_memory(trainer *tr, long steps_run) {
    double parameters, gradients;
    ts_parallel_memory_held(&tr->parallel, &parameters, &gradients);
    ts_memory_record r = {
        .parameters_bytes = parameters,
        .gradients_bytes = gradients,
        .optimizer_bytes =
            (tr->optimizer.m ? 2.0 : 0.0) * (double)tr->optimizer.n * sizeof(ts_real),
        .activations_bytes = (double)tr->ctx.arena.high_water,
        .communicated_bytes_per_step =
            steps_run > 0 ? (tr->parallel.bytes_sent + tr->grid.bytes_sent) / (double)steps_run
                          : 0};
    MPI_Allreduce(MPI_IN_PLACE, &r, (int)(sizeof r / sizeof(double)), MPI_DOUBLE, MPI_MAX,
                  tr->comm);
    return r;
}

static bool evaluate_all(trainer *tr, char *err, size_t errlen) {
    const ts_run_config *c = &tr->config;
    ts_mllog_eval_start(&tr->mllog, tr->step);
    for (int i = 0; i < tr->n_evals; i++) {
        ts_eval_result r;
        long micro = c->batch / c->accum;
        long per_rank = (micro + tr->parallel.nranks - 1) / tr->parallel.nranks;
        if (!ts_evaluate(tr->parallel.comm, tr->model, &tr->ctx, &tr->evals[i].tokens,
                         TS_SPLIT_VALIDATION, c->model.context, c->align,
                         c->eval_batches * c->batch, per_rank, (uint64_t)c->seed, &r, err, errlen))
            return false;
        if (tr->rank == 0)
            printf("eval  step %ld | %-12s | loss %.4f | ppl %.3f | %ld tokens\n", tr->step,
                   tr->evals[i].name, r.loss, r.perplexity, r.tokens);
        if (!ts_run_state_log_eval(&tr->state, tr->step, tr->evals[i].name, &r, err, errlen))
            return false;
        tr->evals[i].last = r;
        ts_mllog_eval_result(&tr->mllog, tr->step, tr->evals[i].name, &r, i == 0);
    }
    ts_mllog_eval_stop(&tr->mllog, tr->step);
    return true;
}

static void format_duration(double seconds, char *buf, size_t len) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
}

/* The one-line summary and report.yaml (rank 0). */
static bool report_run(trainer *tr, ts_run_summary *s, char *err, size_t errlen) {
    const ts_provenance *prov = &tr->state.provenance;
    s->arch = tr->config.model.arch;
    s->run_dir = tr->config.run_dir;
    s->hostname = prov->hostname;
    s->blas_core = prov->blas_core;
    s->git_commit = prov->git_commit;
    s->params = ts_model_global_table(tr->model)->total;
    s->non_embedding_params = ts_model_non_embedding_params(tr->model);
    s->ranks = tr->nranks;
    s->nodes = prov->nodes;
    s->threads_per_rank = prov->threads_per_rank;
    s->batch = tr->config.batch;
    s->context = tr->config.model.context;
    s->last_step = tr->step;
    s->tokens_seen = tr->tokens_seen;
    s->peak_gflops_per_rank = tr->peak_gflops;
    s->peak_configured = tr->config.gemm_peak_gflops > 0;
    s->n_evals = tr->n_evals < TS_REPORT_MAX_EVALS ? tr->n_evals : TS_REPORT_MAX_EVALS;
    for (int i = 0; i < s->n_evals; i++) {
        s->eval_names[i] = tr->evals[i].name;
        s->eval_loss[i] = tr->evals[i].last.loss;
        s->eval_perplexity[i] = tr->evals[i].last.perplexity;
        s->eval_measured[i] = tr->evals[i].last.tokens > 0; /* zero until evaluated */
    }
    s->checkpoint_bytes = tr->state.last_checkpoint_bytes;
    s->checkpoint_bandwidth = tr->state.last_checkpoint_bandwidth;
    s->restored_bytes = tr->state.restored_bytes;
    s->restored_seconds = tr->state.restored_seconds;
    s->strategy = tr->config.parallel.strategy;
    if (tr->rank != 0) return true;
    ts_print_run_summary(stdout, s);
    return ts_write_run_report(s, err, errlen);
}

/* Collective. A resumed run that is already complete has nothing to write,
 * so a run directory it cannot write in (read-only storage: an archive, a
 * finished project space) is not an error: it says so and the caller exits
 * 0, as it does for a complete run anywhere (below, after the state is
 * loaded, which opens metrics.h5 for writing). The final checkpoint is not
 * verified here: on storage that cannot be written no older one could take
 * its place anyway. */
static bool complete_on_read_only_storage(trainer *tr) {
    const ts_run_config *c = &tr->config;
    int writable = tr->rank != 0 || access(c->run_dir, W_OK) == 0;
    MPI_Bcast(&writable, 1, MPI_INT, 0, tr->comm);
    if (writable) return false;
    char path[TS_CHECKPOINT_PATH_MAX], err[512];
    long step = -1;
    if (ts_checkpoint_find_latest(tr->comm, c->run_dir, path, sizeof path, &step, err,
                                  sizeof err) != TS_IO_OK ||
        step < c->steps)
        return false;
    if (tr->rank == 0)
        printf("thinkscale train: the run in %s is already complete (step %ld, train.steps %ld); "
               "nothing to do (its directory cannot be written: read-only, or no permission), "
               "files left as they were\n",
               c->run_dir, step, c->steps);
    return true;
}

static int run(trainer *tr, bool resume, const char *resume_from) {
    char err[1024] = "";
    const ts_run_config *c = &tr->config;
    if (!all_ok(tr, open_data(tr, err, sizeof err), err)) return 1;
    if (!all_ok(tr, fits_memory_limit(tr, err, sizeof err), err)) return 1;
    tr->model = ts_model_create(&tr->config.model, err, sizeof err);
    if (!all_ok(tr, tr->model != NULL, err)) return 1;
    ts_model *m = tr->model;
    ts_parallel_strategy strategy = strategy_of(c);
    /* Under tensor parallelism the strategy shares batches and gradients
     * across the groups, over grid.data (the whole job otherwise). */
    if (!all_ok(tr, ts_tensor_grid_from_config(&tr->grid, tr->comm, &c->parallel, err, sizeof err),
                err))
        return 1;
    /* Initialised whole (the 1-rank values for the seed), then, under a
     * grid, each rank keeps only its blocks of the linear weights
     * (models/model.h): the strategy and the optimiser size from the local
     * table, so they come after. */
    ts_model_init_params(m, (uint64_t)c->seed);
    if (tr->grid.enabled) {
        ts_block_cyclic layout = ts_tensor_grid_layout(&tr->grid);
        if (!all_ok(tr, ts_model_distribute(m, &layout, err, sizeof err), err)) return 1;
    }
    if (!all_ok(tr, ts_tensor_parallel_attach(m, &tr->tensor_parallel, &tr->grid, err, sizeof err),
                err))
        return 1;
    if (!all_ok(tr, ts_parallel_init(&tr->parallel, tr->grid.data, strategy, m, err, sizeof err),
                err))
        return 1;
    if (!all_ok(tr, ts_parallel_set_tensor_group(&tr->parallel, tr->grid.group, m, err, sizeof err),
                err))
        return 1;
    bool ok = ts_optimizer_init(&tr->optimizer, &c->optim, tr->parallel.owned, tr->parallel.n_owned,
                                strategy != TS_DDP);
    long micro = c->batch / c->accum;
    long max_local = (micro + tr->parallel.nranks - 1) / tr->parallel.nranks;
    tr->offsets = malloc((size_t)max_local * sizeof *tr->offsets);
    tr->tokens = malloc((size_t)max_local * (c->model.context + 1) * sizeof *tr->tokens);
    ok = ok && tr->offsets && tr->tokens;
    if (!all_ok(tr, ok, "out of memory for optimiser state or batch buffers")) return 1;
    ts_model_bind(m, &tr->ctx);
    /* zero2, zero3: the flat buffers move to the strategy's reserved memory
     * and the blocks' unit markers reach it (parallel/strategy.h). */
    if (!all_ok(tr, ts_parallel_adopt_model(&tr->parallel, m, &tr->ctx, err, sizeof err), err))
        return 1;

    if (resume && !resume_from && complete_on_read_only_storage(tr)) return 0;
    if (!all_ok(tr,
                ts_run_state_open(&tr->state, tr->comm, c, m, &tr->optimizer, &tr->parallel,
                                  &tr->grid, resume, resume_from, &tr->step, &tr->tokens_seen, err,
                                  sizeof err),
                err))
        return ts_run_state_failure_status(&tr->state);
    /* zero3 keeps only its shard of the initial or restored parameters. */
    ts_parallel_release_model(&tr->parallel, m);
    if (tr->step >= c->steps) {
        /* A resubmitted job (a Slurm chain, free-letters run again) must not
         * replace the finished run's report with an empty one, nor pay for
         * measuring the GEMM peak. */
        if (tr->rank == 0)
            printf("thinkscale train: the run in %s is already complete (step %ld, train.steps "
                   "%ld); nothing to do, report.yaml left as it was\n",
                   c->run_dir, tr->step, c->steps);
        return 0;
    }
    if (c->gemm_peak_gflops > 0) {
        tr->peak_gflops = c->gemm_peak_gflops; /* the same on every rank: no probe */
    } else {
        /* The largest over the ranks: each rank measures at the same moment,
         * and the one least disturbed by other processes is closest to the
         * peak. */
        double my_peak = ts_measure_peak_gflops();
        if (!all_ok(tr, my_peak > 0, "out of memory for the GEMM peak probe")) return 1;
        if (MPI_Allreduce(&my_peak, &tr->peak_gflops, 1, MPI_DOUBLE, MPI_MAX, tr->comm) !=
            MPI_SUCCESS)
            abort_job(tr, "MPI_Allreduce of the GEMM peak failed");
    }
    if (tr->rank == 0)
        printf("thinkscale train: %s, %ld parameters (%ld non-embedding), %d ranks, "
               "batch %ld x %d tokens, peak %.1f GFLOP/s per rank (%s), %s step %ld\n",
               c->model.arch, ts_model_global_table(m)->total, ts_model_non_embedding_params(m),
               tr->nranks, c->batch, c->model.context, tr->peak_gflops,
               ts_peak_source_name(c->gemm_peak_gflops > 0), resume ? "resuming at" : "from",
               tr->step);
    char blas_advice[400];
    if (tr->rank == 0 && ts_blas_core_advice_here(blas_advice, sizeof blas_advice))
        fprintf(stderr, "thinkscale train: warning: %s\n", blas_advice);
    ts_mllog_run_start(&tr->mllog, c, &tr->state.provenance, tr->step);
    if (tr->rank == 0 && tr->grid.enabled) {
        int blocked = 0;
        for (int i = 0; i < m->table.count; i++) blocked += ts_model_param_blocked(m, i);
        printf("tensor parallelism: %dx%d p?gemm grid per group of %d ranks, %d groups "
               "data-parallel; %d of %d tensors held as blocks, %ld of %ld parameters on this "
               "rank; activations %s\n",
               tr->grid.rows, tr->grid.cols, tr->grid.rows * tr->grid.cols, tr->parallel.nranks,
               blocked, m->table.count, m->table.total, ts_model_global_table(m)->total,
               tr->grid.distributed_activations ? "distributed" : "replicated");
    }

    long first_step = tr->step;
    double t_start = MPI_Wtime(), t_window = t_start, t_checkpoint = t_start;
    ts_run_summary summary = {.first_step = first_step, .first_loss = NAN, .last_loss = NAN};
    double flops_window = 0, tokens_window = 0;
    while (tr->step < c->steps) {
        ts_watchdog_enter(&tr->watchdog, TS_WATCH_STEP, tr->step + 1,
                          "the forward and backward passes");
        double t0 = MPI_Wtime(), flops0 = ts_flops_total(&tr->ctx);
        double collective0 = tr->parallel.collective_seconds;
        double loss = 0, grad_norm = 0, lr = 0, stats[TS_MAX_MODEL_STATS] = {0};
        ok = train_step(tr, &loss, stats, &grad_norm, &lr, err, sizeof err);
        if (!all_ok(tr, ok, err)) return 3;
        /* The step's one small reduction also carries, per stop signal, how
         * many ranks received it (a signal may reach only some: srun and
         * mpirun forward it, a user may signal one rank), and rank 0's
         * wall-clock checkpoint decision, so every rank acts alike. */
        double shared[STEP_SHARED_COUNT] = {[STEP_SHARED_FLOPS] = ts_flops_total(&tr->ctx) - flops0,
                                            [STEP_SHARED_COLLECTIVE] =
                                                tr->parallel.collective_seconds - collective0};
        int received = ts_stop_signal_received();
        for (int i = 0; i < TS_STOP_SIGNAL_COUNT; i++)
            shared[STEP_SHARED_SIGNALS + i] = received && received == ts_stop_signal_number(i);
        shared[STEP_SHARED_TIME_DUE] = tr->rank == 0 && c->checkpoint_minutes > 0 &&
                                       MPI_Wtime() - t_checkpoint >= 60 * c->checkpoint_minutes;
        ts_watchdog_note(&tr->watchdog,
                         "the step's reduction of FLOPs and stop flags (a collective)");
        ok = ts_allreduce_sum_double(tr->comm, shared, STEP_SHARED_COUNT) == MPI_SUCCESS;
        if (!all_ok(tr, ok, "MPI_Allreduce of the step's FLOPs and stop flags failed")) return 1;
        double step_flops = shared[STEP_SHARED_FLOPS];
        int stop_signal = 0;
        for (int i = 0; i < TS_STOP_SIGNAL_COUNT; i++)
            if (shared[STEP_SHARED_SIGNALS + i] > 0) stop_signal = ts_stop_signal_number(i);
        double step_tokens = (double)c->batch * c->model.context;
        tr->step++;
        tr->tokens_seen += step_tokens;
        flops_window += step_flops;
        tokens_window += step_tokens;
        double now = MPI_Wtime(), step_time = now - t0;
        if (tr->step == first_step + 1) summary.first_loss = loss;
        summary.last_loss = loss;
        summary.step_seconds += step_time;
        summary.flops += step_flops;
        ts_step_record rec = {.step = tr->step,
                              .tokens = tr->tokens_seen,
                              .loss = loss,
                              .lr = lr,
                              .grad_norm = grad_norm,
                              .wall_time = now - t_start,
                              .flops = step_flops,
                              .tokens_per_s = step_tokens / step_time,
                              .mfu = step_flops / step_time / (tr->peak_gflops * 1e9 * tr->nranks),
                              .collective_seconds = shared[STEP_SHARED_COLLECTIVE] / tr->nranks};
        ok = ts_run_state_log_step(&tr->state, &rec, stats, err, sizeof err);
        if (!all_ok(tr, ok, err)) return ts_run_state_failure_status(&tr->state);
        if (tr->rank == 0 && (tr->step % c->log_every == 0 || tr->step == c->steps)) {
            double dt = now - t_window;
            char eta[32];
            format_duration((double)(c->steps - tr->step) * (now - t_start) /
                                (double)(tr->step - first_step),
                            eta, sizeof eta);
            printf("step %6ld/%ld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %.1f%% | "
                   "ETA %s\n",
                   tr->step, c->steps, loss, lr, grad_norm, tokens_window / dt,
                   100 * flops_window / dt / (tr->peak_gflops * 1e9 * tr->nranks), eta);
            fflush(stdout);
            t_window = now;
            flops_window = tokens_window = 0;
        } else if (tr->step % c->log_every == 0) {
            t_window = now;
            flops_window = tokens_window = 0;
        }
        bool last = tr->step == c->steps;
        bool stopping = c->stop_at > 0 && tr->step == c->stop_at && !last;
        bool interrupted = stop_signal && !last; /* at the last step the run is simply complete */
        bool time_due = shared[STEP_SHARED_TIME_DUE] > 0;
        bool evaluate = (c->eval_every && tr->step % c->eval_every == 0) || last;
        bool checkpoint = (c->checkpoint_every && tr->step % c->checkpoint_every == 0) || last ||
                          stopping || interrupted || time_due;
        /* zero3: evaluation and checkpoints see the full parameters, gathered
         * once for both. */
        if (evaluate || checkpoint) {
            ok = ts_parallel_gather_model(&tr->parallel, m, false) == MPI_SUCCESS;
            if (!all_ok(tr, ok, "gathering the sharded parameters (zero3) failed")) return 1;
        }
        if (evaluate) {
            ts_watchdog_enter(&tr->watchdog, TS_WATCH_EVAL, tr->step,
                              "the forward passes and reductions of the evaluation sets");
            ok = evaluate_all(tr, err, sizeof err);
            if (!all_ok(tr, ok, err)) return ts_run_state_failure_status(&tr->state);
        }
        if (checkpoint) {
            ts_watchdog_enter(&tr->watchdog, TS_WATCH_CHECKPOINT, tr->step,
                              "the checkpoint write (collective HDF5 I/O)");
            ok = ts_run_state_checkpoint(&tr->state, tr->step, tr->tokens_seen, err, sizeof err);
            if (!all_ok(tr, ok, err)) return ts_run_state_failure_status(&tr->state);
            t_checkpoint = MPI_Wtime();
        }
        ts_parallel_release_model(&tr->parallel, m);
        if (interrupted) {
            summary.stop_signal = ts_stop_signal_name(stop_signal);
            if (tr->rank == 0)
                printf("interrupted by %s at step %ld of %ld: checkpoint written, exit status %d; "
                       "continue with --resume\n",
                       summary.stop_signal, tr->step, c->steps, TS_TRAIN_EXIT_INTERRUPTED);
            break;
        }
        if (stopping) {
            summary.stopped_at = true;
            if (tr->rank == 0)
                printf("stopped at step %ld of %ld (train.stop_at): continue with --resume\n",
                       tr->step, c->steps);
            break;
        }
    }
    ts_watchdog_idle(&tr->watchdog);
    summary.wall_seconds = MPI_Wtime() - t_start;
    ts_memory_record memory = measure_memory(tr, tr->step - first_step);
    summary.parameters_bytes = memory.parameters_bytes;
    summary.gradients_bytes = memory.gradients_bytes;
    summary.optimizer_bytes = memory.optimizer_bytes;
    summary.activations_bytes = memory.activations_bytes;
    summary.communicated_bytes_per_step = memory.communicated_bytes_per_step;
    ok = ts_run_state_log_memory(&tr->state, tr->step, &memory, err, sizeof err);
    if (!all_ok(tr, ok, err)) return ts_run_state_failure_status(&tr->state);
    if (summary.stop_signal) summary.exit_status = TS_TRAIN_EXIT_INTERRUPTED;
    ok = report_run(tr, &summary, err, sizeof err);
    return all_ok(tr, ok, err) ? summary.exit_status : 1;
}

int ts_train(MPI_Comm comm, const ts_run_config *config, bool resume) {
    return ts_train_resume_from(comm, config, resume, NULL);
}

int ts_train_resume_from(MPI_Comm comm, const ts_run_config *config, bool resume,
                         const char *checkpoint) {
    trainer tr = {.comm = comm, .config = *config};
    ts_tensor_grid_disabled(&tr.grid, comm);
    MPI_Comm_rank(comm, &tr.rank);
    MPI_Comm_size(comm, &tr.nranks);
    if (!ts_ctx_init(&tr.ctx, 0)) {
        fprintf(stderr, "thinkscale: out of memory creating the engine context\n");
        return 1;
    }
    ts_ctx_set_error_handler(&tr.ctx, abort_job, &tr);
    ts_stop_signals signals;
    if (!all_ok(&tr, ts_stop_signals_install(&signals),
                "cannot install the SIGTERM/SIGUSR1 handlers")) {
        ts_ctx_free(&tr.ctx);
        return 1;
    }
    ts_mllog_init_start(&tr.mllog, comm);
    if (!ts_watchdog_start(&tr.watchdog, comm, tr.rank, config->watchdog_seconds) && tr.rank == 0)
        fprintf(stderr,
                "thinkscale: warning: cannot start the watchdog thread; training unwatched\n");
    int status = run(&tr, resume || checkpoint, checkpoint);
    ts_watchdog_stop(&tr.watchdog);
    ts_mllog_run_stop(&tr.mllog, tr.step, status);
    close_all(&tr);
    ts_stop_signals_restore(&signals);
    return status;
}
