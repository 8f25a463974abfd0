#!/usr/bin/env bash
# Runs the fault-injection suite (tests/cli/test_fault_*.sh) with
# TS_RELIABILITY_DIR set and puts the tables of outcomes it observed into
# docs/reliability.md, each between the lines "<!-- table NAME: generated -->"
# and "<!-- end of table NAME -->" (NAME: checkpoint, writers, signals).
# A failing case is not hidden: its row shows what happened, and this script
# exits non-zero. Run after `make build`; takes a few minutes.
set -u -o pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for name in checkpoint writers signals; do
    echo "== tests/cli/test_fault_$name.sh"
    TS_RELIABILITY_DIR=$out bash "tests/cli/test_fault_$name.sh" | tail -1 || status=1
done
/usr/bin/python3 - "$out" docs/reliability.md <<'PY' || status=1
import os, re, sys
out, doc = sys.argv[1], sys.argv[2]
text = open(doc).read()
for name in ("checkpoint", "writers", "signals"):
    begin, end = "<!-- table %s: generated -->" % name, "<!-- end of table %s -->" % name
    table = open(os.path.join(out, name + ".md")).read().strip()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit("%s has no %s ... %s" % (doc, begin, end))
    text = pattern.sub(lambda m: begin + "\n" + table + "\n" + end, text)
open(doc, "w").write(text)
print("updated", doc)
PY
exit $status
