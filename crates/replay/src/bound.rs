//! A replay that ends: each partition is applied up to a primary time (the
//! first record captured after it is left unapplied), up to an offset given
//! for it, or up to where the partition ended when the replay began,
//! whichever comes first. What `remoteback restore` runs.
//!
//! A record's time is its first write's (`rb-time`). `FLUSHALL`,
//! `FLUSHDB`, `SWAPDB` and the other keyless writes always travel alone,
//! so a restore can stop right before one; a pack of writes spans at most
//! the time one message takes to be acknowledged.

use std::sync::Mutex;

use crate::receiver::{self, ReceiveError, Received, StartAt};
use crate::settings::ReceiverSettings;

/// Where every partition of a bounded replay stops.
#[derive(Debug, Default)]
pub struct Bound {
    /// Apply records captured at or before this primary time (Unix ms);
    /// `None` for everything the partitions held at the start.
    pub until_ms: Option<u64>,
    /// Per partition, the offset it stops at (that record unapplied).
    offsets: Vec<(String, i32, i64)>,
    reached: Mutex<Vec<Reached>>,
    /// How many partitions the replay runs, once it knows.
    partitions: std::sync::atomic::AtomicUsize,
}

/// How a partition of a bounded replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    pub topic: String,
    pub partition: i32,
    /// The offset after the last record applied: where a later restore of
    /// the same target goes on.
    pub next_offset: i64,
    /// The partition's end when the replay began, or the offset it was
    /// to stop at when that came first.
    pub end_offset: i64,
    /// The offset it was to stop at, when one was given for it.
    pub until_offset: Option<i64>,
    /// Where the partition began when this replay started it from its
    /// beginning and that was not offset 0: the records before were
    /// deleted (retention), and their writes are missing unless a sync
    /// copied the keys later.
    pub deleted_before: Option<i64>,
    /// The time of the first record left unapplied because it was captured
    /// after the bound; `None` when the partition ended first.
    pub first_after_ms: Option<u64>,
    /// Records with writes applied by this run, and the time of the last.
    pub records: u64,
    pub last_write_ms: Option<u64>,
    /// The time of the last heartbeat applied by this run: the proxy was
    /// alive then.
    pub last_heartbeat_ms: Option<u64>,
}

impl Bound {
    pub fn new(until_ms: Option<u64>) -> Bound {
        Bound::with_offsets(until_ms, Vec::new())
    }

    /// [`new`](Bound::new), and the partitions `offsets` names (topic,
    /// partition, offset) stop at that offset, the record there unapplied.
    pub fn with_offsets(until_ms: Option<u64>, offsets: Vec<(String, i32, i64)>) -> Bound {
        Bound {
            until_ms,
            offsets,
            reached: Mutex::new(Vec::new()),
            partitions: std::sync::atomic::AtomicUsize::new(usize::MAX),
        }
    }

    /// Whether every partition of the replay reached the bound.
    pub fn is_done(&self) -> bool {
        let all = self.partitions.load(std::sync::atomic::Ordering::Relaxed);
        self.reached.lock().unwrap_or_else(|e| e.into_inner()).len() >= all
    }

    pub(crate) fn set_partitions(&self, n: usize) {
        self.partitions
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every partition's end, in the order they ended.
    pub fn reached(&self) -> Vec<Reached> {
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bound as one partition starting at `start` sees it.
    pub(crate) async fn for_partition(
        &self,
        settings: &ReceiverSettings,
        topic: &str,
        partition: i32,
        start: StartAt,
    ) -> Result<PartitionBound, ReceiveError> {
        let (low, high) = receiver::watermarks(settings, topic, partition).await?;
        let until_offset = self
            .offsets
            .iter()
            .find(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, o)| *o);
        let end = until_offset.map_or(high, |o| o.min(high));
        let (next, deleted_before) = match start {
            StartAt::Beginning => (low, (low > 0).then_some(low)),
            StartAt::Offset(o) => (o.max(low), (o < low).then_some(low)),
        };
        Ok(PartitionBound {
            until_ms: self.until_ms,
            reached: Reached {
                topic: topic.to_owned(),
                partition,
                next_offset: next,
                end_offset: end,
                until_offset,
                deleted_before,
                first_after_ms: None,
                records: 0,
                last_write_ms: None,
                last_heartbeat_ms: None,
            },
        })
    }

    /// Whether `topic[partition]` reached the bound.
    pub(crate) fn has_reached(&self, topic: &str, partition: i32) -> bool {
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| r.partition == partition && r.topic == topic)
    }

    pub(crate) fn report(&self, partition: PartitionBound) {
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(partition.reached);
    }
}

/// One partition's progress towards its bound.
pub(crate) struct PartitionBound {
    until_ms: Option<u64>,
    reached: Reached,
}

/// What a batch about to be applied would add.
pub(crate) struct Applying {
    next_offset: Option<i64>,
    records: u64,
    last_write_ms: Option<u64>,
    last_heartbeat_ms: Option<u64>,
}

impl PartitionBound {
    /// Whether the partition has nothing left to apply below its end.
    pub fn at_end(&self) -> bool {
        self.reached.next_offset >= self.reached.end_offset
    }

    /// Where the partition goes on (the first offset it still holds, when
    /// it no longer holds the one it stopped at).
    pub fn next_offset(&self) -> i64 {
        self.reached.next_offset
    }

    /// Whether `offset` is beyond the partition's end at the start.
    pub fn is_past(&self, offset: i64) -> bool {
        offset >= self.reached.end_offset
    }

    /// The partition stopped at a barrier's copy at `offset`, unapplied
    /// (the records before it in its batch were applied).
    pub fn stopped_at(&mut self, offset: i64) {
        self.reached.next_offset = self.reached.next_offset.max(offset);
    }

    /// A record that could not be read was passed (`on_bad_record =
    /// "skip"`).
    pub fn skipped(&mut self, offset: i64) {
        self.reached.next_offset = self.reached.next_offset.max(offset + 1);
    }

    /// Cuts `records` before the first one past the bound; `true` when one
    /// was (the partition is done once the rest is applied).
    pub fn cut(&mut self, records: &mut Vec<Received>) -> bool {
        let (until, end) = (self.until_ms, self.reached.end_offset);
        let past = records.iter().position(|r| {
            r.offset >= end || until.is_some_and(|u| r.time_ms().is_some_and(|t| t > u))
        });
        let Some(i) = past else {
            return false;
        };
        let first = &records[i];
        if first.offset < end {
            self.reached.first_after_ms = first.time_ms();
        }
        records.truncate(i);
        true
    }

    /// What `records` would add once applied.
    pub fn applying(&self, records: &[Received]) -> Applying {
        let writes = records
            .iter()
            .filter(|r| !r.meta.heartbeat && r.meta.sync.is_none());
        Applying {
            next_offset: records.last().map(|r| r.offset + 1),
            records: writes.clone().count() as u64,
            last_write_ms: writes.filter_map(Received::time_ms).max(),
            last_heartbeat_ms: records
                .iter()
                .filter(|r| r.meta.heartbeat)
                .filter_map(Received::time_ms)
                .max(),
        }
    }

    /// Counts a batch the backup took.
    pub fn applied(&mut self, batch: Applying) {
        let r = &mut self.reached;
        if let Some(next) = batch.next_offset {
            r.next_offset = r.next_offset.max(next);
        }
        r.records += batch.records;
        r.last_write_ms = r.last_write_ms.max(batch.last_write_ms);
        r.last_heartbeat_ms = r.last_heartbeat_ms.max(batch.last_heartbeat_ms);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use remoteback_protocol::record::Meta;
    use remoteback_protocol::Format;

    use super::*;

    fn record(offset: i64, time_ms: u64, heartbeat: bool) -> Received {
        Received {
            offset,
            meta: Meta {
                format: Format::Protocol,
                db: Some(0),
                source: None,
                run: None,
                seq: None,
                barrier: None,
                time_ms: Some(time_ms),
                conn: None,
                close: false,
                heartbeat,
                sync: None,
            },
            payload: Bytes::new(),
        }
    }

    fn bound(until_ms: Option<u64>, next: i64, end: i64) -> PartitionBound {
        PartitionBound {
            until_ms,
            reached: Reached {
                topic: "t".into(),
                partition: 0,
                next_offset: next,
                end_offset: end,
                until_offset: None,
                deleted_before: None,
                first_after_ms: None,
                records: 0,
                last_write_ms: None,
                last_heartbeat_ms: None,
            },
        }
    }

    #[test]
    fn a_batch_is_cut_before_the_first_record_captured_after_the_time() {
        let mut b = bound(Some(1_000), 10, 100);
        let mut batch = vec![
            record(10, 900, false),
            record(11, 1_000, true),
            record(12, 1_000, false),
            record(13, 1_001, false),
            record(14, 990, false),
        ];
        assert!(b.cut(&mut batch));
        assert_eq!(batch.len(), 3, "up to the time, inclusive");
        let applying = b.applying(&batch);
        b.applied(applying);
        assert_eq!(b.reached.next_offset, 13);
        assert_eq!(b.reached.records, 2, "heartbeats are not writes");
        assert_eq!(b.reached.last_write_ms, Some(1_000));
        assert_eq!(b.reached.first_after_ms, Some(1_001));
        assert!(!b.at_end());
    }

    #[test]
    fn without_a_time_a_partition_ends_where_it_ended_at_the_start() {
        let mut b = bound(None, 0, 3);
        let mut first = vec![record(0, 5, false), record(1, 6, false)];
        assert!(!b.cut(&mut first));
        let applying = b.applying(&first);
        b.applied(applying);
        assert!(!b.at_end());
        let mut second = vec![record(2, 7, false), record(3, 8, false)];
        assert!(b.cut(&mut second), "offset 3 came after the start");
        assert_eq!(second.len(), 1);
        let applying = b.applying(&second);
        b.applied(applying);
        assert!(b.at_end());
        assert_eq!(b.reached.first_after_ms, None, "it ended, no time cut it");
        assert!(bound(Some(1), 4, 4).at_end(), "an empty partition is done");
    }
}
