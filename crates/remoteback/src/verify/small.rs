//! Small keys whose `DUMP` payloads differ, read whole and compared by type
//! in two pipelines for the batch.
//!
//! Equal values often serialize differently: a set in a hash table comes out
//! in an order that depends on each server's hash seed, an integer string
//! may be encoded as a number on one side only. For keys known to be small
//! (`MEMORY USAGE`), reading the value whole (`SMEMBERS`, `HGETALL`, ...)
//! is cheap, and comparing it unordered where the type is unordered settles
//! most of them without the per-key round trips of the chunked path. What
//! this does not prove equal goes on to that path, which also describes the
//! difference.

use redis::Value;

use super::reply::{array, bytes, expect_len, must};
use super::side::{pipeline, Pair};
use super::value::scores_equal;

/// For each key, whether its values are equal on both sides.
pub fn equal(pair: &Pair, keys: &[&[u8]]) -> anyhow::Result<Vec<bool>> {
    let mut pipe = pipeline();
    for k in keys {
        pipe.cmd("TYPE").arg(*k);
    }
    let (s, t) = pair.both(pipe)?;
    expect_len(&s, keys.len(), "TYPE")?;
    expect_len(&t, keys.len(), "TYPE")?;
    let mut kinds = Vec::with_capacity(keys.len());
    for (a, b) in s.iter().zip(&t) {
        let (a, b) = (bytes(must(a, "TYPE")?), bytes(must(b, "TYPE")?));
        kinds.push(match (a, b) {
            (Some(a), Some(b)) if a == b => read_command(a),
            _ => None,
        });
    }
    let mut pipe = pipeline();
    let mut read = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if let Some(command) = kind {
            pipe.cmd(command[0]).arg(keys[i]).arg(&command[1..]);
            read.push(i);
        }
    }
    let (s, t) = pair.both(pipe)?;
    expect_len(&s, read.len(), "read")?;
    expect_len(&t, read.len(), "read")?;
    let mut equal = vec![false; keys.len()];
    for (j, &i) in read.iter().enumerate() {
        let kind = kinds[i].map(|c| c[0]).unwrap_or_default();
        equal[i] = same(kind, &s[j], &t[j]);
    }
    Ok(equal)
}

/// The command reading a whole value of type `kind`, with its arguments
/// after the key; `None` for types read otherwise (streams, modules).
fn read_command(kind: &[u8]) -> Option<&'static [&'static str]> {
    match kind {
        b"string" => Some(&["GET"]),
        b"list" => Some(&["LRANGE", "0", "-1"]),
        b"hash" => Some(&["HGETALL"]),
        b"set" => Some(&["SMEMBERS"]),
        b"zset" => Some(&["ZRANGE", "0", "-1", "WITHSCORES"]),
        _ => None,
    }
}

/// Whether two whole values read by `command` are equal.
fn same(command: &str, a: &Value, b: &Value) -> bool {
    if matches!(a, Value::ServerError(_)) || matches!(b, Value::ServerError(_)) {
        return false;
    }
    match command {
        "GET" => bytes(a).is_some() && bytes(a) == bytes(b),
        "LRANGE" => array(a).is_some() && a == b,
        "SMEMBERS" => sorted(a, 1) == sorted(b, 1) && array(a).is_some(),
        "HGETALL" => {
            sorted(a, 2) == sorted(b, 2) && (array(a).is_some() || matches!(a, Value::Map(_)))
        }
        "ZRANGE" => match (array(a), array(b)) {
            // Ordered by score then member on both sides.
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.chunks(2).zip(b.chunks(2)).all(|(x, y)| {
                        bytes(&x[0]) == bytes(&y[0])
                            && match (x.get(1).and_then(bytes), y.get(1).and_then(bytes)) {
                                (Some(p), Some(q)) => scores_equal(p, q),
                                _ => false,
                            }
                    })
            }
            _ => false,
        },
        _ => false,
    }
}

/// The items of a reply in groups of `width` (a member, a field and its
/// value), sorted: an unordered value in one canonical order.
fn sorted(value: &Value, width: usize) -> Option<Vec<Vec<&[u8]>>> {
    let items: Vec<&[u8]> = match value {
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [bytes(k), bytes(v)])
            .collect::<Option<_>>()?,
        other => array(other)?.iter().map(bytes).collect::<Option<_>>()?,
    };
    let mut groups: Vec<Vec<&[u8]>> = items.chunks(width).map(<[&[u8]]>::to_vec).collect();
    groups.sort_unstable();
    Some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn sets_and_hashes_are_unordered_lists_are_not() {
        let (a, b) = (items(&["x", "1", "y", "2"]), items(&["y", "2", "x", "1"]));
        assert!(same("SMEMBERS", &a, &b));
        assert!(same("HGETALL", &a, &b));
        assert!(!same("LRANGE", &a, &b));
        // A hash's fields keep their own values.
        let c = items(&["x", "2", "y", "1"]);
        assert!(!same("HGETALL", &a, &c));
        assert!(same("SMEMBERS", &a, &c), "the same four members");
    }

    #[test]
    fn sorted_sets_compare_their_scores_as_numbers() {
        let a = items(&["a", "1", "b", "2.5"]);
        assert!(same("ZRANGE", &a, &items(&["a", "1.0", "b", "2.5"])));
        assert!(!same("ZRANGE", &a, &items(&["a", "1", "b", "3"])));
        assert!(!same("ZRANGE", &a, &items(&["a", "1"])));
    }

    #[test]
    fn strings_and_nothing() {
        let v = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(same("GET", &v("12"), &v("12")));
        assert!(!same("GET", &v("12"), &v("13")));
        // A key gone meanwhile proves nothing.
        assert!(!same("GET", &Value::Nil, &Value::Nil));
        assert!(read_command(b"stream").is_none());
    }
}
