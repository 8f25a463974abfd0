/* realpath() is X/Open, beyond the POSIX level the build asks for. */
#define _XOPEN_SOURCE 700

#include "data/spm_tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct spm_state {
    char *model_path;
    char *dir; /* a private temporary directory for the tools' files */
    char *in_path, *out_path, *log_path;
    int32_t newline_id;
    char name[64]; /* "sentencepiece:" + 16 hex digits */
    char *description;
} spm_state;

/* The last bytes of a tool's log, for an error message. */
static void log_tail(const char *log_path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(log_path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)cap - 1 ? size - (long)cap + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\n') out[i] = ' ';
    fclose(f);
}

/* Runs argv[0] (found on PATH) in directory cwd (NULL: this one), with
 * stdin from in_path (or /dev/null), stdout to out_path and stderr to
 * log_path (or both to log_path; relative paths are relative to cwd), and
 * waits. True if it ran and exited 0; else a message with the log's end. */
static bool run_tool(char *const argv[], const char *cwd, const char *in_path, const char *out_path,
                     const char *log_path, char *err, size_t errlen) {
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot run %s: fork: %s", argv[0], strerror(errno));
        return false;
    }
    if (pid == 0) {
        /* The child: only async-signal-safe calls until exec. */
        if (cwd && chdir(cwd) != 0) _exit(126);
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int out = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : log;
        if (in < 0 || log < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(log, 2) < 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errlen, "%s: waitpid: %s", argv[0], strerror(errno));
            return false;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    char tail[400];
    log_tail(log_path, tail, sizeof tail);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        snprintf(err, errlen, "cannot run %s (install Debian's sentencepiece package): %s", argv[0],
                 tail);
    else
        snprintf(err, errlen, "%s failed (%s %d): %s", argv[0],
                 WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), tail);
    return false;
}

/* A private temporary directory under $TMPDIR (or /tmp), as an absolute
 * path (a tool may run inside it), or NULL. */
static char *make_temp_dir(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    size_t len = strlen(base) + 32;
    char *dir = malloc(len);
    if (!dir) return NULL;
    snprintf(dir, len, "%s/thinkscale-spm-XXXXXX", base);
    char *absolute = mkdtemp(dir) ? realpath(dir, NULL) : NULL;
    if (!absolute && dir[0]) rmdir(dir);
    free(dir);
    return absolute;
}

static char *join(const char *dir, const char *name) {
    size_t len = strlen(dir) + strlen(name) + 2;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s/%s", dir, name);
    return s;
}

bool ts_spm_is_name(const char *tokenizer_name) {
    return tokenizer_name &&
           !strncmp(tokenizer_name, TS_SPM_NAME_PREFIX, strlen(TS_SPM_NAME_PREFIX));
}

bool ts_spm_train(const ts_text_convert_options *options, const char *model_path,
                  const ts_spm_train_options *t, char *err, size_t errlen) {
    size_t plen = strlen(model_path);
    if (plen <= 6 || strcmp(model_path + plen - 6, ".model")) {
        snprintf(err, errlen, "%s: a SentencePiece model file must end in .model", model_path);
        return false;
    }
    if (t->vocab_size < TS_SPM_MIN_VOCAB || t->vocab_size > TS_SPM_MAX_VOCAB) {
        snprintf(err, errlen, "the SentencePiece vocabulary must have %d to %d pieces, not %d",
                 TS_SPM_MIN_VOCAB, TS_SPM_MAX_VOCAB, t->vocab_size);
        return false;
    }
    struct stat sb;
    if (!t->force && stat(model_path, &sb) == 0) {
        snprintf(err, errlen, "%s already exists: pass --force to replace it", model_path);
        return false;
    }
    char *dir = make_temp_dir();
    if (!dir) {
        snprintf(err, errlen, "cannot create a temporary directory: %s", strerror(errno));
        return false;
    }
    char *text = join(dir, "train.txt"), *log = join(dir, "spm_train.log"),
         *prefix = join(dir, "model");
    /* The model's final name's prefix, for the renames: PATH without .model. */
    char *final_prefix = strndup(model_path, plen - 6);
    bool ok = text && log && prefix && final_prefix;
    if (!ok) snprintf(err, errlen, "out of memory");
    ok = ok && ts_text_convert_train_text(options, text, err, errlen);
    if (ok) {
        char input[64], model_prefix[64], vocab[64], seed[64], sentences[64];
        /* Names relative to the temporary directory it runs in: the model
         * records them, and so stays the same from run to run. */
        snprintf(input, sizeof input, "--input=train.txt");
        snprintf(model_prefix, sizeof model_prefix, "--model_prefix=model");
        snprintf(vocab, sizeof vocab, "--vocab_size=%d", t->vocab_size);
        snprintf(seed, sizeof seed, "--random_seed=%u", t->seed);
        snprintf(sentences, sizeof sentences, "--input_sentence_size=%ld", t->max_sentences);
        /* Lossless on any text (see the header), one thread so that the
         * model depends on the text and the seed only. */
        char *argv[] = {"spm_train",
                        input,
                        model_prefix,
                        vocab,
                        seed,
                        sentences,
                        "--model_type=unigram",
                        "--character_coverage=1.0",
                        "--byte_fallback=true",
                        "--normalization_rule_name=identity",
                        "--add_dummy_prefix=false",
                        "--remove_extra_whitespaces=false",
                        "--allow_whitespace_only_pieces=true",
                        "--split_digits=true",
                        "--max_sentence_length=65536",
                        "--shuffle_input_sentence=true",
                        "--unk_id=0",
                        "--bos_id=-1",
                        "--eos_id=-1",
                        "--pad_id=-1",
                        "--num_threads=1",
                        "--minloglevel=1",
                        NULL};
        ok = run_tool(argv, dir, NULL, NULL, log, err, errlen);
    }
    if (ok) {
        char from[4200], to[4200];
        const char *exts[] = {".vocab", ".model"}; /* the model last: it is what is looked for */
        for (int i = 0; i < 2 && ok; i++) {
            snprintf(from, sizeof from, "%s%s", prefix, exts[i]);
            snprintf(to, sizeof to, "%s%s", final_prefix, exts[i]);
            /* A temporary directory may be on another file system: copy
             * beside the target, then rename. */
            char tmp[4300];
            snprintf(tmp, sizeof tmp, "%s.tmp.%ld", to, (long)getpid());
            FILE *in = fopen(from, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
            ok = in && out;
            char buf[65536];
            size_t n;
            while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
            if (in) fclose(in);
            if (out && fclose(out) != 0) ok = false;
            if (ok && rename(tmp, to) != 0) ok = false;
            if (!ok) {
                snprintf(err, errlen, "%s: cannot write it: %s", to, strerror(errno));
                remove(tmp);
            }
        }
    }
    if (text) remove(text);
    if (log) remove(log);
    if (prefix) {
        char path[4200];
        snprintf(path, sizeof path, "%s.model", prefix);
        remove(path);
        snprintf(path, sizeof path, "%s.vocab", prefix);
        remove(path);
    }
    rmdir(dir);
    free(final_prefix);
    free(prefix);
    free(log);
    free(text);
    free(dir);
    return ok;
}

/* FNV-1a-64 of a file's bytes into hex[17]; false if unreadable. */
static bool file_hash(const char *path, char hex[17]) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
    bool ok = !ferror(f);
    fclose(f);
    snprintf(hex, 17, "%016llx", (unsigned long long)h);
    return ok;
}

/* Counts the lines of a file (pieces in spm_export_vocab's output). */
static long count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long lines = 0;
    int ch;
    while ((ch = getc(f)) != EOF) lines += ch == '\n';
    fclose(f);
    return lines;
}

static void free_state(spm_state *s) {
    if (!s) return;
    if (s->in_path) remove(s->in_path);
    if (s->out_path) remove(s->out_path);
    if (s->log_path) remove(s->log_path);
    if (s->dir) rmdir(s->dir);
    free(s->in_path);
    free(s->out_path);
    free(s->log_path);
    free(s->dir);
    free(s->model_path);
    free(s->description);
    free(s);
}

/* Encodes segments through ONE run of spm_encode. spm_encode encodes line
 * by line and drops the line ends, so every segment is cut into its lines
 * and each line is written as an input line of its own: a segment's last
 * bytes after its last "\n" become a line too, which is what forces a token
 * boundary at the segment's end. line_info records, per input line, its
 * segment and whether the text had a line end there, so the newline id is
 * emitted after exactly those lines. */
static long encode_segments_spm(const ts_tokenizer *tok, const unsigned char *bytes,
                                const size_t *ends, size_t n_segments, int32_t *out,
                                size_t *token_ends) {
    const spm_state *s = tok->state;
    size_t n = n_segments ? ends[n_segments - 1] : 0;
    /* At most one line per byte and one more per segment. */
    size_t *line_info = malloc((n + n_segments + 1) * sizeof *line_info);
    FILE *f = line_info ? fopen(s->in_path, "wb") : NULL;
    bool ok = f != NULL;
    size_t lines = 0, start = 0;
    for (size_t seg = 0; ok && seg < n_segments; seg++) {
        ok = ends[seg] >= start && ends[seg] <= n;
        size_t line_start = start;
        for (size_t i = start; ok && i < ends[seg]; i++) {
            if (bytes[i] != '\n' && i + 1 < ends[seg]) continue;
            bool ended = bytes[i] == '\n';
            size_t len = i + (ended ? 0 : 1) - line_start;
            /* (segment << 1) | had a line end */
            line_info[lines++] = seg << 1 | ended;
            ok = fwrite(bytes + line_start, 1, len, f) == len && putc('\n', f) != EOF;
            line_start = i + 1;
        }
        start = ends[seg];
    }
    if (f && fclose(f) != 0) ok = false;
    char model[4200], err[512];
    snprintf(model, sizeof model, "--model=%s", s->model_path);
    char *argv[] = {"spm_encode", model, "--output_format=id", NULL};
    ok = ok && run_tool(argv, NULL, s->in_path, s->out_path, s->log_path, err, sizeof err);
    f = ok ? fopen(s->out_path, "rb") : NULL;
    ok = f != NULL;
    size_t count = 0, line = 0, filled = 0;
    long value = -1;
    int ch;
    while (ok && (ch = getc(f)) != EOF) {
        if (ch >= '0' && ch <= '9') {
            value = (value < 0 ? 0 : value * 10) + (ch - '0');
            ok = value < s->newline_id;
        } else if (ch == ' ' || ch == '\n') {
            ok = line < lines; /* no more output lines than input lines */
            /* Segments before this line's are complete. */
            while (ok && filled < line_info[line] >> 1) token_ends[filled++] = count;
            if (ok && value >= 0) {
                ok = count < n;
                if (ok) out[count++] = (int32_t)value;
                value = -1;
            }
            if (ok && ch == '\n') {
                if (line_info[line] & 1) {
                    ok = count < n;
                    if (ok) out[count++] = s->newline_id;
                }
                line++;
            }
        } else {
            ok = false;
        }
    }
    if (f) fclose(f);
    ok = ok && value < 0 && line == lines; /* every line came back */
    while (ok && filled < n_segments) token_ends[filled++] = count;
    free(line_info);
    return ok ? (long)count : -1;
}

/* The whole text as one segment. */
static long encode_spm(const ts_tokenizer *tok, const unsigned char *bytes, size_t n,
                       int32_t *out) {
    size_t end = n, token_end;
    return encode_segments_spm(tok, bytes, &end, 1, out, &token_end);
}

ts_tokenizer *ts_spm_tokenizer_open(const char *model_path, char *err, size_t errlen) {
    ts_tokenizer *tok = calloc(1, sizeof *tok);
    spm_state *s = calloc(1, sizeof *s);
    char hash[17];
    if (!tok || !s) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!file_hash(model_path, hash)) {
        snprintf(err, errlen, "%s: cannot read the SentencePiece model: %s", model_path,
                 strerror(errno));
        goto fail;
    }
    s->model_path = realpath(model_path, NULL);
    s->dir = make_temp_dir();
    if (!s->model_path || !s->dir) {
        snprintf(err, errlen, "%s: %s", model_path, strerror(errno));
        goto fail;
    }
    s->in_path = join(s->dir, "in.txt");
    s->out_path = join(s->dir, "out.txt");
    s->log_path = join(s->dir, "log.txt");
    if (!s->in_path || !s->out_path || !s->log_path) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The vocabulary: one line per piece from spm_export_vocab, which also
     * checks that the file is a model. */
    char model_arg[4200], tool_err[512];
    snprintf(model_arg, sizeof model_arg, "--model=%s", s->model_path);
    char *argv[] = {"spm_export_vocab", model_arg, NULL};
    if (!run_tool(argv, NULL, NULL, s->out_path, s->log_path, tool_err, sizeof tool_err)) {
        snprintf(err, errlen, "%s: not a usable SentencePiece model: %s", model_path, tool_err);
        goto fail;
    }
    long pieces = count_lines(s->out_path);
    if (pieces < 1 || pieces >= TS_SPM_MAX_VOCAB) {
        snprintf(err, errlen, "%s: not a usable SentencePiece model (%ld pieces)", model_path,
                 pieces);
        goto fail;
    }
    s->newline_id = (int32_t)pieces;
    snprintf(s->name, sizeof s->name, "%s%s", TS_SPM_NAME_PREFIX, hash);
    size_t dlen = strlen(s->model_path) + 128;
    s->description = malloc(dlen);
    if (!s->description) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(s->description, dlen,
             "sentencepiece model %s (FNV-1a-64 %s), %ld pieces, newline id %ld", s->model_path,
             hash, pieces, pieces);
    *tok = (ts_tokenizer){.name = s->name,
                          .vocab_size = (int32_t)pieces + 1,
                          .encode = encode_spm,
                          .encode_segments = encode_segments_spm,
                          .state = s,
                          .description = s->description};
    return tok;
fail:
    free_state(s);
    free(tok);
    return NULL;
}

void ts_spm_tokenizer_close(ts_tokenizer *tok) {
    if (!tok) return;
    free_state((spm_state *)tok->state);
    free(tok);
}
