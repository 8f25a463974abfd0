#include "core/free_config.h"

static const ts_config_key keys[] = {
    TS_CONFIG_INT_KEY(ts_free_config, "latent_bits", latent_bits, 8, "H: the latent has 2^H states",
                      false),
    TS_CONFIG_DOUBLE_KEY(ts_free_config, "kappa", kappa, 0.34657359027997264 /* log(2)/2 */,
                         "free bits per token (nats)", false),
    TS_CONFIG_INT_KEY(ts_free_config, "eval_samples", eval_samples, 1,
                      "K prior samples per scored sequence", true),
    TS_CONFIG_INT_KEY(ts_free_config, "eval_posterior", eval_posterior, 1,
                      "1: also report the encoder-posterior number", true),
    TS_CONFIG_STRING_KEY(
        ts_free_config, "injection", injection, "before_norm",
        "before_norm: K/V of block L/2+1 from RMSNorm(X + R); after_norm: RMSNorm(X) + R", false),
};

/* The model validates these when it is built (free_model_setup). */
const ts_config_section ts_free_config_section = {"free", keys, (int)(sizeof keys / sizeof keys[0]),
                                                  NULL};
