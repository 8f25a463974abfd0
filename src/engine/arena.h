/* A chunked bump allocator for everything a step creates: tensor headers,
 * graph nodes and tensor data. Releasing to a mark keeps the chunks, so a
 * training step that repeats the same allocations does no malloc after the
 * first step (arena.n_mallocs stops growing; a unit test checks it). */
#ifndef TS_ARENA_H
#define TS_ARENA_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ts_chunk {
    struct ts_chunk *next;
    size_t size;
    size_t used;
    unsigned char *base;
} ts_chunk;

typedef struct ts_arena {
    ts_chunk *first;
    ts_chunk *current;
    size_t chunk_size; /* default size of a new chunk */
    long n_mallocs;    /* chunks ever allocated */
    size_t reserved;   /* bytes held in chunks */
    size_t in_use;     /* bytes handed out since the last release */
    size_t high_water; /* largest in_use seen */
} ts_arena;

typedef struct ts_arena_mark {
    ts_chunk *chunk;
    size_t used;
    size_t in_use;
} ts_arena_mark;

void ts_arena_init(ts_arena *arena, size_t chunk_size);
void ts_arena_free(ts_arena *arena);
/* 64-byte aligned; NULL when the system is out of memory. */
void *ts_arena_alloc(ts_arena *arena, size_t bytes);
ts_arena_mark ts_arena_get_mark(const ts_arena *arena);
void ts_arena_release(ts_arena *arena, ts_arena_mark mark);
/* Whether p points into memory handed out since mark (and not released). */
bool ts_arena_allocated_since(const ts_arena *arena, ts_arena_mark mark, const void *p);

#endif
