#include "data/text_convert.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The unit of the train/validation split: whole lines, closed at the first
 * line end at or after CHUNK_BYTES, at CHUNK_MAX_BYTES for text with very
 * long lines, and at the end of each input file. Whole lines keep a
 * multi-byte tokenizer from seeing a word cut in two; 4 KiB gives even a
 * small domain (a few hundred KiB) enough chunks to sample a validation set. */
#define CHUNK_BYTES 4096
#define CHUNK_MAX_BYTES (16 * CHUNK_BYTES)
#define READ_BYTES 65536

/* The chunk hash that decides the split: FNV-1a 64 followed by MurmurHash3's
 * fmix64. FNV-1a alone leaves its top bits, the ones compared with the
 * fraction, visibly non-uniform over chunks of similar text that all end in
 * a newline; the finaliser mixes every bit into every other. */
static uint64_t chunk_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

typedef struct converter {
    const ts_tokenizer *tok;
    ts_token_writer *writer;
    double val_fraction;
    unsigned char *chunk; /* CHUNK_MAX_BYTES */
    size_t len;
    int32_t *tokens; /* CHUNK_MAX_BYTES: at most one token per byte */
    long chunks[TS_N_SPLITS];
    FILE *train_text; /* set: write the train split's text here instead of tokens */
    const char *train_text_path;
} converter;

/* Tokenises the pending chunk into the split its hash picks. The hash is of
 * the chunk's bytes, not its position: the split is deterministic, does not
 * follow the order of the text (the last 5% of the Bible is not Genesis-like),
 * and identical chunks land in the same split. */
static int emit_chunk(converter *c, const char *input, ts_tf_err *err) {
    if (c->len == 0) return 0;
    double u = (double)chunk_hash(c->chunk, c->len) / 18446744073709551616.0; /* / 2^64 */
    enum ts_split split = u < c->val_fraction ? TS_SPLIT_VALIDATION : TS_SPLIT_TRAIN;
    if (c->train_text) {
        size_t len = c->len;
        c->len = 0;
        c->chunks[split]++;
        if (split != TS_SPLIT_TRAIN || fwrite(c->chunk, 1, len, c->train_text) == len) return 0;
        snprintf(err->msg, sizeof err->msg, "%s: write error: %s", c->train_text_path,
                 strerror(errno));
        return -1;
    }
    long n = c->tok->encode(c->tok, c->chunk, c->len, c->tokens);
    if (n < 0) {
        snprintf(err->msg, sizeof err->msg, "%s: the %s tokenizer cannot encode this text", input,
                 c->tok->name);
        return -1;
    }
    c->len = 0;
    c->chunks[split]++;
    return ts_token_writer_append(c->writer, split, c->tokens, (size_t)n, err) == TS_TF_OK ? 0 : -1;
}

static int convert_file(converter *c, const char *input, ts_tf_err *err) {
    FILE *f = fopen(input, "rb");
    if (!f) {
        snprintf(err->msg, sizeof err->msg, "%s: cannot open: %s", input, strerror(errno));
        return -1;
    }
    unsigned char *buf = malloc(READ_BYTES);
    int rc = buf ? 0 : -1;
    if (!buf) snprintf(err->msg, sizeof err->msg, "%s: out of memory", input);
    size_t got;
    while (!rc && (got = fread(buf, 1, READ_BYTES, f)) > 0) {
        for (size_t i = 0; i < got && !rc; i++) {
            c->chunk[c->len++] = buf[i];
            if ((buf[i] == '\n' && c->len >= CHUNK_BYTES) || c->len == CHUNK_MAX_BYTES)
                rc = emit_chunk(c, input, err);
        }
    }
    if (!rc && ferror(f)) {
        snprintf(err->msg, sizeof err->msg, "%s: read error: %s", input, strerror(errno));
        rc = -1;
    }
    if (!rc) rc = emit_chunk(c, input, err); /* a chunk never spans two files */
    free(buf);
    fclose(f);
    return rc;
}

/* "input files a.txt (123 bytes), b.txt (45 bytes)", the default source. */
static char *describe_inputs(const ts_text_convert_options *a) {
    /* Room for each name plus ", " " (" 20 digits " bytes)". */
    size_t cap = 16;
    for (int i = 0; i < a->n_inputs; i++) cap += strlen(a->inputs[i]) + 40;
    char *s = malloc(cap);
    if (!s) return NULL;
    int at = snprintf(s, cap, "input file%s", a->n_inputs > 1 ? "s" : "");
    for (int i = 0; i < a->n_inputs && at >= 0 && (size_t)at < cap; i++) {
        struct stat sb;
        long long size = stat(a->inputs[i], &sb) == 0 ? (long long)sb.st_size : -1;
        int n = snprintf(s + at, cap - (size_t)at, "%s %s (%lld bytes)", i ? "," : "", a->inputs[i],
                         size);
        at = n < 0 ? n : at + n;
    }
    return s;
}

bool ts_text_convert_output_usable(const ts_text_convert_options *options, char *err,
                                   size_t errlen) {
    return ts_token_file_check_output(options->output, options->force, err, errlen) == TS_IO_OK;
}

bool ts_text_convert(const ts_text_convert_options *options, ts_text_convert_result *result,
                     char *errmsg, size_t errlen) {
    const ts_text_convert_options a = *options;
    const ts_tokenizer *tok = a.tokenizer;
    *result = (ts_text_convert_result){{0, 0}, {0, 0}};
    if (!ts_text_convert_output_usable(options, errmsg, errlen)) return false;

    /* Written under a temporary name and renamed when complete: a failed or
     * interrupted conversion never destroys an existing file, and readers
     * never see a half-written one. */
    size_t tmp_len = strlen(a.output) + 32;
    char *tmp = malloc(tmp_len);
    char *inputs = a.source ? NULL : describe_inputs(&a);
    /* The source, and what the tokenizer says about itself (a model's path
     * and hash): where the tokens came from, in the file. */
    const char *given = a.source ? a.source : inputs;
    size_t source_len =
        (given ? strlen(given) : 0) + (tok->description ? strlen(tok->description) : 0) + 32;
    char *source = given ? malloc(source_len) : NULL;
    if (source)
        snprintf(source, source_len, "%s%s%s", given, tok->description ? "; tokenizer: " : "",
                 tok->description ? tok->description : "");
    char split_rule[512];
    snprintf(split_rule, sizeof split_rule,
             "chunks of whole lines, each closed at the first line end at or after %d bytes "
             "(or at %d bytes, or at the end of an input file); a chunk goes to validation iff "
             "fmix64(FNV-1a-64(chunk bytes)) / 2^64 < %g; each split keeps the input order",
             CHUNK_BYTES, CHUNK_MAX_BYTES, a.val_fraction);
    converter c = {.tok = tok,
                   .val_fraction = a.val_fraction,
                   .chunk = malloc(CHUNK_MAX_BYTES),
                   .tokens = malloc(CHUNK_MAX_BYTES * sizeof(int32_t))};
    ts_tf_err err = {{0}};
    int rc = 0;
    if (!tmp || !source || !c.chunk || !c.tokens) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        rc = -1;
    }
    if (!rc) {
        snprintf(tmp, tmp_len, "%s.tmp.%ld", a.output, (long)getpid());
        ts_token_meta meta = {.domain = a.name,
                              .tokenizer = tok->name,
                              .source = source,
                              .split_rule = split_rule,
                              .vocab_size = tok->vocab_size};
        rc = ts_token_writer_create(&c.writer, tmp, &meta, &err) == TS_TF_OK ? 0 : -1;
    }
    for (int i = 0; i < a.n_inputs && !rc; i++) rc = convert_file(&c, a.inputs[i], &err);
    int64_t n[TS_N_SPLITS] = {0, 0};
    if (c.writer) {
        for (int s = 0; s < TS_N_SPLITS; s++) n[s] = ts_token_writer_count(c.writer, s);
    }
    /* An empty split would only fail later, in the middle of a training run. */
    if (!rc && (n[TS_SPLIT_TRAIN] == 0 || (a.val_fraction > 0 && n[TS_SPLIT_VALIDATION] == 0))) {
        snprintf(err.msg, sizeof err.msg,
                 "%s: the %s split would be empty (%ld chunks of text in all): give more text or "
                 "%s --val-fraction",
                 a.output, n[TS_SPLIT_TRAIN] == 0 ? "train" : "validation",
                 c.chunks[0] + c.chunks[1], n[TS_SPLIT_TRAIN] == 0 ? "lower" : "raise");
        rc = -1;
    }
    if (c.writer) {
        if (rc)
            ts_token_writer_discard(c.writer);
        else
            rc = ts_token_writer_finish(c.writer, &err) == TS_TF_OK ? 0 : -1;
    }
    if (!rc && rename(tmp, a.output) != 0) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot rename %s to it: %s", a.output, tmp,
                 strerror(errno));
        rc = -1;
    }
    if (rc && c.writer) remove(tmp);
    if (rc) snprintf(errmsg, errlen, "%s", err.msg);
    for (int s = 0; s < TS_N_SPLITS; s++) {
        result->tokens[s] = n[s];
        result->chunks[s] = c.chunks[s];
    }
    free(c.tokens);
    free(c.chunk);
    free(source);
    free(inputs);
    free(tmp);
    return rc == 0;
}

bool ts_text_convert_train_text(const ts_text_convert_options *options, const char *text_path,
                                char *errmsg, size_t errlen) {
    converter c = {.val_fraction = options->val_fraction,
                   .chunk = malloc(CHUNK_MAX_BYTES),
                   .train_text_path = text_path};
    ts_tf_err err = {{0}};
    int rc = 0;
    if (!c.chunk) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        rc = -1;
    } else if (!(c.train_text = fopen(text_path, "wb"))) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot create: %s", text_path, strerror(errno));
        rc = -1;
    }
    for (int i = 0; i < options->n_inputs && !rc; i++)
        rc = convert_file(&c, options->inputs[i], &err);
    if (c.train_text && fclose(c.train_text) != 0 && !rc) {
        snprintf(err.msg, sizeof err.msg, "%s: write error: %s", text_path, strerror(errno));
        rc = -1;
    }
    if (!rc && c.chunks[TS_SPLIT_TRAIN] == 0) {
        snprintf(err.msg, sizeof err.msg,
                 "the train split would be empty: give more text or lower --val-fraction");
        rc = -1;
    }
    if (rc) snprintf(errmsg, errlen, "%s", err.msg);
    free(c.chunk);
    return rc == 0;
}
