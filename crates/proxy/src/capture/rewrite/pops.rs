//! Blocking and multi-key pops of lists and sorted sets: `BLPOP`/`BRPOP`,
//! `BLMOVE`, `BRPOPLPUSH`, `[B]LMPOP`, `BZPOPMIN`/`BZPOPMAX`, `[B]ZMPOP`.
//!
//! A blocking pop depends on *when* it runs: replayed later it could block,
//! time out, or be served from another key. Like Redis (t_list.c,
//! t_zset.c), the proxy replicates the non-blocking pop of the key the
//! primary served, with the count it popped, and nothing on timeout.

use bytes::Bytes;
use remoteback_protocol::frame::Frame;

use super::{int, is, nil_reply, number, one, word, Reply, Rewritten};

/// `BLPOP|BRPOP key [key ...] timeout` → `LPOP|RPOP <key served>`, nothing
/// on timeout (t_list.c). Without a reply: `LMPOP` of the same keys, the
/// non-blocking equivalent.
pub(super) fn bpop(args: &[Bytes], reply: Reply<'_>, left: bool) -> Option<Rewritten> {
    let (pop, side) = if left {
        ("LPOP", "LEFT")
    } else {
        ("RPOP", "RIGHT")
    };
    served_pop(args, reply, "LMPOP", pop, side)
}

/// `BLMOVE src dst LEFT|RIGHT LEFT|RIGHT timeout` → `LMOVE`.
pub(super) fn blmove(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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
pub(super) fn brpoplpush(args: &[Bytes], reply: Reply<'_>) -> Option<Rewritten> {
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
pub(super) fn mpop(
    args: &[Bytes],
    reply: Reply<'_>,
    blocking: bool,
    zset: bool,
) -> Option<Rewritten> {
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
pub(super) fn bzpop(args: &[Bytes], reply: Reply<'_>, min: bool) -> Option<Rewritten> {
    let (pop, side) = if min {
        ("ZPOPMIN", "MIN")
    } else {
        ("ZPOPMAX", "MAX")
    };
    served_pop(args, reply, "ZMPOP", pop, side)
}

/// A single-key blocking pop (`args`: name, keys, timeout) as `pop` of the
/// key the reply names, nothing on timeout; without a reply, `multi` (the
/// non-blocking multi-key pop) of all keys from `side`.
fn served_pop(
    args: &[Bytes],
    reply: Reply<'_>,
    multi: &'static str,
    pop: &'static str,
    side: &'static str,
) -> Option<Rewritten> {
    if args.len() < 3 {
        return None;
    }
    let Some(f) = reply.decode() else {
        let keys = &args[1..args.len() - 1];
        let mut parts = vec![word(multi), number(keys.len() as i64)];
        parts.extend(keys.iter().cloned());
        parts.push(word(side));
        return one(parts);
    };
    match &*f {
        Frame::Null => Some(Rewritten::Nothing),
        Frame::Array(items) => one(vec![word(pop), items.first()?.as_bytes()?.clone()]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::capture::rewrite::test_support::*;
    use crate::capture::rewrite::Rewritten;

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
}
