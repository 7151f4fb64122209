//! Applying `STRING` and `PROTOCOL` records to the backup, exactly once.
//!
//! Records become `MULTI` ... `EXEC` transactions on the backup that also
//! store the partition's next offset (see [`offsets`](crate::offsets)). Redis
//! runs each atomically, so after any crash the stored offset says exactly
//! which records took effect.
//!
//! With `on_apply_error = "continue"` a whole batch of consecutive records is
//! one transaction. With `"stop"` every record is a transaction of its own:
//! Redis has no rollback, so this is the only way to stop before anything
//! after a refused record took effect.
//!
//! Inside a transaction each record's commands are preceded by a `SELECT` of
//! the record's database when it differs from the current one. A record's
//! own `MULTI`/`EXEC` wrapper is dropped: the transaction already makes it
//! atomic, and Redis does not nest transactions.
//!
//! The backup being unreachable, restarting or refusing writes for its own
//! reasons (`LOADING`, `OOM`, `READONLY`, ...) is never an error: the applier
//! waits with backoff ([`retry`](crate::retry)), reconnects, reads the stored
//! offset again and applies only what did not take effect.

use bytes::BytesMut;
use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::frame::Frame;
use remoteback_protocol::{Command, Format};
use tokio::sync::watch;

use crate::backup::{describe, is_unavailable, refused, Backup, BackupError};
use crate::offsets;
use crate::receiver::Received;
use crate::retry::Backoff;
use crate::settings::{BackupSettings, OnApplyError};
use crate::stats::Stats;

/// Why applying stopped. Connection problems and an unavailable backup are
/// retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record cannot be read (undecodable payload, missing header). The
    /// records before it were applied and their offset stored.
    #[error("record at {topic}[{partition}]@{offset}: {reason}; stopping (the records before it were applied, a restart resumes at it)")]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The backup refused a record and `on_apply_error = "stop"`.
    #[error("backup refused the record at {topic}[{partition}]@{offset}: {reason}; stopping (on_apply_error = \"stop\"); {resume}")]
    Refused {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
        /// Where a restart resumes, in words.
        resume: String,
    },
    /// The backup's stored offset went back (it restarted from an older
    /// snapshot) or vanished (it lost its data): the partition must be read
    /// again from `to` (`None`: from its beginning). Handled by the caller.
    #[error("backup {addr} holds offset {} for {topic}[{partition}], but offset {from} had been stored: it lost writes (restarted from an older snapshot?)", to.map(|o| o.to_string()).unwrap_or_else(|| "none".into()))]
    Rewind {
        addr: String,
        topic: String,
        partition: i32,
        from: i64,
        to: Option<i64>,
    },
    /// A shutdown was requested while waiting for the backup.
    #[error("stopped while waiting for the backup")]
    Stopped,
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// How an [`Applier`] reacts to refusals and to a backup that lost data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `on_apply_error`.
    pub on_error: OnApplyError,
    /// When the backup comes back without any stored offset after one had
    /// been stored (it was emptied), read the partition again from its
    /// beginning (`start = "earliest"`) rather than go on with the records
    /// at hand (`start = "latest"`).
    pub rewind_when_emptied: bool,
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
    policy: Policy,
    backoff: Backoff,
    /// The offset last read from or written to the backup's offset key.
    position: Option<i64>,
    /// Whether a connection was ever established: an authentication failure
    /// before that is a configuration mistake, after it a backup in flux.
    connected_once: bool,
}

/// A record ready to be queued.
#[derive(Debug)]
struct Decoded {
    offset: i64,
    db: u32,
    time_ms: Option<u64>,
    /// Its commands, without a `MULTI`/`EXEC` wrapper.
    commands: Vec<Command>,
}

impl Decoded {
    /// Commands that change data (all but `SELECT`).
    fn writes(&self) -> usize {
        self.commands.iter().filter(|c| !c.is("SELECT")).count()
    }
}

/// One transaction as the backup will receive it.
struct Plan {
    bytes: BytesMut,
    /// For each queued command, the offset of the record it came from (`None`
    /// for the `SELECT`s and the offset update remoteback adds).
    owners: Vec<Option<i64>>,
    /// The database selected after the transaction.
    db: u32,
}

/// What `EXEC` said.
enum Exec {
    /// The transaction ran: one result per queued command.
    Ran(Vec<Frame>),
    /// Nothing ran: the backup refused a command while queueing
    /// (`EXECABORT`), for a reason of the command, not of the backup's state.
    Aborted(String),
}

/// A command of a record that the backup refused inside `EXEC`.
struct Refusal {
    offset: i64,
    reason: String,
}

impl Applier {
    pub fn new(
        settings: BackupSettings,
        topic: &str,
        partition: i32,
        stats: Stats,
        policy: Policy,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Applier {
            settings,
            backup: None,
            topic: topic.to_string(),
            partition,
            db: None,
            backoff: Backoff::new(stop, stats.clone()),
            stats,
            policy,
            position: None,
            connected_once: false,
        }
    }

    /// The offset to start from, as stored in the backup. Waits for the
    /// backup as long as it takes.
    pub async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        self.backup = None;
        let stored = self.connect().await?;
        self.position = stored;
        Ok(stored)
    }

    /// Stores `next` as the partition's position (outside any transaction),
    /// waiting for the backup as long as it takes.
    pub async fn store_offset(&mut self, next: i64) -> Result<(), ApplyError> {
        loop {
            if self.backup.is_none() {
                let stored = self.connect().await?;
                self.check_lost(stored, next)?;
            }
            let Some(backup) = self.backup.as_mut() else {
                continue;
            };
            match offsets::write(backup, &self.topic, self.partition, next).await {
                Ok(()) => {
                    self.db = Some(0);
                    self.position = Some(next);
                    self.backoff.reset();
                    return Ok(());
                }
                Err(e) if e.is_retryable() => self.pause(&e, "storing the offset").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the backup answers `PING` on the control connection right
    /// now. Does not wait or reconnect; a failure drops the connection.
    pub async fn backup_answers(&mut self) -> bool {
        let Some(backup) = self.backup.as_mut() else {
            return false;
        };
        match backup.call(&Command::from_parts(["PING"])).await {
            Ok(reply) if !reply.is_error() => true,
            _ => {
                self.backup = None;
                false
            }
        }
    }

    /// Opens the control connection if needed, waiting for the backup as
    /// long as it takes.
    pub async fn ensure_connected(&mut self) -> Result<(), ApplyError> {
        if self.backup.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    /// Stores `next` on the control connection as it is, without
    /// reconnecting: `Err` (retryable) when the connection is gone, so the
    /// caller knows the backup went away since it was opened.
    pub async fn store_offset_here(&mut self, next: i64) -> Result<(), ApplyError> {
        let Some(backup) = self.backup.as_mut() else {
            return Err(BackupError::Closed(format!(
                "{}:{}",
                self.settings.host, self.settings.port
            ))
            .into());
        };
        match offsets::write(backup, &self.topic, self.partition, next).await {
            Ok(()) => {
                self.db = Some(0);
                self.position = Some(next);
                self.backoff.reset();
                Ok(())
            }
            Err(e) => {
                if e.is_retryable() {
                    self.backup = None;
                }
                Err(e.into())
            }
        }
    }

    /// Logs `error`, drops the connection and waits before the next attempt.
    pub async fn pause(&mut self, error: &BackupError, doing: &str) -> Result<(), ApplyError> {
        log::warn!(
            "partition {}[{}]: {doing}: {error}; retrying in {:?}",
            self.topic,
            self.partition,
            self.backoff.delay()
        );
        self.backup = None;
        self.db = None;
        self.backoff.pause().await.map_err(|_| ApplyError::Stopped)
    }

    /// Counts records that took effect (for `ROW`, which applies by itself).
    pub fn count_applied(&self, n: usize, primary_ms: Option<u64>) {
        self.stats.add_applied(n as u64, primary_ms);
    }

    /// Connects and reads the stored offset, retrying with backoff until
    /// the backup answers both.
    async fn connect(&mut self) -> Result<Option<i64>, ApplyError> {
        loop {
            match self.attempt().await {
                Ok((backup, stored)) => {
                    if self.connected_once {
                        log::info!(
                            "partition {}[{}]: connected to the backup {} again; it stores offset {}",
                            self.topic,
                            self.partition,
                            backup.addr(),
                            stored
                                .map(|o| o.to_string())
                                .unwrap_or_else(|| "none".into())
                        );
                    }
                    self.backup = Some(backup);
                    self.db = Some(0);
                    self.connected_once = true;
                    self.backoff.answered();
                    return Ok(stored);
                }
                Err(e @ BackupError::Auth { .. }) if !self.connected_once => return Err(e.into()),
                Err(e) if e.is_retryable() || matches!(e, BackupError::Auth { .. }) => {
                    self.pause(&e, "connecting").await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One connection attempt: connect, authenticate, read the offset.
    async fn attempt(&self) -> Result<(Backup, Option<i64>), BackupError> {
        let mut backup = Backup::connect(&self.settings).await?;
        let stored = offsets::read(&mut backup, &self.topic, self.partition).await?;
        Ok((backup, stored))
    }

    /// Applies `batch` (consecutive records of this partition) exactly once:
    /// after a lost connection it reads the stored offset again and applies
    /// only what did not take effect.
    ///
    /// A record that cannot be decoded ends the batch: the records before it
    /// are applied, then [`ApplyError::BadRecord`] is returned.
    pub async fn apply(&mut self, batch: Vec<Received>) -> Result<(), ApplyError> {
        let (mut pending, bad) = self.decode_all(batch);
        while !pending.is_empty() {
            if self.backup.is_none() {
                let stored = self.connect().await?;
                self.resume(&mut pending, stored)?;
                continue;
            }
            let result = match self.policy.on_error {
                OnApplyError::Continue => self.apply_batch(&pending).await,
                OnApplyError::Stop => self.apply_each(&pending).await,
            };
            match result {
                Ok(()) => {
                    pending.clear();
                    self.backoff.reset();
                }
                Err(ApplyError::Backup(e)) if e.is_retryable() => {
                    let doing = format!(
                        "applying records {}..={}",
                        pending[0].offset,
                        pending[pending.len() - 1].offset
                    );
                    self.pause(&e, &doing).await?;
                }
                Err(e) => return Err(e),
            }
        }
        match bad {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After reconnecting: drops the pending records the backup already
    /// has, or asks for a rewind when it lost some.
    fn resume(
        &mut self,
        pending: &mut Vec<Decoded>,
        stored: Option<i64>,
    ) -> Result<(), ApplyError> {
        let first = pending.first().map(|r| r.offset).unwrap_or_default();
        self.check_lost(stored, first)?;
        if let Some(next) = stored {
            let before = pending.len();
            pending.retain(|r| r.offset >= next);
            if pending.len() < before {
                log::info!(
                    "partition {}[{}]: {} records had taken effect before the connection was lost",
                    self.topic,
                    self.partition,
                    before - pending.len()
                );
            }
            self.position = Some(next);
        }
        Ok(())
    }

    /// After reconnecting: `Err(Rewind)` when the backup holds an offset
    /// before the one last stored (it lost acknowledged writes) or none at
    /// all while one was stored and `start = "earliest"`. `next` is where
    /// the replay goes on otherwise, for the log.
    fn check_lost(&mut self, stored: Option<i64>, next: i64) -> Result<(), ApplyError> {
        let addr = format!("{}:{}", self.settings.host, self.settings.port);
        match (stored, self.position) {
            (Some(s), Some(p)) if s < p => {
                self.position = stored;
                Err(ApplyError::Rewind {
                    addr,
                    topic: self.topic.clone(),
                    partition: self.partition,
                    from: p,
                    to: Some(s),
                })
            }
            (None, Some(p)) => {
                self.position = None;
                if self.policy.rewind_when_emptied {
                    return Err(ApplyError::Rewind {
                        addr,
                        topic: self.topic.clone(),
                        partition: self.partition,
                        from: p,
                        to: None,
                    });
                }
                log::warn!(
                    "partition {}[{}]: backup {addr} holds no offset any more (it lost its data?); \
                     start = \"latest\": going on from offset {next}",
                    self.topic,
                    self.partition,
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The whole batch as one transaction; when the backup aborts it, record
    /// by record.
    async fn apply_batch(&mut self, records: &[Decoded]) -> Result<(), ApplyError> {
        match self.transaction(records).await? {
            (owners, Exec::Ran(results)) => {
                let refusals = self.ran(records, &owners, &results)?;
                for r in &refusals {
                    self.log_refusal(r);
                }
                Ok(())
            }
            (_, Exec::Aborted(reason)) if records.len() == 1 => {
                self.aborted(&records[0], &reason).await
            }
            (_, Exec::Aborted(reason)) => {
                log::warn!(
                    "partition {}[{}]: backup aborted the transaction of records {}..={} ({reason}); \
                     applying them one at a time",
                    self.topic,
                    self.partition,
                    records[0].offset,
                    records[records.len() - 1].offset
                );
                self.apply_each(records).await
            }
        }
    }

    /// Each record as a transaction of its own.
    async fn apply_each(&mut self, records: &[Decoded]) -> Result<(), ApplyError> {
        for record in records {
            // After a reconnect the backup may already have some of them.
            if self.position.is_some_and(|p| record.offset < p) {
                continue;
            }
            self.apply_one(record).await?;
        }
        Ok(())
    }

    async fn apply_one(&mut self, record: &Decoded) -> Result<(), ApplyError> {
        let records = std::slice::from_ref(record);
        let (owners, exec) = self.transaction(records).await?;
        let results = match exec {
            Exec::Ran(results) => results,
            Exec::Aborted(reason) => return self.aborted(record, &reason).await,
        };
        let refusals = self.ran(records, &owners, &results)?;
        if refusals.is_empty() {
            return Ok(());
        }
        for r in &refusals {
            self.log_refusal(r);
        }
        if self.policy.on_error == OnApplyError::Continue {
            return Ok(());
        }
        let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
        let reason = reasons.join("; ");
        let refused_writes = refusals.len();
        if refused_writes < record.writes() {
            // Part of the record took effect; applying it again would apply
            // that part twice, so the stored offset stays past it.
            return Err(self.refused_error(
                record,
                reason,
                format!(
                    "{} of its {} commands took effect and were not undone (Redis has no rollback), \
                     the refused ones were not applied; the stored offset is {} (after the record), \
                     so a restart goes on after it",
                    record.writes() - refused_writes,
                    record.writes(),
                    record.offset + 1
                ),
            ));
        }
        // Nothing of the record took effect: move the stored offset back to
        // it, so a restart after fixing the backup applies it.
        self.position = Some(record.offset);
        match self.store_offset(record.offset).await {
            Ok(()) => Err(self.refused_error(
                record,
                reason,
                format!(
                    "nothing of it took effect; the stored offset is {}, so a restart resumes at it",
                    record.offset
                ),
            )),
            Err(e) => Err(self.refused_error(
                record,
                reason,
                format!(
                    "nothing of it took effect, but the stored offset could not be moved back to it \
                     ({e}): it says {}; set {} to {} in database 0 of the backup to apply the \
                     record after fixing the backup",
                    record.offset + 1,
                    offsets::key(&self.topic, self.partition),
                    record.offset
                ),
            )),
        }
    }

    /// The backup refused a whole record while queueing it (`EXECABORT`),
    /// so nothing of it ran: skip it (`continue`) or stop at it (`stop`).
    async fn aborted(&mut self, record: &Decoded, reason: &str) -> Result<(), ApplyError> {
        self.stats.add_refused(1);
        match self.policy.on_error {
            OnApplyError::Continue => {
                log::error!(
                    "backup refused the record at {}[{}]@{}: {reason}; skipped (on_apply_error = \"continue\")",
                    self.topic,
                    self.partition,
                    record.offset
                );
                self.store_offset(record.offset + 1).await
            }
            OnApplyError::Stop => {
                let stored = match self.position {
                    Some(p) => format!("the stored offset is {p}"),
                    None => "no offset is stored yet".to_string(),
                };
                Err(self.refused_error(
                    record,
                    reason.to_string(),
                    format!("nothing of it took effect; {stored}, so a restart resumes at it"),
                ))
            }
        }
    }

    fn refused_error(&self, record: &Decoded, reason: String, resume: String) -> ApplyError {
        ApplyError::Refused {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: record.offset,
            reason,
            resume,
        }
    }

    /// Bookkeeping after `EXEC` ran `records`: the new position, counters,
    /// and the commands the backup refused.
    fn ran(
        &mut self,
        records: &[Decoded],
        owners: &[Option<i64>],
        results: &[Frame],
    ) -> Result<Vec<Refusal>, ApplyError> {
        let last = &records[records.len() - 1];
        let mut refusals = Vec::new();
        for (owner, result) in owners.iter().zip(results) {
            let Frame::Error(e) = result else { continue };
            match owner {
                Some(offset) => refusals.push(Refusal {
                    offset: *offset,
                    reason: String::from_utf8_lossy(e).into_owned(),
                }),
                // A SELECT or the offset update of remoteback's own failed:
                // the position no longer matches the data.
                None => {
                    self.backup = None;
                    return Err(BackupError::BadReply {
                        addr: format!("{}:{}", self.settings.host, self.settings.port),
                        reason: format!(
                            "a SELECT or the offset update remoteback added to the transaction of \
                             records {}..={} failed: {}; the records took effect but the stored \
                             offset may not say so (check the backup: `databases` as many as the \
                             primary's, {} a string)",
                            records[0].offset,
                            last.offset,
                            String::from_utf8_lossy(e),
                            offsets::key(&self.topic, self.partition)
                        ),
                    }
                    .into());
                }
            }
        }
        self.position = Some(last.offset + 1);
        self.stats.add_refused(refusals.len() as u64);
        let refused_records = {
            let mut offsets: Vec<i64> = refusals.iter().map(|r| r.offset).collect();
            offsets.dedup();
            offsets
        };
        let fully_refused = records
            .iter()
            .filter(|r| {
                refused_records.contains(&r.offset)
                    && refusals.iter().filter(|x| x.offset == r.offset).count() >= r.writes()
            })
            .count();
        self.stats.add_applied(
            (records.len() - fully_refused) as u64,
            records.iter().rev().find_map(|r| r.time_ms),
        );
        Ok(refusals)
    }

    fn log_refusal(&self, refusal: &Refusal) {
        log::error!(
            "backup refused a command of the record at {}[{}]@{}: {}",
            self.topic,
            self.partition,
            refusal.offset,
            refusal.reason
        );
    }

    /// Sends `records` as one transaction and reads what the backup did.
    async fn transaction(
        &mut self,
        records: &[Decoded],
    ) -> Result<(Vec<Option<i64>>, Exec), ApplyError> {
        let plan = self.plan(records);
        let Some(backup) = self.backup.as_mut() else {
            return Err(BackupError::Closed(format!(
                "{}:{}",
                self.settings.host, self.settings.port
            ))
            .into());
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
            self.db = None;
            if queued.iter().any(|r| !r.is_error()) {
                // The backup's state changed in the middle of the pipeline
                // (it finished loading, a script ended): the commands after
                // MULTI ran one by one. Nothing can tell which did what.
                self.backup = None;
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
                self.db = Some(plan.db);
                Ok((plan.owners, Exec::Ran(results)))
            }
            Frame::Error(_) => {
                // Nothing ran. The queued SELECTs did not either, but the
                // database is forgotten to be safe.
                self.db = None;
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
                self.backup = None;
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

    fn plan(&self, records: &[Decoded]) -> Plan {
        let mut bytes = BytesMut::new();
        let mut owners = Vec::new();
        let mut db = self.db;
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
        offsets::store(&self.topic, self.partition, next).write_resp(&mut bytes);
        owners.push(None);
        Command::from_parts(["EXEC"]).write_resp(&mut bytes);
        Plan {
            bytes,
            owners,
            db: 0,
        }
    }

    /// Decodes records up to the first that cannot be, which comes back as
    /// the error.
    fn decode_all(&self, batch: Vec<Received>) -> (Vec<Decoded>, Option<ApplyError>) {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            match self.decode(&record) {
                Ok(d) => out.push(d),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn decode(&self, record: &Received) -> Result<Decoded, ApplyError> {
        let bad = |reason: String| ApplyError::BadRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: record.offset,
            reason,
        };
        let commands = match record.meta.format {
            Format::Protocol => {
                protocol::decode(&record.payload).map_err(|e| bad(format!("payload: {e}")))?
            }
            Format::String => {
                string::decode(&record.payload).map_err(|e| bad(format!("payload: {e}")))?
            }
            Format::Row => {
                return Err(bad(
                    "ROW records are applied per connection, not in transactions".into(),
                ))
            }
        };
        if commands.is_empty() {
            return Err(bad("payload holds no command".into()));
        }
        let db = record.meta.db.ok_or_else(|| {
            bad(format!(
                "header {} is missing (every {} record names its database)",
                remoteback_protocol::record::HEADER_DB,
                record.meta.format
            ))
        })?;
        Ok(Decoded {
            offset: record.offset,
            db,
            time_ms: record.time_ms(),
            commands: commands
                .into_iter()
                .filter(|c| !c.is("MULTI") && !c.is("EXEC"))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use remoteback_protocol::record::Meta;

    use super::*;

    fn applier(on_error: OnApplyError) -> Applier {
        let (_tx, rx) = watch::channel(false);
        Applier::new(
            BackupSettings {
                host: "127.0.0.1".into(),
                port: 1,
                username: None,
                password: None,
            },
            "t",
            3,
            Stats::default(),
            Policy {
                on_error,
                rewind_when_emptied: true,
            },
            rx,
        )
    }

    fn received(offset: i64, db: Option<u32>, payload: &'static [u8]) -> Received {
        Received {
            offset,
            meta: Meta {
                format: Format::Protocol,
                db,
                source: None,
                seq: None,
                time_ms: None,
                conn: None,
                close: false,
            },
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn decoding_stops_at_the_first_bad_record() {
        let a = applier(OnApplyError::Continue);
        let batch = vec![
            received(5, Some(0), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
            received(
                6,
                Some(1),
                b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*1\r\n$4\r\nEXEC\r\n",
            ),
            received(7, Some(0), b"*2\r\n$4\r\nINCR"),
            received(8, Some(0), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
        ];
        let (good, bad) = a.decode_all(batch);
        assert_eq!(good.iter().map(|d| d.offset).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(good[1].commands.len(), 1, "MULTI/EXEC dropped");
        let e = bad.expect("bad record").to_string();
        assert!(e.starts_with("record at t[3]@7: payload: "), "{e}");
    }

    #[test]
    fn a_record_without_its_database_is_bad() {
        let a = applier(OnApplyError::Continue);
        let (good, bad) = a.decode_all(vec![received(9, None, b"*1\r\n$4\r\nPING\r\n")]);
        assert!(good.is_empty());
        let e = bad.expect("bad record").to_string();
        assert!(e.contains("t[3]@9: header rb-db is missing"), "{e}");
    }

    #[test]
    fn a_plan_selects_databases_and_stores_the_next_offset() {
        let a = applier(OnApplyError::Continue);
        let (records, _) = a.decode_all(vec![
            received(5, Some(2), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
            received(6, Some(2), b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"),
        ]);
        let plan = a.plan(&records);
        let text = String::from_utf8_lossy(&plan.bytes).replace("\r\n", " ");
        assert_eq!(
            text,
            "*1 $5 MULTI *2 $6 SELECT $1 2 *2 $4 INCR $1 k *2 $4 INCR $1 k *2 $6 SELECT $1 0 \
             *3 $3 SET $23 __remoteback:offset:t:3 $1 7 *1 $4 EXEC "
        );
        assert_eq!(plan.owners, [None, Some(5), Some(6), None, None]);
    }

    #[test]
    fn resume_drops_what_took_effect_and_rewinds_on_loss() {
        let mut a = applier(OnApplyError::Continue);
        let (mut pending, _) = a.decode_all(vec![
            received(10, Some(0), b"*1\r\n$4\r\nPING\r\n"),
            received(11, Some(0), b"*1\r\n$4\r\nPING\r\n"),
        ]);
        a.position = Some(10);
        a.resume(&mut pending, Some(11)).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(a.position, Some(11));
        match a.resume(&mut pending, Some(4)) {
            Err(ApplyError::Rewind { from, to, .. }) => assert_eq!((from, to), (11, Some(4))),
            other => panic!("{other:?}"),
        }
        a.position = Some(11);
        match a.resume(&mut pending, None) {
            Err(ApplyError::Rewind { to: None, .. }) => {}
            other => panic!("{other:?}"),
        }
        a.policy.rewind_when_emptied = false;
        a.position = Some(11);
        a.resume(&mut pending, None).unwrap();
        assert_eq!(pending.len(), 1, "latest: goes on with what it has");
    }
}
