#!/usr/bin/env bash
# Load every mixopt export with the framework's own code, on small local data.
#
# Installs the frameworks from PyPI into three virtual environments (torch:
# megatron-core, ai2-olmo-core, mosaicml-streaming, litdata, torchtitan;
# hf: datasets 5.2; jax: marin-levanter), builds mixopt, writes three
# domains of local data in each framework's format (make_data.py), exports
# one mixture (token shares web:news 0.5, books 0.2, code 2 0.3: a hierarchy
# colon and a space in the names; books' documents 10x longer than web's)
# in every format, and runs check.py on each: one PASS / FAIL / STRUCTURAL
# line per format with the package version and the shares the framework
# samples. Prints the install time.
#
# Not in CI: the installs take ~40 minutes on 2 cores (PyTorch from PyPI
# brings its CUDA libraries, ~5 GB); docs/export.md holds the last run.
#
#   nice -n 10 bash bench/frameworks_check.sh          # MIXOPT_FW_DIR to move the venvs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${MIXOPT_FW_DIR:-$ROOT/target/frameworks}
D=$W/data
mkdir -p "$W"

# 1. Install (a no-op when the venvs are already complete).
t0=$(date +%s)
install() {
    local venv=$1
    shift
    [ -x "$W/$venv/bin/python" ] || python3 -m venv "$W/$venv"
    "$W/$venv/bin/pip" install -q --disable-pip-version-check "$@"
}
install venv-torch "megatron-core==0.16.1" "ai2-olmo-core==3.0.0" "mosaicml-streaming==0.13.0" \
    "litdata==0.2.76" "torchtitan==0.3.0" omegaconf pyyaml
install venv-hf "datasets==5.2.0"
install venv-jax marin-levanter "jax[cpu]" pyyaml gitpython
t1=$(date +%s)
echo "install: $((t1 - t0)) s"

# 2. mixopt and the data.
cargo build --release -q
M=$ROOT/target/release/mixopt
if [ ! -d "$D/litdata" ]; then
    "$W/venv-torch/bin/python" bench/frameworks/make_data.py "$D" >"$W/make_data.log" 2>&1 ||
        { tail -20 "$W/make_data.log"; exit 1; }
fi
rm -rf "$D/cache"
MIXOPT_QUIET=1 "$M" prepare --cache "$D/cache" \
    --domain "web:news=$D/jsonl/web_news/train.jsonl" \
    --domain "books=$D/jsonl/books/train.jsonl" \
    --domain "code 2=$D/jsonl/code_2/train.jsonl" >/dev/null
E=$D/exports
mkdir -p "$E"
cat >"$E/weights.json" <<'JSON'
{"domains": {"web:news": 0.5, "books": 0.2, "code 2": 0.3}, "order": ["web:news", "books", "code 2"]}
JSON
EXPECTED='{"web:news": 0.5, "books": 0.2, "code 2": 0.3}'

# paths.toml for one layout of the data: KIND DIR SUFFIX.
paths() {
    local kind=$1 suffix=$2 out=$E/paths-$1.toml
    : >"$out"
    for d in "web:news" "books" "code 2"; do
        local s=${d//:/_}
        s=${s// /_}
        printf '[%s]\ntrain = "%s/%s/%s%s"\nvalid = "%s/%s/%s%s"\n' "\"$d\"" "$D" "$kind" "$s" "$suffix" "$D" "$kind" "$s" "$suffix" >>"$out"
    done
    echo "$out"
}

status=0
check() {
    local venv=$1 format=$2 out=$3
    shift 3
    MIXOPT_QUIET=1 "$M" export --weights "$E/weights.json" --format "$format" --out "$out" "$@" 2>"$E/$format.notes" >/dev/null
    (cd "$E" && "$W/$venv/bin/python" "$ROOT/bench/frameworks/check.py" "$format" "$out" "$D" "$EXPECTED") || status=1
}

check venv-torch megatron "$E/blend.txt" --paths "$(paths megatron _text_document)"
check venv-torch olmo-core "$E/olmo.yaml" --paths "$(paths olmo /part-0.npy)"
check venv-torch llm-foundry "$E/foundry.yaml" --paths "$(paths mds '')"
check venv-hf hf "$E/hf_unconverted.py" --paths "$(paths jsonl '')"
check venv-hf hf "$E/hf.py" --paths "$(paths jsonl '')" --cache "$D/cache"
check venv-torch litdata "$E/litdata.py" --paths "$(paths litdata '')" --cache "$D/cache"
check venv-torch torchtitan "$E/mixopt_mixture.py" --paths "$(paths jsonl '')"
check venv-jax levanter "$E/levanter.yaml" --paths "$(paths jsonl /train.jsonl)"
check venv-jax gpt-neox "$E/neox.yaml" --paths "$(paths megatron _text_document)"
# A Levanter schedule: two phases, starts aligned to 2048-sequence blocks at batch 256.
printf 'step,w_web:news,w_books,w_code 2\n0,0.5,0.2,0.3\n100,0.5,0.2,0.3\n600,0.3,0.4,0.3\n999,0.3,0.4,0.3\n' >"$E/traj.csv"
MIXOPT_QUIET=1 "$M" export --trajectory "$E/traj.csv" --phases 2 --total-steps 967 --batch-size 256 \
    --format levanter --paths "$(paths jsonl /train.jsonl)" --out "$E/levanter_schedule.yaml" 2>"$E/levanter_schedule.notes" >/dev/null
"$W/venv-jax/bin/python" bench/frameworks/check.py levanter "$E/levanter_schedule.yaml" "$D" "$EXPECTED" || status=1
cat "$E"/*.notes | sed 's/^/  /'
exit $status
