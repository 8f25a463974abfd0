/* A benchmark's numeric settings from the environment: an unset or empty
 * variable takes the default, anything else must be a number (an integer,
 * for the counts) in [least, most] or the program exits naming the
 * setting. */
#ifndef BENCH_ENV_H
#define BENCH_ENV_H

#include <stdio.h>
#include <stdlib.h>

static inline double bench_env_number(const char *program, const char *name, double fallback,
                                      double least, double most) {
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    char *end;
    double x = strtod(v, &end);
    if (*end || !(x >= least) || !(x <= most)) {
        fprintf(stderr, "%s: %s=%s is not a number in [%g, %g]\n", program, name, v, least, most);
        exit(1);
    }
    return x;
}

static inline long bench_env_long(const char *program, const char *name, long fallback, long least,
                                  long most) {
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < least || x > most) {
        fprintf(stderr, "%s: %s=%s is not an integer in [%ld, %ld]\n", program, name, v, least,
                most);
        exit(1);
    }
    return x;
}

#endif
