/* Token files: one domain's tokenised text in HDF5, a train and a validation
 * split (the format is specified in docs/data-format.md).
 *
 * Writing is serial (ts_token_writer, used by `thinkscale data convert`);
 * reading is for MPI programs (ts_token_file): the file is opened with the
 * MPI-IO driver on a communicator and every rank reads only the ranges it
 * needs, by hyperslab.
 *
 * No function prints or exits: each returns a ts_tf_status (a ts_io_status)
 * and, on failure, fills a ts_tf_err with a message that names the file and the problem, for
 * the caller to print. HDF5's own error-stack printing is switched off for
 * the duration of each call (and restored afterwards). */
#ifndef TS_TOKEN_FILE_H
#define TS_TOKEN_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>
#include <mpi.h>

#include "io/h5_toolkit.h"

#define TS_TF_FORMAT_VERSION 1

enum ts_split { TS_SPLIT_TRAIN = 0, TS_SPLIT_VALIDATION = 1, TS_N_SPLITS = 2 };

/* "train" or "validation": the group holding the split's tokens. */
const char *ts_split_name(enum ts_split split);

/* Token-file statuses are the toolkit's (io/h5_toolkit.h), under names that
 * say what they mean for a token file. */
typedef ts_io_status ts_tf_status;
#define TS_TF_OK TS_IO_OK
/* the file does not exist or cannot be read */
#define TS_TF_ERR_MISSING TS_IO_ERR_MISSING
/* not an HDF5 file, or one too damaged to open */
#define TS_TF_ERR_NOT_HDF5 TS_IO_ERR_NOT_HDF5
/* HDF5, but not a token file: missing dataset or attribute, wrong rank or type */
#define TS_TF_ERR_FORMAT TS_IO_ERR_FORMAT
/* vocabulary differs from the expected one, or a token outside [0, vocab_size) */
#define TS_TF_ERR_VOCAB TS_IO_ERR_MISMATCH
/* a split's tokens do not match its stored checksum */
#define TS_TF_ERR_CHECKSUM TS_IO_ERR_CORRUPT
/* a requested range lies outside the split, or bad arguments */
#define TS_TF_ERR_RANGE TS_IO_ERR_ARGS
/* an HDF5 or MPI call failed */
#define TS_TF_ERR_IO TS_IO_ERR_IO
#define TS_TF_ERR_NOMEM TS_IO_ERR_NOMEM

/* The message buffer of a token-file call (filled as the toolkit's err). */
typedef struct ts_tf_err {
    char msg[1024];
} ts_tf_err;

/* Descriptive metadata of a token file. The writer copies what it needs; in
 * an open ts_token_file the strings belong to the file (absent optional
 * attributes read as ""). */
typedef struct ts_token_meta {
    const char *domain;     /* e.g. "bible" */
    const char *tokenizer;  /* a ts_tokenizer name, e.g. "byte" */
    const char *source;     /* where the text came from, free text */
    const char *split_rule; /* how text was assigned to the splits, free text */
    int32_t vocab_size;
    /* The file carries an answer mask: per token 1 if it belongs to an
     * answer (scored in answer-only evaluation), else 0; both splits. */
    bool answer_mask;
} ts_token_meta;

/* ---------------------------------------------------------------- writing */

typedef struct ts_token_writer ts_token_writer;

/* The root attribute "format" of the token files this program writes (files
 * of other tools need not have it: docs/data-format.md). */
#define TS_TF_FORMAT_NAME "thinkscale-tokens"

/* Whether a command may write a token file at path (ts_h5_check_output): the
 * directory exists and is writable; an existing file only with force, and
 * only a token file (with vocab_size, or format "thinkscale-tokens"), never a
 * checkpoint, metrics.h5 or eval result. --force replaces only what the
 * command makes. */
ts_io_status ts_token_file_check_output(const char *path, bool force, char *err, size_t errlen);

/* Creates a new file at path; fails if it already exists (callers write to a
 * temporary name and rename, so a failure never destroys a finished file). */
ts_tf_status ts_token_writer_create(ts_token_writer **out, const char *path,
                                    const ts_token_meta *meta, ts_tf_err *err);

/* Appends tokens to a split. Every token must lie in [0, vocab_size). A
 * writer created with meta.answer_mask takes them with their mask instead. */
ts_tf_status ts_token_writer_append(ts_token_writer *w, enum ts_split split, const int32_t *tokens,
                                    size_t n, ts_tf_err *err);

/* Appends tokens and their answer flags (each 0 or 1) to a split of a
 * writer created with meta.answer_mask. */
ts_tf_status ts_token_writer_append_masked(ts_token_writer *w, enum ts_split split,
                                           const int32_t *tokens, const uint8_t *mask, size_t n,
                                           ts_tf_err *err);

/* Tokens appended so far to a split. */
int64_t ts_token_writer_count(const ts_token_writer *w, enum ts_split split);

/* Writes the remaining tokens, counts and checksums, closes the file and frees
 * the writer (also on failure, after which the file is incomplete). */
ts_tf_status ts_token_writer_finish(ts_token_writer *w, ts_tf_err *err);

/* Closes and frees the writer without finishing; the caller removes the file. */
void ts_token_writer_discard(ts_token_writer *w);

/* ---------------------------------------------------------------- reading */

typedef struct ts_token_open_opts {
    int32_t expected_vocab; /* > 0: fail with TS_TF_ERR_VOCAB unless vocab_size equals it */
    bool verify;            /* check both splits against their checksums on open */
    bool collective;        /* reads use collective MPI-IO transfers (see ts_token_file_read) */
} ts_token_open_opts;

typedef struct ts_token_file {
    char *path;
    MPI_Comm comm; /* a duplicate of the caller's communicator */
    int rank;
    hid_t file;
    hid_t dset[TS_N_SPLITS];
    hid_t dxpl; /* transfer properties of ts_token_file_read*: collective or independent */
    bool collective;
    int64_t n_tokens[TS_N_SPLITS];
    uint32_t crc32[TS_N_SPLITS];
    bool has_mask; /* both splits have an answer mask */
    hid_t mask_dset[TS_N_SPLITS];
    uint32_t mask_crc32[TS_N_SPLITS];
    ts_token_meta meta;
    char *strings[4]; /* own meta's strings */
} ts_token_file;

/* Opens a token file on every rank of comm (collective). All ranks return the
 * same status and message. opts may be NULL (no vocabulary check, no
 * verification, independent reads). On failure nothing needs closing. */
ts_tf_status ts_token_file_open(ts_token_file *tf, const char *path, MPI_Comm comm,
                                const ts_token_open_opts *opts, ts_tf_err *err);

/* Number of tokens in a split. */
int64_t ts_token_file_len(const ts_token_file *tf, enum ts_split split);

/* Reads tokens [offset, offset + count) of a split into out. Each rank passes
 * its own range. With opts.collective every rank of the communicator must
 * call this (or read_windows) the same number of times, in the same order; a
 * rank with nothing to read passes count 0, and a rank whose request is
 * invalid still takes part (reading nothing) before returning its error, so
 * the others do not hang. Without it, ranks read independently. */
ts_tf_status ts_token_file_read(ts_token_file *tf, enum ts_split split, int64_t offset,
                                int64_t count, int32_t *out, ts_tf_err *err);

/* Reads n windows of len tokens, window i starting at offsets[i], into
 * out[i * len .. (i + 1) * len): e.g. a rank's shard of a batch of sequences
 * of T + 1 tokens. Windows may overlap and come in any order; the file is
 * read once, as the union of the windows. Collective as ts_token_file_read. */
ts_tf_status ts_token_file_read_windows(ts_token_file *tf, enum ts_split split,
                                        const int64_t *offsets, int n, int64_t len, int32_t *out,
                                        ts_tf_err *err);

/* Reads the answer mask (0 or 1 per token) of the same windows as
 * ts_token_file_read_windows, into out[i * len ..]; the file must have one
 * (tf->has_mask). Collective as ts_token_file_read. */
ts_tf_status ts_token_file_read_mask_windows(ts_token_file *tf, enum ts_split split,
                                             const int64_t *offsets, int n, int64_t len,
                                             uint8_t *out, ts_tf_err *err);

/* Checks both splits against their stored checksums and the vocabulary, and
 * an answer mask against its checksum and its values
 * (collective: rank 0 reads, every rank gets the result). */
ts_tf_status ts_token_file_verify(ts_token_file *tf, ts_tf_err *err);

/* Collective. Safe on a file whose open failed. */
void ts_token_file_close(ts_token_file *tf);

#endif
