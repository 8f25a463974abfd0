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
