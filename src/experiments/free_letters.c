/* The Free Transformer paper's synthetic experiment (Section 4.1): train on
 * the letter task at several kappas, then generate groups of lines that
 * share one latent Z and groups whose lines each draw their own, and measure
 * what Z decides: how often lines of a group agree on the letters' position
 * and on the noise pattern. Collective under mpirun (training uses every
 * rank; evaluation and sampling run on rank 0). As in the paper, every
 * sequence is one line: training windows start at line starts (data.align). */
#include "experiments/free_letters.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "data/letter_task.h"
#include "io/atomic_commit.h"
#include "io/checkpoint.h"
#include "io/provenance.h"
#include "models/free_transformer.h"
#include "train/checkpoint_model.h"
#include "train/trainer.h"

#define MAX_KAPPAS TS_FREE_LETTERS_MAX_KAPPAS
#define GEN_LEN (TS_LETTER_PROMPT + TS_LETTER_BODY) /* a line without its newline */
#define EVAL_BATCH 64

/* ts_rng_seed_stream purposes of the sampling phase. */
enum { PURPOSE_PROMPT = 0x70726f6d, PURPOSE_LATENT = 0x6c61746e, PURPOSE_TOKENS = 0x746f6b6e };

/* The options under the name the code below has used since it lived in cli/. */
typedef ts_free_letters_options letters_args;

/* The model and schedule of the experiment; --set overrides any of them. */
static const char *const letter_config[] = {
    "model.arch=free",
    "model.context=66",
    "model.depth=4",
    "model.width=64",
    "model.heads=4",
    "model.ffn_mult=1",
    "free.latent_bits=8",
    /* Large batches: with 32 lines the latent's small, noisy gain never
     * outgrew the noise and the decoder ignored Z at every kappa below 8 bits. */
    "train.batch=128",
    "train.lr=3e-3",
    "train.warmup=100",
    "train.log_every=100",
    "train.eval_every=500",
    "train.eval_batches=1",
    "train.checkpoint_every=500",
    "train.keep_checkpoints=1",
};

void ts_free_letters_defaults(ts_free_letters_options *options) {
    *options = (ts_free_letters_options){.n_kappas = 4,
                                         .kappa_bits = {1.0 / 64, 1.0 / 8, 1, 8},
                                         .steps = 4000,
                                         .groups = 16,
                                         .samples = 8,
                                         .train_lines = 100000,
                                         .eval_lines = 512,
                                         .seed = 1};
}

/* "kappa_bits_B": the name of a kappa's run directory, text file and
 * samples.h5 group. */
typedef struct kappa_name {
    char text[48];
} kappa_name;

static kappa_name name_of_kappa(double bits) {
    kappa_name n;
    snprintf(n.text, sizeof n.text, "kappa_bits_%g", bits);
    return n;
}

/* The configuration of one kappa's run: the experiment's, then --set, then
 * what the experiment fixes. */
static bool kappa_config(const letters_args *a, int k, const char *data, ts_run_config *c,
                         char *err, size_t errlen) {
    ts_config_defaults(c);
    char item[TS_PATH_MAX + 64];
    for (size_t i = 0; i < sizeof letter_config / sizeof letter_config[0]; i++)
        if (!ts_config_set(c, letter_config[i], err, errlen)) return false;
    for (int i = 0; i < a->n_sets; i++)
        if (!ts_config_set(c, a->sets[i], err, errlen)) return false;
    if (strcmp(c->model.arch, "free")) {
        snprintf(err, errlen, "model.arch must stay free, not '%s'", c->model.arch);
        return false;
    }
    if (c->model.context < GEN_LEN) {
        snprintf(err, errlen, "model.context must be at least %d to hold a line", GEN_LEN);
        return false;
    }
    c->align = TS_LETTER_LINE; /* the experiment's premise: one line per sequence */
    c->model.free.kappa = a->kappa_bits[k] * log(2.0);
    c->steps = a->steps;
    c->seed = a->seed;
    snprintf(c->train_data, sizeof c->train_data, "%s", data);
    c->eval_data[0] = 0;
    snprintf(item, sizeof item, "run.dir=%s/%s", a->dir, name_of_kappa(a->kappa_bits[k]).text);
    return ts_config_set(c, item, err, errlen) && ts_config_validate(c, err, errlen);
}

/* ---------------------------------------------------------------- results */

typedef struct mode_result {
    int32_t *lines;    /* [n * GEN_LEN] tokens */
    int32_t *latents;  /* [n * GEN_LEN] states */
    int32_t *position; /* [n], -1 if not a valid line */
    uint8_t *valid;    /* [n] */
    ts_letter_agreement agreement;
} mode_result;

typedef struct kappa_result {
    double kappa_bits;
    char checkpoint[TS_CHECKPOINT_PATH_MAX];
    long step;
    double prior_loss, prior_loss_k16, posterior_loss, kl_nats;
    mode_result mode[2]; /* shared, independent */
} kappa_result;

static const char *const mode_names[2] = {"shared", "independent"};

static void free_mode(mode_result *m) {
    free(m->lines);
    free(m->latents);
    free(m->position);
    free(m->valid);
}

static bool measure(mode_result *m, int groups, int samples) {
    long n = (long)groups * samples;
    ts_letter_parse *parses = malloc((size_t)n * sizeof *parses);
    if (!parses) return false;
    ts_letter_agreement agreement = ts_letter_measure(m->lines, groups, samples, parses);
    for (long i = 0; i < n; i++) {
        m->valid[i] = parses[i].valid;
        m->position[i] = parses[i].position;
    }
    free(parses);
    m->agreement = agreement;
    return true;
}

/* ---------------------------------------------------------------- phases */

/* Collective: the newest complete checkpoint of a run, as a model. */
static ts_model *load_final_model(MPI_Comm comm, const char *run_dir, kappa_result *r, char *err,
                                  size_t errlen) {
    long step = 0;
    ts_io_status st = ts_checkpoint_find_latest(comm, run_dir, r->checkpoint, sizeof r->checkpoint,
                                                &step, err, errlen);
    if (st == TS_IO_NOT_FOUND) snprintf(err, errlen, "no complete checkpoint in '%s'", run_dir);
    if (st != TS_IO_OK) return NULL;
    ts_run_config config;
    return ts_model_from_checkpoint(comm, r->checkpoint, &config, &r->step, err, errlen);
}

/* Loss with one and 16 prior samples, the (leaking) posterior loss and the
 * KL on whole validation lines, each a sequence of its own as in training. */
static bool evaluate_lines(ts_model *model, ts_ctx *ctx, const letters_args *a, kappa_result *r) {
    int32_t *tokens = malloc((size_t)EVAL_BATCH * TS_LETTER_LINE * sizeof *tokens);
    if (!tokens) return false;
    ts_free_config saved = model->config.free;
    bool recording = ts_set_grad_enabled(ctx, false);
    double sums[4] = {0};
    for (int done = 0; done < a->eval_lines; done += EVAL_BATCH) {
        int n = a->eval_lines - done < EVAL_BATCH ? a->eval_lines - done : EVAL_BATCH;
        char line[TS_LETTER_LINE];
        for (int i = 0; i < n; i++) {
            ts_letter_line((uint64_t)a->seed, TS_LETTER_VALIDATION_FIRST + (uint64_t)(done + i),
                           line, NULL);
            for (int j = 0; j < TS_LETTER_LINE; j++)
                tokens[i * TS_LETTER_LINE + j] = (unsigned char)line[j];
        }
        ts_batch batch = {.tokens = tokens,
                          .batch = n,
                          .seq = TS_LETTER_LINE - 1,
                          .mode = TS_MODE_EVAL,
                          .seed = (uint64_t)a->seed,
                          .step = -1,
                          .first_index = done};
        double stats[TS_MAX_MODEL_STATS];
        ts_mark mark = ts_get_mark(ctx);
        model->config.free.eval_samples = 1;
        model->config.free.eval_posterior = 1;
        sums[0] += n * model->ops->loss(model, ctx, &batch, stats)->data[0];
        sums[1] += n * stats[FREE_STAT_POSTERIOR_LOSS];
        sums[2] += n * stats[FREE_STAT_KL];
        model->config.free.eval_samples = 16;
        model->config.free.eval_posterior = 0;
        sums[3] += n * model->ops->loss(model, ctx, &batch, NULL)->data[0];
        ts_release(ctx, mark);
    }
    ts_set_grad_enabled(ctx, recording);
    model->config.free = saved;
    free(tokens);
    r->prior_loss = sums[0] / a->eval_lines;
    r->posterior_loss = sums[1] / a->eval_lines;
    r->kl_nats = sums[2] / a->eval_lines;
    r->prior_loss_k16 = sums[3] / a->eval_lines;
    return true;
}

/* Mode 0: one Z per group; mode 1: one Z per line. The prompt letter and
 * each line's token draws are the same in both modes, so the modes differ
 * only in how Z is shared. */
static bool generate_mode(ts_model *model, ts_ctx *ctx, const letters_args *a, int mode,
                          mode_result *m) {
    long n = (long)a->groups * a->samples;
    int bits = model->config.free.latent_bits;
    m->lines = malloc((size_t)n * GEN_LEN * sizeof *m->lines);
    m->latents = malloc((size_t)n * GEN_LEN * sizeof *m->latents);
    m->position = malloc((size_t)n * sizeof *m->position);
    m->valid = malloc((size_t)n * sizeof *m->valid);
    int32_t *prompt = malloc((size_t)n * TS_LETTER_PROMPT * sizeof *prompt);
    ts_real *uniforms = malloc((size_t)n * TS_LETTER_PROMPT * bits * sizeof *uniforms);
    ts_rng *rngs = malloc((size_t)n * sizeof *rngs);
    bool ok = m->lines && m->latents && m->position && m->valid && prompt && uniforms && rngs;
    for (long i = 0; ok && i < n; i++) {
        long g = i / a->samples;
        ts_rng rng;
        ts_rng_seed_stream(&rng, (uint64_t)a->seed ^ PURPOSE_PROMPT, (uint64_t)g);
        prompt[i * TS_LETTER_PROMPT] = 'A' + (int32_t)ts_rng_below(&rng, 26);
        prompt[i * TS_LETTER_PROMPT + 1] = '>';
        ts_rng_seed_stream(&rng, (uint64_t)a->seed ^ PURPOSE_LATENT,
                           mode == 0 ? (uint64_t)g : ((uint64_t)1 << 32) + (uint64_t)i);
        for (int t = 0; t < GEN_LEN; t++)
            m->latents[i * GEN_LEN + t] = (int32_t)ts_rng_below(&rng, (uint64_t)1 << bits);
        for (int j = 0; j < TS_LETTER_PROMPT * bits; j++)
            uniforms[i * TS_LETTER_PROMPT * bits + j] = (ts_real)ts_rng_uniform(&rng);
        ts_rng_seed_stream(&rngs[i], (uint64_t)a->seed ^ PURPOSE_TOKENS, (uint64_t)i);
    }
    if (ok) {
        free_generate_request request = {.prompt = prompt,
                                         .prompt_len = TS_LETTER_PROMPT,
                                         .length = GEN_LEN,
                                         .n_seqs = (int)n,
                                         .states = m->latents,
                                         .prompt_from_encoder = a->prompt_from_encoder,
                                         .prompt_uniforms = uniforms,
                                         .token_rngs = rngs};
        free_generate(model, ctx, &request, m->lines);
        ok = measure(m, a->groups, a->samples);
    }
    free(prompt);
    free(uniforms);
    free(rngs);
    return ok;
}

static void put_line(FILE *f, const int32_t *tokens) {
    for (int t = 0; t < GEN_LEN; t++)
        fputc(tokens[t] >= 32 && tokens[t] < 127 ? tokens[t] : '?', f);
    fputc('\n', f);
}

static bool write_text(const letters_args *a, const kappa_result *r, char *err, size_t errlen) {
    char path[TS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/samples_%s.txt", a->dir, name_of_kappa(r->kappa_bits).text);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
        return false;
    }
    fprintf(f,
            "# Free Transformer, letter task, kappa = %g bits (%.6g nats) per token\n"
            "# %s (step %ld); prompt latents from the %s; '?' marks a non-printable byte\n",
            r->kappa_bits, r->kappa_bits * log(2.0), r->checkpoint, r->step,
            a->prompt_from_encoder ? "encoder" : "prior");
    for (int mode = 0; mode < 2; mode++) {
        const mode_result *m = &r->mode[mode];
        fprintf(f,
                "\n# %s Z: %d groups of %d lines, %s; valid %.3f, same position %.3f +- %.3f, "
                "|position difference| %.2f +- %.2f, noise Jaccard %.3f +- %.3f\n",
                mode_names[mode], a->groups, a->samples,
                mode == 0 ? "one Z per group" : "one Z per line", m->agreement.valid_fraction,
                m->agreement.same_position.mean, m->agreement.same_position.se,
                m->agreement.position_distance.mean, m->agreement.position_distance.se,
                m->agreement.noise_jaccard.mean, m->agreement.noise_jaccard.se);
        for (int g = 0; g < a->groups; g++) {
            if (g) fputc('\n', f);
            for (int s = 0; s < a->samples; s++)
                put_line(f, m->lines + ((long)g * a->samples + s) * GEN_LEN);
        }
    }
    if (fclose(f)) {
        snprintf(err, errlen, "cannot write '%s'", path);
        return false;
    }
    return true;
}

/* Each statistic as an attribute NAME and its standard error NAME_se. */
static bool write_agreement(hid_t g, const ts_letter_agreement *a) {
    const struct {
        const char *name;
        ts_letter_stat stat;
    } stats[] = {{"position_agreement", a->same_position},
                 {"position_distance", a->position_distance},
                 {"noise_jaccard", a->noise_jaccard}};
    bool ok = ts_h5_write_double_attr(g, "valid_fraction", a->valid_fraction) >= 0 &&
              ts_h5_write_int64_attr(g, "valid_pairs", a->valid_pairs) >= 0;
    for (size_t i = 0; ok && i < sizeof stats / sizeof stats[0]; i++) {
        char se[64];
        snprintf(se, sizeof se, "%s_se", stats[i].name);
        ok = ts_h5_write_double_attr(g, stats[i].name, stats[i].stat.mean) >= 0 &&
             ts_h5_write_double_attr(g, se, stats[i].stat.se) >= 0;
    }
    return ok;
}

static bool write_mode(hid_t parent, const letters_args *a, int mode, const mode_result *m) {
    hid_t g = H5Gcreate2(parent, mode_names[mode], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return false;
    long n = (long)a->groups * a->samples;
    uint8_t *bytes = malloc((size_t)n * GEN_LEN);
    bool ok = bytes != NULL;
    for (long i = 0; ok && i < n * GEN_LEN; i++) bytes[i] = (uint8_t)m->lines[i];
    hsize_t dims3[3] = {(hsize_t)a->groups, (hsize_t)a->samples, GEN_LEN};
    hsize_t dims2[2] = {(hsize_t)a->groups, (hsize_t)a->samples};
    ok = ok && ts_h5_write_array(g, "lines", H5T_NATIVE_UINT8, 3, dims3, bytes, "byte", NULL) &&
         ts_h5_write_array(g, "latents", H5T_NATIVE_INT32, 3, dims3, m->latents, "state", NULL) &&
         ts_h5_write_array(g, "position", H5T_NATIVE_INT32, 2, dims2, m->position, "character",
                           NULL) &&
         ts_h5_write_array(g, "valid", H5T_NATIVE_UINT8, 2, dims2, m->valid, NULL, NULL) &&
         write_agreement(g, &m->agreement);
    free(bytes);
    return H5Gclose(g) >= 0 && ok;
}

static bool sampled_now(const letters_args *a, const char *group_name) {
    for (int k = 0; k < a->n_kappas; k++)
        if (!strcmp(name_of_kappa(a->kappa_bits[k]).text, group_name)) return true;
    return false;
}

/* Copies the groups of an earlier samples.h5 that this invocation did not
 * sample into file, so that sampling one kappa again, or a new one, adds to
 * the file instead of dropping the other kappas' samples. */
static bool carry_over(hid_t file, const char *path, const letters_args *a, char *err,
                       size_t errlen) {
    if (access(path, F_OK) != 0) return true;
    hid_t old = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5G_info_t info;
    bool ok = old >= 0 && H5Gget_info(old, &info) >= 0;
    for (hsize_t i = 0; ok && i < info.nlinks; i++) {
        char name[256];
        ssize_t len = H5Lget_name_by_idx(old, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                         H5P_DEFAULT);
        ok = len > 0 && len < (ssize_t)sizeof name;
        if (ok && !sampled_now(a, name))
            ok = H5Ocopy(old, name, file, name, H5P_DEFAULT, H5P_DEFAULT) >= 0;
    }
    if (old >= 0) H5Fclose(old);
    if (!ok)
        snprintf(err, errlen,
                 "cannot read the existing '%s' to keep its other kappas' samples: move it "
                 "away and run again",
                 path);
    return ok;
}

static bool write_h5(const letters_args *a, const kappa_result *results, char *err, size_t errlen) {
    char path[TS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/samples.h5", a->dir);
    ts_commit commit;
    if (ts_commit_begin(&commit, path, true, false, err, errlen) != TS_IO_OK) return false;
    ts_h5_quiet quiet = ts_h5_quiet_begin();
    hid_t file = H5Fcreate(commit.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = file >= 0 &&
              ts_h5_write_string_attr(
                  file, "statistics",
                  "per mode: valid_fraction (lines that are a noiseless task line up to '!'); over "
                  "the valid_pairs pairs of valid lines of the same group: position_agreement "
                  "(share with the letters at the same position), position_distance (mean "
                  "|difference| of their positions, characters; 18.99 for independent uniform "
                  "positions) and noise_jaccard (mean "
                  "|A and B| / |A or B| of their '!' positions, 1 for two empty sets); *_se: their "
                  "standard errors with the groups as clusters") >= 0;
    bool carry_failed = ok && !carry_over(file, path, a, err, errlen);
    ok = ok && !carry_failed;
    for (int k = 0; ok && k < a->n_kappas; k++) {
        const kappa_result *r = &results[k];
        hid_t g = H5Gcreate2(file, name_of_kappa(r->kappa_bits).text, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT);
        ok = g >= 0 && ts_h5_write_double_attr(g, "kappa_bits", r->kappa_bits) >= 0 &&
             ts_h5_write_double_attr(g, "kappa_nats", r->kappa_bits * log(2.0)) >= 0 &&
             ts_h5_write_int64_attr(g, "seed", a->seed) >= 0 &&
             ts_h5_write_int64_attr(g, "groups", a->groups) >= 0 &&
             ts_h5_write_int64_attr(g, "samples_per_group", a->samples) >= 0 &&
             ts_h5_write_string_attr(g, "prompt_latents",
                                     a->prompt_from_encoder ? "encoder" : "prior") >= 0 &&
             ts_h5_write_string_attr(g, "checkpoint", r->checkpoint) >= 0 &&
             ts_h5_write_int64_attr(g, "step", r->step) >= 0 &&
             ts_h5_write_double_attr(g, "prior_loss", r->prior_loss) >= 0 &&
             ts_h5_write_double_attr(g, "prior_loss_k16", r->prior_loss_k16) >= 0 &&
             ts_h5_write_double_attr(g, "posterior_loss_leaks", r->posterior_loss) >= 0 &&
             ts_h5_write_double_attr(g, "kl_nats_per_token", r->kl_nats) >= 0 &&
             write_mode(g, a, 0, &r->mode[0]) && write_mode(g, a, 1, &r->mode[1]);
        if (g >= 0) ok = H5Gclose(g) >= 0 && ok;
    }
    if (file >= 0) ok = H5Fclose(file) >= 0 && ok;
    ts_h5_quiet_end(quiet);
    if (!ok) {
        if (!carry_failed) snprintf(err, errlen, "cannot write '%s'", path);
        ts_commit_abandon(&commit);
        return false;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen) == TS_IO_OK;
}

static void print_stat(ts_letter_stat shared, ts_letter_stat independent, int decimals) {
    printf(" | %5.*f+-%5.*f %5.*f+-%5.*f", decimals, shared.mean, decimals, shared.se, decimals,
           independent.mean, decimals, independent.se);
}

static void print_table(const letters_args *a, const kappa_result *results) {
    printf("\nFree Transformer letter task: what Z encodes (%d groups of %d lines per mode)\n",
           a->groups, a->samples);
    printf("%-8s %9s %9s | %7s %7s %9s | %-13s | %-25s | %-25s | %-25s\n", "kappa", "KL", "KL",
           "loss", "loss", "posterior", "valid lines", "same position", "|position difference|",
           "noise Jaccard");
    const char *modes = "shared       indep";
    printf("%-8s %9s %9s | %7s %7s %9s | %-13s | %-25s | %-25s | %-25s\n", "[bits]", "[bit/tok]",
           "[bit/line]", "K=1", "K=16", "(leaks)", "shared indep", modes, modes, modes);
    for (int k = 0; k < a->n_kappas; k++) {
        const kappa_result *r = &results[k];
        const ts_letter_agreement *s = &r->mode[0].agreement, *i = &r->mode[1].agreement;
        printf("%-8g %9.4f %9.2f | %7.4f %7.4f %9.4f | %6.3f %6.3f", r->kappa_bits,
               r->kl_nats / log(2.0), r->kl_nats / log(2.0) * TS_LETTER_LINE, r->prior_loss,
               r->prior_loss_k16, r->posterior_loss, s->valid_fraction, i->valid_fraction);
        print_stat(s->same_position, i->same_position, 3);
        print_stat(s->position_distance, i->position_distance, 2);
        print_stat(s->noise_jaccard, i->noise_jaccard, 3);
        printf("\n");
    }
    printf("losses: nats/token on %d validation lines (the prior's with K samples, and the "
           "encoder posterior's,\nwhich leaks the targets); KL of the posterior to the uniform "
           "prior, per token and per %d-token line;\n|position difference| in characters "
           "(independent uniform positions: 18.99); +-: standard error over the groups\n"
           "(lines sharing a group are not independent)\n",
           a->eval_lines, TS_LETTER_LINE);
}

int ts_free_letters_run(MPI_Comm comm, const ts_free_letters_options *a) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    char err[1024] = "", data[TS_PATH_MAX];
    snprintf(data, sizeof data, "%s/letters_seed%ld_%ld.h5", a->dir, a->seed, a->train_lines);
    int ok = 1;
    if (rank == 0) {
        ok = ts_make_dirs(a->dir, err, sizeof err) == TS_IO_OK;
        if (ok && access(data, F_OK) != 0) {
            long n_val = a->train_lines / 20 > 1000 ? a->train_lines / 20 : 1000;
            ok = ts_letter_task_write(data, (uint64_t)a->seed, a->train_lines, n_val, false, err,
                                      sizeof err);
            if (ok) printf("free-letters: wrote %s (%ld training lines)\n", data, a->train_lines);
        }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    MPI_Bcast(err, sizeof err, MPI_CHAR, 0, comm);
    ts_run_config configs[MAX_KAPPAS];
    for (int k = 0; ok && k < a->n_kappas; k++)
        ok = kappa_config(a, k, data, &configs[k], err, sizeof err);
    if (!ok) {
        if (rank == 0) fprintf(stderr, "thinkscale free-letters: error: %s\n", err);
        return 1;
    }
    for (int k = 0; k < a->n_kappas; k++) {
        if (rank == 0) {
            printf("== free-letters: kappa = %g bits per token, %s\n", a->kappa_bits[k],
                   configs[k].run_dir);
            fflush(stdout);
        }
        int status = ts_train(comm, &configs[k], true);
        if (status) return status;
    }
    kappa_result *results = calloc((size_t)a->n_kappas, sizeof *results);
    ts_ctx ctx;
    bool have_ctx = rank == 0 && ts_ctx_init(&ctx, 0);
    ok = results && (rank != 0 || have_ctx);
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm);
    for (int k = 0; ok && k < a->n_kappas; k++) {
        kappa_result *r = &results[k];
        r->kappa_bits = a->kappa_bits[k];
        ts_model *model = load_final_model(comm, configs[k].run_dir, r, err, sizeof err);
        ok = model != NULL;
        if (ok && rank == 0) {
            ts_model_bind(model, &ctx);
            ok = evaluate_lines(model, &ctx, a, r) &&
                 generate_mode(model, &ctx, a, 0, &r->mode[0]) &&
                 generate_mode(model, &ctx, a, 1, &r->mode[1]) && write_text(a, r, err, sizeof err);
            if (!ok && !err[0]) snprintf(err, sizeof err, "out of memory sampling");
        }
        ts_model_destroy(model);
        MPI_Bcast(&ok, 1, MPI_INT, 0, comm); /* the next load is collective again */
    }
    if (ok && rank == 0) {
        ok = write_h5(a, results, err, sizeof err);
        if (ok) {
            print_table(a, results);
            printf("samples: %s/samples.h5 and %s/samples_kappa_bits_*.txt\n", a->dir, a->dir);
        }
    }
    if (!ok && rank == 0) fprintf(stderr, "thinkscale free-letters: error: %s\n", err);
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    if (have_ctx) ts_ctx_free(&ctx);
    for (int k = 0; results && k < a->n_kappas; k++)
        for (int mode = 0; mode < 2; mode++) free_mode(&results[k].mode[mode]);
    free(results);
    return ok ? 0 : 1;
}
