#!/usr/bin/env bash
# OpenBLAS's kernel set: on a CPU with AVX2 or AVX-512 that OpenBLAS does not
# recognise (Debian's 0.3.21 on this VM picks its SSE "Prescott" kernels, a
# fifth of the sgemm rate), thinkscale restarts itself once with
# OPENBLAS_CORETYPE set to the vector set, so runs, jobs and benchmarks get
# it without their launcher knowing; a value the user set is obeyed, and the
# trainer then warns when it is a slow set on a fast CPU.
source "$(dirname "$0")/lib.sh"
sse_only="Prescott Core2 Penryn Dunnington Nehalem Atom Katmai Coppermine Northwood Banias Opteron Barcelona"
flags=$(grep -m1 '^flags' /proc/cpuinfo)
vector_cpu=no
case " $flags " in *" avx2 "* | *" avx512f "*) vector_cpu=yes ;; esac
kernels_of() { sed -n 's/.*OpenBLAS kernels \([A-Za-z0-9_]*\)).*/\1/p' "$1"; }
is_sse_only() { case " $sse_only " in *" $1 "*) return 0 ;; esac; return 1; }

env -u OPENBLAS_CORETYPE "$bin" version >"$tmp/default.txt"
check "version runs with OPENBLAS_CORETYPE unset" [ $? -eq 0 ]
chosen=$(kernels_of "$tmp/default.txt")
echo "  CPU with AVX2/AVX-512: $vector_cpu; kernels with the variable unset: $chosen"
check "version names the kernel set" [ -n "$chosen" ]
if [ "$vector_cpu" = yes ]; then
    check "a CPU with AVX2/AVX-512 does not run a pre-AVX kernel set" eval '! is_sse_only "$chosen"'
else
    check "a CPU without AVX2 keeps OpenBLAS's own choice" eval '! [ "$chosen" = SkylakeX ]'
fi

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
if [ "$vector_cpu" = yes ]; then
    OPENBLAS_CORETYPE=Prescott tiny_train 2 "$bin" "$tmp/slow" -x OPENBLAS_CORETYPE \
        --set train.steps=3 >"$tmp/slow.log" 2>&1
    check "training with the slow set asked for succeeds" [ $? -eq 0 ]
    check "it records the slow set" contains "$tmp/slow/report.yaml" 'blas_core: "Prescott"'
    check "and warns, naming the variable to set" contains "$tmp/slow.log" "warning: OpenBLAS runs its Prescott kernels.*OPENBLAS_CORETYPE="
fi
finish
