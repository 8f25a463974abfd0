/* The [nexus] keys of Nexus higher-order attention (../shared/specs/nexus.md,
 * docs/nexus.md). */
#ifndef TS_NEXUS_CONFIG_H
#define TS_NEXUS_CONFIG_H

#include "core/config_schema.h"

typedef struct ts_nexus_config {
    int order;        /* attention order m used in training */
    int infer_order;  /* at inference (0: as in training) */
    char variant[16]; /* "shared", "unshared" or "selfrefine" */
} ts_nexus_config;

extern const ts_config_section ts_nexus_config_section;

#endif
