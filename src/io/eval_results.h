/* The result file of `thinkscale eval`: one HDF5 file, written by rank 0,
 * with a group per evaluated token set (layout in docs/training.md, Evaluation). */
#ifndef TS_EVAL_RESULTS_H
#define TS_EVAL_RESULTS_H

#include <stdbool.h>
#include <stddef.h>

#include <hdf5.h>

#include "io/h5_toolkit.h"

typedef struct ts_eval_row {
    const char *set;     /* domain name */
    const char *path;    /* token file */
    const char *setting; /* inference-compute setting, e.g. "default" */
    double loss;         /* nats per token */
    double perplexity;
    long tokens;
    double flops; /* executed, all ranks */
    int n_stats;  /* the model's own statistics (e.g. NFEs), stored as attributes */
    const char *const *stat_names;
    const double *stats;
    /* Answer-only scoring (a set with an answer mask; answer_tokens 0: none):
     * stored as the attributes answer_loss, answer_perplexity, answer_tokens. */
    double answer_loss, answer_perplexity;
    long answer_tokens;
    /* Optional per-window sums ([n_windows] each; n_windows 0: none), stored
     * as the datasets window_loss, window_tokens (and window_answer_loss,
     * window_answer_tokens with answers) of the row's group. */
    long n_windows;
    const double *window_loss, *window_tokens, *window_answer_loss, *window_answer_tokens;
} ts_eval_row;

typedef struct ts_eval_header {
    const char *checkpoint;
    long step;
    const char *split;
    long windows;
    int seq;
    const char *config_text;
} ts_eval_header;

/* The value of an eval result's root attribute "format". */
#define TS_EVAL_FORMAT_NAME "thinkscale-eval"

/* Whether `thinkscale eval` may write its result at path (ts_h5_check_output:
 * the directory exists; an existing file only with overwrite, and only an
 * earlier eval result): checked before the evaluation, and again by the
 * writer. */
ts_io_status ts_eval_results_check_target(const char *path, bool overwrite, char *err,
                                          size_t errlen);

/* Writes path atomically (a temporary file renamed into place). Refuses an
 * existing path unless overwrite, and any file but an earlier eval result
 * (TS_IO_ERR_EXISTS; ts_eval_results_check_target). A full disk or an I/O
 * error is TS_IO_ERR_NOSPACE or TS_IO_ERR_IO, naming the file and the free
 * space; the temporary file is removed and an existing path left as it was. */
ts_io_status ts_eval_results_write(const char *path, const ts_eval_header *header,
                                   const ts_eval_row *rows, int n_rows, bool overwrite, char *err,
                                   size_t errlen);

/* The group "sets/SET/SETTING" of an evaluation file (eval.h5, energies),
 * with '/' in the setting text replaced so it stays one name; negative on
 * failure. */
hid_t ts_eval_create_setting_group(hid_t file, const char *set, const char *setting);

#endif
