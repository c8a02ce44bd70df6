#!/usr/bin/env bash
# Online mixing evidence (issue 5): ODM- and Aioli-scheduled proxy runs against
# the stratified (uniform) static run at equal steps, several seeds; prints the
# mean and spread of the average validation loss per schedule.
#
#   MIXCORPUS_OUT=/tmp/mixcorpus bash ../shared/corpus/build_corpus.sh
#   mixopt prepare --domains-dir /tmp/mixcorpus --cache /tmp/mixcache
#   bash bench/online_evidence.sh /tmp/mixcache /tmp/online-evidence
#
# Environment: PROXY (tiny), STEPS (400), SEEDS ("0 1 2"), JOBS (2),
# SCHEDULES ("static odm aioli"), EVERY (5, steps between policy updates),
# EXTRA (more `mixopt train` arguments for the scheduled runs, e.g.
# "--param eta=0.1"). Finished runs in OUTDIR are reused, so static runs can be
# copied in from another OUTDIR.
set -euo pipefail
CACHE=${1:?usage: online_evidence.sh CACHE OUTDIR}
OUT=${2:?usage: online_evidence.sh CACHE OUTDIR}
PROXY=${PROXY:-tiny}
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
SCHEDULES=${SCHEDULES:-"static odm aioli"}
EVERY=${EVERY:-5}
EXTRA=${EXTRA:-}
MIXOPT=${MIXOPT:-$(dirname "$0")/../target/release/mixopt}
mkdir -p "$OUT"
export MIXOPT_QUIET=1

jobs_list() {
  for seed in $SEEDS; do
    for s in $SCHEDULES; do echo "$s $seed"; done
  done
}

run_one() {
  local s=$1 seed=$2 tag="$1-seed$2"
  [ -s "$OUT/$tag.txt" ] && return 0
  local extra=""
  [ "$s" != static ] && extra=$EXTRA
  # shellcheck disable=SC2086
  "$MIXOPT" train $extra --cache "$CACHE" --proxy "$PROXY" --steps "$STEPS" --threads 1 \
    --seed "$seed" --schedule "$s" --update-every-steps "$EVERY" \
    --trajectory "$OUT/$tag.trajectory.csv" --weights-out "$OUT/$tag.weights.json" \
    > "$OUT/$tag.txt.tmp" && mv "$OUT/$tag.txt.tmp" "$OUT/$tag.txt"
}
export -f run_one
export CACHE OUT PROXY STEPS EVERY MIXOPT EXTRA
jobs_list | xargs -P "$JOBS" -L 1 bash -c 'run_one $0 $1'

echo "schedule,seed,mean_val_loss,wall_s" > "$OUT/results.csv"
for seed in $SEEDS; do
  for s in $SCHEDULES; do
    f="$OUT/$s-seed$seed.txt"
    mean=$(awk '$1=="mean"{print $2}' "$f")
    wall=$(awk '$1=="wall"{print $2}' "$f")
    echo "$s,$seed,$mean,$wall" >> "$OUT/results.csv"
  done
done
python3 - "$OUT/results.csv" <<'PY'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1])))
by = {}
for r in rows:
    by.setdefault(r["schedule"], {})[r["seed"]] = float(r["mean_val_loss"])
base = by.get("static", {})
print(f"{'schedule':<10} {'n':>2} {'mean':>8} {'std':>7} {'min':>7} {'max':>7} {'vs static (paired mean ± std)':>30}")
for s, d in by.items():
    v = list(d.values())
    diffs = [d[k] - base[k] for k in d if k in base]
    paired = (f"{st.mean(diffs):+.4f} ± {st.stdev(diffs):.4f}" if len(diffs) > 1 and s != "static" else "")
    print(f"{s:<10} {len(v):>2} {st.mean(v):>8.4f} {st.stdev(v) if len(v) > 1 else 0:>7.4f} {min(v):>7.4f} {max(v):>7.4f} {paired:>30}")
PY
