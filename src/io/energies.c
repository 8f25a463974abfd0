#include "io/energies.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/atomic_commit.h"
#include "io/eval_results.h"
#include "io/provenance.h"

struct ts_energies_file {
    MPI_Comm comm;
    int rank;
    hid_t file; /* rank 0 only */
    ts_commit commit;
};

/* Whether every rank succeeded; the first failure's message on every rank. */
static bool agree(MPI_Comm comm, bool ok, char *err, size_t errlen) {
    return ts_io_agree(comm, ok ? TS_IO_OK : TS_IO_ERR_IO, err, errlen) == TS_IO_OK;
}

ts_energies_file *ts_energies_open(MPI_Comm comm, const char *path, bool overwrite,
                                   const char *checkpoint, long step, char *err, size_t errlen) {
    ts_energies_file *f = calloc(1, sizeof *f);
    bool ok = f != NULL;
    if (!ok) snprintf(err, errlen, "out of memory");
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (ok) {
        *f = (ts_energies_file){.comm = comm, .rank = rank, .file = -1};
    }
    if (ok && rank == 0) {
        /* energies files written before they carried "format": an eval
         * result of then has the same two attributes, and these as well */
        static const char *const legacy[] = {"checkpoint", "step", NULL};
        static const char *const not_energies[] = {"split", "windows", "config", NULL};
        ts_io_status st = ts_h5_check_output(path, overwrite, TS_ENERGIES_FORMAT_NAME, legacy,
                                             not_energies, "--force", err, errlen);
        if (st == TS_IO_OK) st = ts_commit_begin(&f->commit, path, overwrite, false, err, errlen);
        if (st != TS_IO_OK) {
            ok = false;
        } else {
            ts_h5_quiet quiet = ts_h5_quiet_begin();
            f->file = H5Fcreate(f->commit.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
            ok = f->file >= 0 &&
                 ts_h5_write_string_attr(f->file, "format", TS_ENERGIES_FORMAT_NAME) >= 0 &&
                 ts_h5_write_string_attr(f->file, "checkpoint", checkpoint) >= 0 &&
                 ts_h5_write_int64_attr(f->file, "step", step) >= 0;
            ts_h5_quiet_end(quiet);
            if (!ok) snprintf(err, errlen, "cannot create the energies file '%s'", f->commit.tmp);
        }
    }
    if (!agree(comm, ok, err, errlen)) {
        if (f && f->file >= 0) {
            H5Fclose(f->file);
            ts_commit_abandon(&f->commit);
        }
        free(f);
        return NULL;
    }
    return f;
}

static bool write_group(hid_t file, const char *set, const char *setting, const ts_energy_trace *t,
                        const double *energy, const double *loss, const int32_t *tokens) {
    hid_t group = ts_eval_create_setting_group(file, set, setting);
    if (group < 0) return false;
    hsize_t w = (hsize_t)t->windows, p = (hsize_t)t->points, s = (hsize_t)t->seq;
    bool ok =
        ts_h5_write_string_attr(group, "setting", setting) >= 0 &&
        ts_h5_write_array(group, "energy", H5T_NATIVE_DOUBLE, 3, (hsize_t[]){w, p, s}, energy, "1",
                          "energy of each position's prediction before every inference step, "
                          "then of the final prediction (of the candidate kept there)") &&
        ts_h5_write_array(group, "token_loss", H5T_NATIVE_DOUBLE, 2, (hsize_t[]){w, s}, loss,
                          "nats", "cross-entropy of the final prediction of each position") &&
        ts_h5_write_array(group, "tokens", H5T_NATIVE_INT32, 2, (hsize_t[]){w, s + 1}, tokens,
                          "token id", "the window: position r predicts tokens[r + 1]");
    return H5Gclose(group) >= 0 && ok;
}

bool ts_energies_append(ts_energies_file *f, const char *set, const char *setting,
                        const ts_energy_trace *t, char *err, size_t errlen) {
    long n_energy = t->windows * t->points * t->seq, n_loss = t->windows * t->seq;
    long n_tokens = t->windows * (t->seq + 1);
    bool root = f->rank == 0;
    double *energy = root ? malloc((size_t)n_energy * sizeof *energy) : NULL;
    double *loss = root ? malloc((size_t)n_loss * sizeof *loss) : NULL;
    int32_t *tokens = root ? malloc((size_t)n_tokens * sizeof *tokens) : NULL;
    int have = !root || (energy && loss && tokens), all = 0;
    MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, f->comm);
    bool ok = all;
    /* Every window belongs to one rank and is zero on the others. */
    if (ok)
        ok = MPI_Reduce(t->energy, energy, (int)n_energy, MPI_DOUBLE, MPI_SUM, 0, f->comm) ==
                 MPI_SUCCESS &&
             MPI_Reduce(t->token_loss, loss, (int)n_loss, MPI_DOUBLE, MPI_SUM, 0, f->comm) ==
                 MPI_SUCCESS &&
             MPI_Reduce(t->tokens, tokens, (int)n_tokens, MPI_INT32_T, MPI_SUM, 0, f->comm) ==
                 MPI_SUCCESS;
    if (!ok) snprintf(err, errlen, "out of memory or MPI failure gathering energies");
    if (ok && root) {
        ts_h5_quiet quiet = ts_h5_quiet_begin();
        ok = write_group(f->file, set, setting, t, energy, loss, tokens);
        ts_h5_quiet_end(quiet);
        if (!ok)
            snprintf(err, errlen, "cannot write energies of %s/%s to '%s'", set, setting,
                     f->commit.tmp);
    }
    free(energy);
    free(loss);
    free(tokens);
    return agree(f->comm, ok, err, errlen);
}

bool ts_energies_close(ts_energies_file *f, bool keep, char *err, size_t errlen) {
    bool ok = true;
    if (f->rank == 0) {
        ok = H5Fclose(f->file) >= 0;
        if (!ok) snprintf(err, errlen, "cannot close '%s'", f->commit.tmp);
        if (ok && keep)
            ok = ts_commit_publish(&f->commit, NULL, NULL, err, errlen) == TS_IO_OK;
        else
            ts_commit_abandon(&f->commit);
    }
    ok = agree(f->comm, ok, err, errlen);
    free(f);
    return ok;
}
