/* Checkpoints, the files: their names, the run directory's complete
 * checkpoints, pruning, and completeness (through io/atomic_commit.h). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic_commit.h"
#include "io/checkpoint_internal.h"

#define FILE_PREFIX "checkpoint_"
#define FILE_SUFFIX ".h5"

static ts_io_status join_path(char *out, size_t outlen, const char *a, const char *b, char *err,
                              size_t errlen) {
    int n = snprintf(out, outlen, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "path %s/%s is longer than %zu bytes", a, b,
                          outlen - 1);
    return TS_IO_OK;
}

typedef struct found_checkpoint {
    long step;
    char name[256]; /* checkpoint_<digits>.h5 */
} found_checkpoint;

typedef struct found_list {
    found_checkpoint *items;
    int count, capacity;
} found_list;

/* Parses "checkpoint_<digits>.h5.complete"; the step, or -1. */
static long parse_marker_name(const char *name, char *h5_name, size_t h5_len) {
    size_t prefix = strlen(FILE_PREFIX);
    if (strncmp(name, FILE_PREFIX, prefix)) return -1;
    const char *digits = name + prefix, *end = digits;
    while (*end >= '0' && *end <= '9') end++;
    if (end == digits || end - digits > 18 || strcmp(end, FILE_SUFFIX TS_COMMIT_MARKER_SUFFIX))
        return -1;
    size_t h5_chars = (size_t)(end - name) + strlen(FILE_SUFFIX);
    if (h5_chars >= h5_len) return -1;
    memcpy(h5_name, name, h5_chars);
    h5_name[h5_chars] = '\0';
    return strtol(digits, NULL, 10);
}

static int newest_first(const void *a, const void *b) {
    long sa = ((const found_checkpoint *)a)->step, sb = ((const found_checkpoint *)b)->step;
    return sa < sb ? 1 : sa > sb ? -1 : 0;
}

long ts_checkpoint_newest_orphan_marker(const char *run_dir, char *missing, size_t missing_len) {
    DIR *dir = opendir(run_dir);
    long newest = -1;
    for (struct dirent *entry; dir && (entry = readdir(dir));) {
        char name[TS_CHECKPOINT_PATH_MAX], data_path[TS_CHECKPOINT_PATH_MAX], err[64];
        long step = parse_marker_name(entry->d_name, name, sizeof name);
        struct stat info;
        if (step <= newest ||
            join_path(data_path, sizeof data_path, run_dir, name, err, sizeof err) != TS_IO_OK ||
            stat(data_path, &info) == 0)
            continue;
        newest = step;
        snprintf(missing, missing_len, "%s", data_path);
    }
    if (dir) closedir(dir);
    return newest;
}

/* Complete checkpoints of run_dir (marker and data file both present),
 * newest first. Serial: called by rank 0. */
static ts_io_status list_complete(const char *run_dir, found_list *list, char *err, size_t errlen) {
    memset(list, 0, sizeof *list);
    DIR *dir = opendir(run_dir);
    if (!dir)
        return ts_io_fail(err, errlen,
                          errno == ENOENT || errno == ENOTDIR ? TS_IO_ERR_MISSING : TS_IO_ERR_IO,
                          "run directory %s cannot be read: %s", run_dir, strerror(errno));
    ts_io_status st = TS_IO_OK;
    while (st == TS_IO_OK) {
        errno = 0; /* readdir signals an error only through errno */
        struct dirent *entry = readdir(dir);
        if (!entry) {
            if (errno != 0)
                st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "reading directory %s: %s", run_dir,
                                strerror(errno));
            break;
        }
        found_checkpoint item;
        item.step = parse_marker_name(entry->d_name, item.name, sizeof item.name);
        if (item.step < 0) continue;
        char data_path[TS_CHECKPOINT_PATH_MAX];
        struct stat info;
        if (join_path(data_path, sizeof data_path, run_dir, item.name, err, errlen) != TS_IO_OK)
            continue; /* a name too long for us cannot be one we wrote */
        if (stat(data_path, &info) != 0 || !S_ISREG(info.st_mode)) continue;
        if (list->count == list->capacity) {
            int capacity = list->capacity ? 2 * list->capacity : 16;
            found_checkpoint *items = realloc(list->items, (size_t)capacity * sizeof *items);
            if (!items) {
                st = ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "out of memory listing %s", run_dir);
                break;
            }
            list->items = items;
            list->capacity = capacity;
        }
        list->items[list->count++] = item;
    }
    if (closedir(dir) != 0 && st == TS_IO_OK)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "closing directory %s: %s", run_dir,
                        strerror(errno));
    if (st != TS_IO_OK) {
        free(list->items);
        memset(list, 0, sizeof *list);
        return st;
    }
    if (list->count > 1) qsort(list->items, (size_t)list->count, sizeof *list->items, newest_first);
    return TS_IO_OK;
}

ts_io_status ts_checkpoint_path(char *path, size_t pathlen, const char *run_dir, long step,
                                char *err, size_t errlen) {
    if (!path || !run_dir || step < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint path: no directory or negative step");
    int n = snprintf(path, pathlen, "%s/" FILE_PREFIX "%08ld" FILE_SUFFIX, run_dir, step);
    if (n < 0 || (size_t)n >= pathlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint path in %s is longer than %zu bytes", run_dir, pathlen - 1);
    return TS_IO_OK;
}

/* Rank 0: the run directory exists (created if missing). */
ts_io_status ckpt_prepare_dir(const char *run_dir, char *err, size_t errlen) {
    struct stat info;
    if (stat(run_dir, &info) != 0) {
        if (errno != ENOENT || mkdir(run_dir, 0777) != 0)
            return ts_io_fail(err, errlen, TS_IO_ERR_MISSING, "cannot create run directory %s: %s",
                              run_dir, strerror(errno));
    } else if (!S_ISDIR(info.st_mode)) {
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "run directory %s is not a directory",
                          run_dir);
    }
    return TS_IO_OK;
}

/* Rank 0: deletes complete checkpoints older than `step` beyond the newest
 * keep_last - 1 of them, marker first (ts_commit_remove). */
ts_io_status ckpt_prune(const char *run_dir, long step, int keep_last, int *removed, char *err,
                        size_t errlen) {
    *removed = 0;
    if (keep_last <= 0) return TS_IO_OK;
    found_list list;
    ts_io_status st = list_complete(run_dir, &list, err, errlen);
    if (st != TS_IO_OK) return st;
    int kept = 1; /* the new checkpoint */
    for (int i = 0; i < list.count && st == TS_IO_OK; i++) {
        if (list.items[i].step >= step) continue;
        if (kept < keep_last) {
            kept++;
            continue;
        }
        char data[TS_CHECKPOINT_PATH_MAX], why[512];
        if ((st = join_path(data, sizeof data, run_dir, list.items[i].name, err, errlen)) !=
            TS_IO_OK)
            break;
        if (ts_commit_remove(data, why, sizeof why) != TS_IO_OK)
            st = ts_io_fail(
                err, errlen, TS_IO_ERR_IO,
                "checkpoint of step %ld is complete, but deleting the old %s failed (%s)", step,
                data, why);
        else
            (*removed)++;
    }
    free(list.items);
    if (st == TS_IO_OK && *removed) st = ts_commit_sync_dir(run_dir, err, errlen);
    return st;
}

/* Rank 0 checks that path is a complete checkpoint of the size its marker
 * records: truncation or appending is caught here, before HDF5 parses it. */
ts_io_status ckpt_check_complete(MPI_Comm comm, int rank, const char *path, int64_t *bytes,
                                 char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    long long recorded = 0;
    if (rank == 0) {
        int64_t marked = 0;
        char why[1024];
        st = ts_commit_verify(path, &marked, why, sizeof why);
        if (st != TS_IO_OK) ts_io_fail(err, errlen, st, "checkpoint %s", why);
        recorded = marked;
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) return st;
    if (MPI_Bcast(&recorded, 1, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s: MPI_Bcast failed", path);
    *bytes = recorded;
    return TS_IO_OK;
}

ts_io_status ts_checkpoint_find_latest(MPI_Comm comm, const char *run_dir, char *path,
                                       size_t pathlen, long *step, char *err, size_t errlen) {
    return ts_checkpoint_find_before(comm, run_dir, LONG_MAX, path, pathlen, step, err, errlen);
}

ts_io_status ts_checkpoint_find_before(MPI_Comm comm, const char *run_dir, long before_step,
                                       char *path, size_t pathlen, long *step, char *err,
                                       size_t errlen) {
    int rank;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "find checkpoint: MPI_Comm_rank failed");
    ts_io_status st = TS_IO_OK;
    struct {
        long long step;
        char path[TS_CHECKPOINT_PATH_MAX];
    } found = {-1, {0}};
    if (!run_dir || !path || !pathlen)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "find checkpoint: no directory or output buffer");
    else if (rank == 0) {
        found_list list;
        st = list_complete(run_dir, &list, err, errlen);
        int newest = 0; /* the list is newest first */
        while (st == TS_IO_OK && newest < list.count && list.items[newest].step >= before_step)
            newest++;
        if (st == TS_IO_OK && newest == list.count)
            st = before_step == LONG_MAX
                     ? ts_io_fail(err, errlen, TS_IO_NOT_FOUND, "no complete checkpoint in %s",
                                  run_dir)
                     : ts_io_fail(err, errlen, TS_IO_NOT_FOUND,
                                  "no complete checkpoint before step %ld in %s", before_step,
                                  run_dir);
        else if (st == TS_IO_OK) {
            found.step = list.items[newest].step;
            st = join_path(found.path, sizeof found.path, run_dir, list.items[newest].name, err,
                           errlen);
        }
        free(list.items);
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) return st;
    if (MPI_Bcast(&found, (int)sizeof found, MPI_BYTE, 0, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "find checkpoint: MPI_Bcast failed");
    if (strlen(found.path) >= pathlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint path %s does not fit %zu bytes",
                          found.path, pathlen);
    memcpy(path, found.path, strlen(found.path) + 1);
    if (step) *step = (long)found.step;
    return TS_IO_OK;
}
