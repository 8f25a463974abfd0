/* The optimiser's settings, part of the run configuration; the optimiser
 * itself is in train/optimizer.h. */
#ifndef TS_OPTIMIZER_CONFIG_H
#define TS_OPTIMIZER_CONFIG_H

typedef enum ts_optimizer_kind { TS_ADAMW, TS_SGD } ts_optimizer_kind;

typedef struct ts_optimizer_config {
    ts_optimizer_kind kind;
    double lr;
    double min_lr_ratio; /* cosine floor as a fraction of lr (0.1 in the reference) */
    long warmup_steps;
    long total_steps;
    double beta1, beta2, eps;
    double weight_decay; /* decoupled, only on entries with decay set */
    double clip;         /* global gradient-norm bound; <= 0 disables */
} ts_optimizer_config;

#endif
