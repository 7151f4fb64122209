//! Senders: where captured writes go (`[[sender]]` in the configuration).
//!
//! Each configured sender is one [`Sender`]; which records it receives is
//! decided by capture, through the sender's filter. A send never waits:
//! client traffic must not slow down because a destination is slow, so
//! senders buffer, within the [`Backlog`], and count what they cannot take.
//! Where waiting is wanted, it happens in the session: before a write is
//! forwarded while the backlog is full (`on_backlog_full = "block"`), and
//! before a reply is released (`ack = "kafka"`).

pub(crate) mod ack;
pub(crate) mod backlog;
pub(crate) mod kafka;
mod log;
mod pack;
#[cfg(test)]
pub(crate) mod recorder;
pub(crate) mod topic;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use remoteback_protocol::Record;

use crate::settings::{ProxySettings, SenderSettings};
use ack::{AckMode, Delivery, Track};
use backlog::Backlog;
use kafka::Counters;

/// A destination for records.
pub(crate) trait Sender: Send + Sync {
    /// Takes a record without blocking. The sender numbers it (`seq`). The
    /// delivery, when the sender reports one (`ack = "kafka"`, or `track`
    /// says always), is what the client's reply or the sync waits for.
    fn send(&self, record: Record, track: Track) -> Option<Delivery>;
    /// Waits up to `timeout` for buffered records to be delivered.
    fn flush(&self, timeout: Duration) -> Result<(), FlushError>;
    /// A short description for logs (`KafkaSender(topic=...)`).
    fn describe(&self) -> String;
    /// The topic has `partitions` partitions (read at start, before any
    /// record): where records go and which are barriers.
    fn set_partitions(&self, _partitions: u32) {}
    /// Writes `heartbeat`'s records from now on (Kafka senders).
    fn start_heartbeats(&self, _heartbeat: Heartbeat) {}
}

/// What a Kafka sender needs to write heartbeats: a record with no
/// commands to each partition that went `every` without a record, so that
/// the replay's lag stays true when no one writes (record-format.md).
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    pub format: remoteback_protocol::Format,
    pub source: std::sync::Arc<str>,
    pub run: u64,
    pub every: Duration,
}

impl Heartbeat {
    /// A heartbeat written now: no payload, no key, no database; the
    /// sender numbers nothing for it.
    pub fn record(&self) -> Record {
        Record {
            format: self.format,
            db: None,
            db_after: None,
            payload: bytes::Bytes::new(),
            key: None,
            placement: remoteback_protocol::record::Placement::Keyless,
            source: self.source.clone(),
            run: self.run,
            seq: 0,
            barrier: None,
            time_ms: remoteback_protocol::record::now_ms(),
            conn: None,
            close: false,
            heartbeat: true,
            sync: None,
        }
    }
}

/// The most `[[sender]]` tables a proxy takes: a [`SenderSet`] is one bit
/// per sender.
pub const MAX_SENDERS: usize = 64;

/// Some of the configured senders, by their position among the
/// `[[sender]]` tables: the ones whose filter takes a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SenderSet(u64);

impl SenderSet {
    /// No sender: the command is not captured.
    pub const NONE: SenderSet = SenderSet(0);

    /// This set and sender `index`.
    pub fn with(self, index: usize) -> SenderSet {
        debug_assert!(index < MAX_SENDERS);
        SenderSet(self.0 | 1 << index)
    }

    pub fn contains(self, index: usize) -> bool {
        index < MAX_SENDERS && self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A sender could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("sender[{index}] ({class}): {source}")]
pub struct SenderError {
    pub index: usize,
    pub class: &'static str,
    pub source: KafkaError,
}

/// What a sender had not delivered when its flush gave up.
#[derive(Debug, thiserror::Error)]
#[error(
    "{queued} records still queued{}, {} lost (dropped {dropped}, failed {failed})",
    cause.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
    dropped + failed
)]
pub struct FlushError {
    pub queued: u64,
    pub dropped: u64,
    pub failed: u64,
    #[source]
    pub cause: Option<KafkaError>,
}

/// One sender's failed flush at shutdown.
#[derive(Debug, thiserror::Error)]
#[error("{sender}: {error}")]
pub struct Undelivered {
    /// The sender, as [`Sender::describe`] names it.
    pub sender: String,
    #[source]
    pub error: FlushError,
}

/// One Kafka sender's counters, and what tells it from the others (two
/// senders may produce to topics of the same name on different clusters).
pub(crate) struct KafkaCounters {
    /// Its position among the `[[sender]]` tables.
    pub index: usize,
    pub topic: String,
    pub counters: Arc<Counters>,
}

/// Every configured sender, shared by all sessions.
pub(crate) struct Senders {
    /// In configuration order: a [`SenderSet`] indexes this.
    senders: Vec<Box<dyn Sender>>,
    /// Records not yet acknowledged by Kafka, shared by every Kafka sender.
    backlog: Arc<Backlog>,
    /// The Kafka senders' delivery counters.
    kafka: Vec<KafkaCounters>,
    ack: AckMode,
    /// Writes whose outcome the proxy never saw (see
    /// [`count_uncaptured`](Senders::count_uncaptured)).
    uncaptured: AtomicU64,
    /// Losses and uncaptured writes a completed full sync made good: the
    /// counts when it started ([`resynced`](Senders::resynced)).
    resynced_lost: AtomicU64,
    resynced_uncaptured: AtomicU64,
}

impl Senders {
    /// Builds every sender of `settings`.
    pub fn build(settings: &ProxySettings) -> Result<Senders, SenderError> {
        let backlog = Arc::new(Backlog::new(
            settings.backlog_bytes,
            settings.on_backlog_full,
        ));
        let acks = settings.ack == AckMode::Kafka;
        let mut senders: Vec<Box<dyn Sender>> = Vec::new();
        let mut kafka = Vec::new();
        for (index, s) in settings.senders.iter().enumerate() {
            match s {
                SenderSettings::Log(l) => senders.push(Box::new(log::LogSender::new(l))),
                SenderSettings::Kafka(k) => {
                    let sender =
                        kafka::KafkaSender::new(k, backlog.clone(), acks).map_err(|source| {
                            SenderError {
                                index,
                                class: "KafkaSender",
                                source,
                            }
                        })?;
                    kafka.push(KafkaCounters {
                        index,
                        topic: k.topic.clone(),
                        counters: sender.counters(),
                    });
                    senders.push(Box::new(sender));
                }
            }
        }
        Ok(Senders {
            senders,
            backlog,
            kafka,
            ack: settings.ack,
            uncaptured: AtomicU64::new(0),
            resynced_lost: AtomicU64::new(0),
            resynced_uncaptured: AtomicU64::new(0),
        })
    }

    /// Senders built directly, for tests (no Kafka senders: an unbounded
    /// backlog, replies never held).
    #[cfg(test)]
    pub fn from_parts(senders: Vec<Box<dyn Sender>>) -> Senders {
        Senders {
            senders,
            backlog: Arc::new(Backlog::new(u64::MAX, backlog::OnFull::Drop)),
            kafka: Vec::new(),
            ack: AckMode::Redis,
            uncaptured: AtomicU64::new(0),
            resynced_lost: AtomicU64::new(0),
            resynced_uncaptured: AtomicU64::new(0),
        }
    }

    /// Hands `record` to each sender in `indices` (a clone to all but the
    /// last); the deliveries `track` asks for go to `deliveries`.
    pub fn send_each(
        &self,
        indices: impl Iterator<Item = usize>,
        record: Record,
        track: Track,
        deliveries: &mut Vec<Delivery>,
    ) {
        let mut indices = indices.filter_map(|i| self.senders.get(i)).peekable();
        while let Some(sender) = indices.next() {
            if indices.peek().is_none() {
                deliveries.extend(sender.send(record, track));
                return;
            }
            deliveries.extend(sender.send(record.clone(), track));
        }
    }

    /// Hands `record` to every sender, unfiltered (`ROW`). Replies are not
    /// held in `ROW` format (`ack = "kafka"` does not take it): its records
    /// are the requests, not writes that took effect.
    pub fn send_to_all(&self, record: Record) {
        self.send_each(
            0..self.senders.len(),
            record,
            Track::AsAcked,
            &mut Vec::new(),
        );
    }

    /// Every Kafka sender writes `heartbeat`'s records from now on.
    pub fn start_heartbeats(&self, heartbeat: &Heartbeat) {
        for sender in &self.senders {
            sender.start_heartbeats(heartbeat.clone());
        }
    }

    /// Sender `index` writes to a topic of `partitions` partitions.
    pub fn set_partitions(&self, index: usize, partitions: u32) {
        if let Some(sender) = self.senders.get(index) {
            sender.set_partitions(partitions);
        }
    }

    /// The backlog every Kafka sender counts its undelivered records in.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Whether replies to writes wait for Kafka.
    pub fn ack(&self) -> AckMode {
        self.ack
    }

    /// Each Kafka sender's delivery counters.
    pub fn kafka_counters(&self) -> &[KafkaCounters] {
        &self.kafka
    }

    /// Records lost by every Kafka sender since start.
    pub fn lost(&self) -> u64 {
        self.kafka.iter().map(|k| k.counters.lost()).sum()
    }

    /// `n` writes were forwarded but their sessions ended before the primary
    /// answered (reply timeout, primary gone): they may have taken effect
    /// without a record. Counted and logged; the backup needs a resync.
    pub fn count_uncaptured(&self, n: u64) {
        let total = self.uncaptured.fetch_add(n, Ordering::Relaxed) + n;
        ::log::error!(
            "{n} writes were forwarded to the primary but never answered before their \
             connection ended; they may have taken effect without being captured \
             ({total} so far); the backup needs a resync"
        );
    }

    /// Writes whose outcome the proxy never saw, since start.
    pub fn uncaptured(&self) -> u64 {
        self.uncaptured.load(Ordering::Relaxed)
    }

    /// Whether the backup misses writes: a record was lost or a write's
    /// outcome is unknown since the start of the last completed full sync.
    pub fn resync_needed(&self) -> bool {
        self.lost() > self.resynced_lost.load(Ordering::Relaxed)
            || self.uncaptured() > self.resynced_uncaptured.load(Ordering::Relaxed)
    }

    /// A full sync that started when `lost` records were lost and
    /// `uncaptured` writes unknown has completed: those no longer need a
    /// resync (later ones still do).
    pub fn resynced(&self, (lost, uncaptured): (u64, u64)) {
        self.resynced_lost.fetch_max(lost, Ordering::Relaxed);
        self.resynced_uncaptured
            .fetch_max(uncaptured, Ordering::Relaxed);
    }

    /// Flushes every sender; returns the ones that did not deliver all.
    pub fn flush(&self, timeout: Duration) -> Vec<Undelivered> {
        self.senders
            .iter()
            .filter_map(|s| {
                s.flush(timeout).err().map(|error| Undelivered {
                    sender: s.describe(),
                    error,
                })
            })
            .collect()
    }

    /// One description per sender, for the start-up log line.
    pub fn describe(&self) -> Vec<String> {
        self.senders.iter().map(|s| s.describe()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_set_holds_positions() {
        let set = SenderSet::NONE.with(0).with(63);
        assert!(set.contains(0) && set.contains(63));
        assert!(!set.contains(1) && !set.contains(64));
        assert!(!set.is_empty() && SenderSet::NONE.is_empty());
    }
}
