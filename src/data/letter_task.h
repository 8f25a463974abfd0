/* The Free Transformer paper's synthetic task (Section 4.1,
 * ../shared/specs/free-transformer.md): a line is "X>" followed by 64
 * characters, underscores except for the capital letter X repeated 8 times
 * at a random position, each of the 64 then replaced by '!' with
 * probability 1/16, and a newline. Exactly reproducible from a seed: line i
 * depends on (seed, i) only. Also the parser that recovers from a generated
 * line what a latent could have decided: the letters' position and the
 * noise pattern. */
#ifndef TS_LETTER_TASK_H
#define TS_LETTER_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TS_LETTER_PROMPT 2 /* "X>" */
#define TS_LETTER_BODY 64
#define TS_LETTER_RUN 8
#define TS_LETTER_POSITIONS (TS_LETTER_BODY - TS_LETTER_RUN + 1) /* 57 */
#define TS_LETTER_NOISE_ONE_IN 16
#define TS_LETTER_LINE (TS_LETTER_PROMPT + TS_LETTER_BODY + 1) /* with the newline */
#define TS_LETTER_VALIDATION_FIRST ((uint64_t)1 << 40)         /* index of validation line 0 */

/* Line `index` of the task for `seed` into line[TS_LETTER_LINE] (not
 * NUL-terminated); the position of the run of letters in *position if not NULL. */
void ts_letter_line(uint64_t seed, uint64_t index, char *line, int *position);

/* Writes a byte-level token file of n_train training lines (indices
 * 0..n_train-1) and n_validation validation lines (indices from
 * TS_LETTER_VALIDATION_FIRST), to
 * path via a temporary name. Replaces an existing file only with overwrite. */
bool ts_letter_task_write(const char *path, uint64_t seed, long n_train, long n_validation,
                          bool overwrite, char *err, size_t errlen);

typedef struct ts_letter_parse {
    bool valid;     /* the body is a noiseless line with the prompt's letter, up to '!' noise */
    int position;   /* start of the run of letters, -1 if not valid */
    uint64_t noise; /* bit i set iff body[i] == '!' */
} ts_letter_parse;

/* Parses a generated body of TS_LETTER_BODY characters for the prompt's letter. */
ts_letter_parse ts_letter_parse_body(char letter, const char *body);

/* |a & b| / |a | b| of two noise patterns; 1 when both are empty. */
double ts_letter_jaccard(uint64_t a, uint64_t b);

/* A mean over pairs of valid lines of the same group, and its standard
 * error with the groups as clusters (lines of one group share a Z, so their
 * pairs are not independent): the ratio estimator's variance
 * G/(G-1) sum_g (S_g - m P_g)^2 / (sum_g P_g)^2 over the G groups that have
 * pairs, S_g being a group's sum and P_g its pair count. mean is NaN without
 * a pair, se with fewer than two such groups. */
typedef struct ts_letter_stat {
    double mean, se;
} ts_letter_stat;

/* What lines generated in groups agree on. */
typedef struct ts_letter_agreement {
    double valid_fraction;            /* of all lines */
    long valid_pairs;                 /* pairs of valid lines within a group */
    ts_letter_stat same_position;     /* share of pairs with the run at the same position */
    ts_letter_stat position_distance; /* mean |difference| of the runs' positions, in
                                         characters (iid uniform positions: 18.99) */
    ts_letter_stat noise_jaccard;     /* mean Jaccard index of their noise patterns */
} ts_letter_agreement;

/* lines: groups * samples generated lines of TS_LETTER_PROMPT + TS_LETTER_BODY
 * tokens (byte values), group g's at [g * samples, (g + 1) * samples); line
 * i's parse goes to parses[i]. */
ts_letter_agreement ts_letter_measure(const int32_t *lines, int groups, int samples,
                                      ts_letter_parse *parses);

#endif
