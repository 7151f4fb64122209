//! Applying `ROW` records: each source client connection is mirrored by a
//! backup connection that receives the same bytes.
//!
//! `ROW` payloads are unparsed client bytes, possibly cut mid-command, with
//! reads, `SELECT`s and transactions of their own, so they cannot join a
//! transaction. Replies are read and discarded by a drain task per
//! connection. The stored offset is written after the bytes were sent, so
//! `ROW` replay is at-least-once: after a crash the records since the last
//! stored offset are sent again.
//!
//! When the backup goes away (a write fails, or a connection it closed
//! turns out to be part of an outage: the control connection does not
//! answer `PING` either), the replay waits with backoff and sends the whole
//! batch again on new connections. A connection the backup closed by itself
//! while still answering (a `QUIT` in the client's bytes, a protocol error)
//! is opened again for the later bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backup::{Backup, BackupError};
use crate::error::ApplyError;
use crate::link::BackupLink;
use crate::receiver::Received;
use crate::stats::Stats;
use remoteback_transport::WriteHalf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Mirrors source connections of one partition onto the backup.
pub struct RowApplier {
    /// Stores offsets, checks the backup and owns the backoff.
    control: BackupLink,
    stats: Stats,
    connections: HashMap<(String, u64), Mirror>,
}

/// One backup connection standing in for a source connection.
struct Mirror {
    /// `None` once dropped.
    write: Option<WriteHalf>,
    /// Set by the drain task when the backup closed the connection.
    closed: Arc<AtomicBool>,
}

impl Drop for Mirror {
    /// Ends the connection's writing side, as the source's connection
    /// ended, so that the backup runs what it was sent, then closes, and
    /// the drain task ends at that close. Dropping the half would not do
    /// it over TLS: the two halves share one stream, which the drain task
    /// keeps open.
    fn drop(&mut self) {
        if let (Some(mut write), Ok(runtime)) =
            (self.write.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = write.shutdown().await;
            });
        }
    }
}

impl RowApplier {
    /// Mirrors the partition `control` is the link of.
    pub fn new(control: BackupLink, stats: Stats) -> Self {
        RowApplier {
            control,
            stats,
            connections: HashMap::new(),
        }
    }

    pub async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        self.control.stored_offset().await
    }

    pub async fn store_offset(&mut self, next: i64) -> Result<(), ApplyError> {
        self.control.store_offset(next).await
    }

    /// Sends the batch and stores the offset after it. Both happen while
    /// one control connection stays open: if the backup went away in
    /// between (the connection broke, so the bytes may never have been
    /// applied), the whole batch is sent again on new connections.
    pub async fn apply(&mut self, batch: Vec<Received>) -> Result<(), ApplyError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (first, last) = (first.offset, last.offset);
        loop {
            self.control.ensure_connected().await?;
            let sent = match self.send(&batch).await {
                Ok(()) => self.control.store_offset_here(last + 1).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => break,
                Err(ApplyError::Backup(e)) if e.is_retryable() => {
                    self.connections.clear();
                    let doing = format!(
                        "sending ROW records {first}..={last} (sent again from {first} on new connections)"
                    );
                    self.control.pause(&e, &doing).await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.stats.add_applied(
            (self.control.topic(), self.control.partition()),
            batch.len() as u64,
            batch.len() as u64,
            batch.iter().rev().find_map(|r| r.time_ms()),
            None,
        );
        Ok(())
    }

    /// Writes every record; `Err` with a retryable error when the backup
    /// went away meanwhile.
    async fn send(&mut self, batch: &[Received]) -> Result<(), ApplyError> {
        for record in batch {
            self.send_record(record).await?;
        }
        // Let the drain tasks see connections the backup closed.
        tokio::task::yield_now().await;
        // A connection closed under us since: was it the backup going away?
        if self
            .connections
            .values()
            .any(|m| m.closed.load(Ordering::Relaxed))
        {
            self.check_backup().await?;
            self.connections
                .retain(|_, m| !m.closed.load(Ordering::Relaxed));
        }
        Ok(())
    }

    async fn send_record(&mut self, record: &Received) -> Result<(), ApplyError> {
        let key = (
            record.meta.source.clone().unwrap_or_default(),
            record.meta.conn.unwrap_or(0),
        );
        if record.meta.heartbeat {
            // No bytes of any connection: nothing to send.
            return Ok(());
        }
        if record.meta.close {
            if let Some(mut write) = self
                .connections
                .remove(&key)
                .and_then(|mut m| m.write.take())
            {
                let _ = write.shutdown().await;
            }
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            if self
                .connections
                .get(&key)
                .is_some_and(|m| m.closed.load(Ordering::Relaxed))
            {
                self.check_backup().await?;
                log::warn!(
                    "ROW connection {}#{} to the backup was closed by the backup before offset {} \
                     of {}[{}]; opening a new one for the later bytes",
                    key.0,
                    key.1,
                    record.offset,
                    self.control.topic(),
                    self.control.partition()
                );
                self.connections.remove(&key);
            }
            if !self.connections.contains_key(&key) {
                let mirror = self.open().await?;
                self.connections.insert(key.clone(), mirror);
            }
            let Some(write) = self
                .connections
                .get_mut(&key)
                .and_then(|m| m.write.as_mut())
            else {
                continue;
            };
            // Flushed: over TLS the end of it may wait in rustls's buffer.
            let written = async {
                write.write_all(&record.payload).await?;
                write.flush().await
            };
            match written.await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.connections.remove(&key);
                    let addr = self.control.addr();
                    self.check_backup().await?;
                    attempts += 1;
                    if attempts >= 2 {
                        // The backup answers, yet will not take these bytes.
                        return Err(BackupError::Io { addr, source: e }.into());
                    }
                    log::warn!(
                        "ROW connection {}#{} to the backup failed at offset {} of {}[{}]: {e}; \
                         writing the record on a new connection",
                        key.0,
                        key.1,
                        record.offset,
                        self.control.topic(),
                        self.control.partition()
                    );
                }
            }
        }
    }

    /// `Err` (retryable) unless the backup answers on the control
    /// connection, opening it if needed.
    async fn check_backup(&mut self) -> Result<(), ApplyError> {
        if self.control.backup_answers().await {
            return Ok(());
        }
        Err(BackupError::Closed(self.control.addr()).into())
    }

    /// A new backup connection whose replies a task drains.
    async fn open(&mut self) -> Result<Mirror, ApplyError> {
        let backup = Backup::connect(self.control.settings()).await?;
        let (mut read, write) = backup.into_stream().into_split();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        // Replies are not needed; reading them keeps the backup from
        // blocking on a full socket buffer.
        tokio::spawn(async move {
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
            flag.store(true, Ordering::Relaxed);
        });
        Ok(Mirror {
            write: Some(write),
            closed,
        })
    }
}
