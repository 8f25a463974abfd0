#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "engine_fixture.h"

void fail_test_on_engine_error(void *user, const char *message) {
    (void)user;
    fail_msg("engine error: %s", message);
}

int engine_fixture_setup(void **state, size_t arena_bytes, uint64_t seed) {
    engine_fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    if (!ts_ctx_init(&fx->ctx, arena_bytes)) {
        free(fx);
        return -1;
    }
    ts_ctx_set_error_handler(&fx->ctx, fail_test_on_engine_error, NULL);
    fx->rng = test_rng_seeded(seed);
    *state = fx;
    return 0;
}

int engine_fixture_teardown(void **state) {
    engine_fixture *fx = *state;
    ts_ctx_free(&fx->ctx);
    free(fx);
    return 0;
}
