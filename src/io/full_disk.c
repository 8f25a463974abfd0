#define _GNU_SOURCE /* fallocate, memfd_create */
#include "io/full_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void ts_io_append_free_space(const char *path, char *err, size_t errlen) {
    if (!err || !errlen) return;
    char dir[PATH_MAX];
    ts_io_dir_name(path, dir, sizeof dir);
    size_t used = strlen(err);
    if (used < errlen)
        snprintf(err + used, errlen - used, "; the file system of %s has %lld bytes free", dir,
                 ts_io_free_bytes(dir));
}

/* Without fallocate: writes `bytes` zeros after the file's end and cuts
 * them off again, so a full disk, a quota or an I/O error shows up here and
 * not in the writes that follow (which may then still fail if another
 * writer took the space in between). */
static int probe(int fd, long long offset, long long bytes) {
    static const char zeros[65536];
    struct stat info;
    if (fstat(fd, &info) != 0) return errno;
    int error = 0;
    if (offset < (long long)info.st_size) offset = (long long)info.st_size; /* never over data */
    for (long long at = offset; !error && at < offset + bytes;) {
        size_t n =
            (size_t)(offset + bytes - at < (long long)sizeof zeros ? offset + bytes - at
                                                                   : (long long)sizeof zeros);
        ssize_t done = pwrite(fd, zeros, n, (off_t)at);
        if (done > 0)
            at += done;
        else
            error = done < 0 ? errno : ENOSPC;
    }
    if (ftruncate(fd, info.st_size) != 0 && !error) error = errno;
    return error;
}

ts_io_status ts_io_reserve(const char *path, long long offset, long long bytes, bool probe_writes,
                           char *err, size_t errlen) {
    if (bytes <= 0) return TS_IO_OK;
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot open to reserve space: %s", path,
                          strerror(errno));
    int error = fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)bytes) == 0 ? 0 : errno;
    const char *how = "";
    if (error == EOPNOTSUPP || error == ENOSYS || error == EINVAL) {
        /* No reservation on this file system: probe, or go by the free space. */
        char dir[PATH_MAX];
        ts_io_dir_name(path, dir, sizeof dir);
        long long free_bytes = ts_io_free_bytes(dir);
        error = free_bytes >= 0 && free_bytes < bytes ? ENOSPC : 0;
        if (!error && probe_writes) error = probe(fd, offset, bytes);
        how = probe_writes ? " (by writing them)" : " (free space)";
    }
    close(fd);
    if (!error) return TS_IO_OK;
    ts_io_status st =
        ts_io_fail(err, errlen, ts_io_errno_is_nospace(error) ? TS_IO_ERR_NOSPACE : TS_IO_ERR_IO,
                   "%s: reserving %lld bytes%s failed: %s", path, bytes, how, strerror(error));
    ts_io_append_free_space(path, err, errlen);
    return st;
}

ts_io_status ts_io_trim_reservation(const char *path, char *err, size_t errlen) {
    struct stat info;
    if (stat(path, &info) != 0 || truncate(path, info.st_size) != 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot trim its reserved space: %s", path,
                          strerror(errno));
    return TS_IO_OK;
}

bool ts_h5_detach_failed_file(hid_t file) {
    void *handle = NULL;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || !handle) return false;
    int fd = *(int *)handle; /* the sec2 driver's descriptor */
    int scratch = memfd_create("thinkscale-unwritable", 0);
    if (scratch < 0) return false;
    bool ok = dup2(scratch, fd) == fd;
    close(scratch);
    return ok;
}

herr_t ts_h5_close_written(hid_t file, bool failed) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    if (!failed && H5Fflush(file, H5F_SCOPE_LOCAL) < 0) failed = true;
    if (failed) ts_h5_detach_failed_file(file);
    herr_t closed = H5Fclose(file);
    ts_h5_quiet_end(quiet);
    return failed ? -1 : closed;
}

hid_t ts_h5_create_reserved(const char *path, long long bytes, ts_io_status *st, char *err,
                            size_t errlen) {
    /* Checked on an empty file before HDF5 writes its first bytes (a
     * create that fails half way leaves HDF5 with a file it cannot close),
     * then held once the file exists (H5Fcreate truncates, which gives a
     * reservation back). */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        *st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    *st = ts_io_reserve(path, 0, bytes, true, err, errlen);
    if (*st != TS_IO_OK) {
        unlink(path);
        return -1;
    }
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    *st = file < 0 ? ts_h5_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s", path)
                   : ts_io_reserve(path, 0, bytes, false, err, errlen);
    if (*st != TS_IO_OK) {
        if (file >= 0) ts_h5_close_written(file, true);
        ts_io_append_free_space(path, err, errlen);
        unlink(path);
        file = -1;
    }
    ts_h5_quiet_end(quiet);
    return file;
}

ts_io_status ts_h5_finish_written(hid_t file, const char *path, bool wrote, char *err,
                                  size_t errlen) {
    herr_t closed = ts_h5_close_written(file, !wrote);
    if (wrote && closed >= 0) return ts_io_trim_reservation(path, err, errlen);
    ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot write %s (%s failed)", path,
               wrote ? "closing it" : "writing it");
    ts_io_append_free_space(path, err, errlen);
    return TS_IO_ERR_IO;
}
