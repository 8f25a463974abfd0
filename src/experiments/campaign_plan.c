#include "experiments/campaign_plan.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "train/machine_peak.h"
#include "train/step_cost.h"

ts_campaign_rate ts_campaign_node_rate(const ts_campaign *c) {
    ts_campaign_rate r = {0};
    if (c->flop_rate > 0) {
        r.node_flops_per_s = c->flop_rate;
        snprintf(r.how, sizeof r.how, "%.3g FLOP/s per node ([campaign] flop_rate)", c->flop_rate);
        return r;
    }
    double peak = ts_measure_peak_gflops() * 1e9;
    if (!(peak > 0)) peak = 1e9; /* out of memory: the plan says which rate it used */
    int threads = openblas_get_num_threads();
    if (threads < 1) threads = 1;
    double ranks_per_node = (double)c->ranks / (c->nodes > 0 ? c->nodes : 1);
    if (ranks_per_node < 1) ranks_per_node = 1;
    /* The peak was measured with this process's BLAS threads; a node runs
     * ranks_per_node ranks of cpus_per_task threads each. */
    r.node_flops_per_s = peak / threads * c->cpus_per_task * ranks_per_node * c->mfu;
    snprintf(r.how, sizeof r.how,
             "%.3g FLOP/s per node: GEMM peak measured here %.3g FLOP/s on %d thread%s, x %g "
             "ranks x %d thread%s per rank, x mfu %g",
             r.node_flops_per_s, peak, threads, threads == 1 ? "" : "s", ranks_per_node,
             c->cpus_per_task, c->cpus_per_task == 1 ? "" : "s", c->mfu);
    return r;
}

bool ts_campaign_plan_costs(const ts_campaign *c, const ts_campaign_manifest *m,
                            const ts_campaign_rate *rate, ts_campaign_cost *costs, char *err,
                            size_t errlen) {
    for (int i = 0; i < m->n_points; i++) {
        const ts_campaign_point *p = &m->points[i];
        if (p->run_owner != i) {
            costs[i] = costs[p->run_owner];
            continue;
        }
        ts_step_flops_options options = {.ranks = c->ranks, .step = -1};
        ts_step_flops_result step;
        char inner[512];
        if (!ts_step_flops_with(&p->config, &options, &step, inner, sizeof inner)) {
            snprintf(err, errlen, "point %s: counting the FLOPs of one step: %s", p->name, inner);
            return false;
        }
        ts_campaign_cost *k = &costs[i];
        k->flops_per_step = step.total;
        k->flops = step.total * (double)p->config.steps;
        k->flops_6n = 6.0 * (double)p->non_embedding_params * p->tokens;
        k->node_hours = k->flops / rate->node_flops_per_s / 3600.0;
    }
    return true;
}

/* 1234567 -> "1.23M": plan columns stay narrow. */
static const char *human(double v, char *buf, size_t len) {
    const char *suffix[] = {"", "k", "M", "G", "T", "P", "E", "Z"};
    int k = 0;
    double a = fabs(v);
    while (a >= 1000 && k < 7) a /= 1000, v /= 1000, k++;
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (k == 0 && v == floor(v))
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.3g%s", v, suffix[k]);
    return buf;
}

typedef struct totals {
    int points, runs;
    double flops, flops_6n, node_hours, tokens;
} totals;

static void print_totals(FILE *out, const char *label, const totals *t) {
    char a[32], b[32], d[32];
    fprintf(out,
            "%-22s %4d points %4d runs  tokens %9s  executed FLOPs %9s  6N FLOPs %9s  "
            "node-hours %.4g\n",
            label, t->points, t->runs, human(t->tokens, a, sizeof a), human(t->flops, b, sizeof b),
            human(t->flops_6n, d, sizeof d), t->node_hours);
}

void ts_campaign_print_plan(FILE *out, const ts_campaign *c, const ts_campaign_manifest *m,
                            const ts_campaign_rate *rate, const ts_campaign_cost *costs) {
    fprintf(out, "campaign %s (%s): %d points in %d runs, %d architectures, data %s%s%s%s\n",
            c->name, c->path, m->n_points, m->n_runs, c->n_archs, m->train_data,
            m->data_found ? "" : " (not found here: ", m->data_found ? "" : m->missing,
            m->data_found ? "" : "; epochs unknown where it is missing)");
    fprintf(out, "node rate: %s\n\n", rate->how);
    fprintf(out,
            "%4s %-34s %-13s %-6s %9s %5s %5s %5s %9s %9s %6s %7s %9s %6s %9s %9s %9s %9s  %s\n",
            "#", "name", "arch", "axis", "x", "depth", "width", "heads", "params", "N", "batch",
            "steps", "tokens", "epochs", "FLOP/step", "FLOPs", "6N FLOPs", "node-h", "run");
    totals all = {0}, per_arch[TS_CAMPAIGN_MAX_ARCHS] = {{0}};
    for (int i = 0; i < m->n_points; i++) {
        const ts_campaign_point *p = &m->points[i];
        const ts_run_config *k = &p->config;
        const ts_campaign_cost *cost = &costs[i];
        double x = p->axis == TS_AXIS_DATA     ? p->tokens
                   : p->axis == TS_AXIS_BATCH  ? (double)k->batch * k->model.context
                   : p->axis == TS_AXIS_DEPTH  ? k->model.depth
                   : p->axis == TS_AXIS_WIDTH  ? k->model.width
                   : p->axis == TS_AXIS_PARAMS ? (double)p->non_embedding_params
                   : p->axis == TS_AXIS_FLOPS  ? cost->flops
                                               : NAN;
        char bx[32], bp[32], bn[32], bt[32], bs[32], bf[32], b6[32], epochs[32];
        if (isnan(p->epochs))
            snprintf(epochs, sizeof epochs, "-");
        else
            snprintf(epochs, sizeof epochs, "%.3g", p->epochs);
        fprintf(out,
                "%4d %-34s %-13s %-6s %9s %5d %5d %5d %9s %9s %6ld %7ld %9s %6s %9s %9s %9s "
                "%9.3g  %s\n",
                i, p->name, c->archs[p->arch], ts_axis_name(p->axis), human(x, bx, sizeof bx),
                k->model.depth, k->model.width, k->model.heads,
                human((double)p->params, bp, sizeof bp),
                human((double)p->non_embedding_params, bn, sizeof bn), k->batch, k->steps,
                human(p->tokens, bt, sizeof bt), epochs, human(cost->flops_per_step, bs, sizeof bs),
                human(cost->flops, bf, sizeof bf), human(cost->flops_6n, b6, sizeof b6),
                cost->node_hours, p->run_owner == i ? "own" : p->run);
        totals *t[2] = {&all, &per_arch[p->arch]};
        for (int j = 0; j < 2; j++) {
            t[j]->points++;
            if (p->run_owner != i) continue;
            t[j]->runs++;
            t[j]->flops += cost->flops;
            t[j]->flops_6n += cost->flops_6n;
            t[j]->node_hours += cost->node_hours;
            t[j]->tokens += p->tokens;
        }
    }
    fprintf(out, "\n");
    for (int a = 0; a < c->n_archs; a++) {
        char label[64];
        snprintf(label, sizeof label, "total %s", c->archs[a]);
        print_totals(out, label, &per_arch[a]);
    }
    print_totals(out, "total", &all);
    fprintf(out, "(shared runs are counted once; node-hours = executed FLOPs / node rate)\n");
}
