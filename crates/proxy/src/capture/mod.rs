//! Turning answered commands into captured writes.
//!
//! Capture runs on the reply side of a session, after the primary answered,
//! so it sees exactly what took effect: it drops refused commands, follows
//! `SELECT` so every capture knows its database, and holds a transaction's
//! commands until `EXEC` says which of them ran (a `DISCARD`, an
//! `EXECABORT` or a `WATCH`-failed `EXEC` capture nothing). Each command
//! that took effect goes through [`rewrite`] with its reply (inside a
//! transaction, its element of the `EXEC` result), so that what is recorded
//! gives the primary's result whenever the backup applies it.
//!
//! One pass per answered command: what it is and who takes it was decided
//! when it was read ([`Verdict`]); here it is rewritten at most once, and
//! [`Routes::dispatch`] encodes each record once.

mod encode;
mod filter;
pub(crate) mod rewrite;
mod routes;

pub use filter::Filter;
pub(crate) use rewrite::ScriptCache;
pub(crate) use routes::{Captured, Routes, Verdict};

use std::sync::Arc;

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::record::now_ms;
use remoteback_protocol::Command;

use crate::sender::ack::Delivery;
use crate::sender::Senders;
use rewrite::{Reply, Rewritten};

/// The capture state of one client session.
pub(crate) struct Capture {
    routes: Arc<Routes>,
    senders: Arc<Senders>,
    /// Script bodies by SHA-1, shared by all sessions (`EVALSHA` → `EVAL`).
    scripts: Arc<ScriptCache>,
    /// The database the client has selected on the primary.
    db: u32,
    /// The transaction the client opened with `MULTI`, if any.
    transaction: Option<Transaction>,
    /// Deliveries of the records captured since the last
    /// [`take_deliveries`](Capture::take_deliveries) (`ack = "kafka"`).
    deliveries: Vec<Delivery>,
}

/// Commands queued inside `MULTI` that the primary accepted (`+QUEUED`),
/// with the database the transaction started in.
struct Transaction {
    db: u32,
    queued: Vec<(Command, Verdict)>,
}

impl Capture {
    /// A session's capture; `scripts` is shared by every session of the
    /// proxy (a script loaded on one connection is run by others).
    pub fn new(routes: Arc<Routes>, senders: Arc<Senders>, scripts: Arc<ScriptCache>) -> Self {
        Capture {
            routes,
            senders,
            scripts,
            db: 0,
            transaction: None,
            deliveries: Vec::new(),
        }
    }

    /// The deliveries the reply just captured must wait for, if any.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Records the outcome of one command; `reply` is its complete reply.
    pub fn on_reply(&mut self, command: Command, verdict: &Verdict, reply: &Bytes) {
        self.on_outcome(command, verdict, reply, Reply::Raw(reply));
    }

    /// A command sent with `CLIENT REPLY OFF|SKIP` in force: the primary
    /// said nothing, so it is captured as if it succeeded (a refused write
    /// is refused by the backup too, from the same state). Rewrites that
    /// need the reply fall back to what the backup can decide alone.
    pub fn on_silent(&mut self, command: Command, verdict: &Verdict) {
        let ok = Bytes::from_static(b"+OK\r\n");
        let held = self.deliveries.len();
        self.on_outcome(command, verdict, &ok, Reply::Unknown);
        // No reply waits for a silent write (`ack = "kafka"`): the client
        // asked for none. A loss is still counted by its sender.
        self.deliveries.truncate(held);
    }

    /// The session ends with `unanswered` still in flight (the reply timeout
    /// expired, the primary closed the connection): the writes among them
    /// may have taken effect on the primary without being captured, so they
    /// count as lost for the backup. A transaction counts once, at its
    /// `EXEC`, if it queued a write; commands queued without an `EXEC` sent
    /// never run.
    ///
    /// In `ROW` format nothing counts: no verdict captures anything there,
    /// the requests were recorded before they were forwarded.
    pub fn abandon<'a>(&mut self, unanswered: impl Iterator<Item = (&'a Command, &'a Verdict)>) {
        let mut in_transaction = self.transaction.is_some();
        let mut queued_write = self
            .transaction
            .as_ref()
            .is_some_and(|t| t.queued.iter().any(|(_, v)| v.is_captured()));
        let mut writes = 0;
        for (command, verdict) in unanswered {
            if command.is("MULTI") {
                in_transaction = true;
                queued_write = false;
            } else if command.is("EXEC") {
                writes += u64::from(in_transaction && queued_write);
                in_transaction = false;
            } else if command.is("DISCARD") || command.is("RESET") {
                in_transaction = false;
            } else if verdict.is_captured() {
                if in_transaction {
                    queued_write = true;
                } else {
                    writes += 1;
                }
            }
        }
        if writes > 0 {
            self.senders.count_uncaptured(writes);
        }
    }

    fn on_outcome(
        &mut self,
        command: Command,
        verdict: &Verdict,
        reply: &Bytes,
        outcome: Reply<'_>,
    ) {
        if self.transaction.is_some() {
            self.in_transaction(command, verdict, reply);
            return;
        }
        if frame::is_error(reply) {
            let error = reply.get(1..).unwrap_or_default();
            self.refused(&command, verdict, error);
            if script_ran(&command, verdict, error) {
                // Its writes before the error stay on the primary: the
                // backup runs it too, to the same error.
                self.capture_one(command, verdict, outcome);
            }
            return;
        }
        if command.is("MULTI") {
            self.transaction = Some(Transaction {
                db: self.db,
                queued: Vec::new(),
            });
        } else if command.is("SELECT") {
            self.db = selected_db(&command).unwrap_or(self.db);
        } else if command.is("RESET") {
            self.db = 0;
        } else {
            self.capture_one(command, verdict, outcome);
        }
    }

    /// Captures one command outside a transaction, rewritten if need be.
    fn capture_one(&mut self, command: Command, verdict: &Verdict, reply: Reply<'_>) {
        if verdict.rewrite.is_none() {
            // The hot path: no rewrite, no reply decoding, no allocation.
            if verdict.is_captured() {
                self.send(&[Captured::verbatim(command, verdict)], false, now_ms());
            }
            return;
        }
        let now = now_ms();
        let mut writes = Vec::new();
        self.replicated(command, verdict, reply, now, &mut writes);
        if !writes.is_empty() {
            // Several commands for one: applied together, as Redis wraps
            // what one command propagates in MULTI/EXEC.
            self.send(&writes, writes.len() > 1, now);
        }
    }

    /// Appends what to replicate for `command`, which took effect with
    /// `reply` at `now`: itself, its rewrite, or nothing; only what some
    /// sender takes.
    fn replicated(
        &self,
        command: Command,
        verdict: &Verdict,
        reply: Reply<'_>,
        now: u64,
        out: &mut Vec<Captured>,
    ) {
        let rewritten = match verdict.rewrite {
            Some(family) => rewrite::apply(family, &command, reply, now, &self.scripts),
            None => Rewritten::Verbatim,
        };
        match rewritten {
            Rewritten::Verbatim if verdict.is_captured() => {
                out.push(Captured::verbatim(command, verdict))
            }
            Rewritten::Verbatim | Rewritten::Nothing => {}
            Rewritten::Commands(replaced) => out.extend(
                replaced
                    .into_iter()
                    .map(|c| self.routes.rewritten(c))
                    .filter(|w| !w.senders.is_empty()),
            ),
        }
    }

    /// A command the primary refused with `error`: only the script cache
    /// may learn from it.
    fn refused(&self, command: &Command, verdict: &Verdict, error: &[u8]) {
        if let Some(family) = verdict.rewrite {
            rewrite::refused(family, command, error, &self.scripts);
        }
    }

    fn send(&mut self, writes: &[Captured], transaction: bool, time_ms: u64) {
        self.routes.dispatch(
            &self.senders,
            self.db,
            writes,
            transaction,
            time_ms,
            &mut self.deliveries,
        );
    }

    fn in_transaction(&mut self, command: Command, verdict: &Verdict, reply: &Bytes) {
        if command.is("EXEC") {
            if let Some(transaction) = self.transaction.take() {
                self.exec(transaction, reply);
            }
        } else if command.is("DISCARD") || command.is("RESET") {
            self.transaction = None;
            if command.is("RESET") {
                self.db = 0;
            }
        } else if &reply[..] == b"+QUEUED\r\n" {
            if let Some(t) = self.transaction.as_mut() {
                t.queued.push((command, *verdict));
            }
        }
    }

    /// Captures the commands of an executed transaction that succeeded.
    fn exec(&mut self, transaction: Transaction, reply: &Bytes) {
        // A nil (WATCH failed) or an error (EXECABORT) ran nothing.
        let Ok(Some((Frame::Array(results), _))) = frame::decode(reply) else {
            return;
        };
        let now = now_ms();
        let mut kept = Vec::new();
        for ((command, verdict), result) in transaction.queued.into_iter().zip(results.iter()) {
            if let Frame::Error(error) = result {
                self.refused(&command, &verdict, error);
                if script_ran(&command, &verdict, error) {
                    self.replicated(command, &verdict, Reply::Frame(result), now, &mut kept);
                }
            } else if command.is("SELECT") {
                self.db = selected_db(&command).unwrap_or(self.db);
                kept.push(Captured::verbatim(command, &verdict));
            } else {
                self.replicated(command, &verdict, Reply::Frame(result), now, &mut kept);
            }
        }
        if kept.iter().any(|w| !w.command.is("SELECT")) {
            self.routes.dispatch(
                &self.senders,
                transaction.db,
                &kept,
                true,
                now,
                &mut self.deliveries,
            );
        }
    }
}

/// Whether a script call (`EVAL`, `EVALSHA`, `FCALL`) that the primary
/// answered with `error` ran, so that the writes it made before failing
/// took effect (Redis does not roll a script back): an error raised while
/// it ran carries `script: NAME, on @user_script:LINE.` (`@user_function`
/// for `FCALL`); one the script returned (`redis.error_reply`) carries
/// nothing, like a refusal before it ran. A killed script wrote nothing. Of those, the refusals that depend
/// on the primary's state (an unknown SHA-1, ACL, `maxmemory`, a busy or
/// read-only or loading server, cluster redirections) say the script did
/// not run and the backup, in another state, might run it; the others
/// (syntax, `numkeys`, compile errors) the backup refuses alike.
fn script_ran(command: &Command, verdict: &Verdict, error: &[u8]) -> bool {
    if !verdict.is_captured() || !["EVAL", "EVALSHA", "FCALL"].iter().any(|n| command.is(n)) {
        return false;
    }
    let contains = |needle: &[u8]| error.windows(needle.len()).any(|w| w == needle);
    // `SCRIPT KILL` / `FUNCTION KILL` stop only scripts that wrote nothing
    // (one that wrote is unkillable); run again, the backup would loop.
    if contains(b"Script killed by user") {
        return false;
    }
    if frame::raised_in_script(error) {
        return true;
    }
    const REFUSED_BEFORE_RUNNING: &[&[u8]] = &[
        b"NOSCRIPT",
        b"NOAUTH",
        b"NOPERM",
        b"BUSY",
        b"LOADING",
        b"MISCONF",
        b"NOREPLICAS",
        b"READONLY",
        b"MASTERDOWN",
        b"OOM",
        b"MOVED",
        b"ASK",
        b"TRYAGAIN",
        b"CLUSTERDOWN",
        b"CROSSSLOT",
        b"ERR Error compiling script",
        b"ERR Number of keys",
        b"ERR wrong number of arguments",
        b"ERR unknown command",
        b"ERR Function not found",
        b"ERR value is not an integer",
    ];
    let code = error.split(|&b| b == b' ').next().unwrap_or_default();
    !REFUSED_BEFORE_RUNNING.iter().any(|refused| {
        if refused.contains(&b' ') {
            error.starts_with(refused)
        } else {
            code == *refused
        }
    })
}

fn selected_db(command: &Command) -> Option<u32> {
    std::str::from_utf8(command.arg(1)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use remoteback_protocol::Format;

    use super::*;
    use crate::sender::recorder::Recorder;

    fn capture(scripts: &Arc<ScriptCache>) -> (Capture, Recorder) {
        let recorder = Recorder::default();
        let routes = Routes::from_parts(Format::Protocol, "test", vec![Filter::Writes]);
        let senders = Senders::from_parts(vec![Box::new(recorder.clone())]);
        let capture = Capture::new(Arc::new(routes), Arc::new(senders), scripts.clone());
        (capture, recorder)
    }

    /// A command as the request side reads it: with its verdict.
    fn read(c: &Capture, parts: &[&str]) -> (Command, Verdict) {
        let command = Command::from_parts(parts.iter());
        let verdict = c.routes.verdict(&command);
        (command, verdict)
    }

    fn reply(c: &mut Capture, parts: &[&str], reply: &str) {
        let (command, verdict) = read(c, parts);
        c.on_reply(command, &verdict, &Bytes::copy_from_slice(reply.as_bytes()));
    }

    fn silent(c: &mut Capture, parts: &[&str]) {
        let (command, verdict) = read(c, parts);
        c.on_silent(command, &verdict);
    }

    /// The absolute time a record carries, as `rewrite` computed it.
    fn deadline(line: &str) -> i64 {
        line.split(' ').nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn single_commands_are_rewritten_or_kept() {
        let (mut c, rec) = capture(&Arc::new(ScriptCache::new()));
        reply(&mut c, &["SET", "k", "v"], "+OK\r\n");
        reply(&mut c, &["GET", "k"], "$1\r\nv\r\n");
        reply(&mut c, &["SPOP", "s"], "$1\r\nm\r\n");
        reply(&mut c, &["SPOP", "s"], "$-1\r\n");
        reply(&mut c, &["EXPIRE", "nokey", "10"], ":0\r\n");
        let before = now_ms() as i64;
        reply(&mut c, &["EXPIRE", "k", "10"], ":1\r\n");
        let after = now_ms() as i64;
        let records = rec.take();
        assert_eq!(records.len(), 3, "{records:?}");
        assert_eq!(records[0], ["SET k v"]);
        assert_eq!(records[1], ["SREM s m"]);
        assert!(records[2][0].starts_with("PEXPIREAT k "));
        let at = deadline(&records[2][0]);
        assert!((before + 10_000..=after + 10_000).contains(&at));
    }

    #[test]
    fn a_read_group_is_one_atomic_record() {
        let (mut c, rec) = capture(&Arc::new(ScriptCache::new()));
        reply(
            &mut c,
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
            "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n",
        );
        let records = rec.take();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0], "MULTI");
        assert_eq!(r[1], "XREADGROUP GROUP g c COUNT 1 STREAMS s >");
        assert!(r[2].starts_with("XCLAIM s g c 0 1-0 TIME "));
        assert_eq!(r[3], "EXEC");
    }

    #[test]
    fn transactions_rewrite_each_command_with_its_result() {
        let (mut c, rec) = capture(&Arc::new(ScriptCache::new()));
        reply(&mut c, &["MULTI"], "+OK\r\n");
        for cmd in [
            &["SPOP", "s"][..],
            &["EXPIRE", "k", "5"],
            &["BLPOP", "l", "0"],
            &["INCRBYFLOAT", "f", "0.5"],
            &["SET", "x", "1"],
        ] {
            reply(&mut c, cmd, "+QUEUED\r\n");
        }
        reply(
            &mut c,
            &["EXEC"],
            "*5\r\n$1\r\nm\r\n:0\r\n*-1\r\n$3\r\n1.5\r\n+OK\r\n",
        );
        assert_eq!(
            rec.take(),
            vec![vec![
                "MULTI",
                "SREM s m",
                "SET f 1.5 KEEPTTL",
                "SET x 1",
                "EXEC"
            ]]
        );
    }

    #[test]
    fn scripts_are_shared_between_sessions() {
        let scripts = Arc::new(ScriptCache::new());
        let (mut loader, _) = capture(&scripts);
        let (mut runner, rec) = capture(&scripts);
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        reply(&mut runner, &["EVALSHA", sha, "0"], ":1\r\n");
        assert_eq!(scripts.unknown_evalsha(), 1);
        reply(
            &mut loader,
            &["SCRIPT", "LOAD", "return 1"],
            &format!("$40\r\n{sha}\r\n"),
        );
        reply(&mut runner, &["EVALSHA", sha, "0"], ":1\r\n");
        assert_eq!(
            rec.take(),
            vec![
                vec![format!("EVALSHA {sha} 0")],
                vec!["EVAL return 1 0".into()]
            ]
        );
        // A script that failed at run time is cached by Redis all the same.
        scripts.flush();
        reply(
            &mut loader,
            &["EVAL", "return 1", "0"],
            "-ERR user_script:1: boom\r\n",
        );
        reply(&mut runner, &["EVALSHA", sha, "0"], ":1\r\n");
        assert_eq!(rec.take(), vec![vec!["EVAL return 1 0".to_string()]]);
    }

    #[test]
    fn scripts_that_failed_while_running_are_captured() {
        let (mut c, rec) = capture(&Arc::new(ScriptCache::new()));
        let body = "redis.call('set','k','1'); error('boom')";
        // Raised while running: its SET stays on the primary.
        reply(
            &mut c,
            &["EVAL", body, "0"],
            "-ERR user_script:1: boom script: 0123, on @user_script:1.\r\n",
        );
        reply(
            &mut c,
            &["FCALL", "f", "0"],
            "-ERR user_function:2: boom script: f, on @user_function:2.\r\n",
        );
        reply(
            &mut c,
            &["EVAL", "redis.call('set','x','1')", "0"],
            "-OOM command not allowed when used memory > 'maxmemory'. script: 0123, on @user_script:1.\r\n",
        );
        // Returned by the script itself.
        reply(
            &mut c,
            &[
                "EVAL",
                "redis.call('set','k','2'); return redis.error_reply('no')",
                "0",
            ],
            "-no\r\n",
        );
        // Killed (a busy script that wrote nothing): the backup would loop.
        reply(
            &mut c,
            &["FCALL", "busy", "0"],
            "-ERR Script killed by user with SCRIPT KILL... script: busy, on @user_function:2.\r\n",
        );
        // Refused before it ran.
        reply(
            &mut c,
            &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
            "-NOSCRIPT No matching script. Please use EVAL.\r\n",
        );
        reply(
            &mut c,
            &["EVAL", "#!lua\nredis.call('set','x','1')", "0"],
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        );
        reply(
            &mut c,
            &["EVAL", "return 1", "2", "k"],
            "-ERR Number of keys can't be greater than number of args\r\n",
        );
        reply(
            &mut c,
            &["EVAL", "return", "0"],
            "-ERR Error compiling script (new function): user_script:1: bad\r\n",
        );
        // Not a script: refused, nothing happened.
        reply(
            &mut c,
            &["INCR", "k"],
            "-ERR value is not an integer or out of range\r\n",
        );
        // Inside a transaction, the same.
        reply(&mut c, &["MULTI"], "+OK\r\n");
        reply(&mut c, &["EVAL", body, "0"], "+QUEUED\r\n");
        reply(
            &mut c,
            &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
            "+QUEUED\r\n",
        );
        reply(
            &mut c,
            &["EXEC"],
            "*2\r\n-ERR user_script:1: boom script: 0123, on @user_script:1.\r\n-NOSCRIPT No matching script.\r\n",
        );
        assert_eq!(
            rec.take(),
            vec![
                vec![format!("EVAL {body} 0")],
                vec!["FCALL f 0".to_string()],
                vec!["EVAL redis.call('set','x','1') 0".to_string()],
                vec![
                    "EVAL redis.call('set','k','2'); return redis.error_reply('no') 0".to_string()
                ],
                // What is left of the transaction: one command, no MULTI/EXEC.
                vec![format!("EVAL {body} 0")],
            ]
        );
    }

    #[test]
    fn silent_commands_let_the_backup_decide() {
        let (mut c, rec) = capture(&Arc::new(ScriptCache::new()));
        silent(&mut c, &["EXPIRE", "k", "5", "NX"]);
        silent(&mut c, &["SPOP", "s"]);
        let records = rec.take();
        assert_eq!(records.len(), 2);
        assert!(records[0][0].starts_with("PEXPIREAT k ") && records[0][0].ends_with(" NX"));
        assert_eq!(records[1], ["SPOP s"]);
    }

    #[test]
    fn abandoned_writes_count_once_each_and_once_per_transaction() {
        let (mut c, _) = capture(&Arc::new(ScriptCache::new()));
        // A transaction already open, with a queued write, then its EXEC.
        reply(&mut c, &["MULTI"], "+OK\r\n");
        reply(&mut c, &["SET", "a", "1"], "+QUEUED\r\n");
        let unanswered: Vec<(Command, Verdict)> = [
            &["EXEC"][..],
            &["GET", "a"],
            &["SET", "b", "1"],
            &["MULTI"],
            &["GET", "a"],
            &["EXEC"],
            &["MULTI"],
            &["INCR", "n"],
            &["DEL", "n"],
            &["EXEC"],
            &["MULTI"],
            &["SET", "never", "run"],
        ]
        .iter()
        .map(|parts| read(&c, parts))
        .collect();
        c.abandon(
            unanswered
                .iter()
                .map(|(command, verdict)| (command, verdict)),
        );
        // The open transaction's EXEC, SET b, the INCR/DEL transaction; not
        // the GETs, not the read-only transaction, not the one without EXEC.
        assert_eq!(c.senders.uncaptured(), 3);
    }
}
