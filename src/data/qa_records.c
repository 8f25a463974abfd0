#include "data/qa_records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Records are tokenised into a buffer of this many tokens before each append. */
#define APPEND_TOKENS 65536

void ts_qa_record_make(const ts_qa_generator *g, uint64_t seed, uint64_t index, ts_qa_record *out) {
    ts_rng rng;
    ts_rng_seed_stream(&rng, seed ^ g->salt, index);
    out->question[0] = out->answer[0] = '\0';
    g->make(g->params, &rng, out);
}

size_t ts_qa_record_format(const ts_qa_record *r, char *buf, size_t *answer_start) {
    int n = snprintf(buf, TS_QA_MAX_RECORD, TS_QA_QUESTION_PREFIX "%s" TS_QA_ANSWER_PREFIX,
                     r->question);
    *answer_start = (size_t)n;
    n += snprintf(buf + n, TS_QA_MAX_RECORD - (size_t)n, "%s\n", r->answer);
    return (size_t)n;
}

/* The records [first, first + count) of a split, tokenised byte by byte and
 * appended in batches. */
static bool write_split(const ts_qa_generator *g, ts_token_writer *w, enum ts_split split,
                        uint64_t seed, uint64_t first, long count, ts_qa_write_result *result,
                        ts_tf_err *err) {
    int32_t *tokens = malloc(APPEND_TOKENS * sizeof *tokens);
    uint8_t *mask = malloc(APPEND_TOKENS);
    ts_qa_record *record = malloc(sizeof *record);
    char *text = malloc(TS_QA_MAX_RECORD);
    bool ok = tokens && mask && record && text;
    if (!ok) snprintf(err->msg, sizeof err->msg, "out of memory");
    size_t used = 0;
    for (long i = 0; ok && i < count; i++) {
        ts_qa_record_make(g, seed, first + (uint64_t)i, record);
        size_t answer_start;
        size_t n = ts_qa_record_format(record, text, &answer_start);
        if (used + n > APPEND_TOKENS) {
            ok = ts_token_writer_append_masked(w, split, tokens, mask, used, err) == TS_TF_OK;
            used = 0;
        }
        for (size_t j = 0; ok && j < n; j++) {
            mask[used] = j >= answer_start;
            tokens[used++] = (unsigned char)text[j];
        }
        result->answer_tokens[split] += (int64_t)(n - answer_start);
        result->tokens[split] += (int64_t)n;
        result->records[split]++;
    }
    if (ok && used)
        ok = ts_token_writer_append_masked(w, split, tokens, mask, used, err) == TS_TF_OK;
    free(text);
    free(record);
    free(mask);
    free(tokens);
    return ok;
}

bool ts_qa_write(const ts_qa_generator *g, const ts_qa_write_options *options,
                 ts_qa_write_result *result, char *errmsg, size_t errlen) {
    const ts_qa_write_options o = *options;
    *result = (ts_qa_write_result){{0, 0}, {0, 0}, {0, 0}};
    if (o.n_train < 1 || o.n_validation < 1) {
        snprintf(
            errmsg, errlen,
            "%s: a %s set needs at least one training and one validation record (got %ld and %ld)",
            o.path, g->name, o.n_train, o.n_validation);
        return false;
    }
    struct stat sb;
    if (!o.force && stat(o.path, &sb) == 0) {
        snprintf(errmsg, errlen, "%s already exists; pass --force to replace it", o.path);
        return false;
    }
    size_t tmp_len = strlen(o.path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        snprintf(errmsg, errlen, "out of memory");
        return false;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", o.path, (long)getpid());
    char source[1024], split_rule[256];
    snprintf(source, sizeof source,
             "thinkscale %s generator, seed %llu, %s; records \"Question: ...\\nAnswer: ...\\n\", "
             "byte tokens",
             g->name, (unsigned long long)o.seed, g->description);
    snprintf(split_rule, sizeof split_rule,
             "train: records 0..%ld of the seed; validation: records 2^40..2^40+%ld "
             "(disjoint random streams); each record's stream depends on (seed, index) only",
             o.n_train - 1, o.n_validation - 1);
    ts_token_meta meta = {.domain = o.domain ? o.domain : g->name,
                          .tokenizer = "byte",
                          .source = source,
                          .split_rule = split_rule,
                          .vocab_size = 256,
                          .answer_mask = true};
    ts_tf_err err = {{0}};
    ts_token_writer *w = NULL;
    bool ok = ts_token_writer_create(&w, tmp, &meta, &err) == TS_TF_OK;
    ok = ok && write_split(g, w, TS_SPLIT_TRAIN, o.seed, 0, o.n_train, result, &err) &&
         write_split(g, w, TS_SPLIT_VALIDATION, o.seed, TS_QA_VALIDATION_FIRST, o.n_validation,
                     result, &err);
    if (w) {
        if (ok)
            ok = ts_token_writer_finish(w, &err) == TS_TF_OK;
        else
            ts_token_writer_discard(w);
    }
    if (ok && rename(tmp, o.path) != 0) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot rename %s to it: %s", o.path, tmp,
                 strerror(errno));
        ok = false;
    }
    if (!ok) {
        remove(tmp);
        snprintf(errmsg, errlen, "%s", err.msg);
    }
    free(tmp);
    return ok;
}
