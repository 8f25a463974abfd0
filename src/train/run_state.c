#include "train/run_state.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/h5_toolkit.h"
#include "io/metrics.h"
#include "parallel/tensor_layout.h"

/* Each metrics table is defined once: its columns (name, units,
 * description) with where each value comes from, so the columns written and
 * the values appended cannot drift apart. */

/* Tables of a record's doubles: one column per field, named as the field. */
typedef struct field_column {
    ts_metric_column column;
    size_t offset; /* of the value in its record */
} field_column;
#define FIELD_COLUMN(record, field, units, description)                                            \
    { {#field, units, description}, offsetof(record, field) }
#define STEP_COLUMN(field, units, description)                                                     \
    FIELD_COLUMN(ts_step_record, field, units, description)

/* The values of a record, in the order of its columns. */
static void field_values(const field_column *columns, int n, const void *record, double *values) {
    for (int c = 0; c < n; c++)
        values[c] = *(const double *)((const char *)record + columns[c].offset);
}

/* train: one column per double of ts_step_record. */
static const field_column train_columns[] = {
    STEP_COLUMN(tokens, "tokens", "training tokens consumed, all ranks"),
    STEP_COLUMN(loss, "nats/token", "mean training cross-entropy of the step's batch"),
    STEP_COLUMN(lr, "1", "learning rate of the step"),
    STEP_COLUMN(grad_norm, "1", "global gradient norm before clipping"),
    STEP_COLUMN(wall_time, "s", "seconds since this start of the run"),
    STEP_COLUMN(flops, "FLOP", "floating-point operations executed in the step, all ranks"),
    STEP_COLUMN(tokens_per_s, "tokens/s", "training throughput of the step"),
    STEP_COLUMN(mfu, "1", "executed FLOP/s over the measured GEMM peak of all ranks"),
    STEP_COLUMN(collective_seconds, "s",
                "seconds of the step inside the data-parallel collectives (gradient reductions, "
                "ZeRO-3 gathers and their waits, the gradient norm), waiting for slower ranks "
                "included; mean over ranks"),
};

/* memory: one row per invocation, at its last step. */
#define MEMORY_COLUMN(field, units, description)                                                   \
    FIELD_COLUMN(ts_memory_record, field, units, description)
static const field_column memory_columns[] = {
    MEMORY_COLUMN(parameters_bytes, "B", "parameters held by one rank (largest over ranks)"),
    MEMORY_COLUMN(gradients_bytes, "B", "gradient buffers held by one rank (largest over ranks)"),
    MEMORY_COLUMN(optimizer_bytes, "B", "optimiser moments held by one rank (largest over ranks)"),
    MEMORY_COLUMN(activations_bytes, "B",
                  "engine arena high water of one rank: activations and graph (largest)"),
    MEMORY_COLUMN(communicated_bytes_per_step, "B",
                  "collective payload one rank sent per training step (largest over ranks)"),
};

/* eval/SET: an evaluation result, then the model's statistics. */
static double eval_loss(const ts_eval_result *r) {
    return r->loss;
}
static double eval_perplexity(const ts_eval_result *r) {
    return r->perplexity;
}
static double eval_tokens(const ts_eval_result *r) {
    return (double)r->tokens;
}
static const struct {
    ts_metric_column column;
    double (*value)(const ts_eval_result *result);
} eval_columns[] = {
    {{"loss", "nats/token", "mean validation cross-entropy"}, eval_loss},
    {{"perplexity", "1", "exp(loss)"}, eval_perplexity},
    {{"tokens", "tokens", "targets scored"}, eval_tokens},
};

/* checkpoint: what a checkpoint write reports. */
static double checkpoint_bytes(const ts_checkpoint_report *r) {
    return (double)r->bytes;
}
static double checkpoint_io_seconds(const ts_checkpoint_report *r) {
    return r->io_seconds;
}
static double checkpoint_bandwidth(const ts_checkpoint_report *r) {
    return r->bandwidth;
}
static const struct {
    ts_metric_column column;
    double (*value)(const ts_checkpoint_report *report);
} checkpoint_columns[] = {
    {{"bytes", "B", "checkpoint file size"}, checkpoint_bytes},
    {{"io_seconds", "s", "HDF5 write time of the slowest rank"}, checkpoint_io_seconds},
    {{"bandwidth", "B/s", "bytes / io_seconds"}, checkpoint_bandwidth},
};
#define COUNT(a) (int)(sizeof a / sizeof a[0])
/* The column descriptions of a table above, for ts_metrics_define. */
#define COLUMNS_OF(table, out)                                                                     \
    do {                                                                                           \
        for (int c_ = 0; c_ < COUNT(table); c_++) (out)[c_] = (table)[c_].column;                  \
    } while (0)
#define MAX_ROLES 16

/* Appends the model's statistics to out after its n_fixed columns. */
static int with_model_stats(int n_fixed, const ts_model *model, ts_metric_column *out) {
    const ts_model_ops *ops = model->ops;
    for (int k = 0; k < ops->n_stats; k++)
        out[n_fixed + k] =
            (ts_metric_column){ops->stats[k].name, ops->stats[k].units, ops->stats[k].description};
    return n_fixed + ops->n_stats;
}

/* The parameters and moments as a checkpoint stores them. Parameters: the
 * model's buffer, or, when tensor parallelism holds the model distributed
 * (model->layout), a whole staged copy gathered over the group (the file
 * has the ordinary layout and never knows about the grid). Moments: this
 * rank's checkpoint range of each (ts_parallel_checkpoint_range); when the
 * rank owns that range (ddp, zero1) they are the optimiser's own arrays;
 * when it owns a slice of every unit (zero2, zero3) they are staged in
 * buffers of the range and exchanged with the other ranks
 * (ts_parallel_exchange_checkpoint_range); under a distributed model they
 * are staged whole like the parameters (zero1/2/3: a grid position's
 * shards gathered over the data-parallel ranks first). So the file's layout
 * never depends on the strategy or the grid. */
typedef struct state_arrays {
    ts_real *params, *m, *v;
    bool staged_moments, staged_params;
} state_arrays;

/* Every rank's allocation outcome over comm, so all enter the exchange or none. */
static bool all_allocated_on(MPI_Comm comm, bool ok) {
    int flag = ok;
    return MPI_Allreduce(MPI_IN_PLACE, &flag, 1, MPI_INT, MPI_LAND, comm) == MPI_SUCCESS && flag;
}

static bool all_allocated(const ts_run_state *s, bool ok) {
    return all_allocated_on(s->parallel->comm, ok);
}

/* One moment of a distributed model made whole (into whole) from the
 * optimiser's array: under zero1/2/3 (sharded across the groups over the
 * data-parallel communicator) first the grid position's owned ranges are
 * gathered into its local layout, then the group's blocks into the whole
 * tensors. Collective over the job. */
static bool whole_moment(ts_run_state *s, const ts_real *live, ts_real *whole) {
    if (!s->optimizer->sharded)
        return ts_tensor_gather_flat(s->grid, s->model, live, whole) == MPI_SUCCESS;
    ts_real *local =
        malloc((size_t)(s->model->table.total > 0 ? s->model->table.total : 1) * sizeof *local);
    bool ok = all_allocated_on(s->comm, local != NULL) &&
              ts_parallel_gather_owned(s->parallel, live, local) == MPI_SUCCESS;
    ok = all_allocated_on(s->comm, ok) &&
         ts_tensor_gather_flat(s->grid, s->model, local, whole) == MPI_SUCCESS;
    free(local);
    return ok;
}

/* Whole staged copies of the parameters and moments of a distributed
 * model, gathered from the live ones with from_live. Collective over the
 * job. */
static bool whole_open(ts_run_state *s, state_arrays *a, bool from_live) {
    const ts_optimizer *opt = s->optimizer;
    size_t n = (size_t)(ts_model_global_table(s->model)->total);
    n = n > 0 ? n : 1;
    a->params = malloc(n * sizeof *a->params);
    a->staged_params = true;
    bool ok = a->params != NULL;
    if (opt->m) {
        a->m = malloc(n * sizeof *a->m);
        a->v = malloc(n * sizeof *a->v);
        a->staged_moments = true;
        ok = ok && a->m && a->v;
    }
    ok = all_allocated_on(s->comm, ok);
    if (ok && from_live) {
        const ts_model *m = s->model;
        ok = ts_tensor_gather_flat(s->grid, m, m->params, a->params) == MPI_SUCCESS &&
             (!opt->m || (whole_moment(s, opt->m, a->m) && whole_moment(s, opt->v, a->v)));
    }
    return all_allocated_on(s->comm, ok);
}

/* A distributed model's moment (whole) into the optimiser's array: this
 * rank's blocks and whole tensors, then (sharded) its owned ranges of
 * them. Local. */
static bool scatter_moment(ts_run_state *s, const ts_real *whole, ts_real *live) {
    if (!s->optimizer->sharded) {
        ts_tensor_scatter_flat(s->model, whole, live);
        return true;
    }
    ts_real *local =
        malloc((size_t)(s->model->table.total > 0 ? s->model->table.total : 1) * sizeof *local);
    if (!local) return false;
    ts_tensor_scatter_flat(s->model, whole, local);
    ts_parallel_take_owned(s->parallel, local, live);
    free(local);
    return true;
}

static bool state_close(ts_run_state *s, state_arrays *a, bool into_live);

/* state_open's work, leaving what it staged on failure. */

static bool state_open_any(ts_run_state *s, state_arrays *a, bool from_live) {
    const ts_optimizer *opt = s->optimizer;
    *a = (state_arrays){.params = s->model->params, .m = opt->m, .v = opt->v};
    if (s->model->layout) return whole_open(s, a, from_live); /* moments whole too */
    if (!opt->m || !opt->sharded || ts_parallel_owned_is_checkpoint_range(s->parallel))
        return true; /* the same decision on every rank: it depends on the layout only */
    long first, count;
    ts_parallel_checkpoint_range(s->parallel, s->parallel->rank, &first, &count);
    size_t n = (size_t)(count > 0 ? count : 1);
    a->m = malloc(n * sizeof *a->m);
    a->v = malloc(n * sizeof *a->v);
    a->staged_moments = true;
    bool ok = all_allocated(s, a->m && a->v);
    if (ok && from_live)
        ok =
            ts_parallel_exchange_checkpoint_range(s->parallel, opt->m, a->m, true) == MPI_SUCCESS &&
            ts_parallel_exchange_checkpoint_range(s->parallel, opt->v, a->v, true) == MPI_SUCCESS;
    return all_allocated(s, ok);
}

/* Frees staged arrays; into_live first moves them back into the model and
 * the optimiser (after a restore). False if that exchange failed. */
static bool state_close(ts_run_state *s, state_arrays *a, bool into_live) {
    bool ok = true;
    ts_optimizer *opt = s->optimizer;
    if (into_live && s->model->layout) { /* pure copies: this rank's blocks and the whole rest */
        ts_tensor_scatter_flat(s->model, a->params, s->model->params);
        if (opt->m) ok = scatter_moment(s, a->m, opt->m) && scatter_moment(s, a->v, opt->v);
    } else if (a->staged_moments && into_live) {
        ok = ts_parallel_exchange_checkpoint_range(s->parallel, opt->m, a->m, false) ==
                 MPI_SUCCESS &&
             ts_parallel_exchange_checkpoint_range(s->parallel, opt->v, a->v, false) == MPI_SUCCESS;
    }
    if (a->staged_params) free(a->params);
    if (a->staged_moments) {
        free(a->m);
        free(a->v);
    }
    *a = (state_arrays){0};
    return ok;
}

/* The arrays to save from or restore into; from_live fills staged ones
 * from the model and the optimiser. False (on every rank) if out of memory
 * or an exchange failed. Collective when staged. */
static bool state_open(ts_run_state *s, state_arrays *a, bool from_live) {
    if (state_open_any(s, a, from_live)) return true;
    state_close(s, a, false); /* nothing staged outlives a failure */
    return false;
}

/* A moment's role: replicated when every rank holds all of it, else this
 * rank's checkpoint range of one array (ZeRO, parallel/strategy.h). */
static ts_saved_role moment_role(const ts_run_state *s, ts_saved_role role) {
    if (s->optimizer->sharded && !s->model->layout) { /* a distributed model's are staged whole */
        role.layout = TS_SAVED_SHARDED;
        ts_parallel_checkpoint_range(s->parallel, s->parallel->rank, &role.shard_first,
                                     &role.shard_count);
    }
    return role;
}

/* What a training checkpoint holds: the parameters and AdamW's moments
 * (when the optimiser has them), as state_open gives them, over the global
 * tensors, and the model's own state. */
static int training_roles(ts_run_state *s, const state_arrays *state, ts_saved_role *roles) {
    const ts_param_table *t = ts_model_global_table(s->model);
    int n = 0;
    roles[n++] = ts_saved_params(t, state->params);
    if (state->m)
        roles[n++] = moment_role(s, ts_saved_moment(TS_SAVED_ADAM_M_NAME, t, state->m,
                                                    "same as the gradient",
                                                    "first moment (running mean of gradients), "
                                                    "flat, parameter order"));
    if (state->v)
        roles[n++] = moment_role(s, ts_saved_moment(TS_SAVED_ADAM_V_NAME, t, state->v,
                                                    "square of the gradient's",
                                                    "second moment (running mean of squared "
                                                    "gradients), flat, parameter order"));
    if (s->model->ops->checkpoint_extras)
        n += s->model->ops->checkpoint_extras(s->model, roles + n, MAX_ROLES - n);
    return n;
}

/* Whether dir already holds results of a run: a metrics file or checkpoints. */
static bool holds_results(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));)
        found = !strcmp(e->d_name, TS_METRICS_FILE_NAME) || !strncmp(e->d_name, "checkpoint_", 11);
    closedir(d);
    return found;
}

/* A metrics call's outcome; a failed write (full disk, quota, I/O error)
 * makes the run end with TS_EXIT_WRITE_FAILED. */
static bool metrics_ok(ts_run_state *s, ts_io_status st) {
    if (st == TS_IO_ERR_IO || st == TS_IO_ERR_NOSPACE) s->write_failed = true;
    return st == TS_IO_OK;
}

static bool prepare_directory(ts_run_state *s, bool resume, char *err, size_t errlen) {
    bool ok = true;
    if (s->rank == 0) {
        const char *dir = s->config->run_dir;
        if (!resume && holds_results(dir)) {
            snprintf(err, errlen,
                     "run directory '%s' already holds a run (metrics.h5 or checkpoints): "
                     "pass --resume to continue it, or set run.dir to a new directory",
                     dir);
            ok = false;
        } else {
            ok = ts_make_dirs(dir, err, errlen) == TS_IO_OK;
        }
    }
    /* Rank 0 decides; every rank learns the outcome and the message. */
    return ts_io_agree(s->comm, ok ? TS_IO_OK : TS_IO_ERR_IO, err, errlen) == TS_IO_OK;
}

/* A checkpoint that fails verification (damaged bytes, a truncated or
 * unparseable file) rather than one that does not fit this run: only the
 * former is worth skipping for an older one. */
static bool is_damaged(ts_io_status st) {
    return st == TS_IO_ERR_CORRUPT || st == TS_IO_ERR_NOT_HDF5 || st == TS_IO_ERR_FORMAT;
}

/* Loads the checkpoint `path` (from resume_from, or the newest complete one
 * in run.dir). A newest checkpoint that fails verification is reported and
 * the next older complete one tried, so a requeued job continues from the
 * newest state that verifies; an explicit resume_from is never replaced. */
static bool resume_from_checkpoint(ts_run_state *s, const char *resume_from, long *step,
                                   double *tokens, char *err, size_t errlen) {
    ts_checkpoint_state cs = {0};
    ts_checkpoint_report report;
    ts_saved_role roles[MAX_ROLES];
    state_arrays state;
    if (!state_open(s, &state, false)) {
        snprintf(err, errlen,
                 "out of memory for the parameters' or optimiser moments' checkpoint layout");
        return false;
    }
    int n_roles = training_roles(s, &state, roles);
    const char *dir = s->config->run_dir;
    char path[TS_CHECKPOINT_PATH_MAX], skipped[TS_CHECKPOINT_PATH_MAX] = "";
    long below = LONG_MAX, found_step = 0;
    ts_io_status st;
    if (resume_from) {
        snprintf(path, sizeof path, "%s", resume_from);
        st = ts_checkpoint_read(s->comm, path, &cs, roles, n_roles, &report, err, errlen);
    } else {
        for (;;) {
            st = ts_checkpoint_find_before(s->comm, dir, below, path, sizeof path, &found_step, err,
                                           errlen);
            if (st == TS_IO_NOT_FOUND && skipped[0]) {
                state_close(s, &state, false);
                snprintf(err, errlen,
                         "no complete checkpoint in %s verifies (the newest, %s, is damaged, "
                         "and so is every older one): nothing to resume from",
                         dir, skipped);
                return false;
            }
            if (st != TS_IO_OK) break;
            st = ts_checkpoint_read(s->comm, path, &cs, roles, n_roles, &report, err, errlen);
            if (!is_damaged(st)) break;
            if (s->rank == 0)
                fprintf(stderr,
                        "thinkscale: warning: %s\nthinkscale: warning: skipping %s; trying the "
                        "next older complete checkpoint\n",
                        err, path);
            if (!skipped[0]) snprintf(skipped, sizeof skipped, "%s", path);
            below = found_step;
        }
    }
    /* The restored ranges back to the ranks that own them, a distributed
     * model's blocks to their ranks (only after a read every rank agreed on). */
    if (!state_close(s, &state, st == TS_IO_OK)) {
        snprintf(err, errlen,
                 "placing the restored optimiser moments failed (an MPI error, or out of "
                 "memory for a grid position's local copy)");
        return false;
    }
    char missing[TS_CHECKPOINT_PATH_MAX];
    long orphan = resume_from || s->rank != 0
                      ? -1
                      : ts_checkpoint_newest_orphan_marker(dir, missing, sizeof missing);
    if (st == TS_IO_NOT_FOUND) {
        if (orphan >= 0)
            fprintf(stderr,
                    "thinkscale: warning: %s is marked complete but is gone (deleted or moved?), "
                    "and no older checkpoint is there\n",
                    missing);
        if (s->rank == 0)
            printf("thinkscale: no complete checkpoint in %s: starting from step 0\n", dir);
        *step = 0;
        *tokens = 0;
        return true;
    }
    if (st != TS_IO_OK) return false;
    if (orphan > cs.step)
        fprintf(stderr,
                "thinkscale: warning: %s is marked complete but is gone (deleted or moved?); "
                "resuming from the newest checkpoint that is there, step %ld\n",
                missing, cs.step);
    *step = cs.step;
    *tokens = (double)cs.tokens_seen;
    s->optimizer->t = cs.step; /* AdamW bias correction continues where it stopped */
    s->restored_bytes = (double)report.bytes;
    s->restored_seconds = report.io_seconds;
    if (s->rank == 0) {
        printf("thinkscale: resumed from %s (step %ld, %.1f MB read at %.1f MB/s)\n", report.path,
               cs.step, report.bytes / 1e6, report.bandwidth / 1e6);
        if (skipped[0])
            printf("thinkscale: %s failed verification; continuing from the older %s instead\n",
                   skipped, report.path);
    }
    return true;
}

bool ts_run_state_open(ts_run_state *s, MPI_Comm comm, const ts_run_config *config, ts_model *model,
                       ts_optimizer *optimizer, const ts_parallel *parallel,
                       const ts_tensor_grid *grid, bool resume, const char *resume_from, long *step,
                       double *tokens, char *err, size_t errlen) {
    *s = (ts_run_state){.comm = comm,
                        .config = config,
                        .model = model,
                        .optimizer = optimizer,
                        .parallel = parallel,
                        .grid = grid};
    MPI_Comm_rank(comm, &s->rank);
    *step = 0;
    *tokens = 0;
    s->config_ini = ts_config_to_ini(config);
    if (!s->config_ini) {
        snprintf(err, errlen, "out of memory formatting the configuration");
        return false;
    }
    if (!prepare_directory(s, resume, err, errlen)) return false;
    if (resume && !resume_from_checkpoint(s, resume_from, step, tokens, err, errlen)) return false;
    if (ts_provenance_collect(comm, 0, &s->provenance, err, errlen) != TS_IO_OK) return false;
    s->provenance_set = true;
    bool ok = true;
    if (s->rank == 0) {
        ts_metrics_options options = {.resume_step = resume ? *step : -1};
        ts_metric_column model_columns[TS_MAX_MODEL_STATS];
        int n_model = with_model_stats(0, model, model_columns);
        ts_metric_column train[COUNT(train_columns)], checkpoint[COUNT(checkpoint_columns)];
        ts_metric_column memory[COUNT(memory_columns)];
        COLUMNS_OF(train_columns, train);
        COLUMNS_OF(checkpoint_columns, checkpoint);
        COLUMNS_OF(memory_columns, memory);
        ok =
            metrics_ok(s, ts_metrics_open(&s->metrics, config->run_dir, s->config_ini,
                                          &s->provenance, &options, err, errlen)) &&
            metrics_ok(s, ts_metrics_define(s->metrics, "train", "one row per optimiser step",
                                            COUNT(train_columns), train, err, errlen)) &&
            metrics_ok(s,
                       ts_metrics_define(s->metrics, "checkpoint", "one row per checkpoint written",
                                         COUNT(checkpoint_columns), checkpoint, err, errlen)) &&
            metrics_ok(s, ts_metrics_define(s->metrics, "memory",
                                            "training state per rank and communication, one row "
                                            "per invocation (docs/parallelism.md)",
                                            COUNT(memory_columns), memory, err, errlen)) &&
            (n_model == 0 || metrics_ok(s, ts_metrics_define(s->metrics, "train_model",
                                                             "the model's own statistics per step",
                                                             n_model, model_columns, err, errlen)));
    }
    /* Rank 0 decides; every rank learns the outcome and the message. */
    return ts_io_agree(s->comm, ok ? TS_IO_OK : TS_IO_ERR_IO, err, errlen) == TS_IO_OK;
}

bool ts_run_state_log_step(ts_run_state *s, const ts_step_record *r, const double *stats, char *err,
                           size_t errlen) {
    if (s->rank != 0) return true;
    double values[COUNT(train_columns)];
    field_values(train_columns, COUNT(train_columns), r, values);
    return metrics_ok(s, ts_metrics_append(s->metrics, "train", r->step, values, err, errlen)) &&
           (s->model->ops->n_stats == 0 ||
            metrics_ok(s,
                       ts_metrics_append(s->metrics, "train_model", r->step, stats, err, errlen)));
}

bool ts_run_state_log_memory(ts_run_state *s, long step, const ts_memory_record *r, char *err,
                             size_t errlen) {
    if (s->rank != 0) return true;
    double values[COUNT(memory_columns)];
    field_values(memory_columns, COUNT(memory_columns), r, values);
    return metrics_ok(s, ts_metrics_append(s->metrics, "memory", step, values, err, errlen)) &&
           metrics_ok(s, ts_metrics_flush(s->metrics, err, errlen));
}

bool ts_run_state_log_eval(ts_run_state *s, long step, const char *set,
                           const ts_eval_result *result, char *err, size_t errlen) {
    if (s->rank != 0) return true;
    char table[128];
    snprintf(table, sizeof table, "eval/%s", set);
    ts_metric_column columns[COUNT(eval_columns) + TS_MAX_MODEL_STATS];
    COLUMNS_OF(eval_columns, columns);
    int n_columns = with_model_stats(COUNT(eval_columns), s->model, columns);
    if (ts_metrics_rows(s->metrics, table) < 0 &&
        !metrics_ok(s,
                    ts_metrics_define(s->metrics, table, "validation split, evenly spaced windows",
                                      n_columns, columns, err, errlen)))
        return false;
    double values[COUNT(eval_columns) + TS_MAX_MODEL_STATS];
    for (int c = 0; c < COUNT(eval_columns); c++) values[c] = eval_columns[c].value(result);
    for (int k = 0; k < result->n_stats; k++) values[COUNT(eval_columns) + k] = result->stats[k];
    return metrics_ok(s, ts_metrics_append(s->metrics, table, step, values, err, errlen)) &&
           metrics_ok(s, ts_metrics_flush(s->metrics, err, errlen));
}

bool ts_run_state_checkpoint(ts_run_state *s, long step, double tokens, char *err, size_t errlen) {
    /* The metrics up to this step reach the disk first: a run resumed from
     * this checkpoint then finds every row before it. */
    bool flushed = s->rank != 0 || metrics_ok(s, ts_metrics_flush(s->metrics, err, errlen));
    if (ts_io_agree(s->comm, flushed ? TS_IO_OK : TS_IO_ERR_IO, err, errlen) != TS_IO_OK) {
        s->write_failed = true;
        return false;
    }
    ts_checkpoint_state cs = {
        .step = step, .tokens_seen = (int64_t)tokens, .config_text = s->config_ini};
    /* overwrite: a complete checkpoint of this step can only be one that
     * resuming went past (damaged, or beyond an explicit --resume-from); the
     * run now continues from an older one, and its own state replaces it. */
    ts_checkpoint_options options = {.keep_last = (int)s->config->keep_checkpoints,
                                     .overwrite = true,
                                     .provenance = &s->provenance};
    ts_checkpoint_report report;
    ts_saved_role roles[MAX_ROLES];
    state_arrays state;
    if (!state_open(s, &state, true)) {
        snprintf(err, errlen,
                 "gathering the parameters or optimiser moments into their checkpoint layout "
                 "failed (out of memory or an MPI error) at step %ld",
                 step);
        return false;
    }
    int n_roles = training_roles(s, &state, roles);
    ts_io_status st = ts_checkpoint_write(s->comm, s->config->run_dir, &cs, roles, n_roles,
                                          &options, &report, err, errlen);
    state_close(s, &state, false);
    if (st == TS_IO_ERR_STRANDED) {
        /* Other ranks may be inside an HDF5 collective this rank left: no
         * agreement can reach them, only ending the job does. */
        fprintf(stderr, "thinkscale: rank %d: error: %s\n", s->rank, err);
        fflush(stderr);
        MPI_Abort(s->comm, TS_EXIT_WRITE_FAILED);
    }
    if (st != TS_IO_OK) {
        s->write_failed = true;
        return false;
    }
    s->last_checkpoint_bytes = (double)report.bytes;
    s->last_checkpoint_bandwidth = report.bandwidth;
    if (s->rank != 0) return true;
    printf("checkpoint step %ld: %s, %.2f MB in %.3f s (%.1f MB/s)\n", step, report.path,
           report.bytes / 1e6, report.io_seconds, report.bandwidth / 1e6);
    double values[COUNT(checkpoint_columns)];
    for (int c = 0; c < COUNT(checkpoint_columns); c++)
        values[c] = checkpoint_columns[c].value(&report);
    return metrics_ok(s, ts_metrics_append(s->metrics, "checkpoint", step, values, err, errlen)) &&
           metrics_ok(s, ts_metrics_flush(s->metrics, err, errlen));
}

int ts_run_state_failure_status(ts_run_state *s) {
    int mine = s->write_failed, any = mine;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, s->comm);
    return any ? TS_EXIT_WRITE_FAILED : 1;
}

void ts_run_state_close(ts_run_state *s) {
    if (s->metrics) {
        char err[512];
        if (ts_metrics_close(s->metrics, err, sizeof err) != TS_IO_OK)
            fprintf(stderr, "thinkscale: error: %s\n", err);
        s->metrics = NULL;
    }
    if (s->provenance_set) ts_provenance_free(&s->provenance);
    s->provenance_set = false;
    free(s->config_ini);
    s->config_ini = NULL;
}
