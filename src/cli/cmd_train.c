/* thinkscale train CONFIG.ini [--set section.key=value ...] [--resume] */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/config.h"
#include "train/trainer.h"

static void train_usage(FILE *out) {
    fprintf(out, "usage: thinkscale train CONFIG.ini [--set section.key=value ...] [--resume]\n"
                 "       thinkscale train --help-config\n"
                 "  Trains the configured model on all ranks of MPI_COMM_WORLD.\n"
                 "  --resume       continue from the newest complete checkpoint in run.dir\n"
                 "  --help-config  list every configuration key with its default\n");
}

/* Parses arguments and the configuration identically on every rank, so all
 * ranks agree on success or failure without communicating. */
static bool parse_args(int argc, char **argv, ts_run_config *config, bool *resume, char *err,
                       size_t errlen) {
    ts_config_defaults(config);
    *resume = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--resume")) {
            *resume = true;
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

int ts_cmd_train(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        train_usage(stdout);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--help-config")) {
        ts_config_print_keys(stdout);
        return 0;
    }
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "thinkscale: MPI_Init failed\n");
        return 1;
    }
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ts_run_config config;
    bool resume;
    char err[1024];
    int status;
    if (!parse_args(argc, argv, &config, &resume, err, sizeof err)) {
        if (rank == 0) {
            fprintf(stderr, "thinkscale train: error: %s\n", err);
            train_usage(stderr);
        }
        status = 2;
    } else {
        status = ts_train(MPI_COMM_WORLD, &config, resume);
    }
    MPI_Finalize();
    return status;
}
