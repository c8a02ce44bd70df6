#!/usr/bin/env bash
# Chaos run: kill -9 of `online --listen`, `sweep` and `prepare` at random
# moments, a slow-client flood and oversized input, all on 127.0.0.1 with
# every phase bounded in time (a few minutes in all on 2 cores). Prints kills
# survived, rows/updates lost or duplicated, requests served during the
# flood, and peak RSS under oversized input (bench/chaos.py does the work).
#
# Usage: bash bench/chaos.sh [SEED]           (from the repository root)
#        MIXOPT_BIN=path/to/mixopt bash bench/chaos.sh   (another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MIXOPT_BIN:-}" ]; then
  cargo build --release --quiet
  MIXOPT_BIN=target/release/mixopt
fi
exec timeout 900 python3 bench/chaos.py "$MIXOPT_BIN" "${1:-1}"
