/* thinkscale free-letters --dir DIR [--kappa-bits B[,B...]] [--steps N] [--groups G]
 *                        [--samples S] [--train-lines N] [--eval-lines N] [--seed S]
 *                        [--prompt-latents prior|encoder] [--set section.key=value]...
 * Arguments for the Free Transformer's letter experiment (experiments/free_letters.h). */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/spmd_command.h"
#include "experiments/free_letters.h"

#define MAX_KAPPAS TS_FREE_LETTERS_MAX_KAPPAS
#define MAX_SETS TS_FREE_LETTERS_MAX_SETS

typedef ts_free_letters_options letters_args;

static void letters_usage(FILE *out) {
    fprintf(out,
            "usage: thinkscale free-letters --dir DIR [--kappa-bits B[,B...]] [--steps N]\n"
            "                               [--groups G] [--samples S] [--train-lines N]\n"
            "                               [--eval-lines N] [--seed S]\n"
            "                               [--prompt-latents prior|encoder] [--set k=v]...\n"
            "  The Free Transformer's synthetic letter task (paper, Section 4.1), under mpirun:\n"
            "  writes DIR/letters_SEED_N.h5, trains one Free Transformer per kappa in\n"
            "  DIR/kappa_bits_B (resuming if it exists), then generates G groups of S lines\n"
            "  sharing one Z per group and G groups of S lines with a Z each (a prompt\n"
            "  \"X>\" per group), into\n"
            "  DIR/samples_kappa_bits_B.txt and DIR/samples.h5, and prints how often lines of\n"
            "  a group agree on the letters' position and on the noise pattern.\n"
            "  --kappa-bits    free bits per token, in bits (default 0.015625,0.125,1,8:\n"
            "                  the paper's log(2)/64, log(2)/8, log(2), 8 log(2) nats)\n"
            "  --steps N       optimiser steps per kappa (default 4000; 128 lines per step)\n"
            "  --groups G      groups per sampling mode (default 16); --samples S per group (8)\n"
            "  --train-lines N lines of training data (default 100000); --eval-lines N\n"
            "                  validation lines for the KL and losses (default 512)\n"
            "  --prompt-latents  Z of the prompt \"X>\": from the prior (default) or the\n"
            "                  encoder's posterior (prompt prefill); generated tokens always\n"
            "                  take Z from the prior\n"
            "  --set k=v       any training key (model size, batch, lr ...), every kappa\n");
}

static bool parse_positive(const char *opt, const char *value, long max, long *out, char *err,
                           size_t errlen) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *end || v < 1 || v > max) {
        snprintf(err, errlen, "%s needs an integer in [1, %ld], got '%s'", opt, max, value);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_letters_args(int argc, char **argv, void *out, char *err, size_t errlen) {
    letters_args *a = out;
    ts_free_letters_defaults(a);
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc) {
            snprintf(err, errlen, "option '%s' needs a value or is unknown", opt);
            return false;
        }
        const char *value = argv[++i];
        long v = 0;
        if (!strcmp(opt, "--dir")) {
            a->dir = value;
        } else if (!strcmp(opt, "--kappa-bits")) {
            char copy[512], *save = NULL, *end;
            snprintf(copy, sizeof copy, "%s", value);
            a->n_kappas = 0;
            for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                double bits = strtod(item, &end);
                if (*end || !(bits >= 0) || !isfinite(bits) || a->n_kappas == MAX_KAPPAS) {
                    snprintf(err, errlen, "--kappa-bits takes up to %d numbers >= 0, not '%s'",
                             MAX_KAPPAS, value);
                    return false;
                }
                a->kappa_bits[a->n_kappas++] = bits;
            }
            if (a->n_kappas == 0) {
                snprintf(err, errlen, "--kappa-bits is empty");
                return false;
            }
        } else if (!strcmp(opt, "--steps")) {
            if (!parse_positive(opt, value, 1L << 40, &a->steps, err, errlen)) return false;
        } else if (!strcmp(opt, "--groups") || !strcmp(opt, "--samples") ||
                   !strcmp(opt, "--eval-lines")) {
            if (!parse_positive(opt, value, 1 << 16, &v, err, errlen)) return false;
            *(!strcmp(opt, "--groups")    ? &a->groups
              : !strcmp(opt, "--samples") ? &a->samples
                                          : &a->eval_lines) = (int)v;
        } else if (!strcmp(opt, "--train-lines")) {
            if (!parse_positive(opt, value, 1L << 30, &a->train_lines, err, errlen)) return false;
        } else if (!strcmp(opt, "--seed")) {
            if (!parse_positive(opt, value, 1L << 62, &a->seed, err, errlen)) return false;
        } else if (!strcmp(opt, "--prompt-latents")) {
            if (strcmp(value, "prior") && strcmp(value, "encoder")) {
                snprintf(err, errlen, "--prompt-latents is prior or encoder, not '%s'", value);
                return false;
            }
            a->prompt_from_encoder = !strcmp(value, "encoder");
        } else if (!strcmp(opt, "--set")) {
            if (a->n_sets == MAX_SETS) {
                snprintf(err, errlen, "at most %d --set options", MAX_SETS);
                return false;
            }
            a->sets[a->n_sets++] = value;
        } else {
            snprintf(err, errlen, "unknown option '%s'", opt);
            return false;
        }
    }
    if (!a->dir) {
        snprintf(err, errlen, "--dir is required");
        return false;
    }
    if (a->samples < 2) {
        snprintf(err, errlen, "--samples must be at least 2: agreement needs pairs");
        return false;
    }
    return true;
}

static int run_letters(MPI_Comm comm, void *args) {
    return ts_free_letters_run(comm, args);
}

int ts_cmd_free_letters(int argc, char **argv) {
    static const ts_spmd_command command = {"free-letters", letters_usage, parse_letters_args,
                                            run_letters};
    letters_args args;
    return ts_run_spmd_command(&command, argc, argv, &args);
}
