//! Counters the replay keeps about its work, shared by all partitions.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Cheap to clone; every clone counts into the same totals.
#[derive(Clone, Debug, Default)]
pub struct Stats(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    applied: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
    last_primary_ms: AtomicU64,
    /// Partitions waiting for the backup right now.
    waiting: AtomicI64,
}

impl Stats {
    /// `n` records took effect; the last was answered by the primary at
    /// `primary_ms` (when known), which defines the replication lag.
    pub fn add_applied(&self, n: u64, primary_ms: Option<u64>) {
        self.0.applied.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = primary_ms {
            self.0.last_primary_ms.fetch_max(t, Ordering::Relaxed);
        }
    }

    /// Commands the backup refused (a sign the backup diverged).
    pub fn add_refused(&self, n: u64) {
        self.0.refused.fetch_add(n, Ordering::Relaxed);
    }

    /// Failed attempts to reach the backup.
    pub fn add_reconnect(&self) {
        self.0.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A partition started (`1`) or stopped (`-1`) waiting for the backup.
    pub fn add_waiting(&self, n: i64) {
        self.0.waiting.fetch_add(n, Ordering::Relaxed);
    }

    /// Partitions waiting for the backup (unreachable, loading, refusing
    /// writes) right now.
    pub fn waiting(&self) -> i64 {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// When the primary answered the newest write applied so far (ms since
    /// the epoch; 0 before the first).
    pub fn last_primary_ms(&self) -> u64 {
        self.0.last_primary_ms.load(Ordering::Relaxed)
    }

    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }
}
