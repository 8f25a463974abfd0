#!/usr/bin/env bash
# Checkpoint write and read bandwidth (issue 15), through the real training
# path: for each model size and rank count, `thinkscale train` runs one step
# and stops with a checkpoint (train.stop_at = 1), then `--resume` restores
# it — parameters and both AdamW moments, verified against their checksums —
# and trains one more step. report.yaml of the first invocation gives the
# write (checkpoint.write_bandwidth_bytes_per_second), of the second the read
# (checkpoint.read_*). Before each resume the page cache is dropped when this
# process may (root: /proc/sys/vm/drop_caches), so the read comes from the
# disk ("cold"); otherwise the file is likely cached ("warm") and the row
# says so. Both are file bytes over the slowest rank's HDF5 open..close.
#
#   bash bench/bench_checkpoint.sh            # prints a table; CSV in BENCH_OUT
#   BENCH_CHECKPOINT_SIZES="96x3 512x8" BENCH_OUT=DIR bash bench/bench_checkpoint.sh
#
# Sizes are WIDTHxDEPTH of Transformer++ (ffn_mult 1, byte vocabulary); the
# defaults span the workstation campaign's checkpoints (0.4 to 57 MB) and go
# to ~0.7 GB. The CSV, BENCH_OUT/checkpoint_bench.csv (default
# build/bench/checkpoint), is what `analysis/allocation_report.py
# --checkpoints DIR` puts into the allocation report.
source "$(dirname "$0")/lib.sh"
sizes=${BENCH_CHECKPOINT_SIZES:-96x3 256x6 512x8 1024x8}
ranks_list=${BENCH_CHECKPOINT_RANKS:-1 2}
out=${BENCH_OUT:-build/bench/checkpoint}
mkdir -p "$out"
if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then cache=cold; else cache=warm; fi
load_before=$(uptime)
echo "load before: $load_before"
echo "page cache before each read: $cache"

# train_once RANKS DIR WIDTH DEPTH [extra args]: one invocation of the bench
# model; the log next to DIR.
train_once() {
    local ranks=$1 dir=$2 width=$3 depth=$4
    shift 4
    mpirun -np "$ranks" "$bin" train /dev/null \
        --set model.width="$width" --set model.depth="$depth" --set model.heads=4 \
        --set model.context=32 --set model.ffn_mult=1.0 --set train.batch="$ranks" \
        --set train.steps=2 --set train.warmup=1 --set train.log_every=1 \
        --set train.eval_every=0 --set train.checkpoint_every=0 --set train.keep_checkpoints=1 \
        --set data.train="$tmp/corpus.h5" --set run.dir="$dir" "$@" >>"$dir.log" 2>&1 ||
        { cat "$dir.log"; exit 1; }
}

csv="$out/checkpoint_bench.csv.tmp"
echo "ranks,width,depth,parameters,file_bytes,write_seconds,write_bandwidth_bytes_per_second,read_seconds,read_bandwidth_bytes_per_second,read_cache" >"$csv"
for size in $sizes; do
    width=${size%x*} depth=${size#*x}
    for ranks in $ranks_list; do
        dir="$tmp/ckpt-$size-np$ranks"
        train_once "$ranks" "$dir" "$width" "$depth" --set train.stop_at=1
        cp "$dir/report.yaml" "$dir.write.yaml"
        [ "$cache" = cold ] && sync && echo 3 >/proc/sys/vm/drop_caches
        train_once "$ranks" "$dir" "$width" "$depth" --resume
        /usr/bin/python3 - "$dir.write.yaml" "$dir/report.yaml" "$ranks" "$width" "$depth" "$cache" >>"$csv" <<'PY'
import re, sys
def field(path, name):
    m = re.search(rf"^  {name}: (\S+)$", open(path).read(), re.M)
    if not m:
        sys.exit(f"bench_checkpoint: {path} has no {name}")
    return float(m.group(1))
write, read, ranks, width, depth, cache = sys.argv[1:7]
size, wbw = field(write, "bytes"), field(write, "write_bandwidth_bytes_per_second")
rbytes, rsec, rbw = (field(read, k) for k in ("read_bytes", "read_seconds",
                                               "read_bandwidth_bytes_per_second"))
if rbytes != size or rsec <= 0 or wbw <= 0:
    sys.exit(f"bench_checkpoint: the resume read {rbytes:.0f} bytes, the checkpoint has {size:.0f}")
params = field(write, "parameters")
print(f"{ranks},{width},{depth},{params:.0f},{size:.0f},{size / wbw:.6f},{wbw:.0f},{rsec:.6f},{rbw:.0f},{cache}")
PY
        rm -rf "$dir" "$dir.log" "$dir.write.yaml"
    done
done
mv "$csv" "$out/checkpoint_bench.csv"
load_after=$(uptime)
echo "load after: $load_after"
# What else ran shapes these numbers; the allocation report quotes it.
printf 'host %s, %s cores\nload before: %s\nload after: %s\n' "$(hostname)" "$(nproc)" \
    "$load_before" "$load_after" >"$out/checkpoint_bench_machine.txt"
/usr/bin/python3 - "$out/checkpoint_bench.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{'ranks':>5} {'model':>8} {'params':>11} {'file MB':>9} {'write MB/s':>11} {'read MB/s':>10} {'read':>5}")
for r in rows:
    print(f"{r['ranks']:>5} {r['width'] + 'x' + r['depth']:>8} {int(r['parameters']):>11,} "
          f"{float(r['file_bytes']) / 1e6:9.1f} {float(r['write_bandwidth_bytes_per_second']) / 1e6:11.1f} "
          f"{float(r['read_bandwidth_bytes_per_second']) / 1e6:10.1f} {r['read_cache']:>5}")
big = max(rows, key=lambda r: float(r["file_bytes"]))
print(f"CHECKPOINT_BENCH largest_mb={float(big['file_bytes']) / 1e6:.1f} "
      f"write_mb_s={float(big['write_bandwidth_bytes_per_second']) / 1e6:.1f} "
      f"read_mb_s={float(big['read_bandwidth_bytes_per_second']) / 1e6:.1f} read_cache={big['read_cache']} "
      f"rows={len(rows)} (measurement only, no target)")
PY
