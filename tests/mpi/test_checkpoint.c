/* Checkpoints under MPI (run on 1 and 2 ranks): bit-exact round trips,
 * rejection of files that do not fit or are damaged, the atomic protocol
 * (temporary and unmarked files are ignored), keep-last-K and no overwrite.
 *
 * Every assertion is made on every rank with the same outcome (library
 * statuses are agreed across ranks; local facts go through all_ranks), so a
 * failure never leaves one rank waiting in a collective the other skipped. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <mpi.h>

#include "io/checkpoint.h"
#include "io/provenance.h"
#include "mpi_cmocka.h"
#include "open_ids.h"
#include "core/param_table.h"

static int rank, size;

#ifdef TS_DOUBLE
#define CKPT_TEST_REAL H5T_NATIVE_DOUBLE
#else
#define CKPT_TEST_REAL H5T_NATIVE_FLOAT
#endif

/* True on every rank iff cond holds on every rank. */
static bool all_ranks(bool cond) {
    int in = cond, out = 0;
    if (MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD) != MPI_SUCCESS) return false;
    return out;
}

#define assert_all(cond) assert_true(all_ranks(cond))

/* Statuses are agreed by the library, so this fails on all ranks or none. */
#define assert_status(got, want, err)                                                              \
    do {                                                                                           \
        ts_io_status got_ = (got);                                                                 \
        if (got_ != (want))                                                                        \
            print_error("rank %d: status %s, expected %s: %s\n", rank, ts_io_status_name(got_),    \
                        ts_io_status_name(want), err);                                             \
        assert_int_equal(got_, (want));                                                            \
    } while (0)

/* ---------------------------------------------------------------- fixture */

#define RNG_WORDS 4
#define N_EXTRAS 6

/* The state these tests save besides the roles: step and tokens (root
 * attributes) and an RNG stream, stored as the role "state/rng". */
typedef struct saved_run {
    long step;
    int64_t tokens_seen;
    uint64_t *rng;
    int rng_words;
    const char *config_text;
} saved_run;

/* The tests' usual list of roles: parameters (tensor by tensor), the moments
 * that are given, the RNG stream when a state is given, then the extras. */
static int training_roles(const ts_param_table *table, const ts_real *params, const ts_real *m,
                          const ts_real *v, const saved_run *s, const ts_saved_role *extras,
                          int n_extras, ts_saved_role *roles) {
    int n = 0;
    roles[n++] = ts_saved_params(table, (ts_real *)params);
    if (m) roles[n++] = ts_saved_moment(TS_SAVED_ADAM_M_NAME, table, (ts_real *)m, NULL, NULL);
    if (v) roles[n++] = ts_saved_moment(TS_SAVED_ADAM_V_NAME, table, (ts_real *)v, NULL, NULL);
    if (s)
        roles[n++] = (ts_saved_role){.name = "state/rng",
                                     .type = TS_SAVED_UINT64,
                                     .layout = TS_SAVED_REPLICATED,
                                     .count = s->rng_words,
                                     .data = s->rng,
                                     .units = "dimensionless",
                                     .description = "random number generator state words"};
    for (int i = 0; i < n_extras; i++) roles[n++] = extras[i];
    return n;
}

static ts_io_status ckpt_write(MPI_Comm comm, const char *dir, const ts_param_table *table,
                               const ts_real *params, const ts_real *m, const ts_real *v,
                               const saved_run *s, const ts_saved_role *extras, int n_extras,
                               const ts_checkpoint_options *options, ts_checkpoint_report *report,
                               char *err, size_t errlen) {
    ts_saved_role roles[4 + N_EXTRAS];
    int n = training_roles(table, params, m, v, s, extras, n_extras, roles);
    ts_checkpoint_state state = {
        .step = s->step, .tokens_seen = s->tokens_seen, .config_text = s->config_text};
    return ts_checkpoint_write(comm, dir, &state, roles, n, options, report, err, errlen);
}

static ts_io_status ckpt_read(MPI_Comm comm, const char *path, const ts_param_table *table,
                              ts_real *params, ts_real *m, ts_real *v, saved_run *s,
                              const ts_saved_role *extras, int n_extras,
                              ts_checkpoint_report *report, char *err, size_t errlen) {
    ts_saved_role roles[4 + N_EXTRAS];
    int n = training_roles(table, params, m, v, s, extras, n_extras, roles);
    ts_checkpoint_state state = {0};
    ts_io_status st = ts_checkpoint_read(comm, path, &state, roles, n, report, err, errlen);
    if (st == TS_IO_OK && s) {
        s->step = state.step;
        s->tokens_seen = state.tokens_seen;
    }
    return st;
}

static ts_io_status ckpt_read_latest(MPI_Comm comm, const char *dir, const ts_param_table *table,
                                     ts_real *params, ts_real *m, ts_real *v, saved_run *s,
                                     const ts_saved_role *extras, int n_extras,
                                     ts_checkpoint_report *report, char *err, size_t errlen) {
    char path[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st = ts_checkpoint_find_latest(comm, dir, path, sizeof path, NULL, err, errlen);
    if (st != TS_IO_OK) return st;
    return ckpt_read(comm, path, table, params, m, v, s, extras, n_extras, report, err, errlen);
}

typedef struct fixture {
    ts_open_ids open_ids; /* a test must leave as many open as it found */
    char dir[256];
    ts_param_table table;
    ts_real *params, *m, *v;
    uint64_t rng[RNG_WORDS];
    saved_run state;
    /* extras' storage */
    ts_real hidden[10];
    int64_t counters[3];
    uint64_t seeds[2];
    int64_t replay[4]; /* per rank */
    ts_real per_rank_real[3];
    ts_saved_role extras[N_EXTRAS];
    char err[1024];
} fixture;

static const char *config_text = "[model]\nwidth = 5\n[train]\nlr = 0.001\n";

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Deterministic values in [-1, 1), the same on every rank. */
static void fill_reals(ts_real *x, long n, uint64_t seed) {
    for (long i = 0; i < n; i++)
        x[i] = (ts_real)((double)(mix(seed * 1000003u + (uint64_t)i) >> 11) * 0x1p-52 - 1.0);
}

static void add_tensor(ts_param_table *t, const char *name, int ndim, int a, int b, int c, int d) {
    int shape[4] = {a, b, c, d};
    ts_param_role role = {TS_INIT_NORMAL, TS_DRAW_IN_ORDER, ndim > 1, false, false};
    assert_true(ts_param_table_add(t, name, ndim, shape, role) >= 0);
}

/* Shapes chosen to exercise the row split: 7 rows over 2 ranks, a tensor
 * with fewer rows than ranks, 1-D, 3-D and 4-D ones. */
static void build_table(ts_param_table *t) {
    memset(t, 0, sizeof *t);
    add_tensor(t, "tok_embeddings.weight", 2, 7, 5, 0, 0);
    add_tensor(t, "layers.0.attention.wq", 2, 5, 5, 0, 0);
    add_tensor(t, "layers.0.attention_norm.weight", 1, 5, 0, 0, 0);
    add_tensor(t, "layers.0.feed_forward.w1", 3, 3, 2, 4, 0);
    add_tensor(t, "tiny", 2, 1, 3, 0, 0);
    add_tensor(t, "four_d", 4, 2, 1, 2, 3);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (rank == 0) {
        snprintf(f->dir, sizeof f->dir, "/tmp/ts_test_checkpoint_XXXXXX");
        assert_non_null(mkdtemp(f->dir));
    }
    assert_int_equal(MPI_Bcast(f->dir, sizeof f->dir, MPI_CHAR, 0, MPI_COMM_WORLD), MPI_SUCCESS);
    build_table(&f->table);
    long n = f->table.total;
    f->params = malloc((size_t)n * sizeof(ts_real));
    f->m = malloc((size_t)n * sizeof(ts_real));
    f->v = malloc((size_t)n * sizeof(ts_real));
    assert_true(f->params && f->m && f->v);
    fill_reals(f->params, n, 1);
    fill_reals(f->m, n, 2);
    fill_reals(f->v, n, 3);
    for (int i = 0; i < RNG_WORDS; i++) f->rng[i] = mix(100 + (uint64_t)i);
    f->state = (saved_run){.step = 100,
                           .tokens_seen = 123456789012LL,
                           .rng = f->rng,
                           .rng_words = RNG_WORDS,
                           .config_text = config_text};
    fill_reals(f->hidden, 10, 4);
    f->counters[0] = -5;
    f->counters[1] = INT64_MAX;
    f->counters[2] = INT64_MIN;
    f->seeds[0] = UINT64_MAX;
    f->seeds[1] = 42;
    for (int i = 0; i < 4; i++) f->replay[i] = 1000 * rank + i;
    fill_reals(f->per_rank_real, 3, 50 + (uint64_t)rank);
    ts_saved_role extras[N_EXTRAS] = {
        {"extras/hidden_state", TS_SAVED_REAL, TS_SAVED_REPLICATED, 10, f->hidden, "dimensionless",
         "test", 0, 0, NULL},
        {"extras/counters", TS_SAVED_INT64, TS_SAVED_REPLICATED, 3, f->counters, "count", NULL, 0,
         0, NULL},
        {"extras/seeds", TS_SAVED_UINT64, TS_SAVED_REPLICATED, 2, f->seeds, NULL, NULL, 0, 0, NULL},
        {"extras/replay", TS_SAVED_INT64, TS_SAVED_PER_RANK, 4, f->replay, "token index",
         "replay buffer", 0, 0, NULL},
        {"extras/rank_noise", TS_SAVED_REAL, TS_SAVED_PER_RANK, 3, f->per_rank_real, NULL, NULL, 0,
         0, NULL},
        {"extras/empty", TS_SAVED_REAL, TS_SAVED_REPLICATED, 0, NULL, NULL, "nothing yet", 0, 0,
         NULL},
    };
    memcpy(f->extras, extras, sizeof extras);
    f->open_ids = ts_count_open_ids();
    *state = f;
    return 0;
}

/* The tests create files only, no subdirectories. */
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *entry;
    char path[1024];
    while ((entry = readdir(d))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state) {
    fixture *f = *state;
    ts_assert_open_ids_unchanged(&f->open_ids);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) remove_dir(f->dir);
    MPI_Barrier(MPI_COMM_WORLD);
    ts_param_table_free(&f->table);
    free(f->params);
    free(f->m);
    free(f->v);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static ts_io_status write_step(fixture *f, long step, const ts_checkpoint_options *options,
                               ts_checkpoint_report *report) {
    f->state.step = step;
    return ckpt_write(MPI_COMM_WORLD, f->dir, &f->table, f->params, f->m, f->v, &f->state,
                      f->extras, N_EXTRAS, options, report, f->err, sizeof f->err);
}

static void path_in(const fixture *f, char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", f->dir, name);
}

static bool file_exists(const char *path) {
    struct stat info;
    return stat(path, &info) == 0;
}

static long file_size(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 ? (long)info.st_size : -1;
}

/* Copies the first `limit` bytes (all when < 0) of src to dst. Rank 0 only. */
static bool copy_file(const char *src, const char *dst, long limit) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    bool ok = in && out;
    char buf[4096];
    long copied = 0;
    while (ok) {
        size_t want = sizeof buf;
        if (limit >= 0 && (long)want > limit - copied) want = (size_t)(limit - copied);
        if (!want) break;
        size_t got = fread(buf, 1, want, in);
        if (!got) break;
        ok = fwrite(buf, 1, got, out) == got;
        copied += (long)got;
    }
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    return ok;
}

static bool write_text(const char *path, const char *text) {
    FILE *out = fopen(path, "w");
    if (!out) return false;
    bool ok = fputs(text, out) >= 0;
    return fclose(out) == 0 && ok;
}

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) print_error("rank %d: expected \"%s\" in: %s\n", rank, needle, haystack);
    return found;
}

typedef struct loaded {
    ts_real *params, *m, *v;
    uint64_t rng[RNG_WORDS];
    ts_real hidden[10];
    int64_t counters[3];
    uint64_t seeds[2];
    int64_t replay[4];
    ts_real per_rank_real[3];
    ts_saved_role extras[N_EXTRAS];
    saved_run state;
} loaded;

/* Zeroed buffers shaped like the fixture's, for reading into. */
static loaded *new_loaded(const fixture *f) {
    loaded *l = calloc(1, sizeof *l);
    assert_non_null(l);
    size_t bytes = (size_t)f->table.total * sizeof(ts_real);
    l->params = calloc(1, bytes);
    l->m = calloc(1, bytes);
    l->v = calloc(1, bytes);
    assert_true(l->params && l->m && l->v);
    memcpy(l->extras, f->extras, sizeof l->extras);
    l->extras[0].data = l->hidden;
    l->extras[1].data = l->counters;
    l->extras[2].data = l->seeds;
    l->extras[3].data = l->replay;
    l->extras[4].data = l->per_rank_real;
    l->state = (saved_run){.rng = l->rng, .rng_words = RNG_WORDS};
    return l;
}

static void free_loaded(loaded *l) {
    free(l->params);
    free(l->m);
    free(l->v);
    free(l);
}

static bool same_bytes(const void *a, const void *b, size_t n) {
    return memcmp(a, b, n) == 0;
}

/* ---------------------------------------------------------------- tests */

static void test_round_trip_is_bit_exact(void **state) {
    fixture *f = *state;
    /* 12-byte pieces: every dataset goes over in several collective rounds. */
    ts_checkpoint_options options = {.max_piece_bytes = 12};
    ts_checkpoint_report report;
    assert_status(write_step(f, 100, &options, &report), TS_IO_OK, f->err);
    char expected[512];
    path_in(f, expected, sizeof expected, "checkpoint_00000100.h5");
    assert_string_equal(report.path, expected);
    assert_all(report.bytes == file_size(expected) && report.bytes > 0);
    assert_all(report.io_seconds > 0 && report.bandwidth > 0);
    assert_int_equal(report.removed, 0);
    char marker[600];
    snprintf(marker, sizeof marker, "%s.complete", expected);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", expected);
    assert_all(file_exists(marker) && !file_exists(tmp));

    loaded *l = new_loaded(f);
    ts_checkpoint_report read_report;
    assert_status(ckpt_read(MPI_COMM_WORLD, expected, &f->table, l->params, l->m, l->v, &l->state,
                            l->extras, N_EXTRAS, &read_report, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    size_t bytes = (size_t)f->table.total * sizeof(ts_real);
    assert_all(same_bytes(l->params, f->params, bytes));
    assert_all(same_bytes(l->m, f->m, bytes));
    assert_all(same_bytes(l->v, f->v, bytes));
    assert_all(same_bytes(l->rng, f->rng, sizeof f->rng));
    assert_all(same_bytes(l->hidden, f->hidden, sizeof f->hidden));
    assert_all(same_bytes(l->counters, f->counters, sizeof f->counters));
    assert_all(same_bytes(l->seeds, f->seeds, sizeof f->seeds));
    assert_all(same_bytes(l->replay, f->replay, sizeof f->replay)); /* this rank's own row */
    assert_all(same_bytes(l->per_rank_real, f->per_rank_real, sizeof f->per_rank_real));
    assert_int_equal(l->state.step, 100);
    assert_true(l->state.tokens_seen == 123456789012LL);
    assert_true(read_report.bytes == report.bytes && read_report.bandwidth > 0);
    assert_true(read_report.step == 100 && !strcmp(read_report.path, expected));
    if (rank == 0)
        printf("checkpoint on %d rank(s): %lld bytes, write %.3f ms (%.1f MB/s), read %.3f ms "
               "(%.1f MB/s)\n",
               size, (long long)report.bytes, 1e3 * report.io_seconds, report.bandwidth / 1e6,
               1e3 * read_report.io_seconds, read_report.bandwidth / 1e6);

    ts_checkpoint_info info;
    assert_status(ts_checkpoint_read_info(MPI_COMM_WORLD, expected, &info, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_int_equal(info.step, 100);
    assert_int_equal(info.ranks, size);
    assert_int_equal(info.param_count, f->table.count);
    assert_true(info.param_total == f->table.total);
    assert_int_equal(info.rng_words, RNG_WORDS);
    assert_true(info.has_adam_m && info.has_adam_v);
    assert_string_equal(info.element_type, TS_REAL_NAME);
    assert_string_equal(info.config_text, config_text);
    ts_checkpoint_info_free(&info);
    free_loaded(l);
}

static void test_large_checkpoint_reports_bandwidth(void **state) {
    fixture *f = *state;
    /* Two million parameters, with moments 25 MB (float) or 50 MB (double):
     * big enough for the bandwidth figures to mean something, small enough
     * for a test. */
    ts_param_table big = {0};
    add_tensor(&big, "layers.0.attention.wq", 2, 1024, 1024, 0, 0);
    add_tensor(&big, "layers.0.mlp.w1", 2, 1024, 1024, 0, 0);
    size_t bytes = (size_t)big.total * sizeof(ts_real);
    ts_real *roles[3], *back[3];
    for (int r = 0; r < 3; r++) {
        roles[r] = malloc(bytes);
        back[r] = malloc(bytes);
        assert_true(roles[r] && back[r]);
        /* Touched before the read, as a model's buffers are: first-touch page
         * faults would otherwise dominate the read time on a VM. */
        memset(back[r], 0, bytes);
        fill_reals(roles[r], big.total, 7 + (uint64_t)r);
    }
    saved_run s = {.step = 5, .rng = f->rng, .rng_words = RNG_WORDS, .config_text = config_text};
    ts_checkpoint_report report, read_report;
    assert_status(ckpt_write(MPI_COMM_WORLD, f->dir, &big, roles[0], roles[1], roles[2], &s, NULL,
                             0, NULL, &report, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_true(report.bytes >= (int64_t)(3 * bytes) && report.bandwidth > 0);
    assert_status(ckpt_read(MPI_COMM_WORLD, report.path, &big, back[0], back[1], back[2], NULL,
                            NULL, 0, &read_report, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    for (int r = 0; r < 3; r++) assert_all(same_bytes(back[r], roles[r], bytes));
    /* Read bandwidth counts what was loaded: the three roles. */
    assert_true(read_report.io_seconds > 0);
    double loaded_bytes = read_report.bandwidth * read_report.io_seconds;
    assert_true(loaded_bytes > 0.999 * 3 * (double)bytes &&
                loaded_bytes < 1.001 * 3 * (double)bytes);
    if (rank == 0)
        printf("checkpoint of %ld parameters + moments on %d rank(s): %.1f MB, write %.1f ms "
               "(%.1f MB/s; %.1f ms with rename and marker), read %.1f ms (%.1f MB/s per rank)\n",
               big.total, size, (double)report.bytes / 1e6, 1e3 * report.io_seconds,
               report.bandwidth / 1e6, 1e3 * report.total_seconds, 1e3 * read_report.io_seconds,
               read_report.bandwidth / 1e6);
    for (int r = 0; r < 3; r++) {
        free(roles[r]);
        free(back[r]);
    }
    ts_param_table_free(&big);
}

static void test_moments_are_optional(void **state) {
    fixture *f = *state;
    f->state.step = 3;
    assert_status(ckpt_write(MPI_COMM_WORLD, f->dir, &f->table, f->params, NULL, NULL, &f->state,
                             NULL, 0, NULL, NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000003.h5");
    loaded *l = new_loaded(f);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, &l->state, NULL,
                            0, NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_all(same_bytes(l->params, f->params, (size_t)f->table.total * sizeof(ts_real)));
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, l->m, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "optimizer/m"));
    free_loaded(l);
}

static void test_mismatched_table_is_rejected_naming_the_tensor(void **state) {
    fixture *f = *state;
    assert_status(write_step(f, 10, NULL, NULL), TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000010.h5");
    loaded *l = new_loaded(f);
    ts_real *big = calloc((size_t)f->table.total + 100, sizeof *big);
    assert_non_null(big);

    /* One shape differs. */
    ts_param_table other = {0};
    add_tensor(&other, "tok_embeddings.weight", 2, 7, 5, 0, 0);
    add_tensor(&other, "layers.0.attention.wq", 2, 5, 6, 0, 0);
    for (int i = 2; i < f->table.count; i++) {
        const ts_param_entry *e = &f->table.entries[i];
        assert_true(ts_param_table_add(&other, e->name, e->ndim, e->shape, e->role) >= 0);
    }
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &other, big, NULL, NULL, NULL, NULL, 0, NULL,
                            f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    /* The first tensor is fine; the error names the second with both shapes. */
    assert_true(contains(f->err, "'layers.0.attention.wq'"));
    assert_true(contains(f->err, "[5, 5]"));
    assert_true(contains(f->err, "[5, 6]"));
    ts_param_table_free(&other);

    /* The model lacks a tensor the checkpoint has. */
    build_table(&other);
    ts_param_table fewer = {0};
    for (int i = 0; i < other.count - 1; i++) {
        const ts_param_entry *e = &other.entries[i];
        assert_true(ts_param_table_add(&fewer, e->name, e->ndim, e->shape, e->role) >= 0);
    }
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &fewer, big, NULL, NULL, NULL, NULL, 0, NULL,
                            f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "'four_d'"));
    assert_true(contains(f->err, "does not have"));

    /* The model has a tensor the checkpoint lacks. */
    add_tensor(&other, "layers.1.attention.wq", 2, 5, 5, 0, 0);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &other, big, NULL, NULL, NULL, NULL, 0, NULL,
                            f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "lacks tensor 'layers.1.attention.wq'"));

    /* Same tensors in another order: the flat buffers would not line up. */
    ts_param_table reordered = {0};
    for (int i = other.count - 2; i >= 0; i--) {
        const ts_param_entry *e = &other.entries[i];
        assert_true(ts_param_table_add(&reordered, e->name, e->ndim, e->shape, e->role) >= 0);
    }
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &reordered, big, NULL, NULL, NULL, NULL, 0, NULL,
                            f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "offset"));

    /* RNG state of another length, and an extra of another count. */
    l->state.rng_words = RNG_WORDS - 1;
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, &l->state, NULL,
                            0, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "state/rng"));
    l->state.rng_words = RNG_WORDS;
    l->extras[0].count = 9;
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, &l->state,
                            l->extras, N_EXTRAS, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "extras/hidden_state"));
    assert_true(contains(f->err, "[10]"));
    assert_true(contains(f->err, "[9]"));
    l->extras[0].count = 10;
    l->extras[1].type = TS_SAVED_UINT64;
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, &l->state,
                            l->extras, N_EXTRAS, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "extras/counters is stored as int64"));
    l->extras[1].type = TS_SAVED_INT64;
    ts_saved_role missing = {"extras/not_saved",
                             TS_SAVED_INT64,
                             TS_SAVED_REPLICATED,
                             1,
                             l->counters,
                             NULL,
                             NULL,
                             0,
                             0,
                             NULL};
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, &missing,
                            1, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "extras/not_saved"));

    /* Nothing was loaded into the caller's parameter buffer by the rejected reads. */
    bool untouched = true;
    for (long i = 0; i < f->table.total; i++) untouched = untouched && l->params[i] == 0;
    assert_all(untouched);

    ts_param_table_free(&other);
    ts_param_table_free(&fewer);
    ts_param_table_free(&reordered);
    free(big);
    free_loaded(l);
}

static void test_find_latest_ignores_incomplete_checkpoints(void **state) {
    fixture *f = *state;
    char path[512], found[512];
    long step = -1;
    assert_status(ts_checkpoint_find_latest(MPI_COMM_WORLD, f->dir, found, sizeof found, &step,
                                            f->err, sizeof f->err),
                  TS_IO_NOT_FOUND, f->err);
    assert_status(write_step(f, 10, NULL, NULL), TS_IO_OK, f->err);
    assert_status(write_step(f, 20, NULL, NULL), TS_IO_OK, f->err);
    bool made = true;
    if (rank == 0) {
        char src[512], dst[512];
        path_in(f, src, sizeof src, "checkpoint_00000020.h5");
        /* killed before the rename */
        path_in(f, dst, sizeof dst, "checkpoint_00000030.h5.tmp");
        made = made && copy_file(src, dst, -1);
        /* killed after the rename, before the marker */
        path_in(f, dst, sizeof dst, "checkpoint_00000040.h5");
        made = made && copy_file(src, dst, -1);
        /* killed while writing the marker */
        path_in(f, dst, sizeof dst, "checkpoint_00000045.h5");
        made = made && copy_file(src, dst, -1);
        path_in(f, dst, sizeof dst, "checkpoint_00000045.h5.complete.tmp");
        made = made && write_text(dst, "format=");
        /* a marker whose data file is gone */
        path_in(f, dst, sizeof dst, "checkpoint_00000050.h5.complete");
        made = made && write_text(dst, "bytes=10\n");
        /* names that only look similar */
        path_in(f, dst, sizeof dst, "checkpoint_00000060.h5.bak");
        made = made && copy_file(src, dst, -1);
        path_in(f, dst, sizeof dst, "checkpoint_x.h5.complete");
        made = made && write_text(dst, "bytes=10\n");
    }
    assert_all(made);
    assert_status(ts_checkpoint_find_latest(MPI_COMM_WORLD, f->dir, found, sizeof found, &step,
                                            f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    path_in(f, path, sizeof path, "checkpoint_00000020.h5");
    assert_string_equal(found, path);
    assert_int_equal(step, 20);

    /* --resume: the newest complete one is what gets loaded. */
    loaded *l = new_loaded(f);
    assert_status(ckpt_read_latest(MPI_COMM_WORLD, f->dir, &f->table, l->params, l->m, l->v,
                                   &l->state, l->extras, N_EXTRAS, NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_int_equal(l->state.step, 20);
    assert_all(same_bytes(l->params, f->params, (size_t)f->table.total * sizeof(ts_real)));
    /* An unmarked file is refused even when named explicitly. */
    path_in(f, path, sizeof path, "checkpoint_00000040.h5");
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_CORRUPT, f->err);
    assert_true(contains(f->err, "not marked complete"));
    free_loaded(l);
}

static void test_truncated_checkpoint_is_rejected(void **state) {
    fixture *f = *state;
    assert_status(write_step(f, 10, NULL, NULL), TS_IO_OK, f->err);
    char src[512], dst[512], marker_src[600], marker_dst[600];
    path_in(f, src, sizeof src, "checkpoint_00000010.h5");
    path_in(f, dst, sizeof dst, "checkpoint_00000060.h5");
    snprintf(marker_src, sizeof marker_src, "%s.complete", src);
    snprintf(marker_dst, sizeof marker_dst, "%s.complete", dst);
    long full = file_size(src), half = full / 2;
    bool made = true;
    if (rank == 0) made = copy_file(src, dst, half) && copy_file(marker_src, marker_dst, -1);
    assert_all(made);

    /* It is the newest "complete" one, so resume finds it and must refuse it. */
    char found[512];
    assert_status(ts_checkpoint_find_latest(MPI_COMM_WORLD, f->dir, found, sizeof found, NULL,
                                            f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_string_equal(found, dst);
    loaded *l = new_loaded(f);
    assert_status(ckpt_read(MPI_COMM_WORLD, dst, &f->table, l->params, l->m, l->v, &l->state, NULL,
                            0, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_CORRUPT, f->err);
    assert_true(contains(f->err, "truncated"));
    assert_true(contains(f->err, "checkpoint_00000060.h5"));

    /* A marker that agrees with the truncated size: HDF5 itself must refuse. */
    if (rank == 0) {
        char text[128];
        snprintf(text, sizeof text, "bytes=%ld\n", half);
        made = write_text(marker_dst, text);
    }
    assert_all(made);
    assert_status(ckpt_read(MPI_COMM_WORLD, dst, &f->table, l->params, l->m, l->v, &l->state, NULL,
                            0, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_NOT_HDF5, f->err);
    assert_true(contains(f->err, "checkpoint_00000060.h5 cannot be opened as HDF5"));
    assert_true(contains(f->err, "truncated"));
    /* Reading changed nothing. */
    assert_all(file_size(dst) == half && file_size(src) == full);
    free_loaded(l);
}

static void test_corrupt_data_fails_its_checksum(void **state) {
    fixture *f = *state;
    assert_status(write_step(f, 10, NULL, NULL), TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000010.h5");
    bool flipped = true;
    if (rank == 0) {
        /* Flip one bit inside the data of one tensor: same size, valid HDF5. */
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t dset = file >= 0 ? H5Dopen2(file, "params/layers.0.attention.wq", H5P_DEFAULT) : -1;
        haddr_t offset = dset >= 0 ? H5Dget_offset(dset) : HADDR_UNDEF;
        if (dset >= 0) H5Dclose(dset);
        if (file >= 0) H5Fclose(file);
        FILE *raw = offset != HADDR_UNDEF ? fopen(path, "r+b") : NULL;
        int byte = raw && fseek(raw, (long)offset + 7, SEEK_SET) == 0 ? fgetc(raw) : EOF;
        flipped = byte != EOF && fseek(raw, (long)offset + 7, SEEK_SET) == 0 &&
                  fputc(byte ^ 0x10, raw) != EOF;
        if (raw && fclose(raw) != 0) flipped = false;
    }
    assert_all(flipped);
    loaded *l = new_loaded(f);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_CORRUPT, f->err);
    assert_true(contains(f->err, "checksum"));
    assert_true(contains(f->err, "parameters"));
    free_loaded(l);
}

static void test_bad_paths_and_files_give_errors(void **state) {
    fixture *f = *state;
    char path[512], found[512];
    /* A run directory that does not exist. */
    path_in(f, path, sizeof path, "no_such_dir");
    assert_status(ts_checkpoint_find_latest(MPI_COMM_WORLD, path, found, sizeof found, NULL, f->err,
                                            sizeof f->err),
                  TS_IO_ERR_MISSING, f->err);
    assert_true(contains(f->err, "no_such_dir"));
    loaded *l = new_loaded(f);
    assert_status(ckpt_read_latest(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL,
                                   NULL, 0, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISSING, f->err);
    /* A checkpoint file that does not exist. */
    path_in(f, path, sizeof path, "checkpoint_00000001.h5");
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISSING, f->err);
    assert_true(contains(f->err, "checkpoint_00000001.h5"));

    /* Marked complete but not HDF5 at all. */
    const char *junk = "this is not an HDF5 file\n";
    char marker[600], text[64];
    path_in(f, path, sizeof path, "checkpoint_00000070.h5");
    snprintf(marker, sizeof marker, "%s.complete", path);
    snprintf(text, sizeof text, "bytes=%zu\n", strlen(junk));
    bool made = true;
    if (rank == 0) made = write_text(path, junk) && write_text(marker, text);
    assert_all(made);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_NOT_HDF5, f->err);
    assert_true(contains(f->err, "checkpoint_00000070.h5 cannot be opened as HDF5"));
    ts_checkpoint_info info;
    assert_status(ts_checkpoint_read_info(MPI_COMM_WORLD, path, &info, f->err, sizeof f->err),
                  TS_IO_ERR_NOT_HDF5, f->err);

    /* HDF5, marked complete, but not a checkpoint. */
    path_in(f, path, sizeof path, "checkpoint_00000080.h5");
    snprintf(marker, sizeof marker, "%s.complete", path);
    if (rank == 0) {
        hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        made = file >= 0 && H5Fclose(file) >= 0;
        snprintf(text, sizeof text, "bytes=%ld\n", file_size(path));
        made = made && write_text(marker, text);
    }
    assert_all(made);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_ERR_FORMAT, f->err);
    assert_true(contains(f->err, "not a thinkscale checkpoint"));
    /* The damaged "newest" checkpoint is what find_latest returns, and
     * resuming from it fails rather than silently going back further. */
    assert_status(ckpt_read_latest(MPI_COMM_WORLD, f->dir, &f->table, l->params, NULL, NULL, NULL,
                                   NULL, 0, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_FORMAT, f->err);

    /* Writing into a directory whose parent is missing. */
    path_in(f, path, sizeof path, "missing_parent/run");
    f->state.step = 1;
    assert_status(ckpt_write(MPI_COMM_WORLD, path, &f->table, f->params, NULL, NULL, &f->state,
                             NULL, 0, NULL, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_MISSING, f->err);
    /* A tensor name that is not an HDF5 name. */
    ts_param_table slashed = {0};
    add_tensor(&slashed, "layers/0", 1, 4, 0, 0, 0);
    assert_status(ckpt_write(MPI_COMM_WORLD, f->dir, &slashed, f->params, NULL, NULL, &f->state,
                             NULL, 0, NULL, NULL, f->err, sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    assert_true(contains(f->err, "layers/0"));
    ts_param_table_free(&slashed);
    free_loaded(l);
}

static void test_keep_last_deletes_only_older_complete_checkpoints(void **state) {
    fixture *f = *state;
    char path[512];
    bool made = true;
    if (rank == 0) {
        /* An unmarked file older than everything, and a foreign file. */
        path_in(f, path, sizeof path, "checkpoint_00000000.h5");
        made = write_text(path, "debris of a killed writer");
        path_in(f, path, sizeof path, "notes.txt");
        made = made && write_text(path, "keep me");
    }
    assert_all(made);
    ts_checkpoint_options options = {.keep_last = 2};
    ts_checkpoint_report report;
    for (long step = 1; step <= 5; step++)
        assert_status(write_step(f, step, &options, &report), TS_IO_OK, f->err);
    assert_int_equal(report.removed, 1);
    bool expected = true;
    for (long step = 0; step <= 5; step++) {
        char name[64], marker[600];
        snprintf(name, sizeof name, "checkpoint_%08ld.h5", step);
        path_in(f, path, sizeof path, name);
        snprintf(marker, sizeof marker, "%s.complete", path);
        bool kept = step >= 4;
        expected =
            expected && file_exists(marker) == kept && file_exists(path) == (kept || step == 0);
    }
    path_in(f, path, sizeof path, "notes.txt");
    expected = expected && file_exists(path);
    assert_all(expected);

    /* Writing an older step (a resumed run going back) never deletes newer ones. */
    assert_status(write_step(f, 2, &options, &report), TS_IO_OK, f->err);
    assert_int_equal(report.removed, 0);
    path_in(f, path, sizeof path, "checkpoint_00000005.h5.complete");
    assert_all(file_exists(path));
}

static void test_complete_checkpoint_is_not_overwritten(void **state) {
    fixture *f = *state;
    assert_status(write_step(f, 7, NULL, NULL), TS_IO_OK, f->err);
    char path[512], tmp[600];
    path_in(f, path, sizeof path, "checkpoint_00000007.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    long before = file_size(path);
    ts_real original = f->params[0];
    f->params[0] = original + 1;
    assert_status(write_step(f, 7, NULL, NULL), TS_IO_ERR_EXISTS, f->err);
    assert_true(contains(f->err, "checkpoint_00000007.h5"));
    assert_all(file_size(path) == before && !file_exists(tmp));
    loaded *l = new_loaded(f);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_all(l->params[0] == original);

    ts_checkpoint_options options = {.overwrite = true};
    assert_status(write_step(f, 7, &options, NULL), TS_IO_OK, f->err);
    assert_status(ckpt_read(MPI_COMM_WORLD, path, &f->table, l->params, NULL, NULL, NULL, NULL, 0,
                            NULL, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_all(l->params[0] == original + 1);
    f->params[0] = original;
    free_loaded(l);
}

static void test_replicas_that_differ_are_refused(void **state) {
    fixture *f = *state;
    if (size < 2) skip();
    if (rank == 1) f->params[3] += 1;
    assert_status(write_step(f, 9, NULL, NULL), TS_IO_ERR_ARGS, f->err);
    assert_true(contains(f->err, "differ between ranks"));
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000009.h5");
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_all(!file_exists(path) && !file_exists(tmp));
    if (rank == 1) f->params[3] -= 1;
}

/* Replicated state loads on any number of ranks; per-rank state only on the
 * number that wrote it. */
static void test_rank_count_change(void **state) {
    fixture *f = *state;
    if (size < 2) skip();
    assert_status(write_step(f, 11, NULL, NULL), TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000011.h5");
    loaded *l = new_loaded(f);
    char err[1024] = "";
    /* Each rank alone, as a 1-rank job would. */
    ts_io_status st = ckpt_read(MPI_COMM_SELF, path, &f->table, l->params, l->m, l->v, &l->state,
                                l->extras, 3, NULL, err, sizeof err);
    assert_all(st == TS_IO_OK);
    size_t bytes = (size_t)f->table.total * sizeof(ts_real);
    assert_all(same_bytes(l->params, f->params, bytes) && same_bytes(l->v, f->v, bytes) &&
               same_bytes(l->seeds, f->seeds, sizeof f->seeds));
    st = ckpt_read(MPI_COMM_SELF, path, &f->table, l->params, NULL, NULL, NULL, l->extras, N_EXTRAS,
                   NULL, err, sizeof err);
    assert_all(st == TS_IO_ERR_MISMATCH);
    assert_true(contains(err, "extras/replay is per-rank state of 2 ranks, but this run has 1"));
    free_loaded(l);
}

static bool string_attr_is(hid_t loc, const char *name, const char *want) {
    char *value = NULL;
    bool ok = ts_h5_read_string_attr(loc, name, &value) >= 0 && (!want || !strcmp(value, want));
    if (!ok)
        print_error("attribute %s is %s, expected %s\n", name, value ? value : "(missing)",
                    want ? want : "(any)");
    free(value);
    return ok;
}

static void test_file_is_self_describing(void **state) {
    fixture *f = *state;
    assert_int_equal(setenv("SLURM_JOB_ID", "4242", 1), 0);
    assert_int_equal(setenv("SLURM_JOB_NODELIST", "node[01-02]", 1), 0);
    assert_status(write_step(f, 12, NULL, NULL), TS_IO_OK, f->err);
    unsetenv("SLURM_JOB_ID");
    unsetenv("SLURM_JOB_NODELIST");
    bool ok = true;
    if (rank == 0) {
        /* Read back with plain serial HDF5, as any tool would. */
        char path[512];
        path_in(f, path, sizeof path, "checkpoint_00000012.h5");
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        ok = file >= 0;
        int64_t value = -1;
        ok = ok && string_attr_is(file, "format", "thinkscale-checkpoint");
        ok = ok && string_attr_is(file, "config", config_text);
        ok = ok && string_attr_is(file, "element_type", TS_REAL_NAME);
        ok = ok && string_attr_is(file, "hostname", NULL) && string_attr_is(file, "compiler", NULL);
        ok = ok && string_attr_is(file, "git_commit", NULL) &&
             string_attr_is(file, "mpi_library", NULL) && string_attr_is(file, "blas_core", NULL);
        ok = ok && string_attr_is(file, "written_utc", NULL) &&
             string_attr_is(file, "created_utc", NULL);
        ok = ok && ts_h5_read_int64_attr(file, "ranks", &value) >= 0 && value == size;
        ok = ok && ts_h5_read_int64_attr(file, "threads_per_rank", &value) >= 0 && value >= 1;
        ok = ok && ts_h5_read_int64_attr(file, "step", &value) >= 0 && value == 12;
        ok = ok && ts_h5_read_int64_attr(file, "tokens_seen", &value) >= 0 &&
             value == 123456789012LL;
        hid_t slurm = ok ? H5Gopen2(file, "provenance/slurm", H5P_DEFAULT) : -1;
        ok = ok && slurm >= 0 && string_attr_is(slurm, "SLURM_JOB_ID", "4242") &&
             string_attr_is(slurm, "SLURM_JOB_NODELIST", "node[01-02]");
        if (slurm >= 0) H5Gclose(slurm);
        hid_t dset = ok ? H5Dopen2(file, "params/layers.0.feed_forward.w1", H5P_DEFAULT) : -1;
        hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
        hid_t type = dset >= 0 ? H5Dget_type(dset) : -1;
        hsize_t dims[4] = {0};
        ok = ok && space >= 0 && H5Sget_simple_extent_ndims(space) == 3 &&
             H5Sget_simple_extent_dims(space, dims, NULL) == 3 && dims[0] == 3 && dims[1] == 2 &&
             dims[2] == 4;
        ok = ok && type >= 0 && H5Tget_class(type) == H5T_FLOAT &&
             H5Tget_size(type) == sizeof(ts_real);
        ok = ok && string_attr_is(dset, "units", "dimensionless") &&
             string_attr_is(dset, "description", NULL);
        ok = ok && ts_h5_read_int64_attr(dset, "offset", &value) >= 0 &&
             value == f->table.entries[3].offset;
        if (type >= 0) H5Tclose(type);
        if (space >= 0) H5Sclose(space);
        if (dset >= 0) H5Dclose(dset);
        dset = ok ? H5Dopen2(file, "extras/replay", H5P_DEFAULT) : -1;
        space = dset >= 0 ? H5Dget_space(dset) : -1;
        ok = ok && space >= 0 && H5Sget_simple_extent_dims(space, dims, NULL) == 2 &&
             dims[0] == (hsize_t)size && dims[1] == 4 && string_attr_is(dset, "layout", "per_rank");
        if (ok && size > 1) {
            int64_t rows[8] = {0};
            ok = H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0 &&
                 rows[4] == 1000 && rows[7] == 1003; /* rank 1's row */
        }
        if (space >= 0) H5Sclose(space);
        if (dset >= 0) H5Dclose(dset);
        if (file >= 0) H5Fclose(file);
    }
    assert_all(ok);
}

/* A sharded role: each rank writes its range of one array into one dataset;
 * it reads back with the same split, with another one, and whole on each
 * rank alone; shards that do not tile the array are refused. */
static void test_sharded_role_round_trip(void **state) {
    fixture *f = *state;
    enum { COUNT = 11 };
    ts_real whole[COUNT], back[COUNT];
    fill_reals(whole, COUNT, 21);
    long first = (long)COUNT * rank / size, last = (long)COUNT * (rank + 1) / size;
    ts_saved_role roles[2] = {ts_saved_params(&f->table, f->params),
                              {.name = "optimizer/m_shards",
                               .type = TS_SAVED_REAL,
                               .layout = TS_SAVED_SHARDED,
                               .count = COUNT,
                               .data = whole + first,
                               .shard_first = first,
                               .shard_count = last - first}};
    ts_checkpoint_state cs = {.step = 13, .tokens_seen = 1, .config_text = config_text};
    ts_checkpoint_options tiny = {.max_piece_bytes = 8};
    assert_status(ts_checkpoint_write(MPI_COMM_WORLD, f->dir, &cs, roles, 2, &tiny, NULL, f->err,
                                      sizeof f->err),
                  TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000013.h5");

    /* The same split. */
    memset(back, 0, sizeof back);
    ts_saved_role read[2] = {roles[0], roles[1]};
    read[0].data = calloc((size_t)f->table.total, sizeof(ts_real));
    assert_non_null(read[0].data);
    read[1].data = back + first;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, NULL, read, 2, NULL, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_all(same_bytes(back + first, whole + first, (size_t)(last - first) * sizeof(ts_real)));
    /* Another split: every rank reads elements [2, 9), across writers' shards. */
    memset(back, 0, sizeof back);
    read[1].data = back + 2;
    read[1].shard_first = 2;
    read[1].shard_count = 7;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, NULL, read, 2, NULL, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_all(same_bytes(back + 2, whole + 2, 7 * sizeof(ts_real)));
    /* Whole, on each rank alone (a 1-rank job resuming a 2-rank run). */
    memset(back, 0, sizeof back);
    read[1].data = back;
    read[1].shard_first = 0;
    read[1].shard_count = COUNT;
    char err[1024] = "";
    ts_io_status st = ts_checkpoint_read(MPI_COMM_SELF, path, NULL, read, 2, NULL, err, sizeof err);
    assert_all(st == TS_IO_OK && same_bytes(back, whole, sizeof whole));
    /* Asked for as a replicated role, the shards read as one array. */
    memset(back, 0, sizeof back);
    read[1].layout = TS_SAVED_REPLICATED;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, NULL, read, 2, NULL, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_all(same_bytes(back, whole, sizeof whole));
    free(read[0].data);

    /* The file: one 1-D dataset of the whole array, laid out "sharded". */
    bool ok = true;
    if (rank == 0) {
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t dset = file >= 0 ? H5Dopen2(file, "optimizer/m_shards", H5P_DEFAULT) : -1;
        hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
        hsize_t dims[2] = {0, 0};
        ok = space >= 0 && H5Sget_simple_extent_ndims(space) == 1 &&
             H5Sget_simple_extent_dims(space, dims, NULL) == 1 && dims[0] == COUNT &&
             string_attr_is(dset, "layout", "sharded");
        ts_real stored[COUNT];
        ok = ok && H5Dread(dset, CKPT_TEST_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT, stored) >= 0 &&
             same_bytes(stored, whole, sizeof whole);
        if (space >= 0) H5Sclose(space);
        if (dset >= 0) H5Dclose(dset);
        if (file >= 0) H5Fclose(file);
    }
    assert_all(ok);

    /* Shards that leave a gap. */
    roles[1].shard_count = last - first - (rank == size - 1 ? 1 : 0);
    cs.step = 14;
    assert_status(ts_checkpoint_write(MPI_COMM_WORLD, f->dir, &cs, roles, 2, NULL, NULL, f->err,
                                      sizeof f->err),
                  TS_IO_ERR_ARGS, f->err);
    assert_true(contains(f->err, "optimizer/m_shards"));
    assert_true(contains(f->err, "cover 10 of its 11 elements"));
}

/* A replicated one-array role (ddp's moments) reads as a sharded one (a
 * ZeRO run resuming it): each rank gets its range, checked against the
 * whole array's checksum. A per-rank role does not read as either. */
static void test_replicated_role_reads_sharded(void **state) {
    fixture *f = *state;
    enum { COUNT = 9 };
    ts_real whole[COUNT], back[COUNT];
    fill_reals(whole, COUNT, 5);
    ts_saved_role roles[2] = {ts_saved_params(&f->table, f->params),
                              ts_saved_moment("optimizer/m", &f->table, whole, NULL, NULL)};
    roles[1].count = COUNT;
    ts_checkpoint_state cs = {.step = 15, .tokens_seen = 1, .config_text = config_text};
    assert_status(ts_checkpoint_write(MPI_COMM_WORLD, f->dir, &cs, roles, 2, NULL, NULL, f->err,
                                      sizeof f->err),
                  TS_IO_OK, f->err);
    char path[512];
    path_in(f, path, sizeof path, "checkpoint_00000015.h5");
    long first = (long)COUNT * rank / size, last = (long)COUNT * (rank + 1) / size;
    memset(back, 0, sizeof back);
    ts_saved_role read[2] = {roles[0], roles[1]};
    read[0].data = calloc((size_t)f->table.total, sizeof(ts_real));
    assert_non_null(read[0].data);
    read[1].layout = TS_SAVED_SHARDED;
    read[1].data = back + first;
    read[1].shard_first = first;
    read[1].shard_count = last - first;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, NULL, read, 2, NULL, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_all(same_bytes(back + first, whole + first, (size_t)(last - first) * sizeof(ts_real)));
    read[1].layout = TS_SAVED_PER_RANK;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, NULL, read, 2, NULL, f->err, sizeof f->err),
        TS_IO_ERR_MISMATCH, f->err);
    assert_true(contains(f->err, "replicated state, the caller expects per_rank"));
    free(read[0].data);
}

/* A checkpoint written by the build before checkpoints were described by
 * roles (format version 1, tests/fixtures/README.md) still loads, with the
 * values its datasets hold. */
static void test_version_1_checkpoint_loads(void **state) {
    fixture *f = *state;
    const char *path = "tests/fixtures/checkpoint_v1_" TS_REAL_NAME "/checkpoint_00000002.h5";
    ts_checkpoint_info info;
    assert_status(ts_checkpoint_read_info(MPI_COMM_WORLD, path, &info, f->err, sizeof f->err),
                  TS_IO_OK, f->err);
    assert_int_equal(info.format_version, 1);
    assert_int_equal(info.step, 2);
    assert_int_equal(info.ranks, 2);
    assert_int_equal(info.rng_words, 4);
    assert_true(info.has_adam_m && info.has_adam_v);
    assert_non_null(strstr(info.config_text, "arch = ebt"));
    ts_checkpoint_info_free(&info);

    /* Its parameter table, from the file itself: names, shapes, offsets. */
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t group = H5Gopen2(file, "params", H5P_DEFAULT);
    H5G_info_t ginfo;
    assert_true(group >= 0 && H5Gget_info(group, &ginfo) >= 0);
    int n = (int)ginfo.nlinks;
    char(*names)[TS_PARAM_NAME_MAX] = calloc((size_t)n, sizeof *names);
    int64_t *offsets = calloc((size_t)n, sizeof *offsets);
    assert_true(names && offsets);
    for (int i = 0; i < n; i++) {
        assert_true(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, names[i],
                                       TS_PARAM_NAME_MAX, H5P_DEFAULT) > 0);
        hid_t dset = H5Dopen2(group, names[i], H5P_DEFAULT);
        assert_true(dset >= 0 && ts_h5_read_int64_attr(dset, "offset", &offsets[i]) >= 0);
        H5Dclose(dset);
    }
    ts_param_table table = {0};
    for (long next = 0, added = 0; added < n; added++) { /* in offset order */
        int i = 0;
        while (offsets[i] != next) i++;
        hid_t dset = H5Dopen2(group, names[i], H5P_DEFAULT);
        hid_t space = H5Dget_space(dset);
        hsize_t dims[4];
        int ndim = H5Sget_simple_extent_dims(space, dims, NULL);
        int shape[4] = {1, 1, 1, 1};
        for (int d = 0; d < ndim; d++) shape[d] = (int)dims[d];
        H5Sclose(space);
        H5Dclose(dset);
        ts_param_role role = {TS_INIT_NORMAL, TS_DRAW_IN_ORDER, ndim > 1, false, false};
        int index = ts_param_table_add(&table, names[i], ndim, shape, role);
        assert_true(index >= 0);
        next += table.entries[index].numel;
    }
    long total = table.total;
    ts_real *expected = malloc(3 * (size_t)total * sizeof *expected);
    ts_real *got = calloc(3 * (size_t)total, sizeof *got);
    assert_true(expected && got);
    for (int i = 0; i < table.count; i++) {
        const ts_param_entry *e = &table.entries[i];
        hid_t dset = H5Dopen2(group, e->name, H5P_DEFAULT);
        assert_true(H5Dread(dset, CKPT_TEST_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            expected + e->offset) >= 0);
        H5Dclose(dset);
    }
    H5Gclose(group);
    const char *moments[2] = {"optimizer/m", "optimizer/v"};
    for (int k = 0; k < 2; k++) {
        hid_t dset = H5Dopen2(file, moments[k], H5P_DEFAULT);
        assert_true(H5Dread(dset, CKPT_TEST_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            expected + (k + 1) * total) >= 0);
        H5Dclose(dset);
    }
    /* The replay buffer's state row of each rank (2 ranks wrote it). */
    int64_t replay_rows[2][2];
    hid_t dset = H5Dopen2(file, "extras/replay_state", H5P_DEFAULT);
    assert_true(H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, replay_rows) >= 0);
    H5Dclose(dset);
    H5Fclose(file);

    ts_saved_role roles[4] = {
        ts_saved_params(&table, got),
        ts_saved_moment("optimizer/m", &table, got + total, NULL, NULL),
        ts_saved_moment("optimizer/v", &table, got + 2 * total, NULL, NULL),
    };
    int64_t replay_state[2] = {-1, -1};
    roles[3] = (ts_saved_role){.name = "extras/replay_state",
                               .type = TS_SAVED_INT64,
                               .layout = TS_SAVED_PER_RANK,
                               .count = 2,
                               .data = replay_state};
    ts_checkpoint_state cs = {0};
    /* Per-rank state loads only on the 2 ranks that wrote it. */
    int n_roles = size == 2 ? 4 : 3;
    assert_status(
        ts_checkpoint_read(MPI_COMM_WORLD, path, &cs, roles, n_roles, NULL, f->err, sizeof f->err),
        TS_IO_OK, f->err);
    assert_int_equal(cs.step, 2);
    assert_all(same_bytes(got, expected, 3 * (size_t)total * sizeof *got));
    if (size == 2)
        assert_all(replay_state[0] == replay_rows[rank][0] &&
                   replay_state[1] == replay_rows[rank][1]);
    else
        assert_status(
            ts_checkpoint_read(MPI_COMM_WORLD, path, &cs, roles, 4, NULL, f->err, sizeof f->err),
            TS_IO_ERR_MISMATCH, f->err);
    ts_param_table_free(&table);
    free(expected);
    free(got);
    free(names);
    free(offsets);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_is_bit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_checkpoint_reports_bandwidth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moments_are_optional, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatched_table_is_rejected_naming_the_tensor, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_find_latest_ignores_incomplete_checkpoints, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncated_checkpoint_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_data_fails_its_checksum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths_and_files_give_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_last_deletes_only_older_complete_checkpoints,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_complete_checkpoint_is_not_overwritten, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_replicas_that_differ_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rank_count_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_is_self_describing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replicated_role_reads_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_role_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_1_checkpoint_loads, setup, teardown),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_checkpoint", tests, sizeof tests / sizeof tests[0],
                              &rank, &size, NULL, NULL);
}
