#!/usr/bin/env python3
"""Generate crates/protocol/src/table.rs from a real redis-server's COMMAND reply.

Why generate: the proxy decides per command whether it is a write (to capture it)
and which arguments are keys (to partition and order records). A hand-written
table drifts from the server the moment Redis adds a command, a subcommand or a
key spec; the server's own COMMAND reply is the authority, so we read it.

Usage:
    python3 scripts/gen-command-table.py [--port P] [--host H] [--out FILE]

Without --port, a throw-away redis-server is started on a free loopback port
(no persistence, empty working directory) and stopped afterwards. With --port,
the server already listening there is used (module commands are skipped unless
--include-modules is given, so a developer's modules do not leak into the
checked-in table).

Standard library only. The client speaks RESP3 directly over a socket.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "crates" / "protocol" / "src" / "table.rs"

# COMMAND flag name -> constant in crates/protocol/src/commands.rs.
# An unknown flag aborts generation: add a constant there and a row here.
CMD_FLAGS = {
    "write": "CMD_WRITE",
    "readonly": "CMD_READONLY",
    "denyoom": "CMD_DENYOOM",
    "module": "CMD_MODULE",
    "admin": "CMD_ADMIN",
    "pubsub": "CMD_PUBSUB",
    "noscript": "CMD_NOSCRIPT",
    "blocking": "CMD_BLOCKING",
    "loading": "CMD_LOADING",
    "stale": "CMD_STALE",
    "skip_monitor": "CMD_SKIP_MONITOR",
    "skip_slowlog": "CMD_SKIP_SLOWLOG",
    "asking": "CMD_ASKING",
    "fast": "CMD_FAST",
    "no_auth": "CMD_NO_AUTH",
    "may_replicate": "CMD_MAY_REPLICATE",
    "no_mandatory_keys": "CMD_NO_MANDATORY_KEYS",
    "no_async_loading": "CMD_NO_ASYNC_LOADING",
    "no_multi": "CMD_NO_MULTI",
    "movablekeys": "CMD_MOVABLEKEYS",
    "allow_busy": "CMD_ALLOW_BUSY",
}

# Key-spec flag name -> constant in commands.rs.
KEY_FLAGS = {
    "RW": "KEY_RW",
    "RO": "KEY_RO",
    "OW": "KEY_OW",
    "RM": "KEY_RM",
    "access": "KEY_ACCESS",
    "update": "KEY_UPDATE",
    "insert": "KEY_INSERT",
    "delete": "KEY_DELETE",
    "not_key": "KEY_NOT_KEY",
    "incomplete": "KEY_INCOMPLETE",
    "variable_flags": "KEY_VARIABLE_FLAGS",
}

# Redis hides CMD_MAY_REPLICATE from the COMMAND reply on purpose (server.c:
# `/* {CMD_MAY_REPLICATE, "may_replicate"}, Hidden on purpose */`), so it is the
# one piece of data we cannot read from the server. These are the commands whose
# src/commands/*.json declare MAY_REPLICATE; the list is identical in Redis
# 7.0.15, 7.2.0, 7.4.0 and unstable (checked against the redis/redis sources).
# Re-check it when moving to a new Redis major version; the proxy adds the same
# list to the tables it reads from a primary (crates/protocol/src/server_table.rs).
MAY_REPLICATE = {"eval", "evalsha", "fcall", "pfcount", "publish", "spublish"}

# Commands whose key specs are `unknown` or `incomplete`: Redis cannot find all
# their keys from specs and falls back to a hand-written getkeys function, which
# commands.rs mirrors. A new command in this state needs a fallback there too.
KNOWN_KEY_FALLBACKS = {"sort", "sort_ro", "migrate"}


# --------------------------------------------------------------------------
# A minimal RESP3 client.


class RespError(Exception):
    pass


class Resp:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.buf.close()
        finally:
            self.sock.close()

    def call(self, *args: str | bytes):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _line(self) -> bytes:
        line = self.buf.readline()
        if not line.endswith(b"\r\n"):
            raise RespError("connection closed mid-reply")
        return line[:-2]

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-" or kind == b"!":
            if kind == b"!":
                rest = self._bulk(int(rest))
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$" or kind == b"=":
            n = int(rest)
            if n < 0:
                return None
            data = self._bulk(n)
            if kind == b"=":
                data = data[4:]  # skip the "txt:" encoding prefix
            return data.decode()
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        if kind == b"%":
            return {self._read(): self._read() for _ in range(int(rest))}
        if kind == b"|":  # attributes: read and drop, then the real value
            for _ in range(int(rest)):
                self._read()
                self._read()
            return self._read()
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        if kind == b",":
            return float(rest)
        if kind == b"(":
            return int(rest)
        raise RespError(f"unexpected RESP type {kind!r}")

    def _bulk(self, n: int) -> bytes:
        data = self.buf.read(n + 2)
        if len(data) != n + 2:
            raise RespError("connection closed mid-reply")
        return data[:-2]


# --------------------------------------------------------------------------
# A throw-away server.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="gen-command-table-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir.name,
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir.name,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.dir.cleanup()
                sys.exit(f"redis-server exited with {self.proc.returncode}: {err}")
            try:
                c = Resp("127.0.0.1", self.port, timeout=1)
                try:
                    if c.call("PING") == "PONG":
                        return
                finally:
                    c.close()
            except (OSError, RespError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("redis-server did not answer PING within 10s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.dir.cleanup()


# --------------------------------------------------------------------------
# COMMAND reply -> Rust.


def flag_expr(names, table, what: str, cmd: str) -> str:
    consts = []
    for n in names:
        if n not in table:
            sys.exit(
                f"{cmd}: unknown {what} flag {n!r}; add a constant to "
                f"crates/protocol/src/commands.rs and a row to this script"
            )
        consts.append(table[n])
    return " | ".join(consts) if consts else "0"


def begin_search_expr(bs: dict, cmd: str) -> str:
    kind, spec = bs.get("type"), bs.get("spec") or {}
    if kind == "index":
        return f"B::Index {{ pos: {int(spec['index'])} }}"
    if kind == "keyword":
        kw = spec["keyword"]
        if not all(0x20 < ord(ch) < 0x7F and ch not in '"\\' for ch in kw):
            sys.exit(f"{cmd}: unexpected keyword {kw!r}")
        return f'B::Keyword {{ keyword: "{kw}", startfrom: {int(spec["startfrom"])} }}'
    if kind == "unknown":
        return "B::Unknown"
    sys.exit(f"{cmd}: unknown begin_search type {kind!r}")


def find_keys_expr(fk: dict, cmd: str) -> str:
    kind, spec = fk.get("type"), fk.get("spec") or {}
    if kind == "range":
        return (
            f"F::Range {{ lastkey: {int(spec['lastkey'])}, keystep: {int(spec['keystep'])}, "
            f"limit: {int(spec['limit'])} }}"
        )
    if kind == "keynum":
        return (
            f"F::Keynum {{ keynumidx: {int(spec['keynumidx'])}, firstkey: {int(spec['firstkey'])}, "
            f"keystep: {int(spec['keystep'])} }}"
        )
    if kind == "unknown":
        return "F::Unknown"
    sys.exit(f"{cmd}: unknown find_keys type {kind!r}")


def flatten(reply, include_modules: bool):
    """Yields (name, arity, flags, key_specs, subcommand names) per command and subcommand."""
    out = {}
    skipped = []

    def add(entry, container=None):
        name, arity, flags = entry[0].lower(), int(entry[1]), [f.lower() for f in entry[2]]
        key_specs = entry[8] if len(entry) > 8 else []
        subs = entry[9] if len(entry) > 9 and entry[9] else []
        if "module" in flags and not include_modules:
            skipped.append(name)
            return
        if not name.isascii() or '"' in name or "\\" in name:
            sys.exit(f"unexpected command name {name!r}")
        if container is not None and not name.startswith(container + "|"):
            sys.exit(f"subcommand {name!r} not named {container}|...")
        if name in MAY_REPLICATE:
            flags.append("may_replicate")
        out[name] = {
            "arity": arity,
            "flags": flags,
            "key_specs": key_specs,
            "subs": [s[0].lower() for s in subs],
        }
        for s in subs:
            add(s, name)

    for entry in reply:
        add(entry)
    if skipped:
        print(f"skipped {len(skipped)} module commands: {', '.join(sorted(skipped))}", file=sys.stderr)
    return out


def render(cmds: dict, version: str) -> str:
    names = sorted(cmds)  # code-point order == byte order for ASCII names
    index = {n: i for i, n in enumerate(names)}
    if len(names) > 0xFFFF:
        sys.exit("too many commands for u16 indices")
    missing_may = MAY_REPLICATE - set(names)
    if missing_may:
        print(f"warning: MAY_REPLICATE commands not on this server: {sorted(missing_may)}", file=sys.stderr)

    lines = []
    fallbacks = set()
    for n in names:
        c = cmds[n]
        specs = []
        for ks in c["key_specs"]:
            kflags = [f for f in ks.get("flags", [])]
            bs = begin_search_expr(ks.get("begin_search", {}), n)
            fk = find_keys_expr(ks.get("find_keys", {}), n)
            if "not_key" not in kflags and (
                "incomplete" in kflags or bs == "B::Unknown" or fk == "F::Unknown"
            ):
                fallbacks.add(n)
            specs.append(f"K::new({flag_expr(kflags, KEY_FLAGS, 'key-spec', n)}, {bs}, {fk})")
        if c["subs"]:
            sub_idx = sorted(index[s] for s in c["subs"])
            start, count = sub_idx[0], len(sub_idx)
            if sub_idx != list(range(start, start + count)):
                sys.exit(f"{n}: subcommands are not contiguous in sorted order")
        else:
            start, count = 0, 0
        lines.append(
            f'    C::new("{n}", {c["arity"]}, {flag_expr(c["flags"], CMD_FLAGS, "command", n)}, '
            f"&[{', '.join(specs)}], {start}, {count}),"
        )

    unexpected = fallbacks - KNOWN_KEY_FALLBACKS
    if unexpected:
        print(
            "warning: these commands have unknown/incomplete key specs but no native key "
            f"fallback in commands.rs: {sorted(unexpected)}",
            file=sys.stderr,
        )

    head = f"""\
// @generated by scripts/gen-command-table.py from redis-server {version}. DO NOT EDIT.
// Regenerate with `python3 scripts/gen-command-table.py` (see commands.rs for why).
//
// One row per command and subcommand (`container|sub`), sorted by name so
// `commands::lookup` can binary-search it:
// C::new(name, arity, flags, key specs, first subcommand index, subcommand count)

use crate::commands::*;
use crate::commands::{{BeginSearch as B, CommandSpec as C, FindKeys as F, KeySpec as K}};

/// The redis-server version this table was read from.
pub const REDIS_VERSION: &str = "{version}";

/// Every command and subcommand of redis-server {version}, sorted by name.
#[rustfmt::skip]
pub static COMMANDS: [C; {len(names)}] = [
"""
    return head + "\n".join(lines) + "\n];\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, help="use the redis-server already listening on this port")
    ap.add_argument("--host", default="127.0.0.1", help="host of --port (default 127.0.0.1)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    ap.add_argument("--include-modules", action="store_true", help="keep commands that modules added")
    args = ap.parse_args()

    server = None
    host, port = args.host, args.port
    if port is None:
        server = OwnServer()
        host, port = "127.0.0.1", server.port
    try:
        conn = Resp(host, port)
        try:
            hello = conn.call("HELLO", "3")
            version = hello.get("version") if isinstance(hello, dict) else None
            if not version:
                sys.exit("HELLO 3 did not report a server version (need Redis >= 7)")
            reply = conn.call("COMMAND")
        finally:
            conn.close()
    finally:
        if server is not None:
            server.stop()

    cmds = flatten(reply, args.include_modules)
    text = render(cmds, version)
    tmp = args.out.with_suffix(".rs.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(cmds)} commands and subcommands, redis-server {version})")


if __name__ == "__main__":
    main()
