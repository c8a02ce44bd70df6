#!/usr/bin/env bash
# Build mixopt with `--features cuda` on a machine with no GPU and no CUDA
# toolkit installed: CUDA 13.0's compiler, headers and libraries come from
# NVIDIA's PyPI wheels, installed into a virtual environment under a cache
# folder (reused on later runs), and cargo builds into target/cuda so the CPU
# build in target/release is left alone.
#
#   bench/cuda_build.sh                # cargo build --release --features cuda
#   bench/cuda_build.sh clippy --release --all-targets --features cuda -- -D warnings
#                                      # any other cargo command in that setting
#
# Environment:
#   MIXOPT_CUDA_CACHE  where the venv lives (default ~/.cache/mixopt-cuda)
#   CUDA_COMPUTE_CAP   GPU to compile candle's kernels for (default 90: H100,
#                      H200; e.g. 80 for A100, 89 for L4/L40). There is no
#                      nvidia-smi to ask without a GPU.
#
# Why CUDA 13.0: the cu12 wheels ship ptxas but no nvcc; from 13.0 on,
# nvidia-cuda-nvcc ships the whole compiler (nvcc, cicc, ptxas). cudarc 0.19
# knows 13.0 to 13.4; 13.0 needs the oldest driver (>= 580) of those.
#
# What the wheels lack, made here: the unversioned `libX.so` names the linker
# looks for, and `libcuda.so` (the driver, which comes with the GPU's driver,
# not with the toolkit). As NVIDIA's own toolkit does, the build links against
# a stub: a shared library with every `cu*` entry point that cuda.h declares,
# each returning CUDA_ERROR_STUB_LIBRARY (34), sonamed libcuda.so.1 so that
# the binary loads the real driver on a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_VERSION=13.0
PACKAGES=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)
CACHE=${MIXOPT_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixopt-cuda}
VENV=$CACHE/venv-$CUDA_VERSION
STAMP=$VENV/.mixopt-packages

# 1. The toolkit from PyPI, once per package list.
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${PACKAGES[*]}" ]; then
    echo "cuda_build: installing CUDA $CUDA_VERSION wheels into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-cache-dir "${PACKAGES[@]}"
    echo "${PACKAGES[*]}" >"$STAMP"
fi
# The cu13 wheels install one toolkit tree: bin/nvcc, nvvm/, include/, lib/.
ROOT=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
[ -x "$ROOT/bin/nvcc" ] || { echo "cuda_build: no nvcc in $ROOT" >&2; exit 1; }

# 2. Linker names and the driver stub (cheap; redone when missing).
for lib in "$ROOT"/lib/lib*.so.*; do
    name=$(basename "$lib")
    case $name in *.alt.so.*) continue ;; esac
    link="$ROOT/lib/${name%%.so.*}.so"
    [ -e "$link" ] || ln -s "$name" "$link"
done
STUBS=$ROOT/lib/stubs
if [ ! -f "$STUBS/libcuda.so" ]; then
    mkdir -p "$STUBS"
    # Every cu* function cuda.h declares, with its versioned names too
    # (__CUDA_API_VERSION_INTERNAL exposes the _v2/_v3 ... spellings).
    for def in "" -D__CUDA_API_VERSION_INTERNAL; do
        echo '#include <cuda.h>' | gcc -E -P $def -I"$ROOT/include" -x c -
    done | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u |
        awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$STUBS/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/libcuda_stub.c"
    ln -sf libcuda.so "$STUBS/libcuda.so.1"
fi

# 3. What candle's build needs: nvcc on PATH (cudarc reads the CUDA version
# from `nvcc --version`; candle-kernels compiles its kernels with it), the
# toolkit root for cudarc's link search (lib/, lib/stubs/), and the GPU's
# compute capability.
export PATH="$ROOT/bin:$PATH"
export CUDA_HOME="$ROOT" CUDA_PATH="$ROOT" CUDA_ROOT="$ROOT"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
echo "cuda_build: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p'), compute capability $CUDA_COMPUTE_CAP, target $CARGO_TARGET_DIR" >&2

if [ $# -gt 0 ]; then
    # Tests and binaries of this build load the CUDA libraries; the stub
    # stands in for the driver where there is none.
    export LD_LIBRARY_PATH="$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' || export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$STUBS"
    exec cargo "$@"
fi
cargo build --release --features cuda

BIN=$CARGO_TARGET_DIR/release/mixopt
echo "cuda_build: built $BIN" >&2
echo "cuda_build: on a GPU machine run it with LD_LIBRARY_PATH=$ROOT/lib (or that machine's CUDA $CUDA_VERSION libraries: bench/gpu_check.sh finds them); without a GPU add $STUBS" >&2
