/* The Free Transformer paper's synthetic experiment (Section 4.1,
 * docs/free-transformer.md): train on the letter task at several kappas,
 * then generate groups of lines that share one latent Z and groups whose
 * lines each draw their own, and measure what Z decides. */
#ifndef TS_FREE_LETTERS_H
#define TS_FREE_LETTERS_H

#include <mpi.h>
#include <stdbool.h>

#define TS_FREE_LETTERS_MAX_KAPPAS 8
#define TS_FREE_LETTERS_MAX_SETS 32

typedef struct ts_free_letters_options {
    const char *dir; /* everything the experiment writes goes here */
    int n_kappas;
    double kappa_bits[TS_FREE_LETTERS_MAX_KAPPAS]; /* free bits per token, in bits */
    long steps;                                    /* optimiser steps per kappa */
    int groups;                                    /* groups per sampling mode */
    int samples;                                   /* lines per group, at least 2 */
    long train_lines;
    int eval_lines;
    long seed;
    bool prompt_from_encoder; /* Z of the prompt from the encoder, not the prior */
    int n_sets;
    const char *sets[TS_FREE_LETTERS_MAX_SETS]; /* "section.key=value" for every kappa's run */
} ts_free_letters_options;

/* The paper's kappas (1/64, 1/8, 1 and 8 bits), 4000 steps, 16 groups of 8. */
void ts_free_letters_defaults(ts_free_letters_options *options);
/* Collective under mpirun: trains (resuming) one run per kappa in
 * DIR/kappa_bits_B, then samples and measures on rank 0 and writes
 * DIR/samples_kappa_bits_B.txt and DIR/samples.h5. Returns the exit status. */
int ts_free_letters_run(MPI_Comm comm, const ts_free_letters_options *options);

#endif
