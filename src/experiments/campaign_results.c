#include "experiments/campaign_results.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "experiments/campaign_files.h"
#include "experiments/campaign_thinking.h"
#include "io/atomic_commit.h"
#include "io/build_info.h"
#include "io/checkpoint.h"
#include "io/provenance.h"

const char *ts_point_status_name(ts_point_status status) {
    switch (status) {
    case TS_POINT_DONE:
        return "done";
    case TS_POINT_FAILED:
        return "failed";
    case TS_POINT_PENDING:
        break;
    }
    return "pending";
}

/* ---------------------------------------------------------------- reading a run */

/* A whole 1-D float64 dataset (malloc'd) and its length, or NULL. */
static double *read_column(hid_t file, const char *path, long *n) {
    hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
    if (dset < 0) return NULL;
    hid_t space = H5Dget_space(dset);
    hsize_t dims[1] = {0};
    double *data = NULL;
    if (space >= 0 && H5Sget_simple_extent_ndims(space) == 1 &&
        H5Sget_simple_extent_dims(space, dims, NULL) == 1) {
        data = malloc((dims[0] ? dims[0] : 1) * sizeof *data);
        if (data && H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
            free(data);
            data = NULL;
        }
    }
    if (space >= 0) H5Sclose(space);
    H5Dclose(dset);
    *n = (long)dims[0];
    return data;
}

/* The value of column at the row whose step is `step`, or NaN. */
static double value_at_step(hid_t file, const char *table, const char *column, long step) {
    char path[256];
    snprintf(path, sizeof path, "%s/step", table);
    long n_steps = 0, n_values = 0;
    double *steps = read_column(file, path, &n_steps);
    snprintf(path, sizeof path, "%s/%s", table, column);
    double *values = read_column(file, path, &n_values);
    double v = NAN;
    for (long i = n_steps - 1; steps && values && i >= 0 && i < n_values; i--)
        if ((long)steps[i] == step) {
            v = values[i];
            break;
        }
    free(steps);
    free(values);
    return v;
}

/* Training wall time over all starts: wall_time restarts near zero at each
 * start, so the total is the sum of each start's last value. */
static double total_wall_time(hid_t file) {
    long n = 0;
    double *wall = read_column(file, "train/wall_time", &n), total = 0;
    for (long i = 0; wall && i < n; i++)
        if (i == n - 1 || wall[i + 1] < wall[i]) total += wall[i];
    free(wall);
    return wall ? total : NAN;
}

static double total_flops(hid_t file) {
    long n = 0;
    double *flops = read_column(file, "train/flops", &n), total = 0;
    for (long i = 0; flops && i < n; i++) total += flops[i];
    free(flops);
    return flops ? total : NAN;
}

static void read_verdict(const char *run_dir, char *verdict, size_t len) {
    char path[TS_PATH_MAX + 32], err[256];
    snprintf(path, sizeof path, "%s/report.yaml", run_dir);
    char *text = ts_campaign_read_file(path, err, sizeof err);
    const char *at = text ? strstr(text, "verdict: ") : NULL;
    verdict[0] = 0;
    if (at) sscanf(at + strlen("verdict: "), "%15s", verdict);
    free(text);
}

static bool run_complete(const ts_campaign_point *p) {
    char path[TS_PATH_MAX + 64], err[512];
    long step = -1;
    ts_io_status st = ts_checkpoint_find_latest(MPI_COMM_SELF, p->config.run_dir, path, sizeof path,
                                                &step, err, sizeof err);
    return st == TS_IO_OK && step >= p->config.steps;
}

void ts_campaign_read_result(const ts_campaign_manifest *m, const ts_campaign_point *p,
                             ts_campaign_run_result *r) {
    memset(r, 0, sizeof *r);
    r->status = TS_POINT_PENDING;
    r->flops = r->wall_seconds = r->node_hours = NAN;
    for (int d = 0; d < TS_CAMPAIGN_MAX_DOMAINS; d++) r->loss[d] = r->ppl[d] = NAN;
    const char *dir = p->config.run_dir;
    char path[TS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, TS_CAMPAIGN_FAILED_MARKER);
    bool failed = access(path, F_OK) == 0;
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    if (access(path, R_OK) != 0 || !run_complete(p)) {
        if (failed) r->status = TS_POINT_FAILED;
        return;
    }
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    bool done = file >= 0;
    for (int d = 0; done && d < m->n_domains; d++) {
        char table[128];
        snprintf(table, sizeof table, "eval/%s", m->domains[d]);
        r->loss[d] = value_at_step(file, table, "loss", p->config.steps);
        r->ppl[d] = value_at_step(file, table, "perplexity", p->config.steps);
        done = !isnan(r->loss[d]);
    }
    if (done) {
        r->flops = total_flops(file);
        r->wall_seconds = total_wall_time(file);
        int64_t ranks = 0, nodes = 1;
        char *commit = NULL;
        if (H5Aexists(file, "ranks") > 0) ts_h5_read_int64_attr(file, "ranks", &ranks);
        if (H5Aexists(file, "nodes") > 0) ts_h5_read_int64_attr(file, "nodes", &nodes);
        if (H5Aexists(file, "git_commit") > 0 &&
            ts_h5_read_string_attr(file, "git_commit", &commit) >= 0)
            snprintf(r->commit, sizeof r->commit, "%s", commit);
        free(commit);
        r->ranks = (long)ranks;
        r->nodes = (long)nodes;
        r->node_hours = r->wall_seconds * (double)nodes / 3600.0;
        read_verdict(dir, r->verdict, sizeof r->verdict);
        /* A thinking point is done once its knob evaluation is written too. */
        r->status = p->axis != TS_AXIS_THINKING || ts_campaign_thinking_done(p) ? TS_POINT_DONE
                    : failed                                                    ? TS_POINT_FAILED
                                                                                : TS_POINT_PENDING;
    } else {
        for (int d = 0; d < TS_CAMPAIGN_MAX_DOMAINS; d++) r->loss[d] = r->ppl[d] = NAN;
        if (failed) r->status = TS_POINT_FAILED;
    }
    if (file >= 0) H5Fclose(file);
    ts_h5_quiet_end(quiet);
}

/* ---------------------------------------------------------------- results.h5 */

typedef struct column_writer {
    hid_t group;
    hsize_t n;
    bool ok;
} column_writer;

static void put_doubles(column_writer *w, const char *name, const double *v, const char *units,
                        const char *description) {
    w->ok = w->ok &&
            ts_h5_write_array(w->group, name, H5T_NATIVE_DOUBLE, 1, &w->n, v, units, description);
}

static void put_longs(column_writer *w, const char *name, const long *v, const char *units,
                      const char *description) {
    int64_t *data = malloc((w->n ? w->n : 1) * sizeof *data);
    w->ok = w->ok && data;
    for (hsize_t i = 0; w->ok && i < w->n; i++) data[i] = v[i];
    w->ok = w->ok &&
            ts_h5_write_array(w->group, name, H5T_NATIVE_INT64, 1, &w->n, data, units, description);
    free(data);
}

/* Fixed-length, null-padded ASCII strings (the contract's choice: h5py reads
 * them as bytes without a variable-length heap). */
static void put_strings(column_writer *w, const char *name, const char *const *v,
                        const char *description) {
    size_t width = 1;
    for (hsize_t i = 0; i < w->n; i++)
        if (strlen(v[i]) > width) width = strlen(v[i]);
    char *data = calloc(w->n ? w->n : 1, width);
    hid_t type = H5Tcopy(H5T_C_S1);
    w->ok = w->ok && data && type >= 0 && H5Tset_size(type, width) >= 0 &&
            H5Tset_strpad(type, H5T_STR_NULLPAD) >= 0;
    for (hsize_t i = 0; w->ok && i < w->n; i++) memcpy(data + i * width, v[i], strlen(v[i]));
    w->ok = w->ok && ts_h5_write_array(w->group, name, type, 1, &w->n, data, "", description);
    if (type >= 0) H5Tclose(type);
    free(data);
}

typedef struct columns {
    const char **name, **arch, **axis, **run, **status, **verdict, **commit, **run_dir,
        **thinking_file;
    double *x, *lr, *tokens, *epochs, *flops, *flops_6n, *flops_6n_attn, *val_loss, *val_ppl, *wall,
        *node_hours;
    long *seed, *params, *n_params, *depth, *width, *heads, *context, *batch, *steps, *warmup,
        *ranks, *nodes;
    char (*run_dirs)[TS_PATH_MAX], (*thinking_files)[TS_PATH_MAX];
    double *loss_by_domain, *ppl_by_domain;
} columns;

static void free_columns(columns *k) {
    void **all[] = {(void **)&k->name,
                    (void **)&k->arch,
                    (void **)&k->axis,
                    (void **)&k->run,
                    (void **)&k->status,
                    (void **)&k->verdict,
                    (void **)&k->commit,
                    (void **)&k->run_dir,
                    (void **)&k->x,
                    (void **)&k->lr,
                    (void **)&k->tokens,
                    (void **)&k->epochs,
                    (void **)&k->flops,
                    (void **)&k->flops_6n,
                    (void **)&k->flops_6n_attn,
                    (void **)&k->val_loss,
                    (void **)&k->val_ppl,
                    (void **)&k->wall,
                    (void **)&k->node_hours,
                    (void **)&k->seed,
                    (void **)&k->params,
                    (void **)&k->n_params,
                    (void **)&k->depth,
                    (void **)&k->width,
                    (void **)&k->heads,
                    (void **)&k->context,
                    (void **)&k->batch,
                    (void **)&k->steps,
                    (void **)&k->warmup,
                    (void **)&k->ranks,
                    (void **)&k->nodes,
                    (void **)&k->run_dirs,
                    (void **)&k->loss_by_domain,
                    (void **)&k->ppl_by_domain,
                    (void **)&k->thinking_file,
                    (void **)&k->thinking_files};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

static bool alloc_columns(columns *k, size_t n, size_t n_domains) {
    memset(k, 0, sizeof *k);
    size_t s = n ? n : 1;
    bool ok = true;
#define ALLOC(field, count) ok = ok && (k->field = calloc((count), sizeof *k->field)) != NULL
    ALLOC(name, s);
    ALLOC(arch, s);
    ALLOC(axis, s);
    ALLOC(run, s);
    ALLOC(status, s);
    ALLOC(verdict, s);
    ALLOC(commit, s);
    ALLOC(run_dir, s);
    ALLOC(x, s);
    ALLOC(lr, s);
    ALLOC(tokens, s);
    ALLOC(epochs, s);
    ALLOC(flops, s);
    ALLOC(flops_6n, s);
    ALLOC(flops_6n_attn, s);
    ALLOC(val_loss, s);
    ALLOC(val_ppl, s);
    ALLOC(wall, s);
    ALLOC(node_hours, s);
    ALLOC(seed, s);
    ALLOC(params, s);
    ALLOC(n_params, s);
    ALLOC(depth, s);
    ALLOC(width, s);
    ALLOC(heads, s);
    ALLOC(context, s);
    ALLOC(batch, s);
    ALLOC(steps, s);
    ALLOC(warmup, s);
    ALLOC(ranks, s);
    ALLOC(nodes, s);
    ALLOC(run_dirs, s);
    ALLOC(thinking_file, s);
    ALLOC(thinking_files, s);
    ALLOC(loss_by_domain, s * n_domains);
    ALLOC(ppl_by_domain, s * n_domains);
#undef ALLOC
    if (!ok) free_columns(k);
    return ok;
}

/* The axis value the fits use (docs/campaign-results-format.md). */
static double axis_x(const ts_campaign_point *p, const ts_campaign_run_result *r) {
    const ts_run_config *c = &p->config;
    switch (p->axis) {
    case TS_AXIS_DATA:
        return p->tokens;
    case TS_AXIS_BATCH:
        return (double)c->batch * c->model.context;
    case TS_AXIS_DEPTH:
        return c->model.depth;
    case TS_AXIS_WIDTH:
        return c->model.width;
    case TS_AXIS_PARAMS:
        return (double)p->non_embedding_params;
    case TS_AXIS_FLOPS:
        return r->flops;
    case TS_AXIS_THINKING: /* a trained variant, no numeric value */
    case TS_AXIS_COUNT:
        break;
    }
    return NAN;
}

static void fill_columns(columns *k, const ts_campaign *camp, const ts_campaign_manifest *m,
                         const ts_campaign_run_result *results) {
    size_t nd = (size_t)m->n_domains;
    for (int i = 0; i < m->n_points; i++) {
        const ts_campaign_point *p = &m->points[i];
        const ts_campaign_run_result *r = &results[i];
        const ts_run_config *c = &p->config;
        k->name[i] = p->name;
        k->arch[i] = camp->archs[p->arch];
        k->axis[i] = ts_axis_name(p->axis);
        k->run[i] = p->run;
        k->status[i] = ts_point_status_name(r->status);
        k->verdict[i] = r->verdict;
        k->commit[i] = r->commit;
        snprintf(k->run_dirs[i], sizeof k->run_dirs[i], "runs/%s", p->run);
        k->run_dir[i] = k->run_dirs[i];
        if (p->axis == TS_AXIS_THINKING && r->status == TS_POINT_DONE)
            snprintf(k->thinking_files[i], sizeof k->thinking_files[i], "runs/%s/%s", p->run,
                     TS_THINKING_FILE);
        k->thinking_file[i] = k->thinking_files[i];
        k->x[i] = axis_x(p, r);
        k->seed[i] = p->seed;
        k->params[i] = p->params;
        k->n_params[i] = p->non_embedding_params;
        k->depth[i] = c->model.depth;
        k->width[i] = c->model.width;
        k->heads[i] = c->model.heads;
        k->context[i] = c->model.context;
        k->batch[i] = c->batch;
        k->steps[i] = c->steps;
        k->lr[i] = c->optim.lr;
        k->warmup[i] = c->optim.warmup_steps;
        k->tokens[i] = p->tokens;
        k->epochs[i] = p->epochs;
        k->flops[i] = r->flops;
        double n6 = 6.0 * (double)p->non_embedding_params;
        k->flops_6n[i] = n6 * p->tokens;
        k->flops_6n_attn[i] =
            (n6 + 6.0 * c->model.depth * (double)c->model.width * c->model.context) * p->tokens;
        k->val_loss[i] = r->loss[0];
        k->val_ppl[i] = r->ppl[0];
        k->wall[i] = r->wall_seconds;
        k->node_hours[i] = r->node_hours;
        k->ranks[i] = r->ranks;
        k->nodes[i] = r->nodes;
        for (size_t d = 0; d < nd; d++) {
            k->loss_by_domain[(size_t)i * nd + d] = r->loss[d];
            k->ppl_by_domain[(size_t)i * nd + d] = r->ppl[d];
        }
    }
}

static bool write_columns(hid_t group, const columns *k, const ts_campaign_manifest *m) {
    column_writer w = {group, (hsize_t)m->n_points, true};
    put_strings(&w, "name", k->name, "the point's deterministic name");
    put_strings(&w, "arch", k->arch, "architecture");
    put_strings(&w, "axis", k->axis, "scaling axis");
    put_doubles(&w, "x", k->x, "see the axis",
                "axis value: tokens (data), tokens per step (batch), blocks (depth), D (width), "
                "non-embedding parameters (params), executed training FLOPs (flops)");
    put_longs(&w, "seed", k->seed, "", "training seed");
    put_strings(&w, "run", k->run, "the run that produced the row (shared runs cluster)");
    put_strings(&w, "status", k->status, "done, pending or failed");
    put_strings(&w, "verdict", k->verdict, "report.yaml verdict (empty unless done)");
    put_longs(&w, "params", k->params, "parameters", "total parameters");
    put_longs(&w, "non_embedding_params", k->n_params, "parameters",
              "parameters minus embeddings and output head");
    put_longs(&w, "depth", k->depth, "", "blocks");
    put_longs(&w, "width", k->width, "", "embedding dimension D");
    put_longs(&w, "heads", k->heads, "", "attention heads");
    put_longs(&w, "context", k->context, "tokens", "tokens per sequence");
    put_longs(&w, "batch", k->batch, "sequences", "sequences per optimiser step");
    put_longs(&w, "steps", k->steps, "steps", "optimiser steps of the run");
    put_doubles(&w, "lr", k->lr, "", "peak learning rate");
    put_longs(&w, "warmup", k->warmup, "steps", "warm-up steps");
    put_doubles(&w, "tokens", k->tokens, "tokens", "training tokens seen");
    put_doubles(&w, "epochs", k->epochs, "", "tokens / distinct training tokens");
    put_doubles(&w, "flops", k->flops, "FLOP",
                "executed training FLOPs (the engine's count, all ranks; NaN unless done)");
    put_doubles(&w, "flops_6n", k->flops_6n, "FLOP", "6 * N * tokens");
    put_doubles(&w, "flops_6n_attn", k->flops_6n_attn, "FLOP",
                "(6 * N + 6 * depth * width * context) * tokens");
    put_doubles(&w, "val_loss", k->val_loss, "nats/token",
                "final token-weighted loss on the training domain's validation split");
    put_doubles(&w, "val_ppl", k->val_ppl, "", "exp(val_loss)");
    put_doubles(&w, "wall_seconds", k->wall, "s", "training wall time, all invocations added");
    put_doubles(&w, "node_hours", k->node_hours, "node-hours", "wall_seconds * nodes / 3600");
    put_longs(&w, "ranks", k->ranks, "", "MPI ranks");
    put_longs(&w, "nodes", k->nodes, "", "nodes");
    put_strings(&w, "commit", k->commit, "the commit that trained it");
    put_strings(&w, "run_dir", k->run_dir, "run directory relative to DIR");
    put_strings(&w, "thinking_file", k->thinking_file,
                "thinking axis: the run's knob evaluation (an eval.h5) relative to DIR; empty "
                "otherwise or unless done");
    if (!w.ok) return false;
    hsize_t dims[2] = {(hsize_t)m->n_points, (hsize_t)m->n_domains};
    bool ok =
        ts_h5_write_array(group, "loss_by_domain", H5T_NATIVE_DOUBLE, 2, dims, k->loss_by_domain,
                          "nats/token", "final validation loss per domain (NaN where not done)") &&
        ts_h5_write_array(group, "ppl_by_domain", H5T_NATIVE_DOUBLE, 2, dims, k->ppl_by_domain, "",
                          "exp(loss_by_domain)");
    /* The domains as a string array attribute on both. */
    const char *names[TS_CAMPAIGN_MAX_DOMAINS];
    for (int d = 0; d < m->n_domains; d++) names[d] = m->domains[d];
    hid_t type = H5Tcopy(H5T_C_S1);
    hsize_t nd = (hsize_t)m->n_domains;
    hid_t space = H5Screate_simple(1, &nd, NULL);
    ok = ok && type >= 0 && space >= 0 && H5Tset_size(type, H5T_VARIABLE) >= 0;
    const char *datasets[2] = {"loss_by_domain", "ppl_by_domain"};
    for (int i = 0; ok && i < 2; i++) {
        hid_t dset = H5Dopen2(group, datasets[i], H5P_DEFAULT);
        hid_t attr =
            dset >= 0 ? H5Acreate2(dset, "domains", type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
        ok = attr >= 0 && H5Awrite(attr, type, names) >= 0;
        if (attr >= 0) H5Aclose(attr);
        if (dset >= 0) H5Dclose(dset);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return ok;
}

bool ts_campaign_write_results(const char *dir, const ts_campaign *c, const ts_campaign_manifest *m,
                               const ts_campaign_run_result *results, char *err, size_t errlen) {
    char path[TS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    ts_commit commit;
    if (ts_commit_begin_shared(&commit, path, err, errlen) != TS_IO_OK) return false;
    const char *tmp = commit.tmp;
    columns k;
    if (!alloc_columns(&k, (size_t)m->n_points, (size_t)m->n_domains)) {
        snprintf(err, errlen, "out of memory writing '%s'", path);
        return false;
    }
    fill_columns(&k, c, m, results);
    char updated[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(updated, sizeof updated, "%Y-%m-%dT%H:%M:%SZ", &utc);
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t group =
        file >= 0 ? H5Gcreate2(file, "points", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    bool ok = group >= 0 &&
              ts_h5_write_string_attr(file, "format", "thinkscale-campaign-results") >= 0 &&
              ts_h5_write_int64_attr(file, "version", 1) >= 0 &&
              ts_h5_write_string_attr(file, "campaign", c->name) >= 0 &&
              ts_h5_write_string_attr(file, "campaign_file", c->text) >= 0 &&
              ts_h5_write_string_attr(file, "commit", ts_git_commit) >= 0 &&
              ts_h5_write_string_attr(file, "updated", updated) >= 0 && write_columns(group, &k, m);
    if (group >= 0) ok = H5Gclose(group) >= 0 && ok;
    if (file >= 0) ok = H5Fclose(file) >= 0 && ok;
    ts_h5_quiet_end(quiet);
    free_columns(&k);
    if (!ok) {
        snprintf(err, errlen, "cannot write '%s'", tmp);
        ts_commit_abandon(&commit);
        return false;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen) == TS_IO_OK;
}
