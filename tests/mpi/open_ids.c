#include "open_ids.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <hdf5.h>

ts_open_ids ts_count_open_ids(void) {
    static const unsigned kinds[TS_OPEN_ID_KINDS] = {H5F_OBJ_FILE, H5F_OBJ_DATASET, H5F_OBJ_GROUP,
                                                     H5F_OBJ_DATATYPE, H5F_OBJ_ATTR};
    ts_open_ids ids;
    for (int i = 0; i < TS_OPEN_ID_KINDS; i++)
        ids.count[i] = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, kinds[i]);
    return ids;
}

void ts_assert_open_ids_unchanged(const ts_open_ids *before) {
    ts_open_ids now = ts_count_open_ids();
    for (int i = 0; i < TS_OPEN_ID_KINDS; i++) {
        if (now.count[i] != before->count[i])
            print_error("open HDF5 objects of kind %d: %zd before the test, %zd after\n", i,
                        before->count[i], now.count[i]);
        assert_true(now.count[i] >= 0 && now.count[i] == before->count[i]);
    }
}
