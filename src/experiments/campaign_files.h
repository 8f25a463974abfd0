/* Small whole-file helpers of the campaign layer: read a text file, and
 * write one atomically through io/atomic_commit (ts_commit_begin_shared:
 * concurrent writers such as Slurm array tasks use distinct temporary names;
 * the last rename wins), so a killed campaign leaves the old file or the new
 * one, never a half-written one. */
#ifndef TS_CAMPAIGN_FILES_H
#define TS_CAMPAIGN_FILES_H

#include <stdbool.h>
#include <stddef.h>

/* The file's contents, NUL-terminated (malloc'd), or NULL with a message. */
char *ts_campaign_read_file(const char *path, char *err, size_t errlen);

/* Writes bytes to path atomically (see above). */
bool ts_campaign_write_file_atomic(const char *path, const void *bytes, size_t len, char *err,
                                   size_t errlen);

#endif
