#!/usr/bin/env bash
# Tensor parallelism (parallel.tensor_grid = PxQ, issue 14): every linear
# layer's GEMMs run as ScaLAPACK p?gemm on a BLACS grid per group of P*Q
# ranks. Training follows the 1-rank loss trajectory on 1x1, 1x2, 2x1 and
# (oversubscribed) 2x2 grids for all four architectures (EBT's second-order
# training included): double within 1e-10 relative, float within 1e-5; and
# with two 1x2 groups data-parallel (4 ranks). Each rank holds only its
# blocks of the linear weights (their gradients and AdamW moments too): the
# parameters_bytes it reports are those of grid position (0, 0) computed from
# the tensors' shapes, well below the 1-rank run's, the printed parameter
# count stays the global one, and the final checkpoint holds the whole
# tensors, equal to the 1-rank run's within 1e-10 (double). A run
# checkpointed under a grid resumes without one, on another grid, and the
# other way round, on the uninterrupted trajectory. With distributed
# activations (parallel.tensor_activations = distributed, Transformer++ and
# EBT: S1's second-order training, and S2 with Langevin noise, random step
# sizes and counts and the replay buffer) the same on every grid, with fewer
# bytes sent and fewer activations held than replicated activations on the
# same grid, and resumes across modes. Under zero1, zero2 and zero3 across
# two 1x2 groups (each grid position's buffers sharded over the groups) the
# same numbers as ddp on the grid, half its optimiser state per rank, and
# checkpoints in the ordinary layout that resume with and without a grid.
# Unsupported combinations and bad grids are refused at start-up.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"

steps=5
# Width 64 over blocks of 32: every grid row and column holds part of every
# weight, and the inner dimension spans several SUMMA panels.
common=(--set train.steps=$steps --set train.eval_batches=1 --set model.width=64)
ranks_of() { echo $(( ${1%x*} * ${1#*x} )); } # ranks_of PxQ

baseline() { # baseline BUILD ARCH: the 1-rank run without tensor parallelism
    local dir=$tmp/$1-$2-base
    [ -d "$dir" ] && return 0
    # shellcheck disable=SC2046
    tiny_train 1 "$repo/build/$1/thinkscale" "$dir" $(arch_args "$2") "${common[@]}" \
        >"$dir.log" 2>&1 || { echo "  baseline failed:"; tail -5 "$dir.log"; return 1; }
}

compare() { # compare BUILD ARCH GRID NP TOLERANCE [ACTIVATIONS]
    local build=$1 arch=$2 grid=$3 np=$4 tol=$5 act=${6:-replicated}
    local dir=$tmp/$build-$arch-$grid-np$np
    [ "$act" = replicated ] || dir=$dir-$act
    baseline "$build" "$arch" || { check "$build $arch baseline trains" false; return; }
    # shellcheck disable=SC2046
    tiny_train "$np" "$repo/build/$build/thinkscale" "$dir" $(arch_args "$arch") "${common[@]}" \
        --set parallel.tensor_grid="$grid" --set parallel.tensor_activations="$act" >"$dir.log" 2>&1
    check "$build $arch on a $grid grid ($np ranks, $act activations) trains" [ $? -eq 0 ] ||
        { tail -5 "$dir.log"; return; }
    [ "$act" = replicated ] || check "... and says its activations are $act" \
        contains "$dir.log" "activations $act"
    local diff
    diff=$(max_rel_diff "$tmp/$build-$arch-base" "$dir" $steps)
    check "$build $arch $grid ($np ranks) follows the 1-rank losses within $tol ($diff)" \
        below "$diff" "$tol"
    check "$build $arch $grid ($np ranks) holds its blocks only, prints the global count" \
        state_held "$build" "$tmp/$build-$arch-base" "$dir" "$grid" || tail -3 "$dir.log"
    [ "$build" = double ] && check "... and its final checkpoint is the 1-rank one within 1e-10" \
        same_checkpoint "$tmp/$build-$arch-base" "$dir" 1e-10
}

# The bytes of parameters one rank holds, as reported, against grid position
# (0, 0)'s share computed from the baseline checkpoint's shapes: a linear
# weight (2-D, not an embedding table or Free's post_sampler) that gives
# every grid position a block of 32 is held as blocks, the rest whole. Also
# the count of blocked tensors and the global parameter count printed.
state_held() { # state_held BUILD BASE_DIR DIR GRID
    py - "$@" $steps <<'PY'
import sys, re, h5py, numpy as np
sys.path.insert(0, "analysis")
from thinkscale_analysis.tensor_blocks import held_elements
build, base, run, grid, steps = sys.argv[1:6]
P, Q = map(int, grid.split("x"))
elem = 8 if build == "double" else 4
with h5py.File(f"{base}/checkpoint_{int(steps):08d}.h5", "r") as f:
    shapes = {name: d.shape for name, d in f["params"].items()}
count, whole = len(shapes), sum(int(np.prod(s)) for s in shapes.values())
local, blocked = held_elements(shapes, P, Q)
def held(d):
    with h5py.File(f"{d}/metrics.h5", "r") as f: return float(f["memory"]["parameters_bytes"][-1])
log = open(f"{run}.log").read()
printed = re.search(r"(\d+) of (\d+) tensors held as blocks, (\d+) of (\d+) parameters", log)
total = re.search(r"thinkscale train: \S+, (\d+) parameters", log)
ok = (held(run) == elem * local and printed and int(printed.group(1)) == blocked and
      int(printed.group(2)) == count and int(printed.group(3)) == local and
      int(printed.group(4)) == whole and total and int(total.group(1)) == whole)
print(f"  {grid}: {held(run):.0f} B held, expected {elem * local} ({blocked} of {count} blocked), "
      f"1 rank {held(base):.0f} B: {held(run) / held(base):.3f}")
sys.exit(0 if ok else 1)
PY
}

same_checkpoint() { # same_checkpoint DIR_A DIR_B TOLERANCE: params tensor by tensor
    py - "$@" $steps <<'PY'
import sys, h5py, numpy as np
a, b, tol, steps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
worst, bad = 0.0, []
with h5py.File(f"{a}/checkpoint_{steps:08d}.h5", "r") as fa, h5py.File(f"{b}/checkpoint_{steps:08d}.h5", "r") as fb:
    if sorted(fa["params"]) != sorted(fb["params"]): bad.append("tensor names")
    for k in fa["params"]:
        x, y = fa["params"][k][...], fb["params"][k][...]
        if x.shape != y.shape: bad.append(k); continue
        d = np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-300)
        worst = max(worst, d)
        if not d < tol: bad.append(k)
print("  worst relative difference %.3g, differing: %s" % (worst, bad))
sys.exit(1 if bad else 0)
PY
}

for arch in transformerpp ebt free nexus; do
    for grid in 1x1 1x2 2x1 2x2; do compare double $arch $grid "$(ranks_of $grid)" 1e-10; done
    compare float $arch 2x2 4 1e-5
done
compare double transformerpp 1x2 4 1e-10 # two groups, data parallel across them
compare float transformerpp 1x2 2 1e-5

# Distributed activations (parallel.tensor_activations = distributed,
# Transformer++ only): every activation held as 2D blocks, tokens over the
# grid's columns and features over its rows (width 64, 2 heads of 32: one
# head per block of 32). The same numbers, the same blocks held.
for grid in 1x1 1x2 2x1 2x2; do
    compare double transformerpp $grid "$(ranks_of $grid)" 1e-10 distributed
done
compare double transformerpp 1x2 4 1e-10 distributed # two groups, data parallel
compare float transformerpp 2x2 4 1e-5 distributed
compare float transformerpp 1x2 2 1e-5 distributed
# EBT: the energy's observed and prediction streams, the softmax over the
# vocabulary, the inner steps' gradient with respect to the predictions and
# the outer gradient through it, all as blocks.
for grid in 1x1 1x2 2x1 2x2; do
    compare double ebt $grid "$(ranks_of $grid)" 1e-10 distributed
done
compare float ebt 2x2 4 1e-5 distributed
# S2: Langevin noise, step sizes drawn per position, a random number of
# steps and restarts from the replay buffer, drawn whole as on one rank.
s2=($(arch_args ebt) --set ebt.preset=s2 --set ebt.step_size=5)
tiny_train 1 "$bin_double" "$tmp/ebt-s2-base" "${common[@]}" "${s2[@]}" >"$tmp/ebt-s2-base.log" 2>&1
for grid in 1x2 2x2; do
    tiny_train "$(ranks_of $grid)" "$bin_double" "$tmp/ebt-s2-$grid" "${common[@]}" "${s2[@]}" \
        --set parallel.tensor_grid=$grid --set parallel.tensor_activations=distributed \
        >"$tmp/ebt-s2-$grid.log" 2>&1
    check "EBT S2 with distributed activations on $grid trains" [ $? -eq 0 ] ||
        tail -5 "$tmp/ebt-s2-$grid.log"
    diff=$(max_rel_diff "$tmp/ebt-s2-base" "$tmp/ebt-s2-$grid" $steps)
    check "... and follows the 1-rank losses within 1e-10 ($diff)" below "$diff" 1e-10
done

# parallel.tensor_block sets the block size (ScaLAPACK's NB): 4 heads of 16
# need blocks of 16 (or 32) to keep a head on one process row.
h4=(--set model.heads=4)
tiny_train 1 "$bin_double" "$tmp/heads4-base" "${common[@]}" "${h4[@]}" >"$tmp/heads4-base.log" 2>&1
tiny_train 4 "$bin_double" "$tmp/heads4-nb16" "${common[@]}" "${h4[@]}" \
    --set parallel.tensor_grid=2x2 --set parallel.tensor_activations=distributed \
    --set parallel.tensor_block=16 >"$tmp/heads4-nb16.log" 2>&1
check "blocks of 16 with distributed activations on 2x2 train" [ $? -eq 0 ] || tail -5 "$tmp/heads4-nb16.log"
diff=$(max_rel_diff "$tmp/heads4-base" "$tmp/heads4-nb16" $steps)
check "... and follow the 1-rank losses within 1e-10 ($diff)" below "$diff" 1e-10
check "a block size of 0 is refused" fails_with "$tmp/nb0.log" \
    "parallel.tensor_block must be between 1 and 4096, got 0" \
    tiny_train 1 "$bin" "$tmp/nb0" --set parallel.tensor_grid=1x1 --set parallel.tensor_block=0

# A step of at most 32 (Q - 1) tokens (here one sequence of 32 on 2
# columns) would leave a process column without tokens: it runs whole, as
# the replicated mode would, on the same trajectory.
tiny_train 1 "$bin_double" "$tmp/short-base" "${common[@]}" --set train.batch=1 \
    >"$tmp/short-base.log" 2>&1
tiny_train 2 "$bin_double" "$tmp/short-12" "${common[@]}" --set train.batch=1 \
    --set parallel.tensor_grid=1x2 --set parallel.tensor_activations=distributed \
    >"$tmp/short-12.log" 2>&1
check "steps too short for a 1x2 grid train with distributed activations" [ $? -eq 0 ] ||
    tail -5 "$tmp/short-12.log"
diff=$(max_rel_diff "$tmp/short-base" "$tmp/short-12" $steps)
check "... and follow the 1-rank losses within 1e-10 ($diff)" below "$diff" 1e-10

# What it saves against replicated activations on the same grid: fewer bytes
# communicated per step (no all-gather of every linear layer's result and
# input gradient) and a smaller activation high-water mark per rank.
saves() { # saves REPLICATED_DIR DISTRIBUTED_DIR
    py - "$@" <<'PY'
import sys, re
def report(d):
    text = open(f"{d}/report.yaml").read()
    return [float(re.search(rf"{k}: (\S+)", text).group(1))
            for k in ("communicated_bytes_per_step", "activations_bytes")]
(rb, ra), (db, da) = report(sys.argv[1]), report(sys.argv[2])
print(f"  bytes per step {db:.0f} vs replicated {rb:.0f} ({db / rb:.3f}); "
      f"activations {da:.0f} vs {ra:.0f} ({da / ra:.3f})")
sys.exit(0 if 0 < db < rb and da < ra else 1)
PY
}
for arch in transformerpp ebt; do
    for grid in 1x2 2x2; do
        check "$arch's distributed activations on $grid send fewer bytes, hold fewer activations" \
            saves "$tmp/double-$arch-$grid-np$(ranks_of $grid)" \
            "$tmp/double-$arch-$grid-np$(ranks_of $grid)-distributed"
    done
done

# A grid saves memory: one rank of a 1x2 grid holds well under the 1-rank
# run's parameters (the embedding stays whole), of a 2x2 grid under half.
held_fraction() { # held_fraction DIR BASE_DIR BELOW
    py - "$@" <<'PY'
import sys, h5py
def held(d):
    with h5py.File(f"{d}/metrics.h5", "r") as f: return float(f["memory"]["parameters_bytes"][-1])
fraction = held(sys.argv[1]) / held(sys.argv[2])
print("  parameters held: %.3f of the 1-rank run's" % fraction)
sys.exit(0 if fraction < float(sys.argv[3]) else 1)
PY
}
check "a 1x2 grid's rank holds < 0.75 of the 1-rank parameters" \
    held_fraction "$tmp/double-transformerpp-1x2-np2" "$tmp/double-transformerpp-base" 0.75
check "a 2x2 grid's rank holds < 0.5 of the 1-rank parameters" \
    held_fraction "$tmp/double-transformerpp-2x2-np4" "$tmp/double-transformerpp-base" 0.5

# On one group (the data-parallel strategy has nothing to send) every byte
# communicated is the grid's: tensor parallelism did run.
check "a 1x2 grid on 2 ranks communicates (the p?gemm results)" py - \
    "$tmp/double-transformerpp-1x2-np2/report.yaml" <<'PY'
import sys, re
value = float(re.search(r"communicated_bytes_per_step: (\S+)", open(sys.argv[1]).read()).group(1))
print("  bytes per step:", value)
sys.exit(0 if value > 0 else 1)
PY

# Checkpoints hold the ordinary layout: a grid's run resumes without it, and
# the other way round, on the uninterrupted trajectory.
resume_across() { # resume_across ARCH FIRST_NP FIRST_GRID SECOND_NP SECOND_GRID [ACT1 ACT2 [STRATEGY1 STRATEGY2]]
    local arch=$1 act1=${6:-replicated} act2=${7:-replicated} s1=${8:-ddp} s2=${9:-ddp}
    local dir=$tmp/resume-$1-$3-$act1-$s1-$5-$act2-$s2
    # shellcheck disable=SC2046
    tiny_train "$2" "$bin_double" "$dir" $(arch_args "$arch") "${common[@]}" \
        --set parallel.tensor_grid="$3" --set parallel.tensor_activations="$act1" \
        --set parallel.strategy="$s1" --set train.stop_at=3 >"$dir-1.log" 2>&1
    check "$arch on grid $3 ($2 ranks, $act1, $s1) stops at step 3" \
        contains "$dir-1.log" "stopped at step 3 of $steps" || tail -5 "$dir-1.log"
    # shellcheck disable=SC2046
    tiny_train "$4" "$bin_double" "$dir" $(arch_args "$arch") "${common[@]}" \
        --set parallel.tensor_grid="$5" --set parallel.tensor_activations="$act2" \
        --set parallel.strategy="$s2" --resume >"$dir-2.log" 2>&1
    check "... resumes on grid $5 ($4 ranks, $act2, $s2)" \
        contains "$dir-2.log" "resumed from .*(step 3" || tail -5 "$dir-2.log"
    baseline double "$arch"
    local diff
    diff=$(max_rel_diff "$tmp/double-$arch-base" "$dir" $steps)
    check "... and follows the uninterrupted losses within 1e-10 ($diff)" below "$diff" 1e-10
}
resume_across transformerpp 2 2x1 1 off
resume_across transformerpp 1 off 2 1x2
resume_across ebt 2 1x2 1 off
resume_across free 2 1x2 1 off
resume_across nexus 1 off 2 2x1
resume_across transformerpp 4 2x2 2 1x2 # grid to grid
resume_across transformerpp 4 2x2 1 off distributed replicated
resume_across transformerpp 2 1x2 2 2x1 replicated distributed
resume_across ebt 4 2x2 1 off distributed replicated
resume_across ebt 2 1x2 2 2x1 replicated distributed

# ZeRO across the groups: the strategy gets grid.data (the ranks at one grid
# position of every group, which share one local layout) and shards that
# position's own buffers (its blocks and its whole tensors) over it. Two 1x2
# groups (4 ranks): the ddp+grid run's and the 1-rank run's losses within
# 1e-10, the final checkpoint's parameters the 1-rank run's and its moments
# (gathered over grid.data, then over the group, to whole tensors) the
# ddp+grid run's, and half of ddp+grid's optimizer_bytes per rank (each
# position's buffer split over 2 groups: at most one element per shard
# piece more than half).
same_moments() { # same_moments DIR_A DIR_B TOLERANCE: optimizer/m and v of the final checkpoints
    py - "$@" $steps <<'PY'
import sys, h5py, numpy as np
a, b, tol, steps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
with h5py.File(f"{a}/checkpoint_{steps:08d}.h5", "r") as fa, h5py.File(f"{b}/checkpoint_{steps:08d}.h5", "r") as fb:
    worst = {k: float(np.max(np.abs(fa["optimizer"][k][...] - fb["optimizer"][k][...])) /
                     np.max(np.abs(fa["optimizer"][k][...]))) for k in ("m", "v")}
print("  moments' worst relative difference:", worst)
sys.exit(0 if all(d < tol for d in worst.values()) else 1)
PY
}
same_norms() { # same_norms DIR_A DIR_B: the largest relative difference of train/grad_norm
    py - "$1/metrics.h5" "$2/metrics.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(f, "r")["train/grad_norm"][...] for f in sys.argv[1:3])
print(float(np.max(np.abs(a - b) / np.abs(a))) if len(a) == len(b) > 0 else "nan")
PY
}
optimizer_half() { # optimizer_half DIR DDP_DIR: optimizer_bytes about half of ddp's
    py - "$@" <<'PY'
import sys, h5py
def held(d):
    with h5py.File(f"{d}/metrics.h5", "r") as f: return float(f["memory"]["optimizer_bytes"][-1])
fraction = held(sys.argv[1]) / held(sys.argv[2])
print(f"  optimizer_bytes per rank {held(sys.argv[1]):.0f} vs ddp+grid {held(sys.argv[2]):.0f}: "
      f"{fraction:.4f} (predicted 0.5)")
sys.exit(0 if abs(fraction - 0.5) < 0.005 else 1)
PY
}
zero_across() { # zero_across ARCH STRATEGY [ACTIVATIONS]: two 1x2 groups under STRATEGY
    local arch=$1 strategy=$2 act=${3:-replicated}
    local ddp=$tmp/double-$arch-1x2-np4 base=$tmp/double-$arch-base
    [ "$act" = replicated ] || ddp=$ddp-$act
    [ -d "$ddp" ] || compare double "$arch" 1x2 4 1e-10 "$act"
    local dir=$ddp-$strategy
    # shellcheck disable=SC2046
    tiny_train 4 "$bin_double" "$dir" $(arch_args "$arch") "${common[@]}" \
        --set parallel.tensor_grid=1x2 --set parallel.tensor_activations="$act" \
        --set parallel.strategy="$strategy" >"$dir.log" 2>&1
    check "$arch under $strategy on two 1x2 groups ($act activations) trains" [ $? -eq 0 ] ||
        { tail -5 "$dir.log"; return; }
    local diff
    diff=$(max_rel_diff "$ddp" "$dir" $steps)
    check "... follows ddp on the same grid within 1e-10 ($diff)" below "$diff" 1e-10
    diff=$(max_rel_diff "$base" "$dir" $steps)
    check "... follows the 1-rank losses within 1e-10 ($diff)" below "$diff" 1e-10
    diff=$(same_norms "$ddp" "$dir")
    check "... and ddp+grid's gradient norms within 1e-10 ($diff)" below "$diff" 1e-10
    check "... its final parameters are the 1-rank run's within 1e-10" same_checkpoint "$base" "$dir" 1e-10
    check "... its final moments are ddp+grid's within 1e-10" same_moments "$ddp" "$dir" 1e-10
    check "... holds half of ddp+grid's optimiser state per rank" optimizer_half "$dir" "$ddp"
}
for strategy in zero1 zero2 zero3; do zero_across transformerpp $strategy; done
zero_across transformerpp zero2 distributed
zero_across transformerpp zero3 distributed
zero_across ebt zero2 # EBT: the whole-model path of zero2/zero3
zero_across ebt zero3
zero_across nexus zero2 # blocks of two intervals each
zero_across free zero3
# A checkpoint of grid+ZeRO is the ordinary file: it resumes without a grid
# under ddp, and a 1-rank ddp checkpoint resumes on a grid under ZeRO.
resume_across transformerpp 4 1x2 1 off replicated replicated zero1 ddp
resume_across transformerpp 1 off 4 1x2 replicated replicated ddp zero2
resume_across transformerpp 4 2x1 2 1x2 replicated distributed zero3 zero1
resume_across ebt 4 1x2 4 1x2 replicated replicated zero2 zero3

check "a grid that does not divide the ranks is refused" fails_with "$tmp/divide.log" \
    "needs groups of 4 ranks, which do not divide the 2 ranks" \
    tiny_train 2 "$bin" "$tmp/divide" --set parallel.tensor_grid=2x2
check "a malformed grid is refused" fails_with "$tmp/bad.log" "parallel.tensor_grid: '2by2'" \
    tiny_train 1 "$bin" "$tmp/bad" --set parallel.tensor_grid=2by2
check "a refused run leaves no run directory behind" [ ! -e "$tmp/bad/metrics.h5" ]
for arch in free nexus; do
    # shellcheck disable=SC2046
    check "distributed activations are refused for $arch, naming it" fails_with "$tmp/act-$arch.log" \
        "parallel.tensor_activations distributed is not supported by model.arch $arch" \
        tiny_train 2 "$bin" "$tmp/act-$arch" $(arch_args $arch) "${common[@]}" \
        --set parallel.tensor_grid=1x2 --set parallel.tensor_activations=distributed
done
check "distributed activations with heads split over process rows are refused" \
    fails_with "$tmp/act-heads.log" "the head width 64 (model.width / model.heads) must divide" \
    tiny_train 2 "$bin" "$tmp/act-heads" "${common[@]}" --set model.heads=1 \
    --set parallel.tensor_grid=2x1 --set parallel.tensor_activations=distributed
check "distributed activations without a grid are refused" fails_with "$tmp/act-off.log" \
    "parallel.tensor_activations distributed needs a parallel.tensor_grid" \
    tiny_train 1 "$bin" "$tmp/act-off" --set parallel.tensor_activations=distributed
check "a malformed activation mode is refused" fails_with "$tmp/act-bad.log" \
    "parallel.tensor_activations: 'sharded' is neither replicated nor distributed" \
    tiny_train 1 "$bin" "$tmp/act-bad" --set parallel.tensor_grid=1x1 \
    --set parallel.tensor_activations=sharded
finish
