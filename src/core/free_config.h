/* The [free] keys of the Free Transformer (../shared/specs/free-transformer.md,
 * docs/free-transformer.md). */
#ifndef TS_FREE_CONFIG_H
#define TS_FREE_CONFIG_H

#include "core/config_schema.h"

typedef struct ts_free_config {
    int latent_bits;    /* H: Z has 2^H states */
    double kappa;       /* free bits per token, nats */
    int eval_samples;   /* K latent samples from the prior per scored sequence */
    int eval_posterior; /* 1: also report the (leaking) encoder-posterior number */
    char injection[16]; /* "before_norm": K/V from RMSNorm(X + R); "after_norm": RMSNorm(X) + R */
} ts_free_config;

extern const ts_config_section ts_free_config_section;

#endif
