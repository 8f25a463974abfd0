/* A scaling campaign file (docs/campaigns.md): which architectures, which
 * axes and values, the base run configuration and its per-architecture
 * overrides, the size ladder and the rules (run length, learning rate, batch,
 * warm-up) that turn an (architecture, axis, value, seed) into a complete run
 * configuration. Parsing only: expansion into points is campaign_manifest.h. */
#ifndef TS_CAMPAIGN_SPEC_H
#define TS_CAMPAIGN_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

#define TS_CAMPAIGN_MAX_ARCHS 8
#define TS_CAMPAIGN_MAX_VALUES 32
#define TS_CAMPAIGN_MAX_SEEDS 16
#define TS_CAMPAIGN_MAX_SIZES 16
#define TS_CAMPAIGN_MAX_SETTINGS 64
#define TS_CAMPAIGN_NAME_MAX 64

typedef enum ts_axis {
    TS_AXIS_DATA,
    TS_AXIS_BATCH,
    TS_AXIS_DEPTH,
    TS_AXIS_WIDTH,
    TS_AXIS_PARAMS,
    TS_AXIS_FLOPS,
    TS_AXIS_THINKING, /* trained variants evaluated at every inference-compute knob level */
    TS_AXIS_COUNT
} ts_axis;

/* "data", "batch", ... */
const char *ts_axis_name(ts_axis axis);

/* One run-configuration assignment from the campaign file. */
typedef struct ts_campaign_setting {
    char assignment[512]; /* "section.key=value" */
} ts_campaign_setting;

typedef struct ts_campaign_settings {
    int count;
    ts_campaign_setting items[TS_CAMPAIGN_MAX_SETTINGS];
} ts_campaign_settings;

/* A rung of the params ladder ([size.NAME]). */
typedef struct ts_campaign_size {
    char name[TS_CAMPAIGN_NAME_MAX];
    int depth, width, heads;
    double lr;
    long batch; /* 0: from the batch rule */
} ts_campaign_size;

/* A trained variant of the thinking axis ([variant.NAME]): run-configuration
 * overrides for the architectures it lists (none listed: all). */
typedef struct ts_campaign_variant {
    char name[TS_CAMPAIGN_NAME_MAX];
    bool arch_listed[TS_CAMPAIGN_MAX_ARCHS]; /* filled once [campaign] architectures is known */
    char archs_text[256];                    /* the variant's architectures as written */
    ts_campaign_settings settings;
} ts_campaign_variant;

#define TS_CAMPAIGN_MAX_KNOB_LEVELS 8

/* The thinking evaluation ([thinking]): the levels of every architecture's
 * inference-compute knob, evaluated on every set after a thinking point trains. */
typedef struct ts_campaign_thinking {
    int n_ebt_steps, n_ebt_samples, n_free_samples, n_nexus_orders;
    long ebt_steps[TS_CAMPAIGN_MAX_KNOB_LEVELS], ebt_samples[TS_CAMPAIGN_MAX_KNOB_LEVELS];
    long free_samples[TS_CAMPAIGN_MAX_KNOB_LEVELS], nexus_orders[TS_CAMPAIGN_MAX_KNOB_LEVELS];
    long windows; /* windows scored per set and setting */
    long batch;   /* windows per forward; 1 gives per-window losses for the bootstrap */
} ts_campaign_thinking;

typedef enum ts_batch_rule { TS_BATCH_FIXED, TS_BATCH_SQRT } ts_batch_rule;

typedef struct ts_campaign {
    char path[TS_PATH_MAX];
    char *text; /* the file as read (malloc'd) */
    char name[TS_CAMPAIGN_NAME_MAX];
    int n_archs;
    char archs[TS_CAMPAIGN_MAX_ARCHS][32];
    int n_axes;
    ts_axis axes[TS_AXIS_COUNT];
    int n_seeds;
    long seeds[TS_CAMPAIGN_MAX_SEEDS];
    char data[TS_PATH_MAX];     /* training token file, as written */
    char eval[TS_PATH_MAX * 4]; /* comma-separated evaluation token files, as written */
    int ranks;                  /* ranks per node the plan assumes (node-hours, sbatch) */
    double flop_rate;           /* sustained FLOP/s of one node; 0: measure */
    double mfu;                 /* share of the measured GEMM peak training reaches */
    long checkpoints;           /* checkpoints per run (train.checkpoint_every = steps / this) */
    long eval_windows;          /* validation windows per domain (0: the base's eval_batches) */
    /* The base configuration and each architecture's overrides. */
    ts_campaign_settings base;
    ts_campaign_settings arch_settings[TS_CAMPAIGN_MAX_ARCHS];
    /* Axis values; the flops axis has none (it reuses the params runs). */
    int n_values[TS_AXIS_COUNT];
    double values[TS_AXIS_COUNT][TS_CAMPAIGN_MAX_VALUES];
    char size_names[TS_CAMPAIGN_MAX_VALUES][TS_CAMPAIGN_NAME_MAX]; /* params axis */
    int n_sizes;
    ts_campaign_size sizes[TS_CAMPAIGN_MAX_SIZES];
    /* The thinking axis: its values are variant names ("base": no overrides). */
    int n_variants;
    ts_campaign_variant variants[TS_CAMPAIGN_MAX_VALUES];
    char variant_names[TS_CAMPAIGN_MAX_VALUES][TS_CAMPAIGN_NAME_MAX];
    ts_campaign_thinking thinking;
    /* Rules. */
    ts_batch_rule batch_rule;       /* params axis, sizes without a batch */
    double params_tokens_per_param; /* params axis run length; 0: the base's steps */
    double warmup_tokens_per_param; /* warm-up of ~N tokens (Porian et al.); 0: base's */
    long warmup_min_steps;
    double warmup_max_fraction; /* of the run's steps */
    /* Slurm (campaign submit). */
    int throttle;       /* %K: array tasks running at once */
    double time_margin; /* --time = planned hours * margin */
    long min_minutes;   /* floor of --time */
    long max_minutes;   /* cap of --time (0: none); longer runs resume when resubmitted */
    int nodes;          /* nodes per array task */
    int cpus_per_task;  /* threads per rank */
    char partition[64], account[64], launcher[16]; /* launcher: srun or mpirun */
    char setup[512]; /* shell line run before each task (module loads) */
} ts_campaign;

/* Reads and checks a campaign file; false with a message naming the file,
 * and the line where there is one. Run-configuration keys are checked by the
 * configuration machinery here, so an unknown key stops before anything runs. */
bool ts_campaign_load(ts_campaign *campaign, const char *path, char *err, size_t errlen);
void ts_campaign_free(ts_campaign *campaign);
/* ts_campaign is large (every setting kept as text): allocate it with
 * malloc/calloc or make it static, not on the stack. */

/* The [variant.NAME] of a thinking-axis value, or NULL ("base" needs none). */
const ts_campaign_variant *ts_campaign_find_variant(const ts_campaign *campaign, const char *name);

/* Whether the campaign has the thinking axis (its points are evaluated at
 * every knob level after training: campaign_thinking.h). */
bool ts_campaign_has_thinking(const ts_campaign *campaign);

/* Index of an architecture in campaign->archs, or -1. */
int ts_campaign_arch_index(const ts_campaign *campaign, const char *arch);

#endif
