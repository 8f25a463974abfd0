/* The EBT presets "s1" and "s2": the settings of the official training
 * scripts (../shared/specs/ebt.md, table "Training"). A preset fills only the
 * [ebt] keys the user did not set, which only the run configuration knows;
 * ts_config_validate therefore resolves it before the model sees its config. */
#ifndef TS_EBT_PRESET_H
#define TS_EBT_PRESET_H

#include <stdbool.h>
#include <stddef.h>

#include "cli/config.h"

/* Applies config->model.ebt.preset ("" does nothing) to every [ebt] key that
 * was not set explicitly. False with a message for an unknown preset. */
bool ebt_apply_preset(ts_run_config *config, char *err, size_t errlen);

#endif
