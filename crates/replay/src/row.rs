//! Applying `ROW` records: each source client connection is mirrored by a
//! backup connection that receives the same bytes.
//!
//! `ROW` payloads are unparsed client bytes, possibly cut mid-command, with
//! reads, `SELECT`s and transactions of their own, so they cannot join a
//! batch transaction. Replies are read and discarded by a drain task per
//! connection. The stored offset is written after the bytes were sent, so
//! `ROW` replay is at-least-once: after a crash the records since the last
//! stored offset are sent again.

use std::collections::HashMap;

use remoteback_protocol::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

use crate::applier::{Applier, ApplyError};
use crate::backup::Backup;
use crate::offsets;
use crate::receiver::Received;
use crate::settings::BackupSettings;

/// Mirrors source connections of one partition onto the backup.
pub struct RowApplier {
    settings: BackupSettings,
    /// Stores offsets (and owns reconnection backoff).
    control: Applier,
    topic: String,
    partition: i32,
    connections: HashMap<(String, u64), OwnedWriteHalf>,
}

impl RowApplier {
    pub fn new(settings: BackupSettings, control: Applier, topic: &str, partition: i32) -> Self {
        RowApplier {
            settings,
            control,
            topic: topic.to_string(),
            partition,
            connections: HashMap::new(),
        }
    }

    pub async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        self.control.stored_offset().await
    }

    pub async fn apply(&mut self, batch: Vec<Received>) -> Result<(), ApplyError> {
        let Some(last) = batch.last().map(|r| r.offset) else {
            return Ok(());
        };
        for record in &batch {
            self.apply_record(record).await?;
        }
        let store = offsets::store(&self.topic, self.partition, last + 1);
        let select = Command::from_parts(["SELECT", "0"]);
        let backup = self.control.connection().await;
        backup.call(&select).await?;
        backup.call(&store).await?;
        Ok(())
    }

    async fn apply_record(&mut self, record: &Received) -> Result<(), ApplyError> {
        let key = (
            record.meta.source.clone().unwrap_or_default(),
            record.meta.conn.unwrap_or(0),
        );
        if record.meta.close {
            if let Some(mut w) = self.connections.remove(&key) {
                let _ = w.shutdown().await;
            }
            return Ok(());
        }
        if !self.connections.contains_key(&key) {
            let backup = Backup::connect(&self.settings).await?;
            let (mut read, write) = backup.into_stream().into_split();
            // Replies are not needed; reading them keeps the backup from
            // blocking on a full socket buffer.
            tokio::spawn(async move {
                let mut sink = vec![0u8; 16 * 1024];
                while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            self.connections.insert(key.clone(), write);
        }
        if let Some(w) = self.connections.get_mut(&key) {
            if let Err(e) = w.write_all(&record.payload).await {
                log::warn!(
                    "ROW connection {}#{} to the backup failed at offset {}: {e}; it is opened again for later bytes",
                    key.0,
                    key.1,
                    record.offset
                );
                self.connections.remove(&key);
            }
        }
        Ok(())
    }
}
