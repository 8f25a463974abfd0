/* Shared by the files that implement io/checkpoint.h; not for other callers. */
#ifndef TS_CHECKPOINT_INTERNAL_H
#define TS_CHECKPOINT_INTERNAL_H

#include <hdf5.h>

#include "io/checkpoint.h"

#define CKPT_FORMAT_NAME "thinkscale-checkpoint"
#define CKPT_CHECKSUM_NAME "ts_checksum64"
/* MPI-IO counts are int: one request per rank per call stays well under 2 GB. */
#define CKPT_DEFAULT_MAX_PIECE_BYTES ((size_t)1 << 30)

#ifdef TS_DOUBLE
#define CKPT_REAL_MEM_TYPE H5T_NATIVE_DOUBLE
#define CKPT_REAL_FILE_TYPE H5T_IEEE_F64LE
#else
#define CKPT_REAL_MEM_TYPE H5T_NATIVE_FLOAT
#define CKPT_REAL_FILE_TYPE H5T_IEEE_F32LE
#endif

/* ---------------------------------------------------------------- checkpoint_transfer.c */

/* An open checkpoint file and the communicator that shares it. */
typedef struct ckpt_io {
    MPI_Comm comm;
    int rank, size;
    hid_t file;
    hid_t dxpl; /* collective transfers */
    size_t max_piece_bytes;
    const char *path; /* for messages */
    int64_t *loaded;  /* reads: bytes this rank has read so far; NULL when writing */
} ckpt_io;

/* MPI-IO file access with collective metadata, HDF5 1.8-compatible objects. */
hid_t ckpt_make_fapl(MPI_Comm comm);
hid_t ckpt_make_collective_dxpl(void);
void ckpt_close(ckpt_io *io);

/* Moves flat elements [first, first + count) of dset between the file and
 * buf, in pieces of whole `align`-element rows of at most max_piece_bytes.
 * Collective: every rank calls it (a rank with nothing to move passes count
 * 0); returns the agreed status. */
ts_io_status ckpt_transfer(const ckpt_io *io, hid_t dset, hid_t mem_type, size_t elem_size,
                           bool writing, void *buf, hsize_t first, hsize_t count, hsize_t align,
                           const char *what, char *err, size_t errlen);
/* Writes an array every rank holds identically: rank r writes rows
 * [r*rows/size, (r+1)*rows/size). */
ts_io_status ckpt_write_replicated(const ckpt_io *io, hid_t dset, hid_t mem_type, size_t elem_size,
                                   const void *data, int ndim, const hsize_t *dims,
                                   const char *what, char *err, size_t errlen);
/* A contiguous dataset (never filled: every element is written) with units
 * and description attributes when given. Collective; agreed status. */
ts_io_status ckpt_create_dataset(const ckpt_io *io, hid_t parent, const char *name,
                                 const char *shown_as, hid_t file_type, int ndim,
                                 const hsize_t *dims, const char *units, const char *description,
                                 hid_t *out, char *err, size_t errlen);
/* Opens (or creates, with its description) the group at a one-level path. */
ts_io_status ckpt_open_or_create_group(const ckpt_io *io, const char *name, const char *description,
                                       hid_t *out, char *err, size_t errlen);
double ckpt_max_over_ranks(MPI_Comm comm, double value);

/* ---------------------------------------------------------------- checkpoint_schema.c */

const char *ckpt_type_name(ts_saved_type type);
const char *ckpt_layout_name(ts_saved_layout layout);
size_t ckpt_type_size(ts_saved_type type);
hid_t ckpt_mem_type(ts_saved_type type);
hid_t ckpt_file_type(ts_saved_type type);

/* The roles are well formed: names of one or two valid HDF5 names, no
 * duplicates, known types and layouts, data for a non-empty role, tensor
 * tables only on replicated real roles and covering count. */
ts_io_status ckpt_check_roles(const ts_saved_role *roles, int n_roles, char *err, size_t errlen);

/* Writing. sums: from ckpt_role_checksums. */
typedef struct ckpt_role_sums ckpt_role_sums;
ts_io_status ckpt_write_header(const ckpt_io *io, const ts_checkpoint_state *state,
                               const ts_saved_role *roles, int n_roles, const ts_provenance *prov,
                               const char *config, const char *written_utc, char *err,
                               size_t errlen);
ts_io_status ckpt_write_role(const ckpt_io *io, const ts_saved_role *role,
                             const ckpt_role_sums *sums, char *err, size_t errlen);

/* Reading. */
ts_io_status ckpt_open_for_reading(ckpt_io *io, int64_t *bytes, char *err, size_t errlen);
ts_io_status ckpt_read_header(const ckpt_io *io, ts_checkpoint_info *info, char *err,
                              size_t errlen);
/* Stage 1: the file has the role as the caller describes it. */
ts_io_status ckpt_verify_role(const ckpt_io *io, const ts_saved_role *role, char *err,
                              size_t errlen);
/* Stage 2: its data, checked against the stored checksums. */
ts_io_status ckpt_read_role(const ckpt_io *io, const ts_saved_role *role, char *err, size_t errlen);

/* ---------------------------------------------------------------- checkpoint_replicas.c */

/* Checksums of one role as stored: one (replicated), or one per rank's row
 * (per-rank) or shard (sharded), with the shard boundaries. */
struct ckpt_role_sums {
    uint64_t *sums;   /* [1] replicated, [ranks] otherwise */
    uint64_t *bounds; /* sharded: [ranks + 1] first elements, then count; else NULL */
};

/* Checks that the ranks agree on the list of roles and on every replicated
 * role's contents, that shards tile their arrays, and computes the checksums
 * to store (sums[i] for roles[i]; free with ckpt_free_sums). Collective. */
ts_io_status ckpt_role_checksums(const ckpt_io *io, long step, const ts_saved_role *roles,
                                 int n_roles, ckpt_role_sums **sums, char *err, size_t errlen);
void ckpt_free_sums(ckpt_role_sums *sums, int n_roles);

/* ---------------------------------------------------------------- checkpoint_files.c */

/* Rank 0: the run directory exists (created if missing). */
ts_io_status ckpt_prepare_dir(const char *run_dir, char *err, size_t errlen);
/* Rank 0: deletes complete checkpoints older than step beyond the newest
 * keep_last - 1 of them. */
ts_io_status ckpt_prune(const char *run_dir, long step, int keep_last, int *removed, char *err,
                        size_t errlen);
/* Rank 0 checks that path is complete (marker, size); all ranks learn the
 * outcome and the size. */
ts_io_status ckpt_check_complete(MPI_Comm comm, int rank, const char *path, int64_t *bytes,
                                 char *err, size_t errlen);

#endif
