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

#include <mpi.h>

#include "cli/commands.h"
#include "data/text_convert.h"
#include "data/tokenizer.h"
#include "io/token_file.h"

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
    ts_text_convert_options options = {a.inputs, a.n_inputs, a.output, a.name, a.source, tok,
                                       a.val_fraction, a.force};
    ts_text_convert_result r;
    char err[1024];
    if (!ts_text_convert(&options, &r, err, sizeof err)) {
        fprintf(stderr, "thinkscale data convert: %s\n", err);
        return 1;
    }
    int64_t total = r.tokens[0] + r.tokens[1];
    printf("wrote %s: domain %s, tokenizer %s, train %" PRId64 " tokens (%ld chunks), "
           "validation %" PRId64 " tokens (%ld chunks, %.1f%%)\n",
           a.output, a.name, tok->name, r.tokens[0], r.chunks[0], r.tokens[1], r.chunks[1],
           total ? 100.0 * (double)r.tokens[1] / (double)total : 0.0);
    return 0;
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
