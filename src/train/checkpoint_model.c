#include "train/checkpoint_model.h"

#include "io/checkpoint.h"

ts_model *ts_model_from_checkpoint(MPI_Comm comm, const char *path, ts_run_config *config,
                                   long *step, char *err, size_t errlen) {
    ts_checkpoint_info info;
    if (ts_checkpoint_read_info(comm, path, &info, err, errlen) != TS_IO_OK) return NULL;
    ts_config_defaults(config);
    bool ok = ts_config_load_string(config, info.config_text, path, err, errlen);
    *step = info.step;
    ts_checkpoint_info_free(&info);
    if (!ok) return NULL;
    ts_model *model = ts_model_create(&config->model, err, errlen);
    if (!model) return NULL;
    ts_saved_role params = ts_saved_params(&model->table, model->params);
    if (ts_checkpoint_read(comm, path, NULL, &params, 1, NULL, err, errlen) != TS_IO_OK) {
        ts_model_destroy(model);
        return NULL;
    }
    return model;
}
