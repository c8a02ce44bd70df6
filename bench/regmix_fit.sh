#!/usr/bin/env bash
# Mixing-law fit quality on RegMix's published 1M-proxy runs, mixopt next to
# LightGBM, in one run: every mixopt law (`fit --law all`: 5-fold CV on the
# 512 train runs, then train -> test on the 256 test runs) and LightGBM with
# RegMix's settings (bench/regmix_lightgbm.py, pip-installed into a private
# virtual environment under $BENCH_VENV, default /tmp/mixopt-bench-venv).
#
# Usage: bash bench/regmix_fit.sh        (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${REGMIX_DATA:-tests/data/regmix}
VENV=${BENCH_VENV:-/tmp/mixopt-bench-venv}
TARGET=metric/the_pile_pile_cc_val_loss

cargo build --release --quiet
echo "== mixopt $(target/release/mixopt --version 2>/dev/null || true)"
start=$(date +%s.%N)
target/release/mixopt fit \
  --mixtures "$DATA/train_mixture_1m.csv" --losses "$DATA/train_pile_loss_1m.csv" --id index \
  --test-mixtures "$DATA/test_mixture_1m.csv" --test-losses "$DATA/test_pile_loss_1m.csv" \
  --target "$TARGET" --law all --out /tmp/mixopt-bench-law.json
end=$(date +%s.%N)
echo "(whole command: $(echo "$end - $start" | bc) s)"
echo "(time s: 5 CV fits + 1 fit on all 512 runs; per fit: that / 6)"

echo "== LightGBM (RegMix's settings)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet lightgbm numpy
fi
"$VENV/bin/python" bench/regmix_lightgbm.py "$DATA"
