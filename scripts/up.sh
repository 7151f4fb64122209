#!/usr/bin/env bash
# Sets up and starts the whole local pipeline in the background:
#
#   client -> remoteback proxy (:6666) -> primary redis (:6380)
#                  |
#                  +-> Kafka topic "remoteback" on tansu (127.0.0.1:9092)
#                                   |
#                  remoteback replay +-> backup redis (:6381)
#
# Everything lives in .local/ (data, configs, logs, pid files). Running it
# again restarts the pipeline; scripts/down.sh stops it and keeps the data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PRIMARY_PORT=6380
BACKUP_PORT=6381
KAFKA_PORT=9092
PROXY_PORT=6666
PROXY_METRICS=127.0.0.1:9121
REPLAY_METRICS=127.0.0.1:9122
TOPIC=remoteback
GROUP_ID=remoteback-replay

LOCAL="$ROOT/.local"
RUN="$LOCAL/run"
LOGS="$LOCAL/logs"
# Start order; scripts/down.sh stops in reverse.
SERVICES=(primary backup tansu proxy replay)

log() { printf '[up] %s\n' "$*"; }
die() { printf '[up] ERROR: %s\n' "$*" >&2; exit 1; }

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

is_running() { # NAME
    local pidfile="$RUN/$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_open() { # PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- build -----------------------------------------------------------------------

bash "$ROOT/scripts/setup.sh"

log "building remoteback (release)"
cargo build --release --bin remoteback
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/remoteback"
[ -x "$BIN" ] || die "built binary not found at $BIN"

# --- stop a running pipeline -----------------------------------------------------

running=()
for name in "${SERVICES[@]}"; do
    if is_running "$name"; then running+=("$name"); fi
done
if [ "${#running[@]}" -gt 0 ]; then
    log "already running (${running[*]}): restarting"
fi
# Also clears stale pid files.
bash "$ROOT/scripts/down.sh"

for port in "$PRIMARY_PORT" "$BACKUP_PORT" "$KAFKA_PORT" "$PROXY_PORT" "${PROXY_METRICS##*:}" "${REPLAY_METRICS##*:}"; do
    if port_open "$port"; then
        die "port $port is already in use by another program (see: ss -ltnp 'sport = :$port')"
    fi
done

mkdir -p "$RUN" "$LOGS" "$LOCAL/primary" "$LOCAL/backup" "$LOCAL/tansu"

# If anything below fails, stop what was started.
started=0
cleanup_on_failure() {
    if [ "$started" -ne 1 ]; then
        log "start failed; stopping what was started (logs stay in $LOGS)"
        bash "$ROOT/scripts/down.sh" || true
    fi
}
trap cleanup_on_failure EXIT

# start NAME DIR COMMAND... : runs COMMAND in DIR in its own session, in the
# background, with stdout+stderr in .local/logs/NAME.log.
start() {
    local name="$1" dir="$2"
    shift 2
    {
        printf '\n===== %s: starting %s =====\n' "$(date '+%F %T')" "$*"
    } >>"$LOGS/$name.log"
    (cd "$dir" && exec setsid "$@") >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo "$!" >"$RUN/$name.pid"
    log "started $name (pid $!)"
}

fail_with_log() { # NAME MESSAGE
    printf '[up] ERROR: %s; last lines of %s:\n' "$2" "$LOGS/$1.log" >&2
    tail -n 30 "$LOGS/$1.log" | sed 's/^/    /' >&2
    exit 1
}

wait_for() { # NAME WHAT TIMEOUT_SECONDS CHECK_COMMAND...
    local name="$1" what="$2" timeout="$3" i
    shift 3
    for ((i = 0; i < timeout * 10; i++)); do
        if "$@" >/dev/null 2>&1; then
            log "$name is up ($what)"
            return 0
        fi
        is_running "$name" || fail_with_log "$name" "$name exited while waiting for $what"
        sleep 0.1
    done
    fail_with_log "$name" "$name: no $what within ${timeout}s"
}

redis_ping() { # PORT
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
}

# --- redis -----------------------------------------------------------------------

for pair in "primary:$PRIMARY_PORT" "backup:$BACKUP_PORT"; do
    name="${pair%%:*}"
    port="${pair##*:}"
    start "$name" "$LOCAL/$name" redis-server \
        --port "$port" --bind 127.0.0.1 --daemonize no \
        --dir "$LOCAL/$name" --appendonly yes --save ""
    wait_for "$name" "PING on 127.0.0.1:$port" 15 redis_ping "$port"
done

# --- kafka (tansu) -----------------------------------------------------------------

# tansu resolves sqlite://NAME against its working directory.
start tansu "$LOCAL/tansu" tansu broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db"
wait_for tansu "127.0.0.1:$KAFKA_PORT" 30 port_open "$KAFKA_PORT"
python3 "$ROOT/scripts/tansu-index.py" "$LOCAL/tansu/tansu.db" \
    || fail_with_log tansu "cannot add the header index to $LOCAL/tansu/tansu.db"

# --- remoteback ----------------------------------------------------------------------

cat >"$LOCAL/proxy.toml" <<EOF
bindip = "127.0.0.1"
bindport = $PROXY_PORT
connip = "127.0.0.1"
connport = $PRIMARY_PORT
message = "PROTOCOL"
worker = "coroutine"
rsptimeout = 10000
metrics = "$PROXY_METRICS"

[[sender]]
class = "LogSender"
logger = "capture"
level = "debug"

[[sender]]
class = "KafkaSender"
topic = "$TOPIC"
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
EOF

cat >"$LOCAL/replay.toml" <<EOF
message = "PROTOCOL"
worker = "coroutine"
metrics = "$REPLAY_METRICS"

[receiver]
class = "KafkaReceiver"
topic = "$TOPIC"
polltimeout = 100
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
group-id = "$GROUP_ID"
# tansu holds every fetch for the whole wait, even with records there: a
# short one keeps the local lag at a few ms (Kafka answers at once anyway).
fetch-wait-max-ms = 2

[redis]
connip = "127.0.0.1"
connport = $BACKUP_PORT
EOF

# The proxy creates the topic when it is missing, so it starts first.
start proxy "$LOCAL" "$BIN" proxy --config "$LOCAL/proxy.toml"
wait_for proxy "127.0.0.1:$PROXY_PORT accepting connections" 60 port_open "$PROXY_PORT"

start replay "$LOCAL" "$BIN" replay --config "$LOCAL/replay.toml"
# replay listens on nothing: give it a moment to fail on a bad config or an
# unreachable broker, then prove the pipeline end to end.
sleep 2
is_running replay || fail_with_log replay "replay exited right after starting"

check_key="remoteback:up-check"
check_value="$(date +%s%N)"
backup_has_check() {
    [ "$(redis-cli -h 127.0.0.1 -p "$BACKUP_PORT" get "$check_key" 2>/dev/null)" = "$check_value" ]
}
if [ "$(redis-cli -h 127.0.0.1 -p "$PROXY_PORT" set "$check_key" "$check_value" 2>&1)" != "OK" ]; then
    fail_with_log proxy "SET through the proxy failed"
fi
replicated=0
for ((i = 0; i < 600; i++)); do
    if backup_has_check; then
        replicated=1
        break
    fi
    is_running replay || fail_with_log replay "replay exited"
    sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$PROXY_PORT" del "$check_key" >/dev/null 2>&1 || true

started=1
trap - EXIT

if [ "$replicated" -eq 1 ]; then
    log "replay is up (a write through the proxy reached the backup)"
else
    log "WARNING: a write through the proxy has not reached the backup within 60 s;"
    log "         the pipeline keeps running, see $LOGS/replay.log and $LOGS/proxy.log"
fi

cat <<EOF

remoteback is running:
  proxy   127.0.0.1:$PROXY_PORT  -> primary redis 127.0.0.1:$PRIMARY_PORT
  kafka   127.0.0.1:$KAFKA_PORT (tansu, topic "$TOPIC")
  replay  -> backup redis 127.0.0.1:$BACKUP_PORT

Try it:
  redis-cli -p $PROXY_PORT set a a     # write through the proxy
  redis-cli -p $BACKUP_PORT get a       # read it from the backup
  curl -s $PROXY_METRICS/health           # {"state":"ok",...}, or why the backup needs a resync
  curl -s $REPLAY_METRICS/metrics         # records applied, lag, retries

Copy what the primary holds, then prove the copy (docs/operations.md):
  redis-cli -p $PRIMARY_PORT set direct x   # written around the proxy: not on the backup
  $BIN sync --proxy $PROXY_METRICS --chunk-bytes 4mb
  redis-cli -p $BACKUP_PORT get direct       # copied by the sync
  $BIN verify --source redis://127.0.0.1:$PRIMARY_PORT --target redis://127.0.0.1:$BACKUP_PORT

Logs:    $LOGS/{primary,backup,tansu,proxy,replay}.log
Configs: $LOCAL/proxy.toml, $LOCAL/replay.toml
Stop:    scripts/down.sh   (data in .local/ is kept; scripts/up.sh starts it again)
EOF
