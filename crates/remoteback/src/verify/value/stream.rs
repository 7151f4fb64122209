//! Streams: their metadata, their entries in order a page at a time
//! (`XRANGE`), and their consumer groups.
//!
//! Of what `XINFO` gives, only what two copies of one history share is
//! compared: a group's name, last-delivered-id, entries read, lag, pending
//! count, its consumers with their pending counts and the pending summary;
//! not idle times, which depend on when the copy was made.

use anyhow::anyhow;
use redis::Value;

use super::super::escape::preview;
use super::super::reply::{array, bytes, ok, text, Halt, Step};
use super::super::side::{pipeline, Pair};
use super::Described;

/// Entries an `XRANGE` reads from each side.
const PAGE: usize = 100;

/// `XINFO STREAM` fields two copies share.
const STREAM_FIELDS: &[&str] = &[
    "length",
    "last-generated-id",
    "max-deleted-entry-id",
    "entries-added",
    "groups",
];

/// `XINFO GROUPS` fields two copies share.
const GROUP_FIELDS: &[&str] = &[
    "name",
    "consumers",
    "pending",
    "last-delivered-id",
    "entries-read",
    "lag",
];

/// `XINFO CONSUMERS` fields two copies share.
const CONSUMER_FIELDS: &[&str] = &["name", "pending"];

pub fn compare(pair: &Pair, key: &[u8]) -> Step<Described> {
    if let Some(d) = metadata(pair, key)? {
        return Ok(Some(d));
    }
    if let Some(d) = entries(pair, key)? {
        return Ok(Some(d));
    }
    groups(pair, key)
}

fn metadata(pair: &Pair, key: &[u8]) -> Step<Described> {
    let mut pipe = pipeline();
    pipe.cmd("XINFO").arg("STREAM").arg(key);
    let (s, t) = pair.both(pipe)?;
    let (s, t) = (one(&s, "XINFO STREAM")?, one(&t, "XINFO STREAM")?);
    Ok(first_difference(
        "stream",
        &pick(s, STREAM_FIELDS)?,
        &pick(t, STREAM_FIELDS)?,
    ))
}

fn entries(pair: &Pair, key: &[u8]) -> Step<Described> {
    let mut start = b"-".to_vec();
    loop {
        let mut pipe = pipeline();
        pipe.cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE);
        let (s, t) = pair.both(pipe)?;
        let s = array(one(&s, "XRANGE")?).ok_or(Halt::Changed)?;
        let t = array(one(&t, "XRANGE")?).ok_or(Halt::Changed)?;
        if let Some(at) = (0..s.len().max(t.len())).find(|&i| s.get(i) != t.get(i)) {
            let describe = |side: &[Value]| match side.get(at) {
                Some(entry) => format!("stream, entry {}", text(entry)),
                None => "stream, no more entries".to_string(),
            };
            return Ok(Some((describe(s), describe(t))));
        }
        if s.len() < PAGE {
            return Ok(None);
        }
        let last = s
            .last()
            .and_then(array)
            .and_then(|entry| entry.first())
            .and_then(bytes)
            .ok_or_else(|| Halt::Failed(anyhow!("XRANGE: unexpected entry")))?;
        // The next page starts after the last entry (exclusive range).
        start = [b"(", last].concat();
    }
}

fn groups(pair: &Pair, key: &[u8]) -> Step<Described> {
    let mut pipe = pipeline();
    pipe.cmd("XINFO").arg("GROUPS").arg(key);
    let (s, t) = pair.both(pipe)?;
    let s_raw = array(one(&s, "XINFO GROUPS")?).ok_or(Halt::Changed)?;
    let t_raw = array(one(&t, "XINFO GROUPS")?).ok_or(Halt::Changed)?;
    let s: Vec<_> = s_raw
        .iter()
        .map(|g| pick(g, GROUP_FIELDS))
        .collect::<Step<_>>()?;
    let t: Vec<_> = t_raw
        .iter()
        .map(|g| pick(g, GROUP_FIELDS))
        .collect::<Step<_>>()?;
    for (i, (sg, tg)) in s.iter().zip(&t).enumerate() {
        let label = format!("stream, group {}", sg[0].1);
        if let Some(d) = first_difference(&label, sg, tg) {
            return Ok(Some(d));
        }
        let name = field(&s_raw[i], "name")
            .and_then(bytes)
            .ok_or(Halt::Changed)?;
        if let Some(d) = members(pair, key, name, &label)? {
            return Ok(Some(d));
        }
    }
    if s.len() != t.len() {
        // Groups come sorted by name: the first one past the shorter list.
        let describe = |side: &[Vec<(&str, String)>]| match side.get(s.len().min(t.len())) {
            Some(g) => format!("stream, {} groups, group {}", side.len(), g[0].1),
            None => format!("stream, {} groups", side.len()),
        };
        return Ok(Some((describe(&s), describe(&t))));
    }
    Ok(None)
}

/// A group's consumers and its pending summary.
fn members(pair: &Pair, key: &[u8], group: &[u8], label: &str) -> Step<Described> {
    let mut pipe = pipeline();
    pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(group);
    pipe.cmd("XPENDING").arg(key).arg(group);
    let (s, t) = pair.both(pipe)?;
    let consumers = |replies: &[Value]| -> Step<Vec<Vec<(&'static str, String)>>> {
        let list = replies.first().ok_or(Halt::Changed)?;
        let list = array(ok(list, "XINFO CONSUMERS")?).ok_or(Halt::Changed)?;
        list.iter().map(|c| pick(c, CONSUMER_FIELDS)).collect()
    };
    let (sc, tc) = (consumers(&s)?, consumers(&t)?);
    let flat = |all: &[Vec<(&'static str, String)>]| -> Vec<(&'static str, String)> {
        all.iter()
            .flat_map(|c| {
                let name = c[0].1.clone();
                c[1..]
                    .iter()
                    .map(move |(f, v)| ("consumer", format!("{name} {f} {v}")))
            })
            .collect()
    };
    let (sc, tc) = (flat(&sc), flat(&tc));
    if sc.len() != tc.len() {
        return Ok(Some((
            format!("{label}, {} consumers", sc.len()),
            format!("{label}, {} consumers", tc.len()),
        )));
    }
    if let Some(d) = first_difference(label, &sc, &tc) {
        return Ok(Some(d));
    }
    let pending = |replies: &[Value]| -> Step<String> {
        let summary = replies.get(1).ok_or(Halt::Changed)?;
        Ok(text(ok(summary, "XPENDING")?))
    };
    let (sp, tp) = (pending(&s)?, pending(&t)?);
    Ok((sp != tp).then(|| {
        (
            format!("{label}, pending {sp}"),
            format!("{label}, pending {tp}"),
        )
    }))
}

/// The named fields of an `XINFO` reply (a flat field/value array or a
/// map), as text, in the order asked; a missing field is `nil`.
fn pick(reply: &Value, names: &[&'static str]) -> Step<Vec<(&'static str, String)>> {
    if !matches!(reply, Value::Map(_)) && array(reply).is_none() {
        return Err(Halt::Changed);
    }
    Ok(names
        .iter()
        .map(|&name| {
            let value = field(reply, name)
                .map(|v| match bytes(v) {
                    Some(b) => preview(b),
                    None => text(v),
                })
                .unwrap_or_else(|| "nil".to_string());
            (name, value)
        })
        .collect())
}

/// One field of an `XINFO` reply.
fn field<'a>(reply: &'a Value, name: &str) -> Option<&'a Value> {
    match reply {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
            .map(|(_, v)| v),
        other => array(other)?
            .chunks(2)
            .find(|c| bytes(&c[0]) == Some(name.as_bytes()))
            .and_then(|c| c.get(1)),
    }
}

/// The first field that differs, described as `label, field value`.
fn first_difference(
    label: &str,
    s: &[(&'static str, String)],
    t: &[(&'static str, String)],
) -> Described {
    s.iter().zip(t).find(|(a, b)| a != b).map(|(a, b)| {
        (
            format!("{label}, {} {}", a.0, a.1),
            format!("{label}, {} {}", b.0, b.1),
        )
    })
}

fn one<'a>(replies: &'a [Value], command: &str) -> Step<&'a Value> {
    let reply = replies
        .first()
        .ok_or_else(|| Halt::Failed(anyhow!("{command}: no reply")))?;
    ok(reply, command)
}
