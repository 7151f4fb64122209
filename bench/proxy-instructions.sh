#!/usr/bin/env bash
# Instructions the proxy executes per command, counted by valgrind's
# callgrind: repeatable on a noisy machine, unlike requests/s. The proxy
# captures every write to a LogSender whose level is not logged, so the
# whole path runs (parsing, verdict, ordering, capture, encoding) without
# Kafka's threads in the count. Each binary given is measured on the same
# workload (redis-benchmark SET and GET, random keys, pipelined).
#
#   bench/proxy-instructions.sh [BINARY...]      (default: this tree's release build)
#   REQUESTS=20000 bench/proxy-instructions.sh target/release/remoteback /tmp/old/remoteback
#
# Needs valgrind and redis-server/redis-benchmark. Uses ports 17391-17392
# and a temporary directory; stops what it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUESTS="${REQUESTS:-20000}"
PIPELINE="${PIPELINE:-16}"
CLIENTS=50
REDIS_PORT=17391
PROXY_PORT=17392
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [ "$#" -eq 0 ]; then
    cargo build --release --bin remoteback --manifest-path "$ROOT/Cargo.toml" >&2
    set -- "$ROOT/target/release/remoteback"
fi

redis-server --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
cat >"$WORK/proxy.toml" <<TOML
bindport = $PROXY_PORT
connport = $REDIS_PORT
[[sender]]
class = "LogSender"
logger = "bench"
level = "trace"
TOML

printf '%-50s %14s %16s\n' "binary" "instructions" "per request"
for bin in "$@"; do
    out="$WORK/callgrind.$(basename "$bin").$$"
    REMOTEBACK_LOG=warn,bench=off valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" proxy --config "$WORK/proxy.toml" 2>"$WORK/valgrind.log" &
    pid=$!
    wait_port "$PROXY_PORT" 60
    redis-benchmark -p "$PROXY_PORT" -t set,get -n "$REQUESTS" -P "$PIPELINE" -c "$CLIENTS" -r 100000 -q >/dev/null
    kill -INT "$pid"
    wait "$pid" || true
    total="$(awk '/^summary:/ { print $2 }' "$out")"
    printf '%-50s %14s %16.0f\n' "$bin" "$total" "$(echo "$total / (2 * $REQUESTS)" | bc -l)"
    # Let the port close before the next binary binds it.
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null || break; sleep 0.1; done
done
