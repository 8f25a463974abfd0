/* Checkpoints, the on-disk schema: how each role is laid out in the file
 * (docs/checkpoint-format.md), written, checked against what a reader
 * expects before any data moves, and read back against its checksums.
 * Reads format versions 1 and 2. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint_internal.h"

static bool valid_h5_name(const char *name) {
    return name && name[0] && !strchr(name, '/') && strcmp(name, ".") && strlen(name) < 256;
}

static void format_shape(char *out, size_t outlen, int ndim, const hsize_t *dims) {
    size_t at = 0;
    at += (size_t)snprintf(out, outlen, "[");
    for (int i = 0; i < ndim && at < outlen; i++)
        at += (size_t)snprintf(out + at, outlen - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)dims[i]);
    if (at < outlen) snprintf(out + at, outlen - at, "]");
}

/* Whether a stored datatype holds exactly the bytes of the given type, so
 * that reading it is a copy, not a conversion, and checksums stay valid. */
static bool stored_type_matches(hid_t stored, ts_saved_type type) {
    H5T_class_t cls = H5Tget_class(stored);
    size_t size = H5Tget_size(stored);
    if (type == TS_SAVED_REAL) return cls == H5T_FLOAT && size == sizeof(ts_real);
    if (cls != H5T_INTEGER || size != 8) return false;
    H5T_sign_t sign = H5Tget_sign(stored);
    return type == TS_SAVED_INT64 ? sign == H5T_SGN_2 : sign == H5T_SGN_NONE;
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
static ts_io_status check_dataset(const ckpt_io *io, hid_t dset, const char *shown,
                                  ts_saved_type type, int ndim, const hsize_t *dims,
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
                        shown, stored_name, what_expects, ckpt_type_name(type));
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
static ts_io_status verify_params(const ckpt_io *io, hid_t group, const ts_param_table *t,
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
        st = check_dataset(io, dsets[i], shown, TS_SAVED_REAL, e->ndim, dims, "the model", err,
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

static ts_io_status verify_checksum(const ckpt_io *io, hid_t loc, const char *attr,
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

/* ---------------------------------------------------------------- types and names */

const char *ckpt_type_name(ts_saved_type type) {
    switch (type) {
    case TS_SAVED_REAL:
        return TS_REAL_NAME;
    case TS_SAVED_INT64:
        return "int64";
    case TS_SAVED_UINT64:
        return "uint64";
    }
    return "?";
}

const char *ckpt_layout_name(ts_saved_layout layout) {
    switch (layout) {
    case TS_SAVED_REPLICATED:
        return "replicated";
    case TS_SAVED_PER_RANK:
        return "per_rank";
    case TS_SAVED_SHARDED:
        return "sharded";
    }
    return "?";
}

size_t ckpt_type_size(ts_saved_type type) {
    return type == TS_SAVED_REAL ? sizeof(ts_real) : sizeof(int64_t);
}

hid_t ckpt_mem_type(ts_saved_type type) {
    return type == TS_SAVED_REAL    ? CKPT_REAL_MEM_TYPE
           : type == TS_SAVED_INT64 ? H5T_NATIVE_INT64
                                    : H5T_NATIVE_UINT64;
}

hid_t ckpt_file_type(ts_saved_type type) {
    return type == TS_SAVED_REAL    ? CKPT_REAL_FILE_TYPE
           : type == TS_SAVED_INT64 ? H5T_STD_I64LE
                                    : H5T_STD_U64LE;
}

/* The top-level groups of the format, described for h5py readers. */
static const struct {
    const char *name, *description;
} known_groups[] = {
    {"params", "model parameters, one dataset per named tensor, row-major; concatenated in order "
               "of their offset attributes they form the flat parameter buffer"},
    {"optimizer", "optimiser state over the flat parameter buffer (same order and offsets as "
                  "/params): AdamW's moments m and v; absent for optimisers without them"},
    {"state", "training state besides parameters and optimiser; step and tokens_seen are "
              "attributes of the root group"},
    {"extras", "architecture-specific state: layout attribute 'replicated' (one copy, 1-D), "
               "'per_rank' (row r from rank r, 2-D) or 'sharded' (1-D, rank r's range)"},
};

static const char *group_description(const char *name) {
    for (size_t i = 0; i < sizeof known_groups / sizeof known_groups[0]; i++)
        if (!strcmp(known_groups[i].name, name)) return known_groups[i].description;
    return "checkpoint roles";
}

/* Splits "group/leaf" (or "leaf") into its parts; false if not one or two
 * valid HDF5 names. */
static bool split_name(const char *name, char *group, size_t grouplen, const char **leaf) {
    if (!name) return false;
    const char *slash = strchr(name, '/');
    group[0] = '\0';
    *leaf = name;
    if (!slash) return valid_h5_name(name);
    size_t len = (size_t)(slash - name);
    if (len == 0 || len >= grouplen) return false;
    memcpy(group, name, len);
    group[len] = '\0';
    *leaf = slash + 1;
    return valid_h5_name(group) && valid_h5_name(*leaf);
}

static ts_io_status check_table(const ts_saved_role *r, char *err, size_t errlen) {
    const ts_param_table *table = r->tensors;
    if (table->count < 1 || !table->entries)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint: the tensor table of '%s' is "
                          "empty",
                          r->name);
    if (r->type != TS_SAVED_REAL || r->layout != TS_SAVED_REPLICATED || r->count != table->total ||
        strchr(r->name, '/'))
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint: role '%s' with a tensor table must be a top-level, "
                          "replicated, real role of the table's %ld elements",
                          r->name, table->total);
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

ts_io_status ckpt_check_roles(const ts_saved_role *roles, int n_roles, char *err, size_t errlen) {
    if (n_roles < 0 || n_roles > TS_CHECKPOINT_MAX_ROLES || (n_roles > 0 && !roles))
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint: %d roles (at most %d, with an array)", n_roles,
                          TS_CHECKPOINT_MAX_ROLES);
    for (int i = 0; i < n_roles; i++) {
        const ts_saved_role *r = &roles[i];
        char group[256];
        const char *leaf;
        if (!split_name(r->name, group, sizeof group, &leaf))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: role #%d's name '%s' is not one or two HDF5 names "
                              "joined by '/'",
                              i, r->name ? r->name : "(null)");
        if (r->type != TS_SAVED_REAL && r->type != TS_SAVED_INT64 && r->type != TS_SAVED_UINT64)
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: role '%s' has an unknown type", r->name);
        if (r->layout != TS_SAVED_REPLICATED && r->layout != TS_SAVED_PER_RANK &&
            r->layout != TS_SAVED_SHARDED)
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: role '%s' has an unknown layout", r->name);
        long local = r->layout == TS_SAVED_SHARDED ? r->shard_count : r->count;
        if (r->count < 0 || local < 0 || (local > 0 && !r->data))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: role '%s' has count %ld and %s data", r->name, local,
                              r->data ? "some" : "no");
        if (r->layout == TS_SAVED_SHARDED &&
            (r->shard_first < 0 || r->shard_first + r->shard_count > r->count))
            return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                              "checkpoint: role '%s': shard [%ld, %ld) is outside its %ld elements",
                              r->name, r->shard_first, r->shard_first + r->shard_count, r->count);
        if (r->tensors) {
            ts_io_status st = check_table(r, err, errlen);
            if (st != TS_IO_OK) return st;
        }
        for (int j = 0; j < i; j++) {
            if (!strcmp(roles[j].name, r->name))
                return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                  "checkpoint: role '%s' is given twice", r->name);
            /* A dataset and a group of the same name cannot both exist. */
            size_t n = strlen(roles[j].name);
            if ((!strncmp(roles[j].name, r->name, n) && r->name[n] == '/') ||
                (!strncmp(r->name, roles[j].name, strlen(r->name)) &&
                 roles[j].name[strlen(r->name)] == '/'))
                return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                  "checkpoint: role '%s' and role '%s' cannot both be stored",
                                  roles[j].name, r->name);
        }
    }
    return TS_IO_OK;
}

/* ---------------------------------------------------------------- writing */

ts_io_status ckpt_write_header(const ckpt_io *io, const ts_checkpoint_state *s,
                               const ts_saved_role *roles, int n_roles, const ts_provenance *prov,
                               const char *config, const char *written_utc, char *err,
                               size_t errlen) {
    ts_io_status st =
        ts_provenance_write(io->file, "provenance/slurm", prov, io->path, err, errlen);
    const ts_param_table *params = NULL;
    for (int i = 0; i < n_roles && !params; i++)
        if (!strcmp(roles[i].name, TS_SAVED_PARAMS_NAME)) params = roles[i].tensors;
    struct {
        const char *name;
        int64_t value;
    } numbers[] = {
        {"format_version", TS_CHECKPOINT_FORMAT_VERSION},
        {"step", s->step},
        {"tokens_seen", s->tokens_seen},
        {"ranks", io->size},
        {"param_count", params ? params->count : 0},
        {"param_total", params ? params->total : 0},
    };
    for (size_t i = 0; st == TS_IO_OK && i < sizeof numbers / sizeof numbers[0]; i++)
        if (ts_h5_write_int64_attr(io->file, numbers[i].name, numbers[i].value) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", io->path,
                            numbers[i].name);
    struct {
        const char *name;
        const char *value;
    } strings[] = {
        {"format", CKPT_FORMAT_NAME},
        {"element_type", TS_REAL_NAME},
        {"checksum_algorithm", CKPT_CHECKSUM_NAME},
        {"config", config},
        {"written_utc", written_utc},
    };
    for (size_t i = 0; st == TS_IO_OK && i < sizeof strings / sizeof strings[0]; i++)
        if (ts_h5_write_string_attr(io->file, strings[i].name, strings[i].value) < 0)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attribute %s", io->path,
                            strings[i].name);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* The layout and type attributes every role carries (version 2), so a
 * reader can check them against what it expects before reading. */
static herr_t write_role_attrs(hid_t loc, const ts_saved_role *r) {
    return ts_h5_write_string_attr(loc, "layout", ckpt_layout_name(r->layout)) < 0 ||
                   ts_h5_write_string_attr(loc, "type", ckpt_type_name(r->type)) < 0
               ? -1
               : 0;
}

/* A tensor role: a group of one dataset per table entry. */
static ts_io_status write_tensors(const ckpt_io *io, const ts_saved_role *r,
                                  const ckpt_role_sums *sums, char *err, size_t errlen) {
    hid_t group;
    ts_io_status st =
        ckpt_open_or_create_group(io, r->name, group_description(r->name), &group, err, errlen);
    if (st != TS_IO_OK) return st;
    const ts_param_table *t = r->tensors;
    ts_io_status attr_st = TS_IO_OK;
    if (ts_h5_write_int64_attr(group, "count", t->count) < 0 ||
        ts_h5_write_int64_attr(group, "total", t->total) < 0 ||
        ts_h5_write_uint64_attr(group, "checksum", sums->sums[0]) < 0 ||
        write_role_attrs(group, r) < 0)
        attr_st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write /%s attributes", io->path,
                             r->name);
    st = ts_io_agree(io->comm, attr_st, err, errlen);
    const ts_real *data = r->data;
    for (int i = 0; st == TS_IO_OK && i < t->count; i++) {
        const ts_param_entry *e = &t->entries[i];
        hsize_t dims[4];
        for (int d = 0; d < e->ndim; d++) dims[d] = (hsize_t)e->shape[d];
        char shown[TS_PARAM_NAME_MAX + 300], description[TS_PARAM_NAME_MAX + 160];
        snprintf(shown, sizeof shown, "%s/%s", r->name, e->name);
        snprintf(description, sizeof description,
                 "parameter tensor %s; elements [%ld, %ld) of the flat parameter buffer", e->name,
                 e->offset, e->offset + e->numel);
        hid_t dset;
        st = ckpt_create_dataset(io, group, e->name, shown, CKPT_REAL_FILE_TYPE, e->ndim, dims,
                                 r->units, description, &dset, err, errlen);
        if (st != TS_IO_OK) break;
        attr_st = TS_IO_OK;
        if (ts_h5_write_int64_attr(dset, "offset", e->offset) < 0 ||
            ts_h5_write_int64_attr(dset, "index", i) < 0 ||
            ts_h5_write_int64_attr(dset, "weight_decay", e->decay ? 1 : 0) < 0)
            attr_st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write attributes of %s",
                                 io->path, shown);
        st = ts_io_agree(io->comm, attr_st, err, errlen);
        if (st == TS_IO_OK)
            st = ckpt_write_replicated(io, dset, CKPT_REAL_MEM_TYPE, sizeof(ts_real),
                                       data + e->offset, e->ndim, dims, shown, err, errlen);
        if (H5Dclose(dset) < 0 && st == TS_IO_OK)
            st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, shown);
        st = ts_io_agree(io->comm, st, err, errlen);
    }
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /%s", io->path, r->name);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* A role as one dataset: [count] (replicated, sharded) or [ranks, count]
 * (per-rank), with its checksums. */
static ts_io_status write_array(const ckpt_io *io, hid_t parent, const char *leaf,
                                const ts_saved_role *r, const ckpt_role_sums *sums, char *err,
                                size_t errlen) {
    hsize_t dims[2] = {(hsize_t)io->size, (hsize_t)r->count};
    bool per_rank = r->layout == TS_SAVED_PER_RANK;
    hid_t dset;
    ts_io_status st = ckpt_create_dataset(io, parent, leaf, r->name, ckpt_file_type(r->type),
                                          per_rank ? 2 : 1, per_rank ? dims : dims + 1, r->units,
                                          r->description, &dset, err, errlen);
    if (st != TS_IO_OK) return st;
    herr_t rc = write_role_attrs(dset, r);
    if (rc >= 0 && r->layout == TS_SAVED_REPLICATED)
        rc = ts_h5_write_uint64_attr(dset, "checksum", sums->sums[0]);
    else if (rc >= 0)
        rc = write_uint64_array_attr(dset, "checksums", sums->sums, (hsize_t)io->size) == TS_IO_OK
                 ? 0
                 : -1;
    if (rc >= 0 && r->layout == TS_SAVED_SHARDED)
        rc = write_uint64_array_attr(dset, "shard_bounds", sums->bounds, (hsize_t)io->size + 1) ==
                     TS_IO_OK
                 ? 0
                 : -1;
    if (rc < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot write the attributes of %s",
                        io->path, r->name);
    st = ts_io_agree(io->comm, st, err, errlen);
    size_t elem = ckpt_type_size(r->type);
    if (st == TS_IO_OK) {
        if (r->layout == TS_SAVED_REPLICATED)
            st = ckpt_write_replicated(io, dset, ckpt_mem_type(r->type), elem, r->data, 1, dims + 1,
                                       r->name, err, errlen);
        else if (per_rank)
            st = ckpt_transfer(io, dset, ckpt_mem_type(r->type), elem, true, r->data,
                               (hsize_t)io->rank * dims[1], dims[1], 1, r->name, err, errlen);
        else
            st = ckpt_transfer(io, dset, ckpt_mem_type(r->type), elem, true, r->data,
                               (hsize_t)r->shard_first, (hsize_t)r->shard_count, 1, r->name, err,
                               errlen);
    }
    if (H5Dclose(dset) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close %s", io->path, r->name);
    return ts_io_agree(io->comm, st, err, errlen);
}

ts_io_status ckpt_write_role(const ckpt_io *io, const ts_saved_role *r, const ckpt_role_sums *sums,
                             char *err, size_t errlen) {
    if (r->tensors) return write_tensors(io, r, sums, err, errlen);
    char group_name[256];
    const char *leaf;
    split_name(r->name, group_name, sizeof group_name, &leaf); /* checked already */
    if (!group_name[0]) return write_array(io, io->file, leaf, r, sums, err, errlen);
    hid_t group;
    ts_io_status st = ckpt_open_or_create_group(io, group_name, group_description(group_name),
                                                &group, err, errlen);
    if (st != TS_IO_OK) return st;
    st = write_array(io, group, leaf, r, sums, err, errlen);
    if (H5Gclose(group) < 0 && st == TS_IO_OK)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close /%s", io->path, group_name);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* ---------------------------------------------------------------- reading */

ts_io_status ckpt_open_for_reading(ckpt_io *io, int64_t *bytes, char *err, size_t errlen) {
    ts_io_status st = ckpt_check_complete(io->comm, io->rank, io->path, bytes, err, errlen);
    if (st != TS_IO_OK) return st;
    hid_t fapl = ckpt_make_fapl(io->comm);
    io->dxpl = ckpt_make_collective_dxpl();
    if (fapl < 0 || io->dxpl < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot set up MPI-IO properties", io->path);
    else if ((io->file = H5Fopen(io->path, H5F_ACC_RDONLY, fapl)) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_NOT_HDF5,
                        "%s cannot be opened as HDF5: not an HDF5 file, or damaged", io->path);
    if (fapl >= 0) H5Pclose(fapl);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;

    char *format = NULL, *element = NULL;
    int64_t version = 0;
    if (ts_h5_read_string_attr(io->file, "format", &format) < 0 || strcmp(format, CKPT_FORMAT_NAME))
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                        "%s is HDF5 but not a thinkscale checkpoint (root attribute format is %s)",
                        io->path, format ? format : "missing");
    else if (ts_h5_read_int64_attr(io->file, "format_version", &version) < 0 || version < 1 ||
             version > TS_CHECKPOINT_FORMAT_VERSION)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                        "%s has checkpoint format version %" PRId64
                        "; this build reads versions 1 to %d",
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

/* Elements of a dataset, or -1 when it is absent or unreadable. */
static long long dataset_elements(hid_t file, const char *path) {
    if (!dataset_exists(file, path)) return -1;
    hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
    hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    return (long long)n;
}

ts_io_status ckpt_read_header(const ckpt_io *io, ts_checkpoint_info *info, char *err,
                              size_t errlen) {
    int64_t values[3] = {0};
    const char *names[3] = {"format_version", "step", "tokens_seen"};
    ts_io_status st = TS_IO_OK;
    for (int i = 0; i < 3 && st == TS_IO_OK; i++)
        if (ts_h5_read_int64_attr(io->file, names[i], &values[i]) < 0)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no integer attribute %s",
                            io->path, names[i]);
    int64_t ranks = 0, param_count = 0, param_total = 0;
    if (st == TS_IO_OK && ts_h5_read_int64_attr(io->file, "ranks", &ranks) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no integer attribute ranks",
                        io->path);
    /* Files without a parameter table (possible from version 2) have none. */
    if (ts_h5_read_int64_attr(io->file, "param_count", &param_count) < 0) param_count = 0;
    if (ts_h5_read_int64_attr(io->file, "param_total", &param_total) < 0) param_total = 0;
    info->format_version = (int)values[0];
    info->step = (long)values[1];
    info->tokens_seen = values[2];
    info->ranks = (int)ranks;
    info->param_count = (int)param_count;
    info->param_total = param_total;
    snprintf(info->element_type, sizeof info->element_type, "%s", TS_REAL_NAME);
    if (st == TS_IO_OK && ts_h5_read_string_attr(io->file, "config", &info->config_text) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no config attribute", io->path);
    info->has_adam_m = dataset_exists(io->file, TS_SAVED_ADAM_M_NAME);
    info->has_adam_v = dataset_exists(io->file, TS_SAVED_ADAM_V_NAME);
    long long rng = dataset_elements(io->file, "state/rng");
    if (st == TS_IO_OK && info->format_version == 1 && (rng < 0 || rng > INT_MAX))
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no readable state/rng dataset",
                        io->path);
    info->rng_words = rng > 0 && rng <= INT_MAX ? (int)rng : 0;
    return ts_io_agree(io->comm, st, err, errlen);
}

/* Replicated and sharded roles are both one 1-D array of count elements,
 * only split differently across the writers: either reads as the other
 * (a ZeRO run's sharded moments resume under ddp, and back). */
static bool one_array(ts_saved_layout layout) {
    return layout == TS_SAVED_REPLICATED || layout == TS_SAVED_SHARDED;
}

static ts_saved_layout layout_of(const char *name) {
    return !strcmp(name, ckpt_layout_name(TS_SAVED_SHARDED))    ? TS_SAVED_SHARDED
           : !strcmp(name, ckpt_layout_name(TS_SAVED_PER_RANK)) ? TS_SAVED_PER_RANK
                                                                : TS_SAVED_REPLICATED;
}

/* The layout a dataset or group was written with: its attribute, or
 * "replicated" for version 1's datasets outside /extras, which had none. */
static ts_io_status stored_layout(const ckpt_io *io, hid_t loc, const char *shown, char *layout,
                                  size_t len, char *err, size_t errlen) {
    char *value = NULL;
    if (H5Aexists(loc, "layout") <= 0) {
        if (!strncmp(shown, "extras/", 7))
            return ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has no layout attribute",
                              io->path, shown);
        snprintf(layout, len, "%s", ckpt_layout_name(TS_SAVED_REPLICATED));
        return TS_IO_OK;
    }
    if (ts_h5_read_string_attr(loc, "layout", &value) < 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot read the layout of %s",
                          io->path, shown);
    snprintf(layout, len, "%s", value);
    free(value);
    return TS_IO_OK;
}

static ts_io_status verify_tensors(const ckpt_io *io, const ts_saved_role *r, char *err,
                                   size_t errlen) {
    const ts_param_table *t = r->tensors;
    hid_t *dsets = malloc((size_t)t->count * sizeof *dsets);
    ts_io_status st =
        dsets ? TS_IO_OK : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory", io->path);
    /* Agreed before any metadata read: those are collective. */
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    for (int i = 0; i < t->count; i++) dsets[i] = -1;
    hid_t group = -1;
    if (H5Lexists(io->file, r->name, H5P_DEFAULT) <= 0 ||
        (group = H5Gopen2(io->file, r->name, H5P_DEFAULT)) < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s has no /%s group", io->path, r->name);
    if (st == TS_IO_OK) st = verify_params(io, group, t, dsets, err, errlen);
    for (int i = 0; i < t->count; i++)
        if (dsets[i] >= 0) H5Dclose(dsets[i]);
    free(dsets);
    if (group >= 0) H5Gclose(group);
    return st;
}

ts_io_status ckpt_verify_role(const ckpt_io *io, const ts_saved_role *r, char *err, size_t errlen) {
    if (r->tensors) return ts_io_agree(io->comm, verify_tensors(io, r, err, errlen), err, errlen);
    ts_io_status st = TS_IO_OK;
    if (!dataset_exists(io->file, r->name))
        return ts_io_agree(
            io->comm,
            ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH, "%s has no %s", io->path, r->name), err,
            errlen);
    hid_t dset = H5Dopen2(io->file, r->name, H5P_DEFAULT);
    if (dset < 0)
        return ts_io_agree(
            io->comm,
            ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s", io->path, r->name), err,
            errlen);
    char layout[32];
    st = stored_layout(io, dset, r->name, layout, sizeof layout, err, errlen);
    if (st == TS_IO_OK && strcmp(layout, ckpt_layout_name(r->layout)) &&
        !(one_array(r->layout) && one_array(layout_of(layout))))
        st =
            ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH, "%s: %s is %s state, the caller expects %s",
                       io->path, r->name, layout, ckpt_layout_name(r->layout));
    hsize_t dims[2] = {(hsize_t)io->size, (hsize_t)r->count};
    if (st == TS_IO_OK && r->layout == TS_SAVED_PER_RANK) {
        hid_t space = H5Dget_space(dset);
        hsize_t found[2] = {0, 0};
        if (space < 0 || H5Sget_simple_extent_ndims(space) != 2 ||
            H5Sget_simple_extent_dims(space, found, NULL) < 0)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s is not a 2-D dataset", io->path,
                            r->name);
        else if (found[0] != (hsize_t)io->size)
            st = ts_io_fail(err, errlen, TS_IO_ERR_MISMATCH,
                            "%s: %s is per-rank state of %llu ranks, but this run has %d: resume "
                            "it on %llu ranks",
                            io->path, r->name, (unsigned long long)found[0], io->size,
                            (unsigned long long)found[0]);
        if (space >= 0) H5Sclose(space);
        if (st == TS_IO_OK)
            st = check_dataset(io, dset, r->name, r->type, 2, dims, "the caller expects", err,
                               errlen);
    } else if (st == TS_IO_OK) {
        st = check_dataset(io, dset, r->name, r->type, 1, dims + 1, "the caller expects", err,
                           errlen);
    }
    H5Dclose(dset);
    return ts_io_agree(io->comm, st, err, errlen);
}

static ts_io_status read_tensors(const ckpt_io *io, const ts_saved_role *r, char *err,
                                 size_t errlen) {
    const ts_param_table *t = r->tensors;
    ts_real *data = r->data;
    hid_t group = H5Gopen2(io->file, r->name, H5P_DEFAULT);
    ts_io_status st = group >= 0 ? TS_IO_OK
                                 : ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open /%s",
                                              io->path, r->name);
    st = ts_io_agree(io->comm, st, err, errlen);
    for (int i = 0; st == TS_IO_OK && i < t->count; i++) {
        const ts_param_entry *e = &t->entries[i];
        char shown[TS_PARAM_NAME_MAX + 300];
        snprintf(shown, sizeof shown, "%s/%s", r->name, e->name);
        hid_t dset = H5Dopen2(group, e->name, H5P_DEFAULT);
        st = dset >= 0
                 ? TS_IO_OK
                 : ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s", io->path, shown);
        if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) break;
        hsize_t row = (hsize_t)(e->numel / e->shape[0]);
        st = ckpt_transfer(io, dset, CKPT_REAL_MEM_TYPE, sizeof(ts_real), false, data + e->offset,
                           0, (hsize_t)e->numel, row, shown, err, errlen);
        H5Dclose(dset);
    }
    if (st == TS_IO_OK) {
        char shown[300];
        snprintf(shown, sizeof shown, "the parameters in /%s", r->name);
        st = verify_checksum(io, group, "checksum", shown, data, (size_t)t->total * sizeof(ts_real),
                             err, errlen);
    }
    if (group >= 0) H5Gclose(group);
    return ts_io_agree(io->comm, st, err, errlen);
}

/* Reads rank r's row (per-rank) or the writer's shards that overlap this
 * rank's range (sharded), each checked against its checksum. */
static ts_io_status read_parts(const ckpt_io *io, hid_t dset, const ts_saved_role *r, char *err,
                               size_t errlen) {
    size_t elem = ckpt_type_size(r->type);
    hid_t mem_type = ckpt_mem_type(r->type);
    if (r->layout == TS_SAVED_PER_RANK) {
        uint64_t *sums = malloc((size_t)io->size * sizeof *sums);
        ts_io_status st =
            sums ? TS_IO_OK
                 : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory", io->path);
        if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
        if (read_uint64_array_attr(dset, "checksums", sums, (hsize_t)io->size) < 0)
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has no checksums for %d ranks",
                            io->path, r->name, io->size);
        if ((st = ts_io_agree(io->comm, st, err, errlen)) == TS_IO_OK)
            st = ckpt_transfer(io, dset, mem_type, elem, false, r->data,
                               (hsize_t)io->rank * (hsize_t)r->count, (hsize_t)r->count, 1, r->name,
                               err, errlen);
        if (st == TS_IO_OK && ts_checksum64(r->data, (size_t)r->count * elem) != sums[io->rank])
            st = ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                            "%s: row %d of %s does not match its checksum: the file is corrupt",
                            io->path, io->rank, r->name);
        free(sums);
        return ts_io_agree(io->comm, st, err, errlen);
    }
    /* Sharded: the writer's shard boundaries first. */
    int writers = 0;
    hid_t attr =
        H5Aexists(dset, "shard_bounds") > 0 ? H5Aopen(dset, "shard_bounds", H5P_DEFAULT) : -1;
    hid_t space = attr >= 0 ? H5Aget_space(attr) : -1;
    hssize_t n_bounds = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0) H5Sclose(space);
    if (attr >= 0) H5Aclose(attr);
    writers = n_bounds >= 2 ? (int)n_bounds - 1 : 0;
    uint64_t *bounds = writers ? malloc((size_t)(2 * writers + 1) * sizeof *bounds) : NULL;
    uint64_t *sums = bounds ? bounds + writers + 1 : NULL;
    ts_io_status st = TS_IO_OK;
    if (!bounds || read_uint64_array_attr(dset, "shard_bounds", bounds, (hsize_t)writers + 1) < 0 ||
        read_uint64_array_attr(dset, "checksums", sums, (hsize_t)writers) < 0 ||
        bounds[writers] != (uint64_t)r->count)
        st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT,
                        "%s: %s has no valid shard_bounds and checksums attributes", io->path,
                        r->name);
    for (int q = 0; st == TS_IO_OK && q < writers; q++)
        if (bounds[q] > bounds[q + 1])
            st = ts_io_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: %s has unordered shard bounds",
                            io->path, r->name);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
        free(bounds);
        return st;
    }
    /* Every stored shard is read whole by the ranks whose range it overlaps,
     * so its checksum can be checked; the rounds are collective, so every
     * rank takes part in one per stored shard. */
    uint64_t lo = (uint64_t)r->shard_first, hi = lo + (uint64_t)r->shard_count;
    for (int q = 0; st == TS_IO_OK && q < writers; q++) {
        uint64_t a = bounds[q], b = bounds[q + 1];
        bool mine = a < hi && lo < b && b > a;
        void *buf = mine ? malloc((size_t)(b - a) * elem) : NULL;
        st = !mine || buf ? TS_IO_OK
                          : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "%s: out of memory reading %s",
                                       io->path, r->name);
        if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
            free(buf);
            break;
        }
        st = ckpt_transfer(io, dset, mem_type, elem, false, buf, mine ? a : 0, mine ? b - a : 0, 1,
                           r->name, err, errlen);
        if (st == TS_IO_OK && mine) {
            if (ts_checksum64(buf, (size_t)(b - a) * elem) != sums[q])
                st = ts_io_fail(err, errlen, TS_IO_ERR_CORRUPT,
                                "%s: shard %d of %s does not match its checksum: the file is "
                                "corrupt",
                                io->path, q, r->name);
            else {
                uint64_t from = a > lo ? a : lo, to = b < hi ? b : hi;
                memcpy((char *)r->data + (from - lo) * elem, (char *)buf + (from - a) * elem,
                       (size_t)(to - from) * elem);
            }
        }
        free(buf);
        st = ts_io_agree(io->comm, st, err, errlen);
    }
    free(bounds);
    return st;
}

/* A sharded reader of a replicated array: the whole array is read, so its
 * checksum can be checked, and this rank's range kept. */
static ts_io_status read_replica_range(const ckpt_io *io, hid_t dset, const ts_saved_role *r,
                                       char *err, size_t errlen) {
    size_t elem = ckpt_type_size(r->type);
    void *whole = malloc((size_t)(r->count > 0 ? r->count : 1) * elem);
    ts_io_status st = whole ? TS_IO_OK
                            : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                                         "%s: out of memory reading %s", io->path, r->name);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    st = ckpt_transfer(io, dset, ckpt_mem_type(r->type), elem, false, whole, 0, (hsize_t)r->count,
                       1, r->name, err, errlen);
    if (st == TS_IO_OK)
        st = verify_checksum(io, dset, "checksum", r->name, whole, (size_t)r->count * elem, err,
                             errlen);
    if (st == TS_IO_OK && r->shard_count > 0)
        memcpy(r->data, (char *)whole + (size_t)r->shard_first * elem,
               (size_t)r->shard_count * elem);
    free(whole);
    return st;
}

ts_io_status ckpt_read_role(const ckpt_io *io, const ts_saved_role *r, char *err, size_t errlen) {
    if (r->tensors) return read_tensors(io, r, err, errlen);
    hid_t dset = H5Dopen2(io->file, r->name, H5P_DEFAULT);
    ts_io_status st = dset >= 0 ? TS_IO_OK
                                : ts_h5_fail(err, errlen, TS_IO_ERR_FORMAT, "%s: cannot open %s",
                                             io->path, r->name);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    char stored[32];
    st = stored_layout(io, dset, r->name, stored, sizeof stored, err, errlen);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
        H5Dclose(dset);
        return st;
    }
    ts_saved_layout written = layout_of(stored);
    if (r->layout == TS_SAVED_REPLICATED && written == TS_SAVED_SHARDED) {
        /* Every shard, as one reader's range [0, count). */
        ts_saved_role whole = *r;
        whole.layout = TS_SAVED_SHARDED;
        whole.shard_first = 0;
        whole.shard_count = r->count;
        st = read_parts(io, dset, &whole, err, errlen);
    } else if (r->layout == TS_SAVED_SHARDED && written == TS_SAVED_REPLICATED) {
        st = read_replica_range(io, dset, r, err, errlen);
    } else if (r->layout == TS_SAVED_REPLICATED) {
        st = ckpt_transfer(io, dset, ckpt_mem_type(r->type), ckpt_type_size(r->type), false,
                           r->data, 0, (hsize_t)r->count, 1, r->name, err, errlen);
        if (st == TS_IO_OK)
            st = verify_checksum(io, dset, "checksum", r->name, r->data,
                                 (size_t)r->count * ckpt_type_size(r->type), err, errlen);
    } else {
        st = read_parts(io, dset, r, err, errlen);
    }
    H5Dclose(dset);
    return ts_io_agree(io->comm, st, err, errlen);
}
