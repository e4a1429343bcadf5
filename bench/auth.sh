#!/usr/bin/env bash
# Cost of token authentication: submit and read throughput on one fresh release server with the
# admin token (one constant-time compare) and with an API token of a researcher (SHA-256, cache
# lookup, tenant scoping), alternating so both see the same machine and the same table sizes.
# Usage: bench/auth.sh [REPS=3]   — prints one line per mode, token and repetition.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
cargo build --release -q -p hodei
BIN=$PWD/target/release/hodei
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS=32 RUST_LOG=warn "$BIN" server --data-dir "$DIR/data" \
    --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$DIR/ready" 2> "$DIR/server.log" &
PID=$!
for _ in $(seq 1 100); do grep -q '^ready' "$DIR/ready" 2>/dev/null && break; sleep 0.1; done
HTTP=$(sed -n 's/^ready http=\([^ ]*\).*/\1/p' "$DIR/ready")
export HODEI_SERVER="http://$HTTP"
ADMIN=$(cat "$DIR/data/admin.token")
PRINCIPAL=$(HODEI_TOKEN=$ADMIN "$BIN" principals create bench --role researcher=tenant:default -o json | sed -n 's/.*"id": "\([^"]*\)".*/\1/p' | head -1)
API=$(HODEI_TOKEN=$ADMIN "$BIN" tokens create bench --principal "$PRINCIPAL" 2>/dev/null)
for rep in $(seq 1 "$REPS"); do
    # The server's tables grow with every round: the order flips each repetition.
    if [ $((rep % 2)) = 1 ]; then ORDER="admin api"; else ORDER="api admin"; fi
    for who in $ORDER; do
        if [ "$who" = admin ]; then TOKEN=$ADMIN; else TOKEN=$API; fi
        echo "# rep $rep, $who token"
        HODEI_TOKEN=$TOKEN "$BIN" bench submit --clients 1 --jobs 3000
        HODEI_TOKEN=$TOKEN "$BIN" bench submit --clients 64 --jobs 20000
        HODEI_TOKEN=$TOKEN "$BIN" bench read --clients 64 --reads 50000
    done
done
