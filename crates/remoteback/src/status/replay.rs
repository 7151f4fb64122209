//! What the replay says on `/metrics` and `/health`: its progress, its lag,
//! whether it waits for the backup, and whether records never arrived (a
//! gap in a source's numbering: the backup needs a resync). Either makes it
//! unhealthy.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use remoteback_protocol::record::now_ms;
use remoteback_replay::Stats;

use super::{counter, gauge, Report};

/// The replay's progress and its wait for the backup.
pub struct ReplayReport {
    pub stats: Stats,
}

impl Report for ReplayReport {
    fn metrics(&self, out: &mut DescriptorEncoder<'_>) -> fmt::Result {
        counter(
            out,
            "remoteback_replay_records_applied_total",
            "Records applied to the backup.",
            self.stats.applied(),
        )?;
        counter(
            out,
            "remoteback_replay_commands_refused_total",
            "Commands the backup refused (a sign it diverged).",
            self.stats.refused(),
        )?;
        counter(
            out,
            "remoteback_replay_backup_retries_total",
            "Failed attempts to reach or write the backup, each followed by a backoff.",
            self.stats.reconnects(),
        )?;
        counter(
            out,
            "remoteback_replay_duplicates_skipped_total",
            "Records skipped because a record with their rb-seq was applied already (in Kafka twice).",
            self.stats.duplicates(),
        )?;
        counter(
            out,
            "remoteback_replay_sequence_gaps_total",
            "Gaps in a source's rb-seq numbering: records that never arrived.",
            self.stats.gaps(),
        )?;
        counter(
            out,
            "remoteback_replay_records_missing_total",
            "Records the gaps leave out (the backup misses their writes).",
            self.stats.missing(),
        )?;
        counter(
            out,
            "remoteback_replay_barriers_applied_total",
            "Barriers (records copied to every partition) applied, once each.",
            self.stats.barriers(),
        )?;
        gauge(
            out,
            "remoteback_replay_resync_needed",
            "1 once a gap was seen: the backup misses writes until a full sync (`remoteback sync`) and a restart of the replay.",
            self.stats.resync_needed().is_some() as i64,
        )?;
        gauge(
            out,
            "remoteback_replay_partitions_waiting",
            "Partitions waiting for the backup right now.",
            self.stats.waiting(),
        )?;
        gauge(
            out,
            "remoteback_replay_last_applied_primary_time_ms",
            "When the primary answered the newest write applied (ms since the epoch; 0 before the first).",
            self.stats.last_primary_ms().min(i64::MAX as u64) as i64,
        )?;
        let lag = match self.stats.last_primary_ms() {
            0 => 0,
            t => now_ms().saturating_sub(t),
        };
        gauge(
            out,
            "remoteback_replay_age_of_last_applied_ms",
            "Milliseconds since the primary answered the newest write applied: the lag while writes flow.",
            lag.min(i64::MAX as u64) as i64,
        )
    }

    fn health(&self) -> Result<String, String> {
        if let Some(first) = self.stats.resync_needed() {
            return Err(format!(
                "resync needed: {} records never arrived in {} gaps, the first: {first}",
                self.stats.missing(),
                self.stats.gaps()
            ));
        }
        match self.stats.waiting() {
            0 => Ok(format!("ok: {} records applied", self.stats.applied())),
            n => Err(format!(
                "backup unavailable: {n} partitions waiting for it ({} retries so far)",
                self.stats.reconnects()
            )),
        }
    }
}
