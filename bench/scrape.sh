#!/usr/bin/env bash
# `/metrics` at scale: a fresh release server with 50 pools (config) and 1,000 tenants (API),
# each idle tenant and pool exported at zero as they must be. Scrapes the metrics listener
# --scrapes times and prints the series count, the body size and the scrape time p50 / p99 / max
# (client side, whole body read).
#   bench/scrape.sh [--tenants 1000] [--pools 50] [--scrapes 50]
# HODEI_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=1000 POOLS=50 SCRAPES=50
while [ $# -gt 0 ]; do
    case "$1" in
        --tenants) TENANTS=$2; shift 2 ;;
        --pools) POOLS=$2; shift 2 ;;
        --scrapes) SCRAPES=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
{
    echo "resource_pools:"
    echo "  pools:"
    for i in $(seq 1 "$POOLS"); do
        printf '    - { id: pool-%02d, worker_template: { cpu_m: 4000, memory_mb: 4096, slots: 4 }, min_size: 0, max_size: 4 }\n' "$i"
    done
} > "$DIR/config.yaml"
RUST_LOG=warn "$BIN" server --config "$DIR/config.yaml" --data-dir "$DIR/data" --http-addr 127.0.0.1:0 \
    --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
PID=$!
for _ in $(seq 1 300); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DIR/ready" || { cat "$DIR/server.log"; exit 1; }
field() { sed -n "s/^ready.* $1=\([^ ]*\).*/\1/p;s/^ready $1=\([^ ]*\).*/\1/p" "$DIR/ready" | head -1; }
SCRAPE_HTTP=$(field http) SCRAPE_METRICS=$(field metrics) SCRAPE_TOKEN=$(cat "$DIR/data/admin.token") \
python3 - "$TENANTS" "$SCRAPES" <<'PY'
import json, os, sys, time, urllib.request

tenants, scrapes = int(sys.argv[1]), int(sys.argv[2])
http, metrics, token = (os.environ[k] for k in ("SCRAPE_HTTP", "SCRAPE_METRICS", "SCRAPE_TOKEN"))
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
for i in range(tenants):
    n = f"t-{i:04d}"
    req = urllib.request.Request(f"http://{http}/api/v1/tenants", method="POST", headers=auth,
                                 data=json.dumps({"id": n, "name": n}).encode())
    urllib.request.urlopen(req, timeout=30).read()
times, size, series = [], 0, 0
for _ in range(scrapes):
    t = time.perf_counter()
    body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30).read()
    times.append((time.perf_counter() - t) * 1000)
    size, series = len(body), sum(1 for l in body.split(b"\n") if l and not l.startswith(b"#"))
times.sort()
pct = lambda p: times[min(len(times) - 1, int(p * len(times)))]
print(f"tenants={tenants} series={series} size={size / 1024 / 1024:.1f}MiB "
      f"scrape_ms p50={pct(0.5):.1f} p99={pct(0.99):.1f} max={times[-1]:.1f}")
PY
