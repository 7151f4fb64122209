//! One transaction on the backup: the records' commands between `MULTI`
//! and `EXEC`, with the `SELECT`s they need and the offset update that makes
//! them exactly-once, and what the backup answered.

use bytes::BytesMut;
use remoteback_protocol::frame::Frame;
use remoteback_protocol::Command;

use super::decode::Decoded;
use super::Applier;
use crate::backup::{describe, is_unavailable, refused, BackupError};
use crate::error::ApplyError;
use crate::offsets;

/// One transaction as the backup will receive it.
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
        let plan = self.plan(records);
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
                Ok((plan.owners, Exec::Ran(results)))
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
                Ok((plan.owners, Exec::Aborted(reason)))
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

    pub(super) fn plan(&self, records: &[Decoded]) -> Plan {
        let mut bytes = BytesMut::new();
        let mut owners = Vec::new();
        let mut db = self.link.db;
        Command::from_parts(["MULTI"]).write_resp(&mut bytes);
        for record in records {
            if db != Some(record.db) {
                Command::from_parts(["SELECT".as_bytes(), record.db.to_string().as_bytes()])
                    .write_resp(&mut bytes);
                owners.push(None);
                db = Some(record.db);
            }
            for command in &record.commands {
                if command.is("SELECT") {
                    db = command
                        .arg(1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse().ok());
                }
                command.write_resp(&mut bytes);
                owners.push(Some(record.offset));
            }
        }
        if db != Some(0) {
            Command::from_parts(["SELECT", "0"]).write_resp(&mut bytes);
            owners.push(None);
        }
        let next = records.last().map(|r| r.offset + 1).unwrap_or(0);
        offsets::store(self.link.topic(), self.link.partition(), next).write_resp(&mut bytes);
        owners.push(None);
        Command::from_parts(["EXEC"]).write_resp(&mut bytes);
        Plan {
            bytes,
            owners,
            db: 0,
        }
    }
}
