#!/usr/bin/env bash
# bench_pages (bench/bench_pages.c): microseconds per page to write pages
# kept mapped, to give them back with ts_reals_discard (what zero3 does to a
# block's unowned parameters and to each gradient unit), to write them
# after that, and after MADV_DONTNEED, then a PAGES_BENCH line; bad settings
# are refused. Short measurements: this checks the tool, not the machine.
# The one bound every machine obeys: a page given back with MADV_DONTNEED
# faults and is zeroed by the kernel before the write, so writing it costs
# more than writing a page that stayed mapped.
source "$(dirname "$0")/lib.sh"
pages=$repo/build/float/bench/bench_pages

BENCH_PAGES_MB=8 BENCH_ROUNDS=3 "$pages" >"$tmp/pages.log" 2>&1
check "bench_pages succeeds" [ $? -eq 0 ]
cat "$tmp/pages.log"
check "... with a summary of positive times, a fault costing more than a plain write" \
    py - "$tmp/pages.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("PAGES_BENCH ")][-1]
v = {k: float(x) for k, x in re.findall(r"(\w+)=([0-9.]+)", line)}
print(v)
names = ("resident_write_us", "discard_us", "write_after_discard_us", "write_after_dontneed_us")
ok = all(v[n] > 0 for n in names) and v["page_kib"] >= 4
sys.exit(0 if ok and v["write_after_dontneed_us"] > v["resident_write_us"] else 1)
PY

for bad in BENCH_PAGES_MB=0 BENCH_PAGES_MB=lots BENCH_ROUNDS=0; do
    env "$bad" "$pages" >"$tmp/bad.log" 2>&1
    check "$bad is refused" [ $? -ne 0 ]
    check "... naming it" contains "$tmp/bad.log" "bench_pages: ${bad%%=*}="
done
finish
