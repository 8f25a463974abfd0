#!/usr/bin/env bash
# The harness itself (tests/slurm/lib.sh): two private Slurms side by side do
# not see or stop each other, and every daemon one started is gone after its
# script fails or is terminated, with the processes of a job still running.
#   A  starts, submits a long job, waits for SIGTERM (as `timeout` sends)
#   B  starts while A runs, sees only its own job, then its body fails
source "$(dirname "$0")/lib.sh" # for slurm_alive; this script starts no Slurm

child() { # child NAME FAILING|WAITING: a script under its own private Slurm (exec: $! is its pid)
    exec bash -c '
        source tests/slurm/lib.sh
        slurm_start || exit 3
        id=$(slurm_submit --output=/dev/null --wrap "srun -n 1 sleep 300") || exit 4
        running() { [ -n "$(slurm_step_pids "$id" 0)" ]; }
        slurm_wait_until 30 "the job step to start" running || exit 5
        squeue -h -o %i >"$1.queue"
        { slurm_started_pids; slurm_step_pids "$id" 0; } >"$1.pids.tmp"
        echo "$slurm_dir" >"$1.dir"
        mv "$1.pids.tmp" "$1.pids"
        if [ "$2" = FAILING ]; then false; exit 1; fi
        while :; do sleep 0.2; done' child "$tmp/$1" "$2" >"$tmp/$1.log" 2>&1
}
wait_for_file() { # wait_for_file PATH SECONDS
    local i
    for i in $(seq 1 $(($2 * 5))); do
        [ -f "$1" ] && return 0
        sleep 0.2
    done
    return 1
}

child A WAITING &
child_a=$!
wait_for_file "$tmp/A.pids" 60
check "A's Slurm started and ran a job" [ -s "$tmp/A.pids" ] || { cat "$tmp/A.log"; kill -TERM $child_a; exit 1; }
(child B FAILING)
b_status=$?
cat "$tmp/B.log"
check "B's failing body made its script fail (status 1)" [ "$b_status" = 1 ]
check "B recorded its 3 daemons and its job's process" [ "$(wc -l <"$tmp/B.pids")" = 4 ]
check "B's squeue showed B's job only" [ "$(wc -l <"$tmp/B.queue")" = 1 ]
check "no daemon or job process of B is alive" [ -z "$(slurm_alive $(cat "$tmp/B.pids"))" ]
check "B's scratch directory is removed" [ ! -d "$(cat "$tmp/B.dir")" ]
check "A's daemons and job survived B's cleanup" [ "$(slurm_alive $(cat "$tmp/A.pids") | wc -l)" = 4 ]

kill -TERM $child_a
wait $child_a
a_status=$?
cat "$tmp/A.log"
check "terminated A exits with 143" [ "$a_status" = 143 ]
check "no daemon or job process of A is alive" [ -z "$(slurm_alive $(cat "$tmp/A.pids"))" ]
check "A's scratch directory is removed" [ ! -d "$(cat "$tmp/A.dir")" ]
finish
