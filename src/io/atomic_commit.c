#include "io/atomic_commit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static ts_io_status with_suffix(char *out, size_t outlen, const char *path, const char *suffix,
                                char *err, size_t errlen) {
    int n = snprintf(out, outlen, "%s%s", path, suffix);
    if (n < 0 || (size_t)n >= outlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "path %s%s is longer than %zu bytes", path,
                          suffix, outlen - 1);
    return TS_IO_OK;
}

/* fsync of a file or directory. Some file systems cannot fsync a directory
 * (EINVAL, EROFS); there is nothing more to do on those. */
static ts_io_status sync_path(const char *path, bool directory, char *err, size_t errlen) {
    const char *what = directory ? "directory " : "";
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot open %s%s to sync it: %s", what, path,
                          strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0 && saved != EINVAL && !(directory && saved == EROFS))
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "fsync of %s%s: %s", what, path,
                          strerror(saved));
    return TS_IO_OK;
}

ts_io_status ts_commit_sync_dir(const char *dir, char *err, size_t errlen) {
    return sync_path(dir, true, err, errlen);
}

ts_io_status ts_commit_begin(ts_commit *c, const char *path, bool overwrite, bool marked, char *err,
                             size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!path || !path[0]) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "no path to write");
    ts_io_status st = with_suffix(c->path, sizeof c->path, path, "", err, errlen);
    if (st == TS_IO_OK)
        st = with_suffix(c->tmp, sizeof c->tmp, path, TS_COMMIT_TMP_SUFFIX, err, errlen);
    if (st == TS_IO_OK)
        st = with_suffix(c->marker, sizeof c->marker, path, TS_COMMIT_MARKER_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    struct stat info;
    bool exists = stat(c->path, &info) == 0;
    if (marked) exists = exists && stat(c->marker, &info) == 0;
    if (exists && !overwrite)
        return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS, "%s already exists%s; not overwriting it",
                          c->path, marked ? " and is complete" : "");
    c->replacing = exists;
    /* On a read-only file system unlink fails with EROFS even when there is
     * nothing to remove: only a stale file that is there is an error (the
     * write that follows says why the directory cannot take it). */
    struct stat stale;
    int unlink_error = unlink(c->tmp) == 0 ? 0 : errno;
    if (unlink_error && unlink_error != ENOENT && lstat(c->tmp, &stale) == 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot remove the stale %s: %s", c->tmp,
                          strerror(unlink_error));
    return TS_IO_OK;
}

ts_io_status ts_commit_begin_shared(ts_commit *c, const char *path, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!path || !path[0]) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "no path to write");
    char host[64] = "host", suffix[96];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(suffix, sizeof suffix, "%s.%s.%ld", TS_COMMIT_TMP_SUFFIX, host, (long)getpid());
    ts_io_status st = with_suffix(c->path, sizeof c->path, path, "", err, errlen);
    if (st == TS_IO_OK) st = with_suffix(c->tmp, sizeof c->tmp, path, suffix, err, errlen);
    if (st == TS_IO_OK)
        st = with_suffix(c->marker, sizeof c->marker, path, TS_COMMIT_MARKER_SUFFIX, err, errlen);
    struct stat info;
    c->replacing = st == TS_IO_OK && stat(c->path, &info) == 0;
    return st;
}

void ts_commit_abandon(const ts_commit *c) {
    unlink(c->tmp);
}

/* The marker is itself written atomically (temporary name, fsync, rename),
 * so it either exists whole or not at all. */
static ts_io_status write_marker(const ts_commit *c, const ts_commit_marker *marker, int64_t bytes,
                                 char *err, size_t errlen) {
    char tmp[TS_COMMIT_PATH_MAX];
    ts_io_status st = with_suffix(tmp, sizeof tmp, c->marker, TS_COMMIT_TMP_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    int printed = fprintf(f, "format=%s\nfile=%s\n%sbytes=%" PRId64 "\n", marker->format,
                          base_name(c->path), marker->fields ? marker->fields : "", bytes);
    bool ok = printed > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot write %s: %s", tmp, strerror(saved));
    }
    if (rename(tmp, c->marker) != 0) {
        saved = errno;
        unlink(tmp);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot rename %s to %s: %s", tmp, c->marker,
                          strerror(saved));
    }
    return TS_IO_OK;
}

ts_io_status ts_commit_publish(const ts_commit *c, const ts_commit_marker *marker, int64_t *bytes,
                               char *err, size_t errlen) {
    char dir[TS_COMMIT_PATH_MAX];
    ts_io_dir_name(c->path, dir, sizeof dir);
    ts_io_status st = sync_path(c->tmp, false, err, errlen);
    struct stat info;
    if (st == TS_IO_OK && stat(c->tmp, &info) != 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot stat %s: %s", c->tmp, strerror(errno));
    /* Replacing a marked file: unmark it first, so no moment exists in which
     * the marker vouches for a file that is being swapped. */
    if (st == TS_IO_OK && marker && c->replacing && unlink(c->marker) != 0 && errno != ENOENT)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot remove the old marker %s: %s", c->marker,
                        strerror(errno));
    if (st == TS_IO_OK && rename(c->tmp, c->path) != 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot rename %s to %s: %s", c->tmp, c->path,
                        strerror(errno));
    if (st != TS_IO_OK) {
        ts_commit_abandon(c);
        return st;
    }
    if (bytes) *bytes = (int64_t)info.st_size;
    if ((st = ts_commit_sync_dir(dir, err, errlen)) != TS_IO_OK) return st;
    if (!marker) return TS_IO_OK;
    if ((st = write_marker(c, marker, (int64_t)info.st_size, err, errlen)) != TS_IO_OK) return st;
    return ts_commit_sync_dir(dir, err, errlen);
}

/* The byte count a marker records, or a failure saying why it is unusable. */
static ts_io_status read_marker(const char *path, int64_t *bytes, char *err, size_t errlen) {
    char marker[TS_COMMIT_PATH_MAX];
    ts_io_status st =
        with_suffix(marker, sizeof marker, path, TS_COMMIT_MARKER_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    FILE *f = fopen(marker, "r");
    if (!f) {
        if (errno == ENOENT)
            return ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                              "%s is not marked complete (no %s): its writer may have been killed "
                              "before finishing, so it is not loaded",
                              path, base_name(marker));
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot read %s: %s", marker, strerror(errno));
    }
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "bytes=", 6)) continue;
        char *end = NULL;
        errno = 0;
        long long value = strtoll(line + 6, &end, 10);
        found = errno == 0 && end != line + 6 && value >= 0;
        *bytes = value;
    }
    fclose(f);
    if (!found)
        return ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                          "completion marker %s has no valid bytes= line", marker);
    return TS_IO_OK;
}

ts_io_status ts_commit_verify(const char *path, int64_t *bytes, char *err, size_t errlen) {
    struct stat info;
    int64_t recorded = 0;
    *bytes = 0;
    if (stat(path, &info) != 0)
        return ts_io_fail(err, errlen, errno == ENOENT ? TS_IO_ERR_MISSING : TS_IO_ERR_IO,
                          "%s cannot be read: %s", path, strerror(errno));
    if (!S_ISREG(info.st_mode))
        return ts_io_fail(err, errlen, TS_IO_ERR_MISSING, "%s is not a regular file", path);
    ts_io_status st = read_marker(path, &recorded, err, errlen);
    if (st != TS_IO_OK) return st;
    if ((int64_t)info.st_size != recorded)
        return ts_io_fail(
            err, errlen, TS_IO_ERR_CORRUPT,
            "%s is %lld bytes but its completion marker records %" PRId64 ": the file is %s", path,
            (long long)info.st_size, recorded,
            (int64_t)info.st_size < recorded ? "truncated" : "longer than written (modified)");
    *bytes = recorded;
    return TS_IO_OK;
}

ts_io_status ts_commit_remove(const char *path, char *err, size_t errlen) {
    char marker[TS_COMMIT_PATH_MAX];
    ts_io_status st =
        with_suffix(marker, sizeof marker, path, TS_COMMIT_MARKER_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    if (unlink(marker) != 0 || (unlink(path) != 0 && errno != ENOENT))
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "deleting %s failed: %s", path,
                          strerror(errno));
    return TS_IO_OK;
}
