//! One partition's connection to the backup, and the position stored there.
//!
//! Both appliers keep one: it (re)connects with backoff, reads the
//! partition's stored offset on every new connection, and notices when the
//! backup lost offsets it had stored (it restarted from an older snapshot,
//! or was emptied). The batched applier sends its transactions on it; the
//! `ROW` applier stores offsets and checks the backup with it.

use std::collections::HashMap;

use remoteback_protocol::frame::Frame;
use remoteback_protocol::Command;
use tokio::sync::watch;

use crate::backup::{describe, Backup, BackupError};
use crate::error::ApplyError;
use crate::retry::Backoff;
use crate::settings::BackupSettings;
use crate::state::{self, Position};
use crate::stats::Stats;

/// A partition's connection to the backup.
pub struct BackupLink {
    settings: BackupSettings,
    backup: Option<Backup>,
    topic: String,
    partition: i32,
    /// The database the connection has selected, when known.
    pub(crate) db: Option<u32>,
    backoff: Backoff,
    /// The offset last read from or written to the backup's state.
    pub(crate) position: Option<i64>,
    /// The last record applied per source, as the backup's state says
    /// (read on each connection, kept up to date by the applier).
    pub(crate) seqs: HashMap<String, Position>,
    /// The backup's `CLIENT ID` of the connection last opened: killed from
    /// the next one before it reads the state (the fence).
    client_id: Option<i64>,
    /// `CLIENT KILL` was refused once (said in the log once).
    fence_refused: bool,
    /// Whether a connection was ever established: an authentication failure
    /// before that is a configuration mistake, after it a backup in flux.
    connected_once: bool,
    /// When the backup comes back without any stored offset after one had
    /// been stored (it was emptied): read the partition again from its
    /// beginning (`start = "earliest"`) rather than go on (`"latest"`).
    rewind_when_emptied: bool,
}

impl BackupLink {
    /// `stop` turns `true` when the replay shuts down; waiting for the
    /// backup ends then.
    pub fn new(
        settings: BackupSettings,
        topic: &str,
        partition: i32,
        stats: Stats,
        rewind_when_emptied: bool,
        stop: watch::Receiver<bool>,
    ) -> Self {
        BackupLink {
            settings,
            backup: None,
            topic: topic.to_string(),
            partition,
            db: None,
            backoff: Backoff::new(stop, stats),
            position: None,
            seqs: HashMap::new(),
            client_id: None,
            fence_refused: false,
            connected_once: false,
            rewind_when_emptied,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// `HOST:PORT` of the backup, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// The backup's settings (for the `ROW` applier's own connections).
    pub fn settings(&self) -> &BackupSettings {
        &self.settings
    }

    /// The open connection, if any.
    pub fn backup(&mut self) -> Option<&mut Backup> {
        self.backup.as_mut()
    }

    /// Takes the connection away as if it had been lost while still open.
    #[cfg(test)]
    pub(crate) fn take_connection(&mut self) -> Option<Backup> {
        self.backup.take()
    }

    /// Forgets the connection: the next use opens a new one.
    pub fn disconnect(&mut self) {
        self.backup = None;
    }

    /// Progress was made: the next failure waits the shortest pause again.
    pub fn progressed(&mut self) {
        self.backoff.reset();
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
        self.store_position(next, None).await
    }

    /// Stores `next` as the partition's position and, with `seq`, that
    /// source's last record applied as given (`None`: none), in one
    /// transaction: moves both back before a record of which nothing took
    /// effect. Waits for the backup as long as it takes.
    pub async fn store_position(
        &mut self,
        next: i64,
        seq: Option<(&str, Option<Position>)>,
    ) -> Result<(), ApplyError> {
        loop {
            if self.backup.is_none() {
                let stored = self.connect().await?;
                self.check_lost(stored, next)?;
            }
            let Some(backup) = self.backup.as_mut() else {
                continue;
            };
            let written = match seq {
                None => state::write(backup, &self.topic, self.partition, next).await,
                Some(_) => {
                    state::write_position(backup, &self.topic, self.partition, next, seq).await
                }
            };
            match written {
                Ok(()) => {
                    if let Some((source, at)) = seq {
                        match at {
                            Some(at) => {
                                self.seqs.insert(source.to_string(), at);
                            }
                            None => {
                                self.seqs.remove(source);
                            }
                        }
                    }
                    self.stored(next);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => self.pause(&e, "storing the offset").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the backup answers `PING` on this connection right now. Does
    /// not wait or reconnect; a failure drops the connection.
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

    /// Opens the connection if needed, waiting for the backup as long as it
    /// takes.
    pub async fn ensure_connected(&mut self) -> Result<(), ApplyError> {
        if self.backup.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    /// Stores `next` on the connection as it is, without reconnecting:
    /// `Err` (retryable) when the connection is gone, so the caller knows
    /// the backup went away since it was opened.
    pub async fn store_offset_here(&mut self, next: i64) -> Result<(), ApplyError> {
        let addr = self.addr();
        let Some(backup) = self.backup.as_mut() else {
            return Err(BackupError::Closed(addr).into());
        };
        match state::write(backup, &self.topic, self.partition, next).await {
            Ok(()) => {
                self.stored(next);
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

    /// `next` was stored outside a transaction (which leaves database 0
    /// selected): it is the position now, and the backup answered.
    fn stored(&mut self, next: i64) {
        self.db = Some(0);
        self.position = Some(next);
        self.backoff.reset();
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

    /// Connects and reads the stored offset (and the partition's other
    /// state), retrying with backoff until the backup answers both.
    pub async fn connect(&mut self) -> Result<Option<i64>, ApplyError> {
        loop {
            match self.attempt().await {
                Ok((backup, read)) => {
                    let stored = read.offset;
                    self.seqs = read.seqs;
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

    /// One connection attempt: connect, authenticate, fence the previous
    /// connection off, read the state.
    async fn attempt(&mut self) -> Result<(Backup, state::PartitionState), BackupError> {
        let mut backup = Backup::connect(&self.settings).await?;
        self.fence(&mut backup).await?;
        let read = state::read(&mut backup, &self.topic, self.partition).await?;
        Ok((backup, read))
    }

    /// The fence: a transaction sent on the previous connection (lost to a
    /// reply timeout, say) may still wait in the backup's input buffer of
    /// that connection. Killing it from the new connection before the state
    /// is read means it either ran already (and the state read says so) or
    /// never runs. Then learns the new connection's id for the next time.
    async fn fence(&mut self, backup: &mut Backup) -> Result<(), BackupError> {
        if let Some(old) = self.client_id.take() {
            let reply = backup
                .call(&Command::from_parts([
                    "CLIENT".to_string(),
                    "KILL".into(),
                    "ID".into(),
                    old.to_string(),
                ]))
                .await?;
            if let Frame::Error(_) = &reply {
                let text = describe(&reply);
                if crate::backup::is_unavailable(&text) {
                    return Err(crate::backup::refused(backup.addr(), "CLIENT KILL", &reply));
                }
                if !text.contains("No such client") && !self.fence_refused {
                    self.fence_refused = true;
                    log::warn!(
                        "partition {}[{}]: the backup refused CLIENT KILL ID {old} ({text}): a \
                         transaction still queued on a lost connection could run after the new \
                         connection read the stored offset, applying its records twice; grant \
                         the replay's user +client|kill (and +client|id) to close that window",
                        self.topic,
                        self.partition
                    );
                }
            }
        }
        let reply = backup.call(&Command::from_parts(["CLIENT", "ID"])).await?;
        match reply {
            Frame::Integer(id) => self.client_id = Some(id),
            other => {
                if !self.fence_refused {
                    self.fence_refused = true;
                    log::warn!(
                        "partition {}[{}]: the backup refused CLIENT ID ({}): connections lost \
                         are not fenced off (a transaction queued on one could run after a \
                         reconnect read the stored offset)",
                        self.topic,
                        self.partition,
                        describe(&other)
                    );
                }
            }
        }
        Ok(())
    }

    /// After reconnecting: `Err(Rewind)` when the backup holds an offset
    /// before the one last stored (it lost acknowledged writes) or none at
    /// all while one was stored and `start = "earliest"`. `next` is where
    /// the replay goes on otherwise, for the log.
    pub fn check_lost(&mut self, stored: Option<i64>, next: i64) -> Result<(), ApplyError> {
        let addr = self.addr();
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
                if self.rewind_when_emptied {
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
}
