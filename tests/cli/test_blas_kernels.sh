#!/usr/bin/env bash
# OpenBLAS's kernel set: on a CPU with wider vector units than the set
# OpenBLAS picks (Debian's 0.3.21 picks its SSE "Prescott" kernels on an
# unrecognised Xeon, a fifth of the sgemm rate), thinkscale restarts itself
# once with OPENBLAS_CORETYPE set to the widest set the CPU runs, so runs,
# jobs and benchmarks get it without their launcher knowing. A value the user
# (or the machine's environment: OPENBLAS_CORETYPE=Haswell on an AVX-512
# EPYC, seen here) set is obeyed, and the trainer then warns when it is a
# narrower set than the CPU runs.
source "$(dirname "$0")/lib.sh"
sse_sets="Prescott Core2 Penryn Dunnington Nehalem Atom Katmai Coppermine Northwood Banias Opteron Barcelona"
avx_sets="Sandybridge Bulldozer Piledriver Steamroller Excavator"
avx512_sets="SkylakeX Cooperlake SapphireRapids"
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has_flag() { case "$flags" in *" $1 "*) return 0 ;; esac; return 1; }
cpu=plain
has_flag avx2 && cpu=avx2
has_flag avx512f && has_flag avx512bw && has_flag avx512dq && has_flag avx512vl && cpu=avx512
kernels_of() { sed -n 's/.*OpenBLAS kernels \([A-Za-z0-9_]*\)).*/\1/p' "$1"; }
is_one_of() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

env -u OPENBLAS_CORETYPE "$bin" version >"$tmp/default.txt"
check "version runs with OPENBLAS_CORETYPE unset" [ $? -eq 0 ]
chosen=$(kernels_of "$tmp/default.txt")
echo "  CPU vector units: $cpu; kernels with the variable unset: $chosen"
check "version names the kernel set" [ -n "$chosen" ]
case $cpu in
avx512)
    check "an AVX-512 CPU runs an AVX-512 kernel set" is_one_of "$chosen" "$avx512_sets" ;;
avx2)
    check "an AVX2 CPU does not run an SSE or AVX kernel set" \
        eval '! is_one_of "$chosen" "$sse_sets $avx_sets"' ;;
*)
    check "a CPU without AVX2 keeps OpenBLAS's own choice" eval '! [ "$chosen" = SkylakeX ]' ;;
esac

OPENBLAS_CORETYPE=Prescott "$bin" version >"$tmp/forced.txt"
check "a kernel set the user asks for is obeyed" [ "$(kernels_of "$tmp/forced.txt")" = Prescott ]

# The restart keeps the arguments and the MPI launch: a 2-rank training run
# with the variable unset records the vector set and gives no warning...
make_license_corpus "$tmp/corpus.h5"
(
    unset OPENBLAS_CORETYPE
    tiny_train 2 "$bin" "$tmp/run" --set train.steps=3 >"$tmp/train.log" 2>&1
)
check "training succeeds after the restart" [ $? -eq 0 ]
check "report.yaml records the kernel set version reported" \
    contains "$tmp/run/report.yaml" "blas_core: \"$chosen\""
check "no warning about the kernel set" eval '! grep -q "warning: OpenBLAS" "$tmp/train.log"'
# ...and a slow set asked for explicitly on a vector CPU is run, and warned about.
if [ "$cpu" != plain ]; then
    OPENBLAS_CORETYPE=Prescott tiny_train 2 "$bin" "$tmp/slow" -x OPENBLAS_CORETYPE \
        --set train.steps=3 >"$tmp/slow.log" 2>&1
    check "training with the slow set asked for succeeds" [ $? -eq 0 ]
    check "it records the slow set" contains "$tmp/slow/report.yaml" 'blas_core: "Prescott"'
    check "and warns, naming the variable to set" contains "$tmp/slow.log" "warning: OpenBLAS runs its Prescott kernels.*OPENBLAS_CORETYPE="
fi
finish
