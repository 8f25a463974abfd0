/* The HDF5/MPI toolkit every reader and writer in io/ shares: one status
 * type with messages that carry HDF5's own reason, HDF5 error printing
 * switched off for the duration of a call, scalar attributes, group paths,
 * one agreement of a status across ranks, and the checksum of stored arrays.
 *
 * Nothing here prints or exits. Functions return a ts_io_status and, on
 * failure, write a message naming the file and the problem into the caller's
 * err buffer (errlen bytes, always NUL-terminated when errlen > 0). */
#ifndef TS_H5_TOOLKIT_H
#define TS_H5_TOOLKIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>
#include <mpi.h>

typedef enum ts_io_status {
    TS_IO_OK = 0,
    TS_IO_NOT_FOUND,    /* nothing to load, e.g. no complete checkpoint in a directory */
    TS_IO_ERR_ARGS,     /* invalid arguments from the caller */
    TS_IO_ERR_EXISTS,   /* the call would overwrite a finished result */
    TS_IO_ERR_MISSING,  /* a file or directory does not exist or cannot be read */
    TS_IO_ERR_NOT_HDF5, /* not an HDF5 file, or too damaged (e.g. truncated) for HDF5 to open */
    TS_IO_ERR_FORMAT,   /* an HDF5 file, but not laid out as documented */
    TS_IO_ERR_MISMATCH, /* a valid file that does not fit the caller: names, shapes, types, ranks */
    TS_IO_ERR_CORRUPT,  /* size or checksum differs from what was recorded when it was written */
    TS_IO_ERR_IO,       /* an HDF5, MPI or POSIX call failed */
    TS_IO_ERR_NOMEM,
    TS_IO_ERR_NOSPACE, /* the file system is full or the quota exceeded (ENOSPC, EDQUOT) */
    /* An HDF5 call with collectives inside it (a flush, a close) failed on
     * this rank; other ranks may be waiting inside it, so no agreement with
     * them is possible: the caller must end the job (MPI_Abort). Returned on
     * the failing ranks only, after they removed what they could. */
    TS_IO_ERR_STRANDED,
} ts_io_status;

/* The exit status of a process that had to end itself because it was stuck
 * in, or left, an HDF5 collective after a failed write (the trainer's
 * TS_EXIT_WRITE_FAILED is the same number). */
#define TS_IO_EXIT_STRANDED 4

/* "ok", "not found", "mismatch", ... */
const char *ts_io_status_name(ts_io_status status);

/* HDF5 prints its error stack to stderr by default; these functions report
 * through err instead. Each public I/O function silences HDF5 on entry and
 * restores the caller's setting before it returns. */
typedef struct ts_h5_quiet {
    H5E_auto2_t func;
    void *data;
} ts_h5_quiet;
ts_h5_quiet ts_h5_quiet_begin(void);
void ts_h5_quiet_end(ts_h5_quiet saved);

/* Formats a message into err and returns status. */
__attribute__((format(printf, 4, 5))) ts_io_status
ts_io_fail(char *err, size_t errlen, ts_io_status status, const char *fmt, ...);
/* Like ts_io_fail, appending the innermost reason on HDF5's error stack
 * (e.g. "(HDF5: truncated file: eof = 3072, ... stored_eof = 6144)"). */
__attribute__((format(printf, 4, 5))) ts_io_status
ts_h5_fail(char *err, size_t errlen, ts_io_status status, const char *fmt, ...);
/* The message of ts_h5_fail into err, for callers with their own status type. */
void ts_h5_vformat(char *err, size_t errlen, const char *fmt, va_list ap);

/* Scalar attributes. Strings are variable-length UTF-8, which h5py returns as
 * str. Writers replace an attribute that already exists. */
herr_t ts_h5_write_string_attr(hid_t loc, const char *name, const char *value);
herr_t ts_h5_write_int64_attr(hid_t loc, const char *name, int64_t value);
herr_t ts_h5_write_uint64_attr(hid_t loc, const char *name, uint64_t value);
herr_t ts_h5_write_double_attr(hid_t loc, const char *name, double value);
/* Any scalar: value in mem_type, stored as file_type (e.g. H5T_STD_U32LE). */
herr_t ts_h5_write_scalar_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                               const void *value);
/* Readers fail (negative) when the attribute is absent or not a scalar of a
 * convertible class. The string reader accepts fixed and variable-length
 * strings and returns a malloc'd copy in *value. */
herr_t ts_h5_read_string_attr(hid_t loc, const char *name, char **value);
herr_t ts_h5_read_int64_attr(hid_t loc, const char *name, int64_t *value);
herr_t ts_h5_read_uint64_attr(hid_t loc, const char *name, uint64_t *value);

/* Creates the group at path (e.g. "sets/bible/default") with any missing
 * intermediate groups; negative on failure. */
hid_t ts_h5_create_group_path(hid_t loc, const char *path);

/* A whole array as a contiguous dataset, with "units" and "description"
 * string attributes unless those are NULL. Serial files (or one rank). */
bool ts_h5_write_array(hid_t loc, const char *name, hid_t type, int ndims, const hsize_t *dims,
                       const void *data, const char *units, const char *description);

/* Whether a command may write its result file at target, checked before
 * its work (so a refusal costs nothing): target's directory exists; an
 * existing target needs overwrite (the command's `option`, e.g. "--force")
 * and must be a result of this kind, an HDF5 file whose root attribute
 * "format" is format_name, or one written before such files carried it (no
 * "format") with every root attribute of legacy_attrs and none of
 * legacy_absent (both NULL-terminated; legacy_absent may be NULL).
 * Anything else (a checkpoint, metrics.h5, a token file, a file of another
 * program) is never replaced: --force replaces only what the same command
 * wrote. TS_IO_OK, or TS_IO_ERR_MISSING (no directory) / TS_IO_ERR_EXISTS
 * with a message naming the file. */
ts_io_status ts_h5_check_output(const char *target, bool overwrite, const char *format_name,
                                const char *const *legacy_attrs, const char *const *legacy_absent,
                                const char *option, char *err, size_t errlen);

/* Whether two paths name one file: the same device and inode when both
 * exist (so ./a.h5 and a.h5 agree), else the same text. */
bool ts_io_same_file(const char *a, const char *b);

/* The directory part of path ("." when it has none, "/" for the root). */
void ts_io_dir_name(const char *path, char *out, size_t outlen);

/* mkdir -p: dir and its missing parents. */
ts_io_status ts_make_dirs(const char *dir, char *err, size_t errlen);

/* Bytes an unprivileged writer may still use on the file system holding
 * path (statvfs), or -1 if that cannot be found out. Quotas are not seen. */
long long ts_io_free_bytes(const char *path);

/* Whether errno means the file system is full or a quota is exceeded. */
bool ts_io_errno_is_nospace(int error);

/* Collective: the status of the first failing rank, with its message copied
 * into every rank's err, or TS_IO_OK on every rank when none failed. Lets all
 * ranks take the same path after a step that can fail on one rank only
 * (allocation, a local file), so no rank is left waiting in a collective. */
ts_io_status ts_io_agree(MPI_Comm comm, ts_io_status local, char *err, size_t errlen);

/* 64-bit checksum of a byte range, as documented in docs/checkpoint-format.md:
 * FNV-1a style over little-endian 8-byte words, each step followed by a
 * xor-shift, so any change confined to one word always changes the result. */
uint64_t ts_checksum64(const void *data, size_t bytes);

#endif
