/* The trainer itself against the plan (run on 1 and 2 ranks): a few real
 * training steps of every architecture through ts_train, and the executed
 * FLOPs it logs per step in metrics.h5 (train/flops, summed over ranks)
 * equal ts_step_flops_with for that many ranks at that step, exactly.
 * EBT S2 runs with a replay buffer of 2 entries, full from step 1 on, the
 * steady state the count describes (step 0 is compared only where there is
 * no buffer). */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <mpi.h>

#include "io/token_file.h"
#include "mpi_cmocka.h"
#include "core/config.h"
#include "train/step_cost.h"
#include "train/trainer.h"

enum { VOCAB = 17, STEPS = 4, N_TRAIN = 4000, N_VAL = 400 };

static int rank, size;
static char dir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Rank 0 writes a token file of VOCAB symbols; every rank learns the directory. */
static int group_setup(void **state) {
    (void)state;
    int ok = 1;
    if (rank == 0) {
        snprintf(dir, sizeof dir, "/tmp/ts_step_cost_XXXXXX");
        ok = mkdtemp(dir) != NULL;
        char path[320];
        snprintf(path, sizeof path, "%s/tokens.h5", dir);
        ts_token_meta meta = {.domain = "unit",
                              .tokenizer = "test",
                              .source = "test",
                              .split_rule = "synthetic",
                              .vocab_size = VOCAB};
        ts_token_writer *w = NULL;
        ts_tf_err err;
        int32_t *buf = malloc(N_TRAIN * sizeof *buf);
        ok = ok && buf && ts_token_writer_create(&w, path, &meta, &err) == TS_TF_OK;
        for (int i = 0; ok && i < N_TRAIN; i++) buf[i] = (int32_t)((i * 7 + i / 5) % VOCAB);
        ok = ok && ts_token_writer_append(w, TS_SPLIT_TRAIN, buf, N_TRAIN, &err) == TS_TF_OK &&
             ts_token_writer_append(w, TS_SPLIT_VALIDATION, buf, N_VAL, &err) == TS_TF_OK &&
             ts_token_writer_finish(w, &err) == TS_TF_OK;
        free(buf);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    return ok ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static double *read_flops(const char *run_dir, hsize_t *n) {
    char path[400];
    snprintf(path, sizeof path, "%s/metrics.h5", run_dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t dset = H5Dopen2(file, "train/flops", H5P_DEFAULT);
    assert_true(dset >= 0);
    hid_t space = H5Dget_space(dset);
    H5Sget_simple_extent_dims(space, n, NULL);
    double *values = malloc((*n ? *n : 1) * sizeof *values);
    assert_non_null(values);
    assert_true(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    H5Sclose(space);
    H5Dclose(dset);
    H5Fclose(file);
    return values;
}

/* Trains `name` for STEPS steps with the settings, then compares every step
 * from first_step on with the plan. */
static void check_trainer(const char *name, const char *const *settings, long first_step) {
    ts_run_config c;
    ts_config_defaults(&c);
    char err[512] = "", assignment[512];
    static const char *const common[] = {"model.context=6",     "model.depth=2",
                                         "model.width=8",       "model.heads=2",
                                         "train.batch=4",       "train.warmup=1",
                                         "train.log_every=100", "train.eval_batches=1",
                                         "free.latent_bits=3",  NULL};
    for (int i = 0; common[i]; i++) assert_true(ts_config_set(&c, common[i], err, sizeof err));
    for (int i = 0; settings[i]; i++)
        if (!ts_config_set(&c, settings[i], err, sizeof err)) fail_msg("%s", err);
    snprintf(assignment, sizeof assignment, "train.steps=%d", STEPS);
    assert_true(ts_config_set(&c, assignment, err, sizeof err));
    snprintf(assignment, sizeof assignment, "data.train=%s/tokens.h5", dir);
    assert_true(ts_config_set(&c, assignment, err, sizeof err));
    snprintf(assignment, sizeof assignment, "run.dir=%s/%s_np%d", dir, name, size);
    assert_true(ts_config_set(&c, assignment, err, sizeof err));
    if (!ts_config_validate(&c, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ts_train(MPI_COMM_WORLD, &c, false), 0);
    if (rank != 0) return;
    hsize_t n = 0;
    double *flops = read_flops(c.run_dir, &n);
    assert_int_equal(n, STEPS);
    c.model.vocab_size = VOCAB;
    for (long step = first_step; step < STEPS; step++) {
        ts_step_flops_result r;
        ts_step_flops_options options = {.ranks = size, .step = step};
        if (!ts_step_flops_with(&c, &options, &r, err, sizeof err)) fail_msg("%s", err);
        if (r.total != flops[step])
            fail_msg("%s on %d ranks, step %ld: planned %.0f FLOPs, the trainer executed %.0f",
                     name, size, step, r.total, flops[step]);
    }
    free(flops);
}

static void test_transformerpp(void **state) {
    (void)state;
    check_trainer("tpp", (const char *const[]){"model.arch=transformerpp", "train.accum=2", NULL},
                  0);
}

static void test_nexus(void **state) {
    (void)state;
    check_trainer(
        "nexus",
        (const char *const[]){"model.arch=nexus", "nexus.order=3", "nexus.variant=unshared", NULL},
        0);
}

static void test_free_transformer(void **state) {
    (void)state;
    check_trainer("free", (const char *const[]){"model.arch=free", NULL}, 0);
}

static void test_ebt(void **state) {
    (void)state;
    check_trainer("ebt_s1", (const char *const[]){"model.arch=ebt", "ebt.preset=s1", NULL}, 0);
    check_trainer(
        "ebt_s2",
        (const char *const[]){"model.arch=ebt", "ebt.preset=s2", "ebt.replay_size=2", NULL}, 1);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformerpp),
        cmocka_unit_test(test_nexus),
        cmocka_unit_test(test_free_transformer),
        cmocka_unit_test(test_ebt),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_step_cost_trainer", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, group_setup,
                              group_teardown);
}
