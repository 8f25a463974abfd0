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
    *p = (ts_parallel){.comm = comm, .strategy = strategy, .total = total, .max_piece = INT_MAX};
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->nranks);
    p->shard = (total + p->nranks - 1) / p->nranks;
    ts_parallel_owned_range(p, p->rank, &p->owned_first, &p->owned_count);
    if (strategy != TS_ZERO2) return true;
    /* zero2 accumulates the reduced micro-batch gradients of its range here. */
    size_t n = (size_t)(p->owned_count > 0 ? p->owned_count : 1);
    p->grad_shard = calloc(n, sizeof *p->grad_shard);
    if (!p->grad_shard) {
        ts_parallel_free(p);
        snprintf(err, errlen, "out of memory for the gradient shard (%zu elements)", n);
        return false;
    }
    return true;
}

void ts_parallel_free(ts_parallel *p) {
    free(p->grad_shard);
    free(p->param_shard);
    p->grad_shard = NULL;
    p->param_shard = NULL;
}

void ts_parallel_batch_range(const ts_parallel *p, long total, long *first, long *count) {
    ts_shard_range(total, p->rank, p->nranks, first, count);
}

/* Elements of rank r's range in round k of pieces of p->max_piece. */
static long piece_of(const ts_parallel *p, int r, long k, long *first) {
    long start, count;
    ts_parallel_owned_range(p, r, &start, &count);
    long done = k * p->max_piece;
    *first = start + done;
    if (done >= count) return 0;
    return count - done < p->max_piece ? count - done : p->max_piece;
}

static long rounds(const ts_parallel *p) {
    return (p->shard + p->max_piece - 1) / p->max_piece;
}

/* Whether one call with int counts and displacements covers the buffers. */
static bool fits_one_call(const ts_parallel *p) {
    return p->shard <= p->max_piece && p->total <= INT_MAX;
}

/* The sum over ranks of grads, in place: rank r's range of grads holds the
 * sum of every rank's range r afterwards (the rest is left undefined).
 * MPI_Reduce_scatter when int counts suffice (its in-place result lands at
 * the start of the buffer and is moved to the range), else one MPI_Reduce
 * per rank and round of at most max_piece elements. */
static int reduce_scatter(ts_parallel *p, ts_real *grads) {
    if (p->nranks == 1) return MPI_SUCCESS; /* the one rank owns everything */
    if (fits_one_call(p)) {
        int *counts = malloc((size_t)p->nranks * sizeof *counts);
        if (!counts) return MPI_ERR_NO_MEM;
        for (int r = 0; r < p->nranks; r++) {
            long first, count;
            ts_parallel_owned_range(p, r, &first, &count);
            counts[r] = (int)count;
        }
        int rc = MPI_Reduce_scatter(MPI_IN_PLACE, grads, counts, TS_MPI_REAL, MPI_SUM, p->comm);
        free(counts);
        if (rc == MPI_SUCCESS && p->owned_first > 0)
            memmove(grads + p->owned_first, grads, (size_t)p->owned_count * sizeof *grads);
        p->bytes_sent += (double)(p->total - p->owned_count) * sizeof(ts_real);
        return rc;
    }
    for (long k = 0; k < rounds(p); k++)
        for (int r = 0; r < p->nranks; r++) {
            long first, n = piece_of(p, r, k, &first);
            if (n == 0) continue;
            bool root = r == p->rank;
            int rc = MPI_Reduce(root ? MPI_IN_PLACE : grads + first, root ? grads + first : NULL,
                                (int)n, TS_MPI_REAL, MPI_SUM, r, p->comm);
            if (rc != MPI_SUCCESS) return rc;
            if (!root) p->bytes_sent += (double)n * sizeof(ts_real);
        }
    return MPI_SUCCESS;
}

void ts_parallel_begin_step(ts_parallel *p, ts_real *grads) {
    if (!grads) return; /* zero3 between steps: nothing to zero */
    memset(grads, 0, (size_t)p->total * sizeof *grads);
    if (p->strategy == TS_ZERO2)
        memset(p->grad_shard, 0, (size_t)p->owned_count * sizeof *p->grad_shard);
}

int ts_parallel_micro_batch_done(ts_parallel *p, ts_real *grads) {
    if (p->strategy != TS_ZERO2) return MPI_SUCCESS;
    int rc = reduce_scatter(p, grads);
    if (rc != MPI_SUCCESS) return rc;
    const ts_real *reduced = grads + p->owned_first;
    for (long i = 0; i < p->owned_count; i++) p->grad_shard[i] += reduced[i];
    memset(grads, 0, (size_t)p->total * sizeof *grads);
    return MPI_SUCCESS;
}

int ts_parallel_reduce_gradients(ts_parallel *p, ts_real *grads) {
    switch (p->strategy) {
    case TS_DDP:
        p->bytes_sent += 2.0 * (double)p->total * sizeof(ts_real) * (p->nranks - 1) / p->nranks;
        return ts_allreduce_sum(p->comm, grads, p->total);
    case TS_ZERO1:
    case TS_ZERO3:
        return reduce_scatter(p, grads);
    default:
        return MPI_SUCCESS; /* zero2: reduced after every micro-batch */
    }
}

ts_real *ts_parallel_owned_gradients(ts_parallel *p, ts_real *grads) {
    return p->strategy == TS_ZERO2 ? p->grad_shard : grads + p->owned_first;
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

/* Every rank's owned range of params to every rank, in place. */
static int allgather(ts_parallel *p, ts_real *params) {
    if (p->nranks == 1) return MPI_SUCCESS;
    p->bytes_sent += (double)p->owned_count * sizeof(ts_real) * (p->nranks - 1);
    if (fits_one_call(p)) {
        int *counts = malloc(2 * (size_t)p->nranks * sizeof *counts);
        if (!counts) return MPI_ERR_NO_MEM;
        int *displs = counts + p->nranks;
        for (int r = 0; r < p->nranks; r++) {
            long first, count;
            ts_parallel_owned_range(p, r, &first, &count);
            counts[r] = (int)count;
            displs[r] = (int)first;
        }
        int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, counts, displs,
                                TS_MPI_REAL, p->comm);
        free(counts);
        return rc;
    }
    for (long k = 0; k < rounds(p); k++)
        for (int r = 0; r < p->nranks; r++) {
            long first, n = piece_of(p, r, k, &first);
            if (n == 0) continue;
            int rc = MPI_Bcast(params + first, (int)n, TS_MPI_REAL, r, p->comm);
            if (rc != MPI_SUCCESS) return rc;
        }
    return MPI_SUCCESS;
}

int ts_parallel_gather_params(ts_parallel *p, ts_real *params) {
    /* zero3 keeps its updated range when the model is released. */
    if (!sharded(p) || p->strategy == TS_ZERO3) return MPI_SUCCESS;
    return allgather(p, params);
}

bool ts_parallel_model_present(const ts_parallel *p, const ts_model *model) {
    return p->strategy != TS_ZERO3 || model->params != NULL;
}

/* zero3 keeps the owned range at the start of one allocation between steps
 * and grows it in place (realloc) to the full buffer when the model is
 * gathered, so the rank holds the full parameters or its shard, not both. */
int ts_parallel_gather_model(ts_parallel *p, ts_model *model, bool with_gradient) {
    if (p->strategy != TS_ZERO3) return MPI_SUCCESS;
    bool need_params = !model->params, need_grads = with_gradient && !model->grads;
    if (!need_params && !need_grads) return MPI_SUCCESS; /* the same on every rank */
    size_t total = (size_t)p->total;
    ts_real *grads = need_grads ? calloc(total, sizeof *grads) : model->grads;
    bool ok = !need_grads || grads;
    ts_real *params = model->params;
    if (ok && need_params) {
        params = realloc(p->param_shard, total * sizeof *params);
        if (params) p->param_shard = params; /* the shard is still at its start */
        ok = params != NULL;
    }
    /* Every rank learns whether every rank has the memory before any enters
     * the gather, so one rank out of memory does not leave the rest waiting. */
    int mine = ok, every = 0;
    int rc = MPI_Allreduce(&mine, &every, 1, MPI_INT, MPI_MIN, p->comm);
    if (rc != MPI_SUCCESS || !every) {
        if (need_grads) free(grads);
        return rc != MPI_SUCCESS ? rc : MPI_ERR_NO_MEM;
    }
    ts_model_set_buffers(model, params, grads); /* the model owns them from here */
    if (!need_params) return MPI_SUCCESS;
    p->param_shard = NULL;
    memmove(params + p->owned_first, params, (size_t)p->owned_count * sizeof *params);
    return allgather(p, params);
}

int ts_parallel_release_model(ts_parallel *p, ts_model *model) {
    if (p->strategy != TS_ZERO3 || !model->params) return MPI_SUCCESS;
    ts_real *params = model->params;
    free(model->grads);
    ts_model_set_buffers(model, NULL, NULL);
    memmove(params, params + p->owned_first, (size_t)p->owned_count * sizeof *params);
    size_t keep = (size_t)(p->owned_count > 0 ? p->owned_count : 1);
    ts_real *shard = realloc(params, keep * sizeof *params);
    p->param_shard = shard ? shard : params; /* a failed shrink keeps the larger block */
    return MPI_SUCCESS;
}

ts_parallel_memory ts_parallel_memory_estimate(ts_parallel_strategy strategy, long total,
                                               int nranks, size_t elem, int moments_per_param) {
    double full = (double)total * (double)elem;
    double shard = (double)((total + nranks - 1) / nranks) * (double)elem;
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
        /* The backward's full buffer and the accumulated shard. */
        m.gradients = full + shard;
        m.optimizer = moments_per_param * shard;
        break;
    case TS_ZERO3:
        /* Between steps the parameter and moment shards (12/N; no gradient
         * outlives a step); during a step, an evaluation or a checkpoint the
         * full parameters and gradients of the whole model are held
         * (docs/parallelism.md: per-layer gathering is not implemented), so
         * the peak is zero1's. */
        m.optimizer = moments_per_param * shard;
        m.between_steps = shard + m.optimizer;
        return m;
    }
    m.between_steps = m.parameters + m.gradients + m.optimizer;
    return m;
}

double ts_parallel_shard_gradient_bytes(const ts_parallel *p) {
    return p->grad_shard ? (double)p->owned_count * sizeof(ts_real) : 0;
}

static double memory_sum(ts_parallel_memory m) {
    return m.parameters + m.gradients + m.optimizer;
}

bool ts_parallel_fits(ts_parallel_strategy strategy, long total, int nranks, size_t elem,
                      int moments_per_param, double limit, char *message, size_t len) {
    double need =
        memory_sum(ts_parallel_memory_estimate(strategy, total, nranks, elem, moments_per_param));
    if (limit <= 0 || need <= limit) return true;
    int used = snprintf(message, len,
                        "parallel.memory_limit is %.0f bytes per rank, but %ld parameters under "
                        "%s on %d ranks need %.0f bytes of parameters, gradients and moments "
                        "(activations come on top). Per strategy:",
                        limit, total, ts_parallel_strategy_name(strategy), nranks, need);
    const char *fitting = NULL;
    for (int s = TS_DDP; s <= TS_ZERO3 && used >= 0 && (size_t)used < len; s++) {
        double bytes = memory_sum(ts_parallel_memory_estimate((ts_parallel_strategy)s, total,
                                                              nranks, elem, moments_per_param));
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
