//! Expiry and TTLs: `SET` options, `SETEX`/`PSETEX`, the `EXPIRE` family,
//! `GETEX` and `RESTORE`.
//!
//! A relative TTL depends on *when* the command runs: replayed later, it
//! would expire later than on the primary. Like Redis does for its own
//! replicas and AOF (t_string.c, expire.c, cluster.c), relative and seconds
//! expiries become absolute milliseconds (`PXAT`, `PEXPIREAT`, `ABSTTL`),
//! computed from `now`, the proxy's clock when the reply arrived; and
//! conditions (`NX`, `XX`, `GT`, ...) are dropped once the reply says the
//! command took effect: the primary decided, the backup must follow.

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

use super::{int, is, is_nil, nil_reply, number, one, word, Reply, Rewritten};

/// How a TTL argument counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// `EX`, `EXPIRE`, `SETEX`: seconds from now.
    Seconds,
    /// `PX`, `PEXPIRE`, `PSETEX`: milliseconds from now.
    Millis,
    /// `EXAT`, `EXPIREAT`: Unix time in seconds.
    UnixSeconds,
    /// `PXAT`, `PEXPIREAT`: Unix time in milliseconds.
    UnixMillis,
}

pub(super) fn ttl_option(arg: &[u8]) -> Option<Ttl> {
    if is(arg, "EX") {
        Some(Ttl::Seconds)
    } else if is(arg, "PX") {
        Some(Ttl::Millis)
    } else if is(arg, "EXAT") {
        Some(Ttl::UnixSeconds)
    } else if is(arg, "PXAT") {
        Some(Ttl::UnixMillis)
    } else {
        None
    }
}

/// The absolute Unix time in milliseconds a TTL argument means at `now`;
/// `None` if it does not parse or overflows.
pub(super) fn deadline(ttl: Ttl, value: &[u8], now: i64) -> Option<i64> {
    let v = int(value)?;
    match ttl {
        Ttl::Seconds => v.checked_mul(1000)?.checked_add(now),
        Ttl::Millis => v.checked_add(now),
        Ttl::UnixSeconds => v.checked_mul(1000),
        Ttl::UnixMillis => Some(v),
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
///
/// Like Redis (t_string.c, `setGenericCommand`), a relative or seconds
/// expiry is replicated as `PXAT`. The conditions are dropped once the
/// reply says the SET happened: the primary decided, the backup must follow
/// even if it would decide otherwise. Whether it happened: without `GET` the
/// reply is `OK` or nil; with `GET` it is the old value, and `NX` set only if
/// there was none, `XX` only if there was one.
pub(super) fn set(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    if args.len() == 3 {
        return Some(Rewritten::Verbatim);
    }
    let (key, value) = (args.get(1)?, args.get(2)?);
    let mut condition = None;
    let mut get = false;
    let mut keepttl = false;
    let mut expiry = None;
    let mut i = 3;
    while i < args.len() {
        let a = &args[i];
        if is(a, "NX") || is(a, "XX") {
            condition = Some(a);
        } else if is(a, "GET") {
            get = true;
        } else if is(a, "KEEPTTL") {
            keepttl = true;
        } else if let Some(ttl) = ttl_option(a) {
            expiry = Some((ttl, args.get(i + 1)?));
            i += 1;
        } else {
            return None;
        }
        i += 1;
    }
    let absolute = matches!(expiry, None | Some((Ttl::UnixMillis, _)));
    if condition.is_none() && !get && absolute {
        return Some(Rewritten::Verbatim);
    }
    let known = if condition.is_some() || get {
        reply.decode()
    } else {
        None
    };
    if let Some(f) = &known {
        let nil = is_nil(f);
        let happened = match (get, condition) {
            (false, _) => !nil,
            (true, None) => true,
            (true, Some(c)) => (is(c, "NX") && nil) || (is(c, "XX") && !nil),
        };
        if !happened {
            return Some(Rewritten::Nothing);
        }
    }
    let mut parts = vec![word("SET"), key.clone(), value.clone()];
    if let (None, Some(c), Reply::Unknown) = (&known, condition, reply) {
        parts.push(c.clone());
    }
    if let Some((ttl, v)) = expiry {
        parts.push(word("PXAT"));
        parts.push(number(deadline(ttl, v, now)?));
    } else if keepttl {
        parts.push(word("KEEPTTL"));
    }
    one(parts)
}

/// `SETEX key seconds value`, `PSETEX key ms value` → `SET key value PXAT`.
pub(super) fn setex(args: &[Bytes], ttl: Ttl, now: i64) -> Option<Rewritten> {
    let [_, key, n, value] = args else {
        return None;
    };
    let at = deadline(ttl, n, now)?;
    one(vec![
        word("SET"),
        key.clone(),
        value.clone(),
        word("PXAT"),
        number(at),
    ])
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`: replicated as Redis does
/// (`PEXPIREAT` or `PERSIST`); a plain `GETEX` or a missing key (nil)
/// changed nothing. An expiry in the past deletes the key on the primary;
/// `PEXPIREAT` in the past deletes it on the backup too.
pub(super) fn getex(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let key = args.get(1)?;
    let parts = match args.len() {
        2 => return Some(Rewritten::Nothing),
        3 if is(&args[2], "PERSIST") => vec![word("PERSIST"), key.clone()],
        4 => {
            let at = deadline(ttl_option(&args[2])?, &args[3], now)?;
            vec![word("PEXPIREAT"), key.clone(), number(at)]
        }
        _ => return None,
    };
    if nil_reply(reply) {
        return Some(Rewritten::Nothing);
    }
    one(parts)
}

/// `EXPIRE|PEXPIRE|EXPIREAT|PEXPIREAT key n [NX|XX|GT|LT]` → `PEXPIREAT key
/// <abs ms>` when the reply is 1 (Redis's own propagation, expire.c), nothing
/// when it is 0. The flags are dropped: the primary already applied them.
/// With no reply the flags stay, for the backup to decide the same way.
pub(super) fn expire(args: &[Bytes], ttl: Ttl, reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let key = args.get(1)?;
    let at = deadline(ttl, args.get(2)?, now)?;
    let flags = &args[3..];
    match reply.decode().as_deref() {
        Some(Frame::Integer(0)) => return Some(Rewritten::Nothing),
        Some(Frame::Integer(1)) => {}
        Some(_) => return None,
        None => {
            let mut parts = vec![word("PEXPIREAT"), key.clone(), number(at)];
            parts.extend(flags.iter().cloned());
            return one(parts);
        }
    }
    if ttl == Ttl::UnixMillis && flags.is_empty() {
        return Some(Rewritten::Verbatim);
    }
    one(vec![word("PEXPIREAT"), key.clone(), number(at)])
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]` with a
/// relative TTL → absolute, as Redis propagates it (cluster.c).
pub(super) fn restore(args: &[Bytes], now: i64) -> Option<Rewritten> {
    let ttl = int(args.get(2)?)?;
    if args.len() < 4 || ttl <= 0 || args[4..].iter().any(|a| is(a, "ABSTTL")) {
        return Some(Rewritten::Verbatim);
    }
    let mut parts = args.to_vec();
    parts[2] = number(ttl.checked_add(now)?);
    parts.push(word("ABSTTL"));
    one(parts)
}

#[cfg(test)]
mod tests {
    use crate::capture::rewrite::test_support::*;
    use crate::capture::rewrite::Rewritten;

    #[test]
    fn plain_set_is_verbatim() {
        assert_eq!(rw(&["SET", "k", "v"], "+OK\r\n"), Rewritten::Verbatim);
        assert_eq!(
            rw(&["SET", "k", "v", "KEEPTTL"], "+OK\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["set", "k", "v", "pxat", "123"], "+OK\r\n"),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn set_relative_expiry_becomes_pxat() {
        let ex = format!("SET k v PXAT {}", at(10_000));
        assert_eq!(rw(&["SET", "k", "v", "EX", "10"], "+OK\r\n"), to(&[&ex]));
        let px = format!("SET k v PXAT {}", at(1500));
        assert_eq!(rw(&["set", "k", "v", "px", "1500"], "+OK\r\n"), to(&[&px]));
        assert_eq!(
            rw(&["SET", "k", "v", "EXAT", "1800000000"], "+OK\r\n"),
            to(&["SET k v PXAT 1800000000000"])
        );
    }

    #[test]
    fn set_conditions_follow_the_reply() {
        // NX/XX without GET: OK = set, nil = not set.
        let ex = format!("SET k v PXAT {}", at(5000));
        assert_eq!(
            rw(&["SET", "k", "v", "NX", "EX", "5"], "+OK\r\n"),
            to(&[&ex])
        );
        assert_eq!(
            rw(&["SET", "k", "v", "NX", "EX", "5"], "$-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(rw(&["SET", "k", "v", "XX"], "_\r\n"), Rewritten::Nothing);
        assert_eq!(rw(&["SET", "k", "v", "XX"], "+OK\r\n"), to(&["SET k v"]));
        // GET alone: always set; the old value does not matter.
        assert_eq!(rw(&["SET", "k", "v", "GET"], "$-1\r\n"), to(&["SET k v"]));
        assert_eq!(
            rw(&["SET", "k", "v", "GET", "KEEPTTL"], "$3\r\nold\r\n"),
            to(&["SET k v KEEPTTL"])
        );
        // NX GET: set only if there was no old value.
        assert_eq!(
            rw(&["SET", "k", "v", "NX", "GET"], "$-1\r\n"),
            to(&["SET k v"])
        );
        assert_eq!(
            rw(&["SET", "k", "v", "NX", "GET"], "$3\r\nold\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["SET", "k", "v", "NX", "GET"], "$0\r\n\r\n"),
            Rewritten::Nothing
        );
        // XX GET: set only if there was one.
        assert_eq!(
            rw(
                &["SET", "k", "v", "GET", "XX", "PX", "100"],
                "$3\r\nold\r\n"
            ),
            to(&[&format!("SET k v PXAT {}", at(100))])
        );
        assert_eq!(
            rw(&["SET", "k", "v", "XX", "GET"], "_\r\n"),
            Rewritten::Nothing
        );
    }

    #[test]
    fn set_without_reply_keeps_conditions() {
        assert_eq!(
            rw_unknown(&["SET", "k", "v", "NX", "GET", "EX", "1"]),
            to(&[&format!("SET k v NX PXAT {}", at(1000))])
        );
        assert_eq!(
            rw_unknown(&["SET", "k", "v", "EX", "1"]),
            to(&[&format!("SET k v PXAT {}", at(1000))])
        );
    }

    #[test]
    fn set_with_odd_arguments_is_verbatim() {
        assert_eq!(rw(&["SET", "k", "v", "EX"], "+OK\r\n"), Rewritten::Verbatim);
        assert_eq!(
            rw(&["SET", "k", "v", "WHAT"], "+OK\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["SET", "k", "v", "EX", "99999999999999999"], "+OK\r\n"),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn setex_and_psetex() {
        assert_eq!(
            rw(&["SETEX", "k", "10", "v"], "+OK\r\n"),
            to(&[&format!("SET k v PXAT {}", at(10_000))])
        );
        assert_eq!(
            rw(&["psetex", "k", "250", "v"], "+OK\r\n"),
            to(&[&format!("SET k v PXAT {}", at(250))])
        );
    }

    #[test]
    fn expire_family() {
        let abs = format!("PEXPIREAT k {}", at(100_000));
        assert_eq!(rw(&["EXPIRE", "k", "100"], ":1\r\n"), to(&[&abs]));
        assert_eq!(rw(&["EXPIRE", "k", "100"], ":0\r\n"), Rewritten::Nothing);
        assert_eq!(rw(&["EXPIRE", "k", "100", "NX"], ":1\r\n"), to(&[&abs]));
        assert_eq!(
            rw(&["EXPIRE", "k", "100", "GT"], ":0\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["pexpire", "k", "1500"], ":1\r\n"),
            to(&[&format!("PEXPIREAT k {}", at(1500))])
        );
        assert_eq!(
            rw(&["EXPIREAT", "k", "1800000000", "LT"], ":1\r\n"),
            to(&["PEXPIREAT k 1800000000000"])
        );
        assert_eq!(
            rw(&["PEXPIREAT", "k", "1800000000000"], ":1\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["PEXPIREAT", "k", "1800000000000", "XX"], ":1\r\n"),
            to(&["PEXPIREAT k 1800000000000"])
        );
        assert_eq!(
            rw(&["PEXPIREAT", "k", "1800000000000"], ":0\r\n"),
            Rewritten::Nothing
        );
        // A TTL in the past deleted the key: PEXPIREAT in the past does too.
        assert_eq!(
            rw(&["EXPIRE", "k", "-5"], ":1\r\n"),
            to(&[&format!("PEXPIREAT k {}", at(-5000))])
        );
        // Without a reply the flags stay for the backup to decide.
        assert_eq!(
            rw_unknown(&["EXPIRE", "k", "100", "GT"]),
            to(&[&format!("PEXPIREAT k {} GT", at(100_000))])
        );
    }

    #[test]
    fn getex() {
        assert_eq!(rw(&["GETEX", "k"], "$1\r\nv\r\n"), Rewritten::Nothing);
        assert_eq!(
            rw(&["GETEX", "k", "EX", "10"], "$1\r\nv\r\n"),
            to(&[&format!("PEXPIREAT k {}", at(10_000))])
        );
        assert_eq!(
            rw(&["getex", "k", "px", "10"], "$1\r\nv\r\n"),
            to(&[&format!("PEXPIREAT k {}", at(10))])
        );
        assert_eq!(
            rw(&["GETEX", "k", "EXAT", "1800000000"], "$0\r\n\r\n"),
            to(&["PEXPIREAT k 1800000000000"])
        );
        assert_eq!(
            rw(&["GETEX", "k", "PXAT", "1800000000001"], "$1\r\nv\r\n"),
            to(&["PEXPIREAT k 1800000000001"])
        );
        assert_eq!(
            rw(&["GETEX", "k", "PERSIST"], "$1\r\nv\r\n"),
            to(&["PERSIST k"])
        );
        assert_eq!(
            rw(&["GETEX", "k", "EX", "10"], "$-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(rw(&["GETEX", "k", "PERSIST"], "_\r\n"), Rewritten::Nothing);
    }

    #[test]
    fn restore_gets_an_absolute_ttl() {
        assert_eq!(
            rw(&["RESTORE", "k", "5000", "payload", "REPLACE"], "+OK\r\n"),
            to(&[&format!("RESTORE k {} payload REPLACE ABSTTL", at(5000))])
        );
        assert_eq!(
            rw(&["RESTORE", "k", "0", "payload"], "+OK\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(
                &["restore-asking", "k", "10", "payload", "IDLETIME", "5"],
                "+OK\r\n"
            ),
            to(&[&format!(
                "restore-asking k {} payload IDLETIME 5 ABSTTL",
                at(10)
            )])
        );
        assert_eq!(
            rw(
                &["RESTORE", "k", "1800000000000", "payload", "absttl"],
                "+OK\r\n"
            ),
            Rewritten::Verbatim
        );
    }
}
