//! The fast path: a batch of keys compared in a few pipelines.
//!
//! Most keys are small, and comparing them one command at a time would
//! leave both servers waiting on round trips. A batch first asks each side
//! for every key's `PTTL` and `MEMORY USAGE` in one pipeline, then for the
//! `DUMP` of the keys small on both sides: equal payloads are equal values
//! (type included), and only the expiries are left to compare. Small keys
//! whose payloads differ (another encoding or server version can serialize
//! an equal value differently) are read whole and compared by type, still a
//! pipeline for the batch ([`super::small`]). A key that is large, that this
//! does not prove equal or that changed between the pipelines is compared in
//! full by type ([`super::key`]).

use std::time::Duration;

use anyhow::anyhow;
use redis::Value;

use super::difference::{Difference, Kind};
use super::key::{self, Head};
use super::reply::{bytes, expect_len, int, must};
use super::side::{pipeline, Pair};
use super::small;
use super::ttl::Ttl;

/// Keys whose `MEMORY USAGE` is at most this on both sides are compared by
/// their `DUMP` payloads; larger ones in chunks.
const SMALL: i64 = 64 * 1024;
/// About how many bytes of payloads one `DUMP` pipeline may bring back.
const DUMP_BUDGET: i64 = 8 << 20;

/// What the first pipeline says of a key on one side.
#[derive(Clone, Copy)]
struct Probe {
    ttl: Ttl,
    /// `None` when the key vanished between the two commands.
    memory: Option<i64>,
}

/// The differences among `keys` of `db`.
pub fn compare(
    pair: &Pair,
    db: u32,
    keys: &[Vec<u8>],
    tolerance: Duration,
) -> anyhow::Result<Vec<Difference>> {
    let mut pipe = pipeline();
    for k in keys {
        pipe.cmd("PTTL").arg(k).cmd("MEMORY").arg("USAGE").arg(k);
    }
    let (s, t) = pair.both(pipe)?;
    let (s, t) = (probes(&s, keys.len())?, probes(&t, keys.len())?);

    let mut differences = Vec::new();
    let mut full = Vec::new();
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut small = Vec::new();
    let mut reread = Vec::new();
    let mut equal_values = Vec::new();
    for (i, (sp, tp)) in s.iter().zip(&t).enumerate() {
        match (sp.ttl.exists(), tp.ttl.exists()) {
            (false, false) => {}
            (true, false) => missing.push(i),
            (false, true) => extra.push(i),
            (true, true) => match (sp.memory, tp.memory) {
                (Some(a), Some(b)) if a <= SMALL && b <= SMALL => small.push(i),
                _ => full.push(i),
            },
        }
    }

    // The types of one-sided keys travel with the first DUMP pipeline.
    let mut chunks = budgeted(&small, |i| s[i].memory.max(t[i].memory).unwrap_or(0));
    if chunks.is_empty() && !(missing.is_empty() && extra.is_empty()) {
        chunks.push(Vec::new());
    }
    for (n, chunk) in chunks.iter().enumerate() {
        let (only_s, only_t): (&[usize], &[usize]) = if n == 0 {
            (&missing, &extra)
        } else {
            (&[], &[])
        };
        let request = |typed: &[usize]| {
            let mut pipe = pipeline();
            for &i in typed {
                pipe.cmd("TYPE").arg(&keys[i]);
            }
            for &i in chunk {
                pipe.cmd("DUMP").arg(&keys[i]);
            }
            pipe
        };
        let (sr, tr) = pair.each(request(only_s), request(only_t))?;
        expect_len(&sr, only_s.len() + chunk.len(), "TYPE, DUMP")?;
        expect_len(&tr, only_t.len() + chunk.len(), "TYPE, DUMP")?;
        for (j, &i) in only_s.iter().enumerate() {
            match kind(&sr[j])? {
                Some(kind) => differences.push(Difference {
                    db,
                    key: keys[i].clone(),
                    kind: Kind::Missing,
                    source: Head {
                        kind,
                        ttl: s[i].ttl,
                    }
                    .describe(),
                    target: "none".to_string(),
                }),
                None => full.push(i),
            }
        }
        for (j, &i) in only_t.iter().enumerate() {
            match kind(&tr[j])? {
                Some(kind) => differences.push(Difference {
                    db,
                    key: keys[i].clone(),
                    kind: Kind::Extra,
                    source: "none".to_string(),
                    target: Head {
                        kind,
                        ttl: t[i].ttl,
                    }
                    .describe(),
                }),
                None => full.push(i),
            }
        }
        let (sd, td) = (&sr[only_s.len()..], &tr[only_t.len()..]);
        for (j, &i) in chunk.iter().enumerate() {
            let (a, b) = (must(&sd[j], "DUMP")?, must(&td[j], "DUMP")?);
            match (bytes(a), bytes(b)) {
                (Some(a), Some(b)) if a == b => equal_values.push(i),
                (Some(_), Some(_)) => reread.push(i),
                _ => full.push(i),
            }
        }
    }
    if !reread.is_empty() {
        let read: Vec<&[u8]> = reread.iter().map(|&i| keys[i].as_slice()).collect();
        for (&i, equal) in reread.iter().zip(small::equal(pair, &read)?) {
            if equal {
                equal_values.push(i);
            } else {
                full.push(i);
            }
        }
    }
    for i in equal_values {
        if !s[i].ttl.close(t[i].ttl, tolerance) {
            differences.push(Difference {
                db,
                key: keys[i].clone(),
                kind: Kind::Ttl,
                source: s[i].ttl.describe(),
                target: t[i].ttl.describe(),
            });
        }
    }

    for i in full {
        let verdict = key::compare(pair, &keys[i], tolerance)?;
        if let Some(d) = verdict.into_difference(db, keys[i].clone()) {
            differences.push(d);
        }
    }
    Ok(differences)
}

/// `PTTL` and `MEMORY USAGE` replies, a pair a key.
fn probes(replies: &[Value], keys: usize) -> anyhow::Result<Vec<Probe>> {
    expect_len(replies, 2 * keys, "PTTL, MEMORY USAGE")?;
    replies
        .chunks(2)
        .map(|pair| {
            let pttl = int(must(&pair[0], "PTTL")?)
                .ok_or_else(|| anyhow!("PTTL: unexpected reply {:?}", pair[0]))?;
            let memory = match must(&pair[1], "MEMORY USAGE")? {
                Value::Nil => None,
                other => Some(
                    int(other)
                        .ok_or_else(|| anyhow!("MEMORY USAGE: unexpected reply {other:?}"))?,
                ),
            };
            let ttl = if memory.is_none() {
                Ttl::Absent
            } else {
                Ttl::from_pttl(pttl)
            };
            Ok(Probe { ttl, memory })
        })
        .collect()
}

/// A `TYPE` reply; `None` for a key gone meanwhile.
fn kind(reply: &Value) -> anyhow::Result<Option<String>> {
    let kind =
        bytes(must(reply, "TYPE")?).ok_or_else(|| anyhow!("TYPE: unexpected reply {reply:?}"))?;
    Ok((kind != b"none").then(|| String::from_utf8_lossy(kind).into_owned()))
}

/// `items` split into runs whose `size` adds up to about [`DUMP_BUDGET`].
fn budgeted(items: &[usize], size: impl Fn(usize) -> i64) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut total = 0;
    for &i in items {
        if !chunk.is_empty() && total + size(i) > DUMP_BUDGET {
            chunks.push(std::mem::take(&mut chunk));
            total = 0;
        }
        total += size(i);
        chunk.push(i);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_split_by_their_size() {
        let items: Vec<usize> = (0..10).collect();
        assert_eq!(budgeted(&items, |_| 1).len(), 1);
        let chunks = budgeted(&items, |_| DUMP_BUDGET / 3);
        assert_eq!(
            chunks,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
        assert!(budgeted(&[], |_| 1).is_empty());
    }
}
