//! Comparing a primary and a backup: every key, by type, value and TTL.
//!
//! This is what tells an operator (and the test suite) that the backup is
//! right. It walks both servers with `SCAN`, so it works on any Redis the
//! user can read, and reads each key's value by its type: strings, lists,
//! hashes, sets, sorted sets and streams. Sets and hashes compare as
//! unordered. TTLs compare within a tolerance, since the backup applies an
//! absolute expiry some time after the primary did. Keys remoteback writes
//! for itself (`__remoteback:*`) are skipped.
//!
//! Connections are the `redis` crate's ([`connect`]), so a URL brings its
//! ACL user, password and database.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use redis::{Connection, Value};

/// How long one reply may take before the comparison fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection for comparing, from a `redis://` URL
/// (`redis://[user:password@]host:port[/db]`). It sends nothing of its own
/// to the server (no `CLIENT SETINFO`) besides what the URL asks for.
pub fn connect(url: &str) -> anyhow::Result<Connection> {
    let connection = redis::IntoConnectionInfo::into_connection_info(url)
        .map(|info| {
            let quiet = info.redis_settings().clone().set_skip_set_lib_name();
            info.set_redis_settings(quiet)
        })
        .and_then(redis::Client::open)
        .and_then(|c| c.get_connection_with_timeout(REPLY_TIMEOUT))
        .with_context(|| format!("connect to {url}"))?;
    connection.set_read_timeout(Some(REPLY_TIMEOUT))?;
    connection.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(connection)
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct Options {
    /// Databases to walk.
    pub dbs: Vec<u32>,
    /// Largest accepted difference between the two TTLs, in milliseconds.
    pub ttl_tolerance_ms: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dbs: vec![0],
            ttl_tolerance_ms: 2000,
        }
    }
}

/// One key that is not the same on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub db: u32,
    pub key: Bytes,
    pub primary: String,
    pub backup: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "db {} key {}: primary {} / backup {}",
            self.db,
            self.key.escape_ascii(),
            self.primary,
            self.backup
        )
    }
}

/// A key as compared: type, value in canonical form, and when it expires
/// (ms since the epoch, -1 never). The expiry is compared as an absolute
/// time: a relative TTL read on each side would differ by however long the
/// reads in between took (seconds, for a big key).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    kind: String,
    value: String,
    expires_at_ms: i64,
}

impl Snapshot {
    fn describe(&self) -> String {
        if self.kind == "none" {
            return "missing".to_string();
        }
        let ttl = if self.expires_at_ms >= 0 {
            format!(", expires at {} ms", self.expires_at_ms)
        } else {
            String::new()
        };
        format!("{} {}{ttl}", self.kind, self.value)
    }
}

/// Every difference between `primary` and `backup` in `options.dbs`.
pub fn differences(
    primary: &mut Connection,
    backup: &mut Connection,
    options: &Options,
) -> anyhow::Result<Vec<Difference>> {
    let mut diffs = Vec::new();
    for &db in &options.dbs {
        let db_arg = db.to_string();
        call(primary, &[b"SELECT", db_arg.as_bytes()])?;
        call(backup, &[b"SELECT", db_arg.as_bytes()])?;
        let mut keys = scan(primary)?;
        keys.extend(scan(backup)?);
        for key in keys {
            let p = snapshot(primary, &key)?;
            let b = snapshot(backup, &key)?;
            let ttl_close = (p.expires_at_ms < 0) == (b.expires_at_ms < 0)
                && (p.expires_at_ms - b.expires_at_ms).abs() <= options.ttl_tolerance_ms;
            if p.kind != b.kind || p.value != b.value || !ttl_close {
                diffs.push(Difference {
                    db,
                    key,
                    primary: p.describe(),
                    backup: b.describe(),
                });
            }
        }
    }
    Ok(diffs)
}

/// Sends one command (arguments as bytes) and returns its reply; a Redis
/// error is an `Err`.
fn call(connection: &mut Connection, args: &[&[u8]]) -> anyhow::Result<Value> {
    let mut command = redis::Cmd::new();
    for arg in args {
        command.arg(*arg);
    }
    command.query(connection).with_context(|| {
        let name = args.first().map(|a| a.escape_ascii().to_string());
        format!("{} failed", name.unwrap_or_default())
    })
}

/// The bytes of a string reply.
fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn scan(connection: &mut Connection) -> anyhow::Result<BTreeSet<Bytes>> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    loop {
        let reply = call(connection, &[b"SCAN", &cursor, b"COUNT", b"1000"])?;
        let (Some(next), Some(batch)) = (
            as_array(&reply).and_then(|p| p.first()).and_then(bytes_of),
            as_array(&reply).and_then(|p| p.get(1)).and_then(as_array),
        ) else {
            anyhow::bail!("unexpected SCAN reply: {reply:?}");
        };
        keys.extend(
            batch
                .iter()
                .filter_map(bytes_of)
                .filter(|k| !k.starts_with(remoteback_replay::KEY_PREFIX.as_bytes()))
                .map(Bytes::copy_from_slice),
        );
        if next == b"0" {
            return Ok(keys);
        }
        cursor = next.to_vec();
    }
}

fn as_array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn snapshot(connection: &mut Connection, key: &Bytes) -> anyhow::Result<Snapshot> {
    let reply = call(connection, &[b"TYPE", key])?;
    let kind = match bytes_of(&reply) {
        Some(k) => String::from_utf8_lossy(k).into_owned(),
        None => anyhow::bail!("unexpected TYPE reply: {reply:?}"),
    };
    let read: &[&[u8]] = match kind.as_str() {
        "string" => &[b"GET"],
        "list" => &[b"LRANGE", b"0", b"-1"],
        "hash" => &[b"HGETALL"],
        "set" => &[b"SMEMBERS"],
        "zset" => &[b"ZRANGE", b"0", b"-1", b"WITHSCORES"],
        "stream" => &[b"XRANGE", b"-", b"+"],
        _ => &[],
    };
    let value = if read.is_empty() {
        String::new()
    } else {
        let mut args: Vec<&[u8]> = vec![read[0], key];
        args.extend_from_slice(&read[1..]);
        canonical(&kind, &call(connection, &args)?)
    };
    let expires_at_ms = match call(connection, &[b"PEXPIRETIME", key]) {
        Ok(Value::Int(t)) => t.max(-1),
        // Before Redis 7.0: the relative TTL, made absolute here.
        _ => match call(connection, &[b"PTTL", key])? {
            Value::Int(t) if t >= 0 => remoteback_protocol::record::now_ms() as i64 + t,
            _ => -1,
        },
    };
    Ok(Snapshot {
        kind,
        value,
        expires_at_ms,
    })
}

/// A value as text; sets and hashes sorted so order does not matter.
fn canonical(kind: &str, value: &Value) -> String {
    let items: Vec<String> = match value {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{}={}", text(k), text(v)))
            .collect(),
        other => vec![text(other)],
    };
    let mut items = match (kind, value) {
        ("hash", Value::Array(_)) => items.chunks(2).map(|p| p.join("=")).collect(),
        _ => items,
    };
    if kind == "set" || kind == "hash" {
        items.sort();
    }
    format!("[{}]", items.join(", "))
}

fn text(value: &Value) -> String {
    if let Some(b) = bytes_of(value) {
        if b.len() > 128 {
            let hash = b.iter().fold(0xcbf29ce484222325u64, |h, x| {
                (h ^ u64::from(*x)).wrapping_mul(0x100000001b3)
            });
            return format!("<{} bytes, fnv {hash:016x}>", b.len());
        }
        return format!("\"{}\"", b.escape_ascii());
    }
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn sets_and_hashes_ignore_order_lists_do_not() {
        let a = Value::Array(vec![bulk("x"), bulk("1"), bulk("y"), bulk("2")]);
        let b = Value::Array(vec![bulk("y"), bulk("2"), bulk("x"), bulk("1")]);
        assert_eq!(canonical("hash", &a), canonical("hash", &b));
        assert_eq!(canonical("set", &a), canonical("set", &b));
        assert_ne!(canonical("list", &a), canonical("list", &b));
        // Field/value pairs stay paired: {x:2, y:1} is not {x:1, y:2}.
        let c = Value::Array(vec![bulk("x"), bulk("2"), bulk("y"), bulk("1")]);
        assert_ne!(canonical("hash", &a), canonical("hash", &c));
    }

    #[test]
    fn binary_values_are_visible() {
        assert_eq!(
            text(&Value::BulkString(b"\0\xff\r\n".to_vec())),
            "\"\\x00\\xff\\r\\n\""
        );
    }
}
