#!/usr/bin/env bash
# The bench suite, one command: starts a primary and a backup Redis, the
# tansu broker, twemproxy (nutcracker, one server pool: the primary) and
# remoteback (proxy with a KafkaSender, replay, PROTOCOL), then measures
#
#   - redis-benchmark (SET and GET, -P 1 and -P 16, 50 clients) against the
#     primary directly, twemproxy and remoteback, alternating over five
#     rounds (the order rotates each round): medians and ratios;
#   - the replication lag (probe SET acknowledged by the proxy until the
#     backup's keyspace notification) idle and under a steady 20,000
#     writes/s;
#   - sustained replication: pipelining clients for 60 s, writes/s accepted
#     by the proxy and applied by the replay, the backlog and the replay's
#     lag as it goes;
#   - the replay alone: a fresh replay applying a pre-filled topic;
#   - the broker's own ceiling: records/s one bare librdkafka producer gets
#     into tansu, so remoteback's limit can be told from the broker's;
#   - the proxy's RSS, fresh, with 1,000 idle clients and with 50 busy ones;
#   - SET on one hot key against random keys, through remoteback (five
#     alternating rounds);
#   - SET through twemproxy, through a second remoteback proxy that
#     captures to a LogSender whose logger is off (the whole capture path,
#     no Kafka) and through remoteback with the replay stopped meanwhile
#     (three alternating rounds): what the proxy costs, and what Kafka's
#     side and the replay's processes on the same cores take.
#
#   bench/suite.sh [--quick] [--out FILE]
#
# TANSU_STORAGE picks tansu's store (default its sqlite store), TANSU_DIR
# where it lives (default memory-backed /dev/shm; see bench/common.sh).
# PROXY_SETTINGS adds lines to the top of the measured proxy's configuration (PROXY_SETTINGS="worker_threads = 2"), for an A/B of
# a setting; the results' first line shows them.
# --quick uses small counts and short phases (to check the script; its
# sustained phase stops at 20,000 writes); the full run takes about
# 4 minutes on 2 cores after the build, a minute of it the sustained phase.
# A proxy that loses a record (the broker refused it, or a full backlog
# dropped it) stops the suite: the figures after it would not mean what
# they say. Before each
# measurement the suite waits until Kafka acknowledged every record and the
# replay applied it, so no run pays for the previous one's backlog. It prints
# one line per step on stderr and a Markdown table of the results at the
# end on stdout (also written to FILE with --out).
#
# Needs what scripts/setup.sh installs (redis-server, redis-benchmark,
# tansu, python3, curl); installs nutcracker with apt-get when missing. Uses
# ports 17500-17512 and a temporary directory; stops everything it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT="$2"; shift ;;
        *) echo "usage: bench/suite.sh [--quick] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done

CLIENTS=50
# Five rounds, each long enough to span several of the machine's swings:
# with three of 20,000 requests at -P 1 (half a second each), one target's
# rounds ranged from 32k to 54k requests/s in one run.
ROUNDS=5
# The hot-key ratio moved by 0.1 between runs with three short rounds:
# five, and longer ones at -P 1.
HOT_ROUNDS=5
# SET's parts: a view of the costs, not a target.
PARTS_ROUNDS=3
if [ "$QUICK" = 1 ]; then
    N1=5000 N16=10000 NHOT16=5000 NHOT1=2000
    LAG_RATE=2000 LAG_IDLE=2 LAG_LOAD=3 LAG_TAIL=2
    SUSTAIN=6 SUS_N=20000 NPREFILL=50000 NCEIL=5000 IDLE_CLIENTS=1000
    DRAIN_MAX=300
else
    # Every write captured costs the drains before the next measurement:
    # the counts stay moderate.
    N1=60000 N16=300000 NHOT16=50000 NHOT1=30000
    LAG_RATE=20000 LAG_IDLE=10 LAG_LOAD=15 LAG_TAIL=10
    SUSTAIN=60 SUS_N=2000000000 NPREFILL=1000000 NCEIL=50000 IDLE_CLIENTS=1000
    DRAIN_MAX=900
fi

P_PRIMARY=17500 P_BACKUP=17501 P_BACKUP2=17502 P_KAFKA=17503 P_TWEM=17504
P_PROXY=17505 P_PROXY_M=17506 P_REPLAY_M=17507 P_PRE=17508 P_PRE_M=17509
P_REPLAY2_M=17510 P_TWEM_STATS=17511 P_LOGP=17512

step() { printf '[suite %s] %s\n' "$(date +%T)" "$*" >&2; }

# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
require_free $P_PRIMARY $P_BACKUP $P_BACKUP2 $P_KAFKA $P_TWEM $P_PROXY $P_PROXY_M \
    $P_REPLAY_M $P_PRE $P_PRE_M $P_REPLAY2_M $P_TWEM_STATS $P_LOGP

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED_AT="$(date -u '+%Y-%m-%d %H:%M UTC')"
START_EPOCH="$(date +%s)"

if ! command -v nutcracker >/dev/null; then
    step "installing nutcracker (twemproxy) from Debian"
    sudo_=()
    [ "$(id -u)" = 0 ] || sudo_=(sudo)
    "${sudo_[@]}" apt-get install -y nutcracker >"$WORK/apt.log" 2>&1 \
        || { cat "$WORK/apt.log" >&2; exit 1; }
fi

step "building remoteback and bench/load (release)"
cargo build --release --bin remoteback --manifest-path "$ROOT/Cargo.toml" 2>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
cargo build --release --manifest-path "$ROOT/bench/load/Cargo.toml" 2>>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
target_dir() { # MANIFEST
    cargo metadata --format-version 1 --no-deps --manifest-path "$1" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
BIN="$(target_dir "$ROOT/Cargo.toml")/release/remoteback"
LOAD="$(target_dir "$ROOT/bench/load/Cargo.toml")/release/remoteback-load"

# name=pid of the long-running processes, for their CPU time at the end
# and to notice one that exited; LOG_OF[name] is its log.
CPU_PIDS=()
declare -A LOG_OF
cpu_seconds() { # PID: user + system CPU seconds so far
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.0f", ($12 + $13) / hz }' "/proc/$1/stat"
}

step "starting primary, backups, tansu, twemproxy"
for port in $P_PRIMARY $P_BACKUP $P_BACKUP2; do
    mkdir -p "$WORK/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis-$port" >"$WORK/redis-$port.log" 2>&1 &
    PIDS+=($!)
    CPU_PIDS+=("redis-server :$port=$!")
    LOG_OF["redis-server :$port"]="$WORK/redis-$port.log"
done
start_tansu $P_KAFKA
CPU_PIDS+=("tansu=$!")
LOG_OF[tansu]="$WORK/tansu.log"
cat >"$WORK/nutcracker.yml" <<YAML
bench:
  listen: 127.0.0.1:$P_TWEM
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  timeout: 10000
  preconnect: true
  servers:
    - 127.0.0.1:$P_PRIMARY:1
YAML
nutcracker -c "$WORK/nutcracker.yml" -s $P_TWEM_STATS -a 127.0.0.1 \
    -o "$WORK/nutcracker.log" -p "$WORK/nutcracker.pid" &
PIDS+=($!)
CPU_PIDS+=("twemproxy=$!")
LOG_OF[twemproxy]="$WORK/nutcracker.log"
wait_port $P_PRIMARY
wait_port $P_BACKUP
wait_port $P_BACKUP2
wait_port $P_KAFKA 30
wait_port $P_TWEM
tansu_ready

step "starting remoteback proxy and replay"
cat >"$WORK/proxy.toml" <<TOML
${PROXY_SETTINGS:-}
bindport = $P_PROXY
connport = $P_PRIMARY
message = "PROTOCOL"
metrics = "127.0.0.1:$P_PROXY_M"
[[sender]]
class = "KafkaSender"
topic = "bench"
bootstrap-servers = "127.0.0.1:$P_KAFKA"
TOML
cat >"$WORK/replay.toml" <<TOML
message = "PROTOCOL"
metrics = "127.0.0.1:$P_REPLAY_M"
[receiver]
class = "KafkaReceiver"
topic = "bench"
bootstrap-servers = "127.0.0.1:$P_KAFKA"
# As scripts/up.sh: tansu holds each fetch for the whole wait.
fetch-wait-max-ms = 2
[redis]
connport = $P_BACKUP
TOML
"$BIN" proxy --config "$WORK/proxy.toml" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($!)
CPU_PIDS+=("proxy=$!")
LOG_OF[proxy]="$WORK/proxy.log"
"$BIN" replay --config "$WORK/replay.toml" 2>"$WORK/replay.log" &
REPLAY_PID=$!
PIDS+=($!)
CPU_PIDS+=("replay=$!")
LOG_OF[replay]="$WORK/replay.log"
wait_port $P_PROXY 60
wait_port $P_REPLAY_M 30

rss_kib() { # PID
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}
mib() { # KIB
    awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'
}
# Stops the suite if a service exited or the proxy lost records (Kafka
# gave up on them): the figures after that would not mean what they say.
check() {
    local np name lost
    for np in "${CPU_PIDS[@]}"; do
        name="${np%%=*}"
        if ! kill -0 "${np#*=}" 2>/dev/null; then
            step "ERROR: $name exited; the end of its log:"
            tail -n 20 "${LOG_OF[$name]}" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 >&2
            exit 1
        fi
    done
    lost=$(($(metric $P_PROXY_M remoteback_proxy_records_failed_total) + $(metric $P_PROXY_M remoteback_proxy_records_dropped_total)))
    if [ "$lost" -gt 0 ]; then
        step "ERROR: the proxy lost $lost records (Kafka did not take them); stopping. The proxy's errors:"
        grep -E 'ERROR' "$WORK/proxy.log" | tail -n 5 | cut -c1-300 >&2
        exit 1
    fi
}
# Waits until Kafka acknowledged every record of the proxy and the replay
# applied them all; prints the seconds that took.
drain() {
    local started=$SECONDS backlog delivered applied
    while :; do
        check
        backlog="$(metric $P_PROXY_M remoteback_proxy_backlog_bytes)"
        delivered="$(metric $P_PROXY_M remoteback_proxy_records_delivered_total)"
        applied="$(metric $P_REPLAY_M remoteback_replay_commands_applied_total)"
        if [ "$backlog" = 0 ] && [ "$applied" -ge "$delivered" ]; then break; fi
        if [ $((SECONDS - started)) -ge "$DRAIN_MAX" ]; then
            step "WARNING: not drained after $DRAIN_MAX s (backlog $backlog B, delivered $delivered, applied $applied)"
            break
        fi
        sleep 0.5
    done
    echo $((SECONDS - started))
}
kfmt() { # N: 123456 -> 123k
    awk -v n="$1" 'BEGIN { if (n >= 10000) printf "%.0fk", n / 1000; else if (n >= 1000) printf "%.1fk", n / 1000; else printf "%.0f", n }'
}
ratio() { # A B
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
}
# Samples the proxy's VmRSS every 0.2 s into FILE until stopped.
rss_sampler() { # FILE
    while :; do rss_kib "$PROXY_PID" >>"$1"; sleep 0.2; done
}
max_of() { # FILE
    sort -n "$1" | tail -n 1
}

# The proxy's RSS, fresh and with idle clients.
RSS_FRESH="$(rss_kib $PROXY_PID)"
step "RSS: $IDLE_CLIENTS idle clients on the proxy"
"$LOAD" idle --addr 127.0.0.1:$P_PROXY --clients "$IDLE_CLIENTS" --seconds 600 >"$WORK/idle.out" 2>&1 &
IDLE_PID=$!
PIDS+=($!)
for _ in $(seq 1 600); do grep -q '^ready=' "$WORK/idle.out" && break; sleep 0.1; done
grep -q '^ready=' "$WORK/idle.out" || { cat "$WORK/idle.out" >&2; exit 1; }
sleep 1
RSS_IDLE="$(rss_kib $PROXY_PID)"
IDLE_SEEN="$(metric $P_PROXY_M remoteback_proxy_clients)"
kill "$IDLE_PID"
wait "$IDLE_PID" 2>/dev/null || true

# redis-benchmark rounds: direct, twemproxy, remoteback, the order rotating.
declare -A RES
TARGETS=(direct twemproxy remoteback)
declare -A PORT_OF=([direct]=$P_PRIMARY [twemproxy]=$P_TWEM [remoteback]=$P_PROXY)
CASES=("set 1 $N1" "get 1 $N1" "set 16 $N16" "get 16 $N16")
RSS_SET16=0 RSS_GET16=0
for round in $(seq 1 $ROUNDS); do
    for c in "${CASES[@]}"; do
        read -r test pipeline n <<<"$c"
        for i in 0 1 2; do
            target="${TARGETS[$(((i + round - 1) % 3))]}"
            drained="$(drain)"
            if [ "$target" = remoteback ] && [ "$pipeline" = 16 ]; then
                : >"$WORK/rss.samples"
                rss_sampler "$WORK/rss.samples" &
                sampler=$!
                PIDS+=($!)
            fi
            r="$(rps "${PORT_OF[$target]}" "$test" "$n" "$pipeline" 1000000)"
            if [ "$target" = remoteback ] && [ "$pipeline" = 16 ]; then
                kill "$sampler"; wait "$sampler" 2>/dev/null || true
                peak="$(max_of "$WORK/rss.samples")"
                if [ "$test" = set ] && [ "$peak" -gt "$RSS_SET16" ]; then RSS_SET16=$peak; fi
                if [ "$test" = get ] && [ "$peak" -gt "$RSS_GET16" ]; then RSS_GET16=$peak; fi
            fi
            RES["$test$pipeline:$target"]+="$r "
            step "round $round: ${test^^} -P $pipeline -n $n, $target: $r requests/s (drained ${drained} s before)"
        done
    done
done

step "lag: idle ${LAG_IDLE} s, ${LAG_RATE} writes/s for ${LAG_LOAD} s, idle ${LAG_TAIL} s"
drain >/dev/null
"$LOAD" lag --proxy 127.0.0.1:$P_PROXY --backup 127.0.0.1:$P_BACKUP --rate "$LAG_RATE" \
    --idle "$LAG_IDLE" --load "$LAG_LOAD" --tail "$LAG_TAIL" --settle "$DRAIN_MAX" \
    >"$WORK/lag.out" 2>"$WORK/lag.err" || { cat "$WORK/lag.err" >&2; exit 1; }
# The lag tool's key=value output, by key.
declare -A LAG
while read -r -a fields; do
    for kv in "${fields[@]}"; do LAG["${kv%%=*}"]="${kv#*=}"; done
done <"$WORK/lag.out"
step "lag: idle p50 ${LAG[idle_p50_ms]} ms, under load p50 ${LAG[load_p50_ms]} ms p99 ${LAG[load_p99_ms]} ms (thirds ${LAG[load_thirds_p50_ms]}), ${LAG[writes_per_s]} writes/s"

step "sustained: redis-benchmark SET -P 16 -c $CLIENTS through remoteback for $SUSTAIN s"
drain >/dev/null
set_calls() {
    redis-cli -p $P_PRIMARY info commandstats | tr -d '\r' \
        | awk -F'[=,]' '/^cmdstat_set:/ { print $2 }'
}
calls0="$(set_calls)"
applied0="$(metric $P_REPLAY_M remoteback_replay_commands_applied_total)"
delivered0="$(metric $P_PROXY_M remoteback_proxy_records_delivered_total)"
messages0="$(metric $P_PROXY_M remoteback_proxy_kafka_messages_total)"
timeout "$SUSTAIN" redis-benchmark -h 127.0.0.1 -p $P_PROXY -t set -n "$SUS_N" -P 16 \
    -c "$CLIENTS" -r 1000000 -q >/dev/null 2>&1 &
bench_pid=$!
PIDS+=($!)
SUS_SERIES=""
for t in $(seq 1 "$SUSTAIN"); do
    sleep 1
    check
    if [ $((t % (SUSTAIN / 6))) -eq 0 ]; then
        b="$(metric $P_PROXY_M remoteback_proxy_backlog_bytes)"
        a="$(metric $P_REPLAY_M remoteback_replay_age_of_last_applied_ms)"
        SUS_SERIES+="${t} s: $(mib $((b / 1024))) MiB, $(awk -v a="$a" 'BEGIN { printf "%.1f", a / 1000 }') s; "
    fi
done
wait "$bench_pid" 2>/dev/null || true
calls1="$(set_calls)"
applied1="$(metric $P_REPLAY_M remoteback_replay_commands_applied_total)"
delivered1="$(metric $P_PROXY_M remoteback_proxy_records_delivered_total)"
messages1="$(metric $P_PROXY_M remoteback_proxy_kafka_messages_total)"
SUS_MESSAGES=$(((messages1 - messages0) / SUSTAIN))
SUS_ACCEPTED=$(((calls1 - calls0) / SUSTAIN))
SUS_DELIVERED=$(((delivered1 - delivered0) / SUSTAIN))
SUS_APPLIED=$(((applied1 - applied0) / SUSTAIN))
SUS_WAITS="$(metric $P_PROXY_M remoteback_proxy_backlog_waits_total)"
step "sustained: accepted $SUS_ACCEPTED/s, delivered $SUS_DELIVERED/s in $SUS_MESSAGES messages/s, applied $SUS_APPLIED/s; backlog, replay lag: $SUS_SERIES"
SUS_CATCHUP="$(drain)"
step "sustained: the replay caught up $SUS_CATCHUP s after the clients stopped"

step "hot key: SET, one key against random keys, through remoteback"
declare -A HOT
for round in $(seq 1 $HOT_ROUNDS); do
    for c in "hot 16 $NHOT16" "random 16 $NHOT16" "hot 1 $NHOT1" "random 1 $NHOT1"; do
        read -r kind pipeline n <<<"$c"
        ks=1000000
        [ "$kind" = hot ] && ks=""
        drain >/dev/null
        r="$(rps $P_PROXY set "$n" "$pipeline" "$ks")"
        HOT["$kind$pipeline"]+="$r "
        step "round $round: SET -P $pipeline, $kind key(s): $r requests/s"
    done
done

step "SET's parts: twemproxy, remoteback capturing to a silent LogSender, remoteback with the replay stopped"
cat >"$WORK/proxy-log.toml" <<TOML
${PROXY_SETTINGS:-}
bindport = $P_LOGP
connport = $P_PRIMARY
message = "PROTOCOL"
[[sender]]
class = "LogSender"
logger = "capture"
level = "trace"
TOML
# Its logger is off (a configured LogSender's logger is on unless
# REMOTEBACK_LOG says otherwise): every write is captured and handed to
# the sender, which drops it.
REMOTEBACK_LOG=warn,capture=off "$BIN" proxy --config "$WORK/proxy-log.toml" 2>"$WORK/proxy-log.log" &
LOGP_PID=$!
PIDS+=($!)
wait_port $P_LOGP 60
declare -A PARTS
PART_TARGETS=(twemproxy logsender stopped)
declare -A PART_PORT=([twemproxy]=$P_TWEM [logsender]=$P_LOGP [stopped]=$P_PROXY)
for round in $(seq 1 $PARTS_ROUNDS); do
    for c in "1 $N1" "16 $N16"; do
        read -r pipeline n <<<"$c"
        for i in 0 1 2; do
            target="${PART_TARGETS[$(((i + round - 1) % 3))]}"
            drain >/dev/null
            # Stopped, the replay neither fetches nor applies; it catches
            # up once continued, in the next drain.
            [ "$target" = stopped ] && kill -STOP "$REPLAY_PID"
            r="$(rps "${PART_PORT[$target]}" set "$n" "$pipeline" 1000000 || true)"
            [ "$target" = stopped ] && kill -CONT "$REPLAY_PID"
            [ -n "$r" ] || { step "ERROR: redis-benchmark against $target failed"; exit 1; }
            PARTS["$target$pipeline"]+="$r "
            step "round $round: SET -P $pipeline, $target: $r requests/s"
        done
    done
done
kill "$LOGP_PID"

step "broker ceiling: $NCEIL records from one bare librdkafka producer"
drain >/dev/null
"$LOAD" produce --brokers 127.0.0.1:$P_KAFKA --topic ceiling-h --records "$NCEIL" --headers 1 \
    >"$WORK/ceil-h.out" 2>"$WORK/ceil.err" || { cat "$WORK/ceil.err" >&2; exit 1; }
"$LOAD" produce --brokers 127.0.0.1:$P_KAFKA --topic ceiling --records "$NCEIL" --headers 0 \
    >"$WORK/ceil.out" 2>>"$WORK/ceil.err" || { cat "$WORK/ceil.err" >&2; exit 1; }
CEIL_H="$(awk -F= '/^records_per_s=/ { print $2 }' "$WORK/ceil-h.out")"
CEIL="$(awk -F= '/^records_per_s=/ { print $2 }' "$WORK/ceil.out")"
step "broker ceiling: $CEIL_H records/s with the proxy's 6 headers, $CEIL without ($(tr '\n' ' ' <"$WORK/ceil-h.out"))"

step "replay only: pre-filling topic prefill with $NPREFILL records (second proxy, no replay)"
cat >"$WORK/prefill.toml" <<TOML
bindport = $P_PRE
connport = $P_PRIMARY
metrics = "127.0.0.1:$P_PRE_M"
[[sender]]
class = "KafkaSender"
topic = "prefill"
bootstrap-servers = "127.0.0.1:$P_KAFKA"
TOML
"$BIN" proxy --config "$WORK/prefill.toml" 2>"$WORK/prefill.log" &
pre_pid=$!
PIDS+=($!)
wait_port $P_PRE 60
redis-benchmark -h 127.0.0.1 -p $P_PRE -t set -n "$NPREFILL" -P 16 -c "$CLIENTS" -r 1000000 -q >/dev/null 2>&1
until [ "$(metric $P_PRE_M remoteback_proxy_backlog_bytes)" = 0 ]; do sleep 0.2; done
PREFILLED="$(metric $P_PRE_M remoteback_proxy_records_delivered_total)"
PREFILL_MSGS="$(metric $P_PRE_M remoteback_proxy_kafka_messages_total)"
kill "$pre_pid"
wait "$pre_pid" 2>/dev/null || true
cat >"$WORK/replay2.toml" <<TOML
message = "PROTOCOL"
metrics = "127.0.0.1:$P_REPLAY2_M"
[receiver]
class = "KafkaReceiver"
topic = "prefill"
bootstrap-servers = "127.0.0.1:$P_KAFKA"
fetch-wait-max-ms = 2
[redis]
connport = $P_BACKUP2
TOML
step "replay only: a fresh replay applying the $PREFILLED writes ($PREFILL_MSGS messages) from the start"
t0="$(date +%s.%N)"
"$BIN" replay --config "$WORK/replay2.toml" 2>"$WORK/replay2.log" &
replay2_pid=$!
PIDS+=($!)
wait_port $P_REPLAY2_M 30
while :; do
    applied="$(metric $P_REPLAY2_M remoteback_replay_commands_applied_total)"
    [ "$applied" -ge "$PREFILLED" ] && break
    sleep 0.1
done
t1="$(date +%s.%N)"
kill "$replay2_pid"
wait "$replay2_pid" 2>/dev/null || true
REPLAY_S="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
REPLAY_RATE="$(awk -v a="$t0" -v b="$t1" -v n="$PREFILLED" 'BEGIN { printf "%.0f", n / (b - a) }')"
step "replay only: $PREFILLED writes in $REPLAY_S s from its start, $REPLAY_RATE writes/s"

step "checking for lost records"
drain >/dev/null
failed="$(metric $P_PROXY_M remoteback_proxy_records_failed_total)"
dropped="$(metric $P_PROXY_M remoteback_proxy_records_dropped_total)"
uncaptured="$(metric $P_PROXY_M remoteback_proxy_writes_uncaptured_total)"
gaps="$(metric $P_REPLAY_M remoteback_replay_sequence_gaps_total)"
dups="$(metric $P_REPLAY_M remoteback_replay_duplicates_skipped_total)"
refused="$(metric $P_REPLAY_M remoteback_replay_commands_refused_total)"
delivered="$(metric $P_PROXY_M remoteback_proxy_records_delivered_total)"
applied="$(metric $P_REPLAY_M remoteback_replay_commands_applied_total)"
HEALTH="$(curl -s 127.0.0.1:$P_PROXY_M/health | head -c 200); $(curl -s 127.0.0.1:$P_REPLAY_M/health | head -c 200)"
INTEGRITY="writes delivered $delivered, applied $applied (in $(metric $P_PROXY_M remoteback_proxy_kafka_messages_total) Kafka messages); failed $failed, dropped $dropped, uncaptured $uncaptured, sequence gaps $gaps, duplicates skipped $dups, commands refused $refused; lag probes unseen: ${LAG[idle_unseen]}/${LAG[load_unseen]}/${LAG[tail_unseen]}; health: $HEALTH"
step "$INTEGRITY"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
CPU=""
for np in "${CPU_PIDS[@]}"; do CPU+="${np%%=*} $(cpu_seconds "${np#*=}") s, "; done
step "CPU time over the run: ${CPU%, }"

{
    mode=full
    [ "$QUICK" = 1 ] && mode=quick
    echo "bench/suite.sh ($mode), $STARTED_AT, $(nproc) cores, load average $LOAD_START at the start, $LOAD_END at the end; tansu's store $TANSU_STORAGE in $TANSU_DIR ($(df --output=fstype "$TANSU_DIR" | tail -n 1))${PROXY_SETTINGS:+; proxy settings: $PROXY_SETTINGS}"
    echo
    echo "redis-benchmark, $CLIENTS clients, random keys (-r 1000000), requests/s, median of $ROUNDS rounds (the rounds in parentheses):"
    echo
    echo "| Case | Redis directly | twemproxy | remoteback | remoteback / twemproxy | remoteback / direct |"
    echo "|---|---|---|---|---|---|"
    for c in "${CASES[@]}"; do
        read -r test pipeline n <<<"$c"
        row="| ${test^^} -P $pipeline (-n $n) |"
        declare -A med=()
        for target in "${TARGETS[@]}"; do
            # shellcheck disable=SC2086
            med[$target]="$(median ${RES["$test$pipeline:$target"]})"
            rounds=""
            for v in ${RES["$test$pipeline:$target"]}; do rounds+="$(kfmt "$v"), "; done
            row+=" $(kfmt "${med[$target]}") (${rounds%, }) |"
        done
        row+=" $(ratio "${med[remoteback]}" "${med[twemproxy]}") | $(ratio "${med[remoteback]}" "${med[direct]}") |"
        echo "$row"
    done
    echo
    echo "| Measure | Result |"
    echo "|---|---|"
    echo "| Lag, idle (probe SET every 50 ms, ${LAG_IDLE} s) | p50 ${LAG[idle_p50_ms]} ms, p99 ${LAG[idle_p99_ms]} ms, max ${LAG[idle_max_ms]} ms |"
    echo "| Lag under ${LAG_RATE} writes/s for ${LAG_LOAD} s (achieved ${LAG[writes_per_s]}/s) | p50 ${LAG[load_p50_ms]} ms, p99 ${LAG[load_p99_ms]} ms, max ${LAG[load_max_ms]} ms; p50 by thirds of the phase ${LAG[load_thirds_p50_ms]} ms |"
    echo "| Lag, idle again after the load (${LAG_TAIL} s) | p50 ${LAG[tail_p50_ms]} ms, p99 ${LAG[tail_p99_ms]} ms, max ${LAG[tail_max_ms]} ms |"
    echo "| Sustained: SET -P 16 -c $CLIENTS through remoteback for $SUSTAIN s | accepted $(kfmt $SUS_ACCEPTED) writes/s, Kafka acknowledged $(kfmt $SUS_DELIVERED) writes/s (in $(kfmt $SUS_MESSAGES) messages/s), the replay applied $(kfmt $SUS_APPLIED) writes/s; writes held at a full backlog: $SUS_WAITS |"
    echo "| Sustained: backlog, replay lag (age of the last applied write) | ${SUS_SERIES% } then caught up $SUS_CATCHUP s after the clients stopped |"
    echo "| Replay only: fresh replay, $PREFILLED writes in $PREFILL_MSGS Kafka messages from the start of a topic | $REPLAY_S s from the process's start: $(kfmt "$REPLAY_RATE") writes/s |"
    echo "| Broker ceiling: one bare librdkafka producer, $NCEIL records, the proxy's producer settings | $(kfmt "$CEIL_H") records/s with the six headers the proxy's records carry, $(kfmt "$CEIL") without headers (same payloads) |"
    echo "| Proxy RSS | fresh $(mib "$RSS_FRESH") MiB; $IDLE_SEEN idle clients $(mib "$RSS_IDLE") MiB; $CLIENTS busy clients, peak during GET -P 16 $(mib "$RSS_GET16") MiB, during SET -P 16 $(mib "$RSS_SET16") MiB (the backlog of records for Kafka included) |"
    for p in 16 1; do
        # shellcheck disable=SC2086
        hot="$(median ${HOT["hot$p"]})"
        # shellcheck disable=SC2086
        rnd="$(median ${HOT["random$p"]})"
        echo "| Hot key: SET -P $p -c $CLIENTS, one key / random keys, through remoteback | $(kfmt "$hot") / $(kfmt "$rnd") requests/s: $(ratio "$hot" "$rnd") (rounds: ${HOT["hot$p"]% }; ${HOT["random$p"]% }) |"
    done
    for p in 1 16; do
        declare -A pm=()
        for target in "${PART_TARGETS[@]}"; do
            # shellcheck disable=SC2086
            pm[$target]="$(median ${PARTS["$target$p"]})"
        done
        echo "| SET -P $p -c $CLIENTS: twemproxy / remoteback capturing to a silent LogSender (no Kafka) / remoteback capturing to Kafka with the replay stopped, alternating | $(kfmt "${pm[twemproxy]}") / $(kfmt "${pm[logsender]}") / $(kfmt "${pm[stopped]}") requests/s: $(ratio "${pm[logsender]}" "${pm[twemproxy]}") and $(ratio "${pm[stopped]}" "${pm[twemproxy]}") of twemproxy (rounds: ${PARTS["twemproxy$p"]% }; ${PARTS["logsender$p"]% }; ${PARTS["stopped$p"]% }) |"
    done
    echo "| CPU time of each process over the whole run ($(($(date +%s) - START_EPOCH)) s) | ${CPU%, } |"
    echo "| Records lost | $INTEGRITY |"
} >"$WORK/results.md"
[ -n "$OUT" ] && cp "$WORK/results.md" "$OUT"
cat "$WORK/results.md"
