//! Where a restore may begin: the last full sync the log holds whole.
//!
//! A full `remoteback sync` writes a mark to every partition before its
//! first copy and another after its last (`rb-sync`, see the record
//! format). From a sync's start marks on, the records rebuild every key the
//! primary held: each key's copy and every write after it. So a restore
//! into an empty Redis may skip everything before them, which is what makes
//! a topic with retention restorable, as long as a complete sync is still
//! in it. This reads the partitions once to find them (the records' headers
//! are all it looks at), before the restore reads them again to apply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use remoteback_protocol::record::{SyncMark, SyncPhase};

use crate::receiver::{self, ReceiveError, StartAt};
use crate::settings::ReceiverSettings;

/// A full sync found complete in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncInLog {
    /// The proxy that ran it (`rb-source`).
    pub source: String,
    /// Its start time, milliseconds since the Unix epoch.
    pub id: u64,
    /// When its last end mark was written.
    pub ended_ms: u64,
    /// Per partition, the offset of its start mark: where to begin.
    pub starts: Vec<(String, i32, i64)>,
}

/// Marks seen on one partition, per sync.
#[derive(Default)]
struct Seen {
    start: Option<i64>,
    end_ms: Option<u64>,
}

/// Finds the last sync whose start and end marks are on every partition of
/// `settings`' topics, its end written at or before `until_ms` (any time
/// when `None`) and before the offset `stops` gives a partition, if any.
/// Reads each partition from its first record to where it ended when
/// asked (or to its stop); `scanned` counts the records read. A record
/// whose headers cannot be read is an error: the restore would stop at it
/// too.
pub async fn last_full_sync(
    settings: &ReceiverSettings,
    until_ms: Option<u64>,
    stops: &[(String, i32, i64)],
    scanned: &AtomicU64,
) -> Result<Option<SyncInLog>, ReceiveError> {
    let partitions = receiver::partitions(settings).await?;
    // (source, id) → partition index → what was seen.
    let mut syncs: HashMap<(String, u64), HashMap<usize, Seen>> = HashMap::new();
    for (index, (topic, partition)) in partitions.iter().enumerate() {
        let (low, high) = receiver::watermarks(settings, topic, *partition).await?;
        let stop = stops
            .iter()
            .find(|(t, p, _)| t == topic && p == partition)
            .map(|(_, _, o)| *o);
        let high = stop.map_or(high, |s| s.min(high));
        if high <= low {
            continue;
        }
        let consumer = receiver::consumer(settings, topic, *partition, StartAt::Offset(low))?;
        let mut next = low;
        while next < high {
            let batch = receiver::next_batch(&consumer, Duration::from_secs(1)).await;
            scanned.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
            if batch.records.is_empty() && batch.error.is_none() {
                // Nothing came: past the last record already when the
                // offsets below `high` hold none (a gap at the tail).
                next = next.max(position(&consumer, topic, *partition).unwrap_or(next));
            }
            for record in &batch.records {
                if record.offset >= high {
                    // At or past where the search ends.
                    next = high;
                    break;
                }
                next = record.offset + 1;
                let (Some(mark), Some(source)) = (record.meta.sync, &record.meta.source) else {
                    continue;
                };
                let seen = syncs
                    .entry((source.clone(), mark.id))
                    .or_default()
                    .entry(index)
                    .or_default();
                note(seen, mark, record.offset, record.meta.time_ms, until_ms);
            }
            if let Some(e) = batch.error {
                if !e.is_transient() {
                    return Err(e);
                }
            }
        }
    }
    Ok(choose(syncs, &partitions))
}

/// Where the consumer of `topic[partition]` reads next, if it knows.
fn position(
    consumer: &rdkafka::consumer::StreamConsumer,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    consumer
        .position()
        .ok()?
        .find_partition(topic, partition)?
        .offset()
        .to_raw()
        .filter(|o| *o >= 0)
}

fn note(seen: &mut Seen, mark: SyncMark, offset: i64, time_ms: Option<u64>, until: Option<u64>) {
    match mark.phase {
        SyncPhase::Start => {
            seen.start.get_or_insert(offset);
        }
        SyncPhase::End => {
            let time = time_ms.unwrap_or(u64::MAX);
            if seen.start.is_some() && until.is_none_or(|u| time <= u) {
                seen.end_ms = Some(time);
            }
        }
    }
}

/// The sync complete on every partition that ended last.
fn choose(
    syncs: HashMap<(String, u64), HashMap<usize, Seen>>,
    partitions: &[(String, i32)],
) -> Option<SyncInLog> {
    syncs
        .into_iter()
        .filter_map(|((source, id), seen)| {
            let mut starts = Vec::with_capacity(partitions.len());
            let mut ended_ms = 0;
            for (index, (topic, partition)) in partitions.iter().enumerate() {
                let s = seen.get(&index)?;
                starts.push((topic.clone(), *partition, s.start?));
                ended_ms = ended_ms.max(s.end_ms?);
            }
            Some(SyncInLog {
                source,
                id,
                ended_ms,
                starts,
            })
        })
        .max_by_key(|s| (s.ended_ms, s.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(entries: &[(usize, Option<i64>, Option<u64>)]) -> HashMap<usize, Seen> {
        entries
            .iter()
            .map(|&(i, start, end_ms)| (i, Seen { start, end_ms }))
            .collect()
    }

    #[test]
    fn the_last_sync_complete_on_every_partition_is_chosen() {
        let partitions = vec![("t".to_string(), 0), ("t".to_string(), 1)];
        let mut syncs = HashMap::new();
        // Complete, ended at 200.
        syncs.insert(
            ("p:1".to_string(), 100),
            seen(&[(0, Some(5), Some(190)), (1, Some(3), Some(200))]),
        );
        // Later, but its end is missing on partition 1.
        syncs.insert(
            ("p:1".to_string(), 300),
            seen(&[(0, Some(50), Some(390)), (1, Some(40), None)]),
        );
        // Later, but partition 1 has no mark at all.
        syncs.insert(("p:1".to_string(), 500), seen(&[(0, Some(70), Some(590))]));
        let chosen = choose(syncs, &partitions).unwrap();
        assert_eq!(chosen.id, 100);
        assert_eq!(chosen.ended_ms, 200);
        assert_eq!(
            chosen.starts,
            vec![("t".to_string(), 0, 5), ("t".to_string(), 1, 3)]
        );
    }

    #[test]
    fn an_end_after_the_bound_or_before_its_start_does_not_count() {
        let end = SyncMark {
            phase: SyncPhase::End,
            id: 1,
        };
        let start = SyncMark {
            phase: SyncPhase::Start,
            id: 1,
        };
        let mut s = Seen::default();
        note(&mut s, end, 9, Some(100), None);
        assert_eq!(s.end_ms, None, "an end without its start (deleted)");
        note(&mut s, start, 10, Some(50), None);
        note(&mut s, end, 20, Some(300), Some(200));
        assert_eq!(s.end_ms, None, "ended after --until");
        note(&mut s, end, 20, Some(150), Some(200));
        assert_eq!((s.start, s.end_ms), (Some(10), Some(150)));
        assert!(choose(HashMap::new(), &[("t".into(), 0)]).is_none());
    }
}
