#!/usr/bin/env bash
# Peak and settled resident memory of a fresh server after 4 concurrent 161 MB batches
# (99 999 jobs and one invalid, so each is parsed whole and refused with 400, nothing stored).
# Usage: bench/batch-memory.sh [path/to/hodei]   (default: a release build of this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${1:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${1:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
python3 - "$DIR/batch.json" <<'PY'
import json, sys
job = json.dumps({"command": ["true"], "hold": True, "labels": {"k": "v" * 40}, "env": {"A": "x" * 1500}})
with open(sys.argv[1], "w") as f:
    f.write('{"jobs": [' + ",".join([job] * 99999) + ',{"command": []}]}')
PY
RUST_LOG=error "$BIN" server --data-dir "$DIR/data" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2>/dev/null &
PID=$!
for _ in $(seq 1 100); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
HTTP=$(sed -n 's/^ready http=\([^ ]*\).*/\1/p' "$DIR/ready")
TOKEN=$(cat "$DIR/data/admin.token")
P=()
for _ in 1 2 3 4; do
    curl -s -o /dev/null -w "%{http_code} " -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data-binary @"$DIR/batch.json" "http://$HTTP/api/v1/jobs/batch" &
    P+=($!)
done
wait "${P[@]}"
sleep 2
echo
grep -E "VmHWM|VmRSS" /proc/$PID/status | tr -s ' \t' ' ' | tr '\n' ' '
echo
kill "$PID"; wait "$PID" 2>/dev/null || true
