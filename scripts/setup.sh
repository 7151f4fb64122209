#!/usr/bin/env bash
# Installs what building and testing remoteback needs on a Debian/Ubuntu
# machine: system packages (redis, valkey, a C toolchain and OpenSSL headers
# for the bundled librdkafka build) and the `tansu` Kafka-protocol broker used by the
# integration tests and scripts/up.sh. Safe to run again: it only installs
# what is missing or broken.
set -euo pipefail

TANSU_VERSION="0.6.0"
# sqlite storage ("libsql") is what the tests and up.sh use; a build without
# these features refuses to start.
TANSU_FEATURES="dynostore,libsql"

APT_PACKAGES=(redis-server redis-tools libssl-dev pkg-config build-essential perl python3 curl)
MIN_RUST="1.85"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages"
    SUDO=(sudo)
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

# --- system packages ---------------------------------------------------------

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing apt packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "apt packages present: ${APT_PACKAGES[*]}"
fi
# valkey-server 8: the integration tests run primary and backup on it too
# (tests/convergence.rs). Debian bookworm has it only in bookworm-backports;
# newer Debian and Ubuntu releases have it in their main archive.
if ! command -v valkey-server >/dev/null 2>&1; then
    valkey_target=()
    if [ -r /etc/os-release ] && . /etc/os-release && [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
        if ! grep -rqsE '^(deb .*|Suites:.*)bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding the bookworm-backports apt source (for valkey-server)"
            echo 'deb http://deb.debian.org/debian bookworm-backports main' \
                | "${SUDO[@]}" tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
        fi
        valkey_target=(-t bookworm-backports)
    fi
    log "installing valkey-server"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${valkey_target[@]}" valkey-server
else
    log "valkey-server present: $(valkey-server --version | awk '{print $3}')"
fi
# The redis-server package may start a system redis on 6379. Nothing here uses
# that port (tests pick free ports, scripts/up.sh uses 6380/6381), so it is
# left alone.

# --- Rust toolchain ------------------------------------------------------------

command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust >= $MIN_RUST (https://rustup.rs) and re-run"
rust_version="$(rustc --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V | head -n1)" != "$MIN_RUST" ]; then
    die "rustc $rust_version is older than $MIN_RUST: run 'rustup update stable'"
fi
log "rust $rust_version"

# --- tansu broker --------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts tansu on a free loopback port with a throw-away sqlite file and
# succeeds if it accepts TCP connections within 15 s.
tansu_starts() {
    local bin="$1" port dir pid ok=1
    port="$(free_port)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/tansu-check.XXXXXX")"
    # Own session (setsid) so that the whole process group can be killed.
    (
        cd "$dir"
        exec setsid "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://check.db"
    ) >"$dir/tansu.log" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ok=0
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$ok" -ne 0 ]; then
        log "tansu start check failed on port $port; its output:"
        tail -n 20 "$dir/tansu.log" | sed 's/^/    /'
    fi
    rm -rf "$dir"
    return "$ok"
}

tansu_ok() {
    local bin version
    bin="$(command -v tansu 2>/dev/null)" || { log "tansu not installed"; return 1; }
    version="$("$bin" --version 2>/dev/null || true)"
    if [ "$version" != "tansu $TANSU_VERSION" ]; then
        log "found $bin reporting '${version:-nothing}', want 'tansu $TANSU_VERSION'"
        return 1
    fi
    log "checking that $bin ($version) starts with sqlite storage"
    tansu_starts "$bin"
}

if tansu_ok; then
    log "tansu $TANSU_VERSION present and starts"
else
    log "installing tansu $TANSU_VERSION (features: $TANSU_FEATURES); this compiles for several minutes"
    cargo install tansu --version "$TANSU_VERSION" --locked --force --features "$TANSU_FEATURES"
    tansu_ok || die "tansu $TANSU_VERSION was installed but does not start"
    log "tansu $TANSU_VERSION installed"
fi

log "done"
