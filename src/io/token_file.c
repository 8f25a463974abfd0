#include "io/token_file.h"

#include "io/provenance.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Tokens per HDF5 chunk: 256 KiB of int32. Chunked (not contiguous) storage
 * lets the writer stream a corpus of unknown length; no filters, so a window
 * read costs exactly its bytes and parallel reads need no decompression. */
#define CHUNK_TOKENS 65536
/* Tokens per read while verifying a split: bounds its memory at 4 MiB. */
#define VERIFY_BLOCK (1 << 20)

static const char *const split_names[TS_N_SPLITS] = {"train", "validation"};

const char *ts_split_name(enum ts_split split) {
    return (unsigned)split < TS_N_SPLITS ? split_names[split] : "?";
}

static bool valid_split(enum ts_split split) {
    return (unsigned)split < TS_N_SPLITS;
}

/* ---------------------------------------------------------------- errors */

/* Messages go through the toolkit, into the caller's ts_tf_err. */
#define fail(err, st, ...) ts_io_fail((err)->msg, sizeof(err)->msg, (st), __VA_ARGS__)
#define h5fail(err, st, ...) ts_h5_fail((err)->msg, sizeof(err)->msg, (st), __VA_ARGS__)

/* HDF5 prints its error stack to stderr by default; we report through
 * ts_tf_err instead. Each public function silences it (ts_h5_quiet_begin) and
 * restores the caller's setting on return. */
static ts_tf_status quiet_end(ts_h5_quiet q, ts_tf_status st) {
    ts_h5_quiet_end(q);
    return st;
}

/* ---------------------------------------------------------------- checksum */

/* CRC-32 (IEEE 802.3, as zlib.crc32) of the tokens as 4-byte little-endian
 * integers, whatever the machine's byte order or the file's storage type, so
 * Python can check it with zlib.crc32(tokens.astype("<i4").tobytes()). The
 * table lives with the running value: no shared state. */
typedef struct crc32_state {
    uint32_t table[256];
    uint32_t crc;
} crc32_state;

static void crc32_init(crc32_state *c) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int k = 0; k < 8; k++) r = (r & 1) ? 0xEDB88320u ^ (r >> 1) : r >> 1;
        c->table[i] = r;
    }
    c->crc = 0xFFFFFFFFu;
}

static void crc32_tokens(crc32_state *c, const int32_t *tokens, size_t n) {
    uint32_t crc = c->crc;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)tokens[i];
        for (int b = 0; b < 4; b++, v >>= 8) crc = c->table[(crc ^ v) & 0xFF] ^ (crc >> 8);
    }
    c->crc = crc;
}

/* The same CRC over bytes: an answer mask's, as zlib.crc32(mask.astype("u1").tobytes()). */
static void crc32_bytes(crc32_state *c, const uint8_t *bytes, size_t n) {
    uint32_t crc = c->crc;
    for (size_t i = 0; i < n; i++) crc = c->table[(crc ^ bytes[i]) & 0xFF] ^ (crc >> 8);
    c->crc = crc;
}

static uint32_t crc32_value(const crc32_state *c) {
    return c->crc ^ 0xFFFFFFFFu;
}

/* Index of the first mask value other than 0 or 1, or n if there is none. */
static size_t first_bad_flag(const uint8_t *mask, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (mask[i] > 1) return i;
    return n;
}

/* Index of the first token outside [0, vocab), or n if there is none. */
static size_t first_out_of_vocab(const int32_t *tokens, size_t n, int32_t vocab) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab) return i;
    return n;
}

/* ---------------------------------------------------------------- attributes */

/* Writers and readers are the toolkit's; these add the token file's
 * messages. Strings are variable-length UTF-8, as h5py writes them, so a file
 * made in Python and one made here look the same. */
static ts_tf_status write_int_attr(const char *path, hid_t obj, const char *name, hid_t type,
                                   const void *value, hid_t memtype, ts_tf_err *err) {
    if (ts_h5_write_scalar_attr(obj, name, type, memtype, value) < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot write attribute %s", path, name);
    return TS_TF_OK;
}

static ts_tf_status write_str_attr(const char *path, hid_t obj, const char *name, const char *value,
                                   ts_tf_err *err) {
    if (ts_h5_write_string_attr(obj, name, value ? value : "") < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot write attribute %s", path, name);
    return TS_TF_OK;
}

/* A missing attribute means the file is not a token file. */
static ts_tf_status require_attr(const char *path, hid_t obj, const char *where, const char *name,
                                 ts_tf_err *err) {
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot look up attribute %s of %s", path, name,
                      where);
    if (!exists)
        return fail(err, TS_TF_ERR_FORMAT, "%s: %s has no attribute %s: not a token file", path,
                    where, name);
    return TS_TF_OK;
}

/* Any integer type (int32, uint32, int64, as h5py writes): HDF5 converts. */
static ts_tf_status read_int_attr(const char *path, hid_t obj, const char *where, const char *name,
                                  int64_t *out, ts_tf_err *err) {
    ts_tf_status st = require_attr(path, obj, where, name, err);
    if (st == TS_TF_OK && ts_h5_read_int64_attr(obj, name, out) < 0)
        st = fail(err, TS_TF_ERR_FORMAT, "%s: attribute %s of %s is not an integer", path, name,
                  where);
    return st;
}

/* Fixed- or variable-length, ASCII or UTF-8; *out is malloc'd. */
static ts_tf_status read_str_attr(const char *path, hid_t obj, const char *where, const char *name,
                                  char **out, ts_tf_err *err) {
    *out = NULL;
    ts_tf_status st = require_attr(path, obj, where, name, err);
    if (st == TS_TF_OK && ts_h5_read_string_attr(obj, name, out) < 0)
        st = fail(err, TS_TF_ERR_FORMAT, "%s: attribute %s of %s is not a readable string", path,
                  name, where);
    return st;
}

/* ---------------------------------------------------------------- writer */

struct ts_token_writer {
    char *path;
    hid_t file;
    hid_t dset[TS_N_SPLITS];
    int32_t vocab_size;
    int64_t count[TS_N_SPLITS];   /* tokens appended */
    int64_t written[TS_N_SPLITS]; /* of which in the file */
    /* One chunk per split, so the file is written in whole chunks however
     * small the appends are. */
    int32_t *buf[TS_N_SPLITS];
    crc32_state crc[TS_N_SPLITS];
    /* The answer mask, buffered and checksummed alongside (meta.answer_mask). */
    bool masked;
    hid_t mask_dset[TS_N_SPLITS];
    uint8_t *mask_buf[TS_N_SPLITS];
    crc32_state mask_crc[TS_N_SPLITS];
};

static void writer_free(ts_token_writer *w) {
    for (int s = 0; s < TS_N_SPLITS; s++) {
        if (w->dset[s] >= 0) H5Dclose(w->dset[s]);
        if (w->mask_dset[s] >= 0) H5Dclose(w->mask_dset[s]);
        free(w->buf[s]);
        free(w->mask_buf[s]);
    }
    if (w->file >= 0) H5Fclose(w->file);
    free(w->path);
    free(w);
}

static ts_tf_status create_split(ts_token_writer *w, int s, ts_tf_err *err) {
    char where[64];
    snprintf(where, sizeof where, "/%s/tokens", split_names[s]);
    hsize_t dim = 0, maxdim = H5S_UNLIMITED, chunk = CHUNK_TOKENS;
    hid_t group = H5Gcreate2(w->file, split_names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t space = H5Screate_simple(1, &dim, &maxdim);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t rc = (group < 0 || space < 0 || dcpl < 0) ? -1 : H5Pset_chunk(dcpl, 1, &chunk);
    /* Every chunk is written in full before it is read, so filling it with
     * zeros first would only cost time. */
    if (rc >= 0) rc = H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    if (rc >= 0) {
        w->dset[s] =
            H5Dcreate2(group, "tokens", H5T_STD_I32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        rc = w->dset[s] < 0 ? -1 : 0;
    }
    /* The mask: one byte per token, chunked like the tokens. */
    if (rc >= 0 && w->masked) {
        w->mask_dset[s] =
            H5Dcreate2(group, "answer_mask", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        rc = w->mask_dset[s] < 0 ? -1 : 0;
        if (rc >= 0 && !(w->mask_buf[s] = malloc(CHUNK_TOKENS))) rc = -1;
    }
    ts_tf_status st =
        rc < 0 ? h5fail(err, TS_TF_ERR_IO, "%s: cannot create %s", w->path, where) : TS_TF_OK;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (group >= 0) H5Gclose(group);
    if (st == TS_TF_OK && !(w->buf[s] = malloc(CHUNK_TOKENS * sizeof(int32_t))))
        st = fail(err, TS_TF_ERR_NOMEM, "%s: out of memory", w->path);
    crc32_init(&w->crc[s]);
    crc32_init(&w->mask_crc[s]);
    return st;
}

static ts_tf_status writer_create(ts_token_writer **out, const char *path,
                                  const ts_token_meta *meta, ts_tf_err *err) {
    *out = NULL;
    if (!meta || !meta->tokenizer || meta->vocab_size <= 0)
        return fail(err, TS_TF_ERR_RANGE,
                    "%s: a token file needs a tokenizer name and a vocabulary size > 0", path);
    struct stat sb;
    if (stat(path, &sb) == 0)
        return fail(err, TS_TF_ERR_IO,
                    "%s: already exists; token files are never overwritten in place", path);
    ts_token_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return fail(err, TS_TF_ERR_NOMEM, "%s: out of memory", path);
    }
    w->file = w->dset[0] = w->dset[1] = w->mask_dset[0] = w->mask_dset[1] = H5I_INVALID_HID;
    w->vocab_size = meta->vocab_size;
    w->masked = meta->answer_mask;
    /* EXCL: a file that appeared since the check above is not clobbered. */
    w->file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    ts_tf_status st =
        w->file < 0 ? h5fail(err, TS_TF_ERR_IO, "%s: cannot create file", path) : TS_TF_OK;
    int64_t version = TS_TF_FORMAT_VERSION, vocab = meta->vocab_size;
    if (!st)
        st = write_int_attr(path, w->file, "format_version", H5T_STD_I64LE, &version,
                            H5T_NATIVE_INT64, err);
    if (!st)
        st = write_int_attr(path, w->file, "vocab_size", H5T_STD_I64LE, &vocab, H5T_NATIVE_INT64,
                            err);
    if (!st) st = write_str_attr(path, w->file, "format", TS_TF_FORMAT_NAME, err);
    if (!st) st = write_str_attr(path, w->file, "tokenizer", meta->tokenizer, err);
    if (!st) st = write_str_attr(path, w->file, "domain", meta->domain, err);
    if (!st) st = write_str_attr(path, w->file, "source", meta->source, err);
    if (!st) st = write_str_attr(path, w->file, "split_rule", meta->split_rule, err);
    for (int s = 0; s < TS_N_SPLITS && !st; s++) st = create_split(w, s, err);
    if (st) {
        /* Remove only a file this call created: EXCL guarantees that. */
        bool created = w->file >= 0;
        writer_free(w);
        if (created) remove(path);
        return st;
    }
    *out = w;
    return TS_TF_OK;
}

static ts_tf_status flush_split(ts_token_writer *w, int s, ts_tf_err *err) {
    hsize_t start = (hsize_t)w->written[s], n = (hsize_t)(w->count[s] - w->written[s]);
    if (n == 0) return TS_TF_OK;
    hsize_t size = start + n;
    herr_t rc = H5Dset_extent(w->dset[s], &size);
    hid_t fspace = rc < 0 ? H5I_INVALID_HID : H5Dget_space(w->dset[s]);
    hid_t mspace = fspace < 0 ? H5I_INVALID_HID : H5Screate_simple(1, &n, NULL);
    rc = mspace < 0 ? -1 : H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (rc >= 0)
        rc = H5Dwrite(w->dset[s], H5T_NATIVE_INT32, mspace, fspace, H5P_DEFAULT, w->buf[s]);
    if (rc >= 0 && w->masked) {
        rc = H5Dset_extent(w->mask_dset[s], &size);
        if (rc >= 0)
            rc = H5Dwrite(w->mask_dset[s], H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT,
                          w->mask_buf[s]);
    }
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (rc < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot write /%s/tokens%s", w->path, split_names[s],
                      w->masked ? " and its answer_mask" : "");
    w->written[s] = w->count[s];
    return TS_TF_OK;
}

static ts_tf_status writer_append(ts_token_writer *w, enum ts_split split, const int32_t *tokens,
                                  const uint8_t *mask, size_t n, ts_tf_err *err) {
    if (!valid_split(split))
        return fail(err, TS_TF_ERR_RANGE, "%s: no split %d", w->path, (int)split);
    if (w->masked != (mask != NULL))
        return fail(err, TS_TF_ERR_RANGE, "%s: %s", w->path,
                    w->masked ? "this file has an answer mask: append tokens with their mask"
                              : "this file was created without an answer mask");
    size_t bad = first_out_of_vocab(tokens, n, w->vocab_size);
    if (bad < n)
        return fail(err, TS_TF_ERR_VOCAB, "%s: token %d lies outside the vocabulary [0, %d)",
                    w->path, (int)tokens[bad], (int)w->vocab_size);
    if (mask && (bad = first_bad_flag(mask, n)) < n)
        return fail(err, TS_TF_ERR_RANGE, "%s: answer mask value %d is neither 0 nor 1", w->path,
                    (int)mask[bad]);
    crc32_tokens(&w->crc[split], tokens, n);
    if (mask) crc32_bytes(&w->mask_crc[split], mask, n);
    while (n > 0) {
        size_t held = (size_t)(w->count[split] - w->written[split]);
        size_t take = CHUNK_TOKENS - held < n ? CHUNK_TOKENS - held : n;
        memcpy(w->buf[split] + held, tokens, take * sizeof *tokens);
        if (mask) {
            memcpy(w->mask_buf[split] + held, mask, take);
            mask += take;
        }
        w->count[split] += (int64_t)take;
        tokens += take;
        n -= take;
        if (held + take == CHUNK_TOKENS) {
            ts_tf_status st = flush_split(w, split, err);
            if (st) return st;
        }
    }
    return TS_TF_OK;
}

static ts_tf_status writer_finish(ts_token_writer *w, ts_tf_err *err) {
    ts_tf_status st = TS_TF_OK;
    for (int s = 0; s < TS_N_SPLITS && !st; s++) {
        st = flush_split(w, s, err);
        uint32_t crc = crc32_value(&w->crc[s]);
        if (!st)
            st = write_int_attr(w->path, w->dset[s], "n_tokens", H5T_STD_I64LE, &w->count[s],
                                H5T_NATIVE_INT64, err);
        if (!st)
            st = write_int_attr(w->path, w->dset[s], "crc32", H5T_STD_U32LE, &crc,
                                H5T_NATIVE_UINT32, err);
        uint32_t mask_crc = crc32_value(&w->mask_crc[s]);
        if (!st && w->masked)
            st = write_int_attr(w->path, w->mask_dset[s], "n_tokens", H5T_STD_I64LE, &w->count[s],
                                H5T_NATIVE_INT64, err);
        if (!st && w->masked)
            st = write_int_attr(w->path, w->mask_dset[s], "crc32", H5T_STD_U32LE, &mask_crc,
                                H5T_NATIVE_UINT32, err);
    }
    /* Close here rather than in writer_free so a failed close (the last
     * buffered metadata not reaching the disk) is reported. */
    for (int s = 0; s < TS_N_SPLITS; s++) {
        if (H5Dclose(w->dset[s]) < 0 && !st)
            st = h5fail(err, TS_TF_ERR_IO, "%s: cannot close /%s/tokens", w->path, split_names[s]);
        w->dset[s] = H5I_INVALID_HID;
        if (w->mask_dset[s] >= 0 && H5Dclose(w->mask_dset[s]) < 0 && !st)
            st = h5fail(err, TS_TF_ERR_IO, "%s: cannot close /%s/answer_mask", w->path,
                        split_names[s]);
        w->mask_dset[s] = H5I_INVALID_HID;
    }
    if (H5Fclose(w->file) < 0 && !st)
        st = h5fail(err, TS_TF_ERR_IO, "%s: cannot close file", w->path);
    w->file = H5I_INVALID_HID;
    writer_free(w);
    return st;
}

ts_tf_status ts_token_writer_create(ts_token_writer **out, const char *path,
                                    const ts_token_meta *meta, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(q, writer_create(out, path, meta, err ? err : &scratch));
}

ts_tf_status ts_token_writer_append(ts_token_writer *w, enum ts_split split, const int32_t *tokens,
                                    size_t n, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(q, writer_append(w, split, tokens, NULL, n, err ? err : &scratch));
}

ts_tf_status ts_token_writer_append_masked(ts_token_writer *w, enum ts_split split,
                                           const int32_t *tokens, const uint8_t *mask, size_t n,
                                           ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    if (!mask)
        return quiet_end(
            q, fail(err ? err : &scratch, TS_TF_ERR_RANGE, "%s: no answer mask given", w->path));
    return quiet_end(q, writer_append(w, split, tokens, mask, n, err ? err : &scratch));
}

int64_t ts_token_writer_count(const ts_token_writer *w, enum ts_split split) {
    return valid_split(split) ? w->count[split] : 0;
}

ts_tf_status ts_token_writer_finish(ts_token_writer *w, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(q, writer_finish(w, err ? err : &scratch));
}

void ts_token_writer_discard(ts_token_writer *w) {
    if (!w) return;
    ts_h5_quiet q = ts_h5_quiet_begin();
    writer_free(w);
    quiet_end(q, TS_TF_OK);
}

/* ---------------------------------------------------------------- reader */

/* Every rank returns the status and message of the first failing rank
 * (ts_io_agree), so all ranks take the same branch afterwards and no
 * collective is left waiting for a rank that gave up. */
static ts_tf_status agree(const ts_token_file *tf, ts_tf_status st, ts_tf_err *err) {
    return ts_io_agree(tf->comm, st, err->msg, sizeof err->msg);
}

static void close_impl(ts_token_file *tf) {
    for (int s = 0; s < TS_N_SPLITS; s++) {
        if (tf->dset[s] >= 0) H5Dclose(tf->dset[s]);
        if (tf->mask_dset[s] >= 0) H5Dclose(tf->mask_dset[s]);
    }
    if (tf->dxpl >= 0) H5Pclose(tf->dxpl);
    if (tf->file >= 0) H5Fclose(tf->file);
    for (int i = 0; i < 4; i++) free(tf->strings[i]);
    free(tf->path);
    if (tf->comm != MPI_COMM_NULL) MPI_Comm_free(&tf->comm);
    memset(tf, 0, sizeof *tf);
    tf->file = tf->dxpl = tf->dset[0] = tf->dset[1] = H5I_INVALID_HID;
    tf->mask_dset[0] = tf->mask_dset[1] = H5I_INVALID_HID;
    tf->comm = MPI_COMM_NULL;
}

/* The n_tokens attribute of a split's dataset (which must equal its length
 * dim) and its crc32 (a 32-bit value). */
static ts_tf_status read_count_and_crc(ts_token_file *tf, hid_t dset, const char *where,
                                       hsize_t dim, uint32_t *crc_out, ts_tf_err *err) {
    int64_t n, crc;
    ts_tf_status st = read_int_attr(tf->path, dset, where, "n_tokens", &n, err);
    if (!st) st = read_int_attr(tf->path, dset, where, "crc32", &crc, err);
    if (st) return st;
    if (n != (int64_t)dim)
        return fail(
            err, TS_TF_ERR_FORMAT,
            "%s: %s holds %llu values but its n_tokens attribute says %lld (truncated file?)",
            tf->path, where, (unsigned long long)dim, (long long)n);
    if (crc < 0 || crc > (int64_t)UINT32_MAX)
        return fail(err, TS_TF_ERR_FORMAT, "%s: crc32 attribute of %s is not a 32-bit value",
                    tf->path, where);
    *crc_out = (uint32_t)crc;
    return TS_TF_OK;
}

/* Narrower integers (uint8, uint16) are accepted as tokens too: HDF5 widens
 * them exactly, and they are how other tools often store tokens. */
static bool holds_int32_tokens(hid_t type) {
    size_t size = H5Tget_size(type);
    return H5Tget_class(type) == H5T_INTEGER &&
           (size < 4 || (size == 4 && H5Tget_sign(type) == H5T_SGN_2));
}

static bool holds_mask_bytes(hid_t type) {
    return H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1;
}

/* What every dataset of a token file shares: opens `where` into *dset, checks
 * it is 1-D with a type that type_ok accepts (else "is not TYPE_NAME"), and
 * reads its length into *dim and its n_tokens and crc32 attributes. */
static ts_tf_status open_1d_dataset(ts_token_file *tf, const char *where, bool (*type_ok)(hid_t),
                                    const char *type_name, hid_t *dset, hsize_t *dim,
                                    uint32_t *crc_out, ts_tf_err *err) {
    *dset = H5Dopen2(tf->file, where, H5P_DEFAULT);
    if (*dset < 0)
        return h5fail(err, TS_TF_ERR_FORMAT, "%s: cannot open %s as a dataset", tf->path, where);
    hid_t type = H5Dget_type(*dset);
    hid_t space = H5Dget_space(*dset);
    int ndims = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    ts_tf_status st = TS_TF_OK;
    if (type < 0 || ndims < 0)
        st = h5fail(err, TS_TF_ERR_IO, "%s: cannot read the type and shape of %s", tf->path, where);
    else if (ndims != 1)
        st = fail(err, TS_TF_ERR_FORMAT, "%s: %s has %d dimensions; token file datasets are 1-D",
                  tf->path, where, ndims);
    else if (H5Sget_simple_extent_dims(space, dim, NULL) < 0)
        st = h5fail(err, TS_TF_ERR_IO, "%s: cannot read the length of %s", tf->path, where);
    else if (!type_ok(type))
        st = fail(err, TS_TF_ERR_FORMAT, "%s: %s is not %s", tf->path, where, type_name);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (!st) st = read_count_and_crc(tf, *dset, where, *dim, crc_out, err);
    return st;
}

/* Opens /SPLIT/answer_mask if there is one and checks it is a 1-D 8-bit
 * integer dataset as long as the tokens, with matching n_tokens and a crc32. */
static ts_tf_status open_mask(ts_token_file *tf, int s, ts_tf_err *err) {
    char where[64];
    snprintf(where, sizeof where, "/%s/answer_mask", split_names[s]);
    htri_t exists = H5Lexists(tf->file, where, H5P_DEFAULT);
    if (exists < 0) return h5fail(err, TS_TF_ERR_IO, "%s: cannot look up %s", tf->path, where);
    if (!exists) return TS_TF_OK;
    hsize_t dim = 0;
    ts_tf_status st = open_1d_dataset(tf, where, holds_mask_bytes, "a dataset of 8-bit integers",
                                      &tf->mask_dset[s], &dim, &tf->mask_crc32[s], err);
    if (!st && (int64_t)dim != tf->n_tokens[s])
        st = fail(err, TS_TF_ERR_FORMAT, "%s: %s has %llu values for %lld tokens", tf->path, where,
                  (unsigned long long)dim, (long long)tf->n_tokens[s]);
    return st;
}

/* Opens /SPLIT/tokens and checks it is a 1-D integer dataset that int32
 * holds exactly, with matching n_tokens and a crc32. */
static ts_tf_status open_split(ts_token_file *tf, int s, ts_tf_err *err) {
    char where[64];
    snprintf(where, sizeof where, "/%s/tokens", split_names[s]);
    htri_t has_group = H5Lexists(tf->file, split_names[s], H5P_DEFAULT);
    htri_t has_dset = has_group > 0 ? H5Lexists(tf->file, where, H5P_DEFAULT) : has_group;
    if (has_dset < 0) return h5fail(err, TS_TF_ERR_IO, "%s: cannot look up %s", tf->path, where);
    if (!has_dset)
        return fail(err, TS_TF_ERR_FORMAT, "%s: no dataset %s: not a token file", tf->path, where);
    hsize_t dim = 0;
    ts_tf_status st =
        open_1d_dataset(tf, where, holds_int32_tokens,
                        "of an integer type that int32 holds (int32, or 8- or 16-bit integers)",
                        &tf->dset[s], &dim, &tf->crc32[s], err);
    if (st) return st;
    tf->n_tokens[s] = (int64_t)dim;
    return open_mask(tf, s, err);
}

static ts_tf_status read_metadata(ts_token_file *tf, const ts_token_open_opts *opts,
                                  ts_tf_err *err) {
    int64_t vocab, version;
    ts_tf_status st = TS_TF_OK;
    htri_t has_version = H5Aexists(tf->file, "format_version");
    if (has_version < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot read the root group's attributes", tf->path);
    if (has_version) {
        st = read_int_attr(tf->path, tf->file, "/", "format_version", &version, err);
        if (!st && version != TS_TF_FORMAT_VERSION)
            st = fail(err, TS_TF_ERR_FORMAT,
                      "%s: format_version %lld; this program reads version %d", tf->path,
                      (long long)version, TS_TF_FORMAT_VERSION);
    }
    if (!st) st = read_int_attr(tf->path, tf->file, "/", "vocab_size", &vocab, err);
    if (!st && (vocab <= 0 || vocab > INT32_MAX))
        st = fail(err, TS_TF_ERR_FORMAT, "%s: vocab_size %lld is not in [1, 2^31)", tf->path,
                  (long long)vocab);
    if (!st && opts && opts->expected_vocab > 0 && vocab != opts->expected_vocab)
        st = fail(err, TS_TF_ERR_VOCAB,
                  "%s: vocabulary size is %lld, but %d was expected (another tokenizer?)", tf->path,
                  (long long)vocab, (int)opts->expected_vocab);
    if (st) return st;
    tf->meta.vocab_size = (int32_t)vocab;

    /* The tokenizer is required (tokens mean nothing without it); the
     * descriptive strings are optional for files made by other tools. */
    static const char *const names[4] = {"tokenizer", "domain", "source", "split_rule"};
    for (int i = 0; i < 4 && !st; i++) {
        htri_t exists = i == 0 ? 1 : H5Aexists(tf->file, names[i]);
        if (exists < 0)
            st = h5fail(err, TS_TF_ERR_IO, "%s: cannot look up attribute %s", tf->path, names[i]);
        else if (exists)
            st = read_str_attr(tf->path, tf->file, "/", names[i], &tf->strings[i], err);
        else if (!(tf->strings[i] = strdup("")))
            st = fail(err, TS_TF_ERR_NOMEM, "%s: out of memory", tf->path);
    }
    if (st) return st;
    tf->meta.tokenizer = tf->strings[0];
    tf->meta.domain = tf->strings[1];
    tf->meta.source = tf->strings[2];
    tf->meta.split_rule = tf->strings[3];
    for (int s = 0; s < TS_N_SPLITS && !st; s++) st = open_split(tf, s, err);
    /* A mask serves answer-only scoring of either split: both or neither. */
    bool train_mask = tf->mask_dset[TS_SPLIT_TRAIN] >= 0,
         val_mask = tf->mask_dset[TS_SPLIT_VALIDATION] >= 0;
    if (!st && train_mask != val_mask)
        st = fail(err, TS_TF_ERR_FORMAT, "%s: /%s/answer_mask exists but /%s/answer_mask does not",
                  tf->path, split_names[train_mask ? TS_SPLIT_TRAIN : TS_SPLIT_VALIDATION],
                  split_names[train_mask ? TS_SPLIT_VALIDATION : TS_SPLIT_TRAIN]);
    tf->has_mask = !st && train_mask;
    return st;
}

/* Which dataset of a split a read is of: the tokens (int32) or the answer
 * mask (uint8). */
typedef enum split_data { SPLIT_TOKENS, SPLIT_MASK } split_data;

static hid_t data_dset(const ts_token_file *tf, int s, split_data d) {
    return d == SPLIT_MASK ? tf->mask_dset[s] : tf->dset[s];
}

/* Reads the file-space selection fspace of a split's tokens or mask (n
 * values; n = 0 means an empty selection, taking part in a collective
 * transfer) into out. */
static ts_tf_status read_data_selection(ts_token_file *tf, int s, split_data d, hid_t dxpl,
                                        hid_t fspace, hsize_t n, void *out, ts_tf_err *err) {
    int32_t dummy;
    hsize_t mdim = n > 0 ? n : 1;
    hid_t mspace = H5Screate_simple(1, &mdim, NULL);
    herr_t rc = mspace < 0 ? -1 : (n > 0 ? 0 : H5Sselect_none(mspace));
    if (rc >= 0)
        rc = H5Dread(data_dset(tf, s, d), d == SPLIT_MASK ? H5T_NATIVE_UINT8 : H5T_NATIVE_INT32,
                     mspace, fspace, dxpl, n > 0 ? out : &dummy);
    if (mspace >= 0) H5Sclose(mspace);
    if (rc < 0)
        return h5fail(err, TS_TF_ERR_IO, "%s: cannot read /%s/%s", tf->path, split_names[s],
                      d == SPLIT_MASK ? "answer_mask" : "tokens");
    return TS_TF_OK;
}

static ts_tf_status read_selection(ts_token_file *tf, int s, hid_t dxpl, hid_t fspace, hsize_t n,
                                   int32_t *out, ts_tf_err *err) {
    return read_data_selection(tf, s, SPLIT_TOKENS, dxpl, fspace, n, out, err);
}

static ts_tf_status read_range(ts_token_file *tf, int s, hid_t dxpl, int64_t offset, int64_t count,
                               int32_t *out, ts_tf_err *err) {
    hsize_t start = (hsize_t)offset, n = (hsize_t)count;
    hid_t fspace = H5Dget_space(tf->dset[s]);
    herr_t rc =
        fspace < 0 ? -1 : H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &n, NULL);
    ts_tf_status st = rc < 0 ? h5fail(err, TS_TF_ERR_IO, "%s: cannot select tokens of /%s/tokens",
                                      tf->path, split_names[s])
                             : read_selection(tf, s, dxpl, fspace, n, out, err);
    if (fspace >= 0) H5Sclose(fspace);
    return st;
}

/* Takes part in a collective read with nothing selected: what a rank with a
 * bad request does so that the other ranks' transfer completes. */
static void read_nothing_of(ts_token_file *tf, int s, split_data d) {
    ts_tf_err ignored;
    hid_t fspace = H5Dget_space(data_dset(tf, s, d));
    if (fspace >= 0 && H5Sselect_none(fspace) >= 0)
        read_data_selection(tf, s, d, tf->dxpl, fspace, 0, NULL, &ignored);
    if (fspace >= 0) H5Sclose(fspace);
}

static void read_nothing(ts_token_file *tf, int s) {
    read_nothing_of(tf, s, SPLIT_TOKENS);
}

/* Checks a split's answer mask: values 0 or 1, and its checksum. block
 * holds VERIFY_BLOCK bytes at least. */
static ts_tf_status verify_mask(ts_token_file *tf, int s, uint8_t *block, crc32_state *crc,
                                ts_tf_err *err) {
    ts_tf_status st = TS_TF_OK;
    crc32_init(crc);
    for (int64_t at = 0; at < tf->n_tokens[s] && !st; at += VERIFY_BLOCK) {
        int64_t n = tf->n_tokens[s] - at < VERIFY_BLOCK ? tf->n_tokens[s] - at : VERIFY_BLOCK;
        hsize_t start = (hsize_t)at, count = (hsize_t)n;
        hid_t fspace = H5Dget_space(tf->mask_dset[s]);
        if (fspace < 0 ||
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0)
            st = h5fail(err, TS_TF_ERR_IO, "%s: cannot select /%s/answer_mask", tf->path,
                        split_names[s]);
        else
            st = read_data_selection(tf, s, SPLIT_MASK, H5P_DEFAULT, fspace, count, block, err);
        if (fspace >= 0) H5Sclose(fspace);
        size_t bad = st ? 0 : first_bad_flag(block, (size_t)n);
        if (!st && bad < (size_t)n)
            st = fail(err, TS_TF_ERR_FORMAT, "%s: /%s/answer_mask[%lld] = %d is neither 0 nor 1",
                      tf->path, split_names[s], (long long)(at + (int64_t)bad), (int)block[bad]);
        if (!st) crc32_bytes(crc, block, (size_t)n);
    }
    if (!st && crc32_value(crc) != tf->mask_crc32[s])
        st =
            fail(err, TS_TF_ERR_CHECKSUM,
                 "%s: /%s/answer_mask does not match its checksum (stored crc32 %08x, data %08x): "
                 "the file is corrupt",
                 tf->path, split_names[s], (unsigned)tf->mask_crc32[s], (unsigned)crc32_value(crc));
    return st;
}

static ts_tf_status verify_impl(ts_token_file *tf, ts_tf_err *err) {
    ts_tf_status st = TS_TF_OK;
    /* Rank 0 alone reads: a checksum is sequential, and n ranks each reading
     * the whole file would multiply the I/O by n. */
    if (tf->rank == 0) {
        int32_t *block = malloc(VERIFY_BLOCK * sizeof *block);
        crc32_state *crc = malloc(sizeof *crc);
        if (!block || !crc) st = fail(err, TS_TF_ERR_NOMEM, "%s: out of memory", tf->path);
        for (int s = 0; s < TS_N_SPLITS && !st; s++) {
            crc32_init(crc);
            for (int64_t at = 0; at < tf->n_tokens[s] && !st; at += VERIFY_BLOCK) {
                int64_t n =
                    tf->n_tokens[s] - at < VERIFY_BLOCK ? tf->n_tokens[s] - at : VERIFY_BLOCK;
                st = read_range(tf, s, H5P_DEFAULT, at, n, block, err);
                size_t bad = st ? 0 : first_out_of_vocab(block, (size_t)n, tf->meta.vocab_size);
                if (!st && bad < (size_t)n)
                    st = fail(err, TS_TF_ERR_VOCAB,
                              "%s: /%s/tokens[%lld] = %d lies outside the vocabulary [0, %d)",
                              tf->path, split_names[s], (long long)(at + (int64_t)bad),
                              (int)block[bad], (int)tf->meta.vocab_size);
                if (!st) crc32_tokens(crc, block, (size_t)n);
            }
            if (!st && crc32_value(crc) != tf->crc32[s])
                st = fail(err, TS_TF_ERR_CHECKSUM,
                          "%s: /%s/tokens does not match its checksum (stored crc32 %08x, data "
                          "%08x): the file is corrupt",
                          tf->path, split_names[s], (unsigned)tf->crc32[s],
                          (unsigned)crc32_value(crc));
            if (!st && tf->has_mask) st = verify_mask(tf, s, (uint8_t *)block, crc, err);
        }
        free(crc);
        free(block);
    }
    return agree(tf, st, err);
}

static ts_tf_status open_impl(ts_token_file *tf, const char *path, MPI_Comm comm,
                              const ts_token_open_opts *opts, ts_tf_err *err) {
    memset(tf, 0, sizeof *tf);
    tf->file = tf->dxpl = tf->dset[0] = tf->dset[1] = H5I_INVALID_HID;
    tf->mask_dset[0] = tf->mask_dset[1] = H5I_INVALID_HID;
    tf->comm = MPI_COMM_NULL;
    /* Our own communicator, returning errors rather than aborting, so MPI
     * failures come back as messages like everything else. */
    if (MPI_Comm_dup(comm, &tf->comm) != MPI_SUCCESS) {
        tf->comm = MPI_COMM_NULL;
        return fail(err, TS_TF_ERR_IO, "%s: MPI_Comm_dup failed", path);
    }
    if (MPI_Comm_set_errhandler(tf->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(tf->comm, &tf->rank) != MPI_SUCCESS)
        return fail(err, TS_TF_ERR_IO, "%s: cannot set up the MPI communicator", path);
    ts_tf_status st = TS_TF_OK;
    if (!(tf->path = strdup(path))) st = fail(err, TS_TF_ERR_NOMEM, "%s: out of memory", path);

    /* Rank 0 tells "missing" from "not HDF5" (H5Fopen reports both alike),
     * and all ranks then report what it found. */
    if (!st && tf->rank == 0) {
        struct stat sb;
        FILE *f = NULL;
        if (stat(path, &sb) != 0)
            st = fail(err, TS_TF_ERR_MISSING, "%s: cannot open: %s", path, strerror(errno));
        else if (!S_ISREG(sb.st_mode))
            st = fail(err, TS_TF_ERR_MISSING, "%s: not a regular file", path);
        else if (!(f = fopen(path, "rb")))
            st = fail(err, TS_TF_ERR_MISSING, "%s: cannot read: %s", path, strerror(errno));
        if (f) fclose(f);
    }
    st = agree(tf, st, err);
    if (st) return st;

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    herr_t rc = fapl < 0 ? -1 : H5Pset_fapl_mpio(fapl, tf->comm, MPI_INFO_NULL);
    if (rc < 0)
        st = h5fail(err, TS_TF_ERR_IO, "%s: cannot set up MPI-IO access", path);
    else if ((tf->file = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0)
        st = h5fail(err, TS_TF_ERR_NOT_HDF5, "%s: not an HDF5 file, or a damaged one", path);
    if (fapl >= 0) H5Pclose(fapl);
    if (!st) st = read_metadata(tf, opts, err);
    if (!st) {
        tf->collective = opts && opts->collective;
        tf->dxpl = H5Pcreate(H5P_DATASET_XFER);
        rc = tf->dxpl < 0 ? -1
                          : H5Pset_dxpl_mpio(tf->dxpl, tf->collective ? H5FD_MPIO_COLLECTIVE
                                                                      : H5FD_MPIO_INDEPENDENT);
        if (rc < 0) st = h5fail(err, TS_TF_ERR_IO, "%s: cannot set up transfer properties", path);
    }
    st = agree(tf, st, err);
    if (!st && opts && opts->verify) st = verify_impl(tf, err);
    return st;
}

static ts_tf_status check_split(const ts_token_file *tf, enum ts_split split, ts_tf_err *err) {
    return valid_split(split) ? TS_TF_OK
                              : fail(err, TS_TF_ERR_RANGE, "%s: no split %d", tf->path, (int)split);
}

static ts_tf_status read_impl(ts_token_file *tf, enum ts_split split, int64_t offset, int64_t count,
                              int32_t *out, ts_tf_err *err) {
    ts_tf_status st = check_split(tf, split, err);
    if (!st && (offset < 0 || count < 0 || offset > tf->n_tokens[split] - count))
        st = fail(err, TS_TF_ERR_RANGE,
                  "%s: tokens [%lld, %lld) lie outside /%s/tokens, which holds %lld", tf->path,
                  (long long)offset, (long long)offset + count, split_names[split],
                  (long long)tf->n_tokens[split]);
    int s = st ? 0 : (int)split;
    if (st || count == 0) {
        if (tf->collective) read_nothing(tf, s);
        return st;
    }
    return read_range(tf, s, tf->dxpl, offset, count, out, err);
}

/* A window and where its tokens land in the temporary buffer. */
typedef struct window {
    int64_t offset;
    int index;
    int64_t at;
} window;

static int by_offset(const void *a, const void *b) {
    int64_t x = ((const window *)a)->offset, y = ((const window *)b)->offset;
    return (x > y) - (x < y);
}

/* Selects the union of the windows on fspace, as runs of overlapping or
 * adjacent windows in file order; sets each window's place in the buffer
 * that receives the runs, and *total to that buffer's length. Windows must
 * be sorted by offset. */
static ts_tf_status select_windows(ts_token_file *tf, int s, window *w, int n, int64_t len,
                                   hid_t fspace, int64_t *total, ts_tf_err *err) {
    int64_t run_start = w[0].offset, run_end = w[0].offset + len, base = 0;
    bool first = true;
    for (int k = 0; k <= n; k++) {
        if (k < n && w[k].offset <= run_end) {
            w[k].at = base + (w[k].offset - run_start);
            if (w[k].offset + len > run_end) run_end = w[k].offset + len;
            continue;
        }
        hsize_t start = (hsize_t)run_start, count = (hsize_t)(run_end - run_start);
        if (H5Sselect_hyperslab(fspace, first ? H5S_SELECT_SET : H5S_SELECT_OR, &start, NULL,
                                &count, NULL) < 0)
            return h5fail(err, TS_TF_ERR_IO, "%s: cannot select windows of /%s/tokens", tf->path,
                          split_names[s]);
        first = false;
        base += run_end - run_start;
        if (k < n) {
            run_start = w[k].offset;
            run_end = w[k].offset + len;
            w[k].at = base;
        }
    }
    *total = base;
    return TS_TF_OK;
}

static ts_tf_status read_windows_impl(ts_token_file *tf, enum ts_split split, split_data d,
                                      const int64_t *offsets, int n, int64_t len, void *out,
                                      ts_tf_err *err) {
    ts_tf_status st = check_split(tf, split, err);
    if (!st && d == SPLIT_MASK && !tf->has_mask)
        st = fail(err, TS_TF_ERR_FORMAT, "%s: has no answer mask (answer-only scoring needs one)",
                  tf->path);
    if (!st && (n < 0 || len < 0 || (n > 0 && (!offsets || !out))))
        st = fail(err, TS_TF_ERR_RANGE, "%s: bad window request (%d windows of %lld tokens)",
                  tf->path, n, (long long)len);
    for (int i = 0; i < n && !st; i++)
        if (offsets[i] < 0 || offsets[i] > tf->n_tokens[split] - len)
            st = fail(
                err, TS_TF_ERR_RANGE,
                "%s: window %d, tokens [%lld, %lld), lies outside /%s/tokens, which holds %lld",
                tf->path, i, (long long)offsets[i], (long long)(offsets[i] + len),
                split_names[split], (long long)tf->n_tokens[split]);
    int s = st ? 0 : (int)split;
    /* Without a mask there is no mask dataset to take part in a collective
     * read with; every rank then fails the same way, before any transfer. */
    bool can_take_part = d == SPLIT_TOKENS || tf->has_mask;
    if (st || n == 0 || len == 0) {
        if (tf->collective && can_take_part) read_nothing_of(tf, s, d);
        return st;
    }

    size_t elem = d == SPLIT_MASK ? sizeof(uint8_t) : sizeof(int32_t);
    window *w = malloc((size_t)n * sizeof *w);
    char *buf = malloc((size_t)n * (size_t)len * elem); /* the union is at most this long */
    hid_t fspace = H5I_INVALID_HID;
    int64_t total = 0;
    if (!w || !buf)
        st = fail(err, TS_TF_ERR_NOMEM, "%s: out of memory for %d windows of %lld tokens", tf->path,
                  n, (long long)len);
    if (!st && (fspace = H5Dget_space(data_dset(tf, s, d))) < 0)
        st = h5fail(err, TS_TF_ERR_IO, "%s: cannot read the shape of /%s/%s", tf->path,
                    split_names[s], d == SPLIT_MASK ? "answer_mask" : "tokens");
    if (!st) {
        for (int i = 0; i < n; i++) w[i] = (window){offsets[i], i, 0};
        qsort(w, (size_t)n, sizeof *w, by_offset);
        st = select_windows(tf, s, w, n, len, fspace, &total, err);
    }
    if (!st)
        st = read_data_selection(tf, s, d, tf->dxpl, fspace, (hsize_t)total, buf, err);
    else if (tf->collective)
        read_nothing_of(tf, s, d);
    if (!st)
        for (int k = 0; k < n; k++)
            memcpy((char *)out + (size_t)w[k].index * (size_t)len * elem,
                   buf + (size_t)w[k].at * elem, (size_t)len * elem);
    if (fspace >= 0) H5Sclose(fspace);
    free(buf);
    free(w);
    return st;
}

ts_tf_status ts_token_file_open(ts_token_file *tf, const char *path, MPI_Comm comm,
                                const ts_token_open_opts *opts, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    ts_tf_status st = open_impl(tf, path, comm, opts, err ? err : &scratch);
    if (st) close_impl(tf);
    return quiet_end(q, st);
}

int64_t ts_token_file_len(const ts_token_file *tf, enum ts_split split) {
    return valid_split(split) ? tf->n_tokens[split] : 0;
}

ts_tf_status ts_token_file_read(ts_token_file *tf, enum ts_split split, int64_t offset,
                                int64_t count, int32_t *out, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(q, read_impl(tf, split, offset, count, out, err ? err : &scratch));
}

ts_tf_status ts_token_file_read_windows(ts_token_file *tf, enum ts_split split,
                                        const int64_t *offsets, int n, int64_t len, int32_t *out,
                                        ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(
        q, read_windows_impl(tf, split, SPLIT_TOKENS, offsets, n, len, out, err ? err : &scratch));
}

ts_tf_status ts_token_file_read_mask_windows(ts_token_file *tf, enum ts_split split,
                                             const int64_t *offsets, int n, int64_t len,
                                             uint8_t *out, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(
        q, read_windows_impl(tf, split, SPLIT_MASK, offsets, n, len, out, err ? err : &scratch));
}

ts_tf_status ts_token_file_verify(ts_token_file *tf, ts_tf_err *err) {
    ts_tf_err scratch;
    ts_h5_quiet q = ts_h5_quiet_begin();
    return quiet_end(q, verify_impl(tf, err ? err : &scratch));
}

void ts_token_file_close(ts_token_file *tf) {
    ts_h5_quiet q = ts_h5_quiet_begin();
    close_impl(tf);
    quiet_end(q, TS_TF_OK);
}

ts_io_status ts_token_file_check_output(const char *path, bool force, char *err, size_t errlen) {
    static const char *const legacy[] = {"vocab_size", NULL}; /* required of every token file */
    return ts_h5_check_output(path, force, TS_TF_FORMAT_NAME, legacy, NULL, "--force", err, errlen);
}
