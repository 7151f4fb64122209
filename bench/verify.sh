#!/usr/bin/env bash
# verify's throughput: KEYS small keys of mixed types (strings, hashes,
# lists, sets, sorted sets; a tenth with an expiry) loaded the same way into
# two local redis-servers, then `remoteback verify` between them, which
# prints the keys compared a second. A second run plants a difference in
# every thousandth key to show the cost of the full comparison path and of
# the rounds.
#
#   bench/verify.sh [KEYS]      (default 1000000)
#
# Needs redis-server and redis-cli. Uses ports 17490 and 17491 and a
# temporary directory; stops everything it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYS="${1:-1000000}"
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

cargo build --release --bin remoteback --manifest-path "$ROOT/Cargo.toml" >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/remoteback"

for port in 17490 17491; do
    redis-server --port "$port" --save "" --appendonly no --dir "$WORK" >"$WORK/redis-$port.log" 2>&1 &
    PIDS+=($!)
done
wait_port 17490
wait_port 17491

# One script, run on both servers with the same arguments, writes the same
# keys in the same order (equal encodings); expiries are absolute, so the
# two copies' TTLs agree wherever and whenever they were loaded.
LOAD='
local first, last, at = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = first, last do
    local k = "bench:" .. i
    local t = i % 5
    if t == 0 then redis.call("SET", k, "value-" .. i)
    elseif t == 1 then redis.call("HSET", k, "a", i, "b", "x", "c", "y")
    elseif t == 2 then redis.call("RPUSH", k, "a", "b", i)
    elseif t == 3 then redis.call("SADD", k, "a", "b", i)
    else redis.call("ZADD", k, 1, "a", 2, "b", i, "c") end
    if i % 10 == 0 then redis.call("PEXPIREAT", k, at) end
end
return last - first + 1'
EXPIRE_AT=$(( ($(date +%s) + 86400) * 1000 ))
CHUNK=100000
load() { # PORT
    local first=1
    while [ "$first" -le "$KEYS" ]; do
        local last=$(( first + CHUNK - 1 ))
        [ "$last" -gt "$KEYS" ] && last="$KEYS"
        redis-cli -p "$1" EVAL "$LOAD" 0 "$first" "$last" "$EXPIRE_AT" >/dev/null
        first=$(( last + 1 ))
    done
}
started=$SECONDS
load 17490 &
loader=$!
load 17491
wait "$loader"
echo "loaded $KEYS keys into each server in $((SECONDS - started)) s"

run() { # LABEL [VERIFY OPTIONS...]
    local label="$1"
    shift
    local code=0
    "$BIN" verify --source redis://127.0.0.1:17490 --target redis://127.0.0.1:17491 \
        --report "$WORK/report.json" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || code=$?
    printf '%-34s exit %s: %s\n' "$label" "$code" \
        "$(grep -m1 'keys compared' "$WORK/out.txt" | sed 's/^verify: //')"
}

run "identical copies"
run "identical copies, --sample 0.1" --sample 0.1
# Every thousandth key changed on the target: those keys take the full,
# typed comparison, then rounds check them again.
redis-cli -p 17491 EVAL '
for i = 1000, tonumber(ARGV[1]), 1000 do redis.call("SET", "bench:" .. i, "changed") end
return 0' 0 "$KEYS" >/dev/null
run "1 key in 1000 differs" --interval 100ms
