#!/usr/bin/env bash
# Runs units of Redis 7.0.15's own test suite against a plain redis-server and
# through `remoteback proxy`, and checks after each proxied unit that the
# backup equals the primary.
#
#   scripts/redis-suite.sh                 # the default units (below)
#   scripts/redis-suite.sh unit/type/list  # only these units
#
# The suite (tests/ and runtest of redis 7.0.15) comes from Debian's source
# package, redis_7.0.15.orig.tar.gz, checked against its SHA-256 and kept in
# .local/redis-7.0.15/ (git-ignored). Nothing of it is committed.
#
# Everything runs on free loopback ports of its own, in .local/redis-suite/
# (logs, data, configs), so a pipeline started by scripts/up.sh is left alone:
#
#   direct   redis-server            <- runtest (the reference counts)
#   primary  redis-server  <- remoteback proxy <- runtest
#                                  |
#                                  +-> tansu (topic "remoteback", 1 partition)
#                                                 |
#   backup   redis-server  <- remoteback replay <-+
#
# Each redis-server runs with --enable-debug-command yes (the suite needs
# DEBUG). Each unit runs as
#
#   ./runtest --host 127.0.0.1 --port PORT --single UNIT --clients 1 --tags -slow
#
# under `timeout` (UNIT_TIMEOUT seconds, default 600). Tests that need a server
# of their own (tags external:skip, needs:...) are skipped by runtest in this
# mode, on both sides alike.
#
# Environment:
#   REDIS_SERVER    redis-server to run (default: redis-server on PATH, which
#                   should be 7.0.15)
#   REMOTEBACK_BIN  remoteback binary (default: built with cargo, release)
#   UNIT_TIMEOUT    seconds per unit run (default 600)
#   SUITE_TAGS      runtest's --tags (default "-slow"; "-slow -needs:repl"
#                   also skips the tests that read a replication stream)
#   SUITE_KEEP=1    keep .local/redis-suite/run/ (logs, outputs) afterwards;
#                   it is kept anyway when something failed
#
# Output: a table with, per unit, the tests passed / failed / exceptions
# directly and through the proxy, and whether the backup equals the primary
# after the unit (remoteback verify), then each test that passes directly and
# not through the proxy. Exit status 0 when every unit passes as many tests
# through the proxy as directly and every backup check is equal, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REDIS_VERSION=7.0.15
TARBALL="redis_${REDIS_VERSION}.orig.tar.gz"
TARBALL_URL="http://deb.debian.org/debian/pool/main/r/redis/$TARBALL"
# From Debian's redis_7.0.15-1~deb12u*.dsc (Checksums-Sha256).
TARBALL_SHA256=4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982

SUITE="$ROOT/.local/redis-$REDIS_VERSION"
WORK="$ROOT/.local/redis-suite"
RUN="$WORK/run"
UNIT_TIMEOUT="${UNIT_TIMEOUT:-600}"
SUITE_TAGS="${SUITE_TAGS:--slow}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"

DEFAULT_UNITS=(
    unit/type/string unit/type/incr unit/type/list unit/type/list-2
    unit/type/list-3 unit/type/set unit/type/zset unit/type/hash
    unit/type/stream unit/type/stream-cgroups
    unit/keyspace unit/expire unit/multi unit/scripting unit/functions
    unit/bitops unit/geo unit/hyperloglog unit/sort unit/protocol
    unit/pubsub unit/info-command unit/other unit/dump
)
if [ "$#" -gt 0 ]; then UNITS=("$@"); else UNITS=("${DEFAULT_UNITS[@]}"); fi

log() { printf '[suite] %s\n' "$*" >&2; }
die() { printf '[suite] ERROR: %s\n' "$*" >&2; exit 2; }

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

for tool in curl tar sha256sum flock tclsh redis-cli python3 tansu timeout "$REDIS_SERVER"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
server_version="$("$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
[ "$server_version" = "$REDIS_VERSION" ] \
    || log "WARNING: $REDIS_SERVER is $server_version, the suite is $REDIS_VERSION's"

# --- the suite -------------------------------------------------------------------

if [ ! -x "$SUITE/runtest" ]; then
    mkdir -p "$ROOT/.local"
    download="$ROOT/.local/$TARBALL"
    if [ ! -f "$download" ]; then
        log "downloading $TARBALL_URL"
        curl -fsSL --retry 3 -o "$download.part" "$TARBALL_URL"
        mv "$download.part" "$download"
    fi
    echo "$TARBALL_SHA256  $download" | sha256sum -c --quiet - \
        || die "$download does not have the expected SHA-256 (remove it to download again)"
    rm -rf "$SUITE.part"
    mkdir -p "$SUITE.part"
    tar -xzf "$download" -C "$SUITE.part" --strip-components 1 \
        "redis-$REDIS_VERSION/runtest" "redis-$REDIS_VERSION/tests"
    mv "$SUITE.part" "$SUITE"
fi

# --- remoteback --------------------------------------------------------------------

if [ -n "${REMOTEBACK_BIN:-}" ]; then
    BIN="$REMOTEBACK_BIN"
else
    log "building remoteback (release)"
    cargo build --release -p remoteback --bin remoteback >&2
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    BIN="$TARGET_DIR/release/remoteback"
fi
[ -x "$BIN" ] || die "remoteback binary not found at $BIN"

# --- processes ---------------------------------------------------------------------

mkdir -p "$WORK"
# One run at a time: they share .local/redis-suite/run and the suite's tmp/.
exec 9>"$WORK/lock"
flock -n 9 || die "another scripts/redis-suite.sh is running (lock $WORK/lock)"
rm -rf "$RUN"
mkdir -p "$RUN"/{direct,primary,backup,tansu,out}

PIDS=()
failed_somewhere=0
cleanup() {
    local pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        # Each service runs in a session of its own: stop the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ "${SUITE_KEEP:-0}" != 1 ] && [ "$failed_somewhere" -eq 0 ]; then
        rm -rf "$RUN"
    else
        log "logs and outputs kept in $RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() { # NAME DIR COMMAND...
    local name="$1" dir="$2"
    shift 2
    (cd "$dir" && exec setsid "$@") >>"$RUN/$name.log" 2>&1 </dev/null &
    PIDS+=("$!")
    eval "PID_${name}=$!"
}

alive() { # NAME
    local var="PID_$1"
    kill -0 "${!var}" 2>/dev/null
}

wait_for() { # NAME SECONDS CHECK...
    local name="$1" secs="$2" i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        alive "$name" || { tail -n 20 "$RUN/$name.log" >&2; die "$name exited"; }
        sleep 0.1
    done
    tail -n 20 "$RUN/$name.log" >&2
    die "$name did not come up within ${secs}s"
}

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

DIRECT_PORT=$(free_port)
PRIMARY_PORT=$(free_port)
BACKUP_PORT=$(free_port)
KAFKA_PORT=$(free_port)
PROXY_PORT=$(free_port)
PROXY_METRICS="127.0.0.1:$(free_port)"
REPLAY_METRICS="127.0.0.1:$(free_port)"

for pair in "direct:$DIRECT_PORT" "primary:$PRIMARY_PORT" "backup:$BACKUP_PORT"; do
    name="${pair%%:*}"
    port="${pair##*:}"
    start "$name" "$RUN/$name" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 \
        --daemonize no --dir "$RUN/$name" --save "" --appendonly no \
        --enable-debug-command yes
    wait_for "$name" 15 ping "$port"
done

start tansu "$RUN/tansu" tansu broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db"
wait_for tansu 30 port_open "$KAFKA_PORT"
python3 "$ROOT/scripts/tansu-index.py" "$RUN/tansu/tansu.db" >&2 \
    || die "cannot add the header index to $RUN/tansu/tansu.db"

cat >"$RUN/proxy.toml" <<EOF
bindip = "127.0.0.1"
bindport = $PROXY_PORT
connip = "127.0.0.1"
connport = $PRIMARY_PORT
message = "PROTOCOL"
worker = "coroutine"
rsptimeout = 10000
metrics = "$PROXY_METRICS"

[[sender]]
class = "KafkaSender"
topic = "remoteback"
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
linger-ms = 1
EOF

cat >"$RUN/replay.toml" <<EOF
message = "PROTOCOL"
worker = "coroutine"
metrics = "$REPLAY_METRICS"

[receiver]
class = "KafkaReceiver"
topic = "remoteback"
polltimeout = 50
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
group-id = "remoteback-suite"

[redis]
connip = "127.0.0.1"
connport = $BACKUP_PORT
EOF

# The proxy creates the (one-partition) topic, so it starts first.
start proxy "$RUN" "$BIN" proxy --config "$RUN/proxy.toml"
wait_for proxy 60 port_open "$PROXY_PORT"
start replay "$RUN" "$BIN" replay --config "$RUN/replay.toml"

SENTINEL_N=0
# Writes a sentinel through the proxy and waits until the backup has it: the
# topic has one partition, so by then every earlier record was applied.
wait_applied() { # SECONDS
    local key value i
    SENTINEL_N=$((SENTINEL_N + 1))
    key="remoteback-suite:sentinel"
    value="$SENTINEL_N-$(date +%s%N)"
    [ "$(redis-cli -h 127.0.0.1 -p "$PROXY_PORT" -n 0 set "$key" "$value" 2>&1)" = OK ] || return 1
    for ((i = 0; i < $1 * 20; i++)); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$BACKUP_PORT" -n 0 get "$key" 2>/dev/null)" = "$value" ]; then
            return 0
        fi
        alive replay || return 1
        sleep 0.05
    done
    return 1
}
wait_applied 60 || { tail -n 20 "$RUN/replay.log" >&2; die "a write through the proxy did not reach the backup"; }
log "pipeline up: direct :$DIRECT_PORT, proxy :$PROXY_PORT -> primary :$PRIMARY_PORT, backup :$BACKUP_PORT, tansu :$KAFKA_PORT"

# --- the units ---------------------------------------------------------------------

# run_unit UNIT PORT OUT: runs UNIT against 127.0.0.1:PORT, its output in OUT.
run_unit() {
    local unit="$1" port="$2" out="$3" rc=0
    (cd "$SUITE" && timeout --kill-after 10 "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 \
        --port "$port" --single "$unit" --clients 1 --tags "$SUITE_TAGS") >"$out.raw" 2>&1 </dev/null || rc=$?
    # Without its colours.
    sed 's/\x1b\[[0-9;]*m//g' "$out.raw" >"$out"
    rm -f "$out.raw"
    # timeout signals its whole process group: runtest and its test client.
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "[timeout]: the unit did not end within ${UNIT_TIMEOUT}s" >>"$out"
    fi
    return 0
}

# The names of the tests that passed, one a line.
passed() { sed -n 's/^\[ok\]: \(.*\) ([0-9]* ms)$/\1/p' "$1" | sort; }
# Lines matching PATTERN up to runtest's closing summary (which lists the
# failed tests again).
count() { # PATTERN FILE
    sed '/^[[:space:]]*The End$/q' "$2" | grep -c -- "$1" || true
}

TABLE="$RUN/table.txt"
DIFFS="$RUN/differences.txt"
: >"$DIFFS"
printf '%-26s %6s %5s %4s   %6s %5s %4s   %s\n' unit ok err exc "ok" err exc "backup" >"$TABLE"
printf '%-26s %17s   %17s\n' "" "--- direct ---" "-- via proxy --" >>"$TABLE"
total_direct=0
total_proxy=0
all_equal=1
for unit in "${UNITS[@]}"; do
    name="${unit//\//_}"
    log "$unit: directly"
    run_unit "$unit" "$DIRECT_PORT" "$RUN/out/$name.direct"
    log "$unit: through the proxy"
    run_unit "$unit" "$PROXY_PORT" "$RUN/out/$name.proxy"

    backup="?"
    if alive proxy && alive replay && ping "$PRIMARY_PORT" && ping "$BACKUP_PORT"; then
        if wait_applied 120; then
            if "$BIN" verify --source "redis://127.0.0.1:$PRIMARY_PORT" \
                --target "redis://127.0.0.1:$BACKUP_PORT" --rounds 3 --interval 1s \
                >"$RUN/out/$name.verify" 2>&1; then
                backup="equal"
            else
                backup="DIFFERS"
            fi
        else
            backup="LAGS"
        fi
    else
        backup="DOWN"
    fi
    [ "$backup" = equal ] || all_equal=0

    d_ok=$(count '^\[ok\]:' "$RUN/out/$name.direct")
    d_err=$(count '^\[err\]:' "$RUN/out/$name.direct")
    d_exc=$(count '^\[exception\]\|^\[timeout\]' "$RUN/out/$name.direct")
    p_ok=$(count '^\[ok\]:' "$RUN/out/$name.proxy")
    p_err=$(count '^\[err\]:' "$RUN/out/$name.proxy")
    p_exc=$(count '^\[exception\]\|^\[timeout\]' "$RUN/out/$name.proxy")
    total_direct=$((total_direct + d_ok))
    total_proxy=$((total_proxy + p_ok))
    printf '%-26s %6s %5s %4s   %6s %5s %4s   %s\n' "$unit" "$d_ok" "$d_err" "$d_exc" \
        "$p_ok" "$p_err" "$p_exc" "$backup" | tee -a "$TABLE" >&2

    missing="$(comm -23 <(passed "$RUN/out/$name.direct") <(passed "$RUN/out/$name.proxy"))"
    if [ -n "$missing" ] || [ "$backup" != equal ]; then
        {
            printf '== %s\n' "$unit"
            [ -z "$missing" ] || printf '%s\n' "$missing" | sed 's/^/  passes only directly: /'
            if [ "$backup" = DIFFERS ]; then
                grep -v '^verify: ' "$RUN/out/$name.verify" | head -n 20 | sed 's/^/  backup: /'
            elif [ "$backup" != equal ]; then
                printf '  backup: %s\n' "$backup"
            fi
        } >>"$DIFFS"
    fi
    # A unit can stop the pipeline (a crashed test, SHUTDOWN): say so and stop.
    if [ "$backup" = DOWN ]; then
        log "a process of the pipeline is down after $unit; stopping"
        break
    fi
done
printf '%-26s %6s %5s %4s   %6s\n' total "$total_direct" "" "" "$total_proxy" >>"$TABLE"

echo
cat "$TABLE"
if [ -s "$DIFFS" ]; then
    echo
    cat "$DIFFS"
fi
if [ "$total_proxy" -lt "$total_direct" ] || [ "$all_equal" -ne 1 ]; then
    failed_somewhere=1
    exit 1
fi
exit 0
