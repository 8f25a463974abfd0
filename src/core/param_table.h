/* Named parameter tensors laid out back to back in one flat buffer per role
 * (values, gradients, optimiser moments), as llm.c does: one MPI call or one
 * HDF5 write covers a whole buffer, and the table gives every tensor its name,
 * shape and offset so checkpoints stay readable tensor by tensor.
 *
 * Each tensor declares, when it is registered, how it is initialised, whether
 * weight decay applies and whether it counts as an embedding; nothing is
 * inferred from names or shapes. The table sits below models/ and io/: models
 * fill it, checkpoints store it, the optimiser walks it. */
#ifndef TS_PARAM_TABLE_H
#define TS_PARAM_TABLE_H

#include <stdbool.h>

#define TS_PARAM_NAME_MAX 64

/* The distribution a tensor's initial values are drawn from. */
typedef enum ts_param_init {
    TS_INIT_ONES,          /* every element 1: norm scales */
    TS_INIT_NORMAL,        /* N(0, 1): embeddings, learned queries */
    TS_INIT_XAVIER_NORMAL, /* N(0, 2 / (shape[0] + shape[1])): linear layers [out, in] */
    TS_INIT_ZEROS,         /* every element 0 */
    TS_INIT_ARCHITECTURE,  /* set by the architecture's own init_params; draws nothing */
} ts_param_init;

/* When, in the single generator stream of ts_model_init_params, a drawn
 * initialisation (TS_INIT_NORMAL, TS_INIT_XAVIER_NORMAL) takes its numbers.
 * The order is part of the model: changing it changes every initial value
 * after the tensor for a given seed. */
typedef enum ts_param_draw {
    TS_DRAW_IN_ORDER, /* in table order with the others */
    TS_DRAW_AFTER,    /* after every TS_DRAW_IN_ORDER tensor, in table order */
    /* As TS_DRAW_AFTER, but the in-order pass still advances the generator by
     * this tensor's element count of N(0, 1) draws (values then discarded):
     * the stream of models whose earlier versions drew this tensor there. */
    TS_DRAW_AFTER_RESERVING,
} ts_param_draw;

/* What a tensor is, as far as training and accounting care. */
typedef struct ts_param_role {
    ts_param_init init;
    ts_param_draw draw;
    bool decay;     /* weight decay applies */
    bool embedding; /* excluded from the non-embedding parameter count N (the N of 6N FLOPs):
                     * token embeddings and vocabulary projections */
    bool linear;    /* read only as the w of ts_linear (models/linear.h), never directly: tensor
                     * parallelism may then hold it as this rank's blocks only
                     * (core/block_cyclic.h), so a model that reads such a tensor in any other
                     * way must register it with a role where this is false */
} ts_param_role;

/* The common roles. */
/* A linear layer's weight [out, in], used through ts_linear only. */
#define TS_ROLE_MATRIX ((ts_param_role){TS_INIT_XAVIER_NORMAL, TS_DRAW_IN_ORDER, true, false, true})
/* A Xavier-initialised, decayed matrix the model reads directly (a lookup
 * table multiplied by ts_matmul, say): always held whole. */
#define TS_ROLE_TABLE_MATRIX                                                                       \
    ((ts_param_role){TS_INIT_XAVIER_NORMAL, TS_DRAW_IN_ORDER, true, false, false})
#define TS_ROLE_NORM ((ts_param_role){TS_INIT_ONES, TS_DRAW_IN_ORDER, false, false, false})
#define TS_ROLE_EMBEDDING ((ts_param_role){TS_INIT_NORMAL, TS_DRAW_IN_ORDER, false, true, false})
/* A vocabulary projection: a linear layer (through ts_linear), decayed, outside N. */
#define TS_ROLE_VOCAB_MATRIX                                                                       \
    ((ts_param_role){TS_INIT_XAVIER_NORMAL, TS_DRAW_IN_ORDER, true, true, true})

typedef struct ts_param_entry {
    char name[TS_PARAM_NAME_MAX]; /* e.g. "layers.0.attention.wq" */
    int ndim;
    int shape[4];
    long offset; /* in elements, into every flat buffer */
    long numel;
    ts_param_role role;
    bool decay;      /* role.decay, kept here for the optimiser and checkpoints */
    double lr_scale; /* multiplies the learning rate (1 unless a model says) */
} ts_param_entry;

typedef struct ts_param_table {
    ts_param_entry *entries;
    int count;
    int capacity;
    long total; /* elements in each flat buffer */
} ts_param_table;

/* Appends a tensor at offset `total`; returns its index, or -1 when out of
 * memory, the shape is invalid (a Xavier-normal tensor needs 2 dimensions),
 * or the name is too long or already present. */
int ts_param_table_add(ts_param_table *table, const char *name, int ndim, const int *shape,
                       ts_param_role role);
/* Index of the named entry, or -1. */
int ts_param_table_find(const ts_param_table *table, const char *name);
/* Elements of the tensors that are not embeddings: the N of 6N FLOPs. */
long ts_param_table_non_embedding(const ts_param_table *table);
void ts_param_table_free(ts_param_table *table);

#endif
