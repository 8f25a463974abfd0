#include "experiments/campaign_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void ts_campaign_temp_name(const char *path, char *out, size_t outlen) {
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(out, outlen, "%s.tmp.%s.%ld", path, host, (long)getpid());
}

/* fsync of a file or directory by name. */
static bool sync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    bool ok = fsync(fd) == 0;
    return close(fd) == 0 && ok;
}

bool ts_campaign_commit_file(const char *tmp, const char *path, char *err, size_t errlen) {
    if (!sync_path(tmp) || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot replace '%s' with '%s': %s", path, tmp, strerror(errno));
        unlink(tmp);
        return false;
    }
    /* The rename itself becomes durable with the directory. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    sync_path(dir);
    return true;
}

bool ts_campaign_write_file_atomic(const char *path, const void *bytes, size_t len, char *err,
                                   size_t errlen) {
    char tmp[4200];
    ts_campaign_temp_name(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        return false;
    }
    bool ok = fwrite(bytes, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        snprintf(err, errlen, "cannot write '%s'", tmp);
        unlink(tmp);
        return false;
    }
    return ts_campaign_commit_file(tmp, path, err, errlen);
}
