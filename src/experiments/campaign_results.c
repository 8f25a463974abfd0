#include "experiments/campaign_results.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stddef.h>
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
#include "io/full_disk.h"
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
    if (!run_complete(p)) {
        if (failed) r->status = TS_POINT_FAILED;
        return;
    }
    if (access(path, R_OK) != 0) {
        snprintf(r->problem, sizeof r->problem,
                 "its training is complete, but %s is missing or unreadable", path);
        r->status = TS_POINT_FAILED;
        return;
    }
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    bool done = file >= 0;
    if (!done)
        snprintf(r->problem, sizeof r->problem,
                 "its training is complete, but %s cannot be read as HDF5 (damaged or truncated)",
                 path);
    for (int d = 0; done && d < m->n_domains; d++) {
        char table[128];
        snprintf(table, sizeof table, "eval/%s", m->domains[d]);
        r->loss[d] = value_at_step(file, table, "loss", p->config.steps);
        r->ppl[d] = value_at_step(file, table, "perplexity", p->config.steps);
        done = !isnan(r->loss[d]);
        if (!done)
            snprintf(r->problem, sizeof r->problem,
                     "its training is complete, but %s holds no evaluation of domain %s at step "
                     "%ld",
                     path, m->domains[d], p->config.steps);
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
        r->status = TS_POINT_FAILED;
    }
    if (file >= 0) H5Fclose(file);
    ts_h5_quiet_end(quiet);
}

/* ---------------------------------------------------------------- results.h5 */

/* One row of the points table: every column's value for one point. */
typedef struct row {
    const char *name, *arch, *axis, *run, *status, *verdict, *commit, *run_dir, *thinking_file;
    char run_dir_text[TS_PATH_MAX], thinking_file_text[TS_PATH_MAX];
    double x, lr, tokens, epochs, flops, flops_6n, flops_6n_attn, val_loss, val_ppl, wall_seconds,
        node_hours;
    long seed, params, non_embedding_params, depth, width, heads, context, batch, steps, warmup,
        ranks, nodes;
} row;

typedef enum column_kind { COLUMN_STRING, COLUMN_LONG, COLUMN_DOUBLE } column_kind;

/* A column of /points: the row field it comes from (named as the dataset),
 * its type, units and description (docs/campaign-results-format.md). */
typedef struct column {
    const char *name;
    column_kind kind;
    size_t offset;
    const char *units, *description;
} column;

#define COLUMN(field, kind, units, description)                                                    \
    { #field, kind, offsetof(row, field), units, description }

static const column points_columns[] = {
    COLUMN(name, COLUMN_STRING, "", "the point's deterministic name"),
    COLUMN(arch, COLUMN_STRING, "", "architecture"),
    COLUMN(axis, COLUMN_STRING, "", "scaling axis"),
    COLUMN(x, COLUMN_DOUBLE, "see the axis",
           "axis value: tokens (data), tokens per step (batch), blocks (depth), D (width), "
           "non-embedding parameters (params), executed training FLOPs (flops)"),
    COLUMN(seed, COLUMN_LONG, "", "training seed"),
    COLUMN(run, COLUMN_STRING, "", "the run that produced the row (shared runs cluster)"),
    COLUMN(status, COLUMN_STRING, "", "done, pending or failed"),
    COLUMN(verdict, COLUMN_STRING, "", "report.yaml verdict (empty unless done)"),
    COLUMN(params, COLUMN_LONG, "parameters", "total parameters"),
    COLUMN(non_embedding_params, COLUMN_LONG, "parameters",
           "parameters minus embeddings and output head"),
    COLUMN(depth, COLUMN_LONG, "", "blocks"),
    COLUMN(width, COLUMN_LONG, "", "embedding dimension D"),
    COLUMN(heads, COLUMN_LONG, "", "attention heads"),
    COLUMN(context, COLUMN_LONG, "tokens", "tokens per sequence"),
    COLUMN(batch, COLUMN_LONG, "sequences", "sequences per optimiser step"),
    COLUMN(steps, COLUMN_LONG, "steps", "optimiser steps of the run"),
    COLUMN(lr, COLUMN_DOUBLE, "", "peak learning rate"),
    COLUMN(warmup, COLUMN_LONG, "steps", "warm-up steps"),
    COLUMN(tokens, COLUMN_DOUBLE, "tokens", "training tokens seen"),
    COLUMN(epochs, COLUMN_DOUBLE, "", "tokens / distinct training tokens"),
    COLUMN(flops, COLUMN_DOUBLE, "FLOP",
           "executed training FLOPs (the engine's count, all ranks; NaN unless done)"),
    COLUMN(flops_6n, COLUMN_DOUBLE, "FLOP", "6 * N * tokens"),
    COLUMN(flops_6n_attn, COLUMN_DOUBLE, "FLOP", "(6 * N + 6 * depth * width * context) * tokens"),
    COLUMN(val_loss, COLUMN_DOUBLE, "nats/token",
           "final token-weighted loss on the training domain's validation split"),
    COLUMN(val_ppl, COLUMN_DOUBLE, "", "exp(val_loss)"),
    COLUMN(wall_seconds, COLUMN_DOUBLE, "s", "training wall time, all invocations added"),
    COLUMN(node_hours, COLUMN_DOUBLE, "node-hours", "wall_seconds * nodes / 3600"),
    COLUMN(ranks, COLUMN_LONG, "", "MPI ranks"),
    COLUMN(nodes, COLUMN_LONG, "", "nodes"),
    COLUMN(commit, COLUMN_STRING, "", "the commit that trained it"),
    COLUMN(run_dir, COLUMN_STRING, "", "run directory relative to DIR"),
    COLUMN(thinking_file, COLUMN_STRING, "",
           "thinking axis: the run's knob evaluation (an eval.h5) relative to DIR; empty "
           "otherwise or unless done"),
};
#undef COLUMN

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

static void fill_row(row *k, const ts_campaign *camp, const ts_campaign_point *p,
                     const ts_campaign_run_result *r) {
    const ts_run_config *c = &p->config;
    double n6 = 6.0 * (double)p->non_embedding_params;
    *k = (row){.name = p->name,
               .arch = camp->archs[p->arch],
               .axis = ts_axis_name(p->axis),
               .run = p->run,
               .status = ts_point_status_name(r->status),
               .verdict = r->verdict,
               .commit = r->commit,
               .x = axis_x(p, r),
               .seed = p->seed,
               .params = p->params,
               .non_embedding_params = p->non_embedding_params,
               .depth = c->model.depth,
               .width = c->model.width,
               .heads = c->model.heads,
               .context = c->model.context,
               .batch = c->batch,
               .steps = c->steps,
               .lr = c->optim.lr,
               .warmup = c->optim.warmup_steps,
               .tokens = p->tokens,
               .epochs = p->epochs,
               .flops = r->flops,
               .flops_6n = n6 * p->tokens,
               .flops_6n_attn =
                   (n6 + 6.0 * c->model.depth * (double)c->model.width * c->model.context) *
                   p->tokens,
               .val_loss = r->loss[0],
               .val_ppl = r->ppl[0],
               .wall_seconds = r->wall_seconds,
               .node_hours = r->node_hours,
               .ranks = r->ranks,
               .nodes = r->nodes};
    snprintf(k->run_dir_text, sizeof k->run_dir_text, "runs/%s", p->run);
    k->run_dir = k->run_dir_text;
    k->thinking_file_text[0] = '\0';
    if (p->axis == TS_AXIS_THINKING && r->status == TS_POINT_DONE)
        snprintf(k->thinking_file_text, sizeof k->thinking_file_text, "runs/%s/%s", p->run,
                 TS_THINKING_FILE);
    k->thinking_file = k->thinking_file_text;
}

static const void *field_of(const row *k, const column *col) {
    return (const char *)k + col->offset;
}

/* Fixed-length, null-padded ASCII strings (the contract's choice: h5py reads
 * them as bytes without a variable-length heap), as wide as the longest. */
static bool write_string_column(hid_t group, const column *col, const row *rows, hsize_t n) {
    size_t width = 1;
    for (hsize_t i = 0; i < n; i++) {
        size_t len = strlen(*(const char *const *)field_of(&rows[i], col));
        if (len > width) width = len;
    }
    char *data = calloc(n ? n : 1, width);
    hid_t type = H5Tcopy(H5T_C_S1);
    bool ok = data && type >= 0 && H5Tset_size(type, width) >= 0 &&
              H5Tset_strpad(type, H5T_STR_NULLPAD) >= 0;
    for (hsize_t i = 0; ok && i < n; i++) {
        const char *v = *(const char *const *)field_of(&rows[i], col);
        memcpy(data + i * width, v, strlen(v));
    }
    ok = ok && ts_h5_write_array(group, col->name, type, 1, &n, data, col->units, col->description);
    if (type >= 0) H5Tclose(type);
    free(data);
    return ok;
}

/* Numbers: int64 for long fields, float64 for double fields. */
static bool write_number_column(hid_t group, const column *col, const row *rows, hsize_t n) {
    bool as_long = col->kind == COLUMN_LONG;
    void *data = malloc((n ? n : 1) * (as_long ? sizeof(int64_t) : sizeof(double)));
    if (!data) return false;
    for (hsize_t i = 0; i < n; i++) {
        const void *v = field_of(&rows[i], col);
        if (as_long)
            ((int64_t *)data)[i] = *(const long *)v;
        else
            ((double *)data)[i] = *(const double *)v;
    }
    bool ok = ts_h5_write_array(group, col->name, as_long ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, 1,
                                &n, data, col->units, col->description);
    free(data);
    return ok;
}

/* The per-domain losses and perplexities (points x domains), each with the
 * domain names as a string array attribute. */
static bool write_domain_tables(hid_t group, const ts_campaign_manifest *m,
                                const ts_campaign_run_result *results) {
    size_t np = (size_t)m->n_points, nd = (size_t)m->n_domains, cells = np * nd;
    double *loss = malloc((cells > 0 ? cells : 1) * sizeof *loss);
    double *ppl = malloc((cells > 0 ? cells : 1) * sizeof *ppl);
    bool ok = loss && ppl;
    for (size_t i = 0; ok && i < np; i++)
        for (size_t d = 0; d < nd; d++) {
            loss[i * nd + d] = results[i].loss[d];
            ppl[i * nd + d] = results[i].ppl[d];
        }
    hsize_t dims[2] = {(hsize_t)np, (hsize_t)nd};
    ok = ok &&
         ts_h5_write_array(group, "loss_by_domain", H5T_NATIVE_DOUBLE, 2, dims, loss, "nats/token",
                           "final validation loss per domain (NaN where not done)") &&
         ts_h5_write_array(group, "ppl_by_domain", H5T_NATIVE_DOUBLE, 2, dims, ppl, "",
                           "exp(loss_by_domain)");
    free(loss);
    free(ppl);
    const char *names[TS_CAMPAIGN_MAX_DOMAINS];
    for (int d = 0; d < m->n_domains; d++) names[d] = m->domains[d];
    hid_t type = H5Tcopy(H5T_C_S1);
    hsize_t n_names = (hsize_t)nd;
    hid_t space = H5Screate_simple(1, &n_names, NULL);
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

/* Every column of the table, then the per-domain tables. */
static bool write_points(hid_t group, const ts_campaign *camp, const ts_campaign_manifest *m,
                         const ts_campaign_run_result *results) {
    hsize_t n = (hsize_t)m->n_points;
    row *rows = malloc((n ? n : 1) * sizeof *rows);
    if (!rows) return false;
    for (hsize_t i = 0; i < n; i++) fill_row(&rows[i], camp, &m->points[i], &results[i]);
    bool ok = true;
    for (size_t c = 0; ok && c < sizeof points_columns / sizeof points_columns[0]; c++) {
        const column *col = &points_columns[c];
        ok = col->kind == COLUMN_STRING ? write_string_column(group, col, rows, n)
                                        : write_number_column(group, col, rows, n);
    }
    free(rows);
    return ok && write_domain_tables(group, m, results);
}

/* An upper bound of the file's size: the campaign text, and per point a
 * row of every column with its string widths. */
static long long estimated_results_bytes(const ts_campaign *c, const ts_campaign_manifest *m) {
    return 128 * 1024 + 4 * (long long)strlen(c->text) +
           (long long)m->n_points * (4096 + 64LL * m->n_domains);
}

ts_io_status ts_campaign_write_results(const char *dir, const ts_campaign *c,
                                       const ts_campaign_manifest *m,
                                       const ts_campaign_run_result *results, char *err,
                                       size_t errlen) {
    char path[TS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    ts_commit commit;
    ts_io_status st = ts_commit_begin_shared(&commit, path, err, errlen);
    if (st != TS_IO_OK) return st;
    const char *tmp = commit.tmp;
    char updated[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(updated, sizeof updated, "%Y-%m-%dT%H:%M:%SZ", &utc);
    hid_t file = ts_h5_create_reserved(tmp, estimated_results_bytes(c, m), &st, err, errlen);
    if (file < 0) return st;
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t group = H5Gcreate2(file, "points", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = group >= 0 &&
              ts_h5_write_string_attr(file, "format", "thinkscale-campaign-results") >= 0 &&
              ts_h5_write_int64_attr(file, "version", 1) >= 0 &&
              ts_h5_write_string_attr(file, "campaign", c->name) >= 0 &&
              ts_h5_write_string_attr(file, "campaign_file", c->text) >= 0 &&
              ts_h5_write_string_attr(file, "commit", ts_git_commit) >= 0 &&
              ts_h5_write_string_attr(file, "updated", updated) >= 0 &&
              write_points(group, c, m, results);
    if (group >= 0) ok = H5Gclose(group) >= 0 && ok;
    ts_h5_quiet_end(quiet);
    if ((st = ts_h5_finish_written(file, tmp, ok, err, errlen)) != TS_IO_OK) {
        ts_commit_abandon(&commit);
        return st;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen);
}
