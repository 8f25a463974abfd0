# A private Slurm for the tests (sourced, not run; docs/slurm.md). On top of
# tests/cli/lib.sh (scratch $tmp, check, finish, tiny.ini) it starts munged,
# slurmctld and slurmd for this host with a configuration of its own in
# $tmp/slurm, and stops every daemon it started, by the pids in their pid
# files, when the script exits for any reason (failure, INT, TERM included).
#
#   slurm_start [CPUS]          start the daemons, wait until the node is idle
#                               (CPUS declared: default max(8, real cores));
#                               exports SLURM_CONF, so sbatch, squeue, srun,
#                               scontrol and sinfo talk to this instance only
#   slurm_submit SBATCH_ARGS... sbatch --parsable; prints the job id
#   slurm_wait_gone SECONDS ID... wait until no job or array task of the IDs is
#                               in squeue; on timeout shows queue and logs
#   slurm_wait_idle SECONDS     wait until no job at all is queued (for jobs
#                               submitted by a program, ids unknown)
#   slurm_wait_until SECONDS WHAT COMMAND...  poll COMMAND every 0.2 s
#   slurm_job_field ID FIELD    a field of `scontrol show job` (JobState,
#                               ExitCode, Restarts...) while Slurm remembers it
#   slurm_step_pids ID STEP     pids of a running step's tasks (0, 1, ... batch)
#   slurm_slow_writes DIR CMD...  CMD with every write under DIR 10 ms slower
#   slurm_stall_checkpoint STEP SECONDS CMD...  CMD with each process's first
#                               write of step STEP's checkpoint held SECONDS
#   slurm_stop                  cancel this instance's jobs, stop its daemons
#                               (idempotent; the exit trap calls it)
#   slurm_started_pids          the pids from the daemons' pid files
#   slurm_alive PID...          prints those still running (zombies are not)
#   slurm_show_logs             the tail of every daemon's log
# Variables: slurm_dir (scratch), slurm_node (`hostname -s`), slurm_auth
# (munge, or none when munged cannot start), slurm_cpus (declared CPUs).
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

slurm_dir=$tmp/slurm
slurm_node=$(hostname -s)
slurm_auth=
slurm_cpus=
# The daemons, and the slurmstepd processes slurmd forks for each job step,
# carry this variable: what slurm_stop finds left over once the pids are gone.
slurm_marker="TS_SLURM_INSTANCE=$slurm_dir"
slurm_stopped=0

_slurm_on_exit() {
    local status=$?
    slurm_stop || status=1
    rm -rf "$tmp"
    exit "$status"
}
trap _slurm_on_exit EXIT
trap 'echo "slurm harness: interrupted"; exit 130' INT
trap 'echo "slurm harness: terminated"; exit 143' TERM

slurm_show_logs() {
    local f
    for f in "$slurm_dir"/log/*.log; do
        [ -f "$f" ] || continue
        echo "---- last lines of $f"
        tail -n 15 "$f"
    done
}

slurm_started_pids() {
    local f
    for f in "$slurm_dir"/run/*.pid; do
        [ -s "$f" ] && cat "$f"
    done
    return 0
}

slurm_alive() { # slurm_alive PID...: those that exist and are not zombies
    local pid state
    for pid in "$@"; do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || continue
        [ -n "$state" ] && [ "$state" != Z ] && echo "$pid"
    done
    return 0
}

# What this instance left that is not one of its daemons: slurmstepd (forked
# by slurmd, then detached from it) and every process under one, i.e. a job's
# processes. Found by the marker in their environment, one grep over /proc.
_slurm_leftovers() {
    local marked daemons
    marked=$(grep -lzxF "$slurm_marker" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
    [ -n "$marked" ] || return 0
    daemons=$(slurm_started_pids)
    # shellcheck disable=SC2046
    slurm_alive $(ps -e -o pid=,ppid= | awk -v marked="$marked" -v daemons="$daemons" '
        BEGIN { n = split(marked, m, "\n"); for (i = 1; i <= n; i++) root[m[i]] = 1
                n = split(daemons, d, "\n"); for (i = 1; i <= n; i++) daemon[d[i]] = 1 }
        { parent[$1] = $2 }
        END { for (p in root) if (!(p in daemon) && !(parent[p] in daemon)) keep[p] = 1
              do { grew = 0
                   for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
              } while (grew)
              for (p in keep) print p }')
}

# Two TCP ports nobody listens on now (another Slurm on this machine keeps its own).
_slurm_free_ports() {
    py - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

_slurm_start_munged() {
    command -v munged >/dev/null && command -v mungekey >/dev/null || {
        echo "slurm harness: munge is not installed (make deps installs it)"
        return 1
    }
    # munged wants the key private to its owner and the socket's directories
    # searchable by everyone: a private key of our own, nothing in /etc used.
    install -d -m 700 "$slurm_dir/munge" && install -d -m 755 "$slurm_dir/run" || return 1
    mungekey --create --keyfile="$slurm_dir/munge/munge.key" >/dev/null 2>&1 || {
        echo "slurm harness: mungekey --create failed"
        return 1
    }
    env "$slurm_marker" munged --socket="$slurm_dir/run/munge.sock" \
        --key-file="$slurm_dir/munge/munge.key" --log-file="$slurm_dir/log/munged.log" \
        --pid-file="$slurm_dir/run/munged.pid" --seed-file="$slurm_dir/munge/munged.seed" \
        >>"$slurm_dir/log/munged.log" 2>&1 || {
        echo "slurm harness: munged did not start: $(tail -n 1 "$slurm_dir/log/munged.log")"
        return 1
    }
    munge -S "$slurm_dir/run/munge.sock" -n 2>/dev/null | unmunge -S "$slurm_dir/run/munge.sock" >/dev/null 2>&1 || {
        echo "slurm harness: munged started but 'munge -n | unmunge' fails"
        return 1
    }
}

_slurm_write_conf() { # _slurm_write_conf AUTH_LINES [CPUS]
    local hw cpus memory ctld_port slurmd_port
    hw=$(slurmd -C 2>/dev/null | head -n 1)
    [[ "$hw" == NodeName=* ]] || {
        echo "slurm harness: 'slurmd -C' printed no node line: $hw"
        return 1
    }
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    # At least 8 CPUs declared (SlurmdParameters=config_overrides accepts it),
    # so an array throttle, not the node's 2 cores, is what limits the tests.
    slurm_cpus=${2:-$((cpus > 8 ? cpus : 8))}
    read -r ctld_port slurmd_port < <(_slurm_free_ports)
    [ -n "$slurmd_port" ] || {
        echo "slurm harness: found no free TCP ports"
        return 1
    }
    cat >"$slurm_dir/slurm.conf" <<CONF
# Generated by tests/slurm/lib.sh from 'slurmd -C': $hw
ClusterName=thinkscale-test
SlurmctldHost=$slurm_node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
$1
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool
TmpFS=$slurm_dir/tmpfs
SlurmctldPidFile=$slurm_dir/run/slurmctld.pid
SlurmdPidFile=$slurm_dir/run/slurmd.pid
SlurmctldLogFile=$slurm_dir/log/slurmctld.log
SlurmdLogFile=$slurm_dir/log/slurmd.log
# cgroup plugins fail here ("cgroup namespace 'freezer' not mounted")
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
# schedule at once and every second (a requeued job waits for its begin time)
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
DependencyParameters=kill_invalid_depend
ReturnToService=2
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=$slurm_node NodeAddr=127.0.0.1 CPUs=$slurm_cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$slurm_cpus ThreadsPerCore=1 RealMemory=${memory:-1024} State=UNKNOWN
PartitionName=test Nodes=$slurm_node Default=YES MaxTime=INFINITE State=UP
CONF
}

slurm_start() {
    local ctld slurmd_bin state auth
    ctld=$(command -v slurmctld) && slurmd_bin=$(command -v slurmd) && command -v sbatch >/dev/null || {
        echo "slurm harness: slurmctld/slurmd/sbatch not found: install slurm-wlm (make deps does)"
        return 1
    }
    mkdir -p "$slurm_dir"/{state,spool,tmpfs,log} && install -d -m 755 "$slurm_dir/run" || return 1
    # munged's socket must be reachable through every parent directory
    chmod 711 "$tmp" "$slurm_dir" || return 1
    if _slurm_start_munged; then
        slurm_auth=munge
        # cred_expire: a requeued job may start again cred_expire + 1 s later
        # (default 120 s); every credential here is used within milliseconds.
        auth="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$slurm_dir/run/munge.sock,cred_expire=10"
    else
        slurm_auth=none
        echo "slurm harness: using AuthType=auth/none and CredType=cred/none instead of munge"
        auth="AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=10"
    fi
    _slurm_write_conf "$auth" "${1:-}" || return 1
    export SLURM_CONF=$slurm_dir/slurm.conf
    echo "slurm harness: private Slurm in $slurm_dir (auth $slurm_auth, node $slurm_node, $slurm_cpus CPUs declared)"
    env "$slurm_marker" "$ctld" -c >>"$slurm_dir/log/slurmctld.start" 2>&1 &&
        env "$slurm_marker" "$slurmd_bin" -N "$slurm_node" >>"$slurm_dir/log/slurmd.start" 2>&1 || {
        echo "slurm harness: a daemon failed to start:"
        cat "$slurm_dir"/log/*.start
        slurm_show_logs
        return 1
    }
    for _ in $(seq 1 100); do # 20 s
        state=$(sinfo -h -n "$slurm_node" -o %T 2>/dev/null)
        [ "$state" = idle ] && return 0
        sleep 0.2
    done
    echo "slurm harness: node $slurm_node not idle after 20 s (sinfo state: '${state:-no answer}')"
    slurm_show_logs
    return 1
}

slurm_submit() { # slurm_submit SBATCH_ARGS...: the job id on stdout
    local out
    out=$(sbatch --parsable "$@") || {
        echo "slurm harness: sbatch $* failed: $out" >&2
        return 1
    }
    echo "${out%%;*}"
}

# slurm_slow_writes DIR COMMAND...: runs COMMAND (a program or a function,
# such as slurm_submit) with every write under DIR, by it and by the jobs it
# submits (sbatch passes the environment on), 10 ms slower: a pretend slow
# file system (build/fault/write_fault.so, tests/fault/write_fault.c), so a
# tiny run lasts long enough to be interrupted whatever the CPU's speed.
slurm_slow_writes() {
    local dir=$1
    shift
    LD_PRELOAD=$repo/build/fault/write_fault.so TS_FAULT_DIR=$dir TS_FAULT_DELAY_MS=10 "$@"
}

# slurm_stall_checkpoint STEP SECONDS COMMAND...: runs COMMAND (a program or a
# function, such as slurm_submit) so that every process it starts, and every
# process of the jobs it submits (sbatch passes the environment on), holds its
# first write of the checkpoint of step STEP for SECONDS
# (build/fault/stall_write.so, tests/fault/stall_write.c). Each attempt of a
# task then waits there mid-run and says so on its stderr ("stall_write: rank
# R stalls"), which a test waits for before it requeues or kills the task: the
# interruption lands mid-run however fast the CPU trains.
slurm_stall_checkpoint() {
    local name
    name=$(printf 'checkpoint_%08d.h5' "$1")
    LD_PRELOAD=$repo/build/fault/stall_write.so TS_STALL_NAME=$name TS_STALL_SECONDS=$2 "${@:3}"
}

slurm_job_field() { # slurm_job_field ID FIELD
    scontrol show job -o "$1" 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

slurm_step_pids() { # slurm_step_pids ID STEP: the pids of a step's tasks (ID may be ARRAY_TASK)
    local raw
    raw=$(slurm_job_field "$1" JobId)
    [ -n "$raw" ] && scontrol listpids "$raw" 2>/dev/null | awk -v step="$2" '$3 == step && $4 != "-" {print $1}'
}

slurm_wait_until() { # slurm_wait_until SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        "$@" && return 0
        sleep 0.2
    done
    echo "slurm harness: timed out after $seconds s waiting for: $what"
    squeue -o '%.12i %.10T %.20r %S' 2>&1
    slurm_show_logs
    return 1
}

_slurm_none_queued() { # every ID and its array tasks are out of squeue
    local id
    for id in "$@"; do
        [ -z "$(squeue -h -j "$id" -o %i 2>/dev/null)" ] || return 1
    done
}

slurm_wait_gone() { # slurm_wait_gone SECONDS ID...
    local seconds=$1
    shift
    slurm_wait_until "$seconds" "jobs $* to leave the queue" _slurm_none_queued "$@"
}

_slurm_queue_empty() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }

slurm_wait_idle() { # slurm_wait_idle SECONDS: until this instance has no job queued
    slurm_wait_until "$1" "the queue to empty" _slurm_queue_empty
}

_slurm_kill_wait() { # _slurm_kill_wait SIGNAL SECONDS PID...: true when all are gone
    local signal=$1 seconds=$2
    shift 2
    [ $# -gt 0 ] || return 0
    kill "-$signal" "$@" 2>/dev/null
    for _ in $(seq 1 $((seconds * 10))); do
        [ -z "$(slurm_alive "$@")" ] && return 0
        sleep 0.1
    done
    return 1
}

slurm_stop() {
    local ids pids left status=0
    [ "$slurm_stopped" = 1 ] && return 0
    slurm_stopped=1
    [ -d "$slurm_dir/run" ] || return 0
    if [ -n "${SLURM_CONF:-}" ] && [ -n "$(slurm_alive $(cat "$slurm_dir/run/slurmctld.pid" 2>/dev/null))" ]; then
        ids=$(squeue -h -o %A 2>/dev/null | sort -u)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null
            for _ in $(seq 1 75); do # KillWait (10 s) + 5 s for their processes to end
                [ -z "$(squeue -h -o %A 2>/dev/null)" ] && [ -z "$(_slurm_leftovers)" ] && break
                sleep 0.2
            done
        fi
    fi
    # slurmd first, then the controller, then munged; SIGKILL after 5 s each
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(cat "$slurm_dir/run/$name.pid" 2>/dev/null)
        [ -n "$pid" ] && [ -n "$(slurm_alive "$pid")" ] || continue
        if ! _slurm_kill_wait TERM 5 "$pid"; then
            echo "slurm harness: $name (pid $pid) ignored SIGTERM; killing it"
            _slurm_kill_wait KILL 2 "$pid" || status=1
        fi
    done
    left=$(_slurm_leftovers)
    if [ -n "$left" ]; then
        echo "slurm harness: killing processes left by this instance's jobs:" $left
        # shellcheck disable=SC2086
        _slurm_kill_wait KILL 3 $left || status=1
    fi
    pids=$(slurm_alive $(slurm_started_pids))
    [ -z "$pids" ] || {
        echo "slurm harness: still alive after stopping: $pids"
        status=1
    }
    return $status
}

# The points of a test campaign: N copies of the tiny configuration.
slurm_make_points() { # slurm_make_points DIR N
    local id
    mkdir -p "$1/points" || return 1
    for ((id = 0; id < $2; id++)); do
        cp "$tmp/tiny.ini" "$1/points/task_$id.ini" || return 1
    done
}

# The largest number of tasks that ran at once, from their status files
# (each attempt's start line and the .end file; a requeued task's last attempt).
slurm_max_concurrent() { # slurm_max_concurrent DIR
    local f id
    for f in "$1"/status/task_*.attempts; do
        id=${f%.attempts}
        [ -f "$id.end" ] || continue
        echo "$(tail -n 1 "$f" | cut -d' ' -f1) 1"
        echo "$(cat "$id.end") -1"
    done | sort -n -k1,1 -k2,2 | awk '{ now += $2; if (now > most) most = now } END { print most + 0 }'
}
