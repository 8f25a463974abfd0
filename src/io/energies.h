/* Per-token energies of an energy-based model's evaluation (the uncertainty
 * signal of ../shared/specs/ebt.md), written by `thinkscale eval --energies`
 * to one HDF5 file (layout in docs/ebt.md):
 *
 *   /                           attrs: checkpoint, step
 *   /sets/DOMAIN/SETTING/energy      [windows, points, seq]  energy of each prediction
 *                                    before every inference step, then of the final one
 *   /sets/DOMAIN/SETTING/token_loss  [windows, seq]  cross-entropy of the final prediction
 *   /sets/DOMAIN/SETTING/tokens      [windows, seq + 1]  the window (inputs, then targets)
 *
 * Windows are scored on several ranks; each rank fills the rows of its own
 * windows and ts_energies_append sums the ranks' traces on rank 0. */
#ifndef TS_ENERGIES_H
#define TS_ENERGIES_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/energy_trace.h"

typedef struct ts_energies_file ts_energies_file;

/* The value of an energies file's root attribute "format". */
#define TS_ENERGIES_FORMAT_NAME "thinkscale-energies"

/* Collective. Rank 0 starts PATH.tmp (refusing an existing PATH unless
 * overwrite, and any file but an earlier energies file: ts_h5_check_output);
 * NULL on every rank, with the message, if that fails. */
ts_energies_file *ts_energies_open(MPI_Comm comm, const char *path, bool overwrite,
                                   const char *checkpoint, long step, char *err, size_t errlen);
/* Collective: sums the ranks' traces and writes them as one group. */
bool ts_energies_append(ts_energies_file *file, const char *set, const char *setting,
                        const ts_energy_trace *trace, char *err, size_t errlen);
/* Collective. keep: rename PATH.tmp to PATH; otherwise remove it. Frees file. */
bool ts_energies_close(ts_energies_file *file, bool keep, char *err, size_t errlen);

#endif
