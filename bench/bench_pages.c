/* What a page given back costs when it is written again: zero3 gives back
 * a block's unowned parameters after each of its passes and every gradient
 * unit after its reduction (ts_reals_discard, docs/parallelism.md), and
 * writes them again in the next gather and backward, tens of MB per step.
 * Measured on a buffer of BENCH_PAGES_MB, in microseconds per 4 KiB page:
 *   - writing pages that stayed mapped (the floor: a memset);
 *   - ts_reals_discard itself (zeroing, then MADV_FREE);
 *   - writing pages after ts_reals_discard, as the next gather does;
 *   - writing pages after MADV_DONTNEED, which the discard used before the
 *     twenty-fourth round (docs/performance.md): every page faults and is
 *     zeroed again.
 * On bare metal a page kept after MADV_FREE costs its write only; on a VM
 * whose hypervisor shadows the page tables, the next write of each page is
 * an exit (5-6 us measured, against 13 after MADV_DONTNEED), which is then
 * what zero3 pays per step beyond ddp. Each figure is the median of
 * BENCH_ROUNDS rounds. Summary line PAGES_BENCH, no verdict. */
#define _DEFAULT_SOURCE /* madvise */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_env.h"
#include "bench_median.h"
#include "engine/clock.h"
#include "parallel/param_units.h"

enum { MAX_ROUNDS = 101 };

typedef enum measure { RESIDENT, DISCARD, AFTER_DISCARD, AFTER_DONTNEED, N_MEASURES } measure;
static const char *const measure_keys[N_MEASURES] = {
    "resident_write_us", "discard_us", "write_after_discard_us", "write_after_dontneed_us"};
static const char *const measure_names[N_MEASURES] = {
    "write, pages kept mapped", "ts_reals_discard (zero, MADV_FREE)",
    "write after ts_reals_discard", "write after MADV_DONTNEED (former discard)"};

int main(void) {
    const char *program = "bench_pages";
    long mb = bench_env_long(program, "BENCH_PAGES_MB", 64, 1, 1L << 16);
    long rounds = bench_env_long(program, "BENCH_ROUNDS", 7, 1, MAX_ROUNDS);
    long page = sysconf(_SC_PAGESIZE);
    long n = mb * (1L << 20) / (long)sizeof(ts_real), pages = n * (long)sizeof(ts_real) / page;
    ts_real *buffer = ts_reals_reserve(n);
    if (!buffer) {
        fprintf(stderr, "%s: cannot reserve %ld MB\n", program, mb);
        return 1;
    }
    size_t bytes = (size_t)n * sizeof *buffer;
    memset(buffer, 1, bytes); /* every page mapped before the first round */
    double us[N_MEASURES][MAX_ROUNDS];
    for (long r = 0; r < rounds; r++) {
        double t0 = ts_clock_seconds(false);
        memset(buffer, 2, bytes);
        double t1 = ts_clock_seconds(false);
        ts_reals_discard(buffer, 0, n);
        double t2 = ts_clock_seconds(false);
        memset(buffer, 3, bytes);
        double t3 = ts_clock_seconds(false);
        if (madvise(buffer, bytes, MADV_DONTNEED) != 0) {
            perror("bench_pages: madvise(MADV_DONTNEED)");
            return 1;
        }
        double t4 = ts_clock_seconds(false);
        memset(buffer, 4, bytes);
        double t5 = ts_clock_seconds(false);
        us[RESIDENT][r] = (t1 - t0) * 1e6 / (double)pages;
        us[DISCARD][r] = (t2 - t1) * 1e6 / (double)pages;
        us[AFTER_DISCARD][r] = (t3 - t2) * 1e6 / (double)pages;
        us[AFTER_DONTNEED][r] = (t5 - t4) * 1e6 / (double)pages;
    }
    ts_reals_unreserve(buffer, n);
    double median[N_MEASURES];
    printf("pages: %ld of %ld KiB (%ld MB), median of %ld rounds, microseconds per page\n", pages,
           page / 1024, mb, rounds);
    for (int m = 0; m < N_MEASURES; m++) {
        median[m] = bench_median(us[m], rounds);
        printf("  %-42s %8.3f\n", measure_names[m], median[m]);
    }
    printf("PAGES_BENCH page_kib=%ld", page / 1024);
    for (int m = 0; m < N_MEASURES; m++) printf(" %s=%.3f", measure_keys[m], median[m]);
    printf(" rewrite_cost_vs_resident=%.1f\n", median[AFTER_DISCARD] / median[RESIDENT]);
    return 0;
}
