#!/usr/bin/env bash
# Many running jobs at once: a fresh release server, WORKERS agents of SLOTS slots each (real
# `hodei worker` processes on this machine), one array of WORKERS × SLOTS `sleep` jobs. Measures
# how long until every job is running, the API's latency while they all run (one job, a page of
# the list, /queue, explain), the server's and the agents' CPU and memory then, and that
# heartbeats kept every worker alive; then waits for every job to end and checks that each
# succeeded once, on its first attempt.
#   bench/running.sh [--workers 10] [--slots 1000] [--sleep-s 120]
# HODEI_BIN picks the binary (default: a release build of this checkout). Exits 1 when a job did
# not start, a worker was lost, a job was requeued or did not succeed exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=10 SLOTS=1000 SLEEP_S=120
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS=$2; shift 2 ;;
        --slots) SLOTS=$2; shift 2 ;;
        --sleep-s) SLEEP_S=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
N=$((WORKERS * SLOTS))
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
TOKEN=hodei_bench$(python3 -c 'import secrets; print(secrets.token_hex(16))')
cat > "$DIR/config.yaml" <<EOF
resource_pools:
  builtin_local:
    enabled: false
  pools:
    - id: big
      name: big
      join_token: $TOKEN
EOF
RUST_LOG=warn "$BIN" server --config "$DIR/config.yaml" --data-dir "$DIR/data" \
    --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 300); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DIR/ready" || { cat "$DIR/server.log"; exit 1; }
field() { sed -n "s/^ready.* $1=\([^ ]*\).*/\1/p;s/^ready $1=\([^ ]*\).*/\1/p" "$DIR/ready" | head -1; }
HTTP=$(field http) GRPC=$(field grpc) METRICS=$(field metrics)
for i in $(seq 1 "$WORKERS"); do
    # Each job asks 10 millicores and 16 MiB; the agents offer exactly SLOTS of them.
    RUST_LOG=warn HODEI_JOIN_TOKEN=$TOKEN "$BIN" worker --server "http://$GRPC" --pool big --slots "$SLOTS" \
        --cpu-m $((SLOTS * 10)) --memory-mb $((SLOTS * 16)) --instance-name "big-$i" --spool-dir "$DIR/w$i" \
        2> "$DIR/worker-$i.log" &
    PIDS+=("$!")
done
export HODEI_SERVER="http://$HTTP" HODEI_TOKEN BENCH_METRICS=$METRICS BENCH_N=$N BENCH_WORKERS=$WORKERS BENCH_SLEEP_S=$SLEEP_S
export BENCH_SERVER_PID=$SERVER BENCH_WORKER_PIDS="${PIDS[*]:1}" BENCH_BIN=$BIN
HODEI_TOKEN=$(cat "$DIR/data/admin.token")
python3 - <<'PY'
import json, os, subprocess, sys, time, urllib.request, urllib.error

http, token, metrics = os.environ["HODEI_SERVER"], os.environ["HODEI_TOKEN"], os.environ["BENCH_METRICS"]
n, workers, sleep_s = int(os.environ["BENCH_N"]), int(os.environ["BENCH_WORKERS"]), int(os.environ["BENCH_SLEEP_S"])
server_pid, worker_pids = int(os.environ["BENCH_SERVER_PID"]), [int(p) for p in os.environ["BENCH_WORKER_PIDS"].split()]
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(f"{http}/api/v1{path}", method=method, headers=auth,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")

def scrape():
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

def total(m, name, **labels):
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in m.items() if k.split("{")[0] == name and all(w in k for w in want))

def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

deadline = time.monotonic() + 60
while True:
    status, ws = call("GET", "/workers?limit=500")
    if status == 200 and len([w for w in ws["items"] if w["state"] in ("idle", "busy")]) == workers:
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {ws} registered")
    time.sleep(0.2)

status, body = call("POST", "/tenants", {"id": "bulk", "name": "bulk", "quota": {
    "max_concurrent_jobs": n, "max_queued_jobs": 2 * n, "cpu_m": 10 * n, "memory_mb": 16 * n}})
if status not in (200, 201):
    sys.exit(f"creating the tenant: {status} {body}")

t0 = time.monotonic()
status, body = call("POST", "/jobs", {"command": ["sleep", str(sleep_s)], "tenant_id": "bulk", "pool_selector": {"pool": "big"},
                                      "resources": {"cpu_m": 10, "memory_mb": 16}, "array": {"start": 0, "end": n - 1}})
if status != 201:
    sys.exit(f"submitting: {status} {body}")
array_id, submit_s = body["array_id"], time.monotonic() - t0
print(f"submitted {n} jobs in {submit_s:.2f} s", flush=True)
started = None
while time.monotonic() - t0 < sleep_s:
    m = scrape()
    running = total(m, "hodei_jobs_running")
    if running >= n:
        started = time.monotonic() - t0
        break
    time.sleep(0.1)
if started is None:
    sys.exit(f"after {sleep_s} s only {running:.0f} of {n} jobs are running")
print(f"all {n} running after {started:.2f} s", flush=True)

# While every job runs: the API's latency, then CPU and memory over a quiet window.
status, page = call("GET", "/jobs?tenant_id=bulk&limit=1")
job = page["items"][0]["id"]
reads = {}
for name, path in (("job", f"/jobs/{job}"), ("list", "/jobs?tenant_id=bulk&state=running&limit=50"), ("queue", "/queue"), ("explain", f"/jobs/{job}/explain")):
    out = subprocess.run([os.environ["BENCH_BIN"], "bench", "read", "--clients", "8", "--reads", "4000", "--path", path],
                         capture_output=True, text=True, check=True).stdout.strip()
    reads[name] = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    print(f"read {name}: {out}", flush=True)
window = 10
before = (cpu_s(server_pid), sum(cpu_s(p) for p in worker_pids), time.monotonic())
time.sleep(window)
after = (cpu_s(server_pid), sum(cpu_s(p) for p in worker_pids), time.monotonic())
span = after[2] - before[2]
print(f"with {n} running: server cpu {100 * (after[0] - before[0]) / span:.1f} % of a core, rss {rss_mib(server_pid):.0f} MiB; "
      f"{workers} agents cpu {100 * (after[1] - before[1]) / span:.1f} %, rss {sum(rss_mib(p) for p in worker_pids):.0f} MiB", flush=True)

deadline = time.monotonic() + sleep_s + 300
while True:
    m = scrape()
    ended = total(m, "hodei_jobs_completed_total")
    if ended >= n or time.monotonic() > deadline:
        break
    time.sleep(0.5)
finished = time.monotonic() - t0
problems = []
succeeded = total(m, "hodei_jobs_completed_total", state="succeeded")
lost, requeued = total(m, "hodei_workers_lost_total"), total(m, "hodei_jobs_requeued_total")
if succeeded != n or ended != n:
    problems.append(f"{succeeded:.0f} of {n} succeeded, {ended:.0f} ended")
if lost or requeued:
    problems.append(f"{lost:.0f} workers lost, {requeued:.0f} jobs requeued")
# Every member once, on its first attempt.
cursor, counted, again = None, 0, 0
while True:
    status, page = call("GET", f"/jobs?tenant_id=bulk&limit=500" + (f"&cursor={cursor}" if cursor else ""))
    for j in page["items"]:
        counted += 1
        again += j["attempt_count"] != 1 or j["state"] != "succeeded"
    cursor = page.get("next_cursor")
    if not cursor:
        break
if counted != n or again:
    problems.append(f"{counted} jobs listed, {again} not succeeded on exactly one attempt")
print(f"all ended after {finished:.1f} s: {succeeded:.0f} succeeded, workers lost {lost:.0f}, requeued {requeued:.0f}", flush=True)
print(f"summary: jobs={n} workers={workers} submit_s={submit_s:.2f} all_running_s={started:.2f} "
      + " ".join(f"{k}_p99_ms={v['latency_p99_ms']}" for k, v in reads.items()), flush=True)
for p in problems:
    print("FAIL:", p, flush=True)
sys.exit(1 if problems else 0)
PY
