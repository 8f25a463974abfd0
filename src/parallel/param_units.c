#define _DEFAULT_SOURCE /* madvise */
#include "parallel/param_units.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "models/model.h"

/* Appends entry [first, first + count) to unit, merging it with the last
 * interval when they touch. */
static bool add_interval(ts_param_unit *unit, long first, long count) {
    if (unit->n_intervals > 0) {
        ts_param_interval *last = &unit->intervals[unit->n_intervals - 1];
        if (last->first + last->count == first) {
            last->count += count;
            unit->elems += count;
            return true;
        }
    }
    ts_param_interval *grown =
        realloc(unit->intervals, (size_t)(unit->n_intervals + 1) * sizeof *grown);
    if (!grown) return false;
    unit->intervals = grown;
    unit->intervals[unit->n_intervals++] = (ts_param_interval){first, count};
    unit->elems += count;
    return true;
}

bool ts_param_units_build(ts_param_units *u, const ts_model *model, int nranks, char *err,
                          size_t errlen) {
    *u = (ts_param_units){0};
    int count = 1;
    for (int i = 0; i < model->table.count; i++) {
        int unit = ts_model_param_unit(model, i);
        if (unit + 1 > count) count = unit + 1;
    }
    u->units = calloc((size_t)count, sizeof *u->units);
    bool ok = u->units != NULL;
    if (ok) u->count = count;
    for (int i = 0; ok && i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        ok = add_interval(&u->units[ts_model_param_unit(model, i)], e->offset, e->numel);
    }
    for (int k = 0; ok && k < u->count; k++) {
        ts_param_unit *unit = &u->units[k];
        size_t n = (size_t)(unit->n_intervals > 0 ? unit->n_intervals : 1);
        unit->requests = malloc(n * sizeof *unit->requests);
        unit->counts = malloc(n * 2 * (size_t)nranks * sizeof *unit->counts);
        ok = unit->requests && unit->counts;
        for (int j = 0; ok && j < unit->n_intervals; j++) unit->requests[j] = MPI_REQUEST_NULL;
    }
    if (!ok) {
        ts_param_units_free(u);
        snprintf(err, errlen, "out of memory for the parameter units of %d tensors",
                 model->table.count);
    }
    return ok;
}

void ts_param_units_free(ts_param_units *u) {
    for (int k = 0; u->units && k < u->count; k++) {
        free(u->units[k].intervals);
        free(u->units[k].requests);
        free(u->units[k].counts);
    }
    free(u->units);
    *u = (ts_param_units){0};
}

static size_t bytes_of(long n) {
    return (size_t)(n > 0 ? n : 1) * sizeof(ts_real);
}

ts_real *ts_reals_reserve(long n) {
    void *p = mmap(NULL, bytes_of(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void ts_reals_unreserve(ts_real *buffer, long n) {
    if (buffer) munmap(buffer, bytes_of(n));
}

/* The pages wholly inside the range are offered back with MADV_FREE: the
 * kernel takes them when it needs memory (reclaimed like clean page cache,
 * under a cgroup's limit too, without swap), and until then the next write
 * finds them mapped, with no page fault (a VM that shadows the page tables
 * still traps once per page). MADV_DONTNEED took them at once and the next
 * backward or gather faulted every page back in and had it zeroed again: on
 * a VM computing at 200 GFLOP/s that cost one-rank zero3 a sixth of its
 * step (docs/parallelism.md). Zeroed first, a page reads as zeros whether
 * the kernel kept it or took it; should the advice fail, it simply stays. */
void ts_reals_discard(ts_real *buffer, long first, long count) {
    if (count <= 0) return;
    memset(buffer + first, 0, (size_t)count * sizeof *buffer);
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = (uintptr_t)(buffer + first), end = (uintptr_t)(buffer + first + count);
    uintptr_t inner_begin = (begin + page - 1) / page * page, inner_end = end / page * page;
    if (inner_end > inner_begin)
        (void)madvise((void *)inner_begin, inner_end - inner_begin, MADV_FREE);
}
