//! One transaction on the backup: the records' commands between `MULTI`
//! and `EXEC`, with the `SELECT`s they need and the state update that makes
//! them exactly-once, and what the backup answered.
//!
//! The usual transaction is one pipeline: `MULTI`, the commands, one `HSET`
//! of the partition's fields of `__remoteback:state`, `EXEC`. A transaction
//! with a command that could touch the state (`state::is_risky`), or a
//! barrier's, is guarded: `WATCH` of the hash and a read of it come first,
//! and after the commands the hash is written back as read (copies a
//! `SWAPDB`/`MOVE`/`COPY` could leave in other databases deleted) before the
//! partition's own update; a `WATCH` that fired (another partition stored
//! its state meanwhile) makes it start again.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use remoteback_protocol::frame::Frame;
use remoteback_protocol::Command;

use super::decode::Decoded;
use super::Applier;
use crate::backup::{describe, is_unavailable, refused, BackupError};
use crate::error::ApplyError;
use crate::state::{self, Position, STATE_KEY};

/// What a transaction stores besides the records' positions.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// More fields of the state to set (a barrier's done mark).
    pub set: Vec<(String, String)>,
    /// Guard the transaction even if no command is risky.
    pub guard: bool,
}

/// One transaction as the backup will receive it.
/// Overtaken this many times, a guarded transaction says so.
const GUARD_WARN_AFTER: u32 = 100;

pub(super) struct Plan {
    pub bytes: BytesMut,
    /// For each queued command, the offset of the record it came from (`None`
    /// for the `SELECT`s and the offset update remoteback adds).
    pub owners: Vec<Option<i64>>,
    /// The database selected after the transaction.
    pub db: u32,
}

/// What `EXEC` said.
pub(super) enum Exec {
    /// The transaction ran: one result per queued command.
    Ran(Vec<Frame>),
    /// Nothing ran: the backup refused a command while queueing
    /// (`EXECABORT`), for a reason of the command, not of the backup's state.
    Aborted(String),
}

impl Applier {
    /// Sends `records` as one transaction and reads what the backup did.
    pub(super) async fn transaction(
        &mut self,
        records: &[Decoded],
    ) -> Result<(Vec<Option<i64>>, Exec), ApplyError> {
        self.transaction_with(records, &Extra::default()).await
    }

    /// [`transaction`](Self::transaction) storing `extra` too; guarded (and
    /// repeated while the `WATCH` fires) when asked or needed.
    pub(super) async fn transaction_with(
        &mut self,
        records: &[Decoded],
        extra: &Extra,
    ) -> Result<(Vec<Option<i64>>, Exec), ApplyError> {
        let guarded = extra.guard || records.iter().any(|r| r.risky);
        let mut attempts: u32 = 0;
        loop {
            let snapshot = match guarded {
                true => Some(self.snapshot().await?),
                false => None,
            };
            match self.run(records, extra, snapshot.as_deref()).await? {
                Some(done) => return Ok(done),
                None => {
                    // Other partitions commit to the same hash all the
                    // time: step aside a little longer each time (up to
                    // 20 ms, with jitter) so that a window without a
                    // commit comes.
                    attempts += 1;
                    if attempts == GUARD_WARN_AFTER {
                        log::warn!(
                            "partition {}[{}]: a transaction that must write the replay state                              back was overtaken by other partitions' commits {attempts} times;                              still trying",
                            self.link.topic(),
                            self.link.partition()
                        );
                    }
                    let cap = attempts.min(20);
                    let jitter =
                        std::process::id().wrapping_add(attempts.wrapping_mul(7919)) % 1000;
                    tokio::time::sleep(Duration::from_micros(u64::from(cap * 1000 + jitter))).await;
                }
            }
        }
    }

    /// `WATCH`es the state hash and reads it whole (names and values
    /// alternating). Leaves database 0 selected.
    async fn snapshot(&mut self) -> Result<Vec<Bytes>, ApplyError> {
        let closed = self.link.addr();
        let Some(backup) = self.link.backup() else {
            return Err(BackupError::Closed(closed).into());
        };
        let mut bytes = Command::from_parts(["SELECT", "0"]).to_resp().to_vec();
        bytes.extend_from_slice(&Command::from_parts(["WATCH", STATE_KEY]).to_resp());
        bytes.extend_from_slice(&Command::from_parts(["HGETALL", STATE_KEY]).to_resp());
        backup.send(&bytes).await?;
        let selected = backup.reply().await?;
        let watched = backup.reply().await?;
        let all = backup.reply().await?;
        let addr = backup.addr().to_string();
        self.link.db = None;
        for (what, reply) in [
            ("SELECT 0", &selected),
            ("WATCH of the state", &watched),
            ("reading the state", &all),
        ] {
            if reply.is_error() {
                self.link.disconnect();
                return Err(refused(&addr, what, reply).into());
            }
        }
        self.link.db = Some(0);
        let fields = match all {
            Frame::Array(f) | Frame::Map(f) => f,
            Frame::Null => Vec::new(),
            other => {
                self.link.disconnect();
                return Err(BackupError::BadReply {
                    addr,
                    reason: format!("{STATE_KEY} is not a hash: {}", describe(&other)),
                }
                .into());
            }
        };
        Ok(fields
            .into_iter()
            .filter_map(|f| match f {
                Frame::Bulk(b) => Some(b),
                _ => None,
            })
            .collect())
    }

    /// One attempt; `None` when a guarded transaction's `WATCH` fired.
    async fn run(
        &mut self,
        records: &[Decoded],
        extra: &Extra,
        snapshot: Option<&[Bytes]>,
    ) -> Result<Option<(Vec<Option<i64>>, Exec)>, ApplyError> {
        let plan = self.plan_with(records, extra, snapshot);
        let closed = self.link.addr();
        let Some(backup) = self.link.backup() else {
            return Err(BackupError::Closed(closed).into());
        };
        backup.send(&plan.bytes).await?;
        let multi = backup.reply().await?;
        let mut queued = Vec::with_capacity(plan.owners.len());
        for _ in &plan.owners {
            queued.push(backup.reply().await?);
        }
        let exec = backup.reply().await?;
        let addr = backup.addr().to_string();
        if multi.is_error() {
            self.link.db = None;
            if queued.iter().any(|r| !r.is_error()) {
                // The backup's state changed in the middle of the pipeline
                // (it finished loading, a script ended): the commands after
                // MULTI ran one by one. Nothing can tell which did what.
                self.link.disconnect();
                return Err(BackupError::BadReply {
                    addr,
                    reason: format!(
                        "MULTI was refused ({}) but commands after it ran outside a transaction: \
                         records {}..={} may be partly applied; compare the backup with the primary",
                        describe(&multi),
                        records[0].offset,
                        records[records.len() - 1].offset
                    ),
                }
                .into());
            }
            return Err(refused(&addr, "MULTI refused", &multi).into());
        }
        match exec {
            Frame::Array(results) if results.len() == plan.owners.len() => {
                self.link.db = Some(plan.db);
                Ok(Some((plan.owners, Exec::Ran(results))))
            }
            Frame::Null if snapshot.is_some() => {
                self.link.db = None;
                Ok(None)
            }
            Frame::Error(_) => {
                // Nothing ran. The queued SELECTs did not either, but the
                // database is forgotten to be safe.
                self.link.db = None;
                let text = describe(&exec);
                let mut errors = Vec::new();
                for (owner, reply) in plan.owners.iter().zip(&queued) {
                    if reply.is_error() {
                        let e = describe(reply);
                        if is_unavailable(&e) {
                            return Err(BackupError::Unavailable { addr, reason: e }.into());
                        }
                        errors.push(match owner {
                            Some(o) => format!("@{o}: {e}"),
                            None => e,
                        });
                    }
                }
                if is_unavailable(&text) {
                    return Err(BackupError::Unavailable { addr, reason: text }.into());
                }
                let reason = if errors.is_empty() {
                    text
                } else {
                    format!("{text} ({})", errors.join("; "))
                };
                Ok(Some((plan.owners, Exec::Aborted(reason))))
            }
            other => {
                self.link.disconnect();
                Err(BackupError::BadReply {
                    addr,
                    reason: format!(
                        "unexpected EXEC reply for {} queued commands: {}",
                        plan.owners.len(),
                        describe(&other)
                    ),
                }
                .into())
            }
        }
    }

    #[cfg(test)]
    pub(super) fn plan(&self, records: &[Decoded]) -> Plan {
        self.plan_with(records, &Extra::default(), None)
    }

    /// The bytes of one transaction. The usual one (no `snapshot`) is
    /// written by hand into one buffer, no command built per record beyond
    /// the records' own: it is the hot path.
    pub(super) fn plan_with(
        &self,
        records: &[Decoded],
        extra: &Extra,
        snapshot: Option<&[Bytes]>,
    ) -> Plan {
        let mut bytes = BytesMut::new();
        let mut owners = Vec::new();
        let mut db = match snapshot {
            Some(_) => Some(0),
            None => self.link.db,
        };
        let mut strays = Vec::new();
        // The last place of each source in the transaction (a linear
        // search: a batch holds records of one source, or a few).
        let mut seqs: Vec<(&str, Position)> = Vec::new();
        Command::from_parts(["MULTI"]).write_resp(&mut bytes);
        for record in records {
            if let Some((source, at)) = &record.seq {
                match seqs.iter_mut().find(|(s, _)| *s == source.as_str()) {
                    Some(entry) => entry.1 = *at,
                    None => seqs.push((source.as_str(), *at)),
                }
            }
            if record.commands.is_empty() {
                continue;
            }
            if db != Some(record.db) {
                Command::from_parts(["SELECT".as_bytes(), record.db.to_string().as_bytes()])
                    .write_resp(&mut bytes);
                owners.push(None);
                db = Some(record.db);
            }
            for command in &record.commands {
                if snapshot.is_some() && record.risky {
                    state::stray_databases(command, db.unwrap_or(0), &mut strays);
                }
                if command.is("SELECT") {
                    db = command
                        .arg(1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse().ok());
                }
                command.write_resp(&mut bytes);
                // A SELECT is no write: one the backup refuses (fewer
                // databases) would put the commands after it in another
                // database, so it fails the transaction like remoteback's
                // own SELECTs, never counting as a refused write.
                owners.push((!command.is("SELECT")).then_some(record.offset));
            }
        }
        if snapshot.is_some() {
            for stray in &strays {
                Command::from_parts(["SELECT".as_bytes(), stray.to_string().as_bytes()])
                    .write_resp(&mut bytes);
                Command::from_parts(["DEL", STATE_KEY]).write_resp(&mut bytes);
                owners.extend([None, None]);
                db = Some(*stray);
            }
        }
        if db != Some(0) {
            Command::from_parts(["SELECT", "0"]).write_resp(&mut bytes);
            owners.push(None);
        }
        if let Some(fields) = snapshot {
            Command::from_parts(["DEL", STATE_KEY]).write_resp(&mut bytes);
            owners.push(None);
            if fields.len() >= 2 {
                let mut parts = vec![
                    Bytes::from_static(b"HSET"),
                    Bytes::from_static(STATE_KEY.as_bytes()),
                ];
                parts.extend(fields[..fields.len() / 2 * 2].iter().cloned());
                Command::new(parts).write_resp(&mut bytes);
                owners.push(None);
            }
        }
        let next = records.last().map(|r| r.offset + 1).unwrap_or(0);
        let mut store = state::store(self.link.topic(), self.link.partition(), next, &seqs);
        if !extra.set.is_empty() {
            let mut parts = store.into_args();
            for (name, value) in &extra.set {
                parts.push(Bytes::copy_from_slice(name.as_bytes()));
                parts.push(Bytes::copy_from_slice(value.as_bytes()));
            }
            store = Command::new(parts);
        }
        store.write_resp(&mut bytes);
        owners.push(None);
        Command::from_parts(["EXEC"]).write_resp(&mut bytes);
        Plan {
            bytes,
            owners,
            db: 0,
        }
    }
}
