/* Small whole-file helpers of the campaign layer: read a text file, and
 * write one atomically (a temporary file in the same directory, fsync,
 * rename), so a killed campaign leaves the old file or the new one, never a
 * half-written one. Concurrent writers (Slurm array tasks) use distinct
 * temporary names; the last rename wins. */
#ifndef TS_CAMPAIGN_FILES_H
#define TS_CAMPAIGN_FILES_H

#include <stdbool.h>
#include <stddef.h>

/* The file's contents, NUL-terminated (malloc'd), or NULL with a message. */
char *ts_campaign_read_file(const char *path, char *err, size_t errlen);

/* A temporary name next to path, unique to this process: PATH.tmp.HOST.PID. */
void ts_campaign_temp_name(const char *path, char *out, size_t outlen);

/* Makes tmp (already written and closed) durable and renames it over path;
 * removes tmp on failure. */
bool ts_campaign_commit_file(const char *tmp, const char *path, char *err, size_t errlen);

/* Writes bytes to path through ts_campaign_temp_name and ts_campaign_commit_file. */
bool ts_campaign_write_file_atomic(const char *path, const void *bytes, size_t len, char *err,
                                   size_t errlen);

#endif
