/* thinkscale data: makes and checks token files (docs/data-format.md).
 *
 *   data convert --input FILE [--input FILE ...] --output OUT.h5 --name DOMAIN
 *                [--val-fraction F] [--tokenizer NAME] [--source TEXT] [--force]
 *   data info FILE.h5
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpi.h>

#include "cli/commands.h"
#include "data/tokenizer.h"
#include "io/token_file.h"

/* The unit of the train/validation split: whole lines, closed at the first
 * line end at or after CHUNK_BYTES, at CHUNK_MAX_BYTES for text with very
 * long lines, and at the end of each input file. Whole lines keep a
 * multi-byte tokenizer from seeing a word cut in two; 4 KiB gives even a
 * small domain (a few hundred KiB) enough chunks to sample a validation set. */
#define CHUNK_BYTES 4096
#define CHUNK_MAX_BYTES (16 * CHUNK_BYTES)
#define READ_BYTES 65536
#define DEFAULT_VAL_FRACTION 0.05
#define MAX_INPUTS 256

static void usage(FILE *out) {
    size_t n;
    const ts_tokenizer *toks = ts_tokenizer_list(&n);
    fprintf(out,
            "usage: thinkscale data convert --input FILE [--input FILE ...] --output OUT.h5 --name DOMAIN\n"
            "                               [--val-fraction F] [--tokenizer NAME] [--source TEXT] [--force]\n"
            "       thinkscale data info FILE.h5\n\n"
            "convert  tokenises text files into one token file (train and validation splits);\n"
            "         --val-fraction defaults to %.2f, --tokenizer to %s (available:",
            DEFAULT_VAL_FRACTION, toks[0].name);
    for (size_t i = 0; i < n; i++) fprintf(out, " %s", toks[i].name);
    fprintf(out, ");\n"
                 "         an existing OUT.h5 is replaced only with --force\n"
                 "info     prints a token file's attributes and verifies its checksums\n"
                 "The format is described in docs/data-format.md.\n");
}

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
    int32_t *tokens;      /* CHUNK_MAX_BYTES: at most one token per byte */
    long chunks[TS_N_SPLITS];
} converter;

/* Tokenises the pending chunk into the split its hash picks. The hash is of
 * the chunk's bytes, not its position: the split is deterministic, does not
 * follow the order of the text (the last 5% of the Bible is not Genesis-like),
 * and identical chunks land in the same split. */
static int emit_chunk(converter *c, const char *input, ts_tf_err *err) {
    if (c->len == 0) return 0;
    double u = (double)chunk_hash(c->chunk, c->len) / 18446744073709551616.0; /* / 2^64 */
    enum ts_split split = u < c->val_fraction ? TS_SPLIT_VALIDATION : TS_SPLIT_TRAIN;
    long n = c->tok->encode(c->tok, c->chunk, c->len, c->tokens);
    if (n < 0) {
        snprintf(err->msg, sizeof err->msg, "%s: the %s tokenizer cannot encode this text", input, c->tok->name);
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

typedef struct convert_args {
    const char *inputs[MAX_INPUTS];
    int n_inputs;
    const char *output, *name, *tokenizer, *source;
    double val_fraction;
    int force;
} convert_args;

static int parse_convert(int argc, char **argv, convert_args *a) {
    *a = (convert_args){.tokenizer = "byte", .val_fraction = DEFAULT_VAL_FRACTION};
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--force")) {
            a->force = 1;
            continue;
        }
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "thinkscale data convert: unknown option or missing value: %s\n", opt);
            return -1;
        }
        const char *val = argv[++i];
        if (!strcmp(opt, "--input")) {
            if (a->n_inputs == MAX_INPUTS) {
                fprintf(stderr, "thinkscale data convert: at most %d inputs; concatenate them first\n", MAX_INPUTS);
                return -1;
            }
            a->inputs[a->n_inputs++] = val;
        } else if (!strcmp(opt, "--output")) a->output = val;
        else if (!strcmp(opt, "--name")) a->name = val;
        else if (!strcmp(opt, "--tokenizer")) a->tokenizer = val;
        else if (!strcmp(opt, "--source")) a->source = val;
        else if (!strcmp(opt, "--val-fraction")) {
            char *end;
            errno = 0;
            a->val_fraction = strtod(val, &end);
            if (errno || end == val || *end || !(a->val_fraction >= 0 && a->val_fraction < 1)) {
                fprintf(stderr, "thinkscale data convert: --val-fraction must be a number in [0, 1), not '%s'\n", val);
                return -1;
            }
        } else {
            fprintf(stderr, "thinkscale data convert: unknown option %s\n", opt);
            return -1;
        }
    }
    if (!a->n_inputs || !a->output || !a->name) {
        fprintf(stderr, "thinkscale data convert: --input, --output and --name are required\n");
        return -1;
    }
    return 0;
}

/* "input files a.txt (123 bytes), b.txt (45 bytes)", the default source. */
static char *describe_inputs(const convert_args *a) {
    /* Room for each name plus ", " " (" 20 digits " bytes)". */
    size_t cap = 16;
    for (int i = 0; i < a->n_inputs; i++) cap += strlen(a->inputs[i]) + 40;
    char *s = malloc(cap);
    if (!s) return NULL;
    int at = snprintf(s, cap, "input file%s", a->n_inputs > 1 ? "s" : "");
    for (int i = 0; i < a->n_inputs && at >= 0 && (size_t)at < cap; i++) {
        struct stat sb;
        long long size = stat(a->inputs[i], &sb) == 0 ? (long long)sb.st_size : -1;
        int n = snprintf(s + at, cap - (size_t)at, "%s %s (%lld bytes)", i ? "," : "", a->inputs[i], size);
        at = n < 0 ? n : at + n;
    }
    return s;
}

static int cmd_convert(int argc, char **argv) {
    convert_args a;
    if (parse_convert(argc, argv, &a)) {
        usage(stderr);
        return 2;
    }
    const ts_tokenizer *tok = ts_tokenizer_find(a.tokenizer);
    if (!tok) {
        fprintf(stderr, "thinkscale data convert: unknown tokenizer '%s'\n", a.tokenizer);
        return 2;
    }
    struct stat sb;
    if (!a.force && stat(a.output, &sb) == 0) {
        fprintf(stderr, "thinkscale data convert: %s already exists; pass --force to replace it\n", a.output);
        return 1;
    }

    /* Written under a temporary name and renamed when complete: a failed or
     * interrupted conversion never destroys an existing file, and readers
     * never see a half-written one. */
    size_t tmp_len = strlen(a.output) + 32;
    char *tmp = malloc(tmp_len);
    char *source = a.source ? NULL : describe_inputs(&a);
    char split_rule[512];
    snprintf(split_rule, sizeof split_rule,
             "chunks of whole lines, each closed at the first line end at or after %d bytes "
             "(or at %d bytes, or at the end of an input file); a chunk goes to validation iff "
             "fmix64(FNV-1a-64(chunk bytes)) / 2^64 < %g; each split keeps the input order",
             CHUNK_BYTES, CHUNK_MAX_BYTES, a.val_fraction);
    converter c = {.tok = tok, .val_fraction = a.val_fraction,
                   .chunk = malloc(CHUNK_MAX_BYTES), .tokens = malloc(CHUNK_MAX_BYTES * sizeof(int32_t))};
    ts_tf_err err = {{0}};
    int rc = 0;
    if (!tmp || (!a.source && !source) || !c.chunk || !c.tokens) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        rc = -1;
    }
    if (!rc) {
        snprintf(tmp, tmp_len, "%s.tmp.%ld", a.output, (long)getpid());
        ts_token_meta meta = {.domain = a.name, .tokenizer = tok->name,
                              .source = a.source ? a.source : source,
                              .split_rule = split_rule, .vocab_size = tok->vocab_size};
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
                 "%s: the %s split would be empty (%ld chunks of text in all): give more text or %s --val-fraction",
                 a.output, n[TS_SPLIT_TRAIN] == 0 ? "train" : "validation",
                 c.chunks[0] + c.chunks[1], n[TS_SPLIT_TRAIN] == 0 ? "lower" : "raise");
        rc = -1;
    }
    if (c.writer) {
        if (rc) ts_token_writer_discard(c.writer);
        else rc = ts_token_writer_finish(c.writer, &err) == TS_TF_OK ? 0 : -1;
    }
    if (!rc && rename(tmp, a.output) != 0) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot rename %s to it: %s", a.output, tmp, strerror(errno));
        rc = -1;
    }
    if (rc && c.writer) remove(tmp);
    if (rc) fprintf(stderr, "thinkscale data convert: %s\n", err.msg);
    else {
        int64_t total = n[0] + n[1];
        printf("wrote %s: domain %s, tokenizer %s, train %" PRId64 " tokens (%ld chunks), "
               "validation %" PRId64 " tokens (%ld chunks, %.1f%%)\n",
               a.output, a.name, tok->name, n[0], c.chunks[0], n[1], c.chunks[1],
               total ? 100.0 * (double)n[1] / (double)total : 0.0);
    }
    free(c.tokens);
    free(c.chunk);
    free(source);
    free(tmp);
    return rc ? 1 : 0;
}

static int cmd_info(int argc, char **argv) {
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    const char *path = argv[2];
    /* The reader is the one MPI programs use; on its own this runs as a
     * singleton MPI job. */
    int was_init = 0, rank = 0;
    MPI_Initialized(&was_init);
    if (!was_init && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "thinkscale data info: MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ts_token_file tf;
    ts_tf_err err;
    ts_tf_status st = ts_token_file_open(&tf, path, MPI_COMM_WORLD, NULL, &err);
    if (st == TS_TF_OK) {
        if (rank == 0) {
            printf("file:          %s\n", path);
            printf("domain:        %s\n", tf.meta.domain);
            printf("tokenizer:     %s\n", tf.meta.tokenizer);
            printf("vocab_size:    %d\n", (int)tf.meta.vocab_size);
            printf("source:        %s\n", tf.meta.source);
            printf("split_rule:    %s\n", tf.meta.split_rule);
            for (int s = 0; s < TS_N_SPLITS; s++) {
                char label[32];
                snprintf(label, sizeof label, "%s:", ts_split_name(s));
                printf("%-15s%" PRId64 " tokens, crc32 %08x\n", label, tf.n_tokens[s], (unsigned)tf.crc32[s]);
            }
            fflush(stdout);
        }
        st = ts_token_file_verify(&tf, &err);
        if (rank == 0 && st == TS_TF_OK) printf("checksums:     OK\n");
        ts_token_file_close(&tf);
    }
    if (rank == 0 && st != TS_TF_OK) fprintf(stderr, "thinkscale data info: %s\n", err.msg);
    if (!was_init) MPI_Finalize();
    return st == TS_TF_OK ? 0 : 1;
}

int ts_cmd_data(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "convert")) return cmd_convert(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "info")) return cmd_info(argc, argv);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
