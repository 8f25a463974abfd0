#include "parallel/strategy.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "parallel/data_parallel.h"

static const char *const strategy_names[] = {"ddp", "zero1", "zero2", "zero3"};

bool ts_parallel_strategy_parse(const char *name, ts_parallel_strategy *strategy) {
    for (int s = 0; s < (int)(sizeof strategy_names / sizeof strategy_names[0]); s++)
        if (!strcmp(name, strategy_names[s])) {
            *strategy = (ts_parallel_strategy)s;
            return true;
        }
    return false;
}

const char *ts_parallel_strategy_name(ts_parallel_strategy strategy) {
    return (unsigned)strategy < sizeof strategy_names / sizeof strategy_names[0]
               ? strategy_names[strategy]
               : "?";
}

static bool sharded(const ts_parallel *p) {
    return p->strategy != TS_DDP;
}

void ts_parallel_slice(const ts_parallel *p, int i, int rank, long *first, long *count) {
    const ts_shard_piece *q = &p->pieces[i];
    long lo = (long)rank * q->slice, hi = lo + q->slice;
    if (lo > q->count) lo = q->count;
    if (hi > q->count) hi = q->count;
    *first = q->first + lo;
    *count = hi - lo;
}

void ts_parallel_checkpoint_range(const ts_parallel *p, int rank, long *first, long *count) {
    if (!sharded(p)) {
        *first = 0;
        *count = p->total;
        return;
    }
    long start = (long)rank * p->shard;
    if (start > p->total) start = p->total;
    long end = start + p->shard < p->total ? start + p->shard : p->total;
    *first = start;
    *count = end - start;
}

bool ts_parallel_owned_is_checkpoint_range(const ts_parallel *p) {
    if (!sharded(p)) return true;
    /* Every rank's slices, in order, must run exactly through its range (the
     * same answer on every rank, so all of them exchange or none). */
    for (int r = 0; r < p->nranks; r++) {
        long first, count;
        ts_parallel_checkpoint_range(p, r, &first, &count);
        long at = first;
        for (int i = 0; i < p->n_pieces; i++) {
            long slice_first, slice_count;
            ts_parallel_slice(p, i, r, &slice_first, &slice_count);
            if (slice_count == 0) continue;
            if (slice_first != at) return false;
            at += slice_count;
        }
        if (at != first + count) return false;
    }
    return true;
}

static int compare_intervals(const void *a, const void *b) {
    long x = ((const ts_param_interval *)a)->first, y = ((const ts_param_interval *)b)->first;
    return x < y ? -1 : x > y;
}

/* The pieces: zero1 the whole buffer, zero2 and zero3 every unit's
 * intervals in buffer order; and this rank's slice of each. */
static bool build_pieces(ts_parallel *p) {
    int n = 1;
    if (p->units.count > 0) {
        n = 0;
        for (int k = 0; k < p->units.count; k++) n += p->units.units[k].n_intervals;
    }
    ts_param_interval *runs = malloc((size_t)(n > 0 ? n : 1) * sizeof *runs);
    p->pieces = malloc((size_t)(n > 0 ? n : 1) * sizeof *p->pieces);
    p->owned = malloc((size_t)(n > 0 ? n : 1) * sizeof *p->owned);
    if (!runs || !p->pieces || !p->owned) {
        free(runs);
        return false;
    }
    if (p->units.count > 0) {
        int j = 0;
        for (int k = 0; k < p->units.count; k++)
            for (int i = 0; i < p->units.units[k].n_intervals; i++)
                runs[j++] = p->units.units[k].intervals[i];
        qsort(runs, (size_t)n, sizeof *runs, compare_intervals);
    } else {
        runs[0] = (ts_param_interval){0, p->total};
    }
    p->n_pieces = p->n_owned = n;
    p->owned_count = 0;
    for (int i = 0; i < n; i++) {
        p->pieces[i] = (ts_shard_piece){.first = runs[i].first,
                                        .count = runs[i].count,
                                        .slice = (runs[i].count + p->nranks - 1) / p->nranks,
                                        .owned_at = p->owned_count};
        ts_parallel_slice(p, i, p->rank, &p->owned[i].first, &p->owned[i].count);
        p->owned_count += p->owned[i].count;
    }
    free(runs);
    return true;
}

bool ts_parallel_init(ts_parallel *p, MPI_Comm comm, ts_parallel_strategy strategy,
                      const ts_model *model, char *err, size_t errlen) {
    long total = model->table.total;
    *p = (ts_parallel){.comm = comm,
                       .strategy = strategy,
                       .total = total,
                       .max_piece = INT_MAX,
                       .gathering = -1,
                       .failed = MPI_SUCCESS};
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->nranks);
    p->shard = (total + p->nranks - 1) / p->nranks;
    p->params_held = p->grads_held = (double)total; /* until a model is adopted */
    bool per_unit_strategy = strategy == TS_ZERO2 || strategy == TS_ZERO3;
    if (per_unit_strategy && !ts_param_units_build(&p->units, model, p->nranks, err, errlen))
        return false;
    if (!sharded(p)) {
        p->owned = malloc(sizeof *p->owned);
        if (p->owned) {
            p->owned[0] = (ts_param_interval){0, total};
            p->n_owned = 1;
            p->owned_count = total;
        }
    } else if (!build_pieces(p)) {
        p->owned = NULL;
    }
    if (!p->owned) {
        ts_parallel_free(p);
        snprintf(err, errlen, "out of memory for the shard layout of %ld elements", total);
        return false;
    }
    if (!per_unit_strategy) return true;
    /* zero2 and zero3 accumulate the reduced micro-batch gradients of their
     * ranges here; its pages are given back only before an evaluation or
     * checkpoint. */
    size_t n = (size_t)(p->owned_count > 0 ? p->owned_count : 1);
    p->grad_shard = ts_reals_reserve((long)n);
    if (!p->grad_shard) {
        ts_parallel_free(p);
        snprintf(err, errlen, "out of memory for the gradient shard (%zu elements)", n);
        return false;
    }
    return true;
}

void ts_parallel_free(ts_parallel *p) {
    if (p->model) {
        ts_real *params = p->strategy == TS_ZERO3 ? p->model->params : NULL;
        ts_real *grads = p->model->grads;
        /* The model would free() them: they are this strategy's reservations. */
        ts_model_set_buffers(p->model, p->strategy == TS_ZERO3 ? NULL : p->model->params, NULL);
        ts_reals_unreserve(params, p->total);
        ts_reals_unreserve(grads, p->total);
        p->model = NULL;
    }
    ts_param_units_free(&p->units);
    ts_reals_unreserve(p->grad_stage, p->grad_stage_elems);
    p->grad_stage = NULL;
    ts_reals_unreserve(p->grad_shard, p->owned_count > 0 ? p->owned_count : 1);
    p->grad_shard = NULL;
    free(p->pieces);
    free(p->owned);
    free(p->blocked);
    p->pieces = NULL;
    p->owned = NULL;
    p->blocked = NULL;
    p->n_blocked = 0;
    p->n_pieces = p->n_owned = 0;
}

void ts_parallel_batch_range(const ts_parallel *p, long total, long *first, long *count) {
    ts_shard_range(total, p->rank, p->nranks, first, count);
}

/* The piece that starts at element first (a unit's interval). */
static int piece_at(const ts_parallel *p, long first) {
    int lo = 0, hi = p->n_pieces - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (p->pieces[mid].first < first)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Elements of rank r's slice of piece i in round k of pieces of
 * p->max_piece, from *piece_first. */
static long round_of(const ts_parallel *p, int i, int r, long k, long *piece_first) {
    long start, n;
    ts_parallel_slice(p, i, r, &start, &n);
    long done = k * p->max_piece;
    *piece_first = start + done;
    if (done >= n) return 0;
    return n - done < p->max_piece ? n - done : p->max_piece;
}

static long rounds(const ts_parallel *p, int i) {
    return (p->pieces[i].slice + p->max_piece - 1) / p->max_piece;
}

/* Whether one call with int counts and displacements covers piece i. */
static bool fits_one_call(const ts_parallel *p, int i) {
    return p->pieces[i].slice <= p->max_piece && p->pieces[i].count <= INT_MAX;
}

/* counts[r] and displs[r] (relative to the piece) of every rank's slice. */
static void slice_counts(const ts_parallel *p, int i, int *counts, int *displs) {
    for (int r = 0; r < p->nranks; r++) {
        long first, count;
        ts_parallel_slice(p, i, r, &first, &count);
        counts[r] = (int)count;
        displs[r] = (int)(first - p->pieces[i].first);
    }
}

/* The time since `since` (an MPI_Wtime) added to p's collective_seconds. */
static void book_collective(ts_parallel *p, double since) {
    p->collective_seconds += MPI_Wtime() - since;
}

/* The sum over ranks of piece i, held at piece (its element q->first
 * there), in place: this rank's slice holds the sum of every rank's values
 * there afterwards (the rest is left undefined). MPI_Reduce_scatter when
 * int counts suffice (its in-place result lands at the piece's start and is
 * moved to the slice), else one MPI_Reduce per rank and round of at most
 * max_piece elements. */
static int reduce_scatter_piece_calls(ts_parallel *p, ts_real *piece, int i) {
    const ts_shard_piece *q = &p->pieces[i];
    if (p->nranks == 1 || q->count <= 0) return MPI_SUCCESS; /* the one rank owns everything */
    long mine_first, mine;
    ts_parallel_slice(p, i, p->rank, &mine_first, &mine);
    if (fits_one_call(p, i)) {
        int *counts = malloc(2 * (size_t)p->nranks * sizeof *counts);
        if (!counts) return MPI_ERR_NO_MEM;
        slice_counts(p, i, counts, counts + p->nranks);
        int rc = MPI_Reduce_scatter(MPI_IN_PLACE, piece, counts, TS_MPI_REAL, MPI_SUM, p->comm);
        free(counts);
        if (rc == MPI_SUCCESS && mine_first > q->first)
            memmove(piece + (mine_first - q->first), piece, (size_t)mine * sizeof *piece);
        p->bytes_sent += (double)(q->count - mine) * sizeof(ts_real);
        return rc;
    }
    for (long k = 0; k < rounds(p, i); k++)
        for (int r = 0; r < p->nranks; r++) {
            long piece_first, n = round_of(p, i, r, k, &piece_first);
            if (n == 0) continue;
            bool root = r == p->rank;
            ts_real *at = piece + (piece_first - q->first);
            int rc = MPI_Reduce(root ? MPI_IN_PLACE : at, root ? at : NULL, (int)n, TS_MPI_REAL,
                                MPI_SUM, r, p->comm);
            if (rc != MPI_SUCCESS) return rc;
            if (!root) p->bytes_sent += (double)n * sizeof(ts_real);
        }
    return MPI_SUCCESS;
}

/* The same, booked in collective_seconds. */
static int reduce_scatter_piece(ts_parallel *p, ts_real *piece, int i) {
    double t0 = MPI_Wtime();
    int rc = reduce_scatter_piece_calls(p, piece, i);
    book_collective(p, t0);
    return rc;
}

static int reduce_scatter(ts_parallel *p, ts_real *grads) {
    for (int i = 0; i < p->n_pieces; i++) {
        int rc = reduce_scatter_piece(p, grads + p->pieces[i].first, i);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

/* Every rank's slice of piece i of buf to every rank, in place. With
 * request (zero3) the one-call path is an MPI_Iallgatherv left in flight
 * (counts: 2 x nranks ints that must live until it completes); without,
 * MPI_Allgatherv. Cut into rounds, one MPI_Bcast (MPI_Ibcast and its wait,
 * with request: every rank uses the same kind of call for the same gather)
 * from each owner per round. */
static int allgather_piece_calls(ts_parallel *p, ts_real *buf, int i, MPI_Request *request,
                                 int *counts) {
    const ts_shard_piece *q = &p->pieces[i];
    if (request) *request = MPI_REQUEST_NULL;
    if (p->nranks == 1 || q->count <= 0) return MPI_SUCCESS;
    long mine_first, mine;
    ts_parallel_slice(p, i, p->rank, &mine_first, &mine);
    p->bytes_sent += (double)mine * sizeof(ts_real) * (p->nranks - 1);
    if (fits_one_call(p, i)) {
        int *own = counts ? NULL : malloc(2 * (size_t)p->nranks * sizeof *own);
        int *c = counts ? counts : own;
        if (!c) return MPI_ERR_NO_MEM;
        slice_counts(p, i, c, c + p->nranks);
        int rc = request ? MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + q->first, c,
                                           c + p->nranks, TS_MPI_REAL, p->comm, request)
                         : MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + q->first, c,
                                          c + p->nranks, TS_MPI_REAL, p->comm);
        free(own);
        return rc;
    }
    for (long k = 0; k < rounds(p, i); k++)
        for (int r = 0; r < p->nranks; r++) {
            long piece_first, n = round_of(p, i, r, k, &piece_first);
            if (n == 0) continue;
            int rc;
            if (request) {
                rc = MPI_Ibcast(buf + piece_first, (int)n, TS_MPI_REAL, r, p->comm, request);
                if (rc == MPI_SUCCESS) rc = MPI_Wait(request, MPI_STATUS_IGNORE);
            } else {
                rc = MPI_Bcast(buf + piece_first, (int)n, TS_MPI_REAL, r, p->comm);
            }
            if (rc != MPI_SUCCESS) return rc;
        }
    return MPI_SUCCESS;
}

/* Started (with request) or complete: booked in collective_seconds. */
static int allgather_piece(ts_parallel *p, ts_real *buf, int i, MPI_Request *request, int *counts) {
    double t0 = MPI_Wtime();
    int rc = allgather_piece_calls(p, buf, i, request, counts);
    book_collective(p, t0);
    return rc;
}

static int allgather(ts_parallel *p, ts_real *params) {
    for (int i = 0; i < p->n_pieces; i++) {
        int rc = allgather_piece(p, params, i, NULL, NULL);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

/* ------------------------------------------------- checkpoint exchange */

static long overlap(long a_first, long a_count, long b_first, long b_count) {
    long lo = a_first > b_first ? a_first : b_first;
    long hi = a_first + a_count < b_first + b_count ? a_first + a_count : b_first + b_count;
    return hi > lo ? hi - lo : 0;
}

/* An all-to-all of long counts and displacements: MPI_Alltoallv when they
 * fit int and max_piece, else point-to-point messages of at most max_piece
 * elements (all posted, then waited on). */
static int alltoallv_long(const ts_parallel *p, const ts_real *send, const long *scount,
                          const long *sdispl, ts_real *recv, const long *rcount,
                          const long *rdispl) {
    int n = p->nranks;
    bool fits = true;
    for (int r = 0; r < n; r++)
        fits = fits && scount[r] <= p->max_piece && rcount[r] <= p->max_piece &&
               sdispl[r] + scount[r] <= INT_MAX && rdispl[r] + rcount[r] <= INT_MAX;
    if (fits) {
        int *c = malloc(4 * (size_t)n * sizeof *c);
        if (!c) return MPI_ERR_NO_MEM;
        for (int r = 0; r < n; r++) {
            c[r] = (int)scount[r];
            c[n + r] = (int)sdispl[r];
            c[2 * n + r] = (int)rcount[r];
            c[3 * n + r] = (int)rdispl[r];
        }
        int rc = MPI_Alltoallv(send, c, c + n, TS_MPI_REAL, recv, c + 2 * n, c + 3 * n, TS_MPI_REAL,
                               p->comm);
        free(c);
        return rc;
    }
    long messages = 0;
    for (int r = 0; r < n; r++)
        messages += (scount[r] + p->max_piece - 1) / p->max_piece +
                    (rcount[r] + p->max_piece - 1) / p->max_piece;
    MPI_Request *req = malloc((size_t)(messages > 0 ? messages : 1) * sizeof *req);
    if (!req) return MPI_ERR_NO_MEM;
    int rc = MPI_SUCCESS;
    long posted = 0;
    for (int r = 0; r < n && rc == MPI_SUCCESS; r++)
        for (long done = 0; done < rcount[r] && rc == MPI_SUCCESS; done += p->max_piece) {
            long m = rcount[r] - done < p->max_piece ? rcount[r] - done : p->max_piece;
            rc = MPI_Irecv(recv + rdispl[r] + done, (int)m, TS_MPI_REAL, r, 0, p->comm,
                           &req[posted++]);
        }
    for (int r = 0; r < n && rc == MPI_SUCCESS; r++)
        for (long done = 0; done < scount[r] && rc == MPI_SUCCESS; done += p->max_piece) {
            long m = scount[r] - done < p->max_piece ? scount[r] - done : p->max_piece;
            rc = MPI_Isend(send + sdispl[r] + done, (int)m, TS_MPI_REAL, r, 0, p->comm,
                           &req[posted++]);
        }
    int wait = MPI_Waitall((int)posted, req, MPI_STATUSES_IGNORE);
    free(req);
    return rc != MPI_SUCCESS ? rc : wait;
}

/* Copies, for every rank r in order, r's slices inside this rank's
 * checkpoint range between the range (range) and a buffer packed by rank
 * (packed, r's elements at displ[r], in buffer order). */
static void pack_range(const ts_parallel *p, ts_real *range, ts_real *packed, const long *displ,
                       bool into_packed) {
    long first, count;
    ts_parallel_checkpoint_range(p, p->rank, &first, &count);
    for (int r = 0; r < p->nranks; r++) {
        long at = displ[r];
        for (int i = 0; i < p->n_pieces; i++) {
            long slice_first, slice_count;
            ts_parallel_slice(p, i, r, &slice_first, &slice_count);
            long n = overlap(slice_first, slice_count, first, count);
            if (n == 0) continue;
            long from = slice_first > first ? slice_first : first;
            ts_real *in_range = range + (from - first);
            if (into_packed)
                memcpy(packed + at, in_range, (size_t)n * sizeof *packed);
            else
                memcpy(in_range, packed + at, (size_t)n * sizeof *packed);
            at += n;
        }
    }
}

int ts_parallel_exchange_checkpoint_range(const ts_parallel *p, ts_real *owned, ts_real *range,
                                          bool to_range) {
    long first, count;
    ts_parallel_checkpoint_range(p, p->rank, &first, &count);
    if (p->nranks == 1) { /* one rank owns everything, in buffer order */
        if (to_range)
            memcpy(range, owned, (size_t)count * sizeof *range);
        else
            memcpy(owned, range, (size_t)count * sizeof *range);
        return MPI_SUCCESS;
    }
    int n = p->nranks;
    /* mine[r]: this rank's owned elements inside r's checkpoint range (a
     * run of the owned order, which is ascending); theirs[r]: r's owned
     * elements inside this rank's range. */
    long *c = calloc(4 * (size_t)n, sizeof *c);
    ts_real *packed = malloc((size_t)(count > 0 ? count : 1) * sizeof *packed);
    if (!c || !packed) {
        free(c);
        free(packed);
        return MPI_ERR_NO_MEM;
    }
    long *mine = c, *mine_at = c + n, *theirs = c + 2 * n, *theirs_at = c + 3 * n;
    for (int r = 0; r < n; r++) {
        long r_first, r_count;
        ts_parallel_checkpoint_range(p, r, &r_first, &r_count);
        for (int i = 0; i < p->n_pieces; i++) {
            long slice_first, slice_count;
            mine_at[r] += overlap(p->owned[i].first, p->owned[i].count, 0, r_first);
            mine[r] += overlap(p->owned[i].first, p->owned[i].count, r_first, r_count);
            ts_parallel_slice(p, i, r, &slice_first, &slice_count);
            theirs[r] += overlap(slice_first, slice_count, first, count);
        }
        theirs_at[r] = r > 0 ? theirs_at[r - 1] + theirs[r - 1] : 0;
    }
    int rc;
    if (to_range) {
        rc = alltoallv_long(p, owned, mine, mine_at, packed, theirs, theirs_at);
        if (rc == MPI_SUCCESS) pack_range(p, range, packed, theirs_at, false);
    } else {
        pack_range(p, range, packed, theirs_at, true);
        rc = alltoallv_long(p, packed, theirs, theirs_at, owned, mine, mine_at);
    }
    free(c);
    free(packed);
    return rc;
}

int ts_parallel_gather_owned(const ts_parallel *p, const ts_real *owned, ts_real *full) {
    long at = 0;
    for (int k = 0; k < p->n_owned; k++) {
        memcpy(full + p->owned[k].first, owned + at, (size_t)p->owned[k].count * sizeof *full);
        at += p->owned[k].count;
    }
    if (!sharded(p)) return MPI_SUCCESS;
    /* The parameters' all-gather, on a copy: a checkpoint's transfer is not
     * booked as a step's communication. */
    ts_parallel scratch = *p;
    return allgather(&scratch, full);
}

void ts_parallel_take_owned(const ts_parallel *p, const ts_real *full, ts_real *owned) {
    long at = 0;
    for (int k = 0; k < p->n_owned; k++) {
        memcpy(owned + at, full + p->owned[k].first, (size_t)p->owned[k].count * sizeof *owned);
        at += p->owned[k].count;
    }
}

/* ------------------------------------------------------------------ units
 * What zero2 and zero3 hold, unit by unit (param_units.h). */

/* Whether unit k's gradient accumulates in the stage: every block's does
 * when there is one; unit 0's stays in the flat buffer. */
static bool unit_in_stage(const ts_parallel *p, int k) {
    return p->grad_stage && k > 0;
}

static void note_memory(ts_parallel *p) {
    double held = 0, live = 0;
    for (int k = 0; k < p->units.count; k++) {
        const ts_param_unit *u = &p->units.units[k];
        if (u->resident) held += (double)(u->elems - u->owned_elems);
        /* A block's live gradient is in the stage, counted whole below. */
        if (u->grads_live && !unit_in_stage(p, k)) live += (double)u->elems;
    }
    if (p->grad_stage_live) live += (double)p->grad_stage_elems;
    if (p->strategy == TS_ZERO3) p->params_held = (double)p->owned_count + held;
    /* The reduced shard during a step, and the live units. */
    p->grads_held = (p->grad_shard_live ? (double)p->owned_count : 0) + live;
    if (p->params_held + p->grads_held > p->peak_params + p->peak_grads) {
        p->peak_params = p->params_held;
        p->peak_grads = p->grads_held;
    }
}

static void note_failure(ts_parallel *p, int rc) {
    if (rc != MPI_SUCCESS && p->failed == MPI_SUCCESS) p->failed = rc;
}

/* zero3: starts the gathers of unit k's intervals (MPI_Iallgatherv). */
static void start_gather(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    if (u->present || u->gathering) return;
    for (int j = 0; j < u->n_intervals; j++)
        note_failure(p, allgather_piece(p, p->model->params, piece_at(p, u->intervals[j].first),
                                        &u->requests[j], u->counts + 2 * (size_t)p->nranks * j));
    u->gathering = u->resident = true;
    p->gathering = k;
    note_memory(p);
}

static void wait_gather(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    if (!u->gathering) return;
    double t0 = MPI_Wtime();
    note_failure(p, MPI_Waitall(u->n_intervals, u->requests, MPI_STATUSES_IGNORE));
    book_collective(p, t0);
    u->gathering = false;
    u->present = true;
    if (p->gathering == k) p->gathering = -1;
}

/* zero3: unit k gathered, waiting for its gather if one is in flight (one
 * unit's gathers at a time: any other in flight completes first). */
static void ensure_present(ts_parallel *p, int k) {
    if (p->units.units[k].present) return;
    if (p->gathering >= 0 && p->gathering != k) wait_gather(p, p->gathering);
    start_gather(p, k);
    wait_gather(p, k);
}

/* zero3: starts unit k's gather one unit ahead of its use (overlapped with
 * the current unit's compute); the hook waits for it when the unit's turn
 * comes. */
static void prefetch(ts_parallel *p, int k) {
    if (k < 1 || k >= p->units.count || p->units.units[k].present || p->units.units[k].gathering)
        return;
    if (p->gathering >= 0) wait_gather(p, p->gathering);
    start_gather(p, k);
    p->prefetches_started++;
}

static void use_prefetched(ts_parallel *p, int k) {
    if (p->units.units[k].gathering) p->prefetches_waited++;
    ensure_present(p, k);
}

/* zero3: gives back unit k's parameters outside this rank's slices. */
static void release_unit(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    if (u->gathering) wait_gather(p, k);
    for (int j = 0; u->resident && j < u->n_intervals; j++) {
        long first = u->intervals[j].first, end = first + u->intervals[j].count;
        long own_first, own_count;
        ts_parallel_slice(p, piece_at(p, first), p->rank, &own_first, &own_count);
        /* The parts before and after the slice (an empty slice sits at the end). */
        if (own_first > first) ts_reals_discard(p->model->params, first, own_first - first);
        long own_end = own_first + own_count;
        if (end > own_end) ts_reals_discard(p->model->params, own_end, end - own_end);
    }
    u->resident = u->present = false;
    note_memory(p);
}

/* zero2, zero3: unit k's local gradient summed over ranks into the owned
 * shard, and zeros again where it was: a block's part of the stage (kept
 * mapped for the next), or unit 0's part of the flat buffer (given back). */
static void reduce_unit(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    bool staged = unit_in_stage(p, k);
    u->grads_live = true;
    note_memory(p);
    long stage_at = 0; /* the interval's first element in the stage */
    for (int j = 0; j < u->n_intervals; j++) {
        int i = piece_at(p, u->intervals[j].first);
        long count = u->intervals[j].count;
        ts_real *piece =
            staged ? p->grad_stage + stage_at : p->model->grads + u->intervals[j].first;
        note_failure(p, reduce_scatter_piece(p, piece, i));
        long mine_first, mine;
        ts_parallel_slice(p, i, p->rank, &mine_first, &mine);
        ts_real *shard = p->grad_shard + p->pieces[i].owned_at;
        const ts_real *reduced = piece + (mine_first - p->pieces[i].first);
        for (long e = 0; e < mine; e++) shard[e] += reduced[e];
        if (staged)
            memset(piece, 0, (size_t)count * sizeof *piece);
        else
            ts_reals_discard(piece, 0, count);
        stage_at += count;
    }
    u->grads_live = false;
    note_memory(p);
}

static _Noreturn void abort_unit_order(ts_parallel *p, int unit, ts_unit_event event,
                                       const char *why) {
    static const char *const names[] = {"forward begin", "forward end", "backward begin",
                                        "backward end"};
    fprintf(stderr,
            "thinkscale: rank %d: error: %s: block unit %d, %s, event %d of a micro-batch: %s\n",
            p->rank, ts_parallel_strategy_name(p->strategy), unit, names[event], p->next_event,
            why);
    MPI_Abort(p->comm, 2);
    abort(); /* MPI_Abort does not return */
}

/* The k-th unit event of a micro-batch over blocks 1 .. L: the forward's
 * begin and end of 1 .. L, then the backward's begin and end of L .. 1.
 * Every rank issues its collectives in this order (a rank without
 * sequences replays it), so every block's stack must run once per forward. */
static void expected_event(int blocks, int k, int *unit, ts_unit_event *event) {
    if (k < 2 * blocks) {
        *unit = k / 2 + 1;
        *event = k % 2 ? TS_UNIT_FORWARD_END : TS_UNIT_FORWARD_BEGIN;
    } else {
        *unit = blocks - (k - 2 * blocks) / 2;
        *event = (k - 2 * blocks) % 2 ? TS_UNIT_BACKWARD_END : TS_UNIT_BACKWARD_BEGIN;
    }
}

static void unit_hook(void *user, int unit, ts_unit_event event, bool into_leaf_grads) {
    ts_parallel *p = user;
    if (!p->per_unit) return;
    /* zero3 with every unit present (an evaluation, a checkpoint) gathers
     * and releases nothing; in a step it still reduces block by block. */
    bool move_units = p->strategy == TS_ZERO3 && !p->all_present;
    if (!p->in_step) {
        if (move_units)
            abort_unit_order(p, unit, event,
                             "the model ran outside a training step without its parameters "
                             "gathered (ts_parallel_gather_model)");
        return; /* an evaluation: nothing to gather or reduce */
    }
    int blocks = p->units.count - 1, want_unit;
    ts_unit_event want;
    if (p->next_event >= 4 * blocks)
        abort_unit_order(p, unit, event, "more unit events than one forward and backward");
    expected_event(blocks, p->next_event, &want_unit, &want);
    if (unit != want_unit || event != want)
        abort_unit_order(p, unit, event,
                         "out of order (the per-unit strategies need each block run once per "
                         "forward, in order)");
    if ((event == TS_UNIT_BACKWARD_BEGIN || event == TS_UNIT_BACKWARD_END) && !into_leaf_grads)
        abort_unit_order(p, unit, event,
                         "a gradient pass other than the backward (a model that differentiates "
                         "its own gradient must set gradient_graph_in_loss)");
    p->next_event++;
    switch (event) {
    case TS_UNIT_FORWARD_BEGIN:
        if (move_units) {
            use_prefetched(p, unit);
            prefetch(p, unit + 1);
        }
        break;
    case TS_UNIT_FORWARD_END:
        /* The last block is the backward's first: it stays. */
        if (move_units && unit < blocks) release_unit(p, unit);
        break;
    case TS_UNIT_BACKWARD_BEGIN:
        if (!ts_parallel_stage_is_clear(p))
            abort_unit_order(p, unit, event,
                             "a block's gradient was written outside its backward (a block "
                             "tensor used outside its unit markers, such as a weight tied to "
                             "the head): the per-unit strategies accumulate every block's "
                             "gradient in one stage, during that block's backward only");
        p->units.units[unit].grads_live = true;
        p->units.units[0].grads_live = true; /* the head's gradient came first */
        if (p->grad_stage) p->grad_stage_live = true;
        if (move_units) {
            use_prefetched(p, unit);
            prefetch(p, unit - 1);
        }
        note_memory(p);
        break;
    case TS_UNIT_BACKWARD_END:
        reduce_unit(p, unit);
        /* The first block is the next micro-batch's first: it stays. */
        if (move_units && unit > 1) release_unit(p, unit);
        break;
    }
}

bool ts_parallel_stage_is_clear(const ts_parallel *p) {
    bool written = false; /* no early exit: one vectorised pass */
    for (long i = 0; p->grad_stage && i < p->grad_stage_elems; i++)
        written |= p->grad_stage[i] != 0;
    return !written;
}

/* per_unit: the stage, and every block leaf's gradient pointed into it at
 * its offset within its unit (the unit's intervals one after another, so
 * tensors adjacent in the flat buffer stay adjacent and ts_adjacent_rows
 * still adds into them as one). False if out of address space. */
static bool stage_block_gradients(ts_parallel *p, ts_model *model) {
    long largest = 0;
    for (int k = 1; k < p->units.count; k++)
        if (p->units.units[k].elems > largest) largest = p->units.units[k].elems;
    p->grad_stage = ts_reals_reserve(largest);
    if (!p->grad_stage) return false;
    p->grad_stage_elems = largest;
    p->grad_stage_live = false;
    for (int i = 0; i < model->table.count; i++) {
        int k = ts_model_param_unit(model, i);
        ts_tensor *leaf = model->tensors[i];
        if (!unit_in_stage(p, k) || !leaf || !leaf->grad) continue;
        const ts_param_unit *u = &p->units.units[k];
        long offset = model->table.entries[i].offset, at = 0;
        for (int j = 0; j < u->n_intervals; j++) {
            const ts_param_interval *v = &u->intervals[j];
            if (offset >= v->first && offset < v->first + v->count) {
                leaf->grad->data = p->grad_stage + at + (offset - v->first);
                break;
            }
            at += v->count;
        }
    }
    return true;
}

bool ts_parallel_adopt_model(ts_parallel *p, ts_model *model, ts_ctx *ctx, char *err,
                             size_t errlen) {
    if (p->strategy != TS_ZERO2 && p->strategy != TS_ZERO3) return true;
    bool zero3 = p->strategy == TS_ZERO3;
    ts_real *grads = ts_reals_reserve(p->total);
    ts_real *params = zero3 ? ts_reals_reserve(p->total) : model->params;
    if (!grads || !params) {
        ts_reals_unreserve(grads, p->total);
        if (zero3) ts_reals_unreserve(params, p->total);
        snprintf(err, errlen, "cannot reserve %ld elements of address space for %s's buffers",
                 p->total, ts_parallel_strategy_name(p->strategy));
        return false;
    }
    for (int k = 0; k < p->units.count; k++) {
        ts_param_unit *u = &p->units.units[k];
        u->owned_elems = 0;
        for (int j = 0; j < u->n_intervals; j++) {
            long first, count;
            ts_parallel_slice(p, piece_at(p, u->intervals[j].first), p->rank, &first, &count);
            u->owned_elems += count;
        }
        u->resident = u->present = zero3; /* the initial or restored parameters */
    }
    if (zero3) {
        memcpy(params, model->params, (size_t)p->total * sizeof *params);
        free(model->params);
    }
    free(model->grads);
    ts_model_set_buffers(model, params, grads);
    p->model = model;
    p->all_present = zero3;
    p->per_unit = p->units.count > 1 && !(model->ops && model->ops->gradient_graph_in_loss);
    if (p->per_unit && !stage_block_gradients(p, model)) {
        snprintf(err, errlen, "cannot reserve address space for %s's gradient stage",
                 ts_parallel_strategy_name(p->strategy));
        return false;
    }
    p->peak_params = p->peak_grads = 0;
    p->params_held = (double)p->total;
    note_memory(p);
    if (p->per_unit) ts_ctx_set_unit_hook(ctx, unit_hook, p);
    return true;
}

void ts_parallel_begin_step(ts_parallel *p, ts_real *grads) {
    p->in_step = true;
    p->next_event = 0;
    /* The shard is zero unless a step left it live (gather_params zeroes
     * it after the optimiser; a step abandoned before that does not). */
    if (p->grad_shard && p->grad_shard_live && !p->grad_shard_kept)
        memset(p->grad_shard, 0, (size_t)p->owned_count * sizeof *p->grad_shard);
    p->grad_shard_live = p->grad_shard != NULL;
    p->grad_shard_kept = false;
    /* An adopted gradient buffer is zero between micro-batches already (each
     * reduction gives its pages back); writing it would commit every page. */
    if (p->model) {
        if (!p->per_unit) /* the backward writes the whole buffer */
            for (int k = 0; k < p->units.count; k++) p->units.units[k].grads_live = true;
        note_memory(p);
        return;
    }
    if (grads) memset(grads, 0, (size_t)p->total * sizeof *grads);
}

int ts_parallel_micro_batch_done(ts_parallel *p, ts_real *grads) {
    if (p->strategy != TS_ZERO2 && p->strategy != TS_ZERO3) return MPI_SUCCESS;
    if (!p->model) { /* not adopted (a caller with its own buffers): the whole buffer */
        int rc = reduce_scatter(p, grads);
        if (rc != MPI_SUCCESS) return rc;
        for (int i = 0; i < p->n_owned; i++) {
            ts_real *shard = p->grad_shard + p->pieces[i].owned_at;
            const ts_real *reduced = grads + p->owned[i].first;
            for (long e = 0; e < p->owned[i].count; e++) shard[e] += reduced[e];
        }
        memset(grads, 0, (size_t)p->total * sizeof *grads);
        return MPI_SUCCESS;
    }
    if (p->per_unit) {
        int blocks = p->units.count - 1;
        if (p->next_event == 0) { /* no sequence here: the others' collectives, in order */
            for (int k = 0; k < 4 * blocks; k++) {
                int unit;
                ts_unit_event event;
                expected_event(blocks, k, &unit, &event);
                unit_hook(p, unit, event, true);
            }
        } else if (p->next_event != 4 * blocks) {
            fprintf(stderr,
                    "thinkscale: rank %d: error: %s: a micro-batch ended after %d of its %d "
                    "block unit events\n",
                    p->rank, ts_parallel_strategy_name(p->strategy), p->next_event, 4 * blocks);
            MPI_Abort(p->comm, 2);
        }
        p->next_event = 0;
        reduce_unit(p, 0);
    } else {
        for (int k = 0; k < p->units.count; k++) reduce_unit(p, k);
    }
    int rc = p->failed;
    p->failed = MPI_SUCCESS;
    return rc;
}

int ts_parallel_reduce_gradients(ts_parallel *p, ts_real *grads) {
    p->in_step = false; /* the gradient is complete: what runs the model now evaluates */
    switch (p->strategy) {
    case TS_DDP: {
        p->bytes_sent += 2.0 * (double)p->total * sizeof(ts_real) * (p->nranks - 1) / p->nranks;
        double t0 = MPI_Wtime();
        int rc = ts_allreduce_sum(p->comm, grads, p->total);
        book_collective(p, t0);
        return rc;
    }
    case TS_ZERO1:
        return reduce_scatter(p, grads);
    default:
        return MPI_SUCCESS; /* zero2, zero3: reduced during and after every micro-batch */
    }
}

ts_real *ts_parallel_owned_gradients(ts_parallel *p, ts_real *grads) {
    /* ddp and zero1 own one range of the buffer (in place). */
    return p->grad_shard ? p->grad_shard : grads + p->owned[0].first;
}

bool ts_parallel_set_tensor_group(ts_parallel *p, MPI_Comm group, const ts_model *model, char *err,
                                  size_t errlen) {
    if (!model->layout) return true;
    const ts_param_table *t = &model->table;
    free(p->blocked);
    p->blocked = malloc((size_t)(t->count > 0 ? t->count : 1) * sizeof *p->blocked);
    if (!p->blocked) {
        snprintf(err, errlen, "out of memory for the tensor group's ranges");
        return false;
    }
    p->n_blocked = 0;
    for (int i = 0; i < t->count; i++)
        if (model->layout->blocked[i])
            p->blocked[p->n_blocked++] =
                (ts_param_interval){.first = t->entries[i].offset, .count = t->entries[i].numel};
    p->tensor_group = group;
    return true;
}

static double sum_squares(const ts_real *g, long first, long end) {
    double sum = 0;
    for (long i = first; i < end; i++) sum += (double)g[i] * g[i];
    return sum;
}

/* The owned gradient's (g, in the owned order) sums of squares, split into
 * whole tensors' (sums[0]) and blocks' (sums[1]). */
static void split_sum_squares(const ts_parallel *p, const ts_real *g, double sums[2]) {
    sums[0] = sums[1] = 0;
    long at = 0; /* where owned range k starts in the owned order */
    for (int k = 0; k < p->n_owned; k++) {
        long first = p->owned[k].first, end = first + p->owned[k].count, pos = first;
        for (int b = 0; b < p->n_blocked && pos < end; b++) {
            long lo = p->blocked[b].first, hi = lo + p->blocked[b].count;
            if (hi <= pos) continue;
            if (lo >= end) break;
            if (lo < pos) lo = pos;
            if (hi > end) hi = end;
            sums[0] += sum_squares(g, at + pos - first, at + lo - first);
            sums[1] += sum_squares(g, at + lo - first, at + hi - first);
            pos = hi;
        }
        sums[0] += sum_squares(g, at + pos - first, at + end - first);
        at += p->owned[k].count;
    }
}

/* x summed over the data-parallel ranks, booked in collective_seconds. */
static int allreduce_doubles(ts_parallel *p, double *x, int n) {
    double t0 = MPI_Wtime();
    int rc = ts_allreduce_sum_double(p->comm, x, n);
    book_collective(p, t0);
    return rc;
}

int ts_parallel_clip(ts_parallel *p, ts_real *grads, double clip, double *norm) {
    ts_real *g = ts_parallel_owned_gradients(p, grads);
    double sum = 0;
    if (p->blocked) {
        /* Summed over the data-parallel ranks (zero1/2/3: each owns a
         * part), the whole tensors' sum is that of the group's replicated
         * tensors, the blocks' this grid position's share. Both are gathered
         * over the group and added in group-rank order on every rank, the
         * whole tensors' taken from group rank 0, so the norm (and the clip
         * scale, and the replicated tensors) stay identical in a group even
         * where positions slice their buffers differently. */
        double sums[2];
        split_sum_squares(p, g, sums);
        if (sharded(p)) {
            int rc = allreduce_doubles(p, sums, 2);
            if (rc != MPI_SUCCESS) return rc;
        }
        int n = 0;
        MPI_Comm_size(p->tensor_group, &n);
        double *each = malloc(2 * (size_t)n * sizeof *each);
        if (!each) return MPI_ERR_NO_MEM;
        double t0 = MPI_Wtime();
        int rc = MPI_Allgather(sums, 2, MPI_DOUBLE, each, 2, MPI_DOUBLE, p->tensor_group);
        book_collective(p, t0);
        double blocked_total = 0;
        for (int r = 0; r < n; r++) blocked_total += each[2 * r + 1];
        sum = each[0] + blocked_total;
        free(each);
        if (rc != MPI_SUCCESS) return rc;
    } else {
        sum = sum_squares(g, 0, p->owned_count);
        if (sharded(p)) {
            int rc = allreduce_doubles(p, &sum, 1);
            if (rc != MPI_SUCCESS) return rc;
        }
    }
    *norm = sqrt(sum);
    if (clip > 0 && *norm > clip) {
        ts_real scale = (ts_real)(clip / (*norm + 1e-6));
        for (long i = 0; i < p->owned_count; i++) g[i] *= scale;
    }
    return MPI_SUCCESS;
}

/* The gradient shard and stage given back (zero2, zero3), before work
 * between steps: an evaluation's or checkpoint's gather. */
static void give_back_gradients(ts_parallel *p) {
    if (p->grad_shard_live) ts_reals_discard(p->grad_shard, 0, p->owned_count);
    if (p->grad_stage_live) ts_reals_discard(p->grad_stage, 0, p->grad_stage_elems);
    bool changed = p->grad_shard_live || p->grad_stage_live;
    p->grad_shard_live = p->grad_shard_kept = p->grad_stage_live = false;
    if (changed && p->model) note_memory(p);
}

int ts_parallel_gather_params(ts_parallel *p, ts_real *params) {
    if (!sharded(p)) return MPI_SUCCESS;
    /* The optimiser has used the shard: zeroed for the next step, its pages
     * kept with the stage's (zeroed by each block's reduction) until work
     * between steps needs the memory (give_back_gradients). Given back here,
     * the next backward wrote every page again, and on a VM that shadows
     * the page tables each such write costs an exit (~6 us a page: ~25 ms
     * of zero3's step on 2 ranks at the benchmark size; twenty-ninth round,
     * docs/performance.md). Both are part of the step's peak anyway. */
    if (p->grad_shard && p->grad_shard_live) {
        memset(p->grad_shard, 0, (size_t)p->owned_count * sizeof *p->grad_shard);
        p->grad_shard_kept = true;
    }
    if (p->strategy != TS_ZERO3) return allgather(p, params);
    /* The owned ranges changed: every gathered copy is stale, though its
     * pages stay until the release (a gather refreshes them in place). */
    for (int k = 0; k < p->units.count; k++) p->units.units[k].present = false;
    p->all_present = false;
    return MPI_SUCCESS;
}

bool ts_parallel_model_present(const ts_parallel *p, const ts_model *model) {
    (void)model;
    return p->strategy != TS_ZERO3 || !p->model || p->all_present;
}

int ts_parallel_gather_model(ts_parallel *p, ts_model *model, bool with_gradient) {
    (void)model;
    if (!with_gradient) give_back_gradients(p);
    if (p->strategy != TS_ZERO3 || !p->model) return MPI_SUCCESS;
    if (with_gradient) {
        if (p->per_unit) {
            ensure_present(p, 0);
            prefetch(p, 1); /* the first block's gather overlaps unit 0's forward */
            int rc = p->failed;
            p->failed = MPI_SUCCESS;
            return rc;
        }
    }
    if (p->all_present) return MPI_SUCCESS;
    for (int k = 0; k < p->units.count; k++) ensure_present(p, k);
    p->all_present = true;
    int rc = p->failed;
    p->failed = MPI_SUCCESS;
    return rc;
}

int ts_parallel_release_model(ts_parallel *p, ts_model *model) {
    (void)model;
    p->in_step = false;
    if (p->strategy != TS_ZERO3 || !p->model) return MPI_SUCCESS;
    for (int k = 0; k < p->units.count; k++) release_unit(p, k);
    p->all_present = false;
    int rc = p->failed;
    p->failed = MPI_SUCCESS;
    return rc;
}

void ts_parallel_memory_held(const ts_parallel *p, double *parameters, double *gradients) {
    double full = (double)p->total;
    *parameters = (p->model ? p->peak_params : full) * sizeof(ts_real);
    *gradients =
        (p->model ? p->peak_grads : full + (p->grad_shard ? p->owned_count : 0)) * sizeof(ts_real);
}

ts_parallel_memory ts_parallel_memory_estimate(ts_parallel_strategy strategy, long total,
                                               long working, int nranks, size_t elem,
                                               int moments_per_param) {
    double full = (double)total * (double)elem;
    double shard = (double)((total + nranks - 1) / nranks) * (double)elem;
    double units = (double)(working < total ? working : total) * (double)elem;
    ts_parallel_memory m = {
        .parameters = full, .gradients = full, .optimizer = moments_per_param * full};
    switch (strategy) {
    case TS_DDP:
        break;
    case TS_ZERO1:
        /* The gradient is reduced in place: the backward's full buffer only. */
        m.optimizer = moments_per_param * shard;
        break;
    case TS_ZERO2:
        /* The accumulated shard and the units the backward has not reduced yet. */
        m.gradients = shard + units;
        m.optimizer = moments_per_param * shard;
        break;
    case TS_ZERO3:
        /* Between steps the parameter and moment shards (12/N; no gradient
         * outlives a step); during a step the shards and the working units
         * of parameters and gradient (an upper bound: the owned part of a
         * unit is counted twice). An evaluation or checkpoint gathers the
         * full parameters, with no gradient but the shard. */
        m.parameters = shard + units > full ? full : shard + units;
        m.gradients = shard + units;
        m.optimizer = moments_per_param * shard;
        m.between_steps = shard + m.optimizer;
        return m;
    }
    m.between_steps = m.parameters + m.gradients + m.optimizer;
    return m;
}

long ts_parallel_working_elems(const ts_model *model) {
    if (model->ops && model->ops->gradient_graph_in_loss) return model->table.total;
    long rest = 0, first = 0, second = 0;
    int max_unit = 0;
    for (int i = 0; i < model->table.count; i++) {
        int u = ts_model_param_unit(model, i);
        if (u > max_unit) max_unit = u;
    }
    for (int u = 0; u <= max_unit; u++) {
        long n = 0;
        for (int i = 0; i < model->table.count; i++)
            if (ts_model_param_unit(model, i) == u) n += model->table.entries[i].numel;
        if (u == 0) {
            rest = n;
        } else if (n > first) {
            second = first;
            first = n;
        } else if (n > second) {
            second = n;
        }
    }
    return max_unit == 0 ? model->table.total : rest + first + second;
}

static double memory_sum(ts_parallel_memory m) {
    return m.parameters + m.gradients + m.optimizer;
}

bool ts_parallel_fits(ts_parallel_strategy strategy, long total, long working, int nranks,
                      size_t elem, int moments_per_param, double limit, char *message, size_t len) {
    double need = memory_sum(
        ts_parallel_memory_estimate(strategy, total, working, nranks, elem, moments_per_param));
    if (limit <= 0 || need <= limit) return true;
    int used = snprintf(message, len,
                        "parallel.memory_limit is %.0f bytes per rank, but %ld parameters under "
                        "%s on %d ranks need %.0f bytes of parameters, gradients and moments "
                        "(activations come on top). Per strategy:",
                        limit, total, ts_parallel_strategy_name(strategy), nranks, need);
    const char *fitting = NULL;
    for (int s = TS_DDP; s <= TS_ZERO3 && used >= 0 && (size_t)used < len; s++) {
        double bytes = memory_sum(ts_parallel_memory_estimate(
            (ts_parallel_strategy)s, total, working, nranks, elem, moments_per_param));
        bool fits = bytes <= limit;
        if (fits && !fitting) fitting = strategy_names[s];
        used += snprintf(message + used, len - (size_t)used, " %s %.0f%s%s", strategy_names[s],
                         bytes, fits ? " (fits)" : "", s == TS_ZERO3 ? "" : ",");
    }
    if (used >= 0 && (size_t)used < len)
        snprintf(message + used, len - (size_t)used, ". %s%s", fitting ? "Use " : "",
                 fitting ? fitting : "No strategy fits: use more ranks or a smaller model");
    return false;
}
