#!/usr/bin/env bash
# Cold start of a static pool: from launching `hodei server` on a fresh data dir to the first
# job's process running on one of the pool's workers (the job prints the time it started).
# Usage: bench/coldstart.sh [RUNS=5] — one line per run, then the median.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
python3 - "$BIN" "$RUNS" <<'PY'
import json, os, subprocess, sys, tempfile, time, urllib.request
bin_, runs = sys.argv[1], int(sys.argv[2])
yaml = """resource_pools:
  pools:
    - id: warm
      type: static
      worker_template: { cpu_m: 1000, memory_mb: 1024, slots: 4 }
      min_size: 2
      max_size: 2
"""
results = []
for run in range(runs):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "hodei.yaml")
    open(cfg, "w").write(yaml)
    t0 = time.time()
    srv = subprocess.Popen([bin_, "server", "--config", cfg, "--data-dir", os.path.join(d, "data"), "--http-addr", "127.0.0.1:0",
                            "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"}, text=True)
    line = srv.stdout.readline()
    ready = time.time() - t0
    http = line.split()[1].split("=", 1)[1]
    token = open(os.path.join(d, "data", "admin.token")).read().strip()
    def call(method, path, body=None):
        r = urllib.request.Request(f"http://{http}/api/v1{path}", method=method, data=json.dumps(body).encode() if body else None,
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(r).read())
    job = call("POST", "/jobs", {"command": ["date", "+%s.%N"]})
    while True:
        page = call("GET", f"/jobs/{job['id']}/logs")
        if page["chunks"]:
            break
        time.sleep(0.005)
    started = float(page["chunks"][0]["data"]) - t0
    results.append((ready, started))
    print(f"run {run + 1}: ready_s={ready:.3f} first_job_running_s={started:.3f}", flush=True)
    srv.terminate(); srv.wait()
    subprocess.run(["rm", "-rf", d])
results.sort(key=lambda r: r[1])
m = results[len(results) // 2]
print(f"coldstart runs={runs} median_ready_s={sorted(r[0] for r in results)[len(results)//2]:.3f} median_first_job_running_s={m[1]:.3f}")
PY
