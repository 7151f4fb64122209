# Shared by the bench scripts (source it): a temporary directory, processes
# stopped on exit, and a wait for a port.
#
#   WORK    a fresh directory, removed on exit
#   PIDS    append the pid of each background process to stop on exit

WORK="$(mktemp -d /tmp/remoteback-bench.XXXXXX)"
PIDS=()

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
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
