//! Turning answered commands into captured writes.
//!
//! Capture runs on the reply side of a session, after the primary answered,
//! so it sees exactly what took effect: it drops refused commands, follows
//! `SELECT` so every capture knows its database, and holds a transaction's
//! commands until `EXEC` says which of them ran (a `DISCARD`, an
//! `EXECABORT` or a `WATCH`-failed `EXEC` capture nothing).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::Command;

use crate::pending::InFlight;
use crate::sender::{Captured, Senders};

/// The capture state of one client session.
pub struct Capture {
    senders: Arc<Senders>,
    /// The database the client has selected on the primary.
    db: u32,
    /// Commands queued inside `MULTI` that the primary accepted (`+QUEUED`),
    /// with the database the transaction started in.
    transaction: Option<(u32, Vec<Command>)>,
}

impl Capture {
    pub fn new(senders: Arc<Senders>) -> Self {
        Capture {
            senders,
            db: 0,
            transaction: None,
        }
    }

    /// Records the outcome of one command; `reply` is its complete reply.
    pub fn on_reply(&mut self, done: InFlight, reply: &Bytes) {
        let command = done.command;
        if self.transaction.is_some() {
            self.in_transaction(command, reply);
            return;
        }
        if frame::is_error(reply) {
            return;
        }
        if command.is("MULTI") {
            self.transaction = Some((self.db, Vec::new()));
        } else if command.is("SELECT") {
            self.db = selected_db(&command).unwrap_or(self.db);
        } else if command.is("RESET") {
            self.db = 0;
        } else if self.senders.wants(&command, done.spec) {
            self.senders.capture(&Captured {
                db: self.db,
                commands: std::slice::from_ref(&command),
                transaction: false,
                time_ms: now_ms(),
            });
        }
    }

    /// A command sent with `CLIENT REPLY OFF|SKIP` in force: the primary
    /// said nothing, so it is captured as if it succeeded (a refused write
    /// is refused by the backup too, from the same state).
    pub fn on_silent(&mut self, done: InFlight) {
        let ok = Bytes::from_static(b"+OK\r\n");
        self.on_reply(done, &ok);
    }

    fn in_transaction(&mut self, command: Command, reply: &Bytes) {
        if command.is("EXEC") {
            if let Some((db, queued)) = self.transaction.take() {
                self.exec(db, queued, reply);
            }
        } else if command.is("DISCARD") || command.is("RESET") {
            self.transaction = None;
            if command.is("RESET") {
                self.db = 0;
            }
        } else if &reply[..] == b"+QUEUED\r\n" {
            if let Some((_, queued)) = self.transaction.as_mut() {
                queued.push(command);
            }
        }
    }

    /// Captures the commands of an executed transaction that succeeded.
    fn exec(&mut self, start_db: u32, queued: Vec<Command>, reply: &Bytes) {
        // A nil (WATCH failed) or an error (EXECABORT) ran nothing.
        let Ok(Some((Frame::Array(results), _))) = frame::decode(reply) else {
            return;
        };
        let mut kept = Vec::new();
        for (command, result) in queued.into_iter().zip(results.iter()) {
            if result.is_error() {
                continue;
            }
            if command.is("SELECT") {
                self.db = selected_db(&command).unwrap_or(self.db);
                kept.push(command);
            } else if self.senders.wants(
                &command,
                remoteback_protocol::commands::lookup(command.args()),
            ) {
                kept.push(command);
            }
        }
        if kept.iter().any(|c| !c.is("SELECT")) {
            self.senders.capture(&Captured {
                db: start_db,
                commands: &kept,
                transaction: true,
                time_ms: now_ms(),
            });
        }
    }
}

fn selected_db(command: &Command) -> Option<u32> {
    std::str::from_utf8(command.arg(1)?).ok()?.parse().ok()
}

/// Milliseconds since the Unix epoch: when the primary's reply was seen.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
