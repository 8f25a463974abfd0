/* thinkscale data: makes and checks token files (docs/data-format.md).
 *
 *   data convert --input FILE [--input FILE ...] --output OUT.h5 --name DOMAIN
 *                [--val-fraction F] [--tokenizer NAME] [--source TEXT] [--force]
 *                [--spm-model FILE.model [--spm-vocab N [--spm-seed S] [--spm-sentences N]]]
 *   data info FILE.h5
 *   data dyck  --output OUT.h5 [set options] [--kinds K] [--max-depth D]
 *              [--min-length L] [--max-length L]
 *   data arith --output OUT.h5 [set options] [--max-value N] [--min-steps S]
 *              [--max-steps S] [--max-factor F] [--ops OPS]
 *   set options: [--name DOMAIN] [--seed S] [--train N] [--validation N] [--force]
 *                [--spm-model FILE.model]
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "cli/commands.h"
#include "data/arith.h"
#include "data/dyck.h"
#include "data/spm_tokenizer.h"
#include "data/text_convert.h"
#include "data/tokenizer.h"
#include "io/token_file.h"

#define DEFAULT_VAL_FRACTION 0.05
#define MAX_INPUTS 256
#define DEFAULT_SEED 1
#define DEFAULT_TRAIN_RECORDS 20000
#define DEFAULT_VALIDATION_RECORDS 2000

static void usage(FILE *out) {
    size_t n;
    const ts_tokenizer *toks = ts_tokenizer_list(&n);
    fprintf(
        out,
        "usage: thinkscale data convert --input FILE [--input FILE ...] --output OUT.h5 --name "
        "DOMAIN\n"
        "                               [--val-fraction F] [--tokenizer NAME] [--source TEXT] "
        "[--force]\n"
        "                               [--spm-model FILE.model [--spm-vocab N [--spm-seed S] "
        "[--spm-sentences N]]]\n"
        "       thinkscale data info FILE.h5\n"
        "       thinkscale data dyck --output OUT.h5 [SET OPTIONS] [--kinds K] [--max-depth D]\n"
        "                            [--min-length L] [--max-length L]\n"
        "       thinkscale data arith --output OUT.h5 [SET OPTIONS] [--max-value N] [--min-steps "
        "S]\n"
        "                             [--max-steps S] [--max-factor F] [--ops OPS]\n"
        "       SET OPTIONS: [--name DOMAIN] [--seed S] [--train N] [--validation N] [--force]\n"
        "                    [--spm-model FILE.model]\n\n"
        "convert  tokenises text files into one token file (train and validation splits);\n"
        "         --val-fraction defaults to %.2f, --tokenizer to %s (available:",
        DEFAULT_VAL_FRACTION, toks[0].name);
    for (size_t i = 0; i < n; i++) fprintf(out, " %s", toks[i].name);
    fprintf(
        out,
        " sentencepiece);\n"
        "         an existing OUT.h5 is replaced only with --force\n"
        "         --tokenizer sentencepiece (or just --spm-model) encodes with the SentencePiece\n"
        "         model FILE.model; with --spm-vocab N it first trains one of N pieces on the "
        "text\n"
        "         of the train split (spm_train, seed --spm-seed, default 1; --spm-sentences "
        "lines\n"
        "         sampled, default 0 = all), replacing an existing model only with --force;\n"
        "         without --output it only trains the model.\n"
        "         Evaluation sets must be converted with the same model file.\n"
        "info     prints a token file's attributes and verifies its checksums\n"
        "dyck     generates a Dyck-language set (close the open brackets); defaults:\n"
        "         kinds 4, max-depth 8, length 4..24\n"
        "arith    generates integer arithmetic word problems; defaults: max-value 100,\n"
        "         steps 1..3, max-factor 9, ops +-*\n"
        "         Both write \"Question: ...\\nAnswer: ...\\n\" records, exactly reproducible\n"
        "         from --seed (default %d); --train %d and --validation %d records by default,\n"
        "         --name defaults to the generator's name. Byte tokens, or with --spm-model\n"
        "         the SentencePiece model's tokens, a token boundary forced where each answer\n"
        "         starts so that the answer mask stays exact\n"
        "The format is described in docs/data-format.md.\n",
        DEFAULT_SEED, DEFAULT_TRAIN_RECORDS, DEFAULT_VALIDATION_RECORDS);
}

/* An integer option's value: the whole argument must be a number in
 * [min, max]. */
static int parse_long(const char *cmd, const char *opt, const char *val, long min, long max,
                      long *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < min || v > max) {
        fprintf(stderr, "thinkscale data %s: %s must be an integer from %ld to %ld, not '%s'\n",
                cmd, opt, min, max, val);
        return -1;
    }
    *out = v;
    return 0;
}

typedef struct convert_args {
    const char *inputs[MAX_INPUTS];
    int n_inputs;
    const char *output, *name, *tokenizer, *source;
    double val_fraction;
    int force;
    const char *spm_model;
    long spm_vocab, spm_seed, spm_sentences; /* spm_vocab 0: use an existing model */
} convert_args;

static int parse_convert(int argc, char **argv, convert_args *a) {
    *a = (convert_args){.tokenizer = NULL, .val_fraction = DEFAULT_VAL_FRACTION, .spm_seed = 1};
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
                fprintf(stderr,
                        "thinkscale data convert: at most %d inputs; concatenate them first\n",
                        MAX_INPUTS);
                return -1;
            }
            a->inputs[a->n_inputs++] = val;
        } else if (!strcmp(opt, "--output"))
            a->output = val;
        else if (!strcmp(opt, "--name"))
            a->name = val;
        else if (!strcmp(opt, "--tokenizer"))
            a->tokenizer = val;
        else if (!strcmp(opt, "--source"))
            a->source = val;
        else if (!strcmp(opt, "--spm-model"))
            a->spm_model = val;
        else if (!strcmp(opt, "--spm-vocab")) {
            if (parse_long("convert", opt, val, TS_SPM_MIN_VOCAB, TS_SPM_MAX_VOCAB, &a->spm_vocab))
                return -1;
        } else if (!strcmp(opt, "--spm-seed")) {
            if (parse_long("convert", opt, val, 0, UINT32_MAX, &a->spm_seed)) return -1;
        } else if (!strcmp(opt, "--spm-sentences")) {
            if (parse_long("convert", opt, val, 0, LONG_MAX, &a->spm_sentences)) return -1;
        } else if (!strcmp(opt, "--val-fraction")) {
            char *end;
            errno = 0;
            a->val_fraction = strtod(val, &end);
            if (errno || end == val || *end || !(a->val_fraction >= 0 && a->val_fraction < 1)) {
                fprintf(stderr,
                        "thinkscale data convert: --val-fraction must be a number in [0, 1), not "
                        "'%s'\n",
                        val);
                return -1;
            }
        } else {
            fprintf(stderr, "thinkscale data convert: unknown option %s\n", opt);
            return -1;
        }
    }
    /* With --spm-vocab and no --output only the model is trained. */
    bool model_only = a->spm_vocab && !a->output;
    if (!a->n_inputs || (!model_only && (!a->output || !a->name))) {
        fprintf(stderr, "thinkscale data convert: --input, --output and --name are required\n");
        return -1;
    }
    if (!a->tokenizer) a->tokenizer = a->spm_model ? "sentencepiece" : "byte";
    bool spm = !strcmp(a->tokenizer, "sentencepiece");
    if (spm != (a->spm_model != NULL)) {
        fprintf(stderr, "thinkscale data convert: %s\n",
                spm ? "--tokenizer sentencepiece needs --spm-model FILE.model"
                    : "--spm-model goes with --tokenizer sentencepiece");
        return -1;
    }
    if (!a->spm_vocab && (a->spm_seed != 1 || a->spm_sentences)) {
        fprintf(stderr,
                "thinkscale data convert: --spm-seed and --spm-sentences go with --spm-vocab\n");
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
    const ts_tokenizer *tok = a.spm_model ? NULL : ts_tokenizer_find(a.tokenizer);
    if (!a.spm_model && !tok) {
        fprintf(stderr, "thinkscale data convert: unknown tokenizer '%s'\n", a.tokenizer);
        return 2;
    }
    ts_text_convert_options options = {a.inputs, a.n_inputs, a.output,       a.name,
                                       a.source, tok,        a.val_fraction, a.force};
    ts_text_convert_result r;
    char err[1024];
    ts_tokenizer *spm = NULL;
    /* before training a vocabulary, which can take minutes */
    if (a.spm_vocab && a.output && !ts_text_convert_output_usable(&options, err, sizeof err)) {
        fprintf(stderr, "thinkscale data convert: %s\n", err);
        return 1;
    }
    if (a.spm_vocab) {
        ts_spm_train_options train = {.vocab_size = (int)a.spm_vocab,
                                      .seed = (uint32_t)a.spm_seed,
                                      .max_sentences = a.spm_sentences,
                                      .force = a.force};
        if (!ts_spm_train(&options, a.spm_model, &train, err, sizeof err)) {
            fprintf(stderr, "thinkscale data convert: training the SentencePiece model: %s\n", err);
            return 1;
        }
        printf("trained %s: %ld pieces on the train split of the input\n", a.spm_model,
               a.spm_vocab);
        if (!a.output) return 0;
    }
    if (a.spm_model &&
        !(options.tokenizer = tok = spm = ts_spm_tokenizer_open(a.spm_model, err, sizeof err))) {
        fprintf(stderr, "thinkscale data convert: %s\n", err);
        return 1;
    }
    bool ok = ts_text_convert(&options, &r, err, sizeof err);
    if (!ok) fprintf(stderr, "thinkscale data convert: %s\n", err);
    if (ok) {
        int64_t total = r.tokens[0] + r.tokens[1];
        printf("wrote %s: domain %s, tokenizer %s (vocabulary %d), train %" PRId64
               " tokens (%ld chunks), "
               "validation %" PRId64 " tokens (%ld chunks, %.1f%%)\n",
               a.output, a.name, tok->name, (int)tok->vocab_size, r.tokens[0], r.chunks[0],
               r.tokens[1], r.chunks[1], total ? 100.0 * (double)r.tokens[1] / (double)total : 0.0);
    }
    ts_spm_tokenizer_close(spm);
    return ok ? 0 : 1;
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
                printf("%-15s%" PRId64 " tokens, crc32 %08x\n", label, tf.n_tokens[s],
                       (unsigned)tf.crc32[s]);
                if (tf.has_mask)
                    printf("%-15sanswer_mask, crc32 %08x\n", "", (unsigned)tf.mask_crc32[s]);
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

/* The options every generated set has. */
typedef struct set_args {
    const char *output, *name, *spm_model;
    long seed, n_train, n_validation;
    int force;
} set_args;

/* Parses argv[i] (and its value) if it is a set option: 1 if it was, 0 if
 * not, -1 on a bad value. */
static int parse_set_option(const char *cmd, int argc, char **argv, int *i, set_args *a) {
    const char *opt = argv[*i];
    if (!strcmp(opt, "--force")) {
        a->force = 1;
        return 1;
    }
    if (strcmp(opt, "--output") && strcmp(opt, "--name") && strcmp(opt, "--seed") &&
        strcmp(opt, "--train") && strcmp(opt, "--validation") && strcmp(opt, "--spm-model"))
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "thinkscale data %s: %s needs a value\n", cmd, opt);
        return -1;
    }
    const char *val = argv[++*i];
    if (!strcmp(opt, "--output"))
        a->output = val;
    else if (!strcmp(opt, "--name"))
        a->name = val;
    else if (!strcmp(opt, "--spm-model"))
        a->spm_model = val;
    else if (!strcmp(opt, "--seed"))
        return parse_long(cmd, opt, val, 0, LONG_MAX, &a->seed) ? -1 : 1;
    else if (!strcmp(opt, "--train"))
        return parse_long(cmd, opt, val, 1, 100000000, &a->n_train) ? -1 : 1;
    else
        return parse_long(cmd, opt, val, 1, 100000000, &a->n_validation) ? -1 : 1;
    return 1;
}

/* A generator's own integer options: name, bounds, where the value goes. */
typedef struct int_option {
    const char *name;
    long min, max;
    long *value;
} int_option;

/* Parses `data dyck` / `data arith` arguments: the set options, the
 * generator's integer options, and (arith) --ops. */
static int parse_generator(const char *cmd, int argc, char **argv, set_args *a,
                           const int_option *opts, int n_opts, char *ops, size_t ops_size) {
    *a = (set_args){.seed = DEFAULT_SEED,
                    .n_train = DEFAULT_TRAIN_RECORDS,
                    .n_validation = DEFAULT_VALIDATION_RECORDS};
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            usage(stdout);
            exit(0);
        }
        int r = parse_set_option(cmd, argc, argv, &i, a);
        if (r < 0) return -1;
        if (r > 0) continue;
        const int_option *o = NULL;
        for (int k = 0; k < n_opts; k++)
            if (!strncmp(opt, "--", 2) && !strcmp(opt + 2, opts[k].name)) o = &opts[k];
        bool is_ops = ops && !strcmp(opt, "--ops");
        if (!o && !is_ops) {
            fprintf(stderr, "thinkscale data %s: unknown option %s\n", cmd, opt);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "thinkscale data %s: %s needs a value\n", cmd, opt);
            return -1;
        }
        const char *val = argv[++i];
        if (is_ops) {
            if (strlen(val) >= ops_size) {
                fprintf(stderr, "thinkscale data %s: --ops must be some of + - *, not '%s'\n", cmd,
                        val);
                return -1;
            }
            snprintf(ops, ops_size, "%s", val);
        } else if (parse_long(cmd, opt, val, o->min, o->max, o->value)) {
            return -1;
        }
    }
    if (!a->output) {
        fprintf(stderr, "thinkscale data %s: --output is required\n", cmd);
        return -1;
    }
    return 0;
}

/* Writes the set of a checked generator and reports it. */
static int write_set(const char *cmd, const ts_qa_generator *g, const set_args *a) {
    char err[1024];
    /* The model is opened (and checked) before anything is written. */
    ts_tokenizer *spm = NULL;
    if (a->spm_model && !(spm = ts_spm_tokenizer_open(a->spm_model, err, sizeof err))) {
        fprintf(stderr, "thinkscale data %s: %s\n", cmd, err);
        return 1;
    }
    const ts_tokenizer *tok = spm ? spm : ts_tokenizer_find("byte");
    ts_qa_write_options options = {.path = a->output,
                                   .domain = a->name,
                                   .seed = (uint64_t)a->seed,
                                   .n_train = a->n_train,
                                   .n_validation = a->n_validation,
                                   .force = a->force,
                                   .tokenizer = tok};
    ts_qa_write_result r;
    bool ok = ts_qa_write(g, &options, &r, err, sizeof err);
    if (!ok)
        fprintf(stderr, "thinkscale data %s: %s\n", cmd, err);
    else
        printf("wrote %s: domain %s, %s, seed %ld, tokenizer %s (vocabulary %d); train %ld "
               "records, %" PRId64 " tokens (%" PRId64 " answer); validation %ld records, %" PRId64
               " tokens (%" PRId64 " answer)\n",
               a->output, a->name ? a->name : g->name, g->description, a->seed, tok->name,
               (int)tok->vocab_size, r.records[TS_SPLIT_TRAIN], r.tokens[TS_SPLIT_TRAIN],
               r.answer_tokens[TS_SPLIT_TRAIN], r.records[TS_SPLIT_VALIDATION],
               r.tokens[TS_SPLIT_VALIDATION], r.answer_tokens[TS_SPLIT_VALIDATION]);
    ts_spm_tokenizer_close(spm);
    return ok ? 0 : 1;
}

static int cmd_dyck(int argc, char **argv) {
    ts_dyck_params p = ts_dyck_default_params();
    long kinds = p.kinds, depth = p.max_depth, min_len = p.min_length, max_len = p.max_length;
    const int_option opts[] = {{"kinds", 1, TS_DYCK_KINDS, &kinds},
                               {"max-depth", 1, TS_DYCK_MAX_LENGTH, &depth},
                               {"min-length", 1, TS_DYCK_MAX_LENGTH, &min_len},
                               {"max-length", 1, TS_DYCK_MAX_LENGTH, &max_len}};
    set_args a;
    if (parse_generator("dyck", argc, argv, &a, opts, 4, NULL, 0)) {
        usage(stderr);
        return 2;
    }
    p = (ts_dyck_params){(int)kinds, (int)depth, (int)min_len, (int)max_len};
    char err[256];
    if (!ts_dyck_params_check(&p, err, sizeof err)) {
        fprintf(stderr, "thinkscale data dyck: %s\n", err);
        return 2;
    }
    ts_qa_generator g = ts_dyck_generator(&p);
    return write_set("dyck", &g, &a);
}

static int cmd_arith(int argc, char **argv) {
    ts_arith_params p = ts_arith_default_params();
    long max_value = p.max_value, min_steps = p.min_steps, max_steps = p.max_steps,
         max_factor = p.max_factor;
    const int_option opts[] = {{"max-value", 1, TS_ARITH_MAX_VALUE, &max_value},
                               {"min-steps", 1, TS_ARITH_MAX_STEPS, &min_steps},
                               {"max-steps", 1, TS_ARITH_MAX_STEPS, &max_steps},
                               {"max-factor", 2, TS_ARITH_MAX_FACTOR, &max_factor}};
    set_args a;
    if (parse_generator("arith", argc, argv, &a, opts, 4, p.ops, sizeof p.ops)) {
        usage(stderr);
        return 2;
    }
    p.max_value = max_value;
    p.min_steps = (int)min_steps;
    p.max_steps = (int)max_steps;
    p.max_factor = (int)max_factor;
    char err[256];
    if (!ts_arith_params_check(&p, err, sizeof err)) {
        fprintf(stderr, "thinkscale data arith: %s\n", err);
        return 2;
    }
    ts_qa_generator g = ts_arith_generator(&p);
    return write_set("arith", &g, &a);
}

int ts_cmd_data(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "convert")) return cmd_convert(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "info")) return cmd_info(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "dyck")) return cmd_dyck(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "arith")) return cmd_arith(argc, argv);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
