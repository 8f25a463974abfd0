/* Open HDF5 identifiers, for suites that check a test leaves as many open
 * as it found: files, datasets, groups, committed datatypes and attributes,
 * each kind counted (HDF5 1.10 offers no count of dataspaces or property
 * lists). */
#ifndef TS_TEST_OPEN_IDS_H
#define TS_TEST_OPEN_IDS_H

#include <sys/types.h>

#define TS_OPEN_ID_KINDS 5

typedef struct ts_open_ids {
    ssize_t count[TS_OPEN_ID_KINDS];
} ts_open_ids;

ts_open_ids ts_count_open_ids(void);
/* Fails the current cmocka test, naming the kind, if any count differs
 * from `before`. */
void ts_assert_open_ids_unchanged(const ts_open_ids *before);

#endif
