#include "io/provenance.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/real.h"

#include "io/build_info.h"

#if defined(__clang__)
#define TS_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define TS_COMPILER "gcc " __VERSION__
#elif defined(__VERSION__)
#define TS_COMPILER __VERSION__
#else
#define TS_COMPILER "unknown"
#endif

/* POSIX defines environ but no header declares it without _GNU_SOURCE. */
extern char **environ;

/* ---------------------------------------------------------------- provenance */

static void copy_string(char *dst, size_t dstlen, const char *src) {
    snprintf(dst, dstlen, "%s", src ? src : "");
}

/* Packs rank 0's SLURM_* variables as "NAME=value\0..." */
static ts_io_status collect_slurm(ts_provenance *prov, char *err, size_t errlen) {
    size_t bytes = 0;
    int count = 0;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "SLURM_", 6) || !strchr(*e, '=')) continue;
        bytes += strlen(*e) + 1;
        count++;
    }
    prov->slurm = malloc(bytes ? bytes : 1);
    if (!prov->slurm)
        return ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                          "provenance: out of memory for %zu bytes of SLURM_* variables", bytes);
    size_t at = 0;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "SLURM_", 6) || !strchr(*e, '=')) continue;
        size_t len = strlen(*e) + 1;
        memcpy(prov->slurm + at, *e, len);
        at += len;
    }
    prov->slurm_bytes = bytes;
    prov->slurm_count = count;
    return TS_IO_OK;
}

static void first_line(char *s) {
    char *nl = strpbrk(s, "\r\n");
    if (nl) *nl = '\0';
}

/* Rank 0's fixed-size fields, sent in one broadcast. */
typedef struct prov_fixed {
    char hostname[256];
    char mpi_library[256];
    char blas_core[64];
    char created_utc[32];
    int threads_per_rank;
    int slurm_count;
    long long slurm_bytes;
} prov_fixed;

ts_io_status ts_provenance_collect(MPI_Comm comm, int threads_per_rank, ts_provenance *prov,
                                   char *err, size_t errlen) {
    memset(prov, 0, sizeof *prov);
    int rank, size;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "provenance: MPI_Comm_rank/size failed");
    prov->ranks = size;
    copy_string(prov->git_commit, sizeof prov->git_commit, ts_git_commit);
    copy_string(prov->compiler, sizeof prov->compiler, TS_COMPILER);
    copy_string(prov->element_type, sizeof prov->element_type, TS_REAL_NAME);
    unsigned major = 0, minor = 0, release = 0;
    H5get_libversion(&major, &minor, &release);
    snprintf(prov->hdf5_version, sizeof prov->hdf5_version, "%u.%u.%u", major, minor, release);

    /* Every rank's host name, to count nodes. */
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) copy_string(host, sizeof host, "unknown");
    char *hosts = malloc((size_t)size * sizeof host);
    ts_io_status st = hosts ? TS_IO_OK
                            : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                                         "provenance: out of memory for %d host names", size);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        free(hosts);
        return st;
    }
    if (MPI_Allgather(host, (int)sizeof host, MPI_CHAR, hosts, (int)sizeof host, MPI_CHAR, comm) !=
        MPI_SUCCESS) {
        free(hosts);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "provenance: MPI_Allgather of host names failed");
    }
    for (int r = 0; r < size; r++) {
        bool seen = false;
        for (int q = 0; q < r && !seen; q++)
            seen = !strcmp(hosts + (size_t)q * sizeof host, hosts + (size_t)r * sizeof host);
        prov->nodes += !seen;
    }
    free(hosts);

    prov_fixed fixed;
    memset(&fixed, 0, sizeof fixed);
    st = TS_IO_OK;
    if (rank == 0) {
        copy_string(fixed.hostname, sizeof fixed.hostname, host);
        int len = 0;
        char library[MPI_MAX_LIBRARY_VERSION_STRING];
        if (MPI_Get_library_version(library, &len) == MPI_SUCCESS) {
            first_line(library);
            copy_string(fixed.mpi_library, sizeof fixed.mpi_library, library);
        } else {
            copy_string(fixed.mpi_library, sizeof fixed.mpi_library, "unknown");
        }
        time_t now = time(NULL);
        struct tm utc;
        if (!gmtime_r(&now, &utc) ||
            !strftime(fixed.created_utc, sizeof fixed.created_utc, "%Y-%m-%dT%H:%M:%SZ", &utc))
            copy_string(fixed.created_utc, sizeof fixed.created_utc, "unknown");
        fixed.threads_per_rank =
            threads_per_rank > 0 ? threads_per_rank : openblas_get_num_threads();
        const char *core = openblas_get_corename();
        copy_string(fixed.blas_core, sizeof fixed.blas_core, core && core[0] ? core : "unknown");
        st = collect_slurm(prov, err, errlen);
        fixed.slurm_count = prov->slurm_count;
        fixed.slurm_bytes = (long long)prov->slurm_bytes;
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        ts_provenance_free(prov);
        return st;
    }
    if (MPI_Bcast(&fixed, (int)sizeof fixed, MPI_BYTE, 0, comm) != MPI_SUCCESS) {
        ts_provenance_free(prov);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "provenance: MPI_Bcast failed");
    }
    copy_string(prov->hostname, sizeof prov->hostname, fixed.hostname);
    copy_string(prov->mpi_library, sizeof prov->mpi_library, fixed.mpi_library);
    copy_string(prov->blas_core, sizeof prov->blas_core, fixed.blas_core);
    copy_string(prov->created_utc, sizeof prov->created_utc, fixed.created_utc);
    prov->threads_per_rank = fixed.threads_per_rank;
    if (rank != 0) {
        prov->slurm_count = fixed.slurm_count;
        prov->slurm_bytes = (size_t)fixed.slurm_bytes;
        prov->slurm = malloc(prov->slurm_bytes ? prov->slurm_bytes : 1);
        st = prov->slurm
                 ? TS_IO_OK
                 : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                              "provenance: out of memory for %zu bytes of SLURM_* variables",
                              prov->slurm_bytes);
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        ts_provenance_free(prov);
        return st;
    }
    if (fixed.slurm_bytes > INT32_MAX) {
        ts_provenance_free(prov);
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "provenance: SLURM_* variables exceed 2 GB");
    }
    if (fixed.slurm_bytes > 0 &&
        MPI_Bcast(prov->slurm, (int)fixed.slurm_bytes, MPI_CHAR, 0, comm) != MPI_SUCCESS) {
        ts_provenance_free(prov);
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "provenance: MPI_Bcast of SLURM_* variables failed");
    }
    return TS_IO_OK;
}

void ts_provenance_free(ts_provenance *prov) {
    free(prov->slurm);
    prov->slurm = NULL;
    prov->slurm_bytes = 0;
    prov->slurm_count = 0;
}

/* ---------------------------------------------------------------- provenance attributes */

static ts_io_status write_impl(hid_t loc, const char *slurm_group, const ts_provenance *prov,
                               const char *file_for_errors, char *err, size_t errlen);

ts_io_status ts_provenance_write(hid_t loc, const char *slurm_group, const ts_provenance *prov,
                                 const char *file_for_errors, char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    ts_io_status st = write_impl(loc, slurm_group, prov, file_for_errors, err, errlen);
    ts_h5_quiet_end(quiet);
    return st;
}

static ts_io_status write_impl(hid_t loc, const char *slurm_group, const ts_provenance *prov,
                               const char *file_for_errors, char *err, size_t errlen) {
    const char *file = file_for_errors ? file_for_errors : "?";
    struct {
        const char *name;
        const char *value;
    } strings[] = {
        {"hostname", prov->hostname},         {"git_commit", prov->git_commit},
        {"compiler", prov->compiler},         {"element_type", prov->element_type},
        {"hdf5_version", prov->hdf5_version}, {"mpi_library", prov->mpi_library},
        {"blas_core", prov->blas_core},       {"created_utc", prov->created_utc},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (ts_h5_write_string_attr(loc, strings[i].name, strings[i].value) < 0)
            return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", file,
                              strings[i].name);
    struct {
        const char *name;
        int64_t value;
    } numbers[] = {
        {"ranks", prov->ranks},
        {"nodes", prov->nodes},
        {"threads_per_rank", prov->threads_per_rank},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        if (ts_h5_write_int64_attr(loc, numbers[i].name, numbers[i].value) < 0)
            return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", file,
                              numbers[i].name);
    if (!slurm_group) return TS_IO_OK;

    /* The group is recreated empty so a resumed run does not keep variables
     * of the previous job that this one lacks. */
    htri_t exists = H5Lexists(loc, slurm_group, H5P_DEFAULT);
    if (exists > 0 && H5Ldelete(loc, slurm_group, H5P_DEFAULT) < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot replace group %s", file,
                          slurm_group);
    hid_t group = ts_h5_create_group_path(loc, slurm_group);
    if (group < 0)
        return ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create group %s", file,
                          slurm_group);
    /* Nothing but the variables goes in this group, so iterating over its
     * attributes yields exactly the environment. */
    ts_io_status st = TS_IO_OK;
    const char *entry = prov->slurm;
    for (int i = 0; st == TS_IO_OK && i < prov->slurm_count; i++) {
        size_t len = strlen(entry);
        const char *eq = strchr(entry, '=');
        char name[256];
        size_t name_len = (size_t)(eq - entry);
        if (name_len >= sizeof name) name_len = sizeof name - 1;
        memcpy(name, entry, name_len);
        name[name_len] = '\0';
        if (ts_h5_write_string_attr(group, name, eq + 1) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s/%s", file,
                            slurm_group, name);
        entry += len + 1;
    }
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close group %s", file, slurm_group);
    return st;
}
