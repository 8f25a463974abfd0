#include "core/param_table.h"

#include <stdlib.h>
#include <string.h>

int ts_param_table_add(ts_param_table *table, const char *name, int ndim, const int *shape,
                       ts_param_role role) {
    if (strlen(name) >= TS_PARAM_NAME_MAX || ndim < 1 || ndim > 4) return -1;
    if (role.init == TS_INIT_XAVIER_NORMAL && ndim != 2) return -1;
    if (ts_param_table_find(table, name) >= 0) return -1;
    if (table->count == table->capacity) {
        int capacity = table->capacity ? 2 * table->capacity : 32;
        ts_param_entry *entries = realloc(table->entries, (size_t)capacity * sizeof *entries);
        if (!entries) return -1;
        table->entries = entries;
        table->capacity = capacity;
    }
    ts_param_entry *e = &table->entries[table->count];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->ndim = ndim;
    e->numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return -1;
        e->shape[i] = shape[i];
        e->numel *= shape[i];
    }
    e->offset = table->total;
    e->role = role;
    e->decay = role.decay;
    e->lr_scale = 1;
    table->total += e->numel;
    return table->count++;
}

int ts_param_table_find(const ts_param_table *table, const char *name) {
    for (int i = 0; i < table->count; i++)
        if (!strcmp(table->entries[i].name, name)) return i;
    return -1;
}

long ts_param_table_non_embedding(const ts_param_table *table) {
    long n = 0;
    for (int i = 0; i < table->count; i++)
        if (!table->entries[i].role.embedding) n += table->entries[i].numel;
    return n;
}

void ts_param_table_free(ts_param_table *table) {
    free(table->entries);
    *table = (ts_param_table){0};
}
