/* Token files under MPI: written serially on rank 0, read back by every rank
 * at rank-specific offsets, and every way a file can be bad reported as an
 * error code on all ranks (not a crash, not a hang). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/token_file.h"
#include "mpi_cmocka.h"

#define VOCAB 1000
#define N_TRAIN 200000 /* several 65536-token chunks, the last one partial */
#define N_VAL 777

typedef struct fixture {
    char dir[64];
} fixture;

static int rank, size;

/* Patterns with different strides, so a run of validation tokens never
 * occurs in the train split (the corruption test searches for one). */
static int32_t train_token(int64_t i) {
    return (int32_t)((i * 7919) % VOCAB);
}
static int32_t val_token(int64_t i) {
    return (int32_t)((i * 13 + 500) % VOCAB);
}

static void path_in(const fixture *fx, const char *name, char *out, size_t len) {
    snprintf(out, len, "%s/%s", fx->dir, name);
}

/* Rank 0 writes the reference file, in appends of uneven sizes so the
 * writer's chunk buffering is crossed in every way; the others wait. */
static void write_reference(const fixture *fx, const char *path) {
    if (rank == 0) {
        ts_token_meta meta = {.domain = "unit",
                              .tokenizer = "test",
                              .source = "test_token_file.c",
                              .split_rule = "synthetic",
                              .vocab_size = VOCAB};
        ts_token_writer *w;
        ts_tf_err err;
        assert_int_equal(ts_token_writer_create(&w, path, &meta, &err), TS_TF_OK);
        int32_t *buf = malloc(N_TRAIN * sizeof *buf);
        assert_non_null(buf);
        for (int64_t i = 0; i < N_TRAIN; i++) buf[i] = train_token(i);
        static const size_t pieces[] = {1, 999, 65536, 70000, 3};
        size_t at = 0;
        for (size_t p = 0; at < N_TRAIN; p = (p + 1) % 5) {
            size_t n = pieces[p] < N_TRAIN - at ? pieces[p] : N_TRAIN - at;
            assert_int_equal(ts_token_writer_append(w, TS_SPLIT_TRAIN, buf + at, n, &err),
                             TS_TF_OK);
            at += n;
        }
        for (int64_t i = 0; i < N_VAL; i++) buf[i] = val_token(i);
        assert_int_equal(ts_token_writer_append(w, TS_SPLIT_VALIDATION, buf, N_VAL, &err),
                         TS_TF_OK);
        assert_int_equal(ts_token_writer_count(w, TS_SPLIT_TRAIN), N_TRAIN);
        assert_int_equal(ts_token_writer_finish(w, &err), TS_TF_OK);
        free(buf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static int group_setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    if (rank == 0) {
        snprintf(fx->dir, sizeof fx->dir, "/tmp/ts_token_file_XXXXXX");
        if (!mkdtemp(fx->dir)) fx->dir[0] = '\0';
    }
    MPI_Bcast(fx->dir, sizeof fx->dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    *state = fx;
    return fx->dir[0] ? 0 : -1;
}

static int group_teardown(void **state) {
    fixture *fx = *state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        static const char *const names[] = {"ref.h5",   "corrupt.h5", "text.txt", "no_val.h5",
                                            "two_d.h5", "floats.h5",  "uint8.h5", "bad_vocab.h5"};
        char path[128];
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            path_in(fx, names[i], path, sizeof path);
            unlink(path);
        }
        rmdir(fx->dir);
    }
    free(fx);
    return 0;
}

/* Reads back on every rank at offsets that differ per rank and straddle
 * chunk boundaries, with independent and with collective transfers. */
static void test_read_back(void **state) {
    fixture *fx = *state;
    char path[128];
    path_in(fx, "ref.h5", path, sizeof path);
    write_reference(fx, path);
    for (int collective = 0; collective <= 1; collective++) {
        ts_token_file tf;
        ts_tf_err err;
        ts_token_open_opts opts = {
            .expected_vocab = VOCAB, .verify = true, .collective = collective};
        assert_int_equal(ts_token_file_open(&tf, path, MPI_COMM_WORLD, &opts, &err), TS_TF_OK);
        assert_int_equal(ts_token_file_len(&tf, TS_SPLIT_TRAIN), N_TRAIN);
        assert_int_equal(ts_token_file_len(&tf, TS_SPLIT_VALIDATION), N_VAL);
        assert_string_equal(tf.meta.domain, "unit");
        assert_string_equal(tf.meta.tokenizer, "test");
        assert_string_equal(tf.meta.source, "test_token_file.c");
        assert_int_equal(tf.meta.vocab_size, VOCAB);

        /* A contiguous shard: 3000 tokens from 65000 + 1000 * rank. */
        int32_t shard[3000];
        int64_t offset = 65000 + 1000 * (int64_t)rank;
        assert_int_equal(ts_token_file_read(&tf, TS_SPLIT_TRAIN, offset, 3000, shard, &err),
                         TS_TF_OK);
        for (int i = 0; i < 3000; i++) assert_int_equal(shard[i], train_token(offset + i));

        /* Windows of T + 1 = 9 tokens, unsorted, overlapping, adjacent,
         * repeated, one at the very end; shifted by rank. */
        int64_t r = rank;
        int64_t offsets[] = {131070 + r, 5 + r, 9 + r, 0, 8 + r, 5 + r, N_TRAIN - 9, 65530 - r};
        enum { NW = sizeof offsets / sizeof offsets[0], LEN = 9 };
        int32_t windows[NW * LEN];
        assert_int_equal(
            ts_token_file_read_windows(&tf, TS_SPLIT_TRAIN, offsets, NW, LEN, windows, &err),
            TS_TF_OK);
        for (int w = 0; w < NW; w++)
            for (int i = 0; i < LEN; i++)
                assert_int_equal(windows[w * LEN + i], train_token(offsets[w] + i));

        /* The validation split, and a rank that has nothing to read. */
        int32_t val[N_VAL];
        int64_t count = rank == 0 ? N_VAL : 0;
        assert_int_equal(ts_token_file_read(&tf, TS_SPLIT_VALIDATION, 0, count, val, &err),
                         TS_TF_OK);
        for (int64_t i = 0; i < count; i++) assert_int_equal(val[i], val_token(i));
        ts_token_file_close(&tf);
    }
}

/* In collective mode a rank with a bad request gets an error and the other
 * ranks' reads still complete. */
static void test_bad_range(void **state) {
    fixture *fx = *state;
    char path[128];
    path_in(fx, "ref.h5", path, sizeof path);
    for (int collective = 0; collective <= 1; collective++) {
        ts_token_file tf;
        ts_tf_err err;
        ts_token_open_opts opts = {.collective = collective};
        assert_int_equal(ts_token_file_open(&tf, path, MPI_COMM_WORLD, &opts, &err), TS_TF_OK);
        bool bad = rank == size - 1;
        int32_t buf[16];
        int64_t offset = bad ? N_VAL - 8 : 0;
        ts_tf_status st = ts_token_file_read(&tf, TS_SPLIT_VALIDATION, offset, 16, buf, &err);
        assert_int_equal(st, bad ? TS_TF_ERR_RANGE : TS_TF_OK);
        if (bad) assert_non_null(strstr(err.msg, "outside /validation/tokens"));
        int64_t window_offset = bad ? -1 : 3;
        st = ts_token_file_read_windows(&tf, TS_SPLIT_VALIDATION, &window_offset, 1, 16, buf, &err);
        assert_int_equal(st, bad ? TS_TF_ERR_RANGE : TS_TF_OK);
        if (!bad) assert_int_equal(buf[0], val_token(3));
        ts_token_file_close(&tf);
    }
}

/* A copy with one validation token changed (to another valid token) fails
 * its checksum, when verified on open and when verified later. */
static void test_checksum_catches_corruption(void **state) {
    fixture *fx = *state;
    char ref[128], bad[128];
    path_in(fx, "ref.h5", ref, sizeof ref);
    path_in(fx, "corrupt.h5", bad, sizeof bad);
    if (rank == 0) {
        FILE *f = fopen(ref, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long file_bytes = ftell(f);
        fseek(f, 0, SEEK_SET);
        unsigned char *bytes = malloc((size_t)file_bytes);
        assert_non_null(bytes);
        assert_int_equal(fread(bytes, 1, (size_t)file_bytes, f), (size_t)file_bytes);
        fclose(f);
        /* Validation tokens 100..103 as stored: int32 little-endian. */
        unsigned char pattern[16];
        for (int i = 0; i < 4; i++) {
            uint32_t v = (uint32_t)val_token(100 + i);
            for (int b = 0; b < 4; b++) pattern[4 * i + b] = (unsigned char)(v >> (8 * b));
        }
        long at = -1;
        for (long i = 0; i + 16 <= file_bytes && at < 0; i++)
            if (!memcmp(bytes + i, pattern, 16)) at = i;
        assert_true(at >= 0);
        bytes[at] ^= 1; /* 800 -> 801: still inside the vocabulary */
        f = fopen(bad, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(bytes, 1, (size_t)file_bytes, f), (size_t)file_bytes);
        fclose(f);
        free(bytes);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    ts_token_file tf;
    ts_tf_err err;
    ts_token_open_opts opts = {.verify = true};
    assert_int_equal(ts_token_file_open(&tf, bad, MPI_COMM_WORLD, &opts, &err), TS_TF_ERR_CHECKSUM);
    assert_non_null(strstr(err.msg, bad));
    assert_non_null(strstr(err.msg, "/validation/tokens"));

    assert_int_equal(ts_token_file_open(&tf, bad, MPI_COMM_WORLD, NULL, &err), TS_TF_OK);
    assert_int_equal(ts_token_file_verify(&tf, &err), TS_TF_ERR_CHECKSUM);
    ts_token_file_close(&tf);
}

static void test_missing_file(void **state) {
    fixture *fx = *state;
    char path[128];
    path_in(fx, "does_not_exist.h5", path, sizeof path);
    ts_token_file tf;
    ts_tf_err err;
    assert_int_equal(ts_token_file_open(&tf, path, MPI_COMM_WORLD, NULL, &err), TS_TF_ERR_MISSING);
    assert_non_null(strstr(err.msg, path));
    ts_token_file_close(&tf); /* harmless after a failed open */
}

static void test_not_hdf5(void **state) {
    fixture *fx = *state;
    char path[128];
    path_in(fx, "text.txt", path, sizeof path);
    if (rank == 0) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs("In the beginning God created the heaven and the earth.\n", f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    ts_token_file tf;
    ts_tf_err err;
    assert_int_equal(ts_token_file_open(&tf, path, MPI_COMM_WORLD, NULL, &err), TS_TF_ERR_NOT_HDF5);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "not an HDF5 file"));
}

/* CRC-32 of int32 little-endian tokens, bit by bit: an independent check of
 * the definition in docs/data-format.md. */
static uint32_t crc32_of(const int32_t *t, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) {
            crc ^= ((uint32_t)t[i] >> (8 * b)) & 0xFF;
            for (int k = 0; k < 8; k++) crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        }
    return ~crc;
}

typedef struct raw_split {
    hid_t type; /* storage type */
    int rank;   /* 1 for a token file */
    bool present;
} raw_split;

/* A file as another tool might write it (h5py, say): fixed-length string
 * attributes, any integer type, checksums computed by the definition. */
static void write_raw(const char *path, int64_t vocab, raw_split split) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t scalar = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, "vocab_size", H5T_STD_I32BE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(attr, H5T_NATIVE_INT64, &vocab) >= 0);
    H5Aclose(attr);
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 4);
    H5Tset_strpad(str, H5T_STR_NULLPAD);
    attr = H5Acreate2(file, "tokenizer", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(attr, str, "byte") >= 0);
    H5Aclose(attr);
    H5Tclose(str);
    for (int s = 0; s < TS_N_SPLITS; s++) {
        if (s == TS_SPLIT_VALIDATION && !split.present) continue;
        int32_t tokens[64];
        for (int i = 0; i < 64; i++) tokens[i] = (i * 5 + s) % 256;
        hsize_t dims[2] = {split.rank == 1 ? 64 : 8, 8};
        hid_t space = H5Screate_simple(split.rank, dims, NULL);
        hid_t group = H5Gcreate2(file, ts_split_name(s), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hid_t dset =
            H5Dcreate2(group, "tokens", split.type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(dset >= 0);
        assert_true(H5Dwrite(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens) >= 0);
        int64_t n = 64;
        uint32_t crc = crc32_of(tokens, 64);
        attr = H5Acreate2(dset, "n_tokens", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(attr, H5T_NATIVE_INT64, &n) >= 0);
        H5Aclose(attr);
        attr = H5Acreate2(dset, "crc32", H5T_STD_U32LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(attr, H5T_NATIVE_UINT32, &crc) >= 0);
        H5Aclose(attr);
        H5Dclose(dset);
        H5Gclose(group);
        H5Sclose(space);
    }
    H5Sclose(scalar);
    assert_true(H5Fclose(file) >= 0);
}

/* Each malformed file gives its own error on every rank; a well-formed file
 * from another tool (uint8 tokens, fixed-length strings) is accepted. */
static void test_format_errors(void **state) {
    fixture *fx = *state;
    struct {
        const char *name;
        int64_t vocab;
        raw_split split;
        int32_t expected_vocab;
        ts_tf_status want;
        const char *says;
    } cases[] = {
        {"uint8.h5", 256, {H5T_STD_U8LE, 1, true}, 256, TS_TF_OK, ""},
        {"no_val.h5",
         256,
         {H5T_STD_I32LE, 1, false},
         0,
         TS_TF_ERR_FORMAT,
         "no dataset /validation/tokens"},
        {"two_d.h5", 256, {H5T_STD_I32LE, 2, true}, 0, TS_TF_ERR_FORMAT, "2 dimensions"},
        {"floats.h5",
         256,
         {H5T_IEEE_F32LE, 1, true},
         0,
         TS_TF_ERR_FORMAT,
         "not of an integer type"},
        {"bad_vocab.h5",
         256,
         {H5T_STD_I32LE, 1, true},
         50257,
         TS_TF_ERR_VOCAB,
         "vocabulary size is 256"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[128];
        path_in(fx, cases[c].name, path, sizeof path);
        if (rank == 0) write_raw(path, cases[c].vocab, cases[c].split);
        MPI_Barrier(MPI_COMM_WORLD);
        ts_token_file tf;
        ts_tf_err err;
        ts_token_open_opts opts = {.expected_vocab = cases[c].expected_vocab, .verify = true};
        ts_tf_status st = ts_token_file_open(&tf, path, MPI_COMM_WORLD, &opts, &err);
        if (st != cases[c].want)
            print_error("%s: status %d: %s\n", cases[c].name, (int)st, err.msg);
        assert_int_equal(st, cases[c].want);
        if (st == TS_TF_OK) {
            assert_string_equal(tf.meta.tokenizer, "byte");
            int32_t t[64];
            assert_int_equal(ts_token_file_read(&tf, TS_SPLIT_VALIDATION, 0, 64, t, &err),
                             TS_TF_OK);
            assert_int_equal(t[63], (63 * 5 + 1) % 256);
            ts_token_file_close(&tf);
        } else {
            assert_non_null(strstr(err.msg, path));
            assert_non_null(strstr(err.msg, cases[c].says));
        }
    }
}

/* The writer refuses tokens outside the vocabulary and an existing path. */
static void test_writer_refusals(void **state) {
    fixture *fx = *state;
    char path[128], name[32];
    snprintf(name, sizeof name, "writer_%d.h5", rank);
    path_in(fx, name, path, sizeof path);
    ts_token_meta meta = {.tokenizer = "byte", .vocab_size = 256};
    ts_token_writer *w;
    ts_tf_err err;
    assert_int_equal(ts_token_writer_create(&w, path, &meta, &err), TS_TF_OK);
    int32_t tokens[3] = {1, 256, 2};
    assert_int_equal(ts_token_writer_append(w, TS_SPLIT_TRAIN, tokens, 3, &err), TS_TF_ERR_VOCAB);
    assert_non_null(strstr(err.msg, "256"));
    ts_token_writer_discard(w);
    assert_int_not_equal(ts_token_writer_create(&w, path, &meta, &err), TS_TF_OK);
    assert_non_null(strstr(err.msg, "already exists"));
    unlink(path);
}

/* The answer mask: 1 where (i % 5 == 0 || i % 7 == 3), a pattern that
 * crosses chunk boundaries at every phase. */
static uint8_t mask_flag(int64_t i) {
    return i % 5 == 0 || i % 7 == 3;
}

/* A file with an answer mask, written in uneven appends on rank 0, verified
 * on open, its mask read in the same windows as the tokens with independent
 * and collective transfers; a file without a mask refuses a mask read on
 * every rank (no hang), and the writer refuses mismatched appends. */
static void test_answer_mask(void **state) {
    fixture *fx = *state;
    char path[128], plain[128];
    path_in(fx, "masked.h5", path, sizeof path);
    path_in(fx, "unmasked.h5", plain, sizeof plain);
    write_reference(fx, plain);
    ts_tf_err err;
    if (rank == 0) {
        ts_token_meta meta = {.tokenizer = "test", .vocab_size = VOCAB, .answer_mask = true};
        ts_token_writer *w;
        assert_int_equal(ts_token_writer_create(&w, path, &meta, &err), TS_TF_OK);
        int32_t *buf = malloc(N_TRAIN * sizeof *buf);
        uint8_t *mask = malloc(N_TRAIN);
        assert_non_null(buf);
        assert_non_null(mask);
        for (int64_t i = 0; i < N_TRAIN; i++) {
            buf[i] = train_token(i);
            mask[i] = mask_flag(i);
        }
        /* Plain appends are refused: the mask would fall out of step. */
        assert_int_equal(ts_token_writer_append(w, TS_SPLIT_TRAIN, buf, 3, &err), TS_TF_ERR_RANGE);
        assert_non_null(strstr(err.msg, "answer mask"));
        uint8_t two[1] = {2};
        assert_int_equal(ts_token_writer_append_masked(w, TS_SPLIT_TRAIN, buf, two, 1, &err),
                         TS_TF_ERR_RANGE);
        static const size_t pieces[] = {1, 999, 65536, 70000, 3};
        size_t at = 0;
        for (size_t p = 0; at < N_TRAIN; p = (p + 1) % 5) {
            size_t n = pieces[p] < N_TRAIN - at ? pieces[p] : N_TRAIN - at;
            assert_int_equal(
                ts_token_writer_append_masked(w, TS_SPLIT_TRAIN, buf + at, mask + at, n, &err),
                TS_TF_OK);
            at += n;
        }
        for (int64_t i = 0; i < N_VAL; i++) buf[i] = val_token(i);
        assert_int_equal(
            ts_token_writer_append_masked(w, TS_SPLIT_VALIDATION, buf, mask, N_VAL, &err),
            TS_TF_OK);
        assert_int_equal(ts_token_writer_finish(w, &err), TS_TF_OK);
        free(mask);
        free(buf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    for (int collective = 0; collective <= 1; collective++) {
        ts_token_file tf;
        ts_token_open_opts opts = {
            .expected_vocab = VOCAB, .verify = true, .collective = collective};
        assert_int_equal(ts_token_file_open(&tf, path, MPI_COMM_WORLD, &opts, &err), TS_TF_OK);
        assert_true(tf.has_mask);
        int64_t r = rank;
        int64_t offsets[] = {131070 + r, 5 + r, 9 + r, 0, 8 + r, 5 + r, N_TRAIN - 9, 65530 - r};
        enum { NW = sizeof offsets / sizeof offsets[0], LEN = 9 };
        int32_t windows[NW * LEN];
        uint8_t flags[NW * LEN];
        assert_int_equal(
            ts_token_file_read_windows(&tf, TS_SPLIT_TRAIN, offsets, NW, LEN, windows, &err),
            TS_TF_OK);
        assert_int_equal(
            ts_token_file_read_mask_windows(&tf, TS_SPLIT_TRAIN, offsets, NW, LEN, flags, &err),
            TS_TF_OK);
        for (int w = 0; w < NW; w++)
            for (int i = 0; i < LEN; i++) {
                assert_int_equal(windows[w * LEN + i], train_token(offsets[w] + i));
                assert_int_equal(flags[w * LEN + i], mask_flag(offsets[w] + i));
            }
        /* A bad window on one rank: an error there, the others complete. */
        int64_t bad = rank == 0 ? N_VAL : 0;
        ts_tf_status st =
            ts_token_file_read_mask_windows(&tf, TS_SPLIT_VALIDATION, &bad, 1, LEN, flags, &err);
        assert_int_equal(st, rank == 0 ? TS_TF_ERR_RANGE : TS_TF_OK);
        if (rank)
            for (int i = 0; i < LEN; i++) assert_int_equal(flags[i], mask_flag(i));
        ts_token_file_close(&tf);

        assert_int_equal(ts_token_file_open(&tf, plain, MPI_COMM_WORLD, &opts, &err), TS_TF_OK);
        assert_false(tf.has_mask);
        int64_t zero = 0;
        assert_int_equal(
            ts_token_file_read_mask_windows(&tf, TS_SPLIT_TRAIN, &zero, 1, LEN, flags, &err),
            TS_TF_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "no answer mask"));
        ts_token_file_close(&tf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        unlink(path);
        unlink(plain);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_bad_range),
        cmocka_unit_test(test_checksum_catches_corruption),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_not_hdf5),
        cmocka_unit_test(test_format_errors),
        cmocka_unit_test(test_writer_refusals),
        cmocka_unit_test(test_answer_mask),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_token_file", tests, sizeof tests / sizeof tests[0],
                              &rank, &size, group_setup, group_teardown);
}
