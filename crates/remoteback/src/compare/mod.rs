//! Comparing a primary and a backup: every key, by type, value and TTL.
//!
//! This is what tells an operator (and the test suite) that the backup is
//! right. It walks both servers with `SCAN`, so it works on any Redis the
//! user can read, and reads each key's value by its type: strings, lists,
//! hashes, sets, sorted sets and streams. Sets and hashes compare as
//! unordered. TTLs compare within a tolerance, since the backup applies an
//! absolute expiry some time after the primary did. Keys remoteback writes
//! for itself (`__remoteback:*`) are skipped.

pub mod client;

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

pub use client::Client;

/// Prefix of the keys remoteback keeps in the backup for itself.
pub const INTERNAL_PREFIX: &[u8] = b"__remoteback:";

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

/// A key as compared: type, value in canonical form, TTL in ms (-1 none).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    kind: String,
    value: String,
    ttl_ms: i64,
}

impl Snapshot {
    fn describe(&self) -> String {
        if self.kind == "none" {
            return "missing".to_string();
        }
        let ttl = if self.ttl_ms >= 0 {
            format!(", ttl {} ms", self.ttl_ms)
        } else {
            String::new()
        };
        format!("{} {}{ttl}", self.kind, self.value)
    }
}

/// Every difference between `primary` and `backup` in `options.dbs`.
pub fn differences(
    primary: &mut Client,
    backup: &mut Client,
    options: &Options,
) -> anyhow::Result<Vec<Difference>> {
    let mut diffs = Vec::new();
    for &db in &options.dbs {
        let db_arg = db.to_string();
        primary.ok(&["SELECT", &db_arg])?;
        backup.ok(&["SELECT", &db_arg])?;
        let mut keys = scan(primary)?;
        keys.extend(scan(backup)?);
        for key in keys {
            let p = snapshot(primary, &key)?;
            let b = snapshot(backup, &key)?;
            let ttl_close = (p.ttl_ms < 0) == (b.ttl_ms < 0)
                && (p.ttl_ms - b.ttl_ms).abs() <= options.ttl_tolerance_ms;
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

fn scan(client: &mut Client) -> anyhow::Result<BTreeSet<Bytes>> {
    let mut keys = BTreeSet::new();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let reply = client.ok(&[&b"SCAN"[..], &cursor, b"COUNT", b"1000"])?;
        let parts = reply.as_array().unwrap_or_default();
        let (Some(next), Some(batch)) = (
            parts.first().and_then(Frame::as_bytes),
            parts.get(1).and_then(Frame::as_array),
        ) else {
            anyhow::bail!("unexpected SCAN reply: {reply:?}");
        };
        keys.extend(
            batch
                .iter()
                .filter_map(Frame::as_bytes)
                .filter(|k| !k.starts_with(INTERNAL_PREFIX))
                .cloned(),
        );
        if &next[..] == b"0" {
            return Ok(keys);
        }
        cursor = next.clone();
    }
}

fn snapshot(client: &mut Client, key: &Bytes) -> anyhow::Result<Snapshot> {
    let kind = match client.ok(&[&b"TYPE"[..], key])? {
        Frame::Simple(k) | Frame::Bulk(k) => String::from_utf8_lossy(&k).into_owned(),
        other => anyhow::bail!("unexpected TYPE reply: {other:?}"),
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
        canonical(&kind, &client.ok(&args)?)
    };
    let ttl_ms = match client.ok(&[&b"PTTL"[..], key])? {
        Frame::Integer(t) => t.max(-1),
        _ => -1,
    };
    Ok(Snapshot {
        kind,
        value,
        ttl_ms,
    })
}

/// A value as text; sets and hashes sorted so order does not matter.
fn canonical(kind: &str, value: &Frame) -> String {
    let items: Vec<String> = match value {
        Frame::Array(items) => items.iter().map(text).collect(),
        Frame::Map(items) => items
            .chunks(2)
            .map(|p| p.iter().map(text).collect::<Vec<_>>().join("="))
            .collect(),
        other => vec![text(other)],
    };
    let mut items = match (kind, value) {
        ("hash", Frame::Array(_)) => items.chunks(2).map(|p| p.join("=")).collect(),
        _ => items,
    };
    if kind == "set" || kind == "hash" {
        items.sort();
    }
    format!("[{}]", items.join(", "))
}

fn text(value: &Frame) -> String {
    match value {
        Frame::Bulk(b) | Frame::Simple(b) if b.len() > 128 => {
            let hash = b.iter().fold(0xcbf29ce484222325u64, |h, x| {
                (h ^ u64::from(*x)).wrapping_mul(0x100000001b3)
            });
            format!("<{} bytes, fnv {hash:016x}>", b.len())
        }
        Frame::Bulk(b) | Frame::Simple(b) => format!("\"{}\"", b.escape_ascii()),
        Frame::Array(items) => format!(
            "[{}]",
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn sets_and_hashes_ignore_order_lists_do_not() {
        let a = Frame::Array(vec![bulk("x"), bulk("1"), bulk("y"), bulk("2")]);
        let b = Frame::Array(vec![bulk("y"), bulk("2"), bulk("x"), bulk("1")]);
        assert_eq!(canonical("hash", &a), canonical("hash", &b));
        assert_eq!(canonical("set", &a), canonical("set", &b));
        assert_ne!(canonical("list", &a), canonical("list", &b));
        // Field/value pairs stay paired: {x:2, y:1} is not {x:1, y:2}.
        let c = Frame::Array(vec![bulk("x"), bulk("2"), bulk("y"), bulk("1")]);
        assert_ne!(canonical("hash", &a), canonical("hash", &c));
    }

    #[test]
    fn binary_values_are_visible() {
        assert_eq!(
            text(&Frame::Bulk(Bytes::from_static(b"\0\xff\r\n"))),
            "\"\\x00\\xff\\r\\n\""
        );
    }
}
