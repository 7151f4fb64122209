#!/usr/bin/env bash
# Stops what scripts/up.sh started (by the pid files in .local/run/).
# Data, configs and logs in .local/ are kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.local/run"
# Reverse start order: nothing is left writing into a stopped service.
SERVICES=(replay proxy tansu backup primary)

log() { printf '[down] %s\n' "$*"; }

# The process name a service must have, so that a pid reused by an
# unrelated process is never signalled.
expected_comm() {
    case "$1" in
        primary | backup) echo redis-server ;;
        tansu) echo tansu ;;
        proxy | replay) echo remoteback ;;
    esac
}

stop() { # NAME
    local name="$1" pidfile="$RUN/$1.pid" pid comm i
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    rm -f "$pidfile"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        log "$name was not running (stale pid file removed)"
        return 0
    fi
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    if [ "$comm" != "$(expected_comm "$name")" ]; then
        log "$name: pid $pid is now '$comm', not ours; left alone"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
    stopped=$((stopped + 1))
}

stopped=0
for name in "${SERVICES[@]}"; do
    stop "$name"
done
if [ "$stopped" -eq 0 ]; then
    log "nothing running"
fi
