//! What the replay says on `/metrics` and `/health`: its progress, its lag,
//! whether it waits for the backup, and whether records never arrived (a
//! gap in a source's numbering: the backup needs a resync). Either makes it
//! unhealthy.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use remoteback_protocol::record::now_ms;
use remoteback_replay::{PartitionStats, Stats};

use super::{counter, counter_family, gauge, gauge_family, histogram, Report};

/// A per-partition gauge's value, when the partition has one yet.
type PartitionGauge = fn(&PartitionStats) -> Option<i64>;

/// The samples of a per-partition metric, labelled by topic and partition
/// (`names`: each partition's number as text), for the partitions `value`
/// has one for.
fn per_partition<'a, V>(
    partitions: &'a [((String, i32), PartitionStats)],
    names: &'a [String],
    value: impl Fn(&PartitionStats) -> Option<V>,
) -> Vec<([(&'static str, &'a str); 2], V)> {
    partitions
        .iter()
        .zip(names)
        .filter_map(|(((topic, _), stats), p)| {
            Some((
                [("topic", topic.as_str()), ("partition", p.as_str())],
                value(stats)?,
            ))
        })
        .collect()
}

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
            "remoteback_replay_commands_applied_total",
            "Commands applied to the backup: the writes of the records applied (a packed record holds several; SELECT, MULTI and EXEC not counted; ROW: records).",
            self.stats.commands(),
        )?;
        counter(
            out,
            "remoteback_replay_heartbeats_total",
            "Heartbeats read: records without commands the proxy writes to idle partitions; their time keeps the lag true when no one writes.",
            self.stats.heartbeats(),
        )?;
        counter(
            out,
            "remoteback_replay_commands_refused_total",
            "Commands the backup refused (a sign it diverged).",
            self.stats.refused(),
        )?;
        counter(
            out,
            "remoteback_replay_scripts_raised_total",
            "Replayed scripts that raised an error while they ran on the backup, as they did on the primary (not refusals).",
            self.stats.scripts_raised(),
        )?;
        counter(
            out,
            "remoteback_replay_bad_records_skipped_total",
            "Records that could not be read, skipped (on_bad_record = skip): the backup misses what they held.",
            self.stats.bad_skipped(),
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
            "When the primary answered the newest write applied, or the proxy wrote the newest heartbeat read, in the partition furthest behind: the recovery point (ms since the epoch; 0 before the first).",
            self.stats.applied_everywhere_ms().min(i64::MAX as u64) as i64,
        )?;
        let now = now_ms();
        let partitions = self.stats.partitions();
        let names: Vec<String> = partitions.iter().map(|((_, p), _)| p.to_string()).collect();
        gauge_family(
            out,
            "remoteback_replay_lag_seconds",
            "Seconds since the primary answered the newest write applied, or the proxy wrote the newest heartbeat read, per partition (from its first record on).",
            &per_partition(&partitions, &names, |s| {
                s.time_ms.map(|t| now.saturating_sub(t) as f64 / 1000.0)
            }),
        )?;
        let lag = match self.stats.applied_everywhere_ms() {
            0 => 0,
            t => now.saturating_sub(t),
        };
        gauge(
            out,
            "remoteback_replay_age_of_last_applied_ms",
            "Milliseconds since remoteback_replay_last_applied_primary_time_ms: the replication lag of the partition furthest behind (with heartbeats it stays true when no one writes).",
            lag.min(i64::MAX as u64) as i64,
        )?;
        let gauges: [(&str, &str, PartitionGauge); 3] = [
            (
                "remoteback_replay_records_behind",
                "Records between the next one the replay applies and the partition's high watermark, as the consumer last heard it from the broker, per partition.",
                PartitionStats::behind,
            ),
            (
                "remoteback_replay_position",
                "The offset of the next record the replay applies, per partition, as of its last batch.",
                |s| s.position,
            ),
            (
                "remoteback_replay_high_watermark",
                "The partition's high watermark (the offset its next record will get), as the consumer last heard it from the broker.",
                |s| s.high_watermark,
            ),
        ];
        for (name, help, value) in gauges {
            gauge_family(out, name, help, &per_partition(&partitions, &names, value))?;
        }
        counter_family(
            out,
            "remoteback_replay_partition_records_applied_total",
            "Records applied, per partition (remoteback_replay_records_applied_total is their sum).",
            &per_partition(&partitions, &names, |s| Some(s.records)),
        )?;
        counter_family(
            out,
            "remoteback_replay_partition_commands_applied_total",
            "Writes applied, per partition (remoteback_replay_commands_applied_total is their sum).",
            &per_partition(&partitions, &names, |s| Some(s.commands)),
        )?;
        for (name, help, h) in self.stats.histograms() {
            histogram(out, name, help, &h)?;
        }
        Ok(())
    }

    fn health(&self) -> Result<String, String> {
        if let Some(first) = self.stats.resync_needed() {
            let mut why = Vec::new();
            if self.stats.gaps() > 0 {
                why.push(format!(
                    "{} records never arrived in {} gaps",
                    self.stats.missing(),
                    self.stats.gaps()
                ));
            }
            if self.stats.bad_skipped() > 0 {
                why.push(format!(
                    "{} unreadable records skipped",
                    self.stats.bad_skipped()
                ));
            }
            return Err(format!(
                "resync needed: {}, the first: {first}",
                why.join(", ")
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::status::Collected;

    /// Every metric renders (help texts that would need escaping panic in
    /// debug builds), and a skipped record turns `/health` to a resync.
    #[test]
    fn every_metric_renders_and_a_skipped_record_asks_for_a_resync() {
        let stats = Stats::default();
        let report = Arc::new(ReplayReport {
            stats: stats.clone(),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collected(report.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("renders");
        for name in [
            "remoteback_replay_records_applied_total 0",
            "remoteback_replay_bad_records_skipped_total 0",
            "remoteback_replay_duplicates_skipped_total 0",
            "remoteback_replay_resync_needed 0",
        ] {
            assert!(text.contains(name), "{name} in:\n{text}");
        }
        assert!(report.health().is_ok());
        stats.add_bad_skipped("record at t[0]@7: payload holds no command".into());
        assert_eq!(
            report.health(),
            Err(
                "resync needed: 1 unreadable records skipped, the first: record at t[0]@7: \
                 payload holds no command"
                    .into()
            )
        );
    }
}
