/* Text files to one token file (docs/data-format.md): whole-line chunks,
 * each sent to the train or validation split by a hash of its bytes,
 * written under a temporary name and renamed when complete. */
#ifndef TS_TEXT_CONVERT_H
#define TS_TEXT_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer.h"
#include "io/token_file.h"

typedef struct ts_text_convert_options {
    const char *const *inputs;
    int n_inputs;
    const char *output;
    const char *name;   /* the domain */
    const char *source; /* NULL: the input files and their sizes */
    const ts_tokenizer *tokenizer;
    double val_fraction; /* in [0, 1) */
    int force;           /* replace an existing output */
} ts_text_convert_options;

typedef struct ts_text_convert_result {
    int64_t tokens[TS_N_SPLITS];
    long chunks[TS_N_SPLITS];
} ts_text_convert_result;

/* Whether ts_text_convert may write options->output (its directory exists
 * and is writable; an existing file is replaced only with force, and only
 * if it is a token file): false with the message ts_text_convert would give.
 * For callers that do costly work first, such as training a tokenizer. */
bool ts_text_convert_output_usable(const ts_text_convert_options *options, char *err,
                                   size_t errlen);

/* False with a message naming the file and the problem; an existing output
 * is then untouched. */
bool ts_text_convert(const ts_text_convert_options *options, ts_text_convert_result *result,
                     char *err, size_t errlen);

/* Writes to text_path the bytes that ts_text_convert would put in the train
 * split (same chunks, same rule; output, force and tokenizer are ignored):
 * the text to train a tokenizer on without seeing validation text. */
bool ts_text_convert_train_text(const ts_text_convert_options *options, const char *text_path,
                                char *err, size_t errlen);

#endif
