/* Integer arithmetic word problems, in the style of elementary math QA: a
 * start value and `steps` operations, each +, - or *, asked in one of two
 * forms chosen per record with probability 1/2:
 *
 *   story       "Ann has 12 apples. Ann finds 7 more apples. Ann gives away
 *               3 apples. Ann then has 2 times as many apples. How many apples
 *               does Ann have now?"              Answer: 32
 *   expression  "What is ((12 + 7) - 3) * 2?"   Answer: 32
 *
 * Start values and the amounts added or subtracted are drawn uniformly from
 * [0, max_value], factors from [2, max_factor], the number of operations
 * from [min_steps, max_steps] and each operation uniformly from `ops`. In a
 * story nobody gives away more than they have (the amount subtracted is at
 * most the current value), so its answers are >= 0; an expression may go
 * negative. The answer is the exact integer in decimal. */
#ifndef TS_ARITH_H
#define TS_ARITH_H

#include <stdbool.h>
#include <stddef.h>

#include "data/qa_records.h"

#define TS_ARITH_MAX_STEPS 8
#define TS_ARITH_MAX_VALUE 1000000
#define TS_ARITH_MAX_FACTOR 20 /* with the two limits above, every value fits int64 */

typedef struct ts_arith_params {
    long max_value; /* 1..TS_ARITH_MAX_VALUE */
    int min_steps;  /* 1..max_steps */
    int max_steps;  /* ..TS_ARITH_MAX_STEPS */
    int max_factor; /* 2..TS_ARITH_MAX_FACTOR */
    char ops[4];    /* a non-empty set of "+-*", each at most once */
} ts_arith_params;

/* max_value 100, steps 1..3, factors 2..9, ops "+-*". */
ts_arith_params ts_arith_default_params(void);

/* False with a message naming the bad parameter. */
bool ts_arith_params_check(const ts_arith_params *p, char *err, size_t errlen);

/* The generator for p (which must pass the check and outlive it). */
ts_qa_generator ts_arith_generator(const ts_arith_params *p);

#endif
