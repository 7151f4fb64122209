#!/usr/bin/env bash
# The applier's raw pipelined connection to the backup against the `redis`
# crate's atomic pipeline, side by side in one run: the same transactions
# of 1000 SETs (what the applier sends per batch), alternating rounds,
# medians (crates/replay/examples/backup_pipeline.rs).
#
#   bench/backup-connection.sh [TRANSACTIONS]      (default: 200)
#
# Needs redis-server (scripts/setup.sh installs it). Uses port 17390 and a
# temporary directory; stops what it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRANSACTIONS="${1:-200}"
PORT=17390
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

cargo build --release -p remoteback-replay --example backup_pipeline \
    --manifest-path "$ROOT/Cargo.toml" >&2
redis-server --port "$PORT" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT"
EXAMPLE="$ROOT/target/release/examples/backup_pipeline"
"$EXAMPLE" "$PORT" "$TRANSACTIONS"
# The client's own work, repeatable: instructions per record under callgrind
# (both connect, each applies 20 transactions).
if command -v valgrind >/dev/null; then
    for client in raw crate; do
        out="$WORK/callgrind.$client"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$EXAMPLE" "$PORT" 20 "$client" 2>/dev/null
        total="$(awk '/^summary:/ { print $2 }' "$out")"
        printf 'instructions per record, %s client: %.0f\n' "$client" "$(echo "$total / 20000" | bc -l)"
    done
fi
