#include "core/nexus_config.h"

static const ts_config_key keys[] = {
    TS_CONFIG_INT_KEY(ts_nexus_config, "order", order, 2, "attention order in training", false),
    TS_CONFIG_INT_KEY(ts_nexus_config, "infer_order", infer_order, 0,
                      "attention order at inference (0: as trained)", true),
    TS_CONFIG_STRING_KEY(ts_nexus_config, "variant", variant, "shared",
                         "shared, unshared or selfrefine", false),
};

/* The model validates these when it is built (nexus_model_setup). */
const ts_config_section ts_nexus_config_section = {"nexus", keys,
                                                   (int)(sizeof keys / sizeof keys[0]), NULL};
