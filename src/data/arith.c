#include "data/arith.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

ts_arith_params ts_arith_default_params(void) {
    return (ts_arith_params){
        .max_value = 100, .min_steps = 1, .max_steps = 3, .max_factor = 9, .ops = "+-*"};
}

bool ts_arith_params_check(const ts_arith_params *p, char *err, size_t errlen) {
    size_t n_ops = strnlen(p->ops, sizeof p->ops);
    bool ops_ok = n_ops >= 1 && n_ops < sizeof p->ops;
    for (size_t i = 0; ops_ok && i < n_ops; i++)
        ops_ok = strchr("+-*", p->ops[i]) && !memchr(p->ops, p->ops[i], i);
    if (p->max_value < 1 || p->max_value > TS_ARITH_MAX_VALUE)
        snprintf(err, errlen, "max-value must be 1 to %d, not %ld", TS_ARITH_MAX_VALUE,
                 p->max_value);
    else if (p->max_steps < 1 || p->max_steps > TS_ARITH_MAX_STEPS)
        snprintf(err, errlen, "max-steps must be 1 to %d, not %d", TS_ARITH_MAX_STEPS,
                 p->max_steps);
    else if (p->min_steps < 1 || p->min_steps > p->max_steps)
        snprintf(err, errlen, "min-steps must be 1 to max-steps (%d), not %d", p->max_steps,
                 p->min_steps);
    else if (p->max_factor < 2 || p->max_factor > TS_ARITH_MAX_FACTOR)
        snprintf(err, errlen, "max-factor must be 2 to %d, not %d", TS_ARITH_MAX_FACTOR,
                 p->max_factor);
    else if (!ops_ok)
        snprintf(err, errlen, "ops must be some of + - * (each once, no spaces), not '%.*s'",
                 (int)strnlen(p->ops, sizeof p->ops), p->ops);
    else
        return true;
    return false;
}

static const char *const names[] = {"Ann",  "Ben", "Carla", "Dev",  "Eve", "Femi",  "Gus",  "Hana",
                                    "Ivan", "Jo",  "Kim",   "Luis", "Mia", "Nadia", "Omar", "Pia"};
static const char *const things[] = {"apples", "marbles", "stamps", "coins",  "books",
                                     "shells", "pencils", "cards",  "stones", "cookies"};
/* Sentences of each operation; "%1$s" the name, the amount, the things. */
static const char *const adds[] = {"%s finds %" PRId64 " more %s.", "%s buys %" PRId64 " more %s.",
                                   "%s is given %" PRId64 " more %s."};
static const char *const subtracts[] = {"%s gives away %" PRId64 " %s.", "%s loses %" PRId64 " %s.",
                                        "%s sells %" PRId64 " %s."};
#define PICK(rng, table) table[ts_rng_below(rng, sizeof table / sizeof table[0])]

/* Appends printf output to s at *at (the buffer is TS_QA_MAX_PART bytes;
 * the parameter limits keep every record well inside it). */
#define APPEND(s, at, ...) (at) += (size_t)snprintf((s) + (at), TS_QA_MAX_PART - (at), __VA_ARGS__)

static void make_arith(const void *params, ts_rng *rng, ts_qa_record *out) {
    const ts_arith_params *p = params;
    size_t n_ops = strlen(p->ops);
    int steps = p->min_steps + (int)ts_rng_below(rng, (uint64_t)(p->max_steps - p->min_steps + 1));
    bool story = ts_rng_below(rng, 2) == 0;
    int64_t value = (int64_t)ts_rng_below(rng, (uint64_t)p->max_value + 1);
    const char *name = PICK(rng, names), *thing = PICK(rng, things);
    size_t at = 0;
    char expression[TS_QA_MAX_PART];
    size_t e_at = 0;
    if (story)
        APPEND(out->question, at, "%s has %" PRId64 " %s.", name, value, thing);
    else
        APPEND(expression, e_at, "%" PRId64, value);
    for (int s = 0; s < steps; s++) {
        char op = p->ops[ts_rng_below(rng, n_ops)];
        int64_t amount;
        if (op == '*')
            amount = 2 + (int64_t)ts_rng_below(rng, (uint64_t)p->max_factor - 1);
        else if (op == '-' && story && value < p->max_value)
            amount = (int64_t)ts_rng_below(rng, (uint64_t)value + 1);
        else
            amount = (int64_t)ts_rng_below(rng, (uint64_t)p->max_value + 1);
        value = op == '+' ? value + amount : op == '-' ? value - amount : value * amount;
        if (story) {
            APPEND(out->question, at, " ");
            if (op == '+')
                APPEND(out->question, at, PICK(rng, adds), name, amount, thing);
            else if (op == '-')
                APPEND(out->question, at, PICK(rng, subtracts), name, amount, thing);
            else
                APPEND(out->question, at, "%s then has %" PRId64 " times as many %s.", name, amount,
                       thing);
        } else {
            /* Every compound left operand in parentheses: the order is the
             * order of the steps, whatever the reader's precedence rules. */
            char left[TS_QA_MAX_PART];
            snprintf(left, sizeof left, "%s", expression);
            e_at = 0;
            APPEND(expression, e_at, s ? "(%s) %c %" PRId64 : "%s %c %" PRId64, left, op, amount);
        }
    }
    if (story)
        APPEND(out->question, at, " How many %s does %s have now?", thing, name);
    else
        APPEND(out->question, at, "What is %s?", expression);
    snprintf(out->answer, sizeof out->answer, "%" PRId64, value);
}

ts_qa_generator ts_arith_generator(const ts_arith_params *p) {
    ts_qa_generator g = {
        .name = "arith", .salt = 0x6172697468 /* "arith" */, .make = make_arith, .params = p};
    snprintf(g.description, sizeof g.description,
             "max_value=%ld min_steps=%d max_steps=%d max_factor=%d ops=%s", p->max_value,
             p->min_steps, p->max_steps, p->max_factor, p->ops);
    return g;
}
