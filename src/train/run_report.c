#include "train/run_report.h"

#include "io/atomic_commit.h"
#include "train/machine_peak.h"

#include <errno.h>
#include <math.h>
#include <string.h>

bool ts_run_summary_valid(const ts_run_summary *s, char *reason, size_t len) {
    if (!isfinite(s->first_loss) || !isfinite(s->last_loss)) {
        snprintf(reason, len, "training loss is not finite");
        return false;
    }
    for (int i = 0; i < s->n_evals; i++)
        if (s->eval_measured[i] && !isfinite(s->eval_loss[i])) {
            snprintf(reason, len, "evaluation loss on %s is not finite", s->eval_names[i]);
            return false;
        }
    bool judge_fall = s->first_step == 0 && s->last_step - s->first_step >= 2;
    if (judge_fall && !(s->last_loss < s->first_loss)) {
        snprintf(reason, len, "training loss did not fall (%.4f -> %.4f)", s->first_loss,
                 s->last_loss);
        return false;
    }
    if (s->first_step > 0)
        snprintf(reason, len, "losses finite (resumed at step %ld: the fall is judged from step 0)",
                 s->first_step);
    else
        snprintf(reason, len, "losses finite%s", judge_fall ? " and training loss fell" : "");
    return true;
}

/* complete, stop_at or interrupted: how the invocation ended. */
static const char *ending(const ts_run_summary *s) {
    return s->stop_signal ? "interrupted" : s->stopped_at ? "stop_at" : "complete";
}

static double tokens_per_second(const ts_run_summary *s) {
    double steps = (double)(s->last_step - s->first_step);
    return s->step_seconds > 0 ? steps * s->batch * s->context / s->step_seconds : 0;
}

static double mfu(const ts_run_summary *s) {
    double peak = s->peak_gflops_per_rank * 1e9 * s->ranks;
    return s->step_seconds > 0 && peak > 0 ? s->flops / s->step_seconds / peak : 0;
}

void ts_print_run_summary(FILE *out, const ts_run_summary *s) {
    char reason[128];
    bool valid = ts_run_summary_valid(s, reason, sizeof reason);
    fprintf(out,
            "RESULT arch=%s ranks=%d steps=%ld-%ld tokens=%.4g time=%.1fs tok/s=%.0f "
            "MFU=%.1f%% loss=%.4f",
            s->arch, s->ranks, s->first_step, s->last_step, s->tokens_seen, s->wall_seconds,
            tokens_per_second(s), 100 * mfu(s), s->last_loss);
    if (s->n_evals && s->eval_measured[0])
        fprintf(out, " val_ppl(%s)=%.3f", s->eval_names[0], s->eval_perplexity[0]);
    else if (s->n_evals)
        fprintf(out, " val_ppl(%s)=n/a", s->eval_names[0]);
    if (s->stop_signal)
        fprintf(out, " interrupted=%s exit=%d", s->stop_signal, s->exit_status);
    else if (s->stopped_at)
        fprintf(out, " stopped_at=%ld", s->last_step);
    fprintf(out, " %s\n", valid ? "VALID" : "INVALID");
}

/* YAML string scalar: quoted, with the two characters that need it escaped. */
static void yaml_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

bool ts_write_run_report(const ts_run_summary *s, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/report.yaml", s->run_dir);
    ts_commit commit;
    if (ts_commit_begin(&commit, path, true, false, err, errlen) != TS_IO_OK) return false;
    FILE *f = fopen(commit.tmp, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", commit.tmp, strerror(errno));
        return false;
    }
    char reason[128];
    bool valid = ts_run_summary_valid(s, reason, sizeof reason);
    double hours = s->wall_seconds / 3600;
    fprintf(f, "# thinkscale training report (docs/training.md)\nrun_dir: ");
    yaml_string(f, s->run_dir);
    fprintf(f, "\nmachine:\n  hostname: ");
    yaml_string(f, s->hostname);
    fprintf(f, "\n  nodes: %d\n  ranks: %d\n  threads_per_rank: %d\n", s->nodes, s->ranks,
            s->threads_per_rank);
    fprintf(f, "  gemm_peak_gflops_per_rank: %.2f\n  gemm_peak_source: %s\n  blas_core: ",
            s->peak_gflops_per_rank, ts_peak_source_name(s->peak_configured));
    yaml_string(f, s->blas_core);
    fprintf(f, "\n  git_commit: ");
    yaml_string(f, s->git_commit);
    fprintf(f, "\nproblem:\n  arch: ");
    yaml_string(f, s->arch);
    fprintf(f, "\n  parameters: %ld\n  non_embedding_parameters: %ld\n", s->params,
            s->non_embedding_params);
    fprintf(f, "  batch_sequences: %ld\n  context: %d\n  steps: [%ld, %ld]\n  tokens_seen: %.0f\n",
            s->batch, s->context, s->first_step, s->last_step, s->tokens_seen);
    fprintf(f, "invocation:\n  ended: %s\n  signal: ", ending(s));
    yaml_string(f, s->stop_signal ? s->stop_signal : "");
    fprintf(f, "\n  exit_status: %d\n", s->exit_status);
    fprintf(f, "performance:\n  wall_seconds: %.3f\n  step_seconds: %.3f\n", s->wall_seconds,
            s->step_seconds);
    fprintf(f, "  executed_flops: %.6g\n  tokens_per_second: %.1f\n  mfu: %.4f\n", s->flops,
            tokens_per_second(s), mfu(s));
    fprintf(f, "  node_hours: %.6f\n  core_hours: %.6f\n", hours * s->nodes,
            hours * s->ranks * s->threads_per_rank);
    /* read_*: the restore at start-up of a resumed invocation (the file
     * size over the slowest rank's open..close, as the write's); 0 when
     * this invocation started from step 0. */
    fprintf(f, "checkpoint:\n  bytes: %.0f\n  write_bandwidth_bytes_per_second: %.0f\n",
            s->checkpoint_bytes, s->checkpoint_bandwidth);
    fprintf(f,
            "  read_bytes: %.0f\n  read_seconds: %.6f\n  read_bandwidth_bytes_per_second: %.0f\n",
            s->restored_bytes, s->restored_seconds,
            s->restored_seconds > 0 ? s->restored_bytes / s->restored_seconds : 0.0);
    fprintf(f, "parallel:\n  strategy: ");
    yaml_string(f, s->strategy ? s->strategy : "ddp");
    fprintf(f, "\n  communicated_bytes_per_step: %.0f\n", s->communicated_bytes_per_step);
    fprintf(f,
            "memory_per_rank:\n  parameters_bytes: %.0f\n  gradients_bytes: %.0f\n"
            "  optimizer_bytes: %.0f\n  activations_bytes: %.0f\n",
            s->parameters_bytes, s->gradients_bytes, s->optimizer_bytes, s->activations_bytes);
    fprintf(f, "losses:\n  train_first: %.6f\n  train_last: %.6f\n  eval:\n", s->first_loss,
            s->last_loss);
    for (int i = 0; i < s->n_evals; i++) {
        fprintf(f, "    - set: ");
        yaml_string(f, s->eval_names[i]);
        if (s->eval_measured[i])
            fprintf(f, "\n      loss: %.6f\n      perplexity: %.6f\n", s->eval_loss[i],
                    s->eval_perplexity[i]);
        else
            fprintf(f, "\n      loss: n/a\n      perplexity: n/a\n");
    }
    fprintf(f, "validation:\n  reason: ");
    yaml_string(f, reason);
    fprintf(f, "\n  verdict: %s\n", valid ? "VALID" : "INVALID");
    bool ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", commit.tmp, strerror(errno));
        ts_commit_abandon(&commit);
        return false;
    }
    return ts_commit_publish(&commit, NULL, NULL, err, errlen) == TS_IO_OK;
}
