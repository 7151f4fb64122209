//! Types verify cannot read (a module's): their `DUMP` payloads compared.
//!
//! A payload holds the value in the server's serialization, so equal
//! payloads are equal values; unequal ones may still be equal values in
//! another encoding, which verify cannot tell for a type it does not know.

use super::super::reply::{bytes, ok, Halt, Step};
use super::super::side::{pipeline, Pair};
use super::Described;

pub fn compare(pair: &Pair, key: &[u8], kind: &str) -> Step<Described> {
    let mut pipe = pipeline();
    pipe.cmd("DUMP").arg(key);
    let (s, t) = pair.both(pipe)?;
    let payload = |replies: &[redis::Value]| -> Step<Vec<u8>> {
        let reply = replies
            .first()
            .ok_or_else(|| Halt::Failed(anyhow::anyhow!("DUMP: no reply")))?;
        bytes(ok(reply, "DUMP")?)
            .map(<[u8]>::to_vec)
            .ok_or(Halt::Changed)
    };
    let (s, t) = (payload(&s)?, payload(&t)?);
    if s == t {
        return Ok(None);
    }
    Ok(Some((
        format!("{kind}, DUMP payload of {} bytes", s.len()),
        format!("{kind}, another DUMP payload of {} bytes", t.len()),
    )))
}
