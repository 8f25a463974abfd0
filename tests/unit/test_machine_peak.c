/* The advice about OpenBLAS's kernel choice (src/train/machine_peak.c): given
 * when the kernels are an SSE-only set on a CPU with AVX2 or AVX-512, naming
 * the core type to ask for; silent otherwise. */
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

static void silent_when_the_choice_fits(void **state) {
    (void)state;
    char advice[400] = "untouched";
    assert_false(ts_blas_core_advice("SkylakeX", true, true, advice, sizeof advice));
    assert_false(ts_blas_core_advice("Haswell", true, false, advice, sizeof advice));
    assert_false(ts_blas_core_advice("Prescott", false, false, advice, sizeof advice));
    assert_false(ts_blas_core_advice(NULL, true, true, advice, sizeof advice));
    assert_string_equal(advice, "untouched");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_kernels_on_avx512_ask_for_skylakex),
        cmocka_unit_test(sse_kernels_on_avx2_ask_for_haswell),
        cmocka_unit_test(silent_when_the_choice_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
