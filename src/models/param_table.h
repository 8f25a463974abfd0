/* Named parameter tensors laid out back to back in one flat buffer per role
 * (values, gradients, optimiser moments), as llm.c does: one MPI call or one
 * HDF5 write covers a whole role, and the table gives every tensor its name,
 * shape and offset so checkpoints stay readable tensor by tensor. */
#ifndef TS_PARAM_TABLE_H
#define TS_PARAM_TABLE_H

#include <stdbool.h>

#define TS_PARAM_NAME_MAX 64

typedef struct ts_param_entry {
    char name[TS_PARAM_NAME_MAX]; /* e.g. "layers.0.attention.wq" */
    int ndim;
    int shape[4];
    long offset;                  /* in elements, into every flat buffer */
    long numel;
    bool decay;                   /* weight decay applies (matrices, not norms) */
    double lr_scale;              /* multiplies the learning rate (1 unless a model says) */
} ts_param_entry;

typedef struct ts_param_table {
    ts_param_entry *entries;
    int count;
    int capacity;
    long total;                   /* elements in each flat buffer */
} ts_param_table;

/* Appends a tensor at offset `total`; returns its index, or -1 when out of
 * memory or the name is too long or already present. */
int ts_param_table_add(ts_param_table *table, const char *name, int ndim, const int *shape,
                       bool decay);
/* Index of the named entry, or -1. */
int ts_param_table_find(const ts_param_table *table, const char *name);
void ts_param_table_free(ts_param_table *table);

#endif
