#!/usr/bin/env bash
# HTTP load test for `mixopt online --listen` (issue 5): starts a server on
# 127.0.0.1 (ODM, 20 domains, state file in a temp dir), then a second
# process (examples/online_loadgen.rs) sends bounded keep-alive POST /observe traffic to it
# (REQUESTS per run, at most MAX_S seconds each) with 1, 4 and 16 connections.
# Traffic goes to loopback only (the load generator refuses anything else).
#
#   bash bench/online_http_load.sh            # state on the temp dir's disk
#   STATE_DIR=/dev/shm bash bench/online_http_load.sh
set -euo pipefail
MIXOPT=${MIXOPT:-$(dirname "$0")/../target/release/mixopt}
LOADGEN=${LOADGEN:-$(dirname "$0")/../target/release/examples/online_loadgen}
[ -x "$LOADGEN" ] || (cd "$(dirname "$0")/.." && cargo build --release --quiet --example online_loadgen)
REQUESTS=${REQUESTS:-20000}
MAX_S=${MAX_S:-30}
PORT=${PORT:-18377}
CONNS=${CONNS:-"1 4 16"}
if [ -z "${STATE_DIR:-}" ]; then
  STATE_DIR=$(mktemp -d)
  CLEAN_DIR=$STATE_DIR
fi
DOMAINS=$(seq -s, -f 'd%g' 0 19)
STATE="$STATE_DIR/online-load-state.json"
rm -f "$STATE"
"$MIXOPT" online --policy odm --domains "$DOMAINS" --state "$STATE" \
  --listen "127.0.0.1:$PORT" 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$STATE"; [ -n "${CLEAN_DIR:-}" ] && rm -rf "$CLEAN_DIR"' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "state file: $STATE ($(df -T "$STATE_DIR" | awk 'NR==2{print $2}'))"
for c in $CONNS; do
  "$LOADGEN" "127.0.0.1:$PORT" --domains "$DOMAINS" \
    --requests "$REQUESTS" --connections "$c" --max-seconds "$MAX_S"
done
