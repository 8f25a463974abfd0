#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FORMAT_NAME "thinkscale-checkpoint"
#define CHECKSUM_NAME "ts_checksum64"
#define MARKER_SUFFIX ".complete"
#define TMP_SUFFIX ".tmp"
#define FILE_PREFIX "checkpoint_"
#define FILE_SUFFIX ".h5"
/* MPI-IO counts are int: one request per rank per call stays well under 2 GB. */
#define DEFAULT_MAX_PIECE_BYTES ((size_t)1 << 30)
#define MSG 1024

#ifdef TS_DOUBLE
#define REAL_MEM_TYPE H5T_NATIVE_DOUBLE
#define REAL_FILE_TYPE H5T_IEEE_F64LE
#else
#define REAL_MEM_TYPE H5T_NATIVE_FLOAT
#define REAL_FILE_TYPE H5T_IEEE_F32LE
#endif

/* ---------------------------------------------------------------- small helpers */

static bool valid_h5_name(const char *name) {
    return name && name[0] && !strchr(name, '/') && strcmp(name, ".") && strlen(name) < 256;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static ts_io_status join_path(char *out, size_t outlen, const char *a, const char *b, char *err,
                              size_t errlen) {
    int n = snprintf(out, outlen, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "path %s/%s is longer than %zu bytes", a, b,
                          outlen - 1);
    return TS_IO_OK;
}

static ts_io_status add_suffix(char *out, size_t outlen, const char *path, const char *suffix,
                               char *err, size_t errlen) {
    int n = snprintf(out, outlen, "%s%s", path, suffix);
    if (n < 0 || (size_t)n >= outlen)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "path %s%s is longer than %zu bytes", path,
                          suffix, outlen - 1);
    return TS_IO_OK;
}

static void format_shape(char *out, size_t outlen, int ndim, const hsize_t *dims) {
    size_t at = 0;
    at += (size_t)snprintf(out, outlen, "[");
    for (int i = 0; i < ndim && at < outlen; i++)
        at += (size_t)snprintf(out + at, outlen - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)dims[i]);
    if (at < outlen) snprintf(out + at, outlen - at, "]");
}

static const char *type_name(ts_ckpt_type type) {
    switch (type) {
    case TS_CKPT_REAL:
        return TS_REAL_NAME;
    case TS_CKPT_INT64:
        return "int64";
    case TS_CKPT_UINT64:
        return "uint64";
    }
    return "?";
}

static const char *layout_name(ts_ckpt_layout layout) {
    return layout == TS_CKPT_PER_RANK ? "per_rank" : "replicated";
}

static size_t type_size(ts_ckpt_type type) {
    return type == TS_CKPT_REAL ? sizeof(ts_real) : sizeof(int64_t);
}

static hid_t mem_type_of(ts_ckpt_type type) {
    return type == TS_CKPT_REAL    ? REAL_MEM_TYPE
           : type == TS_CKPT_INT64 ? H5T_NATIVE_INT64
                                   : H5T_NATIVE_UINT64;
}

static hid_t file_type_of(ts_ckpt_type type) {
    return type == TS_CKPT_REAL    ? REAL_FILE_TYPE
           : type == TS_CKPT_INT64 ? H5T_STD_I64LE
                                   : H5T_STD_U64LE;
}

/* Whether a stored datatype holds exactly the bytes of the given type, so
 * that reading it is a copy, not a conversion, and checksums stay valid. */
static bool stored_type_matches(hid_t stored, ts_ckpt_type type) {
    H5T_class_t cls = H5Tget_class(stored);
    size_t size = H5Tget_size(stored);
    if (type == TS_CKPT_REAL) return cls == H5T_FLOAT && size == sizeof(ts_real);
    if (cls != H5T_INTEGER || size != 8) return false;
    H5T_sign_t sign = H5Tget_sign(stored);
    return type == TS_CKPT_INT64 ? sign == H5T_SGN_2 : sign == H5T_SGN_NONE;
}

static void describe_stored_type(char *out, size_t outlen, hid_t stored) {
    H5T_class_t cls = H5Tget_class(stored);
    size_t size = H5Tget_size(stored);
    if (cls == H5T_FLOAT)
        snprintf(out, outlen, "%s",
                 size == 4   ? "float"
                 : size == 8 ? "double"
                             : "float of odd size");
    else if (cls == H5T_INTEGER)
        snprintf(out, outlen, "%sint%zu", H5Tget_sign(stored) == H5T_SGN_NONE ? "u" : "", 8 * size);
    else
        snprintf(out, outlen, "a non-numeric type");
}

static void utc_now(char *out, size_t outlen) {
    time_t now = time(NULL);
    struct tm utc;
    if (!gmtime_r(&now, &utc) || !strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &utc))
        snprintf(out, outlen, "unknown");
}

static double max_over_ranks(MPI_Comm comm, double value) {
    double result = value;
    if (MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, comm) != MPI_SUCCESS) return value;
    return result;
}

/* ---------------------------------------------------------------- directory scan */

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
    if (end == digits || end - digits > 18 || strcmp(end, FILE_SUFFIX MARKER_SUFFIX)) return -1;
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

/* ---------------------------------------------------------------- marker and durability */

/* Makes a rename or unlink in dir durable. Some file systems cannot fsync a
 * directory (EINVAL); there is nothing more to do on those. */
static ts_io_status sync_dir(const char *dir, char *err, size_t errlen) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot open directory %s to sync it: %s", dir,
                          strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0 && saved != EINVAL && saved != EROFS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "fsync of directory %s: %s", dir,
                          strerror(saved));
    return TS_IO_OK;
}

static ts_io_status sync_file(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot open %s to sync it: %s", path,
                          strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0 && saved != EINVAL)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "fsync of %s: %s", path, strerror(saved));
    return TS_IO_OK;
}

/* The marker is itself written atomically (temporary name, fsync, rename),
 * so it either exists whole or not at all. */
static ts_io_status write_marker(const char *marker_path, const char *data_name, long step,
                                 int64_t bytes, char *err, size_t errlen) {
    char tmp[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st = add_suffix(tmp, sizeof tmp, marker_path, TMP_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    int printed = fprintf(f, "format=%s-marker %d\nfile=%s\nstep=%ld\nbytes=%" PRId64 "\n",
                          FORMAT_NAME, TS_CHECKPOINT_FORMAT_VERSION, data_name, step, bytes);
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
    if (rename(tmp, marker_path) != 0) {
        saved = errno;
        unlink(tmp);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot rename %s to %s: %s", tmp, marker_path,
                          strerror(saved));
    }
    return TS_IO_OK;
}

/* The byte count a marker records, or a failure saying why it is unusable. */
static ts_io_status read_marker(const char *data_path, int64_t *bytes, char *err, size_t errlen) {
    char marker[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st = add_suffix(marker, sizeof marker, data_path, MARKER_SUFFIX, err, errlen);
    if (st != TS_IO_OK) return st;
    FILE *f = fopen(marker, "r");
    if (!f) {
        if (errno == ENOENT)
            return ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                              "%s is not marked complete (no %s): its writer may have been killed "
                              "before finishing, so it is not loaded",
                              data_path, base_name(marker));
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

/* Rank 0 checks that path is a complete checkpoint of the size its marker
 * records: truncation or appending is caught here, before HDF5 parses it. */
static ts_io_status check_complete(MPI_Comm comm, int rank, const char *path, int64_t *bytes,
                                   char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    long long recorded = 0;
    if (rank == 0) {
        struct stat info;
        int64_t marker_bytes = 0;
        if (stat(path, &info) != 0)
            st = ts_io_fail(err, errlen, errno == ENOENT ? TS_IO_ERR_MISSING : TS_IO_ERR_IO,
                            "checkpoint %s cannot be read: %s", path, strerror(errno));
        else if (!S_ISREG(info.st_mode))
            st = ts_io_fail(err, errlen, TS_IO_ERR_MISSING, "checkpoint %s is not a regular file",
                            path);
        else if ((st = read_marker(path, &marker_bytes, err, errlen)) == TS_IO_OK &&
                 (int64_t)info.st_size != marker_bytes)
            st = ts_io_fail(
                err, errlen, TS_IO_ERR_CORRUPT,
                "%s is %lld bytes but its completion marker records %" PRId64 ": the file is %s",
                path, (long long)info.st_size, marker_bytes,
                (int64_t)info.st_size < marker_bytes ? "truncated"
                                                     : "longer than written (modified)");
        recorded = marker_bytes;
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) return st;
    if (MPI_Bcast(&recorded, 1, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s: MPI_Bcast failed", path);
    *bytes = recorded;
    return TS_IO_OK;
}

/* ---------------------------------------------------------------- HDF5 plumbing */

typedef struct io_ctx {
    MPI_Comm comm;
    int rank, size;
    hid_t file;
    hid_t dxpl; /* collective transfers */
    size_t max_piece_bytes;
    const char *path; /* for messages */
    int64_t *loaded;  /* reads: bytes this rank has read so far; NULL when writing */
} io_ctx;

/* MPI-IO file access with collective metadata reads and writes (every rank
 * performs the same metadata operations in the same order, and one rank
 * touches the disk for them), HDF5 1.8-compatible object formats so older
 * readers and h5py builds open the files. */
static hid_t make_fapl(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
        H5Pset_all_coll_metadata_ops(fapl, 1) < 0 || H5Pset_coll_metadata_write(fapl, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

static hid_t make_collective_dxpl(void) {
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (dxpl < 0) return -1;
    if (H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
        H5Pclose(dxpl);
        return -1;
    }
    return dxpl;
}

/* Selects flat elements [first, first + n) of a dataset: whole rows of an
 * N-D dataset, or part of one row of a 2-D one (per-rank state), or nothing. */
static herr_t select_range(hid_t space, int ndim, const hsize_t *dims, hsize_t first, hsize_t n) {
    if (n == 0) return H5Sselect_none(space);
    hsize_t row = 1;
    for (int i = 1; i < ndim; i++) row *= dims[i];
    hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    for (int i = 0; i < ndim; i++) count[i] = dims[i];
    if (first % row == 0 && n % row == 0) {
        start[0] = first / row;
        count[0] = n / row;
    } else if (ndim == 2 && first / row == (first + n - 1) / row) {
        start[0] = first / row;
        start[1] = first % row;
        count[0] = 1;
        count[1] = n;
    } else {
        return -1;
    }
    return H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
}

/* Moves flat elements [first, first + count) of dset between the file and
 * buf, in pieces of whole `align`-element rows of at most max_piece_bytes.
 * Collective: every rank calls it, a rank with nothing to move passes count
 * 0, and all take part in the same number of rounds (those without a piece,
 * or whose earlier round failed, with an empty selection) so none waits for
 * another forever. Returns the agreed status. */
static ts_io_status transfer(const io_ctx *io, hid_t dset, hid_t mem_type, size_t elem_size,
                             bool writing, void *buf, hsize_t first, hsize_t count, hsize_t align,
                             const char *what, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    hsize_t dims[H5S_MAX_RANK];
    hid_t space = H5Dget_space(dset);
    int ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (ndim < 1 || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot get the dataspace of %s", io->path,
                        what);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
        if (space >= 0) H5Sclose(space);
        return st;
    }
    if (align < 1) align = 1;
    hsize_t per_piece = io->max_piece_bytes / elem_size / align * align;
    if (per_piece < align) per_piece = align;
    long long pieces = (long long)((count + per_piece - 1) / per_piece), rounds = 0;
    if (MPI_Allreduce(&pieces, &rounds, 1, MPI_LONG_LONG, MPI_MAX, io->comm) != MPI_SUCCESS) {
        H5Sclose(space);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "%s: MPI_Allreduce failed for %s", io->path,
                          what);
    }
    char dummy[16];
    for (long long k = 0; k < rounds; k++) {
        hsize_t done = (hsize_t)k * per_piece;
        hsize_t n = st == TS_IO_OK && done < count ? count - done : 0;
        if (n > per_piece) n = per_piece;
        if (select_range(space, ndim, dims, first + done, n) < 0) {
            if (st == TS_IO_OK)
                st = ts_h5_fail(err, errlen, TS_IO_ERR_IO,
                                "%s: cannot select elements %llu..%llu of %s", io->path,
                                (unsigned long long)(first + done),
                                (unsigned long long)(first + done + n), what);
            n = 0;
            H5Sselect_none(space);
        }
        hsize_t mem_n = n ? n : 1;
        hid_t mem = H5Screate_simple(1, &mem_n, NULL);
        if (mem >= 0 && n == 0) H5Sselect_none(mem);
        void *at = n ? (char *)buf + done * elem_size : (void *)dummy;
        herr_t rc = mem < 0   ? -1
                    : writing ? H5Dwrite(dset, mem_type, mem, space, io->dxpl, at)
                              : H5Dread(dset, mem_type, mem, space, io->dxpl, at);
        if (rc >= 0 && !writing && io->loaded) *io->loaded += (int64_t)(n * elem_size);
        if (rc < 0 && st == TS_IO_OK)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot %s %s", io->path,
                            writing ? "write" : "read", what);
        if (mem >= 0) H5Sclose(mem);
    }
    H5Sclose(space);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status write_uint64_array_attr(hid_t loc, const char *name, const uint64_t *values,
                                            hsize_t n) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    if (space < 0) return TS_IO_ERR_IO;
    hid_t attr = H5Acreate2(loc, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr < 0 ? -1 : H5Awrite(attr, H5T_NATIVE_UINT64, values);
    if (attr >= 0 && H5Aclose(attr) < 0) rc = -1;
    H5Sclose(space);
    return rc < 0 ? TS_IO_ERR_IO : TS_IO_OK;
}

static herr_t read_uint64_array_attr(hid_t loc, const char *name, uint64_t *values, hsize_t n) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return -1;
    hid_t space = H5Aget_space(attr);
    herr_t rc = space >= 0 && H5Sget_simple_extent_npoints(space) == (hssize_t)n
                    ? H5Aread(attr, H5T_NATIVE_UINT64, values)
                    : -1;
    if (space >= 0) H5Sclose(space);
    if (H5Aclose(attr) < 0) rc = -1;
    return rc;
}

/* Creates a contiguous dataset (no fill: every element is written) with its
 * units and description attributes. Collective; agreed status. */
static ts_io_status create_dataset(const io_ctx *io, hid_t parent, const char *name,
                                   const char *shown_as, hid_t file_type, int ndim,
                                   const hsize_t *dims, const char *units, const char *description,
                                   hid_t *out, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    *out = -1;
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot prepare dataset %s", io->path,
                        shown_as);
    if (st == TS_IO_OK &&
        (*out = H5Dcreate2(parent, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create dataset %s", io->path,
                        shown_as);
    if (st == TS_IO_OK && units && ts_h5_write_string_attr(*out, "units", units) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write %s units", io->path, shown_as);
    if (st == TS_IO_OK && description &&
        ts_h5_write_string_attr(*out, "description", description) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write %s description", io->path,
                        shown_as);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st != TS_IO_OK && *out >= 0) {
        H5Dclose(*out);
        *out = -1;
    }
    return st;
}

static ts_io_status create_group(const io_ctx *io, hid_t parent, const char *name,
                                 const char *description, hid_t *out, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    *out = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (*out < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create group /%s", io->path, name);
    else if (ts_h5_write_string_attr(*out, "description", description) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot describe group /%s", io->path, name);
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st != TS_IO_OK && *out >= 0) {
        H5Gclose(*out);
        *out = -1;
    }
    return st;
}

/* Writes one whole 1-D or N-D array that every rank holds identically:
 * rank r writes rows [r*rows/size, (r+1)*rows/size). */
static ts_io_status write_replicated(const io_ctx *io, hid_t dset, hid_t mem_type, size_t elem_size,
                                     const void *data, int ndim, const hsize_t *dims,
                                     const char *what, char *err, size_t errlen) {
    hsize_t rows = dims[0], row = 1;
    for (int i = 1; i < ndim; i++) row *= dims[i];
    hsize_t lo = rows * (hsize_t)io->rank / (hsize_t)io->size;
    hsize_t hi = rows * (hsize_t)(io->rank + 1) / (hsize_t)io->size;
    return transfer(io, dset, mem_type, elem_size, true, (char *)data + lo * row * elem_size,
                    lo * row, (hi - lo) * row, row, what, err, errlen);
}

/* ---------------------------------------------------------------- argument checks */

static ts_io_status check_table(const ts_param_table *table, char *err, size_t errlen) {
    if (!table || table->count < 1 || !table->entries)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint: the parameter table is empty");
    for (int i = 0; i < table->count; i++) {
        const ts_param_entry *e = &table->entries[i];
        if (!valid_h5_name(e->name))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: tensor name '%s' cannot be an HDF5 dataset name "
                              "(empty, '.', or contains '/')",
                              e->name);
        if (e->ndim < 1 || e->ndim > 4 || e->numel < 1)
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: tensor '%s' has no elements", e->name);
    }
    return TS_IO_OK;
}

static ts_io_status check_extras(const ts_checkpoint_extra *extras, int n_extras, char *err,
                                 size_t errlen) {
    if (n_extras < 0 || (n_extras > 0 && !extras))
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint: %d extras but no array",
                          n_extras);
    for (int i = 0; i < n_extras; i++) {
        const ts_checkpoint_extra *x = &extras[i];
        if (!valid_h5_name(x->name))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: extra #%d's name '%s' cannot be an HDF5 dataset name", i,
                              x->name ? x->name : "(null)");
        if (x->type != TS_CKPT_REAL && x->type != TS_CKPT_INT64 && x->type != TS_CKPT_UINT64)
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: extra '%s' has an unknown type", x->name);
        if (x->layout != TS_CKPT_REPLICATED && x->layout != TS_CKPT_PER_RANK)
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: extra '%s' has an unknown layout", x->name);
        if (x->count < 0 || (x->count > 0 && !x->data))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: extra '%s' has count %ld and %s data", x->name, x->count,
                              x->data ? "some" : "no");
        for (int j = 0; j < i; j++)
            if (!strcmp(extras[j].name, x->name))
                return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                  "checkpoint: extra '%s' is given twice", x->name);
    }
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

/* ---------------------------------------------------------------- writing */

/* Everything a write needs once arguments are checked. */
typedef struct write_job {
    const ts_param_table *table;
    const ts_real *params, *adam_m, *adam_v;
    const ts_checkpoint_state *state;
    const ts_checkpoint_extra *extras;
    int n_extras;
    const ts_provenance *prov;
    const char *config;
    uint64_t params_sum, m_sum, v_sum, rng_sum;
    uint64_t *extra_sums; /* n_extras x size: replicated ones use [i * size] only */
    char written_utc[32];
} write_job;

/* Whether a set of numbers is the same on every rank; *differs names the
 * first index that is not (-1 when all agree). */
static ts_io_status same_on_all_ranks(MPI_Comm comm, const long long *values, int n, int *differs,
                                      char *err, size_t errlen) {
    *differs = -1;
    long long *low = malloc(2 * (size_t)(n ? n : 1) * sizeof *low);
    ts_io_status st =
        low ? TS_IO_OK : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "checkpoint: out of memory");
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        free(low);
        return st;
    }
    long long *high = low + n;
    if (MPI_Allreduce(values, low, n, MPI_LONG_LONG, MPI_MIN, comm) != MPI_SUCCESS ||
        MPI_Allreduce(values, high, n, MPI_LONG_LONG, MPI_MAX, comm) != MPI_SUCCESS)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Allreduce failed");
    for (int i = 0; st == TS_IO_OK && i < n && *differs < 0; i++)
        if (low[i] != high[i]) *differs = i;
    free(low);
    return st;
}

/* Shapes first, then checksums of every role, compared across ranks:
 * replicas that differ would make a file that matches none of them, and
 * ranks that disagree on a dataset's size cannot create it together. */
static ts_io_status compute_checksums(const io_ctx *io, write_job *job, char *err, size_t errlen) {
    const ts_param_table *t = job->table;
    int differs;
    long long sizes[4] = {t->count, t->total, job->state->rng_words, job->n_extras};
    ts_io_status st = same_on_all_ranks(io->comm, sizes, 4, &differs, err, errlen);
    if (st != TS_IO_OK) return st;
    if (differs >= 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint of step %ld: ranks disagree on the %s", job->state->step,
                          (const char *[]){"number of tensors", "number of parameters",
                                           "number of RNG words", "number of extras"}[differs]);

    /* Room for both uses below: 3 per extra, then 5 + 1 per extra. */
    int n = 5 + 3 * job->n_extras;
    long long *mine = malloc((size_t)n * sizeof *mine);
    job->extra_sums = calloc((size_t)(job->n_extras ? job->n_extras : 1) * (size_t)io->size,
                             sizeof *job->extra_sums);
    st = mine && job->extra_sums
             ? TS_IO_OK
             : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "checkpoint: out of memory for checksums");
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
        free(mine);
        return st;
    }
    /* Each extra's type, layout and count must agree on every rank. */
    for (int i = 0; i < job->n_extras; i++) {
        mine[3 * i] = job->extras[i].type;
        mine[3 * i + 1] = job->extras[i].layout;
        mine[3 * i + 2] = job->extras[i].count;
    }
    if ((st = same_on_all_ranks(io->comm, mine, 3 * job->n_extras, &differs, err, errlen)) ==
            TS_IO_OK &&
        differs >= 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint of step %ld: ranks disagree on the type, layout or count of "
                        "extra '%s'",
                        job->state->step, job->extras[differs / 3].name);
    if (st != TS_IO_OK) {
        free(mine);
        return st;
    }

    size_t real_bytes = (size_t)t->total * sizeof(ts_real);
    job->params_sum = ts_checksum64(job->params, real_bytes);
    job->m_sum = job->adam_m ? ts_checksum64(job->adam_m, real_bytes) : 0;
    job->v_sum = job->adam_v ? ts_checksum64(job->adam_v, real_bytes) : 0;
    job->rng_sum = ts_checksum64(job->state->rng, (size_t)job->state->rng_words * sizeof(uint64_t));
    uint64_t sums[4] = {job->params_sum, job->m_sum, job->v_sum, job->rng_sum};
    for (int i = 0; i < 4; i++) mine[i] = (long long)sums[i];
    mine[4] = (job->adam_m != NULL) + 2 * (job->adam_v != NULL);
    for (int i = 0; i < job->n_extras; i++) {
        const ts_checkpoint_extra *x = &job->extras[i];
        uint64_t sum = ts_checksum64(x->data, (size_t)x->count * type_size(x->type));
        /* Per-rank state legitimately differs between ranks. */
        mine[5 + i] = x->layout == TS_CKPT_REPLICATED ? (long long)sum : 0;
        job->extra_sums[(size_t)i * (size_t)io->size] = sum;
    }
    st = same_on_all_ranks(io->comm, mine, 5 + job->n_extras, &differs, err, errlen);
    free(mine);
    if (st != TS_IO_OK) return st;
    if (differs >= 0 && differs < 5)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint of step %ld: %s differ between ranks; under data parallelism "
                          "every rank must hold an identical replica",
                          job->state->step,
                          (const char *[]){"the parameters", "the first moments (adam_m)",
                                           "the second moments (adam_v)", "the RNG states",
                                           "which moments are given"}[differs]);
    if (differs >= 5)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint of step %ld: replicated extra '%s' differs between ranks",
                          job->state->step, job->extras[differs - 5].name);
    /* Per-rank extras: every rank's row checksum, stored as one attribute. */
    for (int i = 0; i < job->n_extras; i++) {
        if (job->extras[i].layout != TS_CKPT_PER_RANK) continue;
        uint64_t *row = job->extra_sums + (size_t)i * (size_t)io->size;
        uint64_t own = row[0];
        if (MPI_Allgather(&own, 1, MPI_UINT64_T, row, 1, MPI_UINT64_T, io->comm) != MPI_SUCCESS)
            return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                              "checkpoint: MPI_Allgather of checksums failed");
    }
    return TS_IO_OK;
}

static ts_io_status write_root_attrs(const io_ctx *io, const write_job *job, char *err,
                                     size_t errlen) {
    ts_io_status st =
        ts_provenance_write(io->file, "provenance/slurm", job->prov, io->path, err, errlen);
    const ts_checkpoint_state *s = job->state;
    struct {
        const char *name;
        int64_t value;
    } numbers[] = {
        {"format_version", TS_CHECKPOINT_FORMAT_VERSION},
        {"step", s->step},
        {"tokens_seen", s->tokens_seen},
        {"data_position", s->data_position},
        {"ranks", io->size},
        {"param_count", job->table->count},
        {"param_total", job->table->total},
    };
    for (size_t i = 0; st == TS_IO_OK && i < sizeof numbers / sizeof numbers[0]; i++)
        if (ts_h5_write_int64_attr(io->file, numbers[i].name, numbers[i].value) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", io->path,
                            numbers[i].name);
    struct {
        const char *name;
        const char *value;
    } strings[] = {
        {"format", FORMAT_NAME},
        {"element_type", TS_REAL_NAME},
        {"checksum_algorithm", CHECKSUM_NAME},
        {"config", job->config},
        {"written_utc", job->written_utc},
    };
    for (size_t i = 0; st == TS_IO_OK && i < sizeof strings / sizeof strings[0]; i++)
        if (ts_h5_write_string_attr(io->file, strings[i].name, strings[i].value) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", io->path,
                            strings[i].name);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status write_params(const io_ctx *io, const write_job *job, char *err, size_t errlen) {
    hid_t group;
    ts_io_status st = create_group(io, io->file, "params",
                                   "model parameters, one dataset per named tensor, row-major; "
                                   "concatenated in order of their offset attributes they form the "
                                   "flat parameter buffer",
                                   &group, err, errlen);
    if (st != TS_IO_OK) return st;
    const ts_param_table *t = job->table;
    ts_io_status attr_st = TS_IO_OK;
    if (ts_h5_write_int64_attr(group, "count", t->count) < 0 ||
        ts_h5_write_int64_attr(group, "total", t->total) < 0 ||
        ts_h5_write_uint64_attr(group, "checksum", job->params_sum) < 0)
        attr_st =
            ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write /params attributes", io->path);
    st = ts_io_agree(io->comm, attr_st, err, errlen);
    for (int i = 0; st == TS_IO_OK && i < t->count; i++) {
        const ts_param_entry *e = &t->entries[i];
        hsize_t dims[4];
        for (int d = 0; d < e->ndim; d++) dims[d] = (hsize_t)e->shape[d];
        char shown[TS_PARAM_NAME_MAX + 16], description[TS_PARAM_NAME_MAX + 160];
        snprintf(shown, sizeof shown, "params/%s", e->name);
        snprintf(description, sizeof description,
                 "parameter tensor %s; elements [%ld, %ld) of the flat parameter buffer", e->name,
                 e->offset, e->offset + e->numel);
        hid_t dset;
        st = create_dataset(io, group, e->name, shown, REAL_FILE_TYPE, e->ndim, dims,
                            "dimensionless", description, &dset, err, errlen);
        if (st != TS_IO_OK) break;
        attr_st = TS_IO_OK;
        if (ts_h5_write_int64_attr(dset, "offset", e->offset) < 0 ||
            ts_h5_write_int64_attr(dset, "index", i) < 0 ||
            ts_h5_write_int64_attr(dset, "weight_decay", e->decay ? 1 : 0) < 0)
            attr_st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attributes of %s",
                                 io->path, shown);
        st = ts_io_agree(io->comm, attr_st, err, errlen);
        if (st == TS_IO_OK)
            st = write_replicated(io, dset, REAL_MEM_TYPE, sizeof(ts_real), job->params + e->offset,
                                  e->ndim, dims, shown, err, errlen);
        if (H5Dclose(dset) < 0 && st == TS_IO_OK)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, shown);
        st = ts_io_agree(io->comm, st, err, errlen);
    }
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /params", io->path);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* A flat 1-D dataset under parent, written in shares, with its checksum. */
static ts_io_status write_flat(const io_ctx *io, hid_t parent, const char *name, const char *shown,
                               hid_t file_type, hid_t mem_type, size_t elem_size, const void *data,
                               hsize_t count, uint64_t checksum, const char *units,
                               const char *description, char *err, size_t errlen) {
    hid_t dset;
    ts_io_status st = create_dataset(io, parent, name, shown, file_type, 1, &count, units,
                                     description, &dset, err, errlen);
    if (st != TS_IO_OK) return st;
    if (ts_h5_write_uint64_attr(dset, "checksum", checksum) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write the checksum of %s", io->path,
                        shown);
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st == TS_IO_OK)
        st = write_replicated(io, dset, mem_type, elem_size, data, 1, &count, shown, err, errlen);
    if (H5Dclose(dset) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, shown);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status write_optimizer_and_state(const io_ctx *io, const write_job *job, char *err,
                                              size_t errlen) {
    hid_t group;
    ts_io_status st = create_group(io, io->file, "optimizer",
                                   "AdamW moments over the flat parameter buffer (same order and "
                                   "offsets as /params); absent for optimisers without them",
                                   &group, err, errlen);
    if (st != TS_IO_OK) return st;
    hsize_t total = (hsize_t)job->table->total;
    if (job->adam_m)
        st = write_flat(io, group, "m", "optimizer/m", REAL_FILE_TYPE, REAL_MEM_TYPE,
                        sizeof(ts_real), job->adam_m, total, job->m_sum, "same as the gradient",
                        "first moment (running mean of gradients), flat, parameter order", err,
                        errlen);
    if (st == TS_IO_OK && job->adam_v)
        st = write_flat(io, group, "v", "optimizer/v", REAL_FILE_TYPE, REAL_MEM_TYPE,
                        sizeof(ts_real), job->adam_v, total, job->v_sum, "square of the gradient's",
                        "second moment (running mean of squared gradients), flat, parameter order",
                        err, errlen);
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /optimizer", io->path);
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st != TS_IO_OK) return st;

    st = create_group(io, io->file, "state",
                      "training state besides parameters; step, tokens_seen and data_position "
                      "are attributes of the root group",
                      &group, err, errlen);
    if (st != TS_IO_OK) return st;
    st = write_flat(io, group, "rng", "state/rng", H5T_STD_U64LE, H5T_NATIVE_UINT64,
                    sizeof(uint64_t), job->state->rng, (hsize_t)job->state->rng_words, job->rng_sum,
                    "dimensionless", "random number generator state words", err, errlen);
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /state", io->path);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status write_extras(const io_ctx *io, const write_job *job, char *err, size_t errlen) {
    hid_t group;
    ts_io_status st = create_group(io, io->file, "extras",
                                   "architecture-specific state: layout attribute 'replicated' "
                                   "(one copy, 1-D) or 'per_rank' (row r from rank r, 2-D)",
                                   &group, err, errlen);
    if (st != TS_IO_OK) return st;
    for (int i = 0; st == TS_IO_OK && i < job->n_extras; i++) {
        const ts_checkpoint_extra *x = &job->extras[i];
        char shown[300];
        snprintf(shown, sizeof shown, "extras/%s", x->name);
        const uint64_t *sums = job->extra_sums + (size_t)i * (size_t)io->size;
        size_t elem = type_size(x->type);
        if (x->layout == TS_CKPT_REPLICATED) {
            st = write_flat(io, group, x->name, shown, file_type_of(x->type), mem_type_of(x->type),
                            elem, x->data, (hsize_t)x->count, sums[0], x->units, x->description,
                            err, errlen);
            if (st != TS_IO_OK) break;
        } else {
            hsize_t dims[2] = {(hsize_t)io->size, (hsize_t)x->count};
            hid_t dset;
            st = create_dataset(io, group, x->name, shown, file_type_of(x->type), 2, dims, x->units,
                                x->description, &dset, err, errlen);
            if (st != TS_IO_OK) break;
            if (write_uint64_array_attr(dset, "checksums", sums, (hsize_t)io->size) != TS_IO_OK)
                st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write checksums of %s",
                                io->path, shown);
            st = ts_io_agree(io->comm, st, err, errlen);
            if (st == TS_IO_OK)
                st = transfer(io, dset, mem_type_of(x->type), elem, true, x->data,
                              (hsize_t)io->rank * dims[1], dims[1], 1, shown, err, errlen);
            if (H5Dclose(dset) < 0 && st == TS_IO_OK)
                st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, shown);
            st = ts_io_agree(io->comm, st, err, errlen);
        }
        if (st != TS_IO_OK) break;
        /* The layout and type are attributes, so a reader can check them
         * against what it expects before reading. */
        hid_t dset = H5Dopen2(group, x->name, H5P_DEFAULT);
        ts_io_status attr_st = TS_IO_OK;
        if (dset < 0 || ts_h5_write_string_attr(dset, "layout", layout_name(x->layout)) < 0 ||
            ts_h5_write_string_attr(dset, "type", type_name(x->type)) < 0)
            attr_st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write layout of %s",
                                 io->path, shown);
        if (dset >= 0 && H5Dclose(dset) < 0 && attr_st == TS_IO_OK)
            attr_st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, shown);
        st = ts_io_agree(io->comm, attr_st, err, errlen);
    }
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /extras", io->path);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* Rank 0's config text, on every rank, so every rank writes the same attribute. */
static ts_io_status share_config(MPI_Comm comm, int rank, const char *mine, char **out, char *err,
                                 size_t errlen) {
    long long len = rank == 0 && mine ? (long long)strlen(mine) : 0;
    *out = NULL;
    if (MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "checkpoint: MPI_Bcast of the config length failed");
    ts_io_status st = len < INT_MAX ? TS_IO_OK
                                    : ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                                 "checkpoint: config text over 2 GB");
    if (st == TS_IO_OK && !(*out = malloc((size_t)len + 1)))
        st = ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                        "checkpoint: out of memory for the config text");
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        free(*out);
        *out = NULL;
        return st;
    }
    if (rank == 0 && len) memcpy(*out, mine, (size_t)len);
    (*out)[len] = '\0';
    if (len && MPI_Bcast(*out, (int)len, MPI_CHAR, 0, comm) != MPI_SUCCESS) {
        free(*out);
        *out = NULL;
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "checkpoint: MPI_Bcast of the config text failed");
    }
    return TS_IO_OK;
}

/* Rank 0: deletes complete checkpoints older than `step` beyond the newest
 * keep_last - 1 of them, marker first so a half-deleted one is incomplete,
 * never a complete file with missing data. */
static ts_io_status prune(const char *run_dir, long step, int keep_last, int *removed, char *err,
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
        char data[TS_CHECKPOINT_PATH_MAX], marker[TS_CHECKPOINT_PATH_MAX];
        if ((st = join_path(data, sizeof data, run_dir, list.items[i].name, err, errlen)) !=
                TS_IO_OK ||
            (st = add_suffix(marker, sizeof marker, data, MARKER_SUFFIX, err, errlen)) != TS_IO_OK)
            break;
        if (unlink(marker) != 0 || (unlink(data) != 0 && errno != ENOENT))
            st =
                ts_io_fail(err, errlen, TS_IO_ERR_IO,
                           "checkpoint of step %ld is complete, but deleting the old %s failed: %s",
                           step, data, strerror(errno));
        else
            (*removed)++;
    }
    free(list.items);
    if (st == TS_IO_OK && *removed) st = sync_dir(run_dir, err, errlen);
    return st;
}

/* Rank 0, after every rank has closed the temporary file: make it durable,
 * give it its final name, then mark it complete, then prune. */
static ts_io_status commit(const char *run_dir, const char *tmp, const char *final_path,
                           const char *marker, long step, bool replacing, int keep_last,
                           int64_t *bytes, int *removed, char *err, size_t errlen) {
    ts_io_status st = sync_file(tmp, err, errlen);
    if (st != TS_IO_OK) return st;
    struct stat info;
    if (stat(tmp, &info) != 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot stat %s: %s", tmp, strerror(errno));
    *bytes = (int64_t)info.st_size;
    /* Replacing a complete checkpoint: unmark it first, so no moment exists
     * in which the marker vouches for a file that is being swapped. */
    if (replacing && unlink(marker) != 0 && errno != ENOENT)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot remove the old marker %s: %s", marker,
                          strerror(errno));
    if (rename(tmp, final_path) != 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot rename %s to %s: %s", tmp, final_path,
                          strerror(errno));
    if ((st = sync_dir(run_dir, err, errlen)) != TS_IO_OK) return st;
    if ((st = write_marker(marker, base_name(final_path), step, *bytes, err, errlen)) != TS_IO_OK)
        return st;
    if ((st = sync_dir(run_dir, err, errlen)) != TS_IO_OK) return st;
    return prune(run_dir, step, keep_last, removed, err, errlen);
}

/* Rank 0: the run directory exists (created if missing) and step has no
 * complete checkpoint unless overwriting. */
static ts_io_status prepare_dir(const char *run_dir, const char *final_path, const char *marker,
                                bool overwrite, bool *replacing, char *err, size_t errlen) {
    struct stat info;
    if (stat(run_dir, &info) != 0) {
        if (errno != ENOENT || mkdir(run_dir, 0777) != 0)
            return ts_io_fail(err, errlen, TS_IO_ERR_MISSING, "cannot create run directory %s: %s",
                              run_dir, strerror(errno));
    } else if (!S_ISDIR(info.st_mode)) {
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "run directory %s is not a directory",
                          run_dir);
    }
    *replacing = stat(marker, &info) == 0 && stat(final_path, &info) == 0;
    if (*replacing && !overwrite)
        return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS,
                          "%s already exists and is complete; not overwriting it", final_path);
    return TS_IO_OK;
}

static ts_io_status write_impl(MPI_Comm comm, const char *run_dir, const ts_param_table *table,
                               const ts_real *params, const ts_real *adam_m, const ts_real *adam_v,
                               const ts_checkpoint_state *state, const ts_checkpoint_extra *extras,
                               int n_extras, const ts_checkpoint_options *options,
                               ts_checkpoint_report *report, char *err, size_t errlen) {
    io_ctx io = {.comm = comm, .file = -1, .dxpl = -1};
    if (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
        MPI_Comm_size(comm, &io.size) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Comm_rank/size failed");
    const ts_checkpoint_options defaults = {0};
    if (!options) options = &defaults;
    io.max_piece_bytes =
        options->max_piece_bytes ? options->max_piece_bytes : DEFAULT_MAX_PIECE_BYTES;

    ts_io_status st = TS_IO_OK;
    if (!run_dir || !params || !state)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint: no run directory, parameters or state");
    else if (state->step < 0 || state->rng_words < 0 || (state->rng_words > 0 && !state->rng))
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint: step %ld and %d RNG words (%s) are not valid", state->step,
                        state->rng_words, state->rng ? "given" : "missing");
    if (st == TS_IO_OK) st = check_table(table, err, errlen);
    if (st == TS_IO_OK) st = check_extras(extras, n_extras, err, errlen);
    char final_path[TS_CHECKPOINT_PATH_MAX], tmp[TS_CHECKPOINT_PATH_MAX],
        marker[TS_CHECKPOINT_PATH_MAX];
    if (st == TS_IO_OK)
        st = ts_checkpoint_path(final_path, sizeof final_path, run_dir, state->step, err, errlen);
    if (st == TS_IO_OK) st = add_suffix(tmp, sizeof tmp, final_path, TMP_SUFFIX, err, errlen);
    if (st == TS_IO_OK)
        st = add_suffix(marker, sizeof marker, final_path, MARKER_SUFFIX, err, errlen);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) return st;
    snprintf(report->path, sizeof report->path, "%s", final_path);
    report->step = state->step;
    io.path = tmp;

    write_job job = {.table = table,
                     .params = params,
                     .adam_m = adam_m,
                     .adam_v = adam_v,
                     .state = state,
                     .extras = extras,
                     .n_extras = n_extras,
                     .prov = options->provenance};
    ts_provenance collected = {0};
    bool own_prov = !job.prov;
    char *config = NULL;
    hid_t fapl = -1;
    bool created = false, replacing = false;
    if (own_prov) {
        st = ts_provenance_collect(comm, options->threads_per_rank, &collected, err, errlen);
        if (st != TS_IO_OK) return st;
        job.prov = &collected;
    }
    if ((st = share_config(comm, io.rank, state->config_text, &config, err, errlen)) != TS_IO_OK)
        goto done;
    job.config = config;
    /* The provenance may have been collected at the start of the run; the
     * time of this checkpoint is rank 0's clock now, the same on every rank. */
    if (io.rank == 0) utc_now(job.written_utc, sizeof job.written_utc);
    if (MPI_Bcast(job.written_utc, (int)sizeof job.written_utc, MPI_CHAR, 0, comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Bcast of the time failed");
        goto done;
    }
    if ((st = compute_checksums(&io, &job, err, errlen)) != TS_IO_OK) goto done;

    st = io.rank == 0
             ? prepare_dir(run_dir, final_path, marker, options->overwrite, &replacing, err, errlen)
             : TS_IO_OK;
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;

    /* The HDF5 part, timed for the bandwidth report. */
    if (MPI_Barrier(comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Barrier failed");
        goto done;
    }
    double io_start = MPI_Wtime();
    created = true; /* from here a failure must remove the temporary file */
    fapl = make_fapl(comm);
    io.dxpl = make_collective_dxpl();
    if (fapl < 0 || io.dxpl < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot set up MPI-IO properties", tmp);
    else if ((io.file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s", tmp);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    if ((st = write_root_attrs(&io, &job, err, errlen)) != TS_IO_OK) goto done;
    if ((st = write_params(&io, &job, err, errlen)) != TS_IO_OK) goto done;
    if ((st = write_optimizer_and_state(&io, &job, err, errlen)) != TS_IO_OK) goto done;
    if ((st = write_extras(&io, &job, err, errlen)) != TS_IO_OK) goto done;
    /* With MPI-IO, H5Fflush ends in MPI_File_sync on every rank: the data is
     * on stable storage before rank 0 gives it its final name. */
    if (H5Fflush(io.file, H5F_SCOPE_GLOBAL) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot flush", tmp);
    herr_t closed = H5Fclose(io.file);
    io.file = -1;
    if (closed < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close", tmp);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    report->io_seconds = max_over_ranks(comm, MPI_Wtime() - io_start);
    if (MPI_Barrier(comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Barrier failed");
        goto done;
    }

    long long outcome[2] = {0, 0}; /* bytes, removed */
    created = false;               /* every rank has closed it: rank 0 alone handles it now */
    if (io.rank == 0) {
        int64_t bytes = 0;
        int removed = 0;
        st = commit(run_dir, tmp, final_path, marker, state->step, replacing, options->keep_last,
                    &bytes, &removed, err, errlen);
        if (st != TS_IO_OK) unlink(tmp); /* gone already if the rename happened */
        outcome[0] = bytes;
        outcome[1] = removed;
    }
    if (MPI_Bcast(outcome, 2, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS && st == TS_IO_OK)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Bcast failed");
    st = ts_io_agree(comm, st, err, errlen);
    report->bytes = outcome[0];
    report->removed = (int)outcome[1];
    report->bandwidth = report->io_seconds > 0 ? (double)report->bytes / report->io_seconds : 0;

done:
    if (io.file >= 0) H5Fclose(io.file);
    if (io.dxpl >= 0) H5Pclose(io.dxpl);
    if (fapl >= 0) H5Pclose(fapl);
    /* A failed write leaves no temporary file behind, removed once every
     * rank has closed it. (A failure after the rename leaves an unmarked
     * file, which finders ignore and the next write of this step replaces.) */
    if (st != TS_IO_OK && created) {
        MPI_Barrier(comm);
        if (io.rank == 0) unlink(tmp);
    }
    free(job.extra_sums);
    free(config);
    if (own_prov) ts_provenance_free(&collected);
    return st;
}

ts_io_status ts_checkpoint_write(MPI_Comm comm, const char *run_dir, const ts_param_table *table,
                                 const ts_real *params, const ts_real *adam_m,
                                 const ts_real *adam_v, const ts_checkpoint_state *state,
                                 const ts_checkpoint_extra *extras, int n_extras,
                                 const ts_checkpoint_options *options, ts_checkpoint_report *report,
                                 char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    double start = MPI_Wtime();
    ts_checkpoint_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    ts_io_status st = write_impl(comm, run_dir, table, params, adam_m, adam_v, state, extras,
                                 n_extras, options, report, err, errlen);
    report->total_seconds = max_over_ranks(comm, MPI_Wtime() - start);
    ts_h5_quiet_end(quiet);
    return st;
}

/* ---------------------------------------------------------------- finding */

ts_io_status ts_checkpoint_find_latest(MPI_Comm comm, const char *run_dir, char *path,
                                       size_t pathlen, long *step, char *err, size_t errlen) {
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
        if (st == TS_IO_OK && list.count == 0)
            st = ts_io_fail(err, errlen, TS_IO_NOT_FOUND, "no complete checkpoint in %s", run_dir);
        else if (st == TS_IO_OK) {
            found.step = list.items[0].step;
            st = join_path(found.path, sizeof found.path, run_dir, list.items[0].name, err, errlen);
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

/* ---------------------------------------------------------------- reading */

/* Opens a complete checkpoint read-only on every rank and checks that it is
 * one of ours, in a format version and element type this build reads. */
static ts_io_status open_checkpoint(io_ctx *io, int64_t *bytes, char *err, size_t errlen) {
    ts_io_status st = check_complete(io->comm, io->rank, io->path, bytes, err, errlen);
    if (st != TS_IO_OK) return st;
    hid_t fapl = make_fapl(io->comm);
    io->dxpl = make_collective_dxpl();
    if (fapl < 0 || io->dxpl < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot set up MPI-IO properties", io->path);
    else if ((io->file = H5Fopen(io->path, H5F_ACC_RDONLY, fapl)) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_NOT_HDF5,
                        "%s cannot be opened as HDF5: not an HDF5 file, or damaged", io->path);
    if (fapl >= 0) H5Pclose(fapl);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;

    char *format = NULL, *element = NULL;
    int64_t version = 0;
    if (ts_h5_read_string_attr(io->file, "format", &format) < 0 || strcmp(format, FORMAT_NAME))
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                        "%s is HDF5 but not a thinkscale checkpoint (root attribute format is %s)",
                        io->path, format ? format : "missing");
    else if (ts_h5_read_int64_attr(io->file, "format_version", &version) < 0 ||
             version != TS_CHECKPOINT_FORMAT_VERSION)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                        "%s has checkpoint format version %" PRId64 "; this build reads version %d",
                        io->path, version, TS_CHECKPOINT_FORMAT_VERSION);
    else if (ts_h5_read_string_attr(io->file, "element_type", &element) < 0)
        st =
            ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no element_type attribute", io->path);
    else if (strcmp(element, TS_REAL_NAME))
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                        "%s holds %s parameters but this build uses %s: load it with the %s build",
                        io->path, element, TS_REAL_NAME, element);
    free(format);
    free(element);
    return ts_io_agree(io->comm, st, err, errlen);
}

static void close_io(io_ctx *io) {
    if (io->file >= 0) H5Fclose(io->file);
    if (io->dxpl >= 0) H5Pclose(io->dxpl);
    io->file = io->dxpl = -1;
}

static bool dataset_exists(hid_t loc, const char *path) {
    /* H5Lexists on "a/b" fails rather than returning 0 when "a" is missing. */
    const char *slash = strchr(path, '/');
    if (slash) {
        char parent[256];
        size_t len = (size_t)(slash - path);
        if (len >= sizeof parent) return false;
        memcpy(parent, path, len);
        parent[len] = '\0';
        if (H5Lexists(loc, parent, H5P_DEFAULT) <= 0) return false;
    }
    return H5Lexists(loc, path, H5P_DEFAULT) > 0;
}

static ts_io_status read_header(io_ctx *io, ts_checkpoint_info *info, char *err, size_t errlen) {
    int64_t values[6] = {0};
    const char *names[6] = {"step",  "tokens_seen", "data_position",
                            "ranks", "param_count", "param_total"};
    ts_io_status st = TS_IO_OK;
    for (int i = 0; i < 6 && st == TS_IO_OK; i++)
        if (ts_h5_read_int64_attr(io->file, names[i], &values[i]) < 0)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no integer attribute %s",
                            io->path, names[i]);
    info->step = (long)values[0];
    info->tokens_seen = values[1];
    info->data_position = values[2];
    info->ranks = (int)values[3];
    info->param_count = (int)values[4];
    info->param_total = values[5];
    snprintf(info->element_type, sizeof info->element_type, "%s", TS_REAL_NAME);
    if (st == TS_IO_OK && ts_h5_read_string_attr(io->file, "config", &info->config_text) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no config attribute", io->path);
    info->has_adam_m = dataset_exists(io->file, "optimizer/m");
    info->has_adam_v = dataset_exists(io->file, "optimizer/v");
    info->rng_words = 0;
    if (st == TS_IO_OK) {
        hid_t dset = dataset_exists(io->file, "state/rng")
                         ? H5Dopen2(io->file, "state/rng", H5P_DEFAULT)
                         : -1;
        hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
        hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
        if (n < 0 || n > INT_MAX)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no readable state/rng dataset",
                            io->path);
        info->rng_words = (int)n;
        if (space >= 0) H5Sclose(space);
        if (dset >= 0) H5Dclose(dset);
    }
    return ts_io_agree(io->comm, st, err, errlen);
}

void ts_checkpoint_info_free(ts_checkpoint_info *info) {
    if (!info) return;
    free(info->config_text);
    info->config_text = NULL;
}

ts_io_status ts_checkpoint_read_info(MPI_Comm comm, const char *path, ts_checkpoint_info *info,
                                     char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    io_ctx io = {.comm = comm, .file = -1, .dxpl = -1, .path = path};
    memset(info, 0, sizeof *info);
    ts_io_status st = TS_IO_OK;
    if (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
        MPI_Comm_size(comm, &io.size) != MPI_SUCCESS)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Comm_rank/size failed");
    else if (!path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint info: no path");
    if (st == TS_IO_OK) st = open_checkpoint(&io, &info->bytes, err, errlen);
    if (st == TS_IO_OK) st = read_header(&io, info, err, errlen);
    close_io(&io);
    if (st != TS_IO_OK) ts_checkpoint_info_free(info);
    ts_h5_quiet_end(quiet);
    return st;
}

typedef struct link_search {
    const ts_param_table *table;
    char unknown[256];
} link_search;

static herr_t find_unknown_tensor(hid_t group, const char *name, const H5L_info_t *info,
                                  void *data) {
    (void)group;
    (void)info;
    link_search *search = data;
    if (ts_param_table_find(search->table, name) >= 0) return 0;
    snprintf(search->unknown, sizeof search->unknown, "%s", name);
    return 1; /* stop */
}

/* Checks a dataset's element type and dimensions against what the caller
 * expects; the message names the dataset and both shapes. */
static ts_io_status check_dataset(const io_ctx *io, hid_t dset, const char *shown,
                                  ts_ckpt_type type, int ndim, const hsize_t *dims,
                                  const char *what_expects, char *err, size_t errlen) {
    hid_t stored = H5Dget_type(dset), space = H5Dget_space(dset);
    ts_io_status st = TS_IO_OK;
    hsize_t found[H5S_MAX_RANK];
    int found_ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (stored < 0 || found_ndim < 0 || H5Sget_simple_extent_dims(space, found, NULL) < 0) {
        st = ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot read the type and shape of %s",
                        io->path, shown);
    } else if (!stored_type_matches(stored, type)) {
        char stored_name[32];
        describe_stored_type(stored_name, sizeof stored_name, stored);
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH, "%s: %s is stored as %s; %s %s", io->path,
                        shown, stored_name, what_expects, type_name(type));
    } else {
        bool same = found_ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = found[i] == dims[i];
        if (!same) {
            char have[96], want[96];
            format_shape(have, sizeof have, found_ndim, found);
            format_shape(want, sizeof want, ndim, dims);
            st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                            "%s: %s has shape %s in the checkpoint but %s in %s", io->path, shown,
                            have, want, what_expects);
        }
    }
    if (stored >= 0) H5Tclose(stored);
    if (space >= 0) H5Sclose(space);
    return st;
}

/* Every tensor of the table, and nothing else, with the same shape and
 * offset. Opens the datasets into dsets (closed by the caller). */
static ts_io_status verify_params(const io_ctx *io, hid_t group, const ts_param_table *t,
                                  hid_t *dsets, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    H5G_info_t ginfo;
    int64_t total = 0;
    if (H5Gget_info(group, &ginfo) < 0 || ts_h5_read_int64_attr(group, "total", &total) < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot read /params", io->path);
    link_search search = {.table = t, .unknown = {0}};
    hsize_t at = 0;
    if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &at, find_unknown_tensor, &search) < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot list /params", io->path);
    if (search.unknown[0])
        return ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                          "%s has tensor '%s', which the model does not have (checkpoint: %llu "
                          "tensors, model: %d)",
                          io->path, search.unknown, (unsigned long long)ginfo.nlinks, t->count);
    for (int i = 0; i < t->count && st == TS_IO_OK; i++) {
        const ts_param_entry *e = &t->entries[i];
        char shown[TS_PARAM_NAME_MAX + 16];
        snprintf(shown, sizeof shown, "tensor '%s'", e->name);
        if (H5Lexists(group, e->name, H5P_DEFAULT) <= 0) {
            st = ts_io_fail(
                err, errlen, TS_IO_ERR_MISMATCH,
                "%s lacks tensor '%s' of the model (checkpoint: %llu tensors, model: %d)", io->path,
                e->name, (unsigned long long)ginfo.nlinks, t->count);
            break;
        }
        if ((dsets[i] = H5Dopen2(group, e->name, H5P_DEFAULT)) < 0) {
            st = ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open params/%s", io->path,
                            e->name);
            break;
        }
        hsize_t dims[4];
        for (int d = 0; d < e->ndim; d++) dims[d] = (hsize_t)e->shape[d];
        st = check_dataset(io, dsets[i], shown, TS_CKPT_REAL, e->ndim, dims, "the model", err,
                           errlen);
        int64_t offset = -1;
        if (st == TS_IO_OK &&
            (ts_h5_read_int64_attr(dsets[i], "offset", &offset) < 0 || offset != e->offset))
            st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                            "%s: tensor '%s' is at offset %" PRId64
                            " of the flat buffer in the checkpoint but %ld in the model (the "
                            "tensors are in a different order)",
                            io->path, e->name, offset, e->offset);
    }
    if (st == TS_IO_OK && total != t->total)
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                        "%s holds %" PRId64 " parameter elements, the model %ld", io->path, total,
                        t->total);
    return st;
}

static ts_io_status verify_checksum(const io_ctx *io, hid_t loc, const char *attr,
                                    const char *shown, const void *data, size_t bytes, char *err,
                                    size_t errlen) {
    uint64_t stored = 0;
    if (ts_h5_read_uint64_attr(loc, attr, &stored) < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has no %s attribute", io->path,
                          shown, attr);
    uint64_t computed = ts_checksum64(data, bytes);
    if (computed != stored)
        return ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                          "%s: %s does not match its checksum (stored %016" PRIx64
                          ", read %016" PRIx64 "): the file is corrupt",
                          io->path, shown, stored, computed);
    return TS_IO_OK;
}

/* Reads a whole flat dataset on every rank and checks its checksum. */
static ts_io_status read_flat(const io_ctx *io, const char *path_in_file, ts_ckpt_type type,
                              void *data, hsize_t count, char *err, size_t errlen) {
    hid_t dset = H5Dopen2(io->file, path_in_file, H5P_DEFAULT);
    ts_io_status st = dset < 0 ? ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s",
                                            io->path, path_in_file)
                               : check_dataset(io, dset, path_in_file, type, 1, &count,
                                               "the caller expects", err, errlen);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) == TS_IO_OK)
        st = transfer(io, dset, mem_type_of(type), type_size(type), false, data, 0, count, 1,
                      path_in_file, err, errlen);
    if (st == TS_IO_OK)
        st = verify_checksum(io, dset, "checksum", path_in_file, data,
                             (size_t)count * type_size(type), err, errlen);
    if (dset >= 0) H5Dclose(dset);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* Checks one requested extra against the file, before any data is read. */
static ts_io_status verify_extra(const io_ctx *io, const ts_checkpoint_extra *x, char *err,
                                 size_t errlen) {
    char shown[300];
    snprintf(shown, sizeof shown, "extras/%s", x->name);
    if (!dataset_exists(io->file, shown))
        return ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH, "%s has no %s", io->path, shown);
    hid_t dset = H5Dopen2(io->file, shown, H5P_DEFAULT);
    if (dset < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s", io->path, shown);
    char *layout = NULL;
    ts_io_status st = TS_IO_OK;
    if (ts_h5_read_string_attr(dset, "layout", &layout) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has no layout attribute", io->path,
                        shown);
    else if (strcmp(layout, layout_name(x->layout)))
        st =
            ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH, "%s: %s is %s state, the caller expects %s",
                       io->path, shown, layout, layout_name(x->layout));
    free(layout);
    if (st == TS_IO_OK && x->layout == TS_CKPT_PER_RANK) {
        hid_t space = H5Dget_space(dset);
        hsize_t dims[2] = {0, 0};
        if (space < 0 || H5Sget_simple_extent_ndims(space) != 2 ||
            H5Sget_simple_extent_dims(space, dims, NULL) < 0)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s is not a 2-D dataset", io->path,
                            shown);
        else if (dims[0] != (hsize_t)io->size)
            st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                            "%s: %s is per-rank state of %llu ranks, but this run has %d: resume "
                            "it on %llu ranks",
                            io->path, shown, (unsigned long long)dims[0], io->size,
                            (unsigned long long)dims[0]);
        if (space >= 0) H5Sclose(space);
    }
    if (st == TS_IO_OK) {
        hsize_t dims[2] = {(hsize_t)io->size, (hsize_t)x->count};
        if (x->layout == TS_CKPT_PER_RANK)
            st =
                check_dataset(io, dset, shown, x->type, 2, dims, "the caller expects", err, errlen);
        else
            st = check_dataset(io, dset, shown, x->type, 1, dims + 1, "the caller expects", err,
                               errlen);
    }
    H5Dclose(dset);
    return st;
}

static ts_io_status read_extra(const io_ctx *io, const ts_checkpoint_extra *x, char *err,
                               size_t errlen) {
    char shown[300];
    snprintf(shown, sizeof shown, "extras/%s", x->name);
    if (x->layout == TS_CKPT_REPLICATED)
        return read_flat(io, shown, x->type, x->data, (hsize_t)x->count, err, errlen);
    uint64_t *sums = malloc((size_t)io->size * sizeof *sums);
    ts_io_status st =
        sums ? TS_IO_OK : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory", io->path);
    /* Agreed before any metadata read: those are collective. */
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    hid_t dset = H5Dopen2(io->file, shown, H5P_DEFAULT);
    if (dset < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s", io->path, shown);
    else if (read_uint64_array_attr(dset, "checksums", sums, (hsize_t)io->size) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has no checksums for %d ranks",
                        io->path, shown, io->size);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) == TS_IO_OK)
        st = transfer(io, dset, mem_type_of(x->type), type_size(x->type), false, x->data,
                      (hsize_t)io->rank * (hsize_t)x->count, (hsize_t)x->count, 1, shown, err,
                      errlen);
    if (st == TS_IO_OK) {
        uint64_t computed = ts_checksum64(x->data, (size_t)x->count * type_size(x->type));
        if (computed != sums[io->rank])
            st = ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                            "%s: row %d of %s does not match its checksum: the file is corrupt",
                            io->path, io->rank, shown);
    }
    free(sums);
    if (dset >= 0) H5Dclose(dset);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status read_impl(io_ctx *io, const ts_param_table *table, ts_real *params,
                              ts_real *adam_m, ts_real *adam_v, ts_checkpoint_state *state,
                              ts_checkpoint_extra *extras, int n_extras,
                              ts_checkpoint_report *report, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    if (!params)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint read: no parameter buffer");
    else if (state && (state->rng_words < 0 || (state->rng_words > 0 && !state->rng)))
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint read: %d RNG words without a buffer", state->rng_words);
    if (st == TS_IO_OK) st = check_table(table, err, errlen);
    if (st == TS_IO_OK) st = check_extras(extras, n_extras, err, errlen);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;

    if (MPI_Barrier(io->comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint read: MPI_Barrier failed");
    double io_start = MPI_Wtime();
    int64_t loaded = 0;
    io->loaded = &loaded;
    if ((st = open_checkpoint(io, &report->bytes, err, errlen)) != TS_IO_OK) return st;
    ts_checkpoint_info info = {0};
    st = read_header(io, &info, err, errlen);
    ts_checkpoint_info_free(&info); /* only the config text was allocated */
    if (st != TS_IO_OK) return st;
    report->step = info.step;

    /* Stage 1: everything must fit before any byte of data is read. */
    hid_t *dsets = malloc((size_t)table->count * sizeof *dsets);
    if (dsets)
        for (int i = 0; i < table->count; i++) dsets[i] = -1;
    hid_t params_group = -1;
    if (!dsets) st = ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory", io->path);
    /* Agreed before any metadata read: those are collective. */
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st == TS_IO_OK && (H5Lexists(io->file, "params", H5P_DEFAULT) <= 0 ||
                           (params_group = H5Gopen2(io->file, "params", H5P_DEFAULT)) < 0))
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no /params group", io->path);
    if (st == TS_IO_OK) st = verify_params(io, params_group, table, dsets, err, errlen);
    if (st == TS_IO_OK && adam_m && !info.has_adam_m)
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                        "%s has no optimizer/m (it was written without first moments)", io->path);
    if (st == TS_IO_OK && adam_v && !info.has_adam_v)
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                        "%s has no optimizer/v (it was written without second moments)", io->path);
    if (st == TS_IO_OK && state && info.rng_words != state->rng_words)
        st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                        "%s: state/rng has %d words, the caller's generator %d", io->path,
                        info.rng_words, state->rng_words);
    for (int i = 0; i < n_extras && st == TS_IO_OK; i++)
        st = verify_extra(io, &extras[i], err, errlen);
    st = ts_io_agree(io->comm, st, err, errlen);

    /* Stage 2: the data, each role checked against its checksum. */
    for (int i = 0; st == TS_IO_OK && i < table->count; i++) {
        const ts_param_entry *e = &table->entries[i];
        hsize_t row = (hsize_t)(e->numel / e->shape[0]);
        char shown[TS_PARAM_NAME_MAX + 16];
        snprintf(shown, sizeof shown, "params/%s", e->name);
        st = transfer(io, dsets[i], REAL_MEM_TYPE, sizeof(ts_real), false, params + e->offset, 0,
                      (hsize_t)e->numel, row, shown, err, errlen);
    }
    if (st == TS_IO_OK)
        st = verify_checksum(io, params_group, "checksum", "the parameters", params,
                             (size_t)table->total * sizeof(ts_real), err, errlen);
    st = ts_io_agree(io->comm, st, err, errlen);
    if (dsets)
        for (int i = 0; i < table->count; i++)
            if (dsets[i] >= 0) H5Dclose(dsets[i]);
    free(dsets);
    if (params_group >= 0) H5Gclose(params_group);
    if (st == TS_IO_OK && adam_m)
        st = read_flat(io, "optimizer/m", TS_CKPT_REAL, adam_m, (hsize_t)table->total, err, errlen);
    if (st == TS_IO_OK && adam_v)
        st = read_flat(io, "optimizer/v", TS_CKPT_REAL, adam_v, (hsize_t)table->total, err, errlen);
    if (st == TS_IO_OK && state)
        st = read_flat(io, "state/rng", TS_CKPT_UINT64, state->rng, (hsize_t)state->rng_words, err,
                       errlen);
    for (int i = 0; i < n_extras && st == TS_IO_OK; i++)
        st = read_extra(io, &extras[i], err, errlen);
    if (st != TS_IO_OK) return st;

    herr_t closed = H5Fclose(io->file);
    io->file = -1;
    if (closed < 0) st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close", io->path);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    report->io_seconds = max_over_ranks(io->comm, MPI_Wtime() - io_start);
    /* What was loaded, not the file size: a caller may skip the moments. */
    report->bandwidth = report->io_seconds > 0 ? (double)loaded / report->io_seconds : 0;
    if (state) {
        state->step = info.step;
        state->tokens_seen = info.tokens_seen;
        state->data_position = info.data_position;
    }
    return TS_IO_OK;
}

ts_io_status ts_checkpoint_read(MPI_Comm comm, const char *path, const ts_param_table *table,
                                ts_real *params, ts_real *adam_m, ts_real *adam_v,
                                ts_checkpoint_state *state, ts_checkpoint_extra *extras,
                                int n_extras, ts_checkpoint_report *report, char *err,
                                size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    double start = MPI_Wtime();
    /* path may point into *report (e.g. the report of the write): copy it
     * before the report is cleared. */
    char own_path[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st = TS_IO_OK;
    if (!path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint read: no path");
    else if (strlen(path) >= sizeof own_path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint read: path longer than %zu bytes",
                        sizeof own_path - 1);
    else
        memcpy(own_path, path, strlen(path) + 1);
    ts_checkpoint_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    io_ctx io = {.comm = comm,
                 .file = -1,
                 .dxpl = -1,
                 .path = own_path,
                 .max_piece_bytes = DEFAULT_MAX_PIECE_BYTES};
    if (st == TS_IO_OK && (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
                           MPI_Comm_size(comm, &io.size) != MPI_SUCCESS))
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint read: MPI_Comm_rank/size failed");
    if (st == TS_IO_OK) {
        snprintf(report->path, sizeof report->path, "%s", own_path);
        st = read_impl(&io, table, params, adam_m, adam_v, state, extras, n_extras, report, err,
                       errlen);
    }
    close_io(&io);
    report->total_seconds = max_over_ranks(comm, MPI_Wtime() - start);
    ts_h5_quiet_end(quiet);
    return st;
}

ts_io_status ts_checkpoint_read_latest(MPI_Comm comm, const char *run_dir,
                                       const ts_param_table *table, ts_real *params,
                                       ts_real *adam_m, ts_real *adam_v, ts_checkpoint_state *state,
                                       ts_checkpoint_extra *extras, int n_extras,
                                       ts_checkpoint_report *report, char *err, size_t errlen) {
    char path[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st =
        ts_checkpoint_find_latest(comm, run_dir, path, sizeof path, NULL, err, errlen);
    if (st != TS_IO_OK) return st;
    return ts_checkpoint_read(comm, path, table, params, adam_m, adam_v, state, extras, n_extras,
                              report, err, errlen);
}
