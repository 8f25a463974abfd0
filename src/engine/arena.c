/* madvise and MADV_HUGEPAGE (Linux), beside the POSIX the build asks for */
#define _DEFAULT_SOURCE
#include "engine/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define TS_ALIGN 64

/* Chunks of at least one huge page (2 MiB on x86-64) are aligned to it and
 * offered to the kernel's transparent huge pages (madvise; with the common
 * setting `madvise` the kernel backs nothing with huge pages unless asked).
 * A step's activations are tens of MB read in passes and by GEMMs' packing
 * loops; on 4 KiB pages every 4 KiB is a TLB entry, and the step times
 * scattered more (eighth round, docs/performance.md). A hint: where the
 * kernel has no huge pages, or no madvise, the chunk is ordinary memory. */
#define TS_HUGE_PAGE ((size_t)2 << 20)

static void *chunk_memory(size_t size) {
    size_t align = size < TS_HUGE_PAGE ? TS_ALIGN : TS_HUGE_PAGE;
    size_t whole = (size + align - 1) / align * align; /* aligned_alloc wants a multiple */
    void *p = aligned_alloc(align, whole);
#ifdef MADV_HUGEPAGE
    if (p && align == TS_HUGE_PAGE)
        (void)madvise(p, whole, MADV_HUGEPAGE); /* a hint: its failure changes nothing */
#endif
    return p;
}

void ts_arena_init(ts_arena *arena, size_t chunk_size) {
    *arena = (ts_arena){.chunk_size = chunk_size ? chunk_size : (size_t)64 << 20};
}

void ts_arena_free(ts_arena *arena) {
    ts_chunk *c = arena->first;
    while (c) {
        ts_chunk *next = c->next;
        free(c->base);
        free(c);
        c = next;
    }
    *arena = (ts_arena){.chunk_size = arena->chunk_size};
}

static ts_chunk *new_chunk(ts_arena *arena, size_t min_bytes) {
    size_t size = min_bytes > arena->chunk_size ? min_bytes : arena->chunk_size;
    ts_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->base = chunk_memory(size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = NULL;
    arena->n_mallocs++;
    arena->reserved += size;
    return c;
}

void *ts_arena_alloc(ts_arena *arena, size_t bytes) {
    size_t need = (bytes + TS_ALIGN - 1) / TS_ALIGN * TS_ALIGN;
    if (need == 0) need = TS_ALIGN;
    ts_chunk *c = arena->current;
    /* Chunks after the current one are free (kept from before a release):
     * reuse the first one large enough, skipping smaller ones. */
    while (c && c->size - c->used < need) {
        ts_chunk *next = c->next;
        if (next) next->used = 0;
        c = next;
    }
    if (!c) {
        c = new_chunk(arena, need);
        if (!c) return NULL;
        if (arena->current) {
            ts_chunk *tail = arena->current;
            while (tail->next) tail = tail->next;
            tail->next = c;
        } else {
            arena->first = c;
        }
    }
    arena->current = c;
    void *p = c->base + c->used;
    c->used += need;
    arena->in_use += need;
    if (arena->in_use > arena->high_water) arena->high_water = arena->in_use;
    return p;
}

ts_arena_mark ts_arena_get_mark(const ts_arena *arena) {
    return (ts_arena_mark){arena->current, arena->current ? arena->current->used : 0,
                           arena->in_use};
}

void ts_arena_release(ts_arena *arena, ts_arena_mark mark) {
    if (mark.chunk) {
        arena->current = mark.chunk;
        mark.chunk->used = mark.used;
    } else {
        arena->current = arena->first;
        if (arena->first) arena->first->used = 0;
    }
    arena->in_use = mark.in_use;
}

bool ts_arena_allocated_since(const ts_arena *arena, ts_arena_mark mark, const void *p) {
    uintptr_t at = (uintptr_t)p;
    size_t from = mark.chunk ? mark.used : 0;
    for (const ts_chunk *c = mark.chunk ? mark.chunk : arena->first; c; c = c->next, from = 0) {
        uintptr_t base = (uintptr_t)c->base;
        if (at >= base + from && at < base + c->used) return true;
        if (c == arena->current) break; /* chunks after it are free */
    }
    return false;
}
