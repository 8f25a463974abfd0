# Shared by the fault-injection scripts (tests/cli/test_fault_*.sh; sourced
# after lib.sh, not run): where a script writes its table of outcomes, and
# the checks every case makes. docs/reliability.md describes the suite.

# fault_table NAME: $table becomes TS_RELIABILITY_DIR/NAME.md, or /dev/null
# without TS_RELIABILITY_DIR (a relative one is taken from where the script
# was started; lib.sh has changed directory since).
fault_table() {
    table=/dev/null
    [ -n "${TS_RELIABILITY_DIR:-}" ] || return 0
    case $TS_RELIABILITY_DIR in
    /*) table=$TS_RELIABILITY_DIR/$1.md ;;
    *) table=$OLDPWD/$TS_RELIABILITY_DIR/$1.md ;;
    esac
}

# status_is NAME STATUS: $tmp/NAME.status holds STATUS (else the log's tail is shown).
status_is() { [ "$(cat "$tmp/$1.status")" = "$2" ] || { sed 's/^/    /' "$tmp/$1.log" | tail -20; false; }; }
# no_tmp NAME: no temporary file (NAME.tmp, NAME.tmp.HOST.PID) left in $tmp/NAME.
no_tmp() { ! ls -a "$tmp/$1" | grep -q '\.tmp'; }

# fault_setup NAME LIBRARY KEEP: what every fault script does first — its
# table (fault_table NAME), the preloaded build/fault/LIBRARY.so in $shim,
# the corpus, checkpoints every 10 steps keeping KEEP (the options in
# $every), the hard timeout of every case ($limit) and the uninterrupted
# reference run in $tmp/straight.
fault_setup() {
    fault_table "$1"
    shim=$repo/build/fault/$2.so
    [ -f "$shim" ] || { echo "missing $shim: run make build first"; exit 1; }
    make_license_corpus "$tmp/corpus.h5"
    every=(--set train.checkpoint_every=10 --set "train.keep_checkpoints=$3")
    limit=120 # seconds; a healthy run takes a few
    tiny_train 2 "$bin" "$tmp/straight" "${every[@]}" >"$tmp/straight.log" 2>&1
    check "the uninterrupted run succeeds" [ $? -eq 0 ]
}
