/* Writing on a file system that may be full (or over quota, or failing):
 * every writer of a result (checkpoints, metrics.h5, eval.h5, a campaign's
 * results.h5) claims the space its next writes need before it writes, so a
 * full disk is one clear, early failure instead of a write failing halfway
 * through HDF5's metadata; and a serial HDF5 file whose write failed anyway
 * can still be closed without touching the disk again (docs/reliability.md).
 *
 * Nothing here prints or exits; messages go to err as in h5_toolkit.h. */
#ifndef TS_FULL_DISK_H
#define TS_FULL_DISK_H

#include <stdbool.h>
#include <stddef.h>

#include "io/h5_toolkit.h"

/* Claims `bytes` bytes of the file system for the existing file `path`,
 * from `offset` on, without changing its size (fallocate with
 * FALLOC_FL_KEEP_SIZE): later writes into that range cannot fail for want
 * of space, and an exceeded quota shows up here too. On file systems that
 * cannot reserve, the free space (statvfs) is compared with `bytes`, and
 * with probe_writes (for small amounts) that many zeros are written after
 * the file's end and cut off again, which meets quotas and I/O errors too.
 * Fails with TS_IO_ERR_NOSPACE ("PATH: reserving N bytes of room failed:
 * REASON; the file system of DIR has N bytes free") or TS_IO_ERR_IO. */
ts_io_status ts_io_reserve(const char *path, long long offset, long long bytes, bool probe_writes,
                           char *err, size_t errlen);

/* Gives back what a reservation holds beyond the end of path (truncating
 * a file to its own size frees its blocks past the end). */
ts_io_status ts_io_trim_reservation(const char *path, char *err, size_t errlen);

/* Appends "; the file system of DIR has N bytes free" to err, DIR being the
 * directory of path. */
void ts_io_append_free_space(const char *path, char *err, size_t errlen);

/* A serial (sec2) HDF5 file whose write failed keeps the metadata it could
 * not write, and HDF5 1.10 retries writing it when the file is closed; a
 * close that fails leaves a dangling identifier that crashes the process
 * when HDF5 shuts down (inside MPI_Finalize). This points the file's
 * descriptor at an in-memory scratch file, so the close that follows
 * succeeds and the file on disk is not written again. */
bool ts_h5_detach_failed_file(hid_t file);

/* Closes a serial HDF5 file after writing it: flushes first, and if that
 * fails (or `failed` says an earlier write did), detaches the file as above
 * before closing, so the close cannot crash the process later. Negative if
 * the flush or the close failed or `failed` was set. */
herr_t ts_h5_close_written(hid_t file, bool failed);

/* A result written whole to a temporary file and then published (eval.h5,
 * a campaign's results.h5; io/atomic_commit.h): creates path with the
 * serial driver and reserves `bytes` for it (with probe_writes), so a full
 * disk fails here, before HDF5 holds anything it cannot write. Negative,
 * with err set and path removed, on failure; *st receives the status. */
hid_t ts_h5_create_reserved(const char *path, long long bytes, ts_io_status *st, char *err,
                            size_t errlen);

/* Closes a file made by ts_h5_create_reserved (ts_h5_close_written).
 * `wrote`: whether every write succeeded. On failure the message names the
 * file and the free space, and the status is TS_IO_ERR_IO; the caller
 * abandons the temporary file. */
ts_io_status ts_h5_finish_written(hid_t file, const char *path, bool wrote, char *err,
                                  size_t errlen);

#endif
