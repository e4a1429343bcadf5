#!/usr/bin/env bash
# Endurance: a fresh release server under a steady stream of trivial jobs from many tenants, with
# a retention short enough to delete jobs during the run. Samples the server's resident memory,
# open file descriptors and data-dir size every few seconds, then waits for the queue to drain
# and checks that every submitted job succeeded exactly once (the server's own counters).
#   bench/soak.sh [--minutes 60] [--rate 100] [--tenants 1000] [--retention-s 300] [--memory-slack 10]
# Fails (exit 1) when, after the warm-up (two retention periods, at least a quarter of the run),
# memory or descriptors (± 5 for connections in flight) end more than 10 % (--memory-slack) from
# where they stood after the warm-up (the median of the last quarter of those samples against the
# median of the first), or stray more than 2.5 times that at any sample, the data dir grows past
# 1.5 times its size then (plus 8 MiB), or a job is missing or counted twice.
# HODEI_BIN picks the binary (default: a release build of this checkout). Prints one line per
# sample and a summary; the samples are also written to $SOAK_CSV if set, and SOAK_KEEP=1
# keeps the data dir.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=60 RATE=100 TENANTS=1000 RETENTION_S=300 SLACK=10
while [ $# -gt 0 ]; do
    case "$1" in
        --memory-slack) SLACK=$2; shift 2 ;;
        --minutes) MINUTES=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --tenants) TENANTS=$2; shift 2 ;;
        --retention-s) RETENTION_S=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
PID=
# SOAK_KEEP=1 keeps the data dir (its path is printed) for a look afterwards.
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; if [ -n "${SOAK_KEEP:-}" ]; then echo "data dir kept: $DIR/data"; else rm -rf "$DIR"; fi' EXIT
RETENTION_DAYS=$(python3 -c "print($RETENTION_S / 86400)")
HODEI_JOBS__RETENTION_DAYS=$RETENTION_DAYS HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS=32 \
HODEI_MULTI_TENANCY__DEFAULT_TENANT_QUOTA__MAX_QUEUED_JOBS=100000 RUST_LOG=warn \
    "$BIN" server --data-dir "$DIR/data" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
    > "$DIR/ready" 2> "$DIR/server.log" &
PID=$!
for _ in $(seq 1 300); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DIR/ready" || { cat "$DIR/server.log"; exit 1; }
field() { sed -n "s/^ready.* $1=\([^ ]*\).*/\1/p;s/^ready $1=\([^ ]*\).*/\1/p" "$DIR/ready" | head -1; }
export SOAK_HTTP SOAK_METRICS SOAK_TOKEN SOAK_PID=$PID SOAK_DATA=$DIR/data
SOAK_HTTP=$(field http) SOAK_METRICS=$(field metrics) SOAK_TOKEN=$(cat "$DIR/data/admin.token")
python3 - "$MINUTES" "$RATE" "$TENANTS" "$RETENTION_S" "$SLACK" <<'PY'
import json, os, sys, threading, time, urllib.request, urllib.error

minutes, rate, tenants, retention_s, slack = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]) / 100
http, metrics, token, pid, data = (os.environ[k] for k in ("SOAK_HTTP", "SOAK_METRICS", "SOAK_TOKEN", "SOAK_PID", "SOAK_DATA"))
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(f"http://{http}/api/v1{path}", method=method, headers=auth,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")

names = [f"soak-{i:04d}" for i in range(tenants)]
for n in names:
    status, body = call("POST", "/tenants", {"id": n, "name": n})
    if status not in (200, 201):
        sys.exit(f"creating tenant {n}: {status} {body}")

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))

def disk_kib():
    total = 0
    for root, _, files in os.walk(data):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks // 2
            except FileNotFoundError:
                pass
    return total

def completed():
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as r:
        text = r.read().decode()
    by_state = {}
    for line in text.splitlines():
        if line.startswith("hodei_jobs_completed_total{"):
            labels, value = line.rsplit(" ", 1)
            state = labels.split('state="', 1)[1].split('"', 1)[0]
            by_state[state] = by_state.get(state, 0) + float(value)
    return by_state

submitted, refused, lock, stop = [0], [], threading.Lock(), threading.Event()
# Four clients share the rate, each keeping its own schedule (no catching up after a stall).
def client(k, clients=4):
    period, nxt, i = clients / rate, time.monotonic(), k
    while not stop.is_set():
        status, body = call("POST", "/jobs", {"command": ["true"], "tenant_id": names[i % tenants]})
        with lock:
            if status == 201:
                submitted[0] += 1
            else:
                refused.append((status, body))
        i += clients
        nxt = max(nxt + period, time.monotonic() - period)
        time.sleep(max(0.0, nxt - time.monotonic()))

threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
start = time.monotonic()
for t in threads:
    t.start()
samples, every = [], max(2.0, min(30.0, minutes * 60 / 60))
print("elapsed_s submitted rss_mib fds disk_mib", flush=True)
while time.monotonic() - start < minutes * 60:
    time.sleep(every)
    s = (round(time.monotonic() - start), submitted[0], rss_kib(), fds(), disk_kib())
    samples.append(s)
    print(f"{s[0]} {s[1]} {s[2] / 1024:.1f} {s[3]} {s[4] / 1024:.1f}", flush=True)
stop.set()
for t in threads:
    t.join()
deadline = time.monotonic() + 300
while True:
    done = completed()
    if sum(done.values()) >= submitted[0] or time.monotonic() > deadline:
        break
    time.sleep(1)
if os.environ.get("SOAK_CSV"):
    with open(os.environ["SOAK_CSV"], "w") as f:
        f.write("elapsed_s,submitted,rss_kib,fds,disk_kib\n" + "".join(",".join(map(str, s)) + "\n" for s in samples))

warm_s = max(2 * retention_s, minutes * 60 / 4)
after = [s for s in samples if s[0] >= warm_s]
problems = []
if refused:
    problems.append(f"{len(refused)} submits refused, e.g. {refused[0]}")
if len(after) < 2:
    problems.append("the run is too short to judge flatness after the warm-up")
else:
    # Flat: the median of the last quarter of the samples within the slack of the median of the
    # first quarter after the warm-up, and no single sample 2.5 times the slack off it. Medians,
    # not one sample: resident memory swings with each retention round (±15 % at 100 jobs/s) and
    # the allocator keeps a few MiB for a while after a burst, so a single sample where the
    # warm-up ends may sit on a peak or in a trough. Descriptors get 5 more: the clients' and the
    # scrape's connections come and go.
    quarter = max(1, len(after) // 4)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    for idx, name, extra in ((2, "resident memory (KiB)", 0), (3, "open descriptors", 5)):
        lo, hi = min(s[idx] for s in after), max(s[idx] for s in after)
        start, end = median([s[idx] for s in after[:quarter]]), median([s[idx] for s in after[-quarter:]])
        print(f"{name}: {start} over the first quarter after the warm-up, {end} over the last, {lo}..{hi} in all", flush=True)
        if not start * (1 - slack) - extra <= end <= start * (1 + slack) + extra:
            problems.append(f"{name} moved more than {slack:.0%} after the warm-up: {start} -> {end} (medians of the first and last quarters)")
        if hi > start * (1 + 2.5 * slack) + extra or lo < start * (1 - 2.5 * slack) - extra:
            problems.append(f"{name} went more than {2.5 * slack:.0%} off after the warm-up: {start} -> {lo}..{hi}")
    base, top = median([s[4] for s in after[:quarter]]), max(s[4] for s in after)
    print(f"data dir: {base / 1024:.1f} MiB after the warm-up, at most {top / 1024:.1f} MiB after", flush=True)
    if top > base * 1.5 + 8 * 1024:
        problems.append(f"the data dir grew from {base} to {top} KiB")
succeeded = done.get("succeeded", 0)
others = {k: v for k, v in done.items() if k != "succeeded" and v}
print(f"submitted {submitted[0]}, succeeded {succeeded:.0f}, other ends {others or 'none'}", flush=True)
if succeeded != submitted[0] or others:
    problems.append(f"accounting: {submitted[0]} submitted, {succeeded:.0f} succeeded, {others}")
for p in problems:
    print("FAIL:", p, flush=True)
sys.exit(1 if problems else 0)
PY
