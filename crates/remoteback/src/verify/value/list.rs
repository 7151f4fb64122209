//! Lists: lengths, then the elements in order a slice at a time (`LRANGE`).

use anyhow::anyhow;
use redis::Value;

use super::super::reply::{array, ok, text, Halt, Step};
use super::super::side::{pipeline, Pair};
use super::{lengths, Described};

/// Elements an `LRANGE` reads from each side.
const SLICE: i64 = 1000;

pub fn compare(pair: &Pair, key: &[u8]) -> Step<Described> {
    let (s_len, t_len) = lengths(pair, "LLEN", key)?;
    if s_len != t_len {
        return Ok(Some((
            format!("list, {s_len} elements"),
            format!("list, {t_len} elements"),
        )));
    }
    let mut start = 0;
    while start < s_len {
        let mut pipe = pipeline();
        pipe.cmd("LRANGE")
            .arg(key)
            .arg(start)
            .arg(start + SLICE - 1);
        let (s, t) = pair.both(pipe)?;
        let (s, t) = (elements(&s)?, elements(&t)?);
        if let Some(at) = (0..s.len().max(t.len())).find(|&i| s.get(i) != t.get(i)) {
            let describe = |side: &[Value]| {
                let element = side.get(at).map(text).unwrap_or_else(|| "nothing".into());
                format!(
                    "list, {s_len} elements, at index {}: {element}",
                    start as usize + at
                )
            };
            return Ok(Some((describe(s), describe(t))));
        }
        if s.is_empty() {
            // Shorter than its length said: it changed meanwhile.
            return Err(Halt::Changed);
        }
        start += SLICE;
    }
    Ok(None)
}

fn elements(replies: &[Value]) -> Step<&[Value]> {
    let reply = replies
        .first()
        .ok_or_else(|| Halt::Failed(anyhow!("LRANGE: no reply")))?;
    array(ok(reply, "LRANGE")?).ok_or(Halt::Changed)
}
