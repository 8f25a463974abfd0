/* metrics.h5 under MPI (run on 1 and 2 ranks): provenance is collected by
 * every rank, the file is written and checked by rank 0 alone, as in a run.
 * Files are read back with the plain HDF5 API, as any analysis tool would. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <mpi.h>

#include "io/metrics.h"
#include "io/provenance.h"
#include "mpi_cmocka.h"
#include "open_ids.h"

static int rank, size;

#define assert_status(got, want, err)                                                              \
    do {                                                                                           \
        ts_io_status got_ = (got);                                                                 \
        if (got_ != (want))                                                                        \
            print_error("status %s, expected %s: %s\n", ts_io_status_name(got_),                   \
                        ts_io_status_name(want), err);                                             \
        assert_int_equal(got_, (want));                                                            \
    } while (0)

typedef struct fixture {
    ts_open_ids open_ids; /* a test must leave as many open as it found */
    char dir[256];
    char path[300];
    ts_provenance prov;
    char err[1024];
} fixture;

static const char *config_text = "[model]\nwidth = 64\n[train]\nlr = 0.0003\n";

static const ts_metric_column train_columns[] = {
    {"tokens", "tokens", "training tokens seen, all ranks"},
    {"loss", "nats/token", "mean training cross-entropy of the step"},
    {"lr", "1", "learning rate of the step"},
};
static const ts_metric_column eval_columns[] = {
    {"loss", "nats/token", "mean cross-entropy on the evaluation set"},
    {"perplexity", "1", "exp(loss)"},
};

static double train_value(long step, int column) {
    return 1000.0 * column + step + 0.25;
}

/* Provenance is collective, so every rank collects it; only rank 0 goes on. */
static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (rank == 0) {
        snprintf(f->dir, sizeof f->dir, "/tmp/ts_test_metrics_XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/metrics.h5", f->dir);
    }
    assert_int_equal(ts_provenance_collect(MPI_COMM_WORLD, 0, &f->prov, f->err, sizeof f->err),
                     TS_IO_OK);
    f->open_ids = ts_count_open_ids();
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ts_assert_open_ids_unchanged(&f->open_ids);
    if (rank == 0) {
        DIR *d = opendir(f->dir);
        struct dirent *entry;
        char path[600];
        while (d && (entry = readdir(d))) {
            if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", f->dir, entry->d_name);
            unlink(path);
        }
        if (d) closedir(d);
        rmdir(f->dir);
    }
    ts_provenance_free(&f->prov);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static ts_metrics *open_metrics(fixture *f, long resume_step, int flush_rows) {
    ts_metrics_options options = {.resume_step = resume_step, .flush_rows = flush_rows};
    ts_metrics *m = NULL;
    assert_status(
        ts_metrics_open(&m, f->dir, config_text, &f->prov, &options, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_non_null(m);
    return m;
}

static void append_train(fixture *f, ts_metrics *m, long first, long last) {
    for (long step = first; step <= last; step++) {
        double values[3] = {train_value(step, 0), train_value(step, 1), train_value(step, 2)};
        assert_status(ts_metrics_append(m, "train", step, values, f->err, sizeof f->err), TS_IO_OK,
                      f->err);
    }
}

static void close_metrics(fixture *f, ts_metrics *m) {
    assert_status(ts_metrics_close(m, f->err, sizeof f->err), TS_IO_OK, f->err);
}

/* A whole 1-D dataset as doubles (or int64 converted by HDF5); *n its length. */
static double *read_series(hid_t file, const char *path, hsize_t *n) {
    hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
    assert_true(dset >= 0);
    hid_t space = H5Dget_space(dset);
    assert_int_equal(H5Sget_simple_extent_ndims(space), 1);
    H5Sget_simple_extent_dims(space, n, NULL);
    double *values = malloc((*n ? *n : 1) * sizeof *values);
    assert_non_null(values);
    if (*n)
        assert_true(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    H5Sclose(space);
    H5Dclose(dset);
    return values;
}

static void assert_string_attr(hid_t loc, const char *name, const char *want) {
    char *value = NULL;
    if (ts_h5_read_string_attr(loc, name, &value) < 0) fail_msg("attribute %s is missing", name);
    if (want && strcmp(value, want)) {
        print_error("attribute %s is \"%s\", expected \"%s\"\n", name, value, want);
        free(value);
        fail();
    }
    if (!want && !value[0]) fail_msg("attribute %s is empty", name);
    free(value);
}

static int64_t int_attr(hid_t loc, const char *name) {
    int64_t value = 0;
    if (ts_h5_read_int64_attr(loc, name, &value) < 0) fail_msg("attribute %s is missing", name);
    return value;
}

static hid_t open_file(const char *path) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    return file;
}

static bool copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    bool ok = in && out;
    char buf[4096];
    size_t got;
    while (ok && (got = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, got, out) == got;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    return ok;
}

static char *slurp(const char *path, long *len) {
    FILE *in = fopen(path, "rb");
    if (!in) return NULL;
    fseek(in, 0, SEEK_END);
    *len = ftell(in);
    rewind(in);
    char *data = malloc((size_t)*len + 1);
    if (data && fread(data, 1, (size_t)*len, in) != (size_t)*len) {
        free(data);
        data = NULL;
    }
    fclose(in);
    return data;
}

static void write_text(const char *path, const char *text) {
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs(text, out);
    assert_int_equal(fclose(out), 0);
}

/* ---------------------------------------------------------------- tests */

static void test_series_and_attributes_read_back(void **state) {
    fixture *f = *state;
    /* SLURM_* variables of rank 0's environment when provenance is collected. */
    assert_int_equal(setenv("SLURM_JOB_ID", "777", 1), 0);
    assert_int_equal(setenv("SLURM_NTASKS", "2", 1), 0);
    assert_int_equal(setenv("SLURM_JOB_NODELIST", "nid[001-002]", 1), 0);
    ts_provenance prov;
    assert_status(ts_provenance_collect(MPI_COMM_WORLD, 3, &prov, f->err, sizeof f->err), TS_IO_OK,
                  f->err);
    unsetenv("SLURM_JOB_ID");
    unsetenv("SLURM_NTASKS");
    unsetenv("SLURM_JOB_NODELIST");
    assert_int_equal(prov.ranks, size);
    assert_true(prov.slurm_count >= 3);
    if (rank != 0) {
        ts_provenance_free(&prov);
        return;
    }
    ts_metrics *m = NULL;
    assert_status(ts_metrics_open(&m, f->dir, config_text, &prov, NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    ts_provenance_free(&prov);
    assert_status(ts_metrics_define(m, "train", "one row per logged step", 3, train_columns, f->err,
                                    sizeof f->err),
                  TS_IO_OK, f->err);
    assert_status(ts_metrics_define(m, "eval/bible", "validation split of the KJV Bible", 2,
                                    eval_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 1, 10);
    for (long step = 5; step <= 10; step += 5) {
        double values[2] = {2.0 / (double)step, exp(2.0 / (double)step)};
        assert_status(ts_metrics_append(m, "eval/bible", step, values, f->err, sizeof f->err),
                      TS_IO_OK, f->err);
    }
    assert_int_equal(ts_metrics_rows(m, "train"), 10);
    assert_int_equal(ts_metrics_rows(m, "eval/bible"), 2);
    assert_int_equal(ts_metrics_rows(m, "eval/dyck"), -1);
    close_metrics(f, m);

    hid_t file = open_file(f->path);
    hsize_t n = 0;
    double *steps = read_series(file, "train/step", &n);
    assert_int_equal(n, 10);
    for (int c = 0; c < 3; c++) {
        char path[64];
        snprintf(path, sizeof path, "train/%s", train_columns[c].name);
        hsize_t len = 0;
        double *values = read_series(file, path, &len);
        assert_int_equal(len, 10);
        for (hsize_t i = 0; i < len; i++) {
            assert_true(steps[i] == (double)(i + 1));
            assert_true(values[i] == train_value((long)i + 1, c));
        }
        free(values);
        hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
        assert_string_attr(dset, "units", train_columns[c].units);
        assert_string_attr(dset, "description", train_columns[c].description);
        hid_t type = H5Dget_type(dset);
        assert_true(H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 8);
        H5Tclose(type);
        H5Dclose(dset);
    }
    free(steps);
    double *perplexity = read_series(file, "eval/bible/perplexity", &n);
    assert_int_equal(n, 2);
    assert_true(perplexity[1] == exp(0.2));
    free(perplexity);
    hid_t dset = H5Dopen2(file, "train/step", H5P_DEFAULT);
    hid_t type = H5Dget_type(dset);
    assert_true(H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 8);
    assert_string_attr(dset, "units", "step");
    H5Tclose(type);
    H5Dclose(dset);
    hid_t group = H5Gopen2(file, "eval/bible", H5P_DEFAULT);
    assert_string_attr(group, "description", "validation split of the KJV Bible");
    H5Gclose(group);

    /* Root attributes: config and provenance. */
    assert_string_attr(file, "format", "thinkscale-metrics");
    assert_string_attr(file, "config", config_text);
    assert_int_equal(int_attr(file, "ranks"), size);
    assert_int_equal(int_attr(file, "threads_per_rank"), 3);
    assert_int_equal(int_attr(file, "nodes"), 1);
    assert_int_equal(int_attr(file, "resumed_from_step"), -1);
    assert_string_attr(file, "hostname", NULL);
    assert_string_attr(file, "git_commit", NULL);
    assert_string_attr(file, "compiler", NULL);
    assert_string_attr(file, "mpi_library", NULL);
    assert_string_attr(file, "blas_core", NULL);
    assert_string_attr(file, "hdf5_version", NULL);
    assert_string_attr(file, "created_utc", NULL);
    char hostname[256] = {0};
    gethostname(hostname, sizeof hostname - 1);
    assert_string_attr(file, "hostname", hostname);
    group = H5Gopen2(file, "provenance/slurm", H5P_DEFAULT);
    assert_true(group >= 0);
    assert_string_attr(group, "SLURM_JOB_ID", "777");
    assert_string_attr(group, "SLURM_NTASKS", "2");
    assert_string_attr(group, "SLURM_JOB_NODELIST", "nid[001-002]");
    H5Gclose(group);
    group = H5Gopen2(file, "provenance/starts/000", H5P_DEFAULT);
    assert_true(group >= 0);
    assert_int_equal(int_attr(group, "resumed_from_step"), -1);
    hid_t slurm = H5Gopen2(group, "slurm", H5P_DEFAULT);
    assert_true(slurm >= 0);
    assert_string_attr(slurm, "SLURM_JOB_ID", "777");
    H5Gclose(slurm);
    H5Gclose(group);
    H5Fclose(file);
}

static void test_resume_drops_rows_after_the_checkpoint(void **state) {
    fixture *f = *state;
    if (rank != 0) return;
    ts_metrics *m = open_metrics(f, -1, 0);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_status(ts_metrics_define(m, "eval/bible", NULL, 2, eval_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 1, 10);
    for (long step = 4; step <= 8; step += 4) {
        double values[2] = {1, 2};
        assert_status(ts_metrics_append(m, "eval/bible", step, values, f->err, sizeof f->err),
                      TS_IO_OK, f->err);
    }
    close_metrics(f, m);

    /* The run died after step 10; its newest checkpoint was at step 6. */
    m = open_metrics(f, 6, 0);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_int_equal(ts_metrics_rows(m, "train"), 6);
    double values[3] = {0, 0, 0};
    assert_status(ts_metrics_append(m, "train", 6, values, f->err, sizeof f->err), TS_IO_ERR_ARGS,
                  f->err);
    assert_non_null(strstr(f->err, "step 6 does not follow the last recorded step 6"));
    for (long step = 7; step <= 9; step++) {
        double row[3] = {-1.0 * (double)step, -2.0, -3.0};
        assert_status(ts_metrics_append(m, "train", step, row, f->err, sizeof f->err), TS_IO_OK,
                      f->err);
    }
    close_metrics(f, m);

    hid_t file = open_file(f->path);
    hsize_t n = 0;
    double *steps = read_series(file, "train/step", &n);
    assert_int_equal(n, 9);
    for (hsize_t i = 0; i < n; i++) assert_true(steps[i] == (double)(i + 1));
    double *loss = read_series(file, "train/tokens", &n);
    assert_true(loss[5] == train_value(6, 0)); /* kept from the first run */
    assert_true(loss[6] == -7.0);              /* written after resuming */
    free(loss);
    free(steps);
    /* A table not defined after resuming is truncated all the same. */
    steps = read_series(file, "eval/bible/step", &n);
    assert_int_equal(n, 1);
    assert_true(steps[0] == 4);
    free(steps);
    double *perplexity = read_series(file, "eval/bible/perplexity", &n);
    assert_int_equal(n, 1);
    free(perplexity);
    assert_int_equal(int_attr(file, "resumed_from_step"), 6);
    hid_t starts = H5Gopen2(file, "provenance/starts", H5P_DEFAULT);
    H5G_info_t info;
    assert_true(H5Gget_info(starts, &info) >= 0);
    assert_int_equal(info.nlinks, 2);
    hid_t second = H5Gopen2(starts, "001", H5P_DEFAULT);
    assert_int_equal(int_attr(second, "resumed_from_step"), 6);
    H5Gclose(second);
    H5Gclose(starts);
    H5Fclose(file);
}

static void test_columns_added_on_resume_read_nan(void **state) {
    fixture *f = *state;
    if (rank != 0) return;
    ts_metrics *m = open_metrics(f, -1, 0);
    assert_status(ts_metrics_define(m, "train", NULL, 1, &train_columns[1], f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    for (long step = 1; step <= 3; step++) {
        double loss = (double)step;
        assert_status(ts_metrics_append(m, "train", step, &loss, f->err, sizeof f->err), TS_IO_OK,
                      f->err);
    }
    close_metrics(f, m);

    m = open_metrics(f, 3, 0);
    ts_metric_column changed[] = {{"loss", "bits/token", "loss in other units"}};
    assert_status(ts_metrics_define(m, "train", NULL, 1, changed, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_non_null(strstr(f->err, "'nats/token' in the file but 'bits/token' now"));
    ts_metric_column more[] = {
        {"grad_norm", "1", "global L2 norm of the gradient"},
        {"loss", "nats/token", "mean training cross-entropy of the step"},
    };
    assert_status(ts_metrics_define(m, "train", NULL, 2, more, f->err, sizeof f->err), TS_IO_OK,
                  f->err);
    double row[2] = {0.5, 4.0};
    assert_status(ts_metrics_append(m, "train", 4, row, f->err, sizeof f->err), TS_IO_OK, f->err);
    close_metrics(f, m);

    hid_t file = open_file(f->path);
    hsize_t n = 0;
    double *norm = read_series(file, "train/grad_norm", &n);
    assert_int_equal(n, 4);
    assert_true(isnan(norm[0]) && isnan(norm[1]) && isnan(norm[2]) && norm[3] == 0.5);
    double *loss = read_series(file, "train/loss", &n);
    assert_int_equal(n, 4);
    assert_true(loss[0] == 1 && loss[2] == 3 && loss[3] == 4.0);
    free(norm);
    free(loss);
    H5Fclose(file);
}

static void test_flushed_rows_survive_a_crash(void **state) {
    fixture *f = *state;
    if (rank != 0) return;
    ts_metrics *m = open_metrics(f, -1, 4);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 1, 10); /* flushes after rows 4 and 8 */
    /* What a crash now leaves on disk: the file as it is, never closed. */
    char copy[320];
    snprintf(copy, sizeof copy, "%s/crashed.h5", f->dir);
    assert_true(copy_file(f->path, copy));
    hid_t file = open_file(copy);
    hsize_t n = 0;
    double *steps = read_series(file, "train/step", &n);
    assert_int_equal(n, 8);
    free(steps);
    double *lr = read_series(file, "train/lr", &n);
    assert_int_equal(n, 8);
    assert_true(lr[7] == train_value(8, 2));
    free(lr);
    H5Fclose(file);
    assert_status(ts_metrics_flush(m, f->err, sizeof f->err), TS_IO_OK, f->err);
    assert_true(copy_file(f->path, copy));
    file = open_file(copy);
    steps = read_series(file, "train/step", &n);
    assert_int_equal(n, 10);
    free(steps);
    H5Fclose(file);
    close_metrics(f, m);

    /* Rows also wait no longer than flush_seconds. */
    assert_int_equal(unlink(f->path), 0);
    ts_metrics_options options = {.resume_step = -1, .flush_rows = 1000, .flush_seconds = 0.05};
    assert_status(
        ts_metrics_open(&m, f->dir, config_text, &f->prov, &options, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 1, 1);
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    append_train(f, m, 2, 2);
    assert_true(copy_file(f->path, copy));
    file = open_file(copy);
    steps = read_series(file, "train/step", &n);
    assert_int_equal(n, 2);
    free(steps);
    H5Fclose(file);
    close_metrics(f, m);
}

static void test_bad_input_is_reported_and_overwrites_nothing(void **state) {
    fixture *f = *state;
    if (rank != 0) return;
    ts_metrics *m = NULL;
    char missing[320];
    snprintf(missing, sizeof missing, "%s/no_such_dir", f->dir);
    assert_status(ts_metrics_open(&m, missing, config_text, &f->prov, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISSING, f->err);
    assert_null(m);

    m = open_metrics(f, -1, 0);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 1, 3);
    /* Names that cannot be tables or columns. */
    const char *bad_tables[] = {"", "/train", "a//b", "eval/", "provenance/x", "provenance"};
    for (size_t i = 0; i < sizeof bad_tables / sizeof *bad_tables; i++)
        assert_status(ts_metrics_define(m, bad_tables[i], NULL, 0, NULL, f->err, sizeof f->err),
                      TS_IO_ERR_ARGS, f->err);
    ts_metric_column reserved[] = {{"step", "step", ""}};
    assert_status(ts_metrics_define(m, "eval/x", NULL, 1, reserved, f->err, sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    ts_metric_column twice[] = {{"a", "1", ""}, {"a", "1", ""}};
    assert_status(ts_metrics_define(m, "eval/x", NULL, 2, twice, f->err, sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    assert_non_null(strstr(f->err, "already defined"));
    double values[3] = {0};
    assert_status(ts_metrics_append(m, "eval/dyck", 1, values, f->err, sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    assert_non_null(strstr(f->err, "eval/dyck is not defined"));
    assert_status(ts_metrics_append(m, "train", 2, values, f->err, sizeof f->err), TS_IO_ERR_ARGS,
                  f->err);
    close_metrics(f, m);

    /* A new run must not clobber an existing file. */
    long before_len = 0, after_len = 0;
    char *before = slurp(f->path, &before_len);
    assert_non_null(before);
    m = NULL;
    assert_status(ts_metrics_open(&m, f->dir, config_text, &f->prov, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_EXISTS, f->err);
    assert_null(m);
    assert_non_null(strstr(f->err, "metrics.h5 already exists"));
    char *after = slurp(f->path, &after_len);
    assert_true(after && after_len == before_len && !memcmp(before, after, (size_t)before_len));
    free(before);
    free(after);

    /* Resuming onto a file that is not HDF5, or HDF5 but not metrics. */
    write_text(f->path, "not HDF5\n");
    ts_metrics_options resume = {.resume_step = 2};
    assert_status(
        ts_metrics_open(&m, f->dir, config_text, &f->prov, &resume, f->err, sizeof f->err),
        TS_IO_ERR_NOT_HDF5, f->err);
    assert_non_null(strstr(f->err, "metrics.h5 cannot be opened as HDF5"));
    before = slurp(f->path, &before_len);
    assert_true(before && before_len == 9 && !memcmp(before, "not HDF5\n", 9));
    free(before);
    hid_t file = H5Fcreate(f->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    H5Fclose(file);
    assert_status(
        ts_metrics_open(&m, f->dir, config_text, &f->prov, &resume, f->err, sizeof f->err),
        TS_IO_ERR_FORMAT, f->err);
    assert_non_null(strstr(f->err, "not a thinkscale metrics file"));

    /* Resuming without a metrics file starts one. */
    assert_int_equal(unlink(f->path), 0);
    m = open_metrics(f, 5, 0);
    assert_status(ts_metrics_define(m, "train", NULL, 3, train_columns, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    append_train(f, m, 6, 6);
    close_metrics(f, m);
    assert_status(ts_metrics_close(NULL, f->err, sizeof f->err), TS_IO_OK, f->err);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_series_and_attributes_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_drops_rows_after_the_checkpoint, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_columns_added_on_resume_read_nan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flushed_rows_survive_a_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_is_reported_and_overwrites_nothing, setup,
                                        teardown),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_metrics", tests, sizeof tests / sizeof tests[0],
                              &rank, &size, NULL, NULL);
}
