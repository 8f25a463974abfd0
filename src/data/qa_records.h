/* Question-answer sets in the EBT paper's form (../shared/specs/experiments.md
 * section 2): every record is the text
 *
 *     Question: QUESTION\nAnswer: ANSWER\n
 *
 * and a set is records concatenated, written to a token file with a train
 * and a validation split, as byte tokens or through any tokenizer (a
 * SentencePiece model): the question part "Question: QUESTION\nAnswer: " and
 * the answer part "ANSWER\n" are encoded as separate segments, so a token
 * boundary is forced where the answer starts (prompt/completion style) and
 * the answer mask is exact. A generator (dyck.c, arith.c)
 * supplies only QUESTION and ANSWER of record `index` from a random stream
 * that depends on (seed, index) alone, so a set is exactly reproducible from
 * its seed, any record can be regenerated on its own, and training records
 * (indices 0, 1, ...) and validation records (indices from
 * TS_QA_VALIDATION_FIRST) come from disjoint streams. */
#ifndef TS_QA_RECORDS_H
#define TS_QA_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/rng.h"
#include "data/tokenizer.h"
#include "io/token_file.h"

#define TS_QA_MAX_PART 4096                        /* bytes of a question or an answer, with NUL */
#define TS_QA_MAX_RECORD (2 * TS_QA_MAX_PART + 32) /* a formatted record */
#define TS_QA_VALIDATION_FIRST ((uint64_t)1 << 40) /* index of validation record 0 */
#define TS_QA_QUESTION_PREFIX "Question: "
#define TS_QA_ANSWER_PREFIX "\nAnswer: "

typedef struct ts_qa_record {
    char question[TS_QA_MAX_PART];
    char answer[TS_QA_MAX_PART];
} ts_qa_record;

/* A generator: its name (the default domain), a salt that keeps its random
 * streams apart from other generators' for the same seed, and the function
 * that fills one record from its own stream. params is the generator's
 * parameter struct, already checked. */
typedef struct ts_qa_generator {
    const char *name;
    uint64_t salt;
    void (*make)(const void *params, ts_rng *rng, ts_qa_record *out);
    const void *params;
    char description[512]; /* the parameters as "key=value ...", for provenance */
} ts_qa_generator;

/* Record `index` of generator g for seed. */
void ts_qa_record_make(const ts_qa_generator *g, uint64_t seed, uint64_t index, ts_qa_record *out);

/* The record's text into buf (TS_QA_MAX_RECORD bytes, NUL-terminated);
 * returns its length and sets *answer_start to the offset of ANSWER. The
 * answer, for answer-only scoring, is [answer_start, length): ANSWER and the
 * newline that ends it (a model must also know where the answer stops). */
size_t ts_qa_record_format(const ts_qa_record *r, char *buf, size_t *answer_start);

typedef struct ts_qa_write_options {
    const char *path;
    const char *domain; /* NULL: the generator's name */
    uint64_t seed;
    long n_train, n_validation;    /* records per split, >= 1 each */
    bool force;                    /* replace an existing file */
    const ts_tokenizer *tokenizer; /* NULL: bytes */
} ts_qa_write_options;

typedef struct ts_qa_write_result {
    int64_t tokens[TS_N_SPLITS];
    int64_t answer_tokens[TS_N_SPLITS];
    long records[TS_N_SPLITS];
} ts_qa_write_result;

/* Writes the set as a token file of options->tokenizer (NULL: bytes) with
 * an answer mask: the tokens of each record's answer, as
 * ts_qa_record_format defines it and encoded as a segment of its own
 * (ts_tokenizer_encode_segments), are 1, the rest 0. Written under a
 * temporary name renamed over path when complete (an existing file is
 * replaced only with force, and a failure never damages it). The source
 * attribute records the generator, its parameters, the seed and the
 * tokenizer; split_rule the record indices of each split. False with a
 * message naming the file and the problem. */
bool ts_qa_write(const ts_qa_generator *g, const ts_qa_write_options *options,
                 ts_qa_write_result *result, char *err, size_t errlen);

#endif
