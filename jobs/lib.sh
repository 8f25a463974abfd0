# Shared by the jobs of `make run` and `make run-default` (sourced, not run):
# the repository as working directory, the default corpora, and mpirun as
# this machine needs it with one rank per core (THINKSCALE_RANKS overrides).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
data/build_corpora.sh
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OPENBLAS_NUM_THREADS=1 # one rank per core
ranks=${THINKSCALE_RANKS:-$(nproc)}
