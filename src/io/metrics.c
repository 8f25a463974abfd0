#include "io/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/clock.h"
#include "io/full_disk.h"

#define FORMAT_NAME "thinkscale-metrics"
#define DEFAULT_FLUSH_ROWS 64
#define DEFAULT_FLUSH_SECONDS 30.0
/* Rows per chunk of every series: 8 KiB of float64, so a short run's file
 * stays small and a long one is not a swarm of tiny chunks. */
#define CHUNK_ROWS 1024
#define TABLE_PATH_MAX 256

typedef struct column {
    char *name;
    hid_t dset;
    int value_index; /* position in ts_metrics_append's values; -1: not declared (NaN) */
} column;

typedef struct table {
    char *path; /* "train", "eval/bible" */
    hid_t group;
    hid_t step_dset;
    column *columns;
    int n_columns;
    int n_declared;
    hsize_t rows; /* rows already in the file */
    bool has_last;
    long last_step; /* of the file's or the buffer's last row */
    int64_t *steps; /* buffered rows */
    double *values; /* n_declared per buffered row */
    int buffered, capacity;
} table;

struct ts_metrics {
    char *path;
    hid_t file;
    table *tables;
    int n_tables, capacity;
    int flush_rows;
    double flush_seconds;
    double oldest; /* when the oldest buffered row was appended */
    int buffered;  /* rows buffered over all tables */
    bool failed;   /* a write failed: nothing more is written (docs/reliability.md) */
};

static bool valid_name(const char *name) {
    return name && name[0] && !strchr(name, '/') && strcmp(name, ".") && strlen(name) < 256;
}

/* "a/b/c": HDF5 names separated by single slashes, not under /provenance. */
static bool valid_table_path(const char *path) {
    if (!path || !path[0] || strlen(path) >= TABLE_PATH_MAX) return false;
    char copy[TABLE_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    if (copy[0] == '/' || copy[strlen(copy) - 1] == '/' || strstr(copy, "//")) return false;
    char *save = NULL;
    bool first = true;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, ".") || (first && !strcmp(part, "provenance"))) return false;
        first = false;
    }
    return true;
}

/* H5Lexists on "a/b" fails when "a" is missing; test every prefix. */
static bool path_exists(hid_t loc, const char *path) {
    char prefix[TABLE_PATH_MAX + 16];
    size_t len = strlen(path);
    if (len >= sizeof prefix) return false;
    for (size_t i = 0; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        if (H5Lexists(loc, prefix, H5P_DEFAULT) <= 0) return false;
    }
    return true;
}

/* Why an existing metrics.h5 that HDF5 would not open for writing cannot
 * be, when the cause is not the file's content: HDF5 reports a lock held by
 * another process (a trainer already running in the directory) and a
 * read-only file system as a failed open, which read as a damaged file.
 * NULL when neither (then the file itself is the problem). */
static const char *why_not_writable(const char *path) {
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return errno == EROFS    ? "the file system is read-only"
               : errno == EACCES ? "permission denied"
                                 : NULL;
    /* HDF5 takes flock() locks on the files it opens (its default) */
    const char *why = NULL;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
        why = "another process has it open (a trainer already running in this run directory?)";
    else
        flock(fd, LOCK_UN);
    close(fd);
    return why;
}

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    /* Serial driver; 1.8-compatible object formats for every reader. */
    if (H5Pset_fapl_sec2(fapl) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

static table *find_table(const ts_metrics *m, const char *path) {
    for (int i = 0; i < m->n_tables; i++)
        if (!strcmp(m->tables[i].path, path)) return &m->tables[i];
    return NULL;
}

static void free_table(table *t) {
    for (int i = 0; i < t->n_columns; i++) {
        if (t->columns[i].dset >= 0) H5Dclose(t->columns[i].dset);
        free(t->columns[i].name);
    }
    free(t->columns);
    if (t->step_dset >= 0) H5Dclose(t->step_dset);
    if (t->group >= 0) H5Gclose(t->group);
    free(t->path);
    free(t->steps);
    free(t->values);
    memset(t, 0, sizeof *t);
    t->group = t->step_dset = -1;
}

/* ---------------------------------------------------------------- file set-up */

/* Root attributes describe the latest start; /provenance/starts/NNN keeps
 * every start's, so a run resumed on another allocation still accounts for
 * each job (SLURM_JOB_ID, nodes, ranks). */
static ts_io_status record_start(hid_t file, const char *path, const char *config,
                                 const ts_provenance *prov, long resume_step, char *err,
                                 size_t errlen) {
    ts_io_status st = ts_provenance_write(file, "provenance/slurm", prov, path, err, errlen);
    if (st != TS_IO_OK) return st;
    if (ts_h5_write_string_attr(file, "format", FORMAT_NAME) < 0 ||
        ts_h5_write_int64_attr(file, "format_version", TS_METRICS_FORMAT_VERSION) < 0 ||
        ts_h5_write_string_attr(file, "config", config) < 0 ||
        ts_h5_write_int64_attr(file, "resumed_from_step", resume_step) < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write root attributes", path);

    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        if (lcpl >= 0) H5Pclose(lcpl);
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot make link properties", path);
    }
    hsize_t starts = 0;
    if (path_exists(file, "provenance/starts")) {
        hid_t group = H5Gopen2(file, "provenance/starts", H5P_DEFAULT);
        H5G_info_t info;
        if (group < 0 || H5Gget_info(group, &info) < 0) st = TS_IO_ERR_IO;
        starts = st == TS_IO_OK ? info.nlinks : 0;
        if (group >= 0) H5Gclose(group);
        if (st != TS_IO_OK) {
            H5Pclose(lcpl);
            return ts_h5_fail(err, errlen, st, "%s: cannot read /provenance/starts", path);
        }
    }
    char name[64];
    snprintf(name, sizeof name, "provenance/starts/%03llu", (unsigned long long)starts);
    hid_t group = H5Gcreate2(file, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (group < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create /%s", path, name);
    st = ts_provenance_write(group, "slurm", prov, path, err, errlen);
    if (st == TS_IO_OK && (ts_h5_write_int64_attr(group, "resumed_from_step", resume_step) < 0 ||
                           ts_h5_write_string_attr(group, "config", config) < 0))
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write /%s attributes", path, name);
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /%s", path, name);
    return st;
}

typedef struct step_paths {
    char **paths;
    int count, capacity;
    bool failed;
} step_paths;

/* Collects the groups (tables) that hold a "step" link, outside /provenance. */
static herr_t collect_step_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    (void)info;
    step_paths *found = data;
    size_t len = strlen(name);
    bool is_step = !strcmp(name, "step") || (len > 5 && !strcmp(name + len - 5, "/step"));
    /* A "step" at the root is no table of ours (table paths are never empty). */
    if (!is_step || len == 4 || !strncmp(name, "provenance/", 11)) return 0;
    if (found->count == found->capacity) {
        int capacity = found->capacity ? 2 * found->capacity : 8;
        char **paths = realloc(found->paths, (size_t)capacity * sizeof *paths);
        if (!paths) {
            found->failed = true;
            return -1;
        }
        found->paths = paths;
        found->capacity = capacity;
    }
    char *table_path = strdup(name);
    if (!table_path) {
        found->failed = true;
        return -1;
    }
    table_path[len - 5] = '\0'; /* "eval/bible/step" -> "eval/bible" */
    found->paths[found->count++] = table_path;
    return 0;
}

typedef struct name_list {
    char **names;
    int count, capacity;
    bool failed;
} name_list;

static herr_t collect_name(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    (void)info;
    name_list *list = data;
    if (list->count == list->capacity) {
        int capacity = list->capacity ? 2 * list->capacity : 16;
        char **names = realloc(list->names, (size_t)capacity * sizeof *names);
        if (!names) {
            list->failed = true;
            return -1;
        }
        list->names = names;
        list->capacity = capacity;
    }
    if (!(list->names[list->count] = strdup(name))) {
        list->failed = true;
        return -1;
    }
    list->count++;
    return 0;
}

static void free_names(name_list *list) {
    for (int i = 0; i < list->count; i++) free(list->names[i]);
    free(list->names);
    memset(list, 0, sizeof *list);
}

/* Opens a link of group if it is a 1-D dataset; -1 otherwise (a subgroup). */
static hid_t open_series(hid_t group, const char *name) {
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return -1;
    if (H5Iget_type(obj) != H5I_DATASET) {
        H5Oclose(obj);
        return -1;
    }
    hid_t space = H5Dget_space(obj);
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (space >= 0) H5Sclose(space);
    if (ndim != 1) {
        H5Dclose(obj);
        return -1;
    }
    return obj;
}

static hssize_t series_length(hid_t dset) {
    hid_t space = H5Dget_space(dset);
    if (space < 0) return -1;
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    return n;
}

/* Reads a table's step column (all of it). */
static ts_io_status read_steps(hid_t step_dset, const char *where, int64_t **steps, hsize_t *rows,
                               char *err, size_t errlen) {
    *steps = NULL;
    hssize_t n = series_length(step_dset);
    if (n < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot size its step column", where);
    *rows = (hsize_t)n;
    *steps = malloc((size_t)(n ? n : 1) * sizeof **steps);
    if (!*steps)
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory for %lld steps", where,
                          (long long)n);
    if (n && H5Dread(step_dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *steps) < 0) {
        free(*steps);
        *steps = NULL;
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot read its step column", where);
    }
    return TS_IO_OK;
}

/* Resuming after resume_step: every table loses its rows with a larger step
 * (the first such row and all after it), so the resumed run's rows follow
 * without duplicates. */
static ts_io_status truncate_tables(hid_t file, const char *path, long resume_step, char *err,
                                    size_t errlen) {
    step_paths found = {0};
    ts_io_status st = TS_IO_OK;
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_step_link, &found) < 0)
        st =
            found.failed
                ? ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory listing tables", path)
                : ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot list its tables", path);
    for (int i = 0; i < found.count && st == TS_IO_OK; i++) {
        const char *group_path = found.paths[i];
        char where[TABLE_PATH_MAX + 4200];
        snprintf(where, sizeof where, "%s table %s", path, group_path);
        hid_t group = H5Gopen2(file, group_path, H5P_DEFAULT);
        hid_t step_dset = group >= 0 ? open_series(group, "step") : -1;
        if (step_dset < 0) {
            if (group >= 0) H5Gclose(group);
            continue; /* "step" is not a 1-D dataset here: not a table */
        }
        int64_t *steps = NULL;
        hsize_t rows = 0;
        st = read_steps(step_dset, where, &steps, &rows, err, errlen);
        hsize_t keep = 0;
        while (st == TS_IO_OK && keep < rows && steps[keep] <= resume_step) keep++;
        free(steps);
        H5Dclose(step_dset);
        name_list names = {0};
        hsize_t at = 0;
        if (st == TS_IO_OK &&
            H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &at, collect_name, &names) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot list its columns", where);
        for (int c = 0; c < names.count && st == TS_IO_OK; c++) {
            hid_t dset = open_series(group, names.names[c]);
            if (dset < 0) continue;
            hssize_t len = series_length(dset);
            if (len > (hssize_t)keep && H5Dset_extent(dset, &keep) < 0)
                st = ts_h5_fail(err, errlen, TS_IO_ERR_IO,
                                "%s: cannot truncate column %s to %llu rows", where, names.names[c],
                                (unsigned long long)keep);
            H5Dclose(dset);
        }
        free_names(&names);
        H5Gclose(group);
    }
    for (int i = 0; i < found.count; i++) free(found.paths[i]);
    free(found.paths);
    return st;
}

/* Space claimed before writing to the file (io/full_disk.h): what setting up
 * a start or a table can take, and a chunk per column a flush may start. */
#define SETUP_RESERVE_BYTES (128 * 1024)
#define TABLE_RESERVE_BYTES (32 * 1024)
#define COLUMN_RESERVE_BYTES 4096

/* Claims `bytes` after the file's current end for the writes that follow. */
static ts_io_status reserve(const ts_metrics *m, long long bytes, char *err, size_t errlen) {
    struct stat info;
    long long end = stat(m->path, &info) == 0 ? (long long)info.st_size : 0;
    return ts_io_reserve(m->path, end, bytes, true, err, errlen);
}

/* After a write to the file failed: the file keeps what the last successful
 * flush wrote, and nothing is written to it again, not even by the close
 * (whose failure would crash HDF5 1.10 at its shutdown). */
static ts_io_status give_up(ts_metrics *m, ts_io_status st) {
    m->failed = true;
    ts_h5_detach_failed_file(m->file);
    return st;
}

/* Every call after a failed write. */
static ts_io_status refuse(const ts_metrics *m, char *err, size_t errlen) {
    return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                      "%s: not written after an earlier write to it failed", m->path);
}

static ts_io_status open_impl(ts_metrics *m, const char *run_dir, const char *config,
                              const ts_provenance *prov, long resume_step, char *err,
                              size_t errlen) {
    struct stat info;
    if (stat(run_dir, &info) != 0 || !S_ISDIR(info.st_mode))
        return ts_io_fail(err, errlen, TS_IO_ERR_MISSING,
                          "metrics: run directory %s does not exist", run_dir);
    size_t len = strlen(run_dir) + 1 + strlen(TS_METRICS_FILE_NAME) + 1;
    if (!(m->path = malloc(len)))
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "metrics: out of memory");
    snprintf(m->path, len, "%s/%s", run_dir, TS_METRICS_FILE_NAME);
    bool exists = stat(m->path, &info) == 0;
    if (exists && resume_step < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS,
                          "%s already exists: resume the run, or use a new run directory", m->path);
    hid_t fapl = make_fapl();
    if (fapl < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot make file properties", m->path);
    ts_io_status st = TS_IO_OK;
    if (exists) {
        /* A failed open changes nothing; the format is checked before any write. */
        const char *busy = NULL;
        if ((m->file = H5Fopen(m->path, H5F_ACC_RDWR, fapl)) < 0 &&
            (busy = why_not_writable(m->path))) {
            st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s cannot be opened for writing: %s",
                            m->path, busy);
        } else if (m->file < 0) {
            st = ts_h5_fail(err, errlen, TS_IO_ERR_NOT_HDF5,
                            "%s cannot be opened as HDF5: not an HDF5 file, or damaged", m->path);
        } else {
            char *format = NULL;
            if (ts_h5_read_string_attr(m->file, "format", &format) < 0 ||
                strcmp(format, FORMAT_NAME))
                st =
                    ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                               "%s is HDF5 but not a thinkscale metrics file (format attribute %s)",
                               m->path, format ? format : "missing");
            free(format);
        }
        if (st == TS_IO_OK) st = truncate_tables(m->file, m->path, resume_step, err, errlen);
    } else if ((m->file = H5Fcreate(m->path, H5F_ACC_EXCL, H5P_DEFAULT, fapl)) < 0) {
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s", m->path);
    }
    H5Pclose(fapl);
    if (st == TS_IO_OK) {
        char why[1024] = "";
        st = reserve(m, SETUP_RESERVE_BYTES + 4 * (long long)strlen(config), why, sizeof why);
        if (st != TS_IO_OK)
            return give_up(m, ts_io_fail(err, errlen, st,
                                         "metrics: cannot record this start of the run: %s", why));
    }
    if (st == TS_IO_OK) st = record_start(m->file, m->path, config, prov, resume_step, err, errlen);
    if (st == TS_IO_OK && H5Fflush(m->file, H5F_SCOPE_LOCAL) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot flush", m->path);
    return st;
}

ts_io_status ts_metrics_open(ts_metrics **out, const char *run_dir, const char *config_text,
                             const ts_provenance *prov, const ts_metrics_options *options,
                             char *err, size_t errlen) {
    if (!out || !run_dir || !prov)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "metrics: no output, run directory or provenance");
    *out = NULL;
    ts_metrics *m = calloc(1, sizeof *m);
    if (!m) return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "metrics: out of memory");
    m->file = -1;
    const ts_metrics_options defaults = {.resume_step = -1};
    if (!options) options = &defaults;
    m->flush_rows = options->flush_rows > 0 ? options->flush_rows : DEFAULT_FLUSH_ROWS;
    m->flush_seconds = options->flush_seconds > 0 ? options->flush_seconds : DEFAULT_FLUSH_SECONDS;
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    ts_io_status st = open_impl(m, run_dir, config_text ? config_text : "", prov,
                                options->resume_step < 0 ? -1 : options->resume_step, err, errlen);
    if (st != TS_IO_OK) {
        if (m->file >= 0) ts_h5_close_written(m->file, m->failed || st == TS_IO_ERR_IO);
        /* A file this call created and could not set up holds no rows. */
        if (m->file >= 0 && options->resume_step < 0 && st != TS_IO_ERR_EXISTS) unlink(m->path);
        free(m->path);
        free(m);
    } else {
        *out = m;
    }
    ts_h5_quiet_end(quiet);
    return st;
}

/* ---------------------------------------------------------------- tables */

static hid_t create_series(hid_t group, const char *name, hid_t file_type, hsize_t rows,
                           const void *fill, hid_t fill_type) {
    hsize_t max = H5S_UNLIMITED, chunk = CHUNK_ROWS;
    hid_t space = H5Screate_simple(1, &rows, &max);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dset = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &chunk) >= 0 &&
        H5Pset_fill_value(dcpl, fill_type, fill) >= 0)
        dset = H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return dset;
}

static ts_io_status add_column(table *t, const char *name, hid_t dset, int value_index, char *err,
                               size_t errlen) {
    column *columns = realloc(t->columns, (size_t)(t->n_columns + 1) * sizeof *columns);
    char *copy = strdup(name);
    if (columns) t->columns = columns;
    if (!columns || !copy) {
        free(copy);
        H5Dclose(dset);
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "metrics: out of memory for column %s",
                          name);
    }
    t->columns[t->n_columns++] = (column){copy, dset, value_index};
    return TS_IO_OK;
}

/* Existing table (resuming): its columns, its row count, its last step. */
static ts_io_status load_table(ts_metrics *m, table *t, char *err, size_t errlen) {
    char where[TABLE_PATH_MAX + 4200];
    snprintf(where, sizeof where, "%s table %s", m->path, t->path);
    if ((t->group = H5Gopen2(m->file, t->path, H5P_DEFAULT)) < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open the group", where);
    if ((t->step_dset = open_series(t->group, "step")) < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no 1-D step column", where);
    int64_t *steps = NULL;
    ts_io_status st = read_steps(t->step_dset, where, &steps, &t->rows, err, errlen);
    if (st != TS_IO_OK) return st;
    t->has_last = t->rows > 0;
    t->last_step = t->rows ? (long)steps[t->rows - 1] : 0;
    free(steps);
    name_list names = {0};
    hsize_t at = 0;
    if (H5Literate(t->group, H5_INDEX_NAME, H5_ITER_INC, &at, collect_name, &names) < 0)
        st = names.failed
                 ? ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory", where)
                 : ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot list its columns", where);
    for (int i = 0; i < names.count && st == TS_IO_OK; i++) {
        if (!strcmp(names.names[i], "step")) continue;
        hid_t dset = open_series(t->group, names.names[i]);
        if (dset < 0) continue; /* a nested table, not a column */
        /* A column left shorter or longer by an interrupted flush is brought
         * to the step column's length (NaN where it had nothing). */
        if (series_length(dset) != (hssize_t)t->rows && H5Dset_extent(dset, &t->rows) < 0) {
            H5Dclose(dset);
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot align column %s", where,
                            names.names[i]);
            break;
        }
        st = add_column(t, names.names[i], dset, -1, err, errlen);
    }
    free_names(&names);
    return st;
}

static ts_io_status write_column_attrs(hid_t dset, const char *units, const char *description) {
    if (ts_h5_write_string_attr(dset, "units", units ? units : "") < 0 ||
        ts_h5_write_string_attr(dset, "description", description ? description : "") < 0)
        return TS_IO_ERR_IO;
    return TS_IO_OK;
}

static ts_io_status define_impl(ts_metrics *m, table *t, const char *description, int n_columns,
                                const ts_metric_column *columns, char *err, size_t errlen) {
    char where[TABLE_PATH_MAX + 4200];
    snprintf(where, sizeof where, "%s table %s", m->path, t->path);
    ts_io_status st = TS_IO_OK;
    if (path_exists(m->file, t->path)) {
        st = load_table(m, t, err, errlen);
    } else {
        t->group = ts_h5_create_group_path(m->file, t->path);
        int64_t no_step = -1;
        if (t->group < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create the group", where);
        else if ((t->step_dset = create_series(t->group, "step", H5T_STD_I64LE, 0, &no_step,
                                               H5T_NATIVE_INT64)) < 0 ||
                 write_column_attrs(t->step_dset, "step",
                                    "optimiser steps completed when the row "
                                    "was recorded") != TS_IO_OK)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create its step column", where);
    }
    if (st == TS_IO_OK && description &&
        ts_h5_write_string_attr(t->group, "description", description) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write its description", where);

    const double nan_fill = NAN;
    for (int i = 0; i < n_columns && st == TS_IO_OK; i++) {
        const ts_metric_column *c = &columns[i];
        int existing = -1;
        for (int j = 0; j < t->n_columns && existing < 0; j++)
            if (!strcmp(t->columns[j].name, c->name)) existing = j;
        if (existing >= 0) {
            column *col = &t->columns[existing];
            char *units = NULL;
            if (ts_h5_read_string_attr(col->dset, "units", &units) < 0 ||
                strcmp(units, c->units ? c->units : ""))
                st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                                "%s: column %s has units '%s' in the file but '%s' now", where,
                                c->name, units ? units : "(none)", c->units ? c->units : "");
            free(units);
            hid_t type = H5Dget_type(col->dset);
            if (st == TS_IO_OK && (type < 0 || H5Tget_class(type) != H5T_FLOAT))
                st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                                "%s: column %s is not floating point", where, c->name);
            if (type >= 0) H5Tclose(type);
            col->value_index = i;
            continue;
        }
        hid_t dset =
            create_series(t->group, c->name, H5T_IEEE_F64LE, t->rows, &nan_fill, H5T_NATIVE_DOUBLE);
        if (dset < 0 || write_column_attrs(dset, c->units, c->description) != TS_IO_OK) {
            if (dset >= 0) H5Dclose(dset);
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create column %s", where,
                            c->name);
            break;
        }
        st = add_column(t, c->name, dset, i, err, errlen);
    }
    t->n_declared = n_columns;
    if (st == TS_IO_OK && H5Fflush(m->file, H5F_SCOPE_LOCAL) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot flush", m->path);
    return st;
}

ts_io_status ts_metrics_define(ts_metrics *m, const char *table_path, const char *description,
                               int n_columns, const ts_metric_column *columns, char *err,
                               size_t errlen) {
    if (!m) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "metrics: not open");
    if (m->failed) return refuse(m, err, errlen);
    if (!valid_table_path(table_path))
        return ts_io_fail(
            err, errlen, TS_IO_ERR_ARGS,
            "%s: '%s' is not a table path (HDF5 names joined by '/', not under provenance)",
            m->path, table_path ? table_path : "(null)");
    if (n_columns < 0 || (n_columns > 0 && !columns))
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "%s table %s: %d columns without an array",
                          m->path, table_path, n_columns);
    for (int i = 0; i < n_columns; i++) {
        if (!valid_name(columns[i].name) || !strcmp(columns[i].name, "step"))
            return ts_io_fail(
                err, errlen, TS_IO_ERR_ARGS,
                "%s table %s: column name '%s' is not allowed (a single HDF5 name, not 'step')",
                m->path, table_path, columns[i].name ? columns[i].name : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(columns[i].name, columns[j].name))
                return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                  "%s table %s: column %s is declared twice", m->path, table_path,
                                  columns[i].name);
    }
    if (find_table(m, table_path))
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "%s: table %s is already defined", m->path,
                          table_path);
    if (m->n_tables == m->capacity) {
        int capacity = m->capacity ? 2 * m->capacity : 8;
        table *tables = realloc(m->tables, (size_t)capacity * sizeof *tables);
        if (!tables) return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "metrics: out of memory");
        m->tables = tables;
        m->capacity = capacity;
    }
    table *t = &m->tables[m->n_tables];
    memset(t, 0, sizeof *t);
    t->group = t->step_dset = -1;
    if (!(t->path = strdup(table_path)))
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "metrics: out of memory");
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    ts_io_status st =
        reserve(m, TABLE_RESERVE_BYTES + COLUMN_RESERVE_BYTES * (long long)n_columns, err, errlen);
    if (st != TS_IO_OK) {
        give_up(m, st);
    } else if ((st = define_impl(m, t, description, n_columns, columns, err, errlen)) ==
               TS_IO_ERR_IO) {
        ts_io_append_free_space(m->path, err, errlen);
        give_up(m, st);
    }
    ts_h5_quiet_end(quiet);
    if (st != TS_IO_OK) {
        free_table(t);
        return st;
    }
    m->n_tables++;
    return TS_IO_OK;
}

/* ---------------------------------------------------------------- rows */

static herr_t append_series(hid_t dset, hsize_t start, hsize_t n, hid_t mem_type,
                            const void *data) {
    hsize_t len = start + n;
    if (H5Dset_extent(dset, &len) < 0) return -1;
    hid_t space = H5Dget_space(dset);
    hid_t mem = H5Screate_simple(1, &n, NULL);
    herr_t rc = space < 0 || mem < 0
                    ? -1
                    : H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (rc >= 0) rc = H5Dwrite(dset, mem_type, mem, space, H5P_DEFAULT, data);
    if (space >= 0) H5Sclose(space);
    if (mem >= 0) H5Sclose(mem);
    return rc;
}

static ts_io_status flush_table(ts_metrics *m, table *t, char *err, size_t errlen) {
    if (!t->buffered) return TS_IO_OK;
    hsize_t n = (hsize_t)t->buffered;
    double *column_values = malloc(n * sizeof *column_values);
    if (!column_values)
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s table %s: out of memory", m->path,
                          t->path);
    ts_io_status st = TS_IO_OK;
    /* Values first, step last: a flush cut short leaves at most columns
     * longer than the step column, which the next open realigns. */
    for (int c = 0; c < t->n_columns && st == TS_IO_OK; c++) {
        int index = t->columns[c].value_index;
        for (hsize_t r = 0; r < n; r++)
            column_values[r] =
                index >= 0 ? t->values[r * (hsize_t)t->n_declared + (hsize_t)index] : NAN;
        if (append_series(t->columns[c].dset, t->rows, n, H5T_NATIVE_DOUBLE, column_values) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s table %s: cannot append to column %s",
                            m->path, t->path, t->columns[c].name);
    }
    free(column_values);
    if (st == TS_IO_OK && append_series(t->step_dset, t->rows, n, H5T_NATIVE_INT64, t->steps) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s table %s: cannot append steps", m->path,
                        t->path);
    if (st == TS_IO_OK) {
        t->rows += n;
        m->buffered -= t->buffered;
        t->buffered = 0;
    }
    return st;
}

/* An upper bound of what writing the buffered rows adds to the file: the
 * chunks the columns grow into, and room for the metadata that indexes them. */
static long long flush_bytes(const ts_metrics *m, long *last_step) {
    long long bytes = TABLE_RESERVE_BYTES;
    *last_step = -1;
    for (int i = 0; i < m->n_tables; i++) {
        const table *t = &m->tables[i];
        if (!t->buffered) continue;
        hsize_t chunks_before = (t->rows + CHUNK_ROWS - 1) / CHUNK_ROWS;
        hsize_t chunks_after = (t->rows + (hsize_t)t->buffered + CHUNK_ROWS - 1) / CHUNK_ROWS;
        long long per_series =
            (long long)(chunks_after - chunks_before) * CHUNK_ROWS * 8 + COLUMN_RESERVE_BYTES;
        bytes += per_series * (t->n_columns + 1);
        if (t->last_step > *last_step) *last_step = t->last_step;
    }
    return bytes;
}

ts_io_status ts_metrics_flush(ts_metrics *m, char *err, size_t errlen) {
    if (!m) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "metrics: not open");
    if (m->failed) return refuse(m, err, errlen);
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    long last_step = -1;
    int rows = m->buffered;
    char why[1024] = "";
    ts_io_status st = rows ? reserve(m, flush_bytes(m, &last_step), why, sizeof why) : TS_IO_OK;
    if (st != TS_IO_OK)
        ts_io_fail(err, errlen, st,
                   "metrics: %d row(s) up to step %ld not written (the file holds the rows before "
                   "them): %s",
                   rows, last_step, why);
    for (int i = 0; i < m->n_tables && st == TS_IO_OK; i++)
        st = flush_table(m, &m->tables[i], err, errlen);
    if (st == TS_IO_OK && H5Fflush(m->file, H5F_SCOPE_LOCAL) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot flush", m->path);
    if (st == TS_IO_ERR_IO) ts_io_append_free_space(m->path, err, errlen);
    if (st == TS_IO_ERR_IO || st == TS_IO_ERR_NOSPACE) give_up(m, st);
    ts_h5_quiet_end(quiet);
    return st;
}

ts_io_status ts_metrics_append(ts_metrics *m, const char *table_path, long step,
                               const double *values, char *err, size_t errlen) {
    if (!m) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "metrics: not open");
    if (m->failed) return refuse(m, err, errlen);
    table *t = table_path ? find_table(m, table_path) : NULL;
    if (!t)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "%s: table %s is not defined", m->path,
                          table_path ? table_path : "(null)");
    if (t->n_declared > 0 && !values)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "%s table %s: no values", m->path, t->path);
    if (t->has_last && step <= t->last_step)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "%s table %s: step %ld does not follow the last recorded step %ld",
                          m->path, t->path, step, t->last_step);
    if (t->buffered == t->capacity) {
        int capacity = t->capacity ? 2 * t->capacity : 64;
        int64_t *steps = realloc(t->steps, (size_t)capacity * sizeof *steps);
        if (steps) t->steps = steps;
        double *buffer = steps
                             ? realloc(t->values, (size_t)capacity *
                                                      (size_t)(t->n_declared ? t->n_declared : 1) *
                                                      sizeof *buffer)
                             : NULL;
        if (buffer) t->values = buffer;
        if (!steps || !buffer)
            return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                              "%s table %s: out of memory buffering rows", m->path, t->path);
        t->capacity = capacity;
    }
    t->steps[t->buffered] = step;
    if (t->n_declared)
        memcpy(t->values + (size_t)t->buffered * (size_t)t->n_declared, values,
               (size_t)t->n_declared * sizeof *values);
    t->buffered++;
    t->has_last = true;
    t->last_step = step;
    double now = ts_monotonic_seconds();
    if (m->buffered++ == 0) m->oldest = now;
    if (m->buffered >= m->flush_rows || now - m->oldest >= m->flush_seconds)
        return ts_metrics_flush(m, err, errlen);
    return TS_IO_OK;
}

long ts_metrics_rows(const ts_metrics *m, const char *table_path) {
    const table *t = m && table_path ? find_table(m, table_path) : NULL;
    return t ? (long)t->rows + t->buffered : -1;
}

ts_io_status ts_metrics_close(ts_metrics *m, char *err, size_t errlen) {
    if (!m) return TS_IO_OK;
    /* After a failed write (already reported) the buffered rows are dropped. */
    ts_io_status st = m->failed ? TS_IO_OK : ts_metrics_flush(m, err, errlen);
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    for (int i = 0; i < m->n_tables; i++) free_table(&m->tables[i]);
    free(m->tables);
    if (m->file >= 0 && ts_h5_close_written(m->file, m->failed) < 0 && st == TS_IO_OK && !m->failed)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close", m->path);
    if (m->file >= 0 && !m->failed) ts_io_trim_reservation(m->path, NULL, 0);
    ts_h5_quiet_end(quiet);
    free(m->path);
    free(m);
    return st;
}
