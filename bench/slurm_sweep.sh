#!/usr/bin/env bash
# The cluster path on a real scheduler: a one-node Slurm cluster on this
# machine (Debian's slurmctld, slurmd and munge), the job array of
# docs/cluster.md submitted as written there (the script is cut out of the
# doc, only its scale changed: shards, runs, proxy, paths, CPUs per task), one
# running array task requeued mid-run (`scontrol requeue`) so it resumes its
# own table, the merge submitted as a dependent job, and the merged table
# compared with a one-machine sweep of the same seed: same run ids, mixtures
# and losses (every column but wall_s), byte for byte.
#
# Needs root (installs packages, starts daemons). Stops the daemons it
# started. Prints the time of each phase.
#
# Usage: bash bench/slurm_sweep.sh          (from the repository root)
#        SHARDS=4 RUNS=16 bash bench/slurm_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARDS=${SHARDS:-4}
RUNS=${RUNS:-16}
WORK=${SLURM_SWEEP_WORK:-/tmp/mixopt-slurm}
T0=$(date +%s)
phase() { echo "== $1 ($(($(date +%s) - T0)) s)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

phase "install Slurm and munge from Debian's packages"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
sbatch --version

phase "build mixopt"
cargo build --release --quiet
export PATH="$ROOT/target/release:$PATH" MIXOPT_QUIET=1

phase "start a one-node cluster"
rm -rf "$WORK"
mkdir -p "$WORK/sweep" "$WORK/log" "$WORK/state" "$WORK/spool" /run/munge
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
STARTED=()   # pids of the daemons this script started
cleanup() {
  if [ ${#STARTED[@]} -gt 0 ]; then
    scancel --quiet --user "$(id -un)" 2>/dev/null || true
    for _ in $(seq 30); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 1
    done
    kill "${STARTED[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  fail "a Slurm daemon is already running on this machine; stop it first (this script starts its own cluster)"
fi
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=mixopt-bench
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=bench Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key /run/munge
  # (Daemonized: runuser in the foreground would take this shell down with it.)
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  STARTED+=("$(cat /run/munge/munged.pid)")
fi
slurmctld -D -c >"$WORK/log/slurmctld.out" 2>&1 &   # -c: clear state, no jobs from an earlier run
STARTED+=($!)
slurmd -D >"$WORK/log/slurmd.out" 2>&1 &
STARTED+=($!)
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo -h -o %t 2>/dev/null | grep -q idle \
  || fail "the node did not come up: $(tail -3 "$WORK/log/slurmctld.log" "$WORK/log/slurmd.log" 2>&1)"
sinfo

phase "prepare a small corpus and cache"
python3 - "$WORK/corpus" <<'EOF'
import json, os, sys
root = sys.argv[1]
units = {"web": "the cat sat on the mat ", "code": "fn main() { let x = 1; } ",
         "books": "It was a dark and stormy night; ", "math": "x^2 + y^2 = z^2 "}
for d, u in units.items():
    os.makedirs(f"{root}/{d}", exist_ok=True)
    with open(f"{root}/{d}/docs.jsonl", "w") as f:
        for i in range(80):
            f.write(json.dumps({"text": u * (30 + i % 13) + str(i)}) + "\n")
EOF
mixopt prepare --domains-dir "$WORK/corpus" --cache "$WORK/cache" >/dev/null
# A proxy whose runs take a second or so each (a task of several runs can be
# caught mid-run and requeued). 300 steps: at 80, runs took ~0.3 s once the
# proxy got faster, and a task could finish between two polls.
cat > "$WORK/proxy.toml" <<'EOF'
name = "slurm-bench"
n_layers = 1
d_model = 32
n_heads = 2
d_ff = 64
seq_len = 32
batch_size = 8
n_steps = 300
lr_peak = 1e-2
warmup_steps = 8
eval_windows = 8
EOF

phase "the job array of docs/cluster.md"
# The script exactly as the doc gives it, then its scale changed.
sed -n '/^## Slurm job array/,/^## Kubernetes/p' docs/cluster.md \
  | awk '/^```bash/ { n++; if (n == 1) { on = 1; next } } on && /^```/ { exit } on' > "$WORK/doc-job.sh"
sed -e "s|--array=0-15 |--array=0-$((SHARDS - 1)) |" \
    -e "s|^N=16$|N=$SHARDS|" \
    -e "s|--cpus-per-task=8|--cpus-per-task=1|" \
    -e "s|--proxy 1m|--proxy $WORK/proxy.toml|" \
    -e "s|--runs 512|--runs $RUNS|" \
    -e "s|/shared/mixcache|$WORK/cache|" \
    -e "s|/shared/sweep|$WORK/sweep|g" \
    "$WORK/doc-job.sh" > "$WORK/job.sh"
for want in "--array=0-$((SHARDS - 1)) " "N=$SHARDS" "--cpus-per-task=1" "--proxy $WORK/proxy.toml" \
            "--runs $RUNS" "--cache $WORK/cache" "$WORK/sweep/runs-" "--requeue" "--seed 0" \
            '--shard "${SLURM_ARRAY_TASK_ID}/${N}"'; do
  grep -qF -- "$want" "$WORK/job.sh" || fail "docs/cluster.md's job script changed shape: no '$want' after adapting it"
done
diff "$WORK/doc-job.sh" "$WORK/job.sh" || true
cd "$WORK"
JOB=$(sbatch --parsable --output="$WORK/log/shard-%a.out" job.sh)
MERGE=$(sbatch --parsable --dependency="afterok:$JOB" --output="$WORK/log/merge.out" \
  --wrap "mixopt merge $WORK/sweep/runs-*.csv --out $WORK/sweep/runs.csv")
echo "array job $JOB ($SHARDS shards of $RUNS runs), merge job $MERGE after it"

phase "requeue array task 0 mid-run"
rows() { [ -f "$1" ] && echo $(($(wc -l < "$1") - 1)) || echo 0; }
per_shard=$(( (RUNS + SHARDS - 1) / SHARDS ))
requeued=""
for _ in $(seq 3000); do
  state=$(squeue -h -j "${JOB}_0" -o %T 2>/dev/null || true)
  done_rows=$(rows "$WORK/sweep/runs-0.csv")
  if [ "$state" = RUNNING ] && [ "$done_rows" -ge 1 ] && [ "$done_rows" -lt "$per_shard" ]; then
    scontrol requeue "${JOB}_0"
    requeued="after $done_rows of $per_shard runs"
    # Slurm holds a requeued job back for two minutes (its begin time);
    # release it once the requeue has taken effect.
    for _ in $(seq 100); do
      [ "$(squeue -h -j "${JOB}_0" -o %r 2>/dev/null)" = BeginTime ] && break
      sleep 0.1
    done
    scontrol update JobId="${JOB}_0" StartTime=now
    break
  fi
  [ -z "$state" ] && break
  sleep 0.1
done
[ -n "$requeued" ] || fail "task 0 finished before it could be requeued (raise RUNS)"
echo "task ${JOB}_0 requeued $requeued"

phase "wait for the array and the merge"
for _ in $(seq 1800); do
  [ -z "$(squeue -h -j "$JOB,$MERGE" 2>/dev/null)" ] && break
  sleep 1
done
[ -z "$(squeue -h -j "$JOB,$MERGE")" ] || fail "jobs still queued after 30 minutes"
for t in $(seq 0 $((SHARDS - 1))); do
  st=$(scontrol show job "${JOB}_$t" | grep -o 'JobState=[A-Z]*')
  [ "$st" = JobState=COMPLETED ] || fail "task $t: $st ($(cat "$WORK/log/shard-$t.out"))"
done
restarts=$(scontrol show job "${JOB}_0" | grep -o 'Restarts=[0-9]*')
echo "task 0: $restarts; its log after the requeue:"
sed 's/^/    /' "$WORK/log/shard-0.out"
grep -q "already finished" "$WORK/log/shard-0.out" || fail "task 0 did not resume"
[ -f "$WORK/sweep/runs.csv" ] || fail "merge job wrote nothing: $(cat "$WORK/log/merge.out")"
cat "$WORK/log/merge.out"

phase "one-machine sweep of the same seed"
cd "$ROOT"
mixopt sweep --cache "$WORK/cache" --proxy "$WORK/proxy.toml" --runs "$RUNS" --seed 0 \
  --out "$WORK/single.csv" | tail -1

phase "compare"
strip_wall() { cut -d, -f1-4,6- "$1"; }
if cmp -s <(strip_wall "$WORK/sweep/runs.csv") <(strip_wall "$WORK/single.csv"); then
  echo "merged table == one-machine table: $(($(wc -l < "$WORK/single.csv") - 1)) runs, same ids, mixtures and losses (all columns but wall_s), same order"
else
  diff <(strip_wall "$WORK/sweep/runs.csv") <(strip_wall "$WORK/single.csv") | head -20
  fail "the merged table differs from the one-machine sweep"
fi
phase "done"
