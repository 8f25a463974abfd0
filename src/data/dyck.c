#include "data/dyck.h"

#include <stdio.h>
#include <string.h>

ts_dyck_params ts_dyck_default_params(void) {
    return (ts_dyck_params){
        .kinds = TS_DYCK_KINDS, .max_depth = 8, .min_length = 4, .max_length = 24};
}

bool ts_dyck_params_check(const ts_dyck_params *p, char *err, size_t errlen) {
    if (p->kinds < 1 || p->kinds > TS_DYCK_KINDS)
        snprintf(err, errlen, "kinds must be 1 to %d, not %d", TS_DYCK_KINDS, p->kinds);
    else if (p->max_depth < 1)
        snprintf(err, errlen, "max-depth must be at least 1, not %d", p->max_depth);
    else if (p->min_length < 1)
        snprintf(err, errlen, "min-length must be at least 1, not %d", p->min_length);
    else if (p->max_length < p->min_length || p->max_length > TS_DYCK_MAX_LENGTH)
        snprintf(err, errlen, "max-length must be from min-length (%d) to %d, not %d",
                 p->min_length, TS_DYCK_MAX_LENGTH, p->max_length);
    else
        return true;
    return false;
}

/* Appends bracket c to s at *at, space-separated. */
static void put(char *s, size_t *at, char c) {
    if (*at) s[(*at)++] = ' ';
    s[(*at)++] = c;
    s[*at] = '\0';
}

static void make_dyck(const void *params, ts_rng *rng, ts_qa_record *out) {
    const ts_dyck_params *p = params;
    int length =
        p->min_length + (int)ts_rng_below(rng, (uint64_t)(p->max_length - p->min_length + 1));
    char stack[TS_DYCK_MAX_LENGTH + 1]; /* kinds of the open brackets, innermost last */
    int depth = 0;
    size_t at = snprintf(out->question, sizeof out->question, "%s", TS_DYCK_QUESTION);
    for (int i = 0; i < length || depth == 0; i++) {
        bool open = depth == 0 || (depth < p->max_depth && ts_rng_below(rng, 2) == 0);
        if (open) {
            int kind = (int)ts_rng_below(rng, (uint64_t)p->kinds);
            stack[depth++] = (char)kind;
            put(out->question, &at, TS_DYCK_OPENING[kind]);
        } else {
            put(out->question, &at, TS_DYCK_CLOSING[(int)stack[--depth]]);
        }
    }
    size_t answer_at = 0;
    while (depth > 0) put(out->answer, &answer_at, TS_DYCK_CLOSING[(int)stack[--depth]]);
}

ts_qa_generator ts_dyck_generator(const ts_dyck_params *p) {
    ts_qa_generator g = {
        .name = "dyck", .salt = 0x6479636b /* "dyck" */, .make = make_dyck, .params = p};
    snprintf(g.description, sizeof g.description,
             "kinds=%d max_depth=%d min_length=%d max_length=%d", p->kinds, p->max_depth,
             p->min_length, p->max_length);
    return g;
}
