#!/usr/bin/env bash
# Runs every test of every build and prints one closing line with the totals.
#   tests/unit/test_*.c  cmocka suites, run in the float, double and asan builds
#   tests/mpi/test_*.c   cmocka suites run under mpirun on 1 and 2 ranks (float, double builds)
#   tests/cli/test_*.sh  end-to-end scripts; each counts as one test, exit 0 = pass
#   tests/slurm/test_*.sh  the same, each under a private Slurm it starts and
#                        stops (tests/slurm/lib.sh, docs/slurm.md)
#   tests/check_layers.sh  no upward #include in src/ (docs/architecture.md); one test
#   analysis/tests/      Python unittest suites of the analysis (Debian's /usr/bin/python3)
# A suite that crashes or prints no cmocka summary counts as one failure.
set -u
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
log_dir=build/test-logs
mkdir -p "$log_dir"
passed=0 failed=0
failures=()

# Adds a cmocka suite's counts from its log; a missing summary is one failure.
count_cmocka() {
    local name=$1 log=$2 status=$3
    local p f
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s += $4} END {print s + 0}')
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s += $4} END {print s + 0}')
    if ! grep -qE '^\[==========\] [0-9]+ test' "$log" || { [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; }; then
        f=$((f + 1))
    fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$f" -gt 0 ]; then failures+=("$name (log: $log)"); fi
    printf '%-48s %4d passed %4d failed\n' "$name" "$p" "$f"
}

log="$log_dir/check_layers.log"
if tests/check_layers.sh >"$log" 2>&1; then
    passed=$((passed + 1)); printf '%-48s %4d passed %4d failed\n' "check_layers" 1 0
else
    failed=$((failed + 1)); failures+=("check_layers (log: $log)")
    printf '%-48s %4d passed %4d failed\n' "check_layers" 0 1
fi

for build in float double asan; do
    for bin in build/$build/tests/unit/test_*; do
        [ -x "$bin" ] || continue
        name="$build/$(basename "$bin")"
        log="$log_dir/${build}_$(basename "$bin").log"
        (cd build/$build && "../../$bin") >"$log" 2>&1
        count_cmocka "$name" "$log" $?
    done
done

for build in float double; do
    for bin in build/$build/tests/mpi/test_*; do
        [ -x "$bin" ] || continue
        for np in 1 2; do
            name="$build/$(basename "$bin") np=$np"
            log="$log_dir/${build}_$(basename "$bin")_np$np.log"
            timeout 600 mpirun -np "$np" "$bin" >"$log" 2>&1
            count_cmocka "$name" "$log" $?
        done
    done
done

for script in tests/cli/test_*.sh tests/slurm/test_*.sh; do
    [ -f "$script" ] || continue
    section=$(basename "$(dirname "$script")")
    name="$section/$(basename "$script")"
    log="$log_dir/${section}_$(basename "$script").log"
    if timeout 900 bash "$script" >"$log" 2>&1; then
        passed=$((passed + 1)); printf '%-48s %4d passed %4d failed\n' "$name" 1 0
    else
        failed=$((failed + 1)); failures+=("$name (log: $log)")
        printf '%-48s %4d passed %4d failed\n' "$name" 0 1
    fi
done

# analysis/tests: counts from unittest's summary ("Ran N tests", "FAILED (failures=F,
# errors=E, skipped=S)"); a skipped test counts as failed, no summary as one failure.
py_log="$log_dir/python_analysis.log"
PYTHONDONTWRITEBYTECODE=1 timeout 900 /usr/bin/python3 -m unittest discover -s analysis/tests -v \
    >"$py_log" 2>&1
py_status=$?
py_ran=$(sed -nE 's/^Ran ([0-9]+) tests? in .*/\1/p' "$py_log" | tail -n 1)
py_bad=$(grep -E '^(OK|FAILED) \(' "$py_log" | tail -n 1 |
         grep -oE '(failures|errors|skipped)=[0-9]+' | awk -F= '{s += $2} END {print s + 0}')
if [ -z "$py_ran" ]; then py_ran=0 py_bad=1; fi
if [ "$py_status" -ne 0 ] && [ "$py_bad" -eq 0 ]; then py_bad=1; fi
py_passed=$((py_ran > py_bad ? py_ran - py_bad : 0))
passed=$((passed + py_passed)); failed=$((failed + py_bad))
if [ "$py_bad" -gt 0 ]; then failures+=("python analysis/tests (log: $py_log)"); fi
printf '%-48s %4d passed %4d failed\n' "python analysis/tests" "$py_passed" "$py_bad"

# Why each failure failed, for a CI whose logs are gone once it ends: the
# failed checks and the last lines of each failing log.
for f in "${failures[@]+"${failures[@]}"}"; do
    log=${f##*log: }; log=${log%)}
    echo "---- $f"
    grep -E '^(FAIL|\[  FAILED  \]|slurm harness: timed out)' "$log" | head -n 20
    echo "  (last lines)"; tail -n 15 "$log" | sed 's/^/  /'
done
for f in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $f"; done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
