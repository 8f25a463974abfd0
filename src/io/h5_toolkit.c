#include "io/h5_toolkit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

const char *ts_io_status_name(ts_io_status status) {
    switch (status) {
    case TS_IO_OK:
        return "ok";
    case TS_IO_NOT_FOUND:
        return "not found";
    case TS_IO_ERR_ARGS:
        return "invalid arguments";
    case TS_IO_ERR_EXISTS:
        return "exists";
    case TS_IO_ERR_MISSING:
        return "missing";
    case TS_IO_ERR_NOT_HDF5:
        return "not HDF5";
    case TS_IO_ERR_FORMAT:
        return "format";
    case TS_IO_ERR_MISMATCH:
        return "mismatch";
    case TS_IO_ERR_CORRUPT:
        return "corrupt";
    case TS_IO_ERR_IO:
        return "I/O error";
    case TS_IO_ERR_NOMEM:
        return "out of memory";
    case TS_IO_ERR_NOSPACE:
        return "no space left";
    case TS_IO_ERR_STRANDED:
        return "failed inside a collective";
    }
    return "?";
}

/* ---------------------------------------------------------------- errors */

ts_io_status ts_io_fail(char *err, size_t errlen, ts_io_status status, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

typedef struct h5_reason {
    char text[256];
} h5_reason;

/* Walking upward, record 0 is the innermost and most specific one ("truncated
 * file: eof = ..." rather than "unable to open file"). */
static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    h5_reason *reason = data;
    if (n == 0 && e->desc) snprintf(reason->text, sizeof reason->text, " (HDF5: %s)", e->desc);
    return 0;
}

void ts_h5_vformat(char *err, size_t errlen, const char *fmt, va_list ap) {
    if (!err || !errlen) return;
    h5_reason reason = {{0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &reason);
    int len = vsnprintf(err, errlen, fmt, ap);
    if (len >= 0 && (size_t)len < errlen)
        snprintf(err + len, errlen - (size_t)len, "%s", reason.text);
}

ts_io_status ts_h5_fail(char *err, size_t errlen, ts_io_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_h5_vformat(err, errlen, fmt, ap);
    va_end(ap);
    return status;
}

ts_h5_quiet ts_h5_quiet_begin(void) {
    ts_h5_quiet saved = {NULL, NULL};
    H5Eget_auto2(H5E_DEFAULT, &saved.func, &saved.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return saved;
}

void ts_h5_quiet_end(ts_h5_quiet saved) {
    H5Eset_auto2(H5E_DEFAULT, saved.func, saved.data);
}

/* Fixed size so every rank can broadcast it without first agreeing on a length. */
#define AGREE_MSG 1024

ts_io_status ts_h5_check_output(const char *target, bool overwrite, const char *format_name,
                                const char *const *legacy_attrs, const char *const *legacy_absent,
                                const char *option, char *err, size_t errlen) {
    struct stat info;
    char dir[4096];
    ts_io_dir_name(target, dir, sizeof dir);
    /* written as a temporary file beside it, then renamed */
    if (stat(dir, &info) != 0 || !S_ISDIR(info.st_mode))
        return ts_io_fail(err, errlen, TS_IO_ERR_MISSING,
                          "cannot write '%s': its directory '%s' does not exist", target, dir);
    if (access(dir, W_OK) != 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot write '%s' in '%s': %s", target, dir,
                          strerror(errno));
    if (stat(target, &info) != 0) return TS_IO_OK;
    if (!overwrite)
        return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS,
                          "'%s' already exists: pass %s to replace it", target, option);
    if (!S_ISREG(info.st_mode))
        return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS,
                          "'%s' is not a file: %s does not replace it", target, option);
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fopen(target, H5F_ACC_RDONLY, H5P_DEFAULT);
    bool ours = false;
    char *format = NULL;
    if (file >= 0 && ts_h5_read_string_attr(file, "format", &format) >= 0) {
        ours = !strcmp(format, format_name);
    } else if (file >= 0 && H5Aexists(file, "format") == 0) { /* written before "format" */
        ours = true;
        for (const char *const *a = legacy_attrs; ours && *a; a++) ours = H5Aexists(file, *a) > 0;
        for (const char *const *a = legacy_absent; ours && a && *a; a++)
            ours = H5Aexists(file, *a) == 0;
    }
    free(format);
    if (file >= 0) H5Fclose(file);
    ts_h5_quiet_end(quiet);
    if (ours) return TS_IO_OK;
    return ts_io_fail(err, errlen, TS_IO_ERR_EXISTS,
                      "'%s' exists and is not a %s file (%s): %s replaces only an earlier result "
                      "of this command; choose another output, or remove the file yourself",
                      target, format_name,
                      file < 0 ? "not a readable HDF5 file" : "another kind of file", option);
}

bool ts_io_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return !strcmp(a, b);
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void ts_io_dir_name(const char *path, char *out, size_t outlen) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, outlen, ".");
    else if (slash == path)
        snprintf(out, outlen, "/");
    else
        snprintf(out, outlen, "%.*s", (int)(slash - path), path);
}

long long ts_io_free_bytes(const char *path) {
    struct statvfs fs;
    if (!path || statvfs(path, &fs) != 0) return -1;
    return (long long)fs.f_bavail * (long long)fs.f_frsize;
}

bool ts_io_errno_is_nospace(int error) {
#ifdef EDQUOT
    if (error == EDQUOT) return true;
#endif
    return error == ENOSPC;
}

ts_io_status ts_io_agree(MPI_Comm comm, ts_io_status local, char *err, size_t errlen) {
    int rank, size;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "MPI_Comm_rank/size failed");
    /* The lowest failing rank speaks for all: MPI_MIN over (failed ? rank : size). */
    int mine = local == TS_IO_OK ? size : rank, first = size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "MPI_Allreduce failed while agreeing on a status");
    if (first == size) return TS_IO_OK;
    struct {
        int status;
        char msg[AGREE_MSG];
    } verdict = {(int)local, {0}};
    if (rank == first && err && errlen) snprintf(verdict.msg, sizeof verdict.msg, "%s", err);
    if (MPI_Bcast(&verdict, (int)sizeof verdict, MPI_BYTE, first, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "MPI_Bcast failed while agreeing on a status");
    if (rank != first) ts_io_fail(err, errlen, (ts_io_status)verdict.status, "%s", verdict.msg);
    return (ts_io_status)verdict.status;
}

/* ---------------------------------------------------------------- checksum */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t mix_word(uint64_t h, uint64_t word) {
    h ^= word;
    h *= FNV_PRIME;
    return h ^ (h >> 32);
}

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

uint64_t ts_checksum64(const void *data, size_t bytes) {
    const unsigned char *p = data;
    uint64_t h = FNV_OFFSET;
    size_t whole = bytes / 8;
    for (size_t i = 0; i < whole; i++) h = mix_word(h, load_le64(p + 8 * i));
    if (bytes % 8) {
        unsigned char tail[8] = {0};
        memcpy(tail, p + 8 * whole, bytes % 8);
        h = mix_word(h, load_le64(tail));
    }
    /* The length goes in last, so dropping trailing zero bytes changes the sum. */
    return mix_word(h, (uint64_t)bytes);
}

/* ---------------------------------------------------------------- attributes */

/* Creates (or first deletes and recreates) a scalar attribute and writes it. */
herr_t ts_h5_write_scalar_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                               const void *value) {
    htri_t exists = H5Aexists(loc, name);
    if (exists < 0) return -1;
    if (exists > 0 && H5Adelete(loc, name) < 0) return -1;
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0) return -1;
    hid_t attr = H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t status = attr < 0 ? -1 : H5Awrite(attr, mem_type, value);
    if (attr >= 0 && H5Aclose(attr) < 0) status = -1;
    if (H5Sclose(space) < 0) status = -1;
    return status;
}

static hid_t utf8_string_type(void) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0) return -1;
    if (H5Tset_size(type, H5T_VARIABLE) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
        H5Tclose(type);
        return -1;
    }
    return type;
}

herr_t ts_h5_write_string_attr(hid_t loc, const char *name, const char *value) {
    hid_t type = utf8_string_type();
    if (type < 0) return -1;
    const char *text = value ? value : "";
    herr_t status = ts_h5_write_scalar_attr(loc, name, type, type, &text);
    if (H5Tclose(type) < 0) status = -1;
    return status;
}

herr_t ts_h5_write_int64_attr(hid_t loc, const char *name, int64_t value) {
    return ts_h5_write_scalar_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

herr_t ts_h5_write_uint64_attr(hid_t loc, const char *name, uint64_t value) {
    return ts_h5_write_scalar_attr(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

herr_t ts_h5_write_double_attr(hid_t loc, const char *name, double value) {
    return ts_h5_write_scalar_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

/* Opens a scalar (or one-element) attribute of the expected class. */
static hid_t open_scalar_attr(hid_t loc, const char *name, H5T_class_t expected) {
    htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) return -1;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return -1;
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    bool ok = type >= 0 && space >= 0 && H5Tget_class(type) == expected &&
              H5Sget_simple_extent_npoints(space) == 1;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (!ok) {
        H5Aclose(attr);
        return -1;
    }
    return attr;
}

/* Any stored integer type, converted by HDF5 to mem_type. */
static herr_t read_integer_attr(hid_t loc, const char *name, hid_t mem_type, void *value) {
    hid_t attr = open_scalar_attr(loc, name, H5T_INTEGER);
    if (attr < 0) return -1;
    herr_t status = H5Aread(attr, mem_type, value);
    if (H5Aclose(attr) < 0) status = -1;
    return status;
}

herr_t ts_h5_read_int64_attr(hid_t loc, const char *name, int64_t *value) {
    return read_integer_attr(loc, name, H5T_NATIVE_INT64, value);
}

herr_t ts_h5_read_uint64_attr(hid_t loc, const char *name, uint64_t *value) {
    return read_integer_attr(loc, name, H5T_NATIVE_UINT64, value);
}

herr_t ts_h5_read_string_attr(hid_t loc, const char *name, char **value) {
    *value = NULL;
    hid_t attr = open_scalar_attr(loc, name, H5T_STRING);
    if (attr < 0) return -1;
    herr_t status = -1;
    hid_t file_type = H5Aget_type(attr);
    htri_t variable = file_type < 0 ? -1 : H5Tis_variable_str(file_type);
    if (variable > 0) {
        hid_t mem_type = utf8_string_type();
        char *text = NULL;
        if (mem_type >= 0 && H5Aread(attr, mem_type, &text) >= 0) {
            *value = strdup(text ? text : "");
            status = *value ? 0 : -1;
            H5free_memory(text);
        }
        if (mem_type >= 0) H5Tclose(mem_type);
    } else if (variable == 0) {
        size_t size = H5Tget_size(file_type);
        hid_t mem_type = H5Tcopy(file_type);
        char *text = size ? calloc(size + 1, 1) : NULL;
        if (mem_type >= 0 && text && H5Tset_strpad(mem_type, H5T_STR_NULLTERM) >= 0 &&
            H5Tset_size(mem_type, size + 1) >= 0 && H5Aread(attr, mem_type, text) >= 0) {
            *value = text;
            text = NULL;
            status = 0;
        }
        free(text);
        if (mem_type >= 0) H5Tclose(mem_type);
    }
    if (file_type >= 0) H5Tclose(file_type);
    if (H5Aclose(attr) < 0) status = -1;
    if (status < 0) {
        free(*value);
        *value = NULL;
    }
    return status;
}

/* ---------------------------------------------------------------- files and groups */

hid_t ts_h5_create_group_path(hid_t loc, const char *path) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0) return -1;
    hid_t group = H5Pset_create_intermediate_group(lcpl, 1) >= 0
                      ? H5Gcreate2(loc, path, lcpl, H5P_DEFAULT, H5P_DEFAULT)
                      : -1;
    H5Pclose(lcpl);
    return group;
}

bool ts_h5_write_array(hid_t loc, const char *name, hid_t type, int ndims, const hsize_t *dims,
                       const void *data, const char *units, const char *description) {
    hid_t space = H5Screate_simple(ndims, dims, NULL);
    if (space < 0) return false;
    hid_t dset = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = dset >= 0 && H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0 &&
              (!units || ts_h5_write_string_attr(dset, "units", units) >= 0) &&
              (!description || ts_h5_write_string_attr(dset, "description", description) >= 0);
    if (dset >= 0) ok = H5Dclose(dset) >= 0 && ok;
    return H5Sclose(space) >= 0 && ok;
}

ts_io_status ts_make_dirs(const char *dir, char *err, size_t errlen) {
    char path[4096];
    if (!dir[0]) return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "empty directory name");
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "directory name too long: '%s'", dir);
    for (char *p = path + 1;; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(path, 0777) && errno != EEXIST)
                return ts_io_fail(err, errlen, TS_IO_ERR_IO, "cannot create directory '%s': %s",
                                  path, strerror(errno));
            if (end) return TS_IO_OK;
            *p = '/';
        }
    }
}
