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

void ts_parallel_owned_range(const ts_parallel *p, int rank, long *first, long *count) {
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

bool ts_parallel_init(ts_parallel *p, MPI_Comm comm, ts_parallel_strategy strategy, long total,
                      char *err, size_t errlen) {
    *p = (ts_parallel){.comm = comm,
                       .strategy = strategy,
                       .total = total,
                       .max_piece = INT_MAX,
                       .gathering = -1,
                       .failed = MPI_SUCCESS};
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->nranks);
    p->shard = (total + p->nranks - 1) / p->nranks;
    ts_parallel_owned_range(p, p->rank, &p->owned_first, &p->owned_count);
    p->params_held = p->grads_held = (double)total; /* until a model is adopted */
    if (strategy != TS_ZERO2 && strategy != TS_ZERO3) return true;
    /* zero2 and zero3 accumulate the reduced micro-batch gradients of their
     * range here. */
    size_t n = (size_t)(p->owned_count > 0 ? p->owned_count : 1);
    p->grad_shard = ts_reals_reserve((long)n); /* its pages are given back between steps */
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
    ts_reals_unreserve(p->grad_shard, p->owned_count > 0 ? p->owned_count : 1);
    p->grad_shard = NULL;
}

void ts_parallel_batch_range(const ts_parallel *p, long total, long *first, long *count) {
    ts_shard_range(total, p->rank, p->nranks, first, count);
}

/* Rank r's part of [first, first + count): the intersection with its owned
 * range (count 0 when they do not meet). */
static void part_of(const ts_parallel *p, int r, long first, long count, long *part_first,
                    long *part_count) {
    long start, n;
    ts_parallel_owned_range(p, r, &start, &n);
    long lo = start > first ? start : first;
    long hi = start + n < first + count ? start + n : first + count;
    *part_first = lo;
    *part_count = hi > lo ? hi - lo : 0;
}

/* Elements of rank r's part of [first, first + count) in round k of pieces
 * of p->max_piece, from *piece_first. */
static long piece_of(const ts_parallel *p, int r, long first, long count, long k,
                     long *piece_first) {
    long start, n;
    part_of(p, r, first, count, &start, &n);
    long done = k * p->max_piece;
    *piece_first = start + done;
    if (done >= n) return 0;
    return n - done < p->max_piece ? n - done : p->max_piece;
}

static long rounds(const ts_parallel *p) {
    return (p->shard + p->max_piece - 1) / p->max_piece;
}

/* Whether one call with int counts and displacements covers count elements
 * (every rank's part is at most the shard). */
static bool fits_one_call(const ts_parallel *p, long count) {
    return p->shard <= p->max_piece && count <= INT_MAX;
}

/* counts[r] and displs[r] (relative to first) of every rank's part. */
static void part_counts(const ts_parallel *p, long first, long count, int *counts, int *displs) {
    for (int r = 0; r < p->nranks; r++) {
        long part_first, part_count;
        part_of(p, r, first, count, &part_first, &part_count);
        counts[r] = (int)part_count;
        displs[r] = (int)(part_first - first);
    }
}

/* The sum over ranks of buf[first, first + count), in place: this rank's
 * part holds the sum of every rank's values there afterwards (the rest is
 * left undefined). MPI_Reduce_scatter when int counts suffice (its in-place
 * result lands at buf + first and is moved to the part), else one
 * MPI_Reduce per rank and round of at most max_piece elements. */
static int reduce_scatter_range(ts_parallel *p, ts_real *buf, long first, long count) {
    if (p->nranks == 1 || count <= 0) return MPI_SUCCESS; /* the one rank owns everything */
    long mine_first, mine;
    part_of(p, p->rank, first, count, &mine_first, &mine);
    if (fits_one_call(p, count)) {
        int *counts = malloc(2 * (size_t)p->nranks * sizeof *counts);
        if (!counts) return MPI_ERR_NO_MEM;
        part_counts(p, first, count, counts, counts + p->nranks);
        int rc =
            MPI_Reduce_scatter(MPI_IN_PLACE, buf + first, counts, TS_MPI_REAL, MPI_SUM, p->comm);
        free(counts);
        if (rc == MPI_SUCCESS && mine_first > first)
            memmove(buf + mine_first, buf + first, (size_t)mine * sizeof *buf);
        p->bytes_sent += (double)(count - mine) * sizeof(ts_real);
        return rc;
    }
    for (long k = 0; k < rounds(p); k++)
        for (int r = 0; r < p->nranks; r++) {
            long piece_first, n = piece_of(p, r, first, count, k, &piece_first);
            if (n == 0) continue;
            bool root = r == p->rank;
            int rc =
                MPI_Reduce(root ? MPI_IN_PLACE : buf + piece_first, root ? buf + piece_first : NULL,
                           (int)n, TS_MPI_REAL, MPI_SUM, r, p->comm);
            if (rc != MPI_SUCCESS) return rc;
            if (!root) p->bytes_sent += (double)n * sizeof(ts_real);
        }
    return MPI_SUCCESS;
}

static int reduce_scatter(ts_parallel *p, ts_real *grads) {
    return reduce_scatter_range(p, grads, 0, p->total);
}

/* Every rank's part of buf[first, first + count) to every rank, in place.
 * With request (zero3) the one-call path is an MPI_Iallgatherv left in
 * flight (counts: 2 x nranks ints that must live until it completes);
 * without, MPI_Allgatherv. Cut into rounds, one MPI_Bcast (MPI_Ibcast and
 * its wait, with request: every rank uses the same kind of call for the
 * same gather) from each owner per round. */
static int allgather_range(ts_parallel *p, ts_real *buf, long first, long count,
                           MPI_Request *request, int *counts) {
    if (request) *request = MPI_REQUEST_NULL;
    if (p->nranks == 1 || count <= 0) return MPI_SUCCESS;
    long mine_first, mine;
    part_of(p, p->rank, first, count, &mine_first, &mine);
    p->bytes_sent += (double)mine * sizeof(ts_real) * (p->nranks - 1);
    if (fits_one_call(p, count)) {
        int *own = counts ? NULL : malloc(2 * (size_t)p->nranks * sizeof *own);
        int *c = counts ? counts : own;
        if (!c) return MPI_ERR_NO_MEM;
        part_counts(p, first, count, c, c + p->nranks);
        int rc = request ? MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + first, c,
                                           c + p->nranks, TS_MPI_REAL, p->comm, request)
                         : MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + first, c,
                                          c + p->nranks, TS_MPI_REAL, p->comm);
        free(own);
        return rc;
    }
    for (long k = 0; k < rounds(p); k++)
        for (int r = 0; r < p->nranks; r++) {
            long piece_first, n = piece_of(p, r, first, count, k, &piece_first);
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

static int allgather(ts_parallel *p, ts_real *params) {
    return allgather_range(p, params, 0, p->total, NULL, NULL);
}

/* ------------------------------------------------------------------ units
 * What zero2 and zero3 hold, unit by unit (param_units.h). */

static void note_memory(ts_parallel *p) {
    double held = 0, live = 0;
    for (int k = 0; k < p->units.count; k++) {
        const ts_param_unit *u = &p->units.units[k];
        if (u->resident) held += (double)(u->elems - u->owned_elems);
        if (u->grads_live) live += (double)u->elems;
    }
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
        note_failure(p, allgather_range(p, p->model->params, u->intervals[j].first,
                                        u->intervals[j].count, &u->requests[j],
                                        u->counts + 2 * (size_t)p->nranks * j));
    u->gathering = u->resident = true;
    p->gathering = k;
    note_memory(p);
}

static void wait_gather(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    if (!u->gathering) return;
    note_failure(p, MPI_Waitall(u->n_intervals, u->requests, MPI_STATUSES_IGNORE));
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

/* zero3: gives back unit k's parameters outside the owned range. */
static void release_unit(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    if (u->gathering) wait_gather(p, k);
    for (int j = 0; u->resident && j < u->n_intervals; j++) {
        long first = u->intervals[j].first, end = first + u->intervals[j].count;
        long own_end = p->owned_first + p->owned_count;
        /* The parts before and after the owned range. */
        long before_end = end < p->owned_first ? end : p->owned_first;
        if (before_end > first) ts_reals_discard(p->model->params, first, before_end - first);
        long after_first = first > own_end ? first : own_end;
        if (end > after_first) ts_reals_discard(p->model->params, after_first, end - after_first);
    }
    u->resident = u->present = false;
    note_memory(p);
}

/* zero2, zero3: unit k's local gradient summed over ranks into the owned
 * shard, and its part of the gradient buffer given back (zeros again). */
static void reduce_unit(ts_parallel *p, int k) {
    ts_param_unit *u = &p->units.units[k];
    ts_real *grads = p->model->grads;
    u->grads_live = true;
    note_memory(p);
    for (int j = 0; j < u->n_intervals; j++) {
        long first = u->intervals[j].first, count = u->intervals[j].count;
        note_failure(p, reduce_scatter_range(p, grads, first, count));
        long mine_first, mine;
        part_of(p, p->rank, first, count, &mine_first, &mine);
        ts_real *shard = p->grad_shard + (mine_first - p->owned_first);
        for (long i = 0; i < mine; i++) shard[i] += grads[mine_first + i];
        ts_reals_discard(grads, first, count);
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
        p->units.units[unit].grads_live = true;
        p->units.units[0].grads_live = true; /* the head's gradient came first */
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

bool ts_parallel_adopt_model(ts_parallel *p, ts_model *model, ts_ctx *ctx, char *err,
                             size_t errlen) {
    if (p->strategy != TS_ZERO2 && p->strategy != TS_ZERO3) return true;
    if (!ts_param_units_build(&p->units, model, p->nranks, err, errlen)) return false;
    bool zero3 = p->strategy == TS_ZERO3;
    ts_real *grads = ts_reals_reserve(p->total);
    ts_real *params = zero3 ? ts_reals_reserve(p->total) : model->params;
    if (!grads || !params) {
        ts_reals_unreserve(grads, p->total);
        if (zero3) ts_reals_unreserve(params, p->total);
        ts_param_units_free(&p->units);
        snprintf(err, errlen, "cannot reserve %ld elements of address space for %s's buffers",
                 p->total, ts_parallel_strategy_name(p->strategy));
        return false;
    }
    for (int k = 0; k < p->units.count; k++) {
        ts_param_unit *u = &p->units.units[k];
        for (int j = 0; j < u->n_intervals; j++) {
            long first, count;
            part_of(p, p->rank, u->intervals[j].first, u->intervals[j].count, &first, &count);
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
    p->peak_params = p->peak_grads = 0;
    p->params_held = (double)p->total;
    note_memory(p);
    if (p->per_unit) ts_ctx_set_unit_hook(ctx, unit_hook, p);
    return true;
}

void ts_parallel_begin_step(ts_parallel *p, ts_real *grads) {
    p->in_step = true;
    p->next_event = 0;
    if (p->grad_shard) memset(p->grad_shard, 0, (size_t)p->owned_count * sizeof *p->grad_shard);
    p->grad_shard_live = p->grad_shard != NULL;
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
        const ts_real *reduced = grads + p->owned_first;
        for (long i = 0; i < p->owned_count; i++) p->grad_shard[i] += reduced[i];
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
    case TS_DDP:
        p->bytes_sent += 2.0 * (double)p->total * sizeof(ts_real) * (p->nranks - 1) / p->nranks;
        return ts_allreduce_sum(p->comm, grads, p->total);
    case TS_ZERO1:
        return reduce_scatter(p, grads);
    default:
        return MPI_SUCCESS; /* zero2, zero3: reduced during and after every micro-batch */
    }
}

ts_real *ts_parallel_owned_gradients(ts_parallel *p, ts_real *grads) {
    return p->grad_shard ? p->grad_shard : grads + p->owned_first;
}

int ts_parallel_clip(ts_parallel *p, ts_real *grads, double clip, double *norm) {
    ts_real *g = ts_parallel_owned_gradients(p, grads);
    double sum = 0;
    for (long i = 0; i < p->owned_count; i++) sum += (double)g[i] * g[i];
    if (sharded(p)) {
        int rc = ts_allreduce_sum_double(p->comm, &sum, 1);
        if (rc != MPI_SUCCESS) return rc;
    }
    *norm = sqrt(sum);
    if (clip > 0 && *norm > clip) {
        ts_real scale = (ts_real)(clip / (*norm + 1e-6));
        for (long i = 0; i < p->owned_count; i++) g[i] *= scale;
    }
    return MPI_SUCCESS;
}

int ts_parallel_gather_params(ts_parallel *p, ts_real *params) {
    if (!sharded(p)) return MPI_SUCCESS;
    if (p->grad_shard) { /* the optimiser has used it: no gradient outlives the step */
        ts_reals_discard(p->grad_shard, 0, p->owned_count);
        p->grad_shard_live = false;
        if (p->model) note_memory(p);
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
