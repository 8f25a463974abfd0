/* The OOD question-answer generators (src/data/dyck.c, arith.c,
 * qa_records.c): every record is reproducible from (seed, index), differs
 * between seeds, has the paper's "Question: ...\nAnswer: ...\n" form, and
 * its answer is right, checked by code independent of the generators: a
 * bracket stack for Dyck, a parser and evaluator of the questions for
 * arithmetic. Also the token file they write. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/arith.h"
#include "data/dyck.h"
#include "data/qa_records.h"
#include "data/tokenizer.h"

#define RECORDS 5000

/* ---------------------------------------------------------------- Dyck */

/* Checks one Dyck record with a stack: the question's brackets never close
 * a bracket that is not open, stay within the depth, leave some open, and
 * the answer closes exactly those, innermost first. Returns the prefix
 * length in brackets. */
static int check_dyck_record(const ts_dyck_params *p, const ts_qa_record *r) {
    const char *opening = "([{<", *closing = ")]}>";
    const char *q = r->question;
    size_t prefix = strlen(TS_DYCK_QUESTION);
    assert_memory_equal(q, TS_DYCK_QUESTION, prefix);
    q += prefix;
    char stack[2 * TS_DYCK_MAX_LENGTH];
    int depth = 0, max_depth = 0, length = 0;
    for (; *q; q += 2) {
        assert_int_equal(q[0], ' '); /* brackets are space-separated */
        const char *o = strchr(opening, q[1]), *c = strchr(closing, q[1]);
        assert_true(q[1] && (o || c));
        if (o) {
            assert_true(o - opening < p->kinds);
            stack[depth++] = q[1];
        } else {
            assert_true(depth > 0);
            assert_int_equal(strchr(opening, stack[--depth]) - opening, c - closing);
        }
        if (depth > max_depth) max_depth = depth;
        length++;
    }
    assert_true(depth > 0);
    assert_true(max_depth <= p->max_depth);
    assert_true(length >= p->min_length && length <= p->max_length + 1);
    const char *a = r->answer;
    for (int i = 0; *a; i++) {
        if (i) assert_int_equal(*a++, ' ');
        assert_true(depth > 0);
        const char *c = strchr(closing, *a);
        assert_non_null(c);
        assert_int_equal(strchr(opening, stack[--depth]) - opening, c - closing);
        a++;
    }
    assert_int_equal(depth, 0);
    return length;
}

static void test_dyck_answers_close_their_prefix_exactly(void **state) {
    (void)state;
    const ts_dyck_params params[] = {
        ts_dyck_default_params(),
        {.kinds = 1, .max_depth = 1, .min_length = 1, .max_length = 6},
        {.kinds = 2, .max_depth = 3, .min_length = 10, .max_length = 10},
        {.kinds = 4, .max_depth = 40, .min_length = 50, .max_length = 200}};
    ts_qa_record r;
    for (size_t k = 0; k < sizeof params / sizeof params[0]; k++) {
        char err[256];
        assert_true(ts_dyck_params_check(&params[k], err, sizeof err));
        ts_qa_generator g = ts_dyck_generator(&params[k]);
        int shortest = 1 << 30, longest = 0;
        for (uint64_t i = 0; i < RECORDS; i++) {
            ts_qa_record_make(&g, 7, i, &r);
            int length = check_dyck_record(&params[k], &r);
            if (length < shortest) shortest = length;
            if (length > longest) longest = length;
        }
        /* The lengths span their range. */
        assert_int_equal(shortest, params[k].min_length);
        assert_true(longest >= params[k].max_length);
    }
}

static void test_dyck_parameters_are_checked(void **state) {
    (void)state;
    char err[256];
    ts_dyck_params p = ts_dyck_default_params();
    p.kinds = 5;
    assert_false(ts_dyck_params_check(&p, err, sizeof err));
    assert_non_null(strstr(err, "kinds"));
    p = ts_dyck_default_params();
    p.max_depth = 0;
    assert_false(ts_dyck_params_check(&p, err, sizeof err));
    assert_non_null(strstr(err, "max-depth"));
    p = ts_dyck_default_params();
    p.min_length = 30;
    p.max_length = 20;
    assert_false(ts_dyck_params_check(&p, err, sizeof err));
    assert_non_null(strstr(err, "max-length"));
    p.max_length = TS_DYCK_MAX_LENGTH + 1;
    assert_false(ts_dyck_params_check(&p, err, sizeof err));
}

/* ---------------------------------------------------------------- arithmetic */

/* A recursive-descent evaluator of + - * with the usual precedence and
 * parentheses, on long long. */
static long long parse_sum(const char **s);
static void skip_spaces(const char **s) {
    while (**s == ' ') (*s)++;
}
static long long parse_atom(const char **s) {
    skip_spaces(s);
    if (**s == '(') {
        (*s)++;
        long long v = parse_sum(s);
        skip_spaces(s);
        assert_int_equal(**s, ')');
        (*s)++;
        return v;
    }
    assert_true(isdigit((unsigned char)**s));
    char *end;
    long long v = strtoll(*s, &end, 10);
    *s = end;
    return v;
}
static long long parse_product(const char **s) {
    long long v = parse_atom(s);
    for (;;) {
        skip_spaces(s);
        if (**s != '*') return v;
        (*s)++;
        v *= parse_atom(s);
    }
}
static long long parse_sum(const char **s) {
    long long v = parse_product(s);
    for (;;) {
        skip_spaces(s);
        if (**s != '+' && **s != '-') return v;
        char op = *(*s)++;
        long long w = parse_product(s);
        v = op == '+' ? v + w : v - w;
    }
}

/* The one number in a sentence. */
static long long number_in(const char *sentence, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (isdigit((unsigned char)sentence[i])) return strtoll(sentence + i, NULL, 10);
    fail_msg("no number in '%.*s'", (int)len, sentence);
    return 0;
}

static bool has(const char *sentence, size_t len, const char *words) {
    size_t n = strlen(words);
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(sentence + i, words, n)) return true;
    return false;
}

/* A story's value, sentence by sentence; *ops counts its operations. */
static long long evaluate_story(const char *q, int *ops) {
    long long value = 0;
    *ops = 0;
    bool first = true, asked = false;
    while (*q) {
        const char *end = strpbrk(q, ".?");
        assert_non_null(end);
        size_t len = (size_t)(end - q);
        if (*end == '?') {
            assert_true(has(q, len, "How many"));
            asked = true;
        } else if (first) {
            assert_true(has(q, len, " has "));
            value = number_in(q, len);
        } else {
            long long n = number_in(q, len);
            if (has(q, len, "times as many"))
                value *= n;
            else if (has(q, len, "more"))
                value += n;
            else if (has(q, len, "gives away") || has(q, len, "loses") || has(q, len, "sells"))
                value -= n;
            else
                fail_msg("an operation I cannot read: '%.*s'", (int)len, q);
            ++*ops;
            assert_true(value >= 0); /* nobody gives away what they do not have */
        }
        first = false;
        q = end + 1;
        skip_spaces(&q);
    }
    assert_true(asked);
    return value;
}

static void test_arith_answers_are_right(void **state) {
    (void)state;
    ts_arith_params params[] = {ts_arith_default_params(), ts_arith_default_params(),
                                ts_arith_default_params()};
    params[1] = (ts_arith_params){.max_value = TS_ARITH_MAX_VALUE,
                                  .min_steps = TS_ARITH_MAX_STEPS,
                                  .max_steps = TS_ARITH_MAX_STEPS,
                                  .max_factor = TS_ARITH_MAX_FACTOR,
                                  .ops = "*+-"};
    params[2] = (ts_arith_params){
        .max_value = 9, .min_steps = 2, .max_steps = 2, .max_factor = 2, .ops = "-"};
    ts_qa_record r;
    for (size_t k = 0; k < sizeof params / sizeof params[0]; k++) {
        char err[256];
        assert_true(ts_arith_params_check(&params[k], err, sizeof err));
        ts_qa_generator g = ts_arith_generator(&params[k]);
        long stories = 0, negatives = 0;
        for (uint64_t i = 0; i < RECORDS; i++) {
            ts_qa_record_make(&g, 11, i, &r);
            char *end;
            long long answer = strtoll(r.answer, &end, 10);
            assert_true(end != r.answer && *end == '\0');
            long long expected;
            int ops;
            if (!strncmp(r.question, "What is ", 8)) {
                const char *s = r.question + 8;
                expected = parse_sum(&s);
                assert_string_equal(s, "?");
                ops = 0;
                for (const char *c = r.question + 8; *c; c++)
                    ops += *c == ' ' && strchr("+-*", c[1]);
            } else {
                expected = evaluate_story(r.question, &ops);
                stories++;
            }
            if (answer != expected)
                fail_msg("'%s' answered %s, not %lld", r.question, r.answer, expected);
            negatives += answer < 0;
            assert_true(ops >= params[k].min_steps && ops <= params[k].max_steps);
            for (const char *c = r.question; *c; c++)
                if (c[0] == ' ' && strchr("+-*", c[1]) && c[2] == ' ')
                    assert_non_null(strchr(params[k].ops, c[1]));
        }
        /* Both forms occur, about half each. */
        assert_true(stories > RECORDS * 4 / 10 && stories < RECORDS * 6 / 10);
        if (k == 2) assert_true(negatives > 0); /* expressions may go below zero */
    }
}

static void test_arith_parameters_are_checked(void **state) {
    (void)state;
    char err[256];
    ts_arith_params p = ts_arith_default_params();
    snprintf(p.ops, sizeof p.ops, "+/");
    assert_false(ts_arith_params_check(&p, err, sizeof err));
    assert_non_null(strstr(err, "ops"));
    snprintf(p.ops, sizeof p.ops, "++");
    assert_false(ts_arith_params_check(&p, err, sizeof err));
    p = ts_arith_default_params();
    p.min_steps = 4;
    p.max_steps = 3;
    assert_false(ts_arith_params_check(&p, err, sizeof err));
    assert_non_null(strstr(err, "min-steps"));
    p = ts_arith_default_params();
    p.max_factor = 1;
    assert_false(ts_arith_params_check(&p, err, sizeof err));
    p = ts_arith_default_params();
    p.max_value = 0;
    assert_false(ts_arith_params_check(&p, err, sizeof err));
}

/* ---------------------------------------------------------------- both */

static void test_records_are_reproducible_and_depend_on_the_seed(void **state) {
    (void)state;
    ts_dyck_params dp = ts_dyck_default_params();
    ts_arith_params ap = ts_arith_default_params();
    ts_qa_generator gens[] = {ts_dyck_generator(&dp), ts_arith_generator(&ap)};
    static ts_qa_record a, b, c;
    static char text_a[TS_QA_MAX_RECORD], text_b[TS_QA_MAX_RECORD];
    for (int k = 0; k < 2; k++) {
        long differ = 0;
        for (uint64_t i = 0; i < 1000; i++) {
            ts_qa_record_make(&gens[k], 3, i, &a);
            ts_qa_record_make(&gens[k], 3, i, &b);
            size_t start_a, start_b;
            size_t na = ts_qa_record_format(&a, text_a, &start_a);
            size_t nb = ts_qa_record_format(&b, text_b, &start_b);
            assert_int_equal(na, nb);
            assert_memory_equal(text_a, text_b, na);
            /* The form: "Question: Q\nAnswer: A\n", the answer at its offset. */
            assert_memory_equal(text_a, "Question: ", 10);
            assert_memory_equal(text_a + start_a - 9, "\nAnswer: ", 9);
            assert_memory_equal(text_a + start_a, a.answer, strlen(a.answer));
            assert_int_equal(na, start_a + strlen(a.answer) + 1);
            assert_int_equal(text_a[na - 1], '\n');
            assert_null(memchr(text_a + 10, '\n', start_a - 9 - 10)); /* one-line question */
            ts_qa_record_make(&gens[k], 4, i, &c);
            differ += strcmp(a.question, c.question) != 0;
        }
        assert_true(differ > 900); /* another seed, other records */
    }
}

/* A dataset of a split of a token file ("tokens" or "answer_mask"), as int32. */
static int32_t *read_split_data(const char *path, const char *split, const char *data, hsize_t *n) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    char name[64];
    snprintf(name, sizeof name, "/%s/%s", split, data);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    H5Sget_simple_extent_dims(space, n, NULL);
    int32_t *tokens = malloc((*n + 1) * sizeof *tokens);
    assert_non_null(tokens);
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens) >= 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(file);
    return tokens;
}

static int32_t *read_split(const char *path, const char *split, hsize_t *n) {
    return read_split_data(path, split, "tokens", n);
}

static void test_the_token_file_holds_the_records(void **state) {
    (void)state;
    char dir[] = "/tmp/ts_ood_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path_a[128], path_b[128], path_c[128];
    snprintf(path_a, sizeof path_a, "%s/a.h5", dir);
    snprintf(path_b, sizeof path_b, "%s/b.h5", dir);
    snprintf(path_c, sizeof path_c, "%s/c.h5", dir);
    ts_dyck_params p = ts_dyck_default_params();
    ts_qa_generator g = ts_dyck_generator(&p);
    ts_qa_write_options o = {.path = path_a, .seed = 5, .n_train = 300, .n_validation = 40};
    ts_qa_write_result ra, rb, rc;
    char err[1024];
    assert_true(ts_qa_write(&g, &o, &ra, err, sizeof err));
    /* An existing file is refused without force, and left as it was. */
    assert_false(ts_qa_write(&g, &o, &rb, err, sizeof err));
    assert_non_null(strstr(err, "already exists"));
    o.path = path_b;
    assert_true(ts_qa_write(&g, &o, &rb, err, sizeof err));
    o.path = path_c;
    o.seed = 6;
    assert_true(ts_qa_write(&g, &o, &rc, err, sizeof err));
    assert_int_equal(ra.records[0], 300);
    assert_int_equal(ra.records[1], 40);
    const char *splits[] = {"train", "validation"};
    for (int s = 0; s < 2; s++) {
        hsize_t na, nb, nc;
        int32_t *a = read_split(path_a, splits[s], &na);
        int32_t *b = read_split(path_b, splits[s], &nb);
        int32_t *c = read_split(path_c, splits[s], &nc);
        hsize_t nm;
        int32_t *mask = read_split_data(path_a, splits[s], "answer_mask", &nm);
        assert_int_equal(nm, na);
        assert_int_equal(na, ra.tokens[s]);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a); /* same seed: same tokens */
        assert_true(na != nc || memcmp(a, c, na * sizeof *a));
        /* The tokens are the formatted records, in index order. */
        static ts_qa_record r;
        static char text[TS_QA_MAX_RECORD];
        size_t at = 0;
        int64_t answers = 0;
        for (uint64_t i = 0; i < (uint64_t)ra.records[s]; i++) {
            ts_qa_record_make(&g, 5, (s ? TS_QA_VALIDATION_FIRST : 0) + i, &r);
            size_t start, n = ts_qa_record_format(&r, text, &start);
            assert_true(at + n <= na);
            for (size_t j = 0; j < n; j++) {
                assert_int_equal(a[at + j], (unsigned char)text[j]);
                assert_int_equal(mask[at + j], j >= start); /* the answer and its newline */
            }
            at += n;
            answers += (int64_t)(n - start);
        }
        assert_int_equal(at, na);
        assert_int_equal(answers, ra.answer_tokens[s]);
        free(a);
        free(b);
        free(c);
        free(mask);
    }
    o.n_validation = 0;
    o.force = true;
    assert_false(ts_qa_write(&g, &o, &rc, err, sizeof err));
    assert_non_null(strstr(err, "at least one"));
    remove(path_a);
    remove(path_b);
    remove(path_c);
    rmdir(dir);
}

/* The segment encoder that keeps answer masks exact: for bytes (no batched
 * encoder: one encode call per segment) the token ends are the byte ends,
 * empty segments included, and decreasing ends are refused. */
static void test_segments_force_token_boundaries(void **state) {
    (void)state;
    const ts_tokenizer *tok = ts_tokenizer_find("byte");
    assert_non_null(tok);
    assert_null(tok->encode_segments);
    const unsigned char text[] = "Question: Q\nAnswer: A\n";
    size_t n = sizeof text - 1, answer = strlen("Question: Q\nAnswer: ");
    const size_t ends[] = {answer, answer, n}; /* the middle segment is empty */
    int32_t out[sizeof text];
    size_t token_ends[3] = {0};
    assert_int_equal(ts_tokenizer_encode_segments(tok, text, ends, 3, out, token_ends), (long)n);
    assert_int_equal(token_ends[0], answer);
    assert_int_equal(token_ends[1], answer);
    assert_int_equal(token_ends[2], n);
    for (size_t i = 0; i < n; i++) assert_int_equal(out[i], text[i]);
    const size_t bad[] = {answer, 3};
    assert_int_equal(ts_tokenizer_encode_segments(tok, text, bad, 2, out, token_ends), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dyck_answers_close_their_prefix_exactly),
        cmocka_unit_test(test_dyck_parameters_are_checked),
        cmocka_unit_test(test_arith_answers_are_right),
        cmocka_unit_test(test_arith_parameters_are_checked),
        cmocka_unit_test(test_records_are_reproducible_and_depend_on_the_seed),
        cmocka_unit_test(test_the_token_file_holds_the_records),
        cmocka_unit_test(test_segments_force_token_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
