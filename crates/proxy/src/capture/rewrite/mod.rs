//! Rewriting captured writes so that a later replay reaches the primary's
//! state.
//!
//! A backup applies the captured commands seconds or hours after the primary
//! ran them. Most commands give the same result whenever they run on the
//! same data, but some depend on *when* they run (relative TTLs, idle times,
//! blocking), on randomness (`SPOP`), on the primary's choices (`XADD *`
//! ids) or on state the backup may lack (the script cache). Redis has the
//! same problem with its own replicas and AOF, and solves it by rewriting
//! what it propagates; this module applies the same rewrites, using the
//! primary's reply to learn what actually happened:
//!
//! | client sent | replicated as |
//! |---|---|
//! | `SET k v EX\|PX\|EXAT n` | `SET k v PXAT <abs ms>` (without `NX`/`XX`/`GET`), nothing if it did not set |
//! | `SET k v NX\|XX\|GET ...` | `SET k v [PXAT\|KEEPTTL]` if it set, else nothing |
//! | `SETEX`/`PSETEX k n v` | `SET k v PXAT <abs ms>` |
//! | `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT k n [flag]` | `PEXPIREAT k <abs ms>` if the reply is 1, else nothing |
//! | `GETEX k EX\|PX\|EXAT\|PXAT n` / `PERSIST` | `PEXPIREAT k <abs ms>` / `PERSIST k`; nothing for a plain `GETEX` or a missing key |
//! | `HEXPIRE`/`HPEXPIRE`/`HEXPIREAT`/`HPEXPIREAT k t [flag] FIELDS n f...` | `HPEXPIREAT k <abs ms> FIELDS <fields set>`, `HDEL k <fields deleted>` |
//! | `HSETEX k [FNX\|FXX] EX\|PX\|EXAT t FIELDS ...` | `HSETEX k PXAT <abs ms> FIELDS ...` if it set, else nothing |
//! | `HGETEX k EX\|PX\|EXAT\|PXAT t\|PERSIST FIELDS ...` / `HGETDEL k FIELDS ...` | `HPEXPIREAT`/`HPERSIST` / `HDEL` of the fields that existed |
//! | `RESTORE k ttl ...` (relative `ttl`) | `RESTORE k <abs ms> ... ABSTTL` |
//! | `SPOP k [n]` | `SREM k <the members popped>` |
//! | `INCRBYFLOAT k x` / `HINCRBYFLOAT k f x` | `SET k <result> KEEPTTL` / `HSET k f <result>` |
//! | `GETDEL k` / `GETSET k v` | `DEL k` (if it existed) / `SET k v` |
//! | `BLPOP`/`BRPOP`, `BLMOVE`, `BRPOPLPUSH` | `LPOP`/`RPOP <key served>`, `LMOVE`, `RPOPLPUSH`; nothing on timeout |
//! | `BLMPOP`/`LMPOP`, `BZMPOP`/`ZMPOP` | `LPOP`/`RPOP`/`ZPOPMIN`/`ZPOPMAX <key served> <count popped>` |
//! | `BZPOPMIN`/`BZPOPMAX` | `ZPOPMIN`/`ZPOPMAX <key served>` |
//! | `XADD k ... *\|ms-* ...` | the same with the id the primary generated; nothing for `NOMKSTREAM` on no stream |
//! | `XREADGROUP` | per stream served: a non-blocking `XREADGROUP` of exactly what was delivered, plus `XCLAIM ... TIME` pinning the delivery time |
//! | `XCLAIM`/`XAUTOCLAIM` | `XCLAIM` of exactly the ids claimed (min-idle 0, absolute `TIME`), `XACK` of deleted ones |
//! | `EVALSHA sha ...` | `EVAL <body> ...` when the proxy saw the body |
//! | `MIGRATE ...` | `DEL <keys>` (nothing with `COPY` or `NOKEY`) |
//!
//! Everything else is replicated verbatim, and costs one name comparison
//! here, without allocating. Relative times become absolute using `now_ms`,
//! the proxy's clock when the reply arrived; see docs/semantics.md for the
//! tolerance this gives and for the limits that remain.
//!
//! This file holds the entry points, the dispatch by command name and the
//! shared helpers; each family of rewrites has its own module: `expiry`
//! (TTLs), `hashes` (hash fields' TTLs), `values` (results the reply reports), `pops` (blocking and
//! multi-key pops), `streams` and `evalsha` (scripts; the cache itself is
//! `scripts`).
//!
//! A command's family ([`Rewrite`]) is found once, when the proxy reads the
//! command (it travels in the command's `Verdict`); [`apply`] and
//! [`refused`] then dispatch on it without looking at the name again.

mod evalsha;
mod expiry;
mod hashes;
mod pops;
mod scripts;
mod streams;
#[cfg(test)]
mod test_support;
mod values;

pub(crate) use scripts::ScriptCache;

use std::borrow::Cow;

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::Command;

use expiry::Ttl;

/// The primary's answer to a command, decoded only if a rewrite needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply<'a> {
    /// One complete RESP reply as received.
    Raw(&'a Bytes),
    /// An already decoded reply (an element of an `EXEC` result).
    Frame(&'a Frame),
    /// No reply: the command ran with `CLIENT REPLY OFF|SKIP` in force. The
    /// rewrite then assumes the command took effect and, where the reply
    /// would have said what happened, lets the backup decide.
    Unknown,
}

impl<'a> Reply<'a> {
    fn decode(&self) -> Option<Cow<'a, Frame>> {
        match *self {
            Reply::Raw(bytes) => match frame::decode(bytes) {
                Ok(Some((f, _))) => Some(Cow::Owned(f)),
                _ => None,
            },
            Reply::Frame(f) => Some(Cow::Borrowed(f)),
            Reply::Unknown => None,
        }
    }
}

/// What to replicate for one command that took effect on the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rewritten {
    /// The command exactly as the client sent it.
    Verbatim,
    /// Nothing: the command changed nothing (a `SET NX` that did not set,
    /// an `EXPIRE` answered 0, a blocking pop that timed out...).
    Nothing,
    /// These commands instead, in order, applied as one unit. Never empty.
    Commands(Vec<Command>),
}

/// The family of a command this module rewrites (or watches, for scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rewrite {
    Set,
    SetEx(Ttl),
    GetEx,
    GetSet,
    GetDel,
    Expire(Ttl),
    /// HEXPIRE, HPEXPIRE, HEXPIREAT, HPEXPIREAT.
    HExpire(Ttl),
    HSetEx,
    HGetEx,
    HGetDel,
    Restore,
    SPop,
    IncrByFloat,
    HIncrByFloat,
    /// BLPOP (`true`: left) / BRPOP.
    BPop(bool),
    BLMove,
    BRPopLPush,
    /// LMPOP / BLMPOP (`true`: blocking).
    LMPop(bool),
    /// BZPOPMIN (`true`: min) / BZPOPMAX.
    BZPop(bool),
    /// ZMPOP / BZMPOP (`true`: blocking).
    ZMPop(bool),
    XAdd,
    XReadGroup,
    XClaim,
    XAutoClaim,
    Eval,
    EvalSha,
    Script,
    Migrate,
}

/// Longest command name [`Rewrite::of`] looks at.
const MAX_NAME: usize = 16;

impl Rewrite {
    /// The family of the command named `name` (any case); `None` for the
    /// commands replicated verbatim, which is almost all of them.
    pub fn of(name: &[u8]) -> Option<Rewrite> {
        if name.len() > MAX_NAME {
            return None;
        }
        let mut buf = [0u8; MAX_NAME];
        for (u, c) in buf.iter_mut().zip(name) {
            *u = c.to_ascii_uppercase();
        }
        Some(match &buf[..name.len()] {
            b"SET" => Rewrite::Set,
            b"SETEX" => Rewrite::SetEx(Ttl::Seconds),
            b"PSETEX" => Rewrite::SetEx(Ttl::Millis),
            b"GETEX" => Rewrite::GetEx,
            b"GETSET" => Rewrite::GetSet,
            b"GETDEL" => Rewrite::GetDel,
            b"EXPIRE" => Rewrite::Expire(Ttl::Seconds),
            b"PEXPIRE" => Rewrite::Expire(Ttl::Millis),
            b"EXPIREAT" => Rewrite::Expire(Ttl::UnixSeconds),
            b"PEXPIREAT" => Rewrite::Expire(Ttl::UnixMillis),
            b"HEXPIRE" => Rewrite::HExpire(Ttl::Seconds),
            b"HPEXPIRE" => Rewrite::HExpire(Ttl::Millis),
            b"HEXPIREAT" => Rewrite::HExpire(Ttl::UnixSeconds),
            b"HPEXPIREAT" => Rewrite::HExpire(Ttl::UnixMillis),
            b"HSETEX" => Rewrite::HSetEx,
            b"HGETEX" => Rewrite::HGetEx,
            b"HGETDEL" => Rewrite::HGetDel,
            b"RESTORE" | b"RESTORE-ASKING" => Rewrite::Restore,
            b"SPOP" => Rewrite::SPop,
            b"INCRBYFLOAT" => Rewrite::IncrByFloat,
            b"HINCRBYFLOAT" => Rewrite::HIncrByFloat,
            b"BLPOP" => Rewrite::BPop(true),
            b"BRPOP" => Rewrite::BPop(false),
            b"BLMOVE" => Rewrite::BLMove,
            b"BRPOPLPUSH" => Rewrite::BRPopLPush,
            b"LMPOP" => Rewrite::LMPop(false),
            b"BLMPOP" => Rewrite::LMPop(true),
            b"BZPOPMIN" => Rewrite::BZPop(true),
            b"BZPOPMAX" => Rewrite::BZPop(false),
            b"ZMPOP" => Rewrite::ZMPop(false),
            b"BZMPOP" => Rewrite::ZMPop(true),
            b"XADD" => Rewrite::XAdd,
            b"XREADGROUP" => Rewrite::XReadGroup,
            b"XCLAIM" => Rewrite::XClaim,
            b"XAUTOCLAIM" => Rewrite::XAutoClaim,
            b"EVAL" | b"EVAL_RO" => Rewrite::Eval,
            b"EVALSHA" => Rewrite::EvalSha,
            b"SCRIPT" => Rewrite::Script,
            b"MIGRATE" => Rewrite::Migrate,
            _ => return None,
        })
    }
}

/// What to replicate for `command` of family `rewrite`, which the primary
/// answered with `reply` (not an error) at `now_ms` on the proxy's clock.
/// The reply is decoded only for the commands whose rewrite depends on it.
///
/// Also keeps `scripts` up to date: `EVAL`, `EVAL_RO` and `SCRIPT LOAD`
/// teach it bodies, `SCRIPT FLUSH` empties it, an `EVALSHA` of a body it
/// does not know is counted and logged (and replicated verbatim).
pub(crate) fn apply(
    rewrite: Rewrite,
    command: &Command,
    reply: Reply<'_>,
    now_ms: u64,
    scripts: &ScriptCache,
) -> Rewritten {
    let args = command.args();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let out = match rewrite {
        Rewrite::Set => expiry::set(args, reply, now),
        Rewrite::SetEx(ttl) => expiry::setex(args, ttl, now),
        Rewrite::GetEx => expiry::getex(args, reply, now),
        Rewrite::GetSet => values::getset(args),
        Rewrite::GetDel => values::getdel(args, reply),
        Rewrite::Expire(ttl) => expiry::expire(args, ttl, reply, now),
        Rewrite::HExpire(ttl) => hashes::hexpire(args, ttl, reply, now),
        Rewrite::HSetEx => hashes::hsetex(args, reply, now),
        Rewrite::HGetEx => hashes::hgetex(args, reply, now),
        Rewrite::HGetDel => hashes::hgetdel(args, reply),
        Rewrite::Restore => expiry::restore(args, now),
        Rewrite::SPop => values::spop(args, reply),
        Rewrite::IncrByFloat => values::incrbyfloat(args, reply),
        Rewrite::HIncrByFloat => values::hincrbyfloat(args, reply),
        Rewrite::BPop(left) => pops::bpop(args, reply, left),
        Rewrite::BLMove => pops::blmove(args, reply),
        Rewrite::BRPopLPush => pops::brpoplpush(args, reply),
        Rewrite::LMPop(blocking) => pops::mpop(args, reply, blocking, false),
        Rewrite::BZPop(min) => pops::bzpop(args, reply, min),
        Rewrite::ZMPop(blocking) => pops::mpop(args, reply, blocking, true),
        Rewrite::XAdd => streams::xadd(args, reply),
        Rewrite::XReadGroup => streams::xreadgroup(args, reply, now),
        Rewrite::XClaim => streams::xclaim(args, reply, now),
        Rewrite::XAutoClaim => streams::xautoclaim(args, reply, now),
        Rewrite::Eval => evalsha::eval(args, scripts),
        Rewrite::EvalSha => evalsha::evalsha(args, scripts),
        Rewrite::Script => evalsha::script(args, reply, scripts),
        Rewrite::Migrate => values::migrate(args, reply),
    };
    // `None`: arguments or reply not as expected (Redis accepted them, so
    // this is a shape we do not know): replicate what the client sent.
    out.unwrap_or(Rewritten::Verbatim)
}

/// Notes a command of family `rewrite` the primary refused with `error`
/// (the message, without the RESP type byte). Redis keeps a script that
/// compiled in its cache even when running it failed, so the script cache
/// learns its body too.
pub(crate) fn refused(rewrite: Rewrite, command: &Command, error: &[u8], scripts: &ScriptCache) {
    if rewrite == Rewrite::Eval && !evalsha::failed_to_compile(error) {
        if let Some(body) = command.arg(1) {
            scripts.learn(body);
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn word(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn number(n: i64) -> Bytes {
    Bytes::from(n.to_string())
}

fn is(arg: &[u8], upper: &str) -> bool {
    arg.eq_ignore_ascii_case(upper.as_bytes())
}

fn int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn one(parts: Vec<Bytes>) -> Option<Rewritten> {
    Some(Rewritten::Commands(vec![Command::new(parts)]))
}

fn commands(out: Vec<Command>) -> Option<Rewritten> {
    Some(if out.is_empty() {
        Rewritten::Nothing
    } else {
        Rewritten::Commands(out)
    })
}

fn is_nil(f: &Frame) -> bool {
    matches!(f, Frame::Null)
}

/// Whether the reply is known to be nil (an unknown reply is not).
fn nil_reply(reply: Reply<'_>) -> bool {
    reply.decode().is_some_and(|f| is_nil(&f))
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn other_commands_pass_through() {
        for parts in [
            &["GET", "k"][..],
            &["LPUSH", "l", "x"],
            &["DEL", "a", "b"],
            &["LPOP", "l"],
            &["XACK", "s", "g", "1-0"],
            &["PERSIST", "k"],
            &["FCALL", "f", "0"],
        ] {
            assert!(Rewrite::of(cmd(parts).name()).is_none(), "{parts:?}");
            assert_eq!(rw(parts, "+OK\r\n"), Rewritten::Verbatim, "{parts:?}");
        }
        assert!(Rewrite::of(b"set").is_some());
        assert!(Rewrite::of(b"evalsha").is_some());
        let long = "X".repeat(100);
        assert!(Rewrite::of(long.as_bytes()).is_none());
    }

    #[test]
    fn transaction_elements_are_already_decoded() {
        let scripts = ScriptCache::new();
        let element = Frame::Integer(1);
        assert_eq!(
            rewrite(
                &cmd(&["EXPIRE", "k", "1"]),
                Reply::Frame(&element),
                &scripts
            ),
            to(&[&format!("PEXPIREAT k {}", at(1000))])
        );
        let nil = Frame::Null;
        assert_eq!(
            rewrite(&cmd(&["SPOP", "s"]), Reply::Frame(&nil), &scripts),
            Rewritten::Nothing
        );
    }
}
