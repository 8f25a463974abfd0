#define _XOPEN_SOURCE 700 /* realpath */
#include "experiments/campaign_sbatch.h"

#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/campaign_files.h"
#include "io/provenance.h"

/* How long before its time limit a task is asked to checkpoint and requeue:
 * enough for one training step and a checkpoint of a workstation-sized run. */
enum { TS_SBATCH_SIGNAL_SECONDS = 120 };

/* Appends to a fixed buffer; false once it is full. */
typedef struct text_buffer {
    char *text;
    size_t cap, len;
    bool ok;
} text_buffer;

__attribute__((format(printf, 2, 3))) static void put(text_buffer *b, const char *fmt, ...) {
    if (!b->ok) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->text + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->ok = false;
    else
        b->len += (size_t)n;
}

/* The owners' indices as Slurm ranges: "0-3,5,7-9". */
static bool array_indices(const ts_campaign_manifest *m, int throttle, char *out, size_t len) {
    text_buffer b = {out, len, 0, true};
    out[0] = 0;
    int i = 0;
    while (i < m->n_points) {
        if (m->points[i].run_owner != i) {
            i++;
            continue;
        }
        int j = i;
        while (j + 1 < m->n_points && m->points[j + 1].run_owner == j + 1) j++;
        put(&b, "%s%d", b.len ? "," : "", i);
        if (j > i) put(&b, "-%d", j);
        i = j + 1;
    }
    put(&b, "%%%d", throttle);
    return b.ok;
}

static void absolute(const char *path, char *out, size_t len) {
    char real[PATH_MAX];
    if (realpath(path, real))
        snprintf(out, len, "%s", real);
    else
        snprintf(out, len, "%s", path);
}

/* Single quotes for the shell. Paths with a quote are refused. */
static bool quotable(const char *s) {
    return !strchr(s, '\'');
}

static void header(text_buffer *b, const ts_campaign *c, const char *job, const char *output) {
    put(b, "#!/bin/bash\n");
    put(b, "#SBATCH --job-name=%s\n", job);
    put(b, "#SBATCH --output=%s\n", output);
    if (c->partition[0]) put(b, "#SBATCH --partition=%s\n", c->partition);
    if (c->account[0]) put(b, "#SBATCH --account=%s\n", c->account);
}

bool ts_campaign_write_sbatch(const ts_campaign *c, const ts_campaign_manifest *m,
                              const ts_campaign_cost *costs, const char *dir,
                              ts_campaign_scripts *out, char *err, size_t errlen) {
    char slurm_dir[TS_PATH_MAX + 16], abs_dir[PATH_MAX], abs_file[PATH_MAX], root[PATH_MAX],
        program[PATH_MAX + 32];
    snprintf(slurm_dir, sizeof slurm_dir, "%s/slurm", dir);
    if (ts_make_dirs(slurm_dir, err, errlen) != TS_IO_OK) return false;
    absolute(dir, abs_dir, sizeof abs_dir);
    absolute(c->path, abs_file, sizeof abs_file);
    if (!ts_campaign_repo_root(root, sizeof root)) {
        snprintf(err, errlen, "cannot find the repository of this program (/proc/self/exe)");
        return false;
    }
    snprintf(program, sizeof program, "%s/build/float/thinkscale", root);
    if (!quotable(abs_dir) || !quotable(abs_file) || !quotable(root)) {
        snprintf(err, errlen, "paths with a single quote cannot go into the sbatch scripts");
        return false;
    }
    if (!array_indices(m, c->throttle, out->array_range, sizeof out->array_range)) {
        snprintf(err, errlen, "the --array list is too long");
        return false;
    }
    /* One time limit for every task (Slurm gives an array one): the longest
     * run's planned hours on its nodes, with the margin. */
    double hours = 0;
    for (int i = 0; i < m->n_points; i++) {
        double h = costs[i].node_hours / (c->nodes > 0 ? c->nodes : 1);
        if (h > hours) hours = h;
    }
    out->minutes = (long)ceil(hours * c->time_margin * 60.0);
    if (out->minutes < c->min_minutes) out->minutes = c->min_minutes;
    bool capped = c->max_minutes > 0 && out->minutes > c->max_minutes;
    if (capped) out->minutes = c->max_minutes;
    int ranks_per_node = (c->ranks + c->nodes - 1) / c->nodes;
    const char *mpi = !strcmp(c->launcher, "srun")
                          ? "srun --mpi=pmix --cpus-per-task=\"$SLURM_CPUS_PER_TASK\""
                          : "mpirun -np \"$SLURM_NTASKS\"";

    char text[16384], job[96], output[PATH_MAX + 64];
    text_buffer b = {text, sizeof text, 0, true};
    snprintf(job, sizeof job, "ts-%s", c->name);
    snprintf(output, sizeof output, "%s/slurm/task-%%a-job-%%A.out", abs_dir);
    header(&b, c, job, output);
    put(&b, "#SBATCH --array=%s\n", out->array_range);
    put(&b, "#SBATCH --time=%ld:%02ld:00\n", out->minutes / 60, out->minutes % 60);
    put(&b, "#SBATCH --nodes=%d\n", c->nodes);
    put(&b, "#SBATCH --ntasks-per-node=%d\n", ranks_per_node);
    put(&b, "#SBATCH --cpus-per-task=%d\n", c->cpus_per_task);
    /* Before the time limit the batch shell gets SIGUSR1; ts_train_step
     * (jobs/slurm/lib.sh) passes it to the ranks, which checkpoint and exit
     * 75, and requeues the task, which resumes its point. */
    put(&b, "#SBATCH --requeue\n#SBATCH --open-mode=append\n#SBATCH --signal=B:USR1@%d\n",
        TS_SBATCH_SIGNAL_SECONDS);
    put(&b,
        "# Campaign %s (%s): %d points in %d runs; one array task per run, at most %d at once.\n"
        "# A task runs the point of its index (points sharing its run come with it) and\n"
        "# resumes the run from its newest checkpoint if an earlier task was cut off, so a\n"
        "# task can simply be submitted again. --time: the longest run's planned\n"
        "# node-hours x %g (time_margin), at least %ld minutes%s.\n"
        "# Every SLURM_* variable is recorded in each run's metrics.h5 (provenance/slurm).\n"
        "set -euo pipefail\n",
        c->name, abs_file, m->n_points, m->n_runs, c->throttle, c->time_margin, c->min_minutes,
        capped ? ", capped by max_minutes: a longer run stops at the limit and resumes from its\n"
                 "# newest checkpoint when the array is submitted again"
               : "");
    if (c->setup[0]) put(&b, "%s\n", c->setup);
    put(&b,
        "export OPENBLAS_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n"
        "export OMP_NUM_THREADS=\"$OPENBLAS_NUM_THREADS\"\n"
        "cd '%s'\n"
        "source jobs/slurm/lib.sh\n"
        "ts_train_step %s '%s' campaign run '%s' --dir '%s' --points \"$SLURM_ARRAY_TASK_ID\" "
        "--no-analysis\n",
        root, mpi, program, abs_file, abs_dir);
    snprintf(out->array_path, sizeof out->array_path, "%s/array.sbatch", slurm_dir);
    if (!b.ok || !ts_campaign_write_file_atomic(out->array_path, text, b.len, err, errlen)) {
        if (!b.ok) snprintf(err, errlen, "array.sbatch too long");
        return false;
    }

    b = (text_buffer){text, sizeof text, 0, true};
    snprintf(job, sizeof job, "ts-%s-analysis", c->name);
    snprintf(output, sizeof output, "%s/slurm/analysis-job-%%j.out", abs_dir);
    header(&b, c, job, output);
    put(&b, "#SBATCH --nodes=1\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=1\n");
    put(&b, "#SBATCH --time=0:30:00\n");
    put(&b, "# Submitted with --dependency=afterany:ARRAY_JOB_ID: runs once every array task has\n"
            "# ended, however it ended. Rebuilds results.h5 from the run directories (array\n"
            "# tasks finishing together may each have written an older view), then runs\n"
            "# analysis/scaling.py if every point is done; otherwise it lists what is pending.\n"
            "set -euo pipefail\n");
    if (c->setup[0]) put(&b, "%s\n", c->setup);
    put(&b,
        "export OPENBLAS_NUM_THREADS=1\n"
        "cd '%s'\n"
        "%s '%s' campaign analyse '%s' --dir '%s'\n",
        root, !strcmp(c->launcher, "srun") ? "srun --mpi=pmix -n 1" : "mpirun -np 1", program,
        abs_file, abs_dir);
    snprintf(out->analysis_path, sizeof out->analysis_path, "%s/analysis.sbatch", slurm_dir);
    if (!b.ok || !ts_campaign_write_file_atomic(out->analysis_path, text, b.len, err, errlen)) {
        if (!b.ok) snprintf(err, errlen, "analysis.sbatch too long");
        return false;
    }
    return true;
}

bool ts_campaign_print_scripts(FILE *out, const ts_campaign_scripts *s, char *err, size_t errlen) {
    const char *paths[2] = {s->array_path, s->analysis_path};
    for (int i = 0; i < 2; i++) {
        char *text = ts_campaign_read_file(paths[i], err, errlen);
        if (!text) return false;
        fprintf(out, "==> %s <==\n%s\n", paths[i], text);
        free(text);
    }
    fprintf(out,
            "dry run: would submit\n  sbatch --parsable '%s'\n  sbatch --parsable "
            "--dependency=afterany:$ARRAY_JOB_ID '%s'\n",
            s->array_path, s->analysis_path);
    return true;
}

static bool on_path(const char *program) {
    const char *path = getenv("PATH");
    if (!path) return false;
    char copy[8192], candidate[8400];
    snprintf(copy, sizeof copy, "%s", path);
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(candidate, sizeof candidate, "%s/%s", d, program);
        if (access(candidate, X_OK) == 0) return true;
    }
    return false;
}

/* Runs a command and reads the job id sbatch --parsable prints ("ID" or "ID;CLUSTER"). */
static bool sbatch(const char *command, char *job_id, size_t len, char *err, size_t errlen) {
    FILE *p = popen(command, "r");
    if (!p) {
        snprintf(err, errlen, "cannot run '%s'", command);
        return false;
    }
    char line[256] = "";
    bool got = fgets(line, sizeof line, p) != NULL;
    int status = pclose(p);
    line[strcspn(line, ";\n")] = 0;
    if (!got || status != 0 || !line[0]) {
        snprintf(err, errlen, "'%s' failed (status %d)", command, status);
        return false;
    }
    snprintf(job_id, len, "%s", line);
    return true;
}

bool ts_campaign_submit(const ts_campaign_scripts *s, char *err, size_t errlen) {
    if (!on_path("sbatch")) {
        snprintf(err, errlen,
                 "sbatch is not on PATH: this is not a Slurm login node (the scripts are in "
                 "%s and %s; --dry-run prints them)",
                 s->array_path, s->analysis_path);
        return false;
    }
    char command[9000], array_id[128], analysis_id[128];
    snprintf(command, sizeof command, "sbatch --parsable '%s'", s->array_path);
    if (!sbatch(command, array_id, sizeof array_id, err, errlen)) return false;
    printf("submitted the array: job %s (%s)\n", array_id, s->array_path);
    snprintf(command, sizeof command, "sbatch --parsable --dependency=afterany:%s '%s'", array_id,
             s->analysis_path);
    if (!sbatch(command, analysis_id, sizeof analysis_id, err, errlen)) return false;
    printf("submitted the analysis: job %s, after job %s ends (%s)\n", analysis_id, array_id,
           s->analysis_path);
    return true;
}
