#include "io/eval_results.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io/atomic_commit.h"
#include "io/full_disk.h"
#include "io/provenance.h"

hid_t ts_eval_create_setting_group(hid_t file, const char *set, const char *setting) {
    /* A setting is "key=value,..." text: keep it readable but a single HDF5 name. */
    char safe[256], name[512];
    snprintf(safe, sizeof safe, "%s", setting);
    for (char *p = safe; *p; p++)
        if (*p == '/') *p = '_';
    snprintf(name, sizeof name, "sets/%s/%s", set, safe);
    return ts_h5_create_group_path(file, name);
}

static bool write_row(hid_t file, const ts_eval_row *row) {
    hid_t group = ts_eval_create_setting_group(file, row->set, row->setting);
    if (group < 0) return false;
    bool ok = ts_h5_write_string_attr(group, "token_file", row->path) >= 0 &&
              ts_h5_write_string_attr(group, "setting", row->setting) >= 0 &&
              ts_h5_write_double_attr(group, "loss", row->loss) >= 0 &&
              ts_h5_write_string_attr(group, "loss_units", "nats/token") >= 0 &&
              ts_h5_write_double_attr(group, "perplexity", row->perplexity) >= 0 &&
              ts_h5_write_int64_attr(group, "tokens", row->tokens) >= 0 &&
              ts_h5_write_double_attr(group, "flops", row->flops) >= 0;
    for (int k = 0; ok && k < row->n_stats; k++)
        ok = ts_h5_write_double_attr(group, row->stat_names[k], row->stats[k]) >= 0;
    if (ok && row->answer_tokens > 0)
        ok = ts_h5_write_double_attr(group, "answer_loss", row->answer_loss) >= 0 &&
             ts_h5_write_double_attr(group, "answer_perplexity", row->answer_perplexity) >= 0 &&
             ts_h5_write_int64_attr(group, "answer_tokens", row->answer_tokens) >= 0;
    hsize_t dims[1] = {(hsize_t)row->n_windows};
    if (ok && row->n_windows > 0)
        ok = ts_h5_write_array(group, "window_loss", H5T_NATIVE_DOUBLE, 1, dims, row->window_loss,
                               "nats", "summed loss of the targets of each window (group)") &&
             ts_h5_write_array(group, "window_tokens", H5T_NATIVE_DOUBLE, 1, dims,
                               row->window_tokens, "tokens", "targets scored in each window");
    if (ok && row->n_windows > 0 && row->answer_tokens > 0)
        ok = ts_h5_write_array(group, "window_answer_loss", H5T_NATIVE_DOUBLE, 1, dims,
                               row->window_answer_loss, "nats",
                               "summed loss of the answer targets of each window") &&
             ts_h5_write_array(group, "window_answer_tokens", H5T_NATIVE_DOUBLE, 1, dims,
                               row->window_answer_tokens, "tokens",
                               "answer targets scored in each window");
    return H5Gclose(group) >= 0 && ok;
}

/* An upper bound of the file's size: attributes and a group per row. */
static long long estimated_bytes(const ts_eval_header *h, int n_rows) {
    return 64 * 1024 + 4 * (long long)strlen(h->config_text) + 8192LL * n_rows;
}

ts_io_status ts_eval_results_check_target(const char *path, bool overwrite, char *err,
                                          size_t errlen) {
    /* eval.h5 files written before they carried "format" */
    static const char *const legacy[] = {"checkpoint",      "step",   "split", "windows",
                                         "sequence_length", "config", NULL};
    return ts_h5_check_output(path, overwrite, TS_EVAL_FORMAT_NAME, legacy, NULL, "--force", err,
                              errlen);
}

ts_io_status ts_eval_results_write(const char *path, const ts_eval_header *h,
                                   const ts_eval_row *rows, int n_rows, bool overwrite, char *err,
                                   size_t errlen) {
    ts_io_status st = ts_eval_results_check_target(path, overwrite, err, errlen);
    if (st != TS_IO_OK) return st;
    ts_commit commit;
    st = ts_commit_begin(&commit, path, overwrite, false, err, errlen);
    if (st != TS_IO_OK) return st;
    hid_t file = ts_h5_create_reserved(commit.tmp, estimated_bytes(h, n_rows), &st, err, errlen);
    if (file < 0) return st;
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    bool ok = ts_h5_write_string_attr(file, "format", TS_EVAL_FORMAT_NAME) >= 0 &&
              ts_h5_write_string_attr(file, "checkpoint", h->checkpoint) >= 0 &&
              ts_h5_write_int64_attr(file, "step", h->step) >= 0 &&
              ts_h5_write_string_attr(file, "split", h->split) >= 0 &&
              ts_h5_write_int64_attr(file, "windows", h->windows) >= 0 &&
              ts_h5_write_int64_attr(file, "sequence_length", h->seq) >= 0 &&
              ts_h5_write_string_attr(file, "config", h->config_text) >= 0;
    for (int i = 0; ok && i < n_rows; i++) ok = write_row(file, &rows[i]);
    ts_h5_quiet_end(quiet);
    if ((st = ts_h5_finish_written(file, commit.tmp, ok, err, errlen)) != TS_IO_OK) {
        ts_commit_abandon(&commit);
        return st;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen);
}
