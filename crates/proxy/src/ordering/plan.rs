//! Which key locks a client command needs, seen from the request side.
//!
//! The request side knows the order in which a client's commands reach the
//! primary, so it follows `SELECT` (locks are per database) and `MULTI`
//! (queued writes run at `EXEC`, so their locks are taken then, all at once).

use bytes::Bytes;
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::Command;

use super::locks::Need;
use crate::capture::Verdict;

/// A session's request-side view of its database and transaction.
#[derive(Debug, Default)]
pub(crate) struct LockPlan {
    db: u32,
    /// Locks the writes queued since `MULTI` will need at `EXEC`.
    queued: Option<Vec<Need>>,
}

impl LockPlan {
    /// The locks `command` needs before it is forwarded, if any: a captured
    /// write (its `verdict` says) locks its keys.
    pub fn need(&mut self, command: &Command, verdict: &Verdict) -> Option<Need> {
        if command.is("SELECT") {
            if let Some(db) = command
                .arg(1)
                .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
            {
                self.db = db;
            }
            return None;
        }
        if command.is("MULTI") {
            self.queued.get_or_insert_with(Vec::new);
            return None;
        }
        if command.is("EXEC") {
            return self.queued.take().and_then(merge);
        }
        if command.is("DISCARD") || command.is("RESET") {
            self.queued = None;
            if command.is("RESET") {
                self.db = 0;
            }
            return None;
        }
        // A blocking pop takes its key locks like a write; the session gives
        // them back as soon as the primary reports it blocked (see
        // `blocked`). Inside MULTI it does not block and is an ordinary
        // queued write.
        if !verdict.is_captured() {
            return None;
        }
        // A command no table knows: its keys are unknown too.
        let need = match verdict.spec {
            Some(spec) => self.need_of(command, spec),
            None => Need::Barrier,
        };
        match self.queued.as_mut() {
            Some(queued) => {
                queued.push(need);
                None
            }
            None => Some(need),
        }
    }

    /// Whether a transaction is open with writes queued in it.
    pub fn queues_writes(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| !q.is_empty())
    }

    fn need_of(&self, command: &Command, spec: &CommandSpec) -> Need {
        // Commands that touch another database or all keys (by the table's
        // lowercase name, a subcommand's container included: one compare
        // each, not a case-insensitive one per name and write).
        let container = spec.name().split('|').next().unwrap_or_default();
        if matches!(
            container,
            "move" | "copy" | "swapdb" | "flushall" | "flushdb" | "function" | "script"
        ) {
            return Need::Barrier;
        }
        let mut pairs: Vec<(u32, Bytes)> = Vec::new();
        spec.keys_into(command.args(), &mut pairs, |k| (self.db, k.clone()));
        if pairs.is_empty() {
            return Need::Barrier;
        }
        if pairs.len() > 1 {
            pairs.sort();
            pairs.dedup();
        }
        Need::Keys(pairs)
    }
}

/// The locks of a whole transaction: the barrier if any command needs it,
/// otherwise every key, sorted.
fn merge(needs: Vec<Need>) -> Option<Need> {
    if needs.is_empty() {
        return None;
    }
    let mut all = Vec::new();
    for need in needs {
        match need {
            Need::Barrier => return Some(Need::Barrier),
            Need::Keys(keys) => all.extend(keys),
        }
    }
    all.sort();
    all.dedup();
    Some(Need::Keys(all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Filter, Routes};
    use remoteback_protocol::Format;

    fn routes() -> Routes {
        Routes::from_parts(Format::Protocol, "t", vec![Filter::Writes])
    }

    fn need(order: &mut LockPlan, s: &Routes, parts: &[&str]) -> Option<Need> {
        let c = Command::from_parts(parts.iter());
        order.need(&c, &s.verdict(&c))
    }

    fn keys(db: u32, ks: &[&str]) -> Option<Need> {
        Some(Need::Keys(
            ks.iter()
                .map(|k| (db, Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        ))
    }

    #[test]
    fn writes_lock_their_keys_in_the_selected_db() {
        let s = routes();
        let mut o = LockPlan::default();
        assert_eq!(need(&mut o, &s, &["GET", "a"]), None);
        assert_eq!(
            need(&mut o, &s, &["MSET", "b", "1", "a", "2", "b", "3"]),
            keys(0, &["a", "b"])
        );
        assert_eq!(need(&mut o, &s, &["SELECT", "4"]), None);
        assert_eq!(need(&mut o, &s, &["SET", "a", "1"]), keys(4, &["a"]));
        assert_eq!(need(&mut o, &s, &["FLUSHDB"]), Some(Need::Barrier));
        assert_eq!(
            need(&mut o, &s, &["EVAL", "return 1", "0"]),
            Some(Need::Barrier)
        );
        assert_eq!(
            need(&mut o, &s, &["BLPOP", "q", "p", "0"]),
            keys(4, &["p", "q"])
        );
        // Unknown to the table: the barrier.
        assert_eq!(
            need(&mut o, &s, &["JSON.SET", "k", "$", "1"]),
            Some(Need::Barrier)
        );
    }

    #[test]
    fn writes_beyond_their_keys_take_the_barrier_in_any_case() {
        let s = routes();
        let mut o = LockPlan::default();
        for parts in [
            &["MOVE", "k", "1"][..],
            &["copy", "a", "b", "DB", "2"],
            &["SwapDb", "0", "1"],
            &["FLUSHALL"],
            &[
                "function",
                "LOAD",
                "#!lua name=l\nredis.register_function('f', function() end)",
            ],
            &["SCRIPT", "flush"],
        ] {
            assert_eq!(need(&mut o, &s, parts), Some(Need::Barrier), "{parts:?}");
        }
        // A key named twice is locked once.
        assert_eq!(need(&mut o, &s, &["RENAME", "a", "a"]), keys(0, &["a"]));
        assert_eq!(
            need(&mut o, &s, &["SMOVE", "b", "a", "m"]),
            keys(0, &["a", "b"])
        );
    }

    #[test]
    fn transactions_lock_at_exec() {
        let s = routes();
        let mut o = LockPlan::default();
        assert_eq!(need(&mut o, &s, &["MULTI"]), None);
        assert_eq!(need(&mut o, &s, &["SET", "b", "1"]), None);
        assert_eq!(need(&mut o, &s, &["GET", "z"]), None);
        assert_eq!(need(&mut o, &s, &["INCR", "a"]), None);
        assert_eq!(need(&mut o, &s, &["EXEC"]), keys(0, &["a", "b"]));
        assert_eq!(need(&mut o, &s, &["MULTI"]), None);
        assert_eq!(need(&mut o, &s, &["SET", "b", "1"]), None);
        assert_eq!(need(&mut o, &s, &["DISCARD"]), None);
        assert_eq!(need(&mut o, &s, &["EXEC"]), None);
    }
}
