#!/usr/bin/env bash
# A server holding many queued jobs, killed with SIGKILL and started again: how long until its
# ready line, and its resident memory per queued job before and after.
# Then, with every job still queued: reads (one job, pages of the list, /queue, explain of a
# job that waits) from 8 clients, and submit → start of new jobs.
#   bench/restart.sh [--postgres] [ARRAYS [BATCHES]]
#                       ARRAYS held arrays of 100 000 jobs (default 10) and BATCHES held batches
#                       of 10 000 individual jobs (default 0); --postgres: the store is a fresh
#                       database on a throwaway PostgreSQL cluster (pg_virtualenv), not SQLite
# HODEI_BIN picks the binary (default: a release build of this checkout). The data dir is a
# temporary one on $TMPDIR's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--postgres" ]; then
    shift
    if [ -z "${PGHOST:-}" ]; then exec pg_virtualenv -t "$0" --postgres "$@"; fi
    DB="hodei_restart_$$"
    psql -qc "CREATE DATABASE $DB"
    export HODEI_DATABASE__URL="postgres://$PGUSER:$PGPASSWORD@$PGHOST:${PGPORT:-5432}/$DB"
fi
ARRAYS=${1:-10}
BATCHES=${2:-0}
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
DIR=$(mktemp -d)
PID=
# A clean stop at the end: it stops the built-in workers too (a kill -9 leaves them running).
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
GRPC=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Starts the server in the background; sets PID, HTTP and START_S (seconds to the ready line).
start() {
    : > "$DIR/ready"
    local t0; t0=$(date +%s.%N)
    RUST_LOG=error "$BIN" server --data-dir "$DIR/data" \
        --http-addr 127.0.0.1:0 --grpc-addr "$GRPC" --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2>"$DIR/stderr" &
    PID=$!
    until grep -q '^ready' "$DIR/ready" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || { cat "$DIR/stderr"; exit 1; }
        sleep 0.02
    done
    START_S=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')")
    HTTP=$(sed -n 's/^ready http=\([^ ]*\).*/\1/p' "$DIR/ready")
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
post() {
    curl -sf -o /dev/null -H "Authorization: Bearer $(cat "$DIR/data/admin.token")" -H 'Content-Type: application/json' \
        --data-binary "$2" "http://$HTTP/api/v1$1"
}

start
sleep 1
EMPTY=$(rss_kib)
# The queued jobs belong to a tenant of their own, so the default tenant's quota leaves room
# for the reads and submits measured below.
post /tenants '{"id": "bulk", "name": "bulk", "quota": {"max_queued_jobs": 100000000}}'
for _ in $(seq 1 "$ARRAYS"); do
    post /jobs '{"command": ["true"], "hold": true, "tenant_id": "bulk", "array": {"start": 0, "end": 99999}}'
done
python3 - "$DIR/batch.json" <<'PY'
import json, sys
job = json.dumps({"command": ["true"], "hold": True, "tenant_id": "bulk"})
with open(sys.argv[1], "w") as f:
    f.write('{"jobs": [' + ",".join([job] * 10000) + ']}')
PY
for _ in $(seq 1 "$BATCHES"); do post /jobs/batch @"$DIR/batch.json"; done
JOBS=$((ARRAYS * 100000 + BATCHES * 10000))
sleep 2
FULL=$(rss_kib)
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
AFTER=$(rss_kib)
DB=$(du -sm "$DIR/data" | cut -f1)
per_job() { python3 -c "print(round(($1 - $EMPTY) * 1024 / max($JOBS, 1)))"; }
STORE=sqlite; [ -n "${HODEI_DATABASE__URL:-}" ] && STORE=postgres
echo "store=$STORE jobs=$JOBS restart_to_ready_s=$START_S rss_empty_mib=$((EMPTY / 1024)) rss_per_job_b=$(per_job "$FULL") rss_per_job_after_restart_b=$(per_job "$AFTER") data_dir_mib=$DB"
# With all of them still queued: reads, and submit-to-start of new ones. A job that waits (its
# tenant runs one job at a time, and runs one) is what explain is asked about: its ETA runs the
# scheduler forward.
export HODEI_SERVER="http://$HTTP" HODEI_TOKEN; HODEI_TOKEN=$(cat "$DIR/data/admin.token")
post /tenants '{"id": "one", "name": "one", "quota": {"max_concurrent_jobs": 1}}'
post /jobs '{"command": ["sleep", "600"], "tenant_id": "one"}'
WAITING=$(curl -sf -H "Authorization: Bearer $HODEI_TOKEN" -H 'Content-Type: application/json' \
    --data-binary '{"command": ["true"], "tenant_id": "one"}' "http://$HTTP/api/v1/jobs" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
"$BIN" bench read --clients 8 --reads 20000
"$BIN" bench read --clients 8 --reads 4000 --path "/jobs?limit=50"
"$BIN" bench read --clients 8 --reads 4000 --path "/jobs?tenant_id=bulk&state=held&limit=50"
"$BIN" bench read --clients 8 --reads 4000 --path "/queue"
"$BIN" bench read --clients 8 --reads 4000 --path "/jobs/$WAITING/explain"
"$BIN" bench latency --runs 200
