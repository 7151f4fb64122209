//! Commands replicated as the result the primary's reply reports: `SPOP`,
//! `INCRBYFLOAT`/`HINCRBYFLOAT`, `GETDEL`, `GETSET` and `MIGRATE`.
//!
//! Replayed verbatim these could reach another state than the primary's:
//! `SPOP` picks members at random, float formatting is the primary's
//! business, and `MIGRATE` would send the backup's own keys to the
//! destination. Like Redis (t_set.c, t_string.c, t_hash.c, cluster.c), the
//! proxy replicates what happened instead: the members popped, the
//! resulting value, the keys that left.

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

use super::{is, nil_reply, one, word, Reply, Rewritten};

/// `GETSET key value` → `SET key value` (both drop the TTL).
pub(super) fn getset(args: &[Bytes]) -> Option<Rewritten> {
    let [_, key, value] = args else {
        return None;
    };
    one(vec![word("SET"), key.clone(), value.clone()])
}

/// `GETDEL key` → `DEL key`, if there was a key.
pub(super) fn getdel(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let key = args.get(1)?;
    if nil_reply(reply) {
        return Some(Rewritten::Nothing);
    }
    one(vec![word("DEL"), key.clone()])
}

/// `INCRBYFLOAT key x` → `SET key <result> KEEPTTL` (t_string.c): float
/// formatting is the primary's business, the backup takes its result.
pub(super) fn incrbyfloat(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let key = args.get(1)?;
    let f = reply.decode()?;
    let Frame::Bulk(result) = &*f else {
        return None;
    };
    one(vec![
        word("SET"),
        key.clone(),
        result.clone(),
        word("KEEPTTL"),
    ])
}

/// `HINCRBYFLOAT key field x` → `HSET key field <result>` (t_hash.c).
pub(super) fn hincrbyfloat(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let (key, field) = (args.get(1)?, args.get(2)?);
    let f = reply.decode()?;
    let Frame::Bulk(result) = &*f else {
        return None;
    };
    one(vec![
        word("HSET"),
        key.clone(),
        field.clone(),
        result.clone(),
    ])
}

/// `SPOP key [count]` → `SREM key <members popped>` (t_set.c). Without a
/// reply the members are unknown: verbatim, the backup pops its own.
pub(super) fn spop(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let key = args.get(1)?;
    let f = reply.decode()?;
    let mut parts = vec![word("SREM"), key.clone()];
    match &*f {
        Frame::Null => return Some(Rewritten::Nothing),
        Frame::Bulk(member) => parts.push(member.clone()),
        Frame::Array(members) => {
            for m in members {
                parts.push(m.as_bytes()?.clone());
            }
        }
        _ => return None,
    }
    if parts.len() == 2 {
        return Some(Rewritten::Nothing);
    }
    one(parts)
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2
/// user pw] [KEYS key...]` → `DEL <keys>` (cluster.c does the same): replayed
/// verbatim, the backup would send its own keys to the destination. With
/// `COPY`, or when the reply is `NOKEY`, nothing left the primary.
pub(super) fn migrate(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    if args.len() < 6 {
        return None;
    }
    let mut keys = std::slice::from_ref(&args[3]);
    let mut copy = false;
    let mut i = 6;
    while i < args.len() {
        let a = &args[i];
        if is(a, "COPY") {
            copy = true;
        } else if is(a, "AUTH") {
            i += 1;
        } else if is(a, "AUTH2") {
            i += 2;
        } else if is(a, "KEYS") {
            if !args[3].is_empty() {
                return None;
            }
            keys = &args[i + 1..];
            break;
        } else if !is(a, "REPLACE") {
            return None;
        }
        i += 1;
    }
    let nokey = reply
        .decode()
        .as_deref()
        .and_then(Frame::as_bytes)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"NOKEY"));
    if copy || nokey || keys.is_empty() {
        return Some(Rewritten::Nothing);
    }
    let mut parts = vec![word("DEL")];
    parts.extend(keys.iter().cloned());
    one(parts)
}

#[cfg(test)]
mod tests {
    use crate::capture::rewrite::test_support::*;
    use crate::capture::rewrite::Rewritten;

    #[test]
    fn spop_becomes_srem_of_what_was_popped() {
        assert_eq!(rw(&["SPOP", "s"], "$1\r\na\r\n"), to(&["SREM s a"]));
        assert_eq!(rw(&["SPOP", "s"], "$-1\r\n"), Rewritten::Nothing);
        assert_eq!(
            rw(&["SPOP", "s", "3"], "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            to(&["SREM s a b"])
        );
        assert_eq!(
            rw(&["SPOP", "s", "3"], "~2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            to(&["SREM s a b"])
        );
        assert_eq!(rw(&["SPOP", "s", "3"], "*0\r\n"), Rewritten::Nothing);
        assert_eq!(rw_unknown(&["SPOP", "s"]), Rewritten::Verbatim);
    }

    #[test]
    fn float_increments_become_their_result() {
        assert_eq!(
            rw(&["INCRBYFLOAT", "f", "0.1"], "$3\r\n0.3\r\n"),
            to(&["SET f 0.3 KEEPTTL"])
        );
        assert_eq!(
            rw(&["HINCRBYFLOAT", "h", "x", "1e3"], "$4\r\n1000\r\n"),
            to(&["HSET h x 1000"])
        );
        assert_eq!(
            rw_unknown(&["INCRBYFLOAT", "f", "0.1"]),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn getdel_and_getset() {
        assert_eq!(rw(&["GETDEL", "k"], "$1\r\nv\r\n"), to(&["DEL k"]));
        assert_eq!(rw(&["GETDEL", "k"], "$-1\r\n"), Rewritten::Nothing);
        assert_eq!(rw(&["GETSET", "k", "v"], "$-1\r\n"), to(&["SET k v"]));
        assert_eq!(rw_unknown(&["GETDEL", "k"]), to(&["DEL k"]));
    }

    #[test]
    fn migrate_becomes_del() {
        assert_eq!(
            rw(&["MIGRATE", "h", "6379", "k", "0", "1000"], "+OK\r\n"),
            to(&["DEL k"])
        );
        assert_eq!(
            rw(
                &[
                    "MIGRATE", "h", "6379", "", "0", "1000", "REPLACE", "AUTH2", "u", "keys",
                    "KEYS", "a", "b"
                ],
                "+OK\r\n"
            ),
            to(&["DEL a b"])
        );
        assert_eq!(
            rw(
                &["MIGRATE", "h", "6379", "k", "0", "1000", "COPY"],
                "+OK\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["MIGRATE", "h", "6379", "k", "0", "1000"], "+NOKEY\r\n"),
            Rewritten::Nothing
        );
    }
}
