#!/usr/bin/env bash
# Cost of one policy update for 20 domains (issue 5: < 100 µs), and of one
# full request (JSON parse + update + atomic state write), per policy.
#   bash bench/online_policy_speed.sh
set -euo pipefail
MIXOPT=${MIXOPT:-$(dirname "$0")/../target/release/mixopt}
N=${N:-20000}
DOMAINS=$(seq -s, -f 'd%g' 0 19)
REF=$(seq -s, -f 'd%g=2.0' 0 19)
for p in odm aioli ado; do
  "$MIXOPT" online --policy "$p" --domains "$DOMAINS" --bench "$N"
done
"$MIXOPT" online --policy doremi --domains "$DOMAINS" --reference "$REF" --bench "$N"
