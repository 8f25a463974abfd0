/* Checkpoints, the sequences: what a write and a read do, in order, on
 * every rank. The pieces are in checkpoint_files.c, checkpoint_transfer.c,
 * checkpoint_schema.c and checkpoint_replicas.c. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic_commit.h"
#include "io/checkpoint_internal.h"
#include "io/full_disk.h"

static void utc_now(char *out, size_t outlen) {
    time_t now = time(NULL);
    struct tm utc;
    if (!gmtime_r(&now, &utc) || !strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &utc))
        snprintf(out, outlen, "unknown");
}

/* Rank 0's config text, on every rank, so every rank writes the same attribute. */
static ts_io_status share_config(MPI_Comm comm, int rank, const char *mine, char **out, char *err,
                                 size_t errlen) {
    long long len = rank == 0 && mine ? (long long)strlen(mine) : 0;
    *out = NULL;
    if (MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "checkpoint: MPI_Bcast of the config length failed");
    ts_io_status st = len < INT_MAX ? TS_IO_OK
                                    : ts_io_fail(err, errlen, TS_IO_ERR_ARGS,
                                                 "checkpoint: config text over 2 GB");
    if (st == TS_IO_OK && !(*out = malloc((size_t)len + 1)))
        st = ts_io_fail(err, errlen, TS_IO_ERR_NOMEM,
                        "checkpoint: out of memory for the config text");
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) {
        free(*out);
        *out = NULL;
        return st;
    }
    if (rank == 0 && len) memcpy(*out, mine, (size_t)len);
    (*out)[len] = '\0';
    if (len && MPI_Bcast(*out, (int)len, MPI_CHAR, 0, comm) != MPI_SUCCESS) {
        free(*out);
        *out = NULL;
        return ts_io_fail(err, errlen, TS_IO_ERR_IO,
                          "checkpoint: MPI_Bcast of the config text failed");
    }
    return TS_IO_OK;
}

/* ---------------------------------------------------------------- writing */

/* An upper bound of the file's size: the data, plus HDF5's object headers
 * and attributes (generously per dataset), the configuration and the
 * provenance. What the space check and the reservation ask for. */
static long long estimated_bytes(const ts_saved_role *roles, int n_roles, int ranks,
                                 size_t config_len) {
    long long bytes = 128 * 1024 + 4 * (long long)config_len;
    for (int i = 0; i < n_roles; i++) {
        const ts_saved_role *r = &roles[i];
        long long elements =
            r->layout == TS_SAVED_PER_RANK ? (long long)r->count * ranks : (long long)r->count;
        int datasets = r->tensors ? r->tensors->count : 1;
        bytes += elements * (long long)ckpt_type_size(r->type) + 2048LL * datasets + 16LL * ranks;
    }
    return bytes;
}

/* Rank 0, before HDF5 writes a byte: the file system has room for the
 * checkpoint (as far as statvfs tells; quotas are caught by reserve_space). */
static ts_io_status check_space(const char *run_dir, const char *tmp, long long needed, char *err,
                                size_t errlen) {
    long long free_bytes = ts_io_free_bytes(run_dir);
    if (free_bytes >= 0 && free_bytes < needed)
        return ts_io_fail(err, errlen, TS_IO_ERR_NOSPACE,
                          "checkpoint %s: not written: it needs about %lld bytes, but the file "
                          "system of %s has %lld bytes free (earlier checkpoints are intact)",
                          tmp, needed, run_dir, free_bytes);
    return TS_IO_OK;
}

/* Rank 0, after the file is created: reserves its blocks (io/full_disk.h),
 * so a full file system or an exceeded quota shows up here, in one agreed
 * step, rather than inside HDF5's collective flush, where a failure on one
 * rank strands the others. File systems that cannot reserve are written
 * without (the space check above is all they get). */
static ts_io_status reserve_space(const char *tmp, long long needed, char *err, size_t errlen) {
    char why[1024] = "";
    ts_io_status st = ts_io_reserve(tmp, 0, needed, false, why, sizeof why);
    if (st == TS_IO_OK) return st;
    return ts_io_fail(err, errlen, st, "checkpoint %s (earlier checkpoints are intact)", why);
}

/* The close after a failed write runs HDF5's own collectives (the metadata
 * flush), which a write failing on one rank only can leave waiting forever
 * (no agreement can reach into them). A thread ends this process if the
 * close has not returned after a limit: it removes the temporary file, says
 * where it was stuck and exits with TS_IO_EXIT_STRANDED; mpirun then ends
 * the other ranks. */
typedef struct close_watch {
    pthread_mutex_t lock;
    pthread_cond_t done_signal;
    bool done;
    int rank, seconds;
    const char *tmp;
} close_watch;

static void *watch_close(void *arg) {
    close_watch *w = arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += w->seconds;
    pthread_mutex_lock(&w->lock);
    int rc = 0;
    while (!w->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->done_signal, &w->lock, &deadline);
    bool stuck = !w->done;
    pthread_mutex_unlock(&w->lock);
    if (stuck) {
        unlink(w->tmp);
        fprintf(stderr,
                "thinkscale: rank %d: error: checkpoint %s: closing it after a failed write has "
                "not returned in %d s (HDF5's metadata flush is waiting in a collective that "
                "another rank left after its write failed): %s removed, earlier checkpoints are "
                "intact; ending the job\n",
                w->rank, w->tmp, w->seconds, w->tmp);
        fflush(stderr);
        _exit(TS_IO_EXIT_STRANDED);
    }
    return NULL;
}

/* H5Fclose of a file whose write failed, under the watch above. */
static herr_t close_failed_file(hid_t file, int rank, const char *tmp, int seconds) {
    close_watch w = {.done = false, .rank = rank, .seconds = seconds, .tmp = tmp};
    pthread_t thread;
    bool watching = pthread_mutex_init(&w.lock, NULL) == 0 &&
                    pthread_cond_init(&w.done_signal, NULL) == 0 &&
                    pthread_create(&thread, NULL, watch_close, &w) == 0;
    herr_t closed = H5Fclose(file);
    if (watching) {
        pthread_mutex_lock(&w.lock);
        w.done = true;
        pthread_cond_signal(&w.done_signal);
        pthread_mutex_unlock(&w.lock);
        pthread_join(thread, NULL);
        pthread_cond_destroy(&w.done_signal);
        pthread_mutex_destroy(&w.lock);
    }
    return closed;
}

/* A failure inside an HDF5 call with collectives of its own (flush, close)
 * on this rank: the others may be waiting inside that call, so this rank
 * cannot agree with them. It removes the temporary file (unlink from any
 * rank is fine: every rank knows its name) and reports TS_IO_ERR_STRANDED,
 * which the caller turns into MPI_Abort. */
static ts_io_status stranded(const char *run_dir, const ts_commit *commit, const char *what,
                             char *err, size_t errlen) {
    char why[512];
    snprintf(why, sizeof why, "%s", err && errlen ? err : "");
    unlink(commit->tmp);
    return ts_io_fail(err, errlen, TS_IO_ERR_STRANDED,
                      "%s (%s): the file system of %s has %lld bytes free; %s removed, earlier "
                      "checkpoints are intact; other ranks may be waiting in the same HDF5 "
                      "call, so the job must end",
                      why, what, run_dir, ts_io_free_bytes(run_dir), commit->tmp);
}

/* Rank 0, after every rank has closed the temporary file: publish it (fsync,
 * rename, marker), then prune older checkpoints. */
static ts_io_status publish(const ts_commit *commit, const char *run_dir, long step, int keep_last,
                            int64_t *bytes, int *removed, char *err, size_t errlen) {
    char fields[64];
    snprintf(fields, sizeof fields, "step=%ld\n", step);
    char format[64];
    snprintf(format, sizeof format, "%s-marker 1", CKPT_FORMAT_NAME);
    ts_commit_marker marker = {.format = format, .fields = fields};
    ts_io_status st = ts_commit_publish(commit, &marker, bytes, err, errlen);
    if (st != TS_IO_OK) return st;
    return ckpt_prune(run_dir, step, keep_last, removed, err, errlen);
}

static ts_io_status write_impl(MPI_Comm comm, const char *run_dir, const ts_checkpoint_state *state,
                               const ts_saved_role *roles, int n_roles,
                               const ts_checkpoint_options *options, ts_checkpoint_report *report,
                               char *err, size_t errlen) {
    ckpt_io io = {.comm = comm, .file = -1, .dxpl = -1};
    if (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
        MPI_Comm_size(comm, &io.size) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Comm_rank/size failed");
    const ts_checkpoint_options defaults = {0};
    if (!options) options = &defaults;
    io.max_piece_bytes =
        options->max_piece_bytes ? options->max_piece_bytes : CKPT_DEFAULT_MAX_PIECE_BYTES;

    ts_io_status st = TS_IO_OK;
    if (!run_dir || !state)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint: no run directory or state");
    else if (state->step < 0)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint: step %ld is not valid",
                        state->step);
    if (st == TS_IO_OK) st = ckpt_check_roles(roles, n_roles, err, errlen);
    char final_path[TS_CHECKPOINT_PATH_MAX];
    if (st == TS_IO_OK)
        st = ts_checkpoint_path(final_path, sizeof final_path, run_dir, state->step, err, errlen);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) return st;
    snprintf(report->path, sizeof report->path, "%s", final_path);
    report->step = state->step;

    ts_provenance collected = {0};
    const ts_provenance *prov = options->provenance;
    char *config = NULL, written_utc[32] = "";
    ckpt_role_sums *sums = NULL;
    ts_commit commit;
    memset(&commit, 0, sizeof commit);
    hid_t fapl = -1;
    bool created = false;
    if (!prov) {
        st = ts_provenance_collect(comm, options->threads_per_rank, &collected, err, errlen);
        if (st != TS_IO_OK) return st;
        prov = &collected;
    }
    if ((st = share_config(comm, io.rank, state->config_text, &config, err, errlen)) != TS_IO_OK)
        goto done;
    /* The provenance may have been collected at the start of the run; the
     * time of this checkpoint is rank 0's clock now, the same on every rank. */
    if (io.rank == 0) utc_now(written_utc, sizeof written_utc);
    if (MPI_Bcast(written_utc, (int)sizeof written_utc, MPI_CHAR, 0, comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Bcast of the time failed");
        goto done;
    }
    io.path = final_path; /* for messages until the temporary name is known */
    if ((st = ckpt_role_checksums(&io, state->step, roles, n_roles, &sums, err, errlen)) !=
        TS_IO_OK)
        goto done;

    /* Rank 0 prepares the directory and the names; every rank learns them. */
    if (io.rank == 0) {
        st = ckpt_prepare_dir(run_dir, err, errlen);
        if (st == TS_IO_OK)
            st = ts_commit_begin(&commit, final_path, options->overwrite, true, err, errlen);
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    if (MPI_Bcast(&commit, (int)sizeof commit, MPI_BYTE, 0, comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Bcast failed");
        goto done;
    }
    io.path = commit.tmp;
    long long needed = estimated_bytes(roles, n_roles, io.size, strlen(config));
    if (io.rank == 0) st = check_space(run_dir, commit.tmp, needed, err, errlen);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;

    /* The HDF5 part, timed for the bandwidth report. */
    if (MPI_Barrier(comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Barrier failed");
        goto done;
    }
    double io_start = MPI_Wtime();
    created = true; /* from here a failure must remove the temporary file */
    fapl = ckpt_make_fapl(comm);
    io.dxpl = ckpt_make_collective_dxpl();
    if (fapl < 0 || io.dxpl < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot set up MPI-IO properties",
                        commit.tmp);
    else if ((io.file = H5Fcreate(commit.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "cannot create %s", commit.tmp);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    if (io.rank == 0) st = reserve_space(commit.tmp, needed, err, errlen);
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    st = ckpt_write_header(&io, state, roles, n_roles, prov, config, written_utc, err, errlen);
    for (int i = 0; st == TS_IO_OK && i < n_roles; i++)
        st = ckpt_write_role(&io, &roles[i], &sums[i], err, errlen);
    if (st != TS_IO_OK) goto done;
    /* With MPI-IO, H5Fflush ends in MPI_File_sync on every rank: the data is
     * on stable storage before rank 0 gives it its final name. */
    if (H5Fflush(io.file, H5F_SCOPE_GLOBAL) < 0) {
        ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot flush", commit.tmp);
        st = stranded(run_dir, &commit, "H5Fflush", err, errlen);
        goto stranded_exit;
    }
    herr_t closed = H5Fclose(io.file);
    io.file = -1;
    if (closed < 0) {
        ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close", commit.tmp);
        st = stranded(run_dir, &commit, "H5Fclose", err, errlen);
        goto stranded_exit;
    }
    if ((st = ts_io_agree(comm, st, err, errlen)) != TS_IO_OK) goto done;
    report->io_seconds = ckpt_max_over_ranks(comm, MPI_Wtime() - io_start);
    if (MPI_Barrier(comm) != MPI_SUCCESS) {
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Barrier failed");
        goto done;
    }

    long long outcome[2] = {0, 0}; /* bytes, removed */
    created = false;               /* every rank has closed it: rank 0 alone handles it now */
    if (io.rank == 0) {
        int64_t bytes = 0;
        int removed = 0;
        st = ts_io_trim_reservation(commit.tmp, err, errlen);
        if (st == TS_IO_OK)
            st = publish(&commit, run_dir, state->step, options->keep_last, &bytes, &removed, err,
                         errlen);
        else
            ts_commit_abandon(&commit);
        outcome[0] = bytes;
        outcome[1] = removed;
    }
    if (MPI_Bcast(outcome, 2, MPI_LONG_LONG, 0, comm) != MPI_SUCCESS && st == TS_IO_OK)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Bcast failed");
    st = ts_io_agree(comm, st, err, errlen);
    report->bytes = outcome[0];
    report->removed = (int)outcome[1];
    report->bandwidth = report->io_seconds > 0 ? (double)report->bytes / report->io_seconds : 0;

done:
    /* After an agreed failure every rank closes the file. Closing flushes
     * HDF5's metadata in collectives of its own, and a write failing there
     * on one rank only (the disk is still full) would strand the others in
     * them. So rank 0 first empties the doomed file, giving back the space
     * its partial data took, and every rank waits for that before closing. */
    if (created && st != TS_IO_OK) {
        /* Best effort: if emptying fails, the close below is still watched
         * and the file removed afterwards either way. */
        if (io.rank == 0) (void)!truncate(commit.tmp, 0);
        MPI_Barrier(comm);
    }
    if (io.file >= 0 &&
        (created && st != TS_IO_OK
             ? close_failed_file(io.file, io.rank, commit.tmp,
                                 options->stuck_close_seconds > 0 ? options->stuck_close_seconds
                                                                  : 30)
             : H5Fclose(io.file)) < 0 &&
        created) {
        io.file = -1;
        st = stranded(run_dir, &commit, "then H5Fclose failed too", err, errlen);
        goto stranded_exit;
    }
    io.file = -1;
    if (st == TS_IO_ERR_IO && created) { /* e.g. a collective write that found the disk full */
        size_t used = err ? strlen(err) : 0;
        if (used < errlen)
            snprintf(err + used, errlen - used, "; the file system of %s has %lld bytes free",
                     run_dir, ts_io_free_bytes(run_dir));
    }
    /* A failed write leaves no temporary file behind, removed once every
     * rank has closed it. (A failure after the rename leaves an unmarked
     * file, which finders ignore and the next write of this step replaces.) */
    if (st != TS_IO_OK && created) {
        MPI_Barrier(comm);
        if (io.rank == 0) ts_commit_abandon(&commit);
    }
stranded_exit: /* no collective call from here on */
    if (io.dxpl >= 0) H5Pclose(io.dxpl);
    if (fapl >= 0) H5Pclose(fapl);
    ckpt_free_sums(sums, n_roles);
    free(config);
    if (prov == &collected) ts_provenance_free(&collected);
    return st;
}

ts_io_status ts_checkpoint_write(MPI_Comm comm, const char *run_dir,
                                 const ts_checkpoint_state *state, const ts_saved_role *roles,
                                 int n_roles, const ts_checkpoint_options *options,
                                 ts_checkpoint_report *report, char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    double start = MPI_Wtime();
    ts_checkpoint_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    ts_io_status st =
        write_impl(comm, run_dir, state, roles, n_roles, options, report, err, errlen);
    if (st != TS_IO_ERR_STRANDED) /* else other ranks may never get here */
        report->total_seconds = ckpt_max_over_ranks(comm, MPI_Wtime() - start);
    ts_h5_quiet_end(quiet);
    return st;
}

/* ---------------------------------------------------------------- reading */

void ts_checkpoint_info_free(ts_checkpoint_info *info) {
    if (!info) return;
    free(info->config_text);
    info->config_text = NULL;
}

ts_io_status ts_checkpoint_read_info(MPI_Comm comm, const char *path, ts_checkpoint_info *info,
                                     char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    ckpt_io io = {.comm = comm, .file = -1, .dxpl = -1, .path = path};
    memset(info, 0, sizeof *info);
    ts_io_status st = TS_IO_OK;
    if (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
        MPI_Comm_size(comm, &io.size) != MPI_SUCCESS)
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint: MPI_Comm_rank/size failed");
    else if (!path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint info: no path");
    if (st == TS_IO_OK) st = ckpt_open_for_reading(&io, &info->bytes, err, errlen);
    if (st == TS_IO_OK) st = ckpt_read_header(&io, info, err, errlen);
    ckpt_close(&io);
    if (st != TS_IO_OK) ts_checkpoint_info_free(info);
    ts_h5_quiet_end(quiet);
    return st;
}

static ts_io_status read_impl(ckpt_io *io, ts_checkpoint_state *state, const ts_saved_role *roles,
                              int n_roles, ts_checkpoint_report *report, char *err, size_t errlen) {
    ts_io_status st = ckpt_check_roles(roles, n_roles, err, errlen);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;

    if (MPI_Barrier(io->comm) != MPI_SUCCESS)
        return ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint read: MPI_Barrier failed");
    double io_start = MPI_Wtime();
    int64_t loaded = 0;
    io->loaded = &loaded;
    if ((st = ckpt_open_for_reading(io, &report->bytes, err, errlen)) != TS_IO_OK) return st;
    ts_checkpoint_info info = {0};
    st = ckpt_read_header(io, &info, err, errlen);
    ts_checkpoint_info_free(&info); /* only the config text was allocated */
    if (st != TS_IO_OK) return st;
    report->step = info.step;

    /* Stage 1: everything must fit before any byte of data is read. */
    for (int i = 0; i < n_roles && st == TS_IO_OK; i++)
        st = ckpt_verify_role(io, &roles[i], err, errlen);
    /* Stage 2: the data, each role checked against its checksums. */
    for (int i = 0; i < n_roles && st == TS_IO_OK; i++)
        st = ckpt_read_role(io, &roles[i], err, errlen);
    if (st != TS_IO_OK) return st;

    herr_t closed = H5Fclose(io->file);
    io->file = -1;
    if (closed < 0) st = ts_h5_fail(err, errlen, TS_IO_ERR_IO, "%s: cannot close", io->path);
    if ((st = ts_io_agree(io->comm, st, err, errlen)) != TS_IO_OK) return st;
    report->io_seconds = ckpt_max_over_ranks(io->comm, MPI_Wtime() - io_start);
    /* What was loaded, not the file size: a caller may skip roles. */
    report->bandwidth = report->io_seconds > 0 ? (double)loaded / report->io_seconds : 0;
    if (state) {
        state->step = info.step;
        state->tokens_seen = info.tokens_seen;
    }
    return TS_IO_OK;
}

ts_io_status ts_checkpoint_read(MPI_Comm comm, const char *path, ts_checkpoint_state *state,
                                const ts_saved_role *roles, int n_roles,
                                ts_checkpoint_report *report, char *err, size_t errlen) {
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    double start = MPI_Wtime();
    /* path may point into *report (e.g. the report of the write): copy it
     * before the report is cleared. */
    char own_path[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st = TS_IO_OK;
    if (!path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint read: no path");
    else if (strlen(path) >= sizeof own_path)
        st = ts_io_fail(err, errlen, TS_IO_ERR_ARGS, "checkpoint read: path longer than %zu bytes",
                        sizeof own_path - 1);
    else
        memcpy(own_path, path, strlen(path) + 1);
    ts_checkpoint_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    ckpt_io io = {.comm = comm,
                  .file = -1,
                  .dxpl = -1,
                  .path = own_path,
                  .max_piece_bytes = CKPT_DEFAULT_MAX_PIECE_BYTES};
    if (st == TS_IO_OK && (MPI_Comm_rank(comm, &io.rank) != MPI_SUCCESS ||
                           MPI_Comm_size(comm, &io.size) != MPI_SUCCESS))
        st = ts_io_fail(err, errlen, TS_IO_ERR_IO, "checkpoint read: MPI_Comm_rank/size failed");
    if (st == TS_IO_OK) {
        snprintf(report->path, sizeof report->path, "%s", own_path);
        st = read_impl(&io, state, roles, n_roles, report, err, errlen);
    }
    ckpt_close(&io);
    report->total_seconds = ckpt_max_over_ranks(comm, MPI_Wtime() - start);
    ts_h5_quiet_end(quiet);
    return st;
}

ts_io_status ts_checkpoint_read_latest(MPI_Comm comm, const char *run_dir,
                                       ts_checkpoint_state *state, const ts_saved_role *roles,
                                       int n_roles, ts_checkpoint_report *report, char *err,
                                       size_t errlen) {
    char path[TS_CHECKPOINT_PATH_MAX];
    ts_io_status st =
        ts_checkpoint_find_latest(comm, run_dir, path, sizeof path, NULL, err, errlen);
    if (st != TS_IO_OK) return st;
    return ts_checkpoint_read(comm, path, state, roles, n_roles, report, err, errlen);
}
