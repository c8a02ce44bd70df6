#!/usr/bin/env bash
# One prepared GPU check (issue 11, item 4), printing one table:
#   1. parity: the `tiny` proxy, same seed, trained on the device and on the
#      CPU; per-domain validation losses must agree within TOL nats. Printed
#      beside it for scale: the CPU at 2 threads vs 1 (float summation order
#      alone) and the CPU at the next seed (what a real difference looks like).
#   2. throughput: `mixopt bench train` tokens/s on the device for tiny, 1m
#      and 60m (RegMix's 60M shape).
#   3. a sweep of a few tiny runs on the device (1 worker, then 4 sharing the
#      GPU), runs/hour, and the same runs on the CPU, run by run compared.
#
#   bench/gpu_check.sh [--device cuda:0] [--bin target/cuda/release/mixopt] [--logs DIR]
#
# Build the binary first with bench/cuda_build.sh (no GPU needed). A GPU
# machine with no network needs only that binary and CUDA 13's libraries
# (cuBLAS, cuRAND, NVRTC, the runtime): the script finds them in
# $MIXOPT_CUDA_LIBS, in python3's nvidia wheels (PyTorch's cu13 build ships
# them), in bench/cuda_build.sh's cache, or in /usr/local/cuda.
#
# `--device cpu` runs every step on the CPU with shortened settings (a dry run
# of the script itself; its figures are not GPU figures).
#
# TOL = 1e-2 nats: the CPU and GPU paths compute the same model with different
# kernels (fused CPU ops vs candle's basic ops, cuBLAS, candle's AdamW), so
# their losses differ by float rounding amplified over 120 steps. On the CPU,
# the summation order alone (2 data-parallel threads vs 1) moved tiny's
# losses by up to 4e-3 (docs/benchmarks.md); a different seed moves them by
# several times TOL. A wrong GPU kernel would show as the latter.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=cuda:0
BIN=target/cuda/release/mixopt
LOGS=
TOL=1e-2
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEV=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --logs) LOGS=$2; shift 2 ;;
        *) echo "gpu_check: unknown argument $1 (--device, --bin, --logs)" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "gpu_check: no binary $BIN (build it with bench/cuda_build.sh)" >&2; exit 2; }
BIN=$(realpath "$BIN")
export MIXOPT_QUIET=1

# CUDA libraries for a binary built with --features cuda.
CACHE=${MIXOPT_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixopt-cuda}
cu13_dirs() {
    [ -n "${MIXOPT_CUDA_LIBS:-}" ] && echo "$MIXOPT_CUDA_LIBS"
    for py in python3 "$CACHE/venv-13.0/bin/python"; do
        "$py" -c 'import nvidia, os; [print(os.path.join(p, "cu13", "lib")) for p in nvidia.__path__]' 2>/dev/null || true
    done
    echo /usr/local/cuda/lib64
}
if ldd "$BIN" | grep -q 'libcublas'; then
    LIBDIR=
    while read -r d; do
        if [ -e "$d/libcublas.so.13" ]; then LIBDIR=$d; break; fi
    done < <(cu13_dirs)
    [ -n "$LIBDIR" ] || { echo "gpu_check: no CUDA 13 libraries found (set MIXOPT_CUDA_LIBS)" >&2; exit 2; }
    export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # No GPU driver here (a CPU dry run): the build's stub driver, whose every
    # call fails cleanly, stands in for libcuda.so.1.
    if ldd "$BIN" | grep -q 'libcuda.so.1 => not found' && [ -e "$LIBDIR/stubs/libcuda.so.1" ]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$LIBDIR/stubs"
    fi
    if ldd "$BIN" | grep -q 'not found'; then
        echo "gpu_check: $BIN cannot load:" >&2
        ldd "$BIN" | grep 'not found' >&2
        exit 2
    fi
else
    LIBDIR="(CPU-only build)"
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/mixopt-gpu-check.XXXXXX")
trap 'rm -rf "$W"' EXIT
LOGS=${LOGS:-$W/logs}
mkdir -p "$LOGS"
ROWS=$W/rows.tsv
: >"$ROWS"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ROWS"; }
log() { echo "gpu_check: $*" >&2; }

# A CPU dry run shortens everything; a GPU run uses the presets as they are.
if [ "$DEV" = cpu ]; then QUICK=1; else QUICK=0; fi
preset() { # NAME FILE KEY=VALUE...: a copy of a built-in preset with fields replaced
    local name=$1 file=$2
    shift 2
    cp "proxies/$name.toml" "$file"
    for kv in "$@"; do
        sed -i "s/^${kv%%=*} = .*/${kv%%=*} = ${kv#*=}/" "$file"
    done
}

CPU_MODEL=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)
log "device $DEV; GPU: ${GPU:-none seen by nvidia-smi}; CPU: $CPU_MODEL ($(nproc) cores)"
log "binary $BIN; CUDA libraries: $LIBDIR; logs in $LOGS"

# The demo's synthetic corpus as a token cache (the demo itself with a
# 2-step proxy: seconds on the CPU).
cat >"$W/p2.toml" <<'EOF'
name = "p2"
n_layers = 1
d_model = 16
n_heads = 2
d_ff = 32
seq_len = 16
batch_size = 2
n_steps = 2
lr_peak = 1e-3
warmup_steps = 1
eval_windows = 1
EOF
"$BIN" demo --out "$W/demo" --runs 8 --proxy "$W/p2.toml" --jobs 1 >"$LOGS/demo.log" 2>&1
CACHE_DIR=$W/demo/cache

# 1. Parity.
TINY=tiny
STEPS=()
if [ $QUICK = 1 ]; then STEPS=(--steps 30); fi
FAILED=0
# A step that fails leaves its row as FAILED (last line of its log) and the
# script goes on, so one failure still prints the whole table.
failed() { # LABEL DEVICE LOG
    row "$1" "$2" "FAILED: $(tail -1 "$3")"
    FAILED=1
}
train() { # LOGNAME ARGS...
    local name=$1
    shift
    "$BIN" train --cache "$CACHE_DIR" --proxy $TINY "${STEPS[@]}" "$@" >"$LOGS/$name.log" 2>&1
}
# Largest per-domain |val_loss difference| between two `mixopt train` logs.
maxdiff() {
    awk '/^domain/ {on = 1; next} /^mean/ {on = 0} on && NF == 3 {
             if (FILENAME == ARGV[1]) a[$1] = $3; else if ($1 in a) {
                 d = $3 - a[$1]; if (d < 0) d = -d; if (d > m) m = d; n++ } }
         END { if (n == 0) exit 1; printf "%.1e", m }' "$1" "$2"
}
log "parity: tiny, seed 7, on $DEV and on the CPU"
train cpu_s7 --seed 7 --device cpu
train cpu_s7_t2 --seed 7 --device cpu --threads 2
train cpu_s8 --seed 8 --device cpu
LABEL="parity: tiny seed 7, max |d val_loss| vs cpu"
if train dev_s7 --seed 7 --device "$DEV"; then
    D_DEV=$(maxdiff "$LOGS/cpu_s7.log" "$LOGS/dev_s7.log")
    D_T2=$(maxdiff "$LOGS/cpu_s7.log" "$LOGS/cpu_s7_t2.log")
    D_SEED=$(maxdiff "$LOGS/cpu_s7.log" "$LOGS/cpu_s8.log")
    VERDICT=$(awk -v d="$D_DEV" -v t="$TOL" 'BEGIN { print (d + 0 <= t + 0) ? "PASS" : "FAIL" }')
    [ "$VERDICT" = PASS ] || FAILED=1
    row "$LABEL" "$DEV" "$D_DEV nats, tol $TOL: $VERDICT (cpu 2 vs 1 threads: $D_T2; cpu seed 8 vs 7: $D_SEED)"
else
    failed "$LABEL" "$DEV" "$LOGS/dev_s7.log"
fi

# 2. Throughput.
bench() { # LABEL PRESET ARGS...
    local label=$1 proxy=$2
    shift 2
    if ! "$BIN" bench train --proxy "$proxy" --device "$DEV" --cache "$CACHE_DIR" "$@" >"$LOGS/bench_$label.log" 2>&1; then
        failed "tokens/s $label" "$DEV" "$LOGS/bench_$label.log"
        return
    fi
    local tps shape
    tps=$(sed -n 's/^median mixopt tokens\/s = \([0-9]*\).*/\1/p' "$LOGS/bench_$label.log")
    shape=$(sed -n 's/.*), \(B=[0-9]* T=[0-9]*\),.*/\1/p' "$LOGS/bench_$label.log")
    row "tokens/s $label ($shape)" "$DEV" "$tps"
}
if [ $QUICK = 1 ]; then
    log "throughput (CPU dry run: shortened)"
    bench tiny tiny --steps 10 --repeats 1
    bench 1m 1m --steps 1 --warmup-steps 1 --repeats 1
    preset 60m "$W/60m-dry.toml" batch_size=1 seq_len=128
    bench "60m-dry-run" "$W/60m-dry.toml" --steps 1 --warmup-steps 1 --repeats 1
else
    log "throughput: tiny, 1m, 60m on $DEV"
    bench tiny tiny --steps 100 --repeats 3
    bench 1m 1m --steps 30 --repeats 3
    bench 60m 60m --steps 10 --repeats 3
fi

# 3. A short sweep on the device, and the same runs on the CPU.
RUNS=8
SWEEP_PROXY=tiny
SWEEP_LABEL=tiny
if [ $QUICK = 1 ]; then
    RUNS=2
    preset tiny "$W/tiny-short.toml" n_steps=30 warmup_steps=3
    SWEEP_PROXY=$W/tiny-short.toml
    SWEEP_LABEL="tiny (30 steps)"
fi
sweep() { # NAME DEVICE JOBS
    local t0 t1 label="sweep: $RUNS x $SWEEP_LABEL, $3 worker(s)"
    t0=$(date +%s.%N)
    if ! "$BIN" sweep --cache "$CACHE_DIR" --proxy "$SWEEP_PROXY" --runs $RUNS --seed 0 \
        --noise-seeds 0 --device "$2" --jobs "$3" --out "$W/$1.csv" >"$LOGS/sweep_$1.log" 2>&1; then
        failed "$label" "$2" "$LOGS/sweep_$1.log"
        return
    fi
    t1=$(date +%s.%N)
    row "$label" "$2" "$(awk -v a="$t0" -v b="$t1" -v n=$RUNS 'BEGIN { printf "%.1f s = %.0f runs/h", b - a, n * 3600 / (b - a) }')"
}
CORES=$(nproc)
log "sweep: $RUNS runs of $SWEEP_LABEL on $DEV (1 and 4 workers) and on the CPU ($CORES workers)"
sweep dev1 "$DEV" 1
sweep dev4 "$DEV" 4
sweep cpu cpu "$CORES"
# Run by run: the device's sweep against the CPU's (same mixtures and seeds).
LABEL="sweep: max |d loss| over runs and domains vs cpu"
if D_SWEEP=$(python3 - "$W/dev1.csv" "$W/cpu.csv" 2>"$LOGS/sweep_compare.log" <<'EOF'
import csv, sys
def table(path):
    with open(path) as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}
a, b = table(sys.argv[1]), table(sys.argv[2])
cols = [c for c in next(iter(a.values())) if c.startswith("loss_")]
print("%.1e" % max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols))
EOF
); then
    VERDICT=$(awk -v d="$D_SWEEP" -v t="$TOL" 'BEGIN { print (d + 0 <= t + 0) ? "PASS" : "FAIL" }')
    [ "$VERDICT" = PASS ] || FAILED=1
    row "$LABEL" "$DEV" "$D_SWEEP nats, tol $TOL: $VERDICT"
else
    failed "$LABEL" "$DEV" "$LOGS/sweep_compare.log"
fi

echo
echo "gpu_check $(date -u +%Y-%m-%dT%H:%MZ): device $DEV; GPU ${GPU:-none}; CPU $CPU_MODEL ($CORES cores); $BIN"
[ $QUICK = 1 ] && echo "(CPU dry run: shortened settings; not GPU figures)"
awk -F'\t' 'BEGIN { printf "| %-58s | %-7s | %s |\n", "check", "device", "result"
                    printf "|%s|%s|%s|\n", "-----------------------------------------------------------", "---------", "--------" }
            { printf "| %-58s | %-7s | %s |\n", $1, $2, $3 }' "$ROWS"
exit $FAILED
