//! Writes refused during a planned failover started with `--clients
//! readonly`: the client gets `-READONLY`, as from a Redis replica, instead
//! of waiting until the failover ends.
//!
//! A refused command is not answered by the proxy itself: it is replaced
//! on its way to the primary by a stand-in the primary answers with an
//! error, and that error is replaced by the refusal on the way back. So
//! the refusal reaches the client in its place among the replies, with no
//! second path for replies, and inside `MULTI` the primary sees a failed
//! command and aborts the transaction at `EXEC` (`-EXECABORT`) just as a
//! read-only replica would.

use bytes::{Bytes, BytesMut};
use remoteback_protocol::Command;

use super::output::AckWait;
use crate::capture::Verdict;
use crate::ordering::LockPlan;

/// The reply to a write refused.
pub const READONLY: &[u8] = b"-READONLY remoteback: failover in progress\r\n";
/// The reply to an `EXEC` of writes queued before the failover began.
const EXECABORT: &[u8] =
    b"-EXECABORT Transaction discarded because of: READONLY remoteback: failover in progress\r\n";
/// A command no Redis knows: it fails, and inside `MULTI` it marks the
/// transaction failed.
const FAILING: &[u8] = b"*1\r\n$27\r\nREMOTEBACK.FAILOVER.REFUSED\r\n";

/// What goes to the primary instead of a refused command, and what the
/// client gets instead of the primary's answer.
pub(super) struct StandIn {
    /// The command as the reply side sees it.
    pub command: Command,
    /// Its bytes, sent to the primary.
    pub request: &'static [u8],
    pub answer: Bytes,
}

/// The stand-in for `command` if it must be refused: a write (its `verdict`
/// says), or an `EXEC` whose transaction queued writes before writes were
/// refused (it becomes a `DISCARD`). `None`: it goes as it is.
pub(super) fn stand_in(
    command: &Command,
    verdict: &Verdict,
    plan: &mut LockPlan,
) -> Option<StandIn> {
    if command.is("EXEC") && plan.queues_writes() {
        let discard = Command::from_parts(["DISCARD"]);
        // The plan forgets the transaction as the primary does.
        let _ = plan.need(&discard, verdict);
        return Some(StandIn {
            command: discard,
            request: b"*1\r\n$7\r\nDISCARD\r\n",
            answer: Bytes::from_static(EXECABORT),
        });
    }
    if !verdict.is_captured() {
        return None;
    }
    Some(StandIn {
        command: Command::from_parts(["REMOTEBACK.FAILOVER.REFUSED"]),
        request: FAILING,
        answer: Bytes::from_static(READONLY),
    })
}

/// `replies` with the spans `swaps` names (start, end, in order, not
/// overlapping) replaced by their answers; `waits` (in order) move with
/// the bytes around them.
pub(super) fn substitute(
    replies: &Bytes,
    swaps: &[(usize, usize, Bytes)],
    waits: &mut [AckWait],
) -> Bytes {
    let mut out = BytesMut::with_capacity(replies.len());
    let mut from = 0;
    let mut waits = waits.iter_mut().peekable();
    for (start, end, answer) in swaps {
        // A swapped reply is never waited for (a refused command makes no
        // record): the waits before it move with the bytes before it.
        let shift = out.len() as isize - from as isize;
        out.extend_from_slice(&replies[from..*start]);
        while let Some(w) = waits.next_if(|w| w.start < *start) {
            w.start = (w.start as isize + shift) as usize;
            w.end = (w.end as isize + shift) as usize;
        }
        out.extend_from_slice(answer);
        from = *end;
    }
    let shift = out.len() as isize - from as isize;
    for w in waits {
        w.start = (w.start as isize + shift) as usize;
        w.end = (w.end as isize + shift) as usize;
    }
    out.extend_from_slice(&replies[from..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(start: usize, end: usize) -> AckWait {
        AckWait {
            start,
            end,
            deliveries: Vec::new(),
        }
    }

    #[test]
    fn refused_replies_are_replaced_and_waits_move_with_their_bytes() {
        let replies = Bytes::from_static(b"+OK\r\n-ERR unknown\r\n:1\r\n-ERR x\r\n+OK\r\n");
        let mut waits = [wait(0, 5), wait(19, 23), wait(31, 36)];
        let swaps = [
            (5, 19, Bytes::from_static(b"-A\r\n")),
            (23, 31, Bytes::from_static(b"-LONGER ONE\r\n")),
        ];
        let out = substitute(&replies, &swaps, &mut waits);
        assert_eq!(&out[..], b"+OK\r\n-A\r\n:1\r\n-LONGER ONE\r\n+OK\r\n");
        let spans: Vec<_> = waits.iter().map(|w| &out[w.start..w.end]).collect();
        assert_eq!(spans, [&b"+OK\r\n"[..], b":1\r\n", b"+OK\r\n"]);
    }

    #[test]
    fn the_stand_ins_are_one_request_each() {
        for (request, name) in [
            (FAILING, "REMOTEBACK.FAILOVER.REFUSED"),
            (&b"*1\r\n$7\r\nDISCARD\r\n"[..], "DISCARD"),
        ] {
            let parsed = remoteback_protocol::request::parse(request)
                .unwrap()
                .unwrap();
            assert_eq!(parsed.len, request.len());
            assert!(parsed.command(&Bytes::from_static(request)).is(name));
        }
    }
}
