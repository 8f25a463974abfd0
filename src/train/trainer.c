#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/token_file.h"
#include "parallel/data_parallel.h"
#include "train/batches.h"
#include "train/evaluate.h"
#include "train/machine_peak.h"
#include "train/micro_batch.h"
#include "train/optimizer.h"
#include "train/run_report.h"
#include "train/run_state.h"

typedef struct eval_set {
    char name[64];
    ts_token_file tokens;
    bool open;
    ts_eval_result last;  /* the latest evaluation */
} eval_set;

typedef struct trainer {
    MPI_Comm comm;
    int rank, nranks;
    ts_run_config config;
    ts_model *model;
    ts_optimizer optimizer;
    ts_ctx ctx;
    ts_token_file train;
    bool train_open;
    eval_set evals[TS_MAX_EVAL_SETS + 1];
    int n_evals;
    long step;             /* steps completed */
    double tokens_seen;
    double peak_gflops;    /* per rank, the MFU denominator */
    int64_t *offsets;
    int32_t *tokens;
    ts_rng rng;            /* model-level randomness (checkpointed) */
    ts_run_state state;    /* metrics and checkpoints */
} trainer;

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
    int64_t need = tr->config.model.context + 1;
    if (ts_token_file_len(&tr->train, TS_SPLIT_TRAIN) < need) {
        snprintf(err, errlen, "%s: train split has %lld tokens, fewer than one window of %lld",
                 tr->config.train_data, (long long)ts_token_file_len(&tr->train, TS_SPLIT_TRAIN),
                 (long long)need);
        return false;
    }
    /* The training domain's own validation split is always evaluated first. */
    eval_set *own = &tr->evals[tr->n_evals++];
    snprintf(own->name, sizeof own->name, "%s", domain_of(&tr->train, tr->config.train_data));
    own->tokens = tr->train;
    char buf[sizeof tr->config.eval_data];
    const char *paths[TS_MAX_EVAL_SETS];
    int n = ts_config_eval_paths(&tr->config, buf, sizeof buf, paths);
    opts.expected_vocab = tr->config.model.vocab_size;
    for (int i = 0; i < n; i++) {
        if (!strcmp(paths[i], tr->config.train_data)) continue;
        eval_set *e = &tr->evals[tr->n_evals];
        if (ts_token_file_open(&e->tokens, paths[i], tr->comm, &opts, &tf_err) != TS_TF_OK) {
            snprintf(err, errlen, "evaluation data: %s", tf_err.msg);
            return false;
        }
        e->open = true;
        snprintf(e->name, sizeof e->name, "%s", domain_of(&e->tokens, paths[i]));
        tr->n_evals++;
    }
    return true;
}

static void close_all(trainer *tr) {
    for (int i = 0; i < tr->n_evals; i++)
        if (tr->evals[i].open) ts_token_file_close(&tr->evals[i].tokens);
    if (tr->train_open) ts_token_file_close(&tr->train);
    ts_run_state_close(&tr->state);
    ts_optimizer_free(&tr->optimizer);
    ts_model_destroy(tr->model);
    ts_ctx_free(&tr->ctx);
    free(tr->offsets);
    free(tr->tokens);
}

/* One optimiser step: every micro-batch's shard on this rank, one
 * all-reduce of the flat gradients, clipping, the update. Returns the
 * global mean loss (NaN propagates to every rank). */
static bool train_step(trainer *tr, double *loss_out, double *stats_out, double *grad_norm_out,
                       double *lr_out, char *err, size_t errlen) {
    const ts_run_config *c = &tr->config;
    ts_model *m = tr->model;
    int seq = c->model.context;
    long micro = c->batch / c->accum;
    memset(m->grads, 0, (size_t)m->table.total * sizeof *m->grads);
    /* The loss, then the model's statistics, each a weighted share of the global mean. */
    double sums[1 + TS_MAX_MODEL_STATS] = {0};
    int n_stats = m->ops->n_stats;
    for (long a = 0; a < c->accum; a++) {
        long first, count;
        ts_shard_range(micro, tr->rank, tr->nranks, &first, &count);
        if (count == 0) continue;
        ts_train_window_offsets((uint64_t)c->seed, tr->step, c->batch, a * micro + first, count,
                                ts_token_file_len(&tr->train, TS_SPLIT_TRAIN), seq + 1,
                                c->align, tr->offsets);
        ts_tf_err tf_err;
        if (ts_token_file_read_windows(&tr->train, TS_SPLIT_TRAIN, tr->offsets, (int)count,
                                       seq + 1, tr->tokens, &tf_err) != TS_TF_OK) {
            snprintf(err, errlen, "%s", tf_err.msg);
            return false;
        }
        ts_batch batch = {.tokens = tr->tokens, .batch = (int)count, .seq = seq,
                          .mode = TS_MODE_TRAIN, .seed = (uint64_t)c->seed, .step = tr->step,
                          .first_index = a * micro + first};
        double stats[TS_MAX_MODEL_STATS] = {0};
        /* Each rank's share of the global mean: the sum over ranks and
         * micro-batches is the mean over the whole batch, whatever the split. */
        double weight = (double)count / (double)c->batch;
        sums[0] += ts_train_micro_batch(m, &tr->ctx, &batch, weight, stats) * weight;
        for (int k = 0; k < n_stats; k++) sums[1 + k] += stats[k] * weight;
    }
    if (ts_allreduce_sum(tr->comm, m->grads, m->table.total) != MPI_SUCCESS ||
        ts_allreduce_sum_double(tr->comm, sums, 1 + n_stats) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Allreduce of gradients failed at step %ld", tr->step);
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
    *grad_norm_out = ts_clip_grad_norm(m->grads, m->table.total, c->optim.clip);
    if (!isfinite(*grad_norm_out)) {
        snprintf(err, errlen, "gradient norm is %g at step %ld: stopping without writing a "
                 "checkpoint", *grad_norm_out, tr->step);
        return false;
    }
    ts_optimizer_step(&tr->optimizer, &m->table, m->params, m->grads, lr);
    *lr_out = lr;
    return true;
}

static bool evaluate_all(trainer *tr, char *err, size_t errlen) {
    const ts_run_config *c = &tr->config;
    for (int i = 0; i < tr->n_evals; i++) {
        ts_eval_result r;
        long micro = c->batch / c->accum;
        long per_rank = (micro + tr->nranks - 1) / tr->nranks;
        if (!ts_evaluate(tr->comm, tr->model, &tr->ctx, &tr->evals[i].tokens, TS_SPLIT_VALIDATION,
                         c->model.context, c->align, c->eval_batches * c->batch, per_rank,
                         (uint64_t)c->seed, &r, err, errlen))
            return false;
        if (tr->rank == 0)
            printf("eval  step %ld | %-12s | loss %.4f | ppl %.3f | %ld tokens\n", tr->step,
                   tr->evals[i].name, r.loss, r.perplexity, r.tokens);
        if (!ts_run_state_log_eval(&tr->state, tr->step, tr->evals[i].name, &r, err, errlen))
            return false;
        tr->evals[i].last = r;
    }
    return true;
}

static void format_duration(double seconds, char *buf, size_t len) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
}

/* The one-line summary and report.yaml (rank 0). */
static bool report_run(trainer *tr, ts_run_summary *s, char *err, size_t errlen) {
    const ts_provenance *prov = &tr->state.provenance;
    s->arch = tr->config.model.arch;
    s->run_dir = tr->config.run_dir;
    s->hostname = prov->hostname;
    s->git_commit = prov->git_commit;
    s->params = tr->model->table.total;
    s->non_embedding_params = ts_model_non_embedding_params(tr->model);
    s->ranks = tr->nranks;
    s->nodes = prov->nodes;
    s->threads_per_rank = prov->threads_per_rank;
    s->batch = tr->config.batch;
    s->context = tr->config.model.context;
    s->last_step = tr->step;
    s->tokens_seen = tr->tokens_seen;
    s->peak_gflops_per_rank = tr->peak_gflops;
    s->n_evals = tr->n_evals < TS_REPORT_MAX_EVALS ? tr->n_evals : TS_REPORT_MAX_EVALS;
    for (int i = 0; i < s->n_evals; i++) {
        s->eval_names[i] = tr->evals[i].name;
        s->eval_loss[i] = tr->evals[i].last.loss;
        s->eval_perplexity[i] = tr->evals[i].last.perplexity;
    }
    s->checkpoint_bytes = tr->state.last_checkpoint_bytes;
    s->checkpoint_bandwidth = tr->state.last_checkpoint_bandwidth;
    if (tr->rank != 0) return true;
    ts_print_run_summary(stdout, s);
    return ts_write_run_report(s, err, errlen);
}

static int run(trainer *tr, bool resume) {
    char err[1024] = "";
    const ts_run_config *c = &tr->config;
    if (!all_ok(tr, open_data(tr, err, sizeof err), err)) return 1;
    tr->model = ts_model_create(&tr->config.model, err, sizeof err);
    if (!all_ok(tr, tr->model != NULL, err)) return 1;
    ts_model *m = tr->model;
    bool ok = ts_optimizer_init(&tr->optimizer, &c->optim, m->table.total);
    long micro = c->batch / c->accum, max_local = (micro + tr->nranks - 1) / tr->nranks;
    tr->offsets = malloc((size_t)max_local * sizeof *tr->offsets);
    tr->tokens = malloc((size_t)max_local * (c->model.context + 1) * sizeof *tr->tokens);
    ok = ok && tr->offsets && tr->tokens;
    if (!all_ok(tr, ok, "out of memory for optimiser state or batch buffers")) return 1;
    ts_model_init_params(m, (uint64_t)c->seed);
    ts_model_bind(m, &tr->ctx);

    ts_rng_seed(&tr->rng, (uint64_t)c->seed);
    if (!all_ok(tr, ts_run_state_open(&tr->state, tr->comm, c, m, &tr->optimizer, &tr->rng, resume,
                                      &tr->step, &tr->tokens_seen, err, sizeof err),
                err))
        return 1;
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
    tr->peak_gflops = ts_measure_peak_gflops();
    if (tr->rank == 0)
        printf("thinkscale train: %s, %ld parameters (%ld non-embedding), %d ranks, "
               "batch %ld x %d tokens, peak %.1f GFLOP/s per rank, %s step %ld\n",
               c->model.arch, m->table.total, ts_model_non_embedding_params(m), tr->nranks,
               c->batch, c->model.context, tr->peak_gflops, resume ? "resuming at" : "from",
               tr->step);

    long first_step = tr->step;
    double t_start = MPI_Wtime(), t_window = t_start;
    ts_run_summary summary = {.first_step = first_step, .first_loss = NAN, .last_loss = NAN};
    double flops_window = 0, tokens_window = 0;
    while (tr->step < c->steps) {
        double t0 = MPI_Wtime(), flops0 = ts_flops_total(&tr->ctx);
        double loss = 0, grad_norm = 0, lr = 0, stats[TS_MAX_MODEL_STATS] = {0};
        ok = train_step(tr, &loss, stats, &grad_norm, &lr, err, sizeof err);
        if (!all_ok(tr, ok, err)) return 3;
        double step_flops = ts_flops_total(&tr->ctx) - flops0;
        ts_allreduce_sum_double(tr->comm, &step_flops, 1);
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
        ts_step_record rec = {tr->step, tr->tokens_seen, loss, lr, grad_norm, now - t_start,
                              step_flops, step_tokens / step_time,
                              step_flops / step_time / (tr->peak_gflops * 1e9 * tr->nranks)};
        ok = ts_run_state_log_step(&tr->state, &rec, stats, err, sizeof err);
        if (!all_ok(tr, ok, err)) return 1;
        if (tr->rank == 0 && (tr->step % c->log_every == 0 || tr->step == c->steps)) {
            double dt = now - t_window;
            char eta[32];
            format_duration((double)(c->steps - tr->step) * (now - t_start) /
                                (double)(tr->step - first_step), eta, sizeof eta);
            printf("step %6ld/%ld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s\n",
                   tr->step, c->steps, loss, lr, grad_norm, tokens_window / dt,
                   100 * flops_window / dt / (tr->peak_gflops * 1e9 * tr->nranks), eta);
            fflush(stdout);
            t_window = now;
            flops_window = tokens_window = 0;
        } else if (tr->step % c->log_every == 0) {
            t_window = now;
            flops_window = tokens_window = 0;
        }
        bool stopping = c->stop_at > 0 && tr->step == c->stop_at && tr->step < c->steps;
        bool last = tr->step == c->steps;
        if ((c->eval_every && tr->step % c->eval_every == 0) || last) {
            ok = evaluate_all(tr, err, sizeof err);
            if (!all_ok(tr, ok, err)) return 1;
        }
        if ((c->checkpoint_every && tr->step % c->checkpoint_every == 0) || last || stopping) {
            ok = ts_run_state_checkpoint(&tr->state, tr->step, tr->tokens_seen, err, sizeof err);
            if (!all_ok(tr, ok, err)) return 1;
        }
        if (stopping) {
            if (tr->rank == 0)
                printf("stopped at step %ld of %ld (train.stop_at): continue with --resume\n",
                       tr->step, c->steps);
            break;
        }
    }
    summary.wall_seconds = MPI_Wtime() - t_start;
    ok = report_run(tr, &summary, err, sizeof err);
    return all_ok(tr, ok, err) ? 0 : 1;
}

int ts_train(MPI_Comm comm, const ts_run_config *config, bool resume) {
    trainer tr = {.comm = comm, .config = *config};
    MPI_Comm_rank(comm, &tr.rank);
    MPI_Comm_size(comm, &tr.nranks);
    if (!ts_ctx_init(&tr.ctx, 0)) {
        fprintf(stderr, "thinkscale: out of memory creating the engine context\n");
        return 1;
    }
    ts_ctx_set_error_handler(&tr.ctx, abort_job, &tr);
    int status = run(&tr, resume);
    close_all(&tr);
    return status;
}
