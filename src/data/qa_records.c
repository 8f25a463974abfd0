#include "data/qa_records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Records are formatted into a batch of at most this many bytes, which is
 * tokenised at once (one spm_encode run for SentencePiece) and appended. */
#define BATCH_BYTES 65536

typedef struct batch {
    const ts_tokenizer *tok;
    unsigned char *text; /* BATCH_BYTES */
    size_t used;         /* bytes in text */
    size_t *ends;        /* two segments per record: question part, answer part */
    size_t *token_ends;  /* per segment */
    size_t n_segments;
    int32_t *tokens; /* BATCH_BYTES: at most one token per byte */
    uint8_t *mask;   /* BATCH_BYTES */
} batch;

/* Tokenises the batch with a boundary forced at every segment end, marks
 * each record's answer segment in the mask, and appends. */
static bool flush_batch(batch *b, ts_token_writer *w, enum ts_split split,
                        ts_qa_write_result *result, ts_tf_err *err) {
    if (!b->n_segments) return true;
    long n = ts_tokenizer_encode_segments(b->tok, b->text, b->ends, b->n_segments, b->tokens,
                                          b->token_ends);
    if (n < 0) {
        snprintf(err->msg, sizeof err->msg, "the %s tokenizer cannot encode the records",
                 b->tok->name);
        return false;
    }
    for (size_t s = 0; s < b->n_segments; s += 2) {
        size_t question_start = s ? b->token_ends[s - 1] : 0;
        size_t answer_start = b->token_ends[s], answer_end = b->token_ends[s + 1];
        memset(b->mask + question_start, 0, answer_start - question_start);
        memset(b->mask + answer_start, 1, answer_end - answer_start);
        result->answer_tokens[split] += (int64_t)(answer_end - answer_start);
    }
    result->tokens[split] += n;
    b->used = b->n_segments = 0;
    return ts_token_writer_append_masked(w, split, b->tokens, b->mask, (size_t)n, err) == TS_TF_OK;
}

/* The records [first, first + count) of a split, tokenised and appended in
 * batches. */
static bool write_split(const ts_qa_generator *g, batch *b, ts_token_writer *w, enum ts_split split,
                        uint64_t seed, uint64_t first, long count, ts_qa_write_result *result,
                        ts_tf_err *err) {
    ts_qa_record *record = malloc(sizeof *record);
    char *text = malloc(TS_QA_MAX_RECORD);
    bool ok = record && text;
    if (!ok) snprintf(err->msg, sizeof err->msg, "out of memory");
    for (long i = 0; ok && i < count; i++) {
        ts_qa_record_make(g, seed, first + (uint64_t)i, record);
        size_t answer_start;
        size_t n = ts_qa_record_format(record, text, &answer_start);
        if (b->used + n > BATCH_BYTES) ok = flush_batch(b, w, split, result, err);
        if (!ok) break;
        memcpy(b->text + b->used, text, n);
        b->ends[b->n_segments++] = b->used + answer_start;
        b->used += n;
        b->ends[b->n_segments++] = b->used;
        result->records[split]++;
    }
    ok = ok && flush_batch(b, w, split, result, err);
    free(text);
    free(record);
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
    if (ts_token_file_check_output(o.path, o.force, errmsg, errlen) != TS_IO_OK) return false;
    size_t tmp_len = strlen(o.path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        snprintf(errmsg, errlen, "out of memory");
        return false;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", o.path, (long)getpid());
    char source[6144], split_rule[256];
    const ts_tokenizer *tok = o.tokenizer ? o.tokenizer : ts_tokenizer_find("byte");
    int at = snprintf(source, sizeof source,
                      "thinkscale %s generator, seed %llu, %s; records \"Question: "
                      "...\\nAnswer: ...\\n\", ",
                      g->name, (unsigned long long)o.seed, g->description);
    if (tok->description)
        snprintf(source + at, sizeof source - (size_t)at,
                 "tokenizer: %s; each record's answer starts a new token (a token boundary forced "
                 "after \"Answer: \")",
                 tok->description);
    else
        snprintf(source + at, sizeof source - (size_t)at, "%s tokens", tok->name);
    snprintf(split_rule, sizeof split_rule,
             "train: records 0..%ld of the seed; validation: records 2^40..2^40+%ld "
             "(disjoint random streams); each record's stream depends on (seed, index) only",
             o.n_train - 1, o.n_validation - 1);
    ts_token_meta meta = {.domain = o.domain ? o.domain : g->name,
                          .tokenizer = tok->name,
                          .source = source,
                          .split_rule = split_rule,
                          .vocab_size = tok->vocab_size,
                          .answer_mask = true};
    ts_tf_err err = {{0}};
    ts_token_writer *w = NULL;
    /* A record is at least "Question: \nAnswer: \n" (20 bytes), so a batch
     * holds fewer than BATCH_BYTES / 16 records, two segments each. */
    batch b = {.tok = tok,
               .text = malloc(BATCH_BYTES),
               .ends = malloc(BATCH_BYTES / 8 * sizeof(size_t)),
               .token_ends = malloc(BATCH_BYTES / 8 * sizeof(size_t)),
               .tokens = malloc(BATCH_BYTES * sizeof(int32_t)),
               .mask = malloc(BATCH_BYTES)};
    bool ok = b.text && b.ends && b.token_ends && b.tokens && b.mask;
    if (!ok) snprintf(err.msg, sizeof err.msg, "out of memory");
    ok = ok && ts_token_writer_create(&w, tmp, &meta, &err) == TS_TF_OK;
    ok = ok && write_split(g, &b, w, TS_SPLIT_TRAIN, o.seed, 0, o.n_train, result, &err) &&
         write_split(g, &b, w, TS_SPLIT_VALIDATION, o.seed, TS_QA_VALIDATION_FIRST, o.n_validation,
                     result, &err);
    free(b.mask);
    free(b.tokens);
    free(b.token_ends);
    free(b.ends);
    free(b.text);
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
