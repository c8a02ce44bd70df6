#!/usr/bin/env bash
# End-to-end benchmark: does the mixture mixopt recommends by its default path
# beat the natural token shares and uniform on a larger model?
#
#   bench/e2e.sh [--quick]
#
# On the real 10-domain corpus (../shared/corpus/build_corpus.sh; built into
# $E2E_CORPUS when missing), with `speeches` held out of training as an
# evaluation-only domain:
#   prepare -> sweep (default proxy and flags) -> fit --at-tokens <target's tokens>
#   -> optimize (defaults), once for the `mean` target and once for the held-out
#   `speeches` loss -> train the target model (bench/e2e/target.toml: 4.07x the
#   proxy's non-embedding parameters, 8.3x its tokens) on each optimized
#   mixture, natural, uniform and as an online ODM run, seeds 0-2 paired,
#   judged on the test split that nothing was tuned on.
# Prints one table (bench/e2e/table.py) and writes it to $E2E_DIR/e2e.md.
# Full: 64 sweep runs, 3 seeds; about 45 minutes on 2 cores. --quick: 24 sweep
# runs, seed 0 only, about 14 minutes. E2E_ABLATE=1 adds the law's optimum
# without the trust region as a candidate (+3 target runs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
for a in "$@"; do
    case "$a" in
    --quick) QUICK=1 ;;
    *) echo "usage: bench/e2e.sh [--quick]" >&2; exit 2 ;;
    esac
done
if [ $QUICK = 1 ]; then WORK=${E2E_DIR:-/tmp/mixopt-e2e-quick}; else WORK=${E2E_DIR:-/tmp/mixopt-e2e}; fi
CORPUS=${E2E_CORPUS:-/tmp/mixcorpus}
HELD_OUT=${E2E_HELD_OUT:-speeches}
JOBS=${E2E_JOBS:-$(nproc)}
if [ $QUICK = 1 ]; then RUNS=24; SEEDS=1; NOISE=2; else RUNS=64; SEEDS=3; NOISE=3; fi
TARGET="$ROOT/bench/e2e/target.toml"
# The target model's training tokens: steps x batch x sequence length.
TARGET_TOKENS=$(awk -F' *= *' '/^n_steps/{s=$2} /^batch_size/{b=$2} /^seq_len/{t=$2} END{print s*b*t}' "$TARGET")

(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/mixopt"
mkdir -p "$WORK"
TIMES="$WORK/stages.tsv"
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }
: >"$TIMES"
stage() { # stage NAME COMMAND...: run, log, record wall seconds
    local name=$1
    shift
    local t0
    t0=$(date +%s.%N)
    echo "== $name: $*" | tee -a "$WORK/log.txt"
    "$@" 2>&1 | tee -a "$WORK/log.txt"
    printf '%s\t%s\n' "$name" "$(since "$t0")" >>"$TIMES"
}

if [ ! -f "$CORPUS/$HELD_OUT/val.jsonl" ]; then
    MIXCORPUS_OUT="$CORPUS" stage corpus bash "$ROOT/../shared/corpus/build_corpus.sh"
fi

stage prepare "$BIN" prepare --domains-dir "$CORPUS" --eval-domain "$HELD_OUT" --cache "$WORK/cache"
stage sweep "$BIN" sweep --cache "$WORK/cache" --runs $RUNS --noise-seeds $NOISE --seed 0 \
    --jobs "$JOBS" --out "$WORK/runs.csv"
# The default law for a runs table is the scale-aware one; it predicts at the
# target model's token budget.
stage fit-mean "$BIN" fit --runs "$WORK/runs.csv" --target mean --at-tokens "$TARGET_TOKENS" \
    --out "$WORK/law-mean.json"
stage fit-heldout "$BIN" fit --runs "$WORK/runs.csv" --target "$HELD_OUT" --at-tokens "$TARGET_TOKENS" \
    --out "$WORK/law-heldout.json"
stage optimize-mean "$BIN" optimize --law "$WORK/law-mean.json" --out "$WORK/optimized-mean.json"
stage optimize-heldout "$BIN" optimize --law "$WORK/law-heldout.json" --out "$WORK/optimized-$HELD_OUT.json"
CANDIDATES="$WORK/optimized-mean.json,$WORK/optimized-$HELD_OUT.json,natural,uniform"
if [ "${E2E_ABLATE:-0}" = 1 ]; then
    # What the trust region buys: the law's own optimum, unconstrained.
    stage optimize-free "$BIN" optimize --law "$WORK/law-mean.json" --trust-kl none \
        --out "$WORK/unconstrained-mean.json"
    CANDIDATES="$CANDIDATES,$WORK/unconstrained-mean.json"
fi
# For the ranking comparison: the single-scale law the tool used before.
"$BIN" fit --runs "$WORK/runs.csv" --target mean --law loglinear --out "$WORK/single-mean.json" >/dev/null
"$BIN" fit --runs "$WORK/runs.csv" --target "$HELD_OUT" --law loglinear --out "$WORK/single-heldout.json" >/dev/null

# The target model, judged on the test split.
stage target-static "$BIN" validate --cache "$WORK/cache" --proxy "$TARGET" --mixtures "$CANDIDATES" \
    --seeds $SEEDS --split test --target mean --jobs "$JOBS" --out "$WORK/validate.json"
odm() {
    "$BIN" train --cache "$WORK/cache" --proxy "$TARGET" --schedule odm --seed "$1" --split test \
        --threads 1 >"$WORK/odm-$1.txt" 2>"$WORK/odm-$1.err"
}
t0=$(date +%s.%N)
echo "== target-odm: $SEEDS seed(s), $JOBS at a time" | tee -a "$WORK/log.txt"
pids=()
for ((s = 0; s < SEEDS; s++)); do
    odm $s &
    pids+=($!)
    if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
printf '%s\t%s\n' target-odm "$(since "$t0")" >>"$TIMES"

python3 "$ROOT/bench/e2e/table.py" --work "$WORK" --bin "$BIN" --held-out "$HELD_OUT" \
    --seeds $SEEDS | tee "$WORK/e2e.md"
