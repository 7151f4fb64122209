#!/usr/bin/env bash
# Proxy throughput, side by side in one run: redis-benchmark against the
# primary directly, through the proxy with no sender, and through the proxy
# capturing into Kafka (tansu), asynchronously and with ack = "kafka" (each
# write's reply held until Kafka acknowledged its record), with writes spread
# over many keys and with all clients writing one key (key-lock contention).
#
#   bench/proxy.sh [REQUESTS] [PIPELINE]      (defaults: 200000, 16)
#
# Needs what scripts/setup.sh installs. Uses free ports from 17380 up and a
# temporary directory; stops everything it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUESTS="${1:-200000}"
PIPELINE="${2:-16}"
CLIENTS=50
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

cargo build --release --bin remoteback --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/remoteback"

redis-server --port 17380 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
start_tansu 17092
wait_port 17380
wait_port 17092
tansu_ready

cat >"$WORK/plain.toml" <<TOML
bindport = 17666
connport = 17380
TOML
cat >"$WORK/kafka.toml" <<TOML
bindport = 17667
connport = 17380
metrics = "127.0.0.1:17121"
[[sender]]
class = "KafkaSender"
topic = "bench"
bootstrap-servers = "127.0.0.1:17092"
TOML
cat >"$WORK/ack.toml" <<TOML
bindport = 17668
connport = 17380
ack = "kafka"
metrics = "127.0.0.1:17122"
[[sender]]
class = "KafkaSender"
topic = "bench-ack"
bootstrap-servers = "127.0.0.1:17092"
TOML
"$BIN" proxy --config "$WORK/plain.toml" 2>"$WORK/plain.log" &
PIDS+=($!)
"$BIN" proxy --config "$WORK/kafka.toml" 2>"$WORK/kafka.log" &
PIDS+=($!)
"$BIN" proxy --config "$WORK/ack.toml" 2>"$WORK/ack.log" &
PIDS+=($!)
wait_port 17666
wait_port 17667
wait_port 17668

rps() { # PORT TESTS KEYSPACE [PIPELINE]
    redis-benchmark -p "$1" -t "$2" -n "$REQUESTS" -P "${4:-$PIPELINE}" -c "$CLIENTS" -r "$3" --csv 2>/dev/null \
        | awk -F, 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); printf "%s=%s ", $1, $2 }'
}

# wait_backlog_empty, printing how long it took.
drain() { # METRICS_PORT
    local started=$SECONDS
    wait_backlog_empty "$1"
    echo "$((SECONDS - started))"
}

printf '%-30s %-9s %s\n' "target" "keys" "requests/s (redis-benchmark -n $REQUESTS -P $PIPELINE -c $CLIENTS)"
for keys in 1000000 1; do
    printf '%-30s %-9s %s\n' "primary directly" "$keys" "$(rps 17380 set,get,incr "$keys")"
    printf '%-30s %-9s %s\n' "proxy, no sender" "$keys" "$(rps 17666 set,get,incr "$keys")"
    printf '%-30s %-9s %s\n' "proxy, KafkaSender" "$keys" "$(rps 17667 set,get,incr "$keys")"
    echo "  (then $(drain 17121) s until Kafka acknowledged the $((2 * REQUESTS)) records)"
    printf '%-30s %-9s %s\n' "proxy, ack = kafka" "$keys" "$(rps 17668 set,get,incr "$keys")"
    printf '%-30s %-9s %s\n' "proxy, ack = kafka, -P 1" "$keys" "$(rps 17668 set,incr "$keys" 1)"
done
lost="$(curl -s 127.0.0.1:17121/health; curl -s 127.0.0.1:17122/health)"
echo "health of the two capturing proxies: $(echo "$lost" | tr '\n' ' ')"
