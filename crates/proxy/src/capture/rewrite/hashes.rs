//! Hash fields with their own expiry (Redis 7.4 and 8): the `HEXPIRE`
//! family, `HSETEX`, `HGETEX`, `HGETDEL`.
//!
//! The same problem as keys' TTLs (`expiry`): a relative time replayed later
//! expires later, so times become absolute milliseconds computed from `now`.
//! Each command's reply says per field what happened, so what is replicated
//! is exactly that, not the command's conditions: Redis propagates these
//! commands with their conditions and lets its replicas decide again, which
//! a backup applying them later (and perhaps from another state of the
//! field's TTL) could decide otherwise.
//!
//! | client sent | replicated as |
//! |---|---|
//! | `HEXPIRE`/`HPEXPIRE`/`HEXPIREAT`/`HPEXPIREAT key t [NX\|XX\|GT\|LT] FIELDS n f...` | `HPEXPIREAT key <abs ms> FIELDS k <fields answered 1>` and `HDEL key <fields answered 2>` (time in the past: deleted); nothing for `-2` (no such field) and `0` (condition not met) |
//! | `HSETEX key [FNX\|FXX] [EX\|PX\|EXAT\|PXAT t\|KEEPTTL] FIELDS n f v...` | `HSETEX key [PXAT <abs ms>\|KEEPTTL] FIELDS n f v...` if the reply is 1, nothing if 0 |
//! | `HGETEX key EX\|PX\|EXAT\|PXAT t FIELDS n f...` / `PERSIST` | `HPEXPIREAT key <abs ms> FIELDS k <fields that existed>` / `HPERSIST key FIELDS k ...`; nothing for a plain `HGETEX` |
//! | `HGETDEL key FIELDS n f...` | `HDEL key <fields that existed>` |
//!
//! Without a reply (`CLIENT REPLY OFF`) every named field is replicated and
//! the conditions stay, for the backup to decide.

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

use super::expiry::{deadline, ttl_option, Ttl};
use super::{commands, is, is_nil, number, one, word, Reply, Rewritten};
use remoteback_protocol::Command;

/// The fields after `FIELDS n` at `args[at]`, when `n` says how many there
/// are (`per` arguments each: 1 for names, 2 for name/value pairs).
fn fields(args: &[Bytes], at: usize, per: usize) -> Option<&[Bytes]> {
    if !is(args.get(at)?, "FIELDS") {
        return None;
    }
    let n: usize = std::str::from_utf8(args.get(at + 1)?).ok()?.parse().ok()?;
    let rest = args.get(at + 2..)?;
    (n > 0 && rest.len() == n.checked_mul(per)?).then_some(rest)
}

/// `key` with `FIELDS n` and `names`, as the arguments of a field command.
fn with_fields(name: &'static str, key: &Bytes, head: &[Bytes], names: &[&Bytes]) -> Command {
    let mut parts = Vec::with_capacity(4 + head.len() + names.len());
    parts.push(word(name));
    parts.push(key.clone());
    parts.extend(head.iter().cloned());
    parts.push(word("FIELDS"));
    parts.push(number(names.len() as i64));
    parts.extend(names.iter().map(|&n| n.clone()));
    Command::new(parts)
}

/// One element per field, as these commands answer; `None` if the reply is
/// not an array of as many elements.
fn per_field(reply: &Frame, fields: usize) -> Option<&[Frame]> {
    match reply {
        Frame::Array(items) if items.len() == fields => Some(items),
        _ => None,
    }
}

/// `HEXPIRE|HPEXPIRE|HEXPIREAT|HPEXPIREAT key t [NX|XX|GT|LT] FIELDS n f...`.
pub(super) fn hexpire(args: &[Bytes], ttl: Ttl, reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let key = args.get(1)?;
    let at = deadline(ttl, args.get(2)?, now)?;
    let condition = args
        .get(3)
        .filter(|a| ["NX", "XX", "GT", "LT"].iter().any(|c| is(a, c)));
    let names = fields(args, if condition.is_some() { 4 } else { 3 }, 1)?;
    let Some(f) = reply.decode() else {
        let head: Vec<Bytes> = std::iter::once(number(at))
            .chain(condition.cloned())
            .collect();
        let all: Vec<&Bytes> = names.iter().collect();
        return Some(Rewritten::Commands(vec![with_fields(
            "HPEXPIREAT",
            key,
            &head,
            &all,
        )]));
    };
    let codes = per_field(&f, names.len())?;
    let (mut set, mut deleted) = (Vec::new(), Vec::new());
    for (name, code) in names.iter().zip(codes) {
        match code {
            Frame::Integer(1) => set.push(name),
            Frame::Integer(2) => deleted.push(name),
            Frame::Integer(-2 | 0) => {}
            _ => return None,
        }
    }
    let mut out = Vec::new();
    if !set.is_empty() {
        out.push(with_fields("HPEXPIREAT", key, &[number(at)], &set));
    }
    if !deleted.is_empty() {
        let mut parts = vec![word("HDEL"), key.clone()];
        parts.extend(deleted.into_iter().cloned());
        out.push(Command::new(parts));
    }
    commands(out)
}

/// `HSETEX key [FNX|FXX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] FIELDS n f v...`
/// (Redis 8): the reply is 1 when every field was set, 0 when the condition
/// kept all of them unset.
pub(super) fn hsetex(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let key = args.get(1)?;
    let mut condition = None;
    let mut expiry = None;
    let mut keepttl = false;
    let mut i = 2;
    while i < args.len() && !is(&args[i], "FIELDS") {
        let a = &args[i];
        if is(a, "FNX") || is(a, "FXX") {
            condition = Some(a);
        } else if is(a, "KEEPTTL") {
            keepttl = true;
        } else if let Some(ttl) = ttl_option(a) {
            expiry = Some(deadline(ttl, args.get(i + 1)?, now)?);
            i += 1;
        } else {
            return None;
        }
        i += 1;
    }
    let pairs = fields(args, i, 2)?;
    match reply.decode().as_deref() {
        Some(Frame::Integer(0)) => return Some(Rewritten::Nothing),
        Some(Frame::Integer(1)) => condition = None,
        Some(_) => return None,
        None => {}
    }
    let mut parts = vec![word("HSETEX"), key.clone()];
    parts.extend(condition.cloned());
    if let Some(at) = expiry {
        parts.push(word("PXAT"));
        parts.push(number(at));
    } else if keepttl {
        parts.push(word("KEEPTTL"));
    }
    parts.extend(args[i..i + 2].iter().cloned());
    parts.extend(pairs.iter().cloned());
    one(parts)
}

/// `HGETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST] FIELDS n f...` (Redis 8):
/// the reply has each field's value, nil for the missing ones, which the
/// expiry did not touch.
pub(super) fn hgetex(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let key = args.get(1)?;
    let option = args.get(2)?;
    let (command, head, names) = if is(option, "FIELDS") {
        fields(args, 2, 1)?;
        return Some(Rewritten::Nothing);
    } else if is(option, "PERSIST") {
        ("HPERSIST", vec![], fields(args, 3, 1)?)
    } else {
        let at = deadline(ttl_option(option)?, args.get(3)?, now)?;
        ("HPEXPIREAT", vec![number(at)], fields(args, 4, 1)?)
    };
    let present = existing(names, reply)?;
    if present.is_empty() {
        return Some(Rewritten::Nothing);
    }
    Some(Rewritten::Commands(vec![with_fields(
        command, key, &head, &present,
    )]))
}

/// `HGETDEL key FIELDS n f...` (Redis 8) → `HDEL key <fields that existed>`.
pub(super) fn hgetdel(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let key = args.get(1)?;
    let present = existing(fields(args, 2, 1)?, reply)?;
    let mut parts = vec![word("HDEL"), key.clone()];
    parts.extend(present.into_iter().cloned());
    if parts.len() == 2 {
        return Some(Rewritten::Nothing);
    }
    one(parts)
}

/// The `names` whose value the reply holds (all of them without a reply).
fn existing<'a>(names: &'a [Bytes], reply: Reply<'_>) -> Option<Vec<&'a Bytes>> {
    let Some(f) = reply.decode() else {
        return Some(names.iter().collect());
    };
    let values = per_field(&f, names.len())?;
    Some(
        names
            .iter()
            .zip(values)
            .filter(|(_, v)| !is_nil(v))
            .map(|(n, _)| n)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use crate::capture::rewrite::test_support::*;
    use crate::capture::rewrite::Rewritten;

    #[test]
    fn hexpire_family_becomes_hpexpireat_of_the_fields_it_set() {
        let abs = at(100_000);
        assert_eq!(
            rw(
                &["HEXPIRE", "h", "100", "FIELDS", "2", "a", "b"],
                "*2\r\n:1\r\n:1\r\n"
            ),
            to(&[&format!("HPEXPIREAT h {abs} FIELDS 2 a b")])
        );
        // -2: no such field, 0: condition not met: nothing for them.
        assert_eq!(
            rw(
                &["hexpire", "h", "100", "NX", "FIELDS", "3", "a", "b", "c"],
                "*3\r\n:-2\r\n:1\r\n:0\r\n"
            ),
            to(&[&format!("HPEXPIREAT h {abs} FIELDS 1 b")])
        );
        assert_eq!(
            rw(
                &["HPEXPIRE", "h", "1500", "GT", "FIELDS", "1", "a"],
                "*1\r\n:0\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(
                &["HEXPIRE", "nokey", "10", "FIELDS", "1", "a"],
                "*1\r\n:-2\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(
                &["HPEXPIRE", "h", "1500", "FIELDS", "1", "a"],
                "*1\r\n:1\r\n"
            ),
            to(&[&format!("HPEXPIREAT h {} FIELDS 1 a", at(1500))])
        );
        assert_eq!(
            rw(
                &["HEXPIREAT", "h", "1800000000", "XX", "FIELDS", "1", "a"],
                "*1\r\n:1\r\n"
            ),
            to(&["HPEXPIREAT h 1800000000000 FIELDS 1 a"])
        );
        // 2: the time was in the past and the field is gone: HDEL, after
        // the fields that got a time.
        assert_eq!(
            rw(
                &["HPEXPIREAT", "h", "1", "FIELDS", "2", "a", "b"],
                "*2\r\n:2\r\n:2\r\n"
            ),
            to(&["HDEL h a b"])
        );
        assert_eq!(
            rw(
                &["HEXPIRE", "h", "0", "LT", "FIELDS", "3", "a", "b", "c"],
                "*3\r\n:2\r\n:0\r\n:1\r\n"
            ),
            to(&[&format!("HPEXPIREAT h {} FIELDS 1 c", at(0)), "HDEL h a"])
        );
        // Without a reply: every field, with the condition.
        assert_eq!(
            rw_unknown(&["HEXPIRE", "h", "10", "GT", "FIELDS", "2", "a", "b"]),
            to(&[&format!("HPEXPIREAT h {} GT FIELDS 2 a b", at(10_000))])
        );
    }

    #[test]
    fn hexpire_of_an_unexpected_shape_is_verbatim() {
        // numfields does not match (Redis refuses it; never captured).
        assert_eq!(
            rw(&["HEXPIRE", "h", "10", "FIELDS", "2", "a"], "*1\r\n:1\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["HEXPIRE", "h", "10", "FIELDS", "1", "a"], ":1\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["HEXPIRE", "h", "x", "FIELDS", "1", "a"], "*1\r\n:1\r\n"),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn hsetex_gets_an_absolute_time_and_follows_its_reply() {
        assert_eq!(
            rw(
                &["HSETEX", "h", "EX", "10", "FIELDS", "1", "f", "v"],
                ":1\r\n"
            ),
            to(&[&format!("HSETEX h PXAT {} FIELDS 1 f v", at(10_000))])
        );
        assert_eq!(
            rw(
                &["hsetex", "h", "FNX", "px", "50", "FIELDS", "2", "f", "v", "g", "w"],
                ":1\r\n"
            ),
            to(&[&format!("HSETEX h PXAT {} FIELDS 2 f v g w", at(50))])
        );
        assert_eq!(
            rw(
                &["HSETEX", "h", "FXX", "EX", "10", "FIELDS", "1", "f", "v"],
                ":0\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(
                &["HSETEX", "h", "FXX", "KEEPTTL", "FIELDS", "1", "f", "v"],
                ":1\r\n"
            ),
            to(&["HSETEX h KEEPTTL FIELDS 1 f v"])
        );
        assert_eq!(
            rw(
                &["HSETEX", "h", "EXAT", "1800000000", "FIELDS", "1", "f", "v"],
                ":1\r\n"
            ),
            to(&["HSETEX h PXAT 1800000000000 FIELDS 1 f v"])
        );
        assert_eq!(
            rw_unknown(&["HSETEX", "h", "FNX", "EX", "1", "FIELDS", "1", "f", "v"]),
            to(&[&format!("HSETEX h FNX PXAT {} FIELDS 1 f v", at(1000))])
        );
        assert_eq!(
            rw(&["HSETEX", "h", "EX", "1", "FIELDS", "1", "f"], ":1\r\n"),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn hgetex_sets_the_time_of_the_fields_that_existed() {
        assert_eq!(
            rw(&["HGETEX", "h", "FIELDS", "1", "f"], "*1\r\n$1\r\nv\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(
                &["HGETEX", "h", "EX", "10", "FIELDS", "2", "f", "g"],
                "*2\r\n$1\r\nv\r\n$-1\r\n"
            ),
            to(&[&format!("HPEXPIREAT h {} FIELDS 1 f", at(10_000))])
        );
        assert_eq!(
            rw(
                &["hgetex", "h", "PXAT", "1800000000001", "FIELDS", "1", "f"],
                "*1\r\n$0\r\n\r\n"
            ),
            to(&["HPEXPIREAT h 1800000000001 FIELDS 1 f"])
        );
        assert_eq!(
            rw(
                &["HGETEX", "h", "PERSIST", "FIELDS", "2", "f", "g"],
                "*2\r\n$1\r\nv\r\n$1\r\nw\r\n"
            ),
            to(&["HPERSIST h FIELDS 2 f g"])
        );
        assert_eq!(
            rw(
                &["HGETEX", "h", "EX", "10", "FIELDS", "1", "f"],
                "*1\r\n_\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw_unknown(&["HGETEX", "h", "PX", "5", "FIELDS", "2", "f", "g"]),
            to(&[&format!("HPEXPIREAT h {} FIELDS 2 f g", at(5))])
        );
    }

    #[test]
    fn hgetdel_deletes_the_fields_that_existed() {
        assert_eq!(
            rw(
                &["HGETDEL", "h", "FIELDS", "3", "a", "b", "c"],
                "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n"
            ),
            to(&["HDEL h a c"])
        );
        assert_eq!(
            rw(&["HGETDEL", "h", "FIELDS", "1", "a"], "*1\r\n$-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw_unknown(&["hgetdel", "h", "FIELDS", "2", "a", "b"]),
            to(&["HDEL h a b"])
        );
    }
}
