#!/usr/bin/env bash
# `remoteback sync` on this machine: how fast the proxy copies an existing
# dataset into Kafka, and what clients writing through the proxy meanwhile
# see (redis-benchmark latency percentiles), against the same clients with
# no sync running, side by side in one run.
#
#   bench/sync.sh [KEYS] [REQUESTS]      (defaults: 1000000, 200000)
#
# The primary is filled with KEYS small strings (DEBUG POPULATE). The broker
# is a local tansu, which takes some thousands of records a second: the
# sync's rate here is the broker's, the figure that matters on a real Kafka
# cluster is the one with a sender that writes nothing ("LogSender off"). Needs what
# scripts/setup.sh installs; uses ports from 17440 up; stops what it starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYS="${1:-1000000}"
REQUESTS="${2:-200000}"
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

require_free 17094 17440 17441 17442 17443 17444
cargo build --release --bin remoteback --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/remoteback"

redis-server --port 17440 --save "" --appendonly no --dir "$WORK" \
    --enable-debug-command yes >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
start_tansu 17094
wait_port 17440
wait_port 17094
tansu_ready

# One proxy copies into Kafka; the other has a sender that writes nothing
# (a LogSender whose level is off), so its rate is the proxy's own.
cat >"$WORK/kafka.toml" <<TOML
bindport = 17441
connport = 17440
metrics = "127.0.0.1:17443"
[[sender]]
class = "KafkaSender"
topic = "bench-sync"
bootstrap-servers = "127.0.0.1:17094"
TOML
cat >"$WORK/log.toml" <<TOML
bindport = 17442
connport = 17440
metrics = "127.0.0.1:17444"
[[sender]]
class = "LogSender"
logger = "bench.sync"
level = "trace"
TOML
"$BIN" proxy --config "$WORK/kafka.toml" 2>"$WORK/kafka.log" &
PIDS+=($!)
REMOTEBACK_LOG=info,bench.sync=off "$BIN" proxy --config "$WORK/log.toml" 2>"$WORK/log.log" &
PIDS+=($!)
wait_port 17441
wait_port 17442

redis-cli -p 17440 DEBUG POPULATE "$KEYS" key 64 >/dev/null
echo "primary: $(redis-cli -p 17440 DBSIZE) keys"

# p50, p99 and max latency (ms) and requests/s of SET and GET through PORT.
latency() { # PORT
    redis-benchmark -p "$1" -t set,get -n "$REQUESTS" -c 50 -r 100000 --csv 2>/dev/null \
        | awk -F, 'NR > 1 { gsub(/"/, ""); printf "%s %s/s p50 %s p99 %s max %s ms; ", $1, $2, $5, $7, $8 }'
}

# Starts a sync on the proxy with admin address ADMIN, runs the benchmark
# through PORT meanwhile, waits for the sync and prints both.
during_sync() { # PORT ADMIN
    "$BIN" sync --proxy "$2" --detach >/dev/null
    local during
    during="$(latency "$1")"
    "$BIN" sync --proxy "$2" --status >/dev/null
    until "$BIN" sync --proxy "$2" --status | grep -qv '^sync running'; do sleep 0.5; done
    echo "  clients during the sync: $during"
    echo "  $("$BIN" sync --proxy "$2" --status)"
}

echo "clients through the proxy, no sync:  $(latency 17442)"
echo "sync through the proxy, LogSender off (the proxy's own rate):"
during_sync 17442 127.0.0.1:17444
echo "sync through the proxy, KafkaSender to a local tansu:"
during_sync 17441 127.0.0.1:17443
