//! Comparing one value by its type, in chunks.
//!
//! A key can be far larger than what verify may hold in memory (a 1 GB
//! hash), so no value is read whole: the sizes are compared first, then
//! the value a slice or a page at a time, each page of the source looked up
//! on the target. Hashes and sets compare as unordered, lists in order,
//! sorted sets with their scores, streams with their entries and consumer
//! groups. A type verify does not know (a module's) compares by its `DUMP`
//! payload.

mod dump;
mod keyed;
mod list;
mod stream;
mod string;

pub use keyed::scores_equal;

use super::reply::Step;
use super::side::Pair;

/// How the value differs: the source's and the target's side, described.
pub type Described = Option<(String, String)>;

/// Compares the values of `key`, of type `kind` on both sides.
pub fn compare(pair: &Pair, kind: &str, key: &[u8]) -> Step<Described> {
    match kind {
        "string" => string::compare(pair, key),
        "list" => list::compare(pair, key),
        "hash" => keyed::compare(pair, key, &keyed::HASH),
        "set" => keyed::compare(pair, key, &keyed::SET),
        "zset" => keyed::compare(pair, key, &keyed::ZSET),
        "stream" => stream::compare(pair, key),
        other => dump::compare(pair, key, other),
    }
}

/// Both sides' lengths by `command` (`STRLEN`, `HLEN`, ...).
fn lengths(pair: &Pair, command: &str, key: &[u8]) -> Step<(i64, i64)> {
    let mut pipe = super::side::pipeline();
    pipe.cmd(command).arg(key);
    let (s, t) = pair.both(pipe)?;
    let length = |replies: &[redis::Value]| -> Step<i64> {
        let reply = replies
            .first()
            .ok_or_else(|| anyhow::anyhow!("{command}: no reply"))?;
        let reply = super::reply::ok(reply, command)?;
        super::reply::int(reply)
            .ok_or_else(|| anyhow::anyhow!("{command}: unexpected reply {reply:?}").into())
    };
    Ok((length(&s)?, length(&t)?))
}
