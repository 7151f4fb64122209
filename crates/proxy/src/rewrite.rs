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

mod scripts;
mod sha1;

pub use scripts::ScriptCache;

use std::borrow::Cow;

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::Command;

/// The primary's answer to a command, decoded only if a rewrite needs it.
#[derive(Clone, Copy, Debug)]
pub enum Reply<'a> {
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
pub enum Rewritten {
    /// The command exactly as the client sent it.
    Verbatim,
    /// Nothing: the command changed nothing (a `SET NX` that did not set,
    /// an `EXPIRE` answered 0, a blocking pop that timed out...).
    Nothing,
    /// These commands instead, in order, applied as one unit. Never empty.
    Commands(Vec<Command>),
}

/// The commands this module rewrites (or watches, for scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Set,
    SetEx(Ttl),
    GetEx,
    GetSet,
    GetDel,
    Expire(Ttl),
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

/// How a TTL argument counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ttl {
    /// `EX`, `EXPIRE`, `SETEX`: seconds from now.
    Seconds,
    /// `PX`, `PEXPIRE`, `PSETEX`: milliseconds from now.
    Millis,
    /// `EXAT`, `EXPIREAT`: Unix time in seconds.
    UnixSeconds,
    /// `PXAT`, `PEXPIREAT`: Unix time in milliseconds.
    UnixMillis,
}

/// Longest command name [`kind`] looks at.
const MAX_NAME: usize = 16;

fn kind(name: &[u8]) -> Option<Kind> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    for (u, c) in buf.iter_mut().zip(name) {
        *u = c.to_ascii_uppercase();
    }
    Some(match &buf[..name.len()] {
        b"SET" => Kind::Set,
        b"SETEX" => Kind::SetEx(Ttl::Seconds),
        b"PSETEX" => Kind::SetEx(Ttl::Millis),
        b"GETEX" => Kind::GetEx,
        b"GETSET" => Kind::GetSet,
        b"GETDEL" => Kind::GetDel,
        b"EXPIRE" => Kind::Expire(Ttl::Seconds),
        b"PEXPIRE" => Kind::Expire(Ttl::Millis),
        b"EXPIREAT" => Kind::Expire(Ttl::UnixSeconds),
        b"PEXPIREAT" => Kind::Expire(Ttl::UnixMillis),
        b"RESTORE" | b"RESTORE-ASKING" => Kind::Restore,
        b"SPOP" => Kind::SPop,
        b"INCRBYFLOAT" => Kind::IncrByFloat,
        b"HINCRBYFLOAT" => Kind::HIncrByFloat,
        b"BLPOP" => Kind::BPop(true),
        b"BRPOP" => Kind::BPop(false),
        b"BLMOVE" => Kind::BLMove,
        b"BRPOPLPUSH" => Kind::BRPopLPush,
        b"LMPOP" => Kind::LMPop(false),
        b"BLMPOP" => Kind::LMPop(true),
        b"BZPOPMIN" => Kind::BZPop(true),
        b"BZPOPMAX" => Kind::BZPop(false),
        b"ZMPOP" => Kind::ZMPop(false),
        b"BZMPOP" => Kind::ZMPop(true),
        b"XADD" => Kind::XAdd,
        b"XREADGROUP" => Kind::XReadGroup,
        b"XCLAIM" => Kind::XClaim,
        b"XAUTOCLAIM" => Kind::XAutoClaim,
        b"EVAL" | b"EVAL_RO" => Kind::Eval,
        b"EVALSHA" => Kind::EvalSha,
        b"SCRIPT" => Kind::Script,
        b"MIGRATE" => Kind::Migrate,
        _ => return None,
    })
}

/// Whether [`rewrite`] may do anything with `command` (or needs to see it,
/// like `EVAL` for the script cache). For every other command `rewrite`
/// answers [`Rewritten::Verbatim`]; callers can skip it, and the clock read.
pub fn applies(command: &Command) -> bool {
    kind(command.name()).is_some()
}

/// What to replicate for `command`, which the primary answered with `reply`
/// (not an error) at `now_ms` on the proxy's clock. The reply is decoded
/// only for the commands whose rewrite depends on it.
///
/// Also keeps `scripts` up to date: `EVAL`, `EVAL_RO` and `SCRIPT LOAD`
/// teach it bodies, `SCRIPT FLUSH` empties it, an `EVALSHA` of a body it
/// does not know is counted and logged (and replicated verbatim).
pub fn rewrite(
    command: &Command,
    reply: Reply<'_>,
    now_ms: u64,
    scripts: &ScriptCache,
) -> Rewritten {
    let Some(kind) = kind(command.name()) else {
        return Rewritten::Verbatim;
    };
    let args = command.args();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let out = match kind {
        Kind::Set => set(args, reply, now),
        Kind::SetEx(ttl) => setex(args, ttl, now),
        Kind::GetEx => getex(args, reply, now),
        Kind::GetSet => getset(args),
        Kind::GetDel => getdel(args, reply),
        Kind::Expire(ttl) => expire(args, ttl, reply, now),
        Kind::Restore => restore(args, now),
        Kind::SPop => spop(args, reply),
        Kind::IncrByFloat => incrbyfloat(args, reply),
        Kind::HIncrByFloat => hincrbyfloat(args, reply),
        Kind::BPop(left) => bpop(args, reply, left),
        Kind::BLMove => blmove(args, reply),
        Kind::BRPopLPush => brpoplpush(args, reply),
        Kind::LMPop(blocking) => mpop(args, reply, blocking, false),
        Kind::BZPop(min) => bzpop(args, reply, min),
        Kind::ZMPop(blocking) => mpop(args, reply, blocking, true),
        Kind::XAdd => xadd(args, reply),
        Kind::XReadGroup => xreadgroup(args, reply, now),
        Kind::XClaim => xclaim(args, reply, now),
        Kind::XAutoClaim => xautoclaim(args, reply, now),
        Kind::Eval => {
            if let Some(body) = args.get(1) {
                scripts.learn(body);
            }
            None
        }
        Kind::EvalSha => evalsha(args, scripts),
        Kind::Script => script(args, reply, scripts),
        Kind::Migrate => migrate(args, reply),
    };
    // `None`: arguments or reply not as expected (Redis accepted them, so
    // this is a shape we do not know): replicate what the client sent.
    out.unwrap_or(Rewritten::Verbatim)
}

/// Notes a command the primary refused with `error` (the message, without
/// the RESP type byte). Redis keeps a script that compiled in its cache even
/// when running it failed, so the script cache learns its body too.
pub fn refused(command: &Command, error: &[u8], scripts: &ScriptCache) {
    if kind(command.name()) == Some(Kind::Eval) && !failed_to_compile(error) {
        if let Some(body) = command.arg(1) {
            scripts.learn(body);
        }
    }
}

fn failed_to_compile(error: &[u8]) -> bool {
    let head = &error[..error.len().min(96)];
    head.windows(22).any(|w| w == b"Error compiling script")
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

fn ttl_option(arg: &[u8]) -> Option<Ttl> {
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
fn deadline(ttl: Ttl, value: &[u8], now: i64) -> Option<i64> {
    let v = int(value)?;
    match ttl {
        Ttl::Seconds => v.checked_mul(1000)?.checked_add(now),
        Ttl::Millis => v.checked_add(now),
        Ttl::UnixSeconds => v.checked_mul(1000),
        Ttl::UnixMillis => Some(v),
    }
}

/// A stream id as `XCLAIM` parses it: `ms` or `ms-seq`.
fn stream_id(arg: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(arg).ok()?;
    let digits = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match text.split_once('-') {
        Some((ms, seq)) => Some((digits(ms)?, digits(seq)?)),
        None => Some((digits(text)?, 0)),
    }
}

/// The id of an entry in a stream reply: `[id, fields]`, or a bare id
/// (`JUSTID`).
fn entry_id(entry: &Frame) -> Option<&Bytes> {
    match entry {
        Frame::Array(parts) => parts.first()?.as_bytes(),
        other => other.as_bytes(),
    }
}

// ---------------------------------------------------------------------------
// Strings and expiration
// ---------------------------------------------------------------------------

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
///
/// Like Redis (t_string.c, `setGenericCommand`), a relative or seconds
/// expiry is replicated as `PXAT`. The conditions are dropped once the
/// reply says the SET happened: the primary decided, the backup must follow
/// even if it would decide otherwise. Whether it happened: without `GET` the
/// reply is `OK` or nil; with `GET` it is the old value, and `NX` set only if
/// there was none, `XX` only if there was one.
fn set(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
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
fn setex(args: &[Bytes], ttl: Ttl, now: i64) -> Option<Rewritten> {
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
fn getex(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
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

/// `GETSET key value` → `SET key value` (both drop the TTL).
fn getset(args: &[Bytes]) -> Option<Rewritten> {
    let [_, key, value] = args else {
        return None;
    };
    one(vec![word("SET"), key.clone(), value.clone()])
}

/// `GETDEL key` → `DEL key`, if there was a key.
fn getdel(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let key = args.get(1)?;
    if nil_reply(reply) {
        return Some(Rewritten::Nothing);
    }
    one(vec![word("DEL"), key.clone()])
}

/// `EXPIRE|PEXPIRE|EXPIREAT|PEXPIREAT key n [NX|XX|GT|LT]` → `PEXPIREAT key
/// <abs ms>` when the reply is 1 (Redis's own propagation, expire.c), nothing
/// when it is 0. The flags are dropped: the primary already applied them.
/// With no reply the flags stay, for the backup to decide the same way.
fn expire(args: &[Bytes], ttl: Ttl, reply: Reply<'_>, now: i64) -> Option<Rewritten> {
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
fn restore(args: &[Bytes], now: i64) -> Option<Rewritten> {
    let ttl = int(args.get(2)?)?;
    if args.len() < 4 || ttl <= 0 || args[4..].iter().any(|a| is(a, "ABSTTL")) {
        return Some(Rewritten::Verbatim);
    }
    let mut parts = args.to_vec();
    parts[2] = number(ttl.checked_add(now)?);
    parts.push(word("ABSTTL"));
    one(parts)
}

/// `INCRBYFLOAT key x` → `SET key <result> KEEPTTL` (t_string.c): float
/// formatting is the primary's business, the backup takes its result.
fn incrbyfloat(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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
fn hincrbyfloat(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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

// ---------------------------------------------------------------------------
// Sets, lists, sorted sets
// ---------------------------------------------------------------------------

/// `SPOP key [count]` → `SREM key <members popped>` (t_set.c). Without a
/// reply the members are unknown: verbatim, the backup pops its own.
fn spop(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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

/// `BLPOP|BRPOP key [key ...] timeout` → `LPOP|RPOP <key served>`, nothing
/// on timeout (t_list.c). Without a reply: `LMPOP` of the same keys, the
/// non-blocking equivalent.
fn bpop(args: &[Bytes], reply: Reply<'_>, left: bool) -> Option<Rewritten> {
    if args.len() < 3 {
        return None;
    }
    let Some(f) = reply.decode() else {
        let keys = &args[1..args.len() - 1];
        let mut parts = vec![word("LMPOP"), number(keys.len() as i64)];
        parts.extend(keys.iter().cloned());
        parts.push(word(if left { "LEFT" } else { "RIGHT" }));
        return one(parts);
    };
    match &*f {
        Frame::Null => Some(Rewritten::Nothing),
        Frame::Array(items) => one(vec![
            word(if left { "LPOP" } else { "RPOP" }),
            items.first()?.as_bytes()?.clone(),
        ]),
        _ => None,
    }
}

/// `BLMOVE src dst LEFT|RIGHT LEFT|RIGHT timeout` → `LMOVE`.
fn blmove(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let [_, src, dst, from, to, _timeout] = args else {
        return None;
    };
    if nil_reply(reply) {
        return Some(Rewritten::Nothing);
    }
    one(vec![
        word("LMOVE"),
        src.clone(),
        dst.clone(),
        from.clone(),
        to.clone(),
    ])
}

/// `BRPOPLPUSH src dst timeout` → `RPOPLPUSH src dst`.
fn brpoplpush(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let [_, src, dst, _timeout] = args else {
        return None;
    };
    if nil_reply(reply) {
        return Some(Rewritten::Nothing);
    }
    one(vec![word("RPOPLPUSH"), src.clone(), dst.clone()])
}

/// `[B]LMPOP [timeout] numkeys key... LEFT|RIGHT [COUNT n]` → `LPOP|RPOP
/// <key served> <count popped>`, and `[B]ZMPOP ... MIN|MAX` → `ZPOPMIN|
/// ZPOPMAX`. The reply is `[key, [elements]]` or nil.
fn mpop(args: &[Bytes], reply: Reply<'_>, blocking: bool, zset: bool) -> Option<Rewritten> {
    let numkeys_at = if blocking { 2 } else { 1 };
    let numkeys = usize::try_from(int(args.get(numkeys_at)?)?).ok()?;
    let direction = args.get(numkeys_at.checked_add(1)?.checked_add(numkeys)?)?;
    let pop = match (zset, direction) {
        (false, d) if is(d, "LEFT") => "LPOP",
        (false, d) if is(d, "RIGHT") => "RPOP",
        (true, d) if is(d, "MIN") => "ZPOPMIN",
        (true, d) if is(d, "MAX") => "ZPOPMAX",
        _ => return None,
    };
    let Some(f) = reply.decode() else {
        if !blocking {
            return Some(Rewritten::Verbatim);
        }
        let mut parts = vec![word(if zset { "ZMPOP" } else { "LMPOP" })];
        parts.extend(args[2..].iter().cloned());
        return one(parts);
    };
    match &*f {
        Frame::Null => Some(Rewritten::Nothing),
        Frame::Array(items) => {
            let key = items.first()?.as_bytes()?;
            let count = items.get(1)?.as_array()?.len();
            if count == 0 {
                return Some(Rewritten::Nothing);
            }
            one(vec![word(pop), key.clone(), number(count as i64)])
        }
        _ => None,
    }
}

/// `BZPOPMIN|BZPOPMAX key [key ...] timeout` → `ZPOPMIN|ZPOPMAX <key
/// served>` (t_zset.c); the reply is `[key, member, score]` or nil.
fn bzpop(args: &[Bytes], reply: Reply<'_>, min: bool) -> Option<Rewritten> {
    if args.len() < 3 {
        return None;
    }
    let Some(f) = reply.decode() else {
        let keys = &args[1..args.len() - 1];
        let mut parts = vec![word("ZMPOP"), number(keys.len() as i64)];
        parts.extend(keys.iter().cloned());
        parts.push(word(if min { "MIN" } else { "MAX" }));
        return one(parts);
    };
    match &*f {
        Frame::Null => Some(Rewritten::Nothing),
        Frame::Array(items) => one(vec![
            word(if min { "ZPOPMIN" } else { "ZPOPMAX" }),
            items.first()?.as_bytes()?.clone(),
        ]),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Where the id is in `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT
/// c]] id field value ...`, found the way t_stream.c
/// (`streamParseAddOrTrimArgsOrReply`) does: the first argument from the
/// third on that is not an option.
fn xadd_id_index(args: &[Bytes]) -> Option<usize> {
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let a = &args[i];
        if &a[..] == b"*" {
            return Some(i);
        } else if (is(a, "MAXLEN") || is(a, "MINID")) && more > 0 {
            let next = &args[i + 1][..];
            if more >= 2 && (next == b"~" || next == b"=") {
                i += 1;
            }
            i += 1;
        } else if is(a, "LIMIT") && more > 0 {
            i += 1;
        } else if !is(a, "NOMKSTREAM") {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `XADD` with `*` or `ms-*` → the same command with the id the primary
/// generated (t_stream.c rewrites it the same way). A nil reply
/// (`NOMKSTREAM`, no stream) added nothing. Approximate trimming (`~`) is
/// replicated as is: see docs/semantics.md.
fn xadd(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
    let at = xadd_id_index(args)?;
    let id = &args[at];
    let generated = &id[..] == b"*" || id.ends_with(b"-*");
    if !generated && !args[2..at].iter().any(|a| is(a, "NOMKSTREAM")) {
        return Some(Rewritten::Verbatim);
    }
    let Some(f) = reply.decode() else {
        return Some(Rewritten::Verbatim);
    };
    match &*f {
        Frame::Null => Some(Rewritten::Nothing),
        Frame::Bulk(new_id) if generated => {
            let mut parts = args.to_vec();
            parts[at] = new_id.clone();
            one(parts)
        }
        Frame::Bulk(_) => Some(Rewritten::Verbatim),
        _ => None,
    }
}

/// The parts of `XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS
/// key... id...` (options in any order, as t_stream.c parses them).
struct ReadGroup<'a> {
    group: &'a Bytes,
    consumer: &'a Bytes,
    count: Option<&'a Bytes>,
    /// Index of `BLOCK`, if given.
    block: Option<usize>,
    noack: bool,
    keys: &'a [Bytes],
    ids: &'a [Bytes],
}

fn parse_xreadgroup(args: &[Bytes]) -> Option<ReadGroup<'_>> {
    let (mut group, mut consumer, mut count, mut block, mut noack) =
        (None, None, None, None, false);
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let a = &args[i];
        if is(a, "BLOCK") && more > 0 {
            block = Some(i);
            i += 1;
        } else if is(a, "COUNT") && more > 0 {
            count = Some(&args[i + 1]);
            i += 1;
        } else if is(a, "STREAMS") && more > 0 {
            let rest = &args[i + 1..];
            let (keys, ids) = rest.split_at(rest.len() / 2);
            if keys.len() != ids.len() {
                return None;
            }
            return Some(ReadGroup {
                group: group?,
                consumer: consumer?,
                count,
                block,
                noack,
                keys,
                ids,
            });
        } else if is(a, "GROUP") && more >= 2 {
            group = Some(&args[i + 1]);
            consumer = Some(&args[i + 2]);
            i += 2;
        } else if is(a, "NOACK") {
            noack = true;
        } else {
            return None;
        }
        i += 1;
    }
    None
}

/// `XREADGROUP`: per stream the primary served, a non-blocking
/// `XREADGROUP GROUP g c COUNT <n delivered> [NOACK] STREAMS key >` (for
/// new entries) or the same history read (`STREAMS key <id>`), then
/// `XCLAIM key g c 0 <ids> TIME <now> JUSTID` to give the pending entries
/// the primary's delivery time.
///
/// Redis propagates `XCLAIM ... FORCE JUSTID LASTID` per entry instead
/// (t_stream.c, `streamPropagateXCLAIM`), which leaves the group's
/// `entries-read` behind on replicas and ignores history reads; replaying
/// the read itself makes the backup's group do exactly what the primary's
/// did: last-delivered-id, entries-read, consumers, pending entries and
/// delivery counts. The backup must hold the same entries, as for any
/// replayed pop.
fn xreadgroup(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    let p = parse_xreadgroup(args)?;
    let Some(f) = reply.decode() else {
        // Unknown outcome: the same read without BLOCK.
        let Some(at) = p.block else {
            return Some(Rewritten::Verbatim);
        };
        let mut parts = args[..at].to_vec();
        parts.extend(args[at + 2..].iter().cloned());
        return one(parts);
    };
    let served: Vec<(&Bytes, &[Frame])> = match &*f {
        Frame::Null => return Some(Rewritten::Nothing),
        Frame::Array(streams) => streams
            .iter()
            .map(|s| {
                let pair = s.as_array()?;
                Some((pair.first()?.as_bytes()?, pair.get(1)?.as_array()?))
            })
            .collect::<Option<_>>()?,
        Frame::Map(kv) => kv
            .chunks(2)
            .map(|pair| Some((pair.first()?.as_bytes()?, pair.get(1)?.as_array()?)))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let mut out = Vec::new();
    for (key, entries) in served {
        let at = p.keys.iter().position(|k| k == key)?;
        let id = &p.ids[at];
        let new = &id[..] == b">";
        if new && entries.is_empty() {
            continue;
        }
        let mut parts = vec![
            word("XREADGROUP"),
            word("GROUP"),
            p.group.clone(),
            p.consumer.clone(),
        ];
        if new {
            parts.push(word("COUNT"));
            parts.push(number(entries.len() as i64));
            if p.noack {
                parts.push(word("NOACK"));
            }
        } else if let Some(count) = p.count {
            parts.push(word("COUNT"));
            parts.push(count.clone());
        }
        parts.extend([word("STREAMS"), key.clone(), id.clone()]);
        out.push(Command::new(parts));
        if new && p.noack {
            continue;
        }
        // Entries deleted since delivery come back as [id, nil]: they stay
        // pending as they are; an XCLAIM would drop them.
        let mut claim = vec![
            word("XCLAIM"),
            key.clone(),
            p.group.clone(),
            p.consumer.clone(),
            word("0"),
        ];
        for entry in entries {
            let parts = entry.as_array()?;
            if !matches!(parts.get(1), Some(Frame::Null) | None) {
                claim.push(parts.first()?.as_bytes()?.clone());
            }
        }
        if claim.len() > 5 {
            claim.extend([word("TIME"), number(now), word("JUSTID")]);
            out.push(Command::new(claim));
        }
    }
    commands(out)
}

/// `XCLAIM key group consumer min-idle id... [IDLE ms] [TIME ms]
/// [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]`.
///
/// Which entries qualify depends on how long they were idle, so verbatim
/// the backup would claim more the later it runs. Replicated as:
/// `XCLAIM key group consumer 0 <ids claimed> TIME <abs> [RETRYCOUNT n]
/// [FORCE] [JUSTID] [LASTID id]`, and, for the ids that were not claimed,
/// `XCLAIM key group consumer 9223372036854775807 <ids> JUSTID`, which claims
/// nothing but, like the primary, drops pending entries whose stream entry
/// was deleted.
fn xclaim(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    if args.len() < 6 {
        return None;
    }
    let (key, group, consumer) = (&args[1], &args[2], &args[3]);
    let mut i = 5;
    while i < args.len() && stream_id(&args[i]).is_some() {
        i += 1;
    }
    let ids = &args[5..i];
    if ids.is_empty() {
        return None;
    }
    let mut time = None;
    let mut lastid = None;
    let mut options = Vec::new();
    while i < args.len() {
        let a = &args[i];
        let value = args.get(i + 1);
        if is(a, "IDLE") {
            time = Some(now.checked_sub(int(value?)?)?);
            i += 1;
        } else if is(a, "TIME") {
            time = Some(int(value?)?);
            i += 1;
        } else if is(a, "RETRYCOUNT") {
            options.extend([a.clone(), value?.clone()]);
            i += 1;
        } else if is(a, "LASTID") {
            lastid = Some(value?);
            i += 1;
        } else if is(a, "FORCE") || is(a, "JUSTID") {
            options.push(a.clone());
        } else {
            return None;
        }
        i += 1;
    }
    let f = reply.decode()?;
    let claimed: Vec<&Bytes> = f.as_array()?.iter().map(entry_id).collect::<Option<_>>()?;
    let claimed_ids: Vec<(u64, u64)> = claimed.iter().filter_map(|id| stream_id(id)).collect();
    let rest: Vec<Bytes> = ids
        .iter()
        .filter(|id| stream_id(id).is_some_and(|p| !claimed_ids.contains(&p)))
        .cloned()
        .collect();
    let head = [key.clone(), group.clone(), consumer.clone()];
    let mut out = Vec::new();
    let mut lastid = lastid.map(|id| [word("LASTID"), id.clone()]);
    if !claimed.is_empty() {
        let mut parts = vec![word("XCLAIM")];
        parts.extend(head.iter().cloned());
        parts.push(word("0"));
        parts.extend(claimed.into_iter().cloned());
        parts.extend([word("TIME"), number(time.unwrap_or(now))]);
        parts.extend(options);
        parts.extend(lastid.take().into_iter().flatten());
        out.push(Command::new(parts));
    }
    if !rest.is_empty() {
        let mut parts = vec![word("XCLAIM")];
        parts.extend(head);
        parts.push(number(i64::MAX));
        parts.extend(rest);
        parts.push(word("JUSTID"));
        parts.extend(lastid.take().into_iter().flatten());
        out.push(Command::new(parts));
    }
    commands(out)
}

/// `XAUTOCLAIM key group consumer min-idle start [COUNT n] [JUSTID]`; the
/// reply is `[next, [claimed], [deleted ids]]`. Replicated as `XCLAIM key
/// group consumer 0 <claimed ids> TIME <now> [JUSTID]` (same delivery-count
/// rule) and `XACK key group <deleted ids>` (the primary dropped those
/// pending entries).
fn xautoclaim(args: &[Bytes], reply: Reply<'_>, now: i64) -> Option<Rewritten> {
    if args.len() < 6 {
        return None;
    }
    let (key, group, consumer) = (&args[1], &args[2], &args[3]);
    let justid = args[6..].iter().any(|a| is(a, "JUSTID"));
    let f = reply.decode()?;
    let parts = f.as_array()?;
    let claimed: Vec<&Bytes> = parts
        .get(1)?
        .as_array()?
        .iter()
        .map(entry_id)
        .collect::<Option<_>>()?;
    let deleted: Vec<&Bytes> = match parts.get(2) {
        Some(d) => d.as_array()?.iter().map(entry_id).collect::<Option<_>>()?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    if !claimed.is_empty() {
        let mut c = vec![
            word("XCLAIM"),
            key.clone(),
            group.clone(),
            consumer.clone(),
            word("0"),
        ];
        c.extend(claimed.into_iter().cloned());
        c.extend([word("TIME"), number(now)]);
        if justid {
            c.push(word("JUSTID"));
        }
        out.push(Command::new(c));
    }
    if !deleted.is_empty() {
        let mut c = vec![word("XACK"), key.clone(), group.clone()];
        c.extend(deleted.into_iter().cloned());
        out.push(Command::new(c));
    }
    commands(out)
}

// ---------------------------------------------------------------------------
// Scripts and MIGRATE
// ---------------------------------------------------------------------------

/// `EVALSHA sha numkeys ...` → `EVAL <body> numkeys ...` when the body is
/// cached; otherwise counted, logged and replicated verbatim.
fn evalsha(args: &[Bytes], scripts: &ScriptCache) -> Option<Rewritten> {
    let sha = args.get(1)?;
    match scripts.body(sha) {
        Some(body) => {
            let mut parts = args.to_vec();
            parts[0] = word("EVAL");
            parts[1] = body;
            one(parts)
        }
        None => {
            scripts.note_unknown(sha);
            Some(Rewritten::Verbatim)
        }
    }
}

/// `SCRIPT LOAD body` teaches the cache (the reply is the SHA-1, checked
/// against ours); `SCRIPT FLUSH` empties it. Both replicate verbatim.
fn script(args: &[Bytes], reply: Reply<'_>, scripts: &ScriptCache) -> Option<Rewritten> {
    let sub = args.get(1)?;
    if is(sub, "LOAD") {
        let sha = sha1::hex(&scripts.learn(args.get(2)?));
        if let Some(answer) = reply.decode().as_deref().and_then(Frame::as_bytes) {
            if !answer.eq_ignore_ascii_case(sha.as_bytes()) {
                log::warn!(
                    "SCRIPT LOAD: the primary named the script {} but the proxy computed {sha}",
                    String::from_utf8_lossy(answer)
                );
            }
        }
    } else if is(sub, "FLUSH") {
        scripts.flush();
    }
    Some(Rewritten::Verbatim)
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2
/// user pw] [KEYS key...]` → `DEL <keys>` (cluster.c does the same): replayed
/// verbatim, the backup would send its own keys to the destination. With
/// `COPY`, or when the reply is `NOKEY`, nothing left the primary.
fn migrate(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn cmd(parts: &[&str]) -> Command {
        Command::from_parts(parts.iter())
    }

    /// Rewrites `parts` given the raw RESP `reply`.
    fn rw_with(parts: &[&str], reply: &str, scripts: &ScriptCache) -> Rewritten {
        let bytes = Bytes::copy_from_slice(reply.as_bytes());
        rewrite(&cmd(parts), Reply::Raw(&bytes), NOW, scripts)
    }

    fn rw(parts: &[&str], reply: &str) -> Rewritten {
        rw_with(parts, reply, &ScriptCache::new())
    }

    fn rw_unknown(parts: &[&str]) -> Rewritten {
        rewrite(&cmd(parts), Reply::Unknown, NOW, &ScriptCache::new())
    }

    /// The expected commands, each written as space-separated words.
    fn to(lines: &[&str]) -> Rewritten {
        Rewritten::Commands(lines.iter().map(|l| cmd(&words(l))).collect())
    }

    fn words(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }

    fn at(offset_ms: i64) -> String {
        (NOW as i64 + offset_ms).to_string()
    }

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
            assert!(!applies(&cmd(parts)), "{parts:?}");
            assert_eq!(rw(parts, "+OK\r\n"), Rewritten::Verbatim, "{parts:?}");
        }
        assert!(applies(&cmd(&["set", "k", "v"])));
        assert!(applies(&cmd(&["evalsha", "x", "0"])));
        let long = "X".repeat(100);
        assert!(!applies(&cmd(&[long.as_str()])));
    }

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
    fn blocking_list_pops() {
        assert_eq!(
            rw(&["BLPOP", "a", "b", "0"], "*2\r\n$1\r\nb\r\n$1\r\nx\r\n"),
            to(&["LPOP b"])
        );
        assert_eq!(
            rw(&["brpop", "a", "1.5"], "*2\r\n$1\r\na\r\n$1\r\nx\r\n"),
            to(&["RPOP a"])
        );
        assert_eq!(rw(&["BLPOP", "a", "1"], "*-1\r\n"), Rewritten::Nothing);
        assert_eq!(rw(&["BLPOP", "a", "1"], "_\r\n"), Rewritten::Nothing);
        assert_eq!(
            rw_unknown(&["BLPOP", "a", "b", "0"]),
            to(&["LMPOP 2 a b LEFT"])
        );
        assert_eq!(
            rw(&["BLMOVE", "s", "d", "LEFT", "RIGHT", "0"], "$1\r\nx\r\n"),
            to(&["LMOVE s d LEFT RIGHT"])
        );
        assert_eq!(
            rw(&["BLMOVE", "s", "d", "LEFT", "RIGHT", "1"], "$-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["BRPOPLPUSH", "s", "d", "0"], "$1\r\nx\r\n"),
            to(&["RPOPLPUSH s d"])
        );
        assert_eq!(
            rw(&["BRPOPLPUSH", "s", "d", "1"], "*-1\r\n"),
            Rewritten::Nothing
        );
    }

    #[test]
    fn multi_key_pops() {
        let served = "*2\r\n$1\r\nb\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n";
        assert_eq!(
            rw(
                &["BLMPOP", "0", "2", "a", "b", "RIGHT", "COUNT", "5"],
                served
            ),
            to(&["RPOP b 2"])
        );
        assert_eq!(
            rw(&["LMPOP", "2", "a", "b", "left"], served),
            to(&["LPOP b 2"])
        );
        // A key named like a direction is still a key.
        assert_eq!(
            rw(&["LMPOP", "2", "LEFT", "RIGHT", "RIGHT"], served),
            to(&["RPOP b 2"])
        );
        assert_eq!(
            rw(&["BLMPOP", "1", "1", "a", "LEFT"], "_\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw_unknown(&["BLMPOP", "0", "1", "a", "LEFT", "COUNT", "2"]),
            to(&["LMPOP 1 a LEFT COUNT 2"])
        );
        assert_eq!(
            rw_unknown(&["LMPOP", "1", "a", "LEFT"]),
            Rewritten::Verbatim
        );
        let zserved = "*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n";
        assert_eq!(
            rw(&["BZMPOP", "0", "1", "z", "MIN", "COUNT", "2"], zserved),
            to(&["ZPOPMIN z 2"])
        );
        assert_eq!(
            rw(&["ZMPOP", "1", "z", "MAX", "COUNT", "9"], zserved),
            to(&["ZPOPMAX z 2"])
        );
        assert_eq!(
            rw(&["BZMPOP", "1", "1", "z", "MIN"], "*-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["LMPOP", "x", "a", "LEFT"], served),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn blocking_zset_pops() {
        assert_eq!(
            rw(
                &["BZPOPMIN", "y", "z", "0"],
                "*3\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\n1\r\n"
            ),
            to(&["ZPOPMIN z"])
        );
        assert_eq!(
            rw(
                &["BZPOPMAX", "z", "0"],
                "*3\r\n$1\r\nz\r\n$1\r\na\r\n,1\r\n"
            ),
            to(&["ZPOPMAX z"])
        );
        assert_eq!(rw(&["BZPOPMAX", "z", "1"], "*-1\r\n"), Rewritten::Nothing);
        assert_eq!(
            rw_unknown(&["BZPOPMAX", "y", "z", "0"]),
            to(&["ZMPOP 2 y z MAX"])
        );
    }

    #[test]
    fn xadd_takes_the_generated_id() {
        let id = "$15\r\n1700000000000-0\r\n";
        assert_eq!(
            rw(&["XADD", "s", "*", "f", "v"], id),
            to(&["XADD s 1700000000000-0 f v"])
        );
        assert_eq!(
            rw(
                &[
                    "xadd",
                    "s",
                    "NOMKSTREAM",
                    "MAXLEN",
                    "~",
                    "100",
                    "LIMIT",
                    "10",
                    "*",
                    "f",
                    "v"
                ],
                id
            ),
            to(&["xadd s NOMKSTREAM MAXLEN ~ 100 LIMIT 10 1700000000000-0 f v"])
        );
        assert_eq!(
            rw(
                &["XADD", "s", "MINID", "5", "1700000000000-*", "f", "v"],
                id
            ),
            to(&["XADD s MINID 5 1700000000000-0 f v"])
        );
        // A field named "*" after an explicit id is not the id.
        assert_eq!(
            rw(&["XADD", "s", "5-1", "*", "v"], "$3\r\n5-1\r\n"),
            Rewritten::Verbatim
        );
        assert_eq!(
            rw(&["XADD", "s", "NOMKSTREAM", "*", "f", "v"], "_\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw(&["XADD", "s", "NOMKSTREAM", "5-1", "f", "v"], "$-1\r\n"),
            Rewritten::Nothing
        );
        assert_eq!(
            rw_unknown(&["XADD", "s", "*", "f", "v"]),
            Rewritten::Verbatim
        );
    }

    const ENTRIES: &str = "*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\na\r\n$1\r\n2\r\n";

    #[test]
    fn xreadgroup_new_entries() {
        let reply = format!("*1\r\n*2\r\n$1\r\ns\r\n{ENTRIES}");
        let time = format!("XCLAIM s g c 0 1-0 2-0 TIME {NOW} JUSTID");
        assert_eq!(
            rw(
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    "10",
                    "BLOCK",
                    "0",
                    "STREAMS",
                    "s",
                    ">"
                ],
                &reply
            ),
            to(&["XREADGROUP GROUP g c COUNT 2 STREAMS s >", &time])
        );
        // RESP3: a map from stream to entries.
        let map = format!("%1\r\n$1\r\ns\r\n{ENTRIES}");
        assert_eq!(
            rw(
                &["xreadgroup", "group", "g", "c", "streams", "s", ">"],
                &map
            ),
            to(&["XREADGROUP GROUP g c COUNT 2 STREAMS s >", &time])
        );
        assert_eq!(
            rw(
                &[
                    "XREADGROUP",
                    "NOACK",
                    "GROUP",
                    "g",
                    "c",
                    "STREAMS",
                    "s",
                    ">"
                ],
                &reply
            ),
            to(&["XREADGROUP GROUP g c COUNT 2 NOACK STREAMS s >"])
        );
        assert_eq!(
            rw(
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "BLOCK",
                    "10",
                    "STREAMS",
                    "s",
                    ">"
                ],
                "*-1\r\n"
            ),
            Rewritten::Nothing
        );
        assert_eq!(
            rw_unknown(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "10",
                "STREAMS",
                "s",
                ">"
            ]),
            to(&["XREADGROUP GROUP g c STREAMS s >"])
        );
    }

    #[test]
    fn xreadgroup_several_streams_and_history() {
        // t served two entries, s (history from 0) one live and one deleted,
        // u (">") nothing.
        let reply = format!(
            "*2\r\n*2\r\n$1\r\nt\r\n{ENTRIES}*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n7-0\r\n*-1\r\n*2\r\n$3\r\n8-0\r\n*0\r\n"
        );
        assert_eq!(
            rw(
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    "5",
                    "STREAMS",
                    "s",
                    "t",
                    "u",
                    "0",
                    ">",
                    ">"
                ],
                &reply
            ),
            to(&[
                "XREADGROUP GROUP g c COUNT 2 STREAMS t >",
                &format!("XCLAIM t g c 0 1-0 2-0 TIME {NOW} JUSTID"),
                "XREADGROUP GROUP g c COUNT 5 STREAMS s 0",
                &format!("XCLAIM s g c 0 8-0 TIME {NOW} JUSTID"),
            ])
        );
        // A history read that found nothing still creates the consumer.
        assert_eq!(
            rw(
                &["XREADGROUP", "GROUP", "g", "new", "STREAMS", "s", "0"],
                "*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"
            ),
            to(&["XREADGROUP GROUP g new STREAMS s 0"])
        );
    }

    #[test]
    fn xclaim_claims_exactly_what_the_primary_claimed() {
        let claimed = "*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n";
        assert_eq!(
            rw(&["XCLAIM", "s", "g", "c", "3600000", "1-0", "2"], claimed),
            to(&[
                &format!("XCLAIM s g c 0 1-0 TIME {NOW}"),
                "XCLAIM s g c 9223372036854775807 2 JUSTID",
            ])
        );
        assert_eq!(
            rw(
                &[
                    "XCLAIM",
                    "s",
                    "g",
                    "c",
                    "10",
                    "1",
                    "IDLE",
                    "500",
                    "RETRYCOUNT",
                    "4",
                    "FORCE",
                    "JUSTID",
                    "LASTID",
                    "9-0"
                ],
                "*1\r\n$3\r\n1-0\r\n"
            ),
            to(&[&format!(
                "XCLAIM s g c 0 1-0 TIME {} RETRYCOUNT 4 FORCE JUSTID LASTID 9-0",
                at(-500)
            )])
        );
        assert_eq!(
            rw(
                &["XCLAIM", "s", "g", "c", "10", "1-0", "TIME", "12345", "LASTID", "9-0"],
                "*0\r\n"
            ),
            to(&["XCLAIM s g c 9223372036854775807 1-0 JUSTID LASTID 9-0"])
        );
        assert_eq!(
            rw_unknown(&["XCLAIM", "s", "g", "c", "10", "1-0"]),
            Rewritten::Verbatim
        );
    }

    #[test]
    fn xautoclaim() {
        let reply = "*3\r\n$3\r\n0-0\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$3\r\n4-0\r\n";
        assert_eq!(
            rw(&["XAUTOCLAIM", "s", "g", "c", "1000", "0"], reply),
            to(&[&format!("XCLAIM s g c 0 1-0 TIME {NOW}"), "XACK s g 4-0"])
        );
        let justid = "*3\r\n$3\r\n0-0\r\n*2\r\n$3\r\n1-0\r\n$3\r\n3-0\r\n*0\r\n";
        assert_eq!(
            rw(
                &[
                    "XAUTOCLAIM",
                    "s",
                    "g",
                    "c",
                    "1000",
                    "0",
                    "COUNT",
                    "5",
                    "JUSTID"
                ],
                justid
            ),
            to(&[&format!("XCLAIM s g c 0 1-0 3-0 TIME {NOW} JUSTID")])
        );
        assert_eq!(
            rw(
                &["XAUTOCLAIM", "s", "g", "c", "1000", "0"],
                "*3\r\n$3\r\n0-0\r\n*0\r\n*0\r\n"
            ),
            Rewritten::Nothing
        );
    }

    #[test]
    fn evalsha_becomes_eval_when_the_body_is_known() {
        let scripts = ScriptCache::new();
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        let evalsha = ["EVALSHA", sha, "1", "k", "arg"];
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), Rewritten::Verbatim);
        assert_eq!(scripts.unknown_evalsha(), 1);
        // SCRIPT LOAD on some connection teaches the cache.
        let loaded = format!("$40\r\n{sha}\r\n");
        assert_eq!(
            rw_with(&["SCRIPT", "LOAD", "return 1"], &loaded, &scripts),
            Rewritten::Verbatim
        );
        let expected = Rewritten::Commands(vec![cmd(&["EVAL", "return 1", "1", "k", "arg"])]);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        let upper = sha.to_ascii_uppercase();
        assert_eq!(
            rw_with(&["evalsha", &upper, "1", "k", "arg"], ":1\r\n", &scripts),
            expected
        );
        assert_eq!(scripts.unknown_evalsha(), 1);
        // SCRIPT FLUSH forgets.
        assert_eq!(
            rw_with(&["SCRIPT", "FLUSH", "ASYNC"], "+OK\r\n", &scripts),
            Rewritten::Verbatim
        );
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), Rewritten::Verbatim);
        assert_eq!(scripts.unknown_evalsha(), 2);
        // EVAL and EVAL_RO teach it too, even when the script failed.
        rw_with(&["EVAL", "return 1", "0"], ":1\r\n", &scripts);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        rw_with(&["eval_ro", "return 1", "0"], ":1\r\n", &scripts);
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        refused(
            &cmd(&["EVAL", "return 1", "0"]),
            b"ERR user_script:1: oops",
            &scripts,
        );
        assert_eq!(rw_with(&evalsha, ":1\r\n", &scripts), expected);
        scripts.flush();
        refused(
            &cmd(&["EVAL", "return 1", "0"]),
            b"ERR Error compiling script (new function): user_script:1: ...",
            &scripts,
        );
        assert!(scripts.is_empty());
        refused(&cmd(&["SCRIPT", "LOAD", "return 1"]), b"ERR x", &scripts);
        assert!(scripts.is_empty());
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

    #[test]
    fn transaction_elements_are_already_decoded() {
        let scripts = ScriptCache::new();
        let element = Frame::Integer(1);
        assert_eq!(
            rewrite(
                &cmd(&["EXPIRE", "k", "1"]),
                Reply::Frame(&element),
                NOW,
                &scripts
            ),
            to(&[&format!("PEXPIREAT k {}", at(1000))])
        );
        let nil = Frame::Null;
        assert_eq!(
            rewrite(&cmd(&["SPOP", "s"]), Reply::Frame(&nil), NOW, &scripts),
            Rewritten::Nothing
        );
    }
}
