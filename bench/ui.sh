#!/usr/bin/env bash
# The dashboard's load time with a full store: a fresh release server holding --jobs ended jobs
# (run by its built-in pool) and --held held ones, then headless Chromium (Debian's, through
# playwright-core from crates/hodei/tests/ui/node_modules) loads each page --runs times in a new
# browser context (nothing cached) and reports, from the browser's Performance API, the first
# contentful paint and the time until the page's data is on screen, p50 / p90 / max.
#   bench/ui.sh [--jobs 10000] [--held 500] [--runs 15]
# HODEI_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=10000 HELD=500 RUNS=15
while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) JOBS=$2; shift 2 ;;
        --held) HELD=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -d crates/hodei/tests/ui/node_modules/playwright-core ] || npm ci --prefix crates/hodei/tests/ui --no-audit --no-fund
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
RUST_LOG=warn "$BIN" server --data-dir "$DIR/data" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
    --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
PID=$!
for _ in $(seq 1 300); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DIR/ready" || { cat "$DIR/server.log"; exit 1; }
HTTP=$(sed -n 's/^ready http=\([^ ]*\).*/\1/p' "$DIR/ready")
TOKEN=$(cat "$DIR/data/admin.token")
UI_HTTP=$HTTP UI_TOKEN=$TOKEN python3 - "$JOBS" "$HELD" <<'PY'
import json, os, sys, time, urllib.request

jobs, held = int(sys.argv[1]), int(sys.argv[2])
http, token = os.environ["UI_HTTP"], os.environ["UI_TOKEN"]
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

def call(path, body=None):
    req = urllib.request.Request(f"http://{http}/api/v1{path}", method="POST" if body else "GET", headers=auth,
                                 data=json.dumps(body).encode() if body else None)
    return json.load(urllib.request.urlopen(req, timeout=60))

t = time.time()
for start in range(0, jobs, 500):
    n = min(500, jobs - start)
    call("/jobs/batch", {"jobs": [{"name": f"bench-{start + i}", "command": ["true"], "labels": {"bench": "ui"}} for i in range(n)]})
for start in range(0, held, 500):
    n = min(500, held - start)
    call("/jobs/batch", {"jobs": [{"name": f"held-{start + i}", "command": ["true"], "hold": True} for i in range(n)]})
while True:
    q = call("/queue")["totals"]
    if q["pending"] + q["scheduled"] + q["running"] == 0:
        break
    time.sleep(0.5)
print(f"store: {jobs} ended jobs and {held} held, made in {time.time() - t:.0f} s", flush=True)
PY
node bench/ui-load.mjs "http://$HTTP" "$TOKEN" "$RUNS"
