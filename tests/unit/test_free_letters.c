/* The letter task of the Free Transformer paper (src/data/letter_task.c):
 * lines reproducible from (seed, index) with the paper's structure and
 * noise rate, the token file, and the parser that reads a generated line's
 * decisions (the letters' position, the noise pattern) back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/letter_task.h"
#include "train/batches.h"

/* The template of a noiseless line with the letters at p explains body,
 * '!' standing for any character. */
static bool explained_by(char letter, const char *body, int p) {
    for (int i = 0; i < TS_LETTER_BODY; i++) {
        char want = i >= p && i < p + TS_LETTER_RUN ? letter : '_';
        if (body[i] != '!' && body[i] != want) return false;
    }
    return true;
}

static void test_lines_are_reproducible_and_have_the_papers_shape(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 2; seed++)
        for (uint64_t i = 0; i < 2000; i++) {
            char line[TS_LETTER_LINE], again[TS_LETTER_LINE];
            int position, position_again;
            ts_letter_line(seed, i, line, &position);
            ts_letter_line(seed, i, again, &position_again);
            assert_memory_equal(line, again, TS_LETTER_LINE);
            assert_int_equal(position, position_again);
            char letter = line[0];
            assert_true(letter >= 'A' && letter <= 'Z');
            assert_int_equal(line[1], '>');
            assert_int_equal(line[TS_LETTER_LINE - 1], '\n');
            assert_true(position >= 0 && position < TS_LETTER_POSITIONS);
            const char *body = line + TS_LETTER_PROMPT;
            assert_true(explained_by(letter, body, position));
            /* The parser reads the position back, or an equally good one
             * when noise hides the run's edge. */
            ts_letter_parse p = ts_letter_parse_body(letter, body);
            assert_true(p.valid);
            assert_true(p.position == position || explained_by(letter, body, p.position));
        }
    char a[TS_LETTER_LINE], b[TS_LETTER_LINE];
    ts_letter_line(1, 5, a, NULL);
    ts_letter_line(2, 5, b, NULL);
    assert_memory_not_equal(a, b, TS_LETTER_LINE);
}

static void test_noise_rate_letters_and_positions(void **state) {
    (void)state;
    enum { N = 6000 };
    long noise = 0, letters[26] = {0}, positions[TS_LETTER_POSITIONS] = {0};
    for (uint64_t i = 0; i < N; i++) {
        char line[TS_LETTER_LINE];
        int position;
        ts_letter_line(7, i, line, &position);
        letters[line[0] - 'A']++;
        positions[position]++;
        for (int j = 0; j < TS_LETTER_BODY; j++) noise += line[TS_LETTER_PROMPT + j] == '!';
    }
    double n = (double)N * TS_LETTER_BODY, p = 1.0 / TS_LETTER_NOISE_ONE_IN;
    double sd = sqrt(n * p * (1 - p));
    if (fabs(noise - n * p) > 5 * sd)
        fail_msg("%ld noisy characters in %.0f, expected %.0f +- %.0f", noise, n, n * p, sd);
    for (int c = 0; c < 26; c++) assert_true(letters[c] > 0);
    for (int q = 0; q < TS_LETTER_POSITIONS; q++) assert_true(positions[q] > 0);
}

static void test_parser_reads_position_and_noise(void **state) {
    (void)state;
    char body[TS_LETTER_BODY + 1];
    memset(body, '_', TS_LETTER_BODY);
    body[TS_LETTER_BODY] = 0;
    memset(body + 10, 'Q', TS_LETTER_RUN);
    body[3] = '!';
    body[12] = '!';
    ts_letter_parse p = ts_letter_parse_body('Q', body);
    assert_true(p.valid);
    assert_int_equal(p.position, 10);
    assert_true(p.noise == (((uint64_t)1 << 3) | ((uint64_t)1 << 12)));

    assert_false(ts_letter_parse_body('R', body).valid); /* not the prompt's letter */
    body[40] = 'Q';                                      /* a letter outside the run */
    assert_false(ts_letter_parse_body('Q', body).valid);
    body[40] = '_';
    body[17] = '_'; /* a run of 7 */
    assert_false(ts_letter_parse_body('Q', body).valid);
    body[17] = 'Q';
    body[18] = 'Q'; /* a run of 9 */
    assert_false(ts_letter_parse_body('Q', body).valid);
    body[18] = '_';
    body[20] = 'x'; /* a character the task never has */
    assert_false(ts_letter_parse_body('Q', body).valid);

    memset(body, '_', TS_LETTER_BODY);
    ts_letter_parse none = ts_letter_parse_body('Q', body);
    assert_false(none.valid);
    assert_int_equal(none.position, -1);
    memset(body + TS_LETTER_BODY - TS_LETTER_RUN, 'Z', TS_LETTER_RUN); /* last position */
    assert_int_equal(ts_letter_parse_body('Z', body).position, TS_LETTER_POSITIONS - 1);
}

static void test_jaccard(void **state) {
    (void)state;
    assert_true(ts_letter_jaccard(0, 0) == 1);
    assert_true(ts_letter_jaccard(0x3, 0x3) == 1);
    assert_true(ts_letter_jaccard(0x1, 0x2) == 0);
    assert_true(fabs(ts_letter_jaccard(0x7, 0x6) - 2.0 / 3) < 1e-15);
    assert_true(fabs(ts_letter_jaccard((uint64_t)1 << 63, ((uint64_t)1 << 63) | 1) - 0.5) < 1e-15);
}

/* A generated line "X>" + body: the run at `position` (or none if < 0), '!'
 * at the positions of `noise`. */
static void make_line(int32_t *line, char letter, int position, uint64_t noise) {
    line[0] = letter;
    line[1] = '>';
    for (int i = 0; i < TS_LETTER_BODY; i++) {
        char c = position >= 0 && i >= position && i < position + TS_LETTER_RUN ? letter : '_';
        line[TS_LETTER_PROMPT + i] = noise >> i & 1 ? '!' : c;
    }
}

static void test_agreement_within_groups(void **state) {
    (void)state;
    enum { LEN = TS_LETTER_PROMPT + TS_LETTER_BODY, GROUPS = 3, SAMPLES = 4 };
    int32_t lines[GROUPS * SAMPLES * LEN];
    ts_letter_parse parses[GROUPS * SAMPLES];
    /* Group 0: one line four times. Group 1: positions 5, 5, 9, 30 and noise
     * {1}, {1, 2}, {}, {} . Group 2: two valid lines (positions 7, 7, noise
     * {40}, {41}), a line without its run and a line with a foreign byte. */
    for (int s = 0; s < SAMPLES; s++) make_line(lines + s * LEN, 'K', 12, 0x30);
    static const int positions[SAMPLES] = {5, 5, 9, 30};
    static const uint64_t noise[SAMPLES] = {0x2, 0x6, 0, 0};
    for (int s = 0; s < SAMPLES; s++)
        make_line(lines + (SAMPLES + s) * LEN, 'B', positions[s], noise[s]);
    int32_t *g2 = lines + 2 * SAMPLES * LEN;
    make_line(g2, 'Z', 7, (uint64_t)1 << 40);
    make_line(g2 + LEN, 'Z', 7, (uint64_t)1 << 41);
    make_line(g2 + 2 * LEN, 'Z', -1, 0);
    make_line(g2 + 3 * LEN, 'Z', 20, 0);
    g2[3 * LEN + 5] = 300; /* not a byte of the task */

    ts_letter_agreement a = ts_letter_measure(lines, GROUPS, SAMPLES, parses);
    assert_true(fabs(a.valid_fraction - 10.0 / 12) < 1e-15);
    assert_false(parses[10].valid || parses[11].valid);
    assert_int_equal(parses[6].position, 9);
    /* pairs: 6 in group 0 (all agree, Jaccard 1), 6 in group 1, 1 in group 2 */
    assert_int_equal(a.valid_pairs, 13);
    /* group 1: only (5, 5) agrees; group 2's pair agrees */
    assert_true(fabs(a.same_position.mean - (6 + 1 + 1) / 13.0) < 1e-15);
    /* group 1 Jaccards: {1}{1,2} 1/2, {1}{} 0, {1}{} 0, {1,2}{} 0, {1,2}{} 0, {}{} 1;
     * group 2: {40}{41} 0 */
    assert_true(fabs(a.noise_jaccard.mean - (6 + 0.5 + 1 + 0) / 13.0) < 1e-15);
    /* Clustered standard errors, worked by hand: group sums (S_g, P_g) are
     * (6, 6), (1, 6), (1, 1) for the position, m = 8/13, so
     * sum (S_g - m P_g)^2 = (30^2 + 35^2 + 5^2) / 13^2 and
     * SE^2 = 3/2 * 2150 / 13^2 / 13^2; Jaccard sums (6, 1.5, 0), m = 7.5/13:
     * deviations 33/13, -25.5/13, -7.5/13. */
    assert_true(fabs(a.same_position.se - sqrt(1.5 * 2150) / 169) < 1e-14);
    assert_true(fabs(a.noise_jaccard.se - sqrt(1.5 * 1795.5) / 169) < 1e-14);
    /* |position differences|: group 0 none, group 1 0+4+25+4+25+21 = 79,
     * group 2 0; m = 79/13, deviations -474/13, 553/13, -79/13. */
    assert_true(fabs(a.position_distance.mean - 79 / 13.0) < 1e-14);
    assert_true(fabs(a.position_distance.se - sqrt(1.5 * (474 * 474 + 553 * 553 + 79 * 79)) / 169) <
                1e-13);

    ts_letter_agreement none = ts_letter_measure(g2 + 2 * LEN, 1, 2, parses);
    assert_int_equal(none.valid_pairs, 0);
    assert_true(isnan(none.same_position.mean) && isnan(none.noise_jaccard.mean));
    assert_true(isnan(none.position_distance.mean) && isnan(none.position_distance.se));
    assert_true(isnan(none.same_position.se) && isnan(none.noise_jaccard.se));
    /* one group with pairs: a mean but no spread to estimate */
    ts_letter_agreement one = ts_letter_measure(lines, 1, SAMPLES, parses);
    assert_true(one.same_position.mean == 1 && isnan(one.same_position.se));
    assert_true(one.position_distance.mean == 0 && isnan(one.position_distance.se));
}

/* data.align: the trainer's windows over a letter file start at line starts
 * and reach every line, the last included; align = 1 still starts anywhere. */
static void test_training_windows_start_at_line_starts(void **state) {
    (void)state;
    enum { COUNT = 4000, LINES = 100 };
    static int64_t aligned[COUNT], anywhere[COUNT];
    int64_t len = (int64_t)LINES * TS_LETTER_LINE;
    ts_train_window_offsets(5, 3, COUNT, 0, COUNT, len, TS_LETTER_LINE, TS_LETTER_LINE, aligned);
    ts_train_window_offsets(5, 3, COUNT, 0, COUNT, len, TS_LETTER_LINE, 1, anywhere);
    bool seen[LINES] = {false};
    long unaligned = 0;
    for (int i = 0; i < COUNT; i++) {
        assert_true(aligned[i] % TS_LETTER_LINE == 0);
        assert_true(aligned[i] >= 0 && aligned[i] + TS_LETTER_LINE <= len);
        seen[aligned[i] / TS_LETTER_LINE] = true;
        assert_true(anywhere[i] >= 0 && anywhere[i] + TS_LETTER_LINE <= len);
        unaligned += anywhere[i] % TS_LETTER_LINE != 0;
    }
    for (int l = 0; l < LINES; l++) assert_true(seen[l]);
    assert_true(unaligned > COUNT / 2);
}

static long long split_length(hid_t file, const char *dataset) {
    hid_t d = H5Dopen2(file, dataset, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, NULL);
    H5Sclose(space);
    H5Dclose(d);
    return (long long)n;
}

static void test_token_file_holds_the_lines(void **state) {
    (void)state;
    char path[] = "/tmp/thinkscale_letters_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256] = "";
    assert_false(ts_letter_task_write(path, 3, 10, 4, false, err, sizeof err));
    assert_non_null(strstr(err, "exists"));
    assert_true(ts_letter_task_write(path, 3, 10, 4, true, err, sizeof err));
    assert_false(ts_letter_task_write(path, 3, 0, 4, true, err, sizeof err));
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    assert_int_equal(split_length(file, "/train/tokens"), 10 * TS_LETTER_LINE);
    assert_int_equal(split_length(file, "/validation/tokens"), 4 * TS_LETTER_LINE);
    /* Line 9 of training is the generator's line 9. */
    int32_t tokens[10 * TS_LETTER_LINE];
    hid_t d = H5Dopen2(file, "/train/tokens", H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens) >= 0);
    H5Dclose(d);
    H5Fclose(file);
    char line[TS_LETTER_LINE];
    ts_letter_line(3, 9, line, NULL);
    for (int j = 0; j < TS_LETTER_LINE; j++)
        assert_int_equal(tokens[9 * TS_LETTER_LINE + j], (unsigned char)line[j]);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_are_reproducible_and_have_the_papers_shape),
        cmocka_unit_test(test_noise_rate_letters_and_positions),
        cmocka_unit_test(test_parser_reads_position_and_noise),
        cmocka_unit_test(test_jaccard),
        cmocka_unit_test(test_agreement_within_groups),
        cmocka_unit_test(test_training_windows_start_at_line_starts),
        cmocka_unit_test(test_token_file_holds_the_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
