#include "experiments/campaign_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/atomic_commit.h"

char *ts_campaign_read_file(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    while (text) {
        len += fread(text + len, 1, cap - len - 1, f);
        if (len + 1 < cap) break;
        cap *= 2;
        char *bigger = realloc(text, cap);
        if (!bigger) free(text);
        text = bigger;
    }
    bool failed = ferror(f);
    fclose(f);
    if (!text || failed) {
        free(text);
        snprintf(err, errlen, "cannot read '%s'", path);
        return NULL;
    }
    text[len] = 0;
    return text;
}

bool ts_campaign_write_file_atomic(const char *path, const void *bytes, size_t len, char *err,
                                   size_t errlen) {
    ts_commit commit;
    if (ts_commit_begin_shared(&commit, path, err, errlen) != TS_IO_OK) return false;
    FILE *f = fopen(commit.tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s", commit.tmp, strerror(errno));
        return false;
    }
    bool ok = fwrite(bytes, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        snprintf(err, errlen, "cannot write '%s'", commit.tmp);
        ts_commit_abandon(&commit);
        return false;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen) == TS_IO_OK;
}
