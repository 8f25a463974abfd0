/* Tokenizers: text bytes in, int32 token ids out. A tokenizer is a constant
 * description (name, vocabulary size, encode function); the byte-level one is
 * the default. Adding one that needs no files means writing an encode
 * function and listing it in tokenizer.c; one made from a model file
 * (SentencePiece, spm_tokenizer.h) is opened from that file instead. */
#ifndef TS_TOKENIZER_H
#define TS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_tokenizer ts_tokenizer;

/* Encodes n bytes into out and returns the number of tokens written.
 * Contract of every tokenizer: at most one token per input byte, so out needs
 * room for n tokens, and every token lies in [0, vocab_size). Returns -1 if
 * the bytes cannot be encoded. */
typedef long (*ts_encode_fn)(const ts_tokenizer *tok, const unsigned char *bytes, size_t n,
                             int32_t *out);

/* Encodes consecutive segments of text with a token boundary forced at the
 * end of every segment: segment s is bytes [ends[s - 1], ends[s]) (ends[-1]
 * = 0, ends non-decreasing), no token spans two segments, and token_ends[s]
 * receives the number of tokens of segments 0..s. The same contract as
 * ts_encode_fn (at most one token per byte, so out needs room for
 * ends[n_segments - 1] tokens); returns the total, or -1. */
typedef long (*ts_encode_segments_fn)(const ts_tokenizer *tok, const unsigned char *bytes,
                                      const size_t *ends, size_t n_segments, int32_t *out,
                                      size_t *token_ends);

struct ts_tokenizer {
    const char *name; /* stored in token files, matched by ts_tokenizer_find */
    int32_t vocab_size;
    ts_encode_fn encode;
    /* Optional: a batched ts_tokenizer_encode_segments, for a tokenizer whose
     * every encode call is costly (a subprocess); NULL encodes each segment
     * with its own encode call. */
    ts_encode_segments_fn encode_segments;
    const void *state;       /* a tokenizer's tables (vocabulary, merges); NULL for bytes */
    const char *description; /* what a token file's source should say about it; NULL for bytes */
};

/* Encodes segments with forced boundaries (ts_encode_segments_fn): through
 * the tokenizer's encode_segments, or one encode call per segment. This is
 * how a question-answer set keeps an exact answer mask under any tokenizer:
 * the answer is its own segment, so its tokens are exactly its text's. */
long ts_tokenizer_encode_segments(const ts_tokenizer *tok, const unsigned char *bytes,
                                  const size_t *ends, size_t n_segments, int32_t *out,
                                  size_t *token_ends);

/* The tokenizer called name, or NULL if there is none. */
const ts_tokenizer *ts_tokenizer_find(const char *name);

/* All tokenizers that need no model file, for usage messages: returns the
 * table and sets *count. */
const ts_tokenizer *ts_tokenizer_list(size_t *count);

/* Whether a token file whose tokenizer is `found` (path, for the message)
 * may be used with a model trained on data of tokenizer `expected`: the
 * names (a SentencePiece name includes its model's hash) must be equal.
 * An empty name (a file made by another tool without one, a run from before
 * tokenizers were recorded) is not checked. False with a message. */
bool ts_tokenizer_check_same(const char *expected, const char *found, const char *path, char *err,
                             size_t errlen);

#endif
