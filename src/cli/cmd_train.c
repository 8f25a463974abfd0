/* thinkscale train CONFIG.ini [--set section.key=value ...] [--resume | --resume-from FILE] */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/config.h"
#include "cli/spmd_command.h"
#include "train/trainer.h"

static void train_usage(FILE *out) {
    fprintf(out, "usage: thinkscale train CONFIG.ini [--set section.key=value ...]\n"
                 "                        [--resume | --resume-from CHECKPOINT.h5]\n"
                 "       thinkscale train --help-config\n"
                 "  Trains the configured model on all ranks of MPI_COMM_WORLD.\n"
                 "  --resume       continue from the newest complete checkpoint in run.dir that\n"
                 "                 verifies (a damaged newer one is reported and skipped)\n"
                 "  --resume-from  continue from this complete checkpoint; later checkpoints\n"
                 "                 in run.dir are replaced as the run reaches their steps\n"
                 "  --help-config  list every configuration key with its default\n");
}

typedef struct train_args {
    ts_run_config config;
    bool resume;
    const char *resume_from; /* NULL: the newest checkpoint that verifies */
} train_args;

/* Arguments, then the configuration file, then the overrides. */
static bool parse_train_args(int argc, char **argv, void *out, char *err, size_t errlen) {
    train_args *a = out;
    ts_run_config *config = &a->config;
    bool *resume = &a->resume;
    ts_config_defaults(config);
    *resume = false;
    a->resume_from = NULL;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--resume")) {
            *resume = true;
        } else if (!strcmp(argv[i], "--resume-from")) {
            if (i + 1 == argc) {
                snprintf(err, errlen, "--resume-from needs a checkpoint file");
                return false;
            }
            a->resume_from = argv[++i];
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 == argc) {
                snprintf(err, errlen, "--set needs section.key=value");
                return false;
            }
            i++; /* applied after the file, below */
        } else if (argv[i][0] == '-') {
            snprintf(err, errlen, "unknown option '%s'", argv[i]);
            return false;
        } else if (path) {
            snprintf(err, errlen, "more than one configuration file ('%s', '%s')", path, argv[i]);
            return false;
        } else {
            path = argv[i];
        }
    }
    if (*resume && a->resume_from) {
        snprintf(err, errlen, "--resume and --resume-from exclude each other");
        return false;
    }
    if (!path) {
        snprintf(err, errlen, "no configuration file given");
        return false;
    }
    if (!ts_config_load_file(config, path, err, errlen)) return false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--set") && !ts_config_set(config, argv[++i], err, errlen))
            return false;
    return ts_config_validate(config, err, errlen);
}

static int run_train(MPI_Comm comm, void *args) {
    train_args *a = args;
    return ts_train_resume_from(comm, &a->config, a->resume, a->resume_from);
}

int ts_cmd_train(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--help-config")) {
        ts_config_print_keys(stdout);
        return 0;
    }
    static const ts_spmd_command command = {"train", train_usage, parse_train_args, run_train};
    static train_args args; /* large: keep it off the stack */
    return ts_run_spmd_command(&command, argc, argv, &args);
}
