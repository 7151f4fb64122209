#!/usr/bin/env bash
# Compares proxy builds side by side in one run: each build in turn, as a
# proxy with a KafkaSender (PROTOCOL) in front of one Redis and one tansu,
# takes the same redis-benchmark cases (50 clients); the builds alternate
# over ROUNDS rounds. Prints, per case and build, the requests/s and the
# proxy's CPU time per request (from /proc/PID/stat: less noisy than the
# rate on a shared machine) of every round, and their medians; also the
# broker's CPU time per request (tansu's, the case's records until Kafka
# acknowledged them) and the records per Kafka message.
#
#   bench/compare.sh BIN [BIN...]
#
#   ROUNDS   rounds (default 5)
#   CASES    space-separated, from: set-hot-16 set-16 set-hot-1 set-1
#            get-16 get-1 (default: all; "hot" is one key for all clients,
#            the others are random keys; the number is the pipeline depth)
#   ENV_<i>  environment for the i-th build (1-based), such as
#            ENV_2="REMOTEBACK_LOG=debug"
#   PROXY_<i>  lines added to the top of the i-th build's configuration,
#            such as PROXY_2="worker_threads = 2"
#   SENDER_<i>  lines added to the i-th build's [[sender]], such as
#            SENDER_1="pack_gap_ms = 0" (one binary may be given twice)
#
# A BIN is a `remoteback` binary (build each commit with `cargo build
# --release` and copy target/release/remoteback aside). After each case the
# script waits until Kafka acknowledged everything the proxy captured, so
# no case pays for the previous one's backlog.
#
# Needs what scripts/setup.sh installs. Uses ports 17520-17523 and a
# temporary directory; stops everything it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

if [ $# -eq 0 ]; then
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
for bin in "$@"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
ROUNDS="${ROUNDS:-5}"
CASES="${CASES:-set-hot-16 set-16 set-hot-1 set-1 get-16 get-1}"
P_REDIS=17520 P_KAFKA=17521 P_PROXY=17522 P_METRICS=17523
require_free $P_REDIS $P_KAFKA $P_PROXY $P_METRICS
TICKS="$(getconf CLK_TCK)"

redis-server --port $P_REDIS --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
start_tansu $P_KAFKA
TANSU_PID=$!
wait_port $P_REDIS
wait_port $P_KAFKA
tansu_ready
cat >"$WORK/proxy.toml" <<TOML
bindport = $P_PROXY
connport = $P_REDIS
message = "PROTOCOL"
metrics = "127.0.0.1:$P_METRICS"
[[sender]]
class = "KafkaSender"
topic = "compare"
bootstrap-servers = "127.0.0.1:$P_KAFKA"
TOML

# rps's arguments for a case: TEST REQUESTS PIPELINE [KEYSPACE].
case_args() { # CASE
    local test="${1%%-*}" depth="${1##*-}" keys=1000000 n=100000
    [[ "$1" == *-hot-* ]] && keys=""
    [ "$depth" = 1 ] && n=20000
    echo "$test $n $depth $keys"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# µs of CPU per request: TICKS REQUESTS
per_request() { awk -v t="$1" -v hz="$TICKS" -v n="$2" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}'; }

declare -A RATE CPU BROKER PACKED
for round in $(seq 1 "$ROUNDS"); do
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        env_name="ENV_$i" proxy_name="PROXY_$i" sender_name="SENDER_$i"
        { echo "${!proxy_name:-}"; cat "$WORK/proxy.toml"; echo "${!sender_name:-}"; } >"$WORK/proxy-$i.toml"
        # shellcheck disable=SC2086
        env ${!env_name:-} "$bin" proxy --config "$WORK/proxy-$i.toml" 2>"$WORK/proxy-$i.log" &
        pid=$!
        wait_port $P_PROXY
        # The producer's first message waits for its setup (idempotence):
        # a first case would gather its records into a few messages.
        rps $P_PROXY set 1000 1 >/dev/null
        wait_backlog_empty $P_METRICS
        for c in $CASES; do
            read -r test n depth keys <<<"$(case_args "$c")"
            before="$(cpu_ticks $pid)" broker="$(cpu_ticks $TANSU_PID)"
            records="$(metric $P_METRICS remoteback_proxy_records_delivered_total)"
            messages="$(metric $P_METRICS remoteback_proxy_kafka_messages_total)"
            rate="$(rps $P_PROXY "$test" "$n" "$depth" "$keys")"
            after="$(cpu_ticks $pid)"
            wait_backlog_empty $P_METRICS
            broker=$(($(cpu_ticks $TANSU_PID) - broker))
            records=$(($(metric $P_METRICS remoteback_proxy_records_delivered_total) - records))
            messages=$(($(metric $P_METRICS remoteback_proxy_kafka_messages_total) - messages))
            RATE[$c:$i]+="$rate "
            CPU[$c:$i]+="$(per_request $((after - before)) "$n") "
            BROKER[$c:$i]+="$(per_request $broker "$n") "
            PACKED[$c:$i]+="$((records / (messages > 0 ? messages : 1))) "
        done
        kill $pid
        wait $pid 2>/dev/null || true
        echo "round $round: build $i done" >&2
    done
done

echo "| Case | Build | requests/s (median; rounds) | proxy CPU per request (median; rounds) | broker CPU per request | records per message |"
echo "|---|---|---|---|---|---|"
for c in $CASES; do
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        env_name="ENV_$i" proxy_name="PROXY_$i" sender_name="SENDER_$i"
        setting="${!env_name:-}${!proxy_name:+ ${!proxy_name}}${!sender_name:+ ${!sender_name}}"
        # shellcheck disable=SC2086
        echo "| $c | $i: $bin${setting:+ (${setting# })} | $(median ${RATE[$c:$i]}); ${RATE[$c:$i]% } | $(median ${CPU[$c:$i]}) µs; ${CPU[$c:$i]% } | $(median ${BROKER[$c:$i]}) µs | $(median ${PACKED[$c:$i]}) |"
    done
done
