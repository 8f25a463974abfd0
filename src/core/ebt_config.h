/* The [ebt] keys of the Energy-Based Transformer (../shared/specs/ebt.md,
 * docs/ebt.md): its settings struct, key table and the presets "s1"/"s2". */
#ifndef TS_EBT_CONFIG_H
#define TS_EBT_CONFIG_H

#include "core/config_schema.h"

/* Names follow the official code's options where one exists. */
typedef struct ts_ebt_config {
    char preset[8];           /* "", "s1" or "s2": the spec's table, applied before other keys */
    int steps;                /* mcmc_num_steps */
    int landscapes;           /* time embeddings; step t uses min(t, landscapes - 1); 0: steps */
    double step_size;         /* alpha */
    int step_size_learnable;  /* alpha is a parameter */
    double step_size_lr_mult; /* its learning-rate multiplier */
    double step_size_random_scale; /* s: alpha ~ U[alpha/s, alpha*s] per (sample, position); <= 1
                                      off */
    int random_steps;              /* extra steps drawn per forward, uniform in [0, random_steps] */
    double langevin_noise;         /* sigma of noise on the logits every step; 0 off */
    int replay_size;               /* replay buffer entries per rank; 0 off */
    double replay_fraction;        /* share of a batch started from the buffer */
    char mode[8];                  /* "s1": detach between steps; "s2": no detach, truncated */
    char loss_on[8];               /* "mean" over steps or "final" step only */
    char init[8];                  /* initial logits: "random" N(0, init_scale^2) or "zero" */
    double init_scale;
    /* Inference ("System 2"): 0 means "as in training". */
    int infer_steps;
    int infer_samples; /* self-verification candidates G (1: off) */
    double infer_step_size;
    double infer_noise; /* 0: as in training; < 0: none */
} ts_ebt_config;

/* [ebt]: keys over ts_ebt_config; its resolve hook applies ebt.preset to
 * every key not set explicitly (false for an unknown preset). */
extern const ts_config_section ts_ebt_config_section;

#endif
