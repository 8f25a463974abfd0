/* src/train/machine_peak.c: the advice about OpenBLAS's kernel choice (given
 * when the kernels are a set for narrower vectors than the CPU has, naming
 * the core type to ask for; silent otherwise), the kernel set thinkscale
 * restarts with, and the time the peak probe charges a GEMM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "train/machine_peak.h"

static void sse_kernels_on_avx512_ask_for_skylakex(void **state) {
    (void)state;
    char advice[400] = "";
    assert_true(ts_blas_core_advice("Prescott", true, true, advice, sizeof advice));
    assert_non_null(strstr(advice, "Prescott"));
    assert_non_null(strstr(advice, "OPENBLAS_CORETYPE=SkylakeX"));
}

static void sse_kernels_on_avx2_ask_for_haswell(void **state) {
    (void)state;
    char advice[400] = "";
    assert_true(ts_blas_core_advice("Nehalem", true, false, advice, sizeof advice));
    assert_non_null(strstr(advice, "OPENBLAS_CORETYPE=Haswell"));
    assert_null(strstr(advice, "SkylakeX"));
}

static void avx2_kernels_on_avx512_ask_for_skylakex(void **state) {
    (void)state;
    /* An environment exporting OPENBLAS_CORETYPE=Haswell on an AVX-512 AMD
     * EPYC (seen here): the sgemm rate halves. */
    char advice[400] = "";
    assert_true(ts_blas_core_advice("Haswell", true, true, advice, sizeof advice));
    assert_non_null(strstr(advice, "Haswell"));
    assert_non_null(strstr(advice, "AVX-512"));
    assert_non_null(strstr(advice, "OPENBLAS_CORETYPE=SkylakeX"));
}

static void silent_when_the_choice_fits(void **state) {
    (void)state;
    char advice[400] = "untouched";
    assert_false(ts_blas_core_advice("SkylakeX", true, true, advice, sizeof advice));
    assert_false(ts_blas_core_advice("Cooperlake", true, true, advice, sizeof advice));
    assert_false(ts_blas_core_advice("Haswell", true, false, advice, sizeof advice));
    assert_false(ts_blas_core_advice("ARMV8", true, true, advice, sizeof advice));
    assert_false(ts_blas_core_advice("Prescott", false, false, advice, sizeof advice));
    assert_false(ts_blas_core_advice(NULL, true, true, advice, sizeof advice));
    assert_string_equal(advice, "untouched");
}

static void better_core_only_for_narrower_sets_than_the_cpu(void **state) {
    (void)state;
    assert_string_equal(ts_blas_better_core("Prescott", true, true), "SkylakeX");
    assert_string_equal(ts_blas_better_core("Core2", true, false), "Haswell");
    assert_string_equal(ts_blas_better_core("Sandybridge", true, false), "Haswell");
    assert_string_equal(ts_blas_better_core("Haswell", true, true), "SkylakeX");
    assert_string_equal(ts_blas_better_core("Zen", true, true), "SkylakeX");
    assert_null(ts_blas_better_core("Haswell", true, false)); /* AVX2 set, AVX2 CPU */
    assert_null(ts_blas_better_core("Zen", true, false));
    assert_null(ts_blas_better_core("SkylakeX", true, true));
    assert_null(ts_blas_better_core("SapphireRapids", true, true));
    assert_null(ts_blas_better_core("Prescott", false, false));
    assert_null(ts_blas_better_core("ARMV8", true, true)); /* a set it does not know */
    assert_null(ts_blas_better_core(NULL, true, true));
}

static void probe_charges_the_shorter_of_wall_and_cpu_time(void **state) {
    (void)state;
    /* Time-sliced with another process: the wall time doubles, the CPU
     * time does not, and the CPU time is charged. */
    assert_true(ts_peak_probe_seconds(0.060, 0.030) == 0.030);
    /* Two BLAS threads: CPU time is the sum, the wall time is charged. */
    assert_true(ts_peak_probe_seconds(0.030, 0.060) == 0.030);
    /* A CPU clock that did not tick: wall time. */
    assert_true(ts_peak_probe_seconds(0.030, 0.0) == 0.030);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_kernels_on_avx512_ask_for_skylakex),
        cmocka_unit_test(sse_kernels_on_avx2_ask_for_haswell),
        cmocka_unit_test(silent_when_the_choice_fits),
        cmocka_unit_test(better_core_only_for_narrower_sets_than_the_cpu),
        cmocka_unit_test(avx2_kernels_on_avx512_ask_for_skylakex),
        cmocka_unit_test(probe_charges_the_shorter_of_wall_and_cpu_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
