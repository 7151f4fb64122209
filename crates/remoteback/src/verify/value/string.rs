//! Strings: lengths, then the bytes a slice at a time (`GETRANGE`).

use redis::Value;

use super::super::escape::preview;
use super::super::reply::{bytes, ok, Halt, Step};
use super::super::side::{pipeline, Pair};
use super::{lengths, Described};

/// Bytes a `GETRANGE` reads from each side.
const SLICE: i64 = 1 << 20;

pub fn compare(pair: &Pair, key: &[u8]) -> Step<Described> {
    let (s_len, t_len) = lengths(pair, "STRLEN", key)?;
    if s_len != t_len {
        return Ok(Some((
            format!("string, {s_len} bytes"),
            format!("string, {t_len} bytes"),
        )));
    }
    let mut offset = 0;
    while offset < s_len {
        let end = (offset + SLICE).min(s_len) - 1;
        let mut pipe = pipeline();
        pipe.cmd("GETRANGE").arg(key).arg(offset).arg(end);
        let (s, t) = pair.both(pipe)?;
        let (s, t) = (slice(&s)?, slice(&t)?);
        if s != t {
            let at = s.iter().zip(t).take_while(|(a, b)| a == b).count();
            let describe = |side: &[u8]| {
                format!(
                    "string, {s_len} bytes, from byte {}: {}",
                    offset as usize + at,
                    preview(&side[at.min(side.len())..])
                )
            };
            return Ok(Some((describe(s), describe(t))));
        }
        offset += SLICE;
    }
    Ok(None)
}

fn slice(replies: &[Value]) -> Step<&[u8]> {
    let reply = replies
        .first()
        .ok_or_else(|| Halt::Failed(anyhow::anyhow!("GETRANGE: no reply")))?;
    bytes(ok(reply, "GETRANGE")?).ok_or(Halt::Changed)
}
