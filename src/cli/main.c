/* thinkscale COMMAND [ARGS]: dispatches to the subcommands in commands.h. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "train/machine_peak.h"

static const ts_command commands[] = {
    {"data",
     "make token files from text or generators, or check one (data convert | info | dyck | arith)",
     ts_cmd_data},
    {"train", "train a model from an INI configuration (SPMD, under mpirun)", ts_cmd_train},
    {"eval", "perplexity of a checkpoint on token sets (SPMD, under mpirun)", ts_cmd_eval},
    {"free-letters", "the Free Transformer's synthetic letter experiment (under mpirun)",
     ts_cmd_free_letters},
    {"campaign", "scaling campaigns: plan, run (under mpirun), submit to Slurm, analyse",
     ts_cmd_campaign},
    {"version", "print the build's element type and version", ts_cmd_version},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *out) {
    fprintf(out, "usage: thinkscale COMMAND [ARGS]\n\ncommands:\n");
    for (int i = 0; i < n_commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    ts_blas_prefer_vector_kernels(argv); /* may restart this program once */
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "thinkscale: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
