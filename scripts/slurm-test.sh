#!/usr/bin/env bash
# `shardfs convert --part` under a real Slurm, as the SageMaker HyperPod Llama-3-70B tutorial's cluster runs it:
# a one-node Slurm on this machine (Debian's slurm-wlm and munge, daemons
# started here, configured in a private directory so /etc is left alone)
# runs an array of 4 tasks, each writing its share of one layout into the same
# OUT directory. PASS when every task exited 0, each wrote exactly its share,
# OUT holds exactly the plan's files and nothing else (no temporaries), and
# every file is byte-identical to a single whole `shardfs convert`.
#
# Root (for apt-get and the daemons); safe to run again: installs only what is
# missing, and each run starts from a fresh state directory and stops every
# daemon it started, also on failure. Needs the release binary
# (.build/release/shardfs, which scripts/test.sh builds) or SHARDFS_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDFS_BIN=${SHARDFS_BIN:-$PWD/.build/release/shardfs}
SRC=$PWD/examples/tiny-llama
# The tutorial's flags scaled to the tiny model (8 heads, 2 KV heads, 4
# layers): 32 files, 8 per task.
LAYOUT=(--tp-size 8 --pp-size 4 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32)
TASKS=4

say() { echo "slurm-test: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs slurm-wlm and munge and starts their daemons)"
[ -x "$SHARDFS_BIN" ] || fail "no shardfs binary at $SHARDFS_BIN: build it with 'swift build -c release' (scripts/test.sh does) or set SHARDFS_BIN"
[ -f "$SRC/config.json" ] || fail "the example checkpoint $SRC is missing"
started=$(date +%s)

# --- install -----------------------------------------------------------------
need_install=0
for command in slurmctld slurmd sbatch squeue sinfo munged; do
    command -v "$command" >/dev/null 2>&1 || need_install=1
done
if [ $need_install = 1 ]; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No recommends: they add documentation and tools this test does not use.
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), $(munged -V 2>&1 | awk '{print $1; exit}')"

# --- private state -----------------------------------------------------------
work=$(mktemp -d /tmp/shardfs-slurm-test.XXXXXX)
# munged wants its socket's directories searchable by all (and refuses ones
# that others can write to); mktemp makes the directory 0700.
chmod 755 "$work"
mkdir -p "$work"/{munge,state,spool,log,jobs}
conf=$work/slurm.conf
export SLURM_CONF=$conf

pids=()          # daemons started here, stopped by their process ids
names=()         # and their names, for messages
job_id=
keep_work=1      # cleared once everything passed

# Processes of this test's Slurm that are not children of this script (the
# job's slurmstepd and tasks): Slurm puts SLURM_CONF into their environment.
own_slurm_processes() {
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] && continue
        if tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "SLURM_CONF=$conf"; then echo "${p#/proc/}"; fi
    done
}

cleanup() {
    local status=$? pid i
    set +e
    if [ -n "$job_id" ] && [ ${#pids[@]} -gt 0 ]; then client scancel "$job_id" 2>/dev/null; fi
    # Reverse order: slurmd, slurmctld, then munged, which they authenticate with.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # Unset first, or the scan's own tr and grep would match.
    unset SLURM_CONF
    if grep -q " $work/mnt fuse.shardfs " /proc/mounts 2>/dev/null; then
        fusermount3 -u -z "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null
    fi
    for pid in $(own_slurm_processes); do kill -KILL "$pid" 2>/dev/null; done
    if [ $status = 0 ] && [ $keep_work = 0 ]; then rm -rf "$work"; else say "state, logs and outputs kept in $work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The daemons' logs: Slurm's log files (their stderr, *.out, repeats them, so
# it is shown only where no log file was written: an error before it was
# opened) and munged's stderr.
# Harmless lines in them: mpi/pmix errors (22.05 loads every MPI plugin, and
# libpmix is only recommended), "could not open ... state file" (fresh state),
# munged's "Unauthorized credential for client UID=0" (Slurm's uid restriction).
show_logs() {
    local name log
    for name in munged slurmctld slurmd; do
        log=$work/log/$name.log
        [ -s "$log" ] || log=$work/log/$name.out
        [ -s "$log" ] || continue
        echo "----- $log (last 40 lines)" >&2
        tail -n 40 "$log" >&2
    done
}
fail_with_logs() { say "FAIL: $*"; show_logs; exit 1; }
# Slurm's clients wait forever for an unreadable slurm.conf or an absent
# controller: bounded, a broken setup fails instead of hanging CI.
client() { timeout 20 "$@"; }

# --- munge -------------------------------------------------------------------
# A private key and socket: never touches (or depends on) a system munged.
if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$work/munge/munge.key"
else
    dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$work/munge/munge.key"
socket=$work/munge/munge.socket
# In the foreground it logs to stderr only.
munged --foreground --key-file="$work/munge/munge.key" --socket="$socket" \
    --pid-file="$work/munge/munged.pid" --seed-file="$work/munge/munged.seed" \
    >"$work/log/munged.out" 2>&1 &
pids+=($!) names+=(munged)
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
munge --socket="$socket" -n </dev/null | unmunge --socket="$socket" >/dev/null 2>&1 \
    || fail_with_logs "munged does not answer on $socket"

# --- slurm.conf --------------------------------------------------------------
host=$(hostname -s)
# Free ports, so that another Slurm (or another run of this test) on the
# machine cannot collide with this one.
read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
# The node's real CPUs, sockets and memory, as slurmd detects them: a node
# configured with more than it has is drained.
hardware=$(slurmd -C 2>/dev/null | awk '/^NodeName=/ { $1 = ""; print; exit }')
[ -n "$hardware" ] || fail "'slurmd -C' printed no node line"

cat >"$conf" <<EOF
# Written by scripts/slurm-test.sh: one node, this machine, no cgroups.
ClusterName=shardfs-test
# name(address): the node and controller are reached on 127.0.0.1, whatever
# the host name resolves to.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Containers and CI machines have no (writable, delegated) cgroup tree: track
# job processes by parent pid and bind no tasks, so no cgroup plugin loads.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that was down comes back by itself once slurmd registers.
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host $hardware State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# --- slurmctld, slurmd -------------------------------------------------------
# In the foreground (-D) as background jobs, so each is stopped by its own pid.
# -i: start from the fresh state directory without complaint.
slurmctld -D -i -f "$conf" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!) names+=(slurmctld)
slurmd -D -f "$conf" >"$work/log/slurmd.out" 2>&1 &
pids+=($!) names+=(slurmd)

state=
for _ in $(seq 60); do
    state=$(client sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n 1) || true
    [ "$state" = idle ] && break
    for i in "${!pids[@]}"; do
        kill -0 "${pids[i]}" 2>/dev/null || fail_with_logs "${names[i]} (pid ${pids[i]}) exited during start-up"
    done
    sleep 1
done
[ "$state" = idle ] || fail_with_logs "node $host not idle after 60 s (sinfo says '${state:-nothing}')"
say "slurmctld and slurmd up, node $host idle ($(( $(date +%s) - started )) s so far)"

# --- the array ---------------------------------------------------------------
out=$work/out
cat >"$work/job.sh" <<EOF
#!/bin/bash
# One array task: its share of the files, into the OUT every task shares.
"$SHARDFS_BIN" convert "$SRC" "$out" ${LAYOUT[*]} --part "\$SLURM_ARRAY_TASK_ID/$TASKS"
status=\$?
# sacct needs slurmdbd, which this test does not run: the task records its own.
echo \$status >"$work/jobs/task-\$SLURM_ARRAY_TASK_ID.status"
exit \$status
EOF
job_id=$(client sbatch --parsable --array=0-$((TASKS - 1)) --job-name=shardfs-part \
    --output="$work/jobs/task-%a.out" "$work/job.sh") || fail_with_logs "sbatch refused the array"
job_id=${job_id%%;*}
say "submitted array job $job_id (tasks 0-$((TASKS - 1)))"

# Polled here rather than with `sbatch --wait`, whose back-off adds up to 10 s.
# Done once squeue answers and lists none of the job's tasks.
wait_for_job() {
    local what=$1 limit=180 queued=
    for _ in $(seq $limit); do
        if queued=$(client squeue -h -j "$job_id" -o %i 2>&1) && [ -z "$queued" ]; then return 0; fi
        sleep 1
    done
    fail_with_logs "$what $job_id not finished after $limit s (squeue: $(echo ${queued:-nothing}))"
}
wait_for_job "array job"

# --- checks ------------------------------------------------------------------
failures=()
"$SHARDFS_BIN" plan "$SRC" "${LAYOUT[@]}" --json \
    | python3 -c 'import json, sys; print("\n".join(f["path"] for f in json.load(sys.stdin)["files"]))' \
    >"$work/plan.txt"
total=$(wc -l <"$work/plan.txt")
[ "$total" -ge "$TASKS" ] || fail "the plan has $total files, fewer than $TASKS tasks"

for ((i = 0; i < TASKS; i++)); do
    log=$work/jobs/task-$i.out
    status=$(cat "$work/jobs/task-$i.status" 2>/dev/null || echo "none recorded")
    if [ "$status" != 0 ]; then
        failures+=("task $i exited with status $status")
        [ -f "$log" ] && { echo "----- $log" >&2; cat "$log" >&2; }
        continue
    fi
    # Its share, as --part documents it: plan entries [i*total/N, (i+1)*total/N).
    sed -n "$((i * total / TASKS + 1)),$(((i + 1) * total / TASKS))p" "$work/plan.txt" | sort >"$work/share-$i.expected"
    sed -n 's/^wrote \(model\/[^ ]*\) .*/\1/p' "$log" | sort >"$work/share-$i.written"
    if ! diff -u "$work/share-$i.expected" "$work/share-$i.written" >"$work/share-$i.diff"; then
        failures+=("task $i did not write exactly its share $i/$TASKS (expected 'wrote model/...' lines in $log; diff in $work/share-$i.diff)")
        cat "$work/share-$i.diff" >&2
    fi
done

# OUT must hold the plan's files, the model directory and convert's manifest
# (.shardfs/, one finished entry per file), nothing else: no extra file, no
# leftover .*.shardfs-tmp-* temporary.
{ echo model; cat "$work/plan.txt"; } | sort >"$work/union.expected"
(cd "$out" 2>/dev/null && find . -mindepth 1 -path ./.shardfs -prune -o -print | sed 's|^\./||' | sort) >"$work/union.actual" || true
entries=$(find "$out/.shardfs/finished" -name '*.json' 2>/dev/null | wc -l)
[ "$entries" = "$total" ] || failures+=("$out/.shardfs/finished holds $entries entries, not one per file ($total)")
if ! diff -u "$work/union.expected" "$work/union.actual" >"$work/union.diff"; then
    failures+=("$out does not hold exactly the plan's $total files (diff above: '-' missing, '+' extra)")
    cat "$work/union.diff" >&2
fi

# Byte for byte what one whole conversion writes.
"$SHARDFS_BIN" convert "$SRC" "$work/whole" "${LAYOUT[@]}" 2>"$work/whole.log" \
    || { cat "$work/whole.log" >&2; fail "the whole conversion for comparison failed"; }
differing=0
while read -r path; do
    [ -f "$out/$path" ] || continue   # already reported as missing
    cmp -s "$work/whole/$path" "$out/$path" || { differing=$((differing + 1)); say "differs from the whole conversion: $path"; }
done <"$work/plan.txt"
[ $differing = 0 ] || failures+=("$differing files differ from a whole conversion")

# --- a mount for the job's lifetime (README: "Mounting in a Slurm job") --------
# The daemon runs in the foreground as a step of its own; the next steps wait
# for it, read through it (the stand-in for training, without --overlap) and
# unmount it; the mount step then ends by itself. A background daemon started
# by srun would be killed with its step under proctrack/cgroup.
mnt=$work/mnt
mkdir -p "$mnt"
cat >"$work/mount-job.sh" <<EOF
#!/bin/bash
srun --ntasks-per-node=1 --overlap --output="$work/jobs/mount-%j-%N.log" \\
    "$SHARDFS_BIN" mount "$SRC" "$mnt" ${LAYOUT[*]} --foreground &
mount_step=\$!
status=0
srun --ntasks-per-node=1 --overlap "$SHARDFS_BIN" status "$mnt" --wait 60 || status=11
if [ \$status = 0 ]; then
    srun --ntasks-per-node=1 bash -c 'cat "$mnt"/model/*.pt | wc -c' >"$work/jobs/mount-read.txt" || status=12
fi
srun --ntasks-per-node=1 --overlap "$SHARDFS_BIN" unmount "$mnt" || { [ \$status = 0 ] && status=13; }
wait \$mount_step || { [ \$status = 0 ] && status=14; }
echo \$status >"$work/jobs/mount-job.status"
exit \$status
EOF
job_id=$(client sbatch --parsable --job-name=shardfs-mount --output="$work/jobs/mount-job.out" "$work/mount-job.sh") \
    || fail_with_logs "sbatch refused the mount job"
say "submitted mount job $job_id"
wait_for_job "mount job"
mount_status=$(cat "$work/jobs/mount-job.status" 2>/dev/null || echo "none recorded")
expected_bytes=$(cat "$work"/whole/model/*.pt | wc -c)
read_bytes=$(tr -d ' \n' <"$work/jobs/mount-read.txt" 2>/dev/null || echo none)
if [ "$mount_status" != 0 ]; then
    failures+=("the mount job exited with status $mount_status (11 status --wait, 12 read, 13 unmount, 14 the mount step)")
    cat "$work/jobs/mount-job.out" "$work"/jobs/mount-*-*.log >&2 2>/dev/null
elif [ "$read_bytes" != "$expected_bytes" ]; then
    failures+=("read $read_bytes bytes through the mount in the job, not the $expected_bytes the files hold")
elif grep -q " $mnt fuse.shardfs " /proc/mounts; then
    failures+=("$mnt is still mounted after the mount job ended")
elif ! grep -qs "unmounted $mnt" "$work"/jobs/mount-*-*.log; then
    failures+=("the mount step's log does not say it unmounted: $(cat "$work"/jobs/mount-*-*.log 2>/dev/null | tail -n 5)")
fi

elapsed=$(( $(date +%s) - started ))
if [ ${#failures[@]} -gt 0 ]; then
    for f in "${failures[@]}"; do say "FAIL: $f"; done
    show_logs
    say "FAIL (${#failures[@]} problems, $elapsed s)"
    exit 1
fi
keep_work=0
say "PASS: $TASKS Slurm array tasks wrote $total files with --part I/$TASKS, together exactly the plan, identical to one whole conversion; a --foreground mount step served the job's read step and the job unmounted it ($elapsed s)"
