#!/usr/bin/env bash
# How long the dashboards' queries take at scale: a fresh release server with 50 pools and 100
# tenants (some running jobs), scraped by a real Prometheus (Debian's `prometheus`) every second
# for --scrape-s seconds; then every query of every dashboard panel is run as Grafana runs it —
# a range query over the last 5 minutes at a 15 s step, the dashboard's variables at "All" —
# and the time each dashboard's queries take, one after the other (Grafana sends them at once,
# so this is an upper bound), is printed with the slowest query.
#   bench/dashboards.sh [--tenants 100] [--pools 50] [--scrape-s 60]
# HODEI_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=100 POOLS=50 SCRAPE_S=60
while [ $# -gt 0 ]; do
    case "$1" in
        --tenants) TENANTS=$2; shift 2 ;;
        --pools) POOLS=$2; shift 2 ;;
        --scrape-s) SCRAPE_S=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v prometheus >/dev/null || { echo "prometheus is needed (Debian: apt-get install prometheus)" >&2; exit 1; }
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$DIR"' EXIT
{
    echo "resource_pools:"
    echo "  pools:"
    echo "    - { id: local, provider: local, worker_template: { cpu_m: 8000, memory_mb: 8192, slots: 16 }, min_size: 2, max_size: 2 }"
    for i in $(seq 2 "$POOLS"); do
        printf '    - { id: pool-%02d, worker_template: { cpu_m: 4000, memory_mb: 4096, slots: 4 }, min_size: 0, max_size: 4 }\n' "$i"
    done
} > "$DIR/config.yaml"
RUST_LOG=warn "$BIN" server --config "$DIR/config.yaml" --data-dir "$DIR/data" --http-addr 127.0.0.1:0 \
    --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DIR/ready" || { cat "$DIR/server.log"; exit 1; }
field() { sed -n "s/^ready.* $1=\([^ ]*\).*/\1/p;s/^ready $1=\([^ ]*\).*/\1/p" "$DIR/ready" | head -1; }
HTTP=$(field http) METRICS=$(field metrics) TOKEN=$(cat "$DIR/data/admin.token")
PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$DIR/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: ['$PWD/deploy/prometheus/alerts.yml']
scrape_configs: [{ job_name: hodei, static_configs: [{ targets: ['$METRICS'] }] }]
EOF
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prom" --web.listen-address="127.0.0.1:$PROM_PORT" 2> "$DIR/prom.log" &
PIDS+=($!)
BENCH_HTTP=$HTTP BENCH_TOKEN=$TOKEN BENCH_PROM="127.0.0.1:$PROM_PORT" python3 - "$TENANTS" "$SCRAPE_S" <<'PY'
import glob, json, os, sys, time, urllib.parse, urllib.request

tenants, scrape_s = int(sys.argv[1]), float(sys.argv[2])
http, token, prom = (os.environ[k] for k in ("BENCH_HTTP", "BENCH_TOKEN", "BENCH_PROM"))
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(f"http://{http}/api/v1{path}", method=method, headers=auth, data=None if body is None else json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req, timeout=30).read() or b"null")

names = [f"t-{i:03d}" for i in range(tenants)]
for n in names:
    call("POST", "/tenants", {"id": n, "name": n})
# Work for the series to move: short jobs spread over the tenants while Prometheus scrapes.
end = time.time() + scrape_s
i = 0
while time.time() < end:
    call("POST", "/jobs/batch", {"jobs": [{"command": ["sleep", "0.5"], "tenant_id": names[(i + k) % tenants]} for k in range(20)]})
    i += 20
    time.sleep(1)
now = time.time()
per_dashboard = []
for path in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    d = json.load(open(path))
    total, slowest = 0.0, (0.0, "")
    for p in d["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$tenant", ".*").replace("$pool", ".*")
            q = urllib.parse.urlencode({"query": expr, "start": now - 300, "end": now, "step": 15})
            t0 = time.perf_counter()
            r = json.loads(urllib.request.urlopen(f"http://{prom}/api/v1/query_range?{q}", timeout=60).read())
            ms = (time.perf_counter() - t0) * 1000
            assert r["status"] == "success", (expr, r)
            total += ms
            slowest = max(slowest, (ms, p["title"]))
    per_dashboard.append((d["uid"], total, slowest))
for uid, total, (ms, title) in per_dashboard:
    print(f"{uid}: all queries {total:.0f} ms one after the other; slowest {ms:.0f} ms ({title})")
print(f"tenants={tenants} jobs_submitted={i}")
PY
