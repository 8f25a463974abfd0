/* The frame every SPMD subcommand shares: MPI start-up, argument parsing done
 * identically on every rank (so all agree without communicating), errors
 * reported once by rank 0 with the usage, then the command, then MPI's end. */
#ifndef TS_SPMD_COMMAND_H
#define TS_SPMD_COMMAND_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct ts_spmd_command {
    const char *name; /* "train", for messages */
    void (*usage)(FILE *out);
    /* Fills args from argv (argv[0] is the command); false with a message. */
    bool (*parse)(int argc, char **argv, void *args, char *err, size_t errlen);
    /* Collective; returns the exit status. */
    int (*run)(MPI_Comm comm, void *args);
} ts_spmd_command;

/* -h/--help print the usage without starting MPI. Returns the exit status:
 * 2 for bad arguments, otherwise the command's. */
int ts_run_spmd_command(const ts_spmd_command *command, int argc, char **argv, void *args);

#endif
