/* A subword tokenizer: SentencePiece, through Debian's command-line tools
 * spm_train, spm_encode and spm_export_vocab (package sentencepiece). The
 * library is C++ only, and the program stays C: text is handed to the tools
 * in files, ids come back as text.
 *
 * Models are trained to be lossless on any text: no normalisation
 * (identity), whitespace kept as it is, no dummy prefix, unknown characters
 * as their UTF-8 bytes (byte fallback), digits split one by one. spm_encode
 * encodes line by line and drops the line ends, so the tokenizer adds one id
 * for "\n" after the model's pieces: vocab_size = pieces + 1 and the newline
 * is id `pieces`. Every piece covers at least one byte, so the tokenizer
 * contract (at most one token per byte) holds.
 *
 * The tokenizer's name, stored in token files, is its identity:
 * "sentencepiece:" and the FNV-1a-64 hash of the model file in 16 hex
 * digits. Files encoded with different models have different names, and the
 * trainer and `thinkscale eval` refuse to mix them. */
#ifndef TS_SPM_TOKENIZER_H
#define TS_SPM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/text_convert.h"
#include "data/tokenizer.h"

#define TS_SPM_NAME_PREFIX "sentencepiece:"
#define TS_SPM_MIN_VOCAB 300 /* 256 byte pieces, <unk>, and a few of its own */
#define TS_SPM_MAX_VOCAB 1000000

typedef struct ts_spm_train_options {
    int vocab_size;     /* pieces, in [TS_SPM_MIN_VOCAB, TS_SPM_MAX_VOCAB] */
    uint32_t seed;      /* spm_train's random seed (sentence sampling) */
    long max_sentences; /* lines sampled for training (0: all) */
    bool force;         /* replace an existing model file */
} ts_spm_train_options;

/* Trains a model on the training split of a conversion's inputs: the text
 * that `options` would put in the train split (ts_text_convert_train_text),
 * so no validation text shapes the vocabulary. Writes model_path (which must
 * end in ".model") and its ".vocab" beside it, via temporary names; an
 * existing model is replaced only with force. False with a message (the
 * tool's last lines when it fails). */
bool ts_spm_train(const ts_text_convert_options *options, const char *model_path,
                  const ts_spm_train_options *train, char *err, size_t errlen);

/* The tokenizer of an existing model file, or NULL with a message (file
 * missing, not a model, tools missing). Its description, which text_convert
 * adds to a token file's source, names the model's absolute path and hash.
 * Free with ts_spm_tokenizer_close. */
ts_tokenizer *ts_spm_tokenizer_open(const char *model_path, char *err, size_t errlen);

void ts_spm_tokenizer_close(ts_tokenizer *tok);

/* Whether a tokenizer name is a SentencePiece identity. */
bool ts_spm_is_name(const char *tokenizer_name);

#endif
