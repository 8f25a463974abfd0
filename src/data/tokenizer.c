#include "data/tokenizer.h"

#include <stdio.h>
#include <string.h>

/* One token per byte: the token is the byte's value. Needs no tables and
 * encodes any input, which is why it is the default. */
static long encode_bytes(const ts_tokenizer *tok, const unsigned char *bytes, size_t n,
                         int32_t *out) {
    (void)tok;
    for (size_t i = 0; i < n; i++) out[i] = bytes[i];
    return (long)n;
}

static const ts_tokenizer tokenizers[] = {
    {"byte", 256, encode_bytes, NULL, NULL, NULL},
};
static const size_t n_tokenizers = sizeof tokenizers / sizeof tokenizers[0];

long ts_tokenizer_encode_segments(const ts_tokenizer *tok, const unsigned char *bytes,
                                  const size_t *ends, size_t n_segments, int32_t *out,
                                  size_t *token_ends) {
    if (tok->encode_segments)
        return tok->encode_segments(tok, bytes, ends, n_segments, out, token_ends);
    /* Each segment on its own: no token can span two. */
    size_t start = 0, count = 0;
    for (size_t s = 0; s < n_segments; s++) {
        if (ends[s] < start) return -1;
        long n =
            ends[s] > start ? tok->encode(tok, bytes + start, ends[s] - start, out + count) : 0;
        if (n < 0) return -1;
        count += (size_t)n;
        token_ends[s] = count;
        start = ends[s];
    }
    return (long)count;
}

const ts_tokenizer *ts_tokenizer_find(const char *name) {
    for (size_t i = 0; i < n_tokenizers; i++)
        if (!strcmp(name, tokenizers[i].name)) return &tokenizers[i];
    return NULL;
}

const ts_tokenizer *ts_tokenizer_list(size_t *count) {
    *count = n_tokenizers;
    return tokenizers;
}

bool ts_tokenizer_check_same(const char *expected, const char *found, const char *path, char *err,
                             size_t errlen) {
    if (!expected || !found || !expected[0] || !found[0] || !strcmp(expected, found)) return true;
    snprintf(err, errlen,
             "%s was tokenized by '%s' but the model's training data by '%s': convert it with the "
             "training data's tokenizer (for SentencePiece, the same --spm-model file)",
             path, found, expected);
    return false;
}
