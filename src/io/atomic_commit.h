/* Publishing a file that must never be seen half written (checkpoints,
 * eval.h5, samples.h5, report.yaml, a campaign's results.h5): the writer
 * writes NAME.tmp, closes it, and ts_commit_publish makes it durable (fsync),
 * gives it its final name (rename, then fsync of the directory) and, when
 * asked, writes a completion marker NAME.complete recording the file's size.
 * A process killed at any point leaves either the previous NAME or the new
 * one, never a mixture; a marker, written atomically itself, vouches only for
 * a whole file.
 *
 *     ts_commit c;
 *     if (ts_commit_begin(&c, "run/eval.h5", overwrite, err, errlen) != TS_IO_OK) fail;
 *     write everything to c.tmp, close it;
 *     if (failed) ts_commit_abandon(&c);
 *     else st = ts_commit_publish(&c, NULL, &bytes, err, errlen);
 *
 * Serial: with MPI, one rank calls these after every rank has closed the
 * temporary file. */
#ifndef TS_ATOMIC_COMMIT_H
#define TS_ATOMIC_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/h5_toolkit.h"

#define TS_COMMIT_PATH_MAX 4096
#define TS_COMMIT_TMP_SUFFIX ".tmp"
#define TS_COMMIT_MARKER_SUFFIX ".complete"

typedef struct ts_commit {
    char path[TS_COMMIT_PATH_MAX];   /* the final name */
    char tmp[TS_COMMIT_PATH_MAX];    /* path + ".tmp": what the writer creates */
    char marker[TS_COMMIT_PATH_MAX]; /* path + ".complete" */
    bool replacing;                  /* path existed when begun (and overwrite was allowed) */
} ts_commit;

/* A completion marker's content: "format=FORMAT\nfile=BASENAME\n" FIELDS
 * "bytes=SIZE\n". fields are extra "key=value\n" lines, or NULL. */
typedef struct ts_commit_marker {
    const char *format; /* e.g. "thinkscale-checkpoint-marker 1" */
    const char *fields;
} ts_commit_marker;

/* Fills the names. With overwrite unset, fails with TS_IO_ERR_EXISTS,
 * touching nothing, when path exists (for a marked file: exists and is
 * marked complete). A stale path.tmp of a killed writer is removed. */
ts_io_status ts_commit_begin(ts_commit *commit, const char *path, bool overwrite, bool marked,
                             char *err, size_t errlen);

/* After the writer has closed commit->tmp: fsync it, remove the old marker
 * when replacing a marked file, rename it to commit->path, fsync the
 * directory, and then, if marker is not NULL, write the marker (atomically)
 * and fsync the directory again. *bytes (may be NULL) receives the file's
 * size. On failure before the rename the temporary file is removed. */
ts_io_status ts_commit_publish(const ts_commit *commit, const ts_commit_marker *marker,
                               int64_t *bytes, char *err, size_t errlen);

/* For a file several processes may publish at once (a campaign's results.h5,
 * rebuilt by every Slurm array task that finishes): the temporary name is
 * unique to this host and process (path.tmp.HOST.PID), an existing path is
 * replaced, and no other writer's temporary file is touched. The last rename
 * wins; every version is whole. */
ts_io_status ts_commit_begin_shared(ts_commit *commit, const char *path, char *err, size_t errlen);

/* Removes the temporary file of a failed write. */
void ts_commit_abandon(const ts_commit *commit);

/* Whether path is complete: its marker exists and records the file's size
 * now (TS_IO_ERR_CORRUPT naming truncation or modification otherwise;
 * TS_IO_ERR_MISSING when path itself is absent). *bytes receives the size. */
ts_io_status ts_commit_verify(const char *path, int64_t *bytes, char *err, size_t errlen);

/* Deletes a marked file: marker first, so a half-deleted one reads as
 * incomplete, never as a complete file with missing data. */
ts_io_status ts_commit_remove(const char *path, char *err, size_t errlen);

/* Makes a rename or unlink in dir durable (file systems that cannot fsync a
 * directory are accepted). */
ts_io_status ts_commit_sync_dir(const char *dir, char *err, size_t errlen);

#endif
