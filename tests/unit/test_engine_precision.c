/* Float against double on the same network (tiny_net.h, same seed).
 *
 * The two element types are two builds of the same sources and cannot be
 * linked into one binary, so the comparison goes through a file:
 *   float build   computes the loss and the parameter gradients and writes
 *                 them to ../precision_float.bin (tests run in build/<variant>/,
 *                 so the file lands in build/);
 *   double build  (and the ASan build, also double) recomputes both in double
 *                 and compares: loss within 1e-4 relative, gradients within
 *                 1e-3 normwise, overall and per parameter.
 * tests/run_tests.sh runs the float build first. A missing file in a double
 * build is a failure, not a skip: the comparison is the point of the test.
 * TS_PRECISION_FILE overrides the path. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tiny_net.h"
#include "engine_fixture.h"

#define NET_SEED 424242u
#define FILE_MAGIC "tsprec01"

static const char *precision_file(void) {
    const char *path = getenv("TS_PRECISION_FILE");
    return path ? path : "../precision_float.bin";
}

/* What the float build writes and the double build recomputes. */
typedef struct result {
    uint64_t seed;
    int64_t n_values;
    double loss;
    double *grads; /* n_values */
} result;

/* Loss and gradients through ts_backward into a flat gradient buffer, as the
 * trainer does it. */
static void compute(result *out) {
    tiny_net net;
    ts_ctx ctx;
    assert_true(tiny_net_init(&net, NET_SEED));
    assert_true(ts_ctx_init(&ctx, 0));
    ts_ctx_set_error_handler(&ctx, fail_test_on_engine_error, NULL);
#ifdef TS_DOUBLE
    /* Start from the very numbers the float build starts from, so that only
     * the arithmetic differs. */
    for (long i = 0; i < net.n_values; i++) net.values[i] = (float)net.values[i];
    for (size_t i = 0; i < sizeof net.input / sizeof net.input[0]; i++)
        net.input[i] = (float)net.input[i];
#endif
    ts_real *grads = calloc((size_t)net.n_values, sizeof *grads);
    assert_non_null(grads);
    ts_tensor *params[TINY_NET_N_PARAMS];
    tiny_net_leaves(&ctx, &net, grads, params);
    ts_tensor *loss = tiny_net_loss(&ctx, &net, params);
    ts_backward(&ctx, loss, NULL);

    out->seed = NET_SEED;
    out->n_values = net.n_values;
    out->loss = ts_item(&ctx, loss);
    out->grads = malloc((size_t)net.n_values * sizeof *out->grads);
    assert_non_null(out->grads);
    for (long i = 0; i < net.n_values; i++) out->grads[i] = grads[i];
    free(grads);
    ts_ctx_free(&ctx);
    tiny_net_free(&net);
}

/* Returns NULL on success, else what went wrong. */
static const char *read_result(const char *path, result *r) {
    FILE *f = fopen(path, "rb");
    if (!f) return "cannot open";
    char magic[8];
    const char *problem = NULL;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, FILE_MAGIC, 8) != 0)
        problem = "not a precision file of this version";
    else if (fread(&r->seed, sizeof r->seed, 1, f) != 1 ||
             fread(&r->n_values, sizeof r->n_values, 1, f) != 1 ||
             fread(&r->loss, sizeof r->loss, 1, f) != 1 || r->n_values <= 0 ||
             r->n_values > (1 << 24))
        problem = "truncated header";
    else if (!(r->grads = malloc((size_t)r->n_values * sizeof *r->grads)))
        problem = "out of memory";
    else if (fread(r->grads, sizeof *r->grads, (size_t)r->n_values, f) != (size_t)r->n_values)
        problem = "truncated gradients";
    fclose(f);
    return problem;
}

static double norm(const double *a, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += a[i] * a[i];
    return sqrt(s);
}

/* Whatever the build, the numbers must be usable: finite, and a gradient
 * that reaches every parameter. */
static void test_loss_and_gradients_are_sane(void **state) {
    (void)state;
    result r;
    compute(&r);
    assert_true(isfinite(r.loss));
    /* Random logits over V classes give a loss near log V. */
    assert_true(r.loss > 0.2 * log(TINY_NET_VOCAB) && r.loss < 5 * log(TINY_NET_VOCAB));
    tiny_net layout;
    assert_true(tiny_net_init(&layout, NET_SEED));
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        long count = tiny_net_param_count(&layout, p);
        double block = norm(r.grads + layout.offset[p], count);
        if (!(isfinite(block) && block > 0))
            fail_msg("gradient of %s has norm %g", tiny_net_param_names[p], block);
    }
    tiny_net_free(&layout);
    free(r.grads);
}

#ifndef TS_DOUBLE

static bool write_result(const char *path, const result *r) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(FILE_MAGIC, 8, 1, f) == 1 && fwrite(&r->seed, sizeof r->seed, 1, f) == 1 &&
              fwrite(&r->n_values, sizeof r->n_values, 1, f) == 1 &&
              fwrite(&r->loss, sizeof r->loss, 1, f) == 1 &&
              fwrite(r->grads, sizeof *r->grads, (size_t)r->n_values, f) == (size_t)r->n_values;
    return fclose(f) == 0 && ok;
}

/* The float build writes its numbers for the double build, and checks they
 * read back unchanged. */
static void test_float_writes_reference(void **state) {
    (void)state;
    result r, back = {0};
    compute(&r);
    const char *path = precision_file();
    if (!write_result(path, &r)) fail_msg("cannot write %s", path);
    const char *problem = read_result(path, &back);
    if (problem) fail_msg("%s: %s", path, problem);
    assert_true(back.seed == r.seed && back.n_values == r.n_values && back.loss == r.loss);
    assert_memory_equal(back.grads, r.grads, (size_t)r.n_values * sizeof *r.grads);
    print_message("wrote %s: loss %.9g, %ld gradient values\n", path, r.loss, (long)r.n_values);
    free(r.grads);
    free(back.grads);
}

#else

static double norm_of_difference(const double *a, const double *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return sqrt(s);
}

static void test_double_matches_float(void **state) {
    (void)state;
    const char *path = precision_file();
    result f = {0}, d;
    const char *problem = read_result(path, &f);
    if (problem)
        fail_msg("%s: %s. The float build's test_engine_precision writes this file: run it "
                 "first (tests/run_tests.sh runs float, then double, then asan).",
                 path, problem);
    compute(&d);
    if (f.seed != d.seed || f.n_values != d.n_values)
        fail_msg("%s is for another network (seed %llu, %lld values; expected seed %llu, %lld "
                 "values): rerun the float build's tests",
                 path, (unsigned long long)f.seed, (long long)f.n_values,
                 (unsigned long long)d.seed, (long long)d.n_values);

    double loss_error = fabs(f.loss - d.loss) / fabs(d.loss);
    double grad_error =
        norm_of_difference(f.grads, d.grads, d.n_values) / norm(d.grads, d.n_values);
    print_message("loss float %.9g double %.12g (relative %.2g); gradients normwise %.2g\n", f.loss,
                  d.loss, loss_error, grad_error);
    if (!(loss_error <= 1e-4)) fail_msg("loss differs by %.3g relative", loss_error);
    if (!(grad_error <= 1e-3)) fail_msg("gradients differ by %.3g normwise", grad_error);

    tiny_net layout;
    assert_true(tiny_net_init(&layout, NET_SEED));
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        long off = layout.offset[p];
        long count = tiny_net_param_count(&layout, p);
        double e =
            norm_of_difference(f.grads + off, d.grads + off, count) / norm(d.grads + off, count);
        if (!(e <= 1e-3))
            fail_msg("gradient of %s differs by %.3g normwise", tiny_net_param_names[p], e);
    }
    tiny_net_free(&layout);
    free(f.grads);
    free(d.grads);
}

#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_and_gradients_are_sane),
#ifndef TS_DOUBLE
        cmocka_unit_test(test_float_writes_reference),
#else
        cmocka_unit_test(test_double_matches_float),
#endif
    };
    return cmocka_run_group_tests_name("engine float vs double (" TS_REAL_NAME ")", tests, NULL,
                                       NULL);
}
