#include "experiments/campaign_run.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "experiments/campaign_files.h"
#include "experiments/campaign_results.h"
#include "experiments/campaign_thinking.h"
#include "io/checkpoint.h"
#include "io/provenance.h"
#include "train/run_state.h"
#include "train/trainer.h"

extern char **environ;

/* Rank 0 decides; every rank learns the outcome and rank 0 prints the message. */
static bool agree(MPI_Comm comm, int rank, bool ok, const char *err) {
    int flag = ok;
    MPI_Bcast(&flag, 1, MPI_INT, 0, comm);
    if (!flag && rank == 0) fprintf(stderr, "thinkscale campaign: error: %s\n", err);
    return flag;
}

/* Rank 0: every row from the run directories, then results.h5. A failed
 * write (full disk, I/O error) sets *write_failed. */
static bool refresh_results(const ts_campaign *c, const ts_campaign_manifest *m, const char *dir,
                            ts_campaign_run_result *results, int *n_done, bool *write_failed,
                            char *err, size_t errlen) {
    *n_done = 0;
    for (int i = 0; i < m->n_points; i++) {
        ts_campaign_read_result(m, &m->points[i], &results[i]);
        *n_done += results[i].status == TS_POINT_DONE;
    }
    ts_io_status st = ts_campaign_write_results(dir, c, m, results, err, errlen);
    *write_failed = st == TS_IO_ERR_NOSPACE || st == TS_IO_ERR_IO;
    return st == TS_IO_OK;
}

/* Collective: rank 0 refreshes results.h5 from the run directories; every
 * rank learns whether that worked and, when not, whether the cause was a
 * failed write (a full disk or an I/O error: *write_failed, so every rank
 * exits with TS_EXIT_WRITE_FAILED). */
static bool sync_results(MPI_Comm comm, int rank, const ts_campaign *c,
                         const ts_campaign_manifest *m, const char *dir,
                         ts_campaign_run_result *results, int *n_done, bool *write_failed) {
    char err[2048] = "";
    bool ok = true, failed_write = false;
    if (rank == 0) ok = refresh_results(c, m, dir, results, n_done, &failed_write, err, sizeof err);
    if (agree(comm, rank, ok, err)) return true;
    int flag = failed_write;
    MPI_Bcast(&flag, 1, MPI_INT, 0, comm);
    *write_failed = flag;
    return false;
}

/* Collective: whether the run's newest complete checkpoint is its last step. */
static bool run_is_complete(MPI_Comm comm, const ts_campaign_point *p) {
    char path[TS_PATH_MAX + 64], err[512];
    long step = -1;
    ts_io_status st = ts_checkpoint_find_latest(comm, p->config.run_dir, path, sizeof path, &step,
                                                err, sizeof err);
    return st == TS_IO_OK && step >= p->config.steps;
}

static void set_failed_marker(const ts_campaign_point *p, int status, bool failed) {
    char path[TS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", p->config.run_dir, TS_CAMPAIGN_FAILED_MARKER);
    if (!failed) {
        unlink(path);
        return;
    }
    char text[128], err[256];
    int n = snprintf(text, sizeof text, "training exited with status %d\n", status);
    if (!ts_campaign_write_file_atomic(path, text, (size_t)n, err, sizeof err))
        fprintf(stderr, "thinkscale campaign: warning: %s\n", err);
}

/* Runs /usr/bin/python3 REPO/analysis/scaling.py DIR; its exit status, or -1
 * if the script is not there. */
static int run_analysis_script(const char *name, const char *dir) {
    char root[PATH_MAX], script[PATH_MAX + 64];
    if (!ts_campaign_repo_root(root, sizeof root)) return -1;
    snprintf(script, sizeof script, "%s/analysis/%s", root, name);
    if (access(script, R_OK) != 0) return -1;
    printf("== campaign: analysis: /usr/bin/python3 %s %s\n", script, dir);
    fflush(stdout);
    char *argv[] = {"/usr/bin/python3", script, (char *)dir, NULL};
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0) return 127;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Collective: a trained thinking point without its knob evaluation gets it
 * (docs/thinking.md). Returns the evaluation's status, 0 if there was
 * nothing to do. */
static int think_if_needed(MPI_Comm comm, int rank, const ts_campaign *c,
                           const ts_campaign_manifest *m, const ts_campaign_point *p, int index) {
    if (p->axis != TS_AXIS_THINKING) return 0;
    int needed = rank == 0 ? !ts_campaign_thinking_done(p) : 0;
    MPI_Bcast(&needed, 1, MPI_INT, 0, comm);
    if (!needed) return 0;
    if (rank == 0) {
        printf("== campaign %s: point %d %s: thinking evaluation\n", c->name, index, p->name);
        fflush(stdout);
    }
    return ts_campaign_thinking_eval(comm, c, m, p);
}

int ts_campaign_run(MPI_Comm comm, const ts_campaign *c, const ts_campaign_manifest *m,
                    const ts_campaign_run_options *o) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char err[2048] = "";
    bool ok = true;
    if (rank == 0) {
        if (o->train && !m->data_found) {
            snprintf(err, sizeof err, "%s: %s: cannot run (plan works without data)", c->path,
                     m->missing);
            ok = false;
        }
        ok = ok && ts_campaign_manifest_claim_dir(c, m, o->dir, err, sizeof err);
    }
    if (!agree(comm, rank, ok, err)) return 1;

    ts_campaign_run_result *results = calloc((size_t)m->n_points, sizeof *results);
    bool *ran = calloc((size_t)m->n_points, sizeof *ran); /* runs handled in this invocation */
    ok = results && ran;
    if (!agree(comm, rank, ok, "out of memory")) {
        free(results);
        free(ran);
        return 1;
    }
    int n_done = 0, n_selected = 0, n_failed = 0;
    bool interrupted = false;  /* by a stop signal: exit TS_TRAIN_EXIT_INTERRUPTED */
    bool write_failed = false; /* a full disk: exit TS_EXIT_WRITE_FAILED */
    for (int i = 0; i < m->n_points; i++) n_selected += o->selected[i];
    if (!sync_results(comm, rank, c, m, o->dir, results, &n_done, &write_failed)) goto done;

    for (int i = 0; o->train && i < m->n_points; i++) {
        if (!o->selected[i]) continue;
        const ts_campaign_point *p = &m->points[i];
        int owner = p->run_owner;
        if (ran[owner]) continue;
        ran[owner] = true;
        if (run_is_complete(comm, p)) {
            int think = think_if_needed(comm, rank, c, m, p, i);
            if (think != 0) {
                n_failed++;
                if (rank == 0) {
                    set_failed_marker(p, think, true);
                    fprintf(stderr,
                            "thinkscale campaign: the thinking evaluation of %s failed "
                            "(status %d); continuing\n",
                            p->name, think);
                }
            }
            if (!sync_results(comm, rank, c, m, o->dir, results, &n_done, &write_failed)) goto done;
            if (results[i].problem[0]) {
                /* Retraining would cost the point's node-hours again and
                 * replace what is left of its run: the user decides. */
                n_failed++;
                if (rank == 0)
                    fprintf(stderr,
                            "thinkscale campaign: error: point %s: %s; move its run directory "
                            "aside (mv %s %s.damaged) and run the campaign again to retrain it\n",
                            p->name, results[i].problem, p->config.run_dir, p->config.run_dir);
            } else if (think == 0 && rank == 0) {
                printf("== campaign %s: point %d %s: complete, skipped\n", c->name, i, p->name);
            }
            continue;
        }
        if (rank == 0) {
            printf("== campaign %s: point %d/%d %s (run %s)\n", c->name, i, m->n_points, p->name,
                   p->run);
            fflush(stdout);
            ok = ts_make_dirs(p->config.run_dir, err, sizeof err) == TS_IO_OK;
            if (ok) set_failed_marker(p, 0, false);
        }
        if (!agree(comm, rank, ok, err)) goto done;
        /* Resuming a directory without a checkpoint starts from step 0. */
        int status = ts_train(comm, &p->config, true);
        if (status == TS_TRAIN_EXIT_INTERRUPTED) {
            /* A stop signal (a Slurm time limit): the point is checkpointed,
             * not failed; the campaign stops with the same status so the job
             * script requeues it, and the rerun resumes this point. */
            if (rank == 0) {
                printf("== campaign %s: interrupted by a signal during %s; run the same command "
                       "again to resume\n",
                       c->name, p->name);
            }
            interrupted = sync_results(comm, rank, c, m, o->dir, results, &n_done, &write_failed);
            goto done;
        }
        if (status == TS_EXIT_WRITE_FAILED) {
            /* A full disk or quota fails every later point too: stop with
             * the trainer's status; earlier results stay as they are. */
            if (rank == 0)
                fprintf(stderr,
                        "thinkscale campaign: point %s could not write its files; "
                        "stopping the campaign (free space, then run it again to resume)\n",
                        p->name);
            write_failed = true;
            goto done;
        }
        if (status == 0) status = think_if_needed(comm, rank, c, m, p, i);
        if (status != 0) {
            n_failed++;
            if (rank == 0) {
                set_failed_marker(p, status, true);
                fprintf(stderr, "thinkscale campaign: point %s failed (status %d); continuing\n",
                        p->name, status);
            }
        }
        if (!sync_results(comm, rank, c, m, o->dir, results, &n_done, &write_failed)) goto done;
    }

    int status = 0;
    if (rank == 0) {
        int selected_done = 0;
        for (int i = 0; i < m->n_points; i++)
            selected_done += o->selected[i] && results[i].status == TS_POINT_DONE;
        printf("== campaign %s: %d of %d points done (%d selected, %d of them done); results: "
               "%s/results.h5\n",
               c->name, n_done, m->n_points, n_selected, selected_done, o->dir);
        if (selected_done < n_selected) status = 1;
        if (n_done < m->n_points) {
            if (o->analyse) {
                printf("== campaign %s: the analysis waits for the other %d point%s (run them, "
                       "e.g. without --points):\n",
                       c->name, m->n_points - n_done, m->n_points - n_done == 1 ? "" : "s");
                /* Named, so a Slurm analysis job says what is missing. */
                for (int i = 0; i < m->n_points; i++)
                    if (results[i].status != TS_POINT_DONE)
                        printf("   not done: %s (%s%s%s)\n", m->points[i].name,
                               ts_point_status_name(results[i].status),
                               results[i].problem[0] ? ": " : "", results[i].problem);
            }
        } else if (o->analyse) {
            /* The fits, then the allocation report (docs/allocation-report.md),
             * for the scaling axes; the thinking analysis for the thinking axis
             * (a campaign of its own). */
            bool scaling = !ts_campaign_has_thinking(c);
            int a = 0;
            if (scaling) a = run_analysis_script("scaling.py", o->dir);
            if (scaling && a == 0) a = run_analysis_script("allocation_report.py", o->dir);
            if (ts_campaign_has_thinking(c) && a == 0)
                a = run_analysis_script("thinking.py", o->dir);
            if (a < 0)
                printf("== campaign %s: the analysis scripts are not in this build's repository "
                       "(analysis/): run them on %s when they are\n",
                       c->name, o->dir);
            else if (a != 0) {
                fprintf(stderr, "thinkscale campaign: error: the analysis exited with status %d\n",
                        a);
                status = 1;
            } else {
                if (scaling)
                    printf("== campaign %s: fits %s/fits.csv and %s/fits.md, figures %s/figures/, "
                           "allocation report %s/allocation_report.md and .pdf\n",
                           c->name, o->dir, o->dir, o->dir, o->dir);
                if (ts_campaign_has_thinking(c))
                    printf("== campaign %s: thinking %s/thinking.csv, %s/thinking_fits.csv, "
                           "%s/thinking.md, figures %s/figures/\n",
                           c->name, o->dir, o->dir, o->dir, o->dir);
            }
        }
        fflush(stdout);
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, comm);
    free(results);
    free(ran);
    return status;
done:
    free(results);
    free(ran);
    return interrupted ? TS_TRAIN_EXIT_INTERRUPTED : write_failed ? TS_EXIT_WRITE_FAILED : 1;
}
