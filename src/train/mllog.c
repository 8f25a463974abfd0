#include "train/mllog.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* Every key this code writes and its MLPerf event type (docs/slurm.md
 * describes each). Interval keys come in start/stop pairs. */
typedef enum mllog_key {
    KEY_INIT_START,
    KEY_INIT_STOP,
    KEY_RUN_START,
    KEY_RUN_STOP,
    KEY_BLOCK_START,
    KEY_BLOCK_STOP,
    KEY_EVAL_START,
    KEY_EVAL_STOP,
    KEY_SUBMISSION_BENCHMARK,
    KEY_SUBMISSION_DIVISION,
    KEY_SUBMISSION_ORG,
    KEY_SUBMISSION_PLATFORM,
    KEY_SUBMISSION_STATUS,
    KEY_NUMBER_OF_NODES,
    KEY_NUMBER_OF_RANKS,
    KEY_GLOBAL_BATCH_SIZE,
    KEY_GRADIENT_ACCUMULATION_STEPS,
    KEY_MAX_SEQUENCE_LENGTH,
    KEY_OPT_NAME,
    KEY_OPT_BASE_LEARNING_RATE,
    KEY_SEED,
    KEY_TRAIN_STEPS,
    KEY_TRAIN_SAMPLES,
    KEY_EVAL_LOSS,
    KEY_EVAL_ACCURACY,
    KEY_COUNT
} mllog_key;

static const struct {
    const char *name;
    const char *event_type;
} key_table[KEY_COUNT] = {
    [KEY_INIT_START] = {"init_start", "INTERVAL_START"},
    [KEY_INIT_STOP] = {"init_stop", "INTERVAL_END"},
    [KEY_RUN_START] = {"run_start", "INTERVAL_START"},
    [KEY_RUN_STOP] = {"run_stop", "INTERVAL_END"},
    [KEY_BLOCK_START] = {"block_start", "INTERVAL_START"},
    [KEY_BLOCK_STOP] = {"block_stop", "INTERVAL_END"},
    [KEY_EVAL_START] = {"eval_start", "INTERVAL_START"},
    [KEY_EVAL_STOP] = {"eval_stop", "INTERVAL_END"},
    [KEY_SUBMISSION_BENCHMARK] = {"submission_benchmark", "POINT_IN_TIME"},
    [KEY_SUBMISSION_DIVISION] = {"submission_division", "POINT_IN_TIME"},
    [KEY_SUBMISSION_ORG] = {"submission_org", "POINT_IN_TIME"},
    [KEY_SUBMISSION_PLATFORM] = {"submission_platform", "POINT_IN_TIME"},
    [KEY_SUBMISSION_STATUS] = {"submission_status", "POINT_IN_TIME"},
    [KEY_NUMBER_OF_NODES] = {"number_of_nodes", "POINT_IN_TIME"},
    [KEY_NUMBER_OF_RANKS] = {"number_of_ranks", "POINT_IN_TIME"},
    [KEY_GLOBAL_BATCH_SIZE] = {"global_batch_size", "POINT_IN_TIME"},
    [KEY_GRADIENT_ACCUMULATION_STEPS] = {"gradient_accumulation_steps", "POINT_IN_TIME"},
    [KEY_MAX_SEQUENCE_LENGTH] = {"max_sequence_length", "POINT_IN_TIME"},
    [KEY_OPT_NAME] = {"opt_name", "POINT_IN_TIME"},
    [KEY_OPT_BASE_LEARNING_RATE] = {"opt_base_learning_rate", "POINT_IN_TIME"},
    [KEY_SEED] = {"seed", "POINT_IN_TIME"},
    [KEY_TRAIN_STEPS] = {"train_steps", "POINT_IN_TIME"},
    [KEY_TRAIN_SAMPLES] = {"train_samples", "POINT_IN_TIME"},
    [KEY_EVAL_LOSS] = {"eval_loss", "POINT_IN_TIME"},
    [KEY_EVAL_ACCURACY] = {"eval_accuracy", "POINT_IN_TIME"},
};

enum { VALUE_MAX = 512, METADATA_MAX = 512, LINE_MAX_BYTES = 2048 };

/* A JSON string literal of s (quotes, backslashes and control characters escaped). */
static void json_string(char *out, size_t len, const char *s) {
    size_t n = 0;
    if (len < 3) return;
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 8 < len; p++) {
        if (*p == '"' || *p == '\\')
            n += (size_t)snprintf(out + n, len - n, "\\%c", *p);
        else if (*p < 0x20)
            n += (size_t)snprintf(out + n, len - n, "\\u%04x", *p);
        else
            out[n++] = (char)*p;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/* A JSON number, or null for NaN and infinities, which JSON cannot hold. */
static void json_double(char *out, size_t len, double x) {
    if (isfinite(x))
        snprintf(out, len, "%.17g", x);
    else
        snprintf(out, len, "null");
}

static long long time_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Formats one line (without newline) into out. value and extra_metadata are
 * JSON text ("null" and "" for none); extra_metadata is a list of members
 * such as "\"step\": 5" appended after file and lineno. */
static void format_line(char *out, size_t len, mllog_key key, const char *value,
                        const char *extra_metadata, const char *file, int lineno) {
    snprintf(
        out, len,
        ":::MLLOG {\"namespace\": \"\", \"time_ms\": %lld, \"event_type\": \"%s\", "
        "\"key\": \"%s\", \"value\": %s, \"metadata\": {\"file\": \"%s\", \"lineno\": %d%s%s}}",
        time_ms(), key_table[key].event_type, key_table[key].name, value, file, lineno,
        extra_metadata[0] ? ", " : "", extra_metadata);
}

/* Appends line to mllog.txt, if open; the first failure is reported and
 * ends the appending (stdout still gets every line). */
static void append_to_file(ts_mllog *log, const char *line) {
    if (!log->file || log->file_failed) return;
    if (fprintf(log->file, "%s\n", line) < 0 || fflush(log->file) != 0) {
        fprintf(stderr,
                "thinkscale: warning: cannot write %s (%s); MLLOG lines continue on "
                "stdout only\n",
                TS_MLLOG_FILE, strerror(errno));
        log->file_failed = true;
    }
}

static void write_line(ts_mllog *log, const char *line) {
    printf("%s\n", line);
    fflush(stdout);
    append_to_file(log, line);
}

static void emit_at(ts_mllog *log, mllog_key key, const char *value, const char *extra_metadata,
                    int lineno) {
    if (log->rank != 0) return;
    char line[LINE_MAX_BYTES];
    format_line(line, sizeof line, key, value, extra_metadata, __FILE__, lineno);
    write_line(log, line);
}

/* The metadata names the line of this file that wrote the event. */
#define EMIT(log, key, value, extra) emit_at(log, key, value, extra, __LINE__)

static void emit_long(ts_mllog *log, mllog_key key, long x, const char *extra, int lineno) {
    char value[32];
    snprintf(value, sizeof value, "%ld", x);
    emit_at(log, key, value, extra, lineno);
}

static void emit_double(ts_mllog *log, mllog_key key, double x, const char *extra, int lineno) {
    char value[32];
    json_double(value, sizeof value, x);
    emit_at(log, key, value, extra, lineno);
}

static void emit_string(ts_mllog *log, mllog_key key, const char *s, int lineno) {
    char value[VALUE_MAX];
    json_string(value, sizeof value, s);
    emit_at(log, key, value, "", lineno);
}

/* "\"samples_count\": N, \"step\": S": where in training an event happened. */
static void progress_metadata(const ts_mllog *log, long step, char *out, size_t len) {
    snprintf(out, len, "\"samples_count\": %ld, \"step\": %ld", step * log->global_batch, step);
}

void ts_mllog_open_stdout(ts_mllog *log, MPI_Comm comm, const ts_run_config *config) {
    *log = (ts_mllog){.global_batch = config->batch, .steps = config->steps};
    MPI_Comm_rank(comm, &log->rank);
}

void ts_mllog_init_start(ts_mllog *log, MPI_Comm comm) {
    *log = (ts_mllog){0};
    MPI_Comm_rank(comm, &log->rank);
    if (log->rank != 0) return;
    /* Kept to be written into mllog.txt once the run directory exists. */
    format_line(log->init_line, sizeof log->init_line, KEY_INIT_START, "null", "", __FILE__,
                __LINE__);
    write_line(log, log->init_line);
}

static void block_start(ts_mllog *log, long step) {
    char meta[METADATA_MAX];
    progress_metadata(log, step, meta, sizeof meta);
    EMIT(log, KEY_BLOCK_START, "null", meta);
    log->block_open = true;
}

static void block_stop(ts_mllog *log, long step) {
    if (!log->block_open) return;
    char meta[METADATA_MAX];
    progress_metadata(log, step, meta, sizeof meta);
    EMIT(log, KEY_BLOCK_STOP, "null", meta);
    log->block_open = false;
}

void ts_mllog_run_start(ts_mllog *log, const ts_run_config *config, const ts_provenance *prov,
                        long step) {
    log->global_batch = config->batch;
    log->steps = config->steps;
    log->run_started = true;
    if (log->rank != 0) return;
    char path[TS_PATH_MAX + sizeof TS_MLLOG_FILE + 1];
    snprintf(path, sizeof path, "%s/%s", config->run_dir, TS_MLLOG_FILE);
    log->file = fopen(path, "a");
    if (!log->file) {
        fprintf(stderr,
                "thinkscale: warning: cannot open %s (%s); MLLOG lines go to stdout "
                "only\n",
                path, strerror(errno));
    }
    append_to_file(log, log->init_line); /* printed to stdout at init_start */
    emit_string(log, KEY_SUBMISSION_BENCHMARK, config->model.arch, __LINE__);
    emit_string(log, KEY_SUBMISSION_DIVISION, "open", __LINE__);
    emit_string(log, KEY_SUBMISSION_ORG, "thinkscale", __LINE__);
    emit_string(log, KEY_SUBMISSION_PLATFORM, prov->hostname, __LINE__);
    emit_string(log, KEY_SUBMISSION_STATUS, "research", __LINE__);
    emit_long(log, KEY_NUMBER_OF_NODES, prov->nodes, "", __LINE__);
    emit_long(log, KEY_NUMBER_OF_RANKS, prov->ranks, "", __LINE__);
    emit_long(log, KEY_GLOBAL_BATCH_SIZE, config->batch, "", __LINE__);
    emit_long(log, KEY_GRADIENT_ACCUMULATION_STEPS, config->accum, "", __LINE__);
    emit_long(log, KEY_MAX_SEQUENCE_LENGTH, config->model.context, "", __LINE__);
    emit_string(log, KEY_OPT_NAME, config->optimizer, __LINE__);
    emit_double(log, KEY_OPT_BASE_LEARNING_RATE, config->optim.lr, "", __LINE__);
    emit_long(log, KEY_SEED, config->seed, "", __LINE__);
    emit_long(log, KEY_TRAIN_STEPS, config->steps, "", __LINE__);
    EMIT(log, KEY_INIT_STOP, "null", "\"status\": \"success\"");
    char meta[METADATA_MAX];
    progress_metadata(log, step, meta, sizeof meta);
    EMIT(log, KEY_RUN_START, "null", meta);
    block_start(log, step);
}

void ts_mllog_eval_start(ts_mllog *log, long step) {
    block_stop(log, step);
    char meta[METADATA_MAX];
    progress_metadata(log, step, meta, sizeof meta);
    EMIT(log, KEY_EVAL_START, "null", meta);
    log->eval_open = true;
}

void ts_mllog_eval_result(ts_mllog *log, long step, const char *set, const ts_eval_result *result,
                          bool primary) {
    char name[256], meta[METADATA_MAX];
    json_string(name, sizeof name, set);
    int n = snprintf(meta, sizeof meta, "\"set\": %s, \"perplexity\": ", name);
    json_double(meta + n, sizeof meta - (size_t)n, result->perplexity);
    n = (int)strlen(meta);
    snprintf(meta + n, sizeof meta - (size_t)n, ", \"tokens\": %ld, ", result->tokens);
    n = (int)strlen(meta);
    progress_metadata(log, step, meta + n, sizeof meta - (size_t)n);
    emit_double(log, KEY_EVAL_LOSS, result->loss, meta, __LINE__);
    if (primary) emit_double(log, KEY_EVAL_ACCURACY, result->loss, meta, __LINE__);
}

void ts_mllog_eval_stop(ts_mllog *log, long step) {
    char meta[METADATA_MAX];
    progress_metadata(log, step, meta, sizeof meta);
    EMIT(log, KEY_EVAL_STOP, "null", meta);
    log->eval_open = false;
    if (log->run_started && step < log->steps) block_start(log, step);
}

void ts_mllog_run_stop(ts_mllog *log, long step, int exit_status) {
    char meta[METADATA_MAX];
    int n = snprintf(meta, sizeof meta, "\"status\": \"%s\", \"exit_status\": %d",
                     exit_status == 0 ? "success" : "aborted", exit_status);
    if (log->run_started) {
        char progress[METADATA_MAX];
        progress_metadata(log, step, progress, sizeof progress);
        if (log->eval_open) EMIT(log, KEY_EVAL_STOP, "null", progress);
        block_stop(log, step);
        emit_long(log, KEY_TRAIN_SAMPLES, step * log->global_batch, progress, __LINE__);
        snprintf(meta + n, sizeof meta - (size_t)n, ", %s", progress);
        EMIT(log, KEY_RUN_STOP, "null", meta);
    } else {
        EMIT(log, KEY_INIT_STOP, "null", meta);
    }
    if (log->file) fclose(log->file);
    log->file = NULL;
}
