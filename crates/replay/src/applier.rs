//! Applying `STRING` and `PROTOCOL` records to the backup, exactly once.
//!
//! A batch of consecutive records of one partition becomes one
//! `MULTI` ... `EXEC` on the backup, which also stores the partition's next
//! offset (see [`offsets`](crate::offsets)). Redis runs it atomically, so after
//! a crash the stored offset says exactly which records took effect.
//!
//! Inside the batch each record's commands are preceded by a `SELECT` of the
//! record's database when it differs from the current one. A record's own
//! `MULTI`/`EXEC` wrapper is dropped: the batch transaction already makes it
//! atomic, and Redis does not nest transactions.

use std::time::Duration;

use bytes::BytesMut;
use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::frame::Frame;
use remoteback_protocol::{Command, Format};

use crate::backup::{describe, Backup, BackupError};
use crate::offsets;
use crate::receiver::Received;
use crate::settings::BackupSettings;
use crate::stats::Stats;

/// Why applying stopped. Connection problems are retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("record at {topic}[{partition}]@{offset}: {reason}")]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// Applies the records of one partition.
pub struct Applier {
    settings: BackupSettings,
    backup: Option<Backup>,
    topic: String,
    partition: i32,
    /// The database the connection has selected, when known.
    db: Option<u32>,
    stats: Stats,
}

/// One batch as the backup will receive it.
struct Plan {
    bytes: BytesMut,
    /// For each queued command, the offset of the record it came from (`None`
    /// for the `SELECT`s and the offset update remoteback adds).
    owners: Vec<Option<i64>>,
    /// The database selected after the batch.
    db: u32,
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Applier {
    pub fn new(settings: BackupSettings, topic: &str, partition: i32, stats: Stats) -> Self {
        Applier {
            settings,
            backup: None,
            topic: topic.to_string(),
            partition,
            db: None,
            stats,
        }
    }

    /// A connection to the backup, retrying with capped exponential backoff.
    pub async fn connection(&mut self) -> &mut Backup {
        let mut delay = Duration::from_millis(100);
        while self.backup.is_none() {
            match Backup::connect(&self.settings).await {
                Ok(b) => {
                    self.backup = Some(b);
                    self.db = None;
                }
                Err(e) => {
                    log::warn!("{e}; retrying in {delay:?}");
                    self.stats.add_reconnect();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        match self.backup.as_mut() {
            Some(b) => b,
            None => unreachable!("connected above"),
        }
    }

    /// The offset to start from, as stored in the backup.
    pub async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        loop {
            let (topic, partition) = (self.topic.clone(), self.partition);
            let backup = self.connection().await;
            match offsets::read(backup, &topic, partition).await {
                Ok(o) => {
                    self.db = Some(0);
                    return Ok(o);
                }
                Err(e) if e.is_connection() => self.backup = None,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Applies `batch` (consecutive records of this partition) exactly once:
    /// after a lost connection it re-reads the stored offset and applies only
    /// what did not take effect.
    pub async fn apply(&mut self, mut batch: Vec<Received>) -> Result<(), ApplyError> {
        loop {
            match self.apply_once(&batch).await {
                Ok(()) => return Ok(()),
                Err(ApplyError::Backup(e)) if e.is_connection() => {
                    log::warn!("{e}; reconnecting to apply {} records again", batch.len());
                    self.backup = None;
                    if let Some(next) = self.stored_offset().await? {
                        batch.retain(|r| r.offset >= next);
                    }
                    if batch.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn apply_once(&mut self, batch: &[Received]) -> Result<(), ApplyError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let plan = self.plan(batch)?;
        let backup = self.connection().await;
        backup.send(&plan.bytes).await?;
        let multi = backup.reply().await?;
        let mut queue_errors = Vec::new();
        for owner in &plan.owners {
            let r = backup.reply().await?;
            if r.is_error() {
                queue_errors.push((*owner, describe(&r)));
            }
        }
        let exec = backup.reply().await?;
        if multi.is_error() {
            return Err(BackupError::BadReply {
                addr: backup.addr().to_string(),
                reason: format!("MULTI refused: {}", describe(&multi)),
            }
            .into());
        }
        match exec {
            Frame::Array(results) => {
                self.db = Some(plan.db);
                self.report_refusals(&plan.owners, &results);
                self.stats.add_applied(batch.len() as u64, last.time_ms());
                Ok(())
            }
            other => {
                // Nothing ran; the connection's database did not change.
                self.db = None;
                if batch.len() > 1 {
                    for r in batch {
                        Box::pin(self.apply_once(std::slice::from_ref(r))).await?;
                    }
                    return Ok(());
                }
                self.skip_refused(last, &describe(&other), &queue_errors)
                    .await
            }
        }
    }

    /// The backup refused a whole record (e.g. a command it does not know):
    /// report it and move the stored offset past it.
    async fn skip_refused(
        &mut self,
        record: &Received,
        exec: &str,
        errors: &[(Option<i64>, String)],
    ) -> Result<(), ApplyError> {
        let reasons: Vec<&str> = errors.iter().map(|(_, e)| e.as_str()).collect();
        log::error!(
            "backup refused the record at {}[{}]@{}: {exec}: {}; skipped",
            self.topic,
            self.partition,
            record.offset,
            reasons.join("; ")
        );
        self.stats.add_refused(1);
        let store = offsets::store(&self.topic, self.partition, record.offset + 1);
        let backup = self.connection().await;
        backup
            .send(&Command::from_parts(["SELECT", "0"]).to_resp())
            .await?;
        backup.reply().await?;
        backup.call(&store).await?;
        self.db = Some(0);
        Ok(())
    }

    fn report_refusals(&self, owners: &[Option<i64>], results: &[Frame]) {
        for (owner, result) in owners.iter().zip(results) {
            if let (Some(offset), Frame::Error(e)) = (owner, result) {
                self.stats.add_refused(1);
                log::error!(
                    "backup refused a command of the record at {}[{}]@{offset}: {}",
                    self.topic,
                    self.partition,
                    String::from_utf8_lossy(e)
                );
            }
        }
    }

    fn plan(&self, batch: &[Received]) -> Result<Plan, ApplyError> {
        let mut bytes = BytesMut::new();
        let mut owners = Vec::new();
        let mut db = self.db;
        Command::from_parts(["MULTI"]).write_resp(&mut bytes);
        for record in batch {
            let want = record.meta.db.unwrap_or(0);
            if db != Some(want) {
                Command::from_parts(["SELECT".as_bytes(), want.to_string().as_bytes()])
                    .write_resp(&mut bytes);
                owners.push(None);
                db = Some(want);
            }
            for command in self.decode(record)? {
                if command.is("MULTI") || command.is("EXEC") {
                    continue;
                }
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
        let next = batch.last().map(|r| r.offset + 1).unwrap_or(0);
        offsets::store(&self.topic, self.partition, next).write_resp(&mut bytes);
        owners.push(None);
        Command::from_parts(["EXEC"]).write_resp(&mut bytes);
        Ok(Plan {
            bytes,
            owners,
            db: 0,
        })
    }

    fn decode(&self, record: &Received) -> Result<Vec<Command>, ApplyError> {
        let bad = |reason: String| ApplyError::BadRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: record.offset,
            reason,
        };
        match record.meta.format {
            Format::Protocol => protocol::decode(&record.payload).map_err(|e| bad(e.to_string())),
            Format::String => string::decode(&record.payload).map_err(|e| bad(e.to_string())),
            Format::Row => Err(bad(
                "ROW records are applied per connection, not in batches".into(),
            )),
        }
    }
}
