#!/usr/bin/env bash
# Fit and optimizer at scale, mixopt next to LightGBM on the same table:
# a seeded synthetic table of 20,000 runs x 64 domains (bench/scale_table.py),
# target = mean loss, 5-fold CV + 1 fit on all runs (what `mixopt fit` does):
#   - mixopt fit --law gbdt (its default: early stopping on 20% of the
#     training runs, then a refit with the best round count);
#   - mixopt fit --law gbdt --param valid_fraction=0 (exactly 1000 rounds per
#     fit: the same work as LightGBM's 1000 rounds);
#   - LightGBM 1000 rounds, lr 0.01 (bench/lightgbm_scale.py), on 1 thread and
#     on every core (pip-installed into $BENCH_VENV, default /tmp/mixopt-bench-venv);
#   - mixopt optimize --proposer simulate --candidates 1000000 (the simulation
#     proposer; main made `exact` the default) on the gbdt and on a linear law.
# Prints wall and CPU (user) seconds of each. Several minutes on 2 cores.
#
# Usage: bash bench/fit_scale.sh [RUNS DOMAINS]     (from the repository root)
#        MIXOPT_BIN=path/to/mixopt bash bench/fit_scale.sh   (another binary)
#        FIT_SCALE_LIGHTGBM=0 bash bench/fit_scale.sh        (mixopt only)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
D=${2:-64}
WORK=${FIT_SCALE_WORK:-/tmp/mixopt-fit-scale}
VENV=${BENCH_VENV:-/tmp/mixopt-bench-venv}
if [ -z "${MIXOPT_BIN:-}" ]; then
  cargo build --release --quiet
  MIXOPT_BIN=target/release/mixopt
fi
mkdir -p "$WORK"
T="$WORK/t${N}x${D}"
if [ ! -f "${T}_loss.csv" ]; then
  python3 bench/scale_table.py "$N" "$D" 7 "$T"
fi
echo "== $N runs x $D domains, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
timed() {  # label, command...
  local label=$1; shift
  /usr/bin/time -f "   [$label: %e s wall, %U s CPU]" "$@" 2>&1 | grep -E '5-fold CV|fit time|\[|predicted target' || true
}
# (An array, not a shell function: /usr/bin/time runs programs only.)
FIT=("$MIXOPT_BIN" fit --mixtures "${T}_mix.csv" --losses "${T}_loss.csv" --id index --target mean)
echo "== mixopt $("$MIXOPT_BIN" --version 2>/dev/null || true)"
timed "fit gbdt" "${FIT[@]}" --out "$WORK/gbdt.json" --law gbdt
timed "fit gbdt, 1000 rounds flat" "${FIT[@]}" --out "$WORK/gbdt-flat.json" --law gbdt --param valid_fraction=0
timed "fit linear" "${FIT[@]}" --out "$WORK/linear.json" --law linear
# The proposer alone: no trust region (its bisection would run the
# simulation a dozen times); older binaries have no such flag.
NOTRUST=()
if "$MIXOPT_BIN" optimize --help | grep -q -- --trust-kl; then NOTRUST=(--trust-kl none); fi
timed "optimize gbdt, 1e6 candidates" "$MIXOPT_BIN" optimize --law "$WORK/gbdt.json" \
  --proposer simulate --candidates 1000000 "${NOTRUST[@]}" --out "$WORK/w-gbdt.json"
timed "optimize linear, 1e6 candidates" "$MIXOPT_BIN" optimize --law "$WORK/linear.json" \
  --proposer simulate --candidates 1000000 "${NOTRUST[@]}" --out "$WORK/w-linear.json"

[ "${FIT_SCALE_LIGHTGBM:-1}" = 0 ] && exit 0   # mixopt only
echo "== LightGBM"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet lightgbm numpy
fi
"$VENV/bin/python" bench/lightgbm_scale.py "$T" 1
"$VENV/bin/python" bench/lightgbm_scale.py "$T"
