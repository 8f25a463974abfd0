/* Checkpoints, the replica check: a file written from replicas that differ
 * would match none of them, and ranks that disagree on a dataset's size
 * cannot create it together; so before anything is written the ranks
 * compare their roles and checksums, and compute the checksums to store. */
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint_internal.h"

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

/* Every rank's value of x, gathered into all[size]. */
static ts_io_status gather(const ckpt_io *io, uint64_t x, uint64_t *all, char *err, size_t errlen) {
    if (MPI_Allgather(&x, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, io->comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Allgather failed");
    return TS_IO_OK;
}

/* The ranks hold the same list: names, types, layouts, counts, tables. */
static ts_io_status same_roles(const ckpt_io *io, long step, const ts_saved_role *roles,
                               int n_roles, char *err, size_t errlen) {
    int differs;
    long long n = n_roles;
    ts_io_status st = same_on_all_ranks(io->comm, &n, 1, &differs, err, errlen);
    if (st != TS_IO_OK) return st;
    if (differs >= 0)
        return ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                          "checkpoint of step %ld: ranks disagree on the number of roles", step);
    enum { FIELDS = 5 };
    long long *mine = malloc((size_t)(n_roles ? n_roles : 1) * FIELDS * sizeof *mine);
    st = mine ? TS_IO_OK
              : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "checkpoint: out of memory for roles");
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    for (int i = 0; i < n_roles; i++) {
        const ts_saved_role *r = &roles[i];
        long long *f = mine + (size_t)i * FIELDS;
        f[0] = (long long)ts_checksum64(r->name, strlen(r->name));
        f[1] = r->type;
        f[2] = r->layout;
        f[3] = r->count;
        f[4] = r->tensors ? r->tensors->count : -1;
    }
    st = same_on_all_ranks(io->comm, mine, FIELDS * n_roles, &differs, err, errlen);
    free(mine);
    if (st == TS_IO_OK && differs >= 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint of step %ld: ranks disagree on the name, type, layout or "
                        "count of role '%s'",
                        step, roles[differs / FIELDS].name);
    return st;
}

/* A sharded role's ranges tile [0, count) in rank order; bounds gets the
 * ranks' first elements, then count. */
static ts_io_status shard_bounds(const ckpt_io *io, long step, const ts_saved_role *r,
                                 uint64_t *bounds, char *err, size_t errlen) {
    uint64_t *counts = malloc((size_t)io->size * sizeof *counts);
    ts_io_status st =
        counts ? TS_IO_OK : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "checkpoint: out of memory");
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    st = gather(io, (uint64_t)r->shard_first, bounds, err, errlen);
    if (st == TS_IO_OK) st = gather(io, (uint64_t)r->shard_count, counts, err, errlen);
    uint64_t next = 0;
    for (int q = 0; st == TS_IO_OK && q < io->size; q++) {
        if (bounds[q] != next)
            st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                            "checkpoint of step %ld: the shards of role '%s' do not tile it: rank "
                            "%d starts at %llu, not %llu",
                            step, r->name, q, (unsigned long long)bounds[q],
                            (unsigned long long)next);
        next += counts[q];
    }
    if (st == TS_IO_OK && next != (uint64_t)r->count)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint of step %ld: the shards of role '%s' cover %llu of its %ld "
                        "elements",
                        step, r->name, (unsigned long long)next, r->count);
    bounds[io->size] = (uint64_t)r->count;
    free(counts);
    return st;
}

void ckpt_free_sums(ckpt_role_sums *sums, int n_roles) {
    if (!sums) return;
    for (int i = 0; i < n_roles; i++) {
        free(sums[i].sums);
        free(sums[i].bounds);
    }
    free(sums);
}

ts_io_status ckpt_role_checksums(const ckpt_io *io, long step, const ts_saved_role *roles,
                                 int n_roles, ckpt_role_sums **out, char *err, size_t errlen) {
    *out = NULL;
    ts_io_status st = same_roles(io, step, roles, n_roles, err, errlen);
    if (st != TS_IO_OK) return st;
    ckpt_role_sums *sums = calloc((size_t)(n_roles ? n_roles : 1), sizeof *sums);
    long long *replica = calloc((size_t)(n_roles ? n_roles : 1), sizeof *replica);
    bool ok = sums && replica;
    for (int i = 0; ok && i < n_roles; i++) {
        sums[i].sums = calloc((size_t)io->size, sizeof *sums[i].sums);
        if (roles[i].layout == TS_SAVED_SHARDED)
            sums[i].bounds = calloc((size_t)io->size + 1, sizeof *sums[i].bounds);
        ok = sums[i].sums && (roles[i].layout != TS_SAVED_SHARDED || sums[i].bounds);
    }
    st = ok ? TS_IO_OK
            : ts_io_fail(err, errlen, TS_IO_ERR_NOMEM, "checkpoint: out of memory for checksums");
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) {
        ckpt_free_sums(sums, n_roles);
        free(replica);
        return st;
    }
    for (int i = 0; st == TS_IO_OK && i < n_roles; i++) {
        const ts_saved_role *r = &roles[i];
        long local = r->layout == TS_SAVED_SHARDED ? r->shard_count : r->count;
        uint64_t sum = ts_checksum64(r->data, (size_t)local * ckpt_type_size(r->type));
        if (r->layout == TS_SAVED_REPLICATED) {
            sums[i].sums[0] = sum;
            replica[i] = (long long)sum;
            continue;
        }
        /* Rows and shards legitimately differ between ranks: one sum each. */
        st = gather(io, sum, sums[i].sums, err, errlen);
        if (st == TS_IO_OK && r->layout == TS_SAVED_SHARDED)
            st = shard_bounds(io, step, r, sums[i].bounds, err, errlen);
        st = ts_io_agree(io->comm, st, err, errlen);
    }
    int differs = -1;
    if (st == TS_IO_OK) st = same_on_all_ranks(io->comm, replica, n_roles, &differs, err, errlen);
    if (st == TS_IO_OK && differs >= 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                        "checkpoint of step %ld: the replicas of '%s' differ between ranks; under "
                        "data parallelism every rank must hold an identical replica",
                        step, roles[differs].name);
    free(replica);
    if (st != TS_IO_OK) {
        ckpt_free_sums(sums, n_roles);
        return st;
    }
    *out = sums;
    return TS_IO_OK;
}
