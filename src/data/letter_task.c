#include "data/letter_task.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/rng.h"
#include "io/token_file.h"

#define LINES_PER_APPEND 1024

void ts_letter_line(uint64_t seed, uint64_t index, char *line, int *position) {
    ts_rng rng;
    ts_rng_seed_stream(&rng, seed ^ 0x6c657474657273ull /* "letters" */, index);
    char letter = (char)('A' + ts_rng_below(&rng, 26));
    int start = (int)ts_rng_below(&rng, TS_LETTER_POSITIONS);
    line[0] = letter;
    line[1] = '>';
    char *body = line + TS_LETTER_PROMPT;
    for (int i = 0; i < TS_LETTER_BODY; i++) {
        body[i] = i >= start && i < start + TS_LETTER_RUN ? letter : '_';
        if (ts_rng_below(&rng, TS_LETTER_NOISE_ONE_IN) == 0) body[i] = '!';
    }
    line[TS_LETTER_LINE - 1] = '\n';
    if (position) *position = start;
}

static bool append_lines(ts_token_writer *w, enum ts_split split, uint64_t seed, uint64_t first,
                         long count, ts_tf_err *err) {
    int32_t tokens[LINES_PER_APPEND * TS_LETTER_LINE];
    char line[TS_LETTER_LINE];
    for (long done = 0; done < count;) {
        long n = count - done < LINES_PER_APPEND ? count - done : LINES_PER_APPEND;
        for (long i = 0; i < n; i++) {
            ts_letter_line(seed, first + (uint64_t)(done + i), line, NULL);
            for (int j = 0; j < TS_LETTER_LINE; j++)
                tokens[i * TS_LETTER_LINE + j] = (unsigned char)line[j];
        }
        if (ts_token_writer_append(w, split, tokens, (size_t)(n * TS_LETTER_LINE), err) != TS_TF_OK)
            return false;
        done += n;
    }
    return true;
}

bool ts_letter_task_write(const char *path, uint64_t seed, long n_train, long n_validation,
                          bool overwrite, char *err, size_t errlen) {
    if (n_train < 1 || n_validation < 1) {
        snprintf(err, errlen,
                 "the letter task needs at least one training and one validation "
                 "line (got %ld and %ld)",
                 n_train, n_validation);
        return false;
    }
    if (!overwrite && access(path, F_OK) == 0) {
        snprintf(err, errlen, "'%s' exists", path);
        return false;
    }
    char tmp[4096], source[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(source, sizeof source, "thinkscale letter task, seed %llu", (unsigned long long)seed);
    ts_token_meta meta = {.domain = "letters",
                          .tokenizer = "byte",
                          .source = source,
                          .split_rule =
                              "train: lines 0..n-1 of the seed; validation: lines from 2^40",
                          .vocab_size = 256};
    remove(tmp);
    ts_token_writer *w = NULL;
    ts_tf_err tf_err = {""};
    bool ok = ts_token_writer_create(&w, tmp, &meta, &tf_err) == TS_TF_OK;
    ok = ok && append_lines(w, TS_SPLIT_TRAIN, seed, 0, n_train, &tf_err) &&
         append_lines(w, TS_SPLIT_VALIDATION, seed, TS_LETTER_VALIDATION_FIRST, n_validation,
                      &tf_err);
    if (w) {
        if (ok)
            ok = ts_token_writer_finish(w, &tf_err) == TS_TF_OK;
        else
            ts_token_writer_discard(w);
    }
    if (ok && rename(tmp, path) != 0) {
        snprintf(tf_err.msg, sizeof tf_err.msg, "cannot rename %s to %s: %s", tmp, path,
                 strerror(errno));
        ok = false;
    }
    if (!ok) {
        remove(tmp);
        snprintf(err, errlen, "%s", tf_err.msg);
    }
    return ok;
}

/* Whether the noiseless line with the run at p explains body, '!' standing
 * for any character. */
static bool explains(char letter, const char *body, int p) {
    for (int i = 0; i < TS_LETTER_BODY; i++) {
        char want = i >= p && i < p + TS_LETTER_RUN ? letter : '_';
        if (body[i] != '!' && body[i] != want) return false;
    }
    return true;
}

ts_letter_parse ts_letter_parse_body(char letter, const char *body) {
    ts_letter_parse r = {.valid = false, .position = -1, .noise = 0};
    for (int i = 0; i < TS_LETTER_BODY; i++)
        if (body[i] == '!') r.noise |= (uint64_t)1 << i;
    /* Of the positions that explain the line, the one whose run shows the
     * most letters: noise on a run's edge can leave two that explain it. */
    int best_count = 0;
    for (int p = 0; p < TS_LETTER_POSITIONS; p++) {
        int count = 0;
        for (int i = p; i < p + TS_LETTER_RUN; i++) count += body[i] == letter;
        if (count > best_count && explains(letter, body, p)) {
            r.position = p;
            best_count = count;
        }
    }
    r.valid = r.position >= 0;
    return r;
}

double ts_letter_jaccard(uint64_t a, uint64_t b) {
    uint64_t both = a & b, either = a | b;
    if (!either) return 1;
    return (double)__builtin_popcountll(both) / (double)__builtin_popcountll(either);
}

/* Sums over the groups that have pairs, for ts_letter_stat. */
typedef struct cluster_sums {
    double sum, sum_sq, sum_cross; /* of S_g, S_g^2, S_g P_g */
} cluster_sums;

static void add_cluster(cluster_sums *c, double group_sum, double group_pairs) {
    c->sum += group_sum;
    c->sum_sq += group_sum * group_sum;
    c->sum_cross += group_sum * group_pairs;
}

static ts_letter_stat cluster_mean(const cluster_sums *c, double pairs, double pairs_sq,
                                   int clusters) {
    ts_letter_stat stat = {.mean = pairs > 0 ? c->sum / pairs : NAN, .se = NAN};
    if (clusters >= 2) {
        double m = stat.mean;
        double spread = c->sum_sq - 2 * m * c->sum_cross + m * m * pairs_sq;
        stat.se = sqrt((double)clusters / (clusters - 1) * fmax(spread, 0)) / pairs;
    }
    return stat;
}

ts_letter_agreement ts_letter_measure(const int32_t *lines, int groups, int samples,
                                      ts_letter_parse *parses) {
    enum { LEN = TS_LETTER_PROMPT + TS_LETTER_BODY };
    long n = (long)groups * samples, valid = 0;
    for (long i = 0; i < n; i++) {
        char body[TS_LETTER_BODY];
        for (int t = 0; t < TS_LETTER_BODY; t++) {
            int32_t token = lines[i * LEN + TS_LETTER_PROMPT + t];
            body[t] = token > 0 && token < 128 ? (char)token : 0; /* 0: never valid */
        }
        parses[i] = ts_letter_parse_body((char)lines[i * LEN], body);
        valid += parses[i].valid;
    }
    cluster_sums same = {0}, distance = {0}, jaccard = {0};
    double pairs = 0, pairs_sq = 0;
    int clusters = 0;
    for (int g = 0; g < groups; g++) {
        const ts_letter_parse *group = parses + (long)g * samples;
        double group_pairs = 0, group_same = 0, group_distance = 0, group_jaccard = 0;
        for (int i = 0; i < samples; i++)
            for (int j = i + 1; j < samples; j++) {
                if (!group[i].valid || !group[j].valid) continue;
                group_pairs++;
                group_same += group[i].position == group[j].position;
                group_distance += abs(group[i].position - group[j].position);
                group_jaccard += ts_letter_jaccard(group[i].noise, group[j].noise);
            }
        if (group_pairs == 0) continue;
        clusters++;
        pairs += group_pairs;
        pairs_sq += group_pairs * group_pairs;
        add_cluster(&same, group_same, group_pairs);
        add_cluster(&distance, group_distance, group_pairs);
        add_cluster(&jaccard, group_jaccard, group_pairs);
    }
    return (ts_letter_agreement){
        .valid_fraction = n ? (double)valid / (double)n : NAN,
        .valid_pairs = (long)pairs,
        .same_position = cluster_mean(&same, pairs, pairs_sq, clusters),
        .position_distance = cluster_mean(&distance, pairs, pairs_sq, clusters),
        .noise_jaccard = cluster_mean(&jaccard, pairs, pairs_sq, clusters),
    };
}
