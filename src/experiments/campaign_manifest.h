/* A campaign expanded into its manifest: every point (architecture, axis,
 * value, seed) with its fully resolved run configuration, a deterministic
 * name and run directory. Points whose configurations are identical share
 * one run (the flops axis reuses the params runs; the base point lies on the
 * depth and width axes). The manifest is written to DIR/manifest.tsv, and a
 * DIR whose manifest disagrees is refused, so results are never mixed. */
#ifndef TS_CAMPAIGN_MANIFEST_H
#define TS_CAMPAIGN_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "experiments/campaign_spec.h"

#define TS_CAMPAIGN_POINT_NAME_MAX 128
#define TS_CAMPAIGN_MAX_DOMAINS (TS_MAX_EVAL_SETS + 1)

typedef struct ts_campaign_point {
    char name[TS_CAMPAIGN_POINT_NAME_MAX]; /* e.g. "ebt-depth-4-s33" */
    char run[TS_CAMPAIGN_POINT_NAME_MAX];  /* the run producing it: its own name or a shared one */
    int run_owner;                         /* index of the point whose name the run carries */
    int arch;                              /* index into campaign->archs */
    ts_axis axis;
    char value[TS_CAMPAIGN_NAME_MAX]; /* the axis value as in the name */
    long seed;
    ts_run_config config; /* fully resolved; run.dir = DIR/runs/RUN */
    long params, non_embedding_params;
    double tokens;            /* steps * batch * context */
    double epochs;            /* tokens / distinct training tokens (NaN: unknown) */
    uint64_t config_checksum; /* of the configuration without run.dir */
} ts_campaign_point;

typedef struct ts_campaign_manifest {
    int n_points;
    ts_campaign_point *points;
    int n_runs;                      /* distinct runs */
    char train_data[TS_PATH_MAX];    /* resolved path of the training token file */
    bool data_found;                 /* every token file exists and opens */
    char missing[TS_PATH_MAX + 128]; /* what is missing when not */
    double train_tokens;             /* tokens of its train split (0: unknown) */
    int n_domains;                   /* the training domain first, then [campaign] eval */
    char domains[TS_CAMPAIGN_MAX_DOMAINS][64];
} ts_campaign_manifest;

/* Expands the campaign. dir names the campaign directory the run
 * directories go under (NULL: "DIR"). Token files are opened on this process
 * alone (no collective); a missing one is not an error here (plan works
 * without data when model.vocab_size is set) but is recorded in
 * manifest->data_found / missing. Every point's configuration is validated
 * and its model built (parameter counts), so an invalid value stops here,
 * named by point. False with a message. */
bool ts_campaign_expand(const ts_campaign *campaign, const char *dir,
                        ts_campaign_manifest *manifest, char *err, size_t errlen);
void ts_campaign_manifest_free(ts_campaign_manifest *manifest);

/* The manifest as TSV text, one line per point (malloc'd; NULL: out of memory). */
char *ts_campaign_manifest_text(const ts_campaign *campaign, const ts_campaign_manifest *m);

/* DIR/manifest.tsv: writes it if absent; if present, it must equal the
 * manifest, else false with a message naming the first differing point.
 * Touches nothing else in DIR. */
bool ts_campaign_manifest_claim_dir(const ts_campaign *campaign, const ts_campaign_manifest *m,
                                    const char *dir, char *err, size_t errlen);

/* Selection of points: comma-separated items, each an index ("7"), an index
 * range ("0-5"), a point name or a glob pattern over names ("ebt-*"); "all"
 * selects everything. Fills selected[n_points]; false with a message naming
 * an item that matches nothing. */
bool ts_campaign_select(const ts_campaign_manifest *m, const char *selection, bool *selected,
                        char *err, size_t errlen);

/* The repository holding this program (the directory above build/), found
 * from /proc/self/exe; false if it cannot be found. */
bool ts_campaign_repo_root(char *out, size_t outlen);

/* A data path as written in a campaign: as given if it exists relative to
 * the working directory, else relative to the repository root; made
 * absolute when found. False (out = as given) when neither exists. */
bool ts_campaign_resolve_path(const char *path, char *out, size_t outlen);

#endif
