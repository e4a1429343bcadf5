#!/usr/bin/env bash
# Runs every `hodei bench` mode against a fresh release server on this machine.
# Usage: bench/run.sh [--postgres] [REPS=3]   — prints one line per mode and repetition.
# The built-in pool gets 32 slots (as Slurm's and SGE's 32 in ../shared/peers), jobs ask for
# cpu_m=1 so slots, not cpu, bound concurrency. With --postgres the server's store is a fresh
# database on a throwaway PostgreSQL cluster (Debian's pg_virtualenv) instead of SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--postgres" ]; then
    shift
    if [ -z "${PGHOST:-}" ]; then exec pg_virtualenv -t "$0" --postgres "$@"; fi
    POSTGRES=1
fi
REPS=${1:-3}
# HODEI_BIN=path runs another build (an A/B of two commits) instead of building this one.
if [ -z "${HODEI_BIN:-}" ]; then cargo build --release -q -p hodei; fi
BIN=${HODEI_BIN:-$PWD/target/release/hodei}
for rep in $(seq 1 "$REPS"); do
    DIR=$(mktemp -d)
    if [ -n "${POSTGRES:-}" ]; then
        DB="hodei_bench_${rep}_$$"
        psql -qc "CREATE DATABASE $DB"
        export HODEI_DATABASE__URL="postgres://$PGUSER:$PGPASSWORD@$PGHOST:${PGPORT:-5432}/$DB"
    fi
    HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS=32 RUST_LOG=warn "$BIN" server --data-dir "$DIR/data" \
        --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
    PID=$!
    for _ in $(seq 1 100); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
    HTTP=$(sed -n 's/^ready http=\([^ ]*\).*/\1/p' "$DIR/ready")
    export HODEI_SERVER="http://$HTTP" HODEI_DATA_DIR="$DIR/data"
    echo "# rep $rep${POSTGRES:+ (PostgreSQL $(psql -tAc 'SHOW server_version'))}"
    "$BIN" bench latency --runs 200
    "$BIN" bench submit --clients 1 --jobs 5000
    "$BIN" bench submit --clients 64 --jobs 20000
    "$BIN" bench batch --jobs 100000
    "$BIN" bench array --jobs 100000
    "$BIN" bench throughput --jobs 5000 --parallel 32
    kill "$PID"; wait "$PID" 2>/dev/null || true
    rm -rf "$DIR"
done
