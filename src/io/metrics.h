/* metrics.h5: a run's time series, written by one process (rank 0) with
 * HDF5's serial file driver. Layout and reading with h5py are specified in
 * docs/metrics-format.md; in short:
 *
 *   /train/step, /train/loss, /train/lr, ...            one table
 *   /eval/bible/step, /eval/bible/loss, ...             another table
 *
 * A table is a group of equally long 1-D extendible datasets: an int64
 * "step" column and float64 value columns, each with units and description
 * attributes. Tables and their columns are defined at run time, so any
 * architecture can add its own ("train_ebt/energy", "eval/dyck/perplexity").
 * Root attributes record the resolved config and the provenance of the
 * latest start; /provenance/starts/NNN keeps those of every start (the first
 * run and each resumption), and /provenance/slurm the SLURM_* variables.
 *
 * Why serial: a row is a few numbers per step, known on rank 0 after the
 * loss is reduced; a collective write would synchronise every rank on every
 * step for no bandwidth gain. Rows are buffered in memory and written
 * together, followed by H5Fflush, every flush_rows rows or flush_seconds
 * seconds (and on ts_metrics_flush / ts_metrics_close). The file on disk is
 * therefore only ever being modified during a flush: a process killed
 * between flushes leaves a readable file holding every flushed row.
 *
 * Not thread-safe; one ts_metrics per file. No function prints or exits. */
#ifndef TS_METRICS_H
#define TS_METRICS_H

#include <stddef.h>

#include "io/provenance.h"

#define TS_METRICS_FORMAT_VERSION 1
#define TS_METRICS_FILE_NAME "metrics.h5"

typedef struct ts_metrics ts_metrics;

typedef struct ts_metric_column {
    const char *name;  /* dataset name in the table, e.g. "loss"; not "step" */
    const char *units; /* e.g. "nats/token", "tokens/s", "FLOP" */
    const char *description;
} ts_metric_column;

typedef struct ts_metrics_options {
    long resume_step;     /* < 0: a new run, and an existing metrics.h5 is
                           * TS_IO_ERR_EXISTS; >= 0: resuming after that step,
                           * rows with a larger step are dropped from every table
                           * (a missing file is created) */
    int flush_rows;       /* rows buffered before a flush; <= 0: 64 */
    double flush_seconds; /* a row waits at most this long; <= 0: 30 */
} ts_metrics_options;

/* Opens run_dir/metrics.h5 (run_dir must exist) and records config_text and
 * prov (collected beforehand, collectively, with ts_provenance_collect) as
 * root attributes and as a new entry of /provenance/starts. Call from one
 * rank only. A file that is not a metrics file, or not HDF5, is reported
 * and left untouched. */
ts_io_status ts_metrics_open(ts_metrics **out, const char *run_dir, const char *config_text,
                             const ts_provenance *prov, const ts_metrics_options *options,
                             char *err, size_t errlen);

/* Declares a table ("train", "eval/bible": a path of HDF5 names below the
 * root, not under "provenance") and its value columns, in the order
 * ts_metrics_append takes them. A table that exists already (resuming) keeps
 * its rows: its columns must have the same units; new columns are added and
 * read NaN for earlier rows, and columns of the file that are not declared
 * read NaN for new rows. Defining the same table twice is an error. */
ts_io_status ts_metrics_define(ts_metrics *m, const char *table, const char *description,
                               int n_columns, const ts_metric_column *columns, char *err,
                               size_t errlen);

/* Adds one row: step and one value per declared column, in declaration
 * order (NaN for "not measured"). Steps must increase within a table. */
ts_io_status ts_metrics_append(ts_metrics *m, const char *table, long step, const double *values,
                               char *err, size_t errlen);

/* Writes buffered rows and flushes the file. */
ts_io_status ts_metrics_flush(ts_metrics *m, char *err, size_t errlen);

/* Rows of a table, written and buffered; -1 if the table is not defined. */
long ts_metrics_rows(const ts_metrics *m, const char *table);

/* Flushes, closes the file and frees m, also when the flush fails (the error
 * is returned). NULL is a no-op. */
ts_io_status ts_metrics_close(ts_metrics *m, char *err, size_t errlen);

#endif
