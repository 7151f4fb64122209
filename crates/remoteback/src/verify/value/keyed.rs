//! Hashes, sets and sorted sets: the same count on both sides, then every
//! element of the source found on the target with the same value (field
//! value, membership, score). Equal counts and every source element on the
//! target make the two equal, whatever order each server keeps.
//!
//! The source is read a page at a time (`HSCAN`, `SSCAN`, `ZSCAN`) and each
//! page is looked up on the target in one command (`HMGET`, `SMISMEMBER`,
//! `ZMSCORE`) while the source reads its next page.

use anyhow::anyhow;
use redis::Value;

use super::super::escape::preview;
use super::super::reply::{array, bytes, int, ok, Halt, Step};
use super::super::side::{pipeline, Pair};
use super::{lengths, Described};

/// Elements asked of each `*SCAN` page (a hint; small encodings come whole).
const PAGE: usize = 1000;

/// How one of the three types is read.
pub struct Shape {
    name: &'static str,
    count: &'static str,
    scan: &'static str,
    lookup: &'static str,
    unit: &'static str,
    /// The scan gives each element with its value (a field's value, a score).
    paired: bool,
}

pub const HASH: Shape = Shape {
    name: "hash",
    count: "HLEN",
    scan: "HSCAN",
    lookup: "HMGET",
    unit: "fields",
    paired: true,
};

pub const SET: Shape = Shape {
    name: "set",
    count: "SCARD",
    scan: "SSCAN",
    lookup: "SMISMEMBER",
    unit: "members",
    paired: false,
};

pub const ZSET: Shape = Shape {
    name: "zset",
    count: "ZCARD",
    scan: "ZSCAN",
    lookup: "ZMSCORE",
    unit: "members",
    paired: true,
};

pub fn compare(pair: &Pair, key: &[u8], shape: &Shape) -> Step<Described> {
    let (s_count, t_count) = lengths(pair, shape.count, key)?;
    let size = |n: i64| format!("{}, {n} {}", shape.name, shape.unit);
    if s_count != t_count {
        return Ok(Some((size(s_count), size(t_count))));
    }
    if s_count == 0 {
        return Ok(None);
    }
    let scan = |cursor: &[u8]| {
        let mut pipe = pipeline();
        pipe.cmd(shape.scan)
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE);
        pipe
    };
    let (mut cursor, mut items) = into_page(pair.source.query(scan(b"0"))?, shape.scan)?;
    loop {
        let step = if shape.paired { 2 } else { 1 };
        let elements: Vec<&[u8]> = items
            .chunks(step)
            .map(|c| bytes(&c[0]).ok_or(Halt::Changed))
            .collect::<Step<_>>()?;
        let next = if elements.is_empty() {
            None
        } else {
            let mut lookup = pipeline();
            lookup.cmd(shape.lookup).arg(key).arg(&elements);
            let (next, found) = if cursor == b"0" {
                (None, pair.target.query(lookup)?)
            } else {
                let (s, t) = pair.each(scan(&cursor), lookup)?;
                (Some(s), t)
            };
            let found = found
                .first()
                .ok_or_else(|| Halt::Failed(anyhow!("{}: no reply", shape.lookup)))?;
            let found = array(ok(found, shape.lookup)?).ok_or(Halt::Changed)?;
            if found.len() != elements.len() {
                return Err(Halt::Changed);
            }
            for (i, (element, there)) in elements.iter().zip(found).enumerate() {
                let here = shape.paired.then(|| &items[2 * i + 1]);
                if !same(shape, here, there) {
                    return Ok(Some((
                        format!("{}, {}", size(s_count), describe(shape, element, here)),
                        format!(
                            "{}, {}",
                            size(t_count),
                            describe_target(shape, element, there)
                        ),
                    )));
                }
            }
            next
        };
        let next = match next {
            Some(next) => Some(next),
            None if cursor != b"0" => Some(pair.source.query(scan(&cursor))?),
            None => None,
        };
        match next {
            None => return Ok(None),
            Some(replies) => (cursor, items) = into_page(replies, shape.scan)?,
        }
    }
}

/// Whether the target's lookup reply `there` matches the source's element
/// with its value `here`.
fn same(shape: &Shape, here: Option<&Value>, there: &Value) -> bool {
    match shape.lookup {
        "SMISMEMBER" => int(there) == Some(1),
        "ZMSCORE" => match (here.and_then(bytes), bytes(there)) {
            (Some(a), Some(b)) => scores_equal(a, b),
            _ => false,
        },
        _ => match (here.and_then(bytes), bytes(there)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

/// Scores as numbers (`1` and `1.0` are one score), as text when either is
/// not one.
pub fn scores_equal(a: &[u8], b: &[u8]) -> bool {
    let number = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<f64>().ok();
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn describe(shape: &Shape, element: &[u8], value: Option<&Value>) -> String {
    let value = value.and_then(bytes).map(preview).unwrap_or_default();
    match shape.name {
        "hash" => format!("field {} = {value}", preview(element)),
        "set" => format!("has {}", preview(element)),
        _ => format!(
            "member {} score {}",
            preview(element),
            value.trim_matches('"')
        ),
    }
}

fn describe_target(shape: &Shape, element: &[u8], there: &Value) -> String {
    match (shape.name, bytes(there)) {
        ("hash", Some(v)) => format!("field {} = {}", preview(element), preview(v)),
        ("zset", Some(v)) => format!(
            "member {} score {}",
            preview(element),
            String::from_utf8_lossy(v)
        ),
        ("hash", None) => format!("no field {}", preview(element)),
        _ => format!("no member {}", preview(element)),
    }
}

/// A `*SCAN` reply taken apart: the next cursor and the items.
fn into_page(mut replies: Vec<Value>, command: &str) -> Step<(Vec<u8>, Vec<Value>)> {
    let reply = replies
        .pop()
        .ok_or_else(|| Halt::Failed(anyhow!("{command}: no reply")))?;
    ok(&reply, command)?;
    if let Value::Array(mut parts) = reply {
        if parts.len() == 2 {
            let items = parts.pop();
            let cursor = parts.pop();
            if let (Some(Value::Array(items)), Some(cursor)) = (items, cursor) {
                if let Some(cursor) = bytes(&cursor) {
                    return Ok((cursor.to_vec(), items));
                }
            }
        }
    }
    Err(Halt::Failed(anyhow!("{command}: unexpected reply")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_compare_as_numbers() {
        assert!(scores_equal(b"1", b"1"));
        assert!(scores_equal(b"1", b"1.0"));
        assert!(scores_equal(b"inf", b"inf"));
        assert!(scores_equal(b"-inf", b"-inf"));
        assert!(!scores_equal(b"inf", b"-inf"));
        assert!(!scores_equal(b"1.5", b"1.25"));
        assert!(scores_equal(b"0.1", b"0.10000000000000001"));
    }

    #[test]
    fn lookups_match_by_type() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(same(&HASH, Some(&bulk("v")), &bulk("v")));
        assert!(!same(&HASH, Some(&bulk("v")), &bulk("w")));
        assert!(!same(&HASH, Some(&bulk("v")), &Value::Nil));
        assert!(same(&SET, None, &Value::Int(1)));
        assert!(!same(&SET, None, &Value::Int(0)));
        assert!(same(&ZSET, Some(&bulk("2")), &bulk("2")));
        assert!(!same(&ZSET, Some(&bulk("2")), &Value::Nil));
    }
}
