/* The random generator (src/engine/rng.c): ts_rng_fill_normal gives exactly
 * the values of a loop of ts_rng_normal (mean + stddev n, rounded to
 * ts_real) and leaves the stream where that loop leaves it. The float build
 * computes them by vectorised approximations that fall back to libm near a
 * float rounding boundary; every run's initial logits, Langevin noise and
 * parameter initialisation depend on the two being the same bits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/rng.h"

static void fill_normal_matches_the_scalar_draws(void **state) {
    (void)state;
    /* Lengths that end inside a block; scales from the logits' and the
     * initialisation's to a constant. */
    const long lengths[] = {1, 63, 65, 1000003};
    const double settings[][2] = {{0, 1}, {0, 0.05}, {1.5, 3}, {-2, 1e-3}, {0.25, 0}};
    long n_max = lengths[3];
    ts_real *fast = malloc((size_t)n_max * sizeof *fast);
    ts_real *plain = malloc((size_t)n_max * sizeof *plain);
    assert_non_null(fast);
    assert_non_null(plain);
    long compared = 0;
    for (int l = 0; l < 4; l++)
        for (int s = 0; s < 5; s++) {
            ts_rng a, b;
            ts_rng_seed_stream(&a, 33, (uint64_t)(l * 5 + s));
            b = a;
            long n = lengths[l];
            double mean = settings[s][0], stddev = settings[s][1];
            ts_rng_fill_normal(&a, fast, n, mean, stddev);
            for (long i = 0; i < n; i++) plain[i] = (ts_real)(mean + stddev * ts_rng_normal(&b));
            for (long i = 0; i < n; i++)
                if (memcmp(&fast[i], &plain[i], sizeof *fast))
                    fail_msg("element %ld of %ld (mean %g, stddev %g): %.17g, the draws give %.17g",
                             i, n, mean, stddev, (double)fast[i], (double)plain[i]);
            assert_memory_equal(&a, &b, sizeof a); /* the stream continues alike */
            compared += n;
        }
    assert_int_equal(compared, 5 * (1 + 63 + 65 + 1000003));
    free(fast);
    free(plain);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fill_normal_matches_the_scalar_draws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
