# thinkscale build. `make run` and `make test` are the two entry points (README.md).
#
# Three builds of the same sources, each in its own directory under build/:
#   build/float   element type float, optimised: the programs users run
#   build/double  element type double, optimised: gradient checks
#   build/asan    element type double, ASan + UBSan: the unit tests again
# Dependencies are found with pkg-config (the SentencePiece tools and npm, which
# the data pipeline runs, by name); `make deps` installs missing ones on
# Debian and, anywhere else, names what is missing and stops. Slurm's daemons
# and munge are for tests/slurm, which starts a private Slurm (docs/slurm.md):
# a cluster's login node lacks slurmctld, so elsewhere they are only named.

PKGS        := ompi hdf5-openmpi scalapack-openmpi openblas cmocka inih
DEBIAN_PKGS := build-essential pkg-config libopenmpi-dev openmpi-bin \
               libhdf5-openmpi-dev hdf5-tools libscalapack-openmpi-dev \
               libopenblas-dev libcmocka-dev libinih-dev \
               python3-numpy python3-h5py python3-scipy python3-matplotlib \
               slurm-wlm munge \
               bible-kjv dict-gcide dict-wn fortunes dict-jargon dict-foldoc dict-devil \
               sentencepiece
# Debian's npm conflicts with a Node.js from elsewhere (NodeSource's nodejs
# ships its own npm), so npm is asked of apt only when no npm is on PATH.
NPM_PKG     := $(if $(shell command -v npm 2>/dev/null),,npm)

NPROC   := $(shell nproc 2>/dev/null || echo 2)
MARCH   ?= -march=native
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
BASE_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Isrc -MMD -MP \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread

# -fno-trapping-math: the engine never reads floating-point exception flags,
# and without it GCC keeps loops whose per-element selects sit next to a
# product (the inline exponential, sigmoid, silu, the softmax kernels) scalar
# on any -march short of AVX-512's masked instructions: with it an AVX2
# build (MARCH=-march=x86-64-v3) trains as fast as -march=native here,
# without it 33% slower (docs/performance.md, fifth round). Values are
# unchanged (only the assumption about traps).
# -fno-math-errno: nothing reads errno after a math call, and without it
# every sqrt keeps a scalar branch to libm for negative inputs, so loops over
# it (AdamW's update, the sqrt op) stay scalar: the update took 5.0 ms of a
# 176 ms Transformer++ step (docs/performance.md, eleventh round). Values
# are unchanged (sqrt is correctly rounded either way).
OPTFLAGS      := -O3 -fno-trapping-math -fno-math-errno
CFLAGS_float  := $(OPTFLAGS) $(MARCH) -g
CFLAGS_double := $(OPTFLAGS) $(MARCH) -g -DTS_DOUBLE
CFLAGS_asan   := -O1 -g -DTS_DOUBLE -fsanitize=address,undefined \
                 -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# The commit recorded in metrics and checkpoints: a generated one-line source,
# rewritten only when the commit (or the tree's dirtiness) changes, so only it
# recompiles.
GIT_COMMIT := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
GENERATED  := build/generated/git_commit.c
$(shell mkdir -p build/generated; \
        echo 'const char ts_git_commit[] = "$(GIT_COMMIT)";' >$(GENERATED).new; \
        cmp -s $(GENERATED).new $(GENERATED) || mv $(GENERATED).new $(GENERATED); rm -f $(GENERATED).new)

LIB_SRC   := $(filter-out src/cli/main.c,$(wildcard src/*/*.c)) $(GENERATED)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
MPI_SRC   := $(wildcard tests/mpi/test_*.c)
BENCH_SRC := $(wildcard bench/bench_*.c)
# Non-test .c files next to the tests are helpers, linked into the tests of
# their own folder (and unit helpers into MPI tests too). tests/cli holds
# fixtures that its scripts build themselves.
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
MPI_HELPERS  := $(UNIT_HELPERS) $(filter-out $(MPI_SRC),$(wildcard tests/mpi/*.c))

BUILDS := float double asan
.PHONY: FORCE all deps bench-deps build test test-unit test-mpi test-cli run run-default bench data data-thinking format clean

all: build

# ---------------------------------------------------------------- deps
deps:
	@missing=""; for p in $(PKGS); do pkg-config --exists $$p || missing="$$missing $$p"; done; \
	py_ok=1; /usr/bin/python3 -c 'import h5py, numpy, scipy, matplotlib' 2>/dev/null || py_ok=0; \
	command -v mpirun >/dev/null || missing="$$missing mpirun"; \
	command -v spm_train >/dev/null || missing="$$missing spm_train(sentencepiece)"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	slurm_missing=""; for c in slurmctld slurmd sbatch munged; do \
	  command -v $$c >/dev/null || [ -x /usr/sbin/$$c ] || slurm_missing="$$slurm_missing $$c"; done; \
	if [ -z "$$missing$$slurm_missing" ] && [ $$py_ok = 1 ]; then exit 0; fi; \
	if [ -f /etc/debian_version ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "thinkscale: installing missing dependencies:$$missing$$slurm_missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PKGS) $(NPM_PKG) >/dev/null || exit 1; \
	elif [ -z "$$missing" ] && [ $$py_ok = 1 ]; then \
	  echo "thinkscale: no$$slurm_missing here: tests/slurm will fail (they start a private Slurm)." >&2; \
	else \
	  echo "thinkscale: missing dependencies:$$missing (python3 h5py/numpy/scipy/matplotlib ok=$$py_ok)." >&2; \
	  echo "  Load the modules providing them (pkg-config must find: $(PKGS)) and retry." >&2; exit 1; \
	fi

# ---------------------------------------------------------------- builds
FORCE:
define BUILD_template
# The build's compiler flags, rewritten only when they change: every object
# depends on it, so a changed flag (here or from the environment) rebuilds.
build/$(1)/cflags: FORCE
	@mkdir -p $$(dir $$@)
	@echo '$$(CC) $$(BASE_CFLAGS) $$(CFLAGS_$(1))' | cmp -s - $$@ || \
	  echo '$$(CC) $$(BASE_CFLAGS) $$(CFLAGS_$(1))' > $$@

build/$(1)/%.o: %.c build/$(1)/cflags | deps
	@mkdir -p $$(dir $$@)
	@echo "  CC [$(1)] $$<"
	@$$(CC) $$(BASE_CFLAGS) $$(CFLAGS_$(1)) $$(FILE_CFLAGS) -c $$< -o $$@

build/$(1)/libthinkscale.a: $$(patsubst %.c,build/$(1)/%.o,$$(LIB_SRC))
	@mkdir -p $$(dir $$@)
	ar rcs $$@ $$^

build/$(1)/tests/unit/%: build/$(1)/tests/unit/%.o $$(patsubst %.c,build/$(1)/%.o,$$(UNIT_HELPERS)) build/$(1)/libthinkscale.a
	$$(CC) $$(CFLAGS_$(1)) $$^ -o $$@ $$(LDLIBS)

build/$(1)/tests/mpi/%: build/$(1)/tests/mpi/%.o $$(patsubst %.c,build/$(1)/%.o,$$(MPI_HELPERS)) build/$(1)/libthinkscale.a
	$$(CC) $$(CFLAGS_$(1)) $$^ -o $$@ $$(LDLIBS)

build/$(1)/bench/%: build/$(1)/bench/%.o build/$(1)/libthinkscale.a
	$$(CC) $$(CFLAGS_$(1)) $$^ -o $$@ $$(LDLIBS)

build/$(1)/thinkscale: build/$(1)/src/cli/main.o build/$(1)/libthinkscale.a
	$$(CC) $$(CFLAGS_$(1)) $$^ -o $$@ $$(LDLIBS)
endef
$(foreach b,$(BUILDS),$(eval $(call BUILD_template,$(b))))

# The attentions' small GEMM kernel is written as vector products and sums;
# -std=c11 turns off their contraction into fused multiply-adds, which is
# half of its speed, so this one file allows it (values: one rounding per
# multiply-add instead of two).
$(foreach b,$(BUILDS),build/$(b)/src/engine/small_gemm.o): FILE_CFLAGS = -ffp-contract=fast
# The same for bench_machine's multiply-add peak, which must be fused to be one.
build/float/bench/bench_machine.o: FILE_CFLAGS = -ffp-contract=fast

# Preloaded fault injection for the reliability tests (tests/fault/).
FAULT_SHIMS = build/fault/write_fault.so build/fault/stall_write.so
build/fault/%.so: tests/fault/%.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O1 -shared -fPIC $< -o $@ -ldl

UNIT_BINS = $(foreach b,$(BUILDS),$(patsubst %.c,build/$(b)/%,$(UNIT_SRC)))
MPI_BINS  = $(foreach b,float double,$(patsubst %.c,build/$(b)/%,$(MPI_SRC)))
BENCH_BINS = $(patsubst %.c,build/float/%,$(BENCH_SRC))
PROGRAMS  = build/float/thinkscale build/double/thinkscale

build: deps
	@$(MAKE) -s --no-print-directory -j$(NPROC) $(PROGRAMS) $(UNIT_BINS) $(MPI_BINS) $(BENCH_BINS) $(FAULT_SHIMS)
	@ln -sf build/float/thinkscale thinkscale

# ---------------------------------------------------------------- entry points
test: build
	@tests/run_tests.sh

# PyTorch is only for the peer benchmark (bench/bench_peer.sh), so only
# `make bench` installs it (Debian's python3-torch, for /usr/bin/python3).
bench-deps:
	@/usr/bin/python3 -c 'import torch' 2>/dev/null && exit 0; \
	if [ -f /etc/debian_version ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "thinkscale: installing python3-torch for the peer benchmark"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >/dev/null || exit 1; \
	else \
	  echo "thinkscale: the peer benchmark needs PyTorch for /usr/bin/python3 (Debian: python3-torch)." >&2; exit 1; \
	fi

bench: build bench-deps
	@bench/run_bench.sh

data: build
	@data/build_corpora.sh

# The thinking experiment's data, byte and subword (jobs/campaigns/thinking.ini, docs/thinking.md).
data-thinking: build
	@data/build_thinking.sh

run: build
	@jobs/run.sh

run-default: build
	@jobs/default.sh

format:
	clang-format -i $$(find src tests bench -name '*.[ch]')

clean:
	rm -rf build thinkscale

-include $(shell find build -name '*.d' 2>/dev/null)
