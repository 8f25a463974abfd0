#!/usr/bin/env bash
# thinkscale data convert / data info end to end: exit codes, messages, and
# that a refused or failed conversion leaves an existing output untouched.
set -u
cd "$(dirname "$0")/../.."
bin=$PWD/build/float/thinkscale
[ -x "$bin" ] || { echo "missing $bin: run make build first"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
fails=0
check() { # check DESCRIPTION CONDITION...: counts and reports one expectation
    local what=$1; shift
    if "$@"; then echo "ok:   $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
contains() { grep -q -- "$2" "$1"; }

# ~180 KB in two files: enough 4 KiB chunks for a 5% validation split.
for i in $(seq 1 3000); do echo "line $i: the quick brown fox jumps over the lazy dog $((i * i))"; done >a.txt
echo "a marker that occurs once: ZQXJ" >>a.txt
for i in $(seq 1 500); do echo "second file, line $i"; done >b.txt
bytes=$(($(wc -c <a.txt) + $(wc -c <b.txt)))

"$bin" data convert --input a.txt --input b.txt --output out.h5 --name demo >convert.log 2>&1
check "convert exits 0" [ $? -eq 0 ]
check "convert reports the file it wrote" contains convert.log "wrote out.h5"
"$bin" data info out.h5 >info.log 2>&1
check "info exits 0 on a good file" [ $? -eq 0 ]
check "info verifies the checksums" contains info.log "checksums: *OK"
check "info shows the domain" contains info.log "domain: *demo"
check "info shows the tokenizer" contains info.log "tokenizer: *byte"
tokens=$(awk '/^(train|validation):/ {s += $2} END {print s}' info.log)
check "byte tokenizer: one token per input byte ($tokens = $bytes)" [ "$tokens" = "$bytes" ]
val=$(awk '/^validation:/ {print $2}' info.log)
check "validation split is not empty" [ "${val:-0}" -gt 0 ]

cp out.h5 before.h5
"$bin" data convert --input b.txt --output out.h5 --name other >exists.log 2>&1
check "convert onto an existing file without --force fails" [ $? -ne 0 ]
check "... saying so" contains exists.log "already exists"
check "... and leaves the file intact" cmp -s out.h5 before.h5
"$bin" data convert --input a.txt --input b.txt --output out.h5 --name other --force >replace.log 2>&1
check "--force replaces a token file" [ $? -eq 0 ]
check "... which now says what it is" \
    /usr/bin/python3 -c "import h5py, sys; sys.exit(h5py.File('out.h5', 'r').attrs['format'] != 'thinkscale-tokens')"
/usr/bin/python3 -c "import h5py; h5py.File('not-tokens.h5', 'w').attrs['format'] = 'thinkscale-checkpoint'"
cp not-tokens.h5 not-tokens.before
"$bin" data convert --input a.txt --input b.txt --output not-tokens.h5 --name other --force \
    >other.log 2>&1
check "--force does not replace an HDF5 file of another kind" [ $? -ne 0 ]
check "... saying what it is not" contains other.log "is not a thinkscale-tokens file"
"$bin" data convert --input a.txt --input b.txt --output b.txt --name other --force >text.log 2>&1
check "... nor a text file (the input, say)" [ $? -ne 0 ]
check "... saying so" contains text.log "is not a thinkscale-tokens file"
check "... which are left as they were" cmp -s not-tokens.h5 not-tokens.before
check "... (the text too)" [ "$(wc -l <b.txt)" = 500 ]
cp before.h5 out.h5

"$bin" data convert --input missing.txt --output out.h5 --name demo --force >missing.log 2>&1
check "an input that does not exist fails" [ $? -ne 0 ]
check "... naming it" contains missing.log "missing.txt: cannot open"
check "... and a failed --force conversion leaves the old file intact" cmp -s out.h5 before.h5
mkdir adir
"$bin" data convert --input adir --output dir.h5 --name demo >dir.log 2>&1
check "a directory as input fails" [ $? -ne 0 ]
check "... naming it" contains dir.log "adir"
check "... and leaves no output" [ ! -e dir.h5 ]
check "no temporary files are left behind" [ -z "$(ls | grep '\.tmp\.')" ]

"$bin" data convert --input a.txt --output out.h5 --name other --force >force.log 2>&1
check "--force replaces the file" [ $? -eq 0 ]
"$bin" data info out.h5 >info2.log 2>&1
check "... with the new contents" contains info2.log "domain: *other"

echo "tiny" >tiny.txt
"$bin" data convert --input tiny.txt --output tiny.h5 --name tiny >tiny.log 2>&1
check "a text too small for a validation split fails" [ $? -ne 0 ]
check "... saying why" contains tiny.log "split would be empty"
"$bin" data convert --input tiny.txt --output tiny.h5 --name tiny --val-fraction 0 >/dev/null 2>&1
check "... and succeeds with --val-fraction 0" [ $? -eq 0 ]

"$bin" data convert --input a.txt --output x.h5 --name x --tokenizer nosuch >/dev/null 2>&1
check "an unknown tokenizer is a usage error (2)" [ $? -eq 2 ]
"$bin" data convert --input a.txt --output x.h5 --name x --val-fraction 1.5 >/dev/null 2>&1
check "a bad --val-fraction is a usage error (2)" [ $? -eq 2 ]
"$bin" data convert --input a.txt --name x >/dev/null 2>&1
check "a missing --output is a usage error (2)" [ $? -eq 2 ]

# Corrupt one token of a copy: the marker's Z, stored as int32 "Z\0\0\0".
cp before.h5 corrupt.h5
at=$(grep -obUaP 'Z\x00\x00\x00Q\x00\x00\x00X\x00\x00\x00J' corrupt.h5 | head -n 1 | cut -d: -f1)
check "the marker is found in the token file" [ -n "$at" ]
printf 'Y' | dd of=corrupt.h5 bs=1 seek="${at:-0}" conv=notrunc status=none
"$bin" data info corrupt.h5 >corrupt.log 2>&1
check "info fails on a corrupted file" [ $? -ne 0 ]
check "... reporting the checksum" contains corrupt.log "does not match its checksum"
"$bin" data info a.txt >text.log 2>&1
check "info fails on a text file" [ $? -ne 0 ]
check "... saying it is not HDF5" contains text.log "not an HDF5 file"
"$bin" data info nothere.h5 >nothere.log 2>&1
check "info fails on a missing file" [ $? -ne 0 ]
check "... naming it" contains nothere.log "nothere.h5: cannot open"

echo "$fails failed"
if [ "$fails" -ne 0 ]; then for f in *.log; do echo "== $f"; cat "$f"; done; fi
[ "$fails" -eq 0 ]
