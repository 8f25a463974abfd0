/* The run configuration (src/core/config.c) and the generic schema under it
 * (src/core/config_schema.c):
 *  - defaults come from the key tables, and the INI dump of a configuration
 *    reads back to the same configuration, every key and flag;
 *  - --help-config prints each default and lists every architecture
 *    registered in the schema;
 *  - explicit keys, inference-only overrides and bad values;
 *  - a schema made up here (not the run configuration's) works the same:
 *    its sections' offsets, its resolve hooks with their own explicit flags,
 *    and a failing hook stopping resolution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"

static void test_defaults_come_from_the_key_tables(void **state) {
    (void)state;
    ts_run_config c;
    ts_config_defaults(&c);
    assert_string_equal(c.model.arch, "transformerpp");
    assert_int_equal(c.model.width, 256);
    assert_true(c.model.free.kappa == 0.34657359027997264);
    assert_int_equal(c.model.ebt.infer_samples, 1);
    assert_string_equal(c.model.nexus.variant, "shared");
    assert_true(c.optim.lr == 1.2e-3);
    assert_int_equal(c.optim.warmup_steps, 100);
    assert_int_equal(c.steps, 1000);
    assert_string_equal(c.run_dir, "runs/default");
    assert_false(ts_config_is_explicit(&c, "train", "steps"));
    assert_true(ts_config_schema_keys(ts_run_config_schema()) <= TS_CONFIG_MAX_KEYS);
}

static void test_the_dump_reads_back_identically(void **state) {
    (void)state;
    char err[256] = "";
    ts_run_config c, back;
    ts_config_defaults(&c);
    const char *sets[] = {"model.arch=ebt",   "ebt.preset=s2",           "free.kappa=0.1",
                          "train.lr=3.25e-4", "data.train=some file.h5", "nexus.order=3"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        assert_true(ts_config_set(&c, sets[i], err, sizeof err));
    assert_true(ts_config_validate(&c, err, sizeof err));
    char *ini = ts_config_to_ini(&c);
    assert_non_null(ini);
    assert_non_null(strstr(ini, "[ebt]\npreset = s2\n"));
    assert_null(strstr(ini, "[transformerpp]")); /* a section without keys is not written */
    ts_config_defaults(&back);
    assert_true(ts_config_load_string(&back, ini, "dump", err, sizeof err));
    free(ini);
    /* Every key was loaded, so all are explicit; the values are identical. */
    assert_true(ts_config_is_explicit(&back, "run", "dir"));
    assert_true(ts_config_validate(&back, err, sizeof err));
    memcpy(back.explicit_keys, c.explicit_keys, sizeof c.explicit_keys);
    assert_memory_equal(&back, &c, sizeof c);
}

static void test_help_lists_defaults_and_architectures(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    ts_config_print_keys(out);
    assert_int_equal(fclose(out), 0);
    assert_non_null(strstr(text, "architecture: transformerpp, ebt, free, nexus\n"));
    assert_non_null(strstr(text, "[free]\n  latent_bits              8 "));
    assert_non_null(strstr(text, "  kappa                    0.34657359027997264 "));
    assert_non_null(strstr(text, "  lr                       0.0012 "));
    assert_non_null(strstr(text, "[inference: eval --setting]"));
    free(text);
}

static void test_overrides_and_bad_values(void **state) {
    (void)state;
    char err[256] = "";
    ts_run_config c;
    ts_config_defaults(&c);
    assert_true(ts_config_set(&c, "train.steps=7", err, sizeof err));
    assert_true(ts_config_is_explicit(&c, "train", "steps"));
    assert_false(ts_config_is_explicit(&c, "ebt", "steps"));
    assert_false(ts_config_set(&c, "model.widht=3", err, sizeof err));
    assert_string_equal(err, "unknown configuration key 'model.widht'");
    assert_false(ts_config_set(&c, "model.width=3.5", err, sizeof err));
    assert_string_equal(err, "model.width: '3.5' is not an integer");
    assert_false(ts_config_set(&c, "train.lr=nan", err, sizeof err));
    assert_false(ts_config_set(&c, "nexus.variant=aaaaaaaaaaaaaaaaaaaa", err, sizeof err));
    assert_non_null(strstr(err, "longer than 15 characters"));
    assert_false(ts_config_set(&c, "no_dot=1", err, sizeof err));
    /* An inference key of another architecture than the model's is refused. */
    assert_false(ts_config_set_inference(&c, "ebt.infer_steps=4", err, sizeof err));
    assert_non_null(strstr(err, "setting of the ebt architecture; this model is transformerpp"));
    assert_false(ts_config_set_inference(&c, "nexus.infer_order=2", err, sizeof err));
    assert_true(ts_config_set(&c, "model.arch=ebt", err, sizeof err));
    assert_true(ts_config_set_inference(&c, "ebt.infer_steps=4", err, sizeof err));
    assert_int_equal(c.model.ebt.infer_steps, 4);
    assert_false(ts_config_set_inference(&c, "ebt.steps=4", err, sizeof err));
    assert_non_null(strstr(err, "fixed by training"));
}

/* Each assignment alone makes a valid configuration invalid, with a message
 * that names its key. */
static void test_values_out_of_range_are_named(void **state) {
    (void)state;
    static const char *const bad[] = {
        "train.beta1=1",     "train.beta1=1.5",       "train.beta2=-1",
        "train.eps=0",       "train.min_lr_ratio=5",  "train.min_lr_ratio=-0.1",
        "train.clip=-1",     "train.weight_decay=-1", "train.stop_at=-1",
        "model.norm_eps=-1", "model.norm_eps=0",      "model.rope_theta=0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "", key[64];
        ts_run_config c;
        ts_config_defaults(&c);
        assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
        assert_true(ts_config_validate(&c, err, sizeof err));
        assert_true(ts_config_set(&c, bad[i], err, sizeof err));
        assert_false(ts_config_validate(&c, err, sizeof err));
        snprintf(key, sizeof key, "%.*s", (int)(strchr(bad[i], '=') - bad[i]), bad[i]);
        if (!strstr(err, key)) fail_msg("%s: the message '%s' does not name %s", bad[i], err, key);
    }
    /* The edges that are allowed, and SGD, which reads no moment settings. */
    static const char *const good[] = {"train.beta1=0", "train.clip=0", "train.min_lr_ratio=1",
                                       "train.weight_decay=0", "train.stop_at=0"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char err[256] = "";
        ts_run_config c;
        ts_config_defaults(&c);
        assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
        assert_true(ts_config_set(&c, good[i], err, sizeof err));
        if (!ts_config_validate(&c, err, sizeof err)) fail_msg("%s refused: %s", good[i], err);
    }
    char err[256] = "";
    ts_run_config c;
    ts_config_defaults(&c);
    assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
    assert_true(ts_config_set(&c, "train.optimizer=sgd", err, sizeof err));
    assert_true(ts_config_set(&c, "train.beta2=2", err, sizeof err));
    assert_true(ts_config_validate(&c, err, sizeof err));
}

/* ---------------------------------------------------------------- a schema of its own */

typedef struct toy_part {
    int count;
    char label[8];
    int resolved; /* calls of the resolve hook */
} toy_part;

typedef struct toy {
    double scale;
    toy_part a, b;
} toy;

/* Doubles count unless it was set explicitly; fails for label "bad". */
static bool toy_resolve(void *fields, const bool *explicit_keys, char *err, size_t errlen) {
    toy_part *p = fields;
    p->resolved++;
    if (!strcmp(p->label, "bad")) {
        snprintf(err, errlen, "bad label");
        return false;
    }
    if (!explicit_keys[0]) p->count *= 2;
    return true;
}

static const ts_config_key top_keys[] = {
    TS_CONFIG_DOUBLE_KEY(toy, "scale", scale, 0.5, "a number", false)};
static const ts_config_key part_keys[] = {
    TS_CONFIG_INT_KEY(toy_part, "count", count, 3, "a count", true),
    TS_CONFIG_STRING_KEY(toy_part, "label", label, "x", "a label", false)};
static const ts_config_section top = {"top", top_keys, 1, NULL};
static const ts_config_section part_a = {"a", part_keys, 2, toy_resolve};
static const ts_config_section part_b = {"b", part_keys, 2, toy_resolve};
static const ts_config_part toy_parts[] = {
    {&top, 0, false}, {&part_a, offsetof(toy, a), true}, {&part_b, offsetof(toy, b), true}};
static const ts_config_schema toy_schema = {toy_parts, 3};

static void test_a_schema_of_its_own(void **state) {
    (void)state;
    toy t;
    bool explicit_keys[5];
    char err[128] = "";
    assert_int_equal(ts_config_schema_keys(&toy_schema), 5);
    ts_config_schema_defaults(&toy_schema, &t, explicit_keys);
    assert_true(t.scale == 0.5 && t.a.count == 3 && t.b.count == 3);
    assert_string_equal(t.b.label, "x");
    assert_int_equal(ts_config_schema_find(&toy_schema, "b", "count"), 3);
    assert_int_equal(ts_config_schema_find(&toy_schema, "c", "count"), -1);
    assert_true(ts_config_schema_load_string(&toy_schema, &t, explicit_keys,
                                             "[b]\ncount = 5\n[top]\nscale = 2\n", "toy", err,
                                             sizeof err));
    assert_true(explicit_keys[3] && explicit_keys[0] && !explicit_keys[1]);
    t.a.resolved = t.b.resolved = 0;
    assert_true(ts_config_schema_resolve(&toy_schema, &t, explicit_keys, err, sizeof err));
    assert_true(t.a.resolved == 1 && t.b.resolved == 1);
    assert_int_equal(t.a.count, 6); /* not explicit: doubled */
    assert_int_equal(t.b.count, 5); /* explicit: kept */
    char *ini = ts_config_schema_to_ini(&toy_schema, &t);
    assert_non_null(ini);
    assert_string_equal(ini, "[top]\nscale = 2\n\n[a]\ncount = 6\nlabel = x\n\n[b]\ncount = 5\n"
                             "label = x\n");
    free(ini);
    assert_false(ts_config_schema_assign(&toy_schema, &t, explicit_keys, "a.label=bad", true, err,
                                         sizeof err));
    assert_true(ts_config_schema_assign(&toy_schema, &t, explicit_keys, "a.label=bad", false, err,
                                        sizeof err));
    t.a.resolved = t.b.resolved = 0;
    assert_false(ts_config_schema_resolve(&toy_schema, &t, explicit_keys, err, sizeof err));
    assert_string_equal(err, "bad label");
    assert_true(t.a.resolved == 1 && t.b.resolved == 0); /* b's hook did not run */
    assert_false(ts_config_schema_load_string(&toy_schema, &t, explicit_keys, "[a]\nsize = 1\n",
                                              "toy.ini", err, sizeof err));
    assert_string_equal(err, "toy.ini:2: unknown configuration key 'a.size'");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_come_from_the_key_tables),
        cmocka_unit_test(test_the_dump_reads_back_identically),
        cmocka_unit_test(test_help_lists_defaults_and_architectures),
        cmocka_unit_test(test_overrides_and_bad_values),
        cmocka_unit_test(test_values_out_of_range_are_named),
        cmocka_unit_test(test_a_schema_of_its_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
