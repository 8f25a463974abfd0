/* Checkpoints, collective transfer: every rank moves its share of a dataset
 * through MPI-IO in the same number of rounds, so none waits forever. */
#include <string.h>

#include "io/checkpoint_internal.h"

/* MPI-IO file access with collective metadata reads and writes (every rank
 * performs the same metadata operations in the same order, and one rank
 * touches the disk for them), HDF5 1.8-compatible object formats so older
 * readers and h5py builds open the files. */
hid_t ckpt_make_fapl(MPI_Comm comm) {
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

hid_t ckpt_make_collective_dxpl(void) {
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
ts_io_status ckpt_transfer(const ckpt_io *io, hid_t dset, hid_t mem_type, size_t elem_size,
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

/* Creates a contiguous dataset (no fill: every element is written) with its
 * units and description attributes. Collective; agreed status. */
ts_io_status ckpt_create_dataset(const ckpt_io *io, hid_t parent, const char *name,
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

/* Writes one whole 1-D or N-D array that every rank holds identically:
 * rank r writes rows [r*rows/size, (r+1)*rows/size). */
ts_io_status ckpt_write_replicated(const ckpt_io *io, hid_t dset, hid_t mem_type, size_t elem_size,
                                   const void *data, int ndim, const hsize_t *dims,
                                   const char *what, char *err, size_t errlen) {
    hsize_t rows = dims[0], row = 1;
    for (int i = 1; i < ndim; i++) row *= dims[i];
    hsize_t lo = rows * (hsize_t)io->rank / (hsize_t)io->size;
    hsize_t hi = rows * (hsize_t)(io->rank + 1) / (hsize_t)io->size;
    return ckpt_transfer(io, dset, mem_type, elem_size, true, (char *)data + lo * row * elem_size,
                         lo * row, (hi - lo) * row, row, what, err, errlen);
}

double ckpt_max_over_ranks(MPI_Comm comm, double value) {
    double result = value;
    if (MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, comm) != MPI_SUCCESS) return value;
    return result;
}

void ckpt_close(ckpt_io *io) {
    if (io->file >= 0) H5Fclose(io->file);
    if (io->dxpl >= 0) H5Pclose(io->dxpl);
    io->file = io->dxpl = -1;
}

/* The group at a one-level path: opened when an earlier role created it,
 * else created with its description. Collective; agreed status. */
ts_io_status ckpt_open_or_create_group(const ckpt_io *io, const char *name, const char *description,
                                       hid_t *out, char *err, size_t errlen) {
    ts_io_status st = TS_IO_OK;
    htri_t exists = H5Lexists(io->file, name, H5P_DEFAULT);
    if (exists > 0) {
        *out = H5Gopen2(io->file, name, H5P_DEFAULT);
        if (*out < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot open group /%s", io->path, name);
    } else {
        *out = exists < 0 ? -1 : H5Gcreate2(io->file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (*out < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot create group /%s", io->path,
                            name);
        else if (description && ts_h5_write_string_attr(*out, "description", description) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot describe group /%s", io->path,
                            name);
    }
    st = ts_io_agree(io->comm, st, err, errlen);
    if (st != TS_IO_OK && *out >= 0) {
        H5Gclose(*out);
        *out = -1;
    }
    return st;
}
