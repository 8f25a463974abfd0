/* The engine context the unit tests run in. An engine error (a backward rule
 * producing a wrongly shaped gradient, say) fails the running cmocka test
 * instead of exiting the whole test binary. */
#ifndef TS_TEST_ENGINE_FIXTURE_H
#define TS_TEST_ENGINE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "splitmix.h"

typedef struct engine_fixture {
    ts_ctx ctx;
    test_rng rng;
} engine_fixture;

/* The error handler to install on any context a test creates. */
void fail_test_on_engine_error(void *user, const char *message);

/* Bodies of cmocka group setup/teardown: *state becomes an engine_fixture
 * with an arena of arena_bytes and a generator seeded with seed. */
int engine_fixture_setup(void **state, size_t arena_bytes, uint64_t seed);
int engine_fixture_teardown(void **state);

#endif
