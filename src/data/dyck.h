/* Dyck languages, BigBench style: the question is a prefix of brackets of
 * up to four kinds, ( ) [ ] { } < >, separated by spaces, in which some
 * brackets are still open; the answer is the sequence of closing brackets
 * that completes it exactly (innermost first), also separated by spaces:
 *
 *     Question: Close the brackets: ( [ < > ] {
 *     Answer: } )
 *
 * Prefix lengths are drawn uniformly from [min_length, max_length]; at each
 * position a bracket is opened or the innermost one closed with probability
 * 1/2, never deeper than max_depth and never below depth 0. A prefix whose
 * brackets all closed gets one more opening bracket, so the answer is never
 * empty and the prefix has max_length + 1 brackets at most. */
#ifndef TS_DYCK_H
#define TS_DYCK_H

#include <stdbool.h>
#include <stddef.h>

#include "data/qa_records.h"

#define TS_DYCK_KINDS 4
#define TS_DYCK_MAX_LENGTH 1000 /* bounds a record to TS_QA_MAX_PART */
#define TS_DYCK_OPENING "([{<"
#define TS_DYCK_CLOSING ")]}>"
#define TS_DYCK_QUESTION "Close the brackets:"

typedef struct ts_dyck_params {
    int kinds;      /* bracket kinds used, 1..4, in the order ( [ { < */
    int max_depth;  /* >= 1 */
    int min_length; /* >= 1 */
    int max_length; /* >= min_length, <= TS_DYCK_MAX_LENGTH */
} ts_dyck_params;

/* kinds 4, depth 1..8, length 4..24. */
ts_dyck_params ts_dyck_default_params(void);

/* False with a message naming the bad parameter. */
bool ts_dyck_params_check(const ts_dyck_params *p, char *err, size_t errlen);

/* The generator for p (which must pass the check and outlive it). */
ts_qa_generator ts_dyck_generator(const ts_dyck_params *p);

#endif
