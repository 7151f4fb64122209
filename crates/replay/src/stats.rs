//! Counters the replay keeps about its work, shared by all partitions.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Cheap to clone; every clone counts into the same totals.
#[derive(Clone, Debug, Default)]
pub struct Stats(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    applied: AtomicU64,
    commands: AtomicU64,
    heartbeats: AtomicU64,
    refused: AtomicU64,
    scripts_raised: AtomicU64,
    bad_skipped: AtomicU64,
    reconnects: AtomicU64,
    /// Partitions waiting for the backup right now.
    waiting: AtomicI64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    missing: AtomicU64,
    barriers: AtomicU64,
    /// Why the backup needs a resync (the first gap seen), once it does.
    resync: Mutex<Option<String>>,
    /// Per (topic, partition): the newest primary time applied (the lag
    /// is the partition furthest behind's, so that heartbeats of idle
    /// partitions cannot hide one that is stuck), what it applied, and
    /// where it stands against its high watermark.
    partitions: Mutex<Vec<((String, i32), PartitionStats)>>,
    /// The newest primary time of a record with writes applied, anywhere.
    last_write_ms: AtomicU64,
    /// Seconds one batch's transaction took on the backup.
    apply_seconds: Histogram,
    /// Records per batch applied.
    batch_records: Histogram,
    /// Seconds from the primary's reply to a batch's newest record to the
    /// backup's taking the batch.
    delay_seconds: Histogram,
}

impl Default for Inner {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        Inner {
            applied: AtomicU64::default(),
            commands: AtomicU64::default(),
            heartbeats: AtomicU64::default(),
            refused: AtomicU64::default(),
            scripts_raised: AtomicU64::default(),
            bad_skipped: AtomicU64::default(),
            reconnects: AtomicU64::default(),
            waiting: AtomicI64::default(),
            duplicates: AtomicU64::default(),
            gaps: AtomicU64::default(),
            missing: AtomicU64::default(),
            barriers: AtomicU64::default(),
            resync: Mutex::default(),
            partitions: Mutex::default(),
            last_write_ms: AtomicU64::default(),
            apply_seconds: seconds(),
            // 1 to 65536 records.
            batch_records: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            delay_seconds: seconds(),
        }
    }
}

/// What one partition of the replay did and where it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// The newest primary time applied (a write's or a heartbeat's).
    pub time_ms: Option<u64>,
    /// Records and the writes they held, applied since start.
    pub records: u64,
    pub commands: u64,
    /// The time of the last heartbeat read: the proxy was alive then.
    pub last_heartbeat_ms: Option<u64>,
    /// Records with writes applied after that heartbeat (since start when
    /// none was read): what the proxy captured after its last sign of life.
    pub records_since_heartbeat: u64,
    /// The offset of the next record to apply, and the partition's high
    /// watermark, as last seen after a batch.
    pub position: Option<i64>,
    pub high_watermark: Option<i64>,
}

impl PartitionStats {
    /// Records between the next one to apply and the high watermark.
    pub fn behind(&self) -> Option<i64> {
        Some((self.high_watermark? - self.position?).max(0))
    }
}

impl Stats {
    /// Updates the entry of `topic[partition]`.
    fn partition(&self, (topic, partition): (&str, i32), update: impl FnOnce(&mut PartitionStats)) {
        let mut partitions = self.0.partitions.lock().unwrap_or_else(|e| e.into_inner());
        match partitions
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, stats)) => update(stats),
            None => {
                let mut stats = PartitionStats::default();
                update(&mut stats);
                partitions.push(((topic.to_string(), partition), stats));
            }
        }
    }

    /// `n` records took effect, holding `commands` writes (a packed record
    /// holds several); the last was answered by the primary at
    /// `primary_ms` (when known), which defines the replication lag.
    /// `heartbeat`: the batch's last heartbeat, its time and the records
    /// with writes after it, when the batch held one.
    pub fn add_applied(
        &self,
        at: (&str, i32),
        n: u64,
        commands: u64,
        primary_ms: Option<u64>,
        heartbeat: Option<(Option<u64>, u64)>,
    ) {
        self.0.applied.fetch_add(n, Ordering::Relaxed);
        self.0.commands.fetch_add(commands, Ordering::Relaxed);
        if let (Some(t), true) = (primary_ms, commands > 0) {
            self.0.last_write_ms.fetch_max(t, Ordering::Relaxed);
        }
        self.partition(at, |stats| {
            stats.records += n;
            stats.commands += commands;
            match heartbeat {
                Some((time, after)) => {
                    stats.last_heartbeat_ms = time.or(stats.last_heartbeat_ms);
                    stats.records_since_heartbeat = after;
                }
                None => stats.records_since_heartbeat += n,
            }
            if let Some(t) = primary_ms {
                stats.time_ms = Some(stats.time_ms.map_or(t, |was| was.max(t)));
            }
        });
    }

    /// Each (topic, partition) seen so far, sorted.
    pub fn partitions(&self) -> Vec<((String, i32), PartitionStats)> {
        let mut all = self
            .0
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// When the primary answered the newest write applied (or the proxy
    /// wrote the newest heartbeat read) in the partition furthest behind:
    /// everything the primary answered before it is on the backup, as far
    /// as the partitions seen so far go (ms since the epoch; 0 before the
    /// first).
    pub fn applied_everywhere_ms(&self) -> u64 {
        let partitions = self.0.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions
            .iter()
            .filter_map(|(_, stats)| stats.time_ms)
            .min()
            .unwrap_or(0)
    }

    /// A batch of `records` took `took` on the backup; its newest record
    /// was answered by the primary at `primary_ms` (when known).
    pub fn add_batch(&self, records: usize, took: std::time::Duration, primary_ms: Option<u64>) {
        self.0.apply_seconds.observe(took.as_secs_f64());
        self.0.batch_records.observe(records as f64);
        if let Some(t) = primary_ms {
            let now = remoteback_protocol::record::now_ms();
            self.0
                .delay_seconds
                .observe(now.saturating_sub(t) as f64 / 1000.0);
        }
    }

    /// The histograms: apply time, batch size, primary-to-backup delay.
    pub fn histograms(&self) -> [(&'static str, &'static str, Histogram); 3] {
        [
            (
                "remoteback_replay_apply_seconds",
                "Seconds one batch's transaction took on the backup.",
                self.0.apply_seconds.clone(),
            ),
            (
                "remoteback_replay_batch_records",
                "Records per batch applied in one transaction.",
                self.0.batch_records.clone(),
            ),
            (
                "remoteback_replay_delay_seconds",
                "Seconds from the primary's reply to a batch's newest record to the backup's taking the batch (per batch).",
                self.0.delay_seconds.clone(),
            ),
        ]
    }

    /// `topic[partition]` applies `position` next; its high watermark is
    /// `high`.
    pub fn set_position(&self, at: (&str, i32), position: i64, high: i64) {
        self.partition(at, |stats| {
            stats.position = Some(position);
            stats.high_watermark = Some(high);
        });
    }

    /// The primary time of the newest record with writes applied (0 before
    /// the first).
    pub fn last_write_ms(&self) -> u64 {
        self.0.last_write_ms.load(Ordering::Relaxed)
    }

    /// A record that could not be read was skipped (`on_bad_record =
    /// "skip"`), described by `what`: the backup misses what it held, as
    /// after a gap.
    pub fn add_bad_skipped(&self, what: String) {
        self.0.bad_skipped.fetch_add(1, Ordering::Relaxed);
        let mut resync = self.0.resync.lock().unwrap_or_else(|e| e.into_inner());
        resync.get_or_insert(what);
    }

    /// A heartbeat arrived: no command, only its time and place.
    pub fn add_heartbeat(&self) {
        self.0.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Heartbeats read.
    pub fn heartbeats(&self) -> u64 {
        self.0.heartbeats.load(Ordering::Relaxed)
    }

    /// Commands applied (`SELECT`s and `MULTI`/`EXEC` not counted).
    pub fn commands(&self) -> u64 {
        self.0.commands.load(Ordering::Relaxed)
    }

    /// Records skipped because they could not be read.
    pub fn bad_skipped(&self) -> u64 {
        self.0.bad_skipped.load(Ordering::Relaxed)
    }

    /// Commands the backup refused (a sign the backup diverged).
    pub fn add_refused(&self, n: u64) {
        self.0.refused.fetch_add(n, Ordering::Relaxed);
    }

    /// A replayed script raised an error while it ran on the backup, as
    /// the proxy captures only scripts that ran on the primary and raised
    /// there too or succeeded.
    pub fn add_script_raised(&self) {
        self.0.scripts_raised.fetch_add(1, Ordering::Relaxed);
    }

    pub fn scripts_raised(&self) -> u64 {
        self.0.scripts_raised.load(Ordering::Relaxed)
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

    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    /// A record already applied (its `rb-seq` at or before the last one
    /// applied of its source) was skipped.
    pub fn add_duplicate(&self) {
        self.0.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Records of a source's numbering never arrived: `missing` of them,
    /// described by `what`. The backup misses writes; only a resync (a
    /// fresh copy of the primary) makes it right, so the state lasts until
    /// the replay is restarted.
    pub fn add_gap(&self, missing: u64, what: String) {
        self.0.gaps.fetch_add(1, Ordering::Relaxed);
        self.0.missing.fetch_add(missing, Ordering::Relaxed);
        let mut resync = self.0.resync.lock().unwrap_or_else(|e| e.into_inner());
        resync.get_or_insert(what);
    }

    /// A barrier's command was applied (once for all its copies).
    pub fn add_barrier(&self) {
        self.0.barriers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn duplicates(&self) -> u64 {
        self.0.duplicates.load(Ordering::Relaxed)
    }

    pub fn gaps(&self) -> u64 {
        self.0.gaps.load(Ordering::Relaxed)
    }

    pub fn missing(&self) -> u64 {
        self.0.missing.load(Ordering::Relaxed)
    }

    pub fn barriers(&self) -> u64 {
        self.0.barriers.load(Ordering::Relaxed)
    }

    /// Why the backup needs a resync (the first gap), if it does.
    pub fn resync_needed(&self) -> Option<String> {
        self.0
            .resync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_point_is_the_partition_furthest_behind() {
        let stats = Stats::default();
        assert_eq!(stats.applied_everywhere_ms(), 0, "nothing applied yet");
        stats.add_applied(("t", 0), 1, 1, Some(100), None);
        stats.add_applied(("t", 1), 1, 1, Some(50), None);
        // Heartbeats keep partition 0 current; partition 1 is stuck.
        stats.add_applied(("t", 0), 0, 0, Some(900), None);
        stats.add_applied(("u", 1), 0, 0, Some(950), None);
        assert_eq!(stats.applied_everywhere_ms(), 50);
        stats.add_applied(("t", 1), 0, 0, Some(40), None);
        assert_eq!(stats.applied_everywhere_ms(), 50, "a time never goes back");
        stats.add_applied(("t", 1), 1, 1, Some(800), None);
        assert_eq!(stats.applied_everywhere_ms(), 800);
        assert_eq!((stats.applied(), stats.commands()), (3, 3));
    }
}
