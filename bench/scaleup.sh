#!/usr/bin/env bash
# Dynamic scale-up from zero: a server whose only pool is dynamic with `min_size: 0` and a
# `queue_depth > 0` policy (autoscaling.evaluation_interval_s=1); from the POST of one job to
# its process running on the worker the autoscaler started for it (the job prints its start).
# Usage: bench/scaleup.sh [RUNS=5] — one line per run, then the median.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
python3 - "$BIN" "$RUNS" <<'PY'
import json, os, subprocess, sys, tempfile, time, urllib.request
bin_, runs = sys.argv[1], int(sys.argv[2])
yaml = """autoscaling: { evaluation_interval_s: 1 }
resource_pools:
  pools:
    - id: burst
      type: dynamic
      min_size: 0
      max_size: 4
      auto_scaling_enabled: true
      worker_template: { cpu_m: 1000, memory_mb: 1024, slots: 4 }
      scaling_policies:
        - { name: grow, trigger: queue_depth > 0, action: scale_up, window: 1s }
"""
results = []
for run in range(runs):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "hodei.yaml")
    open(cfg, "w").write(yaml)
    srv = subprocess.Popen([bin_, "server", "--config", cfg, "--data-dir", os.path.join(d, "data"), "--http-addr", "127.0.0.1:0",
                            "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"}, text=True)
    http = srv.stdout.readline().split()[1].split("=", 1)[1]
    token = open(os.path.join(d, "data", "admin.token")).read().strip()
    def call(method, path, body=None):
        r = urllib.request.Request(f"http://{http}/api/v1{path}", method=method, data=json.dumps(body).encode() if body else None,
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(r).read())
    # Start at a random point of the evaluation period, as a user would.
    time.sleep(0.5 + run * 0.13 % 1)
    t0 = time.time()
    job = call("POST", "/jobs", {"command": ["date", "+%s.%N"]})
    while True:
        page = call("GET", f"/jobs/{job['id']}/logs")
        if page["chunks"]:
            break
        time.sleep(0.005)
    started = float(page["chunks"][0]["data"]) - t0
    results.append(started)
    print(f"run {run + 1}: submit_to_running_s={started:.3f}", flush=True)
    srv.terminate(); srv.wait()
    subprocess.run(["rm", "-rf", d])
results.sort()
print(f"scaleup runs={runs} median_submit_to_running_s={results[len(results) // 2]:.3f} max={results[-1]:.3f}")
PY
