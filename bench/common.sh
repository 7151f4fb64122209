# Shared by the bench scripts (source it): a temporary directory, processes
# stopped on exit, a wait for a port, a tansu broker, a metric's value, a
# wait for the proxy's Kafka backlog, redis-benchmark's rate and a median.
# ROOT (the repository) must be set before sourcing it.
#
#   WORK     a fresh directory, removed on exit
#   PIDS     append the pid of each background process to stop on exit
#   CLIENTS  redis-benchmark's connections for `rps` (default 50)
#   TANSU_STORAGE  tansu's store (default sqlite://tansu.db, a file in
#            $TANSU_DIR, as the tests and scripts/up.sh use; memory://tansu/
#            is tansu's own default, BENCHMARKS.md 2026-12-03 12:46 measured it)
#   TANSU_DIR  where tansu runs and keeps that file (default a fresh
#            directory in /dev/shm, removed on exit; $WORK where there is no
#            /dev/shm). A Kafka broker acknowledges a write from its page
#            cache and does not flush it to disk by default; tansu's SQLite
#            store flushes at every WAL checkpoint, inside the produce that
#            triggers it, and on a slow disk that held acknowledgements for
#            a quarter of a second (BENCHMARKS.md, 2026-12-04). Point it at
#            an empty directory on disk to measure with those flushes (tansu
#            carries on with a store it finds there).

WORK="$(mktemp -d /tmp/remoteback-bench.XXXXXX)"
PIDS=()
if [ -z "${TANSU_DIR:-}" ]; then
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        TANSU_DIR="$(mktemp -d /dev/shm/remoteback-tansu.XXXXXX)"
        TANSU_DIR_OWNED=1
    else
        TANSU_DIR="$WORK"
    fi
fi
mkdir -p "$TANSU_DIR"

bench_cleanup() {
    # A process a script stopped (kill -STOP) takes the signal only once
    # continued: without the CONT the wait below would never end.
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
    if [ -n "${TANSU_DIR_OWNED:-}" ]; then rm -rf "$TANSU_DIR"; fi
}
trap bench_cleanup EXIT

# Exits the script if something already listens on 127.0.0.1:PORT (another
# bench, a local redis): its figures would be someone else's.
require_free() { # PORT...
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is in use; stop what listens there first" >&2
            exit 1
        fi
    done
}

# Waits (up to SECONDS, default 10) until something accepts connections on
# 127.0.0.1:PORT; exits the script if nothing does.
wait_port() { # PORT [SECONDS]
    local tries=$(( ${2:-10} * 20 ))
    for _ in $(seq 1 "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2
    exit 1
}

# Starts tansu on 127.0.0.1:PORT, its data in $TANSU_DIR and its log in
# $WORK/tansu.log, stopped on exit; $! is its pid.
TANSU_STORAGE="${TANSU_STORAGE:-sqlite://tansu.db}"
start_tansu() { # PORT
    (cd "$TANSU_DIR" && exec tansu broker --listener-url "tcp://127.0.0.1:$1" \
        --advertised-listener-url "tcp://127.0.0.1:$1" --storage-engine "$TANSU_STORAGE") \
        >"$WORK/tansu.log" 2>&1 &
    PIDS+=($!)
}

# Once tansu's port is open: a sqlite store gets the index tansu 0.6.0's
# schema lacks (scripts/tansu-index.py); other stores need nothing.
tansu_ready() {
    case "$TANSU_STORAGE" in
        sqlite://*) python3 "$ROOT/scripts/tansu-index.py" "$TANSU_DIR/${TANSU_STORAGE#sqlite://}" ;;
    esac
}

# Sum of a metric's samples (all label sets) on 127.0.0.1:PORT.
metric() { # PORT NAME
    curl -s "127.0.0.1:$1/metrics" \
        | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}

# Waits until the proxy with metrics on 127.0.0.1:PORT has no record
# waiting for Kafka: the broker is shared, and a backlog one run left would
# slow the next.
wait_backlog_empty() { # PORT
    until [ "$(metric "$1" remoteback_proxy_backlog_bytes)" = 0 ]; do sleep 0.2; done
}

# requests/s of one redis-benchmark test.
rps() { # PORT TEST REQUESTS PIPELINE [KEYSPACE]
    local keyspace=()
    [ -n "${5:-}" ] && keyspace=(-r "$5")
    redis-benchmark -h 127.0.0.1 -p "$1" -t "$2" -n "$3" -P "$4" -c "${CLIENTS:-50}" "${keyspace[@]}" --csv 2>/dev/null \
        | awk -F, '$1 ~ /^"(SET|GET)"$/ { gsub(/"/, "", $2); printf "%.0f", $2 }'
}

median() { # VALUES...
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
