/* A benchmark's numeric settings from the environment: an unset or empty
 * variable takes the default, anything else must be a number in [least,
 * most] or the program exits naming the setting. */
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

#endif
